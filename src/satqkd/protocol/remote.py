"""Alice and Bob as two processes: one party of the post-processing protocol over TCP.

:func:`~satqkd.protocol.session.postprocess` runs both parties in one process; here each process
runs one party (:func:`run_alice` / :func:`run_bob`, over any
:class:`~satqkd.protocol.channel.Endpoint`) and :func:`run_party` does what a deployment does
around it:

1. **Own data only.** Alice loads her record (``load_raw(path, party="alice")``: the ``alice_*``
   arrays and the emitted counts; the archive is read lazily, Bob's members are never read), Bob
   his time tags and beacon (``party="bob"``) and synchronises them himself *before* connecting.
   A deployment ships each side only its own file; a simulated ``raw.npz`` holds both, and each
   process reads only its part of it.
2. **Find the peer.** Either side listens (``HOST:PORT``; one connection, accepted within the
   timeout) or connects (retrying until the timeout, so the two processes may start in any order).
3. **Hello.** Each side sends one JSON frame (4-byte length + UTF-8): role, pool id and offset,
   pass id, the public protocol options. Both refuse a peer with the same role, another pool,
   another pass or other options (exit without using any pool bit). The hello is not
   authenticated: it carries only public values, and all a forger can do is make a side refuse
   or skip pool bits (below) — never reuse one.
4. **Pool bits: reserved, written away, then used.** Both sides first skip to the larger of their
   two offsets (so copies that fell out of step, e.g. after one side crashed, meet again; bits are
   only ever discarded, never reused), then reserve the bits one run can use —
   ``R = 127·d + 2·256 + 256`` (the hash key, ``d`` draws, 1 unless the 2^−127 rejection hits; two
   transcript checkpoints of one pad pair each; the acknowledgement's pad pair) — and atomically rewrite the pool file without
   them *before* the first protocol message. The run's endpoint gets a :class:`KeyPool` of exactly
   those ``R`` bits, so it cannot consume more. On success both sides used exactly ``R``; on an
   abort they may have used different amounts (e.g. Alice tagged a checkpoint that never reached
   Bob), and discarding the whole reservation on both sides keeps the copies identical anyway.
   Before the pool file is rewritten, this site's **usage ledger** (:class:`~satqkd.ledger.UsageLedger`,
   ``<pool>.ledger`` by default) claims the skipped and reserved range (resource
   ``pool:<pool id>``, absolute bit offsets); before connecting, a pool whose offset lies below the
   ledger's highest claim (a restored backup, a copy put back) is refused: nothing is sent.
5. **Run** the party (``auth_mode="transcript"``, as ``postprocess``) with the key-confirmation
   ending (``parties.py``: the key is *released* only when the peer is known to hold it, else
   *pending*; :class:`~satqkd.protocol.keyfiles.KeyFiles` writes it), then report its own
   outcome and its endpoint's traffic accounting. :func:`run_confirm` releases or discards
   pending keys in a later authenticated session.

The records are checked against the configuration before connecting
(:func:`~satqkd.rawio.check_records_match`) and their settings compared with the peer's in the hello.

With the same ``seed`` both processes draw the same random streams as ``postprocess(raw, cfg,
seed=seed)`` (:func:`~satqkd.protocol.session.party_rngs`); the protocol is deterministic given
them, so the two-process keys equal the in-process ones bit for bit. ``seed=None`` (the default of
the command line) draws fresh OS entropy, as a real deployment must: Bob's squashing bits are secret.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DEFAULT_EC_METHOD, MissionConfig
from ..ledger import LedgerError, UsageLedger
from ..postprocess.authentication import PAD_BITS
from ..quantum.timing import synchronise
from ..rawio import check_records_match, records_settings
from ..records import RawRecords
from .channel import ChannelError, ChannelStats, ChannelTimeout, Endpoint, TcpEndpoint
from .keyfiles import KeyFiles, key_sha256
from .parties import CONFIRM_AUTH_BITS, AliceData, BobData, PartyOutcome, alice_party, bob_party
from .poolfile import PoolFile, PoolFileError, read_pool, write_pool
from .session import party_rngs, protocol_options, split_raw

__all__ = [
    "run_alice",
    "run_bob",
    "bob_detections",
    "load_party_view",
    "parse_address",
    "listen_for_peer",
    "connect_to_peer",
    "PeerNotFound",
    "HandshakeError",
    "run_party",
    "PartyRun",
    "run_reservation_bits",
    "default_ledger_path",
    "PoolReuseRefused",
    "run_confirm",
    "ConfirmRun",
    "AUTH_MODE",
    "HELLO_VERSION",
]

ROLES = ("alice", "bob")
AUTH_MODE = "transcript"
#: the transcript checkpoints of one run (after error correction, after the PA seed: parties.py)
CHECKPOINTS = 2
#: 2: key confirmation (acknowledgement, pending keys), records' settings in the hello, confirm sessions
HELLO_VERSION = "satqkd-party/2"
_MAX_HELLO = 1 << 16

Status = Callable[[str], None]


class PeerNotFound(ChannelTimeout):
    """No peer connected (listening) or none was listening (connecting) within the timeout."""


class HandshakeError(ChannelError):
    """The peer's hello does not match (role, pool, pass or options) or is malformed."""


