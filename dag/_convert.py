"""Dockerfile -> build graph and image config, as BuildKit's dockerfile2llb.

Synchronous and pure: base images are looked up through ``ImageLookup``
(sync); a base that is not known locally raises ``MissingImages`` so the
caller can pull it and convert again.  Only the stages the target needs are
converted, so a stage nobody needs never runs.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from dataclasses import field, replace
from types import MappingProxyType
from typing import Any, Protocol

from pybuild._frozen import frozen
from pybuild.errors import DockerfileError, ExpansionError, Location, PybuildError
from pybuild.grammar import (
    Add,
    Arg,
    Cmd,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    ShellLex,
    Stage,
    StopSignal,
    User,
    Volume,
    Workdir,
    chomp_content,
    parse_ast,
    parse_marker,
    parse_node,
)
from pybuild.oci import ResolvedImage, redact_urls

from ._copy import convert_copy
from ._graph import Definition, GraphBuilder
from ._image import DEFAULT_PATH, HistoryStep, StageImage, set_env
from ._ops import CdiDevice, ExecOp, FileOp, ImageSource, LocalSource, MkdirAction, MkfileAction, OpMeta, RunMount
from ._platform import Platform, host_platform, target_in_env
from ._runmount import MountSyntaxError, parse_mount
from ._scope import (
    NON_ENV_ARGS,
    PROXY_ARGS,
    arg_value,
    env_assignments,
    global_arg_values,
    predefined_args,
    starting_env,
    target_stage,
    target_stage_name,
    with_default_path,
)
from ._signals import parse_signal
from ._stage import StageResult, StageState
from ._words import duration_string, go_list, go_quote, go_quote_rune, go_quoted_list, port_specs

class ImageLookup(Protocol):
    def lookup(self, ref: str, platform: Platform) -> ResolvedImage | None:
        """The image ``ref`` names, if it is available without network access."""


class MissingImages(Exception):
    """Base images that must be pulled before the graph can be built: ``refs`` by
    name, ``wanted`` each with the platform it is needed for."""

    def __init__(
        self, refs: list[str], wanted: list[tuple[str, Platform]] | None = None, where: Mapping[str, Location] | None = None
    ) -> None:
        super().__init__(", ".join(refs))
        self.refs = refs
        self.wanted = wanted if wanted is not None else [(ref, host_platform()) for ref in refs]
        self.where = dict(where or {})  # ref -> the first instruction naming it, for a failed pull's error


@frozen
class BuildOptions:
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: Platform = field(default_factory=host_platform)  # the target of one conversion
    # --platform as asked (empty: none asked, the host's implicitly); with several,
    # ``convert`` makes one plan per platform on one graph
    platforms: tuple[Platform, ...] = ()
    network: str = "default"
    no_cache: bool = False
    no_cache_stages: frozenset[str] = frozenset()
    source_date_epoch: int | None = None
    context: str = "context"
    # what the build may do beyond the sandbox (--allow): "security.insecure" ...
    entitlements: frozenset[str] = frozenset()


@frozen
class BuildPlan:
    definition: Definition
    target: StageResult
    stages: tuple[StageResult, ...]
    context_op: str | None  # the build context source, if any step reads it
    warnings: tuple[str, ...] = ()
    platform: Platform | None = None  # the target platform this plan builds
    # several target platforms: one plan each, all on this plan's merged ``definition``
    targets: tuple[BuildPlan, ...] = ()


def _normalize_ref(ref: str) -> str:
    from pybuild.oci import parse_reference

    return str(parse_reference(ref))


# What the expansions of one Dockerfile may make in all (each word is at most
# grammar's 4 MiB); real Dockerfiles expand kilobytes.
_MAX_EXPANDED = 64 * 1024 * 1024


class _Converter:
    def __init__(
        self, dockerfile: Dockerfile, options: BuildOptions, images: ImageLookup, graph: GraphBuilder | None = None
    ) -> None:
        self.dockerfile = dockerfile
        self.options = options
        self.images = images
        self.lex = ShellLex(dockerfile.escape)
        self.graph = graph if graph is not None else GraphBuilder()  # shared by every target platform's conversion
        self.platform = options.platform
        self.host = host_platform()
        # BuildKit's MultiPlatformRequested: progress names then carry each step's platform
        self.prefix_platform = len(options.platforms) > 1
        self.missing: list[tuple[str, Platform]] = []
        self.missing_where: dict[str, Location] = {}
        self.warnings: list[str] = []
        self.context_op: str | None = None
        self.results: dict[int, StageResult] = {}
        self.expanded = 0  # characters made by variable expansion so far
        self.global_args = self._global_args()

    # ----------------------------------------------------------- errors

    def error(self, instruction: Instruction | Stage, message: str, hint: str | None = None) -> DockerfileError:
        span = instruction.span
        return DockerfileError(
            message,
            location=Location(self.dockerfile.file, span.start, span.end),
            excerpt=redact_urls(instruction.from_.original if isinstance(instruction, Stage) else instruction.original),
            hint=hint,
        )

    def expand(self, where: Instruction | Stage, word: str, env: Mapping[str, str]) -> str:
        try:
            result = self.lex.process_word(word, env)
        except ExpansionError as error:
            raise self.error(where, str(error)) from None
        if result is not word:
            self._count_expanded(where, len(result))
        return result

    def expand_words(self, where: Instruction | Stage, word: str, env: Mapping[str, str]) -> list[str]:
        try:
            words = self.lex.process_words(word, env)
        except ExpansionError as error:
            raise self.error(where, str(error)) from None
        self._count_expanded(where, sum(map(len, words)))
        return words

    def _count_expanded(self, where: Instruction | Stage, size: int) -> None:
        # One word is at most 4 MiB, but many short instructions can each
        # expand to that much (ENV C1=$B$B, ENV C2=$B$B, ...): what all
        # expansions of one conversion make is bounded too.
        self.expanded += size
        if self.expanded > _MAX_EXPANDED:
            raise self.error(
                where,
                f"the Dockerfile's expanded words add up to more than {_MAX_EXPANDED // (1024 * 1024)} MiB",
                hint="a variable's value is repeated too many times",
            )

    # ----------------------------------------------------------- args

    def _global_args(self) -> dict[str, str]:
        """The predefined ARGs plus the ARGs before the first FROM (BuildKit's meta args)."""
        target = target_stage_name(self.dockerfile, self.options.target)
        start = predefined_args(self.options.build_args, self.platform, target)
        values = global_arg_values(self.dockerfile, start, self.options.build_args, self.expand)
        assert values is not None, "conversion's expand raises rather than give up"
        return values

    # ----------------------------------------------------------- stages

    def stage_index(self, name: str) -> int | None:
        stage = self.dockerfile.stage(name)
        return stage.index if stage is not None else None

    def base_stage_index(self, base: str) -> int | None:
        """The stage FROM names: by name only (a number is an image name there,
        as in BuildKit, unlike ``COPY --from=0``)."""
        return None if base.isdigit() else self.stage_index(base)

    def base_name(self, stage: Stage) -> str:
        name = self.expand(stage, stage.base, self.global_args)
        if not name:
            raise self.error(stage, f"base name ({stage.base}) should not be blank")
        return name

    def dependencies(self, stage: Stage) -> set[int]:
        deps: set[int] = set()
        base = self.base_name(stage)
        index = self.base_stage_index(base)
        if index is not None and index < stage.index:
            deps.add(index)
        for instruction in stage.instructions:
            for source in self.stage_sources(instruction, stage):
                deps.add(source)
        return deps

    def stage_sources(self, instruction: Instruction, stage: Stage) -> list[int]:
        names: list[str] = []
        if isinstance(instruction, Copy) and instruction.from_:
            names.append(instruction.from_)
        if isinstance(instruction, Run):
            for value in instruction.mounts:
                try:
                    mount = parse_mount(value)
                except MountSyntaxError as error:
                    raise self.error(instruction, str(error)) from None
                if mount.from_:
                    names.append(mount.from_)
        if isinstance(instruction, Onbuild):
            return self.stage_sources(instruction.trigger, stage)
        out = []
        for name in names:
            index = int(name) if name.isdigit() else self.stage_index(name)
            if index is None:
                continue  # an image, not a stage
            if index >= stage.index:
                raise self.error(
                    instruction,
                    f"cannot copy from stage {name!r}, it needs to be defined before current stage {stage.name or stage.index!r}",
                )
            out.append(index)
        return out

    def needed_stages(self, target: Stage) -> list[Stage]:
        needed: set[int] = set()
        stack = [target.index]
        while stack:
            index = stack.pop()
            if index in needed:
                continue
            needed.add(index)
            stack.extend(self.dependencies(self.dockerfile.stages[index]))
        return [s for s in self.dockerfile.stages if s.index in needed]

    def convert(self) -> BuildPlan:
        target = target_stage(self.dockerfile, self.options.target)
        stages = self.needed_stages(target)
        for stage in stages:
            self.results[stage.index] = self.convert_stage(stage)
        if self.missing:
            raise MissingImages(sorted({ref for ref, _ in self.missing}), list(dict.fromkeys(self.missing)), self.missing_where)
        result = self.results[target.index]
        if self.options.labels:
            config = dict(result.image.config)
            config["Labels"] = {**(config.get("Labels") or {}), **self.options.labels}
            result = replace(result, image=replace(result.image, config=MappingProxyType(config)))
        if self.options.platforms:
            result = replace(result, image=self.as_target_platform(result.image))
        return BuildPlan(
            definition=self.graph.build(),
            target=result,
            stages=tuple(self.results[s.index] for s in stages),
            context_op=self.context_op,
            warnings=tuple(self.warnings),
            platform=self.platform,
        )

    def as_target_platform(self, image: StageImage) -> StageImage:
        """An asked-for platform is the image's, whatever its last stage ran as
        (BuildKit's finalizeResultImage: a FROM --platform=$BUILDPLATFORM last
        stage still makes the target's image); the variant is kept only when
        the os and architecture already agreed and the target names none."""
        target = self.platform
        same = (image.os, image.architecture) == (target.os, target.architecture)
        variant = target.variant if target.variant or not same else image.variant
        return replace(image, os=target.os, architecture=target.architecture, variant=variant)

    def image_source(
        self, where: Instruction | Stage, name: str, platform: Platform | None = None
    ) -> tuple[str | None, ResolvedImage | None]:
        """The op and config of an image for ``platform`` (default: the target's);
        (None, None) when it must be pulled first."""
        platform = platform or self.platform
        try:
            ref = _normalize_ref(name)
        except Exception as error:  # ImageError from the reference parser
            self.refuse_stage_typo(where, name)
            raise self.error(where, str(error)) from None
        try:
            image = self.images.lookup(ref, platform)
        except PybuildError as error:  # e.g. an index without this platform: it names those it has
            raise self.error(where, error.message, hint=error.hint) from None
        if image is None:
            self.refuse_stage_typo(where, name)
            self.missing.append((ref, platform))
            self.missing_where.setdefault(ref, Location(self.dockerfile.file, where.span.start, where.span.end))
            return None, None
        if not image.config.get("rootfs", {}).get("diff_ids"):
            return None, image  # an image with no layers is scratch
        op = ImageSource(ref=image.ref, manifest_digest=image.manifest_digest, platform=str(platform))
        shown = f"[{platform} internal] " if self.prefix_platform else ""
        digest = self.graph.add(op, OpMeta(f"{shown}FROM {image.ref}@{image.manifest_digest}", internal=True))
        return digest, image

    def base_platform(self, stage: Stage, name: str, platform: Platform, image: ResolvedImage) -> Platform:
        """The platform a stage on ``image`` runs as. A base of another platform than
        the one asked is used with BuildKit's InvalidBaseImagePlatform warning
        (validateBaseImagePlatform); with no platform asked at all (no --platform,
        no FROM --platform) the stage is the base's platform, as BuildKit's
        autoDetectPlatform makes it, so its RUN steps are checked runnable."""
        found = (image.config.get("os") or "", image.config.get("architecture") or "")
        if not found[1] or found == (platform.os, platform.architecture):
            return platform
        actual = Platform(found[0] or platform.os, found[1], image.config.get("variant") or "").normalized()
        if not self.options.platforms and not stage.platform:
            return actual
        self.warnings.append(
            f"{self.dockerfile.file}:{stage.from_.span.start}: InvalidBaseImagePlatform: Base image {name} was pulled "
            f'with platform "{actual}", expected "{platform}" for current build'
        )
        return platform

    def stage_platform(self, stage: Stage, parent: StageResult | None) -> Platform:
        """What a stage's RUN steps run as: its FROM --platform (expanded with the
        meta ARGs, BUILDPLATFORM and TARGETPLATFORM among them), else its base
        stage's, else the target's (BuildKit's dispatchState.platform)."""
        if not stage.platform:
            return parent.platform if parent is not None and parent.platform is not None else self.platform
        text = self.expand(stage, stage.platform, self.global_args)
        if not text:
            raise self.error(stage, f"empty platform value from expression {stage.platform}")
        try:
            return Platform.parse(text)
        except ValueError as error:
            raise self.error(stage, f"failed to parse platform {stage.platform}: {error}") from None

    def refuse_stage_typo(self, where: Instruction | Stage, name: str) -> None:
        """A bare name that is no stage but close to one is a typo, not an image to
        pull: BuildKit adds the same "did you mean" (its suggest package, over the
        stage names) to the error of resolving the image; we say it before any pull."""
        if any(mark in name for mark in ":/@"):
            return  # a tag, digest or registry: meant as an image
        from ._suggest import suggestion

        close = suggestion(name.lower(), (s.name for s in self.dockerfile.stages if s.name))
        if close is not None:
            raise self.error(where, f'no stage named "{name}"; did you mean "{close}"?')

    def convert_stage(self, stage: Stage) -> StageResult:
        base = self.base_name(stage)
        name = stage.name or f"stage-{stage.index}"
        base_index = self.base_stage_index(base)
        triggers: list[str] = []
        from_stage = base_index is not None and base_index < stage.index
        platform = self.stage_platform(stage, self.results[base_index] if from_stage and base_index is not None else None)
        if from_stage and base_index is not None:
            parent = self.results[base_index]
            state = self.state_from_result(stage, name, parent)
            triggers = list(parent.image.config.get("OnBuild") or [])
        elif base.lower() == "scratch":
            state = self.empty_state(stage, name)
        else:
            op, image = self.image_source(stage, base, platform)
            state = self.empty_state(stage, name)
            if image is not None:
                platform = self.base_platform(stage, base, platform, image)
                state = self.state_from_image(stage, name, op, image, platform)
                triggers = list(image.config.get("config", {}).get("OnBuild") or [])
                state.config.pop("OnBuild", None)
        state.platform = platform
        state.config["Env"] = with_default_path(state.config.get("Env") or [])
        state.env = starting_env(state.env, state.config["Env"])
        from_is_a_step = not (base_index is not None or base.lower() == "scratch")
        state.total = self.step_total(stage, not from_is_a_step)
        state.step = 1 if from_is_a_step else 0  # BuildKit counts FROM image as step 1
        instructions = [self.trigger(stage, text) for text in triggers] + list(stage.instructions)
        for instruction in instructions:
            self.dispatch(state, stage, instruction)
        return state.finish()

    def trigger(self, stage: Stage, text: str) -> Instruction:
        """An ONBUILD trigger of the base image, parsed as an instruction of this stage."""
        try:
            node = parse_ast(text, self.dockerfile.file).nodes[0]
            node = replace(node, span=stage.from_.span)
            return parse_node(node)
        except Exception as error:
            raise self.error(stage, f"invalid ONBUILD trigger {text!r} in the base image: {error}") from None

    @staticmethod
    def step_total(stage: Stage, from_stage_or_scratch: bool) -> int:
        kinds = (Add, Copy, Run, Workdir)
        return (0 if from_stage_or_scratch else 1) + sum(isinstance(i, kinds) for i in stage.instructions)

    def empty_state(self, stage: Stage, name: str) -> StageState:
        return StageState(
            index=stage.index, name=name, op=None, env=[], config={"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
            os=self.platform.os, architecture=self.platform.architecture, variant=self.platform.variant,
            author=None, base_history=(), base_diff_ids=(), history=[], args=[],
        )

    def state_from_image(self, stage: Stage, name: str, op: str | None, image: ResolvedImage, platform: Platform) -> StageState:
        config = copy.deepcopy(dict(image.config.get("config") or {}))
        return StageState(
            index=stage.index, name=name, op=op, env=[], config=config,
            os=image.config.get("os", platform.os),
            architecture=image.config.get("architecture", platform.architecture),
            variant=image.config.get("variant", ""),
            author=image.config.get("author"),
            base_history=tuple(image.config.get("history") or ()),
            base_diff_ids=tuple((image.config.get("rootfs") or {}).get("diff_ids") or ()),
            history=[], args=[],
        )

    def state_from_result(self, stage: Stage, name: str, parent: StageResult) -> StageState:
        image = parent.image
        config = copy.deepcopy(dict(image.config))
        config.pop("OnBuild", None)  # triggers do not carry over from a base stage
        state = StageState(
            index=stage.index, name=name, op=parent.op, env=list(parent.env), config=config,
            os=image.os, architecture=image.architecture, variant=image.variant, author=image.author,
            base_history=image.base_history, base_diff_ids=image.base_diff_ids,
            # the parent's ARG values come with its env, but its ARG declarations
            # do not: RUN's "|N K=V" history lists the stage's own ARGs only, as
            # in dockerd 20.10's BuildKit (golden stage_from_stage_inherits_args)
            history=list(image.history), args=[],
        )
        return state

    # ----------------------------------------------------------- steps

    def meta(self, state: StageState, instruction: Instruction, description: str) -> OpMeta:
        state.step += 1
        # BuildKit names the stage in progress only when the Dockerfile has several
        label = f"{state.name} " if len(self.dockerfile.stages) > 1 else ""
        prefix = f"[{self.platform_label(state)}{label}{state.step}/{max(state.total, state.step)}] "
        return OpMeta(
            description=prefix + description,
            stage=state.name,
            span=(instruction.span.start, instruction.span.end),
            step=(state.step, state.total),
            args=frozenset(name for name, _ in state.args),
        )

    def platform_label(self, state: StageState) -> str:
        """With several target platforms, the platform a step runs as, and the
        target its TARGET* ARGs name when that differs: ``linux/amd64->arm64 ``
        (BuildKit's prefixCommand and formatTargetPlatform). A step that uses no
        TARGET* ARG is the same op for every target, and so is its name."""
        if not self.prefix_platform or state.platform is None:
            return ""
        target = target_in_env(state.env_map())
        if target is None:
            return f"{state.platform} "
        target = Platform(target.os or state.platform.os, target.architecture or state.platform.architecture, target.variant)
        return f"{state.platform}{target.relative_to(state.platform)} "

    def ignore_cache(self, state: StageState) -> bool:
        return self.options.no_cache or state.name in self.options.no_cache_stages

    def history(self, state: StageState, created_by: str, layer_op: str | None = None) -> None:
        state.history.append(HistoryStep(created_by=created_by, layer_op=layer_op))

    def dispatch(self, state: StageState, stage: Stage, instruction: Instruction) -> None:
        handler = getattr(self, f"do_{type(instruction).__name__.lower()}")
        handler(state, stage, instruction)

    def do_env(self, state: StageState, stage: Stage, env: Env) -> None:
        words = []
        for key, value in env_assignments(env, state.env_map(), self.expand):
            words.append(f"{key}={value}")
            state.env = set_env(state.env, key, value)
            state.config["Env"] = set_env(list(state.config.get("Env") or []), key, value)
        self.history(state, "ENV " + " ".join(words))

    def do_label(self, state: StageState, stage: Stage, label: Label) -> None:
        scope = state.env_map()
        labels = dict(state.config.get("Labels") or {})
        words = []
        for pair in label.pairs:
            key = self.expand(label, pair.key, scope)
            value = self.expand(label, pair.value, scope)
            labels[key] = value
            words.append(f"{key}={value}")
        state.config["Labels"] = labels
        self.history(state, "LABEL " + " ".join(words))

    def do_maintainer(self, state: StageState, stage: Stage, maintainer: Maintainer) -> None:
        state.author = maintainer.maintainer
        self.history(state, f"MAINTAINER {maintainer.maintainer}")

    def do_arg(self, state: StageState, stage: Stage, arg: Arg) -> None:
        words = []
        for decl in arg.args:
            default = self.expand(arg, decl.default, state.env_map()) if decl.default is not None else None
            value = arg_value(decl, default, self.options.build_args, self.global_args)
            if value is not None and decl.name not in NON_ENV_ARGS:
                state.env = set_env(state.env, decl.name, value)
            state.args.append((decl.name, value))
            # BuildKit's history shows the ARG as declared, not the value it got
            words.append(decl.name if default is None else f"{decl.name}={default}")
        self.history(state, "ARG " + " ".join(words))

    def do_workdir(self, state: StageState, stage: Stage, workdir: Workdir) -> None:
        path = self.expand(workdir, workdir.path, state.env_map())
        # BuildKit (util/system/path.go NormalizePath) keeps an absolute WORKDIR as
        # written, trailing slash included, and only joins and cleans a relative one
        workdir_as_set = path if path.startswith("/") else self.join_workdir(state.workdir, path)
        normalized = self.join_workdir("/", workdir_as_set)
        state.config["WorkingDir"] = workdir_as_set
        layer = None
        if normalized != "/":
            chown = None
            if state.user:
                from ._ops import Chown

                user, _, group = state.user.partition(":")
                chown = Chown(user, group or None)
            op = FileOp(
                base=state.op,
                actions=(MkdirAction(normalized, 0o755, True, chown, self.options.source_date_epoch),),
                ignore_cache=self.ignore_cache(state),
            )
            state.op = layer = self.graph.add(op, self.meta(state, workdir, f"WORKDIR {path}"))
        self.history(state, f"WORKDIR {workdir_as_set}", layer)

    @staticmethod
    def join_workdir(current: str, path: str) -> str:
        joined = posixpath.normpath(posixpath.join("/", current, path))
        return joined[1:] if joined.startswith("//") else joined

    def do_user(self, state: StageState, stage: Stage, user: User) -> None:
        value = self.expand(user, user.user, state.env_map())
        state.config["User"] = value
        self.history(state, f"USER {value}")

    def do_volume(self, state: StageState, stage: Stage, volume: Volume) -> None:
        scope = state.env_map()
        volumes = dict(state.config.get("Volumes") or {})
        expanded = []
        for path in volume.volumes:
            value = self.expand(volume, path, scope)
            if value == "":
                raise self.error(volume, "VOLUME specified can not be an empty string")
            volumes[value] = {}
            expanded.append(value)
        state.config["Volumes"] = volumes
        self.history(state, f"VOLUME {go_list(expanded)}")

    def do_stopsignal(self, state: StageState, stage: Stage, stopsignal: StopSignal) -> None:
        value = self.expand(stopsignal, stopsignal.signal, state.env_map())
        try:
            parse_signal(value)
        except ValueError as error:
            raise self.error(stopsignal, str(error)) from None
        state.config["StopSignal"] = value
        self.history(state, f"STOPSIGNAL {value}")

    def do_shell(self, state: StageState, stage: Stage, shell: Shell) -> None:
        state.config["Shell"] = list(shell.shell)
        self.history(state, f"SHELL {go_list(shell.shell)}")

    def with_shell(self, state: StageState, args: tuple[str, ...]) -> list[str]:
        shell = list(state.config.get("Shell") or ["/bin/sh", "-c"])
        return [*shell, " ".join(args)]

    def do_cmd(self, state: StageState, stage: Stage, cmd: Cmd) -> None:
        args = self.with_shell(state, cmd.command.args) if cmd.command.prepend_shell else list(cmd.command.args)
        state.config["Cmd"] = args
        state.config["ArgsEscaped"] = True
        state.cmd_set = True
        self.history(state, f"CMD {go_quoted_list(args)}")

    def do_entrypoint(self, state: StageState, stage: Stage, entrypoint: Entrypoint) -> None:
        command = entrypoint.command
        args: list[str] | None
        if command.prepend_shell:
            args = self.with_shell(state, command.args)
        else:
            args = list(command.args) if command.args else None
        state.config["Entrypoint"] = args
        if not state.cmd_set:
            state.config["Cmd"] = None
        self.history(state, f"ENTRYPOINT {go_quoted_list(args or [])}")

    def do_healthcheck(self, state: StageState, stage: Stage, healthcheck: Healthcheck) -> None:
        config: dict[str, Any] = {"Test": list(healthcheck.test)}
        for key, value in (
            ("Interval", healthcheck.interval),
            ("Timeout", healthcheck.timeout),
            ("StartPeriod", healthcheck.start_period),
            ("StartInterval", healthcheck.start_interval),
            ("Retries", healthcheck.retries),
        ):
            if value:
                config[key] = value
        state.config["Healthcheck"] = config
        fields = [
            go_quoted_list(healthcheck.test),
            go_quote(duration_string(healthcheck.interval)),
            go_quote(duration_string(healthcheck.timeout)),
            go_quote(duration_string(healthcheck.start_period)),
        ]
        if healthcheck.start_interval:
            fields.append(go_quote(duration_string(healthcheck.start_interval)))
        fields.append(go_quote_rune(healthcheck.retries))
        self.history(state, "HEALTHCHECK &{" + " ".join(fields) + "}")

    def do_expose(self, state: StageState, stage: Stage, expose: Expose) -> None:
        scope = state.env_map()
        ports = dict(state.config.get("ExposedPorts") or {})
        words: list[str] = []
        for port in expose.ports:
            words.extend(self.expand_words(expose, port, scope))
        try:
            specs = port_specs(words)
        except ValueError as error:
            raise self.error(expose, str(error)) from None
        for spec in specs:
            ports[spec] = {}
        state.config["ExposedPorts"] = ports
        self.history(state, "EXPOSE map[" + " ".join(f"{spec}:{{}}" for spec in sorted(set(specs))) + "]")

    def do_onbuild(self, state: StageState, stage: Stage, onbuild: Onbuild) -> None:
        state.config["OnBuild"] = [*(state.config.get("OnBuild") or []), onbuild.expression]

    # ----------------------------------------------------------- RUN

    def do_run(self, state: StageState, stage: Stage, run: Run) -> None:
        args = list(run.command.args)
        files = run.files
        mounts: list[RunMount] = []
        summary = ""
        if files:
            if len(args) != 1 or not run.command.prepend_shell:
                raise self.error(run, f"parsing produced an invalid run command: {args}")
            marker = parse_marker(args[0])
            if marker is not None:
                data = chomp_content(files[0].data) if files[0].chomp else files[0].data
                if data.startswith("#!"):
                    script = FileOp(base=None, actions=(self.mkfile(files[0].name, data, 0o755),))
                    source = self.graph.add(script, OpMeta("preparing inline document", stage=state.name, internal=True))
                    mounts.append(RunMount(kind="bind", target="/dev/pipes", source=source, source_path="/"))
                    args = [posixpath.join("/dev/pipes", files[0].name)]
                else:
                    args = [data]
                lines = files[0].data.strip().replace("\r\n", "\n").split("\n")
                summary = f" ({lines[0]}{'...' if len(lines) > 1 else ''})"
            else:
                args = [args[0] + "".join(f"\n{f.data}{f.name}" for f in files)]
        argv = self.with_shell(state, tuple(args)) if run.command.prepend_shell else args
        scope = state.env_map()
        for value in run.mounts:
            mounts.append(self.run_mount(state, stage, run, value, scope))
        network = run.network or self.options.network
        if network not in ("default", "none", "host"):
            raise self.error(run, f"unsupported network mode {network!r} (default, none or host)")
        security = self.run_security(run)
        proxy = tuple(f"{k}={v}" for k, v in sorted(self.options.build_args.items()) if k in PROXY_ARGS)
        op = ExecOp(
            rootfs=state.op,
            args=tuple(argv),
            env=tuple(state.env),
            cwd=state.workdir,
            user=state.user,
            network=network,
            mounts=tuple(mounts),
            security=security,
            platform=str(state.platform) if state.platform not in (None, self.host) else "",
            devices=tuple(CdiDevice(d.name, d.required) for d in run.devices),
            proxy_env=proxy,
            ignore_cache=self.ignore_cache(state),
        )
        shown = self.lex_display(run.original, scope)
        state.op = self.graph.add(op, self.meta(state, run, shown + summary))
        self.history(state, "RUN " + self.run_command_string(state, argv) + " # buildkit", state.op)

    def run_security(self, run: Run) -> str:
        """RUN --security: sandbox (the default) or insecure, which needs the entitlement, as in BuildKit."""
        security = run.security or "sandbox"
        if security not in ("sandbox", "insecure"):
            raise self.error(run, f"unsupported security mode {security!r}", hint="use --security=sandbox or --security=insecure")
        if security == "insecure" and "security.insecure" not in self.options.entitlements:
            raise self.error(run, "security.insecure is not allowed", hint="pass --allow security.insecure to pybuild build")
        return security

    def lex_display(self, text: str, scope: Mapping[str, str]) -> str:
        """The instruction as BuildKit shows it in progress: keyword upper-cased, $vars filled in."""
        keyword, _, rest = text.partition(" ")
        try:
            shown = ShellLex(self.dockerfile.escape, raw_quotes=True, skip_unset_env=True).process_word(rest, scope)
        except ExpansionError:
            shown = rest
        return f"{keyword.upper()} {shown}".rstrip()

    def run_command_string(self, state: StageState, argv: list[str]) -> str:
        """BuildKit's history text of a RUN: ``|N K=V ... argv`` for the ARGs in scope."""
        scope = state.env_map()
        pairs = [f"{key}={scope.get(key, value or '')}" for key, value in state.args]
        prefix = [f"|{len(pairs)}", *pairs] if pairs else []
        return " ".join([*prefix, *argv])

    def run_mount(self, state: StageState, stage: Stage, run: Run, value: str, scope: Mapping[str, str]) -> RunMount:
        try:
            mount = parse_mount(self.expand(run, value, scope))
        except MountSyntaxError as error:
            raise self.error(run, str(error)) from None
        target = mount.target
        if target and not target.startswith("/"):
            target = posixpath.join(state.workdir, target)
        source_op = None
        if mount.kind in ("bind", "cache") and mount.from_:
            source_op = self.source_op(run, stage, mount.from_)
        elif mount.kind == "bind":
            source_op = self.context()
        return RunMount(
            kind=mount.kind,
            target=target or "",
            source=source_op,
            source_path=posixpath.normpath("/" + (mount.source or "").lstrip("/")),
            readonly=mount.readonly,
            cache_id=(mount.cache_id or target) if mount.kind == "cache" else None,
            sharing=mount.sharing,
            mode=mount.mode,
            uid=mount.uid,
            gid=mount.gid,
            size=mount.size,
            secret_id=mount.secret_id,
            env=mount.env,
            required=mount.required,
        )

    def source_op(self, where: Instruction, stage: Stage, name: str) -> str | None:
        """The op of ``--from=name``: an earlier stage (by name or index) or an image."""
        index = int(name) if name.isdigit() else self.stage_index(name)
        if index is not None:
            if index not in self.results:
                raise self.error(where, f"stage {name!r} is not converted yet")
            return self.results[index].op
        op, _ = self.image_source(where, name)
        return op

    def context(self) -> str:
        if self.context_op is None:
            self.context_op = self.graph.add(LocalSource(self.options.context), OpMeta("load build context", internal=True))
        return self.context_op

    @staticmethod
    def mkfile(name: str, data: str, mode: int) -> MkfileAction:

        return MkfileAction(path="/" + name.lstrip("/"), data=data, mode=mode)

    # ----------------------------------------------------------- COPY / ADD

    def do_copy(self, state: StageState, stage: Stage, copy_: Copy) -> None:
        convert_copy(self, state, stage, copy_)

    def do_add(self, state: StageState, stage: Stage, add: Add) -> None:
        convert_copy(self, state, stage, add)


def convert(dockerfile: Dockerfile, options: BuildOptions, images: ImageLookup) -> BuildPlan:
    """Build the graph and image config for ``options.target`` (default: the last stage).

    With several ``options.platforms``, the Dockerfile is converted once per
    target platform into one graph (BuildKit converts per TargetPlatform too):
    ops are content-addressed, so a step whose inputs are the same for every
    target (a ``FROM --platform=$BUILDPLATFORM`` stage before any TARGET* ARG)
    is one op, solved once; the plan's ``targets`` are the per-platform plans.
    """
    if len(options.platforms) <= 1:
        single = replace(options, platform=options.platforms[0]) if options.platforms else options
        return _Converter(dockerfile, single, images).convert()
    graph = GraphBuilder()
    plans: list[BuildPlan] = []
    missing: list[tuple[str, Platform]] = []
    where: dict[str, Location] = {}
    for platform in options.platforms:
        try:
            plans.append(_Converter(dockerfile, replace(options, platform=platform), images, graph).convert())
        except MissingImages as error:
            missing.extend(error.wanted)  # every platform's missing bases, pulled in one round
            where = {**error.where, **where}
    if missing:
        raise MissingImages(sorted({ref for ref, _ in missing}), list(dict.fromkeys(missing)), where)
    definition = graph.build()
    targets = tuple(replace(plan, definition=definition) for plan in plans)
    first = targets[0]
    return replace(
        first,
        context_op=next((p.context_op for p in targets if p.context_op), None),
        warnings=tuple(dict.fromkeys(w for p in targets for w in p.warnings)),
        targets=targets,
    )
