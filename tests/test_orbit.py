"""Orbit and pass geometry: the Micius 2016-12-19 pass over Xinglong, window rules, circular orbits."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from satqkd.config import GroundStationConfig, OrbitConfig, load_preset
from satqkd.sky import orbit
from satqkd.sky.orbit import (
    elevation_for_range_deg,
    find_pass,
    find_passes,
    geometry,
    satellite_from_config,
    slant_range_m,
)

UTC = timezone.utc


@pytest.fixture(scope="module")
def cfg():
    return load_preset("micius-2016-12-19")


@pytest.fixture(scope="module")
def micius(cfg):
    return find_pass(cfg)


def _times(g, ts_s):
    return orbit._offset(orbit.timescale().from_datetime(g.start_utc), ts_s)


# ------------------------------------------------------------------ the paper's pass


def test_micius_pass_matches_paper(micius):
    """Liao et al. 2017, Fig. 3 / text: 645 km min, 1200 km max, 273 s of data; culmination ≈ 16:52 UTC at ≈ 47.8°."""
    g = micius
    assert g.satellite == "Micius" and g.station == "Xinglong"
    i = g.culmination_index
    t_culm = g.start_utc + timedelta(seconds=float(g.t_s[i]))
    assert abs((t_culm - datetime(2016, 12, 19, 16, 52, 0, tzinfo=UTC)).total_seconds()) < 60
    assert g.elevation_deg[i] == pytest.approx(47.8, abs=1.0)
    assert g.range_m.min() == pytest.approx(645e3, abs=10e3)
    assert g.range_m.max() == pytest.approx(1200e3, abs=5e3)
    assert g.duration_s == pytest.approx(273.0, abs=5.0)
    # night: the Sun is far below the horizon, and at ~500 km the satellite is in Earth's shadow
    # whenever the Sun is more than arccos(R/(R+h)) ≈ 22° below the station's horizon
    assert g.sun_altitude_deg.max() < -60.0
    assert g.sunlit.dtype == bool and g.sunlit.shape == g.t_s.shape
    assert not g.sunlit.any()


def test_micius_window_edges_and_sampling(micius, cfg):
    g = micius
    n = g.t_s.size
    for a in (g.elevation_deg, g.azimuth_deg, g.range_m, g.range_rate_m_s, g.sun_altitude_deg, g.sunlit):
        assert a.shape == (n,)
    assert g.enu_m.shape == (n, 3) and g.enu_velocity_m_s.shape == (n, 3)
    assert g.t_s[0] == 0.0 and g.t_s[-1] == pytest.approx(g.duration_s)
    dt = np.diff(g.t_s)
    assert np.allclose(dt[:-1], cfg.passes.time_step_s) and 0 < dt[-1] <= cfg.passes.time_step_s + 1e-9
    # the 1200 km limit binds on both sides (it is reached above the 15°/10° elevation rules)
    assert g.range_m[0] == pytest.approx(1200e3, abs=1.0) and g.range_m[-1] == pytest.approx(1200e3, abs=1.0)
    assert g.elevation_deg[0] > 15.0 and g.elevation_deg[-1] > 10.0
    assert np.all(g.range_m <= 1200e3 + 1.0)


def test_geometry_agrees_with_skyfield_altaz(micius, cfg):
    """Our ENU path (ITRS + WGS84 normal) against skyfield's own topocentric altaz and range rate."""
    g = micius
    sat = satellite_from_config(cfg.orbit)
    topos = orbit._Station(cfg.station).topos
    t = _times(g, g.t_s)
    alt, az, dist = (sat - topos).at(t).altaz()
    assert np.allclose(g.elevation_deg, alt.degrees, atol=1e-5)
    assert np.allclose(((g.azimuth_deg - az.degrees + 180) % 360) - 180, 0, atol=1e-5)
    assert np.allclose(g.range_m, dist.m, atol=0.1)
    *_, rr = (sat - topos).at(t).frame_latlon_and_rates(topos)
    assert np.allclose(g.range_rate_m_s, rr.m_per_s, atol=1e-3)


