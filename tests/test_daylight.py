"""Scattered sunlight (satqkd.sky.daylight), adaptive-optics coupling, and the outlook presets."""

from __future__ import annotations

import math

import numpy as np
import pytest

import satqkd
from satqkd.sky import daylight as D
from satqkd.sky import link as L


def test_solar_irradiance_against_the_measured_spectrum():
    # ASTM E-490 extraterrestrial spectrum: ≈ 0.96 W m⁻² nm⁻¹ at 850 nm, ≈ 0.25 at 1550 nm; a 5772 K
    # black body is within ~10 % in the near infrared
    e = np.asarray(D.solar_spectral_irradiance_w_m2_m(np.array([850e-9, 1550e-9]))) * 1e-9
    assert e[0] == pytest.approx(0.96, rel=0.10)
    assert e[1] == pytest.approx(0.25, rel=0.12)
    # integrated over wavelength: the solar constant ≈ 1361 W m⁻² (Kopp & Lean 2011)
    lam = np.linspace(100e-9, 100e-6, 400_000)
    total = np.trapezoid(D.solar_spectral_irradiance_w_m2_m(lam), lam)
    assert total == pytest.approx(1361.0, rel=0.01)
    with pytest.raises(ValueError):
        D.solar_spectral_irradiance_w_m2_m(0.0)


def test_phase_functions_are_normalised():
    c = np.linspace(-1.0, 1.0, 20001)
    # ∫ P dΩ / 4π = ½ ∫ P d(cos Θ)
    assert 0.5 * np.trapezoid(D.rayleigh_phase(c), c) == pytest.approx(1.0, rel=1e-6)
    for g in (0.0, 0.5, 0.7):
        assert 0.5 * np.trapezoid(D.henyey_greenstein_phase(c, g), c) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError):
        D.henyey_greenstein_phase(0.0, 1.0)


def test_horizon_sky_at_noon_against_a_measured_radiance():
    # Appl. Opt. 6, 2105 (1967): the north horizon at noon, meteorological range ≥ 30 km, typically peaks at
    # 5 µW cm⁻² sr⁻¹ nm⁻¹ in the visible. Our single-scattering sky at 500–550 nm, 2° up, the Sun at 60°
    # in the opposite azimuth, sea level, 30 km visibility: within a factor of 2.
    for lam in (500e-9, 550e-9):
        rad = D.sky_spectral_radiance_w_m2_sr_m(2.0, 0.0, 60.0, 180.0, lam, 0.0, 30e3) * 1e-9 * 1e2  # µW cm⁻² sr⁻¹ nm⁻¹
        assert 2.5 < rad < 10.0


def test_sky_is_darker_at_1550_nm_and_brighter_near_the_sun():
    kw = dict(altitude_m=890.0, visibility_m=23e3)
    l15 = D.sky_spectral_radiance_w_m2_sr_m(90.0, 0.0, 45.0, 180.0, 1550e-9, **kw)
    l85 = D.sky_spectral_radiance_w_m2_sr_m(90.0, 0.0, 45.0, 180.0, 850e-9, **kw)
    assert 0.05 < l15 / l85 < 0.2
    near = D.sky_spectral_radiance_w_m2_sr_m(40.0, 180.0, 45.0, 180.0, 1550e-9, **kw)
    far = D.sky_spectral_radiance_w_m2_sr_m(40.0, 0.0, 45.0, 180.0, 1550e-9, **kw)
    assert near > 5 * far  # the aerosol aureole (forward scattering, g = 0.7)
    # no aerosol scattering (albedo 0): pure Rayleigh, λ^-4 × the solar spectrum, optically thin
    r = (D.sky_spectral_radiance_w_m2_sr_m(90.0, 0.0, 45.0, 180.0, 1550e-9, aerosol_albedo=0.0, **kw)
         / D.sky_spectral_radiance_w_m2_sr_m(90.0, 0.0, 45.0, 180.0, 850e-9, aerosol_albedo=0.0, **kw))
    assert r < 0.1
    with pytest.raises(ValueError):
        D.sky_spectral_radiance_w_m2_sr_m(-1.0, 0.0, 45.0, 180.0, 1550e-9, **kw)


