"""The tutorial's lessons about layers, as checks.

Every RUN, COPY and ADD commits a layer, and a layer can only add to what
the layers below it ship: deleting a file later hides it but its bytes stay
in the image.  Three rules follow (docker-images-tutorial.md, "RUN 执行命令"
and "多阶段构建"):

- ConsecutiveRunInstructions: RUNs one after another that could be one layer;
- PackageCacheInLayer: apt lists, pip/npm/yarn caches, the apk index left in
  the layer that filled them (clean up in the same RUN, or use a cache mount);
- FileRemovedInLaterLayer: a path added by COPY/ADD or a RUN and removed by
  a later RUN of the same image.

Only the stages that make up the image being built are checked (the target,
by default the last stage, and the stages it is built FROM): the layers of
other stages never ship, which is the point of a multi-stage build.  Shell
scripts are read statically (``_shell``), so these are best-effort
warnings: a path with a variable that cannot be resolved is left alone.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pybuild.cache import DockerIgnore
from pybuild.grammar import Add, Copy, Instruction, Run, ShellLex

from ._model import Source
from ._rules import Finding
from ._shell import SimpleCommand, command_words, simple_commands
from ._walk import Scope, Step, Walk, expand, join_path

_SHELL_LEX = ShellLex("\\")  # shell words escape with a backslash, whatever the Dockerfile's escape
_BARE_HEREDOC = re.compile(r"^<<-?\s*([\"']?)[A-Za-z0-9_.-]+\1\s*$")
_SHELL_SHEBANG = re.compile(r"^#!\s*(/usr)?/bin/(env\s+)?(sh|bash|dash|ash)\b")
_GLOB = re.compile(r"[*?\[]")
_ARCHIVE = re.compile(r"\.(tar|tgz|tbz2?|txz|tar\.(gz|bz2|xz|zst))$")
_PIP = re.compile(r"^pip(\d+(\.\d+)?)?$")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_APT = frozenset({"apt-get", "apt", "aptitude"})
_APT_FILLING = frozenset({"install", "update", "upgrade", "dist-upgrade", "full-upgrade", "build-dep"})
_NPM_INSTALL = frozenset({"install", "i", "ci", "add"})


# -- reading RUN scripts ---------------------------------------------------------


def run_commands(run: Run) -> list[SimpleCommand]:
    """The simple commands a RUN runs (a heredoc script counts as the script)."""
    if run.command.json:
        return command_words(run.command.args)
    text = run.command.args[0] if run.command.args else ""
    if run.files and _BARE_HEREDOC.match(text.strip()):
        data = run.files[0].data
        if data.startswith("#!") and not _SHELL_SHEBANG.match(data):
            return []  # a python (or other) script: not shell
        return simple_commands(data)
    # Otherwise any heredoc is input data of the command line (cat <<EOF > f).
    return simple_commands(text)


@dataclass(frozen=True)
class _Mount:
    kind: str
    target: str


def _mounts(run: Run, env: Mapping[str, str]) -> list[_Mount]:
    out = []
    for value in run.mounts:
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        target = fields.get("target") or fields.get("dst") or fields.get("destination")
        if not target:
            continue
        result = expand(ShellLex(), target, env)
        if result is not None:
            out.append(_Mount(fields.get("type", "bind"), join_path("/", result.result)))
    return out


class _Resolver:
    """Shell words of one RUN -> values and absolute paths, tracking ``cd``."""

    def __init__(self, scope: Scope) -> None:
        self.env = scope.env
        self.cwd = scope.workdir
        self.home = scope.env.get("HOME") or "/root"

    def value(self, word: str, assignments: tuple[str, ...] = ()) -> str | None:
        if "$(" in word or "`" in word:
            return None  # command substitution: unknown until it runs
        env = dict(self.env)
        for assignment in assignments:
            name, _, raw = assignment.partition("=")
            result = expand(_SHELL_LEX, raw, env)
            if result is not None:
                env[name] = result.result
        result = expand(_SHELL_LEX, word, env)
        if result is None or result.unmatched:
            return None
        text = result.result
        if text == "~" or text.startswith("~/"):
            text = self.home + text[1:]
        return text

    def path(self, word: str) -> str | None:
        text = self.value(word)
        if not text or text == "-":
            return None
        return join_path(self.cwd, text)

    def follow(self, command: SimpleCommand) -> None:
        if command.name == "cd" and len(command.words) >= 2:
            target = self.path(command.words[-1])
            if target is not None:
                self.cwd = target


def _arguments(command: SimpleCommand, resolver: _Resolver) -> list[str]:
    """The resolved words after the command name (unknown ones dropped)."""
    return [v for v in (resolver.value(word, command.assignments) for word in command.words[1:]) if v is not None]


def _operands(words: list[str], takes_value: frozenset[str] = frozenset()) -> list[str]:
    """Non-option words: skips -x, --long, --long=v, and the values of ``takes_value``."""
    out: list[str] = []
    skip_next = False
    only_operands = False
    for word in words:
        if skip_next:
            skip_next = False
        elif only_operands or not word.startswith("-") or word == "-":
            out.append(word)
        elif word == "--":
            only_operands = True
        elif word in takes_value:
            skip_next = True
    return out


def _covers(directory: str, path: str) -> bool:
    """Whether removing (or mounting) ``directory`` takes ``path`` with it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# -- ConsecutiveRunInstructions ----------------------------------------------------


