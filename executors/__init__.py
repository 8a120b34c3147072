"""Running processes: the RUN sandbox (namespaces, overlay rootfs, mounts,
network, user, capabilities), a fake executor for tests, and containers
(``pybuild run``): their runtime (``_containers*``) and their records under
the root (``_containers_store``).  ``_binfmt`` says which platforms this machine
runs (native, or QEMU through a binfmt_misc handler with the F flag) and
registers qemu-user-static's handlers for ``pybuild binfmt --install``.
``_cdi`` reads the host's CDI specs for ``RUN --device`` (env, device nodes made
in the sandbox's /dev and allowed by its devices cgroup, bind mounts).
``_userns`` enters (or joins) the user namespace a non-root pybuild runs in,
root inside with the caller's subordinate ids mapped (``enter_userns``,
``join_userns``, ``rootless``); ``cli`` calls it once at start.

Imports no other pybuild layer except ``grammar`` types; ``pyseccomp`` is
imported here and nowhere else.

The bridge network of root's RUN steps (``_bridge``) sends its five rtnetlink
messages per step through ``_netlink`` (stdlib sockets), not pyroute2: the
zygote runs without site-packages, importing pyroute2 cost 125-190 ms, and its
requests measured 25-65 ms for one step's veth, more than slirp4netns's start.

``pyseccomp`` (libseccomp's binding) is imported by ``_seccomp`` alone, when
a filter is first compiled: the sandbox gets the compiled program's bytes.
As root, ``_seccomp_cache`` keeps compiled programs in ``/run/pybuild/seccomp``
so a build whose filter was compiled before imports neither.

Inside this package the trio side (``_executor``, ``_caller``, ``_cgroups``,
``_seccomp``) may import anything above; the sandbox side (``_zygote``, ``_sandbox``,
``_overlay``, ``_paths``, ``_linux``, ``_passwd``, ``_caps``, ``_netfiles``, ``_wire``)
imports only the standard library and its own siblings, because the zygote
runs it as ``python -I -S`` without pybuild on its path.
"""

from typing import TYPE_CHECKING

from pybuild import _lazy

from ._caps import DOCKER_DEFAULT_CAPABILITIES as DOCKER_DEFAULT_CAPABILITIES
from ._cgroups import memory_limit_unavailable as memory_limit_unavailable
from ._passwd import parse_group as parse_group
from ._passwd import parse_passwd as parse_passwd
from ._protocol import Executor as Executor
from ._protocol import RootfsCaller as RootfsCaller
from ._spec import DEFAULT_PIDS_LIMIT as DEFAULT_PIDS_LIMIT
from ._spec import BindMount as BindMount
from ._spec import DeviceNode as DeviceNode
from ._spec import ExecResult as ExecResult
from ._spec import Mount as Mount
from ._spec import OverlayMount as OverlayMount
from ._spec import ProcessSpec as ProcessSpec
from ._spec import Rootfs as Rootfs
from ._spec import SecretMount as SecretMount
from ._spec import TmpfsMount as TmpfsMount
from ._userns import IdRange as IdRange
from ._userns import RootlessInfo as RootlessInfo
from ._userns import enter_userns as enter_userns
from ._userns import join_userns as join_userns
from ._userns import rootless as rootless

# The trio side (the sandbox's and the rootfs caller's clients, their fakes and checks) loads on
# first use: commands that only read the root (and the rootless start, which needs `_userns`
# alone) never pay for importing trio.
_LAZY = {
    "NamespaceRootfsCaller": "._caller", "SandboxExecutor": "._executor",
    "FakeExecutor": ".fake", "FakeRootfsCaller": ".fake", "FakeRun": ".fake",
    "check_executor": ".testing", "check_rootfs_caller": ".testing",
}  # fmt: skip
# The one budget of pybuild's own CPU-heavy threads (hashing, copying, unpacking): steps are not
# limited by default, this work is, to the CPU count (see ``_cpu``).
_LAZY |= {name: "._cpu" for name in ("cpu_budget", "cpu_limiter", "run_cpu_bound")}
# Containers (``pybuild run`` and friends) load on first use: builds never need them.
_LAZY |= {name: "._containers" for name in ("ContainerLaunch", "ContainerRuntime", "ContainerStatus")}
# Their storage layout under the root, without the runtime: what ps, diff and rmi read.
_LAZY |= {name: "._containers_store" for name in (
    "ContainerRecord", "ContainerStore", "PublishedPort", "image_users", "images_in_use",
    "new_container_id", "process_env", "snapshots_in_use", "validate_container_name",
)}
# ``pybuild logs`` cuts a container's log frames into lines.
_LAZY |= {name: "._containers_log" for name in ("Frame", "iter_lines")}
# CDI device specs (RUN --device) are read only when a step asks for a device.
_LAZY |= {name: "._cdi" for name in ("CdiEdits", "CdiRegistry", "load_cdi_registry")}
# A build that syncs its steps' changes once, at its end (cache ``defer_durability``).
_LAZY["defer_step_syncs"] = "._overlay"
# Only ``pybuild run`` reads a profile file; a build compiles the default profile when its first step runs.
_LAZY["load_seccomp_profile"] = "._seccomp"
# What this machine can run (native, QEMU through binfmt_misc): asked only for a foreign platform.
_LAZY |= {name: "._binfmt" for name in (
    "EmulationError", "EmulationStatus", "emulation_status", "runnable_platforms",
    "install_handlers", "uninstall_handlers",
)}


if TYPE_CHECKING:  # the names below, loaded on first use, typed for the checker
    from ._binfmt import EmulationError as EmulationError
    from ._caller import NamespaceRootfsCaller as NamespaceRootfsCaller
    from ._cdi import CdiEdits as CdiEdits
    from ._cdi import CdiRegistry as CdiRegistry
    from ._cdi import load_cdi_registry as load_cdi_registry
    from ._cpu import cpu_budget as cpu_budget
    from ._cpu import cpu_limiter as cpu_limiter
    from ._cpu import run_cpu_bound as run_cpu_bound
    from ._binfmt import EmulationStatus as EmulationStatus
    from ._binfmt import emulation_status as emulation_status
    from ._binfmt import install_handlers as install_handlers
    from ._binfmt import runnable_platforms as runnable_platforms
    from ._binfmt import uninstall_handlers as uninstall_handlers
    from ._containers import ContainerLaunch as ContainerLaunch
    from ._containers import ContainerRuntime as ContainerRuntime
    from ._containers import ContainerStatus as ContainerStatus
    from ._containers_log import Frame as Frame
    from ._containers_log import iter_lines as iter_lines
    from ._containers_store import ContainerRecord as ContainerRecord
    from ._containers_store import ContainerStore as ContainerStore
    from ._containers_store import PublishedPort as PublishedPort
    from ._containers_store import image_users as image_users
    from ._containers_store import images_in_use as images_in_use
    from ._containers_store import new_container_id as new_container_id
    from ._containers_store import process_env as process_env
    from ._containers_store import snapshots_in_use as snapshots_in_use
    from ._containers_store import validate_container_name as validate_container_name
    from ._executor import SandboxExecutor as SandboxExecutor
    from ._overlay import defer_step_syncs as defer_step_syncs
    from ._seccomp import load_seccomp_profile as load_seccomp_profile
    from .fake import FakeExecutor as FakeExecutor
    from .fake import FakeRootfsCaller as FakeRootfsCaller
    from .fake import FakeRun as FakeRun
    from .testing import check_executor as check_executor
    from .testing import check_rootfs_caller as check_rootfs_caller

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)
