"""CDI (Container Device Interface) specs: what ``RUN --device`` names resolve to.

An administrator describes devices in spec files (CDI's SPEC.md): a ``kind``
(``vendor.com/class``), its ``devices`` (each a ``name`` and ``containerEdits``)
and ``containerEdits`` shared by all of them.  pybuild reads the JSON specs
(``*.json``; YAML needs PyYAML, which pybuild does not depend on) in BuildKit's
directories, or in the ``:``-separated list of ``PYBUILD_CDI_SPEC_DIRS``; a later
directory's device replaces an earlier one's of the same name, as in CDI's cache.

Names resolve as BuildKit's ``cdidevices.Manager.parseDevice``: ``kind=name``
the device, ``kind`` the kind's first device, ``kind=*`` all of them, and an
unknown name the devices whose ``org.mobyproject.buildkit.device.class``
annotation is that name.  Of the edits, ``env``, ``deviceNodes`` (made under
the sandbox's /dev) and bind ``mounts`` are applied; a spec with ``hooks`` or
any other edit is refused, because pybuild does not run OCI hooks and a device
left half set up would fail later and less clearly.  Only what a spec names is
ever taken from the host: a Dockerfile says a device name, never a path.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pybuild.errors import BuildError

from ._spec import BindMount, DeviceNode

SPEC_DIRS = ("/etc/buildkit/cdi", "/etc/cdi", "/var/run/cdi")
SPEC_DIRS_ENV = "PYBUILD_CDI_SPEC_DIRS"
AUTO_ALLOW = "org.mobyproject.buildkit.device.autoallow"
CLASS_ANNOTATION = "org.mobyproject.buildkit.device.class"
_MAX_SPEC = 4 << 20
_EDITS = frozenset({"env", "deviceNodes", "mounts"})
# the sandbox's own /dev entries, which a spec may not replace
_RESERVED = ("/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
             "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")


class CdiError(BuildError):
    reference = "cdi"


@dataclass(frozen=True)
class CdiEdits:
    """What the resolved devices add to a step."""

    env: tuple[str, ...] = ()
    nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[BindMount, ...] = ()


@dataclass(frozen=True)
class _Device:
    name: str  # qualified: vendor.com/class=name
    file: str
    annotations: Mapping[str, str]
    edits: Mapping[str, Any]
    spec_edits: Mapping[str, Any]


def spec_dirs() -> tuple[str, ...]:
    configured = os.environ.get(SPEC_DIRS_ENV)
    if configured is None:
        return SPEC_DIRS
    return tuple(d for d in configured.split(":") if d)


class CdiRegistry:
    """The devices of the spec files in ``dirs`` (read once, when a build first asks)."""

    def __init__(self, dirs: Iterable[str]) -> None:
        self.dirs = tuple(dirs)
        self.devices: dict[str, _Device] = {}
        for directory in self.dirs:
            try:
                names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise CdiError(f"cannot read the CDI spec directory {directory}: {e.strerror}") from None
            for name in names:
                for device in _read_spec(os.path.join(directory, name)):
                    self.devices.pop(device.name, None)  # the later directory's wins
                    self.devices[device.name] = device

    def resolve(self, name: str, required: bool) -> tuple[str, ...]:
        """The qualified names ``name`` stands for; none for an optional unregistered one."""
        kind, has_name, device = name.partition("=")
        of_kind = [d for d in self.devices if d.partition("=")[0] == kind]
        if not has_name or not device:
            found = of_kind[:1]
        elif device == "*":
            found = of_kind
        elif name in self.devices:
            found = [name]
        else:
            found = [d for d in of_kind if self.devices[d].annotations.get(CLASS_ANNOTATION) == device]
        if not found and required:
            raise CdiError(
                f"required device {name!r} is not registered",
                hint=f"pybuild reads CDI specs (*.json) in {':'.join(self.dirs) or 'no directory'} ({SPEC_DIRS_ENV})",
            )
        return tuple(found)

    def auto_allowed(self, name: str) -> bool:
        """A spec may allow its device to every build (BuildKit's autoallow annotation)."""
        value = self.devices[name].annotations.get(AUTO_ALLOW, "")
        return value.lower() in ("1", "t", "true")

    def edits(self, names: Iterable[str]) -> CdiEdits:
        """The edits of ``names`` in CDI's order: a spec's own the first time it is met, then the device's."""
        env: list[str] = []
        nodes: list[DeviceNode] = []
        mounts: list[BindMount] = []
        seen_specs: set[str] = set()
        for name in names:
            device = self.devices[name]
            layers = [device.edits]
            if device.file not in seen_specs:
                seen_specs.add(device.file)
                layers.insert(0, device.spec_edits)
            for edits in layers:
                env.extend(_env(edits, device))
                nodes.extend(_node(entry, device) for entry in _list(edits, "deviceNodes", device))
                mounts.extend(_mount(entry, device) for entry in _list(edits, "mounts", device))
        return CdiEdits(tuple(env), tuple(nodes), tuple(mounts))


def load_cdi_registry(dirs: Iterable[str] | None = None) -> CdiRegistry:
    return CdiRegistry(spec_dirs() if dirs is None else dirs)


# ---------------------------------------------------------------- spec files


def _read_spec(path: str) -> list[_Device]:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SPEC + 1)
    except OSError as e:
        raise CdiError(f"cannot read the CDI spec {path}: {e.strerror}") from None
    if len(data) > _MAX_SPEC:
        raise CdiError(f"invalid CDI spec {path}: larger than {_MAX_SPEC} bytes")
    try:
        spec = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CdiError(f"invalid CDI spec {path}: not JSON ({e})") from None
    if not isinstance(spec, dict):
        raise CdiError(f"invalid CDI spec {path}: not a JSON object")
    kind = spec.get("kind")
    if not isinstance(kind, str) or "/" not in kind or "=" in kind:
        raise CdiError(f"invalid CDI spec {path}: 'kind' must be vendor.com/class")
    devices = spec.get("devices")
    if not isinstance(devices, list) or not devices:
        raise CdiError(f"invalid CDI spec {path}: 'devices' must be a non-empty list")
    spec_annotations = _strings(spec.get("annotations"), path, "annotations")
    spec_edits = _edits(spec.get("containerEdits"), path)
    out = []
    for entry in devices:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or "=" in name or "/" in name:
            raise CdiError(f"invalid CDI spec {path}: a device has no valid 'name'")
        annotations = {**spec_annotations, **_strings(entry.get("annotations"), path, "annotations")}
        edits = _edits(entry.get("containerEdits"), path)
        out.append(_Device(f"{kind}={name}", path, annotations, edits, spec_edits))
    return out


