"""Passes of a satellite over a ground station, with the operating rules of the QKD experiment applied.

The orbit is either a two-line element set propagated with SGP4 (``sgp4`` through ``skyfield``) or
an *ideal circular orbit* for what-if studies (built with ``Satrec.sgp4init``, see
:func:`satellite_from_config`). Everything runs offline: the timescale is skyfield's built-in one
and the JPL DE421 ephemeris (for the Sun) comes from the ``skyfield-data`` wheel.

Geometry is computed in the station's local East-North-Up (ENU) frame, attached to the WGS84
ellipsoid at the station's geodetic latitude/longitude and turning with the Earth (ITRS; polar motion
neglected, as skyfield does with its built-in timescale). Elevation and azimuth are *geometric*
(no refraction, no light time: both are < 1 mrad / 3 ms effects at LEO ranges).

The QKD window rules follow the paper (Liao et al., Nature 549, 43 (2017), "From about 15°
elevation angle, the QKD transmitter sends ... A single-orbit experiment ends when the satellite
reaches 10° elevation angle in the other end"; data of the 2016-12-19 pass run 645–1200 km over
273 s; night-time only). See :func:`find_passes`.

Example::

    >>> import satqkd
    >>> from satqkd.sky.orbit import find_pass
    >>> find_pass(satqkd.load_preset("micius-2016-12-19"))          # doctest: +SKIP
    PassGeometry(Micius over Xinglong, start 2016-12-19 16:49:57 UTC, 273 s, range 645–1200 km, ...)
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from satqkd.config import GroundStationConfig, MissionConfig, OrbitConfig, PassConfig
from satqkd.records import PassGeometry

__all__ = [
    "timescale",
    "ephemeris",
    "satellite_from_config",
    "geometry",
    "find_passes",
    "find_pass",
    "select_pass",
    "parse_pass_spec",
    "passes_of",
    "pass_table",
    "range_weighted_seconds",
    "slant_range_m",
    "elevation_for_range_deg",
    "WGS72_MU_M3_S2",
    "WGS72_RADIUS_M",
]

#: WGS72 gravitational parameter and equatorial radius, the constants SGP4 is defined with
#: (Hoots & Roehrich, Spacetrack Report #3 (1980); Vallado et al., AIAA 2006-6753).
WGS72_MU_M3_S2 = 398600.8e9
WGS72_RADIUS_M = 6378135.0

_COARSE_STEP_S = 10.0  # scan step of the pass search (a pass above the lower threshold < 10 s may be missed)
_PAD_S = 2 * 3600.0  # the search grid runs this long past the search end, so late windows can set
_CHUNK_S = 6 * 3600.0  # the coarse grid is computed in chunks of this length (bounded memory, early exit)
_XTOL_S = 1e-3  # root-finding tolerance on window edges
_J1949 = datetime(1949, 12, 31, tzinfo=timezone.utc)  # SGP4 epoch origin for sgp4init


# --------------------------------------------------------------------------------------------
# offline skyfield data
# --------------------------------------------------------------------------------------------


@functools.cache
def _loader():
    from skyfield.api import Loader
    from skyfield_data import get_skyfield_data_path

    with warnings.catch_warnings():
        # skyfield-data warns that its finals2000A.all (Earth orientation) has expired; we use the
        # built-in timescale instead, so the warning does not concern us.
        warnings.filterwarnings("ignore", message=".*has expired.*", category=RuntimeWarning)
        path = get_skyfield_data_path()
    return Loader(path, expire=False, verbose=False)


@functools.cache
def timescale():
    """skyfield's built-in timescale (leap seconds and ΔT shipped with skyfield; no download)."""
    return _loader().timescale(builtin=True)


@functools.cache
def ephemeris():
    """JPL DE421 planetary ephemeris from the ``skyfield-data`` wheel, loaded once per process."""
    eph = _loader()("de421.bsp")
    atexit.register(eph.close)  # the kernel keeps its file open for the life of the process
    return eph


# --------------------------------------------------------------------------------------------
# slant range of a circular orbit
# --------------------------------------------------------------------------------------------


def slant_range_m(orbit_radius_m, station_radius_m, elevation_deg):
    """Slant range L from a station at geocentric radius r_g to a satellite at radius r_s seen at elevation e.

    ``L = sqrt(r_s² − r_g² cos² e) − r_g sin e`` (law of cosines in the triangle Earth centre –
    station – satellite, with the local vertical along the radius: a spherical Earth; design.md §3).
    Vectorised over all arguments (NumPy broadcasting).

    Raises ``ValueError`` unless 0 < r_g < r_s and 0 ≤ e ≤ 90°.
    """
    r_s = np.asarray(orbit_radius_m, dtype=float)
    r_g = np.asarray(station_radius_m, dtype=float)
    e = np.asarray(elevation_deg, dtype=float)
    if np.any(r_g <= 0) or np.any(r_s <= r_g):
        raise ValueError("need 0 < station_radius_m < orbit_radius_m")
    if np.any(e < 0) or np.any(e > 90) or np.any(~np.isfinite(e)):
        raise ValueError("elevation_deg must lie in [0, 90]")
    er = np.radians(e)
    out = np.sqrt(r_s**2 - (r_g * np.cos(er)) ** 2) - r_g * np.sin(er)
    return out if out.ndim else float(out)


