"""Many satellites over many stations: TLE files, Walker-delta constellations, vectorised pass finding.

* :func:`read_tle_file` — satellites from a file of two- or three-line element sets (checksums and
  fields validated, errors name the line and field: :class:`ConstellationError`).
* :func:`walker_delta` — a Walker-delta constellation ``i: T/P/F`` at altitude ``h`` (Walker,
  J. Brit. Interplanet. Soc. 24, 369 (1971)): ``P`` planes of ``T/P`` satellites, RAAN of plane
  ``p`` = ``p·360°/P``, argument of latitude of satellite ``s`` in plane ``p`` =
  ``s·360°·P/T + p·F·360°/T``. Ideal circular orbits through SGP4 (``orbit.satellite_from_config``).
* :func:`find_network_passes` — every QKD window of every (satellite, station) pair over the span:
  **one SGP4 propagation per satellite** over a coarse time grid (``sgp4_array``), turned Earth-fixed
  with the GMST-1982 rotation (the definition of TEME; Vallado et al., AIAA 2006-6753, App. C;
  UT1 = UTC), then all stations' elevations at once (a (stations × times) matrix product). Each
  visibility run is resampled at the rules' ``time_step_s`` and the operating rules of its station
  are applied: start/end elevation (the first/last sample at or above the threshold), maximum range (the
  contiguous part around the range minimum), night (Sun altitude below ``max_sun_altitude_deg`` at
  every sample) and optionally "satellite in Earth's shadow" (cylindrical shadow).

Accuracy (a planning tool, not the event simulator's skyfield chain): GMST-only Earth rotation and
no polar motion give ~0.01° in elevation (~1 s in window edges at the 10°/15° thresholds); the Sun
comes from the low-precision formulae of the *Astronomical Almanac* (section C, "Low precision
formulas for the Sun", ~0.01° for 1950–2050). A pass rising above the lower threshold for less than
one coarse step (10 s) may be missed, as in :func:`satqkd.sky.orbit.find_passes`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ..config import OrbitConfig
from ..records import PassGeometry

__all__ = [
    "ConstellationError",
    "Satellite",
    "StationSite",
    "StationRules",
    "read_tle_file",
    "parse_tles",
    "walker_delta",
    "find_network_passes",
    "NetworkPass",
    "sun_direction_eci",
    "sun_altitude_deg",
    "satellite_of_orbit",
    "end_utc",
]

_R_EARTH_M = 6378137.0  # WGS84 equatorial radius (cylindrical shadow, geodetic station positions)
_F_WGS84 = 1.0 / 298.257223563
_COARSE_S = 10.0
_CHUNK_POINTS = 200_000  # coarse points per chunk (bounded memory: stations × chunk floats)


class ConstellationError(ValueError):
    """Bad satellite input; the message names the file/line or the field and the allowed range."""


@dataclass(frozen=True)
class Satellite:
    """A satellite: a name and its orbit (TLE or circular :class:`~satqkd.config.OrbitConfig`).

    Plain data, so it pickles to process-pool and Dask workers; ``satrec`` (the ``sgp4.api.Satrec``,
    which does not pickle) is built on first use in each process and cached.
    """

    name: str
    orbit: OrbitConfig = field(repr=False)

    @property
    def satrec(self):
        return _satrec(self.name, self.orbit.model_dump_json())


@functools.lru_cache(maxsize=4096)
def _satrec(name: str, orbit_json: str):
    from .orbit import satellite_from_config

    return satellite_from_config(OrbitConfig.model_validate_json(orbit_json), name).model


# --------------------------------------------------------------------------------------------- TLEs
def _checksum(line: str) -> int:
    return sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line[:68]) % 10


def _check_tle(l1: str, l2: str, where: str) -> None:
    for k, ln in ((1, l1), (2, l2)):
        if len(ln) < 69:
            raise ConstellationError(f"{where}: TLE line {k} must have 69 characters, got {len(ln)}")
        if ln[0] != str(k):
            raise ConstellationError(f"{where}: TLE line {k} must start with '{k}'")
        if not ln[68].isdigit() or _checksum(ln) != int(ln[68]):
            raise ConstellationError(f"{where}: TLE line {k} checksum: column 69 is {ln[68]!r}, the line sums to {_checksum(ln)}")
    if l1[2:7] != l2[2:7]:
        raise ConstellationError(f"{where}: TLE satellite number differs between line 1 ({l1[2:7]!r}) and line 2 ({l2[2:7]!r})")
    try:
        inc, ecc, n = float(l2[8:16]), float("0." + l2[26:33].strip()), float(l2[52:63])
    except ValueError:
        raise ConstellationError(f"{where}: TLE line 2: inclination, eccentricity or mean motion is not a number") from None
    if not 0.0 <= inc <= 180.0:
        raise ConstellationError(f"{where}: TLE inclination must lie in [0, 180]°, got {inc}")
    if not 0.0 <= ecc < 1.0:
        raise ConstellationError(f"{where}: TLE eccentricity must lie in [0, 1), got {ecc}")
    if not 0.5 < n < 17.0:
        raise ConstellationError(f"{where}: TLE mean motion must lie in (0.5, 17) rev/day, got {n}")


def parse_tles(text: str, source: str = "<text>") -> list[Satellite]:
    """Satellites from TLE text: 3-line (name, 1, 2) or bare 2-line sets; blank lines and ``#`` comments skipped."""
    from sgp4.api import Satrec

    lines = [(i + 1, ln.rstrip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    sats: list[Satellite] = []
    k = 0
    while k < len(lines):
        i, ln = lines[k]
        name = None
        if not ln.startswith("1 "):
            name = ln.strip().removeprefix("0 ").strip()
            k += 1
            if k >= len(lines):
                raise ConstellationError(f"{source}:{i}: name {name!r} is not followed by a TLE line 1")
            i, ln = lines[k]
        if k + 1 >= len(lines):
            raise ConstellationError(f"{source}:{i}: TLE line 1 without a line 2")
        l1, (i2, l2) = ln, lines[k + 1]
        _check_tle(l1, l2, f"{source}:{i}")
        rec = Satrec.twoline2rv(l1, l2)
        if rec.error:
            raise ConstellationError(f"{source}:{i}: SGP4 rejects this TLE (sgp4 error {rec.error})")
        try:
            orbit = OrbitConfig(kind="tle", tle_line1=l1, tle_line2=l2)
        except ValueError as exc:
            raise ConstellationError(f"{source}:{i}: TLE rejected: {exc}") from None
        sats.append(Satellite(name or f"NORAD {l1[2:7].strip()}", orbit))
        k += 2
    if not sats:
        raise ConstellationError(f"{source}: no TLE found")
    names = [s.name for s in sats]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConstellationError(f"{source}: satellite names must be unique, repeated: {', '.join(dup)}")
    return sats


def read_tle_file(path: str | Path) -> list[Satellite]:
    """Satellites from a TLE file (see :func:`parse_tles`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConstellationError(f"satellites: cannot read {p}: {exc.strerror or exc}") from None
    return parse_tles(text, str(p))


# ------------------------------------------------------------------------------------------- Walker
def walker_delta(altitude_km: float, inclination_deg: float, total: int, planes: int, phasing: int,
                 epoch_utc: datetime, *, name: str = "walker") -> list[Satellite]:
    """A Walker-delta constellation ``inclination: total/planes/phasing`` of circular orbits (module docstring).

    Raises :class:`ConstellationError` naming the field unless 150 ≤ altitude_km ≤ 40000,
    0 ≤ inclination ≤ 180, total ≥ 1, planes ≥ 1 divides total, 0 ≤ phasing < planes.
    """
    if not (150.0 <= altitude_km <= 40_000.0):
        raise ConstellationError(f"walker altitude_km must lie in [150, 40000], got {altitude_km}")
    if not (0.0 <= inclination_deg <= 180.0):
        raise ConstellationError(f"walker inclination_deg must lie in [0, 180], got {inclination_deg}")
    if int(total) != total or total < 1 or total > 10_000:
        raise ConstellationError(f"walker T (total satellites) must be an integer in [1, 10000], got {total}")
    if int(planes) != planes or planes < 1 or total % planes:
        raise ConstellationError(f"walker P (planes) must be an integer ≥ 1 dividing T = {total}, got {planes}")
    if int(phasing) != phasing or not (0 <= phasing < planes):
        raise ConstellationError(f"walker F (phasing) must be an integer in [0, P − 1] = [0, {planes - 1}], got {phasing}")
    total, planes, phasing = int(total), int(planes), int(phasing)
    per = total // planes
    sats = []
    for p in range(planes):
        for s in range(per):
            raan = p * 360.0 / planes
            u = (s * 360.0 * planes / total + p * phasing * 360.0 / total) % 360.0
            oc = OrbitConfig(kind="circular", altitude_km=altitude_km, inclination_deg=inclination_deg,
                             raan_deg=raan, arg_latitude_deg=u, epoch_utc=epoch_utc)
            nm = f"{name}-{p + 1:02d}-{s + 1:02d}"
            sats.append(Satellite(nm, oc))
    return sats


# ------------------------------------------------------------------------------------------ the Sun
def _jd_utc(t_unix_s):
    return 2440587.5 + np.asarray(t_unix_s, dtype=float) / 86400.0


def sun_direction_eci(t_unix_s) -> np.ndarray:
    """Unit vector to the Sun (equatorial, mean equinox of date ≈ TEME to ~0.01°), shape (3, n).

    *Astronomical Almanac*, section C, low-precision formulae: mean longitude
    ``L = 280.460° + 0.9856474° d``, mean anomaly ``g = 357.528° + 0.9856003° d``, ecliptic longitude
    ``λ = L + 1.915° sin g + 0.020° sin 2g``, obliquity ``ε = 23.439° − 4·10⁻⁷° d`` (d = JD − 2451545.0).
    """
    d = _jd_utc(t_unix_s) - 2451545.0
    g = np.radians((357.528 + 0.9856003 * d) % 360.0)
    lam = np.radians((280.460 + 0.9856474 * d) % 360.0 + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g))
    eps = np.radians(23.439 - 4e-7 * d)
    return np.stack([np.cos(lam), np.cos(eps) * np.sin(lam), np.sin(eps) * np.sin(lam)])


def _gmst_rad(t_unix_s):
    jd = _jd_utc(t_unix_s)
    whole = np.floor(jd)
    from .orbit import _gmst1982_rad

    return _gmst1982_rad(whole, jd - whole)


def _eci_to_ecef(r_eci: np.ndarray, theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    x, y, z = r_eci
    return np.stack([c * x + s * y, -s * x + c * y, z])


def sun_altitude_deg(site: "StationSite", t_unix_s) -> np.ndarray:
    """Geometric altitude of the Sun's centre at ``site`` (degrees; no refraction, no parallax: < 0.01°)."""
    u = _eci_to_ecef(sun_direction_eci(t_unix_s), _gmst_rad(t_unix_s))
    return np.degrees(np.arcsin(np.clip(site.up @ u, -1.0, 1.0)))


# -------------------------------------------------------------------------------------- stations
@dataclass(frozen=True)
class StationRules:
    """Operating rules of one station (as :class:`satqkd.config.PassConfig`, plus the shadow rule)."""

    start_elevation_deg: float = 15.0
    end_elevation_deg: float = 10.0
    max_range_km: float | None = 1200.0
    night_only: bool = True
    max_sun_altitude_deg: float = -12.0
    satellite_in_shadow: bool = False
    time_step_s: float = 1.0


@dataclass(frozen=True)
class StationSite:
    """A station's geodetic position (WGS84), its ENU frame in ITRS and its rules."""

    name: str
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    rules: StationRules = StationRules()

    @property
    def itrs_m(self) -> np.ndarray:
        lat, lon = math.radians(self.latitude_deg), math.radians(self.longitude_deg)
        e2 = _F_WGS84 * (2 - _F_WGS84)
        n = _R_EARTH_M / math.sqrt(1 - e2 * math.sin(lat) ** 2)
        h = self.altitude_m
        return np.array([(n + h) * math.cos(lat) * math.cos(lon), (n + h) * math.cos(lat) * math.sin(lon),
                         (n * (1 - e2) + h) * math.sin(lat)])

    @property
    def enu_matrix(self) -> np.ndarray:
        lat, lon = math.radians(self.latitude_deg), math.radians(self.longitude_deg)
        sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
        return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])

    @property
    def up(self) -> np.ndarray:
        return self.enu_matrix[2]


