"""Photon sampling: routing, exact slice sampling vs the per-pulse reference vs closed-form decoy statistics.

The closed-form reference is the Ma–Qi–Zhao–Lo (PRA 72, 012326 (2005)) gain/error model applied per
detector of the passive four-detector receiver, gated and squashed; it is checked here by brute-force
enumeration of the 16 click patterns, independently of ``satqkd.quantum.detector.expected_statistics``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import poisson

from satqkd.config import load_preset
from satqkd.quantum import match_alice, sample_pass, sample_slice_per_pulse, synchronise
from satqkd.quantum import detector as qdet
from satqkd.quantum import sampler as qs
from satqkd.records import LinkSeries

MU = np.array([0.8, 0.1, 0.0])


def const_link(duration_s, eta, e_d, bg_hz, *, dark_hz=25.0, eta_det=0.5, range_m=800e3, range_rate_m_s=5e3):
    """A link constant in η, e_d and background, with a range changing linearly (realistic flight time)."""
    t = np.linspace(0.0, duration_s, 5)
    n = t.size
    bg = np.asarray(bg_hz, dtype=float)
    bg = np.broadcast_to(bg, (n,) + bg.shape).copy()
    return LinkSeries(
        t_s=t,
        range_m=range_m + range_rate_m_s * t,
        elevation_deg=np.full(n, 40.0),
        loss_db={"total": np.full(n, -10 * math.log10(eta))},
        detector_efficiency=eta_det,
        background_rate_hz=bg,
        dark_count_hz=dark_hz,
        misalignment=np.full(n, e_d),
        tracking_error_urad=np.zeros(n),
    )


def config(*, dead_time_ns=0.0, fluctuation=0.0, beacon_rate_hz=1e6, slice_s=0.01):
    cfg = load_preset("micius-2016-12-19").model_copy(deep=True)
    cfg.detectors.dead_time_ns = dead_time_ns
    cfg.source.intensity_fluctuation = fluctuation
    cfg.timing.beacon_rate_hz = beacon_rate_hz
    cfg.simulation.slice_s = slice_s
    return cfg


def brute_force_stats(mu, eta, eta_det, e_d, b, g):
    """Gain and sifted QBER for Alice state (Z, 0) by enumerating the 16 detector click patterns."""
    lam = mu * eta * eta_det
    q = [(1 - e_d) / 2, e_d / 2, 0.25, 0.25]  # H, V, D, A for a photon prepared H
    c = [1 - (1 - g * (1 - math.exp(-lam * qj))) * math.exp(-b) for qj in q]
    gain = sifted = errors = double = 0.0
    for pat in itertools.product((0, 1), repeat=4):
        pr = math.prod(c[j] if pat[j] else 1 - c[j] for j in range(4))
        if not any(pat):
            continue
        gain += pr
        double += pr if sum(pat) >= 2 else 0.0
        z, x = pat[0] or pat[1], pat[2] or pat[3]
        if z and not x:
            sifted += pr
            errors += pr * (1.0 if (pat[1] and not pat[0]) else 0.5 if pat[0] and pat[1] else 0.0)
        elif z and x:  # random basis (Z with 1/2), random bit (error 1/2)
            sifted += pr / 2
            errors += pr / 4
    return gain, errors / sifted, double


def measured(raw, seed):
    det = synchronise(raw, rng=np.random.default_rng(seed))
    inten, basis, bit = match_alice(raw, det)
    emitted = raw.slice_emitted.sum(axis=0)
    out = []
    for i in range(raw.intensities.size):
        s = inten == i
        sift = s & (basis == det.bob_basis)
        out.append(
            dict(
                n=int(emitted[i]),
                clicks=int(s.sum()),
                sifted=int(sift.sum()),
                errors=int(np.count_nonzero(bit[sift] != det.bob_bit[sift])),
                double=int(np.count_nonzero(det.double_click[s])),
            )
        )
    return out, det


def z_binom(k, n, p):
    return (k - n * p) / math.sqrt(max(n * p * (1 - p), 1e-300))


def check_rate(k, n, p, zmax=4.5):
    """Binomial count k of n at probability p: z-test, or a Poisson tail bound when n·p is small."""
    if n * p >= 20:
        return abs(z_binom(k, n, p)) < zmax
    return k <= poisson.isf(1e-6, n * p)


# ----------------------------------------------------------------------------------- detector model
def test_routing_probabilities_hand_values():
    q = qdet.routing_probabilities(0, 0, 0.1)  # H photon: H 0.45, V 0.05, D/A 0.25
    np.testing.assert_allclose(q, [0.45, 0.05, 0.25, 0.25])
    q = qdet.routing_probabilities(1, 1, 0.02)  # −45° photon: H/V 0.25, D 0.01, A 0.49
    np.testing.assert_allclose(q, [0.25, 0.25, 0.01, 0.49])
    with pytest.raises(ValueError, match="misalignment"):
        qdet.routing_probabilities(0, 0, 1.5)


def test_route_photons_frequencies():
    rng = np.random.default_rng(1)
    n = 400_000
    for a, x, e in [(0, 0, 0.05), (1, 0, 0.2)]:
        d = qdet.route_photons(np.full(n, a, np.uint8), np.full(n, x, np.uint8), e, rng)
        q = qdet.routing_probabilities(a, x, e)
        for j in range(4):
            assert abs(z_binom(np.count_nonzero(d == j), n, q[j])) < 4.5


def test_expected_statistics_matches_enumeration_and_ma_limits():
    for mu, eta, e, b, g in [(0.8, 0.05, 0.03, 4e-4, 0.885), (0.1, 1e-3, 0.01, 1e-6, 0.94), (0.0, 0.1, 0.02, 1e-3, 0.9)]:
        ex = qdet.expected_statistics(mu, eta, 0.5, e, b, g)
        gain, qber, double = brute_force_stats(mu, eta, 0.5, e, b, g)
        assert ex["gain"] == pytest.approx(gain, rel=1e-12)
        assert ex["qber"] == pytest.approx(qber, rel=1e-12)
        assert ex["double_click"] == pytest.approx(double, rel=1e-9, abs=1e-15)
    # Ma et al. (2005) limits: no background, ideal gate → Q = 1 − e^{−ημ} exactly; E → e_d as ημ → 0
    ex = qdet.expected_statistics(0.5, 0.2, 0.5, 0.04)
    assert ex["gain"] == pytest.approx(1 - math.exp(-0.05), rel=1e-12)
    ex = qdet.expected_statistics(0.5, 1e-6, 0.5, 0.04)
    assert ex["qber"] == pytest.approx(0.04, rel=1e-5)
    # vacuum: Y0 = 1 − e^{−4b}, E0 = 1/2
    ex = qdet.expected_statistics(0.0, 0.1, 0.5, 0.02, 1e-3)
    assert ex["gain"] == pytest.approx(1 - math.exp(-4e-3), rel=1e-12)
    assert ex["qber"] == pytest.approx(0.5)


def test_zero_truncated_poisson_law():
    rng = np.random.default_rng(2)
    for lam in (0.3, 4.0):
        n = 200_000
        draws = qs._zero_truncated_poisson(np.full(n, lam), rng)
        assert draws.min() >= 1
        for k in (1, 2, 3):
            p = math.exp(-lam) * lam**k / math.factorial(k) / (1 - math.exp(-lam))
            assert abs(z_binom(np.count_nonzero(draws == k), n, p)) < 4.5
        assert draws.mean() == pytest.approx(lam / (1 - math.exp(-lam)), rel=0.01)


def test_uniform_subsets_are_distinct_and_uniform():
    """Marginal and pairwise inclusion probabilities of a uniform m-subset: m/n and m(m−1)/(n(n−1)).

    20,000 independent slices of 10 pulses with 6 clicked pulses each (many collisions to redraw),
    then a last, shorter slice of 7 pulses that are all clicked.
    """
    reps = 20_000
    bounds = np.append(100 + 10 * np.arange(reps + 1), 100 + 10 * reps + 7).astype(np.int64)
    grid = qs._SliceGrid(bounds, 10)
    m = np.append(np.full(reps, 6), 7)
    idx = qs._uniform_subsets(grid, m, np.random.default_rng(3))
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(grid.slice_of(idx)), m)
    np.testing.assert_array_equal(idx[-7:], bounds[-2] + np.arange(7))  # m = n: every pulse
    off = (idx[:-7] - 100) % 10
    for h in np.bincount(off, minlength=10):
        assert abs(z_binom(h, reps, 0.6)) < 4.5
    sl = grid.slice_of(idx[:-7])
    has0 = np.zeros(reps, bool)
    has5 = np.zeros(reps, bool)
    has0[sl[off == 0]] = True
    has5[sl[off == 5]] = True
    assert abs(z_binom(np.count_nonzero(has0 & has5), reps, 6 * 5 / (10 * 9))) < 4.5


def test_dead_time_non_paralysable_hand_case():
    t = np.array([0, 10_000, 30_000, 60_000, 70_000, 115_000], dtype=np.int64)
    d = np.array([0, 1, 0, 0, 0, 0], dtype=np.uint8)
    keep = qdet.apply_dead_time(t, d, 50_000)
    # det 0: 0 kept, 30 ns dropped (does not extend), 60 ns kept, 70 ns dropped, 115 ns kept; det 1 alone
    assert keep.tolist() == [True, True, False, True, False, True]
    with pytest.raises(ValueError, match="sorted"):
        qdet.apply_dead_time(t[::-1], d, 10)


def test_dead_time_registered_rate_is_r_over_1_plus_r_tau():
    rng = np.random.default_rng(4)
    rate, tau, dur = 5e6, 200e-9, 0.2
    t, d, _ = qdet.poisson_tags(np.array([[rate, rate]]), np.array([0.0]), np.array([dur]), rng)
    keep = qdet.apply_dead_time(np.rint(t * 1e12).astype(np.int64), d, int(tau * 1e12))
    for j in (0, 1):
        frac = np.count_nonzero(keep & (d == j)) / np.count_nonzero(d == j)
        assert frac == pytest.approx(qdet.dead_time_survival(rate, tau), rel=0.01)  # 0.5


# ------------------------------------------------------------------------------------ slice sampler
def test_same_seed_identical_different_seed_differs():
    cfg = config(dead_time_ns=50.0, fluctuation=0.05)
    link = const_link(0.05, 0.01, 0.02, 1e4)
    a = sample_pass(cfg, link, np.random.default_rng(7))
    b = sample_pass(cfg, link, np.random.default_rng(7))
    c = sample_pass(cfg, link, np.random.default_rng(8))
    for f in ("alice_pulse_index", "alice_intensity", "alice_basis", "alice_bit", "slice_emitted",
              "bob_time_ps", "bob_detector", "beacon_time_ps", "beacon_index", "truth_pulse_index"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.alice_pulse_index, c.alice_pulse_index)
    assert not np.array_equal(a.bob_time_ps, c.bob_time_ps)


def test_records_are_consistent():
    cfg = config(dead_time_ns=50.0, fluctuation=0.05)
    link = const_link(0.1, 0.02, 0.02, 2e4)
    raw = sample_pass(cfg, link, np.random.default_rng(9))
    n_pulses = int(round(0.1 * cfg.source.rep_rate_hz))
    assert raw.slice_emitted.shape == (10, 3)
    assert raw.slice_emitted.sum() == n_pulses
    np.testing.assert_array_equal(raw.slice_emitted.sum(axis=1), 1_000_000)
    for i, p in enumerate(cfg.source.probabilities):  # emitted share of each intensity ≈ p_i
        assert abs(z_binom(raw.slice_emitted[:, i].sum(), n_pulses, p)) < 4.5
    assert np.all(np.diff(raw.alice_pulse_index) > 0)
    assert np.all(np.diff(raw.bob_time_ps) >= 0)
    sig = raw.truth_pulse_index >= 0
    assert np.all(np.isin(raw.truth_pulse_index[sig], raw.alice_pulse_index))
    # intensity fluctuation: per slice, uniform within ±5 % of the nominal value
    mu_act = raw.meta["truth_mean_photon_number"]
    ratio = mu_act[:, :2] / MU[:2]
    assert np.all(np.abs(ratio - 1) <= 0.05) and np.ptp(ratio) > 0.02
    np.testing.assert_array_equal(mu_act[:, 2], 0.0)
    # detector efficiency comes from the link, basis and bit are uniform among clicked pulses
    assert abs(z_binom(np.count_nonzero(raw.alice_basis == 1), raw.alice_basis.size, 0.5)) < 4.5
    assert abs(z_binom(np.count_nonzero(raw.alice_bit == 1), raw.alice_bit.size, 0.5)) < 4.5


def test_background_and_dark_counts_are_continuous_poisson_per_detector():
    """No signal (link loss 150 dB): tag count per detector ≈ (background_j + dark) · duration."""
    cfg = config()
    rates = np.array([1e4, 2e4, 5e3, 0.0])
    link = const_link(0.5, 1e-15, 0.02, rates, dark_hz=100.0)
    raw = sample_pass(cfg, link, np.random.default_rng(10))
    assert np.all(raw.truth_pulse_index == -1)
    for j in range(4):
        n = np.count_nonzero(raw.bob_detector == j)
        mean = (rates[j] + 100.0) * 0.5
        assert abs(n - mean) < 4.5 * math.sqrt(mean)
    # every pulse a tag could be assigned to is in Alice's record: synchronisation + match never fails
    det = synchronise(raw, rng=np.random.default_rng(1))
    inten, _, _ = match_alice(raw, det)
    # background only: the pulse classes of noise detections follow p (no-click posterior = prior here)
    for i, p in enumerate(cfg.source.probabilities):
        assert abs(z_binom(np.count_nonzero(inten == i), inten.size, p)) < 4.5


def test_dead_time_inside_the_sampler():
    """Strong background (2e6 Hz/detector) with 200 ns dead time: registered rate r/(1 + rτ) = r/1.4."""
    cfg = config(dead_time_ns=200.0)
    link = const_link(0.05, 1e-15, 0.02, 2e6, dark_hz=0.0)
    raw = sample_pass(cfg, link, np.random.default_rng(11))
    expected = 4 * 2e6 * 0.05 * qdet.dead_time_survival(2e6, 200e-9)
    assert raw.n_tags == pytest.approx(expected, rel=0.01)
    assert raw.meta["dead_time_dropped"] == pytest.approx(4 * 2e6 * 0.05 - expected, rel=0.02)
    for j in range(4):  # no two registered tags of a detector closer than the dead time
        t = raw.bob_time_ps[raw.bob_detector == j]
        assert np.diff(t).min() >= 200_000


def _check_against_expected(stats, eta, e_d, bg_hz, dark_hz, g, window_ns=2.0, zmax=4.5):
    b = (bg_hz + dark_hz) * window_ns * 1e-9
    for i, mu in enumerate(MU):
        s = stats[i]
        gain, qber, double = brute_force_stats(mu, eta, 0.5, e_d, b, g)
        assert abs(z_binom(s["clicks"], s["n"], gain)) < zmax, (i, "gain", s)
        assert abs(z_binom(s["errors"], s["sifted"], qber)) < zmax, (i, "qber", s)
        assert check_rate(s["double"], s["n"], double, zmax), (i, "double click", s)
        assert abs(z_binom(s["sifted"], s["clicks"], 0.5)) < zmax, (i, "sifting ratio", s)


def test_slice_sampler_matches_decoy_formulas_after_timing():
    """Gain, QBER and double clicks per intensity vs the gated, squashed Ma et al. (2005) model."""
    eta, e_d, bg, dark = 0.02, 0.03, 1e5, 25.0
    cfg = config(beacon_rate_hz=1e5)
    raw = sample_pass(cfg, const_link(1.0, eta, e_d, bg, dark_hz=dark), np.random.default_rng(12))
    stats, det = measured(raw, 13)
    assert det.assigned_wrong == 0
    g = qdet.gate_efficiency(2.0, qdet.tag_jitter_ps(350.0, 0.529))
    _check_against_expected(stats, eta, e_d, bg, dark, g)
    assert stats[0]["clicks"] > 3e5 and stats[2]["clicks"] > 1e4  # the test has statistical power


def test_per_pulse_reference_agrees_with_slice_sampler_and_formulas():
    eta, e_d, bg, dark, dur = 0.05, 0.03, 2e5, 25.0, 0.03
    cfg = config()
    link = const_link(dur, eta, e_d, bg, dark_hz=dark)
    ref = sample_slice_per_pulse(cfg, link, np.random.default_rng(14), duration_s=dur)
    fast = sample_pass(cfg, link, np.random.default_rng(15))
    assert ref.slice_emitted.sum() == fast.slice_emitted.sum() == 3_000_000
    s_ref, d_ref = measured(ref, 16)
    s_fast, d_fast = measured(fast, 17)
    assert d_ref.assigned_wrong == 0 and d_fast.assigned_wrong == 0
    g = qdet.gate_efficiency(2.0, qdet.tag_jitter_ps(350.0, 0.529))
    _check_against_expected(s_ref, eta, e_d, bg, dark, g)
    _check_against_expected(s_fast, eta, e_d, bg, dark, g)
    for a, b in zip(s_ref, s_fast):  # two-sample comparison of the rates
        for num, den in (("clicks", "n"), ("errors", "sifted"), ("double", "n")):
            if a[num] + b[num] < 20:  # too few for a normal approximation; checked above
                continue
            p1, p2 = a[num] / a[den], b[num] / b[den]
            pool = (a[num] + b[num]) / (a[den] + b[den])
            se = math.sqrt(max(pool * (1 - pool) * (1 / a[den] + 1 / b[den]), 1e-300))
            assert abs(p1 - p2) < 4.5 * se, (num, a, b)


def test_bad_inputs_are_refused():
    cfg = config()
    link = const_link(0.01, 0.01, 0.02, 100.0)
    with pytest.raises(ValueError, match="rng"):
        sample_pass(cfg, link, 7)
    bad = LinkSeries(**{**link.__dict__, "misalignment": np.full(3, 0.01)})
    with pytest.raises(ValueError, match="misalignment"):
        sample_pass(cfg, bad, np.random.default_rng(0))
    bad = LinkSeries(**{**link.__dict__, "detector_efficiency": 0.0})
    with pytest.raises(ValueError, match="detector_efficiency"):
        sample_pass(cfg, bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_pulses"):
        sample_slice_per_pulse(cfg, link, np.random.default_rng(0), duration_s=1.0)


def test_progress_callback_reaches_total():
    calls = []
    sample_pass(config(), const_link(0.02, 0.01, 0.02, 100.0), np.random.default_rng(0), progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(b[0] > a[0] for a, b in zip(calls, calls[1:]))


# ------------------------------------------------- fast kernels equal their plain NumPy formulation
def test_flight_time_spline_is_the_not_a_knot_cubic_spline():
    """The range interpolant equals SciPy's not-a-knot cubic spline (an independent implementation)
    and reproduces a cubic exactly; 2 and 3 points give the line and the parabola."""
    from scipy.interpolate import make_interp_spline

    rng = np.random.default_rng(30)
    for n in (2, 3, 4, 7, 274):
        x = np.cumsum(rng.uniform(0.5, 1.5, n))
        y = 8e5 + 3e3 * np.sin(x / 7.0) + rng.normal(0, 50.0, n)
        xq = np.linspace(x[0] - 0.1, x[-1] + 0.1, 5001)  # incl. the extrapolated margins
        ours = qs._cubic_eval(x, y, qs._cubic_slopes(x, y), xq)
        ref = make_interp_spline(x, y, k=min(3, n - 1))(xq)
        np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-9)
    x = np.array([0.0, 0.7, 1.1, 2.5, 3.0, 4.2])
    cubic = lambda v: 1.0 - 2.0 * v + 0.5 * v**2 - 0.25 * v**3  # noqa: E731
    xq = np.linspace(-0.1, 4.3, 101)
    np.testing.assert_allclose(qs._cubic_eval(x, cubic(x), qs._cubic_slopes(x, cubic(x)), xq), cubic(xq), atol=1e-12)


def test_tag_times_and_candidates_equal_the_numpy_formulation():
    cfg = config()
    link = const_link(2.0, 0.01, 0.02, 100.0, range_rate_m_s=7e3)
    clock = qs._clock(cfg, link)
    rng = np.random.default_rng(31)
    R = cfg.source.rep_rate_hz
    pulse = np.sort(rng.integers(-5_000_000, int(2.05 * R), 200_000))  # incl. beyond the grid ends
    pulse[:3] = np.round(clock.grid_s[[0, 10, -1]] * R).astype(np.int64)  # on grid points
    noise = rng.normal(0, 634.0, pulse.size)
    ref = np.rint(clock.bob_ps(clock.ground_from_emission(pulse / R)) + noise).astype(np.int64)
    np.testing.assert_array_equal(clock.tag_ps(pulse, R, noise), ref)
    # revealed pulses: nearest (and near-midpoint second nearest) pulses of every tag, minus clicked
    t = np.sort(ref + rng.integers(-5000, 5000, ref.size))
    tr = np.where(rng.random(t.size) < 0.5, pulse, -1)
    grid = qs._SliceGrid(np.array([0, int(2 * R)], dtype=np.int64), int(2 * R))
    clicked = np.unique(pulse[::3])
    k, other = qs._nearest_pulses(clock, t, R)
    cand = np.concatenate([k[k != tr], other])
    cand = np.unique(cand[(cand >= 0) & (cand < grid.stop)])
    np.testing.assert_array_equal(qs._revealed_pulses(clock, t, tr, grid, R, clicked), np.setdiff1d(cand, clicked))


def test_merge_tags_is_a_stable_sort_then_dead_time():
    rng = np.random.default_rng(32)
    parts = []
    for n, is_sorted in ((50_000, True), (300, False), (20_000, True)):
        t = rng.integers(0, 2_000_000_000, n)
        t = np.sort(t) if is_sorted else t
        t[5:10] = t[4]  # ties inside a part
        parts.append((t, rng.integers(0, 4, n).astype(np.uint8), rng.integers(0, 10**9, n)))
    parts[2][0][:50] = parts[0][0][:50]  # ties across parts: earlier part first
    parts[2] = (parts[2][0], parts[2][1], None)
    t_all = np.concatenate([p[0] for p in parts])
    d_all = np.concatenate([p[1] for p in parts])
    tr_all = np.concatenate([p[2] if p[2] is not None else np.full(p[0].size, -1) for p in parts])
    o = np.argsort(t_all, kind="stable")
    for dead_ns in (0.0, 50.0, 5000.0):
        keep = qdet.apply_dead_time(t_all[o], d_all[o], int(round(dead_ns * 1e3)))
        t, d, tr, n_dead = qs._merge_tags(parts, dead_ns)
        np.testing.assert_array_equal(t, t_all[o][keep])
        np.testing.assert_array_equal(d, d_all[o][keep])
        np.testing.assert_array_equal(tr, tr_all[o][keep])
        assert n_dead == np.count_nonzero(~keep)


def test_intensity_draws_by_counts_equal_draws_by_rows():
    from satqkd.quantum import source as qsrc

    w = np.array([[0.5, 0.25, 0.0], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    counts = np.array([1000, 0, 7, 2500])
    a = qsrc.draw_intensity_by_counts(w, counts, np.random.default_rng(33))
    b = qsrc.draw_intensity(w, np.repeat(np.arange(4), counts), np.random.default_rng(33))
    np.testing.assert_array_equal(a, b)
    assert np.all(a[:1000] < 2) and np.all(a[1000:1007] == 0)  # zero weight never drawn; empty row → class 0


def test_slice_kernels_equal_the_per_pulse_formulation_draw_by_draw():
    """Walking the slices (no per-pulse slice index) gives the same draws as the per-pulse arrays."""
    rng = np.random.default_rng(34)
    ns, per = 40, 1000
    m = rng.integers(0, 60, ns)
    grid = qs._SliceGrid(np.append(np.arange(ns) * per, (ns - 1) * per + 700).astype(np.int64), per)  # short last slice
    sl = np.repeat(np.arange(ns), m)
    np.testing.assert_array_equal(qs._offsets_by_count(grid, m, np.random.default_rng(1)),
                                  qs._offsets(grid, sl, np.random.default_rng(1)))
    lam_tab = rng.uniform(0.05, 3.0, (ns, 3))  # large Λ: many pulses with several photo-detections
    inten = rng.integers(0, 3, sl.size).astype(np.uint8)
    basis, bit = (rng.integers(0, 2, sl.size).astype(np.uint8) for _ in range(2))
    e_slice = rng.uniform(0.0, 0.1, ns)
    first, more, mask, extra = qs._click_patterns_by_slice(lam_tab, m, inten, basis, bit, e_slice, np.random.default_rng(2))
    mask_ref, first_ref = qs._click_patterns(lam_tab[sl, inten], basis, bit, e_slice[sl], np.random.default_rng(2))
    assert more.size > 100
    np.testing.assert_array_equal(first, first_ref)
    np.testing.assert_array_equal(mask, mask_ref[more])
    single = np.setdiff1d(np.arange(sl.size), more)
    np.testing.assert_array_equal(mask_ref[single], np.left_shift(1, first_ref[single]))
    np.testing.assert_array_equal(extra, mask & ~np.left_shift(1, first[more]).astype(np.uint8))
