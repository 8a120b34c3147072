"""The image's final filesystem: into a directory (``type=local``) or as a tar (``type=tar``).

The layers are merged by ``flatten_into`` into a fresh directory of the
pybuild root's temp area, never straight into the user's directory:

- ``export_local`` then moves the result into ``dest`` as BuildKit's local
  exporter leaves it: entries of the image replace entries of the same
  name, directories merge, other files in ``dest`` stay.  ``dest`` itself
  may be a symlink to a directory (followed once), but ``export_local``
  only descends into real directories of ``dest`` (never through a symlink
  found there), so nothing is written outside ``dest``.
- ``export_tar`` writes the merged tree as one deterministic tar (the layer
  tar writer over a tree without whiteouts).  Files are hard-linked from
  the snapshots rather than copied: the tree is read once and removed.

Several platforms' images (a multi-platform build) go one directory each,
named as BuildKit's local and tar exporters name them with platform-split
(``linux/arm/v7`` -> ``linux_arm_v7/``; moby/buildkit exporter/local/export.go).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

import re
from collections.abc import Sequence

from pybuild.errors import ImageError, StoreError

from ._layers import write_layer
from ._store import ImageStore, StoredImage
from ._tar_flatten import FlattenStats, flatten_into


def _merged(store: ImageStore, image: StoredImage, *, hardlink_files: bool) -> tuple[Path, FlattenStats]:
    snapshots = store.snapshots_for(image)
    trees = [store.root.snapshots.tree(s) for s in snapshots]
    work = store.root.tmp_dir("export-")
    merged = work / "rootfs"
    stats = flatten_into(trees, merged, hardlink_files=hardlink_files)
    return merged, stats


def export_local(store: ImageStore, image: StoredImage, dest: Path) -> FlattenStats:
    """Write the image's filesystem into the directory ``dest`` (made if missing)."""
    dest = Path(dest)
    try:
        if dest.is_symlink():
            dest = Path(os.path.realpath(dest))  # the user's own link, followed once; none inside dest is
        if dest.exists() and not dest.is_dir():
            raise StoreError(f"cannot export to {dest}: it is not a directory", hint="name a directory for type=local")
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot export to {dest}: {error.strerror}", hint="check the path and permissions") from None
    merged, stats = _merged(store, image, hardlink_files=False)
    try:
        same_device = os.stat(merged).st_dev == os.stat(dest).st_dev
        if same_device and not any(os.scandir(dest)):
            _move_children(merged, dest)  # renames: no second copy of the data
        else:
            _merge_into(merged, dest, same_device)
    except OSError as error:
        where = error.filename or dest
        raise StoreError(f"cannot export to {dest}: {where}: {error.strerror}", hint="check the disk space and permissions") from None
    finally:
        shutil.rmtree(merged.parent, ignore_errors=True)
    return stats


def platform_dir(platform: str) -> str:
    """The directory of one platform's files: ``linux/arm64`` -> ``linux_arm64``.

    The platform comes from an image config, so it is checked to make one
    plain name (no ``/``, ``..`` or control character can reach the path).
    """
    name = platform.replace("/", "_")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ImageError(f"cannot name a directory after the platform {platform!r}", hint="the image config's os/architecture/variant are malformed")
    return name


def export_local_platforms(store: ImageStore, images: Sequence[tuple[str, StoredImage]], dest: Path) -> None:
    """Each (platform, image)'s filesystem into ``dest/<os>_<arch>[_<variant>]/``."""
    names = [platform_dir(platform) for platform, _ in images]  # all checked before anything is written
    dest = Path(dest)
    if dest.is_symlink():
        dest = Path(os.path.realpath(dest))  # the user's own link, followed once; none inside dest is
    for name, (_, image) in zip(names, images):
        sub = dest / name
        try:
            if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
                os.unlink(sub)  # replaced, as an entry of the image replaces one in dest
        except OSError as error:
            raise StoreError(f"cannot export to {sub}: {error.strerror}", hint="check the path and permissions") from None
        export_local(store, image, sub)


def export_tar_platforms(store: ImageStore, images: Sequence[tuple[str, StoredImage]], out: BinaryIO) -> None:
    """One tar holding each (platform, image)'s filesystem under ``<os>_<arch>[_<variant>]/``."""
    names = [platform_dir(platform) for platform, _ in images]
    work = store.root.tmp_dir("export-")
    try:
        top = work / "platforms"
        top.mkdir()
        for name, (_, image) in zip(names, images):
            snapshots = store.snapshots_for(image)
            flatten_into([store.root.snapshots.tree(s) for s in snapshots], top / name, hardlink_files=True)
            os.chmod(top / name, 0o755)
            os.utime(top / name, (0, 0))  # BuildKit's platform directory: 0755, no time of its own
        destination = _Destination(out)
        try:
            write_layer(top, destination)  # type: ignore[arg-type]  # it only writes to it
        except StoreError:
            if destination.failure is not None:
                raise destination.failure from None
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_children(src: Path, dst: Path) -> None:
    for entry in os.scandir(src):
        os.rename(entry.path, os.path.join(dst, entry.name))


def _merge_into(src: Path, dst: Path, same_device: bool) -> None:
    """Merge the tree ``src`` into the real directory ``dst``."""
    for entry in os.scandir(src):
        target = os.path.join(dst, entry.name)
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if entry.is_dir(follow_symlinks=False) and existing is not None and stat.S_ISDIR(existing.st_mode):
            _merge_into(Path(entry.path), Path(target), same_device)
            _copy_dir_metadata(Path(entry.path), Path(target))
            continue
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        if same_device and _renamed(entry.path, target):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, target, symlinks=True, copy_function=_copy_file)
            _copy_dir_metadata(Path(entry.path), Path(target))
        else:
            _copy_entry(entry.path, target)


def _renamed(src: str, dst: str) -> bool:
    """Move by rename; False if ``dst`` is on another filesystem (one mounted inside dest)."""
    try:
        os.rename(src, dst)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        return False
    return True


def _copy_file(src: str, dst: str) -> None:
    _copy_entry(src, dst)


def _copy_entry(src: str, dst: str) -> None:
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
        shutil.copystat(src, dst, follow_symlinks=False)
    else:
        os.mknod(dst, st.st_mode, st.st_rdev)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))


def _copy_dir_metadata(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def export_tar(store: ImageStore, image: StoredImage, out: BinaryIO) -> FlattenStats:
    """Write the image's filesystem as a tar into ``out``; an ``OSError`` writing ``out`` is raised as is."""
    merged, stats = _merged(store, image, hardlink_files=True)
    destination = _Destination(out)
    try:
        write_layer(merged, destination)  # type: ignore[arg-type]  # it only writes to it
    except StoreError:
        if destination.failure is not None:
            raise destination.failure from None  # the output, not the tree, failed (a full disk)
        raise
    finally:
        shutil.rmtree(merged.parent, ignore_errors=True)
    return stats


class _Destination:
    """``out`` as ``write_layer`` sees it: it takes any ``OSError`` for a tree it cannot read,
    so a failed write is remembered here to be reported as what it is."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.failure: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._out.write(data)
        except OSError as error:
            self.failure = error
            raise
