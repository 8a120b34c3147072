"""Fixtures for the executor tests: fresh rootfs dirs over the busybox base, a
real executor per test, and a snapshot of host state to prove nothing leaks."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.executors import Rootfs, SandboxExecutor

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RootfsFactory:
    """Makes a fresh upper/work pair over the given lowers for every call."""

    def __init__(self, base: Path, lowers: tuple[str, ...]) -> None:
        self.base = base
        self.lowers = lowers
        self.made = 0

    def __call__(self, lowers: tuple[str, ...] | None = None, readonly: bool = False) -> Rootfs:
        self.made += 1
        step = self.base / f"step{self.made}"
        (step / "upper").mkdir(parents=True)
        (step / "work").mkdir()
        return Rootfs(self.lowers if lowers is None else lowers, str(step / "upper"), str(step / "work"), readonly)


@pytest.fixture
def make_rootfs(tmp_path: Path, busybox_rootfs: Path) -> RootfsFactory:
    return RootfsFactory(tmp_path / "steps", (str(busybox_rootfs),))


@pytest.fixture
async def executor(require_root: None, tmp_path: Path):
    state = tmp_path / "executor-state"
    state.mkdir()
    async with SandboxExecutor(state_dir=str(state)) as sandbox:
        yield sandbox
    # Nothing of the executor survives aclose().
    assert list(state.iterdir()) == []


@dataclass(frozen=True)
class HostState:
    mounts: tuple[str, ...]
    step_cgroups: tuple[str, ...]


# Mounts other programs on this shared machine make and remove while the tests
# run: docker's containers and other pytest sessions' pybuild roots.
_OTHERS = re.compile(r"^(/var/lib/docker/|/run/docker/|/run/netns/|/tmp/pytest-of-[^/]+/pytest-(?!{session}/)\d+/)")
_session: list[str] = []


@pytest.fixture(autouse=True, scope="session")
def _session_number(tmp_path_factory: pytest.TempPathFactory) -> None:
    _session[:] = [re.sub(r"\D", "", tmp_path_factory.getbasetemp().name) or "none"]


def host_state() -> HostState:
    """The host's mount table (without ids, which are per boot) and pybuild's step cgroups.

    Mounts that other programs on the machine own are left out: a leak from
    these tests would be under this session's temp dir or anywhere else.
    """
    others = re.compile(_OTHERS.pattern.replace("{session}", _session[0] if _session else "none"))
    with open("/proc/self/mountinfo") as f:
        mounts = tuple(sorted(" ".join(line.split()[3:]) for line in f if not others.match(line.split()[4])))
    groups = []
    for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/devices", "/sys/fs/cgroup/unified"):
        parent = os.path.join(root, "pybuild")
        if os.path.isdir(parent):
            groups += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(f"{os.getpid()}-")]
    return HostState(mounts, tuple(sorted(groups)))


def processes_matching(pattern: str) -> list[int]:
    """Host pids whose command line matches ``pattern``."""
    found = []
    regex = re.compile(pattern)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if regex.search(cmdline):
            found.append(int(entry))
    return found


def walk_upper(upper: str) -> dict[str, os.stat_result]:
    """Every entry of an upper dir, relative path -> lstat."""
    entries = {}
    for directory, dirs, files in os.walk(upper):
        for name in dirs + files:
            path = os.path.join(directory, name)
            entries[os.path.relpath(path, upper)] = os.lstat(path)
    return entries


def descendants(pid: int) -> set[int]:
    """Pids of every living descendant of ``pid``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # The command name may contain spaces: the ppid follows its closing parenthesis.
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if os.path.exists(f"/proc/{pid}")}


def answer_in_child(work: Callable[[], str]) -> str:
    """What ``work`` returns when run in a forked child, so that what it changes (a scheduling
    policy, a patched module) never reaches this process; empty if it raised."""
    read_r, write_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_r)
            os.write(write_w, work().encode())
        finally:
            os._exit(0)
    os.close(write_w)
    chunks = []
    while chunk := os.read(read_r, 4096):
        chunks.append(chunk)
    os.close(read_r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()
