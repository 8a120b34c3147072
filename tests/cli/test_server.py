"""The fork server (cli/server): a served build is the build an in-process one is.

Each test has a root of its own; the ``served`` fixture stops every server of that
root at the end (its pid file and the processes naming the root), so none outlives
a test.  That a build was served is read from the server's log (one line per child),
never guessed from timing.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.cli.server import _wire

pytestmark = pytest.mark.usefixtures("require_root")

PYBUILD = [sys.executable, "-m", "pybuild"]
READY_WAIT = 60.0  # seconds for a server to import everything and listen (a busy machine)


class Served:
    """A root, the environment of builds that may use its server, and ways to look at it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "root"
        self.root.mkdir(mode=0o700)
        self.directory = self.root / _wire.DIRECTORY_NAME
        self.env = {**os.environ, "PYBUILD_ROOT": str(self.root), "PYBUILD_SERVER": "on", "PYBUILD_FASTPATH": "0", "SOURCE_DATE_EPOCH": "0"}
        self.env.pop("PYBUILD_SERVER_DEBUG", None)
        self.started: list[subprocess.Popen[bytes]] = []

    def pybuild(self, *args: str, cwd: Path | None = None, input: bytes | None = None, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*PYBUILD, *args], cwd=cwd, input=input, env={**self.env, **env}, capture_output=True, timeout=timeout)

    def server_pid(self) -> int | None:
        try:
            pid = int((self.directory / _wire.PID_NAME).read_text())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def log(self) -> str:
        try:
            return (self.directory / _wire.LOG_NAME).read_text()
        except OSError:
            return ""

    def children_served(self) -> int:
        return len(re.findall(r": child \d+", self.log()))

    def start(self, *extra: str) -> int:
        """A server started as a build starts one (in the background); its pid once it listens."""
        process = subprocess.Popen(
            [*PYBUILD, "server", "--root", str(self.root), "--background", *extra],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.started.append(process)
        return self.wait_listening()

    def wait_listening(self) -> int:
        deadline = time.monotonic() + READY_WAIT
        while time.monotonic() < deadline:
            pid = self.server_pid()
            if pid is not None and (self.directory / _wire.SOCKET_NAME).exists() and "listening" in self.log():
                return pid
            time.sleep(0.05)
        raise AssertionError(f"no server listened within {READY_WAIT} s; log:\n{self.log()}")

    def stop(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.started:
            process.wait(timeout=30)

    def processes(self) -> list[int]:
        """Every live process whose command line names this root (servers, their children)."""
        found = []
        needle = str(self.root).encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if needle in cmdline and b"server" in cmdline:
                    found.append(int(entry))
        pid = self.server_pid()
        return found + ([pid] if pid is not None and pid not in found else [])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition, seconds: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    state = Served(tmp_path)
    try:
        yield state
    finally:
        state.stop()
        assert wait_until(lambda: not state.processes(), 30), "a server of the test's root outlived it"


def small_context(where: Path, dockerfile: str = "FROM scratch\nCOPY a /a\n") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "Dockerfile").write_text(dockerfile)
    (where / "a").write_text("a\n")
    return where


# -- a served build is an in-process build ------------------------------------------


def test_a_build_starts_a_server_and_the_next_is_served_with_the_same_result(served: Served) -> None:
    context = small_context(served.tmp / "context")
    first = served.pybuild("build", "-q", "--no-cache", str(context))
    assert first.returncode == 0, first.stderr
    pid = served.wait_listening()  # the in-process build started it
    assert served.children_served() == 0
    second = served.pybuild("build", "-q", "--no-cache", str(context))
    assert served.children_served() == 1  # the server forked a child for it
    assert (second.returncode, second.stdout, second.stderr) == (0, first.stdout, first.stderr)
    assert first.stdout.startswith(b"sha256:")
    off = served.pybuild("build", "-q", "--no-cache", str(context), PYBUILD_SERVER="off")
    assert (off.returncode, off.stdout, off.stderr) == (0, first.stdout, first.stderr)
    assert served.children_served() == 1  # PYBUILD_SERVER=off builds in-process
    assert served.server_pid() == pid


def test_plain_progress_text_is_the_same_served(served: Served) -> None:
    context = small_context(served.tmp / "context")
    args = ("build", "--progress=plain", "--no-cache", "-t", "same:1", str(context))
    in_process = served.pybuild(*args, PYBUILD_SERVER="off")
    served.start()
    again = served.pybuild(*args)
    assert served.children_served() == 1
    assert again.returncode == in_process.returncode == 0
    assert b"naming to docker.io/library/same:1" in again.stderr
    assert timeless(again.stderr) == timeless(in_process.stderr)
    assert again.stdout == in_process.stdout


def timeless(progress: bytes) -> bytes:
    return re.sub(rb"DONE \d+\.\d+s", b"DONE", progress)


def test_a_failing_build_keeps_its_exit_code_and_one_line_error(served: Served) -> None:
    context = small_context(served.tmp / "context", "FROM scratch\nFORM scratch\n")
    in_process = served.pybuild("build", "-q", str(context), PYBUILD_SERVER="off")
    served.start()
    done = served.pybuild("build", "-q", str(context))
    assert served.children_served() == 1
    assert done.returncode == in_process.returncode != 0
    assert done.stderr == in_process.stderr
    assert b"did you mean FROM?" in done.stderr and b"Traceback" not in done.stderr
    assert done.stderr.startswith(b"error: ") and done.stderr.count(b"error:") == 1  # one error, with its line and hint


def test_dockerfile_from_stdin_relative_paths_build_args_and_umask(served: Served) -> None:
    served.start()
    work = served.tmp / "work"
    small_context(work / "ctx")
    (work / "out").mkdir()
    dockerfile = b"FROM scratch\nARG FLAVOUR\nCOPY a /a-${FLAVOUR}\n"
    done = subprocess.run(
        ["sh", "-c", 'umask 077; exec "$@"', "sh", *PYBUILD, "build", "-q", "-f", "-", "--build-arg", "FLAVOUR", "--iidfile", "out/iid", "ctx"],
        cwd=work, input=dockerfile, env={**served.env, "FLAVOUR": "mint"}, capture_output=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert served.children_served() == 1
    iid = work / "out" / "iid"
    assert iid.read_text() == done.stdout.decode().strip()  # --iidfile relative to the client's directory
    assert iid.stat().st_mode & 0o777 == 0o600  # written under the client's umask
    listed = served.pybuild("build", "-q", "-f", "-", "--build-arg", "FLAVOUR", "ctx", cwd=work, input=dockerfile, FLAVOUR="mint", PYBUILD_SERVER="off")
    assert listed.stdout == done.stdout  # the same image: the argument came from the client's environment
    other = served.pybuild("build", "-q", "-f", "-", "--build-arg", "FLAVOUR", "ctx", cwd=work, input=dockerfile, FLAVOUR="lime")
    assert other.returncode == 0 and other.stdout != done.stdout


def test_a_served_build_imports_nothing_the_server_did_not(busybox_root: Served) -> None:
    served = busybox_root
    served.start()
    context = small_context(served.tmp / "context", "FROM busybox\nCOPY a /a\nRUN cp /a /b\nFROM scratch\nCOPY --from=0 /b /b\n")
    done = served.pybuild("build", "-q", "--network=none", str(context), PYBUILD_SERVER_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert b"served by child" in done.stderr
    imported = re.search(rb"the child imported (\d+) modules: (.*)", done.stderr)
    assert imported is not None, done.stderr
    assert imported.group(1) == b"0", imported.group(2)


# -- signals and a client that goes away -------------------------------------------


@pytest.fixture
def busybox_root(served: Served, busybox_tar: Path) -> Served:
    imported = served.pybuild("import", str(busybox_tar), "busybox:latest", PYBUILD_SERVER="off")
    assert imported.returncode == 0, imported.stderr
    return served


def start_sleeping_build(served: Served, wrapper: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int]:
    context = small_context(served.tmp / "sleep", "FROM busybox\nRUN sleep 60\n")
    client = subprocess.Popen(
        [*wrapper, *PYBUILD, "build", "--no-cache", "--progress=plain", "--network=none", str(context)],
        env={**served.env, "PYBUILD_SERVER_DEBUG": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert wait_until(lambda: served.children_served() == 1, 60), served.log()
    child = int(re.findall(r": child (\d+)", served.log())[0])
    assert wait_until(lambda: b"sleep 60" in _children_cmdlines(child), 60)  # the step runs
    return client, child


def _children_cmdlines(pid: int) -> bytes:
    """The command lines of ``pid``'s process tree."""
    members, out = [pid], b""
    for member in members:
        for task in _listdir(f"/proc/{member}/task"):
            try:
                members += [int(c) for c in Path(f"/proc/{member}/task/{task}/children").read_text().split()]
            except OSError:
                pass
        try:
            out += Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ") + b"\n"
        except OSError:
            pass
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def test_ctrl_c_cancels_the_served_build_with_130(busybox_root: Served) -> None:
    served = busybox_root
    served.start()
    client, child = start_sleeping_build(served)
    client.send_signal(signal.SIGINT)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 130, stderr
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    assert wait_until(lambda: not alive(child), 30)


def test_a_client_killed_outright_cancels_its_build(busybox_root: Served) -> None:
    served = busybox_root
    served.start()
    client, child = start_sleeping_build(served)
    client.kill()
    client.communicate(timeout=30)
    assert wait_until(lambda: not alive(child), 60)  # the server interrupted it: no 60 s sleep left behind
    assert served.server_pid() is not None  # and goes on serving


def test_a_build_that_starts_a_server_returns_with_its_pipes_closed(served: Served) -> None:
    context = small_context(served.tmp / "context")
    try:
        done = subprocess.run([*PYBUILD, "build", "-q", str(context)], env=served.env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the build's pipes stayed open: the server started in the background holds them")
    assert done.returncode == 0, done.stderr
    served.wait_listening()
    done = subprocess.run([*PYBUILD, "build", "-q", str(context)], env=served.env, capture_output=True, timeout=60)
    assert done.returncode == 0 and served.children_served() == 1


# -- when the server is not used, and when it leaves -------------------------------


def start_with_probe_module(served: Served) -> tuple[int, Path]:
    """A server that has also loaded a module of the test's (its file: the second value)."""
    module = served.tmp / "probe_module.py"
    module.write_text("VALUE = 1\n")
    loader = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('probe_module', {str(module)!r})\n"
        "probe = importlib.util.module_from_spec(spec); spec.loader.exec_module(probe); sys.modules['probe_module'] = probe\n"
        "from pybuild.cli.main import main\n"
        f"sys.exit(main(['server', '--root', {str(served.root)!r}, '--background']))\n"
    )
    served.started.append(subprocess.Popen([sys.executable, "-c", loader], env=served.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return served.wait_listening(), module


def test_changed_code_makes_the_server_refuse_and_leave(served: Served) -> None:
    """A module the server loaded changes (as an upgrade does): the next build runs in-process."""
    pid, module = start_with_probe_module(served)
    context = small_context(served.tmp / "context")
    assert served.pybuild("build", "-q", str(context)).returncode == 0
    assert served.children_served() == 1
    module.write_text("VALUE = 22\n")
    done = served.pybuild("build", "-q", str(context), PYBUILD_SERVER_DEBUG="1")
    assert done.returncode == 0 and done.stdout.startswith(b"sha256:")
    assert b"pybuild's code changed (probe_module.py)" in done.stderr
    assert served.children_served() == 1  # not served
    assert wait_until(lambda: not alive(pid), 30)


def test_a_server_of_the_new_code_starts_while_the_old_ones_builds_end(busybox_root: Served) -> None:
    served = busybox_root
    old, module = start_with_probe_module(served)
    client, child = start_sleeping_build(served)
    module.write_text("VALUE = 22\n")
    context = small_context(served.tmp / "context")
    done = served.pybuild("build", "-q", str(context), PYBUILD_SERVER_DEBUG="1")
    assert done.returncode == 0 and b"code changed" in done.stderr and b"started a server" in done.stderr
    new = served.wait_listening()  # the build started it: the old one let go of the lock
    assert new != old and alive(old) and alive(child)  # the old server still runs its build
    assert served.pybuild("build", "-q", str(context)).returncode == 0
    assert ": child " in served.log()  # the new server's log: it served that build
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=60) == 130
    assert wait_until(lambda: not alive(old), 30)


@pytest.mark.parametrize("wrong", ["mode", "owner", "symlink"])
def test_a_server_directory_that_is_not_ours_alone_is_not_used(served: Served, wrong: str) -> None:
    served.start()
    context = small_context(served.tmp / "context")
    if wrong == "mode":
        served.directory.chmod(0o755)
    elif wrong == "owner":
        os.chown(served.directory, 1000, 1000)
    else:
        served.directory.rename(served.root / "real-server")
        served.directory.symlink_to(served.root / "real-server")
    done = served.pybuild("build", "-q", str(context), PYBUILD_SERVER_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert b"served by child" not in done.stderr
    log = (served.root / "real-server" / _wire.LOG_NAME).read_text() if wrong == "symlink" else served.log()
    assert ": child " not in log


def test_a_second_server_leaves_while_one_runs(served: Served) -> None:
    pid = served.start()
    second = subprocess.run([*PYBUILD, "server", "--root", str(served.root)], env=served.env, capture_output=True, timeout=60)
    assert second.returncode == 0
    assert b"already runs" in second.stderr
    assert served.server_pid() == pid


def test_status_and_stop(served: Served) -> None:
    assert served.pybuild("server", "--status").returncode == 3
    pid = served.start()
    status = served.pybuild("server", "--status")
    assert status.returncode == 0 and str(pid).encode() in status.stdout
    stopped = served.pybuild("server", "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert wait_until(lambda: not alive(pid), 10)


def test_an_idle_server_leaves(served: Served) -> None:
    pid = served.start("--idle-timeout", "0.5")
    assert wait_until(lambda: not alive(pid), 30)
    assert "idle for 0.5 s" in served.log()


def test_a_server_leaves_when_its_root_is_removed(served: Served) -> None:
    pid = served.start()
    (served.tmp / "gone").mkdir()
    served.root.rename(served.tmp / "gone" / "root")
    served.root.mkdir()  # replaced by another directory of the same name
    assert wait_until(lambda: not alive(pid), 30)


# -- what a client sends is checked ------------------------------------------------


def raw_request(served: Served, data: bytes, fds: list[int]) -> tuple[int, int, str] | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(10)
        sock.connect(str(served.directory / _wire.SOCKET_NAME))
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), 4 << 20)  # root: past wmem_max
        try:
            socket.send_fds(sock, [data], fds)
        except OSError:
            return None  # the kernel refused to send it at all
        answer = sock.recv(_wire.MAX_MESSAGE)
        return _wire.parse_message(answer) if answer else None


def request(**changed: object) -> bytes:
    fields: dict[str, object] = {
        "umask": 0o22, "unbuffered": False, "argv": [b"pybuild", b"build", b"."], "env": [b"A=1"], "path": [], "fingerprint": b"",
    }
    fields.update(changed)
    return _wire.Request(**fields).encode()  # type: ignore[arg-type]


def test_malformed_requests_are_refused_and_the_server_goes_on(served: Served) -> None:
    pid = served.start()
    cwd = os.open(served.tmp, os.O_PATH | os.O_DIRECTORY)
    try:
        good = request()
        cases = [
            (b"garbage", [0, 1, 2, cwd]),
            (good[:-3], [0, 1, 2, cwd]),  # truncated
            (good + b"\0", [0, 1, 2, cwd]),  # bytes after the last section
            (good[: len(_wire.MAGIC) + 3] + b"\xff\xff\xff\xff" + good[len(_wire.MAGIC) + 7 :], [0, 1, 2, cwd]),  # a huge length
            (good, [0, 1, 2]),  # one descriptor short
            (good, [0, 1, 2, cwd, cwd]),  # one too many
            (request(argv=[b"pybuild", b"images"]), [0, 1, 2, cwd]),  # not a build
            (request(env=[b"=x", b"NOEQUALS"]), [0, 1, 2, cwd]),
            (request(umask=0o7777), [0, 1, 2, cwd]),
            (good, [0, 1, 2, cwd]),  # well formed, another Python fingerprint
            (good, [0, 1, 2, 0]),  # its "directory" is not one
            (b"x" * (_wire.MAX_REQUEST + 10), [0, 1, 2, cwd]),  # longer than the server reads
        ]
        for data, fds in cases:
            reply = raw_request(served, data, fds)
            assert reply is None or reply[0] == _wire.REFUSED, (data[:40], reply)
    finally:
        os.close(cwd)
    assert served.server_pid() == pid
    assert served.children_served() == 0
    assert "Traceback" not in served.log()
    context = small_context(served.tmp / "context")
    assert served.pybuild("build", "-q", str(context)).returncode == 0
    assert served.children_served() == 1


def test_a_child_killed_by_a_signal_is_said_and_exits_128_plus_n(busybox_root: Served) -> None:
    served = busybox_root
    served.start()
    client, child = start_sleeping_build(served)
    os.kill(child, signal.SIGKILL)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 128 + signal.SIGKILL
    assert stderr.decode().splitlines()[-1] == "error: the build was killed by SIGKILL (signal 9)"


def test_several_clients_at_once_get_a_child_each(busybox_root: Served) -> None:
    served = busybox_root
    served.start()
    contexts = [small_context(served.tmp / f"c{i}", f"FROM busybox\nRUN sleep 1 && echo {i} > /n\n") for i in range(2)]
    clients = [
        subprocess.Popen([*PYBUILD, "build", "-q", "--network=none", str(c)], env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in contexts
    ]
    results = [c.communicate(timeout=120) for c in clients]
    assert [c.returncode for c in clients] == [0, 0], results
    assert results[0][0] != results[1][0]  # two images
    assert served.children_served() == 2


@pytest.mark.parametrize(
    ("wrapper", "reason"),
    [
        (["unshare", "--uts"], b"other namespaces"),  # another hostname namespace
        ([sys.executable, "-X", "utf8", "-m", "pybuild"], b"another Python"),  # other sys.flags
    ],
)
def test_a_client_unlike_the_server_builds_in_process(served: Served, wrapper: list[str], reason: bytes) -> None:
    served.start()
    context = small_context(served.tmp / "context")
    command = [*wrapper, *PYBUILD] if wrapper[0] == "unshare" else wrapper
    done = subprocess.run([*command, "build", "-q", str(context)], env={**served.env, "PYBUILD_SERVER_DEBUG": "1"}, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert reason in done.stderr and done.stdout.startswith(b"sha256:")
    assert served.children_served() == 0


def test_sigterm_waits_for_running_builds_and_a_second_one_interrupts_them(busybox_root: Served) -> None:
    served = busybox_root
    pid = served.start()
    client, child = start_sleeping_build(served)
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not (served.directory / _wire.SOCKET_NAME).exists(), 10)  # no new builds
    time.sleep(0.5)
    assert alive(pid) and alive(child)  # the running build goes on
    context = small_context(served.tmp / "context")
    assert served.pybuild("build", "-q", str(context)).returncode == 0  # in-process meanwhile
    assert served.children_served() == 1
    os.kill(pid, signal.SIGTERM)  # a second: the builds are interrupted, the server leaves
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 130, stderr
    assert wait_until(lambda: not alive(pid), 30)


def test_the_child_takes_the_clients_limits_nice_value_and_cpus(busybox_root: Served) -> None:
    """What the build's processes run under is the caller's, not the server's: a step sees
    what it sees in an in-process build."""
    served = busybox_root
    served.start()
    context = small_context(
        served.tmp / "limits",
        "FROM busybox\nRUN ulimit -n > /n && cut -d' ' -f19 /proc/self/stat > /nice && grep Cpus_allowed_list /proc/self/status > /cpus\n",
    )

    def build(out: str, mode: str) -> dict[str, str]:
        done = subprocess.run(
            ["sh", "-c", 'ulimit -n 512; exec taskset -c 0 "$@"', "sh", "nice", "-n", "7", *PYBUILD, "build", "-q", "--no-cache",
             "--network=none", "-o", f"type=local,dest={served.tmp / out}", str(context)],
            env={**served.env, "PYBUILD_SERVER": mode}, capture_output=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return {name: (served.tmp / out / name).read_text().strip() for name in ("n", "nice", "cpus")}

    in_process = build("in-process", "off")
    assert in_process == {"n": "512", "nice": "7", "cpus": "Cpus_allowed_list:\t0"}  # what the test sets reaches a step
    assert build("served", "on") == in_process
    assert served.children_served() == 1


def v2_mount() -> Path | None:
    for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (mount / "cgroup.controllers").exists():
            return mount
    return None


def test_the_child_joins_the_clients_cgroup_v2(busybox_root: Served) -> None:
    served = busybox_root
    mount = v2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy on this machine")
    group = mount / f"pybuild-test-server-{os.getpid()}"
    group.mkdir()
    try:
        served.start()
        client, child = start_sleeping_build(served, ("sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"))
        try:
            line = next(x for x in Path(f"/proc/{child}/cgroup").read_text().splitlines() if x.startswith("0::"))
            assert line == f"0::/{group.relative_to(mount)}"
        finally:
            client.send_signal(signal.SIGINT)
            client.communicate(timeout=60)
            wait_until(lambda: not alive(child), 30)
    finally:
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), 30)
        group.rmdir()


@pytest.mark.parametrize("encoding", ["latin-1", "ascii:backslashreplace"])
def test_the_childs_streams_follow_the_clients_pythonioencoding(served: Served, encoding: str) -> None:
    context = small_context(served.tmp / "context", "FROM scratch\nCOPY a /caf\u00e9\n")
    args = ("build", "--progress=plain", "--no-cache", str(context))
    in_process = served.pybuild(*args, PYBUILD_SERVER="off", PYTHONIOENCODING=encoding)
    served.start()
    again = served.pybuild(*args, PYTHONIOENCODING=encoding)
    assert served.children_served() == 1
    assert in_process.returncode == again.returncode == 0
    expected = b"caf\xe9" if encoding == "latin-1" else b"caf\\xe9"
    assert expected in in_process.stderr  # the encoding reached the output
    assert timeless(again.stderr) == timeless(in_process.stderr)


def test_a_big_environment_is_served_and_a_too_big_one_builds_in_process(served: Served) -> None:
    served.start()
    context = small_context(served.tmp / "context")
    value = "x" * 100_000  # one variable may hold 128 KiB (MAX_ARG_STRLEN)
    big = {f"BIG{i}": value for i in range(5)}  # past net.core.wmem_max, within the server's 1 MiB
    done = served.pybuild("build", "-q", str(context), **big)
    assert done.returncode == 0 and served.children_served() == 1
    too_big = {f"BIG{i}": value for i in range(12)}
    done = served.pybuild("build", "-q", str(context), PYBUILD_SERVER_DEBUG="1", **too_big)
    assert done.returncode == 0 and b"request too long" in done.stderr
    assert served.children_served() == 1 and served.server_pid() is not None


# -- the answer comes before the work for later builds --------------------------------


def test_the_child_answers_and_lets_go_of_the_clients_streams_before_it_is_done() -> None:
    """``answer_client``: the status reaches the client and the build's stdout ends while the
    child still works; the client's going away (the server's SIGINT) does not stop it."""
    from pybuild.cli.server import _child

    client, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_read, out_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the served child, reduced to its streams and its connection
        code = 1
        try:
            os.dup2(out_write, 1)
            os.close(out_write)  # as the served child holds the client's stdout on 1 only
            os.dup2(server_end.fileno(), _child.REPLY_FD)
            os.write(1, b"result\n")
            _child.answer_client(3)
            os.kill(os.getpid(), signal.SIGINT)  # what the server sends once the client has gone
            os.read(done_read, 1)  # the later work, until the test says it has seen everything
            os.write(1, b"never seen\n")
            code = 7
        finally:  # the SIGINT, had it not been ignored, would have left code 1
            os._exit(code)
    os.close(out_write)
    server_end.close()
    try:
        kind, status, _ = _wire.parse_message(client.recv(_wire.MAX_MESSAGE))
        assert kind == _wire.STATUS and os.waitstatus_to_exitcode(status) == 3
        output, ended = b"", False
        while not ended and select.select([out_read], [], [], 10.0)[0]:  # the end of the stream, while the child runs
            chunk = os.read(out_read, 4096)
            output, ended = output + chunk, not chunk
        assert ended, "the child still holds the client's stdout"
        assert output == b"result\n"
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the child ended before it was told to"
    finally:
        os.write(done_write, b"x")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7  # not killed by the SIGINT


def test_a_rebuild_right_after_a_served_build_waits_for_its_record(busybox_root: Served) -> None:
    """The record is written after the answer, under a lock taken before it: a rebuild at once
    is answered by the record (not served again), the record having been waited for.  The build
    writes 64 MiB, so its write-out (before the record) outlasts a new command's start."""
    context = small_context(busybox_root.tmp / "context", "FROM busybox\nCOPY a big /\nRUN cat /a > /b\n")
    (context / "big").write_bytes(os.urandom(64 << 20))
    records = busybox_root.root / "fastpath"
    before = set(records.glob("*.rec")) if records.is_dir() else set()
    time.sleep(1.1)  # the context is older than the record by more than its racy window
    busybox_root.start()
    done = busybox_root.pybuild("build", "-q", "--network=none", "-t", "recorded:1", str(context))
    assert done.returncode == 0, done.stderr
    again = busybox_root.pybuild("build", "-q", "--network=none", "-t", "recorded:1", str(context), PYBUILD_FASTPATH="1")
    assert again.returncode == 0 and again.stdout == done.stdout
    assert busybox_root.children_served() == 1  # answered by the record, not by the server
    assert len(set(records.glob("*.rec")) - before) == 1
