"""LDPC: the blind rounds without a barrier between rounds (``ldpc._pipelined_rounds``) on real bit strings."""

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
