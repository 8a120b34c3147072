"""The container runtime's plain parts, without root: log frames, state files, the lock, the relay."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

from pybuild.executors import _containers_log as logs
from pybuild.executors import _containers_state as states
from pybuild.executors import _containers_tty as ttys
from pybuild.executors._containers_net import API_SOCKET, write_wrapper


def test_log_frames_round_trip_and_a_partial_frame_waits(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = logs.LogWriter(str(path))
    writer.write(logs.STDOUT, b"one\ntwo")
    writer.write(logs.STDERR, b"oops\n")
    writer.close()
    frames, offset = logs.read_frames(str(path))
    assert [(f.stream, f.data) for f in frames] == [(1, b"one\ntwo"), (2, b"oops\n")]
    assert offset == path.stat().st_size
    assert all(f.time_ns > 0 for f in frames)

    whole = logs.encode_frame(logs.STDOUT, b"three\n", time_ns=5)
    with open(path, "ab") as f:
        f.write(whole[:-2])  # a writer caught mid-frame
    assert logs.read_frames(str(path), offset) == ([], offset)
    with open(path, "ab") as f:
        f.write(whole[-2:])
    assert logs.read_frames(str(path), offset) == ([logs.Frame(1, 5, b"three\n")], offset + len(whole))


def test_log_lines_split_frames_at_newlines() -> None:
    frames = [logs.Frame(1, 10, b"a\nb\n"), logs.Frame(2, 20, b"c"), logs.Frame(1, 30, b"d\n")]
    assert [(f.stream, f.time_ns, f.data) for f in logs.iter_lines(frames)] == [
        (1, 10, b"a\n"), (1, 10, b"b\n"), (2, 20, b"c"), (1, 30, b"d\n")
    ]


def test_a_missing_log_reads_as_empty(tmp_path: Path) -> None:
    assert logs.read_frames(str(tmp_path / "nothing"), 7) == ([], 7)


def test_state_round_trips_and_a_damaged_file_reads_as_created(tmp_path: Path) -> None:
    assert states.read_state(str(tmp_path)) == states.RuntimeState()
    state = states.RuntimeState(status=states.EXITED, supervisor_pid=12, exit_code=3, cgroups=("/a", "/b"))
    states.write_state(str(tmp_path), state)
    assert states.read_state(str(tmp_path)) == state
    assert [p.name for p in tmp_path.iterdir()] == [states.STATE_FILE]  # no temp file left behind
    (tmp_path / states.STATE_FILE).write_text("{not json")
    assert states.read_state(str(tmp_path)).status == states.CREATED


LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from pybuild.executors import _containers_state as states
    states.take_lock(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_the_lock_says_whether_a_supervisor_lives(tmp_path: Path) -> None:
    assert not states.supervised(str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert states.supervised(str(tmp_path))
        assert states.supervised(str(tmp_path))  # probing does not take it
    finally:
        holder.kill()  # however it dies, the kernel releases the lock
        holder.wait()
    assert not states.supervised(str(tmp_path))


def test_process_start_time_tells_processes_apart() -> None:
    own = states.process_start_time(os.getpid())
    assert own is not None and own == states.process_start_time(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert states.process_start_time(child.pid) not in (None, 0)
    finally:
        child.kill()
        child.wait()
    assert states.process_start_time(2**22 + 12345) is None


def test_relay_copies_to_every_sink_and_reports_the_end() -> None:
    source_r, source_w = os.pipe()
    copies: list[bytes] = []
    ended: list[bool] = []
    relay = ttys.Relay()
    relay.copy(source_r, [copies.append, lambda data: copies.append(data.upper())], lambda: ended.append(True))
    os.write(source_w, b"hello")
    os.close(source_w)
    while relay.active:
        _drive(relay)
    assert copies == [b"hello", b"HELLO"] and ended == [True]
    os.close(source_r)


def test_relay_feeds_a_target_that_is_slow_without_blocking() -> None:
    source_r, source_w = os.pipe()
    target_r, target_w = os.pipe()
    relay = ttys.Relay()
    relay.feed(source_r, target_w)
    data = os.urandom(300_000)  # more than a pipe buffer holds: the feed must wait for the reader
    received = bytearray()
    written = 0
    os.set_blocking(source_w, False)
    while len(received) < len(data):
        if written < len(data):
            try:
                written += os.write(source_w, data[written : written + 65536])
            except BlockingIOError:
                pass
            if written == len(data):
                os.close(source_w)
        _drive(relay, timeout=10)
        if select.select([target_r], [], [], 0)[0]:
            received += os.read(target_r, 65536)
    assert bytes(received) == data
    for fd in (source_r, target_r, target_w):
        os.close(fd)


def _drive(relay: ttys.Relay, timeout: int = 1000) -> None:
    poller = select.poll()
    for fd, events in relay.poll_entries():
        poller.register(fd, events)
    for fd, events in poller.poll(timeout):
        relay.handle(fd, events)


def test_window_sizes_travel_through_a_pty() -> None:
    master, slave = os.openpty()
    try:
        assert ttys.window_size(slave) is None  # a fresh pty has no size
        ttys.set_window_size(master, (33, 101))
        assert ttys.window_size(slave) == (33, 101)
        r, w = os.pipe()
        assert ttys.window_size(r) is None  # not a terminal
        for fd in (r, w):
            os.close(fd)
    finally:
        os.close(master)
        os.close(slave)


def test_slirp_wrapper_adds_the_api_socket(tmp_path: Path) -> None:
    fake = tmp_path / "fake slirp"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    wrapper = write_wrapper(str(tmp_path), str(fake))
    out = subprocess.run([wrapper, "--configure", "1234", "tap0"], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:4] == [f"--api-socket={API_SOCKET}", "--configure", "1234", "tap0"]
