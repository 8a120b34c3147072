"""Typed instructions and stages."""

from __future__ import annotations

import pytest

from pybuild.errors import DockerfileSyntaxError
from pybuild.grammar import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    KeyValue,
    Label,
    Onbuild,
    Run,
    Shell,
    User,
    Volume,
    Workdir,
    parse,
    parse_duration,
)

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
ARG VERSION
FROM --platform=linux/amd64 $BASE:1 AS Build
env A=1 B="two words"
ENV LEGACY value with spaces
ARG X Y=2
RUN --mount=type=cache,target=/root/.cache --network=none make
COPY --from=0 --chown=app:app --chmod=0755 --link --exclude=*.md --exclude=*.txt a b /dst/
ADD --checksum=sha256:abc --keep-git-dir=true https://example.com/x.tar /x
WORKDIR /app
USER app:app
VOLUME ["/data", "/logs"]
EXPOSE 80 443/tcp
LABEL a=b "c d"=e
HEALTHCHECK --interval=1m30s --timeout=5s --retries=3 CMD curl -f http://localhost/
ONBUILD RUN echo triggered
SHELL ["/bin/bash", "-c"]
ENTRYPOINT ["/bin/app"]
CMD ["--help"]

from scratch
COPY --from=build /out /out
"""


def test_stages_and_global_args() -> None:
    dockerfile = parse(DOCKERFILE)
    assert dockerfile.ast.directive("syntax") == "docker/dockerfile:1"
    assert [a.args for a in dockerfile.global_args] == [(ArgDecl("BASE", "busybox"),), (ArgDecl("VERSION", None),)]
    build, final = dockerfile.stages
    assert (build.index, build.name, build.base, build.platform) == (0, "build", "$BASE:1", "linux/amd64")
    assert (final.index, final.name, final.base) == (1, None, "scratch")
    assert dockerfile.stage("BUILD") is build and dockerfile.stage("1") is final
    assert build.span.start == 4 and build.span.end == 20


def test_typed_instructions() -> None:
    build = parse(DOCKERFILE).stages[0]
    kinds = [type(i) for i in build.instructions]
    assert kinds == [Env, Env, Arg, Run, Copy, Add, Workdir, User, Volume, Expose, Label, Healthcheck, Onbuild, Shell, Entrypoint, Cmd]
    env, legacy, arg, run, copy, add, workdir, user, volume, expose, label, health, onbuild, shell, entrypoint, cmd = build.instructions
    assert env.pairs == (KeyValue("A", "1"), KeyValue("B", '"two words"'))
    assert legacy.pairs == (KeyValue("LEGACY", "value with spaces"),)
    assert arg.args == (ArgDecl("X", None), ArgDecl("Y", "2"))
    assert run.mounts == ("type=cache,target=/root/.cache",) and run.network == "none"
    assert run.command.args == ("make",) and run.command.prepend_shell
    assert copy.sources == ("a", "b") and copy.dest == "/dst/" and copy.from_ == "0"
    assert (copy.chown, copy.chmod, copy.link, copy.excludes) == ("app:app", "0755", True, ("*.md", "*.txt"))
    assert add.checksum == "sha256:abc" and add.keep_git_dir is True and add.link is False
    assert workdir.path == "/app" and user.user == "app:app"
    assert volume.volumes == ("/data", "/logs")
    assert expose.ports == ("80", "443/tcp")
    assert label.pairs == (KeyValue("a", "b"), KeyValue('"c d"', "e"))
    assert health.test == ("CMD-SHELL", "curl -f http://localhost/")
    assert (health.interval, health.timeout, health.retries) == (90 * 10**9, 5 * 10**9, 3)
    assert onbuild.expression == "RUN echo triggered" and isinstance(onbuild.trigger, Run)
    assert shell.shell == ("/bin/bash", "-c")
    assert entrypoint.command.args == ("/bin/app",) and entrypoint.command.json
    assert cmd.command.args == ("--help",) and cmd.command.json


def test_cmd_with_unknown_flag_is_refused() -> None:
    with pytest.raises(DockerfileSyntaxError, match="unknown flag: --help"):
        parse("FROM x\nCMD --help\n")


def test_copy_heredoc_sources() -> None:
    dockerfile = parse("FROM x\nCOPY <<one <<-'two' /etc/\nfirst $X\none\n\tsecond\n\ttwo\n")
    copy = dockerfile.stages[0].instructions[0]
    assert isinstance(copy, Copy)
    assert copy.sources == () and copy.dest == "/etc/"
    assert [(f.name, f.data, f.expand) for f in copy.files] == [("one", "first $X\n", True), ("two", "second\n", False)]


def test_run_heredoc_files_and_span() -> None:
    dockerfile = parse("FROM x\nRUN <<EOF\nset -e\necho hi\nEOF\nRUN true\n")
    heredoc_run, plain = dockerfile.stages[0].instructions
    assert isinstance(heredoc_run, Run) and heredoc_run.files[0].data == "set -e\necho hi\n"
    assert (heredoc_run.span.start, heredoc_run.span.end) == (2, 5)
    assert plain.span.start == 6


def test_healthcheck_none() -> None:
    health = parse("FROM x\nHEALTHCHECK NONE\n").stages[0].instructions[0]
    assert isinstance(health, Healthcheck) and health.test == ("NONE",)


def test_backtick_escape() -> None:
    dockerfile = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi\nENV P=C:\\path a=`$b\n")
    run, env = dockerfile.stages[0].instructions
    assert run.command.args == ("dir c:\\   && echo hi",)
    assert env.pairs == (KeyValue("P", "C:\\path"), KeyValue("a", "`$b"))


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [("0", 0), ("5s", 5 * 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9), ("300ms", 300_000_000), ("2us", 2000)],
)
def test_go_durations(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["5", "s", "", "1x", "1.5.2s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_keywords_are_case_insensitive() -> None:
    dockerfile = parse("fRoM x\nrUn echo\nWorkDir /a\n")
    assert [i.keyword for i in dockerfile.stages[0].instructions] == ["RUN", "WORKDIR"]


def test_add_unpack_and_exclude() -> None:
    add = parse("FROM x\nADD --unpack=false --exclude=a a.tar /\n").stages[0].instructions[0]
    assert isinstance(add, Add) and add.unpack is False and add.excludes == ("a",)
