"""The zygote forked before the build's first RUN (``SandboxExecutor.start_early``).

A process without threads is needed to fork one, and pytest's has trio's
worker threads: each case runs in a fresh interpreter (``_SCRIPT``), which
prints what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pybuild.executors import SandboxExecutor

_SCRIPT = r"""
import json, os, signal, sys, trio
from pybuild.executors import ProcessSpec, Rootfs, SandboxExecutor
from pybuild.executors._zygote_fork import ForkedProcess

state, lower, case = sys.argv[1], sys.argv[2], sys.argv[3]
signal.signal(signal.SIGUSR1, lambda *_: None)  # pybuild's own handler: not the zygote's
marker = os.open(os.path.join(state, "..", "pybuilds-own-file"), os.O_WRONLY | os.O_CREAT)
os.dup2(marker, 50)  # pybuild's own descriptors: none is the zygote's
executor = SandboxExecutor(state_dir=state)
executor.start_early()
seen = {"forked": executor._early is not None and isinstance(executor._early[0], ForkedProcess)}
pid = executor._early[0].pid if executor._early else -1

def look_at_zygote():  # once it has run a step: set up by then
    fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    seen["stdio"] = [fds[0], fds[1], os.path.basename(fds[2])]
    seen["requests"] = fds[3].startswith("socket:")
    seen["has_ours"] = any(target.endswith("pybuilds-own-file") for target in fds.values())
    seen["other_sockets"] = sorted(n for n, target in fds.items() if target.startswith("socket:") and target != fds[3])
    seen["cwd"] = os.readlink(f"/proc/{pid}/cwd")
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    seen["catches_usr1"] = bool(caught & (1 << (signal.SIGUSR1 - 1)))

if case == "killed":
    os.kill(pid, signal.SIGKILL)

async def main():
    if case != "unused":
        step = os.path.join(state, "..", "step")
        os.makedirs(os.path.join(step, "upper")); os.makedirs(os.path.join(step, "work"))
        out = []
        spec = ProcessSpec(("/bin/sh", "-c", "echo hi"), env=("PATH=/bin",), network="none")
        rootfs = Rootfs((lower,), os.path.join(step, "upper"), os.path.join(step, "work"))
        result = await executor.run(rootfs, spec, on_output=lambda stream, data: out.append(data))
        seen["output"] = b"".join(out).decode()
        seen["exit_code"] = result.exit_code
        seen["used_the_forked_one"] = executor._zygote.process.pid == pid
        if seen["used_the_forked_one"]:
            look_at_zygote()
    await executor.aclose()
    try:
        os.waitpid(pid, os.WNOHANG)
        seen["reaped"] = False
    except ChildProcessError:
        seen["reaped"] = True

trio.run(main)
print(json.dumps(seen))
"""


def _run_case(tmp_path: Path, lower: Path, case: str) -> dict[str, object]:
    state = tmp_path / "state"
    state.mkdir()
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(state), str(lower), case], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert list(state.iterdir()) == []  # aclose removed the executor's directory
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.root
def test_the_first_step_runs_in_the_zygote_forked_early(require_root: None, tmp_path: Path, busybox_rootfs: Path) -> None:
    seen = _run_case(tmp_path, busybox_rootfs, "used")
    assert seen["forked"] and seen["used_the_forked_one"]
    assert (seen["output"], seen["exit_code"]) == ("hi\n", 0)
    # nothing of pybuild's: stdio (/dev/null, /dev/null, its log) and the request socket as fd 3
    assert seen["stdio"] == ["/dev/null", "/dev/null", "zygote.log"]
    assert seen["requests"] and not seen["has_ours"]
    assert seen["other_sockets"] == []  # not pybuild's end of the request socket: it sees end of file when pybuild goes
    assert seen["cwd"] == "/"
    assert not seen["catches_usr1"]
    assert seen["reaped"]


@pytest.mark.root
def test_an_early_zygote_no_step_used_is_stopped_and_reaped(require_root: None, tmp_path: Path, busybox_rootfs: Path) -> None:
    seen = _run_case(tmp_path, busybox_rootfs, "unused")
    assert seen["forked"] and seen["reaped"]


@pytest.mark.root
def test_an_early_zygote_that_died_is_replaced_by_a_started_one(require_root: None, tmp_path: Path, busybox_rootfs: Path) -> None:
    seen = _run_case(tmp_path, busybox_rootfs, "killed")
    assert seen["forked"] and not seen["used_the_forked_one"]
    assert (seen["output"], seen["exit_code"]) == ("hi\n", 0)
    assert seen["reaped"]


def test_no_zygote_is_forked_while_another_thread_runs(tmp_path: Path) -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        executor = SandboxExecutor(state_dir=str(tmp_path))
        executor.start_early()
        assert executor._early is None
        assert os.listdir(tmp_path) == []  # not even its directory: the first step does it all
    finally:
        stop.set()
        other.join()
