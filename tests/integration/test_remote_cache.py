"""Two CI runners sharing a build cache (issue 8): two pybuild roots, one registry.

Runner A builds and exports its cache (``--cache-to``); runner B starts
empty, imports it (``--cache-from``) and rebuilds.  The base image comes
from the same registry for both, so its digest -- part of every cache key
-- is the same on both machines, as it is for CI runners pulling one base.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.oci import ImageStore

from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .conftest import pybuild, read_image_file

pytestmark = pytest.mark.peers

APP = """\
FROM {base}
WORKDIR /app
COPY deps.txt /app/
RUN sort deps.txt > deps.sorted && echo deps >> /app/ran
COPY src/ /app/src/
RUN cat src/* > bundle && echo bundle >> /app/ran
CMD ["cat", "/app/bundle"]
"""

MULTI = """\
FROM {base} AS builder
COPY src/ /src/
RUN cat /src/* > /out && echo built > /built
FROM {base}
COPY deps.txt /deps.txt
RUN wc -l /deps.txt > /lines
COPY --from=builder /out /out
RUN wc -c /out > /size
"""

CACHE_MOUNT = """\
FROM {base}
ARG ROUND
RUN --mount=type=cache,id=downloads,target=/cache \\
    (test -f /cache/fetched && echo reused > /result || echo fresh > /result); \\
    echo payload > /cache/fetched
"""


@pytest.fixture
def repo(docker_registry) -> str:  # noqa: F811
    return f"{docker_registry.host}/ci-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def base(repo: str, busybox_tar: Path, tmp_path: Path, require_root: None) -> str:
    """busybox, pushed to the registry by a third machine."""
    seed = tmp_path / "seed"
    name = f"{repo}/busybox:1"
    pybuild("import", str(busybox_tar), name, root=seed)
    pybuild("push", name, root=seed)
    return name


class Runner:
    """One CI machine: its own root and its own checkout of the project."""

    def __init__(self, path: Path, dockerfile: str) -> None:
        self.root = path / "root"
        self.context = path / "checkout"
        (self.context / "src").mkdir(parents=True)
        (self.context / "Dockerfile").write_text(dockerfile)
        (self.context / "deps.txt").write_text("b\na\nc\n")
        (self.context / "src" / "main.txt").write_text("main\n")
        (self.context / "src" / "util.txt").write_text("util\n")

    def build(self, *flags: str, check: bool = True) -> Build:
        result = pybuild(
            "build", "--progress=rawjson", "--network=none", "--iidfile", str(self.root.parent / "iid"),
            *flags, str(self.context), root=self.root, check=check,
        )
        return Build(result, self.root.parent / "iid")

    def store_view(self) -> tuple[Root, ImageStore]:
        root = Root.open(self.root)
        return root, ImageStore(root)


class Build:
    def __init__(self, result, iid: Path) -> None:  # type: ignore[no-untyped-def]
        self.result = result
        self.events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        self.image_id = iid.read_text() if result.returncode == 0 else None

    def names(self, event: str) -> list[str]:
        return [e["name"] for e in self.events if e["event"] == event]

    @property
    def ran(self) -> list[str]:
        """The steps that executed (RUN and file operations alike)."""
        return self.names("StepFinished")

    @property
    def cached(self) -> list[str]:
        return self.names("StepCached")

    @property
    def notices(self) -> list[str]:
        return [e["message"] for e in self.events if e["event"] == "Notice"]


def _steps(names: list[str], word: str) -> list[str]:
    return [n for n in names if word in n]


def manifest_digest(runner: Runner, image_id: str) -> str:
    root, store = runner.store_view()
    try:
        return store.by_id(image_id).manifest_digest
    finally:
        root.close()


def image_size(runner: Runner, image_id: str) -> int:
    root, store = runner.store_view()
    try:
        return store.by_id(image_id).size
    finally:
        root.close()


def test_runner_b_reuses_everything_runner_a_exported_through_the_registry(tmp_path: Path, repo: str, base: str) -> None:
    a, b = Runner(tmp_path / "a", APP.format(base=base)), Runner(tmp_path / "b", APP.format(base=base))
    cache = f"type=registry,ref={repo}/cache:main"
    first = a.build("--cache-to", cache)
    assert len(_steps(first.ran, "RUN")) == 2

    second = b.build("--cache-from", cache)
    assert second.ran == []  # no RUN, no COPY executed on B
    assert len(_steps(second.cached, "RUN")) == 2 and len(_steps(second.cached, "COPY")) == 2
    assert second.image_id == first.image_id
    assert manifest_digest(b, second.image_id) == manifest_digest(a, first.image_id)

    # lazy: B fetched the blobs the image needs, but unpacked none of the cached layers
    root, store = b.store_view()
    try:
        layers = store.by_id(second.image_id).layers
        assert all(root.blobs.has(layer.digest) for layer in layers)
        unpacked = {p.name for p in (b.root / "snapshots").iterdir()}
    finally:
        root.close()
    assert len(unpacked) <= 1, unpacked  # the base image's one layer at most
    # its cached layers weigh what they weighed on A, where they were built (not their blobs' length)
    assert image_size(b, second.image_id) == image_size(a, first.image_id)

    # one source file changes on B: only the steps that depend on src/ run
    (b.context / "src" / "util.txt").write_text("util v2\n")
    third = b.build("--cache-from", cache)
    assert _steps(third.ran, "RUN") == [n for n in _steps(third.ran, "RUN") if "bundle" in n] and len(_steps(third.ran, "RUN")) == 1
    assert _steps(third.ran, "COPY") and all("src" in n for n in _steps(third.ran, "COPY"))
    assert any("sort deps.txt" in n for n in third.cached)
    assert third.image_id != first.image_id


def test_pushing_a_fully_cached_image_to_the_cache_registry_downloads_no_layer(tmp_path: Path, repo: str, base: str) -> None:
    a, b = Runner(tmp_path / "a", APP.format(base=base)), Runner(tmp_path / "b", APP.format(base=base))
    cache = f"type=registry,ref={repo}/cache:main"
    first = a.build("--cache-to", cache)
    second = b.build("--cache-from", cache, "-t", f"{repo}/app:b", "--push")
    assert second.ran == [] and second.image_id == first.image_id

    root, store = b.store_view()
    try:
        image = store.by_id(second.image_id)
        present = [root.blobs.has(layer.digest) for layer in image.layers]
    finally:
        root.close()
    assert present.count(False) == 5  # WORKDIR, COPY, RUN, COPY, RUN: mounted in the registry, never fetched
    pushed = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{repo}/app:b"], check=True, capture_output=True, text=True
    ).stdout)
    assert [layer["digest"] for layer in pushed["layers"]] == [layer.digest for layer in image.layers]
    assert pushed["config"]["digest"] == first.image_id

    # the image's layers are a pull away when B needs their bytes
    refused = pybuild("save", "-o", str(tmp_path / "b.tar"), f"{repo}/app:b", root=b.root, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "pull" in refused.stderr
    pybuild("pull", f"{repo}/app:b", root=b.root)
    pybuild("save", "-o", str(tmp_path / "b.tar"), f"{repo}/app:b", root=b.root)
    assert (tmp_path / "b.tar").stat().st_size > 0


def test_a_local_directory_carries_the_cache_between_runners(tmp_path: Path, base: str) -> None:
    a, b = Runner(tmp_path / "a", APP.format(base=base)), Runner(tmp_path / "b", APP.format(base=base))
    directory = tmp_path / "shared-cache"
    first = a.build("--cache-to", f"type=local,dest={directory}")
    layout = json.loads((directory / "index.json").read_text())
    assert layout["manifests"][0]["artifactType"] == "application/vnd.pybuild.cache.config.v1+json"

    # several sources: a missing one only warns, the next one serves
    second = b.build("--cache-from", f"type=local,src={tmp_path / 'missing'}", "--cache-from", f"type=local,src={directory}")
    assert second.ran == [] and len(_steps(second.cached, "RUN")) == 2
    assert second.image_id == first.image_id
    assert any("missing" in n for n in second.notices if n.startswith("WARNING"))

    (b.context / "deps.txt").write_text("z\ny\n")
    third = b.build("--cache-from", f"type=local,src={directory}")
    assert len(_steps(third.ran, "RUN")) == 2  # everything after COPY deps.txt depends on it


def test_inline_cache_travels_inside_the_pushed_image(tmp_path: Path, repo: str, base: str) -> None:
    a, b = Runner(tmp_path / "a", APP.format(base=base)), Runner(tmp_path / "b", APP.format(base=base))
    image = f"{repo}/app:inline"
    first = a.build("-t", image, "--cache-to", "type=inline", "--push")
    root, store = a.store_view()
    try:
        config = store.by_id(first.image_id).config
    finally:
        root.close()
    assert len(config["pybuild.cache.v1"]["records"]) == 5  # WORKDIR, two COPYs, two RUNs

    second = b.build("--cache-from", image)
    assert second.ran == [] and len(_steps(second.cached, "RUN")) == 2
    # the config (with its inline records) is only made again by an inline export
    third = b.build("--cache-from", image, "--cache-to", "type=inline")
    assert third.image_id == first.image_id

    (b.context / "src" / "main.txt").write_text("main v2\n")
    fourth = b.build("--cache-from", image)
    assert len(_steps(fourth.ran, "RUN")) == 1 and any("sort deps.txt" in n for n in fourth.cached)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_mode_max_exports_every_stage_and_min_only_the_final_one(tmp_path: Path, repo: str, base: str, mode: str) -> None:
    a, b = Runner(tmp_path / "a", MULTI.format(base=base)), Runner(tmp_path / "b", MULTI.format(base=base))
    cache = f"type=registry,ref={repo}/cache:{mode}"
    first = a.build("--cache-to", f"{cache},mode={mode}")
    assert len(_steps(first.ran, "RUN")) == 3

    second = b.build("--cache-from", cache)
    builder_run = [n for n in second.ran if "cat /src" in n]
    final_runs = [n for n in second.cached if "wc -" in n]
    assert len(final_runs) == 2  # the final stage's steps come from the cache either way
    if mode == "max":
        assert second.ran == []
    else:
        assert len(builder_run) == 1  # the builder stage runs again ...
        assert [n for n in second.ran if "wc -" in n] == []  # ... and the final stage still hits
    assert second.image_id == first.image_id


def test_cache_mounts_travel_when_asked(tmp_path: Path, repo: str, base: str) -> None:
    a, b = Runner(tmp_path / "a", CACHE_MOUNT.format(base=base)), Runner(tmp_path / "b", CACHE_MOUNT.format(base=base))
    cache = f"type=registry,ref={repo}/cache:mounts"
    a.build("--cache-to", f"{cache},cache-mounts=true", "--build-arg", "ROUND=1")
    # a new ARG value: the RUN step must run on B, and finds A's cache mount
    b.build("--cache-from", f"{cache},cache-mounts=true", "--build-arg", "ROUND=2", "-t", "mounts:b")
    assert read_image_file(b.root, "mounts:b", "/result") == "reused\n"

    c = Runner(tmp_path / "c", CACHE_MOUNT.format(base=base))
    c.build("--cache-from", cache, "--build-arg", "ROUND=2", "-t", "mounts:c")  # not asked for: an empty mount
    assert read_image_file(c.root, "mounts:c", "/result") == "fresh\n"


def test_an_unreachable_cache_warns_and_the_build_goes_on(tmp_path: Path, base: str) -> None:
    a = Runner(tmp_path / "a", APP.format(base=base))
    build = a.build("--cache-from", "type=registry,ref=127.0.0.1:9/nowhere/cache:1", "--cache-to", "type=registry,ref=127.0.0.1:9/nowhere/cache:1")
    assert build.result.returncode == 0 and len(_steps(build.ran, "RUN")) == 2
    warnings = [n for n in build.notices if n.startswith("WARNING")]
    assert any("importing cache from 127.0.0.1:9/nowhere/cache:1" in w for w in warnings)
    # A refused port is tried again briefly, and an optional cache gives up after one retry
    # (see tests/oci/test_registry_unreachable.py); the warning names the host and why.
    assert all("cannot connect to 127.0.0.1:9 (connection refused)" in w and "tried 2 times" in w for w in warnings)
    assert any("exporting cache to 127.0.0.1:9/nowhere/cache:1" in w for w in warnings)

    strict = a.build("--cache-from", "type=registry,ref=127.0.0.1:9/nowhere/cache:1,ignore-error=false", check=False)
    assert strict.result.returncode == 1
    assert "importing cache from 127.0.0.1:9/nowhere/cache:1 failed" in strict.result.stderr
    assert "Traceback" not in strict.result.stderr


def test_a_directory_that_is_not_a_cache_warns(tmp_path: Path, base: str) -> None:
    a = Runner(tmp_path / "a", APP.format(base=base))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "index.json").write_text("{not json")
    build = a.build("--cache-from", f"type=local,src={junk}")
    assert build.result.returncode == 0
    assert any("not a readable pybuild cache" in n for n in build.notices)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--cache-to", "type=s3,ref=x", "--cache-to type=s3 is not supported"),
        ("--cache-to", "type=registry", "needs ref="),
        ("--cache-to", "type=local", "needs dest="),
        ("--cache-from", "type=local", "needs src="),
        ("--cache-to", "type=registry,ref=r/c,mode=all", "mode=min or mode=max"),
        ("--cache-to", "type=registry,ref=r/c,colour=blue", "unknown option 'colour'"),
        ("--cache-from", "type=inline", "name the image instead"),
    ],
)
def test_bad_cache_flags_are_usage_errors(tmp_path: Path, flag: str, value: str, message: str) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\n")
    result = pybuild("build", flag, value, str(context), root=tmp_path / "root", check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_cache_record_cannot_name_a_path_outside_the_root(tmp_path: Path, base: str) -> None:
    a = Runner(tmp_path / "a", APP.format(base=base))
    directory = tmp_path / "cache"
    a.build("--cache-to", f"type=local,dest={directory}")
    _rewrite_local_cache(directory, lambda records: {k: {**v, "snapshot": "../../../etc"} for k, v in records.items()})
    b = Runner(tmp_path / "b", APP.format(base=base))
    build = b.build("--cache-from", f"type=local,src={directory}")
    assert any("malformed pybuild cache" in n for n in build.notices)
    assert len(_steps(build.ran, "RUN")) == 2


def _rewrite_local_cache(directory: Path, change) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    blobs = directory / "blobs" / "sha256"
    index = json.loads((directory / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    config["records"] = change(config["records"])
    data = json.dumps(config).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    manifest["config"] = {**manifest["config"], "digest": "sha256:" + digest, "size": len(data)}
    mdata = json.dumps(manifest).encode()
    mdigest = hashlib.sha256(mdata).hexdigest()
    (blobs / mdigest).write_bytes(mdata)
    index["manifests"][0] = {**index["manifests"][0], "digest": "sha256:" + mdigest, "size": len(mdata)}
    (directory / "index.json").write_text(json.dumps(index))
    shutil.rmtree(directory / "unused", ignore_errors=True)


def _corrupt_blobs(directory: Path) -> int:
    """Flip a byte in every layer blob of a local cache; returns how many."""
    index = json.loads((directory / "index.json").read_text())
    blobs = directory / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    for layer in manifest["layers"]:
        path = blobs / layer["digest"].split(":")[1]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return len(manifest["layers"])


@pytest.mark.parametrize("damage", ["blob", "diff_id"])
def test_a_cache_whose_layers_are_not_what_they_claim_is_dropped_and_the_build_goes_on(tmp_path: Path, base: str, damage: str) -> None:
    a, b = Runner(tmp_path / "a", APP.format(base=base)), Runner(tmp_path / "b", APP.format(base=base))
    directory = tmp_path / "cache"
    a.build("--cache-to", f"type=local,dest={directory}")
    if damage == "blob":
        assert _corrupt_blobs(directory) == 5
    else:
        _rewrite_local_cache(directory, lambda records: {k: {**v, "diffID": "sha256:" + "0" * 64} for k, v in records.items()})
    build = b.build("--cache-from", f"type=local,src={directory}", "-t", "app:b")
    assert build.result.returncode == 0
    assert any("is broken" in n and "building again without it" in n for n in build.notices)
    assert len(_steps(build.ran, "RUN")) == 2  # made here, not taken from the broken cache
    assert read_image_file(b.root, "app:b", "/app/ran") == "deps\nbundle\n"

    strict = Runner(tmp_path / "c", APP.format(base=base)).build("--cache-from", f"type=local,src={directory},ignore-error=false", check=False)
    assert strict.result.returncode == 1 and "is broken" in strict.result.stderr and "Traceback" not in strict.result.stderr


CROSS_PLATFORMS = """\
FROM --platform=$BUILDPLATFORM {base} AS build
RUN echo shared > /shared
ARG TARGETARCH
RUN echo $TARGETARCH > /arch
FROM scratch
COPY --from=build /arch /arch
"""


def test_a_cache_of_several_platforms_serves_every_platform_on_another_runner(tmp_path: Path, base: str) -> None:
    """BuildKit exports the cache records of every target platform of a
    multi-platform build (solver/llbsolver/solver.go exports each result of the
    build's refs); runner B, importing it, builds both platforms without running
    a step and makes the same index."""
    a = Runner(tmp_path / "a", CROSS_PLATFORMS.format(base=base))
    b = Runner(tmp_path / "b", CROSS_PLATFORMS.format(base=base))
    directory = tmp_path / "shared-cache"
    platforms = "--platform=linux/amd64,linux/arm64"
    first = a.build(platforms, "--cache-to", f"type=local,dest={directory},mode=max")
    assert len(_steps(first.ran, "RUN")) == 3  # the shared step once, the TARGETARCH step per platform

    second = b.build(platforms, "--cache-from", f"type=local,src={directory}")
    assert _steps(second.ran, "RUN") == []
    assert len(_steps(second.cached, "RUN")) == 3
    assert second.image_id == first.image_id
