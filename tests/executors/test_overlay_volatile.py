"""A RUN step's overlay is mounted ``volatile`` (the step's own fsyncs cost nothing) and its monitor
syncs the upper dir's file system once the step ends, before pybuild commits it (durable on power
loss as the unmount's sync made it); with PYBUILD_VOLATILE_OVERLAYS=1 that sync is skipped too, and
the rootfs caller's overlays (COPY) are volatile only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.executors import BindMount, OverlayMount, SandboxExecutor
from pybuild.executors import _overlay as overlay

from .conftest import answer_in_child
from .test_sandbox import sh


def root_mount_options(mountinfo: str) -> str:
    """The per-superblock options of the ``/`` mount in a mountinfo text."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[fields.index("-") + 3]
    raise AssertionError(f"no / in {mountinfo!r}")


def is_volatile(options: str) -> bool:
    """``volatile``, or ``fsync=volatile`` as Linux 6.x shows it."""
    return bool({"volatile", "fsync=volatile"} & set(options.split(",")))


def test_asked_for_only_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYBUILD_VOLATILE_OVERLAYS", raising=False)
    assert not overlay.volatile_uppers_requested()
    monkeypatch.setenv("PYBUILD_VOLATILE_OVERLAYS", "0")
    assert not overlay.volatile_uppers_requested()
    monkeypatch.setenv("PYBUILD_VOLATILE_OVERLAYS", "1")
    assert overlay.volatile_uppers_requested()


@pytest.fixture
async def volatile_executor(require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A sandbox whose zygote was started with PYBUILD_VOLATILE_OVERLAYS=1."""
    monkeypatch.setenv("PYBUILD_VOLATILE_OVERLAYS", "1")
    state = tmp_path / "volatile-state"
    state.mkdir()
    async with SandboxExecutor(state_dir=str(state)) as sandbox:
        yield sandbox


def dirty_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache not yet written out (cachestat(2), Linux >= 6.5)."""
    import ctypes
    import os

    class Range(ctypes.Structure):
        _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]

    class Stat(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = Stat()
        if libc.syscall(451, fd, ctypes.byref(Range(0, 0)), ctypes.byref(stat), 0) != 0:
            pytest.skip(f"no cachestat(2) here: {os.strerror(ctypes.get_errno())}")
        return int(stat.dirty + stat.writeback)
    finally:
        os.close(fd)


async def write_4_mib_on_a_volatile_rootfs(executor: SandboxExecutor, rootfs) -> Path:  # type: ignore[no-untyped-def]
    """A step that writes 4 MiB to /made; its rootfs was mounted volatile; the file in its upper dir."""
    script = "dd if=/dev/urandom of=/made bs=64k count=64 2>/dev/null && cat /proc/self/mountinfo"
    result, out, err = await sh(executor, rootfs, script)
    assert result.exit_code == 0, err
    assert is_volatile(root_mount_options(out))
    made = Path(rootfs.upper) / "made"
    assert made.stat().st_size == 64 * 65536
    return made


@pytest.mark.root
async def test_a_run_steps_rootfs_is_volatile_and_synced_at_its_end(executor: SandboxExecutor, make_rootfs) -> None:  # type: ignore[no-untyped-def]
    if not overlay._volatile_supported():
        pytest.skip("this kernel's overlayfs has no volatile option (Linux < 5.10)")
    made = await write_4_mib_on_a_volatile_rootfs(executor, make_rootfs())
    assert dirty_pages(made) == 0  # written out before the step was reported done


def test_the_monitor_syncs_only_a_volatile_writable_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [True])
    monkeypatch.setattr(overlay, "_VOLATILE_UPPERS", [False])
    monkeypatch.setattr(overlay, "_STEP_SYNC", [True])
    assert not overlay.step_sync_wanted("/upper")  # not volatile: its unmount syncs
    overlay.volatile_steps(synced=True)
    assert overlay.step_sync_wanted("/upper") and not overlay.step_sync_wanted(None)
    overlay.volatile_steps(synced=False)  # PYBUILD_VOLATILE_OVERLAYS=1
    assert overlay.volatile_wanted("/upper") and not overlay.step_sync_wanted("/upper")
    overlay.volatile_steps(synced=True)
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [False])  # a kernel before 5.10: the unmount syncs
    assert not overlay.step_sync_wanted("/upper")


def test_a_failed_sync_fails_the_step(tmp_path: Path) -> None:
    import os

    from pybuild.executors import _sandbox

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _sandbox.sync_step_changes(fd) is None
    finally:
        os.close(fd)
    error = _sandbox.sync_step_changes(fd)  # closed: the kernel refuses, as it would on a writeback error
    assert error is not None and error[0].startswith("cannot write the step's changes to disk")


def test_only_asked_for_writable_kernel_mounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [True])
    monkeypatch.setattr(overlay, "_VOLATILE_UPPERS", [False])
    assert not overlay.volatile_wanted("/upper")  # a process that did not ask (a container's shim)
    overlay.use_volatile_uppers()
    assert overlay.volatile_wanted("/upper")
    assert not overlay.volatile_wanted(None)  # read-only: nothing to sync anyway
    monkeypatch.setenv(overlay.DRIVER_ENV, overlay.FUSE)
    assert not overlay.volatile_wanted("/upper")
    monkeypatch.delenv(overlay.DRIVER_ENV)
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [False])  # a kernel before 5.10
    assert not overlay.volatile_wanted("/upper")


