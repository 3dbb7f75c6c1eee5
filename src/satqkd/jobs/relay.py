"""The satellite trusted relay on simulated passes: Xinglong pass, Nanshan pass, ``K_X ⊕ K_N``.

Liao et al., Nature 549, 43 (2017), "Discussion and outlook": QKD with Xinglong, keep the key on
board until the satellite reaches Nanshan near Urumqi, QKD there, then announce the XOR of the two
keys so that both stations share a key. :func:`run_relay` does this end to end:

1. **passes** — the first night pass over ``cfg.station`` and the next night pass over
   ``cfg.second_station`` that starts after it (:func:`find_relay_passes`; 16:49 and 18:23 UTC on
   2016-12-19 for the preset ``micius-relay-xinglong-nanshan``);
2. **QKD** — each pass is simulated and post-processed (:func:`satqkd.jobs.one_pass.run_pass`) with its own seed,
   derived from the relay seed by :func:`pass_seeds`;
3. **deposit** — each pass's final key goes into the satellite's store (link = station) and the
   station's store (link = satellite) under one id, ``key_id_for(pass_id)``, with its origin
   (pass id, seed, ε) (:func:`deposit_pass`). The satellite deposits Alice's key and the station
   Bob's: they are equal only because the protocol verified them, and :attr:`RelayResult.keys_match`
   is read back from the stores;
4. **relay** — the satellite announces ``A = K_X ⊕ K_N`` over an authenticated channel to each
   station, and each station derives ``K = K_N`` into its store on the link to the other station
   (:func:`relay_deposited`).

The announcement is the satellite *sending* (``K_N`` under the pad ``K_X`` to Xinglong, ``K_X`` under
``K_N`` to Nanshan), so, like any one-time-pad sender (:mod:`satqkd.keys.otp`), it uses only the
satellite's own directional stream ``[lo, hi)`` of each pass key
(:func:`satqkd.keys.store.direction_window`: the first half when the satellite's name sorts first). A
pad a station already sent with toward the satellite lies in the station's stream and is never
published in ``A`` (the other station knows its own pass key and could read it from ``A``).

Authentication of the announcement (Wegman–Carter, :mod:`satqkd.postprocess.authentication`) is
**charged to the pass keys**: the first :data:`AUTH_BITS_PER_LINK` bits of the satellite's stream of
each pass key are cut at both ends of the link as *consumed* (purpose ``authentication``) and become
the key pool of that link's channel (``memory_pair(..., auth_mode="each")``: 127 bits of hash key
once, then a pad pair of 2 × 128 bits per round — three rounds at most: announce/ready, commit/done,
revoke/ack). The relayed length is then ``L = min(hi − lo) − AUTH_BITS_PER_LINK`` over the two pass
keys (about half the shorter key), cut right after the authentication bits, identically at both ends
(the segments are named in the announcement). The rest of each pass key (the station's stream, and
what is left of the satellite's) stays *available* on its satellite–station link.

Failure semantics (every store change is one SQLite transaction; nothing is available twice):

* **a pass aborts** (QBER above the threshold, too short a key, …): its key is not deposited and
  there is no relay; the other pass's key, if any, stays available at both ends of its link;
* **the announcement fails authentication** at a station (phase 1): no station derives anything.
  The satellite marked its two segments *relayed* before sending ``A`` (once ``A`` is public the
  two ranges are no longer independent keys), and a station that did verify ``A`` marks its own
  segment *relayed* too on the satellite's authenticated *cancel*. A station whose verification
  failed keeps its range listed as available, but it is unusable: any use of a satellite link key
  needs the satellite to carve the same range, which it refuses (it is relayed there);
* **two-phase commit**: the stations apply (carve their segment *relayed* and deposit ``K`` in one
  transaction) only on the satellite's authenticated *commit*, which it sends after both
  stations verified ``A``. If a station then answers (authenticated) that it did not apply, the
  satellite sends *revoke* to the others, which mark their relayed key *consumed* (purpose
  ``other``): no relayed key is left available at one station only. If a station's confirmation
  is forged or lost, its state is unknown to the satellite; it most likely applied, so nothing is
  revoked and the result says "unconfirmed" (``ok`` false; ``keys_match`` still read from the
  stores). A real system would retry the (idempotent) commit over a fresh authenticated session;
  that, and a station crashing between commit and apply, are not modelled.

Crash safety (issue 9 §3): the relay is journaled in the satellite's store (``KeyStore.put_op``,
kind ``relay``). The satellite's first transaction consumes its authentication keys, marks both
relay segments relayed and records the announcement (``announced``); a station *prepares* on a
verified announcement (its segment relayed and ``K`` deposited *pending*, never served, in one
transaction); the satellite records its decision (``commit`` or ``cancelled``) before sending it;
a station activates ``K`` on the commit; ``done`` closes the journal (``revoked`` if a station
refused). Each pass key is deposited pending at both ends, then activated at both
(:func:`satqkd.keys.relay.deposit_pair`). Rerunning the same relay after a crash at any point
(:func:`relay_passes`, ``satqkd relay``) finishes the deposits and then finishes the relay from the
journal (:func:`_recover_relay`): nothing is relayed twice, and both stations end with the same
relayed key. The authentication keys of the announcement are checked against each site's usage
ledger (beside its store) and claimed there before the first message, so a restored store cannot
announce with them again.

The relayed key's ε is ``ε_X + ε_N`` plus the forgery bounds of the authenticated relay messages
(a union bound over the failure events; the XOR itself is a one-time pad and adds nothing).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DEFAULT_EC_METHOD, MissionConfig
from ..faults import crash_point
from ..keys.relay import RelayAnnouncement, deposit_pair, relay_announcement, station_apply
from ..keys.store import KeyStore, KeyStoreError, KeyUnavailable, Origin, Segment, direction_window, key_id_for
from ..postprocess.authentication import HASH_KEY_BITS, P127, PAD_BITS, AuthenticationError, KeyPool, forgery_bound
from ..protocol.channel import ChannelError, PeerAborted, Tamper, memory_pair
from ..records import PassGeometry
from .one_pass import PassOutcome, end_utc, pass_id_for, run_pass, truncate_geometry

__all__ = [
    "AUTH_BITS_PER_LINK",
    "RELAY_PRESET",
    "RelayExists",
    "RelayLink",
    "RelayResult",
    "announcement_bytes",
    "deposit_pass",
    "find_relay_passes",
    "pass_seeds",
    "relay_deposited",
    "relay_forgery_bound",
    "relay_length_bits",
    "relay_passes",
    "second_station_config",
    "RELAY_CRASH_POINTS",
    "run_relay",
    "write_relay_outputs",
]

#: Preset of the relay (``satqkd relay`` default and the KME demo's key source, :mod:`.kme_demo`).
RELAY_PRESET = "micius-relay-xinglong-nanshan"
#: Rounds of the relay exchange on each link (announce/ready, commit/done, revoke/ack).
_ROUNDS = 3
#: Key cut from each pass key (both ends) to authenticate the relay exchange on that link: the hash
#: key (127 bits) and one pad pair (2 × 128 bits) per round, rounded up to whole bytes.
AUTH_BITS_PER_LINK = 8 * math.ceil((HASH_KEY_BITS + _ROUNDS * 2 * PAD_BITS) / 8)
_C_M_S = 299_792_458.0


class RelayExists(KeyStoreError):
    """The stores already hold this relay's pass keys (same preset, passes and seed): not run again.

    Depositing the same simulated key twice would make a two-time pad; use another seed or fresh
    stores. ``relay_key_id`` is the relayed key's id if the relay itself completed.
    """

    def __init__(self, message: str, *, relay_key_id: str | None = None, length_bits: int = 0):
        super().__init__(message)
        self.relay_key_id = relay_key_id
        self.length_bits = length_bits


# ------------------------------------------------------------------------------------------ passes
def second_station_config(cfg: MissionConfig) -> MissionConfig:
    if cfg.second_station is None:
        raise ValueError(f"cfg.second_station must be set for a relay (preset {RELAY_PRESET!r} sets Nanshan); "
                         f"config {cfg.name!r} has none")
    return cfg.model_copy(update={"station": cfg.second_station})


def find_relay_passes(cfg: MissionConfig, *, window_s: float | None = None) -> tuple[PassGeometry, PassGeometry]:
    """The first pass over ``cfg.station`` and the next pass over ``cfg.second_station`` starting after it ends.

    Both under ``cfg.passes`` (elevation, range and night rules). The second search starts at the
    end of the first pass and spans ``cfg.passes.search_days``. ``window_s`` keeps only that many
    seconds around each culmination (:func:`truncate_geometry`; for fast tests). Raises
    ``ValueError`` if either pass is missing.
    """
    from ..sky.orbit import find_passes, satellite_from_config

    cfg2 = second_station_config(cfg)
    sat = satellite_from_config(cfg.orbit, cfg.satellite)
    first = find_passes(sat, cfg.station, cfg.passes, satellite_name=cfg.satellite)
    if not first:
        raise ValueError(f"no pass of {cfg.satellite} over {cfg.station.name} in the search span of {cfg.name!r}")
    g1 = first[0]
    rules2 = cfg.passes.model_copy(update={"search_start_utc": end_utc(g1)})
    second = [g for g in find_passes(sat, cfg2.station, rules2, satellite_name=cfg.satellite) if g.start_utc >= end_utc(g1)]
    if not second:
        raise ValueError(
            f"no pass of {cfg.satellite} over {cfg2.station.name} within {rules2.search_days} d after "
            f"the {cfg.station.name} pass ending {end_utc(g1):%Y-%m-%d %H:%M:%S} UTC"
        )
    g2 = second[0]
    if window_s is not None:
        g1, g2 = truncate_geometry(g1, window_s), truncate_geometry(g2, window_s)
    return g1, g2


def pass_seeds(seed: int) -> tuple[int, int]:
    """Two distinct pass seeds derived from the relay seed (``SeedSequence([seed, k])``, k = 0, 1)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    s = [int(np.random.SeedSequence([int(seed), k]).generate_state(1, dtype=np.uint32)[0]) for k in (0, 1)]
    if s[0] == s[1]:  # 2^-32: keep them distinct
        s[1] = (s[1] + 1) % (1 << 32)
    return s[0], s[1]


