"""Pieces of the dag tests that build on a fake executor: the host and one other platform, a
one-file base image tagged ``base``, and the local runner factory of such a build."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from typing import Any

from pybuild.cache import Root
from pybuild.dag import Platform, StoreImageChains, Worker, host_platform
from pybuild.executors import FakeExecutor, FakeRootfsCaller
from pybuild.oci import ImageStore, SnapshotLayers

HOST = host_platform()
OTHER = Platform("linux", "arm64") if HOST.architecture != "arm64" else Platform("linux", "amd64")


def import_base(store: ImageStore, platform: Platform) -> None:
    """A one-file base image for ``platform``, tagged ``base``."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"os\n"))
    data.seek(0)
    store.import_tarball(data, ["base:latest"], architecture=platform.architecture, variant=platform.variant)


def fake_runners(root: Root, store: ImageStore, executor: FakeExecutor) -> Callable[[Any], Worker]:
    """``make_runner`` for ``dag.build``: a Worker on ``root`` whose steps ``executor`` records."""

    def make_runner(plan: Any) -> Worker:
        return Worker(
            plan.definition, root=root, executor=executor, files=FakeRootfsCaller(),
            images=StoreImageChains(store), layers=SnapshotLayers(store),
        )

    return make_runner
