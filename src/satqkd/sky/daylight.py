"""Scattered sunlight in the receiver's field of view: the day-time sky and twilight, by wavelength.

The night-sky term of :func:`satqkd.sky.link.background_rate_hz` is a calibrated count rate. With
``BackgroundConfig.sunlight = true`` this module adds the sunlight the clear atmosphere scatters into
the telescope's field of view, from the Sun's position, the wavelength, the site and the receiver:

1. **Sun**: a black body of the nominal solar effective temperature 5772 K (IAU 2015 Resolution B3)
   seen under the solar solid angle at 1 au, :func:`solar_spectral_irradiance_w_m2_m`. It is within
   ≈ 10 % of the measured extraterrestrial spectrum (ASTM E-490: ≈ 0.96 W m⁻² nm⁻¹ at 850 nm,
   ≈ 0.25 W m⁻² nm⁻¹ at 1550 nm) in the near infrared; the Fraunhofer lines are not represented.
2. **Sky radiance**, :func:`sky_spectral_radiance_w_m2_sr_m`: single scattering of a plane-parallel,
   vertically mixed layer seen from its bottom (Chandrasekhar, *Radiative Transfer* (1950) §1;
   Liou, *An Introduction to Atmospheric Radiation*, 2nd ed. (2002), §6.2, the single-scattering
   solution for the diffuse downward radiance)::

       L = F0 · ϖP(Θ)/(4π) · μ0/(μ0 − μ) · [exp(−τ/μ0) − exp(−τ/μ)]

   with τ = τ_R + τ_a the zenith optical depth of :mod:`satqkd.sky.atmosphere` (Bodhaine Rayleigh,
   Kim/Kruse aerosol from the visibility), ``ϖP = (τ_R P_R + ϖ_a τ_a P_HG)/τ`` (Rayleigh phase
   function ``3/4 (1 + cos²Θ)``; Henyey & Greenstein, ApJ 93, 70 (1941), asymmetry g, aerosol
   single-scattering albedo ϖ_a), Θ the angle between the line of sight and the Sun, and 1/μ, 1/μ0
   replaced by the Kasten–Young air masses of the line of sight and of the Sun (finite at the horizon).
   Single scattering is a good approximation when τ ≪ 1: τ ≈ 0.05 at 1550 nm and 0.13 at 850 nm for
   23 km visibility; multiple scattering and the ground albedo (not modelled) add of order τ to it.
3. **Twilight** (Sun below the horizon), :func:`twilight_factor`: the line of sight is lit only above
   the Earth's shadow, at height ``h_s = R⊕ (1/cos d − 1)`` for a Sun depression d (primary twilight,
   Rozenberg, *Twilight* (Plenum, 1966), ch. 1); the scattering column above h_s is a fraction
   ``exp(−h_s / H)`` of the whole with the molecular scale height H = 8.0 km (US Standard Atmosphere
   1976 near the ground). The radiance is that of a Sun on the horizon times this fraction. It falls
   4.8 mag by the end of civil twilight (d = 6°). Beyond d ≈ 8° real twilight is dominated by multiple
   scattering and the airglow, and decays more slowly than this primary term; by then it is below
   the night-sky rate the preset already carries, which stays in the total.
4. **Counts**, :func:`sunlight_rate_hz`: ``L · Δλ · A · Ω · η_optics · η_det / (h c / λ)`` for a
   receiver of aperture area A = πD²/4, a circular field of view of full angle Θ_fov
   (Ω = π Θ_fov²/4), a rectangular filter of width Δλ; unpolarised sky light is shared equally by
   the four detectors of the passive decoder.

All functions are pure and vectorised; SI units except angles (degrees) and the receiver inputs named
with their units.

Example (zenith sky with the Sun at 45°, 1550 nm, Xinglong, 23 km visibility)::

    >>> from satqkd.sky import daylight as D
    >>> L = D.sky_spectral_radiance_w_m2_sr_m(90.0, 0.0, 45.0, 180.0, 1550e-9, 890.0, 23e3)
    >>> round(L * 1e-9 * 1e3, 2)          # mW m⁻² sr⁻¹ nm⁻¹
    1.19
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from satqkd.sky import atmosphere as _atm

__all__ = [
    "SOLAR_TEMPERATURE_K",
    "SOLAR_RADIUS_M",
    "ASTRONOMICAL_UNIT_M",
    "MOLECULAR_SCALE_HEIGHT_M",
    "solar_spectral_irradiance_w_m2_m",
    "rayleigh_phase",
    "henyey_greenstein_phase",
    "shadow_height_m",
    "twilight_factor",
    "sky_spectral_radiance_w_m2_sr_m",
    "sunlight_rate_hz",
    "sun_look",
]

#: Nominal solar effective temperature (IAU 2015 Resolution B3).
SOLAR_TEMPERATURE_K = 5772.0
#: Nominal solar radius (IAU 2015 Resolution B3).
SOLAR_RADIUS_M = 6.957e8
#: Astronomical unit (IAU 2012 Resolution B2).
ASTRONOMICAL_UNIT_M = 1.495978707e11
#: Scale height of the molecular atmosphere near the ground (R T / M g at 288 K).
MOLECULAR_SCALE_HEIGHT_M = 8.0e3
_EARTH_RADIUS_M = 6371.0e3
_H = 6.62607015e-34
_C = 299792458.0
_KB = 1.380649e-23


def _out(x):
    return float(x) if np.ndim(x) == 0 else x


def solar_spectral_irradiance_w_m2_m(wavelength_m):
    """Solar spectral irradiance above the atmosphere at 1 au (W m⁻² per m of wavelength).

    Planck's law at :data:`SOLAR_TEMPERATURE_K` times the solar solid angle π (R☉/au)²:
    1.03 W m⁻² nm⁻¹ at 850 nm, 0.227 W m⁻² nm⁻¹ at 1550 nm (ASTM E-490: ≈ 0.96 and ≈ 0.25).
    """
    lam = np.asarray(wavelength_m, dtype=float)
    if np.any(~np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("wavelength_m must be finite and > 0")
    b = 2.0 * _H * _C**2 / lam**5 / np.expm1(_H * _C / (lam * _KB * SOLAR_TEMPERATURE_K))
    return _out(b * math.pi * (SOLAR_RADIUS_M / ASTRONOMICAL_UNIT_M) ** 2)


def rayleigh_phase(cos_scattering_angle):
    """Rayleigh phase function ``P(Θ) = 3/4 (1 + cos²Θ)``, normalised to ∫P dΩ / 4π = 1."""
    c = np.asarray(cos_scattering_angle, dtype=float)
    return _out(0.75 * (1.0 + c**2))


def henyey_greenstein_phase(cos_scattering_angle, asymmetry):
    """Henyey–Greenstein phase function ``(1 − g²)/(1 + g² − 2g cosΘ)^(3/2)`` (ApJ 93, 70 (1941)),
    normalised to ∫P dΩ / 4π = 1; g ∈ (−1, 1) the asymmetry parameter (≈ 0.7 for continental aerosol)."""
    c = np.asarray(cos_scattering_angle, dtype=float)
    g = float(asymmetry)
    if not -1.0 < g < 1.0:
        raise ValueError("asymmetry must lie in (-1, 1)")
    return _out((1.0 - g * g) / (1.0 + g * g - 2.0 * g * c) ** 1.5)


def shadow_height_m(sun_altitude_deg):
    """Height of the Earth's shadow above the station toward the zenith for a Sun below the horizon:
    ``R⊕ (1/cos d − 1)``, d = −sun altitude (0 when the Sun is up). 35 km at d = 6°, 142 km at 12°."""
    d = np.radians(np.clip(-np.asarray(sun_altitude_deg, dtype=float), 0.0, 89.0))
    return _out(_EARTH_RADIUS_M * (1.0 / np.cos(d) - 1.0))


def twilight_factor(sun_altitude_deg, scale_height_m: float = MOLECULAR_SCALE_HEIGHT_M):
    """Fraction of the scattering column still sunlit: ``exp(−h_s/H)`` with h_s of :func:`shadow_height_m`
    (1 with the Sun up; 0.0126 at the end of civil twilight, 2e-8 at the end of nautical twilight)."""
    if not scale_height_m > 0:
        raise ValueError("scale_height_m must be > 0")
    return _out(np.exp(-np.asarray(shadow_height_m(sun_altitude_deg)) / float(scale_height_m)))


def _cos_angle(el1, az1, el2, az2):
    e1, a1, e2, a2 = (np.radians(np.asarray(x, dtype=float)) for x in (el1, az1, el2, az2))
    return np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(a1 - a2)


def sky_spectral_radiance_w_m2_sr_m(
    view_elevation_deg,
    view_azimuth_deg,
    sun_altitude_deg,
    sun_azimuth_deg,
    wavelength_m: float,
    altitude_m: float,
    visibility_m: float,
    aerosol_scale_height_m: float = 1200.0,
    aerosol_model: str = "kim",
    aerosol_albedo: float = 0.9,
    aerosol_asymmetry: float = 0.7,
):
    """Clear-sky spectral radiance (W m⁻² sr⁻¹ per m) toward (elevation, azimuth), single scattering.

    The formula of the module docstring: solar irradiance :func:`solar_spectral_irradiance_w_m2_m`,
    zenith optical depths of :mod:`satqkd.sky.atmosphere` at the site (Rayleigh × P(h)/P0, aerosol
    from ``visibility_m``), Rayleigh + Henyey–Greenstein phase functions at the scattering angle, air
    masses of :func:`satqkd.sky.atmosphere.airmass` (apparent elevation) for the line of sight and the
    Sun. A Sun below the horizon is placed on it and the result multiplied by :func:`twilight_factor`.
    The direct solar disc is not included (a line of sight within 0.27° of the Sun sees the Sun itself).
    """
    el = np.asarray(view_elevation_deg, dtype=float)
    if np.any(el < 0) or np.any(el > 90):
        raise ValueError("view_elevation_deg must lie in [0, 90]")
    if not 0.0 <= aerosol_albedo <= 1.0:
        raise ValueError("aerosol_albedo must lie in [0, 1]")
    sun = np.asarray(sun_altitude_deg, dtype=float)
    sun_up = np.clip(sun, 0.0, 90.0)
    p = _atm.pressure_pa(altitude_m)
    tau_r = float(_atm.rayleigh_optical_depth(wavelength_m, p))
    tau_a = float(_atm.aerosol_optical_depth(wavelength_m, visibility_m, aerosol_scale_height_m, aerosol_model))
    tau = tau_r + tau_a
    c = _cos_angle(el, view_azimuth_deg, sun_up, sun_azimuth_deg)
    wp = (tau_r * np.asarray(rayleigh_phase(c)) + aerosol_albedo * tau_a * np.asarray(henyey_greenstein_phase(c, aerosol_asymmetry))) / tau
    x = np.asarray(_atm.airmass(el))        # 1/μ
    x0 = np.asarray(_atm.airmass(sun_up))   # 1/μ0
    # μ0/(μ0 − μ)·[e^{−τ/μ0} − e^{−τ/μ}] = e^{−τX}·τX·expm1(u)/u with u = τ(X − X0): exact at X = X0
    u = tau * (x - x0)
    ratio = np.where(np.abs(u) < 1e-12, 1.0, np.expm1(u) / np.where(u == 0, 1.0, u))
    path = np.exp(-tau * x) * tau * x * ratio
    f0 = solar_spectral_irradiance_w_m2_m(wavelength_m)
    out = f0 * wp / (4.0 * math.pi) * path * np.asarray(twilight_factor(sun))
    return _out(out)


def sunlight_rate_hz(
    radiance_w_m2_sr_m,
    wavelength_m: float,
    filter_width_nm: float,
    field_of_view_urad: float,
    aperture_m: float,
    optics_efficiency: float,
    detector_efficiency: float,
    n_detectors: int = 4,
):
    """Detected counts per second *per detector* from a sky of spectral radiance L (W m⁻² sr⁻¹ m⁻¹).

    ``L · Δλ · (πD²/4) · (π Θ²/4) · η_optics · η_det / (h c/λ) / n_detectors``: the étendue of the
    receiver's aperture D and circular field of view of full angle Θ, a rectangular filter of width
    Δλ; unpolarised light splits evenly over the passive decoder's ``n_detectors`` detectors.
    """
    for name, v in (("filter_width_nm", filter_width_nm), ("field_of_view_urad", field_of_view_urad), ("aperture_m", aperture_m)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0")
    for name, v in (("optics_efficiency", optics_efficiency), ("detector_efficiency", detector_efficiency)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1]")
    L = np.asarray(radiance_w_m2_sr_m, dtype=float)
    area = math.pi * aperture_m**2 / 4.0
    omega = math.pi * (field_of_view_urad * 1e-6) ** 2 / 4.0
    power_w = L * filter_width_nm * 1e-9 * area * omega * optics_efficiency
    return _out(power_w * wavelength_m / (_H * _C) * detector_efficiency / n_detectors)


def sun_look(latitude_deg: float, longitude_deg: float, altitude_m: float, start_utc: datetime, t_s):
    """Sun altitude and azimuth (deg; skyfield with DE421, apparent) seen from a station at
    ``start_utc + t_s`` seconds; arrays like ``t_s``."""
    from skyfield.api import wgs84

    from satqkd.sky.orbit import _offset, ephemeris, timescale

    eph = ephemeris()
    t = _offset(timescale().from_datetime(start_utc), np.asarray(t_s, dtype=float))
    topos = wgs84.latlon(latitude_deg, longitude_deg, altitude_m)
    alt, az, _ = (eph["earth"] + topos).at(t).observe(eph["sun"]).apparent().altaz()
    return np.atleast_1d(np.asarray(alt.degrees, dtype=float)), np.atleast_1d(np.asarray(az.degrees, dtype=float))
