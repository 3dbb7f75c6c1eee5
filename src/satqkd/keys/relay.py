"""Satellite trusted relay: Xinglong and Nanshan share a key through the satellite.

The paper's outlook (Liao et al., Nature 549, 43 (2017), "Discussion and outlook"): QKD with
Xinglong, keep the key on board ~2 h until the satellite reaches Nanshan (~2,500 km away), QKD
there, then announce the XOR of the two keys so that the two stations share a key usable for
one-time-pad messages. With ``K_X`` the satellite–Xinglong key and ``K_N`` the
satellite–Nanshan key (same length ``L``)::

    announcement  A = K_X ⊕ K_N          (public, over the authenticated classical channel)
    Xinglong:     K = A ⊕ K_X = K_N
    Nanshan:      K = K_N

``A`` is a one-time-pad encryption of ``K_X`` under ``K_N``: if ``K_N`` is uniform and
independent of ``K_X``, ``A`` is uniform and independent of ``K_X`` (Shannon 1949), so an
eavesdropper who sees ``A`` learns nothing about the shared key. The satellite (the trusted node)
knows ``K``; that is the trust assumption of the relay.

Two layers:

* the relay *logic* on byte strings — :func:`relay_announcement`, :func:`station_relayed_key`;
* the bookkeeping on key stores — :func:`satellite_announce` marks both satellite keys
  *relayed* and names the exact key segments it used; :func:`station_apply` makes each station
  carve the same segments (state *relayed*) and deposit the derived key on its link to the other
  station under the relay id, so both stations hold the same root id, length and bytes.

Until the post-processing stage delivers final keys, :func:`standin_pass_keys` is the
**stand-in key source** (documented below); :func:`run_standin_relay` uses it to fill three stores
for tests and for ``kme.run_demo``. The announcement's transport over the authenticated channel is
the caller's (``RelayAnnouncement.to_json``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..faults import crash_point
from .store import KeyStore, Origin, Segment, key_id_for

__all__ = [
    "relay_announcement",
    "station_relayed_key",
    "RelayAnnouncement",
    "RelayResult",
    "satellite_announce",
    "station_apply",
    "standin_pass_keys",
    "deposit_pass_key",
    "deposit_pair",
    "run_standin_relay",
]


def _as_u8(b, name: str) -> np.ndarray:
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise ValueError(f"{name} must be bytes, got {type(b).__name__}")
    return np.frombuffer(bytes(b), dtype=np.uint8)


def relay_announcement(k_sat_x: bytes, k_sat_n: bytes) -> bytes:
    """The satellite's public announcement ``K_X ⊕ K_N`` (keys of equal length, bytes)."""
    x, n = _as_u8(k_sat_x, "k_sat_x"), _as_u8(k_sat_n, "k_sat_n")
    if x.size != n.size or x.size == 0:
        raise ValueError(f"k_sat_x and k_sat_n must be non-empty and of equal length, got {x.size} and {n.size} bytes")
    return np.bitwise_xor(x, n).tobytes()


def station_relayed_key(own_key: bytes, announcement: bytes, *, first_station: bool) -> bytes:
    """A station's share of the relayed key ``K = K_N``.

    The first station (the one whose pass came first, Xinglong) holds ``K_X`` and computes
    ``A ⊕ K_X``; the second (Nanshan) already holds ``K_N``.
    """
    own, a = _as_u8(own_key, "own_key"), _as_u8(announcement, "announcement")
    if own.size != a.size or a.size == 0:
        raise ValueError(f"own_key and announcement must be non-empty and of equal length, got {own.size} and {a.size}")
    return np.bitwise_xor(own, a).tobytes() if first_station else own.tobytes()


@dataclass(frozen=True)
class RelayAnnouncement:
    """What the satellite broadcasts (authenticated, public): relay id, the segments used, ``K_X ⊕ K_N``."""

    relay_id: str
    satellite: str
    first_station: str
    second_station: str
    first_segments: tuple[Segment, ...]
    second_segments: tuple[Segment, ...]
    xor: bytes

    @property
    def length_bits(self) -> int:
        return 8 * len(self.xor)

    def to_json(self) -> dict:
        return {
            "relay_id": self.relay_id,
            "satellite": self.satellite,
            "first_station": self.first_station,
            "second_station": self.second_station,
            "first_segments": [s.to_json() for s in self.first_segments],
            "second_segments": [s.to_json() for s in self.second_segments],
            "xor_hex": self.xor.hex(),
        }

    @classmethod
    def from_json(cls, d: dict | str) -> "RelayAnnouncement":
        d = json.loads(d) if isinstance(d, str) else d
        return cls(
            d["relay_id"], d["satellite"], d["first_station"], d["second_station"],
            tuple(Segment.from_json(s) for s in d["first_segments"]),
            tuple(Segment.from_json(s) for s in d["second_segments"]),
            bytes.fromhex(d["xor_hex"]),
        )

    def __repr__(self) -> str:
        return (
            f"RelayAnnouncement({self.satellite}: {self.first_station} ⊕ {self.second_station}, "
            f"{self.length_bits} bits, id {self.relay_id[:8]}…)"
        )


