"""Several target platforms from one Dockerfile: one graph, shared steps, per-target ARGs.

BuildKit converts the Dockerfile once per target platform
(frontend/dockerfile/builder/build.go, dockerfile2llb.Dockerfile2LLB with
ConvertOpt.TargetPlatform) and the solver merges identical vertices; these
tests hold pybuild's one merged graph to the same outcome.
"""

from __future__ import annotations

from typing import Any

import pytest

from pybuild.dag import BuildOptions, ExecOp, ImageSource, MissingImages, Platform, ResolvedImage, convert, host_platform
from pybuild.dag._keys import make_key
from pybuild.errors import DockerfileError
from pybuild.grammar import parse

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")
BOTH = (AMD64, ARM64)


class Images:
    """Every base exists for every platform, with that platform in its config."""

    def __init__(self, missing: set[tuple[str, str]] | None = None) -> None:
        self.asked: list[tuple[str, str]] = []
        self.missing = missing or set()

    def lookup(self, ref: str, platform: Platform) -> ResolvedImage | None:
        self.asked.append((ref, str(platform)))
        if (ref, str(platform)) in self.missing:
            return None
        config = {
            "os": platform.os, "architecture": platform.architecture,
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
        }
        digest = "sha256:" + (platform.architecture[0] * 64)
        return ResolvedImage(ref, digest, config)


def plan(text: str, images: Any = None, **options: Any) -> Any:
    return convert(parse(text), BuildOptions(**options), images or Images())


def by_description(p: Any) -> dict[str, str]:
    """Each step's digest by its progress name (without the [..] prefix's platform part)."""
    return {p.definition.meta[d].description: d for d in p.definition.ops}


CROSS = """\
FROM --platform=$BUILDPLATFORM busybox AS build
RUN echo fetch > /deps
ARG TARGETARCH
RUN echo $TARGETARCH > /out
FROM scratch
COPY --from=build /out /out
"""


def test_the_buildplatform_stage_is_shared_until_it_uses_targetarch() -> None:
    """BuildKit's cross-compilation pattern (docs: "Multi-platform builds", and
    dockerfile2llb/convert.go dispatchRun: a RUN's env holds only the ARGs in
    scope): the steps before ARG TARGETARCH are one op for both targets, the
    step after it one op per target."""
    both = plan(CROSS, platforms=BOTH)
    execs = {d: op for d, op in both.definition.ops.items() if isinstance(op, ExecOp)}
    fetch = [d for d, op in execs.items() if "fetch" in op.args[-1]]
    per_target = [op for op in execs.values() if "TARGETARCH" in op.args[-1]]
    assert len(fetch) == 1
    assert sorted(dict(e.split("=", 1) for e in op.env)["TARGETARCH"] for op in per_target) == ["amd64", "arm64"]
    assert len(both.targets) == 2 and {t.platform for t in both.targets} == set(BOTH)
    # each target's plan ends in its own op, both on the one merged graph
    assert both.targets[0].target.op != both.targets[1].target.op
    assert all(t.definition is both.definition for t in both.targets)
    # the shared step is the very op a one-platform build of either target makes
    for platform in BOTH:
        alone = plan(CROSS, platforms=(platform,))
        assert fetch[0] in alone.definition.ops


def test_buildplatform_steps_run_natively_and_keep_host_keys() -> None:
    """A FROM --platform=$BUILDPLATFORM stage runs as the build platform: its
    base is looked up for it and its RUN ops carry no platform, so their keys
    are the host build's (BuildKit: ds.platform from FROM --platform)."""
    images = Images()
    plan(CROSS, images, platforms=(ARM64,))
    assert ("docker.io/library/busybox:latest", str(host_platform())) in images.asked
    assert ("docker.io/library/busybox:latest", "linux/arm64") not in images.asked


FOREIGN = "FROM busybox\nRUN uname -m > /arch\n"


def test_a_foreign_step_is_another_op_and_key_than_the_host_one() -> None:
    """The platform is part of an Exec op (BuildKit's pb.ExecOp has its vertex's
    Platform in the op's digest, solver/pb/ops.proto Op.platform): an arm64
    run never stands in for an amd64 one."""
    host = plan(FOREIGN)
    arm = plan(FOREIGN, platforms=(ARM64,))
    host_exec = next(op for op in host.definition.ops.values() if isinstance(op, ExecOp))
    arm_exec = next(op for op in arm.definition.ops.values() if isinstance(op, ExecOp))
    assert host_exec.platform == "" and arm_exec.platform == "linux/arm64"
    # the same rootfs key on purpose: only the platform tells the two apart
    keys = {host_exec.rootfs: "k", arm_exec.rootfs: "k"}
    assert make_key(host_exec, keys) != make_key(arm_exec, keys)
    source = next(op for op in arm.definition.ops.values() if isinstance(op, ImageSource))
    assert source.platform == "linux/arm64"


