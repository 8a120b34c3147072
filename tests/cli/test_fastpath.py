"""``pybuild build``'s fast path: a rebuild with nothing to do answered from a record.

Real builds in subprocesses on a temp root.  Each change below must give the
build a normal build gives (the file's new bytes in the image), never the
recorded result; the fast path is seen through PYBUILD_DEBUG_FASTPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pybuild.cli import _fastpath

from ..integration.conftest import read_image_file
from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture

pytestmark = pytest.mark.usefixtures("require_root")

HIT = "pybuild fastpath: hit"


def pybuild(root: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if name != "PYBUILD_FASTPATH"}
    environment.update({"PYBUILD_ROOT": str(root), "PYBUILD_DEBUG_FASTPATH": "1", **(env or {})})
    result = subprocess.run([sys.executable, "-m", "pybuild", *args], env=environment, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, f"pybuild {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build(root: Path, context: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, bool, str]:
    """(image ID, whether the fast path answered, stderr without the debug lines)."""
    result = pybuild(root, "build", "-q", *args, str(context), env=env)
    return result.stdout.strip(), HIT in result.stderr, shown(result.stderr)


def shown(stderr: str) -> str:
    """What a build printed on stderr, without the fast path's debug lines."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith("pybuild fastpath:"))


def answered(root: Path, context: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """The image ID the fast path gives for a rebuild (tried again while a racy source
    of pybuild, edited meanwhile in a shared tree, keeps it from answering)."""
    for _ in range(3):
        image, hit, _ = build(root, context, *args, env=env)
        if hit:
            return image
    raise AssertionError("the fast path never answered")


@pytest.fixture(scope="module")
def base_root(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    root = tmp_path_factory.mktemp("fastpath-base") / "root"
    pybuild(root, "import", str(busybox_tar), "busybox")
    return root


@pytest.fixture
def root(base_root: Path, tmp_path: Path) -> Path:
    """A root of this test's own (a copy of one with busybox imported): prune and rmi stay here."""
    copy = tmp_path / "root"
    subprocess.run(["cp", "-a", str(base_root), str(copy)], check=True)
    for stale in (copy / "fastpath").glob("*"):
        stale.unlink()
    return copy


@pytest.fixture
def project(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    (context / "src" / "sub").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM busybox\nARG FLAVOUR=plain\nCOPY src /src\nRUN --network=none echo $FLAVOUR > /flavour\nCOPY top.txt /top.txt\n")
    (context / "src" / "a.txt").write_text("aaaa\n")
    (context / "src" / "sub" / "b.txt").write_text("bbbb\n")
    os.symlink("a.txt", context / "src" / "link")
    (context / "top.txt").write_text("top\n")
    (context / "unused.txt").write_text("not copied\n")
    return context


def first_build(root: Path, context: Path, *args: str, env: dict[str, str] | None = None) -> str:
    image, hit, _ = build(root, context, *args, env=env)
    assert not hit
    assert answered(root, context, *args, env=env) == image
    return image


def changed_build(root: Path, context: Path, old: str, *args: str, env: dict[str, str] | None = None) -> str:
    """The build after a change: not answered, a new image, the one a normal build gives."""
    image, hit, _ = build(root, context, *args, env=env)
    assert not hit and image != old
    normal, _, _ = build(root, context, *args, env={**(env or {}), "PYBUILD_FASTPATH": "0"})
    assert normal == image
    return image


def test_a_noop_prints_what_the_normal_noop_prints(root: Path, project: Path, tmp_path: Path) -> None:
    pybuild(root, "build", "-t", "app:1", str(project))
    for mode in ("plain", "rawjson", "quiet"):
        args = ["build", f"--progress={mode}", "-t", "app:1", "--iidfile", str(tmp_path / "iid"), "--metadata-file", str(tmp_path / "meta.json"), str(project)]
        normal = pybuild(root, *args, env={"PYBUILD_FASTPATH": "0"})
        expected = {name: (tmp_path / name).read_bytes() for name in ("iid", "meta.json")}
        for _ in range(3):
            for name in expected:
                (tmp_path / name).unlink()
            fast = pybuild(root, *args)
            if HIT in fast.stderr:
                break
        assert HIT in fast.stderr
        assert fast.stdout == normal.stdout
        if mode == "rawjson":  # times differ: the events, their steps and names do not
            assert _untimed(shown(fast.stderr)) == _untimed(shown(normal.stderr))
        else:
            assert shown(fast.stderr) == shown(normal.stderr)
            assert mode == "quiet" or "#1 [2/4] COPY src /src\n#1 CACHED\n" in fast.stderr
        assert {name: (tmp_path / name).read_bytes() for name in expected} == expected
    assert "fastpath" not in pybuild(root, "build", "-t", "app:1", str(project), env={"PYBUILD_DEBUG_FASTPATH": ""}).stderr


def _untimed(text: str) -> list[object]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"} if line.startswith("{") else line for line in text.splitlines()]


def test_touched_files_are_answered_by_content(root: Path, project: Path) -> None:
    image = first_build(root, project)
    # a normal build reads no file (the selection's digest is known): its record keeps the digests of the last
    assert build(root, project, env={"PYBUILD_FASTPATH": "0"})[0] == image
    for path in [*project.rglob("*.txt"), project / "src", project / "src" / "sub"]:
        os.utime(path, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    assert answered(root, project) == image


def test_a_changed_byte_of_the_same_size_with_its_mtime_restored(root: Path, project: Path) -> None:
    old = first_build(root, project, "-t", "app:2")
    path = project / "src" / "sub" / "b.txt"
    st = path.stat()
    path.write_text("bXbb\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed_build(root, project, old, "-t", "app:2")
    assert read_image_file(root, "app:2", "/src/sub/b.txt") == "bXbb\n"


def test_a_mode_change(root: Path, project: Path) -> None:
    old = first_build(root, project)
    os.chmod(project / "top.txt", 0o755)
    changed_build(root, project, old)


def test_a_changed_symlink_target(root: Path, project: Path) -> None:
    old = first_build(root, project)
    os.unlink(project / "src" / "link")
    os.symlink("sub/b.txt", project / "src" / "link")
    changed_build(root, project, old)


def test_a_retargeted_or_replaced_symlinked_directory_a_source_crosses(root: Path, tmp_path: Path) -> None:
    context = tmp_path / "linked"
    for version in ("v1", "v2"):
        (context / version / "inner").mkdir(parents=True)
        (context / version / "inner" / "f.txt").write_text(f"{version}\n")
    os.symlink("v1", context / "current")
    (context / "Dockerfile").write_text("FROM busybox\nCOPY current/inner/f.txt /f.txt\n")
    old = first_build(root, context, "-t", "linked")
    assert read_image_file(root, "linked", "/f.txt") == "v1\n"
    os.unlink(context / "current")
    os.symlink("v2", context / "current")
    retargeted = changed_build(root, context, old, "-t", "linked")
    assert read_image_file(root, "linked", "/f.txt") == "v2\n"
    assert answered(root, context, "-t", "linked") == retargeted
    (context / "v2").rename(context / "v2-old")  # the link stays, the directory it names is another one
    (context / "v2" / "inner").mkdir(parents=True)
    (context / "v2" / "inner" / "f.txt").write_text("v3\n")
    changed_build(root, context, retargeted, "-t", "linked")
    assert read_image_file(root, "linked", "/f.txt") == "v3\n"


def test_a_new_and_a_removed_file_in_a_copied_directory(root: Path, project: Path) -> None:
    old = first_build(root, project, "-t", "app:3")
    (project / "src" / "sub" / "new.txt").write_text("new\n")
    newer = changed_build(root, project, old, "-t", "app:3")
    assert read_image_file(root, "app:3", "/src/sub/new.txt") == "new\n"
    assert answered(root, project, "-t", "app:3") == newer
    (project / "src" / "a.txt").unlink()
    os.unlink(project / "src" / "link")
    changed_build(root, project, newer, "-t", "app:3")


def test_a_changed_dockerignore(root: Path, project: Path) -> None:
    (project / ".dockerignore").write_text("src/sub\n")
    old = first_build(root, project)
    (project / ".dockerignore").write_text("src/link\n")
    changed_build(root, project, old)


def test_a_new_dockerignore_and_a_file_not_copied(root: Path, project: Path) -> None:
    old = first_build(root, project)
    (project / "unused.txt").write_text("changed, never copied\n")
    assert answered(root, project) == old  # the root's listing is not what a COPY of src and top.txt reads
    (project / ".dockerignore").write_text("src/sub\n")
    changed_build(root, project, old)


def test_a_changed_build_argument_by_flag_and_from_the_environment(root: Path, project: Path) -> None:
    old = first_build(root, project, "--build-arg", "FLAVOUR=one")
    changed_build(root, project, old, "--build-arg", "FLAVOUR=two")
    from_env = first_build(root, project, "--build-arg", "FLAVOUR", env={"FLAVOUR": "three"})
    changed_build(root, project, from_env, "--build-arg", "FLAVOUR", "-t", "app:env", env={"FLAVOUR": "four"})
    assert read_image_file(root, "app:env", "/flavour") == "four\n"


def test_a_deleted_result_image(root: Path, project: Path) -> None:
    image = first_build(root, project, "-t", "app:4")
    pybuild(root, "rmi", "app:4")
    again, hit, _ = build(root, project, "-t", "app:4")
    assert not hit
    assert json.loads(pybuild(root, "inspect", "app:4").stdout)[0]["Id"] == again


def test_a_root_pruned_in_between(root: Path, project: Path) -> None:
    image = first_build(root, project, "-t", "app:5")
    pybuild(root, "prune", "--all")
    _, hit, _ = build(root, project, "-t", "app:5")
    assert not hit  # a prune rewrites the index's generation: the record cannot vouch for the cache
    pybuild(root, "rmi", "app:5")
    pybuild(root, "prune", "--all")
    again, hit, _ = build(root, project, "-t", "app:5")
    assert not hit
    assert json.loads(pybuild(root, "inspect", "app:5").stdout)[0]["Id"] == again


def test_a_file_rewritten_within_the_second_of_the_record(root: Path, project: Path) -> None:
    """A rewrite in the clock tick of the signature may keep it (coarse timestamps): forged
    here by writing the new signature into the record; its time is recent, so the content
    is compared and the change is seen."""
    old, _, _ = build(root, project, "-t", "app:6")
    path = project / "top.txt"
    path.write_text("TOP\n")
    record_file = next((root / "fastpath").glob("*.rec"))
    record = _fastpath.Record.parse(record_file.read_bytes())
    paths = _fastpath.split_paths(record.fields[b"paths"])
    index = paths.index(os.fsencode(path))
    from array import array

    sigs = array("q")
    sigs.frombytes(record.fields[b"sigs"])
    sigs[6 * index : 6 * index + 6] = array("q", _fastpath.signature(os.lstat(path)))
    record.fields[b"sigs"] = sigs.tobytes()
    record.fields[b"racy"] = _fastpath.racy_indices(sigs, len(paths), _fastpath._time_ns()).tobytes()
    assert index in array("q", record.fields[b"racy"])
    record.save(str(record_file))
    changed_build(root, project, old, "-t", "app:6")
    assert read_image_file(root, "app:6", "/top.txt") == "TOP\n"


@pytest.mark.parametrize("other", [["--target", "base"], ["--platform", "linux/amd64"], ["-o", "type=local,dest={out}"]])
def test_another_target_platform_or_output_is_not_the_recorded_build(root: Path, tmp_path: Path, other: list[str]) -> None:
    context = tmp_path / "multi"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox AS base\nRUN --network=none echo base > /stage\nFROM base\nRUN --network=none echo final > /stage\n")
    final = first_build(root, context)
    args = [value.format(out=tmp_path / "out") for value in other]
    result = pybuild(root, "build", *args, str(context))
    assert HIT not in result.stderr
    if other[0] == "--target":
        assert result.stderr.count("CACHED") == 1 and final not in result.stderr
    if other[0] == "-o":
        assert (tmp_path / "out" / "stage").read_text() == "final\n"
        (tmp_path / "out" / "stage").unlink()
        again = pybuild(root, "build", *args, str(context))
        assert HIT not in again.stderr and (tmp_path / "out" / "stage").read_text() == "final\n"


def test_a_corrupt_record_is_ignored(root: Path, project: Path) -> None:
    image = first_build(root, project)
    record_file = next((root / "fastpath").glob("*.rec"))
    data = bytearray(record_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    record_file.write_bytes(bytes(data))
    result = pybuild(root, "build", "-q", str(project))
    assert HIT not in result.stderr and "damaged" in result.stderr
    assert result.stdout.strip() == image
    record_file.write_bytes(b"garbage")
    assert pybuild(root, "build", "-q", str(project)).stdout.strip() == image
    # a record whose checksum holds but that would write a file this command does not name
    assert answered(root, project) == image
    record = _fastpath.Record.parse(record_file.read_bytes())
    evil = project.parent / "evil"
    record.lists[b"write"].append(os.fsencode(evil) + b"\0owned")
    record.save(str(record_file))
    result = pybuild(root, "build", "-q", str(project))
    assert HIT not in result.stderr and not evil.exists() and result.stdout.strip() == image


def test_a_base_moved_in_the_registry_under_pull(docker_registry, busybox_tar: Path, root: Path, tmp_path: Path) -> None:  # noqa: F811
    base = f"{docker_registry.host}/fastpath-{uuid.uuid4().hex[:8]}/base:1"
    publisher = tmp_path / "publisher"
    pybuild(publisher, "import", str(busybox_tar), base)
    pybuild(publisher, "push", base)
    context = tmp_path / "pulled"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN --network=none cat /version > /seen 2>/dev/null || echo none > /seen\n")
    first, hit, _ = build(root, context, "--pull", "-t", "pulled:1")
    assert not hit
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "Dockerfile").write_text(f"FROM {base}\nRUN --network=none echo 2 > /version\n")
    pybuild(publisher, "build", "-t", base, str(tmp_path / "v2"))
    pybuild(publisher, "push", base)
    moved, hit, _ = build(root, context, "--pull", "-t", "pulled:1")
    assert not hit and moved != first
    assert read_image_file(root, "pulled:1", "/seen") == "2\n"


def test_the_live_terminal_view_is_replayed(root: Path, project: Path) -> None:
    import pty
    import re

    env = {**os.environ, "PYBUILD_ROOT": str(root), "PYBUILD_DEBUG_FASTPATH": "1"}

    def run_in_pty(extra: dict[str, str]) -> str:
        pid, fd = pty.fork()
        if pid == 0:  # the child: pybuild with a terminal as stdout/stderr (auto picks the live view)
            os.execve(sys.executable, [sys.executable, "-m", "pybuild", "build", "-t", "app:tty", str(project)], {**env, **extra})
        chunks = []
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return b"".join(chunks).decode("utf-8", "replace")

    pybuild(root, "build", "-t", "app:tty", str(project))  # the steps run: what follows has nothing to do
    normal = run_in_pty({"PYBUILD_FASTPATH": "0"})
    for _ in range(3):
        fast = run_in_pty({})
        if HIT in fast:
            break
    assert HIT in fast
    for text in (normal, fast):
        assert "FINISHED" in text and "CACHED [2/4] COPY src /src" in text
        assert re.search(r"\n3 steps: 0 run, 3 cached in \d+\.\ds\r?\n", text)
        assert "naming to docker.io/library/app:tty" in text


def test_a_download_is_asked_again_so_never_recorded(root: Path, tmp_path: Path) -> None:
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "file.txt").write_text("v1\n")
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        context = tmp_path / "dl"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM busybox\nADD http://127.0.0.1:{server.server_address[1]}/file.txt /file.txt\n")
        first = pybuild(root, "build", "-q", "-t", "dl:1", str(context))
        assert "not recorded: a HttpSource reaches outside the host" in first.stderr
        (served / "file.txt").write_text("v2\n")
        second = pybuild(root, "build", "-q", "-t", "dl:1", str(context))
        assert HIT not in second.stderr and second.stdout != first.stdout
        assert read_image_file(root, "dl:1", "/file.txt") == "v2\n"
    finally:
        server.shutdown()


def test_a_build_without_the_cache_answers_the_same_command_with_it(root: Path, project: Path) -> None:
    cold, hit, _ = build(root, project, "--no-cache", "-t", "app:cold")
    assert not hit
    again, hit, _ = build(root, project, "--no-cache", "-t", "app:cold")
    assert not hit and again != cold  # --no-cache itself is never answered: its steps run again
    noop, hit, _ = build(root, project, "-t", "app:cold")  # the first rebuild after it, as a benchmark's no-op
    assert hit and noop == again


def test_an_extended_attribute_added_to_a_copied_file(root: Path, project: Path) -> None:
    old = first_build(root, project)
    try:
        os.setxattr(project / "src" / "a.txt", "user.note", b"1")
    except OSError:
        pytest.skip("this filesystem has no user extended attributes")
    changed_build(root, project, old)


def test_a_file_the_dockerignore_hides_beside_the_sources_is_answered(root: Path, project: Path) -> None:
    """A log, or another tool's Dockerfile, written into a directory a COPY lists changes
    nothing the build reads (benchmarks: BuildKit's Dockerfile.buildkit beside pybuild's)."""
    (project / ".dockerignore").write_text("src/*.log\nsrc/Dockerfile.*\n")
    old = first_build(root, project, "-t", "app:hidden")
    (project / "src" / "build.log").write_text("noise\n")
    (project / "src" / "Dockerfile.other").write_text("FROM scratch\n")
    first = pybuild(root, "build", "-q", "-t", "app:hidden", str(project))
    assert "has other content" not in first.stderr and first.stdout.strip() == old  # (a racy source of a shared tree may miss)
    assert answered(root, project, "-t", "app:hidden") == old
    (project / "src" / "new.txt").write_text("seen\n")  # not hidden: the COPY takes it
    changed_build(root, project, old, "-t", "app:hidden")
    assert read_image_file(root, "app:hidden", "/src/new.txt") == "seen\n"


def test_names_hidden_in_one_directory_are_seen_in_another(root: Path, tmp_path: Path) -> None:
    """The rules are by path: ``a/*.log`` hides a/y.log, not b/y.log -- the same names in b
    are a change there, even though a once listed exactly them."""
    context = tmp_path / "two"
    (context / "a").mkdir(parents=True)
    (context / "b").mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nCOPY a /a\nCOPY b /b\n")
    (context / ".dockerignore").write_text("a/*.log\n")
    for directory in ("a", "b"):
        (context / directory / "x").write_text("x\n")
    (context / "a" / "y.log").write_text("hidden\n")
    old = first_build(root, context, "-t", "app:two")
    (context / "b" / "y.log").write_text("seen\n")
    changed_build(root, context, old, "-t", "app:two")
    assert read_image_file(root, "app:two", "/b/y.log") == "seen\n"