def test_range_rate_sign_and_enu_velocity(micius):
    g = micius
    i = g.culmination_index
    assert np.all(g.range_rate_m_s[: i - 2] < 0) and np.all(g.range_rate_m_s[i + 3 :] > 0)
    # LEO at ~7.6 km/s: range rate near the window edges is a large fraction of the orbital speed
    assert -7.6e3 < g.range_rate_m_s[0] < -5e3 and 5e3 < g.range_rate_m_s[-1] < 7.6e3
    # range rate is the derivative of the range; ENU velocity the derivative of the ENU position
    # (in the Earth-fixed frame, as the tracking mount sees it)
    inner = slice(1, -2)
    assert np.allclose(np.gradient(g.range_m, g.t_s)[inner], g.range_rate_m_s[inner], atol=0.5)
    assert np.allclose(np.gradient(g.enu_m, g.t_s, axis=0)[inner], g.enu_velocity_m_s[inner], atol=0.1)
    # and the ENU vector is consistent with elevation/azimuth
    e, n, u = g.enu_m.T
    assert np.allclose(np.degrees(np.arcsin(u / g.range_m)), g.elevation_deg, atol=1e-9)
    assert np.allclose(np.degrees(np.arctan2(e, n)) % 360, g.azimuth_deg, atol=1e-9)


def test_find_pass_is_fast_enough_to_call_often(cfg):
    # not a timed assertion: just that a second call returns the same pass (deterministic)
    a, b = find_pass(cfg), find_pass(cfg)
    assert a.start_utc == b.start_utc and np.array_equal(a.range_m, b.range_m)


# ------------------------------------------------------------------ window rules


def test_asymmetric_window_rule(cfg):
    """Paper: QKD from ~15° rising to 10° setting; so the window opens late and closes at 10°."""
    rules = cfg.passes.model_copy(update=dict(max_range_km=None))
    g = find_passes(cfg.orbit, cfg.station, rules, satellite_name="Micius")[0]
    assert g.elevation_deg[0] == pytest.approx(15.0, abs=0.01)
    assert g.elevation_deg[-1] == pytest.approx(10.0, abs=0.01)
    assert np.all(g.elevation_deg[1:-1] > 10.0)
    i = g.culmination_index
    rise, fall = g.t_s[i], g.duration_s - g.t_s[i]
    assert fall - rise > 20.0  # from 10° to 15° takes ~30 s at this range
    sym = find_passes(cfg.orbit, cfg.station, rules.model_copy(update=dict(start_elevation_deg=10.0)))[0]
    late_s = (g.start_utc - sym.start_utc).total_seconds()
    assert 20.0 < late_s < 60.0
    end = lambda p: p.start_utc + timedelta(seconds=p.duration_s)  # noqa: E731
    assert abs((end(g) - end(sym)).total_seconds()) < 0.01
    # symmetric rule: the culmination is near the middle of the window
    j = sym.culmination_index
    assert abs(sym.t_s[j] - sym.duration_s / 2) < 3.0


def test_max_range_rule(cfg, micius):
    """Range limit keeps the contiguous part around culmination; a pass that never comes close is dropped."""
    half_day = cfg.passes.model_copy(update=dict(search_days=0.5))  # 12:00–24:00: one night pass (min 645 km)
    near = find_pass(cfg.model_copy(update=dict(passes=half_day.model_copy(update=dict(max_range_km=800.0)))))
    assert near.range_m[0] == pytest.approx(800e3, abs=1.0) and near.range_m[-1] == pytest.approx(800e3, abs=1.0)
    assert near.duration_s < micius.duration_s / 2
    culm = lambda p: p.start_utc + timedelta(seconds=float(p.t_s[p.culmination_index]))  # noqa: E731
    assert abs((culm(near) - culm(micius)).total_seconds()) < 1.5
    with pytest.raises(ValueError, match="no pass"):
        find_pass(cfg.model_copy(update=dict(passes=half_day.model_copy(update=dict(max_range_km=600.0)))))