@dataclass(frozen=True)
class RelayResult:
    """Outcome of a relay: the announcement and the relayed key id/length at both stations."""

    announcement: RelayAnnouncement
    relay_key_id: str
    length_bits: int
    pass_key_ids: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        a = self.announcement
        return f"RelayResult({a.first_station}–{a.second_station}: {self.length_bits} bits, key {self.relay_key_id})"


def satellite_announce(
    sat_store: KeyStore,
    first_station: str,
    second_station: str,
    *,
    nbits: int | None = None,
    relay_id: str | None = None,
    direction: bool = True,
) -> RelayAnnouncement:
    """On board: take ``L`` bits of key with each station (state *relayed*) and form ``K_X ⊕ K_N``.

    ``L = min(available with first, available with second, nbits)`` rounded down to whole
    bytes. Both takes and the announcement are one transaction per link; the satellite's copies are
    wiped as they are marked relayed. The announcement is the satellite *sending* (``K_N`` under the
    pad ``K_X``, and the reverse), so with ``direction`` (the default) it is cut only from the
    satellite's own directional stream of each key (:func:`satqkd.keys.store.direction_window`, as
    for a one-time pad): a pad a station already sent with toward the satellite is never published
    in the XOR (the other station could read it). ``direction=False`` uses the whole pool — only
    for keys no station can have used yet.
    """
    bits = sat_store.directional_bits if direction else sat_store.available_bits
    avail = min(bits(first_station), bits(second_station))
    L = avail if nbits is None else min(avail, int(nbits))
    L -= L % 8
    if L <= 0:
        raise ValueError(
            f"no key to relay: {sat_store.site} holds {sat_store.available_bits(first_station)} bits with "
            f"{first_station!r} and {sat_store.available_bits(second_station)} with {second_station!r}"
        )
    relay_id = relay_id or str(uuid.uuid4())
    held: dict = {}

    def _second(segs, material):
        held["n"] = (segs, material)

    def _first(segs, material):
        held["x"] = (segs, material)
        # the second take runs while the first transaction is open: both commit or neither
        sat_store.take(second_station, L, state="relayed", purpose="relay", request_id=relay_id, within=_second,
                       direction=direction)

    sat_store.take(first_station, L, state="relayed", purpose="relay", request_id=relay_id, within=_first,
                   direction=direction)
    (sx, kx), (sn, kn) = held["x"], held["n"]
    return RelayAnnouncement(
        relay_id, sat_store.site, first_station, second_station, tuple(sx), tuple(sn), relay_announcement(kx, kn)
    )


def station_apply(store: KeyStore, ann: RelayAnnouncement, *, epsilon: float | None = None, seed: int | None = None,
                  pending: bool = False) -> str:
    """At a station: carve the announced segments of its satellite key (*relayed*) and deposit ``K``.

    ``K`` goes on the link to the other station with root id ``ann.relay_id`` and origin
    ``relay``. The deposit runs inside the carve's transaction, so a crash cannot leave the
    segment relayed without the derived key (or the reverse). With ``pending`` the key is deposited
    *pending* (never served) until the relay commits (:meth:`KeyStore.activate`), and the station
    records ``prepared`` for the relay in its journal in the same transaction. The segments are
    checked against the station's usage ledger and claimed there (purpose ``relay <relay id>``) inside
    that transaction. Returns the relayed key id.
    """
    if store.site == ann.first_station:
        segs, first, other = ann.first_segments, True, ann.second_station
    elif store.site == ann.second_station:
        segs, first, other = ann.second_segments, False, ann.first_station
    else:
        raise ValueError(f"store of {store.site!r} is neither {ann.first_station!r} nor {ann.second_station!r}")
    origin = Origin(
        kind="relay", pass_id=ann.relay_id, seed=seed, epsilon=epsilon,
        note=f"{ann.first_station}⊕{ann.second_station} via {ann.satellite}",
    )

    purpose = f"relay {ann.relay_id}"

    def _derive(_segs, material):
        # the segment's bits are now half of a public XOR: in the station's usage ledger before K exists,
        # so a restored station store cannot hand them out again (e.g. as an OTP pad the other station
        # could read). Idempotent for this relay (a resumed one re-derives the same K).
        store.ledger_check(ann.satellite, _segs, purpose=purpose)
        store.ledger_claim(_segs, purpose=purpose)
        store.deposit(other, station_relayed_key(material, ann.xor, first_station=first), key_id=ann.relay_id,
                      origin=origin, pending=pending, request_id=ann.relay_id if pending else None)
        if pending:
            store.put_op(ann.relay_id, "relay", "prepared")

    store.take_segments(ann.satellite, segs, state="relayed", purpose="relay", request_id=ann.relay_id, within=_derive)
    return ann.relay_id


