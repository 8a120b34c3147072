"""The converter: canonical digests, shared steps, ARG scoping, cache keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pybuild.dag import BuildOptions, ExecOp, FileOp, MissingImages, ResolvedImage, convert
from pybuild.dag._keys import make_key
from pybuild.errors import DockerfileError
from pybuild.grammar import parse

BASE = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
    "history": [{"created": "2020-01-01T00:00:00Z"}],
}


class Images:
    def __init__(self, digest: str = "sha256:" + "a" * 64) -> None:
        self.digest = digest

    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        if "missing" in ref:
            return None
        return ResolvedImage(ref, self.digest, BASE)


def plan(text: str, **options):  # type: ignore[no-untyped-def]
    return convert(parse(text), BuildOptions(**options), Images())


def execs(p) -> list[ExecOp]:  # type: ignore[no-untyped-def]
    return [op for op in p.definition.ops.values() if isinstance(op, ExecOp)]


DOCKERFILE = "FROM busybox AS a\nRUN make\nCOPY . /src\nFROM busybox\nRUN make\nCOPY --from=a /src /src\n"


def test_digests_are_the_same_in_another_process() -> None:
    here = sorted(plan(DOCKERFILE).definition.ops)
    code = (
        "import json,sys;sys.path.insert(0,'.')\n"
        "from tests_dag_probe import digests\n"
    )
    probe = f"""
from pybuild.dag import BuildOptions, ResolvedImage, convert
from pybuild.grammar import parse
BASE = {BASE!r}
class Images:
    def lookup(self, ref, platform):
        return ResolvedImage(ref, "sha256:" + "a" * 64, BASE)
p = convert(parse({DOCKERFILE!r}), BuildOptions(), Images())
print("\\n".join(sorted(p.definition.ops)))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == here and code


def test_comments_and_descriptions_change_no_digest() -> None:
    commented = "# a comment\nFROM busybox AS a\n# another\nRUN make\nCOPY . /src\nFROM busybox\nRUN   make\nCOPY --from=a /src /src\n"
    first, second = plan(DOCKERFILE), plan(commented)
    assert set(first.definition.ops) == set(second.definition.ops)
    # the span (metadata) moved, the digest did not
    run_digest = next(d for d, op in first.definition.ops.items() if isinstance(op, ExecOp))
    assert first.definition.meta[run_digest].span != second.definition.meta[run_digest].span


def test_identical_steps_in_two_stages_are_one_node() -> None:
    p = plan(DOCKERFILE)
    assert len(execs(p)) == 1  # `RUN make` on the same base, in both stages


def test_target_prunes_stages_it_does_not_need() -> None:
    text = "FROM busybox AS broken\nRUN exit 1\nFROM busybox AS good\nRUN echo ok\nFROM missing-image AS other\n"
    p = plan(text, target="good")
    assert [op.args[-1] for op in execs(p)] == ["echo ok"]
    with pytest.raises(MissingImages):
        plan(text)  # the last stage needs an image nobody has


def test_unknown_target_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="target stage 'nope' could not be found"):
        plan("FROM busybox AS a\nRUN x\n", target="nope")


def test_global_args_in_from_and_redeclared_in_stage() -> None:
    text = "ARG TAG=1\nARG UNUSED=u\nFROM busybox:${TAG}\nARG TAG\nRUN echo $TAG $UNUSED\n"
    p = plan(text, build_args={"TAG": "2"})
    source = next(op for op in p.definition.ops.values() if type(op).__name__ == "ImageSource")
    assert source.ref == "docker.io/library/busybox:2"
    [run] = execs(p)
    assert "TAG=2" in run.env and not any(e.startswith("UNUSED=") for e in run.env)


def test_env_beats_an_earlier_arg_and_arg_env_is_not_in_config() -> None:
    p = plan("FROM busybox\nARG X=arg\nENV X=env\nRUN echo $X\n")
    [run] = execs(p)
    assert "X=env" in run.env
    assert "X=env" in p.target.image.config["Env"]


def test_proxy_args_reach_run_but_not_the_cache_key_or_history() -> None:
    with_proxy = plan("FROM busybox\nRUN wget x\n", build_args={"HTTP_PROXY": "http://p:3128", "no_proxy": "localhost"})
    without = plan("FROM busybox\nRUN wget x\n")
    [run_p], [run] = execs(with_proxy), execs(without)
    assert run_p.proxy_env == ("HTTP_PROXY=http://p:3128", "no_proxy=localhost")
    base_key = {run.rootfs: "sha256:key-of-base"}
    assert make_key(run_p, {run_p.rootfs: "sha256:key-of-base"}) == make_key(run, base_key)
    assert all("proxy" not in h.created_by.lower() for h in with_proxy.target.image.history)


