"""The container commands' own logic, without running containers: flags, configs, diff, names, ps columns."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.errors import NotFound, PybuildError, UsageError
from pybuild.cli import _commit as commit
from pybuild.cli import _containers as container_flags
from pybuild.cli import _diff as diff
from pybuild.cli import _ps as ps
from pybuild.cli import _run as run
from pybuild.cli._stop import stop_signal
from pybuild.executors import _containers_store as containers
from pybuild.executors._containers import ContainerStatus, RuntimeState

# -- run's flags -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", ("127.0.0.1", 8080, 80, "tcp")),
        ("0.0.0.0:53:53/udp", ("0.0.0.0", 53, 53, "udp")),
        ("[::1]:8443:443/tcp", ("::1", 8443, 443, "tcp")),
    ],
)
def test_publish_specs(text: str, expected: tuple) -> None:  # type: ignore[type-arg]
    assert run.parse_publish(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"), [("80", "HOSTPORT:80"), ("a:b", "HOSTPORT:PORT"), ("70000:80", "1 to 65535"), ("80:80/icmp", "HOSTPORT:PORT")]
)
def test_bad_publish_specs_say_what_to_write(text: str, hint: str) -> None:
    with pytest.raises(UsageError) as caught:
        run.parse_publish(text)
    assert hint in (caught.value.hint or "")


def test_memory_limits() -> None:
    assert run.parse_memory("64m") == 64 << 20 and run.parse_memory("1g") == 1 << 30 and run.parse_memory("8388608") == 8 << 20
    for bad in ("lots", "1m"):
        with pytest.raises(UsageError):
            run.parse_memory(bad)


def _run_args(**overrides: object) -> argparse.Namespace:
    values = {"image": "app:1", "command": [], "detach": False, "interactive": False, "tty": False, "env": [],
              "workdir": None, "user": None, "entrypoint": None}
    values.update(overrides)
    return argparse.Namespace(**values)


IMAGE = {"config": {"Env": ["PATH=/bin", "MODE=image"], "Entrypoint": ["/entry"], "Cmd": ["serve"], "WorkingDir": "/app", "User": "app",
                    "ExposedPorts": {"80/tcp": {}}}}


def test_container_config_is_the_images_with_the_flags_applied() -> None:
    config = run.container_config(IMAGE, _run_args(), "abc", ())
    assert (config["Entrypoint"], config["Cmd"], config["WorkingDir"], config["User"]) == (["/entry"], ["serve"], "/app", "app")
    assert config["Hostname"] == "abc" and config["Image"] == "app:1" and config["Tty"] is False

    os.environ["PYBUILD_TEST_FROM_ENV"] = "yes"
    try:
        args = _run_args(command=["sh"], env=["MODE=run", "PYBUILD_TEST_FROM_ENV", "PYBUILD_TEST_UNSET"], workdir="/w", user="0", tty=True)
        config = run.container_config(IMAGE, args, "abc", (("127.0.0.1", 8080, 8080, "tcp"),))
    finally:
        del os.environ["PYBUILD_TEST_FROM_ENV"]
    assert config["Cmd"] == ["sh"] and config["Entrypoint"] == ["/entry"]
    assert config["Env"] == ["PATH=/bin", "MODE=image", "MODE=run", "PYBUILD_TEST_FROM_ENV=yes"]
    assert (config["WorkingDir"], config["User"], config["Tty"]) == ("/w", "0", True)
    assert config["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}}
    assert IMAGE["config"]["ExposedPorts"] == {"80/tcp": {}}  # the image's config is not touched

    cleared = run.container_config(IMAGE, _run_args(entrypoint=""), "abc", ())
    assert cleared["Entrypoint"] is None and cleared["Cmd"] is None  # docker: a new entrypoint drops the cmd


def test_process_environment_follows_docker() -> None:
    env = containers.process_env({"Env": ["PATH=/custom", "A=1", "A=2"]}, "host1", tty=True, extra=["B=3", "A=4"])
    assert env == ("PATH=/custom", "HOSTNAME=host1", "TERM=xterm", "A=4", "B=3")
    assert containers.process_env({}, "h", tty=False)[0].startswith("PATH=/usr/local/sbin")
    with pytest.raises(UsageError):
        container_flags.env_entries(["=x"], {})


def test_container_names() -> None:
    assert containers.validate_container_name("/web.1_a-b") == "web.1_a-b"
    for bad in ("a", "-web", "we b", "web/x"):
        with pytest.raises(UsageError):
            containers.validate_container_name(bad)


def test_stop_signals() -> None:
    assert stop_signal(None) == signal.SIGTERM and stop_signal("SIGQUIT") == signal.SIGQUIT
    assert stop_signal("quit") == signal.SIGQUIT and stop_signal("9") == 9 and stop_signal("NOPE") == signal.SIGTERM


# -- commit ------------------------------------------------------------------------------


def test_changes_apply_as_docker_commit_does() -> None:
    config = {"Env": ["PATH=/bin", "HOME_DIR=/home/x"], "Cmd": ["old"], "WorkingDir": "/srv"}
    changed = commit.apply_changes(config, [
        "ENV WHERE=$HOME_DIR/data", 'CMD ["run", "it"]', "ENTRYPOINT /start", "EXPOSE 80 53/udp 8000-8001",
        "WORKDIR sub", "USER nobody", "LABEL a=1 b=2", "VOLUME /data", "STOPSIGNAL SIGINT", "ONBUILD RUN make",
    ])
    assert changed["Env"] == ["PATH=/bin", "HOME_DIR=/home/x", "WHERE=/home/x/data"]
    assert changed["Cmd"] == ["run", "it"]  # CMD came with this ENTRYPOINT: kept
    assert changed["Entrypoint"] == ["/bin/sh", "-c", "/start"]
    assert changed["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert (changed["WorkingDir"], changed["User"], changed["StopSignal"]) == ("/srv/sub", "nobody", "SIGINT")
    assert changed["Labels"] == {"a": "1", "b": "2"} and changed["Volumes"] == {"/data": {}} and changed["OnBuild"] == ["RUN make"]
    assert config["Cmd"] == ["old"]  # the input is left as it was
    assert commit.apply_changes(config, ["ENTRYPOINT [\"/e\"]"])["Cmd"] is None


@pytest.mark.parametrize("change", ["RUN make", "FROM other", "CMD a\nCMD b", "COPY a /b", "NOTAKEYWORD x"])
def test_changes_docker_refuses_are_usage_errors(change: str) -> None:
    with pytest.raises(UsageError, match="--change"):
        commit.apply_changes({}, [change])


def _record(**fields: object) -> containers.ContainerRecord:
    values: dict = {"id": "c" * 64, "name": "web", "created": 1.0, "image_id": "sha256:" + "1" * 64, "image_ref": "web:v1",  # type: ignore[type-arg]
                    "snapshots": ("s1",), "config": {"Cmd": ["httpd", "-f"]}, "args": ("httpd", "-f")}
    values.update(fields)
    return containers.ContainerRecord(**values)


def test_child_config_adds_a_layer_and_a_history_entry() -> None:
    base = {"architecture": "amd64", "os": "linux", "comment": "Imported from -", "created": "2020-01-01T00:00:00Z",
            "history": [{"created": "2020-01-01T00:00:00Z", "comment": "Imported from -"}],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:a"]}, "config": {"Cmd": ["sh"]}}
    new = commit.child_config(base, _record(), {"Cmd": ["httpd", "-f"]}, author="Me <me@x>", message="changed page", diff_id="sha256:b")
    assert new["rootfs"]["diff_ids"] == ["sha256:a", "sha256:b"]
    assert new["history"][0] == base["history"][0]
    entry = new["history"][1]
    assert (entry["created_by"], entry["comment"], entry["author"]) == ("httpd -f", "changed page", "Me <me@x>")
    assert "empty_layer" not in entry and entry["created"] == new["created"] and new["created"].endswith("Z")
    assert new["author"] == "Me <me@x>" and new["container"] == "c" * 64 and "comment" not in new
    assert (new["architecture"], new["os"], new["config"]) == ("amd64", "linux", {"Cmd": ["httpd", "-f"]})

    empty = commit.child_config(base, _record(), {}, author="", message="", diff_id=None)
    assert empty["rootfs"]["diff_ids"] == ["sha256:a"] and empty["history"][-1]["empty_layer"] is True
    assert "author" not in empty and "comment" not in empty["history"][-1]


# -- diff --------------------------------------------------------------------------------


@pytest.fixture
def layers(tmp_path: Path, require_root: None) -> tuple[Path, list[Path]]:
    """An upper dir over two image layers (top first), in overlay's format (whiteouts need root)."""
    bottom, top, upper = tmp_path / "bottom", tmp_path / "top", tmp_path / "upper"
    for path in ("etc/skel", "var/lib/old", "opt/app", "usr/bin"):
        (bottom / path).mkdir(parents=True)
    for path in ("etc/passwd", "etc/skel/.profile", "var/lib/old/a", "var/lib/old/b", "opt/app/x", "usr/bin/tool"):
        (bottom / path).write_text("base\n")
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc" / "skel", 0o600 | 0o020000, 0)  # the top image layer deleted /etc/skel
    (top / "etc" / "group").write_text("g\n")
    for path in ("etc", "var/lib/old", "opt/app", "usr/bin", "new"):
        (upper / path).mkdir(parents=True)
    for path in ("etc", "var", "var/lib", "opt", "usr", "usr/bin"):
        st = os.stat(bottom / path if (bottom / path).exists() else top / path)
        os.chmod(upper / path, st.st_mode & 0o7777)
        os.utime(upper / path, ns=(st.st_atime_ns, st.st_mtime_ns))  # copied up unchanged
    (upper / "etc" / "passwd").write_text("changed\n")
    (upper / "etc" / "skel").write_text("a file where the image deleted a directory\n")
    os.mknod(upper / "var" / "lib" / "old" / "a", 0o600 | 0o020000, 0)  # deleted by the container
    os.setxattr(upper / "opt" / "app", "trusted.overlay.opaque", b"y")  # rm -r /opt/app && mkdir /opt/app
    (upper / "opt" / "app" / "y").write_text("new\n")
    (upper / "new" / "file").write_text("new\n")
    os.chmod(upper / "usr" / "bin", 0o700)  # a metadata change
    return upper, [top, bottom]


