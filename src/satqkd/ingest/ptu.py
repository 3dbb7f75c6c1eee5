"""PicoQuant PTU files (TTTR T2 and T3 records): read through ``ptufile``, write for tests and benchmarks.

Reading: ``ptufile.PtuFile`` parses the tag header and reads the 32-bit records (memory-mapped);
a compiled one-pass decoder (:func:`_decode`, the record layouts of PicoQuant's demo code) unfolds
overflow / wrap-around records into absolute times and keeps photon records only, straight into the
output arrays (``ptufile.decode_records`` builds a 16-byte-per-record recarray first, ~3x slower for
the whole read; the tests check both decoders agree). Times are converted to picoseconds:

* **T2** (``Measurement_Mode`` 2): ``time_ps = time · MeasDesc_GlobalResolution``;
* **T3** (mode 3): ``time_ps = nsync · MeasDesc_GlobalResolution + dtime · MeasDesc_Resolution``
  (the sync input counts the laser pulses, ``dtime`` is the delay after the last sync).

When the resolutions are whole picoseconds (every PicoQuant instrument: 1, 4, 5, 25 ps …) the
conversion is exact integer arithmetic; otherwise it is rounded to the nearest ps.

Writing: ``ptufile``'s own writer (``PtuWriter``/``imwrite``) only writes T3 *image* histograms (its
docstring: "the TTTR records written can only be used to reconstruct the encoded TCSPC histogram"),
so :func:`write_ptu` writes time-tag files itself: the tag header with ``ptufile``'s ``encode_tag``
and ``GenericT2``/``GenericT3`` records (MultiHarp / PicoHarp 330 layout: bit 31 special, 6 channel
bits, 25-bit T2 time or 15-bit dtime + 10-bit nsync, overflow = special channel 63 carrying the
number of wraps). Files it writes are read back by ``ptufile`` (the tests check this).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numba
import numpy as np

from .errors import IngestError, require
from .tags import TimeTags

__all__ = ["read_ptu", "write_ptu", "PTU_MAGIC", "SYNC_CHANNEL"]

PTU_MAGIC = b"PQTTTR\x00\x00"
_T2_TYPES = {0x00010203: "PicoHarpT2", 0x00010204: "HydraHarpT2", 0x01010204: "HydraHarp2T2",
             0x00010205: "TimeHarp260NT2", 0x00010206: "TimeHarp260PT2", 0x00010207: "GenericT2"}
_T3_TYPES = {0x00010303: "PicoHarpT3", 0x00010304: "HydraHarpT3", 0x01010304: "HydraHarp2T3",
             0x00010305: "TimeHarp260NT3", 0x00010306: "TimeHarp260PT3", 0x00010307: "GenericT3"}
_T2_WRAP = 1 << 25
_T3_WRAP = 1 << 10
_MAX_OVF = 127


def _ps(seconds: float) -> tuple[int | None, float]:
    """(whole ps or None, ps as float) of a resolution in seconds."""
    ps = float(seconds) * 1e12
    r = round(ps)
    return (int(r) if r >= 1 and abs(ps - r) < 1e-6 * max(1.0, ps) else None), ps


def read_ptu(path: str | Path) -> TimeTags:
    """Photon records of a PTU file as :class:`TimeTags` (channels as recorded, 0-based inputs).

    Raises :class:`IngestError` for a file that is not PTU (wrong magic), not TTTR, has an unknown
    record type, or is truncated (fewer records than ``TTResult_NumberOfRecords``).
    """
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"{p}: no such file")
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic != PTU_MAGIC:
        raise IngestError(f"{p}: not a PicoQuant PTU file (magic {magic!r}, expected {PTU_MAGIC!r})")
    ptufile = require("ptufile")
    try:
        with ptufile.PtuFile(p) as pf:
            rectype = int(pf.tags.get("TTResultFormat_TTTRRecType", -1))
            if rectype not in _T2_TYPES and rectype not in _T3_TYPES:
                raise IngestError(f"{p}: unknown TTTR record type 0x{rectype & 0xFFFFFFFF:08x} (TTResultFormat_TTTRRecType)")
            if int(pf.tags.get("TTResultFormat_BitsPerRecord", 32)) not in (0, 32):
                raise IngestError(f"{p}: records of {pf.tags['TTResultFormat_BitsPerRecord']} bits; PTU TTTR records are 32 bits")
            expected = int(pf.tags.get("TTResult_NumberOfRecords", 0))
            held = (os.path.getsize(p) - _data_offset(p, pf)) // 4
            if expected > 0 and held < expected:
                raise IngestError(f"{p}: truncated: the header announces {expected:,} records, the file holds {held:,}")
            records = pf.read_records(memmap=True)
            t3 = rectype in _T3_TYPES
            g_int, g_ps = _ps(pf.global_resolution)
            r_int, r_ps = _ps(pf.tags.get("MeasDesc_Resolution", pf.global_resolution))
            channel, ticks, dtime = _decode(np.asarray(records), rectype)
            n_records = int(records.size)
            del records
    except IngestError:
        raise
    except (ValueError, OSError, KeyError, struct_error()) as exc:
        raise IngestError(f"{p}: cannot read as PTU: {exc}") from exc
    if t3:
        if g_int is not None and r_int is not None:
            time_ps = _t3_ps(ticks, dtime, g_int, r_int)
        else:
            time_ps = np.rint(ticks * g_ps + dtime * r_ps).astype(np.int64)
    elif g_int is not None:
        time_ps = ticks if g_int == 1 else ticks * g_int
    else:
        time_ps = np.rint(ticks * g_ps).astype(np.int64)
    meta = {
        "format": "ptu",
        "record_type": (_T3_TYPES if t3 else _T2_TYPES)[rectype],
        "mode": "T3" if t3 else "T2",
        "global_resolution_ps": g_ps,
        "resolution_ps": r_ps,
        "records": n_records,
        "non_photon_records": int(n_records - channel.size),
    }
    return TimeTags(channel, time_ps, meta)


# record layouts (PicoQuant's TTTR demo code, "PTU file format" documentation):
#   PicoHarp T2  : channel 4 bits (28-31), time 28 bits; channel 15 = special: markers in the low 4 bits,
#                  none = overflow (+210698240)
#   PicoHarp T3  : channel 4 bits (28-31, photon inputs 1..4), dtime 12 bits, nsync 16 bits; channel 15 =
#                  special: dtime 0 = overflow (+65536 syncs), else markers
#   HydraHarp V1 / V2, TimeHarp 260, Generic (MultiHarp, PicoHarp 330): special bit 31, channel 6 bits
#                  (25-30); T2: time 25 bits, T3: dtime 15 bits (10-24) + nsync 10 bits; special channel 63 =
#                  overflow (V1: one wrap of 33552000 (T2) / 1024 (T3); V2: count in the time field, 0 = 1),
#                  special channel 0 in T2 = an event on the sync input (→ SYNC_CHANNEL), others markers
#: channel number given to the sync input's events in T2 files (HydraHarp, TimeHarp 260, MultiHarp), so a
#: beacon wired to the sync input can be mapped (``beacon=64``)
SYNC_CHANNEL = 64
_LAYOUT = {0x00010203: 0, 0x00010303: 1, 0x00010204: 2, 0x00010304: 3}  # else V2 T2 (4) / V2 T3 (5)


@numba.njit(cache=True, nogil=True)
def _decode_kernel(rec, layout, channel, ticks, dtime):  # pragma: no cover - compiled
    """Photons of ``rec``: channel, absolute time in resolution units (T2) or syncs (T3), dtime."""
    n = 0
    ofl = np.int64(0)
    for i in range(rec.size):
        r = np.int64(rec[i])
        if layout == 0:
            ch = r >> 28
            if ch == 15:
                if (r & 0xF) == 0:
                    ofl += 210698240
                continue
            channel[n] = ch
            ticks[n] = ofl + (r & 0x0FFFFFFF)
        elif layout == 1:
            ch = r >> 28
            dt = (r >> 16) & 0xFFF
            if ch == 15:
                if dt == 0:
                    ofl += 65536
                continue
            if ch == 0 or ch > 4:
                continue
            channel[n] = ch - 1
            ticks[n] = ofl + (r & 0xFFFF)
            dtime[n] = dt
        else:
            special = (r >> 31) & 1
            ch = (r >> 25) & 0x3F
            t3 = layout == 3 or layout == 5
            if special:
                if ch == 63:
                    if layout == 2:
                        ofl += 33552000
                    elif layout == 3:
                        ofl += 1024
                    else:
                        c = r & 0x1FFFFFF if not t3 else r & 0x3FF
                        ofl += (c if c else 1) * (1024 if t3 else 33554432)
                    continue
                if t3 or ch != 0:
                    continue  # markers
                ch = SYNC_CHANNEL  # T2: the sync input's events
            channel[n] = ch
            if t3:
                ticks[n] = ofl + (r & 0x3FF)
                dtime[n] = (r >> 10) & 0x7FFF
            else:
                ticks[n] = ofl + (r & 0x1FFFFFF)
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _t3_kernel(ticks, dtime, g, r, out):  # pragma: no cover - compiled
    for i in range(ticks.size):
        out[i] = ticks[i] * g + dtime[i] * r


def _decode(rec: np.ndarray, rectype: int):
    """``(channel int16, ticks int64, dtime int64)`` of the photon records (compiled, one pass; the
    arrays are trimmed views). Equals ``ptufile``'s ``decode_records`` on photons (tests)."""
    layout = _LAYOUT.get(rectype, 5 if rectype in _T3_TYPES else 4)
    channel = np.empty(rec.size, np.int16)
    ticks = np.empty(rec.size, np.int64)
    dtime = np.zeros(rec.size if rectype in _T3_TYPES else 0, np.int64)
    n = _decode_kernel(np.ascontiguousarray(rec, dtype=np.uint32), layout, channel, ticks, dtime)
    return channel[:n], ticks[:n], dtime[:n]


