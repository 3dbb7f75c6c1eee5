"""Moonlight (Krisciunas & Schaefer 1991) and per-station light domes (satqkd.sky.background)."""

from __future__ import annotations

import numpy as np
import pytest

import satqkd
from satqkd.config import config_from_dict
from satqkd.sky import background as B
from satqkd.sky import link as L

import synthetic_passes


def test_ks91_pieces():
    assert B.nl_to_v_mag_arcsec2(B.DARK_SKY_NL) == pytest.approx(21.587, abs=0.01)  # KS91's dark sky
    assert B.ks_airmass(0.0) == pytest.approx(1.0) and B.ks_airmass(90.0) == pytest.approx(5.0)
    assert B.moon_illuminance(0.0) == pytest.approx(10 ** (-0.4 * 3.84))
    # a quarter Moon (α = 90°) is 0.026·90 + 4e-9·90⁴ = 2.37 mag fainter than the full Moon (KS91 eq. 20)
    assert -2.5 * np.log10(B.moon_illuminance(90.0) / B.moon_illuminance(0.0)) == pytest.approx(0.026 * 90 + 4e-9 * 90**4)
    # forward (Mie) scattering: brighter near the Moon
    assert B.scattering_function(5.0) > B.scattering_function(30.0) > B.scattering_function(90.0)


def test_full_moon_sky_is_about_18_mag():
    # full Moon at zenith, target 45° away: the V sky is ≈ 18 mag/arcsec² (KS91, Fig. 2: 17.5–18.5 there)
    v = B.nl_to_v_mag_arcsec2(B.moonlight_nl(0.0, 45.0, 0.0, 45.0))
    assert 17.5 < v < 18.5
    assert B.moonlight_nl(0.0, 45.0, 95.0, 45.0) == 0.0  # Moon below the horizon
    assert B.moonlight_nl(150.0, 45.0, 0.0, 45.0) < 0.05 * B.moonlight_nl(0.0, 45.0, 0.0, 45.0)  # a thin crescent


def test_angular_separation():
    assert B.angular_separation_deg(0, 0, 0, 90) == pytest.approx(90.0)
    assert B.angular_separation_deg(90, 0, 30, 123) == pytest.approx(60.0)
    assert B.angular_separation_deg(45, 10, 45, 10) == pytest.approx(0.0, abs=1e-6)


def test_moon_position_and_phase_on_the_paper_night():
    # 2016-12-19 16:50 UTC at Xinglong: the waning gibbous Moon (last quarter on 2016-12-21) low in the east
    cfg = satqkd.load_preset("micius-2016-12-19")
    from datetime import datetime, timezone

    el, az, phase = B.moon_look(cfg.station.latitude_deg, cfg.station.longitude_deg, cfg.station.altitude_m,
                                datetime(2016, 12, 19, 16, 50, tzinfo=timezone.utc), [0.0])
    assert 60 < phase[0] < 90 and 0 < el[0] < 40 and 60 < az[0] < 130


def test_station_light_domes_replace_the_background_dome_and_moon_adds():
    cfg = satqkd.load_preset("micius-2016-12-19")
    g = synthetic_passes.circular_pass()
    el, az = np.array([15.0, 15.0]), np.array([234.0, 54.0])
    base = L.background_rate_hz(el, az, cfg.background)
    assert base[0] > base[1]  # toward Beijing
    c2 = config_from_dict({"base": "micius-2016-12-19",
                           "station": {"light_domes": [{"azimuth_deg": 54.0, "rate_hz": 500.0}]}}, "t")
    new = L.background_rate_hz(el, az, c2.background, c2.station.light_domes)
    assert new[1] > new[0]  # the dome is where the station says
    sky = cfg.background.sky_rate_hz * np.sqrt(L.airmass(15.0))
    assert new[1] == pytest.approx(sky + 500.0 * np.exp(-1.0))
    assert L.background_rate_hz(el, az, cfg.background, []) == pytest.approx([sky, sky])  # no domes at all
    off = L.config_background_rate_hz(cfg, g)
    assert off == pytest.approx(L.background_rate_hz(g.elevation_deg, g.azimuth_deg, cfg.background))
    cfg.background.moon = True  # the synthetic pass's start time has the Moon up
    on = L.config_background_rate_hz(cfg, g)
    assert np.all(on >= off) and np.any(on > off)
