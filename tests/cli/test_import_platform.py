"""``pybuild import --platform``: a root filesystem becomes a foreign base, its config naming
the platform; without the flag the image is exactly today's (same config, same ID)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pybuild.cli._runtime import image_store, open_root
from pybuild.cli.main import main


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config's ``created`` is the import's time: the same for every import here, so IDs compare."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)


def config_of(root: Path, name: str) -> dict[str, object]:
    return dict(image_store(open_root(str(root))).get(name).config)


def test_import_platform_sets_os_architecture_and_variant(
    tmp_path: Path, busybox_tar: Path, require_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """As ``docker import --platform`` (moby daemon/images/image_import.go: the config's OS,
    Architecture and Variant come from the platform given)."""
    root = tmp_path / "root"
    assert main(["import", "--root", str(root), "--platform", "linux/arm64", str(busybox_tar), "arm64-busybox"]) == 0
    config = config_of(root, "arm64-busybox")
    assert (config["os"], config["architecture"]) == ("linux", "arm64") and "variant" not in config
    assert main(["import", "--root", str(root), "--platform", "linux/arm/v7", str(busybox_tar), "armv7-busybox"]) == 0
    config = config_of(root, "armv7-busybox")
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm", "v7")
    assert image_store(open_root(str(root))).get("armv7-busybox").platform == "linux/arm/v7"


def test_import_without_platform_is_today_s_image(
    tmp_path: Path, busybox_tar: Path, require_root: None, frozen_clock: None, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    store = image_store(open_root(str(root)))
    with busybox_tar.open("rb") as stream:
        today = store.import_tarball(stream, ["today"])  # what import called before --platform
    assert main(["import", "--root", str(root), str(busybox_tar), "plain"]) == 0
    assert main(["import", "--root", str(root), "--platform", "linux/amd64", str(busybox_tar), "explicit"]) == 0
    assert store.get("plain").id == today.id == store.get("explicit").id
    assert "variant" not in config_of(root, "plain")


def test_a_malformed_platform_is_a_usage_error_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert main(["import", "--root", str(root), "--platform", "linux//", str(tmp_path / "absent.tar"), "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --platform: invalid platform 'linux//'") and "Traceback" not in err
    assert not root.exists()
