"""Platforms as images name them (``linux/arm64``, ``linux/arm/v7``), and
which entry of an index serves a platform.

One rule for the store's indexes and the registry client's: containerd's
normalization (``aarch64`` is ``arm64``, whose default variant is v8; ``arm``
defaults to v7) and its matching (an exact os/architecture/variant first;
with no variant asked, any variant of the architecture; an older 32-bit arm
variant runs on a newer CPU).  Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pybuild.errors import ImageError

Key = tuple[str, str, str]  # (os, architecture, variant), normalized

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm", "i386": "386", "i686": "386"}


def normalize_arch(architecture: str, variant: str) -> tuple[str, str]:
    """containerd's normalization: ``aarch64`` is ``arm64``, whose default
    variant is v8; ``arm`` defaults to v7."""
    architecture = _ARCH_ALIASES.get(architecture.lower(), architecture.lower())
    variant = variant.lower()
    if architecture == "arm64" and variant in ("", "8", "v8"):
        variant = "v8"
    elif architecture == "arm" and variant == "":
        variant = "v7"
    elif architecture == "arm" and variant.isdigit():
        variant = "v" + variant
    return architecture, variant


def platform_key(text: str) -> Key:
    """``linux/arm64`` -> ("linux", "arm64", "v8"); a bare ``arm64`` means linux, as containerd's Parse."""
    parts = text.strip().lower().split("/")
    if len(parts) == 1 and parts[0]:
        parts = ["linux", parts[0]]
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"invalid platform {text!r}", hint="use os/arch[/variant], e.g. linux/amd64")
    architecture, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return parts[0], architecture, variant


def key_text(key: Key) -> str:
    """The usual spelling: ``linux/arm64`` (v8 is arm64's default), ``linux/arm/v7``."""
    os_name, architecture, variant = key
    text = f"{os_name}/{architecture}"
    if variant and not (architecture == "arm64" and variant == "v8"):
        text += f"/{variant}"
    return text


def normalize_platform(text: str) -> str:
    """``linux/aarch64`` -> ``linux/arm64``: the one spelling the store keeps."""
    return key_text(platform_key(text))


def config_platform(config: Mapping[str, Any]) -> str:
    """The platform an image config says it runs on (``linux/arm64``)."""
    architecture, variant = normalize_arch(str(config.get("architecture") or ""), str(config.get("variant") or ""))
    return key_text((str(config.get("os") or "").lower(), architecture, variant))


def platform_json(text: str) -> dict[str, str]:
    """The ``platform`` object of an index entry (OCI image-index: os, architecture, variant)."""
    os_name, architecture, variant = platform_key(text)
    out = {"architecture": architecture, "os": os_name}
    if variant and not (architecture == "arm64" and variant == "v8"):
        out["variant"] = variant  # BuildKit writes no variant for plain arm64
    return out


def host_platform() -> str:
    """The platform this machine runs natively (``linux/amd64``)."""
    import platform  # not at import time: the store loads this module on every run

    machine = platform.machine().lower()
    if machine.startswith("armv") and machine[4:].rstrip("l").isdigit():  # uname's armv7l is arm/v7
        return key_text(("linux", "arm", "v" + machine[4:].rstrip("l")))
    architecture, variant = normalize_arch(machine, "")
    return key_text(("linux", architecture, variant))


def pick_platform(available: Sequence[Key], want: Key) -> int | None:
    """The position in ``available`` of the entry that serves ``want``, as containerd picks it.

    An exact os/architecture/variant match wins; with no variant asked (or
    arm64's default) any variant of the architecture does; for 32-bit arm an
    older variant runs on a newer CPU (v6 on v7), so the newest one that runs
    is taken.  None when none serves it.
    """
    want_os, want_arch, want_variant = want
    candidates = [i for i, (os_name, arch, _v) in enumerate(available) if os_name == want_os and arch == want_arch]
    exact = [i for i in candidates if available[i][2] == want_variant]
    if exact:
        return exact[0]
    if not want_variant and candidates:
        # "linux/amd64" also runs amd64/v2 or v3 builds when no plain one exists.
        return candidates[0]
    if want_arch == "arm" and want_variant[1:].isdigit():
        older = [i for i in candidates if available[i][2][1:].isdigit() and int(available[i][2][1:]) <= int(want_variant[1:])]
        if older:
            return max(older, key=lambda i: int(available[i][2][1:]))
    return None
