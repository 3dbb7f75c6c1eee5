"""Alice (satellite) and Bob (ground station): the post-processing protocol as two parties.

Each party holds only its own data and an :class:`~satqkd.protocol.channel.Endpoint`; everything
they learn about each other arrives in authenticated messages. The message sequence:

==== ============== ======================================================================
dir  kind           content
==== ============== ======================================================================
up   detections     Bob's detected pulse indices (varint gaps) and measurement bases
down sifting        Alice's bases and intensity labels of those pulses, her bits of the sifted
                    events outside the key set (``[security] key_intensities``: vacuum only by
                    default, decoy and vacuum for a signal key), emitted pulses per intensity,
                    the public seed of error correction
up   test_errors    Bob's error counts on the disclosed (test) events per basis and intensity
 ⇅   ec_*           error correction (LDPC, one-way: Alice's syndromes, Bob's success flag per
                    open frame, Alice's next items in each failed frame's public reveal order;
                    Cascade: Bob's queries with his comparison outcomes, Alice's parities;
                    Hamming/Winnow: parities, Bob's mismatch bitmaps, syndromes). Leakage is
                    every content bit either party sent in these messages, read from the
                    channel's accounting (:func:`ec_leak_by_party`; docs/finite-key.md §12)
up   ec_done        Bob's error counts of the key events per basis and key class — public, charged
                    by the estimation (⌈log2(n+1)⌉ bits each)
down verify         Alice's fresh hash key and the tag of her key (ε_cor)
up   verify_result  match or not: a mismatch discards the block, no key is output (1 bit,
                    charged to Bob with his EC messages)
down pa_seed        Alice's Toeplitz seed; both hash to the final length ℓ
down checkpoint     Alice's final transcript tag
up   checkpoint     Bob's final transcript tag (sent only after he verified Alice's)
down ack            (``confirm=True``: two processes) Alice's acknowledgement of Bob's tag
==== ============== ======================================================================

Key confirmation (``confirm=True``, what :func:`~satqkd.protocol.remote.run_party` uses; see
``docs/two-processes.md``). A party *releases* its key (``key_state="released"``) only when it
knows the peer holds the same key, and keeps it *pending* (never delivered) when it cannot know:

* Alice stores the key as pending right after sending her final tag, and releases it once Bob's
  final tag verifies (Bob sends it only after verifying hers and storing the key: he holds it);
  then she sends the acknowledgement (one more tag: a pad pair, charged in ℓ).
* Bob stores the key as pending after verifying Alice's final tag, before sending his, and
  releases it when Alice's acknowledgement verifies (she holds and released it).
* Whatever fails after a party stored its key (a lost or altered final message, a closed
  connection, an unauthenticated abort), the key stays pending: a later authenticated contact
  confirms or discards it (:func:`~satqkd.protocol.remote.run_confirm`). Anything that fails
  before leaves no key at that party.

The receiver of the last message cannot know it arrived (the two generals), so no exchange can
release at both ends in every case; this one guarantees that a key released at one end is held
(released or pending) with the same bits at the other. In one process (``confirm=False``,
``postprocess``) both ends are known and both release after the final checkpoint.

Authentication: the endpoints run in ``auth_mode="transcript"``; two checkpoints (after error
correction, and after the privacy-amplification seed) exchange Wegman–Carter tags over everything
sent and received, so nothing decided before a checkpoint is used unless it verified, and no key
is output before the last one. (With ``auth_mode="each"`` every message carries its own tag and
the checkpoints are no-ops; Cascade's thousands of round trips then cost 256 pool bits each.)

The final length ℓ comes from :mod:`satqkd.postprocess.estimation` with the leakage actually
disclosed, the verification tag, and the authentication key the whole run consumes (the key
consumed so far plus the pads of the final checkpoint; checked at the end). Both parties compute ℓ from the same
public numbers, so they agree without sending it. Either party aborts on inconsistent data,
statistics that give no key, or a failed authentication tag; an abort yields no key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import DEFAULT_EC_METHOD
from ..postprocess import amplification, estimation, verification
from ..postprocess.authentication import PAD_BITS, AuthenticationError
from ..postprocess.sifting import count_table, error_table
from .disclosure import DisclosureMeter
from .channel import ChannelError, Endpoint
from .compress import decode_sorted, encode_sorted, pack_2bit, unpack_2bit

__all__ = ["AliceData", "BobData", "ProtocolOptions", "PartyOutcome", "alice_party", "bob_party", "ec_leak_by_party",
           "EC_KINDS", "VERIFY_RESULT_BITS"]

#: pool bits the run still consumes once the key length is fixed: the final checkpoint (2 pads)
#: in transcript mode, or the pads of verify, verify_result, pa_seed (≤ 2 lane pairs) per message
REMAINING_AUTH_BITS = {"transcript": 2 * PAD_BITS, "each": 4 * PAD_BITS}
#: tags still to come once the key length is fixed: the final checkpoint (one tag each way) in
#: transcript mode, or verify, verify_result, pa_seed in each mode
REMAINING_TAGS = {"transcript": 2, "each": 3}
KEY_INTENSITY = 0  # the signal state (always part of the key set; the set is ProtocolOptions.key_classes)
#: LDPC retries (items per failed frame and retry: ``ldpc.reveal_step_for``, 300 for 12 retries, then
#: doubling every 4): 28 retries reveal up to ≈ 40,000 items per frame — enough when the decoy-based
#: QBER prediction is 30 % low (40 s passes) or half the true QBER (full photon-number splitting: 1.8 %
#: predicted, 3.7 % true), so the run reaches its statistics instead of dropping every frame
LDPC_MAX_RETRIES = 28
#: LDPC frames are planned for this fraction of the predicted QBER: the blind retries add what a
#: frame lacks, whereas a syndrome planned for too high a QBER cannot be taken back (one-way). The
#: decoy-based prediction is noisy on short passes (±30 % on 40 s) but low on average (full pass:
#: 0.996 % for 1.102 %), and 0.8 cost 1 % of f there (measured), so 1.0
LDPC_PLAN_QBER_FACTOR = 1.0
#: message kinds of error correction; every content bit of them is charged (ec_leak_by_party)
EC_KINDS = ("ec_query", "ec_answer", "ec_end", "ec_parities", "ec_mismatch", "ec_syndromes", "ec_failed", "ec_reveal")
#: Bob's verification reply (match / no match), charged to him with his EC messages
VERIFY_RESULT_BITS = 1
#: pool bits of the key-confirmation acknowledgement (one tag; the authenticator takes pads in lane pairs)
CONFIRM_AUTH_BITS = 2 * PAD_BITS
KEY_STATES = ("released", "pending", "none")


class ProtocolAbort(RuntimeError):
    """This party ends the run without a key (the reason is sent to the peer)."""


@dataclass(frozen=True)
class AliceData:
    """What the satellite knows: every pulse it sent that could matter (see RawRecords)."""

    pulse_index: np.ndarray
    intensity: np.ndarray
    basis: np.ndarray
    bit: np.ndarray
    emitted: np.ndarray  # pulses sent per intensity


@dataclass(frozen=True)
class BobData:
    """What the ground station knows after synchronisation: its detections."""

    pulse_index: np.ndarray
    basis: np.ndarray
    bit: np.ndarray


@dataclass(frozen=True)
class ProtocolOptions:
    """Public parameters both parties agree on before the pass (from the mission configuration)."""

    intensities: tuple[float, ...] = (0.8, 0.1, 0.0)
    probabilities: tuple[float, ...] = (0.5, 0.25, 0.25)
    intensity_fluctuation: float = 0.05
    ec_method: str = DEFAULT_EC_METHOD
    finite_key: str = "chernoff"
    epsilon: float = 1e-9
    epsilon_cor: float = 1e-12
    qber_abort: float = 0.11
    key_intensities: str = "signal"
    intensity_model: str = "fixed_offset"
    decoy_statistics: str = "per_count"
    #: how Bob's error-correction bitmaps are charged: every bit sent, or their enumerative
    #: description length (protocol/disclosure.py; docs/finite-key.md §12)
    ec_bob_accounting: str = "sent"
    #: pre-pass calibration of the misalignment error (1/(1+contrast)); only sets error-correction
    #: parameters when no decoy bits are disclosed (key set with decoy bits), never the key length
    misalignment_prior: float = 0.003

    @property
    def key_classes(self) -> tuple[int, ...]:
        """Intensity classes whose sifted bits form the key (the estimation's key set)."""
        return estimation.KEY_INTENSITY_INDICES[self.key_intensities]


@dataclass
class PartyOutcome:
    """One party's result: its final key (or None) and the public record of the run."""

    role: str
    key: np.ndarray | None = None
    abort_reason: str | None = None
    sifted_key_bits: int = 0
    qber: float | None = None
    leak_ec_bits: int = 0
    #: ``{"alice": bits, "bob": bits}``: who disclosed what (sums to ``leak_ec_bits``)
    leak_ec_bits_by_party: dict = field(default_factory=dict)
    ec_result: object | None = None
    estimate: object | None = None
    verification_tag_bits: int = 0
    auth_key_bits: int = 0
    epsilon_parts: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    #: "released" (deliverable: the peer holds the same key), "pending" (held, not deliverable
    #: until confirmed) or "none"; ``key`` is set in the first two states
    key_state: str = "none"

    @property
    def ok(self) -> bool:
        return self.key is not None and self.key_state == "released"


class _Stages:
    def __init__(self, out: PartyOutcome):
        self.out = out
        self.t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.out.stage_seconds[name] = self.out.stage_seconds.get(name, 0.0) + now - self.t
        self.t = now


def _run(role: str, ep: Endpoint, body: Callable[[PartyOutcome], None]) -> PartyOutcome:
    out = PartyOutcome(role)

    def fail(reason: str) -> None:
        # a key already stored (pending, or released just before the acknowledgement) is kept:
        # the peer may hold it; anything earlier leaves no key
        if out.key_state == "none":
            out.key = None
        if out.key_state != "released":
            out.abort_reason = reason
        ep.abort(reason)

    try:
        body(out)
    except ProtocolAbort as exc:
        fail(str(exc))
    except (ChannelError, AuthenticationError) as exc:  # tag failures, the peer's abort, timeouts
        fail(f"{type(exc).__name__}: {exc}")
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError) as exc:
        # a message that is not yet authenticated (transcript mode) may have been altered in
        # transit: whatever it breaks, the run ends without a key
        fail(f"malformed or altered message ({type(exc).__name__}: {exc})")
    except Exception as exc:  # noqa: BLE001 - a crash must still tell the peer, then propagate
        ep.abort(f"internal error: {exc}")
        raise
    finally:
        out.auth_key_bits = ep.stats.auth_key_bits
    return out


