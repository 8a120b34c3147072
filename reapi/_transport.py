"""How ``Remote`` talks gRPC: the channel to an ``Endpoint`` (plain or TLS, its headers sent
as metadata by the caller) and gRPC's errors as pybuild's one-line ``RemoteError``s."""

from __future__ import annotations

from pathlib import Path

import grpc

from ._endpoint import Endpoint
from ._errors import RemoteError, RemoteUnavailable

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # A restarted server is found again within a second or two, not gRPC's default 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def open_channel(endpoint: Endpoint) -> grpc.Channel:
    """A channel to ``endpoint`` (nothing is sent until the first call)."""
    if endpoint.tls:
        return grpc.secure_channel(endpoint.target, _credentials(endpoint), options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)


def translate(url: str, what: str, error: grpc.RpcError) -> RemoteError:
    """A failed call as one line naming the server: RemoteUnavailable when it cannot be reached."""
    code, details = status_of(error)
    if code in UNREACHABLE:
        reason = "no answer in time" if code == grpc.StatusCode.DEADLINE_EXCEEDED else last_cause(details)
        return RemoteUnavailable(f"cannot reach the remote executor at {url}: {reason}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return RemoteError(
            f"the remote executor at {url} refused {what}: {code.name}: {details}",
            hint="check --remote-header and the TLS client certificate",
        )
    return RemoteError(f"{what} at {url} failed: {code.name if code else 'error'}: {details}")


def _credentials(endpoint: Endpoint) -> grpc.ChannelCredentials:
    def read(path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as error:
            raise RemoteError(f"cannot read the TLS file {path}: {error.strerror}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read(endpoint.ca_cert),
        private_key=read(endpoint.client_key),
        certificate_chain=read(endpoint.client_cert),
    )


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    try:  # what gRPC raises for a call is also a grpc.Call, which has code() and details()
        return error.code(), one_line(error.details() or "")
    except AttributeError:
        return None, one_line(str(error))


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:299] + "…"


def last_cause(details: str) -> str:
    """The end of gRPC's chain of causes ("failed to connect to all addresses; last error:
    UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused")."""
    return details.rsplit(": ", 1)[-1].strip(" []") or details


def code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
