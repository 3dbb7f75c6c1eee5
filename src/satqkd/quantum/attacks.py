"""Eavesdropping on the quantum channel, photon by photon: what Bob's detectors see under attack.

The source is a weak coherent (phase-randomised) laser: a pulse of intensity class ``i`` holds
``n ~ Poisson(μ_i)`` photons, all in Alice's polarization state ``(a, x)`` (Lo, Ma, Chen, PRL 94,
230504 (2005), §II). An attack is described by *what reaches Bob's receiver* given ``n`` (the law
:class:`BobInput`), and Bob's passive four-detector decoder (:mod:`.detector`) turns that into one
of the 16 click patterns. Everything is computed exactly, photon number by photon number, with the
Poisson sum cut where its tail is below 1e-15 (:func:`photon_cutoff`).

Attack models (``AttackConfig.kind``; each pulse is attacked independently with probability
``fraction = f``, the others cross the honest channel):

``"none"``
    Honest lossy channel: each photon survives with probability ``η`` (the link transmittance):
    Bob receives ``k ~ Binomial(n, η)`` photons in Alice's state.
``"intercept_resend"``
    Eve sits right after the satellite with a perfect detector (Bennett, Brassard, Proc. IEEE
    ICCSSP (1984); the textbook 25 % error of Gisin, Ribordy, Tittel, Zbinden, Rev. Mod. Phys. 74,
    145 (2002), §VI.A). For a pulse with ``n ≥ 1`` photons she measures in a uniformly random basis
    ``b``: the result is ``x`` if ``b = a``, uniform otherwise (with several photons a double click
    in the wrong basis is resolved at random, still uniform). She resends one photon in the state
    she found through the rest of the link (transmittance ``η``). Empty pulses give her nothing
    to resend. Bob's single photon from Eve gives a sifted error ``1/4 + e_d/2`` (wrong basis half
    the time, then a random bit), so the QBER is ``≈ f' (1/4 + e_d/2) + (1 − f') e_d`` with ``f'``
    the share of Bob's clicks from attacked pulses: ``f' = f (1−e^{−μ}) / (f (1−e^{−μ}) + (1−f) μ)``
    for ``η η_det ≪ 1`` (Eve resends one photon per non-empty pulse; ``f' → f`` as ``μ → 0``).
``"pns"``
    Photon-number splitting (Brassard, Lütkenhaus, Mor, Sanders, PRL 85, 1330 (2000)): Eve
    measures the photon number without disturbing the polarization (QND), keeps one photon of
    every multi-photon pulse (she measures it after the basis announcement) and sends the other
    ``n − 1`` to Bob over a lossless channel; single-photon pulses are blocked or, if that is not
    enough, passed losslessly. She forwards a pulse with probability ``a_1`` (``n = 1``) or ``a_m``
    (``n ≥ 2``), tuned per time slice so that Bob's *signal* click probability equals the honest
    ``1 − exp(−μ_s η η_det)`` at the nominal signal intensity (:func:`pns_forwarding`): through a
    30 dB link she must block all single photons and most multi-photon pulses too. A protocol
    without decoys would see the honest signal gain; the decoy gain falls to
    ``μ G_m(ν) / (ν G_m(μ))`` of its honest value (only ``n ≥ 2`` pulses get through; 18 % for
    ``μ = 0.8``, ``ν = 0.1``, ``η_det = 0.5``), and the decoy-state bound on the
    single-photon yield (Hwang, PRL 91, 057901 (2003); Lo, Ma, Chen (2005); Ma, Qi, Zhao, Lo, PRA
    72, 012326 (2005), vacuum + weak decoy; Lim et al. (2014), Eq. (3) in
    :mod:`satqkd.postprocess.estimation`) collapses: no key.
``"beam_splitting"``
    Eve replaces the lossy channel by a lossless one and a beam splitter that sends ``η`` of each
    pulse to Bob and keeps ``1 − η`` (Bennett, Bessette, Brassard, Salvail, Smolin, J. Cryptol. 5,
    3 (1992); Lütkenhaus, PRA 61, 052304 (2000)). Bob receives ``Binomial(n, η)`` photons, exactly
    the honest statistics; Eve holds a photon of the multi-photon pulses that the decoy analysis
    already excludes from the key, so the key length is the honest one.

Bob's decoder (:mod:`.detector`): each photon reaches detector ``j`` with probability ``q_j(s, e_d)``
(state ``s``, misalignment ``e_d`` of the receiver frame, kept under every attack) and registers
with probability ``η_det``; with ``r_j = η_det q_j`` and ``r_0 = 1 − η_det`` the probability that ``k``
photons make exactly the detectors in ``S`` click is, by inclusion–exclusion over the multinomial,
``P(S | k) = Σ_{T ⊆ S} (−1)^{|S∖T|} (r_0 + Σ_{j∈T} r_j)^k`` (:func:`patterns_given_photons`).

Hook into :func:`satqkd.quantum.sampler.sample_pass`: :func:`click_model` returns ``None`` for the
honest channel (the sampler's own kernels run, bit-identical); otherwise a :class:`ClickModel` with
the per-slice, per-intensity probability of ≥ 1 signal detection (the same for the four states of
an intensity class under all these attacks: Eve's actions do not depend on the polarization) and a
sampler of the click pattern given ≥ 1 detection (inverse CDF over the 15 non-empty patterns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from . import detector as _det

__all__ = [
    "ATTACK_KINDS",
    "Attack",
    "as_attack",
    "photon_cutoff",
    "poisson_pmf",
    "pns_forwarding",
    "BobInput",
    "bob_input",
    "patterns_given_photons",
    "patterns_given_n",
    "ClickModel",
    "click_model",
    "click_table",
    "sifted_statistics",
]

ATTACK_KINDS = ("none", "intercept_resend", "pns", "beam_splitting")
#: Poisson tail left out of every photon-number sum
POISSON_TAIL = 1e-15
_N_PATTERNS = 1 << _det.N_DETECTORS  # 16 click patterns (bitmask over the 4 detectors)
_CHUNK = 512  # slices per block of the table computation (bounds the temporaries)
#: lowest set bit of a 4-bit mask
_LOW_BIT = np.array([0, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0], dtype=np.uint8)


# ---------------------------------------------------------------------------------------- attack
@dataclass(frozen=True)
class Attack:
    """An attack model: ``kind`` in :data:`ATTACK_KINDS` on a ``fraction`` of the pulses (module docstring)."""

    kind: str = "none"
    fraction: float = 1.0

    def __post_init__(self):
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"attack kind must be one of {ATTACK_KINDS}; got {self.kind!r}")
        if not 0.0 <= float(self.fraction) <= 1.0:
            raise ValueError(f"attack fraction must lie in [0, 1]; got {self.fraction}")

    @property
    def honest(self) -> bool:
        return self.kind == "none" or self.fraction == 0.0


def as_attack(attack) -> Attack:
    """An :class:`Attack` from an ``Attack``, a ``satqkd.config.AttackConfig`` (``kind``, ``fraction``),
    a kind name, or ``None`` (honest)."""
    if attack is None:
        return Attack()
    if isinstance(attack, Attack):
        return attack
    if isinstance(attack, str):
        return Attack(attack)
    return Attack(str(attack.kind), float(attack.fraction))


# ------------------------------------------------------------------------------- photon numbers
def photon_cutoff(mu_max: float, tail: float = POISSON_TAIL) -> int:
    """Smallest ``n_max`` with ``P(N > n_max) < tail`` for ``N ~ Poisson(mu_max)`` (at least 1)."""
    from scipy import stats  # lazy: the honest sampler never needs SciPy

    mu_max = float(mu_max)
    if not (mu_max >= 0 and math.isfinite(mu_max)):
        raise ValueError(f"mu_max must be a finite mean photon number >= 0; got {mu_max}")
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must lie in (0, 1); got {tail}")
    n = max(1, int(mu_max + 10.0 * math.sqrt(mu_max)))
    while stats.poisson.sf(n, mu_max) >= tail:
        n += 1
    while n > 1 and stats.poisson.sf(n - 1, mu_max) < tail:
        n -= 1
    return n


def poisson_pmf(mu, n_max: int) -> np.ndarray:
    """``P(n; μ) = e^{−μ} μ^n / n!`` for ``n = 0 … n_max``, on a trailing axis (``μ = 0`` → vacuum)."""
    from scipy import special

    mu = np.asarray(mu, dtype=float)
    if np.any(mu < 0) or np.any(~np.isfinite(mu)):
        raise ValueError("mean photon numbers must be finite and >= 0")
    n = np.arange(n_max + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = special.xlogy(n, mu[..., None]) - mu[..., None] - special.gammaln(n + 1.0)
    return np.exp(logp)


def _binomial_table(n_max: int, p: np.ndarray) -> np.ndarray:
    """``B[s, n, k] = C(n, k) p_s^k (1 − p_s)^{n−k}`` (zero for ``k > n``)."""
    from scipy import stats

    n = np.arange(n_max + 1)
    return stats.binom.pmf(n[None, None, :], n[None, :, None], np.asarray(p, dtype=float)[:, None, None])


def _lossless_detection(eta_det: float, n_max: int) -> np.ndarray:
    """``1 − (1 − η_det)^k``, ``k = 0 … n_max``: ≥ 1 detection from ``k`` photons reaching Bob."""
    return -np.expm1(np.arange(n_max + 1) * math.log1p(-eta_det)) if eta_det < 1 else (np.arange(n_max + 1) > 0) * 1.0


def pns_forwarding(mu_signal: float, eta, eta_det: float, n_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eve's PNS forwarding probabilities ``(a_1, a_m)`` per link transmittance ``η``.

    Bob's signal click probability must be the honest ``G_h = 1 − exp(−μ η η_det)``, so that
    monitoring the gain does not reveal the attack (Brassard et al. (2000)). Forwarded single photons
    (lossless) give ``G_1 = P(1; μ) η_det``; forwarded ``n ≥ 2`` pulses minus one photon give
    ``G_m = Σ_{n≥2} P(n; μ) (1 − (1 − η_det)^{n−1})``. If ``G_m ≥ G_h``: ``a_1 = 0``, ``a_m = G_h / G_m``
    (high loss: every single photon and most multi-photon pulses blocked); else ``a_m = 1``,
    ``a_1 = (G_h − G_m) / G_1``.
    """
    eta = np.atleast_1d(np.asarray(eta, dtype=float))
    if not mu_signal > 0:
        raise ValueError(f"mu_signal must be > 0; got {mu_signal}")
    if np.any(eta < 0) or np.any(eta > 1):
        raise ValueError("eta must lie in [0, 1]")
    if not 0 < eta_det <= 1:
        raise ValueError(f"eta_det must lie in (0, 1]; got {eta_det}")
    if n_max is None:
        n_max = photon_cutoff(mu_signal)
    pn = poisson_pmf(mu_signal, n_max)
    det = _lossless_detection(eta_det, n_max)
    g_h = -np.expm1(-mu_signal * eta * eta_det)
    g_1 = pn[1] * eta_det
    g_m = float(np.sum(pn[2:] * det[1:-1]))
    a_m = np.where(g_h <= g_m, g_h / g_m, 1.0)
    a_1 = np.where(g_h <= g_m, 0.0, np.minimum((g_h - g_m) / g_1, 1.0))
    return a_1, a_m


