"""A RUN step of an ordinary user's build is nothing more powerful than the user (issue 17's
sandbox probes).  Each probe is a step whose verdict is written into the image and read back
from `pybuild save`, so the checks do not depend on the step's output reaching the log.

BuildKit's rootless mode is the reference (moby/buildkit docs/rootless.md, and
util/rootless/specconv/specconv_linux.go, whose ToRootless adapts a step's OCI spec for
rootless runc: no cgroups, /sys not mounted fresh): the step is root only inside a user
namespace with the default capability set (no CAP_SYS_ADMIN; real device nodes need the
initial namespace), /proc/sys is read-only, and the step's processes live in a PID namespace
whose end kills them all.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .conftest import AsUser, SavedFile, files_owned_by, saved_image, subordinate_range


def build_and_read(user: AsUser, dockerfile: str, **files: str) -> dict[str, SavedFile]:
    user.write("ctx/Dockerfile", dockerfile)
    for name, content in files.items():
        user.write(f"ctx/{name}", content)
    user.pybuild("build", "-q", "--network=none", "-t", "probe:1", str(user.dir / "ctx"))
    archive = user.dir / "probe.tar"
    user.pybuild("save", "-o", str(archive), "probe:1")
    return saved_image(archive)[0]


def test_a_step_cannot_write_proc_sys(user: AsUser, user_busybox: str) -> None:
    """Writing back the current value is harmless even if it got through."""
    files = build_and_read(user, (
        "FROM busybox\n"
        "RUN cat /proc/sys/kernel/printk_ratelimit > /ratelimit && "
        "if cat /ratelimit > /proc/sys/kernel/printk_ratelimit 2>/dev/null; then echo wrote; else echo refused; fi > /verdict\n"
    ))  # fmt: skip
    assert files["/verdict"].data == b"refused\n"


def test_a_step_cannot_mount(user: AsUser, user_busybox: str) -> None:
    files = build_and_read(user, (
        "FROM busybox\n"
        "RUN mkdir -p /mnt/a && for m in 'mount -t tmpfs none /mnt/a' 'mount --bind /etc /mnt/a' "
        "'mount -t proc proc /mnt/a' 'mount -t sysfs sysfs /mnt/a'; do "
        "if $m 2>/dev/null; then echo \"mounted: $m\"; umount /mnt/a; fi; done > /verdict; echo end >> /verdict\n"
    ))  # fmt: skip
    assert files["/verdict"].data == b"end\n"


def test_a_step_cannot_make_real_device_nodes(user: AsUser, user_busybox: str) -> None:
    files = build_and_read(user, (
        "FROM busybox\n"
        "RUN for d in 'b 8 0' 'c 1 1' 'c 1 3'; do "
        "if mknod /node $d 2>/dev/null; then echo \"made: $d\"; rm -f /node; fi; done > /verdict; echo end >> /verdict\n"
    ))  # fmt: skip
    assert files["/verdict"].data == b"end\n"


def test_an_orphaned_process_is_gone_when_the_step_ends(user: AsUser, user_busybox: str) -> None:
    seconds = str(random.randrange(500000, 900000))  # names this test's orphan among the host's processes
    build_and_read(user, f"FROM busybox\nRUN sleep {seconds} >/dev/null 2>&1 </dev/null & echo started > /verdict\n")
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if seconds.encode() in argv:
            alive.append(pid)
    assert alive == []


def test_user_1000_runs_as_1000_and_its_files_are_shifted_only_in_snapshots(user: AsUser, user_busybox: str) -> None:
    files = build_and_read(user, (
        "FROM busybox\n"
        "RUN mkdir /data && chown 1000:1000 /data\n"
        "USER 1000:1000\n"
        "RUN id -u > /data/ids && id -g >> /data/ids\n"
    ))  # fmt: skip
    assert files["/data/ids"].data == b"1000\n1000\n"
    assert (files["/data/ids"].uid, files["/data/ids"].gid) == (1000, 1000)  # as the container saw it
    subordinate = subordinate_range(user.account.name)
    assert subordinate is not None
    shifted = files_owned_by(user.dir, subordinate)
    assert shifted  # on the host, 1000 is the user's subordinate uid ...
    assert {os.lstat(p).st_uid for p in shifted} == {subordinate.start + 1000 - 1}  # newuidmap 0 UID 1 1 START COUNT
    assert [p for p in shifted if not p.is_relative_to(user.root / "snapshots")] == []  # ... only in snapshots


def test_a_context_file_the_user_cannot_read_stays_unread(user: AsUser, user_busybox: str) -> None:
    """COPY and RUN --mount=type=bind of a 0600 file of another host user: the build fails
    with a clear error naming the file, or the step sees no content; never the bytes."""
    user.write("ctx/Dockerfile", "FROM busybox\nCOPY private.txt /private.txt\n")
    private = user.dir / "ctx" / "private.txt"
    private.write_text("host-private-content\n")
    os.chown(private, 0, 0)
    os.chmod(private, 0o600)
    copied = user.pybuild("build", "-q", "--network=none", "-t", "copy:1", str(user.dir / "ctx"), check=False)
    assert copied.returncode != 0
    assert "Traceback" not in copied.stderr and "private.txt" in copied.stderr
    assert "host-private-content" not in copied.stdout + copied.stderr

    user.write("ctx/Dockerfile", (
        "FROM busybox\n"
        "RUN --mount=type=bind,target=/ctx sh -c 'cat /ctx/private.txt > /seen 2>/dev/null; true'\n"
    ))  # fmt: skip
    bound = user.pybuild("build", "-q", "--network=none", "-t", "bind:1", str(user.dir / "ctx"), check=False)
    assert "Traceback" not in bound.stderr
    assert "host-private-content" not in bound.stdout + bound.stderr
    if bound.returncode == 0:
        archive = user.dir / "bind.tar"
        user.pybuild("save", "-o", str(archive), "bind:1")
        files, everything = saved_image(archive)
        assert files["/seen"].data == b""
        assert b"host-private-content" not in everything
    else:
        assert "private.txt" in bound.stderr


def test_an_insecure_step_is_still_no_more_powerful_than_the_user(user: AsUser, user_busybox: str) -> None:
    """RUN --security=insecure with the entitlement: all capabilities and no seccomp filter,
    but inside the user namespace (BuildKit's executor/oci/spec_linux.go generateSecurityOpts
    adds every capability for SecurityMode_INSECURE; rootless, they are its namespace's), so host-wide
    /proc/sys and real device nodes stay out of reach while a tmpfs mount works."""
    user.write("ctx/Dockerfile", (
        "FROM busybox\n"
        "RUN --security=insecure sh -c '"
        "mkdir -p /mnt/a; if mount -t tmpfs none /mnt/a 2>/dev/null; then echo tmpfs; umount /mnt/a; fi; "
        "cat /proc/sys/kernel/printk_ratelimit > /v; if cat /v > /proc/sys/kernel/printk_ratelimit 2>/dev/null; then echo procsys; fi; "
        "if mknod /node b 8 0 2>/dev/null; then echo mknod; rm /node; fi; echo end' > /verdict\n"
    ))  # fmt: skip
    user.pybuild("build", "-q", "--network=none", "--allow", "security.insecure", "-t", "insecure:1", str(user.dir / "ctx"))
    archive = user.dir / "insecure.tar"
    user.pybuild("save", "-o", str(archive), "insecure:1")
    assert saved_image(archive)[0]["/verdict"].data == b"tmpfs\nend\n"