def _t3_ps(ticks, dtime, g: int, r: int) -> np.ndarray:
    out = np.empty(ticks.size, np.int64)
    _t3_kernel(ticks, dtime, np.int64(g), np.int64(r), out)
    return out


def _data_offset(p: Path, pf) -> int:
    """Byte offset of the first record: just after the ``Header_End`` tag (32-byte name, index, type,
    8-byte value)."""
    off = getattr(pf, "_data_offset", None)
    if isinstance(off, int):
        return off
    with open(p, "rb") as fh:
        head = fh.read(1 << 22)
    i = head.find(b"Header_End")
    if i < 0:
        raise IngestError(f"{p}: no Header_End tag in the PTU header")
    return i + 48


def struct_error():
    import struct

    return struct.error


def _with_overflows(wraps: np.ndarray, photon: np.ndarray) -> np.ndarray:
    """Insert overflow records (special, channel 63, carrying a count of wraps) before each photon
    whose wrap counter moved. Counts are written in records of at most 127 wraps: ``ptufile``
    (2026.2.6) decodes only the low 7 bits of the count (checked in ``tests/test_ingest.py``), and
    instruments write a record per few wraps anyway."""
    dw = np.diff(wraps, prepend=np.int64(0))
    at = np.flatnonzero(dw > 0)
    d = dw[at]
    nrec = -(-d // _MAX_OVF)
    pos = np.repeat(at, nrec)
    counts = np.full(pos.size, _MAX_OVF, dtype=np.int64)
    last = np.cumsum(nrec) - 1
    counts[last] = d - _MAX_OVF * (nrec - 1)
    ovf = (np.uint32(1) << np.uint32(31)) | (np.uint32(63) << np.uint32(25)) | counts.astype(np.uint32)
    return np.insert(photon, pos, ovf)


def write_ptu(
    path: str | Path,
    channel: np.ndarray,
    time_ps: np.ndarray,
    *,
    mode: str = "T2",
    resolution_ps: int = 1,
    sync_period_ps: int = 10_000,
    comment: str = "",
) -> Path:
    """Write time tags (sorted, ≥ 0 ps; channels 0..62) as a ``GenericT2``/``GenericT3`` PTU file.

    T2: times in units of ``resolution_ps``. T3: ``nsync = time // sync_period_ps`` and ``dtime =
    (time − nsync · sync_period_ps) / resolution_ps`` (must be < 2^15 bins). Times must be multiples
    of ``resolution_ps``. Written to a temporary name, then renamed.
    """
    enc = require("ptufile.ptufile")
    ch = np.asarray(channel, dtype=np.int64)
    t = np.asarray(time_ps, dtype=np.int64)
    if ch.shape != t.shape:
        raise ValueError("channel and time_ps must have the same length")
    if t.size and (t.min() < 0 or np.any(np.diff(t) < 0)):
        raise ValueError("time_ps must be sorted and >= 0")
    if ch.size and (ch.min() < 0 or ch.max() > 62):
        raise ValueError("channels must lie in 0..62")
    if np.any(t % resolution_ps):
        raise ValueError(f"times must be multiples of resolution_ps = {resolution_ps}")
    mode = mode.upper()
    if mode == "T2":
        u = t // resolution_ps
        photon = (ch.astype(np.uint32) << np.uint32(25)) | (u % _T2_WRAP).astype(np.uint32)
        rec = _with_overflows(u // _T2_WRAP, photon)
        rectype, meas_mode, g_res, res = 0x00010207, 2, resolution_ps * 1e-12, resolution_ps * 1e-12
    elif mode == "T3":
        nsync = t // sync_period_ps
        dtime = (t - nsync * sync_period_ps) // resolution_ps
        if dtime.size and dtime.max() >= 1 << 15:
            raise ValueError("sync_period_ps / resolution_ps must be < 2^15 bins for T3 records")
        photon = ((ch.astype(np.uint32) << np.uint32(25)) | (dtime.astype(np.uint32) << np.uint32(10))
                  | (nsync % _T3_WRAP).astype(np.uint32))
        rec = _with_overflows(nsync // _T3_WRAP, photon)
        rectype, meas_mode, g_res, res = 0x00010307, 3, sync_period_ps * 1e-12, resolution_ps * 1e-12
    else:
        raise ValueError(f"mode must be 'T2' or 'T3'; got {mode!r}")
    tags = {
        "File_GUID": f"{{{uuid.uuid4()}}}",
        "File_Comment": comment,
        "CreatorSW_Name": "satqkd",
        "Measurement_Mode": meas_mode,
        "Measurement_SubMode": 0,
        "MeasDesc_GlobalResolution": float(g_res),
        "MeasDesc_Resolution": float(res),
        "MeasDesc_BinningFactor": 1,
        "HW_InpChannels": int(ch.max() + 2) if ch.size else 1,
        "TTResult_SyncRate": int(round(1e12 / sync_period_ps)),
        "TTResult_NumberOfRecords": int(rec.size),
        "TTResultFormat_TTTRRecType": rectype,
        "TTResultFormat_BitsPerRecord": 32,
    }
    header = [b"PQTTTR\x00\x001.0.00\x00\x00"] + [enc.encode_tag(k, v) for k, v in tags.items()]
    header.append(enc.encode_tag("Header_End", None))
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"".join(header))
        fh.write(rec.astype("<u4").tobytes())
    tmp.replace(p)
    return p
