"""The registry client: the OCI distribution API (``/v2/``) over httpx.

``_client`` resolves, pulls and pushes; ``_transport`` sends one request and
turns every httpx failure into a ``pybuild.errors`` class; ``_auth`` answers
challenges with credentials from the Docker config; ``_endpoint`` maps a
registry name to its origin; ``_manifest`` parses and checks manifests and
indexes; ``_retry`` is the retry policy.  The deadlines and stall watch live in
``oci._network`` because ADD downloads and git use them too.

Importing this package imports httpx: ``pybuild.oci`` loads it on first use
only, so a cached build never does.
"""

from ._auth import CredentialStore as CredentialStore
from ._auth import Credentials as Credentials
from ._client import BlobOutcome as BlobOutcome
from ._client import BlobProgress as BlobProgress
from ._client import RegistryClient as RegistryClient
from ._manifest import LayerDescriptor as LayerDescriptor
from ._manifest import ResolvedManifest as ResolvedManifest