class PoolReuseRefused(PoolFileError):
    """This site's usage ledger says bits at or after the pool file's offset were already used."""


# ---------------------------------------------------------------------------------------- parties
def run_alice(
    view: RawRecords | AliceData,
    cfg: MissionConfig,
    endpoint: Endpoint,
    *,
    seed: int | None = None,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    confirm: bool = True,
    keeper=None,
) -> PartyOutcome:
    """The satellite's side over ``endpoint`` (which holds Alice's copy of the authentication pool).

    ``view``: Alice's :class:`AliceData`, or raw records of which only the ``alice_*`` arrays and
    ``slice_emitted`` are read (:func:`~satqkd.protocol.session.split_raw`). ``confirm``, ``keeper``:
    the key-confirmation rule (:func:`~satqkd.protocol.parties.alice_party`).
    """
    opts = protocol_options(cfg, ec, finite_key)
    data = view if isinstance(view, AliceData) else split_raw(view)[0]
    return alice_party(endpoint, data, opts, party_rngs(seed)[1], confirm=confirm, keeper=keeper)


def bob_detections(view: RawRecords, seed: int | None = None) -> BobData:
    """Bob's own job before the protocol: synchronise his time tags (beacon clock fit, gating,
    squashing with the run's sync stream, as ``postprocess`` does)."""
    det = synchronise(view, rng=party_rngs(seed)[3])
    return BobData(pulse_index=det.pulse_index, basis=det.bob_basis, bit=det.bob_bit)


def run_bob(
    view: RawRecords | BobData,
    cfg: MissionConfig,
    endpoint: Endpoint,
    *,
    seed: int | None = None,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    confirm: bool = True,
    keeper=None,
) -> PartyOutcome:
    """The ground station's side over ``endpoint`` (``confirm``, ``keeper`` as :func:`run_alice`).

    ``view``: Bob's synchronised :class:`BobData` (:func:`bob_detections`), or raw records of
    which only his tags and beacon are read (synchronised here; the time goes to
    ``stage_seconds["synchronisation"]``).
    """
    opts = protocol_options(cfg, ec, finite_key)
    sync_s = None
    if isinstance(view, RawRecords):
        t0 = time.perf_counter()
        view = bob_detections(view, seed)
        sync_s = time.perf_counter() - t0
    out = bob_party(endpoint, view, opts, party_rngs(seed)[2], confirm=confirm, keeper=keeper)
    if sync_s is not None:
        out.stage_seconds["synchronisation"] = sync_s
    return out


def load_party_view(path: str | Path, role: str) -> RawRecords:
    """One party's part of a ``raw.npz`` (the other party's members are never read)."""
    from ..rawio import load_raw

    if role not in ROLES:
        raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
    return load_raw(path, party=role)


def one_way_delay_s(view: RawRecords) -> float:
    """Light time over the pass's mean range (public pass data; only the link-time accounting uses it)."""
    return float(view.meta.get("mean_range_m", 9e5)) / 299_792_458.0


