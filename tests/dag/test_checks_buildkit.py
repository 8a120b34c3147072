"""BuildKit's build-check rules: each fires where BuildKit's does, and only there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pybuild.dag.checks import CheckReport, check_dockerfile
from pybuild.dag._platform import Platform
from pybuild.oci import ResolvedImage

AMD64 = Platform("linux", "amd64")


def check(text: str, **options: Any) -> CheckReport:
    options.setdefault("platform", AMD64)
    return check_dockerfile(text, "Dockerfile", **options)


def found(text: str, rule: str, **options: Any) -> list[tuple[int, str]]:
    """(line, message) of every warning of ``rule``."""
    return [(w.line, w.message) for w in check(text, **options).warnings if w.rule == rule]


# -- rules checked while parsing ------------------------------------------------------


def test_stage_name_casing() -> None:
    assert found("FROM alpine AS BuilderBase\n", "StageNameCasing") == [
        (1, "Stage name 'BuilderBase' should be lowercase")
    ]
    assert found("FROM alpine AS builder-base\nFROM alpine\n", "StageNameCasing") == []


def test_from_as_casing() -> None:
    assert found("FROM debian:latest as builder\n", "FromAsCasing") == [
        (1, "'as' and 'FROM' keywords' casing do not match")
    ]
    assert found("from debian:latest AS builder\n", "FromAsCasing") == [
        (1, "'AS' and 'from' keywords' casing do not match")
    ]
    # A FROM of mixed case is left to ConsistentInstructionCasing.
    assert found("FROM a AS b\nfrom c as d\nFrom e as f\n", "FromAsCasing") == []


def test_maintainer_deprecated() -> None:
    text = "FROM alpine\nMAINTAINER me@example.org\n"
    assert found(text, "MaintainerDeprecated") == [(2, "Maintainer instruction is deprecated in favor of using label")]
    assert found('FROM alpine\nLABEL org.opencontainers.image.authors="me"\n', "MaintainerDeprecated") == []


def test_no_empty_continuation_names_the_instruction() -> None:
    text = "FROM alpine\nRUN echo a && \\\n\n    echo b\nRUN echo c\n"
    assert found(text, "NoEmptyContinuation") == [(2, "Empty continuation line")]
    warning = next(w for w in check(text).warnings if w.rule == "NoEmptyContinuation")
    assert warning.end_line == 4
    assert found("FROM alpine\nRUN echo a && \\\n    echo b\n\nRUN c\n", "NoEmptyContinuation") == []


def test_empty_line_in_a_heredoc_is_not_a_continuation() -> None:
    text = "FROM alpine\nRUN <<EOF\necho a\n\necho b\nEOF\n"
    assert found(text, "NoEmptyContinuation") == []


# -- rules over all stages ------------------------------------------------------------------


def test_consistent_instruction_casing_follows_the_majority() -> None:
    text = "FROM alpine\nRUN echo hi\nrun echo again\nCopy a b\n"
    assert found(text, "ConsistentInstructionCasing") == [
        (3, "Command 'run' should match the case of the command majority (uppercase)"),
        (4, "Command 'Copy' should match the case of the command majority (uppercase)"),
    ]
    lower = "from alpine\nrun echo hi\nWORKDIR /x\nrun echo\n"
    assert found(lower, "ConsistentInstructionCasing") == [
        (3, "Command 'WORKDIR' should match the case of the command majority (lowercase)")
    ]
    assert found("FROM alpine\nRUN x\nCMD [\"y\"]\n", "ConsistentInstructionCasing") == []


def test_global_args_do_not_count_for_casing() -> None:
    assert found("arg X=1\nFROM alpine\nRUN y\n", "ConsistentInstructionCasing") == []


def test_duplicate_stage_name_is_a_check_not_a_parse_error() -> None:
    text = "FROM alpine AS build\nRUN a\nFROM debian AS Build\nRUN b\n"
    assert found(text, "DuplicateStageName") == [(3, 'Duplicate stage name "build", stage names should be unique')]
    assert found("FROM alpine AS a\nFROM alpine AS b\n", "DuplicateStageName") == []


def test_reserved_stage_name() -> None:
    assert found("FROM alpine AS scratch\n", "ReservedStageName") == [
        (1, 'Stage name should not use the same name as reserved stage "scratch"')
    ]
    assert found("FROM alpine AS context\n", "ReservedStageName")[0][0] == 1
    assert found("FROM alpine AS scratchpad\n", "ReservedStageName") == []


# -- FROM lines ----------------------------------------------------------------------------


def test_undefined_arg_in_from_with_suggestion() -> None:
    text = "ARG VERSION=latest\nFROM alpine:${VERSIO}\n"
    assert found(text, "UndefinedArgInFrom") == [(2, "FROM argument 'VERSIO' is not declared (did you mean VERSION?)")]
    assert found("FROM alpine:$TAG\n", "UndefinedArgInFrom") == [(1, "FROM argument 'TAG' is not declared")]


def test_declared_and_predefined_args_in_from_are_fine() -> None:
    assert found("ARG TAG\nFROM alpine:${TAG:-3}\n", "UndefinedArgInFrom") == []
    assert found("FROM --platform=$BUILDPLATFORM alpine\n", "UndefinedArgInFrom") == []


def test_invalid_default_arg_in_from() -> None:
    text = "ARG TAG\nFROM busybox:${TAG}\n"
    assert found(text, "InvalidDefaultArgInFrom") == [
        (2, "Default value for ARG busybox:${TAG} results in empty or invalid base image name")
    ]
    # A --build-arg does not help: the rule is about the defaults.
    assert found(text, "InvalidDefaultArgInFrom", build_args={"TAG": "1"}) != []
    assert found("ARG TAG=latest\nFROM busybox:${TAG}\n", "InvalidDefaultArgInFrom") == []


def test_redundant_target_platform() -> None:
    text = "FROM --platform=$TARGETPLATFORM alpine\n"
    assert found(text, "RedundantTargetPlatform") == [
        (1, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior")
    ]
    assert found("FROM --platform=$BUILDPLATFORM alpine\n", "RedundantTargetPlatform") == []


def test_from_platform_flag_const_disallowed() -> None:
    text = "FROM --platform=linux/amd64 alpine AS builder\n"
    assert found(text, "FromPlatformFlagConstDisallowed") == [
        (1, 'FROM --platform flag should not use constant value "linux/amd64"')
    ]
    # A stage named after its platform is deliberate.
    assert found("FROM --platform=linux/arm64 alpine AS build-arm64\n", "FromPlatformFlagConstDisallowed") == []
    assert found("FROM --platform=$BUILDPLATFORM alpine\n", "FromPlatformFlagConstDisallowed") == []


class _Images:
    def __init__(self, configs: dict[str, dict[str, Any]]) -> None:
        self.configs = configs
        self.asked: list[str] = []

    def lookup(self, ref: str, platform: Any) -> ResolvedImage | None:
        self.asked.append(ref)
        config = self.configs.get(ref)
        return ResolvedImage(ref, "sha256:" + "0" * 64, config) if config is not None else None


def _image(os_: str = "linux", arch: str = "amd64", **config: Any) -> dict[str, Any]:
    return {"os": os_, "architecture": arch, "config": config, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}


def test_invalid_base_image_platform_needs_a_known_image() -> None:
    images = _Images({"docker.io/library/alpine:latest": _image(arch="arm64")})
    text = "FROM alpine\n"
    assert found(text, "InvalidBaseImagePlatform", images=images) == [
        (1, 'Base image alpine was pulled with platform "linux/arm64", expected "linux/amd64" for current build')
    ]
    assert images.asked == ["docker.io/library/alpine:latest"]
    assert found(text, "InvalidBaseImagePlatform") == []  # not known locally: nothing to compare
    same = _Images({"docker.io/library/alpine:latest": _image()})
    assert found(text, "InvalidBaseImagePlatform", images=same) == []


# -- instructions ----------------------------------------------------------------------------


def test_json_args_recommended() -> None:
    text = "FROM alpine\nENTRYPOINT my-program start\ncmd run\n"
    assert found(text, "JSONArgsRecommended") == [
        (2, "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals"),
        (3, "JSON arguments recommended for cmd to prevent unintended behavior related to OS signals"),
    ]
    assert found('FROM alpine\nCMD ["run"]\n', "JSONArgsRecommended") == []
    assert found('FROM alpine\nSHELL ["/bin/bash", "-c"]\nCMD echo hi\n', "JSONArgsRecommended") == []


def test_json_args_sees_the_shell_of_a_parent_stage_and_of_a_known_image() -> None:
    text = 'FROM alpine AS base\nSHELL ["/bin/ash", "-c"]\nFROM base\nCMD echo hi\n'
    assert found(text, "JSONArgsRecommended") == []
    images = _Images({"docker.io/library/winish:latest": _image(Shell=["/bin/bash", "-c"])})
    assert found("FROM winish\nCMD echo hi\n", "JSONArgsRecommended", images=images) == []


def test_multiple_instructions_disallowed_points_at_the_ignored_one() -> None:
    text = 'FROM alpine\nCMD ["a"]\nHEALTHCHECK NONE\nCMD ["b"]\nHEALTHCHECK CMD ["c"]\n'
    assert found(text, "MultipleInstructionsDisallowed") == [
        (2, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
        (3, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used"),
    ]
    # Each stage has its own.
    assert found('FROM alpine AS a\nCMD ["a"]\nFROM a\nCMD ["b"]\n', "MultipleInstructionsDisallowed") == []


def test_workdir_relative_path_only_for_the_first_workdir() -> None:
    text = "FROM alpine\nWORKDIR app\nWORKDIR src\n"
    assert found(text, "WorkdirRelativePath") == [
        (2, 'Relative workdir "app" can have unexpected results if the base image changes')
    ]
    assert found("FROM alpine\nWORKDIR /app\nWORKDIR src\n", "WorkdirRelativePath") == []
    # Inherited from the stage this one is built on.
    assert found("FROM alpine AS a\nWORKDIR /app\nFROM a\nWORKDIR src\n", "WorkdirRelativePath") == []


def test_workdir_is_checked_after_expansion() -> None:
    assert found("FROM alpine\nENV DIR=/srv\nWORKDIR $DIR\n", "WorkdirRelativePath") == []
    assert found("FROM alpine\nENV DIR=srv\nWORKDIR $DIR\n", "WorkdirRelativePath")[0][1].startswith('Relative workdir "srv"')


def test_undefined_var() -> None:
    text = "FROM alpine AS base\nCOPY $foo .\n"
    assert found(text, "UndefinedVar") == [(2, "Usage of undefined variable '$foo'")]
    assert found("FROM alpine\nARG foo\nCOPY $foo .\n", "UndefinedVar") == []


def test_undefined_var_suggests_a_close_name() -> None:
    assert found("FROM alpine\nENV PATH=$PAHT:/app/bin\n", "UndefinedVar") == [
        (2, "Usage of undefined variable '$PAHT' (did you mean $PATH?)")
    ]


def test_undefined_var_scopes() -> None:
    # A global ARG is not visible in a stage until declared there.
    assert found("ARG V=1\nFROM alpine\nENV X=$V\n", "UndefinedVar") == [(3, "Usage of undefined variable '$V'")]
    assert found("ARG V=1\nFROM alpine\nARG V\nENV X=$V\n", "UndefinedVar") == []
    # The pairs of one ENV do not see each other; the next ENV does.
    assert found("FROM alpine\nENV A=1 B=$A\n", "UndefinedVar") == [(2, "Usage of undefined variable '$A'")]
    assert found("FROM alpine\nENV A=1\nENV B=$A\n", "UndefinedVar") == []
    # Variables of the stage a stage is built FROM carry over.
    assert found("FROM alpine AS a\nENV A=1\nFROM a\nLABEL x=$A\n", "UndefinedVar") == []
    # RUN is left to the shell.
    assert found("FROM alpine\nRUN echo $nothing\n", "UndefinedVar") == []


def test_undefined_var_in_arg_defaults_sees_earlier_args_of_the_same_line() -> None:
    assert found("FROM alpine\nARG A=1 B=$A\n", "UndefinedVar") == []
    assert found("FROM alpine\nARG B=$A\n", "UndefinedVar") == [(2, "Usage of undefined variable '$A'")]


def test_undefined_var_uses_a_known_base_image_env() -> None:
    images = _Images({"docker.io/library/openjdk:latest": _image(Env=["PATH=/usr/bin", "JAVA_HOME=/opt/java"])})
    text = "FROM openjdk\nENV PATH=$JAVA_HOME/bin:$PATH\n"
    assert found(text, "UndefinedVar", images=images) == []
    warning = next(w for w in check(text).warnings if w.rule == "UndefinedVar")
    assert "pull the image" in warning.hint  # not known locally: the hint says why it may be wrong


def test_legacy_key_value_format() -> None:
    text = "FROM alpine\nENV key value\nlabel maintainer me\n"
    assert found(text, "LegacyKeyValueFormat") == [
        (2, '"ENV key=value" should be used instead of legacy "ENV key value" format'),
        (3, '"label key=value" should be used instead of legacy "label key value" format'),
    ]
    assert found('FROM alpine\nENV key=value\nLABEL a="b c"\n', "LegacyKeyValueFormat") == []


@pytest.mark.parametrize(
    ("key", "suspect"),
    [
        ("AWS_SECRET_ACCESS_KEY", True), ("GITHUB_TOKEN", True), ("password", True), ("api_key", True),
        ("AUTH", True), ("PUBLIC_KEY", False), ("KEY_FILE", False), ("TOKEN_VERSION", False),
        ("KEYBOARD", False), ("MONKEY", False), ("PATH", False),
    ],
)
def test_secrets_used_in_arg_or_env(key: str, suspect: bool) -> None:
    text = f"FROM alpine\nARG {key}\nENV {key}=x\n"
    expected = [(2, f'Do not use ARG or ENV instructions for sensitive data (ARG "{key}")'),
                (3, f'Do not use ARG or ENV instructions for sensitive data (ENV "{key}")')]
    assert found(text, "SecretsUsedInArgOrEnv") == (expected if suspect else [])


def test_expose_proto_casing_and_invalid_format() -> None:
    text = "FROM alpine\nEXPOSE 80/TcP 443/tcp\nEXPOSE 127.0.0.1:80:80 8080:80\n"
    assert found(text, "ExposeProtoCasing") == [(2, "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase")]
    assert found(text, "ExposeInvalidFormat") == [
        (3, "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"),
        (3, "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'"),
    ]
    clean = "FROM alpine\nENV P=80\nEXPOSE $P 53/udp 8000-8010\n"
    assert found(clean, "ExposeProtoCasing") == found(clean, "ExposeInvalidFormat") == []


# -- experimental rules ------------------------------------------------------------------------


def test_invalid_definition_description_is_experimental() -> None:
    body = "# a non-descriptive comment\nFROM scratch AS base\n# another one\nARG VERSION=1\n"
    assert found(body, "InvalidDefinitionDescription") == []
    text = "# check=experimental=InvalidDefinitionDescription\n\n" + body
    assert found(text, "InvalidDefinitionDescription") == [
        (4, "Comment for FROM should follow the format: `# base <description>`"),
        (6, "Comment for ARG should follow the format: `# VERSION <description>`"),
    ]


def test_definition_descriptions_that_follow_the_format() -> None:
    text = (
        "# check=experimental=all\n\n# base is a stage for compiling source\nFROM scratch AS base\n"
        "# VERSION This is the version number.\nARG VERSION=1\n# an unrelated comment\n\nARG OTHER\n"
        "# a comment\n#\nFROM base AS other\n"
    )
    assert found(text, "InvalidDefinitionDescription") == []


def test_copy_ignored_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("secret.txt\nbuild/\n")
    text = "# check=experimental=CopyIgnoredFile\nFROM alpine\nCOPY secret.txt /\nADD build/out /o\nCOPY app.py /\n"
    assert found(text, "CopyIgnoredFile", context_dir=tmp_path) == [
        (3, 'Attempting to Copy file "secret.txt" that is excluded by .dockerignore'),
        (4, 'Attempting to Add file "build/out" that is excluded by .dockerignore'),
    ]
    assert found(text, "CopyIgnoredFile") == []  # no context: nothing to compare with
    assert found(text.replace("# check=experimental=CopyIgnoredFile\n", ""), "CopyIgnoredFile", context_dir=tmp_path) == []


def test_copy_ignored_file_leaves_exceptions_and_other_stages_alone(tmp_path: Path) -> None:
    text = "# check=experimental=all\nFROM alpine AS a\nFROM alpine\nCOPY --from=a secret.txt /\nCOPY . /app\n"
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    assert found(text, "CopyIgnoredFile", context_dir=tmp_path) == []
    (tmp_path / ".dockerignore").write_text("*\n")
    assert found(text, "CopyIgnoredFile", context_dir=tmp_path) == [
        (5, 'Attempting to Copy file "." that is excluded by .dockerignore')
    ]
    (tmp_path / ".dockerignore").write_text("secret*\n!secret.keep\n")
    assert found("# check=experimental=all\nFROM alpine\nCOPY secret.txt /\n", "CopyIgnoredFile", context_dir=tmp_path) == []


# -- every warning says where to read more and how to fix it -----------------------------------


def test_every_warning_has_a_hint_and_buildkit_rules_a_link() -> None:
    text = (
        "# check=experimental=all\nARG TAG\nFROM alpine:$TAG as Build\nmaintainer me\nENV API_KEY x\n"
        "WORKDIR app\nEXPOSE 80/TCP\nCMD run\nCMD run\nCOPY $nope /\n"
    )
    warnings = check(text).warnings
    assert len({w.rule for w in warnings}) >= 10
    for warning in warnings:
        assert warning.hint
        assert warning.url is not None and warning.url.startswith("https://docs.docker.com/go/dockerfile/rule/")
        assert warning.severity == "warning"
        assert warning.line <= warning.end_line
