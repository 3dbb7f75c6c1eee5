"""Compact encodings for the big classical messages (detected pulse indices, bases, labels).

A pass has ~3.5 million detections; sending their pulse indices as int64 would take 28 MB, i.e.
~4 minutes on the paper's 1 Mbit/s uplink. Sorted indices are sent as gaps in LEB128 varints
(~2 bytes each for the preset) and small labels are bit-packed. All vectorised NumPy.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "varint_encode", "varint_decode", "encode_sorted", "decode_sorted", "encode_gaps", "decode_gaps",
    "pack_bits", "unpack_bits", "pack_2bit", "unpack_2bit", "pack_kbits", "unpack_kbits",
]


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 encoding of non-negative integers (7 bits per byte, high bit = continuation)."""
    v = np.ascontiguousarray(values, dtype=np.uint64)
    out, n = _varint_encode(v)
    return out[:n].tobytes()


@numba.njit(cache=True, nogil=True)
def _put_varint(x, out, n):  # pragma: no cover - compiled
    """Write ``x`` (uint64) as a LEB128 varint at ``out[n:]``; return the next free position."""
    while x >= 0x80:
        out[n] = np.uint8((x & np.uint64(0x7F)) | np.uint64(0x80))
        x >>= np.uint64(7)
        n += 1
    out[n] = np.uint8(x)
    return n + 1


@numba.njit(cache=True, nogil=True)
def _varint_encode(v):
    out = np.empty(v.size * 10, dtype=np.uint8)
    n = 0
    for i in range(v.size):
        n = _put_varint(v[i], out, n)
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
    """Strictly increasing non-negative integers → varint gaps (the first from 0)."""
    return encode_gaps(np.asarray(indices, dtype=np.int64), 0).tobytes()


def decode_sorted(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`encode_sorted` for exactly ``count`` values."""
    return decode_gaps(data, count, 0)


def pack_bits(bits: np.ndarray) -> bytes:
    """0/1 array → bytes, MSB first (the length travels separately)."""
    return pack_kbits(bits, 1).tobytes()


def unpack_bits(data: bytes, n: int) -> np.ndarray:
    return unpack_kbits(data, n, 1)


def pack_2bit(values: np.ndarray) -> bytes:
    """Values in 0..3 → 2 bits each."""
    return pack_kbits(values, 2).tobytes()


def unpack_2bit(data: bytes, n: int) -> np.ndarray:
    return unpack_kbits(data, n, 2)


def encode_gaps(a: np.ndarray, base: int = 0) -> np.ndarray:
    """LEB128 varints (7 bits per byte, low group first, high bit = continuation) of the gaps of the
    strictly increasing ``a``, the first gap from ``base``."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size and (a[0] < base or np.any(a[1:] <= a[:-1])):
        raise ValueError("values must be strictly increasing and not below base")
    out = np.empty(_gap_bytes(a, np.int64(base)), dtype=np.uint8)
    _write_gaps(a, np.int64(base), out)
    return out


def decode_gaps(data, n: int, base: int = 0) -> np.ndarray:
    """Inverse of :func:`encode_gaps`: exactly ``n`` values (bytes or a uint8 array)."""
    b = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.ascontiguousarray(data, dtype=np.uint8)
    if b.size and b[-1] & 0x80:
        raise ValueError("truncated varint stream")
    out = np.empty(n, dtype=np.int64)
    got = _read_gaps(b, np.int64(base), out)
    if got == -1:
        raise ValueError("varint longer than 10 bytes")
    if got != n:
        raise ValueError(f"expected {n} varints, decoded {got}")
    return out


def pack_kbits(a: np.ndarray, k: int) -> np.ndarray:
    """The low ``k`` bits of every value, most significant first, packed MSB-first into bytes
    (``np.packbits`` of the interleaved bits; the length travels separately)."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if not 1 <= k <= 8:
        raise ValueError(f"k must be in 1..8, got {k}")
    if a.size and int(a.max()) >> k:
        raise ValueError(f"values must fit in {k} bits")
    out = np.zeros((a.size * k + 7) // 8, dtype=np.uint8)
    _pack_kernel(a, k, out)
    return out


def unpack_kbits(data, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_kbits` for exactly ``n`` values."""
    b = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.ascontiguousarray(data, dtype=np.uint8)
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
        n = _put_varint(np.uint64(a[i] - prev), out, n)
        prev = a[i]


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
