"""The feed's control channel: JSON lines and binary hot-path records, cut at any byte."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastload.errors import FeedError
from fastload.feed import _wire

i64 = st.integers(-(2**63), 2**63 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)

batches = st.builds(
    lambda lid, g, s, n, e, k: (
        _wire.encode_batch(lid, g, s, n, e, k),
        [{"op": "b", "i": lid, "g": g, "s": s, "n": n, "e": e, "k": k}],
    ),
    i64,
    i32,
    i32,
    i32,
    i64,
    i64,
)
releases = st.builds(
    lambda ids, t, e, b: (
        _wire.encode_release(ids, t, [e, b]),
        [{"op": "r", "i": ids, "t": t, "at": [e, b]}],
    ),
    st.lists(st.integers(0, 2**63 - 1), max_size=40),
    i64,
    st.one_of(st.none(), st.integers(0, 2**62)),
    i64,
)
controls = st.builds(
    lambda text, n: (
        _wire.encode({"op": "status", "text": text, "n": n}),
        [{"op": "status", "text": text, "n": n}],
    ),
    st.text(max_size=20),
    st.integers(-5, 5),
)


@given(
    messages=st.lists(st.one_of(batches, releases, controls), max_size=12),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_records_and_json_lines_decode_exactly_whatever_the_chunks(messages, cuts):
    stream = b"".join(data for data, _ in messages)
    want = [m for _, ms in messages for m in ms]
    bounds = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    buffer = _wire.LineBuffer()
    got = []
    for lo, hi in itertools.pairwise(bounds):
        got.extend(buffer.feed(stream[lo:hi]))
    assert got == want


def test_a_release_of_many_ids_is_split_into_records_that_all_arrive():
    ids = list(range(_wire.MAX_IDS + 5))
    got = _wire.LineBuffer().feed(_wire.encode_release(ids, 7, [1, 2]))
    assert [len(m["i"]) for m in got] == [_wire.MAX_IDS, 5]
    assert [i for m in got for i in m["i"]] == ids
    assert {m["t"] for m in got} == {7}


def test_a_release_record_claiming_too_many_ids_is_a_protocol_error():
    data = bytes((_wire.TAG_RELEASE,)) + _wire._RELEASE.pack(0, 0, 0, _wire.MAX_IDS + 1)
    with pytest.raises(FeedError, match="release record"):
        _wire.LineBuffer().feed(data)


def test_garbage_is_a_protocol_error_not_a_message():
    with pytest.raises(FeedError, match="malformed"):
        _wire.LineBuffer().feed(b"\x07garbage\n")
