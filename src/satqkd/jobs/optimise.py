"""Optimised source settings for the sound (composable) bound, with the fast expected-key model.

:func:`optimise_source` maximises the expected final key of one pass — or the sum over several
passes: one setting a satellite can fly for a whole campaign — over the signal and decoy mean photon
numbers ``μ1, μ2`` (vacuum ``μ3 = 0`` kept), their probabilities ``p1, p2, p3`` and Alice's basis bias
``p_Z`` (Bob's passive 50/50 splitter is hardware and stays), using
:func:`satqkd.jobs.fastkey.expected_pass` as the objective (the protocol's estimation, ``chernoff`` by
default). Nelder–Mead (scipy) on unconstrained coordinates (log μ, softmax of the probabilities,
logit of p_Z) from the preset's settings; settings the estimation refuses (e.g. the ±δ band making
μ1 ≤ μ2) score 0. The optimum is local and the objective is the *expected* key; the event simulator
(``satqkd run``) does not yet take a basis bias (its sampler draws bases uniformly), so an optimum
with p_Z ≠ 0.5 can be flown only after that is added.

Example::

    >>> res = optimise_source(cfg, [link])                    # doctest: +SKIP
    >>> res.key_bits, res.baseline_key_bits, res.settings     # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_EC_METHOD
from .fastkey import expected_pass

__all__ = ["SourceSettings", "OptimisedSource", "optimise_source"]


@dataclass(frozen=True)
class SourceSettings:
    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    p_z_alice: float = 0.5


@dataclass(frozen=True)
class OptimisedSource:
    settings: SourceSettings
    key_bits: int
    baseline: SourceSettings
    baseline_key_bits: int
    evaluations: int
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def gain(self) -> float:
        return self.key_bits / self.baseline_key_bits - 1 if self.baseline_key_bits else float("inf")

    def __repr__(self) -> str:
        s = self.settings
        return (f"OptimisedSource(μ = {tuple(round(x, 3) for x in s.intensities)}, p = {tuple(round(x, 3) for x in s.probabilities)}, "
                f"p_Z = {s.p_z_alice:.3f}: {self.key_bits:,} bits vs {self.baseline_key_bits:,} with the preset "
                f"({100 * self.gain:+.1f} %), {self.evaluations} evaluations in {self.seconds:.2f} s wall, {self.cpu_seconds:.2f} s CPU)")


def _decode(x) -> SourceSettings:
    mu1, mu2 = math.exp(x[0]), math.exp(x[1])
    w = np.exp(np.array([x[2], x[3], 0.0]) - max(x[2], x[3], 0.0))
    p = w / w.sum()
    pz = 1.0 / (1.0 + math.exp(-x[4]))
    return SourceSettings((mu1, mu2, 0.0), tuple(float(v) for v in p), float(pz))


def _encode(s: SourceSettings) -> np.ndarray:
    p = np.asarray(s.probabilities, dtype=float)
    return np.array([math.log(s.intensities[0]), math.log(s.intensities[1]), math.log(p[0] / p[2]), math.log(p[1] / p[2]),
                     math.log(s.p_z_alice / (1 - s.p_z_alice))])


def _key(cfg, links, s: SourceSettings, ec, finite_key, grid_points, slice_s) -> int:
    if not (0.02 <= s.p_z_alice <= 0.98) or min(s.probabilities) < 0.01 or s.intensities[0] > 2.0:
        return 0
    total = 0
    try:
        for link in links:
            total += expected_pass(cfg, link, ec=ec, finite_key=finite_key, intensities=s.intensities,
                                   probabilities=s.probabilities, p_z_alice=s.p_z_alice, grid_points=grid_points,
                                   slice_s=slice_s).final_key_bits
    except ValueError:  # settings outside what the estimation accepts
        return 0
    return total


def optimise_source(cfg, links: Sequence, *, ec: str = DEFAULT_EC_METHOD, finite_key: str = "chernoff", max_evaluations: int = 30,
                    grid_points: int = 3, slice_s: float = 1.0) -> OptimisedSource:
    """Maximise the summed expected key of ``links`` (one :class:`~satqkd.records.LinkSeries` per pass) over the source settings."""
    from scipy.optimize import minimize

    t0, c0 = time.perf_counter(), time.process_time()
    links = list(links)
    src = cfg.source
    base = SourceSettings(tuple(float(v) for v in src.intensities), tuple(float(v) for v in src.probabilities), 0.5)
    base_key = _key(cfg, links, base, ec, finite_key, grid_points, slice_s)
    best = [base_key, base]
    n = [1]

    def f(x):
        s = _decode(x)
        k = _key(cfg, links, s, ec, finite_key, grid_points, slice_s)
        n[0] += 1
        if k > best[0]:
            best[0], best[1] = k, s
        return -float(k)

    x0 = _encode(base)
    simplex = np.vstack([x0] + [x0 + d for d in np.diag([0.25, 0.4, 0.5, 0.5, 0.5])])
    minimize(f, x0, method="Nelder-Mead", options={"maxfev": int(max_evaluations), "initial_simplex": simplex,
                                                   "xatol": 1e-3, "fatol": 1.0})
    return OptimisedSource(best[1], int(best[0]), base, int(base_key), n[0], time.perf_counter() - t0,
                          time.process_time() - c0)
