"""Wiring: the real implementations behind the seams, built for one command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild.errors import UsageError

if TYPE_CHECKING:
    from pybuild.cache import Root
    from pybuild.oci import ImageStore


def open_root(path: str | None = None) -> Root:
    from pybuild.cache import Root

    root = Root.open(Path(path) if path else None)
    if root.restored_images:  # a rebuilt index: point the restored images at their snapshots again
        image_store(root).relink(root.restored_images)
    elif root.images_lost:  # rebuilt, with no image records: find what the content store still holds
        _recover_images(root)
    return root


def _recover_images(root: Root) -> None:
    import sys

    found, incomplete = image_store(root).recover_from_blobs()
    if found or incomplete:
        sys.stderr.write(
            f"warning: registered {len(found)} untagged images again from the manifests in the content store"
            f" ({', '.join(i.short_id for i in found) or 'none'}); {incomplete} more had lost layers and are gone\n"
        )


def image_store(root: Root) -> ImageStore:
    from pybuild.oci import ImageStore

    return ImageStore(root)


def executors(root: Root) -> tuple[Any, Any]:  # Any: OnFirstUse stands in for each
    """The RUN executor and the file-operation caller; close both after the build.

    Their state (flattened bottoms of very deep layer chains) lives in this
    process's temp area of the root, which a crash leaves for the next
    process to remove.  Both are made on first use: a build whose every
    step is cached never loads the sandbox code.
    """

    def executor() -> Any:
        from pybuild.executors import SandboxExecutor

        return SandboxExecutor(state_dir=str(root.tmp_dir("executor-")))

    def caller() -> Any:
        from pybuild.executors import NamespaceRootfsCaller

        return NamespaceRootfsCaller(state_dir=str(root.tmp_dir("caller-")))

    return OnFirstUse(executor), OnFirstUse(caller)


class OnFirstUse:
    """Stands in for an object made only when something first uses it;
    closing one that was never made does nothing."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)

    async def aclose(self) -> None:
        if self._made is not None:
            await self._made.aclose()

    def close(self) -> None:
        if self._made is not None:
            self._made.close()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"expected a number, got {text!r}") from None
    if value < 1:
        raise UsageError(f"expected a number of at least 1, got {value}")
    return value


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
