"""Decoy-state parameter estimation and the finite-key secret key length (three-intensity BB84).

Input: the sifted count table of one pass (:class:`DecoyCounts`): per basis ``B ∈ {Z, X}`` and
intensity ``k`` the matched-basis detections ``n[B, k]`` and their errors ``m[B, k]``, and the pulses
emitted per intensity. :func:`estimate` returns a :class:`KeyEstimate`: lower bounds on the vacuum
and single-photon events in the key (``s0``, ``s1``), an upper bound ``φ`` on their phase-error
rate, the key length ``ℓ``, where the bits go, and the ε budget. Three methods:

``"lim2014"``
    Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014): Hoeffding widening, their Eqs. (2)–(5)
    for ``s0, s1, v1, φ`` with their ``γ``, and Eq. (1)
    ``ℓ = ⌊s0 + s1 − s1·h(φ) − λ_EC − 6 log2(21/ε_sec) − log2(2/ε_cor)⌋``, run once per key basis
    with half of the secrecy budget each. Caveat: ``γ`` is not a valid tail bound when the test
    basis has few single-photon errors (``docs/finite-key.md`` shows a counterexample).
``"chernoff"`` (recommended)
    The same decoy inequalities (plus the signal–vacuum pair for ``v1``) with each count widened by
    the Chernoff–Hoeffding bound inverted for its expected value (Chernoff, Ann. Math. Stat. 23,
    493 (1952); Hoeffding, JASA 58, 13 (1963), Thm. 1; the multiplicative form is Yin et al.,
    Sci. Rep. 10, 14312 (2020)), an exact binomial random-sampling bound on the phase errors, and a
    composable ε budget: the decoy bounds (classical photon-number events) add linearly, the
    phase-error sampling fails with ≤ ε_s²/2 for smoothing ε_s, ``ε_sec = δ_decoy + 2ε_s + ε_PA``
    (+ 2ε_cor when error counts come out of error correction).
``"paper2017"``
    The paper-era analysis (Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Sec. VI; GLLP): Gaussian
    widening of each count by ``u_α`` standard deviations and ``ℓ = N_μ Q1 [1 − h(e1)] − λ_EC``.
    Not composable; it exists to compare with the 300,939 bits of Liao et al., Nature 549, 43 (2017).

Key sets. ``key_intensities="signal"`` (default; what :mod:`satqkd.postprocess.sifting` does): the
key is the sifted signal-intensity bits of both bases, decoy and vacuum bits are disclosed in full;
the signal share of the single-photon (vacuum) events is kept with a binomial bound.
``"all"``: every sifted bit of the key basis is key (Lim et al.'s protocol).

Symmetric BB84: both bases give key. The key from basis ``B`` takes its phase-error bound from the
*other* basis ``B̄`` (decoy bound on the single-photon errors ``v1`` of ``B̄``). With ``leak_ec_bits``
a number, both bases form one key block (one error correction, one privacy amplification); with a
mapping ``{"Z": …, "X": …}`` each basis is its own block with its own ε share.

Key sets (``key_intensities``): ``"signal"``, ``"signal+decoy"`` (vacuum bits disclosed) or ``"all"``.

Intensity band ``μ_k (1 ± δ)`` (``DecoyCounts.intensity_fluctuation``; ``intensity_model``):

``"fixed_offset"``
    one fixed unknown intensity per class for the pass: the extractable entropy is minimised over the
    box (grid with corners, then zoomed grids), all bounds evaluated at the same candidate intensities;
``"per_pulse"``
    any intensity per pulse in the band, possibly known to Eve (independent of the class choice): the
    class probabilities given the photon number are bounded per pulse (:func:`label_probability_bounds`)
    and the weight-form decoy bounds (:func:`decoy_bounds_weights`) use the intervals;
``"iid_uniform"``
    an independent ``U[−δ, δ]`` draw per pulse, unknown to Eve: Poisson-mixture class states
    (:func:`poisson_mixture_weights`), exact class probabilities.

``decoy_statistics="joint"`` adds one Bernstein bound on the single-photon combination of counts
(:func:`joint_linear_bound`). The keyword defaults of :func:`estimate` are the historical ones
(signal / fixed_offset / per_count); the mission configuration's ``[security]`` defaults are
signal+decoy / per_pulse / joint (``docs/finite-key.md`` §7, §10 for the assumptions of each).

Example (expected counts of the 2016-12-19 pass under the Ma et al. model)::

    >>> c = expected_decoy_counts([1.365e10, 6.825e9, 6.825e9], eta=3.013e-4, y0=3.663e-6,
    ...                           e_d=0.00357, intensity_fluctuation=0.05)
    >>> leak = 1.05 * binary_entropy(0.011) * c.n[:, 0].sum()
    >>> r = estimate(c, "chernoff", eps_sec=1e-9 - 1e-12, eps_cor=1e-12, leak_ec_bits=leak)
    >>> 340_000 < r.key_length < 360_000
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import special, stats

__all__ = [
    "ABORT_LENGTH",
    "ABORT_PHASE",
    "ABORT_QBER",
    "ABORT_S1",
    "ABORT_V1",
    "BASES",
    "INTENSITY_MODELS",
    "KEY_INTENSITY_INDICES",
    "KEY_SETS",
    "METHODS",
    "DecoyCounts",
    "KeyEstimate",
    "estimate",
    "expected_decoy_counts",
    "binary_entropy",
    "hoeffding_delta",
    "lim_gamma",
    "chernoff_expected_bounds",
    "binomial_lower_bound",
    "sampling_phase_error_bound",
    "decoy_yield_bounds",
    "photon_number_weight",
    "label_probability_bounds",
    "poisson_mixture_weights",
    "decoy_bounds_weights",
    "bernstein_deviation",
    "joint_linear_bound",
    "DECOY_STATISTICS",
]

BASES = ("Z", "X")
METHODS = ("lim2014", "chernoff", "paper2017")
#: which sifted bits are key: signal only, signal + decoy, or every intensity (Lim et al. 2014)
KEY_SETS = ("signal", "signal+decoy", "all")
_KEY_SETS = KEY_SETS
#: how the intensity band μ_k(1 ± δ) enters (docs/finite-key.md §7)
INTENSITY_MODELS = ("fixed_offset", "per_pulse", "iid_uniform")
#: the key intensities (indices) of each key set
#: per_count: every count widened on its own (Chernoff); joint: one Bernstein bound on the s1 combination in addition
DECOY_STATISTICS = ("per_count", "joint")
KEY_INTENSITY_INDICES = {"signal": (0,), "signal+decoy": (0, 1), "all": (0, 1, 2)}

Method = Literal["lim2014", "chernoff", "paper2017"]

ABORT_S1 = "single-photon lower bound is not positive"
ABORT_PHASE = "phase error bound ≥ 0.5"
ABORT_QBER = "QBER above threshold"
ABORT_V1 = "decoy statistics inconsistent: single-photon error upper bound is negative"
ABORT_LENGTH = "no positive key length: the finite-size costs exceed the extractable entropy"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def binary_entropy(p):
    """Binary entropy ``h(p) = −p log2 p − (1−p) log2(1−p)`` in bits, vectorised, ``h(0) = h(1) = 0``.

    Raises ``ValueError`` if any ``p`` lies outside [0, 1] (or is NaN).
    """
    q = np.asarray(p, dtype=float)
    if np.any(~((q >= 0.0) & (q <= 1.0))):
        raise ValueError(f"binary_entropy: p must lie in [0, 1], got {p!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -special.xlogy(q, q) - special.xlog1py(1.0 - q, -q)
    h = h / math.log(2.0)
    return float(h) if h.ndim == 0 else h


def hoeffding_delta(n, eps):
    """One-sided Hoeffding deviation ``sqrt(n/2 · ln(1/ε))`` for a sum of ``n`` independent [0, 1] terms.

    ``P(X − E X ≥ δ) ≤ exp(−2δ²/n) = ε`` (Hoeffding, JASA 58, 13 (1963), Thm. 2). Lim et al. (2014)
    use it with ``n = n_X`` (all key-basis detections) and ``ε = ε_sec/21``.
    """
    eps = _check_eps(eps, "eps")
    n = np.asarray(n, dtype=float)
    if np.any(n < 0):
        raise ValueError(f"hoeffding_delta: n must be ≥ 0, got {n!r}")
    d = np.sqrt(n / 2.0 * math.log(1.0 / eps))
    return float(d) if d.ndim == 0 else d


def lim_gamma(a, b, c, d):
    """Lim et al. (2014), after Eq. (5): ``γ(a, b, c, d)``, the random-sampling correction.

    ``γ = sqrt( (c+d)(1−b)b / (c d ln 2) · log2( (c+d)/(c d (1−b) b) · 21²/a² ) )`` with ``a = ε_sec``,
    ``b`` the test-basis single-photon error rate, ``c`` the test and ``d`` the key single-photon
    counts. Defined for ``0 < b < 1``; raises ``ValueError`` otherwise (it tends to 0 as ``b → 0``,
    which is not a valid tail bound — see ``docs/finite-key.md``).
    """
    if not (0.0 < b < 1.0):
        raise ValueError(f"lim_gamma: b must lie in (0, 1), got {b!r}")
    if not (c > 0 and d > 0):
        raise ValueError(f"lim_gamma: c and d must be > 0, got c={c!r}, d={d!r}")
    _check_eps(a, "a")
    arg = (c + d) / (c * d * (1.0 - b) * b) * 21.0**2 / a**2
    val = (c + d) * (1.0 - b) * b / (c * d * math.log(2.0)) * math.log2(arg)
    return math.sqrt(max(val, 0.0))


def _bisect(fun, lo, hi, iters: int = 200):
    """Vectorised bisection for increasing ``fun`` with ``fun(lo) ≤ 0 ≤ fun(hi)``; returns (lo, hi) brackets."""
    lo = np.array(lo, dtype=float)
    hi = np.array(hi, dtype=float)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = fun(mid) > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
        if np.all(hi - lo <= 1e-15 * np.maximum(1.0, np.abs(hi))):
            break
    return lo, hi


def chernoff_expected_bounds(x, eps_lower: float, eps_upper: float | None = None, trials=None):
    """Bounds on the expected value ``E`` of a sum of independent Bernoulli variables from its observed value ``x``.

    Exact multiplicative Chernoff bound (Chernoff, Ann. Math. Stat. 23, 493 (1952); the form used by
    Yin et al., Sci. Rep. 10, 14312 (2020)): for ``a > E``, ``P(X ≥ a) ≤ exp(−D(a, E))`` and for
    ``a < E``, ``P(X ≤ a) ≤ exp(−D(a, E))``, ``D(a, E) = a ln(a/E) − a + E``
    ( = ``−E ln[e^δ/(1+δ)^{1+δ}]`` with ``a = (1+δ)E``). With ``trials = n`` (the number of
    Bernoulli terms, known) the tighter Chernoff–Hoeffding form ``D = n·KL(a/n ‖ E/n)`` is used
    (Hoeffding, JASA 58, 13 (1963), Thm. 1; valid for non-identical terms with mean ``E/n``).
    Inverting (Neyman construction; ``D`` is monotone in ``E`` on each side of ``a``)::

        E_L < x solves D(x, E_L) = ln(1/ε_lower)      (E_L = 0 if x = 0 or no solution)
        E_U > x solves D(x, E_U) = ln(1/ε_upper)      (E_U = min(n, …); ln(1/ε) for x = 0 without n)

    so that ``P(E < E_L) ≤ ε_lower`` and ``P(E > E_U) ≤ ε_upper`` whatever ``E`` is. Without
    ``trials`` this equals Yin et al.'s ``x/(1+δ1)``, ``x/(1−δ2)``. Vectorised; rounded outward.
    """
    eps_upper = eps_lower if eps_upper is None else eps_upper
    bl = math.log(1.0 / _check_eps(eps_lower, "eps_lower"))
    bu = math.log(1.0 / _check_eps(eps_upper, "eps_upper"))
    x = np.asarray(x, dtype=float)
    if np.any(~(x >= 0)):
        raise ValueError(f"chernoff_expected_bounds: x must be ≥ 0, got {x!r}")
    if trials is None:
        xs = np.where(x > 0, x, 1.0)
        # u = ln(E/x): D = x·(e^u − 1 − u)
        tl = bl / xs
        tu = bu / xs
        _, hi = _bisect(lambda v: np.expm1(-v) + v - tl, np.zeros_like(xs), tl + 1.0)  # v = −u ≥ 0, increasing
        _, hi2 = _bisect(lambda u: np.expm1(u) - u - tu, np.zeros_like(xs), np.log1p(tu) + 1.0)
        e_lo = np.where(x > 0, xs * np.exp(-hi) * (1 - 1e-12), 0.0)
        e_hi = np.where(x > 0, xs * np.exp(hi2), bu) * (1 + 1e-12)
    else:
        n = np.asarray(trials, dtype=float) * np.ones_like(x)
        if np.any(~(n >= x)) or np.any(n <= 0):
            raise ValueError(f"chernoff_expected_bounds: trials must be > 0 and ≥ x, got {trials!r}")
        a = np.clip(x / n, 0.0, 1.0)
        # lower: r in [0, a], f(r) = n·KL(a‖r) − β is decreasing in r → bisect on −f
        at0 = np.where(a > 0, np.inf, 0.0)
        lo, _ = _bisect(lambda r: -(n * _kl_bern(a, np.maximum(r, 1e-300)) - bl), np.zeros_like(a), a)
        e_lo = np.where((a > 0) & (at0 > bl), n * lo * (1 - 1e-12), 0.0)
        # upper: r in [a, 1], f(r) increasing; if f(1) ≤ β (or a = 1) the bound is n
        f1 = np.where(a < 1, n * _kl_bern(a, np.full_like(a, 1.0 - 1e-300)), 0.0)
        _, hi = _bisect(lambda r: n * _kl_bern(a, np.minimum(r, 1.0 - 1e-16)) - bu, a, np.ones_like(a))
        e_hi = np.where((a < 1) & (f1 > bu), np.minimum(n * hi * (1 + 1e-12), n), n)
    if e_lo.ndim == 0:
        return float(e_lo), float(e_hi)
    return e_lo, e_hi


def _kl_bern(a, p):
    """Binary relative entropy D(a‖p) in nats (vectorised; a, p in [0, 1])."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return special.xlogy(a, a / p) + special.xlogy(1.0 - a, (1.0 - a) / (1.0 - p))


