"""Run sandbox steps as a rootless pybuild would, from root: ``python rootless_runner.py JSON``.

The process forks; the child unshares a user namespace, the parent (root on
the host) writes its id maps (``map`` of the JSON: ``[inside, host, count]``
lines, as newuidmap would from /etc/subuid), and the child becomes root there
with a private mount namespace -- the state R1's ``enter_userns`` leaves a
non-root pybuild in -- and runs each step of ``steps`` with a SandboxExecutor
whose zygote is ``python``.  It prints one JSON list: per step ``exit``,
``stdout``, ``stderr`` or ``error`` (a SandboxError's message).  Everything
is imported before the fork: the host's root owns the interpreter's files,
which the namespace's root may not be able to read.
"""

from __future__ import annotations

import encodings.ascii  # noqa: F401 - loaded now: pybuild reads /proc files as ascii after the fork
import json
import os
import sys

import trio

from pybuild.errors import SandboxError
from pybuild.executors import BindMount, DeviceNode, ProcessSpec, Rootfs, SandboxExecutor
from pybuild.executors import _linux as linux

CLONE_NEWUSER = 0x10000000
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


async def run_steps(config: dict) -> list[dict]:
    base = config["base"]
    results = []
    async with SandboxExecutor(state_dir=os.path.join(base, "state"), python=config["python"]) as executor:
        for index, step in enumerate(config["steps"]):
            directory = os.path.join(base, "steps", str(index))
            os.makedirs(os.path.join(directory, "upper"))
            os.mkdir(os.path.join(directory, "work"))
            rootfs = Rootfs((os.path.join(base, "rootfs"),), os.path.join(directory, "upper"), os.path.join(directory, "work"))
            out = {"stdout": b"", "stderr": b""}

            def collect(stream: str, chunk: bytes) -> None:
                out[stream] += chunk

            fields = {k: v for k, v in step.items() if k not in ("script", "binds")}
            mounts = [BindMount(source, target) for source, target in step.get("binds", ())]
            fields["devices"] = tuple(DeviceNode(**node) for node in fields.get("devices", ()))
            spec = ProcessSpec(("/bin/sh", "-c", step["script"]), env=(PATH,), network=fields.pop("network", "none"), **fields)
            try:
                with trio.fail_after(60):
                    result = await executor.run(rootfs, spec, mounts, on_output=collect)
            except SandboxError as e:
                results.append({"error": str(e)})
                continue
            results.append({"exit": result.exit_code, "stdout": out["stdout"].decode(), "stderr": out["stderr"].decode()})
    return results


def enter(maps: list[list[int]]) -> int:
    """Fork into a new user namespace mapped by ``maps``; 0 in the child, the child's pid in the parent."""
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.close(ready_r)
        linux.unshare(CLONE_NEWUSER)
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"g":
            os._exit(3)
        if len(maps) > 1 or maps[0][2] > 1:
            os.setgroups([])  # denied with a one-id map, as for an unprivileged caller
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        return 0
    os.close(go_r)
    os.close(ready_w)
    os.read(ready_r, 1)
    text = "".join(f"{inside} {host} {count}\n" for inside, host, count in maps)
    if len(maps) == 1 and maps[0][2] == 1:
        # what an unprivileged process must do to map its one id (enter_userns' fallback)
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
    os.write(go_w, b"g")
    return pid


def main() -> None:
    config = json.loads(sys.argv[1])
    pid = enter(config["map"])
    if pid:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    sys.stdout.write(json.dumps(trio.run(run_steps, config)) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
