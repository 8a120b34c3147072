"""Which cgroup hierarchy serves what, from mountinfo."""

from __future__ import annotations

from pybuild.executors._cgroups import parse_layout

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_hybrid_uses_v1_controllers_and_v2_for_kill() -> None:
    layout = parse_layout(HYBRID, read_controllers=lambda root: "")
    assert layout.v1 == {"memory": "/sys/fs/cgroup/memory", "devices": "/sys/fs/cgroup/devices", "pids": "/sys/fs/cgroup/pids"}
    assert layout.v2 == "/sys/fs/cgroup/unified"
    assert (layout.home("pids"), layout.home("memory"), layout.home("devices")) == ("v1", "v1", "v1")
    assert layout.describe() == "pids: v1, memory: v1, devices: v1, kill: v2 cgroup.kill"


def test_pure_v2_uses_v2_controllers_and_has_no_device_rules() -> None:
    layout = parse_layout(PURE_V2, read_controllers=lambda root: "cpuset cpu io memory pids")
    assert layout.v1 == {} and layout.v2 == "/sys/fs/cgroup"
    assert (layout.home("pids"), layout.home("memory"), layout.home("devices")) == ("v2", "v2", None)


def test_a_controller_bound_to_v1_is_not_taken_from_v2() -> None:
    layout = parse_layout(HYBRID, read_controllers=lambda root: "memory pids")
    assert layout.v2_controllers == frozenset()


def test_oom_kills_are_read_from_v2_and_v1_files() -> None:
    from pybuild.executors._cgroups import parse_oom_kills

    v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n"
    v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert (parse_oom_kills(v2), parse_oom_kills(v1), parse_oom_kills("oom_kill_disable 0\n")) == (1, 3, 0)
