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

REPO = Path(__file__).resolve().parents[2]

# Builds two layer trees with apply_layer (the second makes o/ opaque), mounts them with an
# upper dir through the executor's overlay code, changes the merged view, and writes the upper
# dir as a layer tar with write_layer.
_SCRIPT = """
import io, json, os, sys, tarfile
from pathlib import Path
from pybuild.executors._overlay import mount_overlay_at
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
out = io.BytesIO()
write_layer(base / "upper", out)
out.seek(0)
with tarfile.open(fileobj=out) as tar:
    members = [(m.name, sorted(m.pax_headers)) for m in tar.getmembers()]
json.dump({"seen_o": seen_o, "members": members}, sys.stdout)
"""


def run_in_user_namespace(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this interpreter as root of a new user and mount namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test's user namespace with a known mapping")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    return subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private", "--",
         sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, cwd=REPO, check=False,
    )


def test_overlay_in_a_user_namespace_keeps_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    """Rootless overlay mounts use ``userxattr``; the layer they leave is the root build's.

    BuildKit's rootless snapshotter mounts overlayfs with ``userxattr`` in a user namespace
    (moby/buildkit snapshot/snapshotter.go, needsUserXAttr, using containerd's
    snapshots/overlay/overlayutils/check.go NeedsUserXAttr) and its differ turns
    0/0 character devices and opaque directories into OCI whiteouts whatever xattr namespace
    marked them (containerd archive/tar.go, ``overlayWhiteoutConverter``; BuildKit
    util/overlay/overlay_linux.go, checkOpaque, reads ``trusted.overlay.opaque`` and
    ``user.overlay.opaque``).
    """
    result = run_in_user_namespace(_SCRIPT, str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The applied layer's opaque o/ hides the layer below it once mounted.
    assert report["seen_o"] == ["y"]
    members = report["members"]
    names = [name for name, _ in members]
    assert names == ["d", "d/.wh..wh..opq", "d/new", ".wh.g"]
    # overlayfs's own xattrs never reach the layer.
    assert all(not any("overlay" in key for key in pax) for _, pax in members), members


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
