"""Capability sets: names, numbers and Docker's default set.

A RUN step keeps Docker's default capabilities in its bounding set (and, as
root, in its permitted and effective sets); the inheritable and ambient sets
are empty, so nothing survives an exec into a non-root user.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the zygote and the shim do not import typing
if TYPE_CHECKING:
    from collections.abc import Iterable

CAPABILITY_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

# The set Docker (moby's oci/caps/defaults.go) and BuildKit give a container.
DOCKER_DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def capability_mask(names: Iterable[str]) -> int:
    """The bit mask of capability names; unknown names raise KeyError."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def capability_names(mask: int) -> list[str]:
    """Names of the bits set in ``mask``, lowest first (unknown bits as CAP_<n>)."""
    by_number = {number: name for name, number in CAPABILITY_NUMBERS.items()}
    return [by_number.get(bit, f"CAP_{bit}") for bit in range(64) if mask >> bit & 1]


DOCKER_DEFAULT_MASK = capability_mask(DOCKER_DEFAULT_CAPABILITIES)


def capabilities_to_drop(keep_mask: int, last_cap: int) -> list[int]:
    """Capability numbers to drop from the bounding set to keep only ``keep_mask``."""
    return [cap for cap in range(last_cap + 1) if not keep_mask >> cap & 1]
