"""A registry that cannot be reached costs seconds, not five retries.

What waiting can change is tried again, and only what it can change:

- a host name that does not exist (getaddrinfo's EAI_NONAME / EAI_NODATA:
  "Name or service not known") will not exist a second later, and a TLS
  certificate that is not trusted will not become trusted: tried once;
- a connection refused, reset or unroutable, or a name lookup that failed
  for now (EAI_AGAIN), may pass if a registry is restarting: retried a few
  times with short waits (``RetryPolicy.connect_retries``), under a second
  of waiting in all;
- 5xx answers, timeouts and connections dropped mid-answer keep their retries.

BuildKit's registry retry handler (moby/buildkit
util/resolver/retryhandler/retry.go, ``retryError``) retries 5xx answers,
io.EOF, ECONNRESET, EPIPE, net.ErrClosed and errors whose ``Temporary()`` is
true; Go's net.DNSError is temporary only for a timeout or a temporary lookup
failure (EAI_AGAIN), never for "no such host" (IsNotFound), so a name that
does not resolve fails at once there too.  A refused connection is not
temporary in Go (syscall.Errno.Temporary) and BuildKit does not retry it;
pybuild retries it briefly, bounded, because a local registry that is
starting or restarting refuses for a moment.

Attempts are counted through a fake transport or a fake resolver; the
virtual clock of trio.testing.MockClock measures the waiting, so nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable

import httpx
import pytest
import trio
import trio.testing

from pybuild.errors import NotFound, RegistryError
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import RegistryClient
from pybuild.oci.registry._retry import RetryPolicy


def _connect_error(cause: BaseException) -> httpx.ConnectError:
    """An httpx ConnectError the way httpcore raises one: the OS error as its cause."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise httpx.ConnectError(str(inner)) from inner
    except httpx.ConnectError as outer:
        return outer


def _refused(address: str) -> BaseException:
    """What trio's open_tcp_stream raises when every address refuses."""
    group = ExceptionGroup(
        f"all attempts to connect to {address} failed",
        [ConnectionRefusedError(errno.ECONNREFUSED, f"Error connecting to {address}: Connection refused")],
    )
    error = OSError(f"all attempts to connect to {address} failed")
    error.__cause__ = group
    return error


def _failing(cause: Callable[[], BaseException], attempts: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(str(request.url))
        raise _connect_error(cause())

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "code, text",
    [(socket.EAI_NONAME, "Name or service not known"), (getattr(socket, "EAI_NODATA", -5), "No address associated with hostname")],
)
async def test_a_registry_name_that_does_not_resolve_is_tried_once(
    autojump_clock: trio.testing.MockClock, code: int, text: str
) -> None:
    """BuildKit's retryError (util/resolver/retryhandler/retry.go) does not
    retry a net.DNSError that is not Temporary(): "no such host" fails at once."""
    attempts: list[str] = []
    transport = _failing(lambda: socket.gaierror(code, text), attempts)
    async with RegistryClient(transport=transport) as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(parse_reference("nosuch.invalid/x:1"), "linux/amd64")
    message = str(caught.value)
    assert len(attempts) == 1
    assert "cannot resolve nosuch.invalid" in message and text in message and "tried once" in message
    assert "\n" not in message
    assert "check the registry in the image's name" in (caught.value.hint or "")


async def test_a_name_lookup_that_fails_for_now_is_retried_briefly(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[str] = []
    transport = _failing(lambda: socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), attempts)
    start = trio.current_time()
    async with RegistryClient(transport=transport) as client:
        with pytest.raises(RegistryError, match="Temporary failure in name resolution.*tried 3 times"):
            await client.resolve(parse_reference("registry.example:5000/x:1"), "linux/amd64")
    assert len(attempts) == RetryPolicy().connect_retries + 1 == 3
    assert trio.current_time() - start < 1.0  # virtual seconds of back-off, not the 4-8 s of five tries


