"""Images: OCI/Docker formats, layer tar diff/apply, compression, the local
image store, exporters and the registry client.

Imports ``cache`` (blobs and snapshots live there); ``httpx``, ``zstandard``
and ``isal`` are imported here and nowhere else.

The network clients and the layer/archive codecs are loaded on first use (PEP 562 ``__getattr__``): a
cached rebuild never touches a registry, and importing httpx alone would
cost it tens of milliseconds.
"""

from typing import TYPE_CHECKING

from pybuild import _lazy

from ._reference import Reference as Reference
from ._reference import parse_reference as parse_reference
from ._store import ImageStore as ImageStore
from ._store import IndexEntry as IndexEntry
from ._store import Layer as Layer
from ._store import Removal as Removal
from ._store import ResolvedImage as ResolvedImage
from ._store import StoredImage as StoredImage
from ._store import StoredIndex as StoredIndex
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
    "check_index_outputs": "._export",
    "write_index_archive": "._export",
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
    "push_index": "._push",
    "PushResult": "._push",
    "registry_client": "._push",
    "write_layer": "._layers",
    "LayerStats": "._layers",
    "opaque_xattr": "._layers",
    "apply_layer": "._tar_apply",
    "unmapped_ids": "._tar_apply",
    "UNMAPPED_IDS_HINT": "._tar_apply",
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
    "IndexEntry",
    "Layer",
    "Removal",
    "Reference",
    "ResolvedImage",
    "StoredImage",
    "StoredIndex",
    "chain_ids",
    "parse_reference",
    *_LAZY,
]


if TYPE_CHECKING:  # the names below, loaded on first use, typed for the checker
    from ._archive import Archive as Archive
    from ._archive import BlobSource as BlobSource
    from ._archive import MemoryBlobSource as MemoryBlobSource
    from ._archive import read_archive as read_archive
    from ._archive import write_docker_archive as write_docker_archive
    from ._archive import write_oci_archive as write_oci_archive
    from ._budget import UnpackBudget as UnpackBudget
    from ._budget import unpack_limit as unpack_limit
    from ._compare import Comparison as Comparison
    from ._compare import ImageReport as ImageReport
    from ._compare import LayerContent as LayerContent
    from ._compare import LayerReport as LayerReport
    from ._compare import Waste as Waste
    from ._compare import WastedFile as WastedFile
    from ._compare import analyze_image as analyze_image
    from ._compare import compare_images as compare_images
    from ._compare import walk_layers as walk_layers
    from ._compression import Compression as Compression
    from ._compression import LayerBlob as LayerBlob
    from ._compression import LayerBlobWriter as LayerBlobWriter
    from ._compression import compress_layer as compress_layer
    from ._compression import compress_stream as compress_stream
    from ._compression import detect_compression as detect_compression
    from ._compression import layer_media_type as layer_media_type
    from ._compression import open_decompressed as open_decompressed
    from ._export import Output as Output
    from ._export import OutputResult as OutputResult
    from ._export import export_docker_archive as export_docker_archive
    from ._export import export_oci_archive as export_oci_archive
    from ._export import check_index_outputs as check_index_outputs
    from ._export import export_outputs as export_outputs
    from ._export import write_index_archive as write_index_archive
    from ._export import parse_output as parse_output
    from ._export import parse_outputs as parse_outputs
    from ._export import write_images_archive as write_images_archive
    from ._export_layers import LayerSettings as LayerSettings
    from ._export_local import export_local as export_local
    from ._export_local import export_tar as export_tar
    from ._fetch import RemoteFetcher as RemoteFetcher
    from ._formats import ContainerConfig as ContainerConfig
    from ._formats import Descriptor as Descriptor
    from ._formats import Healthcheck as Healthcheck
    from ._formats import HistoryEntry as HistoryEntry
    from ._formats import ImageConfig as ImageConfig
    from ._formats import ImagePlatform as ImagePlatform
    from ._formats import Index as Index
    from ._formats import Manifest as Manifest
    from ._formats import canonical_json as canonical_json
    from ._formats import parse_image_document as parse_image_document
    from ._formats import sha256_digest as sha256_digest
    from ._git import check_git_source as check_git_source
    from ._layers import LayerStats as LayerStats
    from ._layers import opaque_xattr as opaque_xattr
    from ._layers import write_layer as write_layer
    from ._load import LoadResult as LoadResult
    from ._load import load_archive as load_archive
    from ._network import NetworkLimits as NetworkLimits
    from ._output_file import OutputFile as OutputFile
    from ._output_file import open_output as open_output
    from ._output_file import write_output_bytes as write_output_bytes
    from ._pull import PullResult as PullResult
    from ._pull import StorePuller as StorePuller
    from ._pull import pull_image as pull_image
    from ._push import PushResult as PushResult
    from ._push import push_image as push_image
    from ._push import push_index as push_index
    from ._push import registry_client as registry_client
    from ._snapshot_layers import SnapshotLayers as SnapshotLayers
    from ._snapshot_layers import layer_compression as layer_compression
    from ._tar_apply import UNMAPPED_IDS_HINT as UNMAPPED_IDS_HINT
    from ._tar_apply import apply_layer as apply_layer
    from ._tar_apply import unmapped_ids as unmapped_ids
    from ._tar_flatten import FlattenStats as FlattenStats
    from ._tar_flatten import flatten_into as flatten_into
    from ._tar_format import TarEntry as TarEntry
    from ._tar_format import TarKind as TarKind
    from ._tar_format import TarReader as TarReader
    from ._urls import redact_urls as redact_urls
    from ._urls import split_userinfo as split_userinfo
    from .registry import BlobProgress as BlobProgress
    from .registry import CredentialStore as CredentialStore
    from .registry import Credentials as Credentials
    from .registry import LayerDescriptor as LayerDescriptor
    from .registry import RegistryClient as RegistryClient
    from .registry import ResolvedManifest as ResolvedManifest

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)
