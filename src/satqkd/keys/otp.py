"""One-time-pad file encryption with an information-theoretically secure MAC (Wegman–Carter).

A file of ``n`` bytes consumes ``n + 32`` bytes of key shared with the peer site: ``n`` bytes of
pad (Vernam 1926; perfectly secret, Shannon 1949) and 32 bytes for the authentication tag::

    c   = m ⊕ pad
    tag = (h_k(header ‖ c ‖ m) + s) mod p,      p = 2^127 − 1,

where ``h_k`` is the polynomial-evaluation hash over GF(p) and ``k``, ``s`` are fresh key
(Wegman & Carter, J. Comput. Syst. Sci. 22, 265 (1981); the polynomial family: den Boer 1993,
Taylor 1993, Bernstein "The Poly1305-AES message-authentication code" 2005). The message is cut
into 15-byte blocks ``b_1 … b_L`` (last one zero-padded) followed by a block holding the byte
length, and ``h_k = Σ_i b_i k^(L+2−i)`` (Horner). Two different messages give a non-zero
polynomial in ``k`` of degree ≤ L+1 with no root ambiguity from the constant term, so a forger
who saw one (message, tag) succeeds with probability at most ``(L+1)·2^-126`` (``k`` is 127
random bits reduced mod p, so each residue has probability ≤ 2^-126); ``s`` hides ``h_k``
completely. The tag covers the plaintext too, so a receiver whose pad differs from the sender's
(a damaged store at either end) computes a different ``m`` and the tag fails instead of giving a
wrong plaintext.

Key is never reused:

* **one direction per sender** — a sender cuts pad only from its own directional stream of each
  root (:func:`satqkd.keys.store.direction_window`: the site whose name sorts first uses the first
  half of every root shared with the peer, the other the second half), and the receiver refuses a
  file whose key lies outside the sender's stream. Two stations encrypting toward each other at
  the same time can never pick the same bits; processes of one site are serialised by the store;
* **one transaction** — the sender marks the key *consumed* in the same transaction that writes the
  ciphertext, the receiver in the same transaction that writes the plaintext, and a message whose
  tag does not verify consumes nothing;
* **the site's usage ledger** — the key's ranges are checked against the site's
  :class:`satqkd.ledger.UsageLedger` inside that transaction and claimed in it (fsync'ed) before the
  ciphertext (or plaintext) is computed, so a store restored from a backup cannot give the same pad
  or MAC key out again (:class:`satqkd.keys.store.KeyReused`). A crash after the claim but before the
  commit loses that key (the next use finds the claim, refuses once and retires the range), never
  reuses it.

File format (all integers big-endian; version 2, version-1 files — tag over header ‖ c only — are
still read)::

    b"SATQKD-OTP\\x00\\x02" | u32 header length | header (JSON, UTF-8) | ciphertext | tag (16 bytes)

The header names the sender, the receiver and the key segments used (root id, offset, length and
the piece id both stores record), so the receiver carves exactly the same key. The header is
authenticated with the ciphertext.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import uuid

from .store import KeyStore, KeyUnavailable, Segment, direction_window

__all__ = [
    "MAGIC",
    "P127",
    "OtpReport",
    "OtpError",
    "poly_hash",
    "wc_tag",
    "mac_forgery_bound",
    "otp_key_bits",
    "encrypt_bytes",
    "decrypt_bytes",
    "encrypt_file",
    "decrypt_file",
]

MAGIC = b"SATQKD-OTP\x00\x02"
_MAGIC_V1 = b"SATQKD-OTP\x00\x01"
#: The Mersenne prime 2^127 − 1, modulus of the MAC's hash.
P127 = (1 << 127) - 1
_BLOCK = 15
_MAC_KEY_BYTES = 32


class OtpError(ValueError):
    """A file could not be encrypted or decrypted (bad format, wrong peer, MAC failure); no key was consumed."""


@dataclass(frozen=True)
class OtpReport:
    """What an encryption or decryption used: key pieces, bits, and the forgery bound ε."""

    peer: str
    plaintext_bytes: int
    key_bits: int
    key_ids: tuple[str, ...]
    forgery_bound: float

    def __repr__(self) -> str:
        return (
            f"OtpReport({self.plaintext_bytes} bytes with {self.peer}, {self.key_bits} key bits in "
            f"{len(self.key_ids)} pieces, forgery ≤ {self.forgery_bound:.2e})"
        )


def _field(b: bytes) -> int:
    """16 key bytes → an element of GF(p): 127 uniform bits reduced mod p."""
    return (int.from_bytes(b, "big") & P127) % P127


def poly_hash(message: bytes, k: int) -> int:
    """Polynomial-evaluation hash of ``message`` at ``k`` over GF(2^127 − 1) (see module docstring)."""
    if not 0 <= k < P127:
        raise ValueError(f"k must be in [0, 2^127 − 1), got {k}")
    h = 0
    mv = memoryview(message)
    for i in range(0, len(message), _BLOCK):
        h = ((h + int.from_bytes(mv[i : i + _BLOCK].tobytes().ljust(_BLOCK, b"\0"), "big")) * k) % P127
    return ((h + len(message)) * k) % P127


def wc_tag(message: bytes, mac_key: bytes) -> bytes:
    """Wegman–Carter tag: ``(h_k(message) + s) mod p`` with ``k, s`` from 32 fresh key bytes."""
    if len(mac_key) != _MAC_KEY_BYTES:
        raise ValueError(f"mac_key must be {_MAC_KEY_BYTES} bytes, got {len(mac_key)}")
    k, s = _field(mac_key[:16]), _field(mac_key[16:])
    return ((poly_hash(message, k) + s) % P127).to_bytes(16, "big")


def mac_forgery_bound(message_bytes: int) -> float:
    """Upper bound on a single forgery's success probability: (L+1)·2^-126, L = ⌈n/15⌉ blocks."""
    blocks = -(-message_bytes // _BLOCK) + 1
    return blocks * 2.0**-126


def otp_key_bits(plaintext_bytes: int) -> int:
    """Key consumed to send ``plaintext_bytes``: pad plus 256 MAC bits."""
    return 8 * (plaintext_bytes + _MAC_KEY_BYTES)


def _xor(a: bytes, b: bytes) -> bytes:
    return np.bitwise_xor(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)).tobytes()


