"""Containers at run time, as root on the busybox base: a RUN sandbox kept alive by a supervisor.

Every test ends with nothing of its containers left: no supervisor, no
process of the container, no mount namespace holding its layer, no cgroup.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.errors import SandboxError
from pybuild.executors import ProcessSpec, PublishedPort, Rootfs
from pybuild.executors._containers import ContainerLaunch, ContainerRuntime

from .conftest import PATH

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def holders_of(path: Path) -> list[int]:
    """Pids whose mount namespace has something mounted from under ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    if str(path) in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def cgroup_dirs(name: str) -> list[str]:
    """The container's cgroup directories that still exist, in every hierarchy."""
    return [path for hierarchy in os.listdir("/sys/fs/cgroup") if os.path.isdir(path := f"/sys/fs/cgroup/{hierarchy}/pybuild/{name}")]


def eventually(condition, what: str, attempts: int = 400) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` (20 s at most); readiness, not a timing assertion."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


class Containers:
    """Makes containers over the busybox rootfs and tears every one of them down."""

    def __init__(self, base: Path, lower: Path) -> None:
        self.base = base
        self.lower = lower
        self.runtime = ContainerRuntime()
        self.made: list[ContainerLaunch] = []

    def launch(self, args: tuple[str, ...], *, ports: tuple[PublishedPort, ...] = (), tty: bool = False, **process) -> ContainerLaunch:  # type: ignore[no-untyped-def]
        directory = self.base / f"c{len(self.made)}"
        (directory / "upper").mkdir(parents=True)
        (directory / "work").mkdir()
        process.setdefault("env", (PATH,))
        process.setdefault("network", "default" if ports else "none")
        launch = ContainerLaunch(
            directory=str(directory),
            rootfs=Rootfs((str(self.lower),), str(directory / "upper"), str(directory / "work")),
            process=ProcessSpec(args, hostname=f"box{len(self.made)}", **process),
            cgroup_name=f"container-test-{os.getpid()}-{len(self.made)}",
            ports=ports,
            tty=tty,
        )
        self.made.append(launch)
        return launch

    def state(self, launch: ContainerLaunch) -> dict:  # type: ignore[type-arg]
        return json.loads((Path(launch.directory) / "state.json").read_text())

    def assert_gone(self, launch: ContainerLaunch) -> None:
        state = self.state(launch)
        assert not self.runtime.status(launch.directory).supervised
        # the kernel drops a dying process's lock (closing its files) before it is a zombie:
        # under load the supervisor may be seen still exiting for a moment
        eventually(lambda: not alive(state["supervisor_pid"]), "the supervisor has exited")
        assert holders_of(Path(launch.directory)) == []
        assert cgroup_dirs(launch.cgroup_name) == []

    def close(self) -> None:
        for launch in self.made:
            if Path(launch.directory).exists():
                self.runtime.kill(launch.directory)
                self.runtime.release(launch.directory)
                assert holders_of(Path(launch.directory)) == []
                assert cgroup_dirs(launch.cgroup_name) == []


def alive(pid: int) -> bool:
    """Is ``pid`` a living process?  A zombie is not: the supervisor is re-parented to
    pid 1, which reaps it when it gets to it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False


@pytest.fixture
def containers(tmp_path: Path, busybox_rootfs: Path, require_root: None) -> Iterator[Containers]:
    made = Containers(tmp_path / "containers", busybox_rootfs)
    yield made
    made.close()


def test_detached_container_runs_until_stopped(containers: Containers, capfd: pytest.CaptureFixture[str]) -> None:
    script = 'trap "echo stopping; exit 0" TERM; echo ready; while true; do sleep 0.1; done'
    launch = containers.launch(("/bin/sh", "-c", script))
    assert containers.runtime.start(launch, attach=False) is None
    status = containers.runtime.status(launch.directory)
    assert status.running and alive(status.state.init_pid)
    assert holders_of(Path(launch.directory)), "a running container has its layer mounted"

    probe = ProcessSpec(("sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '"), env=(PATH,))
    code = containers.runtime.exec(launch.directory, probe, tty=False, interactive=False)
    assert code == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "box0"
    assert out[1].startswith("/bin/sh -c trap")  # the exec'd process sees the container's pid 1

    containers.runtime.stop(launch.directory, timeout=20)
    assert not alive(status.state.init_pid)
    final = containers.runtime.status(launch.directory)
    assert final.state.status == "exited" and final.state.exit_code == 0  # it honoured SIGTERM
    frames, _ = containers.runtime.log_frames(launch.directory)
    assert b"".join(f.data for f in frames if f.stream == 1) == b"ready\nstopping\n"
    containers.assert_gone(launch)


def test_stop_kills_a_container_that_ignores_the_signal(containers: Containers) -> None:
    launch = containers.launch(("sleep", "1000"))  # pid 1 without a handler ignores SIGTERM
    containers.runtime.start(launch, attach=False)
    containers.runtime.stop(launch.directory, timeout=0)
    assert containers.runtime.status(launch.directory).state.exit_code == 137
    containers.assert_gone(launch)


def test_attached_run_returns_the_exit_code_and_keeps_both_streams(containers: Containers, capfd: pytest.CaptureFixture[str]) -> None:
    launch = containers.launch(("sh", "-c", "echo to-out; echo to-err >&2; exit 3"))
    assert containers.runtime.start(launch, attach=True) == 3
    captured = capfd.readouterr()
    assert captured.out == "to-out\n" and captured.err == "to-err\n"
    frames, _ = containers.runtime.log_frames(launch.directory)
    assert [(f.stream, f.data) for f in frames] in ([(1, b"to-out\n"), (2, b"to-err\n")], [(2, b"to-err\n"), (1, b"to-out\n")])
    state = containers.runtime.status(launch.directory).state
    assert state.status == "exited" and state.exit_code == 3 and state.finished_at >= state.started_at > 0
    containers.assert_gone(launch)


def test_published_port_reaches_the_container(containers: Containers, busybox_rootfs: Path) -> None:
    port = free_port()
    launch = containers.launch(
        ("sh", "-c", "mkdir -p /srv && echo served-from-container > /srv/index.html && exec httpd -f -p 80 -h /srv"),
        ports=(PublishedPort("127.0.0.1", port, 80),),
    )
    containers.runtime.start(launch, attach=False)
    pages: list[bytes] = []

    def fetched() -> bool:
        try:
            pages.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read())
        except OSError:
            return False
        return True

    eventually(fetched, "the page is served on the published port")
    assert pages[-1] == b"served-from-container\n"
    containers.runtime.kill(launch.directory)
    containers.assert_gone(launch)
    with pytest.raises(OSError):  # slirp4netns is gone with the container, and its port with it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_taken_port_fails_the_start_and_leaves_nothing(containers: Containers) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        launch = containers.launch(("sleep", "1000"), ports=(PublishedPort("127.0.0.1", port, 80),))
        with pytest.raises(SandboxError, match="already allocated"):
            containers.runtime.start(launch, attach=False)
    assert containers.runtime.status(launch.directory).state.status == "created"
    containers.assert_gone(launch)


def test_a_missing_command_fails_like_docker(containers: Containers) -> None:
    launch = containers.launch(("no-such-program",))
    with pytest.raises(SandboxError, match='exec "no-such-program": executable file not found') as caught:
        containers.runtime.start(launch, attach=False)
    assert caught.value.exit_code == 127
    state = containers.runtime.status(launch.directory).state
    assert state.status == "created" and "not found" in state.error
    containers.assert_gone(launch)


def test_a_quick_command_is_not_a_start_failure(containers: Containers) -> None:
    launch = containers.launch(("true",))
    assert containers.runtime.start(launch, attach=False) is None
    eventually(lambda: not containers.runtime.status(launch.directory).supervised, "the container ends")
    assert containers.runtime.status(launch.directory).state.exit_code == 0
    containers.assert_gone(launch)


def test_exec_runs_as_the_user_in_the_directory_with_the_environment(containers: Containers, capfd: pytest.CaptureFixture[str]) -> None:
    launch = containers.launch(("sleep", "1000"))
    containers.runtime.start(launch, attach=False)
    process = ProcessSpec(("sh", "-c", 'id -u; id -G; pwd; echo "$GREETING"; exit 7'), env=(PATH, "GREETING=hello"), cwd="/tmp", user="app")
    assert containers.runtime.exec(launch.directory, process, tty=False, interactive=False) == 7
    assert capfd.readouterr().out.split("\n")[:4] == ["1000", "1000 2000", "/tmp", "hello"]
    unknown = ProcessSpec(("true",), env=(PATH,), user="nobody-here")
    assert containers.runtime.exec(launch.directory, unknown, tty=False, interactive=False) == 126
    assert "unable to find user nobody-here" in capfd.readouterr().err
    containers.runtime.kill(launch.directory)
    containers.assert_gone(launch)


def test_a_killed_supervisor_takes_the_container_down(containers: Containers) -> None:
    launch = containers.launch(("sleep", "1000"), ports=(PublishedPort("127.0.0.1", free_port(), 80),))
    containers.runtime.start(launch, attach=False)
    state = containers.runtime.status(launch.directory).state
    os.kill(state.supervisor_pid, signal.SIGKILL)
    eventually(lambda: not alive(state.init_pid), "the container's init dies with its supervisor")
    eventually(lambda: holders_of(Path(launch.directory)) == [], "every mount of the container goes")
    status = containers.runtime.status(launch.directory)
    assert status.lost and not status.running
    containers.runtime.release(launch.directory)  # what rm does for such a container
    containers.assert_gone(launch)


TTY_CHILD = textwrap.dedent(
    """
    import sys
    from pybuild.executors import ProcessSpec, Rootfs
    from pybuild.executors._containers import ContainerLaunch, ContainerRuntime
    directory, lower = sys.argv[1:]
    launch = ContainerLaunch(
        directory=directory,
        rootfs=Rootfs((lower,), directory + "/upper", directory + "/work"),
        process=ProcessSpec(("sh",), env=({path!r}, "TERM=xterm"), network="none", hostname="ttybox"),
        cgroup_name="container-tty-test-" + directory.replace("/", "-")[-20:],
        tty=True, interactive=True, remove_on_exit=(directory,),
    )
    sys.exit(ContainerRuntime().start(launch, attach=True))
    """
).format(path=PATH)


def test_an_interactive_tty_is_the_shells_controlling_terminal(tmp_path: Path, busybox_rootfs: Path, require_root: None) -> None:
    directory = tmp_path / "tty-container"
    (directory / "upper").mkdir(parents=True)
    (directory / "work").mkdir()
    master, slave = os.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", TTY_CHILD, str(directory), str(busybox_rootfs)],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def expect(marker: bytes) -> None:
        def arrived() -> bool:
            if select.select([master], [], [], 0)[0]:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:
                    pass
            return marker in seen

        eventually(arrived, f"{marker!r} on the terminal")

    try:
        os.write(master, b"echo ready-$((6*7))\n")
        expect(b"ready-42")
        # Ctrl-C reaches the foreground job only if the pty is the session's controlling terminal.
        os.write(master, b"echo sleeping; sleep 1000\n")
        expect(b"sleeping\r\n")
        os.write(master, b"\x03")
        os.write(master, b"echo status-$?\n")
        expect(b"status-130")
        os.write(master, b"exit 4\n")
        assert child.wait(timeout=60) == 4
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    assert not directory.exists()  # remove_on_exit: run --rm


def test_release_finds_cgroups_nobody_recorded(containers: Containers) -> None:
    """pybuild died after making a container's cgroups, before its supervisor recorded them."""
    from pybuild.executors._cgroups import StepCgroups, detect_layout

    launch = containers.launch(("true",))
    StepCgroups(detect_layout(), name=launch.cgroup_name).create(64, None)
    assert cgroup_dirs(launch.cgroup_name)
    containers.runtime.release(launch.directory)
    assert cgroup_dirs(launch.cgroup_name), "without the name nothing says these are the container's"
    containers.runtime.release(launch.directory, launch.cgroup_name)
    assert cgroup_dirs(launch.cgroup_name) == []
