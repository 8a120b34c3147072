"""The stdlib-only Linux helpers the zygote and the container shim share."""

from __future__ import annotations

import subprocess
import sys

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
