#!/usr/bin/env python3
"""Build every golden case with BuildKit and write its normalised image config.

    python3 tests/dag/golden/generate.py            # (re)write the golden files
    python3 tests/dag/golden/generate.py --check    # rebuild into a temp dir, diff
    python3 tests/dag/golden/generate.py CASE ...   # only these cases

Needs, as root: Debian's `docker.io` with a running daemon and `busybox-static`.
Nothing else: no pybuild, no pytest, no network (the base image is a busybox
root filesystem imported with `docker import`, made by the same function the
test fixtures use, `make_busybox_rootfs` in tests/conftest.py).

For each directory `<case>/` with a `Dockerfile` (names starting with `_` are
not cases) it builds the case with `DOCKER_BUILDKIT=1 docker build`, takes the
raw config blob from `docker save` (checked against the image ID, so it is
byte for byte what a registry would hold), normalises it with `normalize.py`
and writes `<case>/expected.json`.  `_base/expected.json` is the base image's
own config.  Each `_unbuildable/<case>/` is a snippet this BuildKit rejects:
its build must fail, and the error line is written to `error.txt`.

`<case>/build.json` (optional) may hold:
    build_args  {"NAME": "value"}         --build-arg NAME=value
    target      "stage"                   --target stage
    labels      {"key": "value"}          --label key=value
    files       {"rel/path": "content"}   files written into the build context
    preludes    [{"tag": "...", "dockerfile": "file in the case dir"}]
                images built and tagged first, in order, with the same context
                (e.g. a base with ONBUILD triggers); removed afterwards
The context is a fresh temp dir holding only `files`; the Dockerfile is passed
with `-f`, so it is not part of the context.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CONFTEST = REPO / "tests" / "conftest.py"

BASE_IMAGE = "pybuild-test/busybox:1"
CASE_TAG = "pybuild-golden/{case}:latest"
UNBUILDABLE = "_unbuildable"
BUILD_JSON_KEYS = {"build_args", "target", "labels", "files", "preludes"}

sys.path.insert(0, str(HERE))
from normalize import dumps, normalize  # noqa: E402


class GoldenError(Exception):
    pass


# -- the base image --------------------------------------------------------


def _load_make_busybox_rootfs():
    """Import `make_busybox_rootfs` from tests/conftest.py by path.

    conftest.py imports pytest for its fixtures; on a machine without pytest a
    stand-in module with a no-op `fixture` decorator is enough to load it.
    """
    stub = None
    try:
        import pytest  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pytest")

        def fixture(*args, **kwargs):
            if args and callable(args[0]) and not kwargs:
                return args[0]
            return lambda f: f

        stub.fixture = fixture
        sys.modules["pytest"] = stub
    try:
        spec = importlib.util.spec_from_file_location("_pybuild_conftest", CONFTEST)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if stub is not None:
            del sys.modules["pytest"]
    return module.make_busybox_rootfs


def import_base_image(docker: str, work: Path) -> None:
    """Make the busybox rootfs, tar it like the `busybox_tar` fixture, `docker import` it."""
    make_busybox_rootfs = _load_make_busybox_rootfs()
    rootfs = make_busybox_rootfs(work / "rootfs")
    tar_path = work / "busybox.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    with open(tar_path, "rb") as f:
        run([docker, "import", "-", BASE_IMAGE], stdin=f)


# -- docker ------------------------------------------------------------------


def run(cmd, *, env=None, stdin=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, stdin=stdin, capture_output=True)
    if check and proc.returncode != 0:
        raise GoldenError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
            + proc.stderr.decode(errors="replace")[-4000:]
        )
    return proc


def find_docker() -> str:
    docker = os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker"))
    if not docker:
        raise GoldenError("docker not found (install Debian's docker.io)")
    if run([docker, "info"], check=False).returncode != 0:
        raise GoldenError(
            "the docker daemon is not reachable; start it with\n"
            "    dockerd --iptables=false --bridge=none >/tmp/dockerd.log 2>&1 &"
        )
    return docker


def saved_config(docker: str, image: str) -> bytes:
    """The raw config blob of `image`, as `docker save` writes it."""
    with subprocess.Popen([docker, "save", image], stdout=subprocess.PIPE) as proc:
        jsons: dict[str, bytes] = {}
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    jsons[member.name] = tar.extractfile(member).read()
    if proc.returncode != 0:
        raise GoldenError(f"docker save {image} exited {proc.returncode}")
    manifest = json.loads(jsons["manifest.json"])
    (entry,) = manifest
    name = entry["Config"]
    blob = jsons[name]
    # The file is named after the image ID, which is the blob's digest:
    # proof that this is the exact config, not a re-serialisation.
    if hashlib.sha256(blob).hexdigest() != Path(name).stem.removeprefix("sha256:"):
        raise GoldenError(f"{image}: config blob {name} does not match its digest")
    return blob


def build(docker: str, dockerfile: Path, context: Path, tag: str, spec: dict) -> subprocess.CompletedProcess:
    cmd = [docker, "build", "--network=host", "--no-cache", "--progress=plain", "-t", tag, "-f", str(dockerfile)]
    for name, value in spec.get("build_args", {}).items():
        cmd += ["--build-arg", f"{name}={value}"]
    for name, value in spec.get("labels", {}).items():
        cmd += ["--label", f"{name}={value}"]
    if "target" in spec:
        cmd += ["--target", spec["target"]]
    cmd.append(str(context))
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    return run(cmd, env=env, check=False)


def error_line(stderr: str) -> str:
    """The final error of a failed `docker build`, without progress prefixes."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    for candidate in reversed(lines):
        if "failed to solve" in candidate or candidate.startswith("error"):
            line = re.sub(r"^#\d+\s+(ERROR:\s*)?", "", candidate)
            break
    # A failed registry request ends in a resolver/socket error that names
    # this machine's DNS server; keep only that the request failed.
    return re.sub(r"(failed to do request: \S+ \S+): .*$", r"\1: <network error>", line)


