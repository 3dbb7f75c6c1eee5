"""Strict TLE checks (satqkd.sky.tle) and their config hook: a bad line is refused naming line and column."""

from __future__ import annotations

import pytest

import satqkd
from satqkd.config import ConfigError, config_from_dict
from satqkd.sky.tle import TLEError, check_tle, tle_checksum

# Micius (NORAD 41731) as in the preset: a real element set
L1 = "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993"
L2 = "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063"


def _resum(line: str) -> str:
    """The line with a correct checksum (so a test reaches the column checks behind it)."""
    return line[:68] + str(tle_checksum(line))


def test_real_micius_tle_accepted():
    el = check_tle(L1, L2)
    assert el["inclination_deg"] == 97.3699
    assert el["bstar"] == pytest.approx(1.7957e-5)
    assert el["mean_motion_rev_per_day"] == 15.23915303
    assert el["eccentricity"] == pytest.approx(0.00132)
    assert tle_checksum(L1) == 3 and tle_checksum(L2) == 3


def test_wrong_checksum_refused():
    with pytest.raises(TLEError) as e:
        check_tle(L1[:68] + "4", L2)
    assert (e.value.line, e.value.column) == (1, 69)
    assert "line 1, column 69" in str(e.value)


def test_inclination_digit_typo_refused_by_checksum():
    bad = L2.replace(" 97.3699", " 98.3699")
    with pytest.raises(TLEError) as e:
        check_tle(L1, bad)
    assert (e.value.line, e.value.column) == (2, 69)


def test_inclination_misplaced_point_refused_even_with_fixed_checksum():
    bad = _resum(L2.replace(" 97.3699", " 9.73699"))
    with pytest.raises(TLEError, match="inclination") as e:
        check_tle(L1, bad)
    assert (e.value.line, e.value.column) == (2, 9)


def test_bstar_shifted_one_column_refused():
    # right shift: " 17957-4 0" -> "  17957-40"; SGP4 readers would take B* = 10x and the ephemeris type 4
    bad = L1.replace(" 17957-4 0", "  17957-40")
    assert len(bad) == 69
    with pytest.raises(TLEError) as e:
        check_tle(bad, L2)
    assert e.value.line == 1 and e.value.column in (54, 62, 63)
    # left shift, checksum kept valid (a shift moves no digit's value)
    left = L1.replace("  17957-4 0", " 17957-4  0")
    with pytest.raises(TLEError) as e:
        check_tle(left, L2)
    assert e.value.line == 1 and 53 <= e.value.column <= 62


@pytest.mark.parametrize(
    "l1, l2, where",
    [
        (L1[:68], L2, (1, 69)),  # 68 characters
        (L1, "2 41732" + L2[7:68] + "4", (2, 3)),  # satellite numbers differ (checksum fixed)
        (L1, _resum(L2[:52] + "18.23915303" + L2[63:]), (2, 53)),  # 18 rev/day: below 150 km
        (L1, _resum(L2[:26] + "0013 00" + L2[33:]), (2, 27)),  # eccentricity with a blank
        (_resum(L1[:18] + "16353,90152003" + L1[32:]), L2, (1, 19)),  # epoch with a comma
    ],
)
def test_fixed_columns_refused(l1, l2, where):
    with pytest.raises(TLEError) as e:
        check_tle(l1, l2)
    assert (e.value.line, e.value.column) == where


def test_config_refuses_bad_tle_naming_line_and_column():
    d = {"base": "micius-2016-12-19", "orbit": {"tle_line2": L2.replace(" 97.3699", " 98.3699")}}
    with pytest.raises(ConfigError, match=r"TLE line 2, column 69: checksum"):
        config_from_dict(d, "test")
    cfg = satqkd.load_preset("micius-2016-12-19")
    with pytest.raises(ValueError, match="TLE line 1, column 62"):  # ConfigError once assignments are wrapped
        cfg.orbit.tle_line1 = L1.replace(" 17957-4 0", "  17957-40")
