"""The satellite's 532 nm beacon: its own link budget, detection probability, point-ahead and sync residual.

The paper (Liao et al., Nature 549, 43 (2017)): the satellite sends a 532 nm beacon of 1.25 mrad divergence,
0.9 ns pulses at ~10 kHz, used for tracking (CAM3) and, split off by a dichroic mirror, detected by a
single-photon detector for time synchronisation (0.529 ns jitter). The pass simulation
(:mod:`satqkd.quantum.sampler`) tags each beacon pulse with a *constant* probability
``TimingConfig.beacon_detection_probability``; this module gives that probability from the beacon's own link
budget, so that synchronisation can fail at low elevation or in haze, and the two pointing/timing terms of
the beacon the budget does not yet carry:

* :func:`beacon_transmittance` — Gaussian-beam capture (:func:`satqkd.sky.link.diffraction_loss_db` at the
  beacon's divergence), clear-sky extinction at 532 nm (:func:`satqkd.sky.atmosphere.transmittance`:
  Rayleigh + aerosol from the visibility, air mass at the refracted elevation) and the receiver's optics;
* :func:`beacon_photons_per_pulse`, :func:`beacon_detection_probability` — mean photo-electrons per pulse
  at the timing detector (average power / (rate · hν) × transmittance × split × attenuation × efficiency)
  and the probability of at least one count, ``1 − e^{−n}`` (Poisson light, a non-photon-number-resolving
  detector; the dark count in the 0.9 ns gate is negligible);
* :func:`point_ahead_angle_urad` — the aberration angle ``2 v⊥ / c`` between the apparent direction of the
  ground station and where the downlink beam must be sent (Bradley aberration, both ways: e.g. Kaushal &
  Kaddoum, IEEE Commun. Surv. Tutor. 19, 57 (2017), §IV); ≈ 50 µrad for Micius near culmination, five times
  the 10 µrad beam, so it must be applied open loop from the orbit; :func:`point_ahead_loss_db` is the loss
  of an uncorrected fraction of it;
* :func:`sync_residual_jitter_ns` — the residual of a straight-line clock fit to N beacon tags of jitter σ
  over a window, averaged over the window: ``σ √(2/N)`` (variance ``σ²(1/N + (t − t̄)²/Σ(t_i − t̄)²)``
  of a least-squares line, averaged over uniformly spaced points). It is what a detection inherits from
  the beacon when the clock is fitted, as opposed to a per-tag sync jitter.

Not in the paper, so inputs with documented defaults (assumed): the beacon's average power, the share of it
sent to the timing detector and the attenuation in front of that detector (a single-photon detector would be
saturated by the ~2 × 10⁵ photons per pulse a 1 m telescope collects at 1200 km from a 10 mW beacon).

Example (Micius at 1200 km, 19.5° elevation, 23 km visibility)::

    >>> from satqkd.sky import beacon as B
    >>> eta = B.beacon_transmittance(1200e3, 19.5, 890.0, 23e3)
    >>> round(-10 * __import__("math").log10(eta), 1)
    70.6
"""

from __future__ import annotations

import math

import numpy as np

from satqkd.sky import atmosphere as _atm

__all__ = [
    "BEACON_WAVELENGTH_M",
    "BEACON_DIVERGENCE_URAD",
    "beacon_transmittance",
    "beacon_photons_per_pulse",
    "beacon_detection_probability",
    "point_ahead_angle_urad",
    "point_ahead_loss_db",
    "bias_jitter_factor",
    "sync_residual_jitter_ns",
    "config_beacon_detection_probability",
]

#: [paper] the satellite's beacon: 532 nm
BEACON_WAVELENGTH_M = 532e-9
#: [paper] the satellite's beacon divergence 1.25 mrad (read, like the quantum beam, as the full angle at 1/e)
BEACON_DIVERGENCE_URAD = 1250.0
_H = 6.62607015e-34
_C = 299792458.0


def _out(x):
    return float(x) if np.ndim(x) == 0 else x