# ------------------------------------------------------------------------------------------ helpers
def predicted_signal_qber(n_tab: np.ndarray, m_tab: np.ndarray, detections: np.ndarray, emitted: np.ndarray) -> float:
    """QBER expected for the signal state from the disclosed decoy and vacuum events.

    Gains ``Q_k = D_k / N_k``; the vacuum gives ``Y0`` (error rate ½), the decoy ``e_d`` via
    ``E_ν Q_ν = Y0/2 + e_d (Q_ν − Y0)`` (Ma et al., PRA 72, 012326 (2005), eqs. for the
    gain and QBER), then ``E_μ = (Y0/2 + e_d (Q_μ − Y0)) / Q_μ``. Only sets Cascade's block sizes.
    """
    q = detections / np.maximum(emitted, 1)
    k = len(q)
    y0 = q[-1] if k >= 3 else 0.0
    nd, md = n_tab[:, 1].sum(), m_tab[:, 1].sum()
    e_nu = md / nd if nd else 0.02
    denom = max(q[1] - y0, 1e-30)
    e_d = min(max((e_nu * q[1] - y0 / 2) / denom, 0.0), 0.2)
    e_mu = (y0 / 2 + e_d * max(q[0] - y0, 0.0)) / max(q[0], 1e-30)
    return float(min(max(e_mu, 1e-4), 0.2))


