"""Ids the rootless mapping lacks, named in one clear error wherever a build asks for them.

With no subordinate ranges (pybuild-nosub) only uid/gid 0 exist in the namespace: the kernel
refuses a chown to any other id with EINVAL.  A layer applied, ``COPY --chown`` and a cache
mount's or a secret's ``uid=``/``gid=`` each fail naming the Dockerfile line and the id, never
"Invalid argument" or a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import AsUser
from .test_no_subordinate_ranges import import_busybox, root_owned_busybox_tar  # noqa: F401 - a fixture


def build_error(user: AsUser, dockerfile: str) -> str:
    user.write("ctx/Dockerfile", dockerfile)
    user.write("ctx/file.txt", "data\n")
    secret = user.write("secret.txt", "s3cr3t-value\n")
    built = user.pybuild("build", "-q", "--network=none", "--secret", f"id=s,src={secret}", str(user.dir / "ctx"), check=False)
    assert "s3cr3t-value" not in built.stdout + built.stderr
    assert built.returncode != 0, built.stdout
    assert "Traceback" not in built.stderr and "internal error" not in built.stderr, built.stderr
    errors = [line for line in built.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, built.stderr
    return errors[0]


@pytest.mark.parametrize(
    "instruction",
    [
        "COPY --chown=1000:1000 file.txt /file.txt",
        "RUN --mount=type=cache,target=/cache,uid=1000,gid=1000 true",
        "RUN --mount=type=secret,id=s,uid=1000,gid=1000 true",
    ],
)
def test_an_id_outside_the_mapping_is_named_with_its_line(
    nosub_user: AsUser, root_owned_busybox_tar: Path, instruction: str  # noqa: F811 - the fixture
) -> None:
    """BuildKit's rootless mode needs subordinate ids for any id other than root's (moby/buildkit
    docs/rootless.md: /etc/subuid and /etc/subgid should hold at least 65536 ids); its
    ``chown`` then fails with the kernel's EINVAL, which pybuild turns into the id it lacks."""
    import_busybox(nosub_user, root_owned_busybox_tar)
    error = build_error(nosub_user, f"FROM busybox\n{instruction}\n")
    assert "Dockerfile:2" in error and "1000" in error, error
    assert "Invalid argument" not in error, error
