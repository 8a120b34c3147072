"""Seccomp profiles (Docker's JSON format) compiled to a BPF program with libseccomp.

This is the trio side: the program is compiled here, in pybuild's own
process, through ``pyseccomp`` (a ctypes binding to libseccomp, imported
only when a filter is first needed), and the bytes travel to the sandbox
with the step's request.  The sandbox side installs them with one
``prctl(PR_SET_SECCOMP)`` (``_linux.install_seccomp``) without importing
anything beyond the standard library.

A profile is Docker's ``--security-opt seccomp=FILE`` format: a
``defaultAction`` and ``syscalls`` rules (``names``, ``action``,
``errnoRet``, ``args`` and ``includes``/``excludes`` on ``caps``,
``arches`` and ``minKernel``), plus ``archMap`` or ``architectures``.  The
default profile, ``seccomp_default.json`` beside this module, is Docker's
default policy.  Conditional rules are resolved against the capabilities
the process will hold, so a step with every capability (``RUN
--security=insecure``) would get the permissive variant, though such a
step runs with no filter at all.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from pybuild.errors import UsageError

from ._caps import CAPABILITY_NUMBERS, DOCKER_DEFAULT_MASK

DEFAULT = "default"
UNCONFINED = "unconfined"

_DEFAULT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")

# platform.machine() -> (libseccomp's architecture name, Docker's (Go) name for "arches")
_NATIVE = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
    "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
    "s390x": ("SCMP_ARCH_S390X", "s390x"),
    "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"),
}
_ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
_EPERM = 1
# libseccomp's __NR_SCMP_ERROR (other negative numbers name calls that exist on another architecture)
_UNKNOWN_SYSCALL = -1


@dataclass(frozen=True)
class _Rule:
    names: tuple[str, ...]
    action: str
    errno: int | None
    args: tuple[tuple[int, str, int, int], ...]  # (index, operator, value, valueTwo)


@dataclass(frozen=True)
class _Profile:
    default_action: str
    default_errno: int
    architectures: tuple[str, ...]  # besides the native one
    rules: tuple[_Rule, ...]


def check_profile(text: str, source: str) -> None:
    """Raise ``UsageError`` naming ``source`` if ``text`` is not a profile this machine can load."""
    _compile(text, source, DOCKER_DEFAULT_MASK)


def load_seccomp_profile(path: str) -> str:
    """The text of a profile file, checked; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 22)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"cannot read the seccomp profile {path}: {reason}", hint="--security-opt seccomp=FILE.json") from None
    check_profile(text, path)
    return text


def compile_filter(profile: str, capabilities: int) -> bytes | None:
    """The BPF program for ``profile`` (``default``, ``unconfined`` or a JSON text); None: no filter.

    Cached: a build compiles each distinct profile once.
    """
    if profile == UNCONFINED:
        return None
    if profile == DEFAULT:
        return _compiled(_default_text(), "the default seccomp profile", capabilities)
    return _compiled(profile, "the seccomp profile", capabilities)


@functools.cache
def _default_text() -> str:
    with open(_DEFAULT_FILE, encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=16)
def _compiled(text: str, source: str, capabilities: int) -> bytes:
    from . import _seccomp_cache

    program = _seccomp_cache.load(text, capabilities)
    if program is None:
        program = _compile(text, source, capabilities)
        _seccomp_cache.store(text, capabilities, program)
    return program


def _compile(text: str, source: str, capabilities: int) -> bytes:
    profile = _parse(text, source, capabilities)
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as e:  # RuntimeError: the binding found no libseccomp.so
        raise UsageError(
            f"cannot build the seccomp filter: {e}", hint="install libseccomp2 (Debian) and pyseccomp"
        ) from None
    try:
        return _bpf(pyseccomp, profile, source)
    except OSError as e:
        raise UsageError(f"{source}: libseccomp refused it: {e.strerror or e}") from None


