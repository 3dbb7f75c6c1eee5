"""The 532 nm beacon budget, point-ahead angle and sync residual (satqkd.sky.beacon)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import satqkd
from satqkd.sky import beacon as B
from satqkd.sky.link import diffraction_loss_db


def test_beacon_transmittance_is_diffraction_times_extinction_times_optics():
    eta = B.beacon_transmittance(1200e3, 19.5, 890.0, 23e3)
    # 1.25 mrad [paper] → 1/e² radius 1061 m at 1200 km: 1 m captures 2a²/w² ≈ 4.4e-7 (63.5 dB)
    w = 1250e-6 / math.sqrt(2) * 1200e3
    assert diffraction_loss_db(1200e3, 1250.0, 1.0, 0.05) == pytest.approx(-10 * math.log10(-math.expm1(-2 * 0.25 / w**2)), rel=1e-3)
    from satqkd.sky import atmosphere as A

    expect = 10 ** (-diffraction_loss_db(1200e3, 1250.0, 1.0, 0.05) / 10) * A.transmittance(19.5, 532e-9, 890.0, 23e3) * 0.5
    assert eta == pytest.approx(expect, rel=1e-12)
    # haze at 532 nm weighs more than at 848.6 nm, and more at low elevation
    assert B.beacon_transmittance(1200e3, 19.5, 890.0, 5e3) < 0.2 * eta


def test_beacon_photons_and_detection_probability():
    # photons per pulse: 10 mW / 10 kHz / (hc/532 nm) = 2.68e12
    n = B.beacon_photons_per_pulse(1.0, attenuation_db=0.0, timing_split=1.0, detector_efficiency=1.0)
    assert n == pytest.approx(0.01 / 1e4 / (6.62607015e-34 * 299792458.0 / 532e-9), rel=1e-12)
    assert B.beacon_detection_probability(0.0) == 0.0
    assert B.beacon_detection_probability(1.0) == pytest.approx(1 - math.exp(-1))
    assert B.beacon_detection_probability(1e-9) == pytest.approx(1e-9, rel=1e-6)
    # the preset's pass: near-certain at culmination, about the preset's constant 0.5 at 1200 km, and sync
    # can fail in haze at low elevation
    eta = B.beacon_transmittance(np.array([645e3, 1200e3]), np.array([47.8, 19.5]), 890.0, 23e3)
    p = B.beacon_detection_probability(B.beacon_photons_per_pulse(eta))
    assert p[0] > 0.9 and 0.3 < p[1] < 0.6
    hazy = B.beacon_detection_probability(B.beacon_photons_per_pulse(B.beacon_transmittance(1500e3, 10.0, 890.0, 2e3)))
    assert hazy < 1e-4
    with pytest.raises(ValueError):
        B.beacon_detection_probability(-1.0)


def test_point_ahead_angle_is_twice_the_transverse_velocity_over_c():
    # a satellite overhead moving at 7.5 km/s across the line of sight: 2v/c = 50.0 µrad; radial motion: 0
    r = np.array([[0.0, 0.0, 500e3], [0.0, 0.0, 500e3]])
    v = np.array([[7500.0, 0.0, 0.0], [0.0, 0.0, 7500.0]])
    pa = B.point_ahead_angle_urad(r, v)
    assert pa[0] == pytest.approx(2 * 7500 / 299792458.0 * 1e6) and pa[1] == pytest.approx(0.0, abs=1e-9)
    # the 2016-12-19 pass: 30–51 µrad, largest at culmination, several times the 10 µrad beam
    g = satqkd.find_pass(satqkd.load_preset("micius-2016-12-19"))
    pa = B.point_ahead_angle_urad(*g.enu_state())
    assert 25 < pa.min() < 35 and 45 < pa.max() < 55
    assert abs(int(np.argmax(pa)) - g.culmination_index) < 10
    # left uncorrected it would lose the link; 2 % left over costs < 0.2 dB
    assert B.point_ahead_loss_db(pa.max(), 10.0, 1.0) > 100
    assert B.point_ahead_loss_db(pa.max(), 10.0, 0.02) < 0.2


def test_sync_residual_of_a_clock_fit():
    # σ √(2/N): 0.529 ns, 10 kHz × 0.5 × 1 s → 0.0106 ns
    assert B.sync_residual_jitter_ns(0.529, 1e4, 0.5, 1.0) == pytest.approx(0.529 * math.sqrt(2 / 5000))
    assert B.sync_residual_jitter_ns(0.529, 1e4, 0.0, 1.0) == math.inf
    # Monte Carlo of the fit (seeded): residual of the fitted line vs the true clock, over the window
    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 1.0, 400)
    res = []
    for _ in range(400):
        y = 0.529 * rng.standard_normal(t.size)
        a, b = np.polyfit(t, y, 1)
        res.append(np.mean((a * t + b) ** 2))
    assert math.sqrt(np.mean(res)) == pytest.approx(B.sync_residual_jitter_ns(0.529, 400.0, 1.0, 1.0), rel=0.05)


def test_bias_jitter_factor_against_monte_carlo():
    rng = np.random.default_rng(5)
    b, s, div = 3.0, 1.0, 10.0
    tw = div / math.sqrt(2)
    e = rng.normal(0.0, s, (2, 400_000))
    mc = np.mean(np.exp(-2 * ((e[0] + b) ** 2 + e[1] ** 2) / tw**2))
    jitter_only = 1 / (1 + 4 * s**2 / tw**2)
    assert mc == pytest.approx(jitter_only * B.bias_jitter_factor(b, s, div), rel=0.01)
    assert B.bias_jitter_factor(0.0, s, div) == 1.0


def test_point_ahead_residual_enters_the_pointing_budget_only_when_set():
    from satqkd.sky.link import link_budget_db, link_series

    cfg = satqkd.load_preset("micius-2016-12-19")
    assert cfg.apt.point_ahead_residual_fraction == 0.0
    g = satqkd.find_pass(cfg)
    base = link_series(cfg, g, np.random.default_rng(2))
    b0 = link_budget_db(cfg, 1000e3)
    cfg.apt.point_ahead_residual_fraction = 0.05  # 1.5–2.6 µrad of bias on a 7.07 µrad beam
    off = link_series(cfg, g, np.random.default_rng(2))
    extra = off.loss_db["pointing"] - base.loss_db["pointing"]
    pa = B.point_ahead_angle_urad(*g.enu_state())
    sigma = base.tracking_error_urad / math.sqrt(2)
    assert np.allclose(extra, -10 * np.log10(B.bias_jitter_factor(0.05 * pa, sigma, 10.0)))
    assert 0.3 < extra.min() and extra.max() < 1.5 and np.argmax(extra) == pytest.approx(g.culmination_index, abs=10)
    for k in ("diffraction", "atmosphere", "turbulence", "receiver_optics"):
        assert np.array_equal(off.loss_db[k], base.loss_db[k])
    assert link_budget_db(cfg, 1000e3)["pointing"] > b0["pointing"]
    with pytest.raises(satqkd.ConfigError, match="point_ahead_residual_fraction"):
        cfg.apt.point_ahead_residual_fraction = 2.0


# --- the beacon's link budget in the pass simulation (timing.beacon_detection_model = "link_budget")

def _budget_cfg(**timing):
    import satqkd

    cfg = satqkd.load_preset("micius-2016-12-19")
    cfg.timing.beacon_detection_model = "link_budget"
    for k, v in timing.items():
        setattr(cfg.timing, k, v)
    return cfg


def test_the_sampler_tags_beacons_with_the_link_budget_probability():
    """Over the whole pass the fraction of beacon pulses tagged follows p(range, elevation): high near
    culmination, low at 1200 km, as the budget predicts, within binomial scatter."""
    import satqkd
    from satqkd.quantum.sampler import _beacon_probability, _beacons, _Clock  # noqa: F401
    from satqkd.sky.beacon import config_beacon_detection_probability
    from satqkd.sky.link import link_series

    cfg = _budget_cfg()
    g = satqkd.find_pass(cfg)
    link = link_series(cfg, g, np.random.default_rng(0))
    p = config_beacon_detection_probability(cfg, link.range_m, link.elevation_deg)
    assert p.shape == link.range_m.shape and np.all((p > 0) & (p < 1))
    inner = (link.t_s > link.t_s[0] + 1.0) & (link.t_s < link.t_s[-1] - 1.0)  # whole seconds of beacons
    r_in = np.where(inner, link.range_m, np.nan)
    i_near, i_far = int(np.nanargmin(r_in)), int(np.nanargmax(r_in))
    assert p[i_near] > 0.9 and p[i_far] < 0.6  # ≈ 0.97 at 645 km, ≈ 0.44 at 1200 km (module docstring)
    raw = satqkd.simulate(cfg, seed=2).raw
    t_s = raw.beacon_index / raw.beacon_rate_hz
    rate = raw.beacon_rate_hz
    for i in (i_near, i_far):
        t = link.t_s[i]
        sel = np.abs(t_s - t) < 0.5  # one second of beacon pulses around that time
        n_pulses = int(rate)  # pulses in that second
        want = float(np.interp(t, link.t_s, p))
        got = np.count_nonzero(sel) / n_pulses
        assert abs(got - want) < 5 * np.sqrt(want * (1 - want) / n_pulses) + 0.02


def test_the_constant_model_is_unchanged():
    import satqkd

    cfg = satqkd.load_preset("micius-2016-12-19")
    assert cfg.timing.beacon_detection_model == "constant"
    from satqkd.sky.beacon import config_beacon_detection_probability

    assert np.all(config_beacon_detection_probability(cfg, np.array([7e5, 1.2e6]), np.array([60.0, 20.0])) == 0.5)


def test_synchronisation_fails_when_the_beacon_is_too_weak():
    """A beacon attenuated 40 dB more (or a thick haze) leaves too few tags to fit the clock: the pass
    fails with a message naming the beacon, rather than producing a key from a wrong clock."""
    import satqkd
    from synthetic_passes import preset_pass_cut

    cfg = _budget_cfg(beacon_attenuation_db=95.0)
    with pytest.raises(ValueError, match="beacon"):
        satqkd.simulate(cfg, seed=1, geometry=preset_pass_cut(cfg, 20))


def test_the_density_check_counts_tags_per_clock_interval():
    from satqkd.quantum.timing import MIN_BEACONS_PER_INTERVAL, _check_beacon_density

    ps = 1e12
    # a short file (under one clock interval): judged on its tags, not on a 2 s interval it does not span
    _check_beacon_density(np.arange(40) * 1e-3 * ps, 2.0)
    # a 10 Hz beacon tagged half the time: 10 per 2 s interval, enough for the spline
    _check_beacon_density(np.arange(0, 20, 0.2) * ps, 2.0)
    # ~1 tag per second over 20 s: 2 per interval
    with pytest.raises(ValueError, match="beacon is too weak"):
        _check_beacon_density(np.arange(0, 20, 1.0) * ps, 2.0)
    assert MIN_BEACONS_PER_INTERVAL >= 4  # a cubic piece needs four points
