"""A failure or Ctrl-C stops every step, kills every process, leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pybuild.cache import Root


def sleepers(tag: str) -> list[int]:
    """Pids of processes whose command line holds ``tag``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tag in cmdline and "pytest" not in cmdline:
            found.append(int(pid))
    return found


def mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


def leftover_temp(root: Path) -> list[Path]:
    return [p for entry in Root.temp_contents(root) for p in (entry, *entry.rglob("*"))]


def wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_first_failure_stops_the_parallel_stage(cli, busybox_image: str, tmp_path: Path, root: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox AS slow\nRUN sleep 737\n"
        "FROM busybox AS failing\nRUN sleep 1 && exit 5\n"
        "FROM busybox\nCOPY --from=slow /etc/hostname /a\nCOPY --from=failing /etc/hostname /b\n"
    )
    started = time.monotonic()
    result = cli("build", "--progress=plain", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "exit code: 5" in result.stderr
    assert time.monotonic() - started < 60  # the 737 s sleep was not waited for
    assert sleepers("sleep 737") == []
    assert mounts_under(root) == []
    assert leftover_temp(root) == []


def test_ctrl_c_cancels_cleanly(busybox_image: str, tmp_path: Path, root: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN sleep 738\n")
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pybuild", "build", "--progress=plain", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_interruptible,
    )
    try:
        assert wait_for(lambda: sleepers("sleep 738") != []), "the step never started"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert wait_for(lambda: sleepers("sleep 738") == [], timeout=10)
    assert mounts_under(root) == []
    assert leftover_temp(root) == []


def _interruptible() -> None:
    """Ctrl-C reaches the build as it does from a terminal: a test run started in the
    background by a shell without job control (`make test &`) ignores SIGINT, its children
    inherit that, and a program started so keeps ignoring it, as POSIX shells expect."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
