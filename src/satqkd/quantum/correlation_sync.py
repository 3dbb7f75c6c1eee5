"""Synchronisation without a beacon: recover Bob's clock from the detections and Alice's pattern.

Lab and field QKD systems without a separate sync channel recover the timing from the quantum
signal itself (e.g. Calderaro et al., "Fast and simple qubit-based synchronization for quantum key
distribution", PRApplied 13, 054041 (2020): a known pattern cross-correlated with the detections
gives the offset, the detection times give the frequency). We do it in three steps, all on Bob's
clock ``T`` (ps) and the nominal pulse rate ``R``:

1. **Pulse comb (frequency and phase), per segment.** Detections cluster at the pulse arrival
   times (jitter ≈ 0.4 ns in a 10 ns period), so ``z_i = exp(−2πi R T_i)`` has a coherent sum once
   demodulated by the right frequency offset ``f`` (Bob's pulse rate is ``R + f``: clock drift plus
   the Doppler rate of the flight time, up to ``R · max_drift``). In each segment (``segment_s``,
   default 50 ms) the ``z_i`` are binned in time and FFT'd: the peak of ``|Σ z_i e^{−2πi f t_i}|``
   gives ``f`` (refined by direct evaluation), its phase the arrival phase. A segment counts when
   the peak power exceeds ``comb_threshold`` times the mean (noise power is exponential with mean
   ``n``; the signal gives ≈ ``n``·(signal fraction)²). Neighbouring segments are joined by the
   integer number of periods between their local models at the midpoint, giving each tag a
   *relative* pulse number and its distance from the nearest arrival (the ``window_ns`` gate).
2. **Pulse offset (which pulse is which): FFT cross-correlation** over a coarse window (the
   ``coarse_tags`` gated tags around the densest segment) of Bob's outcomes (H → +1, V → −1,
   D → +i, A → −i) with Alice's states for every candidate integer offset within
   ``offset_guess_s ± offset_span_s / 2`` (pulses with unknown settings count 0). Right offset:
   ≈ ½ (1 − 2 e) per signal tag (same basis half the time); wrong: mean 0, σ ≈ √(n/2). The peak
   (normalised by its null standard deviation ``√(n_known / 2)``) must reach ``min_z`` (default
   ``√(2 ln M) + 4`` for ``M`` offsets: the largest of ``M`` null values is ≈ ``√(2 ln M)``), else :class:`SyncError`: "no correlation peak stands out".
3. **Refinement.** The gated tags with their absolute pulse numbers are exactly beacon-like
   samples of the offset function ``D(T) = T − k / R``: :func:`satqkd.quantum.timing.fit_clock`
   fits its cubic spline (with 5σ clipping, which also removes tags of a mis-joined segment); the
   tags are re-assigned with the fitted ``D`` and the fit repeated (``refine_passes``).

The result (:class:`CorrelationSync`) reports the offset ``D`` at the first tag, the mean drift
``dD/dT`` over the data, the fit residual, the correlation peak's z, and the fraction of tags inside
the window. :func:`virtual_beacons` writes the recovered clock as beacon-like tags (one per ms) so
the beacon synchronisation of :mod:`satqkd.quantum.timing` reproduces it from a raw file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np

from .timing import ClockFit, fit_clock

__all__ = ["SyncError", "CorrelationSync", "correlation_sync", "virtual_beacons", "comb_segments"]


class SyncError(ValueError):
    """The detections do not determine the clock (no comb, or no correlation peak stands out)."""


@dataclass(frozen=True)
class CorrelationSync:
    """Recovered clock and its figures of merit (``as_dict`` is JSON-serialisable)."""

    fit: ClockFit
    offset_ns: float  # D at the first tag
    drift_ppm: float  # mean dD/dT over the data (1e-6)
    t_first_ps: int
    t_last_ps: int
    tags_total: int
    tags_assigned: int
    peak_z: float
    min_z: float
    pulse_offset: int  # absolute = relative + pulse_offset
    segments_used: int
    segments_total: int
    residual_rms_ns: float

    @property
    def fraction_assigned(self) -> float:
        return self.tags_assigned / self.tags_total if self.tags_total else 0.0

    def offset_at_ns(self, bob_ps) -> np.ndarray:
        return self.fit.offset_ps(np.atleast_1d(np.asarray(bob_ps, dtype=np.int64))) * 1e-3

    def as_dict(self) -> dict:
        return {
            "offset_ns": self.offset_ns, "drift_ppm": self.drift_ppm, "t_first_ps": self.t_first_ps,
            "t_last_ps": self.t_last_ps, "tags_total": self.tags_total, "tags_assigned": self.tags_assigned,
            "fraction_assigned": self.fraction_assigned, "peak_z": self.peak_z, "min_z": self.min_z,
            "pulse_offset": self.pulse_offset, "segments_used": self.segments_used,
            "segments_total": self.segments_total, "residual_rms_ns": self.residual_rms_ns,
        }

    def __repr__(self) -> str:
        return (f"CorrelationSync(offset {self.offset_ns:.3f} ns, drift {self.drift_ppm:.4f} ppm, "
                f"{100 * self.fraction_assigned:.1f} % of tags assigned, peak z {self.peak_z:.1f}, rms {self.residual_rms_ns:.3f} ns)")


# ------------------------------------------------------------------------------------- 1. comb
def _frac_cycles(T: np.ndarray, rate_hz: float) -> np.ndarray:
    """``R · T`` modulo 1 (T in ps), computed without losing the fraction for large T."""
    period = 1e12 / rate_hz
    p_int = round(period)
    if abs(period - p_int) < 1e-9 and p_int > 0:
        return (T % p_int) / p_int
    x = T.astype(np.float64) * (rate_hz * 1e-12)
    return x - np.floor(x)


def _segment_fit(t_s: np.ndarray, z: np.ndarray, f_max: float, threshold: float):
    """(f, theta, power_ratio) of one segment's comb: FFT of the binned demodulated tags, then
    direct evaluation around the peak. ``t_s`` is relative to the segment centre."""
    n = z.size
    span = float(t_s.max() - t_s.min()) if n else 0.0
    dt = 1.0 / (4.0 * f_max)
    nb = max(8, int(np.ceil(span / dt)) + 1)
    b = np.floor((t_s - t_s.min()) / dt).astype(np.int64)
    Z = np.bincount(b, weights=z.real, minlength=nb) + 1j * np.bincount(b, weights=z.imag, minlength=nb)
    nfft = 1 << int(np.ceil(np.log2(4 * nb)))
    S = np.fft.fft(Z, nfft)
    P = np.abs(S) ** 2
    j = int(np.argmax(P))
    ratio = float(P[j] / max(P.mean(), 1e-300))
    if ratio < threshold:
        return None
    freqs = np.fft.fftfreq(nfft, dt)
    step = 1.0 / (nfft * dt)
    A = np.sqrt(P)
    a, b, c = A[j - 1], A[j], A[(j + 1) % nfft]
    den = a - 2.0 * b + c
    f0 = float(freqs[j]) + (0.5 * (a - c) / den * step if den < 0 else 0.0)  # parabola through the peak bins
    zr, zi = np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag)
    grid = f0 + 0.25 * step * np.linspace(-1.0, 1.0, 9)  # one direct evaluation round around it
    F = _dft(t_s, zr, zi, grid)
    i = int(np.argmax(np.abs(F)))
    if 0 < i < grid.size - 1:
        a, b, c = np.abs(F[i - 1: i + 2])
        den = a - 2.0 * b + c
        f0 = float(grid[i]) + (0.5 * (a - c) / den * (grid[1] - grid[0]) if den < 0 else 0.0)
    else:
        f0 = float(grid[i])
    F0 = _dft(t_s, zr, zi, np.array([f0]))[0]
    return f0, float(np.angle(F0)), ratio


@numba.njit(cache=True, nogil=True)
def _dft(t, zr, zi, freqs):  # pragma: no cover - compiled
    """``F(f) = Σ z_j exp(−2πi f t_j)`` for each ``f`` in ``freqs``."""
    out = np.empty(freqs.size, np.complex128)
    for a in range(freqs.size):
        w = -2.0 * np.pi * freqs[a]
        re = 0.0
        im = 0.0
        for j in range(t.size):
            c = np.cos(w * t[j])
            s = np.sin(w * t[j])
            re += zr[j] * c - zi[j] * s
            im += zr[j] * s + zi[j] * c
        out[a] = re + 1j * im
    return out


def comb_segments(T: np.ndarray, rate_hz: float, *, segment_s: float = 0.05, max_drift: float = 1e-4,
                  comb_threshold: float = 30.0, min_tags: int = 30):
    """Per-segment comb fits and the joined relative pulse number of every tag.

    Returns ``(v, seg_of, valid, n_valid, n_seg)``: ``v`` (float cycles: relative pulse number,
    integer at an arrival) for every tag (NaN in segments without a comb), the segment of each tag,
    the per-segment validity mask.
    """
    T = np.asarray(T, dtype=np.int64)
    t_s = (T - T[0]) * 1e-12
    n_seg = max(1, int(np.ceil((t_s[-1] + 1e-12) / segment_s)))
    seg = np.minimum((t_s / segment_s).astype(np.int64), n_seg - 1)
    bounds = np.searchsorted(seg, np.arange(n_seg + 1))
    frac = _frac_cycles(T, rate_hz)
    z_all = np.exp(-2j * np.pi * frac)
    f_max = rate_hz * max_drift
    models = {}
    for s in range(n_seg):
        lo, hi = bounds[s], bounds[s + 1]
        if hi - lo < min_tags:
            continue
        centre = (s + 0.5) * segment_s
        res = _segment_fit(t_s[lo:hi] - centre, z_all[lo:hi], f_max, comb_threshold)
        if res is not None:
            models[s] = (centre, res[0], res[1])
    v = np.full(T.size, np.nan)
    valid = np.zeros(n_seg, bool)
    if not models:
        return v, seg, valid, 0, n_seg
    # relative pulse number (cycles since the first tag) in segment s:
    # c_s(t) = R t + frac(R T_0) + f (t − centre) + θ / 2π + n_s, integer at an arrival
    frac0 = _frac_cycles(T[:1], rate_hz)[0]
    prev = None
    for s in sorted(models):
        centre, f, th = models[s]

        def c_model(ts, centre=centre, f=f, th=th):
            return ts * rate_hz + frac0 + f * (ts - centre) + th / (2 * np.pi)

        if prev is None:
            n_s = 0.0
        else:
            pc, pf, pth, pn = prev
            tm = 0.5 * (pc + centre)
            c_prev = tm * rate_hz + frac0 + pf * (tm - pc) + pth / (2 * np.pi) + pn
            n_s = float(np.rint(c_prev - c_model(tm)))
        lo, hi = bounds[s], bounds[s + 1]
        v[lo:hi] = c_model(t_s[lo:hi]) + n_s  # float cycles: ≤ 3e10 for a pass, resolution ~4e-6 cycle
        valid[s] = True
        prev = (centre, f, th, n_s)
    return v, seg, valid, len(models), n_seg


# --------------------------------------------------------------------------------- 2. offset
_MAX_OFFSETS = 50_000_000  # the FFT holds ~ (window + offsets) complex64 values
_SYMBOL = np.array([1.0 + 0j, -1.0 + 0j, 1j, -1j])  # H, V, D, A


def _pulse_offset(k_rel: np.ndarray, det: np.ndarray, lookup, k0_lo: int, m: int):
    """Correlation over ``K0 ∈ [k0_lo, k0_lo + m)``: ``(best K0, z)``.

    ``r(K0) = Re Σ_i s_{d_i} conj(a[k_i + K0])`` (Bob's symbol times Alice's state), normalised by
    its standard deviation under "no relation", ``√(n_known(K0) / 2)`` (a tag on a pulse of known
    setting scores ±1 with probability ½ each when the bases agree, 0 otherwise), so offsets whose
    tags fall on pulses with unknown settings (a sparse record) are not favoured or penalised.
    """
    from scipy import fft as sfft

    kmin = int(k_rel.min())
    S = int(k_rel.max()) - kmin + 1
    b = np.zeros(S, np.complex64)
    np.add.at(b, k_rel - kmin, _SYMBOL[det].astype(np.complex64))
    occ = np.bincount(k_rel - kmin, minlength=S).astype(np.float32)
    L = sfft.next_fast_len(S + m)
    inten, basis, bit, known = lookup(np.arange(kmin + k0_lo, kmin + k0_lo + S + m, dtype=np.int64))
    code = 2 * basis.astype(np.int8) + bit.astype(np.int8)
    a = np.where(known, _SYMBOL.astype(np.complex64)[code], np.complex64(0))
    r = sfft.ifft(sfft.fft(a, L) * np.conj(sfft.fft(b, L)))[:m].real
    nk = sfft.irfft(sfft.rfft(known.astype(np.float32), L) * np.conj(sfft.rfft(occ, L)), L)[:m]
    z = np.where(nk > 10, r / np.sqrt(np.maximum(nk, 1.0) / 2.0), 0.0)
    j = int(np.argmax(z))
    return k0_lo + j, float(z[j])


def correlation_sync(
    bob_time_ps: np.ndarray,
    bob_detector: np.ndarray,
    lookup: Callable,
    rep_rate_hz: float,
    window_ns: float = 2.0,
    *,
    segment_s: float = 0.05,
    max_drift: float = 1e-4,
    offset_guess_s: float = 0.0,
    offset_span_s: float = 0.02,
    coarse_tags: int = 1000,
    comb_threshold: float = 30.0,
    min_z: float | None = None,
    knot_spacing_s: float = 2.0,
    refine_passes: int = 2,
) -> CorrelationSync:
    """Recover ``D(T)`` from Bob's tags and Alice's settings (module docstring).

    ``lookup(k) -> (intensity, basis, bit, known)`` gives Alice's settings of pulses ``k``
    (:meth:`satqkd.ingest.TransmitterSettings.lookup`). Raises :class:`SyncError` when no comb or no
    correlation peak stands out, ``ValueError`` on malformed arguments.
    """
    T = np.ascontiguousarray(bob_time_ps, dtype=np.int64)
    d = np.ascontiguousarray(bob_detector, dtype=np.int64)
    if T.shape != d.shape or T.ndim != 1:
        raise ValueError("bob_time_ps and bob_detector must be 1-D of one length")
    if T.size < 100:
        raise SyncError(f"{T.size} detector tags: too few to synchronise without a beacon (need ≥ 100)")
    if T.size > 1 and np.any(np.diff(T) < 0):
        o = np.argsort(T, kind="stable")
        T, d = T[o], d[o]
    if d.min() < 0 or d.max() > 3:
        raise ValueError("bob_detector must lie in 0..3")
    R = float(rep_rate_hz)
    P = 1e12 / R
    half_w = window_ns * 500.0
    if not 0 < 2 * half_w <= P:
        raise ValueError(f"window_ns must lie in (0, {P / 1e3:g}]")
    if not 0 < max_drift < 0.01:
        raise ValueError(f"max_drift must lie in (0, 0.01); got {max_drift}")

    v, seg, valid, n_valid, n_seg = comb_segments(T, R, segment_s=segment_s, max_drift=max_drift,
                                                  comb_threshold=comb_threshold)
    if n_valid == 0 or n_valid < 0.2 * np.count_nonzero(np.bincount(seg) >= 30):
        raise SyncError(
            f"no pulse comb in the detection times: {n_valid} of {n_seg} segments of {segment_s:g} s show the "
            f"{R:g} Hz pulse rate within ±{max_drift:g} (shuffled or wrong times, or a wrong rep_rate_hz?)"
        )
    ok = np.isfinite(v)
    k_rel = np.zeros(T.size, np.int64)
    k_rel[ok] = np.rint(v[ok]).astype(np.int64)
    dev = np.where(ok, (v - k_rel) * P, np.inf)
    gated = np.abs(dev) <= half_w

    # coarse window: the densest valid segment, widened until it holds coarse_tags gated tags
    g_seg = np.bincount(seg[gated], minlength=n_seg)
    s0 = int(np.argmax(g_seg))
    lo = hi = s0
    while g_seg[lo:hi + 1].sum() < coarse_tags and (lo > 0 or hi < n_seg - 1):
        if hi < n_seg - 1 and (lo == 0 or g_seg[hi + 1] >= g_seg[lo - 1]):
            hi += 1
        else:
            lo -= 1
    win = gated & (seg >= lo) & (seg <= hi)
    m = max(1, int(round(offset_span_s * R)))
    if m > _MAX_OFFSETS:
        raise SyncError(f"offset search of {m:,} pulses ({offset_span_s:g} s at {R:g} Hz) is too wide (at most "
                        f"{_MAX_OFFSETS:,}): narrow offset_span_s around offset_guess_s")
    # absolute k ≈ R (T − D): centre the search on D = offset_guess_s
    k_guess = np.rint((T[win] * 1e-12 - offset_guess_s) * R).astype(np.int64) - k_rel[win]
    k0_c = int(np.median(k_guess))
    z_need = float(np.sqrt(2 * np.log(m)) + 4.0) if min_z is None else float(min_z)
    k0, z = _pulse_offset(k_rel[win], d[win], lookup, k0_c - m // 2, m)
    if not z >= z_need:
        raise SyncError(
            f"no correlation peak stands out between the detections and the transmitter's pattern: best z = {z:.1f}, "
            f"need ≥ {z_need:.1f} ({int(win.sum())} tags, {m:,} offsets within {offset_guess_s:g} ± {offset_span_s / 2:g} s)"
        )

    sel = gated
    k_abs = k_rel + k0
    fit = None
    for _ in range(max(1, refine_passes)):
        try:
            fit = fit_clock(T[sel], k_abs[sel], R, knot_spacing_s)
        except ValueError as exc:
            raise SyncError(f"clock fit from the assigned detections failed: {exc}") from exc
        u = T - fit.offset_ps(T)
        k_abs = np.rint(u / P).astype(np.int64)
        sel = np.abs(u - k_abs * P) <= half_w
    t0, t1 = int(T[0]), int(T[-1])
    D0, D1 = fit.offset_ps(np.array([t0, t1]))
    drift = (D1 - D0) / (t1 - t0) if t1 > t0 else 0.0
    return CorrelationSync(
        fit=fit, offset_ns=float(D0 * 1e-3), drift_ppm=float(drift * 1e6), t_first_ps=t0, t_last_ps=t1,
        tags_total=int(T.size), tags_assigned=int(sel.sum()), peak_z=z, min_z=z_need, pulse_offset=int(k0),
        segments_used=int(n_valid), segments_total=int(n_seg), residual_rms_ns=float(fit.residual_rms_ns),
    )


def virtual_beacons(fit: ClockFit, bob_time_ps: np.ndarray, rep_rate_hz: float, step_s: float = 1e-3):
    """``(beacon_time_ps, beacon_index)``: at every ``step_s`` over the tags' span, the pulse ``k``
    nearest in time and its arrival time ``T`` on Bob's clock by the fitted ``D`` (beacon rate =
    ``rep_rate_hz``, so ``D(T) = T − k / R`` is sampled exactly as a beacon would)."""
    T = np.asarray(bob_time_ps, dtype=np.int64)
    if T.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    step = int(round(step_s * 1e12))
    g = np.arange(int(T.min()), int(T.max()) + step, step, dtype=np.int64)
    D = fit.spline(g * 1e-12)
    P = 1e12 / rep_rate_hz
    k = (g - D) / P
    k_int = np.rint(k).astype(np.int64)
    t_int = np.rint(g + (k_int - k) * P).astype(np.int64)
    keep = np.r_[True, np.diff(t_int) > 0]
    return t_int[keep], k_int[keep]
