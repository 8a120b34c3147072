"""Files a build writes where the user says (--iidfile, --metadata-file): written through, never replaced."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from pybuild.cli._build import _report
from pybuild.errors import UsageError

IMAGE_ID = "sha256:" + "a" * 64


def _write(iidfile: Path | None = None, metadata_file: Path | None = None) -> None:
    image = SimpleNamespace(id=IMAGE_ID, manifest_digest="sha256:" + "b" * 64, tags=("app:1",))
    args = argparse.Namespace(iidfile=iidfile and str(iidfile), metadata_file=metadata_file and str(metadata_file), quiet=True, tag=[])
    _report(args, SimpleNamespace(image=image, outputs=[], index=None, images=()), to_stdout=True)


def test_an_iidfile_and_a_metadata_file_behind_symlinks_write_their_targets(tmp_path: Path) -> None:
    os.symlink("iid.txt", tmp_path / "iid-link")
    os.symlink("meta.json", tmp_path / "meta-link")
    (tmp_path / "meta.json").write_text("old\n")
    _write(tmp_path / "iid-link", tmp_path / "meta-link")
    assert os.readlink(tmp_path / "iid-link") == "iid.txt" and os.readlink(tmp_path / "meta-link") == "meta.json"
    assert (tmp_path / "iid.txt").read_text() == IMAGE_ID
    assert json.loads((tmp_path / "meta.json").read_text())["containerimage.config.digest"] == IMAGE_ID
    assert sorted(os.listdir(tmp_path)) == ["iid-link", "iid.txt", "meta-link", "meta.json"]


def test_an_iidfile_that_is_a_device_stays_a_device(tmp_path: Path, require_root: None) -> None:
    null = tmp_path / "null"  # this test's own /dev/null
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _write(iidfile=null, metadata_file=null)
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_an_iidfile_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        _write(iidfile=tmp_path)
    with pytest.raises(UsageError, match="No such file"):
        _write(metadata_file=tmp_path / "missing" / "meta.json")
