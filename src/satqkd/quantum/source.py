"""Alice's decoy-state BB84 transmitter on the satellite.

Every pulse ``k`` leaves at ``k / rep_rate_hz`` seconds after the pass start (satellite clock) in one
of ``4·K`` *classes*: an intensity class ``i`` (``μ_i``, chosen with probability ``p_i``), a basis
``a`` (0 = Z = H/V, 1 = X = +45°/−45°) and a bit ``x``, basis and bit uniform and independent of the
intensity [paper: "a physical thermal noise device generates a 4-bit random number for each pulse";
with ``p = 0.5/0.25/0.25`` two of the bits pick the intensity and two pick basis and bit, which is
exactly the distribution drawn here].

Intensity fluctuation [paper: "< 5 %"]: the *actual* mean photon number of intensity class ``i`` in
time slice ``s`` is ``μ_i (1 + δ_{s,i})`` with ``δ_{s,i}`` drawn independently per slice and per
intensity class, uniformly in ``[−f, +f]`` (``f = SourceConfig.intensity_fluctuation``), shared by the
four polarization states of that class. The estimation stage must treat ``μ_i (1 ± f)`` as the worst
case; the true per-slice values are kept in ``RawRecords.meta["truth_mean_photon_number"]``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "N_STATES",
    "check_source",
    "draw_mean_photon_numbers",
    "draw_pulse_classes",
    "draw_intensity",
    "draw_intensity_by_counts",
    "draw_basis_bit",
]

#: polarization states per intensity class: (basis, bit) ∈ {Z, X} × {0, 1}
N_STATES = 4


def check_source(intensities, probabilities, fluctuation: float) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(μ, p)`` as float arrays; raises ``ValueError`` naming the bad argument."""
    mu = np.asarray(intensities, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    if mu.ndim != 1 or mu.size < 1:
        raise ValueError("intensities must be a non-empty 1-D sequence of mean photon numbers")
    if p.shape != mu.shape:
        raise ValueError(f"probabilities must have the same length as intensities ({mu.size}); got {p.size}")
    if np.any(mu < 0) or np.any(~np.isfinite(mu)):
        raise ValueError("intensities must be finite and >= 0 photons per pulse")
    if np.any(p <= 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError("probabilities must be positive and sum to 1")
    if not 0.0 <= fluctuation < 1.0:
        raise ValueError(f"intensity_fluctuation must lie in [0, 1); got {fluctuation}")
    return mu, p


def draw_mean_photon_numbers(
    intensities, fluctuation: float, n_slices: int, rng: np.random.Generator
) -> np.ndarray:
    """Actual mean photon numbers ``μ_i (1 + δ_{s,i})``, shape ``(n_slices, K)``.

    ``δ_{s,i} ~ U[−fluctuation, +fluctuation]`` independently per slice and intensity class (module
    docstring). With ``fluctuation = 0`` no random numbers are consumed.
    """
    mu = np.asarray(intensities, dtype=float)
    if n_slices < 0:
        raise ValueError(f"n_slices must be >= 0; got {n_slices}")
    if fluctuation == 0.0:
        return np.broadcast_to(mu, (n_slices, mu.size)).copy()
    delta = rng.uniform(-fluctuation, fluctuation, size=(n_slices, mu.size))
    return mu * (1.0 + delta)


def _normalised_cdf(weights) -> np.ndarray:
    """Per-row cumulative probabilities ``(n_rows, K)`` of un-normalised weights (rows of 0 → all 1)."""
    w = np.asarray(weights, dtype=float)
    cum = np.cumsum(w, axis=1)
    tot = cum[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, cum / tot, 1.0)


def draw_intensity(weights, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Categorical draws of intensity classes (``uint8``), one per entry of ``rows``.

    ``weights`` is ``(n_rows, K)`` un-normalised per-row weights (e.g. ``p_i P_click(s, i)`` per slice
    ``s``); draw ``m`` uses row ``rows[m]``. Inverse-CDF sampling with one uniform per draw.
    """
    cum = _normalised_cdf(weights)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= cum.shape[0]):
        raise ValueError(f"rows must index the {cum.shape[0]} rows of weights")
    u = rng.random(rows.size)
    return _categorical_rows(u, np.ascontiguousarray(cum), rows)


def draw_intensity_by_counts(weights, counts: np.ndarray, rng: np.random.Generator, *, scratch: np.ndarray | None = None) -> np.ndarray:
    """Same draws as ``draw_intensity(weights, np.repeat(np.arange(n_rows), counts), rng)`` without
    materialising the row index of every draw (row ``s`` is used by the next ``counts[s]`` draws).
    ``scratch`` (optional): a float64 buffer of at least ``counts.sum()`` values for the uniforms."""
    cum = _normalised_cdf(weights)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (cum.shape[0],) or np.any(counts < 0):
        raise ValueError(f"counts must be {cum.shape[0]} non-negative integers, one per row of weights")
    n = int(counts.sum())
    u = rng.random(n) if scratch is None else rng.random(n, out=scratch[:n])
    return _categorical_counts(u, np.ascontiguousarray(cum), counts)


@numba.njit(cache=True, nogil=True)
def _categorical_rows(u, cum, rows):  # pragma: no cover - compiled
    out = np.empty(u.size, dtype=np.uint8)
    km1 = cum.shape[1] - 1
    for i in range(u.size):
        r = rows[i]
        c = 0
        for j in range(km1):
            c += u[i] >= cum[r, j]
        out[i] = c
    return out


@numba.njit(cache=True, nogil=True)
def _categorical_counts(u, cum, counts):  # pragma: no cover - compiled
    out = np.empty(u.size, dtype=np.uint8)
    km1 = cum.shape[1] - 1
    i = 0
    for r in range(counts.size):
        for _ in range(counts[r]):
            c = 0
            for j in range(km1):
                c += u[i] >= cum[r, j]
            out[i] = c
            i += 1
    return out


def draw_basis_bit(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform basis (0 = Z, 1 = X) and bit for ``n`` pulses: two of the paper's 4 random bits."""
    r = rng.integers(0, 4, size=n, dtype=np.uint8)
    return (r >> 1).astype(np.uint8), (r & 1).astype(np.uint8)


def draw_pulse_classes(n: int, probabilities, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensity class, basis and bit of ``n`` consecutive pulses (the per-pulse reference uses this)."""
    p = np.asarray(probabilities, dtype=float)
    intensity = draw_intensity_by_counts(p[None, :], np.array([n]), rng)
    basis, bit = draw_basis_bit(n, rng)
    return intensity, basis, bit
