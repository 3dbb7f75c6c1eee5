"""Error verification: polynomial hash tags over GF(2^t − 1) and their collision bound."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd.postprocess.verification import (
    TAG_LENGTHS,
    block_bits_for,
    collision_bound,
    draw_verification_key,
    tag_length_for,
    verification_tag,
)


def reference_tag(bits: np.ndarray, k: int, t: int) -> int:
    """Independent evaluation: Σ c_i k^(L−i+1) + n with blocks cut from one big integer."""
    p = (1 << t) - 1
    b = block_bits_for(t)
    n = bits.size
    L = -(-n // b)
    v = 0
    for bit in bits.tolist():
        v = (v << 1) | bit
    v <<= L * b - n  # zero-pad the last block
    mask = (1 << b) - 1
    total = 0
    for i in range(1, L + 1):
        c = (v >> (b * (L - i))) & mask
        total += c * pow(k, L - i + 1, p)
    return (total + n) % p


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 1500), t=st.sampled_from(TAG_LENGTHS), seed=st.integers(0, 2**32 - 1))
def test_tag_matches_independent_polynomial(n, t, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    k = draw_verification_key(t, rng)
    assert verification_tag(bits, k, t) == reference_tag(bits, k, t)


def test_equal_inputs_equal_tags():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 100_003, dtype=np.uint8)
    for t in TAG_LENGTHS:
        k = draw_verification_key(t, rng)
        tag = verification_tag(bits, k, t)
        assert 0 <= tag < (1 << t) - 1
        assert verification_tag(bits.copy(), k, t) == tag
        assert verification_tag(bits.astype(bool), k.to_bytes((t + 7) // 8, "big"), t) == tag


def test_flipped_bit_changes_tag():
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(1, 5000))
        bits = rng.integers(0, 2, n, dtype=np.uint8)
        other = bits.copy()
        other[rng.integers(0, n)] ^= 1
        k = draw_verification_key(61, rng)
        assert verification_tag(bits, k, 61) != verification_tag(other, k, 61)


def test_trailing_zero_does_not_collide():
    # the length block separates keys that differ only by trailing zeros (same padded blocks)
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 100, dtype=np.uint8)
    k = draw_verification_key(61, rng)
    assert verification_tag(bits, k, 61) != verification_tag(np.append(bits, 0).astype(np.uint8), k, 61)


def test_collision_at_root_of_difference_polynomial():
    # two 2-block keys: tags collide exactly at the root k* = −Δc2/Δc1 (mod p) of the difference
    t, p = 31, (1 << 31) - 1
    b = block_bits_for(t)
    assert b == 24
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2, 2 * b, dtype=np.uint8)
    y = x.copy()
    y[3] ^= 1  # changes block 1
    y[b + 5] ^= 1  # changes block 2

    def blocks(a):
        return [int("".join(map(str, a[i * b : (i + 1) * b])), 2) for i in range(2)]

    (c1, c2), (d1, d2) = blocks(x), blocks(y)
    k_star = (-(c2 - d2) * pow(c1 - d1, -1, p)) % p
    assert verification_tag(x, k_star, t) == verification_tag(y, k_star, t)
    assert verification_tag(x, (k_star + 1) % p, t) != verification_tag(y, (k_star + 1) % p, t)
    # the difference k·((c1−d1)k + (c2−d2)) has exactly the L = 2 roots 0 and k*: the bound L/p is tight
    assert verification_tag(x, 0, t) == verification_tag(y, 0, t)
    assert collision_bound(2 * b, t) == 2 / p


def test_bound_hand_values():
    p61, p127, p31 = (1 << 61) - 1, (1 << 127) - 1, (1 << 31) - 1
    assert block_bits_for(61) == 56 and block_bits_for(127) == 120 and block_bits_for(521) == 520
    assert collision_bound(2_000_000, 61) == 35715 / p61  # ⌈2e6 / 56⌉ = 35715
    assert collision_bound(120, 127) == 1 / p127
    assert collision_bound(121, 127) == 2 / p127
    assert collision_bound(1000, 31) == 42 / p31  # ⌈1000/24⌉ = 42
    assert tag_length_for(1000, 1e-6) == 31  # 2.0e-8
    assert tag_length_for(1_000_000, 1e-6) == 61  # 31 bits: 41667/p31 = 1.9e-5 > 1e-6
    assert tag_length_for(2_000_000, 1e-12) == 61  # 1.5e-14
    assert tag_length_for(100_000_000, 1e-12) == 61  # 1785715/p61 = 7.7e-13
    assert tag_length_for(2_000_000, 1e-30) == 127  # 107 bits gives 1.2e-28
    with pytest.raises(ValueError, match="eps_cor"):
        tag_length_for(10**6, 1e-200)


def test_draw_key_uniform_range_and_deterministic():
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    ks = [draw_verification_key(31, rng1) for _ in range(2000)]
    assert ks == [draw_verification_key(31, rng2) for _ in range(2000)]
    assert all(0 <= k < (1 << 31) - 1 for k in ks)
    assert abs(np.mean(ks) / 2**31 - 0.5) < 0.03


def test_bad_input_is_refused():
    bits = np.zeros(10, np.uint8)
    with pytest.raises(ValueError, match="tag_bits"):
        verification_tag(bits, 1, 64)
    with pytest.raises(ValueError, match="key_material"):
        verification_tag(bits, (1 << 61) - 1, 61)
    with pytest.raises(ValueError, match="bits"):
        verification_tag(np.full(10, 3, np.uint8), 1, 61)
    with pytest.raises(ValueError, match="eps_cor"):
        tag_length_for(100, 0.0)
