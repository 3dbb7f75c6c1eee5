"""Tables of a pass as pandas DataFrames, and their export to Parquet (pyarrow), HDF5 (h5py) and CSV.

Three tables, one row per:

* ``detections`` — synchronised detection (:class:`satqkd.quantum.timing.Detections`): pulse
  index, emission time ``t_s`` (``pulse / rep_rate``), Bob's basis and bit, detector bitmask,
  multi-click flag, and (when Alice's record is at hand) her intensity class, basis and bit;
* ``sifted`` — sifted event (:class:`satqkd.postprocess.sifting.SiftedEvents`): pulse, ``t_s``,
  intensity, basis, both bits and ``error``;
* ``timeseries`` — whole second of the pass: detections, sifted key bits (signal intensity) and
  errors, QBER; a simulated pass adds its link columns (``PassSimulation.timeseries()``).

:func:`pass_frames` computes them from raw records (the same synchronisation and sifting as
``satqkd simulate``); :func:`write_frames` writes them all or nothing (temp directory, then rename):
``<name>.parquet``, ``<name>.csv`` and one ``tables.h5`` holding a group per table with a dataset
per column. Parquet and HDF5 need the ``[data]`` extra (``pip install 'satqkd[data]'``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "detections_frame", "sifted_frame", "timeseries_frame", "pass_frames", "write_frames", "ExportError"]

FORMATS = ("parquet", "hdf5", "csv")
HDF5_FILENAME = "tables.h5"


class ExportError(ValueError):
    """Bad export request (unknown format, missing optional package)."""


def _pd():
    import pandas as pd

    return pd


def detections_frame(det, raw=None):
    """One row per synchronised detection; Alice's labels added when ``raw`` is given."""
    pd = _pd()
    rep = float(det.rep_rate_hz)
    d = {
        "pulse_index": np.asarray(det.pulse_index, dtype=np.int64),
        "t_s": np.asarray(det.pulse_index, dtype=np.float64) / rep,
        "bob_basis": np.asarray(det.bob_basis, dtype=np.uint8),
        "bob_bit": np.asarray(det.bob_bit, dtype=np.uint8),
        "detector_mask": np.asarray(det.detector_mask, dtype=np.uint8),
        "double_click": np.asarray(det.double_click, dtype=bool),
    }
    if raw is not None and raw.alice_pulse_index.size:
        from .quantum.timing import match_alice

        a_int, a_basis, a_bit = match_alice(raw, det)
        d.update(alice_intensity=a_int, alice_basis=a_basis, alice_bit=a_bit)
    return pd.DataFrame(d)


def sifted_frame(sifted, rep_rate_hz: float):
    """One row per sifted event (``error`` is ``alice_bit != bob_bit``)."""
    pd = _pd()
    d = {
        "pulse_index": np.asarray(sifted.pulse_index, dtype=np.int64),
        "t_s": np.asarray(sifted.pulse_index, dtype=np.float64) / float(rep_rate_hz),
        "intensity": np.asarray(sifted.intensity, dtype=np.uint8),
        "basis": np.asarray(sifted.basis, dtype=np.uint8),
    }
    if sifted.alice_bit is not None and sifted.bob_bit is not None:
        d.update(alice_bit=sifted.alice_bit, bob_bit=sifted.bob_bit, error=sifted.alice_bit != sifted.bob_bit)
    return pd.DataFrame(d)


def timeseries_frame(sifted, det, rep_rate_hz: float, t0_s: float | None = None, extra: dict | None = None):
    """Per whole second from ``t0_s`` (default: the first detection's second): detections, sifted key
    bits (signal intensity), errors, QBER. ``extra`` columns (same length) are appended, e.g. a
    simulated pass's ``timeseries()``."""
    pd = _pd()
    rep = float(rep_rate_hz)
    t_det = np.asarray(det.pulse_index, dtype=np.float64) / rep
    if t0_s is None:
        t0_s = float(np.floor(t_det.min())) if t_det.size else 0.0
    n = int(np.ceil(t_det.max() - t0_s + 1e-12)) if t_det.size else 0
    if extra is not None and "t_s" in extra:
        n = len(extra["t_s"])
    edges = t0_s + np.arange(n + 1, dtype=float)
    det_n = np.histogram(t_det, edges)[0]
    key = np.asarray(sifted.intensity) == 0
    t_key = np.asarray(sifted.pulse_index, dtype=np.float64)[key] / rep
    sift_n = np.histogram(t_key, edges)[0]
    d = {"t_s": edges[:-1] + 0.5, "detections": det_n, "sifted_bits": sift_n}
    if sifted.alice_bit is not None and sifted.bob_bit is not None:
        err = (np.asarray(sifted.alice_bit) != np.asarray(sifted.bob_bit))[key]
        err_n = np.histogram(t_key[err], edges)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            d.update(errors=err_n, qber=np.where(sift_n > 0, err_n / np.maximum(sift_n, 1), np.nan))
    if extra is not None:
        for k, v in extra.items():
            if k not in d:
                d[k] = np.asarray(v)
    return pd.DataFrame(d)


