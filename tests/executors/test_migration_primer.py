"""The cgroup migration primer: a move of pybuild into its own cgroup, started as a step starts."""

from __future__ import annotations

import os
from pathlib import Path

from pybuild.executors._cgroups import CgroupLayout
from pybuild.executors._executor import _MigrationPrimer, own_cgroup_procs

HYBRID = CgroupLayout(v1={"pids": "/sys/fs/cgroup/pids", "devices": "/sys/fs/cgroup/devices"}, v2="/sys/fs/cgroup/unified")
PROC_CGROUP = "9:name=systemd:/\n8:pids:/user.slice\n5:devices:/\n4:memory:/other\n0::/user.slice/session-1.scope\n"


def test_own_cgroup_prefers_the_v2_hierarchy() -> None:
    assert own_cgroup_procs(HYBRID, PROC_CGROUP) == "/sys/fs/cgroup/unified/user.slice/session-1.scope/cgroup.procs"


def test_own_cgroup_in_a_v1_hierarchy_pybuild_uses() -> None:
    v1_only = CgroupLayout(v1={"devices": "/sys/fs/cgroup/devices"})
    assert own_cgroup_procs(v1_only, PROC_CGROUP) == "/sys/fs/cgroup/devices/cgroup.procs"


def test_no_cgroup_when_none_is_mounted_or_the_path_is_odd() -> None:
    assert own_cgroup_procs(CgroupLayout(), PROC_CGROUP) is None
    assert own_cgroup_procs(HYBRID, "") is None
    assert own_cgroup_procs(CgroupLayout(v2="/sys/fs/cgroup"), "0::/../escape\n") is None


def test_the_primer_writes_its_own_pid_and_nothing_else(tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    thread = _MigrationPrimer(str(procs)).start()
    assert thread is not None
    thread.join()
    assert procs.read_text() == str(os.getpid())


def test_a_refused_write_stops_priming_for_good(tmp_path: Path) -> None:
    primer = _MigrationPrimer(str(tmp_path / "missing" / "cgroup.procs"))
    thread = primer.start()
    assert thread is not None
    thread.join()
    assert primer.procs is None
    assert primer.start() is None


def test_no_primer_without_a_cgroup() -> None:
    assert _MigrationPrimer(None).start() is None
