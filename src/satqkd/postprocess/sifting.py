"""Basis sifting and the decoy-state count table.

Bob announces the pulse indices he detected and his measurement bases; Alice answers with her
bases and the intensity labels of those pulses (decoy-state BB84, Ma et al. PRA 72, 012326 (2005)).
Events whose bases agree are *sifted*. The paper's "sifted key" counts the sifted events of the
signal intensity (1,671,072 of 3,551,136 detections ≈ ½ × the signal share), which carry the key;
decoy and vacuum events only feed parameter estimation and are disclosed in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SiftedEvents", "sift", "count_table", "error_table"]


@dataclass(frozen=True)
class SiftedEvents:
    """Sifted (basis-matched) events, in pulse order.

    ``pulse_index``, ``intensity`` (index, signal = 0), ``basis`` (0 = Z, 1 = X) and Alice's / Bob's bits.
    Bob's bits are only known to Bob in a real run; the two-party protocol keeps them apart.
    """

    pulse_index: np.ndarray
    intensity: np.ndarray
    basis: np.ndarray
    alice_bit: np.ndarray | None
    bob_bit: np.ndarray | None

    def __len__(self) -> int:
        return int(self.pulse_index.size)

    def key_mask(self, key_intensity: int = 0) -> np.ndarray:
        """Events that carry key: the signal intensity (both bases)."""
        return self.intensity == key_intensity

    def __repr__(self) -> str:
        n = len(self)
        ks = int(np.count_nonzero(self.key_mask()))
        return f"SiftedEvents({n:,} sifted, {ks:,} of the signal intensity)"


def sift(
    pulse_index: np.ndarray,
    alice_intensity: np.ndarray,
    alice_basis: np.ndarray,
    bob_basis: np.ndarray,
    alice_bit: np.ndarray | None = None,
    bob_bit: np.ndarray | None = None,
) -> SiftedEvents:
    """Keep the detections whose bases agree. All arrays are aligned per detection."""
    n = pulse_index.size
    for name, arr in (("alice_intensity", alice_intensity), ("alice_basis", alice_basis), ("bob_basis", bob_basis)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) like pulse_index")
    m = alice_basis == bob_basis
    return SiftedEvents(
        pulse_index=pulse_index[m],
        intensity=alice_intensity[m].astype(np.uint8),
        basis=alice_basis[m].astype(np.uint8),
        alice_bit=None if alice_bit is None else alice_bit[m].astype(np.uint8),
        bob_bit=None if bob_bit is None else bob_bit[m].astype(np.uint8),
    )


def count_table(intensity: np.ndarray, basis: np.ndarray, n_intensities: int) -> np.ndarray:
    """Sifted counts ``n[basis, intensity]`` (shape (2, k))."""
    idx = basis.astype(np.int64) * n_intensities + intensity.astype(np.int64)
    return np.bincount(idx, minlength=2 * n_intensities).reshape(2, n_intensities)


def error_table(intensity: np.ndarray, basis: np.ndarray, errors: np.ndarray, n_intensities: int) -> np.ndarray:
    """Error counts ``m[basis, intensity]`` (shape (2, k)) for a boolean/0-1 ``errors`` array."""
    idx = basis.astype(np.int64) * n_intensities + intensity.astype(np.int64)
    return np.bincount(idx, weights=errors.astype(np.float64), minlength=2 * n_intensities).reshape(2, n_intensities).astype(np.int64)
