"""Classical channel: codec, authentication of every frame, accounting, in-memory and TCP pairs."""

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from satqkd.config import ClassicalLinkConfig
from satqkd.postprocess.authentication import HASH_KEY_BITS, PAD_BITS, TAG_BYTES, KeyPool
from satqkd.protocol.channel import (
    AuthenticationError,
    ChannelClosed,
    ChannelTimeout,
    CodecError,
    Message,
    PeerAborted,
    ProtocolError,
    decode,
    encode,
    memory_pair,
    tcp_pair,
)

LINK = ClassicalLinkConfig(uplink_bps=1e6, downlink_bps=4e6)


def _pools(seed=0, nbits=50_000):
    a = KeyPool.from_rng(nbits, np.random.default_rng(seed))
    return a, a.copy()


def _same_value(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.shape == b.shape
            and a.dtype.newbyteorder("<") == b.dtype
            and a.astype(b.dtype).tobytes() == b.tobytes()
        )
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b)))
    return type(a) is type(b) and a == b


# ---- codec --------------------------------------------------------------------------------------

_dtypes = st.sampled_from(["<i1", "<u1", "<i2", ">i4", "<u4", "<i8", "<u8", "<f2", "<f4", ">f8", "<c8", "<c16", "?"])
_arrays = _dtypes.flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=60),
    _arrays,
)


@settings(max_examples=300, deadline=None)
@given(kind=st.text(min_size=1, max_size=20), payload=st.dictionaries(st.text(max_size=12), _values, max_size=6))
def test_codec_round_trip(kind, payload):
    data = encode(Message(kind, payload))
    back = decode(data)
    assert back.kind == kind and set(back.payload) == set(payload)
    for k, v in payload.items():
        assert _same_value(v, back.payload[k]), k
    assert encode(back) == data  # canonical


def test_codec_is_deterministic_and_compact():
    bits = np.zeros(1000, dtype=bool)
    bits[::3] = True
    a = encode(Message("sift", {"n": 5, "bits": bits, "name": "x"}))
    b = encode(Message("sift", {"name": "x", "bits": bits, "n": 5}))
    assert a == b
    # bool arrays travel packed: 1000 bits -> 125 bytes (+ a few bytes of header)
    assert 125 < len(a) < 125 + 30
    # exact layout of a tiny message: version, kind, 1 field, name, zigzag int
    assert encode(Message("k", {"a": -3})) == bytes([1, 1, ord("k"), 1, 1, ord("a"), ord("i"), 5])


def test_codec_refuses_bad_data():
    good = encode(Message("k", {"a": 1, "b": b"xy"}))
    with pytest.raises(CodecError, match="trailing"):
        decode(good + b"\0")
    with pytest.raises(CodecError, match="truncated"):
        decode(good[:-1])
    with pytest.raises(CodecError, match="version"):
        decode(b"\x07" + good[1:])
    unsorted = bytes([1, 1, ord("k"), 2, 1, ord("b"), ord("N"), 1, ord("a"), ord("N")])
    with pytest.raises(CodecError, match="sorted"):
        decode(unsorted)
    with pytest.raises(CodecError, match="list"):
        encode(Message("k", {"a": [1, 2]}))
    with pytest.raises(CodecError, match="dtype"):
        encode(Message("k", {"a": np.array(["x"])}))


# ---- exchange, accounting -----------------------------------------------------------------------

MESSAGES = [  # (sender, kind, payload) in protocol order
    ("bob", "detections", {"index": np.arange(0, 3000, 7, dtype=np.int64), "basis": np.ones(429, bool)}),
    ("alice", "sift", {"basis": np.zeros(429, bool), "intensity": np.arange(429, dtype=np.uint8) % 3}),
    ("alice", "estimate", {"qber": 0.011, "n_key": 123456, "ok": True}),
    ("bob", "ec_syndrome", {"syndrome": np.ones(1000, bool), "block": 0}),
    ("alice", "pa_seed", {"seed": np.ones(5000, bool), "out_len": 1200}),
]


