"""pybuild.reapi's values without a server: digests, endpoints, the protobuf encoding (stable
bytes, strict decoding of what another machine sent), input roots, leases."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid.common.protos.google.devtools.remoteworkers.v1test2 import bots_pb2

from pybuild import reapi
from pybuild.errors import UsageError
from pybuild.reapi import _proto


def test_digest_of_bytes_and_of_a_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "f").write_bytes(data)
    assert reapi.Digest.of(data) == reapi.Digest(hashlib.sha256(data).hexdigest(), len(data))
    assert reapi.Digest.of_file(tmp_path / "f") == reapi.Digest.of(data)
    assert str(reapi.EMPTY) == f"{hashlib.sha256(b'').hexdigest()}/0"


@pytest.mark.parametrize("hash_", ["", "ABC", "sha256:" + "a" * 64, "A" * 64, "a" * 63])
def test_a_digest_is_lowercase_sha256_hex(hash_: str) -> None:
    with pytest.raises(ValueError):
        reapi.Digest(hash_, 1)
    with pytest.raises(ValueError):
        reapi.Digest("a" * 64, -1)


@pytest.mark.parametrize(
    ("url", "target", "tls"),
    [
        ("grpc://127.0.0.1:8980", "127.0.0.1:8980", False),
        ("grpcs://cache.example.com", "cache.example.com:443", True),
        ("grpcs://cache.example.com:9092/", "cache.example.com:9092", True),
        ("http://localhost:50051", "localhost:50051", False),
        ("grpc://[::1]:8980", "[::1]:8980", False),
    ],
)
def test_endpoint_urls(url: str, target: str, tls: bool) -> None:
    endpoint = reapi.parse_endpoint(url, instance="/main/")
    assert (endpoint.url, endpoint.target, endpoint.tls, endpoint.instance) == (url, target, tls, "main")


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8980", "grpc://host", "ftp://host:1", "grpc://host:99999", "grpc://host:x", "grpc://u:p@host:1",
     "grpc://host:1/path", "grpc://:80", "grpc://host:0"],
)
def test_a_bad_url_is_one_usage_error_naming_the_flag(url: str) -> None:
    with pytest.raises(UsageError, match=r"^--remote-cache ") as caught:
        reapi.parse_endpoint(url, flag="--remote-cache")
    assert "\n" not in str(caught.value)


def test_headers_become_metadata_and_never_show(tmp_path: Path) -> None:
    endpoint = reapi.parse_endpoint("grpcs://h", headers=["Authorization=Bearer s3cret", "x-tenant=a=b"])
    assert endpoint.headers == (("authorization", "Bearer s3cret"), ("x-tenant", "a=b"))
    assert endpoint.header_names == ("authorization", "x-tenant")
    assert "s3cret" not in repr(endpoint) and "s3cret" not in str(endpoint)
    for bad in ("novalue", "=v", "bad name=v", "grpc-timeout=1", "te=trailers", "x-bin=v", "k=line\nbreak"):
        with pytest.raises(UsageError, match="^--remote-header"):
            reapi.parse_endpoint("grpc://h:1", headers=[bad])


@pytest.mark.parametrize(
    "header",
    ["Authorization: Bearer s3cretTOKEN", "authorization Bearer s3cretTOKEN", "s3cretTOKEN", "Bearer s3cretTOKEN=x"],
)
def test_a_mistyped_header_never_shows_its_value(header: str) -> None:
    """The usual slip, curl's ``NAME: VALUE`` for ``NAME=VALUE``, puts the token in the name."""
    with pytest.raises(UsageError) as caught:
        reapi.parse_endpoint("grpc://h:1", headers=[header])
    assert "s3crettoken" not in caught.value.render().lower()


@pytest.mark.parametrize(
    "url",
    ["grpc://user:s3cretTOKEN@host:1", "grpcs://s3cretTOKEN@host", "grpc://host:1/?token=s3cretTOKEN",
     "grpc://host:1#s3cretTOKEN", "grpc://host:x/s3cretTOKEN?a"],
)
def test_a_url_holding_a_secret_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        reapi.parse_endpoint(url)
    assert "s3cretTOKEN" not in caught.value.render() and "host" in str(caught.value)


@pytest.mark.parametrize("url", ["grpc://ho\nst:1", "grpc://host:1\t", "grpc://ho st:1", "grpc://ho\x1bst:1", "grpc://h%41:1"])
def test_a_url_with_control_characters_is_refused(url: str) -> None:
    url = url.encode().decode("unicode_escape")  # the escapes in the ids above
    with pytest.raises(UsageError) as caught:
        reapi.parse_endpoint(url)
    assert str(caught.value).isprintable()


