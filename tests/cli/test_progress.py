"""Progress renderers: plain lines, JSON lines, and the tty view through a pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.cli._progress import FailedStepLog, JsonProgress, PlainProgress
from pybuild.cli._tty import TtyProgress
from pybuild.dag._events import StepCached, StepFailed, StepFinished, StepLog, StepMiss, StepStarted


def events() -> list[object]:
    return [
        StepCached("a", "[s 1/3] RUN cached", 0.0),
        StepMiss("b", "[s 2/3] RUN make", "build-arg V changed"),
        StepStarted("b", "[s 2/3] RUN make", 0.0),
        StepLog("b", "stdout", b"compiling\nlinking", 0.5),
        StepFinished("b", "[s 2/3] RUN make", 1.0, 1.0),
        StepStarted("c", "[s 3/3] RUN fail", 1.0),
        StepFailed("c", "[s 3/3] RUN fail", 2.0, "exit code: 3"),
    ]


def test_plain_numbers_steps_and_shows_output_and_timing() -> None:
    out = io.StringIO()
    progress = PlainProgress(out)
    for event in events():
        progress(event)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["#1 [s 1/3] RUN cached", "#1 CACHED"]
    assert "#2 cache miss: build-arg V changed" in lines
    assert "#2 0.500 compiling" in lines and "#2 1.000 linking" in lines
    assert "#2 DONE 1.0s" in lines
    assert "#3 ERROR: exit code: 3" in lines


def test_plain_truncates_huge_output_and_keeps_the_failed_log(tmp_path: Path) -> None:
    out = io.StringIO()
    log = tmp_path / "failed.log"
    progress = FailedStepLog(PlainProgress(out, output_limit=100), str(log))
    progress(StepStarted("ok", "[s 1/2] RUN quiet", 0.0))
    progress(StepLog("ok", "stdout", b"fine\n", 0.05))
    progress(StepFinished("ok", "[s 1/2] RUN quiet", 0.06, 0.06))
    progress(StepStarted("x", "[s 2/2] RUN noisy", 0.0))
    progress(StepLog("x", "stdout", b"y" * 50 + b"\n" + b"z" * 500 + b"\n", 0.1))
    progress(StepFailed("x", "[s 2/2] RUN noisy", 0.2, "exit code: 1"))
    progress.close()
    text = out.getvalue()
    assert "[output clipped, log limit 100 bytes reached]" in text
    assert "z" * 60 not in text
    assert log.read_bytes() == b"y" * 50 + b"\n" + b"z" * 500 + b"\n"  # the whole log, kept to a file
    assert f"full log of the failed step: {log}" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed.log"]  # no spool files left


def test_rawjson_is_one_object_per_line() -> None:
    out = io.StringIO()
    progress = JsonProgress(out)
    for event in events():
        progress(event)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records][:3] == ["StepCached", "StepMiss", "StepStarted"]
    assert records[3]["data"] == "compiling\nlinking"


def test_tty_view_shows_cached_running_tail_and_summary() -> None:
    out = io.StringIO()
    progress = TtyProgress(out, width=80)
    for event in events()[:4]:
        progress(event)
    live = progress.render()
    assert live[0].startswith("[+] Building")
    assert any(line.startswith(" => CACHED [s 1/3] RUN cached") for line in live)
    assert " => => # compiling" in live and " => => # linking" in live  # tail of the running step
    assert all(len(line) <= 80 for line in live)
    for event in events()[4:]:
        progress(event)
    progress.close()
    text = out.getvalue()
    assert "FINISHED" in text and "\x1b[2K" in text
    assert re.search(r"\n3 steps: 1 run, 1 cached, 1 failed in \d+\.\ds\n$", text)


@pytest.mark.usefixtures("require_root")
def test_build_progress_through_a_pseudo_terminal(tmp_path: Path, busybox_tar: Path) -> None:
    root = tmp_path / "root"
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    subprocess.run([sys.executable, "-m", "pybuild", "import", str(busybox_tar), "busybox"], env=env, check=True, capture_output=True)
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo hello-from-the-step && sleep 0.3\n")

    def run_in_pty() -> str:
        pid, fd = pty.fork()
        if pid == 0:  # the child: pybuild with a terminal as stdout/stderr (auto picks tty)
            os.execve(sys.executable, [sys.executable, "-m", "pybuild", "build", str(tmp_path)], env)
        chunks = []
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return b"".join(chunks).decode("utf-8", "replace")

    first = run_in_pty()
    assert "[+] Building" in first and "\x1b[" in first  # the live view, with cursor movement
    assert "FINISHED" in first and "hello-from-the-step" in first
    second = run_in_pty()
    assert "CACHED [2/2] RUN echo hello-from-the-step" in second


def _fail_one_step(progress: FailedStepLog) -> None:
    progress(StepStarted("x", "[s 1/1] RUN noisy", 0.0))
    progress(StepLog("x", "stdout", b"the whole log\n", 0.1))
    progress(StepFailed("x", "[s 1/1] RUN noisy", 0.2, "exit code: 1"))
    progress.close()


def test_the_failed_log_is_written_through_a_symlink_and_a_device_never_replacing_them(tmp_path: Path) -> None:
    target = tmp_path / "real.log"
    os.symlink(target, tmp_path / "link.log")
    _fail_one_step(FailedStepLog(PlainProgress(io.StringIO()), str(tmp_path / "link.log")))
    assert (tmp_path / "link.log").is_symlink() and target.read_bytes() == b"the whole log\n"
    null = tmp_path / "null"  # this test's own /dev/null
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _fail_one_step(FailedStepLog(PlainProgress(io.StringIO()), str(null)))
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.log", "null", "real.log"]  # no spool files left


def test_a_failed_log_that_cannot_be_written_is_said_and_does_not_hide_the_failure(tmp_path: Path) -> None:
    out = io.StringIO()
    (tmp_path / "dir").mkdir()
    _fail_one_step(FailedStepLog(PlainProgress(out), str(tmp_path / "dir")))
    assert "cannot write" in out.getvalue() and "is a directory" in out.getvalue()
    assert "#1 ERROR: exit code: 1" in out.getvalue()
    assert os.listdir(tmp_path / "dir") == []
