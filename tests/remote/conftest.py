"""A real REAPI cluster for tests/remote: PostgreSQL (Debian's) and BuildGrid 0.4.4 (from
``build/buildgrid-venv``, which ``.ci/setup`` creates), started once per session.

``postgres`` runs ``initdb`` and the server (stopped with ``pg_ctl``) in a temporary directory
as the ``postgres`` OS user (PostgreSQL refuses root), listening on 127.0.0.1 on a free port
and a unix socket in that directory; both servers die with the test process if it is killed; ``buildgrid`` applies BuildGrid's migrations to a fresh database, writes a config
(insecure channel, no authorization, a disk CAS in a temporary directory, an action cache that
accepts updates, the SQL scheduler matching ``OSFamily``, ``ISA`` and ``pybuild-sandbox``,
bot sessions that expire within seconds so a killed worker's lease is re-queued quickly), starts
``bgd server start`` and waits until Capabilities answers. Both are stopped and removed at
the end. Without BuildGrid's virtualenv, PostgreSQL or the ``pybuild[remote]`` extra the tests
skip, and fail under ``PYBUILD_TEST_STRICT`` (CI), naming what to install.

``start_buildgrid`` is open to tests that need a server of their own (to stop it): each gets
its own database on the session's PostgreSQL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from .._peers import STRICT_VARIABLE, strict

REPO = Path(__file__).resolve().parents[2]
BUILDGRID_VENV = REPO / "build" / "buildgrid-venv"
BGD = BUILDGRID_VENV / "bin" / "bgd"
POSTGRES_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
MATCH_PROPERTY_KEYS = ("OSFamily", "ISA", "pybuild-sandbox")
# BuildGrid gives no lease when a bot's wait would be under 3 s (its NETWORK_TIMEOUT) and
# waits up to 0.8 x the keepalive: 5 s keeps bots' long polls short and lets a killed
# worker's session expire (and its lease be re-queued) within ~6 s.
BOT_KEEPALIVE_SECONDS = 5
SESSION_EXPIRY_INTERVAL_SECONDS = 1.0
# BuildGrid's assigner hands queued Actions to bots by polling PostgreSQL every interval
# (default 1-2 s, which alone would exceed the per-step overhead goal); a queued step waits
# half of it on average: 20 ms cost ~15 ms less per remote step than 50 ms, for ~5% of a
# core more while idle (10 ms: ~13% of a core idle); a job no bot could take waits
# failure-backoff before it is tried again.
ASSIGN_INTERVAL_SECONDS = 0.02
START_TIMEOUT_SECONDS = 90.0
NAMED_INSTANCE = "main/cas"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under PYBUILD_TEST_STRICT where .ci/setup has installed everything."""
    if strict():
        pytest.fail(f"{reason} ({STRICT_VARIABLE} is set; run .ci/setup)", pytrace=False)
    pytest.skip(f"{reason} (run .ci/setup)")


