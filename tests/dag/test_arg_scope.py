"""ARG scope as BuildKit's dockerfile2llb keeps it: what a stage based on another
stage inherits, the predefined ARGs, and the ARGs that never reach a step's
environment.  Each test names the BuildKit source that defines the behaviour."""

from __future__ import annotations

from pybuild.dag import BuildOptions, ExecOp, ImageSource, ResolvedImage, convert
from pybuild.dag.checks._walk import walk
from pybuild.grammar import Run, parse

BASE = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
    "history": [{"created": "2020-01-01T00:00:00Z"}],
}


class Images:
    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        return ResolvedImage(ref, "sha256:" + "a" * 64, BASE)


def plan(text: str, **options):  # type: ignore[no-untyped-def]
    return convert(parse(text), BuildOptions(**options), Images())


def run_env(text: str, command: str, **options) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment of the RUN whose shell command is ``command``."""
    for op in plan(text, **options).definition.ops.values():
        if isinstance(op, ExecOp) and op.args[-1] == command:
            return dict(item.partition("=")[::2] for item in op.env)
    raise AssertionError(f"no RUN {command!r}")


def run_history(text: str, **options) -> list[str]:  # type: ignore[no-untyped-def]
    return [step.created_by for step in plan(text, **options).target.image.history if step.created_by.startswith("RUN")]


# ------------------------------------------------------- a stage based on a stage

PARENT = "ARG G=global\nFROM busybox AS base\nARG A=one\nARG G\nARG C\n"


def test_a_stage_based_on_a_stage_runs_with_the_parents_arg_values() -> None:
    """BuildKit's dispatchState.init (frontend/dockerfile/dockerfile2llb/convert.go)
    starts a stage whose base is a stage from ``ds.base.state``, whose env holds
    every value dispatchArg added with AddEnv; so an ARG of the parent (its
    default, a global's value, a --build-arg) is in the child's RUN
    environment without being declared again (the Dockerfile reference's "ARG
    scope": inherited by stages based on that stage).  Checked with dockerd
    20.10.24: golden case stage_from_stage_inherits_args."""
    env = run_env(PARENT + "FROM base\nRUN child\n", "child", build_args={"C": "cli"})
    assert (env["A"], env["G"], env["C"]) == ("one", "global", "cli")


def test_a_stage_based_on_a_stage_expands_words_in_the_parents_arg_values() -> None:
    """convert.go's dispatch expands an instruction's words in getEnv(d.state), the
    state init() copied from the base stage, ARG values included."""
    p = plan(PARENT + "FROM base\nENV SEEN=$A-$G-$C\nWORKDIR /w/$A\n", build_args={"C": "cli"})
    config = p.target.image.config
    assert "SEEN=one-global-cli" in config["Env"] and config["WorkingDir"] == "/w/one"


def test_the_parents_image_env_wins_over_an_inherited_arg_of_the_same_name() -> None:
    """convert.go's dispatchStages re-adds every item of the stage's image Env to
    d.state after init(), so in the child an ENV of the parent replaces a later ARG
    of the same name, while the parent's own steps saw the ARG (dockerd 20.10.24:
    base X=arg, child X=env)."""
    text = "FROM busybox AS base\nENV X=env\nARG X=arg Y=y\nRUN parent\nFROM base\nRUN child\n"
    assert run_env(text, "parent")["X"] == "arg"
    child = run_env(text, "child")
    assert (child["X"], child["Y"]) == ("env", "y")


def test_a_parents_arg_is_part_of_the_childs_run_cache_key() -> None:
    """The inherited values are in the child's ExecOp env (BuildKit's
    d.state.Run takes the state's env into the op, and so into its digest): a
    different --build-arg for the parent's ARG is a different child step even
    when the parent runs nothing."""
    text = "FROM busybox AS base\nARG A\nFROM base\nRUN child\n"
    [one] = [op for op in plan(text, build_args={"A": "1"}).definition.ops.values() if isinstance(op, ExecOp)]
    [two] = [op for op in plan(text, build_args={"A": "2"}).definition.ops.values() if isinstance(op, ExecOp)]
    assert one != two and "A=1" in one.env


def test_inherited_args_are_not_in_the_childs_run_history_prefix() -> None:
    """dockerd 20.10.24's BuildKit (v0.8, the golden cases' engine) writes RUN's
    ``|N K=V`` from the stage's own ARG instructions only: the child's RUN is
    ``RUN /bin/sh -c ...`` (golden case stage_from_stage_inherits_args)."""
    history = run_history(PARENT + "RUN parent\nFROM base\nARG B=two\nRUN child\n", build_args={"C": "cli"})
    assert history == [
        "RUN |3 A=one G=global C=cli /bin/sh -c parent # buildkit",
        "RUN |1 B=two /bin/sh -c child # buildkit",
    ]


def test_a_stage_based_on_an_image_does_not_see_another_stages_args() -> None:
    """Only stages based on the stage inherit (convert.go: init() runs only when
    ds.base is set); an unrelated stage starts from its image's Env."""
    env = run_env(PARENT + "FROM busybox\nRUN other\n", "other")
    assert "A" not in env and "G" not in env


def test_conversion_and_the_checks_agree_on_a_stage_based_on_a_stage() -> None:
    """The checks' dry run (dag/checks/_walk.py) starts a child stage from its
    parent's final scope; conversion now does the same."""
    text = PARENT + "FROM base\nARG B=two\nRUN child\n"
    dockerfile = parse(text)
    converted = run_env(text, "child", build_args={"C": "cli"})
    [walked] = [dict(step.before.env) for step in walk(dockerfile, build_args={"C": "cli"}, images=Images()).steps
                if isinstance(step.instruction, Run)]
    assert converted == walked


