"""Compact encodings for the big classical messages (detected pulse indices, bases, labels).

A pass has ~3.5 million detections; sending their pulse indices as int64 would take 28 MB, i.e.
~4 minutes on the paper's 1 Mbit/s uplink. Sorted indices are sent as gaps in LEB128 varints
(~2 bytes each for the preset) and small labels are bit-packed. All vectorised NumPy.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["varint_encode", "varint_decode", "encode_sorted", "decode_sorted", "pack_bits", "unpack_bits", "pack_2bit", "unpack_2bit"]


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 encoding of non-negative integers (7 bits per byte, high bit = continuation)."""
    v = np.ascontiguousarray(values, dtype=np.uint64)
    out, n = _varint_encode(v)
    return out[:n].tobytes()


@numba.njit(cache=True, nogil=True)
def _varint_encode(v):
    out = np.empty(v.size * 10, dtype=np.uint8)
    n = 0
    for i in range(v.size):
        x = v[i]
        while x >= 0x80:
            out[n] = np.uint8((x & np.uint64(0x7F)) | np.uint64(0x80))
            x >>= np.uint64(7)
            n += 1
        out[n] = np.uint8(x)
        n += 1
    return out, n


def varint_decode(data: bytes, count: int | None = None) -> np.ndarray:
    """Inverse of :func:`varint_encode`; ``count`` (if given) is checked."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size and b[-1] & 0x80:
        raise ValueError("truncated varint stream")
    out, n = _varint_decode(b)
    if n < 0:
        raise ValueError("varint longer than 10 bytes")
    out = out[:n]
    if count is not None and n != count:
        raise ValueError(f"expected {count} varints, decoded {n}")
    return out


@numba.njit(cache=True, nogil=True)
def _varint_decode(b):
    out = np.empty(b.size, dtype=np.uint64)
    n = 0
    acc = np.uint64(0)
    shift = 0
    for i in range(b.size):
        x = b[i]
        acc |= np.uint64(x & 0x7F) << np.uint64(shift)
        if x & 0x80:
            shift += 7
            if shift > 63:
                return out, -1
        else:
            out[n] = acc
            n += 1
            acc = np.uint64(0)
            shift = 0
    return out, n


def encode_sorted(indices: np.ndarray) -> bytes:
    """Strictly increasing non-negative integers → varint gaps."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx[0] < 0 or np.any(np.diff(idx) <= 0)):
        raise ValueError("indices must be non-negative and strictly increasing")
    gaps = np.diff(idx, prepend=np.int64(0)) if idx.size else idx
    return varint_encode(gaps.astype(np.uint64))


def decode_sorted(data: bytes, count: int | None = None) -> np.ndarray:
    return np.cumsum(varint_decode(data, count).astype(np.int64))


def pack_bits(bits: np.ndarray) -> bytes:
    """0/1 array → bytes, MSB first (the length travels separately)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def unpack_bits(data: bytes, n: int) -> np.ndarray:
    a = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if a.size < n or a.size - n >= 8:
        raise ValueError(f"packed bit string of {len(data)} bytes cannot hold exactly {n} bits")
    return a[:n]


def pack_2bit(values: np.ndarray) -> bytes:
    """Values in 0..3 → 2 bits each."""
    v = np.asarray(values, dtype=np.uint8)
    if v.size and v.max() > 3:
        raise ValueError("pack_2bit takes values 0..3")
    return pack_bits(np.stack([(v >> 1) & 1, v & 1], axis=1).ravel())


def unpack_2bit(data: bytes, n: int) -> np.ndarray:
    b = unpack_bits(data, 2 * n).reshape(n, 2)
    return (b[:, 0] << 1) | b[:, 1]
