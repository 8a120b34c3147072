"""``MemoryRemote``, the fake of ``reapi.RemoteApi``: the conformance check, and what tests of
``dag.remote`` lean on (Execute through the injected callable, tampering, an unreachable server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild import reapi


def test_the_fake_conforms() -> None:
    reapi.check_remote(reapi.MemoryRemote())


def uploaded_action(remote: reapi.MemoryRemote, *, do_not_cache: bool = False) -> tuple[reapi.Digest, reapi.Action]:
    command = reapi.serialize(reapi.Command(("pybuild-step", "step.json")))
    root, directories = reapi.input_root({"step.json": reapi.Digest.of(b"{}")})
    action = reapi.Action(reapi.Digest.of(command), root, do_not_cache=do_not_cache)
    data = reapi.serialize(action)
    remote.upload({reapi.Digest.of(command): command, reapi.Digest.of(b"{}"): b"{}", **directories, reapi.Digest.of(data): data})
    return reapi.Digest.of(data), action


def test_execute_runs_the_injected_callable_once_then_answers_from_the_cache() -> None:
    ran: list[reapi.Action] = []

    def run(action: reapi.Action) -> reapi.ActionResult:
        ran.append(action)
        return reapi.ActionResult(exit_code=0, stdout_raw=b"done")

    remote = reapi.MemoryRemote(run)
    digest, action = uploaded_action(remote)
    stages: list[str] = []
    first = remote.execute(digest, on_update=stages.append)
    assert (first.cached, first.result.stdout_raw, ran) == (False, b"done", [action])
    assert stages == ["CACHE_CHECK", "QUEUED", "EXECUTING", "COMPLETED"]
    assert remote.execute(digest).cached and len(ran) == 1
    assert not remote.execute(digest, skip_cache_lookup=True).cached and len(ran) == 2
    assert remote.executed == [digest, digest]


def test_a_failed_or_uncacheable_action_is_not_cached() -> None:
    remote = reapi.MemoryRemote(lambda action: reapi.ActionResult(exit_code=1))
    digest, _ = uploaded_action(remote)
    assert remote.execute(digest).result.exit_code == 1
    assert remote.get_action_result(digest) is None
    remote = reapi.MemoryRemote(lambda action: reapi.ActionResult(exit_code=0))
    digest, _ = uploaded_action(remote, do_not_cache=True)
    remote.execute(digest)
    assert remote.get_action_result(digest) is None


def test_execute_needs_the_action_and_its_inputs_in_the_cas() -> None:
    remote = reapi.MemoryRemote(lambda action: reapi.ActionResult())
    digest, action = uploaded_action(remote)
    del remote.blobs[action.input_root_digest]
    with pytest.raises(reapi.RemoteError, match="FAILED_PRECONDITION: missing blobs"):
        remote.execute(digest)
    with pytest.raises(reapi.RemoteBlobMissing):
        remote.execute(reapi.Digest.of(b"no such action"))


def test_a_tampered_blob_is_refused(tmp_path: Path) -> None:
    remote = reapi.MemoryRemote()
    digest = reapi.Digest.of(b"layer")
    remote.upload({digest: b"layer"})
    remote.blobs[digest] = b"LAYER"
    with pytest.raises(reapi.RemoteBlobCorrupt):
        remote.read(digest)
    with pytest.raises(reapi.RemoteBlobCorrupt):
        remote.download(digest, tmp_path / "layer")
    assert list(tmp_path.iterdir()) == []


def test_an_unavailable_fake_fails_as_an_unreachable_server() -> None:
    remote = reapi.MemoryRemote()
    remote.unavailable = True
    with pytest.raises(reapi.RemoteUnavailable, match="^cannot reach the remote executor at grpc://memory:0: "):
        remote.capabilities()
    with pytest.raises(reapi.RemoteUnavailable):
        remote.find_missing([reapi.EMPTY])
