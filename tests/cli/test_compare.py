"""cli/_compare.py's text and JSON on hand-made reports (no store, no root needed)."""

from __future__ import annotations

import json
import os

from pybuild.cli._compare import as_json, render_text, step_text
from pybuild.oci._compare import Comparison, ImageReport, LayerReport, WastedFile


def layer(index: int, size: int, created_by: str, *, wasted: int = 0, removed: int = 0, shared: bool = False) -> LayerReport:
    return LayerReport(
        index, f"sha256:{index:064x}", f"sha256:{index + 100:064x}", size, created_by, "", 1, 0, 0, size, removed, wasted, shared
    )


def report(name: str, image_id: str, layers: list[LayerReport], wasted: list[WastedFile]) -> ImageReport:
    kept = sum(l.size for l in layers) - sum(w.size for w in wasted)
    return ImageReport(name, image_id, tuple(layers), tuple(sorted(wasted, key=lambda w: -w.size)), kept)


BASE = layer(0, 5_000_000, "", shared=True)


def test_a_chmod_that_copies_files_up_gets_the_rewrite_hint() -> None:
    big = report("app:big", "sha256:" + "a" * 64, [
        BASE,
        layer(1, 40_000_000, "COPY . /app # buildkit", wasted=40_000_000),
        layer(2, 40_000_000, "RUN /bin/sh -c chmod -R a+r /app # buildkit", removed=40_000_000),
    ], [WastedFile(f"/app/f{i}", 10_000_000, 1, 2, True) for i in range(4)])
    small = report("app:small", "sha256:" + "b" * 64, [BASE, layer(1, 40_000_000, "COPY --chmod=644 . /app")], [])
    out = render_text(Comparison(big, small), top=2)
    assert "layer 2 (COPY . /app): 40MB overwritten by layer 3 (RUN chmod -R a+r /app)" in out
    assert "… and 2 more files (20MB)" in out
    assert "app:small is 40MB (47.1%) smaller than app:big" in out
    [hint] = [line for line in out.splitlines() if line.startswith("hint:")]
    assert hint.startswith("hint: app:big: RUN chmod -R a+r /app rewrites 40MB that COPY . /app added")
    assert "COPY --chmod/--chown" in hint


def test_small_waste_gets_no_hint_and_equal_sizes_say_so() -> None:
    a = report("a:1", "sha256:" + "a" * 64, [BASE, layer(1, 100, "RUN x", wasted=10), layer(2, 0, "RUN y", removed=10)],
               [WastedFile("/tmp/x", 10, 1, 2, False)])
    b = report("b:1", "sha256:" + "b" * 64, [BASE, layer(1, 100, "RUN z")], [])
    out = render_text(Comparison(a, b), top=5)
    assert "hint:" not in out
    assert "a:1 and b:1 are the same size (5MB)" in out
    assert as_json(Comparison(a, b), 5)["difference"] == {"smaller": None, "larger": None, "bytes": 0, "percent": 0.0}


def test_paths_that_are_not_utf8_or_hold_control_characters_are_escaped() -> None:
    odd = os.fsdecode(b"/latin1-\xe9\nnext")
    a = report("a:1", "sha256:" + "a" * 64, [BASE, layer(1, 2_000_000, "RUN make", wasted=2_000_000), layer(2, 0, "RUN clean", removed=2_000_000)],
               [WastedFile(odd, 2_000_000, 1, 2, False)])
    out = render_text(Comparison(a, a), top=5)
    out.encode("utf-8")  # printable as UTF-8
    assert "/latin1-\\xe9\\nnext" in out
    assert json.loads(json.dumps(as_json(Comparison(a, a), 5)))["images"][0]["waste"][0]["paths"][0]["path"] == odd


def test_step_text_drops_what_every_step_repeats() -> None:
    assert step_text(layer(0, 0, "RUN /bin/sh -c apt-get update &&\tapt-get install -y gcc # buildkit")) == "RUN apt-get update && apt-get install -y gcc"
    assert step_text(layer(0, 0, "")) == "(no history)"
