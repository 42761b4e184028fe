"""shared/chunked.py against waitress's own chunked decoder: the same bodies,
errors and consumed counts for any encoding cut at any points."""

from __future__ import annotations

import itertools
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from waitress.receiver import ChunkedReceiver

from shared.chunked import MAX_CONTROL_LINE, FastChunkedReceiver


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def append(self, s: bytes) -> None:
        self.data += s

    def __len__(self) -> int:
        return len(self.data)


def feed(receiver_class: type, stream: bytes, cuts: list[int]) -> tuple:
    r = receiver_class(Sink())
    consumed = []
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(bounds):
        consumed.append(r.received(stream[a:b]))
        if r.completed or r.error is not None:  # the parser stops feeding it
            break
    return bytes(r.buf.data), r.completed, r.error is None, consumed, r.trailer


def encode(pieces: list[bytes], ext: bytes = b"", trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces if p)
    return out + b"0\r\n" + trailer + b"\r\n"


pieces = st.lists(st.binary(min_size=1, max_size=300), max_size=8)
cuts = st.lists(st.integers(min_value=0, max_value=5000), max_size=12)


@settings(max_examples=400, deadline=None)
@given(pieces, cuts, st.sampled_from([b"", b";name=value", b';a="q"']),
       st.sampled_from([b"", b"X-Trailer: 1\r\n"]), st.binary(max_size=40))
def test_valid_bodies_decode_like_waitress(body: list[bytes], cut: list[int], ext: bytes,
                                           trailer: bytes, after: bytes) -> None:
    stream = encode(body, ext, trailer) + after  # `after`: the next pipelined request
    ours = feed(FastChunkedReceiver, stream, cut)
    assert ours == feed(ChunkedReceiver, stream, cut)
    assert ours[0] == b"".join(body) and ours[1] and ours[2]


@settings(max_examples=400, deadline=None)
@given(pieces, cuts, st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=6))
def test_damaged_bodies_are_refused_like_waitress(body: list[bytes], cut: list[int],
                                                  at: int, junk: bytes) -> None:
    stream = encode(body)
    at %= len(stream)
    damaged = stream[:at] + junk + stream[at:]
    ours, theirs = feed(FastChunkedReceiver, damaged, cut), feed(ChunkedReceiver, damaged, cut)
    # Refused by both or by neither (after an error waitress may read on into a
    # trailer and set `completed`; the parser answers 400 either way).
    assert ours[2] == theirs[2]
    if ours[2]:
        assert ours == theirs


def test_a_chunk_size_line_without_end_is_refused() -> None:
    r = FastChunkedReceiver(Sink())
    r.received(b"1" * (MAX_CONTROL_LINE + 10))
    assert r.error is not None


def test_large_body_in_socket_sized_reads() -> None:
    data = os.urandom(3 << 20)
    stream = encode([data[i:i + 32768] for i in range(0, len(data), 32768)])
    r = FastChunkedReceiver(Sink())
    for i in range(0, len(stream), 262144):
        r.received(stream[i:i + 262144])
    assert r.completed and r.error is None and bytes(r.buf.data) == data
