"""Bob's EC bitmaps charged at their enumerative description length (issue 8 §1, the tighter option).

The charge is sound only if the description is a real prefix-free code: the tests check Kraft's
inequality exhaustively for short bitmaps and by weight class for long ones, that the length never
exceeds the raw bits by more than the flag bit, that both parties charge exactly the enumerative
length of what travelled on the wire, and that the peers must agree on the mode.
"""

import itertools
import math

import numpy as np
import pytest

import satqkd
from satqkd.protocol.channel import decode
from satqkd.protocol.disclosure import DisclosureMeter, enumerative_bits
from satqkd.protocol.parties import EC_KINDS, VERIFY_RESULT_BITS
from satqkd.protocol.session import postprocess, protocol_options
from synthetic_passes import preset_pass_cut

CFG = satqkd.load_preset("micius-2016-12-19")


def _with_accounting(cfg, mode):
    cfg = cfg.model_copy(deep=True)
    cfg.security.ec_bob_accounting = mode  # validated on assignment
    return cfg


@pytest.mark.parametrize("n", range(1, 13))
def test_the_code_lengths_satisfy_kraft_for_every_short_bitmap(n):
    lengths = [enumerative_bits(np.array(b, dtype=bool)) for b in itertools.product((0, 1), repeat=n)]
    assert sum(2.0 ** -L for L in lengths) <= 1.0
    assert max(lengths) <= n + 1


@pytest.mark.parametrize("n", [50, 333, 1000, 4097])
def test_kraft_by_weight_class_for_long_bitmaps(n):
    # every bitmap of weight k has the same length: the Kraft sum is Σ_k C(n, k) 2^{-L_k}, exactly
    total = 0
    for k in range(n + 1):
        b = np.zeros(n, dtype=bool)
        b[:k] = True
        L = enumerative_bits(b)
        total += math.comb(n, k) * 2 ** (n + 1 - L)  # exact integers: Σ C·2^{-L} ≤ 1 ⇔ this ≤ 2^{n+1}
        assert L <= n + 1
    assert total <= 2 ** (n + 1)


def test_sparse_bitmaps_cost_far_less_than_their_length():
    b = np.zeros(10_000, dtype=bool)
    b[[3, 500, 9_999]] = True
    want = 1 + math.ceil(math.log2(10_001)) + math.ceil(math.log2(math.comb(10_000, 3)))
    assert enumerative_bits(b) == want < 60
    assert enumerative_bits(np.zeros(0, dtype=bool)) == 0
    # weight k and n − k cost the same (complement)
    assert enumerative_bits(~b) == enumerative_bits(b)


def test_meter_modes():
    m_sent, m_enum = DisclosureMeter("sent"), DisclosureMeter("enumerative")
    for b in (np.zeros(100, dtype=bool), np.array([True, False, True, True])):
        m_sent.add(b)
        m_enum.add(b)
    assert m_sent.bits == m_sent.raw_bits == m_enum.raw_bits == 104
    assert m_enum.bits == enumerative_bits(np.zeros(100, dtype=bool)) + enumerative_bits(np.array([1, 0, 1, 1], bool))
    with pytest.raises(ValueError, match="ec_bob_accounting"):
        DisclosureMeter("free")


@pytest.fixture(scope="module")
def raw():
    return satqkd.simulate(CFG, seed=3, geometry=preset_pass_cut(CFG, 40)).raw


@pytest.mark.parametrize("ec", ["hamming", "ldpc", "cascade"])
def test_both_parties_charge_the_enumerative_length_of_what_bob_sent(raw, ec):
    frames = []

    def wire(direction, index, frame):
        frames.append((direction, decode(frame[1:])))
        return frame

    cfg = _with_accounting(CFG, "enumerative")
    r = postprocess(raw, cfg, seed=3, ec=ec, tamper=wire)
    assert r.ok and r.keys_match, r.abort_reason
    bitmaps = [v for d, m in frames if d == "up" and m.kind in EC_KINDS
               for v in m.payload.values() if isinstance(v, np.ndarray) and v.dtype == bool]
    assert bitmaps
    want_bob = sum(enumerative_bits(b) for b in bitmaps) + VERIFY_RESULT_BITS
    by = r.bob.leak_ec_bits_by_party
    assert by == r.alice.leak_ec_bits_by_party
    assert by["bob"] == want_bob
    assert r.bob.leak_ec_bits == sum(by.values())
    # the same run charged bit for bit: Alice's share identical, Bob's at most one flag bit per message more
    s = postprocess(raw, CFG, seed=3, ec=ec)
    assert s.bob.leak_ec_bits_by_party["alice"] == by["alice"]
    assert by["bob"] <= s.bob.leak_ec_bits_by_party["bob"] + len(bitmaps)
    if ec == "hamming":  # Winnow's mismatch bitmaps are sparse: a real saving, and a longer key
        assert by["bob"] < 0.95 * s.bob.leak_ec_bits_by_party["bob"]
        assert r.final_key_bits > s.final_key_bits


def test_the_peers_must_agree_on_the_accounting():
    # the hello compares every protocol option (remote._check_hello): a party charging less than its
    # peer would hash to another length; the option is part of what is compared
    a = protocol_options(CFG, ec="hamming")
    b = protocol_options(_with_accounting(CFG, "enumerative"), ec="hamming")
    assert a.ec_bob_accounting == "sent" and b.ec_bob_accounting == "enumerative"
    from dataclasses import asdict

    from satqkd.protocol.remote import HandshakeError, _check_hello

    def hello(opts):
        return {"version": 0, "mode": "run", "role": "alice", "pool_id": "ab" * 16, "pass_id": "p",
                "options": asdict(opts), "records": {}, "pool_offset": 0}

    mine, peer = hello(a), hello(b)
    peer["role"] = "bob"
    from satqkd.protocol import remote

    mine["version"] = peer["version"] = remote.HELLO_VERSION
    with pytest.raises(HandshakeError, match="ec_bob_accounting"):
        _check_hello(mine, peer)


def test_config_refuses_an_unknown_accounting():
    with pytest.raises(satqkd.ConfigError, match="ec_bob_accounting"):
        _with_accounting(CFG, "free")
    with pytest.raises(satqkd.ConfigError, match="ec_bob_accounting"):
        satqkd.config.config_from_dict({"base": "micius-2016-12-19", "security": {"ec_bob_accounting": "free"}})
