"""Error-correction leakage counts what BOTH parties disclose (issue 8 §1).

Bob's messages are functions of his string, which is correlated with Alice's key (Tupkary &
Lütkenhaus, Phys. Rev. Applied 20, 064040 (2023)): they are charged, measured on the wire.
"""

import numpy as np
import pytest

import satqkd
from satqkd.protocol.channel import decode, memory_pair
from satqkd.protocol.parties import EC_KINDS, VERIFY_RESULT_BITS
from satqkd.protocol.session import postprocess
from synthetic_passes import preset_pass_cut

CFG = satqkd.load_preset("micius-2016-12-19")


@pytest.fixture(scope="module")
def raw():
    return satqkd.simulate(CFG, seed=3, geometry=preset_pass_cut(CFG, 40)).raw


class Wire:
    """An independent count of what travels: decodes every frame (transcript mode: flag byte +
    message) and counts one bit per bool element, per direction and kind."""

    def __init__(self):
        self.bits: dict[tuple[str, str], int] = {}
        self.msgs: list[tuple[str, str, dict]] = []

    def __call__(self, direction, index, frame):
        msg = decode(frame[1:])
        n = 0
        for v in msg.payload.values():
            if isinstance(v, bool):
                n += 1
            elif isinstance(v, np.ndarray) and v.dtype == bool:
                n += v.size
        key = (direction, msg.kind)
        self.bits[key] = self.bits.get(key, 0) + n
        self.msgs.append((direction, msg.kind, msg.payload))
        return frame

    def sent(self, direction, kinds):
        return sum(v for (d, k), v in self.bits.items() if d == direction and k in kinds)


@pytest.mark.parametrize("ec", ["cascade", "hamming", "ldpc"])
def test_both_parties_disclosures_are_charged_as_measured_on_the_wire(raw, ec, monkeypatch):
    from satqkd.protocol import parties

    padded = []
    original = parties._ldpc_padded_bits

    def recording(plans):
        padded.append((original(plans), sum(int(pl.punctured.size) for pl in plans)))
        return padded[-1][0]

    monkeypatch.setattr(parties, "_ldpc_padded_bits", recording)
    wire = Wire()
    r = postprocess(raw, CFG, seed=3, ec=ec, tamper=wire)
    assert r.ok and r.keys_match, r.abort_reason
    a, b = r.alice, r.bob
    # both parties charge the same, split the same way, and the split adds up
    assert a.leak_ec_bits_by_party == b.leak_ec_bits_by_party
    assert set(b.leak_ec_bits_by_party) == {"alice", "bob"}
    assert sum(b.leak_ec_bits_by_party.values()) == b.leak_ec_bits == a.leak_ec_bits
    # what the estimation subtracted is that total
    assert b.estimate.leak_ec_bits == b.leak_ec_bits
    # Bob's share: every bit of his EC messages and of his verification reply
    bob_sent = wire.sent("up", EC_KINDS + ("verify_result",))
    assert wire.sent("up", ("verify_result",)) == VERIFY_RESULT_BITS
    assert bob_sent > VERIFY_RESULT_BITS
    assert b.leak_ec_bits_by_party["bob"] == bob_sent  # (no LDPC frame was dropped here)
    # Alice's share: every bit of her EC messages (LDPC: less the syndrome dimensions padded by her
    # private punctured bits, which are never sent)
    alice_sent = wire.sent("down", EC_KINDS)
    if ec == "ldpc":
        # the same credit on both sides: rank H_P = number of punctured positions (untainted set)
        assert len(padded) == 2 and padded[0] == padded[1] and padded[0][0] == padded[0][1]
        assert alice_sent - b.leak_ec_bits_by_party["alice"] == padded[0][0] > 0
    else:
        assert b.leak_ec_bits_by_party["alice"] == alice_sent
    # the channel's own per-direction accounting says the same
    assert r.channel.bits("up", EC_KINDS + ("verify_result",)) == bob_sent
    assert r.channel.bits("down", EC_KINDS) == alice_sent
    # the efficiency is computed from the total
    from satqkd.postprocess.reconciliation import binary_entropy

    assert r.ec_efficiency() == pytest.approx(b.leak_ec_bits / (b.sifted_key_bits * binary_entropy(b.qber)))
    # summary.json fields and the key budget (both parts; the budget still adds up)
    from satqkd.outputs import key_budget, postprocess_summary

    s = postprocess_summary(r)
    assert s["leak_ec_bits_by_party"] == b.leak_ec_bits_by_party
    assert sum(s["leak_ec_bits_by_party"].values()) == s["leak_ec_bits"]
    assert s["ec_efficiency"] == r.ec_efficiency()
    budget = key_budget(r)
    assert budget["error correction (Alice's messages)"] == b.leak_ec_bits_by_party["alice"]
    assert budget["error correction (Bob's messages)"] == b.leak_ec_bits_by_party["bob"]
    assert sum(budget.values()) == b.sifted_key_bits


