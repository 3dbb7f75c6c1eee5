"""Network plans: a year of satellites over many stations with the fast expected-key model.

:func:`plan_network` answers "how much key does this constellation give these stations, and each
pair of stations through the satellites as trusted relays, month by month?":

1. **satellites** — a TLE file (:func:`satqkd.sky.constellation.read_tle_file`), a Walker-delta
   constellation (:func:`satqkd.sky.constellation.walker_delta`) or the mission preset's orbit;
2. **stations** — catalogue names (``catalogue/stations.toml``, case-insensitive) or the user's TOML
   in the same format (:func:`load_stations`). Each station is the preset's ground terminal placed
   at the station's coordinates, with its own background (city light dome if the catalogue gives
   one) and the preset's operating rules unless the station overrides them;
3. **passes** — :func:`satqkd.sky.constellation.find_network_passes`: one propagation per satellite,
   all stations at once;
4. **weather** — each station-night is clear with the station's clear-sky fraction of that month
   (:func:`clear_nights`; seeded per station by name, so adding a station does not change the others);
5. **key per pass** (clear nights only) — :func:`planning_link` (the link budget of
   :mod:`satqkd.sky.link` with the tracking loop's predicted residual instead of a simulated loop,
   and the polarization model of :mod:`satqkd.sky.polarization`) → :func:`satqkd.jobs.fastkey.expected_pass`;
6. **relays** — :func:`replay_relays`, in time order over all passes (rule below);
7. optionally, an **event-level sample** of clear passes re-run through the full simulator and
   protocol (:func:`satqkd.jobs.one_pass.run_pass`) as a check of the fast model inside the same run.

Jobs are (satellite, 30-day chunk) pairs mapped over an executor — in-process, a local process
pool (``workers``) or Dask (``scheduler``) — and return small records; everything random is seeded
by :class:`numpy.random.SeedSequence` of the plan seed and the pass's own identity (satellite name,
station name, start second), so the result is identical on every executor and chunking.

**Relay rule (sharing on-board key among pairs).** Each satellite keeps, for every ordered station
pair (X, Y), a FIFO pool of key it shares with X that is reserved for relaying to Y. A pass over X
with ``K`` final bits puts ``⌊K / (N − 1)⌋`` into each of X's ``N − 1`` pools (equal split: no pair
is favoured and no demand is assumed). Right after every pass over X, each pair (X, Y) relays
``L = jobs.relay.relay_length_bits(pool(X→Y), pool(Y→X))`` bits (the relay campaign's rule:
min − the authentication key per link, whole bytes), consuming ``L`` plus the per-link
authentication key from both pools, oldest key first. The storage time of a relay is the bit-weighted
age of the key it consumed on board. Key is never carried from one satellite to another.
"""

from __future__ import annotations

import math
import time
import tomllib
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import DEFAULT_EC_METHOD, MissionConfig, load_preset
from ..records import LinkSeries, PassGeometry
from ..sky.constellation import (
    ConstellationError,
    Satellite,
    StationRules,
    StationSite,
    find_network_passes,
    read_tle_file,
    satellite_of_orbit,
    walker_delta,
)

__all__ = [
    "PlanInputError",
    "CatalogueStation",
    "station_catalogue",
    "load_stations",
    "parse_walker",
    "planning_link",
    "clear_nights",
    "replay_relays",
    "plan_network",
    "PlanResult",
    "write_plan_outputs",
    "PLAN_WEATHER_STREAM",
]

#: Weather stream of plans: u = default_rng(SeedSequence([seed, PLAN_WEATHER_STREAM, crc32(name)])).
PLAN_WEATHER_STREAM = 0x504C414E
_LINK_STREAM = 0x4C494E4B
_SAMPLE_STREAM = 0x53414D50
#: Days of one job (one satellite): short enough that a few months give several jobs per worker (balance)
CHUNK_DAYS = 10.0
_MONTHS = 12


class PlanInputError(ConstellationError):
    """Bad plan input (unknown station, bad station field, bad constellation): exit status 2 in the CLI."""


# ------------------------------------------------------------------------------------------ stations
@dataclass(frozen=True)
class CatalogueStation:
    """A candidate ground station: position, monthly clear-sky fraction (with its source), overrides."""

    name: str
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    clear_sky_monthly: tuple[float, ...]
    clear_sky_source: str = ""
    background: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)