def pass_frames(raw, *, seed: int = 0, detections=None, timeseries_extra: dict | None = None) -> dict:
    """``{"detections", "sifted", "timeseries"}`` DataFrames of raw records: Bob's synchronisation
    (from ``SeedSequence(seed)``'s generator for the squashing bits, unless ``detections`` are
    given), Alice's labels, sifting. ``timeseries_extra``: per-second columns of a simulated pass
    (``PassSimulation.timeseries()`` or its ``timeseries.csv``, rows at ``t_s`` = whole second + 0.5
    from the pass start), whose link columns are added to the time series."""
    from .postprocess.sifting import sift
    from .quantum.timing import match_alice, synchronise

    det = detections if detections is not None else synchronise(raw, rng=np.random.default_rng(seed))
    a_int, a_basis, a_bit = match_alice(raw, det)
    s = sift(det.pulse_index, a_int, a_basis, det.bob_basis, a_bit, det.bob_bit)
    return {
        "detections": detections_frame(det, raw),
        "sifted": sifted_frame(s, raw.rep_rate_hz),
        "timeseries": timeseries_frame(
            s, det, raw.rep_rate_hz,
            t0_s=None if timeseries_extra is None else float(np.asarray(timeseries_extra["t_s"])[0]) - 0.5,
            extra=timeseries_extra),
    }


def _check_formats(formats) -> tuple[str, ...]:
    fm = tuple(formats)
    bad = [f for f in fm if f not in FORMATS]
    if bad or not fm:
        raise ExportError(f"export format must be among {', '.join(FORMATS)}; got {', '.join(bad) or 'none'}")
    need = {"parquet": "pyarrow", "hdf5": "h5py"}
    for f in fm:
        if f in need:
            try:
                __import__(need[f])
            except ImportError:  # pragma: no cover - depends on the environment
                raise ExportError(f"{f} export needs {need[f]}: install the data extra, pip install 'satqkd[data]'") from None
    return fm


def write_frames(frames: dict, out: str | Path, formats=FORMATS) -> list[Path]:
    """Write each DataFrame as ``<name>.parquet`` / ``<name>.csv`` and all into ``tables.h5``; files
    appear in ``out`` only when all were written. Returns the paths written."""
    fm = _check_formats(formats)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    names: list[str] = []
    try:
        for name, df in frames.items():
            if "parquet" in fm:
                df.to_parquet(tmp / f"{name}.parquet", index=False)
                names.append(f"{name}.parquet")
            if "csv" in fm:
                df.to_csv(tmp / f"{name}.csv", index=False)
                names.append(f"{name}.csv")
        if "hdf5" in fm:
            import h5py

            with h5py.File(tmp / HDF5_FILENAME, "w") as f:
                for name, df in frames.items():
                    g = f.create_group(name)
                    g.attrs["columns"] = ",".join(map(str, df.columns))
                    for col in df.columns:
                        g.create_dataset(col, data=df[col].to_numpy())
            names.append(HDF5_FILENAME)
        for n in names:
            os.replace(tmp / n, out / n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in names]


def read_hdf5_frames(path: str | Path) -> dict:
    """The DataFrames of a ``tables.h5`` written by :func:`write_frames`."""
    import h5py

    pd = _pd()
    with h5py.File(path, "r") as f:
        out = {}
        for name in f.keys():
            g = f[name]
            cols = str(g.attrs.get("columns", "")).split(",") if "columns" in g.attrs else list(g.keys())
            out[name] = pd.DataFrame({c: g[c][()] for c in cols})
        return out