async def test_a_refused_connection_is_retried_a_few_times_with_short_waits(autojump_clock: trio.testing.MockClock) -> None:
    """BuildKit's retryError (util/resolver/retryhandler/retry.go) retries
    ECONNRESET and temporary net errors with 1 s, 2 s, 4 s waits and does not
    retry ECONNREFUSED; pybuild tries a refused port three times within a
    second, so a registry restarting is waited for and a dead one costs little."""
    attempts: list[str] = []
    transport = _failing(lambda: _refused("('127.0.0.1', 1)"), attempts)
    start = trio.current_time()
    async with RegistryClient(transport=transport) as client:  # the default policy: 4 retries for what may pass
        with pytest.raises(RegistryError) as caught:
            await client.resolve(parse_reference("127.0.0.1:1/refused:1"), "linux/amd64")
    message = str(caught.value)
    assert len(attempts) == 3
    assert trio.current_time() - start < 1.0
    assert "cannot connect to 127.0.0.1:1 (connection refused)" in message and "tried 3 times" in message
    assert "\n" not in message


async def test_an_untrusted_certificate_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[str] = []

    def untrusted() -> BaseException:
        error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")
        error.verify_message = "self-signed certificate"
        return error

    async with RegistryClient(transport=_failing(untrusted, attempts)) as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(parse_reference("registry.example/x:1"), "linux/amd64")
    assert len(attempts) == 1
    assert "registry.example" in str(caught.value) and "self-signed certificate" in str(caught.value)
    assert "tried once" in str(caught.value)


async def test_a_connection_dropped_mid_answer_keeps_its_full_retries(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(str(request.url))
        if len(attempts) <= 4:
            raise httpx.ReadError("connection reset by peer")
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(NotFound):
            await client.resolve(parse_reference("127.0.0.1:1/flaky:1"), "linux/amd64")
    assert len(attempts) == 5


async def test_an_unresolvable_token_service_is_tried_once(autojump_clock: trio.testing.MockClock) -> None:
    """The registry answers, but the token realm it names does not resolve."""
    registry_attempts: list[str] = []
    token_attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.nosuch.invalid":
            token_attempts.append(str(request.url))
            raise _connect_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
        registry_attempts.append(str(request.url))
        challenge = 'Bearer realm="https://auth.nosuch.invalid/token",service="registry.example"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RegistryError, match="cannot resolve auth.nosuch.invalid.*tried once"):
            await client.resolve(parse_reference("registry.example/x:1"), "linux/amd64")
    assert len(token_attempts) == 1 and len(registry_attempts) == 1


async def test_a_real_lookup_that_finds_no_such_host_is_asked_once(autojump_clock: trio.testing.MockClock) -> None:
    """Through httpx, httpcore and trio's own connect: the classification reads
    the exceptions they really raise, not ones shaped by hand."""
    asked: list[bytes | str] = []

    class NoSuchHost(trio.abc.HostnameResolver):
        async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None, family: int = 0, type: int = 0,
                              proto: int = 0, flags: int = 0) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int] | tuple[str, int, int, int]]]:
            asked.append(host or b"")
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
            raise NotImplementedError

    trio.socket.set_custom_hostname_resolver(NoSuchHost())
    async with RegistryClient() as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(parse_reference("nosuch.invalid/x:1"), "linux/amd64")
    assert asked == [b"nosuch.invalid"]
    assert "cannot resolve nosuch.invalid (Name or service not known)" in str(caught.value)


@pytest.mark.parametrize(
    "cause, retry, words",
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False, "cannot resolve h.example (Name or service not known)"),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True, "cannot resolve h.example (Temporary failure"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True, "cannot connect to h.example (connection refused)"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True, "cannot connect to h.example (connection reset)"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), True, "cannot connect to h.example (network unreachable)"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True, "cannot connect to h.example (no route to host)"),
    ],
)
def test_connect_failures_are_read_from_the_exception_chain(cause: BaseException, retry: bool, words: str) -> None:
    from pybuild.oci._network import connect_failure

    failure = connect_failure(_connect_error(cause), "h.example")
    assert failure is not None and failure.retry is retry and words in failure.reason


def test_an_unknown_connect_error_is_not_classified() -> None:
    from pybuild.oci._network import connect_failure

    assert connect_failure(httpx.ConnectError("something else"), "h.example") is None
