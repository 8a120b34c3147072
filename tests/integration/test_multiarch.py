"""Several platforms from one Dockerfile, end to end (issue 16's "Done when").

- examples/multiarch: cross-compiled per TARGETARCH in a ``FROM --platform=$BUILDPLATFORM``
  stage; ``--platform linux/amd64,linux/arm64`` gives one tag naming an index of two
  manifests, the steps that do not use TARGETARCH run once, and the arm64 image runs (under
  QEMU) and says so;
- an emulated Dockerfile (an arm64 busybox base, RUN steps) builds for linux/arm64 on this
  amd64 machine, and its files and config are the arm64 ones;
- faults: a platform the machine cannot run stops the build before any step starts; a base
  without the requested platform is an error naming the platforms it has.

The interop checks (skopeo, umoci, docker, docker-registry) are in test_multiarch_interop.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import ImageView, pybuild
from .test_examples import EXAMPLES, cached_gcc_rootfs

MULTIARCH = EXAMPLES / "multiarch"
CROSS_PACKAGES = ("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross")
BOTH = "linux/amd64,linux/arm64"
# e_machine of an ELF header (offset 18, little-endian): what a compiled file is for
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def gcc_cross_tar() -> Path:
    """The example's compiler base: gcc:local plus the arm64 cross compiler and C library."""
    return cached_gcc_rootfs("gcc-cross-rootfs", CROSS_PACKAGES)


@pytest.fixture
def gcc_cross_image(root: Path, gcc_cross_tar: Path, require_root: None) -> str:
    pybuild("import", str(gcc_cross_tar), "gcc-cross:local", root=root)
    return "gcc-cross:local"


@pytest.fixture
def busybox_bases(root: Path, busybox_tar: Path, arm64_busybox_tar: Path, require_root: None) -> tuple[str, str]:
    """busybox:amd64 and busybox:arm64, the example's ``busybox:$TARGETARCH``."""
    pybuild("import", "--platform", "linux/amd64", str(busybox_tar), "busybox:amd64", root=root)
    pybuild("import", "--platform", "linux/arm64", str(arm64_busybox_tar), "busybox:arm64", root=root)
    return "busybox:amd64", "busybox:arm64"


def build_events(root: Path, *args: str, check: bool = True) -> tuple[list[dict[str, Any]], Any]:
    """Build with ``--progress=rawjson``; the events it printed, and the finished process."""
    result = pybuild("build", "--progress=rawjson", "--network=none", *args, root=root, check=check)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return events, result


def started(events: list[dict[str, Any]], text: str) -> Counter[str]:
    """How many times each step whose name holds ``text`` started, by digest."""
    return Counter(e["digest"] for e in events if e["event"] == "StepStarted" and text in e["name"])


class PlatformView(ImageView):
    """ImageView of one platform's image of a tag that names an index."""

    def __init__(self, root: Path, ref: str, platform: str) -> None:
        from pybuild.cache import Root
        from pybuild.oci import ImageStore

        self._root = Root.open(root)
        self.store = ImageStore(self._root)
        self.image = self.store.get(ref, platform=platform)
        self.config = dict(self.image.config)
        self.trees = [self._root.snapshots.tree(s) for s in self.store.snapshots_for(self.image)]


@pytest.fixture
def open_platform(root: Path):  # type: ignore[no-untyped-def]
    views: list[PlatformView] = []

    def opener(ref: str, platform: str) -> PlatformView:
        views.append(PlatformView(root, ref, platform))
        return views[-1]

    yield opener
    for view in views:
        view.close()


def error_line(stderr: str) -> str:
    """The one ``error: ...`` line of a failed command (a hint may follow it)."""
    [line] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return line


def elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), hex(int.from_bytes(header[18:20], "little")))


def index_platforms(root: Path, ref: str) -> list[str]:
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    opened = Root.open(root)
    try:
        index = ImageStore(opened).index(ref)
        assert index is not None, f"{ref} names no index"
        return sorted(entry.platform for entry in index.manifests)
    finally:
        opened.close()


# ---------------------------------------------------------------- examples/multiarch


