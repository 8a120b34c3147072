"""`.dockerignore`: reading the file, matching paths, and walking a context.

Semantics follow Docker (moby/patternmatcher and its ``ignorefile`` reader):

- a line starting with ``#`` is a comment; surrounding white space is
  trimmed; blank lines are skipped; a UTF-8 BOM is dropped;
- a pattern is cleaned like Go's ``filepath.Clean`` and a leading ``/`` is
  dropped, so patterns are anchored at the context root;
- ``!`` marks an exception; patterns apply in order and the last one that
  matches a path, or any directory above it, decides;
- so a pattern matching a directory excludes everything below it, unless a
  later exception names something below.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import field
from pathlib import Path

from pybuild._frozen import frozen
from pybuild.errors import ContextError

from ._gomatch import (
    GO_SPACE,
    BadPattern,
    IgnoreMatcher,
    compile_element,
    compile_ignore_pattern,
    go_clean,
)

_BOM = "\ufeff"


@frozen
class _Pattern:
    text: str
    exclusion: bool
    match: IgnoreMatcher
    # for "could an exception re-include something below this directory?":
    # one predicate per leading path element, up to the first element with **
    element_matchers: tuple[Callable[[str], bool], ...]
    unbounded: bool  # has ** somewhere: may match at any depth


def read_ignore_lines(text: str) -> list[str]:
    """The patterns of an ignore file, as Docker's ``ignorefile.ReadAll`` returns them."""
    patterns = []
    for number, line in enumerate(text.split("\n")):
        if line.endswith("\r"):
            line = line[:-1]
        if number == 0 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if line.startswith("#"):
            continue
        line = line.strip(GO_SPACE)
        if not line:
            continue
        invert = line[0] == "!"
        if invert:
            line = line[1:].strip(GO_SPACE)
        if line:
            line = go_clean(line)
            if len(line) > 1 and line[0] == "/":
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def _compile(raw: str, source: str) -> _Pattern | None:
    trimmed = raw.strip(GO_SPACE)
    if not trimmed:
        return None
    text = go_clean(trimmed)
    exclusion = text[0] == "!"
    if exclusion:
        if len(text) == 1:
            raise ContextError(
                f'{source}: illegal exclusion pattern: "!"',
                hint="write the path to re-include after the '!'",
            )
        text = text[1:]
    try:
        matcher = compile_ignore_pattern(text)
        elements = []
        unbounded = False
        for element in text.split("/"):
            if "**" in element:
                unbounded = True
                break
            elements.append(compile_element(element))
    except BadPattern:
        raise ContextError(
            f"{source}: syntax error in pattern {raw.strip(GO_SPACE)!r}",
            hint="check the [...] classes and trailing backslashes in the pattern",
        ) from None
    return _Pattern(text, exclusion, matcher, tuple(elements), unbounded)