def elevation_for_range_deg(orbit_radius_m, station_radius_m, range_m):
    """Inverse of :func:`slant_range_m`: the elevation at which the slant range equals ``range_m``.

    From ``r_s² = r_g² + L² + 2 r_g L sin e``: ``sin e = (r_s² − r_g² − L²) / (2 r_g L)``.
    Raises ``ValueError`` unless 0 < r_g < r_s and r_s − r_g ≤ L ≤ sqrt(r_s² − r_g²)
    (zenith to horizon).
    """
    r_s = np.asarray(orbit_radius_m, dtype=float)
    r_g = np.asarray(station_radius_m, dtype=float)
    L = np.asarray(range_m, dtype=float)
    if np.any(r_g <= 0) or np.any(r_s <= r_g):
        raise ValueError("need 0 < station_radius_m < orbit_radius_m")
    lo = r_s - r_g
    hi = np.sqrt(r_s**2 - r_g**2)
    tol = 1e-9 * r_s
    if np.any(L < lo - tol) or np.any(L > hi + tol) or np.any(~np.isfinite(L)):
        raise ValueError("range_m must lie between orbit_radius_m - station_radius_m (zenith) and "
                         "sqrt(orbit_radius_m² - station_radius_m²) (horizon)")
    s = np.clip((r_s**2 - r_g**2 - L**2) / (2.0 * r_g * L), 0.0, 1.0)
    out = np.degrees(np.arcsin(s))
    return out if out.ndim else float(out)


# --------------------------------------------------------------------------------------------
# satellites
# --------------------------------------------------------------------------------------------


def _circular_satrec(orbit: OrbitConfig):
    """SGP4 record of the ideal circular orbit, its mean motion tuned so the mean radius is R_WGS72 + h.

    Start from Kepler's third law n = sqrt(μ/a³) with a = R + h (WGS72 μ and R, the constants SGP4
    is built on). SGP4 reads its input mean motion in Kozai's convention and adds J2 short-period
    terms, so the propagated orbit's mean geocentric radius comes out a few km off R + h (by an
    amount depending on the inclination). We therefore propagate one revolution (200 points) and
    rescale n by (r̄ / a)^{3/2} until r̄ matches a to 1 m (Kepler again; 2–4 rounds).
    """
    from sgp4.api import WGS72, Satrec

    a_m = WGS72_RADIUS_M + orbit.altitude_km * 1e3
    inc = math.radians(orbit.inclination_deg)
    epoch_days = (orbit.epoch_utc - _J1949).total_seconds() / 86400.0
    no = math.sqrt(WGS72_MU_M3_S2 / a_m**3) * 60.0  # rad/min
    for _ in range(8):
        rec = Satrec()
        rec.sgp4init(
            WGS72, "i", 99999, epoch_days,
            0.0, 0.0, 0.0,  # bstar, ndot, nddot: no drag
            0.0,  # eccentricity
            0.0,  # argument of perigee
            inc,
            math.radians(orbit.arg_latitude_deg),  # mean anomaly = argument of latitude when e = 0
            no,
            math.radians(orbit.raan_deg),
        )
        if rec.error:
            raise ValueError(f"SGP4 could not initialise the circular orbit (sgp4 error {rec.error})")
        minutes = np.linspace(0.0, 2.0 * math.pi / no, 200, endpoint=False)
        fr = rec.jdsatepochF + minutes / 1440.0
        err, r_km, _ = rec.sgp4_array(np.full_like(fr, rec.jdsatepoch), fr)
        if np.any(err):
            raise ValueError(f"SGP4 could not propagate the circular orbit (sgp4 error {int(err.max())})")
        r_mean_m = float(np.mean(np.linalg.norm(r_km, axis=1))) * 1e3
        if abs(r_mean_m - a_m) < 1.0:
            break
        no *= (r_mean_m / a_m) ** 1.5
    return rec


