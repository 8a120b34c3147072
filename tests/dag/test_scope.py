"""ARG and ENV scopes: the one model conversion and the build checks' dry run share."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pybuild.dag import BuildOptions, ExecOp, ResolvedImage, convert
from pybuild.dag._scope import arg_value, env_assignments, global_arg_values, target_stage, with_default_path
from pybuild.dag.checks._walk import walk
from pybuild.errors import DockerfileError, ExpansionError
from pybuild.grammar import Env, Run, ShellLex, parse

BASE = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin:/bin", "FROM_IMAGE=yes"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
}


class Images:
    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        return ResolvedImage(ref, "sha256:" + "a" * 64, BASE)


def literal(where: object, word: str, env: Mapping[str, str]) -> str | None:
    """Expand like the converter and the checks do, failing to None."""
    try:
        return ShellLex("\\").process_word(word, env)
    except ExpansionError:
        return None


SCOPES = [
    pytest.param("ARG V=global\nFROM busybox\nARG V\nRUN one\n", {}, id="a stage ARG without default takes the global value"),
    pytest.param("ARG V=global\nFROM busybox\nARG V=mine\nRUN one\n", {}, id="a stage ARG's own default beats the global"),
    pytest.param("ARG V=global\nFROM busybox\nARG V=mine\nRUN one\n", {"V": "cli"}, id="a build-arg beats both"),
    pytest.param("FROM busybox\nRUN one\nARG UNSET\nRUN two\n", {}, id="an ARG with no value is declared but not set"),
    pytest.param("FROM busybox\nENV A=1\nENV A=2 B=$A\nRUN one\n", {}, id="the pairs of one ENV see the scope before it"),
    pytest.param("FROM busybox\nENV E=env\nARG X=${E}-x Y=$X-y\nRUN one\n", {}, id="ARG defaults expand in ENV and earlier ARGs"),
    pytest.param("FROM busybox\nARG V=arg\nENV V=env\nRUN one\n", {}, id="ENV overrides an ARG of the same name"),
    pytest.param("FROM busybox\nENV PATH=/opt:$PATH\nRUN one\n", {}, id="PATH comes from the base image"),
    pytest.param("FROM scratch\nRUN one\n", {}, id="scratch has the default PATH"),
    pytest.param("FROM busybox\nARG TARGETOS TARGETARCH\nRUN one\n", {}, id="the platform ARGs are predefined"),
    pytest.param("ARG BASE=busybox\nFROM $BASE\nARG BASE\nRUN echo $BASE\n", {"BASE": "alpine"}, id="a global ARG names the base"),
]


@pytest.mark.parametrize(("text", "build_args"), SCOPES)
def test_conversion_and_the_checks_see_the_same_variables_at_each_run(text: str, build_args: dict[str, str]) -> None:
    dockerfile = parse(text)
    plan = convert(dockerfile, BuildOptions(build_args=build_args), Images())
    converted = {op.args[-1]: dict(item.partition("=")[::2] for item in op.env)
                 for op in plan.definition.ops.values() if isinstance(op, ExecOp)}
    walked = {" ".join(step.instruction.command.args): dict(step.before.env)
              for step in walk(dockerfile, build_args=build_args, images=Images()).steps if isinstance(step.instruction, Run)}
    assert converted == walked
    assert converted  # each case runs something


def test_a_stage_arg_takes_the_build_arg_then_its_default_then_the_global_value() -> None:
    declared_with_default, declared_bare = parse("FROM x\nARG V=d W\n").stages[0].instructions[0].args  # type: ignore[attr-defined]
    assert arg_value(declared_with_default, "d", {"V": "cli"}, {"V": "global"}) == "cli"
    assert arg_value(declared_with_default, "d", {}, {"V": "global"}) == "d"
    assert arg_value(declared_with_default, None, {}, {"V": "global"}) is None  # a default that failed to expand
    assert arg_value(declared_bare, None, {}, {"W": "global"}) == "global"
    assert arg_value(declared_bare, None, {}, {}) is None


def test_global_args_expand_in_order_after_the_predefined_ones() -> None:
    dockerfile = parse("ARG A=$TARGETOS B=${A}-b C\nFROM x\n")
    assert global_arg_values(dockerfile, {"TARGETOS": "linux"}, {"C": "cli"}, literal) == {
        "TARGETOS": "linux", "A": "linux", "B": "linux-b", "C": "cli",
    }
    assert global_arg_values(dockerfile, {"TARGETOS": "linux"}, {"A": "given"}, literal)["B"] == "given-b"  # type: ignore[index]


def test_global_args_that_fail_to_expand_give_nothing() -> None:
    dockerfile = parse("ARG A=${MISSING:?unset}\nFROM x\n")
    assert global_arg_values(dockerfile, {}, {}, literal) is None


def test_env_pairs_expand_in_the_scope_before_the_instruction_and_skip_failures() -> None:
    env = parse("FROM x\nENV A=new B=$A C=${NOPE:?x} D=d\n").stages[0].instructions[0]
    assert isinstance(env, Env)
    assert env_assignments(env, {"A": "old"}, literal) == [("A", "new"), ("B", "old"), ("D", "d")]


def test_a_stage_always_has_a_path() -> None:
    assert with_default_path(["A=1"])[-1].startswith("PATH=/usr/local/sbin:")
    assert with_default_path(["PATH=/x", "A=1"]) == ["PATH=/x", "A=1"]


def test_the_target_is_a_stage_name_never_an_index() -> None:
    dockerfile = parse("FROM x AS first\nFROM x AS second\n")
    assert target_stage(dockerfile, None).name == "second" and target_stage(dockerfile, "first").index == 0
    with pytest.raises(DockerfileError) as caught:
        target_stage(dockerfile, "0")
    assert caught.value.hint == "stages are: first, second"

