"""``pybuild binfmt``: the status of each platform, and QEMU's handlers registered and removed
for real (root), leaving binfmt_misc as the test found it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.cli.main import main
from pybuild.executors import _binfmt

from .._peers import peer_unavailable

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")


def entries() -> set[str]:
    if not (BINFMT_MISC / "register").exists():
        return set()
    return {path.name for path in BINFMT_MISC.iterdir()} - {"register", "status"}


@pytest.fixture
def binfmt_as_found(require_root: None) -> Iterator[None]:
    """Whatever a test registers is removed, and binfmt_misc unmounted if it was not mounted."""
    was_mounted = (BINFMT_MISC / "register").exists()
    before = entries()
    try:
        yield
    finally:
        for name in entries() - before:
            (BINFMT_MISC / name).write_text("-1")
        if not was_mounted and not entries():
            subprocess.run(["umount", str(BINFMT_MISC)], check=False, capture_output=True)


def test_status_lists_every_platform_with_how_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """As ``docker run --privileged tonistiigi/binfmt`` reports BuildKit's platforms (its README:
    a "supported" list of os/arch[/variant], the host's first, and the "emulators")."""
    assert main(["binfmt"]) == 0
    lines = capsys.readouterr().out.splitlines()
    host = _binfmt.host_platform()
    assert lines[0].split() == [host, "native"]
    shown = [line.split()[0] for line in lines if not line.startswith("hint:")]
    assert sorted(shown) == sorted(_binfmt.ARCHES)
    for line in lines:
        assert line.startswith("hint:") or line.split(None, 1)[1].startswith(("native", "emulated via /", "not available: "))

    assert main(["binfmt", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"supported", "emulators"} and report["supported"][0] == host


def test_install_without_root_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["binfmt", "--install", "arm64"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pybuild binfmt --install needs root") and "Traceback" not in err
    assert main(["binfmt", "--uninstall"]) == 1


def test_install_of_a_platform_without_a_handler_names_those_there_are(capsys: pytest.CaptureFixture[str], binfmt_as_found: None) -> None:
    if not _binfmt.available_handlers():
        peer_unavailable("qemu-user-static's handlers are not installed", "qemu-user-static")
    assert main(["binfmt", "--install", "linux/sparc-nothing"]) == 2
    err = capsys.readouterr().err
    assert "no qemu-user-static handler for 'linux/sparc-nothing'" in err and "linux/arm64" in err


def test_install_and_uninstall_round_trip_touching_only_pybuild_s_handlers(
    capsys: pytest.CaptureFixture[str], binfmt_as_found: None
) -> None:
    """Registered with the F flag, as tonistiigi/binfmt does for BuildKit (its --install writes
    the qemu entries with flags "CF", binfmt/cmd/binfmt/main.go), so that the emulator runs
    inside a container's root; --uninstall writes -1 to the entries pybuild made for the platform
    named, and only those."""
    handlers = [h for h in _binfmt.available_handlers() if not (BINFMT_MISC / f"pybuild-{h.name}").exists()
                and _binfmt.host_platform() not in h.platforms()]
    if not handlers:
        peer_unavailable("qemu-user-static's handlers are not installed", "qemu-user-static")
    # one whose platform nothing runs yet, so its status line changes; else any (another session's run)
    unrunnable = [h for h in handlers if h.platforms() and not _binfmt.emulation_status(h.platforms()[0]).runnable]
    handler = (unrunnable or handlers)[0]
    platform = handler.platforms()[0] if unrunnable else None
    name = f"pybuild-{handler.name}"

    def status_line(out: str) -> str:
        return [line for line in out.splitlines() if line.startswith(f"{platform} ")][0]

    assert main(["binfmt", "--install", handler.name]) == 0
    out = capsys.readouterr().out
    assert f"installed {name}" in out
    entry = _binfmt.parse_entry(name, (BINFMT_MISC / name).read_text())
    assert entry is not None and entry.enabled and "F" in entry.flags
    if platform:
        assert "emulated via /" in status_line(out)

    # someone else's handler for the same binaries stays
    magic, mask = entry.magic.hex(), entry.mask.hex()
    escaped = lambda hexa: "".join(f"\\x{hexa[i:i + 2]}" for i in range(0, len(hexa), 2))  # noqa: E731
    foreign = f"test-foreign-{handler.name}"
    (BINFMT_MISC / "register").write_text(f":{foreign}:M::{escaped(magic)}:{escaped(mask)}:/bin/false:")
    try:
        assert main(["binfmt", "--uninstall", handler.name]) == 0  # not every one: the session's qemu_handlers stay
        out = capsys.readouterr().out
        assert f"uninstalled {name}" in out and not (BINFMT_MISC / name).exists()
        assert (BINFMT_MISC / foreign).exists()
        if platform:
            assert "lacks the F (fix-binary) flag" in status_line(out)
    finally:
        (BINFMT_MISC / foreign).write_text("-1")
