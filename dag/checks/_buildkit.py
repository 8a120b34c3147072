"""BuildKit's build checks, decided without pulling an image or running a step.

Where each rule fires and what it compares follows BuildKit's Dockerfile
frontend (``instructions/parse.go`` for the rules checked while parsing,
``dockerfile2llb/convert.go`` and ``validations.go`` for the rest); the
messages are BuildKit's, so that they can be looked up.  Every stage is
checked, as ``docker build --check`` does when no target is given.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Iterator, Mapping

from pybuild.cache import DockerIgnore
from pybuild.errors import ExpansionError, PybuildError
from pybuild.grammar import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Node,
    ShellLex,
    StopSignal,
    User,
    Volume,
    WordResult,
    Workdir,
    go_quote,
)
from pybuild.oci import parse_reference

from .._platform import Platform
from .._scope import NON_ENV_ARGS, PROXY_ARGS
from .._suggest import suggestion
from ._model import CHECK_COMMENT, Source, keyword_as_written, stage_name_as_written
from ._rules import Finding
from ._walk import Scope, StageInfo, Step, Walk, expand

RESERVED_STAGE_NAMES = ("context", "scratch")

# SecretsUsedInArgOrEnv: a key is suspect when one of its "_"-separated words
# (or the whole key) is one of these, unless another word marks it harmless.
_SECRET_WORDS = frozenset(
    {"apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"}
)
_HARMLESS_WORDS = frozenset({"public", "file", "version"})

_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})
_ROOT_IGNORE_PATTERNS = frozenset({"*", "**", "**/*"})


def _at(rule: str, node: Node, message: str, hint: str | None = None) -> Finding:
    return Finding(rule, node.span.start, node.span.end, message, hint)


def is_secret_key(key: str) -> bool:
    words = {word.lower() for word in key.split("_")}
    return bool(words & _SECRET_WORDS) and not words & _HARMLESS_WORDS


class _BuildKitChecks:
    def __init__(
        self,
        source: Source,
        walk: Walk,
        *,
        build_args: Mapping[str, str],
        ignore: DockerIgnore | None,
        platform: Platform,
    ) -> None:
        self.source = source
        self.walk = walk
        self.build_args = build_args
        self.ignore = ignore
        self.platform = platform
        self.lex = ShellLex(source.ast.escape)

    def findings(self) -> Iterator[Finding]:
        # In BuildKit's order: while parsing, then per stage, then per instruction.
        yield from self.parse_time()
        yield from self.stage_names()
        yield from self.instruction_casing()
        yield from self.default_base_names()
        for info in self.walk.stages:
            yield from self.from_line(info)
        yield from self.dispatch()

    # -- while parsing (instructions.Parse) ------------------------------------

    def parse_time(self) -> Iterator[Finding]:
        for node in self.source.ast.nodes:
            if self.source.has_empty_continuation(node):
                yield _at("NoEmptyContinuation", node, "Empty continuation line")
            if node.keyword == "maintainer":
                yield _at("MaintainerDeprecated", node, "Maintainer instruction is deprecated in favor of using label")
            elif node.keyword == "from":
                yield from self.from_casing(node)
                name = stage_name_as_written(node)
                if name is not None:
                    yield from self.description(node, "FROM", [name.lower()])
            elif node.keyword == "arg":
                keys = [word.partition("=")[0] for word in node.args]
                yield from self.description(node, "ARG", keys)

    def from_casing(self, node: Node) -> Iterator[Finding]:
        name = stage_name_as_written(node)
        if name is None:
            return
        if name != name.lower():
            yield _at(
                "StageNameCasing", node, f"Stage name '{name}' should be lowercase",
                f"write it as '{name.lower()}' (and so where other instructions name the stage)",
            )
        keyword, as_word = keyword_as_written(node), node.args[1]
        # A keyword of mixed case is ConsistentInstructionCasing's business.
        if keyword == keyword.lower() and as_word != as_word.lower():
            yield _at("FromAsCasing", node, f"'{as_word}' and '{keyword}' keywords' casing do not match", "write 'as' in lowercase")
        elif keyword == keyword.upper() and keyword != keyword.lower() and as_word != as_word.upper():
            yield _at("FromAsCasing", node, f"'{as_word}' and '{keyword}' keywords' casing do not match", "write 'AS' in uppercase")

    def description(self, node: Node, instruction: str, keys: list[str]) -> Iterator[Finding]:
        comments = [c for c in self.source.comments_above(node) if not CHECK_COMMENT.match(c)]
        if not comments or not keys:
            return
        if comments[-1].split(" ")[0] in keys:
            return
        example = keys[0] if len(keys) == 1 else "<arg_key>"
        yield _at(
            "InvalidDefinitionDescription", node,
            f"Comment for {instruction} should follow the format: `# {example} <description>`",
            f"begin the comment with '{example}', or leave an empty line between it and the {instruction}",
        )

    # -- over all stages (validateStageNames, validateCommandCasing) ---------------

    def stage_names(self) -> Iterator[Finding]:
        duplicates = {node.span.start for node, _ in self.source.duplicate_names}
        for info in self.walk.stages:
            node, name = info.stage.from_.node, info.stage.name
            if name is None:
                continue
            if name in RESERVED_STAGE_NAMES:
                yield _at("ReservedStageName", node, f"Stage name should not use the same name as reserved stage {go_quote(name)}")
            if node.span.start in duplicates:
                first = self.source.dockerfile.stage(name)
                where = f" (stage {first.index}, line {first.span.start})" if first is not None else ""
                yield _at(
                    "DuplicateStageName", node, f"Duplicate stage name {go_quote(name)}, stage names should be unique",
                    f"rename this stage: {name!r} already names an earlier one{where}",
                )

    def instruction_casing(self) -> Iterator[Finding]:
        nodes = [node for stage in self.source.dockerfile.stages for node in (stage.from_.node, *(i.node for i in stage.instructions))]
        keywords = [keyword_as_written(node) for node in nodes]
        lower = sum(1 for k in keywords if k == k.lower())
        upper = sum(1 for k in keywords if k == k.upper() and k != k.lower())
        majority_lower = lower > upper
        for node, keyword in zip(nodes, keywords, strict=True):
            if majority_lower and keyword != keyword.lower():
                casing, fixed = "lowercase", keyword.lower()
            elif not majority_lower and keyword != keyword.upper():
                casing, fixed = "uppercase", keyword.upper()
            else:
                continue
            yield _at(
                "ConsistentInstructionCasing", node,
                f"Command '{keyword}' should match the case of the command majority ({casing})",
                f"write it as {fixed}, like most instructions of this file",
            )

    def default_base_names(self) -> Iterator[Finding]:
        """InvalidDefaultArgInFrom: base names as they come out with no --build-arg."""
        defaults = self.walk.global_args.defaults_only
        if defaults is None:
            return
        for info in self.walk.stages:
            stage = info.stage
            result = expand(self.lex, stage.base, defaults)
            if result is None:
                return  # BuildKit gives up on the rule; the build reports the error
            try:
                parse_reference(result.result)
            except PybuildError:
                yield _at(
                    "InvalidDefaultArgInFrom", stage.from_.node,
                    f"Default value for ARG {stage.base} results in empty or invalid base image name",
                )

    # -- per stage (buildDispatchStates) --------------------------------------------

    def from_line(self, info: StageInfo) -> Iterator[Finding]:
        stage, node = info.stage, info.stage.from_.node
        values = self.walk.global_args.values
        known = set(values) | self.walk.global_args.declared
        words = [("base", stage.base)] + ([("platform", stage.platform)] if stage.platform else [])
        platform_result = None
        for kind, word in words:
            result = expand(self.lex, word, values)
            if result is None:
                continue
            if kind == "platform":
                platform_result = result
            for name in sorted(result.unmatched - known):
                close = suggestion(name, known)
                yield _at(
                    "UndefinedArgInFrom", node,
                    f"FROM argument '{name}' is not declared" + (f" (did you mean {close}?)" if close else ""),
                    f"add 'ARG {name}' (with a default) before the first FROM" + (f", or write ${close}" if close else ""),
                )
        if stage.platform and platform_result is not None:
            yield from self.platform_flag(info, platform_result)
        yield from self.base_image_platform(info, platform_result)

    def platform_flag(self, info: StageInfo, result: WordResult) -> Iterator[Finding]:
        stage, node = info.stage, info.stage.from_.node
        if result.matched == {"TARGETPLATFORM"} and not result.unmatched:
            if result.result == self.walk.global_args.values.get("TARGETPLATFORM"):
                yield _at(
                    "RedundantTargetPlatform", node,
                    f"Setting platform to predefined {stage.platform} in FROM is redundant as this is the default behavior",
                )
        if result.matched or result.unmatched:
            return
        try:
            platform = Platform.parse(result.result)
        except ValueError:
            return  # the build fails on it
        name = stage.name or ""
        if platform.os in name or platform.architecture in name:
            return
        yield _at(
            "FromPlatformFlagConstDisallowed", node,
            f"FROM --platform flag should not use constant value {go_quote(result.result)}",
        )

    def base_image_platform(self, info: StageInfo, platform_result: WordResult | None) -> Iterator[Finding]:
        """InvalidBaseImagePlatform: decidable only for an image known locally."""
        if info.image is None:
            return
        expected = self.platform
        if platform_result is not None:
            try:
                expected = Platform.parse(platform_result.result)
            except ValueError:
                return
        config = info.image.config
        actual_os, actual_arch = config.get("os", ""), config.get("architecture", "")
        if (actual_os, actual_arch) == (expected.os, expected.architecture):
            return
        actual = "/".join(part for part in (actual_os, actual_arch, config.get("variant", "")) if part)
        yield _at(
            "InvalidBaseImagePlatform", info.stage.from_.node,
            f"Base image {info.base} was pulled with platform {go_quote(actual)}, expected {go_quote(str(expected))} for current build",
        )

    # -- per instruction (dispatch) ---------------------------------------------------

    def dispatch(self) -> Iterator[Finding]:
        last_of_kind: dict[tuple[int, str], Node] = {}
        for step in self.walk.steps:
            instruction, scope = step.instruction, step.before
            yield from self.undefined_vars(step)
            if isinstance(instruction, (Env, Label)):
                yield from self.legacy_format(instruction)
            if isinstance(instruction, Env):
                for pair in instruction.pairs:
                    key = expand(self.lex, pair.key, scope.env)
                    if key is not None:
                        yield from self.secret(instruction.node, "ENV", key.result)
            elif isinstance(instruction, Arg):
                for decl in instruction.args:
                    yield from self.secret(instruction.node, "ARG", decl.name)
            elif isinstance(instruction, Workdir):
                yield from self.relative_workdir(instruction, scope)
            elif isinstance(instruction, (Cmd, Entrypoint)) and not instruction.command.json and not scope.shell:
                name = keyword_as_written(instruction.node)
                yield _at(
                    "JSONArgsRecommended", instruction.node,
                    f"JSON arguments recommended for {name} to prevent unintended behavior related to OS signals",
                    _exec_form_hint(name, instruction.command.args),
                )
            elif isinstance(instruction, Expose):
                yield from self.expose(instruction, scope)
            elif isinstance(instruction, (Copy, Add)):
                yield from self.ignored_sources(instruction, scope)
            if isinstance(instruction, (Cmd, Entrypoint, Healthcheck)):
                kind = (step.stage.stage.index, instruction.node.keyword)
                previous = last_of_kind.get(kind)
                if previous is not None:
                    name = keyword_as_written(instruction.node)
                    # Reported where the instruction that has no effect is.
                    yield _at(
                        "MultipleInstructionsDisallowed", previous,
                        f"Multiple {name} instructions should not be used in the same stage because only the last one will be used",
                        f"remove this {name.upper()}: the one on line {instruction.span.start} replaces it",
                    )
                last_of_kind[kind] = instruction.node

    def words_expanded(self, instruction: Instruction) -> list[str]:
        """The words BuildKit expands (and reports unset variables of) before dispatching."""
        if isinstance(instruction, (Env, Label)):
            return [word for pair in instruction.pairs for word in (pair.key, pair.value)]
        if isinstance(instruction, (Copy, Add)):
            words = [*instruction.sources, instruction.dest]
            words += [flag for flag in (instruction.chown, instruction.chmod) if flag]
            if isinstance(instruction, Add) and instruction.checksum:
                words.append(instruction.checksum)
            return words
        if isinstance(instruction, Workdir):
            return [instruction.path]
        if isinstance(instruction, User):
            return [instruction.user]
        if isinstance(instruction, Volume):
            return list(instruction.volumes)
        if isinstance(instruction, StopSignal):
            return [instruction.signal]
        return []

    def undefined_vars(self, step: Step) -> Iterator[Finding]:
        instruction, scope = step.instruction, step.before
        checks: list[tuple[str, Mapping[str, str], frozenset[str]]] = [
            (word, scope.env, scope.declared) for word in self.words_expanded(instruction)
        ]
        if isinstance(instruction, Arg):
            # Each ARG's default expands after the ARGs before it on the same line.
            arg_env, arg_declared = dict(scope.env), set(scope.declared)
            for decl in instruction.args:
                if decl.default is not None and decl.name not in self.build_args:
                    checks.append((decl.default, dict(arg_env), frozenset(arg_declared)))
                    result = expand(self.lex, decl.default, arg_env)
                    if result is not None and decl.name not in NON_ENV_ARGS:
                        arg_env[decl.name] = result.result
                arg_declared.add(decl.name)
        reported: set[str] = set()
        for word, env, declared in checks:
            result = expand(self.lex, word, env)
            if result is None:
                continue
            for name in sorted(result.unmatched - declared - NON_ENV_ARGS - PROXY_ARGS - reported):
                reported.add(name)
                yield self.undefined_var(instruction.node, name, scope)

    def undefined_var(self, node: Node, name: str, scope: Scope) -> Finding:
        close = suggestion(name, scope.env)
        message = f"Usage of undefined variable '${name}'" + (f" (did you mean ${close}?)" if close else "")
        if close:
            hint = f"did you mean ${close}? Otherwise declare it with ARG {name} or ENV {name}=... before this line"
        else:
            hint = f"declare it with ARG {name} (or ENV {name}=...) in this stage before this line"
        if not scope.env_known:
            hint += "; if the base image sets it, pull the image so that its environment can be seen"
        return _at("UndefinedVar", node, message, hint)

    def legacy_format(self, instruction: Env | Label) -> Iterator[Finding]:
        args = instruction.node.args
        for i in range(0, len(args) - 2, 3):
            if args[i + 2] == "":
                name = keyword_as_written(instruction.node)
                yield _at(
                    "LegacyKeyValueFormat", instruction.node,
                    f'"{name} key=value" should be used instead of legacy "{name} key value" format',
                    f"write {name} {args[i]}={_quoted(args[i + 1])}",
                )

    def secret(self, node: Node, instruction: str, key: str) -> Iterator[Finding]:
        if is_secret_key(key):
            yield _at(
                "SecretsUsedInArgOrEnv", node,
                f"Do not use ARG or ENV instructions for sensitive data ({instruction} {go_quote(key)})",
            )

    def relative_workdir(self, instruction: Workdir, scope: Scope) -> Iterator[Finding]:
        if scope.workdir_set:
            return  # only the first WORKDIR counts: fixing it fixes the ones after it
        result = expand(self.lex, instruction.path, scope.env)
        path = result.result if result is not None else instruction.path
        if not path.startswith("/"):
            yield _at(
                "WorkdirRelativePath", instruction.node,
                f"Relative workdir {go_quote(path)} can have unexpected results if the base image changes",
                f"write the absolute path, e.g. WORKDIR {posixpath.join(scope.workdir, path)}",
            )

    def expose(self, instruction: Expose, scope: Scope) -> Iterator[Finding]:
        for word in instruction.ports:
            try:
                ports = self.lex.process_words(word, scope.env)
            except ExpansionError:
                continue
            for port in ports:
                parts = port.split(":")
                container = parts[-1]
                number, _, protocol = container.partition("/")
                if not number or protocol.lower() not in _PROTOCOLS | {""}:
                    continue  # the build refuses the port; no check to make
                if protocol != protocol.lower():
                    yield _at(
                        "ExposeProtoCasing", instruction.node,
                        f"Defined protocol '{port}' in EXPOSE instruction should be lowercase",
                        f"write EXPOSE {number}/{protocol.lower()}",
                    )
                if len(parts) > 1:
                    yield _at(
                        "ExposeInvalidFormat", instruction.node,
                        f"EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'",
                        f"write EXPOSE {container.lower()} and publish the host side with docker run -p",
                    )

    def ignored_sources(self, instruction: Copy | Add, scope: Scope) -> Iterator[Finding]:
        """CopyIgnoredFile (experimental): a context path the .dockerignore excludes."""
        if self.ignore is None or not self.ignore or self.ignore.has_exceptions:
            return  # exceptions ("!" patterns) are too hard to decide statically
        if isinstance(instruction, Copy) and instruction.from_:
            return
        verb = "Add" if isinstance(instruction, Add) else "Copy"
        for word in instruction.sources:
            result = expand(self.lex, word, scope.env)
            if result is None or _is_remote(result.result):
                continue
            path = posixpath.normpath(result.result)
            if path.startswith("//"):
                path = "/" + path.lstrip("/")
            if path in (".", "/") and not set(self.ignore.patterns) & _ROOT_IGNORE_PATTERNS:
                continue
            if path in (".", "/") or self.ignore.matches(path):
                yield _at(
                    "CopyIgnoredFile", instruction.node,
                    f"Attempting to {verb} file {go_quote(path)} that is excluded by .dockerignore",
                )


def _is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://", "git@")) or ("://" in source and source.endswith(".git"))


def _quoted(value: str) -> str:
    if value and not any(char.isspace() or char in "\"'$\\" for char in value):
        return value
    return go_quote(value)


def _exec_form_hint(name: str, args: tuple[str, ...]) -> str:
    text = " ".join(args)
    try:
        words = shlex.split(text)
    except ValueError:
        words = []
    simple = words and not any(char in text for char in "$|&;<>(){}*?`~")
    if simple:
        return f"write {name.upper()} {json.dumps(words)} so the program runs as PID 1 and receives stop signals"
    return f'use the exec form {name.upper()} ["program", "arg", ...] so the program receives stop signals, or set SHELL explicitly'


def buildkit_findings(
    source: Source,
    walk: Walk,
    *,
    build_args: Mapping[str, str],
    ignore: DockerIgnore | None,
    platform: Platform,
) -> list[Finding]:
    return list(_BuildKitChecks(source, walk, build_args=build_args, ignore=ignore, platform=platform).findings())