# --------------------------------------------------------------------------------------- passes
@dataclass(frozen=True)
class NetworkPass:
    """One QKD window of one satellite over one station: its sampled geometry and its key facts."""

    satellite: str
    station: str
    geometry: PassGeometry = field(repr=False)

    @property
    def start_utc(self) -> datetime:
        return self.geometry.start_utc

    @property
    def duration_s(self) -> float:
        return float(self.geometry.t_s[-1] - self.geometry.t_s[0])

    @property
    def max_elevation_deg(self) -> float:
        return float(np.max(self.geometry.elevation_deg))

    @property
    def min_range_km(self) -> float:
        return float(np.min(self.geometry.range_m)) / 1e3


def _propagate(sat: Satellite, t_unix_s: np.ndarray):
    """TEME position (m) and velocity (m/s), shape (3, n); NaN where SGP4 fails (decayed)."""
    jd = _jd_utc(t_unix_s)
    whole = np.floor(jd)
    err, r_km, v_km_s = sat.satrec.sgp4_array(whole, jd - whole)
    bad = err != 0
    r = r_km.T * 1e3
    v = v_km_s.T * 1e3
    if bad.any():
        r[:, bad] = np.nan
        v[:, bad] = np.nan
    return r, v


_OMEGA_EARTH = 7.292115e-5  # rad/s (WGS84 / IERS conventional)


