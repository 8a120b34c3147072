"""The tutorial's layer lessons: consecutive RUNs, package caches, files removed too late."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pybuild.dag.checks import check_dockerfile
from pybuild.dag.checks._shell import SimpleCommand, command_words, simple_commands
from pybuild.errors import DockerfileError


def found(text: str, rule: str, **options: Any) -> list[tuple[int, int, str]]:
    report = check_dockerfile(text, "Dockerfile", **options)
    return [(w.line, w.end_line, w.message) for w in report.warnings if w.rule == rule]


# The tutorial's own examples (docker-images-tutorial.md, "RUN 执行命令").
SEVEN_LAYERS = """\
FROM debian:jessie

RUN apt-get update
RUN apt-get install -y gcc libc6-dev make
RUN wget -O redis.tar.gz "http://download.redis.io/releases/redis-3.2.5.tar.gz"
RUN mkdir -p /usr/src/redis
RUN tar -xzf redis.tar.gz -C /usr/src/redis --strip-components=1
RUN make -C /usr/src/redis
RUN make -C /usr/src/redis install
"""

ONE_LAYER = """\
FROM debian:jessie

RUN buildDeps='gcc libc6-dev make' \\
    && apt-get update \\
    && apt-get install -y $buildDeps \\
    && wget -O redis.tar.gz "http://download.redis.io/releases/redis-3.2.5.tar.gz" \\
    && mkdir -p /usr/src/redis \\
    && tar -xzf redis.tar.gz -C /usr/src/redis --strip-components=1 \\
    && make -C /usr/src/redis \\
    && make -C /usr/src/redis install \\
    && rm -rf /var/lib/apt/lists/* \\
    && rm redis.tar.gz \\
    && rm -r /usr/src/redis \\
    && apt-get purge -y --auto-remove $buildDeps
"""


def test_tutorial_seven_layers() -> None:
    assert found(SEVEN_LAYERS, "ConsecutiveRunInstructions") == [
        (3, 9, "RUN instructions on lines 3, 4, 5, 6, 7, 8 and 9 make 7 layers; they could be one RUN joined with &&")
    ]
    assert [line for line, _, _ in found(SEVEN_LAYERS, "PackageCacheInLayer")] == [3, 4]


def test_tutorial_one_layer_is_clean() -> None:
    report = check_dockerfile(ONE_LAYER, "Dockerfile")
    assert [w.rule for w in report.warnings] == []


# -- ConsecutiveRunInstructions ------------------------------------------------------------


def test_runs_separated_by_another_instruction_are_not_consecutive() -> None:
    assert found("FROM alpine\nRUN a\nENV X=1\nRUN b\n", "ConsecutiveRunInstructions") == []


def test_runs_that_cannot_simply_be_joined() -> None:
    text = 'FROM alpine\nRUN a\nRUN ["b"]\nRUN --network=none c\nRUN d\n'
    assert found(text, "ConsecutiveRunInstructions") == []
    heredoc = "FROM alpine\nRUN a\nRUN <<EOF\nb\nEOF\n"
    assert found(heredoc, "ConsecutiveRunInstructions") == []


def test_the_hint_shows_the_joined_run() -> None:
    report = check_dockerfile("FROM alpine\nRUN make\nRUN make install\n", "Dockerfile")
    assert report.warnings[0].hint == "write one RUN: make && make install"


# -- PackageCacheInLayer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "run",
    [
        "apt-get update && apt-get install -y curl",
        "DEBIAN_FRONTEND=noninteractive apt-get -y install curl && apt-get clean",
        "pip install flask",
        "python3 -m pip install -r requirements.txt",
        "npm ci",
        "npm install --production",
        "yarn install --frozen-lockfile",
        "apk add curl",
        "apk update && apk add git",
    ],
)
def test_package_caches_left_in_the_layer(run: str) -> None:
    warnings = found(f"FROM alpine\nRUN {run}\n", "PackageCacheInLayer")
    assert [line for line, _, _ in warnings] == [2]


@pytest.mark.parametrize(
    "run",
    [
        "apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*",
        "--mount=type=cache,target=/var/lib/apt/lists apt-get update && apt-get install -y curl",
        "--mount=type=cache,target=/var/lib/apt apt-get update",
        "pip install --no-cache-dir flask",
        "PIP_NO_CACHE_DIR=1 pip install flask",
        "--mount=type=cache,target=/root/.cache/pip pip install flask",
        "pip install flask && rm -rf /root/.cache",
        "npm ci && npm cache clean --force",
        "--mount=type=cache,target=/root/.npm npm ci",
        "yarn install && yarn cache clean",
        "apk add --no-cache curl",
        "apk --no-cache add git ca-certificates",
        "apt-get purge -y gcc",
        "pip uninstall -y flask",
        "echo apt-get install curl",
    ],
)
def test_package_caches_cleaned_or_kept_out(run: str) -> None:
    assert found(f"FROM alpine\nRUN {run}\n", "PackageCacheInLayer") == []


def test_pip_no_cache_dir_from_env() -> None:
    assert found("FROM python\nENV PIP_NO_CACHE_DIR=1\nRUN pip install flask\n", "PackageCacheInLayer") == []


def test_cleaning_in_a_later_run_does_not_count() -> None:
    text = "FROM debian\nRUN apt-get update && apt-get install -y curl\nENV X=1\nRUN rm -rf /var/lib/apt/lists/*\n"
    assert [line for line, _, _ in found(text, "PackageCacheInLayer")] == [2]


def test_package_cache_message_names_the_command_and_place() -> None:
    [(_, _, message)] = found("FROM debian\nRUN apt-get install -y curl\n", "PackageCacheInLayer")
    assert message == "'apt-get install' leaves the package lists in /var/lib/apt/lists in this layer"


def test_heredoc_scripts_are_read() -> None:
    text = "FROM debian\nRUN <<EOF\nset -e\napt-get update\napt-get install -y curl\nEOF\n"
    assert [line for line, _, _ in found(text, "PackageCacheInLayer")] == [2]
    python = "FROM python\nRUN <<EOF\n#!/usr/bin/env python3\nprint('pip install x')\nEOF\n"
    assert found(python, "PackageCacheInLayer") == []


def test_exec_form_runs_are_read() -> None:
    assert [line for line, _, _ in found('FROM python\nRUN ["pip", "install", "flask"]\n', "PackageCacheInLayer")] == [2]
    assert [line for line, _, _ in found('FROM debian\nRUN ["/bin/sh", "-c", "apt-get update"]\n', "PackageCacheInLayer")] == [2]


# -- FileRemovedInLaterLayer ---------------------------------------------------------------


def test_download_removed_in_a_later_run() -> None:
    text = (
        "FROM debian\nWORKDIR /src\nRUN wget https://example.org/app.tar.gz\n"
        "RUN tar -xzf app.tar.gz && make\nRUN rm app.tar.gz\n"
    )
    assert found(text, "FileRemovedInLaterLayer") == [
        (5, 5, "'rm app.tar.gz' removes /src/app.tar.gz, added on line 3 by RUN wget; its bytes still ship in that earlier layer")
    ]


def test_removed_in_the_same_run_is_fine() -> None:
    text = "FROM debian\nRUN curl -fsSLo /tmp/x.tgz https://e.org/x.tgz && tar -C /opt -xzf /tmp/x.tgz && rm /tmp/x.tgz\nRUN rm -rf /tmp/*\n"
    assert found(text, "FileRemovedInLaterLayer") == []


def test_copied_file_removed_later() -> None:
    text = "FROM debian\nCOPY installer.run /tmp/\nRUN sh /tmp/installer.run && rm -f /tmp/installer.run\n"
    assert found(text, "FileRemovedInLaterLayer") == [
        (3, 3, "'rm /tmp/installer.run' removes /tmp/installer.run, added on line 2 by COPY; its bytes still ship in that earlier layer")
    ]


def test_removing_a_parent_directory_or_a_glob_catches_what_is_below() -> None:
    text = "FROM debian\nRUN git clone https://e.org/repo.git /src/repo\nRUN make -C /src/repo\nRUN rm -rf /src\n"
    assert [m for _, _, m in found(text, "FileRemovedInLaterLayer")] == [
        "'rm /src' removes /src/repo, added on line 2 by RUN git; its bytes still ship in that earlier layer"
    ]
    glob = "FROM debian\nRUN echo hi > /tmp/log.txt\nRUN rm -f /tmp/*.txt\n"
    assert [line for line, _, _ in found(glob, "FileRemovedInLaterLayer")] == [3]


def test_the_most_specific_addition_is_named() -> None:
    text = (
        "FROM debian\nRUN curl https://e.org/a.tgz | tar xz -C /opt\n"
        "RUN curl https://e.org/b.tgz | tar xz -C /opt/b\nRUN rm -r /opt/b/conf\n"
    )
    [(_, _, message)] = found(text, "FileRemovedInLaterLayer")
    assert message == (
        "'rm /opt/b/conf' removes /opt/b/conf, which came in with RUN tar on line 3 (into /opt/b); "
        "its bytes still ship in that earlier layer"
    )


def test_removing_inside_a_cloned_tree() -> None:
    text = "FROM debian\nRUN git clone https://e.org/repo.git /src\nRUN rm -rf /src/.git\n"
    assert [line for line, _, _ in found(text, "FileRemovedInLaterLayer")] == [3]


def test_copy_of_the_context_checked_against_the_context(tmp_path: Path) -> None:
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "big.js").write_text("x")
    (tmp_path / "app.js").write_text("x")
    text = "FROM node\nCOPY . /app\nRUN rm -rf /app/node_modules && rm -rf /app/build\n"
    assert found(text, "FileRemovedInLaterLayer", context_dir=tmp_path) == [
        (3, 3, "'rm /app/node_modules' removes /app/node_modules, which came in with COPY on line 2 (into /app); its bytes still ship in that earlier layer")
    ]
    # Ignored by .dockerignore: it never reached the image.
    (tmp_path / ".dockerignore").write_text("node_modules\n")
    assert found(text, "FileRemovedInLaterLayer", context_dir=tmp_path) == []
    # Without the context nothing is known about what COPY . brought in.
    assert found(text, "FileRemovedInLaterLayer") == []


def test_copy_into_the_working_directory() -> None:
    text = "FROM debian\nWORKDIR /opt\nCOPY setup.sh .\nRUN ./setup.sh && rm setup.sh\n"
    assert [m for _, _, m in found(text, "FileRemovedInLaterLayer")] == [
        "'rm setup.sh' removes /opt/setup.sh, added on line 3 by COPY; its bytes still ship in that earlier layer"
    ]


def test_mv_of_an_earlier_file_leaves_its_bytes_behind() -> None:
    text = "FROM debian\nCOPY big.bin /tmp/big.bin\nRUN mv /tmp/big.bin /opt/\n"
    assert [line for line, _, _ in found(text, "FileRemovedInLaterLayer")] == [3]


def test_unresolvable_paths_are_left_alone() -> None:
    text = "FROM debian\nRUN wget https://e.org/a.tgz\nRUN rm $(ls *.tgz) \"$UNKNOWN\"\n"
    assert found(text, "FileRemovedInLaterLayer") == []


def test_variables_of_the_stage_resolve_paths() -> None:
    text = "FROM debian\nENV DIR=/opt/dl\nRUN wget -P $DIR https://e.org/a.tgz\nRUN rm -f ${DIR}/a.tgz\n"
    assert [line for line, _, _ in found(text, "FileRemovedInLaterLayer")] == [4]


# -- only the image being built -------------------------------------------------------------


MULTI_STAGE = """\
FROM golang:1.9-alpine AS builder
RUN apk add git
RUN go get -d -v github.com/go-sql-driver/mysql
COPY app.go .
RUN go build -o app . && rm app.go
FROM alpine:latest
RUN apk --no-cache add ca-certificates
WORKDIR /root/
COPY --from=builder /go/app .
CMD ["./app"]
"""


def test_layers_of_a_build_stage_do_not_ship() -> None:
    report = check_dockerfile(MULTI_STAGE, "Dockerfile")
    layer_rules = {"ConsecutiveRunInstructions", "PackageCacheInLayer", "FileRemovedInLaterLayer"}
    assert [w for w in report.warnings if w.rule in layer_rules] == []
    builder = check_dockerfile(MULTI_STAGE, "Dockerfile", target="builder")
    assert sorted((w.rule, w.line) for w in builder.warnings if w.rule in layer_rules) == [
        ("ConsecutiveRunInstructions", 2), ("FileRemovedInLaterLayer", 5), ("PackageCacheInLayer", 2),
    ]


def test_an_unknown_target_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="target stage 'nope' could not be found"):
        check_dockerfile(MULTI_STAGE, "Dockerfile", target="nope")


def test_a_stage_built_from_another_inherits_its_layers() -> None:
    text = "FROM debian AS base\nCOPY big.tar /tmp/\nFROM base\nRUN rm /tmp/big.tar\n"
    assert [line for line, _, _ in found(text, "FileRemovedInLaterLayer")] == [4]


# -- the shell splitter ---------------------------------------------------------------------


def test_simple_commands_split_on_operators_and_keep_quotes() -> None:
    script = "set -e; A=1 B=2 sudo -E apt-get install -y \"a b\" 2>&1 >/tmp/log && echo $(date) >> out | tee x # c"
    assert simple_commands(script) == [
        SimpleCommand(("set", "-e")),
        SimpleCommand(("apt-get", "install", "-y", '"a b"'), ("A=1", "B=2"), ("/tmp/log",)),
        SimpleCommand(("echo", "$(date)"), (), ("out",)),
        SimpleCommand(("tee", "x")),
    ]


def test_simple_commands_see_through_control_words_and_sh_c() -> None:
    script = "if [ -f x ]; then rm x; fi\nfor f in a b; do touch $f; done\nsh -c 'cd /tmp && rm y'"
    names = [c.words for c in simple_commands(script)]
    assert ("rm", "x") in names and ("touch", "$f") in names and ("rm", "y") in names
    assert all(words[:1] != ("for",) for words in names)


def test_exec_form_words_are_quoted_as_literals() -> None:
    [command] = command_words(("rm", "$HOME", "it's"))
    assert command.words == ("rm", "'$HOME'", "'it'\\''s'")
