"""``pybuild build --platform``: a list of platforms, one solve, an index under the tag.

The cross-compilation pattern needs no emulation (its steps run as the build
platform), so this runs on any machine; emulated steps and the interop with
skopeo, docker and umoci are tests/integration/test_multiarch*.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pybuild.dag import host_platform

from .conftest import read_image_file

HOST = host_platform()
OTHER = "linux/arm64" if HOST.architecture != "arm64" else "linux/amd64"

CROSS = """\
FROM --platform=$BUILDPLATFORM busybox AS build
RUN echo shared > /shared
ARG TARGETARCH
RUN echo $TARGETARCH > /arch
FROM scratch
COPY --from=build /arch /arch
"""


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_two_platforms_natively_make_an_index_and_share_steps(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """As ``docker buildx build --platform linux/amd64,linux/arm64`` (BuildKit's
    dockerfile2llb per TargetPlatform, one solve): one tag naming an index of
    two manifests; the step before ARG TARGETARCH ran once, the one after it
    once per platform, each image holding its own platform's file; progress
    names each step's platform (prefixCommand)."""
    context = _context(tmp_path, CROSS)
    iid = tmp_path / "iid"
    done = cli("build", "--platform", f"{HOST},{OTHER}", "-t", "multi:1", "--progress=rawjson", "--iidfile", str(iid), str(context))
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    ran = Counter(e["name"] for e in events if e["event"] == "StepStarted")
    assert ran[f"[{HOST} build 2/3] RUN echo shared > /shared"] == 1
    other = OTHER.split("/")[1]
    assert ran[f"[{HOST}->{other} build 3/3] RUN echo {other} > /arch"] == 1
    assert ran[f"[{HOST} build 3/3] RUN echo {HOST.architecture} > /arch"] == 1
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    opened = Root.open(root)
    try:
        index = ImageStore(opened).index("multi:1")
        assert index is not None and iid.read_text() == index.digest
        images = {entry.platform: entry.image.id for entry in index.manifests}
    finally:
        opened.close()
    assert sorted(images) == sorted([str(HOST), OTHER])
    for platform, image_id in images.items():
        assert read_image_file(root, image_id, "/arch") == platform.split("/")[1] + "\n"


def test_one_foreign_platform_is_a_plain_image_for_it(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One --platform, even a foreign one, builds a plain manifest (no index), its
    config naming that platform (BuildKit's finalizeResultImage)."""
    context = _context(tmp_path, CROSS)
    cli("build", "--platform", OTHER, "-t", "one:1", str(context))
    inspected = json.loads(cli("inspect", "one:1").stdout)[0]
    assert inspected["Architecture"] == OTHER.split("/")[1]
    assert read_image_file(root, "one:1", "/arch") == OTHER.split("/")[1] + "\n"


def test_platform_flag_mistakes_are_one_line_usage_errors(cli, root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A malformed platform, and a docker archive asked to hold several platforms
    (BuildKit's docker exporter: "docker exporter does not currently support
    exporting manifest lists", exporter/containerimage/export.go), are usage
    errors before anything is built or written."""
    context = _context(tmp_path, CROSS)
    bad = cli("build", "--platform", "linux/amd64,,linux/arm64", str(context), check=False)
    assert bad.returncode == 2 and "--platform" in bad.stderr and "Traceback" not in bad.stderr
    dest = tmp_path / "out.tar"
    docker = cli("build", "--platform", f"{HOST},{OTHER}", "-o", f"type=docker,dest={dest}", str(context), check=False)
    assert docker.returncode == 2 and "type=docker" in docker.stderr and "Traceback" not in docker.stderr
    assert not dest.exists() and not root.exists()


def test_an_oci_output_of_two_platforms_holds_the_index(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``-o type=oci`` of a several-platform build writes the index as BuildKit's
    oci exporter does (exporter/oci/export.go: the image index is the archive's
    one entry); --metadata-file names the index digest, as buildx's does."""
    import tarfile

    context = _context(tmp_path, CROSS)
    dest, metadata = tmp_path / "multi.tar", tmp_path / "meta.json"
    cli("build", "--platform", f"{HOST}", "--platform", OTHER, "-o", f"type=oci,dest={dest}",
        "--metadata-file", str(metadata), "-t", "multi:oci", str(context))
    with tarfile.open(dest) as archive:
        top = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        [entry] = top["manifests"]
        index = json.load(archive.extractfile("blobs/sha256/" + entry["digest"].split(":")[1]))  # type: ignore[arg-type]
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert platforms == sorted([str(HOST), OTHER])
    meta = json.loads(metadata.read_text())
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    opened = Root.open(root)
    try:
        stored = ImageStore(opened).index("multi:oci")
    finally:
        opened.close()
    # the store's index (the archive's gzips the layers, so its manifests and index differ)
    assert stored is not None and meta["containerimage.digest"] == stored.digest
    assert "containerimage.config.digest" not in meta
    assert meta["image.name"] == "docker.io/library/multi:oci"


def test_a_local_cache_is_imported_once_for_all_platforms(cli, root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A cache directory has no platforms, so a several-platform build reads it
    once (a registry image's inline cache is per platform, and is read per
    target as buildx resolves --cache-from for each platform): an unreadable
    one warns once, not once per platform."""
    context = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    done = cli("build", "--platform", f"{HOST},{OTHER}", "--cache-from", f"type=local,src={tmp_path / 'no-cache'}", str(context))
    assert done.stderr.count("importing cache from") == 1
