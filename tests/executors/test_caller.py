"""NamespaceRootfsCaller: file operations on a mounted rootfs, never visible to the host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuild.executors import BindMount, NamespaceRootfsCaller, TmpfsMount, check_rootfs_caller

from .conftest import host_state, walk_upper

pytestmark = pytest.mark.root


@pytest.fixture
def caller(require_root: None, tmp_path: Path):
    state = tmp_path / "caller-state"
    state.mkdir()
    made = NamespaceRootfsCaller(state_dir=str(state))
    yield made
    made.close()
    assert list(state.iterdir()) == []


async def test_conformance(caller, make_rootfs) -> None:
    await check_rootfs_caller(caller, make_rootfs)


def copy_like_a_file_op(root: str, host_mounts_before: tuple) -> dict:
    from .conftest import host_state as current_host_state

    seen = {
        "lower": Path(root, "etc", "group").read_text().splitlines()[0],
        "context": Path(root, "ctx", "src.txt").read_text(),
        "tmpfs": Path(root, "scratch").is_dir(),
        # /proc/self is the process (the main thread's mount namespace): the host's view.
        "host_unchanged": current_host_state().mounts == host_mounts_before,
    }
    os.makedirs(os.path.join(root, "app"))
    Path(root, "app", "src.txt").write_text(seen["context"])
    os.unlink(os.path.join(root, "etc", "passwd"))
    return seen


async def test_function_sees_rootfs_and_mounts_and_writes_the_layer(caller, make_rootfs, tmp_path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "src.txt").write_text("from the context\n")
    before = host_state()
    rootfs = make_rootfs()
    seen = await caller.call(
        rootfs, [BindMount(str(context), "/ctx"), TmpfsMount("/scratch")], copy_like_a_file_op, before.mounts
    )
    assert seen == {"lower": "root:x:0:", "context": "from the context\n", "tmpfs": True, "host_unchanged": True}
    assert host_state() == before
    upper = Path(rootfs.upper)
    assert (upper / "app" / "src.txt").read_text() == "from the context\n"
    whiteout = os.lstat(upper / "etc" / "passwd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    # The mount points /ctx and /scratch were stubs: gone from the layer.
    assert sorted(walk_upper(rootfs.upper)) == ["app", "app/src.txt", "etc", "etc/passwd"]


async def test_readonly_rootfs_refuses_writes(caller, make_rootfs) -> None:
    def try_write(root: str) -> str:
        try:
            Path(root, "x").write_text("x")
        except OSError as e:
            return e.strerror
        return "written"

    assert await caller.call(make_rootfs(readonly=True), [], try_write) == "Read-only file system"


_RUNNING = {"now": 0, "most": 0}


def _busy_copy(root: str, seconds: float) -> None:
    import time

    _RUNNING["now"] += 1  # the GIL makes these two steps safe enough for a count of threads
    _RUNNING["most"] = max(_RUNNING["most"], _RUNNING["now"])
    time.sleep(seconds)
    _RUNNING["now"] -= 1


async def test_calls_share_the_cpu_budget(caller, make_rootfs, monkeypatch) -> None:
    """Steps run without a limit; the file work they ask for runs a CPU count at a time."""
    import trio

    from pybuild.executors import _cpu

    monkeypatch.setattr(_cpu, "cpu_budget", lambda: 2)
    _RUNNING.update(now=0, most=0)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(caller.call, make_rootfs(), [], _busy_copy, 0.1)
    assert _RUNNING["most"] == 2


def _rootfs_options(root: str) -> str:
    with open("/proc/thread-self/mountinfo") as f:  # this thread's own mount namespace
        for line in f:
            fields = line.split()
            if fields[4] == root:
                return fields[fields.index("-") + 3]
    raise AssertionError(f"{root} is not mounted here")


async def test_the_layer_is_synced_by_default(caller, make_rootfs, monkeypatch) -> None:
    """Without PYBUILD_VOLATILE_OVERLAYS the call's overlay is a normal one: its unmount syncs
    the disk, which is what makes a committed snapshot durable on power loss."""
    from pybuild.executors import _overlay

    monkeypatch.delenv("PYBUILD_VOLATILE_OVERLAYS", raising=False)
    monkeypatch.setattr(_overlay, "_VOLATILE_UPPERS", [False])
    options = await caller.call(make_rootfs(), [], _rootfs_options)
    assert not {"volatile", "fsync=volatile"} & set(options.split(","))


async def test_the_layer_is_mounted_volatile_when_asked(caller, make_rootfs, monkeypatch) -> None:
    """PYBUILD_VOLATILE_OVERLAYS=1: no sync of the whole disk when the call's overlay goes away."""
    from pybuild.executors import _overlay

    if not _overlay._volatile_supported():
        pytest.skip("this kernel's overlayfs has no volatile option (Linux < 5.10)")
    monkeypatch.setenv("PYBUILD_VOLATILE_OVERLAYS", "1")
    monkeypatch.setattr(_overlay, "_VOLATILE_UPPERS", [False])  # restored after: the flag is process-wide
    options = await caller.call(make_rootfs(), [], _rootfs_options)
    assert {"volatile", "fsync=volatile"} & set(options.split(","))
