"""Device nodes and FIFOs made by RUN, and /etc/hostname in RUN, as BuildKit builds them (issue 15)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path


def top_layer(cli, ref: str, tmp_path: Path) -> tarfile.TarFile:  # type: ignore[no-untyped-def]
    """The last layer of ``ref``, read from ``pybuild save --format oci``."""
    archive = tmp_path / "image.tar"
    cli("save", "--format", "oci", "-o", str(archive), ref)
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]

        def blob(digest: str) -> bytes:
            return outer.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()  # type: ignore[union-attr]

        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        data = blob(manifest["layers"][-1]["digest"])
    layer = tmp_path / "layer.tar"
    layer.write_bytes(data)
    return tarfile.open(layer)  # gzip or plain, tarfile finds out


def test_nodes_made_by_run_are_in_the_layer(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """BuildKit keeps what mknod and mkfifo make in the step's layer: runc's
    device cgroup allows "c *:* m" and "b *:* m" (opencontainers/runc
    libcontainer/specconv/spec_linux.go, AllowedDevices), and the differ
    writes char, block and FIFO entries (containerd archive/tar.go).
    /dev is a tmpfs in a step (containerd oci/mounts.go), so a node made
    there is not kept."""
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN mknod /root/x c 1 3 && mknod /root/sda b 8 0 && mkfifo /p && mknod /dev/y c 1 3\n"
    )
    cli("build", "-t", "nodes", str(tmp_path))
    with top_layer(cli, "nodes", tmp_path) as layer:
        members = {m.name.lstrip("./").rstrip("/"): m for m in layer.getmembers()}
    x, sda, fifo = members["root/x"], members["root/sda"], members["p"]
    assert x.ischr() and (x.devmajor, x.devminor) == (1, 3)
    assert sda.isblk() and (sda.devmajor, sda.devminor) == (8, 0)
    assert fifo.isfifo()
    assert not any(name.startswith("dev") for name in members)


def test_run_sees_the_images_etc_hostname(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    """BuildKit mounts /etc/resolv.conf and /etc/hosts into a step but not
    /etc/hostname (moby/buildkit executor/oci/spec.go, generateMountOpts);
    the UTS hostname is buildkitsandbox (defaultHostname, oci.WithHostname)."""
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox AS named\nRUN echo image-host > /etc/hostname\n"
        "FROM busybox AS none\nRUN test -e /etc/hostname && echo yes > /none || echo no > /none\n"
        "FROM named\nCOPY --from=none /none /none\nRUN cat /etc/hostname > /h; hostname > /c\n"
    )
    cli("build", "-t", "hn", str(tmp_path))
    image = open_image("hn")
    assert (image.read("/h"), image.read("/c"), image.read("/none")) == ("image-host\n", "buildkitsandbox\n", "no\n")
    with top_layer(cli, "hn", tmp_path) as layer:
        names = {m.name.lstrip("./").rstrip("/") for m in layer.getmembers()}
    assert names == {"c", "h"}
