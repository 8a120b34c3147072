"""The build's export stage writes every --output itself (cli only reports),
and leaves in a registry no layer it was not asked to."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import trio

from pybuild.cache import Root
from pybuild.dag import BuildOptions, ExportOptions, StoreImageChains, Worker, build
from pybuild.dag._build import _filesystem_chain, plan_build, push_registries
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


class _CountedLayers(SnapshotLayers):
    """The store's layers, each call noted with the diffID it answered."""

    def __init__(self, store: ImageStore) -> None:
        super().__init__(store)
        self.calls: list[tuple[str, str]] = []

    def layer(self, snapshot, compression, level=None, *, mtime=None):  # type: ignore[no-untyped-def, override]
        made = super().layer(snapshot, compression, level, mtime=mtime)
        self.calls.append((snapshot, made.diff_id))
        return made


CHAIN = b"FROM scratch\nWORKDIR /one\nWORKDIR /one/two\n"
TWO_STAGES = b"FROM scratch AS other\nWORKDIR /other\nWORKDIR /other/x\nFROM other AS mid\nWORKDIR /mid\nFROM scratch\nWORKDIR /one\nCOPY --from=mid /mid /copied\n"


def _build_counted(root: Root) -> tuple[_CountedLayers, object]:
    store = ImageStore(root)
    layers = _CountedLayers(store)

    def make_runner(plan):  # type: ignore[no-untyped-def]
        return Worker(
            plan.definition, root=root, executor=FakeExecutor(), files=FakeRootfsCaller(),
            images=StoreImageChains(store), layers=layers,
        )

    dockerfile = parse(CHAIN, "Dockerfile")
    outcome = trio.run(lambda: build(dockerfile, BuildOptions(), store=store, make_runner=make_runner, export=ExportOptions(tags=("two:1",))))
    return layers, outcome


def test_the_image_layers_get_their_diff_ids_while_the_build_runs_and_the_export_reuses_them(tmp_path: Path) -> None:
    root = Root.open(tmp_path / "root")
    try:
        layers, outcome = _build_counted(root)
        diff_ids = outcome.config["rootfs"]["diff_ids"]  # type: ignore[attr-defined]
        assert len(diff_ids) == 2
        early, at_export = layers.calls[:2], layers.calls[2:]
        assert [d for _, d in at_export] == diff_ids  # the export: every layer of the image, bottom first
        assert sorted(early) == sorted(at_export)  # each made once before, the same answers
        layers, _ = _build_counted(root)  # everything cached: nothing to make early
        assert [d for _, d in layers.calls] == diff_ids
    finally:
        root.close()


def test_only_the_ops_whose_layers_the_image_holds_are_made_early(tmp_path: Path) -> None:
    root = Root.open(tmp_path / "root")
    try:
        plan = trio.run(lambda: plan_build(parse(TWO_STAGES, "Dockerfile"), BuildOptions(), ImageStore(root), None))
        chain = _filesystem_chain(plan.definition, plan.target.op)
        stages = {plan.definition.meta[d].stage for d in chain}
        assert plan.target.op in chain and len(chain) >= 2  # the COPY and the WORKDIR below it
        assert not stages & {"other", "mid"}  # a COPY --from stage is an input, not a layer of the image
        everything = set(plan.definition.ops)
        assert {plan.definition.meta[d].stage for d in everything - chain} >= {"other", "mid"}
    finally:
        root.close()
