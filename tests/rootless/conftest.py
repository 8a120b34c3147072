"""Run pybuild as an ordinary user: the unprivileged users .ci/setup makes.

``pybuild-test`` has subordinate uid/gid ranges in /etc/subuid and /etc/subgid;
``pybuild-nosub`` has none (pybuild falls back to a one-id mapping). The tests
run as root and drop to a user for each pybuild command with ``setpriv`` (its
uid, gid and groups; no capability survives the uid change), with an
environment of its own: HOME, and XDG_DATA_HOME in a fresh directory the user
owns, so the default root ($XDG_DATA_HOME/pybuild) is the one a user gets.

The user must reach the interpreter and the checkout (every parent directory
searchable): when it cannot, the fixture fails naming the directory, instead
of every test failing on a PermissionError deep inside Python.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
TEST_USER = "pybuild-test"
NOSUB_USER = "pybuild-nosub"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The image commands are registered the way tests/integration/test_images_support.py does it.
_MAIN = (
    "import sys\n"
    "from pybuild.cli import main as m\n"
    "for name, module in {'images': '_images', 'tag': '_tag', 'rmi': '_rmi', 'history': '_history',\n"
    "        'inspect': '_inspect', 'save': '_save', 'load': '_load', 'pull': '_pull', 'push': '_push'}.items():\n"
    "    m.COMMANDS.setdefault(name, ('pybuild.cli.' + module, name))\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


@dataclass
class AsUser:
    """One test's view of a user: a private directory it owns and pybuild run as it."""

    account: Account
    dir: Path  # owned by the user, 0700; everything the test gives the user goes here

    @property
    def data_home(self) -> Path:
        return self.dir / "data"

    @property
    def root(self) -> Path:
        """The default root of a non-root pybuild: $XDG_DATA_HOME/pybuild."""
        return self.data_home / "pybuild"

    @property
    def home(self) -> Path:
        """HOME for the test: inside its directory, so what pybuild leaves there is checked and
        removed with it (and other users of the account, such as benchmarks, do not interfere)."""
        return self.dir / "home"

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "HOME": str(self.home), "USER": self.account.name, "LOGNAME": self.account.name,
            "PATH": PATH, "LANG": "C.UTF-8", "XDG_DATA_HOME": str(self.data_home),
            "PYTHONDONTWRITEBYTECODE": "1",
        }  # fmt: skip
        return {**env, **(extra or {})}

    def command(self, *argv: str) -> list[str]:
        return [
            "setpriv", f"--reuid={self.account.uid}", f"--regid={self.account.gid}", "--init-groups", "--", *argv,
        ]  # fmt: skip

    def sh(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command as the user (what the user could do on the host by hand)."""
        result = subprocess.run(
            self.command("/bin/sh", "-c", script), cwd=self.dir, env=self.environment(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"as {self.account.name}: {script} failed ({result.returncode}):\n{result.stderr}")
        return result

    def pybuild(
        self, *args: str, check: bool = True, cwd: Path | None = None, input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """The pybuild CLI as the user, its default root (no PYBUILD_ROOT)."""
        result = subprocess.run(
            self.command(sys.executable, "-c", _MAIN, *args), cwd=cwd or self.dir, env=self.environment(env),
            capture_output=True, input=input, text=True, timeout=600,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"as {self.account.name}: pybuild {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def give(self, source: Path, name: str) -> Path:
        """Copy a file of the test's into the user's directory, owned by the user."""
        target = self.dir / name
        shutil.copyfile(source, target)
        os.chown(target, self.account.uid, self.account.gid)
        return target

    def write(self, relative: str, content: str, mode: int = 0o644) -> Path:
        """A file in the user's directory (parents made), owned by the user."""
        target = self.dir / relative
        for parent in reversed(target.relative_to(self.dir).parents):
            directory = self.dir / parent
            if not directory.exists():
                directory.mkdir()
                os.chown(directory, self.account.uid, self.account.gid)
        target.write_text(content)
        os.chown(target, self.account.uid, self.account.gid)
        os.chmod(target, mode)
        return target


def _account(name: str) -> Account:
    from .._peers import STRICT_VARIABLE, strict

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        reason = f"no user {name!r}: .ci/setup creates the rootless test users (run it as root)"
        if strict():
            pytest.fail(f"{reason} ({STRICT_VARIABLE} is set)", pytrace=False)
        pytest.skip(reason)
    return Account(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _searchable_by(account: Account, path: Path) -> bool:
    result = subprocess.run(
        ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups", "--", "test", "-x", str(path)],
        capture_output=True,
    )  # fmt: skip
    return result.returncode == 0


def unreachable_reason(account: Account, targets: tuple[tuple[str, Path], ...] | None = None) -> str | None:
    """Why the user cannot run this checkout's pybuild, naming the closed directory, or None."""
    for what, target in targets or (("the interpreter", Path(sys.executable).resolve()), ("the checkout", REPO)):
        walked = Path("/")
        for part in target.parent.parts[1:] + ((target.name,) if target.is_dir() else ()):
            walked = walked / part
            if not _searchable_by(account, walked):
                info = os.stat(walked)
                return (
                    f"{account.name} cannot reach {what} {target}: {walked} is {stat.filemode(info.st_mode)} "
                    f"owned by uid {info.st_uid}; make the checkout and venv readable by others (CI clones "
                    f"under /tmp), or let the user search that directory: setfacl -m u:{account.name}:x {walked}"
                )
    if targets is not None:
        return None
    probe = subprocess.run(
        ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups", "--",
         sys.executable, "-c", "import pybuild.cli.main"],
        cwd="/", env={"PATH": PATH, "HOME": account.home}, capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{account.name} cannot import pybuild from {REPO}: {last}"
    return None


def _usable_account(name: str) -> Account:
    account = _account(name)
    reason = unreachable_reason(account)
    if reason:
        pytest.fail(reason, pytrace=False)
    return account


@pytest.fixture(scope="session")
def test_account() -> Account:
    return _usable_account(TEST_USER)


@pytest.fixture(scope="session")
def nosub_account() -> Account:
    return _usable_account(NOSUB_USER)


def _private_dir(account: Account) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the rootless tests run as root and drop to a test user (setpriv)")
    path = Path(tempfile.mkdtemp(prefix=f"{account.name}-", dir="/tmp"))
    (path / "home").mkdir()
    for owned in (path, path / "home"):
        os.chown(owned, account.uid, account.gid)
    try:
        yield path
    finally:
        _remove(path)


def _remove_containers(user: AsUser) -> None:
    """Containers a failed test left running would outlive it as the user's processes."""
    if not (user.root / "containers").is_dir():
        return
    left = user.pybuild("ps", "-a", "-q", check=False).stdout.split()
    if left:
        user.pybuild("rm", "-f", *left, check=False)


def _remove(path: Path) -> None:
    """The user's directory, whatever ids its snapshots hold (root removes any)."""
    with open("/proc/self/mountinfo") as mounts:
        under = [line.split()[4] for line in mounts if line.split()[4].startswith(str(path) + "/")]
    for mountpoint in sorted(under, reverse=True):  # a host mount left behind would be a bug, but clean up
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def user(test_account: Account) -> Iterator[AsUser]:
    """pybuild-test (with subordinate ranges), a fresh directory and default root of its own."""
    for path in _private_dir(test_account):
        user = AsUser(test_account, path)
        try:
            yield user
        finally:
            _remove_containers(user)


@pytest.fixture
def nosub_user(nosub_account: Account) -> Iterator[AsUser]:
    """pybuild-nosub (no subordinate ranges), a fresh directory and default root of its own."""
    for path in _private_dir(nosub_account):
        user = AsUser(nosub_account, path)
        try:
            yield user
        finally:
            _remove_containers(user)


@pytest.fixture
def user_busybox(user: AsUser, busybox_tar: Path) -> str:
    """busybox:latest imported by the user into its default root."""
    tar = user.give(busybox_tar, "busybox.tar")
    user.pybuild("import", str(tar), "busybox:latest")
    return "busybox:latest"


# -- reading what the user made ------------------------------------------------------------


@dataclass(frozen=True)
class SavedFile:
    uid: int
    gid: int
    mode: int
    data: bytes


def saved_image(archive: Path) -> tuple[dict[str, SavedFile], bytes]:
    """The files of a `pybuild save` archive's image (layers applied in order, whiteouts
    honoured) as the layers record them, and every byte of the archive (to look for secrets)."""
    import json
    import tarfile

    files: dict[str, SavedFile] = {}
    with tarfile.open(archive) as outer:
        everything = archive.read_bytes()
        (entry,) = json.loads(outer.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for layer in entry["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as tar:  # type: ignore[arg-type]
                for member in tar:
                    name = "/" + member.name.lstrip("./").rstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base == ".wh..wh..opq":
                        parent = name.rsplit("/", 1)[0]
                        files = {k: v for k, v in files.items() if not k.startswith(parent + "/")}
                        continue
                    if base.startswith(".wh."):
                        gone = name.rsplit("/", 1)[0] + "/" + base.removeprefix(".wh.")
                        files = {k: v for k, v in files.items() if k != gone and not k.startswith(gone + "/")}
                        continue
                    data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
                    everything += data
                    files[name] = SavedFile(member.uid, member.gid, member.mode, data)
    return files, everything


def subordinate_range(name: str) -> range | None:
    """The user's first subordinate uid range in /etc/subuid, or None."""
    with open("/etc/subuid") as f:
        for line in f:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == name:
                return range(int(fields[1]), int(fields[1]) + int(fields[2]))
    return None


def files_owned_by(top: Path, ids: range) -> list[Path]:
    """Every path under `top` (not following links, not crossing mounts) whose uid is in `ids`."""
    found = []
    for directory, dirs, names in os.walk(top):
        for name in dirs + names:
            path = Path(directory) / name
            try:
                if os.lstat(path).st_uid in ids:
                    found.append(path)
            except FileNotFoundError:
                continue
    return found
