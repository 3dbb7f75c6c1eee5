"""Two-stage tracking loop (satqkd.sky.apt): following the line of sight, noise budget, paper's 1.2 µrad."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from satqkd.config import AptConfig
from satqkd.sky import apt

import synthetic_passes
from synthetic_passes import geometry_from_enu

circular_pass = functools.partial(synthetic_passes.circular_pass, alt_m=495e3)


def constant_rate(rate_deg_s=0.5, duration_s=60.0, r=800e3, el0_deg=30.0):
    """Satellite on a vertical circle centred on the station: the line of sight turns at a constant rate."""
    t = np.arange(0.0, duration_s + 0.5, 1.0)
    w = math.radians(rate_deg_s)
    ph = math.radians(el0_deg) + w * t
    pos = r * np.stack([np.zeros_like(ph), np.cos(ph), np.sin(ph)], axis=1)
    vel = r * w * np.stack([np.zeros_like(ph), -np.sin(ph), np.cos(ph)], axis=1)
    return geometry_from_enu(t, pos, vel)


@pytest.fixture(scope="module")
def pass_():
    return circular_pass()


@pytest.fixture(scope="module")
def result(pass_):
    return apt.track(pass_, AptConfig(), np.random.default_rng(2016), 10.0)


def test_los_rate_of_the_pass(pass_):
    rx, ry, mag = apt.los_axis_rates(pass_)
    i = pass_.culmination_index
    # at culmination the velocity is across the line of sight: ω = v / L
    v = math.sqrt(synthetic_passes.MU / (synthetic_passes.R_EARTH + 495e3))
    assert math.degrees(mag[i]) == pytest.approx(math.degrees(v / pass_.range_m[i]), rel=1e-3)
    assert 0.6 < math.degrees(mag.max()) < 0.8  # paper: "effective angular velocity ... ~1°/s" (alt-az axis)
    assert np.argmax(mag) == i
    # station in the orbital plane's rotation: all the motion is on the X axis
    np.testing.assert_allclose(np.hypot(rx, ry), mag, rtol=1e-9)
    assert np.max(np.abs(ry)) < 0.05 * mag.max()


def test_preset_like_pass_rms_near_paper(result):
    """Paper Fig. 2b: tracking accuracy ≈ 1.2 µrad."""
    assert 0.9 <= result.rms_urad <= 1.5
    x, y = result.rms_axis_urad
    assert x == pytest.approx(y, rel=0.1)  # isotropic noise sources
    assert result.fsm_saturated_fraction == 0.0


def test_error_largest_near_culmination(pass_, result):
    i = pass_.culmination_index
    top = np.sqrt(np.mean(result.rms_error_urad[i - 15 : i + 16] ** 2))
    edges = np.sqrt(np.mean(np.r_[result.rms_error_urad[:20], result.rms_error_urad[-20:]] ** 2))
    assert top > 1.3 * edges
    smooth = np.convolve(result.rms_error_urad**2, np.ones(21) / 21, mode="same")[10:-10]
    assert abs(int(np.argmax(smooth)) + 10 - i) <= 30


def test_noise_free_cascade_follows_the_line_of_sight(pass_):
    """Type-2 coarse + type-1 fine loop: the moving target (0.68°/s) leaves no residual without noise."""
    quiet = AptConfig(coarse_noise_urad=0.0, fine_noise_urad=0.0, jitter_urad=0.0)
    res = apt.track(pass_, quiet, np.random.default_rng(0), 10.0, rate_jitter_urad_per_deg_s=0.0)
    assert res.rms_urad < 1e-3
    # with an FSM that cannot move, the coarse stage's dynamic lag (≈ α/K_i) shows up
    stuck = apt.track(pass_, quiet.model_copy(update={"fine_range_urad": 1e-6}), np.random.default_rng(0), 10.0,
                      rate_jitter_urad_per_deg_s=0.0)
    _, _, mag = apt.los_axis_rates(pass_)
    alpha = np.max(np.abs(np.gradient(mag, pass_.t_s))) * 1e6  # µrad/s²
    ki = apt.loop_gains(quiet)["ki"]
    assert stuck.fsm_saturated_fraction > 0.99
    assert 0.3 * alpha / ki < np.max(stuck.rms_error_urad) < 3 * alpha / ki


@pytest.mark.parametrize(
    "kw",
    [{}, {"coarse_noise_urad": 60.0}, {"jitter_urad": 2.0, "fine_noise_urad": 0.3}, {"fine_bandwidth_hz": 50.0}],
)
def test_simulation_matches_closed_form_noise_budget(kw):
    a = AptConfig(**kw)
    res = apt.track(constant_rate(0.5), a, np.random.default_rng(1), 10.0)
    pred = apt.predicted_sigma_urad(a, 0.5)
    for s in res.rms_axis_urad:
        assert s == pytest.approx(pred, rel=0.05)


def test_fine_noise_term_by_hand():
    """Fine-camera noise alone: the FSM's first-order discrete loop gives var = K/(2−K) σ² per axis."""
    a = AptConfig(coarse_noise_urad=0.0, jitter_urad=0.0, fine_noise_urad=1.0)
    k = 1 - math.exp(-2 * math.pi * 150 / 2000)
    assert apt.predicted_sigma_urad(a, 0.0, rate_jitter_urad_per_deg_s=0.0) == pytest.approx(math.sqrt(k / (2 - k)))


def test_pointing_transmittance_consistent_with_rms(result):
    tw = 10 / math.sqrt(2)
    eta_gauss = 1 / (1 + 2 * result.rms_error_urad**2 / tw**2)  # σ² per axis = rms²/2
    np.testing.assert_allclose(result.pointing_transmittance, eta_gauss, rtol=0.01)
    assert np.all((result.pointing_transmittance > 0.8) & (result.pointing_transmittance <= 1))


def test_high_rate_record(result):
    assert result.x_urad.size <= 20_000 and result.x_urad.shape == result.y_urad.shape == result.t_hr_s.shape
    assert np.all(np.diff(result.t_hr_s) > 0)
    assert np.sqrt(np.mean(result.x_urad**2 + result.y_urad**2)) == pytest.approx(result.rms_urad, rel=0.05)


def test_same_seed_same_series(pass_):
    a = apt.track(pass_, AptConfig(), np.random.default_rng(9), 10.0)
    b = apt.track(pass_, AptConfig(), np.random.default_rng(9), 10.0)
    c = apt.track(pass_, AptConfig(), np.random.default_rng(10), 10.0)
    np.testing.assert_array_equal(a.rms_error_urad, b.rms_error_urad)
    np.testing.assert_array_equal(a.x_urad, b.x_urad)
    assert not np.array_equal(a.rms_error_urad, c.rms_error_urad)


def test_invalid_loop_settings_rejected(pass_):
    with pytest.raises(ValueError, match="coarse_bandwidth_hz"):
        apt.track(pass_, AptConfig(coarse_bandwidth_hz=20.0), np.random.default_rng(0), 10.0)
    with pytest.raises(ValueError, match="divergence_urad"):
        apt.track(pass_, AptConfig(), np.random.default_rng(0), 0.0)