_BACKGROUND_KEYS = ("city_rate_hz", "city_azimuth_deg", "city_width_deg", "city_scale_height_deg", "sky_rate_hz")
_RULE_KEYS = ("start_elevation_deg", "end_elevation_deg", "max_range_km", "night_only", "max_sun_altitude_deg",
              "satellite_in_shadow")


def _station_from_dict(d: dict, where: str) -> CatalogueStation:
    if not isinstance(d, dict):
        raise PlanInputError(f"{where}: a station must be a table")
    known = {"name", "latitude_deg", "longitude_deg", "altitude_m", "clear_sky_monthly", "clear_sky_source",
             *_BACKGROUND_KEYS, *_RULE_KEYS}
    extra = sorted(set(d) - known)
    if extra:
        raise PlanInputError(f"{where}: unknown station field(s) {', '.join(extra)}")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PlanInputError(f"{where}: station name must be a non-empty string")
    w = f"{where} ({name})"

    def num(key, lo, hi, default=None):
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
            raise PlanInputError(f"{w}: {key} must be a number in [{lo}, {hi}], got {v!r}")
        return float(v)

    lat = num("latitude_deg", -90, 90)
    lon = num("longitude_deg", -180, 180)
    alt = num("altitude_m", -500, 9000, 0.0)
    cs = d.get("clear_sky_monthly")
    if (not isinstance(cs, list) or len(cs) != _MONTHS
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1 for x in cs)):
        raise PlanInputError(f"{w}: clear_sky_monthly must be 12 numbers in [0, 1] (January ... December), got {cs!r}")
    bg = {k: num(k, 0, 1e8 if k.endswith("hz") else 360) for k in _BACKGROUND_KEYS if k in d}
    rules = {}
    for k in _RULE_KEYS:
        if k in d:
            v = d[k]
            if k in ("night_only", "satellite_in_shadow"):
                if not isinstance(v, bool):
                    raise PlanInputError(f"{w}: {k} must be true or false, got {v!r}")
                rules[k] = v
            else:
                rules[k] = num(k, -90 if k == "max_sun_altitude_deg" else 0, 50_000 if k == "max_range_km" else 90)
    return CatalogueStation(name.strip(), lat, lon, alt, tuple(float(x) for x in cs), str(d.get("clear_sky_source", "")),
                            bg, rules)


def _stations_from_toml(text: str, where: str) -> list[CatalogueStation]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanInputError(f"{where}: not valid TOML: {exc}") from None
    items = doc.get("station")
    if not isinstance(items, list) or not items:
        raise PlanInputError(f"{where}: needs one or more [[station]] tables")
    out = [_station_from_dict(d, f"{where}: station {i + 1}") for i, d in enumerate(items)]
    names = [s.name.lower() for s in out]
    if len(set(names)) != len(names):
        raise PlanInputError(f"{where}: station names must be unique (case-insensitive)")
    return out


def station_catalogue() -> dict[str, CatalogueStation]:
    """The shipped catalogue (``catalogue/stations.toml``), keyed by lower-case name."""
    text = resources.files("satqkd").joinpath("catalogue/stations.toml").read_text(encoding="utf-8")
    return {s.name.lower(): s for s in _stations_from_toml(text, "stations catalogue")}


def load_stations(spec) -> list[CatalogueStation]:
    """Stations from a TOML file path, a comma-separated string of catalogue names, or a list of names/stations."""
    if isinstance(spec, (str, Path)) and (Path(spec).suffix.lower() == ".toml" or Path(spec).is_file()):
        p = Path(spec)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PlanInputError(f"stations: cannot read {p}: {exc.strerror or exc}") from None
        return _stations_from_toml(text, str(p))
    items = [x.strip() for x in spec.split(",")] if isinstance(spec, str) else list(spec)
    cat = station_catalogue()
    out: list[CatalogueStation] = []
    for x in items:
        if isinstance(x, CatalogueStation):
            out.append(x)
            continue
        if not x:
            continue
        st = cat.get(str(x).lower())
        if st is None:
            raise PlanInputError(f"stations: unknown station {x!r}; the catalogue has: "
                                 + ", ".join(s.name for s in cat.values()))
        out.append(st)
    if len(out) < 1:
        raise PlanInputError("stations: give at least one station")
    if len({s.name.lower() for s in out}) != len(out):
        raise PlanInputError("stations: a station is listed twice")
    return out


