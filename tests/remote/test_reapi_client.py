"""pybuild.reapi against a real BuildGrid 0.4.4 (tests/remote/conftest.py starts it).

The bot tests are the proof the Remote Workers API works as ``reapi``'s docstring says, for
``pybuild worker``: each runs its own tiny bot loop with a platform no other bot has (a
unique ``pybuild-sandbox`` value), so workers of other tests never take its Actions.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild import reapi

from .conftest import BOT_KEEPALIVE_SECONDS, NAMED_INSTANCE, BuildGrid, Postgres, free_port, start_buildgrid

BOT_TIMEOUT = 10.0  # each long poll; BuildGrid answers within 0.8 x the 5 s keepalive


@pytest.fixture
def remote(buildgrid: BuildGrid) -> Iterator[reapi.Remote]:
    with reapi.Remote.connect(reapi.parse_endpoint(buildgrid.url)) as client:
        yield client


def test_buildgrid_conforms(remote: reapi.Remote) -> None:
    reapi.check_remote(remote)


def test_capabilities_name_sha256_and_the_batch_limit(remote: reapi.Remote) -> None:
    capabilities = remote.capabilities()
    assert capabilities.digest_functions == ("SHA256",)
    assert 0 < capabilities.max_batch_total_size_bytes <= 4 * 1024 * 1024
    assert capabilities.exec_enabled and capabilities.action_cache_update_enabled
    assert capabilities.high_api_version.startswith("2.")


def test_blobs_over_the_batch_limit_go_through_bytestream_in_chunks(
    remote: reapi.Remote, buildgrid_cas: Path, tmp_path: Path
) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # three batch limits: many 1 MiB ByteStream chunks
    digest = reapi.Digest.of(data)
    small = {reapi.Digest.of(b) : b for b in (os.urandom(10), os.urandom(20))}
    assert remote.find_missing([digest, *small]) == {digest, *small}
    remote.upload({digest: data, **small})
    assert remote.find_missing([digest, *small]) == frozenset()
    assert cas_object(buildgrid_cas, digest).read_bytes() == data  # the server has it whole
    assert remote.read(digest) == data
    remote.download(digest, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    several = {reapi.Digest.of(b): b for b in (os.urandom(1500 * 1024) for _ in range(5))}
    remote.upload(several)  # packed into batches under the limit: the server refuses a larger one
    assert remote.find_missing(several) == frozenset()
    source = tmp_path / "file"
    source.write_bytes(os.urandom(5 * 1024 * 1024))
    from_file = reapi.Digest.of_file(source)
    remote.upload_file(from_file, source)
    assert cas_object(buildgrid_cas, from_file).read_bytes() == source.read_bytes()


@pytest.mark.parametrize("size", [100, 6 * 1024 * 1024], ids=["batch", "bytestream"])
def test_a_blob_that_does_not_match_its_digest_is_refused(
    remote: reapi.Remote, buildgrid_cas: Path, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    digest = reapi.Digest.of(data)
    remote.upload({digest: data})
    stored = cas_object(buildgrid_cas, digest)
    stored.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # a disk flipped a byte, or a server lies (XOR: never the same byte)
    with pytest.raises(reapi.RemoteBlobCorrupt, match=f"does not match its digest {digest.hash[:16]}"):
        remote.read(digest)
    target = tmp_path / "out"
    with pytest.raises(reapi.RemoteBlobCorrupt):
        remote.download(digest, target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary left
    stored.write_bytes(data[:-1])  # a truncated blob
    with pytest.raises(reapi.RemoteBlobCorrupt):
        remote.read(digest)


def test_a_missing_blob_is_named(remote: reapi.Remote, tmp_path: Path) -> None:
    for size in (10, 6 * 1024 * 1024):
        digest = reapi.Digest.of(os.urandom(size))
        with pytest.raises(reapi.RemoteBlobMissing, match=digest.hash):
            remote.read(digest)
        with pytest.raises(reapi.RemoteBlobMissing):
            remote.download(digest, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_a_named_instance_prefixes_every_resource(buildgrid: BuildGrid, remote: reapi.Remote, tmp_path: Path) -> None:
    """--remote-instance: requests carry the name, ByteStream resources start with it."""
    with reapi.Remote.connect(reapi.parse_endpoint(buildgrid.url, instance=NAMED_INSTANCE)) as named:
        large = os.urandom(5 * 1024 * 1024)
        blobs = {reapi.Digest.of(data): data for data in (b"small one", large)}
        named.upload(blobs)
        assert named.find_missing(blobs) == frozenset()
        assert named.read(reapi.Digest.of(large)) == large
        named.download(reapi.Digest.of(large), tmp_path / "large")
        assert (tmp_path / "large").read_bytes() == large
        action = reapi.Digest.of(os.urandom(16))
        named.update_action_result(action, reapi.ActionResult(exit_code=0, stdout_raw=b"x"))
        assert named.get_action_result(action) is not None
    with reapi.Remote.connect(reapi.parse_endpoint(buildgrid.url, instance="no-such-instance")) as unknown:
        with pytest.raises(reapi.RemoteError, match="^FindMissingBlobs at .* failed: INVALID_ARGUMENT"):
            unknown.find_missing(blobs)


def test_one_client_serves_many_threads(remote: reapi.Remote) -> None:
    blobs = [os.urandom(n) for n in (1, 1000, 200_000, 5 * 1024 * 1024)] * 4

    def round_trip(data: bytes) -> bool:
        digest = reapi.Digest.of(data)
        remote.upload({digest: data})
        return remote.read(digest) == data and not remote.find_missing([digest])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, blobs))


def test_action_cache_update_and_get(remote: reapi.Remote) -> None:
    """BuildGrid serves a cached result only while the blobs it names are in the CAS."""
    action = reapi.Digest.of(os.urandom(32))
    assert remote.get_action_result(action) is None
    stdout = reapi.Digest.of(b"out\n")
    remote.upload({stdout: b"out\n"})
    result = reapi.ActionResult(
        exit_code=0,
        output_files=(reapi.OutputFile("layer.tar", reapi.Digest.of(b"layer")),),
        stdout_digest=stdout,
        stderr_raw=b"warning\n",
        worker="test",
    )
    remote.update_action_result(action, result)
    assert remote.get_action_result(action) is None  # layer.tar is not in the CAS: dropped
    remote.upload({reapi.Digest.of(b"layer"): b"layer"})
    remote.update_action_result(action, result)
    got = remote.get_action_result(action)
    assert got is not None
    assert (got.exit_code, got.output_files, got.stdout_digest, got.worker) == (0, result.output_files, stdout, "test")
    assert got.stderr_raw == b"warning\n"


def test_an_unreachable_server_is_one_line_naming_the_url() -> None:
    url = f"grpc://127.0.0.1:{free_port()}"  # nothing listens there
    with reapi.Remote.connect(reapi.parse_endpoint(url)) as remote:
        with pytest.raises(reapi.RemoteUnavailable, match=f"(?i)^cannot reach the remote executor at {url}: connection refused$"):
            remote.capabilities()


def test_a_server_that_never_answers_fails_at_the_connect_deadline() -> None:
    """A port that accepts TCP but never speaks HTTP/2 (a hung or wrong server): the short
    connect deadline ends the wait rather than the default one."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"grpc://127.0.0.1:{silent.getsockname()[1]}"
        with reapi.Remote.connect(reapi.parse_endpoint(url), connect_timeout=0.5, timeout=3600) as remote:
            with pytest.raises(reapi.RemoteUnavailable, match=f"^cannot reach the remote executor at {url}: "):
                remote.capabilities()


