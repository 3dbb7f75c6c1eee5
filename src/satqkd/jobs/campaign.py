"""Campaigns: every QKD pass of one satellite over one ground station during N days, simulated end to end.

"Will this orbit, telescope and ground site give enough key over N days?" A campaign

1. **plans** — :func:`plan_campaign` finds every QKD window of the search span with
   :func:`satqkd.sky.orbit.find_passes` (night only, ~15° rising → 10° setting, optional maximum
   range: the rules of Liao et al., Nature 549, 43 (2017), applied there);
2. **draws the weather** — each *local night* of the span is clear with probability
   ``clear_sky_probability`` (:func:`weather`); passes on cloudy nights are not simulated
   (``aborted``, ``abort_reason = "cloudy"``, 0 key bits);
3. **runs each clear pass** — simulate + post-process with :func:`satqkd.jobs.one_pass.run_pass`
   (``satqkd run`` for one pass), mapped over an executor: in-process (``workers=1``), a local
   process pool (``workers > 1``) or a Dask cluster (``scheduler="tcp://host:8786"``). A job returns
   a small :class:`PassRecord` (never the keys or raw arrays); a job that raises is recorded with
   ``abort_reason = "error: ..."`` and the campaign goes on.

Seeds (all randomness from ``numpy.random.SeedSequence``; the result does not depend on the
executor, the number of workers or the order in which jobs finish, except the wall-time fields
``PassRecord.seconds`` and ``CampaignResult.wall_seconds``):

* pass ``i`` (0-based, passes in time order) runs with seed :func:`pass_seed` ``(seed, i)`` — the
  first 64 bits of ``SeedSequence([seed, i])`` shifted to 63 bits;
* the weather of night ``k`` (``k = 0`` is the night the search starts in) is clear iff
  ``u_k < clear_sky_probability``, ``u = default_rng(SeedSequence([seed, WEATHER_STREAM])).random(n)``:
  the same seed gives the same weather on the same nights whatever the span length.

A *night* is named by the local date of its evening: the calendar date, in local mean solar time
at the station's longitude (UTC + longitude/15 h), of the noon before the pass
(:func:`night_of`). The 16:50 UTC Xinglong pass of the paper (00:40 local) is the night of
2016-12-19. Two passes of one night share its weather.

Two stations and the satellite relaying key between them (a config with ``second_station``):
:mod:`satqkd.jobs.relay_campaign`, on the same machinery.

Example::

    >>> import satqkd
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> res = satqkd.run_campaign(cfg, days=7, seed=1, workers=2, clear_sky_probability=0.6)  # doctest: +SKIP
    >>> res.total_final_key_bits, res.key_bits_per_day                                        # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from ..config import DEFAULT_EC_METHOD, EC_METHODS, FINITE_KEY_METHODS, MissionConfig
from ..records import PassGeometry
from .one_pass import run_pass

__all__ = [
    "EC_METHODS",
    "FINITE_KEY_METHODS",
    "WEATHER_STREAM",
    "CampaignResult",
    "PassRecord",
    "check_campaign_args",
    "clear_nights",
    "night_of",
    "pass_seed",
    "plan_campaign",
    "plot_peak_rate_vs_range",
    "run_campaign",
    "weather",
    "write_campaign_outputs",
]

#: Second word of the weather stream's ``SeedSequence([seed, WEATHER_STREAM])`` ("WEAT"; pass
#: seeds use the pass index there, which never reaches this value).
WEATHER_STREAM = 0x57454154
#: ``PassConfig.search_days`` allows at most this span.
MAX_DAYS = 366.0
_ERROR_CHARS = 300


# ------------------------------------------------------------------------------------------ inputs
def check_campaign_args(
    *,
    days: float | None = None,
    seed: int = 0,
    workers: int = 1,
    scheduler=None,
    clear_sky_probability: float = 1.0,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
) -> None:
    """Raise ``ValueError`` naming the argument and its allowed range (``ImportError`` for a missing Dask)."""

    def real(x) -> bool:
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

    def integer(x) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if days is not None and not (real(days) and 0 < days <= MAX_DAYS):
        raise ValueError(f"days must be a number with 0 < days <= {MAX_DAYS:g}, got {days!r}")
    if not (integer(seed) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (integer(workers) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not (real(clear_sky_probability) and 0.0 <= clear_sky_probability <= 1.0):
        raise ValueError(f"clear_sky_probability must lie in [0, 1], got {clear_sky_probability!r}")
    if ec not in EC_METHODS:
        raise ValueError(f"ec must be one of {', '.join(EC_METHODS)}, got {ec!r}")
    if finite_key not in FINITE_KEY_METHODS:
        raise ValueError(f"finite_key must be one of {', '.join(FINITE_KEY_METHODS)}, got {finite_key!r}")
    if scheduler is not None:
        if workers != 1:
            raise ValueError("workers applies to the local process pool; with scheduler the Dask cluster's workers "
                             f"run the passes (leave workers = 1), got workers={workers!r}")
        if isinstance(scheduler, str):
            if not scheduler.strip():
                raise ValueError("scheduler must be a Dask scheduler address such as 'tcp://host:8786', got ''")
            _dask()


def _dask():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("a Dask scheduler needs dask.distributed, which is not installed: "
                          "pip install 'satqkd[dask]'") from exc
    return distributed


# ------------------------------------------------------------------------------------------ plan
def _rules(cfg: MissionConfig, days: float | None):
    return cfg.passes if days is None else cfg.passes.model_copy(update={"search_days": float(days)})


def plan_campaign(cfg: MissionConfig, *, days: float | None = None,
                  progress: Callable[[float, float], None] | None = None) -> list[PassGeometry]:
    """Every QKD window of ``cfg.satellite`` over ``cfg.station`` in the search span, in time order.

    The span starts at ``cfg.passes.search_start_utc`` and lasts ``days`` (default
    ``cfg.passes.search_days``; as ``satqkd passes --days``). The window rules (night only,
    elevation thresholds, maximum range; Liao et al. 2017, Methods) are those of
    :func:`satqkd.sky.orbit.find_passes`. ``progress(done_s, total_s)`` follows the orbit scan.
    """
    check_campaign_args(days=days)
    from ..sky.orbit import find_passes, satellite_from_config

    sat = satellite_from_config(cfg.orbit, cfg.satellite)
    return find_passes(sat, cfg.station, _rules(cfg, days), satellite_name=cfg.satellite, progress=progress)


def pass_seed(seed: int, index: int) -> int:
    """Seed of pass ``index`` of a campaign: 63 bits of ``SeedSequence([seed, index])`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def night_of(t_utc: datetime, longitude_deg: float) -> date:
    """The local night ``t_utc`` belongs to, named by the date of its evening.

    Local mean solar time is UTC + ``longitude_deg``/15 h; the night is the calendar date of the
    last local noon before ``t_utc``. Xinglong (117.6° E), 2016-12-19 16:50 UTC → 00:40 local on
    the 20th → night of 2016-12-19.
    """
    return (t_utc + timedelta(hours=longitude_deg / 15.0 - 12.0)).date()


def weather(seed: int, n_nights: int, clear_sky_probability: float) -> np.ndarray:
    """Clear (``True``) or cloudy for nights ``0 .. n_nights - 1`` of a campaign.

    Independent Bernoulli draws: night ``k`` is clear iff ``u_k < p`` with
    ``u = default_rng(SeedSequence([seed, WEATHER_STREAM])).random(n_nights)``. A flat probability
    per night: no seasons, no correlation between consecutive nights, no partly cloudy passes.
    """
    return clear_nights([int(seed), WEATHER_STREAM], n_nights, clear_sky_probability)


def clear_nights(entropy: Sequence[int], n_nights: int, clear_sky_probability: float) -> np.ndarray:
    """Clear (``True``) or cloudy for nights ``0 .. n_nights - 1``, drawn from ``SeedSequence(entropy)``.

    :func:`weather` with its own entropy (relay campaigns draw the second station's weather from
    another stream: :mod:`satqkd.jobs.relay_campaign`).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(x) for x in entropy]))
    return rng.random(int(n_nights)) < float(clear_sky_probability)


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class PassRecord:
    """One pass of a campaign: its window and what its simulation gave (no keys, no arrays).

    ``simulated`` is false for passes on cloudy nights. ``epsilon`` is the pass key's own ε (None
    without a key). ``seconds`` is the job's wall time: the only field that differs between runs.
    """

    index: int
    night: str
    start_utc: str
    end_utc: str
    duration_s: float
    max_elevation_deg: float
    min_range_km: float
    seed: int
    clear_sky: bool
    simulated: bool
    sifted_bits: int = 0
    #: largest sifted key in one whole second of the pass (bit/s) and the range then (km)
    peak_sifted_rate_bps: float = 0.0
    range_km_at_peak_rate: float | None = None
    qber: float | None = None
    final_key_bits: int = 0
    epsilon: float | None = None
    aborted: bool = True
    abort_reason: str | None = None
    ec_efficiency: float | None = None
    seconds: float = 0.0

    @property
    def has_key(self) -> bool:
        return not self.aborted and self.final_key_bits > 0

    @property
    def error(self) -> bool:
        return bool(self.abort_reason) and self.abort_reason.startswith("error:")

    def to_json(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        what = f"{self.final_key_bits:,} final bits" if self.has_key else f"aborted: {self.abort_reason}"
        return (f"PassRecord(#{self.index} {self.start_utc[:19]} UTC, {self.duration_s:.0f} s, "
                f"max elevation {self.max_elevation_deg:.1f}°, {what})")


PASS_COLUMNS = tuple(f.name for f in fields(PassRecord))


def _finite_or_none(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _window_record(g: PassGeometry, index: int, seed: int, night: date, clear: bool) -> PassRecord:
    return PassRecord(
        index=index,
        night=night.isoformat(),
        start_utc=g.start_utc.isoformat(),
        end_utc=(g.start_utc + timedelta(seconds=g.duration_s)).isoformat(),
        duration_s=round(float(g.duration_s), 1),
        max_elevation_deg=round(float(np.max(g.elevation_deg)), 2),
        min_range_km=round(float(np.min(g.range_m)) / 1e3, 1),
        seed=seed,
        clear_sky=clear,
        simulated=clear,
        abort_reason=None if clear else "cloudy",
    )


def _error_fields(exc: BaseException) -> dict:
    msg = f"error: {type(exc).__name__}: {exc}"
    return {"aborted": True, "abort_reason": msg[:_ERROR_CHARS], "final_key_bits": 0, "epsilon": None}


def _pass_job(cfg: MissionConfig, geometry: PassGeometry, seed: int, ec: str, finite_key: str) -> dict:
    """Run one pass where the job lands; return only the small per-pass figures (never raises)."""
    t0 = time.perf_counter()
    try:
        out = run_pass(cfg, geometry, seed, ec=ec, finite_key=finite_key)
        s = out.summary
        aborted = bool(s["aborted"])
        return {
            "sifted_bits": int(s["sifted_bits"]),
            "peak_sifted_rate_bps": float(s["peak_sifted_rate_bps"]),
            "range_km_at_peak_rate": _finite_or_none(s["range_km_at_peak_rate"]),
            "qber": _finite_or_none(s["qber"]),
            "final_key_bits": 0 if aborted else int(s["final_key_bits"]),
            "epsilon": None if aborted else _finite_or_none(s["epsilon"]),
            "aborted": aborted,
            "abort_reason": s["abort_reason"] if aborted else None,
            "ec_efficiency": _finite_or_none(s.get("ec_efficiency")),
            "seconds": round(float(out.seconds), 3),
        }
    except Exception as exc:  # one failing pass must not end the campaign
        return {**_error_fields(exc), "seconds": round(time.perf_counter() - t0, 3)}


# ------------------------------------------------------------------------------------------ result
@dataclass
class CampaignResult:
    """Outcome of :func:`run_campaign` (JSON: :meth:`to_json`; files: :func:`write_campaign_outputs`).

    Each pass key is an independent key with its own ε (``max_epsilon_per_pass`` is the largest);
    whoever concatenates keys of several passes adds their ε (union bound).
    """

    preset: str
    satellite: str
    station: str
    search_start_utc: str
    days: float
    seed: int
    clear_sky_probability: float
    ec: str
    finite_key: str
    records: list[PassRecord]
    nights: list[dict]
    station_longitude_deg: float = 0.0
    executor: str = "serial"
    wall_seconds: float = 0.0

    @property
    def passes_found(self) -> int:
        return len(self.records)

    @property
    def passes_simulated(self) -> int:
        return sum(r.simulated for r in self.records)

    @property
    def passes_with_key(self) -> int:
        return sum(r.has_key for r in self.records)

    @property
    def passes_cloudy(self) -> int:
        return sum(not r.clear_sky for r in self.records)

    @property
    def passes_error(self) -> int:
        return sum(r.error for r in self.records)

    @property
    def total_final_key_bits(self) -> int:
        return sum(r.final_key_bits for r in self.records)

    @property
    def key_bits_per_day(self) -> float:
        return self.total_final_key_bits / self.days

    @property
    def max_epsilon_per_pass(self) -> float | None:
        eps = [r.epsilon for r in self.records if r.has_key and r.epsilon is not None]
        return max(eps) if eps else None

    @property
    def best_pass(self) -> PassRecord | None:
        keyed = [r for r in self.records if r.has_key]
        return max(keyed, key=lambda r: (r.final_key_bits, -r.index)) if keyed else None

    @property
    def worst_pass(self) -> PassRecord | None:
        """The simulated pass with the least key (an aborted one if any)."""
        sim = [r for r in self.records if r.simulated]
        return min(sim, key=lambda r: (r.final_key_bits, r.index)) if sim else None

    def totals(self) -> dict:
        best, worst = self.best_pass, self.worst_pass
        return {
            "passes_found": self.passes_found,
            "passes_simulated": self.passes_simulated,
            "passes_with_key": self.passes_with_key,
            "passes_cloudy": self.passes_cloudy,
            "passes_aborted": sum(r.simulated and r.aborted and not r.error for r in self.records),
            "passes_error": self.passes_error,
            "nights": len(self.nights),
            "clear_nights": sum(n["clear"] for n in self.nights),
            "total_final_key_bits": self.total_final_key_bits,
            "total_sifted_bits": sum(r.sifted_bits for r in self.records),
            "key_bits_per_day": self.key_bits_per_day,
            "max_epsilon_per_pass": self.max_epsilon_per_pass,
            "best_pass_index": best.index if best else None,
            "worst_pass_index": worst.index if worst else None,
        }

    def to_json(self) -> dict:
        meta = {k: getattr(self, k) for k in ("preset", "satellite", "station", "station_longitude_deg", "search_start_utc", "days", "seed",
                                              "clear_sky_probability", "ec", "finite_key", "executor",
                                              "wall_seconds")}
        return {**meta,
                "epsilon_note": "each pass key is an independent key with its own epsilon; keys used together "
                                "add their epsilons",
                "totals": self.totals(), "nights": self.nights, "passes": [r.to_json() for r in self.records]}

    def to_frame(self):
        """The passes as a :class:`pandas.DataFrame`, one row per pass, the columns of ``passes.csv``."""
        import pandas as pd

        return pd.DataFrame([[getattr(r, c) for c in PASS_COLUMNS] for r in self.records], columns=list(PASS_COLUMNS))

    def __repr__(self) -> str:
        eps = self.max_epsilon_per_pass
        return (f"CampaignResult({self.preset}: {self.satellite} over {self.station}, {self.days:g} d from "
                f"{self.search_start_utc[:16]} UTC, seed {self.seed}, clear sky {self.clear_sky_probability:g}: "
                f"{self.passes_found} passes, {self.passes_simulated} simulated, {self.passes_with_key} with key; "
                f"{self.total_final_key_bits:,} final bits ({self.key_bits_per_day:,.0f} bits/day)"
                + (f", max ε per pass {eps:.2g}" if eps is not None else "") + ")")


# ------------------------------------------------------------------------------------------ executors
_Job = tuple[int, tuple]  # (pass index, arguments of _pass_job)


def _run_serial(jobs: Sequence[_Job], done: Callable[[int, dict], None]) -> str:
    for i, args in jobs:
        done(i, _pass_job(*args))
    return "serial"


def _pool_context():
    """``forkserver`` where it exists, else ``spawn``: never ``fork``.

    Forking a process that already ran the LDPC decoder (numba ``parallel=True`` on the GNU OpenMP
    threading layer) kills the child ("fork() called from a process already using GNU OpenMP").
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _share_cores(threads: int) -> None:
    """Pool-worker initializer: at most ``threads`` compute threads per worker (numba kernels and the
    LDPC frame decoder read ``NUMBA_NUM_THREADS``), so N workers do not oversubscribe the cores."""
    import os

    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    import numba

    numba.config.NUMBA_NUM_THREADS = threads


def _run_pool(jobs: Sequence[_Job], workers: int, done: Callable[[int, dict], None]) -> str:
    import os

    n = min(workers, len(jobs))
    if n <= 1:
        return _run_serial(jobs, done)
    per_worker = max(1, (os.cpu_count() or 1) // n)
    with ProcessPoolExecutor(max_workers=n, mp_context=_pool_context(), initializer=_share_cores,
                             initargs=(per_worker,)) as ex:
        futures = {ex.submit(_pass_job, *args): i for i, args in jobs}
        for f in as_completed(futures):
            try:
                rec = f.result()
            except Exception as exc:  # the worker died (e.g. out of memory) or the job did not pickle
                rec = _error_fields(exc)
            done(futures[f], rec)
    return f"process pool ({n} workers)"


def _run_dask(jobs: Sequence[_Job], scheduler, done: Callable[[int, dict], None]) -> str:
    distributed = _dask()
    own = isinstance(scheduler, str)
    client = distributed.Client(scheduler) if own else scheduler
    try:
        futures = {client.submit(_pass_job, *args, pure=False, key=f"satqkd-pass-{i}-{args[2]}"): i for i, args in jobs}
        for f in distributed.as_completed(list(futures)):
            try:
                rec = f.result()
            except Exception as exc:
                rec = _error_fields(exc)
            done(futures[f], rec)
        where = scheduler if own else getattr(getattr(client, "scheduler", None), "address", "client")
    finally:
        if own:
            client.close()
    return f"dask ({where})"


# ------------------------------------------------------------------------------------------ run
def run_campaign(
    cfg: MissionConfig,
    *,
    days: float | None = None,
    seed: int = 0,
    workers: int = 1,
    scheduler=None,
    clear_sky_probability: float = 1.0,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    progress: Callable[[float, float], None] | None = None,
) -> CampaignResult:
    """Simulate and post-process every QKD pass of the span (module docstring: seeds, weather, executors).

    ``workers = 1`` runs in this process; ``workers > 1`` in a local process pool (``forkserver`` or
    ``spawn``); ``scheduler`` (an address such as ``"tcp://host:8786"``, or a ``distributed.Client``)
    on a Dask cluster whose workers have satqkd installed (``pip install 'satqkd[dask]'``).
    ``progress(done, total)`` after each pass (cloudy passes count at once). Bad arguments raise
    ``ValueError`` naming the argument and its allowed range, before anything runs.
    """
    check_campaign_args(days=days, seed=seed, workers=workers, scheduler=scheduler,
                        clear_sky_probability=clear_sky_probability, ec=ec, finite_key=finite_key)
    t_start = time.perf_counter()
    rules = _rules(cfg, days)
    plan = _plan_station(cfg, rules, lambda i: pass_seed(seed, i),
                         lambda n: weather(seed, n, clear_sky_probability), ec, finite_key)
    executor = _execute([plan], workers, scheduler, progress)
    return _station_result(cfg, plan, rules, seed, clear_sky_probability, ec, finite_key, executor,
                           round(time.perf_counter() - t_start, 3))


@dataclass
class _StationPlan:
    """One station's side of a campaign before the passes run: window records (filled in as jobs finish)."""

    cfg: MissionConfig
    records: list[PassRecord]
    jobs: list[_Job]
    first_night: date
    clear: np.ndarray
    end: datetime


def _plan_station(cfg: MissionConfig, rules, seed_of: Callable[[int], int], clear_of: Callable[[int], np.ndarray],
                  ec: str, finite_key: str) -> _StationPlan:
    """Windows of ``cfg.station`` in the span, the weather of its nights, the jobs of the clear passes.

    ``seed_of(i)`` is the seed of pass ``i``; ``clear_of(n)`` the clear/cloudy draw of ``n`` nights.
    """
    span_days = float(rules.search_days)
    geoms = plan_campaign(cfg, days=span_days)
    lon = cfg.station.longitude_deg
    first = night_of(rules.search_start_utc, lon)
    end = rules.search_start_utc + timedelta(days=span_days)
    last = night_of(end, lon)
    clear = clear_of((last - first).days + 1)

    records: list[PassRecord] = []
    jobs: list[_Job] = []
    for i, g in enumerate(geoms):
        night = night_of(g.start_utc, lon)
        s = seed_of(i)
        records.append(_window_record(g, i, s, night, bool(clear[(night - first).days])))
        if records[-1].clear_sky:
            jobs.append((i, (cfg, g, s, ec, finite_key)))
    return _StationPlan(cfg, records, jobs, first, clear, end)


def _execute(plans: Sequence[_StationPlan], workers: int, scheduler,
             progress: Callable[[float, float], None] | None) -> str:
    """Run the jobs of every plan on one executor, filling in each plan's records; returns the executor's name.

    ``progress(done, total)`` counts the passes of all plans (cloudy ones at once).
    """
    jobs: list[_Job] = []
    where: list[tuple[_StationPlan, int]] = []
    for plan in plans:
        for i, args in plan.jobs:
            jobs.append((len(where), args))
            where.append((plan, i))
    total = sum(len(p.records) for p in plans)
    n_done = total - len(jobs)
    if progress is not None:
        progress(float(n_done), float(total))

    def done(k: int, result: dict) -> None:
        nonlocal n_done
        plan, i = where[k]
        plan.records[i] = _merge(plan.records[i], result)
        n_done += 1
        if progress is not None:
            progress(float(n_done), float(total))

    if not jobs:
        return "none (no pass to simulate)"
    if scheduler is not None:
        return _run_dask(jobs, scheduler, done)
    if workers > 1:
        return _run_pool(jobs, workers, done)
    return _run_serial(jobs, done)


def _station_result(cfg: MissionConfig, plan: _StationPlan, rules, seed: int, clear_sky_probability: float, ec: str,
                    finite_key: str, executor: str, wall_seconds: float) -> CampaignResult:
    lon = cfg.station.longitude_deg
    return CampaignResult(
        preset=cfg.name, satellite=cfg.satellite, station=cfg.station.name,
        search_start_utc=rules.search_start_utc.isoformat(), days=float(rules.search_days), seed=int(seed),
        clear_sky_probability=float(clear_sky_probability), ec=ec, finite_key=finite_key, records=plan.records,
        nights=_night_totals(plan.records, plan.first_night, plan.clear, rules.search_start_utc, plan.end, lon),
        station_longitude_deg=float(lon), executor=executor, wall_seconds=wall_seconds,
    )


def _merge(rec: PassRecord, result: dict) -> PassRecord:
    allowed = {k: v for k, v in result.items() if k in PASS_COLUMNS}
    return replace(rec, **allowed)


def _night_totals(records: list[PassRecord], first: date, clear: np.ndarray, start: datetime, end: datetime,
                  longitude_deg: float) -> list[dict]:
    """Per-night totals for the nights of the span: those whose local midnight falls in it, and any night with a pass."""
    out = []
    for k, c in enumerate(clear):
        night = first + timedelta(days=k)
        name = night.isoformat()
        rs = [r for r in records if r.night == name]
        midnight = datetime.combine(night + timedelta(days=1), datetime.min.time(), tzinfo=start.tzinfo) \
            - timedelta(hours=longitude_deg / 15.0)
        if not rs and not (start <= midnight < end):
            continue
        out.append({"night": name, "clear": bool(c), "passes": len(rs), "passes_with_key": sum(r.has_key for r in rs),
                    "final_key_bits": sum(r.final_key_bits for r in rs)})
    return out


# ------------------------------------------------------------------------------------------ outputs
def write_campaign_outputs(result: CampaignResult, out_dir: str | Path, *, figures: bool = True) -> list[Path]:
    """``campaign.json`` (totals, nights, passes), ``passes.csv``, ``campaign.png``, ``key_vs_elevation.png``,
    ``peak_rate_vs_range.png``."""
    from ..report import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(result.to_json(), out / "campaign.json"), _write_csv(result, out / "passes.csv")]
    if figures:
        paths.append(plot_campaign(result, out / "campaign.png"))
        paths.append(plot_key_vs_elevation(result, out / "key_vs_elevation.png"))
        paths.append(plot_peak_rate_vs_range(result, out / "peak_rate_vs_range.png"))
    return paths


def write_csv(path: Path, header: Sequence[str], rows) -> Path:
    """A CSV file written to a temporary name and renamed (readers never see half a file); None → ""."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else v for v in row])
    tmp.replace(path)
    return path


def _write_csv(result: CampaignResult, path: Path) -> Path:
    return write_csv(path, PASS_COLUMNS, ([getattr(r, c) for c in PASS_COLUMNS] for r in result.records))


def _kind_masks(records: list[PassRecord]):
    keyed = [r for r in records if r.has_key]
    cloudy = [r for r in records if not r.clear_sky]
    errors = [r for r in records if r.error]
    aborted = [r for r in records if r.simulated and not r.has_key and not r.error]
    return keyed, cloudy, aborted, errors


def plot_campaign(result: CampaignResult, path: str | Path) -> Path:
    """Top: final key per pass against date (stems coloured by max elevation; cloudy/aborted marked).
    Bottom: cumulative final key against date. Cloudy nights are shaded in both panels."""
    from ..report import PAPER_BLUE, PAPER_RED, _pyplot

    plt = _pyplot()
    import matplotlib.dates as mdates
    from matplotlib.colors import Normalize

    def x(r: PassRecord) -> float:
        return mdates.date2num(datetime.fromisoformat(r.start_utc))

    recs = result.records
    keyed, cloudy, aborted, errors = _kind_masks(recs)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    t0 = datetime.fromisoformat(result.search_start_utc)
    x0, x1 = mdates.date2num(t0), mdates.date2num(t0 + timedelta(days=result.days))
    # shade each cloudy night from local 18:00 to 06:00 (the night's name is its evening's date)
    lon_h = result.station_longitude_deg / 15.0
    for n in result.nights:
        if not n["clear"]:
            eve = datetime.fromisoformat(n["night"] + "T18:00:00+00:00") - timedelta(hours=lon_h)
            for a in (ax, bx):
                a.axvspan(mdates.date2num(eve), mdates.date2num(eve + timedelta(hours=12)), color="0.85", lw=0, zorder=0)
    norm = Normalize(10.0, 90.0)
    cmap = plt.get_cmap("viridis")
    if keyed:
        xs = np.array([x(r) for r in keyed])
        ys = np.array([r.final_key_bits for r in keyed]) / 1e3
        cs = cmap(norm([r.max_elevation_deg for r in keyed]))
        ax.vlines(xs, 0, ys, colors=cs, lw=2.5, zorder=2)
        ax.scatter(xs, ys, c=cs, s=18, zorder=3)
    ymax = max([r.final_key_bits / 1e3 for r in keyed] + [1.0])
    for group, marker, color, label in ((cloudy, "x", "0.45", "on a cloudy night (shaded), not simulated"),
                                        (aborted, "v", PAPER_RED, "aborted"), (errors, "X", "k", "error")):
        if group:
            ax.scatter([x(r) for r in group], [0.0] * len(group), marker=marker, color=color, s=30, zorder=4,
                       clip_on=False, label=f"{label}: {len(group)}")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=[ax, bx], pad=0.01, fraction=0.03).set_label("max elevation (°)")
    ax.set_ylim(-0.03 * ymax, ymax * 1.12)
    ax.set_ylabel("final key per pass (kbit)")
    ax.grid(alpha=0.3)
    if cloudy or aborted or errors:
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, fontsize=8, frameon=False,
                  borderaxespad=0.2, handletextpad=0.3)
    if not recs:
        ax.text(0.5, 0.5, "no QKD window in the span", transform=ax.transAxes, ha="center", va="center")
    # cumulative key
    order = sorted(keyed, key=lambda r: r.start_utc)
    cx = np.array([x0] + [x(r) for r in order] + [x1])
    cy = np.concatenate([[0.0], np.cumsum([r.final_key_bits for r in order]), [result.total_final_key_bits]]) / 1e6
    bx.step(cx, cy, where="post", color=PAPER_BLUE, lw=1.8)
    bx.fill_between(cx, cy, step="post", color=PAPER_BLUE, alpha=0.15)
    bx.set_ylabel("cumulative final key (Mbit)")
    bx.set_xlim(x0, x1)
    bx.grid(alpha=0.3)
    loc = mdates.AutoDateLocator()
    bx.xaxis.set_major_locator(loc)
    bx.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    bx.set_xlabel("pass start (UTC)")
    fig.suptitle(f"{result.satellite} over {result.station}: {result.passes_found} passes in {result.days:g} d, "
                 f"{result.passes_with_key} with key, {result.total_final_key_bits:,} final bits "
                 f"({result.key_bits_per_day:,.0f} bits/day)\nseed {result.seed}, clear-night probability "
                 f"{result.clear_sky_probability:g}, {result.ec} + {result.finite_key}", fontsize=10, x=0.47)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_key_vs_elevation(result: CampaignResult, path: str | Path) -> Path:
    """Final key of each simulated pass against its maximum elevation (colour: mean QBER)."""
    from ..report import PAPER_RED, _pyplot

    plt = _pyplot()
    keyed, cloudy, aborted, errors = _kind_masks(result.records)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if keyed:
        q = np.array([np.nan if r.qber is None else 100 * r.qber for r in keyed])
        sc = ax.scatter([r.max_elevation_deg for r in keyed], [r.final_key_bits / 1e3 for r in keyed], c=q,
                        cmap="plasma", s=36, edgecolors="k", linewidths=0.4, zorder=3)
        fig.colorbar(sc, ax=ax, pad=0.01).set_label("QBER (%)")
    if aborted:
        ax.scatter([r.max_elevation_deg for r in aborted], [0.0] * len(aborted), marker="v", color=PAPER_RED,
                   s=36, zorder=3, clip_on=False, label=f"aborted: {len(aborted)}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("maximum elevation of the pass (°)")
    ax.set_ylabel("final key (kbit)")
    ax.set_xlim(10, 90)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    hidden = [f"{len(cloudy)} cloudy" if cloudy else "", f"{len(errors)} failed" if errors else ""]
    hidden = " and ".join(h for h in hidden if h)
    ax.set_title(f"{result.satellite} over {result.station}, {result.days:g} d (seed {result.seed}): key vs elevation"
                 + (f"\n({hidden} passes not shown)" if hidden else ""), fontsize=10)
    if not (keyed or aborted):
        ax.text(0.5, 0.5, "no simulated pass", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


#: Peak sifted key rates the paper quotes for its 23 days of QKD (Liao et al., Nature 549, 43 (2017),
#: text on Extended Data Table 3): (range km, bit/s). Weather differed from day to day.
PAPER_PEAK_RATES = ((530.0, 40_200.0), (1034.7, 1_200.0))


def plot_peak_rate_vs_range(result: CampaignResult, path: str | Path) -> Path:
    """Peak one-second sifted key rate of each simulated pass against the range at that second, with
    the peak rates the paper quotes for its other days (:data:`PAPER_PEAK_RATES`)."""
    from ..report import PAPER_RED, _pyplot

    plt = _pyplot()
    keyed, _, aborted, _ = _kind_masks(result.records)
    sim = [r for r in keyed + aborted if r.peak_sifted_rate_bps > 0 and r.range_km_at_peak_rate is not None]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if sim:
        sc = ax.scatter([r.range_km_at_peak_rate for r in sim], [r.peak_sifted_rate_bps / 1e3 for r in sim],
                        c=[r.max_elevation_deg for r in sim], cmap="viridis", vmin=10, vmax=90, s=36,
                        edgecolors="k", linewidths=0.4, zorder=3, label=f"satqkd, {len(sim)} passes")
        fig.colorbar(sc, ax=ax, pad=0.01).set_label("max elevation (°)")
    ax.scatter([r for r, _ in PAPER_PEAK_RATES], [v / 1e3 for _, v in PAPER_PEAK_RATES], marker="*", s=140,
               color=PAPER_RED, edgecolors="k", linewidths=0.5, zorder=4,
               label="paper, other days (peak rates quoted in the text)")
    ax.set_yscale("log")
    ax.set_xlabel("range at the peak second (km)")
    ax.set_ylabel("peak sifted key rate (kbit/s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{result.satellite} over {result.station}, {result.days:g} d (seed {result.seed}): "
                 "peak sifted rate vs range", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
