"""Hufnagel–Valley turbulence (satqkd.sky.turbulence) against published values, and its link hook."""

from __future__ import annotations

import math

import numpy as np
import pytest

import satqkd
from satqkd.config import config_from_dict
from satqkd.sky import link as L
from satqkd.sky import turbulence as T


def test_hv57_gives_its_name_r0_5cm_theta0_7urad():
    # HV 5/7 (v = 21 m/s, A = 1.7e-14): r0 ≈ 5 cm and θ0 ≈ 7 µrad at 0.5 µm toward zenith (Valley 1980;
    # Andrews & Phillips 2005, §12.2)
    assert T.fried_parameter_zenith_m(500e-9) == pytest.approx(0.05, rel=0.05)
    assert T.isoplanatic_angle_zenith_urad(500e-9) == pytest.approx(7.0, rel=0.05)
    # r0 ∝ λ^(6/5)
    assert T.fried_parameter_zenith_m(1000e-9) / T.fried_parameter_zenith_m(500e-9) == pytest.approx(2**1.2, rel=1e-9)


def test_profile_terms_and_moments():
    assert T.hufnagel_valley_cn2(0.0) == pytest.approx(1.7e-14 + 2.7e-16)
    # the tropopause term peaks near 10 km: at 10 km it is 0.00594 (21/27)^2 e^-10
    assert T.hufnagel_valley_cn2(10e3) == pytest.approx(0.00594 * (21 / 27) ** 2 * 0.1**10 * math.exp(-10) + 2.7e-16 * math.exp(-10e3 / 1500)
                                                        + 1.7e-14 * math.exp(-100), rel=1e-9)
    # ∫ of the two exponentials in closed form, plus the tropopause term ∫ = 0.00594 (v/27)² 1e-50 · 10! · 1000^11
    closed = 2.7e-16 * 1500 + 1.7e-14 * 100 + 0.00594 * (21 / 27) ** 2 * 1e-50 * math.factorial(10) * 1000.0**11
    assert T.cn2_moment(0.0) == pytest.approx(closed, rel=1e-3)
    # a stronger ground layer lowers r0
    assert T.fried_parameter_zenith_m(500e-9, 21.0, 1e-13) < T.fried_parameter_zenith_m(500e-9)


def test_scintillation_scalings_and_aperture_averaging():
    p90, p30 = T.scintillation_index_point(np.array([90.0, 30.0]), 848.6e-9)
    assert p30 / p90 == pytest.approx(2 ** (11 / 6), rel=1e-9)  # sec^(11/6) ζ
    a90, a30 = T.scintillation_index_aperture(np.array([90.0, 30.0]), 1.0)
    assert a30 / a90 == pytest.approx(8.0, rel=1e-9)  # sec³ ζ
    assert T.scintillation_index_aperture(90.0, 0.5) / a90 == pytest.approx(2 ** (7 / 3), rel=1e-9)
    # a 1 m telescope averages the scintillation of a point receiver down by orders of magnitude
    assert T.scintillation_index(90.0, 848.6e-9, 1.0) < 0.01 * p90
    # a tiny aperture sees the point value
    assert T.scintillation_index(90.0, 848.6e-9, 1e-3) == pytest.approx(p90)
    assert T.scintillation_index(2.0, 848.6e-9, 1e-3) == 1.0  # saturation cap
    with pytest.raises(ValueError, match="elevation_deg"):
        T.scintillation_index_point(0.0, 848.6e-9)


def test_hv_profile_selectable_in_the_link_config():
    fixed = satqkd.load_preset("micius-2016-12-19")
    hv = config_from_dict({"base": "micius-2016-12-19", "atmosphere": {"turbulence_profile": "hufnagel_valley",
                                                                       "hv_ground_cn2_m23": 5e-14}}, "t")
    assert L.config_r0_zenith_m(fixed) == 0.05
    assert L.config_r0_zenith_m(hv) == pytest.approx(T.fried_parameter_zenith_m(500e-9, 21.0, 5e-14))
    b_fixed, b_hv = L.link_budget_db(fixed, 800e3, 30.0), L.link_budget_db(hv, 800e3, 30.0)
    assert b_hv["turbulence"] > b_fixed["turbulence"]  # r0 < 5 cm: more seeing loss
    assert b_hv["diffraction"] == b_fixed["diffraction"]
    si = L.config_scintillation_index(hv, np.array([20.0, 60.0]))
    assert si[0] > si[1] > 0
