"""Photons from the satellite to Bob's four detectors, sampled per time slice (design.md §3).

Emitting 100 MHz for a 273 s pass is 2.7e10 pulses, of which only ~4e6 give a click. The pass is cut
into slices (``SimulationConfig.slice_s``, 10 ms = 1e6 pulses) inside which the link is constant
(η, e_d and background interpolated at the slice centre) and only the clicked pulses are drawn.
The sampler is *exact in distribution* for that piecewise-constant link:

1. **Which pulses click.** Each pulse independently has class ``c = (i, a, x)`` with probability
   ``p_c = p_i / 4`` and at least one signal photo-detection with probability
   ``P_c = 1 − exp(−Λ_i)``, ``Λ_i = μ_i(1+δ) η η_det`` (Poisson thinning, see :mod:`.detector`).
   Pulses are therefore i.i.d. Bernoulli(``P̄ = Σ_c p_c P_c``) "clicked" indicators with classes
   drawn, *given* the indicator, from ``p_c P_c / P̄`` (clicked) or ``p_c (1 − P_c) / (1 − P̄)`` (not
   clicked), independently across pulses. Hence the number of clicked pulses in a slice of ``n``
   pulses is Binomial(n, P̄), their positions are a uniformly random subset of that size
   (exchangeability of an i.i.d. sequence), and their classes are i.i.d. from the clicked posterior.
   The subset is drawn by drawing positions i.i.d. uniformly and redrawing the number of
   collisions until all are distinct: the stopping rule depends on counts only, so the final set is
   invariant under permutations of the slice, i.e. uniform (≈ m²/2n ≤ 0.03 collisions per 10 ms slice).
2. **Which detectors click**, given at least one detection: the total number of photo-detections
   is Poisson(Λ) conditioned on ≥ 1 (exact inverse CDF: ``P(1 | ≥ 1) = Λ / (e^Λ − 1)``, larger
   values continue the CDF for the few draws that need it), and every photo-detection is routed
   independently through BS and PBS (marking theorem). The detectors hit click. This gives exactly
   the conditional law over the 15 non-empty click patterns without tabulating them.
3. **Background and dark counts** (per detector, ``LinkSeries.background_rate_hz + dark_count_hz``)
   are Poisson processes in continuous ground time over the whole pass, not only in gates; the
   2 ns gate of :func:`satqkd.quantum.timing.synchronise` keeps ≈ window/period of them.
4. **Alice's record** holds every clicked pulse plus, for every Bob tag, the pulse nearest in true
   time (and its neighbour when the tag is within 5 % of a period from the midpoint). Such a pulse
   that gave no signal click gets its class from the not-clicked posterior — exact, because the
   background is independent of the pulses. ``slice_emitted`` adds a multinomial draw of the
   remaining not-clicked pulses with that posterior, so the per-slice emitted counts have their
   exact joint law with the detections.

Time tags on Bob's clock (integer ps since his pass start): emission time ``k / rep_rate`` →
ground arrival ``t_g = t_e + L(t_e)/c`` with the range ``L`` interpolated by the not-a-knot cubic
spline through ``LinkSeries.range_m`` (:func:`_cubic_slopes`; evaluated on a 1 ms grid then linearly
interpolated: error < 0.1 ps; the
light-time correction ``L̇ L / c²`` of up to ≈ 0.1 µs is smooth, shared by the beacon, and absorbed by the
synchronisation fit) → Bob's clock ``T = offset + (1 + drift) t_g`` → plus Gaussian jitter
(:func:`.detector.tag_jitter_ps`). Dead time is applied after merging signal and background tags.
Beacon pulse ``j`` leaves at ``j / beacon_rate_hz`` (co-timed with QKD pulse ``j·rep/beacon_rate``),
is tagged with probability ``beacon_detection_probability`` and jitter ``sync_jitter_ns``.

The per-pulse reference :func:`sample_slice_per_pulse` follows every pulse and photon instead and
must agree statistically (``tests/test_sampler.py``).

Eavesdropping (``cfg.attack``, :mod:`.attacks`): with an attack, steps 1–2 take the per-slice,
per-intensity click probability and the click-pattern law given ≥ 1 detection from
:func:`.attacks.click_model` (exact photon-number sums) instead of the Poisson-thinning kernels;
everything else is unchanged. Without one (the default) the code path and the random stream are
exactly those of the honest sampler.

Implementation: the random numbers are drawn with NumPy in whole arrays (the stream depends only on
the seed); the per-event arithmetic on them runs in ``numba.njit(cache=True)`` kernels that walk the
slices in order (no per-pulse slice index is stored), merge the already time-sorted tag streams
instead of sorting them, and fuse the dead time into that merge. They repeat NumPy's operations in
the same order (``np.interp`` included), so the records equal those of the plain NumPy formulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np

from ..records import LinkSeries, RawRecords
from . import attacks as _atk
from . import detector as _det
from . import source as _src
from .interp import interp_uniform

__all__ = ["sample_pass", "sample_slice_per_pulse", "C_M_S"]

#: speed of light in vacuum (m/s)
C_M_S = 299_792_458.0
_FLIGHT_GRID_S = 1e-3
_MIDPOINT_MARGIN = 0.05

Progress = Callable[[float, float], None] | None


# --------------------------------------------------------------------------------------------- link
def _check_link(link: LinkSeries) -> None:
    t = np.asarray(link.t_s, dtype=float)
    n = t.size
    if t.ndim != 1 or n < 2:
        raise ValueError("link.t_s must be a 1-D time grid with at least 2 points")
    if np.any(np.diff(t) <= 0):
        raise ValueError("link.t_s must be strictly increasing")
    for name in ("range_m", "misalignment"):
        a = np.asarray(getattr(link, name))
        if a.shape != (n,):
            raise ValueError(f"link.{name} must have shape ({n},) like link.t_s; got {a.shape}")
    if np.any(np.asarray(link.range_m) <= 0):
        raise ValueError("link.range_m must be > 0")
    bg = np.asarray(link.background_rate_hz, dtype=float)
    if bg.shape not in ((n,), (n, _det.N_DETECTORS)):
        raise ValueError(f"link.background_rate_hz must have shape ({n},) or ({n}, 4); got {bg.shape}")
    if np.any(bg < 0):
        raise ValueError("link.background_rate_hz must be >= 0")
    if not 0.0 < link.detector_efficiency <= 1.0:
        raise ValueError(f"link.detector_efficiency must lie in (0, 1]; got {link.detector_efficiency}")
    if not link.dark_count_hz >= 0:
        raise ValueError(f"link.dark_count_hz must be >= 0; got {link.dark_count_hz}")
    ll = np.asarray(link.link_loss_db, dtype=float)
    if ll.shape != (n,) or np.any(~np.isfinite(ll)) or np.any(ll < 0):
        raise ValueError("link.loss_db must give a finite total loss >= 0 dB per time step")
    e = np.asarray(link.misalignment, dtype=float)
    if np.any(e < 0) or np.any(e > 0.5):
        raise ValueError("link.misalignment must lie in [0, 0.5]")


@dataclass(frozen=True)
class _SliceLink:
    eta: np.ndarray  # (n,) link transmittance (excl. detector)
    misalignment: np.ndarray  # (n,)
    noise_hz: np.ndarray  # (n, 4) background + dark per detector
    detector_efficiency: float


def _link_at(link: LinkSeries, t_s: np.ndarray) -> _SliceLink:
    """Link parameters at times ``t_s``: loss linear in dB (i.e. η log-linear), e_d and rates linear."""
    tg = np.asarray(link.t_s, dtype=float)
    loss = np.interp(t_s, tg, np.asarray(link.link_loss_db, dtype=float))
    e_d = np.interp(t_s, tg, np.asarray(link.misalignment, dtype=float))
    bg = np.asarray(link.background_rate_hz, dtype=float)
    if bg.ndim == 1:
        bg = np.repeat(bg[:, None], _det.N_DETECTORS, axis=1)
    noise = np.column_stack([np.interp(t_s, tg, bg[:, j]) for j in range(_det.N_DETECTORS)]) + link.dark_count_hz
    return _SliceLink(10.0 ** (-loss / 10.0), e_d, noise.reshape(-1, _det.N_DETECTORS), float(link.detector_efficiency))


@dataclass(frozen=True)
class _SliceGrid:
    bounds: np.ndarray  # (n_slices + 1,) int64 pulse-index boundaries
    pulses_per_slice: int

    @property
    def n(self) -> np.ndarray:
        return np.diff(self.bounds)

    @property
    def first(self) -> int:
        return int(self.bounds[0])

    @property
    def stop(self) -> int:
        return int(self.bounds[-1])

    def slice_of(self, k: np.ndarray) -> np.ndarray:
        return (np.asarray(k, dtype=np.int64) - self.first) // self.pulses_per_slice


def _pulse_range(t0_s: float, t1_s: float, rate_hz: float) -> tuple[int, int]:
    """Pulses emitted in ``[t0, t1)``: ``k`` with ``t0 ≤ k / rate < t1``."""
    return int(math.ceil(round(t0_s * rate_hz, 6))), int(math.ceil(round(t1_s * rate_hz, 6)))


def _slice_grid(t0_s: float, t1_s: float, rep_rate_hz: float, slice_s: float) -> _SliceGrid:
    if slice_s <= 0:
        raise ValueError(f"slice_s must be > 0; got {slice_s}")
    k0, k1 = _pulse_range(t0_s, t1_s, rep_rate_hz)
    per = max(1, int(round(slice_s * rep_rate_hz)))
    if (k1 - k0) / per > 1e7:
        raise ValueError(f"slice_s = {slice_s} gives more than 1e7 slices over the pass; use a longer slice")
    b = np.arange(k0, k1, per, dtype=np.int64)
    return _SliceGrid(np.append(b, np.int64(k1)) if k1 > k0 else np.array([k0], dtype=np.int64), per)


# -------------------------------------------------------------------------------------------- clock
def _cubic_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Node slopes of the interpolating spline of degree ``min(3, n − 1)`` with not-a-knot ends.

    For ``n ≥ 4`` points this is the tridiagonal system of de Boor, *A Practical Guide to Splines*
    (2001), ch. IV (eq. (IV.10) with the not-a-knot end conditions), the same interpolant as
    ``scipy.interpolate.make_interp_spline(x, y, k=3)`` / ``CubicSpline(x, y)``; 3 points give the
    parabola and 2 points the line through them. Solved by elimination without pivoting: after the
    first step every pivot is ≥ the sum of the interval lengths it couples (diagonal dominance).
    """
    n = x.size
    dx = np.diff(x)
    slope = np.diff(y) / dx
    if n == 2:
        return np.array([slope[0], slope[0]])
    if n == 3:
        c = (slope[1] - slope[0]) / (x[2] - x[0])  # parabola: p'(x) = slope0 + c (2x − x0 − x1)
        return slope[0] + c * (2.0 * x - x[0] - x[1])
    lower = np.empty(n)  # lower[i]: coefficient of s[i-1] in row i
    diag = np.empty(n)
    upper = np.empty(n)  # upper[i]: coefficient of s[i+1] in row i
    b = np.empty(n)
    lower[1:-1], diag[1:-1], upper[1:-1] = dx[1:], 2.0 * (dx[:-1] + dx[1:]), dx[:-1]
    b[1:-1] = 3.0 * (dx[1:] * slope[:-1] + dx[:-1] * slope[1:])
    d = x[2] - x[0]
    diag[0], upper[0] = dx[1], d
    b[0] = ((dx[0] + 2.0 * d) * dx[1] * slope[0] + dx[0] ** 2 * slope[1]) / d
    d = x[-1] - x[-3]
    lower[-1], diag[-1] = d, dx[-2]
    b[-1] = (dx[-1] ** 2 * slope[-2] + (2.0 * d + dx[-1]) * dx[-2] * slope[-1]) / d
    return _tridiagonal_solve(lower, diag, upper, b)


