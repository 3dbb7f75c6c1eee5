"""Post-processing: from sifted events to a secret key.

One module per step, each a set of small pure functions over NumPy arrays:

- :mod:`.sifting` — basis sifting and the decoy-state count table ``n[basis, intensity]``,
  ``m[basis, intensity]``.
- :mod:`.estimation` — decoy-state bounds and the finite-key secret key length with an explicit ε
  budget (Lim et al., PRA 89, 022307 (2014); Chernoff-bound variant; the paper-era Ma et al. 2005
  analysis for comparison). See ``docs/finite-key.md``.
- :mod:`.reconciliation` — error correction (Winnow/Hamming, Cascade, LDPC); leakage is counted
  from the messages actually sent.
- :mod:`.verification` — error verification by a universal hash (ε_cor).
- :mod:`.amplification` — privacy amplification by Toeplitz hashing.
- authentication — Wegman–Carter tags; the key they consume is charged against the output.
"""
