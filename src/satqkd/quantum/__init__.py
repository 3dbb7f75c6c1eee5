"""What is sent and seen: decoy-state BB84 source, passive four-detector receiver, slice sampler
(exact in distribution, O(detections)) with a per-pulse reference, and beacon synchronisation.

Example::

    >>> from satqkd.quantum import sample_pass, synchronise, match_alice   # doctest: +SKIP
    >>> raw = sample_pass(cfg, link, np.random.default_rng(7))             # doctest: +SKIP
    >>> det = synchronise(raw, rng=np.random.default_rng(8))               # doctest: +SKIP
    >>> intensity, basis, bit = match_alice(raw, det)                      # doctest: +SKIP
"""

from .sampler import sample_pass, sample_slice_per_pulse
from .timing import Detections, fit_clock, match_alice, synchronise

__all__ = ["sample_pass", "sample_slice_per_pulse", "synchronise", "match_alice", "Detections", "fit_clock"]