def _tridiagonal_solve(lower, diag, upper, b) -> np.ndarray:
    """Thomas algorithm (a few hundred rows: one per link sample)."""
    n = b.size
    c = np.empty(n)
    r = np.empty(n)
    lo, dg, up, bb = lower.tolist(), diag.tolist(), upper.tolist(), b.tolist()
    c[0] = up[0] / dg[0]
    r[0] = bb[0] / dg[0]
    for i in range(1, n):
        piv = dg[i] - lo[i] * c[i - 1]
        c[i] = up[i] / piv if i < n - 1 else 0.0
        r[i] = (bb[i] - lo[i] * r[i - 1]) / piv
    for i in range(n - 2, -1, -1):
        r[i] -= c[i] * r[i + 1]
    return r


def _cubic_eval(x: np.ndarray, y: np.ndarray, s: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Piecewise cubic Hermite polynomial with node values ``y`` and slopes ``s`` at ``xq``; the end
    pieces are extended beyond ``[x[0], x[-1]]``."""
    i = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, x.size - 2)
    h = x[i + 1] - x[i]
    sl = (y[i + 1] - y[i]) / h
    c2 = (3.0 * sl - 2.0 * s[i] - s[i + 1]) / h
    c3 = (s[i] + s[i + 1] - 2.0 * sl) / (h * h)
    t = xq - x[i]
    return y[i] + t * (s[i] + t * (c2 + t * c3))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _tag_ps_kernel(index, div, g, f, slope, inv_h, offset_s, rate, noise, out):  # pragma: no cover - compiled
    for i in range(index.size):
        t_e = index[i] / div
        t_g = t_e + interp_uniform(t_e, g, f, slope, inv_h)
        out[i] = np.int64(np.rint((offset_s + rate * t_g) * 1e12 + noise[i]))


class _Clock:
    """True flight time and Bob's clock (module docstring)."""

    def __init__(self, link: LinkSeries, offset_ns: float, drift_ppb: float):
        t = np.asarray(link.t_s, dtype=float)
        r = np.asarray(link.range_m, dtype=float)
        margin = 0.1
        n = int(math.ceil((t[-1] - t[0] + 2 * margin) / _FLIGHT_GRID_S)) + 1
        self.grid_s = t[0] - margin + _FLIGHT_GRID_S * np.arange(n)
        self.flight_grid_s = _cubic_eval(t, r, _cubic_slopes(t, r), self.grid_s) / C_M_S
        self.flight_slope = np.diff(self.flight_grid_s) / np.diff(self.grid_s)  # as np.interp computes it
        self.inv_step = 1.0 / _FLIGHT_GRID_S
        self.offset_s = offset_ns * 1e-9
        self.rate = 1.0 + drift_ppb * 1e-9

    def flight_s(self, t_s):
        return np.interp(t_s, self.grid_s, self.flight_grid_s)

    def ground_from_emission(self, t_e):
        return t_e + self.flight_s(t_e)

    def emission_from_ground(self, t_g):
        u = t_g - self.flight_s(t_g)
        for _ in range(3):  # contraction factor |L̇/c| ≈ 2.5e-5 per step
            u = t_g - self.flight_s(u)
        return u

    def bob_ps(self, t_g):
        """Bob's clock reading (float ps) at true ground time ``t_g``."""
        return (self.offset_s + self.rate * t_g) * 1e12

    def ground_from_bob_ps(self, bob_ps):
        return (np.asarray(bob_ps, dtype=float) * 1e-12 - self.offset_s) / self.rate

    def tag_ps(self, index: np.ndarray, rate_hz: float, noise_ps: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``rint(bob_ps(ground_from_emission(index / rate_hz)) + noise_ps)`` as int64, in one pass
        (``out`` may share memory with ``noise_ps``: element ``i`` is read before it is written)."""
        index = np.ascontiguousarray(index, dtype=np.int64)
        if out is None:
            out = np.empty(index.size, dtype=np.int64)
        _tag_ps_kernel(index, float(rate_hz), self.grid_s, self.flight_grid_s, self.flight_slope, self.inv_step, self.offset_s,
                       self.rate, np.ascontiguousarray(noise_ps, dtype=float), out)
        return out


def _clock(cfg, link: LinkSeries) -> _Clock:
    return _Clock(link, cfg.timing.clock_offset_ns, cfg.timing.clock_drift_ppb)


# --------------------------------------------------------------------------------- shared tag parts
def _signal_tag_times(clock: _Clock, pulse: np.ndarray, rep_rate_hz: float, sigma_ps: float, rng) -> np.ndarray:
    return clock.tag_ps(pulse, rep_rate_hz, rng.normal(0.0, sigma_ps, np.size(pulse)))


def _background_tags(clock: _Clock, grid: _SliceGrid, noise_hz: np.ndarray, rep_rate_hz: float, rng):
    """Background + dark tags over the ground-time span of each slice's pulses (to mid-pulse edges).

    No jitter is added: jitter of a homogeneous Poisson process leaves it a Poisson process."""
    edges = clock.ground_from_emission((grid.bounds - 0.5) / rep_rate_hz)
    t_g, det, _ = _det.poisson_tags(noise_hz, edges[:-1], edges[1:], rng)
    return np.rint(clock.bob_ps(t_g)).astype(np.int64), det


def _merge_tags(parts, dead_time_ns: float):
    """Merge ``(time_ps, detector, truth)`` parts in time order, then apply the dead time.

    The order is that of a stable sort of the concatenated parts (ties: earlier part, then earlier
    position first). Parts that are already sorted (the normal case) are merged in one pass without
    sorting; the dead time (:func:`.detector.apply_dead_time`) is applied in the same pass.
    ``truth`` may be ``None`` for a part (background: -1). Returns ``(t, d, truth, n_dropped)``.
    """
    dead_ps = int(round(dead_time_ns * 1e3))
    if dead_ps < 0:
        raise ValueError(f"dead_time_ns must be >= 0; got {dead_time_ns}")
    ts, ds, trs = [], [], []
    for t, d, tr in parts:
        t = np.ascontiguousarray(t, dtype=np.int64)
        d = np.ascontiguousarray(d, dtype=np.uint8)
        tr = np.full(t.size, -1, np.int64) if tr is None else np.ascontiguousarray(tr, dtype=np.int64)
        if not (t.shape == d.shape == tr.shape):
            raise ValueError("time, detector and truth of a tag part must have the same length")
        if t.size > 1 and not np.all(t[1:] >= t[:-1]):
            o = np.argsort(t, kind="stable")
            t, d, tr = t[o], d[o], tr[o]
        ts.append(t)
        ds.append(d)
        trs.append(tr)
    n = sum(t.size for t in ts)
    t_out = np.empty(n, np.int64)
    d_out = np.empty(n, np.uint8)
    tr_out = np.empty(n, np.int64)
    kept = _merge_runs_kernel(tuple(ts), tuple(ds), tuple(trs), np.int64(dead_ps), t_out, d_out, tr_out)
    if kept < n:
        t_out, d_out, tr_out = t_out[:kept], d_out[:kept], tr_out[:kept]
    return t_out, d_out, tr_out, n - kept


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _merge_runs_kernel(ts, ds, trs, dead_ps, t_out, d_out, tr_out):  # pragma: no cover - compiled
    n_runs = len(ts)
    pos = np.zeros(n_runs, np.int64)
    last = np.full(256, np.iinfo(np.int64).min // 2, dtype=np.int64)
    n = 0
    while True:
        best = -1
        bt = np.int64(0)
        for r in range(n_runs):
            if pos[r] < ts[r].size:
                v = ts[r][pos[r]]
                if best < 0 or v < bt:
                    best = r
                    bt = v
        if best < 0:
            break
        i = pos[best]
        pos[best] = i + 1
        d = ds[best][i]
        if dead_ps > 0 and bt - last[d] < dead_ps:
            continue
        last[d] = bt
        t_out[n] = bt
        d_out[n] = d
        tr_out[n] = trs[best][i]
        n += 1
    return n


def _nearest_pulses(clock: _Clock, bob_ps: np.ndarray, rep_rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Pulse nearest in true emission time to each tag, and the second-nearest pulses of tags that
    lie within 5 % of a period from the midpoint between two pulses."""
    kf = clock.emission_from_ground(clock.ground_from_bob_ps(bob_ps)) * rep_rate_hz
    k = np.rint(kf).astype(np.int64)
    d = kf - k
    near = np.flatnonzero(np.abs(d) > 0.5 - _MIDPOINT_MARGIN)
    return k, k[near] + np.where(d[near] >= 0, 1, -1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _emission_times(t, offset_s, rate, g, f, slope, inv_h, t_g, u):  # pragma: no cover - compiled
    """True emission times ``u`` (s) of Bob's tags ``t`` (ps): ``_Clock.emission_from_ground`` of
    ``_Clock.ground_from_bob_ps`` (``t_g``), same arithmetic (``u₀ = t_g``, then four steps
    ``u ← t_g − flight(u)``). Each step runs over all tags so that they overlap in the pipeline."""
    for i in range(t.size):
        t_g[i] = (t[i] * 1e-12 - offset_s) / rate
        u[i] = t_g[i]
    for _ in range(4):
        for i in range(t.size):
            u[i] = t_g[i] - interp_uniform(u[i], g, f, slope, inv_h)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _candidates_kernel(t_e, tr, rep_hz, lo, hi, half):  # pragma: no cover - compiled
    """Pulses in ``[lo, hi)`` a tag (true emission time ``t_e``) may be assigned to, other than its
    own: the nearest pulse (when it is not the tag's true pulse ``tr``) and, within the midpoint
    margin ``half``, the second nearest. Same arithmetic as :func:`_nearest_pulses`."""
    out = np.empty(2 * t_e.size, np.int64)  # pages beyond the ~0.1 t_e.size written are never touched
    c = 0
    for i in range(t_e.size):
        kf = t_e[i] * rep_hz
        k = np.int64(np.rint(kf))
        if k != tr[i] and k >= lo and k < hi:
            out[c] = k
            c += 1
        d = kf - k
        if abs(d) > half:
            v = k + 1 if d >= 0 else k - 1
            if v >= lo and v < hi:
                out[c] = v
                c += 1
    return out[:c].copy()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _unique_not_in(a, b):  # pragma: no cover - compiled
    """Sorted unique values of sorted ``a`` that are not in sorted ``b``."""
    out = np.empty(a.size, np.int64)
    c = 0
    j = 0
    for i in range(a.size):
        v = a[i]
        if c and out[c - 1] == v:
            continue
        while j < b.size and b[j] < v:
            j += 1
        if j < b.size and b[j] == v:
            continue
        out[c] = v
        c += 1
    return out[:c].copy()


def _revealed_pulses(clock, t, tr, grid: _SliceGrid, rep_rate_hz: float, clicked: np.ndarray) -> np.ndarray:
    """Sorted pulses a tag may be assigned to that are not in ``clicked`` (sorted), within the grid."""
    t = np.ascontiguousarray(t, dtype=np.int64)
    blk = 1 << 16  # blocks keep the temporaries small
    parts = []
    t_g, t_e = np.empty(min(blk, t.size)), np.empty(min(blk, t.size))
    for s in range(0, t.size, blk):
        e = min(s + blk, t.size)
        _emission_times(t[s:e], clock.offset_s, clock.rate, clock.grid_s, clock.flight_grid_s, clock.flight_slope,
                        clock.inv_step, t_g[: e - s], t_e[: e - s])
        parts.append(_candidates_kernel(t_e[: e - s], np.ascontiguousarray(tr[s:e], dtype=np.int64), float(rep_rate_hz),
                                        np.int64(grid.first), np.int64(grid.stop), 0.5 - _MIDPOINT_MARGIN))
    cand = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    cand.sort()
    return _unique_not_in(cand, np.ascontiguousarray(clicked, dtype=np.int64))


def _beacons(clock: _Clock, t0_s: float, t1_s: float, timing, rng, chunk: int = 1_000_000, p_of_t=None):
    """Beacon tags: pulse ``j`` at ``j / f_b`` (satellite clock), tagged with the detection probability:
    ``timing.beacon_detection_probability``, or ``p_of_t(t_s)`` per pulse (the beacon's link budget,
    :func:`satqkd.sky.beacon.config_beacon_detection_probability`). One uniform per pulse either way.

    (The uniforms are drawn in chunks: the stream is the same for any chunk size.)"""
    j0, j1 = _pulse_range(t0_s, t1_s, timing.beacon_rate_hz)
    parts = []
    for s in range(j0, j1, chunk):
        u = rng.random(min(chunk, j1 - s))
        if p_of_t is None:
            p = timing.beacon_detection_probability
        else:
            p = p_of_t((s + np.arange(u.size)) / timing.beacon_rate_hz)
        parts.append(s + np.flatnonzero(u < p))
    j = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    t = clock.tag_ps(j, timing.beacon_rate_hz, rng.normal(0.0, timing.sync_jitter_ns * 1e3, j.size))
    return t, j


def _beacon_probability(cfg, link):
    """``p(t)`` of the beacon's link budget along ``link`` (None for the constant model)."""
    if cfg.timing.beacon_detection_model == "constant":
        return None
    from ..sky.beacon import config_beacon_detection_probability

    p_grid = config_beacon_detection_probability(cfg, link.range_m, link.elevation_deg)
    t_grid = np.asarray(link.t_s, dtype=float)
    return lambda t_s: np.interp(t_s, t_grid, p_grid)


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique values (faster than ``np.unique``'s hash path for our int64 arrays)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if a.size else a


def _offsets(grid: _SliceGrid, sl: np.ndarray, rng) -> np.ndarray:
    """Uniform pulse offsets within the slices ``sl`` (fast path for the equal-length slices)."""
    per = grid.pulses_per_slice
    n = grid.n
    off = rng.integers(0, per, sl.size) if sl.size else np.zeros(0, np.int64)
    short = np.flatnonzero(n[sl] != per)
    if short.size:
        off[short] = rng.integers(0, n[sl[short]])
    return grid.bounds[:-1][sl] + off


def _offsets_by_count(grid: _SliceGrid, m: np.ndarray, rng) -> np.ndarray:
    """``_offsets(grid, np.repeat(np.arange(m.size), m), rng)`` (same draws) without the slice index
    of every pulse: positions are grouped by slice, so the slices shorter than the others (the last
    one) hold contiguous runs of positions."""
    per = grid.pulses_per_slice
    n = grid.n
    total = int(m.sum())
    off = rng.integers(0, per, total) if total else np.zeros(0, np.int64)
    short = np.flatnonzero((n != per) & (m > 0))
    if short.size:
        start = np.cumsum(m) - m
        pos = np.concatenate([np.arange(start[s], start[s] + m[s]) for s in short])
        off[pos] = rng.integers(0, np.repeat(n[short], m[short]))
    _add_slice_starts(off, m, grid.bounds)
    return off


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_slice_starts(off, m, bounds):  # pragma: no cover - compiled
    i = 0
    for s in range(m.size):
        b = bounds[s]
        for _ in range(m[s]):
            off[i] += b
            i += 1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _drop_and_merge(idx, drop, new):  # pragma: no cover - compiled
    """In place: sorted ``idx`` without the positions ``drop`` (sorted, distinct), merged with sorted
    ``new`` of the same length as ``drop``."""
    w = 0
    q = 0
    for i in range(idx.size):  # compact
        if q < drop.size and i == drop[q]:
            q += 1
            continue
        idx[w] = idx[i]
        w += 1
    i = w - 1  # merge from the back into the freed tail
    j = new.size - 1
    for o in range(idx.size - 1, -1, -1):
        if j >= 0 and (i < 0 or new[j] >= idx[i]):
            idx[o] = new[j]
            j -= 1
        else:
            idx[o] = idx[i]
            i -= 1


def _uniform_subsets(grid: _SliceGrid, m: np.ndarray, rng) -> np.ndarray:
    """Sorted global pulse indices of a uniformly random ``m[s]``-subset of every slice ``s``.

    i.i.d. uniform positions; each collision is redrawn until all are distinct (module docstring).
    """
    m = np.asarray(m, dtype=np.int64)
    if np.any(m > grid.n):
        raise ValueError("more clicked pulses than pulses in a slice")
    idx = _offsets_by_count(grid, m, rng)
    idx.sort()
    while idx.size > 1:
        dup = np.flatnonzero(idx[1:] == idx[:-1]) + 1
        if dup.size == 0:
            break
        lost = grid.slice_of(idx[dup])
        new = np.sort(_offsets(grid, lost, rng))
        _drop_and_merge(idx, dup, new)
    return idx


def _ztp_tail(la: np.ndarray, ua: np.ndarray, ca: np.ndarray) -> np.ndarray:
    """Values ≥ 2 of the zero-truncated Poisson inverse CDF for draws ``ua`` with ``ua ≥ P(N=1|N≥1)``
    (``ca``): continue the CDF sum term by term (see :func:`_zero_truncated_poisson`)."""
    n_out = np.ones(la.size, dtype=np.int64)
    term = ca.copy()
    ca = ca.copy()
    cap = la + 40.0 * np.sqrt(la) + 40.0
    n = 1
    live = np.arange(la.size)
    while live.size:
        n += 1
        term[live] *= la[live] / n
        ca[live] += term[live]
        n_out[live] = n
        live = live[(ua[live] >= ca[live]) & (n < cap[live])]
    return n_out


def _zero_truncated_poisson(lam: np.ndarray, rng) -> np.ndarray:
    """Draws of N ~ Poisson(Λ) conditioned on N ≥ 1 (exact inverse CDF, one uniform per draw).

    ``P(N = 1 | N ≥ 1) = Λ / (e^Λ − 1)``; the rare larger values are found by continuing the CDF
    sum ``Σ_n e^{−Λ} Λ^n / n! / (1 − e^{−Λ})`` only for the draws that need it.
    """
    lam = np.asarray(lam, dtype=float)
    if np.any(lam <= 0):
        raise ValueError("zero-truncated Poisson needs a mean > 0")
    u = rng.random(lam.size)
    with np.errstate(over="ignore"):
        cdf = lam / np.expm1(lam)
    n_out = np.ones(lam.size, dtype=np.int64)
    act = np.flatnonzero(u >= cdf)
    if act.size:
        n_out[act] = _ztp_tail(lam[act], u[act], cdf[act])
    return n_out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ztp_active_kernel(u, cdf_tab, lam_tab, m, inten):  # pragma: no cover - compiled
    """Positions whose zero-truncated Poisson draw is ≥ 2 (``u ≥ P(1 | ≥ 1)`` of the pulse's slice and
    intensity), and whether any pulse has a mean ≤ 0."""
    bad = False
    c = 0
    i = 0
    for s in range(m.size):
        for _ in range(m[s]):
            k = inten[i]
            bad |= not lam_tab[s, k] > 0
            c += u[i] >= cdf_tab[s, k]
            i += 1
    out = np.empty(c, np.int64)
    c = 0
    i = 0
    for s in range(m.size):
        for _ in range(m[s]):
            if u[i] >= cdf_tab[s, inten[i]]:
                out[c] = i
                c += 1
            i += 1
    return out, bad


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _route_kernel(u_bs, u_pbs, basis, bit, e_slice, m):  # pragma: no cover - compiled
    """:func:`.detector.route_photons` for one photon per pulse, misalignment per slice."""
    out = np.empty(u_bs.size, np.uint8)
    i = 0
    for s in range(m.size):
        e = e_slice[s]
        for _ in range(m[s]):
            b = np.uint8(1) if u_bs[i] < 0.5 else np.uint8(0)
            if b == basis[i]:
                ob = bit[i] ^ np.uint8(u_pbs[i] < e)
            else:
                ob = np.uint8(u_pbs[i] < 0.5)
            out[i] = 2 * b + ob
            i += 1
    return out


def _click_patterns_by_slice(lam_tab, m, inten, basis, bit, e_slice, rng, scratch=None):
    """Signal clicks of the clicked pulses (grouped by slice, ``m[s]`` in slice ``s``).

    Same draws and law as :func:`_click_patterns` with ``Λ = lam_tab[s, inten]`` and ``e_d =
    e_slice[s]``. Returns the first detector hit of every pulse, and ``(more, mask, extra)``: the
    positions with ≥ 2 photo-detections, the bitmask of the detectors they hit and of the *other*
    detectors than the first (may be 0). ``scratch``: two float64 buffers of ≥ ``inten.size`` values
    for the uniforms (optional).
    """
    total = inten.size
    if scratch is None:
        scratch = (np.empty(total), np.empty(total))
    s1, s2 = scratch[0][:total], scratch[1][:total]
    u = rng.random(total, out=s1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        cdf_tab = lam_tab / np.expm1(lam_tab)
    act, bad = _ztp_active_kernel(u, cdf_tab, lam_tab, m, inten)
    if bad:
        raise ValueError("zero-truncated Poisson needs a mean > 0")
    slice_of = np.searchsorted(np.cumsum(m), act, side="right")
    n_more = _ztp_tail(lam_tab[slice_of, inten[act]], u[act], cdf_tab[slice_of, inten[act]]) if act.size else act
    first = _route_kernel(rng.random(total, out=s1), rng.random(total, out=s2), basis, bit, e_slice, m)
    more = act[n_more > 1]
    mask = np.left_shift(np.uint8(1), first[more])
    if more.size:
        k = np.flatnonzero(n_more > 1)
        rep = np.repeat(np.arange(more.size), n_more[k] - 1)
        p = more[rep]
        d = _det.route_photons(basis[p], bit[p], e_slice[slice_of[k][rep]], rng)
        np.bitwise_or.at(mask, rep, np.left_shift(np.uint8(1), d))
    extra = mask & ~np.left_shift(np.uint8(1), first[more]).astype(np.uint8)
    return first, more, mask, extra


def _click_patterns(lam: np.ndarray, basis, bit, e_d, rng) -> tuple[np.ndarray, np.ndarray]:
    """Detector-click bitmask (uint8) and first detector hit, for pulses known to have ≥ 1 detection.

    ``lam`` is each pulse's mean number of photo-detections Λ (> 0). The total number of
    photo-detections is Poisson(Λ) given ≥ 1 (:func:`_zero_truncated_poisson`); each one is routed
    independently through BS and PBS (marking theorem); the detectors hit click.
    """
    n_det = _zero_truncated_poisson(lam, rng)
    first = _det.route_photons(basis, bit, e_d, rng)
    mask = np.left_shift(np.uint8(1), first)
    more = np.flatnonzero(n_det > 1)
    if more.size:
        rep = np.repeat(more, n_det[more] - 1)
        d = _det.route_photons(basis[rep], bit[rep], e_d[rep], rng)
        np.bitwise_or.at(mask, rep, np.left_shift(np.uint8(1), d))
    return mask, first


def _tags_from_masks(pulse: np.ndarray, mask: np.ndarray, first: np.ndarray | None = None):
    """(pulse, detector) pairs for every set bit of ``mask``; ``first`` (if given) listed first."""
    if first is None:
        parts_p, parts_d = [], []
    else:
        parts_p, parts_d = [pulse], [first]
        mask = mask & ~(np.uint8(1) << first).astype(np.uint8)
    for j in range(_det.N_DETECTORS):
        w = np.flatnonzero((mask >> j) & 1)
        if w.size:
            parts_p.append(pulse[w])
            parts_d.append(np.full(w.size, j, dtype=np.uint8))
    if not parts_p:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return np.concatenate(parts_p), np.concatenate(parts_d)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _class_counts(m, inten, k):  # pragma: no cover - compiled
    out = np.zeros((m.size, k), np.int64)
    i = 0
    for s in range(m.size):
        for _ in range(m[s]):
            out[s, inten[i]] += 1
            i += 1
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _merge_alice(a, ai, ab, ax, b, bi, bb, bx):  # pragma: no cover - compiled
    """Merge two sorted, disjoint pulse lists with their (intensity, basis, bit) labels."""
    n = a.size + b.size
    p = np.empty(n, np.int64)
    pi = np.empty(n, np.uint8)
    pb = np.empty(n, np.uint8)
    px = np.empty(n, np.uint8)
    i = j = 0
    for o in range(n):
        if j >= b.size or (i < a.size and a[i] <= b[j]):
            p[o], pi[o], pb[o], px[o] = a[i], ai[i], ab[i], ax[i]
            i += 1
        else:
            p[o], pi[o], pb[o], px[o] = b[j], bi[j], bb[j], bx[j]
            j += 1
    return p, pi, pb, px


def _records(cfg, grid: _SliceGrid, alice, emitted, tags, n_dead, beacon, meta) -> RawRecords:
    t, d, tr = tags
    src, tim = cfg.source, cfg.timing
    meta = dict(meta)
    meta.update(
        first_pulse_index=grid.first,
        n_pulses=grid.stop - grid.first,
        slice_s=grid.pulses_per_slice / src.rep_rate_hz,
        tag_jitter_ps=_det.tag_jitter_ps(cfg.detectors.jitter_ps, tim.sync_jitter_ns),
        dead_time_ns=cfg.detectors.dead_time_ns,
        dead_time_dropped=int(n_dead),
        clock_offset_ns=tim.clock_offset_ns,
        clock_drift_ppb=tim.clock_drift_ppb,
    )
    return RawRecords(
        rep_rate_hz=float(src.rep_rate_hz),
        intensities=np.asarray(src.intensities, dtype=float),
        probabilities=np.asarray(src.probabilities, dtype=float),
        alice_pulse_index=alice[0],
        alice_intensity=alice[1],
        alice_basis=alice[2],
        alice_bit=alice[3],
        slice_start_s=grid.bounds[:-1] / src.rep_rate_hz,
        slice_emitted=emitted,
        bob_time_ps=t,
        bob_detector=d,
        beacon_time_ps=beacon[0],
        beacon_index=beacon[1],
        beacon_rate_hz=float(tim.beacon_rate_hz),
        window_ns=float(tim.window_ns),
        truth_pulse_index=tr,
        meta=meta,
    )


# ------------------------------------------------------------------------------------ slice sampler
def sample_pass(cfg, link: LinkSeries, rng: np.random.Generator, progress: Progress = None) -> RawRecords:
    """Sample a whole pass slice by slice, exact in distribution, O(detections) (module docstring).

    ``cfg`` is a :class:`satqkd.config.MissionConfig` (source, detectors, timing, simulation.slice_s
    are read; detector efficiency and dark counts come from ``link``). The pass spans
    ``[link.t_s[0], link.t_s[-1])``. ``progress(done, total)`` is called after each stage.

    Example::

        >>> raw = sample_pass(cfg, link, np.random.default_rng(7))   # doctest: +SKIP
        >>> raw.n_tags, raw.alice_pulse_index.size                   # doctest: +SKIP
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    _check_link(link)
    src = cfg.source
    mu, p = _src.check_source(src.intensities, src.probabilities, src.intensity_fluctuation)
    R = float(src.rep_rate_hz)
    K = mu.size
    total = 6.0

    def report(done):
        if progress is not None:
            progress(float(done), total)

    t0, t1 = float(link.t_s[0]), float(link.t_s[-1])
    grid = _slice_grid(t0, t1, R, cfg.simulation.slice_s)
    n = grid.n
    ns = n.size
    centre = (grid.bounds[:-1] + grid.bounds[1:]) / (2.0 * R)
    lk = _link_at(link, centre)
    clock = _clock(cfg, link)
    sigma_ps = _det.tag_jitter_ps(cfg.detectors.jitter_ps, cfg.timing.sync_jitter_ns)

    # 1. which pulses click, and their classes (pulses are grouped by slice: m[s] in slice s)
    mu_act = _src.draw_mean_photon_numbers(mu, src.intensity_fluctuation, ns, rng)
    attack = _atk.click_model(cfg, mu_act, lk.eta, lk.detector_efficiency, lk.misalignment)  # None: honest
    if attack is None:
        lam = mu_act * (lk.eta * lk.detector_efficiency)[:, None]  # (ns, K) Λ_i
        p_click = -np.expm1(-lam)
    else:
        p_click = attack.p_click
    m = rng.binomial(n, p_click @ p)
    idx = _uniform_subsets(grid, m, rng)
    scratch = (np.empty(idx.size), np.empty(idx.size))  # float64 buffers reused for the uniforms
    inten = _src.draw_intensity_by_counts(p * p_click, m, rng, scratch=scratch[0])
    basis, bit = _src.draw_basis_bit(idx.size, rng)
    report(1)

    # 2. which detectors click; signal tags: the first detector of every pulse, then the others
    if attack is None:
        first, more, mask, extra = _click_patterns_by_slice(lam, m, inten, basis, bit, lk.misalignment, rng, scratch)
    else:
        first, more, mask, extra = attack.draw(m, inten, basis, bit, rng)
    n_double = int(np.count_nonzero(mask & (mask - 1)))
    extra_pulse, extra_det = _tags_from_masks(idx[more], extra)
    del mask, extra, more
    # jitter: N(0, σ) = σ · N(0, 1) draw by draw (Generator.normal is loc + scale · z), A tags then B
    noise = rng.standard_normal(idx.size, out=scratch[0])
    noise *= sigma_ps
    extra_noise = rng.standard_normal(extra_pulse.size) * sigma_ps
    sig_t = clock.tag_ps(idx, R, noise, out=noise.view(np.int64))  # written over the noise
    extra_t = clock.tag_ps(extra_pulse, R, extra_noise)
    del noise, scratch
    report(2)

    # 3. background + dark counts, merge in time order, dead time
    bg_t, bg_d = _background_tags(clock, grid, lk.noise_hz, R, rng)
    n_bg = bg_t.size
    t, d, tr, n_dead = _merge_tags(
        [(sig_t, first, idx), (extra_t, extra_det, extra_pulse), (bg_t, bg_d, None)], cfg.detectors.dead_time_ns
    )
    del sig_t, first, extra_t, extra_det, extra_pulse, bg_t, bg_d
    report(3)

    # 4. pulses a tag may be assigned to that gave no signal click: class from not-clicked posterior
    rev = _revealed_pulses(clock, t, tr, grid, R, idx)
    sl_r = grid.slice_of(rev)
    inten_r = _src.draw_intensity(p * (1.0 - p_click), sl_r, rng)
    basis_r, bit_r = _src.draw_basis_bit(rev.size, rng)
    report(4)

    # 5. emitted counts per slice and intensity: clicked + revealed + multinomial of the rest
    emitted = _class_counts(m, inten, K)
    emitted += np.bincount(sl_r * K + inten_r, minlength=ns * K).reshape(ns, K)
    rest = n - emitted.sum(axis=1)
    w = p * (1.0 - p_click)
    emitted += rng.multinomial(rest, w / w.sum(axis=1, keepdims=True))
    alice = _merge_alice(idx, inten, basis, bit, rev, inten_r, basis_r, bit_r) if rev.size else (idx, inten, basis, bit)
    del idx, inten, basis, bit
    report(5)

    beacon = _beacons(clock, t0, t1, cfg.timing, rng, p_of_t=_beacon_probability(cfg, link))
    meta = dict(
        sampler="slice",
        truth_mean_photon_number=mu_act,
        truth_transmittance=lk.eta,
        truth_misalignment=lk.misalignment,
        truth_noise_rate_hz=lk.noise_hz,
        signal_clicked_pulses=int(m.sum()),
        signal_double_click_pulses=n_double,
        background_tags=int(n_bg),
        revealed_pulses=int(rev.size),
    )
    if attack is not None:
        meta.update(attack=attack.attack.kind, attack_fraction=attack.attack.fraction)
    raw = _records(cfg, grid, alice, emitted, (t, d, tr), n_dead, beacon, meta)
    report(6)
    return raw


# ---------------------------------------------------------------------------- per-pulse reference
def sample_slice_per_pulse(
    cfg,
    link: LinkSeries,
    rng: np.random.Generator,
    *,
    start_s: float | None = None,
    duration_s: float = 1e-3,
    max_pulses: int = 10_000_000,
) -> RawRecords:
    """Reference sampler: every pulse and every photon of one short slice, followed explicitly.

    The link is held at its value at the slice centre; the slice is ``[start_s, start_s +
    duration_s)`` (default: from ``link.t_s[0]``). Each pulse draws its class, its actual mean photon
    number ``μ_i(1+δ_i)`` (one δ per intensity, as one slice of :func:`sample_pass`), a Poisson photon
    number; each photon survives the link with probability η, is routed by the BS and PBS
    (:func:`.detector.route_photons`) and detected with probability ``η_det``. Background, dark
    counts, clock, jitter, dead time and beacons use the same models as :func:`sample_pass`. Alice's
    record holds every pulse with a signal click or nearest to any tag, with its true class.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    _check_link(link)
    src = cfg.source
    mu, p = _src.check_source(src.intensities, src.probabilities, src.intensity_fluctuation)
    R = float(src.rep_rate_hz)
    t0 = float(link.t_s[0]) if start_s is None else float(start_s)
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0; got {duration_s}")
    k0, k1 = _pulse_range(t0, t0 + duration_s, R)
    if k1 - k0 > max_pulses:
        raise ValueError(f"duration_s gives {k1 - k0} pulses; at most max_pulses = {max_pulses} allowed")
    grid = _SliceGrid(np.array([k0, k1], dtype=np.int64), max(1, k1 - k0))
    lk = _link_at(link, np.array([(k0 + k1) / (2.0 * R)]))
    clock = _clock(cfg, link)
    sigma_ps = _det.tag_jitter_ps(cfg.detectors.jitter_ps, cfg.timing.sync_jitter_ns)
    npulse = k1 - k0

    mu_act = _src.draw_mean_photon_numbers(mu, src.intensity_fluctuation, 1, rng)
    inten, basis, bit = _src.draw_pulse_classes(npulse, p, rng)
    photons = rng.poisson(mu_act[0][inten])
    arrived = rng.binomial(photons, lk.eta[0])
    who = np.repeat(np.arange(npulse), arrived)
    d = _det.route_photons(basis[who], bit[who], lk.misalignment[0], rng)
    seen = rng.random(who.size) < lk.detector_efficiency
    mask = np.zeros(npulse, dtype=np.uint8)
    np.bitwise_or.at(mask, who[seen], (np.uint8(1) << d[seen]).astype(np.uint8))
    clicked = np.flatnonzero(mask)
    tag_pos, tag_det = _tags_from_masks(clicked, mask[clicked])
    tag_pulse = k0 + tag_pos
    sig_t = _signal_tag_times(clock, tag_pulse, R, sigma_ps, rng)
    bg_t, bg_d = _background_tags(clock, grid, lk.noise_hz, R, rng)
    t, dd, tr, n_dead = _merge_tags(
        [(sig_t, tag_det, tag_pulse), (bg_t, bg_d, np.full(bg_t.size, -1, np.int64))], cfg.detectors.dead_time_ns
    )
    k, other = _nearest_pulses(clock, t, R)
    cand = np.concatenate([k, other]) - k0
    cand = cand[(cand >= 0) & (cand < npulse)]
    keep = _unique(np.concatenate([clicked, cand]))
    alice = (keep + k0, inten[keep], basis[keep], bit[keep])
    emitted = np.bincount(inten, minlength=mu.size).reshape(1, -1).astype(np.int64)
    beacon = _beacons(clock, t0, t0 + duration_s, cfg.timing, rng, p_of_t=_beacon_probability(cfg, link))
    meta = dict(
        sampler="per_pulse",
        truth_mean_photon_number=mu_act,
        truth_transmittance=lk.eta,
        truth_misalignment=lk.misalignment,
        truth_noise_rate_hz=lk.noise_hz,
        signal_clicked_pulses=int(clicked.size),
        signal_double_click_pulses=int(np.count_nonzero(mask & (mask - 1))),
        background_tags=int(bg_t.size),
    )
    return _records(cfg, grid, alice, emitted, (t, dd, tr), n_dead, beacon, meta)
