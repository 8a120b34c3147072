"""``pybuild build``'s fast path: a rebuild with nothing to do, answered from a record.

After a build that succeeded, ``_fastpath_record`` writes down what it depended
on and what it printed (``<root>/fastpath/<key>.rec``): the invocation (argv, the
working directory, the environment variables a build reads), an lstat signature
of every context path the build read (and of pybuild's own sources), the bytes of
the Dockerfile and ignore files, the store files the result stands on (the image
records and tags, the snapshots and blobs, the index and its generation, which
every prune, rmi or untag changes) and the progress text and final lines a build
with nothing to do prints.

``answer`` runs first in ``pybuild build``, before anything heavy is imported.
When every signature still matches, it prints what the build would print, writes
``--iidfile``/``--metadata-file`` and exits 0.  A signature that changed while the
path kept its type, mode and size (``touch``, a checkout, an editor's save) is
judged by content: the file's sha256, a directory's names, a symlink's target
against those the build hashed; so is any path changed within a second of the
record ("racy", git's rule: a rewrite in the same clock tick may keep its
signature).  Equal content means the build would be all CACHED with the same
image (cache keys ignore times), so the record answers and is refreshed.
Anything else -- no record, a damaged one, one path that differs -- returns None
and the normal build runs, which stays the only judge.

The files it read by content whose stat keys the context hasher would trust
(``Settled``) go to the hasher's stat cache (``remember_digests``): the next
build that misses (one file changed after a ``touch`` of all) reads only that one.

This module imports nothing beyond the interpreter's built-ins at start-up:
``hashlib`` only when content must be compared, ``pybuild.cache`` (and sqlite)
only when files were read by content.  ``PYBUILD_FASTPATH=0`` turns it
off; ``PYBUILD_DEBUG_FASTPATH=1`` says on stderr whether it answered and why not.
"""

from __future__ import annotations

import os
import sys
import zlib
from array import array

from pybuild import __version__

TYPE_CHECKING = False  # typing is not imported at start-up
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    _Suspect = tuple[bytes, tuple[int, ...], tuple[int, ...], bytes]  # path, recorded signature, now, kind + digest
    StatKey = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns: the context hasher's
    StatRow = tuple[StatKey, bytes]  # a file's stat key and the sha256 of its bytes

MAGIC = b"pybuild-fastpath/1\n"
DISABLE_ENV = "PYBUILD_FASTPATH"
DEBUG_ENV = "PYBUILD_DEBUG_FASTPATH"
# Changes closer than this to a signature are checked by content ("racy", as git says); a ctime
# with digits below the millisecond (a file system keeping nanoseconds) needs only the fine
# window: a later change's ctime is at least the start less one coarse clock tick (10 ms at
# most).  The context hasher's rule (pybuild.cache's settled_before), which decides which files
# a build reads: a file it knows by its stat alone must not be racy here, since the record
# then has no content to check it by.
RACY_WINDOW_NS = 1_000_000_000
FINE_RACY_WINDOW_NS = 50_000_000
# the variables a build reads besides PYBUILD_* and the values of `--build-arg NAME`
KEY_ENV = ("SOURCE_DATE_EPOCH", "HOME", "XDG_DATA_HOME", "DOCKER_CONFIG")
SIG_FIELDS = 6  # dev, ino, size, mtime_ns, ctime_ns, mode
SAME_FIELDS = 3  # dev, ino, file type
NO_CONTENT, FILE, DIRECTORY, SYMLINK = 0, 1, 2, 3  # what a path's content digest is of
_DIGEST = 32
_WHOLE_READ = 16 << 20  # files below this are read in one call; bigger ones in pieces of it
_S_IFMT = 0o170000
_HOST_XATTRS = ("security.selinux",)  # not content (the hasher ignores it too)
_KIND_TYPES = {1: 0o100000, 2: 0o040000, 3: 0o120000}  # FILE, DIRECTORY, SYMLINK: the file type each is of