def binomial_lower_bound(trials, p, eps):
    """Lower confidence bound on a Binomial(``trials``, ``p``) outcome: ``P(X < L) ≤ ε``.

    Chernoff–Hoeffding (Hoeffding 1963, Thm. 1): ``P(X ≤ a) ≤ exp(−n·D(a/n ‖ p))`` for ``a ≤ np``;
    ``L`` solves ``n·D(L/n ‖ p) = ln(1/ε)`` below the mean (0 if none). ``L`` is increasing in
    ``trials`` and ``p``, so a lower bound on ``trials`` may be plugged in. Used to keep only the
    signal-intensity share of the single-photon (vacuum) events, whose intensity labels are
    independent draws with ``p = p_{μ1|n}``. Vectorised.
    """
    beta = math.log(1.0 / _check_eps(eps, "eps"))
    n = np.asarray(trials, dtype=float)
    p = np.asarray(p, dtype=float) * np.ones_like(n)
    if np.any(~((p > 0) & (p <= 1))):
        raise ValueError(f"binomial_lower_bound: p must lie in (0, 1], got {p!r}")
    npos = np.maximum(n, 1e-300)
    full = p >= 1.0
    pc = np.where(full, 0.5, p)
    # f(r) = n·D(r‖p) − β is decreasing in r on [0, p]; find the root r* and return n·r*
    at0 = n * (-np.log1p(-pc))  # n·D(0‖p)
    lo, hi = _bisect(lambda r: -(npos * _kl_bern(r, pc) - beta), np.zeros_like(n), pc)
    r = np.where(at0 <= beta, 0.0, lo)
    out = np.where(n > 0, np.where(full, n, n * r * (1 - 1e-12)), 0.0)
    return float(out) if out.ndim == 0 else out


def sampling_phase_error_bound(v, q, eps):
    """Upper bound on the phase errors ``W`` of the key's single-photon events from the test errors ``v``.

    Every sifted single-photon event is, independently of its (virtual) phase-error bit, a test
    event with probability ``q`` or a key event otherwise (basis and intensity labels are random and
    unknown to Eve; basis-independent detection). Given the total ``M = V + W`` of phase errors
    among test and key events, ``V ~ Binomial(M, q)``. Neyman construction:
    ``M_U(v) = max{M : P(Binomial(M, q) ≤ v) > ε}`` gives ``P(M > M_U(V)) ≤ ε`` for every ``M``, and
    ``W ≤ M_U(V) − V``. ``M_U(v) − v`` is non-decreasing in ``v`` (``P(Bin(M+1) ≤ v+1) ≥ P(Bin(M) ≤ v)``),
    so an upper bound ``v ≥ V`` may be used. Exact binomial tail (regularised incomplete beta).
    Vectorised over ``v`` and ``q``; returns ``W_U`` (integer counts, as float array or int).
    """
    _check_eps(eps, "eps")
    v = np.asarray(v, dtype=float)
    q = np.asarray(q, dtype=float) * np.ones_like(v)
    if np.any(~((q > 0) & (q < 1))):
        raise ValueError(f"sampling_phase_error_bound: q must lie in (0, 1), got {q!r}")
    if np.any(~(v >= 0)):
        raise ValueError(f"sampling_phase_error_bound: v must be ≥ 0 and finite, got {v!r}")
    vi = np.floor(v + 1e-9)

    def ok(M):  # P(Bin(M, q) ≤ vi) > eps   (always true for M ≤ vi); P(X ≤ k) = I_{1−q}(M − k, k + 1)
        with np.errstate(invalid="ignore"):
            tail = special.betainc(np.maximum(M - vi, 1.0), vi + 1.0, 1.0 - q)
        return (M <= vi) | (tail > eps)

    lo = vi.copy()
    hi = vi + np.maximum(16.0, vi)
    grow = ok(hi)
    while np.any(grow):
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, hi + 2.0 * (hi - vi), hi)
        grow = ok(hi)
    while np.any(hi - lo > 1):
        mid = np.floor(0.5 * (lo + hi))
        good = ok(mid)
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid)
    w = lo - vi
    return int(w) if w.ndim == 0 else w


def photon_number_weight(n: int, mu, p):
    """``τ_n = Σ_k p_k e^{−μ_k} μ_k^n / n!`` (Lim et al. 2014, after Eq. (2)); ``mu`` may be (G, k)."""
    mu = np.asarray(mu, dtype=float)
    p = np.asarray(p, dtype=float)
    return np.sum(p * np.exp(-mu) * mu**n, axis=-1) / math.factorial(n)


