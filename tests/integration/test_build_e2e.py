"""End to end: a multi-stage build on a busybox base imported from a tarball (issue 3)."""

from __future__ import annotations

from pathlib import Path


DOCKERFILE = """\
ARG GREETING=hello
FROM busybox AS build
ARG GREETING
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY src/ ./src/
RUN mkdir -p out && cat src/message.txt > out/message.txt && echo "$GREETING from build" >> out/message.txt
RUN echo built > /built-marker

FROM busybox AS final
ENV MODE=production
WORKDIR /app
COPY --from=build /srv/app/out/message.txt ./message.txt
RUN addgroup -g 1000 app 2>/dev/null; adduser -D -u 1000 -G app app 2>/dev/null; chown app /app && echo "owner=$(stat -c %u /app)" > /app/owner.txt
USER app
CMD ["cat", "/app/message.txt"]
"""


def test_multi_stage_build(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    (context / "src").mkdir(parents=True)
    (context / "src" / "message.txt").write_text("message from the context\n")
    (context / "Dockerfile").write_text(DOCKERFILE)

    result = cli("build", "-t", "app:1", "--progress=plain", str(context))
    assert "writing image sha256:" in result.stderr

    image = open_image("app:1")
    assert image.read("/app/message.txt") == "message from the context\nhello from build\n"
    assert image.read("/app/owner.txt") == "owner=1000\n"
    assert image.find("/built-marker") is None  # the build stage's files stay there
    assert image.find("/bin/busybox") is not None
    config = image.config["config"]
    assert config["Cmd"] == ["cat", "/app/message.txt"]
    assert config["User"] == "app"
    assert config["WorkingDir"] == "/app"
    assert "MODE=production" in config["Env"] and not any(e.startswith("APP_HOME=") for e in config["Env"])
    created_by = [h.get("created_by", "") for h in image.config["history"]]
    assert created_by[-1] == 'CMD ["cat" "/app/message.txt"]'
    assert any(c.startswith("COPY /srv/app/out/message.txt ./message.txt") for c in created_by)
    non_empty = [h for h in image.config["history"] if not h.get("empty_layer")]
    assert len(non_empty) == len(image.config["rootfs"]["diff_ids"])


def test_unneeded_stage_never_runs_and_target_selects(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox AS broken\nRUN exit 1\n"
        "FROM busybox AS middle\nRUN echo middle > /m\n"
        "FROM busybox\nRUN echo last > /l\n"
    )
    cli("build", "-t", "last", str(tmp_path))
    assert open_image("last").read("/l") == "last\n"
    cli("build", "--target", "middle", "-t", "middle", str(tmp_path))
    middle = open_image("middle")
    assert middle.read("/m") == "middle\n" and middle.find("/l") is None


def test_failing_step_reports_line_and_exit_code(cli, busybox_image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo before\nRUN echo oops >&2 && exit 3\n")
    result = cli("build", "--progress=plain", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "exit code: 3" in result.stderr
    assert "oops" in result.stderr
    assert "Traceback" not in result.stderr