def _joinable(a: Run, b: Run) -> bool:
    """Two RUNs whose scripts can simply be joined with && into one RUN."""
    return (
        not a.command.json and not b.command.json and not a.files and not b.files
        and a.mounts == b.mounts and a.network == b.network and a.security == b.security
    )


def consecutive_runs(instructions: tuple[Instruction, ...]) -> Iterator[Finding]:
    group: list[Run] = []
    for instruction in (*instructions, None):
        if isinstance(instruction, Run) and group and _joinable(group[-1], instruction):
            group.append(instruction)
            continue
        if len(group) >= 2:
            lines = [str(run.span.start) for run in group]
            listed = ", ".join(lines[:-1]) + " and " + lines[-1]
            yield Finding(
                "ConsecutiveRunInstructions", group[0].span.start, group[-1].span.end,
                f"RUN instructions on lines {listed} make {len(group)} layers; they could be one RUN joined with &&",
                f"write one RUN: {_joined_preview(group)}",
            )
        group = [instruction] if isinstance(instruction, Run) else []


def _joined_preview(group: list[Run]) -> str:
    parts = [" ".join(run.command.args[0].split()) for run in group]
    text = " && ".join(parts)
    return text if len(text) <= 100 else text[:97] + "..."


# -- PackageCacheInLayer ---------------------------------------------------------------


@dataclass(frozen=True)
class _RunFacts:
    commands: tuple[SimpleCommand, ...]
    removed: tuple[str, ...]  # absolute paths or patterns that rm removes
    mounted: tuple[str, ...]  # targets of cache and tmpfs mounts (not in the layer)


def _removal_takes(pattern: str, path: str) -> bool:
    if _GLOB.search(pattern):
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path + "/x", pattern)
    return _covers(pattern, path)


def _cleaned(facts: _RunFacts, directory: str) -> bool:
    return any(_removal_takes(r, directory) for r in facts.removed) or any(_covers(m, directory) for m in facts.mounted)


def _words(command: SimpleCommand, resolver: _Resolver) -> list[str]:
    return [command.name, *_arguments(command, resolver)]


