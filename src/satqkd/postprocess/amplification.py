"""Privacy amplification by Toeplitz hashing, computed exactly with real FFTs.

After error verification Alice and Bob hold the same ``n``-bit key ``x`` of which Eve may know
part; hashing it with a random member of a 2-universal family to ``ℓ`` bits removes her
information (leftover hash lemma; Bennett, Brassard, Crépeau, Maurer, IEEE Trans. Inf. Theory 41,
1915 (1995)). The family used here is the Toeplitz matrices over GF(2), which is 2-universal
(Krawczyk, CRYPTO '94, LNCS 839, 129; Mansour, Nisan, Tiwari, STOC '90). The matrix is defined by
an ``n + ℓ − 1``-bit seed drawn by Alice (:func:`draw_seed`) and sent to Bob over the
authenticated channel; the seed is public and its bits are not secret.

Convention (used by every function here and by the tests)::

    T[i, j] = seed[i − j + n − 1]      0 ≤ i < ℓ,  0 ≤ j < n
    y[i]    = Σ_j T[i, j] · x[j]  mod 2

so ``seed[n−1]`` is the main diagonal, the first column is ``seed[n−1 : n+ℓ−1]`` and the first row
is ``seed[n−1], seed[n−2], …, seed[0]``. Written as a convolution, ``y[i] = (seed ∗ x)[i + n − 1]``:
only the "valid" part of the linear convolution is needed, so no output ever wraps around in a
circular convolution of any length ≥ ``n + ℓ − 1`` (overlap-save).

How it is computed: the integer convolution is evaluated with float64 real FFTs
(``scipy.fft.rfft/irfft``, ``workers=1``) and reduced mod 2. Large FFTs fall out of the CPU caches
and cost ~5× more per element than FFTs of ≤ 2¹⁸ points, so ``x`` and ``y`` are cut into blocks of
``m`` bits (``m`` a power of two picked by a small cost model); block ``(I, J)`` of ``T`` is itself
Toeplitz and only depends on ``I − J``, so each seed window is transformed once, the products are
accumulated in the frequency domain (a small compiled kernel), and one inverse FFT per output block
gives the exact integer counts. Before rounding we check the float64 margin: every value must lie
within ``rounding_margin`` (0.25) of an integer; otherwise the key is split in two halves (smaller
counts, smaller rounding error) recursively and the results are XORed — down to a plain integer
matrix product for tiny pieces. The result is therefore exact, not probably-exact.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x = rng.integers(0, 2, 1000, dtype=np.uint8)
    >>> s = draw_seed(1000, 300, rng)
    >>> bool(np.array_equal(toeplitz_hash(x, s, 300), toeplitz_hash_direct(x, s, 300)))
    True
"""

from __future__ import annotations

import time

import numba
import numpy as np
import scipy.fft as sfft
from scipy.linalg import toeplitz as _toeplitz_matrix

__all__ = [
    "toeplitz_hash",
    "toeplitz_hash_direct",
    "draw_seed",
    "seed_length",
    "benchmark_pa",
]

#: pieces with at most this many matrix entries (ℓ·n) fall back to the exact integer matrix product
_DIRECT_MAX_ENTRIES = 1 << 16
#: default memory budget for the block spectra held at once
_DEFAULT_MEMORY_BYTES = 1 << 30


def seed_length(n_bits: int, out_len: int) -> int:
    """Number of seed bits for an ``out_len × n_bits`` Toeplitz matrix: ``n + ℓ − 1``."""
    return int(n_bits) + int(out_len) - 1


def draw_seed(n_bits: int, out_len: int, rng: np.random.Generator) -> np.ndarray:
    """Alice's uniformly random Toeplitz seed, ``uint8[n + ℓ − 1]`` of 0/1 (public, sent authenticated)."""
    n, ell = _check_sizes(n_bits, out_len)
    size = n + ell - 1
    if size <= 0:
        return np.zeros(0, dtype=np.uint8)
    raw = np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=size)


def _check_sizes(n_bits: int, out_len: int) -> tuple[int, int]:
    n, ell = int(n_bits), int(out_len)
    if n < 1:
        raise ValueError(f"n_bits (key length) must be ≥ 1, got {n_bits}")
    if not 0 <= ell <= n:
        raise ValueError(f"out_len must lie in [0, n_bits = {n}] (privacy amplification shortens), got {out_len}")
    return n, ell


