"""``check_remote``: what any ``RemoteApi`` must do, run against ``MemoryRemote`` and a real
BuildGrid (HACKING's seam rule). Blobs are unique per run, so a shared server is fine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._api import RemoteApi
from ._digest import Digest
from ._errors import RemoteBlobMissing
from ._messages import Action, ActionResult, Command, Directory, OutputFile
from ._proto import serialize


def check_remote(remote: RemoteApi) -> None:
    """Raise AssertionError naming the first thing ``remote`` does not do as REAPI says."""
    capabilities = remote.capabilities()
    assert "SHA256" in capabilities.digest_functions, capabilities
    assert capabilities.action_cache_update_enabled, capabilities
    _check_blobs(remote, capabilities.max_batch_total_size_bytes or 4 * 1024 * 1024)
    _check_action_cache(remote)


def _check_blobs(remote: RemoteApi, max_batch: int) -> None:
    small = {Digest.of(data): data for data in (os.urandom(100), os.urandom(3000), b"")}
    large_data = os.urandom(max_batch + 12345)
    large = Digest.of(large_data)
    unknown = Digest.of(os.urandom(64))
    missing_before = remote.find_missing([*small, large, unknown])
    assert missing_before >= {d for d in small if d.size_bytes} | {large, unknown}, missing_before
    remote.upload(small)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, "large")
        source.write_bytes(large_data)
        remote.upload_file(large, source)
        assert remote.find_missing([*small, large, unknown]) == {unknown}
        for digest, data in small.items():
            assert remote.read(digest) == data, digest
        both = [*small, large, *small]  # in order, a digest twice, a big one among them
        assert remote.read_blobs(both) == [*small.values(), large_data, *small.values()]
        assert remote.read(large) == large_data
        target = Path(scratch, "downloaded")
        remote.download(large, target)
        assert target.read_bytes() == large_data
        assert sorted(os.listdir(scratch)) == ["downloaded", "large"], "a temporary file was left"
    try:
        remote.read(unknown)
    except RemoteBlobMissing:
        pass
    else:
        raise AssertionError("reading a blob the CAS lacks did not raise RemoteBlobMissing")
    try:
        remote.read_blobs([*small, unknown])
    except RemoteBlobMissing:
        pass
    else:
        raise AssertionError("reading blobs, one the CAS lacks, did not raise RemoteBlobMissing")


def _check_action_cache(remote: RemoteApi) -> None:
    command = Command(arguments=("true", os.urandom(8).hex()), output_paths=("out",), platform=(("OSFamily", "linux"),))
    command_bytes = serialize(command)
    root_bytes = serialize(Directory())
    action = Action(Digest.of(command_bytes), Digest.of(root_bytes), timeout_seconds=30.0, platform=command.platform)
    action_bytes = serialize(action)
    action_digest = Digest.of(action_bytes)
    remote.upload({Digest.of(command_bytes): command_bytes, Digest.of(root_bytes): root_bytes, action_digest: action_bytes})
    assert remote.get_action_result(action_digest) is None
    output = Digest.of(b"output")
    remote.upload({output: b"output"})
    result = ActionResult(exit_code=0, output_files=(OutputFile("out", output),), stdout_raw=b"hello\n")
    remote.update_action_result(action_digest, result)
    got = remote.get_action_result(action_digest)
    assert got is not None and got.exit_code == 0 and got.output_files == result.output_files, got
    assert got.stdout_raw == b"hello\n" or got.stdout_digest == Digest.of(b"hello\n"), got
    stages: list[str] = []
    response = remote.execute(action_digest, on_update=stages.append)
    assert response.cached and response.status_code == 0, response
    assert response.result.output_files == result.output_files, response
    assert stages and stages[-1] == "COMPLETED", stages

