"""Cassandra's variable-length integers (format reference §5): not LEB128.

The byte vectors come from the format reference's tables (§5.1, §5.2), which were taken from
Cassandra's ``VIntCoding``; none of them is produced by the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdcfast.values import ValueDecodeError, ValueEncodeError
from cdcfast.values.vint import (
    encode_svint,
    encode_uvint,
    read_svint,
    read_uvint,
    uvint_size,
    zigzag_decode,
    zigzag_encode,
)

U64 = st.integers(min_value=0, max_value=2**64 - 1)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

UVINT_VECTORS = [
    (0, "00"),
    (127, "7f"),
    (128, "8080"),
    (255, "80ff"),
    (16383, "bfff"),
    (16384, "c04000"),
    (2**21, "e0200000"),
    (2**56 - 1, "feffffffffffffff"),
    (2**56, "ff0100000000000000"),
    (2**64 - 1, "ffffffffffffffffff"),
    # -1442880000 as an int32 sign-extended to 64 bits, read back as u64
    (-1442880000 & (2**64 - 1), "ffffffffffa9ff6600"),
]

SVINT_VECTORS = [(0, "00"), (-1, "01"), (1, "02"), (-64, "7f"), (64, "8080")]


@pytest.mark.parametrize(("value", "hex_bytes"), UVINT_VECTORS)
def test_uvint_reference_vectors(value: int, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    assert encode_uvint(value) == data
    assert read_uvint(data) == (value, len(data))
    assert uvint_size(value) == len(data)


@pytest.mark.parametrize(("value", "hex_bytes"), SVINT_VECTORS)
def test_svint_reference_vectors(value: int, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    assert encode_svint(value) == data
    assert read_svint(data) == (value, len(data))


def test_read_at_offset_and_trailing_bytes_ignored() -> None:
    data = bytes.fromhex("aac0400055")
    assert read_uvint(data, 1) == (16384, 4)


def test_non_minimal_encodings_are_accepted() -> None:
    # The decoder does not require the shortest form (reference §5.1).
    assert read_uvint(bytes.fromhex("8005")) == (5, 2)
    assert read_uvint(bytes.fromhex("ff0000000000000005")) == (5, 9)


@pytest.mark.parametrize("hex_bytes", ["", "80", "c040", "ff00000000000000"])
def test_truncated_uvint_raises(hex_bytes: str) -> None:
    with pytest.raises(ValueDecodeError, match="offset"):
        read_uvint(bytes.fromhex(hex_bytes))


@pytest.mark.parametrize("value", [-1, 2**64])
def test_uvint_out_of_range_raises(value: int) -> None:
    with pytest.raises(ValueEncodeError):
        encode_uvint(value)


@pytest.mark.parametrize("value", [-(2**63) - 1, 2**63])
def test_svint_out_of_range_raises(value: int) -> None:
    with pytest.raises(ValueEncodeError):
        encode_svint(value)


@given(U64)
def test_uvint_round_trip(value: int) -> None:
    data = encode_uvint(value)
    assert read_uvint(data + b"\x99") == (value, len(data))
    # size = 9 - ((nlz64(v | 1) - 1) / 7) in Java's truncating integer division, reference §5.1
    nlz = 64 - (value | 1).bit_length()
    assert len(data) == 9 - int((nlz - 1) / 7)


@given(I64)
def test_svint_round_trip(value: int) -> None:
    assert zigzag_decode(zigzag_encode(value)) == value
    assert 0 <= zigzag_encode(value) < 2**64
    data = encode_svint(value)
    assert read_svint(data) == (value, len(data))


@given(st.binary(min_size=1, max_size=12))
def test_uvint_decoder_never_crashes_unexpectedly(data: bytes) -> None:
    try:
        value, end = read_uvint(data)
    except ValueDecodeError:
        return
    assert 0 <= value < 2**64
    assert 1 <= end <= min(9, len(data))
