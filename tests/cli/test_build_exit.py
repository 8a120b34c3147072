"""``pybuild build`` leaves without the interpreter's teardown (cli/main.py ``entry``), yet
does everything of an exit that matters: threads joined, atexit handlers run, output
flushed, the exit code kept, the root's index closed (checkpointed) by the build itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pybuild.cache import Root

# An object freed only by the teardown says so; a thread that is not a daemon writes a
# file after the command is done (an exit must wait for it); then the command itself.
PROBE = """
import pathlib, sys, threading, time

class Teardown:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")

kept = Teardown()
marker = pathlib.Path(sys.argv[1])
threading.Thread(target=lambda: (time.sleep(0.3), marker.write_text("joined"))).start()
sys.argv = ["pybuild", *sys.argv[2:]]
from pybuild.cli.main import entry
entry()
"""


def pybuild(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / f"marker-{len(list(tmp_path.glob('marker-*')))}"
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}
    done = subprocess.run([sys.executable, "-c", PROBE, str(marker), *args], capture_output=True, text=True, env=env)
    return done, marker


def test_a_build_exits_without_teardown_after_doing_what_an_exit_must(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (context / "a").write_text("a\n")
    done, marker = pybuild(tmp_path, "build", "-q", "-t", "exit:probe", str(context))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sha256:")  # flushed
    assert "teardown ran" not in done.stderr
    assert marker.read_text() == "joined"  # the thread was waited for
    root = tmp_path / "root"
    assert not (root / "index.db-wal").exists()  # the build closed its index: SQLite checkpointed it
    assert not any(p.is_dir() for p in Root.temp_contents(root))  # the atexit handler removed the temp area


def test_a_failed_build_keeps_its_exit_code_and_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nFORM scratch\n")
    done, marker = pybuild(tmp_path, "build", "-q", str(tmp_path))
    assert done.returncode != 0
    assert "did you mean FROM?" in done.stderr
    assert "Traceback" not in done.stderr and "teardown ran" not in done.stderr
    assert marker.read_text() == "joined"


def test_other_commands_exit_as_before(tmp_path: Path) -> None:
    done, marker = pybuild(tmp_path, "images")
    assert done.returncode == 0, done.stderr
    assert "teardown ran" in done.stderr  # the interpreter's teardown freed the object
    assert marker.read_text() == "joined"
