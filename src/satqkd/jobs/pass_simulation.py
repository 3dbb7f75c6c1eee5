"""The physical-layer job: orbit → link → photons → time tags → synchronised detections.

``simulate(cfg, seed)`` runs one pass and returns a :class:`PassSimulation` holding every
intermediate record, a ``summary()`` with the paper's headline figures and a per-second
``timeseries()``. All randomness comes from one seed: each stage gets its own child generator
spawned from ``numpy.random.SeedSequence(seed)``, so a stage's draws do not shift when another
stage changes.

Example::

    >>> import satqkd
    >>> sim = satqkd.simulate(satqkd.load_preset("micius-2016-12-19"), seed=7)   # doctest: +SKIP
    >>> sim.summary()["sifted_bits"]                                               # doctest: +SKIP
    1652310
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

from .. import __version__
from ..config import MissionConfig, is_paper_pass
from ..postprocess.sifting import SiftedEvents, sift
from ..quantum.sampler import sample_pass
from ..quantum.timing import Detections, match_alice, synchronise
from ..records import INTENSITY_NAMES, LinkSeries, PassGeometry, RawRecords
from ..sky.link import link_series
from ..sky.orbit import select_pass

__all__ = ["PassSimulation", "simulate", "stage_rngs"]

Progress = Callable[[str, float, float], None]

_log = logging.getLogger(__name__)


def stage_rngs(seed: int, names: tuple[str, ...] = ("link", "photons", "timing", "protocol")) -> dict[str, np.random.Generator]:
    """Independent, reproducible generators per stage, spawned from one seed."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


