"""The trusted relay on simulated passes: Xinglong pass, Nanshan pass, K_X ⊕ K_N into both stations' stores.

One module-scoped relay on the preset's FULL passes (~10 s) and one set of short passes (±15 s around
culmination, ~2 s) reused by the failure tests on fresh stores. The χ² independence test of the
announcement on a biased K_X (and its negative control) is in test_relay.py; here it is applied to
the real keys only as a sanity check.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from satqkd.config import load_preset
from satqkd.keys import otp
from satqkd.keys.relay import relay_announcement
from satqkd.keys.store import KeyStore, bits_to_bytes, key_id_for
from satqkd.jobs.kme_demo import kme_demo_fill
from satqkd.jobs.one_pass import run_pass, truncate_geometry
from satqkd.jobs.relay import (
    AUTH_BITS_PER_LINK,
    RELAY_PRESET,
    RelayExists,
    deposit_pass,
    find_relay_passes,
    pass_seeds,
    relay_deposited,
    run_relay,
    write_relay_outputs,
)
from satqkd.sky.orbit import satellite_from_config

SEED = 3
SHORT_WINDOW_S = 30.0


@pytest.fixture(scope="module")
def cfg():
    return load_preset(RELAY_PRESET)


def _stores(d, wipe_stations=True):
    return (KeyStore(d / "micius.db", "Micius"), KeyStore(d / "xinglong.db", "Xinglong", wipe=wipe_stations),
            KeyStore(d / "nanshan.db", "Nanshan", wipe=wipe_stations))


@pytest.fixture(scope="module")
def full(cfg, tmp_path_factory):
    """The real relay on the preset's full passes. Station stores keep used material (wipe=False) so the
    test can read K_X and K_N back; the satellite's store wipes as in operation."""
    d = tmp_path_factory.mktemp("relay-full")
    sat, x, n = _stores(d, wipe_stations=False)
    ticks = []
    res = run_relay(cfg, SEED, sat, x, n, progress=lambda done, total: ticks.append((done, total)))
    snap = {s.site: s.stats()["links"] for s in (sat, x, n)}
    yield res, (sat, x, n), d, snap, ticks
    for s in (sat, x, n):
        s.close()


@pytest.fixture(scope="module")
def short(cfg):
    """Both passes truncated to ±15 s around culmination: simulated and post-processed once, not deposited."""
    g1, g2 = find_relay_passes(cfg, window_s=SHORT_WINDOW_S)
    s1, s2 = pass_seeds(SEED)
    p1 = run_pass(cfg, g1, s1, window_s=SHORT_WINDOW_S)
    p2 = run_pass(cfg.model_copy(update={"station": cfg.second_station}), g2, s2, window_s=SHORT_WINDOW_S)
    assert p1.ok and p2.ok, (p1, p2)
    return p1, p2


def _ranges(store: KeyStore, link: str) -> dict[str, set]:
    out = defaultdict(set)
    for p in store.pieces(link):
        out[p.state].add((p.root_id, p.offset_bits, p.length_bits))
    return dict(out)


def _root_material(path, root_id) -> bytes:
    with sqlite3.connect(path) as con:
        return bytes(con.execute("SELECT material FROM roots WHERE root_id = ?", (root_id,)).fetchone()[0])


