"""Compact message encodings round-trip exactly."""

import numpy as np
from hypothesis import given, settings, strategies as st

from satqkd.protocol.compress import (
    decode_sorted, encode_sorted, pack_2bit, pack_bits, unpack_2bit, unpack_bits, varint_decode, varint_encode,
)


@settings(deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=200))
def test_varint_roundtrip(vals):
    a = np.array(vals, dtype=np.uint64)
    assert np.array_equal(varint_decode(varint_encode(a), len(vals)), a)


def test_varint_known_bytes():
    assert varint_encode(np.array([0, 1, 127, 128, 300])) == bytes([0, 1, 0x7F, 0x80, 0x01, 0xAC, 0x02])


@settings(deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=10**12), max_size=300))
def test_sorted_roundtrip(s):
    idx = np.array(sorted(s), dtype=np.int64)
    assert np.array_equal(decode_sorted(encode_sorted(idx), idx.size), idx)


def test_sorted_rejects_unsorted():
    import pytest
    with pytest.raises(ValueError):
        encode_sorted(np.array([5, 3]))


def test_preset_like_gaps_take_about_two_bytes():
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(10**9, size=130_000, replace=False))  # mean gap ≈ 7,700 pulses
    assert len(encode_sorted(idx)) / idx.size < 2.2


@settings(deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3), max_size=100))
def test_bit_packing_roundtrip(vals):
    v = np.array(vals, dtype=np.uint8)
    assert np.array_equal(unpack_2bit(pack_2bit(v), v.size), v)
    b = v & 1
    assert np.array_equal(unpack_bits(pack_bits(b), b.size), b)
