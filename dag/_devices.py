"""RUN --device: which CDI devices a step gets, and whether this build may have them.

BuildKit's rule (solver/llbsolver/vertex.go ``ValidateEntitlements``, with
solver/llbsolver/cdidevices/manager.go ``FindDevices``): ``--allow device``
allows every device; otherwise the names a step asks for are resolved against
the CDI specs (an unregistered required one is an error, an optional one is
skipped) and each device found must be granted by ``--allow device=NAME`` or
carry the spec's ``org.mobyproject.buildkit.device.autoallow`` annotation.  A
step whose optional devices are all missing needs no entitlement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pybuild.errors import BuildError

from ._ops import CdiDevice

if TYPE_CHECKING:
    from pybuild.executors import CdiRegistry

DEVICE_ENTITLEMENT = "device"


def is_device_entitlement(entitlement: str) -> bool:
    """``device`` (every device) or ``device=NAME`` (the devices NAME resolves to)."""
    return entitlement == DEVICE_ENTITLEMENT or entitlement.startswith(DEVICE_ENTITLEMENT + "=")


def step_devices(registry: CdiRegistry, devices: Sequence[CdiDevice], entitlements: Iterable[str]) -> tuple[str, ...]:
    """The qualified device names a step gets; raises when one is not registered but
    required, or found but not allowed to this build."""
    found: list[str] = []
    for device in devices:
        found.extend(d for d in registry.resolve(device.name, device.required) if d not in found)
    entitlements = frozenset(entitlements)
    if not found or DEVICE_ENTITLEMENT in entitlements:
        return tuple(found)
    granted: set[str] = set()
    for entitlement in entitlements:
        if entitlement.startswith(DEVICE_ENTITLEMENT + "="):
            granted.update(registry.resolve(entitlement.partition("=")[2], False))
    forbidden = [d for d in found if d not in granted and not registry.auto_allowed(d)]
    if len(forbidden) == 1:
        raise BuildError(f"device {forbidden[0]} is requested by the build but not allowed", hint=_HINT)
    if forbidden:
        raise BuildError(f"devices {', '.join(forbidden)} are requested by the build but not allowed", hint=_HINT)
    return tuple(found)


_HINT = "pass --allow device (or --allow device=NAME) to pybuild build"
