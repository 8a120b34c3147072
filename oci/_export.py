"""Build outputs (``--output``) and image archives (``save``).

``parse_outputs`` reads buildx's ``--output`` syntax into frozen ``Output``
values; ``export_outputs`` writes a built (stored) image, or index, to each of them:

- ``type=image`` -- the local image store (the build put it there; ``name=``
  adds tags, ``push=true`` pushes them); the default output.
- ``type=registry`` -- ``type=image`` with ``push=true`` (``--push``).
- ``type=oci,dest=FILE`` -- an OCI image layout tar (with Docker's
  ``manifest.json`` too, so ``docker load`` reads it).
- ``type=docker,dest=FILE`` -- a docker-archive, as ``docker save`` writes.
- ``type=local,dest=DIR`` -- the final filesystem.
- ``type=tar,dest=FILE`` -- the final filesystem as a tar.

Several platforms (an image index): ``type=image``
tags the index and ``push=true`` pushes every platform's manifest, then the
index; ``type=oci`` writes the index into the layout; ``type=local`` and
``type=tar`` write one directory per platform (``linux_arm64/``); and
``type=docker`` is refused as BuildKit's docker exporter refuses it.

``-o DIR`` is ``type=local,dest=DIR`` and ``-o -`` is ``type=tar,dest=-``;
``dest=-`` writes to standard output.  Archive outputs take
``compression=gzip|zstd|uncompressed``, ``compression-level=N`` and
``force-compression=true`` as BuildKit does.

A ``dest`` path is written as ``open_output`` writes a file: through a
symlink, FIFO or device, never replacing it; a regular file by a temp file
beside it, renamed into place only when complete.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pybuild._frozen import frozen
from pybuild.errors import ImageError, NotFound, UsageError

from ._export_layers import LayerSettings, bool_option, export_manifest, parse_compression_options
from ._formats import MEDIA_TYPE_OCI_INDEX, Descriptor, ImagePlatform, index_document
from ._platforms import host_platform
from ._output_file import open_output
from ._reference import parse_reference
from ._snapshot_layers import layer_compression
from ._store import ImageStore, Layer, StoredImage, StoredIndex

if TYPE_CHECKING:  # the registry package imports httpx: loaded when a push runs
    from ._archive import OciArchiveWriter, PendingBlob  # the archive writers load with an archive output
    from .registry import RegistryClient

OUTPUT_TYPES = ("image", "registry", "oci", "docker", "local", "tar")
STDOUT = "-"


@frozen
class Output:
    """One ``--output``: where the built image goes."""

    type: str
    dest: str | None = None  # a path, or "-" for standard output
    names: tuple[str, ...] = ()  # name=...; empty: the build's -t tags
    push: bool = False
    layers: LayerSettings = field(default_factory=LayerSettings)
    rewrite_timestamp: bool = False  # clamp layer times to SOURCE_DATE_EPOCH (BuildKit's option)

    @property
    def to_stdout(self) -> bool:
        return self.dest == STDOUT


def _fields(text: str) -> dict[str, str]:
    try:
        row = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise UsageError(f"invalid --output {text!r}", hint="e.g. type=oci,dest=image.tar") from None
    attrs: dict[str, str] = {}
    for item in row:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise UsageError(f"invalid --output field {item!r} in {text!r}", hint="fields are KEY=VALUE, e.g. type=local,dest=out")
        attrs[key] = value
    return attrs


def parse_output(text: str) -> Output:
    """One ``--output`` value, in buildx's syntax."""
    if text == STDOUT:
        return Output("tar", STDOUT)
    if "=" not in text:
        return Output("local", text)
    attrs = _fields(text)
    kind = attrs.pop("type", "")
    what = f"--output {text!r}"
    if kind not in OUTPUT_TYPES:
        raise UsageError(
            f"{what}: unknown output type {kind!r}" if kind else f"{what}: type is required",
            hint="types: " + ", ".join(OUTPUT_TYPES),
        )
    names = tuple(n.strip() for n in attrs.pop("name", "").split(",") if n.strip())
    for name in names:
        parse_reference(name)  # a malformed name fails now, before the build
    dest = attrs.pop("dest", None)
    if kind in ("oci", "docker") and not bool_option(attrs, "tar", True, what):
        raise UsageError(f"{what}: tar=false (an OCI layout directory) is not supported", hint="drop tar=false to get an archive")
    attrs.pop("tar", None)
    push = bool_option(attrs, "push", kind == "registry", what)
    attrs.pop("push", None)
    layers = layer_compression(parse_compression_options(attrs, what), output_type=kind)
    for key in ("compression", "compression-level", "force-compression"):
        attrs.pop(key, None)
    rewrite = bool_option(attrs, "rewrite-timestamp", False, what)
    attrs.pop("rewrite-timestamp", None)
    for key in ("oci-mediatypes", "unpack", "store", "annotation", "platform-split"):
        attrs.pop(key, None)  # accepted as BuildKit does; pybuild's defaults already match
    if attrs:
        raise UsageError(f"{what}: unknown option {sorted(attrs)[0]!r} for type={kind}")
    if kind in ("oci", "docker", "local", "tar") and not dest:
        raise UsageError(f"{what}: dest is required for type={kind}", hint=f"e.g. type={kind},dest=" + ("out" if kind == "local" else "image.tar"))
    if kind == "local" and dest == STDOUT:
        raise UsageError(f"{what}: type=local writes a directory", hint="use type=tar,dest=- for a tar on standard output")
    if kind in ("image", "registry") and dest:
        raise UsageError(f"{what}: type={kind} takes no dest", hint="name the image with name=... or -t")
    return Output(kind, dest, names, push, layers, rewrite)


