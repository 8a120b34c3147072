"""Containers from images with the pybuild CLI: the tutorial's run / exec / diff / commit / history flow.

(shared/tutorial/docker-images-tutorial.md, "利用 commit 理解镜像构成": a web
server container, its page changed through ``exec``, the change seen with
``diff``, kept with ``commit`` and served again from the new image.)
Busybox's ``httpd`` stands in for nginx.  Every test ends with nothing
left running or mounted.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

CONTAINER_COMMANDS = ("run", "ps", "logs", "exec", "stop", "rm", "diff", "commit")
IMAGE_COMMANDS = {"images": "_images", "history": "_history", "rmi": "_rmi", "inspect": "_inspect"}

# The container commands are added to the command table when cli/main.py does not list them yet.
_MAIN = (
    "import sys\n"
    "from pybuild.cli import main as m\n"
    f"for name in {CONTAINER_COMMANDS!r}:\n"
    "    m.COMMANDS.setdefault(name, ('pybuild.cli._' + name, name))\n"
    f"for name, module in {IMAGE_COMMANDS!r}.items():\n"
    "    m.COMMANDS.setdefault(name, ('pybuild.cli.' + module, name))\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)

WEB_DOCKERFILE = """\
FROM busybox
RUN mkdir -p /www && echo '<h1>Welcome to pybuild httpd!</h1>' > /www/index.html
EXPOSE 80
CMD ["httpd", "-f", "-v", "-p", "80", "-h", "/www"]
"""


def pybuild_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _MAIN, *args]


@pytest.fixture
def pb(root: Path):  # type: ignore[no-untyped-def]
    """``pb("run", ...)`` runs the pybuild CLI (container commands included) against the test's root."""

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            pybuild_argv(*args), env={**os.environ, "PYBUILD_ROOT": str(root)}, capture_output=True, text=True, input=input, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture
def clean_root(root: Path, pb) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """The test's root; afterwards every container is removed and nothing of them may remain."""
    yield root
    containers = root / "containers"
    if containers.is_dir():
        left = [n for n in os.listdir(containers) if re.fullmatch(r"[0-9a-f]{64}", n)]
        if left:
            pb("rm", "-f", *left, check=False)
    assert_nothing_left(root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int) -> str:
    """The page on 127.0.0.1:port, waiting for the server to listen (bounded)."""
    error: Exception | None = None
    for _ in range(200):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        except OSError as e:  # refused, or reset while the server starts
            error = e
            time.sleep(0.05)
    raise AssertionError(f"nothing served on port {port}: {error}")


