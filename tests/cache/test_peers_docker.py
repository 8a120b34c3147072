"""Cross-checks against BuildKit (Debian's docker.io): what it sends and copies.

Uses the running docker daemon, or one started for the session (``docker_env``
in tests/conftest.py).  The cases avoid two behaviours of the BuildKit bundled
in docker 20.10 that newer BuildKit (and pybuild) changed: regexp characters in
patterns, and eagerly sending an excluded directory that an exception might,
but does not, reach into.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore

from .._peers import DOCKER, PACKAGES, peer_unavailable

pytestmark = pytest.mark.peers

FILES = [
    "a.go", "b.md", "c.txt", ".hidden", "docs/README.md", "docs/x.md", "node_modules/m/i.js",
    "build/out/keep.txt", "build/out/o.bin", "build/log.txt", "src/main.py", "src/pkg/mod.py",
    "src/pkg/test_mod.py", "src/a.txt", "vendor/x/y/z.go", "vendor/keep.go", "dir/file.txt",
]  # fmt: skip


def _docker_build(env: dict[str, str], context: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DOCKER, "build", "-q", "-o", f"type=local,dest={out}", str(context)],
        env=dict(env, DOCKER_BUILDKIT="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def docker(docker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for `docker build`, once BuildKit is seen to work."""
    probe = tmp_path_factory.mktemp("probe")
    (probe / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    result = _docker_build(docker_env, probe, probe / "out")
    if result.returncode != 0:
        peer_unavailable(f"docker cannot build with BuildKit here: {result.stderr[-200:]}", PACKAGES["docker"])
    return docker_env


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize(
    "patterns",
    [
        "*.md\n!docs/README.md\nnode_modules\nbuild\n!build/out/keep.txt\n",
        "**/*.txt\n!src/a.txt\nsrc/pkg/test_*\n",
        "vendor/**\n!vendor/keep.go\n.*\n",
        "/src/pkg\n?.go\ndir/*\n#comment\n  docs/  \n",
        "**\n!src\n",
    ],
)
def test_context_sent_matches_buildkit(docker: dict[str, str], tmp_path: Path, patterns: str) -> None:
    context = tmp_path / "ctx"
    for rel in FILES:
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        (context / rel).write_text(rel)
    (context / ".dockerignore").write_text(patterns)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    out = tmp_path / "out"
    result = _docker_build(docker, context, out)
    assert result.returncode == 0, result.stderr
    theirs = [p for p in _listing(out) if p not in ("Dockerfile", ".dockerignore")]
    rules = DockerIgnore.load(context)
    ours = [p for p in sorted(rules.walk(context)) if p not in ("Dockerfile", ".dockerignore")]
    assert ours == theirs
    hashed = sorted(p for p in ContextHasher(context, rules).whole().entries if p not in (".", "Dockerfile", ".dockerignore"))
    assert hashed == theirs


def test_copy_sources_match_buildkit(docker: dict[str, str], tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    for rel, content in {"src/main.py": "m", "src/pkg/mod.py": "p", "real/f": "r", "a1.txt": "1", "b1.txt": "2"}.items():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        (context / rel).write_text(content)
    os.symlink("real", context / "dirlink")
    os.symlink("../../../src/main.py", context / "src" / "pkg" / "up")
    os.symlink("/etc/shadow", context / "src" / "escape")
    copies = {
        "b": "dirlink",
        "c": "src/pkg/up",
        "d": "../src",
        "e": "*/*.py",
        "f": "/src",
        "g": "[a]?.txt",
    }
    lines = ["FROM scratch"] + [f"COPY {source} /{dest}/" for dest, source in copies.items()]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = _docker_build(docker, context, out)
    assert result.returncode == 0, result.stderr

    hasher = ContextHasher(context, DockerIgnore())
    for dest, source in copies.items():
        copied = _listing(out / dest)
        selection = hasher.select([source])
        expected: set[str] = set()
        for match in selection.root_paths[source]:
            if match.kind == "dir":
                # a directory's contents are copied; the selection holds them under its path
                prefix = "" if match.resolved == "." else match.resolved + "/"
                expected |= {p[len(prefix) :] for p in selection.entries if p.startswith(prefix)}
            else:
                expected.add(match.path.rsplit("/", 1)[-1])
        assert sorted(expected) == copied, f"COPY {source}"
    shutil.rmtree(out)
