"""Optical turbulence from a Cn² profile: the Hufnagel–Valley model, Fried parameter, isoplanatic angle, scintillation.

The refractive-index structure constant of the Hufnagel–Valley model (Valley, Appl. Opt. 19, 574
(1980); Andrews & Phillips, *Laser Beam Propagation through Random Media*, 2nd ed. (2005), §12.2),
with h the height above the ground station (m)::

    Cn²(h) = 0.00594 (v/27)² (1e-5 h)^10 e^(−h/1000) + 2.7e-16 e^(−h/1500) + A e^(−h/100)

v the rms high-altitude wind speed (m/s), A the ground-level Cn² (m^−2/3). "HV 5/7" (v = 21 m/s,
A = 1.7e-14) gives r0 ≈ 5 cm and θ0 ≈ 7 µrad at 0.5 µm toward the zenith (hence its name). From the
profile, along a downlink at zenith angle ζ (k = 2π/λ), integrating h from 0 to 30 km:

* Fried parameter ``r0 = [0.423 k² sec ζ ∫ Cn² dh]^(−3/5)`` (Fried 1966);
* isoplanatic angle ``θ0 = [2.914 k² sec^(8/3) ζ ∫ Cn² h^(5/3) dh]^(−3/5)`` (Fried 1982);
* point-receiver scintillation index in weak turbulence, plane wave (the downlink wave is plane
  by the time it reaches the atmosphere): ``σ_I² = 2.25 k^(7/6) sec^(11/6) ζ ∫ Cn² h^(5/6) dh``
  (Andrews & Phillips 2005, §12.4);
* large-aperture scintillation index (D ≫ √(λh)): ``σ_I² = 17.34 D^(−7/3) sec³ ζ ∫ Cn² h² dh``
  (Roddier, Prog. Opt. 19, 281 (1981); Dravins et al., PASP 109, 173 (1997)), independent of λ.

Example::

    >>> from satqkd.sky import turbulence as T
    >>> round(T.fried_parameter_zenith_m(500e-9) * 100, 1)      # HV 5/7, cm
    5.0
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "hufnagel_valley_cn2",
    "cn2_moment",
    "fried_parameter_zenith_m",
    "isoplanatic_angle_zenith_urad",
    "scintillation_index_point",
    "scintillation_index_aperture",
    "scintillation_index",
]

_TOP_M = 30e3  # upper limit of the integrals (Cn² is negligible above)


def _out(x):
    return float(x) if np.ndim(x) == 0 else x


def hufnagel_valley_cn2(height_m, wind_speed_m_s=21.0, ground_cn2_m23=1.7e-14):
    """Cn²(h) (m^−2/3) of the Hufnagel–Valley model at height ``height_m`` ≥ 0 above the station (see module)."""
    h = np.asarray(height_m, dtype=float)
    if np.any(h < 0) or not np.all(np.isfinite(h)):
        raise ValueError("height_m must be finite and ≥ 0")
    if not (wind_speed_m_s >= 0 and ground_cn2_m23 >= 0):
        raise ValueError("wind_speed_m_s and ground_cn2_m23 must be ≥ 0")
    out = (0.00594 * (wind_speed_m_s / 27.0) ** 2 * (1e-5 * h) ** 10 * np.exp(-h / 1000.0)
           + 2.7e-16 * np.exp(-h / 1500.0) + ground_cn2_m23 * np.exp(-h / 100.0))
    return _out(out)


@functools.lru_cache(maxsize=64)
def cn2_moment(power: float, wind_speed_m_s: float = 21.0, ground_cn2_m23: float = 1.7e-14) -> float:
    """``∫_0^30 km Cn²(h) h^power dh`` of the Hufnagel–Valley profile (composite Simpson on a grid dense
    near the ground, 1 m to 30 km log-spaced plus 0–1 m; relative error < 1e-4)."""
    from scipy.integrate import simpson

    h = np.concatenate([np.linspace(0.0, 1.0, 11), np.geomspace(1.0, _TOP_M, 4000)[1:]])
    f = np.asarray(hufnagel_valley_cn2(h, wind_speed_m_s, ground_cn2_m23)) * h**power
    return float(simpson(f, x=h))


def _sec(elevation_deg):
    e = np.asarray(elevation_deg, dtype=float)
    if np.any(e <= 0) or np.any(e > 90) or not np.all(np.isfinite(e)):
        raise ValueError("elevation_deg must lie in (0, 90]")
    return 1.0 / np.sin(np.radians(e))


def fried_parameter_zenith_m(wavelength_m, wind_speed_m_s=21.0, ground_cn2_m23=1.7e-14):
    """Fried parameter toward the zenith, ``[0.423 k² ∫ Cn² dh]^(−3/5)`` (HV 5/7 at 500 nm: 5.0 cm)."""
    k = 2.0 * math.pi / np.asarray(wavelength_m, dtype=float)
    return _out((0.423 * k**2 * cn2_moment(0.0, wind_speed_m_s, ground_cn2_m23)) ** -0.6)


def isoplanatic_angle_zenith_urad(wavelength_m, wind_speed_m_s=21.0, ground_cn2_m23=1.7e-14):
    """Isoplanatic angle toward the zenith, ``[2.914 k² ∫ Cn² h^(5/3) dh]^(−3/5)`` in µrad (HV 5/7, 500 nm: ≈ 7)."""
    k = 2.0 * math.pi / np.asarray(wavelength_m, dtype=float)
    return _out((2.914 * k**2 * cn2_moment(5.0 / 3.0, wind_speed_m_s, ground_cn2_m23)) ** -0.6 * 1e6)


def scintillation_index_point(elevation_deg, wavelength_m, wind_speed_m_s=21.0, ground_cn2_m23=1.7e-14):
    """Weak-turbulence plane-wave scintillation index of a point receiver on a downlink at elevation e (see module)."""
    k = 2.0 * math.pi / float(wavelength_m)
    return _out(2.25 * k ** (7.0 / 6.0) * _sec(elevation_deg) ** (11.0 / 6.0)
                * cn2_moment(5.0 / 6.0, wind_speed_m_s, ground_cn2_m23))


def scintillation_index_aperture(elevation_deg, aperture_m, wind_speed_m_s=21.0, ground_cn2_m23=1.7e-14):
    """Large-aperture scintillation index ``17.34 D^(−7/3) sec³ζ ∫ Cn² h² dh`` (Roddier 1981; see module)."""
    d = float(aperture_m)
    if not d > 0:
        raise ValueError("aperture_m must be > 0")
    return _out(17.34 * d ** (-7.0 / 3.0) * _sec(elevation_deg) ** 3 * cn2_moment(2.0, wind_speed_m_s, ground_cn2_m23))


def scintillation_index(elevation_deg, wavelength_m, aperture_m, wind_speed_m_s=21.0, ground_cn2_m23=1.7e-14):
    """Scintillation index seen by a receiver of diameter D: the smaller of the point-receiver and the
    large-aperture indices (each is the right limit on its side of D ≈ the Fresnel scale √(λ h)), capped at 1
    (saturation; the weak-turbulence formulas no longer hold beyond)."""
    p = np.asarray(scintillation_index_point(elevation_deg, wavelength_m, wind_speed_m_s, ground_cn2_m23))
    a = np.asarray(scintillation_index_aperture(elevation_deg, aperture_m, wind_speed_m_s, ground_cn2_m23))
    return _out(np.minimum(np.minimum(p, a), 1.0))