def _check_sites(cfg: MissionConfig, sat_store: KeyStore, store_a: KeyStore, store_b: KeyStore) -> None:
    want = ((sat_store, cfg.satellite, "sat_store"), (store_a, cfg.station.name, "store_a"),
            (store_b, second_station_config(cfg).station.name, "store_b"))
    for st, site, name in want:
        if st.site != site:
            raise ValueError(f"{name} must be the store of {site!r} (config {cfg.name!r}), got {st.site!r}")


def deposit_pass(sat_store: KeyStore, station_store: KeyStore, p: PassOutcome, *, resume: bool = False) -> str | None:
    """Deposit a pass's final key at the satellite (link = station) and the station (link = satellite).

    Same root id (``key_id_for(pass_id)``) and origin (pass id, seed, ε) at both ends; the
    satellite stores Alice's key, the station Bob's; both or neither (:func:`satqkd.keys.relay.deposit_pair`:
    pending at both ends, then active). Returns the key id, or ``None`` (nothing written) if the
    pass aborted. Refuses (``RelayExists``, nothing written) if both stores already hold that key
    active, unless ``resume`` (a rerun after a crash: a half deposit is finished, a whole one kept).
    """
    if sat_store.site != p.satellite or station_store.site != p.station:
        raise ValueError(f"stores ({sat_store.site!r}, {station_store.site!r}) do not match the pass "
                         f"({p.satellite!r}, {p.station!r})")
    if not p.ok:
        return None
    kid = p.key_id
    held = [st for st in (sat_store, station_store) if any(r["root_id"] == kid for r in st.roots())]
    if held and not resume and not any(q.state == "pending" for st in held for q in st.pieces()
                                       if q.root_id == kid):
        raise RelayExists(f"{held[0].site}'s store already holds the key of pass {p.pass_id} ({kid}): a simulated "
                          "pass key is deposited once (another seed, or fresh stores)")
    origin = Origin(kind="qkd", pass_id=p.pass_id, seed=p.seed, epsilon=p.epsilon,
                    note=f"{p.satellite}–{p.station} pass {p.summary['start_utc']}")
    return deposit_pair(sat_store, p.sat_key, station_store, p.station_key, key_id=kid, origin=origin,
                        crash_prefix=f"deposit:{p.station}")


