"""The build's export stage writes every --output itself (cli only reports),
and leaves in a registry no layer it was not asked to."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import trio

from pybuild.cache import Root
from pybuild.dag import BuildOptions, ExportOptions, StoreImageChains, Worker, build
from pybuild.dag._build import push_registries
from pybuild.executors import FakeExecutor, FakeRootfsCaller
from pybuild.grammar import parse
from pybuild.oci import ImageStore, SnapshotLayers, parse_outputs


def _build(root: Root, outputs: tuple, tags: tuple[str, ...] = ("app:1",)):  # type: ignore[no-untyped-def, type-arg]
    store = ImageStore(root)

    def make_runner(plan):  # type: ignore[no-untyped-def]
        return Worker(
            plan.definition, root=root, executor=FakeExecutor(), files=FakeRootfsCaller(),
            images=StoreImageChains(store), layers=SnapshotLayers(store),
        )

    dockerfile = parse(b"FROM scratch\nLABEL purpose=test\n", "Dockerfile")
    export = ExportOptions(tags=tags, outputs=outputs)
    outcome = trio.run(lambda: build(dockerfile, BuildOptions(), store=store, make_runner=make_runner, export=export))
    return store, outcome


def test_the_build_writes_an_archive_output_itself(tmp_path: Path) -> None:
    root = Root.open(tmp_path / "root")
    try:
        dest = tmp_path / "image.tar"
        store, outcome = _build(root, parse_outputs([f"type=oci,dest={dest}"]))
        assert [result.output.type for result in outcome.outputs] == ["oci"]
        with tarfile.open(dest) as archive:
            index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["digest"] == outcome.image.manifest_digest
        assert store.get("app:1").id == outcome.image.id
    finally:
        root.close()


def test_the_image_store_alone_is_no_extra_output(tmp_path: Path) -> None:
    root = Root.open(tmp_path / "root")
    try:
        _, outcome = _build(root, parse_outputs([]))
        assert outcome.outputs == () and outcome.image is not None
    finally:
        root.close()


def test_layers_stay_in_a_registry_only_when_every_output_pushes_there() -> None:
    pushing = ExportOptions(tags=("registry.test:5000/app:1",), outputs=parse_outputs([], push=True))
    assert push_registries(pushing) == frozenset({"registry.test:5000"})
    also_archive = ExportOptions(tags=("registry.test:5000/app:1",), outputs=parse_outputs(["type=tar,dest=x.tar"], push=True))
    assert push_registries(also_archive) == frozenset()
    assert push_registries(ExportOptions(tags=("registry.test:5000/app:1",), outputs=parse_outputs([]))) == frozenset()
