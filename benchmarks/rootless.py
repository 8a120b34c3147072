"""run_all's workloads with pybuild rootless, beside pybuild as root and rootless Buildah.

    .venv/bin/python benchmarks/rootless.py [--user pybuild-test] [--repeat 3]
                                            [--engines root,rootless,buildah]
                                            [--only parallel,runs,context,c,export]
                                            [--quiet-load LOAD] [--markdown FILE]

Run it as root on a machine set up by ``.ci/setup`` (which creates the
unprivileged ``pybuild-test`` user with subordinate id ranges).  Three engines:

- ``root``: pybuild as root, as ``run_all.py`` runs it (``PYBUILD_ROOT`` in a
  temporary directory under /var/lib);
- ``rootless``: the same pybuild run by the user (``setpriv --reuid --regid
  --init-groups`` with a clean environment), its root the default one for a
  non-root user, ``$XDG_DATA_HOME/pybuild``, with ``XDG_DATA_HOME`` a fresh
  directory in the user's home;
- ``buildah``: Buildah run by the same user, ``bud --runtime=runc --network=host
  --layers`` as in run_all.py, its storage (overlay driver) in a fresh
  directory in the user's home.

The workloads, the timing (wall time of the command line, median of
``--repeat`` runs, engines taking turns) and the inputs are run_all.py's; the
bases are imported into each store before anything is timed (Buildah pulls the
docker-archive ``pybuild save`` writes of pybuild's import).  The table's
ratios are rootless/root (target: at most 1.10) and rootless/buildah (target:
at most 1).  benchmarks/README.md explains the method and gives the latest
numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_all  # noqa: E402
import workloads as w  # noqa: E402
from peers import PYBUILD, REPO, _root_parent, run  # noqa: E402

ENGINES = ("root", "rootless", "buildah")
# Each store's name for the busybox and gcc bases ("FROM busybox" / "FROM gcc:local").
BASES = {
    "root": ("busybox:latest", "gcc:local"),
    "rootless": ("busybox:latest", "gcc:local"),
    "buildah": ("localhost/pybuild-bench-busybox:latest", "localhost/pybuild-bench-gcc:local"),
}
TARGET_ROOT = 1.10  # rootless within 10 % of root
TARGET_BUILDAH = 1.00  # rootless at most Buildah's time


class Unusable(Exception):
    """The machine cannot run the benchmark as it stands; the message says why."""


class User:
    """The unprivileged user, and how to run a command line as it."""

    def __init__(self, name: str) -> None:
        try:
            self.entry = pwd.getpwnam(name)
        except KeyError:
            raise Unusable(f"no user {name!r}: .ci/setup creates pybuild-test (or pass --user NAME)") from None
        self.name = name
        self.home = Path(self.entry.pw_dir)
        if not self.home.is_dir():
            raise Unusable(f"{name}'s home {self.home} does not exist (useradd -m makes it)")
        self.runtime = Path(tempfile.mkdtemp(prefix=f"pybuild-bench-run-{name}-"))
        self.give(self.runtime)
        self.data = self.home / ".local" / "share" / f"pybuild-bench-{os.getpid()}"
        self.data.mkdir(parents=True)
        for path in (self.data, self.data.parent, self.data.parent.parent):
            if path.stat().st_uid == 0:  # made just now by root: the user's own, as its home is
                self.give(path)

    def give(self, path: Path) -> None:
        os.chown(path, self.entry.pw_uid, self.entry.pw_gid)

    def argv(self, argv: Sequence[str], **env: str) -> list[str]:
        """``argv`` run as the user with a clean environment (nothing of root's leaks in)."""
        clean = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_DATA_HOME": str(self.data),
            **env,
        }
        ids = [f"--reuid={self.entry.pw_uid}", f"--regid={self.entry.pw_gid}", "--init-groups"]
        return ["setpriv", *ids, "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv]

    def check(self, what: str, argv: Sequence[str]) -> None:
        """Fail with the reason when the user cannot run ``argv`` (an unreadable checkout,
        no subordinate ids ...), before anything is timed."""
        result = subprocess.run(self.argv(argv), capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise Unusable(f"{self.name} cannot run {what}: {last}")

    def cleanup(self) -> None:
        shutil.rmtree(self.runtime, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)


def subordinate_ids(name: str) -> str:
    """The user's ranges in /etc/subuid and /etc/subgid, as the report shows them."""
    ranges = []
    for kind in ("subuid", "subgid"):
        try:
            lines = Path(f"/etc/{kind}").read_text().splitlines()
        except OSError:
            lines = []
        found = [line.split(":", 1)[1] for line in lines if line.split(":", 1)[0] == name]
        ranges.append(f"{kind} {', '.join(found) or 'none'}")
    return " and ".join(ranges)


class Engines:
    """The three engines with the same bases in their stores: what run_all.Driver drives."""

    def __init__(self, user: User, wanted: Sequence[str]) -> None:
        self.user = user
        self.work = Path(tempfile.mkdtemp(prefix="pybuild-bench-rootless-"))
        self.work.chmod(0o755)  # the contexts are read by the user's engines too
        self.out = self.work / "out"  # where the export workload's archives go
        self.out.mkdir()
        user.give(self.out)
        self.root_root = Path(tempfile.mkdtemp(prefix="pybuild-bench-root-", dir=_root_parent()))
        self.storage = user.data / "containers"
        self.available = [e for e in ENGINES if e in wanted]

    def pybuild_env(self) -> dict[str, str]:
        return {"PYBUILD_ROOT": str(self.root_root)}

    def buildah(self, *args: str) -> list[str]:
        storage = ["--storage-driver", "overlay", "--root", str(self.storage / "storage"), "--runroot", str(self.user.runtime / "containers")]
        return self.user.argv(["buildah", *storage, *args])

    def command(self, engine: str, args: Sequence[str]) -> list[str]:
        """pybuild's (or Buildah's) command line ``args`` for ``engine``."""
        if engine == "root":
            return [*PYBUILD, *args]
        if engine == "rootless":
            return self.user.argv([*PYBUILD, *args])
        return self.buildah(*args)

    def run(self, engine: str, args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        return run(self.command(engine, args), env=self.pybuild_env() if engine == "root" else None, cwd=self.work)

    def prepare(self) -> None:
        """Each store with the busybox base; the user's engines checked first."""
        if "rootless" in self.available:
            self.check_user_pybuild()
        if "buildah" in self.available:
            self.user.check("buildah", ["buildah", "--version"])
        busybox = self.work / "busybox.tar"
        run([sys.executable, str(REPO / "examples" / "busybox_rootfs.py"), str(busybox)])
        self.bring_in(busybox, 0)
        busybox.unlink()

    def check_user_pybuild(self) -> None:
        """pybuild must start as the user: say which directory stops it if it does not
        (/root is 0700 on many machines; .ci/setup gives the test users an ACL through it)."""
        for path in (Path(PYBUILD[0]).resolve(), REPO):
            for parent in [*reversed(path.parents), path]:
                if subprocess.run(self.user.argv(["test", "-x", str(parent)]), capture_output=True).returncode != 0:
                    raise Unusable(f"{self.user.name} may not enter {parent} on the way to {path} (run .ci/setup, or setfacl -m u:{self.user.name}:x {parent})")
        self.user.check("pybuild", [*PYBUILD, "--version"])

    def bring_in(self, rootfs: Path, which: int) -> None:
        """Import a root file system tar as base ``which`` (0 busybox, 1 gcc) into every store.
        Buildah takes the docker-archive pybuild writes of root's import."""
        rootfs.chmod(0o644)
        run([*PYBUILD, "import", str(rootfs), BASES["root"][which]], env=self.pybuild_env())
        if "rootless" in self.available:
            self.run("rootless", ["import", str(rootfs), BASES["rootless"][which]])
        if "buildah" in self.available:
            archive = self.work / "base-docker.tar"
            run([*PYBUILD, "save", "-o", str(archive), BASES["root"][which]], env=self.pybuild_env())
            archive.chmod(0o644)
            pulled = self.run("buildah", ["pull", "-q", f"docker-archive:{archive}"]).stdout.decode().split()[-1]
            self.run("buildah", ["tag", pulled, BASES["buildah"][which]])
            archive.unlink()

    def dockerfile(self, engine: str, body: str) -> str:
        busybox, gcc = BASES[engine]
        return body.replace("FROM busybox", f"FROM {busybox}").replace("FROM gcc:local", f"FROM {gcc}")

    def build(self, engine: str, context: Path, body: str, *, tag: str, no_cache: bool = False, extra: Sequence[str] = ()) -> float:
        """Build and return the wall time in seconds (run_all's Engines.build, per engine here)."""
        dockerfile = context / f"Dockerfile.{engine}"
        dockerfile.write_text(self.dockerfile(engine, body))
        dockerfile.chmod(0o644)
        if engine == "buildah":
            args = ["bud", "-q", "--runtime=runc", "--network=host", "--layers"]
        else:
            args = ["build", "-q", "--network=none"]
        args += ["--no-cache"] if no_cache else []
        args += ["-f", str(dockerfile), "-t", tag, *extra, str(context)]
        argv = self.command(engine, args)
        env = self.pybuild_env() if engine == "root" else None
        started = time.perf_counter()
        run(argv, env=env, cwd=self.work)
        return time.perf_counter() - started

    def cleanup(self) -> None:
        if "buildah" in self.available:  # its containers' mounts go before their storage does
            subprocess.run(self.buildah("rm", "--all"), capture_output=True)
            subprocess.run(self.buildah("rmi", "--all", "--force"), capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.root_root, ignore_errors=True)
        self.user.cleanup()


class Driver(run_all.Driver):
    """run_all's driver over these three engines: same workloads, own bases and export."""

    engines: Engines  # type: ignore[assignment]

    def build(self, engine: str, context: Path, body: str, tag: str, *, no_cache: bool = False, extra: Sequence[str] = ()) -> float:
        self.tags[engine].add(tag)
        self.loads.append(run_all.load_average())
        return self.engines.build(engine, context, body, tag=tag, no_cache=no_cache, extra=extra)

    def export(self, megabytes: int) -> list[run_all.Row]:
        context = self.engines.work / "export"
        size = w.make_real_bytes_context(context, megabytes)
        time.sleep(run_all.RACY_PAUSE)
        out = self.engines.out / "export.tar"
        tag = "runall-export:latest"
        args = {"root": ["save", "-o", str(out), tag], "rootless": ["save", "-o", str(out), tag], "buildah": ["push", "-q", tag, f"oci-archive:{out}"]}

        def one_run(engine: str) -> float:
            out.unlink(missing_ok=True)
            argv = self.engines.command(engine, args[engine])
            env = self.engines.pybuild_env() if engine == "root" else None
            started = time.perf_counter()
            run(argv, env=env, cwd=self.engines.work)
            elapsed = time.perf_counter() - started
            out.unlink()
            return elapsed

        def prepare(engine: str) -> None:  # the image to export, built untimed
            self.build(engine, context, w.EXPORT, tag)

        return [self.row(f"export a {size / 1e6:.0f} MB image to an archive", one_run, prepare)]

    def cleanup(self) -> None:
        """Nothing to do: every store is temporary (Engines.cleanup removes them)."""


def table(rows: list[run_all.Row], engines: Sequence[str]) -> str:
    """Medians with the rootless/root and rootless/buildah ratios; a ratio over its target is in bold."""
    ratios = [(e, TARGET_ROOT if e == "root" else TARGET_BUILDAH) for e in ("root", "buildah") if e in engines and "rootless" in engines]
    header = ["workload", *engines, *(f"rootless/{e}" for e, _ in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows:
        cells = [name, *(f"{values[e]:.3f}s" if e in values else "—" for e in engines)]
        for e, target in ratios:
            if "rootless" in values and values.get(e, 0) > 0:
                ratio = values["rootless"] / values[e]
                cells.append(f"**{ratio:.2f}**" if ratio > target else f"{ratio:.2f}")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footer(engines: Engines, driver: Driver) -> list[str]:
    """run_all's footer (machine, load, engines, notes) with pybuild's line and the user's ranges."""
    lines = run_all.report_footer(engines, driver.loads, driver.notes)  # type: ignore[arg-type]
    commit = run_all._first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    pybuild = f"- {run_all._first([*PYBUILD, '--version'])} (git {commit}), `build -q --network=none`; rootless run by `{engines.user.name}` ({subordinate_ids(engines.user.name)})"
    at = lines.index("Engines:") + 2
    return [*lines[:at], pybuild, *lines[at:]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", default="pybuild-test", help="the unprivileged user (default pybuild-test, made by .ci/setup)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the table shows medians (default 3)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--only", default=",".join(run_all.WORKLOADS), help="workloads to run: " + ",".join(run_all.WORKLOADS))
    parser.add_argument("--files", type=int, default=5_000, help="files of the big context (default 5,000)")
    parser.add_argument("--megabytes", type=int, default=100, help="size of the big context in MB (default 100)")
    parser.add_argument("--export-megabytes", type=int, default=100, help="size of the exported image's content (default 100)")
    parser.add_argument("--quiet-load", type=float, default=0.0, metavar="LOAD", help="before each workload, wait (up to 10 min) for the 1-minute load average to fall below LOAD")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    chosen = [x for x in args.only.split(",") if x]
    wanted = [x for x in args.engines.split(",") if x]
    if set(chosen) - set(run_all.WORKLOADS) or set(wanted) - set(ENGINES):
        parser.error(f"unknown workloads or engines: {', '.join(sorted((set(chosen) - set(run_all.WORKLOADS)) | (set(wanted) - set(ENGINES))))}")
    if os.geteuid() != 0:
        parser.error("run it as root: it runs pybuild as root and drops to --user for the rootless engines")

    started = time.perf_counter()
    run_all.byte_compile()  # as root: the user's pybuild reads the same compiled modules
    try:
        user = User(args.user)
    except Unusable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    engines = Engines(user, wanted)
    driver = Driver(engines, args.repeat, {})  # type: ignore[arg-type]
    rows: list[run_all.Row] = []
    try:
        try:
            engines.prepare()
        except Unusable as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if "c" in chosen:
            gcc = engines.work / "gcc.tar"
            run([sys.executable, str(w.EXAMPLES / "base-images" / "make-gcc-rootfs"), str(gcc)])
            engines.bring_in(gcc, 1)
            gcc.unlink()
        for name in chosen:
            if args.quiet_load:
                run_all.wait_for_quiet(args.quiet_load)
            print(f"workload {name} ...", file=sys.stderr, flush=True)
            if name == "parallel":
                rows += driver.parallel()
            elif name == "runs":
                rows += driver.runs()
            elif name == "context":
                rows += driver.context(args.files, args.megabytes)
            elif name == "c":
                rows += driver.c_build()
            elif name == "export":
                rows += driver.export(args.export_megabytes)
        shown = " ".join(sys.argv[1:] if argv is None else argv)
        report = [
            f"Run of {datetime.date.today().isoformat()}, `benchmarks/rootless.py {shown}`".rstrip()
            + f" ({(time.perf_counter() - started) / 60:.1f} min), median of {args.repeat} runs per cell"
            + f" (rootless engines run by `{user.name}`; a ratio over its target in bold):",
            "",
            table(rows, engines.available),
            "",
            "Fastest and slowest of the runs behind each median:",
            "",
            run_all.spread_table(rows, driver.spreads, engines.available),
            "",
            *footer(engines, driver),
        ]
        text = "\n".join(report) + "\n"
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
    finally:
        engines.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
