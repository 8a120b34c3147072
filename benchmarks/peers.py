"""The three engines side by side: pybuild, BuildKit (Debian's docker.io) and Buildah.

Every benchmark builds the same Dockerfile with each engine, from a busybox
base made from Debian's busybox-static and brought into each engine's own
store (``pybuild import``, ``docker import``, ``buildah pull docker-archive:``).
Only the ``FROM`` line differs: each engine names its local base its own way.
BuildKit runs with ``DOCKER_BUILDKIT=1 --network=host`` and Buildah with
``--runtime=runc --network=host`` (the brief's settings); pybuild with
``--network=none`` unless a workload needs the network (then its default
network), so no engine spends time on network setup the others skip.

Each build runs under ``rss.measure``: its wall time, and for pybuild the
peak RSS of its whole process tree (``Engines.last_rss``).  The peers' work
happens in daemons (dockerd) or is not asked for, so only pybuild's is kept.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rss import Peak, idle_server_rss, measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker is another one
PYBUILD = [str(REPO / ".venv" / "bin" / "python"), "-m", "pybuild"]
BASE_FROM = {"pybuild": "busybox:latest", "buildkit": "pybuild-bench/busybox:latest", "buildah": "localhost/pybuild-bench-busybox:latest"}


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(argv), env={**os.environ, **(env or {})}, cwd=cwd, input=input, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode(errors='replace')[-3000:]}")
    return result


def ensure_dockerd() -> None:
    """Start Debian's dockerd the brief's way if it is not answering."""
    if subprocess.run([DOCKER, "info"], capture_output=True).returncode == 0:
        return
    log = open("/tmp/pybuild-bench-dockerd.log", "ab")
    subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=log, stderr=log, start_new_session=True)
    for _ in range(100):
        if subprocess.run([DOCKER, "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("dockerd did not start")


@dataclass
class Engines:
    """Each engine with the busybox base in its store; pybuild gets its own root."""

    work: Path
    pybuild_root: Path
    available: list[str] = field(default_factory=list)
    last_rss: Peak | None = None  # the peak memory of the last pybuild build's process tree

    @classmethod
    def prepare(cls, only: Sequence[str] = ("pybuild", "buildkit", "buildah")) -> Engines:
        work = Path(tempfile.mkdtemp(prefix="pybuild-bench-"))
        # pybuild's root where a root user's pybuild keeps it (/var/lib, beside
        # /var/lib/docker and /var/lib/containers), not among the contexts in /tmp
        engines = cls(work, Path(tempfile.mkdtemp(prefix="pybuild-bench-root-", dir=_root_parent())))
        rootfs_tar = work / "busybox.tar"
        run([sys.executable, str(REPO / "examples" / "busybox_rootfs.py"), str(rootfs_tar)])
        if "pybuild" in only:
            run([*PYBUILD, "import", str(rootfs_tar), BASE_FROM["pybuild"]], env=engines.pybuild_env())
            engines.available.append("pybuild")
        if "buildkit" in only and shutil.which(DOCKER):
            ensure_dockerd()
            run([DOCKER, "import", str(rootfs_tar), BASE_FROM["buildkit"]])
            engines.available.append("buildkit")
            if "buildah" in only and shutil.which("buildah"):
                archive = work / "busybox-docker.tar"
                run([DOCKER, "save", BASE_FROM["buildkit"], "-o", str(archive)])
                run(["buildah", "pull", f"docker-archive:{archive}"])
                image = run(["buildah", "images", "-q", "--filter", "reference=localhost/pybuild-bench/busybox"]).stdout.decode().split()
                pulled = image[0] if image else "localhost/pybuild-bench/busybox:latest"
                run(["buildah", "tag", pulled, BASE_FROM["buildah"]])
                engines.available.append("buildah")
        return engines

    def pybuild_env(self) -> dict[str, str]:
        return {"PYBUILD_ROOT": str(self.pybuild_root)}

    def dockerfile(self, engine: str, body: str) -> str:
        return body.replace("FROM busybox", f"FROM {BASE_FROM[engine]}")

    def build(
        self, engine: str, context: Path, dockerfile_body: str, *, tag: str, no_cache: bool = False, extra: Sequence[str] = (), network: bool = False
    ) -> float:
        """Build and return the wall time in seconds (``last_rss``: pybuild's peak RSS).
        ``network``: RUN steps need the network (pybuild's default network, not none)."""
        dockerfile = context / f"Dockerfile.{engine}"
        dockerfile.write_text(self.dockerfile(engine, dockerfile_body))
        if engine == "pybuild":
            argv = [*PYBUILD, "build", "-q", *([] if network else ["--network=none"]), "-f", str(dockerfile), "-t", tag, *extra, str(context)]
            env = self.pybuild_env()
            if no_cache:
                argv.insert(argv.index("build") + 1, "--no-cache")
        elif engine == "buildkit":
            argv = [DOCKER, "build", "-q", "--network=host", "-f", str(dockerfile), "-t", tag, *extra, str(context)]
            env = {"DOCKER_BUILDKIT": "1"}
            if no_cache:
                argv.insert(2, "--no-cache")
        else:
            argv = ["buildah", "bud", "-q", "--runtime=runc", "--network=host", "--layers", "-f", str(dockerfile), "-t", tag, *extra, str(context)]
            env = {}
            if no_cache:
                argv.insert(2, "--no-cache")
        self.last_rss = None
        # a pybuild build may run in its root's fork server: its child's tree counts too
        result = measure(argv, env={**os.environ, **env}, server_root=self.pybuild_root if engine == "pybuild" else None)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode(errors='replace')[-3000:]}")
        if engine == "pybuild":
            self.last_rss = result.peak
        return result.seconds

    def server_rss(self) -> int | None:
        """The resident set of pybuild's idle fork server of this root (None: none runs)."""
        return idle_server_rss(self.pybuild_root)

    def cleanup(self) -> None:
        subprocess.run([*PYBUILD, "server", "--stop"], env={**os.environ, **self.pybuild_env()}, capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.pybuild_root, ignore_errors=True)


def _root_parent() -> str | None:
    return "/var/lib" if os.geteuid() == 0 and os.access("/var/lib", os.W_OK) else None


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(function: Callable[[], float], repeat: int) -> float:
    return median([function() for _ in range(repeat)])


def table(rows: list[tuple[str, dict[str, float]]], engines: Sequence[str], unit: str = "s") -> str:
    """A table of medians with pybuild/peer ratios."""
    header = ["workload", *engines] + [f"pybuild/{e}" for e in engines if e != "pybuild"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows:
        cells = [name] + [f"{values[e]:.3f}{unit}" if e in values else "—" for e in engines]
        for e in engines:
            if e == "pybuild":
                continue
            if "pybuild" in values and e in values and values[e] > 0:
                cells.append(f"{values['pybuild'] / values[e]:.2f}")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