def table(text: str) -> list[dict[str, str]]:
    """Rows of a docker-style table, split at its header's column starts."""
    lines = text.rstrip("\n").split("\n")
    starts = [(m.group(0).strip(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    rows = []
    for line in lines[1:]:
        row = {}
        for i, (name, start) in enumerate(starts):
            end = starts[i + 1][1] if i + 1 < len(starts) else None
            row[name] = line[start:end].strip()
        rows.append(row)
    return rows


def container_state(root: Path, container_id: str) -> dict[str, Any]:
    return json.loads((root / "containers" / container_id / "state.json").read_text())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False


def assert_nothing_left(root: Path, pids: tuple[int, ...] = ()) -> None:
    """No process holds a mount from the root, none of ``pids`` lives, no container cgroup remains."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    assert str(root) not in f.read(), f"process {entry} still has a mount from the root"
            except OSError:
                continue
    assert [pid for pid in pids if alive(pid)] == []
    containers = root / "containers"
    ids = [n for n in os.listdir(containers) if re.fullmatch(r"[0-9a-f]{64}", n)] if containers.is_dir() else []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        parent = Path("/sys/fs/cgroup") / hierarchy / "pybuild"
        if parent.is_dir():
            assert not [n for n in os.listdir(parent) if n.removeprefix("container-") in ids]


def build_web_image(cli, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    context = tmp_path / "web"
    context.mkdir()
    (context / "Dockerfile").write_text(WEB_DOCKERFILE)
    cli("build", "-q", "-t", "web:v1", str(context))
    return "web:v1"


def test_the_tutorial_web_server_flow(pb, cli, clean_root: Path, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    image = build_web_image(cli, tmp_path)
    port, port2 = free_port(), free_port()

    web_id = pb("run", "-d", "--name", "web", "-p", f"{port}:80", image).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", web_id)
    running = table(pb("ps").stdout)
    assert [(r["CONTAINER ID"], r["IMAGE"], r["NAMES"], r["PORTS"]) for r in running] == [
        (web_id[:12], "web:v1", "web", f"127.0.0.1:{port}->80/tcp")
    ]
    assert running[0]["STATUS"].startswith("Up ") and running[0]["COMMAND"] == '"httpd -f -v -p 80 -…"'
    assert fetch(port) == "<h1>Welcome to pybuild httpd!</h1>\n"

    pb("exec", "web", "sh", "-c", 'echo "<h1>Hello, Docker!</h1>" > /www/index.html')
    assert fetch(port) == "<h1>Hello, Docker!</h1>\n"
    assert pb("diff", "web").stdout == "C /www\nC /www/index.html\n"

    new_id = pb("commit", "--author", "Tutorial Reader <reader@example.com>", "--message", "changed page", "web", "web:v2").stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", new_id)
    history = table(pb("history", "web:v2").stdout)
    assert history[0]["IMAGE"] == new_id[7:19]
    assert history[0]["CREATED BY"] == "httpd -f -v -p 80 -h /www" and history[0]["COMMENT"] == "changed page"
    assert history[0]["SIZE"] != "0B"
    assert [r["CREATED BY"] for r in history[1:]] == [r["CREATED BY"] for r in table(pb("history", "web:v1").stdout)]
    committed = open_image("web:v2")
    assert committed.config["author"] == "Tutorial Reader <reader@example.com>"
    assert committed.config["history"][-1]["author"] == "Tutorial Reader <reader@example.com>"
    assert committed.config["config"]["Cmd"] == ["httpd", "-f", "-v", "-p", "80", "-h", "/www"]
    assert committed.read("/www/index.html") == "<h1>Hello, Docker!</h1>\n"
    assert len(committed.config["rootfs"]["diff_ids"]) == len(open_image("web:v1").config["rootfs"]["diff_ids"]) + 1

    web2_id = pb("run", "-d", "--name", "web2", "-p", f"{port2}:80", "web:v2").stdout.strip()
    assert fetch(port2) == "<h1>Hello, Docker!</h1>\n"
    assert fetch(port) == "<h1>Hello, Docker!</h1>\n"  # both serve at once
    assert "response:200" in pb("logs", "web").stderr  # httpd -v logs each request on stderr

    pids = tuple(container_state(clean_root, c)[k] for c in (web_id, web2_id) for k in ("supervisor_pid", "init_pid"))
    assert pb("stop", "-t", "1", "web", "web2").stdout == "web\nweb2\n"
    stopped = {r["NAMES"]: r for r in table(pb("ps", "-a").stdout)}
    assert set(stopped) == {"web", "web2"} and all(r["STATUS"].startswith("Exited (") and r["PORTS"] == "" for r in stopped.values())
    assert pb("ps").stdout.strip().count("\n") == 0  # only the header: nothing runs
    assert pb("rm", "web", "web2").stdout == "web\nweb2\n"
    assert table(pb("ps", "-a").stdout) == []
    assert_nothing_left(clean_root, pids)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def drive_terminal(argv: list[str], env: dict[str, str], steps: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run ``argv`` on a new pty; for each (keys, marker) type the keys and wait for the marker."""
    master, slave = os.openpty()
    child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    try:
        for keys, marker in steps:
            os.write(master, keys)
            for _ in range(400):
                if marker in seen:
                    break
                if select.select([master], [], [], 0.05)[0]:
                    try:
                        seen += os.read(master, 65536)
                    except OSError:
                        break
            assert marker in seen, f"{marker!r} never appeared in {bytes(seen)!r}"
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    return code, bytes(seen)


def test_an_interactive_shell_through_a_pseudo_terminal(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYBUILD_ROOT": str(clean_root)}
    code, screen = drive_terminal(
        pybuild_argv("run", "--rm", "-it", busybox_image, "sh"),
        env,
        [
            (b"cat /etc/os-release\n", b'PRETTY_NAME="busybox (pybuild example base)"'),
            (b"echo term=$TERM tty=$([ -t 0 ] && echo yes)\n", b"term=xterm tty=yes"),
            (b"exit\n", b"exit"),
        ],
    )
    assert code == 0
    assert b'NAME="pybuild busybox"\r\nID=busybox\r\n' in screen  # the pty turned \n into \r\n: a real terminal
    assert table(pb("ps", "-a").stdout) == []  # --rm


def test_a_foreground_container_keeps_its_output_and_exit_code(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    done = pb("run", "--name", "once", busybox_image, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert table(pb("ps").stdout) == []
    row = table(pb("ps", "-a").stdout)[0]
    assert row["NAMES"] == "once" and row["IMAGE"] == "busybox:latest" and re.fullmatch(r"Exited \(3\) .* ago", row["STATUS"])
    assert row["COMMAND"] == '"sh -c echo out; ech…"'
    logs = pb("logs", "once")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    stamped = pb("logs", "-t", "--tail", "1", "once")
    assert stamped.stdout == "" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z err\n", stamped.stderr)
    assert pb("run", "--rm", "-i", busybox_image, "cat", input="fed through stdin\n").stdout == "fed through stdin\n"
    flags = ("-e", "GREETING=hi", "-w", "/tmp", "-u", "app")
    assert pb("run", "--rm", *flags, busybox_image, "sh", "-c", 'echo "$GREETING $(pwd) $(id -un)"').stdout == "hi /tmp app\n"
    missing = pb("run", "--rm", busybox_image, "no-such-command", check=False)
    assert missing.returncode == 127 and 'exec "no-such-command": executable file not found' in missing.stderr
    pb("rm", "once")


def test_a_container_gets_etc_hostname_unlike_a_run_step(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    """docker run mounts /etc/hostname holding the container's hostname
    (moby/moby daemon/container_operations_unix.go); only BuildKit's RUN steps go without it."""
    out = pb("run", "--name", "hn", busybox_image, "sh", "-c", "cat /etc/hostname; hostname").stdout.split()
    assert len(out) == 2 and out[0] == out[1] and len(out[0]) == 12
    pb("rm", "hn")


def test_names_ids_and_running_containers(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    first = pb("run", "-d", busybox_image, "sleep", "1000").stdout.strip()
    name = table(pb("ps").stdout)[0]["NAMES"]
    assert re.fullmatch(r"[a-z]+_[a-z]+\d*", name)
    pb("run", "-d", "--name", "named", busybox_image, "sleep", "1000")
    taken = pb("run", "-d", "--name", "named", busybox_image, "true", check=False)
    assert taken.returncode == 1 and 'the container name "/named" is already in use' in taken.stderr
    assert "Traceback" not in taken.stderr

    refused = pb("rm", "named", check=False)
    assert refused.returncode == 1 and "you cannot remove a running container" in refused.stderr
    assert pb("exec", first[:6], "hostname").stdout == first[:12] + "\n"  # an ID prefix names it too
    assert pb("rm", "-f", "named", first[:12]).stdout == f"named\n{first[:12]}\n"
    gone = pb("exec", "named", "true", check=False)
    assert gone.returncode == 1 and "no such container: named" in gone.stderr
    assert table(pb("ps", "-a").stdout) == []


def test_diff_lists_added_changed_and_deleted_paths(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    script = "mkdir -p /srv/new && echo x > /srv/new/file && echo more >> /etc/os-release && rm /etc/group && rm -r /var/www"
    pb("run", "--name", "changer", busybox_image, "sh", "-c", script)
    assert pb("diff", "changer").stdout.splitlines() == [
        "C /etc",
        "D /etc/group",
        "C /etc/os-release",
        "A /srv",
        "A /srv/new",
        "A /srv/new/file",
        "C /var",
        "D /var/www",
    ]
    pb("rm", "changer")


def test_commit_applies_changes_and_an_unchanged_container_adds_no_layer(pb, clean_root: Path, busybox_image: str, open_image) -> None:  # type: ignore[no-untyped-def]
    pb("run", "--name", "motd", busybox_image, "sh", "-c", "echo hello from the layer > /etc/motd")
    image_id = pb(
        "commit", "-m", "with motd", "-c", 'CMD ["cat", "/etc/motd"]', "-c", "ENV GREETING=hi", "-c", "EXPOSE 8080",
        "-c", "WORKDIR /tmp", "-c", "LABEL stage=committed", "motd", "motd:1",
    ).stdout.strip()
    config = open_image("motd:1").config
    assert open_image(image_id).config == config
    assert config["config"]["Cmd"] == ["cat", "/etc/motd"] and "GREETING=hi" in config["config"]["Env"]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}} and config["config"]["WorkingDir"] == "/tmp"
    assert config["config"]["Labels"] == {"stage": "committed"}
    assert config["history"][-1]["created_by"] == "sh -c echo hello from the layer > /etc/motd"
    assert "empty_layer" not in config["history"][-1]
    assert pb("run", "--rm", "motd:1").stdout == "hello from the layer\n"

    pb("run", "--name", "idle", busybox_image, "true")
    same = open_image(pb("commit", "idle").stdout.strip()).config
    assert same["history"][-1]["empty_layer"] is True
    assert same["rootfs"]["diff_ids"] == open_image(busybox_image).config["rootfs"]["diff_ids"]

    bad = pb("commit", "-c", "RUN echo no", "idle", check=False)
    assert bad.returncode == 2 and "--change" in bad.stderr and "Traceback" not in bad.stderr
    pb("rm", "motd", "idle")


def test_images_of_containers_are_in_use(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root
    from pybuild.executors import images_in_use, snapshots_in_use
    from pybuild.oci import ImageStore

    with Root.open(clean_root) as root:
        image = ImageStore(root).get(busybox_image)
        assert images_in_use(root) == set() and snapshots_in_use(root) == set()
        pb("run", "--name", "user", busybox_image, "true")
        assert images_in_use(root) == {image.id}  # a stopped container uses its image too
        assert snapshots_in_use(root) == set(ImageStore(root).snapshots_for(image))
        pb("rm", "user")
        assert images_in_use(root) == set()


def test_a_killed_supervisor_leaves_a_dead_container_that_rm_cleans(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    container_id = pb("run", "-d", "--name", "victim", "-p", f"{free_port()}:80", busybox_image, "sleep", "1000").stdout.strip()
    state = container_state(clean_root, container_id)
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    for _ in range(400):
        if not alive(state["init_pid"]):
            break
        time.sleep(0.05)
    assert table(pb("ps", "-a").stdout)[0]["STATUS"] == "Dead"
    assert pb("rm", "victim").stdout == "victim\n"
    assert_nothing_left(clean_root, (state["supervisor_pid"], state["init_pid"]))


def test_logs_follow_until_the_container_ends(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    pb("run", "-d", "--name", "talker", busybox_image, "sh", "-c", "echo first; sleep 1; echo second >&2; exit 2")
    followed = pb("logs", "-f", "talker")  # returns by itself once the container has ended
    assert (followed.stdout, followed.stderr) == ("first\n", "second\n")
    assert table(pb("ps", "-a").stdout)[0]["STATUS"].startswith("Exited (2) ")
    pb("rm", "talker")


def test_a_killed_client_detaches_and_the_container_goes_on(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    master, slave = os.openpty()
    client = subprocess.Popen(
        pybuild_argv("run", "--name", "attached", "-it", busybox_image, "sh"),
        stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "PYBUILD_ROOT": str(clean_root)}, start_new_session=True,
    )
    os.close(slave)
    try:
        seen = bytearray()
        for _ in range(400):
            if b"# " in seen:  # the shell's prompt: the container runs
                break
            if select.select([master], [], [], 0.05)[0]:
                seen += os.read(master, 65536)
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(master)
    assert table(pb("ps").stdout)[0]["NAMES"] == "attached"
    assert pb("exec", "attached", "echo", "still here").stdout == "still here\n"
    pb("rm", "-f", "attached")


def test_image_users_tell_running_from_stopped(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root
    from pybuild.executors import image_users
    from pybuild.oci import ImageStore

    stopped = pb("run", "--name", "stopped", busybox_image, "true").stdout
    assert stopped == ""
    running = pb("run", "-d", "--name", "running", busybox_image, "sleep", "1000").stdout.strip()
    with Root.open(clean_root) as root:
        image_id = ImageStore(root).get(busybox_image).id
        users = dict(image_users(root)[image_id])
        assert users[running] is True and len(users) == 2
        assert [running_ for cid, running_ in users.items() if cid != running] == [False]
    pb("rm", "-f", "stopped", "running")


def test_rmi_refuses_images_that_containers_use_as_docker_does(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    image_id = pb("inspect", "-f", "{{.Id}}", busybox_image).stdout.strip()
    short = image_id.split(":")[1][:12]
    stopped = pb("run", "-d", "--name", "stopped-user", busybox_image, "true").stdout.strip()
    pb("stop", "stopped-user")

    by_name = pb("rmi", busybox_image, check=False)
    assert by_name.returncode == 1
    assert f'unable to remove repository reference "{busybox_image}" (must force) - container {stopped[:12]} is using its referenced image {short}' in by_name.stderr
    by_id = pb("rmi", short, check=False)
    assert by_id.returncode == 1 and f"(must be forced) - image is being used by stopped container {stopped[:12]}" in by_id.stderr
    assert pb("images", "-q").stdout.split() == [short]  # nothing was removed

    running = pb("run", "-d", "--name", "running-user", busybox_image, "sleep", "1000").stdout.strip()
    forced_id = pb("rmi", "-f", short, check=False)
    assert forced_id.returncode == 1 and f"(cannot be forced) - image is being used by running container {running[:12]}" in forced_id.stderr
    forced_name = pb("rmi", "-f", busybox_image)
    assert forced_name.stdout == f"Untagged: {busybox_image}\n"  # the name goes, the image stays for its container
    assert pb("images", "-q").stdout.split() == [short]
    assert pb("image", "prune", "-a", "-f").stdout == "Total reclaimed space: 0B\n"  # in use: not unused

    pb("rm", "-f", "running-user")
    removed = pb("rmi", "-f", short).stdout  # only a stopped container is left: -f deletes
    assert f"Deleted: {image_id}" in removed
    assert pb("images", "-q").stdout == ""
    pb("rm", "stopped-user")


def test_a_committed_layer_is_sized_as_docker_commit_registers_it(pb, clean_root: Path, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    """`docker commit` registers the container's layer through the layer store's
    Register, so the graph driver's ApplyDiff sizes it (moby
    daemon/images/image_commit.go CommitImage; overlay2's ApplyDiff returns
    pkg/directory's Size): a symlink weighs its target's length, unlike in a
    layer BuildKit built (tests/oci/test_store.py)."""
    pb("run", "--name", "linked", busybox_image, "sh", "-c", "ln -s /0123456789 /x && printf 0123456789 > /ten && ln /ten /tenlink")
    pb("commit", "linked", "linked:1")
    assert pb("history", "-H", "false", "--format", "{{.Size}}", "linked:1").stdout.split()[0] == str(10 + len("/0123456789"))
    pb("rm", "linked")