@dataclass(frozen=True)
class PassSimulation:
    """Everything one simulated pass produced (see ``summary()`` and ``timeseries()``)."""

    config: MissionConfig
    seed: int
    geometry: PassGeometry
    link: LinkSeries
    raw: RawRecords
    detections: Detections
    sifted: SiftedEvents
    #: Alice's intensity label of each synchronised detection (aligned with ``detections.pulse_index``)
    detected_intensity: np.ndarray
    stage_seconds: dict = field(default_factory=dict)
    #: the pass choice the geometry came from (``--pass``: "3", "highest", "best:7d", a date; "" = the first pass)
    pass_choice: str = ""

    # ------------------------------------------------------------------ derived figures
    def summary(self) -> dict:
        """Headline figures (names follow issue 2 §7); JSON-serialisable."""
        g, s, det = self.geometry, self.sifted, self.detections
        k = len(self.config.source.intensities)
        names = list(INTENSITY_NAMES[:k])
        a_int = self.detected_intensity
        by_int = _value_counts(a_int, k)
        n_tab, m_tab = _sift_tables(s, k)  # = count_table / error_table of the sifted events
        n_i, m_i = n_tab.sum(axis=0), m_tab.sum(axis=0)
        sifted_bits = int(n_i[0])  # the key: signal intensity (SiftedEvents.key_mask(0)), both bases
        qber = float(m_i[0] / sifted_bits) if sifted_bits else float("nan")
        emitted = self.raw.slice_emitted.sum(axis=0)
        link = self.link
        ld = link.link_loss_db
        return {
            "satqkd_version": __version__,
            "preset": self.config.name,
            "seed": self.seed,
            "satellite": g.satellite,
            "station": g.station,
            "pass_choice": self.pass_choice or "first",
            "paper_pass": is_paper_pass(self.config, g.start_utc, g.duration_s),
            "start_utc": g.start_utc.isoformat(),
            "culmination_utc": _iso_plus(g.start_utc, float(g.t_s[g.culmination_index])),
            "max_elevation_deg": round(float(g.elevation_deg.max()), 3),
            "duration_s": round(g.duration_s, 3),
            "min_range_km": round(float(g.range_m.min() / 1e3), 3),
            "max_range_km": round(float(g.range_m.max() / 1e3), 3),
            "pulses_emitted": int(emitted.sum()),
            "pulses_emitted_by_intensity": dict(zip(names, map(int, emitted))),
            "tags_total": int(det.tags_total),
            "tags_kept": int(det.tags_kept),
            "assigned_wrong": int(det.assigned_wrong),
            "sync_residual_rms_ns": float(det.fit_residual_rms_ns),
            "detections": int(len(det.pulse_index)),
            "detections_by_intensity": dict(zip(names, map(int, by_int))),
            "double_clicks": int(np.count_nonzero(det.double_click)),
            "sifted_bits": sifted_bits,
            "sifted_all_intensities": int(len(s)),
            "sifted_by_intensity": dict(zip(names, map(int, n_i))),
            "qber": qber,
            "qber_by_intensity": {nm: (float(m_i[j] / n_i[j]) if n_i[j] else None) for j, nm in enumerate(names)},
            "qber_by_basis_signal": {b: (float(m_tab[i, 0] / n_tab[i, 0]) if n_tab[i, 0] else None) for i, b in enumerate("ZX")},
            "link_loss_db_at_min_range": float(ld[np.argmin(link.range_m)]),
            "link_loss_db_at_max_range": float(ld[np.argmax(link.range_m)]),
            "loss_db_mean_by_cause": {c: float(np.mean(v)) for c, v in link.loss_db.items()},
            "misalignment_mean": float(np.mean(link.misalignment)),
            "contrast_compensated_mean": _mean_or_none(link.contrast_compensated),
            "contrast_uncompensated_min": _min_or_none(link.contrast_uncompensated),
            "tracking_error_rms_urad": float(np.sqrt(np.mean(link.tracking_error_urad**2))),
            "stage_seconds": {k_: round(v, 4) for k_, v in self.stage_seconds.items()},
        }

    def timeseries(self):
        """One row per whole second of the pass, as a :class:`pandas.DataFrame` with the columns of
        ``timeseries.csv`` (units in the names: ``t_s, range_km, elevation_deg, link_loss_db,
        transmittance, detections, sifted_bits, qber``): counts in [t, t+1) and the link at t + 0.5 s.

        >>> sim.timeseries().plot(x="t_s", y="sifted_bits")    # doctest: +SKIP
        """
        import pandas as pd

        from ..report import TIMESERIES_COLUMNS

        arrays = self._timeseries_arrays()
        return pd.DataFrame({c: arrays[c] for c in TIMESERIES_COLUMNS})

    def to_frame(self):
        """The per-second table of the pass: :meth:`timeseries`."""
        return self.timeseries()

    def _timeseries_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`timeseries` as a dict of arrays, plus ``link_efficiency_observed`` (Fig. 4)."""
        g, link = self.geometry, self.link
        n_rows = int(np.floor(g.duration_s + 1e-9))
        edges = np.arange(n_rows + 1, dtype=float)
        t_mid = edges[:-1] + 0.5
        rep = float(self.raw.rep_rate_hz)
        k = len(self.config.source.intensities)
        # detections per second and intensity (second of pulse p: [i, i + 1) ∋ p / rep, as np.histogram)
        det_by_int = _per_second(self.detections.pulse_index, rep, n_rows, self.detected_intensity, max(k, 1))
        detections = det_by_int.sum(axis=1)
        s = self.sifted
        # sifted events: 0 = not key, 1 = key and correct, 2 = key and wrong
        cls = (s.intensity == 0).view(np.uint8) * (1 + (s.alice_bit != s.bob_bit).view(np.uint8))
        by_cls = _per_second(s.pulse_index, rep, n_rows, cls, 3)
        sifted = by_cls[:, 1] + by_cls[:, 2]
        errors = by_cls[:, 2].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            qber = np.where(sifted > 0, errors / np.maximum(sifted, 1), np.nan)
        ld = np.interp(t_mid, link.t_s, link.link_loss_db)
        eta_obs = self._observed_link_efficiency(edges, det_by_int[:, 0])
        return {
            "t_s": t_mid,
            "range_km": np.interp(t_mid, g.t_s, g.range_m) / 1e3,
            "elevation_deg": np.interp(t_mid, g.t_s, g.elevation_deg),
            "link_loss_db": ld,
            "transmittance": 10 ** (-ld / 10),
            "detections": detections,
            "sifted_bits": sifted,
            "qber": qber,
            "link_efficiency_observed": eta_obs,
        }

    def _observed_link_efficiency(self, edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Link efficiency extracted from the signal-state count rate, as the paper's Fig. 4 does.

        ``counts``: signal-state detections per second. Gain of the signal state Q = detections /
        pulses sent; for a Poisson source Q ≈ 1 − exp(−μ η η_det) (Ma et al. 2005, background
        neglected), so η = −ln(1 − Q) / (μ η_det).
        """
        raw = self.raw
        sl = raw.slice_start_s
        dt = np.diff(np.append(sl, sl[-1] + (sl[-1] - sl[-2] if sl.size > 1 else 1.0)))
        # pulses per second: spread each slice's emitted signal pulses over its span
        emitted = np.histogram(sl + dt / 2, edges, weights=raw.slice_emitted[:, 0].astype(float))[0]
        mu = float(raw.intensities[0])
        eta_det = self.link.detector_efficiency
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(emitted > 0, counts / np.maximum(emitted, 1), np.nan)
            return -np.log1p(-q) / (mu * eta_det)

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"PassSimulation({s['preset']}, seed {self.seed}: {s['duration_s']:.0f} s, "
            f"{s['min_range_km']:.0f}–{s['max_range_km']:.0f} km, {s['detections']:,} detections, "
            f"{s['sifted_bits']:,} sifted bits, QBER {100 * s['qber']:.2f} %)"
        )


def _iso_plus(t0, seconds: float) -> str:
    from datetime import timedelta

    return (t0 + timedelta(seconds=seconds)).isoformat()


def _mean_or_none(a):
    return None if a is None else float(np.mean(a))


def _min_or_none(a):
    return None if a is None else float(np.min(a))