def test_single_scattering_formula_thin_limit_and_equal_air_masses():
    # the line of sight toward the Sun's own elevation (X = X0): the expm1 branch is continuous
    kw = dict(altitude_m=0.0, visibility_m=23e3)
    a = D.sky_spectral_radiance_w_m2_sr_m(30.0, 0.0, 30.0, 180.0, 1550e-9, **kw)
    b = D.sky_spectral_radiance_w_m2_sr_m(30.0 + 1e-7, 0.0, 30.0, 180.0, 1550e-9, **kw)
    assert a == pytest.approx(b, rel=1e-6)
    # optically thin, Rayleigh only, zenith view, Sun at zenith (Θ = 0, P = 3/2): L ≈ F0 τ P/(4π) e^{-τ}
    from satqkd.sky import atmosphere as A

    tau = A.rayleigh_optical_depth(1550e-9)
    f0 = D.solar_spectral_irradiance_w_m2_m(1550e-9)
    got = D.sky_spectral_radiance_w_m2_sr_m(90.0, 0.0, 90.0, 0.0, 1550e-9, aerosol_albedo=0.0, visibility_m=500e3, altitude_m=0.0,
                                            aerosol_scale_height_m=1e-3)
    assert got == pytest.approx(f0 * tau * 1.5 / (4 * math.pi) * math.exp(-tau), rel=1e-3)


def test_twilight_falls_with_the_earths_shadow():
    assert D.twilight_factor(10.0) == 1.0 and D.twilight_factor(0.0) == 1.0
    h6 = 6371e3 * (1 / math.cos(math.radians(6.0)) - 1)
    assert D.shadow_height_m(-6.0) == pytest.approx(h6)
    assert D.twilight_factor(-6.0) == pytest.approx(math.exp(-h6 / 8e3))
    f = np.asarray(D.twilight_factor(np.array([0.0, -3.0, -6.0, -12.0, -18.0])))
    assert np.all(np.diff(f) < 0)
    assert 3.5 < -2.5 * math.log10(f[2]) < 6.0  # ≈ 4.8 mag fainter at the end of civil twilight
    # the radiance is continuous as the Sun sets
    kw = dict(wavelength_m=848.6e-9, altitude_m=890.0, visibility_m=23e3)
    up = D.sky_spectral_radiance_w_m2_sr_m(45.0, 90.0, 1e-6, 270.0, **kw)
    down = D.sky_spectral_radiance_w_m2_sr_m(45.0, 90.0, -1e-6, 270.0, **kw)
    assert up == pytest.approx(down, rel=1e-6)


def test_sunlight_counts_scale_with_etendue_and_filter():
    base = D.sunlight_rate_hz(1e6, 1550e-9, 1.0, 10.0, 1.0, 1.0, 1.0, n_detectors=1)
    # 1e6 W m⁻² sr⁻¹ m⁻¹ × 1 nm × π/4 m² × π(5 µrad)² sr, in photons of 1550 nm
    power = 1e6 * 1e-9 * math.pi / 4 * math.pi * (5e-6) ** 2
    assert base == pytest.approx(power * 1550e-9 / (6.62607015e-34 * 299792458.0), rel=1e-12)
    assert D.sunlight_rate_hz(1e6, 1550e-9, 0.1, 10.0, 1.0, 1.0, 1.0, n_detectors=1) == pytest.approx(base / 10)
    assert D.sunlight_rate_hz(1e6, 1550e-9, 1.0, 5.0, 1.0, 1.0, 1.0, n_detectors=1) == pytest.approx(base / 4)
    assert D.sunlight_rate_hz(1e6, 1550e-9, 1.0, 10.0, 2.0, 1.0, 1.0, n_detectors=1) == pytest.approx(base * 4)
    assert D.sunlight_rate_hz(1e6, 1550e-9, 1.0, 10.0, 1.0, 0.5, 0.8) == pytest.approx(base * 0.4 / 4)
    with pytest.raises(ValueError, match="filter_width_nm"):
        D.sunlight_rate_hz(1e6, 1550e-9, 0.0, 10.0, 1.0, 1.0, 1.0)


