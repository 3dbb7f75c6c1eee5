"""Cascade error correction as a two-party, batched, Bob-driven protocol.

Cascade (Brassard & Salvail, "Secret-key reconciliation by public discussion", EUROCRYPT '93,
LNCS 765, 410) corrects Bob's noisy copy of Alice's key by comparing parities of blocks under a
sequence of public random permutations; an odd block is bisected (BINARY) down to one wrong bit,
and every correction re-opens the blocks of earlier passes that contain the bit (the *cascade*).

This implementation follows the guidelines of Martinez-Mateo, Pacher, Peev, Ciurana & Martin,
"Demystifying the information reconciliation protocol Cascade", Quantum Inf. Comput. 15, 453
(2015), arXiv:1407.3257 (called *[MM15]* below):

* **block sizes are powers of two** (BINARY then costs exactly ``log2 k`` parities) and the first
  one is ``k1 = 2^ceil(log2(alpha/Q))`` with ``alpha ≈ 1/√2`` ([MM15]'s "Cascade opt. (8)":
  ``k1 = 2^ceil(log2(1/Q) − 1/2)``); later passes grow geometrically (``k_{i+1} = g_i k_i``).
  The growth factors (8, 8) and the 3 passes were tuned here on 10^6-bit frames (module
  report in the test file; [MM15] tuned for 10^4-bit frames and used ``k_i = n/2`` for i ≥ 3);
* **sub-block reuse** ([MM15]): every parity ever disclosed is remembered as a node of the
  bisection tree of its block, so a re-opened block is bisected from the *smallest* known
  sub-block that is now odd, and a known sibling saves a question;
* **block-parity inference** (as in [MM15]): after pass 1 the whole-key error parity is known to
  be even, so the last block parity of every later pass is inferred, not asked;
* **BICONF-style final checks** (Brassard & Salvail 1993; [MM15]'s passes with ``k = n/2``):
  the key is tested against batches of ``biconf_subsets`` random subsets (one asked parity each;
  the complement's parity follows from the total). An odd subset is bisected — together with its
  complement, which is then odd too — and the corrections cascade into all earlier passes. The
  protocol stops after a batch in which no subset was odd; a remaining error pattern survives one
  subset with probability exactly 1/2, so the undetected-frame probability is ``≤ 2^-biconf_subsets``
  times the (small) probability that errors survived the shuffled passes.

Protocol shape. Alice holds the reference key and is stateless apart from caches; Bob drives.
A *query batch* is an ``int64`` array of shape ``(3, m)``: rows ``pass_id, start, stop``. For a
shuffled pass ``p < n_passes`` the range ``[start, stop)`` indexes pass ``p``'s permuted order
(``order_p = permutation derived from (seed, p)``); for BICONF ids the range indexes the natural
order and the parity is taken over the members (or non-members) of a public random subset, see
:func:`biconf_pass_id`. Alice answers with ``np.uint8`` parities, one per query: **every answer
is one leaked bit**. All bisection steps of all open blocks advance together, so a round trip
carries one bisection level of every open search.

Hot paths (permutation, block parities, bisection bookkeeping) are ``numba.njit(cache=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from .result import ECResult, as_bits, binary_entropy, packed_bytes

__all__ = [
    "CascadeParams",
    "CascadeAlice",
    "CascadeBob",
    "CascadeResult",
    "CascadeError",
    "reconcile",
    "default_block_sizes",
    "biconf_pass_id",
    "encode_queries",
    "decode_queries",
    "encode_answers",
    "decode_answers",
    "benchmark_cascade",
]

# Node state bits of the bisection trees.
_KNOWN = np.uint8(1)  # parity of this node was disclosed (or inferred)
_ODD = np.uint8(2)  # Alice's parity XOR Bob's current parity of the node is 1
_CLAIMED = np.uint8(4)  # a bisection is currently working at this node

#: Subsets per BICONF batch are bit planes of one uint32 word per key bit.
_MAX_SUBSETS = 32


# --------------------------------------------------------------------------------------------
# parameters and result
# --------------------------------------------------------------------------------------------


class CascadeError(RuntimeError):
    """Bob detected answers that cannot come from one fixed key (abort the frame)."""


@dataclass(frozen=True)
class CascadeParams:
    """Public parameters of a Cascade run (both parties must use the same ``seed`` and ``n_passes``).

    Attributes
    ----------
    seed
        Public seed of the per-pass permutations and BICONF subsets (exchanged over the
        authenticated channel). Pass ``p`` draws ``n`` uint32 from
        ``Generator(PCG64(SeedSequence([seed, 0, p])))`` and Fisher–Yates-shuffles ``0..n-1``
        with them (``j = r_i (i+1) >> 32`` for ``i = n-1 … 1``); BICONF batch ``b`` draws ``n``
        uint32 from ``SeedSequence([seed, 1, b])``: subset ``j`` = positions with bit ``j`` set.
    n_passes
        Number of shuffled Cascade passes (1 … 16) before the BICONF checks.
    block_sizes
        Explicit block sizes of the shuffled passes (e.g. Yan et al., ICNC 2008: ``0.8/Q``,
        ``5 · 0.8/Q``, then ``n/2`` — [MM15]'s "opt. (2)"); ``None``
        uses the rule ``k1 = 2^ceil(log2(alpha/Q))``, ``k_{i+1} = growth[i] · k_i``. Only Bob uses
        the sizes (Alice answers ranges), so they may depend on his QBER estimate.
    alpha
        First-block constant of the rule (``k1 ≈ alpha/Q``, rounded up to a power of two);
        [MM15]'s "opt. (8)" corresponds to ``alpha = 2^-0.5``.
    growth
        Factors between consecutive block sizes (powers of two keep BINARY exact); the last one is
        repeated if there are more passes.
    biconf_subsets
        Random subsets per BICONF batch (1 … 32); the stopping batch must be all-even.
    max_biconf_batches
        Safety cap on BICONF batches.
    shuffle_first_pass
        Permute pass 1 too (protects against bursty errors; costs one permutation).
    block_parity_inference
        Infer the last block parity of passes ≥ 2 from the (even) total.
    """

    seed: int = 0
    n_passes: int = 3
    block_sizes: tuple[int, ...] | None = None
    alpha: float = 0.70
    growth: tuple[int, ...] = (8, 8)
    biconf_subsets: int = 20
    max_biconf_batches: int = 64
    shuffle_first_pass: bool = True
    block_parity_inference: bool = True

    def __post_init__(self) -> None:
        if not 0 <= int(self.seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if not 1 <= self.n_passes <= 16:
            raise ValueError(f"n_passes must be in [1, 16], got {self.n_passes}")
        if self.block_sizes is not None:
            if len(self.block_sizes) == 0 or any(int(k) < 1 for k in self.block_sizes):
                raise ValueError(f"block_sizes must be positive integers, got {self.block_sizes}")
        if not 0.01 <= self.alpha <= 100:
            raise ValueError(f"alpha must be in [0.01, 100], got {self.alpha}")
        if len(self.growth) == 0 or any(int(g) < 1 for g in self.growth):
            raise ValueError(f"growth factors must be integers >= 1, got {self.growth}")
        if not 1 <= self.biconf_subsets <= _MAX_SUBSETS:
            raise ValueError(f"biconf_subsets must be in [1, {_MAX_SUBSETS}], got {self.biconf_subsets}")
        if not 1 <= self.max_biconf_batches <= 10_000:
            raise ValueError(f"max_biconf_batches must be in [1, 10000], got {self.max_biconf_batches}")


@dataclass(repr=False)
class CascadeResult(ECResult):
    """:class:`~.result.ECResult` of a Cascade run plus Cascade counters.

    ``leak_bits`` is the number of parity answers Alice returned plus the comparison outcomes Bob
    disclosed (one per answer, :meth:`CascadeBob.take_outcomes`), split in ``leak_by_party``;
    ``round_trips`` the number of
    answered query batches; ``bytes_up``/``bytes_down`` the sizes of :func:`encode_queries` /
    :func:`encode_answers` of every batch.
    """

    n_errors_corrected: int = 0
    n_passes_run: int = 0
    n_biconf_batches: int = 0
    block_sizes: tuple[int, ...] = ()
    seconds: float = 0.0

    @property
    def corrected_bits(self) -> np.ndarray:
        """Bob's corrected key (alias of ``bob_bits``)."""
        return self.bob_bits

    def __repr__(self) -> str:
        extra = "" if self.residual_errors is None else f", residual_errors={self.residual_errors}"
        return (
            f"CascadeResult(n={self.bob_bits.size}, corrected={self.n_errors_corrected}, "
            f"leak_bits={self.leak_bits}, round_trips={self.round_trips}, bytes_up={self.bytes_up}, "
            f"bytes_down={self.bytes_down}, block_sizes={self.block_sizes}, "
            f"biconf_batches={self.n_biconf_batches}{extra})"
        )


def default_block_sizes(params: CascadeParams, qber_estimate: float, n_bits: int) -> tuple[int, ...]:
    """Block sizes of the shuffled passes for an estimated QBER and key length.

    Rule after [MM15] (opt. (7)/(8)): ``k1 = 2^ceil(log2(alpha/Q))``, then
    ``k_{i+1} = growth_i · k_i``; every size is capped at ``n_bits`` (a block may be the whole key).
    ``Q`` is clamped to ``[1e-5, 0.25]``.

    >>> default_block_sizes(CascadeParams(), 0.011, 10**6)
    (64, 512, 4096)
    """
    if not 0.0 <= qber_estimate < 0.5:
        raise ValueError(f"qber_estimate must be in [0, 0.5), got {qber_estimate}")
    if n_bits < 1:
        raise ValueError(f"n_bits must be >= 1, got {n_bits}")
    if params.block_sizes is not None:
        sizes = [int(k) for k in params.block_sizes]
        sizes += [sizes[-1]] * (params.n_passes - len(sizes))
        sizes = sizes[: params.n_passes]
    else:
        q = min(max(qber_estimate, 1e-5), 0.25)
        k = 2 ** max(0, math.ceil(math.log2(params.alpha / q) - 1e-9))
        sizes = [k]
        for i in range(1, params.n_passes):
            g = params.growth[min(i - 1, len(params.growth) - 1)]
            k = k * int(g)
            sizes.append(k)
    return tuple(max(1, min(int(k), n_bits)) for k in sizes)


def biconf_pass_id(params: CascadeParams, batch: int, plane: int, complement: bool) -> int:
    """Wire id of BICONF subset ``plane`` (0 … 31) of batch ``batch`` (or of its complement)."""
    return params.n_passes + 2 * (_MAX_SUBSETS * batch + plane) + int(complement)


def _pass_rng(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), kind, index])))


