"""A dry run of the variable scopes of a Dockerfile, as BuildKit's dispatcher keeps them
(the rules are ``dag._scope``'s, which conversion follows too).

No image is pulled and nothing runs.  For each instruction the walk records
the scope *before* it: the environment that ``$VAR`` references expand in
(base image Env, ENV, ARG values), the ARG names declared in the stage, the
working directory and whether a WORKDIR or SHELL was set.  A base image's
config is used when an ``ImageLookup`` knows it locally; otherwise the stage
starts like ``scratch`` (PATH only) and the scope says its env is unknown.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from pybuild.errors import ExpansionError, PybuildError
from pybuild.grammar import Arg, Dockerfile, Env, Instruction, Shell, ShellLex, Stage, WordResult, Workdir
from pybuild.oci import ResolvedImage, parse_reference

from .._image import DEFAULT_PATH
from .._platform import Platform, host_platform

if TYPE_CHECKING:
    from .._convert import ImageLookup
from .._scope import (
    NON_ENV_ARGS,
    arg_value,
    env_assignments,
    env_map,
    global_arg_values,
    predefined_args,
    target_stage,
    target_stage_name,
    with_default_path,
)


def expand(lex: ShellLex, word: str, env: Mapping[str, str]) -> WordResult | None:
    """``word`` expanded in ``env``; None when the expansion itself fails
    (``${X:?}`` and the like: the build reports those, a check need not)."""
    try:
        return lex.process_word_with_matches(word, env)
    except ExpansionError:
        return None


@dataclass(frozen=True)
class Scope:
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({"PATH": DEFAULT_PATH}))
    declared: frozenset[str] = frozenset()  # ARG names declared in the stage (BuildKit's buildArgs)
    workdir: str = "/"
    workdir_set: bool = False  # a WORKDIR of this Dockerfile has run in the stage
    shell: tuple[str, ...] = ()  # the image's Shell; () means the default /bin/sh -c
    env_known: bool = True  # False when the base image is not known locally

    def with_env(self, pairs: list[tuple[str, str]]) -> Scope:
        env = dict(self.env)
        for key, value in pairs:
            env[key] = value
        return replace(self, env=MappingProxyType(env))


@dataclass(frozen=True)
class GlobalArgs:
    values: Mapping[str, str]  # what FROM lines expand in
    declared: frozenset[str]  # names of the ARGs before the first FROM
    defaults_only: Mapping[str, str] | None  # values(), had no --build-arg been given; None if that fails


@dataclass(frozen=True)
class StageInfo:
    stage: Stage
    base: str | None  # the expanded base name; None when it cannot be expanded
    parent: int | None  # the index of the stage this one is built FROM
    image: ResolvedImage | None  # of an image base known locally
    scratch: bool
    start: Scope  # the scope right after FROM


@dataclass(frozen=True)
class Step:
    stage: StageInfo
    instruction: Instruction
    before: Scope


@dataclass(frozen=True)
class Walk:
    global_args: GlobalArgs
    stages: tuple[StageInfo, ...]
    steps: tuple[Step, ...]
    target: int  # index of the stage a plain build produces (or --target's)


class _Walker:
    def __init__(self, dockerfile: Dockerfile, build_args: Mapping[str, str], images: ImageLookup | None, platform: Platform) -> None:
        self.dockerfile = dockerfile
        self.build_args = build_args
        self.images = images
        self.platform = platform
        self.lex = ShellLex(dockerfile.escape)

    def expand(self, where: Instruction | Stage, word: str, env: Mapping[str, str]) -> str | None:
        result = expand(self.lex, word, env)
        return result.result if result is not None else None

    def global_args(self, target_name: str | None) -> GlobalArgs:
        start = predefined_args(self.build_args, self.platform, target_stage_name(self.dockerfile, target_name))
        declared = frozenset(decl.name for arg in self.dockerfile.global_args for decl in arg.args)
        values = global_arg_values(self.dockerfile, start, self.build_args, self.expand)
        if values is None:  # the build fails on it; the checks go on with what is known
            values = start
        defaults_only = global_arg_values(self.dockerfile, start, {}, self.expand)
        return GlobalArgs(MappingProxyType(values), declared, defaults_only)

    def walk(self, target_name: str | None) -> Walk:
        target = target_stage(self.dockerfile, target_name).index
        global_args = self.global_args(target_name)
        infos: list[StageInfo] = []
        ends: list[Scope] = []
        steps: list[Step] = []
        for stage in self.dockerfile.stages:
            info = self.stage_info(stage, global_args, infos, ends)
            scope = info.start
            for instruction in stage.instructions:
                steps.append(Step(info, instruction, scope))
                scope = self.apply(scope, instruction, global_args)
            infos.append(info)
            ends.append(scope)
        return Walk(global_args, tuple(infos), tuple(steps), target)

    def stage_info(self, stage: Stage, global_args: GlobalArgs, infos: list[StageInfo], ends: list[Scope]) -> StageInfo:
        result = expand(self.lex, stage.base, global_args.values)
        base = result.result if result is not None else None
        if base is None:
            return StageInfo(stage, None, None, None, False, Scope(env_known=False))
        parent = self.dockerfile.stage(base)
        if parent is not None and parent.index < stage.index:
            return StageInfo(stage, base, parent.index, None, False, ends[parent.index])
        if base.lower() == "scratch":
            return StageInfo(stage, base, None, None, True, Scope())
        image = self.lookup(base)
        if image is None:
            return StageInfo(stage, base, None, None, False, Scope(env_known=False))
        config = dict(image.config.get("config") or {})
        env = env_map(with_default_path(config.get("Env") or []))
        scope = Scope(
            env=MappingProxyType(env),
            workdir=config.get("WorkingDir") or "/",
            shell=tuple(config.get("Shell") or ()),
        )
        return StageInfo(stage, base, None, image, False, scope)

    def lookup(self, name: str) -> ResolvedImage | None:
        if self.images is None:
            return None
        try:
            ref = str(parse_reference(name))
        except PybuildError:
            return None
        return self.images.lookup(ref, self.platform)

    def apply(self, scope: Scope, instruction: Instruction, global_args: GlobalArgs) -> Scope:
        """The scope after ``instruction``, as BuildKit's dispatch leaves it."""
        if isinstance(instruction, Env):
            return scope.with_env(env_assignments(instruction, scope.env, self.expand))
        if isinstance(instruction, Arg):
            for decl in instruction.args:
                default = self.expand(instruction, decl.default, scope.env) if decl.default is not None else None
                value = arg_value(decl, default, self.build_args, global_args.values)
                scope = replace(scope, declared=scope.declared | {decl.name})
                if value is not None and decl.name not in NON_ENV_ARGS:
                    scope = scope.with_env([(decl.name, value)])
            return scope
        if isinstance(instruction, Workdir):
            result = expand(self.lex, instruction.path, scope.env)
            if result is None:
                return replace(scope, workdir_set=True)
            return replace(scope, workdir=join_path(scope.workdir, result.result), workdir_set=True)
        if isinstance(instruction, Shell):
            return replace(scope, shell=instruction.shell)
        return scope


def join_path(cwd: str, path: str) -> str:
    """``path`` made absolute against ``cwd`` and normalized (``/a/../b`` -> ``/b``)."""
    joined = posixpath.normpath(posixpath.join(cwd or "/", path))
    return "/" + joined.lstrip("/") if joined.startswith("//") else joined


def walk(
    dockerfile: Dockerfile,
    *,
    build_args: Mapping[str, str],
    images: ImageLookup | None = None,
    platform: Platform | None = None,
    target: str | None = None,
) -> Walk:
    return _Walker(dockerfile, build_args, images, platform or host_platform()).walk(target)