def parse_walker(spec: str, epoch_utc: datetime) -> list[Satellite]:
    """``"ALT_KM:INC_DEG:T/P/F"`` (e.g. ``"550:53:24/6/1"``) → :func:`~satqkd.sky.constellation.walker_delta`."""
    try:
        alt, inc, tpf = spec.split(":")
        t, p, f = tpf.split("/")
        alt_f, inc_f, t_i, p_i, f_i = float(alt), float(inc), int(t), int(p), int(f)
    except ValueError:
        raise PlanInputError(f"walker: expected ALT_KM:INC_DEG:T/P/F such as 550:53:24/6/1, got {spec!r}") from None
    return walker_delta(alt_f, inc_f, t_i, p_i, f_i, epoch_utc)


def station_config(cfg: MissionConfig, st: CatalogueStation) -> MissionConfig:
    """The mission configuration with its ground terminal at ``st`` (position, background)."""
    station = cfg.station.model_copy(update={"name": st.name, "latitude_deg": st.latitude_deg,
                                             "longitude_deg": st.longitude_deg, "altitude_m": st.altitude_m})
    bg = cfg.background.model_copy(update={"city_rate_hz": 0.0, **st.background})
    return cfg.model_copy(update={"station": station, "background": bg})


def station_site(cfg: MissionConfig, st: CatalogueStation) -> StationSite:
    """The station's position and operating rules (the preset's ``[passes]``, then the station's overrides)."""
    p = cfg.passes
    base = dict(start_elevation_deg=p.start_elevation_deg, end_elevation_deg=p.end_elevation_deg,
                max_range_km=p.max_range_km, night_only=p.night_only, max_sun_altitude_deg=p.max_sun_altitude_deg,
                time_step_s=p.time_step_s)
    base.update(st.rules)
    return StationSite(st.name, st.latitude_deg, st.longitude_deg, st.altitude_m, StationRules(**base))


# ----------------------------------------------------------------------------------------- link
def _los_rate_deg_s(g: PassGeometry) -> np.ndarray:
    r = np.asarray(g.enu_m, dtype=float)
    v = np.asarray(g.enu_velocity_m_s, dtype=float)
    rng = np.linalg.norm(r, axis=1)
    radial = np.sum(r * v, axis=1) / rng
    perp = np.sqrt(np.maximum(np.sum(v * v, axis=1) - radial**2, 0.0))
    return np.degrees(perp / rng)


def planning_link(cfg: MissionConfig, geometry: PassGeometry, rng: np.random.Generator) -> LinkSeries:
    """The pass's :class:`~satqkd.records.LinkSeries` for planning, from :mod:`satqkd.sky.link`'s functions.

    As :func:`satqkd.sky.link.link_series` except for pointing: the mean loss of the tracking
    residual σ that :func:`satqkd.sky.apt.predicted_sigma_urad` gives at each step's line-of-sight
    rate (:func:`satqkd.sky.link.jitter_pointing_loss_db`), instead of simulating the loop at 1 kHz
    (~80 ms a pass). Atmosphere, seeing (with adaptive optics if set), point-ahead and sky background
    are the ``config_*`` functions the event simulator calls. Turbulence is the mean seeing loss (no fading draw); misalignment from
    :func:`satqkd.sky.polarization.misalignment` with ``rng``.
    """
    from ..sky import apt as _apt
    from ..sky import link as _lk
    from ..sky import polarization as _pol

    el = np.clip(np.asarray(geometry.elevation_deg, dtype=float), 0.0, 90.0)
    n = el.size
    tx, rx = cfg.transmitter, cfg.receiver
    rates = _los_rate_deg_s(geometry)
    knots = np.linspace(0.0, max(1.2, float(rates.max()) * 1.01), 13)
    sig_k = np.array([_apt.predicted_sigma_urad(cfg.apt, float(x)) for x in knots])
    sigma = np.interp(rates, knots, sig_k)
    e_d, c_comp, c_unc = _pol.misalignment(geometry, cfg.polarization, rng)
    loss = {
        "diffraction": _lk.diffraction_loss_db(geometry.range_m, tx.divergence_urad, rx.aperture_m, tx.aperture_m),
        "pointing": _lk.jitter_pointing_loss_db(sigma, tx.divergence_urad) + _lk.config_point_ahead_loss_db(cfg, geometry, sigma),
        "atmosphere": _lk.config_atmosphere_loss_db(cfg, el),
        "turbulence": _lk.config_turbulence_loss_db(cfg, el),
        "receiver_optics": _lk.receiver_optics_loss_db(rx.optics_efficiency * tx.optics_efficiency),
    }
    return LinkSeries(
        t_s=np.asarray(geometry.t_s, dtype=float).copy(), range_m=np.asarray(geometry.range_m, dtype=float).copy(),
        elevation_deg=el, loss_db={k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in loss.items()},
        detector_efficiency=float(cfg.detectors.efficiency),
        background_rate_hz=np.atleast_1d(np.asarray(_lk.config_background_rate_hz(cfg, geometry), dtype=float)),
        dark_count_hz=float(cfg.detectors.dark_count_hz), misalignment=e_d, tracking_error_urad=sigma * math.sqrt(2.0),
        contrast_compensated=c_comp, contrast_uncompensated=c_unc,
    )


