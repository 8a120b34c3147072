"""The remote cache's wiring in dag: fetched layers are checked before they are trusted."""

from __future__ import annotations

import pytest


def test_a_cache_layer_that_is_a_bomb_stops_at_the_unpack_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import gzip
    import hashlib
    import io

    from pybuild.cache.remote import RemoteLayer
    from pybuild.dag._cache_wiring import check_diff_id
    from pybuild.errors import ImageError

    blob = gzip.compress(b"\0" * (8 << 20), compresslevel=1)

    class Blobs:
        def open(self, digest: str, verify: bool = True):  # type: ignore[no-untyped-def]
            return contextlib.closing(io.BytesIO(blob))

    layer = RemoteLayer("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob), "application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "0" * 64)
    monkeypatch.setenv("PYBUILD_UNPACK_LIMIT", "1m")
    with pytest.raises(ImageError, match="the cache layer expands beyond the 1 MiB unpack limit"):
        check_diff_id(Blobs(), layer)