def package_caches(run: Run, facts: _RunFacts, scope: Scope, resolvers: list[_Resolver]) -> Iterator[Finding]:
    home = scope.env.get("HOME") or "/root"
    found: dict[str, tuple[str, str]] = {}  # manager -> (message, hint), first command only
    for command, resolver in zip(facts.commands, resolvers, strict=True):
        words = _words(command, resolver)
        name, args = words[0], words[1:]
        operands = _operands(args)
        if name in _APT and _APT_FILLING & set(operands) and "apt" not in found:
            if not _cleaned(facts, "/var/lib/apt/lists"):
                verb = next(w for w in operands if w in _APT_FILLING)
                found["apt"] = (
                    f"'{name} {verb}' leaves the package lists in /var/lib/apt/lists in this layer",
                    "end this same RUN with && rm -rf /var/lib/apt/lists/* (a later RUN cannot shrink this layer), "
                    "or use RUN --mount=type=cache,target=/var/lib/apt/lists",
                )
        elif _is_pip_install(name, args) and "pip" not in found:
            assigned = any(a.startswith("PIP_NO_CACHE_DIR=") for a in command.assignments)
            if not (
                any(w.startswith("--no-cache-dir") for w in args) or assigned or scope.env.get("PIP_NO_CACHE_DIR")
                or _cleaned(facts, f"{home}/.cache/pip") or _runs(facts, resolvers, "pip", "cache", "purge")
            ):
                found["pip"] = (
                    f"'pip install' keeps pip's download cache ({home}/.cache/pip) in this layer",
                    "add --no-cache-dir (or ENV PIP_NO_CACHE_DIR=1), "
                    f"or use RUN --mount=type=cache,target={home}/.cache/pip",
                )
        elif name == "npm" and operands[:1] and operands[0] in _NPM_INSTALL and "npm" not in found:
            if not (_cleaned(facts, f"{home}/.npm") or _runs(facts, resolvers, "npm", "cache", "clean")):
                found["npm"] = (
                    f"'npm {operands[0]}' keeps npm's cache ({home}/.npm) in this layer",
                    f"end this same RUN with && npm cache clean --force, or use RUN --mount=type=cache,target={home}/.npm",
                )
        elif name == "yarn" and _is_yarn_install(operands) and "yarn" not in found:
            if not (
                _cleaned(facts, f"{home}/.cache/yarn") or _cleaned(facts, "/usr/local/share/.cache/yarn")
                or _runs(facts, resolvers, "yarn", "cache", "clean")
            ):
                found["yarn"] = (
                    f"'yarn {' '.join(operands[:1]) or 'install'}' keeps yarn's cache in this layer",
                    "end this same RUN with && yarn cache clean, or use a cache mount for yarn's cache directory",
                )
        elif name == "apk" and {"add", "update"} & set(operands) and "apk" not in found:
            if "--no-cache" not in args and not _cleaned(facts, "/var/cache/apk") and not _cleaned(facts, "/etc/apk/cache"):
                verb = "add" if "add" in operands else "update"
                found["apk"] = (
                    f"'apk {verb}' without --no-cache keeps the package index in /var/cache/apk in this layer",
                    f"write apk {verb} --no-cache ... (apk then neither needs nor keeps the index)",
                )
    for message, hint in found.values():
        yield Finding("PackageCacheInLayer", run.span.start, run.span.end, message, hint)


def _is_pip_install(name: str, args: list[str]) -> bool:
    if _PIP.match(name):
        return "install" in _operands(args)[:1]
    if _PYTHON.match(name) and "-m" in args:
        after = args[args.index("-m") + 1 :]
        return bool(after) and _PIP.match(after[0]) is not None and "install" in after[1:2]
    return False


def _is_yarn_install(operands: list[str]) -> bool:
    return not operands or operands[0] in ("install", "add") or operands[:2] == ["global", "add"]


def _runs(facts: _RunFacts, resolvers: list[_Resolver], *words: str) -> bool:
    """Whether the RUN runs a command that starts with ``words`` (options aside)."""
    for command, resolver in zip(facts.commands, resolvers, strict=True):
        found = _words(command, resolver)
        if found[:1] == [words[0]] and _operands(found[1:])[: len(words) - 1] == list(words[1:]):
            return True
    return False


# -- FileRemovedInLaterLayer -----------------------------------------------------------


@dataclass(frozen=True)
class _Created:
    path: str
    kind: str  # "file"; "tree" (a directory with contents); "dir" (contents unknown: exact match only)
    line: int
    how: str
    context_root: str | None = None  # a context directory (relative) copied to ``path``: descendants are checked there


def _inside(pattern: str, created: _Created) -> str | None:
    """The part of ``pattern`` below a created directory tree, if it is below it."""
    prefix = created.path.rstrip("/") + "/"
    if created.kind == "tree" and not _GLOB.search(pattern) and pattern.startswith(prefix):
        return pattern[len(prefix) :]
    return None