# -------------------------------------------------------------------------------------- weather
def _name_key(name: str) -> int:
    return zlib.crc32(name.lower().encode("utf-8"))


def night_of(t_utc: datetime, longitude_deg: float) -> date:
    """The local night of ``t_utc``, named by the date of its evening (as :func:`satqkd.jobs.campaign.night_of`)."""
    return (t_utc + timedelta(hours=longitude_deg / 15.0 - 12.0)).date()


def clear_nights(seed: int, station: CatalogueStation, first_night: date, n_nights: int) -> np.ndarray:
    """Clear (True) or cloudy for ``n_nights`` nights from ``first_night``: ``u_k < clear_sky_monthly[month of night k]``.

    ``u = default_rng(SeedSequence([seed, PLAN_WEATHER_STREAM, crc32(lower-case name)])).random(n_nights)``:
    the same seed gives the same weather at a station whatever else is in the plan, and a longer plan
    keeps the nights of a shorter one. Nights are independent (no multi-day cloud spells), all or nothing.
    """
    u = np.random.default_rng(np.random.SeedSequence([int(seed), PLAN_WEATHER_STREAM, _name_key(station.name)])).random(n_nights)
    months = np.array([(first_night + timedelta(days=k)).month for k in range(n_nights)])
    p = np.asarray(station.clear_sky_monthly, dtype=float)[months - 1]
    return u < p


def _pass_seed(seed: int, sat: str, station: str, start_utc: datetime) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), _LINK_STREAM, _name_key(sat), _name_key(station), int(start_utc.timestamp())])


# ------------------------------------------------------------------------------------------ jobs
def _plan_job(sat: Satellite, stations: Sequence[CatalogueStation], cfg: MissionConfig, origin_utc: datetime,
              start_utc: datetime, days: float, seed: int, first_night: date, clear: dict[str, np.ndarray],
              ec: str, finite_key: str, grid_points: int, slice_s: float) -> list[dict]:
    """Find the passes of one satellite over all stations in one time chunk and compute their expected key."""
    from .fastkey import expected_pass

    t_job, c_job = time.perf_counter(), time.process_time()
    by_name = {s.name: s for s in stations}
    sites = [station_site(cfg, s) for s in stations]
    cfgs = {s.name: station_config(cfg, s) for s in stations}
    passes = find_network_passes([sat], sites, start_utc, days, grid_origin_utc=origin_utc)
    out = []
    for p in passes:
        st = by_name[p.station]
        g = p.geometry
        night = night_of(g.start_utc, st.longitude_deg)
        k = (night - first_night).days
        is_clear = bool(clear[st.name][k]) if 0 <= k < clear[st.name].size else False
        rec = dict(satellite=p.satellite, station=p.station, start_utc=g.start_utc.isoformat(),
                   end_utc=(g.start_utc + timedelta(seconds=float(g.t_s[-1]))).isoformat(),
                   duration_s=round(p.duration_s, 3), max_elevation_deg=round(p.max_elevation_deg, 3),
                   min_range_km=round(p.min_range_km, 3), night=night.isoformat(), month=f"{night:%Y-%m}",
                   clear=is_clear, sifted_bits=0.0, qber=None, final_key_bits=0, abort_reason=None if is_clear else "cloudy")
        if is_clear:
            link = planning_link(cfgs[st.name], g, np.random.default_rng(_pass_seed(seed, p.satellite, p.station, g.start_utc)))
            e = expected_pass(cfgs[st.name], link, ec=ec, finite_key=finite_key, grid_points=grid_points, slice_s=slice_s)
            rec.update(sifted_bits=round(float(e.sifted_bits), 1), qber=round(float(e.qber), 6) if math.isfinite(e.qber) else None,
                       final_key_bits=int(e.final_key_bits), abort_reason=e.abort_reason if e.aborted else None)
        out.append(rec)
    if out:
        out[0]["_job_seconds"] = time.perf_counter() - t_job
        out[0]["_job_cpu_seconds"] = time.process_time() - c_job
    return out


