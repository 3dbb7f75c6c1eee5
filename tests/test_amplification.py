"""Privacy amplification: the FFT Toeplitz hash must equal the GF(2) matrix product exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satqkd.postprocess.amplification import (
    benchmark_pa,
    draw_seed,
    seed_length,
    toeplitz_hash,
    toeplitz_hash_direct,
)


def _bits(rng, n):
    return rng.integers(0, 2, n, dtype=np.uint8)


def bitpacked_toeplitz(x: np.ndarray, s: np.ndarray, ell: int) -> np.ndarray:
    """Independent reference: y[i] = parity(popcount(window_i & reversed(x))) over 64-bit words.

    With T[i, j] = s[i − j + n − 1]: y[i] = Σ_k s[i + k]·x[n − 1 − k], a sliding window over s.
    """
    n = x.size
    nw = -(-n // 64)
    xr = np.zeros(nw * 64, dtype=np.uint8)
    xr[:n] = x[::-1]
    xw = np.packbits(xr, bitorder="little").view("<u8")
    q_max = -(-ell // 64)
    need = 64 * (q_max + nw + 1)
    y = np.zeros(q_max * 64, dtype=np.uint8)
    for r in range(64):
        sr = np.zeros(need, dtype=np.uint8)
        part = s[r:]
        sr[: part.size] = part
        sw = np.packbits(sr, bitorder="little").view("<u8")
        win = np.lib.stride_tricks.sliding_window_view(sw, nw)[:q_max]  # row q: words q .. q+nw−1
        acc = np.bitwise_xor.reduce(win & xw, axis=1)
        y[r::64] = (np.bitwise_count(acc) & 1).astype(np.uint8)
    return y[:ell]


def test_hand_example_convention():
    # n = 3, ℓ = 2: T = [[s2, s1, s0], [s3, s2, s1]]
    s = np.array([1, 0, 1, 1], dtype=np.uint8)
    t = np.array([[1, 0, 1], [1, 1, 0]])
    for x in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, 0, 1]):
        x = np.array(x, dtype=np.uint8)
        want = (t @ x) % 2
        assert np.array_equal(toeplitz_hash_direct(x, s, 2), want)
        assert np.array_equal(toeplitz_hash(x, s, 2), want)


def test_unit_vectors_give_seed_columns_on_fft_path():
    # column j of T is seed[n−1−j : n−1−j+ℓ]
    rng = np.random.default_rng(11)
    n, ell = 5000, 1700
    s = draw_seed(n, ell, rng)
    for j in (0, 1, 63, 64, 2500, n - 1):
        e = np.zeros(n, dtype=np.uint8)
        e[j] = 1
        assert np.array_equal(toeplitz_hash(e, s, ell, block_bits=256), s[n - 1 - j : n - 1 - j + ell])


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 400),
    frac=st.floats(0, 1),
    block_exp=st.one_of(st.none(), st.integers(0, 8)),
    seed=st.integers(0, 2**32 - 1),
)
def test_fft_equals_direct_random_sizes(n, frac, block_exp, seed):
    rng = np.random.default_rng(seed)
    ell = int(round(frac * n))
    x, s = _bits(rng, n), draw_seed(n, ell, rng)
    block = None if block_exp is None else 1 << block_exp
    assert np.array_equal(toeplitz_hash(x, s, ell, block_bits=block), toeplitz_hash_direct(x, s, ell))


def test_linearity_and_uniformity_of_hash_of_difference():
    # 2-universality: for d ≠ 0, T·d is uniform over {0,1}^ℓ when the seed is uniform
    rng = np.random.default_rng(5)
    n, ell, trials = 40, 3, 4000
    x1, x2 = _bits(rng, n), _bits(rng, n)
    x2[7] ^= 1  # make sure they differ
    counts = np.zeros(8, dtype=int)
    for _ in range(trials):
        s = draw_seed(n, ell, rng)
        y1, y2 = toeplitz_hash(x1, s, ell), toeplitz_hash(x2, s, ell)
        assert np.array_equal(y1 ^ y2, toeplitz_hash(x1 ^ x2, s, ell))
        d = y1 ^ y2
        counts[d[0] * 4 + d[1] * 2 + d[2]] += 1
    chi2 = float(((counts - trials / 8) ** 2 / (trials / 8)).sum())
    assert chi2 < 30.0  # 7 degrees of freedom; p ≈ 1e-4


def test_1e5_bits_against_bitpacked_reference():
    rng = np.random.default_rng(2024)
    n = 100_000
    ell = 30_000
    x, s = _bits(rng, n), draw_seed(n, ell, rng)
    ref = bitpacked_toeplitz(x, s, ell)
    assert np.array_equal(toeplitz_hash(x, s, ell), ref)
    # a second block size and a tiny memory budget (several block groups, recomputed spectra)
    assert np.array_equal(toeplitz_hash(x, s, ell, block_bits=1024, max_memory_bytes=1 << 20), ref)


def test_bitpacked_reference_matches_direct():
    rng = np.random.default_rng(3)
    for n, ell in ((1, 1), (70, 65), (200, 129), (1000, 300)):
        x, s = _bits(rng, n), draw_seed(n, ell, rng)
        assert np.array_equal(bitpacked_toeplitz(x, s, ell), toeplitz_hash_direct(x, s, ell))


def test_rounding_fallback_stays_exact():
    # a zero margin rejects every FFT result: the key is split recursively down to direct products
    rng = np.random.default_rng(9)
    n, ell = 3000, 900
    x, s = _bits(rng, n), draw_seed(n, ell, rng)
    assert np.array_equal(toeplitz_hash(x, s, ell, rounding_margin=0.0), toeplitz_hash_direct(x, s, ell))


def test_full_length_and_empty_output():
    rng = np.random.default_rng(1)
    x = _bits(rng, 500)
    s = draw_seed(500, 500, rng)
    assert np.array_equal(toeplitz_hash(x, s, 500), toeplitz_hash_direct(x, s, 500))
    assert toeplitz_hash(x, draw_seed(500, 0, rng), 0).size == 0


def test_draw_seed():
    rng1, rng2 = np.random.default_rng(4), np.random.default_rng(4)
    s = draw_seed(1000, 300, rng1)
    assert s.dtype == np.uint8 and s.shape == (seed_length(1000, 300),) == (1299,)
    assert set(np.unique(s)) <= {0, 1}
    assert np.array_equal(s, draw_seed(1000, 300, rng2))
    assert abs(draw_seed(100_000, 0, rng1).mean() - 0.5) < 0.01


def test_bad_input_is_refused():
    rng = np.random.default_rng(0)
    x = _bits(rng, 10)
    with pytest.raises(ValueError, match="seed_bits"):
        toeplitz_hash(x, np.zeros(10, np.uint8), 3)
    with pytest.raises(ValueError, match="out_len"):
        toeplitz_hash(x, np.zeros(21, np.uint8), 12)
    with pytest.raises(ValueError, match="key_bits"):
        toeplitz_hash(np.full(10, 2, np.uint8), np.zeros(12, np.uint8), 3)
    with pytest.raises(ValueError, match="block_bits"):
        toeplitz_hash(x, np.zeros(12, np.uint8), 3, block_bits=3)
    with pytest.raises(ValueError, match="n_bits"):
        draw_seed(0, 0, rng)


def test_benchmark_reports_sizes():
    r = benchmark_pa(20_000, 0.3, seed=1)
    assert r["bits_in"] == 20_000 and r["bits_out"] == 6_000
    assert r["seconds"] > 0 and r["mbit_per_s"] == pytest.approx(20_000 / r["seconds"] / 1e6)