class Miss(Exception):
    """The record does not answer this build (the reason is the message)."""


def answer(argv: Sequence[str]) -> int | None:
    """0 when the record answered ``pybuild build ARGV`` (all printed and written); None: build."""
    if os.environ.get(DISABLE_ENV) == "0":
        return None
    try:
        try:
            record, refresh = _checked(list(argv))
            events = _events(record)  # all read before anything is written or printed
            _write_files(record, list(argv))  # the one step that may still fail: nothing is printed before it
        except Exception as error:  # noqa: BLE001 - whatever goes wrong here, the normal build decides
            debug(f"miss: {error}" if isinstance(error, Miss) else f"miss: {type(error).__name__}: {error}")
            return None
        try:
            _print(record, events)
        except BrokenPipeError:  # the reader went away, as main says it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        refresh()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    debug("hit")
    return 0


def debug(text: str) -> None:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        sys.stderr.write(f"pybuild fastpath: {text}\n")
        sys.stderr.flush()


# -- the invocation -----------------------------------------------------------


class Invocation:
    """The command line as the fast path saw it, before anything else ran (and before
    a rootless pybuild entered its user namespace): a record is keyed by this."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.started_ns = _time_ns()  # before the build read anything (its ignore file first)
        self.argv = list(argv)
        self.root = root_path(self.argv)
        # a build with --no-cache answers the same command without it next time: its
        # steps are all in the cache then, with this build's result
        self.rebuild_argv = [word for word in self.argv if word != "--no-cache"]
        self.rebuild_key = invocation_key(self.rebuild_argv)


def build_arg_env_names(argv: Sequence[str]) -> list[str]:
    """The ``--build-arg NAME`` values given without ``=`` (taken from the environment)."""
    names = []
    i = 0
    while i < len(argv):
        word = argv[i]
        value = None
        if word == "--build-arg" and i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        elif word.startswith("--build-arg="):
            value = word[len("--build-arg=") :]
        if value is not None and "=" not in value:
            names.append(value)
        i += 1
    return names


def invocation_key(argv: Sequence[str]) -> bytes:
    """Everything outside the context a build's result or output may depend on, as bytes."""
    env = sorted(name for name in os.environ if name.startswith("PYBUILD_") and name not in (DISABLE_ENV, DEBUG_ENV))
    env += [*KEY_ENV, *build_arg_env_names(argv)]
    parts = [
        MAGIC, __version__.encode(), sys.version.encode(), os.fsencode(os.getcwd()),
        b"%d:%d:%d" % (os.geteuid(), os.getegid(), _stderr_is_tty()),
        b"\1".join(os.fsencode(word) for word in argv),
        b"\1".join(os.fsencode(f"{name}={os.environ[name]}" if name in os.environ else name) for name in env),
    ]
    return b"\0".join(parts)


def _stderr_is_tty() -> bool:
    """Whether the build's display would be the live view (``--progress=auto``)."""
    return sys.stderr is not None and sys.stderr.isatty()


def root_path(argv: Sequence[str]) -> str:
    """The pybuild root the build will use: ``--root``, ``$PYBUILD_ROOT`` or the default
    (as ``cache.default_root_path``; a disagreement only means the record is not found)."""
    chosen = None
    for i, word in enumerate(argv):
        if word == "--root" and i + 1 < len(argv):
            chosen = argv[i + 1]
        elif word.startswith("--root="):
            chosen = word[len("--root=") :]
    if not chosen:
        chosen = os.environ.get("PYBUILD_ROOT")
    if not chosen:
        if os.geteuid() == 0 and not os.environ.get("PYBUILD_ROOTLESS"):
            chosen = "/var/lib/pybuild"
        else:
            data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
            chosen = os.path.join(data_home, "pybuild")
    return os.path.join(os.getcwd(), chosen)


def record_path(root: str, key: bytes) -> str:
    return os.path.join(root, "fastpath", "%08x%08x.rec" % (zlib.crc32(key), zlib.adler32(key)))


