"""Relay campaigns: both stations' passes, the satellite's key budget replayed in time order.

The replay's arithmetic runs on hand-made pass records (and is checked against ``jobs.relay``'s own
relay on key stores for single pairs). Seeds, weather, failures and the CLI use a stand-in
``run_pass``. Real passes only where the fact needs them: one module-scoped 1-day relay campaign (the
paper's Xinglong pass and the Nanshan pass 1.6 h later, ~7 s), the same on two worker processes, and
the single-station campaign of the same day.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

import satqkd
from satqkd.jobs import campaign
from satqkd.jobs.campaign import PASS_COLUMNS, PassRecord, pass_seed, run_campaign, weather
from satqkd.jobs.relay_campaign import (
    SECOND_STATION_STREAM,
    RelayCampaignResult,
    relay_columns,
    replay_relays,
    run_relay_campaign,
    second_station_pass_seed,
    second_station_weather,
    write_relay_campaign_outputs,
)
from satqkd.jobs.relay import AUTH_BITS_PER_LINK, RELAY_PRESET, relay_length_bits

SEED = 5
ST = ("Xinglong", "Nanshan")
T0 = datetime(2016, 12, 19, 16, 54, tzinfo=timezone.utc)
A = AUTH_BITS_PER_LINK


def rec(index: int, hours: float, bits: int, eps: float | None = 1e-9) -> PassRecord:
    """A pass record ending ``hours`` after T0 with ``bits`` of final key (0: aborted)."""
    end = T0 + timedelta(hours=hours)
    return PassRecord(index=index, night=end.date().isoformat(), start_utc=(end - timedelta(minutes=5)).isoformat(),
                      end_utc=end.isoformat(), duration_s=300.0, max_elevation_deg=50.0, min_range_km=600.0, seed=index,
                      clear_sky=True, simulated=True, final_key_bits=bits, epsilon=eps if bits else None,
                      aborted=bits == 0, abort_reason=None if bits else "no positive key length")


def _check_ledger(led, first, second):
    """Invariants every replay must keep."""
    assert led.balance_ok()
    for s, recs in zip(ST, (first, second)):
        assert led.pass_key_bits[s] == (led.relayed_bits + led.auth_bits[s] + led.left_bits[s] + led.truncated_bits[s]
                                        + led.station_stream_bits.get(s, 0))
        assert led.auth_bits[s] == A * len(led.events)
        assert sum(r.final_key_bits for r in recs) == led.pass_key_bits[s]
    for _, level in led.timeline:
        assert min(level.values()) >= 0
    for e in led.events:
        assert e.length_bits >= 8 and e.length_bits % 8 == 0
        assert e.length_bits == relay_length_bits(*e.pool_before.values())
        for s in ST:
            assert e.pool_after[s] == e.pool_before[s] - A - e.length_bits >= 0
            assert sum(d.auth_bits for d in e.draws if d.station == s) == A
            assert sum(d.relayed_bits for d in e.draws if d.station == s) == e.length_bits
        assert min(e.pool_after.values()) == 0  # the smaller pool is emptied (pools hold whole bytes)
        assert all(d.stored_hours >= 0 for d in e.draws)
        # ε of the relay ≥ Σ ε of the pass keys it drew on; exactly that plus the forgery bound
        contributing = {(d.station, d.pass_index): d.epsilon for d in e.draws}
        assert e.epsilon >= sum(contributing.values())
        assert e.epsilon == pytest.approx(sum(contributing.values()) + e.forgery_bound, rel=1e-12)
        assert 0 < e.forgery_bound < 1e-30


# ------------------------------------------------------------------------------------------ replay arithmetic
def test_two_passes_give_one_relay_with_the_relay_jobs_rule():
    first, second = [rec(0, 0.0, 352_105)], [rec(0, 1.57, 624_751)]
    led = replay_relays(first, second, stations=ST, directional=False, satellite="Micius")
    (e,) = led.events
    stored_x, stored_n = 352_104, 624_744  # whole bytes, as a key store keeps them
    L = min(stored_x, stored_n) - A
    L -= L % 8
    assert e.length_bits == L == 351_208
    assert e.time_utc == second[0].end_utc  # the later pass's end
    assert (e.trigger_station, e.trigger_pass) == ("Nanshan", 0)
    assert e.pool_before == {"Xinglong": stored_x, "Nanshan": stored_n}
    assert e.pool_after == {"Xinglong": 0, "Nanshan": stored_n - A - L}
    assert e.passes("Xinglong") == [0] and e.passes("Nanshan") == [0]
    assert e.storage_hours == pytest.approx(1.57) and e.storage_hours_of("Nanshan") == 0.0
    assert led.truncated_bits == {"Xinglong": 1, "Nanshan": 7}
    assert led.left_bits == {"Xinglong": 0, "Nanshan": stored_n - A - L}
    _check_ledger(led, first, second)


def test_unequal_keys_leave_the_right_leftover():
    first = [rec(0, 0.0, 500_000), rec(1, 24.0, 40_000)]
    second = [rec(0, 1.5, 100_000)]
    led = replay_relays(first, second, stations=ST, directional=False)
    (e,) = led.events  # the second Xinglong pass cannot relay: Nanshan's pool is empty
    assert e.length_bits == 100_000 - A and e.pool_after == {"Xinglong": 500_000 - 100_000, "Nanshan": 0}
    assert led.left_bits == {"Xinglong": 400_000 + 40_000, "Nanshan": 0}
    assert led.timeline[-1] == (first[1].end_utc, {"Xinglong": 440_000, "Nanshan": 0})
    _check_ledger(led, first, second)


def test_leftover_is_relayed_later_oldest_first():
    first = [rec(0, 0.0, 500_000)]
    second = [rec(0, 1.5, 100_000), rec(1, 25.5, 300_000)]
    led = replay_relays(first, second, stations=ST, directional=False)
    e0, e1 = led.events
    assert e0.pool_after["Xinglong"] == 500_000 - A - (100_000 - A) == 400_000
    assert e1.pool_before == {"Xinglong": 400_000, "Nanshan": 300_000}
    assert e1.length_bits == 300_000 - A and e1.pool_after == {"Xinglong": 100_000, "Nanshan": 0}
    (dx,) = [d for d in e1.draws if d.station == "Xinglong"]
    assert (dx.pass_index, dx.offset_bits, dx.auth_bits) == (0, 100_000, A)  # after what the first relay took
    assert dx.stored_hours == pytest.approx(25.5) == e1.storage_hours
    assert led.left_bits == {"Xinglong": 100_000, "Nanshan": 0}
    assert led.left_oldest_end_utc["Xinglong"] == first[0].end_utc
    assert led.totals(2.0, T0 + timedelta(hours=48))["left_on_board_oldest_hours"]["Xinglong"] == pytest.approx(48.0)
    _check_ledger(led, first, second)


def test_a_pass_too_short_to_relay():
    # A + 7 bits: L = 7 < 8, nothing relayed (jobs.relay: "pass keys too short to relay")
    led = replay_relays([rec(0, 0.0, A + 7)], [rec(0, 1.5, 100_000)], stations=ST, directional=False)
    assert led.events == [] and led.relayed_bits == 0
    assert led.left_bits == {"Xinglong": A, "Nanshan": 100_000} and led.truncated_bits["Xinglong"] == 7
    assert relay_length_bits(A + 7, 100_000) == 0
    # A + 8 bits: one byte is relayed
    led = replay_relays([rec(0, 0.0, A + 8)], [rec(0, 1.5, 100_000)], stations=ST, directional=False)
    assert [e.length_bits for e in led.events] == [8]
    assert led.left_bits == {"Xinglong": 0, "Nanshan": 100_000 - A - 8}


def test_several_short_passes_accumulate_into_one_relay():
    first = [rec(0, 0.0, 600), rec(1, 24.0, 600), rec(2, 48.0, 600)]  # each alone < A
    second = [rec(0, 49.5, 50_000)]
    led = replay_relays(first, second, stations=ST, directional=False)
    (e,) = led.events
    assert e.pool_before["Xinglong"] == 1800 and e.length_bits == 1800 - A
    xs = [d for d in e.draws if d.station == "Xinglong"]
    assert [d.pass_index for d in xs] == [0, 1, 2]
    assert [(d.auth_bits, d.relayed_bits) for d in xs] == [(600, 0), (296, 304), (0, 600)]  # auth bits first, oldest first
    assert e.storage_hours == pytest.approx(49.5) and e.storage_hours_of("Xinglong") == pytest.approx(49.5)
    # ε: the three Xinglong pass keys and the Nanshan key (the first only gave authentication bits)
    assert e.pass_epsilon_sum == pytest.approx(4e-9)
    _check_ledger(led, first, second)


def test_nothing_is_relayed_when_one_station_never_gets_key():
    first = [rec(i, 24.0 * i, 300_000) for i in range(4)]
    second = [rec(i, 24.0 * i + 1.5, 0) for i in range(4)]  # every Nanshan pass aborted
    led = replay_relays(first, second, stations=ST, directional=False)
    assert led.events == [] and led.relayed_bits == 0
    assert led.left_bits == {"Xinglong": 1_200_000, "Nanshan": 0}
    assert led.totals(4.0)["storage_hours_mean"] is None and led.totals(4.0)["max_relay_epsilon"] is None
    assert replay_relays([], [], stations=ST, directional=False).events == []
    _check_ledger(led, first, second)


def test_same_end_time_and_equal_names():
    led = replay_relays([rec(0, 0.0, 10_000)], [rec(0, 0.0, 10_000)], stations=ST, directional=False)
    (e,) = led.events
    assert e.trigger_station == "Nanshan" and e.length_bits == 10_000 - A  # ties: first station deposits first
    with pytest.raises(ValueError, match="different names"):
        replay_relays([], [], stations=("X", "X"))


def test_unknown_pass_epsilon_gives_no_relay_epsilon():
    led = replay_relays([rec(0, 0.0, 10_000, eps=None)], [rec(0, 1.0, 10_000)], stations=ST, directional=False)
    (e,) = led.events
    assert e.epsilon is None and e.pass_epsilon_sum is None and led.totals(1.0)["max_relay_epsilon"] is None


def test_random_sequences_keep_the_invariants():
    rng = np.random.default_rng(11)
    n_relays = 0
    for _ in range(300):
        seqs = []
        for k in range(2):
            n = int(rng.integers(0, 7))
            hours = np.sort(rng.uniform(0, 24 * 5, n)) + 0.8 * k
            bits = rng.choice([0, 5, 700, 900, 2000, 50_000, 333_333], n) + rng.integers(0, 8, n)
            seqs.append([rec(i, float(h), int(b) if b > 7 else 0, eps=float(rng.uniform(1e-10, 1e-9)))
                         for i, (h, b) in enumerate(zip(hours, bits))])
        led = replay_relays(*seqs, stations=ST, directional=False)
        _check_ledger(led, *seqs)
        n_relays += len(led.events)
        # one relay at most per pass, and only right after a pass with key
        ends = {r.end_utc for recs in seqs for r in recs if r.has_key}
        assert all(e.time_utc in ends for e in led.events)
        assert len(led.events) <= sum(r.has_key for recs in seqs for r in recs)
    assert n_relays > 100


@pytest.mark.parametrize("bits", [(352_105, 624_751), (2000, 1003), (A + 7, 5000), (A + 8, A + 8)])
def test_replay_matches_the_relay_job_on_key_stores(tmp_path, bits):
    """The campaign's rule, length and ε equal those of jobs.relay's relay on real key stores, pair by pair."""
    from satqkd.keys.store import KeyStore
    from satqkd.jobs.one_pass import PassOutcome
    from satqkd.jobs.relay import deposit_pass, relay_deposited

    sat = KeyStore(tmp_path / "m.db", "Micius")
    stores = {s: KeyStore(tmp_path / f"{s}.db", s) for s in ST}
    rng = np.random.default_rng(1)
    outs = []
    for k, (s, n) in enumerate(zip(ST, bits)):
        key = rng.integers(0, 2, n, dtype=np.uint8)
        outs.append(PassOutcome(station=s, satellite="Micius", pass_id=f"Micius:{s}:2016-12-19T16:4{k}:00Z:seed{k}",
                                seed=k, summary={"start_utc": "2016-12-19"}, sat_key=key, station_key=key.copy(),
                                epsilon=1e-9))
        deposit_pass(sat, stores[s], outs[-1])
    rj = relay_deposited(outs[0], outs[1], sat, stores[ST[0]], stores[ST[1]])
    led = replay_relays([rec(0, 0.0, bits[0])], [rec(0, 1.5, bits[1])], stations=ST, satellite="Micius")
    if rj.ok:
        (e,) = led.events
        assert e.length_bits == rj.length_bits
        assert e.epsilon == rj.epsilon  # same pass ε and same announcement size, hence same forgery bound
        for s in ST:  # the satellite's store also holds each station's own stream (not relayable)
            assert sat.available_bits(s) == led.left_bits[s] + led.station_stream_bits[s]
        assert led.balance_ok()
    else:
        assert "too short" in rj.reason and led.events == []
    for st in (sat, *stores.values()):
        st.close()


# ------------------------------------------------------------------------------------------ stand-in passes
def _fake(final_key_bits=100_000, aborted=False):
    return SimpleNamespace(seconds=0.01, summary={
        "sifted_bits": 400_000, "qber": 0.011, "final_key_bits": final_key_bits, "epsilon": 1e-9, "aborted": aborted,
        "abort_reason": "QBER above threshold" if aborted else None, "ec_efficiency": 1.04,
        "peak_sifted_rate_bps": 12_000.0, "range_km_at_peak_rate": 645.0})


@pytest.fixture(scope="module")
def rcfg():
    return satqkd.load_preset(RELAY_PRESET)


@pytest.fixture(scope="module")
def windows(rcfg):
    """Each station's windows of 12 days, planned once (later tests cut them to their span)."""
    from satqkd.jobs.relay_campaign import check_relay_config

    return {c.station.name: campaign.plan_campaign(c, days=12) for c in (rcfg, check_relay_config(rcfg))}