def _look(site: StationSite, r_ecef: np.ndarray, v_ecef: np.ndarray):
    R = site.enu_matrix
    enu = R @ (r_ecef - site.itrs_m[:, None])
    venu = R @ v_ecef
    rng = np.linalg.norm(enu, axis=0)
    el = np.degrees(np.arcsin(enu[2] / rng))
    az = np.degrees(np.arctan2(enu[0], enu[1])) % 360.0
    rr = np.sum(enu * venu, axis=0) / rng
    return enu, venu, el, az, rng, rr


def _window(site: StationSite, sat: Satellite, t_lo: float, t_hi: float):
    """Apply the station's rules to one visibility run [t_lo, t_hi] (unix s); a PassGeometry or None."""
    ru = site.rules
    step = ru.time_step_s
    t = np.arange(t_lo, t_hi + step / 2, step)
    r, v = _propagate(sat, t)
    theta = _gmst_rad(t)
    r_e = _eci_to_ecef(r, theta)
    # Earth-fixed velocity: rotate, then subtract ω × r (TEME → pseudo-Earth-fixed frame)
    v_e = _eci_to_ecef(v, theta) - np.cross(np.array([0.0, 0.0, _OMEGA_EARTH]), r_e.T).T
    enu, venu, el, az, rng, rr = _look(site, r_e, v_e)
    if not np.all(np.isfinite(el)):
        return None
    ic = int(np.argmax(el))
    if el[ic] <= max(ru.start_elevation_deg, ru.end_elevation_deg):
        return None
    up = np.flatnonzero(el[: ic + 1] < ru.start_elevation_deg)
    dn = np.flatnonzero(el[ic:] < ru.end_elevation_deg)
    if up.size == 0 or dn.size == 0:
        return None  # the run starts or ends above a threshold: not a complete window
    i0, i1 = int(up[-1]) + 1, ic + int(dn[0]) - 1
    if ru.max_range_km is not None:
        ok = rng <= ru.max_range_km * 1e3
        im = i0 + int(np.argmin(rng[i0 : i1 + 1]))
        if not ok[im]:
            return None
        lo_bad = np.flatnonzero(~ok[i0 : im + 1])
        hi_bad = np.flatnonzero(~ok[im : i1 + 1])
        if lo_bad.size:
            i0 = i0 + int(lo_bad[-1]) + 1
        if hi_bad.size:
            i1 = im + int(hi_bad[0]) - 1
    if i1 - i0 < 1:
        return None
    sl = slice(i0, i1 + 1)
    ts = t[sl]
    sun = sun_altitude_deg(site, ts)
    if ru.night_only and np.any(sun >= ru.max_sun_altitude_deg):
        return None
    s_dir = sun_direction_eci(ts)
    proj = np.sum(r[:, sl] * s_dir, axis=0)
    perp = np.linalg.norm(r[:, sl] - proj * s_dir, axis=0)
    sunlit = (proj > 0) | (perp > _R_EARTH_M)
    if ru.satellite_in_shadow and np.any(sunlit):
        return None
    start = datetime.fromtimestamp(float(ts[0]), tz=timezone.utc)
    return PassGeometry(
        satellite=sat.name, station=site.name, start_utc=start, t_s=ts - ts[0],
        elevation_deg=el[sl], azimuth_deg=az[sl], range_m=rng[sl], range_rate_m_s=rr[sl],
        sun_altitude_deg=sun, sunlit=sunlit, enu_m=np.ascontiguousarray(enu[:, sl].T),
        enu_velocity_m_s=np.ascontiguousarray(venu[:, sl].T),
    )


