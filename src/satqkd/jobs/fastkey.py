"""Expected final key of a pass without photon sampling: the fast model of network planning.

:func:`satqkd.quantum.expected.expected_tables` gives the expected count tables of a pass from its
:class:`~satqkd.records.LinkSeries` with the event simulator's own link interpolation, detector and
gating functions (see that module). This module hands them to the protocol's finite-key estimation
(:func:`satqkd.postprocess.estimation.estimate`, with the protocol's options from
:func:`satqkd.protocol.session.protocol_options`), with error-correction leakage from a calibrated
``f(QBER, n)`` (:data:`EC_EFFICIENCY`, measured by ``scripts/calibrate_ec.py``). It lives in
``jobs/`` because ``quantum`` never imports ``postprocess`` or ``protocol`` (docs/architecture.md).

Agreement with the event-level pipeline (final key within 5 %, sifted bits within 2 % of the mean of
≥ 10 seeded runs on passes of 15°–85° maximum elevation) is measured by ``benchmarks/run.py --plan``
and ``tests/test_expected_key.py`` (a cheaper version).

Example::

    >>> import numpy as np, satqkd
    >>> from satqkd.jobs.fastkey import expected_pass
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> g = satqkd.find_pass(cfg)                                           # doctest: +SKIP
    >>> expected_pass(cfg, satqkd.link_series(cfg, g, np.random.default_rng(1)))   # doctest: +SKIP
    ExpectedPass(sifted 1,652,000 bits, QBER 1.10 %, f = 1.030, final key 345,000 bits)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..config import DEFAULT_EC_METHOD
from ..quantum.expected import ExpectedTables, expected_tables
from ..records import LinkSeries

__all__ = ["EC_EFFICIENCY", "AUTH_KEY_BITS", "ec_efficiency", "expected_pass", "ExpectedPass"]

#: Measured error-correction efficiency ``f = leak / (n · h(QBER))`` of each method, as leakage is
#: counted by the protocol (every bit disclosed by either party; for LDPC the discarded bits of
#: failed frames are added, as :mod:`satqkd.protocol.parties` does). Rows: sifted key length n,
#: columns: QBER. Measured by ``python scripts/calibrate_ec.py --ec cascade|ldpc --seeds 2``
#: (``postprocess.benchmark.bench_postprocess`` on a binary symmetric channel, mean of 2 seeds per cell;
#: 2026-12-01, after both parties' disclosures were charged). Re-run the script after changing error
#: correction and paste its output here.
EC_EFFICIENCY: dict[str, dict] = {
    "cascade": {  # both parties charged (Bob's comparison outcomes: f ≈ 2 × Alice's parities alone)
        "n": (10000.0, 100000.0, 1000000.0, 3000000.0),
        "qber": (0.005, 0.01, 0.02, 0.04),
        "f": (
            (2.515, 2.181, 2.238, 2.183),
            (2.094, 2.076, 2.082, 2.084),
            (2.053, 2.061, 2.069, 2.086),
            (2.054, 2.06, 2.068, 2.084),
        ),
    },
    # python scripts/calibrate_ec.py --ec ldpc (seeds 2; 2026-12-01, one-way LDPC with the public reveal
    # order and both parties charged, on a binary symmetric channel of one QBER: the protocol's
    # per-class priors do better on a key of signal and decoy bits, so this errs low on the key)
    "ldpc": {
        "n": (10000.0, 100000.0, 1000000.0, 3000000.0),
        "qber": (0.005, 0.01, 0.02, 0.04),
        "f": (
            (1.58, 1.284, 1.158, 1.168),
            (1.192, 1.098, 1.081, 1.071),
            (1.176, 1.084, 1.062, 1.069),
            (1.159, 1.08, 1.061, 1.071),
        ),
    },
}

#: Authentication key (bits) the post-processing consumes per pass and method, charged against the
#: key as ``extra_cost_bits`` (the protocol's transcript mode: two checkpoints each way plus the
#: pads still to come; measured in event-level runs of the preset pass: 639 bits for cascade).
AUTH_KEY_BITS: dict[str, int] = {"cascade": 639, "ldpc": 639, "hamming": 639}


def ec_efficiency(qber, n_bits, method: str = DEFAULT_EC_METHOD):
    """Calibrated ``f(QBER, n)`` of ``method`` (:data:`EC_EFFICIENCY`): bilinear in (log n, QBER), clamped.

    Outside the table the nearest edge value is used (the efficiency flattens at large n; small-n,
    low-QBER blocks are the least efficient, so clamping there is the conservative side only up to
    the first row). A method without a table falls back to cascade's.
    """
    tab = EC_EFFICIENCY.get(method, EC_EFFICIENCY["cascade"])
    ln = np.log10(np.asarray(tab["n"], dtype=float))
    qs = np.asarray(tab["qber"], dtype=float)
    f = np.asarray(tab["f"], dtype=float)
    x = np.clip(np.log10(np.maximum(np.asarray(n_bits, dtype=float), 1.0)), ln[0], ln[-1])
    q = np.clip(np.asarray(qber, dtype=float), qs[0], qs[-1])
    x, q = np.broadcast_arrays(x, q)
    rows = np.stack([np.interp(q.ravel(), qs, f[i]) for i in range(ln.size)])  # (len n, points)
    out = np.array([np.interp(xx, ln, rows[:, j]) for j, xx in enumerate(x.ravel())]).reshape(x.shape)
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class ExpectedPass:
    """Expected outcome of one pass: the tables, the estimate and the headline numbers."""

    tables: ExpectedTables
    estimate: object  # postprocess.estimation.KeyEstimate
    sifted_bits: float  # bits of the key set (``[security] key_intensities``; signal + decoy by default)
    qber: float  # of the key set
    leak_ec_bits: float
    ec_efficiency: float
    final_key_bits: int

    @property
    def aborted(self) -> bool:
        return self.final_key_bits <= 0

    @property
    def abort_reason(self) -> str | None:
        return getattr(self.estimate, "abort_reason", None) if self.aborted else None

    def __repr__(self) -> str:
        return (f"ExpectedPass(sifted {self.sifted_bits:,.0f} bits, QBER {100 * self.qber:.2f} %, "
                f"f = {self.ec_efficiency:.3f}, final key {self.final_key_bits:,} bits"
                + (f", ABORTED: {self.abort_reason}" if self.aborted else "") + ")")


def _eps_auth() -> float:
    """Forgery probability charged for authentication: the protocol's transcript mode sends four tags
    (two checkpoints each way) over at most ~2²⁵ bytes (cascade's ~10 MB at the preset pass) —
    :func:`satqkd.postprocess.authentication.forgery_bound`, as :func:`satqkd.protocol.parties._auth_bound`."""
    from ..postprocess.authentication import forgery_bound

    return 4 * forgery_bound(1 << 25)


def expected_pass(cfg, link: LinkSeries, *, ec: str = DEFAULT_EC_METHOD, finite_key: str = "chernoff",
                  intensities=None, probabilities=None, p_z_alice: float = 0.5,
                  grid_points: int | None = None, slice_s: float | None = None) -> ExpectedPass:
    """Expected final key of the pass ``link``: :func:`expected_tables`, then the protocol's estimation.

    The estimation call mirrors the protocol's (:func:`satqkd.protocol.parties._finish`): same
    options from the configuration, same verification tag / collision bound, ε budget
    ``ε − ε_cor − ε_auth``, leakage from :func:`ec_efficiency` and authentication cost
    :data:`AUTH_KEY_BITS`. ``grid_points`` (default: the estimation's own) sets the worst-case
    grid over the intensity band; ``slice_s`` the integration slices of :func:`expected_tables`. The QBER abort threshold applies as in the protocol.
    """
    from ..postprocess import estimation, verification
    from ..postprocess.estimation import binary_entropy
    from ..protocol.session import protocol_options

    opts = protocol_options(cfg, ec, finite_key)
    if intensities is not None or probabilities is not None:
        opts = replace(opts, intensities=tuple(intensities or opts.intensities),
                       probabilities=tuple(probabilities or opts.probabilities))
    tab = expected_tables(cfg, link, intensities=opts.intensities, probabilities=opts.probabilities, p_z_alice=p_z_alice,
                          slice_s=slice_s)
    # the protocol's key set (``[security] key_intensities``): expected key bits and errors per class
    kc = list(opts.key_classes)
    n_c, m_c = tab.n[:, kc].sum(axis=0), tab.m[:, kc].sum(axis=0)
    n = float(n_c.sum())
    q = float(m_c.sum() / n) if n > 0 else float("nan")
    n_int = int(math.floor(n))
    zero = ExpectedPass(tab, None, n, q, 0.0, float("nan"), 0)
    if n_int < 1 or not (q <= opts.qber_abort):
        return zero
    # one-way LDPC decodes with each bit's class prior and sizes its frames for the BSC of equal
    # conditional entropy (protocol.parties._ldpc_qber): f of that BSC times Σ_c n_c h(q_c)
    q_c = np.where(n_c > 0, m_c / np.maximum(n_c, 1e-300), 0.0)
    ent = float(np.sum(n_c * binary_entropy(q_c)))
    if ec == "ldpc" and len(kc) > 1 and ent > 0:
        q_eq = _bsc_of_entropy(ent / n)
        leak = float(ec_efficiency(q_eq, n, ec)) * ent
    else:
        leak = float(ec_efficiency(q, n, ec)) * n * float(binary_entropy(q))
    f = leak / (n * float(binary_entropy(q)))
    t_bits = verification.tag_length_for(n_int, opts.epsilon_cor)
    eps_cor = verification.collision_bound(n_int, t_bits)
    eps_sec = opts.epsilon - eps_cor - _eps_auth()
    counts = estimation.DecoyCounts(n=tab.n, m=tab.m, emitted=tab.emitted, intensities=opts.intensities,
                                    probabilities=opts.probabilities, intensity_fluctuation=opts.intensity_fluctuation,
                                    p_z_alice=p_z_alice)
    kw = {} if grid_points is None else {"grid_points": int(grid_points)}
    est = estimation.estimate(counts, method=opts.finite_key, eps_sec=eps_sec, eps_cor=eps_cor, leak_ec_bits=leak,
                              extra_cost_bits=AUTH_KEY_BITS.get(ec, 639), ev_tag_bits=t_bits, qber_abort=opts.qber_abort,
                              key_intensities=opts.key_intensities, intensity_model=opts.intensity_model,
                              decoy_statistics=opts.decoy_statistics, **kw)
    ell = 0 if est.abort_reason else int(est.key_length)
    return ExpectedPass(tab, est, n, q, leak, f, max(ell, 0))


def _bsc_of_entropy(h_bits: float) -> float:
    """The QBER ``q ≤ ½`` with ``h(q) = h_bits``: the bisection of the protocol's LDPC frame planning
    (:func:`satqkd.postprocess.reconciliation.ldpc.equivalent_qber`: 60 halvings of [1e-9, ½]), on a
    target given as a number instead of per-bit QBERs, with the entropy evaluated on Python floats
    (``math``: ~1 µs a step instead of ~30 µs through NumPy for a scalar)."""
    lo, hi = 1e-9, 0.5
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        h = -(mid * math.log2(mid) + (1.0 - mid) * math.log2(1.0 - mid))
        if h < h_bits:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
