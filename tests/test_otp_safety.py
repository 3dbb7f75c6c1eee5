"""Issue 9 §1–§2 and issue 8 §4: a pad byte is used once, stored key is checked on every read, a restored
store cannot reuse a pad.

* both stations encrypt toward each other until their key is exhausted, from several processes at once:
  every file that was written decrypts at the other station and no key bit is used twice;
* a flipped bit in stored material is caught (quarantined, never served) at the sender and at the
  receiver; a receiver holding a different pad with a valid digest gets "authentication failed", never
  a wrong plaintext; `satqkd keys verify` reports it;
* back up a store, encrypt, restore the backup, encrypt again: refused (exit 2) by the usage ledger;
* stores, their WAL files and key files are 0600 whatever the umask.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from satqkd.cli import app
from satqkd.keys import otp
from satqkd.keys.otp import OtpError, decrypt_bytes, decrypt_file, encrypt_bytes, encrypt_file
from satqkd.keys.relay import run_standin_relay
from satqkd.keys.store import KeyStore, KeyStoreError

RELAY_BYTES = 4096


@pytest.fixture
def stations(tmp_path):
    sat = KeyStore(tmp_path / "sat.db", "Micius")
    x = KeyStore(tmp_path / "x.db", "Xinglong")
    n = KeyStore(tmp_path / "n.db", "Nanshan")
    run_standin_relay(sat, x, n, seed=11, nbytes=RELAY_BYTES)
    sat.close()
    yield x, n
    x.close()
    n.close()


def _flip_material_bit(path, root_id, byte):
    """Damage a store behind its back, as a disk or a bad copy would (the store is not involved)."""
    con = sqlite3.connect(path)
    mat = bytearray(con.execute("SELECT material FROM roots WHERE root_id = ?", (root_id,)).fetchone()[0])
    mat[byte] ^= 0x10
    con.execute("UPDATE roots SET material = ? WHERE root_id = ?", (bytes(mat), root_id))
    con.commit()
    con.close()


def _relayed_root(st: KeyStore, peer: str) -> str:
    return next(r["root_id"] for r in st.roots(peer) if r["origin_kind"] == "relay")


_WORKER = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    from satqkd.keys.otp import OtpError, encrypt_file
    from satqkd.keys.store import KeyStore
    store, peer, out, seed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(seed)
    st = KeyStore(store)
    i = 0
    while True:
        size = int(rng.integers(1, 160))
        m = out / f"{st.site}-{seed}-{i}.bin"
        m.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        try:
            encrypt_file(st, peer, m, out / f"{st.site}-{seed}-{i}.otp")
        except OtpError:
            try:  # the smallest message: stop only when even one byte cannot be sent
                m.write_bytes(b"x")
                encrypt_file(st, peer, m, out / f"{st.site}-{seed}-{i}.otp")
            except OtpError:
                m.unlink()
                break
        i += 1
    print(i)
""")


def test_both_stations_encrypt_toward_each_other_from_several_processes(stations, tmp_path):
    """Two processes per station encrypt toward the other station until the key is exhausted. Every file
    written decrypts at the other station (the plaintext it was made from) and no pad or MAC bit of the
    relayed key appears in two files. (Before directional streams, both stations cut the same bits
    where the "front" and "back" of the pool met: the pads collided and the files did not decrypt.)"""
    x, n = stations
    out = tmp_path / "files"
    out.mkdir()
    x.close()
    n.close()
    jobs = [(tmp_path / "x.db", "Nanshan", 1), (tmp_path / "x.db", "Nanshan", 2),
            (tmp_path / "n.db", "Xinglong", 3), (tmp_path / "n.db", "Xinglong", 4)]
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(p), peer, str(out), str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p, peer, seed in jobs]
    for p in procs:
        o, e = p.communicate(timeout=120)
        assert p.returncode == 0, e[-2000:]
    files = sorted(out.glob("*.otp"))
    assert len(files) >= 8
    x, n = KeyStore(tmp_path / "x.db"), KeyStore(tmp_path / "n.db")
    used: dict[str, list[tuple[int, int, str]]] = {}
    sent = {"Xinglong": 0, "Nanshan": 0}
    for f in files:
        header = otp._unpack(f.read_bytes())[0]
        for g in header["_segments"]:
            used.setdefault(g.root_id, []).append((g.offset_bits, g.offset_bits + g.length_bits, f.name))
        receiver, peer = (n, "Xinglong") if header["from"] == "Xinglong" else (x, "Nanshan")
        decrypt_file(receiver, peer, f, f.with_suffix(".out"))
        assert f.with_suffix(".out").read_bytes() == f.with_suffix(".bin").read_bytes(), f.name
        sent[header["from"]] += header["plaintext_bytes"] + 32
    twice = 0
    for spans in used.values():
        spans.sort()
        for (a0, b0, _), (a1, b1, _) in zip(spans, spans[1:]):
            twice += max(0, min(b0, b1) - a1)
    assert twice == 0  # pad bits used twice
    assert sent["Xinglong"] > 0 and sent["Nanshan"] > 0
    # the key was used up in both directions: less than one 1-byte message's key is left each way
    assert sent["Xinglong"] > RELAY_BYTES // 2 - 33 and sent["Nanshan"] > RELAY_BYTES // 2 - 33
    for st in (x, n):
        assert st.check_invariants() == []
    x.close()
    n.close()


