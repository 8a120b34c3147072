"""Rootless cgroup v2 delegation, on a fake cgroup2 tree of plain files.

The real kernel path needs a systemd user slice with ``Delegate=`` (not on CI,
whose unified hierarchy offers no controllers), so these point the module at
a tmp dir.  What they check is the layout systemd's docs/CGROUP_DELEGATION.md
asks of a delegate ("no internal processes": processes only in leaves,
controllers enabled in ``cgroup.subtree_control`` for children), the layout
rootlesskit's ``--evacuate-cgroup2`` and BuildKit's docs/rootless.md
(``systemd-run --user -p Delegate=yes``) rely on.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pybuild.executors import _cgroups as cgroups
from pybuild.executors import _cgroups_delegated as delegated

OWN = "user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"
PROC = f"0::/{OWN}\n"
PID = os.getpid()
REAL_RMDIR = os.rmdir


def fake_cgroup(directory: Path, controllers: str = "pids memory") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("cgroup.procs", "cgroup.subtree_control", "pids.max", "memory.max", "memory.swap.max", "cgroup.kill"):
        (directory / name).write_text("")
    (directory / "cgroup.controllers").write_text(controllers + "\n")
    return directory


def cgroupfs_rmdir(path: str) -> None:
    """rmdir as cgroupfs: a group without child groups or processes goes with its interface files."""
    if any(entry.is_dir() for entry in os.scandir(path)) or Path(path, "cgroup.procs").read_text().strip():
        raise OSError(errno.EBUSY, "busy", path)
    for entry in os.scandir(path):
        os.unlink(entry.path)
    REAL_RMDIR(path)


class FakeTree:
    """mkdir in the fake tree gives the new group its interface files, as cgroupfs does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        real_mkdir = os.mkdir

        def mkdir(path: str | os.PathLike[str], mode: int = 0o777, *args: object, **kwargs: object) -> None:
            real_mkdir(path, mode)
            if str(path).startswith(str(root)):
                fake_cgroup(Path(path))

        real_write = delegated._write

        def write(directory: str, name: str, value: str) -> None:
            if name == "cgroup.procs":  # a process is in one group: the kernel moves it
                for procs in root.rglob("cgroup.procs"):
                    procs.write_text("".join(f"{line}\n" for line in procs.read_text().split() if line != value))
                with open(os.path.join(directory, name), "a") as f:
                    f.write(value + "\n")
                return
            real_write(directory, name, value)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rmdir", cgroupfs_rmdir)
        monkeypatch.setattr(delegated, "_write", write)
        monkeypatch.setattr(delegated, "_prepared", {})


def layout_for(tmp_path: Path, controllers: str = "pids memory") -> cgroups.CgroupLayout:
    fake_cgroup(tmp_path / OWN, controllers)
    usable = cgroups.CgroupLayout(unwritable=(str(tmp_path),))
    return cgroups.with_delegation(usable, str(tmp_path), PROC)


def test_delegated_cgroup_with_controllers_serves_pids_and_memory(tmp_path: Path) -> None:
    """A writable own cgroup offering pids and memory is used, as runc docs/cgroup-v2.md's
    rootless delegation (``user@.service`` offers ``memory pids``)."""
    layout = layout_for(tmp_path)
    assert layout.v2_delegated == str(tmp_path / OWN)
    assert layout.home("pids") == "v2" and layout.home("memory") == "v2"
    assert layout.unwritable == ()


def test_delegated_cgroup_without_controllers_is_not_used(tmp_path: Path) -> None:
    """Without ``pids``/``memory`` in cgroup.controllers nothing is limited there (systemd's
    Delegate= with no controller list): the undelegated warning and -m error stay."""
    layout = layout_for(tmp_path, controllers="cpu io")
    assert layout.v2_delegated is None and layout.v2 is None
    assert cgroups.no_memory_reason(layout).startswith("a memory limit needs a memory cgroup, and this rootless")


def test_delegated_cgroup_offering_only_memory_limits_memory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the controllers the delegate offers are used (systemd's Delegate=memory); the
    warning names the missing pids controller, not a missing cgroup."""
    monkeypatch.setattr(cgroups, "_warned", [])
    layout = layout_for(tmp_path, controllers="memory")
    assert layout.home("memory") == "v2" and layout.home("pids") is None
    cgroups.warn_if_limited(layout)
    assert "offers no pids controller" in capsys.readouterr().err


def test_unwritable_own_cgroup_is_not_delegated(tmp_path: Path) -> None:
    """systemd makes a delegate's directory, cgroup.procs and cgroup.subtree_control the user's
    (docs/CGROUP_DELEGATION.md); a cgroup still root's is not used."""
    fake_cgroup(tmp_path / OWN)
    usable = cgroups.CgroupLayout(unwritable=(str(tmp_path),))
    refused = cgroups.with_delegation(usable, str(tmp_path), PROC, can_write=lambda p: not p.endswith("cgroup.subtree_control"))
    assert refused == usable


def test_v1_only_and_root_cgroups_are_not_delegated(tmp_path: Path) -> None:
    fake_cgroup(tmp_path)
    assert delegated.find_delegated(str(tmp_path), "4:pids:/user.slice\n3:memory:/user.slice\n") is None
    assert delegated.find_delegated(str(tmp_path), "0::/\n") is None
    assert delegated.find_delegated(str(tmp_path), "0::/../etc\n") is None


def test_pybuild_moves_into_a_leaf_and_enables_only_offered_controllers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"No internal processes" (kernel cgroup-v2.rst): pybuild moves itself to
    ``<own>/pybuild-<pid>/main`` so ``<own>`` and ``<own>/pybuild-<pid>`` can enable
    controllers, as rootlesskit's --evacuate-cgroup2 does."""
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path, controllers="pids cpu")
    cgroups.claim_delegated(layout)
    own, parent = tmp_path / OWN, tmp_path / OWN / f"pybuild-{PID}"
    assert (parent / "main" / "cgroup.procs").read_text().split() == [str(PID)]
    assert (own / "cgroup.subtree_control").read_text() == "+pids"
    assert (parent / "cgroup.subtree_control").read_text() == "+pids"
    full = layout_for(tmp_path / "other")
    monkeypatch.setattr(delegated, "_prepared", {})
    cgroups.claim_delegated(full)
    assert (tmp_path / "other" / OWN / "cgroup.subtree_control").read_text() == "+pids +memory"