class _FileTracker:
    """Paths the layers of one image have added, and the RUNs that remove them."""

    def __init__(self, lex: ShellLex, context_dir: Path | None, ignore: DockerIgnore | None) -> None:
        self.lex = lex
        self.context_dir = context_dir
        self.ignore = ignore
        self.created: list[_Created] = []

    def copy(self, instruction: Copy | Add, scope: Scope) -> None:
        dest_result = expand(self.lex, instruction.dest, scope.env)
        if dest_result is None:
            return
        dest = join_path(scope.workdir, dest_result.result)
        how = instruction.keyword
        line = instruction.span.start
        written = dest_result.result
        into_dir = (
            written.endswith("/") or posixpath.basename(written) in (".", "..")
            or len(instruction.sources) + len(instruction.files) > 1
        )
        for inline in instruction.files:
            self.created.append(_Created(posixpath.join(dest, inline.name) if into_dir else dest, "file", line, how))
        from_context = not (isinstance(instruction, Copy) and instruction.from_)
        for word in instruction.sources:
            result = expand(self.lex, word, scope.env)
            if result is None:
                continue
            source = result.result
            if "://" in source:
                name = posixpath.basename(source.split("?", 1)[0].rstrip("/")) or "index.html"
                self.created.append(_Created(posixpath.join(dest, name) if into_dir else dest, "file", line, how))
            elif from_context and self.context_dir is not None:
                self.from_context(source, dest, into_dir, isinstance(instruction, Add), line, how)
            else:
                name = posixpath.basename(source.rstrip("/"))
                if into_dir and name not in ("", ".", "..") and not _GLOB.search(name):
                    self.created.append(_Created(posixpath.join(dest, name), "file", line, how))
                else:
                    self.created.append(_Created(dest, "dir", line, how))

    def from_context(self, source: str, dest: str, into_dir: bool, is_add: bool, line: int, how: str) -> None:
        assert self.context_dir is not None
        relative = posixpath.normpath(source.lstrip("/")) or "."
        if _GLOB.search(relative):
            matches = sorted(str(p.relative_to(self.context_dir)) for p in self.context_dir.glob(relative))[:100]
            into_dir = True
        else:
            matches = [relative]
        for match in matches:
            if self.ignore is not None and match != "." and self.ignore.matches(match):
                continue
            path = self.context_dir / match
            if path.is_dir() and not path.is_symlink():
                self.created.append(_Created(dest, "tree", line, how, context_root=match))
            elif path.exists():
                target = posixpath.join(dest, posixpath.basename(match)) if into_dir else dest
                kind = "dir" if is_add and _ARCHIVE.search(match) else "file"  # ADD unpacks local archives
                self.created.append(_Created(dest if kind == "dir" else target, kind, line, how))

    def removes(self, pattern: str, created: _Created) -> bool:
        """Whether removing ``pattern`` takes away bytes that ``created`` added."""
        if _GLOB.search(pattern):
            path = created.path
            while True:
                if fnmatch.fnmatchcase(path, pattern):
                    return True
                if path == "/":
                    return False
                path = posixpath.dirname(path)
        if _covers(pattern, created.path):
            return True
        below = _inside(pattern, created)
        if below is None:
            return False
        if created.context_root is None:
            return True
        # A tree copied from the context: was the path really in it (and not ignored)?
        relative = posixpath.normpath(posixpath.join(created.context_root, below))
        assert self.context_dir is not None
        if self.ignore is not None and self.ignore.matches(relative):
            return False
        return os.path.lexists(self.context_dir / relative)

    def run(self, run: Run, facts: _RunFacts, resolvers: list[_Resolver]) -> Iterator[Finding]:
        line = run.span.start
        earlier = list(self.created)
        new: list[_Created] = []
        for command, resolver in zip(facts.commands, resolvers, strict=True):
            for word, pattern in self.removals(command, resolver):
                hits = [c for c in earlier if self.removes(pattern, c)]
                if hits:
                    earlier = [c for c in earlier if c not in hits]
                    yield self.finding(run, word, pattern, hits)
                new = [c for c in new if not self.removes(pattern, c)]
            new.extend(self.creations(command, resolver, line))
        self.created = [c for c in self.created if c in earlier] + new

    @staticmethod
    def finding(run: Run, word: str, pattern: str, hits: list[_Created]) -> Finding:
        # Name the most specific addition: the deepest path, the latest step.
        first = max(hits, key=lambda c: (c.path.count("/"), c.line))
        more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
        if _inside(pattern, first) is not None:
            what = f"{pattern}, which came in with {first.how} on line {first.line} (into {first.path})"
        else:
            what = f"{first.path}{more}, added on line {first.line} by {first.how}"
        if first.how in ("COPY", "ADD"):
            hint = (
                "copy only what the image needs (.dockerignore, narrower sources; RUN --mount=type=bind uses a file "
                "without copying it), or do this work in a build stage and COPY --from only the result"
            )
        else:
            hint = (
                "fetch, use and remove it in one RUN joined with &&, or do it in a build stage and "
                "COPY --from only the result"
            )
        return Finding(
            "FileRemovedInLaterLayer", run.span.start, run.span.end,
            f"'{word}' removes {what}; its bytes still ship in that earlier layer",
            hint,
        )

    @staticmethod
    def removals(command: SimpleCommand, resolver: _Resolver) -> Iterator[tuple[str, str]]:
        if command.name == "rm":
            words = _operands(list(command.words[1:]))
        elif command.name == "mv" and len(_operands(list(command.words[1:]))) >= 2:
            words = _operands(list(command.words[1:]))[:-1]
        else:
            return
        for word in words:
            path = resolver.path(word)
            if path is not None and path != "/":
                yield f"{command.name} {word}", path

    @staticmethod
    def creations(command: SimpleCommand, resolver: _Resolver, line: int) -> Iterator[_Created]:
        how = f"RUN {command.name}" if command.name else "RUN"
        for target in command.writes:
            path = resolver.path(target)
            if path is not None and not path.startswith("/dev/"):
                yield _Created(path, "file", line, how)
        args = _arguments(command, resolver)
        for path, kind in _created_by(command.name, args):
            yield _Created(join_path(resolver.cwd, path), kind, line, how)