def test_legacy_options_carry_it_when_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [True])
    monkeypatch.setattr(overlay, "_VOLATILE_UPPERS", [True])
    assert overlay.legacy_overlay_options(("/l",), "/u", "/w").split(",")[-1] == "volatile"
    assert "volatile" not in overlay.legacy_overlay_options(("/l", "/m"), None, None)



@pytest.mark.root
async def test_a_run_steps_rootfs_is_volatile_and_its_layer_intact(volatile_executor: SandboxExecutor, make_rootfs) -> None:  # type: ignore[no-untyped-def]
    if not overlay._volatile_supported():
        pytest.skip("this kernel's overlayfs has no volatile option (Linux < 5.10)")
    rootfs = make_rootfs()
    result, out, err = await sh(volatile_executor, rootfs, "echo kept > /made && cat /proc/self/mountinfo")
    assert result.exit_code == 0, err
    assert is_volatile(root_mount_options(out))
    assert (Path(rootfs.upper) / "made").read_text() == "kept\n"


@pytest.mark.root
async def test_a_writable_step_mount_is_volatile_too(volatile_executor: SandboxExecutor, make_rootfs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not overlay._volatile_supported():
        pytest.skip("this kernel's overlayfs has no volatile option (Linux < 5.10)")
    upper, work, lower = tmp_path / "u", tmp_path / "w", tmp_path / "l"
    for directory in (upper, work, lower):
        directory.mkdir()
    (lower / "seen").write_text("lower\n")
    mounts = [OverlayMount((str(lower),), "/rw", str(upper), str(work)), BindMount(str(lower), "/ro", readonly=True)]
    result, out, err = await sh(volatile_executor, make_rootfs(), "cat /rw/seen && grep ' /rw ' /proc/self/mountinfo", mounts)
    assert result.exit_code == 0, err
    assert out.startswith("lower\n") and is_volatile(out.splitlines()[1].split()[-1])


def test_probes_asked_once_are_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote asks before forking: a monitor (a fork) finds the answers and probes nothing."""
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [])
    monkeypatch.setattr(overlay, "_LOWERDIR_PLUS", None)
    monkeypatch.setattr(overlay, "_IN_USERNS", None)
    overlay.ask_once()

    def answers() -> str:  # the child must not touch the kernel's overlay to answer
        overlay.linux.fsopen = None  # type: ignore[assignment]
        return repr((overlay.lowerdir_plus_supported(), overlay._volatile_supported(), overlay.in_user_namespace()))

    assert answer_in_child(answers) == repr((overlay.lowerdir_plus_supported(), overlay._volatile_supported(), overlay.in_user_namespace()))


@pytest.fixture
async def deferred_executor(require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A sandbox started while the build defers its syncs to its end (``defer_step_syncs``)."""
    monkeypatch.delenv("PYBUILD_VOLATILE_OVERLAYS", raising=False)
    monkeypatch.setattr(overlay, "_DEFERRED", [False])
    overlay.defer_step_syncs()
    state = tmp_path / "deferred-state"
    state.mkdir()
    async with SandboxExecutor(state_dir=str(state)) as sandbox:
        yield sandbox


@pytest.mark.root
async def test_a_deferred_steps_rootfs_is_volatile_and_left_to_the_builds_sync(deferred_executor: SandboxExecutor, make_rootfs) -> None:  # type: ignore[no-untyped-def]
    if not overlay._volatile_supported():
        pytest.skip("this kernel's overlayfs has no volatile option (Linux < 5.10)")
    made = await write_4_mib_on_a_volatile_rootfs(deferred_executor, make_rootfs())
    assert dirty_pages(made) > 0  # not written out by the step: the build's settle does it


def test_deferred_syncs_make_the_callers_overlays_volatile_until_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [True])
    monkeypatch.setattr(overlay, "_VOLATILE_UPPERS", [False])
    monkeypatch.setattr(overlay, "_DEFERRED", [False])
    monkeypatch.delenv(overlay.DEFERRED_ENV, raising=False)
    assert not overlay.volatile_wanted("/upper")
    overlay.defer_step_syncs()
    assert overlay.step_syncs_deferred() and overlay.volatile_wanted("/upper")
    overlay.defer_step_syncs(False)  # the build ended: a container's overlay syncs at unmount again
    assert not overlay.step_syncs_deferred() and not overlay.volatile_wanted("/upper")
    monkeypatch.setenv(overlay.DEFERRED_ENV, "deferred")  # how the zygote hears of it
    assert overlay.step_syncs_deferred()


def test_the_zygote_is_told_of_deferred_syncs_through_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.executors import _executor

    monkeypatch.delenv("PYBUILD_VOLATILE_OVERLAYS", raising=False)
    monkeypatch.setattr(overlay, "_DEFERRED", [False])
    assert overlay.DEFERRED_ENV not in _executor._zygote_environ()
    overlay.defer_step_syncs()
    assert _executor._zygote_environ()[overlay.DEFERRED_ENV] == "deferred"
