"""`.dockerignore`: the pattern table, ignore-file parsing, lookup and the pruning walk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.cache import DockerIgnore, find_ignore_file
from pybuild.errors import ContextError

CASES = json.loads((Path(__file__).parent / "dockerignore_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("pattern", "path", "expected"), CASES["single"])
def test_single_pattern(pattern: str, path: str, expected: bool) -> None:
    assert DockerIgnore.from_text(pattern).matches(path) is expected


@pytest.mark.parametrize(("patterns", "path", "expected"), CASES["multi"])
def test_patterns_in_order(patterns: list[str], path: str, expected: bool) -> None:
    assert DockerIgnore.from_text("\n".join(patterns)).matches(path) is expected


@pytest.mark.parametrize("pattern", CASES["bad"])
def test_malformed_pattern_is_a_context_error(pattern: str) -> None:
    with pytest.raises(ContextError) as info:
        DockerIgnore.from_text(f"ok\n{pattern}\n")
    assert ".dockerignore" in str(info.value)
    assert info.value.hint


def test_ignore_file_lines() -> None:
    lines = CASES["file_lines"]
    assert DockerIgnore.from_text(lines["text"]).patterns == tuple(lines["patterns"])


def test_empty_rules_ignore_nothing() -> None:
    rules = DockerIgnore()
    assert not rules
    assert not rules.matches("anything/at/all")
    assert not DockerIgnore.from_text("# only a comment\n\n").matches("x")


def test_could_include_below_is_exact_for_plain_exceptions() -> None:
    rules = DockerIgnore.from_text("vendor\nbuild\n!build/keep/*.txt\n")
    assert not rules.could_include_below("vendor")
    assert rules.could_include_below("build")
    assert rules.could_include_below("build/keep")
    assert not rules.could_include_below("build/other")
    assert not rules.could_include_below("build/keep/deeper")  # "*.txt" is one element
    assert DockerIgnore.from_text("x\n!**/keep").could_include_below("x/y/z")


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_walk_lists_what_is_kept(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        ["a.go", "b.md", "docs/README.md", "docs/x.md", "node_modules/m/i.js", "build/out/keep.txt", "build/out/o.bin"],
    )
    rules = DockerIgnore.from_text("*.md\n!docs/README.md\nnode_modules\nbuild\n!build/out/keep.txt\n")
    walked = list(rules.walk(tmp_path))
    # "*.md" is anchored at the root: "*" never crosses "/", so docs/x.md stays
    assert walked == ["a.go", "build", "build/out", "build/out/keep.txt", "docs", "docs/README.md", "docs/x.md"]
    # the walk agrees with matches() for every path in the tree
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    kept_files = [p for p in everything if (tmp_path / p).is_file() and not rules.matches(p)]
    assert kept_files == [p for p in walked if (tmp_path / p).is_file()]


def test_walk_skips_ignored_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, ["src/a.py", "node_modules/deep/er/x.js"])
    opened: list[str] = []
    real_scandir = os.scandir

    def spying_scandir(target):
        if isinstance(target, int):
            opened.append(os.readlink(f"/proc/self/fd/{target}"))
        return real_scandir(target)

    monkeypatch.setattr(os, "scandir", spying_scandir)
    assert list(DockerIgnore.from_text("node_modules").walk(tmp_path)) == ["src", "src/a.py"]
    assert not any("node_modules" in p for p in opened)
    assert any(p.endswith("/src") for p in opened)


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _tree(outside, ["secret"])
    context = tmp_path / "ctx"
    context.mkdir()
    os.symlink(outside, context / "link")
    assert list(DockerIgnore().walk(context)) == ["link"]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    dockerfile = tmp_path / "build" / "Dockerfile.prod"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM scratch\n")
    assert find_ignore_file(tmp_path, dockerfile) == tmp_path / ".dockerignore"
    specific = Path(f"{dockerfile}.dockerignore")
    specific.write_text("b\n")
    assert find_ignore_file(tmp_path, dockerfile) == specific
    assert DockerIgnore.load(tmp_path, dockerfile).patterns == ("b",)
    assert DockerIgnore.load(tmp_path).patterns == ("a",)


def context_with_secret(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    (context / "config").mkdir(parents=True)
    (context / "secret.txt").write_text("password\n")
    (context / "app.txt").write_text("app\n")
    return context


def test_a_symlinked_ignore_file_inside_the_context_is_followed(tmp_path: Path) -> None:
    context = context_with_secret(tmp_path)
    (context / "config" / "ignore").write_text("secret.txt\n")
    os.symlink("config/ignore", context / ".dockerignore")
    assert find_ignore_file(context) == context / ".dockerignore"
    rules = DockerIgnore.load(context)
    assert rules.patterns == ("secret.txt",)
    assert "secret.txt" not in list(rules.walk(context))


def test_an_absolute_symlink_to_a_file_inside_the_context_is_followed(tmp_path: Path) -> None:
    context = context_with_secret(tmp_path)
    (context / "config" / "ignore").write_text("secret.txt\n")
    os.symlink(context / "config" / "ignore", context / ".dockerignore")
    assert DockerIgnore.load(context).patterns == ("secret.txt",)


@pytest.mark.parametrize("target", ["../elsewhere", "config/../../elsewhere", "ABSOLUTE"])
def test_a_symlinked_ignore_file_leading_outside_the_context_is_an_error(tmp_path: Path, target: str) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_text("*\n")
    context = context_with_secret(tmp_path)
    os.symlink(str(outside) if target == "ABSOLUTE" else target, context / ".dockerignore")
    with pytest.raises(ContextError, match=r"\.dockerignore is a symlink that leads outside"):
        DockerIgnore.load(context)


def test_a_dangling_symlinked_ignore_file_is_an_error(tmp_path: Path) -> None:
    context = context_with_secret(tmp_path)
    os.symlink("config/missing", context / ".dockerignore")
    with pytest.raises(ContextError, match=r"\.dockerignore is a dangling symlink"):
        DockerIgnore.load(context)


def test_an_ignore_file_that_is_not_a_file_is_an_error(tmp_path: Path) -> None:
    context = context_with_secret(tmp_path)
    (context / ".dockerignore").mkdir()
    with pytest.raises(ContextError, match=r"\.dockerignore is not a regular file"):
        DockerIgnore.load(context)


def test_an_oversized_ignore_file_is_an_error(tmp_path: Path) -> None:
    context = context_with_secret(tmp_path)
    with open(context / ".dockerignore", "wb") as file:
        file.truncate(17 * 1024 * 1024)
    with pytest.raises(ContextError, match="larger than the 16 MiB limit"):
        DockerIgnore.load(context)


def test_a_dockerfile_specific_ignore_file_symlink_is_followed_beside_the_dockerfile(tmp_path: Path) -> None:
    context = context_with_secret(tmp_path)
    dockerfile = context / "build" / "Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM scratch\n")
    (context / "build" / "rules").write_text("secret.txt\n")
    os.symlink("rules", context / "build" / "Dockerfile.dockerignore")
    assert DockerIgnore.load(context, dockerfile).patterns == ("secret.txt",)
    os.remove(context / "build" / "rules")
    with pytest.raises(ContextError, match="Dockerfile.dockerignore is a dangling symlink"):
        DockerIgnore.load(context, dockerfile)


def test_a_file_named_in_the_context_is_read_through_links_inside_it_only(tmp_path: Path) -> None:
    from pybuild.cache import read_in_context

    context = context_with_secret(tmp_path)
    (tmp_path / "host-secret").write_text("host\n")
    os.symlink("../secret.txt", context / "config" / "up")
    os.symlink("config/up", context / "chain")
    os.symlink("../../host-secret", context / "config" / "out")
    assert read_in_context(context, "chain", limit=100) == b"password\n"
    assert read_in_context(context, "absent", limit=100) is None
    assert read_in_context(context, "config/absent", limit=100) is None
    with pytest.raises(ContextError, match="leads outside"):
        read_in_context(context, "config/out", limit=100)
    with pytest.raises(ContextError, match="leads outside"):
        read_in_context(context, "../host-secret", limit=100)
    os.symlink("loop", context / "loop")
    with pytest.raises(ContextError, match="too many levels"):
        read_in_context(context, "loop", limit=100)


# Patterns whose translation to a backtracking regex took exponential or high
# polynomial time (Go's regexp, which Docker uses, is linear): each must answer
# at once.  Under the old translation the first took minutes at depth 30.
HOSTILE_PATTERNS = ["**/" * 40 + "zz", "**/a" * 30 + "zz", "*a" * 40 + "zz", "a*" * 30 + "/**/" + "*b" * 30 + "zz"]


@pytest.mark.parametrize("pattern", HOSTILE_PATTERNS)
def test_hostile_ignore_patterns_match_in_linear_time(pattern: str) -> None:
    rules = DockerIgnore.from_text(pattern)
    deep = "/".join(["a"] * 60) + "/b"
    assert not rules.matches(deep)
    assert not rules.matches("a" * 200)
    assert rules.matches("zz") is pattern.startswith("**/" * 40)


def test_hostile_copy_wildcards_match_in_linear_time() -> None:
    from pybuild.cache._gomatch import compile_element

    match = compile_element("*a" * 40 + "zz")
    assert not match("a" * 250)
    assert match("a" * 40 + "zz")


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/**/x", "x", True), ("**/**/x", "a/b/x", True), ("**/**/x", "a/bx", False),
        ("a*b*c", "abc", True), ("a*b*c", "a/b/c", False), ("a*b*c", "axxbyyc", True),
        ("**/a*b*/**", "q/aXbY/z", True), ("**/a*b*/**", "q/aXY/z", False),
        ("x/**/y/**/z", "x/y/z", True), ("x/**/y/**/z", "x/1/y/2/3/z", True), ("x/**/y/**/z", "x/1/y2/z", False),
        ("*[ab]*?", "cbd", True), ("*[ab]*?", "cb", False), ("*[^b]*x", "ab/x", True), ("*[^b]*x", "bbx", False),
    ],
)
def test_patterns_matched_without_a_regex_agree_with_patternmatcher(pattern: str, path: str, expected: bool) -> None:
    assert DockerIgnore.from_text(pattern).matches(path) is expected


def _both_ways(monkeypatch: pytest.MonkeyPatch, pattern: str):  # type: ignore[no-untyped-def]
    from pybuild.cache import _gomatch

    compiled = []
    for slow in (True, False):
        monkeypatch.setattr(_gomatch, "_backtracking_is_slow", lambda tokens, slow=slow: slow)
        compiled.append(_gomatch.compile_ignore_pattern(pattern))
    monkeypatch.undo()
    return compiled


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pattern=st.lists(st.sampled_from(["a", "b", "/", "*", "**", "**/", "?", "[ab]", "[^a]", "\\*", ".", "^", "]"]), min_size=1, max_size=8).map("".join),
    path=st.lists(st.sampled_from(["a", "b", "/", "x", ".", "*", "^", "]"]), max_size=12).map("".join),
)
def test_the_automaton_matches_what_the_regex_translation_matches(monkeypatch: pytest.MonkeyPatch, pattern: str, path: str) -> None:
    from pybuild.cache._gomatch import BadPattern

    try:
        automaton, regex = _both_ways(monkeypatch, pattern)
    except BadPattern:
        return
    assert automaton(path) is regex(path)
