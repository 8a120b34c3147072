"""What each layer of an image adds, and which bytes a later layer throws away.

An image is as big as the sum of its layers, not as big as the filesystem it
ends with: a file one layer adds and a later layer deletes (a whiteout, or an
opaque directory that hides it) or overwrites (the same path again, a
``chmod`` that copies it up) still costs its bytes in the earlier layer.
``walk_layers`` replays the layer trees bottom first over a model of the
merged filesystem and finds every such file, attributing its bytes to the
layer that added them and naming the layer that removed them; what is left at
the end is the final filesystem.  ``analyze_image`` and ``compare_images`` add
what the store knows: Docker's size of each layer, the history step that made
it, and which layers two images share (by chain ID).

Layer trees are overlay upper directories, as overlayfs writes them:
a whiteout is a character device 0/0, an opaque directory carries
``trusted.overlay.opaque=y`` (``user.overlay.opaque=y`` rootless: ``opaque_xattr``).  Sizes come from ``lstat`` (no file is read),
counted as Docker counts an unpacked layer: every non-directory, symlinks by
their target's length, hard links of one layer once.  A layer's own size
(``LayerReport.size``) is the store's, which for a layer a build made leaves
the symlink targets out, as BuildKit does.  Indexes are 0-based, bottom
layer first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pybuild.errors import StoreError

from ._layers import is_whiteout, opaque_xattr
from ._store import ImageStore, StoredImage, chain_ids


@dataclass(frozen=True)
class WastedFile:
    """A file whose bytes are in layer ``added_in`` but not in the final filesystem."""

    path: str  # absolute, as the image sees it
    size: int
    added_in: int  # the layer holding the bytes
    removed_by: int  # the later layer that deletes or overwrites the path
    overwritten: bool  # False: deleted (whiteout or opaque directory)


@dataclass(frozen=True)
class Waste:
    """The bytes one layer adds and one later layer throws away, largest files first."""

    added_in: int
    removed_by: int
    files: tuple[WastedFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def overwritten_size(self) -> int:
        return sum(f.size for f in self.files if f.overwritten)


@dataclass(frozen=True)
class LayerContent:
    """What one layer tree does to the filesystem below it."""

    files_added: int  # non-directories at paths the layers below do not have
    files_changed: int  # non-directories replacing an entry of the layers below
    files_deleted: int  # whiteouts
    bytes_added: int  # bytes of the layer's files (hard links once)
    bytes_removed: int  # bytes of lower layers this layer deletes or overwrites


@dataclass(frozen=True)
class FilesystemWalk:
    """``walk_layers``'s result: each layer's content, the wasted files, the final size."""

    layers: tuple[LayerContent, ...]
    wasted: tuple[WastedFile, ...]  # largest first
    final_size: int  # bytes of the merged filesystem (hard links once)


@dataclass(frozen=True)
class LayerReport:
    """One layer of an image, as ``pybuild compare`` shows it."""

    index: int
    diff_id: str
    chain_id: str
    size: int  # Docker's measure (ImageStore.layer_sizes)
    created_by: str  # the history step that made the layer ("" if the image has none)
    comment: str
    files_added: int
    files_changed: int
    files_deleted: int
    bytes_added: int
    bytes_removed: int
    bytes_wasted: int  # of bytes_added, what later layers delete or overwrite
    shared: bool = False  # the other image of a comparison has this layer (same chain ID)

    @property
    def files_written(self) -> int:
        return self.files_added + self.files_changed


@dataclass(frozen=True)
class ImageReport:
    """An image's layers, its wasted bytes and its final filesystem."""

    name: str  # as the user named it
    image_id: str
    layers: tuple[LayerReport, ...]
    wasted: tuple[WastedFile, ...]  # largest first
    final_size: int

    @property
    def short_id(self) -> str:
        return self.image_id.split(":", 1)[-1][:12]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def wasted_size(self) -> int:
        return sum(f.size for f in self.wasted)

    def waste_by_step(self) -> tuple[Waste, ...]:
        """The wasted files grouped by (layer that added, layer that removed), largest group first."""
        groups: dict[tuple[int, int], list[WastedFile]] = {}
        for wasted in self.wasted:  # already largest first, so each group is too
            groups.setdefault((wasted.added_in, wasted.removed_by), []).append(wasted)
        out = [Waste(added, removed, tuple(files)) for (added, removed), files in groups.items()]
        return tuple(sorted(out, key=lambda w: (-w.size, w.added_in, w.removed_by)))


