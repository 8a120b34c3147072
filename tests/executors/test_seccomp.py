"""Docker's syscall filter, no_new_privs and the insecure mode in the real sandbox (root)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from pybuild.errors import SandboxError, UsageError
from pybuild.executors import BindMount
from pybuild.executors._caps import DOCKER_DEFAULT_MASK
from pybuild.executors._executor import own_bounding_set
from pybuild.executors._seccomp import check_profile, compile_filter, load_seccomp_profile

from .._peers import require_tool
from .test_sandbox import sh

pytestmark = pytest.mark.root

# A static probe: each argument names a call it makes, and it prints "NAME: ok" or "NAME: errno N".
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long result) {
    if (result < 0) printf("%s: errno %d\n", name, errno); else printf("%s: ok\n", name);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *what = argv[i];
        if (!strcmp(what, "keyctl")) report(what, syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
        else if (!strcmp(what, "add_key")) report(what, syscall(SYS_add_key, "user", "pybuild", "x", 1, -3));
        else if (!strcmp(what, "mount")) report(what, mount("tmpfs", "/tmp", "tmpfs", 0, NULL));
        else if (!strcmp(what, "unshare")) report(what, unshare(CLONE_NEWNS));
        else if (!strcmp(what, "clone_newns")) {
            long pid = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
            if (pid == 0) _exit(0);
            if (pid > 0) waitpid(pid, NULL, 0);
            report(what, pid);
        }
        else if (!strcmp(what, "userfaultfd")) report(what, syscall(SYS_userfaultfd, 0));
        else if (!strcmp(what, "bpf")) report(what, syscall(SYS_bpf, 0, 0, 0));
        else if (!strcmp(what, "mkdir")) report(what, mkdir("/probe-dir", 0755));
        else if (!strcmp(what, "ptrace")) {
            /* its own child: the one process every ptrace rule but the filter lets it attach to */
            pid_t child = fork();
            if (child == 0) { pause(); _exit(0); }
            report(what, ptrace(PTRACE_ATTACH, child, 0, 0));
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
        }
        else { printf("%s: unknown probe\n", what); return 2; }
    }
    return 0;
}
"""

REFUSED = ("keyctl", "add_key", "mount", "unshare", "clone_newns", "bpf", "ptrace")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require_tool("gcc")
    directory = tmp_path_factory.mktemp("probe")
    (directory / "probe.c").write_text(PROBE_C)
    subprocess.run([gcc, "-static", "-O1", "-o", str(directory / "probe"), str(directory / "probe.c")], check=True)
    return directory / "probe"


