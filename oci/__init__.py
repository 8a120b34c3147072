"""Images: OCI/Docker formats, layer tar diff/apply, compression, the local
image store, exporters and the registry client.

Imports ``cache`` (blobs and snapshots live there); ``httpx``, ``zstandard``
and ``isal`` are imported here and nowhere else.
"""

from ._fetch import RemoteFetcher as RemoteFetcher
from ._registry import BlobProgress as BlobProgress
from ._registry import RegistryClient as RegistryClient
from ._registry_auth import CredentialStore as CredentialStore
from ._registry_auth import Credentials as Credentials
from ._registry_manifest import LayerDescriptor as LayerDescriptor
from ._registry_manifest import ResolvedManifest as ResolvedManifest
from ._reference import Reference as Reference
from ._reference import parse_reference as parse_reference
from ._store import ImageStore as ImageStore
from ._store import Layer as Layer
from ._store import ResolvedImage as ResolvedImage
from ._store import StoredImage as StoredImage
from ._store import chain_ids as chain_ids
