"""Context selection and hashing: what COPY sources select, and when the digest changes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pybuild.cache import CacheIndex, ContextHasher, ContextPath, ContextReads, DockerIgnore, diff_entries
from pybuild.cache._context import settled_before
from pybuild.errors import ContextError


def make_tree(root: Path, spec: dict[str, str]) -> None:
    """Files from a {relative path: content} map; "->target" makes a symlink, "/" a directory."""
    for rel, content in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "/":
            path.mkdir(exist_ok=True)
        elif content.startswith("->"):
            os.symlink(content[2:], path)
        else:
            path.write_text(content)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    make_tree(
        context,
        {
            "Dockerfile": "FROM scratch\n",
            "src/main.py": "print('hi')\n",
            "src/util.py": "X = 1\n",
            "src/pkg/__init__.py": "",
            "src/pkg/mod.py": "Y = 2\n",
            "docs/guide.md": "# guide\n",
            "README.md": "readme\n",
            "a1.txt": "a1",
            "a2.txt": "a2",
            "b1.txt": "b1",
            "empty/": "/",
        },
    )
    return context


def hasher(context: Path, ignore: str = "", **kw) -> ContextHasher:
    return ContextHasher(context, DockerIgnore.from_text(ignore), **kw)


# -- what is selected ---------------------------------------------------------


def test_directory_selects_its_subtree(ctx: Path) -> None:
    sel = hasher(ctx).select(["src"])
    assert set(sel.entries) == {"src", "src/main.py", "src/util.py", "src/pkg", "src/pkg/__init__.py", "src/pkg/mod.py"}
    assert sel.root_paths == {"src": (ContextPath("src", "src", "dir"),)}
    assert all(d.startswith("sha256:") and len(d) == 71 for d in sel.entries.values())


def test_file_and_whole_context(ctx: Path) -> None:
    h = hasher(ctx)
    assert set(h.select(["README.md"]).entries) == {"README.md"}
    whole = h.whole()
    assert "." in whole.entries and "src/pkg/mod.py" in whole.entries and "empty" in whole.entries
    assert h.select(["."]).digest() == whole.digest() == h.select(["./"]).digest()


@pytest.mark.parametrize(
    ("source", "matched"),
    [
        ("*.txt", ["a1.txt", "a2.txt", "b1.txt"]),
        ("a?.txt", ["a1.txt", "a2.txt"]),
        ("[ab]1.txt", ["a1.txt", "b1.txt"]),
        ("[^a]1.txt", ["b1.txt"]),
        ("src/*.py", ["src/main.py", "src/util.py"]),
        ("*/pkg", ["src/pkg"]),
        ("s*/p*/m*", ["src/pkg/mod.py"]),
        ("*", ["Dockerfile", "README.md", "a1.txt", "a2.txt", "b1.txt", "docs", "empty", "src"]),
    ],
)
def test_wildcards(ctx: Path, source: str, matched: list[str]) -> None:
    sel = hasher(ctx).select([source])
    assert [m.path for m in sel.root_paths[source]] == matched
    for path in matched:
        assert path in sel.entries


def test_wildcard_characters_in_names(ctx: Path) -> None:
    make_tree(ctx, {"weird*name": "w", "back\\slash": "b"})
    h = hasher(ctx)
    assert set(h.select(["weird[*]name"]).entries) == {"weird*name"}
    # a wildcard-free source is a plain path, backslash and all (as in BuildKit)
    assert set(h.select(["back\\slash"]).entries) == {"back\\slash"}
    with pytest.raises(ContextError):
        h.select(["weird\\*name"])


def test_a_source_matching_nothing_is_named(ctx: Path) -> None:
    h = hasher(ctx)
    with pytest.raises(ContextError) as info:
        h.select(["src", "missing/file.py"])
    assert '"/missing/file.py"' in str(info.value) and "not found" in str(info.value)
    with pytest.raises(ContextError) as info:
        h.select(["*.nothing"])
    assert "*.nothing" in str(info.value)
    assert h.select(["*.nothing"], allow_empty_wildcard=True).entries == {}
    with pytest.raises(ContextError):
        h.select(["README.md/inside"])  # a file is not a directory


def test_invalid_wildcard_is_a_context_error(ctx: Path) -> None:
    with pytest.raises(ContextError):
        hasher(ctx).select(["[a-"])


# -- the context boundary -----------------------------------------------------


def test_sources_outside_the_context_are_clamped_to_it(ctx: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("outside")
    h = hasher(ctx)
    assert h.select(["../README.md"]).digest() == h.select(["README.md"]).digest()
    assert h.select(["/src/../README.md"]).digest() == h.select(["README.md"]).digest()
    assert h.select(["../../../"]).digest() == h.whole().digest()
    with pytest.raises(ContextError):
        h.select(["../outside.txt"])  # means <context>/outside.txt, which does not exist


def test_symlinks_inside_a_selection_are_hashed_not_followed(ctx: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret v1")
    os.symlink(secret, ctx / "src" / "escape")
    h = hasher(ctx)
    before = h.select(["src"])
    assert "src/escape" in before.entries
    secret.write_text("secret v2, longer")
    after = h.select(["src"])
    assert after.digest() == before.digest(), "the file outside is never read"
    os.unlink(ctx / "src" / "escape")
    os.symlink("/somewhere/else", ctx / "src" / "escape")
    moved = h.select(["src"])
    assert diff_entries(before.entries, moved.entries).modified == ("src/escape",)


def test_a_symlink_source_is_followed_inside_the_context_only(ctx: Path, tmp_path: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    os.symlink("/etc/passwd", ctx / "abs-link")  # means <context>/etc/passwd
    os.symlink("../../../README.md", ctx / "src" / "up-link")  # climbs to the context root
    os.symlink("src", ctx / "dir-link")
    h = hasher(ctx)
    with pytest.raises(ContextError):
        h.select(["abs-link"])
    make_tree(ctx, {"etc/passwd": "context's own"})
    sel = h.select(["abs-link"])
    assert sel.root_paths["abs-link"] == (ContextPath("abs-link", "etc/passwd", "file"),)
    assert set(sel.entries) == {"abs-link", "etc/passwd"}

    up = h.select(["src/up-link"])
    assert up.root_paths["src/up-link"][0].resolved == "README.md"

    via = h.select(["dir-link"])
    assert via.root_paths["dir-link"][0] == ContextPath("dir-link", "src", "dir")
    assert "src/pkg/mod.py" in via.entries
    before = via.digest()
    (ctx / "src" / "pkg" / "mod.py").write_text("Y = 3\n")
    assert h.select(["dir-link"]).digest() != before, "content behind a followed link counts"

    os.symlink("nowhere", ctx / "dangling")
    with pytest.raises(ContextError):
        h.select(["dangling"])


def test_symlink_loops_are_an_error(ctx: Path) -> None:
    os.symlink("loop-b", ctx / "loop-a")
    os.symlink("loop-a", ctx / "loop-b")
    with pytest.raises(ContextError) as info:
        hasher(ctx).select(["loop-a"])
    assert "symbolic links" in str(info.value)


def test_wildcards_do_not_descend_through_symlinked_directories(ctx: Path) -> None:
    os.symlink("src", ctx / "srclink")
    sel = hasher(ctx).select(["*/main.py"])
    assert [m.path for m in sel.root_paths["*/main.py"]] == ["src/main.py"]


def test_a_source_through_a_symlinked_directory_is_followed(ctx: Path) -> None:
    make_tree(ctx, {"lib/inner/f.txt": "f", "lib/inner/flink": "->f.txt", "alias": "->lib", "chain": "->alias", "absolute": "->/lib"})
    h = hasher(ctx)
    direct = h.select(["lib/inner/f.txt"]).entries["lib/inner/f.txt"]
    for source in ("alias/inner/f.txt", "absolute/inner/f.txt", "alias/../alias/inner/f.txt"):
        sel = h.select([source])
        assert sel.root_paths[source][0].resolved == "lib/inner/f.txt"
        assert sel.entries["lib/inner/f.txt"] == direct
    assert set(h.select(["alias/inner/f.txt"]).entries) == {"alias", "lib/inner/f.txt"}
    assert set(h.select(["alias/inner/*.txt"]).entries) == {"alias", "lib/inner/f.txt"}
    assert set(h.select(["alias/inner"]).entries) == {"alias", "lib/inner", "lib/inner/f.txt", "lib/inner/flink"}
    # every link on the way counts, each where it really is: the named one too
    chained = h.select(["chain/inner/flink"])
    assert chained.root_paths["chain/inner/flink"] == (ContextPath("chain/inner/flink", "lib/inner/f.txt", "file"),)
    assert set(chained.entries) == {"chain", "alias", "lib/inner/flink", "lib/inner/f.txt"}
    assert set(h.select(["alias/*/flink"]).entries) == {"alias", "lib/inner/flink", "lib/inner/f.txt"}


def test_a_named_symlink_in_a_plain_directory_is_its_only_link_entry(ctx: Path) -> None:
    # as it always was (cache keys of such builds must not move): a chain it starts is not added
    make_tree(ctx, {"first": "->second", "second": "->src/main.py"})
    assert set(hasher(ctx).select(["first"]).entries) == {"first", "src/main.py"}


def test_what_a_symlinked_directory_leads_to_counts(ctx: Path) -> None:
    make_tree(ctx, {"lib/inner/f.txt": "f", "lib2/inner/f.txt": "f", "alias": "->lib"})
    h = hasher(ctx)
    before = h.select(["alias/inner/f.txt"])
    (ctx / "lib/inner/f.txt").write_text("g")
    edited = h.select(["alias/inner/f.txt"])
    assert diff_entries(before.entries, edited.entries).modified == ("lib/inner/f.txt",)
    os.unlink(ctx / "alias")
    os.symlink("lib2", ctx / "alias")
    moved = h.select(["alias/inner/f.txt"])
    changes = diff_entries(edited.entries, moved.entries)
    assert changes.modified == ("alias",) and changes.added == ("lib2/inner/f.txt",)
    assert len({before.digest(), edited.digest(), moved.digest()}) == 3


def test_a_symlinked_directory_never_leads_out_of_the_context(ctx: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    os.symlink(outside, ctx / "abs-out")  # means <context>/<tmp_path>/outside
    os.symlink("../../../../outside", ctx / "src" / "up-out")  # climbs to the context root only
    h = hasher(ctx)
    for source in ("abs-out/secret.txt", "src/up-out/secret.txt", "abs-out/*.txt", "src/up-out"):
        with pytest.raises(ContextError) as info:
            h.select([source])
        assert "not found" in str(info.value) or "no files match" in str(info.value)
    make_tree(ctx, {"outside/secret.txt": "context's own"})
    sel = h.select(["src/up-out/secret.txt"])
    assert sel.root_paths["src/up-out/secret.txt"][0].resolved == "outside/secret.txt"
    assert set(sel.entries) == {"src/up-out", "outside/secret.txt"}
    assert sel.entries["outside/secret.txt"] == h.select(["outside/secret.txt"]).entries["outside/secret.txt"]
    (outside / "secret.txt").write_text("host secret, changed")
    assert h.select(["src/up-out/secret.txt"]).digest() == sel.digest(), "the file outside is never read"


def test_a_symlinked_directory_swapped_for_one_leading_out_is_not_followed(ctx: Path, tmp_path: Path) -> None:
    make_tree(ctx, {"lib/f.txt": "f", "alias": "->lib"})
    (tmp_path / "f.txt").write_text("host")
    select = hasher(ctx).select
    assert select(["alias/f.txt"]).root_paths["alias/f.txt"][0].resolved == "lib/f.txt"
    os.unlink(ctx / "alias")
    os.symlink(tmp_path, ctx / "alias")
    with pytest.raises(ContextError):
        select(["alias/f.txt"])


# -- what the digest depends on ----------------------------------------------


def test_mtime_and_owner_do_not_count(ctx: Path) -> None:
    h = hasher(ctx)
    before = h.select(["src"])
    os.utime(ctx / "src" / "main.py", (1, 1))
    os.utime(ctx / "src" / "pkg", (2, 2))
    if os.geteuid() == 0:
        os.chown(ctx / "src" / "util.py", 1234, 5678)
    assert h.select(["src"]).digest() == before.digest()


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda c: (c / "src/main.py").write_text("print('bye')\n"), "src/main.py"),
        (lambda c: (c / "src/main.py").write_text("print('hI')\n"), "src/main.py"),  # same size
        (lambda c: os.chmod(c / "src/util.py", 0o755), "src/util.py"),
        (lambda c: os.chmod(c / "src/pkg", 0o700), "src/pkg"),
        (lambda c: os.chmod(c / "src/util.py", 0o4644), "src/util.py"),
        (lambda c: os.setxattr(c / "src/util.py", "user.note", b"v"), "src/util.py"),
    ],
)
def test_content_and_metadata_changes_count(ctx: Path, change, path: str) -> None:
    h = hasher(ctx)
    before = h.select(["src"])
    change(ctx)
    after = h.select(["src"])
    assert after.digest() != before.digest()
    changes = diff_entries(before.entries, after.entries)
    assert changes.modified == (path,) and not changes.added and not changes.removed
    assert path in changes.describe()


def test_added_and_removed_files_are_reported(ctx: Path) -> None:
    h = hasher(ctx)
    before = h.select(["src"])
    (ctx / "src" / "new.py").write_text("")
    os.unlink(ctx / "src" / "util.py")
    changes = diff_entries(before.entries, h.select(["src"]).entries)
    assert changes.added == ("src/new.py",) and changes.removed == ("src/util.py",)
    assert "src/new.py added" in changes.describe() and "src/util.py removed" in changes.describe()


def test_changes_to_unselected_or_ignored_files_do_not_count(ctx: Path) -> None:
    make_tree(ctx, {"src/generated.log": "log"})
    h = hasher(ctx, "**/*.log\n")
    before = h.select(["src"])
    assert "src/generated.log" not in before.entries
    (ctx / "src" / "generated.log").write_text("a different log")
    (ctx / "README.md").write_text("changed, but not selected")
    (ctx / "docs" / "new.md").write_text("new")
    after = h.select(["src"])
    assert after.digest() == before.digest()
    # main.py, util.py, pkg/__init__.py, pkg/mod.py
    assert after.stats.files_hashed == 4, "only the selected files are read"


def test_digest_is_independent_of_the_context_location(tmp_path: Path) -> None:
    spec = {"a/b.txt": "b", "a/c/d.txt": "d", "link": "->a/b.txt"}
    make_tree(tmp_path / "one", spec)
    make_tree(tmp_path / "two", spec)
    assert hasher(tmp_path / "one").whole().digest() != ""
    assert hasher(tmp_path / "one").select(["a", "link"]).digest() == hasher(tmp_path / "two").select(["a", "link"]).digest()


def test_non_utf8_names(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    name = os.fsdecode(b"caf\xe9.txt")
    (context / name).write_text("x")
    sel = hasher(context).whole()
    assert name in sel.entries
    assert sel.digest().startswith("sha256:")


# -- .dockerignore and --exclude ----------------------------------------------


def test_ignored_paths_do_not_exist(ctx: Path) -> None:
    h = hasher(ctx, "docs\n*.txt\n!b1.txt\nsrc/pkg\n")
    with pytest.raises(ContextError) as info:
        h.select(["docs"])
    assert "/docs" in str(info.value)
    with pytest.raises(ContextError):
        h.select(["a1.txt"])
    assert [m.path for m in h.select(["*.txt"]).root_paths["*.txt"]] == ["b1.txt"]
    assert set(h.select(["src"]).entries) == {"src", "src/main.py", "src/util.py"}
    assert "docs" not in h.whole().entries


def test_exceptions_reach_into_ignored_directories(ctx: Path) -> None:
    h = hasher(ctx, "src\n!src/pkg/mod.py\n")
    sel = h.select(["src"])
    assert set(sel.entries) == {"src", "src/pkg", "src/pkg/mod.py"}
    whole = h.whole()
    assert {"src", "src/pkg", "src/pkg/mod.py"} <= set(whole.entries)
    assert "src/main.py" not in whole.entries


def test_copy_excludes_apply_below_each_source(ctx: Path) -> None:
    h = hasher(ctx)
    sel = h.select(["src"], excludes=["*.py"])
    assert set(sel.entries) == {"src", "src/pkg", "src/pkg/__init__.py", "src/pkg/mod.py"}
    sel = h.select(["src"], excludes=["**/*.py", "!pkg/mod.py"])
    assert set(sel.entries) == {"src", "src/pkg", "src/pkg/mod.py"}
    assert h.select(["src"], excludes=["pkg"]).digest() != h.select(["src"]).digest()


# -- the stat cache -----------------------------------------------------------


def test_stat_cache_skips_unchanged_files_and_rereads_touched_ones(ctx: Path) -> None:
    index = CacheIndex.memory()
    h = hasher(ctx, stat_cache=index, racy_window=0)
    cold = h.select(["."])
    assert cold.stats.files_hashed == 10 and cold.stats.stat_cache_hits == 0
    warm = h.select(["."])
    assert warm.digest() == cold.digest()
    assert warm.stats.files_hashed == 0 and warm.stats.stat_cache_hits == 10
    for path in ctx.rglob("*"):
        os.utime(path, follow_symlinks=False)
    touched = h.select(["."])
    assert touched.digest() == cold.digest()
    assert touched.stats.files_hashed == 10, "a touched file is read again"
    (ctx / "src" / "main.py").write_text("print('hI')\n")  # same size
    changed = h.select(["."])
    assert changed.digest() != cold.digest()
    assert diff_entries(cold.entries, changed.entries).modified == ("src/main.py",)
    index.close()


def test_files_with_xattrs_are_never_taken_from_the_stat_cache(ctx: Path) -> None:
    index = CacheIndex.memory()
    h = hasher(ctx, stat_cache=index, racy_window=0)
    os.setxattr(ctx / "src" / "util.py", "user.origin", b"one")
    first = h.select(["src"])
    second = h.select(["src"])
    assert second.digest() == first.digest()
    assert second.stats.files_hashed == 1 and second.stats.stat_cache_hits == 3
    os.removexattr(ctx / "src" / "util.py", "user.origin")
    third = h.select(["src"])
    assert diff_entries(first.entries, third.entries).modified == ("src/util.py",)
    index.close()


def test_recently_changed_files_are_not_cached(ctx: Path) -> None:
    index = CacheIndex.memory()
    h = hasher(ctx, stat_cache=index, racy_window=3600, fine_racy_window=3600)
    h.select(["src"])
    again = h.select(["src"])
    assert again.stats.stat_cache_hits == 0 and again.stats.files_hashed == 4
    index.close()


def test_a_nanosecond_ctime_is_settled_sooner_than_a_whole_one() -> None:
    start, second, fine = 10**12, 10**12 - 10**9, 10**12 - 5 * 10**7
    assert settled_before(start - 2 * 10**9 + 1, second, fine) and settled_before(start - 2 * 10**9, second, fine)
    assert settled_before(start - 10**8 + 7, second, fine)  # below the millisecond: 0.1 s is old enough
    assert not settled_before(start - 10**7 + 7, second, fine)  # within 50 ms
    assert not settled_before(start - 10**8, second, fine)  # whole milliseconds: maybe a coarse file system
    assert not settled_before(start - 5 * 10**8, second, fine)  # whole seconds: within the second
    assert not settled_before(start + 10**6 + 3, second, fine)  # ahead of the start


def test_files_changed_a_moment_before_are_remembered_where_times_are_fine(ctx: Path) -> None:
    """The rebuild after a `touch` of every file: the build right after it must read
    them, the next one not (on a file system keeping nanoseconds, like this one)."""
    index = CacheIndex.memory()
    h = hasher(ctx, stat_cache=index)
    for path in (ctx / "src").rglob("*"):
        os.utime(path, follow_symlinks=False)
    ctimes = [os.lstat(p).st_ctime_ns for p in (ctx / "src").rglob("*") if p.is_file()]
    time.sleep(0.1)
    first = h.select(["src"])
    assert first.stats.files_hashed == 4
    again = h.select(["src"])
    fine = sum(1 for c in ctimes if c % 1_000_000)
    assert (again.stats.stat_cache_hits, again.stats.files_hashed) == (fine, 4 - fine)
    assert again.digest() == first.digest()
    index.close()


def test_parallel_selections_agree(ctx: Path, tmp_path: Path) -> None:
    index = CacheIndex(tmp_path / "index.db")
    h = hasher(ctx, stat_cache=index, racy_window=0)
    expected = h.select(["src", "*.txt"]).digest()
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(h.select(["src", "*.txt"]).digest())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [expected] * 20
    index.close()


def test_unreadable_file_is_a_context_error(ctx: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    os.chmod(ctx / "src" / "main.py", 0)
    with pytest.raises(ContextError) as info:
        hasher(ctx).select(["src"])
    assert "src/main.py" in str(info.value)


def test_unchanged_selection_digest_comes_from_its_fingerprint(tmp_path: Path) -> None:
    from pybuild.cache import CacheIndex, ContextHasher, DockerIgnore

    context = tmp_path / "ctx"
    (context / "src").mkdir(parents=True)
    for i in range(20):
        (context / "src" / f"f{i}.txt").write_text(f"file {i}\n")
    index = CacheIndex.memory()
    hasher = ContextHasher(context, DockerIgnore(), index, racy_window=0)
    first = hasher.select(["src"])
    full_digest = first.digest()
    assert first.known_digest is None  # computed the long way, and remembered
    again = hasher.select(["src"])
    assert again.known_digest == full_digest  # nothing changed: the fingerprint hit
    assert dict(again.entries) == dict(first.entries)  # entries are still there when asked for
    os.utime(context / "src" / "f3.txt", (1, 1))  # a new stat key, same bytes
    touched = hasher.select(["src"])
    assert touched.known_digest is None and touched.digest() == full_digest
    (context / "src" / "f3.txt").write_text("changed\n")
    changed = hasher.select(["src"])
    assert changed.known_digest is None and changed.digest() != full_digest


# -- what a hasher read (ContextReads, for the build command's fast path) ----------


def _reads(ctx: Path, sources: list[str], index: CacheIndex | None = None, *, twice: bool = False) -> ContextReads:
    reads = ContextReads()
    hasher = ContextHasher(ctx, DockerIgnore.load(ctx), index, reads=reads, racy_window=0)
    for _ in range(2 if twice else 1):
        hasher.select(sources, allow_empty_wildcard=True).digest()
    return reads


def test_reads_hold_every_copied_path_with_its_content(ctx: Path) -> None:
    import hashlib

    reads = _reads(ctx, ["src"])
    whole = {rel for rel, entry in reads.paths.items() if entry.whole}
    assert whole == {"src", "src/main.py", "src/util.py", "src/pkg", "src/pkg/__init__.py", "src/pkg/mod.py"}
    assert reads.paths["src/main.py"].content == "sha256:" + hashlib.sha256(b"print('hi')\n").hexdigest()
    assert reads.paths["src/pkg"].content == ("__init__.py", "mod.py")
    assert reads.paths["src/main.py"].stat.st_ino == os.lstat(ctx / "src/main.py").st_ino
    assert "docs" not in reads.paths and "README.md" not in reads.paths
    assert reads.consistent and reads.started_ns is not None


def test_reads_hold_files_a_known_selection_digest_spared_reading(ctx: Path) -> None:
    index = CacheIndex.memory()
    first = _reads(ctx, ["src"], index)
    second = _reads(ctx, ["src"], index, twice=True)  # the second select answers from the fingerprint
    assert first.paths["src/util.py"].content is not None
    assert second.paths["src/util.py"].whole and second.paths["src/util.py"].content is None
    assert second.paths["src/util.py"].stat.st_ino == first.paths["src/util.py"].stat.st_ino


def test_reads_note_followed_links_crossed_directories_and_absent_paths(ctx: Path) -> None:
    make_tree(ctx, {"lib/file.txt": "x\n", "alias": "->lib", "other/deep/file.txt": "y\n"})
    reads = _reads(ctx, ["alias", "other/deep/file.txt", "nothing*", "docs/missing*", "gone/x*"])
    assert reads.paths["alias"].whole and reads.paths["alias"].content == "lib"  # its target decides what is copied
    assert reads.paths["lib/file.txt"].whole
    assert not reads.paths["other/deep"].whole  # crossed: only that it stays the same directory
    assert reads.paths["other/deep/file.txt"].whole
    assert reads.paths["."].whole and isinstance(reads.paths["."].content, tuple)  # a wildcard lists the root
    assert reads.paths["docs"].whole and reads.paths["docs"].content == ("guide.md",)
    assert reads.absent == {"gone"}  # made later, it would match


def test_reads_note_a_symlinked_directory_a_source_crossed_and_its_target(ctx: Path) -> None:
    make_tree(ctx, {"lib/inner/f.txt": "f", "alias": "->lib"})
    reads = _reads(ctx, ["alias/inner/f.txt"])
    assert reads.paths["alias"].whole and reads.paths["alias"].content == "lib"  # retargeting it changes what is copied
    assert reads.paths["alias"].stat.st_ino == os.lstat(ctx / "alias").st_ino
    assert reads.paths["lib"].stat.st_ino == os.lstat(ctx / "lib").st_ino  # the directory it leads to
    assert not reads.paths["lib/inner"].whole
    assert reads.paths["lib/inner/f.txt"].whole
    assert not any(rel.startswith("alias/") for rel in reads.paths)  # only paths without symlinks in them
    assert reads.consistent


def test_reads_of_a_path_seen_in_two_states_are_not_consistent(ctx: Path) -> None:
    reads = ContextReads()
    hasher = ContextHasher(ctx, None, None, reads=reads)
    hasher.select(["src/main.py"])
    (ctx / "src/main.py").write_text("print('changed')\n")
    hasher.select(["src/main.py"])
    assert not reads.consistent


def test_files_with_extended_attributes_have_no_checkable_content(ctx: Path) -> None:
    try:
        os.setxattr(ctx / "README.md", "user.note", b"1")
    except OSError:
        pytest.skip("this filesystem has no user extended attributes")
    reads = _reads(ctx, ["README.md"])
    assert reads.paths["README.md"].whole and reads.paths["README.md"].content is None