def test_two_platforms_give_one_tag_naming_an_index_of_two_manifests_with_the_shared_steps_run_once(
    root: Path, gcc_cross_image: str, open_platform
) -> None:  # type: ignore[no-untyped-def]
    """BuildKit builds the target once per platform and exports an index of one manifest per
    platform under the tag (exporter/containerimage/writer.go: more than one platform gives
    an index); its solver runs a vertex once however many targets reach it, so the steps of
    a ``FROM --platform=$BUILDPLATFORM`` stage that use no TARGET* argument are shared
    (solver/jobs.go merges vertices by digest; dockerfile2llb/convert.go keeps TARGETARCH out
    of a step until ``ARG TARGETARCH`` brings it into the stage)."""
    events, _ = build_events(root, "--platform", BOTH, "-t", "multiarch", str(MULTIARCH))

    assert index_platforms(root, "multiarch") == ["linux/amd64", "linux/arm64"]
    # the shared steps: one step each, started once
    for shared in ("WORKDIR /src", "COPY greeting.c", "gcc -fsyntax-only"):
        assert list(started(events, shared).values()) == [1], (shared, events)
    # the compile uses TARGETARCH: one step per target
    compiles = started(events, "-static -O2 -s -o /greeting")
    assert sorted(compiles.values()) == [1, 1], events

    for platform, machine, architecture in (("linux/amd64", "x86_64", "amd64"), ("linux/arm64", "aarch64", "arm64")):
        view = open_platform("multiarch", platform)
        assert (view.config["os"], view.config["architecture"]) == ("linux", architecture)
        assert view.config["config"]["Cmd"] == ["/greeting"]
        found = view.find("/greeting")
        assert found is not None
        assert elf_machine(found) == machine


def test_one_platform_still_gives_a_plain_image_with_todays_id(root: Path, gcc_cross_image: str) -> None:
    """One platform is exactly today's build: a plain manifest (BuildKit's image exporter
    writes a single manifest for a single platform, exporter/containerimage/writer.go), the
    same image ID with and without ``--platform`` naming the host."""
    plain = pybuild("build", "-q", "--network=none", "-t", "multiarch:plain", str(MULTIARCH), root=root).stdout.strip()
    named = pybuild("build", "-q", "--network=none", "--platform", "linux/amd64", "-t", "multiarch:named", str(MULTIARCH), root=root).stdout.strip()
    assert plain == named and plain.startswith("sha256:")
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    opened = Root.open(root)
    try:
        assert ImageStore(opened).index("multiarch:plain") is None
    finally:
        opened.close()


def test_the_arm64_image_runs_under_emulation_and_says_so(
    root: Path, gcc_cross_image: str, busybox_bases: tuple[str, str], qemu_handlers: None
) -> None:
    """``docker run --platform linux/arm64`` of an index runs its arm64 manifest, through the
    kernel's binfmt_misc handler for aarch64 binaries (what tonistiigi/binfmt registers for
    BuildKit; the program is the same file both times, only the platform chosen differs)."""
    pybuild("build", "-q", "--network=none", "--platform", BOTH, "-t", "multiarch", str(MULTIARCH), root=root)
    arm = pybuild("run", "--rm", "--network=none", "--platform", "linux/arm64", "multiarch", root=root)
    assert arm.stdout == "Hello from aarch64! (compiled on x86_64)\n"
    host = pybuild("run", "--rm", "--network=none", "multiarch", root=root)
    assert host.stdout == "Hello from x86_64! (compiled on x86_64)\n"

    # the busybox variant: a base per target, chosen by FROM busybox:$TARGETARCH
    pybuild("build", "-q", "--network=none", "--platform", BOTH, "--target", "shell", "-t", "multiarch:shell", str(MULTIARCH), root=root)
    assert index_platforms(root, "multiarch:shell") == ["linux/amd64", "linux/arm64"]
    uname = pybuild("run", "--rm", "--network=none", "--platform", "linux/arm64", "multiarch:shell", "uname", "-m", root=root)
    assert uname.stdout == "aarch64\n"
    greeting = pybuild("run", "--rm", "--network=none", "--platform", "linux/arm64", "multiarch:shell", root=root)
    assert greeting.stdout == "Hello from aarch64! (compiled on x86_64)\n"
    assert pybuild("run", "--rm", "--network=none", "--platform", "linux/amd64", "multiarch:shell", "uname", "-m", root=root).stdout == "x86_64\n"


# ---------------------------------------------------------------- emulated RUN