# --------------------------------------------------------------------------------------------
# numba kernels shared by both parties
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _fisher_yates(r: np.ndarray) -> np.ndarray:
    """Uniform permutation of ``0..n-1`` from ``n`` uniform uint32 draws (Durstenfeld shuffle,
    index by multiply-shift, Lemire 2019 — bias ≤ n/2^32, irrelevant here)."""
    n = r.size
    p = np.empty(n, np.int32)
    for i in range(n):
        p[i] = i
    for i in range(n - 1, 0, -1):
        j = (np.uint64(r[i]) * np.uint64(i + 1)) >> np.uint64(32)
        t = p[i]
        p[i] = p[j]
        p[j] = t
    return p


@njit(cache=True)
def _prefix_parity(bits: np.ndarray, order: np.ndarray, pre: np.ndarray) -> None:
    """``pre[i]`` = parity of ``bits[order[:i]]`` (Alice's key is fixed: O(1) range parities)."""
    acc = np.uint8(0)
    pre[0] = 0
    for i in range(order.size):
        acc ^= bits[order[i]]
        pre[i + 1] = acc


@njit(cache=True)
def _gather_inverse(bits, order, pbits, inv):
    """``pbits = bits[order]`` and ``inv`` = inverse permutation, in place."""
    for i in range(order.size):
        o = order[i]
        pbits[i] = bits[o]
        inv[o] = i


@njit(cache=True)
def _block_parities(pbits: np.ndarray, bstart: np.ndarray) -> np.ndarray:
    nb = bstart.size - 1
    out = np.zeros(nb, np.uint8)
    for b in range(nb):
        acc = np.uint8(0)
        for i in range(bstart[b], bstart[b + 1]):
            acc ^= pbits[i]
        out[b] = acc
    return out


@njit(cache=True)
def _plane_parities(bits: np.ndarray, planes: np.ndarray) -> np.uint32:
    """Bit ``j`` of the result = parity of ``bits`` over the subset ``{i : planes[i] bit j set}``."""
    w = np.uint32(0)
    for i in range(bits.size):
        if bits[i]:
            w ^= planes[i]
    return w


