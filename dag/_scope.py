"""ARG and ENV scopes, as BuildKit's dispatcher keeps them: the one model that
conversion (``_convert``) and the build checks' dry run (``checks._walk``) follow.

Before the first FROM, the predefined ARGs and then the global ARGs, in order,
make the values FROM lines expand in.  In a stage, the variables start as
the base's Env (with a PATH), or for a stage based on another stage as that
stage's last step environment, its ARG values included, with its Env set over
it (``starting_env``); they change with each ENV and ARG: every pair of
one ENV expands in the scope from before that ENV; an ARG's value is its
``--build-arg``, else its default (expanded in the scope so far), else the
global ARG of that name.

The two callers differ only in what a failed expansion means, so the
functions here take an ``Expand``: conversion's raises a DockerfileError
located at the instruction, the checks' returns None and they go on with
what is known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from pybuild.errors import DockerfileError
from pybuild.grammar import ArgDecl, Dockerfile, Env, Instruction, Stage

from ._image import DEFAULT_PATH, set_env
from ._platform import Platform, host_platform, platform_args

#: A word expanded in a scope, at an instruction; None when the expansion fails
#: and the caller goes on without it.
Expand = Callable[[Instruction | Stage, str, Mapping[str, str]], str | None]

#: The proxy ARGs BuildKit predefines: a --build-arg of these reaches RUN
#: without a declaration, and no check calls them undefined.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)

#: ARGs BuildKit never puts into the environment of a stage (convert.go's
#: nonEnvArgs): declared, they tell BuildKit which stages and context to scan for
#: an SBOM, and they stay in the history and RUN's "|N" list, but no step or later
#: instruction sees them.  Conversion and the checks both follow this.
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


def target_stage(dockerfile: Dockerfile, target: str | None) -> Stage:
    """The stage a build produces: ``--target``'s (a name, never an index), else the last."""
    if target is None:
        return dockerfile.stages[-1]
    stage = dockerfile.stage(target)
    if stage is None or target.isdigit():
        names = [s.name for s in dockerfile.stages if s.name]
        hint = f"stages are: {', '.join(names)}" if names else "name a stage with FROM image AS name"
        raise DockerfileError(f"target stage {target!r} could not be found", hint=hint)
    return stage


def predefined_args(build_args: Mapping[str, str], platform: Platform, target: str) -> dict[str, str]:
    """BuildKit's defaultArgs (frontend/dockerfile/dockerfile2llb/platform.go): the
    platform ARGs, BUILDOSVERSION and TARGETOSVERSION (the platforms' OSVersion,
    empty on Linux) and TARGETSTAGE, the stage being built (``target_stage_name``);
    a --build-arg of the same name replaces each.  Conversion and the checks both
    start their global ARGs from these."""
    values = platform_args(host_platform(), platform)
    values.update({"BUILDOSVERSION": "", "TARGETOSVERSION": "", "TARGETSTAGE": target})
    for key in list(values):
        if key in build_args:
            values[key] = build_args[key]
    return values


def target_stage_name(dockerfile: Dockerfile, target: str | None) -> str:
    """TARGETSTAGE's value: --target as given, else the last stage's name, else
    "default" (BuildKit's toDispatchState and testTargetStageNameArg in
    frontend/dockerfile/dockerfile_test.go)."""
    return target or dockerfile.stages[-1].name or "default"


def global_arg_values(
    dockerfile: Dockerfile, start: Mapping[str, str], build_args: Mapping[str, str], expand: Expand
) -> dict[str, str] | None:
    """BuildKit's meta args: ``start`` (the predefined ARGs), then the ARGs
    before the first FROM in order, each a --build-arg or its default expanded
    in the values so far.  None if a default fails to expand."""
    values = dict(start)
    for arg in dockerfile.global_args:
        for decl in arg.args:
            if decl.name in build_args:
                values[decl.name] = build_args[decl.name]
            elif decl.default is not None:
                value = expand(arg, decl.default, values)
                if value is None:
                    return None
                values[decl.name] = value
    return values


def arg_value(decl: ArgDecl, default: str | None, build_args: Mapping[str, str], global_values: Mapping[str, str]) -> str | None:
    """The value an ARG in a stage gets: its --build-arg, else its default
    (``default``: the default expanded, None if it failed to), else the global
    ARG's value; None when it has none (declared, but not in the environment)."""
    if decl.name in build_args:
        return build_args[decl.name]
    if decl.default is not None:
        return default
    return global_values.get(decl.name)


def env_assignments(env: Env, scope: Mapping[str, str], expand: Expand) -> list[tuple[str, str]]:
    """The (key, value) pairs an ENV sets, each expanded in ``scope``: the
    variables from before the ENV, so one pair never sees another of the same
    line.  A pair whose key or value fails to expand is left out."""
    pairs = []
    for pair in env.pairs:
        key = expand(env, pair.key, scope)
        value = expand(env, pair.value, scope)
        if key is not None and value is not None:
            pairs.append((key, value))
    return pairs


def with_default_path(env: Sequence[str]) -> list[str]:
    """An image's Env (``K=V`` items) with PATH added when it sets none."""
    if any(item.startswith("PATH=") for item in env):
        return list(env)
    return [*env, f"PATH={DEFAULT_PATH}"]


def starting_env(inherited: Sequence[str], image_env: Sequence[str]) -> list[str]:
    """The step environment a stage starts with: its image's Env, or, for a stage
    based on another stage, that stage's last step environment (its ARG values
    included) with the image's Env set over it.

    BuildKit's dispatchState.init copies the base stage's LLB state, whose env
    holds what dispatchArg added, and dispatchStages then adds each image Env
    item again (frontend/dockerfile/dockerfile2llb/convert.go): an ARG of the
    parent reaches the child's RUN, unless an ENV of the parent has its name."""
    if not inherited:
        return list(image_env)
    env = list(inherited)
    for item in image_env:
        key, _, value = item.partition("=")
        env = set_env(env, key, value)
    return env


def env_map(env: Iterable[str]) -> dict[str, str]:
    """``K=V`` items as a mapping."""
    return dict(item.partition("=")[::2] for item in env)