def _root_bits(store: KeyStore, link: str, root_id: str) -> int:
    for r in store.roots(link):
        if r["root_id"] == root_id:
            return int(r["length_bits"])
    raise KeyUnavailable(f"{store.site}'s store holds no key {root_id} on link {link!r}")


def _nested(store: KeyStore, ops: list[tuple[str, list[Segment], str, str]], request_id: str,
            inner: Callable[[list[bytes]], None] | None = None) -> list[bytes]:
    """Carve several (link, segments, state, purpose) groups in ONE transaction (nested savepoints);
    ``inner(materials)`` runs last, inside that transaction."""
    out: list[bytes] = []

    def run(i: int) -> None:
        if i == len(ops):
            if inner is not None:
                inner(out)
            return
        link, segs, state, purpose = ops[i]

        def within(_segs, material):
            out.append(material)
            run(i + 1)

        store.take_segments(link, segs, state=state, purpose=purpose, request_id=request_id, within=within)

    run(0)
    return out


@dataclass
class RelayLink:
    """Accounting of the relay exchange on one satellite–station link."""

    station: str
    auth_key_bits: int = AUTH_BITS_PER_LINK
    auth_bits_used: int = 0
    messages: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    link_time_s: float = 0.0
    forgery_bound: float = 0.0
    verified: bool = False
    applied: bool = False
    revoked: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _RelayRecord:
    ok: bool
    reason: str | None
    relay_id: str | None = None
    length_bits: int = 0
    announcement: RelayAnnouncement | None = None
    links: dict = field(default_factory=dict)
    keys_match: bool = False
    epsilon: float | None = None


def _read_root(store: KeyStore, link: str, root_id: str) -> bytes | None:
    """Material of a root that is still wholly available (else ``None``)."""
    ps = [p for p in store.pieces(link, "available") if p.root_id == root_id]
    if len(ps) != 1 or ps[0].offset_bits != 0 or ps[0].length_bits != _root_bits(store, link, root_id):
        return None
    return store.peek_segments(link, [Segment(ps[0].key_id, root_id, 0, ps[0].length_bits)])


def relay_length_bits(*available_bits: int) -> int:
    """Bits relayed from key of these lengths, one per link: ``L = min − AUTH_BITS_PER_LINK``, rounded
    down to whole bytes; 0 if that leaves less than one byte (no relay).

    Each link also gives :data:`AUTH_BITS_PER_LINK` bits of its key to authenticate the exchange.
    """
    L = min(int(n) for n in available_bits) - AUTH_BITS_PER_LINK
    L -= L % 8
    return L if L >= 8 else 0


def announcement_bytes(ann: RelayAnnouncement) -> int:
    """Bytes of the relay announcement as authenticated on each link: its metadata (JSON, without the
    XOR's hex), the XOR itself, and 64 bytes of message framing."""
    meta = {k: v for k, v in ann.to_json().items() if k != "xor_hex"}
    return len(json.dumps(meta)) + len(ann.xor) + 64


def relay_forgery_bound(announcement_len_bytes: int, *, links: int = 2) -> float:
    """Probability that some relay message is forged: on each of ``links`` links the announcement
    plus at most five short messages (≤ 256 bytes: ready, commit, done, revoke, ack), union bound."""
    return links * (forgery_bound(announcement_len_bytes) + 5 * forgery_bound(256))


#: The relay's steps as journaled in the satellite's store (``KeyStore.put_op``, kind ``relay``):
#: ``announced`` (auth keys consumed, relay segments relayed, A recorded — one transaction), then the
#: decision ``commit`` or ``cancelled``, then ``done`` (every station confirmed) or ``revoked``.
RELAY_FINAL_STATES = ("done", "cancelled", "revoked")
#: Crash points of a relay run (:func:`satqkd.faults.crash_point`), in the order they are reached.
RELAY_CRASH_POINTS = (
    "deposit:{first}:pending-1", "deposit:{first}:pending-2", "deposit:{first}:active-1",
    "deposit:{second}:pending-1", "deposit:{second}:pending-2", "deposit:{second}:active-1",
    "relay:announced", "relay:auth:{first}", "relay:auth:{second}", "relay:prepared:{first}",
    "relay:prepared:{second}", "relay:commit", "relay:activated:{first}", "relay:activated:{second}",
)


def _relay_purpose(relay_id: str) -> str:
    return f"relay {relay_id}"