def test_ao_coupling_between_seeing_and_diffraction_limits():
    el, lam, r0, fov, d = 45.0, 848.6, 0.05, 5.0, 2.0
    seeing = L.turbulence_loss_db(el, lam, r0, fov, d)
    assert L.ao_coupling_loss_db(el, lam, r0, fov, d, 1e-9) == pytest.approx(seeing, rel=1e-6)
    f_dl = 1.03 * lam * 1e-9 / d * 1e6
    perfect = -10 * math.log10(1 - 2 ** (-((fov / f_dl) ** 2)))
    assert L.ao_coupling_loss_db(el, lam, r0, fov, d, 1.0) == pytest.approx(perfect, rel=1e-9)
    losses = [L.ao_coupling_loss_db(el, lam, r0, fov, d, s) for s in (0.1, 0.3, 0.5, 0.9)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    # the config hook: unset = the seeing loss; set = AO
    cfg = satqkd.load_preset("micius-2016-12-19")
    assert L.config_turbulence_loss_db(cfg, 30.0) == pytest.approx(
        L.turbulence_loss_db(30.0, 848.6, 0.05, cfg.receiver.field_of_view_urad, 1.0))
    cfg.receiver.ao_strehl_ratio = 0.5
    assert L.config_turbulence_loss_db(cfg, 30.0) < L.turbulence_loss_db(30.0, 848.6, 0.05, cfg.receiver.field_of_view_urad, 1.0)
    with pytest.raises(satqkd.ConfigError, match="ao_strehl_ratio"):
        cfg.receiver.ao_strehl_ratio = 1.5


def test_default_preset_has_no_sunlight_and_the_day_preset_does():
    cfg = satqkd.load_preset("micius-2016-12-19")
    assert cfg.background.sunlight is False and cfg.receiver.ao_strehl_ratio is None
    day = satqkd.load_preset("micius-1550nm-day")
    assert day.background.sunlight and day.source.wavelength_nm == 1550.0 and not day.passes.night_only
    g = satqkd.find_pass(day)
    assert np.all(g.sun_altitude_deg > 0)  # a daytime pass
    sun = L.config_sunlight_rate_hz(day, g)
    assert sun.shape == g.t_s.shape and np.all(sun > 100.0)
    total = L.config_background_rate_hz(day, g)
    assert np.allclose(total - sun, L.background_rate_hz(g.elevation_deg, g.azimuth_deg, day.background))


def test_outlook_presets_give_an_expected_key():
    # the closed-form expected key of each outlook preset's pass (satqkd run gives the sampled one,
    # docs/what-if.md): positive, and the daytime one collapses with a 1 nm filter
    from satqkd.jobs.fastkey import expected_pass

    day = satqkd.load_preset("micius-1550nm-day")
    g = satqkd.find_pass(day)
    ex = expected_pass(day, L.link_series(day, g, np.random.default_rng(1)))
    assert ex.final_key_bits > 50_000 and ex.qber < 0.05
    day.receiver.filter_width_nm = 1.0
    assert expected_pass(day, L.link_series(day, g, np.random.default_rng(1))).final_key_bits == 0
    # the MEO pass: two hours at ~11,000-14,000 km; the key needs the adaptive optics
    meo = satqkd.load_preset("meo-10000km")
    gm = satqkd.find_pass(meo)
    assert gm.duration_s > 3600 and gm.range_m.min() > 10_000e3
    ex = expected_pass(meo, L.link_series(meo, gm, np.random.default_rng(1)))
    assert ex.final_key_bits > 200_000 and ex.qber < 0.04
    meo.receiver.ao_strehl_ratio = None
    assert expected_pass(meo, L.link_series(meo, gm, np.random.default_rng(1))).final_key_bits == 0


def test_daylight_preset_runs_end_to_end(tmp_path):
    # `satqkd run --preset micius-1550nm-day` (docs/what-if.md): a key from a daytime pass, both parties agree
    import json
    import subprocess
    import sys

    out = tmp_path / "day"
    r = subprocess.run([sys.executable, "-m", "satqkd", "run", "--preset", "micius-1550nm-day", "--seed", "1", "--out", str(out),
                        "--no-figures"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["preset"] == "micius-1550nm-day" and s["keys_match"] is True
    assert 0.015 < s["qber"] < 0.04 and s["final_key_bits"] > 50_000