# --------------------------------------------------------------------------------- Bob's input
@dataclass(frozen=True)
class BobInput:
    """What reaches Bob's receiver given Alice's photon number ``n`` (per time slice ``s``).

    ``same[s, n, k]``: ``k`` photons in Alice's own state (lossless or not; Bob's detector efficiency
    is applied by :func:`patterns_given_photons`). ``resent[s, n]``: one photon in the state Eve
    found by measuring in a random basis (intercept-resend). For every ``n`` the two add up to 1.
    ``eve_holds[s, n, k]``: the part of ``same`` in which Eve keeps a photon of the pulse (PNS,
    beam splitting); ``resent_known``: the share of ``resent`` where Eve's basis was Alice's.
    """

    same: np.ndarray
    resent: np.ndarray
    eve_holds: np.ndarray
    resent_known: float = 0.5


def bob_input(attack, n_max: int, eta, eta_det: float, mu_signal: float = 0.8) -> BobInput:
    """:class:`BobInput` of ``attack`` (module docstring) for link transmittances ``eta`` (one per slice).

    ``mu_signal``: the nominal signal intensity Eve tunes the PNS attack on (:func:`pns_forwarding`).
    """
    at = as_attack(attack)
    eta = np.atleast_1d(np.asarray(eta, dtype=float))
    if np.any(eta < 0) or np.any(eta > 1):
        raise ValueError("eta must lie in [0, 1]")
    if not 0 < eta_det <= 1:
        raise ValueError(f"eta_det must lie in (0, 1]; got {eta_det}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1; got {n_max}")
    ns, big = eta.size, n_max + 1
    honest = _binomial_table(n_max, eta)  # k ~ Binomial(n, η): lossy channel, thinning per photon
    zeros = np.zeros((ns, big, big))
    if at.honest:
        return BobInput(honest, np.zeros((ns, big)), zeros)
    f = float(at.fraction)
    resent = np.zeros((ns, big))
    holds = np.zeros((ns, big, big))
    if at.kind == "beam_splitting":
        att = honest  # Bob's share of a lossless beam splitter of transmission η: the same Binomial(n, η)
        n = np.arange(big)
        holds = honest * (n[None, :, None] - n[None, None, :] >= 1)  # Eve kept n − k ≥ 1 photons
    elif at.kind == "intercept_resend":
        att = np.zeros((ns, big, big))
        att[:, 0, 0] = 1.0  # nothing to measure, nothing resent
        att[:, 1:, 0] = (1.0 - eta)[:, None]  # Eve's photon lost on the way to Bob
        resent[:, 1:] = eta[:, None]
    else:  # pns
        a_1, a_m = pns_forwarding(mu_signal, eta, eta_det, n_max)
        att = np.zeros((ns, big, big))
        att[:, 0, 0] = 1.0
        att[:, 1, 1] = a_1
        att[:, 1, 0] = 1.0 - a_1
        k = np.arange(1, n_max)
        att[:, k + 1, k] = a_m[:, None]
        att[:, 2:, 0] = (1.0 - a_m)[:, None]
        holds[:, k + 1, k] = a_m[:, None]
    return BobInput(f * att + (1.0 - f) * honest, f * resent, f * holds)


