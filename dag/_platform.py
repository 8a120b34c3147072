"""The build and target platform: the host's, for now."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) == 1:
            # "amd64" alone means linux/amd64, as containerd's platforms.Parse
            arch, variant = _ARCH.get(parts[0], (parts[0], ""))
            return cls("linux", arch, variant)
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        arch, default_variant = _ARCH.get(parts[1], (parts[1], ""))
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else default_variant)


def host_platform() -> Platform:
    arch, variant = _ARCH.get(_platform.machine().lower(), (_platform.machine().lower(), ""))
    return Platform("linux", arch, variant)


def platform_args(build: Platform, target: Platform) -> dict[str, str]:
    """The predefined platform ARGs BuildKit sets for every build."""
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
    }