def beacon_transmittance(range_m, elevation_deg, altitude_m: float, visibility_m: float, *,
                         divergence_urad: float = BEACON_DIVERGENCE_URAD, rx_aperture_m: float = 1.0,
                         tx_aperture_m: float = 0.05, rx_optics_efficiency: float = 0.5,
                         wavelength_m: float = BEACON_WAVELENGTH_M, aerosol_scale_height_m: float = 1200.0,
                         aerosol_model: str = "kim"):
    """Beacon transmittance from the satellite's beacon output to the ground's dichroic split (0–1).

    Diffraction (Gaussian beam, full 1/e angle ``divergence_urad``) into ``rx_aperture_m``, the physical
    clear-sky extinction at ``wavelength_m`` from ``visibility_m`` and the station altitude, and the
    receiving optics ``rx_optics_efficiency`` (assumed 0.5: no fibre coupling on the beacon path).
    ``tx_aperture_m`` only sets the near-field waist (the beacon's own small collimator).
    """
    from satqkd.sky.link import diffraction_loss_db

    if not 0.0 < rx_optics_efficiency <= 1.0:
        raise ValueError("rx_optics_efficiency must lie in (0, 1]")
    diff = np.asarray(diffraction_loss_db(range_m, divergence_urad, rx_aperture_m, tx_aperture_m))
    atm = np.asarray(_atm.transmittance(elevation_deg, wavelength_m, altitude_m, visibility_m, aerosol_scale_height_m,
                                        0.0, aerosol_model))
    return _out(10.0 ** (-diff / 10.0) * atm * rx_optics_efficiency)


