"""Typed, authenticated, accounted messages between Alice (satellite) and Bob (ground station).

The two parties share nothing but these messages (and the identical authentication key pools
they start with). Every message is

* **typed** — a :class:`Message` ``(kind, payload)`` with a deterministic compact binary codec
  (:func:`encode` / :func:`decode`; no pickle): ``int`` (any size), ``float``, ``bool``, ``None``,
  ``str``, ``bytes`` and NumPy arrays of bool/int/uint/float/complex (dtype and shape kept;
  **bool arrays travel bit-packed**, 1 bit per element — send bit strings as ``bool`` arrays);
* **authenticated** — in ``auth_mode="each"``, a 16-byte Wegman–Carter tag
  (:mod:`satqkd.postprocess.authentication`) over a header (direction, per-direction sequence
  number; not transmitted, both sides know it) and the encoded message, appended to the frame. In
  ``auth_mode="transcript"`` frames carry no tag; each endpoint records every message it sent and
  received, per direction in sequence order, and :meth:`Endpoint.checkpoint` exchanges one tag
  each way over that whole transcript (both sides must hold the identical transcript). A protocol
  that outputs nothing before a successful checkpoint covering everything it used is as secure
  as tagging every message, and an interactive protocol with thousands of round trips (Cascade)
  then spends 2 pads per checkpoint instead of 2 per round trip. A bad tag raises
  :class:`AuthenticationError` and the endpoint refuses further use (the party must abort). The
  sequence numbers make a replayed, reordered, dropped or reflected message fail too;
* **accounted** — bytes and messages per direction, round trips, the time the traffic takes
  on the paper's RF link, and the **bits of content** of every message per direction and kind
  (:class:`ChannelStats`, :meth:`Endpoint.content_bits`): one bit per element of every bool array
  and one per bool scalar in the payload. Bit strings travel as bool fields, so this is what a
  party disclosed in bits; the protocol charges error-correction leakage from it (both
  directions), never from a formula. Integer fields (positions, sizes, counts) are not counted:
  the protocol must argue each one is a function of public data and of bits already counted
  (``docs/finite-key.md``, "EC leakage").

Directions: ``"down"`` = Alice → Bob (satellite → ground, ``ClassicalLinkConfig.downlink_bps``,
4 Mbit/s in the paper), ``"up"`` = Bob → Alice (``uplink_bps``, 1 Mbit/s).

Link-time model (per endpoint, over the messages it sent and received, in its own order): each
message costs ``8·len(frame)/bps`` of its direction; each *leg* — a maximal run of messages in the
same direction — adds one light time ``one_way_delay_s`` (range/c). ``round_trips`` counts the
direction changes, so ``legs = round_trips + 1`` (when any message was exchanged) and::

    link_time_s = 8·bytes_down/downlink_bps + 8·bytes_up/uplink_bps + one_way_delay_s·(round_trips + 1)

(``one_way_delay_s`` may be changed between messages as the range changes; each leg uses the
value current when it starts.) Frame bytes = encoded message + 16-byte tag; the TCP transport's
4-byte length prefix is not counted (the RF link has its own framing).

Transports: :func:`memory_pair` (two ``queue.Queue``s; the parties run in two threads) and
:func:`tcp_pair` / :class:`TcpEndpoint` (length-prefixed frames over a socket). Protocol code only
sees :class:`Endpoint`.

Example::

    >>> import numpy as np, threading
    >>> from satqkd.postprocess.authentication import KeyPool
    >>> pool = KeyPool.from_rng(10_000, np.random.default_rng(0))
    >>> alice, bob = memory_pair(pool, pool.copy())
    >>> alice.send("bases", bits=np.array([True, False, True]))
    >>> bob.recv("bases")["bits"]
    array([ True, False,  True])
    >>> bob.stats.bytes_down == alice.stats.bytes_down
    True
"""

from __future__ import annotations

import math
import queue
import socket
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from satqkd.config import ClassicalLinkConfig
from satqkd.postprocess.authentication import TAG_BYTES, AuthenticationError, Authenticator, KeyPool

__all__ = [
    "Message",
    "encode",
    "decode",
    "CodecError",
    "ChannelError",
    "ChannelTimeout",
    "ChannelClosed",
    "ProtocolError",
    "PeerAborted",
    "AuthenticationError",
    "ChannelStats",
    "content_bits",
    "Endpoint",
    "QueueEndpoint",
    "TcpEndpoint",
    "memory_pair",
    "tcp_pair",
    "tcp_listen",
    "ABORT_KIND",
]