def test_night_only_drops_daytime_passes(cfg):
    base = cfg.passes.model_copy(update=dict(max_range_km=None, search_days=2.0))
    every = find_passes(cfg.orbit, cfg.station, base.model_copy(update=dict(night_only=False)))
    night = find_passes(cfg.orbit, cfg.station, base)
    day = [p for p in every if p.sun_altitude_deg.max() >= base.max_sun_altitude_deg]
    assert day, "a sun-synchronous orbit also passes by day (descending node ~10:30 local time)"
    assert len(night) == len(every) - len(day) >= 2
    assert all(p.sun_altitude_deg.max() < base.max_sun_altitude_deg for p in night)
    starts = [p.start_utc for p in night]
    assert starts == sorted(starts) and all(p.start_utc not in starts for p in day)
    # the daytime pass of 2016-12-20 ~03:25 UTC (11:25 local) is in sunlight; the night ones are not
    assert any(p.sunlit.all() and p.sun_altitude_deg.min() > 20 for p in day)


def test_no_pass_raises(cfg):
    short = cfg.model_copy(update=dict(passes=cfg.passes.model_copy(update=dict(search_days=0.1))))
    with pytest.raises(ValueError, match="no pass .* between 2016-12-19 12:00:00 and 2016-12-19 14:24:00"):
        find_pass(short)


# ------------------------------------------------------------------ slant range formula


def test_slant_range_hand_values():
    r_g, r_s = 6371e3, 6871e3
    assert slant_range_m(r_s, r_g, 90.0) == pytest.approx(500e3)
    assert slant_range_m(r_s, r_g, 0.0) == pytest.approx(math.sqrt(r_s**2 - r_g**2))
    # 30°: L² + 2 r_g L sin e + r_g² = r_s² (law of cosines), solved by hand
    L = -r_g * 0.5 + math.sqrt(r_g**2 * 0.25 - (r_g**2 - r_s**2))
    assert slant_range_m(r_s, r_g, 30.0) == pytest.approx(L, rel=1e-12)
    e = np.linspace(0, 90, 19)
    assert np.allclose(elevation_for_range_deg(r_s, r_g, slant_range_m(r_s, r_g, e)), e, atol=1e-7)
    assert np.all(np.diff(slant_range_m(r_s, r_g, e)) < 0)
    for bad in (-1.0, 91.0):
        with pytest.raises(ValueError, match="elevation_deg"):
            slant_range_m(r_s, r_g, bad)
    with pytest.raises(ValueError, match="station_radius_m"):
        slant_range_m(r_g, r_s, 10.0)
    with pytest.raises(ValueError, match="range_m"):
        elevation_for_range_deg(r_s, r_g, 400e3)


def _circular(alt_km, inc_deg, **kw):
    return OrbitConfig(kind="circular", altitude_km=alt_km, inclination_deg=inc_deg,
                       epoch_utc=datetime(2021, 3, 1, tzinfo=UTC), **kw)


def test_circular_orbit_range_vs_formula():
    """A 500 km circular orbit seen from the equator: the spherical formula holds where the vertical is radial."""
    t0 = datetime(2021, 3, 1, tzinfo=UTC)
    eq = GroundStationConfig(name="equator", latitude_deg=0.0, longitude_deg=0.0)
    oc = _circular(500.0, 5.0)
    g = geometry(oc, eq, t0, 86400.0, 10.0)
    m = g.elevation_deg > 5.0
    assert m.sum() > 250 and g.elevation_deg.max() > 70.0
    r_g = 6378137.0  # WGS84 equatorial radius: the station's geocentric radius at latitude 0
    r_s = np.linalg.norm(satellite_from_config(oc).at(_times(g, g.t_s[m])).position.m, axis=0)
    assert np.allclose(g.range_m[m], slant_range_m(r_s, r_g, g.elevation_deg[m]), rtol=1e-9)
    # with the nominal radius R_WGS72 + 500 km instead (J2 wobble of the SGP4 radius): within 0.5 %
    nominal = slant_range_m(orbit.WGS72_RADIUS_M + 500e3, r_g, g.elevation_deg[m])
    assert np.max(np.abs(nominal / g.range_m[m] - 1)) < 5e-3
    # at 40° N the geodetic vertical is tilted ~0.19° from the radius (oblateness): the spherical
    # formula with the nominal radii is then only good to ~1 %, worst near the horizon
    mid = GroundStationConfig(name="mid", latitude_deg=40.0, longitude_deg=0.0)
    g2 = geometry(_circular(500.0, 45.0), mid, t0, 86400.0, 10.0)
    m2 = g2.elevation_deg > 5.0
    rel = np.abs(slant_range_m(orbit.WGS72_RADIUS_M + 500e3, 6378137.0, g2.elevation_deg[m2]) / g2.range_m[m2] - 1)
    assert 1e-3 < rel.max() < 1.5e-2


