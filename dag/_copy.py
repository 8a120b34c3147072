"""COPY and ADD -> file actions (BuildKit's dispatchCopy)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlparse

from pybuild.errors import BuildError, ContextError, DockerfileError, ExpansionError
from pybuild.grammar import Add, Copy, Instruction, ShellLex, Stage
from pybuild.oci import check_git_source, redact_urls, split_userinfo

from ._chmod import validate_chmod
from ._graph import GraphBuilder
from ._ops import Chown, CopyAction, FileOp, GitSource, HttpSource, MergeOp, MkfileAction, OpMeta
from ._stage import StageState

_GIT_URL = re.compile(r"^(?:git@[^:]+:|git://|ssh://|https?://[^#?]+\.git(?:[#?]|$)|https?://[^#]+#)")


def is_git_source(src: str) -> bool:
    return bool(_GIT_URL.match(src))


def is_http_source(src: str) -> bool:
    return src.startswith(("http://", "https://")) and not is_git_source(src)


def contains_wildcards(name: str) -> bool:
    i = 0
    while i < len(name):
        if name[i] in "*?[":
            return True
        if name[i] == "\\":
            i += 1
        i += 1
    return False


def dest_path(workdir: str, dest: str) -> str:
    """The destination made absolute against WORKDIR, keeping a trailing slash."""
    if dest in ("", "."):
        dest = "./"
    keep_slash = dest.endswith("/") or dest.endswith("/.")
    joined = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    clean = posixpath.normpath(joined)
    if clean.startswith("//"):
        clean = clean[1:]
    if keep_slash and clean != "/":
        clean += "/"
    return clean


def _source_path(src: str) -> str:
    clean = posixpath.normpath("/" + src)
    return clean[1:] if clean.startswith("//") else clean


def _chown(value: str | None) -> Chown | None:
    if not value:
        return None
    user, _, group = value.partition(":")
    return Chown(user, group or None)


@dataclass
class _GitRef:
    """What a git URL asks for, from its ``#ref:subdir`` fragment and ``?key=value`` query."""

    remote: str
    ref: str | None = None
    subdir: str | None = None
    checksum: str | None = None
    keep_git_dir: bool | None = None
    submodules: bool | None = None


_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_QUERY_KEYS = ("ref", "tag", "branch", "subdir", "checksum", "commit", "keep-git-dir", "submodules")


def _git_parts(src: str) -> _GitRef:
    """``URL[?query][#ref[:subdir]]`` read as BuildKit's dfgitutil.ParseGitRef (Dockerfile 1.18)."""
    base, _, fragment = src.partition("#")
    remote, has_query, query = base.partition("?")
    ref, _, subdir = fragment.partition(":")
    parts = _GitRef(remote, ref or None, subdir or None)
    if has_query:
        _load_query(parts, query)
    return parts


def _load_query(parts: _GitRef, query: str) -> None:
    def refuse(message: str) -> BuildError:
        return BuildError(f"git URL query: {message}", hint=f"the keys are {', '.join(_QUERY_KEYS)}")

    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _QUERY_KEYS:
            raise refuse(f"unexpected query {key!r}")
        if key in values:
            raise refuse(f"query {key!r} has multiple values")
        if value == "" and key not in ("keep-git-dir", "submodules"):
            raise refuse(f"query {key!r} has no value")
        values[key] = value

    def pin(what: str, current: str | None, wanted: str) -> str:
        if current is not None and current != wanted:
            raise refuse(f"{what} conflicts: {current!r} vs {wanted!r}")
        return wanted

    if "ref" in values:
        parts.ref = pin("ref", parts.ref, values["ref"])
    if "tag" in values and "branch" in values:
        raise refuse("branch conflicts with tag")
    for key, prefix in (("tag", "refs/tags/"), ("branch", "refs/heads/")):
        if key in values:
            name = values[key] if values[key].startswith(prefix) else prefix + values[key]
            parts.ref = pin("ref", parts.ref, name)
    if "subdir" in values:
        parts.subdir = pin("subdir", parts.subdir, values["subdir"])
    parts.checksum = values.get("checksum", values.get("commit"))
    for key in ("keep-git-dir", "submodules"):
        if key in values:
            flag = _GO_BOOLS.get(values[key] or "true")
            if flag is None:
                raise refuse(f"invalid {key} value: {values[key]!r}")
            setattr(parts, key.replace("-", "_"), flag)