ABORT_KIND = "abort"
_VERSION = 1
_MAX_FRAME_BYTES = 1 << 30

Tamper = Callable[[str, int, bytes], "bytes | None"]


# ---- errors -------------------------------------------------------------------------------------


class CodecError(ValueError):
    """Bytes that are not a valid encoded :class:`Message`, or a payload value that cannot be encoded."""


class ChannelError(RuntimeError):
    """Base class of channel failures."""


class ChannelTimeout(ChannelError):
    """No message arrived within the timeout."""


class ChannelClosed(ChannelError):
    """The transport is closed, or this endpoint refused further use after a failure."""


class ProtocolError(ChannelError):
    """An authentic message of an unexpected kind arrived."""


class PeerAborted(ChannelError):
    """The peer sent an authenticated ``abort`` message; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(f"peer aborted: {reason}")
        self.reason = reason


# ---- codec --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A typed message: ``kind`` names it, ``payload`` maps field names to values (module docstring)."""

    kind: str
    payload: dict[str, Any]


def _uvarint(v: int, out: bytearray) -> None:
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _text(s: str, out: bytearray) -> None:
    b = s.encode("utf-8")
    _uvarint(len(b), out)
    out += b


_ARRAY_KINDS = "iufc"


def _encode_value(name: str, v: Any, out: bytearray) -> None:
    if isinstance(v, np.generic) and not isinstance(v, np.ndarray):
        if v.dtype.kind == "b":
            v = bool(v)
        elif v.dtype.kind in "iu":
            v = int(v)
        elif v.dtype.kind == "f":
            v = float(v)
    if v is None:
        out += b"N"
    elif v is True:
        out += b"T"
    elif v is False:
        out += b"F"
    elif isinstance(v, int):
        out += b"i"
        _uvarint(_zigzag(v), out)
    elif isinstance(v, float):
        out += b"f" + struct.pack(">d", v)
    elif isinstance(v, str):
        out += b"s"
        _text(v, out)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        out += b"y"
        _uvarint(len(b), out)
        out += b
    elif isinstance(v, np.ndarray):
        if v.dtype.kind == "b":
            out += b"B"
            _uvarint(v.ndim, out)
            for d in v.shape:
                _uvarint(d, out)
            out += np.packbits(v.ravel()).tobytes()
        elif v.dtype.kind in _ARRAY_KINDS:
            a = v.astype(v.dtype.newbyteorder("<"), order="C", copy=False)  # little-endian, C order (keeps 0-d)
            out += b"a"
            _text(a.dtype.str, out)
            _uvarint(a.ndim, out)
            for d in a.shape:
                _uvarint(d, out)
            out += a.tobytes()
        else:
            raise CodecError(f"payload field {name!r}: arrays of dtype {v.dtype} cannot be sent (use bool/int/uint/float/complex)")
    else:
        raise CodecError(
            f"payload field {name!r}: type {type(v).__name__} cannot be sent "
            "(allowed: int, float, bool, None, str, bytes, numpy array)"
        )


def encode(msg: Message) -> bytes:
    """Deterministic compact encoding of a :class:`Message` (fields in sorted name order)."""
    if not isinstance(msg.kind, str) or not msg.kind:
        raise CodecError(f"message kind must be a non-empty str, got {msg.kind!r}")
    out = bytearray([_VERSION])
    _text(msg.kind, out)
    names = sorted(msg.payload)
    for name in names:
        if not isinstance(name, str):
            raise CodecError(f"payload field names must be str, got {name!r}")
    _uvarint(len(names), out)
    for name in names:
        _text(name, out)
        _encode_value(name, msg.payload[name], out)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CodecError(f"truncated message: needs {n} bytes at offset {self.pos}, has {len(self.data) - self.pos}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def byte(self) -> int:
        return self.take(1)[0]

    def uvarint(self, max_bits: int | None = 64) -> int:
        v, shift = 0, 0
        while True:
            b = self.byte()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if shift > 7 and b == 0:
                    raise CodecError(f"non-canonical varint at offset {self.pos - 1}")
                return v
            if max_bits is not None and shift >= max_bits + 7:
                raise CodecError(f"varint too long at offset {self.pos}")

    def text(self) -> str:
        n = self.uvarint()
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"invalid UTF-8 text: {exc}") from None

    def shape(self) -> tuple[int, ...]:
        ndim = self.uvarint()
        if ndim > 32:
            raise CodecError(f"array has {ndim} dimensions (at most 32)")
        return tuple(self.uvarint() for _ in range(ndim))