def _relayed_state(store: KeyStore, other: str, relay_id: str) -> str | None:
    """``'available'`` / ``'pending'`` if the station holds the relayed key whole in that state, else the
    state(s) found (``None``: it does not hold it)."""
    ps = [p for p in store.pieces(other) if p.root_id == relay_id]
    if not ps:
        return None
    states = {p.state for p in ps}
    return states.pop() if len(states) == 1 and len(ps) == 1 else "+".join(sorted(states))


def _revoke(store: KeyStore, other: str, relay_id: str, L: int) -> bool:
    """Take a station's relayed key out of service: pending → undone, available → consumed. True if it held one."""
    st = _relayed_state(store, other, relay_id)
    if st == "pending":
        store.discard_pending(relay_id, note="relay revoked")
        return True
    if st == "available":
        store.take_segments(other, [Segment(key_id_for(f"{relay_id}|revoked"), relay_id, 0, L)],
                            state="consumed", purpose="other", request_id=relay_id)
        return True
    # partly used already (the operator used K between a crash and the rerun): retire what is left of it
    # (and any pending piece), so no part of K stays usable at this station alone
    left = [p for p in store.pieces(other) if p.root_id == relay_id and p.state in ("available", "pending")]
    if st is not None and any(p.state == "pending" for p in left):
        store.discard_pending(relay_id, note="relay revoked")
    segs = [Segment(key_id_for(f"{relay_id}|revoked|{p.offset_bits}"), relay_id, p.offset_bits, p.length_bits)
            for p in left if p.state == "available"]
    if segs:
        store.take_segments(other, segs, state="consumed", purpose="other", request_id=relay_id)
    return st is not None


def _recover_relay(op: dict, sat_store: KeyStore, stores: dict[str, KeyStore], stations: tuple[str, str],
                   auth_seg: dict[str, Segment], seed: int | None) -> _RelayRecord:
    """Finish (or roll back) a relay that a crash interrupted, from the satellite's journal.

    * ``announced`` (the satellite committed A, no decision yet): roll forward — every station that is
      not prepared is brought there from the satellite's record of A (its authentication key, if
      still unused, is retired: the exchange it was for is over), then ``commit``;
    * ``commit``: every station holds K (pending, available, or partly used already) → activate all,
      ``done``; otherwise
      revoke K wherever it is, ``revoked``;
    * ``revoked``: take K out of service at every station that still holds it (pending → undone,
      available → consumed): the revoke messages may not have arrived;
    * ``cancelled``: undo every station's pending K.

    The recovery reads the durable records of all three stores (the operator who reruns
    ``satqkd relay`` holds them all, as the relay command itself does); it sends nothing, so it
    uses no authentication key. A deployment would carry the same decision over a fresh
    authenticated session (not modelled).
    """
    relay_id = op["op_id"]
    ann = RelayAnnouncement.from_json(op["data"]["announcement"])
    eps = op["data"].get("epsilon")
    L = ann.length_bits
    other = {stations[0]: stations[1], stations[1]: stations[0]}
    links = {s: RelayLink(s, error="recovered from the journal after a crash") for s in stations}
    state = op["state"]
    # the satellite's ledger claim may be the step the crash cut off (idempotent for this relay)
    sat_store.ledger_claim([auth_seg[s] for s in stations] + list(ann.first_segments) + list(ann.second_segments),
                           purpose=_relay_purpose(relay_id))
    if state == "announced":
        for s in stations:
            st = stores[s]
            if _relayed_state(st, other[s], relay_id) is None:
                if any(p.state == "available" and p.root_id == auth_seg[s].root_id
                       and p.offset_bits <= auth_seg[s].offset_bits < p.offset_bits + p.length_bits
                       for p in st.pieces(sat_store.site)):
                    st.take_segments(sat_store.site, [auth_seg[s]], state="consumed", purpose="authentication",
                                     request_id=relay_id)
                try:
                    station_apply(st, ann, epsilon=eps, seed=seed, pending=True)
                except KeyStoreError as exc:
                    links[s].error = f"recovery could not prepare {s}: {exc}"
        sat_store.put_op(relay_id, "relay", "commit")
        state = "commit"
    if state == "commit":
        # a station holds K if it has any piece of it: pending, available, or already partly used (an
        # operator may have used the activated K before rerunning) — it applied, so the others must too
        held = {s: _relayed_state(stores[s], other[s], relay_id) for s in stations}
        if all(h is not None for h in held.values()):
            for s in stations:
                stores[s].activate(relay_id)
                links[s].verified = links[s].applied = True
            sat_store.put_op(relay_id, "relay", "done")
            state = "done"
        else:
            for s in stations:
                links[s].revoked = _revoke(stores[s], other[s], relay_id, L)
            sat_store.put_op(relay_id, "relay", "revoked")
            state = "revoked"
    elif state == "revoked":
        # a station answered that it did not apply: K is taken out of service wherever it still is (the
        # revoke messages may have been lost, or the satellite died right after recording the decision)
        for s in stations:
            links[s].revoked = _revoke(stores[s], other[s], relay_id, L)
    elif state == "cancelled":
        for s in stations:
            if _relayed_state(stores[s], other[s], relay_id) == "pending":
                stores[s].discard_pending(relay_id, note="relay cancelled")
    ka = _read_root(stores[stations[0]], stations[1], relay_id)
    kb = _read_root(stores[stations[1]], stations[0], relay_id)
    match = ka is not None and ka == kb
    if state == "done":
        return _RelayRecord(True, None, relay_id, L, ann, links, keys_match=match, epsilon=eps)
    return _RelayRecord(False, f"relay {state} (recovered from the journal)", relay_id, 0, ann, links,
                        keys_match=match)