# A served build answers its client before it writes its record (cli/_answer), holding an
# exclusive flock on the record's ``.lock`` file until the record is written: a rebuild run
# right after it waits that long (at most WRITER_WAIT) rather than miss a record on its way.
WRITER_WAIT = 3.0  # seconds
LOCK_SUFFIX = ".lock"


def wait_for_writer(path: str) -> None:
    """Return once no build holds ``path``'s lock (it is writing that record), or WRITER_WAIT later."""
    try:
        fd = os.open(path + LOCK_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # never written by a build that answered early: nothing to wait for
    try:
        import fcntl
        import time

        deadline = time.monotonic() + WRITER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    debug("the record's writer is still at work: not waiting longer")
                    return
                time.sleep(0.005)
    finally:
        os.close(fd)


# -- the record ----------------------------------------------------------------


class Record:
    """A record's sections: ``fields`` (one each) and ``lists`` (``file``, ``write``: repeated)."""

    ONE = (b"key", b"root", b"time", b"paths", b"sigs", b"digests", b"racy", b"same_paths", b"same_sigs",
           b"absent", b"mode", b"progress", b"stdout", b"stderr", b"context", b"ignore", b"wholes")
    MANY = (b"file", b"write", b"event")

    def __init__(self, fields: dict[bytes, bytes], lists: dict[bytes, list[bytes]]) -> None:
        self.fields = fields
        self.lists = lists

    @classmethod
    def parse(cls, data: bytes) -> Record:
        """The record in ``data``; ValueError for anything that is not a whole record of this format."""
        if not data.startswith(MAGIC):
            raise ValueError("not a fast-path record")
        body, crc = data[:-9], data[-9:]
        if crc[-1:] != b"\n" or int(crc[:8], 16) != zlib.crc32(body):
            raise ValueError("damaged (checksum)")
        fields: dict[bytes, bytes] = {}
        lists: dict[bytes, list[bytes]] = {name: [] for name in cls.MANY}
        pos = len(MAGIC)
        while pos < len(body):
            end = body.index(b"\n", pos)
            name, _, size_text = body[pos:end].partition(b" ")
            size = int(size_text)
            if size < 0 or end + 1 + size > len(body):
                raise ValueError("damaged (section size)")
            value = body[end + 1 : end + 1 + size]
            pos = end + 1 + size
            if name in cls.MANY:
                lists[name].append(value)
            elif name in cls.ONE and name not in fields:
                fields[name] = value
            else:
                raise ValueError(f"unknown or repeated section {name!r}")
        missing = [name for name in cls.ONE if name not in fields]
        if missing:
            raise ValueError(f"damaged (no {missing[0].decode()})")
        return cls(fields, lists)

    def encode(self) -> bytes:
        out = [MAGIC]
        for name in self.ONE:
            out += [b"%s %d\n" % (name, len(self.fields[name])), self.fields[name]]
        for name in self.MANY:
            for value in self.lists.get(name, []):
                out += [b"%s %d\n" % (name, len(value)), value]
        body = b"".join(out)
        return body + b"%08x\n" % zlib.crc32(body)

    def save(self, path: str) -> None:
        """Written whole or not at all: a temp file renamed over the old record."""
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as file:
                file.write(self.encode())
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise


def split_paths(blob: bytes) -> list[bytes]:
    return blob.split(b"\0") if blob else []


def signature(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    dev, ino = st.st_dev, st.st_ino
    if dev >= 1 << 63 or ino >= 1 << 63:
        dev, ino = _s64(dev), _s64(ino)
    return (dev, ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def _s64(value: int) -> int:
    """As a signed 64-bit number (an array of 'q' holds it): inode numbers may use the top bit."""
    return value - (1 << 64) if value >= 1 << 63 else value


# -- checking ------------------------------------------------------------------


def _checked(argv: list[str]) -> tuple[Record, Callable[[], None]]:
    """The record answering ``argv``, and what refreshes it after the answer; Miss if there is none."""
    key = invocation_key(argv)
    root = root_path(argv)
    path = record_path(root, key)
    wait_for_writer(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise Miss("no record of this invocation") from None
    record = Record.parse(data)
    if record.fields[b"key"] != key or record.fields[b"root"] != os.fsencode(root):
        raise Miss("the record is of another invocation")
    named = Named(argv, root)
    started = _time_ns()
    _check_store_and_files(record, named)
    verified: list[StatRow] = []
    refreshed = _check_paths(record, started, named, verified)

    def refresh() -> None:
        if refreshed is not None:
            try:
                refreshed.save(path)
            except OSError as error:
                debug(f"record not refreshed: {error}")
        if verified:
            remember_digests(root, verified)

    return record, refresh


def _time_ns() -> int:
    import time

    return time.time_ns()


class Named:
    """The places this command line names: the root, pybuild's own code and every path
    among its words (the context, ``-f``'s Dockerfile and the ignore file beside it).
    The content a record makes the fast path read must be there: a record cannot make it
    open, list or read anything else (lstat alone, of a path it lists, reads nothing)."""

    def __init__(self, argv: Sequence[str], root: str) -> None:
        cwd = os.getcwd()
        bases = {root, os.path.realpath(root), os.path.dirname(os.path.abspath(sys.modules["pybuild"].__file__ or ""))}
        for word in argv:
            value = word.partition("=")[2] if word.startswith("-") else word
            if value and not value.startswith("-"):  # normalized, and as pathlib's absolute() keeps it (with its "..")
                bases.update((os.path.abspath(value), _without_dots(os.path.join(cwd, value))))
        encoded = [os.fsencode(base).rstrip(b"/") for base in bases]
        self.exact = frozenset([*encoded, *(base + b".dockerignore" for base in encoded)])
        self.prefixes = tuple(base + b"/" for base in encoded)

    def check(self, path: bytes) -> None:
        """Miss unless ``path`` is one of the named places or inside one."""
        if path not in self.exact and not path.startswith(self.prefixes):
            raise Miss(f"the record reads {os.fsdecode(path)!r}, which this command does not name")


def _without_dots(path: str) -> str:
    """``path`` without its ``.`` components and repeated or trailing slashes; ``..`` kept."""
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def _check_store_and_files(record: Record, named: Named) -> None:
    """The files whose bytes must be the same, those that must not exist, the objects still there."""
    for entry in record.lists[b"file"]:
        path, _, expected = entry.partition(b"\0")
        named.check(path)
        if _read_regular(path, len(expected) + 1) != expected:
            raise Miss(f"{os.fsdecode(path)} changed")
    for path in split_paths(record.fields[b"absent"]):
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        raise Miss(f"{os.fsdecode(path)} exists now")
    wanted = array("q")
    wanted.frombytes(record.fields[b"same_sigs"])
    paths = split_paths(record.fields[b"same_paths"])
    if len(wanted) != SAME_FIELDS * len(paths):
        raise ValueError("damaged (same_sigs)")
    for i, path in enumerate(paths):
        try:
            st = os.lstat(path)
        except OSError:
            raise Miss(f"{os.fsdecode(path)} is gone") from None
        if (_s64(st.st_dev), _s64(st.st_ino), st.st_mode & _S_IFMT) != tuple(wanted[SAME_FIELDS * i : SAME_FIELDS * (i + 1)]):
            raise Miss(f"{os.fsdecode(path)} was replaced")


def _read_regular(path: bytes, limit: int = 1 << 30) -> bytes | None:
    """A regular file's bytes (up to ``limit``), never through a symlink; None for anything else.
    Anything else is never opened: opening a device may do something (a tape rewinds, a
    watchdog starts), a FIFO's writer would be let go."""
    try:
        if os.lstat(path).st_mode & _S_IFMT != 0o100000:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_mode & _S_IFMT != 0o100000:
            return None
        chunks = []
        while limit > 0 and (chunk := os.read(fd, min(limit, 1 << 20))):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check_paths(record: Record, started: int, named: Named, verified: list[StatRow]) -> Record | None:
    """Every recorded path against its signature; touched and racy ones by content.

    None when all matched and nothing is racy any more; else the record with the
    signatures of now, to save (Miss raised for a path whose content differs).
    ``verified`` gets the stat key and digest of each file read whose key the
    context hasher may remember (``StatRow``)."""
    paths = split_paths(record.fields[b"paths"])
    wanted = array("q")
    wanted.frombytes(record.fields[b"sigs"])
    digests = record.fields[b"digests"]
    if len(wanted) != SIG_FIELDS * len(paths) or len(digests) != (_DIGEST + 1) * len(paths):
        raise ValueError("damaged (sigs)")
    racy = array("q")
    racy.frombytes(record.fields[b"racy"])
    if racy and not 0 <= min(racy) <= max(racy) < len(paths):
        raise ValueError("damaged (racy)")
    now = _signatures(paths)
    if now is not None and now == wanted and not racy:
        return None
    if now is None:
        now = _signatures_one_by_one(paths)
    suspects = sorted(set(racy) | {i for i in range(len(paths)) if _sig(now, i) != _sig(wanted, i)})
    for i in suspects:  # each is read by content below
        named.check(paths[i])
    listings = Listings(record.fields[b"context"], record.fields[b"ignore"], record.fields[b"wholes"])
    _verify([(paths[i], _sig(wanted, i), _sig(now, i), digests[(_DIGEST + 1) * i : (_DIGEST + 1) * (i + 1)]) for i in suspects], listings, Settled(started), verified)
    debug(f"{len(suspects)} paths checked by content")
    return _refreshed(record, now, len(paths), started)


def _sig(sigs: array[int], i: int) -> tuple[int, ...]:
    return tuple(sigs[SIG_FIELDS * i : SIG_FIELDS * (i + 1)])


def _signatures(paths: list[bytes]) -> array[int] | None:
    """The paths' signatures in one array (the hot loop of a no-op); None if one cannot be had."""
    flat: list[int] = []
    extend = flat.extend
    lstat = os.lstat
    try:
        for path in paths:
            st = lstat(path)
            extend((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode))
        return array("q", flat)
    except (OSError, OverflowError):
        return None


def _signatures_one_by_one(paths: list[bytes]) -> array[int]:
    now = array("q")
    for path in paths:
        try:
            now.extend(signature(os.lstat(path)))
        except OSError:
            raise Miss(f"{os.fsdecode(path)} is gone") from None
    return now


def _verify(suspects: list[_Suspect], listings: Listings, settled: Settled, verified: list[StatRow]) -> None:
    """Each suspect's content against its digest; Miss at the first that differs.

    Reading and hashing release the GIL: big batches (a touched tree) are split
    over the CPUs this process may use."""
    import hashlib

    sha256 = hashlib.sha256
    workers = min(len(os.sched_getaffinity(0)), 4) if len(suspects) >= 64 else 1
    if workers == 1:
        for suspect in suspects:
            _same_content(suspect, sha256, listings, settled, verified)
        return
    import threading

    failures: list[BaseException] = []

    def run(part: list[_Suspect]) -> None:
        rows: list[StatRow] = []
        try:
            for suspect in part:
                if failures:
                    return
                _same_content(suspect, sha256, listings, settled, rows)
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            failures.append(error)
        verified.extend(rows)  # one call: atomic under the GIL

    threads = [threading.Thread(target=run, args=(suspects[k::workers],)) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _same_content(suspect: _Suspect, sha256: Any, listings: Listings, settled: Settled, verified: list[StatRow]) -> None:
    """Miss unless the path holds what the build hashed: same type, mode and size, same content."""
    path, old, now, digest = suspect
    shown = os.fsdecode(path)
    kind = digest[0]
    if kind == NO_CONTENT:
        raise Miss(f"{shown} changed")
    if now[5] != old[5] or (kind == FILE and now[2] != old[2]):
        raise Miss(f"{shown} changed its type, mode or size")
    if now[5] & _S_IFMT != _KIND_TYPES.get(kind):  # a device or a FIFO is never opened
        raise Miss(f"{shown} is not what the record says it is")
    if kind == FILE:
        current, key = _file_digest(path, now, sha256)
        if key is not None and current == digest[1:] and settled(key[4]):
            verified.append((key, current))
    elif kind == DIRECTORY:
        current = listings.digest(path, digest[1:], sha256)
    elif kind == SYMLINK:
        current = sha256(os.readlink(path)).digest()
    else:
        raise ValueError("damaged (digest kind)")
    if current != digest[1:]:
        raise Miss(f"{shown} has other content")
    if kind == DIRECTORY and _has_xattrs(path):  # a file's were looked at while it was open
        raise Miss(f"{shown} has extended attributes")


def _file_digest(path: bytes, now: tuple[int, ...], sha256: Any) -> tuple[bytes | None, StatKey | None]:
    """The sha256 of the regular file at ``path`` if it is still the one of signature ``now``,
    and its stat key if that stayed the same while it was read (None if not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        st = os.fstat(fd)
        if st.st_mode != now[5] or _s64(st.st_ino) != now[1] or st.st_size != now[2]:
            return None, None
        size = st.st_size
        if size < _WHOLE_READ:
            data = os.read(fd, size + 1)  # one call: a regular file gives all it has
            digest = sha256(data).digest() if len(data) == size else None
        else:
            h = sha256()
            total = 0
            while chunk := os.read(fd, _WHOLE_READ):
                h.update(chunk)
                total += len(chunk)
            digest = h.digest() if total == size else None
        if digest is None or _has_xattrs(fd):
            return None, None
        key = _stat_key(st)
        return digest, key if _stat_key(os.fstat(fd)) == key else None
    finally:
        os.close(fd)


# -- what the fast path read, for the context hasher ---------------------------------


def _stat_key(st: os.stat_result) -> StatKey:
    """The context hasher's key of a file (``pybuild.cache``'s ``StatKey``)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Settled:
    """The context hasher's rule for a stat key it may remember (``settled_before``), for a
    read that began at ``started``: any later change of the file must give it another ctime.
    The windows are the hasher's defaults, which a build uses."""

    def __init__(self, started: int) -> None:
        self.before = started - RACY_WINDOW_NS
        self.fine_before = started - FINE_RACY_WINDOW_NS

    def __call__(self, ctime_ns: int) -> bool:
        return ctime_ns < self.before or (ctime_ns % 1_000_000 != 0 and ctime_ns < self.fine_before)


REMEMBER_BUSY_MS = 250  # another build holding the index's write lock: give up, the answer is printed


def remember_digests(root: str, rows: list[StatRow]) -> None:
    """Hand the files whose content the fast path verified to the context hasher's stat
    cache (the index), as a build that hashed them would: after a ``touch`` of every
    file, the next build with one file changed then reads that file only, not all of
    them again.  Only a help: an index that is not there, or any error, leaves it."""
    index_path = os.path.join(root, "index.db")
    if not os.path.isfile(index_path) or os.path.exists(index_path + ".damaged"):
        return
    try:
        from pybuild.cache import CacheIndex

        index = CacheIndex(index_path, busy_timeout_ms=REMEMBER_BUSY_MS)
        try:
            index.put_stat_digests((key, "sha256:" + digest.hex()) for key, digest in rows)
        finally:
            index.close()
    except Exception as error:  # noqa: BLE001 - a cache of the hasher's: the answer stands without it
        debug(f"digests not remembered: {type(error).__name__}: {error}")
        return
    debug(f"{len(rows)} file digests remembered")


class Listings:
    """A context directory's content as its build saw it: its names, less those
    ``.dockerignore`` hides (a log file or another tool's Dockerfile written beside the
    sources changes nothing a build reads).  The ignore rules are read only when a
    listing differs from the one recorded: ``wholes`` holds, for each directory that had
    hidden names, the digest of its path with that of all its names then, so a directory
    as it was is known without them (by its path: the rules differ from one directory to
    another, so the same names elsewhere may not hide the same way)."""

    def __init__(self, context: bytes, patterns: bytes, wholes: bytes) -> None:
        self.context = context
        self.patterns = patterns
        if len(wholes) % (2 * _DIGEST):
            raise ValueError("damaged (wholes)")
        self.wholes = {wholes[i : i + 2 * _DIGEST] for i in range(0, len(wholes), 2 * _DIGEST)}
        self._ignore: Any = None

    def digest(self, path: bytes, recorded: bytes, sha256: Any) -> bytes:
        names = os.listdir(path)
        whole: bytes = sha256(listing_bytes(names)).digest()
        if whole == recorded or not self.patterns:
            return whole
        if sha256(path).digest() + whole in self.wholes:  # all its names as they were: what it showed then
            return recorded
        if path == self.context:
            rel = "."
        elif path.startswith(self.context + b"/"):
            rel = os.fsdecode(path[len(self.context) + 1 :])
        else:
            return whole
        if self._ignore is None:  # threads may both make it: the same value
            from pybuild.cache import DockerIgnore

            self._ignore = DockerIgnore(tuple(self.patterns.decode("utf-8", "surrogateescape").split("\n")))
        kept: bytes = sha256(listing_bytes(kept_names(self._ignore, path, rel, names))).digest()
        return kept


def kept_names(ignore: Any, directory: bytes, rel: str, names: Sequence[bytes] | Sequence[str]) -> list[bytes]:
    """The names of context directory ``rel`` (at ``directory``) a build can see: without
    those ``ignore`` (a ``cache.DockerIgnore``) hides, by the hasher's own rule (``hidden``):
    ignored, unless a directory an exception may re-include something below."""
    kept = []
    for name in names:
        raw = os.fsencode(name)
        child = os.fsdecode(raw) if rel == "." else f"{rel}/{os.fsdecode(raw)}"
        if ignore.matches(child) and not (ignore.has_exceptions and _is_directory(directory + b"/" + raw) and ignore.could_include_below(child)):
            continue
        kept.append(raw)
    return kept


def _is_directory(path: bytes) -> bool:
    try:
        return os.lstat(path).st_mode & _S_IFMT == 0o040000
    except OSError:
        return False


def listing_bytes(names: list[bytes] | list[str]) -> bytes:
    """A directory's names as hashed for its content digest: sorted, NUL-separated."""
    encoding, errors = _FS_ENCODING
    return b"\0".join(sorted(name if isinstance(name, bytes) else name.encode(encoding, errors) for name in names))


_FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())  # os.fsencode's, without its call per name


def _has_xattrs(target: bytes | int) -> bool:
    """Whether a path (not followed) or an open file has extended attributes the hasher counts."""
    try:
        names = os.listxattr(target) if isinstance(target, int) else os.listxattr(target, follow_symlinks=False)
    except OSError:
        return False  # not supported here: none can have been hashed either
    return any(name not in _HOST_XATTRS for name in names)


def racy_indices(sigs: array[int], count: int, since_ns: int) -> array[int]:
    """The entries changed (mtime or ctime) at ``since_ns`` minus the racy window or later."""
    limit, fine_limit = since_ns - RACY_WINDOW_NS, since_ns - FINE_RACY_WINDOW_NS
    racy = array("q")
    for i in range(count):
        ctime = sigs[SIG_FIELDS * i + 4]
        latest = max(sigs[SIG_FIELDS * i + 3], ctime)
        if latest >= (fine_limit if ctime % 1_000_000 else limit):
            racy.append(i)
    return racy


def _refreshed(record: Record, now: array[int], count: int, started: int) -> Record:
    fields = dict(record.fields)
    fields[b"sigs"] = now.tobytes()
    fields[b"racy"] = racy_indices(now, count, started).tobytes()
    fields[b"time"] = b"%d" % started
    return Record(fields, record.lists)


# -- answering -----------------------------------------------------------------


def _write_files(record: Record, argv: list[str]) -> None:
    """``--iidfile``/``--metadata-file``, as the build writes them (only where this command
    line names: a record cannot make the fast path write anywhere else)."""
    named = set()
    for i, word in enumerate(argv):
        for flag in ("--iidfile", "--metadata-file"):
            if word == flag and i + 1 < len(argv):
                named.add(os.fsencode(os.path.abspath(argv[i + 1])))
            elif word.startswith(flag + "="):
                named.add(os.fsencode(os.path.abspath(word[len(flag) + 1 :])))
    for entry in record.lists[b"write"]:
        path, _, data = entry.partition(b"\0")
        if path not in named:
            raise Miss(f"the record writes {os.fsdecode(path)}, which this command does not name")
        _replace_file(path, data)


def _events(record: Record) -> list[StepCached | Notice]:
    """The events a live view replays, decoded (ValueError for a record that is not right)."""
    if record.fields[b"mode"] not in (b"plain", b"quiet", b"rawjson", b"tty"):
        raise ValueError("damaged (mode)")
    events: list[StepCached | Notice] = []
    for event in record.lists[b"event"] if record.fields[b"mode"] == b"tty" else ():
        if event[:1] == b"C":
            digest, _, name = event[1:].partition(b"\0")
            events.append(StepCached(digest.decode("ascii"), name.decode("utf-8", "surrogateescape"), 0.0))
        elif event[:1] == b"N":
            events.append(Notice(event[1:].decode("utf-8", "surrogateescape"), 0.0))
        else:
            raise ValueError("damaged (event)")
    return events


def _print(record: Record, events: list[StepCached | Notice]) -> None:
    """What the build prints: its progress, then its report."""
    err = sys.stderr.buffer
    if record.fields[b"mode"] == b"tty":
        _replay(events)
    err.write(record.fields[b"progress"])
    err.flush()
    sys.stdout.buffer.write(record.fields[b"stdout"])
    sys.stdout.flush()
    err.write(record.fields[b"stderr"])
    err.flush()


class StepCached:
    """A step found in the cache, as the displays read events: by class name and fields."""

    def __init__(self, digest: str, name: str, time: float) -> None:
        self.digest = digest
        self.name = name
        self.time = time


class Notice:
    def __init__(self, message: str, time: float) -> None:
        self.message = message
        self.time = time


def encode_event(event: StepCached | Notice) -> bytes:
    if isinstance(event, StepCached):
        return b"C" + event.digest.encode() + b"\0" + event.name.encode("utf-8", "surrogateescape")
    return b"N" + event.message.encode("utf-8", "surrogateescape")


def _replay(events: list[StepCached | Notice]) -> None:
    """The live terminal view of a build whose every step is cached: the build's own display, given its events."""
    from ._tty import TtyProgress

    display = TtyProgress()
    try:
        for event in events:
            display(event)
    finally:
        display.close()


def _replace_file(path: bytes, data: bytes) -> None:
    """As the build writes a new or regular file: a temp file beside it, fsynced, renamed over it
    (keeping its permissions); anything else at the path (a link, a device) is the build's to write."""
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and st.st_mode & _S_IFMT != 0o100000:
        raise Miss(f"{os.fsdecode(path)} is not a regular file")
    directory, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(directory, b".%s.pybuild-%d-%s" % (name, os.getpid(), os.urandom(4).hex().encode()))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        if st is not None:
            os.fchmod(fd, st.st_mode & 0o777)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.rename(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    finally:
        os.close(fd)