def _pool_context():
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _execute(jobs: list[tuple], workers: int, scheduler, progress: Callable[[int, int], None] | None) -> tuple[list, str]:
    results: list = [None] * len(jobs)
    total = len(jobs)
    done = 0

    def tick():
        if progress is not None:
            progress(done, total)

    if scheduler is not None:
        try:
            import distributed
        except ImportError:
            raise PlanInputError("scheduler: Dask needs the 'dask' extra (pip install 'satqkd[dask]')") from None
        own = isinstance(scheduler, str)
        client = distributed.Client(scheduler) if own else scheduler
        try:
            futs = {client.submit(_plan_job, *a, pure=False): i for i, a in enumerate(jobs)}
            for f in distributed.as_completed(list(futs)):
                results[futs[f]] = f.result()
                done += 1
                tick()
            where = scheduler if own else getattr(getattr(client, "scheduler", None), "address", "client")
        finally:
            if own:
                client.close()
        return results, f"dask ({where})"
    if workers > 1 and total > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        n = min(workers, total)
        with ProcessPoolExecutor(max_workers=n, mp_context=_pool_context()) as ex:
            futs = {ex.submit(_plan_job, *a): i for i, a in enumerate(jobs)}
            for f in as_completed(futs):
                results[futs[f]] = f.result()
                done += 1
                tick()
        return results, f"process pool ({n} workers)"
    for i, a in enumerate(jobs):
        results[i] = _plan_job(*a)
        done += 1
        tick()
    return results, "serial"


# ---------------------------------------------------------------------------------------- relays
def pair_name(a: str, b: str) -> str:
    return f"{a}–{b}"


def replay_relays(passes: Sequence[dict], stations: Sequence[str], leftover: dict | None = None) -> list[dict]:
    """Relays under the module's sharing rule, replayed in time order; one dict per relay.

    ``passes``: records with ``satellite``, ``station``, ``end_utc`` (ISO), ``final_key_bits``.
    Returns ``{satellite, pair, a, b, time_utc, trigger_station, length_bits, storage_hours_mean,
    storage_hours_max}`` per relay. If ``leftover`` is a dict it receives, per pair name, the key bits
    still on board at the end (both directions, all satellites): deposited for the pair but never relayed.
    """
    from .relay import AUTH_BITS_PER_LINK, relay_length_bits

    order = {s: i for i, s in enumerate(stations)}
    n = len(stations)
    if n < 2:
        return []
    pools: dict[tuple[str, str, str], deque] = {}
    out = []
    recs = sorted((p for p in passes if p["final_key_bits"] > 0), key=lambda p: (p["end_utc"], p["satellite"], p["station"]))
    for p in recs:
        sat, x = p["satellite"], p["station"]
        t = datetime.fromisoformat(p["end_utc"])
        share = int(p["final_key_bits"]) // (n - 1)
        if share <= 0:
            continue
        for y in stations:
            if y != x:
                pools.setdefault((sat, x, y), deque()).append([share, t])
        for y in stations:
            if y == x:
                continue
            px, py = pools.get((sat, x, y)), pools.get((sat, y, x))
            if not px or not py:
                continue
            avail_x, avail_y = sum(c[0] for c in px), sum(c[0] for c in py)
            L = relay_length_bits(avail_x, avail_y)
            if L <= 0:
                continue
            ages = []
            for pool in (px, py):
                need = L + AUTH_BITS_PER_LINK
                while need > 0 and pool:
                    take = min(need, pool[0][0])
                    ages.append((take, (t - pool[0][1]).total_seconds() / 3600.0))
                    pool[0][0] -= take
                    need -= take
                    if pool[0][0] == 0:
                        pool.popleft()
            w = sum(a for a, _ in ages)
            a, b = sorted((x, y), key=order.get)
            out.append(dict(satellite=sat, pair=pair_name(a, b), a=a, b=b, time_utc=t.isoformat(), trigger_station=x,
                            length_bits=int(L), storage_hours_mean=round(sum(a_ * h for a_, h in ages) / w, 3),
                            storage_hours_max=round(max(h for _, h in ages), 3)))
    if leftover is not None:
        for (sat, x, y), pool in pools.items():
            a, b = sorted((x, y), key=order.get)
            k = pair_name(a, b)
            leftover[k] = leftover.get(k, 0) + int(sum(c[0] for c in pool))
    return out


