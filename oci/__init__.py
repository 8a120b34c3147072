"""Images: OCI/Docker formats, layer tar diff/apply, compression, the local
image store, exporters and the registry client.

Imports ``cache`` (blobs and snapshots live there); ``httpx``, ``zstandard``
and ``isal`` are imported here and nowhere else.

The network clients and the layer/archive codecs are loaded on first use (PEP 562 ``__getattr__``): a
cached rebuild never touches a registry, and importing httpx alone would
cost it tens of milliseconds.
"""

from pybuild import _lazy

from ._reference import Reference as Reference
from ._reference import parse_reference as parse_reference
from ._store import ImageStore as ImageStore
from ._store import Layer as Layer
from ._store import Removal as Removal
from ._store import ResolvedImage as ResolvedImage
from ._store import StoredImage as StoredImage
from ._store import chain_ids as chain_ids

_LAZY = {
    "SnapshotLayers": "._snapshot_layers",
    "layer_compression": "._snapshot_layers",
    "RemoteFetcher": "._fetch",
    "check_git_source": "._git",
    "split_userinfo": "._urls",
    "redact_urls": "._urls",
    "BlobProgress": ".registry",
    "RegistryClient": ".registry",
    "NetworkLimits": "._network",
    "CredentialStore": ".registry",
    "Credentials": ".registry",
    "LayerDescriptor": ".registry",
    "walk_layers": "._compare",
    "analyze_image": "._compare",
    "compare_images": "._compare",
    "Comparison": "._compare",
    "ImageReport": "._compare",
    "LayerReport": "._compare",
    "WastedFile": "._compare",
    "Waste": "._compare",
    "LayerContent": "._compare",
    "Output": "._export",
    "parse_output": "._export",
    "parse_outputs": "._export",
    "export_outputs": "._export",
    "OutputResult": "._export",
    "export_oci_archive": "._export",
    "export_docker_archive": "._export",
    "write_images_archive": "._export",
    "OutputFile": "._output_file",
    "open_output": "._output_file",
    "write_output_bytes": "._output_file",
    "export_local": "._export_local",
    "export_tar": "._export_local",
    "LayerSettings": "._export_layers",
    "load_archive": "._load",
    "LoadResult": "._load",
    "pull_image": "._pull",
    "PullResult": "._pull",
    "StorePuller": "._pull",
    "push_image": "._push",
    "PushResult": "._push",
    "registry_client": "._push",
    "write_layer": "._layers",
    "LayerStats": "._layers",
    "apply_layer": "._tar_apply",
    "TarReader": "._tar_format",
    "TarEntry": "._tar_format",
    "TarKind": "._tar_format",
    "UnpackBudget": "._budget",
    "unpack_limit": "._budget",
    "flatten_into": "._tar_flatten",
    "FlattenStats": "._tar_flatten",
    "compress_layer": "._compression",
    "LayerBlob": "._compression",
    "Compression": "._compression",
    "LayerBlobWriter": "._compression",
    "compress_stream": "._compression",
    "open_decompressed": "._compression",
    "detect_compression": "._compression",
    "layer_media_type": "._compression",
    "Descriptor": "._formats",
    "ImagePlatform": "._formats",
    "ImageConfig": "._formats",
    "ContainerConfig": "._formats",
    "Healthcheck": "._formats",
    "HistoryEntry": "._formats",
    "Manifest": "._formats",
    "Index": "._formats",
    "parse_image_document": "._formats",
    "canonical_json": "._formats",
    "sha256_digest": "._formats",
    "write_oci_archive": "._archive",
    "write_docker_archive": "._archive",
    "read_archive": "._archive",
    "Archive": "._archive",
    "BlobSource": "._archive",
    "MemoryBlobSource": "._archive",
    "ResolvedManifest": ".registry",
}

__all__ = [
    "ImageStore",
    "Layer",
    "Removal",
    "Reference",
    "ResolvedImage",
    "StoredImage",
    "chain_ids",
    "parse_reference",
    *_LAZY,
]


__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)
