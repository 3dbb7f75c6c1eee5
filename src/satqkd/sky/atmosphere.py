"""Clear-sky transmission of the atmosphere by cause: molecules (Rayleigh), aerosols (visibility), gases.

The *physical* atmosphere model of the link (``AtmosphereConfig.model = "physical"``): the zenith
optical depth from the wavelength, the site altitude and the ground visibility, and the slant path
from the Kasten–Young air mass at the *apparent* (refracted) elevation::

    T(e) = exp(−(τ_R + τ_a + τ_abs) · X(e + R(e)))

============ =============================================================== =================
cause        model                                                           function
============ =============================================================== =================
Rayleigh     Bodhaine et al., J. Atmos. Oceanic Technol. 16, 1854 (1999),    :func:`rayleigh_optical_depth`
             eq. (30), × P(h)/P0 with the US Standard Atmosphere 1976
             troposphere P(h)
aerosol      ground extinction from the visibility (Koschmieder 3.912/V) and :func:`aerosol_extinction_per_m`
             the wavelength exponent of Kim, McArthur & Korevaar, Proc.
             SPIE 4214, 26 (2001) (or Kruse et al., *Elements of Infrared
             Technology* (1962)), × an exponential scale height
absorption   zenith optical depth of the molecular lines at the wavelength,  (an input)
             an input (848.6 nm lies between the H2O 0.82 and 0.94 µm bands)
air mass     Kasten & Young, Appl. Opt. 28, 4735 (1989), of the apparent     :func:`airmass`
             zenith angle
refraction   Sæmundsson, Sky & Telescope 72, 70 (1986), scaled by P/T        :func:`refraction_deg`
             (Meeus, *Astronomical Algorithms*, 2nd ed., ch. 16)
============ =============================================================== =================

All functions are pure and vectorised (NumPy broadcasting); SI units except angles in degrees.
Published values the tests check: τ_R(850 nm, sea level) ≈ 0.0166 (Bodhaine's Table 3 and the
Hansen & Travis (1974) formula agree to 1 %), τ_R(550 nm) ≈ 0.097, X(10°) ≈ 5.6, refraction at
the horizon ≈ 29′ (0.48°), Kim's q = 1.6 / 1.3 / 0.16 V + 0.34 / V − 0.5 / 0.

Limits: clear sky only (no cloud, no fog below 0.5 km visibility beyond Kim's q = 0), one aerosol
layer with a constant scale height, the visibility taken at the station's altitude.

Example::

    >>> from satqkd.sky import atmosphere as A
    >>> round(A.rayleigh_optical_depth(850e-9), 4)
    0.0166
    >>> round(A.extinction_loss_db(90.0, 848.6e-9, 890.0, 23e3), 2)      # Xinglong, 23 km visibility
    0.57
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "STANDARD_PRESSURE_PA",
    "pressure_pa",
    "temperature_k",
    "rayleigh_optical_depth",
    "refraction_deg",
    "apparent_elevation_deg",
    "airmass",
    "aerosol_size_exponent",
    "aerosol_extinction_per_m",
    "aerosol_optical_depth",
    "zenith_optical_depth",
    "transmittance",
    "extinction_loss_db",
]

#: Standard sea-level pressure (Pa), the reference of Bodhaine's eq. (30).
STANDARD_PRESSURE_PA = 101325.0
_T0_K = 288.15  # US Standard Atmosphere 1976, sea level
_LAPSE_K_PER_M = 0.0065  # tropospheric lapse rate
_BARO_EXPONENT = 5.25588  # g0 M / (R L)
_DB = 10.0 / math.log(10.0)  # optical depth → dB


def _out(x):
    return float(x) if np.ndim(x) == 0 else x


def _arr(x, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    if lo is not None and (np.any(a <= lo) if lo_open else np.any(a < lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '≥'} {lo:g}")
    if hi is not None and np.any(a > hi):
        raise ValueError(f"{name} must be ≤ {hi:g}")
    return a


# --------------------------------------------------------------------------------------------
# the standard atmosphere
# --------------------------------------------------------------------------------------------


def pressure_pa(altitude_m):
    """Pressure at a site altitude: US Standard Atmosphere 1976 troposphere (0–11 km),
    ``P = P0 (1 − L h / T0)^5.25588`` with P0 = 101325 Pa, T0 = 288.15 K, L = 6.5 K/km
    (e.g. 890 m → 91.0 kPa; 2030 m → 79.5 kPa)."""
    h = _arr(altitude_m, "altitude_m", -500.0, 11000.0)
    return _out(STANDARD_PRESSURE_PA * (1.0 - _LAPSE_K_PER_M * h / _T0_K) ** _BARO_EXPONENT)


def temperature_k(altitude_m):
    """Air temperature of the US Standard Atmosphere 1976 troposphere: ``T = 288.15 K − 6.5 K/km · h``."""
    h = _arr(altitude_m, "altitude_m", -500.0, 11000.0)
    return _out(_T0_K - _LAPSE_K_PER_M * h)


# --------------------------------------------------------------------------------------------
# molecules
# --------------------------------------------------------------------------------------------


def rayleigh_optical_depth(wavelength_m, pressure_pa=STANDARD_PRESSURE_PA):
    """Vertical Rayleigh optical depth of the whole atmosphere above a site at pressure P.

    Bodhaine, Wood, Dutton & Slusser, J. Atmos. Oceanic Technol. 16, 1854 (1999), eq. (30), for
    1013.25 hPa, 45° latitude and 360 ppm CO2 (λ in µm)::

        τ_R = 0.0021520 (1.0455996 − 341.29061 λ⁻² − 0.90230850 λ²) / (1 + 0.0027059889 λ⁻² − 85.968563 λ²)

    scaled by P/P0 (the column mass; their eq. (29) without the small gravity correction).
    Their fit covers 0.25–1.2 µm; 850 nm → 0.0166, 550 nm → 0.0973. From 1.2 to 2.5 µm (the
    telecom bands) the formula of Hansen & Travis, Space Sci. Rev. 16, 527 (1974), eq. (2.29),
    ``0.008569 λ⁻⁴ (1 + 0.0113 λ⁻² + 0.00013 λ⁻⁴)``, is used, scaled to join Bodhaine's at 1.2 µm
    (the two differ by 3 % there): 1550 nm → 0.00149 at sea level.
    """
    lam = _arr(wavelength_m, "wavelength_m", 0.25e-6, 2.5e-6) * 1e6
    p = _arr(pressure_pa, "pressure_pa", 0.0, 2 * STANDARD_PRESSURE_PA)

    def bodhaine(x):
        x2 = x * x
        return 0.0021520 * (1.0455996 - 341.29061 / x2 - 0.90230850 * x2) / (1.0 + 0.0027059889 / x2 - 85.968563 * x2)

    def hansen_travis(x):
        return 0.008569 * x**-4 * (1.0 + 0.0113 * x**-2 + 0.00013 * x**-4)

    ir = lam > 1.2
    tau = np.where(ir, hansen_travis(lam) * (bodhaine(1.2) / hansen_travis(1.2)), bodhaine(np.where(ir, 1.0, lam)))
    return _out(tau * p / STANDARD_PRESSURE_PA)


# --------------------------------------------------------------------------------------------
# slant path
# --------------------------------------------------------------------------------------------


def refraction_deg(elevation_deg, pressure_pa=STANDARD_PRESSURE_PA, temperature_k=283.0):
    """Astronomical refraction R (deg) for a *geometric* (true) elevation h.

    Sæmundsson, Sky & Telescope 72, 70 (1986): ``R = 1.02′ / tan(h + 10.3°/(h + 5.11°))``, scaled
    by ``(P / 101 kPa)(283 K / T)`` (Meeus, *Astronomical Algorithms*, 2nd ed. (1998), ch. 16).
    ≈ 29′ at the horizon, 5.3′ at 10°, 0 at the zenith (the formula gives −0.0055′ there: clipped).
    Consistent with Bennett's inverse formula to 0.1′. For h in [−1°, 90°].
    """
    h = _arr(elevation_deg, "elevation_deg", -1.0, 90.0)
    p = _arr(pressure_pa, "pressure_pa", 0.0)
    t = _arr(temperature_k, "temperature_k", 0.0, lo_open=True)
    r_arcmin = 1.02 / np.tan(np.radians(h + 10.3 / (h + 5.11)))
    return _out(np.maximum(r_arcmin, 0.0) / 60.0 * (p / 101000.0) * (283.0 / t))


def apparent_elevation_deg(elevation_deg, pressure_pa=STANDARD_PRESSURE_PA, temperature_k=283.0):
    """Apparent (refracted) elevation: geometric elevation + :func:`refraction_deg`, at most 90°."""
    h = _arr(elevation_deg, "elevation_deg", -1.0, 90.0)
    return _out(np.minimum(h + np.asarray(refraction_deg(h, pressure_pa, temperature_k)), 90.0))


def airmass(elevation_deg):
    """Relative air mass X (1 at zenith) of Kasten & Young, Appl. Opt. 28, 4735 (1989).

    ``X = 1 / (cos z + 0.50572 (96.07995° − z)^−1.6364)`` with z = 90° − elevation in degrees.
    Kasten & Young fitted it to the ISO standard atmosphere *with* refraction, as a function of the
    apparent zenith angle: pass the apparent elevation (:func:`apparent_elevation_deg`) where the
    difference matters (below ~10°). X(10°) = 5.60, X(0°) = 38.1; within 0.5 % of sec z above 30°.
    ``elevation_deg`` must lie in [0, 90].
    """
    e = _arr(elevation_deg, "elevation_deg", 0.0, 90.0)
    z = 90.0 - e
    return _out(1.0 / (np.cos(np.radians(z)) + 0.50572 * (96.07995 - z) ** -1.6364))


# --------------------------------------------------------------------------------------------
# aerosols
# --------------------------------------------------------------------------------------------


def aerosol_size_exponent(visibility_m, model: str = "kim"):
    """Wavelength exponent q of the aerosol extinction, β ∝ λ^−q, as a function of the visibility V.

    * ``"kim"`` — Kim, McArthur & Korevaar, Proc. SPIE 4214, 26 (2001): q = 1.6 (V > 50 km),
      1.3 (6–50 km), 0.16 V + 0.34 (1–6 km), V − 0.5 (0.5–1 km), 0 (V < 0.5 km; fog, wavelength
      independent), V in km;
    * ``"kruse"`` — Kruse, McGlauchlin & McQuistan, *Elements of Infrared Technology* (1962):
      q = 1.6 (V > 50 km), 1.3 (6–50 km), 0.585 V^(1/3) (V < 6 km).
    """
    v = _arr(visibility_m, "visibility_m", 0.0, lo_open=True) / 1e3
    if model == "kim":
        q = np.select([v > 50, v > 6, v > 1, v > 0.5], [1.6, 1.3, 0.16 * v + 0.34, v - 0.5], 0.0)
    elif model == "kruse":
        q = np.where(v > 50, 1.6, np.where(v > 6, 1.3, 0.585 * np.cbrt(v)))
    else:
        raise ValueError(f"aerosol model must be 'kim' or 'kruse', got {model!r}")
    return _out(q)


def aerosol_extinction_per_m(wavelength_m, visibility_m, model: str = "kim"):
    """Aerosol extinction coefficient β_a (1/m, natural log) at ground level from the visibility V.

    ``β_a = (3.912 / V) (λ / 550 nm)^−q``: Koschmieder's law for the 2 % contrast threshold that
    defines the visibility (meteorological range) at 550 nm, all of it attributed to aerosols
    (molecular scattering, 0.012/km at 550 nm, is < 5 % for V < 20 km), and the exponent q of
    :func:`aerosol_size_exponent` (Kim et al. 2001; the "3.91/V" of the free-space-optics
    literature). 23 km at 850 nm → 0.097 /km (0.42 dB/km).
    """
    lam = _arr(wavelength_m, "wavelength_m", 0.0, lo_open=True)
    v = _arr(visibility_m, "visibility_m", 0.0, lo_open=True)
    q = np.asarray(aerosol_size_exponent(v, model))
    return _out(3.912 / v * (lam / 550e-9) ** (-q))


def aerosol_optical_depth(wavelength_m, visibility_m, scale_height_m=1200.0, model: str = "kim"):
    """Vertical aerosol optical depth above the site: ``τ_a = β_a(ground) · H_a``.

    An exponentially decreasing aerosol density with scale height H_a integrates to β_a·H_a
    (Elterman's clear standard atmosphere, AFCRL-68-0153 (1968), has H_a ≈ 1.2 km in the boundary
    layer). 23 km, 850 nm, 1.2 km → τ_a = 0.117, i.e. 0.51 dB at zenith.
    """
    h = _arr(scale_height_m, "scale_height_m", 0.0, lo_open=True)
    return _out(np.asarray(aerosol_extinction_per_m(wavelength_m, visibility_m, model)) * h)


# --------------------------------------------------------------------------------------------
# the whole path
# --------------------------------------------------------------------------------------------


def zenith_optical_depth(wavelength_m, altitude_m, visibility_m, aerosol_scale_height_m=1200.0,
                         absorption_optical_depth=0.0, aerosol_model: str = "kim"):
    """Vertical optical depth above a site: Rayleigh at the site's pressure + aerosol + gas absorption."""
    p = pressure_pa(altitude_m)
    tau_r = np.asarray(rayleigh_optical_depth(wavelength_m, p))
    tau_a = np.asarray(aerosol_optical_depth(wavelength_m, visibility_m, aerosol_scale_height_m, aerosol_model))
    tau_g = _arr(absorption_optical_depth, "absorption_optical_depth", 0.0)
    return _out(tau_r + tau_a + tau_g)


