"""Optical link budget of the satellite-to-ground downlink, cause by cause, and the fiber reference.

Every loss is a small pure function of arrays (NumPy broadcasting) returning a loss in dB
(positive = loss); :func:`link_budget_db` adds them up for a given range and elevation and
:func:`link_series` builds the :class:`~satqkd.records.LinkSeries` of a whole pass, with the
tracking loop of :mod:`satqkd.sky.apt` and the polarization frame of :mod:`satqkd.sky.polarization`.

The causes and the paper's numbers for them (Liao et al., Nature 549, 43 (2017)):

============== ========================================== =====================================
cause          model                                      paper
============== ========================================== =====================================
diffraction    Gaussian beam captured by a circular       ≈ 22 dB at 1200 km (10 µrad, 1 m)
               aperture, :func:`diffraction_loss_db`
pointing       Gaussian beam with a pointing error /      < 3 dB; tracking ≈ 1.2 µrad
               jitter, :func:`pointing_loss_db`
atmosphere     zenith extinction × Kasten–Young air mass  absorption + turbulence 3–8 dB
turbulence     seeing spot vs receiver field of view      (at 1200 km)
               (+ optional log-normal fading)
receiver       telescope + decoder + fiber coupling       ≈ 16 %
optics
============== ========================================== =====================================

The sum is the paper's "link efficiency" of Fig. 4: photons in front of the detectors divided by
photons at the transmitter's output (detector efficiency excluded).

Example::

    >>> import satqkd
    >>> from satqkd.sky.link import link_budget_db
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> round(link_budget_db(cfg, 1200e3, 20.0)["diffraction"], 1)
    21.6
"""

from __future__ import annotations

import math

import numpy as np

from satqkd.config import BackgroundConfig, MissionConfig
from satqkd.sky import atmosphere as _atm
from satqkd.records import LinkSeries, PassGeometry

__all__ = [
    "LOSS_CAUSES",
    "beam_half_angle_urad",
    "beam_radius_m",
    "diffraction_loss_db",
    "pointing_loss_db",
    "jitter_pointing_loss_db",
    "airmass",
    "atmosphere_loss_db",
    "config_atmosphere_loss_db",
    "fried_parameter_m",
    "seeing_fwhm_urad",
    "turbulence_loss_db",
    "ao_coupling_loss_db",
    "config_turbulence_loss_db",
    "scintillation_index",
    "scintillation_fading",
    "lognormal_fading",
    "config_r0_zenith_m",
    "config_scintillation_index",
    "receiver_optics_loss_db",
    "background_rate_hz",
    "config_background_rate_hz",
    "config_sunlight_rate_hz",
    "los_rate_estimate_deg_s",
    "link_budget_db",
    "link_series",
    "fiber_transmittance",
    "fiber_comparison",
    "SECONDS_PER_YEAR",
]

#: Keys of ``LinkSeries.loss_db`` and of :func:`link_budget_db` (plus ``"total"`` there).
LOSS_CAUSES = ("diffraction", "pointing", "atmosphere", "turbulence", "receiver_optics")
#: Julian year in seconds (used for the paper's "one sifted bit in six million years").
SECONDS_PER_YEAR = 365.25 * 86400.0
#: Mean Earth radius used only to estimate the elevation/angular rate of a circular orbit.
_EARTH_RADIUS_M = 6371.0e3
_MU_EARTH_M3_S2 = 3.986004418e14


def _db(eta):
    """Transmittance → loss in dB (positive), keeping scalars scalar."""
    out = -10.0 * np.log10(eta)
    return float(out) if np.ndim(out) == 0 else out


