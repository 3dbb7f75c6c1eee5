"""One-time pad with a Wegman–Carter MAC: hash values, round trip across two stores, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd.keys.otp import (
    MAGIC,
    P127,
    OtpError,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
    mac_forgery_bound,
    otp_key_bits,
    poly_hash,
    wc_tag,
)
from satqkd.keys.relay import run_standin_relay
from satqkd.keys.store import KeyStore


@pytest.fixture
def stations(tmp_path):
    sat = KeyStore(tmp_path / "sat.db", "Micius")
    x = KeyStore(tmp_path / "x.db", "Xinglong", wipe=False)
    n = KeyStore(tmp_path / "n.db", "Nanshan")
    run_standin_relay(sat, x, n, seed=3, nbytes=4096)
    yield x, n
    for s in (sat, x, n):
        s.close()


def test_poly_hash_matches_hand_computation():
    # b"\x01" → one 15-byte block 0x01 00…00 = 2^112, then the length block 1: h = 2^112·k² + 1·k
    k = 3
    assert poly_hash(b"\x01", k) == (9 * 2**112 + 3) % P127
    # independent evaluation as Σ b_i k^(L+2-i) for a 40-byte message (3 blocks + length block)
    rng = np.random.default_rng(1)
    msg = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    k = int(rng.integers(1, 2**62)) * 1234567
    blocks = [int.from_bytes(msg[i : i + 15].ljust(15, b"\0"), "big") for i in range(0, 40, 15)] + [40]
    expect = sum(b * pow(k, len(blocks) - i, P127) for i, b in enumerate(blocks)) % P127
    assert poly_hash(msg, k % P127) == expect
    # zero-padding is not ambiguous: the length block separates m and m‖0
    assert poly_hash(b"ab", 5) != poly_hash(b"ab\0", 5)


def test_tag_is_one_time_padded_hash():
    key = bytes(range(32))
    k = int.from_bytes(key[:16], "big") & P127
    s = int.from_bytes(key[16:], "big") & P127
    assert int.from_bytes(wc_tag(b"hello", key), "big") == (poly_hash(b"hello", k) + s) % P127
    assert mac_forgery_bound(15) == 2 * 2.0**-126 and mac_forgery_bound(16) == 3 * 2.0**-126


def test_round_trip_across_two_stores_consumes_same_key_ids(stations, tmp_path):
    x, n = stations
    msg = np.random.default_rng(5).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    (tmp_path / "m.bin").write_bytes(msg)
    rep = encrypt_file(x, "Nanshan", tmp_path / "m.bin", tmp_path / "m.otp")
    assert rep.key_bits == otp_key_bits(1000) == 8 * 1032
    blob = (tmp_path / "m.otp").read_bytes()
    assert blob.startswith(MAGIC)
    # the ciphertext is exactly m ⊕ pad, the pad being the sender's consumed key (Xinglong keeps material: wipe=False)
    seg = x.get(rep.key_ids[0])
    raw = x._con.execute("SELECT material FROM roots WHERE root_id = ?", (seg.root_id,)).fetchone()[0]
    pad = raw[seg.offset_bits // 8 : seg.offset_bits // 8 + 1000]
    ct = blob[-16 - 1000 : -16]
    assert bytes(a ^ b for a, b in zip(msg, pad)) == ct
    rep2 = decrypt_file(n, "Xinglong", tmp_path / "m.otp", tmp_path / "m.out")
    assert (tmp_path / "m.out").read_bytes() == msg
    assert rep2.key_ids == rep.key_ids
    for st in (x, n):
        assert {p.key_id for p in st.pieces(state="consumed")} == set(rep.key_ids)
        assert st.check_invariants() == []
    assert x.available_bits("Nanshan") == n.available_bits("Xinglong") == 8 * 4096 - 8 * 1032
    with pytest.raises(OtpError, match="not available"):  # replay: the key is gone
        decrypt_file(n, "Xinglong", tmp_path / "m.otp", tmp_path / "m2.out")


def test_any_tampering_is_rejected_and_consumes_nothing(stations):
    x, n = stations
    blob, _ = encrypt_bytes(x, "Nanshan", b"attack at dawn" * 5)
    before = n.available_bits("Xinglong")
    hlen = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 4], "big")
    body = len(MAGIC) + 4 + hlen
    for pos in (body, body + 7, len(blob) - 17, len(blob) - 1):  # ciphertext bytes and tag bytes
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(OtpError, match="authentication failed"):
            decrypt_bytes(n, "Xinglong", bytes(bad))
    with pytest.raises(OtpError):  # truncation
        decrypt_bytes(n, "Xinglong", blob[:-1])
    with pytest.raises(OtpError, match="expected from"):
        decrypt_bytes(n, "Micius", blob)
    assert n.available_bits("Xinglong") == before
    pt, _ = decrypt_bytes(n, "Xinglong", blob)  # the genuine file still decrypts
    assert pt == b"attack at dawn" * 5


def test_file_longer_than_available_key_is_refused(stations, tmp_path):
    x, n = stations
    have = x.directional_bits("Nanshan")  # a sender uses only its own half of each shared key
    assert have == x.available_bits("Nanshan") // 2
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(have // 8 - 31))  # needs 8 bits more than there is
    with pytest.raises(OtpError, match="needs"):
        encrypt_file(x, "Nanshan", big, tmp_path / "big.otp")
    assert not (tmp_path / "big.otp").exists()
    assert x.directional_bits("Nanshan") == have
    big.write_bytes(bytes(have // 8 - 32))  # exactly enough
    encrypt_file(x, "Nanshan", big, tmp_path / "big.otp")
    assert x.directional_bits("Nanshan") == 0
    assert x.available_bits("Nanshan") == have  # Nanshan's half toward Xinglong is untouched


def test_failure_while_writing_consumes_nothing(stations):
    x, _ = stations
    have = x.available_bits("Nanshan")

    def fail(blob):
        raise OSError("disk full")

    with pytest.raises(OSError):
        encrypt_bytes(x, "Nanshan", b"hello", within=fail)
    assert x.available_bits("Nanshan") == have
