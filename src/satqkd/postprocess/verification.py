"""Error verification: compare a short universal hash of the corrected keys.

After error correction Bob's key should equal Alice's. To make the final key ε_cor-correct
(Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634 (2012); Lim et al., PRA 89, 022307 (2014))
Alice draws a fresh random hash key *after* reconciliation has ended, sends it over the
authenticated channel, and both compare ``t``-bit tags. If the keys differ, the tags collide with
probability at most ``collision_bound(n, t)`` whatever the error pattern, because the error pattern
was fixed before the hash key was chosen.

Hash: polynomial evaluation over the Mersenne prime field GF(p), ``p = 2^t − 1`` (a *t*-bit tag)
(Carter & Wegman, J. Comput. Syst. Sci. 18, 143 (1979); the polynomial construction is in
Wegman & Carter, J. Comput. Syst. Sci. 22, 265 (1981) and den Boer, J. Comput. Secur. 2 (1993)).
The key is cut into ``b``-bit blocks ``c_1 … c_L`` (``b`` = the largest multiple of 8 below ``t``,
big-endian, last block zero-padded) followed by one block holding the bit length ``n``::

    tag_k(x) = c_1·k^L + c_2·k^(L−1) + … + c_L·k + n   (mod p),   k uniform in [0, p)

Two different keys give a non-zero difference polynomial of degree ≤ L (equal lengths: the
constant ``n`` cancels), which has at most L roots, so

    Pr_k[tag_k(x) = tag_k(x')] ≤ L / p,   L = ⌈n / b⌉            (exact bound used here)

Different lengths also differ in the constant term, so the bound holds for them too (with the
larger L). The tag is published, so it leaks at most ``t`` bits of the key: the caller charges
``t`` bits (the tag length) against the final key.

Supported tag lengths are the Mersenne exponents 31, 61, 89, 107, 127, 521;
:func:`tag_length_for` picks the smallest whose bound meets ε_cor.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> bits = rng.integers(0, 2, 2_000_000, dtype=np.uint8)
    >>> t = tag_length_for(bits.size, 1e-12); t
    61
    >>> collision_bound(bits.size, t) <= 1e-12
    True
    >>> k = draw_verification_key(t, rng)
    >>> verification_tag(bits, k, t) == verification_tag(bits.copy(), k, t)
    True
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TAG_LENGTHS",
    "verification_tag",
    "tag_length_for",
    "collision_bound",
    "draw_verification_key",
    "block_bits_for",
]

#: supported tag lengths t (Mersenne exponents: p = 2^t − 1 is prime)
TAG_LENGTHS = (31, 61, 89, 107, 127, 521)


def _check_t(tag_bits: int) -> int:
    if tag_bits not in TAG_LENGTHS:
        raise ValueError(f"tag_bits must be one of {TAG_LENGTHS} (Mersenne prime field sizes), got {tag_bits}")
    return int(tag_bits)


def block_bits_for(tag_bits: int) -> int:
    """Bits per hashed block for a ``tag_bits`` tag: the largest multiple of 8 below ``tag_bits``."""
    return 8 * ((_check_t(tag_bits) - 1) // 8)


def collision_bound(n_bits: int, tag_bits: int) -> float:
    """Exact collision bound ``⌈n / b⌉ / (2^t − 1)`` for two different ``n``-bit keys (module docstring)."""
    if n_bits < 0:
        raise ValueError(f"n_bits must be ≥ 0, got {n_bits}")
    blocks = -(-int(n_bits) // block_bits_for(tag_bits))
    return blocks / float((1 << int(tag_bits)) - 1)


def tag_length_for(n_bits: int, eps_cor: float = 1e-12) -> int:
    """Smallest supported tag length ``t`` with ``collision_bound(n_bits, t) ≤ eps_cor``."""
    if not 0.0 < eps_cor < 1.0:
        raise ValueError(f"eps_cor must lie in (0, 1), got {eps_cor}")
    for t in TAG_LENGTHS:
        if collision_bound(n_bits, t) <= eps_cor:
            return t
    raise ValueError(f"eps_cor = {eps_cor:g} is below what a {TAG_LENGTHS[-1]}-bit tag can give for {n_bits} bits")


def draw_verification_key(tag_bits: int, rng: np.random.Generator) -> int:
    """Alice's fresh hash key: uniform in ``[0, 2^t − 1)`` (rejection sampling of ``t`` random bits).

    Draw it only after error correction has finished; it is public and sent authenticated.
    """
    t = _check_t(tag_bits)
    p = (1 << t) - 1
    nbytes = (t + 7) // 8
    while True:
        k = int.from_bytes(rng.bytes(nbytes), "big") >> (8 * nbytes - t)
        if k < p:
            return k


def _key_int(key_material: int | bytes, p: int) -> int:
    if isinstance(key_material, (bytes, bytearray)):
        k = int.from_bytes(key_material, "big")
    elif isinstance(key_material, (int, np.integer)) and not isinstance(key_material, bool):
        k = int(key_material)
    else:
        raise ValueError(f"key_material must be an int or bytes, got {type(key_material).__name__}")
    if not 0 <= k < p:
        raise ValueError(f"key_material must lie in [0, 2^t − 1) = [0, {p}), got {k}")
    return k


def verification_tag(bits: np.ndarray, key_material: int | bytes, tag_bits: int) -> int:
    """Polynomial hash tag (an int in ``[0, 2^t − 1)``) of a ``uint8`` 0/1 key (module docstring).

    ``key_material`` is the hash key ``k`` (int, or big-endian bytes) in ``[0, 2^t − 1)``.
    """
    t = _check_t(tag_bits)
    p = (1 << t) - 1
    k = _key_int(key_material, p)
    x = np.asarray(bits)
    if x.ndim != 1:
        raise ValueError(f"bits must be a 1-D array of 0/1, got shape {x.shape}")
    if x.size and (x.dtype.kind not in "biu" or int(x.max()) > 1 or int(x.min()) < 0):
        raise ValueError("bits must contain only 0 and 1")
    n = int(x.size)
    bb = block_bits_for(t) // 8  # bytes per block
    packed = np.packbits(x.astype(np.uint8, copy=False))
    nblocks = -(-packed.size // bb)
    buf = np.zeros(nblocks * bb, dtype=np.uint8)
    buf[: packed.size] = packed
    h = 0
    for c in _blocks_as_ints(buf.reshape(nblocks, bb)):
        h = (h * k + c) % p
    return (h * k + n) % p


def _blocks_as_ints(rows: np.ndarray) -> list[int]:
    """Big-endian integer value of each row of bytes, via 64-bit words (vectorised)."""
    nb, width = rows.shape
    if nb == 0:
        return []
    words = -(-width // 8)
    padded = np.zeros((nb, words * 8), dtype=np.uint8)
    padded[:, words * 8 - width :] = rows  # left-pad with zeros: same big-endian value
    w = padded.view(">u8").astype(np.uint64)  # (nb, words), most significant word first
    if words == 1:
        return w[:, 0].tolist()
    cols = [w[:, i].tolist() for i in range(words)]
    out = cols[0]
    for col in cols[1:]:
        out = [(a << 64) | b for a, b in zip(out, col)]
    return out

