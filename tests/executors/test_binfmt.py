"""What this machine can run (executors/_binfmt.py): binfmt_misc entries read from a fake
/proc/sys/fs/binfmt_misc, the emulator test cached in memory and on disk, and the tiny
static binaries run for real (natively, and under QEMU's user-mode emulators)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pybuild.errors import UsageError
from pybuild.executors import _binfmt
from pybuild.executors._binfmt import ARCHES, Detector, available_handlers, parse_entry, run_test_binary

from .._peers import peer_unavailable

# The aarch64 entry as the kernel shows it for Debian's qemu-user-static (/usr/lib/binfmt.d/qemu-aarch64.conf).
AARCH64_MAGIC = "7f454c460201010000000000000000000200b700"
AARCH64_MASK = "ffffffffffffff00fffffffffffffffffeffffff"


def entry_text(interpreter: str, flags: str = "OCF", enabled: bool = True, magic: str = AARCH64_MAGIC) -> str:
    return (f"{'enabled' if enabled else 'disabled'}\ninterpreter {interpreter}\nflags: {flags}\n"
            f"offset 0\nmagic {magic}\nmask {AARCH64_MASK}\n")


@pytest.fixture
def interpreter(tmp_path: Path) -> Path:
    path = tmp_path / "qemu-aarch64-static"
    path.write_bytes(b"\x7fELF")
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A mounted-looking binfmt_misc directory with no handlers."""
    directory = tmp_path / "binfmt_misc"
    directory.mkdir()
    (directory / "register").write_text("")
    (directory / "status").write_text("enabled\n")
    return directory


@pytest.fixture
def tests_run(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The emulator tests the detector runs (each succeeds); the list of binaries run."""
    ran: list[bytes] = []

    def fake(binary: bytes) -> str:
        ran.append(binary)
        return ""

    monkeypatch.setattr(_binfmt, "run_test_binary", fake)
    return ran


def detector(binfmt_dir: Path, tmp_path: Path) -> Detector:
    return Detector(binfmt_dir, tmp_path / "emulation-cache.json", host="linux/amd64")


def test_the_host_platform_is_native_without_reading_proc(tmp_path: Path, tests_run: list[bytes]) -> None:
    """BuildKit's archutil.SupportedPlatforms starts from the default (host) platform, never tested."""
    found = detector(tmp_path / "nowhere", tmp_path).status("linux/amd64")
    assert (found.runnable, found.how) == (True, "native")
    assert not tests_run and not (tmp_path / "emulation-cache.json").exists()


def test_an_amd64_microarchitecture_variant_is_the_amd64_host_s_own(tmp_path: Path, tests_run: list[bytes]) -> None:
    """containerd's platforms treat linux/amd64/v2..v4 as amd64 variants (BuildKit's archutil
    reports the host's amd64 variant, amd64_binary.go): no emulator is involved."""
    found = detector(tmp_path / "nowhere", tmp_path).status("linux/amd64/v3")
    assert (found.platform, found.runnable, found.how) == ("linux/amd64/v3", True, "native")
    assert not detector(tmp_path / "nowhere", tmp_path).status("linux/amd64/v9").runnable


def test_unmounted_binfmt_misc_runs_nothing_foreign_and_says_how_to_fix_it(tmp_path: Path, tests_run: list[bytes]) -> None:
    """Without binfmt_misc the kernel runs only its own binaries; BuildKit's check then fails with
    "exec format error" (util/archutil/detect.go printPlatfromWarning: binfmt_misc not enabled)."""
    found = detector(tmp_path / "binfmt_misc", tmp_path).status("linux/arm64")
    assert (found.runnable, found.how) == (False, "unavailable")
    assert "binfmt_misc is not mounted" in found.reason
    assert "qemu-user-static" in found.hint and "pybuild binfmt --install" in found.hint
    assert not tests_run


def test_a_handler_without_the_fix_binary_flag_is_not_usable(fake_proc: Path, interpreter: Path, tmp_path: Path, tests_run: list[bytes]) -> None:
    """Without F the kernel looks the interpreter up in the sandbox's root, where it is not:
    BuildKit warns "'-F' flag might have not set" (util/archutil/detect.go)."""
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter), flags="OC"))
    found = detector(fake_proc, tmp_path).status("linux/arm64")
    assert not found.runnable
    assert "F (fix-binary) flag" in found.reason and str(interpreter) in found.reason
    assert not tests_run


def test_a_disabled_handler_or_a_missing_interpreter_is_not_usable(fake_proc: Path, interpreter: Path, tmp_path: Path, tests_run: list[bytes]) -> None:
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter), enabled=False))
    assert "qemu-aarch64 is disabled" in detector(fake_proc, tmp_path).status("linux/arm64").reason
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(tmp_path / "gone")))
    found = detector(fake_proc, tmp_path).status("linux/arm64")
    assert not found.runnable and "does not exist" in found.reason and "gone" in found.reason
    assert not tests_run


def test_binfmt_misc_switched_off_runs_nothing_foreign(fake_proc: Path, interpreter: Path, tmp_path: Path, tests_run: list[bytes]) -> None:
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter)))
    (fake_proc / "status").write_text("disabled\n")
    found = detector(fake_proc, tmp_path).status("linux/arm64")
    assert not found.runnable and "disabled" in found.reason


def test_a_handler_for_another_architecture_does_not_count(fake_proc: Path, interpreter: Path, tmp_path: Path, tests_run: list[bytes]) -> None:
    """The handler is chosen by the ELF header it matches (magic and mask), as the kernel does."""
    riscv = "7f454c460201010000000000000000000200f300"
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter), magic=riscv))
    found = detector(fake_proc, tmp_path).status("linux/arm64")
    assert not found.runnable and "no binfmt_misc handler for aarch64 binaries" in found.reason
    assert detector(fake_proc, tmp_path).status("linux/riscv64").runnable


