"""A fast-path record is read back from disk: a damaged or hostile one (its checksum made to
hold) must fall through to a normal build, print nothing and write nothing, and never make
``pybuild build`` open, list or read anything its command line does not name.

In-process, without a build: each record is made by hand for the very invocation asked.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.cli import _fastpath
from pybuild.cli._fastpath import FILE, Record

IMAGE = b"sha256:" + b"f" * 64 + b"\n"


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYBUILD_FASTPATH", raising=False)
    monkeypatch.setenv("PYBUILD_DEBUG_FASTPATH", "1")
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Dockerfile").write_text("FROM busybox\n")
    return directory


def _argv(context: Path) -> list[str]:
    return ["-q", "--root", str(context.parent / "root"), str(context)]


def _save(argv: list[str], *, files: list[bytes] = (), paths: list[tuple[bytes, tuple[int, ...], bytes]] = (),  # type: ignore[assignment]
          mode: bytes = b"quiet", events: list[bytes] = (), writes: list[bytes] = ()) -> None:  # type: ignore[assignment]
    """A record answering ``argv`` (its checksum right) with these dependencies."""
    sigs = array("q", [v for _, sig, _ in paths for v in sig])
    fields = {
        b"key": _fastpath.invocation_key(argv), b"root": os.fsencode(_fastpath.root_path(argv)), b"time": b"0",
        b"paths": b"\0".join(path for path, _, _ in paths), b"sigs": sigs.tobytes(),
        b"digests": b"".join(digest for _, _, digest in paths), b"racy": b"", b"same_paths": b"", b"same_sigs": b"",
        b"absent": b"", b"mode": mode, b"progress": b"", b"stdout": IMAGE, b"stderr": b"", b"context": b"", b"ignore": b"", b"wholes": b"",
    }
    record = Record(fields, {b"file": list(files), b"write": list(writes), b"event": list(events)})
    record.save(_fastpath.record_path(_fastpath.root_path(argv), _fastpath.invocation_key(argv)))


def test_a_record_of_files_the_command_names_answers(context: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The control for the tests below: the hand-made record is one the fast path takes."""
    dockerfile = context / "Dockerfile"
    _save(_argv(context), files=[os.fsencode(dockerfile) + b"\0" + dockerfile.read_bytes()])
    assert _fastpath.answer(_argv(context)) == 0
    assert capfd.readouterr().out.encode() == IMAGE


def test_a_record_cannot_make_it_read_a_file_the_command_does_not_name(context: Path, capfd: pytest.CaptureFixture[str]) -> None:
    secret = context.parent / "elsewhere" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"guessed right\n")
    _save(_argv(context), files=[os.fsencode(secret) + b"\0guessed right\n"])
    assert _fastpath.answer(_argv(context)) is None  # a hit would tell the record's writer it guessed the bytes
    captured = capfd.readouterr()
    assert captured.out == "" and "which this command does not name" in captured.err


def _older(path: Path) -> tuple[int, ...]:
    """``path``'s signature with another mtime: a touched path, which is checked by content."""
    dev, ino, size, _, ctime, mode = _fastpath.signature(os.lstat(path))
    return (dev, ino, size, 1, ctime, mode)


