"""The golden cases (tests/dag/golden/) built by an ordinary user give the same image IDs as
the same builds as root: layers record the ids the container saw, not the host's subordinate
ids, so nothing in a layer, config or cache key tells a rootless build from a root one.

BuildKit's rootless mode works the same way (moby/buildkit docs/rootless.md: the daemon runs
inside RootlessKit's user namespace, so the layer tars cache/blobs.go has the differ write
carry the ids as seen in that namespace); pybuild is checked against its own root build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Account, AsUser, _private_dir

GOLDEN = Path(__file__).resolve().parent.parent / "dag" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "expected.json").exists() and not p.name.startswith("_"))
BASE = "pybuild-test/busybox:1"
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}  # the same created times on both sides
# and the same file times in layers a RUN made (BuildKit's rewrite-timestamp, which the
# reproducible-builds recipe pairs with SOURCE_DATE_EPOCH): without it two root builds differ
REPRODUCIBLE = ["build", "-q", "--network=none", "--output", "type=image,rewrite-timestamp=true"]


def root_pybuild(root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **EPOCH, "PYBUILD_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "pybuild", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def base_archive(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden base, imported once and saved, so both sides load the very same image."""
    root = tmp_path_factory.mktemp("golden-seed") / "root"
    for args in (("import", str(busybox_tar), BASE), ("save", "-o", str(root.parent / "base.tar"), BASE)):
        done = root_pybuild(root, *args)
        assert done.returncode == 0, done.stderr
    return root.parent / "base.tar"


@pytest.fixture(scope="module")
def as_root(base_archive: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="golden-root-"))
    done = root_pybuild(path / "root", "load", "-i", str(base_archive))
    assert done.returncode == 0, done.stderr
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def as_user(test_account: Account, base_archive: Path) -> Iterator[AsUser]:
    for path in _private_dir(test_account):
        user = AsUser(test_account, path)
        user.pybuild("load", "-i", str(user.give(base_archive, "base.tar")))
        yield user


def case_arguments(case: Path, context: Path) -> list[list[str]]:
    """The pybuild build commands of a case (its preludes first), as generate.py runs docker."""
    spec = json.loads((case / "build.json").read_text()) if (case / "build.json").exists() else {}
    builds = [[*REPRODUCIBLE, "-t", p["tag"], "-f", str(context / p["dockerfile"]), str(context)] for p in spec.get("preludes", [])]
    main = [*REPRODUCIBLE, "-t", f"golden/{case.name}:1", "-f", str(context / "Dockerfile")]
    for name, value in spec.get("build_args", {}).items():
        main += ["--build-arg", f"{name}={value}"]
    for name, value in spec.get("labels", {}).items():
        main += ["--label", f"{name}={value}"]
    if "target" in spec:
        main += ["--target", spec["target"]]
    return builds + [main + [str(context)]]


def write_context(case: Path, context: Path, owner: Account | None) -> None:
    spec = json.loads((case / "build.json").read_text()) if (case / "build.json").exists() else {}
    files = {p.name: p.read_text() for p in case.iterdir() if p.name.endswith("Dockerfile")}
    files.update(spec.get("files", {}))
    for relative, content in files.items():
        path = context / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for directory, dirs, names in os.walk(context):
        for name in [".", *dirs, *names]:
            path = os.path.join(directory, name)
            os.utime(path, (int(EPOCH["SOURCE_DATE_EPOCH"]),) * 2)  # COPY keeps mtimes: the same on both sides
            if owner is not None:
                os.chown(path, owner.uid, owner.gid)


@pytest.mark.parametrize("name", CASES)
def test_a_golden_case_built_rootless_has_the_root_build_image_id(name: str, as_root: Path, as_user: AsUser) -> None:
    case = GOLDEN / name
    root_context = as_root / "contexts" / name
    write_context(case, root_context, None)
    for args in case_arguments(case, root_context):
        done = root_pybuild(as_root / "root", *args)
        assert done.returncode == 0, done.stderr
    as_root_id = done.stdout.strip()

    user_context = as_user.dir / "contexts" / name
    user_context.parent.mkdir(exist_ok=True)
    os.chown(user_context.parent, as_user.account.uid, as_user.account.gid)
    write_context(case, user_context, as_user.account)
    for args in case_arguments(case, user_context):
        rootless = as_user.pybuild(*args, env=EPOCH)
    assert rootless.stdout.strip() == as_root_id
