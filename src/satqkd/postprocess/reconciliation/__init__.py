"""Information reconciliation (error correction) between Alice's and Bob's sifted keys.

Three methods, each a two-party protocol whose leakage is counted from the messages sent:
Cascade (default; :mod:`.cascade`), one-way rate-adaptive LDPC syndrome coding (:mod:`.ldpc`) and
the paper's Hamming-based Winnow (:mod:`.hamming`).
"""

from .cascade import CascadeAlice, CascadeBob, CascadeParams, CascadeResult, benchmark_cascade
from .cascade import reconcile as reconcile_cascade
from .hamming import HammingAlice, HammingBob
from .hamming import reconcile as reconcile_winnow
from .ldpc import LdpcAlice, LdpcBob, plan_frames
from .ldpc import reconcile as reconcile_ldpc
from .result import ECResult, binary_entropy

__all__ = [
    "CascadeAlice", "CascadeBob", "CascadeParams", "CascadeResult", "benchmark_cascade", "reconcile_cascade",
    "HammingAlice", "HammingBob", "reconcile_winnow",
    "LdpcAlice", "LdpcBob", "plan_frames", "reconcile_ldpc",
    "ECResult", "binary_entropy",
]
