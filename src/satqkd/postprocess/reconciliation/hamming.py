"""Winnow: error correction with extended Hamming codes — the Micius paper's method.

Liao et al., Nature 549, 43 (2017), Methods: "after randomly shuffling the sifted key, a hamming
algorithm is used for error correction". The protocol that does this is *Winnow* (Buttler,
Lamoreaux, Torgerson, Nickel, Donahue, Peterson, "Fast, efficient error reconciliation for quantum
cryptography", PRA 67, 052303 (2003)):

1. Both parties permute the key with a public seed and cut it into blocks of ``N = 2^m`` bits:
   index 0 is an overall-parity bit, indices ``1 … N−1`` form a Hamming ``[2^m−1, 2^m−1−m]`` code.
2. Alice sends the parity of each block; Bob answers with the bitmap of blocks whose parity
   differs from his (an odd number of errors).
3. For those blocks Alice sends the ``m``-bit Hamming syndrome. The syndrome of a block is the XOR
   of the indices of its 1 bits, so Alice's XOR Bob's syndrome is the XOR of the error indices: one
   error is located exactly (index 0 when the syndromes agree); Bob flips that bit. Three or more
   errors make Bob flip a wrong bit; an even number of errors is invisible to the parity and left
   for a later pass.
4. Reshuffle and repeat, choosing the next block size from the error rate that remains, until a
   few passes in a row show no parity difference.

Leakage choice (documented, see the module's ``reconcile``): Buttler et al. keep the key secret by
*privacy maintenance* — discarding one bit per disclosed parity bit. We instead **count every
bit Alice discloses as leaked** and keep the key at full length. In the composable framework the
two are equivalent at best: ``H_min(X_K | E C) ≥ H_min(X | E) − |C| − (n − |K|)`` (chain rule for
the smooth min-entropy; Renner, PhD thesis, ETH 2005, Lemma 3.2.9 / Tomamichel et al. 2011), so
deleting bits never buys back what the transcript ``C`` disclosed unless one assumes Eve's
knowledge is bit-wise independent. Counting is the rigorous choice and gives all methods the same
interface (``keep_mask = None``). Bob's replies (the mismatch bitmaps) are functions of his
string, which is correlated with Alice's key, so they are **charged too**, one bit per block
(Tupkary & Lütkenhaus, Phys. Rev. Applied 20, 064040 (2023); ``docs/finite-key.md``, "EC leakage").

Hot paths are vectorised: one pass handles all blocks at once (XOR reductions over a
``(blocks, N)`` array).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .result import ECResult, as_bits, binary_entropy, packed_bytes

__all__ = [
    "WinnowSchedule",
    "PassPlan",
    "HammingAlice",
    "HammingBob",
    "reconcile",
    "block_syndromes",
    "block_parities",
    "expected_after_pass",
]

#: Smallest and default largest block exponent m (blocks of 2^m bits).
MIN_BLOCK_EXP = 3
DEFAULT_MAX_BLOCK_EXP = 12


def block_parities(blocks: np.ndarray) -> np.ndarray:
    """Parity (XOR) of each row of a ``(B, N)`` 0/1 array → ``(B,)`` uint8."""
    return np.bitwise_xor.reduce(blocks, axis=1).astype(np.uint8)


def block_syndromes(blocks: np.ndarray) -> np.ndarray:
    """Hamming syndrome of each row of a ``(B, 2^m)`` 0/1 array: XOR of the indices of its 1 bits.

    Column ``i`` of the parity-check matrix of the Hamming code is the binary expansion of ``i``, so
    ``H·x`` (as an integer) is the XOR of the indices where ``x_i = 1``; index 0 (the extended
    parity bit) contributes nothing. Returns ``(B,)`` int64 syndromes.
    """
    n = blocks.shape[1]
    idx = np.arange(n, dtype=np.int64)
    return np.bitwise_xor.reduce(blocks.astype(np.int64) * idx, axis=1)


def _syndrome_bits(syndromes: np.ndarray, m: int) -> np.ndarray:
    """Integer syndromes → ``(B, m)`` uint8 bit matrix (LSB first): the message on the wire."""
    return ((syndromes[:, None] >> np.arange(m)) & 1).astype(np.uint8)


def _syndrome_ints(bits: np.ndarray) -> np.ndarray:
    m = bits.shape[1]
    return (bits.astype(np.int64) << np.arange(m)).sum(axis=1)


def expected_after_pass(e: float, m: int) -> tuple[float, float]:
    """Error rate expected after one Winnow pass with blocks of ``N = 2^m`` at error rate ``e``,
    and the probability that a block has odd parity.

    With ``k ~ Binomial(N, e)`` errors in a block: ``k`` even → untouched; ``k = 1`` → corrected;
    odd ``k ≥ 3`` → Bob flips a bit that was right (``k + 1`` errors; coincidences neglected).
    So ``e' = (N e − 2 P(k=1) + P(k odd)) / N`` with ``P(k odd) = (1 − (1−2e)^N)/2``.
    """
    n = 1 << m
    p_odd = 0.5 * (1.0 - (1.0 - 2.0 * e) ** n)
    p1 = n * e * (1.0 - e) ** (n - 1)
    return max(0.0, (n * e - 2.0 * p1 + p_odd) / n), p_odd


def _choose_block_exp(e: float, n_bits: int, max_exp: int) -> int:
    """Block exponent maximising entropy removed per disclosed bit, ``N (h(e) − h(e')) / (1 + m P_odd)``.

    A greedy rule in the spirit of Buttler et al.'s QBER-dependent block schedule; at (near) zero
    error rate it picks the largest allowed block (cheapest check).
    """
    top = max(MIN_BLOCK_EXP, min(max_exp, int(np.floor(np.log2(max(n_bits, 8))))))
    if e <= 0.0:
        return top
    best_m, best_score = MIN_BLOCK_EXP, -np.inf
    he = binary_entropy(e)
    for m in range(MIN_BLOCK_EXP, top + 1):
        e2, p_odd = expected_after_pass(e, m)
        score = (1 << m) * (he - binary_entropy(min(e2, 0.5))) / (1.0 + m * p_odd)
        if score > best_score:
            best_m, best_score = m, score
    return best_m


@dataclass(frozen=True, eq=False)
class PassPlan:
    """One Winnow pass, identical on both sides: the permutation and the block exponent m."""

    index: int
    perm: np.ndarray
    m: int

    @property
    def block_size(self) -> int:
        return 1 << self.m

    def n_blocks(self, n_bits: int) -> int:
        return -(-n_bits // self.block_size)


class WinnowSchedule:
    """Public pass schedule both parties derive from the same seed and the same public messages.

    Parameters
    ----------
    n_bits
        Key length.
    qber_estimate
        Error rate from parameter estimation, in (0, 0.5).
    seed
        Public seed of the shuffles (exchanged over the authenticated channel).
    quiet_passes
        Stop after this many consecutive passes with no parity difference (≥ 1).
    max_block_exp
        Largest block is ``2^max_block_exp`` bits (3 … 20). Smaller caps make the final checks
        better at catching error pairs (a pair shares a block with probability ≈ N/n per pass).
    max_passes
        Safety limit on the number of passes (≥ 1).
    """

    def __init__(
        self,
        n_bits: int,
        qber_estimate: float,
        seed: int,
        *,
        quiet_passes: int = 3,
        max_block_exp: int = DEFAULT_MAX_BLOCK_EXP,
        max_passes: int = 100,
    ) -> None:
        if n_bits < 1:
            raise ValueError(f"n_bits must be ≥ 1, got {n_bits}")
        if not 0.0 < qber_estimate < 0.5:
            raise ValueError(f"qber_estimate must be in (0, 0.5), got {qber_estimate}")
        if quiet_passes < 1:
            raise ValueError(f"quiet_passes must be ≥ 1, got {quiet_passes}")
        if not MIN_BLOCK_EXP <= max_block_exp <= 20:
            raise ValueError(f"max_block_exp must be in [{MIN_BLOCK_EXP}, 20], got {max_block_exp}")
        if max_passes < 1:
            raise ValueError(f"max_passes must be ≥ 1, got {max_passes}")
        self.n_bits = int(n_bits)
        self.quiet_passes = quiet_passes
        self.max_block_exp = max_block_exp
        self.max_passes = max_passes
        self._rng = np.random.default_rng(seed)
        self._e = float(qber_estimate)
        self._quiet = 0
        self._index = 0
        self.current: PassPlan | None = None
        self.history: list[tuple[int, int]] = []  # (m, number of blocks with differing parity)

    @property
    def done(self) -> bool:
        return self._quiet >= self.quiet_passes or self._index >= self.max_passes

    def next_pass(self) -> PassPlan:
        if self.done:
            raise RuntimeError("Winnow schedule is finished")
        m = _choose_block_exp(self._e, self.n_bits, self.max_block_exp)
        self.current = PassPlan(self._index, self._rng.permutation(self.n_bits), m)
        self._index += 1
        return self.current

    def record(self, mismatch: np.ndarray) -> None:
        """Update the error-rate estimate from the public mismatch bitmap of the current pass."""
        plan = self.current
        if plan is None:
            raise RuntimeError("record() called before next_pass()")
        n_blocks = mismatch.size
        k = int(np.count_nonzero(mismatch))
        self.history.append((plan.m, k))
        self._quiet = self._quiet + 1 if k == 0 else 0
        p_odd = min(k / n_blocks, 0.499)
        e_hat = 0.5 * (1.0 - (1.0 - 2.0 * p_odd) ** (1.0 / plan.block_size))
        self._e = expected_after_pass(e_hat, plan.m)[0]
        self.current = None


def _blocks(bits: np.ndarray, plan: PassPlan) -> np.ndarray:
    """Permuted key, zero-padded to whole blocks, as a ``(B, N)`` array."""
    n = bits.size
    nb = plan.n_blocks(n)
    out = np.zeros(nb * plan.block_size, dtype=np.uint8)
    out[:n] = bits[plan.perm]
    return out.reshape(nb, plan.block_size)


class HammingAlice:
    """Alice's side of Winnow: holds the reference key, never changes it.

    Messages: :meth:`parities` (start of a pass) and :meth:`syndromes` (answer to Bob's bitmap).
    """

    def __init__(self, bits: np.ndarray, qber_estimate: float, seed: int, **schedule_kw) -> None:
        self.bits = as_bits(bits, "alice_bits")
        self.schedule = WinnowSchedule(self.bits.size, qber_estimate, seed, **schedule_kw)
        self._blocks: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.schedule.done

    def parities(self) -> np.ndarray:
        """Start the next pass; return the block parities (uint8 bits, one per block)."""
        plan = self.schedule.next_pass()
        self._blocks = _blocks(self.bits, plan)
        return block_parities(self._blocks)

    def syndromes(self, mismatch: np.ndarray) -> np.ndarray:
        """Hamming syndromes ``(k, m)`` (uint8 bits, LSB first) of the ``k`` flagged blocks."""
        plan = self.schedule.current
        if plan is None or self._blocks is None:
            raise RuntimeError("syndromes() called outside a pass")
        mismatch = np.asarray(mismatch, dtype=bool)
        if mismatch.shape != (self._blocks.shape[0],):
            raise ValueError(f"mismatch must have shape ({self._blocks.shape[0]},), got {mismatch.shape}")
        out = _syndrome_bits(block_syndromes(self._blocks[mismatch]), plan.m)
        self.schedule.record(mismatch)
        self._blocks = None
        return out


class HammingBob:
    """Bob's side of Winnow: corrects his key from Alice's parities and syndromes."""

    def __init__(self, bits: np.ndarray, qber_estimate: float, seed: int, **schedule_kw) -> None:
        self.bits = as_bits(bits, "bob_bits").copy()
        self.schedule = WinnowSchedule(self.bits.size, qber_estimate, seed, **schedule_kw)
        self._blocks: np.ndarray | None = None
        self._mismatch: np.ndarray | None = None
        self.flips = 0

    @property
    def done(self) -> bool:
        return self.schedule.done

    def on_parities(self, alice_parities: np.ndarray) -> np.ndarray:
        """Compare Alice's block parities with his own; return the mismatch bitmap (bool)."""
        plan = self.schedule.next_pass()
        self._blocks = _blocks(self.bits, plan)
        alice_parities = np.asarray(alice_parities, dtype=np.uint8)
        if alice_parities.shape != (self._blocks.shape[0],):
            raise ValueError(
                f"alice_parities must have shape ({self._blocks.shape[0]},), got {alice_parities.shape}"
            )
        self._mismatch = block_parities(self._blocks) != alice_parities
        return self._mismatch

    def on_syndromes(self, alice_syndromes: np.ndarray) -> None:
        """Locate one error per flagged block (Alice ⊕ Bob syndrome) and flip it."""
        plan = self.schedule.current
        if plan is None or self._blocks is None or self._mismatch is None:
            raise RuntimeError("on_syndromes() called outside a pass")
        rows = np.flatnonzero(self._mismatch)
        alice_syndromes = np.asarray(alice_syndromes, dtype=np.uint8).reshape(-1, plan.m)
        if alice_syndromes.shape[0] != rows.size:
            raise ValueError(f"expected {rows.size} syndromes, got {alice_syndromes.shape[0]}")
        pos = _syndrome_ints(alice_syndromes) ^ block_syndromes(self._blocks[rows])
        flat = rows * plan.block_size + pos
        real = flat < self.bits.size  # a flip into the zero padding changes nothing real
        targets = plan.perm[flat[real]]
        self.bits[targets] ^= 1
        self.flips += int(targets.size)
        self.schedule.record(self._mismatch)
        self._blocks = None
        self._mismatch = None


def reconcile(
    alice_bits: np.ndarray,
    bob_bits: np.ndarray,
    qber_estimate: float,
    seed: int,
    *,
    quiet_passes: int = 3,
    max_block_exp: int = DEFAULT_MAX_BLOCK_EXP,
    max_passes: int = 100,
) -> ECResult:
    """Run Winnow between an in-memory Alice and Bob; count leakage and traffic from the messages.

    Per pass: Alice → Bob parities (``B`` bits, leaked); Bob → Alice mismatch bitmap (``B`` bits,
    one round trip); Alice → Bob syndromes (``k·m`` bits, leaked). Alice's syndromes of pass ``i``
    can ride with her parities of pass ``i+1`` (her key never changes), so a pass costs one round
    trip. ``leak_bits`` is the number of bits in both parties' messages (``leak_by_party``).

    Returns an :class:`ECResult` with ``keep_mask=None`` (disclosed bits are counted, not
    discarded; see the module docstring), ``n_frames`` = passes, and the simulation diagnostic
    ``residual_errors``.

    >>> rng = np.random.default_rng(1)
    >>> a = rng.integers(0, 2, 20000, dtype=np.uint8)
    >>> b = a ^ (rng.random(a.size) < 0.02).astype(np.uint8)
    >>> r = reconcile(a, b, 0.02, seed=5)
    >>> r.residual_errors
    0
    """
    a = as_bits(alice_bits, "alice_bits")
    b = as_bits(bob_bits, "bob_bits")
    if a.size != b.size:
        raise ValueError(f"alice_bits and bob_bits must have the same length, got {a.size} and {b.size}")
    kw = dict(quiet_passes=quiet_passes, max_block_exp=max_block_exp, max_passes=max_passes)
    alice = HammingAlice(a, qber_estimate, seed, **kw)
    bob = HammingBob(b, qber_estimate, seed, **kw)
    leak = leak_bob = bytes_up = bytes_down = trips = 0
    while not alice.done:
        par = alice.parities()
        leak += par.size
        bytes_down += packed_bytes(par.size)
        mism = bob.on_parities(par)
        bytes_up += packed_bytes(mism.size)
        leak_bob += mism.size
        trips += 1
        syn = alice.syndromes(mism)
        leak += syn.size
        bytes_down += packed_bytes(syn.size)
        bob.on_syndromes(syn)
    return ECResult(
        method="winnow",
        bob_bits=bob.bits,
        keep_mask=None,
        leak_bits=int(leak + leak_bob),
        leak_by_party={"alice": int(leak), "bob": int(leak_bob)},
        round_trips=trips,
        bytes_up=int(bytes_up),
        bytes_down=int(bytes_down),
        frame_errors=0,
        n_frames=len(alice.schedule.history),
        residual_errors=int(np.count_nonzero(bob.bits != a)),
        undetected_frames=None,
        details={"passes": list(alice.schedule.history), "bob_flips": bob.flips},
    )