def transmittance(elevation_deg, wavelength_m, altitude_m, visibility_m, aerosol_scale_height_m=1200.0,
                  absorption_optical_depth=0.0, aerosol_model: str = "kim"):
    """Slant-path transmittance ``exp(−τ_zenith · X(apparent elevation))`` (Beer–Lambert).

    τ_zenith from :func:`zenith_optical_depth`; the apparent elevation from :func:`refraction_deg`
    at the site's standard pressure and temperature; X of :func:`airmass`. ``elevation_deg`` is
    geometric, in [0, 90]. One air mass for all causes: the aerosol layer is thinner than the
    molecular one, so near the horizon its true air mass is somewhat larger (< 3 % above 10°).
    """
    el = _arr(elevation_deg, "elevation_deg", 0.0, 90.0)
    p, t = pressure_pa(altitude_m), temperature_k(altitude_m)
    x = np.asarray(airmass(apparent_elevation_deg(el, p, t)))
    tau = np.asarray(zenith_optical_depth(wavelength_m, altitude_m, visibility_m, aerosol_scale_height_m,
                                          absorption_optical_depth, aerosol_model))
    return _out(np.exp(-tau * x))


def extinction_loss_db(elevation_deg, wavelength_m, altitude_m, visibility_m, aerosol_scale_height_m=1200.0,
                       absorption_optical_depth=0.0, aerosol_model: str = "kim"):
    """Slant-path extinction loss in dB (positive): ``10 log10(e) · τ_zenith · X`` (see :func:`transmittance`)."""
    el = _arr(elevation_deg, "elevation_deg", 0.0, 90.0)
    p, t = pressure_pa(altitude_m), temperature_k(altitude_m)
    x = np.asarray(airmass(apparent_elevation_deg(el, p, t)))
    tau = np.asarray(zenith_optical_depth(wavelength_m, altitude_m, visibility_m, aerosol_scale_height_m,
                                          absorption_optical_depth, aerosol_model))
    return _out(_DB * tau * x)