def test_flipped_bit_at_the_sender_is_quarantined_never_served(stations, tmp_path):
    x, n = stations
    rid = _relayed_root(x, "Nanshan")
    x.close()
    _flip_material_bit(tmp_path / "x.db", rid, RELAY_BYTES - 5)  # in Xinglong's sending half
    x = KeyStore(tmp_path / "x.db")
    with pytest.raises(KeyStoreError, match="fails its digest"):
        encrypt_bytes(x, "Nanshan", b"hello")
    q = x.pieces(state="quarantined")
    assert len(q) == 1 and q[0].root_id == rid
    with pytest.raises(OtpError):  # nothing else to send with: the quarantined key is never served
        encrypt_bytes(x, "Nanshan", b"hello")
    assert x.check_invariants() == []
    res = CliRunner().invoke(app, ["keys", "verify", "--store", str(tmp_path / "x.db")])
    assert res.exit_code == 1 and "quarantined" in res.output
    res = CliRunner().invoke(app, ["keys", "ls", "--store", str(tmp_path / "x.db"), "--state", "quarantined"])
    assert res.exit_code == 0 and q[0].key_id[:8] in res.output
    assert CliRunner().invoke(app, ["keys", "verify", "--store", str(tmp_path / "n.db")]).exit_code == 0
    x.close()


