"""Overlay layers inside a user namespace (rootless): mounted, diffed and applied as a root build's.

A rootless pybuild is root only in its own user namespace, where overlayfs may not touch
``trusted.*`` xattrs.  Each test runs a small script under ``unshare --user --map-root-user
--mount`` (a namespace like the one a non-root pybuild enters) and checks what it reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .._peers import require_tool

REPO = Path(__file__).resolve().parents[2]

# Builds two layer trees with apply_layer (the second makes o/ opaque), mounts them with an
# upper dir through the executor's overlay code, changes the merged view, and writes the upper
# dir as a layer tar with write_layer.
_SCRIPT = """
import io, json, os, sys, tarfile
from pathlib import Path
from pybuild.executors._overlay import mount_overlay_at, normalise_upper
from pybuild.oci import apply_layer, write_layer

base = Path(sys.argv[1])

def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf

for name in ("l1", "l2", "upper", "work", "merged", "scratch", "flat"):
    (base / name).mkdir()
apply_layer(layer([("d", None), ("d/f", b"f"), ("g", b"g"), ("o", None), ("o/x", b"x")]), base / "l1")
apply_layer(layer([("o", None), ("o/.wh..wh..opq", b""), ("o/y", b"y")]), base / "l2")
mount_overlay_at(str(base / "merged"), (str(base / "l2"), str(base / "l1")), str(base / "upper"),
                 str(base / "work"), scratch=str(base / "scratch"), flatten_dir=str(base / "flat"))
merged = base / "merged"
seen_o = sorted(os.listdir(merged / "o"))
os.unlink(merged / "g")
os.unlink(merged / "d" / "f")
os.rmdir(merged / "d")
os.mkdir(merged / "d")
(merged / "d" / "new").write_bytes(b"new")
os.umount(merged) if hasattr(os, "umount") else __import__("subprocess").run(["umount", str(merged)], check=True)
normalise_upper(str(base / "upper"))
out = io.BytesIO()
write_layer(base / "upper", out)
out.seek(0)
with tarfile.open(fileobj=out) as tar:
    members = [(m.name, sorted(m.pax_headers)) for m in tar.getmembers()]
json.dump({"seen_o": seen_o, "members": members}, sys.stdout)
"""


def run_in_user_namespace(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this interpreter as root of a new user and mount namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test's user namespace with a known mapping")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    return subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private", "--",
         sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, cwd=REPO, check=False, env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("driver", ["kernel", "fuse-overlayfs"])
def test_overlay_in_a_user_namespace_keeps_whiteouts_and_opaque_directories(tmp_path: Path, driver: str) -> None:
    """Rootless overlay mounts use ``userxattr``; the layer they leave is the root build's.

    BuildKit's rootless snapshotter mounts overlayfs with ``userxattr`` in a user namespace
    (moby/buildkit snapshot/snapshotter.go, needsUserXAttr, using containerd's
    snapshots/overlay/overlayutils/check.go NeedsUserXAttr) and its differ turns
    0/0 character devices and opaque directories into OCI whiteouts whatever xattr namespace
    marked them (containerd archive/tar.go, ``overlayWhiteoutConverter``; BuildKit
    util/overlay/overlay_linux.go, checkOpaque, reads ``trusted.overlay.opaque`` and
    ``user.overlay.opaque``).  Where the kernel refuses, BuildKit's rootless mode uses
    fuse-overlayfs (moby/buildkit docs/rootless.md, "Known limitations"); its upper dir marks
    opaque directories its own way and is rewritten into the kernel's form.
    """
    if driver == "fuse-overlayfs":
        require_tool("fuse-overlayfs")
    result = run_in_user_namespace(_SCRIPT, str(tmp_path), env={"PYBUILD_OVERLAY_DRIVER": driver})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The applied layer's opaque o/ hides the layer below it once mounted.
    assert report["seen_o"] == ["y"]
    members = report["members"]
    names = [name for name, _ in members]
    assert names == ["d", "d/.wh..wh..opq", "d/new", ".wh.g"]
    # overlayfs's own xattrs never reach the layer.
    assert all(not any("overlay" in key for key in pax) for _, pax in members), members
    # No fuse-overlayfs daemon outlives its mount.
    assert not _processes_naming(tmp_path)


def _processes_naming(path: Path) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline and "fuse-overlayfs" in cmdline:
            found.append(cmdline)
    return found


_UNMAPPED = """
import io, sys, tarfile
from pathlib import Path
from pybuild.errors import PybuildError
from pybuild.oci import apply_layer

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
    info = tarfile.TarInfo("etc")
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)
    info = tarfile.TarInfo(sys.argv[2])
    info.size, info.uid, info.gid = 2, int(sys.argv[3]), int(sys.argv[4])
    tar.addfile(info, io.BytesIO(b"hi"))
