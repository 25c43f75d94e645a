"""Bitfield: BitTorrent bit order, validation of peer data, and a count that stays right."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendistro.bitfield import Bitfield
from opendistro.errors import RemoteProtocolError


def test_bit_order_is_high_bit_first() -> None:
    field = Bitfield(10)
    field.set(0)
    field.set(9)
    assert field.to_bytes() == b"\x80\x40"
    assert list(field) == [0, 9]
    assert 0 in field and 9 in field and 1 not in field


def test_from_wire_bytes() -> None:
    field = Bitfield(12, b"\xa0\x10")
    assert list(field) == [0, 2, 11]
    assert field.count == 3
    assert not field.complete


@pytest.mark.parametrize(
    ("length", "data"),
    [
        (10, b"\x00"),  # too short
        (10, b"\x00\x00\x00"),  # too long
        (10, b"\x00\x20"),  # spare bit 10 set
        (10, b"\x00\x01"),  # last spare bit set
        (0, b"\x00"),
    ],
)
def test_bad_peer_data_is_a_remote_error(length: int, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Bitfield(length, data)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 16, 17, 1000])
def test_full(length: int) -> None:
    field = Bitfield.full(length)
    assert field.count == length
    assert field.complete
    assert list(field) == list(range(length))
    assert list(field.missing()) == []
    # The wire form of a full bitfield is accepted back (spare bits are zero).
    assert Bitfield(length, field.to_bytes()) == field


def test_set_and_clear_keep_count() -> None:
    field = Bitfield(20)
    field.set(3)
    field.set(3)
    field.set(19)
    assert field.count == 2
    field.clear(3)
    field.clear(3)
    assert field.count == 1
    assert list(field.missing()) == [i for i in range(20) if i != 19]


def test_out_of_range() -> None:
    field = Bitfield(8)
    assert not field.has(8)
    assert not field.has(-1)
    assert "x" not in field
    with pytest.raises(IndexError):
        field.set(8)
    with pytest.raises(IndexError):
        field.clear(-1)


def test_copy_is_independent() -> None:
    field = Bitfield(9)
    field.set(1)
    other = field.copy()
    other.set(2)
    assert list(field) == [1]
    assert list(other) == [1, 2]


@given(
    st.integers(min_value=0, max_value=300).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0)), max_size=n))
    )
)
def test_matches_a_python_set(case: tuple[int, set[int]]) -> None:
    length, indices = case
    field = Bitfield(length)
    for index in indices:
        field.set(index)
    assert set(field) == indices
    assert field.count == len(indices)
    assert set(field.missing()) == set(range(length)) - indices
    assert Bitfield(length, field.to_bytes()) == field
    assert len(field) == length


def test_negative_length_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        Bitfield(-1)


def test_equality_is_by_length_and_bits_and_only_with_bitfields() -> None:
    assert Bitfield(9) == Bitfield(9)
    assert Bitfield(8) != Bitfield(9)  # same bytes, different length
    assert Bitfield(8) != b"\x00"
    assert Bitfield(8).__eq__(b"\x00") is NotImplemented
    with pytest.raises(TypeError):
        hash(Bitfield(8))  # mutable, so not hashable


def test_repr_names_length_and_count() -> None:
    field = Bitfield(12)
    field.set(4)
    assert repr(field) == "Bitfield(length=12, count=1)"


def test_add_sets_a_piece_and_says_whether_it_was_new() -> None:
    bits = Bitfield(12)
    assert bits.add(9) is True
    assert bits.add(9) is False
    assert bits.has(9) and bits.count == 1 and bits.to_bytes() == b"\x00\x40"
    with pytest.raises(IndexError):
        bits.add(12)
