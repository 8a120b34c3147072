"""Images: OCI/Docker formats, layer tar diff/apply, compression, the local
image store, exporters and the registry client.

Imports ``cache`` (blobs and snapshots live there); ``httpx`` is imported here
and nowhere else.
"""
