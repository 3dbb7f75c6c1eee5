"""What a party's error-correction bitmaps disclose: their raw length, or an enumerative code length.

Bob's error-correction messages are bitmaps whose length ``N`` is fixed by the transcript before
he sends them (Cascade: one comparison outcome per parity Alice answered; Winnow: one mismatch
flag per block; LDPC: one failure flag per open frame). Charging every bit he sends (``"sent"``)
is the plain rule of docs/finite-key.md §12. These bitmaps are far from uniform — most of
Cascade's later-pass comparisons and most Winnow blocks match — so they can be described in fewer
bits, and that description length is a rigorous charge (``"enumerative"``):

* **Code.** Given the transcript so far (hence ``N``), a bitmap ``b`` with ``k`` ones is described
  by one flag bit and then either the ``N`` raw bits or ``k`` in ``⌈log2(N+1)⌉`` bits followed by
  the rank of ``b`` among the ``C(N, k)`` bitmaps of weight ``k`` in ``⌈log2 C(N, k)⌉`` bits
  (enumerative coding, Cover, IEEE Trans. IT 19, 73 (1973)). Its length,
  :func:`enumerative_bits`, is at most ``N + 1`` and is self-delimiting given the context, so the
  set of complete transcripts with every message written this way is prefix-free.
* **Why the length of a prefix-free description is a sound charge.** With ``c`` the transcript
  and ``L(c)`` its description length (Kraft: ``Σ_c 2^{−L(c)} ≤ 1``), let ``ℓ(c) = H − L(c) −
  2 log2(1/ε_PA)`` with ``H`` the smooth min-entropy of the key given Eve before error
  correction. For every ``c``, Eve's probability of guessing the key *and* seeing ``c`` is at most
  her guessing probability without ``c`` (``ρ_{x,c,E} ≤ ρ_{x,E}``): ``p_c P_guess(X|E, C=c) ≤ 2^{−H}``.
  The leftover hash lemma for the state given each ``c``, averaged over ``c`` with Jensen's inequality,
  bounds the secrecy of the variable-length key by ``Σ_c p_c ½ √(2^{ℓ(c)} P_guess(X|E, C=c)) ≤
  ½ √(Σ_c 2^{ℓ(c)−H}) = ½ ε_PA √(Σ_c 2^{−L(c)}) ≤ ½ ε_PA`` (with the smoothing handled as in the fixed-length proof: the
  smoothed state is extended to Bob's string and pushed through the same transcript channel).
  This is the argument that already justifies charging the *realised* number of sent bits of an
  interactive protocol (whose length varies from run to run); the enumerative code only gives a
  shorter self-delimiting description of the same messages, and Eve learns exactly the same from
  the raw bitmap as from its codeword (a bijection given the context). Tupkary & Lütkenhaus
  (Phys. Rev. Applied 20, 064040 (2023)) show why Bob's messages must be charged at all; the
  bound here is ours, from the chain rule and Kraft's inequality as stated above.

Both parties compute the same charge: Bob from what he sends, Alice from what she receives
(:class:`DisclosureMeter`), so both derive the same final length.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ACCOUNTING_MODES", "DisclosureMeter", "enumerative_bits"]

#: ``sent``: every bit of Bob's bitmaps; ``enumerative``: their enumerative description length
ACCOUNTING_MODES = ("sent", "enumerative")


def _ceil_log2(x: int) -> int:
    """``⌈log2 x⌉`` for an integer ``x ≥ 1``, exactly."""
    return (int(x) - 1).bit_length()


def enumerative_bits(bits: np.ndarray) -> int:
    """Length of the self-delimiting description of a bitmap whose length is known from context.

    ``0`` for an empty bitmap (nothing needs describing); otherwise ``1 + min(N, ⌈log2(N+1)⌉ +
    ⌈log2 C(N, k)⌉)`` (module docstring), computed with exact integers.

    >>> enumerative_bits(np.zeros(1000, dtype=bool))
    11
    >>> enumerative_bits(np.array([True, False, True]))
    4
    """
    b = np.asarray(bits)
    n = int(b.size)
    if n == 0:
        return 0
    k = int(np.count_nonzero(b))
    k = min(k, n - k)  # C(n, k) = C(n, n − k): same length, smaller integer
    return 1 + min(n, _ceil_log2(n + 1) + _ceil_log2(math.comb(n, k)))


class DisclosureMeter:
    """Bob's error-correction disclosure under one accounting mode, message by message.

    Bob adds each bitmap he sends, Alice each one she receives; :attr:`bits` is the charge."""

    def __init__(self, mode: str = "sent"):
        if mode not in ACCOUNTING_MODES:
            raise ValueError(f"ec_bob_accounting must be one of {ACCOUNTING_MODES}, got {mode!r}")
        self.mode = mode
        self.bits = 0
        self.raw_bits = 0
        self.messages = 0

    def add(self, bitmap: np.ndarray) -> None:
        b = np.asarray(bitmap, dtype=bool).ravel()
        self.raw_bits += int(b.size)
        self.bits += int(b.size) if self.mode == "sent" else enumerative_bits(b)
        self.messages += 1