# --- Execute and the bots API --------------------------------------------------------------


def submit(remote: reapi.Remote, platform: reapi.Properties, tag: str) -> tuple[reapi.Digest, reapi.Action]:
    """A Command, an input root and an Action for them, uploaded: as dag.remote does."""
    step = f'{{"tag":"{tag}"}}'.encode()
    root, directories = reapi.input_root({"step.json": reapi.Digest.of(step)})
    command = reapi.Command(("pybuild-step", "step.json"), output_paths=("layer.tar", "result.json"), platform=platform)
    command_bytes = reapi.serialize(command)
    action = reapi.Action(reapi.Digest.of(command_bytes), root, timeout_seconds=60.0, platform=platform)
    action_bytes = reapi.serialize(action)
    remote.upload({reapi.Digest.of(step): step, **directories, reapi.Digest.of(command_bytes): command_bytes,
                   reapi.Digest.of(action_bytes): action_bytes})
    return reapi.Digest.of(action_bytes), action


def unique_platform() -> reapi.Properties:
    return (("ISA", "amd64"), ("OSFamily", "linux"), ("pybuild-sandbox", f"test-{uuid.uuid4().hex[:12]}"))


def wait_for_lease(remote: reapi.Remote, session: reapi.BotSession, rounds: int = 6) -> reapi.BotSession:
    """Long-poll until the server gives the session a lease (a bot's main loop, shortened)."""
    for _ in range(rounds):
        if session.leases:
            return session
        session = remote.update_bot_session(session, timeout=BOT_TIMEOUT)
    raise AssertionError(f"no lease in {rounds} polls")


