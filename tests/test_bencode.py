"""Strict bencoding: round trips, exact spans, and typed errors for bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendistro import bencode
from opendistro.errors import BencodeError

values = st.recursive(
    st.integers() | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.binary(max_size=10), children, max_size=5),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert bencode.decode(bencode.encode(value)) == value


@given(st.binary(max_size=200))
def test_garbage_raises_only_bencode_error(data: bytes) -> None:
    try:
        value = bencode.decode(data)
    except BencodeError:
        return
    assert bencode.decode(bencode.encode(value)) == value


def test_text_is_encoded_as_utf8_and_keys_sorted() -> None:
    assert bencode.encode({"b": 1, "a": "é"}) == b"d1:a2:\xc3\xa91:bi1ee"


@pytest.mark.parametrize(
    "bad",
    [
        b"i01e",
        b"i-0e",
        b"ie",
        b"i12",
        b"02:ab",
        b"5:ab",
        b"l",
        b"d1:ai1e1:ai2ee",
        b"di1ei2ee",
        b"i1ei2e",
        b"x",
        b"",
        b"l" * 100 + b"e" * 100,
    ],
)
def test_malformed_input_is_rejected(bad: bytes) -> None:
    with pytest.raises(BencodeError):
        bencode.decode(bad)


def test_decode_prefix_leaves_trailing_payload() -> None:
    data = b"d8:msg_typei1e5:piecei0ee" + b"RAWDATA"
    value, end = bencode.decode_prefix(data)
    assert value == {b"msg_type": 1, b"piece": 0}
    assert data[end:] == b"RAWDATA"


def test_dict_value_span_is_exact_bytes_in_file() -> None:
    # keys deliberately unsorted inside info: the span must keep them as found
    data = b"d8:announce3:url4:infod4:name1:x6:lengthi3eee"
    start, end = bencode.dict_value_span(data, b"info") or (0, 0)
    assert data[start:end] == b"d4:name1:x6:lengthi3ee"
    assert bencode.dict_value_span(data, b"missing") is None


def test_booleans_and_unknown_types_cannot_be_encoded() -> None:
    with pytest.raises(BencodeError):
        bencode.encode(True)
    with pytest.raises(BencodeError):
        bencode.encode(1.5)


def test_containers_per_document_are_capped() -> None:
    """Two bytes make a list of ~60 bytes in memory: the count is bounded, not the size."""
    assert bencode.decode(b"l" + b"le" * 1000 + b"e", max_containers=1001) == [[]] * 1000
    with pytest.raises(BencodeError, match="too many lists"):
        bencode.decode(b"l" + b"de" * 1000 + b"e", max_containers=1000)
    with pytest.raises(BencodeError, match="too many lists"):
        bencode.decode(b"l" + b"le" * (bencode.DEFAULT_MAX_CONTAINERS + 1) + b"e")
