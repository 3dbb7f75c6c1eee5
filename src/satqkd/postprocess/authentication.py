"""Wegman–Carter authentication of the classical messages, keyed from a shared key pool.

QKD is only secure if every classical message is authenticated with information-theoretic
security. We use the Wegman–Carter scheme (Wegman & Carter, J. Comput. Syst. Sci. 22, 265 (1981)):
an ε-almost-Δ-universal hash with a key ``k`` drawn *once*, whose output is hidden by a fresh
one-time pad ``r`` per message; the key bits come from a :class:`KeyPool` that both parties hold
identically (a pre-shared secret, or key from an earlier run).

Hash (polynomial over the prime field GF(p), ``p = 2^127 − 1``): the message is cut into 15-byte
blocks ``c_1 … c_{L−1}`` (big-endian, last block zero-padded; each < 2^120 < p), followed by one
block ``c_L`` = the message length in bytes::

    h_k(m) = c_1·k^L + c_2·k^(L−1) + … + c_L·k   (mod p)        (no constant term)

For ``m ≠ m'`` and any δ, ``h_k(m) − h_k(m') − δ`` is a non-zero polynomial in ``k`` of degree
≤ L (the length block makes messages of different lengths differ too), so
``Pr_k[h_k(m) − h_k(m') ≡ δ] ≤ L/p``: the family is ε-almost-Δ-universal with ε = L/p.

Tag: ``τ = (h_k(m) + r) mod 2^128`` with ``r`` 128 fresh pool bits (exactly uniform). Because
``h ∈ [0, p)``, the integer difference ``h_k(m') − h_k(m) ∈ (−p, p)`` is fixed by ``τ' − τ mod 2^128``,
so a forger who saw ``(m, τ)`` and submits ``(m', τ')`` succeeds with probability at most
``L/p`` (ε-AΔU above), and ``τ`` is independent of ``k``. The hash key is drawn by rejection
(127 pool bits, redrawn in the ~2^−127 case that they equal ``p``), so ``k`` is exactly uniform on
GF(p); reusing it under fresh pads keeps the per-message bound (key recycling: Wegman & Carter
1981; composable proof for ε-AXU/ΔU families: Portmann, IEEE Trans. Inf. Theory 60, 4383 (2014)).

Per message of ``len`` bytes: forgery probability ≤ ``(⌈len/15⌉ + 1) / (2^127 − 1)``
(≈ 4.9e-35 for a 125 kB message); key consumed: 127 bits once + 128 bits per message.

Lockstep: Alice's and Bob's authenticators each own an identical pool and must draw the same bits
for the same message. Two orders are supported:

* ``Authenticator(pool)`` — one pad stream: each message (tagged or verified) takes the next 128
  bits of the pool in the global *sending* order. Correct only if the two parties never send at
  the same time (strictly half-duplex use).
* ``Authenticator(pool, role="alice" | "bob")`` — two pad lanes, robust to concurrent sending: pads
  are taken from the pool in pairs (256 bits); the first 128 bits of pair ``j`` are the pad of
  Alice's ``j``-th message (satellite → ground), the next 128 that of Bob's ``j``-th message. Both
  sides take pair ``j`` the first time either lane needs it, so they consume the same bits in the
  same order whatever the interleaving. The channel (:mod:`satqkd.protocol.channel`) uses this.
"""

from __future__ import annotations

import hmac

import numpy as np

__all__ = [
    "KeyPool",
    "KeyPoolExhausted",
    "Authenticator",
    "AuthenticationError",
    "poly_hash",
    "forgery_bound",
    "P127",
    "TAG_BYTES",
    "HASH_KEY_BITS",
    "PAD_BITS",
]

#: the Mersenne prime 2^127 − 1 (field of the hash)
P127 = (1 << 127) - 1
#: bytes per hashed block (120 bits < 127)
BLOCK_BYTES = 15
TAG_BYTES = 16
PAD_BITS = 8 * TAG_BYTES
HASH_KEY_BITS = 127


class KeyPoolExhausted(RuntimeError):
    """The key pool has fewer bits left than requested; nothing was consumed."""


class AuthenticationError(RuntimeError):
    """A message failed its authentication tag: the receiving party must abort."""


