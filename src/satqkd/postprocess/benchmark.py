"""Throughput of error correction and privacy amplification on a synthetic key pair.

A random key for Alice, Bob's copy with independent bit flips at the given QBER (a binary
symmetric channel), then the chosen reconciliation and a Toeplitz hash of the corrected key.
Both parties run in one process on one core (LDPC decodes its frames on up to 2 threads); JIT compilation is excluded (warm-up call first).
"""

from __future__ import annotations

import time

import numpy as np

from ..config import DEFAULT_EC_METHOD
from .amplification import draw_seed, toeplitz_hash
from .reconciliation.result import binary_entropy

__all__ = ["bench_postprocess"]


def _reconcile(method: str):
    from . import reconciliation as rec

    if method == "cascade":
        return rec.reconcile_cascade
    if method == "ldpc":
        from .reconciliation.ldpc import reconcile

        return reconcile
    if method == "hamming":
        from .reconciliation.hamming import reconcile

        return reconcile
    raise ValueError(f"ec must be cascade, ldpc or hamming; got {method!r}")


def bench_postprocess(n_bits: int, qber: float, seed: int, *, ec: str = DEFAULT_EC_METHOD, pa_fraction: float = 0.3) -> dict:
    """``{"ec": {method, bits, seconds, efficiency, frame_errors, leak_bits, leak_by_party, qber}, "pa": {bits_in, bits_out, seconds}}``.

    ``efficiency`` is ``f = leak / (n h(QBER))`` with ``leak`` what *both* parties disclosed."""
    if n_bits < 1:
        raise ValueError(f"n_bits must be ≥ 1, got {n_bits}")
    if not 0 < qber < 0.5:
        raise ValueError(f"qber must be in (0, 0.5), got {qber}")
    reconcile = _reconcile(ec)
    rng = np.random.default_rng(seed)
    # warm-up on a small frame: JIT compilation and code construction are not throughput
    wa = rng.integers(0, 2, 20_000, dtype=np.uint8)
    reconcile(wa, wa ^ (rng.random(wa.size) < qber).astype(np.uint8), qber, 1)
    if ec == "ldpc":  # the codes of this key length are built once and cached on disk: not throughput
        from .reconciliation.ldpc import plan_frames

        plan_frames(n_bits, qber)
    a = rng.integers(0, 2, n_bits, dtype=np.uint8)
    b = a ^ (rng.random(n_bits) < qber).astype(np.uint8)
    q_act = float(np.count_nonzero(a != b) / n_bits)
    pub_seed = int(rng.integers(0, 2**62))
    t0 = time.perf_counter()
    res = reconcile(a, b, qber, pub_seed)
    ec_s = time.perf_counter() - t0
    keep = res.keep_mask if res.keep_mask is not None else np.ones(n_bits, dtype=bool)
    frame_errors = int(getattr(res, "frame_errors", 0) or 0)
    if not np.array_equal(res.bob_bits[keep], a[keep]):
        frame_errors = max(frame_errors, 1)
    n_kept = int(np.count_nonzero(keep))
    eff = float(res.leak_bits / (n_bits * binary_entropy(q_act))) if q_act > 0 else float("nan")
    out_len = max(1, int(pa_fraction * n_kept))
    s = draw_seed(n_kept, out_len, rng)
    toeplitz_hash(a[keep][:1000], s[: 1000 + min(out_len, 300) - 1], min(out_len, 300))  # warm-up
    t0 = time.perf_counter()
    toeplitz_hash(res.bob_bits[keep], s, out_len)
    pa_s = time.perf_counter() - t0
    return {
        "ec": {
            "method": ec,
            "bits": n_bits,
            "seconds": ec_s,
            "efficiency": eff,
            "frame_errors": frame_errors,
            "leak_bits": int(res.leak_bits),
            "leak_by_party": dict(res.leak_by_party),
            "qber": q_act,
            "round_trips": int(getattr(res, "round_trips", 0) or 0),
        },
        "pa": {"bits_in": n_kept, "bits_out": out_len, "seconds": pa_s},
    }