class _BlockedWriter:
    """A FIFO whose writer waits in ``open`` until someone opens it for reading."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._open, daemon=True)
        self.thread.start()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        self.opened.set()
        os.close(fd)

    def release(self) -> None:
        if not self.opened.is_set():
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        self.thread.join(5)


@pytest.fixture
def fifo(context: Path) -> Iterator[_BlockedWriter]:
    writer = _BlockedWriter(context / "fifo")
    yield writer
    writer.release()


def test_a_record_never_opens_a_fifo_it_names_as_a_file(context: Path, fifo: _BlockedWriter) -> None:
    _save(_argv(context), files=[os.fsencode(fifo.path) + b"\0"])
    assert _fastpath.answer(_argv(context)) is None
    assert not fifo.opened.wait(0.2)  # opening it (even non-blocking) would have let the writer go


def test_a_record_never_opens_a_fifo_it_says_is_a_changed_file(context: Path, fifo: _BlockedWriter) -> None:
    recorded = _older(fifo.path)
    _save(_argv(context), paths=[(os.fsencode(fifo.path), recorded, bytes([FILE]) + b"\0" * 32)])
    assert _fastpath.answer(_argv(context)) is None
    assert not fifo.opened.wait(0.2)


def test_a_record_cannot_make_it_list_a_directory_the_command_does_not_name(context: Path, capfd: pytest.CaptureFixture[str]) -> None:
    elsewhere = context.parent / "elsewhere"
    elsewhere.mkdir()
    recorded = _older(elsewhere)
    import hashlib

    digest = hashlib.sha256(_fastpath.listing_bytes(os.listdir(elsewhere))).digest()
    _save(_argv(context), paths=[(os.fsencode(elsewhere), recorded, bytes([_fastpath.DIRECTORY]) + digest)])
    assert _fastpath.answer(_argv(context)) is None
    assert "which this command does not name" in capfd.readouterr().err


@pytest.mark.parametrize("events", [[b"Xnot an event"], [b"C\xff\xfe\0name"]])
def test_a_damaged_live_view_falls_through_before_anything_is_printed_or_written(
    context: Path, events: list[bytes], capfd: pytest.CaptureFixture[str]
) -> None:
    iidfile = context.parent / "iid"
    argv = ["--iidfile", str(iidfile), *_argv(context)]
    _save(argv, mode=b"tty", events=events, writes=[os.fsencode(iidfile) + b"\0" + IMAGE])
    assert _fastpath.answer(argv) is None
    assert capfd.readouterr().out == "" and not iidfile.exists()


def test_a_record_of_an_unknown_display_falls_through(context: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _save(_argv(context), mode=b"fancy")
    assert _fastpath.answer(_argv(context)) is None
    assert capfd.readouterr().out == ""


def test_racy_indices_outside_the_record_fall_through(context: Path) -> None:
    argv = _argv(context)
    _save(argv)
    path = _fastpath.record_path(_fastpath.root_path(argv), _fastpath.invocation_key(argv))
    with open(path, "rb") as file:
        record = Record.parse(file.read())
    record.fields[b"racy"] = array("q", [-1]).tobytes()
    record.save(path)
    assert _fastpath.answer(argv) is None


def test_the_named_places_are_the_paths_as_the_build_records_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A context or Dockerfile given as ``./../x/`` is recorded as pathlib writes it (``..`` kept)."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    named = _fastpath.Named(["-f", "./../Df", "--iidfile=out", "./../../ctx/"], str(tmp_path / "root"))
    for allowed in (f"{work}/../../ctx/.dockerignore", f"{tmp_path}/ctx/src/a", f"{work}/../Df", f"{tmp_path}/a/Df.dockerignore",
                    f"{tmp_path}/root/index.db.generation", f"{work}/out"):
        named.check(os.fsencode(allowed))
    for refused in ("/etc/shadow", f"{tmp_path}/ctx2/x", f"{tmp_path}/a/Dfx", f"{tmp_path}/rootx"):
        with pytest.raises(_fastpath.Miss):
            named.check(os.fsencode(refused))


@pytest.mark.parametrize("change", ["written", "made"])
def test_an_ignore_file_changed_during_the_build_is_not_recorded(context: Path, change: str) -> None:
    """The build read its rules when it started; the record reads the file's bytes at its end:
    a change between would pair new rules with what the old ones let the build see."""
    from types import SimpleNamespace

    from pybuild.cli import _fastpath_record

    ignore = context / ".dockerignore"
    if change != "made":
        ignore.write_text("*.log\n")
    invocation = _fastpath.Invocation(_argv(context))  # the build starts
    ignore.write_text("other\n" if change == "written" else "*.log\n")
    dockerfile = context / "Dockerfile"
    finished = SimpleNamespace(invocation=invocation, dockerfile=str(dockerfile), dockerfile_bytes=dockerfile.read_bytes(), context_dir=context)
    reason = _fastpath_record._add_dockerfile(_fastpath_record._Builder(), finished)  # type: ignore[arg-type]
    assert reason is not None and "changed during the build" in reason


def test_an_ignore_file_unchanged_since_the_build_started_is_recorded(context: Path) -> None:
    from types import SimpleNamespace

    from pybuild.cli import _fastpath_record

    (context / ".dockerignore").write_text("*.log\n")
    import time

    time.sleep(0.02)  # more than a tick of the clock the kernel stamps files with
    invocation = _fastpath.Invocation(_argv(context))
    dockerfile = context / "Dockerfile"
    finished = SimpleNamespace(invocation=invocation, dockerfile=str(dockerfile), dockerfile_bytes=dockerfile.read_bytes(), context_dir=context)
    builder = _fastpath_record._Builder()
    assert _fastpath_record._add_dockerfile(builder, finished) is None  # type: ignore[arg-type]
    assert os.fsencode(context / ".dockerignore") + b"\0*.log\n" in builder.files


# -- a record on its way (a served build answered before writing it) ------------------------


def _hold_lock_in_child(path: str, seconds: float) -> int:
    """A process that holds ``path``'s exclusive flock for ``seconds`` (as a writing build); its pid
    once it holds it."""
    import fcntl
    import time

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(ready_w, b"x")
            time.sleep(seconds)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return pid


def test_a_reader_waits_for_the_records_writer_then_goes_on(tmp_path: Path) -> None:
    import time

    record = str(tmp_path / "r.rec")
    started = time.monotonic()
    _fastpath.wait_for_writer(record)  # no lock file: nothing written that way
    assert time.monotonic() - started < 0.5
    pid = _hold_lock_in_child(record + _fastpath.LOCK_SUFFIX, 0.6)
    started = time.monotonic()
    _fastpath.wait_for_writer(record)
    waited = time.monotonic() - started
    os.waitpid(pid, 0)
    assert 0.3 < waited < _fastpath.WRITER_WAIT
    started = time.monotonic()
    _fastpath.wait_for_writer(record)  # the lock is free now
    assert time.monotonic() - started < 0.5


def test_a_reader_does_not_wait_for_a_stuck_writer_past_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(_fastpath, "WRITER_WAIT", 0.3)
    record = str(tmp_path / "r.rec")
    pid = _hold_lock_in_child(record + _fastpath.LOCK_SUFFIX, 10)
    try:
        started = time.monotonic()
        _fastpath.wait_for_writer(record)
        assert 0.25 < time.monotonic() - started < 3
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
