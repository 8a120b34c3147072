"""The ``# check=`` directive and what check_dockerfile reports around the rules."""

from __future__ import annotations

import pytest

from pybuild.dag.checks import check_dockerfile
from pybuild.dag.checks._config import CheckConfig, CheckOptionError, parse_check_options
from pybuild.dag.checks._rules import RULES
from pybuild.errors import DockerfileError, DockerfileSyntaxError

NOISY = "FROM alpine AS Build\nMAINTAINER me\nCMD run\n"  # StageNameCasing, MaintainerDeprecated, JSONArgsRecommended


def rules(text: str, **options: object) -> list[str]:
    return [w.rule for w in check_dockerfile(text, "Dockerfile", **options).warnings]  # type: ignore[arg-type]


def test_without_a_directive_every_stable_rule_runs() -> None:
    assert rules(NOISY) == ["StageNameCasing", "MaintainerDeprecated", "JSONArgsRecommended"]


def test_skip_named_rules() -> None:
    text = "# check=skip=StageNameCasing,JSONArgsRecommended\n" + NOISY
    assert rules(text) == ["MaintainerDeprecated"]


def test_skip_all() -> None:
    assert rules("# check=skip=all\n" + NOISY) == []


def test_skip_applies_to_the_layer_rules_too() -> None:
    text = "FROM alpine\nRUN a\nRUN b\n"
    assert rules(text) == ["ConsecutiveRunInstructions"]
    assert rules("# check=skip=ConsecutiveRunInstructions\n" + text) == []


def test_error_true_marks_every_warning_and_the_report() -> None:
    report = check_dockerfile("# check=error=true\n" + NOISY, "Dockerfile")
    assert report.errors_requested and report.failed
    assert {w.severity for w in report.warnings} == {"error"}
    clean = check_dockerfile('# check=error=true\nFROM alpine\nCMD ["run"]\n', "Dockerfile")
    assert clean.errors_requested and not clean.failed and clean.warnings == ()


def test_skip_and_error_together() -> None:
    report = check_dockerfile("# check=skip=all;error=true\n" + NOISY, "Dockerfile")
    assert report.errors_requested and not report.failed


def test_experimental_rules_run_even_when_all_are_skipped() -> None:
    # As BuildKit: asking for an experimental rule outranks skip.
    text = "# check=skip=all;experimental=InvalidDefinitionDescription\n\n# unrelated\nFROM alpine AS base\nCMD run\n"
    assert rules(text) == ["InvalidDefinitionDescription"]


def test_the_build_arg_replaces_the_directive() -> None:
    text = "# check=skip=all\n" + NOISY
    assert rules(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=MaintainerDeprecated"}) == [
        "StageNameCasing", "JSONArgsRecommended",
    ]


def test_a_check_comment_above_an_instruction_skips_its_rules_there_only() -> None:
    text = "FROM alpine\n# check=skip=JSONArgsRecommended\nCMD run\nENTRYPOINT run\n"
    report = check_dockerfile(text, "Dockerfile")
    assert [(w.rule, w.line) for w in report.warnings] == [("JSONArgsRecommended", 4)]


def test_an_invalid_directive_is_a_dockerfile_error() -> None:
    with pytest.raises(DockerfileError) as caught:
        check_dockerfile("# check=skip=all;error=maybe\nFROM alpine\n", "Dockerfile")
    assert caught.value.location is not None and caught.value.location.start_line == 1
    assert "error=maybe" in str(caught.value)


def test_a_dockerfile_that_does_not_parse_raises() -> None:
    with pytest.raises(DockerfileSyntaxError):
        check_dockerfile("FROM alpine\nFROBNICATE\n", "Dockerfile")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", CheckConfig()),
        ("skip=A, B", CheckConfig(skip=frozenset({"A", "B"}))),
        (" skip = all ; error = TRUE", CheckConfig(skip_all=True, error=True)),
        ("error=1;experimental=all", CheckConfig(error=True, experimental_all=True)),
        ("experimental=X;error=false", CheckConfig(experimental=frozenset({"X"}))),
    ],
)
def test_parse_check_options(text: str, expected: CheckConfig) -> None:
    assert parse_check_options(text) == expected


@pytest.mark.parametrize("text", ["skip", "frobnicate=1", "error=yes", "skip=a;error"])
def test_parse_check_options_refuses(text: str) -> None:
    with pytest.raises(CheckOptionError):
        parse_check_options(text)


def test_warnings_are_sorted_by_line_and_deduplicated() -> None:
    text = "FROM alpine\nCOPY $X $X/ /\nMAINTAINER me\nCMD run\n"
    report = check_dockerfile(text, "Dockerfile")
    lines = [w.line for w in report.warnings]
    assert lines == sorted(lines)
    assert [w.rule for w in report.warnings].count("UndefinedVar") == 1


def test_rule_table_lists_buildkit_rules_and_layer_lessons() -> None:
    buildkit = {name for name, rule in RULES.items() if rule.origin == "buildkit"}
    assert {
        "StageNameCasing", "FromAsCasing", "NoEmptyContinuation", "ConsistentInstructionCasing", "DuplicateStageName",
        "ReservedStageName", "JSONArgsRecommended", "MaintainerDeprecated", "UndefinedArgInFrom",
        "WorkdirRelativePath", "UndefinedVar", "MultipleInstructionsDisallowed", "LegacyKeyValueFormat",
        "InvalidBaseImagePlatform", "RedundantTargetPlatform", "SecretsUsedInArgOrEnv", "InvalidDefaultArgInFrom",
        "FromPlatformFlagConstDisallowed", "CopyIgnoredFile", "InvalidDefinitionDescription", "ExposeProtoCasing",
        "ExposeInvalidFormat",
    } == buildkit
    assert {n for n, r in RULES.items() if r.experimental} == {"CopyIgnoredFile", "InvalidDefinitionDescription"}
    assert {n for n, r in RULES.items() if r.origin == "pybuild"} == {
        "ConsecutiveRunInstructions", "PackageCacheInLayer", "FileRemovedInLaterLayer",
    }
