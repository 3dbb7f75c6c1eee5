"""The expected-key model: a pass's *expected* counts and final key, with no photon sampled.

The event simulator (:mod:`.sampler` → :mod:`.timing` → sifting → the two-party protocol) draws every
detection. For planning a network over a year that is ~10⁴× too slow, so this module computes the
*expected* value of the same counts from the same :class:`~satqkd.records.LinkSeries`, with the same
functions, and hands them to the same finite-key estimation:

1. **Link per slice** — :func:`satqkd.quantum.sampler._link_at` at the centres of the sampler's own
   slice grid (``SimulationConfig.slice_s``; :func:`satqkd.quantum.sampler._slice_grid`): η, e_d and
   the per-detector background + dark rate exactly as the sampler sees them.
2. **Per-pulse statistics** — :func:`satqkd.quantum.detector.expected_statistics` (the gated,
   squashed Ma et al. (2005) forms, tested against the sampler in ``tests/test_sampler.py``) with
   ``Λ = μ η η_det``, the gate efficiency :func:`~satqkd.quantum.detector.gate_efficiency` of the
   tag jitter :func:`~satqkd.quantum.detector.tag_jitter_ps` in the ``timing.window_ns`` window,
   ``b = (background + dark) · window`` noise tags per detector per gate, and the dead-time
   survival :func:`~satqkd.quantum.detector.dead_time_survival` of each detector's total tag rate.
   The intensity fluctuation ``μ(1 ± δ)`` is uniform with mean μ; the gain is linear in μ to
   ``O(Λ δ²)`` (Λ ≲ 10⁻² here), so the mean intensity is used. Basis choice: Alice picks Z with
   ``p_z_alice`` (0.5 in the event simulator), Bob's passive beam splitter 50/50.
3. **Expected count tables** ``n[b, k]``, ``m[b, k]``, ``emitted[k]`` (floats), the input of
   :class:`satqkd.postprocess.estimation.DecoyCounts`. The key itself (estimation with the
   protocol's options and a calibrated error-correction leakage) is :func:`satqkd.jobs.fastkey.expected_pass`:
   ``quantum`` never imports ``postprocess`` (docs/architecture.md).

So a change to the link, the detector model or the estimation moves both paths alike.

Example::

    >>> import numpy as np, satqkd
    >>> from satqkd.quantum.expected import expected_tables
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> g = satqkd.find_pass(cfg)                                           # doctest: +SKIP
    >>> tab = expected_tables(cfg, satqkd.link_series(cfg, g, np.random.default_rng(1)))  # doctest: +SKIP
    >>> tab.sifted_key_bits, tab.qber                                       # doctest: +SKIP
    (1652000.0, 0.0110)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import LinkSeries
from . import detector as _det
from . import sampler as _smp
from . import source as _src

__all__ = ["expected_tables", "ExpectedTables"]

@dataclass(frozen=True)
class ExpectedTables:
    """Expected counts of a pass: totals and per link time step.

    ``n[b, k]``, ``m[b, k]``: expected sifted detections / errors in basis b (0 = Z, 1 = X) of
    intensity k; ``emitted[k]`` pulses sent per intensity; ``sifted_per_step`` / ``errors_per_step``:
    expected signal-intensity sifted bits / errors in each interval ``[t_s[i], t_s[i+1])`` of the link.
    """

    n: np.ndarray
    m: np.ndarray
    emitted: np.ndarray
    t_s: np.ndarray
    sifted_per_step: np.ndarray
    errors_per_step: np.ndarray
    gain_per_slice: np.ndarray

    @property
    def sifted_key_bits(self) -> float:
        return float(self.n[:, 0].sum())

    @property
    def qber(self) -> float:
        s = self.n[:, 0].sum()
        return float(self.m[:, 0].sum() / s) if s > 0 else float("nan")


def expected_tables(cfg, link: LinkSeries, *, intensities=None, probabilities=None, p_z_alice: float = 0.5,
                    slice_s: float | None = None) -> ExpectedTables:
    """Expected count tables of the pass ``link`` under ``cfg`` (module docstring, steps 1–2).

    ``intensities``/``probabilities`` override ``cfg.source`` (for optimisation); ``p_z_alice`` is
    Alice's probability of the Z basis. Vectorised over the sampler's slice grid (``slice_s``,
    default ``cfg.simulation.slice_s`` as in the sampler: ~3·10⁴ slices for a 273 s pass, a few ms).
    A coarser ``slice_s`` (the planner uses 0.25 s) integrates the same piecewise-linear link with a
    midpoint rule: on 1 s link steps the sums change by < 10⁻⁴ relative.
    """
    src = cfg.source
    mu, p = _src.check_source(src.intensities if intensities is None else intensities,
                              src.probabilities if probabilities is None else probabilities, src.intensity_fluctuation)
    if not 0.0 < p_z_alice < 1.0:
        raise ValueError(f"p_z_alice must lie in (0, 1), got {p_z_alice}")
    R = float(src.rep_rate_hz)
    t0, t1 = float(link.t_s[0]), float(link.t_s[-1])
    grid = _smp._slice_grid(t0, t1, R, cfg.simulation.slice_s if slice_s is None else float(slice_s))
    n_pulses = grid.n.astype(float)
    centre = (grid.bounds[:-1] + grid.bounds[1:]) / (2.0 * R)
    lk = _smp._link_at(link, centre)
    sigma_ps = _det.tag_jitter_ps(cfg.detectors.jitter_ps, cfg.timing.sync_jitter_ns)
    window_ns = float(cfg.timing.window_ns)
    g = _det.gate_efficiency(window_ns, sigma_ps)
    b = lk.noise_hz.mean(axis=1) * window_ns * 1e-9  # noise tags per detector per gate (mean over detectors)
    st = _det.expected_statistics(mu[None, :], lk.eta[:, None], lk.detector_efficiency, lk.misalignment[:, None],
                                  b[:, None], g)
    # dead time: each detector's whole tag stream (signal ≈ R·Σ p_k gain_k / 4 + noise) survives 1/(1 + r τ)
    sig_rate = R * (st["gain"] @ p) / _det.N_DETECTORS
    surv = _det.dead_time_survival(sig_rate + lk.noise_hz.mean(axis=1), cfg.detectors.dead_time_ns * 1e-9)
    pulses_k = n_pulses[:, None] * p[None, :]  # (ns, K) pulses of each intensity per slice
    sifted = pulses_k * st["sifted"] * surv[:, None]
    errors = pulses_k * st["errors"] * surv[:, None]
    pb = np.array([p_z_alice, 1.0 - p_z_alice])
    n_tab = pb[:, None] * sifted.sum(axis=0)[None, :]
    m_tab = pb[:, None] * errors.sum(axis=0)[None, :]
    # per link time step (signal intensity, both bases)
    tl = np.asarray(link.t_s, dtype=float)
    step = np.clip(np.searchsorted(tl, centre, side="right") - 1, 0, max(tl.size - 2, 0))
    nstep = max(tl.size - 1, 1)
    return ExpectedTables(
        n=n_tab, m=m_tab, emitted=pulses_k.sum(axis=0), t_s=tl,
        sifted_per_step=np.bincount(step, weights=sifted[:, 0], minlength=nstep),
        errors_per_step=np.bincount(step, weights=errors[:, 0], minlength=nstep),
        gain_per_slice=st["gain"] @ p,
    )
