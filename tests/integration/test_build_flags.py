"""``pybuild build``'s flags as a user types them (a subprocess per build), and its exit codes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from .conftest import read_image_file


def _context(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_tags_labels_build_args_and_the_result_files(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM busybox\nARG FROM_FLAG\nARG FROM_ENV\nRUN echo $FROM_FLAG $FROM_ENV > /args\n")
    iid, metadata = tmp_path / "iid", tmp_path / "meta.json"
    cli(
        "build", "-t", "app:1", "-t", "app:latest", "--label", "team=build", "--label", "tier=ci",
        "--build-arg", "FROM_FLAG=flag", "--build-arg", "FROM_ENV", "--build-arg", "UNSET_ARG",
        "--iidfile", str(iid), "--metadata-file", str(metadata), str(context),
        env={"FROM_ENV": "environment"},
    )
    image_id = iid.read_text()
    assert image_id.startswith("sha256:")
    meta = json.loads(metadata.read_text())
    assert meta["containerimage.config.digest"] == image_id
    assert sorted(meta["image.name"].split(",")) == ["docker.io/library/app:1", "docker.io/library/app:latest"]
    assert read_image_file(root, "app:1", "/args") == "flag environment\n"
    inspected = json.loads(cli("inspect", "app:latest").stdout)[0]
    assert inspected["Id"] == image_id
    assert inspected["Config"]["Labels"] == {"team": "build", "tier": "ci"}


def test_no_cache_filter_reruns_only_that_stage(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM busybox AS deps\nRUN echo deps > /deps\nFROM busybox\nCOPY --from=deps /deps /deps\nRUN echo app > /app\n")
    cli("build", str(context))
    again = cli("build", "--progress=plain", "--no-cache-filter", "deps", str(context)).stderr
    assert "[deps 2/2] RUN echo deps" in again
    deps_step = next(line.split()[0] for line in again.splitlines() if line.endswith("[deps 2/2] RUN echo deps > /deps"))
    assert f"{deps_step} DONE" in again  # ran again
    everything = cli("build", "--progress=plain", "--no-cache", str(context)).stderr
    assert "CACHED" not in everything


def test_jobs_and_compression(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM busybox\nRUN echo one > /one\n")
    cli("build", "--jobs", "1", "--compression", "zstd", "--compression-level", "5", "-t", "zst", str(context))
    inspect = json.loads(cli("inspect", "zst").stdout)[0]
    assert read_image_file(root, "zst", "/one") == "one\n"
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    with Root.open(root) as opened:
        layers = ImageStore(opened).get("zst").layers
    assert layers[-1].media_type.endswith("+zstd")
    assert inspect["RootFS"]["Layers"][-1] == layers[-1].diff_id


def test_ssh_forwards_an_agent_socket(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(agent))
    server.listen()
    try:
        context = _context(tmp_path, 'FROM busybox\nRUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo forwarded > /ssh\n')
        cli("build", "--ssh", f"default={agent}", "-t", "ssh", str(context))
        assert read_image_file(root, "ssh", "/ssh") == "forwarded\n"
        missing = cli("build", "--ssh", "default", str(context), check=False, env={"SSH_AUTH_SOCK": ""})
        assert missing.returncode == 2 and "no agent socket" in missing.stderr
    finally:
        server.close()


def test_a_failed_step_keeps_its_whole_log_and_plain_clips_it(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM busybox\nRUN seq 1 20000; exit 3\n")
    log = tmp_path / "failed.log"
    result = cli("build", "--progress=plain", "--step-log-limit", "1kB", "--failed-log", str(log), str(context), check=False)
    assert result.returncode == 1
    assert "[output clipped, log limit 1000 bytes reached]" in result.stderr
    assert "\n#2 1.000 19999" not in result.stderr
    assert f"full log of the failed step: {log}" in result.stderr
    assert log.read_text().splitlines() == [str(n) for n in range(1, 20001)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pybuild-step-")] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--platform", "linux/"], "--platform: invalid platform 'linux/'"),
        (["--jobs", "0"], "expected a number of at least 1"),
        (["--network", "bridge"], "invalid choice: 'bridge'"),
        (["--network", "host"], "--network=host needs --allow network.host"),
        (["--allow", "root.everything"], "unknown entitlement"),
        (["--secret", "src=/nope"], "an id is required"),
        (["--secret", "id=s,src=/nonexistent/secret"], "cannot read /nonexistent/secret"),
        (["--memory", "lots"], "invalid --memory"),
        (["--output", "type=floppy"], "unknown output type 'floppy'"),
        (["--step-log-limit", "many"], "invalid size 'many'"),
        (["--failed-log", "/nonexistent/dir/log"], "its directory does not exist"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["-o", "type=image,rewrite-timestamp=true"], "rewrite-timestamp needs SOURCE_DATE_EPOCH"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_a_hint(cli, tmp_path: Path, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    result = cli("build", *args, str(context), check=False, env={"SOURCE_DATE_EPOCH": ""})
    assert result.returncode == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: ") and message in first
    assert "Traceback" not in result.stderr


def test_a_missing_context_or_dockerfile_is_a_usage_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("build", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2 and "unable to prepare context" in result.stderr
    (tmp_path / "empty").mkdir()
    result = cli("build", str(tmp_path / "empty"), check=False)
    assert result.returncode == 2 and "Dockerfile" in result.stderr and "Traceback" not in result.stderr


def test_dockerfile_errors_exit_1_naming_file_line_and_instruction(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM scratch\nCOPY --frm=x a /\n", name="bad")
    result = cli("build", "-f", str(context / "Dockerfile"), str(context), check=False)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: {context / 'Dockerfile'}:2:") and "COPY" in first
    assert "Traceback" not in result.stderr


def test_a_dockerfile_elsewhere_and_a_quiet_build(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "", name="ctx")
    (context / "file.txt").write_text("hello\n")
    dockerfile = tmp_path / "build" / "App.Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM busybox\nCOPY file.txt /\n")
    (tmp_path / "build" / "App.Dockerfile.dockerignore").write_text("file.txt\n")
    result = cli("build", "-q", "-f", str(dockerfile), str(context), check=False)
    # the Dockerfile's own ignore file applies (Docker's rule): file.txt is not in the context
    assert result.returncode == 1 and "file.txt" in result.stderr
    os.remove(tmp_path / "build" / "App.Dockerfile.dockerignore")
    quiet = cli("build", "-q", "-f", str(dockerfile), str(context))
    assert quiet.stdout.strip().startswith("sha256:") and quiet.stdout.count("\n") == 1
    assert quiet.stderr == ""


def test_an_output_compression_is_how_the_new_layers_are_made(cli, root: Path, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = _context(tmp_path, "FROM busybox\nRUN echo z > /z\n")
    archive = tmp_path / "image.tar"
    cli("build", "-t", "zo", "-o", f"type=oci,dest={archive},compression=zstd", str(context))
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    with Root.open(root) as opened:
        layers = ImageStore(opened).get("zo").layers
    assert layers[-1].media_type.endswith("+zstd")  # made once in zstd, not gzip then recompressed
    assert archive.stat().st_size > 0