def _created_by(name: str, args: list[str]) -> Iterator[tuple[str, str]]:
    """What a command writes: (path as given, kind)."""
    if name == "wget":
        yield from _wget(args)
    elif name == "curl":
        yield from _curl(args)
    elif name == "git" and args[:1] == ["clone"]:
        operands = _operands(args[1:], frozenset({"-b", "--branch", "--depth", "-c", "--config", "-o", "--origin", "-j", "--jobs"}))
        if len(operands) >= 2:
            yield operands[1], "tree"
        elif operands:
            yield posixpath.basename(operands[0].rstrip("/")).removesuffix(".git"), "tree"
    elif name in ("cp", "mv"):
        operands = _operands(args, frozenset({"-t", "--target-directory"}))
        if len(operands) >= 2:
            yield operands[-1], "tree"
    elif name == "mkdir":
        for operand in _operands(args, frozenset({"-m", "--mode"})):
            yield operand, "dir"
    elif name == "touch":
        for operand in _operands(args, frozenset({"-d", "-r", "-t"})):
            yield operand, "file"
    elif name == "tar":
        yield from _tar(args)
    elif name == "unzip" and "-d" in args[:-1]:
        yield args[args.index("-d") + 1], "tree"


def _wget(args: list[str]) -> Iterator[tuple[str, str]]:
    output = prefix = None
    urls = []
    for i, word in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else None
        if word in ("-O", "--output-document"):
            output = value
        elif word.startswith("--output-document="):
            output = word.partition("=")[2]
        elif word.startswith("-O") and len(word) > 2:
            output = word[2:]
        elif word in ("-P", "--directory-prefix"):
            prefix = value
        elif word.startswith("--directory-prefix="):
            prefix = word.partition("=")[2]
        elif "://" in word:
            urls.append(word)
    if output is not None:
        if output != "-":
            yield output, "file"
        return
    for url in urls:
        name = posixpath.basename(url.split("?", 1)[0].rstrip("/")) or "index.html"
        yield (posixpath.join(prefix, name) if prefix else name), "file"