@njit(cache=True)
def _masked_range_parity(bits, planes, plane, complement, lo, hi) -> np.uint8:
    acc = np.uint8(0)
    m = np.uint32(1) << np.uint32(plane)
    want = np.uint32(0) if complement else m
    for i in range(lo, hi):
        if (planes[i] & m) == want:
            acc ^= bits[i]
    return acc


@njit(cache=True)
def _split_members(planes: np.ndarray, plane: int) -> tuple[np.ndarray, int]:
    """Order of a BICONF pass: members of subset ``plane`` ascending, then non-members ascending."""
    n = planes.size
    m = np.uint32(1) << np.uint32(plane)
    cnt = 0
    for i in range(n):
        if planes[i] & m:
            cnt += 1
    order = np.empty(n, np.int32)
    a = 0
    b = cnt
    for i in range(n):
        if planes[i] & m:
            order[a] = i
            a += 1
        else:
            order[b] = i
            b += 1
    return order, cnt


# --------------------------------------------------------------------------------------------
# Bob's bisection engine (numba)
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _push(q, qn, p, b, h):
    n = qn[0]
    if n >= q.shape[0]:
        q2 = np.empty((2 * q.shape[0] + 64, 3), np.int64)
        q2[:n] = q[:n]
        q = q2
    q[n, 0] = p
    q[n, 1] = b
    q[n, 2] = h
    qn[0] = n + 1
    return q


class _Engine(NamedTuple):
    """Bob's arrays, one namedtuple so the numba kernels take one argument.

    Local pass ``p`` (shuffled passes first, then opened BICONF subsets) has its order
    ``orders[p]``, inverse ``invs[p]``, Bob's current bits in that order ``pbits[p]`` (so range
    parities are contiguous scans; kept in step on every flip), block starts ``bflat[boff[p]:boff[p+1]]``, uniform
    block size ``ksz[p]`` (0 = use the starts), and its bisection trees in
    ``sflat[soff[p] + b*strides[p] + h]`` (heap index ``h``, root 1). ``wire[p]`` are the pass
    ids of blocks 0 / 1 on the wire (``-1``: the pass id applies to every block, ranges in pass
    order). ``cnt`` = [flips, known odd nodes, safety sweeps, inconsistency flag]; ``orig`` is
    Bob's input key (a bit can be wrong only once: a second flip proves inconsistent answers).
    """

    bits: np.ndarray
    orig: np.ndarray
    orders: np.ndarray
    invs: np.ndarray
    pbits: np.ndarray
    bflat: np.ndarray
    boff: np.ndarray
    sflat: np.ndarray
    soff: np.ndarray
    strides: np.ndarray
    ksz: np.ndarray
    wire: np.ndarray
    npass: int
    planes: np.ndarray
    roots: np.ndarray
    total: np.ndarray
    cnt: np.ndarray


@njit(cache=True)
def _block_of(E, p, pos):
    k = E.ksz[p]
    if k > 0:
        return pos // k
    b0 = E.boff[p]
    lo = 0
    hi = E.boff[p + 1] - b0 - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if E.bflat[b0 + mid] <= pos:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True)
def _node_range(lo, hi, h):
    """Range ``[lo, hi)`` of heap node ``h`` in a block ``[lo, hi)``; the left child gets the
    larger half."""
    d = 0
    t = h
    while t > 1:
        t >>= 1
        d += 1
    for i in range(d - 1, -1, -1):
        mid = lo + (hi - lo + 1) // 2
        if (h >> i) & 1:
            lo = mid
        else:
            hi = mid
    return lo, hi


@njit(cache=True)
def _block_node_range(E, p, b, h):
    b0 = E.boff[p] + b
    return _node_range(E.bflat[b0], E.bflat[b0 + 1], h)


@njit(cache=True)
def _range_parity(pbits, p, lo, hi):
    acc = np.uint8(0)
    for i in range(lo, hi):
        acc ^= pbits[p, i]
    return acc


@njit(cache=True)
def _flip(E, x, q, qn):
    """Correct bit ``x`` and toggle the mismatch of every known node containing it (cascade);
    nodes that became odd are queued in ``q``.

    With honest answers every flip fixes a wrong bit, so no bit is flipped twice; if that
    happens the answers are inconsistent (wrong seed, corrupted channel): flag and stop.
    """
    if E.bits[x] != E.orig[x] or E.cnt[3]:
        E.cnt[3] = 1
        return q
    E.bits[x] ^= np.uint8(1)
    E.total[0] ^= 1
    E.cnt[0] += 1
    if E.planes.size > 0:
        E.roots[0] ^= E.planes[x]
    st = E.sflat
    for p in range(E.npass):
        pos = E.invs[p, x]
        E.pbits[p, pos] ^= np.uint8(1)
        b = _block_of(E, p, pos)
        lo = E.bflat[E.boff[p] + b]
        hi = E.bflat[E.boff[p] + b + 1]
        base = E.soff[p] + b * E.strides[p]
        h = 1
        while True:
            s = st[base + h]
            if (s & _KNOWN) == 0:
                break
            s ^= _ODD
            st[base + h] = s
            if s & _ODD:
                E.cnt[1] += 1
                if not (s & _CLAIMED):
                    q = _push(q, qn, p, b, h)
            else:
                E.cnt[1] -= 1
            if hi - lo <= 1:
                break
            mid = lo + (hi - lo + 1) // 2
            if pos < mid:
                hi = mid
                h = 2 * h
            else:
                lo = mid
                h = 2 * h + 1
    return q


@njit(cache=True)
def _descend(E, p, b, h, q, qn, out, outn):
    """Advance the bisection that holds (claims) node ``h`` as far as known parities allow.

    Either it reaches a single bit (corrected; the cascade queues re-opened nodes), or it stops
    (node even, or another bisection already works below), or it needs the parity of the left
    child of its node: then it is appended to ``out`` (pending) and Bob asks Alice for it.
    """
    st = E.sflat
    base = E.soff[p] + b * E.strides[p]
    lo, hi = _block_node_range(E, p, b, h)
    while True:
        s = st[base + h]
        if (s & _ODD) == 0:
            st[base + h] = s & ~_CLAIMED
            return q, out
        if hi - lo == 1:
            st[base + h] = s & ~_CLAIMED
            q = _flip(E, E.orders[p, lo], q, qn)
            return q, out
        mid = lo + (hi - lo + 1) // 2
        sl = st[base + 2 * h]
        if sl & _KNOWN:
            st[base + h] = s & ~_CLAIMED
            if sl & _ODD:
                nxt = 2 * h
                hi = mid
            else:
                nxt = 2 * h + 1
                lo = mid
            if st[base + nxt] & _CLAIMED:
                return q, out
            st[base + nxt] |= _CLAIMED
            h = nxt
            continue
        out = _push(out, outn, p, b, h)
        return q, out


