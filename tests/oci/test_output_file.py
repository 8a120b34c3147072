"""open_output: what is at a path the user names decides how it is written; copy_range's fallback."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from pybuild.errors import UsageError
from pybuild.oci import open_output, write_output_bytes
from pybuild.oci._copy_range import copy_range


def test_a_new_file_and_a_replaced_one_keeping_its_mode(tmp_path: Path) -> None:
    write_output_bytes(tmp_path / "new", b"one")
    assert (tmp_path / "new").read_bytes() == b"one"
    os.chmod(tmp_path / "new", 0o640)
    write_output_bytes(tmp_path / "new", b"two")
    assert (tmp_path / "new").read_bytes() == b"two" and stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o640
    assert os.listdir(tmp_path) == ["new"]


def test_a_failure_inside_the_block_leaves_the_old_file_whole(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"old")
    with pytest.raises(RuntimeError), open_output(tmp_path / "out") as output:
        output.stream.write(b"half")
        raise RuntimeError("the export failed")
    assert (tmp_path / "out").read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


def test_a_chain_of_symlinks_is_followed_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    os.symlink("sub", tmp_path / "dirlink")
    os.symlink("dirlink/file", tmp_path / "first")
    os.symlink(tmp_path / "first", tmp_path / "second")
    write_output_bytes(tmp_path / "second", b"data")
    assert (tmp_path / "sub" / "file").read_bytes() == b"data"
    assert os.path.islink(tmp_path / "first") and os.path.islink(tmp_path / "second")


def test_a_socket_is_connected_to_and_written_into(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    received: list[bytes] = []

    def accept() -> None:
        connection, _ = server.accept()
        with connection:
            while data := connection.recv(65536):
                received.append(data)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        write_output_bytes(path, b"x" * 100_000)
    finally:
        thread.join()
        server.close()
    assert b"".join(received) == b"x" * 100_000 and stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_fifo_or_device_is_not_a_file_of_its_own(tmp_path: Path, require_root: None) -> None:
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with open_output(tmp_path / "null") as output:
        assert not output.own  # an archive writer must not seek back or truncate it
    with open_output(tmp_path / "file") as output:
        assert output.own


def test_a_block_device_and_a_directory_are_refused(tmp_path: Path, require_root: None) -> None:
    os.mknod(tmp_path / "disk", stat.S_IFBLK | 0o600, os.makedev(7, 200))  # a loop device number no one uses here
    with pytest.raises(UsageError, match="block device"):
        write_output_bytes(tmp_path / "disk", b"x")
    assert stat.S_ISBLK(os.lstat(tmp_path / "disk").st_mode)
    with pytest.raises(UsageError, match="is a directory"):
        write_output_bytes(tmp_path, b"x")


def test_a_descriptor_of_our_own_is_written_to_as_it_is(tmp_path: Path) -> None:
    # /dev/stdout with `>> file`: the file is appended to, not replaced
    with open(tmp_path / "log", "ab") as appended:
        appended.write(b"old\n")
        appended.flush()
        before = os.fstat(appended.fileno()).st_ino
        write_output_bytes(f"/dev/fd/{appended.fileno()}", b"new\n")
        write_output_bytes(f"/proc/self/fd/{appended.fileno()}", b"newer\n")
    assert (tmp_path / "log").read_bytes() == b"old\nnew\nnewer\n" and os.stat(tmp_path / "log").st_ino == before
    assert os.listdir(tmp_path) == ["log"]
    with open(tmp_path / "deleted", "wb") as held:
        os.unlink(tmp_path / "deleted")
        write_output_bytes(f"/proc/self/fd/{held.fileno()}", b"x")  # a file without a name, still open
        assert os.fstat(held.fileno()).st_size == 1
    with pytest.raises(UsageError, match="is a directory"):
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            write_output_bytes(f"/proc/self/fd/{fd}", b"x")
        finally:
            os.close(fd)


def test_another_process_link_to_a_file_without_a_name_is_refused(tmp_path: Path) -> None:
    import subprocess

    with open(tmp_path / "gone", "wb") as held:
        os.unlink(tmp_path / "gone")
        child = subprocess.Popen(["sleep", "600"], pass_fds=(held.fileno(),))
        try:
            with pytest.raises(UsageError, match="no file that can be replaced"):
                write_output_bytes(f"/proc/{child.pid}/fd/{held.fileno()}", b"x")
        finally:
            child.kill()
            child.wait()
    assert os.listdir(tmp_path) == []


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file or directory") as failure:
        write_output_bytes(tmp_path / "missing" / "out", b"x")
    assert failure.value.hint == "check the directory exists"


@pytest.mark.parametrize("refusal", [errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_copy_range_falls_back_once_and_copies_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(data)
    calls = []

    def refuse(*args: int) -> int:
        calls.append(args)
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        dst.write(b"head")
        dst.flush()
        assert copy_range(src.fileno(), dst.fileno(), len(data) - 10, 10, 4) == len(data) - 10
    assert (tmp_path / "dst").read_bytes() == b"head" + data[10:]
    assert len(calls) == 1  # the refusal is remembered for the rest of the file


def test_copy_range_other_errors_are_raised_and_a_short_source_copies_less(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").write_bytes(b"12345")
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert copy_range(src.fileno(), dst.fileno(), 100) == 5

        def broken(*args: int) -> int:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "copy_file_range", broken)
        with pytest.raises(OSError, match="I/O error"):
            copy_range(src.fileno(), dst.fileno(), 5)


def test_the_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pybuild.oci import open_output\n"
        "with open_output(sys.argv[1]) as output:\n"
        "    output.stream.write(b'half'); output.stream.flush()\n"
        "    print('writing', flush=True); sys.stdin.read()\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == b"writing\n"
        (busy,) = os.listdir(tmp_path)
        write_output_bytes(tmp_path / "other", b"x")  # another path's export leaves it alone
        write_output_bytes(tmp_path / "out.tar", b"x")
        assert busy in os.listdir(tmp_path)
        write_output_bytes(tmp_path / "out", b"first")  # the writer is alive and holds its lock
        assert busy in os.listdir(tmp_path) and (tmp_path / "out").read_bytes() == b"first"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    write_output_bytes(tmp_path / "out", b"second")
    assert sorted(os.listdir(tmp_path)) == ["other", "out", "out.tar"]
    assert (tmp_path / "out").read_bytes() == b"second"