_COMMIT_PREFIX = re.compile(r"^[0-9a-fA-F]{1,64}$")


def git_source(src: str, keep_git_dir: bool = False, checksum: str | None = None) -> GitSource:
    """``URL[?query][#ref:subdir]`` as an op, its credentials apart; BuildError if a part is not allowed."""
    parts = _git_parts(src)
    remote, userinfo = split_userinfo(parts.remote)
    check_git_source(remote, parts.ref, parts.subdir)
    if parts.submodules:
        raise BuildError("git submodules are not fetched by pybuild", hint="drop submodules=true, or add them in a RUN step")
    if checksum and parts.checksum and checksum != parts.checksum:
        raise BuildError(f"checksum conflicts: --checksum={checksum} vs the URL's {parts.checksum}")
    checksum = checksum or parts.checksum
    if checksum is not None and not _COMMIT_PREFIX.match(checksum):
        raise BuildError(
            f"invalid checksum {checksum!r} for a git source: it is the commit id or a prefix of it",
            hint="e.g. --checksum=be1f38e",
        )
    return GitSource(
        remote=remote, ref=parts.ref, subdir=parts.subdir, keep_git_dir=keep_git_dir or bool(parts.keep_git_dir),
        userinfo=userinfo, checksum=checksum,
    )


def http_source(src: str, filename: str, checksum: str | None = None) -> HttpSource:
    """A download as an op, the URL's credentials apart from it."""
    url, userinfo = split_userinfo(src)
    return HttpSource(url=url, filename=filename, checksum=checksum, userinfo=userinfo)


class CopyOptions(Protocol):
    @property
    def source_date_epoch(self) -> int | None: ...


class Conversion(Protocol):
    """What COPY and ADD ask of the conversion they are part of (``_convert``'s converter)."""

    @property
    def options(self) -> CopyOptions: ...

    @property
    def lex(self) -> ShellLex: ...

    @property
    def graph(self) -> GraphBuilder: ...

    def error(self, instruction: Instruction | Stage, message: str, hint: str | None = None) -> DockerfileError: ...

    def expand(self, where: Instruction | Stage, word: str, env: Mapping[str, str]) -> str: ...

    def lex_display(self, text: str, scope: Mapping[str, str]) -> str: ...

    def source_op(self, where: Instruction, stage: Stage, name: str) -> str | None:
        """The op of ``--from=name``: an earlier stage or an image."""

    def context(self) -> str:
        """The op of the build context."""

    def meta(self, state: StageState, instruction: Instruction, description: str) -> OpMeta: ...

    def ignore_cache(self, state: StageState) -> bool: ...

    def history(self, state: StageState, created_by: str, layer_op: str | None = None) -> None: ...


def _check_excludes(conv: Conversion, cmd: Copy | Add) -> None:
    """A ``--exclude`` pattern moby/patternmatcher would reject fails here, with
    the instruction's line, before anything is copied."""
    if cmd.excludes:
        from pybuild.cache import DockerIgnore

        try:
            DockerIgnore(tuple(cmd.excludes), source="--exclude")
        except ContextError as error:
            raise conv.error(cmd, error.message, hint=error.hint) from None


