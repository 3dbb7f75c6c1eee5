"""Atmosphere by cause (satqkd.sky.atmosphere) against published values, and the 'physical' link model."""

from __future__ import annotations


import numpy as np
import pytest

import satqkd
from satqkd.config import ConfigError, config_from_dict
from satqkd.sky import atmosphere as A
from satqkd.sky import link as L


def test_rayleigh_optical_depth_published_values():
    # Bodhaine et al. (1999), Table 3 (sea level, 1013.25 hPa): 0.0973 at 550 nm, ≈ 0.0166 at 850 nm
    assert A.rayleigh_optical_depth(550e-9) == pytest.approx(0.0973, rel=0.01)
    assert A.rayleigh_optical_depth(850e-9) == pytest.approx(0.016, abs=0.001)
    # an independent formula (Hansen & Travis, Space Sci. Rev. 16, 527 (1974)) agrees to 1 %
    for lam_um in (0.4, 0.55, 0.7, 0.85, 1.0):
        ht = 0.008569 * lam_um**-4 * (1 + 0.0113 * lam_um**-2 + 0.00013 * lam_um**-4)
        assert A.rayleigh_optical_depth(lam_um * 1e-6) == pytest.approx(ht, rel=0.015)
    # proportional to the pressure (the column mass)
    assert A.rayleigh_optical_depth(850e-9, 50662.5) == pytest.approx(A.rayleigh_optical_depth(850e-9) / 2, rel=1e-12)
    # ~λ^-4
    r = A.rayleigh_optical_depth(np.array([425e-9, 850e-9]))
    assert 15.5 < r[0] / r[1] < 18.5
    # 1.2–2.5 µm: Hansen & Travis joined continuously at 1.2 µm, λ^-4 at 1550 nm
    assert A.rayleigh_optical_depth(1.2e-6 + 1e-12) == pytest.approx(A.rayleigh_optical_depth(1.2e-6), rel=2e-5)
    assert A.rayleigh_optical_depth(1550e-9) == pytest.approx(0.008569 * 1.55**-4 * (1 + 0.0113 / 1.55**2), rel=0.01)
    assert A.rayleigh_optical_depth(1550e-9) == pytest.approx(0.00149, rel=0.01)
    with pytest.raises(ValueError, match="wavelength_m"):
        A.rayleigh_optical_depth(3e-6)


def test_standard_atmosphere_pressure():
    assert A.pressure_pa(0.0) == pytest.approx(101325.0)
    assert A.pressure_pa(1000.0) == pytest.approx(89875.0, rel=1e-3)  # US Standard Atmosphere 1976 table
    assert A.pressure_pa(5000.0) == pytest.approx(54020.0, rel=1e-3)
    assert A.temperature_k(2000.0) == pytest.approx(275.15)


def test_airmass_and_refraction_published_values():
    assert A.airmass(10.0) == pytest.approx(5.6, abs=0.05)
    assert A.airmass(90.0) == pytest.approx(1.0, abs=1e-3)
    assert A.airmass(0.0) == pytest.approx(38.1, abs=0.2)  # Kasten & Young 1989: 38.0868 at the horizon
    assert L.airmass(30.0) == A.airmass(30.0)
    # refraction for a *true* altitude (10 °C, 1010 hPa): ≈ 29′ at 0° (the almanac's 34′ is for an *apparent*
    # altitude 0°), ≈ 5.3′ at 10°, ≈ 1′ at 45° (Meeus 1998, ch. 16)
    assert A.refraction_deg(0.0) * 60 == pytest.approx(29.0, abs=1.0)
    assert A.refraction_deg(10.0) * 60 == pytest.approx(5.3, abs=0.2)
    assert A.refraction_deg(45.0) * 60 == pytest.approx(1.0, abs=0.05)
    assert A.refraction_deg(90.0) == 0.0
    # lower pressure (a high site) bends less
    assert A.refraction_deg(5.0, 80000.0) < A.refraction_deg(5.0)
    assert A.apparent_elevation_deg(89.99) <= 90.0


def test_kim_and_kruse_exponents():
    q = A.aerosol_size_exponent(np.array([100e3, 23e3, 3e3, 0.8e3, 0.3e3]))
    assert list(np.round(q, 6)) == [1.6, 1.3, 0.82, 0.3, 0.0]
    assert A.aerosol_size_exponent(3e3, "kruse") == pytest.approx(0.585 * 3 ** (1 / 3))
    with pytest.raises(ValueError, match="kim"):
        A.aerosol_size_exponent(10e3, "modtran")


