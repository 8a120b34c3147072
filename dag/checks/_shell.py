"""Just enough of POSIX shell syntax to see which commands a RUN script runs.

The layer checks need the simple commands of a script (``apt-get install``,
``rm -rf /tmp/x``) with their words, the variable assignments before them and
the files their ``>``/``>>`` redirections write.  This splitter knows quotes,
backslashes, comments, ``$(...)``, ``${...}`` and backquotes (kept inside
their word), and the operators that separate commands (``&&``, ``||``, ``;``,
``|``, ``&``, newlines, parentheses).  Words are returned as written, quotes
included: the caller expands them in the stage's environment.  Control
structure is not modelled; reserved words in front of a command are dropped,
so ``if true; then rm x; fi`` still shows ``rm x``.  It is a best effort for
warnings, never used to run anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPERATOR_CHARS = "&|;()\n"
_RESERVED = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time"})
_PREFIX_COMMANDS = frozenset({"sudo", "exec", "command", "nohup", "env", "xargs"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "/bin/sh", "/bin/bash", "/bin/dash", "/bin/ash", "/usr/bin/bash"})


@dataclass(frozen=True)
class SimpleCommand:
    words: tuple[str, ...]  # the command and its arguments, as written
    assignments: tuple[str, ...] = ()  # NAME=value words in front of it
    writes: tuple[str, ...] = ()  # targets of > and >> (as written)

    @property
    def name(self) -> str:
        return self.words[0].rsplit("/", 1)[-1] if self.words else ""


class _Splitter:
    def __init__(self, script: str) -> None:
        self.text = script
        self.pos = 0
        self.commands: list[SimpleCommand] = []
        self.words: list[str] = []
        self.writes: list[str] = []
        self.pending_write = False  # the next word is a redirection target we keep
        self.pending_skip = False  # the next word is a redirection target we ignore

    def split(self) -> list[SimpleCommand]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r":
                self.pos += 1
            elif char == "\\" and text.startswith("\\\n", self.pos):
                self.pos += 2
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif char in _OPERATOR_CHARS:
                self.pos += 1
                self.end_command()
            elif char in "<>":
                self.redirection()
            else:
                self.word()
        self.end_command()
        return self.commands

    def redirection(self) -> None:
        text = self.text
        start = self.pos
        if text.startswith("<<", start):
            self.pos += 3 if text.startswith("<<-", start) else 2
            self.pending_skip = True  # a heredoc delimiter
            return
        writes = text[start] == ">"
        self.pos += 1
        if self.pos < len(text) and text[self.pos] in ">|":
            self.pos += 1
        if self.pos < len(text) and text[self.pos] == "&":
            self.pos += 1  # >&2 duplicates a descriptor: its target is no file
            writes = False
        self.pending_write, self.pending_skip = writes, not writes

    def word(self) -> None:
        text = self.text
        start = self.pos
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r" or char in _OPERATOR_CHARS or char in "<>":
                break
            if char == "\\":
                self.pos += 2
            elif char == "'":
                end = text.find("'", self.pos + 1)
                self.pos = len(text) if end < 0 else end + 1
            elif char == '"':
                self.pos = self.double_quoted(self.pos + 1)
            elif char == "`":
                end = text.find("`", self.pos + 1)
                self.pos = len(text) if end < 0 else end + 1
            elif char == "$" and text.startswith("$(", self.pos):
                self.pos = self.balanced(self.pos + 2, "(", ")")
            elif char == "$" and text.startswith("${", self.pos):
                self.pos = self.balanced(self.pos + 2, "{", "}")
            else:
                self.pos += 1
        word = text[start : self.pos].replace("\\\n", "")
        # "2>file": a descriptor number right before a redirection is not a word.
        if self.pos < len(text) and text[self.pos] in "<>" and word.isdigit():
            return
        if self.pending_write:
            self.writes.append(word)
        elif not self.pending_skip:
            self.words.append(word)
        self.pending_write = self.pending_skip = False

    def double_quoted(self, pos: int) -> int:
        text = self.text
        while pos < len(text):
            char = text[pos]
            if char == "\\":
                pos += 2
            elif char == '"':
                return pos + 1
            elif text.startswith("$(", pos):
                pos = self.balanced(pos + 2, "(", ")")
            else:
                pos += 1
        return pos

    def balanced(self, pos: int, open_: str, close: str) -> int:
        depth = 1
        text = self.text
        while pos < len(text) and depth:
            char = text[pos]
            if char == "\\":
                pos += 1
            elif char == "'":
                end = text.find("'", pos + 1)
                pos = len(text) - 1 if end < 0 else end
            elif char == open_:
                depth += 1
            elif char == close:
                depth -= 1
            pos += 1
        return pos

    def end_command(self) -> None:
        words = self.words
        while words and words[0] in _RESERVED:
            words = words[1:]
        assignments: list[str] = []
        while words and _ASSIGNMENT.match(words[0]):
            assignments.append(words[0])
            words = words[1:]
        while words and words[0] in _PREFIX_COMMANDS:
            words = [w for w in words[1:] if not _ASSIGNMENT.match(w)] if words[0] == "env" else words[1:]
            while words and words[0].startswith("-"):
                words = words[1:]
        if words and words[0] in ("for", "case"):
            words = []
        if words or self.writes:
            self.commands.append(SimpleCommand(tuple(words), tuple(assignments), tuple(self.writes)))
        self.words, self.writes = [], []
        self.pending_write = self.pending_skip = False


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


def simple_commands(script: str) -> list[SimpleCommand]:
    """The simple commands of ``script`` in order; ``sh -c '...'`` is opened up."""
    out: list[SimpleCommand] = []
    for command in _Splitter(script).split():
        words = command.words
        if len(words) >= 3 and words[0] in _SHELLS and words[1] == "-c":
            out.extend(simple_commands(_unquote(words[2])))
        else:
            out.append(command)
    return out


def command_words(argv: tuple[str, ...]) -> list[SimpleCommand]:
    """The commands of an exec-form RUN: a shell's ``-c`` script, or argv itself."""
    if len(argv) >= 3 and argv[0] in _SHELLS and argv[1] == "-c":
        return simple_commands(argv[2])
    if not argv:
        return []
    # The program name stays as is when it needs no quoting, so that it is
    # recognised like a shell script's command name.
    name = argv[0] if re.fullmatch(r"[\w./+-]+", argv[0]) else _shell_quote(argv[0])
    return [SimpleCommand((name, *(_shell_quote(word) for word in argv[1:])))]


def _shell_quote(word: str) -> str:
    """An exec-form argument as a shell word, so callers expand every word alike."""
    return "'" + word.replace("'", "'\\''") + "'" if word else "''"
