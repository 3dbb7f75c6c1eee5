"""A party's final key on disk, by confirmation state: released or pending (``docs/two-processes.md``).

One run directory (``satqkd party … --out DIR``) holds at most one key:

* ``DIR/keys/pending/<sha256>.key`` — *pending*: this party holds the key but does not know that
  the peer holds it too (its last message may have been lost). Never delivered; a later
  authenticated contact (:func:`satqkd.protocol.remote.run_confirm`) releases or discards it.
* ``DIR/keys/<role>.key`` — *released*: the peer holds the same key. Deliverable.

``<sha256>`` is the SHA-256 of the file's bytes (the key's bits packed MSB first, zero-padded to a
byte, as ``satqkd run`` writes them); it names the key in ``summary.json`` (``key_sha256``) and in
confirmation messages. Every write is atomic and durable (temp file, ``fsync``, ``os.replace``,
``fsync`` of the directory): a crash leaves the old state or the new one, never a torn key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..ledger import fsync_dir

__all__ = ["KeyFiles", "key_bytes", "key_sha256"]


def key_bytes(key) -> bytes:
    """The key file's content: bits packed MSB first, zero-padded to a byte."""
    return np.packbits(np.asarray(key, dtype=np.uint8)).tobytes()


def key_sha256(key) -> str:
    """SHA-256 (hex) of :func:`key_bytes` — the key's name in files and confirmation messages."""
    return hashlib.sha256(key_bytes(key)).hexdigest()


class KeyFiles:
    """The key files of one party's run directory (``hold`` / ``release`` / ``discard``).

    Used as the ``keeper`` of :func:`~satqkd.protocol.parties.alice_party` /
    :func:`~satqkd.protocol.parties.bob_party`: ``hold`` is called at the party's point of
    commitment, ``release`` once the peer is known to hold the key.
    """

    def __init__(self, out: str | Path, role: str):
        if role not in ("alice", "bob"):
            raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
        self.out, self.role = Path(out), role
        self.sha256: str | None = None
        self.state = "none"

    @property
    def released_path(self) -> Path:
        return self.out / "keys" / f"{self.role}.key"

    def pending_path(self, sha: str | None = None) -> Path:
        return self.out / "keys" / "pending" / f"{sha or self.sha256}.key"

    def hold(self, key) -> None:
        """Store ``key`` as pending (durable when this returns)."""
        data = key_bytes(key)
        self.sha256 = hashlib.sha256(data).hexdigest()
        p = self.pending_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(p, data)
        self.state = "pending"

    def release(self, sha: str | None = None) -> Path:
        """Make the pending key deliverable: ``keys/pending/<sha>.key`` → ``keys/<role>.key``."""
        sha = sha or self.sha256
        src, dst = self.pending_path(sha), self.released_path
        if dst.exists():
            raise FileExistsError(f"{dst} exists: a key file is never overwritten")
        os.replace(src, dst)
        fsync_dir(dst.parent)
        fsync_dir(src.parent)
        self.sha256, self.state = sha, "released"
        return dst

    def discard(self, sha: str | None = None) -> None:
        """Delete the pending key (the peer authentically does not hold it)."""
        sha = sha or self.sha256
        p = self.pending_path(sha)
        if p.exists():
            p.unlink()
            fsync_dir(p.parent)
        self.state = "none"

    def pending(self) -> list[str]:
        """The hashes of the pending keys in this directory."""
        d = self.out / "keys" / "pending"
        return sorted(p.stem for p in d.glob("*.key")) if d.is_dir() else []


def _atomic_write(p: Path, data: bytes) -> None:
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    fsync_dir(p.parent)
