"""Plain tables of time tags: CSV, Parquet, HDF5 with a ``channel`` column and a time column.

The time column is ``time_ps`` (integers, picoseconds), or ``time_ns`` / ``time_s`` (converted and
rounded to the nearest ps). HDF5: datasets ``channel`` and ``time_ps`` at the root or in a group
``tags``. Rows need not be sorted (they are sorted by time, stably).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import IngestError, require
from .tags import TimeTags

__all__ = ["read_table", "write_table"]

_TIME_COLS = {"time_ps": 1.0, "time_ns": 1e3, "time_s": 1e12}


def _columns(p: Path) -> dict:
    ext = p.suffix.lower()
    if ext == ".csv":
        with open(p) as fh:
            header = fh.readline().strip().split(",")
        if not header or header == [""]:
            raise IngestError(f"{p}: empty CSV file (need a header line channel,time_ps)")
        names = [h.strip() for h in header]
        try:
            a = np.loadtxt(p, delimiter=",", skiprows=1, dtype=np.float64 if "time_s" in names or "time_ns" in names else np.int64, ndmin=2)
        except ValueError as exc:
            raise IngestError(f"{p}: malformed CSV row: {exc}") from None
        if a.size and a.shape[1] != len(names):
            raise IngestError(f"{p}: rows have {a.shape[1]} values, the header names {len(names)}")
        return {n: (a[:, i] if a.size else np.zeros(0)) for i, n in enumerate(names)}
    if ext == ".parquet":
        pq = require("pyarrow.parquet")
        t = pq.read_table(p)
        return {n: t.column(n).to_numpy() for n in t.column_names}
    if ext in (".h5", ".hdf5"):
        h5py = require("h5py")
        with h5py.File(p, "r") as f:
            g = f["tags"] if "tags" in f else f
            return {k: g[k][()] for k in g.keys() if isinstance(g[k], h5py.Dataset)}
    raise IngestError(f"{p}: unknown table type {ext!r} (csv, parquet, h5/hdf5)")


def read_table(path: str | Path) -> TimeTags:
    """Tags of a table file (module docstring). Raises :class:`IngestError` on a malformed file."""
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"{p}: no such file")
    try:
        cols = _columns(p)
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise IngestError(f"{p}: cannot read as a table: {exc}") from exc
    tcol = next((c for c in _TIME_COLS if c in cols), None)
    if "channel" not in cols or tcol is None:
        raise IngestError(f"{p}: a tag table needs columns channel and time_ps (or time_ns / time_s); found {', '.join(cols)}")
    ch, t = np.asarray(cols["channel"]), np.asarray(cols[tcol])
    if ch.shape != t.shape or ch.ndim != 1:
        raise IngestError(f"{p}: channel and {tcol} must be 1-D columns of one length")
    if ch.size and (np.any(ch < 0) or np.any(ch != np.round(ch))):
        raise IngestError(f"{p}: channel must hold non-negative integers")
    if tcol == "time_ps" and np.issubdtype(t.dtype, np.integer):
        time_ps = t.astype(np.int64)
    else:
        if not np.all(np.isfinite(t)):
            raise IngestError(f"{p}: {tcol} holds non-finite values")
        time_ps = np.rint(t.astype(np.float64) * _TIME_COLS[tcol]).astype(np.int64)
    channel = ch.astype(np.int16)
    if time_ps.size > 1 and np.any(np.diff(time_ps) < 0):
        o = np.argsort(time_ps, kind="stable")
        time_ps, channel = time_ps[o], channel[o]
    return TimeTags(channel, time_ps, {"format": "table", "file_type": p.suffix.lower().lstrip("."), "time_column": tcol})


def write_table(path: str | Path, channel: np.ndarray, time_ps: np.ndarray) -> Path:
    """Write tags as CSV / Parquet / HDF5 (by extension) with columns ``channel``, ``time_ps``."""
    p = Path(path)
    ext = p.suffix.lower()
    ch = np.asarray(channel, dtype=np.int16)
    t = np.asarray(time_ps, dtype=np.int64)
    tmp = p.with_name(p.name + ".tmp")
    if ext == ".csv":
        np.savetxt(tmp, np.column_stack([ch, t]), fmt="%d", delimiter=",", header="channel,time_ps", comments="")
    elif ext == ".parquet":
        pa = require("pyarrow")
        require("pyarrow.parquet").write_table(pa.table({"channel": ch, "time_ps": t}), tmp)
    elif ext in (".h5", ".hdf5"):
        with require("h5py").File(tmp, "w") as f:
            f["channel"], f["time_ps"] = ch, t
    else:
        raise ValueError(f"unknown table type {ext!r}")
    tmp.replace(p)
    return p