def beacon_photons_per_pulse(transmittance, *, average_power_w: float = 0.01, rep_rate_hz: float = 10e3,
                             wavelength_m: float = BEACON_WAVELENGTH_M, timing_split: float = 0.5,
                             attenuation_db: float = 50.0, detector_efficiency: float = 0.5):
    """Mean photo-electrons per beacon pulse at the timing detector.

    ``P / (f_rep · h c/λ) · η · split · 10^(−A/10) · η_det``: photons per pulse from the average power
    (assumed 10 mW; [paper] ~10 kHz), the transmittance of :func:`beacon_transmittance`, the share sent to
    timing (the rest to CAM3; assumed ½), an attenuator of ``attenuation_db`` (assumed 50 dB, so the 2016-12-19
    pass gives ≈ 3.4 photo-electrons per pulse at 645 km and ≈ 0.6 at 1200 km, detection probabilities
    0.97 and 0.44 about the preset's constant 0.5, instead of the ~10⁵ that would saturate the detector)
    and the detector efficiency.
    """
    for name, v in (("average_power_w", average_power_w), ("rep_rate_hz", rep_rate_hz)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0")
    for name, v in (("timing_split", timing_split), ("detector_efficiency", detector_efficiency)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1]")
    n_tx = average_power_w / rep_rate_hz / (_H * _C / wavelength_m)
    eta = np.asarray(transmittance, dtype=float)
    return _out(n_tx * eta * timing_split * 10.0 ** (-attenuation_db / 10.0) * detector_efficiency)


def beacon_detection_probability(mean_photoelectrons):
    """Probability that a beacon pulse gives a count: ``1 − exp(−n)`` (Poisson, threshold detector)."""
    n = np.asarray(mean_photoelectrons, dtype=float)
    if np.any(n < 0) or np.any(~np.isfinite(n)):
        raise ValueError("mean_photoelectrons must be finite and >= 0")
    return _out(-np.expm1(-n))


def point_ahead_angle_urad(enu_m, enu_velocity_m_s):
    """Point-ahead angle ``2 v⊥ / c`` (µrad) per sample, v⊥ the satellite velocity across the line of sight.

    ``enu_m``, ``enu_velocity_m_s``: shape (n, 3) position and velocity of the satellite in the station's
    East-North-Up frame (:meth:`satqkd.records.PassGeometry.enu_state`). The light leaves the satellite
    toward where the station will be after one light time, and the station sees the satellite where it was
    one light time ago: the two aberrations add (first order in v/c).
    """
    r = np.atleast_2d(np.asarray(enu_m, dtype=float))
    v = np.atleast_2d(np.asarray(enu_velocity_m_s, dtype=float))
    u = r / np.linalg.norm(r, axis=1, keepdims=True)
    v_perp = v - np.sum(v * u, axis=1, keepdims=True) * u
    return 2.0 * np.linalg.norm(v_perp, axis=1) / _C * 1e6


def point_ahead_loss_db(point_ahead_urad, divergence_urad, uncorrected_fraction: float):
    """Loss of the quantum beam when a fraction of the point-ahead angle is left uncorrected:
    :func:`satqkd.sky.link.pointing_loss_db` of ``fraction × angle`` (a bias, not a jitter)."""
    from satqkd.sky.link import pointing_loss_db

    if not 0.0 <= uncorrected_fraction <= 1.0:
        raise ValueError("uncorrected_fraction must lie in [0, 1]")
    return pointing_loss_db(np.asarray(point_ahead_urad, dtype=float) * uncorrected_fraction, divergence_urad)


def bias_jitter_factor(bias_urad, sigma_urad, divergence_urad):
    """Extra transmittance factor of a pointing bias b on top of a Gaussian jitter σ per axis.

    Averaging ``exp(−2|b + e|²/θ_w²)`` over e ~ N(0, σ² I₂) gives
    ``1/(1 + 4σ²/θ_w²) · exp(−2b²/(θ_w² + 4σ²))`` (the jitter-averaged Gaussian beam of
    :func:`satqkd.sky.link.jitter_pointing_loss_db`, displaced by b); the first factor is the jitter's own, so
    the bias multiplies it by ``exp(−2b²/(θ_w² + 4σ²))``. θ_w = divergence/√2. 1 when b = 0.
    """
    b = np.asarray(bias_urad, dtype=float)
    s = np.asarray(sigma_urad, dtype=float)
    tw2 = (float(divergence_urad) / math.sqrt(2.0)) ** 2
    return _out(np.exp(-2.0 * b**2 / (tw2 + 4.0 * s**2)))


def sync_residual_jitter_ns(beacon_jitter_ns: float, beacon_rate_hz: float, detection_probability, fit_window_s: float):
    """RMS residual (ns) of a straight-line clock fit to the beacon tags of one window, averaged over it.

    ``σ √(2/N)`` with ``N = rate × p_det × window`` tags of jitter σ (module docstring); infinite when no
    tag is expected. The paper's 0.529 ns is the beacon tags' own jitter σ: a 1 s fit over ~5,000 tags leaves
    ≈ 0.011 ns, so the clock fit itself adds little to the 2 ns gate.
    """
    if beacon_jitter_ns < 0 or beacon_rate_hz <= 0 or fit_window_s <= 0:
        raise ValueError("beacon_jitter_ns must be >= 0, beacon_rate_hz and fit_window_s > 0")
    n = beacon_rate_hz * np.asarray(detection_probability, dtype=float) * fit_window_s
    with np.errstate(divide="ignore"):
        out = np.where(n > 0, beacon_jitter_ns * np.sqrt(2.0 / np.where(n > 0, n, 1.0)), np.inf)
    return _out(out)


def config_beacon_detection_probability(cfg, range_m, elevation_deg):
    """Per-pulse beacon detection probability along a pass from the mission configuration.

    ``timing.beacon_detection_model = "constant"``: ``timing.beacon_detection_probability`` everywhere;
    ``"link_budget"``: :func:`beacon_transmittance` (the station's visibility, else the atmosphere's; the
    receiver aperture; the transmitter aperture as the beacon collimator's waist) →
    :func:`beacon_photons_per_pulse` (``timing.beacon_power_w``, ``beacon_rate_hz``, ``beacon_timing_split``,
    ``beacon_attenuation_db``, ``beacon_detector_efficiency``) → :func:`beacon_detection_probability`.
    """
    tim = cfg.timing
    r = np.asarray(range_m, dtype=float)
    if tim.beacon_detection_model == "constant":
        return np.full(r.shape, float(tim.beacon_detection_probability))
    at, st = cfg.atmosphere, cfg.station
    vis = st.visibility_m if st.visibility_m is not None else at.visibility_m
    eta = beacon_transmittance(r, np.asarray(elevation_deg, dtype=float), st.altitude_m, vis,
                               rx_aperture_m=cfg.receiver.aperture_m, aerosol_scale_height_m=at.aerosol_scale_height_m,
                               aerosol_model=at.aerosol_model)
    n = beacon_photons_per_pulse(eta, average_power_w=tim.beacon_power_w, rep_rate_hz=tim.beacon_rate_hz,
                                 timing_split=tim.beacon_timing_split, attenuation_db=tim.beacon_attenuation_db,
                                 detector_efficiency=tim.beacon_detector_efficiency)
    return np.atleast_1d(beacon_detection_probability(n)).reshape(r.shape)
