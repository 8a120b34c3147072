"""Beyond the golden cases: the Dockerfiles where a rootless build could drift from a root
one — ids other than root's, deletions (whiteouts) and replaced directories (opaque), set-id
bits and hard links, COPY --chown, a cache mount — give the root build's image ID, so the
unprivileged overlay's whiteout forms (a 0/0 character device, `user.overlay.opaque` when
the kernel wants userxattr) never reach a layer.  BuildKit writes OCI whiteouts from the
overlay upper dir the same way rootless or not (moby/buildkit util/overlay/overlay_linux.go,
WriteUpperdir, and docs/rootless.md).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from .conftest import AsUser, saved_image
from .test_golden_rootless import BASE, EPOCH, REPRODUCIBLE, as_root, as_user, base_archive, root_pybuild  # noqa: F401

CASES = {
    "ids": (
        "RUN mkdir /d && chown 1000:1000 /d && touch /d/f && chown 65534:65534 /d/f && chown 0:1000 /bin\n"
        "USER 1000:1000\n"
        "RUN touch /d/mine\n"
    ),
    "deletions_and_opaque_dirs": (
        "RUN rm /bin/ls && rm -rf /home/app && mkdir /home/app && echo new > /home/app/only\n"
        "RUN rm -rf /home/app\n"
    ),
    "setid_bits_and_hard_links": "RUN cp /bin/busybox /sbin/x && chmod 6755 /sbin/x && ln /sbin/x /sbin/y && chmod 1777 /tmp\n",
    "copy_chown": "COPY --chown=1000:2000 hello.txt /srv/hello.txt\nCOPY --chmod=0640 hello.txt /srv/private.txt\n",
    "cache_mount": "RUN --mount=type=cache,target=/var/cache/x,uid=1000 touch /var/cache/x/a && cp -a /var/cache/x /copied\n",
}


def context_of(directory: Path, body: str, owner: tuple[int, int] | None) -> Path:
    directory.mkdir(parents=True)
    (directory / "Dockerfile").write_text(f"FROM {BASE}\n{body}")
    (directory / "hello.txt").write_text("hello\n")
    for path in (directory, directory / "Dockerfile", directory / "hello.txt"):
        os.utime(path, (int(EPOCH["SOURCE_DATE_EPOCH"]),) * 2)
        if owner:
            os.chown(path, *owner)
    return directory


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_rootless_build_gives_the_root_build_image(name: str, as_root: Path, as_user: AsUser) -> None:  # noqa: F811
    root_context = context_of(as_root / "same" / name, CASES[name], None)
    done = root_pybuild(as_root / "root", *REPRODUCIBLE, "-t", f"same/{name}:1", str(root_context))
    assert done.returncode == 0, done.stderr
    parent = as_user.dir / "same"
    if not parent.exists():
        parent.mkdir()
        os.chown(parent, as_user.account.uid, as_user.account.gid)
    user_context = context_of(parent / name, CASES[name], (as_user.account.uid, as_user.account.gid))
    rootless = as_user.pybuild(*REPRODUCIBLE, "-t", f"same/{name}:1", str(user_context), env=EPOCH)
    assert rootless.stdout.strip() == done.stdout.strip()


def test_deletions_are_oci_whiteouts_in_a_rootless_layer(as_user: AsUser) -> None:  # noqa: F811
    """The layer itself, not only its digest: `.wh.` entries, no device nodes, no xattrs."""
    user_context = as_user.dir / "whiteouts"
    as_user.write("whiteouts/Dockerfile", f"FROM {BASE}\nRUN rm /bin/ls && rm -rf /home/app && mkdir /home/app && echo new > /home/app/only\n")
    as_user.pybuild("build", "-q", "--network=none", "-t", "wh:1", str(user_context))
    archive = as_user.dir / "wh.tar"
    as_user.pybuild("save", "-o", str(archive), "wh:1")
    files, _ = saved_image(archive)
    assert "/bin/ls" not in files and files["/home/app/only"].data == b"new\n"
    with tarfile.open(archive) as outer:
        last = json.loads(outer.extractfile("manifest.json").read())[0]["Layers"][-1]  # type: ignore[union-attr]
        with tarfile.open(fileobj=outer.extractfile(last), mode="r:*") as layer:  # type: ignore[arg-type]
            members = layer.getmembers()
    names = {m.name.rstrip("/") for m in members}
    assert "bin/.wh.ls" in names and "home/app/.wh..wh..opq" in names
    assert not [m.name for m in members if m.ischr() or m.isblk()]
    assert not [m.name for m in members if any(k.startswith("SCHILY.xattr.") for k in m.pax_headers)]
