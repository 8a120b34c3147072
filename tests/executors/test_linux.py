"""The stdlib-only Linux helpers the zygote and the container shim share."""

from __future__ import annotations

import subprocess
import sys

from pybuild.executors import _linux as linux

# Run in a process of its own: reaping "any child" in the test process could take
# a child some other fixture is waiting for.
REAPER = """
import os
from pybuild.executors import _linux as linux

ended = os.fork()
if ended == 0:
    os._exit(3)
running_r, running_w = os.pipe()
running = os.fork()
if running == 0:
    os.close(running_w)
    os.read(running_r, 1)  # until the parent closes its end
    os._exit(0)
os.close(running_r)
os.waitid(os.P_PID, ended, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped
print([(pid == ended, os.waitstatus_to_exitcode(status)) for pid, status in linux.exited_children()])
print(list(linux.exited_children()))
os.close(running_w)
os.waitpid(running, 0)
print(list(linux.exited_children()))
"""


def test_exited_children_reaps_each_ended_child_and_leaves_running_ones() -> None:
    done = subprocess.run([sys.executable, "-c", REAPER], capture_output=True, text=True, check=True)
    ended, while_one_runs, after_all = done.stdout.splitlines()
    assert ended == "[(True, 3)]"
    assert while_one_runs == "[]"  # the running child is neither reaped nor waited for
    assert after_all == "[]"  # no children left at all


def test_remembered_id_maps_answer_without_reading_proc(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The zygote reads its maps once; its forks answer from memory (a step asks several times)."""
    import builtins

    monkeypatch.setattr(linux, "_REMEMBERED_MAPS", {})
    monkeypatch.setattr(linux, "_REMEMBERED_SETGROUPS", [])
    fresh = (linux.read_id_map("uid_map"), linux.read_id_map("gid_map"), linux.setgroups_allowed(), linux.in_user_namespace())
    linux.remember_id_maps()
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith("/proc/self/"):
            raise AssertionError(f"read {path} again")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert (linux.read_id_map("uid_map"), linux.read_id_map("gid_map"), linux.setgroups_allowed(), linux.in_user_namespace()) == fresh
    linux.read_id_map("uid_map").append((1, 2, 3))  # a caller's copy: the remembered map stays
    assert linux.read_id_map("uid_map") == fresh[0]


def test_without_remembering_each_question_reads_proc(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import builtins

    monkeypatch.setattr(linux, "_REMEMBERED_MAPS", {})
    monkeypatch.setattr(linux, "_REMEMBERED_SETGROUPS", [])
    opened: list[str] = []
    real_open = builtins.open

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    linux.in_user_namespace()
    linux.setgroups_allowed()
    assert opened == ["/proc/self/uid_map", "/proc/self/setgroups"]
