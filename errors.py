"""Errors pybuild shows to its users.

Every error a user can cause or meet is a ``PybuildError``: it renders as one
line (``FILE:LINE: message``) plus an optional hint, and carries a stable
``reference`` that tests and documentation can name.  Foreign exceptions
(lark, httpx, OSError from mount(2), zstandard ...) are translated into these at
the edge of the package that uses the foreign library.

    PybuildError
    ├── UsageError                 bad command line (exit code 2)
    ├── DockerfileError            the Dockerfile is wrong; carries a Location
    │   ├── DockerfileSyntaxError  it does not parse
    │   └── ExpansionError         ${VAR:?message} and malformed substitutions
    ├── BuildError                 the build ran and failed (exit code 1)
    │   ├── StepFailed             a RUN exited non-zero; carries exit code and output tail
    │   └── SandboxError           the sandbox could not be set up
    ├── ContextError               the build context cannot be read as asked
    ├── StoreError                 the pybuild root is unusable or its data corrupt
    │   └── CorruptContent         a blob or snapshot does not match its digest
    ├── ImageError                 an image reference or archive is wrong
    │   └── NotFound               no such image, tag, container or blob
    ├── RegistryError              a registry refused or failed a request
    └── ContainerError             a container is in the wrong state, or its name is taken
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BuildError",
    "ContextError",
    "ContainerError",
    "CorruptContent",
    "DockerfileError",
    "DockerfileSyntaxError",
    "ExpansionError",
    "ImageError",
    "Location",
    "NotFound",
    "PybuildError",
    "RegistryError",
    "SandboxError",
    "StepFailed",
    "StoreError",
    "UsageError",
    "shortened",
]


@dataclass(frozen=True)
class Location:
    """Where in a Dockerfile something is: a file name and 1-based lines."""

    file: str
    start_line: int
    end_line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.start_line}"


def shortened(text: str, limit: int = 160) -> str:
    """``text`` cut in its middle to at most ``limit`` characters, so an error stays one readable line
    (a 4 KiB path or a long instruction is named by its start and its end)."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[: limit - tail - 1]}…{text[-tail:]}"


class PybuildError(Exception):
    """Base of every error meant for a user; ``str()`` is the one-line message."""

    reference = "pybuild-error"
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: Location | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location
        self.excerpt = excerpt

    def __str__(self) -> str:
        if self.location is not None:
            return f"{self.location}: {self.message}"
        return self.message

    def render(self) -> str:
        """The text shown to a user: the line, then an excerpt and a hint if any."""
        lines = [f"error: {self}"]
        if self.excerpt:
            lines.extend(f"  | {line}" for line in self.excerpt.splitlines()[:3])
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class UsageError(PybuildError):
    reference = "usage"
    exit_code = 2


class DockerfileError(PybuildError):
    reference = "dockerfile"


class DockerfileSyntaxError(DockerfileError):
    reference = "dockerfile-syntax"


class ExpansionError(DockerfileError):
    reference = "dockerfile-expansion"


class BuildError(PybuildError):
    reference = "build-failed"


class StepFailed(BuildError):
    reference = "run-exit-nonzero"

    def __init__(
        self,
        message: str,
        *,
        exit_code: int,
        output_tail: str = "",
        hint: str | None = None,
        location: Location | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, location=location, excerpt=excerpt)
        self.step_exit_code = exit_code
        self.output_tail = output_tail

    def render(self) -> str:
        text = super().render()
        lines = [line for line in self.output_tail.splitlines() if line.strip()][-10:]
        if lines:
            text += "\nlast output of the step:\n" + "\n".join(f"  > {line}" for line in lines)
        return text


class SandboxError(BuildError):
    reference = "sandbox"


class ContextError(PybuildError):
    reference = "context"


class StoreError(PybuildError):
    reference = "store"


class CorruptContent(StoreError):
    reference = "corrupt-content"


class ImageError(PybuildError):
    reference = "image"


class NotFound(ImageError):
    reference = "not-found"


class RegistryError(PybuildError):
    reference = "registry"


class ContainerError(PybuildError):
    """A container command cannot do what was asked (name in use, not running ...)."""

    reference = "container"
