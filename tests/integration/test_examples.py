"""The examples build with pybuild and do what their READMEs say.

- examples/base-images/make-gcc-rootfs makes a gcc base from this machine's
  Debian packages; gcc links dynamically and statically inside a RUN step;
- examples/c-hello: the multi-stage image is a small fraction of the
  single-stage one, and both programs print "Hello World!";
- examples/parallel: the four independent stages run at the same time;
- examples/cache-mount: the downloads survive in the cache mount and never
  reach the image;
- examples/run-all builds them all and runs the two c-hello images and multiarch.

The gcc root filesystem tarball (about 200 MB) is kept between runs in
/var/tmp/pybuild-test-cache/, named by the versions of the packages in it
and by the script that made it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .._peers import peer_unavailable
from .conftest import pybuild

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MAKE_GCC_ROOTFS = EXAMPLES / "base-images" / "make-gcc-rootfs"
CACHE = Path("/var/tmp/pybuild-test-cache")


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.endswith(" installed")


def cached_gcc_rootfs(name: str, extra_packages: tuple[str, ...] = ()) -> Path:
    """make-gcc-rootfs's tar (with ``--package`` for each of ``extra_packages``), kept in
    CACHE as NAME-KEY-SCRIPT.tar: made again only when the packages or the script change."""
    missing = [p for p in ("gcc", "libc6-dev", "busybox-static", *extra_packages) if not _installed(p)]
    if missing:
        peer_unavailable(f"not installed: {' '.join(missing)}", " ".join(missing))
    flags = [f"--package={p}" for p in extra_packages]
    key = subprocess.run([sys.executable, str(MAKE_GCC_ROOTFS), *flags, "--key"], capture_output=True, text=True, check=True).stdout.strip()
    script = hashlib.sha256(MAKE_GCC_ROOTFS.read_bytes()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}-{script}.tar"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for old in CACHE.glob(f"{name}-*.tar"):
            old.unlink(missing_ok=True)
        partial = CACHE / f".{path.name}.{os.getpid()}"
        subprocess.run([sys.executable, str(MAKE_GCC_ROOTFS), *flags, str(partial)], check=True, capture_output=True)
        os.replace(partial, path)
    return path


@pytest.fixture(scope="session")
def gcc_tar() -> Path:
    """The gcc base's root filesystem tar, made once per package versions and script."""
    return cached_gcc_rootfs("gcc-rootfs")


@pytest.fixture
def gcc_image(root: Path, gcc_tar: Path, require_root: None) -> str:
    pybuild("import", str(gcc_tar), "gcc:local", root=root)
    return "gcc:local"


def _build(root: Path, *args: str) -> str:
    """Build with plain progress; return what it printed."""
    result = pybuild("build", "--progress=plain", *args, root=root)
    return result.stdout + result.stderr


def _image_size(view) -> int:  # type: ignore[no-untyped-def]
    return sum(view.store.layer_sizes(view.image))


# ---------------------------------------------------------------- the gcc base


def test_gcc_rootfs_is_a_merged_usr_tree_with_a_shell_and_users(gcc_tar: Path) -> None:
    with tarfile.open(gcc_tar) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for top in ("bin", "lib", "lib64", "sbin"):
            assert members[top].issym() and members[top].linkname == f"usr/{top}", top
        assert members["usr/bin/gcc"].issym()
        assert members["usr/bin/cc"].linkname == "/etc/alternatives/cc"
        assert members["etc/alternatives/cc"].linkname == "/usr/bin/gcc"
        assert members["usr/bin/sh"].linkname == "busybox"
        assert members["usr/bin/busybox"].isfile()
        # binutils' own ar wins over busybox's applet
        assert members["usr/bin/ar"].linkname == "x86_64-linux-gnu-ar"
        assert members["usr/include/stdio.h"].isfile()
        assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        assert passwd.startswith("root:x:0:0:") and "\napp:x:1000:1000:" in passwd
        assert all(m.uid == 0 or m.name == "home/app" for m in members.values())
        assert not any(name.startswith("usr/share/man/") for name in members)


