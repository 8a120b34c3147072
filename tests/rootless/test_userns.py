"""Entering the user namespace: the id mapping a non-root pybuild gets, the one-id
fallback and its warning, which commands enter, and joining a container's namespace.

The end-to-end flows (build, run, push as the user) are in test_tutorial_rootless.py;
these check ``executors._userns`` and the CLI hook directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.executors import _userns

from .conftest import AsUser, subordinate_range

# Runs as the user: enter, then report what the process became.
_ENTER_AND_REPORT = """
import json, os, sys
from pybuild.executors import enter_userns, rootless
from pybuild.cache import default_root_path
info = enter_userns(warn=lambda line: print("WARNED " + line, file=sys.stderr))
with open("/proc/self/uid_map") as f: uid_map = f.read().split()
with open("/proc/self/gid_map") as f: gid_map = f.read().split()
with open("/proc/self/mountinfo") as f: root_mount = [l for l in f if l.split()[4] == "/"][0]
print(json.dumps({
    "ids": os.getresuid() + os.getresgid(), "groups": os.getgroups(),
    "uid_map": uid_map, "gid_map": gid_map, "root_shared": "shared:" in root_mount,
    "info": [info.uid, info.gid, [list(vars(r).values()) for r in info.subuids], info.one_id],
    "same": rootless() == info, "default_root": str(default_root_path()),
    "marker": os.environ.get("PYBUILD_ROOTLESS"),
}))
"""


def _python_as(user: AsUser, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        user.command(sys.executable, "-c", code, *args), cwd=user.dir, env=user.environment(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_subordinate_ranges_are_read_by_name_or_uid_and_mapped_after_the_caller(tmp_path: Path) -> None:
    """RootlessKit (which BuildKit's rootless mode runs under) maps container id 0 to the
    caller and lays the caller's /etc/subuid ranges, found by user name or uid, one after
    the other from id 1 (rootless-containers/rootlesskit pkg/parent/parent.go newugidmapArgs,
    pkg/parent/idtools/idtools.go parseSubidFile); other users' lines and malformed ones
    are not the caller's."""
    subuid = tmp_path / "subuid"
    subuid.write_text(
        "# comment\nalice:100000:65536\nbob:200000:65536\n1234:300000:10\nalice:oops:5\nalice:400000:0\nalice:500000:100\n"
    )
    ranges = _userns.subordinate_ranges(str(subuid), "alice", 1234)
    assert ranges == (
        _userns.IdRange(1, 100000, 65536),
        _userns.IdRange(65537, 300000, 10),
        _userns.IdRange(65547, 500000, 100),
    )
    assert _userns._map_arguments(1234, ranges) == [
        "0", "1234", "1", "1", "100000", "65536", "65537", "300000", "10", "65547", "500000", "100",
    ]  # fmt: skip
    assert _userns.subordinate_ranges(str(subuid), "carol", 99) == ()
    assert _userns.subordinate_ranges(str(tmp_path / "missing"), "alice", 1234) == ()


def test_a_user_with_subordinate_ranges_becomes_root_with_them_mapped(user: AsUser) -> None:
    """As with RootlessKit's newuidmap/newgidmap from the parent (rootless-containers/rootlesskit
    pkg/parent/parent.go setupUIDGIDMap): the caller is 0 inside, its subordinate range
    follows from 1, the mounts are private, and the default root stays the caller's
    $XDG_DATA_HOME/pybuild, as rootless buildkitd's (moby/buildkit util/appdefaults/
    appdefaults_unix.go UserRoot: $XDG_DATA_HOME/buildkit, read inside RootlessKit's namespace)."""
    result = _python_as(user, _ENTER_AND_REPORT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    account = user.account
    uids = subordinate_range(account.name)
    assert uids is not None, "the test user has a subordinate range (.ci/setup)"
    assert report["ids"] == [0] * 6
    assert report["groups"] == []
    assert report["uid_map"] == ["0", str(account.uid), "1", "1", str(uids.start), str(len(uids))]
    assert report["gid_map"][:3] == ["0", str(account.gid), "1"] and len(report["gid_map"]) == 6
    assert report["info"] == [account.uid, account.gid, [[1, uids.start, len(uids)]], False]
    assert report["same"] is True and report["marker"] == "1"
    assert report["root_shared"] is False
    assert report["default_root"] == str(user.root)
    assert "WARNED" not in result.stderr


def test_without_subordinate_ranges_the_caller_alone_is_mapped_and_told_how_to_add_a_range(nosub_user: AsUser) -> None:
    """Without /etc/subuid ranges only the caller's own id can be mapped (setgroups denied
    first, user_namespaces(7)); BuildKit's rootless docs require the ranges and show how to
    add them (moby/buildkit docs/rootless.md).  pybuild still builds, and says once what
    cannot work and the usermod line."""
    result = _python_as(nosub_user, _ENTER_AND_REPORT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    account = nosub_user.account
    assert report["ids"] == [0] * 6
    assert report["uid_map"] == ["0", str(account.uid), "1"]
    assert report["gid_map"] == ["0", str(account.gid), "1"]
    assert report["info"] == [account.uid, account.gid, [], True]
    warned = [line for line in result.stderr.splitlines() if line.startswith("WARNED")]
    assert len(warned) == 1
    assert "USER other than root" in warned[0] and "_apt" in warned[0]
    assert f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {account.name}" in warned[0]


def test_the_one_id_warning_is_printed_once_per_command(nosub_user: AsUser) -> None:
    """The CLI prints the one-id warning once, on stderr, and the command still works
    (BuildKit's rootless docs: the ranges are needed for other users, moby/buildkit docs/rootless.md)."""
    result = nosub_user.pybuild("images")
    assert result.stderr.count("warning: no subordinate ids") == 1, result.stderr
    assert "REPOSITORY" in result.stdout


def test_a_mapping_newuidmap_refuses_is_one_clear_error(user: AsUser, tmp_path: Path) -> None:
    """newuidmap checks the ranges against /etc/subuid and refuses others; RootlessKit
    reports its output as the failure (rootless-containers/rootlesskit pkg/parent/parent.go
    setupUIDGIDMap).  pybuild: one line naming the tool's complaint, no traceback."""
    fake = user.write("subuid", f"{user.account.name}:1:10\n")
    code = (
        "import sys\nfrom pybuild.executors import _userns\n"
        f"_userns.SUBUID_FILE = {str(fake)!r}\n"
        "from pybuild.cli.main import main\nsys.exit(main(['images']))\n"
    )
    result = _python_as(user, code)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: cannot map the subordinate ids: newuidmap"), result.stderr
    assert not user.root.exists() or not any((user.root / "snapshots").iterdir())


def test_a_container_command_joins_the_running_supervisors_namespace(user: AsUser) -> None:
    """Commands on a running container act inside the namespace that owns it, as
    RootlessKit's `nsenter` into the child's namespaces does for rootless BuildKit and
    Docker (rootless-containers/rootlesskit pkg/parent/parent.go writes child_pid for it):
    the joiner sees the same user namespace and is root there."""
    holder = subprocess.Popen(
        user.command(sys.executable, "-c", (
            "import os, sys\nfrom pybuild.executors import enter_userns\nenter_userns()\n"
            "print(os.readlink('/proc/self/ns/user'), flush=True)\nsys.stdin.read()\n"
        )), cwd=user.dir, env=user.environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        namespace = holder.stdout.readline().strip()
        assert namespace.startswith("user:[")
        assert namespace != os.readlink("/proc/self/ns/user")
        joined = _python_as(user, (
            "import os, sys\nfrom pybuild.executors import join_userns, rootless\n"
            "info = join_userns(int(sys.argv[1]))\n"
            "print(os.readlink('/proc/self/ns/user'), os.geteuid(), info.one_id, rootless() == info)\n"
        ), str(holder.pid))  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.split() == [namespace, "0", "False", "True"]
    finally:
        holder.kill()
        holder.wait()


def test_joining_a_namespace_the_user_does_not_own_is_a_clear_error(user: AsUser) -> None:
    """Only the namespace's owner (or a privileged process) may enter it (setns(2),
    user_namespaces(7)): joining pid 1's (the host's, for a non-root user no capability)
    fails with one line naming the process."""
    result = _python_as(user, (
        "import os, sys\nfrom pybuild.executors import _userns\n"
        "try:\n    _userns.join_userns(1)\nexcept _userns.UsernsError as e:\n    print(e.strerror)\n"
    ))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.match(r"cannot (open|join) the user namespace of process 1: Permission denied", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("argv", "enters"),
    [
        (["parse", "{dockerfile}"], False),
        (["check", "{dockerfile}"], False),
        (["build", "--help"], False),
        (["images", "--root", "{root}"], True),
        (["graph", "--root", "{root}", "-f", "{dockerfile}"], True),
    ],
)
def test_only_commands_that_touch_the_root_enter_the_namespace(
    argv: list[str], enters: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-root pybuild enters its namespace for commands on the root; reading a
    Dockerfile (parse, check) and --help never do, as `buildctl` needs no daemon for
    `--help` and BuildKit's linter runs in the client (moby/buildkit docs/rootless.md runs
    only buildkitd under rootlesskit)."""
    import pybuild.executors as executors
    from pybuild.cli.main import main

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    entered: list[str] = []
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(executors, "enter_userns", lambda: entered.append("enter"))
    monkeypatch.setattr(executors, "join_userns", lambda pid: entered.append("join"))
    args = [a.format(dockerfile=dockerfile, root=tmp_path / "root") for a in argv]
    main(args)
    capsys.readouterr()
    assert entered == (["enter"] if enters else [])


def test_stop_and_rm_reach_containers_started_in_different_namespaces(user: AsUser, user_busybox: str) -> None:
    """Docker's `stop`/`rm -f` take several containers and act on each (docker/cli
    cli/command/container/stop.go: one stop per name, errors collected).  Each rootless
    `pybuild run` owns a namespace of its own, and only there may its processes (running
    as a subordinate uid after USER 1000) be signalled: the command runs once per namespace."""
    for name, extra in (("plain", ()), ("other", ("--user", "1000"))):
        user.pybuild("run", "-d", "--network=none", "--name", name, *extra, user_busybox, "sleep", "300")
    stopped = user.pybuild("stop", "-t", "1", "plain", "other")
    assert sorted(stopped.stdout.split()) == ["other", "plain"]
    assert "Traceback" not in stopped.stderr
    listing = user.pybuild("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    assert sorted(line.split()[0] for line in listing.splitlines() if "Exited" in line) == ["other", "plain"]
    for name in ("again", "again2"):
        extra = ("--user", "1000") if name == "again2" else ()
        user.pybuild("run", "-d", "--network=none", "--name", name, *extra, user_busybox, "sleep", "300")
    removed = user.pybuild("rm", "-f", "again", "again2", "plain", "missing", check=False)
    assert removed.returncode != 0
    assert sorted(removed.stdout.split()) == ["again", "again2", "plain"]
    assert removed.stderr.count("no such container: missing") == 1 and "Traceback" not in removed.stderr
    assert user.pybuild("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["other"]


def test_per_user_files_outside_the_root_keep_the_callers_host_uid(user: AsUser) -> None:
    """Rootless BuildKit keeps per-user state under the caller's own directories
    (moby/buildkit util/appdefaults/appdefaults_unix.go UserAddress: $XDG_RUNTIME_DIR, the
    caller's /run/user/$UID), never root's, though it runs as uid 0 in its namespace.  The
    emulation cache in /tmp is named after the host uid, not 0 (real root's file)."""
    result = _python_as(user, (
        "from pybuild.executors import enter_userns, _binfmt, _userns\n"
        "enter_userns()\nprint(_binfmt._default_cache_file().name, _userns.host_uid())\n"
    ))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"pybuild-emulation-{user.account.uid}.json", str(user.account.uid)]


def test_without_home_the_default_root_is_still_the_callers(user: AsUser) -> None:
    """Inside the namespace uid 0's passwd entry is root's (/root); rootless BuildKit's
    paths come from the caller's environment read before (moby/buildkit
    util/appdefaults/appdefaults_unix.go UserRoot).  With HOME unset pybuild takes the
    caller's home from the real uid before entering, never /root."""
    code = (
        "import argparse, os, sys\n"
        "from pybuild.cli._rootless import run_as_root\n"
        "from pybuild.cache import default_root_path\n"
        "os.environ.pop('HOME', None); os.environ.pop('XDG_DATA_HOME', None)\n"
        "run_as_root('images', argparse.Namespace(), lambda a: print(os.geteuid(), default_root_path()) or 0, lambda c: c())\n"
    )
    result = _python_as(user, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", f"{user.account.home}/.local/share/pybuild"]


def test_the_default_root_is_closed_to_other_users_and_a_named_root_keeps_its_mode(user: AsUser) -> None:
    """containerd makes its root 0o700 and closes one an older release made 0o711
    (containerd cmd/containerd/server/server.go CreateTopLevelDirectories: MkdirAllWithACL
    then Chmod); rootless BuildKit's ~/.local/share/buildkit is the user's alone.  A root
    the user names with --root keeps the mode the user gave it."""
    user.sh(f"mkdir -p {user.root} && chmod 0755 {user.root}")  # as an older pybuild left it
    user.pybuild("images")
    assert user.root.stat().st_mode & 0o777 == 0o700
    fresh = user.data_home / "fresh"
    shutil.rmtree(user.root)
    user.pybuild("images")
    assert user.root.stat().st_mode & 0o777 == 0o700
    user.sh(f"mkdir -p {fresh} && chmod 0750 {fresh}")
    user.pybuild("images", "--root", str(fresh))
    assert fresh.stat().st_mode & 0o777 == 0o750 and (fresh / "snapshots").is_dir()


def test_entering_after_a_thread_started_says_so(user: AsUser) -> None:
    """unshare(CLONE_NEWUSER) refuses a multi-threaded caller with EINVAL (unshare(2));
    RootlessKit re-executes itself so the Go runtime's threads never exist first
    (rootless-containers/rootlesskit pkg/parent/parent.go: exec of /proc/self/exe with
    CLONE_NEWUSER).  A caller that entered too late is told why, not "Invalid argument"."""
    result = _python_as(user, (
        "import threading\nfrom pybuild.executors import _userns\n"
        "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "try:\n    _userns.enter_userns()\nexcept _userns.UsernsError as e:\n    print(e.strerror)\n"
    ))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cannot create a user namespace: the process already runs threads (enter before starting any)"


def test_the_sandbox_outside_any_namespace_points_at_the_rootless_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A non-root caller that did not enter (the library used directly) is told how to get a
    namespace, not that rootless builds are unsupported (BuildKit's rootless mode runs under
    RootlessKit, moby/buildkit docs/rootless.md; runc refuses a rootless spec without one)."""
    import trio

    from pybuild.errors import SandboxError
    from pybuild.executors import NamespaceRootfsCaller, ProcessSpec, Rootfs
    from pybuild.executors._executor import validate

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    rootfs = Rootfs(lowers=(), upper=str(tmp_path), work=str(tmp_path))
    with pytest.raises(SandboxError) as raised:
        validate(rootfs, ProcessSpec(args=("true",)), ())
    assert "user namespace" in str(raised.value) and raised.value.hint == _userns.ROOTLESS_HINT
    with pytest.raises(SandboxError) as raised:
        trio.run(NamespaceRootfsCaller(state_dir=str(tmp_path)).call, rootfs, (), print)
    assert "user namespace" in str(raised.value) and raised.value.hint == _userns.ROOTLESS_HINT