buf.seek(0)
dest = Path(sys.argv[1]) / "tree"
dest.mkdir()
try:
    apply_layer(buf, dest)
except PybuildError as e:
    print(e)
    sys.exit(3)
"""


@pytest.mark.parametrize(
    ("uid", "gid", "named"),
    [(1000, 0, "uid 1000"), (0, 42, "gid 42"), (70000, 70001, "uid 70000 and gid 70001")],
)
def test_a_layer_owner_outside_the_id_mapping_is_a_clear_error(tmp_path: Path, uid: int, gid: int, named: str) -> None:
    """Applying a file whose owner the namespace cannot map names the file and the id.

    The kernel refuses such a chown with EINVAL, which alone names neither.  BuildKit's rootless
    mode needs the user's subordinate ids for the same reason (moby/buildkit docs/rootless.md:
    /etc/subuid and /etc/subgid should hold at least 65536 ids) and fails the unpack otherwise.
    """
    result = run_in_user_namespace(_UNMAPPED, str(tmp_path), "etc/owned", str(uid), str(gid))
    assert result.returncode == 3, result.stderr
    message = result.stdout.strip()
    assert "etc/owned" in message and named in message, message
    assert "Invalid argument" not in message


def test_a_refused_kernel_mount_switches_the_process_to_fuse_overlayfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rootless, a kernel that refuses overlayfs in the user namespace means fuse-overlayfs, with the reason.

    BuildKit's rootless mode picks the fuse-overlayfs snapshotter where the kernel cannot mount
    overlayfs unprivileged (moby/buildkit docs/rootless.md, "Known limitations").
    """
    from pybuild.executors import _overlay

    def refuse(*_args: object) -> int:
        raise PermissionError(1, "Operation not permitted")

    # probe_overlay sets the variable itself: setenv first, so the undo restores the original.
    monkeypatch.setenv(_overlay.DRIVER_ENV, _overlay.KERNEL)
    monkeypatch.setattr(_overlay, "in_user_namespace", lambda: True)
    monkeypatch.setattr(_overlay, "mount_overlay_fd", refuse)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    chosen = _overlay.probe_overlay(str(tmp_path))
    assert chosen.name == "fuse-overlayfs"
    assert "refused" in chosen.reason and "Operation not permitted" in chosen.reason
    assert os.environ[_overlay.DRIVER_ENV] == "fuse-overlayfs"  # the zygote and its steps inherit it
    assert os.listdir(tmp_path) == []  # the trial layers are gone
    # Without fuse-overlayfs the kernel's answer is kept, to be reported by the mount that fails.
    os.environ[_overlay.DRIVER_ENV] = _overlay.KERNEL
    monkeypatch.setattr(shutil, "which", lambda name: None)
    chosen = _overlay.probe_overlay(str(tmp_path))
    assert chosen.name == "kernel" and "fuse-overlayfs is not installed" in chosen.reason
    assert os.environ[_overlay.DRIVER_ENV] == _overlay.KERNEL


def test_root_never_probes_and_keeps_the_kernel_overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root (the initial user namespace) nothing changes: kernel overlayfs, no trial mount."""
    from pybuild.executors import _overlay

    monkeypatch.setenv(_overlay.DRIVER_ENV, _overlay.KERNEL)
    monkeypatch.setattr(_overlay, "in_user_namespace", lambda: False)
    monkeypatch.setattr(_overlay, "mount_overlay_fd", None)  # would fail if called
    assert _overlay.probe_overlay(str(tmp_path)) == _overlay.OverlayDriver("kernel")


def test_the_fuse_overlayfs_reason_is_told_once_in_the_first_steps_output() -> None:
    """``--progress=plain`` shows why layers go through fuse-overlayfs: once, in the first step's output."""
    from pybuild.executors import SandboxExecutor
    from pybuild.executors._overlay import OverlayDriver

    executor = SandboxExecutor()
    executor._overlay = OverlayDriver("fuse-overlayfs", "the kernel refused overlayfs in the user namespace (x)")
    seen: list[tuple[str, bytes]] = []
    executor._tell_overlay_driver(lambda stream, data: seen.append((stream, data)))
    executor._tell_overlay_driver(lambda stream, data: seen.append((stream, data)))
    assert seen == [("stderr", b"pybuild: the kernel refused overlayfs in the user namespace (x)\n")]
