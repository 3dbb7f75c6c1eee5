"""Saving and loading raw records: one compressed NumPy archive per pass.

Format (``raw.npz``; see ``docs/raw-format.md``): every field of :class:`satqkd.records.RawRecords`
under its own name. Sorted integer streams (pulse indices, time tags) are stored as LEB128 varint
gaps (``<name>.gaps``, with ``<name>.n``), small labels bit-packed (``<name>.bits<k>``: k bits per
value), other arrays as they are; ``meta_json`` holds the free-form metadata as JSON. This is
~6x smaller than raw int64 and ~50x faster to write than zlib. ``format_version`` guards the layout.
The bytes are those of ``satqkd.protocol.compress.encode_sorted`` / ``pack_bits``; here they are
produced by fused ``numba`` kernels straight from the arrays (no gap / bit temporaries).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import fields
from pathlib import Path

import numba
import numpy as np

from .records import RawRecords

__all__ = ["save_raw", "load_raw", "RAW_FILENAME", "FORMAT_VERSION"]

RAW_FILENAME = "raw.npz"
FORMAT_VERSION = 2

# field → bits per value for bit-packed label arrays
_PACKED = {"alice_intensity": 2, "alice_basis": 1, "alice_bit": 1, "bob_detector": 2}
_SORTED = ("alice_pulse_index", "bob_time_ps", "beacon_index", "beacon_time_ps")


def save_raw(raw: RawRecords, directory: str | Path, *, include_truth: bool = False) -> Path:
    """Write ``raw`` to ``directory/raw.npz`` (atomically: temp file then rename).

    Simulation ground truth (``truth_*`` fields) is left out unless ``include_truth``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"format_version": np.asarray(FORMAT_VERSION)}
    for f in fields(RawRecords):
        v = getattr(raw, f.name)
        if f.name == "meta":
            arrays["meta_json"] = np.asarray(json.dumps(v, default=str))
        elif v is None or (f.name.startswith("truth_") and not include_truth):
            continue
        elif f.name in _SORTED and _is_sorted(np.asarray(v)):
            a = np.ascontiguousarray(v, dtype=np.int64)
            base = _base(a)
            arrays[f.name + ".gaps"] = _encode_gaps(a, base)
            arrays[f.name + ".base"] = np.asarray(base, dtype=np.int64)
            arrays[f.name + ".n"] = np.asarray(len(v))
        elif f.name in _PACKED:
            k = _PACKED[f.name]
            a = np.ascontiguousarray(v, dtype=np.uint8)
            arrays[f.name + f".bits{k}"] = _pack_bits_k(a, k)
            arrays[f.name + ".n"] = np.asarray(a.size)
        else:
            arrays[f.name] = np.asarray(v)
    tmp = d / (RAW_FILENAME + ".tmp.npz")
    _savez(tmp, arrays)
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
            elif f.name + ".gaps" in z:
                n = int(z[f.name + ".n"])
                kwargs[f.name] = _decode_gaps(z[f.name + ".gaps"], n, int(z[f.name + ".base"]))
            elif f.name in _PACKED and f"{f.name}.bits{_PACKED[f.name]}" in z:
                k, n = _PACKED[f.name], int(z[f.name + ".n"])
                kwargs[f.name] = _unpack_bits_k(z[f"{f.name}.bits{k}"], n, k)
            elif f.name in z:
                a = z[f.name]
                kwargs[f.name] = a.item() if a.ndim == 0 else a
        return RawRecords(**kwargs)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez(path, **arrays)`` (stored, uncompressed ``.npy`` members), but contiguous arrays are
    written from their buffer in one piece instead of through 16 MiB ``tobytes`` copies."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            a = np.asanyarray(value)
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                if a.dtype.hasobject or not a.flags.c_contiguous or a.ndim == 0:
                    np.lib.format.write_array(fh, a, allow_pickle=False)
                else:
                    np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(a))
                    fh.write(memoryview(a).cast("B"))


def _is_sorted(a: np.ndarray) -> bool:
    """Strictly increasing 1-D integer array."""
    return a.ndim == 1 and np.issubdtype(a.dtype, np.integer) and (a.size < 2 or bool(np.all(a[1:] > a[:-1])))


