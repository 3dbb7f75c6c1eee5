"""Compact encodings for the big classical messages (detected pulse indices, bases, labels).

A pass has ~3.5 million detections; sending their pulse indices as int64 would take 28 MB, i.e.
~4 minutes on the paper's 1 Mbit/s uplink. Sorted indices are sent as gaps in LEB128 varints
(~2 bytes each for the preset) and small labels are bit-packed. All vectorised NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["varint_encode", "varint_decode", "encode_sorted", "decode_sorted", "pack_bits", "unpack_bits", "pack_2bit", "unpack_2bit"]


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 encoding of non-negative integers (7 bits per byte, high bit = continuation)."""
    v = np.asarray(values, dtype=np.uint64)
    if v.size == 0:
        return b""
    nb = np.ones(v.size, dtype=np.int64)
    for k in range(1, 10):
        nb += v >= np.uint64(1) << np.uint64(7 * k)
    offsets = np.cumsum(nb) - nb
    out = np.empty(int(nb.sum()), dtype=np.uint8)
    for k in range(int(nb.max())):
        sel = nb > k
        byte = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        cont = np.where(nb[sel] > k + 1, np.uint64(0x80), np.uint64(0))
        out[offsets[sel] + k] = (byte | cont).astype(np.uint8)
    return out.tobytes()


def varint_decode(data: bytes, count: int | None = None) -> np.ndarray:
    """Inverse of :func:`varint_encode`; ``count`` (if given) is checked."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        out = np.zeros(0, dtype=np.uint64)
    else:
        if b[-1] & 0x80:
            raise ValueError("truncated varint stream")
        ends = np.flatnonzero((b & 0x80) == 0)
        starts = np.concatenate(([0], ends[:-1] + 1))
        group = np.repeat(np.arange(ends.size), ends - starts + 1)
        pos = np.arange(b.size) - starts[group]
        if pos.max() > 9:
            raise ValueError("varint longer than 10 bytes")
        part = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
        out = np.add.reduceat(part, starts)
    if count is not None and out.size != count:
        raise ValueError(f"expected {count} varints, decoded {out.size}")
    return out


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
