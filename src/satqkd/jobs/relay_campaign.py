"""Relay campaigns: how much relayed key per day do two stations get through a trusted satellite over N days?

The outlook of Liao et al., Nature 549, 43 (2017): QKD with Xinglong, keep the key on board, QKD with
Nanshan near Urumqi ~1.6 h later, announce ``K_X ⊕ K_N`` so that both stations share a key.
:func:`satqkd.jobs.relay.run_relay` does that once, end to end, for one pair of passes (key stores,
authenticated announcement, two-phase commit). A relay campaign asks the long-run question:

1. **both stations' passes** — every QKD window of the span over ``cfg.station`` and over
   ``cfg.second_station`` (:func:`satqkd.jobs.campaign.plan_campaign`, same rules for both);
2. **weather per station** — each station's local nights are clear with probability
   ``clear_sky_probability``, drawn from *independent* streams (the sites are ~2,500 km apart: their
   cloud is modelled as uncorrelated; no shared weather systems);
3. **every clear pass of both stations** is simulated and post-processed (:func:`satqkd.jobs.one_pass.run_pass`),
   all on one executor (serial, process pool or Dask: :func:`satqkd.jobs.campaign.run_campaign`'s machinery);
4. **the satellite's key budget is replayed in time order** (:func:`replay_relays`).

The replay is *accounting over the simulated pass keys' lengths*: the passes are fully simulated
and post-processed, but no key store is filled and no announcement is authenticated per relay
(``jobs.relay.run_relay`` runs that protocol for one pair; its rule and constants are used here):

* the satellite holds a pool of available key per station: each pass with key adds the satellite's
  own directional stream of its final key (``keys.store.direction_window``: about half; the
  station → satellite stream is never relayed, see docs/key-delivery.md), in whole bytes (a key store
  keeps whole bytes; the 0–7 bit tail is counted as ``truncated``);
* right after each pass (at its end time), if both pools allow it, the satellite relays
  ``L = min(pool_1, pool_2) − AUTH_BITS_PER_LINK`` bits, rounded down to whole bytes, nothing if
  ``L < 8`` (:func:`satqkd.jobs.relay.relay_length_bits`). Each link first gives
  :data:`~satqkd.jobs.relay.AUTH_BITS_PER_LINK` bits of its pool to authenticate the exchange, then
  ``L`` bits are relayed from each pool. Bits are taken oldest pass key first; the rest stays on
  board for later relays;
* the relayed key's ε is the sum of the ε of every pass key that gave bits to the relay
  (relayed or authentication bits) plus the forgery bound of the relay's messages on both links
  (:func:`satqkd.jobs.relay.relay_forgery_bound`, sized for an announcement naming every segment):
  the union bound of ``jobs.relay``, applied conservatively — a pass key spread over several relays
  counts its whole ε in each;
* the **storage time** of a bit is the time between the end of the pass that produced it and the
  relay that used it (post-processing time on board is not counted). A relay's ``storage_hours`` is
  that of its oldest bit: how long the satellite, the trusted node, had to keep key that the relayed
  key depends on.

Seeds (``numpy.random.SeedSequence``; independent of the executor, like single-station campaigns):
the first station's passes and weather use exactly the streams of :func:`satqkd.jobs.campaign.run_campaign`
(``SeedSequence([seed, i])`` and ``[seed, WEATHER_STREAM]``), so its records equal a single-station
campaign's with the same seed. The second station's pass ``i`` uses ``SeedSequence([seed,
SECOND_STATION_STREAM, i])`` and its weather ``SeedSequence([seed, SECOND_STATION_STREAM,
WEATHER_STREAM])``. (SeedSequence pads entropy with zeros, so ``[seed, SECOND_STATION_STREAM, 0]``
equals ``[seed, SECOND_STATION_STREAM]``, the first station's pass number 1.4·10⁹: never reached.)

Example::

    >>> import satqkd
    >>> cfg = satqkd.load_preset("micius-relay-xinglong-nanshan")
    >>> res = satqkd.run_relay_campaign(cfg, days=7, seed=1, workers=2)  # doctest: +SKIP
    >>> res.relayed_bits_total, res.relayed_bits_per_day, res.relays     # doctest: +SKIP
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from . import campaign as _campaign
from . import relay as _relay
from .campaign import (
    PASS_COLUMNS,
    WEATHER_STREAM,
    CampaignResult,
    PassRecord,
    check_campaign_args,
    clear_nights,
    pass_seed,
    plot_campaign,
    plot_key_vs_elevation,
    plot_peak_rate_vs_range,
    write_csv,
)
from ..config import DEFAULT_EC_METHOD, MissionConfig
from ..keys.relay import RelayAnnouncement
from ..keys.store import Segment, direction_window, key_id_for
from .relay import AUTH_BITS_PER_LINK, announcement_bytes, relay_forgery_bound, relay_length_bits

__all__ = [
    "SECOND_STATION_STREAM",
    "Draw",
    "RelayCampaignResult",
    "RelayEvent",
    "RelayLedger",
    "check_relay_config",
    "replay_relays",
    "run_relay_campaign",
    "second_station_pass_seed",
    "second_station_weather",
    "write_relay_campaign_outputs",
]

#: Second word of the second station's seed streams ("STN2"): ``SeedSequence([seed, SECOND_STATION_STREAM, ...])``.
SECOND_STATION_STREAM = 0x53544E32


# ------------------------------------------------------------------------------------------ seeds
def second_station_pass_seed(seed: int, index: int) -> int:
    """Seed of the second station's pass ``index``: 63 bits of ``SeedSequence([seed, SECOND_STATION_STREAM, index])``."""
    ss = np.random.SeedSequence([int(seed), SECOND_STATION_STREAM, int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def second_station_weather(seed: int, n_nights: int, clear_sky_probability: float) -> np.ndarray:
    """The second station's clear nights: as :func:`satqkd.jobs.campaign.weather`, from its own stream."""
    return clear_nights([int(seed), SECOND_STATION_STREAM, WEATHER_STREAM], n_nights, clear_sky_probability)


def check_relay_config(cfg: MissionConfig) -> MissionConfig:
    """The second station's config (``cfg`` with ``station = cfg.second_station``); ``ValueError`` without one."""
    if cfg.second_station is None:
        raise ValueError(f"second_station: a relay campaign needs a config with [second_station] "
                         f"(e.g. preset {_relay.RELAY_PRESET!r}); config {cfg.name!r} has none")
    if cfg.second_station.name == cfg.station.name:
        raise ValueError(f"second_station: its name must differ from the first station's ({cfg.station.name!r})")
    return _relay.second_station_config(cfg)


# ------------------------------------------------------------------------------------------ replay
@dataclass(frozen=True)
class Draw:
    """Bits one relay took from one pass key on board: ``auth_bits`` for authentication, then ``relayed_bits``."""

    station: str
    pass_index: int
    offset_bits: int
    auth_bits: int
    relayed_bits: int
    #: hours between the end of that pass and the relay
    stored_hours: float
    epsilon: float | None

    @property
    def bits(self) -> int:
        return self.auth_bits + self.relayed_bits


@dataclass(frozen=True)
class RelayEvent:
    """One relay of the replay: ``length_bits`` of key now shared by the two stations."""

    index: int
    #: the end of the pass after which the relay happened
    time_utc: str
    trigger_station: str
    trigger_pass: int
    length_bits: int
    pool_before: dict
    pool_after: dict
    draws: tuple[Draw, ...]
    #: Σ ε of the pass keys drawn on (None if one of them has no ε)
    pass_epsilon_sum: float | None
    forgery_bound: float
    epsilon: float | None
    auth_bits_per_link: int = AUTH_BITS_PER_LINK

    def passes(self, station: str) -> list[int]:
        """Indices of ``station``'s passes whose keys gave bits to this relay (oldest first)."""
        return [d.pass_index for d in self.draws if d.station == station]

    @property
    def storage_hours(self) -> float:
        """Hours the oldest bit this relay used was kept on board."""
        return max(d.stored_hours for d in self.draws)

    def storage_hours_of(self, station: str) -> float:
        return max((d.stored_hours for d in self.draws if d.station == station), default=0.0)

    def to_json(self) -> dict:
        d = asdict(self)
        d["draws"] = [asdict(x) for x in self.draws]
        d["storage_hours"] = round(self.storage_hours, 4)
        return d


@dataclass
class _Held:
    index: int
    end: datetime
    bits: int
    epsilon: float | None
    offset: int = 0

    @property
    def left(self) -> int:
        return self.bits - self.offset


@dataclass
class RelayLedger:
    """Outcome of :func:`replay_relays`: the relays and each station's key accounting (bits)."""

    stations: tuple[str, str]
    events: list[RelayEvent]
    #: Σ final key of the station's passes (as the records say)
    pass_key_bits: dict
    #: bits of those keys below whole bytes (not storable)
    truncated_bits: dict
    #: bits spent authenticating relays (AUTH_BITS_PER_LINK per relay and link)
    auth_bits: dict
    #: bits relayed (the same at both stations)
    relayed_bits: int
    #: bits still on board at the end, per station, and the end time of the oldest pass they come from
    left_bits: dict
    left_oldest_end_utc: dict
    #: pools after every change: (time UTC ISO, {station: bits}) — deposits and relays, in time order
    timeline: list = field(default_factory=list, repr=False)
    #: bits of each pass key in the station → satellite direction (``keys.store.direction_window``):
    #: one-time pad for what that station sends the satellite, never relayed (a pad the station may
    #: already have used must never appear in a published announcement)
    station_stream_bits: dict = field(default_factory=dict)

    def balance_ok(self) -> bool:
        """Σ pass keys = relayed + authentication + left on board + station streams + truncated."""
        return all(self.pass_key_bits[s] == self.relayed_bits + self.auth_bits[s] + self.left_bits[s]
                   + self.station_stream_bits.get(s, 0) + self.truncated_bits[s] for s in self.stations)

    def totals(self, days: float, end_utc: datetime | None = None) -> dict:
        st = [e.storage_hours for e in self.events]
        eps = [e.epsilon for e in self.events]
        age = {s: (None if self.left_oldest_end_utc[s] is None or end_utc is None else
                   round((end_utc - datetime.fromisoformat(self.left_oldest_end_utc[s])).total_seconds() / 3600, 3))
               for s in self.stations}
        return {
            "relays": len(self.events),
            "relayed_bits_total": self.relayed_bits,
            "relayed_bits_per_day": self.relayed_bits / days,
            "pass_key_bits": dict(self.pass_key_bits),
            "auth_bits": dict(self.auth_bits),
            "truncated_bits": dict(self.truncated_bits),
            "left_on_board_bits": dict(self.left_bits),
            "left_on_board_oldest_hours": age,
            "storage_hours_mean": float(np.mean(st)) if st else None,
            "storage_hours_max": max(st) if st else None,
            "max_relay_epsilon": (None if any(e is None for e in eps) else max(eps)) if eps else None,
            "first_relay_utc": self.events[0].time_utc if self.events else None,
            "balance_ok": self.balance_ok(),
        }


def _stored_bits(r: PassRecord) -> int:
    return 8 * (r.final_key_bits // 8) if r.has_key else 0


def _take(pool: deque, n: int) -> list[tuple[_Held, int, int]]:
    """Take ``n`` bits from the oldest keys of ``pool``: [(held key, offset, bits)]."""
    out = []
    while n > 0:
        h = pool[0]
        k = min(n, h.left)
        out.append((h, h.offset, k))
        h.offset += k
        n -= k
        if h.left == 0:
            pool.popleft()
    return out


def replay_relays(first: Sequence[PassRecord], second: Sequence[PassRecord], *, stations: tuple[str, str] = ("first", "second"),
                  satellite: str = "satellite", directional: bool = True) -> RelayLedger:
    """Replay the satellite's key budget over two stations' pass records, in time order (module docstring).

    ``directional=False`` treats every pass key as relayable (the pool arithmetic alone, for tests of the
    rule); the default keeps the station → satellite stream of each key out of the relay, as ``jobs.relay``.

    After every pass with key (ordered by end time; ties: first station first), the pass's key
    (whole bytes) joins its station's pool, then a relay happens if
    :func:`satqkd.jobs.relay.relay_length_bits` of the two pools is positive.
    """
    a, b = stations
    if a == b:
        raise ValueError(f"stations must have two different names, got {stations!r}")
    pools = {a: deque(), b: deque()}
    level = {a: 0, b: 0}
    order = sorted([(datetime.fromisoformat(r.end_utc), 0, r.index, a, r) for r in first]
                   + [(datetime.fromisoformat(r.end_utc), 1, r.index, b, r) for r in second])
    events: list[RelayEvent] = []
    timeline: list = []
    auth = {a: 0, b: 0}
    relayed = 0
    stream = {a: 0, b: 0}
    for end, _, _, s, r in order:
        n = _stored_bits(r)
        if n == 0:
            continue
        if directional:  # the satellite's own stream of the pass key is what it may relay
            lo, hi = direction_window(satellite, s, n)
            stream[s] += n - (hi - lo)
            n = hi - lo
        pools[s].append(_Held(r.index, end, n, r.epsilon))
        level[s] += n
        timeline.append((end.isoformat(), dict(level)))
        L = relay_length_bits(level[a], level[b])
        if L == 0:
            continue
        before = dict(level)
        draws: list[Draw] = []
        segs: dict[str, list[Segment]] = {a: [], b: []}
        for st in (a, b):
            per: dict[int, list] = {}
            for h, off, k in _take(pools[st], AUTH_BITS_PER_LINK):
                per.setdefault(h.index, [h, off, 0, 0])[2] += k
            for h, off, k in _take(pools[st], L):
                e = per.setdefault(h.index, [h, off, 0, 0])
                e[3] += k
                root = key_id_for(f"campaign|{satellite}|{st}|pass{h.index}")
                segs[st].append(Segment(key_id_for(f"{root}|relay{len(events)}"), root, off, k))
            for h, off, na, nr in per.values():
                draws.append(Draw(st, h.index, off, na, nr, round((end - h.end).total_seconds() / 3600.0, 4), h.epsilon))
            level[st] -= AUTH_BITS_PER_LINK + L
            auth[st] += AUTH_BITS_PER_LINK
        relayed += L
        ann = RelayAnnouncement(key_id_for(f"campaign-relay|{satellite}|{a}|{b}|{len(events)}"), satellite, a, b,
                                tuple(segs[a]), tuple(segs[b]), bytes(L // 8))
        forgery = relay_forgery_bound(announcement_bytes(ann), links=2)
        eps = [d.epsilon for d in draws]
        eps_sum = None if any(e is None for e in eps) else float(sum(eps))
        events.append(RelayEvent(
            index=len(events), time_utc=end.isoformat(), trigger_station=s, trigger_pass=r.index, length_bits=L,
            pool_before=before, pool_after=dict(level), draws=tuple(draws), pass_epsilon_sum=eps_sum,
            forgery_bound=forgery, epsilon=None if eps_sum is None else eps_sum + forgery))
        timeline.append((end.isoformat(), dict(level)))
    key = {a: sum(x.final_key_bits for x in first if x.has_key), b: sum(x.final_key_bits for x in second if x.has_key)}
    trunc = {a: sum(x.final_key_bits - _stored_bits(x) for x in first if x.has_key),
             b: sum(x.final_key_bits - _stored_bits(x) for x in second if x.has_key)}
    return RelayLedger(
        stations=(a, b), events=events, pass_key_bits=key, truncated_bits=trunc, auth_bits=auth, relayed_bits=relayed,
        left_bits=dict(level), left_oldest_end_utc={st: (pools[st][0].end.isoformat() if pools[st] else None) for st in (a, b)},
        timeline=timeline, station_stream_bits=stream,
    )


# ------------------------------------------------------------------------------------------ result
_MODEL_NOTE = ("accounting replay over the simulated pass keys' lengths: every pass is simulated and post-processed, "
               "but no key store is filled and no announcement is authenticated per relay (satqkd.jobs.relay.run_relay "
               "runs that protocol for one pair of passes, with the same rule and constants)")
_RULE_NOTE = ("after each pass with key: L = min(pool_1, pool_2) - AUTH_BITS_PER_LINK, rounded down to whole bytes, "
              "no relay if L < 8; each link gives AUTH_BITS_PER_LINK bits to authentication, then L bits are relayed "
              "from each pool, oldest pass key first; pools hold whole bytes of each pass key")
_EPS_NOTE = ("epsilon of a relayed key = sum of the epsilons of every pass key it drew bits from (relayed or "
             "authentication bits) + the forgery bound of the relay messages on both links (union bound; a pass "
             "key spread over several relays counts in each)")


@dataclass
class RelayCampaignResult:
    """Outcome of :func:`run_relay_campaign`: both stations' campaigns and the relay replay.

    ``first`` and ``second`` are ordinary :class:`~satqkd.jobs.campaign.CampaignResult` (their
    ``executor`` and ``wall_seconds`` are the whole relay campaign's); ``ledger`` the relays.
    """

    first: CampaignResult
    second: CampaignResult
    ledger: RelayLedger
    executor: str = "serial"
    wall_seconds: float = 0.0

    @property
    def stations(self) -> tuple[str, str]:
        return self.ledger.stations

    @property
    def days(self) -> float:
        return self.first.days

    @property
    def seed(self) -> int:
        return self.first.seed

    @property
    def relays(self) -> list[RelayEvent]:
        return self.ledger.events

    @property
    def relayed_bits_total(self) -> int:
        return self.ledger.relayed_bits

    @property
    def relayed_bits_per_day(self) -> float:
        return self.ledger.relayed_bits / self.days

    @property
    def passes_error(self) -> int:
        return self.first.passes_error + self.second.passes_error

    @property
    def end_utc(self) -> datetime:
        return datetime.fromisoformat(self.first.search_start_utc) + timedelta(days=self.days)

    def totals(self) -> dict:
        return self.ledger.totals(self.days, self.end_utc)

    def to_json(self) -> dict:
        f = self.first
        meta = {"kind": "relay", "preset": f.preset, "satellite": f.satellite, "first_station": self.stations[0],
                "second_station": self.stations[1], "search_start_utc": f.search_start_utc, "days": f.days,
                "seed": f.seed, "clear_sky_probability": f.clear_sky_probability, "ec": f.ec,
                "finite_key": f.finite_key, "executor": self.executor, "wall_seconds": self.wall_seconds}
        return {**meta,
                "seed_note": "first station: the single-station campaign's streams; second station: "
                             "SeedSequence([seed, SECOND_STATION_STREAM, i]) per pass, "
                             "[seed, SECOND_STATION_STREAM, WEATHER_STREAM] for its (independent) weather",
                "stations": [f.to_json(), self.second.to_json()],
                "relay": {"model": _MODEL_NOTE, "rule": _RULE_NOTE, "epsilon_note": _EPS_NOTE,
                          "auth_bits_per_link": AUTH_BITS_PER_LINK, "second_station_stream": SECOND_STATION_STREAM,
                          "totals": self.totals(), "events": [e.to_json() for e in self.relays]}}

    def __repr__(self) -> str:
        t = self.totals()
        st = f", storage on board mean {t['storage_hours_mean']:.1f} h, max {t['storage_hours_max']:.1f} h" \
            if t["relays"] else ""
        return (f"RelayCampaignResult({self.first.preset}: {self.first.satellite} relaying {self.stations[0]} ⇄ "
                f"{self.stations[1]}, {self.days:g} d, seed {self.seed}: {self.first.passes_with_key} + "
                f"{self.second.passes_with_key} passes with key; {t['relays']} relays, {self.relayed_bits_total:,} "
                f"bits relayed ({self.relayed_bits_per_day:,.0f} bits/day){st})")


# ------------------------------------------------------------------------------------------ run
def run_relay_campaign(
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
) -> RelayCampaignResult:
    """Every pass of ``cfg.station`` and ``cfg.second_station`` in the span, then the relay replay (module docstring).

    Arguments as :func:`satqkd.jobs.campaign.run_campaign`; ``progress(done, total)`` counts the passes
    of both stations. Bad arguments, or a config without ``[second_station]``, raise ``ValueError``
    before anything runs.
    """
    check_campaign_args(days=days, seed=seed, workers=workers, scheduler=scheduler,
                        clear_sky_probability=clear_sky_probability, ec=ec, finite_key=finite_key)
    cfg2 = check_relay_config(cfg)
    t_start = time.perf_counter()
    rules = _campaign._rules(cfg, days)
    p = clear_sky_probability
    plan1 = _campaign._plan_station(cfg, rules, lambda i: pass_seed(seed, i),
                                    lambda n: _campaign.weather(seed, n, p), ec, finite_key)
    plan2 = _campaign._plan_station(cfg2, rules, lambda i: second_station_pass_seed(seed, i),
                                    lambda n: second_station_weather(seed, n, p), ec, finite_key)
    executor = _campaign._execute([plan1, plan2], workers, scheduler, progress)
    wall = round(time.perf_counter() - t_start, 3)
    first = _campaign._station_result(cfg, plan1, rules, seed, p, ec, finite_key, executor, wall)
    second = _campaign._station_result(cfg2, plan2, rules, seed, p, ec, finite_key, executor, wall)
    ledger = replay_relays(first.records, second.records, stations=(first.station, second.station),
                           satellite=cfg.satellite)
    return RelayCampaignResult(first, second, ledger, executor, round(time.perf_counter() - t_start, 3))


# ------------------------------------------------------------------------------------------ outputs
RELAY_COLUMNS_FIXED = ("relay", "time_utc", "trigger_station", "trigger_pass", "length_bits", "auth_bits_per_link")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "station"


def relay_columns(stations: tuple[str, str]) -> tuple[str, ...]:
    """Columns of ``relays.csv`` (station-named columns use the lower-case station names)."""
    per = []
    for s in stations:
        k = _slug(s)
        per += [f"{k}_pool_before_bits", f"{k}_pool_after_bits", f"{k}_passes", f"{k}_storage_hours"]
    return (*RELAY_COLUMNS_FIXED, *per, "storage_hours", "pass_epsilon_sum", "forgery_bound", "epsilon")


def write_relay_campaign_outputs(result: RelayCampaignResult, out_dir: str | Path, *, figures: bool = True) -> list[Path]:
    """``campaign.json`` (both stations' campaigns and a ``relay`` section), ``passes.csv`` (both
    stations, a ``station`` column first, in time order), ``relays.csv``, ``relay_campaign.png`` and
    each station's campaign figures (``campaign_<station>.png``, ``key_vs_elevation_<station>.png``,
    ``peak_rate_vs_range_<station>.png``)."""
    from ..report import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(result.to_json(), out / "campaign.json"), _write_passes(result, out / "passes.csv"),
             _write_relays(result, out / "relays.csv")]
    if figures:
        paths.append(plot_relay_campaign(result, out / "relay_campaign.png"))
        for c in (result.first, result.second):
            k = _slug(c.station)
            paths.append(plot_campaign(c, out / f"campaign_{k}.png"))
            paths.append(plot_key_vs_elevation(c, out / f"key_vs_elevation_{k}.png"))
            paths.append(plot_peak_rate_vs_range(c, out / f"peak_rate_vs_range_{k}.png"))
    return paths


def _write_passes(result: RelayCampaignResult, path: Path) -> Path:
    rows = sorted([(r.start_utc, k, c.station, r) for k, c in enumerate((result.first, result.second)) for r in c.records],
                  key=lambda x: x[:2])
    return write_csv(path, ("station", *PASS_COLUMNS), ([st, *(getattr(r, c) for c in PASS_COLUMNS)] for _, _, st, r in rows))


def _write_relays(result: RelayCampaignResult, path: Path) -> Path:
    sts = result.stations

    def row(e: RelayEvent):
        per = []
        for s in sts:
            per += [e.pool_before[s], e.pool_after[s], ";".join(str(i) for i in e.passes(s)), e.storage_hours_of(s)]
        return [e.index, e.time_utc, e.trigger_station, e.trigger_pass, e.length_bits, e.auth_bits_per_link, *per,
                e.storage_hours, e.pass_epsilon_sum, e.forgery_bound, e.epsilon]

    return write_csv(path, relay_columns(sts), (row(e) for e in result.relays))


def plot_relay_campaign(result: RelayCampaignResult, path: str | Path) -> Path:
    """Top: cumulative final key of each station and cumulative relayed key against date (relays marked).
    Bottom: key held on board for each station (available, not yet relayed)."""
    from ..report import PAPER_BLUE, PAPER_RED, _pyplot

    plt = _pyplot()
    import matplotlib.dates as mdates

    def num(s: str) -> float:
        return mdates.date2num(datetime.fromisoformat(s))

    t0 = datetime.fromisoformat(result.first.search_start_utc)
    x0, x1 = mdates.date2num(t0), mdates.date2num(result.end_utc)
    colors = (PAPER_BLUE, PAPER_RED)
    relay_color = "#2e8b57"
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for c, color in zip((result.first, result.second), colors):
        keyed = sorted((r for r in c.records if r.has_key), key=lambda r: r.end_utc)
        cx = np.array([x0] + [num(r.end_utc) for r in keyed] + [x1])
        cy = np.concatenate([[0.0], np.cumsum([r.final_key_bits for r in keyed]), [c.total_final_key_bits]]) / 1e6
        ax.step(cx, cy, where="post", color=color, lw=1.6,
                label=f"{c.station}: {c.passes_with_key}/{c.passes_found} passes with key, {c.total_final_key_bits / 1e6:.2f} Mbit")
    ev = result.relays
    rx = np.array([x0] + [num(e.time_utc) for e in ev] + [x1])
    ry = np.concatenate([[0.0], np.cumsum([e.length_bits for e in ev]), [result.relayed_bits_total]]) / 1e6
    ax.step(rx, ry, where="post", color=relay_color, lw=2.2,
            label=f"relayed {result.stations[0]} ⇄ {result.stations[1]}: {result.relayed_bits_total / 1e6:.2f} Mbit")
    if ev:
        ax.scatter(rx[1:-1], ry[1:-1], marker="o", s=22, color=relay_color, edgecolors="k", linewidths=0.4, zorder=4,
                   label=f"relay events: {len(ev)}")
    ax.set_ylabel("cumulative key (Mbit)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    tl = result.ledger.timeline
    for s, color in zip(result.stations, colors):
        hx = np.array([x0] + [num(t) for t, _ in tl] + [x1])
        hy = np.array([0.0] + [lv[s] for _, lv in tl] + [result.ledger.left_bits[s]]) / 1e3
        bx.step(hx, hy, where="post", color=color, lw=1.4, label=f"{s}: {result.ledger.left_bits[s]:,} bits left at the end")
    for e in ev:
        bx.axvline(num(e.time_utc), color=relay_color, lw=0.8, alpha=0.6, zorder=0)
    bx.set_ylabel("key held on board (kbit)")
    bx.set_xlim(x0, x1)
    bx.set_ylim(bottom=0)
    bx.grid(alpha=0.3)
    bx.legend(loc="upper left", fontsize=8)
    loc = mdates.AutoDateLocator()
    bx.xaxis.set_major_locator(loc)
    bx.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    bx.set_xlabel("UTC (relays at the end of the pass that completes them; green lines)")
    t = result.totals()
    st = (f"; key stored on board mean {t['storage_hours_mean']:.1f} h, max {t['storage_hours_max']:.1f} h"
          if t["relays"] else "")
    f = result.first
    fig.suptitle(f"{f.satellite} trusted relay {result.stations[0]} ⇄ {result.stations[1]}, {result.days:g} d: "
                 f"{t['relays']} relays, {result.relayed_bits_total:,} bits ({result.relayed_bits_per_day:,.0f} bits/day)"
                 f"{st}\nseed {f.seed}, clear-night probability {f.clear_sky_probability:g} per station "
                 f"(independent), {f.ec} + {f.finite_key}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
