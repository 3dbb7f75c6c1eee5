"""Post-processing: sifting, estimation, reconciliation, verification, privacy amplification, authentication."""