def test_flipped_bit_at_the_receiver_never_gives_a_wrong_plaintext(stations, tmp_path):
    x, n = stations
    rid = _relayed_root(n, "Xinglong")
    msg = b"the relayed key is used once" * 10
    blob, rep = encrypt_bytes(x, "Nanshan", msg)
    seg = x.get(rep.key_ids[0])
    n.close()
    _flip_material_bit(tmp_path / "n.db", rid, seg.offset_bits // 8 + 7)  # a pad byte of this very file
    n = KeyStore(tmp_path / "n.db")
    with pytest.raises(KeyStoreError, match="fails its digest"):
        decrypt_bytes(n, "Xinglong", blob)
    assert len(n.pieces(state="quarantined")) == 1
    verify = n.verify()
    assert not verify["ok"] and verify["quarantined"]
    n.close()


def test_a_different_pad_with_a_valid_digest_fails_the_tag(stations, tmp_path):
    """The tag covers the plaintext: a receiver whose pad differs (both stores intact, but not the same
    key) gets "authentication failed", never exit 0 with a wrong byte."""
    x, n = stations
    msg = bytes(range(200))
    blob, rep = encrypt_bytes(x, "Nanshan", msg)
    seg = x.get(rep.key_ids[0])
    rid = seg.root_id
    n.close()
    _flip_material_bit(tmp_path / "n.db", rid, seg.offset_bits // 8 + 3)
    con = sqlite3.connect(tmp_path / "n.db")  # re-seal the damaged piece's digest: a store that is "consistent"
    from satqkd.keys.store import piece_digest

    mat = con.execute("SELECT material FROM roots WHERE root_id = ?", (rid,)).fetchone()[0]
    for kid, link, off, ln in con.execute("SELECT key_id, link, offset_bits, length_bits FROM pieces WHERE "
                                          "root_id = ? AND state = 'available'", (rid,)).fetchall():
        con.execute("UPDATE pieces SET digest = ? WHERE key_id = ?",
                    (piece_digest(kid, link, rid, off, ln, mat[off // 8:(off + ln) // 8]), kid))
    con.commit()
    con.close()
    n = KeyStore(tmp_path / "n.db")
    with pytest.raises(OtpError, match="authentication failed"):
        decrypt_bytes(n, "Xinglong", blob)
    n.close()


def test_restored_store_cannot_reuse_a_pad(stations, tmp_path):
    """Back up the store, encrypt, restore the backup, encrypt again: refused (exit 2) by the site's usage
    ledger (beside the store, not in it), and the range is retired so the next file uses fresh key."""
    x, n = stations
    x.close()
    n.close()
    backup = tmp_path / "x-backup.db"
    con, dst = sqlite3.connect(tmp_path / "x.db"), sqlite3.connect(backup)
    con.backup(dst)
    con.close()
    dst.close()
    (tmp_path / "m.txt").write_bytes(b"first message")
    r = CliRunner()
    args = ["otp", "encrypt", str(tmp_path / "m.txt"), str(tmp_path / "m1.otp"), "--store", str(tmp_path / "x.db"),
            "--peer", "Nanshan"]
    assert r.invoke(app, args).exit_code == 0
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"x.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, tmp_path / "x.db")  # restore (the ledger x.db.ledger stays)
    (tmp_path / "m.txt").write_bytes(b"other message")
    args[3] = str(tmp_path / "m2.otp")
    res = r.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "usage ledger" in res.output and not (tmp_path / "m2.otp").exists()
    # the next try takes fresh key; both files decrypt at Nanshan and use disjoint key
    assert r.invoke(app, args).exit_code == 0
    n = KeyStore(tmp_path / "n.db")
    h1, h2 = (otp._unpack((tmp_path / f).read_bytes())[0] for f in ("m1.otp", "m2.otp"))
    s1 = {(g.root_id, b) for g in h1["_segments"] for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}
    s2 = {(g.root_id, b) for g in h2["_segments"] for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}
    assert not s1 & s2
    assert decrypt_bytes(n, "Xinglong", (tmp_path / "m1.otp").read_bytes())[0] == b"first message"
    assert decrypt_bytes(n, "Xinglong", (tmp_path / "m2.otp").read_bytes())[0] == b"other message"
    n.close()


def test_restored_receiver_refuses_a_replay(stations, tmp_path):
    x, n = stations
    blob, _ = encrypt_bytes(x, "Nanshan", b"once")
    n.close()
    con, dst = sqlite3.connect(tmp_path / "n.db"), sqlite3.connect(tmp_path / "n-backup.db")
    con.backup(dst)
    con.close()
    dst.close()
    n = KeyStore(tmp_path / "n.db")
    assert decrypt_bytes(n, "Xinglong", blob)[0] == b"once"
    n.close()
    shutil.copyfile(tmp_path / "n-backup.db", tmp_path / "n.db")
    n = KeyStore(tmp_path / "n.db")
    with pytest.raises(KeyStoreError, match="usage ledger"):
        decrypt_bytes(n, "Xinglong", blob)
    n.close()


def test_store_and_key_files_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        st = KeyStore(tmp_path / "s.db", "Xinglong")
        st.deposit("Nanshan", os.urandom(64))
        for p in (tmp_path / "s.db", tmp_path / "s.db-wal", tmp_path / "s.db-shm"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        st.close()
        from satqkd.outputs import write_party_key

        k = write_party_key("alice", np.ones(64, np.uint8), tmp_path / "out")
        assert stat.S_IMODE(k.stat().st_mode) == 0o600
        legacy = tmp_path / "legacy.db"  # a store made 0644 by an older satqkd is narrowed when opened
        KeyStore(legacy, "Nanshan").close()
        os.chmod(legacy, 0o644)
        KeyStore(legacy).close()
        assert stat.S_IMODE(legacy.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def _bits(header) -> set:
    return {(g.root_id, b) for g in header["_segments"] for b in range(g.offset_bits, g.offset_bits + g.length_bits, 8)}


def _claimed(st: KeyStore) -> set:
    return {(c.resource[4:], b) for c in st.ledger.claims() if c.resource.startswith("key:")
            for b in range(c.start, c.stop, 8)}


def test_the_ledger_claim_is_durable_before_the_ciphertext_or_plaintext_exists(stations):
    """Write-ahead: when ``within`` sees the output (it could send it), every key bit it used is already in
    the site's usage ledger. (The claim used to be written after the store's commit: a crash in between,
    then a restored store, reused the pad.)"""
    x, n = stations
    seen = {}

    def at_sender(blob):
        seen["sender"] = _bits(otp._unpack(blob)[0]) <= _claimed(x)

    blob, _ = encrypt_bytes(x, "Nanshan", b"write-ahead", within=at_sender)
    header = otp._unpack(blob)[0]

    def at_receiver(pt):
        seen["receiver"] = _bits(header) <= _claimed(n)

    assert decrypt_bytes(n, "Xinglong", blob, within=at_receiver)[0] == b"write-ahead"
    assert seen == {"sender": True, "receiver": True}


def test_a_crash_after_the_ciphertext_left_never_reuses_its_pad(stations):
    """The ciphertext leaves (``within`` sends it), then the process dies before the commit: the store
    rolls back and still lists that key as available. The next encryption must not use it again."""
    x, n = stations
    leaked = []

    def send_then_die(blob):
        leaked.append(blob)
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        encrypt_bytes(x, "Nanshan", b"the first message", within=send_then_die)
    first = _bits(otp._unpack(leaked[0])[0])
    try:
        blob, _ = encrypt_bytes(x, "Nanshan", b"the second message")
    except KeyStoreError as exc:  # the claim is found once: refused, the range retired
        assert "usage ledger" in str(exc)
        blob, _ = encrypt_bytes(x, "Nanshan", b"the second message")
    assert not first & _bits(otp._unpack(blob)[0])
    assert decrypt_bytes(n, "Xinglong", blob)[0] == b"the second message"
    assert x.check_invariants() == []


def _backup(src, dst):
    con, out = sqlite3.connect(src), sqlite3.connect(dst)
    con.backup(out)
    con.close()
    out.close()


def test_a_store_restored_to_another_place_cannot_reuse_a_pad(stations, tmp_path):
    """The ledger is found by the store's path: a backup restored into another directory (or under
    another name) used to get a fresh, empty ledger beside it and gave the same pad out again. The store
    is bound to its ledger, so the copy is refused."""
    x, n = stations
    elsewhere = tmp_path / "restored"
    elsewhere.mkdir()
    _backup(tmp_path / "x.db", elsewhere / "x.db")
    _backup(tmp_path / "x.db", tmp_path / "x-copy.db")
    blob, _ = encrypt_bytes(x, "Nanshan", b"first")
    for path in (elsewhere / "x.db", tmp_path / "x-copy.db"):
        with KeyStore(path) as copy:
            with pytest.raises(KeyStoreError, match="usage ledger"):
                encrypt_bytes(copy, "Nanshan", b"second")
            assert not copy.verify()["ok"]
    assert decrypt_bytes(n, "Xinglong", blob)[0] == b"first"


def test_a_lost_ledger_refuses_all_one_time_use(stations, tmp_path):
    x, n = stations
    blob, _ = encrypt_bytes(x, "Nanshan", b"first")
    (tmp_path / "x.db.ledger").unlink()
    with pytest.raises(KeyStoreError, match="usage ledger"):
        encrypt_bytes(x, "Nanshan", b"second")
    res = CliRunner().invoke(app, ["keys", "verify", "--store", str(tmp_path / "x.db")])
    assert res.exit_code == 1 and "ledger" in res.output
    x.close()
    with KeyStore(tmp_path / "x.db") as again:  # reopening does not bind it to a new, empty ledger
        with pytest.raises(KeyStoreError, match="usage ledger"):
            encrypt_bytes(again, "Nanshan", b"second")
    assert decrypt_bytes(n, "Xinglong", blob)[0] == b"first"


def test_directories_made_for_stores_and_key_files_are_0700_whatever_the_umask(tmp_path):
    """With umask 0 the directories satqkd makes for a store (and its ledger) or for key files used to be
    0777: anyone could replace the store, delete its ledger or swap a key file."""
    from satqkd.outputs import write_party_key

    old = os.umask(0)
    try:
        KeyStore(tmp_path / "a" / "b" / "s.db", "Xinglong").close()
        k = write_party_key("bob", np.ones(64, np.uint8), tmp_path / "out")
        for d in (tmp_path / "a", tmp_path / "a" / "b", k.parent):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for f in (tmp_path / "a" / "b" / "s.db", tmp_path / "a" / "b" / "s.db.ledger", k):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)