def decoy_yield_bounds(mu, n_lo, n_hi, m_lo=None, m_hi=None, scale=None, error_pairs=((1, 2),)):
    """The decoy inequalities of Lim et al. (2014), Eqs. (2)–(4), in "yield" units.

    With ``N±_k = e^{μ_k}·scale_k·n±_k`` (``scale_k = 1/p_k`` for Lim's counts, then
    ``N*_k = Σ_n μ_k^n/n! · s_n/τ_n``; ``scale_k = 1/N_k`` for gains, then ``N*_k = Σ_n μ_k^n/n! · Y_n``):

    - vacuum ``y0 ≥ (μ2 N−_3 − μ3 N+_2)/(μ2 − μ3)``                                   (Eq. 2: s0 = τ0·y0)
    - single photon ``y1 ≥ μ1 [N−_2 − N+_3 − (μ2²−μ3²)/μ1² (N+_1 − y0)] / [μ1(μ2−μ3) − μ2² + μ3²]`` (Eq. 3)
    - single-photon errors ``z1 ≤ (M+_a − M−_b)/(μ_a − μ_b)`` for each pair ``(a, b)`` of
      ``error_pairs`` (0-based, ``μ_a > μ_b``), the minimum is returned (Eq. 4 is the pair (1, 2),
      i.e. decoy–vacuum; it follows from ``M*_a − M*_b = z1(μ_a − μ_b) + Σ_{n≥2} z_n(μ_a^n − μ_b^n)/n!``
      with every term ≥ 0, so any pair gives a valid bound).

    ``y0`` is clipped at 0 before entering ``y1`` (the true ``y0`` is ≥ 0, so this stays a valid
    bound). ``mu`` has shape (3,) or (G, 3); returns ``(y0, y1, z1)`` as floats or (G,) arrays
    (``z1`` is NaN without error counts). Requires μ1 > μ2 + μ3, μ2 > μ3 ≥ 0.
    """
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    scale = np.ones(3) if scale is None else np.asarray(scale, dtype=float)
    m1, m2, m3 = mu[:, 0], mu[:, 1], mu[:, 2]
    e = np.exp(mu) * scale
    Nl = e * np.asarray(n_lo, dtype=float)
    Nh = e * np.asarray(n_hi, dtype=float)
    y0 = (m2 * Nl[:, 2] - m3 * Nh[:, 1]) / (m2 - m3)
    y0c = np.maximum(y0, 0.0)
    y1 = m1 * (Nl[:, 1] - Nh[:, 2] - (m2**2 - m3**2) / m1**2 * (Nh[:, 0] - y0c)) / (m1 * (m2 - m3) - m2**2 + m3**2)
    if m_lo is None:
        z1 = np.full_like(y0, np.nan)
    else:
        Ml = e * np.asarray(m_lo, dtype=float)
        Mh = e * np.asarray(m_hi, dtype=float)
        z1 = np.full_like(y0, np.inf)
        for a, b in error_pairs:
            z1 = np.minimum(z1, (Mh[:, a] - Ml[:, b]) / (mu[:, a] - mu[:, b]))
    if y0.size == 1:
        return float(y0[0]), float(y1[0]), float(z1[0])
    return y0, y1, z1


def poisson_mixture_weights(mu, delta: float, n_max: int) -> np.ndarray:
    """Photon-number distribution ``P(n|k)`` of a Poisson source whose mean is ``μ_k(1 + δ_j)`` with
    ``δ_j ~ U[−δ, +δ]`` drawn independently for every pulse, shape ``(n_max + 1, K)``.

    ``P(n|k) = (1/(b − a)) ∫_a^b e^{−x} x^n/n! dx = [P(n+1, b) − P(n+1, a)]/(b − a)``,
    ``a = μ_k(1 − δ)``, ``b = μ_k(1 + δ)``, ``P`` the regularised lower incomplete gamma function
    (``d/dx P(n+1, x) = e^{−x} x^n/n!``). ``δ = 0`` (or ``μ_k = 0``) gives the Poisson law. This is
    the state of a phase-randomised pulse of class ``k`` averaged over a fluctuation that is
    independent pulse to pulse and unknown to Eve: a Fock-diagonal class state ``Σ_n a_n^k |n⟩⟨n|``
    with known coefficients, the setting of the general decoy argument (cf. Wang et al.,
    arXiv:0802.3177, on class states that differ from ideal Poissonians).
    """
    mu = np.asarray(mu, dtype=float)
    n = np.arange(int(n_max) + 1, dtype=float)[:, None]
    pois = stats.poisson.pmf(n, mu[None, :])
    if delta == 0.0:
        return pois
    a, b = mu * (1.0 - delta), mu * (1.0 + delta)
    width = np.where(mu > 0, b - a, 1.0)
    mix = (special.gammainc(n + 1.0, b[None, :]) - special.gammainc(n + 1.0, a[None, :])) / width[None, :]
    return np.where(mu[None, :] > 0, np.clip(mix, 0.0, None), pois)


