"""The cache-export format and flag syntax, without a registry."""

from __future__ import annotations

import json

import pytest

from pybuild.cache.remote import (
    CacheImportError,
    CacheSpec,
    RemoteLayer,
    RemoteRecord,
    cache_manifest,
    parse_cache_spec,
    records_from_json,
    records_to_json,
)
from pybuild.errors import UsageError

DIGEST = "sha256:" + "1" * 64
DIFF_ID = "sha256:" + "2" * 64
KEY = "sha256:" + "3" * 64
SNAPSHOT = "4" * 64


def test_buildkit_syntax_is_understood() -> None:
    spec = parse_cache_spec("type=registry,ref=host:5000/app/cache:main,mode=max,compression=zstd,ignore-error=false", export=True)
    assert spec == CacheSpec("registry", ref="host:5000/app/cache:main", mode="max", compression="zstd", ignore_error=False)
    assert parse_cache_spec("type=local,src=/tmp/c", export=False).path == "/tmp/c"
    assert parse_cache_spec("type=local,dest=/tmp/c", export=True).path == "/tmp/c"
    assert parse_cache_spec("host/app:1", export=False) == CacheSpec("registry", ref="host/app:1")
    assert parse_cache_spec("type=inline", export=True).kind == "inline"
    assert parse_cache_spec("type=registry,ref=r/c,cache-mounts=true", export=True).cache_mounts


@pytest.mark.parametrize("value", ["type=gha", "type=registry,ref=r/c,mode=all", "type=local", "type=registry,ref=r/c,x=1", "type=registry,bare"])
def test_bad_specs_are_usage_errors(value: str) -> None:
    with pytest.raises(UsageError):
        parse_cache_spec(value, export=True)


def test_records_round_trip() -> None:
    layer = RemoteLayer(DIGEST, 10, "application/vnd.oci.image.layer.v1.tar+gzip", DIFF_ID)
    record = RemoteRecord(KEY, layer, 12.5, SNAPSHOT)
    mounts = {"apt": layer}
    data = json.loads(json.dumps(records_to_json([record], mounts)))
    assert records_from_json(data, "test") == ({KEY: record}, mounts)


@pytest.mark.parametrize(
    "change",
    [
        {"snapshot": "../../etc"},
        {"snapshot": "A" * 64},
        {"digest": "sha256:../x"},
        {"diffID": "md5:1"},
        {"size": "many"},
        {"size": -1},
    ],
)
def test_malformed_records_are_refused(change: dict[str, object]) -> None:
    entry = {"digest": DIGEST, "size": 10, "mediaType": "m", "diffID": DIFF_ID, "created": 1.0, "snapshot": SNAPSHOT, **change}
    with pytest.raises(CacheImportError):
        records_from_json({"version": 1, "records": {KEY: entry}}, "test")


def test_other_documents_are_not_caches() -> None:
    with pytest.raises(CacheImportError):
        records_from_json({"version": 7}, "test")
    with pytest.raises(CacheImportError):
        records_from_json([], "test")  # type: ignore[arg-type]


def test_the_manifest_is_an_oci_artifact_listing_each_blob_once() -> None:
    layer = RemoteLayer(DIGEST, 10, "application/vnd.oci.image.layer.v1.tar+gzip", DIFF_ID)
    manifest = json.loads(cache_manifest(b"{}", [layer, layer]))
    assert manifest["artifactType"] == manifest["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"
    assert manifest["layers"] == [layer.descriptor()]


class _Blobs:
    """The content store as write_local reads it: blobs by digest."""

    def __init__(self, *blobs: bytes) -> None:
        import hashlib

        self.blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in blobs}

    def open(self, digest: str, verify: bool = True):  # type: ignore[no-untyped-def]
        import io

        return io.BytesIO(self.blobs[digest])


def test_a_local_cache_export_never_follows_a_symlink_planted_in_its_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import os

    from pybuild.cache.remote import write_local
    from pybuild.cache.remote._sources import _import_local

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("oci-layout", "index.json", f".index.json.{os.getpid()}.tmp"):
        os.symlink(outside / "precious", cache / name)  # e.g. restored from an untrusted CI artifact
    os.symlink(outside, cache / "blobs")
    layer = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(records_to_json([])).encode()
    write_local(cache, config, [RemoteLayer(digest, len(layer), "application/vnd.oci.image.layer.v1.tar+gzip", DIFF_ID)], _Blobs(layer))
    assert os.listdir(outside) == ["precious"] and (outside / "precious").read_text() == "keep\n"
    assert not (cache / "blobs").is_symlink() and not (cache / "index.json").is_symlink()
    assert (cache / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == layer
    assert json.loads((cache / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    _import_local(cache)  # the written layout reads back
