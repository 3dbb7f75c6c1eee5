"""Estimation modes of issue 8 §2: intensity models (fixed_offset, per_pulse, iid_uniform) and key sets
(signal, signal+decoy, all) of satqkd.postprocess.estimation.

Hand computations use plain floats and scipy quadrature, independently of the implementation; the
Monte-Carlo check draws the intensity fluctuation exactly as the simulator does
(``quantum.source.draw_mean_photon_numbers``: one U[−δ, δ] value per slice and class) and compares the
bounds with the true photon-number-resolved counts of the draw.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from satqkd.postprocess.estimation import (
    DECOY_STATISTICS,
    INTENSITY_MODELS,
    bernstein_deviation,
    joint_linear_bound,
    KEY_SETS,
    DecoyCounts,
    binary_entropy,
    decoy_bounds_weights,
    decoy_yield_bounds,
    estimate,
    expected_decoy_counts,
    label_probability_bounds,
    poisson_mixture_weights,
)
from satqkd.quantum.source import draw_mean_photon_numbers

# the Micius 2016-12-19 pass as expected counts (tests/micius_counts.py)
from micius_counts import E_D, EMITTED, ETA, MU, P, Y0, micius


def leak_for(c: DecoyCounts, key_set: str) -> float:
    idx = {"signal": [0], "signal+decoy": [0, 1], "all": [0, 1, 2]}[key_set]
    n = c.n[:, idx].sum()
    return 1.05 * binary_entropy(c.m[:, idx].sum() / n) * n


# --------------------------------------------------------------------------------------------------
# class probabilities
# --------------------------------------------------------------------------------------------------


def test_poisson_mixture_weights_equal_quadrature_and_poisson_at_zero_band():
    w = poisson_mixture_weights(MU, 0.05, 6)
    for k, m in enumerate(MU[:2]):
        a, b = 0.95 * m, 1.05 * m
        for n in range(7):
            q, _ = integrate.quad(lambda x: math.exp(-x) * x**n / math.factorial(n), a, b, epsabs=1e-16, epsrel=1e-13)
            assert w[n, k] == pytest.approx(q / (b - a), rel=1e-9, abs=1e-300)
    assert w[0, 2] == 1.0 and np.all(w[1:, 2] == 0.0)  # the vacuum class never fluctuates
    assert np.allclose(poisson_mixture_weights(MU, 0.0, 6), stats.poisson.pmf(np.arange(7)[:, None], np.array(MU)[None, :]))
    # x ↦ e^{-x} x^4/4! is convex below x = 2: the mixture has more 4-photon weight than its mean's Poisson law
    assert w[4, 0] > stats.poisson.pmf(4, 0.8)


def test_per_pulse_label_bounds_contain_every_intensity_in_the_band():
    rng = np.random.default_rng(11)
    wb = label_probability_bounds(MU, P, 0.05, "per_pulse")
    x = np.array(MU)[None, :] * (1 + rng.uniform(-0.05, 0.05, size=(20000, 3)))
    x[:0] = 0  # keep shape
    x = np.vstack([x, [[0.76, 0.105, 0], [0.84, 0.095, 0], [0.76, 0.095, 0], [0.84, 0.105, 0]]])
    p = np.array(P)
    for n in range(6):
        w = p * stats.poisson.pmf(n, x)
        cond = w / w.sum(axis=1, keepdims=True)
        assert np.all(cond >= wb.lower[n] - 1e-15) and np.all(cond <= wb.upper[n] + 1e-15)
        # and the extremes are attained (to the sampling resolution) at the corners of the band
        assert cond.min(axis=0) == pytest.approx(wb.lower[n], rel=1e-9, abs=1e-15)
        assert cond.max(axis=0) == pytest.approx(wb.upper[n], rel=1e-9, abs=1e-15)
    # ratio sup_{n>=2} U_decoy|n / L_signal|n: for Poisson-type weights the supremum is at n = 2
    assert wb.ratio == pytest.approx(wb.upper[2, 1] / wb.lower[2, 0], rel=1e-12)


def test_iid_uniform_label_probabilities_hand_value():
    wb = label_probability_bounds(MU, P, 0.05, "iid_uniform")
    a1, b1, a2, b2 = 0.76, 0.84, 0.095, 0.105
    P1 = (math.exp(-a1) * (1 + a1) - math.exp(-b1) * (1 + b1)) / (b1 - a1)  # ∫ x e^{-x} dx / width
    P2 = (math.exp(-a2) * (1 + a2) - math.exp(-b2) * (1 + b2)) / (b2 - a2)
    assert wb.lower[1, 0] == pytest.approx(0.5 * P1 / (0.5 * P1 + 0.25 * P2), rel=1e-10)
    assert np.array_equal(wb.lower, wb.upper)


# --------------------------------------------------------------------------------------------------
# the weight-form decoy bounds: hand case, and what each assumption buys
# --------------------------------------------------------------------------------------------------


def test_weight_bounds_hand_case_and_poisson_limit_equals_lim():
    # Poisson weights (band 0): s1 bound by hand from the weight-form inequality, and v1 = Lim Eq. (4)
    wb = label_probability_bounds(MU, P, 0.0, "iid_uniform")
    nl = np.array([400_000.0, 30_000.0, 3_000.0])
    nh = np.array([401_000.0, 30_500.0, 3_100.0])
    ml = np.array([4_000.0, 1_500.0, 1_450.0])
    mh = np.array([4_100.0, 1_600.0, 1_550.0])
    s0l, s0h, s1l, w1 = decoy_bounds_weights(nl, nh, ml, mh, wb)
    p1, p2, p3 = P
    m1, m2 = 0.8, 0.1
    t = [p1 * math.exp(-m1) * m1**n / math.factorial(n) + p2 * math.exp(-m2) * m2**n / math.factorial(n) + (p3 if n == 0 else 0) for n in range(3)]
    pk = lambda k, n: ([p1 * math.exp(-m1) * m1**n, p2 * math.exp(-m2) * m2**n, p3 if n == 0 else 0.0][k] / math.factorial(n)) / t[n]
    R = pk(1, 2) / pk(0, 2)
    assert R == pytest.approx(p2 / p1 * math.exp(m1 - m2) * (m2 / m1) ** 2, rel=1e-12)
    s0l_h, s0h_h = 3000 / pk(2, 0), 3100 / pk(2, 0)
    c0 = pk(1, 0) - R * pk(0, 0)
    s1_h = (30_000 - R * 401_000 - (s0h_h * c0 if c0 > 0 else s0l_h * c0)) / (pk(1, 1) - R * pk(0, 1))
    assert (s0l, s0h, s1l) == pytest.approx((s0l_h, s0h_h, s1_h), rel=1e-12)
    # errors: the same as Lim's Eq. (4) (with the signal–vacuum pair added) in s-units: v1 = τ1 z1
    _, _, z1 = decoy_yield_bounds(np.array(MU), nl, nh, ml, mh, scale=1 / np.array(P), error_pairs=((1, 2), (0, 2)))
    assert w1 == pytest.approx(t[1] * z1, rel=1e-12)
    # and s1 is Lim's Eq. (3) except that one s0 (its upper bound) enters both vacuum terms, where
    # Lim use N+_3 in one and y0 = N−_3 in the other: tighter by (μ2/μ1)²(N+_3 − N−_3)·μ1/(μ1μ2 − μ2²)·τ1
    _, y1, _ = decoy_yield_bounds(np.array(MU), nl, nh, scale=1 / np.array(P))
    gain = (m2 / m1) ** 2 * (3100 - 3000) / p3 * m1 / (m1 * m2 - m2**2) * t[1]
    assert s1l - t[1] * y1 == pytest.approx(gain, rel=1e-6)


def _slice_attack_counts(yields=([0.0, 0.1, 0.8, 0.7], [1.0, 0.1, 0.1, 0.1])):
    """Expected detections (per class) and single-photon detections of an Eve who knows each slice's
    intensities (two kinds of slices at opposite corners of the ±5 % band) and chooses photon-number
    yields per kind (the defaults found by a random search)."""
    corners = [np.array([0.76, 0.105, 0.0]), np.array([0.84, 0.095, 0.0])]
    yields = [np.asarray(y, dtype=float) for y in yields]
    nk = np.zeros(3)
    s1 = 0.0
    for x, y in zip(corners, yields):
        for k in range(3):
            d = np.array(P)[k] * stats.poisson.pmf(np.arange(4), x[k]) * y
            nk[k] += d.sum()
            s1 += d[1]
    return nk, s1


def test_iid_uniform_fails_against_a_slice_aware_eve_per_pulse_holds():
    """The mixture model needs fluctuations Eve cannot learn: with slice-shared fluctuations known to
    Eve its single-photon bound exceeds the truth, while the per-pulse worst case stays valid."""
    nk, s1_true = _slice_attack_counts()
    s1_iid = decoy_bounds_weights(nk, nk, None, None, label_probability_bounds(MU, P, 0.05, "iid_uniform"))[2]
    s1_pp = decoy_bounds_weights(nk, nk, None, None, label_probability_bounds(MU, P, 0.05, "per_pulse"))[2]
    assert s1_iid > 1.2 * s1_true
    assert s1_pp <= s1_true


def test_fixed_offset_fails_against_a_slice_aware_eve_per_pulse_holds():
    """A fixed unknown offset is not what per-slice fluctuations are: an Eve who knows which slices
    sit at which corner of the band makes the fixed-offset single-photon bound (minimum over the whole
    box, no statistics) exceed the truth by ≈ 10 %, while the per-pulse bound stays below it."""
    nk, s1 = _slice_attack_counts(([0.0, 0.6, 0.8, 0.3], [0.9, 0.1, 0.2, 0.2]))
    g = np.array([[a, b, 0.0] for a in np.linspace(0.76, 0.84, 41) for b in np.linspace(0.095, 0.105, 41)])
    _, y1, _ = decoy_yield_bounds(g, nk, nk, scale=1 / np.array(P))
    tau1 = (np.array(P) * np.exp(-g) * g).sum(axis=1)
    assert np.min(tau1 * y1) > 1.08 * s1
    assert decoy_bounds_weights(nk, nk, None, None, label_probability_bounds(MU, P, 0.05, "per_pulse"))[2] <= s1


def test_per_pulse_bound_is_valid_for_exact_expected_counts_of_any_slice_mixture():
    """Deterministic: expected counts (no statistics) of random slice-dependent channels with intensities
    anywhere in the band; the per-pulse bounds never exceed the true s1 and never undercut the true w1."""
    rng = np.random.default_rng(5)
    wb = label_probability_bounds(MU, P, 0.05, "per_pulse")
    n = np.arange(12)
    for _ in range(300):
        k_sl = rng.integers(1, 6)
        x = np.array(MU)[None, :] * (1 + rng.uniform(-0.05, 0.05, size=(k_sl, 3)))
        y = rng.random((k_sl, 12)) ** rng.uniform(0.3, 4)
        e = rng.random((k_sl, 12)) * 0.5  # error probability per slice and photon number
        nk = np.zeros(3)
        mk = np.zeros(3)
        s1 = w1 = 0.0
        for s in range(k_sl):
            for k in range(3):
                d = P[k] * stats.poisson.pmf(n, x[s, k]) * y[s]
                nk[k] += d.sum()
                mk[k] += (d * e[s]).sum()
                s1 += d[1]
                w1 += d[1] * e[s, 1]
        _, _, s1l, w1u = decoy_bounds_weights(nk, nk, mk, mk, wb)
        assert s1l <= s1 * (1 + 1e-9) + 1e-12
        assert w1u >= w1 * (1 - 1e-9) - 1e-12


# --------------------------------------------------------------------------------------------------
# Monte Carlo with the simulator's per-slice fluctuation draws (honest channel)
# --------------------------------------------------------------------------------------------------


def _mc_pass(rng, delta=0.05, n_slices=200, pulses_per_slice=2_000_000, eta=3e-3, y0=3e-5, e_d=0.01):
    """Per-slice sampling like quantum.sampler: actual intensities from draw_mean_photon_numbers, then
    multinomial photon numbers per class, binomial detection and errors per photon number. Returns the
    count tables and the truth: single-photon detections (per basis, per class) and their phase errors."""
    mu_act = draw_mean_photon_numbers(MU, delta, n_slices, rng)
    nmax = 8
    nph = np.arange(nmax + 1)
    det = np.zeros((2, 3, nmax + 1))
    err = np.zeros((2, 3, nmax + 1))
    for s in range(n_slices):
        cls = rng.multinomial(pulses_per_slice, P)
        for b in range(2):  # sifted into basis b with probability 1/4 each
            for k in range(3):
                nb = rng.binomial(cls[k], 0.25)
                pn = stats.poisson.pmf(nph, mu_act[s, k])
                counts = rng.multinomial(nb, np.append(pn, max(0.0, 1 - pn.sum()))[: nmax + 2] / max(1.0, pn.sum() + max(0.0, 1 - pn.sum())))[: nmax + 1]
                yn = 1 - (1 - y0) * (1 - eta) ** nph
                en = np.where(nph == 0, 0.5, (0.5 * y0 + e_d * (1 - (1 - eta) ** nph)) / yn)
                d = rng.binomial(counts, yn)
                det[b, k] += d
                err[b, k] += rng.binomial(d, en)
    n = det.sum(axis=2)
    m = err.sum(axis=2)
    # phase errors of a basis' single photons: what the other basis measures on them (symmetric channel)
    e1 = (0.5 * y0 + e_d * eta) / (1 - (1 - y0) * (1 - eta))
    truth_s1 = det[:, :, 1]
    truth_w1 = np.array([[rng.binomial(int(truth_s1[b, k]), e1) for k in range(3)] for b in range(2)])
    return n, m, truth_s1, truth_w1


@pytest.mark.parametrize("stat", DECOY_STATISTICS)
@pytest.mark.parametrize("model", ["per_pulse", "iid_uniform", "fixed_offset"])
def test_monte_carlo_bounds_hold_under_simulator_fluctuations(model, stat):
    rng = np.random.default_rng(20261201)
    for trial in range(3):
        n, m, s1_true, w1_true = _mc_pass(rng)
        c = DecoyCounts(n=n, m=m, emitted=np.array([1.0, 1.0, 1.0]) * 4e8, intensity_fluctuation=0.05)
        for ks in ("signal", "signal+decoy"):
            idx = [0] if ks == "signal" else [0, 1]
            r = estimate(c, "chernoff", eps_sec=1e-6, eps_cor=1e-9, leak_ec_bits=0.0, key_intensities=ks,
                         intensity_model=model, decoy_statistics=stat, grid_points=5)
            assert r.abort_reason is None
            for bi, b in enumerate(("Z", "X")):
                assert r.s1[b] <= s1_true[bi, idx].sum()
                assert r.phase_error[b] * r.s1[b] >= w1_true[bi, idx].sum()
                # the bounds are not vacuous: within 30 % of the truth
                assert r.s1[b] > 0.7 * s1_true[bi, idx].sum()


# --------------------------------------------------------------------------------------------------
# the pass: ordering of the modes, ε monotonicity, the result record
# --------------------------------------------------------------------------------------------------


def test_micius_modes_order_and_values():
    c = micius()
    ell = {}
    for ks in KEY_SETS:
        for im in INTENSITY_MODELS:
            r = estimate(c, "chernoff", leak_ec_bits=leak_for(c, ks), key_intensities=ks, intensity_model=im)
            assert r.abort_reason is None
            ell[ks, im] = r.key_length
            assert r.estimation_mode == f"chernoff/{ks}/{im}/per_count"
    for ks in KEY_SETS:
        # per-pulse worst case covers more than a fixed offset, so it cannot give more key; the
        # mixture (fluctuations unknown to Eve) gives more than both
        assert ell[ks, "per_pulse"] <= ell[ks, "fixed_offset"] < ell[ks, "iid_uniform"]
    # decoy bits are worth their reconciliation; vacuum bits (QBER 1/2) are not
    assert ell["signal+decoy", "per_pulse"] > ell["signal", "per_pulse"] + 25_000
    assert ell["all", "per_pulse"] < ell["signal+decoy", "per_pulse"]
    # the band costs the mixture almost nothing (second order in δ)
    r0 = estimate(micius(0.0), "chernoff", leak_ec_bits=leak_for(c, "signal"), intensity_model="iid_uniform")
    assert ell["signal", "iid_uniform"] > 0.99 * r0.key_length


@pytest.mark.parametrize("model", INTENSITY_MODELS)
@pytest.mark.parametrize("key_set", KEY_SETS)
def test_smaller_eps_shorter_key_and_wider_band_shorter_key(model, key_set):
    c = micius()
    leak = leak_for(c, key_set)
    ells = [estimate(c, "chernoff", eps_sec=e, eps_cor=1e-13, leak_ec_bits=leak, key_intensities=key_set,
                     intensity_model=model).key_length for e in (1e-6, 1e-9, 1e-12)]
    assert ells[0] > ells[1] > ells[2]
    bands = [estimate(micius(d), "chernoff", leak_ec_bits=leak, key_intensities=key_set, intensity_model=model).key_length
             for d in (0.0, 0.02, 0.05)]
    assert bands[0] >= bands[1] > bands[2]


def test_result_records_mode_and_assumptions():
    r = estimate(micius(), "chernoff", leak_ec_bits=2e5, key_intensities="signal+decoy", intensity_model="per_pulse")
    d = r.as_dict()
    assert d["estimation_mode"] == "chernoff/signal+decoy/per_pulse/per_count"
    assert any("known to Eve" in a for a in d["estimation_assumptions"])
    assert any("vacuum bits are disclosed" in a for a in d["estimation_assumptions"])
    assert d["key_length"] == r.key_length and sum(d["epsilon_parts"].values()) == pytest.approx(r.epsilon_total)
    r2 = estimate(micius(), "chernoff", leak_ec_bits=2e5, intensity_model="iid_uniform")
    assert any("NOT satisfied" in a for a in r2.assumptions)
    assert r2.epsilon_total <= 1e-9 * (1 + 1e-12)


def test_mode_input_errors_name_the_field():
    with pytest.raises(ValueError, match="intensity_model"):
        estimate(micius(), intensity_model="gaussian")
    with pytest.raises(ValueError, match="method='chernoff' only"):
        estimate(micius(), "lim2014", intensity_model="per_pulse")
    with pytest.raises(ValueError, match="key_intensities"):
        estimate(micius(), key_intensities="decoy")
    c = expected_decoy_counts(EMITTED, (0.8, 0.1, 0.01), P, eta=ETA, y0=Y0, e_d=E_D, intensity_fluctuation=0.05)
    with pytest.raises(ValueError, match="vacuum third"):
        estimate(c, intensity_model="per_pulse")


# --------------------------------------------------------------------------------------------------
# joint statistics (Bernstein bound on the single-photon combination)
# --------------------------------------------------------------------------------------------------


def test_bernstein_deviation_hand_values():
    # β = ln(1/ε) = 2: t² = 2β(V + b t/3) → b = 0: t = sqrt(4 V); b = 3: t = 2 + sqrt(4 + 4 V)
    assert bernstein_deviation(100.0, 0.0, math.exp(-2.0)) == pytest.approx(20.0, rel=1e-14)
    assert bernstein_deviation(100.0, 3.0, math.exp(-2.0)) == pytest.approx(2.0 + math.sqrt(404.0), rel=1e-14)
    with pytest.raises(ValueError, match="must be ≥ 0"):
        bernstein_deviation(-1.0, 0.0, 0.1)


def test_joint_linear_bound_coverage_with_heterogeneous_labels():
    """Detections with different class probabilities (as for different photon numbers); the joint
    lower bound on Λ = Σ a_k n*_k fails with frequency ≤ ε, and it is narrower than the per-count sum."""
    rng = np.random.default_rng(3)
    probs = np.array([[0.20, 0.45, 0.35], [0.93, 0.07, 0.0], [0.99, 0.01, 0.0]])  # n = 0, 1, ≥ 2
    sizes = np.array([3_000, 20_000, 7_000])
    coef = np.array([-0.05, 1.0, -0.9])
    expected = (sizes[:, None] * probs).sum(axis=0)
    lam_true = float(coef @ expected)
    eps = 0.02
    fails = 0
    trials = 3000
    for _ in range(trials):
        obs = sum(rng.multinomial(sz, pr) for sz, pr in zip(sizes, probs))
        fails += joint_linear_bound(coef, obs, expected, eps, "lower") > lam_true
    assert fails / trials <= eps
    # the widths add in quadrature: narrower than the sum of the per-count Bernstein widths
    joint = bernstein_deviation(float(coef**2 @ expected), float(coef.max() - coef.min()), eps)
    per_count = sum(abs(a) * bernstein_deviation(e, 1.0, eps) for a, e in zip(coef, expected))
    assert joint < 0.8 * per_count


@pytest.mark.parametrize("model", INTENSITY_MODELS)
def test_joint_statistics_raise_s1_and_key(model):
    c = micius()
    leak = leak_for(c, "signal+decoy")
    a = estimate(c, leak_ec_bits=leak, key_intensities="signal+decoy", intensity_model=model, decoy_statistics="per_count")
    b = estimate(c, leak_ec_bits=leak, key_intensities="signal+decoy", intensity_model=model, decoy_statistics="joint")
    assert b.s1["Z"] > a.s1["Z"] + 2_000 and b.key_length > a.key_length + 4_000
    assert sum(b.bound_failure_probabilities.values()) <= 1e-9
    assert any("joint bound" in k for k in b.bound_failure_probabilities)
    assert b.estimation_mode.endswith("/joint") and any("Bernstein" in x for x in b.assumptions)
    with pytest.raises(ValueError, match="decoy_statistics"):
        estimate(c, decoy_statistics="pooled")


# --------------------------------------------------------------------------------------------------
# the protocol's key set follows the estimation's
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_set", KEY_SETS)
def test_protocol_key_set_matches_the_estimation(key_set):
    """Short pass (15 s): the sifted key bits are exactly the sifted detections of the key classes, the
    announced error counts fill those classes, the keys agree, and the result names the mode."""
    import satqkd
    from satqkd.protocol.session import postprocess
    from synthetic_passes import preset_pass_cut

    cfg = satqkd.load_preset("micius-2016-12-19")
    cfg = cfg.model_copy(update={"security": cfg.security.model_copy(update={"key_intensities": key_set})})
    raw = satqkd.simulate(cfg, seed=4, geometry=preset_pass_cut(cfg, 15)).raw
    r = postprocess(raw, cfg, seed=4)
    assert r.ok and r.keys_match, r.abort_reason
    idx = {"signal": [0], "signal+decoy": [0, 1], "all": [0, 1, 2]}[key_set]
    n = np.asarray(r.bob.counts["n"])
    assert r.bob.sifted_key_bits == n[:, idx].sum()
    est = r.bob.estimate
    assert est.estimation_mode == f"chernoff/{key_set}/{cfg.security.intensity_model}/{cfg.security.decoy_statistics}"
    assert est.key_intensities == key_set and est.as_dict()["estimation_assumptions"]
    # Alice and Bob computed the same estimate from the same public numbers
    assert r.alice.estimate.key_length == est.key_length == r.final_key_bits
    assert r.alice.counts["m"] == r.bob.counts["m"]
    m = np.asarray(r.bob.counts["m"])
    assert 0 < m[:, 0].sum() < 0.03 * n[:, 0].sum()  # the key bits' errors, announced after error correction
    if key_set != "signal":
        assert 0.01 * n[:, 1].sum() < m[:, 1].sum() < 0.09 * n[:, 1].sum()  # decoy key bits: 2–6 % (background share)


@pytest.mark.parametrize("model", INTENSITY_MODELS)
def test_simulated_pass_bounds_below_the_truth_fields(model):
    """A short simulated pass (the real sampler: per-slice fluctuations in RawRecords.meta
    ["truth_mean_photon_number"], transmittance in "truth_transmittance"): the single-photon bound of
    each key basis stays below the expected single-photon share of the key set's sifted detections,
    computed from the truth fields with the honest click law of quantum.attacks, and is not vacuous."""
    import satqkd
    from satqkd.protocol.session import postprocess
    from satqkd.quantum import attacks as atk
    from synthetic_passes import preset_pass_cut

    cfg = satqkd.load_preset("micius-2016-12-19")
    cfg = cfg.model_copy(update={"security": cfg.security.model_copy(update={"intensity_model": model})})
    sim = satqkd.simulate(cfg, seed=9, geometry=preset_pass_cut(cfg, 20))
    r = postprocess(sim.raw, cfg, seed=9)
    assert r.ok and r.keys_match, r.abort_reason
    meta = sim.raw.meta
    assert np.ptp(meta["truth_mean_photon_number"][:, 0]) > 0.05 * 0.8  # the draws span the band
    law = atk.click_table(atk.Attack("none", 1.0), meta["truth_mean_photon_number"], meta["truth_transmittance"],
                          sim.link.detector_efficiency, meta["truth_misalignment"], mu_signal=0.8)
    w = sim.raw.slice_emitted.sum(axis=1)[:, None] * np.asarray(P)[None, :]
    share = (w[:, :2] * law.by_photon_number[:, :2, 1]).sum(axis=0) / (w[:, :2] * law.p_click[:, :2]).sum(axis=0)
    n = np.asarray(r.bob.counts["n"])
    est = r.bob.estimate
    for bi, b in enumerate(("Z", "X")):
        truth = float((n[bi, :2] * share[:2]).sum())  # default key set: signal + decoy
        assert 0.6 * truth < est.s1[b] <= truth


# --------------------------------------------------------------------------------------------------
# review of issue 8 §2 (estimation branch): disclosure, adversarial coverage, assumptions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lim2014", "chernoff"])
@pytest.mark.parametrize("key_set", KEY_SETS)
def test_every_announced_key_error_count_is_charged(method, key_set):
    """The protocol announces the error count of every key class per basis (``ec_done`` in
    protocol/parties.py: the key QBER abort and the test-basis bounds use them); every announced
    count is public and costs ⌈log2(n_Bk + 1)⌉ bits, whatever the method needs of it."""
    c = micius()
    r = estimate(c, method, leak_ec_bits=leak_for(c, key_set), key_intensities=key_set)
    idx = {"signal": [0], "signal+decoy": [0, 1], "all": [0, 1, 2]}[key_set]
    expected = sum(math.ceil(math.log2(c.n[b, k] + 1.0)) for b in range(2) for k in idx)
    assert r.disclosure_bits == expected


@pytest.mark.parametrize("stat", DECOY_STATISTICS)
def test_default_modes_cover_a_tight_slice_aware_attack_with_statistics(stat):
    """Monte Carlo with the truth against an adversarial channel, not an honest one: every pulse at the
    band corner (0.76, 0.105) that Eve knows, photon-number yields (0, 0.05, 1, 0) (a PNS-like channel
    with no vacuum and no multi-photon errors) and single-photon errors 3 % in both bases. For this
    channel the per-pulse decoy inequalities are *tight*: fed the exact expected counts they return
    the true s1 and w1. So the only slack left is statistics: without widening (observed counts
    plugged in) the s1 bound exceeds the truth in about half of the draws, with the default widening
    (per-count Chernoff or joint Bernstein) it must fail at most with its nominal probability.

    Detections are Poisson per (basis, class, photon number): given the totals per photon number the
    class labels are then multinomial with P(k | n, x), the independence the bounds rely on.
    Bounded: 200 draws × 2 bases; ε large (per bound 0.01) so that a too-narrow width would show."""
    x = np.array([0.8 * 0.95, 0.1 * 1.05, 0.0])
    y = np.array([0.0, 0.05, 1.0, 0.0])
    e1 = 0.03
    nph = np.arange(4)
    lam = 0.25 * 4e7 * np.asarray(P)[:, None] * np.array([stats.poisson.pmf(nph, xk) for xk in x]) * y[None, :]
    wb = label_probability_bounds(MU, P, 0.05, "per_pulse")
    nk, s1_exp = lam.sum(axis=1), lam[:, 1].sum()
    mk = lam[:, 1] * e1
    _, _, s1_tight, w1_tight = decoy_bounds_weights(nk, nk, mk, mk, wb)
    assert s1_tight == pytest.approx(s1_exp, rel=1e-9) and w1_tight == pytest.approx(s1_exp * e1, rel=1e-9)

    rng = np.random.default_rng(20261201)
    draws, fail_s1, fail_w, fail_plug, ratio = 200, 0, 0, 0, []
    for _ in range(draws):
        det = rng.poisson(np.broadcast_to(lam, (2,) + lam.shape))
        err = np.zeros_like(det)
        err[:, :, 1] = rng.binomial(det[:, :, 1], e1)
        n, m = det.sum(axis=2).astype(float), err.sum(axis=2).astype(float)
        c = DecoyCounts(n=n, m=m, emitted=4e7 * np.asarray(P), intensity_fluctuation=0.05)
        r = estimate(c, "chernoff", eps_sec=0.44, eps_cor=1e-6, leak_ec_bits=0.0, key_intensities="signal+decoy",
                     intensity_model="per_pulse", decoy_statistics=stat)
        assert r.abort_reason is None
        for bi, b in enumerate(("Z", "X")):
            s1_true = int(det[bi, :2, 1].sum())  # key set signal+decoy: its single-photon detections
            w_true = rng.binomial(s1_true, e1)  # their phase errors (symmetric single-photon errors)
            fail_s1 += r.s1[b] > s1_true
            fail_w += r.phase_error[b] * r.s1[b] < w_true
            fail_plug += decoy_bounds_weights(n[bi], n[bi], None, None, wb)[2] > s1_true
            ratio.append(r.s1[b] / s1_true)
    fp = r.bound_failure_probabilities
    per_bound = fp["Z key: n_Z,signal upper"]
    assert 0.009 < per_bound < 0.013  # 0.5·ε_sec over 18 (per_count) or 22 (joint) named bounds
    # s1 uses at most 6 named bounds (counts, joint, key share); the phase errors 3 error-count bounds + sampling
    assert fail_s1 <= 6 * per_bound * 2 * draws
    assert fail_w <= (3 * per_bound + fp["Z key: phase-error sampling"]) * 2 * draws
    assert fail_plug > 0.3 * 2 * draws  # the attack is tight: statistics are what this test checks
    assert np.mean(ratio) > 0.9  # and the widened bound is not vacuous


def test_default_assumptions_state_the_empty_vacuum_class():
    """per_pulse / iid_uniform / joint use P(vacuum | n ≥ 1) = 0 (s0 from the vacuum counts alone, the
    1/½ key/test split of single photons, the a_3 coefficient of the joint bound): a vacuum state with a
    finite extinction ratio is not covered, and the result must say so."""
    for model in ("per_pulse", "iid_uniform"):
        for stat in DECOY_STATISTICS:
            r = estimate(micius(), leak_ec_bits=2e5, key_intensities="signal+decoy", intensity_model=model,
                         decoy_statistics=stat)
            assert any("emits no photon" in a for a in r.assumptions), (model, stat)
    r = estimate(micius(), leak_ec_bits=2e5, decoy_statistics="joint")
    assert any("emits no photon" in a for a in r.assumptions)


@pytest.mark.parametrize("ec", ["cascade", "ldpc"])
def test_ec_qber_hint_is_only_a_parameter(ec):
    """With decoy bits in the key the EC hint comes from the calibrated contrast, not from data. The key
    length must be a function of the public counts, the bits actually disclosed, the tags and the ε
    budget only: recompute it from those and get the same ℓ, also with a hint that is far off (a
    contrast 10× worse than the true one changes the EC parameters, not the way ℓ is computed)."""
    import satqkd
    from satqkd.postprocess.estimation import DecoyCounts as DC
    from satqkd.protocol.session import postprocess
    from synthetic_passes import preset_pass_cut

    cfg = satqkd.load_preset("micius-2016-12-19")
    raw = satqkd.simulate(cfg, seed=4, geometry=preset_pass_cut(cfg, 15)).raw
    wrong = cfg.model_copy(update={"polarization": cfg.polarization.model_copy(
        update={"intrinsic_contrast": cfg.polarization.intrinsic_contrast / 10})})
    leaks = []
    for c in (cfg, wrong):
        r = postprocess(raw, c, seed=4, ec=ec)
        leaks.append(r.bob.leak_ec_bits)
        assert r.ok and r.keys_match, r.abort_reason
        est = r.bob.estimate
        cnt = r.bob.counts
        counts = DC(n=cnt["n"], m=cnt["m"], emitted=cnt["emitted"], intensities=MU, probabilities=P,
                    intensity_fluctuation=c.source.intensity_fluctuation)
        eps_cor = est.epsilon_parts["correctness ε_cor (error verification)"]
        again = estimate(counts, "chernoff", eps_sec=est.epsilon_total - eps_cor, eps_cor=eps_cor,
                         leak_ec_bits=est.leak_ec_bits, extra_cost_bits=est.extra_cost_bits,
                         ev_tag_bits=int(est.ev_tag_bits), key_intensities=est.key_intensities,
                         intensity_model=est.intensity_model, decoy_statistics=est.decoy_statistics)
        assert again.key_length == est.key_length == r.final_key_bits
        assert est.leak_ec_bits == r.bob.leak_ec_bits  # the bits actually disclosed, not f·h(hint)
        # every ε term of the run: the estimate's parts + authentication = the configured total
        parts = r.bob.epsilon_parts
        assert "authentication (forgery)" in parts and parts["authentication (forgery)"] > 0
        assert sum(parts.values()) == pytest.approx(c.security.epsilon, rel=1e-12)
    assert leaks[1] > leaks[0]  # the bad hint did reach error correction (it costs disclosed bits)


def test_default_epsilon_ledger_names_every_bound_used():
    """Default modes (signal+decoy / per_pulse / joint, one block): one named failure probability per
    one-sided bound that enters s0, s1 or v1 (n: signal upper, decoy lower and upper, vacuum lower and
    upper; m of the test basis: signal upper, decoy upper, vacuum lower; two key-set shares; the joint
    bound), they sum to the decoy share, the sampling bounds to ≤ ε_s²/2, and the parts to ε_sec + ε_cor."""
    eps_sec, eps_cor = 1e-9 - 1e-12, 1e-12
    r = estimate(micius(), eps_sec=eps_sec, eps_cor=eps_cor, leak_ec_bits=2e5, key_intensities="signal+decoy",
                 intensity_model="per_pulse", decoy_statistics="joint")
    fp = r.bound_failure_probabilities
    for b, t in (("Z", "X"), ("X", "Z")):
        want = {f"{b} key: n_{b},signal upper", f"{b} key: n_{b},decoy lower",
                f"{b} key: n_{b},decoy upper (variance of the joint bound)", f"{b} key: n_{b},vacuum lower",
                f"{b} key: n_{b},vacuum upper", f"{b} key: m_{t},signal upper", f"{b} key: m_{t},decoy upper",
                f"{b} key: m_{t},vacuum lower", f"{b} key: key-set share of single-photon events",
                f"{b} key: key-set share of vacuum events", f"{b} key: joint bound on the s1 combination of n_{b}",
                f"{b} key: phase-error sampling"}
        assert {k for k in fp if k.startswith(f"{b} key:")} == want
    e = eps_sec - 2 * eps_cor
    parts = r.epsilon_parts
    decoy = sum(v for k, v in fp.items() if "sampling" not in k)
    assert decoy == pytest.approx(parts["Z+X block: decoy-state bounds (Σ of their failure probabilities)"], rel=1e-12)
    eps_s = parts["Z+X block: smoothing 2·ε_s (phase-error sampling fails w.p. ≤ ε_s²/2)"] / 2
    assert fp["Z key: phase-error sampling"] + fp["X key: phase-error sampling"] <= eps_s**2 / 2
    assert sum(parts.values()) == pytest.approx(eps_sec + eps_cor, rel=1e-12) == r.epsilon_total
    assert parts["EC-derived error counts (2·ε_cor)"] == pytest.approx(2 * eps_cor) and decoy + 2 * eps_s + parts[
        "Z+X block: privacy amplification ε_PA"] == pytest.approx(e, rel=1e-12)
