"""Decoy-state estimation and finite-key length (satqkd.postprocess.estimation).

The Lim et al. (2014) numbers are recomputed here by hand with plain Python floats, transcribed
from the equations in finite-key.md (Lim et al., PRA 89, 022307, Eqs. (1)–(5)), independently of
the implementation. Statistical helpers are checked against exact binomial / hypergeometric tails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from satqkd.postprocess.estimation import (
    ABORT_PHASE,
    ABORT_QBER,
    ABORT_S1,
    ABORT_V1,
    BASES,
    DecoyCounts,
    binary_entropy,
    binomial_lower_bound,
    chernoff_expected_bounds,
    decoy_yield_bounds,
    estimate,
    expected_decoy_counts,
    hoeffding_delta,
    lim_gamma,
    sampling_phase_error_bound,
)

# the Micius 2016-12-19 pass as expected counts (tests/micius_counts.py)
from micius_counts import E_D, EMITTED, ETA, MU, P, Y0, micius


def micius_leak(c: DecoyCounts) -> float:
    """Leak of a 1.05-efficient code on the signal sifted key (both bases)."""
    return 1.05 * binary_entropy(c.m[:, 0].sum() / c.n[:, 0].sum()) * c.n[:, 0].sum()


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def test_binary_entropy_values():
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert binary_entropy(0.5) == pytest.approx(1.0, rel=1e-15)
    p = 0.11
    assert binary_entropy(p) == pytest.approx(-p * math.log2(p) - (1 - p) * math.log2(1 - p), rel=1e-14)
    h = binary_entropy(np.array([0.0, 0.25, 0.75, 1.0]))
    assert h.shape == (4,) and h[1] == pytest.approx(h[2]) and h[0] == 0.0
    with pytest.raises(ValueError, match="p must lie in"):
        binary_entropy(1.2)


def test_hoeffding_delta_value():
    # sqrt(n/2 ln(1/eps)): n = 2, eps = e^-1 → 1
    assert hoeffding_delta(2.0, math.exp(-1.0)) == pytest.approx(1.0, rel=1e-15)
    assert hoeffding_delta(1e6, 1e-10) == pytest.approx(math.sqrt(5e5 * math.log(1e10)), rel=1e-15)


def test_lim_gamma_hand_value():
    # a = 0.21 (21²/a² = 1e4), b = 1/2, c = d = 2: (c+d)/(cd(1-b)b) = 4 → log2(4e4); prefactor 0.25/ln2
    expected = math.sqrt(0.25 / math.log(2) * math.log2(4e4))
    assert lim_gamma(0.21, 0.5, 2.0, 2.0) == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(2.3481, abs=1e-4)
    with pytest.raises(ValueError, match="b must lie"):
        lim_gamma(1e-9, 0.0, 10.0, 10.0)


def _gamma_failure(c, d, a, M):
    """Exact P(λ_key > λ_test + γ(a, λ_test, c, d)) when c of N = c + d items with M errors are sampled."""
    v = np.arange(0, min(M, c) + 1)
    pmf = stats.hypergeom.pmf(v, c + d, M, c)
    b = v / c
    lam_key = (M - v) / d
    g = np.array([lim_gamma(a, x, c, d) if 0 < x < 0.5 else np.inf for x in b])
    return pmf[lam_key > b + g].sum()


def test_lim_gamma_against_exact_hypergeometric():
    """γ is built for a tail of a/21: it holds with many test errors, fails with few (a flaw we document)."""
    c = d = 2000
    a = 21 * 1e-3
    assert max(_gamma_failure(c, d, a, M) for M in (200, 400, 1000)) < 1e-3
    # with ~10 errors in total the failure probability is ~1e-2 ≫ a/21 = 1e-3
    assert _gamma_failure(c, d, a, 10) > 5e-3


def test_chernoff_bounds_cover_exact_binomial_tails():
    eps = 1e-6
    n_trials = 50_000
    for x in (0, 3, 40, 1234, 30_000):
        lo, hi = chernoff_expected_bounds(float(x), eps)
        lo2, hi2 = chernoff_expected_bounds(float(x), eps, trials=n_trials)
        assert lo <= x <= hi and lo2 <= x <= hi2
        assert lo <= lo2 + 1e-6 and hi2 <= hi + 1e-6  # the KL form with n trials is tighter
        # if the mean were exactly the bound, seeing ≥ x (≤ x) would have probability ≤ eps
        if x > 0:
            assert stats.binom.sf(x - 1, n_trials, lo2 / n_trials) <= eps
            assert stats.poisson.sf(x - 1, lo) <= eps
        assert stats.binom.cdf(x, n_trials, hi2 / n_trials) <= eps
        assert stats.poisson.cdf(x, hi) <= eps
    # widths scale like sqrt(2 x ln(1/eps)) for large counts
    lo, hi = chernoff_expected_bounds(1e6, 1e-10)
    w = math.sqrt(2e6 * math.log(1e10))
    assert (1e6 - lo) == pytest.approx(w, rel=0.01) and (hi - 1e6) == pytest.approx(w, rel=0.01)
    assert chernoff_expected_bounds(0.0, 1e-10)[1] == pytest.approx(math.log(1e10), rel=1e-9)


def test_binomial_lower_bound_coverage():
    eps = 1e-6
    for n, p in ((1000, 0.888), (50_000, 0.3), (200, 0.05)):
        L = binomial_lower_bound(float(n), p, eps)
        assert 0 <= L < n * p
        assert stats.binom.cdf(math.ceil(L) - 1, n, p) <= eps


def test_sampling_phase_error_bound_is_exact_neyman():
    eps, q = 1e-6, 0.5
    for M in (0, 5, 60, 400, 3000):  # any true total of phase errors
        V = np.arange(M + 1)
        pmf = stats.binom.pmf(V, M, q)
        w_up = np.array([sampling_phase_error_bound(float(v), q, eps) for v in V])
        assert pmf[(M - V) > w_up].sum() <= eps
    # W_U − v ≈ 2 sqrt(v ln(1/eps)) for q = 1/2 and large v; non-decreasing in v
    v = 10_000.0
    assert sampling_phase_error_bound(v, 0.5, 1e-10) - v == pytest.approx(2 * math.sqrt(v * math.log(1e10)), rel=0.1)
    ws = [sampling_phase_error_bound(x, 0.5, 1e-10) for x in range(0, 200, 7)]
    assert all(b >= a for a, b in zip(ws, ws[1:]))


def test_decoy_bounds_exact_without_fluctuation_or_multiphoton_terms():
    """With yields linear in n (no n ≥ 2 error terms) Eq. (4) is exact and Eq. (2) is exact."""
    y = [0.3, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]  # y_n = 0.3 + 2n·… (any)
    mu = np.array([0.6, 0.2, 0.05])
    N = [sum(mu_k**j / math.factorial(j) * y[j] for j in range(len(y))) * math.exp(-mu_k) for mu_k in mu]
    y0, y1, _ = decoy_yield_bounds(mu, N, N, scale=np.ones(3))
    assert y0 <= y[0] + 1e-12 and y1 <= y[1] + 1e-12
    z = [0.15, 0.05] + [0.0] * 8
    M = [sum(mu_k**j / math.factorial(j) * z[j] for j in range(len(z))) * math.exp(-mu_k) for mu_k in mu]
    _, _, z1 = decoy_yield_bounds(mu, N, N, M, M, scale=np.ones(3))
    assert z1 == pytest.approx(0.05, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Lim et al. (2014) by hand
# --------------------------------------------------------------------------------------------------


def _h(x):
    return 0.0 if x in (0.0, 1.0) else -x * math.log2(x) - (1 - x) * math.log2(1 - x)


def _lim_by_hand(mu, p, nZ, mZ, nX, mX, eps_sec, eps_cor, lam):
    """Lim et al. per key basis, written out from finite-key.md with plain floats.

    Symmetric use: ε_sec per basis = (ε_sec − 2ε_cor)/2 (2ε_cor reserved for error counts taken from
    corrected keys), ε_cor per basis block = ε_cor/2; the error counts of every key class of each key
    block are announced (the protocol's ec_done), charged as ⌈log2(n+1)⌉ bits each.
    """
    e = (eps_sec - 2 * eps_cor) / 2
    ecor = eps_cor / 2
    m1, m2, m3 = mu
    tau0 = sum(pk * math.exp(-mk) for mk, pk in zip(mu, p))
    tau1 = sum(pk * math.exp(-mk) * mk for mk, pk in zip(mu, p))
    L = math.log(21 / e)

    def counts_pm(c):
        tot = sum(c)
        d = math.sqrt(tot / 2 * L)
        lo = [math.exp(mk) / pk * (ck - d) for mk, pk, ck in zip(mu, p, c)]
        hi = [math.exp(mk) / pk * (ck + d) for mk, pk, ck in zip(mu, p, c)]
        return lo, hi

    def s0_s1(n):
        lo, hi = counts_pm(n)
        s0 = tau0 * (m2 * lo[2] - m3 * hi[1]) / (m2 - m3)
        s1 = tau1 * m1 * (lo[1] - hi[2] - (m2**2 - m3**2) / m1**2 * (hi[0] - s0 / tau0)) / (m1 * (m2 - m3) - m2**2 + m3**2)
        return s0, s1

    def v1(m):
        lo, hi = counts_pm(m)
        return tau1 * (hi[1] - lo[2]) / (m2 - m3)

    def gamma(a, b, c, d):
        return math.sqrt((c + d) * (1 - b) * b / (c * d * math.log(2)) * math.log2((c + d) / (c * d * (1 - b) * b) * 21**2 / a**2))

    out = {}
    for key, (nk, nt, mt) in {"Z": (nZ, nX, mX), "X": (nX, nZ, mZ)}.items():
        s0, s1 = s0_s1(nk)
        _, s1t = s0_s1(nt)
        vt = v1(mt)
        phi = vt / s1t + gamma(e, vt / s1t, s1t, s1)
        disclosed = sum(math.ceil(math.log2(x + 1)) for x in nk)  # key = all intensities
        ell = math.floor(s0 + s1 - s1 * _h(phi) - lam[key] - 6 * math.log2(21 / e) - math.log2(2 / ecor) - disclosed)
        out[key] = dict(s0=s0, s1=s1, v1=vt, phi=phi, ell=ell)
    return out


@pytest.mark.parametrize(
    "mu,p,nZ,mZ,nX,mX",
    [
        (MU, P, [40_000, 6_000, 1_000], [400, 700, 500], [38_000, 5_800, 1_100], [420, 690, 540]),
        ((0.6, 0.2, 0.02), (0.5, 0.3, 0.2), [1_575_000, 345_000, 50_000], [52_500, 25_500, 15_200], [1_570_000, 344_000, 50_500], [52_000, 25_600, 15_300]),
    ],
)
def test_lim2014_matches_hand_computation(mu, p, nZ, mZ, nX, mX):
    eps_sec, eps_cor = 1e-6, 1e-9
    lam = {"Z": 1.1 * binary_entropy(sum(mZ) / sum(nZ)) * sum(nZ), "X": 1.1 * binary_entropy(sum(mX) / sum(nX)) * sum(nX)}
    c = DecoyCounts(n=[nZ, nX], m=[mZ, mX], emitted=[1e9, 1e9, 1e9], intensities=mu, probabilities=p)
    r = estimate(c, "lim2014", eps_sec, eps_cor, lam, key_intensities="all")
    ref = _lim_by_hand(mu, p, nZ, mZ, nX, mX, eps_sec, eps_cor, lam)
    assert r.abort_reason is None
    for b in BASES:
        assert ref[b]["s0"] > 0 and ref[b]["ell"] > 0  # the case exercises every term
        assert r.s0[b] == pytest.approx(ref[b]["s0"], rel=1e-9)
        assert r.s1[b] == pytest.approx(ref[b]["s1"], rel=1e-9)
        assert r.v1_test[b] == pytest.approx(ref[b]["v1"], rel=1e-9)
        assert r.phase_error[b] == pytest.approx(ref[b]["phi"], rel=1e-9)
    assert r.key_length == ref["Z"]["ell"] + ref["X"]["ell"]
    assert r.epsilon_total == pytest.approx(eps_sec + eps_cor, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lim2014", "chernoff", "paper2017"])
def test_more_counts_longer_key_higher_qber_shorter_smaller_eps_shorter(method):
    c = micius(delta=0.0)
    base = estimate(c, method, 1e-9, 1e-12, micius_leak(c))
    assert base.key_length > 0
    big = DecoyCounts(n=2 * c.n, m=2 * c.m, emitted=2 * c.emitted)
    assert estimate(big, method, 1e-9, 1e-12, micius_leak(big)).key_length > 2 * base.key_length * 0.999
    noisy = expected_decoy_counts(EMITTED, MU, P, eta=ETA, y0=Y0, e_d=2 * E_D)
    assert estimate(noisy, method, 1e-9, 1e-12, micius_leak(noisy)).key_length < base.key_length
    assert estimate(c, method, 1e-13, 1e-15, micius_leak(c)).key_length < base.key_length
    assert estimate(c, method, 1e-9, 1e-12, micius_leak(c) + 1000).key_length == base.key_length - 1000


def test_budget_adds_up_and_epsilon_within_request():
    c = micius()
    leak = micius_leak(c)
    for method in ("lim2014", "chernoff"):
        r = estimate(c, method, 1e-9 - 1e-12, 1e-12, leak, extra_cost_bits=0.0)
        assert math.floor(sum(r.budget.values())) == r.key_length
        assert r.epsilon_total <= 1e-9 * (1 + 1e-12)
        assert r.composable
    r = estimate(c, "chernoff", 1e-9 - 1e-12, 1e-12, leak, extra_cost_bits=4096, ev_tag_bits=61)
    ref = estimate(c, "chernoff", 1e-9 - 1e-12, 1e-12, leak, ev_tag_bits=61)
    assert r.key_length == ref.key_length - 4096
    assert r.ev_tag_bits == 61


def test_chernoff_never_weaker_than_lim_on_the_pass():
    c = micius()
    leak = micius_leak(c)
    lim = estimate(c, "lim2014", 1e-9 - 1e-12, 1e-12, leak)
    ch = estimate(c, "chernoff", 1e-9 - 1e-12, 1e-12, leak)
    for b in BASES:
        assert ch.s1[b] > lim.s1[b] and ch.phase_error[b] < lim.phase_error[b]
    assert ch.key_length > lim.key_length


def test_micius_pass_numbers():
    """The 2016-12-19 pass: composable Chernoff bound at ε = 1e-9 with ±5 % intensities."""
    c = micius()
    r = estimate(c, "chernoff", 1e-9 - 1e-12, 1e-12, micius_leak(c))
    assert r.abort_reason is None
    assert 330_000 < r.key_length < 370_000
    true_s1 = EMITTED[0] * 0.25 * 0.8 * math.exp(-0.8) * (Y0 + ETA - Y0 * ETA)  # per basis
    for b in BASES:
        assert 0.75 * true_s1 < r.s1[b] < true_s1  # a valid lower bound, not absurdly loose
        assert 0.0095 < r.phase_error[b] < 0.04  # above the true e1 ≈ 0.95 %
    # a Hamming-like reconciliation (f ≈ 1.5) in the paper-era analysis lands near the paper's 300,939
    paper = estimate(c, "paper2017", 1e-9, 1e-12, 1.5 / 1.05 * micius_leak(c))
    assert not paper.composable
    assert paper.key_length == pytest.approx(300_939, rel=0.05)


def test_intensity_box_is_worst_case():
    """The δ-analysis never gives more key than the δ = 0 analysis at any intensities inside the box."""
    c = micius(delta=0.05)
    leak = micius_leak(c)
    r = estimate(c, "chernoff", 1e-9, 1e-12, leak)
    rng = np.random.default_rng(5)
    samples = [tuple(np.array(MU) * (1 + 0.05 * rng.uniform(-1, 1, 3))) for _ in range(6)]
    corners = [(0.8 * a, 0.1 * b, 0.0) for a in (0.95, 1.05) for b in (0.95, 1.05)]
    for mu in samples + corners:
        ci = DecoyCounts(n=c.n, m=c.m, emitted=c.emitted, intensities=mu, probabilities=P)
        assert estimate(ci, "chernoff", 1e-9, 1e-12, leak).key_length >= r.key_length
    # monotone in each μ here: the worst case is the corner (μ1 low, μ2 high)
    assert r.worst_case_intensities["Z+X"] == pytest.approx((0.76, 0.105, 0.0))
    assert estimate(micius(delta=0.0), "chernoff", 1e-9, 1e-12, leak).key_length > r.key_length


def test_asymptotic_limit_recovers_true_single_photon_yield_and_error():
    """Huge counts, no fluctuation, weak decoy μ2 = 0.005: bounds approach the model's Y1, e1 within 1 %.

    (With the preset's μ2 = 0.1 the vacuum + weak decoy bound keeps a ~5 % multi-photon bias even
    asymptotically — Ma et al. 2005 — so the limit is only the true value for a weak enough decoy.)
    """
    mu, p = (0.5, 0.005, 0.0), (0.5, 0.25, 0.25)
    eta, y0, e_d = 0.01, 1e-5, 0.01
    emitted = np.array([0.5, 0.25, 0.25]) * 1e17
    c = expected_decoy_counts(emitted, mu, p, eta=eta, y0=y0, e_d=e_d)
    y1 = y0 + eta - y0 * eta
    e1 = (0.5 * y0 + e_d * eta) / y1
    true_s1 = emitted[0] * 0.25 * mu[0] * math.exp(-mu[0]) * y1  # signal single photons per basis
    for method in ("chernoff", "lim2014"):
        r = estimate(c, method, 1e-9, 1e-12, 0.0)
        for b in BASES:
            assert r.s1[b] <= true_s1
            assert r.s1[b] == pytest.approx(true_s1, rel=0.01)
            assert r.phase_error[b] >= e1
            assert r.phase_error[b] == pytest.approx(e1, rel=0.01)


# --------------------------------------------------------------------------------------------------
# aborts and bad input
# --------------------------------------------------------------------------------------------------


def test_abort_qber_above_threshold():
    c = expected_decoy_counts(EMITTED, MU, P, eta=ETA, y0=Y0, e_d=0.15)
    r = estimate(c, "chernoff", 1e-9, 1e-12, 0.0)
    assert r.abort_reason == ABORT_QBER and r.key_length == 0


def test_abort_single_photon_bound_not_positive():
    c = DecoyCounts(n=[[1000, 20, 30], [1000, 20, 30]], m=[[10, 1, 15], [10, 1, 15]], emitted=[1e8, 5e7, 5e7])
    for method in ("lim2014", "chernoff"):
        r = estimate(c, method, 1e-9, 1e-12, 0.0)
        assert r.abort_reason == ABORT_S1 and r.key_length == 0


def test_abort_phase_error_bound():
    # errors far above the vacuum floor in every intensity: single-photon error rate ≈ 40 %,
    # plus finite-size widening → the bound reaches 1/2 (QBER threshold lifted to isolate the case)
    c = DecoyCounts(
        n=[[200_000, 20_000, 1_000], [200_000, 20_000, 1_000]],
        m=[[80_000, 8_000, 500], [80_000, 8_000, 500]],
        emitted=[1e9, 5e8, 5e8],
    )
    for method in ("lim2014", "chernoff"):
        r = estimate(c, method, 1e-9, 1e-12, 0.0, qber_abort=0.5)
        assert r.abort_reason == ABORT_PHASE and r.key_length == 0


def test_abort_inconsistent_decoy_errors():
    """The brief's round numbers (decoy QBER 4 %) sit below the vacuum error floor: no μ' fits them."""
    nb = np.array([1.67e6, 0.19e6, 2.5e4]) / 4
    mb = nb * np.array([0.011, 0.04, 0.5])
    c = DecoyCounts(n=[nb, nb], m=[mb, mb], emitted=EMITTED, intensity_fluctuation=0.05)
    for method in ("lim2014", "chernoff", "paper2017"):
        r = estimate(c, method, 1e-9, 1e-12, 1.5e5)
        assert r.abort_reason == ABORT_V1 and r.key_length == 0


def test_no_key_when_costs_exceed_entropy():
    c = micius()
    r = estimate(c, "chernoff", 1e-9, 1e-12, 1e7)
    assert r.key_length == 0 and r.abort_reason is not None


def test_bad_input_is_refused_with_a_named_field():
    with pytest.raises(ValueError, match="μ1 > μ2 \\+ μ3"):
        DecoyCounts(n=np.ones((2, 3)), m=np.zeros((2, 3)), emitted=[1, 1, 1], intensities=(0.2, 0.15, 0.1))
    with pytest.raises(ValueError, match="m: error counts"):
        DecoyCounts(n=np.ones((2, 3)), m=2 * np.ones((2, 3)), emitted=[1, 1, 1])
    with pytest.raises(ValueError, match="intensity_fluctuation"):
        DecoyCounts(n=np.ones((2, 3)), m=np.zeros((2, 3)), emitted=[1, 1, 1], intensities=(0.3, 0.14, 0.0), intensity_fluctuation=0.4)
    with pytest.raises(ValueError, match="exactly 3 intensities"):
        DecoyCounts(n=np.ones((2, 3)), m=np.zeros((2, 3)), emitted=[1, 1, 1], intensities=(0.8, 0.1), probabilities=(0.5, 0.5))
    c = micius()
    with pytest.raises(ValueError, match="method"):
        estimate(c, "gauss")
    with pytest.raises(ValueError, match="eps_sec"):
        estimate(c, "chernoff", 2.0)
    with pytest.raises(ValueError, match="leak_ec_bits"):
        estimate(c, "chernoff", 1e-9, 1e-12, {"Z": 1.0})
    with pytest.raises(ValueError, match="must exceed 2·eps_cor"):
        estimate(c, "chernoff", 1e-12, 1e-12, 0.0)


def test_per_basis_blocks_and_repr():
    c = micius()
    leak = micius_leak(c)
    joint = estimate(c, "chernoff", 1e-9, 1e-12, leak)
    split = estimate(c, "chernoff", 1e-9, 1e-12, {"Z": leak / 2, "X": leak / 2})
    assert abs(split.key_length - joint.key_length) < 0.002 * joint.key_length
    assert split.epsilon_total == pytest.approx(joint.epsilon_total)
    text = repr(joint)
    assert "chernoff" in text and "φ ≤" in text and f"{joint.key_length:,}" in text
    assert "DecoyCounts(" in repr(c)