def test_an_emulated_dockerfile_builds_for_arm64_with_the_arm64_files_and_config(
    root: Path, arm64_busybox_tar: Path, qemu_handlers: None, tmp_path: Path, open_platform
) -> None:  # type: ignore[no-untyped-def]
    """A RUN step for a foreign platform runs its binaries through QEMU user-mode emulation,
    as BuildKit's exec op does when the worker cannot run the platform natively
    (solver/llbsolver/ops/exec_binfmt.go); the image config names the target's os and
    architecture (exporter/containerimage/writer.go fills them from the platform)."""
    pybuild("import", "--platform", "linux/arm64", str(arm64_busybox_tar), "arm64-busybox", root=root)
    context = tmp_path / "emulated"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM arm64-busybox\n"
        "RUN uname -m > /machine\n"
        "ARG TARGETPLATFORM\n"
        "ARG TARGETARCH\n"
        "RUN echo \"$TARGETPLATFORM $TARGETARCH\" > /target\n"
        "RUN mkdir -p /data && for i in 1 2 3; do echo line $i; done > /data/lines && sha256sum /data/lines > /data/sum\n"
        "RUN cp /bin/busybox /copied-busybox\n"
        "WORKDIR /data\n"
        "CMD [\"cat\", \"/machine\"]\n"
    )
    events, _ = build_events(root, "--platform", "linux/arm64", "-t", "emulated:arm64", str(context))
    assert not [e for e in events if e["event"] == "StepFailed"]

    view = open_platform("emulated:arm64", "linux/arm64")
    assert view.read("/machine") == "aarch64\n"
    assert view.read("/target") == "linux/arm64 arm64\n"
    assert view.read("/data/lines") == "line 1\nline 2\nline 3\n"
    assert view.read("/data/sum").startswith(hashlib.sha256(b"line 1\nline 2\nline 3\n").hexdigest())
    copied = view.find("/copied-busybox")
    assert copied is not None and elf_machine(copied) == "aarch64"
    assert (view.config["os"], view.config["architecture"]) == ("linux", "arm64")
    assert view.config["config"]["WorkingDir"] == "/data"
    assert view.config["config"]["Cmd"] == ["cat", "/machine"]
    run = pybuild("run", "--rm", "--network=none", "--platform", "linux/arm64", "emulated:arm64", root=root)
    assert run.stdout == "aarch64\n"


# ---------------------------------------------------------------- faults


def test_a_platform_the_machine_cannot_run_stops_the_build_before_any_step(root: Path, busybox_tar: Path, tmp_path: Path, unrunnable_platform: str) -> None:
    """BuildKit only finds out when the step runs (exec_binfmt.go: no emulator, then the
    process fails with ``exec format error``); pybuild checks every platform a RUN step needs
    before anything runs, and says which platform and what installs its emulator.  Beside
    the host's platform too: not even the host's steps start, and no tag is written."""
    foreign_arch = unrunnable_platform.split("/")[1]  # TARGETARCH: riscv64, s390x, arm ...
    pybuild("import", "--platform", "linux/amd64", str(busybox_tar), "base:amd64", root=root)
    pybuild("import", "--platform", unrunnable_platform, str(busybox_tar), f"base:{foreign_arch}", root=root)
    context = tmp_path / "foreign"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base:$TARGETARCH\nRUN echo first > /first\nRUN echo second > /second\n")
    for platforms in (unrunnable_platform, f"linux/amd64,{unrunnable_platform}"):
        events, result = build_events(root, "--platform", platforms, "-t", "foreign", str(context), check=False)
        assert result.returncode != 0
        assert not [e for e in events if e["event"] in ("StepStarted", "StepFinished")], events
        error = error_line(result.stderr)
        assert unrunnable_platform in error and "Dockerfile:2:" in error, result.stderr
        assert "qemu-user-static" in result.stderr and "pybuild binfmt --install" in result.stderr
        assert "Traceback" not in result.stderr
        assert pybuild("inspect", "foreign", root=root, check=False).returncode != 0


def test_a_base_without_the_requested_platform_names_the_platforms_it_has(root: Path, busybox_bases: tuple[str, str], tmp_path: Path) -> None:
    """An index base without the target's platform is an error naming the target, as
    containerd's platform matcher fails (images/image.go: "no match for platform in
    manifest"), and, beyond it, the platforms the base does have."""
    two = tmp_path / "two"
    two.mkdir()
    (two / "Dockerfile").write_text("FROM busybox:$TARGETARCH\n")
    pybuild("build", "-q", "--network=none", "--platform", BOTH, "-t", "busybox:multi", str(two), root=root)
    assert index_platforms(root, "busybox:multi") == ["linux/amd64", "linux/arm64"]

    context = tmp_path / "copy-only"
    context.mkdir()
    (context / "file").write_text("x\n")
    (context / "Dockerfile").write_text("FROM busybox:multi\nCOPY file /file\n")
    result = pybuild("build", "--network=none", "--platform", "linux/ppc64le", "-t", "nope", str(context), root=root, check=False)
    assert result.returncode != 0
    error = error_line(result.stderr)
    assert "linux/ppc64le" in error and "linux/amd64, linux/arm64" in error, result.stderr
    assert "busybox:multi" in error and "Dockerfile:1:" in error, result.stderr
    assert "Traceback" not in result.stderr