def relay_deposited(
    first: PassOutcome,
    second: PassOutcome,
    sat_store: KeyStore,
    store_a: KeyStore,
    store_b: KeyStore,
    *,
    link_cfg=None,
    one_way_delay_s: float = 0.0,
    tamper: dict[str, Tamper] | None = None,
    seed: int | None = None,
    timeout_s: float = 5.0,
) -> _RelayRecord:
    """The relay on two deposited pass keys: authenticated announcement, two-phase apply (module docstring).

    Journaled in the satellite's store: if the journal already holds this relay (a rerun after a
    crash), it is finished or rolled back from the records (:func:`_recover_relay`) instead.
    ``tamper`` maps a station name to a channel tamper function (tests: forge or drop frames on
    that link, ``memory_pair`` semantics). The parties run in one thread: every message is queued
    before it is received.
    """
    stations = (first.station, second.station)
    stores = {first.station: store_a, second.station: store_b}
    passes = {first.station: first, second.station: second}
    sat = sat_store.site
    relay_id = key_id_for(f"relay|{first.pass_id}|{second.pass_id}")
    if not (first.ok and second.ok):
        bad = [p for p in (first, second) if not p.ok]
        return _RelayRecord(False, "; ".join(f"{p.station} pass aborted: {p.abort_reason}" for p in bad))
    n_bits = {s: _root_bits(sat_store, s, passes[s].key_id) for s in stations}
    # A = K_X ⊕ K_N is the satellite *sending* (K_N under the pad K_X, K_X under K_N): like any one-time-pad
    # sender it uses only its own directional stream of each pass key (store.direction_window), so a pad a
    # station already sent with toward the satellite (its own stream; the file may still be in flight) is
    # never published in A — the other station, which knows its own pass key, could read it from A
    win = {s: direction_window(sat, s, n_bits[s]) for s in stations}
    auth_seg = {s: Segment(key_id_for(f"{passes[s].pass_id}|relay-auth"), passes[s].key_id, win[s][0],
                           AUTH_BITS_PER_LINK) for s in stations}
    op = sat_store.get_op(relay_id)
    if op is not None:
        return _recover_relay(op, sat_store, stores, stations, auth_seg, seed)
    L = relay_length_bits(*(hi - lo for lo, hi in win.values()))
    if L < 8:
        return _RelayRecord(False, f"pass keys too short to relay: {n_bits} bits, {AUTH_BITS_PER_LINK} per link "
                                   "go to authenticating the announcement")
    relay_seg = {s: Segment(key_id_for(f"{passes[s].pass_id}|relay"), passes[s].key_id,
                            win[s][0] + AUTH_BITS_PER_LINK, L) for s in stations}
    purpose = _relay_purpose(relay_id)
    eps_rel = float(first.epsilon or 0.0) + float(second.epsilon or 0.0)
    held: dict = {}

    def journal(materials: list[bytes]) -> None:
        # inside the satellite's transaction: the usage ledger has never seen these ranges, and the
        # announcement is recorded with the state change (a crash leaves both or neither)
        for s in stations:
            sat_store.ledger_check(s, [auth_seg[s], relay_seg[s]])
        a = RelayAnnouncement(relay_id, sat, stations[0], stations[1], (relay_seg[stations[0]],),
                              (relay_seg[stations[1]],), relay_announcement(materials[2], materials[3]))
        eps = eps_rel + relay_forgery_bound(announcement_bytes(a), links=len(stations))
        sat_store.put_op(relay_id, "relay", "announced", {"announcement": a.to_json(), "epsilon": eps, "seed": seed})
        held["ann"], held["eps"] = a, eps

    # on board, one transaction: authentication keys consumed, relay segments relayed (and wiped), A journaled
    ax, an, _, _ = _nested(sat_store, [
        (stations[0], [auth_seg[stations[0]]], "consumed", "authentication"),
        (stations[1], [auth_seg[stations[1]]], "consumed", "authentication"),
        (stations[0], [relay_seg[stations[0]]], "relayed", "relay"),
        (stations[1], [relay_seg[stations[1]]], "relayed", "relay"),
    ], relay_id, inner=journal)
    crash_point("relay:announced")
    ann, eps_relay = held["ann"], held["eps"]
    # write-ahead: the satellite's usage ledger records the ranges before the first message uses them
    sat_store.ledger_claim([auth_seg[s] for s in stations] + [relay_seg[s] for s in stations], purpose=purpose)
    sat_auth = {stations[0]: ax, stations[1]: an}
    links = {s: RelayLink(s) for s in stations}

    # each station: its authentication key (consumed, own transaction, ledger) and its channel endpoint
    ep_sat, ep_st = {}, {}
    for s in stations:
        try:
            st_auth = stores[s].take_segments(sat, [auth_seg[s]], state="consumed", purpose="authentication",
                                              request_id=relay_id,
                                              within=lambda segs, _m, _s=s: stores[_s].ledger_check(sat, segs))
            stores[s].ledger_claim([auth_seg[s]], purpose=purpose)
        except KeyStoreError as exc:
            links[s].error = f"no authentication key at {s}: {exc}"
            continue
        crash_point(f"relay:auth:{s}")
        ep_sat[s], ep_st[s] = memory_pair(KeyPool(sat_auth[s]), KeyPool(st_auth), link_cfg, one_way_delay_s,
                                          timeout_s=timeout_s, tamper=(tamper or {}).get(s), auth_mode="each")

    meta = {k: v for k, v in ann.to_json().items() if k != "xor_hex"}

    # phase 1: announce; each station verifies the tag and its segments, then prepares (segment
    # relayed + K deposited *pending*, one transaction) and answers ready
    received: dict[str, RelayAnnouncement] = {}
    for s in ep_sat:
        ep_sat[s].send("relay_announce", meta=json.dumps(meta), xor=ann.xor)
    for s in ep_st:
        try:
            msg = ep_st[s].recv("relay_announce")
            got = RelayAnnouncement.from_json({**json.loads(msg["meta"]), "xor_hex": bytes(msg["xor"]).hex()})
            if got.satellite != sat or s not in (got.first_station, got.second_station) or got.relay_id != relay_id:
                raise ValueError(f"announcement names {got.satellite!r}: {got.first_station!r} ⊕ {got.second_station!r}")
            segs = got.first_segments if s == got.first_station else got.second_segments
            if 8 * len(got.xor) != sum(g.length_bits for g in segs):
                raise ValueError("announcement length does not match its segments")
            station_apply(stores[s], got, epsilon=eps_relay, seed=seed, pending=True)
            crash_point(f"relay:prepared:{s}")
            received[s] = got
            ep_st[s].send("relay_ready", relay_id=relay_id)
            links[s].verified = True
        except (AuthenticationError, ChannelError, KeyStoreError, ValueError) as exc:
            links[s].error = f"{type(exc).__name__}: {exc}"
            ep_st[s].abort(str(exc))
    ready = []
    for s in ep_sat:
        try:
            ep_sat[s].recv("relay_ready")
            ready.append(s)
        except (AuthenticationError, ChannelError) as exc:
            links[s].error = links[s].error or f"satellite: {type(exc).__name__}: {exc}"
    ok = len(ready) == len(stations)

    if ok:
        # phase 2: the decision is journaled on board, then sent; each station activates its pending K
        sat_store.put_op(relay_id, "relay", "commit")
        crash_point("relay:commit")
        for s in stations:
            ep_sat[s].send("relay_commit", relay_id=relay_id)
        for s in stations:
            try:
                ep_st[s].recv("relay_commit")
                stores[s].activate(relay_id)
                crash_point(f"relay:activated:{s}")
                links[s].applied = True
                ep_st[s].send("relay_done", key_id=relay_id)
            except (AuthenticationError, ChannelError, KeyStoreError) as exc:
                links[s].error = f"{type(exc).__name__}: {exc}"
                if _relayed_state(stores[s], stations[1] if s == stations[0] else stations[0], relay_id) == "pending":
                    stores[s].discard_pending(relay_id, note="no valid commit")  # it says it did not apply: it did not
                ep_st[s].abort(str(exc))
        done, refused = [], []
        for s in stations:
            try:
                ep_sat[s].recv("relay_done")
                done.append(s)
            except PeerAborted as exc:  # the station said (authenticated) that it did not apply
                refused.append(s)
                links[s].error = links[s].error or f"satellite: {exc}"
            except (AuthenticationError, ChannelError) as exc:  # unknown: it may have applied
                links[s].error = links[s].error or f"satellite: unconfirmed: {type(exc).__name__}: {exc}"
        if len(done) != len(stations):
            ok = False
        if refused:
            # a station certainly lacks K: revoke it wherever the satellite can still talk, so that K
            # does not stay at one station only. (Unconfirmed stations are not a reason to revoke:
            # they most likely applied, and revoking the others would leave them alone with K.)
            sat_store.put_op(relay_id, "relay", "revoked")
            crash_point("relay:revoked")
            for s in stations:
                if s in refused:
                    continue
                other = stations[1] if s == stations[0] else stations[0]
                try:
                    ep_sat[s].send("relay_revoke", relay_id=relay_id)
                    ep_st[s].recv("relay_revoke")
                except (AuthenticationError, ChannelError):
                    continue
                links[s].revoked = _revoke(stores[s], other, relay_id, L)
                ep_st[s].send("relay_ack", relay_id=relay_id)
                ep_sat[s].recv("relay_ack")
        elif ok:
            sat_store.put_op(relay_id, "relay", "done")
        # (unconfirmed: the journal stays at "commit"; a rerun finishes it from the stores' records)
    else:
        # cancel, journaled first: A is public, so a station that prepared undoes its pending K (its
        # segment stays relayed: out of service)
        sat_store.put_op(relay_id, "relay", "cancelled")
        for s in ready:
            ep_sat[s].send("relay_cancel", relay_id=relay_id)
            ep_st[s].recv("relay_cancel")
            stores[s].discard_pending(relay_id, note="relay cancelled")
    for s in ep_sat:
        st = ep_sat[s].stats
        links[s].messages = st.messages_down + st.messages_up
        links[s].bytes_down, links[s].bytes_up = st.bytes_down, st.bytes_up
        links[s].link_time_s = round(st.link_time_s, 6)
        links[s].auth_bits_used = st.auth_key_bits
        # Σ over messages of (⌈(12 + len)/15⌉ + 1)/p ≤ (Σ(12 + len)/15 + 2·n)/p  (authentication.py)
        links[s].forgery_bound = ((st.bytes_down + st.bytes_up + 12 * links[s].messages) / 15
                                  + 2 * links[s].messages) / float(P127)
    ka = _read_root(store_a, stations[1], relay_id)
    kb = _read_root(store_b, stations[0], relay_id)
    match = ka is not None and ka == kb
    if not ok:
        errs = "; ".join(f"{s}: {links[s].error}" for s in stations if links[s].error)
        return _RelayRecord(False, f"relay not completed ({errs or 'unknown'})", relay_id, 0, ann, links,
                            keys_match=match)
    return _RelayRecord(True, None, relay_id, L, ann, links, keys_match=match, epsilon=eps_relay)