def test_diff_kinds(layers: tuple[Path, list[Path]]) -> None:
    upper, lowers = layers
    assert diff.layer_changes(upper, lowers) == [
        ("C", "/etc"),
        ("C", "/etc/passwd"),
        ("A", "/etc/skel"),
        ("A", "/new"),
        ("A", "/new/file"),
        ("C", "/opt"),
        ("C", "/opt/app"),
        ("D", "/opt/app/x"),
        ("A", "/opt/app/y"),
        ("C", "/usr"),
        ("C", "/usr/bin"),
        ("C", "/var"),
        ("C", "/var/lib"),
        ("C", "/var/lib/old"),
        ("D", "/var/lib/old/a"),
    ]


def test_an_empty_layer_has_no_changes(tmp_path: Path) -> None:
    (tmp_path / "upper").mkdir()
    assert diff.layer_changes(tmp_path / "upper", [tmp_path]) == []


# -- the store -----------------------------------------------------------------------------


def test_store_finds_containers_by_id_name_and_prefix(tmp_path: Path) -> None:
    with Root.open(tmp_path / "root") as root:
        store = containers.ContainerStore(root)
        one = store.create(_record(id="ab" + "1" * 62, name="first"), [])
        two = store.create(_record(id="ab" + "2" * 62, name="second"), [])
        assert store.get("first") == one and store.get("/second") == two and store.get(two.id) == two
        assert store.get("ab1") == one
        with pytest.raises(PybuildError, match="multiple containers"):
            store.get("ab")
        with pytest.raises(NotFound):
            store.get("third")
        with pytest.raises(PybuildError, match='"/first" is already in use'):
            store.create(_record(id="cd" + "3" * 62, name="first"), [])
        assert not (store.base / ("cd" + "3" * 62)).exists()  # the refused container left nothing
        assert [r.name for r in store.records()] in (["second", "first"], ["first", "second"])
        assert {n for n in os.listdir(one.init_layer)} == {"proc", "dev", "sys", "etc"}
        assert sorted(os.listdir(one.init_layer / "etc")) == ["hostname", "hosts", "resolv.conf"]

        store.remove(one)
        with pytest.raises(NotFound):
            store.get("first")
        again = store.create(_record(id="ef" + "4" * 62, name="first"), [])
        assert store.get("first") == again

        # A name whose container vanished (a crash between the two steps) is free again.
        (store.names / "ghost").symlink_to("0" * 64)
        assert store.create(_record(id="ef" + "5" * 62, name="ghost"), []).name == "ghost"