def test_a_bot_leases_an_executed_action_and_its_result_answers_execute(remote: reapi.Remote) -> None:
    platform = unique_platform()
    action_digest, action = submit(remote, platform, "run")
    stages: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(remote.execute, action_digest, on_update=stages.append)
        session = remote.create_bot_session(f"bot-{uuid.uuid4().hex[:8]}", dict(platform), capacity=2, timeout=BOT_TIMEOUT)
        assert session.name and session.status == reapi.BotStatus.OK
        session = wait_for_lease(remote, session)
        (lease,) = session.leases
        assert lease.state == reapi.LeaseState.ACTIVE
        assert lease.action == action  # BuildGrid 0.4.4 sends the Action itself...
        assert lease.action_digest == action_digest  # ...whose digest is the client's
        assert not running.done()
        # The work: outputs into the CAS, then the lease COMPLETED with the ActionResult.
        layer, report = b"layer bytes", b'{"empty":false}'
        remote.upload({reapi.Digest.of(layer): layer, reapi.Digest.of(report): report})
        result = reapi.ActionResult(
            exit_code=0,
            output_files=(reapi.OutputFile("layer.tar", reapi.Digest.of(layer)), reapi.OutputFile("result.json", reapi.Digest.of(report))),
            stdout_raw=b"ran\n",
            worker=session.bot_id,
        )
        session = remote.update_bot_session(session.with_leases((lease.completed(result),)), timeout=BOT_TIMEOUT)
        assert all(other.id != lease.id for other in session.leases)  # the server took it back
        response = running.result(timeout=30)
    assert response.status_code == 0 and not response.cached
    assert response.result.output_files == result.output_files
    assert response.result.exit_code == 0 and response.result.worker == session.bot_id
    assert stages[-1] == "COMPLETED" and "QUEUED" in stages
    cached = remote.get_action_result(action_digest)
    assert cached is not None and cached.output_files == result.output_files  # the server cached it
    again = remote.execute(action_digest)
    assert again.cached and again.result.output_files == result.output_files


@dataclass(frozen=True)
class Leased:
    """An Action being executed (``running``) and leased to a bot session of this test's own."""

    platform: reapi.Properties
    action_digest: reapi.Digest
    running: concurrent.futures.Future[reapi.ExecuteResponse]
    session: reapi.BotSession
    lease: reapi.Lease


@contextlib.contextmanager
def leased_execution(remote: reapi.Remote, tag: str, bot: str = "bot") -> Iterator[Leased]:
    """Submit an Action of a platform only this test has, Execute it in a thread, and create a
    bot session that waits until the server leases it the Action."""
    platform = unique_platform()
    action_digest, _ = submit(remote, platform, tag)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(remote.execute, action_digest)
        session = wait_for_lease(remote, remote.create_bot_session(f"{bot}-{uuid.uuid4().hex[:8]}", platform, timeout=BOT_TIMEOUT))
        (lease,) = session.leases
        yield Leased(platform, action_digest, running, session, lease)


def test_a_failed_command_is_a_result_and_is_not_cached(remote: reapi.Remote) -> None:
    with leased_execution(remote, "fails") as leased:
        failed = reapi.ActionResult(exit_code=3, stderr_raw=b"boom\n")
        remote.update_bot_session(leased.session.with_leases((leased.lease.completed(failed),)), timeout=BOT_TIMEOUT)
        response = leased.running.result(timeout=30)
    assert response.status_code == 0 and response.result.exit_code == 3
    assert response.result.stderr_raw == b"boom\n"
    assert remote.get_action_result(leased.action_digest) is None