def test_aerosol_extinction_koschmieder_at_550_nm_and_wavelength_scaling():
    # at 550 nm the extinction is Koschmieder's 3.912/V for any V
    for v in (1e3, 5e3, 23e3, 80e3):
        assert A.aerosol_extinction_per_m(550e-9, v) == pytest.approx(3.912 / v, rel=1e-12)
    # 23 km, 850 nm: (850/550)^-1.3 = 0.568 → 0.0966 /km
    assert A.aerosol_extinction_per_m(850e-9, 23e3) * 1e3 == pytest.approx(0.0966, rel=0.01)
    assert A.aerosol_optical_depth(850e-9, 23e3, 1200.0) == pytest.approx(0.0966 * 1.2, rel=0.01)


def test_slant_path_loss_is_zenith_depth_times_airmass():
    tau = A.zenith_optical_depth(848.6e-9, 890.0, 23e3, 1200.0, 0.01)
    assert tau == pytest.approx(A.rayleigh_optical_depth(848.6e-9, A.pressure_pa(890.0))
                                + A.aerosol_optical_depth(848.6e-9, 23e3) + 0.01)
    el = np.array([90.0, 45.0, 20.0, 10.0])
    loss = A.extinction_loss_db(el, 848.6e-9, 890.0, 23e3, 1200.0, 0.01)
    x = A.airmass(A.apparent_elevation_deg(el, A.pressure_pa(890.0), A.temperature_k(890.0)))
    assert loss == pytest.approx(10 * np.log10(np.e) * tau * x)
    assert A.transmittance(20.0, 848.6e-9, 890.0, 23e3) == pytest.approx(10 ** (-A.extinction_loss_db(20.0, 848.6e-9, 890.0, 23e3) / 10))
    assert np.all(np.diff(loss) > 0)
    # hazier and lower sites lose more; a high, clear site less
    assert A.extinction_loss_db(30.0, 848.6e-9, 890.0, 5e3) > A.extinction_loss_db(30.0, 848.6e-9, 890.0, 23e3)
    assert A.extinction_loss_db(30.0, 848.6e-9, 0.0, 23e3) > A.extinction_loss_db(30.0, 848.6e-9, 2030.0, 23e3)


def test_physical_model_selectable_in_the_link_config():
    cal = satqkd.load_preset("micius-2016-12-19")
    assert cal.atmosphere.model == "calibrated"
    phys = config_from_dict({"base": "micius-2016-12-19", "atmosphere": {"model": "physical", "visibility_m": 10e3}}, "t")
    b_cal = L.link_budget_db(cal, 800e3, 30.0)
    b_phys = L.link_budget_db(phys, 800e3, 30.0)
    assert b_cal["atmosphere"] == pytest.approx(2.80 * L.airmass(30.0))
    assert b_phys["atmosphere"] == pytest.approx(A.extinction_loss_db(30.0, 848.6e-9, 890.0, 10e3))
    assert b_phys["diffraction"] == b_cal["diffraction"]
    with pytest.raises(ConfigError, match="model"):
        config_from_dict({"base": "micius-2016-12-19", "atmosphere": {"model": "modtran"}}, "t")
    with pytest.raises(ConfigError, match="visibility_m"):
        config_from_dict({"base": "micius-2016-12-19", "atmosphere": {"visibility_m": 10.0}}, "t")


def test_physical_model_uses_the_station_altitude_and_visibility():
    x = config_from_dict({"base": "micius-2016-12-19", "atmosphere": {"model": "physical"}}, "t")
    n = config_from_dict({"base": "micius-2016-12-19", "atmosphere": {"model": "physical"},
                          "station": {"name": "Nanshan", "latitude_deg": 43.475, "longitude_deg": 87.177,
                                      "altitude_m": 2030.0, "visibility_m": 40e3}}, "t")
    assert L.config_atmosphere_loss_db(n, 30.0) == pytest.approx(A.extinction_loss_db(30.0, 848.6e-9, 2030.0, 40e3))
    assert L.config_atmosphere_loss_db(n, 30.0) < L.config_atmosphere_loss_db(x, 30.0)
