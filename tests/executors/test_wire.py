"""The framing between pybuild and its sandbox helpers."""

from __future__ import annotations

import socket
import threading

from hypothesis import given
from hypothesis import strategies as st

from pybuild.executors._wire import Decoder, encode, read_message, write_message

messages = st.recursive(
    st.none() | st.integers() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@given(st.lists(messages, max_size=5), st.integers(min_value=1, max_value=7))
def test_decoder_reassembles_any_split(values: list, step: int) -> None:
    data = b"".join(encode(v) for v in values)
    decoder = Decoder()
    out = []
    for start in range(0, len(data), step):
        out += decoder.feed(data[start : start + step])
    assert out == values and not decoder.pending


def test_blocking_helpers_over_a_socket() -> None:
    ours, theirs = socket.socketpair()
    big = {"big": b"x" * 100_000}
    writer = threading.Thread(target=lambda: (write_message(theirs.fileno(), ("exit", 0)), write_message(theirs.fileno(), big), theirs.close()))
    writer.start()
    try:
        assert read_message(ours.fileno()) == ("exit", 0)
        assert read_message(ours.fileno()) == big
        assert read_message(ours.fileno()) is None
    finally:
        writer.join()
        ours.close()