def predicted_key_qber(n_tab, m_tab, detections, emitted, opts: "ProtocolOptions") -> float:
    """QBER expected for the key set, the hint that sets error-correction parameters (not security).

    Signal key: :func:`predicted_signal_qber` from the disclosed decoy errors. With decoy bits in the
    key no decoy errors are known before error correction: ``Y0`` from the vacuum gain, ``e_d`` from
    the pre-pass calibration ``opts.misalignment_prior``, ``E_k = (Y0/2 + e_d (Q_k − Y0))/Q_k`` per key
    class (Ma et al. 2005), weighted by the class's sifted counts.
    """
    kc = list(opts.key_classes)
    e_k = predicted_class_qbers(n_tab, m_tab, detections, emitted, opts)
    w = np.asarray(n_tab, dtype=float)[:, kc].sum(axis=0)
    e = float((e_k * w).sum() / max(w.sum(), 1.0))
    return float(min(max(e, 1e-4), 0.2))


def predicted_class_qbers(n_tab, m_tab, detections, emitted, opts: "ProtocolOptions") -> np.ndarray:
    """QBER expected for each key class (``opts.key_classes`` order), from public data only: a
    parameter of error correction (the LDPC decoder's prior per key bit), never of the key length.

    Signal-only key: :func:`predicted_signal_qber`. Otherwise ``E_k = (Y0/2 + e_d (Q_k − Y0))/Q_k`` with
    ``Y0`` from the vacuum gain and ``e_d`` from ``opts.misalignment_prior`` (Ma et al. 2005)."""
    kc = list(opts.key_classes)
    if 1 not in kc:
        return np.full(len(kc), predicted_signal_qber(n_tab, m_tab, detections, emitted))
    q = detections / np.maximum(emitted, 1)
    y0 = q[-1] if len(q) >= 3 and opts.intensities[-1] == 0 else 0.0
    e_k = np.array([(y0 / 2 + opts.misalignment_prior * max(q[k] - y0, 0.0)) / max(q[k], 1e-30) for k in kc])
    return np.clip(e_k, 1e-4, 0.2)


def key_bit_qbers(class_qbers: np.ndarray, key_class: np.ndarray, opts: "ProtocolOptions") -> np.ndarray:
    """Per key bit: the predicted QBER of its (public) intensity class."""
    lut = np.zeros(max(opts.key_classes) + 1)
    lut[list(opts.key_classes)] = class_qbers
    return lut[np.asarray(key_class, dtype=np.int64)]


