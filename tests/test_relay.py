"""Satellite trusted relay: stations derive the same key; the announcement alone reveals nothing."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from satqkd.keys.relay import (
    RelayAnnouncement,
    deposit_pass_key,
    relay_announcement,
    run_standin_relay,
    satellite_announce,
    standin_pass_keys,
    station_apply,
    station_relayed_key,
)
from satqkd.keys.store import KeyStore, KeyUnavailable


def test_xor_logic_by_hand():
    kx, kn = bytes([0b10101010, 0xFF]), bytes([0b11110000, 0x0F])
    a = relay_announcement(kx, kn)
    assert a == bytes([0b01011010, 0xF0])
    assert station_relayed_key(kx, a, first_station=True) == kn
    assert station_relayed_key(kn, a, first_station=False) == kn
    with pytest.raises(ValueError, match="equal length"):
        relay_announcement(b"\x00", b"\x00\x00")


def test_announcement_is_independent_of_k_x_when_k_n_uniform():
    """χ² test of independence between a (strongly non-uniform) K_X and A = K_X ⊕ K_N, 4-bit symbols."""
    rng = np.random.default_rng(2017)
    n = 40_000
    p = np.r_[0.4, np.full(15, 0.6 / 15)]  # K_X heavily biased toward 0
    kx = rng.choice(16, size=n, p=p).astype(np.uint8)
    kn = rng.integers(0, 16, size=n, dtype=np.uint8)
    a = np.frombuffer(relay_announcement(kx.tobytes(), kn.tobytes()), np.uint8)
    table = np.zeros((16, 16))
    np.add.at(table, (kx, a), 1)
    _, pval, _, _ = chi2_contingency(table)
    assert pval > 1e-3
    # A is uniform on its own too
    counts = np.bincount(a, minlength=16)
    assert abs(counts / n - 1 / 16).max() < 0.01
    # control: with a biased K_N the same test sees the dependence at once
    kn_bad = rng.choice(16, size=n, p=p).astype(np.uint8)
    a_bad = kx ^ kn_bad
    table = np.zeros((16, 16))
    np.add.at(table, (kx, a_bad), 1)
    assert chi2_contingency(table)[1] < 1e-12


@pytest.fixture
def three(tmp_path):
    sat = KeyStore(tmp_path / "sat.db", "Micius")
    x = KeyStore(tmp_path / "x.db", "Xinglong")
    n = KeyStore(tmp_path / "n.db", "Nanshan")
    yield sat, x, n, tmp_path
    for s in (sat, x, n):
        s.close()


def test_stations_hold_identical_relayed_keys(three):
    sat, x, n, d = three
    rng = np.random.default_rng(9)
    kx = standin_pass_keys(rng, 3000)
    kn = standin_pass_keys(rng, 2000)  # shorter second pass: L = its satellite's half, 1000 bytes
    deposit_pass_key(sat, x, kx, pass_id="pass-X", seed=9, epsilon=1e-10)
    deposit_pass_key(sat, n, kn, pass_id="pass-N", seed=9, epsilon=1e-10)
    ann = satellite_announce(sat, "Xinglong", "Nanshan")
    assert ann.length_bits == 8 * 1000
    # "Micius" sorts before both station names: the satellite's stream is the first half of each key
    assert ann.xor == relay_announcement(kx[:1000], kn[:1000])
    # the announcement survives JSON transport
    ann = RelayAnnouncement.from_json(ann.to_json())
    kid_x = station_apply(x, ann)
    kid_n = station_apply(n, ann)
    assert kid_x == kid_n == ann.relay_id
    mx = x.peek_segments("Nanshan", [_whole(x, kid_x)])
    mn = n.peek_segments("Xinglong", [_whole(n, kid_n)])
    assert mx == mn == kn[:1000]
    # bookkeeping: the used satellite keys are relayed (and wiped on board), everything tiles
    assert sat.stats()["links"]["Xinglong"]["relayed"]["bits"] == sat.stats()["links"]["Nanshan"]["relayed"]["bits"] == 8000
    assert x.stats()["links"]["Micius"]["available"]["bits"] == 8 * 2000
    raw = sqlite3.connect(d / "sat.db").execute("SELECT material FROM roots WHERE link='Nanshan'").fetchone()[0]
    assert raw == bytes(1000) + kn[1000:]  # the station's half stays (available on the link)
    for s in (sat, x, n):
        assert s.check_invariants() == []
    assert x.roots("Nanshan")[0]["origin_kind"] == "relay"
    # applying the same announcement twice is refused: the station's key is already relayed
    with pytest.raises(KeyUnavailable):
        station_apply(n, ann)


def _whole(st: KeyStore, root_id: str):
    from satqkd.keys.store import Segment

    p = st.pieces(state="available")
    piece = [q for q in p if q.root_id == root_id][0]
    return Segment(piece.key_id, root_id, piece.offset_bits, piece.length_bits)


def test_standin_relay_fills_three_stores(three):
    sat, x, n, _ = three
    res = run_standin_relay(sat, x, n, seed=4, nbytes=512)
    assert res.length_bits == 4096
    assert x.available_bits("Nanshan") == n.available_bits("Xinglong") == 4096
    assert sat.directional_bits("Xinglong") == sat.directional_bits("Nanshan") == 0  # the satellite's streams
    assert sat.available_bits("Xinglong") == sat.available_bits("Nanshan") == 4096  # the stations' streams
    with pytest.raises(ValueError, match="no key to relay"):
        satellite_announce(sat, "Xinglong", "Nanshan")
    with pytest.raises(ValueError, match="neither"):
        station_apply(sat, res.announcement)


def test_satellite_announce_never_publishes_a_pad_a_station_sent_with(three):
    """``satellite_announce`` is the satellite sending: a station's file to the satellite, still in flight,
    keeps its pad out of the XOR (it used to take from the whole pool, back of the key included)."""
    from satqkd.keys import otp
    from satqkd.keys.otp import decrypt_bytes, encrypt_bytes

    sat, x, n, _ = three
    rng = np.random.default_rng(5)
    deposit_pass_key(sat, x, standin_pass_keys(rng, 1000), pass_id="pass-X", seed=5)
    deposit_pass_key(sat, n, standin_pass_keys(rng, 1000), pass_id="pass-N", seed=5)
    blob, _ = encrypt_bytes(x, "Micius", b"in flight" * 20)
    pad = {(g.root_id, b) for g in otp._unpack(blob)[0]["_segments"]
           for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}
    ann = satellite_announce(sat, "Xinglong", "Nanshan")
    published = {(g.root_id, b) for g in ann.first_segments + ann.second_segments
                 for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}
    assert not pad & published
    station_apply(x, ann)
    station_apply(n, ann)
    assert decrypt_bytes(sat, "Xinglong", blob)[0] == b"in flight" * 20
