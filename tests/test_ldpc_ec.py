"""LDPC syndrome reconciliation: density evolution, codes, decoder, blind rate adaptation, leakage."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from satqkd.postprocess.reconciliation import ldpc as L
from satqkd.postprocess.reconciliation.result import binary_entropy

#: Hamming (7,4): column i is the binary expansion of i + 1.
H74 = np.array([[1, 0, 1, 0, 1, 0, 1], [0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1]], dtype=np.uint8)


@pytest.fixture(autouse=True)
def _private_code_cache(tmp_path_factory, monkeypatch):
    """Codes built by the tests go to a temporary cache, not the user's."""
    monkeypatch.setenv("SATQKD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "code-cache"))


def _decode(H, syndrome, q_or_llr, max_iter=50, patience=50):
    Hs = sp.csr_matrix(H)
    n = H.shape[1]
    llr = q_or_llr if np.ndim(q_or_llr) else np.full(n, np.log((1 - q_or_llr) / q_or_llr))
    Lp = np.asarray(llr, dtype=np.float32).copy()
    R = np.zeros(Hs.nnz, dtype=np.float32)
    d = int(np.diff(Hs.indptr).max())
    ok, it = L._sp_decode(Hs.indptr.astype(np.int64), Hs.shape[0], Hs.indices.astype(np.int32),
                          np.asarray(syndrome, dtype=np.uint8), Lp, R, max_iter, patience,
                          np.zeros((4, d), np.float32))
    return (Lp < 0).astype(np.uint8), ok, it


def _noisy(n, q, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    return a, a ^ (rng.random(n) < q).astype(np.uint8)


def test_hamming74_single_errors_are_decoded_from_the_syndrome():
    for i in range(7):
        e = np.zeros(7, dtype=np.uint8)
        e[i] = 1
        s = (H74.astype(int) @ e) % 2
        assert int(s @ [1, 2, 4]) == i + 1  # the syndrome spells the position
        e_hat, ok, _ = _decode(H74, s, 0.05)
        assert ok and np.array_equal(e_hat, e)
    # zero syndrome → no error, after a single iteration
    e_hat, ok, it = _decode(H74, np.zeros(3), 0.05)
    assert ok and it == 1 and not e_hat.any()


def test_density_evolution_reproduces_the_regular_3_6_threshold():
    # (3,6)-regular LDPC on the BSC: BP threshold 0.084 (Richardson & Urbanke, IEEE Trans. IT 47,
    # 599 (2001), Table I)
    assert L.density_evolution({3: 1.0}, {6: 1.0}, 0.080)[0]
    assert not L.density_evolution({3: 1.0}, {6: 1.0}, 0.088)[0]
    th = L.de_threshold({3: 1.0}, {6: 1.0}, lo=0.075, hi=0.095, steps=5)
    assert th == pytest.approx(0.084, abs=0.0015)
    # stability: λ₂ ρ'(1) 2√(p(1−p)) < 1 fails for (2,4) codes at any useful p → no convergence
    assert not L.density_evolution({2: 1.0}, {4: 1.0}, 0.05, max_iter=300)[0]


def test_designed_ensembles_have_the_stated_thresholds():
    ens = L.ENSEMBLES["bsc-0.804"]  # the cheapest designed one to evolve (check degree 32)
    rho = ens.check_rho
    assert L.density_evolution(ens.lam, rho, 0.97 * ens.threshold)[0]
    assert not L.density_evolution(ens.lam, rho, 1.04 * ens.threshold, max_iter=400)[0]
    for e in L.ENSEMBLES.values():
        assert sum(e.lam.values()) == pytest.approx(1.0)
        # rate below capacity, and within 5 % of it at the threshold (f* = (1 − R)/h(p*))
        assert 1.0 < e.threshold_efficiency < 1.05, e.name
        # stability condition λ₂ ρ'(1) 2√(p(1−p)) ≤ 1 (Richardson, Shokrollahi, Urbanke 2001): the
        # optimised ensembles sit on it at p*; 1 % slack for the rounding of the tables
        rho1 = sum(v * (d - 1) for d, v in e.check_rho.items())
        assert e.lam.get(2, 0.0) * rho1 * 2 * np.sqrt(e.threshold * (1 - e.threshold)) < 1.01


def test_effective_rate_formula():
    # R = (R0 n − s)/(n − p − s)   (Elkouss et al., ITW 2010)
    assert L.effective_rate(0.9, 1000, 0, 0) == pytest.approx(0.9)
    assert L.effective_rate(0.9, 1000, 100, 0) == pytest.approx(1.0)
    assert L.effective_rate(0.9, 1000, 0, 100) == pytest.approx(800 / 900)
    assert L.effective_rate(0.5, 1000, 50, 50) == pytest.approx(450 / 900)
    with pytest.raises(ValueError):
        L.effective_rate(0.5, 100, 60, 50)


def _rank_reference(M):
    A = (np.array(M, dtype=np.uint8) & 1).copy()
    r = 0
    for c in range(A.shape[1]):
        piv = np.flatnonzero(A[r:, c])
        if piv.size == 0:
            continue
        A[[r, r + piv[0]]] = A[[r + piv[0], r]]
        rows = np.flatnonzero(A[:, c])
        rows = rows[rows != r]
        A[rows] ^= A[r]
        r += 1
        if r == A.shape[0]:
            break
    return r


def test_gf2_rank():
    assert L.gf2_rank(np.eye(70, dtype=np.uint8)) == 70
    assert L.gf2_rank(H74) == 3
    dup = np.vstack([H74, H74[0] ^ H74[1]])
    assert L.gf2_rank(dup) == 3
    rng = np.random.default_rng(0)
    for shape, dens in [((5, 9), 0.3), ((40, 130), 0.1), ((130, 40), 0.1), ((64, 64), 0.1),
                        ((300, 60), 0.012), ((200, 50), 0.02)]:
        M = (rng.random(shape) < dens).astype(np.uint8)
        assert L.gf2_rank(M) == _rank_reference(M)
        assert L.gf2_rank(sp.csr_matrix(M)) == _rank_reference(M)  # private-row shortcut mixed in


def test_code_construction_follows_the_ensemble_and_has_girth_6():
    name = L.MOTHER_CODES[0]
    ens = L.ENSEMBLES[name]
    n = L.FRAME_LENGTH
    code = L.get_code(name, n)
    H = code.H
    assert code.m == round(n * (1 - ens.rate))
    vdeg = code.variable_degrees
    w = {d: v / d for d, v in ens.lam.items()}
    tot = sum(w.values())
    for d, x in w.items():  # node fractions ∝ λ_i / i
        assert np.count_nonzero(vdeg == d) == pytest.approx(n * x / tot, abs=1)
    cdeg = np.diff(H.indptr)
    assert cdeg.max() - cdeg.min() <= 2
    # no parallel edges, no 4-cycles: girth ≥ 6 for every degree at the production length
    assert H.max() == 1 and code.four_cycles == 0 and code.forced_edges == 0
    # degree-2 variables: the shortest cycle in their subgraph (= the lightest codeword made of
    # them) is longer than DEG2_DEPTH
    Hc = H.tocsc()
    two = np.flatnonzero(vdeg == 2)
    ends = Hc.indices[Hc.indptr[two][:, None] + np.arange(2)]
    adj = [[] for _ in range(code.m)]
    for a, b in ends:
        adj[a].append(b)
        adj[b].append(a)
    assert _graph_girth(adj, sources=np.unique(ends[:100])) > L.DEG2_DEPTH
    # deterministic (also without the disk cache) and cached per process
    small = L.build_code(name, 8192, seed=1)
    assert (L.build_code(name, 8192, seed=1, use_disk_cache=False).H != small.H).nnz == 0
    assert (L.build_code(name, 8192, seed=2, use_disk_cache=False).H != small.H).nnz > 0
    assert L.get_code(name, n) is code


def _graph_girth(adj, sources):
    """Length of the shortest cycle through one of ``sources`` (BFS; multigraph edges allowed)."""
    best = 10**9
    for s in sources:
        dist = {int(s): 0}
        parent = {int(s): -1}
        frontier = [int(s)]
        while frontier and 2 * dist[frontier[0]] < best:
            nxt = []
            for u in frontier:
                skipped = False
                for v in adj[u]:
                    if v == parent[u] and not skipped:
                        skipped = True  # the tree edge back to the parent (once)
                        continue
                    if v in dist:
                        best = min(best, dist[u] + dist[v] + 1)
                    else:
                        dist[v] = dist[u] + 1
                        parent[v] = u
                        nxt.append(v)
            frontier = nxt
    return best


def test_graph_girth_helper_on_known_graphs():
    ring = [[(i - 1) % 7, (i + 1) % 7] for i in range(7)]
    assert _graph_girth(ring, [0]) == 7
    double = [[1, 1], [0, 0]]  # two parallel edges: a 2-cycle
    assert _graph_girth(double, [0]) == 2


def test_disk_cache_is_used_and_survives_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("SATQKD_CACHE_DIR", str(tmp_path))
    name = L.MOTHER_CODES[-1]
    a = L.build_code(name, 4096, seed=3)
    files = list((tmp_path / "ldpc").glob("*.npz"))
    assert len(files) == 1
    b = L.build_code(name, 4096, seed=3)  # loaded
    assert (a.H != b.H).nnz == 0
    files[0].write_bytes(b"not a numpy file")  # corrupt → rebuilt, identical, rewritten
    c = L.build_code(name, 4096, seed=3)
    assert (a.H != c.H).nnz == 0
    assert L.build_code(name, 4096, seed=3).H.nnz == a.H.nnz
    # the cache is trimmed, oldest first, to CACHE_MAX_BYTES
    monkeypatch.setattr(L, "CACHE_MAX_BYTES", files[0].stat().st_size + 1)
    L.build_code(name, 5120, seed=3)
    left = list((tmp_path / "ldpc").glob("*.npz"))
    assert len(left) == 1 and "n5120" in left[0].name
    monkeypatch.setenv("SATQKD_CACHE_DIR", "")
    assert L.code_cache_dir() is None


def test_frame_plans_hit_the_target_rate_and_puncture_untainted():
    q, f = 0.02, 1.06
    plans = L.plan_frames(250_000, q, efficiency=f, frame_length=65_536)
    assert sum(p.key_len for p in plans) == 250_000
    R = 1 - f * binary_entropy(q)
    for pl in plans:
        n = pl.code.n
        assert pl.punctured.size + pl.shortened.size + pl.key_len == n
        assert len(set(pl.punctured) | set(pl.shortened) | set(pl.key_pos)) == n
        # shortening only; the code-length grid may lower the rate by ≤ step·(1 − R0)/K
        assert pl.punctured.size == 0
        assert R - (L.CODE_LENGTH_STEP * (1 - pl.code.rate) + 2) / pl.key_len <= pl.rate <= R + 2 / n
        assert pl.syndrome_leak == pl.code.m
    # a rate above the top mother code: untainted puncturing, rank(H_P) = p
    top = L.ENSEMBLES[L.MOTHER_CODES[0]].rate
    q_low = 0.007
    pl = L.plan_frames(60_000, q_low, efficiency=1.05, frame_length=65_536)[0]
    assert 1 - 1.05 * binary_entropy(q_low) > top and pl.punctured.size > 0
    Hp = pl.code.H[:, pl.punctured].tocsc()
    assert np.diff(Hp.indptr).min() == 3  # degree-3 variables
    assert np.bincount(Hp.indices, minlength=pl.code.m).max() == 1  # no check sees two
    assert pl.rank_punctured == pl.punctured.size == L.gf2_rank(Hp.toarray())
    # the reveal order: punctured positions, then all checks (splits), then key positions
    ro = pl.reveal_order
    p = pl.punctured.size
    assert set(ro[:p]) == set(pl.punctured)
    assert sorted(-1 - ro[p:p + pl.code.m]) == list(range(pl.code.m))
    assert set(ro[p + pl.code.m:]) == set(pl.key_pos)


def test_check_splitting_reveals_half_syndromes_bob_can_use():
    n, q = 60_000, 0.02
    a, b = _noisy(n, q, 9)
    plans = L.plan_frames(n, q, frame_length=65_536)
    alice = L.LdpcAlice(a, plans, 4, np.random.default_rng(0))
    bob = L.LdpcBob(b, plans, q, 4)
    bob.on_syndromes(alice.syndromes())
    frames = np.arange(len(plans))
    pl, code = plans[0], plans[0].code
    p = pl.punctured.size
    vals = alice.reveal(frames, p + 50)  # punctured values, then 50 half-check syndromes
    items = pl.reveal_order[:p + 50]
    word = alice._words[0]
    assert np.array_equal(vals[0][:p], word[items[:p]])
    for c, v in zip(-1 - items[p:], vals[0][p:]):
        cols = code.indices[code.indptr[c]:code.split_at[c]]
        assert 0 < cols.size < code.indptr[c + 1] - code.indptr[c]
        assert v == np.bitwise_xor.reduce(word[cols])
    bob.on_reveal(frames, vals)
    g, i = bob._where[0]
    # Bob's decoding graph: split checks became two rows whose syndromes are those of the true
    # error pattern e = x⁺ ⊕ y⁺
    e = word ^ bob._y[0]
    rp, rs = L._row_partition(code.indptr, code.split_at, g.split[i], g.target[i], g.half[i])
    assert rs.size == code.m + 50
    par = np.add.reduceat(e[code.indices].astype(np.int64), rp[:-1]) & 1
    assert np.array_equal(par, rs)
    # revealed punctured values became certain priors with the right sign
    assert np.array_equal(g.prior[i, items[:p]] < 0, word[items[:p]] == 1)


def test_alice_refuses_bad_requests():
    n, q = 30_000, 0.02
    a, b = _noisy(n, q, 2)
    plans = L.plan_frames(n, q, frame_length=32_768)
    alice = L.LdpcAlice(a, plans, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="punctured"):
        alice.reveal([0], 1, items=[np.array([plans[0].key_pos[0]])])  # a key bit: not on request
    alice.reveal([0], 2, items=[np.array([-1, -2])])
    with pytest.raises(ValueError, match="new and distinct"):
        alice.reveal([0], 1, items=[np.array([-2])])  # check 1 already split
    with pytest.raises(ValueError, match="out of range"):
        alice.reveal([0], 1, items=[np.array([-plans[0].code.m - 1])])


def test_blind_reconciliation_at_one_percent_and_leak_counted_from_the_messages():
    n, q = 240_000, 0.01
    a, b = _noisy(n, q, 3)
    q_true = float(np.mean(a != b))
    kw = dict(frame_length=65_536, max_retries=8, reveal_step=300)
    res = L.reconcile(a, b, q, seed=5, rng=np.random.default_rng(1), targeted=True, **kw)
    assert res.frame_errors == 0 and res.undetected_frames == 0 and res.residual_errors == 0
    assert np.array_equal(res.bob_bits, a) and res.keep_mask.all()
    # Alice's disclosures alone; the named requests Bob adds make targeted reveals two-way
    f = res.leak_by_party["alice"] / (n * L.binary_entropy(q_true))
    assert 1.0 < f < 1.15  # 2^16-bit frames here
    assert sum(res.details["reveal_steps"]) > 0  # the aggressive start needed the blind retries

    # replay with message wrappers: leak = syndrome bits − rank(H_P) per frame + frame tags + revealed values
    plans = L.plan_frames(n, q, frame_length=65_536, targeted=True)
    alice = L.LdpcAlice(a, plans, 5, np.random.default_rng(1))
    bob = L.LdpcBob(b, plans, q, 5)
    syn = alice.syndromes()
    tags = alice.frame_tags()
    bob.load_tags(tags)
    leak = sum(s.size for s in syn) - sum(p.rank_punctured for p in plans) + sum(t.size for t in tags)
    down = sum((s.size + 7) // 8 for s in syn) + (sum(t.size for t in tags) + 7) // 8
    failed = bob.on_syndromes(syn)
    tries = 0
    bob_bits = len(plans)  # one success flag per frame
    while failed.any() and tries < 8:
        fr = np.flatnonzero(failed)
        step = L.reveal_step_for(tries, 300)
        req = bob.requests(fr, step)
        bob_bits += sum(r.size * L._index_bits(plans[f].code) for r, f in zip(req, fr))  # named items
        vals = alice.reveal(fr, step, items=req)
        leak += sum(v.size for v in vals)
        down += sum((v.size + 7) // 8 for v in vals)
        failed = bob.on_reveal(fr, vals)
        bob_bits += fr.size  # a flag per frame that got items
        tries += 1
    assert res.leak_by_party == {"alice": leak, "bob": bob_bits}
    assert res.leak_bits == leak + bob_bits
    assert res.round_trips == 1 + tries
    assert res.bytes_down == down
    # the untargeted public order (the protocol's messages) also reconciles
    res2 = L.reconcile(a, b, q, seed=5, rng=np.random.default_rng(1), targeted=False, **kw)
    assert res2.frame_errors == 0 and res2.residual_errors == 0
    plans2 = L.plan_frames(n, q, frame_length=65_536)  # the public order starts less aggressively
    assert res2.leak_by_party["alice"] == (sum(p.syndrome_leak for p in plans2) + L.FRAME_TAG_BITS * len(plans2)
                                           + res2.details["revealed_bits"])
    assert res2.leak_by_party["bob"] == len(plans2) + sum(res2.details["reveal_steps"])  # flags only
    assert res2.efficiency(q_true) < res.efficiency(q_true)  # one-way: no named requests to pay for


def test_failed_frames_are_detected_and_dropped_without_retries():
    # QBER 4 % far above what the rate-0.9 start can correct: every frame must fail *detectably*
    n = 20_000
    a, b = _noisy(n, 0.04, 8)
    res = L.reconcile(a, b, 0.005, seed=1, rng=np.random.default_rng(0), frame_length=10_240,
                      max_retries=0, max_iter=30)
    plans = L.plan_frames(n, 0.005, frame_length=10_240)
    assert res.n_frames == len(plans) >= 2
    assert res.frame_errors == res.n_frames
    assert res.n_key_bits == 0 and not res.keep_mask.any()
    assert res.round_trips == 1 and res.undetected_frames == 0
    assert res.leak_by_party == {"alice": sum(p.syndrome_leak for p in plans) + L.FRAME_TAG_BITS * len(plans),
                                 "bob": len(plans)}


def _tanh_rule_reference(indptr, indices, syn, L, R, iters):
    """Plain float64 layered sum-product (the tanh rule, row by row), same clamps as the
    compiled decoder: |q| ≤ 30, tanh(|q|/2) ≥ 1e-7, Π_{k≠t} tanh ≤ 1 − 2^−23."""
    L = L.astype(np.float64).copy()
    R = R.astype(np.float64).copy()
    for _ in range(iters):
        for c in range(indptr.size - 1):
            e = np.arange(indptr[c], indptr[c + 1])
            cols = indices[e]
            q = L[cols] - R[e]
            th = np.maximum(np.tanh(np.minimum(np.abs(q), 30.0) / 2), 1e-7)
            ext = np.minimum(np.prod(th) / th, 1 - 2.0**-23)
            neg = (int(syn[c]) + int(np.count_nonzero(q < 0))) & 1
            sign = np.where((q < 0) ^ bool(neg), -1.0, 1.0)
            R[e] = sign * 2 * np.arctanh(ext)
            L[cols] = q + R[e]
    return L, R


def test_compiled_decoder_computes_the_tanh_rule():
    # the vectorised float32 kernel (polynomial exp/ln, one division per edge) against a plain
    # float64 reference: same messages after a few sweeps, same decoded word at the end
    code = L.build_code(L.MOTHER_CODES[3], 2048, seed=4)
    n, q = code.n, 0.01
    rng = np.random.default_rng(11)
    e = (rng.random(n) < q).astype(np.uint8)
    syn = code.syndrome(e)
    assert np.array_equal(syn, (code.H @ e.astype(np.int64)) % 2)  # compiled parity = H·e
    prior = np.full(n, np.log((1 - q) / q), dtype=np.float32)
    prior[rng.permutation(n)[:20]] = 0.0  # a few punctured-like positions (LLR 0)
    ip, ix = code.indptr, code.indices
    for sweeps in (1, 3):
        Lk, Rk = prior.copy(), np.zeros(code.H.nnz, np.float32)
        L._sp_decode(ip, code.m, ix, syn, Lk, Rk, sweeps, 10**6, L._work_buffer(np.diff(ip).max()))
        Lr, Rr = _tanh_rule_reference(ip, ix, syn, prior, np.zeros(code.H.nnz), sweeps)
        # one sweep: equal to 1e-4; then float32 rounding accumulates — a large message is
        # ln((T+P)/(T−P)) with T − P ≈ 2e^−|r|, where rounding of the product P of ~50 terms
        # costs up to ~1 % of |r|
        if sweeps == 1:
            np.testing.assert_allclose(Rk, Rr, rtol=0, atol=2e-4)
        np.testing.assert_allclose(Rk, Rr, rtol=2e-2, atol=5e-3)
        sure = np.abs(Rr) > 1e-3  # (messages through a position with LLR 0 are ~1e-7)
        assert np.array_equal(Rk[sure] < 0, Rr[sure] < 0) and np.array_equal(Lk < 0, Lr < 0)
        np.testing.assert_allclose(Lk, Lr, rtol=2e-2, atol=5e-3)
    Lk, Rk = prior.copy(), np.zeros(code.H.nnz, np.float32)
    ok, it = L._sp_decode(ip, code.m, ix, syn, Lk, Rk, 50, 50, L._work_buffer(np.diff(ip).max()))
    Lr, _ = _tanh_rule_reference(ip, ix, syn, prior, np.zeros(code.H.nnz), it)
    assert ok and np.array_equal((Lk < 0).astype(np.uint8), e)
    assert np.array_equal(Lk < 0, Lr < 0)
    # check splitting: a row partition with split rows decodes the same error pattern
    split = np.zeros(code.m, dtype=bool)
    split[::3] = True
    half = np.array([np.bitwise_xor.reduce(e[ix[ip[c]:code.split_at[c]]]) for c in range(code.m)],
                    dtype=np.uint8)
    rp, rs = L._row_partition(ip, code.split_at, split, syn, half)
    Lk, Rk = prior.copy(), np.zeros(code.H.nnz, np.float32)
    ok, _ = L._sp_decode(rp, rs.size, ix, rs, Lk, Rk, 50, 50, L._work_buffer(np.diff(ip).max()))
    assert ok and np.array_equal((Lk < 0).astype(np.uint8), e)


def test_decoding_threads_do_not_change_the_result_and_requests_match_their_definition():
    n, q = 60_000, 0.02
    a, b = _noisy(n, q, 12)
    kw = dict(frame_length=16_384, rng=None)
    r1 = L.reconcile(a, b, q, 3, threads=1, **{**kw, "rng": np.random.default_rng(5)})
    r2 = L.reconcile(a, b, q, 3, threads=3, **{**kw, "rng": np.random.default_rng(5)})
    assert r1.n_frames >= 3 and sum(r1.details["reveal_steps"]) > 0
    assert np.array_equal(r1.bob_bits, r2.bob_bits) and np.array_equal(r1.keep_mask, r2.keep_mask)
    assert r1.leak_bits == r2.leak_bits and r1.round_trips == r2.round_trips
    assert r1.details["iterations"] == r2.details["iterations"]
    assert r1.details["reveal_steps"] == r2.details["reveal_steps"]
    with pytest.raises(ValueError, match="threads"):
        L.LdpcBob(b, L.plan_frames(n, q, frame_length=16_384), q, 3, threads=0)
    # Bob's targeted request: unsatisfied checks first, then by increasing min |L| (stable order)
    plans = L.plan_frames(n, q, frame_length=16_384, targeted=True)
    alice = L.LdpcAlice(a, plans, 3, np.random.default_rng(0))
    bob = L.LdpcBob(b, plans, q, 3, max_iter=5, threads=2)
    failed = np.flatnonzero(bob.on_syndromes(alice.syndromes()))
    assert failed.size
    f = int(failed[0])
    g, i = bob._where[f]
    code = plans[f].code
    hard = (g.L[i] < 0).astype(np.int64)
    par = np.add.reduceat(hard[code.indices], code.indptr[:-1]) & 1
    rel = np.minimum.reduceat(np.abs(g.L[i])[code.indices], code.indptr[:-1])
    score = np.where(par != g.target[i], -1.0, rel)
    want = np.argsort(score, kind="stable")[:200]
    got = bob.requests(np.array([f]), 200)[0]
    p = plans[f].punctured.size
    assert np.array_equal(got[min(p, 200):], -1 - want[:200 - min(p, 200)])


def test_layered_decoder_agrees_with_ldpc_package():
    pytest.importorskip("ldpc", reason="the ldpc package is an optional extra ('.[baseline]', in '.[dev]')")
    n, q = 20_000, 0.03
    a, b = _noisy(n, q, 4)
    kw = dict(frame_length=10_240, efficiency=1.25, max_retries=0, max_iter=100, patience=100)
    r1 = L.reconcile(a, b, q, seed=2, rng=np.random.default_rng(2), **kw)
    r2 = L.reconcile(a, b, q, seed=2, decoder="ldpc", rng=np.random.default_rng(2), **kw)
    assert r1.n_frames == r2.n_frames >= 2
    assert r1.frame_errors == r2.frame_errors == 0
    assert np.array_equal(r1.bob_bits, a) and np.array_equal(r2.bob_bits, a)
    assert r1.leak_bits == r2.leak_bits
    # layered scheduling needs fewer iterations than flooding (Mansour & Shanbhag 2003)
    assert sum(r1.details["iterations"]) < sum(r2.details["iterations"])


def test_bad_inputs_are_refused():
    a, b = _noisy(1000, 0.01, 0)
    with pytest.raises(ValueError, match="same length"):
        L.reconcile(a, b[:-1], 0.01, 1)
    with pytest.raises(ValueError, match="qber_estimate"):
        L.plan_frames(1000, 0.0)
    with pytest.raises(ValueError, match="efficiency"):
        L.plan_frames(1000, 0.01, efficiency=0.5)
    with pytest.raises(ValueError, match="ensemble"):
        L.build_code("no-such-code", 1000)
    with pytest.raises(ValueError, match="decoder"):
        L.LdpcBob(b, L.plan_frames(1000, 0.01, frame_length=1024), 0.01, 1, decoder="magic")
    with pytest.raises(ValueError, match="mean_degree"):
        L.concentrated_rho(1.0)