# ---------------------------------------------------------------------------------------- result
@dataclass
class PlanResult:
    """A network plan. Tables are pandas DataFrames; :meth:`to_json` is ``plan.json``."""

    settings: dict
    passes: object  # DataFrame, one row per pass
    relays: object  # DataFrame, one row per relay
    station_monthly: object  # DataFrame: station, month, passes, clear_passes, passes_with_key, final_key_bits, sifted_bits
    pair_monthly: object  # DataFrame: pair, month, relays, relayed_key_bits
    stations: dict
    pairs: dict
    event_level: list = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_json(self) -> dict:
        return {"settings": {**self.settings, "wall_seconds": round(self.wall_seconds, 2)}, "stations": self.stations,
                "pairs": self.pairs, "event_level_sample": self.event_level,
                "totals": {"passes": int(len(self.passes)), "final_key_bits": int(self.passes["final_key_bits"].sum()) if len(self.passes) else 0,
                           "relayed_key_bits": int(self.relays["length_bits"].sum()) if len(self.relays) else 0}}

    def __repr__(self) -> str:
        tot = self.to_json()["totals"]
        return (f"PlanResult({len(self.settings['satellites'])} satellites × {len(self.stations)} stations, "
                f"{self.settings['days']:g} days: {tot['passes']:,} passes, {tot['final_key_bits'] / 1e6:.1f} Mbit final key, "
                f"{tot['relayed_key_bits'] / 1e6:.2f} Mbit relayed over {sum(1 for v in self.pairs.values() if v['relayed_key_bits'])} pairs)")


_PASS_COLUMNS = ("satellite", "station", "start_utc", "end_utc", "duration_s", "max_elevation_deg", "min_range_km",
                 "night", "month", "clear", "sifted_bits", "qber", "final_key_bits", "abort_reason")
_RELAY_COLUMNS = ("satellite", "pair", "a", "b", "time_utc", "trigger_station", "length_bits", "storage_hours_mean",
                  "storage_hours_max")