def test_asking_for_the_host_platform_changes_no_digest() -> None:
    """--platform naming the host builds exactly today's graph (image IDs and
    cache keys of one-platform builds stay as they were)."""
    assert set(plan(CROSS).definition.ops) == set(plan(CROSS, platforms=(host_platform(),)).definition.ops)


def test_platform_args_per_target_in_from_and_run() -> None:
    """BuildKit's defaultArgs (dockerfile2llb/platform.go): BUILDPLATFORM and
    TARGET* are meta ARGs, usable in FROM and, once declared, in a stage."""
    text = (
        "ARG BASE=busybox\n"
        "FROM --platform=$BUILDPLATFORM $BASE AS tools\n"
        "ARG TARGETPLATFORM BUILDPLATFORM TARGETOS TARGETVARIANT\n"
        "RUN echo $TARGETPLATFORM $BUILDPLATFORM\n"
        "FROM alpine-$TARGETARCH\n"
        "COPY --from=tools / /\n"
    )
    images = Images()
    both = plan(text, images, platforms=(AMD64, Platform("linux", "arm", "v7")))
    envs = [dict(e.split("=", 1) for e in op.env) for op in both.definition.ops.values() if isinstance(op, ExecOp)]
    assert sorted(env["TARGETPLATFORM"] for env in envs) == ["linux/amd64", "linux/arm/v7"]
    assert {env["BUILDPLATFORM"] for env in envs} == {str(host_platform())}
    assert {env["TARGETVARIANT"] for env in envs} == {"", "v7"}
    assert ("docker.io/library/alpine-arm:latest", "linux/arm/v7") in images.asked
    assert ("docker.io/library/alpine-amd64:latest", "linux/amd64") in images.asked


def test_each_image_is_its_target_platform() -> None:
    """BuildKit's finalizeResultImage: with a platform asked for, the image's
    os/architecture/variant are the target's, even when the last stage ran as
    the build platform."""
    both = plan("FROM --platform=$BUILDPLATFORM busybox\nRUN true\n", platforms=(AMD64, Platform("linux", "arm", "v7")))
    images = {str(t.platform): t.target.image for t in both.targets}
    assert (images["linux/arm/v7"].architecture, images["linux/arm/v7"].variant) == ("arm", "v7")
    assert images["linux/amd64"].architecture == "amd64"


def test_progress_names_carry_the_platform_when_several_are_asked() -> None:
    """BuildKit's prefixCommand/formatTargetPlatform: ``[linux/arm64 build 2/4]``,
    and ``linux/amd64->arm64`` for a build-platform step that names a target;
    one platform asked: no prefix, as today."""
    both = plan(CROSS, platforms=BOTH)
    names = [both.definition.meta[d].description for d, op in both.definition.ops.items() if isinstance(op, ExecOp)]
    host = str(host_platform())
    assert f"[{host} build 2/3] RUN echo fetch > /deps" in names
    other = "arm64" if host_platform().architecture != "arm64" else "amd64"
    assert f"[{host}->{other} build 3/3] RUN echo {other} > /out" in names
    single = plan(CROSS, platforms=(ARM64,))
    assert "[build 2/3] RUN echo fetch > /deps" in [m.description for m in single.definition.meta.values()]


def test_from_platform_that_is_no_platform_names_its_line() -> None:
    """An empty or malformed FROM --platform value is an error at its FROM line
    (BuildKit: "empty platform value from expression", "failed to parse platform")."""
    with pytest.raises(DockerfileError) as empty:
        plan("FROM --platform=$NOPE busybox\nRUN true\n")
    assert "empty platform value" in str(empty.value) and empty.value.location is not None
    assert empty.value.location.start_line == 1
    with pytest.raises(DockerfileError) as bad:
        plan("FROM busybox\nFROM --platform=linux/arm64/v8/x busybox\n")
    assert "failed to parse platform" in str(bad.value) and bad.value.location is not None
    assert bad.value.location.start_line == 2