def relay_passes(
    first: PassOutcome,
    second: PassOutcome,
    sat_store: KeyStore,
    store_a: KeyStore,
    store_b: KeyStore,
    **kw,
) -> _RelayRecord:
    """Deposit both passes' keys (both ends or neither, resumable) and relay (journaled, resumable).

    The part of :func:`run_relay` after the simulations: called again with the same passes after a
    crash at any point, it finishes what was started (or rolls it back) — the seam the crash tests
    use with synthetic pass keys. ``kw`` go to :func:`relay_deposited`.
    """
    for p, st in ((first, store_a), (second, store_b)):
        deposit_pass(sat_store, st, p, resume=True)
    return relay_deposited(first, second, sat_store, store_a, store_b, **kw)


# ------------------------------------------------------------------------------------------ result
@dataclass
class RelayResult:
    """Outcome of :func:`run_relay` (JSON: :meth:`to_json`).

    ``relay_key_id`` / ``length_bits`` are the relayed key at both stations (``None`` / 0 if there
    was no relay, with ``abort_reason`` saying why); ``keys_match`` compares the two stations'
    relayed keys as read back from their stores.
    """

    preset: str
    seed: int
    satellite: str
    first: dict
    second: dict
    hours_between: float
    key_storage_hours: float
    ok: bool
    abort_reason: str | None
    relay_key_id: str | None
    length_bits: int
    pass_key_ids: dict
    keys_match: bool
    epsilon: float | None = None
    links: dict = field(default_factory=dict)
    announcement_bits: int = 0
    run_seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    window_s: float | None = None
    key_source: str = "relay run (simulated passes, satqkd.jobs.relay)"
    #: the satellite's public announcement (segments and ``K_X ⊕ K_N``); not written to JSON
    announcement: RelayAnnouncement | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "announcement"}
        d["links"] = {k: (v.to_json() if isinstance(v, RelayLink) else v) for k, v in self.links.items()}
        d["first"] = {k: v for k, v in self.first.items() if k not in ("simulation", "postprocessing")}
        d["second"] = {k: v for k, v in self.second.items() if k not in ("simulation", "postprocessing")}
        d["auth_bits_per_link"] = AUTH_BITS_PER_LINK
        return d

    def __repr__(self) -> str:
        a, b = self.first, self.second
        rel = (f"relayed {self.length_bits:,} bits (key {self.relay_key_id}, match {self.keys_match})" if self.ok
               else f"no relay: {self.abort_reason}")
        return (f"RelayResult({a['station']} {a['start_utc'][:19]} {a['final_key_bits']:,} bits → "
                f"{b['station']} {b['start_utc'][:19]} {b['final_key_bits']:,} bits, {self.hours_between:.2f} h; {rel})")