def _strings(value: object, path: str, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CdiError(f"invalid CDI spec {path}: '{what}' must be an object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _edits(value: object, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CdiError(f"invalid CDI spec {path}: 'containerEdits' must be an object")
    unsupported = sorted(k for k, v in value.items() if k not in _EDITS and v)
    if unsupported:
        raise CdiError(
            f"CDI spec {path} asks for containerEdits {', '.join(unsupported)}, which pybuild does not apply",
            hint="pybuild applies env, deviceNodes and bind mounts; it runs no OCI hooks",
        )
    return value


def _list(edits: Mapping[str, Any], key: str, device: _Device) -> list[Mapping[str, Any]]:
    value = edits.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise CdiError(f"invalid CDI spec {device.file}: '{key}' of {device.name} must be a list of objects")
    return value


def _env(edits: Mapping[str, Any], device: _Device) -> list[str]:
    value = edits.get("env") or []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v and "\0" not in v for v in value):
        raise CdiError(f"invalid CDI spec {device.file}: 'env' of {device.name} must be a list of NAME=value")
    return value


def _bad(device: _Device, message: str) -> CdiError:
    return CdiError(f"invalid CDI spec {device.file}: {device.name}: {message}")


def _absolute(value: object, device: _Device, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise _bad(device, f"{what} must be an absolute path")
    return posixpath.normpath(value)


def _number(entry: Mapping[str, Any], key: str, device: _Device, default: int | None) -> int | None:
    value = entry.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise _bad(device, f"'{key}' must be a non-negative integer")
    return value


def _node(entry: Mapping[str, Any], device: _Device) -> DeviceNode:
    """A ``deviceNodes`` entry, with what it leaves out read from the host's node (as CDI does)."""
    path = _absolute(entry.get("path"), device, "a device node's path")
    if not path.startswith("/dev/") or any(path == r or path.startswith(r + "/") for r in _RESERVED):
        raise _bad(device, f"device node {path} must be under /dev, beside the sandbox's own nodes")
    host_path = _absolute(entry.get("hostPath", path), device, "a device node's hostPath")
    kind = entry.get("type")
    major, minor = _number(entry, "major", device, None), _number(entry, "minor", device, None)
    mode = _number(entry, "fileMode", device, None)
    if kind is None or major is None or minor is None or mode is None:
        try:
            st = os.stat(host_path)
        except OSError as e:
            if kind is None or major is None or minor is None:
                raise _bad(device, f"device node {host_path} on the host: {e.strerror}") from None
        else:
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise _bad(device, f"{host_path} on the host is not a device node")
            kind = kind if kind is not None else ("c" if stat.S_ISCHR(st.st_mode) else "b")
            major = major if major is not None else os.major(st.st_rdev)
            minor = minor if minor is not None else os.minor(st.st_rdev)
            mode = mode if mode is not None else stat.S_IMODE(st.st_mode)
    kind = "c" if kind == "u" else kind
    if kind not in ("c", "b"):
        raise _bad(device, f"device node {path} has type {kind!r}; pybuild makes c and b nodes")
    permissions = entry.get("permissions") or "rwm"
    if not isinstance(permissions, str) or not set(permissions) <= set("rwm"):
        raise _bad(device, f"device node {path} has permissions {permissions!r} (a subset of rwm)")
    assert major is not None and minor is not None
    return DeviceNode(
        path, kind, major, minor, permissions,
        file_mode=(mode if mode is not None else 0o666) & 0o7777,
        uid=_number(entry, "uid", device, 0) or 0,
        gid=_number(entry, "gid", device, 0) or 0,
        host_path=host_path,
    )


def _mount(entry: Mapping[str, Any], device: _Device) -> BindMount:
    """A bind mount of a host path the spec names; read-only when its options say ``ro``."""
    options = entry.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise _bad(device, "a mount's options must be a list of strings")
    kind = entry.get("type") or ""
    if not (kind in ("bind", "rbind") or (kind == "" and {"bind", "rbind"} & set(options))):
        raise _bad(device, "pybuild applies bind mounts only (type bind, or options bind/rbind)")
    source = _absolute(entry.get("hostPath"), device, "a mount's hostPath")
    target = _absolute(entry.get("containerPath"), device, "a mount's containerPath")
    if not os.path.exists(source):
        raise _bad(device, f"mount source {source} does not exist on the host")
    return BindMount(source=os.path.realpath(source), target=target, readonly="ro" in options)
