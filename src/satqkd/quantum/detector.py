"""Bob's passive BB84 decoder and its four single-photon detectors.

Receiver [paper Fig. 1c, Methods]: a 50/50 beam splitter (BS) picks the measurement basis passively;
each output goes to a polarizing beam splitter (PBS) of one basis and two silicon SPADs
(efficiency 50 %, dark counts < 25 Hz, jitter 350 ps). Detector numbering follows
``records.DETECTOR_NAMES``: 0 = H (Z, 0), 1 = V (Z, 1), 2 = +45° (X, 0), 3 = −45° (X, 1).

Photon routing (one photon of Alice's state ``(a, x)``, misalignment ``e_d``):
the BS sends it to analyser basis ``b`` with probability 1/2; if ``b == a`` it reaches detector
``(b, x)`` with probability ``1 − e_d`` and ``(b, 1 − x)`` with probability ``e_d``; if ``b != a`` it
reaches either detector of basis ``b`` with probability 1/2. Each detector then registers it with
probability ``η_det``. So the routing probabilities ``q_j(a, x, e_d)`` sum to 1 and, by Poisson
thinning, a pulse of mean photon number ``μ`` through a link of transmittance ``η`` produces
independent Poisson(λ_j) photo-detections at the four detectors with ``λ_j = μ η η_det q_j``
(Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), §II, generalised to the passive four-detector receiver).

Timing model (a documented choice, see :func:`tag_jitter_ps`): every signal time tag gets Gaussian
noise of standard deviation ``sqrt(σ_det² + σ_sync²)`` with ``σ_det = DetectorConfig.jitter_ps`` and
``σ_sync = TimingConfig.sync_jitter_ns`` both read as *rms* values (the conservative reading; a
datasheet "350 ps" is often FWHM, i.e. σ ≈ 149 ps). Beacon tags get ``σ_sync`` alone.

Dead time: non-paralysable. A detector that registered a click at ``t`` registers nothing in
``(t, t + τ_dead)`` and those photons do not extend the dead period (actively quenched SPAD).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "N_DETECTORS",
    "DETECTOR_BASIS",
    "DETECTOR_BIT",
    "routing_probabilities",
    "route_photons",
    "tag_jitter_ps",
    "gate_efficiency",
    "poisson_tags",
    "apply_dead_time",
    "dead_time_survival",
    "expected_statistics",
]

N_DETECTORS = 4
#: basis (0 = Z, 1 = X) and bit of each detector, see ``records.DETECTOR_NAMES``
DETECTOR_BASIS = np.array([0, 0, 1, 1], dtype=np.uint8)
DETECTOR_BIT = np.array([0, 1, 0, 1], dtype=np.uint8)


def _check_prob(name: str, v) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
        raise ValueError(f"{name} must lie in [0, 1]")
    return a


def routing_probabilities(basis, bit, misalignment) -> np.ndarray:
    """``q_j(a, x, e_d)``: probability that one photon of state ``(a, x)`` reaches detector ``j``.

    Broadcasts ``basis``, ``bit``, ``misalignment``; the result has a trailing axis of length 4
    summing to 1 (module docstring).
    """
    a = np.asarray(basis)[..., None]
    x = np.asarray(bit)[..., None]
    e = _check_prob("misalignment", misalignment)[..., None]
    same = DETECTOR_BASIS == a
    right = DETECTOR_BIT == x
    return np.where(same, 0.5 * np.where(right, 1.0 - e, e), 0.25)


def route_photons(basis: np.ndarray, bit: np.ndarray, misalignment, rng: np.random.Generator) -> np.ndarray:
    """Detector index (``uint8``) reached by each photon of state ``(basis, bit)``: BS, then PBS.

    Two uniforms per photon: one for the beam splitter, one for the PBS output (misalignment flip
    in the matching basis, 50/50 in the other).
    """
    n = np.asarray(basis).size
    b = (rng.random(n) < 0.5).astype(np.uint8)
    u = rng.random(n)
    match = b == basis
    flip = np.where(match, u < misalignment, u < 0.5)
    out_bit = np.where(match, bit ^ flip, flip).astype(np.uint8)
    return (2 * b + out_bit).astype(np.uint8)


def tag_jitter_ps(jitter_ps: float, sync_jitter_ns: float) -> float:
    """Standard deviation (ps) of a signal time tag around its pulse's ideal arrival time.

    Independent Gaussian detector jitter [paper: 350 ps] and synchronisation jitter [paper:
    0.529 ns] add in quadrature: ``σ = sqrt(σ_det² + σ_sync²)`` (0.634 ns for the paper's numbers).
    """
    if jitter_ps < 0 or sync_jitter_ns < 0:
        raise ValueError("jitter_ps and sync_jitter_ns must be >= 0")
    return math.hypot(jitter_ps, sync_jitter_ns * 1e3)


def gate_efficiency(window_ns: float, sigma_ps: float) -> float:
    """Fraction of signal tags with Gaussian jitter ``σ`` inside a centred window: ``erf(w / (2√2 σ))``."""
    if window_ns <= 0:
        raise ValueError(f"window_ns must be > 0; got {window_ns}")
    if sigma_ps <= 0:
        return 1.0
    return math.erf(window_ns * 1e3 / (2.0 * math.sqrt(2.0) * sigma_ps))


def poisson_tags(
    rate_hz: np.ndarray, lo_s: np.ndarray, hi_s: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Homogeneous Poisson processes in continuous time (background + dark counts).

    ``rate_hz`` has shape ``(n_intervals, n_detectors)``; interval ``s`` spans ``[lo_s[s], hi_s[s])``.
    Returns ``(time_s, detector, interval)`` sorted by time: counts are Poisson(rate · length), times
    uniform in the interval (the order statistics of a Poisson process).
    """
    rate = np.asarray(rate_hz, dtype=float)
    if np.any(rate < 0) or np.any(~np.isfinite(rate)):
        raise ValueError("background/dark rates must be finite and >= 0 Hz")
    length = np.asarray(hi_s, dtype=float) - np.asarray(lo_s, dtype=float)
    counts = rng.poisson(rate * length[:, None])
    n_int, n_det = rate.shape
    flat = counts.ravel()
    interval = np.repeat(np.repeat(np.arange(n_int), n_det), flat)
    detector = np.repeat(np.tile(np.arange(n_det, dtype=np.uint8), n_int), flat)
    t = lo_s[interval] + rng.random(interval.size) * length[interval]
    order = np.argsort(t, kind="stable")
    return t[order], detector[order], interval[order]


@numba.njit(cache=True)
def _dead_time_keep(time_ps, detector, dead_ps, n_det):  # pragma: no cover - compiled
    keep = np.ones(time_ps.size, dtype=np.bool_)
    last = np.full(n_det, np.iinfo(np.int64).min // 2, dtype=np.int64)
    for i in range(time_ps.size):
        d = detector[i]
        if time_ps[i] - last[d] < dead_ps:
            keep[i] = False
        else:
            last[d] = time_ps[i]
    return keep


def apply_dead_time(time_ps: np.ndarray, detector: np.ndarray, dead_time_ps: int) -> np.ndarray:
    """Keep-mask for time-sorted tags under a non-paralysable dead time per detector.

    A tag is dropped when it comes less than ``dead_time_ps`` after the previous *registered* tag of
    the same detector. ``time_ps`` must be sorted (non-decreasing).
    """
    t = np.ascontiguousarray(time_ps, dtype=np.int64)
    d = np.ascontiguousarray(detector, dtype=np.int64)
    if t.shape != d.shape:
        raise ValueError("time_ps and detector must have the same length")
    if dead_time_ps < 0:
        raise ValueError(f"dead_time_ps must be >= 0; got {dead_time_ps}")
    if t.size and np.any(np.diff(t) < 0):
        raise ValueError("time_ps must be sorted")
    if dead_time_ps == 0 or t.size == 0:
        return np.ones(t.size, dtype=bool)
    if d.min() < 0:
        raise ValueError("detector indices must be >= 0")
    return _dead_time_keep(t, d, np.int64(dead_time_ps), int(d.max()) + 1)


def dead_time_survival(rate_hz, dead_time_s: float):
    """Registered fraction of a Poisson stream of rate ``r`` under non-paralysable dead time ``τ``:
    ``1 / (1 + r τ)`` (e.g. Knoll, *Radiation Detection and Measurement*, 4th ed., §4.VII)."""
    return 1.0 / (1.0 + np.asarray(rate_hz, dtype=float) * dead_time_s)


def expected_statistics(
    mean_photon_number,
    transmittance,
    detector_efficiency: float,
    misalignment,
    noise_per_gate=0.0,
    gate_eff: float = 1.0,
) -> dict[str, np.ndarray]:
    """Closed-form per-pulse statistics after gating and squashing (no dead time).

    Detector ``j`` shows at least one tag in the pulse's gate with probability
    ``c_j = 1 − (1 − g (1 − e^{−λ_j})) e^{−b}``, independently across detectors: ``λ_j = μ η η_det q_j``
    (module docstring), ``g`` the gate efficiency of the signal tag, ``b`` the mean number of
    background + dark tags per detector in the gate. Squashing: clicks in one basis only → that
    basis (a double click in it gives a random bit); clicks in both bases → random basis and bit.

    Returns per-pulse ``gain`` (any click), ``sifted`` (Bob's basis equals Alice's), ``errors``
    (sifted and wrong bit), ``qber = errors / sifted`` and ``double_click`` (≥ 2 detectors).
    Without background, single-detector events reproduce the Ma et al. (2005) forms
    ``Q = 1 − e^{−ημ}`` and ``E Q = e_d (1 − e^{−ημ})`` up to the double-click terms.
    """
    lam = (
        np.asarray(mean_photon_number, dtype=float)
        * np.asarray(transmittance, dtype=float)
        * detector_efficiency
    )
    e = np.asarray(misalignment, dtype=float)
    b = np.asarray(noise_per_gate, dtype=float)

    def on(l):
        return 1.0 - (1.0 - gate_eff * -np.expm1(-l)) * np.exp(-b)

    c_ok, c_bad, c_x = on(lam * (1 - e) / 2), on(lam * e / 2), on(lam / 4)
    none_z = (1 - c_ok) * (1 - c_bad)
    none_x = (1 - c_x) ** 2
    gain = 1 - none_z * none_x
    both = (1 - none_z) * (1 - none_x)
    sifted = (1 - none_z) * none_x + both / 2
    errors = none_x * (c_bad * (1 - c_ok) + c_ok * c_bad / 2) + both / 4
    cs = (c_ok, c_bad, c_x, c_x)
    none = none_z * none_x
    single = sum(cs[j] * np.prod([1 - cs[k] for k in range(4) if k != j], axis=0) for j in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        qber = np.where(sifted > 0, errors / sifted, 0.0)
    return {"gain": gain, "sifted": sifted, "errors": errors, "qber": qber, "double_click": 1 - none - single}