# ---------------------------------------------------------------------------------------- TCP
def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) → ``(host, port)``; raises ValueError."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address must be HOST:PORT with PORT in 0..65535, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def listen_for_peer(
    host: str, port: int, timeout_s: float, *, on_listening: Callable[[int], None] | None = None, on_wait: Status | None = None
) -> socket.socket:
    """Listen on ``host:port`` (0 = any free port; ``on_listening(port)`` is told the port) and
    accept one connection within ``timeout_s``; the listening socket is closed afterwards."""
    deadline = time.monotonic() + timeout_s
    try:
        server = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise PeerNotFound(f"cannot listen on {host}:{port}: {exc}") from None
    with server:
        bound = server.getsockname()[1]
        if on_listening is not None:
            on_listening(bound)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerNotFound(f"no peer connected to {host}:{bound} within {timeout_s:g} s")
            if on_wait is not None:
                on_wait(f"listening on {host}:{bound}, waiting for the peer ({left:.0f} s left)")
            server.settimeout(min(0.5, left))
            try:
                sock, _ = server.accept()
            except socket.timeout:
                continue
            sock.settimeout(None)
            return sock


def connect_to_peer(host: str, port: int, timeout_s: float, *, on_wait: Status | None = None) -> socket.socket:
    """Connect to ``host:port``, retrying (every 0.2 s) until ``timeout_s``: the peer may start later."""
    deadline = time.monotonic() + timeout_s
    last = "nothing listening"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerNotFound(f"no peer listening at {host}:{port} within {timeout_s:g} s (last error: {last})")
        if on_wait is not None:
            on_wait(f"connecting to {host}:{port}, waiting for the peer ({left:.0f} s left)")
        try:
            sock = socket.create_connection((host, port), timeout=min(2.0, left))
        except OSError as exc:
            last = str(exc) or type(exc).__name__
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
            continue
        sock.settimeout(None)
        return sock


def _send_json(sock: socket.socket, obj: dict) -> None:
    b = json.dumps(obj, sort_keys=True).encode("utf-8")
    sock.sendall(struct.pack(">I", len(b)) + b)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise HandshakeError("the peer closed the connection during the hello")
        buf += chunk
    return bytes(buf)


