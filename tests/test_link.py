"""Link budget by cause, background, fiber reference and the pass series (satqkd.sky.link)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

import satqkd
from satqkd.config import BackgroundConfig
from satqkd.records import LinkSeries
from satqkd.sky import link as L

import synthetic_passes

circular_pass = synthetic_passes.circular_pass


@pytest.fixture(scope="module")
def cfg():
    return satqkd.load_preset("micius-2016-12-19")


# ------------------------------------------------------------------ diffraction and pointing


def test_diffraction_at_1200_km_matches_paper():
    loss = L.diffraction_loss_db(1200e3, 10.0, 1.0)
    assert 21.0 <= loss <= 23.0  # paper: 22 dB
    # hand computation: θ_w = 10/√2 µrad, w = θ_w L = 8.485 m, η = 1 − exp(−2·0.5²/w²)
    w = 10e-6 / math.sqrt(2) * 1200e3
    assert loss == pytest.approx(-10 * math.log10(1 - math.exp(-0.5 / w**2)), abs=0.01)


def test_divergence_is_full_angle_at_1_over_e_and_capture_integral():
    L_m, div = 1000e3, 10.0
    w = L.beam_radius_m(L_m, div, tx_aperture_m=1e-6)
    # the definition: intensity at half the full 1/e angle is 1/e of the peak
    r = div / 2 * 1e-6 * L_m
    assert math.exp(-2 * r**2 / w**2) == pytest.approx(math.exp(-1), rel=1e-6)
    # capture by a 1 m disk, integrated numerically over the Gaussian profile
    total = math.pi * w**2 / 2
    inside, _ = integrate.quad(lambda rr: 2 * math.pi * rr * math.exp(-2 * rr**2 / w**2), 0, 0.5)
    assert L.diffraction_loss_db(L_m, div, 1.0, tx_aperture_m=1e-6) == pytest.approx(-10 * math.log10(inside / total), abs=1e-6)


def test_far_field_diffraction_grows_20_db_per_decade():
    d = np.asarray(L.diffraction_loss_db(np.array([600e3, 1200e3]), 10.0, 1.0))
    assert d[1] - d[0] == pytest.approx(20 * math.log10(2), abs=0.05)


def test_pointing_loss_known_error():
    assert L.pointing_loss_db(0.0, 10.0) == 0.0
    tw = 10 / math.sqrt(2)
    assert L.pointing_loss_db(tw, 10.0) == pytest.approx(20 * math.log10(math.e), rel=1e-12)  # exp(−2)


def test_jitter_formula_matches_monte_carlo():
    rng = np.random.default_rng(5)
    tw = 10 / math.sqrt(2)
    for sigma in (0.85, 2.0, 5.0):
        xy = rng.normal(0.0, sigma, size=(2, 400_000))
        samples = np.exp(-2 * (xy**2).sum(axis=0) / tw**2)
        mc, se = samples.mean(), samples.std() / math.sqrt(samples.size)
        eta = 10 ** (-L.jitter_pointing_loss_db(sigma, 10.0) / 10)
        assert abs(mc - eta) < 4 * se


# ------------------------------------------------------------------ atmosphere


def test_kasten_young_airmass():
    assert L.airmass(90.0) == pytest.approx(1.0, abs=1e-3)
    assert L.airmass(10.0) == pytest.approx(5.6, abs=0.05)
    assert L.airmass(60.0) == pytest.approx(1 / math.sin(math.radians(60)), rel=2e-3)
    x = L.airmass(np.linspace(0, 90, 91))
    assert np.all(np.diff(x) < 0)
    assert L.atmosphere_loss_db(30.0, 0.7) == pytest.approx(0.7 * L.airmass(30.0))


def test_fried_parameter_scaling():
    assert L.fried_parameter_m(90.0, 500.0, 0.05) == pytest.approx(0.05, rel=1e-3)
    assert L.fried_parameter_m(90.0, 848.6, 0.05) / L.fried_parameter_m(90.0, 500.0, 0.05) == pytest.approx(
        (848.6 / 500) ** 1.2, rel=1e-9
    )
    # r0 ∝ (sec z)^−3/5: at 30° elevation sec z = 2
    assert L.fried_parameter_m(30.0, 500.0, 0.05) / L.fried_parameter_m(90.0, 500.0, 0.05) == pytest.approx(2**-0.6, rel=3e-3)


def test_turbulence_loss_half_power_when_fov_equals_fwhm():
    fwhm = L.seeing_fwhm_urad(40.0, 848.6, 0.05)
    assert fwhm == pytest.approx(0.98 * 848.6e-9 / L.fried_parameter_m(40.0, 848.6, 0.05) * 1e6)
    # a circular Gaussian holds half its power within radius HWHM
    assert L.turbulence_loss_db(40.0, 848.6, 0.05, fwhm) == pytest.approx(10 * math.log10(2), abs=1e-9)
    el = np.array([15.0, 30.0, 60.0, 90.0])
    t = L.turbulence_loss_db(el, 848.6, 0.05, 20.0)
    assert np.all(np.diff(t) < 0) and t[-1] > 0
    assert L.turbulence_loss_db(20.0, 848.6, 0.05, 1000.0) < 1e-6


def test_scintillation_fading_unit_mean_lognormal():
    rng = np.random.default_rng(11)
    el = np.full(200_000, 30.0)
    f = L.scintillation_fading(el, 0.05, rng)
    si = L.scintillation_index(30.0, 0.05)
    assert si == pytest.approx(0.05 * L.airmass(30.0) ** (11 / 6))
    assert f.mean() == pytest.approx(1.0, abs=4 * f.std() / math.sqrt(f.size))
    assert np.var(np.log(f)) == pytest.approx(math.log1p(si), rel=0.02)
    assert L.scintillation_index(5.0, 0.5) == 1.0  # saturation cap


def test_receiver_optics():
    assert L.receiver_optics_loss_db(0.16) == pytest.approx(7.959, abs=1e-3)
    with pytest.raises(ValueError, match="optics_efficiency"):
        L.receiver_optics_loss_db(1.5)


# ------------------------------------------------------------------ background


def test_background_higher_toward_city():
    bg = BackgroundConfig(sky_rate_hz=100, city_rate_hz=200, city_azimuth_deg=240, city_width_deg=60, city_scale_height_deg=15)
    toward = L.background_rate_hz(15.0, 240.0, bg)
    away = L.background_rate_hz(15.0, 60.0, bg)
    assert toward > away
    assert toward - away == pytest.approx(200 * math.exp(-1) * (1 - math.exp(-9)), rel=1e-9)  # 15° = one scale height
    assert away == pytest.approx(100 * math.sqrt(L.airmass(15.0)) + 200 * math.exp(-9) * math.exp(-1))
    # azimuth wraps: 230° and 250° are symmetric about the city, 10° and 350° differ
    assert L.background_rate_hz(20.0, 230.0, bg) == pytest.approx(L.background_rate_hz(20.0, 250.0, bg))
    # lower elevation toward the city → more light
    assert L.background_rate_hz(10.0, 240.0, bg) > L.background_rate_hz(30.0, 240.0, bg)
    with pytest.raises(ValueError, match="elevation_deg"):
        L.background_rate_hz(-1.0, 0.0, bg)


# ------------------------------------------------------------------ budget and fiber


def test_link_budget_sum_and_shapes(cfg):
    b = L.link_budget_db(cfg, 1200e3, 20.0)
    assert set(b) == set(L.LOSS_CAUSES) | {"total"}
    assert b["total"] == pytest.approx(sum(b[k] for k in L.LOSS_CAUSES))
    assert b["diffraction"] == pytest.approx(L.diffraction_loss_db(1200e3, 10.0, 1.0, 0.3))
    assert 0 < b["pointing"] < 3.0  # paper: < 3 dB
    arr = L.link_budget_db(cfg, np.array([645e3, 1200e3]), np.array([47.8, 19.5]))
    assert arr["total"].shape == (2,) and arr["total"][1] > arr["total"][0]
    fixed = L.link_budget_db(cfg, 1200e3, 20.0, pointing_sigma_urad=0.0)
    assert fixed["pointing"] == 0.0


def test_fiber_reference_matches_paper(cfg):
    assert L.fiber_transmittance(1200e3) == pytest.approx(1e-24, rel=1e-12)  # 240 dB
    cmp = L.fiber_comparison(1200e3, cfg)
    assert cmp["ratio"] >= 1e19  # paper: ~20 orders of magnitude
    assert 5e6 <= cmp["years_per_sifted_bit"] <= 7e6  # paper: six million years
    assert cmp["years_per_sifted_bit"] == pytest.approx(1 / (1e10 * 1e-24 * 0.5) / (365.25 * 86400), rel=1e-9)
    assert cmp["orders_of_magnitude"] == pytest.approx(math.log10(cmp["ratio"]))
    # the elevation at 1200 km for a ~500 km orbit is about 20°
    assert 15 < cmp["elevation_deg"] < 25


# ------------------------------------------------------------------ pass series


def test_link_series_structure_and_reproducibility(cfg):
    g = circular_pass()
    a = L.link_series(cfg, g, np.random.default_rng(7))
    b = L.link_series(cfg, g, np.random.default_rng(7))
    c = L.link_series(cfg, g, np.random.default_rng(8))
    assert isinstance(a, LinkSeries)
    assert list(a.loss_db) == list(L.LOSS_CAUSES)
    n = g.t_s.size
    for v in (*a.loss_db.values(), a.background_rate_hz, a.misalignment, a.tracking_error_urad):
        assert v.shape == (n,) and np.all(np.isfinite(v))
    for k in L.LOSS_CAUSES:
        np.testing.assert_array_equal(a.loss_db[k], b.loss_db[k])
    np.testing.assert_array_equal(a.misalignment, b.misalignment)
    assert not np.array_equal(a.loss_db["pointing"], c.loss_db["pointing"])
    # the deterministic causes follow the geometry: nearest point has the smallest loss
    i = g.culmination_index
    assert a.loss_db["diffraction"][i] == pytest.approx(L.diffraction_loss_db(g.range_m[i], 10.0, 1.0, 0.3))
    det = a.loss_db["diffraction"] + a.loss_db["atmosphere"] + a.loss_db["turbulence"]
    assert np.argmin(det) == i
    assert a.detector_efficiency == 0.5 and a.dark_count_hz == 25.0
    assert np.all(a.misalignment > 0) and np.all(a.misalignment < 0.02)
    assert a.contrast_uncompensated.shape == (n,)


def test_link_series_fading_uses_its_own_stream(cfg):
    g = circular_pass()
    on = cfg.model_copy(deep=True)
    on.atmosphere.turbulence_fading = True
    a = L.link_series(cfg, g, np.random.default_rng(3))
    b = L.link_series(on, g, np.random.default_rng(3))
    np.testing.assert_array_equal(a.loss_db["pointing"], b.loss_db["pointing"])
    np.testing.assert_array_equal(a.misalignment, b.misalignment)
    fade_db = b.loss_db["turbulence"] - a.loss_db["turbulence"]
    assert np.std(fade_db) > 0.05
    assert np.mean(10 ** (-fade_db / 10)) == pytest.approx(1.0, abs=0.1)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="divergence_urad"):
        L.diffraction_loss_db(1e6, -1.0, 1.0)
    with pytest.raises(ValueError, match="elevation_deg"):
        L.airmass(91.0)
    with pytest.raises(ValueError, match="field_of_view_urad"):
        L.turbulence_loss_db(30.0, 848.6, 0.05, 0.0)
