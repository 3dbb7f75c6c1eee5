"""Polarization reference frames of satellite and ground, and their compensation by a motorised half-wave plate.

The paper (Liao et al., Nature 549, 43 (2017), Fig. 2c): "the relative motion of the satellite and
the ground station induces a time-dependent rotation of the photon polarization seen by the
receiver ... the polarization contrast ratio would drop from 150:1 to 0 ... Using a motorized HWP
for dynamical polarization compensation during the satellite passage, the average polarization
contrast ratio increases to 280:1."

Geometry (Bonato et al., Opt. Express 14, 10050 (2006), who derive the same kinematic frame
rotation for satellite links):

* **satellite frame**: the transmitter's H axis is fixed to the body, which is attitude-steered to
  point at the station; we take the body's x axis along the satellite velocity relative to the
  station, projected perpendicular to the line of sight (LOS).
* **ground frame**: the decoder's H axis turns with the alt-az mount. Seen on the sky (the plane
  perpendicular to the LOS) an instrument riding on the tube (Cassegrain focus) keeps a fixed
  angle to the vertical circle through the satellite; at a Nasmyth port the beam is folded along
  the elevation axis and the frame turns by the elevation angle as well; at a Coudé port by the
  elevation and the azimuth.
* **frame rotation** δ(t): angle of the satellite axis minus the angle of the ground axis, both
  measured in the plane perpendicular to the LOS from the direction of increasing elevation toward
  increasing azimuth. Linear polarization is defined modulo 180°, so δ is unwrapped with period 180°.

Contrast model: a rotation Δ between the frames sends a photon into the wrong detector of its
basis with probability ``e = e0 + (1 − 2e0) sin²Δ`` where ``e0 = 1/(1 + C0)`` is the error of the
optics with aligned frames (C0 = intrinsic contrast); the contrast is ``C = (1 − e)/e`` and the
misalignment e_d of the decoy-state model is e (Ma et al., PRA 72, 012326 (2005): ``e_d ≈ 1/(1+C)``).

Example::

    >>> import numpy as np, satqkd
    >>> from satqkd.sky.orbit import find_pass                       # doctest: +SKIP
    >>> cfg = satqkd.load_preset("micius-2016-12-19")                 # doctest: +SKIP
    >>> e_d, c_hwp, c_none = misalignment(find_pass(cfg), cfg.polarization, np.random.default_rng(1))  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from satqkd.config import PolarizationConfig
from satqkd.records import PassGeometry

__all__ = [
    "DEFAULT_HWP_ERROR_CORRELATION_S",
    "frame_rotation_deg",
    "error_probability",
    "contrast",
    "hwp_error_series_deg",
    "misalignment",
    "mean_compensated_contrast",
]

#: Correlation time of the error of the predicted rotation angle (slowly varying: orbit prediction
#: and model errors of the birefringent elements drift over tens of seconds). Proposed field
#: ``PolarizationConfig.hwp_error_correlation_s``.
DEFAULT_HWP_ERROR_CORRELATION_S = 20.0


def _look_vectors(geometry: PassGeometry):
    if geometry.enu_velocity_m_s is None and np.size(geometry.t_s) < 2:
        raise ValueError("geometry needs enu_velocity_m_s or at least two time steps")
    return geometry.enu_state()


def frame_rotation_deg(geometry: PassGeometry, nasmyth: bool = True, coude: bool = False) -> np.ndarray:
    """Relative angle δ(t) (degrees) of the satellite and ground polarization references, per time step.

    With u the unit LOS, e/a the elevation/azimuth, ``ê_el = (−sin e sin a, −sin e cos a, cos e)``
    and ``ê_az = (cos a, −sin a, 0)`` (ENU; the sky directions of increasing elevation and azimuth):

    * satellite axis ``x_s ∝ v − (v·u)u``, angle ``ψ_s = atan2(x_s·ê_az, x_s·ê_el)``;
    * ground axis ``ψ_g = 0`` (Cassegrain), ``e`` (``nasmyth``), ``e + a`` (``coude``, overrides);
    * ``δ = ψ_s − ψ_g``, unwrapped with period 180° (polarization is invariant under a half turn).

    Time steps where the velocity is (numerically) along the LOS leave x_s undefined; they take the
    angle of the nearest defined step. Velocity is relative to the station (Earth-fixed ENU),
    as ``PassGeometry`` carries it; the ~0.5 km/s difference to the inertial velocity shifts
    δ by ≲ 4° in a nearly constant way, which the compensation model absorbs.
    """
    enu, vel = _look_vectors(geometry)
    r = np.linalg.norm(enu, axis=1)
    if np.any(r <= 0):
        raise ValueError("geometry.range_m must be > 0")
    u = enu / r[:, None]
    el = np.arcsin(np.clip(u[:, 2], -1.0, 1.0))
    az = np.arctan2(u[:, 0], u[:, 1])
    e_el = np.stack([-np.sin(el) * np.sin(az), -np.sin(el) * np.cos(az), np.cos(el)], axis=1)
    e_az = np.stack([np.cos(az), -np.sin(az), np.zeros_like(az)], axis=1)
    xs = vel - np.sum(vel * u, axis=1)[:, None] * u
    norm = np.linalg.norm(xs, axis=1)
    ok = norm > 1e-9 * np.maximum(np.linalg.norm(vel, axis=1), 1e-300)
    psi_s = np.arctan2(np.sum(xs * e_az, axis=1), np.sum(xs * e_el, axis=1))
    if not np.any(ok):
        psi_s = np.zeros_like(psi_s)
    elif not np.all(ok):
        idx = np.flatnonzero(ok)
        nearest = idx[np.clip(np.searchsorted(idx, np.arange(ok.size)), 0, idx.size - 1)]
        psi_s = psi_s[nearest]
    if coude:
        psi_g = el + az
    elif nasmyth:
        psi_g = el
    else:
        psi_g = np.zeros_like(el)
    return np.degrees(np.unwrap(psi_s - psi_g, period=math.pi))


def error_probability(angle_deg, intrinsic_contrast: float):
    """Wrong-detector probability for a frame rotation Δ: ``e = e0 + (1 − 2e0) sin²Δ``, e0 = 1/(1 + C0)."""
    if not (intrinsic_contrast > 0):
        raise ValueError("intrinsic_contrast must be > 0")
    e0 = 1.0 / (1.0 + intrinsic_contrast)
    return e0 + (1.0 - 2.0 * e0) * np.sin(np.radians(np.asarray(angle_deg, dtype=float))) ** 2


def contrast(error_probability_):
    """Polarization contrast ``C = (1 − e)/e`` (∞ for e = 0)."""
    e = np.asarray(error_probability_, dtype=float)
    with np.errstate(divide="ignore"):
        return (1.0 - e) / e


def hwp_error_series_deg(t_s, rms_deg: float, correlation_s: float, rng: np.random.Generator) -> np.ndarray:
    """Slowly varying error of the predicted rotation angle: a stationary Ornstein–Uhlenbeck process
    sampled at ``t_s`` (rms ``rms_deg``, correlation time ``correlation_s``; x_0 ~ N(0, rms²),
    x_(i+1) = ρ x_i + sqrt(1 − ρ²) rms w, ρ = exp(−Δt/τ)), exact for any, also uneven, sampling."""
    t = np.asarray(t_s, dtype=float)
    if rms_deg < 0 or not math.isfinite(rms_deg):
        raise ValueError("rms_deg must be ≥ 0")
    if not (correlation_s > 0):
        raise ValueError("correlation_s must be > 0")
    w = rng.standard_normal(t.size)
    out = np.empty(t.size)
    if t.size == 0:
        return out
    rho = np.exp(-np.diff(t) / correlation_s)
    x = rms_deg * w[0]
    out[0] = x
    for i in range(1, t.size):  # a few hundred steps per pass
        x = rho[i - 1] * x + math.sqrt(1.0 - rho[i - 1] ** 2) * rms_deg * w[i]
        out[i] = x
    return out


def misalignment(
    geometry: PassGeometry,
    pol: PolarizationConfig,
    rng: np.random.Generator,
    *,
    error_correlation_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per time step: ``(e_d, contrast_compensated, contrast_uncompensated)``.

    * uncompensated: the HWP is set once at the pass start, leaving ``initial_offset_deg``;
      Δ(t) = δ(t) − δ(t0) + offset;
    * compensated: the motorised HWP follows the predicted rotation δ(t) + ε(t), ε an
      Ornstein–Uhlenbeck error of rms ``hwp_error_deg`` (:func:`hwp_error_series_deg`); the plate
      angle is (δ + ε)/2 rounded to ``hwp_step_deg`` (a HWP at φ rotates the polarization frame by
      2φ, up to a relabelling of the diagonal states), so Δ(t) = δ − 2·round((δ + ε)/2, step).
    * e_d is the compensated error if ``pol.compensation == "hwp"``, else the uncompensated one.

    Contrasts use :func:`error_probability` and :func:`contrast`. ``error_correlation_s`` defaults
    to ``pol.hwp_error_correlation_s`` if that field exists, else :data:`DEFAULT_HWP_ERROR_CORRELATION_S`.
    """
    t = np.asarray(geometry.t_s, dtype=float)
    if t.size == 0:
        raise ValueError("geometry is empty: no time steps")
    tau = error_correlation_s
    if tau is None:
        tau = pol.hwp_error_correlation_s
    delta = frame_rotation_deg(geometry, nasmyth=pol.nasmyth)
    e_unc = error_probability(delta - delta[0] + pol.initial_offset_deg, pol.intrinsic_contrast)
    eps = hwp_error_series_deg(t, pol.hwp_error_deg, tau, rng)
    plate = np.round((delta + eps) / 2.0 / pol.hwp_step_deg) * pol.hwp_step_deg
    e_comp = error_probability(delta - 2.0 * plate, pol.intrinsic_contrast)
    e_d = e_comp if pol.compensation == "hwp" else e_unc
    return e_d.astype(float), contrast(e_comp), contrast(e_unc)


def mean_compensated_contrast(intrinsic_contrast: float, hwp_error_deg: float, hwp_step_deg: float = 0.0) -> float:
    """Expected time-average of the compensated contrast for a Gaussian angle error (for calibration).

    E[C] with Δ = 2·(rounding error of the plate) + ε, ε ~ N(0, hwp_error_deg²); the rounding error
    of the plate is uniform over ±step/2 (so ±step on the polarization). Gauss–Hermite quadrature
    (60 nodes) × 21-point midpoint rule over the rounding error. A single pass averages only
    ~duration/correlation-time independent values of ε, so one pass's mean scatters around this.
    """
    if hwp_error_deg < 0 or hwp_step_deg < 0:
        raise ValueError("hwp_error_deg and hwp_step_deg must be ≥ 0")
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    q = (np.arange(21) + 0.5) / 21 - 0.5
    ang = hwp_error_deg * x[:, None] + 2.0 * hwp_step_deg * q[None, :]
    c = contrast(error_probability(ang, intrinsic_contrast))
    return float(np.sum(w[:, None] * c) / q.size)