def parse_outputs(values: Sequence[str], *, push: bool = False) -> tuple[Output, ...]:
    """Every ``--output`` of a build (``type=image`` if none); ``push`` is ``--push``."""
    outputs = [parse_output(value) for value in values]
    if push:
        image = next((i for i, o in enumerate(outputs) if o.type in ("image", "registry")), None)
        if image is None:
            outputs.append(Output("registry", push=True))
        else:
            outputs[image] = replace(outputs[image], push=True)
    if not outputs:
        outputs.append(Output("image"))
    if sum(1 for o in outputs if o.to_stdout) > 1:
        raise UsageError("only one --output can write to standard output")
    return tuple(outputs)


# --- archives ----------------------------------------------------------------


class _Blobs:
    """The content store plus documents made for this export (converted manifests)."""

    def __init__(self, store: ImageStore, extra: dict[str, bytes]) -> None:
        self._store = store
        self._extra = extra

    def open(self, digest: str) -> BinaryIO:
        import io

        if digest in self._extra:
            return io.BytesIO(self._extra[digest])
        try:
            return self._store.root.blobs.open(digest)
        except NotFound:
            raise NotFound(f"blob {digest} is missing from the store", hint="pull or build the image again") from None

    def verified_path(self, digest: str, size: int) -> str | None:
        # blob_intact hashes a blob once per version of its file (the stat cache)
        if digest in self._extra or not self._store.root.blob_intact(digest, size):
            return None
        path = self._store.root.blobs.path(digest)
        return None if path is None else str(path)


def _atomic(dest: Path | BinaryIO, write: Callable[[BinaryIO, bool], Any]) -> None:
    """``write(out, own_file)`` into ``dest``: a stream as is, a path as ``open_output`` writes it.

    ``own_file``: ``out`` is a temp file of the export's own, which it may seek back in.
    """
    if not isinstance(dest, (str, Path)):
        write(dest, False)
        dest.flush()
        return
    with open_output(dest) as output:
        write(output.stream, output.own)


def write_images_archive(
    store: ImageStore,
    images: Sequence[tuple[StoredImage | StoredIndex, Sequence[str]]],
    dest: Path | BinaryIO,
    *,
    format: str = "docker",
    layers: LayerSettings = LayerSettings(),
) -> None:
    """Several images (each with the names to give it) into one archive.

    ``format`` is ``docker`` (docker-archive, layers uncompressed) or ``oci``
    (an OCI layout tar that ``docker load`` also reads; an index goes in
    whole, and Docker's ``manifest.json`` names its image for this machine,
    else its first).
    """
    from ._archive import ArchiveImage, OciArchiveWriter, write_docker_archive

    if format not in ("docker", "oci"):
        raise UsageError(f"unknown archive format {format!r}", hint="use docker or oci")
    named = [(image, tuple(str(parse_reference(n)) for n in names)) for image, names in images]
    if format == "docker" and any(isinstance(image, StoredIndex) for image, _ in named):
        check_index_outputs([Output("docker")])
    if format == "oci":
        # only a temp file of _atomic's own may be seeked in (an O_APPEND stdout or a FIFO may not)
        _atomic(dest, lambda out, own_file: _write_oci_archive(store, named, layers, OciArchiveWriter(out, can_seek_back=own_file)))
        return
    extra: dict[str, bytes] = {}
    entries = []
    for image, names in named:
        assert isinstance(image, StoredImage)  # refused above
        manifest = export_manifest(store, image)
        extra[manifest.digest] = manifest.data
        entries.append(ArchiveImage(Descriptor(manifest.media_type, manifest.digest, len(manifest.data)), names))
    source = _Blobs(store, extra)
    spool = store.root.tmp_dir("save-")
    _atomic(dest, lambda out, _own_file: write_docker_archive(out, source, entries, tmp_dir=spool))