def _pois_range(n: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min and max of ``e^{−x} x^n/n!`` over ``x ∈ [a, b]`` (unimodal in x with its mode at x = n)."""
    pa, pb = stats.poisson.pmf(n, a), stats.poisson.pmf(n, b)
    pmode = stats.poisson.pmf(n, np.clip(n, a, b))
    return np.minimum(pa, pb), np.maximum(pmode, np.maximum(pa, pb))


@dataclass(frozen=True)
class LabelProbabilities:
    """Bounds ``L ≤ P(class k | n photons) ≤ U`` for every detected pulse, ``(n_max + 1, 3)`` arrays, and
    ``ratio = sup_{n ≥ 2} U_{decoy|n} / L_{signal|n}`` (all n, the tail bounded analytically)."""

    lower: np.ndarray
    upper: np.ndarray
    ratio: float

    def key_share(self, n: int, key_idx) -> tuple[float, float]:
        """Lower and upper bounds on ``P(class ∈ key set | n photons)`` (both valid forms, the tighter one)."""
        out = [k for k in range(3) if k not in key_idx]
        lo = max(float(sum(self.lower[n, k] for k in key_idx)), 1.0 - float(sum(self.upper[n, k] for k in out)))
        hi = min(float(sum(self.upper[n, k] for k in key_idx)), 1.0 - float(sum(self.lower[n, k] for k in out)))
        return min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)


def label_probability_bounds(mu, p, delta: float, model: str, n_max: int = 40) -> LabelProbabilities:
    """Conditional class probabilities of a detected pulse with ``n`` photons, for an intensity band ``μ_k(1 ± δ)``.

    ``"iid_uniform"``: each pulse's fluctuation is an independent ``U[−δ, δ]`` draw, unknown to Eve;
    the class state is the mixture :func:`poisson_mixture_weights` and ``P(k|n) = p_k P(n|k)/τ_n``
    exactly (``L = U``).

    ``"per_pulse"``: every pulse has *some* mean photon numbers ``x_k ∈ μ_k(1 ± δ)`` (any process,
    possibly known to Eve, but independent of the class choice of the pulse):
    ``P(k|n, x) = p_k π_n(x_k)/Σ_k' p_k' π_n(x_k')``, ``π_n(x) = e^{−x} x^n/n!``. It is increasing in
    ``π_n(x_k)`` and decreasing in each ``π_n(x_k')``, so its range over the band is attained with each
    ``π_n`` at its own extreme (:func:`_pois_range`): a per-pulse worst case in the approach of Wang,
    Peng, Zhang, Yang, Pan, arXiv:0802.3177 (PRA 77, 042311 (2008)) and Wang, Yang, Peng, Pan,
    arXiv:0902.4660 (PRA 79, 052310 (2009)) — bounds that use only the range of each pulse's state
    parameters — for sources whose intensity errors are bounded but otherwise unknown.

    ``ratio``: ``sup_{n≥2} U_{decoy|n}/L_{signal|n}``, computed up to ``n_max`` and beyond it from the
    envelope ``U_{decoy|n} ≤ r_n = (p2/p1) e^{a1−b2} (b2/a1)^n`` (``a, b`` the band edges; valid for
    ``n ≥ b1``, with a vacuum third class ``L_{signal|n} = 1 − U_{decoy|n}``), which decreases in n:
    the tail contributes ``r/(1 − r)`` at ``n_max + 1``. Requires the third intensity to be vacuum.
    """
    mu = np.asarray(mu, dtype=float)
    p = np.asarray(p, dtype=float)
    if mu.shape != (3,) or mu[2] != 0.0:
        raise ValueError(f"intensity model {model!r} needs three intensities with a vacuum third one, got {tuple(mu)}")
    if model not in ("iid_uniform", "per_pulse"):
        raise ValueError(f"label_probability_bounds: model must be 'iid_uniform' or 'per_pulse', got {model!r}")
    a, b = mu * (1.0 - delta), mu * (1.0 + delta)
    n_max = max(int(n_max), int(math.ceil(b[0])) + 2)
    nn = np.arange(n_max + 1, dtype=float)[:, None]
    if model == "iid_uniform":
        w = p[None, :] * poisson_mixture_weights(mu, delta, n_max)
        cond = w / w.sum(axis=1, keepdims=True)
        lower = upper = cond
    else:
        lo, hi = _pois_range(nn, a[None, :], b[None, :])
        lower = np.empty((n_max + 1, 3))
        upper = np.empty((n_max + 1, 3))
        for k in range(3):
            others = [j for j in range(3) if j != k]
            lo_o = sum(p[j] * lo[:, j] for j in others)
            hi_o = sum(p[j] * hi[:, j] for j in others)
            with np.errstate(invalid="ignore", divide="ignore"):
                lower[:, k] = np.where(lo[:, k] > 0, p[k] * lo[:, k] / (p[k] * lo[:, k] + hi_o), 0.0)
                upper[:, k] = np.where(hi[:, k] > 0, p[k] * hi[:, k] / (p[k] * hi[:, k] + lo_o), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_exact = np.where(lower[2:, 0] > 0, upper[2:, 1] / lower[2:, 0], np.inf)
    r_env = (p[1] / p[0]) * math.exp(a[0] - b[1]) * (b[1] / a[0]) ** (n_max + 1)
    if not (b[1] < a[0] and r_env < 1.0):
        raise ValueError("intensity band too wide: the decoy band must lie below the signal band")
    ratio = float(max(np.max(r_exact), r_env / (1.0 - r_env)))
    return LabelProbabilities(lower=np.asarray(lower), upper=np.asarray(upper), ratio=ratio)


def decoy_bounds_weights(n_lo, n_hi, m_lo, m_hi, w: LabelProbabilities, error_pairs=((1, 2), (0, 2))):
    """Decoy bounds for class probabilities known only within ``[L, U]`` (vacuum third class).

    Counts are *expected* numbers of detections of each class (``n*_k = Σ_j P(k | n_j)`` over the
    detections, Lim et al. 2014 §"Parameter estimation"), widened to ``[n_lo, n_hi]``. With
    ``s_n`` the detections with n photons and ``c_{k,n}`` their share of ``n*_k``,
    ``s_n L_{k|n} ≤ c_{k,n} ≤ s_n U_{k|n}``, and no photon pulse is vacuum-class:

    - vacuum: ``n*_3 = c_{3,0}`` ⇒ ``s0 ∈ [n_lo,3/U_{3|0}, n_hi,3/L_{3|0}]``;
    - single photons: ``Σ_{n≥2} c_{2,n} ≤ R Σ_{n≥2} c_{1,n}`` with ``R = sup U_{2|n}/L_{1|n}`` gives
      ``n*_2 ≤ s0 (U_{2|0} − R L_{1|0}) + s1 (U_{2|1} − R L_{1|1}) + R n*_1`` ⇒
      ``s1 ≥ [n_lo,2 − R n_hi,1 − max_{s0} s0 (U_{2|0} − R L_{1|0})]/(U_{2|1} − R L_{1|1})``;
      for Poisson weights this is Lim et al.'s Eq. (3) with μ3 = 0 (up to using one s0 for both
      vacuum terms);
    - single-photon errors ``w1`` from error counts: ``m*_a ≥ w0 L_{a|0} + w1 L_{a|1}`` and
      ``w0 ≥ m_lo,3/U_{3|0}`` ⇒ ``w1 ≤ (m_hi,a − L_{a|0} m_lo,3/U_{3|0})/L_{a|1}`` for each
      ``(a, vacuum)`` pair of ``error_pairs`` (0-based class indices as in :func:`decoy_yield_bounds`:
      ``(0, 2)`` signal–vacuum, ``(1, 2)`` decoy–vacuum); the minimum is returned (Lim Eq. (4) in
      weight form).

    Returns ``(s0_lo, s0_hi, s1_lo, w1_hi)`` (``w1_hi`` NaN without error counts; ``s1_lo = −inf``
    if the denominator is not positive, i.e. the band is too wide for a bound).
    """
    L, U, R = w.lower, w.upper, w.ratio
    nl = np.asarray(n_lo, dtype=float)
    nh = np.asarray(n_hi, dtype=float)
    s0_lo = nl[2] / U[0, 2]
    s0_hi = nh[2] / L[0, 2] if L[0, 2] > 0 else np.inf
    c0 = U[0, 1] - R * L[0, 0]
    worst = s0_hi * c0 if c0 > 0 else s0_lo * c0
    den = U[1, 1] - R * L[1, 0]
    s1_lo = (nl[1] - R * nh[0] - worst) / den if den > 0 else -np.inf
    if m_lo is None:
        w1 = np.nan
    else:
        ml = np.asarray(m_lo, dtype=float)
        mh = np.asarray(m_hi, dtype=float)
        w0_lo = ml[2] / U[0, 2]
        w1 = np.inf
        for a_, b_ in error_pairs:
            if b_ != 2:
                raise ValueError("decoy_bounds_weights: error pairs must end with the vacuum class (index 2)")
            w1 = min(w1, (mh[a_] - L[0, a_] * w0_lo) / L[1, a_])
    return float(s0_lo), float(s0_hi), float(s1_lo), float(w1)


def bernstein_deviation(variance_bound: float, range_bound: float, eps: float) -> float:
    """One-sided Bernstein deviation: ``t`` with ``exp(−t²/(2(V + b t/3))) = ε``.

    For independent ``X_j`` with ``|X_j − E X_j| ≤ b`` and ``Σ Var X_j ≤ V``,
    ``P(Σ X_j − E Σ X_j ≥ t) ≤ exp(−t²/(2(V + b t/3)))`` and likewise for the lower tail (Bernstein's
    inequality; Boucheron, Lugosi, Massart, *Concentration Inequalities* (OUP 2013), Thm. 2.10 and
    Cor. 2.11). Solving the quadratic: ``t = β b/3 + sqrt((β b/3)² + 2 β V)``, ``β = ln(1/ε)``.
    """
    beta = math.log(1.0 / _check_eps(eps, "eps"))
    if not (variance_bound >= 0 and range_bound >= 0):
        raise ValueError(f"bernstein_deviation: V and b must be ≥ 0, got {variance_bound!r}, {range_bound!r}")
    c = beta * range_bound / 3.0
    return c + math.sqrt(c * c + 2.0 * beta * variance_bound)


def joint_linear_bound(coef, observed, upper, eps: float, side: str) -> float:
    """Bound on the expected value of one linear combination ``Λ = Σ_k a_k n*_k`` of class counts.

    Given the photon numbers (and whatever Eve knows), the class labels of the detections are
    independent, so ``Σ_k a_k n_k = Σ_j a_{k_j}`` is a sum of independent terms in
    ``[min a, max a]`` with mean ``Λ`` and ``Σ_j Var ≤ Σ_j E a_{k_j}² = Σ_k a_k² n*_k ≤ Σ_k a_k² n_k^U``
    (``upper``: valid upper bounds on the expected counts, whose failure probabilities are charged
    separately). Bernstein (:func:`bernstein_deviation`) then bounds ``Λ`` with one failure
    probability ``ε`` for the whole combination instead of one per count: the widths add in
    quadrature instead of linearly. ``side="lower"``: ``P(Λ < returned) ≤ ε``; ``"upper"`` likewise.
    """
    a = np.asarray(coef, dtype=float)
    x = float(np.dot(a, np.asarray(observed, dtype=float)))
    v = float(np.dot(a * a, np.asarray(upper, dtype=float)))
    b = float(a.max() - a.min())  # |a_{k_j} − E a_{k_j}| ≤ max a − min a
    t = bernstein_deviation(v, b, eps)
    if side == "lower":
        return x - t
    if side == "upper":
        return x + t
    raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")


def _check_eps(eps, name: str) -> float:
    e = float(eps)
    if not (0.0 < e < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {eps!r}")
    return e


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoyCounts:
    """Sifted decoy-state statistics of one pass (or block).

    ``n[b, k]``: matched-basis detections, basis ``b`` (0 = Z, 1 = X, like ``RawRecords.alice_basis``)
    and intensity ``k`` (signal, decoy, vacuum — ``INTENSITY_NAMES`` order); ``m[b, k]`` their
    errors; ``emitted[k]``: pulses sent with intensity ``k``. ``intensities`` ``(μ1, μ2, μ3)`` with
    μ1 > μ2 + μ3, μ2 > μ3 ≥ 0, chosen with ``probabilities``; ``intensity_fluctuation`` δ: the actual
    mean photon numbers lie anywhere in ``μ_k (1 ± δ)``. ``p_z_alice`` / ``p_z_bob``: probabilities of
    the Z basis at the transmitter and at Bob's (passive) beam splitter. Counts may be floats
    (expected values for planning); they must satisfy ``0 ≤ m ≤ n``.
    """

    n: np.ndarray
    m: np.ndarray
    emitted: np.ndarray
    intensities: tuple[float, ...] = (0.8, 0.1, 0.0)
    probabilities: tuple[float, ...] = (0.5, 0.25, 0.25)
    intensity_fluctuation: float = 0.0
    p_z_alice: float = 0.5
    p_z_bob: float = 0.5

    def __post_init__(self) -> None:
        n = np.asarray(self.n, dtype=float)
        m = np.asarray(self.m, dtype=float)
        em = np.asarray(self.emitted, dtype=float)
        mu = tuple(float(x) for x in self.intensities)
        p = tuple(float(x) for x in self.probabilities)
        if len(mu) != 3 or len(p) != 3:
            raise ValueError(
                f"intensities/probabilities: exactly 3 intensities (signal, decoy, vacuum) are supported, got {len(mu)} and {len(p)}"
            )
        if n.shape != (2, 3) or m.shape != (2, 3):
            raise ValueError(f"n and m must have shape (2, 3) [basis Z/X, intensity], got {n.shape} and {m.shape}")
        if em.shape != (3,):
            raise ValueError(f"emitted must have shape (3,), got {em.shape}")
        if not np.all(np.isfinite(n)) or np.any(n < 0):
            raise ValueError("n: counts must be finite and ≥ 0")
        if not np.all(np.isfinite(m)) or np.any(m < 0) or np.any(m > n):
            raise ValueError("m: error counts must be finite with 0 ≤ m ≤ n")
        if not np.all(np.isfinite(em)) or np.any(em <= 0):
            raise ValueError("emitted: pulses per intensity must be > 0")
        if not (mu[2] >= 0 and mu[1] > mu[2] and mu[0] > mu[1] + mu[2]):
            raise ValueError(f"intensities must satisfy μ1 > μ2 + μ3, μ2 > μ3 ≥ 0; got {mu}")
        if any(x <= 0 for x in p) or abs(sum(p) - 1.0) > 1e-9:
            raise ValueError(f"probabilities must be positive and sum to 1, got {p}")
        d = float(self.intensity_fluctuation)
        if not (0.0 <= d < 1.0):
            raise ValueError(f"intensity_fluctuation must lie in [0, 1), got {d}")
        if not (mu[0] * (1 - d) > (mu[1] + mu[2]) * (1 + d) and mu[1] * (1 - d) > mu[2] * (1 + d)):
            raise ValueError(
                f"intensity_fluctuation {d}: the band μ(1 ± δ) must keep μ1 > μ2 + μ3 and μ2 > μ3 for every corner"
            )
        for name in ("p_z_alice", "p_z_bob"):
            v = float(getattr(self, name))
            if not (0.0 < v < 1.0):
                raise ValueError(f"{name} must lie in (0, 1), got {v}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "emitted", em)
        object.__setattr__(self, "intensities", mu)
        object.__setattr__(self, "probabilities", p)
        object.__setattr__(self, "intensity_fluctuation", d)

    @classmethod
    def from_source(cls, n, m, emitted, source, *, p_z_alice: float = 0.5, p_z_bob: float = 0.5) -> "DecoyCounts":
        """Build from count tables and a ``SourceConfig``-like object (``intensities``, ``probabilities``, ``intensity_fluctuation``)."""
        return cls(
            n=n,
            m=m,
            emitted=emitted,
            intensities=tuple(source.intensities),
            probabilities=tuple(source.probabilities),
            intensity_fluctuation=float(source.intensity_fluctuation),
            p_z_alice=p_z_alice,
            p_z_bob=p_z_bob,
        )

    @property
    def qber(self) -> np.ndarray:
        """Error rate per (basis, intensity); NaN where ``n = 0``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.n > 0, self.m / np.where(self.n > 0, self.n, 1.0), np.nan)

    @property
    def basis_pair_probability(self) -> np.ndarray:
        """``(P(ZZ), P(XX))``: probability that a detection is sifted into Z / X."""
        return np.array([self.p_z_alice * self.p_z_bob, (1 - self.p_z_alice) * (1 - self.p_z_bob)])

    def __repr__(self) -> str:
        q = self.qber
        parts = []
        for b, name in enumerate(BASES):
            cells = ", ".join(f"{self.n[b, k]:,.0f} ({100 * q[b, k]:.2f} %)" for k in range(3))
            parts.append(f"{name}: {cells}")
        return (
            f"DecoyCounts(μ={self.intensities}, p={self.probabilities}, δ={self.intensity_fluctuation:g}; "
            f"sifted n (QBER) per intensity — {'; '.join(parts)}; emitted {', '.join(f'{x:.3e}' for x in self.emitted)})"
        )


def expected_decoy_counts(
    emitted,
    intensities=(0.8, 0.1, 0.0),
    probabilities=(0.5, 0.25, 0.25),
    *,
    eta: float,
    y0: float,
    e_d: float,
    e0: float = 0.5,
    intensity_fluctuation: float = 0.0,
    p_z_alice: float = 0.5,
    p_z_bob: float = 0.5,
) -> DecoyCounts:
    """Expected sifted counts under the channel model of Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005).

    Gain ``Q_μ = Y0 + 1 − e^{−ημ}`` and error gain ``E_μ Q_μ = e0·Y0 + e_d (1 − e^{−ημ})`` (their
    Eqs. (4)–(5); ``η`` the overall transmittance including detectors, ``Y0`` the background
    yield, ``e_d`` the misalignment). Sifting keeps a fraction ``P(ZZ)``/``P(XX)`` in each basis.
    For tests and planning; the true single-photon yield and error rate of this model are
    ``Y1 = Y0 + η − Y0·η`` and ``e1 = (e0·Y0 + e_d·η)/Y1``.
    """
    mu = np.asarray(intensities, dtype=float)
    em = np.asarray(emitted, dtype=float)
    q = y0 + 1.0 - np.exp(-eta * mu)
    eq = e0 * y0 + e_d * (1.0 - np.exp(-eta * mu))
    pb = np.array([p_z_alice * p_z_bob, (1 - p_z_alice) * (1 - p_z_bob)])
    n = pb[:, None] * (em * q)[None, :]
    m = pb[:, None] * (em * eq)[None, :]
    return DecoyCounts(
        n=n,
        m=m,
        emitted=em,
        intensities=tuple(mu),
        probabilities=tuple(probabilities),
        intensity_fluctuation=intensity_fluctuation,
        p_z_alice=p_z_alice,
        p_z_bob=p_z_bob,
    )


# --------------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEstimate:
    """Outcome of :func:`estimate`.

    Per key basis (keys ``"Z"``, ``"X"``; ``"Z+X"`` for ``paper2017``, which pools both):
    ``s0``/``s1`` lower bounds on the vacuum / single-photon events in the key,
    ``phase_error`` the upper bound ``φ`` on their phase-error rate, ``v1_test`` the upper bound on
    the single-photon errors of the test basis it came from, ``qber`` the key block's error rate.

    ``key_length`` ``ℓ`` (bits, ≥ 0; 0 when aborted). ``budget`` shows where the bits go.
    ``epsilon_parts`` lists the *additive* contributions to the total failure probability
    ``epsilon_total`` (= ``eps_sec + eps_cor`` requested). ``bound_failure_probabilities`` gives
    the failure probability of each statistical bound: for ``chernoff`` the decoy-state bounds sum
    to their ``epsilon_parts`` share, and each phase-error sampling bound gets ``≤ ε_s²/2`` of the
    smoothing share ``2ε_s``; for ``lim2014`` each is ``ε/21`` as in the paper.
    ``worst_case_intensities``: the intensities (within ``μ(1 ± δ)``) at which the extractable
    entropy is smallest, per key block. ``notes``: warnings about the regime of validity.
    """

    method: str
    key_intensities: str
    key_length: int
    abort_reason: str | None
    s0: dict[str, float]
    s1: dict[str, float]
    phase_error: dict[str, float]
    v1_test: dict[str, float]
    qber: dict[str, float]
    entropy_bits: float
    leak_ec_bits: float
    ev_tag_bits: float
    disclosure_bits: float
    pa_cost_bits: float
    extra_cost_bits: float
    epsilon_parts: dict[str, float]
    epsilon_total: float
    bound_failure_probabilities: dict[str, float]
    composable: bool
    worst_case_intensities: dict[str, tuple[float, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    intensity_model: str = "fixed_offset"
    assumptions: tuple[str, ...] = ()
    decoy_statistics: str = "per_count"

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def estimation_mode(self) -> str:
        """``method/key set/intensity model/statistics``, e.g. ``"chernoff/signal+decoy/per_pulse/joint"``."""
        return f"{self.method}/{self.key_intensities}/{self.intensity_model}/{self.decoy_statistics}"

    def as_dict(self) -> dict:
        """Plain-JSON view (``summary.json``): the mode, its assumptions, bounds, budget and ε parts."""
        return {
            "estimation_mode": self.estimation_mode,
            "estimation_assumptions": list(self.assumptions),
            "method": self.method,
            "key_intensities": self.key_intensities,
            "intensity_model": self.intensity_model,
            "decoy_statistics": self.decoy_statistics,
            "key_length": int(self.key_length),
            "abort_reason": self.abort_reason,
            "s0": dict(self.s0),
            "s1": dict(self.s1),
            "phase_error": dict(self.phase_error),
            "v1_test": dict(self.v1_test),
            "qber": dict(self.qber),
            "entropy_bits": float(self.entropy_bits),
            "budget": {k: float(v) for k, v in self.budget.items()},
            "epsilon_parts": {k: float(v) for k, v in self.epsilon_parts.items()},
            "epsilon_total": float(self.epsilon_total),
            "composable": bool(self.composable),
            "worst_case_intensities": {k: list(v) for k, v in self.worst_case_intensities.items()},
            "notes": list(self.notes),
        }

    @property
    def budget(self) -> dict[str, float]:
        """Where the bits go (signed; the entries sum to the key length before flooring)."""
        s0 = sum(self.s0.values()) if self.composable else 0.0  # the GLLP key of paper2017 has no vacuum term
        s1 = sum(self.s1.values())
        return {
            "vacuum events s0": s0,
            "single-photon events s1": s1,
            "phase-error entropy −Σ s1·h(φ)": self.entropy_bits - s0 - s1,
            "error correction −λ_EC": -self.leak_ec_bits,
            "error verification tag": -self.ev_tag_bits,
            "error-count disclosure": -self.disclosure_bits,
            "privacy amplification / smoothing (ε terms)": -self.pa_cost_bits,
            "authentication (extra cost)": -self.extra_cost_bits,
        }

    def __repr__(self) -> str:
        head = f"KeyEstimate({self.method}, key from {self.key_intensities}: ℓ = {self.key_length:,} bits"
        if self.abort_reason:
            head += f", ABORTED: {self.abort_reason}"
        per = "; ".join(
            f"{b}: s0 ≥ {self.s0[b]:,.0f}, s1 ≥ {self.s1[b]:,.0f}, φ ≤ {100 * self.phase_error[b]:.3f} %, QBER {100 * self.qber[b]:.3f} %"
            for b in self.s1
        )
        costs = (
            f"λ_EC {self.leak_ec_bits:,.0f}, EV {self.ev_tag_bits:,.0f}, disclosure {self.disclosure_bits:,.0f}, "
            f"ε-terms {self.pa_cost_bits:,.1f}, auth {self.extra_cost_bits:,.0f}"
        )
        eps = f"ε_total = {self.epsilon_total:.3e}" + ("" if self.composable else " (not composable)")
        return f"{head}; {per}; entropy {self.entropy_bits:,.0f}; costs: {costs}; {eps})"


# --------------------------------------------------------------------------------------------------
# worst case over the intensity box
# --------------------------------------------------------------------------------------------------


def _axes(mu, lo_f, hi_f, points):
    return [np.linspace(m * lf, m * hf, points) if m > 0 and hf > lf else np.array([m]) for m, lf, hf in zip(mu, lo_f, hi_f)]


def _grid(axes) -> np.ndarray:
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in mesh], axis=1)


def _box_min(fun, mu, delta: float, points: int, zooms: int = 3):
    """Minimum of ``fun`` ((G, 3) → (G,)) over the box ``μ_k (1 ± δ)`` (vacuum stays 0).

    Grid of ``points`` per free axis (corners included), then ``zooms`` finer grids around the best
    point. Values of ``+inf`` mark excluded points, NaN counts as ``−inf`` (never hides a worse case).
    Returns ``(value, argmin μ)``.
    """
    lo_f = np.full(3, 1.0 - delta)
    hi_f = np.full(3, 1.0 + delta)
    best_v, best_mu = np.inf, tuple(float(m) for m in mu)
    span = hi_f - lo_f
    lo, hi = lo_f.copy(), hi_f.copy()
    for z in range(zooms + 1):
        g = _grid(_axes(mu, lo, hi, points))
        vals = np.asarray(fun(g), dtype=float)
        vals = np.where(np.isnan(vals), -np.inf, vals)
        i = int(np.argmin(vals))
        if vals[i] < best_v or z == 0:
            best_v, best_mu = float(vals[i]), tuple(float(x) for x in g[i])
        if delta == 0 or not np.isfinite(best_v):
            break
        span = span * 4.0 / (points - 1)
        centre = np.array([bm / m if m > 0 else 1.0 for bm, m in zip(best_mu, mu)])
        lo = np.maximum(lo_f, centre - span / 2)
        hi = np.minimum(hi_f, centre + span / 2)
    return best_v, best_mu


def _lim_gamma_vec(a, b, c, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        arg = (c + d) / (c * d * (1.0 - b) * b) * 21.0**2 / a**2
        val = (c + d) * (1.0 - b) * b / (c * d * math.log(2.0)) * np.log2(arg)
    return np.sqrt(np.maximum(val, 0.0))


# --------------------------------------------------------------------------------------------------
# estimation
# --------------------------------------------------------------------------------------------------


#: assumptions of every composable mode (docs/finite-key.md §10)
ASSUMPTIONS_COMMON = (
    "phase-randomised weak coherent pulses: each class emits a Fock-diagonal state whose photon-number "
    "distribution does not depend on the basis or bit",
    "intensity, basis and bit of every pulse are chosen independently at random and unknown to Eve until sifting",
    "basis-independent detection (no efficiency mismatch between Bob's Z and X detectors); basis probabilities as given",
    "no side channels; error-correction leakage, tags and announced counts are charged as actually sent",
)
#: what each intensity model assumes about the band μ_k(1 ± δ)
ASSUMPTIONS_INTENSITY = {
    "fixed_offset": (
        "each class's mean photon number is one fixed unknown value in μ_k(1 ± δ) for the whole pass "
        "(worst case over the box); intensities that vary during the pass in a way Eve can learn are NOT covered",
    ),
    "per_pulse": (
        "every pulse's mean photon number lies in μ_k(1 ± δ) of its class; it may vary arbitrarily pulse to pulse or "
        "slice to slice and may be known to Eve, but is independent of the class, basis and bit choices (no "
        "pattern effects); per-pulse worst case of the class probabilities (Wang et al., arXiv:0802.3177, arXiv:0902.4660)",
    ),
    "iid_uniform": (
        "every pulse's fluctuation is an independent draw from the characterised distribution U[−δ, +δ], "
        "independent pulse to pulse, of the labels and of Eve (the class state is the Poisson mixture); "
        "NOT satisfied by fluctuations shared by many pulses (the simulator's per-slice draws), whose value Eve "
        "can learn from the photon statistics",
    ),
}
ASSUMPTIONS_KEY_SET = {
    "signal": ("key = sifted signal-intensity bits; decoy and vacuum bits are disclosed",),
    "signal+decoy": ("key = sifted signal- and decoy-intensity bits (one EC block); vacuum bits are disclosed",),
    "all": ("key = every sifted bit of both bases (Lim et al. 2014's key set)",),
}


#: per_pulse, iid_uniform and joint statistics use P(vacuum class | n ≥ 1) = 0 (docs/finite-key.md §7, §10)
ASSUMPTION_EMPTY_VACUUM = (
    "the vacuum class emits no photon (μ3 = 0 exactly, no fluctuation: P(vacuum | n ≥ 1) = 0); a vacuum "
    "state with a finite extinction ratio is NOT covered"
)


def _assumptions(key_set: str, model: str, joint: bool = False) -> tuple[str, ...]:
    vac = (ASSUMPTION_EMPTY_VACUUM,) if (model != "fixed_offset" or joint) else ()
    return ASSUMPTIONS_COMMON + ASSUMPTIONS_INTENSITY[model] + vac + ASSUMPTIONS_KEY_SET[key_set]


def _bound_names(key: str, method: str, key_set: str, mu3_zero: bool, joint: bool = False) -> list[str]:
    """Names of the classical (decoy-state) bounds behind the key of basis ``key`` (test = other basis)."""
    test = "X" if key == "Z" else "Z"
    names = [f"{key} key: n_{key},signal upper", f"{key} key: n_{key},decoy lower"]
    if not mu3_zero:
        names.append(f"{key} key: n_{key},decoy upper")
    names += [f"{key} key: n_{key},vacuum lower", f"{key} key: n_{key},vacuum upper"]
    if method == "chernoff":
        names.append(f"{key} key: m_{test},signal upper")
    names += [f"{key} key: m_{test},decoy upper", f"{key} key: m_{test},vacuum lower"]
    if key_set == "signal":
        names += [f"{key} key: signal share of single-photon events", f"{key} key: signal share of vacuum events"]
    elif key_set != "all":
        names += [f"{key} key: key-set share of single-photon events", f"{key} key: key-set share of vacuum events"]
    if joint:
        if mu3_zero:
            names.append(f"{key} key: n_{key},decoy upper (variance of the joint bound)")
        names.append(f"{key} key: joint bound on the s1 combination of n_{key}")
    return names


def estimate(
    counts: DecoyCounts,
    method: Method = "chernoff",
    eps_sec: float = 1e-9 - 1e-12,
    eps_cor: float = 1e-12,
    leak_ec_bits: float | Mapping[str, float] = 0.0,
    extra_cost_bits: float = 0.0,
    *,
    ev_tag_bits: int | Mapping[str, int] | None = None,
    qber_abort: float = 0.11,
    key_intensities: Literal["signal", "signal+decoy", "all"] = "signal",
    intensity_model: Literal["fixed_offset", "per_pulse", "iid_uniform"] = "fixed_offset",
    decoy_statistics: Literal["per_count", "joint"] = "per_count",
    grid_points: int = 21,
) -> KeyEstimate:
    """Decoy-state bounds and the secret key length of one pass. See the module docstring and ``docs/finite-key.md``.

    Parameters
    ----------
    counts
        The sifted count table (:class:`DecoyCounts`).
    method
        ``"lim2014"``, ``"chernoff"`` (recommended) or ``"paper2017"``.
    eps_sec, eps_cor
        Secrecy and correctness budgets; the result's ``epsilon_total ≤ eps_sec + eps_cor``.
        ``eps_cor`` is the collision probability of error verification over the whole key (split
        equally between the two EC blocks in per-basis mode).
    leak_ec_bits
        Bits actually disclosed by error correction. A number: one EC block holding the key bits
        of both bases (one privacy amplification). A mapping ``{"Z": λ_Z, "X": λ_X}``: one block
        per basis. For ``paper2017`` the total is used.
    extra_cost_bits
        Key consumed by authentication (or anything else), subtracted from the final key.
    ev_tag_bits
        Error-verification tag bits per EC block (a number, or a per-basis mapping). Default
        ``⌈log2(1/ε_cor,block)⌉``. In ``lim2014`` the paper's ``log2(2/ε_cor)`` is charged if larger.
    qber_abort
        Abort when the QBER of a key block exceeds this.
    key_intensities
        ``"signal"`` (key = signal-intensity sifted bits; decoy/vacuum disclosed), ``"signal+decoy"``
        (the vacuum bits are disclosed) or ``"all"`` (every sifted bit; Lim et al.'s protocol).
    intensity_model
        How the band ``μ_k(1 ± δ)`` enters (``docs/finite-key.md`` §7): ``"fixed_offset"`` (one
        unknown constant intensity per class in the band, worst case over the box),
        ``"per_pulse"`` (any intensity per pulse in the band, possibly known to Eve, independent of
        the class choice; per-pulse worst case of the class probabilities) or ``"iid_uniform"``
        (independent U[−δ, δ] draw per pulse, unknown to Eve: Poisson-mixture states). The last two
        need ``method="chernoff"`` and a vacuum third intensity.
    decoy_statistics
        ``"per_count"`` (each count widened on its own) or ``"joint"`` (additionally one Bernstein
        bound on the single-photon combination ``n_2 − R n_1 − a_3 n_3`` with its own ε share,
        :func:`joint_linear_bound`; the better of the two bounds is used). ``"joint"`` needs
        ``method="chernoff"`` and a vacuum third intensity.
    grid_points
        Grid points per intensity axis for the worst case over ``μ(1 ± δ)``.
    """
    if not isinstance(counts, DecoyCounts):
        raise ValueError(f"counts must be a DecoyCounts, got {type(counts).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if key_intensities not in _KEY_SETS:
        raise ValueError(f"key_intensities must be one of {_KEY_SETS}, got {key_intensities!r}")
    if intensity_model not in INTENSITY_MODELS:
        raise ValueError(f"intensity_model must be one of {INTENSITY_MODELS}, got {intensity_model!r}")
    if intensity_model != "fixed_offset" and method != "chernoff":
        raise ValueError(f"intensity_model {intensity_model!r} is implemented for method='chernoff' only, got {method!r}")
    if decoy_statistics not in DECOY_STATISTICS:
        raise ValueError(f"decoy_statistics must be one of {DECOY_STATISTICS}, got {decoy_statistics!r}")
    if decoy_statistics == "joint" and (method != "chernoff" or counts.intensities[2] != 0.0):
        raise ValueError("decoy_statistics='joint' is implemented for method='chernoff' with a vacuum third intensity")
    if method == "paper2017" and key_intensities != "signal":
        raise ValueError("method 'paper2017' keys the signal intensity only (key_intensities='signal')")
    _check_eps(eps_sec, "eps_sec")
    _check_eps(eps_cor, "eps_cor")
    if not (0.0 < qber_abort <= 0.5):
        raise ValueError(f"qber_abort must lie in (0, 0.5], got {qber_abort!r}")
    if not (extra_cost_bits >= 0 and math.isfinite(extra_cost_bits)):
        raise ValueError(f"extra_cost_bits must be a finite number ≥ 0, got {extra_cost_bits!r}")
    if int(grid_points) < 2:
        raise ValueError(f"grid_points must be ≥ 2, got {grid_points!r}")
    per_basis = isinstance(leak_ec_bits, Mapping)
    if per_basis:
        if set(leak_ec_bits) != set(BASES):
            raise ValueError(f"leak_ec_bits mapping must have exactly the keys {BASES}, got {sorted(leak_ec_bits)}")
        leak = {b: float(leak_ec_bits[b]) for b in BASES}
    else:
        leak = {"all": float(leak_ec_bits)}
    if any(not (v >= 0 and math.isfinite(v)) for v in leak.values()):
        raise ValueError(f"leak_ec_bits must be finite and ≥ 0, got {leak_ec_bits!r}")
    blocks = list(BASES) if per_basis else ["all"]
    eps_cor_block = eps_cor / len(blocks)
    if ev_tag_bits is None:
        tags = {b: float(math.ceil(math.log2(1.0 / eps_cor_block))) for b in blocks}
    elif isinstance(ev_tag_bits, Mapping):
        if not per_basis or set(ev_tag_bits) != set(BASES):
            raise ValueError("ev_tag_bits may be a per-basis mapping only when leak_ec_bits is one (keys 'Z', 'X')")
        tags = {b: float(ev_tag_bits[b]) for b in BASES}
    else:
        tags = {b: float(ev_tag_bits) for b in blocks}
    if any(not (t >= 0 and math.isfinite(t)) for t in tags.values()):
        raise ValueError(f"ev_tag_bits must be ≥ 0, got {ev_tag_bits!r}")

    if method == "paper2017":
        return _estimate_paper(counts, eps_sec, eps_cor, sum(leak.values()), sum(tags.values()), extra_cost_bits, qber_abort, grid_points)
    return _estimate_composable(
        counts, method, eps_sec, eps_cor, leak, tags, per_basis, extra_cost_bits, qber_abort, key_intensities, grid_points,
        intensity_model, decoy_statistics,
    )


def _estimate_composable(counts, method, eps_sec, eps_cor, leak, tags, per_basis, extra, qber_abort, key_set, points,
                         model="fixed_offset", decoy_statistics="per_count"):
    mu, p, delta = counts.intensities, counts.probabilities, counts.intensity_fluctuation
    mu3_zero = mu[2] == 0.0
    key_idx = list(KEY_INTENSITY_INDICES[key_set])
    weights = None if model == "fixed_offset" else label_probability_bounds(mu, p, delta, model)
    blocks = list(BASES) if per_basis else ["all"]
    block_of = {b: (b if per_basis else "all") for b in BASES}
    notes: list[str] = []
    # error-count pairs for v1: Lim's Eq. (4) (decoy–vacuum); chernoff adds signal–vacuum
    pairs = ((1, 2),) if method == "lim2014" else ((1, 2), (0, 2))
    # test counts taken from key bits (known only after EC + verification)?
    ec_counts = key_set != "signal" or method == "chernoff"
    integrity = 2.0 * eps_cor if ec_counts else 0.0
    avail = eps_sec - integrity
    if avail <= 0:
        raise ValueError(f"eps_sec = {eps_sec} must exceed 2·eps_cor = {integrity} (share for EC-derived error counts)")
    joint = decoy_statistics == "joint"
    names = {b: _bound_names(b, method, key_set, mu3_zero, joint) for b in BASES}
    sampling_name = {b: f"{b} key: phase-error sampling" for b in BASES}
    parts: dict[str, float] = {}
    fails: dict[str, float] = {}
    f_decoy: dict[str, float] = {}
    f_samp: dict[str, float] = {}
    pa_eps: dict[str, float] = {}
    if method == "lim2014":
        # Lim et al. (2014): ε_sec split in 21 equal shares (each Hoeffding bound fails with ε/21, γ
        # is built for ε/21 inside its log, smoothing and PA make up the rest of the 6·log2(21/ε)).
        # Signal-only key: two thinning bounds more; the paper's formula then runs with ε·21/23.
        n_terms = 21 if key_set == "all" else 23
        eps_lim = (avail / 2.0) * 21.0 / n_terms
        for b in BASES:
            f_decoy[b] = f_samp[b] = eps_lim / 21.0
            parts[f"{b} key: Lim et al. (2014) ε_sec ({n_terms} shares: decoy bounds, sampling γ, smoothing, PA)"] = avail / 2.0
    else:
        for blk in blocks:
            e_blk = avail / len(blocks)
            bs = list(BASES) if blk == "all" else [blk]
            d_decoy = 0.5 * e_blk  # classical photon-number/label events: enter linearly (convexity)
            eps_s = 0.2 * e_blk  # smoothing parameter; the sampling event must fail with ≤ ε_s²/2
            pa_eps[blk] = 0.1 * e_blk
            k = sum(len(names[b]) for b in bs)
            for b in bs:
                f_decoy[b] = d_decoy / k
                f_samp[b] = (1.0 - d_decoy) * eps_s**2 / 2.0 / len(bs)
            label = "Z+X" if blk == "all" else blk
            parts[f"{label} block: decoy-state bounds (Σ of their failure probabilities)"] = d_decoy
            parts[f"{label} block: smoothing 2·ε_s (phase-error sampling fails w.p. ≤ ε_s²/2)"] = 2.0 * eps_s
            parts[f"{label} block: privacy amplification ε_PA"] = pa_eps[blk]
    if integrity:
        parts["EC-derived error counts (2·ε_cor)"] = integrity
    parts["correctness ε_cor (error verification)"] = eps_cor

    # --- widened counts ----------------------------------------------------------------------
    n, m = counts.n, counts.m
    widen = {}
    for bi, b in enumerate(BASES):
        fe = f_decoy[b]  # the key of b uses n_b (its s0, s1) and m_t of the test basis t (its v1)
        t = 1 - bi
        if method == "lim2014":
            dn = hoeffding_delta(n[bi].sum(), fe)
            dm = hoeffding_delta(m[t].sum(), fe)
            widen[b] = (n[bi] - dn, n[bi] + dn, m[t] - dm, m[t] + dm)
        else:
            nl, nh = chernoff_expected_bounds(n[bi], fe, trials=max(n[bi].sum(), 1.0))
            ml, mh = chernoff_expected_bounds(m[t], fe, trials=max(m[t].sum(), 1.0))
            widen[b] = (nl, nh, ml, mh)
    scale = 1.0 / np.asarray(p)
    pbb = counts.basis_pair_probability  # P(ZZ), P(XX)

    def p_key_given(nph: int, g):
        """P(class in the key set | n photons) at intensities g (fixed_offset)."""
        num = sum(p[k] * g[:, k] ** nph * np.exp(-g[:, k]) for k in key_idx) / math.factorial(nph)
        return np.minimum(num / photon_number_weight(nph, g, p), 1.0)

    def terms(g, b):
        """(s0, s1, v1, φ) of the key of basis ``b`` for each row of intensities ``g`` (G, 3)."""
        bi = BASES.index(b)
        ti = 1 - bi
        nl, nh, ml, mh = widen[b]
        fe = f_decoy[b]
        y0, y1, _ = decoy_yield_bounds(g, nl, nh, scale=scale)
        if joint:  # μ3 = 0: y1 (μ1μ2 − μ2²)/μ1 ≥ N*_2 − (μ2/μ1)² N*_1 − (1 − (μ2/μ1)²) N*_3 (Lim Eq. 3, y0 = N*_3)
            r2 = (g[:, 1] / g[:, 0]) ** 2
            coef = np.stack([-r2 * np.exp(g[:, 0]) * scale[0], np.exp(g[:, 1]) * scale[1], -(1.0 - r2) * scale[2]], axis=1)
            lam = np.array([joint_linear_bound(cf, n[bi], nh, fe, "lower") for cf in coef])
            y1 = np.maximum(np.atleast_1d(y1), g[:, 0] * lam / (g[:, 0] * g[:, 1] - g[:, 1] ** 2))
        s0 = photon_number_weight(0, g, p) * np.maximum(np.atleast_1d(y0), 0.0)
        s1 = photon_number_weight(1, g, p) * np.atleast_1d(y1)
        if key_set != "all":  # keep the key-set share (intensity labels are independent given n)
            s0 = binomial_lower_bound(s0, p_key_given(0, g), fe)
            s1 = np.where(s1 > 0, binomial_lower_bound(np.maximum(s1, 0.0), p_key_given(1, g), fe), s1)
        tn = widen[BASES[ti]]  # test-basis detections (Lim: s1 of the test basis)
        _, _, z1 = decoy_yield_bounds(g, tn[0], tn[1], ml, mh, scale=scale, error_pairs=pairs)
        v1 = photon_number_weight(1, g, p) * np.atleast_1d(z1)
        ok = (s1 > 0) & (v1 >= 0)
        if method == "lim2014":
            _, yt, _ = decoy_yield_bounds(g, tn[0], tn[1], scale=scale)
            c = photon_number_weight(1, g, p) * np.atleast_1d(yt)
            ok &= c > 0
            cs = np.where(ok, c, 1.0)
            bb = np.where(ok, v1 / cs, 0.25)
            bg = np.clip(np.where(bb > 0, bb, 1.0 / cs), 1e-300, 0.5)  # γ is not defined at b = 0
            phi = bb + _lim_gamma_vec(eps_lim, bg, cs, np.where(ok, s1, 1.0))
        else:
            if key_set != "all":
                q = pbb[ti] / (pbb[ti] + pbb[bi] * p_key_given(1, g))
            else:
                q = np.full(len(g), pbb[ti] / (pbb[ti] + pbb[bi]))
            w = sampling_phase_error_bound(np.where(ok, v1, 0.0), q, f_samp[b])
            phi = np.atleast_1d(w) / np.where(ok, s1, 1.0)
        phi = np.where(ok, phi, np.nan)
        return s0, s1, v1, phi

    def terms_w(b):
        """(s0, s1, v1, φ) of the key of basis ``b`` with class probabilities in [L, U] (per_pulse,
        iid_uniform): :func:`decoy_bounds_weights`, then the key-set share and the sampling bound."""
        bi = BASES.index(b)
        ti = 1 - bi
        nl, nh, ml, mh = widen[b]
        fe = f_decoy[b]
        s0l, _, s1l, _ = decoy_bounds_weights(nl, nh, None, None, weights)
        s0l = max(s0l, 0.0)
        tn = widen[BASES[ti]]
        *_, w1 = decoy_bounds_weights(tn[0], tn[1], ml, mh, weights, error_pairs=pairs)
        if joint:  # one Bernstein bound per linear combination (joint_linear_bound); keep the better one
            L, U, R = weights.lower, weights.upper, weights.ratio
            c0 = U[0, 1] - R * L[0, 0]
            a3 = -c0 / L[0, 2] if c0 > 0 else -c0 / U[0, 2]  # s0 ≤ n*_3/L_{3|0} (or ≥ n*_3/U_{3|0})
            den = U[1, 1] - R * L[1, 0]
            if den > 0:
                lam = joint_linear_bound((-R, 1.0, a3), n[bi], nh, fe, "lower")
                s1l = max(s1l, lam / den)
            # (the error pairs gain nothing: the signal error count is most of its trials, where the
            # binomial Chernoff–Hoeffding width is far below Bernstein's Poisson-like variance bound)
        lo0, _ = weights.key_share(0, key_idx)
        lo1, hi1 = weights.key_share(1, key_idx)
        if key_set != "all":
            s0l = float(binomial_lower_bound(s0l, lo0, fe)) if lo0 > 0 else 0.0
            s1l = float(binomial_lower_bound(s1l, lo1, fe)) if (s1l > 0 and lo1 > 0) else min(s1l, 0.0)
        ok = (s1l > 0) and (w1 >= 0)
        # a single-photon event is a test event w.p. ≥ q (smaller q is conservative, finite-key.md §4)
        q = pbb[ti] / (pbb[ti] + pbb[bi] * hi1)
        wu = sampling_phase_error_bound(w1 if ok else 0.0, q, f_samp[b])
        phi = wu / s1l if ok else np.nan
        return (np.array([s0l]), np.array([s1l]), np.array([w1]), np.array([phi]))

    def entropy(g, bs):
        """Σ over the block's bases of s0 + s1(1 − h(φ)); +inf where the data exclude these
        intensities (v1 < 0), −inf where the analysis fails (s1 ≤ 0 or φ ≥ 1/2)."""
        tot = np.zeros(len(g))
        for b in bs:
            s0_, s1_, v1_, phi_ = terms(g, b) if weights is None else terms_w(b)
            h = binary_entropy(np.clip(np.nan_to_num(phi_, nan=0.5), 0.0, 0.5))
            hb = s0_ + s1_ * (1.0 - h)
            hb = np.where((s1_ > 0) & (phi_ < 0.5), hb, -np.inf)
            hb = np.where(v1_ < 0, np.inf, hb)
            tot = tot + hb
        return tot

    fails.update({nm: f_decoy[b] for b in BASES for nm in names[b]})
    fails.update({sampling_name[b]: f_samp[b] for b in BASES})
    qber = {}
    for bi, b in enumerate(BASES):
        qn = n[bi, key_idx].sum()
        qber[b] = float(m[bi, key_idx].sum() / qn) if qn > 0 else float("nan")
    abort = ABORT_QBER if any(qber[b] > qber_abort for b in BASES) else None  # NaN (no key bits): no QBER abort
    s0, s1, v1, phi, worst = {}, {}, {}, {}, {}
    ent = {}
    for blk in blocks:
        bs = [b for b in BASES if block_of[b] == blk]
        if weights is None:
            val, arg = _box_min(lambda g: entropy(g, bs), mu, delta, points)
        else:  # the band is inside the class probabilities: no search over intensities
            arg = tuple(float(x) for x in mu)
            val = float(entropy(np.array([arg]), bs)[0])
        label = "Z+X" if blk == "all" else blk
        if weights is None:
            worst[label] = arg
        g = np.array([arg])
        for b in bs:
            t0, t1, tv, tp = (float(np.atleast_1d(x)[0]) for x in (terms(g, b) if weights is None else terms_w(b)))
            s0[b], s1[b], v1[b], phi[b] = t0, t1, tv, tp
        if abort is None:
            if val == np.inf:
                abort = ABORT_V1
            elif not np.isfinite(val):
                abort = ABORT_S1 if any(not s1[b] > 0 for b in bs) else ABORT_PHASE
        ent[blk] = val if np.isfinite(val) else 0.0
    s0 = {b: max(s0[b], 0.0) for b in BASES}
    if method == "lim2014" and abort is None and min(v1.values()) < 200:
        notes.append("fewer than ~200 single-photon test errors: Lim et al.'s γ is not a valid tail bound in this regime (docs/finite-key.md)")

    # --- key length ---------------------------------------------------------------------------
    # the protocol announces the error count of every key class per basis after error correction
    # (ec_done: the key QBER abort and the other basis' bounds use them): charge each one, also the
    # ones a method does not use (lim2014 needs only decoy/vacuum, but the signal count is public too)
    announced = list(key_idx)
    disclosure = {b: float(sum(math.ceil(math.log2(n[bi, k] + 1.0)) for k in announced)) for bi, b in enumerate(BASES)}
    pa_cost = ev_total = 0.0
    ell = 0
    for blk in blocks:
        bs = [b for b in BASES if block_of[b] == blk]
        if method == "lim2014":
            ev = max(tags[blk], math.log2(2.0 * len(blocks) / eps_cor))
            cost = 6.0 * math.log2(21.0 / eps_lim) * len(bs)
        else:
            ev = tags[blk]
            cost = 2.0 * math.log2(1.0 / (2.0 * pa_eps[blk]))
        pa_cost += cost
        ev_total += ev
        raw = ent[blk] - sum(disclosure[b] for b in bs) - leak[blk] - ev - cost
        ell += max(0, math.floor(raw))
    ell = max(0, ell - math.ceil(extra))
    if abort is None and ell <= 0:
        abort = ABORT_LENGTH
    if abort is not None:
        ell = 0
    entropy_total = float(sum(ent.values())) if abort is None else 0.0
    return KeyEstimate(
        method=method,
        key_intensities=key_set,
        key_length=int(ell),
        abort_reason=abort,
        s0={b: float(s0[b]) for b in BASES},
        s1={b: float(s1[b]) for b in BASES},
        phase_error={b: float(phi[b]) for b in BASES},
        v1_test={b: float(v1[b]) for b in BASES},
        qber=qber,
        entropy_bits=entropy_total,
        leak_ec_bits=float(sum(leak.values())),
        ev_tag_bits=float(ev_total),
        disclosure_bits=float(sum(disclosure.values())),
        pa_cost_bits=float(pa_cost),
        extra_cost_bits=float(extra),
        epsilon_parts=parts,
        epsilon_total=float(sum(parts.values())),
        bound_failure_probabilities=fails,
        composable=True,
        worst_case_intensities=worst,
        notes=tuple(notes),
        intensity_model=model,
        assumptions=_assumptions(key_set, model, joint)
        + (("joint statistics: Bernstein's inequality for the single-photon combination (independent class labels "
            "given the photon numbers; variance bounded by the per-count upper bounds)",) if joint else ()),
        decoy_statistics=decoy_statistics,
    )


def _estimate_paper(counts, eps_sec, eps_cor, leak, ev_tag, extra, qber_abort, points):
    """Ma et al. (2005) Sec. VI style: Gaussian widening of the pooled (Z+X) gains, GLLP key from the signal.

    ``Q^{L,U}_k = Q_k (1 ∓ u_α/sqrt(N_k Q_k))`` i.e. counts ``n_k ∓ u_α sqrt(n_k)`` (same for the
    error gains), ``u_α`` the one-sided normal quantile of ``ε_sec``; ``Y0``, ``Y1`` and ``e1`` from
    the vacuum + weak decoy bounds (Eqs. (2)–(4) in gain units), and
    ``ℓ = N_μ·μ e^{−μ}·Y1·[1 − h(e1)] − λ_EC − tag − extra`` (GLLP with ``Q1 = Y1 μ e^{−μ}``; the
    sifting factor ``q`` cancels because the counts are sifted counts).
    """
    mu, delta = counts.intensities, counts.intensity_fluctuation
    u = float(stats.norm.isf(eps_sec))
    n = counts.n.sum(axis=0)
    m = counts.m.sum(axis=0)
    dn, dm = u * np.sqrt(n), u * np.sqrt(m)
    nl, nh, ml, mh = n - dn, n + dn, m - dm, m + dm
    scale = 1.0 / counts.emitted  # gains Q_k = n_k / N_k
    N1 = counts.emitted[0]
    qb = float(m[0] / n[0]) if n[0] > 0 else float("nan")

    def terms(g):
        y0, y1, z1 = (np.atleast_1d(x) for x in decoy_yield_bounds(g, nl, nh, ml, mh, scale=scale))
        with np.errstate(divide="ignore", invalid="ignore"):
            e1 = np.where(y1 > 0, z1 / y1, np.nan)
        s1 = N1 * g[:, 0] * np.exp(-g[:, 0]) * y1  # signal single-photon sifted events N_μ·Q1
        s0 = N1 * np.exp(-g[:, 0]) * np.maximum(y0, 0.0)
        return s0, s1, z1, e1

    def key_entropy(g):
        _, s1, z1, e1 = terms(g)
        h = binary_entropy(np.clip(np.nan_to_num(e1, nan=0.5), 0.0, 0.5))
        val = np.where((s1 > 0) & (e1 < 0.5), s1 * (1.0 - h), -np.inf)
        return np.where(z1 < 0, np.inf, val)

    ent, arg = _box_min(key_entropy, mu, delta, points)
    s0v, s1v, _, e1v = (float(np.atleast_1d(x)[0]) for x in terms(np.array([arg])))
    abort = None
    if qb > qber_abort:
        abort = ABORT_QBER
    elif ent == np.inf:
        abort = ABORT_V1
    elif not np.isfinite(ent):
        abort = ABORT_S1 if not s1v > 0 else ABORT_PHASE
    if abort is not None:
        ent = 0.0
    ell = max(0, math.floor(ent - leak - ev_tag) - math.ceil(extra))
    if abort is None and ell <= 0:
        abort = ABORT_LENGTH
    if abort is not None:
        ell = 0
    parts = {
        f"Gaussian tail per estimated count, u_α = {u:.3f} (paper-era convention, not composable)": eps_sec,
        "correctness ε_cor (error verification)": eps_cor,
    }
    fails = {f"Z+X: {q} {k} {side}": eps_sec for q in ("n", "m") for k in ("signal", "decoy", "vacuum") for side in ("lower", "upper")}
    return KeyEstimate(
        method="paper2017",
        key_intensities="signal",
        key_length=int(ell),
        abort_reason=abort,
        s0={"Z+X": max(s0v, 0.0)},
        s1={"Z+X": s1v},
        phase_error={"Z+X": e1v},
        v1_test={"Z+X": e1v * s1v},
        qber={"Z+X": qb},
        entropy_bits=float(ent),
        leak_ec_bits=float(leak),
        ev_tag_bits=float(ev_tag),
        disclosure_bits=0.0,
        pa_cost_bits=0.0,
        extra_cost_bits=float(extra),
        epsilon_parts=parts,
        epsilon_total=float(eps_sec + eps_cor),
        bound_failure_probabilities=fails,
        composable=False,
        worst_case_intensities={"Z+X": arg},
        notes=("GLLP key from the signal single photons only (no vacuum term); e1 is used as the phase-error rate",),
        intensity_model="fixed_offset",
        assumptions=_assumptions("signal", "fixed_offset")
        + ("Gaussian widening of each count (not a rigorous tail bound); GLLP, not composable",),
    )
