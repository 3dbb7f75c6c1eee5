"""Post-processing real detector data: read time tags from lab formats, write satqkd raw records.

``read_tags(path, fmt)`` reads PicoQuant PTU (T2/T3, :mod:`.ptu`), Photon-HDF5 (:mod:`.photon_hdf5`)
or a plain table (:mod:`.table`) into :class:`TimeTags`; :func:`ingest` adds the channel map
(:mod:`.channels`) and the transmitter's settings (:mod:`.transmitter`) and returns
:class:`~satqkd.records.RawRecords` in the simulator's format (:mod:`.build`), which
:func:`write_ingest` saves with :func:`satqkd.rawio.save_raw` (all or nothing). See ``docs/ingest.md``.

Example::

    >>> cfg = satqkd.load_preset("micius-2016-12-19")                           # doctest: +SKIP
    >>> raw, rep = ingest("pass.ptu", "ptu", "H=0,V=1,D=2,A=3,beacon=4",
    ...                   "alice.npz", cfg)                                       # doctest: +SKIP
    >>> result = satqkd.postprocess(raw, cfg)                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .build import IngestReport, beacon_indices, build_raw
from .channels import ChannelMap, parse_channel_map
from .errors import IngestError
from .photon_hdf5 import read_photon_hdf5, write_photon_hdf5
from .ptu import read_ptu, write_ptu
from .table import read_table, write_table
from .tags import TimeTags
from .transmitter import TransmitterSettings, load_transmitter, prng_settings

__all__ = [
    "FORMATS", "IngestError", "IngestReport", "TimeTags", "ChannelMap", "TransmitterSettings", "read_tags", "ingest",
    "write_ingest", "parse_channel_map", "load_transmitter", "prng_settings", "build_raw", "beacon_indices",
    "read_ptu", "write_ptu", "read_photon_hdf5", "write_photon_hdf5", "read_table", "write_table",
]

FORMATS = {"ptu": read_ptu, "photon-hdf5": read_photon_hdf5, "table": read_table}
REPORT_FILENAME = "ingest.json"


def read_tags(path: str | Path, fmt: str) -> TimeTags:
    """Time tags of ``path`` in format ``fmt`` (``ptu``, ``photon-hdf5`` or ``table``)."""
    if fmt not in FORMATS:
        raise IngestError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return FORMATS[fmt](path)


def ingest(path, fmt: str, channels, transmitter, cfg, **kw):
    """``(RawRecords, IngestReport)`` from a tag file, a channel map (string or mapping or
    :class:`ChannelMap`), transmitter settings (path or :class:`TransmitterSettings`) and the mission
    configuration; ``kw`` go to :func:`build_raw` (``time_origin_ps``, ``beacon_first_index``,
    ``sync``, ``correlation_options``)."""
    cmap = channels if isinstance(channels, ChannelMap) else parse_channel_map(channels)
    tx = transmitter if isinstance(transmitter, TransmitterSettings) else load_transmitter(
        transmitter, probabilities=cfg.source.probabilities)
    tags = read_tags(path, fmt)
    return build_raw(tags, cmap, tx, cfg, source=str(path), **kw)


def write_ingest(raw, report: IngestReport, out: str | Path) -> Path:
    """Write ``raw.npz`` (:func:`satqkd.rawio.save_raw`) and ``ingest.json`` into ``out``: first into a
    temporary directory beside it, then moved in, so a failure leaves ``out`` as it was."""
    from ..rawio import RAW_FILENAME, save_raw

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise IngestError(f"{out} exists and is not a directory")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.ingest-", dir=parent))
    try:
        save_raw(raw, tmp)
        (tmp / REPORT_FILENAME).write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
        if not out.exists():
            os.replace(tmp, out)
        else:
            for name in (RAW_FILENAME, REPORT_FILENAME):
                os.replace(tmp / name, out / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / RAW_FILENAME