class _ArchiveLayers:
    """``LayerArchive`` over an ``OciArchiveWriter``: layers go in as the export resolves them."""

    def __init__(self, writer: OciArchiveWriter, source: _Blobs) -> None:
        self._writer = writer
        self._source = source

    def pending_blob(self) -> PendingBlob | None:
        return self._writer.pending_blob()

    def add_layer(self, layer: Layer) -> None:
        self._writer.add_blob(self._source, Descriptor(layer.media_type, layer.digest, layer.size))


def _write_oci_archive(
    store: ImageStore, images: Sequence[tuple[StoredImage | StoredIndex, tuple[str, ...]]], settings: LayerSettings, writer: OciArchiveWriter
) -> None:
    """Layers are converted (if ``settings`` asks) straight into the archive, then the documents follow."""
    from ._archive import ArchiveImage

    extra: dict[str, bytes] = {}
    source = _Blobs(store, extra)
    layers = _ArchiveLayers(writer, source)
    entries = []
    platforms: list[tuple[str, ...]] = []
    for image, names in images:
        if isinstance(image, StoredIndex):
            manifests = []
            for entry in image.manifests:
                manifest = export_manifest(store, entry.image, settings, archive=layers)
                extra[manifest.digest] = manifest.data
                manifests.append((entry.platform, Descriptor(manifest.media_type, manifest.digest, len(manifest.data))))
            data = index_document(manifests)
            descriptor = Descriptor.of(MEDIA_TYPE_OCI_INDEX, data)
            extra[descriptor.digest] = data
            platforms.append(image.platforms)
        else:
            manifest = export_manifest(store, image, settings, archive=layers)
            extra[manifest.digest] = manifest.data
            descriptor = Descriptor(manifest.media_type, manifest.digest, len(manifest.data))
        entries.append(ArchiveImage(descriptor, names))
    writer.finish(source, entries, platform=_loadable_platform(platforms))


def _loadable_platform(indexes: Sequence[tuple[str, ...]]) -> ImagePlatform | None:
    """The platform Docker's ``manifest.json`` takes from each index: this machine's if they
    all have it, else none (each index's first)."""
    host = host_platform()
    return ImagePlatform.parse(host) if indexes and all(host in platforms for platforms in indexes) else None


def write_index_archive(
    store: ImageStore, index: StoredIndex, names: Sequence[str], dest: Path | BinaryIO, *, layers: LayerSettings = LayerSettings()
) -> None:
    """``type=oci`` of several platforms: an OCI layout whose ``index.json`` names the image
    index (as BuildKit's oci exporter writes it); Docker's ``manifest.json`` names this
    machine's image (the first if the index has none), which is what ``docker load`` takes."""
    write_images_archive(store, [(index, names)], dest, format="oci", layers=layers)


def export_oci_archive(
    store: ImageStore, image: StoredImage, dest: Path | BinaryIO, names: Sequence[str] = (), *, layers: LayerSettings = LayerSettings()
) -> None:
    """``type=oci``: ``image`` as an OCI layout tar at ``dest`` (a path or a stream)."""
    write_images_archive(store, [(image, names)], dest, format="oci", layers=layers)


def export_docker_archive(store: ImageStore, image: StoredImage, dest: Path | BinaryIO, names: Sequence[str] = ()) -> None:
    """``type=docker``: ``image`` as a docker-archive at ``dest`` (a path or a stream)."""
    write_images_archive(store, [(image, names)], dest, format="docker")


# --- all outputs of a build ---------------------------------------------------


@frozen
class OutputResult:
    """What one output did: ``pushed`` holds (reference, manifest digest) pairs."""

    output: Output
    pushed: tuple[tuple[str, str], ...] = ()