def test_gcc_rootfs_is_the_same_tar_for_the_same_packages(gcc_tar: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.tar"
    subprocess.run([sys.executable, str(MAKE_GCC_ROOTFS), str(again)], check=True, capture_output=True)

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    assert digest(again) == digest(gcc_tar)


def test_gcc_links_dynamically_and_statically_in_a_run_step(root: Path, gcc_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "hello.c").write_text((EXAMPLES / "c-hello" / "hello.c").read_text())
    (context / "Dockerfile").write_text(
        "FROM gcc:local\n"
        "WORKDIR /src\n"
        "COPY hello.c .\n"
        "RUN cc -o dynamic hello.c && ./dynamic > dynamic.out"
        " && gcc -static -o static hello.c && ./static > static.out\n"
    )
    _build(root, "-t", "gcc-check:1", str(context))
    view = open_image("gcc-check:1")
    assert view.read("/src/dynamic.out") == "Hello World!\n"
    assert view.read("/src/static.out") == "Hello World!\n"
    dynamic, static = view.stat("/src/dynamic").st_size, view.stat("/src/static").st_size
    assert static > 20 * dynamic  # libc is inside the static one


# ---------------------------------------------------------------- c-hello


def test_c_hello_multi_stage_image_is_a_small_fraction_of_the_single_stage_one(root: Path, gcc_image: str, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    c_hello = EXAMPLES / "c-hello"
    _build(root, "-f", str(c_hello / "Dockerfile.single"), "-t", "c-hello:single", str(c_hello))
    _build(root, "-f", str(c_hello / "Dockerfile.multi"), "-t", "c-hello:multi", str(c_hello))
    single, multi = open_image("c-hello:single"), open_image("c-hello:multi")
    gcc = open_image("gcc:local")

    assert _image_size(multi) * 100 < _image_size(single)
    assert _image_size(single) > _image_size(gcc)  # the compiler and the program
    assert len(multi.image.layers) == 1
    [tree] = multi.trees
    assert sorted(os.listdir(tree)) == ["hello"]
    assert single.config["config"]["Cmd"] == multi.config["config"]["Cmd"] == ["/hello"]

    # Both programs run and print the tutorial's line; the multi-stage one
    # runs on busybox, which has no C library: it is static.
    check = tmp_path / "check"
    check.mkdir()
    (check / "Dockerfile").write_text(
        "FROM c-hello:single AS single\n"
        "RUN /hello > /out.txt\n"
        "FROM busybox\n"
        "COPY --from=c-hello:multi /hello /hello\n"
        "COPY --from=single /out.txt /single.txt\n"
        "RUN /hello > /multi.txt\n"
    )
    _build(root, "-t", "c-hello:check", str(check))
    result = open_image("c-hello:check")
    assert result.read("/single.txt") == "Hello World!\n"
    assert result.read("/multi.txt") == "Hello World!\n"


# ---------------------------------------------------------------- parallel


def test_parallel_example_runs_independent_stages_at_the_same_time(root: Path, busybox_image: str, open_image) -> None:  # type: ignore[no-untyped-def]
    megabytes = 50
    output = _build(root, "--jobs", "4", "--build-arg", f"MEGABYTES={megabytes}", "-t", "parallel:test", str(EXAMPLES / "parallel"))

    # In the plain progress, "#N [alpha 1/1] RUN ..." starts a step and "#N DONE" ends it.
    lines = output.splitlines()
    started: dict[str, int] = {}
    ended: dict[str, int] = {}
    for index, line in enumerate(lines):
        match = re.match(r"#(\d+) \[(alpha|bravo|charlie|delta) \d+/\d+\] RUN work", line)
        if match:
            started[match.group(1)] = index
        match = re.match(r"#(\d+) DONE", line)
        if match and match.group(1) in started:
            ended[match.group(1)] = index
    assert len(started) == 4 and set(ended) == set(started), output
    most_at_once = max(sum(1 for s in started if started[s] <= started[step] < ended[s]) for step in started)
    assert most_at_once >= 2, output
    assert "4 stages:" in output

    view = open_image("parallel:test")
    expected = hashlib.sha256(bytes(megabytes * 1024 * 1024)).hexdigest()[:12]
    for name in ("alpha", "bravo", "charlie", "delta"):
        stage, start, end, checksum = view.read(f"/timeline/{name}.txt").split()
        assert stage == name and float(start) <= float(end) and checksum == expected
    assert view.config["config"]["Cmd"] == ["timeline"]


# ---------------------------------------------------------------- cache-mount


def test_cache_mount_example_keeps_downloads_between_builds_and_out_of_the_image(root: Path, busybox_image: str, open_image) -> None:  # type: ignore[no-untyped-def]
    example = str(EXAMPLES / "cache-mount")
    first = _build(root, "-t", "cache-mount:test", example)
    assert "fakepkg: 3 downloaded, 0 from the cache" in first
    again = _build(root, "--no-cache", "-t", "cache-mount:test", example)
    assert "fakepkg: 0 downloaded, 3 from the cache" in again
    assert "downloading" not in again
    more = _build(root, "--build-arg", "EXTRA=jq 1.6 1", "-t", "cache-mount:test", example)
    assert "fakepkg: jq 1.6: downloading 1 MB" in more
    assert "fakepkg: 1 downloaded, 3 from the cache" in more

    view = open_image("cache-mount:test")
    assert view.read("/opt/zlib/VERSION") == "1.2.13\n"
    assert view.read("/opt/jq/VERSION") == "1.6\n"
    assert view.read("/opt/openssl/payload").startswith("openssl 3.0.11\n")
    for package in ("zlib-1.2.13", "openssl-3.0.11", "curl-7.88.1", "jq-1.6"):
        assert view.find(f"/var/cache/fakepkg/{package}.pkg") is None
    assert _image_size(view) < 5_000_000  # 91 MB of downloads stayed in the cache


# ---------------------------------------------------------------- run-all


def test_run_all_builds_every_example(root: Path, require_root: None) -> None:
    env = {**os.environ, "PYBUILD_ROOT": str(root), "PYBUILD": f"{sys.executable} -m pybuild"}
    result = subprocess.run([str(EXAMPLES / "run-all")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for tag in ("hello:latest", "c-hello:single", "c-hello:multi", "parallel:latest", "cache-mount:latest", "multiarch:latest"):
        assert f"-t {tag}" in out
    assert re.search(r"^c-hello\s+multi\s", out, re.M) and re.search(r"^c-hello\s+single\s", out, re.M)
    assert "fakepkg: 0 downloaded, 3 from the cache" in out + result.stderr
    assert out.count("\nHello World!\n") == 2  # pybuild run of c-hello:multi and c-hello:single
    # examples/multiarch for both platforms; the host's image runs here (the arm64 one when
    # `pybuild binfmt` says so: test_multiarch.py runs it with QEMU registered)
    assert "--platform linux/amd64,linux/arm64 -t multiarch:latest" in out
    assert "\nHello from x86_64! (compiled on x86_64)\n" in out