def results(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def status_field(out: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(name + ":"))


async def run_probe(executor, make_rootfs, probe: Path, calls, **fields):
    mounts = (BindMount(str(probe), "/probe"),)
    return await sh(executor, make_rootfs(), "/probe " + " ".join(calls) + "; grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status", mounts, **fields)


async def test_a_step_runs_under_dockers_syscall_filter(executor, make_rootfs, probe) -> None:
    result, out, err = await run_probe(executor, make_rootfs, probe, REFUSED + ("mkdir",))
    assert result.exit_code == 0, err
    seen = results(out)
    assert {call: seen[call] for call in REFUSED} == {call: f"errno {errno.EPERM}" for call in REFUSED}
    assert seen["mkdir"] == "ok"  # ordinary calls still work
    assert status_field(out, "Seccomp") == "2"
    assert status_field(out, "NoNewPrivs") == "0"  # as Docker: setuid binaries keep working


async def test_busybox_unshare_is_refused(executor, make_rootfs) -> None:
    result, out, err = await sh(executor, make_rootfs(), "unshare -U true; echo status=$?")
    assert "status=0" not in out
    assert "Operation not permitted" in err


async def test_the_hosts_toolchain_runs_under_the_filter(executor, make_rootfs) -> None:
    """gcc, threads (glibc tries clone3, gets ENOSYS and falls back to clone), Python and apt."""
    program = r'#include <pthread.h>\n#include <stdio.h>\nvoid *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0); puts("threaded"); return 0; }\n'
    script = (
        "ln -s usr/lib /lib && ln -s usr/lib64 /lib64 && export PATH=/usr/bin:/bin && "
        f"printf '{program}' > /tmp/t.c && gcc -pthread -o /tmp/t /tmp/t.c && /tmp/t && "
        "python3 -c 'import subprocess, threading; t = threading.Thread(target=print, args=(\"python\",)); t.start(); t.join(); subprocess.run([\"true\"], check=True)' && "
        "apt-get --version >/dev/null && echo apt && grep Seccomp: /proc/self/status"
    )
    result, out, err = await sh(executor, make_rootfs(), script, mounts=(BindMount("/usr", "/usr"),))
    assert result.exit_code == 0, err
    assert out.split() == ["threaded", "python", "apt", "Seccomp:", "2"]


async def test_insecure_step_has_every_capability_and_no_filter(executor, make_rootfs, probe) -> None:
    result, out, err = await run_probe(executor, make_rootfs, probe, ["mount", "ptrace", "keyctl"], security="insecure")
    assert result.exit_code == 0, err
    everything = own_bounding_set()  # every capability pybuild itself may hold
    assert everything & ~DOCKER_DEFAULT_MASK
    assert status_field(out, "Seccomp") == "0"
    assert int(status_field(out, "CapEff"), 16) == everything
    assert int(status_field(out, "CapBnd"), 16) == everything
    seen = results(out)
    assert (seen["mount"], seen["ptrace"], seen["keyctl"]) == ("ok", "ok", "ok")


async def test_masked_paths_are_left_open_in_insecure_mode(executor, make_rootfs) -> None:
    _, sandboxed, _ = await sh(executor, make_rootfs(), "grep -c . /proc/timer_list || true")
    _, insecure, _ = await sh(executor, make_rootfs(), "grep -c . /proc/timer_list || true", security="insecure")
    assert sandboxed.strip() == "0" and int(insecure.strip()) > 0


async def test_insecure_mode_has_the_hosts_extra_devices_and_may_open_any_node(executor, make_rootfs) -> None:
    # Both modes may mknod (Docker's "c *:* m"); only insecure mode may open any node.
    # Major 0 has no driver: opening it is ENXIO once the device cgroup lets it through.
    script = "ls /dev/fuse /dev/net/tun /dev/loop-control 2>/dev/null | wc -l; mknod /tmp/n c 0 5 && echo made; head -c1 /tmp/n"
    _, sandboxed, sandboxed_err = await sh(executor, make_rootfs(), script)
    _, insecure, err = await sh(executor, make_rootfs(), script, security="insecure")
    present = sum(os.path.exists(p) for p in ("/dev/fuse", "/dev/net/tun", "/dev/loop-control"))
    assert sandboxed.split() == ["0", "made"] and "Operation not permitted" in sandboxed_err
    assert insecure.split() == [str(present), "made"], err
    assert "Operation not permitted" not in err


async def test_unconfined_runs_without_a_filter(executor, make_rootfs, probe) -> None:
    result, out, err = await run_probe(executor, make_rootfs, probe, ["keyctl"], seccomp="unconfined")
    assert result.exit_code == 0, err
    assert status_field(out, "Seccomp") == "0"
    assert int(status_field(out, "CapEff"), 16) == DOCKER_DEFAULT_MASK  # unconfined is not privileged
    assert results(out)["keyctl"] == "ok"


async def test_a_custom_profile_is_applied(executor, make_rootfs, probe) -> None:
    profile = json.dumps(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]}
    )
    result, out, err = await run_probe(executor, make_rootfs, probe, ["mkdir", "keyctl"], seccomp=profile)
    assert result.exit_code == 0, err
    seen = results(out)
    assert (seen["mkdir"], seen["keyctl"]) == (f"errno {errno.EACCES}", "ok")
    assert status_field(out, "Seccomp") == "2"


async def test_no_new_privileges_sets_the_bit_and_still_filters(executor, make_rootfs, probe) -> None:
    result, out, err = await run_probe(executor, make_rootfs, probe, ["mount"], no_new_privileges=True)
    assert result.exit_code == 0, err
    assert status_field(out, "NoNewPrivs") == "1"
    assert status_field(out, "Seccomp") == "2"
    assert results(out)["mount"] == f"errno {errno.EPERM}"


async def test_a_non_root_user_is_filtered_too(executor, make_rootfs, probe) -> None:
    result, out, err = await run_probe(executor, make_rootfs, probe, ["keyctl"], user="65534:65534")
    assert result.exit_code == 0, err
    assert status_field(out, "Seccomp") == "2"
    assert results(out)["keyctl"] == f"errno {errno.EPERM}"


async def test_a_profile_that_refuses_everything_fails_the_step(executor, make_rootfs) -> None:
    profile = json.dumps({"defaultAction": "SCMP_ACT_ERRNO"})
    try:
        result, _, _ = await sh(executor, make_rootfs(), "true", seccomp=profile)
    except SandboxError:
        return
    assert result.exit_code != 0


# -- the profile format, without a sandbox ---------------------------------------------------------


def test_dockers_own_profile_format_loads(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": ["read", "write", "exit_group", "no_such_call_anywhere"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
             "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["reboot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_BOOT"]}},
        ],
    }
    path = tmp_path / "docker.json"
    path.write_text(json.dumps(profile))
    assert json.loads(load_seccomp_profile(str(path))) == profile
    assert len(compile_filter(load_seccomp_profile(str(path)), DOCKER_DEFAULT_MASK) or b"") % 8 == 0


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not JSON"),
        ('{"defaultAction": "SCMP_ACT_MAYBE"}', "unknown action"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}', "names"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}', "index"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_FLY"]}}]}', "capability"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}', "NOTIFY"),
        ("[]", "not a JSON object"),
    ],
)
def test_a_malformed_profile_is_a_usage_error_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=problem) as caught:
        load_seccomp_profile(str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_profile_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing.json"):
        load_seccomp_profile(str(tmp_path / "missing.json"))


def test_the_default_profile_is_compiled_once() -> None:
    assert compile_filter("default", DOCKER_DEFAULT_MASK) is compile_filter("default", DOCKER_DEFAULT_MASK)
    assert compile_filter("unconfined", DOCKER_DEFAULT_MASK) is None
    check_profile('{"defaultAction": "SCMP_ACT_ALLOW"}', "inline")