def test_generated_names_are_free(tmp_path: Path) -> None:
    with Root.open(tmp_path / "root") as root:
        store = containers.ContainerStore(root)
        names = {store.new_name() for _ in range(20)}
        assert all(containers._NAME.match(n) and "_" in n for n in names)


# -- ps ----------------------------------------------------------------------------------------


def _status(status: str, supervised: bool, **fields: object) -> ContainerStatus:
    return ContainerStatus(RuntimeState(status=status, **fields), supervised)  # type: ignore[arg-type]


def test_ps_status_words() -> None:
    now = 1000.0
    assert ps.status_text(_status("running", True, started_at=now - 5), now) == "Up 5 seconds"
    assert ps.status_text(_status("exited", False, exit_code=137, finished_at=now - 120), now) == "Exited (137) 2 minutes ago"
    assert ps.status_text(_status("created", False), now) == "Created"
    assert ps.status_text(_status("created", True), now) == "Created"  # starting
    assert ps.status_text(_status("running", False, started_at=1.0), now) == "Dead"  # its supervisor was killed


def test_ps_ports_and_row() -> None:
    record = _record(
        ports=(containers.PublishedPort("127.0.0.1", 8080, 80), containers.PublishedPort("0.0.0.0", 5353, 53, "udp")),
        config={"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "Labels": {"b": "2", "a": "1"}},
        args=("/docker-entrypoint.sh", "nginx", "-g", "daemon off;"),
    )
    assert ps.ports_text(record) == "0.0.0.0:5353->53/udp, 127.0.0.1:8080->80/tcp, 443/tcp"
    row = ps.row(record, _status("running", True, started_at=10.0), "web:v1", now=20.0, no_trunc=False)
    assert row["Command"] == '"/docker-entrypoint.…"' and row["ID"] == "c" * 12 and row["Status"] == "Up 10 seconds"
    assert row["Labels"] == "a=1,b=2" and row["Networks"] == "bridge"
    assert ps.row(record, _status("exited", False), "x", now=20.0, no_trunc=True)["Ports"] == ""