def _arr(x, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    if lo is not None and (np.any(a <= lo) if lo_open else np.any(a < lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '≥'} {lo}" + (f" and ≤ {hi}" if hi is not None else ""))
    if hi is not None and np.any(a > hi):
        raise ValueError(f"{name} must be ≤ {hi}" + (f" and {'>' if lo_open else '≥'} {lo}" if lo is not None else ""))
    return a


# --------------------------------------------------------------------------------------------
# diffraction and pointing (Gaussian beam)
# --------------------------------------------------------------------------------------------


def beam_half_angle_urad(divergence_urad):
    """1/e² intensity half-angle θ_w of the far-field beam, from the configured divergence.

    ``TransmitterConfig.divergence_urad`` is the *full far-field angle at 1/e of peak intensity*
    (our reading of the paper's "far-field divergence of ~10 µrad"). A Gaussian beam
    I(θ) ∝ exp(−2θ²/θ_w²) falls to 1/e at θ = θ_w/√2, so the full 1/e angle is √2·θ_w and
    ``θ_w = divergence / √2`` (10 µrad → 7.07 µrad).
    """
    d = _arr(divergence_urad, "divergence_urad", 0.0, lo_open=True)
    out = d / math.sqrt(2.0)
    return float(out) if out.ndim == 0 else out


def beam_radius_m(range_m, divergence_urad, tx_aperture_m: float = 0.3):
    """1/e² intensity radius of the beam at distance L: ``w = sqrt(w0² + (θ_w L)²)``.

    θ_w from :func:`beam_half_angle_urad`; the near-field waist is taken as the transmitter
    aperture radius, ``w0 = tx_aperture_m / 2`` (0.15 m for the 300 mm Cassegrain; negligible
    beyond a few km, it only keeps w finite at L → 0).
    """
    L = _arr(range_m, "range_m", 0.0)
    tx = _arr(tx_aperture_m, "tx_aperture_m", 0.0, lo_open=True)
    th = np.asarray(beam_half_angle_urad(divergence_urad)) * 1e-6
    w = np.sqrt((tx / 2.0) ** 2 + (th * L) ** 2)
    return float(w) if w.ndim == 0 else w


def diffraction_loss_db(range_m, divergence_urad, rx_aperture_m, tx_aperture_m: float = 0.3):
    """Geometric/diffraction loss of a Gaussian beam collected by a circular receiver aperture.

    Power of a Gaussian beam of 1/e² radius w inside a centred circle of radius a = D_rx/2:
    ``η = 1 − exp(−2a²/w²)`` (design.md §3), with ``w(L)`` from :func:`beam_radius_m` — i.e.
    the divergence is the full far-field angle at 1/e of peak intensity and θ_w = divergence/√2.
    For 10 µrad, a 1 m receiver and L = 1200 km: w = 8.49 m, η = 6.9e-3, **21.6 dB** (paper: 22 dB;
    the paper's "beam diameter about 10 m" sits between our 1/e diameter 12 m and FWHM 10 m).

    Args:
        range_m: slant range (m), ≥ 0.
        divergence_urad: full 1/e far-field angle (µrad), > 0.
        rx_aperture_m: receiver aperture diameter (m), > 0.
        tx_aperture_m: transmitter aperture diameter (m), > 0; sets the near-field waist.
    """
    a = _arr(rx_aperture_m, "rx_aperture_m", 0.0, lo_open=True) / 2.0
    w = np.asarray(beam_radius_m(range_m, divergence_urad, tx_aperture_m))
    eta = -np.expm1(-2.0 * a**2 / w**2)
    return _db(eta)


def pointing_loss_db(error_urad, divergence_urad):
    """Loss of a Gaussian beam whose axis misses the receiver by a known angle θ.

    On-axis-normalised far-field intensity ``η = exp(−2θ²/θ_w²)`` with θ_w = divergence/√2
    (the receiver is much smaller than the beam). Vectorised; ``error_urad`` ≥ 0 (radial).
    """
    th = _arr(error_urad, "error_urad")
    tw = np.asarray(beam_half_angle_urad(divergence_urad))
    out = 10.0 * np.log10(np.e) * 2.0 * th**2 / tw**2  # = −10 log10 exp(−2θ²/θ_w²), exact and underflow-free
    return float(out) if np.ndim(out) == 0 else out


def jitter_pointing_loss_db(sigma_urad, divergence_urad):
    """Mean loss of a Gaussian beam under zero-mean Gaussian pointing jitter σ per axis.

    Averaging ``exp(−2(x²+y²)/θ_w²)`` over x, y ~ N(0, σ²) gives ``η = 1/(1 + 4σ²/θ_w²)``
    (design.md §3; e.g. Toyoshima et al., J. Opt. Soc. Am. A 19, 567 (2002) for the jitter-averaged
    Gaussian beam). Note σ is per axis: a radial rms error of 1.2 µrad is σ = 0.85 µrad.
    """
    s = _arr(sigma_urad, "sigma_urad", 0.0)
    tw = np.asarray(beam_half_angle_urad(divergence_urad))
    return _db(1.0 / (1.0 + 4.0 * s**2 / tw**2))


# --------------------------------------------------------------------------------------------
# atmosphere
# --------------------------------------------------------------------------------------------


def airmass(elevation_deg):
    """Relative air mass X (1 at zenith) of Kasten & Young, Appl. Opt. 28, 4735 (1989).

    ``X = 1 / (cos z + 0.50572 (96.07995° − z)^−1.6364)`` with z = 90° − elevation in degrees;
    finite at the horizon (X ≈ 38) and within 0.5 % of sec z above 30° elevation.
    ``elevation_deg`` must lie in [0, 90]. (The same function as :func:`satqkd.sky.atmosphere.airmass`.)
    """
    return _atm.airmass(elevation_deg)


def atmosphere_loss_db(elevation_deg, zenith_loss_db):
    """Clear-sky extinction (absorption + scattering) along the slant path: zenith loss × air mass.

    Beer–Lambert law with the optical depth proportional to the air mass (:func:`airmass`). The
    zenith loss at the QKD wavelength is a *calibrated* field (``AtmosphereConfig.zenith_loss_db``;
    the paper only bounds absorption + turbulence to 3–8 dB at 1200 km).
    """
    z = _arr(zenith_loss_db, "zenith_loss_db", 0.0)
    out = z * np.asarray(airmass(elevation_deg))
    return float(out) if np.ndim(out) == 0 else out


def config_atmosphere_loss_db(cfg: MissionConfig, elevation_deg):
    """Clear-sky extinction (dB) along the slant path for the configured ``AtmosphereConfig.model``.

    * ``"calibrated"`` (the Micius preset): :func:`atmosphere_loss_db` with ``zenith_loss_db``;
    * ``"physical"``: :func:`satqkd.sky.atmosphere.extinction_loss_db` at the source wavelength and
      the station altitude, from the station's ``visibility_m`` (else the atmosphere's), ``aerosol_scale_height_m``, ``aerosol_model`` and
      ``absorption_optical_depth`` (Rayleigh of Bodhaine et al. 1999, aerosol of Kim et al. 2001,
      Kasten–Young air mass at the refracted elevation).
    """
    at = cfg.atmosphere
    if at.model == "physical":
        vis = cfg.station.visibility_m if cfg.station.visibility_m is not None else at.visibility_m
        return _atm.extinction_loss_db(elevation_deg, cfg.source.wavelength_nm * 1e-9, cfg.station.altitude_m,
                                       vis, at.aerosol_scale_height_m, at.absorption_optical_depth, at.aerosol_model)
    return atmosphere_loss_db(elevation_deg, at.zenith_loss_db)


def config_r0_zenith_m(cfg: MissionConfig) -> float:
    """Fried parameter at zenith at 500 nm for the configured turbulence: ``r0_zenith_m`` (``"fixed"``) or
    from the Hufnagel–Valley profile (:func:`satqkd.sky.turbulence.fried_parameter_zenith_m`)."""
    at = cfg.atmosphere
    if at.turbulence_profile == "hufnagel_valley":
        from satqkd.sky import turbulence as _turb

        return float(_turb.fried_parameter_zenith_m(500e-9, at.hv_wind_speed_m_s, at.hv_ground_cn2_m23))
    return float(at.r0_zenith_m)


def config_scintillation_index(cfg: MissionConfig, elevation_deg):
    """Scintillation index along the pass for the configured turbulence: :func:`scintillation_index` from
    ``scintillation_index_zenith`` (``"fixed"``) or :func:`satqkd.sky.turbulence.scintillation_index` for
    the receiver aperture (``"hufnagel_valley"``)."""
    at = cfg.atmosphere
    if at.turbulence_profile == "hufnagel_valley":
        from satqkd.sky import turbulence as _turb

        el = np.maximum(_arr(elevation_deg, "elevation_deg", 0.0, 90.0), 1e-3)
        return _turb.scintillation_index(el, cfg.source.wavelength_nm * 1e-9, cfg.receiver.aperture_m,
                                         at.hv_wind_speed_m_s, at.hv_ground_cn2_m23)
    return scintillation_index(elevation_deg, at.scintillation_index_zenith)


def fried_parameter_m(elevation_deg, wavelength_nm, r0_zenith_m):
    """Fried parameter r0 along the slant path at wavelength λ.

    ``r0 = r0_zenith(500 nm) · (λ/500 nm)^(6/5) · X^(−3/5)`` (Fried, J. Opt. Soc. Am. 56, 1372
    (1966); Andrews & Phillips, *Laser Beam Propagation through Random Media*, 2nd ed. (2005),
    §12.2: r0 ∝ k^(6/5) (sec ζ)^(−3/5)). The air mass X of :func:`airmass` stands in for sec ζ
    (equal within 1 % above 15° elevation, and finite at the horizon).
    """
    lam = _arr(wavelength_nm, "wavelength_nm", 0.0, lo_open=True)
    r0z = _arr(r0_zenith_m, "r0_zenith_m", 0.0, lo_open=True)
    out = r0z * (lam / 500.0) ** 1.2 * np.asarray(airmass(elevation_deg)) ** -0.6
    return float(out) if np.ndim(out) == 0 else out


def seeing_fwhm_urad(elevation_deg, wavelength_nm, r0_zenith_m, rx_aperture_m: float | None = None):
    """Long-exposure FWHM of the received spot (µrad): seeing ``0.98 λ/r0`` (Fried 1966; Roddier,
    Prog. Opt. 19, 281 (1981)), added in quadrature to the Airy FWHM ``1.03 λ/D`` if the
    receiver aperture D is given (a Gaussian approximation of the combined spot)."""
    lam_m = _arr(wavelength_nm, "wavelength_nm", 0.0, lo_open=True) * 1e-9
    r0 = np.asarray(fried_parameter_m(elevation_deg, wavelength_nm, r0_zenith_m))
    f2 = (0.98 * lam_m / r0) ** 2
    if rx_aperture_m is not None:
        d = _arr(rx_aperture_m, "rx_aperture_m", 0.0, lo_open=True)
        f2 = f2 + (1.03 * lam_m / d) ** 2
    out = np.sqrt(f2) * 1e6
    return float(out) if out.ndim == 0 else out


def turbulence_loss_db(elevation_deg, wavelength_nm, r0_zenith_m, field_of_view_urad, rx_aperture_m: float | None = None):
    """Seeing-limited coupling loss: the fraction of the turbulence-broadened spot outside the field of view.

    The long-exposure spot is taken as a circular Gaussian of FWHM F (:func:`seeing_fwhm_urad`);
    the fraction inside a centred circular field of full angle Θ (``field_of_view_urad``, the
    fiber/detector acceptance, a *calibrated* field) is ``1 − exp(−4 ln2 (Θ/2)²/F²) = 1 − 2^−(Θ/F)²``.
    The loss grows toward the horizon as r0 shrinks (X^(−3/5)). Long exposure is a conservative
    choice: tilt removed by the ground fine-tracking would shrink the spot by ≲ 10 % for D ≫ r0.
    """
    fov = _arr(field_of_view_urad, "field_of_view_urad", 0.0, lo_open=True)
    F = np.asarray(seeing_fwhm_urad(elevation_deg, wavelength_nm, r0_zenith_m, rx_aperture_m))
    eta = -np.expm1(-math.log(2.0) * (fov / F) ** 2)
    return _db(eta)


def ao_coupling_loss_db(elevation_deg, wavelength_nm, r0_zenith_m, field_of_view_urad, rx_aperture_m: float, strehl_ratio: float):
    """Field-of-view loss behind adaptive optics of Strehl ratio S: a diffraction-limited core plus a seeing halo.

    A partially corrected long-exposure spot is the sum of a diffraction-limited core holding a
    fraction S (the Strehl ratio, Maréchal's ``S ≈ exp(−σ_φ²)``) and a halo of the uncorrected seeing
    width holding 1 − S (Hardy, *Adaptive Optics for Astronomical Telescopes* (1998), §9.2; Roddier
    (ed.), *Adaptive Optics in Astronomy* (1999), ch. 1). With both taken as circular Gaussians the
    fraction inside the field of view Θ is ``S (1 − 2^−(Θ/F_DL)²) + (1 − S)(1 − 2^−(Θ/F)²)``, F_DL = 1.03 λ/D
    the Airy FWHM and F of :func:`seeing_fwhm_urad`. S = 1 is a perfect correction, S → 0 the seeing
    limit of :func:`turbulence_loss_db`.
    """
    s = float(_arr(strehl_ratio, "strehl_ratio", 0.0, 1.0))
    fov = _arr(field_of_view_urad, "field_of_view_urad", 0.0, lo_open=True)
    lam_m = float(_arr(wavelength_nm, "wavelength_nm", 0.0, lo_open=True)) * 1e-9
    d = float(_arr(rx_aperture_m, "rx_aperture_m", 0.0, lo_open=True))
    f_dl = 1.03 * lam_m / d * 1e6
    F = np.asarray(seeing_fwhm_urad(elevation_deg, wavelength_nm, r0_zenith_m, rx_aperture_m))
    core = -np.expm1(-math.log(2.0) * (fov / f_dl) ** 2)
    halo = -np.expm1(-math.log(2.0) * (fov / F) ** 2)
    return _db(s * core + (1.0 - s) * halo)


def config_turbulence_loss_db(cfg: MissionConfig, elevation_deg):
    """Mean field-of-view (seeing) loss for the configured receiver: :func:`turbulence_loss_db`, or
    :func:`ao_coupling_loss_db` when ``ReceiverConfig.ao_strehl_ratio`` is set; r0 of :func:`config_r0_zenith_m`."""
    rx = cfg.receiver
    r0 = config_r0_zenith_m(cfg)
    if rx.ao_strehl_ratio is not None:
        return ao_coupling_loss_db(elevation_deg, cfg.source.wavelength_nm, r0, rx.field_of_view_urad, rx.aperture_m, rx.ao_strehl_ratio)
    return turbulence_loss_db(elevation_deg, cfg.source.wavelength_nm, r0, rx.field_of_view_urad, rx.aperture_m)


def scintillation_index(elevation_deg, index_zenith):
    """Scintillation index σ_I² along the slant path: ``σ_I²(zenith) · X^(11/6)``, capped at 1.

    Weak-fluctuation (Rytov) scaling of the downlink plane-wave scintillation index with the
    zenith angle, σ_I² ∝ (sec ζ)^(11/6) (Andrews & Phillips 2005, §12.4); the cap stands in for
    saturation in strong turbulence near the horizon. The zenith value includes aperture averaging.
    """
    s0 = _arr(index_zenith, "index_zenith", 0.0)
    out = np.minimum(s0 * np.asarray(airmass(elevation_deg)) ** (11.0 / 6.0), 1.0)
    return float(out) if np.ndim(out) == 0 else out


def scintillation_fading(elevation_deg, index_zenith, rng: np.random.Generator) -> np.ndarray:
    """One unit-mean log-normal fading factor per sample: ``I = exp(χ)``, χ ~ N(−s²/2, s²),
    ``s² = ln(1 + σ_I²)`` with σ_I² from :func:`scintillation_index` (log-normal model of weak
    turbulence, Andrews & Phillips 2005, §5.2). Samples are independent (one per time step)."""
    return lognormal_fading(scintillation_index(elevation_deg, index_zenith), rng)


def lognormal_fading(scintillation_index, rng: np.random.Generator) -> np.ndarray:
    """Unit-mean log-normal fades ``exp(χ)``, χ ~ N(−s²/2, s²), ``s² = ln(1 + σ_I²)``, one per given index."""
    si = np.atleast_1d(np.asarray(scintillation_index, dtype=float))
    s2 = np.log1p(si)
    return np.exp(rng.standard_normal(si.shape) * np.sqrt(s2) - s2 / 2.0)


def receiver_optics_loss_db(optics_efficiency):
    """Loss of the receiving optics (telescope, decoder, fiber coupling): ``−10 log10 η`` [paper: η ≈ 16 %]."""
    return _db(_arr(optics_efficiency, "optics_efficiency", 0.0, 1.0, lo_open=True))


# --------------------------------------------------------------------------------------------
# background
# --------------------------------------------------------------------------------------------


def background_rate_hz(elevation_deg, azimuth_deg, bg: BackgroundConfig, light_domes=None):
    """Stray-light counts per second per detector with the telescope pointing at (elevation, azimuth).

    Two *calibrated* terms (the paper only says: night time, spectral/temporal filtering, and QBER
    "slightly higher in the second half of the orbit when the ground telescope points to Beijing
    that brings more city stray light"):

    * night sky: ``sky_rate_hz · X^0.5`` — the airglow brightens toward the horizon with the
      van Rhijn path-length factor while extinction dims it; the net observed brightening
      (≈ 0.3–1 mag from zenith to 10–20° elevation, e.g. Patat, A&A 400, 1183 (2003)) is
      represented by the square root of the air mass X (:func:`airmass`);
    * city light dome: ``city_rate_hz · exp(−(Δaz/city_width_deg)²) · exp(−el/city_scale_height_deg)``
      with Δaz the azimuth difference to ``city_azimuth_deg`` wrapped to [−180°, 180°].

    Rates are detected counts (after the receiver optics, filters and detector efficiency); the
    2 ns coincidence window is applied downstream. ``light_domes`` (a station's
    ``GroundStationConfig.light_domes``), if given, replaces the ``city_*`` dome by the sum of those
    domes (:func:`satqkd.sky.background.light_dome_rate_hz`).
    """
    el = _arr(elevation_deg, "elevation_deg", 0.0, 90.0)
    az = _arr(azimuth_deg, "azimuth_deg")
    sky = bg.sky_rate_hz * np.sqrt(np.asarray(airmass(el)))
    if light_domes is not None:
        from satqkd.sky.background import light_dome_rate_hz

        city = light_dome_rate_hz(el, az, light_domes)
    else:
        daz = (az - bg.city_azimuth_deg + 180.0) % 360.0 - 180.0
        city = bg.city_rate_hz * np.exp(-((daz / bg.city_width_deg) ** 2)) * np.exp(-el / bg.city_scale_height_deg)
    out = sky + city
    return float(out) if np.ndim(out) == 0 else out


def config_background_rate_hz(cfg: MissionConfig, geometry: PassGeometry) -> np.ndarray:
    """Background counts per detector along a pass: :func:`background_rate_hz` with the station's
    ``light_domes`` when set, plus moonlight if ``BackgroundConfig.moon``: Krisciunas & Schaefer's
    brightness toward the satellite (:func:`satqkd.sky.background.moonlight_nl`, Moon position and phase
    from DE421) × ``sky_rate_hz / DARK_SKY_NL`` (the calibrated sky rate stands for the dark sky)."""
    bg, st = cfg.background, cfg.station
    el = _arr(geometry.elevation_deg, "geometry.elevation_deg", 0.0, 90.0)
    out = np.atleast_1d(np.asarray(background_rate_hz(el, geometry.azimuth_deg, bg, st.light_domes), dtype=float))
    if bg.moon:
        from satqkd.sky import background as _bg

        m_el, m_az, phase = _bg.moon_look(st.latitude_deg, st.longitude_deg, st.altitude_m, geometry.start_utc, geometry.t_s)
        rho = _bg.angular_separation_deg(el, geometry.azimuth_deg, m_el, m_az)
        b = _bg.moonlight_nl(phase, rho, 90.0 - m_el, 90.0 - el, bg.moon_extinction_mag)
        out = out + bg.sky_rate_hz * np.asarray(b, dtype=float) / _bg.DARK_SKY_NL
    if bg.sunlight:
        out = out + config_sunlight_rate_hz(cfg, geometry)
    return out


def config_sunlight_rate_hz(cfg: MissionConfig, geometry: PassGeometry) -> np.ndarray:
    """Scattered sunlight (day sky and twilight) counts per detector toward the satellite along a pass:
    :func:`satqkd.sky.daylight.sky_spectral_radiance_w_m2_sr_m` at the source wavelength with the Sun's
    position from DE421, the station's (else the atmosphere's) visibility and the aerosol fields, turned
    into counts by :func:`satqkd.sky.daylight.sunlight_rate_hz` with ``ReceiverConfig.filter_width_nm``,
    ``field_of_view_urad``, ``aperture_m``, ``optics_efficiency`` and the detector efficiency."""
    from satqkd.sky import daylight as _day

    st, at, rx, bg = cfg.station, cfg.atmosphere, cfg.receiver, cfg.background
    lam = cfg.source.wavelength_nm * 1e-9
    el = _arr(geometry.elevation_deg, "geometry.elevation_deg", 0.0, 90.0)
    sun_el, sun_az = _day.sun_look(st.latitude_deg, st.longitude_deg, st.altitude_m, geometry.start_utc, geometry.t_s)
    vis = st.visibility_m if st.visibility_m is not None else at.visibility_m
    L = _day.sky_spectral_radiance_w_m2_sr_m(el, geometry.azimuth_deg, sun_el, sun_az, lam, st.altitude_m, vis,
                                             at.aerosol_scale_height_m, at.aerosol_model, bg.aerosol_albedo, bg.aerosol_asymmetry)
    return np.atleast_1d(np.asarray(_day.sunlight_rate_hz(L, lam, rx.filter_width_nm, rx.field_of_view_urad, rx.aperture_m,
                                                          rx.optics_efficiency, cfg.detectors.efficiency), dtype=float))


# --------------------------------------------------------------------------------------------
# budget and pass series
# --------------------------------------------------------------------------------------------


def _orbit_radius_m(cfg: MissionConfig) -> float:
    """Mean orbit radius: the circular orbit's altitude, or the TLE semi-major axis (Kepler's third law
    from the mean motion, columns 53–63 of line 2, rev/day)."""
    o = cfg.orbit
    if o.kind == "circular":
        return _EARTH_RADIUS_M + float(o.altitude_km) * 1e3
    n_rad_s = float(o.tle_line2[52:63]) * 2.0 * math.pi / 86400.0
    a = (_MU_EARTH_M3_S2 / n_rad_s**2) ** (1.0 / 3.0)
    return a - 6378.135e3 + _EARTH_RADIUS_M  # altitude over the WGS72 equator, put on the mean sphere


def _elevation_for_range_deg(orbit_radius_m: float, station_radius_m: float, range_m):
    """Spherical Earth: ``sin e = (r_s² − r_g² − L²)/(2 r_g L)`` (design.md §3, inverted), clipped to [0, 90]."""
    L = np.asarray(range_m, dtype=float)
    s = (orbit_radius_m**2 - station_radius_m**2 - L**2) / (2.0 * station_radius_m * L)
    return np.degrees(np.arcsin(np.clip(s, 0.0, 1.0)))


def los_rate_estimate_deg_s(range_m, orbit_radius_m: float):
    """Upper bound of the line-of-sight angular rate (°/s) of a circular orbit at slant range L.

    ``ω ≤ v/L`` with the orbital speed ``v = sqrt(μ/r_s)``: reached at culmination, where the
    velocity is wholly across the line of sight (0.68°/s at 645 km for Micius' ~495 km orbit, equal
    to what the preset pass shows; at 1200 km the bound 0.36°/s exceeds the pass's 0.21°/s).
    Used where no pass geometry is at hand (:func:`link_budget_db`); Earth rotation neglected.
    """
    L = _arr(range_m, "range_m", 0.0, lo_open=True)
    v = math.sqrt(_MU_EARTH_M3_S2 / float(orbit_radius_m))
    out = np.degrees(v / L)
    return float(out) if out.ndim == 0 else out


def link_budget_db(cfg: MissionConfig, range_m, elevation_deg=None, pointing_sigma_urad=None) -> dict:
    """Mean loss per cause (dB) at a given slant range and elevation, and their ``"total"``.

    Keys: ``diffraction``, ``pointing``, ``atmosphere``, ``turbulence``, ``receiver_optics``,
    ``total`` (transmitter output → in front of the detectors, the paper's Fig. 4 definition).
    Without ``elevation_deg`` the elevation follows from the range for the configured orbit
    (spherical Earth). ``pointing`` is the jitter-averaged loss (:func:`jitter_pointing_loss_db`) for a per-axis
    tracking error σ; if ``pointing_sigma_urad`` is None, σ is the steady-state residual of the
    configured tracking loop (:func:`satqkd.sky.apt.predicted_sigma_urad`) at the upper bound of
    the line-of-sight rate at this range (:func:`los_rate_estimate_deg_s`; slightly conservative).
    Turbulence is the mean seeing loss (no fading). ``TransmitterConfig.optics_efficiency`` is
    counted in ``receiver_optics`` (terminal optics).
    """
    from satqkd.sky import apt as _apt

    L = _arr(range_m, "range_m", 0.0, lo_open=True)
    if elevation_deg is None:
        elevation_deg = _elevation_for_range_deg(_orbit_radius_m(cfg), _EARTH_RADIUS_M + cfg.station.altitude_m, L)
    el = _arr(elevation_deg, "elevation_deg", 0.0, 90.0)
    tx, rx, at = cfg.transmitter, cfg.receiver, cfg.atmosphere
    if pointing_sigma_urad is None:
        rate = los_rate_estimate_deg_s(L, _orbit_radius_m(cfg))
        sigma = np.vectorize(lambda r: _apt.predicted_sigma_urad(cfg.apt, r))(rate)
    else:
        sigma = _arr(pointing_sigma_urad, "pointing_sigma_urad", 0.0)
    pointing = jitter_pointing_loss_db(sigma, tx.divergence_urad)
    if cfg.apt.point_ahead_residual_fraction > 0:
        from satqkd.sky.beacon import bias_jitter_factor

        # point-ahead 2v⊥/c at its upper bound v⊥ = v (culmination), the uncorrected share a bias
        bias = cfg.apt.point_ahead_residual_fraction * 2.0 * math.sqrt(_MU_EARTH_M3_S2 / _orbit_radius_m(cfg)) / 299792458.0 * 1e6
        pointing = pointing + _db(bias_jitter_factor(bias, sigma, tx.divergence_urad))
    out = {
        "diffraction": diffraction_loss_db(L, tx.divergence_urad, rx.aperture_m, tx.aperture_m),
        "pointing": pointing,
        "atmosphere": config_atmosphere_loss_db(cfg, el),
        "turbulence": config_turbulence_loss_db(cfg, el),
        "receiver_optics": receiver_optics_loss_db(rx.optics_efficiency * tx.optics_efficiency),
    }
    shape = np.broadcast(L, el, np.asarray(sigma)).shape
    if shape:
        out = {k: np.broadcast_to(np.asarray(v, dtype=float), shape).copy() for k, v in out.items()}
    else:
        out = {k: float(v) for k, v in out.items()}
    out["total"] = sum(out[k] for k in LOSS_CAUSES)
    return out


def config_point_ahead_loss_db(cfg: MissionConfig, geometry: PassGeometry, sigma_urad):
    """Extra pointing loss (dB) of the uncorrected share ``apt.point_ahead_residual_fraction`` of the
    point-ahead angle, a bias over a tracking jitter of ``sigma_urad`` per axis
    (:func:`satqkd.sky.beacon.bias_jitter_factor`); 0 when the point-ahead is corrected (the presets)."""
    if cfg.apt.point_ahead_residual_fraction <= 0:
        return np.zeros(np.shape(geometry.t_s))
    from satqkd.sky.beacon import bias_jitter_factor, point_ahead_angle_urad

    bias = cfg.apt.point_ahead_residual_fraction * point_ahead_angle_urad(*geometry.enu_state())
    return -10.0 * np.log10(bias_jitter_factor(bias, sigma_urad, cfg.transmitter.divergence_urad))


def link_series(cfg: MissionConfig, geometry: PassGeometry, rng: np.random.Generator) -> LinkSeries:
    """The optical link along a pass, on the geometry's time grid (→ :class:`~satqkd.records.LinkSeries`).

    * diffraction: :func:`diffraction_loss_db` at each range;
    * pointing: mean of ``exp(−2θ²/θ_w²)`` over the high-rate samples of the simulated two-stage
      tracking loop in each time step (:func:`satqkd.sky.apt.track`), times the bias factor
      (:func:`satqkd.sky.beacon.bias_jitter_factor`) of the uncorrected point-ahead share
      ``AptConfig.point_ahead_residual_fraction`` × 2v⊥/c if that is > 0 (0 in the presets);
    * atmosphere: :func:`config_atmosphere_loss_db` (calibrated or physical model); turbulence: :func:`turbulence_loss_db`, times a
      unit-mean log-normal fade per step if ``AtmosphereConfig.turbulence_fading``;
    * receiver optics: :func:`receiver_optics_loss_db` (× transmitter optics efficiency);
    * background: :func:`background_rate_hz` toward the satellite; dark counts from the detectors;
    * misalignment e_d and contrasts: :func:`satqkd.sky.polarization.misalignment`.

    Randomness: ``rng`` is split into independent child streams (tracking, polarization, fading),
    so switching fading on does not change the tracking or polarization draws. Same seed → same series.
    """
    from satqkd.sky import apt as _apt
    from satqkd.sky import polarization as _pol

    n = geometry.t_s.size
    if n == 0:
        raise ValueError("geometry is empty: no time steps in the QKD window")
    el = _arr(geometry.elevation_deg, "geometry.elevation_deg", 0.0, 90.0)
    tx, rx, at = cfg.transmitter, cfg.receiver, cfg.atmosphere
    rng_apt, rng_pol, rng_fade = rng.spawn(3)

    tracking = _apt.track(geometry, cfg.apt, rng_apt, tx.divergence_urad)
    e_d, c_comp, c_unc = _pol.misalignment(geometry, cfg.polarization, rng_pol)

    turb = np.asarray(config_turbulence_loss_db(cfg, el), dtype=float)
    if at.turbulence_fading:
        turb = turb - 10.0 * np.log10(lognormal_fading(config_scintillation_index(cfg, el), rng_fade))
    pointing = -10.0 * np.log10(tracking.pointing_transmittance)
    pointing = pointing + config_point_ahead_loss_db(cfg, geometry, tracking.rms_error_urad / math.sqrt(2.0))
    loss = {
        "diffraction": np.asarray(diffraction_loss_db(geometry.range_m, tx.divergence_urad, rx.aperture_m, tx.aperture_m), dtype=float),
        "pointing": pointing,
        "atmosphere": np.asarray(config_atmosphere_loss_db(cfg, el), dtype=float),
        "turbulence": turb,
        "receiver_optics": np.full(n, receiver_optics_loss_db(rx.optics_efficiency * tx.optics_efficiency)),
    }
    return LinkSeries(
        t_s=np.asarray(geometry.t_s, dtype=float).copy(),
        range_m=np.asarray(geometry.range_m, dtype=float).copy(),
        elevation_deg=el.copy(),
        loss_db={k: np.broadcast_to(v, (n,)).astype(float) for k, v in loss.items()},
        detector_efficiency=float(cfg.detectors.efficiency),
        background_rate_hz=config_background_rate_hz(cfg, geometry),
        dark_count_hz=float(cfg.detectors.dark_count_hz),
        misalignment=e_d,
        tracking_error_urad=tracking.rms_error_urad,
        contrast_compensated=c_comp,
        contrast_uncompensated=c_unc,
    )


# --------------------------------------------------------------------------------------------
# fiber reference (paper, Fig. 4 and text)
# --------------------------------------------------------------------------------------------


def fiber_transmittance(length_m, loss_db_per_km: float = 0.2):
    """Transmittance of a fiber: ``10^(−α L / 10)`` with α in dB/km [paper: 0.2 dB/km telecom fiber]."""
    L = _arr(length_m, "length_m", 0.0)
    a = _arr(loss_db_per_km, "loss_db_per_km", 0.0)
    out = 10.0 ** (-a * L / 1e3 / 10.0)
    return float(out) if np.ndim(out) == 0 else out


def fiber_comparison(
    range_m: float,
    cfg: MissionConfig,
    *,
    elevation_deg: float | None = None,
    geometry: PassGeometry | None = None,
    loss_db_per_km: float = 0.2,
    source_rate_hz: float = 10e9,
    sifting_ratio: float = 0.5,
) -> dict:
    """The paper's comparison with direct transmission through fiber of the same length (Fig. 4 and text).

    Satellite link efficiency: the mean budget of :func:`link_budget_db` at ``range_m`` and at the
    elevation given, else the elevation the ``geometry`` has at the sample closest in range, else
    the elevation of a circular orbit of the configured mean radius (spherical Earth).
    Fiber: :func:`fiber_transmittance`. "Years for one sifted bit": a perfect single-photon source
    at ``source_rate_hz`` through the fiber into ideal detectors (no dark counts), sifting
    ``sifting_ratio``: ``1 / (rate · T_fiber · sifting)`` seconds (paper: 10 GHz, 1200 km →
    about six million years; 240 dB → 1e-24 → 5e-15 bit/s → 6.3e6 years).

    Returns a dict with ``range_m``, ``elevation_deg``, ``satellite_efficiency``,
    ``fiber_efficiency``, ``ratio``, ``orders_of_magnitude``, ``fiber_sifted_rate_bps`` and
    ``years_per_sifted_bit``.
    """
    L = float(_arr(range_m, "range_m", 0.0, lo_open=True))
    _arr(source_rate_hz, "source_rate_hz", 0.0, lo_open=True)
    _arr(sifting_ratio, "sifting_ratio", 0.0, 1.0, lo_open=True)
    if elevation_deg is None:
        if geometry is not None and geometry.t_s.size:
            elevation_deg = float(geometry.elevation_deg[int(np.argmin(np.abs(geometry.range_m - L)))])
        else:
            elevation_deg = float(_elevation_for_range_deg(_orbit_radius_m(cfg), _EARTH_RADIUS_M + cfg.station.altitude_m, L))
    budget = link_budget_db(cfg, L, elevation_deg)
    sat = 10.0 ** (-budget["total"] / 10.0)
    fib = fiber_transmittance(L, loss_db_per_km)
    rate = source_rate_hz * fib * sifting_ratio
    orders = (loss_db_per_km * L / 1e3 - budget["total"]) / 10.0  # log10(sat/fiber), underflow-free
    return {
        "range_m": L,
        "elevation_deg": float(elevation_deg),
        "satellite_efficiency": float(sat),
        "fiber_efficiency": float(fib),
        "ratio": float(10.0 ** orders) if orders < 308 else math.inf,
        "orders_of_magnitude": float(orders),
        "fiber_sifted_rate_bps": float(rate),
        "years_per_sifted_bit": float(1.0 / rate / SECONDS_PER_YEAR) if rate > 0 else math.inf,
    }