def test_circular_orbit_radius_epoch_and_sun_synchronous_drift():
    """Mean radius R+h; node regression dΩ/dt = −3/2 n J2 (R/a)² cos i (Vallado, Fundamentals, eq. 9-41)."""
    h_m, inc = 500e3, 97.4
    oc = _circular(h_m / 1e3, inc, raan_deg=30.0, arg_latitude_deg=90.0)
    sat = satellite_from_config(oc, name="ss")
    assert sat.name == "ss"
    assert abs((sat.epoch.utc_datetime() - oc.epoch_utc).total_seconds()) < 1e-3
    a = orbit.WGS72_RADIUS_M + h_m
    n = math.sqrt(orbit.WGS72_MU_M3_S2 / a**3)
    ts = orbit.timescale()
    t = ts.utc(2021, 3, 1, 0, 0, np.linspace(0, 2 * math.pi / n, 400, endpoint=False))
    r = np.linalg.norm(sat.at(t).position.m, axis=0)
    assert r.mean() == pytest.approx(a, abs=100.0)
    assert 3e3 < r.max() - r.min() < 30e3  # J2 short-period wobble, not a Keplerian circle
    # arg_latitude 90°: at epoch the satellite is at its northernmost point, z = a sin i
    p0 = sat.at(ts.utc(2021, 3, 1)).position.m
    assert p0[2] == pytest.approx(a * math.sin(math.radians(inc)), rel=5e-3)

    def raan_deg(days: float) -> float:
        err, r_km, v_km_s = sat.model.sgp4(sat.model.jdsatepoch + days, sat.model.jdsatepochF)
        assert err == 0
        hx, hy, _ = np.cross(r_km, v_km_s)
        return math.degrees(math.atan2(hx, -hy))

    assert raan_deg(0.0) == pytest.approx(30.0, abs=0.2)
    drift = (raan_deg(10.0) - raan_deg(0.0)) / 10.0
    j2 = 0.001082616  # WGS72
    expected = -1.5 * n * j2 * (orbit.WGS72_RADIUS_M / a) ** 2 * math.cos(math.radians(inc)) * 86400 * 180 / math.pi
    assert drift == pytest.approx(expected, rel=0.03)
    assert drift == pytest.approx(360 / 365.2422, rel=0.05)  # sun-synchronous: ~0.986°/day eastward


def test_geometry_grid_and_arguments(cfg):
    t0 = datetime(2016, 12, 19, 16, 50)  # naive: taken as UTC
    g = geometry(cfg.orbit, cfg.station, t0, 10.5, 2.0, name="Micius")
    assert np.allclose(g.t_s, [0, 2, 4, 6, 8, 10, 10.5])
    assert g.start_utc == t0.replace(tzinfo=UTC)
    g2 = geometry(cfg.orbit, cfg.station, t0, 10.0, 2.0)
    assert np.allclose(g2.t_s, [0, 2, 4, 6, 8, 10])
    assert np.allclose(g.elevation_deg[:6], g2.elevation_deg)
    with pytest.raises(ValueError, match="step_s"):
        geometry(cfg.orbit, cfg.station, t0, 10.0, 0.0)
    with pytest.raises(ValueError, match="duration_s"):
        geometry(cfg.orbit, cfg.station, t0, -1.0, 1.0)