def _decode_value(r: _Reader) -> Any:
    code = r.byte()
    if code == ord("N"):
        return None
    if code == ord("T"):
        return True
    if code == ord("F"):
        return False
    if code == ord("i"):
        z = r.uvarint(max_bits=None)
        return z >> 1 if not z & 1 else -((z + 1) >> 1)
    if code == ord("f"):
        return struct.unpack(">d", r.take(8))[0]
    if code == ord("s"):
        return r.text()
    if code == ord("y"):
        return bytes(r.take(r.uvarint()))
    if code == ord("B"):
        shape = r.shape()
        size = math.prod(shape)
        packed = np.frombuffer(r.take((size + 7) // 8), dtype=np.uint8)
        return np.unpackbits(packed, count=size).astype(bool).reshape(shape)
    if code == ord("a"):
        ds = r.text()
        try:
            dt = np.dtype(ds)
        except TypeError:
            raise CodecError(f"unknown array dtype {ds!r}") from None
        if dt.kind not in _ARRAY_KINDS or dt.str != ds:
            raise CodecError(f"array dtype {ds!r} not allowed")
        shape = r.shape()
        nbytes = math.prod(shape) * dt.itemsize
        return np.frombuffer(r.take(nbytes), dtype=dt).reshape(shape).copy()
    raise CodecError(f"unknown value type code {code!r} at offset {r.pos - 1}")


def decode(data: bytes) -> Message:
    """Inverse of :func:`encode`; raises :class:`CodecError` on malformed or trailing bytes."""
    r = _Reader(bytes(data))
    v = r.byte()
    if v != _VERSION:
        raise CodecError(f"unknown codec version {v} (this code reads version {_VERSION})")
    kind = r.text()
    if not kind:
        raise CodecError("empty message kind")
    nfields = r.uvarint()
    payload: dict[str, Any] = {}
    prev = None
    for _ in range(nfields):
        name = r.text()
        if prev is not None and name <= prev:
            raise CodecError(f"payload fields not in strictly sorted order at {name!r}")
        prev = name
        payload[name] = _decode_value(r)
    if r.pos != len(r.data):
        raise CodecError(f"{len(r.data) - r.pos} trailing bytes after the message")
    return Message(kind, payload)


# ---- accounting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelStats:
    """Traffic seen by one endpoint (module docstring: link-time model).

    ``bytes_*`` are frame bytes (encoded message + 16-byte tag); ``auth_key_bits`` is the pool key
    this endpoint's authenticator consumed (hash key + pads) — to be charged against the output key.
    """

    bytes_up: int = 0
    bytes_down: int = 0
    messages_up: int = 0
    messages_down: int = 0
    round_trips: int = 0
    link_time_s: float = 0.0
    auth_key_bits: int = 0
    #: ``{direction: {kind: bits}}``: content bits (bool elements) of every message this endpoint
    #: sent or received, per direction and message kind (see :func:`content_bits`)
    content_bits: dict = field(default_factory=dict)

    @property
    def bytes_total(self) -> int:
        return self.bytes_up + self.bytes_down

    def bits(self, direction: str, kinds: "tuple[str, ...] | None" = None) -> int:
        """Content bits sent in ``direction`` (``"up"`` Bob → Alice, ``"down"`` Alice → Bob) in
        messages of the given kinds (all kinds if ``None``)."""
        per = self.content_bits.get(direction, {})
        return int(sum(v for k, v in per.items() if kinds is None or k in kinds))


def content_bits(payload: dict[str, Any]) -> int:
    """Bits of content of a payload: one per element of each bool array, one per bool scalar.

    >>> content_bits({"flags": np.array([True, False, True]), "done": True, "n": 7})
    4
    """
    n = 0
    for v in payload.values():
        if isinstance(v, (bool, np.bool_)):
            n += 1
        elif isinstance(v, np.ndarray) and v.dtype.kind == "b":
            n += int(v.size)
    return n


# ---- endpoints ----------------------------------------------------------------------------------

_CHECKPOINT_KIND = "auth_checkpoint"
_ACK_KIND = "auth_ack"  # an acknowledgement in auth_mode="each" (a normal, tagged message)


_DIRECTION = {"alice": "down", "bob": "up"}
_HEADER_DIR = {"down": b"\x00", "up": b"\x01"}


class Endpoint(ABC):
    """One party's end of the authenticated classical channel.

    ``send(kind, **payload)`` encodes, tags and transmits; ``recv(expect_kind)`` receives, verifies
    the tag (before decoding anything), decodes and checks the kind, and returns the payload dict.
    Subclasses only move frames (:meth:`_send_frame`, :meth:`_recv_frame`).
    """

    def __init__(
        self,
        role: str,
        auth_pool: KeyPool,
        link_cfg: ClassicalLinkConfig | None = None,
        one_way_delay_s: float = 0.0,
        timeout_s: float = 30.0,
        tamper: Tamper | None = None,
        auth_mode: str = "each",
    ):
        if auth_mode not in ("each", "transcript"):
            raise ValueError(f"auth_mode must be 'each' or 'transcript', got {auth_mode!r}")
        if role not in _DIRECTION:
            raise ValueError(f"role must be 'alice' (satellite) or 'bob' (ground), got {role!r}")
        if not one_way_delay_s >= 0.0:
            raise ValueError(f"one_way_delay_s must be ≥ 0, got {one_way_delay_s}")
        if not timeout_s > 0.0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.role = role
        self.peer = "bob" if role == "alice" else "alice"
        self.out_direction = _DIRECTION[role]
        self.in_direction = _DIRECTION[self.peer]
        self.link_cfg = link_cfg if link_cfg is not None else ClassicalLinkConfig()
        self.one_way_delay_s = float(one_way_delay_s)
        self.timeout_s = float(timeout_s)
        self.tamper = tamper
        self.auth = Authenticator(auth_pool, role=role)
        self._bytes = {"up": 0, "down": 0}
        self._msgs = {"up": 0, "down": 0}
        self._content: dict[str, dict[str, int]] = {"up": {}, "down": {}}
        self._round_trips = 0
        self._last_dir: str | None = None
        self._link_time = 0.0
        self._failed: str | None = None
        self.auth_mode = auth_mode
        # transcript mode: the messages since the last checkpoint, per direction, in sequence order
        self._transcript: dict[str, list[bytes]] = {"up": [], "down": []}
        self._last_checkpoint = b""
        self.checkpoints = 0

    # -- transport hooks --
    @abstractmethod
    def _send_frame(self, frame: bytes) -> None: ...

    @abstractmethod
    def _recv_frame(self, timeout_s: float) -> bytes:
        """Next frame; raises :class:`ChannelTimeout` / :class:`ChannelClosed`."""

    def close(self) -> None:
        """Release the transport (no message is sent)."""

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- accounting --
    def _bps(self, direction: str) -> float:
        return self.link_cfg.downlink_bps if direction == "down" else self.link_cfg.uplink_bps

    def _account(self, direction: str, nbytes: int) -> None:
        if self._last_dir != direction:
            if self._last_dir is not None:
                self._round_trips += 1
            self._link_time += self.one_way_delay_s
            self._last_dir = direction
        self._bytes[direction] += nbytes
        self._msgs[direction] += 1
        self._link_time += 8.0 * nbytes / self._bps(direction)

    @property
    def stats(self) -> ChannelStats:
        """A snapshot of this endpoint's traffic accounting."""
        return ChannelStats(
            bytes_up=self._bytes["up"],
            bytes_down=self._bytes["down"],
            messages_up=self._msgs["up"],
            messages_down=self._msgs["down"],
            round_trips=self._round_trips,
            link_time_s=self._link_time,
            auth_key_bits=self.auth.consumed_bits,
            content_bits={d: dict(v) for d, v in self._content.items()},
        )

    def _count_content(self, direction: str, kind: str, payload: dict) -> None:
        per = self._content[direction]
        per[kind] = per.get(kind, 0) + content_bits(payload)

    def content_bits(self, direction: str, kinds: "tuple[str, ...] | None" = None) -> int:
        """Content bits of the messages sent so far in ``direction`` of the given kinds
        (:meth:`ChannelStats.bits`); each endpoint counts what it sent and what it received."""
        return self.stats.bits(direction, kinds)

    def _header(self, direction: str, seq: int) -> bytes:
        return b"SQK" + _HEADER_DIR[direction] + seq.to_bytes(8, "big")

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise ChannelClosed(f"{self.role}'s endpoint refuses use after: {self._failed}")

    # -- protocol API --
    def send(self, kind: str, **payload: Any) -> None:
        """Encode, authenticate and send one message of ``kind`` with the given payload fields."""
        self._check_usable()
        self._send(kind, payload)

    def _send(self, kind: str, payload: dict) -> None:
        body = encode(Message(kind, payload))
        d = self.out_direction
        seq = self._msgs[d]
        self._count_content(d, kind, payload)
        if self.auth_mode == "each":
            frame = body + self.auth.tag(self._header(d, seq) + body)
        elif kind == _CHECKPOINT_KIND:  # transcript mode: the flag byte marks a checkpoint, which
            frame = b"\x01" + body  # carries its own tag over the transcript and is not recorded
        else:
            frame = b"\x00" + body
            self._record(d, seq, body)
        self._account(d, len(frame))
        if self.tamper is not None:
            frame = self.tamper(d, seq, frame)
            if frame is None:
                return  # dropped in transit
        self._send_frame(frame)

    def recv(self, expect_kind: str | tuple[str, ...], timeout_s: float | None = None) -> dict[str, Any]:
        """Receive the next message, which must be of ``expect_kind`` (a kind or a tuple of kinds).

        Raises :class:`ChannelTimeout`, :class:`AuthenticationError` (bad tag: abort),
        :class:`PeerAborted` (the peer sent ``abort``) or :class:`ProtocolError` (other kind).
        """
        self._check_usable()
        frame = self._recv_frame(self.timeout_s if timeout_s is None else float(timeout_s))
        d = self.in_direction
        seq = self._msgs[d]
        self._account(d, len(frame))
        tagged = self.auth_mode == "each"
        checkpoint = self.auth_mode == "transcript" and frame[:1] == b"\x01"
        if self.auth_mode == "transcript":
            frame = frame[1:]
        if tagged:
            body, tag = frame[:-TAG_BYTES], frame[-TAG_BYTES:]
            if len(frame) < TAG_BYTES or not self.auth.verify(self._header(d, seq) + body, tag):
                self._failed = f"authentication failure of {self.peer}'s message #{seq}"
                raise AuthenticationError(f"{self.role}: {self._failed}; the protocol must abort")
        else:
            body = frame
            if not checkpoint:
                self._record(d, seq, body)
        try:
            msg = decode(body)
        except CodecError as exc:
            self._failed = f"undecodable {'authentic' if tagged else 'not yet authenticated'} message #{seq}"
            raise ProtocolError(f"{self.role}: {self._failed}: {exc}") from None
        if checkpoint != (self.auth_mode == "transcript" and msg.kind == _CHECKPOINT_KIND):
            self._failed = f"message #{seq} claims to be a checkpoint but is not, or the reverse"
            raise AuthenticationError(f"{self.role}: {self._failed}; the protocol must abort")
        kinds = (expect_kind,) if isinstance(expect_kind, str) else tuple(expect_kind)
        if msg.kind == ABORT_KIND and ABORT_KIND not in kinds:
            self._failed = "peer aborted"
            raise PeerAborted(str(msg.payload.get("reason", "")))
        if msg.kind not in kinds:
            self._failed = f"unexpected message kind {msg.kind!r}"
            raise ProtocolError(f"{self.role} expected {' or '.join(map(repr, kinds))}, got {msg.kind!r}")
        self._count_content(d, msg.kind, msg.payload)
        return msg.payload

    # -- transcript authentication --
    def _record(self, direction: str, seq: int, body: bytes) -> None:
        self._transcript[direction].append(self._header(direction, seq) + len(body).to_bytes(8, "big") + body)

    def _transcript_bytes(self) -> bytes:
        # Unambiguous: each entry is header (direction, sequence number) + length + body, the
        # downlink entries first, then the uplink ones, each in sequence order — the same on both
        # sides whatever the interleaving of sends and receives.
        return b"".join(self._transcript["down"]) + b"|" + b"".join(self._transcript["up"])

    def checkpoint(self, between: Callable[[], None] | None = None) -> None:
        """Authenticate everything exchanged since the last checkpoint (``auth_mode="transcript"``).

        Alice sends her Wegman–Carter tag of the transcript, Bob checks it and answers with his own
        tag of the same transcript, Alice checks that. Either side raises
        :class:`AuthenticationError` if its peer's tag does not match (the run must abort). Costs
        two messages (not recorded in the transcript: their content is the tag) and two pads. A
        no-op in ``auth_mode="each"`` (every message is tagged; ``between`` is still called).

        ``between()`` is called at this side's point of commitment: Alice right after sending her
        tag, Bob after verifying Alice's tag and before sending his (the key-confirmation rule of
        ``parties.py`` stores a pending key there).
        """
        self._check_usable()
        if self.auth_mode == "each":
            if between is not None:
                between()
            return
        t = self._transcript_bytes()
        if self.role == "alice":
            self._send(_CHECKPOINT_KIND, {"tag": self.auth.tag(t)})
            if between is not None:
                between()
            self._verify_checkpoint(t)
        else:
            self._verify_checkpoint(t)
            if between is not None:
                between()
            self._send(_CHECKPOINT_KIND, {"tag": self.auth.tag(t)})
        self._last_checkpoint = t
        self._transcript = {"up": [], "down": []}
        self.checkpoints += 1

    def acknowledge(self) -> None:
        """Send one authenticated acknowledgement of the last checkpoint (its transcript, marked
        ``ACK``): tells the peer that this side verified the peer's checkpoint tag. One tag, one pad
        pair of the pool (the lane pair is taken whole)."""
        self._check_usable()
        if self.auth_mode == "each":
            self._send(_ACK_KIND, {})
            return
        self._send(_CHECKPOINT_KIND, {"tag": self.auth.tag(b"ACK" + self._last_checkpoint), "ack": True})

    def await_acknowledgement(self) -> None:
        """Receive and verify the peer's :meth:`acknowledge`; raises like :meth:`checkpoint`."""
        self._check_usable()
        if self.auth_mode == "each":
            self.recv(_ACK_KIND)
            return
        msg = self.recv(_CHECKPOINT_KIND)
        tag = msg.get("tag")
        if msg.get("ack") is not True or not isinstance(tag, bytes) or not self.auth.verify(b"ACK" + self._last_checkpoint, tag):
            self._failed = f"{self.peer}'s acknowledgement does not verify"
            raise AuthenticationError(f"{self.role}: {self._failed}")

    def _verify_checkpoint(self, transcript: bytes) -> None:
        msg = self.recv(_CHECKPOINT_KIND)
        tag = msg.get("tag")
        if not isinstance(tag, bytes) or not self.auth.verify(transcript, tag):
            self._failed = f"the transcript {self.peer} authenticated differs from {self.role}'s"
            raise AuthenticationError(f"{self.role}: {self._failed}; the protocol must abort")

    def abort(self, reason: str) -> None:
        """Tell the peer (authenticated) that this party aborts; the endpoint is unusable afterwards.

        Allowed after an authentication failure too (best effort: transport errors are ignored).
        """
        try:
            self._send(ABORT_KIND, {"reason": str(reason)})
        except (ChannelError, OSError):
            pass
        if self._failed is None:
            self._failed = f"aborted: {reason}"


class QueueEndpoint(Endpoint):
    """In-process transport over two ``queue.Queue`` (one per direction); see :func:`memory_pair`."""

    def __init__(self, role: str, auth_pool: KeyPool, outbox: queue.Queue, inbox: queue.Queue, **kw: Any):
        super().__init__(role, auth_pool, **kw)
        self._outbox, self._inbox = outbox, inbox
        self._closed = False

    def _send_frame(self, frame: bytes) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.role}'s endpoint is closed")
        self._outbox.put(bytes(frame))

    def _recv_frame(self, timeout_s: float) -> bytes:
        if self._closed:
            raise ChannelClosed(f"{self.role}'s endpoint is closed")
        try:
            return self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise ChannelTimeout(f"{self.role}: no message from {self.peer} within {timeout_s:g} s") from None

    def close(self) -> None:
        self._closed = True


def memory_pair(
    auth_pool_a: KeyPool,
    auth_pool_b: KeyPool,
    link_cfg: ClassicalLinkConfig | None = None,
    one_way_delay_s: float = 0.0,
    *,
    timeout_s: float = 30.0,
    tamper: Tamper | None = None,
    auth_mode: str = "each",
) -> tuple[QueueEndpoint, QueueEndpoint]:
    """An in-process ``(alice, bob)`` pair; run each party in its own thread.

    ``auth_pool_a`` / ``auth_pool_b`` are Alice's and Bob's identical key pools (distinct objects).
    ``tamper(direction, index, frame) -> frame | None`` (tests) may alter or drop (``None``) the
    ``index``-th frame (0-based) sent in ``direction`` (``"down"`` or ``"up"``).
    """
    if auth_pool_a is auth_pool_b:
        raise ValueError("auth_pool_a and auth_pool_b must be two objects (each party holds its own copy)")
    down: queue.Queue = queue.Queue()
    up: queue.Queue = queue.Queue()
    kw = dict(link_cfg=link_cfg, one_way_delay_s=one_way_delay_s, timeout_s=timeout_s, tamper=tamper, auth_mode=auth_mode)
    return (QueueEndpoint("alice", auth_pool_a, down, up, **kw), QueueEndpoint("bob", auth_pool_b, up, down, **kw))


class TcpEndpoint(Endpoint):
    """Transport over a connected stream socket: each frame is a 4-byte big-endian length + frame."""

    def __init__(self, role: str, auth_pool: KeyPool, sock: socket.socket, **kw: Any):
        super().__init__(role, auth_pool, **kw)
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def connect(cls, host: str, port: int, role: str, auth_pool: KeyPool, **kw: Any) -> "TcpEndpoint":
        """Connect to a listening peer (see :func:`tcp_listen` / :meth:`accept`)."""
        sock = socket.create_connection((host, port), timeout=kw.get("timeout_s", 30.0))
        return cls(role, auth_pool, sock, **kw)

    @classmethod
    def accept(cls, server: socket.socket, role: str, auth_pool: KeyPool, **kw: Any) -> "TcpEndpoint":
        """Accept one connection on a listening socket."""
        server.settimeout(kw.get("timeout_s", 30.0))
        try:
            sock, _ = server.accept()
        except socket.timeout:
            raise ChannelTimeout("no peer connected") from None
        return cls(role, auth_pool, sock, **kw)

    def _send_frame(self, frame: bytes) -> None:
        try:
            self.sock.sendall(struct.pack(">I", len(frame)) + frame)
        except OSError as exc:
            raise ChannelClosed(f"{self.role}: send failed: {exc}") from None

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                raise ChannelTimeout(f"{self.role}: no message from {self.peer} within {self.sock.gettimeout():g} s") from None
            except OSError as exc:
                raise ChannelClosed(f"{self.role}: receive failed: {exc}") from None
            if not chunk:
                raise ChannelClosed(f"{self.role}: connection closed by {self.peer}")
            buf += chunk
        return bytes(buf)

    def _recv_frame(self, timeout_s: float) -> bytes:
        self.sock.settimeout(timeout_s)
        (n,) = struct.unpack(">I", self._read_exact(4))
        if n > _MAX_FRAME_BYTES:
            self._failed = f"frame of {n} bytes announced (limit {_MAX_FRAME_BYTES})"
            raise ProtocolError(f"{self.role}: {self._failed}")
        return self._read_exact(n)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tcp_listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket (port 0 = any free port; read it with ``sock.getsockname()[1]``)."""
    server = socket.create_server((host, port))
    return server


def tcp_pair(
    auth_pool_a: KeyPool,
    auth_pool_b: KeyPool,
    link_cfg: ClassicalLinkConfig | None = None,
    one_way_delay_s: float = 0.0,
    *,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
    tamper: Tamper | None = None,
    auth_mode: str = "each",
) -> tuple[TcpEndpoint, TcpEndpoint]:
    """An ``(alice, bob)`` pair connected over a loopback TCP socket (Bob listens, Alice connects)."""
    if auth_pool_a is auth_pool_b:
        raise ValueError("auth_pool_a and auth_pool_b must be two objects (each party holds its own copy)")
    kw = dict(link_cfg=link_cfg, one_way_delay_s=one_way_delay_s, timeout_s=timeout_s, tamper=tamper, auth_mode=auth_mode)
    with tcp_listen(host, 0) as server:
        port = server.getsockname()[1]
        a_sock = socket.create_connection((host, port), timeout=timeout_s)
        server.settimeout(timeout_s)
        b_sock, _ = server.accept()
    return TcpEndpoint("alice", auth_pool_a, a_sock, **kw), TcpEndpoint("bob", auth_pool_b, b_sock, **kw)