def test_a_build_arg_changes_only_the_steps_that_see_it() -> None:
    text = "FROM busybox\nRUN echo before\nARG V=1\nRUN echo $V\n"
    one, two = plan(text), plan(text, build_args={"V": "2"})
    before_1, after_1 = execs(one)
    before_2, after_2 = execs(two)
    assert before_1 == before_2 and after_1 != after_2


def test_platform_args_are_predefined_in_the_global_scope() -> None:
    p = plan("ARG TARGETARCH\nFROM busybox\nARG TARGETARCH\nARG BUILDPLATFORM\nRUN echo $TARGETARCH $BUILDPLATFORM\n")
    [run] = execs(p)
    env = dict(e.split("=", 1) for e in run.env)
    assert env["TARGETARCH"] in ("amd64", "arm64") and env["BUILDPLATFORM"].startswith("linux/")


def test_run_and_cmd_are_not_expanded_by_pybuild() -> None:
    p = plan("FROM busybox\nENV A=1\nRUN echo $A\nCMD echo $A\n")
    [run] = execs(p)
    assert run.args == ("/bin/sh", "-c", "echo $A")
    assert p.target.image.config["Cmd"] == ["/bin/sh", "-c", "echo $A"]


def test_shell_changes_later_shell_forms() -> None:
    p = plan('FROM busybox\nSHELL ["/bin/ash", "-eo", "pipefail", "-c"]\nRUN false | true\nENTRYPOINT run me\n')
    [run] = execs(p)
    assert run.args == ("/bin/ash", "-eo", "pipefail", "-c", "false | true")
    assert p.target.image.config["Entrypoint"] == ["/bin/ash", "-eo", "pipefail", "-c", "run me"]


def test_copy_from_an_image_and_run_mount_from_a_stage() -> None:
    p = plan(
        "FROM busybox AS tools\nRUN echo t > /t\n"
        "FROM busybox\nCOPY --from=registry.example.com/other:1 /x /x\n"
        "RUN --mount=type=bind,from=tools,source=/t,target=/mnt/t cat /mnt/t\n"
    )
    copy = next(op for op in p.definition.ops.values() if isinstance(op, FileOp))
    source = p.definition.ops[copy.actions[0].source]
    assert type(source).__name__ == "ImageSource" and source.ref == "registry.example.com/other:1"
    run = [op for op in execs(p) if op.mounts][0]
    [mount] = run.mounts
    assert mount.kind == "bind" and mount.source_path == "/t"
    assert isinstance(p.definition.ops[mount.source], ExecOp)  # the tools stage's RUN


def test_expansion_errors_name_the_line() -> None:
    with pytest.raises(DockerfileError) as caught:
        plan("FROM busybox\nENV A=\"${MISSING:?must be set}\"\n")
    assert caught.value.location is not None and caught.value.location.start_line == 2
    assert "must be set" in str(caught.value)


def test_run_security_insecure_needs_the_entitlement_and_says_where() -> None:
    text = "FROM busybox\nRUN true\nRUN --security=insecure modprobe x\n"
    with pytest.raises(DockerfileError, match="security.insecure is not allowed") as caught:
        plan(text)
    assert caught.value.location is not None and caught.value.location.start_line == 3
    with pytest.raises(DockerfileError, match="unsupported security mode") as unknown:
        plan("FROM busybox\nRUN --security=privileged true\n")
    assert unknown.value.location is not None and unknown.value.location.start_line == 2


def test_run_security_mode_is_part_of_the_op_and_its_key() -> None:
    allowed = frozenset({"security.insecure"})
    [sandbox] = execs(plan("FROM busybox\nRUN make\n", entitlements=allowed))
    [explicit] = execs(plan("FROM busybox\nRUN --security=sandbox make\n", entitlements=allowed))
    [insecure] = execs(plan("FROM busybox\nRUN --security=insecure make\n", entitlements=allowed))
    assert (sandbox.security, explicit.security, insecure.security) == ("sandbox", "sandbox", "insecure")
    keys = {make_key(op, {}) for op in (sandbox, explicit, insecure)}
    assert len(keys) == 2 and make_key(sandbox, {}) == make_key(explicit, {})


