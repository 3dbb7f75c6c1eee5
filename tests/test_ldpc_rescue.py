"""LDPC: Bob's trapping-set rescue (``ldpc._rescue``) on real bit strings — no message, no leak."""

from __future__ import annotations

import numpy as np
import pytest

from satqkd.postprocess.reconciliation import ldpc as L


@pytest.fixture(autouse=True)
def _private_code_cache(tmp_path_factory, monkeypatch):
    """Codes built by the tests go to a temporary cache, not the user's."""
    monkeypatch.setenv("SATQKD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "code-cache"))


def _pair(n, q, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    return a, a ^ (rng.random(n) < q).astype(np.uint8)


def _first_round(a, b, q, rescue):
    plans = L.plan_frames(a.size, q)
    alice = L.LdpcAlice(a, plans, 7, np.random.default_rng(3))
    bob = L.LdpcBob(b, plans, q, 7, rescue=rescue, threads=2)
    failed = bob.on_syndromes(alice.syndromes())
    return plans, alice, bob, failed


def test_rescue_breaks_a_one_check_trapping_set_on_a_real_frame():
    # 10^6 bits at QBER 2 % (the benchmark point, seed 1): frame 0 stops in round 1 with a single
    # unsatisfied check — ten wrong bits, nine of degree 2, a near-codeword that no number of
    # public reveal steps fixed before (15 retries, f = 1.104). Pinning the least reliable
    # variable of that check breaks it.
    n, q = 1_000_000, 0.02
    a, b = _pair(n, q, 1)
    plans, alice, bob, failed = _first_round(a, b, q, rescue=False)
    assert failed[0]
    g, i = bob._where[0]
    code = plans[0].code
    rp, rs = L._row_partition(code.indptr, code.split_at, g.split[i], g.target[i], g.half[i])
    bad = L._unsatisfied_rows(rp, rs.size, code.indices, rs, g.L[i])
    assert bad.size == 1
    wrong = np.flatnonzero(bob.decoded[0] != alice._words[0])
    assert 1 < wrong.size <= 20
    its_plain = int(bob.iterations[0])

    plans, alice, bob, failed = _first_round(a, b, q, rescue=True)
    assert not failed[0]
    assert np.array_equal(bob.decoded[0], alice._words[0])  # the right word, not another codeword
    assert bob.iterations[0] > its_plain  # the rescue's iterations are counted
    # frames that fail with thousands of unsatisfied checks are left to the reveal steps
    for f in np.flatnonzero(failed):
        assert not np.array_equal(bob.decoded[f], alice._words[f])


def test_rescue_leaves_the_state_alone_when_it_does_not_apply_or_fails():
    n, q = 16_384, 0.03
    a, b = _pair(n, q, 4)
    plans = L.plan_frames(n, q, frame_length=16_384, efficiency=1.0)  # far too little syndrome
    alice = L.LdpcAlice(a, plans, 1, np.random.default_rng(0))
    bob = L.LdpcBob(b, plans, q, 1, rescue=False, max_iter=20)
    assert bob.on_syndromes(alice.syndromes()).all()
    g, i = bob._where[0]
    code = plans[0].code
    rp, rs = L._row_partition(code.indptr, code.split_at, g.split[i], g.target[i], g.half[i])
    dmax = int(np.diff(code.indptr).max())
    Lk, Rk = g.L[i].copy(), g.R[i].copy()
    assert L._unsatisfied_rows(rp, rs.size, code.indices, rs, Lk).size > L.RESCUE_MAX_UNSAT
    assert L._rescue(rp, rs.size, code.indices, rs, Lk, Rk, g.prior[i], dmax) == (False, 0)
    assert np.array_equal(Lk, g.L[i]) and np.array_equal(Rk, g.R[i])
    # a hard decision that violates a few checks it cannot fix: every trial fails, state restored
    Lw = np.full(code.n, 30.0, np.float32)
    rsw = np.zeros_like(rs)
    rsw[:3] = 1  # three checks that the all-zero word violates; all positions pinned known
    prior = np.full(code.n, L._LLR_MAX, np.float32)
    Rw = np.zeros(code.H.nnz, np.float32)
    ok, used = L._rescue(rp, rs.size, code.indices, rsw, Lw.copy(), Rw.copy(), prior, dmax)
    assert (ok, used) == (False, 0)  # no candidate: every variable of those checks is known
    prior[:] = 2.0
    Lw2, Rw2 = Lw.copy(), Rw.copy()
    ok, used = L._rescue(rp, rs.size, code.indices, rsw, Lw2, Rw2, prior, dmax)
    # trials run (at most RESCUE_TRIALS × RESCUE_ITER iterations), none satisfies the rows, undone
    assert not ok and 0 < used <= L.RESCUE_TRIALS * L.RESCUE_ITER
    assert np.array_equal(Lw2, Lw) and np.array_equal(Rw2, Rw)


def test_rescue_is_deterministic_and_independent_of_threads():
    n, q = 1_000_000, 0.02
    a, b = _pair(n, q, 1)
    kw = dict(rng=None, max_retries=6)
    r1 = L.reconcile(a, b, q, 7, threads=1, **{**kw, "rng": np.random.default_rng(3)})
    r2 = L.reconcile(a, b, q, 7, threads=2, **{**kw, "rng": np.random.default_rng(3)})
    assert r1.frame_errors == 0 and r1.undetected_frames == 0 and r1.residual_errors == 0
    assert np.array_equal(r1.bob_bits, r2.bob_bits) and r1.leak_bits == r2.leak_bits
    assert r1.details["iterations"] == r2.details["iterations"]
    # the rescue sends nothing: the leak is the syndromes, the revealed items and Bob's flags
    pl = L.plan_frames(n, q)
    flags = sum(r1.details["reveal_steps"]) + len(pl)
    assert r1.leak_by_party == {"alice": sum(p.syndrome_leak for p in pl) + r1.details["revealed_bits"],
                                "bob": flags}


def test_rounds_without_barrier_send_the_same_messages_as_the_per_round_exchange():
    # several frames, several of them needing reveal steps (start efficiency 1.0 → most fail at
    # first); the pipelined driver must give the same key, leak, message sizes and round count
    n, q = 60_000, 0.02
    a, b = _pair(n, q, 12)
    kw = dict(frame_length=16_384, efficiency=1.0, max_retries=12)
    outs = []
    for pip, th in ((False, 2), (True, 1), (True, 2), (True, 3)):
        r = L.reconcile(a, b, q, 3, rng=np.random.default_rng(5), pipelined=pip, threads=th, **kw)
        outs.append(r)
    r0 = outs[0]
    assert r0.n_frames >= 3 and sum(1 for s in r0.details["reveal_steps"] if s) >= 2
    assert len(set(r0.details["reveal_steps"])) > 1  # frames finish in different rounds
    for r in outs[1:]:
        assert np.array_equal(r.bob_bits, r0.bob_bits) and np.array_equal(r.keep_mask, r0.keep_mask)
        assert (r.leak_bits, r.leak_by_party, r.round_trips, r.bytes_up, r.bytes_down, r.frame_errors) == \
            (r0.leak_bits, r0.leak_by_party, r0.round_trips, r0.bytes_up, r0.bytes_down, r0.frame_errors)
        assert r.details["iterations"] == r0.details["iterations"]
        assert r.details["reveal_steps"] == r0.details["reveal_steps"]
    # retries exhausted: the frames still failing are dropped by both, in either driver
    short = [L.reconcile(a, b, q, 3, rng=np.random.default_rng(5), pipelined=pip,
                         **{**kw, "max_retries": 0}) for pip in (False, True)]
    assert short[0].frame_errors == short[1].frame_errors > 0
    assert np.array_equal(short[0].keep_mask, short[1].keep_mask)
    assert short[0].leak_by_party == short[1].leak_by_party and short[0].round_trips == short[1].round_trips == 1
