"""Polarization frame rotation and HWP compensation (satqkd.sky.polarization; paper Fig. 2c)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from satqkd.config import PolarizationConfig
from satqkd.sky import polarization as P

import synthetic_passes
from synthetic_passes import geometry_from_enu

circular_pass = functools.partial(synthetic_passes.circular_pass, alt_m=495e3, t_offset_s=0.25)


def horizontal_circle(el_deg=30.0, r=1000e3, rate_deg_s=0.5, duration_s=200.0):
    """Satellite circling the station at constant elevation and range (azimuth 0 → 100°)."""
    t = np.arange(0.0, duration_s + 0.5, 1.0)
    a = np.radians(rate_deg_s * t)
    e = math.radians(el_deg)
    pos = r * np.stack([math.cos(e) * np.sin(a), math.cos(e) * np.cos(a), np.full_like(a, math.sin(e))], axis=1)
    w = math.radians(rate_deg_s)
    vel = r * w * np.stack([math.cos(e) * np.cos(a), -math.cos(e) * np.sin(a), np.zeros_like(a)], axis=1)
    return geometry_from_enu(t, pos, vel)


def _mod180(x):
    return (np.asarray(x) + 90.0) % 180.0 - 90.0


# ------------------------------------------------------------------ frame rotation invariants


def test_in_plane_zenith_pass_has_no_rotation_at_cassegrain():
    """Track through the zenith: the velocity stays in the vertical plane of the line of sight, so the
    satellite axis stays along the vertical circle (mod 180°) and a tube-mounted decoder sees no rotation."""
    g = circular_pass(max_el_deg=90.0, max_range_m=1500e3)
    d = P.frame_rotation_deg(g, nasmyth=False)
    assert g.elevation_deg.max() > 89.5
    np.testing.assert_allclose(d - d[0], 0.0, atol=1e-6)
    assert abs(_mod180(d[0])) < 1e-6
    # at a Nasmyth port the only rotation left is the elevation itself
    dn = P.frame_rotation_deg(g, nasmyth=True)
    np.testing.assert_allclose(dn - dn[0], -(g.elevation_deg - g.elevation_deg[0]), atol=1e-6)


def test_constant_elevation_circle():
    """Velocity along the azimuth direction at fixed elevation: 90° to the vertical circle, constant for
    Cassegrain and Nasmyth; a Coudé port additionally turns with the azimuth."""
    g = horizontal_circle()
    cas = P.frame_rotation_deg(g, nasmyth=False)
    nas = P.frame_rotation_deg(g, nasmyth=True)
    cou = P.frame_rotation_deg(g, coude=True)
    np.testing.assert_allclose(_mod180(cas - 90.0), 0.0, atol=1e-9)
    np.testing.assert_allclose(nas - nas[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(cou - cou[0], -(g.azimuth_deg - g.azimuth_deg[0]), atol=1e-9)
    assert g.azimuth_deg[-1] - g.azimuth_deg[0] == pytest.approx(100.0)


def test_rotation_independent_of_pass_heading():
    """Turning the whole pass about the local vertical changes azimuths, not the frame rotation (alt-az mount)."""
    a = P.frame_rotation_deg(circular_pass(heading_deg=0.0), nasmyth=True)
    b = P.frame_rotation_deg(circular_pass(heading_deg=137.0), nasmyth=True)
    np.testing.assert_allclose(_mod180(a - b), 0.0, atol=1e-8)


def test_velocity_across_line_of_sight_at_culmination():
    g = circular_pass(step_s=0.5)
    i = int(np.argmin(np.abs(g.range_rate_m_s)))
    d = P.frame_rotation_deg(g, nasmyth=False)
    assert abs(_mod180(d[i] - 90.0)) < 0.2  # horizontal velocity ⟂ line of sight → along ê_az
    # and the satellite frame swings by most of a half turn over a 48° pass
    assert 60.0 < abs(d[-1] - d[0]) < 180.0


# ------------------------------------------------------------------ contrast


def test_contrast_model_by_hand():
    e0 = 1 / 331
    assert P.error_probability(0.0, 330.0) == pytest.approx(e0)
    assert P.contrast(P.error_probability(0.0, 330.0)) == pytest.approx(330.0)
    assert P.error_probability(90.0, 330.0) == pytest.approx(1 - e0)
    assert P.error_probability(45.0, 330.0) == pytest.approx(0.5)
    # the paper's starting value: 3.4° left by the static set-up turns 330:1 into ≈ 150:1
    c = P.contrast(P.error_probability(3.4, 330.0))
    assert c == pytest.approx((1 - (e0 + (1 - 2 * e0) * math.sin(math.radians(3.4)) ** 2)) / (e0 + (1 - 2 * e0) * math.sin(math.radians(3.4)) ** 2))
    assert 140 < c < 160


def test_uncompensated_falls_to_zero_compensated_stays_high():
    g = circular_pass()  # max elevation 47.8°, 495 km, range ≤ 1200 km
    pol = PolarizationConfig()
    e_d, comp, unc = P.misalignment(g, pol, np.random.default_rng(1))
    assert unc[0] == pytest.approx(P.contrast(P.error_probability(pol.initial_offset_deg, pol.intrinsic_contrast)))
    assert unc.min() < 1.0  # paper: "from 150:1 to 0"
    assert np.mean(comp) > 100 * np.mean(unc[unc.size // 2 :])
    assert comp.min() > 100
    np.testing.assert_allclose(e_d, 1 / (1 + comp))  # compensation = "hwp" → e_d from the compensated contrast
    e_none, _, unc2 = P.misalignment(g, pol.model_copy(update={"compensation": "none"}), np.random.default_rng(1))
    np.testing.assert_allclose(e_none, 1 / (1 + unc2))


def test_mean_compensated_contrast_matches_simulation():
    g = circular_pass()
    pol = PolarizationConfig(hwp_error_deg=1.5)
    sims = [np.mean(P.misalignment(g, pol, np.random.default_rng(s))[1]) for s in range(40)]
    expected = P.mean_compensated_contrast(pol.intrinsic_contrast, pol.hwp_error_deg, pol.hwp_step_deg)
    assert np.mean(sims) == pytest.approx(expected, rel=0.03)
    assert 250 <= expected <= 310  # paper: 280:1 on average
    assert P.mean_compensated_contrast(330.0, 0.0, 0.0) == pytest.approx(330.0)


def test_quantisation_only():
    """Perfect prediction: the plate rounded to 0.1° leaves at most 0.1° of polarization rotation."""
    g = circular_pass()
    pol = PolarizationConfig(hwp_error_deg=0.0, hwp_step_deg=0.1)
    _, comp, _ = P.misalignment(g, pol, np.random.default_rng(0))
    floor = P.contrast(P.error_probability(0.1 + 1e-9, pol.intrinsic_contrast))
    assert np.all(comp >= floor) and np.all(comp <= pol.intrinsic_contrast + 1e-9)


def test_hwp_error_process_statistics_and_seed():
    t = np.arange(0.0, 20_000.0, 1.0)
    x = P.hwp_error_series_deg(t, 0.8, 20.0, np.random.default_rng(3))
    assert np.std(x) == pytest.approx(0.8, rel=0.1)
    lag = 20
    rho = np.corrcoef(x[:-lag], x[lag:])[0, 1]
    assert rho == pytest.approx(math.exp(-1), abs=0.08)
    np.testing.assert_array_equal(x, P.hwp_error_series_deg(t, 0.8, 20.0, np.random.default_rng(3)))
    g = circular_pass()
    a = P.misalignment(g, PolarizationConfig(), np.random.default_rng(5))
    b = P.misalignment(g, PolarizationConfig(), np.random.default_rng(5))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