def run_relay(
    cfg: MissionConfig,
    seed: int,
    sat_store: KeyStore,
    store_a: KeyStore,
    store_b: KeyStore,
    *,
    progress: Callable[[float, float], None] | None = None,
    window_s: float | None = None,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    tamper: dict[str, Tamper] | None = None,
) -> RelayResult:
    """The trusted relay on simulated passes: pass with ``cfg.station``, pass with ``cfg.second_station``, ``K_X ⊕ K_N``.

    ``sat_store``, ``store_a``, ``store_b`` are the stores of ``cfg.satellite``, ``cfg.station`` and
    ``cfg.second_station`` (checked by site name). Each pass's key is deposited as soon as it is
    post-processed; the relay runs if both passes succeeded (module docstring for the failure
    semantics). ``window_s`` truncates each pass to that many seconds around culmination (fast
    tests). Raises :class:`RelayExists` (before simulating anything) if the stores already hold
    these pass keys. ``progress(done, total)`` after each stage (6 stages).
    """
    t_start = time.perf_counter()
    _check_sites(cfg, sat_store, store_a, store_b)
    cfg2 = second_station_config(cfg)
    stage: dict[str, float] = {}
    total = 6.0

    def tick(name: str, t0: float, k: int) -> None:
        stage[name] = round(time.perf_counter() - t0, 3)
        if progress is not None:
            progress(float(k), total)

    t0 = time.perf_counter()
    g1, g2 = find_relay_passes(cfg, window_s=window_s)
    s1, s2 = pass_seeds(seed)
    tick("find_passes", t0, 1)
    _refuse_rerun(cfg, g1, g2, s1, s2, window_s, sat_store, store_a, store_b)
    outcomes = []
    for k, (c, g, s, st) in enumerate(((cfg, g1, s1, store_a), (cfg2, g2, s2, store_b))):
        t0 = time.perf_counter()
        p = run_pass(c, g, s, ec=ec, finite_key=finite_key, window_s=window_s)
        tick(f"pass_{g.station}", t0, 2 + 2 * k)
        t0 = time.perf_counter()
        deposit_pass(sat_store, st, p, resume=True)
        tick(f"deposit_{g.station}", t0, 3 + 2 * k)
        outcomes.append(p)
    first, second = outcomes
    t0 = time.perf_counter()
    rec = relay_deposited(first, second, sat_store, store_a, store_b, link_cfg=cfg.classical,
                          one_way_delay_s=float(g2.range_m[-1]) / _C_M_S, tamper=tamper, seed=int(seed))
    tick("relay", t0, 6)
    return RelayResult(
        preset=cfg.name, seed=int(seed), satellite=cfg.satellite, first=first.summary, second=second.summary,
        hours_between=(g2.start_utc - g1.start_utc).total_seconds() / 3600.0,
        key_storage_hours=(end_utc(g2) - end_utc(g1)).total_seconds() / 3600.0,
        ok=rec.ok, abort_reason=rec.reason, relay_key_id=rec.relay_id if rec.ok else None,
        length_bits=rec.length_bits if rec.ok else 0,
        pass_key_ids={p.station: (p.key_id if p.ok else None) for p in outcomes},
        keys_match=rec.keys_match, epsilon=rec.epsilon, links=rec.links,
        announcement_bits=rec.announcement.length_bits if rec.announcement is not None else 0,
        announcement=rec.announcement,
        run_seconds=round(time.perf_counter() - t_start, 3), stage_seconds=stage, window_s=window_s,
    )


