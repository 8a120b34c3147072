"""Containers' bookkeeping: where they live, their names, what they were made from.

    <root>/containers/
        .lock               flock held while a name is taken or given back
        names/<name>        symlink to the container's ID: a name is taken by creating it
        <id>/config.json    what the container was made from and runs (written once)
        <id>/init/          the init layer: the sandbox's mount points (see ``make_init_layer``)
        <id>/upper/         the container's layer (overlay upper-dir format), ``work/`` beside it
        <id>/...            the runtime's files: state, lock, log (``_containers``)

A container is the image's layers (snapshots, as the image store keeps them),
an init layer on top and its own upper directory: what ``diff`` compares and
``commit`` turns into a layer.  The container's config is Docker's: the
image's config with ``run``'s flags applied, kept for ``exec`` (environment,
user, working directory) and ``commit`` (the committed image's config).

Creation happens in a hidden directory renamed into place, then the name is
claimed under the lock, so a crash leaves either nothing or a whole
container; a name link whose container is gone is stale and taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pybuild.errors import NotFound, PybuildError, UsageError

from ._sandbox import DEFAULT_PATH

CONTAINERS = "containers"
NAMES = "names"
CONFIG = "config.json"

_ID = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

# Mount points the sandbox puts on every container: made in the init layer,
# so they never appear in the container's own layer (as Docker's "-init" layer does).
_INIT_DIRECTORIES = ("proc", "dev", "sys")
_INIT_FILES = ("etc/hosts", "etc/resolv.conf", "etc/hostname")

# Names for containers run without --name: adjective_surname, as Docker names them.
_ADJECTIVES = (
    "agile", "bold", "brave", "bright", "calm", "clever", "curious", "daring", "eager", "fervent",
    "gentle", "happy", "humble", "jolly", "keen", "kind", "lively", "lucid", "merry", "modest",
    "nimble", "patient", "plucky", "proud", "quiet", "quirky", "serene", "sharp", "steady", "swift",
    "tender", "upbeat", "vivid", "warm", "wise", "witty", "zealous", "zen",
)
_SURNAMES = (
    "babbage", "bohr", "cori", "curie", "darwin", "dijkstra", "euler", "faraday", "feynman", "franklin",
    "gauss", "goodall", "hamilton", "hopper", "hypatia", "johnson", "kepler", "knuth", "lamarr", "liskov",
    "lovelace", "meitner", "noether", "pascal", "ramanujan", "ritchie", "shannon", "somerville", "tesla",
    "thompson", "turing", "wozniak", "yalow",
)


@dataclass(frozen=True)
class PublishedPort:
    """``-p host_ip:host_port:container_port/protocol``: a published port."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class ContainerRecord:
    """One container as ``config.json`` describes it.

    ``snapshots`` are the image's layers, top first; ``config`` is Docker's
    container config (``Env``, ``Cmd``, ``Entrypoint``, ``WorkingDir``,
    ``User``, ``Tty``, ``OpenStdin``, ``ExposedPorts``, ``Labels`` ...);
    ``args`` the command it runs (entrypoint then cmd).
    """

    id: str
    name: str
    created: float
    image_id: str
    image_ref: str
    snapshots: tuple[str, ...]
    config: Mapping[str, Any]
    args: tuple[str, ...]
    network: str = "default"
    ports: tuple[PublishedPort, ...] = ()
    auto_remove: bool = False
    memory: int | None = None
    # --security-opt: the seccomp profile ("default", "unconfined" or its JSON text, as
    # Docker keeps it) and no-new-privileges; `exec` enters with the same
    seccomp: str = "default"
    no_new_privileges: bool = False
    directory: Path = field(default=Path("."), compare=False)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def init_layer(self) -> Path:
        return self.directory / "init"

    @property
    def cgroup_name(self) -> str:
        """Its cgroups' name in every hierarchy (under pybuild/)."""
        return f"container-{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "created": self.created, "image_id": self.image_id,
            "image_ref": self.image_ref, "snapshots": list(self.snapshots), "config": dict(self.config),
            "args": list(self.args), "network": self.network, "auto_remove": self.auto_remove, "memory": self.memory,
            "ports": [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in self.ports],
            "seccomp": self.seccomp, "no_new_privileges": self.no_new_privileges,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], directory: Path) -> ContainerRecord:
        return cls(
            id=data["id"], name=data["name"], created=float(data["created"]), image_id=data["image_id"],
            image_ref=data.get("image_ref", ""), snapshots=tuple(data.get("snapshots", ())), config=data.get("config", {}),
            args=tuple(data.get("args", ())), network=data.get("network", "default"),
            ports=tuple(PublishedPort(str(p[0]), int(p[1]), int(p[2]), str(p[3])) for p in data.get("ports", ())),
            auto_remove=bool(data.get("auto_remove")), memory=data.get("memory"),
            seccomp=str(data.get("seccomp", "default")), no_new_privileges=bool(data.get("no_new_privileges")), directory=directory,
        )


