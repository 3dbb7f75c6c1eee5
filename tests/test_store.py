"""Key store: state machine, identical cuts at both ends, atomicity, crash safety, schema."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satqkd.keys.store import (
    SCHEMA_VERSION,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    KeyUnavailable,
    NotEntitled,
    Origin,
    bits_to_bytes,
    bytes_to_bits,
    cuts_from_front,
    key_id_for,
)


def _pair(tmp_path, nbytes=256, seed=0, wipe=True):
    """Xinglong and Nanshan stores holding the same root key (same id) on their shared link."""
    rng = np.random.default_rng(seed)
    mat = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    a = KeyStore(tmp_path / "x.db", "Xinglong", wipe=wipe)
    b = KeyStore(tmp_path / "n.db", "Nanshan", wipe=wipe)
    rid = key_id_for("pass-1")
    a.deposit("Nanshan", mat, key_id=rid, origin=Origin("qkd", "pass-1", 7, 1e-10))
    b.deposit("Xinglong", mat, key_id=rid, origin=Origin("qkd", "pass-1", 7, 1e-10))
    return a, b, rid, mat


def _snapshot(st: KeyStore):
    return sorted((p.key_id, p.root_id, p.offset_bits, p.length_bits, p.state, p.peer_ack) for p in st.pieces())


def test_bits_bytes_roundtrip_and_truncation():
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1], dtype=np.uint8)  # 11 bits: 3 trailing bits dropped
    assert bits_to_bytes(bits) == bytes([0b10110001])
    assert np.array_equal(bytes_to_bits(b"\xb1"), bits[:8])
    with pytest.raises(ValueError, match="only 0 and 1"):
        bits_to_bytes(np.array([0, 2], dtype=np.uint8))


def test_deposit_stats_pragmas_and_schema(tmp_path):
    st = KeyStore(tmp_path / "s.db", "Xinglong")
    kid = st.deposit("Nanshan", np.ones(1001, dtype=np.uint8), origin=Origin("qkd", "p7", 7, 1e-9))
    s = st.stats()
    assert s["links"]["Nanshan"]["available"] == {"count": 1, "bits": 1000}  # 1001 bits → 125 whole bytes
    assert st.roots("Nanshan")[0]["epsilon"] == 1e-9 and st.roots()[0]["origin_pass"] == "p7"
    assert st.get(kid).state == "available"
    assert st._con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    st.close()
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(KeyStoreError, match="schema version 99"):
        KeyStore(tmp_path / "s.db")
    with pytest.raises(ValueError, match="site is required"):
        KeyStore(tmp_path / "new.db")


def test_site_mismatch_and_bad_arguments(tmp_path):
    KeyStore(tmp_path / "s.db", "Xinglong").close()
    with pytest.raises(ValueError, match="store of site 'Xinglong'"):
        KeyStore(tmp_path / "s.db", "Nanshan")
    st = KeyStore(tmp_path / "s.db")
    with pytest.raises(ValueError, match="link"):
        st.deposit("", b"\x00")
    with pytest.raises(ValueError, match="key_id"):
        st.deposit("Nanshan", b"\x00", key_id="not-a-uuid")
    with pytest.raises(ValueError, match="size_bits"):
        st.reserve_new("Nanshan", 12, 1, master_sae="a", slave_sae="b", kme_id="k", request_id="r")
    kid = st.deposit("Nanshan", b"\x01\x02")
    with pytest.raises(KeyStoreError, match="already"):
        st.deposit("Nanshan", b"\x01\x02", key_id=kid)


def test_master_and_slave_cut_identically_and_deliver_once(tmp_path):
    a, b, rid, mat = _pair(tmp_path)
    assert cuts_from_front("Nanshan", "Xinglong") and not cuts_from_front("Xinglong", "Nanshan")
    cut = a.reserve_new("Nanshan", 128, 3, master_sae="sa", slave_sae="sb", kme_id="ka", request_id="r1")
    # Xinglong sorts after Nanshan, so it cuts from the back of the pool: last 3 × 16 bytes, last key first
    assert [k for _, k in cut] == [mat[-16:], mat[-32:-16], mat[-48:-32]]
    assert a.stats()["awaiting_peer"] == 3
    assert b.reserve_segments("Xinglong", [s for s, _ in cut], master_sae="sa", slave_sae="sb", kme_id="ka",
                              request_id="r1")
    # the same request again is a no-op (idempotent), not a second reservation
    assert not b.reserve_segments("Xinglong", [s for s, _ in cut], master_sae="sa", slave_sae="sb", kme_id="ka",
                                  request_id="r1")
    ids = [s.key_id for s, _ in cut]
    a.confirm_peer(ids)
    assert a.stats()["issued_unconfirmed"] == 3 and a.stats()["awaiting_peer"] == 0
    a.mark_delivered(ids)
    with pytest.raises(NotEntitled):
        b.deliver(ids[:1], master_sae="sa", slave_sae="other-sae")
    with pytest.raises(KeyNotFound):
        b.deliver(ids[:1], master_sae="someone-else", slave_sae="sb")
    with pytest.raises(KeyNotFound):  # one unknown id: nothing delivered
        b.deliver([ids[0], str(uuid.uuid4())], master_sae="sa", slave_sae="sb")
    got = b.deliver(ids, master_sae="sa", slave_sae="sb")
    assert [k for _, k in got] == [k for _, k in cut]
    with pytest.raises(KeyNotFound):
        b.deliver(ids[:1], master_sae="sa", slave_sae="sb")
    for st in (a, b):
        assert st.check_invariants() == []
        s = st.stats()["links"][st.pieces()[0].link]
        assert s["delivered"] == {"count": 3, "bits": 384} and s["available"]["bits"] == 8 * 256 - 384


def test_collision_between_the_two_ends_is_refused_without_change(tmp_path):
    a, b, rid, mat = _pair(tmp_path, nbytes=64)  # 512 bits
    # Nanshan masters from the front, Xinglong from the back: small cuts never overlap
    cb = b.reserve_new("Xinglong", 128, 1, master_sae="sb", slave_sae="sa", kme_id="kb", request_id="rb")
    ca = a.reserve_new("Nanshan", 128, 1, master_sae="sa", slave_sae="sb", kme_id="ka", request_id="ra")
    assert (cb[0][0].offset_bits, ca[0][0].offset_bits) == (0, 384)
    for m, s_, cut, link_s, rq in ((b, a, cb, "Nanshan", "rb"), (a, b, ca, "Xinglong", "ra")):
        s_.reserve_segments(link_s, [c for c, _ in cut], master_sae="x", slave_sae="y", kme_id="k", request_id=rq)
    # both now cut 192 bits at the same time: [128, 320) and [192, 384) overlap
    cb = b.reserve_new("Xinglong", 192, 1, master_sae="sb", slave_sae="sa", kme_id="kb", request_id="rb2")
    ca = a.reserve_new("Nanshan", 192, 1, master_sae="sa", slave_sae="sb", kme_id="ka", request_id="ra2")
    assert (cb[0][0].offset_bits, ca[0][0].offset_bits) == (128, 192)
    before_a, before_b = _snapshot(a), _snapshot(b)
    with pytest.raises(KeyUnavailable):
        a.reserve_segments("Nanshan", [cb[0][0]], master_sae="sb", slave_sae="sa", kme_id="kb", request_id="rb2")
    with pytest.raises(KeyUnavailable):
        b.reserve_segments("Xinglong", [ca[0][0]], master_sae="sa", slave_sae="sb", kme_id="ka", request_id="ra2")
    assert (_snapshot(a), _snapshot(b)) == (before_a, before_b)  # refusals change nothing
    # each master returns its cut to the pool: the two stores agree again, bit for bit
    a.release([ca[0][0].key_id], role="master")
    b.release([cb[0][0].key_id], role="master")
    for st in (a, b):
        assert st.check_invariants() == []
        assert [(p.offset_bits, p.length_bits, p.state) for p in st.pieces()] == [
            (0, 128, "reserved"), (128, 256, "available"), (384, 128, "reserved")]


def test_release_tombstone_and_coalesce(tmp_path):
    a, b, rid, mat = _pair(tmp_path)
    cut = a.reserve_new("Nanshan", 64, 4, master_sae="sa", slave_sae="sb", kme_id="ka", request_id="r1")
    ids = [s.key_id for s, _ in cut]
    res = b.release(ids, request_id="r1", tombstone=True, role="slave", kme_id="ka")
    assert res == {"released": [], "delivered": [], "unknown": ids}
    with pytest.raises(KeyUnavailable, match="released before"):
        b.reserve_segments("Xinglong", [s for s, _ in cut], master_sae="sa", slave_sae="sb", kme_id="ka",
                           request_id="r1")
    assert a.release(ids, request_id="r1", role="master")["released"] == ids
    # adjacent available pieces are merged back into one piece covering the root
    assert [(p.offset_bits, p.length_bits, p.state) for p in a.pieces()] == [(0, 2048, "available")]
    assert a.check_invariants() == [] and b.check_invariants() == []


def test_take_within_failure_consumes_nothing_and_wipe(tmp_path):
    a, b, rid, mat = _pair(tmp_path)
    before = _snapshot(a)

    def boom(segs, material):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        a.take("Nanshan", 256, within=boom)
    assert _snapshot(a) == before
    segs, material = a.take("Nanshan", 256, purpose="authentication")
    assert material == mat[-32:]
    # the consumed range is zeroed on disk, the rest is untouched
    raw = sqlite3.connect(tmp_path / "x.db").execute("SELECT material FROM roots").fetchone()[0]
    assert raw[-32:] == bytes(32) and raw[:-32] == mat[:-32]
    with pytest.raises(KeyUnavailable):
        a.take("Nanshan", 8 * 256)  # more than is left


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["cut_a", "cut_b", "take", "release", "deliver"]),
                              st.integers(1, 6), st.sampled_from([64, 128, 192, 256])), max_size=25))
def test_random_operation_sequences_keep_every_bit_in_exactly_one_state(tmp_path_factory, ops):
    d = tmp_path_factory.mktemp("ops")
    a, b, rid, mat = _pair(d, nbytes=512)
    total = 8 * 512
    issued: list = []
    for step, (op, n, size) in enumerate(ops):
        try:
            if op in ("cut_a", "cut_b"):
                m, s_ = (a, b) if op == "cut_a" else (b, a)
                link_m, link_s = ("Nanshan", "Xinglong") if op == "cut_a" else ("Xinglong", "Nanshan")
                cut = m.reserve_new(link_m, size, n, master_sae="m", slave_sae="s", kme_id="k", request_id=f"r{step}")
                try:
                    s_.reserve_segments(link_s, [c for c, _ in cut], master_sae="m", slave_sae="s", kme_id="k",
                                        request_id=f"r{step}")
                    m.confirm_peer([c.key_id for c, _ in cut])
                    issued.append((s_, cut))
                except KeyUnavailable:
                    m.release([c.key_id for c, _ in cut])
            elif op == "take":
                a.take("Nanshan", size * n)
            elif op == "release" and issued:
                s_, cut = issued.pop()
                s_.release([c.key_id for c, _ in cut])
            elif op == "deliver" and issued:
                s_, cut = issued.pop(0)
                got = s_.deliver([c.key_id for c, _ in cut], master_sae="m", slave_sae="s")
                assert [k for _, k in got] == [k for _, k in cut]
        except (KeyUnavailable, KeyNotFound):
            pass
        for stx in (a, b):
            assert stx.check_invariants() == []
            assert sum(p.length_bits for p in stx.pieces()) == total
    # no two pieces outside the pool share a bit (tiling), and ids are unique
    ids = [p.key_id for p in a.pieces()]
    assert len(ids) == len(set(ids))
    a.close()
    b.close()


def test_kill_9_during_a_burst_of_takes_loses_nothing(tmp_path):
    """A child takes keys in a loop and prints each committed id; SIGKILL it; every printed id is consumed."""
    path = tmp_path / "s.db"
    st = KeyStore(path, "Xinglong")
    st.deposit("Nanshan", os.urandom(1 << 15))
    st.close()
    code = textwrap.dedent(f"""
        import sys
        from satqkd.keys.store import KeyStore
        st = KeyStore({str(path)!r})
        print("ready", flush=True)
        for i in range(100000):
            segs, _ = st.take("Nanshan", 64, purpose="authentication")
            print(segs[0].key_id, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    lines = []
    t0 = time.monotonic()
    while len(lines) < 40 and time.monotonic() - t0 < 30:
        lines.append(p.stdout.readline().strip())
    os.kill(p.pid, signal.SIGKILL)
    rest = p.stdout.read().split()
    p.wait()
    printed = [x for x in lines + rest if x]
    st = KeyStore(path)
    assert st.check_invariants() == []
    consumed = {q.key_id for q in st.pieces(state="consumed")}
    assert set(printed) <= consumed  # committed before printed: nothing lost
    assert len(consumed) - len(printed) <= 1  # at most the one committed but not yet printed
    assert sum(q.length_bits for q in st.pieces()) == 8 * (1 << 15)


_V1_DDL = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE roots (root_id TEXT PRIMARY KEY, link TEXT NOT NULL, length_bits INTEGER NOT NULL, material BLOB NOT NULL,
    origin_kind TEXT NOT NULL, origin_pass TEXT, origin_seed INTEGER, epsilon REAL, origin_note TEXT, created_utc TEXT NOT NULL);
CREATE TABLE pieces (key_id TEXT PRIMARY KEY, link TEXT NOT NULL, root_id TEXT NOT NULL REFERENCES roots(root_id),
    offset_bits INTEGER NOT NULL, length_bits INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('available','reserved','delivered','relayed','consumed')),
    role TEXT, master_sae TEXT, slave_sae TEXT, kme_id TEXT, request_id TEXT, peer_ack INTEGER, purpose TEXT,
    updated_utc TEXT NOT NULL);