def test_party_summary_carries_the_leak_by_party():
    from types import SimpleNamespace

    from satqkd.outputs import party_summary
    from satqkd.protocol.parties import PartyOutcome

    o = PartyOutcome("bob", sifted_key_bits=100_000, qber=0.011, leak_ec_bits=9_600,
                     leak_ec_bits_by_party={"alice": 9_500, "bob": 100})
    run = SimpleNamespace(role="bob", peer="alice", ok=False, abort_reason="x", outcome=o, stats=None,
                          auth_bits_used=0, pool_id="p", pool_insecure=True, pool_offset_before=0,
                          pool_offset_after=0, pool_bits_skipped=0, pool_bits_reserved=0, pool_bits_left=0,
                          seconds={})
    s = party_summary(run, "ldpc", "chernoff", 1)
    assert s["leak_ec_bits_by_party"] == {"alice": 9_500, "bob": 100}
    assert sum(s["leak_ec_bits_by_party"].values()) == s["leak_ec_bits"] == 9_600
    from satqkd.postprocess.reconciliation import binary_entropy

    assert s["ec_efficiency"] == pytest.approx(9_600 / (100_000 * binary_entropy(0.011)))


def test_cascade_charges_bob_one_outcome_per_parity(raw):
    wire = Wire()
    r = postprocess(raw, CFG, seed=3, ec="cascade", tamper=wire)
    assert r.ok
    by = r.bob.leak_ec_bits_by_party
    answers = wire.sent("down", ("ec_answer",))
    outcomes = wire.sent("up", ("ec_query", "ec_end"))
    assert answers == by["alice"] > 0
    assert outcomes == answers  # Bob's comparison of every parity Alice sent travels back
    assert by["bob"] == outcomes + VERIFY_RESULT_BITS
    # with Bob's half counted, Cascade costs twice what counting Alice alone claimed: f ≈ 2
    assert r.ec_efficiency() > 1.8


def test_ldpc_is_one_way_bob_sends_only_success_flags(raw, monkeypatch):
    """Bob's EC messages carry one flag per open frame and nothing else; Alice reveals items in the
    frame's public order, never items Bob chose."""
    from satqkd.postprocess.reconciliation import ldpc

    calls = {"items": 0, "reveal": 0}
    reveal = ldpc.LdpcAlice.reveal

    def watched(self, frames, count, items=None):
        calls["reveal"] += 1
        calls["items"] += items is not None
        return reveal(self, frames, count, items=items)

    monkeypatch.setattr(ldpc.LdpcAlice, "reveal", watched)
    monkeypatch.setattr(ldpc, "START_EFFICIENCY", {k: 0.95 * v for k, v in ldpc.START_EFFICIENCY.items()})  # force retries
    wire = Wire()
    r = postprocess(raw, CFG, seed=3, ec="ldpc", tamper=wire)
    assert r.ok and r.keys_match, r.abort_reason
    assert calls["reveal"] > 0 and calls["items"] == 0
    ec_up = [(k, p) for d, k, p in wire.msgs if d == "up" and k.startswith("ec_") and k != "ec_done"]
    assert ec_up and {k for k, _ in ec_up} == {"ec_failed"}
    assert all(set(p) == {"failed"} and p["failed"].dtype == bool for _, p in ec_up)
    # one flag per frame first, then one per frame still open: the flags are all Bob says
    n_frames = r.bob.ec_result["frames"]
    assert ec_up[0][1]["failed"].size == n_frames
    for (_, prev), (_, cur) in zip(ec_up, ec_up[1:]):
        assert cur["failed"].size == int(prev["failed"].sum())
    assert r.bob.leak_ec_bits_by_party["bob"] == sum(p["failed"].size for _, p in ec_up) + VERIFY_RESULT_BITS
    # Alice's reveals carry values only (and their per-frame counts)
    downs = [p for d, k, p in wire.msgs if d == "down" and k == "ec_reveal"]
    assert downs and all(set(p) == {"values", "sizes"} for p in downs)


