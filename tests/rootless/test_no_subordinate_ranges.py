"""An ordinary user without /etc/subuid and /etc/subgid ranges (pybuild-nosub): pybuild maps
the one id it has (`0 UID 1`, as rootlesskit and podman do when newuidmap has nothing to
give), builds what runs as root, and says once what cannot work and how to add a range.

Podman and BuildKit's rootless docs (docs/rootless.md, "Troubleshooting") name the same
remedy: `usermod --add-subuids … --add-subgids …`.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from .conftest import AsUser


@pytest.fixture(scope="module")
def root_owned_busybox_tar(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox base with every file owned by 0:0 (the test rootfs has /home/app as 1000,
    which a one-id mapping cannot hold: importing it is the clear error of R3's layer check)."""
    out = tmp_path_factory.mktemp("root-owned") / "busybox.tar"
    with tarfile.open(busybox_tar) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as target:
        for member in source:
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out


def import_busybox(user: AsUser, tar: Path) -> None:
    user.pybuild("import", str(user.give(tar, "busybox.tar")), "busybox:latest")


def test_a_base_with_ids_outside_the_mapping_is_a_clear_error(nosub_user: AsUser, busybox_tar: Path) -> None:
    """Applying a layer whose files name ids the mapping lacks names the file and the id."""
    imported = nosub_user.pybuild("import", str(nosub_user.give(busybox_tar, "busybox.tar")), "busybox:latest", check=False)
    assert imported.returncode != 0
    assert "Traceback" not in imported.stderr
    assert "home/app" in imported.stderr and "1000" in imported.stderr
    assert "usermod --add-subuids" in imported.stderr


def test_a_root_only_dockerfile_builds_with_one_warning(nosub_user: AsUser, root_owned_busybox_tar: Path) -> None:
    import_busybox(nosub_user, root_owned_busybox_tar)
    nosub_user.write("ctx/Dockerfile", "FROM busybox\nRUN echo hi > /x && chown 0:0 /x\n")
    built = nosub_user.pybuild("build", "-q", "--network=none", "-t", "plain:1", str(nosub_user.dir / "ctx"))
    assert built.stdout.strip().startswith("sha256:")
    assert built.stderr.count("usermod --add-subuids") == 1  # said once, with the remedy
    assert "Traceback" not in built.stderr


def test_user_1000_without_ranges_is_a_clear_error(nosub_user: AsUser, root_owned_busybox_tar: Path) -> None:
    import_busybox(nosub_user, root_owned_busybox_tar)
    nosub_user.write("ctx/Dockerfile", "FROM busybox\nUSER 1000\nRUN id -u > /tmp/id\n")
    built = nosub_user.pybuild("build", "-q", "--network=none", str(nosub_user.dir / "ctx"), check=False)
    assert built.returncode != 0
    assert "Traceback" not in built.stderr and "internal error" not in built.stderr
    errors = [line for line in built.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("Dockerfile:2" in errors[0] or "Dockerfile:3" in errors[0])
    assert "1000" in errors[0]  # names the id the mapping lacks, not a generic sandbox failure
    said = "\n".join(line for line in built.stderr.splitlines() if not line.startswith("warning:"))
    assert "usermod --add-subuids" in said  # the remedy, in the error itself
