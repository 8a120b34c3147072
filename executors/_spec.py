"""The values an executor is given and returns (all frozen dataclasses).

Paths named "host path" are paths in the caller's mount namespace; paths named
"inside" are absolute paths in the sandbox's root.  Secret bytes and secret
environment values are kept out of ``repr()`` so they cannot reach a log line
or an error message by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")

# Enough for parallel compilers and thread-heavy tools, small enough that a
# fork bomb stops long before the host runs out of pids or memory.
DEFAULT_PIDS_LIMIT = 4096


@dataclass(frozen=True)
class Rootfs:
    """The step's root: an overlay of ``lowers`` (top first) with a fresh ``upper``.

    ``lowers`` are layer trees in overlay upper-dir format (whiteouts are 0/0
    character devices, opaque directories carry ``trusted.overlay.opaque=y``,
    ``user.overlay.opaque=y`` rootless);
    empty means scratch.  ``upper`` and ``work`` are empty directories on one
    filesystem, created by the caller; after the step ``upper`` holds exactly
    the step's change.  ``readonly`` mounts the lowers alone, read-only.
    """

    lowers: tuple[str, ...]
    upper: str
    work: str
    readonly: bool = False


@dataclass(frozen=True)
class BindMount:
    """A host file or directory bound at ``target`` inside (read-only by default).

    With ``subpath`` (an absolute path), ``source`` is a root directory (the
    build context) and what is bound is ``subpath`` resolved inside it as if
    ``source`` were ``/``: its symlinks are followed and never lead out.
    """

    source: str
    target: str
    readonly: bool = True
    subpath: str | None = None


@dataclass(frozen=True)
class OverlayMount:
    """A snapshot chain (top first) at ``target``; writable into ``upper`` if given.

    Without ``upper`` the mount is read-only.  With ``upper``/``work`` (scratch
    directories the caller discards after the step) writes are visible to the
    step and never reach the rootfs: ``RUN --mount=type=bind,rw``.  With
    ``subpath`` only that path of the chain is mounted, resolved inside it
    (symlinks followed as the chain's own root sees them, never out of it).
    """

    lowers: tuple[str, ...]
    target: str
    upper: str | None = None
    work: str | None = None
    subpath: str | None = None


@dataclass(frozen=True)
class TmpfsMount:
    """A fresh tmpfs at ``target``; ``size`` in bytes (None: the kernel's default)."""

    target: str
    size: int | None = None
    mode: int = 0o1777


@dataclass(frozen=True)
class SecretMount:
    """A file holding ``data`` at ``target``; the bytes live only in a tmpfs in the sandbox."""

    target: str
    data: bytes = field(default=b"", repr=False)
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


Mount = Union[BindMount, OverlayMount, TmpfsMount, SecretMount]


@dataclass(frozen=True)
class DeviceNode:
    """A device node made in the sandbox's /dev (a tmpfs, so never in the layer): a CDI
    device's ``deviceNodes`` entry, resolved by ``_cdi``.  ``kind`` is ``c`` or ``b``;
    ``permissions`` (a subset of ``rwm``) is what the step's devices cgroup allows on it."""

    path: str  # inside, under /dev
    kind: str
    major: int
    minor: int
    permissions: str = "rwm"
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    # The node on the host (CDI's hostPath, else ``path``): a rootless sandbox, which may not
    # mknod a device, binds this one instead, as runc rootless binds its devices.
    host_path: str = ""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run and how.

    ``args`` is the full argv (the caller has already applied SHELL for the
    shell form).  ``env`` are ``K=V`` strings; ``secret_env`` too, but never
    shown.  ``user`` is a Dockerfile USER value (empty: root).  ``network`` is
    one of ``default``, ``none``, ``host`` (the caller checks the
    ``network.host`` entitlement).  ``extra_hosts`` are ``name:ip`` or
    ``name=ip`` lines for ``/etc/hosts``.  ``timeout`` is in seconds.

    ``security`` is ``sandbox`` (Docker's capabilities and seccomp filter)
    or ``insecure`` (every capability, no seccomp filter, no masked /proc
    paths: ``RUN --security=insecure``; the caller checks the
    ``security.insecure`` entitlement).  ``seccomp`` is ``default``
    (Docker's default policy), ``unconfined`` or the JSON text of a
    profile in Docker's format.  ``no_new_privileges`` sets the process's
    no_new_privs bit (setuid binaries gain nothing).

    ``etc_hostname`` mounts a file holding ``hostname`` at /etc/hostname,
    as ``docker run`` does for containers.  A RUN step leaves it off: BuildKit
    mounts only /etc/hosts and /etc/resolv.conf, so a step sees the image's
    own /etc/hostname (or none) while its UTS hostname is ``hostname``.

    ``devices`` are nodes made in the sandbox's /dev and allowed by its devices
    cgroup (``RUN --device``; the caller checks the ``device`` entitlement).
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    network: str = "default"
    hostname: str = "buildkitsandbox"
    timeout: float | None = None
    pids_limit: int | None = DEFAULT_PIDS_LIMIT
    memory_limit: int | None = None
    secret_env: tuple[str, ...] = field(default=(), repr=False)
    extra_hosts: tuple[str, ...] = ()
    security: str = "sandbox"
    seccomp: str = "default"
    no_new_privileges: bool = False
    etc_hostname: bool = False
    devices: tuple[DeviceNode, ...] = ()


@dataclass(frozen=True)
class ExecResult:
    """How a step ended.

    ``exit_code`` follows the shell's convention: the process's exit status, or
    128 + signal number when it was killed (then ``signal`` is set).
    ``timed_out`` means pybuild killed it because ``ProcessSpec.timeout`` passed.
    ``oom_killed`` means the kernel killed a process of the step because it
    reached ``ProcessSpec.memory_limit``.
    """

    exit_code: int
    duration: float
    signal: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
