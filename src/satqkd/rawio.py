"""Saving and loading raw records: one compressed NumPy archive per pass.

Format (``raw.npz``, ``numpy.savez_compressed``; see ``docs/raw-format.md``): every array field of
:class:`satqkd.records.RawRecords` under its own name, scalars as 0-d arrays, and ``meta_json``
(a UTF-8 JSON string) for the free-form metadata. ``format_version`` guards the layout.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from .records import RawRecords

__all__ = ["save_raw", "load_raw", "RAW_FILENAME", "FORMAT_VERSION"]

RAW_FILENAME = "raw.npz"
FORMAT_VERSION = 1


def save_raw(raw: RawRecords, directory: str | Path) -> Path:
    """Write ``raw`` to ``directory/raw.npz`` (atomically: temp file then rename)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"format_version": np.asarray(FORMAT_VERSION)}
    for f in fields(RawRecords):
        v = getattr(raw, f.name)
        if f.name == "meta":
            arrays["meta_json"] = np.asarray(json.dumps(v, default=str))
        elif v is not None:
            arrays[f.name] = np.asarray(v)
    tmp = d / (RAW_FILENAME + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    final = d / RAW_FILENAME
    tmp.replace(final)
    return final


def load_raw(path: str | Path) -> RawRecords:
    """Read raw records from a ``raw.npz`` file or a directory holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / RAW_FILENAME
    if not p.is_file():
        raise FileNotFoundError(f"no raw records at {p} (expected a {RAW_FILENAME} written by `satqkd simulate`)")
    with np.load(p, allow_pickle=False) as z:
        version = int(z["format_version"]) if "format_version" in z else -1
        if version != FORMAT_VERSION:
            raise ValueError(f"{p}: raw format version {version}, this satqkd reads version {FORMAT_VERSION}")
        kwargs = {}
        for f in fields(RawRecords):
            if f.name == "meta":
                kwargs["meta"] = json.loads(str(z["meta_json"])) if "meta_json" in z else {}
            elif f.name in z:
                a = z[f.name]
                kwargs[f.name] = a.item() if a.ndim == 0 else a
        return RawRecords(**kwargs)