# ------------------------------------------------------------------------------------------ Alice
def alice_party(
    ep: Endpoint, data: AliceData, opts: ProtocolOptions, rng: np.random.Generator, *, confirm: bool = False, keeper=None
) -> PartyOutcome:
    """The satellite's side of the protocol (module docstring).

    ``confirm``: end with the key-confirmation acknowledgement (module docstring; charged in ℓ).
    ``keeper``: optional object with ``hold(key)`` (store the key durably as pending) and
    ``release()`` (make it deliverable), called at the moments the rule fixes.
    """

    def body(out: PartyOutcome) -> None:
        st = _Stages(out)
        msg = ep.recv("detections")
        n_det = int(msg["n"])
        idx = decode_sorted(msg["pulses"], n_det)
        b_basis = np.asarray(msg["bases"], dtype=np.uint8)
        if b_basis.size != n_det:
            raise ProtocolAbort(f"detections message carries {b_basis.size} bases for {n_det} pulses")
        pos = np.searchsorted(data.pulse_index, idx)
        ok = (pos < data.pulse_index.size) & (data.pulse_index[np.minimum(pos, data.pulse_index.size - 1)] == idx)
        if not np.all(ok):
            raise ProtocolAbort(f"{int(np.count_nonzero(~ok))} announced pulses were never sent")
        a_int, a_basis, a_bit = data.intensity[pos], data.basis[pos], data.bit[pos]
        sifted = a_basis == b_basis
        key = sifted & np.isin(a_int, opts.key_classes)
        test = sifted & ~key
        ec_seed = int.from_bytes(rng.bytes(8), "big")
        ep.send(
            "sifting",
            bases=a_basis.astype(bool),
            intensity=pack_2bit(a_int),
            test_bits=a_bit[test].astype(bool),
            emitted=np.asarray(data.emitted, dtype=np.int64),
            ec_seed=ec_seed,
        )
        st.mark("sifting")
        k = len(opts.intensities)
        n_tab = count_table(a_int[sifted], a_basis[sifted], k)
        errs = ep.recv("test_errors")
        m_tab = np.asarray(errs["m"], dtype=np.int64).reshape(2, k)
        det_per_int = np.bincount(a_int, minlength=k)
        qber_est = predicted_key_qber(n_tab, m_tab, det_per_int, np.asarray(data.emitted), opts)
        _check_predicted_qber(qber_est, opts)
        q_bits = key_bit_qbers(predicted_class_qbers(n_tab, m_tab, det_per_int, np.asarray(data.emitted), opts), a_int[key], opts)
        key_bits = a_bit[key]
        out.sifted_key_bits = int(key_bits.size)
        st.mark("estimation")
        # --- error correction: Alice holds the reference key
        meter = DisclosureMeter(opts.ec_bob_accounting)
        keep, padded = _alice_ec(ep, key_bits, opts, ec_seed, qber_est, rng, q_bits, meter)
        done = ep.recv("ec_done")
        ep.checkpoint()
        m_sig = np.asarray(done["m_signal"], dtype=np.int64).reshape(2, -1)
        if m_sig.shape[1] != len(opts.key_classes):
            raise ProtocolAbort(f"ec_done carries {m_sig.shape[1]} error counts per basis for {len(opts.key_classes)} key classes")
        m_tab[:, list(opts.key_classes)] = m_sig
        dropped = 0
        if keep is not None:  # frames dropped by LDPC: their bits count as disclosed (chain rule)
            dropped = int(np.count_nonzero(~keep))
            key_bits = key_bits[keep]
        out.leak_ec_bits_by_party = ec_leak_by_party(ep.stats, dropped, padded, meter)
        leak = out.leak_ec_bits = sum(out.leak_ec_bits_by_party.values())
        _abort_if_every_frame_failed(keep)
        st.mark("error_correction")
        _finish(out, ep, st, "alice", key_bits, n_tab, m_tab, np.asarray(data.emitted, dtype=np.int64), opts, rng, leak,
                confirm, keeper)

    return _run("alice", ep, body)


def _alice_ec(ep: Endpoint, key_bits: np.ndarray, opts: ProtocolOptions, seed: int, qber_est: float, rng,
              q_bits: np.ndarray | None, meter: DisclosureMeter):
    """Alice's side of error correction; returns ``(keep mask or None, padded bits)``; every bitmap
    Bob sends is added to ``meter``.

    The keep mask (LDPC) marks the frames that decoded; the padded bits are the syndrome
    dimensions one-time-padded by her private punctured bits (LDPC: ``Σ rank H_P``, else 0).
    What is disclosed is not returned: :func:`ec_leak_by_party` reads it from the channel."""
    from ..postprocess import reconciliation as rec

    if opts.ec_method == "cascade":
        alice = rec.CascadeAlice(key_bits, rec.CascadeParams(seed=seed))
        owed = 0  # Bob's next message carries one outcome per parity of her last answer
        while True:
            msg = ep.recv(("ec_query", "ec_end"))
            outcomes = np.asarray(msg.get("outcomes", np.zeros(0, bool)), dtype=bool)
            if outcomes.size != owed:
                raise ProtocolAbort(f"{outcomes.size} Cascade outcomes for {owed} answered parities")
            meter.add(outcomes)
            if "queries" not in msg:
                return None, 0
            ans = alice.answer(rec.cascade.decode_queries(msg["queries"]))
            ep.send("ec_answer", parities=ans.astype(bool))
            owed = int(ans.size)
    if opts.ec_method == "hamming":
        alice = rec.HammingAlice(key_bits, qber_est, seed)
        while not alice.done:
            par = alice.parities()
            ep.send("ec_parities", parities=par.astype(bool))
            mism = np.asarray(ep.recv("ec_mismatch")["mismatch"], dtype=bool)
            meter.add(mism)
            syn = alice.syndromes(mism)
            ep.send("ec_syndromes", syndromes=np.asarray(syn).astype(bool))
        return None, 0
    if opts.ec_method == "ldpc":
        plans = rec.plan_frames(key_bits.size, _ldpc_plan_qber(_ldpc_qber(qber_est, q_bits), opts), targeted=False)
        alice = rec.LdpcAlice(key_bits, plans, seed, rng)
        syn = alice.syndromes()
        # each frame's check tag (charged: a bool field) lets Bob reject a wrong word of the right syndrome
        ep.send("ec_syndromes", syndromes=np.concatenate(syn).astype(bool), sizes=np.array([x.size for x in syn]),
                tags=np.concatenate(alice.frame_tags()).astype(bool))
        open_ = np.ones(len(plans), dtype=bool)  # frames whose outcome is not yet final (public)
        for attempt in range(LDPC_MAX_RETRIES + 1):
            failed = np.asarray(ep.recv("ec_failed")["failed"], dtype=bool)
            meter.add(failed)
            if failed.size != int(open_.sum()):
                raise ProtocolAbort(f"failure flags for {failed.size} frames, {int(open_.sum())} are open")
            frames = np.flatnonzero(open_)[failed]
            open_[:] = False
            open_[frames] = True
            if not frames.size or attempt == LDPC_MAX_RETRIES:
                break
            # the next items of each failed frame in the frame's public reveal order, fixed before
            # decoding (FramePlan.reveal_order): Bob names nothing
            vals = alice.reveal(frames, rec.ldpc.reveal_step_for(attempt))
            ep.send("ec_reveal", values=np.concatenate(vals).astype(bool), sizes=np.array([v.size for v in vals]))
        return _ldpc_keep(plans, alice.perm, ~open_), _ldpc_padded_bits(plans)
    raise ProtocolAbort(f"unknown error correction {opts.ec_method!r}")