@pytest.fixture
def fast(monkeypatch, windows, rcfg):
    """Planning from the cached windows and a stand-in run_pass: key bits = 100,000 + (seed mod 1000)."""
    start = rcfg.passes.search_start_utc
    monkeypatch.setattr(campaign, "plan_campaign", lambda c, days=None, **k: [
        g for g in windows[c.station.name] if g.start_utc < start + timedelta(days=days)])
    calls = []

    def run_pass(c, g, seed, **kw):
        calls.append((g.station, seed))
        return _fake(100_000 + seed % 1000)

    monkeypatch.setattr(campaign, "run_pass", run_pass)
    return calls


def _det(res) -> list[dict]:
    return [{k: v for k, v in r.to_json().items() if k != "seconds"} for r in res.records]


def test_seeds_and_weather_of_the_two_stations(rcfg, fast):
    ticks = []
    res = run_relay_campaign(rcfg, days=10, seed=3, clear_sky_probability=0.5, progress=lambda d, t: ticks.append((d, t)))
    single = run_campaign(rcfg, days=10, seed=3, clear_sky_probability=0.5)
    # the first station: exactly the single-station campaign (same seeds, same weather)
    assert _det(res.first) == _det(single) and res.first.nights == single.nights
    assert res.first.totals() == single.totals()
    # the second station: its own seeds and its own weather stream, nights at its own longitude
    a, b = res.first, res.second
    assert a.station == "Xinglong" and b.station == "Nanshan" and b.station_longitude_deg == pytest.approx(87.177)
    assert [r.seed for r in b.records] == [second_station_pass_seed(3, i) for i in range(b.passes_found)]
    seeds = [r.seed for r in a.records + b.records]
    assert len(set(seeds)) == len(seeds)
    assert [n["clear"] for n in b.nights] == list(second_station_weather(3, len(b.nights), 0.5))
    assert [n["clear"] for n in a.nights] == list(weather(3, len(a.nights), 0.5))
    assert [n["clear"] for n in a.nights] != [n["clear"] for n in b.nights]  # independent sites
    assert second_station_pass_seed(3, 0) != pass_seed(3, 0) and SECOND_STATION_STREAM > 10_000
    # only clear passes ran, each with its seed (the Xinglong ones twice: relay and single-station runs)
    assert sorted(x for st, x in fast if st == "Nanshan") == sorted(r.seed for r in b.records if r.simulated)
    assert sorted(x for st, x in fast if st == "Xinglong") == sorted(2 * [r.seed for r in a.records if r.simulated])
    assert 0 < b.passes_simulated < b.passes_found
    # progress counts both stations' passes
    total = a.passes_found + b.passes_found
    assert ticks[0] == (float(total - a.passes_simulated - b.passes_simulated), float(total))
    assert ticks[-1] == (float(total), float(total))
    # the replay ran on the records
    led = replay_relays(a.records, b.records, stations=ST, satellite="Micius")
    assert [e.to_json() for e in res.relays] == [e.to_json() for e in led.events]
    _check_ledger(res.ledger, a.records, b.records)
    t = res.totals()
    assert t["relays"] == len(res.relays) > 0 and t["relayed_bits_per_day"] == res.relayed_bits_total / 10
    assert t["storage_hours_max"] >= t["storage_hours_mean"] > 0
    assert f"{t['relays']} relays" in repr(res)


