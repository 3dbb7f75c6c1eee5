"""Sky background by cause: moonlight (Krisciunas & Schaefer 1991) and per-station light domes.

The night-sky and city-dome terms of :func:`satqkd.sky.link.background_rate_hz` are calibrated
detector count rates. This module adds the *Moon*, scaled to the same detector through the
calibrated dark-sky rate: a sky brightness B (nanolamberts, V band) toward the satellite gives
``sky_rate_hz · B / B_dark`` counts per detector, ``B_dark`` the dark zenith sky the calibrated rate
stands for (Krisciunas & Schaefer's 79 nL ≈ 21.6 mag/arcsec²). Using the V band as the proxy of the
848.6 nm filter band is an approximation (moonlight is scattered sunlight: its spectrum is solar,
and the Rayleigh part of the scattering is ~9× weaker at 850 nm than at 550 nm, the Mie part
about equal), so the moon term is an order-of-magnitude model, off by default.

Krisciunas & Schaefer, "A model of the brightness of moonlight", PASP 103, 1033 (1991):

* Moon illuminance outside the atmosphere (their eq. 8, 20, footcandles → they work in the same
  units throughout): ``I* = 10^(−0.4 (3.84 + 0.026|α| + 4e-9 α⁴))``, α the lunar phase angle (0° = full);
* scattering function (eq. 21): ``f(ρ) = 10^5.36 (1.06 + cos² ρ) + 10^(6.15 − ρ/40)``, ρ the angle
  between the Moon and the sky position;
* air mass (eq. 3): ``X(Z) = (1 − 0.96 sin² Z)^(−1/2)``;
* moonlight (eq. 15): ``B_moon = f(ρ) I* 10^(−0.4 k X(Z_moon)) [1 − 10^(−0.4 k X(Z))]`` nL, with k
  the extinction coefficient (mag per air mass; 0.172 in V at Mauna Kea);
* nL ↔ V mag/arcsec² (their eq. 1): ``B = 34.08 exp(20.7233 − 0.92104 V)``.

A full Moon at zenith, 45° from the target, gives ≈ 2,300 nL ≈ 17.9 mag/arcsec² (V), about 29× the dark
sky (k = 0.172).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

__all__ = [
    "DARK_SKY_NL",
    "ks_airmass",
    "moon_illuminance",
    "scattering_function",
    "moonlight_nl",
    "nl_to_v_mag_arcsec2",
    "angular_separation_deg",
    "moon_look",
    "light_dome_rate_hz",
]

#: Dark zenith sky of Krisciunas & Schaefer 1991 (V = 21.587 mag/arcsec²), in nanolamberts.
DARK_SKY_NL = 79.0


def _out(x):
    return float(x) if np.ndim(x) == 0 else x


def ks_airmass(zenith_deg):
    """Air mass of Krisciunas & Schaefer 1991, eq. 3: ``X = (1 − 0.96 sin² Z)^(−1/2)`` (finite at the horizon, 5.0)."""
    z = np.radians(np.asarray(zenith_deg, dtype=float))
    return _out((1.0 - 0.96 * np.sin(z) ** 2) ** -0.5)


def moon_illuminance(phase_angle_deg):
    """Moon illuminance above the atmosphere ``I* = 10^(−0.4 (3.84 + 0.026|α| + 4e-9 α⁴))`` (KS91 eq. 20)."""
    a = np.abs(np.asarray(phase_angle_deg, dtype=float))
    return _out(10.0 ** (-0.4 * (3.84 + 0.026 * a + 4e-9 * a**4)))


def scattering_function(separation_deg):
    """``f(ρ) = 10^5.36 (1.06 + cos² ρ) + 10^(6.15 − ρ/40)`` (KS91 eq. 21: Rayleigh + Mie)."""
    r = np.asarray(separation_deg, dtype=float)
    return _out(10.0**5.36 * (1.06 + np.cos(np.radians(r)) ** 2) + 10.0 ** (6.15 - r / 40.0))


def moonlight_nl(phase_angle_deg, separation_deg, moon_zenith_deg, target_zenith_deg, extinction_mag=0.172):
    """Sky brightness from moonlight (nL, V band) at a target, KS91 eq. 15; 0 when the Moon is below the horizon."""
    zm = np.asarray(moon_zenith_deg, dtype=float)
    k = float(extinction_mag)
    b = (np.asarray(scattering_function(separation_deg)) * np.asarray(moon_illuminance(phase_angle_deg))
         * 10.0 ** (-0.4 * k * np.asarray(ks_airmass(np.minimum(zm, 90.0))))
         * (1.0 - 10.0 ** (-0.4 * k * np.asarray(ks_airmass(target_zenith_deg)))))
    return _out(np.where(zm < 90.0, b, 0.0))


def nl_to_v_mag_arcsec2(brightness_nl):
    """Surface brightness in V mag/arcsec² from nanolamberts (KS91 eq. 1 inverted)."""
    b = np.asarray(brightness_nl, dtype=float)
    return _out((20.7233 - np.log(b / 34.08)) / 0.92104)


def angular_separation_deg(el1_deg, az1_deg, el2_deg, az2_deg):
    """Great-circle angle between two (elevation, azimuth) directions (haversine form, exact near 0)."""
    e1, a1, e2, a2 = (np.radians(np.asarray(x, dtype=float)) for x in (el1_deg, az1_deg, el2_deg, az2_deg))
    h = np.sin((e2 - e1) / 2) ** 2 + np.cos(e1) * np.cos(e2) * np.sin((a2 - a1) / 2) ** 2
    return _out(np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))))


def moon_look(latitude_deg: float, longitude_deg: float, altitude_m: float, start_utc: datetime, t_s):
    """Moon elevation, azimuth (deg, geometric-apparent from skyfield with DE421) and phase angle (deg)
    seen from a station at ``start_utc + t_s`` seconds; arrays like ``t_s``."""
    from skyfield import almanac
    from skyfield.api import wgs84

    from satqkd.sky.orbit import _offset, ephemeris, timescale

    eph = ephemeris()
    t = _offset(timescale().from_datetime(start_utc), np.asarray(t_s, dtype=float))
    topos = wgs84.latlon(latitude_deg, longitude_deg, altitude_m)
    alt, az, _ = (eph["earth"] + topos).at(t).observe(eph["moon"]).apparent().altaz()
    phase = almanac.phase_angle(eph, "moon", t).degrees
    return (np.atleast_1d(np.asarray(alt.degrees, dtype=float)), np.atleast_1d(np.asarray(az.degrees, dtype=float)),
            np.atleast_1d(np.asarray(phase, dtype=float)))


def light_dome_rate_hz(elevation_deg, azimuth_deg, domes) -> np.ndarray:
    """Sum of city light domes, each ``rate_hz · exp(−(Δaz/width_deg)²) · exp(−el/scale_height_deg)``
    (the form of :func:`satqkd.sky.link.background_rate_hz`'s city term), over ``domes``: objects with
    ``azimuth_deg``, ``rate_hz``, ``width_deg``, ``scale_height_deg`` (e.g. ``LightDomeConfig``)."""
    el = np.asarray(elevation_deg, dtype=float)
    az = np.asarray(azimuth_deg, dtype=float)
    out = np.zeros(np.broadcast(el, az).shape)
    for d in domes:
        daz = (az - d.azimuth_deg + 180.0) % 360.0 - 180.0
        out = out + d.rate_hz * np.exp(-((daz / d.width_deg) ** 2)) * np.exp(-el / d.scale_height_deg)
    return out
