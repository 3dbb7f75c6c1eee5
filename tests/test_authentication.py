"""Wegman–Carter authentication: key pool, polynomial hash, tags, lockstep, forgery bound."""

import numpy as np
import pytest

from satqkd.postprocess.authentication import (
    HASH_KEY_BITS,
    P127,
    PAD_BITS,
    TAG_BYTES,
    Authenticator,
    KeyPool,
    KeyPoolExhausted,
    forgery_bound,
    poly_hash,
)


def _pool(nbits=20_000, seed=0):
    return KeyPool.from_rng(nbits, np.random.default_rng(seed))


# ---- key pool -----------------------------------------------------------------------------------


def test_pool_take_returns_the_next_bits_across_byte_boundaries():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 1000, dtype=np.uint8)
    pool = KeyPool(bits)
    pos = 0
    for n in (3, 5, 13, 1, 64, 127, 0, 200):
        got = np.unpackbits(np.frombuffer(pool.take(n), np.uint8))
        assert got.size == 8 * ((n + 7) // 8)
        assert np.array_equal(got[:n], bits[pos : pos + n]) and not got[n:].any()
        pos += n
        assert pool.consumed_bits == pos and pool.remaining_bits == 1000 - pos
    assert pool.take_int(10) == int("".join(map(str, bits[pos : pos + 10])), 2)


def test_pool_exhaustion_consumes_nothing():
    pool = KeyPool(b"\xff\x00", nbits=12)
    pool.take(5)
    with pytest.raises(KeyPoolExhausted):
        pool.take(8)
    assert pool.consumed_bits == 5 and pool.remaining_bits == 7
    assert pool.take(7) == bytes([0b11100000])


def test_pool_copy_is_independent_and_extend_appends():
    a = KeyPool(bytes([0b10110000]), nbits=4)
    b = a.copy()
    a.take(2)
    assert b.consumed_bits == 0 and b.take_int(4) == 0b1011
    a.extend(np.array([0, 1, 1], np.uint8))
    assert a.size_bits == 5 and a.total_consumed_bits == 2
    assert a.take_int(5) == 0b11011


# ---- hash ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("p, bb", [(P127, 15), ((1 << 61) - 1, 7), ((1 << 521) - 1, 65)])
def test_poly_hash_matches_independent_formula(p, bb):
    rng = np.random.default_rng(2)
    for n in (0, 1, bb - 1, bb, bb + 1, 2 * bb, 1000):
        msg = rng.bytes(n)
        k = int.from_bytes(rng.bytes(80), "big") % p
        blocks = [int.from_bytes(msg[i : i + bb].ljust(bb, b"\0"), "big") for i in range(0, n, bb)] + [n]
        L = len(blocks)
        want = sum(c * pow(k, L - i, p) for i, c in enumerate(blocks)) % p
        assert poly_hash(k, msg, p=p, block_bytes=bb) == want
    if p == P127:
        assert poly_hash(k, msg) == want  # the defaults


def _hash_all_keys(msg: bytes, p: int) -> np.ndarray:
    """The construction with 1-byte blocks over GF(p), evaluated for every key k at once."""
    k = np.arange(p, dtype=np.int64)
    h = np.zeros(p, dtype=np.int64)
    for c in msg:
        h = ((h + c) * k) % p
    return ((h + len(msg)) * k) % p


def test_almost_delta_universal_exhaustively_on_a_small_field():
    # Pr_k[h_k(m) − h_k(m') ≡ δ] ≤ L/p for all m ≠ m', δ: count the keys exactly over GF(65521)
    p = 65521
    rng = np.random.default_rng(3)
    for trial in range(40):
        n1 = int(rng.integers(0, 6))
        n2 = n1 if trial % 2 else int(rng.integers(0, 6))
        m1, m2 = rng.bytes(n1), rng.bytes(n2)
        if m1 == m2:
            continue
        d = (_hash_all_keys(m1, p) - _hash_all_keys(m2, p)) % p
        L = max(n1, n2) + 1
        worst = int(np.bincount(d, minlength=p).max())  # the adversary's best δ
        assert worst <= L
        for k in rng.integers(0, p, 3).tolist():
            assert poly_hash(k, m1, p=p, block_bytes=1) == _hash_all_keys(m1, p)[k]


def test_forgery_bound_values():
    assert forgery_bound(0) == 1 / P127
    assert forgery_bound(15) == 2 / P127
    assert forgery_bound(16) == 3 / P127
    assert forgery_bound(125_000) == (8334 + 1) / P127
    assert forgery_bound(125_000) < 5e-35
    assert Authenticator.forgery_bound(30) == 3 / P127


# ---- tags ---------------------------------------------------------------------------------------


def test_tag_verify_lockstep_single_lane_and_key_use():
    pa = _pool()
    pb = pa.copy()
    alice, bob = Authenticator(pa), Authenticator(pb)
    msgs = [b"", b"sift", bytes(1000), b"x" * 125_000]
    for m in msgs:
        t = alice.tag(m)
        assert len(t) == TAG_BYTES
        assert bob.verify(m, t)
    assert alice.consumed_bits == bob.consumed_bits == HASH_KEY_BITS + PAD_BITS * len(msgs)
    assert pa.consumed_bits == pb.consumed_bits
    assert pa.take(256) == pb.take(256)


def test_tampered_message_or_tag_is_rejected_and_lockstep_survives():
    pa = _pool(nbits=120_000, seed=4)
    pb = pa.copy()
    alice, bob = Authenticator(pa), Authenticator(pb)
    rng = np.random.default_rng(5)
    msg = rng.bytes(200)
    for trial in range(200):
        t = alice.tag(msg)
        if trial % 2:
            assert bob.verify(msg, t)  # honest messages pass in between
            continue
        bad = bytearray(msg + t)
        bit = int(rng.integers(0, 8 * len(bad)))
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not bob.verify(bytes(bad[:-TAG_BYTES]), bytes(bad[-TAG_BYTES:]))
    t = alice.tag(msg)
    assert bob.verify(msg, t)  # pads still aligned after 100 rejections
    assert not bob.verify(msg, alice.tag(msg)[:-1])  # wrong tag length


def test_fresh_pad_per_message():
    pa = _pool(seed=6)
    alice = Authenticator(pa)
    assert alice.tag(b"same") != alice.tag(b"same")


def test_lane_mode_survives_concurrent_sending():
    # Alice sends two messages while Bob sends one; each side processes in its own order
    pa = _pool(seed=7)
    pb = pa.copy()
    alice, bob = Authenticator(pa, role="alice"), Authenticator(pb, role="bob")
    a0, a1 = alice.tag(b"a0"), alice.tag(b"a1")
    b0 = bob.tag(b"b0")
    assert bob.verify(b"a0", a0) and bob.verify(b"a1", a1)
    assert alice.verify(b"b0", b0)
    # both consumed the hash key + 2 pad pairs (Alice's lane reached message index 1)
    assert alice.consumed_bits == bob.consumed_bits == HASH_KEY_BITS + 2 * 2 * PAD_BITS
    assert pa.consumed_bits == pb.consumed_bits
    # single-lane authenticators used this way fall out of step: the documented half-duplex rule
    s_a, s_b = Authenticator(pa.copy()), Authenticator(pa.copy())
    x = s_a.tag(b"a0")
    s_b.tag(b"b0")
    assert not s_b.verify(b"a0", x)


def test_exhausted_pool_refuses():
    with pytest.raises(KeyPoolExhausted):
        Authenticator(KeyPool(bytes(10)))
    pool = KeyPool.from_rng(HASH_KEY_BITS + PAD_BITS + 10, np.random.default_rng(8))
    a = Authenticator(pool)
    a.tag(b"one")
    with pytest.raises(KeyPoolExhausted):
        a.tag(b"two")
    assert pool.remaining_bits == 10
    lane = Authenticator(KeyPool.from_rng(HASH_KEY_BITS + PAD_BITS, np.random.default_rng(9)), role="alice")
    with pytest.raises(KeyPoolExhausted):
        lane.tag(b"needs a pad pair")


def test_hash_key_rejection_sampling_skips_p():
    # a pool starting with 127 one-bits (= p) must skip to the next 127 bits for the hash key
    bits = np.concatenate([np.ones(127, np.uint8), np.zeros(126, np.uint8), [1], np.zeros(300, np.uint8)])
    a = Authenticator(KeyPool(bits))
    assert a.consumed_bits == 2 * HASH_KEY_BITS
    assert a._key == 1


def test_bad_role_refused():
    with pytest.raises(ValueError, match="role"):
        Authenticator(_pool(), role="eve")
