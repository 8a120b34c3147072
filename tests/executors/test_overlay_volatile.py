"""With PYBUILD_VOLATILE_OVERLAYS=1 a build's writable overlays are mounted ``volatile`` (no sync
of the whole disk at each unmount); by default they are not (durable on power loss)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.executors import BindMount, OverlayMount, SandboxExecutor
from pybuild.executors import _overlay as overlay

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


@pytest.mark.root
async def test_a_run_steps_rootfs_is_synced_by_default(executor: SandboxExecutor, make_rootfs) -> None:  # type: ignore[no-untyped-def]
    rootfs = make_rootfs()
    result, out, err = await sh(executor, rootfs, "echo kept > /made && cat /proc/self/mountinfo")
    assert result.exit_code == 0, err
    assert not is_volatile(root_mount_options(out))


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
    import os

    monkeypatch.setattr(overlay, "_VOLATILE_SUPPORTED", [])
    monkeypatch.setattr(overlay, "_LOWERDIR_PLUS", None)
    monkeypatch.setattr(overlay, "_IN_USERNS", None)
    overlay.ask_once()
    read_r, write_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not touch the kernel's overlay to answer
        try:
            overlay.linux.fsopen = None  # type: ignore[assignment]
            answers = (overlay.lowerdir_plus_supported(), overlay._volatile_supported(), overlay.in_user_namespace())
            os.write(write_w, repr(answers).encode())
        finally:
            os._exit(0)
    os.close(write_w)
    child = os.read(read_r, 200).decode()
    os.close(read_r)
    os.waitpid(pid, 0)
    assert child == repr((overlay.lowerdir_plus_supported(), overlay._volatile_supported(), overlay.in_user_namespace()))
