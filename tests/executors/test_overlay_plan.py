"""Splitting long layer chains, and the mount(2) option string for old kernels."""

from __future__ import annotations

import pytest

from pybuild.executors._overlay import FLATTEN_CHUNK, MAX_LOWERS, legacy_max_lowers, legacy_overlay_options, plan_chain


def chain(n: int) -> tuple[str, ...]:
    return tuple(f"/layers/{i}" for i in reversed(range(n)))  # top first


@pytest.mark.parametrize("n", [1, 2, MAX_LOWERS])
def test_short_chains_are_mounted_directly(n: int) -> None:
    plan = plan_chain(chain(n))
    assert plan.direct == chain(n) and plan.flatten == ()


@pytest.mark.parametrize("n", [MAX_LOWERS + 1, 1000, 1001, 5000, 20000])
def test_long_chains_flatten_a_bottom_prefix_at_chunk_boundaries(n: int) -> None:
    layers = chain(n)
    plan = plan_chain(layers)
    prefix = plan.flatten[-1]
    # The mount gets the direct layers plus one flattened layer, within the kernel's limit.
    assert len(plan.direct) + 1 <= MAX_LOWERS
    # Every layer is either direct or in the flattened prefix, and the prefix is the bottom.
    assert len(plan.direct) + prefix == n
    assert plan.direct == layers[: n - prefix]
    assert plan.flatten == tuple(range(FLATTEN_CHUNK, prefix + 1, FLATTEN_CHUNK))


def test_prefixes_are_stable_as_the_chain_grows() -> None:
    # A chain that grows at the top keeps reusing the same flattened prefixes.
    smaller, larger = plan_chain(chain(800)), plan_chain(chain(900))
    assert set(smaller.flatten) <= set(larger.flatten)


def test_legacy_options_escape_separators() -> None:
    text = legacy_overlay_options(("/a:b", "/c,d"), "/up", "/work")
    assert text.startswith("lowerdir=/a\\:b:/c\\,d,upperdir=/up,workdir=/work,")
    assert "redirect_dir=off" in text and "metacopy=off" in text and "index=off" in text


def test_legacy_limit_fits_a_page() -> None:
    layers = tuple("/" + "x" * 100 + str(i) for i in range(1000))
    count = legacy_max_lowers(layers)
    assert len(legacy_overlay_options(layers[:count], "/u" * 50, "/w" * 50)) < 4096