CREATE INDEX pieces_link_state ON pieces(link, state);
CREATE INDEX pieces_root ON pieces(root_id, offset_bits);
CREATE INDEX pieces_request ON pieces(request_id);
CREATE TABLE tombstones (request_id TEXT PRIMARY KEY, utc TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, utc TEXT NOT NULL, key_id TEXT NOT NULL, state TEXT NOT NULL,
    request_id TEXT, note TEXT);
"""


def test_schema_1_store_is_migrated_on_open_with_digests(tmp_path):
    """A store written by satqkd with schema 1 (no digests) is migrated when opened: every live piece gets
    the digest of its material as found then, and from then on a flipped bit is caught."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(_V1_DDL)
    mat = os.urandom(128)
    rid = key_id_for("old-pass")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"), ("site", "Xinglong"), ("created_utc", "x")])
    con.execute("INSERT INTO roots VALUES (?, 'Nanshan', 1024, ?, 'qkd', 'old-pass', 1, NULL, NULL, 'x')", (rid, mat))
    con.execute("INSERT INTO pieces(key_id, link, root_id, offset_bits, length_bits, state, updated_utc) "
                "VALUES (?, 'Nanshan', ?, 0, 512, 'consumed', 'x')", (str(uuid.uuid4()), rid))
    con.execute("INSERT INTO pieces(key_id, link, root_id, offset_bits, length_bits, state, updated_utc) "
                "VALUES (?, 'Nanshan', ?, 512, 512, 'available', 'x')", (str(uuid.uuid4()), rid))
    con.commit()
    con.close()
    st = KeyStore(path)
    assert st.schema_version == SCHEMA_VERSION == 2
    rep = st.verify()
    assert rep["ok"] and rep["pieces_checked"] == 1
    segs, got = st.take("Nanshan", 64)
    assert got == mat[120:128] and st.check_invariants() == []  # Xinglong cuts from the back
    st.close()
    con = sqlite3.connect(path)  # damage it behind the store's back
    bad = bytearray(mat)
    bad[100] ^= 1
    con.execute("UPDATE roots SET material = ? WHERE root_id = ?", (bytes(bad), rid))
    con.commit()
    con.close()
    st = KeyStore(path)
    with pytest.raises(KeyStoreError, match="fails its digest"):
        st.take("Nanshan", 64)
    assert [p.state for p in st.pieces(state="quarantined")] == ["quarantined"]
    assert st.available_bits("Nanshan") == 0 and st.check_invariants() == []
    st.close()


