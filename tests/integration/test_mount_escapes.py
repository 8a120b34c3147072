"""Mount sources and targets are resolved inside their own root, never on the host.

Each hostile build below tries to reach a directory of the host (``HOST``)
through a symlink: in a stage, in the context, in the step's own rootfs, or
through a cache id.  Whether the build succeeds or fails with a clear error,
afterwards the host's canary file is unchanged, its content is nowhere in the
output or the pybuild root, and no marker was created next to it.  The
positive tests check that symlinks which stay inside their root still work
the way a container sees them, as in BuildKit.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

UP = "../" * 12  # more ".." than any tmp path is deep


@dataclass
class Host:
    dir: Path
    canary: Path
    token: str

    def marker_names(self) -> set[str]:
        return {p.name for p in self.dir.iterdir()} - {"canary.txt"}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    directory = tmp_path / "host"
    directory.mkdir()
    token = "canary-" + secrets.token_hex(16)
    canary = directory / "canary.txt"
    canary.write_text(token + "\n")
    os.utime(canary, ns=(10**18, 10**18))
    return Host(directory, canary, token)


def build(cli, ctx: Path, dockerfile: str, *args: str):  # type: ignore[no-untyped-def]
    (ctx / "Dockerfile").write_text(dockerfile)
    return cli("build", "--progress=plain", *args, str(ctx), check=False)


def hostile_build(cli, tmp_path: Path, host: Host, dockerfile: str, *args: str):  # type: ignore[no-untyped-def]
    """Build ``dockerfile`` with ``{H}`` standing for the host directory."""
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    return build(cli, ctx, dockerfile.replace("{H}", str(host.dir)), "-t", "escape", *args)


def assert_contained(result, host: Host, root: Path) -> None:  # type: ignore[no-untyped-def]
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "internal error" not in output, output
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert errors, result.stderr
    assert host.canary.read_text() == host.token + "\n"
    assert host.canary.stat().st_mtime_ns == 10**18
    assert host.marker_names() == set(), "the build wrote next to the host's canary"
    assert host.token not in output
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert host.token.encode() not in path.read_bytes(), path


READ_AND_WRITE = "sh -c 'cat {m}/canary.txt > /seen; echo x > {m}/marker; ls {m} >> /seen; true'"

# A stage whose paths lead to the host's "/" when followed on the host.
EVIL_STAGE = (
    "FROM busybox AS evil\n"
    "RUN ln -s / /abs && ln -s " + UP + " /rel && ln -s /abs /chain && mkdir -p /deep/er && ln -s ../../" + UP + " /deep/er/up\n"
)

STAGE_VECTORS = {
    "bind_rw_of_a_link_to_root": "RUN --mount=type=bind,from=evil,source=/abs,target=/m,rw " + READ_AND_WRITE.format(m="/m{H}"),
    "bind_of_a_relative_link_up": "RUN --mount=type=bind,from=evil,source=/rel,target=/m,rw " + READ_AND_WRITE.format(m="/m{H}"),
    "bind_of_a_chain_of_links": "RUN --mount=type=bind,from=evil,source=/chain,target=/m,rw " + READ_AND_WRITE.format(m="/m{H}"),
    "bind_through_a_link_to_root": "RUN --mount=type=bind,from=evil,source=/abs{H},target=/m,rw " + READ_AND_WRITE.format(m="/m"),
    "bind_through_a_nested_link": "RUN --mount=type=bind,from=evil,source=/deep/er/up{H},target=/m,rw " + READ_AND_WRITE.format(m="/m"),
    "bind_ro_through_a_link": "RUN --mount=type=bind,from=evil,source=/rel{H},target=/m " + READ_AND_WRITE.format(m="/m"),
    "bind_of_a_file_through_a_link": "RUN --mount=type=bind,from=evil,source=/abs{H}/canary.txt,target=/c.txt,rw "
    "sh -c 'cat /c.txt > /seen; echo x >> /c.txt; true'",
    "cache_seeded_through_a_link": "RUN --mount=type=cache,id=seed,target=/m,from=evil,source=/abs{H} " + READ_AND_WRITE.format(m="/m"),
    "cache_seeded_from_a_relative_link": "RUN --mount=type=cache,id=seed2,target=/m,from=evil,source=/rel{H} " + READ_AND_WRITE.format(m="/m"),
    "copy_from_through_a_link": "COPY --from=evil /abs{H}/canary.txt /seen",
    "copy_from_a_wildcard_through_a_link": "COPY --from=evil /[a]bs{H}/canary.tx[t] /seen",
    "copy_from_a_wildcard_dotdot": "COPY --from=evil /[r]el{H}/canary.txt /seen",
}


@pytest.mark.parametrize("vector", sorted(STAGE_VECTORS))
def test_stage_symlinks_never_reach_the_host(vector: str, cli, busybox_image: str, tmp_path: Path, root: Path, host: Host) -> None:  # type: ignore[no-untyped-def]
    result = hostile_build(cli, tmp_path, host, EVIL_STAGE + "FROM busybox\n" + STAGE_VECTORS[vector] + "\n")
    assert_contained(result, host, root)


CONTEXT_VECTORS = {
    "bind_rw_of_a_context_link_to_root": "RUN --mount=type=bind,source=abs,target=/m,rw " + READ_AND_WRITE.format(m="/m{H}"),
    "bind_through_a_context_link_up": "RUN --mount=type=bind,source=rel{H},target=/m,rw " + READ_AND_WRITE.format(m="/m"),
    "bind_of_a_context_file_through_a_link": "RUN --mount=type=bind,source=abs{H}/canary.txt,target=/c.txt,rw "
    "sh -c 'cat /c.txt > /seen; echo x >> /c.txt; true'",
    "copy_through_a_context_link": "COPY abs{H}/canary.txt /seen",
}


@pytest.mark.parametrize("vector", sorted(CONTEXT_VECTORS))
def test_context_symlinks_never_reach_the_host(vector: str, cli, busybox_image: str, tmp_path: Path, root: Path, host: Host) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "abs").symlink_to("/")
    (ctx / "rel").symlink_to(UP)
    result = hostile_build(cli, tmp_path, host, "FROM busybox\n" + CONTEXT_VECTORS[vector] + "\n")
    assert_contained(result, host, root)


# The step's own rootfs has a link to the host directory: mount targets,
# secret targets and COPY's source mount points must stay inside the rootfs.
TARGET_VECTORS = {
    "tmpfs_target_through_a_link": "RUN --mount=type=tmpfs,target=/t/marker true",
    "bind_target_through_a_link": "RUN --mount=type=bind,source=.,target=/t/marker true",
    "bind_target_is_a_link": "RUN --mount=type=bind,source=.,target=/t,rw sh -c 'cat /t/canary.txt > /seen; echo x > /t/marker; true'",
    "cache_target_through_a_link": "RUN --mount=type=cache,id=c,target=/t/marker true",
    "secret_target_through_a_link": "RUN --mount=type=secret,id=tok,target=/t/marker,required=true true",
    "ssh_target_through_a_link": "RUN --mount=type=ssh,target=/t/marker,required=true true",
    "copy_into_a_base_with_linked_source_mounts": "RUN ln -s {UP}{H} /.pybuild-sources\nCOPY Dockerfile /x",
}


@pytest.mark.parametrize("vector", sorted(TARGET_VECTORS))
def test_mount_targets_stay_in_the_rootfs(vector: str, cli, busybox_image: str, tmp_path: Path, root: Path, host: Host) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "secret"
    secret.write_text("not-the-canary\n")
    agent = socket.socket(socket.AF_UNIX)
    agent.bind(str(tmp_path / "agent.sock"))
    dockerfile = "FROM busybox\nRUN ln -s {UP}{H} /t\n" + TARGET_VECTORS[vector] + "\n"
    with agent:
        result = hostile_build(cli, tmp_path, host, dockerfile.replace("{UP}", UP[:-1]),
                               "--secret", f"id=tok,src={secret}", "--ssh", f"default={tmp_path / 'agent.sock'}")
    assert_contained(result, host, root)
    assert result.returncode == 0, result.stderr  # the mount lands inside the rootfs, at the link's target there


@pytest.mark.parametrize("cache_id", ["../../../../../../../..", "/", "..", "a/../../../../b"])
def test_cache_ids_never_name_a_path(cache_id: str, cli, busybox_image: str, tmp_path: Path, root: Path, host: Host) -> None:  # type: ignore[no-untyped-def]
    cache_id = cache_id + "{H}" if cache_id.endswith("..") else cache_id
    step = f"RUN --mount=type=cache,id={cache_id},target=/c " + READ_AND_WRITE.format(m="/c")
    result = hostile_build(cli, tmp_path, host, "FROM busybox\n" + step + "\n")
    assert_contained(result, host, root)
    assert result.returncode == 0, result.stderr


def test_symlinks_inside_a_stage_resolve_in_that_stage(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    result = build(cli, ctx, (
        "FROM busybox AS tools\n"
        "RUN mkdir -p /usr/lib/tool /a/b && echo in-the-stage > /usr/lib/tool/f"
        " && ln -s /usr/lib/tool /abs && ln -s ../../usr/lib/tool /a/b/rel && ln -s /../../abs /dotted\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=tools,source=/abs,target=/m cat /m/f > /via-abs\n"
        "RUN --mount=type=bind,from=tools,source=/a/b/rel,target=/m cat /m/f > /via-rel\n"
        "RUN --mount=type=bind,from=tools,source=/dotted/f,target=/f cat /f > /via-file\n"
        "RUN --mount=type=bind,from=tools,source=/abs,target=/m,rw sh -c 'echo changed > /m/f; cat /m/f > /rw-view'\n"
        "RUN --mount=type=bind,from=tools,source=/abs,target=/m cat /m/f > /after-rw\n"
        "RUN --mount=type=cache,id=seeded,target=/c,from=tools,source=/a/b/rel cat /c/f > /via-cache\n"
        "COPY --from=tools /[a]bs/f /via-copy-glob\n"
        "COPY --from=tools /dotted/f /via-copy\n"
    ), "-t", "inside")
    assert result.returncode == 0, result.stderr
    image = open_image("inside")
    for name in ("via-abs", "via-rel", "via-file", "after-rw", "via-cache", "via-copy-glob", "via-copy"):
        assert image.read(f"/{name}") == "in-the-stage\n", name
    assert image.read("/rw-view") == "changed\n"
    assert image.find("/m") is None and image.find("/f") is None


def test_symlinks_inside_the_context_resolve_in_the_context(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    (ctx / "real").mkdir(parents=True)
    (ctx / "real" / "f").write_text("in-the-context\n")
    (ctx / "abs").symlink_to("/real")
    (ctx / "rel").symlink_to("../../real")
    result = build(cli, ctx, (
        "FROM busybox\n"
        "RUN --mount=type=bind,source=abs,target=/m cat /m/f > /via-abs\n"
        "RUN --mount=type=bind,source=rel/f,target=/f cat /f > /via-rel\n"
        "RUN --mount=type=bind,source=abs,target=/m,rw sh -c 'echo changed > /m/f; cat /m/f > /rw-view'\n"
        "RUN --mount=type=bind,source=rel/f,target=/f,rw sh -c 'echo changed > /f; cat /f > /rw-file-view'\n"
    ), "-t", "inside")
    assert result.returncode == 0, result.stderr
    image = open_image("inside")
    assert image.read("/via-abs") == "in-the-context\n" and image.read("/via-rel") == "in-the-context\n"
    assert image.read("/rw-view") == "changed\n" and image.read("/rw-file-view") == "changed\n"
    assert (ctx / "real" / "f").read_text() == "in-the-context\n"  # rw writes were discarded


def test_a_missing_mount_source_is_a_clear_error(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    result = build(cli, ctx, (
        "FROM busybox AS tools\nRUN ln -s /nowhere /dangling\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=tools,source=/dangling,target=/m true\n"
    ))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "mount source /dangling" in result.stderr and "not found" in result.stderr
