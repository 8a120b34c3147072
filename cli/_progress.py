"""Progress renderers: the solver's events as text (plain), a live view (tty), or JSON lines."""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

PLAIN_OUTPUT_LIMIT = 2 * 1024 * 1024  # bytes of step output shown before truncating


class PlainProgress:
    """BuildKit's ``--progress=plain``: numbered steps, their output and timings."""

    def __init__(self, out: IO[str] | None = None, *, output_limit: int = PLAIN_OUTPUT_LIMIT) -> None:
        self.out = out or sys.stderr
        self.numbers: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.shown: dict[str, int] = {}
        self.output_limit = output_limit
        self.start_time: float | None = None
        self.pending: dict[str, bytes] = {}

    def number(self, digest: str) -> int:
        if digest not in self.numbers:
            self.numbers[digest] = len(self.numbers) + 1
        return self.numbers[digest]

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        if self.start_time is None and hasattr(event, "time"):
            self.start_time = event.time
        if kind == "Notice":
            self._write(event.message)
        elif kind == "StepMiss":
            self._write(f"#{self.number(event.digest)} {event.name}")
            self._write(f"#{self.number(event.digest)} cache miss: {event.reason}")
        elif kind == "StepStarted":
            if event.digest not in self.numbers or event.digest not in self.started:
                if event.digest not in self.numbers:
                    self._write(f"#{self.number(event.digest)} {event.name}")
            self.started[event.digest] = event.time
        elif kind == "StepCached":
            n = self.number(event.digest)
            self._write(f"#{n} {event.name}")
            self._write(f"#{n} CACHED")
        elif kind == "StepLog":
            self._log(event)
        elif kind == "StepFinished":
            self._flush(event.digest, event.time)
            self._write(f"#{self.number(event.digest)} DONE {event.duration:.1f}s")
        elif kind == "StepFailed":
            self._flush(event.digest, event.time)
            self._write(f"#{self.number(event.digest)} ERROR: {event.error}")

    def _log(self, event: Any) -> None:
        shown = self.shown.get(event.digest, 0)
        if shown >= self.output_limit:
            return
        data = event.data[: self.output_limit - shown]
        self.shown[event.digest] = shown + len(data)
        text = self.pending.pop(event.digest, b"") + data
        *lines, rest = text.split(b"\n")
        if rest:
            self.pending[event.digest] = rest
        offset = event.time - self.started.get(event.digest, event.time)
        for line in lines:
            self._write(f"#{self.number(event.digest)} {offset:.3f} {line.decode('utf-8', 'replace')}")
        if self.shown[event.digest] >= self.output_limit:
            self._write(f"#{self.number(event.digest)} [output clipped, log limit {self.output_limit} bytes reached]")

    def _flush(self, digest: str, time: float) -> None:
        rest = self.pending.pop(digest, b"")
        if rest:
            offset = time - self.started.get(digest, time)
            self._write(f"#{self.number(digest)} {offset:.3f} {rest.decode('utf-8', 'replace')}")



class FailedStepLog:
    """Keeps the whole output of a step that fails in a file (``--failed-log``),
    whatever the display in front of it shows.

    Each running step's output is spooled to a file of its own beside the
    destination, not held in memory; a step that finishes drops its file, the
    first one that fails is copied to the destination (as ``open_output`` writes).
    """

    def __init__(self, display: Any, path: str) -> None:
        self.display = display
        self.path = path
        self.spools: dict[str, IO[bytes]] = {}
        self.kept = False

    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "StepLog":
            self._spool(event.digest).write(event.data)
        elif kind == "StepFinished":
            self._drop(event.digest)
        elif kind == "StepFailed" and not self.kept:
            self._keep(event.digest)
        self.display(event)

    def _spool(self, digest: str) -> IO[bytes]:
        import tempfile

        if digest not in self.spools:
            directory = os.path.dirname(os.path.abspath(self.path))
            self.spools[digest] = tempfile.NamedTemporaryFile(dir=directory, prefix=".pybuild-step-", delete=False)  # noqa: SIM115
        return self.spools[digest]

    def _drop(self, digest: str) -> None:
        spool = self.spools.pop(digest, None)
        if spool is not None:
            spool.close()
            os.unlink(spool.name)

    def _keep(self, digest: str) -> None:
        import shutil

        from pybuild.dag import Notice
        from pybuild.errors import UsageError
        from pybuild.oci import open_output

        spool = self._spool(digest)  # a step that failed silently leaves an empty log
        del self.spools[digest]
        self.kept = True
        try:
            spool.seek(0)
            # copied, not renamed: a symlink, FIFO or device at the path is written through, never replaced
            with open_output(self.path) as output:
                shutil.copyfileobj(spool, output.stream)
            said = f"full log of the failed step: {self.path}"
        except UsageError as error:  # the step's own failure is what the build reports
            said = f"could not keep the failed step's log: {error.message}"
        finally:
            spool.close()
            os.unlink(spool.name)
        self.display(Notice(said, 0.0))

    def close(self) -> None:
        for digest in list(self.spools):
            self._drop(digest)
        close = getattr(self.display, "close", None)
        if close is not None:
            close()


class JsonProgress:
    """``--progress=rawjson``: one JSON object per event."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr

    def __call__(self, event: Any) -> None:
        record: dict[str, Any] = {"event": type(event).__name__}
        for name, value in vars(event).items():
            record[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


class QuietProgress:
    def __call__(self, event: Any) -> None:
        pass