def test_passes_agree_with_skyfield_find_events(cfg):
    """Independent event finder: skyfield's ``find_events`` rise/set at 10° over two days."""
    rules = cfg.passes.model_copy(update=dict(max_range_km=None, night_only=False, start_elevation_deg=10.0,
                                              end_elevation_deg=10.0, search_days=2.0, time_step_s=5.0))
    calls = []
    ours = find_passes(cfg.orbit, cfg.station, rules, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (rules.search_days * 86400, rules.search_days * 86400)
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    ts = orbit.timescale()
    sat = satellite_from_config(cfg.orbit)
    t0 = ts.from_datetime(rules.search_start_utc)
    t, kind = sat.find_events(orbit._Station(cfg.station).topos, t0, t0 + 2.0, altitude_degrees=10.0)
    rise = [ti.utc_datetime() for ti, k in zip(t, kind) if k == 0]
    sets = [ti.utc_datetime() for ti, k in zip(t, kind) if k == 2]
    assert len(ours) == len(rise) == len(sets) >= 4
    for p, r, s in zip(ours, rise, sets):
        assert abs((p.start_utc - r).total_seconds()) < 1.0
        assert abs((p.start_utc + timedelta(seconds=p.duration_s) - s).total_seconds()) < 1.0
        assert np.all(np.diff(p.t_s)[:-1] == 5.0)


# ------------------------------------------------------------------ satellite-in-shadow rule


def test_shadow_rule_cuts_a_pass_that_starts_sunlit(cfg):
    """Nanshan, 2017-05-10 ~18:55 UTC: a night pass (Sun < −12°) with Micius still sunlit at its start."""
    from satqkd.config import PassConfig

    st = GroundStationConfig(name="Nanshan", latitude_deg=43.475, longitude_deg=87.177, altitude_m=2030.0)
    base = dict(search_start_utc=datetime(2017, 5, 10, 18, 0, tzinfo=UTC), search_days=0.1, max_range_km=1200.0)
    (g0,) = find_passes(cfg.orbit, st, PassConfig(**base), satellite_name="Micius")
    assert g0.sunlit[0] and not g0.sunlit[-1]  # the rule off (default): the sunlit start is kept
    n_lit = int(g0.sunlit.sum())
    assert 10 <= n_lit <= 120
    (g1,) = find_passes(cfg.orbit, st, PassConfig(**base, satellite_in_shadow=True), satellite_name="Micius")
    assert not g1.sunlit.any()
    shift = (g1.start_utc - g0.start_utc).total_seconds()
    assert shift == pytest.approx(n_lit, abs=1.0)  # the window now opens at the shadow entry
    end0 = g0.start_utc + timedelta(seconds=float(g0.t_s[-1]))
    end1 = g1.start_utc + timedelta(seconds=float(g1.t_s[-1]))
    assert abs((end1 - end0).total_seconds()) < 1e-3  # the end (10° setting) is unchanged
    # the entry edge is exact: sunlit 5 ms before, eclipsed 5 ms after
    t = orbit._offset(orbit.timescale().from_datetime(g1.start_utc), np.array([-0.005, 0.005]))
    sat = satellite_from_config(cfg.orbit, "Micius")
    assert list(sat.at(t).is_sunlit(orbit.ephemeris())) == [True, False]


def test_shadow_rule_off_by_default_keeps_the_paper_pass(cfg, micius):
    assert cfg.passes.satellite_in_shadow is False
    cfg2 = cfg.model_copy(deep=True)
    cfg2.passes.satellite_in_shadow = True
    g = find_pass(cfg2)  # the 2016-12-19 pass is eclipsed throughout: unchanged
    assert g.start_utc == micius.start_utc and g.t_s.size == micius.t_s.size
