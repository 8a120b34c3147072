"""Deletions made rootless: whiteouts and opaque directories reach the layer as a root build's.

Rootless, overlayfs marks an opaque directory with ``user.overlay.opaque`` (``userxattr``)
instead of ``trusted.overlay.opaque``; the layer tar must not tell the difference.  The golden
cases delete nothing, so this builds a Dockerfile that does, as root and as the test user.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from .conftest import AsUser
from .test_golden_rootless import BASE, EPOCH, REPRODUCIBLE, as_root, as_user, base_archive, root_pybuild  # noqa: F401 - fixtures

DOCKERFILE = f"""FROM {BASE}
RUN mkdir -p /d/sub /gone && echo a > /d/sub/f && echo b > /d/g && echo c > /gone/x
RUN rm /d/g && rm -rf /d/sub /gone && mkdir /d/sub && echo new > /d/sub/n
"""


def layer_names(archive: Path) -> list[list[str]]:
    """The entry names of each layer of a `pybuild save` archive."""
    with tarfile.open(archive) as outer:
        (entry,) = json.loads(outer.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layers = []
        for layer in entry["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as tar:  # type: ignore[arg-type]
                layers.append([member.name for member in tar])
    return layers


def test_whiteouts_and_opaque_directories_built_rootless_match_a_root_build(as_root: Path, as_user: AsUser) -> None:
    """BuildKit's rootless overlay differ reads ``user.overlay.opaque`` as it reads
    ``trusted.overlay.opaque`` (moby/buildkit util/overlay/overlay_linux.go, checkOpaque), and
    writes both as the OCI ``.wh..wh..opq`` marker: the same layer, the same image ID."""
    context = as_root / "contexts" / "deletions"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(DOCKERFILE)
    done = root_pybuild(as_root / "root", *REPRODUCIBLE, "-t", "deletions:1", str(context))
    assert done.returncode == 0, done.stderr
    as_root_id = done.stdout.strip()
    saved = root_pybuild(as_root / "root", "save", "-o", str(as_root / "deletions.tar"), "deletions:1")
    assert saved.returncode == 0, saved.stderr
    last = layer_names(as_root / "deletions.tar")[-1]
    # The build does exercise both forms (a whiteout per deleted path, an opaque directory).
    assert {"d/.wh.g", ".wh.gone", "d/sub/.wh..wh..opq"} <= set(last), last

    as_user.write("deletions/Dockerfile", DOCKERFILE)
    rootless = as_user.pybuild(*REPRODUCIBLE, "-t", "deletions:1", str(as_user.dir / "deletions"), env=EPOCH)
    assert rootless.stdout.strip() == as_root_id


def test_a_cache_mount_is_the_users_on_the_host(as_user: AsUser) -> None:
    """What a step writes to a cache mount as root lands owned by the user on the host (root in
    the namespace is the user), never by root or another id; a secret never reaches the disk.
    BuildKit rootless keeps its cache mounts in the user's data dir the same way (moby/buildkit
    docs/rootless.md: the data dir is ~/.local/share/buildkit)."""
    secret = as_user.write("secret.txt", "cache-test-secret\n")
    as_user.write("cachemount/Dockerfile", (
        f"FROM {BASE}\n"
        "RUN --mount=type=cache,target=/c --mount=type=secret,id=s "
        "mkdir -p /c/dir && cat /run/secrets/s > /dev/null && echo data > /c/dir/file\n"
    ))  # fmt: skip
    as_user.pybuild("build", "-q", "--network=none", "--secret", f"id=s,src={secret}", str(as_user.dir / "cachemount"))
    cache = as_user.root / "cache-mounts"
    made = [p for p in cache.rglob("*") if p.name in ("dir", "file")]
    assert {p.name for p in made} == {"dir", "file"}
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in made} == {(as_user.account.uid, as_user.account.gid)}
    for path in as_user.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"cache-test-secret" not in path.read_bytes(), path