def test_the_default_security_mode_keeps_the_digests_and_keys_of_before() -> None:
    """``security`` came after digests and keys were published: a sandboxed RUN's canonical
    bytes (digest) and keyed fields do not mention it, so caches made before stay valid."""
    from pybuild.dag._canonical import canonical_json
    from pybuild.dag._keys import cache_fields

    [sandbox] = execs(plan("FROM busybox\nRUN make\n"))
    [insecure] = execs(plan("FROM busybox\nRUN --security=insecure make\n", entitlements=frozenset({"security.insecure"})))
    assert b'"security"' not in canonical_json(sandbox)
    assert b'"security"' not in canonical_json(cache_fields(sandbox, {}))
    assert b'"security":"insecure"' in canonical_json(insecure)
    assert b'"security":"insecure"' in canonical_json(cache_fields(insecure, {}))


def test_an_absolute_workdir_is_kept_as_written_and_a_relative_one_is_joined_and_cleaned() -> None:
    """BuildKit keeps an absolute WORKDIR exactly as written (trailing slash included) in the
    config's WorkingDir and in history, and only joins and cleans a relative one:
    dockerfile2llb's dispatchWorkdir calls system.NormalizeWorkdir -> NormalizePath(keepSlash=false)
    in moby/buildkit util/system/path.go, which filepath.Join-s only a path that is not absolute,
    and writes history as "WORKDIR " + that path."""
    p = plan("FROM busybox\nWORKDIR /usr/src/\nRUN pwd\nWORKDIR app/./x/\n")
    image = p.target.image
    assert [h.created_by for h in image.history][-3:] == [
        "WORKDIR /usr/src/",
        "RUN /bin/sh -c pwd # buildkit",
        "WORKDIR /usr/src/app/x",
    ]
    assert image.config["WorkingDir"] == "/usr/src/app/x"
    [run] = execs(p)
    assert run.cwd == "/usr/src/"
    assert plan("FROM busybox\nWORKDIR /usr/src/\n").target.image.config["WorkingDir"] == "/usr/src/"


class LocalImagesOnly(Images):
    """Only busybox is available without a pull."""

    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        return super().lookup(ref, platform) if "busybox" in ref else None


@pytest.mark.parametrize(
    ("line", "expected_line"),
    [
        ("COPY --from=biuld /out /out", 3),
        ("RUN --mount=type=bind,from=Biuld,target=/mnt true", 3),
        ("FROM biuld AS next", 3),
    ],
)
def test_a_from_name_close_to_a_stage_says_which_stage_before_any_pull(line: str, expected_line: int) -> None:
    """BuildKit wraps the error of resolving an unknown base name with its suggest
    package (frontend/dockerfile/dockerfile2llb/convert.go:
    suggest.WrapError(..., origName, <stage names>, true), moby/buildkit
    util/suggest/error.go): a name at edit distance 1-2 of a stage gets
    'did you mean'. pybuild says so before asking a registry for the image."""
    text = f"FROM busybox AS build\nFROM busybox\n{line}\n"
    with pytest.raises(DockerfileError) as caught:
        convert(parse(text), BuildOptions(), LocalImagesOnly())
    assert 'no stage named "biuld"; did you mean "build"?' in str(caught.value).lower()
    assert caught.value.location is not None and caught.value.location.start_line == expected_line


def test_a_from_name_close_to_no_stage_is_an_image_to_pull() -> None:
    text = "FROM busybox AS build\nFROM busybox\nCOPY --from=alpine:3 /x /x\nCOPY --from=bild-tools /y /y\n"
    with pytest.raises(MissingImages) as caught:
        convert(parse(text), BuildOptions(), LocalImagesOnly())
    assert caught.value.refs == ["docker.io/library/alpine:3", "docker.io/library/bild-tools:latest"]


def test_from_a_number_names_an_image_not_a_stage_index() -> None:
    """``FROM 0`` after a stage is the image ``0`` (as BuildKit reads FROM: stages by name;
    only ``COPY --from`` takes an index): it is looked up as an image, never a KeyError."""
    images = Images()
    looked_up: list[str] = []

    class Recording(Images):
        def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
            looked_up.append(ref)
            return images.lookup(ref, platform)

    convert(parse("FROM busybox\nRUN true\nFROM 0\nRUN true\n"), BuildOptions(), Recording())
    assert any(ref.endswith("/0:latest") or ref == "0" for ref in looked_up), looked_up
