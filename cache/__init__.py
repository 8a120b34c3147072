"""Content by digest: the blob store, snapshots, the SQLite cache index, cache
keys, build-context hashing and ``.dockerignore``, prune/du, remote caches.

Imports ``grammar`` at most; ``oci`` and ``dag`` build on top of it.
"""
