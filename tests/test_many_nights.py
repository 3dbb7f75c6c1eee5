"""One model for many nights (issue 11 §2): the paper's other-day figures vs the model (scripts/many_nights.py).

Measured result (docs/calibration.md, "One model for many nights"): with one set of parameters for every
night the ±30 % is **not** met — neither the calibrated preset nor any physical visibility × field of view
of the grid gets both other-day figures while 2016-12-19 keeps its acceptance. With the physical atmosphere
and one visibility *per night* (4.65 km on 2016-12-19, ≈ 27 km and ≈ 3.6 km on the other days) all three
are reproduced. These tests pin both findings so that a change of the model shows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import satqkd

_spec = importlib.util.spec_from_file_location("many_nights", Path(__file__).parents[1] / "scripts" / "many_nights.py")
M = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(M)


def _physical(visibility_m: float):
    c = satqkd.load_preset("micius-2016-12-19")
    c.atmosphere.model = "physical"
    c.atmosphere.visibility_m = visibility_m
    return c


def test_calibrated_preset_misses_the_other_day_figures_as_measured():
    c = M.comparison(satqkd.load_preset("micius-2016-12-19"))
    assert M.d19_acceptance_holds(c)
    # measured: 22,988 bit/s on the 516 km pass (paper 40.2k), 2,048 bit/s on the 1,033 km pass (paper 1.2k)
    assert c["near_peak_bps"] == pytest.approx(22_988, rel=0.03)
    assert c["far_peak_bps"] == pytest.approx(2_048, rel=0.03)
    # the ±30 % of issue 11 is not met (if this fails the model improved: update docs/calibration.md)
    assert c["near_ratio"] < 0.7 and c["far_ratio"] > 1.3


def test_one_physical_visibility_cannot_serve_all_nights():
    # the grid of scripts/many_nights.py, reduced: where 2016-12-19 holds, the other days stay off by > 30 %
    for v, fov in ((6e3, 14.0), (23e3, 10.0)):
        c = _physical(v)
        c.receiver.field_of_view_urad = fov
        r = M.comparison(c)
        assert M.d19_acceptance_holds(r)
        assert not (0.7 <= r["near_ratio"] <= 1.3 and 0.7 <= r["far_ratio"] <= 1.3)
    clear = M.comparison(_physical(23e3))
    assert 0.9 < clear["near_ratio"] < 1.1 and clear["far_ratio"] > 5  # 40.2k matched, 1.2k missed 5.7×
    assert not M.d19_acceptance_holds(clear)


def test_one_visibility_per_night_reproduces_all_three():
    d19 = M.comparison(_physical(4650.0))
    assert M.d19_acceptance_holds(d19)
    assert d19["d19_near_bps"] == pytest.approx(12_000, rel=0.05)
    assert 0.7 <= M.comparison(_physical(27e3))["near_ratio"] <= 1.3
    assert 0.7 <= M.comparison(_physical(3.6e3))["far_ratio"] <= 1.3