# ----------------------------------------------------------------------------- Bob's detectors
def _subset_matrix() -> tuple[np.ndarray, np.ndarray]:
    """Membership ``member[T, j]`` of detector ``j`` in subset ``T`` and the Möbius matrix
    ``M[S, T] = (−1)^{|S∖T|}`` for ``T ⊆ S`` (inclusion–exclusion), over the 16 bitmasks."""
    t = np.arange(_N_PATTERNS)
    member = ((t[:, None] >> np.arange(_det.N_DETECTORS)) & 1).astype(float)
    sub = (t[None, :] & ~t[:, None]) == 0  # T ⊆ S
    size = member.sum(axis=1)
    sign = (-1.0) ** (size[:, None] - size[None, :])
    return member, np.where(sub, sign, 0.0)


_MEMBER, _MOBIUS = _subset_matrix()
#: Alice's four states (basis, bit) in the order 2·basis + bit
_STATE_BASIS = np.array([0, 0, 1, 1], dtype=np.uint8)
_STATE_BIT = np.array([0, 1, 0, 1], dtype=np.uint8)
#: Eve's intercept-resend state law W[a, s']: random basis; her result is Alice's bit iff the bases agree
_RESEND_LAW = np.where(
    _STATE_BASIS[:, None] == _STATE_BASIS[None, :], 0.5 * (_STATE_BIT[:, None] == _STATE_BIT[None, :]), 0.25
)