def test_ldpc_reveal_order_is_fixed_before_decoding():
    """The items of a failed frame are the next ones of FramePlan.reveal_order, whatever Bob's state."""
    from satqkd.postprocess.reconciliation import ldpc

    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, 60_000, dtype=np.uint8)
    plans = ldpc.plan_frames(a.size, 0.02, frame_length=2**14)
    alice = ldpc.LdpcAlice(a, plans, 9, np.random.default_rng(1))
    frames = np.arange(len(plans))
    first = alice.reveal(frames, 50)
    second = alice.reveal(frames, 50)
    for f, pl in enumerate(plans):
        items = pl.reveal_order[:100]
        want = ldpc._item_values(pl.code, alice._words[f], items)
        assert np.array_equal(np.concatenate([first[f], second[f]]), want)
    # the order is a property of the public plan: planning again gives the same order
    again = ldpc.plan_frames(a.size, 0.02, frame_length=2**14)
    assert all(np.array_equal(p.reveal_order, q.reveal_order) for p, q in zip(plans, again))


def test_ldpc_failed_frames_are_dropped_charged_and_counted_as_errors(raw, monkeypatch):
    """A frame that never decodes: both drop it, its bits are charged to the flag that dropped it,
    and all its bits count as errors, so the QBER the estimation uses is never below the true one."""
    from satqkd.postprocess.reconciliation import ldpc
    from satqkd.protocol import parties

    seen = {}
    on_syndromes, on_reveal = ldpc.LdpcBob.on_syndromes, ldpc.LdpcBob.on_reveal

    def frame0_fails(method):
        def run(self, *args):
            method(self, *args)
            self.ok[0] = False  # as if BP never converged on frame 0
            # every frame still failing after the last round is dropped (frame 0, and any other
            # that two retries did not decode)
            seen["dropped"] = sum(pl.key_len for pl, ok in zip(self.plans, self.ok) if not ok)
            return ~self.ok
        return run

    monkeypatch.setattr(parties, "LDPC_MAX_RETRIES", 2)
    monkeypatch.setattr(ldpc.LdpcBob, "on_syndromes", frame0_fails(on_syndromes))
    monkeypatch.setattr(ldpc.LdpcBob, "on_reveal", frame0_fails(on_reveal))
    wire = Wire()
    r = postprocess(raw, CFG, seed=3, ec="ldpc", tamper=wire)
    flags = [p["failed"] for d, k, p in wire.msgs if d == "up" and k == "ec_failed"]
    assert len(flags) == 3 and all(f[0] for f in flags)  # frame 0 still open after the last retry
    by = r.bob.leak_ec_bits_by_party
    assert by == r.alice.leak_ec_bits_by_party
    assert by["bob"] == sum(f.size for f in flags) + VERIFY_RESULT_BITS + seen["dropped"]
    if seen["dropped"] < r.bob.sifted_key_bits:  # some frame decoded: the estimation saw the QBER
        assert r.bob.qber >= _true_signal_qber(raw) + 0.9 * seen["dropped"] / r.bob.sifted_key_bits
    # (every frame dropped: the run stops before the estimation, saying why)
    # here the dropped frame's bits counted as errors push the QBER over the abort threshold
    assert not r.ok and r.alice.key is None and r.bob.key is None
    assert "QBER" in r.abort_reason


