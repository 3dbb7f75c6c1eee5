"""Per-frame check tags: a decoding that satisfies the syndrome but is not Alice's frame is a failure.

A BP decoder can converge to the true error pattern plus a low-weight codeword: every check is
satisfied, but the frame is wrong. Without a check, Bob reports success, the frame's errors reach error
verification and the whole pass is discarded (3 of 10 event-level runs at 89° did this). With the tag
(FRAME_TAG_BITS bits per frame, charged to Alice) such a frame reads as failed and gets further reveals.
"""

import numpy as np
import pytest

from satqkd.postprocess.reconciliation import ldpc as L


def _noisy(n, q, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    return a, a ^ (rng.random(n) < q).astype(np.uint8)


def test_the_tag_is_a_linear_hash_that_sees_any_change():
    rng = np.random.default_rng(0)
    rows = L._tag_rows(7, 0, 1_001)
    x, y = (rng.integers(0, 2, 1_001, dtype=np.uint8) for _ in range(2))
    assert np.array_equal(L.frame_tag(rows, x ^ y), L.frame_tag(rows, x) ^ L.frame_tag(rows, y))
    # the rows are public and seeded: Alice and Bob compute the same matrix
    assert np.array_equal(rows, L._tag_rows(7, 0, 1_001)) and not np.array_equal(rows, L._tag_rows(7, 1, 1_001))
    # every single-bit and every two-bit change moves the tag (a zero column pair has probability 2^-32)
    base = L.frame_tag(rows, x)
    for i in range(0, 1_001, 37):
        z = x.copy()
        z[i] ^= 1
        z[(i * 7 + 3) % 1_001] ^= 1 if (i * 7 + 3) % 1_001 != i else 0
        assert not np.array_equal(L.frame_tag(rows, z), base)
    with pytest.raises(ValueError, match="tag rows"):
        L.frame_tag(rows, x[:-9])


def test_a_frame_whose_tag_does_not_match_is_not_accepted():
    n, q = 40_000, 0.02
    a, b = _noisy(n, q, 3)
    plans = L.plan_frames(n, q, frame_length=2**14, efficiency=1.25)  # a rate that decodes at once
    alice = L.LdpcAlice(a, plans, 11, np.random.default_rng(1))
    tags = alice.frame_tags()
    assert all(t.shape == (L.FRAME_TAG_BITS,) for t in tags)
    # honest tags: the frames that decode are accepted
    bob = L.LdpcBob(b, plans, q, 11)
    bob.load_tags(tags)
    failed = bob.on_syndromes(alice.syndromes())
    ok_frames = np.flatnonzero(~failed)
    assert ok_frames.size and bob.tag_rejections.sum() == 0
    # the same decoding against a tag of another word (as if BP had found a wrong word of the right
    # syndrome): Bob must report the frame as failed, and keep asking for reveals
    f = int(ok_frames[0])
    bad = [t.copy() for t in tags]
    bad[f][0] ^= 1
    bob2 = L.LdpcBob(b, plans, q, 11)
    bob2.load_tags(bad)
    failed2 = bob2.on_syndromes(alice.syndromes())
    assert failed2[f] and bob2.tag_rejections[f] == 1
    assert np.array_equal(np.delete(failed2, f), np.delete(failed, f))
    _, keep = bob2.result_bits()
    frame_bits = np.zeros(n, dtype=bool)
    frame_bits[bob2.perm[sum(p.key_len for p in plans[:f]):sum(p.key_len for p in plans[:f + 1])]] = True
    assert not keep[frame_bits].any()  # dropped, never kept with an unverified word
    with pytest.raises(ValueError, match="frame tags"):
        bob2.load_tags(tags[:-1])


def test_reconcile_charges_the_tags_and_still_reconciles():
    n, q = 60_000, 0.015
    a, b = _noisy(n, q, 4)
    res = L.reconcile(a, b, q, seed=2, rng=np.random.default_rng(0), frame_length=2**15)
    assert res.frame_errors == 0 and res.residual_errors == 0 and res.undetected_frames == 0
    plans = L.plan_frames(n, q, frame_length=2**15)
    assert res.leak_by_party["alice"] == (sum(p.syndrome_leak for p in plans) + L.FRAME_TAG_BITS * len(plans)
                                          + res.details["revealed_bits"])
    assert res.details["tag_rejections"] == [0] * len(plans)