def _run_parties(alice, bob, messages=MESSAGES):
    """Each party runs in its own thread and processes the script in order."""
    errors = []

    def party(ep, me):
        try:
            for sender, kind, payload in messages:
                if sender == me:
                    ep.send(kind, **payload)
                else:
                    got = ep.recv(kind)
                    assert set(got) == set(payload)
        except Exception as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)
            ep.abort(f"{type(exc).__name__}: {exc}")  # tell the peer at once (no waiting for a timeout)

    ts = [threading.Thread(target=party, args=(alice, "alice")), threading.Thread(target=party, args=(bob, "bob"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    if errors:
        raise errors[0]


def _expected_bytes(messages):
    down = sum(len(encode(Message(k, p))) + TAG_BYTES for s, k, p in messages if s == "alice")
    up = sum(len(encode(Message(k, p))) + TAG_BYTES for s, k, p in messages if s == "bob")
    return down, up


def test_stats_count_exactly_the_frames_and_link_time():
    pa, pb = _pools(1)
    delay = 0.004  # ~1200 km
    alice, bob = memory_pair(pa, pb, LINK, one_way_delay_s=delay)
    _run_parties(alice, bob)
    down, up = _expected_bytes(MESSAGES)
    for ep in (alice, bob):
        s = ep.stats
        assert (s.bytes_down, s.bytes_up) == (down, up)
        assert (s.messages_down, s.messages_up) == (3, 2)
        assert s.round_trips == 3  # up | down down | up | down
        legs = s.round_trips + 1
        assert s.link_time_s == pytest.approx(8 * down / 4e6 + 8 * up / 1e6 + legs * delay, rel=1e-12)
    # both pools consumed identically: hash key + one pad pair per message index (3 on the longest lane)
    assert alice.stats.auth_key_bits == bob.stats.auth_key_bits == HASH_KEY_BITS + 3 * 2 * PAD_BITS
    assert pa.consumed_bits == pb.consumed_bits
    assert pa.take(512) == pb.take(512)


def test_concurrent_sends_stay_in_lockstep():
    # both parties send first, then read: only the per-direction pad lanes make this work
    pa, pb = _pools(2)
    alice, bob = memory_pair(pa, pb, LINK)
    alice.send("a", x=1)
    alice.send("a", x=2)
    bob.send("b", y=np.arange(3))
    assert bob.recv("a") == {"x": 1} and bob.recv("a") == {"x": 2}
    assert alice.recv("b")["y"].tolist() == [0, 1, 2]
    assert pa.consumed_bits == pb.consumed_bits


def _tamper_bit(direction, index, bit):
    def tamper(d, i, frame):
        if (d, i) == (direction, index):
            b = bytearray(frame)
            b[bit // 8] ^= 1 << (bit % 8)
            return bytes(b)
        return frame

    return tamper


def test_every_flipped_bit_of_every_message_is_detected():
    # frames of the script are short; flip each bit position of each frame (sampled for long frames)
    rng = np.random.default_rng(3)
    short = [("alice", "hello", {"v": 1}), ("bob", "ack", {"w": b"ok"}), ("alice", "bye", {"q": 0.5})]
    for k, (sender, kind, payload) in enumerate(short):
        direction = "down" if sender == "alice" else "up"
        index = sum(1 for s, _, _ in short[:k] if s == sender)
        nbits = 8 * (len(encode(Message(kind, payload))) + TAG_BYTES)
        for bit in range(nbits):
            pa, pb = _pools(int(rng.integers(1 << 30)), nbits=5000)
            alice, bob = memory_pair(pa, pb, LINK, tamper=_tamper_bit(direction, index, bit), timeout_s=1)
            eps = {"alice": alice, "bob": bob}
            for j, (s, kd, pl) in enumerate(short):
                receiver = eps["bob" if s == "alice" else "alice"]
                eps[s].send(kd, **pl)
                if j < k:
                    assert receiver.recv(kd) == pl
                else:
                    with pytest.raises(AuthenticationError):
                        receiver.recv(kd)
                    with pytest.raises(ChannelClosed):  # the party must abort: no further use
                        receiver.recv(kd)
                    break


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_bit_flip_in_large_messages_is_detected(data):
    which = data.draw(st.integers(0, len(MESSAGES) - 1))
    sender, kind, payload = MESSAGES[which]
    direction = "down" if sender == "alice" else "up"
    index = sum(1 for s, _, _ in MESSAGES[:which] if s == sender)
    nbits = 8 * (len(encode(Message(kind, payload))) + TAG_BYTES)
    bit = data.draw(st.integers(0, nbits - 1))
    pa, pb = _pools(data.draw(st.integers(0, 2**31)))
    alice, bob = memory_pair(pa, pb, LINK, tamper=_tamper_bit(direction, index, bit), timeout_s=5)
    with pytest.raises(AuthenticationError):
        _run_parties(alice, bob)


def test_replayed_or_truncated_frame_is_rejected():
    first = {}

    def replay(d, i, frame):
        if d == "down" and i == 0:
            first["f"] = frame
        return first["f"] if (d, i) == ("down", 1) else frame

    alice, bob = memory_pair(*_pools(4), LINK, tamper=replay)
    alice.send("m", n=1)
    alice.send("m", n=1)
    assert bob.recv("m") == {"n": 1}
    with pytest.raises(AuthenticationError):
        bob.recv("m")  # identical bytes, but the sequence number in the authenticated header differs
    alice, bob = memory_pair(*_pools(5), LINK, tamper=lambda d, i, f: f[:10])
    alice.send("m", n=1)
    with pytest.raises(AuthenticationError):
        bob.recv("m")


def test_timeout_unexpected_kind_and_abort():
    alice, bob = memory_pair(*_pools(6), LINK, tamper=lambda d, i, f: None if i == 0 else f)
    alice.send("lost", n=1)  # dropped in transit
    with pytest.raises(ChannelTimeout):
        bob.recv("lost", timeout_s=0.05)
    alice, bob = memory_pair(*_pools(7), LINK)
    alice.send("estimate", qber=0.2)
    with pytest.raises(ProtocolError, match="ec_syndrome"):
        bob.recv("ec_syndrome")
    alice, bob = memory_pair(*_pools(8), LINK)
    alice.abort("QBER 20 % above 11 %")
    with pytest.raises(PeerAborted, match="QBER"):
        bob.recv("estimate")
    with pytest.raises(ChannelClosed):
        alice.send("estimate", qber=0.2)
    with pytest.raises(ValueError, match="two objects"):
        pool = KeyPool.from_rng(1000, np.random.default_rng(0))
        memory_pair(pool, pool)


# ---- TCP ----------------------------------------------------------------------------------------


def test_tcp_pair_matches_memory_pair():
    pa, pb = _pools(9)
    alice, bob = tcp_pair(pa, pb, LINK, one_way_delay_s=0.003, timeout_s=10)
    try:
        _run_parties(alice, bob)
    finally:
        alice.close()
        bob.close()
    ma, mb = memory_pair(*_pools(9), LINK, one_way_delay_s=0.003)
    _run_parties(ma, mb)
    assert alice.stats == bob.stats == ma.stats == mb.stats
    down, up = _expected_bytes(MESSAGES)
    assert (alice.stats.bytes_down, alice.stats.bytes_up) == (down, up)


def test_tcp_tamper_detected_and_timeout():
    pa, pb = _pools(10)
    alice, bob = tcp_pair(pa, pb, LINK, timeout_s=5, tamper=_tamper_bit("up", 0, 3))
    try:
        bob.send("detections", n=3)
        with pytest.raises(AuthenticationError):
            alice.recv("detections")
        with pytest.raises(ChannelTimeout):
            bob.recv("anything", timeout_s=0.05)
    finally:
        alice.close()
        bob.close()
