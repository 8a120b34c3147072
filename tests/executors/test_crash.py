"""A pybuild process that dies mid-step takes its sandbox with it, and its leftovers are
cleaned by the next executor; a fork bomb ends at the pids limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from pybuild.executors import Rootfs, SandboxExecutor

from .conftest import PATH, alive, descendants, host_state, processes_matching
from .test_sandbox import sh

pytestmark = pytest.mark.root

CHILD = textwrap.dedent(
    """
    import sys, trio
    from pybuild.executors import ProcessSpec, Rootfs, SandboxExecutor

    async def main(lower, upper, work, state):
        async with SandboxExecutor(state_dir=state) as executor:
            def show(stream, chunk):
                sys.stdout.write(chunk.decode()); sys.stdout.flush()
            await executor.run(
                Rootfs((lower,), upper, work),
                ProcessSpec(("/bin/sh", "-c", "echo running; sleep 987660"), env=({path!r},), network="default"),
                on_output=show,
            )

    trio.run(main, *sys.argv[1:])
    """
).format(path=PATH)


async def wait_until(condition, seconds: float = 20.0) -> bool:
    with trio.move_on_after(seconds):
        while not condition():
            await trio.sleep(0.05)
        return True
    return False


async def test_killed_pybuild_leaves_nothing_running_or_mounted(tmp_path: Path, busybox_rootfs: Path, require_root) -> None:
    before = host_state()
    for name in ("upper", "work", "state"):
        (tmp_path / name).mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(busybox_rootfs), str(tmp_path / "upper"), str(tmp_path / "work"), str(tmp_path / "state")],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert await trio.to_thread.run_sync(child.stdout.readline) == b"running\n"
        assert processes_matching(r"sleep 987660") != []
        # The zygote, the monitor, slirp4netns and the sandbox's processes.
        helpers = descendants(child.pid)
        assert len(helpers) >= 4
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert await wait_until(lambda: not alive(helpers))
    assert processes_matching(r"sleep 987660") == []
    assert host_state().mounts == before.mounts
    # The dead process's step cgroups are left over, empty; the next executor removes them
    # (on a shared machine another pybuild's executor may already have done so).
    def stale() -> list[str]:
        return [
            os.path.join(root, "pybuild", name)
            for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/devices", "/sys/fs/cgroup/unified")
            if os.path.isdir(os.path.join(root, "pybuild"))
            for name in os.listdir(os.path.join(root, "pybuild"))
            if name.startswith(f"{child.pid}-")
        ]

    async with SandboxExecutor(state_dir=str(tmp_path / "state")) as executor:
        (tmp_path / "u2").mkdir()
        (tmp_path / "w2").mkdir()
        result, out, _ = await sh(executor, Rootfs((str(busybox_rootfs),), str(tmp_path / "u2"), str(tmp_path / "w2")), "echo fine")
        assert out == "fine\n"
    assert stale() == []


async def test_fork_bomb_with_the_default_limit(executor, make_rootfs) -> None:
    before = host_state()
    result, _, err = await sh(executor, make_rootfs(), "bomb() { bomb | bomb & }; bomb; sleep 1000", timeout=3)
    assert result.timed_out and "can't fork" in err
    assert host_state() == before  # its cgroups are gone
    assert (await trio.run_process(["true"])).returncode == 0