def _bpf(pyseccomp: Any, profile: _Profile, source: str) -> bytes:
    seccomp_filter = pyseccomp.SyscallFilter(_action(pyseccomp, profile.default_action, profile.default_errno))
    # The sandbox sets no_new_privs itself when asked (--security-opt no-new-privileges), as runc does.
    seccomp_filter.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    try:
        # a binary tree of syscall numbers: each call walks ~log2(n) tests instead of the whole list
        seccomp_filter.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass  # libseccomp < 2.5: the linear program is as correct, only slower
    for name in profile.architectures:
        arch = getattr(pyseccomp.Arch, name.removeprefix("SCMP_ARCH_"), None)
        if arch is None:
            raise UsageError(f"{source}: unknown architecture {name!r}")
        if not seccomp_filter.exist_arch(arch):
            seccomp_filter.add_arch(arch)
    native = pyseccomp.Arch.NATIVE
    for rule in profile.rules:
        action = _action(pyseccomp, rule.action, rule.errno)
        if action == _action(pyseccomp, profile.default_action, profile.default_errno):
            continue  # libseccomp refuses a rule that repeats the default action
        for name in rule.names:
            number = pyseccomp.resolve_syscall(native, name)
            if number == _UNKNOWN_SYSCALL:
                continue  # a name libseccomp does not know on any of the filter's architectures: Docker skips these too
            for conditions in _condition_sets(pyseccomp, rule.args):
                seccomp_filter.add_rule(action, number, *conditions)
    with _memfd() as fd:
        seccomp_filter.export_bpf(_FileNo(fd))
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)


def _condition_sets(pyseccomp: Any, args: tuple[tuple[int, str, int, int], ...]) -> list[tuple[Any, ...]]:
    """Docker's reading of ``args``: all in one rule (AND), unless an index repeats: one rule each (OR)."""
    conditions = [pyseccomp.Arg(index, getattr(pyseccomp, op.removeprefix("SCMP_CMP_")), value, two) for index, op, value, two in args]
    indexes = [index for index, _, _, _ in args]
    if len(set(indexes)) != len(indexes):
        return [(c,) for c in conditions]
    return [tuple(conditions)]


def _action(pyseccomp: Any, name: str, errno: int | None) -> int:
    action: int  # pyseccomp is untyped: its actions are ints
    if name == "SCMP_ACT_ERRNO":
        action = pyseccomp.ERRNO(_EPERM if errno is None else errno)
    elif name == "SCMP_ACT_TRACE":
        action = pyseccomp.TRACE(_EPERM if errno is None else errno)
    else:
        action = {
            "SCMP_ACT_ALLOW": pyseccomp.ALLOW,
            "SCMP_ACT_KILL": pyseccomp.KILL_THREAD,
            "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS,
            "SCMP_ACT_TRAP": pyseccomp.TRAP,
            "SCMP_ACT_LOG": pyseccomp.LOG,
        }[name]
    return action


_SIMPLE_ACTIONS = (
    "SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_LOG",
)


# --------------------------------------------------------------------------
# reading the JSON (pure Python: testable without libseccomp)


def _parse(text: str, source: str, capabilities: int) -> _Profile:
    def bad(problem: str) -> UsageError:
        return UsageError(f"invalid seccomp profile {source}: {problem}", hint="Docker's seccomp profile format: defaultAction, syscalls")

    try:
        data = json.loads(text)
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise bad("the profile is not a JSON object")
    if data.get("listenerPath"):
        raise bad("listenerPath (SCMP_ACT_NOTIFY) is not supported")
    default_action = _action_name(data.get("defaultAction"), bad, "defaultAction")
    default_errno = _errno(data.get("defaultErrnoRet"), bad, "defaultErrnoRet")
    machine = platform.machine()
    native, go_arch = _NATIVE.get(machine, (f"SCMP_ARCH_{machine.upper()}", machine))
    rules = []
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise bad("syscalls is not a list")
    for number, entry in enumerate(syscalls):
        where = f"syscalls[{number}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} is not an object")
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise bad(f"{where}: names must be a non-empty list of syscall names")
        action = _action_name(entry.get("action"), bad, f"{where}.action")
        errno = _errno(entry.get("errnoRet"), bad, f"{where}.errnoRet")
        args = tuple(_argument(a, bad, f"{where}.args") for a in (entry.get("args") or []))
        if not _applies(entry, capabilities, go_arch, bad, where):
            continue
        rules.append(_Rule(tuple(names), action, errno if errno is not None else (default_errno if action == "SCMP_ACT_ERRNO" else None), args))
    return _Profile(default_action, default_errno if default_errno is not None else _EPERM, _architectures(data, native, bad), tuple(rules))


