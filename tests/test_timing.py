"""Synchronisation from the beacon, pulse assignment, the 2 ns gate and squashing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satqkd.config import load_preset
from satqkd.quantum import Detections, fit_clock, match_alice, sample_pass, synchronise
from satqkd.quantum import detector as qdet
from satqkd.records import LinkSeries, RawRecords

C = 299_792_458.0
D_MIN_M, V_M_S = 645e3, 7.6e3  # straight-line pass: min range 645 km [paper], LEO ground-relative speed


def leo_range_m(t_s, t_cul_s):
    """Range of a straight-line pass: rate up to ±7.6 km/s (±25 µs/s of flight time), 90 m/s² at culmination."""
    return np.sqrt(D_MIN_M**2 + (V_M_S * (np.asarray(t_s) - t_cul_s)) ** 2)


def leo_link(duration_s, t_cul_s, *, e_d=0.01, bg_hz=300.0):
    t = np.arange(0.0, duration_s + 0.5, 1.0)
    r = leo_range_m(t, t_cul_s)
    n = t.size
    # diffraction ∝ range² (22 dB at 1200 km), 5.5 dB atmosphere, 8 dB receiver optics (16 %)
    loss = 22.0 + 20 * np.log10(r / 1200e3) + 5.5 + 8.0
    return LinkSeries(
        t_s=t, range_m=r, elevation_deg=np.full(n, 40.0), loss_db={"total": loss}, detector_efficiency=0.5,
        background_rate_hz=np.full(n, bg_hz), dark_count_hz=25.0, misalignment=np.full(n, e_d),
        tracking_error_urad=np.zeros(n),
    )


@pytest.fixture(scope="module")
def preset_like():
    """80 s of a preset-like pass (culmination at 30 s, range rate up to 6.6 km/s), preset config."""
    cfg = load_preset("micius-2016-12-19")
    raw = sample_pass(cfg, leo_link(80.0, 30.0), np.random.default_rng(21))
    return cfg, raw, synchronise(raw, rng=np.random.default_rng(22))


def test_preset_like_pass_assigns_every_signal_tag_to_its_pulse(preset_like):
    cfg, raw, det = preset_like
    assert det.truth_signal_kept > 300_000
    assert det.assigned_wrong == 0
    # beacon residuals are the beacon jitter; the fitted clock is unbiased to < 10 ps
    assert det.fit_residual_rms_ns == pytest.approx(cfg.timing.sync_jitter_ns, rel=0.02)
    assert abs(det.truth_time_error_ns) < 0.01
    # every kept tag's pulse is in Alice's record
    inten, basis, bit = match_alice(raw, det)
    assert inten.size == det.n
    assert np.all(np.diff(det.pulse_index) > 0)


def test_gate_keeps_gaussian_signal_and_window_over_period_of_background(preset_like):
    cfg, raw, det = preset_like
    g = qdet.gate_efficiency(cfg.timing.window_ns, qdet.tag_jitter_ps(cfg.detectors.jitter_ps, cfg.timing.sync_jitter_ns))
    assert g == pytest.approx(math.erf(1.0 / (math.sqrt(2) * 0.6343)), rel=1e-3)  # ±1 ns, σ = 0.634 ns
    n, k = det.truth_signal_tags, det.truth_signal_kept
    assert abs(k - n * g) < 4.5 * math.sqrt(n * g * (1 - g))
    w = cfg.timing.window_ns * 1e-9 * cfg.source.rep_rate_hz  # 0.2
    n, k = det.truth_noise_tags, det.truth_noise_kept
    assert n > 5_000
    assert abs(k - n * w) < 4.5 * math.sqrt(n * w * (1 - w))
    assert det.tags_kept == det.truth_signal_kept + det.truth_noise_kept


def test_wrong_beacon_count_is_caught_by_the_truth_check(preset_like):
    """If the beacon count were off by one (100 µs = 10,000 pulses), every tag would land on the wrong pulse."""
    cfg, raw, _ = preset_like
    shifted = RawRecords(**{**raw.__dict__, "beacon_index": raw.beacon_index + 1})
    det = synchronise(shifted, rng=np.random.default_rng(0))
    assert det.assigned_wrong == det.truth_signal_kept > 0


def _beacons(t_e, t_cul, offset_ns, drift_ppb, jitter_ns, rng):
    t_g = t_e + leo_range_m(t_e, t_cul) / C
    return np.rint((offset_ns * 1e-9 + (1 + drift_ppb * 1e-9) * t_g) * 1e12 + rng.normal(0, jitter_ns * 1e3, t_e.size)).astype(np.int64)


@pytest.mark.parametrize("jitter_ns, rms_ps, max_ps", [(0.0, 3.0, 10.0), (0.529, 15.0, 60.0)])
def test_fit_clock_recovers_flight_time_and_clock(jitter_ns, rms_ps, max_ps):
    """Beacons from an analytic LEO range (not the sampler's spline) and a drifting offset clock."""
    rng = np.random.default_rng(5)
    f_b, t_cul = 1e4, 60.0
    j = np.flatnonzero(rng.random(int(120 * f_b)) < 0.5)
    tb = _beacons(j / f_b, t_cul, 12_345.6, 30.0, jitter_ns, rng)
    fit = fit_clock(tb, j, f_b)
    assert fit.residual_rms_ns == pytest.approx(max(jitter_ns, 1e-3), rel=0.05, abs=2e-3)
    t_e = np.linspace(0.5, 119.5, 100_001)
    T = _beacons(t_e, t_cul, 12_345.6, 30.0, 0.0, rng)
    err = (T - fit.offset_ps(T)) - t_e * 1e12  # recovered minus true emission time
    assert np.sqrt(np.mean(err**2)) < rms_ps
    assert np.abs(err).max() < max_ps


def _hand_records(tags):
    """Zero-jitter beacons at 1 MHz over 2 ms; constant flight 3 ms; tags = [(pulse, detector, dt_ps)]."""
    R, f_b, flight_ps, offset_ps = 1e8, 1e6, 3_000_000_000, 777_000
    j = np.arange(2000, dtype=np.int64)
    beacon_t = offset_ps + flight_ps + j * 1_000_000
    pulse = np.array([p for p, _, _ in tags], dtype=np.int64)
    detector = np.array([d for _, d, _ in tags], dtype=np.uint8)
    t = offset_ps + flight_ps + pulse * 10_000 + np.array([dt for _, _, dt in tags], dtype=np.int64)
    o = np.argsort(t, kind="stable")
    alice = np.unique(pulse)
    z = np.zeros(alice.size, np.uint8)
    return RawRecords(
        rep_rate_hz=R, intensities=np.array([0.8, 0.1, 0.0]), probabilities=np.array([0.5, 0.25, 0.25]),
        alice_pulse_index=alice, alice_intensity=z, alice_basis=z, alice_bit=z,
        slice_start_s=np.zeros(1), slice_emitted=np.array([[100_000, 50_000, 50_000]]),
        bob_time_ps=t[o], bob_detector=detector[o], beacon_time_ps=beacon_t, beacon_index=j,
        beacon_rate_hz=f_b, window_ns=2.0, truth_pulse_index=pulse[o],
    )


def test_gating_grouping_and_squashing_by_hand():
    H, V, D, A = range(4)
    tags = [(1000, H, 0), (2000, V, 900), (3000, D, 1100), (4000, A, -950), (5000, H, -300), (5000, V, 200),
            (6000, D, 100), (6000, H, -100), (7000, A, -1200)]
    det = synchronise(_hand_records(tags), rng=np.random.default_rng(1))
    assert det.pulse_index.tolist() == [1000, 2000, 4000, 5000, 6000]  # 3000 (+1.1 ns), 7000 (−1.2 ns) gated out
    assert det.bob_basis[:3].tolist() == [0, 0, 1] and det.bob_bit[:3].tolist() == [0, 1, 1]
    assert det.detector_mask.tolist() == [1, 2, 8, 3, 5]
    assert det.double_click.tolist() == [False, False, False, True, True]
    assert det.bob_basis[3] == 0  # H+V: Z basis, random bit
    assert det.tags_total == 9 and det.tags_kept == 7 and det.assigned_wrong == 0


def test_squashing_random_choices_are_fair():
    H, V, D, A = range(4)
    n = 4000
    same = [(10 * k + 5, d, 0) for k in range(n) for d in (H, V)]  # Z double clicks
    cross = [(10 * k + 100_005, d, 0) for k in range(n) for d in (V, D)]  # both bases
    det = synchronise(_hand_records(same + cross), rng=np.random.default_rng(2))
    assert det.n == 2 * n
    zz, xz = slice(0, n), slice(n, 2 * n)
    assert np.all(det.bob_basis[zz] == 0)
    assert abs(det.bob_bit[zz].mean() - 0.5) < 4.5 * math.sqrt(0.25 / n)
    outcome = 2 * det.bob_basis[xz] + det.bob_bit[xz]  # random basis *and* random bit: 4 equal outcomes
    counts = np.bincount(outcome, minlength=4)
    assert np.all(np.abs(counts - n / 4) < 4.5 * math.sqrt(n * 3 / 16))


def test_match_alice_and_bad_inputs():
    raw = _hand_records([(1000, 0, 0), (2000, 1, 0)])
    det = synchronise(raw, rng=np.random.default_rng(0))
    inten, basis, bit = match_alice(raw, det)
    assert inten.size == 2
    missing = RawRecords(**{**raw.__dict__, "alice_pulse_index": np.array([1000]), "alice_intensity": np.zeros(1, np.uint8),
                            "alice_basis": np.zeros(1, np.uint8), "alice_bit": np.zeros(1, np.uint8)})
    with pytest.raises(ValueError, match="missing"):
        match_alice(missing, det)
    with pytest.raises(ValueError, match="window_ns"):
        synchronise(raw, window_ns=20.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        synchronise(raw, rng=None)
    few = RawRecords(**{**raw.__dict__, "beacon_time_ps": raw.beacon_time_ps[:1], "beacon_index": raw.beacon_index[:1]})
    with pytest.raises(ValueError, match="beacon"):
        synchronise(few, rng=np.random.default_rng(0))


def test_lsq_spline_matches_scipy():
    """The least-squares spline equals SciPy's ``make_lsq_spline`` (an independent QR solution)."""
    from scipy.interpolate import make_lsq_spline

    from satqkd.quantum.timing import lsq_spline

    rng = np.random.default_rng(40)
    x = np.sort(rng.uniform(0.0, 120.0, 30_000))
    y = 3e9 + 2.5e7 * np.sqrt(1 + ((x - 60) / 20) ** 2) + rng.normal(0, 500.0, x.size)  # ps, LEO-like
    w = rng.uniform(0.5, 3.0, x.size)
    for k in (1, 3):
        t = np.r_[[x[0]] * (k + 1), np.quantile(x, np.linspace(0, 1, 61)[1:-1]), [x[-1]] * (k + 1)]
        ours, ref = lsq_spline(x, y, t, k, w), make_lsq_spline(x, y, t, k=k, w=w)
        xq = np.linspace(-1.0, 121.0, 10_001)  # incl. extrapolation by the end polynomials
        assert np.abs(ours(xq) - ref(xq)).max() < 1e-3  # ps, on values of ~3e9 ps


def test_synchronise_and_match_do_not_need_time_ordered_input(preset_like):
    """Shuffled tags (and unsorted detections) take the sort-based path: same detections and truth."""
    cfg, raw, det = preset_like
    o = np.random.default_rng(41).permutation(raw.n_tags)
    shuffled = RawRecords(**{**raw.__dict__, "bob_time_ps": raw.bob_time_ps[o], "bob_detector": raw.bob_detector[o],
                             "truth_pulse_index": raw.truth_pulse_index[o]})
    det2 = synchronise(shuffled, rng=np.random.default_rng(22))
    for f in ("pulse_index", "detector_mask", "bob_basis", "bob_bit", "double_click"):
        np.testing.assert_array_equal(getattr(det2, f), getattr(det, f))
    for f in ("tags_kept", "assigned_wrong", "truth_signal_tags", "truth_signal_kept", "truth_noise_kept"):
        assert getattr(det2, f) == getattr(det, f)
    assert det2.truth_time_error_ns == pytest.approx(det.truth_time_error_ns, abs=1e-9)
    inten, basis, bit = match_alice(raw, det)
    r = np.random.default_rng(42).permutation(det.n)
    shuffled_det = Detections(**{**det.__dict__, "pulse_index": det.pulse_index[r]})
    for a, b in zip(match_alice(raw, shuffled_det), (inten, basis, bit)):
        np.testing.assert_array_equal(a, b[r])