class KeyPool:
    """A bit string both parties hold identically, consumed from the front.

    Bit order: bit 0 of the pool is the most significant bit of its first byte (``np.packbits``
    order). ``take(nbits)`` returns the next ``nbits`` bits as ``⌈nbits/8⌉`` bytes (big-endian,
    the unused low bits of the last byte zero) and advances ``consumed_bits``; a request larger
    than ``remaining_bits`` raises :class:`KeyPoolExhausted` and consumes nothing.
    """

    def __init__(self, key: bytes | bytearray | np.ndarray, nbits: int | None = None):
        if isinstance(key, np.ndarray):
            a = np.asarray(key)
            if a.ndim != 1 or (a.size and (a.dtype.kind not in "biu" or int(a.max()) > 1 or int(a.min()) < 0)):
                raise ValueError("key as an array must be a 1-D array of 0/1 bits")
            data = np.packbits(a.astype(np.uint8)).tobytes()
            total = int(a.size)
        elif isinstance(key, (bytes, bytearray)):
            data = bytes(key)
            total = 8 * len(data)
        else:
            raise ValueError(f"key must be bytes or a uint8 bit array, got {type(key).__name__}")
        if nbits is not None:
            if not 0 <= nbits <= total:
                raise ValueError(f"nbits must lie in [0, {total}] (the bits given), got {nbits}")
            total = int(nbits)
        self._data = data
        self._total = total
        self._pos = 0
        self._consumed_before = 0  # bits consumed before the last extend()

    @classmethod
    def from_rng(cls, nbits: int, rng: np.random.Generator) -> "KeyPool":
        """A random pool of ``nbits`` bits (simulation of a pre-shared secret)."""
        if nbits < 0:
            raise ValueError(f"nbits must be ≥ 0, got {nbits}")
        return cls(rng.bytes((nbits + 7) // 8), nbits)

    def copy(self) -> "KeyPool":
        """An independent pool with the same bits and position (the other party's copy)."""
        other = KeyPool(self._data, self._total)
        other._pos = self._pos
        other._consumed_before = self._consumed_before
        return other

    @property
    def size_bits(self) -> int:
        return self._total

    @property
    def consumed_bits(self) -> int:
        """Bits consumed since construction or the last :meth:`extend` (see :attr:`total_consumed_bits`)."""
        return self._pos

    @property
    def remaining_bits(self) -> int:
        return self._total - self._pos

    def extend(self, key: bytes | np.ndarray, nbits: int | None = None) -> None:
        """Append fresh shared key (e.g. part of this run's final key) at the end of the pool."""
        add = KeyPool(key, nbits)
        rest = self.remaining_bits
        merged = (self._bits_int(self._pos, rest) << add.size_bits) | add._bits_int(0, add.size_bits)
        total = rest + add.size_bits
        nbytes = (total + 7) // 8
        self._data = (merged << (8 * nbytes - total)).to_bytes(nbytes, "big") if total else b""
        self._total = total
        self._consumed_before += self._pos
        self._pos = 0

    def _bits_int(self, start: int, nbits: int) -> int:
        """Bits [start, start + nbits) as a big-endian integer."""
        if nbits == 0:
            return 0
        b0, b1 = start // 8, (start + nbits + 7) // 8
        v = int.from_bytes(self._data[b0:b1], "big")
        v >>= 8 * b1 - (start + nbits)
        return v & ((1 << nbits) - 1)

    def take_int(self, nbits: int) -> int:
        """Consume the next ``nbits`` bits and return them as a big-endian integer."""
        if nbits < 0:
            raise ValueError(f"nbits must be ≥ 0, got {nbits}")
        if nbits > self.remaining_bits:
            raise KeyPoolExhausted(f"key pool has {self.remaining_bits} bits left, {nbits} requested")
        v = self._bits_int(self._pos, nbits)
        self._pos += nbits
        return v

    def take(self, nbits: int) -> bytes:
        """Consume the next ``nbits`` bits; returns ``⌈nbits/8⌉`` bytes (MSB first, zero-filled tail)."""
        v = self.take_int(nbits)
        nbytes = (nbits + 7) // 8
        return (v << (8 * nbytes - nbits)).to_bytes(nbytes, "big")

    @property
    def total_consumed_bits(self) -> int:
        """Bits consumed over the pool's whole life, including before :meth:`extend` calls."""
        return self._consumed_before + self._pos

    def __repr__(self) -> str:
        return f"KeyPool({self.remaining_bits} of {self.size_bits} bits left)"


def _block_words(message: bytes, block_bytes: int) -> list[list[int]]:
    """Big-endian blocks of ``block_bytes`` (last one zero-padded) as columns of 64-bit words,
    most significant first: block i = Σ_w cols[w][i] · 2^(64·(W−1−w)). Vectorised."""
    n = len(message)
    nb = -(-n // block_bytes)
    words = -(-block_bytes // 8)
    if nb == 0:
        return [[] for _ in range(words)]
    body = np.zeros(nb * block_bytes, dtype=np.uint8)
    body[:n] = np.frombuffer(message, dtype=np.uint8)
    buf = np.zeros((nb, 8 * words), dtype=np.uint8)  # left-padded with zero bytes: same value
    buf[:, 8 * words - block_bytes :] = body.reshape(nb, block_bytes)
    w = buf.view(">u8")
    return [w[:, i].tolist() for i in range(words)]


def poly_hash(key: int, message: bytes, p: int = P127, block_bytes: int = BLOCK_BYTES) -> int:
    """``h_k(m) = c_1·k^L + … + c_{L−1}·k^2 + len(m)·k  (mod p)`` (module docstring).

    Defaults are the authenticator's (``p = 2^127 − 1``, 15-byte blocks); other primes with
    ``2^(8·block_bytes) ≤ p`` give the same construction (used by the tests on a small field).
    About 30–50 ns per message byte (pure Python Horner over 120-bit blocks).
    """
    if not 0 <= key < p:
        raise ValueError(f"key must lie in [0, p) = [0, {p}), got {key}")
    if block_bytes < 1 or (1 << (8 * block_bytes)) > p:
        raise ValueError(f"block_bytes must be ≥ 1 with 2^(8·block_bytes) ≤ p, got {block_bytes}")
    message = bytes(message)
    if len(message) >= p:
        raise ValueError(f"message length must be < p, got {len(message)} bytes")
    cols = _block_words(message, block_bytes)
    h = 0
    if len(cols) == 1:
        for c in cols[0]:
            h = ((h + c) * key) % p
    elif len(cols) == 2:
        for hi, lo in zip(*cols):
            h = ((h + (hi << 64) + lo) * key) % p
    else:
        for ws in zip(*cols):
            c = 0
            for w in ws:
                c = (c << 64) | w
            h = ((h + c) * key) % p
    return ((h + len(message)) * key) % p


def forgery_bound(message_len_bytes: int) -> float:
    """Probability that a forged message of ≤ ``message_len_bytes`` bytes is accepted: ``L/(2^127 − 1)``,
    ``L = ⌈len/15⌉ + 1`` (blocks plus the length block), per message (module docstring)."""
    if message_len_bytes < 0:
        raise ValueError(f"message_len_bytes must be ≥ 0, got {message_len_bytes}")
    blocks = -(-int(message_len_bytes) // BLOCK_BYTES) + 1
    return blocks / float(P127)


class Authenticator:
    """Wegman–Carter tags from a :class:`KeyPool` (module docstring: bound, key use, lockstep).

    ``role=None``: one pad stream in sending order (half-duplex use only). ``role="alice"`` or
    ``"bob"``: Alice's messages use lane 0 and Bob's lane 1; :meth:`tag` uses the own lane and
    :meth:`verify` the peer's. The hash key (127 bits) is drawn from the pool on construction.
    """

    def __init__(self, pool: KeyPool, role: str | None = None):
        if role not in (None, "alice", "bob"):
            raise ValueError(f"role must be None, 'alice' or 'bob', got {role!r}")
        self.pool = pool
        self.role = role
        self._consumed = 0
        while True:  # rejection: k exactly uniform on [0, p)
            k = self._take(HASH_KEY_BITS)
            if k < P127:
                break
        self._key = k
        self._pairs = 0  # pad pairs taken (lane mode)
        self._lane_pads: dict[tuple[int, int], int] = {}
        self._lane_next = [0, 0]
        self._sent = 0
        self._received = 0

    def _take(self, nbits: int) -> int:
        v = self.pool.take_int(nbits)
        self._consumed += nbits
        return v

    def _pad(self, lane: int) -> int:
        if self.role is None:
            return self._take(PAD_BITS)
        j = self._lane_next[lane]
        while self._pairs <= j:
            if self.pool.remaining_bits < 2 * PAD_BITS:
                raise KeyPoolExhausted(f"key pool has {self.pool.remaining_bits} bits left, {2 * PAD_BITS} needed")
            self._lane_pads[(0, self._pairs)] = self._take(PAD_BITS)
            self._lane_pads[(1, self._pairs)] = self._take(PAD_BITS)
            self._pairs += 1
        self._lane_next[lane] += 1
        return self._lane_pads.pop((lane, j))

    def _own_lane(self) -> int:
        return 1 if self.role == "bob" else 0

    def _tag_with(self, message: bytes, pad: int) -> bytes:
        return ((poly_hash(self._key, message) + pad) % (1 << PAD_BITS)).to_bytes(TAG_BYTES, "big")

    def tag(self, message: bytes) -> bytes:
        """The 16-byte tag of an outgoing message; consumes the next pad of the own lane."""
        pad = self._pad(self._own_lane())
        self._sent += 1
        return self._tag_with(bytes(message), pad)

    def verify(self, message: bytes, tag: bytes) -> bool:
        """Check an incoming message's tag; always consumes the peer lane's next pad (lockstep)."""
        pad = self._pad(1 - self._own_lane())
        self._received += 1
        expected = self._tag_with(bytes(message), pad)
        return len(tag) == TAG_BYTES and hmac.compare_digest(expected, bytes(tag))

    @staticmethod
    def forgery_bound(message_len_bytes: int) -> float:
        """Per-message forgery probability for a message of this length (:func:`forgery_bound`)."""
        return forgery_bound(message_len_bytes)

    @property
    def consumed_bits(self) -> int:
        """Pool bits this authenticator consumed (hash key + pads)."""
        return self._consumed

    def __repr__(self) -> str:
        return (
            f"Authenticator(role={self.role!r}, {self._sent} tagged, {self._received} verified, "
            f"{self._consumed} key bits used, {self.pool.remaining_bits} left in pool)"
        )
