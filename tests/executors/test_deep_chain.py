"""Chains longer than overlay's 500 layers: flattened at the bottom, deletions kept right."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.executors import NamespaceRootfsCaller

from .conftest import RootfsFactory
from .test_sandbox import sh

pytestmark = pytest.mark.root

LAYERS = 1000


@pytest.fixture(scope="module")
def deep_chain(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> tuple[str, ...]:
    """1,000 layers over busybox (top first), with deletions that cross every split."""
    if os.geteuid() != 0:
        pytest.skip("needs root (whiteouts are device nodes)")
    base = tmp_path_factory.mktemp("deep")
    layers = []
    for i in range(LAYERS):  # bottom-up
        layer = base / f"l{i:04d}"
        layer.mkdir()
        (layer / f"f{i}").write_text(f"{i}\n")
        layers.append(layer)
    # Layer 100 adds files; a layer in the same flattened prefix, one in a later
    # prefix chunk and one mounted directly delete them.
    (layers[100] / "data").mkdir()
    for name in ("gone-in-chunk", "gone-across-chunks", "gone-on-top", "kept"):
        (layers[100] / "data" / name).write_text("old\n")
    (layers[120] / "data").mkdir()
    os.mknod(layers[120] / "data" / "gone-in-chunk", 0o600 | 0o020000, 0)
    (layers[600] / "data").mkdir()
    os.mknod(layers[600] / "data" / "gone-across-chunks", 0o600 | 0o020000, 0)
    (layers[990] / "data").mkdir()
    os.mknod(layers[990] / "data" / "gone-on-top", 0o600 | 0o020000, 0)
    # Near the top (for the 100-layer sub-chain below): a deletion across its split.
    (layers[905] / "top").mkdir()
    (layers[905] / "top" / "x").write_text("x")
    (layers[905] / "top" / "y").write_text("y")
    (layers[998] / "top").mkdir()
    os.mknod(layers[998] / "top" / "x", 0o600 | 0o020000, 0)
    # An opaque directory on top hides what the bottom put there.
    (layers[50] / "opaque").mkdir()
    (layers[50] / "opaque" / "hidden").write_text("x")
    (layers[995] / "opaque").mkdir()
    os.setxattr(layers[995] / "opaque", "trusted.overlay.opaque", b"y")
    (layers[995] / "opaque" / "visible").write_text("x")
    return tuple(str(p) for p in reversed(layers)) + (str(busybox_rootfs),)


async def test_run_on_a_1000_layer_chain(executor, tmp_path, deep_chain) -> None:
    make = RootfsFactory(tmp_path / "steps", deep_chain)
    script = "cat /f0 /f499 /f500 /f999; ls /data; ls /opaque; echo new > /f0"
    result, out, err = await sh(executor, make(), script)
    assert out.split() == ["0", "499", "500", "999", "kept", "visible"], err
    # Again: the flattened prefix is reused, not rebuilt.
    private = Path(executor._state)
    flattened = sorted(os.listdir(private / "flat"))
    rootfs = make()
    result, out, _ = await sh(executor, rootfs, "cat /f0; ls /data")
    assert out.split() == ["0", "kept"]
    assert sorted(os.listdir(private / "flat")) == flattened and len(flattened) == 3
    assert os.listdir(rootfs.upper) == []


async def test_rootfs_caller_on_a_1000_layer_chain(tmp_path, deep_chain, require_root) -> None:
    make = RootfsFactory(tmp_path / "steps", deep_chain)
    caller = NamespaceRootfsCaller(state_dir=str(tmp_path))
    try:
        names = await caller.call(make(), [], lambda root: sorted(os.listdir(os.path.join(root, "data"))))
    finally:
        caller.close()
    assert names == ["kept"]


async def test_kernels_without_lowerdir_plus_use_one_page_of_options(tmp_path, deep_chain, require_root, monkeypatch) -> None:
    # Linux < 6.8: overlay layers go through mount(2) as one "lowerdir=a:b:c" page,
    # so even 100 layers need flattening.  The caller mounts in this process, where
    # the kernel feature probe can be overridden.
    from pybuild.executors import _overlay

    monkeypatch.setattr(_overlay, "_LOWERDIR_PLUS", False)
    chain = deep_chain[:100] + deep_chain[-1:]  # layers 900-999 over busybox
    assert _overlay.legacy_max_lowers(chain) < len(chain)
    make = RootfsFactory(tmp_path / "steps", chain)
    caller = NamespaceRootfsCaller(state_dir=str(tmp_path))

    def look(root: str) -> tuple[bool, bool, bool, list[str]]:
        return (
            os.path.exists(os.path.join(root, "f999")),
            os.path.exists(os.path.join(root, "f900")),
            os.path.exists(os.path.join(root, "f899")),
            sorted(os.listdir(os.path.join(root, "top"))),
        )

    try:
        assert await caller.call(make(), [], look) == (True, True, False, ["y"])
    finally:
        caller.close()
