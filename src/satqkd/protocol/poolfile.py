"""The pre-shared authentication key pool as a file: one copy at each party, bits never reused.

Two processes (satellite and ground station, see ``docs/two-processes.md``) authenticate their
classical messages with Wegman–Carter tags keyed from a pool of secret bits both hold identically
(:mod:`satqkd.postprocess.authentication`). One-time pads must never be used twice, so a pool file
is consumed from the front and the consumed bits are *removed from the file* — atomically (temp
file in the same directory, ``fsync``, ``os.replace``, ``fsync`` of the directory) and *before* the
bits are used (write-ahead: a crash mid-run can lose bits, never reuse them).

Layout (version 1, big-endian integers)::

    offset  size  field
    0       8     magic b"SQKPOOL1"
    8       16    pool id: random, identical in both copies (names the pair of copies; public)
    24      8     offset: bits consumed since the pool was made (the position of the first bit left)
    32      8     nbits: bits left
    40      1     flags: bit 0 = made from --seed (NOT secret: tests and demos only)
    41      n     ⌈nbits/8⌉ bytes of key, bit 0 = most significant bit of the first byte
                  (``KeyPool`` order), the unused low bits of the last byte zero
    41 + n  32    SHA-256 of everything before it (detects truncation and corruption, not tampering)

A file is ``41 + ⌈nbits/8⌉ + 32`` bytes. :func:`make_pool` writes one copy; copy it to the other
party over a trusted path (the copies are byte-identical while they stay in step).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..ledger import fsync_dir
from ..postprocess.authentication import HASH_KEY_BITS, P127, KeyPool

__all__ = [
    "PoolFile",
    "PoolFileError",
    "make_pool",
    "read_pool",
    "write_pool",
    "MAGIC",
    "MAX_POOL_BITS",
]

MAGIC = b"SQKPOOL1"
_HEADER = 41
_DIGEST = 32
FLAG_INSECURE = 0x01
#: largest pool make_pool writes (512 MiB of key)
MAX_POOL_BITS = 1 << 32


class PoolFileError(ValueError):
    """A pool file that is missing, malformed, corrupt, of another pair, or has too few bits."""


@dataclass(frozen=True)
class PoolFile:
    """One party's copy of the pool: header fields and the bits left (``data``)."""

    pool_id: bytes
    offset: int
    nbits: int
    insecure: bool
    data: bytes

    @property
    def id_hex(self) -> str:
        return self.pool_id.hex()

    def key_pool(self, nbits: int) -> KeyPool:
        """A :class:`KeyPool` of the first ``nbits`` bits left (what one run may consume)."""
        if not 0 <= nbits <= self.nbits:
            raise PoolFileError(f"the pool has {self.nbits} bits left, {nbits} needed")
        return KeyPool(self.data[: (nbits + 7) // 8], nbits)

    def hash_key_bits(self) -> int:
        """Pool bits the Wegman–Carter hash key takes at the front: 127 per draw, redrawn while the
        127 bits are ≥ 2^127 − 1 (``Authenticator``'s rejection; in practice always one draw).
        Raises :class:`PoolFileError` when the pool ends before a key is found."""
        kp = KeyPool(self.data, self.nbits)
        used = 0
        while True:
            if kp.remaining_bits < HASH_KEY_BITS:
                raise PoolFileError(f"the pool has {self.nbits} bits left: too few for the hash key")
            used += HASH_KEY_BITS
            if kp.take_int(HASH_KEY_BITS) < P127:
                return used

    def drop(self, nbits: int) -> "PoolFile":
        """The pool with its first ``nbits`` bits removed (``offset`` advanced by ``nbits``)."""
        if not 0 <= nbits <= self.nbits:
            raise PoolFileError(f"cannot drop {nbits} bits from a pool with {self.nbits} left")
        return replace(self, offset=self.offset + nbits, nbits=self.nbits - nbits, data=_drop_bits(self.data, self.nbits, nbits))

    def to_bytes(self) -> bytes:
        head = (
            MAGIC
            + self.pool_id
            + self.offset.to_bytes(8, "big")
            + self.nbits.to_bytes(8, "big")
            + bytes([FLAG_INSECURE if self.insecure else 0])
        )
        body = head + self.data
        return body + hashlib.sha256(body).digest()

    def __repr__(self) -> str:
        return f"PoolFile(id {self.id_hex[:12]}…, {self.nbits:,} bits left after {self.offset:,} used{', INSECURE' if self.insecure else ''})"


def _drop_bits(data: bytes, nbits: int, k: int) -> bytes:
    """Bits ``[k, nbits)`` of ``data`` (MSB first) repacked from bit 0, zero-padded to a byte."""
    rest = nbits - k
    nbytes = (rest + 7) // 8
    if rest == 0:
        return b""
    if k % 8 == 0:
        return bytes(data[k // 8 : k // 8 + nbytes])
    b0 = k // 8
    chunk = data[b0 : (nbits + 7) // 8]
    v = int.from_bytes(chunk, "big")
    width = 8 * len(chunk)
    v &= (1 << (width - (k - 8 * b0))) - 1  # clear the dropped bits of the first byte
    v >>= width - (k - 8 * b0) - rest  # drop the zero padding: v = the `rest` bits left
    return (v << (8 * nbytes - rest)).to_bytes(nbytes, "big")


def make_pool(path: str | Path, nbits: int, *, seed: int | None = None) -> PoolFile:
    """Write a new pool of ``nbits`` secret bits to ``path`` (refuses to overwrite a file).

    The bits and the pool id come from :func:`secrets.token_bytes` (the OS's CSPRNG). ``seed``
    draws them from ``numpy.random.default_rng(seed)`` instead: reproducible, **not secret**
    (flagged in the file; for tests and demos only).
    """
    p = Path(path)
    if not 1 <= nbits <= MAX_POOL_BITS:
        raise PoolFileError(f"--bits must lie in [1, {MAX_POOL_BITS}], got {nbits}")
    if p.exists():
        raise PoolFileError(f"{p} exists: a pool file is never overwritten (its bits may be in use); remove it first")
    if not p.parent.is_dir():
        raise PoolFileError(f"directory {p.parent} does not exist")
    nbytes = (nbits + 7) // 8
    if seed is None:
        pool_id, raw = secrets.token_bytes(16), secrets.token_bytes(nbytes)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9001]))
        pool_id, raw = rng.bytes(16), rng.bytes(nbytes)
    if nbits % 8:
        raw = raw[:-1] + bytes([raw[-1] & (0xFF << (8 - nbits % 8)) & 0xFF])
    pf = PoolFile(pool_id=pool_id, offset=0, nbits=nbits, insecure=seed is not None, data=raw)
    write_pool(pf, p)
    return pf


def read_pool(path: str | Path) -> PoolFile:
    """Read and check a pool file (magic, length, checksum)."""
    p = Path(path)
    if not p.is_file():
        raise PoolFileError(f"no pool file at {p} (make one with `satqkd party make-pool`)")
    b = p.read_bytes()
    if len(b) < _HEADER + _DIGEST or b[:8] != MAGIC:
        raise PoolFileError(f"{p} is not a satqkd pool file (bad magic or too short)")
    if hashlib.sha256(b[:-_DIGEST]).digest() != b[-_DIGEST:]:
        raise PoolFileError(f"{p}: checksum mismatch (the pool file is truncated or corrupt)")
    nbits = int.from_bytes(b[32:40], "big")
    data = b[_HEADER:-_DIGEST]
    if len(data) != (nbits + 7) // 8:
        raise PoolFileError(f"{p}: header says {nbits} bits, file holds {len(data)} bytes")
    return PoolFile(
        pool_id=b[8:24], offset=int.from_bytes(b[24:32], "big"), nbits=nbits, insecure=bool(b[40] & FLAG_INSECURE), data=data
    )


def write_pool(pf: PoolFile, path: str | Path) -> None:
    """Atomically replace ``path`` by ``pf``: temp file, fsync, ``os.replace``, fsync of the directory."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pf.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(p.parent)
