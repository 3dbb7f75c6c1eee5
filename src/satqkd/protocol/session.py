"""Run the post-processing protocol on a pass's raw records: Alice and Bob in two threads.

``postprocess(raw, cfg, seed=...)`` splits the raw records into what each party knows, lets Bob
synchronise his time tags (his own local job), connects the two parties by an in-memory
authenticated channel, runs both, and returns a :class:`PostprocessResult` that compares their
final keys. The pre-shared authentication key (a real mission has it from the previous pass or
from launch) is drawn here from the seed; its consumption is charged against the key.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import DEFAULT_EC_METHOD, EC_METHODS, FINITE_KEY_METHODS, MissionConfig
from ..postprocess.authentication import KeyPool
from ..quantum.timing import synchronise
from ..records import RawRecords
from .channel import ChannelStats, memory_pair
from .parties import AliceData, BobData, PartyOutcome, ProtocolOptions, alice_party, bob_party

__all__ = ["PostprocessResult", "postprocess", "EC_METHODS", "FINITE_KEY_METHODS", "split_raw", "protocol_options", "party_rngs"]

#: size of the pre-shared authentication pool (bits): a pass consumes ~900 bits in transcript mode
#: (hash key + 2 checkpoints), ~1 per 4 round trips × 1000 bits with a tag on every message
AUTH_POOL_BITS = 1 << 20


@dataclass
class PostprocessResult:
    """Both parties' outcomes and the channel accounting of one post-processing run."""

    alice: PartyOutcome
    bob: PartyOutcome
    channel: ChannelStats
    options: ProtocolOptions
    sync_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.alice.ok and self.bob.ok

    @property
    def keys_match(self) -> bool:
        return self.ok and np.array_equal(self.alice.key, self.bob.key)

    @property
    def final_key_bits(self) -> int:
        return int(self.alice.key.size) if self.ok else 0

    @property
    def abort_reason(self) -> str | None:
        return self.alice.abort_reason or self.bob.abort_reason

    def ec_efficiency(self) -> float | None:
        """``f = leak / (n · h(QBER))`` with the total leak (both parties) and the QBER Bob measured
        while correcting; ``None`` when undefined (no key bits, QBER 0 or ≥ 0.5)."""
        from ..postprocess.reconciliation.result import binary_entropy

        b = self.bob
        if not b.sifted_key_bits or not b.qber or not 0 < b.qber < 0.5:  # (dropped LDPC frames count as errors)
            return None
        return float(b.leak_ec_bits / (b.sifted_key_bits * binary_entropy(b.qber)))

    def __repr__(self) -> str:
        if not self.ok:
            return f"PostprocessResult(aborted: {self.abort_reason})"
        return (
            f"PostprocessResult({self.final_key_bits:,} final bits from {self.bob.sifted_key_bits:,} sifted, "
            f"QBER {100 * (self.bob.qber or 0):.2f} %, f = {self.ec_efficiency():.3f}, keys match: {self.keys_match})"
        )


def split_raw(raw: RawRecords) -> tuple[AliceData, RawRecords]:
    """Alice's view of the raw records (Bob's view is the tags, which he synchronises himself)."""
    alice = AliceData(
        pulse_index=raw.alice_pulse_index,
        intensity=raw.alice_intensity,
        basis=raw.alice_basis,
        bit=raw.alice_bit,
        emitted=raw.slice_emitted.sum(axis=0),
    )
    return alice, raw