def test_a_base_of_another_platform_warns_as_buildkit() -> None:
    """A single-platform base of another architecture is used with BuildKit's
    InvalidBaseImagePlatform warning (dockerfile2llb/convert.go
    validateBaseImagePlatform), not refused."""

    class AmdOnly(Images):
        def lookup(self, ref: str, platform: Platform) -> ResolvedImage | None:
            return super().lookup(ref, AMD64)

    p = plan("FROM busybox\nRUN true\n", AmdOnly(), platforms=(ARM64,))
    assert any("InvalidBaseImagePlatform" in w and '"linux/amd64", expected "linux/arm64"' in w for w in p.warnings)
    assert not plan("FROM busybox\nRUN true\n", platforms=(ARM64,)).warnings


def test_with_no_platform_asked_a_foreign_base_sets_the_stage_platform() -> None:
    """BuildKit's autoDetectPlatform (dockerfile2llb/convert.go): no --platform and no
    FROM --platform, a base of another platform makes the stage that platform, with
    no warning; its RUN steps are then that platform's (checked runnable)."""

    class ArmOnly(Images):
        def lookup(self, ref: str, platform: Platform) -> ResolvedImage | None:
            return super().lookup(ref, ARM64 if host_platform() != ARM64 else AMD64)

    foreign = ARM64 if host_platform() != ARM64 else AMD64
    p = plan("FROM busybox AS base\nRUN true\nFROM base\nRUN false\n", ArmOnly())
    assert not p.warnings
    assert {op.platform for op in p.definition.ops.values() if isinstance(op, ExecOp)} == {str(foreign)}
    assert p.target.image.architecture == foreign.architecture


def test_missing_bases_are_named_with_their_platforms() -> None:
    """Every target's missing base is reported at once, each with its platform, so
    one pull round brings them all (BuildKit resolves each stage's base for
    its own platform, convert.go resolveBaseImage)."""
    images = Images(missing={("docker.io/library/busybox:latest", "linux/arm64"), ("docker.io/library/busybox:latest", "linux/amd64")})
    with pytest.raises(MissingImages) as caught:
        plan("FROM busybox\nRUN true\n", images, platforms=BOTH)
    assert sorted((ref, str(p)) for ref, p in caught.value.wanted) == [
        ("docker.io/library/busybox:latest", "linux/amd64"), ("docker.io/library/busybox:latest", "linux/arm64"),
    ]


def test_platform_lists_as_buildx_reads_them() -> None:
    """buildx's platformutil.Parse: comma-separated, each once, ``local`` is the host."""
    assert Platform.parse_list("linux/amd64, linux/arm64,linux/amd64") == BOTH
    assert Platform.parse_list("local") == (host_platform(),)
    assert Platform.parse("linux/arm64/v8") == ARM64 and Platform.parse("linux/arm") == Platform("linux", "arm", "v7")
    with pytest.raises(ValueError):
        Platform.parse_list("linux/amd64,,linux/arm64")


def test_a_base_without_the_platform_is_an_error_at_its_from_line() -> None:
    """The store's answer for an index without the platform (an ImageError naming
    the platforms it has) is given at the FROM that wants it, as BuildKit's
    resolveBaseImage wraps a resolve error with the stage's location."""
    from pybuild.errors import ImageError

    class Amd64Index(Images):
        def lookup(self, ref: str, platform: Platform) -> ResolvedImage | None:
            if platform != AMD64:
                raise ImageError(f"{ref} has no image for {platform} (it has linux/amd64)")
            return super().lookup(ref, platform)

    with pytest.raises(DockerfileError) as caught:
        plan("FROM scratch AS a\nFROM busybox\nRUN true\n", Amd64Index(), platforms=BOTH)
    assert "has no image for linux/arm64 (it has linux/amd64)" in str(caught.value)
    assert str(caught.value).startswith("Dockerfile:2:")


def test_a_per_target_step_is_named_with_its_platform_to_explain_misses() -> None:
    """A step each target runs for itself is remembered per platform, so a cache
    miss is explained against that platform's last run (BuildKit keeps each
    platform's vertex apart for the same reason: its digest has the platform)."""
    from pybuild.dag import step_ids

    both = plan(CROSS, platforms=BOTH)
    ids = step_ids(both, "/ctx/Dockerfile")
    names = {both.definition.meta[d].description: i for d, i in ids.items()}
    shared = next(i for name, i in names.items() if "echo fetch" in name)
    assert shared == "/ctx/Dockerfile:build:2"
    per_target = sorted(i for name, i in names.items() if "> /out" in name and "RUN" in name)
    assert per_target == ["/ctx/Dockerfile:build:3@linux/amd64", "/ctx/Dockerfile:build:3@linux/arm64"]
    assert all("@" not in i for i in step_ids(plan(CROSS), "/ctx/Dockerfile").values())
