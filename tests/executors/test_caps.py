"""Capability math: Docker's default set as a mask, and what to drop from the bounding set."""

from __future__ import annotations

from pybuild.executors._caps import (
    CAPABILITY_NUMBERS,
    DOCKER_DEFAULT_CAPABILITIES,
    DOCKER_DEFAULT_MASK,
    capabilities_to_drop,
    capability_mask,
    capability_names,
)


def test_docker_default_mask_is_what_docker_shows() -> None:
    # `docker run --rm busybox grep CapBnd /proc/self/status` prints this value.
    assert DOCKER_DEFAULT_MASK == 0x00000000A80425FB


def test_names_round_trip() -> None:
    assert sorted(capability_names(DOCKER_DEFAULT_MASK)) == sorted(DOCKER_DEFAULT_CAPABILITIES)
    assert capability_mask(["CAP_SYS_ADMIN"]) == 1 << 21
    assert capability_names(1 << 63) == ["CAP_63"]


def test_capabilities_to_drop_keeps_exactly_the_mask() -> None:
    last = max(CAPABILITY_NUMBERS.values())
    dropped = capabilities_to_drop(DOCKER_DEFAULT_MASK, last)
    kept = {c for c in range(last + 1)} - set(dropped)
    assert capability_mask(capability_names(sum(1 << c for c in kept))) == DOCKER_DEFAULT_MASK
    assert CAPABILITY_NUMBERS["CAP_SYS_ADMIN"] in dropped
    assert CAPABILITY_NUMBERS["CAP_MKNOD"] not in dropped