def test_no_key_at_one_station_means_no_relay(rcfg, fast, monkeypatch):
    monkeypatch.setattr(campaign, "run_pass", lambda c, g, seed, **kw: _fake(aborted=g.station == "Nanshan"))
    res = run_relay_campaign(rcfg, days=3, seed=1)
    assert res.first.passes_with_key == res.first.passes_found > 0 and res.second.passes_with_key == 0
    assert res.relays == [] and res.relayed_bits_total == 0
    left, stream = res.totals()["left_on_board_bits"], res.ledger.station_stream_bits
    assert left["Nanshan"] == 0 and 0 < stream["Xinglong"] and abs(stream["Xinglong"] - left["Xinglong"]) <= 8 * 3  # halves
    assert left["Xinglong"] + stream["Xinglong"] + res.ledger.truncated_bits["Xinglong"] == res.first.total_final_key_bits


def test_a_failing_pass_is_recorded_and_the_relays_go_on(rcfg, fast, monkeypatch):
    bad = second_station_pass_seed(7, 0)

    def run_pass(c, g, seed, **kw):
        if seed == bad:
            raise RuntimeError("detector on fire")
        return _fake(200_000)

    monkeypatch.setattr(campaign, "run_pass", run_pass)
    res = run_relay_campaign(rcfg, days=3, seed=7)
    assert res.passes_error == 1 and res.second.records[0].abort_reason == "error: RuntimeError: detector on fire"
    assert len(res.relays) >= 1 and res.relays[0].passes("Nanshan") == [1]