def _pack(header: dict, ciphertext: bytes, tag: bytes) -> bytes:
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(h)) + h + ciphertext + tag


def _unpack(blob: bytes) -> tuple[dict, bytes, bytes, bytes]:
    if len(blob) < len(MAGIC) + 4 + 16 or not (blob.startswith(MAGIC) or blob.startswith(_MAGIC_V1)):
        raise OtpError("not a satqkd OTP file (bad magic or too short)")
    (hlen,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if start + hlen + 16 > len(blob):
        raise OtpError("truncated OTP file")
    hbytes = blob[start : start + hlen]
    try:
        header = json.loads(hbytes)
        n = int(header["plaintext_bytes"])
        segs = [Segment.from_json(s) for s in header["segments"]]
        str(header["from"]), str(header["to"])
    except (ValueError, KeyError, TypeError) as exc:
        raise OtpError(f"bad OTP header: {exc}") from None
    body = blob[start + hlen :]
    if len(body) != n + 16:
        raise OtpError(f"ciphertext length {len(body) - 16} does not match the header ({n})")
    if sum(s.length_bits for s in segs) != otp_key_bits(n):
        raise OtpError("the header's key segments do not add up to the pad and MAC key")
    header["_segments"] = segs
    header["_v"] = 2 if blob.startswith(MAGIC) else 1
    return header, hbytes, body[:n], body[n:]


def _write_atomic_tmp(out_path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=".otp-", dir=out_path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(tmp)


def encrypt_bytes(store: KeyStore, peer: str, plaintext: bytes, *, within=None) -> tuple[bytes, OtpReport]:
    """Encrypt ``plaintext`` for ``peer`` with key from ``store`` (consumed); returns the OTP file bytes.

    ``within(blob)`` runs inside the consuming transaction (e.g. to write the file): if it
    raises, no key is consumed. Refuses (:class:`OtpError`) when the link holds less key than
    :func:`otp_key_bits` of the message.
    """
    if peer == store.site:
        raise OtpError(f"peer {peer!r} is this store's own site: a one-time pad is shared with another site")
    plaintext = bytes(plaintext)
    need = otp_key_bits(len(plaintext))
    have = store.directional_bits(peer)
    if need > have:
        raise OtpError(
            f"message of {len(plaintext)} bytes needs {need} key bits with {peer!r}; only {have} available in "
            f"{store.site}'s sending direction (half of every key shared with {peer!r})"
        )
    out: dict = {}
    op = f"otp encrypt {store.site}->{peer} {uuid.uuid4()}"

    def _seal(segs: list[Segment], material: bytes) -> None:
        store.ledger_check(peer, segs)
        # write-ahead, inside the consuming transaction and before a single byte of ciphertext exists:
        # a crash after this line (even after the ciphertext left through ``within``) loses the key,
        # it can never reuse it (the next try finds the claim and retires the range)
        store.ledger_claim(segs, purpose=op)
        pad, mac_key = material[: len(plaintext)], material[len(plaintext) :]
        header = {
            "v": 2,
            "from": store.site,
            "to": peer,
            "plaintext_bytes": len(plaintext),
            "segments": [s.to_json() for s in segs],
            "mac": "wegman-carter poly GF(2^127-1) over header|ciphertext|plaintext",
        }
        ct = _xor(plaintext, pad)
        hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        tag = wc_tag(hbytes + ct + plaintext, mac_key)
        blob = _pack(header, ct, tag)
        if within is not None:
            within(blob)
        out["blob"], out["segs"] = blob, segs

    try:
        store.take(peer, need, state="consumed", purpose="otp", direction=True, within=_seal)
    except KeyUnavailable as exc:
        raise OtpError(str(exc)) from None
    segs = out["segs"]
    rep = OtpReport(peer, len(plaintext), need, tuple(s.key_id for s in segs), mac_forgery_bound(len(plaintext)))
    return out["blob"], rep


def decrypt_bytes(store: KeyStore, peer: str, blob: bytes, *, within=None) -> tuple[bytes, OtpReport]:
    """Verify and decrypt an OTP file from ``peer``; consumes the same key pieces the sender used.

    The tag is checked before anything changes: a forged or corrupted file raises
    :class:`OtpError` and consumes nothing. ``within(plaintext)`` runs inside the consuming
    transaction.
    """
    header, hbytes, ct, tag = _unpack(bytes(blob))
    if peer == store.site:
        raise OtpError(f"peer {peer!r} is this store's own site: a one-time pad is shared with another site")
    if header["from"] != peer or header["to"] != store.site:
        raise OtpError(
            f"file is from {header['from']!r} to {header['to']!r}; expected from {peer!r} to {store.site!r}"
        )
    segs: list[Segment] = header["_segments"]
    n = len(ct)
    if header["_v"] >= 2:
        roots = {r["root_id"]: int(r["length_bits"]) for r in store.roots(peer)}
        for g in segs:
            lo, hi = direction_window(peer, store.site, roots.get(g.root_id, 0))
            if g.root_id in roots and not (lo <= g.offset_bits and g.offset_bits + g.length_bits <= hi):
                raise OtpError(f"the file's key {g.root_id} bits [{g.offset_bits}, +{g.length_bits}) lies outside "
                               f"{peer}'s sending direction [{lo}, {hi}): refused (it could collide with our own pad)")

    def _tag_ok(mat: bytes) -> bool:
        pt = _xor(ct, mat[:n])
        return wc_tag(hbytes + ct + (pt if header["_v"] >= 2 else b""), mat[n:]) == tag

    try:
        material = store.peek_segments(peer, segs)
    except KeyUnavailable as exc:
        raise OtpError(f"key for this file is not available here (already used, or unknown): {exc}") from None
    if not _tag_ok(material):
        raise OtpError("authentication failed: the file was modified or the key does not match")
    out: dict = {}
    op = f"otp decrypt {peer}->{store.site} {uuid.uuid4()}"

    def _open(_segs, mat: bytes) -> None:
        store.ledger_check(peer, _segs)
        if not _tag_ok(mat):  # same material, re-read inside the transaction
            raise OtpError("authentication failed")
        store.ledger_claim(_segs, purpose=op)  # write-ahead: before the plaintext exists (no replay after a restore)
        pt = _xor(ct, mat[:n])
        if within is not None:
            within(pt)
        out["pt"] = pt

    try:
        store.take_segments(peer, segs, state="consumed", purpose="otp", within=_open)
    except KeyUnavailable as exc:
        raise OtpError(f"key for this file is not available here: {exc}") from None
    rep = OtpReport(peer, n, otp_key_bits(n), tuple(s.key_id for s in segs), mac_forgery_bound(n))
    return out["pt"], rep


def _through_file(op, store: KeyStore, peer: str, in_path: str | Path, out_path: str | Path) -> OtpReport:
    """Run ``op`` (:func:`encrypt_bytes` or :func:`decrypt_bytes`) on ``in_path``, writing its output to a
    temporary file inside the key-consuming transaction and renaming it to ``out_path`` afterwards.

    If anything fails before the commit, the temporary file is removed and no key is consumed; a
    crash between commit and rename loses key, never reuses it."""
    in_path, out_path = Path(in_path), Path(out_path)
    data = in_path.read_bytes()
    tmp: dict = {}

    def _write(payload: bytes) -> None:
        tmp["path"] = _write_atomic_tmp(out_path, payload)

    try:
        _, rep = op(store, peer, data, within=_write)
    except BaseException:
        if "path" in tmp:
            tmp["path"].unlink(missing_ok=True)
        raise
    os.replace(tmp["path"], out_path)
    return rep


def encrypt_file(store: KeyStore, peer: str, in_path: str | Path, out_path: str | Path) -> OtpReport:
    """One-time-pad ``in_path`` for ``peer`` into ``out_path`` (written atomically).

    The key is marked consumed in the transaction that writes the output (a crash between
    commit and the final rename loses key, never reuses it).
    """
    return _through_file(encrypt_bytes, store, peer, in_path, out_path)


def decrypt_file(store: KeyStore, peer: str, in_path: str | Path, out_path: str | Path) -> OtpReport:
    """Verify and decrypt ``in_path`` (from ``peer``) into ``out_path``; consumes the same key ids."""
    return _through_file(decrypt_bytes, store, peer, in_path, out_path)