def patterns_given_photons(k_max: int, eta_det: float, misalignment) -> np.ndarray:
    """``P[s, state, k, S]``: ``k`` photons of one state make exactly the detectors ``S`` click.

    Per slice misalignment ``e_d[s]``; ``state = 2·basis + bit``; ``S`` a bitmask over the four
    detectors (bit ``j`` = detector ``j`` of ``records.DETECTOR_NAMES``). Inclusion–exclusion over the
    multinomial of the ``k`` photons among {detector 0…3, undetected} (module docstring); patterns
    with more detectors than photons are set to exactly 0 and tiny negative rounding residues to 0
    (absolute rounding error ≈ 1e-16).
    """
    e = np.atleast_1d(np.asarray(misalignment, dtype=float))
    if np.any(e < 0) or np.any(e > 0.5):
        raise ValueError("misalignment must lie in [0, 0.5]")
    if not 0 < eta_det <= 1:
        raise ValueError(f"eta_det must lie in (0, 1]; got {eta_det}")
    q = _det.routing_probabilities(_STATE_BASIS[None, :], _STATE_BIT[None, :], e[:, None])  # (ns, 4, 4)
    base = (1.0 - eta_det) + eta_det * np.einsum("stj,Tj->stT", q, _MEMBER)  # (ns, 4, 16 T)
    base = np.minimum(base, 1.0)
    k = np.arange(k_max + 1)
    powk = base[..., None] ** k  # (ns, 4, 16 T, k)
    p = np.einsum("ST,stTk->stkS", _MOBIUS, powk)
    p[:, :, k[:, None] < _MEMBER.sum(axis=1)[None, :]] = 0.0  # fewer photons than clicks: exactly 0
    return np.maximum(p, 0.0)