def _check_inputs(key_bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(key_bits)
    s = np.asarray(seed_bits)
    if x.ndim != 1:
        raise ValueError(f"key_bits must be a 1-D array of 0/1, got shape {x.shape}")
    n, ell = _check_sizes(x.size, out_len)
    if s.shape != (n + ell - 1,):
        raise ValueError(f"seed_bits must have length n + out_len − 1 = {n + ell - 1}, got shape {s.shape}")
    for name, a in (("key_bits", x), ("seed_bits", s)):
        if a.dtype != np.uint8:
            if a.dtype.kind not in "biu":
                raise ValueError(f"{name} must be an integer array of 0/1, got dtype {a.dtype}")
            a = a.astype(np.uint8)
        if a.size and int(a.max()) > 1:
            raise ValueError(f"{name} must contain only 0 and 1")
        if name == "key_bits":
            x = a
        else:
            s = a
    return x, s, ell


def toeplitz_hash_direct(key_bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """Reference: build the ``ℓ × n`` Toeplitz matrix and multiply over GF(2) (small ``n`` only).

    Uses ``T[i, j] = seed[i − j + n − 1]`` (module docstring); memory is ``ℓ·n`` bytes.
    """
    x, s, ell = _check_inputs(key_bits, seed_bits, out_len)
    return _direct(s, x, ell)


def _direct(s: np.ndarray, x: np.ndarray, ell: int) -> np.ndarray:
    n = x.size
    if ell == 0:
        return np.zeros(0, dtype=np.uint8)
    t = _toeplitz_matrix(s[n - 1 :], s[n - 1 :: -1]).astype(np.uint8)  # first column, first row
    return ((t.astype(np.int64) @ x.astype(np.int64)) & 1).astype(np.uint8)


def toeplitz_hash(
    key_bits: np.ndarray,
    seed_bits: np.ndarray,
    out_len: int,
    *,
    block_bits: int | None = None,
    rounding_margin: float = 0.25,
    max_memory_bytes: int = _DEFAULT_MEMORY_BYTES,
) -> np.ndarray:
    """Hash ``key_bits`` (``uint8[n]``) to ``out_len`` bits with the Toeplitz matrix of ``seed_bits``.

    ``y = T·x`` over GF(2) with ``T[i, j] = seed[i − j + n − 1]`` (module docstring), computed with
    blocked float64 FFTs and checked to be exact (every convolution value within
    ``rounding_margin`` of an integer, else recomputed on smaller pieces).

    ``block_bits`` (a power of two) overrides the block size chosen by the cost model;
    ``max_memory_bytes`` bounds the block spectra held at once (keys up to ~1e8 bits).
    """
    x, s, ell = _check_inputs(key_bits, seed_bits, out_len)
    if block_bits is not None and (block_bits < 1 or block_bits & (block_bits - 1)):
        raise ValueError(f"block_bits must be a power of two ≥ 1, got {block_bits}")
    if not 0.0 <= rounding_margin <= 0.5:
        raise ValueError(f"rounding_margin must lie in [0, 0.5], got {rounding_margin}")
    if max_memory_bytes < 1 << 20:
        raise ValueError(f"max_memory_bytes must be ≥ 1 MiB, got {max_memory_bytes}")
    if ell == 0:
        return np.zeros(0, dtype=np.uint8)
    return _hash_exact(s, x, ell, block_bits, rounding_margin, max_memory_bytes)


def _hash_exact(s, x, ell, block_bits, margin, mem) -> np.ndarray:
    """Exact GF(2) Toeplitz product; splits ``x`` in halves while the FFT rounding margin fails."""
    n = x.size
    if n < 2:
        return _direct(s, x, ell)
    y, err = _fft_blocked(s, x, ell, block_bits, mem)
    if err < margin:
        return y
    if n * ell <= _DIRECT_MAX_ENTRIES:
        return _direct(s, x, ell)
    # columns [0, h) use seed[n−h : n+ℓ−1]; columns [h, n) use seed[0 : n−h+ℓ−1] (same convention)
    h = n // 2
    sub = None if block_bits is None else max(1, block_bits // 2)
    return _hash_exact(s[n - h : n + ell - 1], x[:h], ell, sub, margin, mem) ^ _hash_exact(
        s[: n - h + ell - 1], x[h:], ell, sub, margin, mem
    )


# ---- blocked FFT evaluation ---------------------------------------------------------------------

#: measured single-core rfft cost per point (ns) by log2 of the FFT length; larger sizes leave cache
_FFT_NS_PER_POINT = {10: 3.0, 11: 3.0, 12: 3.0, 13: 3.0, 14: 3.0, 15: 3.0, 16: 3.3, 17: 3.7, 18: 4.2, 19: 5.5, 20: 14.0}
_MAC_NS = 1.2  # one complex multiply-add in the accumulation kernel


def _groups(nb: int, ob: int, m: int, mem: int) -> tuple[int, int]:
    """Input / output blocks handled at once so that the block spectra fit in ``mem`` bytes."""
    group = max(1, int(mem // (6 * 16 * (m + 1))))  # acc + x + windows (2 groups) + float temporaries
    return min(nb, group), min(ob, group)


def _choose_block(n: int, ell: int, mem: int = _DEFAULT_MEMORY_BYTES) -> int:
    """Block size m (power of two, FFT length 2m) minimising the estimated single-core time."""
    best, best_cost = 1, float("inf")
    top = max(1, (max(n, ell) - 1).bit_length())
    for p in range(min(10, top), min(top, 22) + 1):
        m = 1 << p
        nb, ob = -(-n // m), -(-ell // m)
        gi, go = _groups(nb, ob, m, mem)
        n_out, n_in = -(-ob // go), -(-nb // gi)
        x_ffts = nb if n_in == 1 else nb * n_out
        w_ffts = n_out * n_in * (gi + go - 1) if (n_in > 1 or n_out > 1) else nb + ob - 1
        ffts = x_ffts + w_ffts + ob
        cost = ffts * 2 * m * _FFT_NS_PER_POINT.get(p + 1, 24.0) + nb * ob * (m + 1) * _MAC_NS
        if cost < best_cost:
            best, best_cost = m, cost
    return best


@numba.njit(cache=True)
def _accumulate(y, w, x, off):  # pragma: no cover - compiled
    """``y[i] += Σ_j w[i − j + off] · x[j]`` (complex rows; block Toeplitz structure)."""
    nf = y.shape[1]
    for i in range(y.shape[0]):
        yi = y[i]
        for j in range(x.shape[0]):
            wi = w[i - j + off]
            xj = x[j]
            for f in range(nf):
                yi[f] += wi[f] * xj[f]


def _fft_blocked(s: np.ndarray, x: np.ndarray, ell: int, block_bits: int | None, mem: int) -> tuple[np.ndarray, float]:
    """Blocked overlap-save evaluation; returns (parity bits, max distance of a value to an integer)."""
    n = x.size
    m = block_bits or _choose_block(n, ell, mem)
    nb, ob = -(-n // m), -(-ell // m)
    two_m = 2 * m
    # the seed is read as if padded in front by P = nb·m − n zeros: the window of block diagonal
    # d = I − J then starts at padded position (d + nb − 1)·m and has 2m points (the last one never
    # reaches a valid output). Float copies are made per group only, to bound memory.
    pad = nb * m - n
    gi, go = _groups(nb, ob, m, mem)
    out = np.empty(ob * m, dtype=np.uint8)
    err = 0.0
    x_cache = None
    for i0 in range(0, ob, go):
        i1 = min(ob, i0 + go)
        acc = np.zeros((i1 - i0, m + 1), dtype=np.complex128)
        for j0 in range(0, nb, gi):
            j1 = min(nb, j0 + gi)
            if x_cache is not None and x_cache[0] == j0:
                xs = x_cache[1]
            else:
                xs = sfft.rfft(_padded(x, 0, j0 * m, j1 * m).reshape(j1 - j0, m), n=two_m, axis=-1, workers=1)
                if gi == nb:
                    x_cache = (j0, xs)
            e0 = i0 - (j1 - 1) + nb - 1  # first window index needed
            e1 = (i1 - 1) - j0 + nb - 1  # last
            seg = _padded(s, pad, e0 * m, (e1 + 2) * m)
            win = np.lib.stride_tricks.as_strided(seg, shape=(e1 - e0 + 1, two_m), strides=(m * 8, 8), writeable=False)
            ws = sfft.rfft(win, axis=-1, workers=1)
            _accumulate(acc, ws, xs, j1 - 1 - j0)
            del ws
        vals = sfft.irfft(acc, n=two_m, axis=-1, workers=1)[:, m - 1 : two_m - 1]
        del acc
        r = np.rint(vals)
        err = max(err, float(np.max(np.abs(vals - r))))
        out[i0 * m : i1 * m] = (r.astype(np.int64) & 1).ravel()
    return out[:ell], err


def _padded(a: np.ndarray, pad: int, lo: int, hi: int) -> np.ndarray:
    """float64 copy of positions [lo, hi) of ``a`` shifted right by ``pad`` zeros (zeros outside)."""
    out = np.zeros(hi - lo, dtype=np.float64)
    a_lo, a_hi = max(lo - pad, 0), min(hi - pad, a.size)
    if a_hi > a_lo:
        out[a_lo + pad - lo : a_hi + pad - lo] = a[a_lo:a_hi]
    return out


# ---- benchmark ----------------------------------------------------------------------------------


def benchmark_pa(n_bits: int, out_fraction: float = 0.3, seed: int = 0, repeats: int = 1) -> dict:
    """Time :func:`toeplitz_hash` on a random ``n_bits`` key hashed to ``⌊out_fraction·n⌋`` bits.

    Returns ``dict(bits_in, bits_out, seconds, mbit_per_s)`` with ``seconds`` the best of
    ``repeats`` runs (compilation is done beforehand on a small input) and
    ``mbit_per_s = bits_in / seconds / 1e6``.
    """
    if not 0.0 < out_fraction <= 1.0:
        raise ValueError(f"out_fraction must lie in (0, 1], got {out_fraction}")
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    n = int(n_bits)
    ell = max(1, int(out_fraction * n))
    _check_sizes(n, ell)
    rng = np.random.default_rng(seed)
    warm = rng.integers(0, 2, 1 << 12, dtype=np.uint8)
    toeplitz_hash(warm, draw_seed(warm.size, 1 << 10, rng), 1 << 10, block_bits=256)  # compile kernel
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = draw_seed(n, ell, rng)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        toeplitz_hash(x, s, ell)
        best = min(best, time.perf_counter() - t0)
    return {"bits_in": n, "bits_out": ell, "seconds": best, "mbit_per_s": n / best / 1e6}
