"""The RUN sandbox inside a user namespace, as a rootless pybuild runs it.

The steps run in ``rootless_runner.py``: root on the host maps 0-65535 of a
new user namespace to the host's 100000-165535 (what newuidmap does from
/etc/subuid) and the runner becomes root there, as ``enter_userns`` leaves
a non-root pybuild.  The host's root files are nobody's inside, cgroups
are not writable, and proc, sysfs and device nodes follow the kernel's
rules for a user namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.executors._cgroups import CgroupLayout, usable_layout
from pybuild.executors._sandbox import slirp_failure

pytestmark = pytest.mark.root

HOST_ID = 100000
RUNNER = Path(__file__).with_name("rootless_runner.py")
SUBORDINATE = [[0, HOST_ID, 65536]]
ONE_ID = [[0, HOST_ID, 1]]


def _runs_as(uid: int, python: str) -> bool:
    """Whether host user ``uid`` can start ``python`` (the zygote runs it with stdlib only)."""
    try:
        done = subprocess.run([python, "-I", "-S", "-c", "import ctypes, select, socket"], user=uid, group=uid, extra_groups=[], capture_output=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def zygote_python() -> str:
    """An interpreter the namespace's root (host uid 100000) may run: ours, else the system's."""
    if os.geteuid() != 0:
        pytest.skip("needs root (it maps a user namespace's ids to subordinate ones)")
    for candidate in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(candidate) and _runs_as(HOST_ID, candidate):
            return candidate
    pytest.skip(f"no Python interpreter that uid {HOST_ID} may run ({sys.executable} is under a directory closed to it)")


@pytest.fixture(scope="module")
def rootless_base(zygote_python: str, busybox_rootfs: Path) -> Iterator[Path]:
    """A directory uid 100000 may use: the busybox rootfs owned by the namespace's root, steps, state."""
    base = Path(tempfile.mkdtemp(prefix="pybuild-rootless-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        subprocess.run(["cp", "-a", str(busybox_rootfs), str(base / "rootfs")], check=True)
        (base / "state").mkdir()
        subprocess.run(["chown", "-R", "-h", f"{HOST_ID}:{HOST_ID}", str(base / "rootfs"), str(base / "state")], check=True)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_rootless(base: Path, python: str, steps: list[dict], mapping: list[list[int]] = SUBORDINATE) -> tuple[list[dict], str]:
    """Run ``steps`` in a fresh user namespace; (per-step results, the runner's stderr)."""
    steps_dir = base / "steps"
    shutil.rmtree(steps_dir, ignore_errors=True)
    steps_dir.mkdir()
    os.chown(steps_dir, HOST_ID, HOST_ID)
    config = {"base": str(base), "python": python, "map": mapping, "steps": steps}
    done = subprocess.run([sys.executable, str(RUNNER), json.dumps(config)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.fixture
def rootless(rootless_base: Path, zygote_python: str):
    def run(steps: list[dict], mapping: list[list[int]] = SUBORDINATE) -> tuple[list[dict], str]:
        return run_rootless(rootless_base, zygote_python, steps, mapping)

    return run


def ok(result: dict) -> str:
    assert "error" not in result, result["error"]
    assert result["exit"] == 0, result["stderr"]
    return result["stdout"]


# -- the kernel's rules in a user namespace --------------------------------------


def test_a_rootless_step_gets_proc_sys_and_the_hosts_device_nodes(rootless) -> None:
    """proc and sysfs are made before the host's tree is detached: the kernel lets a user
    namespace's root mount them only where one is still fully visible, which is why runc
    mounts the rootfs' /proc before pivot_root (libcontainer/rootfs_linux.go).  /dev's nodes
    are the host's, bound in (runc rootless binds devices instead of mknod), and show as
    nobody's, their owner being unmapped."""
    (result,), _ = rootless([{"script": "cat /proc/self/uid_map; ls /sys; stat -c '%u %t:%T %F' /dev/null; echo hi > /dev/null; id -u"}])
    out = ok(result)
    assert out.split()[:3] == ["0", str(HOST_ID), "65536"]
    assert "kernel" in out.split()
    assert "65534 1:3 character special file" in out
    assert out.split()[-1] == "0"


def test_rootless_steps_run_without_cgroups_and_say_so_once(rootless) -> None:
    """Without a cgroup the user may write, steps run without pids or memory limits and pybuild
    warns once, as BuildKit's rootless mode removes the spec's cgroups and resources
    (util/rootless/specconv/specconv_linux.go, ToRootless) -- instead of failing each step."""
    results, stderr = rootless([{"script": "echo one"}, {"script": "echo two"}])
    assert [ok(r) for r in results] == ["one\n", "two\n"]
    assert stderr.count("warning: rootless: no cgroup") == 1, stderr


def test_a_rootless_memory_limit_is_a_clear_error(rootless) -> None:
    """A memory limit without a memory cgroup is refused with the reason, never ignored: where
    Docker discards it with a warning (daemon/daemon_unix.go, verifyPlatformContainerResources)
    and BuildKit's ToRootless drops the resources, the issue asks for a clear failure."""
    (result,), _ = rootless([{"script": "echo ran", "memory_limit": 64 << 20}])
    assert "rootless" in result.get("error", ""), result
    assert "memory" in result["error"]


def test_a_rootless_steps_orphan_is_gone_when_the_step_ends(rootless) -> None:
    """A background process outlives neither the step nor its pid namespace, cgroups or not:
    its init is pid 1 there, and the kernel kills the namespace with it (BuildKit's runc
    runs each step in its own pid namespace, executor/oci/spec.go)."""
    marker = f"pybuild-orphan-{uuid.uuid4().hex[:8]}"
    (result,), _ = rootless([{"script": f"(exec -a {marker} sleep 1000 &) ; (setsid sh -c 'exec -a {marker} sleep 1000' &) ; echo started"}])
    assert ok(result) == "started\n"
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout == "", f"processes left: {left.stdout}"


@pytest.mark.parametrize(
    "script",
    [
        "echo x > /proc/sys/kernel/hostname",
        "mknod /tmp/disk b 8 0",
        "mknod /tmp/mem c 1 1",
        "mount --bind /etc /mnt",
        "mount -t tmpfs none /mnt",
    ],
)
def test_privileged_operations_fail_in_a_rootless_step(rootless, script: str) -> None:
    """/proc/sys stays read-only, real device nodes and mounts are refused, as in a
    rootless BuildKit (runc in a user namespace, Docker's capabilities and seccomp)."""
    (result,), _ = rootless([{"script": script}])
    assert "error" not in result, result["error"]
    assert result["exit"] != 0, result


def test_rootless_insecure_has_every_capability_of_the_namespace_but_not_the_hosts(rootless) -> None:
    """RUN --security=insecure rootless: no seccomp filter and every capability -- within the
    user namespace only (BuildKit's rootless docs: insecure mode is privileged inside the
    user namespace), so /proc/sys and real devices stay out of reach."""
    (result,), _ = rootless([{"script": "grep -E '^(CapEff|Seccomp):' /proc/self/status; echo x > /proc/sys/kernel/hostname || echo denied", "security": "insecure"}])
    out = ok(result)
    fields = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert fields["Seccomp"] == "0"
    assert int(fields["CapEff"], 16) & (1 << 21)  # CAP_SYS_ADMIN
    assert out.splitlines()[-1] == "denied"


def test_a_rootless_step_on_the_host_network_sees_a_read_only_sys(rootless) -> None:
    """--network=host keeps the host's network namespace, which is not the user namespace's,
    so sysfs cannot be mounted; the host's /sys is bound read-only, recursively (BuildKit
    drops /sys for that reason, util/rootless/specconv/specconv_linux.go; mount_setattr makes
    the whole tree read-only, which its comment says a bind could not)."""
    (result,), _ = rootless([{"script": "ls /sys/kernel >/dev/null && echo listed; touch /sys/fs/cgroup/x || echo refused", "network": "host"}])
    assert ok(result).split() == ["listed", "refused"]


def test_another_host_users_private_file_stays_unreadable_from_a_rootless_step(rootless, rootless_base: Path) -> None:
    """A 0600 file of another host user, bound into the step (RUN --mount=type=bind), cannot be
    read: the namespace's root has no capability over files whose owner it does not map, so a
    step can read no more than the user who ran pybuild (BuildKit rootless docs: the daemon's
    privileges are the user's)."""
    private = rootless_base / "private"
    private.mkdir(exist_ok=True)
    os.chmod(private, 0o755)
    secret = private / "secret"
    secret.write_text("top secret\n")
    os.chown(secret, 4242, 4242)
    os.chmod(secret, 0o600)
    (result,), _ = rootless([{"script": "cat /mnt/secret; echo status=$?", "binds": [[str(private), "/mnt"]]}])
    out = ok(result)
    assert "top secret" not in out and "status=1" in out, out
    assert "Permission denied" in result["stderr"]


def test_user_1000_in_a_rootless_step(rootless) -> None:
    """USER 1000:1000 runs as 1000 with subordinate ids mapped, as `id` shows in BuildKit."""
    (result,), _ = rootless([{"script": "id -u; id -g", "user": "1000:1000"}])
    assert ok(result).split() == ["1000", "1000"]


def test_a_one_id_mapping_still_runs_root_steps(rootless) -> None:
    """With no subordinate range only 0 is mapped and setgroups is denied (the kernel's rule
    for an unprivileged map, user_namespaces(7)): the step keeps the caller's groups instead
    of calling setgroups, and devpts is mounted without gid=5 (the tty group has no host id),
    as runc rootless does both (libcontainer/init_linux.go skips setgroups when denied;
    libcontainer/specconv/example.go ToRootless drops an unmapped gid= option)."""
    (result,), _ = rootless([{"script": "cat /proc/self/gid_map; ls /dev/pts; echo ok > /x; cat /x"}], mapping=ONE_ID)
    out = ok(result).split()
    assert out[:3] == ["0", str(HOST_ID), "1"]
    assert out[-1] == "ok"


@pytest.mark.parametrize("user", ["1000:1000", "nobody"])
def test_a_one_id_mapping_refuses_another_user_clearly(rootless, user: str) -> None:
    """USER 1000 without subordinate ids: a message naming the ids and how to add a range,
    not the kernel's EINVAL (Podman's rootless docs give the same usermod advice)."""
    (result,), _ = rootless([{"script": "id", "user": user}], mapping=ONE_ID)
    error = result.get("error", "")
    assert "not mapped in this rootless pybuild's user namespace" in error, result
    assert "uid" in error


def test_an_unmapped_supplementary_group_is_named(rootless) -> None:
    """A group of the user's beyond the subordinate range is named too (setgroups' EINVAL):
    the image's app (1000:1000) is also in extra (2000), which a 1001-id range leaves out."""
    (result,), _ = rootless([{"script": "id -u", "user": "1000:1000"}, ], mapping=[[0, HOST_ID, 1001]])
    assert ok(result).strip() == "1000"
    (result,), _ = rootless([{"script": "id", "user": "app"}], mapping=[[0, HOST_ID, 1001]])
    assert "supplementary gid 2000 not mapped" in result.get("error", ""), result


def test_a_rootless_run_device_binds_the_hosts_node(rootless) -> None:
    """RUN --device rootless: mknod of a device is refused in a user namespace, so the CDI
    node's hostPath is bound in, as runc rootless binds devices (libcontainer/rootfs_linux.go
    createDevices: bind when running in a user namespace)."""
    node = {"path": "/dev/mynull", "kind": "c", "major": 1, "minor": 3, "host_path": "/dev/null"}
    (result,), _ = rootless([{"script": "echo x > /dev/mynull && stat -c '%t:%T' /dev/mynull", "devices": [node]}])
    assert ok(result).strip() == "1:3"


def test_a_rootless_device_whose_host_node_differs_is_refused(rootless) -> None:
    """The host's node must be the device the spec names; another is a clear setup error."""
    node = {"path": "/dev/mynull", "kind": "c", "major": 1, "minor": 3, "host_path": "/dev/zero"}
    (result,), _ = rootless([{"script": "true", "devices": [node]}])
    assert "/dev/zero on the host is not the c 1:3 device" in result.get("error", ""), result


@pytest.mark.skipif(
    not os.path.exists("/dev/net/tun") or stat.S_IMODE(os.stat("/dev/net/tun").st_mode) & 0o006 != 0o006,
    reason="/dev/net/tun is not open to every user here (slirp4netns needs it rootless)",
)
def test_the_default_network_works_rootless(rootless) -> None:
    """slirp4netns joins the step's network namespace from inside the user namespace, as
    rootlesskit and BuildKit's rootless mode use it."""
    (result,), _ = rootless([{"script": "ip -4 addr show tap0 | grep -c inet", "network": "default"}])
    assert ok(result).strip() == "1"


# -- units ---------------------------------------------------------------------------


def test_only_writable_cgroup_hierarchies_are_used_rootless() -> None:
    """BuildKit rootless uses no cgroup it cannot write (ToRootless removes the cgroups path)."""
    layout = CgroupLayout(v1={"pids": "/c/pids", "memory": "/c/memory", "devices": "/c/devices"}, v2="/c/unified", v2_controllers=frozenset())
    usable = usable_layout(layout, lambda root: root == "/c/pids")
    assert usable.home("pids") == "v1" and usable.home("memory") is None and usable.home("devices") is None
    assert usable.v2 is None
    assert set(usable.unwritable) == {"/c/memory", "/c/devices", "/c/unified"}


def test_slirp4netns_failure_names_the_error_not_its_seccomp_warning() -> None:
    """slirp4netns warns about its seccomp filter before and after the real error; the error is shown."""
    output = 'open("/dev/net/tun"): Permission denied\nWARNING: Support for seccomp is experimental\nchild failed(1)\nWARNING: Support for seccomp is experimental\n'
    assert slirp_failure(output) == 'open("/dev/net/tun"): Permission denied'
    assert slirp_failure("WARNING: only this\n") == "WARNING: only this"
