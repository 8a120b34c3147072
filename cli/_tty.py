"""``--progress=tty``: a live view of the build, redrawn in place like BuildKit's.

Steps are listed in the order they started, with a timer, a ``CACHED`` mark
or ``DONE``/``ERROR``; a running step shows the tail of its output under it;
parallel stages run side by side.  A thread redraws ten times a second so
timers move while nothing else happens; the solver's events only update
state (under a lock).  On close the final view stays on screen, followed by
a one-line summary.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

TAIL_LINES = 6
REFRESH = 0.1


@dataclass
class _Step:
    name: str
    started: float
    finished: float | None = None
    cached: bool = False
    failed: str | None = None
    miss: str | None = None
    tail: list[str] = field(default_factory=list)
    partial: bytes = b""


class TtyProgress:
    def __init__(self, out: IO[str] | None = None, *, width: int | None = None) -> None:
        self.out = out or sys.stderr
        self.width = width
        self.steps: dict[str, _Step] = {}
        self.notices: list[str] = []
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.drawn_lines = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pybuild-tty", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ events

    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        now = time.monotonic()
        with self.lock:
            if kind == "Notice":
                self.notices.append(event.message)
                return
            step = self.steps.get(event.digest) if hasattr(event, "digest") else None
            if step is None and hasattr(event, "name"):
                step = self.steps.setdefault(event.digest, _Step(event.name, now))
            if step is None:
                return
            if kind == "StepCached":
                step.cached, step.finished = True, now
            elif kind == "StepMiss":
                step.miss = event.reason
            elif kind == "StepFinished":
                step.finished = now
            elif kind == "StepFailed":
                step.failed, step.finished = event.error, now
            elif kind == "StepLog":
                text = step.partial + event.data
                *lines, step.partial = text.split(b"\n")
                step.tail.extend(line.decode("utf-8", "replace") for line in lines)
                del step.tail[:-TAIL_LINES]

    # ------------------------------------------------------------ drawing

    def _loop(self) -> None:
        while not self.stopped.wait(REFRESH):
            self._draw()

    def _columns(self) -> int:
        return self.width or shutil.get_terminal_size((100, 24)).columns

    def render(self, final: bool = False) -> list[str]:
        columns = self._columns()
        now = time.monotonic()
        with self.lock:
            done = sum(1 for s in self.steps.values() if s.finished is not None)
            lines = [f"[+] Building {now - self.start:.1f}s ({done}/{len(self.steps)}){' FINISHED' if final else ''}"]
            for step in self.steps.values():
                elapsed = (step.finished or now) - step.started
                mark = "CACHED " if step.cached else ("ERROR " if step.failed else "")
                lines.append(self._row(f" => {mark}{step.name}", f"{elapsed:.1f}s", columns))
                if step.miss and not step.cached:
                    lines.append(_cut(f" => => # cache miss: {step.miss}", columns))
                running = step.finished is None
                if running or step.failed:
                    tail = step.tail + ([step.partial.decode("utf-8", "replace")] if step.partial else [])
                    lines.extend(_cut(f" => => # {line}", columns) for line in tail[-TAIL_LINES:])
            lines.extend(_cut(f" => {notice}", columns) for notice in self.notices[-3:])
        return lines

    @staticmethod
    def _row(left: str, right: str, columns: int) -> str:
        room = columns - len(right) - 1
        if len(left) > room:
            left = left[: max(room - 1, 0)] + "…"
        return left.ljust(room) + " " + right

    def _draw(self, final: bool = False) -> None:
        lines = self.render(final)
        with self.lock:
            prefix = f"\x1b[{self.drawn_lines}F" if self.drawn_lines else ""
            body = "".join(f"\x1b[2K{line}\n" for line in lines)
            if self.drawn_lines > len(lines):
                body += "\x1b[2K\n" * (self.drawn_lines - len(lines))
                body += f"\x1b[{self.drawn_lines - len(lines)}F"
            self.out.write(prefix + body)
            self.out.flush()
            self.drawn_lines = len(lines)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self._draw(final=True)
        with self.lock:
            cached = sum(1 for s in self.steps.values() if s.cached)
            failed = sum(1 for s in self.steps.values() if s.failed)
            ran = len(self.steps) - cached - failed
        summary = f"{len(self.steps)} steps: {ran} run, {cached} cached" + (f", {failed} failed" if failed else "")
        self.out.write(f"{summary} in {time.monotonic() - self.start:.1f}s\n")
        self.out.flush()


def _cut(line: str, columns: int) -> str:
    return line if len(line) <= columns else line[: columns - 1] + "…"