def _recv_json(sock: socket.socket, timeout_s: float) -> dict:
    sock.settimeout(timeout_s)
    try:
        (n,) = struct.unpack(">I", _recv_exact(sock, 4))
        if n > _MAX_HELLO:
            raise HandshakeError(f"the peer's hello announces {n} bytes (limit {_MAX_HELLO}): not a satqkd party")
        obj = json.loads(_recv_exact(sock, n).decode("utf-8"))
    except socket.timeout:
        raise HandshakeError(f"no hello from the peer within {timeout_s:g} s") from None
    except OSError as exc:
        raise HandshakeError(f"hello failed: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HandshakeError("the peer's hello is not JSON: not a satqkd party") from None
    if not isinstance(obj, dict):
        raise HandshakeError("the peer's hello is not a JSON object")
    return obj


def _check_hello(mine: dict, peer: dict) -> int:
    """Raise :class:`HandshakeError` unless the peer's hello matches; return the peer's pool offset."""
    if peer.get("version") != HELLO_VERSION:
        raise HandshakeError(f"the peer speaks {peer.get('version')!r}, this party {HELLO_VERSION!r}")
    if peer.get("mode") != mine.get("mode"):
        raise HandshakeError(f"the peer runs a {peer.get('mode')!r} session, this party a {mine.get('mode')!r} session")
    want_role = "bob" if mine["role"] == "alice" else "alice"
    if peer.get("role") != want_role:
        raise HandshakeError(f"the peer is {peer.get('role')!r} too: one side must be alice, the other bob")
    if peer.get("pool_id") != mine["pool_id"]:
        raise HandshakeError(
            f"the peer's authentication pool is another pool (id {str(peer.get('pool_id'))[:12]}…, ours {mine['pool_id'][:12]}…): "
            "both sides need copies of the same pool file"
        )
    if peer.get("pass_id") != mine["pass_id"]:
        raise HandshakeError(f"the peer's raw records are of pass {peer.get('pass_id')!r}, ours of {mine['pass_id']!r}")
    mine_rec, peer_rec = mine.get("records") or {}, peer.get("records") or {}
    for k in sorted(set(mine_rec) | set(peer_rec)):
        if mine_rec.get(k) != peer_rec.get(k):
            raise HandshakeError(
                f"records: the peer's raw records were made with {k} = {peer_rec.get(k)!r}, ours with {mine_rec.get(k)!r}"
            )
    if peer.get("options") != mine["options"]:
        diff = sorted(k for k in set(mine["options"]) | set(peer.get("options") or {}) if (peer.get("options") or {}).get(k) != mine["options"].get(k))
        raise HandshakeError(f"the peer's protocol options differ ({', '.join(diff)}): use the same preset/config, --ec and --finite-key")
    off = peer.get("pool_offset")
    if not isinstance(off, int) or off < 0:
        raise HandshakeError(f"the peer's pool offset is not a non-negative integer: {off!r}")
    return off


def run_reservation_bits(pool: PoolFile) -> int:
    """Pool bits one run may consume from the front of ``pool``: the hash key, two checkpoints and
    the key-confirmation acknowledgement (one pad pair)."""
    return pool.hash_key_bits() + CHECKPOINTS * 2 * PAD_BITS + CONFIRM_AUTH_BITS


def default_ledger_path(pool_path: str | Path) -> Path:
    """The default usage ledger of a pool file: ``<pool>.ledger`` beside it (docs/two-processes.md)."""
    p = Path(pool_path)
    return p.with_name(p.name + ".ledger")


def pool_resource(pool: PoolFile) -> str:
    """The pool's name in the usage ledger (absolute bit offsets since the pool was made)."""
    return f"pool:{pool.id_hex}"


def check_ledger(pool: PoolFile, pool_path: str | Path, ledger: UsageLedger) -> None:
    """Refuse (:class:`PoolReuseRefused`) a pool whose next bits this site already used: the
    ledger's highest claimed bit of this pool lies beyond the pool file's offset (a backup of the
    pool file was restored, or it was copied back)."""
    if not ledger.path.parent.is_dir():
        raise PoolReuseRefused(f"the usage ledger {ledger.path} cannot be created: directory {ledger.path.parent} does not exist")
    try:
        high = ledger.high_water(pool_resource(pool))
    except LedgerError as exc:
        raise PoolReuseRefused(str(exc)) from None
    if high > pool.offset:
        raise PoolReuseRefused(
            f"the pool {pool_path} (id {pool.id_hex[:12]}…) is at bit {pool.offset:,}, but this site's ledger {ledger.path} "
            f"records its bits up to {high:,} as used: the pool file was restored from a backup or copied; "
            "its bits are never used twice (make and share a new pool)"
        )


# ---------------------------------------------------------------------------------------- a run
@dataclass
class PartyRun:
    """What one process's run did: the party's outcome (None if it never started) and the accounting."""

    role: str
    outcome: PartyOutcome | None = None
    error: str | None = None  # why the run did not start or finish (peer not found, hello refused, …)
    peer: str | None = None
    stats: ChannelStats | None = None
    pool_id: str = ""
    pool_offset_before: int = 0
    pool_offset_after: int = 0
    pool_bits_skipped: int = 0  # to meet the peer's (larger) offset
    pool_bits_reserved: int = 0  # removed from the pool file before the run (= discarded)
    pool_bits_left: int = 0
    pool_insecure: bool = False
    ledger: str = ""
    key_sha256: str | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """A released key (the peer holds the same key)."""
        return self.outcome is not None and self.outcome.ok

    @property
    def key_state(self) -> str:
        """``released`` | ``pending`` | ``none`` (:mod:`satqkd.protocol.parties`)."""
        return "none" if self.outcome is None else self.outcome.key_state

    @property
    def abort_reason(self) -> str | None:
        if self.error is not None:
            return self.error
        return None if self.outcome is None else self.outcome.abort_reason

    @property
    def auth_bits_used(self) -> int:
        return 0 if self.outcome is None else int(self.outcome.auth_key_bits)


def check_pool(pool_path: str | Path, ledger: str | Path | None = None, *, need_fn=None) -> tuple[PoolFile, int]:
    """Read the pool and check that it holds one run's reservation and that this site's usage
    ledger (``ledger``, default :func:`default_ledger_path`) has not seen its next bits used;
    raises :class:`PoolFileError` (:class:`PoolReuseRefused`)."""
    pool = read_pool(pool_path)
    need = (need_fn or run_reservation_bits)(pool)
    if pool.nbits < need:
        raise PoolFileError(f"the pool {pool_path} has {pool.nbits} bits left, a run needs {need}: make and share a new pool")
    check_ledger(pool, pool_path, UsageLedger(ledger if ledger is not None else default_ledger_path(pool_path)))
    return pool, need


def run_party(
    role: str,
    view: RawRecords,
    cfg: MissionConfig,
    pool_path: str | Path,
    *,
    listen: tuple[str, int] | None = None,
    connect: tuple[str, int] | None = None,
    seed: int | None = None,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    timeout_s: float = 120.0,
    message_timeout_s: float = 600.0,
    on_status: Status | None = None,
    on_listening: Callable[[int], None] | None = None,
    ledger: str | Path | None = None,
    out: str | Path | None = None,
) -> PartyRun:
    """One party as its own process: sync (Bob), find the peer, hello, reserve pool bits, run.

    Raises :class:`PoolFileError` (bad or too small pool; :class:`PoolReuseRefused` when this
    site's usage ledger — ``ledger``, default ``<pool>.ledger`` — has seen the pool's next bits
    used) and ``ValueError`` (bad arguments, records that disagree with ``cfg``: rawio's
    :class:`~satqkd.rawio.RecordsMismatch`, or the wrong party's records) *before* any connection;
    every later failure (no peer, hello refused, protocol abort) is returned in
    :attr:`PartyRun.error` / the outcome's ``abort_reason``. With ``out`` the key is written
    there by the key-confirmation rule (:class:`~satqkd.protocol.keyfiles.KeyFiles`): pending
    when stored, released when the peer is known to hold it.
    """
    if role not in ROLES:
        raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
    if (listen is None) == (connect is None):
        raise ValueError("give exactly one of listen=(host, port) or connect=(host, port)")
    status = on_status or (lambda _msg: None)
    opts = protocol_options(cfg, ec, finite_key)
    if role not in view.meta.get("parties", ROLES):
        raise ValueError(f"the records hold {' and '.join(view.meta.get('parties', [])) or 'no party'}'s data, not {role}'s")
    check_records_match(view, cfg)
    led = UsageLedger(ledger if ledger is not None else default_ledger_path(pool_path))
    pool, _ = check_pool(pool_path, led.path)
    run = PartyRun(role, pool_id=pool.id_hex, pool_offset_before=pool.offset, pool_offset_after=pool.offset,
                   pool_bits_left=pool.nbits, pool_insecure=pool.insecure, ledger=str(led.path))
    keeper = KeyFiles(out, role) if out is not None else None
    t0 = time.perf_counter()
    if role == "bob":
        status("synchronising the time tags")
        data: AliceData | BobData = bob_detections(view, seed)
        run.seconds["synchronisation"] = time.perf_counter() - t0
    else:
        data = split_raw(view)[0]
    hello = {
        "version": HELLO_VERSION,
        "mode": "run",
        "role": role,
        "pool_id": pool.id_hex,
        "pool_offset": pool.offset,
        "pass_id": str(view.meta.get("pass_id", "")),
        "options": json.loads(json.dumps(dataclasses.asdict(opts))),
        "records": records_settings(view),
        "auth_mode": AUTH_MODE,
    }
    t1 = time.perf_counter()
    try:
        if listen is not None:
            sock = listen_for_peer(*listen, timeout_s, on_listening=on_listening, on_wait=status)
        else:
            sock = connect_to_peer(*connect, timeout_s, on_wait=status)
    except PeerNotFound as exc:
        run.error = str(exc)
        return run
    run.seconds["waiting_for_peer"] = time.perf_counter() - t1
    try:
        host, port = sock.getpeername()[:2]
        run.peer = f"{host}:{port}"
    except OSError:
        run.peer = "?"
    try:
        status(f"connected to {run.peer}: hello")
        try:
            _send_json(sock, hello)
        except OSError as exc:
            raise HandshakeError(f"hello failed: {exc}") from None
        peer_offset = _check_hello(hello, _recv_json(sock, min(message_timeout_s, max(timeout_s, 10.0))))
        # meet the peer's offset (discard only), reserve one run's bits, write the pool away first
        target = max(pool.offset, peer_offset)
        skip = target - pool.offset
        if skip > pool.nbits:
            raise HandshakeError(f"the peer's pool copy is {skip} bits further on than ours, more than the {pool.nbits} left")
        synced = pool.drop(skip)
        try:
            need = run_reservation_bits(synced)
        except PoolFileError as exc:
            need, reason = None, str(exc)
        if need is None or synced.nbits < need:
            # nothing of the reservation is used: keep the bits, but record the skip
            if skip:
                write_pool(synced, pool_path)
            run.pool_bits_skipped, run.pool_offset_after, run.pool_bits_left = skip, synced.offset, synced.nbits
            raise HandshakeError(
                f"after meeting the peer's pool offset the pool has {synced.nbits} bits left, a run needs "
                f"{need if need is not None else reason}: make and share a new pool"
            )
        key_pool = synced.key_pool(need)
        rest = synced.drop(need)
        # write-ahead, twice: this site's ledger claims the skipped and reserved bits (refused if
        # any was claimed before), then the pool file loses them; only then the first message
        try:
            led.claim(pool_resource(pool), pool.offset, synced.offset + need, purpose=f"party {role} run")
        except LedgerError as exc:
            raise HandshakeError(f"usage ledger: {exc}") from None
        write_pool(rest, pool_path)  # these bits are gone whatever happens next
        run.pool_bits_skipped, run.pool_bits_reserved = skip, need
        run.pool_offset_after, run.pool_bits_left = rest.offset, rest.nbits
    except HandshakeError as exc:
        sock.close()
        run.error = f"handshake: {exc}"
        return run
    except BaseException:
        sock.close()
        raise
    status(f"running the protocol with {run.peer}")
    ep = TcpEndpoint(role, key_pool, sock, link_cfg=cfg.classical, one_way_delay_s=one_way_delay_s(view),
                     timeout_s=message_timeout_s, auth_mode=AUTH_MODE)
    t2 = time.perf_counter()
    try:
        if role == "alice":
            run.outcome = run_alice(data, cfg, ep, seed=seed, ec=ec, finite_key=finite_key, keeper=keeper)
        else:
            run.outcome = run_bob(data, cfg, ep, seed=seed, ec=ec, finite_key=finite_key, keeper=keeper)
    finally:
        ep.close()
        run.stats = ep.stats
    if run.outcome.key is not None:
        run.key_sha256 = keeper.sha256 if keeper is not None else key_sha256(run.outcome.key)
    run.seconds["protocol"] = time.perf_counter() - t2
    if run.auth_bits_used > run.pool_bits_reserved:  # impossible: the endpoint's pool holds exactly the reservation
        raise AssertionError(f"the run used {run.auth_bits_used} pool bits, {run.pool_bits_reserved} were reserved")
    return run



# ---------------------------------------------------------------------------------------- confirm
def confirm_reservation_bits(pool: PoolFile) -> int:
    """Pool bits one confirmation session consumes: the hash key and one checkpoint."""
    return pool.hash_key_bits() + 2 * PAD_BITS


@dataclass
class ConfirmRun:
    """What a confirmation session did: per pending key hash, ``released`` | ``discarded`` | ``pending``."""

    role: str
    run_dir: str
    error: str | None = None
    peer: str | None = None
    stats: ChannelStats | None = None
    pool_id: str = ""
    pool_offset_before: int = 0
    pool_offset_after: int = 0
    pool_bits_reserved: int = 0
    pool_bits_left: int = 0
    ledger: str = ""
    decisions: dict = field(default_factory=dict)
    key_state: str = "none"
    key_sha256: str | None = None
    key_file: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def held_keys(run_dir: str | Path, role: str) -> tuple[set[str], list[str], dict]:
    """``(held, pending, summary)`` of a run directory: hashes this party holds (pending or
    released, including a released key the application has since removed, by ``summary.json``)
    and the pending ones."""
    d = Path(run_dir)
    summary: dict = {}
    if (d / "summary.json").is_file():
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{d}/summary.json is not readable: {exc}") from None
        if summary.get("role") not in (None, role):
            raise ValueError(f"{d} is a run directory of {summary.get('role')}, not of {role}")
    kf = KeyFiles(d, role)
    pending = kf.pending()
    held = set(pending)
    if kf.released_path.is_file():
        import hashlib

        held.add(hashlib.sha256(kf.released_path.read_bytes()).hexdigest())
    if summary.get("key_state") == "released" and summary.get("key_sha256"):
        held.add(str(summary["key_sha256"]))
    return held, pending, summary


def run_confirm(
    role: str,
    run_dir: str | Path,
    pool_path: str | Path,
    *,
    listen: tuple[str, int] | None = None,
    connect: tuple[str, int] | None = None,
    ledger: str | Path | None = None,
    timeout_s: float = 120.0,
    message_timeout_s: float = 600.0,
    on_status: Status | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> ConfirmRun:
    """Confirm or discard the pending keys of an earlier run (``run_dir``, its ``--out``) with the
    peer, over one authenticated session.

    Hello (public): role, pool, the pending keys' hashes. Then each side states, for every hash
    either hello named, whether it holds that key (pending or released): Bob first, then Alice,
    then one transcript checkpoint. A pending key is *released* when the peer's authenticated
    statement says the peer holds it, *discarded* when it says the peer does not; without a
    verified statement (lost message, bad tag) it stays pending. Bob decides after verifying
    Alice's tag (before sending his), Alice after verifying Bob's. A party releases only what the
    peer holds, and discards only what the peer never released (a party that released a key
    always states it holds it), so the rule of ``run_party`` is kept. Costs
    :func:`confirm_reservation_bits` pool bits (127 + 256), reserved, claimed in the usage ledger
    and written away first, like a run; nothing when neither hello names a pending key.
    """
    from ..config import ClassicalLinkConfig

    if role not in ROLES:
        raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
    if (listen is None) == (connect is None):
        raise ValueError("give exactly one of listen=(host, port) or connect=(host, port)")
    if not Path(run_dir).is_dir():
        raise ValueError(f"no run directory {run_dir}")
    status = on_status or (lambda _msg: None)
    held, pending, _ = held_keys(run_dir, role)
    led = UsageLedger(ledger if ledger is not None else default_ledger_path(pool_path))
    pool, _ = check_pool(pool_path, led.path, need_fn=confirm_reservation_bits)
    run = ConfirmRun(role, str(run_dir), pool_id=pool.id_hex, pool_offset_before=pool.offset, pool_offset_after=pool.offset,
                     pool_bits_left=pool.nbits, ledger=str(led.path), decisions={h: "pending" for h in pending})
    hello = {"version": HELLO_VERSION, "mode": "confirm", "role": role, "pool_id": pool.id_hex, "pool_offset": pool.offset,
             "pending": pending}
    try:
        sock = (listen_for_peer(*listen, timeout_s, on_listening=on_listening, on_wait=status) if listen is not None
                else connect_to_peer(*connect, timeout_s, on_wait=status))
    except PeerNotFound as exc:
        run.error = str(exc)
        return _confirm_state(run, run_dir, role)
    try:
        run.peer = "%s:%s" % sock.getpeername()[:2]
    except OSError:
        run.peer = "?"
    try:
        try:
            _send_json(sock, hello)
        except OSError as exc:
            raise HandshakeError(f"hello failed: {exc}") from None
        peer = _recv_json(sock, min(message_timeout_s, max(timeout_s, 10.0)))
        if peer.get("version") != HELLO_VERSION or peer.get("mode") != "confirm":
            raise HandshakeError("the peer is not in a confirmation session (both sides need `party confirm`)")
        if peer.get("role") != ("bob" if role == "alice" else "alice"):
            raise HandshakeError(f"the peer is {peer.get('role')!r} too: one side must be alice, the other bob")
        if peer.get("pool_id") != pool.id_hex:
            raise HandshakeError("the peer's authentication pool is another pool: both sides need copies of the same pool file")
        off, peer_pending = peer.get("pool_offset"), peer.get("pending")
        if not isinstance(off, int) or off < 0 or not isinstance(peer_pending, list) or not all(isinstance(h, str) for h in peer_pending):
            raise HandshakeError("the peer's hello is malformed")
        if not pending and not peer_pending:  # nothing to confirm at either end: no pool bit is used
            sock.close()
            return _confirm_state(run, run_dir, role)
        skip = max(off - pool.offset, 0)
        if skip > pool.nbits:
            raise HandshakeError(f"the peer's pool copy is {skip} bits further on than ours, more than the {pool.nbits} left")
        synced = pool.drop(skip)
        need = confirm_reservation_bits(synced)
        if synced.nbits < need:
            raise HandshakeError(f"after meeting the peer's pool offset the pool has {synced.nbits} bits left, a confirmation needs {need}")
        try:
            led.claim(pool_resource(pool), pool.offset, synced.offset + need, purpose=f"party {role} confirm")
        except LedgerError as exc:
            raise HandshakeError(f"usage ledger: {exc}") from None
        key_pool, rest = synced.key_pool(need), synced.drop(need)
        write_pool(rest, pool_path)
        run.pool_bits_reserved, run.pool_offset_after, run.pool_bits_left = skip + need, rest.offset, rest.nbits
    except HandshakeError as exc:
        sock.close()
        run.error = f"handshake: {exc}"
        return _confirm_state(run, run_dir, role)
    except BaseException:
        sock.close()
        raise
    names = sorted(set(pending) | set(peer_pending))
    mine = {"hashes": ",".join(names), "have": np.array([h in held for h in names], dtype=bool)}
    ep = TcpEndpoint(role, key_pool, sock, link_cfg=ClassicalLinkConfig(), timeout_s=message_timeout_s, auth_mode=AUTH_MODE)
    kf = KeyFiles(run_dir, role)
    answers: dict[str, bool] = {}

    def decide() -> None:  # only on the peer's verified statement
        for h in pending:
            if h not in answers:
                continue
            if answers[h]:
                run.key_file = str(kf.release(h))
                run.decisions[h] = "released"
            else:
                kf.discard(h)
                run.decisions[h] = "discarded"

    def statement(msg: dict) -> None:
        hs = [h for h in str(msg["hashes"]).split(",") if h]
        have = np.asarray(msg["have"], dtype=bool)
        if have.size != len(hs):
            raise ValueError("the peer's statement lists another number of answers than hashes")
        answers.update(zip(hs, (bool(x) for x in have)))

    status(f"confirming {len(pending)} pending key(s) with {run.peer}")
    try:
        if role == "bob":
            ep.send("holdings", **mine)
            statement(ep.recv("holdings"))
            ep.checkpoint(between=decide)
        else:
            statement(ep.recv("holdings"))
            ep.send("holdings", **mine)
            ep.checkpoint()
            decide()
    except (ChannelError, ValueError, KeyError, TypeError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        ep.abort(run.error)
    finally:
        ep.close()
        run.stats = ep.stats
    return _confirm_state(run, run_dir, role)


def _confirm_state(run: ConfirmRun, run_dir, role: str) -> ConfirmRun:
    _, pending, summary = held_keys(run_dir, role)
    kf = KeyFiles(run_dir, role)
    if pending:
        run.key_state, run.key_sha256 = "pending", pending[0]
    elif kf.released_path.is_file():
        import hashlib

        run.key_state, run.key_sha256 = "released", hashlib.sha256(kf.released_path.read_bytes()).hexdigest()
        run.key_file = str(kf.released_path)
    elif summary.get("key_state") == "released":
        run.key_state, run.key_sha256 = "released", summary.get("key_sha256")
    else:
        run.key_state, run.key_sha256 = "none", None
    return run