def patterns_given_n(attack, n_max: int, eta, eta_det: float, misalignment, mu_signal: float = 0.8) -> np.ndarray:
    """The per-photon-number law: ``P[s, n, state, S]`` = probability that a pulse of Alice's
    ``state`` with exactly ``n`` photons makes exactly the detectors ``S`` click (signal only, no
    background), under ``attack``, for ``n = 0 … n_max`` and each slice ``s``."""
    bi = bob_input(attack, n_max, eta, eta_det, mu_signal)
    pk = patterns_given_photons(n_max, eta_det, misalignment)  # (ns, 4, k, 16)
    out = np.einsum("snk,stkS->sntS", bi.same, pk)
    if np.any(bi.resent):
        resent_pat = np.einsum("au,suS->saS", _RESEND_LAW, pk[:, :, 1, :])  # one photon in Eve's state
        out += bi.resent[:, :, None, None] * resent_pat[:, None, :, :]
    return out


# ---------------------------------------------------------------------------- per-slice tables
@dataclass(frozen=True)
class ClickModel:
    """Signal click law of every (slice, intensity, state) under an attack.

    ``pattern[s, i, state, S]``: probability that a pulse of class ``(i, state)`` in slice ``s`` makes
    exactly detectors ``S`` click (``S = 0``: none). ``p_click[s, i]``: probability of ≥ 1 signal
    detection (the same for the four states). ``by_photon_number[s, i, n]``: probability that the
    pulse had ``n`` photons *and* gave ≥ 1 detection. ``eve_knows[s, i]``: probability of ≥ 1
    detection on a pulse whose sifted bit Eve knows (she kept a photon of it, or measured it in
    Alice's basis). ``attack``: the model.
    """

    attack: Attack
    pattern: np.ndarray
    p_click: np.ndarray
    by_photon_number: np.ndarray
    eve_knows: np.ndarray
    cdf: np.ndarray  # (ns, K, 4, 15) cumulative law of the non-empty patterns given ≥ 1 detection

    def draw(self, m: np.ndarray, inten: np.ndarray, basis: np.ndarray, bit: np.ndarray, rng: np.random.Generator):
        """Click patterns of the clicked pulses (``m[s]`` of them in slice ``s``, in order).

        Returns ``(first, more, mask, extra)`` as :func:`satqkd.quantum.sampler._click_patterns_by_slice`:
        a detector of every pulse (the lowest one in its pattern), the positions with ≥ 2 detectors,
        their patterns and their patterns without ``first``. One uniform per pulse (inverse CDF).
        """
        m = np.ascontiguousarray(m, dtype=np.int64)
        if m.shape != (self.cdf.shape[0],) or np.any(m < 0):
            raise ValueError(f"m must hold {self.cdf.shape[0]} non-negative counts, one per slice")
        total = int(m.sum())
        for name, v in (("inten", inten), ("basis", basis), ("bit", bit)):
            if np.shape(v) != (total,):
                raise ValueError(f"{name} must have one entry per clicked pulse ({total})")
        state = (2 * np.asarray(basis, dtype=np.uint8) + np.asarray(bit, dtype=np.uint8)).astype(np.uint8)
        u = rng.random(total)
        mask = _pattern_kernel(u, self.cdf, m, np.ascontiguousarray(inten, dtype=np.uint8), state)
        first = _LOW_BIT[mask]
        extra_all = mask & ~np.left_shift(np.uint8(1), first).astype(np.uint8)
        more = np.flatnonzero(extra_all)
        return first, more, mask[more], extra_all[more]


@numba.njit(cache=True, nogil=True)
def _pattern_kernel(u, cdf, m, inten, state):  # pragma: no cover - compiled
    out = np.empty(u.size, np.uint8)
    last = cdf.shape[3] - 1
    i = 0
    for s in range(m.size):
        for _ in range(m[s]):
            row = cdf[s, inten[i], state[i]]
            c = 0
            for j in range(last):
                c += u[i] >= row[j]
            out[i] = c + 1
            i += 1
    return out