def standin_pass_keys(rng: np.random.Generator, nbytes: int) -> bytes:
    """**Stand-in key source** — NOT a QKD result: ``nbytes`` uniform bytes from ``rng``.

    Stands for the final key a successful pass leaves identically at the satellite and the
    station, until the post-processing stage's final keys are wired in (then deposit the real
    key with :func:`deposit_pass_key`). Used only by tests and, until then, by the KME demo.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    if nbytes <= 0:
        raise ValueError(f"nbytes must be ≥ 1, got {nbytes}")
    return rng.integers(0, 256, size=int(nbytes), dtype=np.uint8).tobytes()


def deposit_pass_key(
    sat_store: KeyStore,
    station_store: KeyStore,
    key: bytes | np.ndarray,
    *,
    pass_id: str,
    seed: int | None = None,
    epsilon: float | None = None,
    kind: str = "qkd",
) -> str:
    """Deposit one pass's final key at both ends (satellite and station) under one id (``key_id_for(pass_id)``),
    both or neither (:func:`deposit_pair`)."""
    kid = key_id_for(pass_id)
    origin = Origin(kind=kind, pass_id=pass_id, seed=seed, epsilon=epsilon)
    return deposit_pair(sat_store, key, station_store, key, key_id=kid, origin=origin)


def deposit_pair(
    store_1: KeyStore,
    key_1: bytes | np.ndarray,
    store_2: KeyStore,
    key_2: bytes | np.ndarray,
    *,
    key_id: str,
    origin: Origin,
    crash_prefix: str = "deposit",
) -> str:
    """Deposit one key at both ends of a link — both or neither, resumable.

    ``store_1`` (link = ``store_2.site``) gets ``key_1`` and ``store_2`` gets ``key_2`` (the two ends'
    copies of one verified key). Each is first deposited *pending* (never served), then both are
    activated. After a crash at any point, calling this again with the same key finishes the
    deposit (a pending or active copy with the same material is kept, :meth:`KeyStore.deposit`
    ``exist_ok``); until then a half deposit is only ever pending at one end, or available at one end
    and pending at the other — where the far end refuses to carve it, so it cannot be used. Crash
    points (:func:`satqkd.faults.crash_point`): ``<prefix>:pending-1``, ``<prefix>:pending-2``,
    ``<prefix>:active-1``.
    """
    store_1.deposit(store_2.site, key_1, key_id=key_id, origin=origin, pending=True, request_id=key_id,
                    exist_ok=True)
    crash_point(f"{crash_prefix}:pending-1")
    store_2.deposit(store_1.site, key_2, key_id=key_id, origin=origin, pending=True, request_id=key_id,
                    exist_ok=True)
    crash_point(f"{crash_prefix}:pending-2")
    store_1.activate(key_id)
    crash_point(f"{crash_prefix}:active-1")
    store_2.activate(key_id)
    return key_id


def run_standin_relay(
    sat_store: KeyStore,
    first_store: KeyStore,
    second_store: KeyStore,
    *,
    seed: int,
    nbytes: int = 1 << 17,
) -> RelayResult:
    """Relay on **stand-in** pass keys (see :func:`standin_pass_keys`): two passes, announce, derive.

    Fills the three stores as a real relay would: a pass key with each station (same id at both
    ends), the satellite's stream of it marked relayed, and the relayed key (``nbytes``) deposited at
    both stations. Each stand-in pass key holds ``2 · nbytes`` so that its satellite's half relays
    ``nbytes``; the station's half stays available on its satellite link.
    """
    rng = np.random.default_rng(seed)
    ids = {}
    for st in (first_store, second_store):
        pid = f"standin-{sat_store.site}-{st.site}-seed{seed}-{uuid.uuid4().hex[:8]}"
        ids[st.site] = deposit_pass_key(sat_store, st, standin_pass_keys(rng, 2 * nbytes), pass_id=pid, seed=seed,
                                        kind="standin")
    ann = satellite_announce(sat_store, first_store.site, second_store.site, nbits=8 * nbytes)
    kid = station_apply(first_store, ann)
    station_apply(second_store, ann)
    return RelayResult(ann, kid, ann.length_bits, ids)