# -- cases -------------------------------------------------------------------


def load_spec(case_dir: Path) -> dict:
    path = case_dir / "build.json"
    if not path.exists():
        return {}
    spec = json.loads(path.read_text())
    unknown = set(spec) - BUILD_JSON_KEYS
    if unknown:
        raise GoldenError(f"{path}: unknown keys {sorted(unknown)}")
    return spec


def build_case(docker: str, case_dir: Path, tag: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Build a case (after its preludes). Returns the build and the tags made."""
    spec = load_spec(case_dir)
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="golden-ctx-") as ctx:
        context = Path(ctx)
        for rel, content in spec.get("files", {}).items():
            target = context / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        for prelude in spec.get("preludes", []):
            proc = build(docker, case_dir / prelude["dockerfile"], context, prelude["tag"], {})
            if proc.returncode != 0:
                raise GoldenError(f"{case_dir.name}: prelude {prelude['tag']} failed:\n{proc.stderr.decode()[-4000:]}")
            made.append(prelude["tag"])
        proc = build(docker, case_dir / "Dockerfile", context, tag, spec)
        if proc.returncode == 0:
            made.append(tag)
    return proc, made


def remove_images(docker: str, tags: list[str]) -> None:
    for tag in reversed(tags):
        run([docker, "rmi", tag], check=False)


def case_dirs(root: Path, only: list[str]) -> tuple[list[Path], list[Path]]:
    cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")) and (p / "Dockerfile").exists())
    unbuildable_root = root / UNBUILDABLE
    unbuildable = sorted(p for p in unbuildable_root.iterdir() if (p / "Dockerfile").exists()) if unbuildable_root.exists() else []
    if only:
        known = {p.name for p in cases + unbuildable}
        missing = set(only) - known
        if missing:
            raise GoldenError(f"unknown cases: {sorted(missing)}")
        cases = [p for p in cases if p.name in only]
        unbuildable = [p for p in unbuildable if p.name in only]
    return cases, unbuildable


def generate(docker: str, out: Path, only: list[str]) -> list[str]:
    """Write every golden file under `out` (mirroring HERE). Returns the paths written, relative."""
    written: list[str] = []

    def write(rel: str, text: str) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(rel)

    server = run([docker, "version", "--format", "{{.Server.Version}}"]).stdout.decode().strip()
    write("engine.txt", f"docker.io {server}\n")

    with tempfile.TemporaryDirectory(prefix="golden-base-") as work:
        import_base_image(docker, Path(work))
    write("_base/expected.json", dumps(normalize(json.loads(saved_config(docker, BASE_IMAGE)))))

    cases, unbuildable = case_dirs(HERE, only)
    for case_dir in cases:
        print(f"building {case_dir.name}", file=sys.stderr)
        tag = CASE_TAG.format(case=case_dir.name)
        proc, made = build_case(docker, case_dir, tag)
        try:
            if proc.returncode != 0:
                raise GoldenError(f"{case_dir.name}: build failed:\n{proc.stderr.decode()[-4000:]}")
            config = normalize(json.loads(saved_config(docker, tag)))
            write(f"{case_dir.name}/expected.json", dumps(config))
        finally:
            remove_images(docker, made)

    for case_dir in unbuildable:
        print(f"building {UNBUILDABLE}/{case_dir.name} (must fail)", file=sys.stderr)
        tag = CASE_TAG.format(case=case_dir.name)
        proc, made = build_case(docker, case_dir, tag)
        remove_images(docker, made)
        if proc.returncode == 0:
            raise GoldenError(f"{UNBUILDABLE}/{case_dir.name} now builds: move it out of {UNBUILDABLE}/")
        write(f"{UNBUILDABLE}/{case_dir.name}/error.txt", error_line(proc.stderr.decode(errors="replace")) + "\n")
    return written


def check(docker: str, only: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="golden-check-") as tmp:
        out = Path(tmp)
        written = generate(docker, out, only)
        failures = 0
        for rel in written:
            new = (out / rel).read_text()
            old_path = HERE / rel
            old = old_path.read_text() if old_path.exists() else ""
            if new != old:
                failures += 1
                sys.stdout.writelines(
                    difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"committed/{rel}", f"buildkit/{rel}")
                )
        if not only:
            committed = {str(p.relative_to(HERE)) for p in HERE.glob("**/expected.json")}
            committed |= {str(p.relative_to(HERE)) for p in HERE.glob(f"{UNBUILDABLE}/*/error.txt")}
            for stale in sorted(committed - set(written)):
                failures += 1
                print(f"stale golden file with no case: {stale}")
    print(f"{len(written) - failures} golden files match, {failures} differ")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rebuild into a temp dir and diff against the committed files")
    parser.add_argument("cases", nargs="*", help="only these cases (default: all)")
    args = parser.parse_args(argv)
    try:
        docker = find_docker()
        if args.check:
            return check(docker, args.cases)
        written = generate(docker, HERE, args.cases)
        print(f"wrote {len(written)} golden files")
        return 0
    except GoldenError as e:
        print(f"generate.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
