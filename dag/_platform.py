"""Platforms: the build's (the host's) and the targets' (``--platform``), and the
predefined ARGs that name them, as BuildKit and containerd's platforms package."""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping

from .._frozen import frozen

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


@frozen
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
            return cls("linux", arch, variant).normalized()
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        arch, default_variant = _ARCH.get(parts[1], (parts[1], ""))
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else default_variant).normalized()

    @classmethod
    def parse_list(cls, text: str) -> tuple[Platform, ...]:
        """``--platform a,b``: each platform once, in the order given; ``local`` is
        the host's (buildx's platformutil.Parse)."""
        out: list[Platform] = []
        for word in text.split(","):
            if not word.strip():
                raise ValueError(f"invalid platform list {text!r}: an empty entry")
            platform = host_platform() if word.strip().lower() == "local" else cls.parse(word)
            if platform not in out:
                out.append(platform)
        return tuple(out)

    def normalized(self) -> Platform:
        """containerd's platforms.Normalize: arm64's v8 is no variant, arm alone is v7."""
        if self.architecture == "arm64" and self.variant == "v8":
            return Platform(self.os, self.architecture)
        if self.architecture == "arm" and not self.variant:
            return Platform(self.os, self.architecture, "v7")
        return self

    def relative_to(self, base: Platform) -> str:
        """BuildKit's formatTargetPlatform: how progress names a step that runs on
        ``base`` for this target (``->arm64``), or "" when they agree."""
        if self.os != base.os:
            return f"->{self}"
        if self.architecture != base.architecture:
            return "->" + (f"{self.architecture}/{self.variant}" if self.variant else self.architecture)
        return ""


def host_platform() -> Platform:
    arch, variant = _ARCH.get(_platform.machine().lower(), (_platform.machine().lower(), ""))
    return Platform("linux", arch, variant)


def target_in_env(env: Mapping[str, str]) -> Platform | None:
    """The target platform a step's environment names (BuildKit's platformFromEnv:
    TARGETPLATFORM, else TARGETOS/TARGETARCH/TARGETVARIANT), if any."""
    if env.get("TARGETPLATFORM"):
        try:
            return Platform.parse(env["TARGETPLATFORM"])
        except ValueError:
            pass
    if not any(key in env for key in ("TARGETOS", "TARGETARCH", "TARGETVARIANT")):
        return None
    return Platform(env.get("TARGETOS", ""), env.get("TARGETARCH", ""), env.get("TARGETVARIANT", ""))


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