def _planned_ids(cfg, g1, g2, s1, s2, window_s) -> tuple[str, str, str]:
    p1, p2 = pass_id_for(g1, s1, window_s), pass_id_for(g2, s2, window_s)
    return p1, p2, key_id_for(f"relay|{p1}|{p2}")


def _refuse_rerun(cfg, g1, g2, s1, s2, window_s, sat_store, store_a, store_b) -> None:
    """Refuse a relay that already finished (journal ``done``/``cancelled``/``revoked``, or a relayed key
    from a store without a journal); an unfinished one (a crash) is resumed by :func:`run_relay`."""
    p1, p2, rid = _planned_ids(cfg, g1, g2, s1, s2, window_s)
    op = sat_store.get_op(rid)
    done = [r for r in store_a.roots(store_b.site) if r["root_id"] == rid]
    if (op is not None and op["state"] in RELAY_FINAL_STATES) or (op is None and done):
        state = op["state"] if op is not None else "done"
        ok = state == "done" and bool(done)
        raise RelayExists(
            f"this relay (passes {p1} and {p2}) already ran into these stores and is {state}: "
            "a simulated pass key is deposited once and relayed once — use another seed or fresh stores",
            relay_key_id=rid if ok else None, length_bits=int(done[0]["length_bits"]) if ok else 0,
        )


# ------------------------------------------------------------------------------------------ outputs
def write_relay_outputs(result: RelayResult, out_dir: str | Path, *, figures: bool = True) -> list[Path]:
    """``summary.json``, ``pass_<station>.json`` (full per-pass summaries) and ``relay_timeline.png``."""
    from .. import report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [report.write_json(result.to_json(), out / "summary.json")]
    for p in (result.first, result.second):
        paths.append(report.write_json(p, out / f"pass_{p['station'].lower()}.json"))
    if figures:
        paths.append(plot_relay_timeline(result, out / "relay_timeline.png"))
    return paths


def plot_relay_timeline(result: RelayResult, path: str | Path) -> Path:
    """The two passes on a UTC time axis with their sifted/final key sizes, and the relayed key."""
    from ..report import PAPER_BLUE, PAPER_RED, _pyplot

    plt = _pyplot()
    import matplotlib.dates as mdates

    def t(s: str) -> datetime:
        return datetime.fromisoformat(s)

    passes = [result.first, result.second]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 5.5), gridspec_kw={"height_ratios": [1.1, 1]})
    for y, p in enumerate(passes):
        t0, t1 = t(p["start_utc"]), t(p["end_utc"])
        color = PAPER_RED if p["aborted"] else PAPER_BLUE
        ax.barh(y, (t1 - t0).total_seconds() / 86400.0, left=mdates.date2num(t0), height=0.5, color=color)
        what = f"aborted: {p['abort_reason']}" if p["aborted"] else f"final key {p['final_key_bits']:,} bits"
        ax.annotate(f"{p['station']} {t0:%H:%M:%S}–{t1:%H:%M:%S} UTC, {p['min_range_km']:.0f}–{p['max_range_km']:.0f} km\n"
                    f"sifted {p['sifted_bits']:,} bits, {what}", (mdates.date2num(t1), y), xytext=(8, 0),
                    textcoords="offset points", va="center", fontsize=8)
    t_end = t(passes[1]["end_utc"])
    x_end = mdates.date2num(t_end)
    x_kept = mdates.date2num(t(passes[0]["end_utc"]))
    ax.annotate("", (x_end, 0.5), (x_kept, 0.5), arrowprops=dict(arrowstyle="->", color="0.4"))
    ax.annotate(f"K_X kept on board {result.key_storage_hours:.2f} h", ((x_kept + x_end) / 2, 0.5), xytext=(0, 4),
                textcoords="offset points", ha="center", fontsize=8, color="0.3")
    if result.ok:
        ax.axvline(x_end, color="k", lw=1, ls="--")
        ax.annotate(f"announce K_X ⊕ K_N: {result.length_bits:,} bits relayed", (x_end, 1.45), xytext=(-6, 0),
                    textcoords="offset points", ha="right", fontsize=8)
    x0 = mdates.date2num(t(passes[0]["start_utc"]) - timedelta(minutes=10))
    ax.set_xlim(x0, x_end + (x_end - x0) * 0.75)
    ax.set_ylim(-0.6, 1.7)
    ax.set_yticks([0, 1], [p["station"] for p in passes])
    ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=[0, 30]))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.set_xlabel(f"UTC, {t(passes[0]['start_utc']):%Y-%m-%d}  ({result.hours_between:.2f} h between pass starts)")
    ax.set_title(f"{result.satellite} trusted relay {passes[0]['station']} → {passes[1]['station']} (seed {result.seed})")
    labels = [f"{p['station']}\nsifted" for p in passes] + [f"{p['station']}\nfinal" for p in passes] + ["relayed\nX–N"]
    vals = [p["sifted_bits"] for p in passes] + [p["final_key_bits"] for p in passes] + [result.length_bits]
    colors = ["#9bb7d4"] * 2 + [PAPER_BLUE] * 2 + ["#2e8b57"]
    bx.bar(range(5), vals, color=colors)
    for i, v in enumerate(vals):
        bx.annotate(f"{v:,}", (i, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    bx.set_yscale("log")
    bx.set_ylim(max(1, min(v for v in vals if v > 0) / 3) if any(vals) else 1, max(vals + [10]) * 4)
    bx.set_xticks(range(5), labels, fontsize=8)
    bx.set_ylabel("bits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