def test_pending_keys_are_never_served_until_activated(tmp_path):
    st = KeyStore(tmp_path / "s.db", "Xinglong")
    rid = st.deposit("Nanshan", os.urandom(64), pending=True)
    assert st.available_bits("Nanshan") == 0 and [p.state for p in st.pieces()] == ["pending"]
    with pytest.raises(KeyUnavailable):
        st.take("Nanshan", 8)
    with pytest.raises(KeyUnavailable):
        st.reserve_new("Nanshan", 64, 1, master_sae="a", slave_sae="b", kme_id="k", request_id="r")
    assert st.activate(rid) == 1 and st.activate(rid) == 0
    assert st.available_bits("Nanshan") == 512
    rid2 = st.deposit("Nanshan", os.urandom(16), pending=True)
    st.discard_pending(rid2)
    assert [r["root_id"] for r in st.roots()] == [rid] and st.check_invariants() == []
    st.close()


def test_kme_never_hands_out_corrupted_key(tmp_path):
    """A bit flipped in a reserved key at the slave KME's store: dec_keys' delivery refuses and quarantines it
    (two SAEs never get different keys); a flip in the pool stops the master's next cut the same way."""
    a, b, rid, mat = _pair(tmp_path)
    cut = a.reserve_new("Nanshan", 64, 1, master_sae="sa", slave_sae="sb", kme_id="kn", request_id="r1")
    seg = cut[0][0]
    b.reserve_segments("Xinglong", [seg], master_sae="sa", slave_sae="sb", kme_id="kx", request_id="r1")
    b.close()
    con = sqlite3.connect(tmp_path / "n.db")
    m = bytearray(mat)
    m[seg.offset_bits // 8] ^= 0x80
    m[0] ^= 0x01  # and one in the pool
    con.execute("UPDATE roots SET material = ? WHERE root_id = ?", (bytes(m), rid))
    con.commit()
    con.close()
    b = KeyStore(tmp_path / "n.db")
    with pytest.raises(KeyStoreError, match="fails its digest"):
        b.deliver([seg.key_id], master_sae="sa", slave_sae="sb")
    assert b.get(seg.key_id).state == "quarantined"
    with pytest.raises(KeyStoreError, match="fails its digest"):
        b.reserve_new("Xinglong", 64, 1, master_sae="sb", slave_sae="sa", kme_id="kx", request_id="r2")
    assert len(b.pieces(state="quarantined")) == 2 and b.check_invariants() == []
    a.close()
    b.close()


def test_a_link_named_like_the_site_itself_is_refused(tmp_path):
    """Both ends derive their OTP direction and cutting end from (site, link) sorted: a store whose link
    has its own name would take the same stream as its peer. Refused, nothing deposited."""
    from satqkd.keys.otp import OtpError, encrypt_bytes
    from satqkd.keys.store import direction_window

    with KeyStore(tmp_path / "x.db", "Xinglong") as st:
        with pytest.raises(ValueError, match="own site"):
            st.deposit("Xinglong", bytes(64))
        assert st.roots() == []
        with pytest.raises(OtpError, match="own site"):
            encrypt_bytes(st, "Xinglong", b"hi")
    with pytest.raises(ValueError):
        direction_window("Xinglong", "Xinglong", 512)
    # odd lengths: the two streams tile the root, whole bytes, never overlap
    for bits in (8, 16, 24, 520, 1000):
        a, b = direction_window("Nanshan", "Xinglong", bits), direction_window("Xinglong", "Nanshan", bits)
        assert a[0] == 0 and a[1] == b[0] and b[1] == bits and a[1] % 8 == 0


def test_swapped_key_ids_or_a_changed_link_fail_the_digest(tmp_path):
    """The digest binds a piece's id and link, not only where its bytes lie: two reserved keys whose ids
    were swapped in the file (a bad restore, a hand edit) are not delivered under each other's id, and a
    piece moved to another link is not served there. (Bound to root/offset/length only, both went
    through: an SAE got the other key's bytes under this id.)"""
    a, b, rid, mat = _pair(tmp_path)
    cut = a.reserve_new("Nanshan", 64, 2, master_sae="sa", slave_sae="sb", kme_id="kn", request_id="r1")
    b.reserve_segments("Xinglong", [s for s, _ in cut], master_sae="sa", slave_sae="sb", kme_id="kx",
                       request_id="r1")
    b.close()
    (k1, _), (k2, _) = cut
    con = sqlite3.connect(tmp_path / "n.db")
    con.execute("UPDATE pieces SET key_id = 'tmp' WHERE key_id = ?", (k1.key_id,))
    con.execute("UPDATE pieces SET key_id = ? WHERE key_id = ?", (k1.key_id, k2.key_id))
    con.execute("UPDATE pieces SET key_id = ? WHERE key_id = 'tmp'", (k2.key_id,))
    con.execute("UPDATE pieces SET link = 'Elsewhere' WHERE state = 'available'")
    con.execute("UPDATE roots SET link = 'Elsewhere'")
    con.commit()
    con.close()
    b = KeyStore(tmp_path / "n.db")
    with pytest.raises(KeyStoreError, match="fails its digest"):
        b.deliver([k1.key_id], master_sae="sa", slave_sae="sb")
    with pytest.raises(KeyStoreError, match="fails its digest"):
        b.take("Elsewhere", 64)
    rep = b.verify()
    assert not rep["ok"] and {k1.key_id, k2.key_id} <= set(rep["quarantined"])
    a.close()
    b.close()


def test_key_used_before_the_ledger_existed_is_remembered_by_it(tmp_path):
    """A schema-1 store had no usage ledger. When it is opened (migrated, bound to its new ledger) the key
    it already used goes into the ledger, so restoring an older schema-1 backup in its place cannot give
    that key out again as an OTP pad."""
    from satqkd.keys.otp import encrypt_bytes

    def v1_store(path, used: bool):
        con = sqlite3.connect(path)
        con.executescript(_V1_DDL)
        con.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"), ("site", "Xinglong"),
                                                           ("created_utc", "x")])
        con.execute("INSERT INTO roots VALUES (?, 'Nanshan', 1024, ?, 'qkd', 'old-pass', 1, NULL, NULL, 'x')",
                    (rid, mat if not used else mat[:64] + bytes(64)))
        pieces = [(0, 512, "available"), (512, 512, "consumed")] if used else [(0, 1024, "available")]
        for off, ln, state in pieces:
            con.execute("INSERT INTO pieces(key_id, link, root_id, offset_bits, length_bits, state, updated_utc) "
                        "VALUES (?, 'Nanshan', ?, ?, ?, ?, 'x')", (str(uuid.uuid4()), rid, off, ln, state))
        con.commit()
        con.close()

    rid, mat = key_id_for("old-pass"), os.urandom(128)
    v1_store(tmp_path / "backup.db", used=False)  # the backup, from before Xinglong's half was used
    v1_store(tmp_path / "x.db", used=True)  # Xinglong (sorts after Nanshan) sent with [512, 1024)
    KeyStore(tmp_path / "x.db").close()  # the upgrade: migrated, bound to x.db.ledger
    (tmp_path / "x.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"x.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "backup.db").rename(tmp_path / "x.db")  # restore the old backup; the ledger stays
    with KeyStore(tmp_path / "x.db") as st:
        with pytest.raises(KeyStoreError, match="usage ledger"):
            encrypt_bytes(st, "Nanshan", b"m")