def _curl(args: list[str]) -> Iterator[tuple[str, str]]:
    remote_name = False
    output_dir = None
    urls = []
    i = 0
    while i < len(args):
        word = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if word in ("--output", "-o") and value is not None:
            if value != "-":
                yield value, "file"
            return
        if word == "--output-dir":
            output_dir = value
            i += 1
        elif word == "--remote-name":
            remote_name = True
        elif word.startswith("-") and not word.startswith("--"):
            letters = word[1:]
            if "o" in letters:
                rest = letters[letters.index("o") + 1 :]
                output = rest or value
                if output and output != "-":
                    yield output, "file"
                return
            remote_name = remote_name or "O" in letters
        elif "://" in word:
            urls.append(word)
        i += 1
    if remote_name:
        for url in urls:
            name = posixpath.basename(url.split("?", 1)[0].rstrip("/"))
            if name:
                yield (posixpath.join(output_dir, name) if output_dir else name), "file"


def _tar(args: list[str]) -> Iterator[tuple[str, str]]:
    mode = ""
    archive = directory = None
    i = 0
    while i < len(args):
        word = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if word in ("--extract", "--get"):
            mode = "x"
        elif word == "--create":
            mode = "c"
        elif word.startswith(("--file=", "--directory=")):
            key, _, val = word.partition("=")
            if key == "--file":
                archive = val
            else:
                directory = val
        elif word in ("--file", "--directory"):
            archive, directory = (value, directory) if word == "--file" else (archive, value)
            i += 1
        elif (word.startswith("-") and not word.startswith("--")) or i == 0:
            letters = word.lstrip("-")
            mode = mode or next((c for c in letters if c in "xc"), "")
            for position, letter in enumerate(letters):
                if letter in "fC":
                    rest = letters[position + 1 :]
                    taken = rest or value
                    if not rest:
                        i += 1
                    archive, directory = (taken, directory) if letter == "f" else (archive, taken)
                    break
        i += 1
    if mode == "c" and archive and archive != "-":
        yield archive, "file"
    elif mode == "x" and directory:
        yield directory, "tree"


# -- all three -----------------------------------------------------------------------


def image_stages(walk: Walk) -> list[int]:
    """Indexes of the stages whose layers make up the target image, base first."""
    chain = []
    index: int | None = walk.target
    while index is not None:
        chain.append(index)
        index = walk.stages[index].parent
    return list(reversed(chain))


def layer_findings(
    source: Source, walk: Walk, *, context_dir: Path | None, ignore: DockerIgnore | None
) -> list[Finding]:
    lex = ShellLex(source.ast.escape)
    findings: list[Finding] = []
    steps_by_stage: dict[int, list[Step]] = {}
    for step in walk.steps:
        steps_by_stage.setdefault(step.stage.stage.index, []).append(step)
    tracker = _FileTracker(lex, context_dir, ignore)
    for index in image_stages(walk):
        findings.extend(consecutive_runs(walk.stages[index].stage.instructions))
        for step in steps_by_stage.get(index, []):
            instruction, scope = step.instruction, step.before
            if isinstance(instruction, (Copy, Add)):
                tracker.copy(instruction, scope)
            elif isinstance(instruction, Run):
                facts, resolvers = _facts(instruction, scope)
                findings.extend(package_caches(instruction, facts, scope, resolvers))
                findings.extend(tracker.run(instruction, facts, resolvers))
    return findings


def _facts(run: Run, scope: Scope) -> tuple[_RunFacts, list[_Resolver]]:
    """The commands of a RUN, each with the resolver (cwd) it runs with, and what it removes."""
    resolver = _Resolver(scope)
    commands = run_commands(run)
    resolvers: list[_Resolver] = []
    removed: list[str] = []
    for command in commands:
        snapshot = _Resolver(scope)
        snapshot.cwd = resolver.cwd
        resolvers.append(snapshot)
        if command.name == "rm":
            for word in _operands(list(command.words[1:])):
                path = resolver.path(word)
                if path is not None:
                    removed.append(path)
        resolver.follow(command)
    mounted = tuple(m.target for m in _mounts(run, scope.env) if m.kind in ("cache", "tmpfs"))
    return _RunFacts(tuple(commands), tuple(removed), mounted), resolvers
