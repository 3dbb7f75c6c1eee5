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
   ``R = 127·d + 2·256`` (the hash key, ``d`` draws, 1 unless the 2^−127 rejection hits; then two
   transcript checkpoints of one pad pair each) — and atomically rewrite the pool file without
   them *before* the first protocol message. The run's endpoint gets a :class:`KeyPool` of exactly
   those ``R`` bits, so it cannot consume more. On success both sides used exactly ``R``; on an
   abort they may have used different amounts (e.g. Alice tagged a checkpoint that never reached
   Bob), and discarding the whole reservation on both sides keeps the copies identical anyway.
5. **Run** the party (``auth_mode="transcript"``, as ``postprocess``), then report its own
   outcome and its endpoint's traffic accounting.

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

from ..config import DEFAULT_EC_METHOD, MissionConfig
from ..postprocess.authentication import PAD_BITS
from ..quantum.timing import synchronise
from ..records import RawRecords
from .channel import ChannelError, ChannelStats, ChannelTimeout, Endpoint, TcpEndpoint
from .parties import AliceData, BobData, PartyOutcome, alice_party, bob_party
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
    "AUTH_MODE",
    "HELLO_VERSION",
]

ROLES = ("alice", "bob")
AUTH_MODE = "transcript"
#: the transcript checkpoints of one run (after error correction, after the PA seed: parties.py)
CHECKPOINTS = 2
HELLO_VERSION = "satqkd-party/1"
_MAX_HELLO = 1 << 16

Status = Callable[[str], None]


class PeerNotFound(ChannelTimeout):
    """No peer connected (listening) or none was listening (connecting) within the timeout."""


class HandshakeError(ChannelError):
    """The peer's hello does not match (role, pool, pass or options) or is malformed."""


# ---------------------------------------------------------------------------------------- parties
def run_alice(
    view: RawRecords | AliceData,
    cfg: MissionConfig,
    endpoint: Endpoint,
    *,
    seed: int | None = None,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
) -> PartyOutcome:
    """The satellite's side over ``endpoint`` (which holds Alice's copy of the authentication pool).

    ``view``: Alice's :class:`AliceData`, or raw records of which only the ``alice_*`` arrays and
    ``slice_emitted`` are read (:func:`~satqkd.protocol.session.split_raw`).
    """
    opts = protocol_options(cfg, ec, finite_key)
    data = view if isinstance(view, AliceData) else split_raw(view)[0]
    return alice_party(endpoint, data, opts, party_rngs(seed)[1])


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
) -> PartyOutcome:
    """The ground station's side over ``endpoint``.

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
    out = bob_party(endpoint, view, opts, party_rngs(seed)[2])
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
    if peer.get("options") != mine["options"]:
        diff = sorted(k for k in set(mine["options"]) | set(peer.get("options") or {}) if (peer.get("options") or {}).get(k) != mine["options"].get(k))
        raise HandshakeError(f"the peer's protocol options differ ({', '.join(diff)}): use the same preset/config, --ec and --finite-key")
    off = peer.get("pool_offset")
    if not isinstance(off, int) or off < 0:
        raise HandshakeError(f"the peer's pool offset is not a non-negative integer: {off!r}")
    return off


def run_reservation_bits(pool: PoolFile) -> int:
    """Pool bits one run may consume from the front of ``pool``: the hash key and two checkpoints."""
    return pool.hash_key_bits() + CHECKPOINTS * 2 * PAD_BITS


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
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok

    @property
    def abort_reason(self) -> str | None:
        if self.error is not None:
            return self.error
        return None if self.outcome is None else self.outcome.abort_reason

    @property
    def auth_bits_used(self) -> int:
        return 0 if self.outcome is None else int(self.outcome.auth_key_bits)


def check_pool(pool_path: str | Path) -> tuple[PoolFile, int]:
    """Read the pool and check that it holds one run's reservation; raises :class:`PoolFileError`."""
    pool = read_pool(pool_path)
    need = run_reservation_bits(pool)
    if pool.nbits < need:
        raise PoolFileError(f"the pool {pool_path} has {pool.nbits} bits left, a run needs {need}: make and share a new pool")
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
) -> PartyRun:
    """One party as its own process: sync (Bob), find the peer, hello, reserve pool bits, run.

    Raises :class:`PoolFileError` (bad or too small pool) and ``ValueError`` (bad arguments or
    records) *before* any connection; every later failure (no peer, hello refused, protocol
    abort) is returned in :attr:`PartyRun.error` / the outcome's ``abort_reason``.
    """
    if role not in ROLES:
        raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
    if (listen is None) == (connect is None):
        raise ValueError("give exactly one of listen=(host, port) or connect=(host, port)")
    status = on_status or (lambda _msg: None)
    opts = protocol_options(cfg, ec, finite_key)
    pool, _ = check_pool(pool_path)
    run = PartyRun(role, pool_id=pool.id_hex, pool_offset_before=pool.offset, pool_offset_after=pool.offset,
                   pool_bits_left=pool.nbits, pool_insecure=pool.insecure)
    t0 = time.perf_counter()
    if role == "bob":
        status("synchronising the time tags")
        data: AliceData | BobData = bob_detections(view, seed)
        run.seconds["synchronisation"] = time.perf_counter() - t0
    else:
        data = split_raw(view)[0]
    hello = {
        "version": HELLO_VERSION,
        "role": role,
        "pool_id": pool.id_hex,
        "pool_offset": pool.offset,
        "pass_id": str(view.meta.get("pass_id", "")),
        "options": json.loads(json.dumps(dataclasses.asdict(opts))),
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
        write_pool(rest, pool_path)  # write-ahead: these bits are gone whatever happens next
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
            run.outcome = run_alice(data, cfg, ep, seed=seed, ec=ec, finite_key=finite_key)
        else:
            run.outcome = run_bob(data, cfg, ep, seed=seed, ec=ec, finite_key=finite_key)
    finally:
        ep.close()
        run.stats = ep.stats
    run.seconds["protocol"] = time.perf_counter() - t2
    if run.auth_bits_used > run.pool_bits_reserved:  # impossible: the endpoint's pool holds exactly the reservation
        raise AssertionError(f"the run used {run.auth_bits_used} pool bits, {run.pool_bits_reserved} were reserved")
    return run