class PybuildRoot(Protocol):
    """What the container store needs of the pybuild root (cache's ``Root``, which
    executors may not import): where it is."""

    @property
    def path(self) -> Path: ...


class ContainerStore:
    """The containers of one pybuild root."""

    def __init__(self, root: PybuildRoot) -> None:
        self.root = root
        self.base = Path(root.path) / CONTAINERS
        self.names = self.base / NAMES
        os.makedirs(self.names, 0o700, exist_ok=True)

    # -- finding -----------------------------------------------------------------

    def get(self, name_or_id: str) -> ContainerRecord:
        """A container by full ID, name or unique ID prefix (Docker's order)."""
        text = name_or_id.strip().removeprefix("/")
        if _ID.match(text):
            record = self._load(text)
            if record is not None:
                return record
        if _NAME.match(text):
            target = self._name_target(text)
            if target is not None:
                record = self._load(target)
                if record is not None:
                    return record
        if re.fullmatch(r"[0-9a-f]+", text):
            matches = [i for i in self._ids() if i.startswith(text)]
            if len(matches) > 1:
                raise PybuildError(f"multiple containers match the ID prefix {text!r}", hint="give more of the ID, or the name")
            if matches:
                record = self._load(matches[0])
                if record is not None:
                    return record
        raise NotFound(f"no such container: {name_or_id}", hint="pybuild ps -a lists the containers")

    def records(self) -> list[ContainerRecord]:
        """Every container, newest first."""
        records = [r for r in (self._load(i) for i in self._ids()) if r is not None]
        return sorted(records, key=lambda r: (r.created, r.id), reverse=True)

    def _ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.base) if _ID.match(n)]
        except FileNotFoundError:
            return []

    def _load(self, container_id: str) -> ContainerRecord | None:
        directory = self.base / container_id
        try:
            data = json.loads((directory / CONFIG).read_bytes())
        except (OSError, ValueError):
            return None
        return ContainerRecord.from_json(data, directory)

    def _name_target(self, name: str) -> str | None:
        try:
            return os.readlink(self.names / name)
        except OSError:
            return None

    # -- making ------------------------------------------------------------------

    def create(self, record: ContainerRecord, lowers: Sequence[Path]) -> ContainerRecord:
        """Make the container's directory (init layer from ``lowers``, top first) and claim its name."""
        staging = self.base / f".new-{record.id}"
        try:
            staging.mkdir(0o700)
            for name in ("upper", "work", "init"):
                (staging / name).mkdir(0o755 if name != "work" else 0o700)
            make_init_layer(staging / "init", lowers)
            (staging / CONFIG).write_text(json.dumps(record.to_json(), sort_keys=True))
            os.rename(staging, self.base / record.id)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise PybuildError(f"cannot create the container: {error.strerror}", hint=f"check that {self.base} is writable") from None
        placed = ContainerRecord.from_json(record.to_json(), self.base / record.id)
        try:
            self._claim(record.name, record.id)
        except BaseException:
            shutil.rmtree(placed.directory, ignore_errors=True)
            raise
        return placed

    def new_name(self) -> str:
        """A free generated name (adjective_surname)."""
        for attempt in range(100):
            name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"
            if attempt > 10:
                name += str(secrets.randbelow(100))
            if self._name_target(name) is None:
                return name
        return f"container_{secrets.token_hex(4)}"

    @contextlib.contextmanager
    def _names_locked(self) -> Iterator[None]:
        fd = os.open(self.base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _claim(self, name: str, container_id: str) -> None:
        link = self.names / name
        with self._names_locked():
            holder = self._name_target(name)
            if holder is not None:
                if (self.base / holder / CONFIG).exists():
                    raise PybuildError(
                        f'the container name "/{name}" is already in use by container "{holder}"',
                        hint="remove (or rename) that container to be able to reuse that name",
                    )
                os.unlink(link)  # its container is gone (a crash between the two steps)
            os.symlink(container_id, link)

    def name_link(self, record: ContainerRecord) -> Path:
        return self.names / record.name

    # -- removing ------------------------------------------------------------------

    def remove(self, record: ContainerRecord) -> None:
        """Give the name back, then make the directory vanish at once and delete it."""
        with self._names_locked():
            if self._name_target(record.name) == record.id:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.names / record.name)
        trash = self.base / f".removing-{record.id}-{secrets.token_hex(4)}"
        try:
            os.rename(record.directory, trash)
        except FileNotFoundError:
            return  # removed meanwhile (run --rm's supervisor)
        shutil.rmtree(trash, ignore_errors=True)


