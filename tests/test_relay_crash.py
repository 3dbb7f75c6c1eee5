"""Issue 9 §3: the relay and the deposits are all or nothing, and resumable.

A subprocess runs the relay (deposits of two synthetic pass keys at both ends, then the journaled
relay, :func:`satqkd.jobs.relay.relay_passes`) and is killed with SIGKILL at a named crash point
(``SATQKD_CRASH_AT``, :mod:`satqkd.faults`). The same call is then rerun, and the three stores are
checked: every bit in exactly one state, no pending key left, each satellite–station link holding the
same available ranges at both ends (nothing usable at one end only), both stations holding the same
relayed key, the pass keys' relay segments relayed at both ends (relayed once), and OTP working both
ways. Synthetic pass keys keep every case fast (no pass simulation).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from satqkd.cli import app
from satqkd.keys.otp import decrypt_bytes, encrypt_bytes
from satqkd.keys.store import KeyStore, KeyStoreError
from satqkd.jobs.one_pass import PassOutcome
from satqkd.jobs.relay import AUTH_BITS_PER_LINK, RELAY_CRASH_POINTS, relay_passes

SAT, FIRST, SECOND = "Micius", "Xinglong", "Nanshan"
NBYTES = {FIRST: 2000, SECOND: 2500}
#: the satellite's stream of each pass key (the first half: "Micius" sorts first) less the authentication cut
L_BITS = min(8 * nb // 16 * 8 for nb in NBYTES.values()) - AUTH_BITS_PER_LINK


def _sqlite_copy(src, dst) -> None:
    """A consistent copy of the SQLite database ``src`` into ``dst`` (an operator's backup or restore)."""
    import sqlite3

    con, out = sqlite3.connect(src), sqlite3.connect(dst)
    con.backup(out)
    con.close()
    out.close()


def synthetic_passes(seed: int = 5) -> tuple[PassOutcome, PassOutcome]:
    """Two passes' final keys: uniform stand-in bits (NOT a QKD result), identical at both ends."""
    rng = np.random.default_rng(seed)
    out = []
    for k, st in enumerate((FIRST, SECOND)):
        bits = rng.integers(0, 2, 8 * NBYTES[st], dtype=np.uint8)
        out.append(PassOutcome(station=st, satellite=SAT, pass_id=f"synthetic:{st}:seed{seed}", seed=seed + k,
                               summary={"start_utc": f"2016-12-19T1{6 + k}:00:00+00:00"}, sat_key=bits,
                               station_key=bits.copy(), epsilon=1e-10))
    return out[0], out[1]


def _open(d):
    return KeyStore(d / "micius.db", SAT), KeyStore(d / "xinglong.db", FIRST), KeyStore(d / "nanshan.db", SECOND)


_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from test_relay_crash import _open, synthetic_passes
    from satqkd.jobs.relay import relay_passes
    sat, x, n = _open(Path(sys.argv[1]))
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    print("finished", rec.ok)
""").format(here=os.path.dirname(__file__))


def _run_child(d, point: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SATQKD_CRASH_AT", None)
    if point:
        env["SATQKD_CRASH_AT"] = point
    return subprocess.run([sys.executable, "-c", _CHILD, str(d)], env=env, capture_output=True, text=True, timeout=120)


def _check_consistent(sat: KeyStore, x: KeyStore, n: KeyStore) -> None:
    for st in (sat, x, n):
        assert st.check_invariants() == [], st.site
        assert st.pieces(state="pending") == [], st.site
    for st in (x, n):  # each link: the same available ranges at both ends
        ends = [{(p.root_id, p.offset_bits, p.length_bits) for p in s.pieces(link, "available")}
                for s, link in ((sat, st.site), (st, SAT))]
        assert ends[0] == ends[1], st.site
        relayed = [{(p.root_id, p.offset_bits, p.length_bits) for p in s.pieces(link, "relayed")}
                   for s, link in ((sat, st.site), (st, SAT))]
        assert relayed[0] == relayed[1], st.site  # relayed once, the same segment at both ends


def _relayed_keys(x: KeyStore, n: KeyStore):
    kx = [r for r in x.roots(SECOND) if r["origin_kind"] == "relay"]
    kn = [r for r in n.roots(FIRST) if r["origin_kind"] == "relay"]
    return kx, kn


def _otp_both_ways(x: KeyStore, n: KeyStore) -> None:
    for a, b in ((x, n), (n, x)):
        msg = f"from {a.site} to {b.site}".encode() * 4
        blob, _ = encrypt_bytes(a, b.site, msg)
        assert decrypt_bytes(b, a.site, blob)[0] == msg


def test_uninterrupted_run_relays_and_a_rerun_changes_nothing(tmp_path):
    sat, x, n = _open(tmp_path)
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    assert rec.ok and rec.keys_match and rec.length_bits == L_BITS
    assert sat.get_op(rec.relay_id)["state"] == "done"
    _check_consistent(sat, x, n)
    snap = [sorted(map(repr, s.pieces())) for s in (sat, x, n)]
    again = relay_passes(*synthetic_passes(), sat, x, n)
    assert again.ok and [sorted(map(repr, s.pieces())) for s in (sat, x, n)] == snap
    _otp_both_ways(x, n)
    for s in (sat, x, n):
        s.close()


@pytest.mark.parametrize("point", [p.format(first=FIRST, second=SECOND) for p in RELAY_CRASH_POINTS])
def test_kill_9_at_every_step_then_rerun_finishes(tmp_path, point):
    res = _run_child(tmp_path, point)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stdout, res.stderr[-1500:])
    sat, x, n = _open(tmp_path)
    rec = relay_passes(*synthetic_passes(), sat, x, n)  # the same call, rerun
    assert rec.ok, rec.reason
    _check_consistent(sat, x, n)
    kx, kn = _relayed_keys(x, n)
    assert len(kx) == len(kn) == 1 and kx[0]["root_id"] == kn[0]["root_id"] == rec.relay_id
    assert rec.keys_match and x.available_bits(SECOND) == n.available_bits(FIRST) == L_BITS
    assert sat.get_op(rec.relay_id)["state"] == "done"
    _otp_both_ways(x, n)
    for s in (sat, x, n):
        s.close()


def test_unconfirmed_commit_is_finished_by_the_rerun(tmp_path):
    """A forged 'done' leaves the journal at 'commit' (unconfirmed); the rerun confirms from the stores."""
    sat, x, n = _open(tmp_path)

    def forge_up(direction, i, frame):
        return frame[:-1] + bytes([frame[-1] ^ 1]) if direction == "up" and i == 1 else frame

    rec = relay_passes(*synthetic_passes(), sat, x, n, tamper={SECOND: forge_up})
    assert not rec.ok and "unconfirmed" in rec.reason
    assert sat.get_op(rec.relay_id)["state"] == "commit"
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    assert rec.ok and sat.get_op(rec.relay_id)["state"] == "done"
    _check_consistent(sat, x, n)
    _otp_both_ways(x, n)


def test_restored_satellite_store_cannot_relay_again(tmp_path):
    """Restore the satellite's store from a backup taken before the relay and run it again: the usage
    ledger (beside the store) refuses the announcement's keys, so no second announcement is made with
    them. (A real backup of the same store, so it is refused by the ledger's ranges, not by the binding.)"""
    from satqkd.jobs.relay import deposit_pass

    sat, x, n = _open(tmp_path)
    p1, p2 = synthetic_passes()
    deposit_pass(sat, x, p1)
    deposit_pass(sat, n, p2)
    sat.close()
    backup = tmp_path / "micius-backup.db"
    _sqlite_copy(tmp_path / "micius.db", backup)
    sat = KeyStore(tmp_path / "micius.db", SAT)
    relay_id = relay_passes(p1, p2, sat, x, n).relay_id
    sat.close()
    _sqlite_copy(backup, tmp_path / "micius.db")
    sat = KeyStore(tmp_path / "micius.db", SAT)
    assert sat.get_op(relay_id) is None and sat.verify()["ledger"] == "ok"
    with pytest.raises(KeyStoreError, match="already used"):
        relay_passes(p1, p2, sat, x, n)
    assert sat.get_op(relay_id) is None and sat.pieces(state="relayed") == []
    for s in (sat, x, n):
        s.close()


def test_run_with_a_bad_satellite_store_deposits_nothing(tmp_path):
    """`satqkd run --store A --sat-store B` with a B that cannot be used: exit 2 before anything runs,
    no half deposit, no traceback."""
    KeyStore(tmp_path / "other.db", "Nanshan").close()  # a store of another site
    r = CliRunner().invoke(app, ["run", "--store", str(tmp_path / "ground.db"), "--sat-store",
                                 str(tmp_path / "other.db"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "Nanshan" in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
    assert not (tmp_path / "ground.db").exists() or KeyStore(tmp_path / "ground.db").roots() == []
    assert not (tmp_path / "out" / "summary.json").exists()


def _forge_down(index):
    """A channel tamper that flips a bit of the ``index``-th satellite→station frame (0 announce, 1 commit,
    2 revoke): that frame fails its tag at the station."""
    def tamper(direction, i, frame):
        return frame[:-1] + bytes([frame[-1] ^ 1]) if direction == "down" and i == index else frame
    return tamper


def _no_relayed_key_anywhere(x: KeyStore, n: KeyStore) -> None:
    for st, other in ((x, SECOND), (n, FIRST)):
        assert st.available_bits(other) == 0, st.site
        assert st.pieces(other, "pending") == [], st.site


def test_a_lost_revoke_is_finished_by_the_rerun(tmp_path):
    """Nanshan's commit is forged (it answers that it did not apply: the satellite records ``revoked``) and
    the revoke to Xinglong is forged too: Xinglong is left holding K, alone. The rerun must take it out of
    service (the recovery used to ignore a ``revoked`` journal: K stayed available at one station only)."""
    sat, x, n = _open(tmp_path)
    rec = relay_passes(*synthetic_passes(), sat, x, n, tamper={SECOND: _forge_down(1), FIRST: _forge_down(2)})
    assert not rec.ok and sat.get_op(rec.relay_id)["state"] == "revoked"
    assert x.available_bits(SECOND) == L_BITS  # the bug's precondition: K at Xinglong only
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    assert not rec.ok and "revoked" in rec.reason
    _check_consistent(sat, x, n)
    _no_relayed_key_anywhere(x, n)
    for s in (sat, x, n):
        s.close()


_CHILD_REVOKE = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from test_relay_crash import _forge_down, _open, synthetic_passes
    from satqkd.jobs.relay import relay_passes
    sat, x, n = _open(Path(sys.argv[1]))
    rec = relay_passes(*synthetic_passes(), sat, x, n, tamper={{"Nanshan": _forge_down(1)}})
    print("finished", rec.ok)
""").format(here=os.path.dirname(__file__))


def test_kill_9_right_after_the_revoke_decision_then_rerun(tmp_path):
    """The satellite records ``revoked`` (Nanshan did not apply) and dies before telling Xinglong: the rerun
    revokes Xinglong's K, so no relayed key is left at one station only."""
    env = dict(os.environ, SATQKD_CRASH_AT="relay:revoked")
    res = subprocess.run([sys.executable, "-c", _CHILD_REVOKE, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stdout, res.stderr[-1500:])
    sat, x, n = _open(tmp_path)
    assert x.available_bits(SECOND) == L_BITS  # Xinglong holds K, Nanshan does not
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    assert not rec.ok
    _check_consistent(sat, x, n)
    _no_relayed_key_anywhere(x, n)
    for s in (sat, x, n):
        s.close()


def test_restored_station_store_cannot_reuse_its_relayed_segment(tmp_path):
    """A station's relay segment is half of the public A = K_X ⊕ K_N. Restore Xinglong's store from a backup
    taken before the relay (its ledger stays) and hand it another announcement over the same segment: the
    usage ledger refuses it (the station used to claim only its authentication key there)."""
    import dataclasses
    import uuid

    from satqkd.keys.relay import station_apply
    from satqkd.keys.store import Segment
    from satqkd.jobs.relay import deposit_pass

    sat, x, n = _open(tmp_path)
    p1, p2 = synthetic_passes()
    deposit_pass(sat, x, p1)
    deposit_pass(sat, n, p2)
    x.close()
    backup = tmp_path / "x-backup.db"
    _sqlite_copy(tmp_path / "xinglong.db", backup)
    x = KeyStore(tmp_path / "xinglong.db", FIRST)
    rec = relay_passes(p1, p2, sat, x, n)
    assert rec.ok
    x.close()
    _sqlite_copy(backup, tmp_path / "xinglong.db")
    x = KeyStore(tmp_path / "xinglong.db", FIRST)
    g = rec.announcement.first_segments[0]
    again = dataclasses.replace(rec.announcement, relay_id=str(uuid.uuid4()),
                                first_segments=(Segment(str(uuid.uuid4()), g.root_id, g.offset_bits, g.length_bits),))
    with pytest.raises(KeyStoreError, match="already used"):
        station_apply(x, again)
    assert x.roots(SECOND) == []
    for s in (sat, x, n):
        s.close()


def test_relayed_key_used_before_the_rerun_is_kept_at_both_stations(tmp_path):
    """kill -9 after Xinglong activated K (Nanshan's still pending); the operator encrypts with it at
    Xinglong before rerunning. The rerun must finish the commit (Nanshan activates and decrypts), not
    revoke Nanshan's copy and leave a partly used K at Xinglong only."""
    res = _run_child(tmp_path, f"relay:activated:{FIRST}")
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stdout, res.stderr[-1500:])
    sat, x, n = _open(tmp_path)
    blob, _ = encrypt_bytes(x, SECOND, b"sent before the rerun")
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    assert rec.ok, rec.reason
    assert sat.get_op(rec.relay_id)["state"] == "done"
    _check_consistent(sat, x, n)
    assert decrypt_bytes(n, FIRST, blob)[0] == b"sent before the rerun"
    for s in (sat, x, n):
        s.close()


def test_the_relay_never_publishes_a_pad_a_station_already_sent_with(tmp_path):
    """The announcement A = K_X ⊕ K_N is the satellite *sending* (K_N under the pad K_X, and K_X under K_N):
    it must come from the satellite's own directional stream of each pass key. Xinglong encrypts a file to
    the satellite with its stream of its pass key (the file still in flight), then the relay runs: A must
    not cover that pad — Nanshan knows K_N, so it would read Xinglong's file from A. (The relay used to cut
    [896, 896 + L) over both streams, and Xinglong's pad came from the back of its key.)"""
    sat, x, n = _open(tmp_path)
    p1, p2 = synthetic_passes()
    from satqkd.jobs.relay import deposit_pass

    deposit_pass(sat, x, p1)
    deposit_pass(sat, n, p2)
    msg = b"Xinglong to Micius, before the relay" * 3
    blob, rep = encrypt_bytes(x, SAT, msg)
    from satqkd.keys import otp

    pad = {(g.root_id, b) for g in otp._unpack(blob)[0]["_segments"]
           for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}
    rec = relay_passes(p1, p2, sat, x, n)
    assert rec.ok, rec.reason
    published = {(g.root_id, b) for g in rec.announcement.first_segments + rec.announcement.second_segments
                 for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}
    assert not pad & published
    assert decrypt_bytes(sat, FIRST, blob)[0] == msg  # the file still decrypts at the satellite
    _check_consistent(sat, x, n)
    for s in (sat, x, n):
        s.close()


def test_a_revoke_after_part_of_k_was_used_retires_the_rest(tmp_path):
    """As in the lost-revoke case, but Xinglong used part of its K (an OTP file) before the rerun: the rerun
    must still retire the rest of K there (it used to leave it available, at one station only)."""
    sat, x, n = _open(tmp_path)
    rec = relay_passes(*synthetic_passes(), sat, x, n, tamper={SECOND: _forge_down(1), FIRST: _forge_down(2)})
    assert not rec.ok and sat.get_op(rec.relay_id)["state"] == "revoked"
    encrypt_bytes(x, SECOND, b"sent with a K Nanshan never got")
    assert 0 < x.available_bits(SECOND) < L_BITS
    rec = relay_passes(*synthetic_passes(), sat, x, n)
    assert not rec.ok
    _check_consistent(sat, x, n)
    _no_relayed_key_anywhere(x, n)
    for s in (sat, x, n):
        s.close()