@frozen
class DockerIgnore:
    """Compiled `.dockerignore` (or COPY ``--exclude``) patterns.

    ``patterns`` are the raw patterns in order (``!`` marks an exception), as
    patternmatcher.New receives them; ``from_text`` applies the ignore-file
    rules first.  ``DockerIgnore()`` ignores nothing.
    """

    patterns: tuple[str, ...] = ()
    source: str = field(default=".dockerignore", compare=False)
    _compiled: tuple[_Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = tuple(p for p in (_compile(raw, self.source) for raw in self.patterns) if p)
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "_compiled", compiled)

    @classmethod
    def from_text(cls, text: str, *, source: str = ".dockerignore") -> DockerIgnore:
        return cls(tuple(read_ignore_lines(text)), source)

    @classmethod
    def from_file(cls, path: Path) -> DockerIgnore:
        """The rules in the file ``path`` names (a path the user chose: links are followed)."""
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_IGNORE_FILE_SIZE + 1)
        except OSError as error:
            raise ContextError(f"cannot read {path}: {error.strerror}", hint="check the file's permissions") from None
        if len(data) > MAX_IGNORE_FILE_SIZE:
            raise ContextError(f"{path} is larger than the {MAX_IGNORE_FILE_SIZE // (1024 * 1024)} MiB limit")
        return cls.from_text(data.decode("utf-8", "surrogateescape"), source=str(path))

    @classmethod
    def load(cls, context_dir: Path, dockerfile_path: Path | None = None) -> DockerIgnore:
        """The ignore rules a build of ``context_dir`` with ``dockerfile_path`` uses.

        Never silently none: an ignore file that is a symlink out of its
        directory, a dangling one, or unreadable is a ContextError.
        """
        for directory, name in _candidates(context_dir, dockerfile_path):
            data = read_in_context(directory, name, limit=MAX_IGNORE_FILE_SIZE)
            if data is not None:
                return cls.from_text(data.decode("utf-8", "surrogateescape"), source=str(directory / name))
        return cls()

    def __bool__(self) -> bool:
        return bool(self._compiled)

    @property
    def has_exceptions(self) -> bool:
        return any(p.exclusion for p in self._compiled)

    # -- matching ---------------------------------------------------------

    def matches(self, relpath: str) -> bool:
        """True if ``relpath`` (relative to the context, ``/``-separated) is ignored."""
        path = go_clean(relpath.lstrip("/")) if relpath else "."
        if path == "." or not self._compiled:
            return False
        state = 0
        parts = path.split("/")
        for depth in range(1, len(parts)):
            _, state = self.check("/".join(parts[:depth]), state)
        ignored, _ = self.check(path, state)
        return ignored

    def check(self, relpath: str, parent_state: int = 0) -> tuple[bool, int]:
        """Whether ``relpath`` is ignored, given its parent directory's state.

        The state is a bit set: bit *i* says pattern *i* matched the parent
        or a directory above it.  Pass 0 for a child of the context root and
        hand the returned state to this path's own children, so a walk
        compares each pattern with each path once.
        """
        state = parent_state
        for i, pattern in enumerate(self._compiled):
            if not state >> i & 1 and pattern.match(relpath):
                state |= 1 << i
        if not state:
            return False, 0
        return not self._compiled[state.bit_length() - 1].exclusion, state

    def could_include_below(self, dir_relpath: str) -> bool:
        """Could an exception re-include something strictly below this directory?

        Conservative: True unless every ``!`` pattern provably matches only
        paths elsewhere (it has fewer elements, or a leading element that
        does not match the directory's).
        """
        if not self.has_exceptions:
            return False
        parts = [] if dir_relpath in ("", ".") else dir_relpath.split("/")
        for pattern in self._compiled:
            if not pattern.exclusion:
                continue
            elements = pattern.element_matchers
            if not pattern.unbounded and len(elements) <= len(parts):
                continue
            if all(match(part) for match, part in zip(elements, parts)):
                return True
        return False

    # -- walking ----------------------------------------------------------

    def walk(self, context_dir: Path) -> Iterator[str]:
        """Relative paths of everything in ``context_dir`` that is not ignored.

        Parents come before children.  An ignored directory is not entered
        unless an exception could re-include something below it; it is
        listed only if something below it is.  Symlinks are never followed.
        """
        try:
            fd = os.open(context_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise ContextError(f"cannot read the build context {context_dir}: {error.strerror}") from None
        try:
            yield from self._walk_fd(fd, "", 0, [])
        finally:
            os.close(fd)

    def _walk_fd(self, dir_fd: int, rel: str, state: int, pending: list[str]) -> Iterator[str]:
        with os.scandir(dir_fd) as it:
            children = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in it)
        for name, is_dir in children:
            child = f"{rel}/{name}" if rel else name
            ignored, child_state = self.check(child, state) if self._compiled else (False, 0)
            if not is_dir:
                if not ignored:
                    yield from pending
                    pending.clear()
                    yield child
                continue
            if ignored and not self.could_include_below(child):
                continue
            try:
                sub_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except PermissionError:
                if ignored:
                    continue  # unreadable but ignored: only an exception could have needed it
                raise ContextError(f"cannot read {child} in the build context: permission denied") from None
            except OSError as error:
                raise ContextError(f"cannot read {child} in the build context: {error.strerror}") from None
            try:
                if ignored:
                    # listed only once something below it is
                    mark = len(pending)
                    pending.append(child)
                    yield from self._walk_fd(sub_fd, child, child_state, pending)
                    del pending[mark:]
                else:
                    yield from pending
                    pending.clear()
                    yield child
                    yield from self._walk_fd(sub_fd, child, child_state, pending)
            finally:
                os.close(sub_fd)


# BuildKit's frontend reads the Dockerfile and ignore files as one gRPC
# message at most: 16 MiB (containerd's DefaultMaxRecvMsgSize).
MAX_IGNORE_FILE_SIZE = 16 * 1024 * 1024
_MAX_LINKS = 40  # as the kernel's path walk


