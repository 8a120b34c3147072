"""The syscall filter, the insecure entitlement and OOM reports through the CLI (root)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .._peers import require_tool

pytestmark = pytest.mark.root

STATUS = "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status"


def build(cli, ctx: Path, dockerfile: str, *args: str, **kwargs):  # type: ignore[no-untyped-def]
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return cli("build", "--progress=plain", *args, str(ctx), **kwargs)


def field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def own_capabilities() -> int:
    with open("/proc/self/status") as f:
        return int(field(f.read(), "CapBnd"), 16)


def test_a_build_step_is_filtered_and_ordinary_programs_still_run(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    gcc = require_tool("gcc")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello from a static binary"); return 0; }\n')
    subprocess.run([gcc, "-static", "-o", str(ctx / "hello"), str(ctx / "hello.c")], check=True)
    build(cli, ctx, (
        "FROM busybox\n"
        "COPY hello /hello\n"
        f"RUN {STATUS} > /status && /hello > /hello.out\n"
        "RUN unshare -U true 2> /unshare.err; echo $? > /unshare.code\n"
        "RUN mkdir -p /mnt/t && (mount -t tmpfs none /mnt/t 2> /mount.err; echo $? > /mount.code)\n"
    ), "-t", "filtered")
    image = open_image("filtered")
    assert field(image.read("/status"), "Seccomp") == "2"
    assert image.read("/hello.out") == "hello from a static binary\n"
    assert image.read("/unshare.code").strip() != "0" and "Operation not permitted" in image.read("/unshare.err")
    assert image.read("/mount.code").strip() != "0"


def test_insecure_needs_the_entitlement(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    refused = build(cli, tmp_path / "ctx", "FROM busybox\nRUN true\nRUN --security=insecure touch /ran\n", check=False)
    assert refused.returncode == 1
    assert "Dockerfile:3" in refused.stderr and "security.insecure is not allowed" in refused.stderr
    assert "--allow security.insecure" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error:")  # refused before any step ran, as BuildKit refuses the LLB
    unknown = build(cli, tmp_path / "ctx", "FROM busybox\nRUN --security=privileged true\n", check=False)
    assert unknown.returncode == 1 and "Dockerfile:2" in unknown.stderr and "unsupported security mode" in unknown.stderr


def test_insecure_runs_with_every_capability_and_no_filter(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, tmp_path / "ctx", (
        "FROM busybox\n"
        f"RUN --security=insecure {STATUS} > /insecure && mkdir /m && mount -t tmpfs none /m && echo mounted > /mounted\n"
        f"RUN --security=sandbox {STATUS} > /sandbox\n"
    ), "-t", "insecure", "--allow", "security.insecure")
    image = open_image("insecure")
    assert field(image.read("/insecure"), "Seccomp") == "0"
    assert int(field(image.read("/insecure"), "CapEff"), 16) == own_capabilities()
    assert image.read("/mounted") == "mounted\n"
    assert field(image.read("/sandbox"), "Seccomp") == "2"


def test_the_security_mode_is_part_of_the_cache_key(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    step = f"{STATUS} > /status"
    normal = build(cli, tmp_path / "ctx", f"FROM busybox\nRUN {step}\n", "-t", "normal")
    insecure = build(cli, tmp_path / "ctx", f"FROM busybox\nRUN --security=insecure {step}\n", "-t", "insecure", "--allow", "security.insecure")
    again = build(cli, tmp_path / "ctx", f"FROM busybox\nRUN --security=sandbox {step}\n", "-t", "again")
    assert "CACHED" not in normal.stderr and "CACHED" not in insecure.stderr
    assert "CACHED" in again.stderr  # sandbox is the default, spelled out or not
    assert field(open_image("normal").read("/status"), "Seccomp") == "2"
    assert field(open_image("insecure").read("/status"), "Seccomp") == "0"
    assert field(open_image("again").read("/status"), "Seccomp") == "2"


def test_a_step_killed_by_the_memory_limit_says_it_ran_out_of_memory(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    allocate = "FROM busybox\nRUN awk 'BEGIN { s = sprintf(\"%200000000s\", \"\"); print length(s) }'\n"
    hungry = build(cli, tmp_path / "ctx", allocate, "--memory", "64m", check=False)
    assert hungry.returncode == 1
    assert "did not complete successfully: exit code: 137: out of memory (limit 64 MiB)" in hungry.stderr
    assert "Dockerfile:2" in hungry.stderr
    plain = build(cli, tmp_path / "ctx", "FROM busybox\nRUN exit 137\n", "--memory", "64m", check=False)
    assert plain.returncode == 1 and "exit code: 137" in plain.stderr and "out of memory" not in plain.stderr


# -- pybuild run / exec ----------------------------------------------------------------


def test_run_is_filtered_and_takes_security_opts(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    default = cli("run", "--rm", busybox_image, "sh", "-c", STATUS)
    assert field(default.stdout, "Seccomp") == "2" and field(default.stdout, "NoNewPrivs") == "0"
    unconfined = cli("run", "--rm", "--security-opt", "seccomp=unconfined", busybox_image, "sh", "-c", STATUS)
    assert field(unconfined.stdout, "Seccomp") == "0"
    private = cli("run", "--rm", "--security-opt", "no-new-privileges", busybox_image, "sh", "-c", STATUS)
    assert field(private.stdout, "NoNewPrivs") == "1" and field(private.stdout, "Seccomp") == "2"
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))
    custom = cli("run", "--rm", "--security-opt", f"seccomp={profile}", busybox_image, "sh", "-c", "mkdir /x; echo $?", check=False)
    assert custom.stdout.strip().splitlines()[-1] != "0" and "Operation not permitted" in custom.stderr


def test_run_refuses_a_malformed_profile_naming_it(cli, busybox_image: str, tmp_path: Path, root: Path) -> None:  # type: ignore[no-untyped-def]
    profile = tmp_path / "broken.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_SOMETIMES"}')
    refused = cli("run", "--rm", "--security-opt", f"seccomp={profile}", busybox_image, "true", check=False)
    assert refused.returncode == 2 and str(profile) in refused.stderr and "unknown action" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = cli("run", "--rm", "--security-opt", f"seccomp={tmp_path / 'nope.json'}", busybox_image, "true", check=False)
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    odd = cli("run", "--rm", "--security-opt", "seccomp-ish", busybox_image, "true", check=False)
    assert odd.returncode == 2 and "--security-opt" in odd.stderr
    assert not list(root.glob("containers/*/config.json"))  # nothing was created


def test_exec_is_confined_as_its_container(cli, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    name = "confined"
    cli("run", "-d", "--name", name, "--security-opt", "no-new-privileges", busybox_image, "sleep", "60")
    try:
        entered = cli("exec", name, "sh", "-c", STATUS)
        assert field(entered.stdout, "Seccomp") == "2" and field(entered.stdout, "NoNewPrivs") == "1"
        refused = cli("exec", name, "unshare", "-U", "true", check=False)
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    finally:
        cli("rm", "-f", name, check=False)