def protocol_options(cfg: MissionConfig, ec: str = DEFAULT_EC_METHOD, finite_key: str = "chernoff") -> ProtocolOptions:
    """The public protocol parameters both parties derive from the mission configuration."""
    if ec not in EC_METHODS:
        raise ValueError(f"ec must be one of {EC_METHODS}, got {ec!r}")
    if finite_key not in FINITE_KEY_METHODS:
        raise ValueError(f"finite_key must be one of {FINITE_KEY_METHODS}, got {finite_key!r}")
    src, sec = cfg.source, cfg.security
    # the estimation modes of [security] belong to the chernoff bound; the published lim2014 and
    # paper2017 analyses run as published (fixed offset, per count; paper2017 keys the signal only).
    # The result's estimation_mode / estimation_assumptions say what was used.
    chernoff = finite_key == "chernoff"
    if chernoff and (sec.intensity_model != "fixed_offset" or sec.decoy_statistics == "joint") and (
        len(src.intensities) != 3 or src.intensities[-1] != 0.0
    ):
        raise ValueError(
            f"security.intensity_model = {sec.intensity_model!r} / security.decoy_statistics = {sec.decoy_statistics!r} "
            f"need three intensities with a vacuum third one (source.intensities = {list(src.intensities)}); "
            "use intensity_model = 'fixed_offset' and decoy_statistics = 'per_count'"
        )
    return ProtocolOptions(
        intensities=tuple(src.intensities),
        probabilities=tuple(src.probabilities),
        intensity_fluctuation=float(src.intensity_fluctuation),
        ec_method=ec,
        finite_key=finite_key,
        epsilon=sec.epsilon,
        epsilon_cor=sec.epsilon_cor,
        qber_abort=sec.qber_abort,
        key_intensities=sec.key_intensities if finite_key != "paper2017" else "signal",
        intensity_model=sec.intensity_model if chernoff else "fixed_offset",
        decoy_statistics=sec.decoy_statistics if chernoff else "per_count",
        ec_bob_accounting=sec.ec_bob_accounting,
        misalignment_prior=1.0 / (1.0 + float(cfg.polarization.intrinsic_contrast)),
    )


def party_rngs(seed: int | None) -> tuple[np.random.Generator, ...]:
    """``(pool, alice, bob, sync)`` generators of a run: from ``seed`` (reproducible), or, with
    ``seed=None``, from fresh OS entropy (what a real deployment must use: Bob's squashing bits are
    secret). The same seed gives the same streams here and in the two-process parties."""
    ss = np.random.SeedSequence([int(seed), 0x5A7]) if seed is not None else np.random.SeedSequence()
    return tuple(np.random.default_rng(c) for c in ss.spawn(4))


def postprocess(
    raw: RawRecords,
    cfg: MissionConfig,
    *,
    seed: int = 0,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    one_way_delay_s: float | None = None,
    tamper=None,
    auth_pool_bits: int = AUTH_POOL_BITS,
    auth_mode: str = "transcript",
    key_ack: bool = False,
) -> PostprocessResult:
    """Sifting → estimation → error correction → verification → privacy amplification, two parties.

    Both ends are in this process, so both release their key after the final checkpoint.
    ``key_ack=True`` runs the two-process ending instead (the key-confirmation acknowledgement,
    its pad pair charged in ℓ: ``parties.py``), which gives the keys ``satqkd party`` gives.
    """
    opts = protocol_options(cfg, ec, finite_key)
    r_pool, r_alice, r_bob, r_sync = party_rngs(seed)
    alice_data, _ = split_raw(raw)
    t0 = time.perf_counter()
    det = synchronise(raw, rng=r_sync)
    sync_s = time.perf_counter() - t0
    bob_data = BobData(pulse_index=det.pulse_index, basis=det.bob_basis, bit=det.bob_bit)
    pool = KeyPool.from_rng(auth_pool_bits, r_pool)
    if one_way_delay_s is None:
        one_way_delay_s = float(raw.meta.get("mean_range_m", 9e5)) / 299_792_458.0
    a_ep, b_ep = memory_pair(
        pool, pool.copy(), cfg.classical, one_way_delay_s, timeout_s=600.0, tamper=tamper, auth_mode=auth_mode
    )
    results: dict[str, PartyOutcome] = {}
    errors: list[BaseException] = []

    def run(name, fn, ep, data, rng):
        try:
            results[name] = fn(ep, data, opts, rng, confirm=key_ack)
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the caller's thread
            errors.append(exc)

    ta = threading.Thread(target=run, args=("alice", alice_party, a_ep, alice_data, r_alice), name="alice")
    tb = threading.Thread(target=run, args=("bob", bob_party, b_ep, bob_data, r_bob), name="bob")
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    if errors:
        raise errors[0]
    return PostprocessResult(results["alice"], results["bob"], b_ep.stats, opts, sync_s)
