"""How ``reapi.Remote`` talks: headers as gRPC metadata, the instance name, TLS with a client
certificate, errors as one line, an Execute stream the server ends early. Against small gRPC
servers in this process that record what they receive (BuildGrid, with authorization off,
would not show it)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid.common.protos.google.longrunning import operations_pb2

from pybuild import reapi

from .conftest import unavailable

TOKEN = "Bearer tok-5e3c2f"


class Recorder(re_grpc.CapabilitiesServicer, re_grpc.ExecutionServicer):
    """Capabilities that demand a token; an Execute stream that stops before the result."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.instances: list[str] = []
        self.waited: list[str] = []
        self.executed: list[dict[str, str | bytes]] = []  # the metadata of each Execute

    def GetCapabilities(self, request: re_pb2.GetCapabilitiesRequest, context: grpc.ServicerContext) -> re_pb2.ServerCapabilities:
        self.metadata.append({m.key: str(m.value) for m in context.invocation_metadata()})
        self.instances.append(request.instance_name)
        if dict(self.metadata[-1]).get("authorization") != TOKEN:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid token")
        reply = re_pb2.ServerCapabilities()
        reply.cache_capabilities.digest_function.append(re_pb2.DigestFunction.SHA256)
        reply.cache_capabilities.max_batch_total_size_bytes = 1000
        return reply

    def Execute(self, request: re_pb2.ExecuteRequest, context: grpc.ServicerContext) -> Iterator[operations_pb2.Operation]:
        self.executed.append({m.key: m.value for m in context.invocation_metadata()})
        yield operation("op-1", stage=re_pb2.ExecutionStage.QUEUED)  # then the stream ends: a server restart, a proxy

    def WaitExecution(self, request: re_pb2.WaitExecutionRequest, context: grpc.ServicerContext) -> Iterator[operations_pb2.Operation]:
        self.waited.append(request.name)
        yield operation(request.name, stage=re_pb2.ExecutionStage.EXECUTING)
        done = operation(request.name, stage=re_pb2.ExecutionStage.COMPLETED)
        done.done = True
        response = re_pb2.ExecuteResponse(result=re_pb2.ActionResult(exit_code=7), cached_result=False)
        done.response.Pack(response)
        yield done


