"""How much work and memory a pass simulation will take, predicted from the configuration before any
of it is done, and refused beyond documented limits (``docs/limits.md``).

Some values the configuration allows exhaust a machine: μ = 50 photons per pulse (~2e8 detections),
a sky background of 1e6 counts/s per detector (~1e9 time tags), a geometry step of 1 µs (~3e8 steps).
:func:`check_work` predicts, in well under a second,

1. from the configuration alone: an upper bound of the QKD window (an overhead pass above the lower
   QKD elevation, or the range limit), hence the geometry steps (``passes.time_step_s``), the
   tracking-loop samples (``apt.fine_rate_hz``) and the photon slices (``simulation.slice_s``);
2. then from the first pass the rules find (:func:`satqkd.sky.orbit.find_pass`, ~0.1 s) and the mean
   link budget along it (:func:`satqkd.sky.link.link_budget_db` without pointing loss, an upper bound
   of the transmittance): the expected signal detections ``R Σ_i p_i (1 − exp(−μ_i (1+δ) η η_det))``
   per second, the background and dark tags ``4 (b(el, az) + dark)`` per second and the beacon tags;

and turns them into bytes with per-item costs calibrated on the default preset (4.4e6 tags, 0.54 GB
peak RSS measured; 0.75 GB predicted). Past :data:`MAX_GEOMETRY_STEPS`, :data:`MAX_TRACKING_SAMPLES`,
:data:`MAX_SLICES` or the memory limit (default :data:`DEFAULT_MAX_MEMORY_GB`, environment variable
``SATQKD_MAX_MEMORY_GB``) it raises :class:`WorkLimitError` (a :class:`~satqkd.config.ConfigError`)
whose message holds the estimate and names the fields that drive it.

Example::

    >>> import satqkd
    >>> from satqkd.limits import check_work
    >>> est = check_work(satqkd.load_preset("micius-2016-12-19"))    # doctest: +SKIP
    >>> est.signal_detections, est.memory_bytes / 1e9                # doctest: +SKIP
    (3.9e6, 0.75)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .config import ConfigError, GroundStationConfig, MissionConfig

__all__ = [
    "WorkEstimate",
    "WorkLimitError",
    "estimate_work",
    "check_work",
    "max_memory_bytes",
    "DEFAULT_MAX_MEMORY_GB",
    "MAX_GEOMETRY_STEPS",
    "MAX_TRACKING_SAMPLES",
    "MAX_SLICES",
]

#: memory limit of one pass simulation unless ``SATQKD_MAX_MEMORY_GB`` says otherwise
DEFAULT_MAX_MEMORY_GB = 4.0
#: geometry (and link) time steps of one QKD window: ``window / passes.time_step_s``
MAX_GEOMETRY_STEPS = 1_000_000
#: high-rate samples of the tracking loop: ``window · apt.fine_rate_hz``
MAX_TRACKING_SAMPLES = 50_000_000
#: photon slices of one pass: ``window · rep_rate / round(slice_s · rep_rate)`` (the sampler's own limit)
MAX_SLICES = 10_000_000

# per-item memory (bytes), calibrated on the default preset and rounded up
_BASE_BYTES = 250e6  # interpreter, NumPy, numba, skyfield and the ephemeris
_BYTES_PER_EVENT = 80.0  # a detection or tag: Bob's tag, Alice's record, timing and sifting arrays
_BYTES_PER_STEP = 1000.0  # geometry, link series, polarization and their temporaries
_BYTES_PER_TRACKING_SAMPLE = 64.0  # 2-axis noise, error and state arrays of the loop
_BYTES_PER_SLICE = 200.0  # per-slice link, photon numbers and emitted counts

_EARTH_RADIUS_M = 6371.0e3
_MU_EARTH_M3_S2 = 3.986004418e14
_EARTH_RATE_RAD_S = 7.2921159e-5
_DETECTORS = 4


class WorkLimitError(ConfigError):
    """The configuration asks for more work or memory than the documented limits (``docs/limits.md``)."""


def max_memory_bytes() -> float:
    """The memory limit: ``SATQKD_MAX_MEMORY_GB`` (GB = 1e9 bytes) if set, else :data:`DEFAULT_MAX_MEMORY_GB`."""
    raw = os.environ.get("SATQKD_MAX_MEMORY_GB")
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_MEMORY_GB * 1e9
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not (math.isfinite(gb) and gb > 0):
        raise ConfigError(f"environment variable SATQKD_MAX_MEMORY_GB must be a positive number of GB; got {raw!r}")
    return gb * 1e9


@dataclass(frozen=True)
class WorkEstimate:
    """Predicted size of one pass simulation (counts are expectations; the window an upper bound
    until a pass is found: ``from_pass``)."""

    window_s: float
    geometry_steps: float
    tracking_samples: float
    slices: float
    signal_detections: float = 0.0
    background_tags: float = 0.0
    beacon_tags: float = 0.0
    from_pass: bool = False

    @property
    def events(self) -> float:
        return self.signal_detections + self.background_tags + self.beacon_tags

    @property
    def memory_bytes(self) -> float:
        return (
            _BASE_BYTES
            + self.events * _BYTES_PER_EVENT
            + self.geometry_steps * _BYTES_PER_STEP
            + self.tracking_samples * _BYTES_PER_TRACKING_SAMPLE
            + self.slices * _BYTES_PER_SLICE
        )

    def as_dict(self) -> dict:
        return {
            "window_s": self.window_s,
            "from_pass": self.from_pass,
            "geometry_steps": self.geometry_steps,
            "tracking_samples": self.tracking_samples,
            "slices": self.slices,
            "signal_detections": self.signal_detections,
            "background_tags": self.background_tags,
            "beacon_tags": self.beacon_tags,
            "memory_bytes": self.memory_bytes,
        }

    def __str__(self) -> str:
        return (
            f"~{self.signal_detections:.2g} signal detections, {self.background_tags:.2g} background and dark tags, "
            f"{self.beacon_tags:.2g} beacon tags over a {self.window_s:.0f} s pass → ~{self.memory_bytes / 1e9:.2f} GB of memory"
        )


# ------------------------------------------------------------------------------------ the window
def _orbit_radii_m(cfg: MissionConfig) -> tuple[float, float]:
    """``(apogee radius, mean motion rad/s)`` of the configured orbit on a spherical Earth."""
    o = cfg.orbit
    if o.kind == "circular":
        r = _EARTH_RADIUS_M + float(o.altitude_km) * 1e3
        return r, math.sqrt(_MU_EARTH_M3_S2 / r**3)
    n = float(o.tle_line2[52:63]) * 2.0 * math.pi / 86400.0
    ecc = float("0." + o.tle_line2[26:33].strip() or "0")
    a = (_MU_EARTH_M3_S2 / n**2) ** (1.0 / 3.0) - 6378.135e3 + _EARTH_RADIUS_M
    return a * (1.0 + ecc), n


def window_bound_s(cfg: MissionConfig, station: GroundStationConfig | None = None) -> float:
    """Upper bound of one QKD window: an overhead pass above the lower of the start/end elevations
    (or the elevation of ``max_range_km``) at the apogee radius, at the orbital rate minus the
    Earth's (a prograde pass is the slowest); at most the search span."""
    st = station or cfg.station
    rules = cfg.passes
    span = rules.search_days * 86400.0
    try:
        r, n = _orbit_radii_m(cfg)
    except ValueError:  # an unreadable mean motion: the pass search will say so
        return span
    rg = _EARTH_RADIUS_M + st.altitude_m
    if r <= rg:
        return 0.0
    el = math.radians(min(rules.start_elevation_deg, rules.end_elevation_deg))
    if rules.max_range_km is not None:
        L = rules.max_range_km * 1e3
        if L < r - rg:
            return 0.0
        s = (r**2 - rg**2 - L**2) / (2.0 * rg * L)
        el = max(el, math.asin(min(1.0, max(0.0, s))))
    psi = math.acos(min(1.0, rg * math.cos(el) / r)) - el  # Earth central half-angle of the window
    w = n - _EARTH_RATE_RAD_S
    if w <= 0.05 * n:  # (near-)geostationary: the satellite may stay in view for the whole search
        return span
    return min(span, 1.05 * 2.0 * psi / w)


