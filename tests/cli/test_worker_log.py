"""``pybuild worker``'s log lines quote leases and servers: nothing they say may drive the terminal."""

from __future__ import annotations

from pybuild.cli._worker import log_line


def test_a_log_line_escapes_what_could_drive_a_terminal() -> None:
    line = log_line("refused l\x1b[2J\x1b]0;t\x07: bad\r\nworker x: forged \u202eevil")
    assert line.isprintable() and "\\x1b[2J" in line and "\\r\\n" in line and "\\u202e" in line


def test_a_plain_line_is_left_as_it_is() -> None:
    text = "ran RUN echo héllo wörld (exit code 0, 0.10s, lease 0.20s)"
    assert log_line(text) == text