def test_an_execute_status_message_is_kept_printable() -> None:
    """The runner puts it in the build's error: "remote execution of RUN ... failed: <message>"."""
    response = reapi.ExecuteResponse(reapi.ActionResult(), False, 9, "bad step\x1b[2J\r\nerror: forged")
    assert response.message.isprintable() and "\\x1b[2J" in response.message


def test_a_header_value_a_server_echoes_never_shows_in_an_error() -> None:
    reapi.parse_endpoint("grpc://h:1", headers=["authorization=Bearer eyJhbGciOiJ.s3cret.TOKEN"])
    for said in ("invalid token eyJhbGciOiJ.s3cret.TOKEN", "header 'Bearer eyJhbGciOiJ.s3cret.TOKEN' refused"):
        error = reapi.RemoteError(f"the remote executor at grpc://h:1 refused GetCapabilities: UNAUTHENTICATED: {said}")
        assert "s3cret" not in error.render() and "refused GetCapabilities" in error.message
    assert "Bearer" in reapi.RemoteError("Bearer tokens are required").message  # short words stay


def test_what_a_server_says_in_an_error_cannot_drive_the_terminal() -> None:
    error = reapi.RemoteError("refused: \x1b[2J\x1b]0;title\x07\nforged: line \u202e")
    assert error.message.isprintable() and "\\x1b[2J" in error.message and "\\n" in error.message
    assert len(reapi.RemoteUnavailable("x" * 100_000).message) <= 2000


def test_tls_files_need_grpcs_exist_and_come_in_pairs(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert reapi.parse_endpoint("grpcs://h", ca_cert=ca).ca_cert == ca
    with pytest.raises(UsageError, match="need a grpcs:// URL"):
        reapi.parse_endpoint("grpc://h:1", ca_cert=ca)
    with pytest.raises(UsageError, match="does not exist"):
        reapi.parse_endpoint("grpcs://h", ca_cert=tmp_path / "missing.pem")
    with pytest.raises(UsageError, match="needs its key"):
        reapi.parse_endpoint("grpcs://h", client_cert=ca)


def test_serialization_is_deterministic_and_sorted() -> None:
    digest = reapi.Digest.of(b"x")
    one = reapi.Command(("a", "b"), env=(("B", "2"), ("A", "1")), output_paths=("z", "a"), platform=(("b", "1"), ("a", "2")))
    other = reapi.Command(("a", "b"), env=(("A", "1"), ("B", "2")), output_paths=("a", "z"), platform=(("a", "2"), ("b", "1")))
    assert reapi.serialize(one) == reapi.serialize(other)
    message = re_pb2.Command.FromString(reapi.serialize(one))
    assert [p.name for p in message.platform.properties] == ["a", "b"]
    assert list(message.output_paths) == list(message.output_files) == ["a", "z"]  # v2.1 and older servers
    action = reapi.Action(digest, digest, timeout_seconds=1.5, platform=(("OSFamily", "linux"),))
    assert reapi.parse_action(reapi.serialize(action)) == action
    assert reapi.parse_command(reapi.serialize(other)) == other
    directory = reapi.Directory(
        files=(reapi.FileNode("b", digest, True), reapi.FileNode("a", digest)), directories=(reapi.DirectoryNode("c", digest),)
    )
    parsed = reapi.parse_directory(reapi.serialize(directory))
    assert [f.name for f in parsed.files] == ["a", "b"] and parsed.files[1].is_executable
    result = reapi.ActionResult(3, (reapi.OutputFile("o", digest),), stdout_digest=digest, stderr_raw=b"e", worker="w")
    assert reapi.parse_action_result(reapi.serialize(result)) == result


@pytest.mark.parametrize(
    "message",
    [
        re_pb2.Directory(files=[re_pb2.FileNode(name="../escape", digest=re_pb2.Digest(hash="a" * 64, size_bytes=1))]),
        re_pb2.Directory(files=[re_pb2.FileNode(name="a/b", digest=re_pb2.Digest(hash="a" * 64, size_bytes=1))]),
        re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="..", digest=re_pb2.Digest(hash="a" * 64, size_bytes=1))]),
        re_pb2.Directory(files=[re_pb2.FileNode(name="f", digest=re_pb2.Digest(hash="../../etc", size_bytes=1))]),
        re_pb2.Directory(files=[re_pb2.FileNode(name="f", digest=re_pb2.Digest(hash="a" * 64, size_bytes=-1))]),
        re_pb2.Directory(symlinks=[re_pb2.SymlinkNode(name="l", target="/etc/passwd")]),
    ],
)
def test_what_another_machine_sends_is_checked(message: re_pb2.Directory) -> None:
    with pytest.raises(reapi.RemoteError, match="^the remote sent "):
        reapi.parse_directory(message.SerializeToString())


