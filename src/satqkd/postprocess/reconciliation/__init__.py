"""Information reconciliation (error correction) between Alice's and Bob's sifted keys."""

from .cascade import CascadeAlice, CascadeBob, CascadeError, CascadeParams, CascadeResult, benchmark_cascade
from .cascade import reconcile as reconcile_cascade

__all__ = [
    "CascadeAlice",
    "CascadeBob",
    "CascadeError",
    "CascadeParams",
    "CascadeResult",
    "benchmark_cascade",
    "reconcile_cascade",
]
