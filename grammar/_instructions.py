"""Typed instructions and build stages, made from generic nodes.

A dispatch table maps each keyword to ``parse_<keyword>(node)``, as BuildKit's
``instructions.ParseInstruction`` does.  Values here are still unexpanded:
``$VAR`` references, quotes and escapes in ENV/LABEL/ARG/COPY arguments are
kept as written; the converter in ``dag`` expands them with ``ShellLex`` in the
scope of each stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import field

from pybuild._frozen import frozen
from pybuild.errors import DockerfileSyntaxError, Location, shortened

from ._flags import BOOL, LIST, STRING, FlagError, FlagSpec, parse_flags
from ._heredoc import chomp_content, parse_marker
from ._nodes import KNOWN_KEYWORDS, Heredoc, Node, Span
from ._parser import Ast


@frozen(slots=True)
class KeyValue:
    key: str
    value: str  # as written: quotes and $references are expanded later


@frozen(slots=True)
class ArgDecl:
    name: str
    default: str | None  # as written; None when ARG has no default


@frozen(slots=True)
class Command:
    """A command line: exec form (``json``) or one shell-form string."""

    args: tuple[str, ...]
    json: bool

    @property
    def prepend_shell(self) -> bool:
        return not self.json


@frozen(slots=True)
class InlineFile:
    """A heredoc used as a file (COPY <<EOF) or as a script (RUN <<EOF)."""

    name: str
    data: str
    expand: bool
    chomp: bool = False


@frozen(slots=True)
class Instruction:
    node: Node = field(repr=False, compare=False)

    @property
    def span(self) -> Span:
        return self.node.span

    @property
    def keyword(self) -> str:
        return self.node.keyword.upper()

    @property
    def original(self) -> str:
        return self.node.original


@frozen(slots=True)
class From(Instruction):
    image: str
    name: str | None
    platform: str | None


@frozen(slots=True)
class Run(Instruction):
    command: Command
    mounts: tuple[str, ...]  # raw --mount values, parsed by the converter
    network: str | None
    security: str | None
    files: tuple[InlineFile, ...] = ()
    devices: tuple[RunDevice, ...] = ()


@frozen(slots=True)
class RunDevice:
    """One ``RUN --device``: a CDI device name (``vendor.com/class=name``, ``vendor.com/class``
    for the class's first device, ``vendor.com/class=*`` for all of them) and whether a name
    no CDI spec registers fails the step (``required``) or is skipped, BuildKit's default."""

    name: str
    required: bool = False


@frozen(slots=True)
class Cmd(Instruction):
    command: Command


@frozen(slots=True)
class Entrypoint(Instruction):
    command: Command


@frozen(slots=True)
class Shell(Instruction):
    shell: tuple[str, ...]


@frozen(slots=True)
class Env(Instruction):
    pairs: tuple[KeyValue, ...]


@frozen(slots=True)
class Label(Instruction):
    pairs: tuple[KeyValue, ...]


@frozen(slots=True)
class Maintainer(Instruction):
    maintainer: str


@frozen(slots=True)
class Arg(Instruction):
    args: tuple[ArgDecl, ...]


@frozen(slots=True)
class Copy(Instruction):
    sources: tuple[str, ...]
    dest: str
    files: tuple[InlineFile, ...]
    from_: str | None
    chown: str | None
    chmod: str | None
    link: bool
    parents: bool
    excludes: tuple[str, ...]


@frozen(slots=True)
class Add(Instruction):
    sources: tuple[str, ...]
    dest: str
    files: tuple[InlineFile, ...]
    chown: str | None
    chmod: str | None
    link: bool
    checksum: str | None
    keep_git_dir: bool
    excludes: tuple[str, ...]
    unpack: bool | None


@frozen(slots=True)
class Workdir(Instruction):
    path: str


@frozen(slots=True)
class User(Instruction):
    user: str


@frozen(slots=True)
class Volume(Instruction):
    volumes: tuple[str, ...]


@frozen(slots=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@frozen(slots=True)
class StopSignal(Instruction):
    signal: str


@frozen(slots=True)
class Healthcheck(Instruction):
    """``test`` is ("NONE",) for HEALTHCHECK NONE; durations are in nanoseconds."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@frozen(slots=True)
class Onbuild(Instruction):
    expression: str  # the trigger as written, stored in the image config
    trigger: Instruction


@frozen(slots=True)
class Stage:
    """``FROM base [AS name]`` and the instructions up to the next FROM."""

    index: int
    name: str | None
    base: str  # as written; expanded with the global ARGs by the converter
    platform: str | None
    from_: From
    instructions: tuple[Instruction, ...]

    @property
    def span(self) -> Span:
        end = self.instructions[-1].span.end if self.instructions else self.from_.span.end
        return Span(self.from_.span.start, end)


@frozen(slots=True)
class Dockerfile:
    """A parsed Dockerfile: global ARGs, stages, and the AST they came from."""

    file: str
    ast: Ast
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]

    @property
    def escape(self) -> str:
        return self.ast.escape

    def stage(self, name_or_index: str) -> Stage | None:
        if name_or_index.isdigit():
            index = int(name_or_index)
            return self.stages[index] if index < len(self.stages) else None
        lowered = name_or_index.lower()
        return next((s for s in self.stages if s.name == lowered), None)


class _Invalid(ValueError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _naming_the_instruction(node: Node, message: str) -> str:
    """``COPY: unknown flag ...``: the error says which instruction it is about."""
    keyword = node.keyword.upper()
    return message if message.upper().startswith(keyword) else f"{keyword}: {message}"


def _flags(node: Node, allowed: dict[str, FlagSpec]) -> dict[str, object]:
    try:
        return parse_flags(node.flags, allowed)
    except FlagError as error:
        raise _Invalid(str(error)) from None


def _exactly_one(node: Node) -> str:
    if len(node.args) != 1:
        raise _Invalid(f"{node.keyword.upper()} requires exactly one argument")
    return node.args[0]


def _at_least_one(node: Node) -> tuple[str, ...]:
    if not node.args:
        raise _Invalid(f"{node.keyword.upper()} requires at least one argument")
    return node.args


def _pairs(node: Node) -> tuple[KeyValue, ...]:
    name = node.keyword.upper()
    if not node.args:
        raise _Invalid(f"{name} requires at least one argument")
    pairs = []
    for i in range(0, len(node.args), 3):
        key, value = node.args[i], node.args[i + 1]
        if key == "":
            raise _Invalid(f"{name} names can not be blank")
        pairs.append(KeyValue(key, value))
    return tuple(pairs)


def _command(node: Node) -> Command:
    return Command(node.args, node.json)


def _inline_files(node: Node) -> tuple[InlineFile, ...]:
    return tuple(InlineFile(h.name, h.content, h.expand, h.chomp) for h in node.heredocs)


_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


def parse_from(node: Node) -> From:
    flags = _flags(node, {"platform": FlagSpec(STRING)})
    args = node.args
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _Invalid(
                f"invalid name for build stage: {args[2]!r}, name can't start with a number or contain symbols"
            )
    elif len(args) == 1:
        name = None
    else:
        raise _Invalid("FROM requires either one or three arguments", hint="FROM image [AS name]")
    return From(node, image=args[0], name=name, platform=flags["platform"])  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type


def parse_run(node: Node) -> Run:
    flags = _flags(
        node,
        {
            "mount": FlagSpec(LIST),
            "network": FlagSpec(STRING),
            "security": FlagSpec(STRING),
            "device": FlagSpec(LIST),
        },
    )
    return Run(
        node,
        command=_command(node),
        mounts=flags["mount"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        network=flags["network"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        security=flags["security"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        files=_inline_files(node),
        devices=tuple(parse_device(value) for value in flags["device"]),  # type: ignore[attr-defined]  # a LIST flag is a tuple of strings
    )


# CDI's names (container-device-interface pkg/parser): a kind is vendor/class, the vendor
# a domain-like name, the class and the device name letters, digits and a few separators.
_CDI_VENDOR = re.compile(r"^[A-Za-z](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_CDI_CLASS = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_-]*[A-Za-z0-9])?$")
_CDI_DEVICE = re.compile(r"^(?:\*|[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?)$")


def parse_device(value: str) -> RunDevice:
    """A ``--device`` value: ``name[,required[=BOOL]]`` or ``name=N,required=BOOL``, CSV as in
    BuildKit's ``ParseDevice`` (frontend/dockerfile/instructions/commands_rundevice.go)."""
    import csv

    try:
        fields = next(csv.reader([value], strict=True), [])
    except csv.Error as e:
        raise _Invalid(f"failed to parse csv devices: {e}") from None
    name = ""
    required = False
    for item in fields:
        key, has_value, text = item.partition("=")
        key = key.lower()
        if key == "required":
            required = _device_bool(text) if has_value else True
        elif key == "name" and has_value:
            if name:
                raise _Invalid(f"device name already set to {name}")
            name = text
        elif not name:
            name = item  # the first bare field is the name, '=' and all
        elif not has_value:
            raise _Invalid(f"invalid field '{item}' must be a key=value pair")
        else:
            raise _Invalid(f"unexpected key '{key}' in '{item}'", hint="--device takes name= and required=")
    if not name:
        raise _Invalid("RUN --device needs a device name", hint="--device=vendor.com/class=name")
    _check_device_name(name)
    return RunDevice(name, required)


def _device_bool(text: str) -> bool:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise _Invalid(f"invalid value for required: {text}", hint="required=true or required=false")


def _check_device_name(name: str) -> None:
    kind, _, device = name.partition("=")
    vendor, slash, cls = kind.partition("/")
    if not slash or not _CDI_VENDOR.match(vendor) or not _CDI_CLASS.match(cls) or (device and not _CDI_DEVICE.match(device)):
        raise _Invalid(
            f"invalid device {shortened(name)!r}: not a CDI device name",
            hint="--device=vendor.com/class=name (or vendor.com/class, vendor.com/class=*)",
        )


def parse_cmd(node: Node) -> Cmd:
    _flags(node, {})
    return Cmd(node, command=_command(node))


def parse_entrypoint(node: Node) -> Entrypoint:
    _flags(node, {})
    return Entrypoint(node, command=_command(node))


def parse_shell(node: Node) -> Shell:
    _flags(node, {})
    if not node.args:
        raise _Invalid("SHELL requires at least one argument")
    if not node.json:
        raise _Invalid("SHELL requires the arguments to be in JSON form", hint='SHELL ["/bin/bash", "-c"]')
    return Shell(node, shell=node.args)


def parse_env(node: Node) -> Env:
    _flags(node, {})
    return Env(node, pairs=_pairs(node))


def parse_label(node: Node) -> Label:
    _flags(node, {})
    return Label(node, pairs=_pairs(node))


def parse_maintainer(node: Node) -> Maintainer:
    _flags(node, {})
    return Maintainer(node, maintainer=_exactly_one(node))


def parse_arg(node: Node) -> Arg:
    _flags(node, {})
    decls = []
    for word in _at_least_one(node):
        name, has_default, default = word.partition("=")
        if has_default and name == "":
            raise _Invalid("ARG names can not be blank")
        decls.append(ArgDecl(name, default if has_default else None))
    return Arg(node, args=tuple(decls))


def _sources_and_dest(node: Node) -> tuple[tuple[str, ...], str, tuple[InlineFile, ...]]:
    name = node.keyword.upper()
    if len(node.args) < 2:
        raise _Invalid(
            f"{name} requires at least two arguments, but only one was provided. Destination could not be determined",
            hint=f"{name} <src>... <dest>",
        )
    *sources, dest = node.args
    if parse_marker(dest) is not None:
        raise _Invalid(f"{name} cannot accept a heredoc as a destination")
    by_name = {h.name: h for h in node.heredocs}
    paths: list[str] = []
    files: list[InlineFile] = []
    for source in sources:
        marker = parse_marker(source) if not node.json else None
        if marker is not None and marker.name in by_name:
            heredoc: Heredoc = by_name[marker.name]
            data = chomp_content(heredoc.content) if marker.chomp else heredoc.content
            files.append(InlineFile(marker.name, data, marker.expand, marker.chomp))
        else:
            paths.append(source)
    return tuple(paths), dest, tuple(files)


def parse_copy(node: Node) -> Copy:
    flags = _flags(
        node,
        {
            "from": FlagSpec(STRING),
            "chown": FlagSpec(STRING),
            "chmod": FlagSpec(STRING),
            "link": FlagSpec(BOOL, False),
            "parents": FlagSpec(BOOL, False),
            "exclude": FlagSpec(LIST),
        },
    )
    sources, dest, files = _sources_and_dest(node)
    return Copy(
        node,
        sources=sources,
        dest=dest,
        files=files,
        from_=flags["from"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        chown=flags["chown"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        chmod=flags["chmod"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        link=bool(flags["link"]),
        parents=bool(flags["parents"]),
        excludes=flags["exclude"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
    )


def parse_add(node: Node) -> Add:
    flags = _flags(
        node,
        {
            "chown": FlagSpec(STRING),
            "chmod": FlagSpec(STRING),
            "link": FlagSpec(BOOL, False),
            "checksum": FlagSpec(STRING),
            "keep-git-dir": FlagSpec(BOOL, False),
            "exclude": FlagSpec(LIST),
            "unpack": FlagSpec(BOOL, None),
        },
    )
    sources, dest, files = _sources_and_dest(node)
    return Add(
        node,
        sources=sources,
        dest=dest,
        files=files,
        chown=flags["chown"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        chmod=flags["chmod"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        link=bool(flags["link"]),
        checksum=flags["checksum"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        keep_git_dir=bool(flags["keep-git-dir"]),
        excludes=flags["exclude"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
        unpack=flags["unpack"],  # type: ignore[arg-type]  # each flag's FlagSpec kind fixes its value's type
    )


def parse_workdir(node: Node) -> Workdir:
    _flags(node, {})
    return Workdir(node, path=_exactly_one(node))


def parse_user(node: Node) -> User:
    _flags(node, {})
    return User(node, user=_exactly_one(node))


def parse_volume(node: Node) -> Volume:
    _flags(node, {})
    volumes = []
    for volume in _at_least_one(node):
        if volume.strip() == "":
            raise _Invalid("VOLUME specified can not be an empty string")
        volumes.append(volume.strip())
    return Volume(node, volumes=tuple(volumes))


def parse_expose(node: Node) -> Expose:
    _flags(node, {})
    return Expose(node, ports=tuple(_at_least_one(node)))


def parse_stopsignal(node: Node) -> StopSignal:
    _flags(node, {})
    return StopSignal(node, signal=_exactly_one(node))


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
MINIMUM_DURATION = 1_000_000  # 1ms, Docker's container.MinimumDuration


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"time: invalid duration {text!r}")
    return -int(total) if text.startswith("-") else int(total)


def _interval(flags: dict[str, object], name: str) -> int:
    value = flags[name]
    if not value:
        return 0
    try:
        duration = parse_duration(str(value))
    except ValueError as error:
        raise _Invalid(str(error)) from None
    if duration < MINIMUM_DURATION:
        raise _Invalid(f"Interval {name!r} cannot be less than 1ms")
    return duration


def parse_healthcheck(node: Node) -> Healthcheck:
    if not node.args:
        raise _Invalid("HEALTHCHECK requires at least one argument", hint="HEALTHCHECK [OPTIONS] CMD command | NONE")
    kind = node.args[0].upper()
    rest = node.args[1:]
    if kind == "NONE":
        _flags(node, {})
        if rest:
            raise _Invalid("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(node, test=("NONE",))
    flags = _flags(
        node,
        {
            "interval": FlagSpec(STRING),
            "timeout": FlagSpec(STRING),
            "start-period": FlagSpec(STRING),
            "start-interval": FlagSpec(STRING),
            "retries": FlagSpec(STRING),
        },
    )
    if kind != "CMD":
        raise _Invalid(f"Unknown type {kind!r} in HEALTHCHECK (try CMD)")
    if not rest:
        raise _Invalid("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *rest) if node.json else ("CMD-SHELL", *rest)
    retries = 0
    if flags["retries"]:
        try:
            retries = int(str(flags["retries"]))
        except ValueError:
            raise _Invalid(f"--retries must be an integer, not {flags['retries']!r}") from None
        if retries < 0:
            raise _Invalid(f"--retries cannot be negative ({retries})")
    return Healthcheck(
        node,
        test=test,
        interval=_interval(flags, "interval"),
        timeout=_interval(flags, "timeout"),
        start_period=_interval(flags, "start-period"),
        start_interval=_interval(flags, "start-interval"),
        retries=retries,
    )


_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")


def parse_onbuild(node: Node) -> Onbuild:
    _flags(node, {})
    if node.sub is None:
        raise _Invalid("ONBUILD requires at least one argument")
    trigger_keyword = node.sub.keyword.upper()
    if trigger_keyword == "ONBUILD":
        raise _Invalid("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger_keyword in ("MAINTAINER", "FROM"):
        raise _Invalid(f"{trigger_keyword} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", node.original, count=1)
    for heredoc in node.heredocs:
        expression += "\n" + heredoc.content + heredoc.name
    trigger_node = Node(
        keyword=node.sub.keyword,
        flags=node.sub.flags,
        args=node.sub.args,
        json=node.sub.json,
        span=node.span,
        original=expression,
        heredocs=node.heredocs,
    )
    return Onbuild(node, expression=expression, trigger=parse_node(trigger_node))


PARSERS: dict[str, Callable[[Node], Instruction]] = {
    "from": parse_from,
    "run": parse_run,
    "cmd": parse_cmd,
    "entrypoint": parse_entrypoint,
    "shell": parse_shell,
    "env": parse_env,
    "label": parse_label,
    "maintainer": parse_maintainer,
    "arg": parse_arg,
    "copy": parse_copy,
    "add": parse_add,
    "workdir": parse_workdir,
    "user": parse_user,
    "volume": parse_volume,
    "expose": parse_expose,
    "stopsignal": parse_stopsignal,
    "healthcheck": parse_healthcheck,
    "onbuild": parse_onbuild,
}
assert set(PARSERS) == set(KNOWN_KEYWORDS)


class UnknownInstruction(_Invalid):
    pass


def parse_node(node: Node) -> Instruction:
    parser = PARSERS.get(node.keyword)
    if parser is None:
        import difflib  # only for the hint of a misspelt instruction

        guess = difflib.get_close_matches(node.keyword, list(PARSERS), n=1)
        hint = f"did you mean {guess[0].upper()}?" if guess else "see the Dockerfile reference for the instruction list"
        raise UnknownInstruction(f"unknown instruction: {node.keyword.upper()}", hint=hint)
    return parser(node)


def build_dockerfile(ast: Ast) -> Dockerfile:
    """Type every node and group instructions into stages."""
    global_args: list[Arg] = []
    stages: list[Stage] = []
    current: From | None = None
    body: list[Instruction] = []
    names: dict[str, int] = {}

    def close() -> None:
        if current is not None:
            stages.append(Stage(len(stages), current.name, current.image, current.platform, current, tuple(body)))

    for node in ast.nodes:
        try:
            instruction = parse_node(node)
        except _Invalid as error:
            raise _located(ast, node, _naming_the_instruction(node, str(error)), error.hint) from None
        if isinstance(instruction, From):
            close()
            if instruction.name is not None:
                if instruction.name in names:
                    raise _located(
                        ast, node, f"duplicate stage name {instruction.name!r}",
                        f"stage {names[instruction.name]} already has that name",
                    )
                names[instruction.name] = len(stages)
            current, body = instruction, []
        elif current is None:
            if isinstance(instruction, Arg):
                global_args.append(instruction)
                continue
            raise _located(
                ast, node, f"{instruction.keyword} before the first FROM",
                "a Dockerfile starts with FROM; only ARG may come before it",
            )
        else:
            body.append(instruction)
    close()
    if not stages:
        last = ast.nodes[-1]
        raise _located(ast, last, "no FROM instruction: a Dockerfile needs at least one build stage", "add FROM <image>")
    return Dockerfile(ast.file, ast, tuple(global_args), tuple(stages))


def _located(ast: Ast, node: Node, message: str, hint: str | None = None) -> DockerfileSyntaxError:
    return DockerfileSyntaxError(
        message,
        location=Location(ast.file, node.span.start, node.span.end),
        excerpt=shortened(node.original),
        hint=hint,
    )