def _grid_estimate(cfg: MissionConfig, window_s: float) -> WorkEstimate:
    src = cfg.source
    per = max(1, int(round(cfg.simulation.slice_s * src.rep_rate_hz)))
    return WorkEstimate(
        window_s=window_s,
        geometry_steps=window_s / cfg.passes.time_step_s + 2,
        tracking_samples=window_s * cfg.apt.fine_rate_hz,
        slices=window_s * src.rep_rate_hz / per,
    )


# ------------------------------------------------------------------------------------ the photons
def _photon_estimate(cfg: MissionConfig, geometry) -> WorkEstimate:
    from .sky import link as lk

    t = np.asarray(geometry.t_s, dtype=float)
    window = float(t[-1] - t[0]) if t.size > 1 else 0.0
    base = _grid_estimate(cfg, window)
    if t.size < 2:
        return WorkEstimate(**{**base.__dict__, "from_pass": True})
    step = max(1, t.size // 200)
    idx = np.unique(np.r_[np.arange(0, t.size, step), t.size - 1])
    ts = t[idx]
    dt = np.diff(ts)
    mid = lambda a: 0.5 * (a[1:] + a[:-1])  # noqa: E731
    el = np.clip(np.asarray(geometry.elevation_deg, dtype=float)[idx], 0.0, 90.0)
    rng_m = np.asarray(geometry.range_m, dtype=float)[idx]
    az = np.asarray(geometry.azimuth_deg, dtype=float)[idx]
    eta = 10.0 ** (-np.asarray(lk.link_budget_db(cfg, rng_m, el, pointing_sigma_urad=0.0)["total"], dtype=float) / 10.0)
    src = cfg.source
    mu = np.asarray(src.intensities, dtype=float) * (1.0 + src.intensity_fluctuation)
    if cfg.attack.kind != "none" and cfg.attack.fraction > 0:
        mu = np.maximum(mu, 1.0)  # Eve may resend or forward photons: at least one photon's worth
    p = np.asarray(src.probabilities, dtype=float)
    lam = np.outer(eta * cfg.detectors.efficiency, mu)
    click = -np.expm1(-lam) @ p  # per pulse
    signal = float(src.rep_rate_hz * np.sum(mid(click) * dt))
    bg = np.asarray(lk.background_rate_hz(el, az, cfg.background), dtype=float) + cfg.detectors.dark_count_hz
    background = float(_DETECTORS * np.sum(mid(bg) * dt))
    beacon = window * cfg.timing.beacon_rate_hz * cfg.timing.beacon_detection_probability
    return WorkEstimate(
        window_s=window, geometry_steps=float(t.size), tracking_samples=base.tracking_samples, slices=base.slices,
        signal_detections=signal, background_tags=background, beacon_tags=beacon, from_pass=True,
    )


def estimate_work(cfg: MissionConfig, geometry=None, *, station: GroundStationConfig | None = None) -> WorkEstimate:
    """The prediction for ``geometry`` (a :class:`~satqkd.records.PassGeometry`), or, without one, the
    configuration-only bound (window, steps, tracking samples, slices; no photon counts)."""
    if geometry is None:
        return _grid_estimate(cfg, window_bound_s(cfg, station))
    return _photon_estimate(cfg, geometry)


def _check_grid(est: WorkEstimate, cfg: MissionConfig, what: str) -> None:
    if est.geometry_steps > MAX_GEOMETRY_STEPS:
        ok = est.window_s / MAX_GEOMETRY_STEPS
        raise WorkLimitError(
            f"{what}passes.time_step_s = {cfg.passes.time_step_s:g} s gives ~{est.geometry_steps:.2g} geometry steps over a QKD "
            f"window of up to {est.window_s:.0f} s (limit {MAX_GEOMETRY_STEPS:.0e} steps: use time_step_s ≥ {ok:.2g} s; docs/limits.md)"
        )
    if est.tracking_samples > MAX_TRACKING_SAMPLES:
        raise WorkLimitError(
            f"{what}apt.fine_rate_hz = {cfg.apt.fine_rate_hz:g} gives ~{est.tracking_samples:.2g} tracking-loop samples over a QKD "
            f"window of up to {est.window_s:.0f} s (limit {MAX_TRACKING_SAMPLES:.0e}; docs/limits.md)"
        )
    if est.slices > MAX_SLICES:
        raise WorkLimitError(
            f"{what}simulation.slice_s = {cfg.simulation.slice_s:g} s at source.rep_rate_hz = {cfg.source.rep_rate_hz:g} gives "
            f"~{est.slices:.2g} photon slices over a QKD window of up to {est.window_s:.0f} s (limit {MAX_SLICES:.0e}; docs/limits.md)"
        )


def check_geometry(cfg: MissionConfig, *, station: GroundStationConfig | None = None) -> WorkEstimate:
    """The configuration-only checks (no orbit computed): what ``satqkd passes`` needs before its search."""
    est = estimate_work(cfg, station=station)
    _check_grid(est, cfg, "")
    return est


def check_work(cfg: MissionConfig, *, station: GroundStationConfig | None = None, parallel: int = 1,
               geometry=None) -> WorkEstimate:
    """Predict one pass simulation of ``cfg`` (over ``station``, default the first) and refuse it with
    :class:`WorkLimitError` beyond the limits. ``parallel`` passes at once (campaign workers) multiply
    the memory. Without ``geometry`` the first pass is searched; if there is none, the
    configuration-only estimate is returned (the simulation will report the missing pass)."""
    from .sky.orbit import find_pass

    st = station or cfg.station
    what = f"[{st.name}] " if station is not None else ""
    est = estimate_work(cfg, station=st)
    _check_grid(est, cfg, what)
    if geometry is None:
        try:
            geometry = find_pass(cfg, st)
        except ValueError:
            return est
    est = estimate_work(cfg, geometry)
    _check_grid(est, cfg, what)
    limit = max_memory_bytes()
    need = est.memory_bytes * max(1, int(parallel))
    if need > limit:
        drivers = []
        if est.signal_detections >= est.events / 3:
            drivers.append("signal detections: source.intensities, source.rep_rate_hz, the link budget")
        if est.background_tags >= est.events / 3:
            drivers.append("background: background.sky_rate_hz, background.city_rate_hz, detectors.dark_count_hz")
        if est.beacon_tags >= est.events / 3:
            drivers.append("beacon: timing.beacon_rate_hz")
        times = f" × {int(parallel)} workers" if parallel > 1 else ""
        raise WorkLimitError(
            f"{what}predicted work is too large: {est}{times} (limit {limit / 1e9:g} GB; driven by "
            f"{'; '.join(drivers) or 'the pass length'}; the limit is SATQKD_MAX_MEMORY_GB, see docs/limits.md)"
        )
    return est