def test_a_lease_reported_unavailable_is_queued_again(remote: reapi.Remote) -> None:
    with leased_execution(remote, "retry") as leased:
        lease = leased.lease
        session = remote.update_bot_session(leased.session.with_leases((lease.failed(14, "worker shutting down"),)), timeout=BOT_TIMEOUT)
        session = wait_for_lease(remote, session)
        (again,) = session.leases
        assert again.id == lease.id and again.action_digest == leased.action_digest
        remote.update_bot_session(session.with_leases((again.completed(reapi.ActionResult()),)), timeout=BOT_TIMEOUT)
        assert leased.running.result(timeout=30).status_code == 0


def test_a_lease_the_bot_refuses_ends_execute_with_that_status(remote: reapi.Remote) -> None:
    """Any code but INTERNAL/UNAVAILABLE is final: Execute answers with it (status_code, message)."""
    with leased_execution(remote, "refused") as leased:
        refused = leased.lease.failed(3, "the step names a layer it lacks")
        remote.update_bot_session(leased.session.with_leases((refused,)), timeout=BOT_TIMEOUT)
        response = leased.running.result(timeout=30)
    assert (response.status_code, response.message, response.cached) == (3, "the step names a layer it lacks", False)
    assert remote.get_action_result(leased.action_digest) is None


def test_a_silent_bots_lease_goes_to_another_bot(remote: reapi.Remote) -> None:
    """A worker killed mid-step stops calling UpdateBotSession: once its session misses the
    keepalive, the server closes it and re-queues the lease; the dead bot's next call (had
    it survived) is BotSessionClosed."""
    with leased_execution(remote, "killed", bot="dead") as dead:
        survivor = remote.create_bot_session(f"live-{uuid.uuid4().hex[:8]}", dead.platform, timeout=BOT_TIMEOUT)
        survivor = wait_for_lease(remote, survivor, rounds=4 * BOT_KEEPALIVE_SECONDS)
        (moved,) = survivor.leases
        assert moved.id == dead.lease.id and moved.action_digest == dead.action_digest
        remote.update_bot_session(survivor.with_leases((moved.completed(reapi.ActionResult()),)), timeout=BOT_TIMEOUT)
        assert dead.running.result(timeout=30).status_code == 0
    with pytest.raises(reapi.BotSessionClosed):
        remote.update_bot_session(dead.session, timeout=BOT_TIMEOUT)


@pytest.mark.slow
def test_a_server_stopped_during_execute_is_one_line(postgres: Postgres, tmp_path: Path) -> None:
    with start_buildgrid(postgres, tmp_path) as server:
        with reapi.Remote.connect(reapi.parse_endpoint(server.url)) as remote:
            action_digest, _ = submit(remote, unique_platform(), "stopped")  # no bot has this platform
            stages: list[str] = []
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                running = pool.submit(remote.execute, action_digest, on_update=stages.append)
                while "QUEUED" not in stages:
                    assert not running.done(), running.exception()
                    threading.Event().wait(0.05)
                server.stop()
                with pytest.raises(reapi.RemoteUnavailable, match=f"^cannot reach the remote executor at {server.url}: ") as caught:
                    running.result(timeout=60)
            assert "\n" not in str(caught.value)
            with pytest.raises(reapi.RemoteUnavailable):
                remote.find_missing([reapi.EMPTY])


def test_an_interrupted_poll_returns_the_session_as_sent(remote: reapi.Remote) -> None:
    # Under BuildGrid's ~4 s floor the create waits for no lease: it answers at once.
    session = remote.create_bot_session(f"bot-{uuid.uuid4().hex[:8]}", unique_platform(), timeout=2.0)
    interrupt = threading.Event()
    threading.Timer(0.3, interrupt.set).start()
    assert remote.update_bot_session(session, timeout=BOT_TIMEOUT, interrupt=interrupt) is session


def cas_object(cas_dir: Path, digest: reapi.Digest) -> Path:
    """Where BuildGrid's !disk-storage keeps a blob."""
    return cas_dir / "cas" / "objects" / digest.hash[:2] / digest.hash[2:]
