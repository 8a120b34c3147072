"""How a parsed image reference is written back: in full, and in the short form Docker shows."""

from __future__ import annotations

import pytest

from pybuild.oci import parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app:1", "docker.io/user/app:1", "user/app:1"),
        (f"library/x@{DIGEST}", f"docker.io/library/x@{DIGEST}", f"x@{DIGEST}"),
        (f"ghcr.io/a/b:2@{DIGEST}", f"ghcr.io/a/b:2@{DIGEST}", f"ghcr.io/a/b:2@{DIGEST}"),
        ("127.0.0.1:5000/library/app:v", "127.0.0.1:5000/library/app:v", "127.0.0.1:5000/library/app:v"),
    ],
)
def test_a_reference_is_written_with_its_tag_then_its_digest(text: str, full: str, familiar: str) -> None:
    reference = parse_reference(text)
    assert str(reference) == full
    assert reference.familiar == familiar
