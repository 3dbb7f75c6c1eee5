"""Result type shared by the error-correction (information reconciliation) methods.

Every method (Winnow/Hamming in :mod:`.hamming`, LDPC syndrome coding in :mod:`.ldpc`, Cascade)
runs between two parties: Alice holds the reference key, Bob a noisy copy; they exchange only
messages (NumPy arrays). Leakage is *counted* from the messages that were actually sent.

Efficiency (design notes §3; Elkouss et al., ISIT 2009, eq. 2): ``f = leak / (n · h(QBER))`` with
``h`` the binary entropy and ``n`` the number of reconciled key bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ECResult", "as_bits", "binary_entropy", "packed_bytes"]


def binary_entropy(p: float | np.ndarray) -> float | np.ndarray:
    """Binary entropy ``h(p) = −p log2 p − (1−p) log2(1−p)`` in bits, with ``h(0) = h(1) = 0``."""
    q = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -q * np.log2(q) - (1 - q) * np.log2(1 - q)
    h = np.where((q <= 0) | (q >= 1), 0.0, h)
    return float(h) if np.ndim(h) == 0 else h


def as_bits(a, name: str) -> np.ndarray:
    """``a`` as a contiguous ``np.uint8`` array of 0/1; ``ValueError`` naming ``name`` otherwise."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1 bits, got shape {a.shape}")
    if a.size and (a.dtype.kind not in "biu" or a.min() < 0 or a.max() > 1):
        raise ValueError(f"{name} must contain only 0 and 1 (0/1 values)")
    return np.ascontiguousarray(a, dtype=np.uint8)


def packed_bytes(n_bits: int) -> int:
    """Bytes needed to carry ``n_bits`` bits packed 8 to a byte (payload only, no framing)."""
    return (int(n_bits) + 7) // 8


@dataclass
class ECResult:
    """Outcome of one reconciliation run (one sifted block).

    Attributes
    ----------
    method
        ``"winnow"``, ``"ldpc"``, ``"cascade"``, ...
    bob_bits
        Bob's corrected key (``np.uint8`` 0/1), same length as his input.
    keep_mask
        Boolean mask of positions both parties keep, or ``None`` if all are kept. LDPC frames that
        failed to decode are dropped here (Alice and Bob drop the same, publicly known, frames).
    leak_bits
        Bits disclosed about Alice's key by **both** parties, counted from the messages actually
        sent (to be subtracted in privacy amplification): ``leak_by_party["alice"] +
        leak_by_party["bob"]``. Bob's messages are functions of his string, which is correlated
        with Alice's (Tupkary & Lütkenhaus, Phys. Rev. Applied 20, 064040 (2023)): his comparison
        outcomes (Cascade), mismatch bitmaps (Winnow) and frame success flags (LDPC) are charged
        one bit each. It includes the disclosure made in frames that were then dropped
        (conservative), but not the dropped bits themselves (the protocol charges those).
    leak_by_party
        ``{"alice": bits, "bob": bits}`` (empty for results made before the split).
    round_trips
        Number of Bob→Alice replies (each costs one classical-channel round trip).
    bytes_up, bytes_down
        Payload bytes ground→satellite (Bob→Alice) and satellite→ground (Alice→Bob).
    frame_errors
        Frames the decoder reported as failed (LDPC: syndrome not matched after BP).
    n_frames
        Frames (LDPC) or passes (Winnow) used.
    residual_errors, undetected_frames
        Simulation diagnostics filled by the ``reconcile()`` helpers, which see both keys: bits still
        wrong among the kept ones, and frames that decoded to a wrong word (only error verification
        would catch those). ``None`` in a real two-party run.
    details
        Method-specific numbers (rates, punctured/shortened counts, pass schedule, ...).
    """

    method: str
    bob_bits: np.ndarray
    keep_mask: np.ndarray | None
    leak_bits: int
    round_trips: int
    bytes_up: int
    bytes_down: int
    frame_errors: int = 0
    n_frames: int = 0
    residual_errors: int | None = None
    undetected_frames: int | None = None
    details: dict = field(default_factory=dict)
    leak_by_party: dict = field(default_factory=dict)

    @property
    def n_key_bits(self) -> int:
        """Number of reconciled bits both parties keep."""
        return int(self.bob_bits.size if self.keep_mask is None else np.count_nonzero(self.keep_mask))

    def kept_bits(self) -> np.ndarray:
        """Bob's corrected bits restricted to the kept positions."""
        return self.bob_bits if self.keep_mask is None else self.bob_bits[self.keep_mask]

    def efficiency(self, qber: float) -> float:
        """Reconciliation efficiency ``f = leak / (n · h(qber))`` (1 is the Slepian–Wolf limit).

        ``qber`` should be the *actual* error rate of the reconciled bits for a measurement.
        """
        if not 0.0 < qber < 0.5:
            raise ValueError(f"qber must be in (0, 0.5), got {qber}")
        n = self.n_key_bits
        if n == 0:
            return float("inf")
        return self.leak_bits / (n * binary_entropy(qber))

    def __repr__(self) -> str:
        extra = "" if self.residual_errors is None else f", residual_errors={self.residual_errors}"
        return (
            f"ECResult(method={self.method!r}, n_key_bits={self.n_key_bits}, leak_bits={self.leak_bits}, "
            f"round_trips={self.round_trips}, bytes_up={self.bytes_up}, bytes_down={self.bytes_down}, "
            f"frame_errors={self.frame_errors}/{self.n_frames}{extra})"
        )
