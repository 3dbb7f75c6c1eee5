"""Time tags + channel map + transmitter settings → :class:`~satqkd.records.RawRecords`.

The result is what the simulator writes (``docs/raw-format.md``), so ``satqkd postprocess`` and
``satqkd party`` run on it unchanged:

* Bob's tags and detectors from the channel map; ``time_origin_ps`` is added to every file time
  (the file's zero on Bob's pass clock; PTU and Photon-HDF5 times are ≥ 0);
* with a beacon channel: beacon tags, and the pulse count each carries reconstructed as
  ``beacon_first_index + Σ round(ΔT · f_b)`` (a beacon carries its count; a time tagger records only
  its time);
* without one (or ``sync="correlation"``): the clock recovered from the detections by
  :func:`satqkd.quantum.correlation_sync.correlation_sync`, written as *virtual beacon* tags — one per
  millisecond, at the recovered arrival time of a pulse, ``beacon_rate_hz = rep_rate_hz`` and
  ``beacon_index`` = that pulse's index — so the unchanged beacon synchronisation reproduces the
  recovered clock (``meta["sync"]`` says so);
* Alice's record: a sparse transmitter record as given; otherwise the settings of every pulse within
  one period of a tag's predicted pulse (the pulses a tag could belong to);
* source parameters (rate, intensities, probabilities, window) from the mission configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..records import RawRecords
from .channels import ChannelMap, split_channels
from .errors import IngestError
from .tags import TimeTags
from .transmitter import TransmitterSettings

__all__ = ["IngestReport", "build_raw", "beacon_indices"]


@dataclass(frozen=True)
class IngestReport:
    """What ingest did: counts, sync method and the recovered clock (JSON-serialisable ``as_dict``)."""

    tags_read: int
    detector_tags: int
    beacon_tags: int
    dropped_tags: int
    sync: str
    channel_map: dict
    transmitter: str
    alice_pulses: int
    source: dict = field(default_factory=dict)
    correlation: dict | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def beacon_indices(beacon_time_ps: np.ndarray, beacon_rate_hz: float, first_index: int = 0) -> np.ndarray:
    """Pulse count of each beacon tag: ``first_index`` for the first, then the rounded number of
    beacon periods between consecutive tags (exact while clock drift and flight-time change over a
    gap stay below half a beacon period)."""
    t = np.asarray(beacon_time_ps, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, np.int64)
    steps = np.rint(np.diff(t) * (beacon_rate_hz * 1e-12)).astype(np.int64)
    if steps.size and steps.min() < 1:
        raise IngestError("two beacon tags closer than half a beacon period: check beacon_rate_hz and the beacon channel")
    return first_index + np.concatenate([[0], np.cumsum(steps)])


def _candidates(bob_t: np.ndarray, fit, rep_rate_hz: float) -> np.ndarray:
    u = (bob_t - fit.offset_ps(bob_t)) * (rep_rate_hz * 1e-12)
    k = np.rint(u).astype(np.int64)
    return np.unique(np.concatenate([k - 1, k, k + 1]))


def build_raw(
    tags: TimeTags,
    cmap: ChannelMap,
    tx: TransmitterSettings,
    cfg,
    *,
    time_origin_ps: int = 0,
    beacon_first_index: int = 0,
    sync: str = "auto",
    source: str = "the file",
    correlation_options: dict | None = None,
) -> tuple[RawRecords, IngestReport]:
    """Raw records from ingested tags (module docstring). ``sync``: ``"auto"`` (beacon when the map
    names one), ``"beacon"`` or ``"correlation"``. Raises :class:`IngestError` on bad input."""
    from ..quantum.timing import fit_clock

    if sync not in ("auto", "beacon", "correlation"):
        raise IngestError(f"sync must be auto, beacon or correlation; got {sync!r}")
    if sync == "beacon" and cmap.beacon is None:
        raise IngestError("sync = beacon but the channel map names no beacon channel")
    src, tim = cfg.source, cfg.timing
    R = float(src.rep_rate_hz)
    n_cls = len(src.intensities)
    bob_t, bob_d, beacon_t, dropped = split_channels(tags, cmap, source, time_origin_ps)
    if bob_t.size == 0:
        raise IngestError(f"{source}: no detector tags on channels {cmap.detectors}")
    if tx.kind != "sparse" and tx.intensity is not None and tx.intensity.size and int(tx.intensity.max()) >= n_cls:
        raise IngestError(f"transmitter intensity class {int(tx.intensity.max())}, but the source has {n_cls} intensities")
    use_beacon = cmap.beacon is not None and sync != "correlation"
    corr = None
    if use_beacon:
        if beacon_t.size < 2:
            raise IngestError(f"{source}: {beacon_t.size} tags on the beacon channel {cmap.beacon}; at least 2 are needed")
        b_rate = float(tim.beacon_rate_hz)
        b_idx = beacon_indices(beacon_t, b_rate, beacon_first_index)
        try:
            fit = fit_clock(beacon_t, b_idx, b_rate) if tx.kind != "sparse" else None
        except ValueError as exc:
            raise IngestError(f"{source}: beacon fit failed: {exc}") from exc
        method = "beacon"
    else:
        from ..quantum.correlation_sync import correlation_sync, virtual_beacons

        res = correlation_sync(bob_t, bob_d, tx.lookup, R, float(tim.window_ns), **(correlation_options or {}))
        fit = res.fit
        beacon_t, b_idx = virtual_beacons(res.fit, bob_t, R)
        b_rate = R
        corr = res.as_dict()
        method = "correlation"
    a_idx, a_int, a_bas, a_bit = tx.alice_record(None if tx.kind == "sparse" else _candidates(bob_t, fit, R))
    slice_start, emitted = tx.slices(R, float(cfg.simulation.slice_s), n_cls)
    if emitted.ndim != 2 or emitted.shape[1] != n_cls:
        raise IngestError(f"transmitter slice_emitted has {emitted.shape[1] if emitted.ndim == 2 else '?'} intensities, the source {n_cls}")
    slice_s = float(np.diff(slice_start[:2])[0]) if slice_start.size > 1 else float(cfg.simulation.slice_s)
    meta = {
        "pass_id": tx.meta.get("pass_id") or f"ingest:{source}",
        "first_pulse_index": int(tx.first_pulse_index),
        "n_pulses": int(tx.n_pulses),
        "slice_s": slice_s,
        "sync": method,
        "ingest_source": source,
        "channel_map": cmap.as_dict(),
    }
    if tx.meta.get("mean_range_m"):
        meta["mean_range_m"] = float(tx.meta["mean_range_m"])
    if corr is not None:
        meta["correlation_sync"] = corr
    raw = RawRecords(
        rep_rate_hz=R,
        intensities=np.asarray(src.intensities, dtype=float),
        probabilities=np.asarray(src.probabilities, dtype=float),
        alice_pulse_index=np.ascontiguousarray(a_idx, dtype=np.int64),
        alice_intensity=np.ascontiguousarray(a_int, dtype=np.uint8),
        alice_basis=np.ascontiguousarray(a_bas, dtype=np.uint8),
        alice_bit=np.ascontiguousarray(a_bit, dtype=np.uint8),
        slice_start_s=np.asarray(slice_start, dtype=float),
        slice_emitted=np.asarray(emitted, dtype=np.int64),
        bob_time_ps=np.ascontiguousarray(bob_t, dtype=np.int64),
        bob_detector=np.ascontiguousarray(bob_d, dtype=np.uint8),
        beacon_time_ps=np.ascontiguousarray(beacon_t, dtype=np.int64),
        beacon_index=np.ascontiguousarray(b_idx, dtype=np.int64),
        beacon_rate_hz=float(b_rate),
        window_ns=float(tim.window_ns),
        meta=meta,
    )
    rep = IngestReport(
        tags_read=tags.n, detector_tags=int(bob_t.size), beacon_tags=int(beacon_t.size) if use_beacon else 0,
        dropped_tags=dropped, sync=method, channel_map=cmap.as_dict(), transmitter=tx.kind,
        alice_pulses=int(a_idx.size), source=dict(tags.meta), correlation=corr,
    )
    return raw, rep