def _ldpc_keep(plans, perm: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Keep mask in key order: positions of frames that decoded (the frame layout is public)."""
    keep = np.empty(perm.size, dtype=bool)
    keep[perm] = np.concatenate([np.full(pl.key_len, bool(ok[f])) for f, pl in enumerate(plans)])
    return keep


def _split(flat: np.ndarray, sizes: np.ndarray, dtype=np.uint8) -> list[np.ndarray]:
    flat, sizes = np.asarray(flat, dtype=dtype), np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or np.any(sizes < 0) or int(sizes.sum()) != flat.size:
        raise ProtocolAbort(f"message sizes ({int(sizes.sum())}) do not match its {flat.size} values")
    return np.split(flat, np.cumsum(sizes)[:-1])


# ------------------------------------------------------------------------------------------ Bob
def bob_party(
    ep: Endpoint, data: BobData, opts: ProtocolOptions, rng: np.random.Generator, *, confirm: bool = False, keeper=None
) -> PartyOutcome:
    """The ground station's side of the protocol (module docstring; ``confirm``, ``keeper`` as
    :func:`alice_party`)."""

    def body(out: PartyOutcome) -> None:
        st = _Stages(out)
        n_det = int(data.pulse_index.size)
        ep.send("detections", n=n_det, pulses=encode_sorted(data.pulse_index), bases=data.basis.astype(bool))
        msg = ep.recv("sifting")
        a_basis = np.asarray(msg["bases"], dtype=np.uint8)
        if a_basis.size != n_det:
            raise ProtocolAbort(f"sifting message carries {a_basis.size} bases for {n_det} detections")
        a_int = unpack_2bit(msg["intensity"], n_det)
        emitted = np.asarray(msg["emitted"], dtype=np.int64)
        k = emitted.size
        if np.any(a_int >= k):
            raise ProtocolAbort("intensity label out of range")
        sifted = a_basis == data.basis
        key = sifted & np.isin(a_int, opts.key_classes)
        test = sifted & ~key
        a_test = np.asarray(msg["test_bits"], dtype=np.uint8)
        if a_test.size != int(np.count_nonzero(test)):
            raise ProtocolAbort("test bits do not match the sifted decoy/vacuum events")
        st.mark("sifting")
        n_tab = count_table(a_int[sifted], a_basis[sifted], k)
        m_tab = error_table(a_int[test], a_basis[test], a_test != data.bit[test], k)
        ep.send("test_errors", m=m_tab.ravel())
        det_per_int = np.bincount(a_int, minlength=k)
        qber_est = predicted_key_qber(n_tab, m_tab, det_per_int, emitted, opts)
        _check_predicted_qber(qber_est, opts)
        key_bits = data.bit[key]
        key_basis = a_basis[key]
        key_class = a_int[key]
        q_bits = key_bit_qbers(predicted_class_qbers(n_tab, m_tab, det_per_int, emitted, opts), key_class, opts)
        out.sifted_key_bits = int(key_bits.size)
        st.mark("estimation")
        meter = DisclosureMeter(opts.ec_bob_accounting)
        corrected, keep, ec_res, padded = _bob_ec(ep, key_bits, opts, int(msg["ec_seed"]), qber_est, q_bits, meter)
        flipped = corrected != key_bits
        if keep is not None:
            # bits of LDPC frames that failed to decode: their error count is unknown, so count
            # every one of them as an error (the phase-error bound of the other basis uses it)
            flipped = np.where(keep, flipped, True)
        # error counts of the key bits per basis and key class (public; charged by the estimation)
        m_sig = np.array([[np.count_nonzero(flipped & (key_basis == b) & (key_class == c)) for c in opts.key_classes]
                          for b in (0, 1)], dtype=np.int64)
        ep.send("ec_done", m_signal=m_sig.ravel())
        ep.checkpoint()
        m_tab[:, list(opts.key_classes)] = m_sig
        dropped = 0
        if keep is not None:
            dropped = int(np.count_nonzero(~keep))
            corrected = corrected[keep]
        out.leak_ec_bits_by_party = ec_leak_by_party(ep.stats, dropped, padded, meter)
        leak = out.leak_ec_bits = sum(out.leak_ec_bits_by_party.values())
        _abort_if_every_frame_failed(keep)
        out.ec_result = ec_res
        out.qber = float(m_sig.sum() / key_bits.size) if key_bits.size else None  # key-set QBER
        st.mark("error_correction")
        _finish(out, ep, st, "bob", corrected, n_tab, m_tab, emitted, opts, rng, leak, confirm, keeper)

    return _run("bob", ep, body)


def _bob_ec(ep: Endpoint, key_bits: np.ndarray, opts: ProtocolOptions, seed: int, qber_est: float,
            q_bits: np.ndarray | None, meter: DisclosureMeter):
    """Bob's side of error correction; returns (corrected bits, keep mask or None, result, padded
    bits); every bitmap he sends is added to ``meter`` (and sent: the channel counts it too)."""

    def send(kind: str, field: str, bitmap: np.ndarray, **rest) -> None:
        bitmap = np.asarray(bitmap).astype(bool)
        meter.add(bitmap)
        ep.send(kind, **rest, **{field: bitmap})

    from ..postprocess import reconciliation as rec

    if opts.ec_method == "cascade":
        bob = rec.CascadeBob(key_bits, rec.CascadeParams(seed=seed), qber_est)

        def ask(q: np.ndarray) -> np.ndarray:
            # his queries are a function of public data and of these outcomes (CascadeBob.take_outcomes),
            # which are sent, hence counted on the wire
            send("ec_query", "outcomes", bob.take_outcomes(), queries=rec.cascade.encode_queries(q))
            ans = np.asarray(ep.recv("ec_answer")["parities"], dtype=np.uint8)
            if ans.shape != (q.shape[1],):
                raise ProtocolAbort(f"Alice answered {ans.size} parities to {q.shape[1]} queries")
            return ans

        try:
            res = bob.reconcile(ask)
        except rec.cascade.CascadeError as exc:
            raise ProtocolAbort(f"error correction inconsistent: {exc}") from None
        send("ec_end", "outcomes", bob.take_outcomes())
        return res.bob_bits, None, res, 0
    if opts.ec_method == "hamming":
        bob = rec.HammingBob(key_bits, qber_est, seed)
        trips = 0
        while not bob.done:  # the schedule is public: both sides know when it ends
            par = np.asarray(ep.recv("ec_parities")["parities"], dtype=np.uint8)
            mism = bob.on_parities(par)
            send("ec_mismatch", "mismatch", mism)
            bob.on_syndromes(np.asarray(ep.recv("ec_syndromes")["syndromes"], dtype=np.uint8))
            trips += 1
        return bob.bits, None, {"method": "winnow", "round_trips": trips}, 0
    if opts.ec_method == "ldpc":
        plans = rec.plan_frames(key_bits.size, _ldpc_plan_qber(_ldpc_qber(qber_est, q_bits), opts), targeted=False)
        bob = rec.LdpcBob(key_bits, plans, _ldpc_prior(qber_est, q_bits, opts), seed)
        msg = ep.recv("ec_syndromes")
        tags = np.asarray(msg["tags"], dtype=np.uint8)
        if tags.size != rec.ldpc.FRAME_TAG_BITS * len(plans):
            raise ProtocolAbort(f"ec_syndromes carries {tags.size} tag bits for {len(plans)} frames")
        bob.load_tags(np.split(tags, len(plans)))
        failed = np.asarray(bob.on_syndromes(_split(msg["syndromes"], msg["sizes"])), dtype=bool)
        frames = np.arange(len(plans))
        retries = 0
        for attempt in range(LDPC_MAX_RETRIES + 1):
            # one success/failure flag per open frame: Bob's only message, charged
            send("ec_failed", "failed", failed[frames])
            frames = frames[failed[frames]]
            if not frames.size or attempt == LDPC_MAX_RETRIES:
                break
            r = ep.recv("ec_reveal")
            failed = np.asarray(bob.on_reveal(frames, _split(r["values"], r["sizes"])), dtype=bool)
            retries += 1
        bits, keep = bob.result_bits()
        return bits, keep, {"method": "ldpc", "retries": retries, "frames": len(plans)}, _ldpc_padded_bits(plans)
    raise ProtocolAbort(f"unknown error correction {opts.ec_method!r}")


def _abort_if_every_frame_failed(keep) -> None:
    """No LDPC frame decoded: the key's QBER is far above what public data predicted (an attack, or a
    pass much worse than the calibrated contrast when decoy bits are key and no decoy errors are
    disclosed before error correction); say so rather than "no sifted key bits"."""
    if keep is not None and keep.size and not keep.any():
        raise ProtocolAbort("every LDPC frame failed to decode: the key's QBER is far above the public "
                            "prediction (above the abort threshold, or a prediction far off); no key")


def _check_predicted_qber(qber_est: float, opts: ProtocolOptions) -> None:
    """One-way LDPC cannot measure a QBER it cannot correct: when the QBER predicted from the
    disclosed decoy/vacuum bits (public) is already above the abort threshold (e.g. intercept-resend),
    both parties abort before error correction. Two-way methods measure it on the key instead."""
    if opts.ec_method == "ldpc" and qber_est > opts.qber_abort:
        raise ProtocolAbort(f"QBER predicted from the test bits {qber_est:.4f} above the abort threshold {opts.qber_abort}")


def _ldpc_qber(qber_est: float, q_bits: np.ndarray | None) -> float:
    """The QBER LDPC frames are sized for: with per-bit predictions (key bits of several intensity
    classes, their labels public) the BSC of equal conditional entropy, else the key-set prediction."""
    from ..postprocess.reconciliation.ldpc import equivalent_qber

    if q_bits is None or q_bits.size == 0 or np.all(q_bits == q_bits[0]):
        return qber_est
    return equivalent_qber(q_bits)


def _ldpc_prior(qber_est: float, q_bits: np.ndarray | None, opts: ProtocolOptions):
    """The decoder's prior: each key bit's class QBER (capped like the plan), or one value."""
    if q_bits is None or q_bits.size == 0 or np.all(q_bits == q_bits[0]):
        return qber_est
    return np.minimum(q_bits, opts.qber_abort)


def _ldpc_plan_qber(qber_est: float, opts: ProtocolOptions) -> float:
    """QBER the LDPC frames are planned for (public): the prediction, at most the abort threshold —
    a higher true QBER aborts the run anyway, and a wild prediction (decoys hit by an attack) would
    otherwise plan codes outside the ensembles' range, so that every frame fails and the run ends
    before its statistics are even evaluated."""
    return float(min(LDPC_PLAN_QBER_FACTOR * qber_est, opts.qber_abort))


def _ldpc_padded_bits(plans) -> int:
    """Syndrome dimensions one-time-padded by Alice's private punctured bits: ``Σ rank H_P``.

    For a frame ``S = H_K x + H_P r`` with ``r`` uniform and private: ``H_min(X|E S R_J) ≥
    H_min(X|E) − (m + |J|) + rank H_P`` for any revealed punctured values ``R_J`` (``H_P`` has full
    column rank, so ``(S, R_J)`` given ``x`` is uniform on ``2^rank`` values; chain rule), i.e. the
    leak is the bits sent minus ``rank H_P`` (Martinez-Mateo, Elkouss, Martin, QIC 12, 791 (2012),
    eqs. (3)–(4))."""
    return int(sum(pl.code.m - pl.syndrome_leak for pl in plans))


def ec_leak_by_party(stats, dropped_bits: int = 0, padded_bits: int = 0, meter: DisclosureMeter | None = None) -> dict[str, int]:
    """Error-correction leakage per party, read from the channel's content-bit accounting.

    ``alice``: every bit of her EC messages (:data:`EC_KINDS`, downlink), less the syndrome
    dimensions padded by her private random bits (:func:`_ldpc_padded_bits`); ``bob``: every bit of
    his EC messages (uplink: Cascade outcomes, Winnow mismatch bitmaps, LDPC success flags), his
    verification reply (:data:`VERIFY_RESULT_BITS`, sent later, charged now) and the bits of
    frames dropped after his final failure flags (chain rule: discarding bits of the string costs
    at most their number). Integer fields of those messages (Cascade's query ranges, sizes) are
    functions of public data and of these bits (``docs/finite-key.md``, "EC leakage").

    With a ``meter`` in ``enumerative`` mode, Bob's bitmaps (the ``meter``'s raw bits, all of them
    also counted on the channel) are charged at their enumerative description length instead
    (:mod:`satqkd.protocol.disclosure`); any other content of his messages stays charged bit for bit."""
    bob_sent = stats.bits("up", EC_KINDS)
    if meter is not None and meter.mode == "enumerative":
        if meter.raw_bits > bob_sent:
            raise ProtocolAbort(f"disclosure meter saw {meter.raw_bits} bitmap bits, the channel {bob_sent}")
        bob_sent += meter.bits - meter.raw_bits
    return {
        "alice": stats.bits("down", EC_KINDS) - int(padded_bits),
        "bob": bob_sent + VERIFY_RESULT_BITS + int(dropped_bits),
    }


# ------------------------------------------------------------------------------------------ both
def _finish(out, ep, st, role, key_bits, n_tab, m_tab, emitted, opts, rng, leak, confirm=False, keeper=None) -> None:
    """Estimation, verification, privacy amplification (the same public arithmetic on both sides),
    the final checkpoint and, with ``confirm``, the key-confirmation rule (module docstring)."""
    n = int(key_bits.size)
    if n == 0:
        raise ProtocolAbort("no sifted key bits")
    kc = list(opts.key_classes)
    qber = float(m_tab[:, kc].sum() / max(n_tab[:, kc].sum(), 1))
    out.qber = qber
    if qber > opts.qber_abort:
        raise ProtocolAbort(f"QBER {qber:.4f} above the abort threshold {opts.qber_abort}")
    t_bits = verification.tag_length_for(n, opts.epsilon_cor)
    out.verification_tag_bits = t_bits
    eps_cor = verification.collision_bound(n, t_bits)
    # authentication: everything consumed so far plus the pads still to come
    auth_bits = ep.stats.auth_key_bits + REMAINING_AUTH_BITS[ep.auth_mode] + (CONFIRM_AUTH_BITS if confirm else 0)
    eps_auth = _auth_bound(ep, extra_tags=1 if confirm else 0)
    eps_sec = opts.epsilon - eps_cor - eps_auth
    if eps_sec <= 0:
        raise ProtocolAbort("the ε budget is used up by correctness and authentication")
    counts = estimation.DecoyCounts(
        n=n_tab, m=m_tab, emitted=emitted, intensities=opts.intensities, probabilities=opts.probabilities,
        intensity_fluctuation=opts.intensity_fluctuation,
    )
    est = estimation.estimate(
        counts,
        method=opts.finite_key,
        eps_sec=eps_sec,
        eps_cor=eps_cor,
        leak_ec_bits=leak,
        extra_cost_bits=auth_bits,
        ev_tag_bits=t_bits,
        qber_abort=opts.qber_abort,
        key_intensities=opts.key_intensities,
        intensity_model=opts.intensity_model,
        decoy_statistics=opts.decoy_statistics,
    )
    out.estimate = est
    out.counts = {"n": n_tab.tolist(), "m": m_tab.tolist(), "emitted": np.asarray(emitted).tolist()}
    out.epsilon_parts = {**est.epsilon_parts, "authentication (forgery)": eps_auth}
    st.mark("estimation")
    if est.abort_reason or est.key_length <= 0:
        raise ProtocolAbort(f"no key: {est.abort_reason or 'key length ≤ 0'}")
    ell = int(est.key_length)
    # --- error verification
    if role == "alice":
        vkey = verification.draw_verification_key(t_bits, rng)
        tag = verification.verification_tag(key_bits, vkey, t_bits)
        ep.send("verify", key=vkey, tag=tag, tag_bits=t_bits)
        if not bool(ep.recv("verify_result")["match"]):
            raise ProtocolAbort("error verification failed: keys differ, block discarded")
    else:
        v = ep.recv("verify")
        if int(v["tag_bits"]) != t_bits:
            raise ProtocolAbort("verification tag length disagrees")
        match = verification.verification_tag(key_bits, int(v["key"]), t_bits) == int(v["tag"])
        ep.send("verify_result", match=bool(match))
        if not match:
            raise ProtocolAbort("error verification failed: keys differ, block discarded")
    st.mark("verification")
    # --- privacy amplification
    if role == "alice":
        seed = amplification.draw_seed(n, ell, rng)
        ep.send("pa_seed", seed=seed.astype(bool), n=n, ell=ell)
    else:
        msg = ep.recv("pa_seed")
        if int(msg["n"]) != n or int(msg["ell"]) != ell:
            raise ProtocolAbort("privacy amplification sizes disagree")
        seed = np.asarray(msg["seed"], dtype=np.uint8)
    key = amplification.toeplitz_hash(key_bits, seed, ell)
    st.mark("privacy_amplification")
    if not confirm:
        ep.checkpoint()  # everything since error correction, including the seed, is authentic
        if ep.stats.auth_key_bits > auth_bits:
            raise ProtocolAbort(f"authentication consumed {ep.stats.auth_key_bits} pool bits, {auth_bits} were charged")
        out.key, out.key_state = key, "released"
        return

    def hold() -> None:  # this side's point of commitment: from here on the peer may hold the key
        if keeper is not None:
            keeper.hold(key)
        out.key, out.key_state = key, "pending"

    # Alice: send tag, hold, verify Bob's; Bob: verify Alice's, hold, send tag
    ep.checkpoint(between=hold)
    if role == "alice":
        # Bob's final tag verified: he verified hers and stored the key before sending it
        if keeper is not None:
            keeper.release()
        out.key_state = "released"
        ep.acknowledge()
    else:
        ep.await_acknowledgement()  # Alice verified his tag: she holds (and released) the key
        if keeper is not None:
            keeper.release()
        out.key_state = "released"
    if ep.stats.auth_key_bits > auth_bits:  # cannot happen: the pool of a run holds exactly the charge
        raise AssertionError(f"authentication consumed {ep.stats.auth_key_bits} pool bits, {auth_bits} were charged")


def _auth_bound(ep: Endpoint, extra_tags: int = 0) -> float:
    """Forgery probability of the whole run: every tag (checkpoint, or message) could be attacked.

    Each tag covers at most all the bytes of the run, so each fails with probability at most
    :func:`~satqkd.postprocess.authentication.forgery_bound` of that length (conservative).
    """
    from ..postprocess.authentication import forgery_bound

    st = ep.stats
    if ep.auth_mode == "transcript":
        n_tags = 2 * ep.checkpoints + REMAINING_TAGS["transcript"] + extra_tags
    else:
        n_tags = st.messages_up + st.messages_down + REMAINING_TAGS["each"] + extra_tags
    return n_tags * forgery_bound(st.bytes_up + st.bytes_down + (1 << 24))