def test_bad_input_raises_before_planning(monkeypatch):
    monkeypatch.setattr(campaign, "plan_campaign", lambda *a, **k: pytest.fail("planned despite bad input"))
    with pytest.raises(ValueError, match="second_station"):
        run_relay_campaign(satqkd.load_preset("micius-2016-12-19"), days=1)
    rcfg = satqkd.load_preset(RELAY_PRESET)
    with pytest.raises(ValueError, match="days"):
        run_relay_campaign(rcfg, days=0)
    with pytest.raises(ValueError, match="workers"):
        run_relay_campaign(rcfg, workers=0)
    same = rcfg.model_copy(update={"second_station": rcfg.station})
    with pytest.raises(ValueError, match="must differ"):
        run_relay_campaign(same, days=1)


def test_outputs_json_csvs_and_figures(rcfg, fast, tmp_path):
    res = run_relay_campaign(rcfg, days=4, seed=2)
    paths = write_relay_campaign_outputs(res, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(["campaign.json", "passes.csv", "relays.csv", "relay_campaign.png",
                            *(f"{f}_{s}.png" for f in ("campaign", "key_vs_elevation", "peak_rate_vs_range")
                              for s in ("xinglong", "nanshan"))])
    d = json.loads((tmp_path / "campaign.json").read_text())
    assert d["kind"] == "relay" and [s["station"] for s in d["stations"]] == list(ST)
    assert d["stations"][0]["passes"] == [r.to_json() for r in res.first.records]
    rel = d["relay"]
    assert rel["auth_bits_per_link"] == A and rel["totals"]["relays"] == len(rel["events"]) == len(res.relays) > 0
    assert rel["totals"]["relayed_bits_total"] == sum(e["length_bits"] for e in rel["events"])
    assert rel["totals"]["balance_ok"] is True and "accounting" in rel["model"]
    rows = list(csv.DictReader((tmp_path / "passes.csv").open()))
    assert tuple(rows[0]) == ("station", *PASS_COLUMNS) and len(rows) == res.first.passes_found + res.second.passes_found
    assert [r["start_utc"] for r in rows] == sorted(r["start_utc"] for r in rows)
    rrows = list(csv.DictReader((tmp_path / "relays.csv").open()))
    assert tuple(rrows[0]) == relay_columns(ST) and len(rrows) == len(res.relays)
    assert [int(r["length_bits"]) for r in rrows] == [e.length_bits for e in res.relays]
    assert int(rrows[0]["nanshan_pool_after_bits"]) == res.relays[0].pool_after["Nanshan"]
    assert (tmp_path / "relay_campaign.png").stat().st_size > 10_000


# ------------------------------------------------------------------------------------------ CLI
def _invoke(*args):
    from satqkd.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_runs_the_relay_for_a_config_with_a_second_station(fast, tmp_path):
    out = tmp_path / "rc"
    r = _invoke("campaign", "--preset", RELAY_PRESET, "--days", "2", "--seed", "1", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["kind"] == "relay" and d["relay"]["totals"]["relays"] >= 1
    for f in ("campaign.json", "passes.csv", "relays.csv", "relay_campaign.png", "campaign_nanshan.png"):
        assert (out / f).exists(), f
    r = _invoke("campaign", "--preset", RELAY_PRESET, "--days", "2", "--seed", "1", "--out", str(tmp_path / "t"),
                "--no-figures")
    assert r.exit_code == 0, r.output
    assert "relayed key per day" in r.stdout and "relays" in r.stdout and "storage" in r.stdout
    assert not (tmp_path / "t" / "relay_campaign.png").exists()
    # --no-relay: the first station's single-station campaign, as before
    r = _invoke("campaign", "--preset", RELAY_PRESET, "--days", "2", "--out", str(tmp_path / "one"), "--no-relay",
                "--no-figures")
    assert r.exit_code == 0, r.output
    assert "relay" not in json.loads((tmp_path / "one" / "campaign.json").read_text())
    assert not (tmp_path / "one" / "relays.csv").exists()


@pytest.mark.parametrize("args, needle", [
    (["--preset", "micius-2016-12-19", "--relay"], "second_station"),
    (["--preset", RELAY_PRESET, "--days", "0"], "--days"),
    (["--preset", RELAY_PRESET, "--clear-sky", "2"], "--clear-sky"),
])
def test_cli_bad_relay_input_exits_2_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "rc"
    r = _invoke("campaign", *args, "--out", str(out))
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert not out.exists()


def test_face_exports_relay_campaigns():
    assert satqkd.run_relay_campaign is run_relay_campaign and satqkd.RelayCampaignResult is RelayCampaignResult


# ------------------------------------------------------------------------------------------ real passes
@pytest.fixture(scope="module")
def real(rcfg):
    """One day: the paper's Xinglong pass (16:50 UTC) and the Nanshan pass 1.6 h later, simulated end to end."""
    return run_relay_campaign(rcfg, days=1, seed=SEED)


def test_real_day_gives_one_relay(real):
    a, b = real.first, real.second
    assert a.passes_with_key == b.passes_with_key == 1 and a.passes_found == b.passes_found == 1
    (e,) = real.relays
    kx, kn = a.records[0].final_key_bits, b.records[0].final_key_bits
    from satqkd.keys.store import direction_window

    sat = real.first.satellite
    own = [hi - lo for lo, hi in (direction_window(sat, s, 8 * (k // 8)) for s, k in zip(ST, (kx, kn)))]
    assert e.length_bits == relay_length_bits(*own) > 100_000  # the satellite's own streams only
    assert e.time_utc == b.records[0].end_utc and e.storage_hours == pytest.approx(1.57, abs=0.02)
    assert 2e-9 <= e.epsilon <= 2e-9 * (1 + 1e-9)
    _check_ledger(real.ledger, a.records, b.records)
    assert real.relayed_bits_per_day == e.length_bits


def test_real_first_station_equals_the_single_station_campaign(rcfg, real):
    single = run_campaign(rcfg, days=1, seed=SEED)
    assert _det(real.first) == _det(single) and real.first.totals() == single.totals()


def test_real_two_workers_give_identical_results(rcfg, real):
    par = run_relay_campaign(rcfg, days=1, seed=SEED, workers=2)
    assert par.executor.startswith("process pool")
    assert _det(par.first) == _det(real.first) and _det(par.second) == _det(real.second)
    assert [e.to_json() for e in par.relays] == [e.to_json() for e in real.relays]
    assert par.totals() == real.totals()
