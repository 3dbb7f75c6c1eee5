"""Synthetic pass geometries for the link, tracking and polarization tests (no orbit propagator)."""

import math
from datetime import datetime, timezone

import numpy as np

from satqkd.records import PassGeometry

R_EARTH = 6371e3
MU = 3.986004418e14


def geometry_from_enu(t, pos, vel, start=datetime(2016, 12, 19, 16, 50, tzinfo=timezone.utc)) -> PassGeometry:
    """A PassGeometry from ENU positions (m) and velocities (m/s) of the satellite; night, in shadow."""
    r = np.linalg.norm(pos, axis=1)
    m = t.size
    return PassGeometry(
        "synthetic", "station", start, t,
        np.degrees(np.arcsin(pos[:, 2] / r)), np.degrees(np.arctan2(pos[:, 0], pos[:, 1])) % 360.0, r,
        np.sum(pos * vel, axis=1) / r, np.full(m, -30.0), np.zeros(m, bool), pos, vel,
    )


def circular_pass(max_el_deg=47.8, alt_m=500e3, max_range_m=1200e3, step_s=1.0, heading_deg=0.0, t_offset_s=0.0):
    """Satellite on a circular orbit over a spherical, non-rotating Earth, seen from a station at (0, 0, R).

    The ground track passes the station at the central angle that gives ``max_el_deg`` at
    culmination; the track heads north, then everything is turned by ``heading_deg`` about the
    vertical. Samples (every ``step_s``, shifted by ``t_offset_s``) with range ≤ ``max_range_m`` are kept;
    time is re-based to start at 0.
    """
    rs = R_EARTH + alt_m
    e = math.radians(max_el_deg)
    psi = math.acos(R_EARTH * math.cos(e) / rs) - e
    n = math.sqrt(MU / rs**3)
    c, d = np.array([math.sin(psi), 0.0, math.cos(psi)]), np.array([0.0, 1.0, 0.0])
    t = np.arange(-600.0, 600.0 + step_s / 2, step_s) + t_offset_s
    ph = n * t
    pos = rs * (np.cos(ph)[:, None] * c + np.sin(ph)[:, None] * d) - np.array([0.0, 0.0, R_EARTH])
    vel = rs * n * (-np.sin(ph)[:, None] * c + np.cos(ph)[:, None] * d)
    h = math.radians(heading_deg)
    rot = np.array([[math.cos(h), math.sin(h), 0.0], [-math.sin(h), math.cos(h), 0.0], [0.0, 0.0, 1.0]])
    pos, vel = pos @ rot.T, vel @ rot.T
    r = np.linalg.norm(pos, axis=1)
    k = (r <= max_range_m) & (pos[:, 2] > 0)
    return geometry_from_enu(t[k] - t[k][0], pos[k], vel[k])


def preset_pass_slice(cfg, sl: slice) -> PassGeometry:
    """The time steps ``sl`` of the first pass of ``cfg`` (real orbit), time restarting at 0."""
    import satqkd

    g = satqkd.find_pass(cfg)
    fields = ("t_s", "elevation_deg", "azimuth_deg", "range_m", "range_rate_m_s", "sun_altitude_deg", "sunlit",
              "enu_m", "enu_velocity_m_s")
    d = {**g.__dict__, **{k: getattr(g, k)[sl] for k in fields}}
    d["t_s"] = d["t_s"] - d["t_s"][0]
    return PassGeometry(**d)


def preset_pass_cut(cfg, seconds: int) -> PassGeometry:
    """The first pass of ``cfg`` (real orbit) cut to ``seconds`` around culmination: fast passes that
    still give ~10^5 sifted bits (used by the protocol, attack and two-process tests)."""
    import satqkd

    c = satqkd.find_pass(cfg).culmination_index
    return preset_pass_slice(cfg, slice(c - seconds // 2, c + seconds // 2 + 1))