def _months(start: datetime, days: float) -> list[str]:
    out, d = [], start.date().replace(day=1)
    end = (start + timedelta(days=days)).date()
    while d <= end:
        out.append(f"{d:%Y-%m}")
        d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def _tables(records: list[dict], relays: list[dict], stations: Sequence[CatalogueStation], months: list[str], days: float):
    import pandas as pd

    passes = pd.DataFrame(records, columns=list(_PASS_COLUMNS))
    rel = pd.DataFrame(relays, columns=list(_RELAY_COLUMNS))
    names = [s.name for s in stations]
    ms = sorted(set(months) | set(passes["month"]))
    idx = pd.MultiIndex.from_product([names, ms], names=["station", "month"])
    if len(passes):
        g = passes.assign(with_key=passes["final_key_bits"] > 0).groupby(["station", "month"])
        sm = pd.DataFrame({"passes": g.size(), "clear_passes": g["clear"].sum(), "passes_with_key": g["with_key"].sum(),
                           "final_key_bits": g["final_key_bits"].sum(), "sifted_bits": g["sifted_bits"].sum()})
    else:
        sm = pd.DataFrame(columns=["passes", "clear_passes", "passes_with_key", "final_key_bits", "sifted_bits"])
    sm = sm.reindex(idx, fill_value=0).reset_index()
    for c in ("passes", "clear_passes", "passes_with_key", "final_key_bits"):
        sm[c] = sm[c].astype("int64")
    pairs = [pair_name(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    pidx = pd.MultiIndex.from_product([pairs, ms], names=["pair", "month"])
    if len(rel):
        r = rel.assign(month=rel["time_utc"].str[:7]).groupby(["pair", "month"])
        pm = pd.DataFrame({"relays": r.size(), "relayed_key_bits": r["length_bits"].sum()})
    else:
        pm = pd.DataFrame(columns=["relays", "relayed_key_bits"])
    pm = pm.reindex(pidx, fill_value=0).reset_index()
    pm[["relays", "relayed_key_bits"]] = pm[["relays", "relayed_key_bits"]].astype("int64")
    st_sum = {}
    for s in stations:
        sub = passes[passes["station"] == s.name]
        st_sum[s.name] = {
            "passes": int(len(sub)), "clear_passes": int(sub["clear"].sum()), "passes_with_key": int((sub["final_key_bits"] > 0).sum()),
            "final_key_bits": int(sub["final_key_bits"].sum()), "sifted_bits": float(sub["sifted_bits"].sum()),
            "final_key_bits_per_day": float(sub["final_key_bits"].sum()) / days,
            "latitude_deg": s.latitude_deg, "longitude_deg": s.longitude_deg, "altitude_m": s.altitude_m,
            "clear_sky_monthly": list(s.clear_sky_monthly), "clear_sky_source": s.clear_sky_source,
        }
    pr_sum = {}
    for pn in pairs:
        sub = rel[rel["pair"] == pn]
        w = sub["length_bits"].sum()
        pr_sum[pn] = {
            "relays": int(len(sub)), "relayed_key_bits": int(w), "relayed_key_bits_per_day": float(w) / days,
            "storage_hours_mean": float((sub["length_bits"] * sub["storage_hours_mean"]).sum() / w) if w else None,
            "storage_hours_max": float(sub["storage_hours_max"].max()) if len(sub) else None,
        }
    return passes, rel, sm, pm, st_sum, pr_sum


# --------------------------------------------------------------------------------------- the job
def plan_network(
    *,
    satellites: str | Path | Sequence[Satellite] | None = None,
    walker: str | None = None,
    stations: str | Path | Sequence = "xinglong,nanshan",
    days: float = 365.0,
    seed: int = 0,
    start_utc: datetime | None = None,
    config: MissionConfig | None = None,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    workers: int = 1,
    scheduler=None,
    event_level_sample: int = 0,
    grid_points: int = 5,
    slice_s: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
) -> PlanResult:
    """Plan a network (module docstring). Returns a :class:`PlanResult` whose tables are DataFrames.

    ``satellites``: a TLE file or a list of :class:`~satqkd.sky.constellation.Satellite`; ``walker``:
    ``"ALT_KM:INC_DEG:T/P/F"``; neither: the preset's satellite. ``stations``: catalogue names
    (comma-separated or a list), or a TOML file. ``start_utc`` defaults to the preset's search start
    (the TLE's epoch region for Micius). ``config``: the mission (terminal, source, detectors,
    rules; default preset ``micius-2016-12-19``). ``grid_points``/``slice_s``: the fast model's
    worst-case grid and integration slice. ``progress(done_jobs, total_jobs)``.

    Raises :class:`PlanInputError` (a ``ValueError``) naming the bad field.
    """
    t_wall = time.perf_counter()
    cfg = config if config is not None else load_preset("micius-2016-12-19")
    if not (isinstance(days, (int, float)) and 0 < days <= 366):
        raise PlanInputError(f"days must lie in (0, 366], got {days!r}")
    if not isinstance(seed, int) or seed < 0:
        raise PlanInputError(f"seed must be an integer ≥ 0, got {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise PlanInputError(f"workers must be an integer ≥ 1, got {workers!r}")
    if not isinstance(event_level_sample, int) or event_level_sample < 0:
        raise PlanInputError(f"event_level_sample must be an integer ≥ 0, got {event_level_sample!r}")
    start = start_utc or cfg.passes.search_start_utc
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if satellites is not None and walker is not None:
        raise PlanInputError("satellites: give a TLE file or a Walker constellation, not both")
    if walker is not None:
        sats = parse_walker(walker, start)
    elif satellites is None:
        sats = [satellite_of_orbit(cfg.orbit, cfg.satellite)]
    elif isinstance(satellites, (str, Path)):
        sats = read_tle_file(satellites)
    else:
        sats = list(satellites)
    sts = load_stations(stations)
    first_night = min(night_of(start, s.longitude_deg) for s in sts) - timedelta(days=1)
    n_nights = int(math.ceil(days)) + 3
    clear = {s.name: clear_nights(seed, s, first_night, n_nights) for s in sts}
    chunks = []
    t = 0.0
    while t < days - 1e-9:
        d = min(CHUNK_DAYS, days - t)
        chunks.append((start + timedelta(days=t), d))
        t += d
    jobs = [(sat, sts, cfg, start, c0, d, seed, first_night, clear, ec, finite_key, grid_points, slice_s)
            for sat in sats for c0, d in chunks]
    t_exec = time.perf_counter()
    results, executor = _execute(jobs, workers, scheduler, progress)
    t_exec = time.perf_counter() - t_exec
    records = [r for res in results for r in res]
    job_seconds = [r.pop("_job_seconds") for r in records if "_job_seconds" in r]
    job_cpu = [r.pop("_job_cpu_seconds") for r in records if "_job_cpu_seconds" in r]
    records.sort(key=lambda r: (r["start_utc"], r["satellite"], r["station"]))
    left: dict[str, int] = {}
    relays = replay_relays(records, [s.name for s in sts], left)
    passes, rel, sm, pm, st_sum, pr_sum = _tables(records, relays, sts, _months(start, days), float(days))
    for k, v in pr_sum.items():
        v["left_on_board_bits"] = int(left.get(k, 0))
    ev = _event_level_sample(records, sats, sts, cfg, start, seed, event_level_sample, ec, finite_key) if event_level_sample else []
    settings = {
        "satellites": [s.name for s in sats], "walker": walker, "stations": [s.name for s in sts], "days": float(days),
        "seed": seed, "start_utc": start.isoformat(), "end_utc": (start + timedelta(days=days)).isoformat(),
        "ec": ec, "finite_key": finite_key, "model": "expected-key (satqkd.jobs.fastkey)", "grid_points": grid_points,
        "slice_s": slice_s, "executor": executor, "jobs": len(jobs), "job_seconds_sum": round(sum(job_seconds), 2),
        "job_cpu_seconds_sum": round(sum(job_cpu), 2),
        "executor_seconds": round(t_exec, 2),
        "relay_rule": "equal split of each pass key over the station's N-1 pairs; relay after every pass: "
                      "L = min(pool) - auth bits per link, whole bytes; FIFO; no key moves between satellites",
        "weather": "per station-night, clear iff u < clear_sky_monthly[month]; u from SeedSequence([seed, PLAN_WEATHER_STREAM, crc32(name)])",
    }
    return PlanResult(settings, passes, rel, sm, pm, st_sum, pr_sum, ev, time.perf_counter() - t_wall)


def _event_level_sample(records, sats, sts, cfg, origin, seed, n, ec, finite_key) -> list[dict]:
    """Re-run ``n`` clear passes (drawn with the plan seed) through the event simulator and the protocol."""
    from .one_pass import run_pass

    clear = [i for i, r in enumerate(records) if r["clear"]]
    if not clear:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SAMPLE_STREAM]))
    pick = sorted(rng.choice(clear, size=min(n, len(clear)), replace=False).tolist())
    by_sat = {s.name: s for s in sats}
    by_st = {s.name: s for s in sts}
    out = []
    for i in pick:
        r = records[i]
        st = by_st[r["station"]]
        t0 = datetime.fromisoformat(r["start_utc"])
        found = find_network_passes([by_sat[r["satellite"]]], [station_site(cfg, st)], t0 - timedelta(minutes=20),
                                    40.0 / 1440, grid_origin_utc=origin)
        found = [f for f in found if f.start_utc == t0]
        if not found:
            continue
        g = found[0].geometry
        s = int(_pass_seed(seed, r["satellite"], r["station"], g.start_utc).generate_state(1, np.uint64)[0] >> 1)
        o = run_pass(station_config(cfg, st), g, s, ec=ec, finite_key=finite_key)
        out.append({"satellite": r["satellite"], "station": r["station"], "start_utc": r["start_utc"],
                    "max_elevation_deg": r["max_elevation_deg"], "fast_final_key_bits": r["final_key_bits"],
                    "event_final_key_bits": int(o.summary.get("final_key_bits", 0) or 0),
                    "fast_sifted_bits": r["sifted_bits"], "event_sifted_bits": int(o.summary.get("sifted_key_bits", 0) or 0),
                    "event_seed": s, "event_seconds": round(o.seconds, 2)})
    return out


# --------------------------------------------------------------------------------------- outputs
def write_plan_outputs(res: PlanResult, out_dir: str | Path, *, figures: bool = True) -> list[Path]:
    """``plan.json``, ``passes.parquet`` (pyarrow installed) or ``passes.csv``, ``stations_monthly.csv``,
    ``pairs_monthly.csv``, ``relays.csv`` and, with ``figures``, ``coverage.png``, ``map.png`` and ``plan.html``."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    p = out / "plan.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res.to_json(), indent=1, default=str))
    tmp.replace(p)
    files.append(p)
    try:
        import pyarrow  # noqa: F401

        res.passes.to_parquet(out / "passes.parquet", index=False)
        files.append(out / "passes.parquet")
    except ImportError:
        res.passes.to_csv(out / "passes.csv", index=False)
        files.append(out / "passes.csv")
    for name, df in (("stations_monthly.csv", res.station_monthly), ("pairs_monthly.csv", res.pair_monthly),
                     ("relays.csv", res.relays)):
        df.to_csv(out / name, index=False)
        files.append(out / name)
    if figures:
        from .plan_report import write_figures

        files += write_figures(res, out)
    return files