@dataclass(frozen=True)
class Comparison:
    left: ImageReport
    right: ImageReport

    @property
    def same_image(self) -> bool:
        return self.left.image_id == self.right.image_id


# --- the walk ------------------------------------------------------------------

# The merged filesystem while layers are replayed: a directory is a dict of
# name -> child, anything else a _Leaf tuple.  Tuples and dicts keep the
# per-file cost at a few hundred bytes for images of a hundred thousand files.
_Leaf = tuple[int, "tuple[int, int] | None", int]  # (layer, hard-link key or None, size)
_Dir = dict[bytes, Any]  # name -> _Dir | _Leaf


@dataclass
class _Tally:
    """One layer's counts while it is walked (becomes a LayerContent)."""

    added: int = 0
    changed: int = 0
    deleted: int = 0
    content: int = 0


class _Replay:
    def __init__(self) -> None:
        self.root: _Dir = {}
        # Paths still alive per hard-linked inode of a layer: its bytes are
        # wasted only when the last of its names is gone.
        self.names_left: dict[tuple[int, tuple[int, int]], int] = {}
        self.wasted: list[WastedFile] = []
        self.removed_bytes: list[int] = []

    def layer(self, index: int, tree: Path) -> LayerContent:
        """Lay one more layer tree over the merged filesystem."""
        tally = _Tally()
        self.removed_bytes.append(0)
        seen_links: set[tuple[int, int]] = set()
        stack: list[tuple[bytes, bytes, _Dir]] = [(b"", os.fsencode(tree), self.root)]
        while stack:
            prefix, directory, merged = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    path = prefix + b"/" + entry.name
                    if entry.is_dir(follow_symlinks=False):  # from d_type: no stat needed
                        child = self._directory(index, path, entry.path, merged.get(entry.name))
                        merged[entry.name] = child
                        stack.append((path, entry.path, child))
                    else:
                        st = entry.stat(follow_symlinks=False)
                        self._file(index, path, entry.name, st, merged, tally, seen_links)
        return LayerContent(tally.added, tally.changed, tally.deleted, tally.content, self.removed_bytes[index])

    def _file(
        self, index: int, path: bytes, name: bytes, st: os.stat_result, merged: _Dir,
        tally: _Tally, seen_links: set[tuple[int, int]],
    ) -> None:
        """A non-directory of the layer: a whiteout deletes what is below, anything else replaces it."""
        below = merged.pop(name, None)
        if is_whiteout(st):
            tally.deleted += 1
            if below is not None:
                self._discard(path, below, index, overwritten=False)
            return
        if below is None:
            tally.added += 1
        else:
            tally.changed += 1
            self._discard(path, below, index, overwritten=True)
        link = None
        if st.st_nlink > 1:
            link = (st.st_dev, st.st_ino)
            key = (index, link)
            self.names_left[key] = self.names_left.get(key, 0) + 1
        if link is None or link not in seen_links:  # a layer holds a hard-linked file's bytes once
            tally.content += st.st_size
            if link is not None:
                seen_links.add(link)
        merged[name] = (index, link, st.st_size)

    def _directory(self, index: int, path: bytes, host: str | bytes, below: _Dir | _Leaf | None) -> _Dir:
        """The merged directory for a directory of the layer: the one below,
        unless this one is opaque or replaces a non-directory."""
        if isinstance(below, dict):
            if below and _is_opaque(host):
                for name, child in below.items():
                    self._discard(path + b"/" + name, child, index, overwritten=False)
                return {}
            return below
        if below is not None:
            self._discard(path, below, index, overwritten=True)
        return {}

    def _discard(self, path: bytes, node: _Dir | _Leaf, remover: int, *, overwritten: bool) -> None:
        """``node`` (a leaf or a whole directory) leaves the filesystem at layer ``remover``."""
        stack = [(path, node)]
        while stack:
            at, current = stack.pop()
            if isinstance(current, dict):
                stack.extend((at + b"/" + name, child) for name, child in current.items())
                continue
            added_in, link, size = current
            if link is not None:
                key = (added_in, link)
                self.names_left[key] -= 1
                if self.names_left[key]:
                    continue  # another name of the inode still holds the bytes
                del self.names_left[key]
            self.removed_bytes[remover] += size
            self.wasted.append(WastedFile(os.fsdecode(at), size, added_in, remover, overwritten))

    def final_size(self) -> int:
        total = 0
        links: set[tuple[int, tuple[int, int]]] = set()
        stack = [self.root]
        while stack:
            for child in stack.pop().values():
                if isinstance(child, dict):
                    stack.append(child)
                    continue
                added_in, link, size = child
                if link is not None:
                    if (added_in, link) in links:
                        continue
                    links.add((added_in, link))
                total += size
        return total