async def export_outputs(
    store: ImageStore,
    built: StoredImage | StoredIndex,
    outputs: Sequence[Output],
    *,
    tags: Sequence[str] = (),
    stdout: BinaryIO | None = None,
    insecure_registries: Sequence[str] = (),
    client: RegistryClient | None = None,  # made on demand when None
) -> list[OutputResult]:
    """Write ``built`` (an image, or several platforms' index; already in the store,
    tagged with ``tags``) to every output."""
    import trio

    if isinstance(built, StoredIndex):
        check_index_outputs(outputs)
    results: list[OutputResult] = []
    for output in outputs:
        names = tuple(output.names or tags)
        if output.type in ("image", "registry"):
            results.append(await _store_output(store, built, output, names, client, insecure_registries))
            continue
        target = _target(output, stdout)
        write = _writer(store, built, output, names)
        await trio.to_thread.run_sync(lambda: write(target))
        results.append(OutputResult(output))
    return results


def _writer(store: ImageStore, built: StoredImage | StoredIndex, output: Output, names: Sequence[str]) -> Callable[[Path | BinaryIO], None]:
    """How one file or directory output writes ``built``: an index writes every platform
    (its archive holds the index, a directory or tar one ``os_arch`` entry per platform)."""
    from ._export_local import export_local, export_local_platforms, export_tar, export_tar_platforms

    if isinstance(built, StoredIndex):
        platforms = [(entry.platform, entry.image) for entry in built.manifests]
        index = built
        if output.type == "oci":
            return lambda target: write_index_archive(store, index, names, target, layers=output.layers)
        if output.type == "local":
            return lambda target: export_local_platforms(store, platforms, _directory(target))
        return lambda target: _atomic(target, lambda out, _own_file: export_tar_platforms(store, platforms, out))
    image = built
    if output.type == "oci":
        return lambda target: export_oci_archive(store, image, target, names, layers=output.layers)
    if output.type == "docker":
        return lambda target: export_docker_archive(store, image, target, names)
    if output.type == "local":

        def write_local(target: Path | BinaryIO) -> None:
            export_local(store, image, _directory(target))

        return write_local
    return lambda target: _atomic(target, lambda out, _own_file: export_tar(store, image, out))


def _directory(target: Path | BinaryIO) -> Path:
    """A ``type=local`` destination, which ``parse_output`` never lets be standard output."""
    if not isinstance(target, Path):
        raise UsageError("type=local writes a directory, not standard output", hint="give it dest=DIR")
    return target


def check_index_outputs(outputs: Sequence[Output]) -> None:
    """Refuse, before anything is written, the outputs several platforms cannot go to."""
    for output in outputs:
        if output.type == "docker":
            raise ImageError(
                "docker exporter does not currently support exporting manifest lists",
                hint="use --output type=oci for every platform, or build one --platform for type=docker",
            )


async def _store_output(
    store: ImageStore, image: StoredImage | StoredIndex, output: Output, names: Sequence[str], client: RegistryClient | None,
    insecure: Sequence[str],
) -> OutputResult:
    """``type=image``/``registry``: its ``name=`` tag the image (or index); ``push=true`` pushes it."""
    import trio

    for name in output.names:
        await trio.to_thread.run_sync(store.tag, image.id, name)
    pushed: list[tuple[str, str]] = []
    if output.push:
        if not names:
            raise UsageError("pushing needs a name", hint="name the image with -t NAME or --output type=registry,name=NAME")
        pushed = await _push_all(store, image, names, output.layers, client, insecure)
    return OutputResult(output, tuple(pushed))


def _target(output: Output, stdout: BinaryIO | None) -> Path | BinaryIO:
    if output.to_stdout:
        if stdout is None:
            raise UsageError("this command cannot write an output to standard output")
        return stdout
    assert output.dest is not None  # parse_output requires dest for the file outputs
    return Path(output.dest)


async def _push_all(
    store: ImageStore, image: StoredImage | StoredIndex, names: Sequence[str], layers: LayerSettings, client: RegistryClient | None,
    insecure: Sequence[str],
) -> list[tuple[str, str]]:
    from ._push import push_image, push_index, registry_client

    own = client is None
    client = client or registry_client(insecure)
    try:
        pushed = []
        for name in names:
            if isinstance(image, StoredIndex):
                result = await push_index(store, client, image, name, layers=layers)
            else:
                result = await push_image(store, client, image, name, layers=layers)
            pushed.append((str(result.reference), result.digest))
        return pushed
    finally:
        if own:
            await client.aclose()