def simulate(
    cfg: MissionConfig,
    seed: int = 0,
    *,
    geometry: PassGeometry | None = None,
    pass_spec: str | int | None = None,
    progress: Progress | None = None,
) -> PassSimulation:
    """Simulate one pass of ``cfg``: ``geometry`` if given, else the pass ``pass_spec`` names
    (:func:`satqkd.sky.orbit.select_pass`: ``3``, ``"2016-12-19"``, ``"highest"``, ``"best:7d"``), else
    the first pass its rules find.

    ``progress(stage, done, total)`` is called as each stage ("orbit", "link", "photons", "timing")
    starts and ends, and along the photon sampling."""
    rngs = stage_rngs(seed)
    stage: dict[str, float] = {}

    def step(name: str, fn, *args, **kw):
        if progress:
            progress(name, 0.0, 1.0)
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        stage[name] = time.perf_counter() - t0
        _log.info("stage %s: %.2f s", name, stage[name])
        if progress:
            progress(name, 1.0, 1.0)
        return out

    if geometry is None:
        geometry = step("orbit", select_pass, cfg, pass_spec)
    link = step("link", link_series, cfg, geometry, rngs["link"])

    def photons_progress(done: float, total: float) -> None:
        if progress:
            progress("photons", done, total)

    raw = step("photons", sample_pass, cfg, link, rngs["photons"], progress=photons_progress if progress else None)
    raw.meta["pass_id"] = f"{cfg.satellite}:{geometry.station}:{geometry.start_utc:%Y-%m-%dT%H:%M:%S}Z:seed{int(seed)}"
    raw.meta["mean_range_m"] = float(np.mean(geometry.range_m))
    raw.meta["intensity_fluctuation"] = float(cfg.source.intensity_fluctuation)  # recorded with the pass (raw format 3)
    _return_free_heap()  # the sampler's temporaries
    det = step("timing", synchronise, raw, rng=rngs["timing"])
    t0 = time.perf_counter()
    a_int, a_basis, a_bit = match_alice(raw, det)
    sifted = sift(det.pulse_index, a_int, a_basis, det.bob_basis, a_bit, det.bob_bit)
    stage["sifting"] = time.perf_counter() - t0
    _return_free_heap()
    choice = "" if pass_spec is None else str(pass_spec)
    return PassSimulation(cfg, int(seed), geometry, link, raw, det, sifted, a_int, stage, choice)


def _return_free_heap() -> None:
    """Give the heap memory freed by the stages' temporaries back to the OS (glibc only; else no-op).

    glibc serves blocks below its mmap threshold (which grows to 32 MiB after large frees) from the
    heap and keeps them after ``free``; ``malloc_trim(0)`` releases those pages (~40 MiB per pass,
    ~2 ms), so the figures and files written afterwards do not add to a bloated peak RSS.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", False)
        except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def _sift_tables(s: SiftedEvents, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(count_table, error_table)`` of the sifted events (shape ``(2, k)``), from small label
    arrays without the int64 index temporaries of ``sifting.count_table``."""
    err = s.alice_bit != s.bob_bit
    n = np.zeros((2, k), np.int64)
    m = np.zeros((2, k), np.int64)
    for b in range(2):
        in_b = s.basis == b
        for j in range(k):
            sel = in_b & (s.intensity == j)
            n[b, j] = np.count_nonzero(sel)
            m[b, j] = np.count_nonzero(sel & err)
    if n.sum() != len(s):
        raise ValueError(f"sifted events need basis in {{0, 1}} and intensity in 0..{k - 1}")
    return n, m


def _value_counts(a: np.ndarray, k: int) -> np.ndarray:
    """``np.bincount(a, minlength=k)`` of small labels without its intp copy of ``a``."""
    out = np.array([np.count_nonzero(a == v) for v in range(k)], dtype=np.int64)
    return out if out.sum() == a.size else np.bincount(a, minlength=k)


def _per_second(pulse_index: np.ndarray, rep_rate_hz: float, n_rows: int, label: np.ndarray, n_labels: int) -> np.ndarray:
    """Counts ``(n_rows, n_labels)`` of events per whole second ``[i, i + 1)`` of ``pulse / rep`` and
    per label (``np.histogram`` bins on the integer edges ``0 … n_rows``, the last one closed)."""
    p = np.ascontiguousarray(pulse_index, dtype=np.int64)
    lab = np.ascontiguousarray(label, dtype=np.uint8)
    if lab.shape != p.shape:
        raise ValueError("labels must be aligned with the pulse indices")
    if lab.size and int(lab.max()) >= n_labels:
        raise ValueError(f"labels must lie in 0..{n_labels - 1}")
    return _per_second_kernel(p, float(rep_rate_hz), int(n_rows), lab, int(n_labels))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _per_second_kernel(p, rep, n_rows, lab, n_labels):  # pragma: no cover - compiled
    out = np.zeros((n_rows, n_labels), np.int64)
    for i in range(p.size):
        t = p[i] / rep
        if n_rows == 0 or not (t >= 0.0 and t <= n_rows):
            continue
        b = min(int(np.floor(t)), n_rows - 1)
        out[b, lab[i]] += 1
    return out