def _base(a) -> int:
    """Streams may start below zero (e.g. Bob's clock offset); store gaps from the minimum."""
    return int(min(0, a[0])) if len(a) else 0


def _encode_gaps(a: np.ndarray, base: int) -> np.ndarray:
    """LEB128 varints (7 bits per byte, low group first, high bit = continuation) of the gaps of the
    strictly increasing ``a``, the first from ``base`` (``compress.encode_sorted(a - base)``)."""
    out = np.empty(_gap_bytes(a, np.int64(base)), dtype=np.uint8)
    _write_gaps(a, np.int64(base), out)
    return out


def _decode_gaps(data: np.ndarray, n: int, base: int) -> np.ndarray:
    b = np.ascontiguousarray(data, dtype=np.uint8)
    if b.size and b[-1] & 0x80:
        raise ValueError("truncated varint stream")
    out = np.empty(n, dtype=np.int64)
    got = _read_gaps(b, np.int64(base), out)
    if got == -1:
        raise ValueError("varint longer than 10 bytes")
    if got != n:
        raise ValueError(f"expected {n} varints, decoded {got}")
    return out


def _pack_bits_k(a: np.ndarray, k: int) -> np.ndarray:
    """The low ``k`` bits of every value, most significant first, packed MSB-first into bytes
    (``np.packbits`` of the interleaved bits; the length travels separately)."""
    out = np.zeros((a.size * k + 7) // 8, dtype=np.uint8)
    _pack_kernel(a, k, out)
    return out


def _unpack_bits_k(data: np.ndarray, n: int, k: int) -> np.ndarray:
    b = np.ascontiguousarray(data, dtype=np.uint8)
    if b.size * 8 < n * k or b.size * 8 - n * k >= 8:
        raise ValueError(f"packed bit string of {b.size} bytes cannot hold exactly {n * k} bits")
    out = np.empty(n, dtype=np.uint8)
    _unpack_kernel(b, k, out)
    return out


@numba.njit(cache=True, nogil=True)
def _gap_bytes(a, base):  # pragma: no cover - compiled
    n = 0
    prev = base
    for i in range(a.size):
        x = np.uint64(a[i] - prev)
        prev = a[i]
        n += 1
        while x >= 0x80:
            x >>= np.uint64(7)
            n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _write_gaps(a, base, out):  # pragma: no cover - compiled
    n = 0
    prev = base
    for i in range(a.size):
        x = np.uint64(a[i] - prev)
        prev = a[i]
        while x >= 0x80:
            out[n] = np.uint8((x & np.uint64(0x7F)) | np.uint64(0x80))
            x >>= np.uint64(7)
            n += 1
        out[n] = np.uint8(x)
        n += 1


@numba.njit(cache=True, nogil=True)
def _read_gaps(b, base, out):  # pragma: no cover - compiled
    n = 0
    acc = np.uint64(0)
    shift = 0
    prev = base
    for i in range(b.size):
        x = b[i]
        acc |= np.uint64(x & 0x7F) << np.uint64(shift)
        if x & 0x80:
            shift += 7
            if shift > 63:
                return -1
        else:
            if n < out.size:
                prev += np.int64(acc)
                out[n] = prev
            n += 1
            acc = np.uint64(0)
            shift = 0
    return n


@numba.njit(cache=True, nogil=True)
def _pack_kernel(a, k, out):  # pragma: no cover - compiled
    if 8 % k == 0:  # whole values per byte: build each byte at once
        per = 8 // k
        low = (1 << k) - 1
        full = a.size // per
        for q in range(full):
            v = 0
            for r in range(per):
                v = (v << k) | (a[q * per + r] & low)
            out[q] = v
        if full * per < a.size:
            v = 0
            for r in range(per):
                i = full * per + r
                v = (v << k) | ((a[i] & low) if i < a.size else 0)
            out[full] = v
        return
    pos = 0
    for i in range(a.size):
        v = a[i]
        for j in range(k - 1, -1, -1):
            if (v >> j) & 1:
                out[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
            pos += 1


@numba.njit(cache=True, nogil=True)
def _unpack_kernel(b, k, out):  # pragma: no cover - compiled
    pos = 0
    for i in range(out.size):
        v = 0
        for _ in range(k):
            v = (v << 1) | ((b[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        out[i] = v