def validate_container_name(name: str) -> str:
    name = name.removeprefix("/")
    if not _NAME.match(name):
        raise UsageError(f"invalid container name {name!r}", hint="only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least two characters")
    return name


def new_container_id() -> str:
    return secrets.token_hex(32)


def make_init_layer(directory: Path, lowers: Sequence[Path]) -> None:
    """The mount points the sandbox binds over, as a layer below the container's own.

    Without it the sandbox would create missing ones in the container's
    layer, where ``diff`` and ``commit`` would see them.  Directories that
    the image has keep its owner, mode and times, so the merged view looks
    as the image does.
    """
    for relative in (*_INIT_DIRECTORIES, *(os.path.dirname(f) for f in _INIT_FILES)):
        path = directory / relative
        path.mkdir(parents=True, exist_ok=True)
        _copy_metadata_from_image(path, relative, lowers)
    for relative in _INIT_FILES:
        (directory / relative).touch(0o644)


def _copy_metadata_from_image(path: Path, relative: str, lowers: Sequence[Path]) -> None:
    for layer in lowers:
        candidate = layer / relative
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return  # a whiteout or a file hides it: the directory is new
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return


def images_in_use(root: PybuildRoot) -> set[str]:
    """IDs of the images that existing containers (running or not) were made from.

    ``rmi`` refuses to remove these without ``-f``, as Docker does.
    """
    return {record.image_id for record in ContainerStore(root).records()}


def image_users(root: PybuildRoot) -> dict[str, list[tuple[str, bool]]]:
    """Image ID -> (container ID, running?) of each container made from it, for ``rmi``'s messages.

    Docker refuses to delete an image a running container uses even with
    ``-f`` ("cannot be forced"), and one a stopped container uses only
    without it ("must be forced").
    """
    from ._containers_state import supervised

    users: dict[str, list[tuple[str, bool]]] = {}
    for record in ContainerStore(root).records():
        users.setdefault(record.image_id, []).append((record.id, supervised(str(record.directory))))
    return users


def snapshots_in_use(root: PybuildRoot) -> set[str]:
    """Snapshot IDs the containers' layers sit on: ``prune`` must keep them."""
    return {snapshot for record in ContainerStore(root).records() for snapshot in record.snapshots}


def process_env(config: Mapping[str, Any], hostname: str, *, tty: bool, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The environment a container's process gets, as Docker builds it.

    A default PATH, ``HOSTNAME`` and (with a tty) ``TERM=xterm`` come first,
    so the container's own ``Env`` (the image's, with ``run -e``) and then
    ``extra`` (``exec -e``) override them.
    """
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if tty:
        env.append("TERM=xterm")
    merged: dict[str, str] = {}
    for entry in [*env, *(config.get("Env") or []), *extra]:
        key, _, value = entry.partition("=")
        merged[key] = value  # a later value replaces an earlier one in its place
    return tuple(f"{k}={v}" for k, v in merged.items())
