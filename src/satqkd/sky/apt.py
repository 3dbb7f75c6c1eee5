"""Acquisition, pointing and tracking (APT): the paper's two-stage tracking loop as a sampled control system.

The paper (Liao et al., Nature 549, 43 (2017), "Experimental challenges and solutions" and Fig. 2b):
a coarse stage — two-axis gimbal mirror and a wide-field CMOS camera at 40 Hz — and a fine stage —
a piezo fast steering mirror (FSM, range 1.6 mrad) and a narrow-field camera at 2 kHz — lock the
transmitter onto the ground beacon "with a tracking accuracy of ~1.2 µrad"; the key rate fluctuates
more near culmination, where the line of sight turns fastest.

Model, per axis, sampled at the fine camera rate (``AptConfig.fine_rate_hz``, step dt):

* **target**: the line-of-sight (LOS) direction, from the pass geometry. Its angular velocity
  ``ω = u × u̇`` (u the unit LOS vector) is split along two fixed-in-the-pass tracker axes
  perpendicular to u: X about the pass's mean rotation axis (along-track motion) and Y across it
  (:func:`los_axis_rates`); the per-axis target angles are the time integrals of those rates.
* **disturbance** d: platform micro-vibration, a first-order (Ornstein–Uhlenbeck) process of corner
  ``jitter_corner_hz`` and rms ``sqrt(jitter_urad² + (rate_jitter_urad_per_deg_s · |ω|)²)`` — the
  second term is vibration excited by the gimbal drive, growing with the slew rate (what makes
  the error largest near culmination). It moves the whole optical bench, cameras included.
* **coarse loop** (every N_c = fine_rate/coarse_rate samples): the coarse camera measures
  ``θ − g − d + n_c`` (n_c ~ N(0, coarse_noise_urad²)); a type-2 PI controller sets the gimbal
  *rate* ``ω_g = I + K_p m``, ``I ← I + K_i T m``, held over the frame (rate-commanded gimbal).
  Gains: ζ = 1/√2, ω_n = 2π·coarse_bandwidth_hz/2.058 (closed-loop −3 dB bandwidth of a type-2
  second-order loop), ``K_p = 2ζω_n``, ``K_i = ω_n²``. A type-2 loop follows a constant-rate
  target with zero steady-state error; a constant angular acceleration α leaves α/K_i.
* **fine loop** (every sample): the fine camera measures the residual ``e = θ − g − d − f`` plus
  n_f ~ N(0, fine_noise_urad²); the FSM integrates it, ``f ← clip(f + K_f (e + n_f), ±range/2)``,
  applied at the next sample (one-frame latency). ``K_f = 1 − exp(−2π f_bw / f_s)`` places the
  closed-loop pole at the configured bandwidth (type-1: zero error for a constant offset).

Residual: e = θ − g − f − d (what the beam misses by). :func:`track` returns its per-time-step
radial rms, the mean pointing transmittance ``exp(−2θ²/θ_w²)`` over each step's high-rate samples,
and a downsampled high-rate X/Y record (Fig. 2b). :func:`predicted_sigma_urad` gives the
steady-state per-axis rms of the same linear loop in closed form / by its impulse response.

Speed: one ``numba.njit(cache=True)`` kernel per axis; a 273 s pass at 2 kHz (5.5e5 samples) takes
a few tens of ms including the random draws.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from satqkd.config import AptConfig
from satqkd.records import PassGeometry

__all__ = [
    "DEFAULT_JITTER_CORNER_HZ",
    "DEFAULT_RATE_JITTER_URAD_PER_DEG_S",
    "TrackingResult",
    "los_axis_rates",
    "loop_gains",
    "predicted_sigma_urad",
    "track",
]

#: Corner frequency of the platform micro-vibration spectrum (calibrated; proposed field
#: ``AptConfig.jitter_corner_hz``). Reaction-wheel / cryocooler micro-vibration sits at 10–200 Hz.
DEFAULT_JITTER_CORNER_HZ = 50.0
#: Extra micro-vibration rms per °/s of line-of-sight slew rate, excited by the gimbal drive
#: (calibrated; proposed field ``AptConfig.rate_jitter_urad_per_deg_s``). With the other
#: defaults it gives ≈ 1.2 µrad radial rms over the preset pass, peaking near culmination.
DEFAULT_RATE_JITTER_URAD_PER_DEG_S = 2.0
_ZETA = 1.0 / math.sqrt(2.0)
_BW_OVER_WN = math.sqrt(2.0 + math.sqrt(5.0))  # −3 dB bandwidth / ω_n of a type-2 loop with ζ = 1/√2


@dataclass(frozen=True)
class TrackingResult:
    """Residual tracking error of the two-stage APT loop over a pass.

    Per geometry time step (arrays of the geometry's length): ``rms_error_urad`` (radial rms),
    ``rms_x_urad`` / ``rms_y_urad`` (per axis), ``pointing_transmittance`` (mean of
    exp(−2θ²/θ_w²) over the step's high-rate samples), ``los_rate_deg_s`` (line-of-sight angular
    rate). High-rate record (Fig. 2b), downsampled to at most ``max_hr_samples`` by taking every
    k-th sample: ``t_hr_s``, ``x_urad``, ``y_urad``. Whole-pass figures: ``rms_urad`` (radial),
    ``rms_axis_urad`` (X, Y), ``fsm_saturated_fraction`` (samples with the FSM at its range limit).
    """

    t_s: np.ndarray
    rms_error_urad: np.ndarray
    rms_x_urad: np.ndarray
    rms_y_urad: np.ndarray
    pointing_transmittance: np.ndarray
    los_rate_deg_s: np.ndarray
    t_hr_s: np.ndarray
    x_urad: np.ndarray
    y_urad: np.ndarray
    rms_urad: float
    rms_axis_urad: tuple[float, float]
    fsm_saturated_fraction: float

    @property
    def peak_index(self) -> int:
        """Time step with the largest rms error."""
        return int(np.argmax(self.rms_error_urad))

    def __repr__(self) -> str:
        i = self.peak_index
        return (
            f"TrackingResult({self.t_s.size} steps, rms {self.rms_urad:.2f} µrad radial "
            f"(X {self.rms_axis_urad[0]:.2f}, Y {self.rms_axis_urad[1]:.2f}), peak {self.rms_error_urad[i]:.2f} µrad "
            f"at +{self.t_s[i]:.0f} s, LOS rate ≤ {self.los_rate_deg_s.max():.2f}°/s)"
        )


# --------------------------------------------------------------------------------------------
# geometry → per-axis target motion
# --------------------------------------------------------------------------------------------


def los_axis_rates(geometry: PassGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angular rate of the line of sight (rad/s) split on the two tracker axes, and its magnitude.

    ``u̇ = (v − (v·u)u)/r`` and ``ω = u × u̇`` (perpendicular to u, |ω| = |u̇|). The tracker axes
    are fixed in the pass: b1 = the mean of ω over the pass projected perpendicular to u (X, the
    along-track rotation), b2 = u × b1 (Y). For a station in the orbital plane all the motion is
    on X. Returns ``(rate_x, rate_y, |ω|)``, each of the geometry's length.
    """
    enu, vel = geometry.enu_state()
    r = np.linalg.norm(enu, axis=1)
    if np.any(r <= 0):
        raise ValueError("geometry.range_m must be > 0")
    u = enu / r[:, None]
    udot = (vel - np.sum(vel * u, axis=1)[:, None] * u) / r[:, None]
    w = np.cross(u, udot)
    n = w.sum(axis=0)
    if np.linalg.norm(n) < 1e-15:  # no net rotation: pick any axis perpendicular to the mean LOS
        m = u.mean(axis=0)
        n = np.cross(m, [1.0, 0.0, 0.0] if abs(m[0]) < 0.9 else [0.0, 1.0, 0.0])
    n = n / np.linalg.norm(n)
    b1 = n[None, :] - np.sum(n[None, :] * u, axis=1)[:, None] * u
    nb = np.linalg.norm(b1, axis=1)
    b1 = np.where(nb[:, None] > 1e-12, b1 / np.maximum(nb, 1e-300)[:, None], 0.0)
    b2 = np.cross(u, b1)
    return np.sum(w * b1, axis=1), np.sum(w * b2, axis=1), np.linalg.norm(w, axis=1)


# --------------------------------------------------------------------------------------------
# the sampled loop
# --------------------------------------------------------------------------------------------


def loop_gains(apt: AptConfig) -> dict:
    """Discrete loop constants: fine step dt, samples per coarse frame N_c, coarse frame T, K_p, K_i, K_f.

    ``N_c = round(fine_rate/coarse_rate)`` (≥ 1), so the coarse frame is T = N_c·dt (25 ms for the
    preset). Raises ``ValueError`` if the coarse loop is not slower than its camera by 5×
    (coarse_bandwidth_hz ≤ coarse_rate_hz/5) or the fine bandwidth exceeds fine_rate_hz/2.
    """
    if apt.coarse_rate_hz > apt.fine_rate_hz:
        raise ValueError("apt.coarse_rate_hz must be ≤ apt.fine_rate_hz")
    if apt.coarse_bandwidth_hz > apt.coarse_rate_hz / 5.0:
        raise ValueError(f"apt.coarse_bandwidth_hz must be ≤ coarse_rate_hz/5 = {apt.coarse_rate_hz / 5.0:g} Hz")
    if apt.fine_bandwidth_hz > apt.fine_rate_hz / 2.0:
        raise ValueError(f"apt.fine_bandwidth_hz must be ≤ fine_rate_hz/2 = {apt.fine_rate_hz / 2.0:g} Hz")
    dt = 1.0 / apt.fine_rate_hz
    n_c = max(1, int(round(apt.fine_rate_hz / apt.coarse_rate_hz)))
    wn = 2.0 * math.pi * apt.coarse_bandwidth_hz / _BW_OVER_WN
    return {
        "dt": dt,
        "n_c": n_c,
        "T": n_c * dt,
        "kp": 2.0 * _ZETA * wn,
        "ki": wn * wn,
        "kf": -math.expm1(-2.0 * math.pi * apt.fine_bandwidth_hz * dt),
    }


@numba.njit(cache=True)
def _simulate(t, rates, rate_mag_deg, t0, dt, n_c, jitter, rate_jitter, a, sig_f, sig_c,
              kp, ki_t, kf, half_range, th_w, w_d, w_f, w_c, err, sums):  # pragma: no cover - numba
    """Both axes of the cascaded loop over ``err.shape[1]`` fine samples; returns the saturated-sample count.

    Per axis and fine sample k (time t0 + (k + ½)dt):

    * target θ_k: running integral (µrad) of the axis rate, linearly interpolated between geometry
      samples and held constant beyond the ends (like ``np.interp``);
    * micro-vibration d_k = a d_(k−1) + σ_k sqrt(1 − a²) w_d, σ_k = sqrt(jitter² + (rate_jitter·|ω|)²),
      d_0 = σ_0 w_d (stationary start);
    * gimbal g += rate·dt (θ and g are both the values at the end of sample k);
    * coarse frame (k mod N_c = 0): m = θ − g − d + σ_c w_c; I += K_i T m; gimbal rate = I + K_p m,
      used from the next sample on;
    * residual e = θ − g − d − f; FSM f += K_f (e + σ_f w_f), clipped to ±range/2, used from the
      next sample on (one-sample latency).

    The loop starts locked: g = θ_0 = 0 and the gimbal at the target's initial rate. ``sums`` (4, m)
    receives per geometry step (samples between the midpoints of neighbouring steps) the sample
    count, Σ e_x², Σ e_y² and Σ exp(−2(e_x² + e_y²)/θ_w²).
    """
    n = err.shape[1]
    m = t.size
    b = math.sqrt(max(1.0 - a * a, 0.0))
    sat = 0
    for ax in range(2):
        i = 0
        theta = 0.0
        d = 0.0
        g = 0.0
        integ = rates[ax, 0] * 1e6
        rate = integ
        f = 0.0
        jf = 0
        for k in range(n):
            tk = t0 + (k + 0.5) * dt
            while i < m - 2 and tk >= t[i + 1]:
                i += 1
            if m == 1 or tk <= t[0]:
                r, rm = rates[ax, 0], rate_mag_deg[0]
            elif tk >= t[m - 1]:
                r, rm = rates[ax, m - 1], rate_mag_deg[m - 1]
            else:
                x = (tk - t[i]) / (t[i + 1] - t[i])
                r = rates[ax, i] + x * (rates[ax, i + 1] - rates[ax, i])
                rm = rate_mag_deg[i] + x * (rate_mag_deg[i + 1] - rate_mag_deg[i])
            theta += r * dt * 1e6
            g += rate * dt
            sig = math.sqrt(jitter * jitter + (rate_jitter * rm) ** 2)
            d = sig * w_d[ax, k] if k == 0 else a * d + sig * b * w_d[ax, k]
            if k % n_c == 0:
                meas = theta - g - d + sig_c * w_c[ax, jf]
                jf += 1
                integ += ki_t * meas
                rate = integ + kp * meas
            e = theta - g - d - f
            err[ax, k] = e
            f += kf * (e + sig_f * w_f[ax, k])
            if f > half_range:
                f = half_range
                sat += 1
            elif f < -half_range:
                f = -half_range
                sat += 1
    j = 0
    c = 2.0 / (th_w * th_w)
    for k in range(n):
        tk = t0 + (k + 0.5) * dt
        while j < m - 1 and tk >= 0.5 * (t[j] + t[j + 1]):
            j += 1
        x2 = err[0, k] * err[0, k]
        y2 = err[1, k] * err[1, k]
        sums[0, j] += 1.0
        sums[1, j] += x2
        sums[2, j] += y2
        sums[3, j] += math.exp(-c * (x2 + y2))
    return sat


def _params(apt: AptConfig, jitter_corner_hz, rate_jitter_urad_per_deg_s) -> tuple[float, float]:
    fc = apt.jitter_corner_hz if jitter_corner_hz is None else jitter_corner_hz
    rj = (
        apt.rate_jitter_urad_per_deg_s
        if rate_jitter_urad_per_deg_s is None
        else rate_jitter_urad_per_deg_s
    )
    if not (fc > 0 and math.isfinite(fc)):
        raise ValueError("jitter_corner_hz must be > 0")
    if not (rj >= 0 and math.isfinite(rj)):
        raise ValueError("rate_jitter_urad_per_deg_s must be ≥ 0")
    return float(fc), float(rj)


def track(
    geometry: PassGeometry,
    apt: AptConfig,
    rng: np.random.Generator,
    divergence_urad: float,
    *,
    jitter_corner_hz: float | None = None,
    rate_jitter_urad_per_deg_s: float | None = None,
    max_hr_samples: int = 20_000,
) -> TrackingResult:
    """Simulate the two-stage tracking loop over a pass (see the module docstring for the model).

    Each geometry step i owns the high-rate samples with times in [midpoint(i−1, i), midpoint(i, i+1));
    the first/last steps extend half a step outward. The loop starts locked (gimbal on target at the
    target's rate). ``jitter_corner_hz`` and ``rate_jitter_urad_per_deg_s`` default to the fields of
    those names in ``apt`` if present, else to :data:`DEFAULT_JITTER_CORNER_HZ` and
    :data:`DEFAULT_RATE_JITTER_URAD_PER_DEG_S`. ``divergence_urad`` is the transmitter's full 1/e
    far-field angle (θ_w = divergence/√2, see :func:`satqkd.sky.link.beam_half_angle_urad`).
    """
    t = np.asarray(geometry.t_s, dtype=float)
    if t.size == 0:
        raise ValueError("geometry is empty: no time steps")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("geometry.t_s must be strictly increasing")
    if not (divergence_urad > 0):
        raise ValueError("divergence_urad must be > 0")
    if max_hr_samples < 1:
        raise ValueError("max_hr_samples must be ≥ 1")
    fc, rj = _params(apt, jitter_corner_hz, rate_jitter_urad_per_deg_s)
    gains = loop_gains(apt)
    dt, n_c = gains["dt"], gains["n_c"]

    rx, ry, rmag = los_axis_rates(geometry)
    h0 = t[1] - t[0] if t.size > 1 else 1.0
    h1 = t[-1] - t[-2] if t.size > 1 else 1.0
    t0, t1 = t[0] - h0 / 2.0, t[-1] + h1 / 2.0
    n = max(2, int(math.ceil((t1 - t0) / dt)))
    a = math.exp(-2.0 * math.pi * fc * dt)
    n_frames = (n + n_c - 1) // n_c
    w_d = rng.standard_normal((2, n))
    w_f = rng.standard_normal((2, n))
    w_c = rng.standard_normal((2, n_frames))
    err = np.empty((2, n))
    sums = np.zeros((4, t.size))
    sat = _simulate(
        t, np.vstack([rx, ry]), np.degrees(rmag), t0, dt, n_c, apt.jitter_urad, rj, a,
        apt.fine_noise_urad, apt.coarse_noise_urad, gains["kp"], gains["ki"] * gains["T"], gains["kf"],
        apt.fine_range_urad / 2.0, divergence_urad / math.sqrt(2.0),
        w_d, w_f, w_c, err, sums,
    )
    cnt = np.maximum(sums[0], 1.0)
    mx, my, eta = sums[1] / cnt, sums[2] / cnt, sums[3] / cnt
    tot_x, tot_y = float(sums[1].sum() / n), float(sums[2].sum() / n)
    k = max(1, int(math.ceil(n / max_hr_samples)))
    return TrackingResult(
        t_s=t.copy(),
        rms_error_urad=np.sqrt(mx + my),
        rms_x_urad=np.sqrt(mx),
        rms_y_urad=np.sqrt(my),
        pointing_transmittance=eta,
        los_rate_deg_s=np.degrees(rmag),
        t_hr_s=t0 + (np.arange(0, n, k) + 0.5) * dt,
        x_urad=err[0, ::k].copy(),
        y_urad=err[1, ::k].copy(),
        rms_urad=math.sqrt(tot_x + tot_y),
        rms_axis_urad=(math.sqrt(tot_x), math.sqrt(tot_y)),
        fsm_saturated_fraction=sat / (2.0 * n),
    )


# --------------------------------------------------------------------------------------------
# steady-state prediction of the same linear loop
# --------------------------------------------------------------------------------------------


def _ar1_through_fine_loop(a: float, p: float) -> float:
    """Σ h_k² of H(z) = (1 − z⁻¹)/((1 − p z⁻¹)(1 − a z⁻¹)): an AR(1) input (unit innovations)
    seen through the fine loop's error (sensitivity) function S(z) = (1 − z⁻¹)/(1 − p z⁻¹), p = 1 − K_f.

    Partial fractions h_k = A p^k + B a^k with A = (1 − p)/(a − p), B = (a − 1)/(a − p). For a ≈ p
    (double pole) h_0 = 1, h_k = p^(k−1)(p − k(1 − p)), and with s = p², q = 1 − p:
    Σ h² = 1 + p²/(1 − s) − 2pq/(1 − s)² + q²(1 + s)/(1 − s)³.
    """
    if abs(a - p) < 1e-5:
        q, s2 = 1.0 - p, p * p
        return 1.0 + s2 / (1.0 - s2) - 2.0 * p * q / (1.0 - s2) ** 2 + q * q * (1.0 + s2) / (1.0 - s2) ** 3
    A = (1.0 - p) / (a - p)
    B = (a - 1.0) / (a - p)
    return A * A / (1.0 - p * p) + 2.0 * A * B / (1.0 - p * a) + B * B / (1.0 - a * a)


@functools.lru_cache(maxsize=64)
def _coarse_noise_gain(n_c: int, dt: float, kp: float, ki_t: float, kf: float) -> float:
    """Residual variance per unit coarse-camera noise variance, from the loop's impulse response.

    One unit impulse of coarse noise in frame 0; the response e_k is cyclostationary over frames,
    so the frame-averaged variance for i.i.d. noise is ``Σ_k e_k² / N_c``.
    """
    settle = 40.0 / (kp / 2.0) + 40.0 * dt / kf  # 40 time constants of each loop (1/(ζω_n) and dt/K_f)
    n = int(max(4 * n_c, math.ceil(settle / dt)))
    n = ((n + n_c - 1) // n_c) * n_c
    zeros = np.zeros((2, n))
    wc = np.zeros((2, n // n_c + 1))
    wc[0, 0] = 1.0
    e = np.empty((2, n))
    t = np.array([0.0, n * dt])
    _simulate(t, np.zeros((2, 2)), np.zeros(2), 0.0, dt, n_c, 0.0, 0.0, 0.0, 0.0, 1.0,
              kp, ki_t, kf, 1e300, 1.0, zeros, zeros, wc, e, np.zeros((4, 2)))
    e = e[0]
    return float(np.sum(e * e) / n_c)


def predicted_sigma_urad(
    apt: AptConfig,
    los_rate_deg_s: float = 0.0,
    *,
    jitter_corner_hz: float | None = None,
    rate_jitter_urad_per_deg_s: float | None = None,
) -> float:
    """Steady-state rms residual per axis (µrad) of the loop simulated by :func:`track`, at a constant LOS rate.

    Sum of independent variances of the linear loop (FSM range not reached; dynamic lag of a
    type-2 + type-1 cascade is negligible):

    * fine-camera noise: the FSM's response to white noise, ``K_f/(2 − K_f) · σ_f²``;
    * micro-vibration (AR(1), coefficient a = exp(−2π f_c dt), rms σ_d² = jitter² + (c·rate)²)
      through the fine loop's sensitivity, ``σ_d²(1 − a²) Σ h_k²`` (:func:`_ar1_through_fine_loop`);
      the coarse loop, ≥ 25× slower, adds a negligible correction that is ignored;
    * coarse-camera noise: the impulse response of the cascaded loop (:func:`_coarse_noise_gain`).

    Used for the mean pointing loss when no pass is simulated (:func:`satqkd.sky.link.link_budget_db`).
    A radial rms is √2 times this.
    """
    if not (los_rate_deg_s >= 0 and math.isfinite(los_rate_deg_s)):
        raise ValueError("los_rate_deg_s must be ≥ 0")
    fc, rj = _params(apt, jitter_corner_hz, rate_jitter_urad_per_deg_s)
    g = loop_gains(apt)
    kf, dt = g["kf"], g["dt"]
    var_nf = kf / (2.0 - kf) * apt.fine_noise_urad**2
    a = math.exp(-2.0 * math.pi * fc * dt)
    sd2 = apt.jitter_urad**2 + (rj * los_rate_deg_s) ** 2
    var_d = sd2 * (1.0 - a * a) * _ar1_through_fine_loop(a, 1.0 - kf)
    var_c = apt.coarse_noise_urad**2 * _coarse_noise_gain(g["n_c"], dt, g["kp"], g["ki"] * g["T"], kf)
    return math.sqrt(var_nf + var_d + var_c)
