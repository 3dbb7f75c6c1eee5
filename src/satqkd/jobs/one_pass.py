"""The one-pass job: simulate a pass and post-process it (``satqkd run`` for one pass, as a record).

:func:`run_pass` is what every bigger job runs per pass: the trusted relay (:mod:`.relay`), the
campaigns (:mod:`.campaign`, :mod:`.relay_campaign`) and the network plan's event-level sample
(:mod:`.plan`). It composes the physical-layer job (:func:`satqkd.jobs.pass_simulation.simulate`)
with the post-processing protocol (:func:`satqkd.protocol.session.postprocess`) and returns both
ends' final keys with the pass's summary (:class:`PassOutcome`). Nothing here touches a key store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from ..config import DEFAULT_EC_METHOD, MissionConfig
from ..keys.store import key_id_for
from ..records import PassGeometry

__all__ = ["PassOutcome", "end_utc", "pass_id_for", "pass_summary", "run_pass", "truncate_geometry"]


def truncate_geometry(g: PassGeometry, window_s: float) -> PassGeometry:
    """The part of ``g`` within ``±window_s / 2`` of culmination (samples kept as they are; ``t_s`` rebased)."""
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"window_s must be a finite number > 0, got {window_s!r}")
    tc = float(g.t_s[g.culmination_index])
    keep = np.flatnonzero(np.abs(g.t_s - tc) <= window_s / 2 + 1e-9)
    if keep.size < 2:
        raise ValueError(f"window_s = {window_s} s keeps fewer than 2 samples of the {g.duration_s:.0f} s pass")
    sl = slice(int(keep[0]), int(keep[-1]) + 1)
    t0 = float(g.t_s[sl.start])
    arr = lambda a: None if a is None else np.ascontiguousarray(a[sl])  # noqa: E731
    return replace(
        g,
        start_utc=g.start_utc + timedelta(seconds=t0),
        t_s=g.t_s[sl] - t0,
        elevation_deg=arr(g.elevation_deg),
        azimuth_deg=arr(g.azimuth_deg),
        range_m=arr(g.range_m),
        range_rate_m_s=arr(g.range_rate_m_s),
        sun_altitude_deg=arr(g.sun_altitude_deg),
        sunlit=arr(g.sunlit),
        enu_m=arr(g.enu_m),
        enu_velocity_m_s=arr(g.enu_velocity_m_s),
    )


def end_utc(g: PassGeometry) -> datetime:
    """The UTC time of the last sample of ``g``."""
    return g.start_utc + timedelta(seconds=g.duration_s)


@dataclass(frozen=True)
class PassOutcome:
    """One simulated, post-processed pass: both ends' final keys (0/1 ``np.uint8``) or the abort reason."""

    station: str
    satellite: str
    pass_id: str
    seed: int
    summary: dict
    sat_key: np.ndarray | None = field(default=None, repr=False)
    station_key: np.ndarray | None = field(default=None, repr=False)
    abort_reason: str | None = None
    epsilon: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.sat_key is not None and self.station_key is not None

    @property
    def key_id(self) -> str:
        return key_id_for(self.pass_id)

    def __repr__(self) -> str:
        s = self.summary
        what = f"{s['final_key_bits']:,} final bits" if self.ok else f"aborted: {self.abort_reason}"
        return f"PassOutcome({self.satellite}–{self.station} {s['start_utc']}, {s['sifted_bits']:,} sifted, {what})"


def pass_summary(sim_summary: dict, pp: dict | None, g: PassGeometry, pass_id: str, seed: int) -> dict:
    """The relay's view of a pass (issue 4 §2): start, duration, range span, sifted/final bits, ε."""
    s = sim_summary
    return {
        "station": s["station"],
        "satellite": s["satellite"],
        "pass_id": pass_id,
        "key_id": key_id_for(pass_id),
        "seed": int(seed),
        "start_utc": s["start_utc"],
        "end_utc": end_utc(g).isoformat(),
        "culmination_utc": s["culmination_utc"],
        "duration_s": s["duration_s"],
        "max_elevation_deg": s["max_elevation_deg"],
        "min_range_km": s["min_range_km"],
        "max_range_km": s["max_range_km"],
        "sifted_bits": s["sifted_bits"],
        "qber": s["qber"],
        "sifted_key_bits": int(pp["sifted_key_bits"] or 0) if pp else 0,
        "final_key_bits": int(pp["final_key_bits"]) if pp else 0,
        "epsilon": pp["epsilon"] if pp and not pp["aborted"] else None,
        "aborted": bool(pp["aborted"]) if pp else True,
        "abort_reason": pp["abort_reason"] if pp else "not post-processed",
        "ec_efficiency": pp["ec_efficiency"] if pp else None,
        "auth_key_bits_postprocessing": pp["auth_key_bits"] if pp else None,
    }


def pass_id_for(g: PassGeometry, seed: int, window_s: float | None) -> str:
    """A pass's id (same form as ``satqkd run``'s): satellite, station, window start, seed (+ truncation)."""
    pid = f"{g.satellite}:{g.station}:{g.start_utc:%Y-%m-%dT%H:%M:%S}Z:seed{int(seed)}"
    return pid + (f":window{window_s:g}s" if window_s is not None else "")


def run_pass(
    cfg: MissionConfig,
    geometry: PassGeometry,
    seed: int,
    *,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    window_s: float | None = None,
) -> PassOutcome:
    """Simulate the pass ``geometry`` of ``cfg`` and post-process it (``satqkd run`` for one pass).

    Returns both ends' final keys, or the abort reason. ``summary`` holds the relay's view of the
    pass (:func:`pass_summary`) plus the full simulation and post-processing summaries under
    ``"simulation"`` and ``"postprocessing"``.
    """
    from ..outputs import postprocess_summary
    from ..protocol.session import postprocess
    from .pass_simulation import simulate

    t0 = time.perf_counter()
    sim = simulate(cfg, seed, geometry=geometry)
    pass_id = pass_id_for(geometry, seed, window_s)
    sim_summary = sim.summary()
    ts = sim._timeseries_arrays()  # arrays: no pandas import in campaign workers
    res = postprocess(sim.raw, cfg, seed=seed, ec=ec, finite_key=finite_key)
    del sim
    pp = postprocess_summary(res)
    summary = pass_summary(sim_summary, pp, geometry, pass_id, seed)
    # the paper's figure of merit for a pass (Liao et al. 2017: "peak rate of 40.2 kbits/s at 530 km"):
    # the largest sifted key in one whole second, and the range at that second
    if ts["sifted_bits"].size:
        i = int(np.argmax(ts["sifted_bits"]))
        summary["peak_sifted_rate_bps"] = float(ts["sifted_bits"][i])
        summary["range_km_at_peak_rate"] = round(float(ts["range_km"][i]), 1)
    else:
        summary["peak_sifted_rate_bps"], summary["range_km_at_peak_rate"] = 0.0, None
    summary["simulation"] = sim_summary
    summary["postprocessing"] = {k: v for k, v in pp.items() if k != "counts"}
    ok = res.ok and res.keys_match
    reason = None if ok else (res.abort_reason or "final keys differ after verification")
    if not ok:
        summary.update(aborted=True, abort_reason=reason, final_key_bits=0, epsilon=None)
    return PassOutcome(
        station=geometry.station, satellite=geometry.satellite, pass_id=pass_id, seed=int(seed), summary=summary,
        sat_key=res.alice.key if ok else None, station_key=res.bob.key if ok else None, abort_reason=reason,
        epsilon=pp["epsilon"] if ok else None, seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------ stores