def require_remote_extra() -> None:
    if importlib.util.find_spec("grpc") is None or importlib.util.find_spec("buildgrid.common") is None:
        unavailable("the optional extra pybuild[remote] (grpcio, buildgrid-common) is not installed in .venv")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Postgres:
    port: int
    directory: Path
    bindir: Path
    user: str | None  # the OS user the server runs as (None: this process's)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://bgd@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, cwd=self.directory, timeout=120)

    def create_database(self, name: str, template: str | None = None) -> str:
        copy = ["-T", template] if template else []
        done = self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "bgd", *copy, name)
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name}: {done.stderr.strip()}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = next((d for d in POSTGRES_BINDIRS if (d / "initdb").exists()), None)
    if bindir is None:
        unavailable("PostgreSQL's initdb is missing (apt-get install postgresql)")
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        try:
            owner = pwd.getpwnam(user)
        except KeyError:
            unavailable("there is no postgres OS user to run PostgreSQL as (apt-get install postgresql)")
    # Not under pytest's tmp_path: that is private to root, and PostgreSQL runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="pybuild-postgres-"))
    if user is not None:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    server = Postgres(port=free_port(), directory=directory, bindir=bindir, user=user)
    data = directory / "data"
    try:
        done = server.run("initdb", "-D", str(data), "-A", "trust", "-U", "bgd", "--no-sync", "-E", "UTF8")
        if done.returncode != 0:
            pytest.fail(f"initdb failed: {done.stderr.strip()[-2000:]}", pytrace=False)
        postmaster = _start_postmaster(server, data)
        try:
            yield server
        finally:
            server.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            _reap(postmaster)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _start_postmaster(server: Postgres, data: Path) -> subprocess.Popen[bytes]:
    """PostgreSQL in the foreground, as a child that dies with this process (``setpriv
    --pdeathsig``: a killed test run leaves no server behind, which ``pg_ctl start`` would)."""
    command = [str(server.bindir / "postgres"), "-D", str(data), "-k", str(server.directory), "-p", str(server.port),
               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
    identity = ["--reuid", server.user, "--regid", server.user, "--init-groups"] if server.user else []
    with open(server.directory / "log", "wb") as log:
        postmaster = subprocess.Popen(
            ["setpriv", *identity, "--pdeathsig", "SIGQUIT", "--", *command],
            stdout=log, stderr=subprocess.STDOUT, cwd=server.directory, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while server.run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(server.port)).returncode != 0:
        if postmaster.poll() is not None or time.monotonic() > deadline:
            _reap(postmaster)
            log_text = (server.directory / "log").read_text(errors="replace")[-2000:]
            pytest.fail(f"PostgreSQL did not start:\n{log_text}", pytrace=False)
        time.sleep(0.1)
    return postmaster


def _reap(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    if process.poll() is None:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@dataclass(frozen=True)
class BuildGrid:
    url: str  # grpc://127.0.0.1:PORT
    port: int
    cas_dir: Path  # the disk CAS: tests search it for what must never be there
    directory: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def buildgrid_config(port: int, database_url: str, cas_dir: Path) -> str:
    """BuildGrid's YAML for one instance (name ''), from the facts of issue 19."""
    keys = "\n".join(f"          - {key}" for key in MATCH_PROPERTY_KEYS)
    return f"""\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
connections:
  - !sql-connection &sql
    connection-string: {database_url}
    pool-size: 10
    max-overflow: 20
storages:
  - !disk-storage &cas
    path: {cas_dir}
caches:
  - !lru-action-cache &action-cache
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *action-cache
    bot-session-keepalive-timeout: {BOT_KEEPALIVE_SECONDS}
    session-expiry-timer-interval: {SESSION_EXPIRY_INTERVAL_SECONDS}
    property-set: !dynamic-property-set
        match-property-keys:
{keys}
    assigners:
      - !priority-age-assigner
        interval: {ASSIGN_INTERVAL_SECONDS}
        jitter-factor: {ASSIGN_INTERVAL_SECONDS / 5}
        failure-backoff: {ASSIGN_INTERVAL_SECONDS * 4}
        bot-assignment-strategy: !assign-by-locality {{}}
instances:
  - name: ''
    services:
      - !action-cache
        cache: *action-cache
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
  - name: {NAMED_INSTANCE}  # CAS and action cache only: resource names with an instance prefix
    services:
      - !action-cache
        cache: *action-cache
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
thread-pool-size: 40
"""


_databases = itertools.count()
_templates: dict[int, str] = {}  # postgres port -> a database BuildGrid's migrations were applied to


def _migrated_template(postgres: Postgres, env: dict[str, str]) -> str:
    """A database with BuildGrid's schema, made once per PostgreSQL: each server's database is
    a copy (CREATE DATABASE ... TEMPLATE), which saves a `bgd migrate` run (seconds) per server."""
    if postgres.port not in _templates:
        name = f"bgd_template_{os.getpid()}"
        url = postgres.create_database(name)
        migrated = subprocess.run([str(BGD), "migrate", "apply", url], capture_output=True, text=True, env=env, timeout=300)
        if migrated.returncode != 0:
            pytest.fail(f"bgd migrate apply failed: {migrated.stderr.strip()[-2000:]}", pytrace=False)
        _templates[postgres.port] = name
    return _templates[postgres.port]


@contextlib.contextmanager
def start_buildgrid(postgres: Postgres, directory: Path) -> Iterator[BuildGrid]:
    """A BuildGrid server on a fresh database of ``postgres``, its CAS and log in ``directory``."""
    require_remote_extra()
    if not BGD.exists():
        unavailable(f"BuildGrid is not installed in {BUILDGRID_VENV.relative_to(REPO)}")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    database_url = postgres.create_database(f"bgd{os.getpid()}_{next(_databases)}", template=_migrated_template(postgres, env))
    cas_dir = directory / "cas"
    cas_dir.mkdir(parents=True)
    port = free_port()
    config = directory / "buildgrid.yml"
    config.write_text(buildgrid_config(port, database_url, cas_dir))
    log = directory / "bgd.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["setpriv", "--pdeathsig", "SIGKILL", "--", str(BGD), "server", "start", str(config)],  # dies with us
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=directory,
            start_new_session=True,  # its own process group: stop() ends its threads' children too
        )
    server = BuildGrid(f"grpc://127.0.0.1:{port}", port, cas_dir, directory, log, process)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        server.stop()


def _wait_until_serving(server: BuildGrid) -> None:
    from pybuild import reapi

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    endpoint = reapi.parse_endpoint(server.url)
    with reapi.Remote.connect(endpoint, connect_timeout=1.0) as remote:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"bgd server exited with {server.process.returncode}:\n{server.log_tail()}", pytrace=False)
            try:
                remote.capabilities()
                return
            except reapi.RemoteError:
                if time.monotonic() > deadline:
                    pytest.fail(f"bgd server did not answer in {START_TIMEOUT_SECONDS:.0f} s:\n{server.log_tail()}", pytrace=False)
                time.sleep(0.2)


@pytest.fixture(scope="session")
def buildgrid(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildGrid]:
    """The session's BuildGrid server (instance ''), shared by tests/remote."""
    with start_buildgrid(postgres, tmp_path_factory.mktemp("buildgrid")) as server:
        yield server


@pytest.fixture
def buildgrid_cas(buildgrid: BuildGrid) -> Path:
    """The directory of the session server's disk CAS (every blob any test sent is in it)."""
    return buildgrid.cas_dir