def test_step_groups_get_their_limits_under_the_process_subtree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step's group holds pids.max, memory.max and memory.swap.max = 0 as the root path
    writes them (BuildKit's runc executor: one cgroup per container with its limits)."""
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path)
    step = cgroups.StepCgroups(layout, name="s1")
    procs = step.create(64, 1 << 20)
    group = tmp_path / OWN / f"pybuild-{PID}" / "s1"
    assert procs == [str(group / "cgroup.procs")]
    assert (group / "pids.max").read_text() == "64"
    assert (group / "memory.max").read_text() == str(1 << 20)
    assert (group / "memory.swap.max").read_text() == "0"
    assert step.memory_events == str(group / "memory.events")
    step.kill()
    assert (group / "cgroup.kill").read_text() == "1"
    assert step.remove() and not group.exists()


def test_release_gives_the_delegated_cgroup_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the end pybuild leaves no subtree: controllers off, itself back in its own cgroup."""
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path)
    step = cgroups.StepCgroups(layout, name="s1")
    step.create(64, None)
    assert step.remove()
    cgroups.release_delegated(layout)
    own = tmp_path / OWN
    assert not (own / f"pybuild-{PID}").exists()
    assert (own / "cgroup.procs").read_text().split() == [str(PID)]  # moved back
    assert (own / "cgroup.subtree_control").read_text() == "-pids -memory"


def test_processes_sharing_the_delegated_cgroup_move_to_the_leaf_and_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As rootlesskit's --evacuate-cgroup2 (docs/process.md): every process of the group goes to
    the leaf (a helper pybuild started, a shell sharing the unit), so controllers can be enabled."""
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path)
    own = tmp_path / OWN
    (own / "cgroup.procs").write_text(f"{PID}\n4242\n")
    cgroups.claim_delegated(layout)
    assert (own / "cgroup.procs").read_text() == ""
    assert (own / f"pybuild-{PID}" / "main" / "cgroup.procs").read_text().split() == [str(PID), "4242"]
    cgroups.release_delegated(layout)
    assert sorted((own / "cgroup.procs").read_text().split()) == sorted([str(PID), "4242"])
    assert not (own / f"pybuild-{PID}").exists()


def test_release_keeps_a_subtree_a_container_still_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path)
    cgroups.StepCgroups(layout, name="container").create(64, None)
    cgroups.release_delegated(layout)
    assert (tmp_path / OWN / f"pybuild-{PID}" / "container").is_dir()


def test_stale_subtrees_of_dead_pybuilds_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the root path's remove_stale: groups of pids that no longer exist go, live ones and
    busy ones (a detached container) stay."""
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path)
    own = tmp_path / OWN
    for name in ("pybuild-999999999/main", "pybuild-999999999/s1", "pybuild-1/main", "pybuild-999999998/c"):
        fake_cgroup(own / name)
    (own / "pybuild-999999998" / "c" / "cgroup.procs").write_text("4242\n")
    cgroups.remove_stale(layout)
    assert not (own / "pybuild-999999999").exists()
    assert (own / "pybuild-1" / "main").is_dir()  # pid 1 is alive
    assert (own / "pybuild-999999998" / "c").is_dir()


def test_other_processes_in_the_delegated_cgroup_give_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refuses subtree_control (EBUSY) while the group holds processes; the error
    says to run pybuild in a scope of its own, as BuildKit's docs/rootless.md runs it."""
    FakeTree(monkeypatch, tmp_path)
    layout = layout_for(tmp_path)
    real_write = delegated._write

    def write(directory: str, name: str, value: str) -> None:
        if name == "cgroup.subtree_control" and directory == layout.v2_delegated and value.startswith("+"):
            raise OSError(errno.EBUSY, "busy", os.path.join(directory, name))
        real_write(directory, name, value)

    monkeypatch.setattr(delegated, "_write", write)
    with pytest.raises(cgroups.CgroupError, match="scope of its own"):
        cgroups.claim_delegated(layout)
    assert not (tmp_path / OWN / f"pybuild-{PID}").exists()