def test_a_usable_handler_is_tested_once_and_remembered_across_processes(fake_proc: Path, interpreter: Path, tmp_path: Path, tests_run: list[bytes]) -> None:
    """BuildKit tests every emulator on each build (archutil.SupportedPlatforms); here the answer
    is kept, keyed by the entry and its interpreter's stat, so a rebuild tests nothing."""
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter)))
    first = detector(fake_proc, tmp_path)
    found = first.status("linux/arm64")
    assert (found.runnable, found.how, found.interpreter) == (True, "emulated", str(interpreter))
    assert first.status("linux/arm64/v8") == found  # memory
    assert detector(fake_proc, tmp_path).status("linux/arm64") == found  # the file, as another process
    assert tests_run == [ARCHES["linux/arm64"].binary]

    os.utime(interpreter, ns=(1, 1))  # another qemu installed: test it again
    assert detector(fake_proc, tmp_path).status("linux/arm64").runnable
    assert len(tests_run) == 2


def test_a_failing_emulator_is_unavailable_with_the_test_s_reason(fake_proc: Path, interpreter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_binfmt, "run_test_binary", lambda binary: "a test binary exited with status 139")
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter)))
    found = detector(fake_proc, tmp_path).status("linux/arm64")
    assert not found.runnable and "qemu-aarch64" in found.reason and "status 139" in found.reason


def test_a_cache_file_someone_else_owns_is_not_trusted(fake_proc: Path, interpreter: Path, tmp_path: Path, tests_run: list[bytes], require_root: None) -> None:
    (fake_proc / "qemu-aarch64").write_text(entry_text(str(interpreter)))
    detector(fake_proc, tmp_path).status("linux/arm64")
    os.chown(tmp_path / "emulation-cache.json", 65534, 65534)
    detector(fake_proc, tmp_path).status("linux/arm64")
    assert len(tests_run) == 2


def test_an_unknown_platform_is_unavailable_naming_it(tmp_path: Path) -> None:
    found = detector(tmp_path, tmp_path).status("linux/mips64le")
    assert not found.runnable and "linux/mips64le" in found.reason and "linux/arm64" in found.reason


def test_entries_parse_as_the_kernel_shows_them_and_extension_entries_are_skipped() -> None:
    entry = parse_entry("qemu-aarch64", entry_text("/usr/bin/qemu-aarch64-static"))
    assert entry is not None and entry.enabled and entry.flags == "OCF" and entry.offset == 0
    assert entry.matches(ARCHES["linux/arm64"].binary) and not entry.matches(ARCHES["linux/amd64"].binary)
    assert parse_entry("jar", "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n") is None


def test_handlers_are_read_from_both_debian_formats_and_the_host_s_own_is_never_installed(tmp_path: Path) -> None:
    """qemu-user-static ships systemd's binfmt.d lines and binfmt-support's files; the magic and
    mask come from them, as tonistiigi/binfmt installs what its qemu build describes."""
    systemd, support = tmp_path / "binfmt.d", tmp_path / "binfmts"
    systemd.mkdir(), support.mkdir()
    magic = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
    mask = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
    x86 = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00"
    (systemd / "qemu-aarch64.conf").write_text(f":qemu-aarch64:M::{magic}:{mask}:/usr/bin/qemu-aarch64-static:OPF\n")
    (systemd / "qemu-x86_64.conf").write_text(f":qemu-x86_64:M::{x86}:{mask}:/usr/bin/qemu-x86_64-static:F\n")
    (support / "qemu-aarch64").write_text(
        f"package qemu-user-static\ninterpreter /usr/bin/qemu-aarch64-static\nmagic {magic}\noffset 0\n"
        f"mask {mask}\ncredentials no\nfix_binary yes\npreserve yes\n")
    [from_systemd, _] = available_handlers([systemd])
    [from_support] = available_handlers([tmp_path / "absent", support])
    for handler in (from_systemd, from_support):
        assert handler.platforms() == ("linux/arm64",) and "F" in handler.flags
    chosen = _binfmt._selected(available_handlers([systemd]), None, "linux/amd64")
    assert [h.name for h in chosen] == ["qemu-aarch64"]
    assert _binfmt._selected(available_handlers([systemd]), ["arm64"], "linux/amd64") == chosen
    with pytest.raises(UsageError, match="no qemu-user-static handler for 'riscv64'"):
        _binfmt._selected(available_handlers([systemd]), ["riscv64"], "linux/amd64")


def test_the_tiny_binary_of_the_host_runs_natively() -> None:
    """The same check as BuildKit's archutil: a static binary that exits 0."""
    host = _binfmt.host_platform()
    if host not in ARCHES:
        pytest.skip(f"no test binary for {host}")
    assert run_test_binary(ARCHES[host].binary) == ""


@pytest.mark.parametrize("platform", [p for p in ARCHES if p != "linux/arm/v6"])
def test_each_tiny_binary_exits_0_under_its_qemu_user_emulator(platform: str, tmp_path: Path) -> None:
    """Run directly by qemu-ARCH-static (no binfmt_misc needed): the bytes are a valid program
    for that architecture, as BuildKit's util/archutil/*_binary.go are."""
    arch = ARCHES[platform]
    qemu = shutil.which(f"qemu-{arch.qemu}-static")
    if qemu is None:
        peer_unavailable(f"qemu-{arch.qemu}-static is not installed", "qemu-user-static")
    program = tmp_path / "check"
    program.write_bytes(arch.binary)
    program.chmod(0o755)
    assert subprocess.run([qemu, str(program)], timeout=30).returncode == 0