def _action_name(value: object, bad: Callable[[str], UsageError], where: str) -> str:
    if value in _SIMPLE_ACTIONS or value in _ACTIONS_WITH_ERRNO:
        return str(value)
    if value == "SCMP_ACT_NOTIFY":
        raise bad(f"{where}: SCMP_ACT_NOTIFY is not supported")
    raise bad(f"{where}: unknown action {value!r}")


def _errno(value: object, bad: Callable[[str], UsageError], where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 4096:
        raise bad(f"{where} must be an errno number")
    return value


def _argument(value: object, bad: Callable[[str], UsageError], where: str) -> tuple[int, str, int, int]:
    if not isinstance(value, dict):
        raise bad(f"{where}: an argument rule is not an object")
    index, op = value.get("index"), value.get("op")
    numbers = [value.get("value", 0), value.get("valueTwo", 0)]
    if not isinstance(index, int) or not 0 <= index < 6:
        raise bad(f"{where}: index must be 0 to 5")
    if op not in _OPERATORS:
        raise bad(f"{where}: unknown operator {op!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 64 for n in numbers):
        raise bad(f"{where}: value and valueTwo must be unsigned 64-bit numbers")
    return index, str(op), numbers[0], numbers[1]


def _applies(entry: dict[str, Any], capabilities: int, go_arch: str, bad: Callable[[str], UsageError], where: str) -> bool:
    """Docker's includes (all must hold) and excludes (none may)."""
    includes, excludes = entry.get("includes") or {}, entry.get("excludes") or {}
    if not isinstance(includes, dict) or not isinstance(excludes, dict):
        raise bad(f"{where}: includes and excludes must be objects")
    for name in ("caps", "arches"):
        for filters in (includes, excludes):
            if not isinstance(filters.get(name) or [], list):
                raise bad(f"{where}: {name} must be a list")
    held = {name for name, bit in CAPABILITY_NUMBERS.items() if capabilities >> bit & 1}
    for cap in (includes.get("caps") or []) + (excludes.get("caps") or []):
        if cap not in CAPABILITY_NUMBERS:
            raise bad(f"{where}: unknown capability {cap!r}")
    if includes.get("arches") and go_arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= held:
        return False
    if includes.get("minKernel") and _kernel_version() < _version(includes["minKernel"], bad, where):
        return False
    if excludes.get("arches") and go_arch in excludes["arches"]:
        return False
    if excludes.get("caps") and set(excludes["caps"]) & held:
        return False
    if excludes.get("minKernel") and _kernel_version() >= _version(excludes["minKernel"], bad, where):
        return False
    return True


def _architectures(data: dict[str, Any], native: str, bad: Callable[[str], UsageError]) -> tuple[str, ...]:
    names: list[str] = []
    if data.get("archMap"):
        for entry in data["archMap"]:
            if isinstance(entry, dict) and entry.get("architecture") == native:
                names = list(entry.get("subArchitectures") or [])
    elif data.get("architectures"):
        names = [a for a in data["architectures"] if a != native]
    if not all(isinstance(n, str) and n.startswith("SCMP_ARCH_") for n in names):
        raise bad("architectures are named SCMP_ARCH_...")
    return tuple(names)


def _version(text: object, bad: Callable[[str], UsageError], where: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split(".")[:2])
    except ValueError:
        raise bad(f"{where}: minKernel {text!r} is not a version like 4.8") from None


@functools.cache
def _kernel_version() -> tuple[int, ...]:
    release = os.uname().release
    parts = []
    for part in release.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


class _FileNo:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


class _memfd:
    def __enter__(self) -> int:
        self.fd = os.memfd_create("pybuild-seccomp", os.MFD_CLOEXEC)
        return self.fd

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)