@pytest.mark.parametrize("path", ["/etc/passwd", "../layer.tar", "a/../../b", "", "a//b", "./a"])
def test_an_output_path_outside_the_working_directory_is_refused(path: str) -> None:
    message = re_pb2.ActionResult(output_files=[re_pb2.OutputFile(path=path, digest=re_pb2.Digest(hash="a" * 64, size_bytes=1))])
    with pytest.raises(reapi.RemoteError, match="^the remote sent an output path"):
        reapi.parse_action_result(message.SerializeToString())


def test_bytes_that_do_not_decode_are_a_remote_error() -> None:
    with pytest.raises(reapi.RemoteError, match="does not decode"):
        reapi.parse_action(b"\xff\xff\xff")


def test_input_root_builds_sorted_directories() -> None:
    a, b, c = (reapi.Digest.of(x) for x in (b"a", b"b", b"c"))
    root, blobs = reapi.input_root({"step.json": a, "layers/2.tar": b, "layers/1.tar": c, "deep/x/y": a})
    assert all(reapi.Digest.of(data) == digest for digest, data in blobs.items())
    top = reapi.parse_directory(blobs[root])
    assert [f.name for f in top.files] == ["step.json"]
    assert [d.name for d in top.directories] == ["deep", "layers"]
    layers = reapi.parse_directory(blobs[top.directories[1].digest])
    assert [(f.name, f.digest) for f in layers.files] == [("1.tar", c), ("2.tar", b)]
    assert len(blobs) == 4  # root, deep, deep/x, layers
    again, _ = reapi.input_root(dict(reversed(list({"step.json": a, "layers/2.tar": b, "layers/1.tar": c, "deep/x/y": a}.items()))))
    assert again == root


@pytest.mark.parametrize("files", [{"/abs": reapi.EMPTY}, {"a/../b": reapi.EMPTY}, {"a//b": reapi.EMPTY},
                                   {"a": reapi.EMPTY, "a/b": reapi.EMPTY}, {"a/b": reapi.EMPTY, "a": reapi.EMPTY}])
def test_input_root_refuses_bad_paths(files: dict[str, reapi.Digest]) -> None:
    with pytest.raises(ValueError):
        reapi.input_root(files)


def test_a_lease_carries_the_action_or_its_digest_and_completes_with_a_result() -> None:
    digest = reapi.Digest.of(b"x")
    action = reapi.Action(digest, digest)
    with_action = bots_pb2.Lease(id="job-1", state=bots_pb2.ACTIVE)
    with_action.payload.Pack(_proto.action_to_proto(action))
    lease = _proto.lease_from_proto(with_action)
    assert (lease.id, lease.state, lease.action) == ("job-1", reapi.LeaseState.ACTIVE, action)
    assert lease.action_digest == reapi.Digest.of(reapi.serialize(action))
    with_digest = bots_pb2.Lease(id="job-2", state=bots_pb2.PENDING)
    with_digest.payload.Pack(_proto.digest_to_proto(digest))
    assert _proto.lease_from_proto(with_digest).action_digest == digest
    done = _proto.lease_to_proto(lease.completed(reapi.ActionResult(exit_code=2)))
    assert done.state == bots_pb2.COMPLETED and done.status.code == 0
    unpacked = re_pb2.ActionResult()
    assert done.result.Unpack(unpacked) and unpacked.exit_code == 2
    failed = _proto.lease_to_proto(lease.failed(14, "stopping"))
    assert (failed.state, failed.status.code, failed.status.message) == (bots_pb2.COMPLETED, 14, "stopping")
    assert not failed.HasField("result")
    strange = bots_pb2.Lease(id="job-3", state=bots_pb2.ACTIVE)
    strange.payload.Pack(re_pb2.Command())
    with pytest.raises(reapi.RemoteError, match="payload of type"):
        _proto.lease_from_proto(strange)


def test_a_bot_session_names_its_platform_and_capacity_as_buildgrid_reads_them() -> None:
    session = reapi.BotSession("", "bot-1", reapi.BotStatus.OK, properties=(("OSFamily", "linux"), ("ISA", "amd64")), capacity=3)
    message = _proto.bot_session_to_proto(session)
    assert [(p.key, p.value) for p in message.worker.devices[0].properties] == [("ISA", "amd64"), ("OSFamily", "linux")]
    assert [(c.key, c.value) for c in message.worker.configs] == [("capacity", "3")]
    assert message.status == bots_pb2.OK