def find_network_passes(satellites: Sequence[Satellite], stations: Sequence[StationSite], start_utc: datetime,
                        days: float, *, coarse_step_s: float = _COARSE_S, grid_origin_utc: datetime | None = None,
                        progress=None) -> list[NetworkPass]:
    """Every QKD window of every (satellite, station) pair whose window starts in ``[start, start + days)``.

    One propagation per satellite over the coarse grid (in chunks), all stations' elevations at once,
    then each run above a station's lower threshold is resampled and that station's rules applied
    (module docstring). Sorted by start time, then satellite, then station. ``progress(done, total)``
    is called after each satellite. ``grid_origin_utc`` (default ``start_utc``) pins the coarse grid
    to ``origin + k·step``: searches of adjacent spans with one origin give exactly the windows of one
    search over their union (how the planner splits a year into jobs).
    """
    if not (days > 0 and math.isfinite(days)):
        raise ConstellationError(f"days must be a finite number > 0, got {days!r}")
    if start_utc.tzinfo is None:
        start_utc = start_utc.replace(tzinfo=timezone.utc)
    t0 = start_utc.timestamp()
    span = days * 86400.0
    origin = (grid_origin_utc or start_utc)
    origin = (origin.replace(tzinfo=timezone.utc) if origin.tzinfo is None else origin).timestamp()
    k0 = math.floor((t0 - origin) / coarse_step_s) - 1
    k1 = math.ceil((t0 + span + 3600.0 - origin) / coarse_step_s)
    grid = origin + np.arange(k0, k1 + 1) * coarse_step_s
    xyz = np.stack([s.itrs_m for s in stations])  # (S, 3)
    ups = np.stack([s.up for s in stations])  # (S, 3)
    low = np.array([min(s.rules.start_elevation_deg, s.rules.end_elevation_deg) for s in stations])
    sin_low = np.sin(np.radians(low))[:, None]
    out: list[NetworkPass] = []
    for k, sat in enumerate(satellites):
        above_all = np.zeros((len(stations), grid.size), dtype=bool)
        for c0 in range(0, grid.size, _CHUNK_POINTS):
            tc = grid[c0 : c0 + _CHUNK_POINTS]
            r, _ = _propagate(sat, tc)
            r_e = _eci_to_ecef(r, _gmst_rad(tc))  # (3, n)
            rel_up = ups @ r_e - np.sum(ups * xyz, axis=1)[:, None]  # (S, n): up-component of (sat − station)
            # |sat − station|² = |r|² − 2 r·x + |x|²
            d2 = np.sum(r_e * r_e, axis=0)[None, :] - 2.0 * (xyz @ r_e) + np.sum(xyz * xyz, axis=1)[:, None]
            with np.errstate(invalid="ignore"):
                above_all[:, c0 : c0 + tc.size] = rel_up > sin_low * np.sqrt(d2)
        for j, site in enumerate(stations):
            a = above_all[j].astype(np.int8)
            d = np.diff(a)
            rises = np.flatnonzero(d == 1)  # grid[i] below, grid[i+1] above
            sets = np.flatnonzero(d == -1)
            ends = sets[np.minimum(np.searchsorted(sets, rises, side="right"), max(sets.size - 1, 0))] if sets.size else rises
            keep = ends > rises
            if site.rules.night_only and rises.size:
                # clearly daytime at both ends of the run: skip before resampling (as orbit.find_passes)
                sun_lo = sun_altitude_deg(site, grid[rises])
                sun_hi = sun_altitude_deg(site, grid[np.minimum(ends + 1, grid.size - 1)])
                keep &= (sun_lo < site.rules.max_sun_altitude_deg) | (sun_hi < site.rules.max_sun_altitude_deg)
            for i0, i1 in zip(rises[keep], ends[keep]):
                i1 = int(i1)
                g = _window(site, sat, float(grid[i0]), float(grid[i1 + 1]))
                if g is None:
                    continue
                ts = g.start_utc.timestamp()
                if t0 <= ts < t0 + span:
                    out.append(NetworkPass(sat.name, site.name, g))
        if progress is not None:
            progress(k + 1, len(satellites))
    out.sort(key=lambda p: (p.start_utc, p.satellite, p.station))
    return out


def satellite_of_orbit(orbit: OrbitConfig, name: str) -> Satellite:
    """A :class:`Satellite` of a mission configuration's orbit (TLE or circular)."""
    return Satellite(name, orbit)


def end_utc(p: NetworkPass) -> datetime:
    return p.geometry.start_utc + timedelta(seconds=float(p.geometry.t_s[-1]))