def satellite_from_config(orbit: OrbitConfig, name: str = "sat"):
    """A skyfield ``EarthSatellite`` for the configured orbit.

    * ``kind = "tle"``: the two-line element set, propagated by SGP4.
    * ``kind = "circular"``: an SGP4 element set with eccentricity 0, inclination
      ``inclination_deg``, right ascension of the ascending node ``raan_deg`` (TEME of epoch),
      argument of perigee 0 and mean anomaly ``arg_latitude_deg`` (so the argument of latitude) at
      ``epoch_utc``, zero drag, and a mean motion from Kepler's third law with the WGS72 constants
      for a radius R_WGS72 + ``altitude_km``, then tuned so that the propagated mean geocentric
      radius is R_WGS72 + ``altitude_km`` (see :func:`_circular_satrec`). SGP4 with e = 0
      approximates a circular orbit: it keeps the J2 secular drifts (node regression, so a
      sun-synchronous inclination really stays sun-synchronous) and the J2 short-period terms (the
      geocentric radius wobbles by ±5–8 km at LEO); "altitude" is the mean radius minus the WGS72
      *equatorial* radius, so the height above the ellipsoid is ~21 km larger over the poles.
      Orbits with periods above 225 min switch SGP4 to
      its deep-space (SDP4) branch with lunisolar terms.
    """
    from skyfield.api import EarthSatellite

    ts = timescale()
    if orbit.kind == "tle":
        from satqkd.sky.tle import check_tle

        check_tle(orbit.tle_line1, orbit.tle_line2)  # TLEError naming line and column (also checked by the config)
        return EarthSatellite(orbit.tle_line1.strip(), orbit.tle_line2.strip(), name, ts)
    rec = _circular_satrec(orbit)
    sat = EarthSatellite.from_satrec(rec, ts)
    sat.name = name
    return sat


# --------------------------------------------------------------------------------------------
# topocentric geometry
# --------------------------------------------------------------------------------------------


class _Station:
    """A ground station as the ITRS position of its origin and the ITRS→ENU rotation matrix."""

    def __init__(self, station: GroundStationConfig):
        from skyfield.api import wgs84

        self.name = station.name
        self.topos = wgs84.latlon(station.latitude_deg, station.longitude_deg, station.altitude_m)
        self.itrs_m = np.asarray(self.topos.itrs_xyz.m, dtype=float)
        lat, lon = math.radians(station.latitude_deg), math.radians(station.longitude_deg)
        sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
        # rows: East, North, Up unit vectors in ITRS (geodetic normal as Up)
        self.R = np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])


def _enu(sat, st: _Station, t):
    """Satellite position (m) and velocity (m/s, in the Earth-fixed frame) in the station's ENU, shape (3, n)."""
    from skyfield.framelib import itrs

    r, v = sat.at(t).frame_xyz_and_velocity(itrs)
    r_m = np.asarray(r.m, dtype=float)
    v_m_s = np.asarray(v.m_per_s, dtype=float)
    if r_m.ndim == 1:
        r_m, v_m_s = r_m[:, None], v_m_s[:, None]
    rel = r_m - st.itrs_m[:, None]
    return st.R @ rel, st.R @ v_m_s


def _look(enu: np.ndarray, venu: np.ndarray):
    """Elevation (deg), azimuth (deg, from North through East), range (m), range rate (m/s) from ENU arrays."""
    e, n, u = enu
    rng = np.sqrt(e * e + n * n + u * u)
    el = np.degrees(np.arcsin(u / rng))
    az = np.degrees(np.arctan2(e, n)) % 360.0
    rr = np.sum(enu * venu, axis=0) / rng
    return el, az, rng, rr


def _offset(t0, seconds):
    """skyfield Time ``seconds`` (SI, scalar or array) after ``t0``."""
    s = np.asarray(seconds, dtype=float)
    return timescale().tt_jd(t0.whole, t0.tt_fraction + s / 86400.0)


def _sample_offsets(duration_s: float, step_s: float) -> np.ndarray:
    """0, step, 2·step, … below ``duration_s``, then ``duration_s`` itself (so the last gap is ≤ step)."""
    n = int(math.floor(duration_s / step_s + 1e-9))
    t = np.arange(n + 1, dtype=float) * step_s
    if duration_s - t[-1] > 1e-6:
        t = np.append(t, duration_s)
    else:
        t[-1] = duration_s
    return t


def _sample(sat, st: _Station, t0, offsets_s: np.ndarray, satellite_name: str) -> PassGeometry:
    t = _offset(t0, offsets_s)
    enu, venu = _enu(sat, st, t)
    el, az, rng, rr = _look(enu, venu)
    eph = ephemeris()
    sun_alt = (eph["earth"] + st.topos).at(t).observe(eph["sun"]).apparent().altaz()[0].degrees
    sunlit = sat.at(t).is_sunlit(eph)
    start = t0.utc_datetime()
    return PassGeometry(
        satellite=satellite_name,
        station=st.name,
        start_utc=start,
        t_s=np.asarray(offsets_s, dtype=float),
        elevation_deg=el,
        azimuth_deg=az,
        range_m=rng,
        range_rate_m_s=rr,
        sun_altitude_deg=np.atleast_1d(np.asarray(sun_alt, dtype=float)),
        sunlit=np.atleast_1d(np.asarray(sunlit, dtype=bool)),
        enu_m=np.ascontiguousarray(enu.T),
        enu_velocity_m_s=np.ascontiguousarray(venu.T),
    )