def convert_copy(conv: Conversion, state: StageState, stage: Stage, cmd: Copy | Add) -> None:
    is_add = isinstance(cmd, Add)
    keyword = "ADD" if is_add else "COPY"
    scope = state.env_map()
    sources = [conv.expand(cmd, s, scope) for s in cmd.sources]
    dest_written = conv.expand(cmd, cmd.dest, scope)
    chown = conv.expand(cmd, cmd.chown, scope) if cmd.chown else None
    chmod = conv.expand(cmd, cmd.chmod, scope) if cmd.chmod else None
    if chmod:
        try:
            validate_chmod(chmod)
        except ValueError as error:
            raise conv.error(cmd, str(error)) from None
    _check_excludes(conv, cmd)
    checksum = cmd.checksum if isinstance(cmd, Add) else None
    unpack = cmd.unpack if isinstance(cmd, Add) else None
    if checksum:
        if len(sources) != 1 or not (is_http_source(sources[0]) or is_git_source(sources[0])):
            raise conv.error(cmd, "checksum requires a single HTTP(S) or Git source")
    if len(sources) + len(cmd.files) > 1 and not dest_written.endswith("/"):
        raise conv.error(
            cmd,
            f"When using {keyword} with more than one source file, the destination must be a directory and end with a /",
        )
    dest = dest_path(state.workdir, dest_written)
    mtime = conv.options.source_date_epoch
    common: dict[str, Any] = {"chown": _chown(chown), "chmod": chmod, "mtime": mtime}

    from_op: str | None = None
    if isinstance(cmd, Copy) and cmd.from_:
        if conv.lex.process_word(cmd.from_, {}) != cmd.from_:
            raise conv.error(
                cmd,
                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
            )
        from_op = conv.source_op(cmd, stage, cmd.from_)

    actions: list[CopyAction] = []
    message = [keyword]
    span = (cmd.span.start, cmd.span.end)  # a fetch or copy that fails names this line
    if isinstance(cmd, Copy) and cmd.parents:
        message.append("--parents")
    # this BuildKit (docker.io 20.10) leaves --chown/--chmod out of the history text
    for src in sources:
        message.append(redact_urls(src))  # history never holds a URL's credentials
        if is_git_source(src) and not (isinstance(cmd, Copy) and cmd.from_):
            if not isinstance(cmd, Add):
                raise conv.error(cmd, "source can't be a git ref for COPY")
            try:
                source_op = git_source(src, cmd.keep_git_dir, checksum)
            except BuildError as error:
                raise conv.error(cmd, error.message, hint=error.hint) from None
            git = conv.graph.add(source_op, OpMeta(f"git {source_op.remote}", stage=state.name, internal=True, span=span))
            actions.append(CopyAction(source=git, src="/", dest=dest, **common))
        elif is_http_source(src) and not (isinstance(cmd, Copy) and cmd.from_):
            if not is_add:
                raise conv.error(cmd, "source can't be a URL for COPY")
            name = posixpath.basename(urlparse(src).path) or "__unnamed__"
            if name in (".", "/"):
                name = "__unnamed__"
            download = http_source(src, name, checksum)
            http = conv.graph.add(download, OpMeta(f"https {download.url}", stage=state.name, internal=True, span=span))
            actions.append(CopyAction(source=http, src=name, dest=dest, attempt_unpack=bool(unpack), **common))
        else:
            source = from_op if (isinstance(cmd, Copy) and cmd.from_) else conv.context()
            include: tuple[str, ...] = ()
            required: tuple[str, ...] = ()
            base_src = src
            if isinstance(cmd, Copy) and cmd.parents:
                parent, sep, pattern = src.partition("/./")
                if not sep:
                    parent, pattern = "/", src
                base_src = parent
                pattern = _source_path(pattern).lstrip("/")
                include = (pattern,)
                if not contains_wildcards(parent) and not contains_wildcards(pattern):
                    required = (_source_path(posixpath.join(parent, pattern)),)
            actions.append(
                CopyAction(
                    source=source,
                    src=_source_path(base_src),
                    dest=dest,
                    include_patterns=include,
                    required_paths=required,
                    exclude_patterns=tuple(cmd.excludes),
                    exclude_syntax="patternmatcher" if cmd.excludes else "",
                    attempt_unpack=is_add if unpack is None else unpack,
                    **common,
                )
            )
    for inline in cmd.files:
        message.append(f"<<{inline.name}")
        data = inline.data
        if inline.expand:
            try:
                data = ShellLex("\\", skip_process_quotes=True).process_word(data, scope)
            except ExpansionError as error:
                raise conv.error(cmd, str(error)) from None
        name = "/" + inline.name.lstrip("/")
        document = conv.graph.add(
            FileOp(base=None, actions=(MkfileAction(name, data, 0o644),)),
            OpMeta("preparing inline document", stage=state.name, internal=True),
        )
        actions.append(CopyAction(source=document, src=name, dest=dest, **common))
    message.append(dest_written)

    shown = redact_urls(conv.lex_display(cmd.original, scope))
    ignore = conv.ignore_cache(state)
    if cmd.link and not chmod:
        layer = conv.graph.add(
            FileOp(base=None, actions=tuple(actions), ignore_cache=ignore),
            OpMeta(shown, stage=state.name, internal=True, span=span),
        )
        layers = (state.op, layer) if state.op else (layer,)
        state.op = conv.graph.add(MergeOp(layers=layers), conv.meta(state, cmd, "LINK " + shown))
    else:
        state.op = conv.graph.add(FileOp(base=state.op, actions=tuple(actions), ignore_cache=ignore), conv.meta(state, cmd, shown))
    conv.history(state, " ".join(message) + " # buildkit", state.op)
