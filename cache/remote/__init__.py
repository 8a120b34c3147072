"""Build cache shared between machines: ``--cache-to`` / ``--cache-from`` (issue 8).

A cache export is an OCI artifact: a manifest whose config (media type
``application/vnd.pybuild.cache.config.v1+json``) maps cache keys to the
layer each step made, and whose layers are those layer blobs.  It lives in
a registry (``type=registry,ref=…``), in an OCI layout directory
(``type=local,dest=…``), or inside the image config itself
(``type=inline``: the records only; the blobs are the image's layers).

Import is lazy: a runner that finds a key in a remote cache uses the
record at once and downloads the layer only when a later step runs on top
of it or an export needs its bytes.  Cache keys are computed from content
(context files, base image digests, commands), so they agree across
machines.

Faults in a cache source never fail the build unless the user asks
(``ignore-error=false``): pybuild warns and builds without that cache.

This package owns the format, reading and writing; ``cache`` may not import
``oci`` or ``dag``, so what it needs from above comes in as Protocols: a
``CacheRegistry`` (``oci``'s registry client) and parsed references.  ``dag``
does the wiring: which records a build exports, checking and adopting
fetched layers as snapshots' layers, packing and unpacking cache mounts.

    CacheSpec, parse_cache_spec       one --cache-to / --cache-from value
    RemoteCache, RemoteRecord, RemoteLayer, BlobSource
                                      what one imported cache provides
    import_cache                      read one cache source's records
    records_to_json, write_cache      write one cache export
"""

from ._format import CACHE_MOUNT_BUDGET as CACHE_MOUNT_BUDGET
from ._format import CACHE_MOUNT_MEDIA_TYPE as CACHE_MOUNT_MEDIA_TYPE
from ._format import CONFIG_MEDIA_TYPE as CONFIG_MEDIA_TYPE
from ._format import INLINE_KEY as INLINE_KEY
from ._format import BlobSource as BlobSource
from ._format import CacheImportError as CacheImportError
from ._format import CacheSpec as CacheSpec
from ._format import RemoteCache as RemoteCache
from ._format import RemoteCacheBroken as RemoteCacheBroken
from ._format import RemoteLayer as RemoteLayer
from ._format import RemoteRecord as RemoteRecord
from ._format import parse_cache_spec as parse_cache_spec
from ._format import records_from_json as records_from_json
from ._format import records_to_json as records_to_json
from ._sources import CacheRegistry as CacheRegistry
from ._sources import LocalSource as LocalSource
from ._sources import RegistrySource as RegistrySource
from ._sources import import_cache as import_cache
from ._write import cache_manifest as cache_manifest
from ._write import write_cache as write_cache
from ._write import write_local as write_local

__all__ = [
    "BlobSource",
    "CACHE_MOUNT_BUDGET",
    "CACHE_MOUNT_MEDIA_TYPE",
    "CONFIG_MEDIA_TYPE",
    "CacheImportError",
    "CacheRegistry",
    "CacheSpec",
    "INLINE_KEY",
    "LocalSource",
    "RegistrySource",
    "RemoteCache",
    "RemoteCacheBroken",
    "RemoteLayer",
    "RemoteRecord",
    "cache_manifest",
    "import_cache",
    "parse_cache_spec",
    "records_from_json",
    "records_to_json",
    "write_cache",
    "write_local",
]