def _as_satellite(orbit, name: str):
    return satellite_from_config(orbit, name) if isinstance(orbit, OrbitConfig) else orbit


def geometry(
    orbit: OrbitConfig,
    station: GroundStationConfig,
    start_utc: datetime,
    duration_s: float,
    step_s: float,
    name: str = "sat",
) -> PassGeometry:
    """The satellite seen from ``station`` from ``start_utc`` for ``duration_s``, sampled every ``step_s``.

    Samples are at 0, step, 2·step, … (plus ``duration_s`` itself when it is not a multiple of the
    step), computed in one vectorised skyfield call. No visibility rule is applied: the
    elevation may be negative. ``orbit`` may also be a skyfield ``EarthSatellite``. A naive
    ``start_utc`` is taken as UTC. Raises ``ValueError`` for ``duration_s < 0`` or ``step_s <= 0``.
    """
    if not (duration_s >= 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    if not (step_s > 0 and math.isfinite(step_s)):
        raise ValueError(f"step_s must be a finite number > 0, got {step_s!r}")
    if start_utc.tzinfo is None:
        start_utc = start_utc.replace(tzinfo=timezone.utc)
    sat = _as_satellite(orbit, name)
    st = _Station(station)
    t0 = timescale().from_datetime(start_utc)
    return _sample(sat, st, t0, _sample_offsets(float(duration_s), float(step_s)), name)


# --------------------------------------------------------------------------------------------
# pass search
# --------------------------------------------------------------------------------------------


def _gmst1982_rad(jd_ut1, fraction_ut1):
    """Greenwich mean sidereal angle of the IAU 1982 model (Vallado et al., AIAA 2006-6753, Appendix C)."""
    t = (jd_ut1 - 2451545.0 + fraction_ut1) / 36525.0
    g = 67310.54841 + (8640184.812866 + (0.093104 + (-6.2e-6) * t) * t) * t
    return ((jd_ut1 % 1.0) + fraction_ut1 + (g / 86400.0) % 1.0) % 1.0 * (2.0 * math.pi)


class _Evaluator:
    """Scalar look angles at seconds after a reference time, for the root finders."""

    def __init__(self, sat, st: _Station, t_ref, start_utc: datetime):
        self.sat, self.st, self.t_ref = sat, st, t_ref
        jd = 2440587.5 + start_utc.timestamp() / 86400.0  # UTC Julian date (POSIX time has no leap seconds)
        self.jd_whole_utc = math.floor(jd)
        self.jd_frac_utc = jd - self.jd_whole_utc

    def look(self, s: float):
        enu, venu = _enu(self.sat, self.st, _offset(self.t_ref, s))
        el, _, rng, rr = _look(enu, venu)
        return float(el[0]), float(rng[0]), float(rr[0])

    def elevation(self, s: float) -> float:
        return self.look(s)[0]

    def range_m(self, s: float) -> float:
        return self.look(s)[1]

    def grid_elevation(self, s: np.ndarray) -> np.ndarray:
        """Approximate elevation (deg) on the coarse scan grid, fast.

        SGP4's TEME output is turned Earth-fixed by the GMST-1982 rotation alone (the definition of
        TEME; Vallado et al., AIAA 2006-6753, Appendix C), taking UT1 = UTC and ignoring leap seconds
        inside the search span: errors of ~0.01°, harmless since this only brackets the events that
        :func:`_window` then refines with skyfield's full TEME → GCRS → ITRS chain (IAU 2000A
        nutation, ~50× slower per point).
        """
        fr = self.jd_frac_utc + np.asarray(s, dtype=float) / 86400.0
        jd = np.full_like(fr, self.jd_whole_utc)
        err, r_km, _ = self.sat.model.sgp4_array(jd, fr)
        r_km = np.where(err[:, None] == 0, r_km, np.nan)  # decayed/invalid → NaN → "not above"
        theta = _gmst1982_rad(jd, fr)
        c, sn = np.cos(theta), np.sin(theta)
        x, y, z = r_km.T * 1e3
        itrs_m = np.stack([c * x + sn * y, -sn * x + c * y, z])
        enu = self.st.R @ (itrs_m - self.st.itrs_m[:, None])
        with np.errstate(invalid="ignore"):
            return np.degrees(np.arcsin(enu[2] / np.linalg.norm(enu, axis=0)))

    def sun_altitude(self, s: float) -> float:
        eph = ephemeris()
        t = _offset(self.t_ref, s)
        return float((eph["earth"] + self.st.topos).at(t).observe(eph["sun"]).apparent().altaz()[0].degrees)


def _crossing(f: Callable[[float], float], a: float, b: float, level: float, rising: bool,
              lo: float, hi: float, step: float) -> float | None:
    """Time in [lo, hi] where the monotonic f crosses ``level``, starting from the bracket [a, b].

    The bracket comes from the approximate coarse scan, so it is widened by ``step`` on the side
    that fails (at most 3 times) before Brent's method refines the root to 1 ms.
    """
    sign = 1.0 if rising else -1.0
    g = lambda x: sign * (f(x) - level)  # noqa: E731  increasing through 0
    ga, gb = g(a), g(b)
    for _ in range(3):
        if ga <= 0.0 <= gb:
            break
        if ga > 0.0:
            a = max(lo, a - step)
            ga = g(a)
        if gb < 0.0:
            b = min(hi, b + step)
            gb = g(b)
    else:
        if not ga <= 0.0 <= gb:
            return None
    if ga == 0.0:
        return a
    if gb == 0.0:
        return b
    return brentq(g, a, b, xtol=_XTOL_S)


def _window(ev: _Evaluator, s: np.ndarray, el: np.ndarray, i0: int, i1: int, rules: PassConfig):
    """QKD window (start, end) in seconds for one visibility run el[i0..i1] > lower threshold, or None."""
    up, down = rules.start_elevation_deg, rules.end_elevation_deg
    step = s[1] - s[0]
    ic = i0 + int(np.argmax(el[i0 : i1 + 1]))
    lo, hi = s[max(ic - 1, i0 - 1)], s[min(ic + 1, i1 + 1)]
    res = minimize_scalar(lambda x: -ev.elevation(x), bounds=(lo, hi), method="bounded",
                          options={"xatol": _XTOL_S})
    tc, elc = float(res.x), -float(res.fun)
    if elc <= up or elc <= down:
        return None
    # rising side: grid samples before the culmination, then the culmination itself
    rs = np.append(s[i0 - 1 : ic + 1][s[i0 - 1 : ic + 1] < tc], tc)
    re = np.append(el[i0 - 1 : ic + 1][s[i0 - 1 : ic + 1] < tc], elc)
    k = int(np.argmax(re >= up))  # first sample at/above the start threshold (re[-1] = elc > up)
    if k == 0:  # the grid starts above the start threshold: cannot happen since el[i0-1] <= min(up, down)
        return None
    ws = _crossing(ev.elevation, float(rs[k - 1]), float(rs[k]), up, True, float(s[i0 - 1]) - 3 * step, tc, step)
    if ws is None:
        return None
    # setting side
    fs = np.insert(s[ic : i1 + 2][s[ic : i1 + 2] > tc], 0, tc)
    fe = np.insert(el[ic : i1 + 2][s[ic : i1 + 2] > tc], 0, elc)
    k = int(np.argmax(fe < down))
    if k == 0:
        return None
    we = _crossing(ev.elevation, float(fs[k - 1]), float(fs[k]), down, False, tc, float(s[i1 + 1]) + 3 * step, step)
    if we is None:
        return None
    if rules.max_range_km is not None:
        rmax = rules.max_range_km * 1e3
        half = 3.0 * step
        res = minimize_scalar(ev.range_m, bounds=(max(ws, tc - half), min(we, tc + half)), method="bounded",
                              options={"xatol": _XTOL_S})
        tm, rm = float(res.x), float(res.fun)
        if rm > rmax:
            return None
        if ev.range_m(ws) > rmax:
            ws = brentq(lambda x: ev.range_m(x) - rmax, ws, tm, xtol=_XTOL_S)
        if ev.range_m(we) > rmax:
            we = brentq(lambda x: ev.range_m(x) - rmax, tm, we, xtol=_XTOL_S)
    if we <= ws:
        return None
    return ws, we


def _sunlit_at(sat, t_ref, s: float) -> bool:
    return bool(sat.at(_offset(t_ref, s)).is_sunlit(ephemeris()))


def _shadow_edge(sat, t_ref, a: float, b: float) -> float:
    """Bisect the shadow edge between a and b (seconds after ``t_ref``, sunlit differs at the ends) to ~1 ms."""
    fa = _sunlit_at(sat, t_ref, a)
    while b - a > _XTOL_S:
        m = 0.5 * (a + b)
        if _sunlit_at(sat, t_ref, m) == fa:
            a = m
        else:
            b = m
    return a if not fa else b  # the eclipsed side of the edge


def _eclipsed_part(sat, t_ref, ws: float, g: PassGeometry) -> tuple[float, float] | None:
    """(start, end) in seconds after ``t_ref`` of the longest run of samples of ``g`` with the satellite in
    Earth's shadow, its edges refined by bisection to ~1 ms; None if the satellite is sunlit throughout."""
    dark = ~np.asarray(g.sunlit, dtype=bool)
    if not dark.any():
        return None
    d = np.diff(np.concatenate([[0], dark.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    k = int(np.argmax(ends - starts))
    i, j = int(starts[k]), int(ends[k])
    t = ws + np.asarray(g.t_s, dtype=float)
    a = t[i] if i == 0 else _shadow_edge(sat, t_ref, float(t[i - 1]), float(t[i]))
    b = t[j] if j == t.size - 1 else _shadow_edge(sat, t_ref, float(t[j]), float(t[j + 1]))
    if b <= a:
        return None
    return float(a), float(b)


def _iter_passes(sat, st: _Station, rules: PassConfig, satellite_name: str,
                 progress: Callable[[float, float], None] | None = None) -> Iterator[PassGeometry]:
    """Yield the QKD windows in time order, computing the coarse elevation grid lazily chunk by chunk."""
    t_ref = timescale().from_datetime(rules.search_start_utc)
    ev = _Evaluator(sat, st, t_ref, rules.search_start_utc)
    span = rules.search_days * 86400.0
    low = min(rules.start_elevation_deg, rules.end_elevation_deg)
    s = np.arange(-_COARSE_STEP_S, span + _PAD_S + _COARSE_STEP_S / 2, _COARSE_STEP_S)
    el = np.empty_like(s)
    chunk_n = int(_CHUNK_S / _COARSE_STEP_S)
    done = 0  # el[:done] computed
    pos = 1  # look for rises at indices >= pos
    while done < s.size:
        new = min(done + chunk_n, s.size)
        el[done:new] = ev.grid_elevation(s[done:new])
        done = new
        above = el[:done] > low
        edges = np.diff(above[pos - 1 :].astype(np.int8))
        rises = np.flatnonzero(edges == 1) + pos
        sets = np.flatnonzero(edges == -1) + pos - 1
        finished = False
        for i0 in rises:
            if s[i0 - 1] >= span:  # every later window would start after the search span
                finished = True
                break
            later = sets[sets >= i0]
            if later.size == 0:
                break  # the run is still above at the end of what is computed
            i1 = int(later[0])
            pos = i1 + 1
            w = _window(ev, s, el, int(i0), i1, rules)
            if w is None:
                continue
            ws, we = w
            if not (0.0 <= ws < span):
                continue
            if rules.night_only and (ev.sun_altitude(ws) >= rules.max_sun_altitude_deg
                                     and ev.sun_altitude(we) >= rules.max_sun_altitude_deg):
                continue  # clearly daytime: skip the sampling
            g = _sample(sat, st, _offset(t_ref, ws), _sample_offsets(we - ws, rules.time_step_s), satellite_name)
            if rules.night_only and np.any(g.sun_altitude_deg >= rules.max_sun_altitude_deg):
                continue
            if rules.satellite_in_shadow and np.any(g.sunlit):
                cut = _eclipsed_part(sat, t_ref, ws, g)
                if cut is None:
                    continue
                ws, we = cut
                g = _sample(sat, st, _offset(t_ref, ws), _sample_offsets(we - ws, rules.time_step_s), satellite_name)
            yield g
        if progress is not None:
            progress(min(max(s[done - 1], 0.0), span), span)
        if finished:
            break


def find_passes(
    orbit: OrbitConfig,
    station: GroundStationConfig,
    rules: PassConfig,
    *,
    satellite_name: str = "sat",
    progress: Callable[[float, float], None] | None = None,
) -> list[PassGeometry]:
    """All QKD windows of passes whose window starts within the search span, sorted by start time.

    The search scans ``[search_start_utc, + search_days]`` every 10 s for runs above the lower of
    the two elevation thresholds (a pass that stays above it for less than ~10 s may be missed).
    For each pass (Liao et al. 2017, Methods: "From about 15° elevation angle ... ends when the
    satellite reaches 10° elevation angle in the other end"):

    1. the window opens when the *rising* satellite crosses ``start_elevation_deg`` and closes when
       the *setting* one crosses ``end_elevation_deg`` (culmination and crossings found by root
       finding to ~1 ms);
    2. if ``max_range_km`` is set, only the contiguous part around the range minimum with
       range ≤ ``max_range_km`` is kept (the paper's data run 645–1200 km); a pass that never comes
       that close is dropped;
    3. if ``night_only``, the pass is dropped unless the Sun's altitude at the station stays below
       ``max_sun_altitude_deg`` at every sample of the window.
    4. if ``satellite_in_shadow`` (off by default: the paper states no such rule), the window is
       cut to the longest run of samples with the satellite in Earth's shadow (skyfield's
       ``is_sunlit`` with DE421: whether the line to the Sun's centre passes through the spherical
       Earth), its edges refined by bisection to
       ~1 ms, and resampled from the new start; a pass with the satellite sunlit throughout is
       dropped. A sunlit satellite scatters sunlight into the ground telescope and heats the
       payload; in spring and summer the satellite is still sunlit at the start of many night
       passes (e.g. Nanshan, 2017-05-10 18:55 UTC: the first ~43 s).

    Each window is sampled every ``time_step_s`` from its start, with a final sample exactly at its
    end (the last gap may be shorter). Not reported: windows opening before the search start or
    passes already above the lower threshold at the search start (their rise is unknown), and
    passes still above it 2 h after the search end. The scan itself uses a fast approximate
    Earth rotation (GMST only, ~0.01°); every reported edge is refined with skyfield's full model.
    ``orbit`` may also be a skyfield ``EarthSatellite``; ``progress(done_s, total_s)`` is called
    after each 6 h chunk of the scan.
    """
    sat = _as_satellite(orbit, satellite_name)
    return list(_iter_passes(sat, _Station(station), rules, satellite_name, progress))


def find_pass(cfg: MissionConfig, station: GroundStationConfig | None = None) -> PassGeometry:
    """The first QKD pass of ``cfg.satellite`` over ``station`` (default ``cfg.station``) under ``cfg.passes``.

    Stops scanning at the first pass found. Raises ``ValueError`` if the search span holds none.
    """
    st = station if station is not None else cfg.station
    sat = satellite_from_config(cfg.orbit, cfg.satellite)
    rules = cfg.passes
    for g in _iter_passes(sat, _Station(st), rules, cfg.satellite):
        return g
    end = rules.search_start_utc + timedelta(days=rules.search_days)
    raise ValueError(
        f"no pass of {cfg.satellite} over {st.name} meeting the rules (start {rules.start_elevation_deg}°, "
        f"end {rules.end_elevation_deg}°, max range {rules.max_range_km} km, night only {rules.night_only}) "
        f"between {rules.search_start_utc:%Y-%m-%d %H:%M:%S} and {end:%Y-%m-%d %H:%M:%S} UTC"
    )


# -- choosing a pass ---------------------------------------------------------------------------------

#: a range that scales the geometric score (any fixed length would do; 1000 km is in the paper's 645–1200 km)
_SCORE_RANGE_M = 1.0e6


def range_weighted_seconds(g: PassGeometry) -> float:
    """``∫ (1000 km / R(t))² dt`` over the QKD window, in seconds: a pass's geometric merit before any simulation.

    With a diffraction-limited downlink the collected fraction falls as ``1/R²`` (the paper's Fig. 4
    link efficiency follows it over 645–1200 km), so this integral is proportional to the photons
    collected over the window at fixed atmosphere; it ranks passes for ``--pass best`` (extinction at
    low elevation, which also favours short ranges, is left out)."""
    t = np.asarray(g.t_s, dtype=float)
    if t.size < 2:
        return 0.0
    w = (_SCORE_RANGE_M / np.asarray(g.range_m, dtype=float)) ** 2
    return float(np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(t)))


class PassSpec:
    """A parsed ``--pass`` choice: ``N`` (the N-th pass, from 1), a UTC date or time (the first pass
    starting in the 24 h from it), ``highest`` (highest culmination) or ``best`` (largest
    :func:`range_weighted_seconds`), the last two optionally over ``N`` days: ``best:7d``, ``highest:2.5d``."""

    def __init__(self, kind: str, index: int | None = None, start_utc: datetime | None = None,
                 days: float | None = None, text: str = ""):
        self.kind, self.index, self.start_utc, self.days, self.text = kind, index, start_utc, days, text

    def __repr__(self) -> str:
        return f"PassSpec({self.text!r})"


def parse_pass_spec(spec: str | int) -> PassSpec:
    """Parse a pass choice (see :class:`PassSpec`); raises :class:`~satqkd.config.ConfigError` naming ``pass``."""
    from satqkd.config import ConfigError

    def bad(why: str) -> ConfigError:
        return ConfigError(f"pass: {why}; got {spec!r} (allowed: N ≥ 1, a UTC date YYYY-MM-DD[THH:MM], "
                           "'highest', 'best', 'highest:Nd', 'best:Nd')")

    if isinstance(spec, bool):
        raise bad("not a pass choice")
    if isinstance(spec, (int, np.integer)):
        if spec < 1:
            raise bad("a pass number counts from 1")
        return PassSpec("index", index=int(spec), text=str(spec))
    text = str(spec).strip()
    low = text.lower()
    if low.isdigit():
        return parse_pass_spec(int(low))
    head, _, tail = low.partition(":")
    if head in ("highest", "best"):
        days = None
        if tail:
            num = tail[:-1] if tail.endswith("d") else tail
            try:
                days = float(num)
            except ValueError:
                raise bad(f"'{head}:' takes a number of days such as {head}:7d") from None
            if not (0 < days <= 366) or not math.isfinite(days):
                raise bad("the number of days must lie in (0, 366]")
        return PassSpec(head, days=days, text=text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad("not a pass number, date or rule") from None
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    return PassSpec("date", start_utc=when, text=text)


def _rules_for(cfg: MissionConfig, spec: PassSpec | None, days: float | None) -> PassConfig:
    update: dict = {}
    if spec is not None and spec.kind == "date":
        update = {"search_start_utc": spec.start_utc, "search_days": 1.0}
    elif spec is not None and spec.days is not None:
        update = {"search_days": spec.days}
    if days is not None:
        update["search_days"] = days
    return cfg.passes.model_copy(update=update) if update else cfg.passes


def pass_table(passes: list[PassGeometry]):
    """One row per pass (a :class:`pandas.DataFrame`, units in the column names), numbered from 1 as ``--pass N``."""
    import pandas as pd

    rows = [
        {
            "pass": i,
            "start_utc": pd.Timestamp(g.start_utc),
            "end_utc": pd.Timestamp(g.start_utc + timedelta(seconds=g.duration_s)),
            "duration_s": g.duration_s,
            "max_elevation_deg": float(np.max(g.elevation_deg)),
            "min_range_km": float(np.min(g.range_m)) / 1e3,
            "max_range_km": float(np.max(g.range_m)) / 1e3,
            "range_weighted_s": range_weighted_seconds(g),
        }
        for i, g in enumerate(passes, start=1)
    ]
    cols = ["pass", "start_utc", "end_utc", "duration_s", "max_elevation_deg", "min_range_km", "max_range_km", "range_weighted_s"]
    return pd.DataFrame(rows, columns=cols).set_index("pass")


def passes_of(cfg: MissionConfig, days: float | None = None, *, station: GroundStationConfig | None = None,
              progress: Callable[[float, float], None] | None = None) -> list[PassGeometry]:
    """Every QKD window of ``cfg`` in its search span (``days`` overrides ``passes.search_days``)."""
    st = station if station is not None else cfg.station
    sat = satellite_from_config(cfg.orbit, cfg.satellite)
    return list(_iter_passes(sat, _Station(st), _rules_for(cfg, None, days), cfg.satellite, progress))


def select_pass(cfg: MissionConfig, spec: str | int | PassSpec | None = None, *,
                station: GroundStationConfig | None = None) -> PassGeometry:
    """The pass a choice names (:class:`PassSpec`; ``None``: the first pass, as :func:`find_pass`).

    ``N`` and ``highest``/``best`` count within the config's search span (``best:7d``: 7 days from
    ``passes.search_start_utc``); a date searches the 24 h from it. Raises ``ValueError`` (no such
    pass) or :class:`~satqkd.config.ConfigError` (a choice that cannot be read)."""
    g = _select_pass(cfg, spec, station)
    logging.getLogger(__name__).info("pass %s: %s UTC, %.0f s, up to %.1f° elevation", spec if spec is not None else "first",
                                     f"{g.start_utc:%Y-%m-%d %H:%M:%S}", g.duration_s, float(np.max(g.elevation_deg)))
    return g


def _select_pass(cfg: MissionConfig, spec, station) -> PassGeometry:
    if spec is None:
        return find_pass(cfg, station)
    if not isinstance(spec, PassSpec):
        spec = parse_pass_spec(spec)
    st = station if station is not None else cfg.station
    rules = _rules_for(cfg, spec, None)
    sat = satellite_from_config(cfg.orbit, cfg.satellite)
    it = _iter_passes(sat, _Station(st), rules, cfg.satellite)
    span = f"between {rules.search_start_utc:%Y-%m-%d %H:%M} UTC and +{rules.search_days:g} day(s)"
    if spec.kind == "date":
        for g in it:
            return g
        raise ValueError(f"no pass of {cfg.satellite} over {st.name} meeting the rules {span} (--pass {spec.text})")
    if spec.kind == "index":
        count = 0
        for g in it:
            count += 1
            if count == spec.index:
                return g
        raise ValueError(f"--pass {spec.index}: only {count} pass(es) of {cfg.satellite} over "
                         f"{st.name} {span} (see `satqkd passes`; more days: passes.search_days)")
    found = list(it)
    if not found:
        raise ValueError(f"no pass of {cfg.satellite} over {st.name} meeting the rules {span} (--pass {spec.text})")
    key = (lambda g: float(np.max(g.elevation_deg))) if spec.kind == "highest" else range_weighted_seconds
    return max(found, key=key)