def _is_opaque(path: str | bytes) -> bool:
    try:
        return os.getxattr(path, opaque_xattr(), follow_symlinks=False) == b"y"
    except OSError:  # ENODATA: no such xattr; ENOTSUP: a filesystem without them
        return False


def walk_layers(trees_bottom_first: Sequence[Path]) -> FilesystemWalk:
    """Replay layer trees (overlay upper directories, bottom first) and account for every byte."""
    replay = _Replay()
    layers = tuple(replay.layer(index, tree) for index, tree in enumerate(trees_bottom_first))
    wasted = tuple(sorted(replay.wasted, key=lambda w: (-w.size, w.path)))
    return FilesystemWalk(layers, wasted, replay.final_size())


# --- images --------------------------------------------------------------------


def layer_history(config: Mapping[str, Any], layer_count: int) -> list[tuple[str, str]]:
    """(created_by, comment) of the history entry behind each layer, bottom first.

    Entries marked ``empty_layer`` made no layer; an image without (enough)
    history gets empty strings for the layers it does not describe.
    """
    out = []
    for entry in config.get("history") or []:
        if isinstance(entry, Mapping) and not entry.get("empty_layer"):
            out.append((str(entry.get("created_by") or ""), str(entry.get("comment") or "")))
    out = out[:layer_count]
    return out + [("", "")] * (layer_count - len(out))


def analyze_image(store: ImageStore, image: StoredImage, name: str = "") -> ImageReport:
    """Walk the image's layers (unpacking any that are missing) and report on each."""
    snapshots = list(reversed(store.snapshots_for(image)))
    try:
        walk = walk_layers([store.root.snapshots.tree(s) for s in snapshots])
    except OSError as error:  # a snapshot removed or damaged under us
        raise StoreError(
            f"cannot read the layers of image {image.short_id}: {error.strerror or error}: {os.fsdecode(error.filename or '')}",
            hint="if a prune ran meanwhile, run the command again",
        ) from None
    wasted_per_layer = [0] * len(snapshots)
    for wasted in walk.wasted:
        wasted_per_layer[wasted.added_in] += wasted.size
    sizes = store.layer_sizes(image)
    chains = chain_ids([layer.diff_id for layer in image.layers])
    history = layer_history(image.config, len(image.layers))
    layers = tuple(
        LayerReport(
            index, layer.diff_id, chains[index], sizes[index], history[index][0], history[index][1],
            content.files_added, content.files_changed, content.files_deleted,
            content.bytes_added, content.bytes_removed, wasted_per_layer[index],
        )
        for index, (layer, content) in enumerate(zip(image.layers, walk.layers, strict=True))
    )
    return ImageReport(name or image.short_id, image.id, layers, walk.wasted, walk.final_size)


def compare_images(
    store: ImageStore, left: StoredImage, right: StoredImage, *, left_name: str = "", right_name: str = ""
) -> Comparison:
    """Both images analysed, each layer marked shared when the other image has it too."""
    left_report = analyze_image(store, left, left_name)
    if right.id == left.id:  # the same layers: walk them once
        right_report = replace(left_report, name=right_name or left_report.name)
    else:
        right_report = analyze_image(store, right, right_name)
    return Comparison(_mark_shared(left_report, right_report), _mark_shared(right_report, left_report))


def _mark_shared(report: ImageReport, other: ImageReport) -> ImageReport:
    # A chain ID names a layer together with everything below it, so equal
    # chain IDs mean the same layer on the same base.
    theirs = {layer.chain_id for layer in other.layers}
    return replace(report, layers=tuple(replace(l, shared=l.chain_id in theirs) for l in report.layers))