# ------------------------------------------------------------------------------------------ full passes
def test_full_passes_times_and_sizes(full, cfg):
    res, *_ , ticks = full
    a, b = res.first, res.second
    assert (a["station"], b["station"]) == ("Xinglong", "Nanshan")
    assert a["start_utc"].startswith("2016-12-19T16:49") and b["start_utc"].startswith("2016-12-19T18:23")
    # consecutive orbits: the start-to-start gap is about one orbital period of the TLE (2π / mean motion),
    # within the few minutes the different station geometries shift the windows
    period_h = 2 * math.pi / satellite_from_config(cfg.orbit).model.no_kozai / 60
    assert abs(res.hours_between - period_h) < 0.1, (res.hours_between, period_h)
    assert res.key_storage_hours == pytest.approx(
        res.hours_between + (b["duration_s"] - a["duration_s"]) / 3600, abs=1e-6)
    for p in (a, b):
        assert not p["aborted"] and p["final_key_bits"] > 0 and p["sifted_bits"] > p["final_key_bits"]
        # the paper's data run: from ~500 km (the orbit's height; Nanshan culminates higher) to the 1200 km cut
        assert 480.0 < p["min_range_km"] < p["max_range_km"] <= cfg.passes.max_range_km + 1e-6
        assert 0 < p["epsilon"] <= 1.01e-9  # the preset's ε = 1e-9
    # L = min of the satellite's streams (first half, whole bytes) of the two final keys, less the
    # authentication cut of each link
    L = min(8 * (p["final_key_bits"] // 8) // 16 * 8 for p in (a, b)) - AUTH_BITS_PER_LINK
    assert res.ok and res.length_bits == L - L % 8
    assert res.epsilon == pytest.approx(a["epsilon"] + b["epsilon"], rel=1e-9)
    assert ticks[-1] == (6.0, 6.0) and [t[0] for t in ticks] == sorted(t[0] for t in ticks)


def test_full_relayed_keys_identical_and_equal_to_k_n(full):
    res, (sat, x, n), d, *_ = full
    assert res.keys_match
    kid = res.relay_key_id
    kx_root, kn_root = res.pass_key_ids["Xinglong"], res.pass_key_ids["Nanshan"]
    # station stores keep their material (wipe=False): the pass keys and the relayed keys
    kx, kn = _root_material(d / "xinglong.db", kx_root), _root_material(d / "nanshan.db", kn_root)
    at_x, at_n = _root_material(d / "xinglong.db", kid), _root_material(d / "nanshan.db", kid)
    off, nbytes = AUTH_BITS_PER_LINK // 8, res.length_bits // 8
    assert at_x == at_n == kn[off:off + nbytes]
    # the announcement is K_X ⊕ K_N over exactly those segments, and is not either key
    ann = res.announcement
    assert ann.xor == relay_announcement(kx[off:off + nbytes], kn[off:off + nbytes])
    assert ann.first_segments[0].root_id == kx_root and ann.second_segments[0].offset_bits == AUTH_BITS_PER_LINK
    a = np.frombuffer(ann.xor, np.uint8)
    assert a.tobytes() != kx[off:off + nbytes] and a.tobytes() != at_x
    # sanity on the real keys (the real test, with a biased K_X and a control, is in test_relay.py):
    # A is balanced and its 4-bit symbols show no dependence on K_X's
    bits = np.unpackbits(a)
    assert abs(bits.mean() - 0.5) < 5 / math.sqrt(bits.size)
    kx_nib = np.frombuffer(kx[off:off + nbytes], np.uint8) >> 4
    table = np.zeros((16, 16))
    np.add.at(table, (kx_nib, a >> 4), 1)
    assert chi2_contingency(table)[1] > 1e-4
    # the final keys of both ends of each link were deposited under one id with the same bytes
    assert sat.roots("Xinglong")[0]["root_id"] == x.roots("Micius")[0]["root_id"] == kx_root == key_id_for(res.first["pass_id"])
    assert x.roots("Micius")[0]["origin_pass"] == res.first["pass_id"] and x.roots("Micius")[0]["epsilon"] == res.first["epsilon"]


def test_full_store_states(full):
    res, (sat, x, n), d, snap, _ = full
    L = res.length_bits
    for st in ("Xinglong", "Nanshan"):
        s_sat, s_st = snap["Micius"][st], snap[st]["Micius"]
        # satellite and station hold the same pass key, cut identically: authentication + relayed
        assert s_sat["relayed"] == s_st["relayed"] == {"count": 1, "bits": L}
        assert s_sat["consumed"] == s_st["consumed"] == {"count": 1, "bits": AUTH_BITS_PER_LINK}
        assert s_sat.get("available") == s_st.get("available")
        assert s_sat["deposited"]["bits"] == AUTH_BITS_PER_LINK + L + s_sat.get("available", {}).get("bits", 0)
    # the relay used the satellite's stream only: the rest of each pass key (its station's stream at least)
    # stays available on its link
    for st in ("Xinglong", "Nanshan"):
        dep = snap["Micius"][st]["deposited"]["bits"]
        assert snap["Micius"][st]["available"]["bits"] == dep - AUTH_BITS_PER_LINK - L >= dep - dep // 16 * 8
    # the relayed key is available exactly once at each station, on the link to the other station
    assert snap["Xinglong"]["Nanshan"] == snap["Nanshan"]["Xinglong"] == {
        "available": {"count": 1, "bits": L}, "deposited": {"count": 1, "bits": L}}
    # the satellite's used material is wiped on board
    for root in res.pass_key_ids.values():
        m = _root_material(d / "micius.db", root)
        assert m[:(AUTH_BITS_PER_LINK + L) // 8] == bytes((AUTH_BITS_PER_LINK + L) // 8)
    for s in (sat, x, n):
        assert s.check_invariants() == []


def test_full_rerun_refused_and_demo_fill_reuses(full, cfg):
    res, (sat, x, n), *_ = full
    before = {s.site: s.stats()["links"] for s in (sat, x, n)}
    with pytest.raises(RelayExists, match="deposited once") as ei:
        run_relay(cfg, SEED, sat, x, n)
    assert ei.value.relay_key_id == res.relay_key_id
    got = kme_demo_fill(seed=SEED, cfg=cfg)(sat, x, n)  # the demo restarted in the same directory
    assert (got.relay_key_id, got.length_bits) == (res.relay_key_id, res.length_bits)
    assert {s.site: s.stats()["links"] for s in (sat, x, n)} == before


def test_full_outputs(full, tmp_path):
    import json

    res = full[0]
    paths = write_relay_outputs(res, tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["length_bits"] == res.length_bits and s["keys_match"] is True
    assert s["first"]["station"] == "Xinglong" and "simulation" not in s["first"]
    assert json.loads((tmp_path / "pass_nanshan.json").read_text())["simulation"]["station"] == "Nanshan"
    png = (tmp_path / "relay_timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 and len(paths) == 4


def test_full_otp_across_the_two_stations(full, tmp_path):
    """Runs last on the full stores: a file encrypted at Xinglong decrypts at Nanshan with the relayed key."""
    res, (sat, x, n), *_ = full
    msg = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (tmp_path / "m").write_bytes(msg)
    otp.encrypt_file(x, "Nanshan", tmp_path / "m", tmp_path / "c")
    otp.decrypt_file(n, "Xinglong", tmp_path / "c", tmp_path / "p")
    assert (tmp_path / "p").read_bytes() == msg
    used = otp.otp_key_bits(len(msg))  # pad + 256 MAC bits
    assert x.available_bits("Nanshan") == n.available_bits("Xinglong") == res.length_bits - used
    assert _ranges(x, "Nanshan") == _ranges(n, "Xinglong")  # the same key ids consumed at both ends
    with pytest.raises(otp.OtpError, match="not available"):  # a replay consumes nothing more
        otp.decrypt_file(n, "Xinglong", tmp_path / "c", tmp_path / "p2")
    assert n.available_bits("Xinglong") == res.length_bits - used


# ------------------------------------------------------------------------------------------ short passes
def test_truncate_geometry_keeps_absolute_times(cfg):
    g1, _ = find_relay_passes(cfg)
    t = truncate_geometry(g1, 60.0)
    assert t.duration_s <= 60.0 + 1e-9 and t.t_s[0] == 0.0
    i0 = int(np.argmin(np.abs(g1.t_s - (t.start_utc - g1.start_utc).total_seconds())))
    np.testing.assert_array_equal(t.elevation_deg, g1.elevation_deg[i0:i0 + t.t_s.size])
    assert t.elevation_deg.max() == g1.elevation_deg.max()  # culmination kept
    with pytest.raises(ValueError, match="window_s"):
        truncate_geometry(g1, 0.0)


def test_pass_seeds():
    s = pass_seeds(SEED)
    assert s[0] != s[1] and s == pass_seeds(SEED) and s != pass_seeds(SEED + 1)
    with pytest.raises(ValueError, match="seed"):
        pass_seeds(-1)


def test_short_relay_on_fresh_stores(short, tmp_path):
    p1, p2 = short
    sat, x, n = _stores(tmp_path)
    assert deposit_pass(sat, x, p1) == p1.key_id and deposit_pass(sat, n, p2) == p2.key_id
    rec = relay_deposited(p1, p2, sat, x, n)
    assert rec.ok and rec.keys_match
    L = min(8 * (p.sat_key.size // 8) // 16 * 8 for p in short) - AUTH_BITS_PER_LINK
    assert rec.length_bits == L
    kn = bits_to_bytes(p2.station_key)[AUTH_BITS_PER_LINK // 8:][: L // 8]
    assert x.peek_segments("Nanshan", [_whole(x, "Nanshan", rec.relay_id)]) == kn
    # the authentication of the exchange was paid from the pass keys, at both ends of each link
    for lk in rec.links.values():
        assert lk.verified and lk.applied and lk.auth_bits_used <= lk.auth_key_bits == AUTH_BITS_PER_LINK
        assert lk.messages == 4 and 0 < lk.forgery_bound < 1e-30
    for s in (sat, x, n):
        assert s.check_invariants() == []
    # depositing the same pass again is refused before anything is written
    with pytest.raises(RelayExists):
        deposit_pass(sat, x, p1)
    assert len(sat.roots("Xinglong")) == len(x.roots("Micius")) == 1


def _whole(st, link, root_id):
    from satqkd.keys.store import Segment

    p = [q for q in st.pieces(link, "available") if q.root_id == root_id]
    assert len(p) == 1
    return Segment(p[0].key_id, root_id, p[0].offset_bits, p[0].length_bits)


def _flip(index):
    def tamper(direction, i, frame):
        if direction == "down" and i == index:
            return frame[:-1] + bytes([frame[-1] ^ 1])
        return frame
    return tamper


def test_forged_announcement_no_station_derives(short, tmp_path):
    """A forged announcement on the Nanshan link: no relayed key anywhere; the relayed bits are used up."""
    p1, p2 = short
    sat, x, n = _stores(tmp_path)
    deposit_pass(sat, x, p1), deposit_pass(sat, n, p2)
    rec = relay_deposited(p1, p2, sat, x, n, tamper={"Nanshan": _flip(0)})
    assert not rec.ok and "Nanshan" in rec.reason and "AuthenticationError" in rec.reason
    assert x.roots("Nanshan") == [] and n.roots("Xinglong") == []
    assert rec.links["Xinglong"].verified and not rec.links["Nanshan"].verified
    L = rec.announcement.length_bits
    # A went public: the satellite's segments are relayed, and Xinglong (which verified A) burnt its own
    assert sat.stats()["links"]["Xinglong"]["relayed"]["bits"] == sat.stats()["links"]["Nanshan"]["relayed"]["bits"] == L
    assert x.stats()["links"]["Micius"]["relayed"]["bits"] == L
    assert "relayed" not in n.stats()["links"]["Micius"]
    for s in (sat, x, n):
        assert s.check_invariants() == []


def test_lost_commit_confirmation_revokes(short, tmp_path):
    """Nanshan's commit is forged after both verified A: Xinglong applied, then the satellite revokes it."""
    p1, p2 = short
    sat, x, n = _stores(tmp_path)
    deposit_pass(sat, x, p1), deposit_pass(sat, n, p2)
    rec = relay_deposited(p1, p2, sat, x, n, tamper={"Nanshan": _flip(1)})
    assert not rec.ok
    assert rec.links["Xinglong"].applied and rec.links["Xinglong"].revoked and not rec.links["Nanshan"].applied
    assert x.available_bits("Nanshan") == 0 and n.roots("Xinglong") == []
    assert x.stats()["links"]["Nanshan"]["consumed"]["bits"] == rec.announcement.length_bits
    for s in (sat, x, n):
        assert s.check_invariants() == []


def test_aborted_pass_no_relay_nothing_half_written(cfg, short, tmp_path):
    """run_relay with a QBER threshold between the two passes' QBERs: one pass aborts."""
    q = {p.station: p.summary["qber"] for p in short}
    hi = max(q, key=q.get)
    thr = round(sum(q.values()) / 2, 6)
    assert min(q.values()) < thr < max(q.values())
    c = cfg.model_copy(update={"security": cfg.security.model_copy(update={"qber_abort": thr})})
    sat, x, n = _stores(tmp_path)
    res = run_relay(c, SEED, sat, x, n, window_s=SHORT_WINDOW_S)
    lo = "Nanshan" if hi == "Xinglong" else "Xinglong"
    lo_store, hi_store = (x, n) if lo == "Xinglong" else (n, x)
    assert not res.ok and res.relay_key_id is None and res.length_bits == 0 and not res.keys_match
    assert f"{hi} pass aborted" in res.abort_reason and "QBER" in res.abort_reason
    assert res.pass_key_ids[hi] is None and res.pass_key_ids[lo] is not None
    # the aborted pass left nothing; the good pass's key is whole and available at both ends
    assert sat.roots(hi) == [] and hi_store.roots() == []
    good = res.pass_key_ids[lo]
    assert sat.stats()["links"][lo] == lo_store.stats()["links"]["Micius"]
    assert set(sat.stats()["links"][lo]) == {"available", "deposited"}
    assert _ranges(sat, lo) == _ranges(lo_store, "Micius") == {"available": {(good, 0, sat.available_bits(lo))}}
    assert x.roots("Nanshan") == [] and n.roots("Xinglong") == []
    for s in (sat, x, n):
        assert s.check_invariants() == []


def test_demo_fill_standin_and_bad_sites(cfg, tmp_path):
    sat, x, n = _stores(tmp_path)
    r = kme_demo_fill(source="standin", seed=1, nbytes=64)(sat, x, n)
    assert r.length_bits == 512 and x.available_bits("Nanshan") == n.available_bits("Xinglong") == 512
    with pytest.raises(ValueError, match="source"):
        kme_demo_fill(source="magic")
    with pytest.raises(ValueError, match="store_a must be the store of 'Xinglong'"):
        run_relay(cfg, SEED, sat, n, x)


def test_forged_confirmation_leaves_both_keys(short, tmp_path):
    """Nanshan applied but its 'done' is forged: the satellite cannot confirm, revokes nothing; both hold K."""
    p1, p2 = short
    sat, x, n = _stores(tmp_path)
    deposit_pass(sat, x, p1), deposit_pass(sat, n, p2)

    def forge_up(direction, i, frame):
        return frame[:-1] + bytes([frame[-1] ^ 1]) if direction == "up" and i == 1 else frame

    rec = relay_deposited(p1, p2, sat, x, n, tamper={"Nanshan": forge_up})
    assert not rec.ok and "unconfirmed" in rec.reason
    assert rec.links["Xinglong"].applied and rec.links["Nanshan"].applied
    assert not rec.links["Xinglong"].revoked and rec.keys_match
    assert x.available_bits("Nanshan") == n.available_bits("Xinglong") == rec.announcement.length_bits
    for s in (sat, x, n):
        assert s.check_invariants() == []


def test_run_relay_killed_mid_relay_is_finished_by_the_rerun(cfg, short, tmp_path):
    """`run_relay` (what `satqkd relay` runs) killed -9 after Xinglong prepared: the rerun re-simulates the
    same passes, keeps the deposits, finishes the relay from the journal; a third run is refused."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        from pathlib import Path
        from satqkd.config import load_preset
        from satqkd.keys.store import KeyStore
        from satqkd.jobs.relay import run_relay
        d = Path({str(tmp_path)!r})
        run_relay(load_preset({RELAY_PRESET!r}), {SEED}, KeyStore(d / "micius.db", "Micius"),
                  KeyStore(d / "xinglong.db", "Xinglong"), KeyStore(d / "nanshan.db", "Nanshan"),
                  window_s={SHORT_WINDOW_S})
    """)
    env = {**os.environ, "SATQKD_CRASH_AT": "relay:prepared:Xinglong"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-1500:]
    sat, x, n = _stores(tmp_path)
    assert [p.state for p in x.pieces("Nanshan")] == ["pending"] and n.roots("Xinglong") == []
    res = run_relay(cfg, SEED, sat, x, n, window_s=SHORT_WINDOW_S)
    assert res.ok and res.keys_match and res.length_bits > 0
    assert x.available_bits("Nanshan") == n.available_bits("Xinglong") == res.length_bits
    for s in (sat, x, n):
        assert s.check_invariants() == [] and s.pieces(state="pending") == []
    with pytest.raises(RelayExists, match="done"):
        run_relay(cfg, SEED, sat, x, n, window_s=SHORT_WINDOW_S)