def operation(name: str, stage: int) -> operations_pb2.Operation:
    message = operations_pb2.Operation(name=name)
    message.metadata.Pack(re_pb2.ExecuteOperationMetadata(stage=stage))  # type: ignore[arg-type]
    return message


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def serve(recorder: Recorder, credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    re_grpc.add_CapabilitiesServicer_to_server(recorder, server)
    re_grpc.add_ExecutionServicer_to_server(recorder, server)
    port = server.add_secure_port("localhost:0", credentials) if credentials else server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def plain(recorder: Recorder) -> Iterator[int]:
    server, port = serve(recorder)
    yield port
    server.stop(None)


def test_headers_go_as_metadata_with_the_instance_name(recorder: Recorder, plain: int) -> None:
    endpoint = reapi.parse_endpoint(f"grpc://127.0.0.1:{plain}", instance="main", headers=[f"Authorization={TOKEN}", "X-Team=build"])
    with reapi.Remote.connect(endpoint) as remote:
        assert remote.capabilities().max_batch_total_size_bytes == 1000
    assert recorder.metadata[-1]["authorization"] == TOKEN and recorder.metadata[-1]["x-team"] == "build"
    assert recorder.instances == ["main"]


def test_a_refused_token_is_one_line_without_the_token(recorder: Recorder, plain: int) -> None:
    endpoint = reapi.parse_endpoint(f"grpc://127.0.0.1:{plain}", headers=["authorization=Bearer wrong-token"])
    with reapi.Remote.connect(endpoint) as remote, pytest.raises(reapi.RemoteError) as caught:
        remote.capabilities()
    error = caught.value
    assert str(error) == f"the remote executor at grpc://127.0.0.1:{plain} refused GetCapabilities: UNAUTHENTICATED: no valid token"
    assert error.hint is not None and "--remote-header" in error.hint
    assert "wrong-token" not in error.render()


def test_an_execute_stream_ended_early_is_resumed_with_wait_execution(recorder: Recorder, plain: int) -> None:
    stages: list[str] = []
    with reapi.Remote.connect(reapi.parse_endpoint(f"grpc://127.0.0.1:{plain}")) as remote:
        response = remote.execute(reapi.Digest.of(b"action"), on_update=stages.append)
    assert response.result.exit_code == 7 and not response.cached
    assert recorder.waited == ["op-1"]
    assert stages == ["QUEUED", "EXECUTING", "COMPLETED"]


# --- TLS -----------------------------------------------------------------------------------


def test_an_execute_names_one_locality_hint_per_client(recorder: Recorder, plain: int) -> None:
    """BuildGrid's locality assigner gives a step to a bot that ran a step with the same hint:
    every Execute of one client (one build) carries the same hint, another client another."""
    endpoint = reapi.parse_endpoint(f"grpc://127.0.0.1:{plain}", headers=[f"authorization={TOKEN}"])
    for _client in range(2):
        with reapi.Remote.connect(endpoint) as remote:
            for _step in range(2):
                remote.execute(reapi.Digest.of(b"action"))
    hints = []
    for metadata in recorder.executed:
        assert metadata["authorization"] == TOKEN  # the headers still go along
        header = metadata["build.buildgrid.schedulingmetadata-bin"]
        assert isinstance(header, bytes)
        # SchedulingMetadata is one string field numbered 1, as Digest's hash is: its wire form parses as one
        hint = re_pb2.Digest.FromString(header).hash
        assert len(hint) >= 16
        hints.append(hint)
    assert hints[0] == hints[1] and hints[2] == hints[3] and hints[0] != hints[2]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate, all signed by the CA."""
    if shutil.which("openssl") is None:
        unavailable("openssl is missing (apt-get install openssl)")
    where = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=where)
    (where / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={'localhost' if name == 'server' else 'bot'}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=where)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=where)
    return where


@pytest.fixture
def tls_port(recorder: Recorder, pki: Path) -> Iterator[int]:
    credentials = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server, port = serve(recorder, credentials)
    yield port
    server.stop(None)


def test_tls_with_a_client_certificate(recorder: Recorder, pki: Path, tls_port: int) -> None:
    endpoint = reapi.parse_endpoint(
        f"grpcs://localhost:{tls_port}", headers=[f"authorization={TOKEN}"],
        ca_cert=pki / "ca.pem", client_cert=pki / "client.pem", client_key=pki / "client.key",
    )
    with reapi.Remote.connect(endpoint, connect_timeout=5) as remote:
        assert remote.capabilities().digest_functions == ("SHA256",)
    assert recorder.metadata[-1]["authorization"] == TOKEN


def test_tls_without_the_client_certificate_or_the_ca_cannot_connect(pki: Path, tls_port: int) -> None:
    for options in ({"ca_cert": pki / "ca.pem"}, {"client_cert": pki / "client.pem", "client_key": pki / "client.key"}):
        endpoint = reapi.parse_endpoint(f"grpcs://localhost:{tls_port}", **options)  # type: ignore[arg-type]
        with reapi.Remote.connect(endpoint, connect_timeout=5) as remote, pytest.raises(reapi.RemoteUnavailable) as caught:
            remote.capabilities()
        assert str(caught.value).startswith(f"cannot reach the remote executor at grpcs://localhost:{tls_port}: ")


def test_a_plain_client_is_not_served_by_a_tls_server(tls_port: int) -> None:
    with reapi.Remote.connect(reapi.parse_endpoint(f"grpc://localhost:{tls_port}"), connect_timeout=5) as remote:
        with pytest.raises(reapi.RemoteUnavailable):
            remote.capabilities()


def test_interrupting_a_wait_does_not_need_a_server() -> None:
    """The interrupt of a bot's long poll is checked while the call is pending (here: a server
    that never answers, so the only way out is the interrupt or the deadline)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        endpoint = reapi.parse_endpoint(f"grpc://127.0.0.1:{silent.getsockname()[1]}")
        with reapi.Remote.connect(endpoint) as remote:
            session = reapi.BotSession("farm/x", "bot", reapi.BotStatus.OK)
            interrupt = threading.Event()
            interrupt.set()
            assert remote.update_bot_session(session, timeout=600, interrupt=interrupt) is session