@njit(cache=True)
def _bob_round(E, pend, ans, cand):
    """One round of Bob's engine: apply Alice's answers to the pending bisections, advance every
    bisection and every re-opened (odd) known node, and return the new pending set.

    Returns ``(pending (m,3) [pass, block, node], queries (3,m) [pass id, start, stop],
    outcomes)`` with the queries sorted by ``(pass id, start)``: ``[start, stop)`` is the range
    whose parity Bob needs next, on the wire (pass order for shuffled passes, natural order for
    BICONF subsets); ``outcomes[i]`` is Bob's comparison of answer ``i`` (Alice's parity XOR his,
    1 = the left half is odd) — the only way his key enters his next queries.
    """
    st = E.sflat
    qn = np.zeros(1, np.int64)
    q = np.empty((max(64, 2 * cand.shape[0]), 3), np.int64)
    for i in range(cand.shape[0]):
        q = _push(q, qn, cand[i, 0], cand[i, 1], cand[i, 2])
    outn = np.zeros(1, np.int64)
    out = np.empty((max(64, pend.shape[0]), 3), np.int64)
    outcomes = np.zeros(pend.shape[0], np.uint8)
    # 1) apply the answers: both children become known
    for i in range(pend.shape[0]):
        p = pend[i, 0]
        b = pend[i, 1]
        h = pend[i, 2]
        base = E.soff[p] + b * E.strides[p]
        lo, hi = _block_node_range(E, p, b, h)
        mid = lo + (hi - lo + 1) // 2
        ml = ans[i] ^ _range_parity(E.pbits, p, lo, mid)
        outcomes[i] = ml
        mh = (st[base + h] >> 1) & 1
        mr = ml ^ mh
        st[base + 2 * h] = _KNOWN | (np.uint8(ml) << 1)
        st[base + 2 * h + 1] = _KNOWN | (np.uint8(mr) << 1)
        E.cnt[1] += ml + mr
        if mh == 0 and ml == 1:
            # the node turned even while we waited (a cascade flip) but holds two odd halves
            q = _push(q, qn, p, b, 2 * h)
            q = _push(q, qn, p, b, 2 * h + 1)
    # 2) continue the answered bisections
    for i in range(pend.shape[0]):
        q, out = _descend(E, pend[i, 0], pend[i, 1], pend[i, 2], q, qn, out, outn)
    # 3) re-opened blocks (cascade) and new odd blocks
    head = 0
    while True:
        while head < qn[0] and E.cnt[3] == 0:
            p = q[head, 0]
            b = q[head, 1]
            h = q[head, 2]
            head += 1
            j = E.soff[p] + b * E.strides[p] + h
            s = st[j]
            if (s & _KNOWN) and (s & _ODD) and not (s & _CLAIMED):
                st[j] = s | _CLAIMED
                q, out = _descend(E, p, b, h, q, qn, out, outn)
        if outn[0] > 0 or E.cnt[1] == 0 or E.cnt[3]:
            break
        # safety net (never triggered in the tests): nothing pending but odd known nodes remain
        E.cnt[2] += 1
        for p in range(E.npass):
            stride = E.strides[p]
            for j in range(E.soff[p], E.soff[p + 1]):
                if (st[j] & 7) == 3:
                    r = j - E.soff[p]
                    q = _push(q, qn, p, r // stride, r % stride)
        if head == qn[0]:
            break
    # 4) the queries, on the wire, sorted by (pass id, start)
    m = outn[0] if E.cnt[3] == 0 else 0
    pid = np.empty(m, np.int64)
    qlo = np.empty(m, np.int64)
    qhi = np.empty(m, np.int64)
    for i in range(m):
        p = out[i, 0]
        b = out[i, 1]
        lo, hi = _block_node_range(E, p, b, out[i, 2])
        hi = lo + (hi - lo + 1) // 2
        if E.wire[p, 1] < 0:
            pid[i] = E.wire[p, 0]
            qlo[i] = lo
            qhi[i] = hi
        else:
            pid[i] = E.wire[p, 0] if b == 0 else E.wire[p, 1]
            qlo[i] = E.orders[p, lo]
            qhi[i] = E.orders[p, hi - 1] + 1
    key = pid * (E.bits.size + 1) + qlo
    srt = np.argsort(key)
    pend_out = np.empty((m, 3), np.int64)
    queries = np.empty((3, m), np.int64)
    for i in range(m):
        j = srt[i]
        pend_out[i, 0] = out[j, 0]
        pend_out[i, 1] = out[j, 1]
        pend_out[i, 2] = out[j, 2]
        queries[0, i] = pid[j]
        queries[1, i] = qlo[j]
        queries[2, i] = qhi[j]
    return pend_out, queries, outcomes


@njit(cache=True)
def _set_roots(E, p, mism):
    for b in range(mism.size):
        E.sflat[E.soff[p] + b * E.strides[p] + 1] = _KNOWN | (np.uint8(mism[b]) << 1)
        E.cnt[1] += mism[b]


# --------------------------------------------------------------------------------------------
# wire format
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _put_varint(out, k, v):
    v = np.uint64(v)
    while v >= 128:
        out[k] = np.uint8((v & np.uint64(127)) | np.uint64(128))
        v >>= np.uint64(7)
        k += 1
    out[k] = np.uint8(v)
    return k + 1


@njit(cache=True)
def _zig(v):
    return (v << 1) ^ (v >> 63)


@njit(cache=True)
def _encode_queries_nb(q):
    m = q.shape[1]
    out = np.empty(30 * m + 20, np.uint8)
    runs = 0
    for i in range(m):
        if i == 0 or q[0, i] != q[0, i - 1]:
            runs += 1
    k = _put_varint(out, 0, m)
    k = _put_varint(out, k, runs)
    prev = 0
    i = 0
    while i < m:
        j = i
        while j < m and q[0, j] == q[0, i]:
            j += 1
        k = _put_varint(out, k, _zig(q[0, i] - prev))
        k = _put_varint(out, k, j - i)
        prev = q[0, i]
        i = j
    prev_lo = 0
    for i in range(m):
        if i > 0 and q[0, i] != q[0, i - 1]:
            prev_lo = 0
        k = _put_varint(out, k, _zig(q[1, i] - prev_lo))
        k = _put_varint(out, k, q[2, i] - q[1, i])
        prev_lo = q[1, i]
    return out[:k].copy()


@njit(cache=True)
def _get_varint(buf, k):
    v = np.uint64(0)
    shift = np.uint64(0)
    while True:
        if k >= buf.size or shift > 63:
            return np.int64(-1), -1
        c = np.uint64(buf[k])
        k += 1
        v |= (c & np.uint64(127)) << shift
        if c < 128:
            break
        shift += np.uint64(7)
    if v >= np.uint64(2**62):
        return np.int64(-1), -1
    return np.int64(v), k


@njit(cache=True)
def _decode_queries_nb(buf):
    """Returns ``(queries (3, m), status)``; status 0 = ok."""
    bad = np.zeros((3, 0), np.int64)
    m, k = _get_varint(buf, 0)
    if k < 0 or m > buf.size:
        return bad, 1
    runs, k = _get_varint(buf, k)
    if k < 0 or runs > m or (m > 0 and runs == 0):
        return bad, 1
    q = np.empty((3, m), np.int64)
    prev = 0
    i = 0
    for r in range(runs):
        z, k = _get_varint(buf, k)
        if k < 0:
            return bad, 1
        c, k = _get_varint(buf, k)
        if k < 0 or c == 0 or i + c > m:
            return bad, 1
        pid = prev + ((z >> 1) ^ -(z & 1))
        for j in range(i, i + c):
            q[0, j] = pid
        prev = pid
        i += c
    if i != m:
        return bad, 1
    prev_lo = 0
    for i in range(m):
        if i > 0 and q[0, i] != q[0, i - 1]:
            prev_lo = 0
        z, k = _get_varint(buf, k)
        if k < 0:
            return bad, 1
        ln, k = _get_varint(buf, k)
        if k < 0:
            return bad, 1
        lo = prev_lo + ((z >> 1) ^ -(z & 1))
        q[1, i] = lo
        q[2, i] = lo + ln
        prev_lo = lo
    if k != buf.size:
        return bad, 1
    return q, 0


def encode_queries(queries: np.ndarray) -> bytes:
    """Serialize a query batch ``(3, m)`` compactly (its length is counted as ``bytes_up``).

    LEB128 varints: ``m``; the runs of equal pass id as (zig-zag delta of the id, run length);
    then per query the zig-zag delta of ``start`` to the previous start of the same run and
    ``stop − start``. Bob sends queries sorted by (pass id, start), so a bisection level costs
    about 2–3 bytes per query.
    """
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[0] != 3 or (q.size and q.dtype.kind not in "iu"):
        raise ValueError(f"queries must be an integer array of shape (3, m), got {q.shape}")
    q = np.ascontiguousarray(q, dtype=np.int64)
    if q.size and (q.min() < 0 or np.any(q[2] < q[1])):
        raise ValueError("queries must have non-negative pass ids and 0 <= start <= stop")
    return _encode_queries_nb(q).tobytes()


def decode_queries(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_queries`; raises ``ValueError`` on malformed input."""
    q, status = _decode_queries_nb(np.frombuffer(data, dtype=np.uint8))
    if status:
        raise ValueError("malformed query batch")
    return q


def encode_answers(answers: np.ndarray) -> bytes:
    """Alice's parities packed 8 per byte (the size counted as ``bytes_down``)."""
    return np.packbits(np.asarray(answers, dtype=np.uint8)).tobytes()


def decode_answers(data: bytes, m: int) -> np.ndarray:
    """Inverse of :func:`encode_answers` for a batch of ``m`` queries."""
    a = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if a.size != 8 * packed_bytes(m):
        raise ValueError(f"answer batch has {len(data)} bytes, expected {packed_bytes(m)} for {m} answers")
    return a[:m].astype(np.uint8)


# --------------------------------------------------------------------------------------------
# the two parties
# --------------------------------------------------------------------------------------------


def _shuffled_order(seed: int, p: int, n: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int32)
    r = _pass_rng(seed, 0, p).integers(0, 2**32, size=n, dtype=np.uint32)
    return _fisher_yates(r)


def _biconf_planes(seed: int, batch: int, n: int, n_subsets: int) -> np.ndarray:
    w = _pass_rng(seed, 1, batch).integers(0, 2**32, size=n, dtype=np.uint32)
    if n_subsets < 32:
        w &= np.uint32((1 << n_subsets) - 1)
    return w


@njit(cache=True)
def _answer_shuffled(prefixes, pid, lo, hi, out):
    for i in range(pid.size):
        out[i] = prefixes[pid[i], hi[i]] ^ prefixes[pid[i], lo[i]]


class CascadeAlice:
    """Alice's side: answers parity query batches from her (correct) key.

    Stateless towards Bob (she keeps only caches derived from her key and the public seed), so
    the protocol layer may call :meth:`answer` with any decoded batch. Malformed batches (shape,
    ranges, pass ids) raise ``ValueError`` before anything is disclosed.

    >>> a = np.array([1, 0, 1, 1], np.uint8)
    >>> alice = CascadeAlice(a, CascadeParams(seed=3, shuffle_first_pass=False))
    >>> alice.answer(np.array([[0, 0], [0, 1], [4, 3]])).tolist()   # parities of a[0:4], a[1:3]
    [1, 1]
    """

    def __init__(self, alice_bits: np.ndarray, params: CascadeParams):
        self.bits = as_bits(alice_bits, "alice_bits")
        self.params = params
        self.n = self.bits.size
        self._prefixes = np.empty((params.n_passes, self.n + 1), np.uint8)
        self._n_prefixes = 0
        self._planes: dict[int, tuple[np.ndarray, int]] = {}
        self._total = int(np.bitwise_xor.reduce(self.bits)) if self.n else 0
        self.answered = 0
        self._max_pid = biconf_pass_id(params, params.max_biconf_batches - 1, params.biconf_subsets - 1, True)

    def _ensure_prefixes(self, upto: int) -> None:
        while self._n_prefixes <= upto:
            p = self._n_prefixes
            order = _shuffled_order(self.params.seed, p, self.n, p > 0 or self.params.shuffle_first_pass)
            _prefix_parity(self.bits, order, self._prefixes[p])
            self._n_prefixes += 1

    def _batch_planes(self, batch: int) -> tuple[np.ndarray, int]:
        got = self._planes.get(batch)
        if got is None:
            planes = _biconf_planes(self.params.seed, batch, self.n, self.params.biconf_subsets)
            got = (planes, int(_plane_parities(self.bits, planes)))
            self._planes = {batch: got}  # keep only the current batch
        return got

    def answer(self, queries: np.ndarray) -> np.ndarray:
        """Parities (``np.uint8``) of the ranges in ``queries`` (shape ``(3, m)``, see module doc)."""
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[0] != 3 or (q.size and q.dtype.kind not in "iu"):
            raise ValueError(f"queries must be an integer array of shape (3, m), got {q.shape} {q.dtype}")
        q = q.astype(np.int64, copy=False)
        pid, lo, hi = q
        m = q.shape[1]
        out = np.empty(m, np.uint8)
        if m == 0:
            return out
        if lo.min() < 0 or hi.max() > self.n or np.any(lo >= hi):
            raise ValueError(f"query ranges must satisfy 0 <= start < stop <= {self.n}")
        pmin, pmax = int(pid.min()), int(pid.max())
        if pmin < 0 or pmax > self._max_pid:
            raise ValueError(f"query pass ids must be in [0, {self._max_pid}]")
        P = self.params.n_passes
        if pmax < P:  # the common case: only shuffled passes
            self._ensure_prefixes(pmax)
            _answer_shuffled(self._prefixes, pid, lo, hi, out)
        else:
            for p in np.unique(pid):
                idx = np.flatnonzero(pid == p)
                if p < P:
                    self._ensure_prefixes(int(p))
                    out[idx] = self._prefixes[int(p), hi[idx]] ^ self._prefixes[int(p), lo[idx]]
                    continue
                rel = int(p) - P
                comp = rel & 1
                batch, plane = divmod(rel >> 1, _MAX_SUBSETS)
                if plane >= self.params.biconf_subsets:
                    raise ValueError(f"BICONF subset {plane} not in use (biconf_subsets={self.params.biconf_subsets})")
                planes, word = self._batch_planes(batch)
                for i in idx:
                    if lo[i] == 0 and hi[i] == self.n:
                        par = (word >> plane) & 1
                        out[i] = par ^ self._total if comp else par
                    else:
                        out[i] = _masked_range_parity(self.bits, planes, plane, bool(comp), lo[i], hi[i])
        self.answered += m
        return out


class CascadeBob:
    """Bob's side: drives Cascade by asking parity batches through ``ask``.

    ``qber_estimate`` (from parameter estimation) sets the block sizes; it need not be exact
    (see the tests with 0.8× and 1.2× the true QBER). One :class:`CascadeBob` runs once.
    """

    def __init__(self, bob_bits: np.ndarray, params: CascadeParams, qber_estimate: float):
        self.bits = as_bits(bob_bits, "bob_bits").copy()
        if not 0.0 <= float(qber_estimate) < 0.5:
            raise ValueError(f"qber_estimate must be in [0, 0.5), got {qber_estimate}")
        self.params = params
        self.qber_estimate = float(qber_estimate)
        self.n = self.bits.size
        self.block_sizes = default_block_sizes(params, self.qber_estimate, max(self.n, 1))
        # per local pass (shuffled passes, then opened BICONF subsets): see _Engine
        n = max(self.n, 1)
        cap = self.params.n_passes + 2
        self._orders = np.empty((cap, n), np.int32)
        self._invs = np.empty((cap, n), np.int32)
        self._pbits = np.empty((cap, n), np.uint8)
        self._bstarts: list[np.ndarray] = []
        self._soff = [0]
        self._strides: list[int] = []
        self._ksz: list[int] = []
        self._wire: list[tuple[int, int]] = []  # local pass -> (id of block 0, id of block 1 or -1)
        core = 0
        for k in self.block_sizes:
            core += -(-n // k) * self._stride_for(k)
        self._sflat = np.zeros(core + 2 * self._stride_for(n), np.uint8)  # pages mapped on use
        self._planes = np.zeros(0, np.uint32)
        self._roots = np.zeros(1, np.uint32)
        self._total = np.zeros(1, np.int64)
        self._orig = self.bits.copy()
        self._cnt = np.zeros(4, np.int64)  # flips, known odd nodes, safety sweeps, inconsistent
        self._used = False
        # accounting: Alice's answers, and Bob's outcomes (one per answer; see take_outcomes)
        self.leak_bits = 0
        self.bob_bits_disclosed = 0
        self._outcomes: list[np.ndarray] = []
        self._owed = 0
        self.round_trips = 0
        self.bytes_up = 0
        self.bytes_down = 0

    # -- plumbing ---------------------------------------------------------------------------
    def _record_outcomes(self, outc) -> None:
        o = np.asarray(outc, dtype=np.uint8) & np.uint8(1)
        self._outcomes.append(o)
        self._owed -= int(o.size)
        self.bob_bits_disclosed += int(o.size)

    def take_outcomes(self) -> np.ndarray:
        """Bob's comparison outcomes since the last call, one per answer, in answer order.

        Bob's queries are a deterministic function of the public parameters (seed, block sizes
        from the public QBER estimate), Alice's answers and these outcomes (``Alice's parity XOR
        Bob's parity`` of each answered range, at the time it was answered): they are what his key
        discloses through his choices (Tupkary & Lütkenhaus, Phys. Rev. Applied 20, 064040 (2023)).
        The protocol sends them with his next query batch (or his last message), so they are
        counted on the wire; the helper :func:`reconcile` counts them in ``leak_bits`` too.
        """
        if self._owed:
            raise RuntimeError("outcomes of the last answers are not known yet")
        out = np.concatenate(self._outcomes) if self._outcomes else np.zeros(0, np.uint8)
        self._outcomes = []
        return out

    def _ask(self, ask, queries: np.ndarray) -> np.ndarray:
        if self._owed:
            raise RuntimeError("outcomes of the previous answers were not recorded")
        ans = np.asarray(ask(queries))
        self._owed = int(queries.shape[1])
        if ans.shape != (queries.shape[1],):
            raise ValueError(f"ask returned shape {ans.shape}, expected ({queries.shape[1]},)")
        self.round_trips += 1
        self.leak_bits += int(ans.size)
        self.bytes_up += len(encode_queries(queries))
        self.bytes_down += packed_bytes(ans.size)
        return np.ascontiguousarray(ans, dtype=np.uint8) & np.uint8(1)

    @staticmethod
    def _stride_for(kmax: int) -> int:
        """Heap slots per block: ``2 K`` with ``K`` the power of two ≥ the largest block."""
        return 2 * (1 << max(0, math.ceil(math.log2(max(kmax, 1)))))

    def _add_pass(self, order, bstart, ksz, wire) -> int:
        lp = len(self._strides)
        if lp == self._orders.shape[0]:  # grow (only after many opened BICONF subsets)
            self._orders = np.concatenate([self._orders, np.empty_like(self._orders[:4])])
            self._invs = np.concatenate([self._invs, np.empty_like(self._invs[:4])])
            self._pbits = np.concatenate([self._pbits, np.empty_like(self._pbits[:4])])
        self._orders[lp] = order
        _gather_inverse(self.bits, self._orders[lp], self._pbits[lp], self._invs[lp])
        nb = bstart.size - 1
        stride = self._stride_for(int(np.max(np.diff(bstart))) if nb else 1)
        end = self._soff[-1] + nb * stride
        if end > self._sflat.size:
            grown = np.zeros(max(end, 2 * self._sflat.size), np.uint8)
            grown[: self._soff[-1]] = self._sflat[: self._soff[-1]]
            self._sflat = grown
        self._soff.append(end)
        self._bstarts.append(bstart.astype(np.int64))
        self._strides.append(stride)
        self._ksz.append(ksz)
        self._wire.append(wire)
        return lp

    def _engine(self) -> _Engine:
        boff = np.cumsum([0] + [b.size for b in self._bstarts]).astype(np.int64)
        return _Engine(self.bits, self._orig, self._orders, self._invs, self._pbits,
                       np.concatenate(self._bstarts), boff, self._sflat, np.array(self._soff, np.int64), np.array(self._strides, np.int64),
                       np.array(self._ksz, np.int64), np.array(self._wire, np.int64).reshape(-1, 2),
                       len(self._strides), self._planes, self._roots, self._total, self._cnt)

    def _start_pass(self, ask, lp: int, mism: np.ndarray) -> None:
        """Set the (disclosed or inferred) block mismatches of pass ``lp``; bisect odd blocks."""
        E = self._engine()
        _set_roots(E, lp, mism)
        odd = np.flatnonzero(mism)
        cand = np.stack([np.full(odd.size, lp), odd, np.ones(odd.size, np.int64)], axis=1).astype(np.int64)
        pend = np.zeros((0, 3), np.int64)
        ans = np.zeros(0, np.uint8)
        while True:
            pend, queries, outc = _bob_round(E, pend, ans, cand)
            if ans.size:
                self._record_outcomes(outc)
            cand = np.zeros((0, 3), np.int64)
            if self._cnt[3]:
                raise CascadeError("inconsistent parity answers (a bit would be corrected twice): "
                                   "the parties' seeds, keys or channel disagree; abort this frame")
            if pend.shape[0] == 0:
                return
            ans = self._ask(ask, queries)

    # -- protocol ---------------------------------------------------------------------------
    def _shuffled_pass(self, ask, p: int) -> None:
        n = self.n
        k = self.block_sizes[p]
        order = _shuffled_order(self.params.seed, p, n, p > 0 or self.params.shuffle_first_pass)
        bstart = np.unique(np.minimum(np.arange(0, n + k, k, dtype=np.int64), n))
        lp = self._add_pass(order, bstart, k, (p, -1))
        nb = bstart.size - 1
        bob_par = _block_parities(self._pbits[lp], bstart)
        infer = self.params.block_parity_inference and p > 0
        nq = nb - 1 if infer else nb
        mism = np.zeros(nb, np.uint8)
        if nq > 0:
            q = np.stack([np.full(nq, p, np.int64), bstart[:nq], bstart[1 : nq + 1]])
            mism[:nq] = self._ask(ask, q) ^ bob_par[:nq]
            self._record_outcomes(mism[:nq])
        if infer:
            # every known block is even after pass 1, so the total error parity is 0
            mism[nb - 1] = np.bitwise_xor.reduce(mism[: nb - 1]) if nb > 1 else 0
        self._total[0] = int(np.bitwise_xor.reduce(mism))
        self._start_pass(ask, lp, mism)

    def _biconf_batch(self, ask, batch: int) -> bool:
        """One batch of random-subset checks; returns True if an error was found in it."""
        s = self.params.biconf_subsets
        self._planes = _biconf_planes(self.params.seed, batch, self.n, s)
        self._total[0] = 0  # every known block is even here
        bob_word = int(_plane_parities(self.bits, self._planes))
        pids = [biconf_pass_id(self.params, batch, j, False) for j in range(s)]
        q = np.stack([np.array(pids, np.int64), np.zeros(s, np.int64), np.full(s, self.n, np.int64)])
        a = self._ask(ask, q)
        alice_word = int(np.sum(a.astype(np.uint64) << np.arange(s, dtype=np.uint64)))
        self._roots[0] = np.uint32(alice_word ^ bob_word)
        self._record_outcomes(((alice_word ^ bob_word) >> np.arange(s)) & 1)
        activated = 0
        found = False
        while True:
            odd = int(self._roots[0]) & ~activated & ((1 << s) - 1)
            if odd == 0:
                break
            # one subset at a time: its corrections (subset and complement) usually settle the rest
            j = (odd & -odd).bit_length() - 1
            activated |= 1 << j
            found = True
            order, m = _split_members(self._planes, j)
            sub = (int(self._roots[0]) >> j) & 1
            if 0 < m < self.n:
                bstart = np.array([0, m, self.n], np.int64)
                mism = np.array([sub, sub ^ int(self._total[0])], np.uint8)
            else:  # empty or full subset (tiny keys): one block, its parity is the total
                bstart = np.array([0, self.n], np.int64)
                mism = np.array([int(self._total[0])], np.uint8)
            wire = (biconf_pass_id(self.params, batch, j, m == 0), biconf_pass_id(self.params, batch, j, True))
            lp = self._add_pass(order, bstart, 0, wire)
            self._start_pass(ask, lp, mism)
        self._planes = np.zeros(0, np.uint32)
        return found

    def reconcile(self, ask: Callable[[np.ndarray], np.ndarray],
                  progress: Callable[[float, float], None] | None = None) -> CascadeResult:
        """Run the whole protocol; ``ask(queries) -> parities`` carries one round trip.

        ``queries`` is an ``int64`` array ``(3, m)``; ``ask`` must return ``m`` parities (0/1)
        computed by Alice (e.g. :meth:`CascadeAlice.answer` behind a channel).
        """
        if self._used:
            raise RuntimeError("a CascadeBob runs once; create a new one")
        self._used = True
        t0 = time.perf_counter()
        P = self.params.n_passes
        batches = 0
        if self.n > 0:
            for p in range(P):
                self._shuffled_pass(ask, p)
                if progress is not None:
                    progress(p + 1, P + 1)
            while batches < self.params.max_biconf_batches:
                found = self._biconf_batch(ask, batches)
                batches += 1
                if not found:
                    break
        if progress is not None:
            progress(P + 1, P + 1)
        return CascadeResult(
            method="cascade",
            bob_bits=self.bits,
            keep_mask=None,
            leak_bits=self.leak_bits + self.bob_bits_disclosed,
            leak_by_party={"alice": int(self.leak_bits), "bob": int(self.bob_bits_disclosed)},
            round_trips=self.round_trips,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            n_frames=1,
            n_errors_corrected=int(np.count_nonzero(self._orig != self.bits)),
            n_passes_run=P if self.n else 0,
            n_biconf_batches=batches,
            block_sizes=self.block_sizes,
            seconds=time.perf_counter() - t0,
            details={"qber_estimate": self.qber_estimate, "flips": int(self._cnt[0]),
                     "safety_sweeps": int(self._cnt[2]),
                     "biconf_passes_opened": len(self._wire) - P if self.n else 0},
        )


# --------------------------------------------------------------------------------------------
# convenience
# --------------------------------------------------------------------------------------------


def _seed_from(rng_or_seed) -> int:
    if isinstance(rng_or_seed, np.random.Generator):
        return int(rng_or_seed.integers(0, 2**63))
    s = int(rng_or_seed)
    if not 0 <= s < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {s}")
    return s


def reconcile(alice_bits: np.ndarray, bob_bits: np.ndarray, qber_estimate: float,
              rng_or_seed: np.random.Generator | int, params: CascadeParams | None = None) -> CascadeResult:
    """Run Cascade between an in-memory Alice and Bob.

    The public permutation seed is drawn from ``rng_or_seed`` (a ``Generator``) or is that int;
    it replaces ``params.seed``. Fills the simulation diagnostics ``residual_errors`` and
    ``undetected_frames`` (which a real party cannot know).

    >>> rng = np.random.default_rng(1)
    >>> a = rng.integers(0, 2, 20000, dtype=np.uint8)
    >>> b = a ^ (rng.random(a.size) < 0.02).astype(np.uint8)
    >>> r = reconcile(a, b, 0.02, rng)
    >>> r.residual_errors, r.leak_by_party["alice"] == r.details["answers"] == r.leak_by_party["bob"]
    (0, True)
    """
    a = as_bits(alice_bits, "alice_bits")
    b = as_bits(bob_bits, "bob_bits")
    if a.size != b.size:
        raise ValueError(f"alice_bits and bob_bits must have the same length, got {a.size} and {b.size}")
    params = dataclasses.replace(params or CascadeParams(), seed=_seed_from(rng_or_seed))
    alice = CascadeAlice(a, params)
    bob = CascadeBob(b, params, qber_estimate)
    res = bob.reconcile(alice.answer)
    res.details["answers"] = alice.answered
    res.residual_errors = int(np.count_nonzero(res.bob_bits != a))
    res.undetected_frames = int(res.residual_errors > 0)
    return res


def warmup() -> float:
    """Compile (or load from cache) every numba kernel; returns the seconds it took."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 3000, dtype=np.uint8)
    b = a.copy()
    b[rng.choice(a.size, 60, replace=False)] ^= 1
    reconcile(a, b, 0.02, 1)
    q = np.array([[0, 1], [0, 5], [3, 9]], np.int64)
    decode_queries(encode_queries(q))
    return time.perf_counter() - t0


def benchmark_cascade(n_bits: int, qber: float, seed: int, params: CascadeParams | None = None,
                      qber_estimate: float | None = None, repeats: int = 1) -> dict:
    """Time Cascade on a random key with binomial errors (JIT time excluded, reported).

    Alice and Bob run in one process on one core (both sides' work is timed: permutations,
    answers, Bob's engine, serialization sizes). With ``repeats > 1`` the same frame is
    reconciled again and the *fastest* wall time is reported (``seconds_median`` too).

    Returns ``bits, seconds, efficiency, frame_errors`` plus ``throughput_bps``, ``cpu_seconds``
    (process CPU time of the fastest run), ``leak_bits``, ``qber_actual``, ``efficiency``
    (``f = leak / (n h(qber_actual))``, both parties' disclosures), ``efficiency_alice_only`` (her
    parities alone: the figure usually quoted for Cascade, not a sound leak), ``efficiency_nominal``
    (with ``qber``), ``round_trips``,
    ``bytes_up``, ``bytes_down``, ``jit_seconds`` (compile or cache load of the numba kernels in
    this process), ``block_sizes``.
    """
    if not 1 <= n_bits <= 10**9:
        raise ValueError(f"n_bits must be in [1, 1e9], got {n_bits}")
    if not 0.0 < qber < 0.5:
        raise ValueError(f"qber must be in (0, 0.5), got {qber}")
    jit_s = warmup()
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n_bits, dtype=np.uint8)
    b = a ^ (rng.random(n_bits) < qber).astype(np.uint8)
    q_act = float(np.count_nonzero(a != b)) / n_bits
    pub_seed = _seed_from(rng)
    walls, cpus = [], []
    for _ in range(max(1, int(repeats))):
        t0, c0 = time.perf_counter(), time.process_time()
        res = reconcile(a, b, qber if qber_estimate is None else qber_estimate, pub_seed, params)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    best = int(np.argmin(walls))
    sec = walls[best]
    h = binary_entropy(q_act) if 0 < q_act < 0.5 else float("nan")
    return {
        "bits": int(n_bits),
        "seconds": sec,
        "seconds_median": float(np.median(walls)),
        "cpu_seconds": cpus[best],
        "throughput_bps": n_bits / sec,
        "efficiency": res.leak_bits / (n_bits * h) if h == h and h > 0 else float("nan"),
        "efficiency_alice_only": res.leak_by_party["alice"] / (n_bits * h) if h == h and h > 0 else float("nan"),
        "leak_by_party": dict(res.leak_by_party),
        "efficiency_nominal": res.leak_bits / (n_bits * binary_entropy(qber)),
        "frame_errors": int(res.residual_errors > 0),
        "residual_errors": int(res.residual_errors),
        "leak_bits": int(res.leak_bits),
        "qber_actual": q_act,
        "round_trips": int(res.round_trips),
        "bytes_up": int(res.bytes_up),
        "bytes_down": int(res.bytes_down),
        "biconf_batches": int(res.n_biconf_batches),
        "block_sizes": list(res.block_sizes),
        "jit_seconds": jit_s,
    }