# ------------------------------------------------------- predefined ARGs

def test_targetstage_names_the_stage_being_built() -> None:
    """BuildKit's defaultArgs (frontend/dockerfile/dockerfile2llb/platform.go, PR
    moby/buildkit#5431) predefines TARGETSTAGE: --target's name, else the last
    stage's, else "default"; a stage sees it once it declares ``ARG TARGETSTAGE``
    (frontend/dockerfile/dockerfile_test.go testTargetStageNameArg)."""
    text = "FROM busybox AS base\nRUN before\nARG TARGETSTAGE\nRUN after\nFROM base AS foo\nFROM base\n"
    assert "TARGETSTAGE" not in run_env(text, "before")
    assert run_env(text, "after")["TARGETSTAGE"] == "default"
    assert run_env(text, "after", target="foo")["TARGETSTAGE"] == "foo"
    assert run_env(text + "FROM base AS final\n", "after")["TARGETSTAGE"] == "final"


def test_os_version_args_are_predefined_and_empty_on_linux() -> None:
    """defaultArgs (platform.go) also sets BUILDOSVERSION and TARGETOSVERSION from the
    platforms' OSVersion, which a Linux platform leaves empty: declared, they are
    set to "" (not unset)."""
    env = run_env("FROM busybox\nARG BUILDOSVERSION TARGETOSVERSION\nRUN x\n", "x")
    assert env["BUILDOSVERSION"] == "" and env["TARGETOSVERSION"] == ""


def test_a_build_arg_replaces_a_predefined_arg_in_from() -> None:
    """defaultArgs takes the --build-arg of a predefined name over its computed
    value (its ``overrides``), so FROM lines expand in the given one too."""
    p = plan("FROM busybox:${TARGETARCH}\nRUN x\n", build_args={"TARGETARCH": "given"})
    [source] = [op for op in p.definition.ops.values() if isinstance(op, ImageSource)]
    assert source.ref.endswith("busybox:given")


def test_a_predefined_arg_is_not_in_the_environment_unless_declared() -> None:
    """The predefined ARGs are global (meta) ARGs: a stage's step sees them only
    after ``ARG NAME`` (convert.go dispatchArg reads opt.globalArgs)."""
    env = run_env("FROM busybox\nRUN x\n", "x")
    assert not {"TARGETSTAGE", "TARGETOSVERSION", "TARGETARCH"} & set(env)


def test_conversion_and_the_checks_start_from_the_same_predefined_args() -> None:
    """dag/_scope.py predefined_args is the one list both follow, TARGETSTAGE and
    the OS versions included."""
    text = "FROM busybox\nARG TARGETSTAGE BUILDOSVERSION TARGETARCH\nRUN x\n"
    walked = [dict(step.before.env) for step in walk(parse(text), build_args={}, images=Images()).steps
              if isinstance(step.instruction, Run)]
    assert walked == [run_env(text, "x")]


# ------------------------------------------------------- ARGs that stay out of the env

def test_sbom_scan_args_never_reach_the_run_environment() -> None:
    """convert.go's nonEnvArgs (BUILDKIT_SBOM_SCAN_CONTEXT, BUILDKIT_SBOM_SCAN_STAGE):
    dispatchArg records them (d.buildArgs, read to decide what to scan) but does
    not AddEnv them, so RUN does not see them, even from a --build-arg; the
    history still shows the ARG and RUN's ``|N`` prefix its value
    (runCommandString falls back to the declared value)."""
    text = "FROM busybox\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nARG BUILDKIT_SBOM_SCAN_CONTEXT\nRUN x\n"
    env = run_env(text, "x", build_args={"BUILDKIT_SBOM_SCAN_CONTEXT": "true"})
    assert not {"BUILDKIT_SBOM_SCAN_STAGE", "BUILDKIT_SBOM_SCAN_CONTEXT"} & set(env)
    history = [step.created_by for step in plan(text, build_args={"BUILDKIT_SBOM_SCAN_CONTEXT": "true"}).target.image.history]
    assert "ARG BUILDKIT_SBOM_SCAN_STAGE=true" in history
    assert history[-1].startswith("RUN |2 BUILDKIT_SBOM_SCAN_STAGE=true BUILDKIT_SBOM_SCAN_CONTEXT=true /bin/sh -c x")


def test_sbom_scan_args_do_not_expand_in_later_words() -> None:
    """Not in d.state's env, they expand to nothing in the stage's later instructions."""
    p = plan("FROM busybox\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nENV SEEN=[$BUILDKIT_SBOM_SCAN_STAGE]\n")
    assert "SEEN=[]" in p.target.image.config["Env"]


def test_sbom_scan_args_are_not_inherited_by_a_child_stage() -> None:
    """What never entered the parent's env is not in the child's either."""
    env = run_env("FROM busybox AS base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nFROM base\nRUN child\n", "child")
    assert "BUILDKIT_SBOM_SCAN_STAGE" not in env


def test_conversion_and_the_checks_agree_on_sbom_scan_args() -> None:
    """NON_ENV_ARGS in dag/_scope.py is the one list both follow."""
    text = "FROM busybox\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nRUN x\n"
    walked = [dict(step.before.env) for step in walk(parse(text), build_args={}, images=Images()).steps
              if isinstance(step.instruction, Run)]
    assert walked == [run_env(text, "x")]