def _candidates(context_dir: Path, dockerfile_path: Path | None) -> list[tuple[Path, str]]:
    """Where Docker looks for ignore rules, in order: ``<Dockerfile>.dockerignore``
    beside the Dockerfile, then ``.dockerignore`` at the context root; each as
    (the directory it is read from, its name there)."""
    out = []
    if dockerfile_path is not None and str(dockerfile_path) not in ("-", "<stdin>"):
        out.append((Path(dockerfile_path).parent, f"{Path(dockerfile_path).name}.dockerignore"))
    out.append((Path(context_dir), ".dockerignore"))
    return out


def find_ignore_file(context_dir: Path, dockerfile_path: Path | None = None) -> Path | None:
    """The ignore file Docker would use: ``<Dockerfile>.dockerignore`` first, then
    ``.dockerignore`` at the context root; None if neither exists.

    ``dockerfile_path`` is a path as the user gave it with ``-f`` (relative
    paths are taken from the current directory, like the docker CLI does).
    A symlink counts as the file: ``DockerIgnore.load`` follows it inside the
    directory it is read from, and refuses one that leads out or nowhere.
    """
    for directory, name in _candidates(context_dir, dockerfile_path):
        if os.path.lexists(directory / name):
            return directory / name
    return None


def read_in_context(root: Path, relpath: str, *, limit: int) -> bytes | None:
    """The bytes of the regular file ``relpath`` names inside ``root``; None if
    nothing by that name exists.

    Symlinks on the way are followed as long as they stay inside ``root``
    (BuildKit reads these files from a copy of the context, where no link can
    lead further); each step is opened relative to the directory before it
    without following links, so nothing swapped in meanwhile can redirect the
    read.  A link that leaves ``root``, one that leads nowhere, a directory,
    an unreadable file or one over ``limit`` bytes is a ContextError naming it.
    """
    named = relpath
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise ContextError(f"cannot read {root}: {error.strerror}") from None
    fds = [root_fd]  # the directories walked, from root: ".." pops one
    try:
        fd = _walk_to_file(root, fds, relpath, named)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise ContextError(f"cannot read {named}: {error.strerror}", hint="check the file's permissions") from None
    finally:
        for dir_fd in fds:
            os.close(dir_fd)
    if len(data) > limit:
        raise ContextError(f"{named} is larger than the {limit // (1024 * 1024)} MiB limit")
    return data


def _walk_to_file(root: Path, fds: list[int], relpath: str, named: str) -> int | None:
    remaining = list(reversed(relpath.split("/")))
    links = 0
    via_link = False  # absent before any link means "no such file", after one "dangling"
    while remaining:
        part = remaining.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if len(fds) == 1:
                raise _outside(named, root)
            os.close(fds.pop())
            continue
        try:
            st = os.stat(part, dir_fd=fds[-1], follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            if not via_link:
                return None
            raise ContextError(
                f"{named} is a dangling symlink: {part!r} does not exist in {root}",
                hint="point the link at a file inside the build context, or remove it",
            ) from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise ContextError(f"{named}: too many levels of symbolic links")
            target = os.readlink(part, dir_fd=fds[-1])
            if target.startswith("/"):
                target = _inside(target, root, named, fds)
            remaining.extend(reversed(target.split("/")))
            via_link = True
            continue
        if remaining:
            if not stat.S_ISDIR(st.st_mode):
                raise ContextError(f"{named}: {part!r} is not a directory")
            fds.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1]))
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ContextError(f"{named} is not a regular file", hint="an ignore file or Dockerfile must be a file")
        fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=fds[-1])
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
            os.close(fd)
            raise ContextError(f"{named} changed while it was read")
        return fd
    raise ContextError(f"{named} is not a regular file", hint="an ignore file or Dockerfile must be a file")


def _inside(target: str, root: Path, named: str, fds: list[int]) -> str:
    """An absolute link target as a path from ``root``, if it names a place inside it."""
    real_root = os.path.realpath(root)
    relative = os.path.relpath(os.path.normpath(target), real_root)
    if relative == ".." or relative.startswith("../"):
        raise _outside(named, root, target)
    while len(fds) > 1:  # start again from the root
        os.close(fds.pop())
    return relative


def _outside(named: str, root: Path, target: str | None = None) -> ContextError:
    where = f" ({target})" if target else ""
    return ContextError(
        f"{named} is a symlink that leads outside {root}{where}",
        hint="Docker reads it inside the build context: copy the file in, or link to a file inside",
    )