def _true_signal_qber(raw):
    # the QBER of the sifted signal-intensity bits from the ground truth of the simulation
    from satqkd.quantum.timing import synchronise
    from satqkd.protocol.session import party_rngs

    det = synchronise(raw, rng=party_rngs(3)[3])
    idx = np.searchsorted(raw.alice_pulse_index, det.pulse_index)
    ok = raw.alice_basis[idx] == det.bob_basis
    key = ok & (raw.alice_intensity[idx] == 0)
    return float(np.mean(raw.alice_bit[idx][key] != det.bob_bit[key]))


def test_a_wrong_decoding_is_caught_by_verification(raw, monkeypatch):
    """A frame that 'decodes' to a wrong word is never an undetected error: verification fails, no key."""
    from satqkd.postprocess.reconciliation import ldpc

    result_bits = ldpc.LdpcBob.result_bits

    def wrong(self):
        bits, keep = result_bits(self)
        bits = bits.copy()
        bits[np.flatnonzero(keep)[7]] ^= 1
        return bits, keep

    monkeypatch.setattr(ldpc.LdpcBob, "result_bits", wrong)
    r = postprocess(raw, CFG, seed=3, ec="ldpc")
    assert not r.ok
    assert r.alice.key is None and r.bob.key is None
    assert "verification failed" in (r.alice.abort_reason or "") + (r.bob.abort_reason or "")


def test_channel_counts_content_bits_per_direction_and_kind():
    from satqkd.postprocess.authentication import KeyPool

    pool = KeyPool.from_rng(10_000, np.random.default_rng(0))
    alice, bob = memory_pair(pool, pool.copy(), auth_mode="transcript")
    alice.send("ec_syndromes", syndromes=np.ones(13, dtype=bool), sizes=np.array([13]))
    bob.recv("ec_syndromes")
    bob.send("ec_failed", failed=np.array([True, False]))
    alice.recv("ec_failed")
    bob.send("verify_result", match=True)
    alice.recv("verify_result")
    for ep in (alice, bob):
        st = ep.stats
        assert st.bits("down") == 13
        assert st.bits("up", ("ec_failed",)) == 2
        assert st.bits("up") == 3
        assert st.content_bits == {"down": {"ec_syndromes": 13}, "up": {"ec_failed": 2, "verify_result": 1}}


def test_cascade_bob_queries_depend_on_the_error_pattern_only():
    """Two key pairs with the same error pattern give the same queries and outcomes: what Bob's
    messages carry beyond public data is his comparison outcomes, which are charged."""
    from satqkd.postprocess.reconciliation import cascade

    rng = np.random.default_rng(2)
    n = 30_000
    e = (rng.random(n) < 0.02).astype(np.uint8)
    logs = []
    for trial in range(2):
        a = rng.integers(0, 2, n, dtype=np.uint8)
        alice = cascade.CascadeAlice(a, cascade.CascadeParams(seed=11))
        bob = cascade.CascadeBob(a ^ e, cascade.CascadeParams(seed=11), 0.02)
        log = []

        def ask(q):
            log.append((q.copy(), bob.take_outcomes()))
            return alice.answer(q)

        res = bob.reconcile(ask)
        log.append((None, bob.take_outcomes()))
        assert np.array_equal(res.bob_bits, a)
        assert res.leak_by_party["bob"] == res.leak_by_party["alice"] == sum(o.size for _, o in log)
        logs.append(log)
    assert len(logs[0]) == len(logs[1])
    for (q0, o0), (q1, o1) in zip(*logs):
        assert (q0 is None and q1 is None) or np.array_equal(q0, q1)
        assert np.array_equal(o0, o1)