def click_table(attack, mu, eta, eta_det: float, misalignment, mu_signal: float | None = None) -> ClickModel:
    """Exact click law of every slice and intensity under ``attack``.

    ``mu[s, i]``: actual mean photon number of intensity ``i`` in slice ``s`` (with its fluctuation);
    ``eta[s]``: link transmittance (detector excluded); ``misalignment[s]``: ``e_d``; ``mu_signal``:
    the nominal signal intensity Eve tunes PNS on (default: the mean of ``mu[:, 0]``). The photon
    sum runs to :func:`photon_cutoff` of the largest ``μ``.
    """
    at = as_attack(attack)
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    eta = np.atleast_1d(np.asarray(eta, dtype=float))
    e = np.broadcast_to(np.asarray(misalignment, dtype=float), eta.shape)
    if mu.shape[0] != eta.size:
        raise ValueError(f"mu must have one row per slice ({eta.size}); got shape {mu.shape}")
    if mu_signal is None:
        mu_signal = float(np.mean(mu[:, 0]))
    n_max = photon_cutoff(float(mu.max()) if mu.size else 0.0)
    ns, kk = mu.shape
    pattern = np.empty((ns, kk, 4, _N_PATTERNS))
    by_n = np.empty((ns, kk, n_max + 1))
    knows = np.empty((ns, kk))
    detect = _lossless_detection(eta_det, n_max)
    for a in range(0, ns, _CHUNK):
        b = min(a + _CHUNK, ns)
        pn = poisson_pmf(mu[a:b], n_max)  # (c, K, n)
        per_n = patterns_given_n(at, n_max, eta[a:b], eta_det, e[a:b], mu_signal)  # (c, n, 4, 16)
        pattern[a:b] = np.einsum("cin,cntS->citS", pn, per_n)
        by_n[a:b] = pn * (1.0 - per_n[:, :, 0, 0])[:, None, :]
        bi = bob_input(at, n_max, eta[a:b], eta_det, mu_signal)
        known = bi.eve_holds @ detect + bi.resent_known * bi.resent * eta_det  # (c, n)
        knows[a:b] = np.einsum("cin,cn->ci", pn, known)
    p_click = pattern[..., 1:].sum(axis=-1)  # (ns, K, 4)
    spread = np.ptp(p_click, axis=-1)
    if np.any(spread > 1e-9 * np.max(p_click, axis=-1) + 1e-300):
        raise ValueError("attack model error: the click probability depends on Alice's polarization state")
    pc = p_click.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = np.cumsum(pattern[..., 1:], axis=-1) / p_click[..., None]
    cdf = np.where(p_click[..., None] > 0, cdf, 1.0)
    cdf[..., -1] = 1.0
    return ClickModel(at, pattern, pc, by_n, knows, np.ascontiguousarray(cdf))


def click_model(cfg, mu, eta, eta_det: float, misalignment) -> ClickModel | None:
    """The sampler's hook: ``None`` for the honest channel (``cfg.attack`` absent, kind ``"none"``
    or fraction 0), else :func:`click_table` with Eve tuning on ``cfg.source.intensities[0]``."""
    at = as_attack(getattr(cfg, "attack", None))
    if at.honest:
        return None
    return click_table(at, mu, eta, eta_det, misalignment, mu_signal=float(cfg.source.intensities[0]))


def sifted_statistics(pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected sifted and erroneous detections per pulse, averaged over Alice's four states.

    ``pattern[..., state, S]`` as :attr:`ClickModel.pattern` (signal only). Bob's squashing
    (:mod:`.timing`): one basis clicked → that basis, a double click in it → random bit; both bases
    → random basis and bit (sifted with probability ½, wrong with ¼). Returns ``(sifted, errors)``
    with the state axis averaged out; ``errors / sifted`` is the signal QBER without background.
    """
    pattern = np.asarray(pattern, dtype=float)
    sifted = np.zeros(pattern.shape[:-1])
    errors = np.zeros(pattern.shape[:-1])
    for st in range(4):
        a, x = int(_STATE_BASIS[st]), int(_STATE_BIT[st])
        right, wrong = 1 << (2 * a + x), 1 << (2 * a + 1 - x)
        own = right | wrong
        for s in range(1, _N_PATTERNS):
            p = pattern[..., st, s]
            if s & ~own == 0:  # Alice's basis only
                sifted[..., st] += p
                errors[..., st] += p * (1.0 if s == wrong else 0.5 if s == own else 0.0)
            elif s & own:  # both bases
                sifted[..., st] += 0.5 * p
                errors[..., st] += 0.25 * p
    return sifted.mean(axis=-1), errors.mean(axis=-1)
