"""Crash-safe key store: one SQLite file per site (ground station or satellite).

A *link* is the name of the peer site a key is shared with ("Nanshan", "Micius", ...). A key
deposited on a link (a final key of a QKD pass, or a relayed key) is a *root*: its material is
written once and never moved. Everything handed out is a *piece* of a root — a contiguous range
``[offset_bits, offset_bits + length_bits)`` with its own UUID and exactly one state::

    available ──► reserved (for an SAE pair, by a KME, with the request id) ──► delivered
        │                                                      (ETSI GS QKD 014 key delivery)
        ├──────► relayed    (satellite trusted relay: used in K_X ⊕ K_N)
        └──────► consumed   (one-time pad, authentication)

Two more states hold material that is never served: ``pending`` (deposited but not yet usable: a
deposit waiting for its twin at the other end of the link, a relayed key waiting for the relay's
commit, or a key waiting for key confirmation) and ``quarantined`` (its material failed its digest).

Every piece that still holds material (available, reserved, pending, quarantined) carries a
SHA-256 digest of its bytes (domain-separated by root id, offset and length), written in the
transaction that creates the piece and checked on every read: a piece whose material no longer
matches is moved to ``quarantined`` in its own transaction and the read fails with
:class:`KeyCorrupted` (FIPS 180-4; a digest detects accidental corruption — a flipped bit on disk,
a bad copy — not a forger who can write the file). ``KeyStore.verify`` checks a whole store.

Cutting a piece splits an available piece into at most three (left remainder, the cut, right
remainder), so the pieces of every root always tile it exactly: every bit is in exactly one
state, which :meth:`KeyStore.check_invariants` verifies. Every state change is one SQLite
transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) in WAL mode with ``synchronous=FULL``, so a crash
(even ``kill -9`` or power loss) leaves each change either fully done or not done at all, and
an event log row is written in the same transaction.

Both ends of a link hold the same roots under the same ids (a pass key is deposited at the
satellite and at the station with the same ``key_id``; see :func:`key_id_for`). Whoever cuts
(the master KME, the OTP sender, the satellite in a relay) names the exact segments it cut —
root id, offset, length and the new piece id — and the other end carves the very same
segments, so both stores stay bit-for-bit in step. To let both ends cut for requests they each
master without colliding, the site whose name sorts first cuts from the *front* of the pool
(oldest root, lowest offset) and the other from the *back*; the two meet only when the pool is
nearly empty, and a collision is then detected (the far end refuses to carve a range that is no
longer available) and nothing is issued.

Material is stored as bytes: every length and offset is a multiple of 8 bits (a deposited bit
string is truncated to a whole number of bytes, identically at both ends). Material of pieces
that reach a final state (delivered, relayed, consumed) is overwritten with zeros in the same
transaction (``wipe=True``), so used key does not linger on disk.

Store files are created with mode 0600 (whatever the umask), in directories created 0700, and an
existing store is narrowed to 0600 when opened. Next to the store, ``<store>.ledger`` is the site's :class:`satqkd.ledger.UsageLedger`
of one-time key ranges used (OTP pads and MACs, relay announcements): it is checked before such a
use and written before the key leaves the process, so a store restored from a backup cannot make
a range be used twice (:class:`KeyReused`). The store is bound to its ledger (``meta.ledger_id``,
mirrored by a ``ledger:<id>`` line in the ledger): a store copied or restored to another place, or
whose ledger was lost, is refused rather than starting over with an empty ledger.

Schema version 2 (digests, ``pending``/``quarantined``, the ``ops`` journal). A version-1 store is
migrated when first opened: digests are computed from the material as found then (corruption
that happened before the migration cannot be detected), in one transaction.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import threading
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "STATES",
    "KeyStore",
    "KeyStoreError",
    "KeyUnavailable",
    "KeyNotFound",
    "NotEntitled",
    "KeyCorrupted",
    "KeyReused",
    "Origin",
    "Segment",
    "Piece",
    "bits_to_bytes",
    "bytes_to_bits",
    "key_id_for",
    "cuts_from_front",
    "open_store",
    "stats",
    "ls",
]

#: Version of the on-disk schema, kept in the ``meta`` table.
SCHEMA_VERSION = 2
#: Every state a piece of key can be in. Only ``available`` is ever cut; ``reserved`` is served once
#: (ETSI 014 delivery); ``pending`` and ``quarantined`` hold material that is never served.
STATES = ("available", "reserved", "delivered", "relayed", "consumed", "pending", "quarantined")
_FINAL = ("delivered", "relayed", "consumed")
#: States whose pieces still hold material (and a digest).
LIVE_STATES = ("available", "reserved", "pending", "quarantined")
_PURPOSES = ("etsi014", "otp", "relay", "authentication", "other")
#: Namespace for :func:`key_id_for` (uuid5 of a pass id).
_NAMESPACE = uuid.UUID("5a7c0f2e-3b8d-5e61-9a0c-6b1f4d2e8c73")


class KeyStoreError(Exception):
    """A key store operation was refused; nothing was changed."""


class KeyUnavailable(KeyStoreError):
    """Not enough available key on the link, or a named segment is not available (nothing changed)."""

    def __init__(self, message: str, *, needed_bits: int = 0, available_bits: int = 0, details: list | None = None):
        super().__init__(message)
        self.needed_bits = needed_bits
        self.available_bits = available_bits
        self.details = details or []


class KeyNotFound(KeyStoreError):
    """One or more key ids are not held for this SAE pair in a deliverable state (nothing changed)."""


class NotEntitled(KeyStoreError):
    """The keys exist but were issued to another slave SAE (nothing changed)."""


class KeyCorrupted(KeyStoreError):
    """Stored key material failed its digest: the piece was quarantined (never served); nothing else changed."""

    def __init__(self, message: str, *, key_ids: Sequence[str] = ()):
        super().__init__(message)
        self.key_ids = list(key_ids)


class KeyReused(KeyStoreError):
    """The site's usage ledger says this key range was used before (e.g. the store was restored from a
    backup): refused. The range is marked consumed in the store so that it is not offered again."""


@dataclass(frozen=True)
class Origin:
    """Where a root key came from: ``kind`` is ``"qkd"`` (a pass), ``"relay"`` or ``"standin"``."""

    kind: str = "qkd"
    pass_id: str | None = None
    seed: int | None = None
    epsilon: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class Segment:
    """A contiguous range of a root key, named by the piece id it gets when cut."""

    key_id: str
    root_id: str
    offset_bits: int
    length_bits: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Segment":
        try:
            seg = cls(str(d["key_id"]), str(d["root_id"]), int(d["offset_bits"]), int(d["length_bits"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"segment must have key_id, root_id, offset_bits, length_bits: {exc}") from None
        _check_uuid(seg.key_id, "segment key_id")
        if seg.offset_bits < 0 or seg.length_bits <= 0 or seg.offset_bits % 8 or seg.length_bits % 8:
            raise ValueError(
                f"segment offset_bits ({seg.offset_bits}) must be ≥ 0 and length_bits ({seg.length_bits}) > 0, "
                "both multiples of 8"
            )
        return seg


@dataclass(frozen=True)
class Piece:
    """One row of the store: a range of a root key in one state."""

    key_id: str
    link: str
    root_id: str
    offset_bits: int
    length_bits: int
    state: str
    role: str | None
    master_sae: str | None
    slave_sae: str | None
    kme_id: str | None
    request_id: str | None
    peer_ack: int | None
    purpose: str | None
    updated_utc: str

    def __repr__(self) -> str:
        who = f", {self.master_sae}→{self.slave_sae}" if self.master_sae else ""
        return (
            f"Piece({self.key_id[:8]}… {self.link}, {self.length_bits} bits @ {self.root_id[:8]}…+{self.offset_bits}, "
            f"{self.state}{who})"
        )


_PIECE_COLS = (
    "key_id, link, root_id, offset_bits, length_bits, state, role, master_sae, slave_sae, kme_id, "
    "request_id, peer_ack, purpose, updated_utc"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (
    digest       BLOB,
    root_id      TEXT PRIMARY KEY,
    link         TEXT NOT NULL,
    length_bits  INTEGER NOT NULL CHECK (length_bits > 0 AND length_bits % 8 = 0),
    material     BLOB NOT NULL,
    origin_kind  TEXT NOT NULL,
    origin_pass  TEXT,
    origin_seed  INTEGER,
    epsilon      REAL,
    origin_note  TEXT,
    created_utc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pieces (
    key_id       TEXT PRIMARY KEY,
    link         TEXT NOT NULL,
    root_id      TEXT NOT NULL REFERENCES roots(root_id),
    offset_bits  INTEGER NOT NULL CHECK (offset_bits >= 0 AND offset_bits % 8 = 0),
    length_bits  INTEGER NOT NULL CHECK (length_bits > 0 AND length_bits % 8 = 0),
    state        TEXT NOT NULL CHECK (state IN ('available','reserved','delivered','relayed','consumed','pending',
                                                'quarantined')),
    role         TEXT CHECK (role IS NULL OR role IN ('master','slave')),
    master_sae   TEXT,
    slave_sae    TEXT,
    kme_id       TEXT,
    request_id   TEXT,
    peer_ack     INTEGER,
    purpose      TEXT,
    updated_utc  TEXT NOT NULL,
    digest       BLOB
);
CREATE INDEX IF NOT EXISTS pieces_link_state ON pieces(link, state);
CREATE INDEX IF NOT EXISTS pieces_root ON pieces(root_id, offset_bits);
CREATE INDEX IF NOT EXISTS pieces_request ON pieces(request_id);
CREATE TABLE IF NOT EXISTS ops (
    op_id        TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    state        TEXT NOT NULL,
    data         TEXT,
    updated_utc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (request_id TEXT PRIMARY KEY, utc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    utc         TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    state       TEXT NOT NULL,
    request_id  TEXT,
    note        TEXT
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _check_uuid(value: str, name: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{name} must be a UUID string, got {value!r}") from None


def _check_link(link: str) -> str:
    if not isinstance(link, str) or not link.strip():
        raise ValueError(f"link must be a non-empty site name, got {link!r}")
    return link


def piece_digest(key_id: str, link: str, root_id: str, offset_bits: int, length_bits: int, material: bytes) -> bytes:
    """SHA-256 of a piece's material, bound to the piece's id and link and to where it lies (root id,
    offset, length): two pieces' material, ids or links swapped in the file do not verify
    (FIPS 180-4; each field length-prefixed, so no two field lists hash alike)."""
    h = hashlib.sha256(b"satqkd-piece-v2\0")
    for f in (str(key_id), str(link), str(root_id)):
        b = f.encode()
        h.update(struct.pack(">I", len(b)) + b)
    h.update(struct.pack(">QQ", offset_bits, length_bits))
    h.update(material)
    return h.digest()


def root_digest(material: bytes) -> bytes:
    """SHA-256 of a root key's whole material as deposited (to recognise a repeated deposit)."""
    return hashlib.sha256(b"satqkd-root-v2\0" + bytes(material)).digest()


def direction_window(site: str, link: str, root_bits: int) -> tuple[int, int]:
    """The bit range ``[lo, hi)`` of a root shared by ``site`` and ``link`` that ``site`` may use as pad
    toward ``link`` (one-time pad, :mod:`satqkd.keys.otp`).

    Every root is split in two directional streams that both ends derive alike from its length: the
    site whose name sorts first sends with the first half (whole bytes), the other with the rest.
    Two sites that encrypt toward each other at the same time therefore never touch the same bit —
    provided both ends spell both names alike (each store's ``site`` is the other's ``link``, exactly:
    ``"Nanshan"`` and ``"nanshan"`` sort differently). A site equal to its link is refused.
    """
    if site == link:
        raise ValueError(f"site and link are both {site!r}: the two directions of a link need two names")
    half = (root_bits // 16) * 8
    return (0, half) if site < link else (half, root_bits)


def _create_private(path: Path) -> None:
    """Create ``path`` (if missing) with mode 0600, or narrow an existing file to 0600 (umask-proof)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, 0o600)
        os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.exists() and p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except OSError:  # not ours: leave it (SQLite will report what it cannot do)
            pass


def mkdir_private(d: str | Path) -> Path:
    """Create directory ``d`` and any missing parents with mode 0700 (whatever the umask); directories that
    already exist are left as they are. A world-writable directory (umask 0) would let anyone replace
    a store, its ledger or a key file."""
    d = Path(d)
    missing = []
    p = d
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for q in reversed(missing):
        try:
            q.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by someone else: not ours to narrow
            continue
        os.chmod(q, 0o700)
    return d


def key_id_for(pass_id: str) -> str:
    """Deterministic root key id for a pass (uuid5), so both ends deposit a pass key under the same id."""
    return str(uuid.uuid5(_NAMESPACE, str(pass_id)))


def cuts_from_front(site: str, link: str) -> bool:
    """True if ``site`` cuts from the front of its pool with ``link`` (its name sorts first)."""
    return site < link


def bits_to_bytes(bits: np.ndarray) -> bytes:
    """Pack a 0/1 ``np.uint8`` bit array (MSB first, as :func:`numpy.packbits`) into bytes.

    A trailing partial byte (``len(bits) % 8`` bits) is dropped, so both ends of a link that
    hold the same bit string store the same whole bytes.
    """
    b = np.asarray(bits)
    if b.ndim != 1:
        raise ValueError(f"bits must be a 1-D array, got shape {b.shape}")
    if b.size and (b.min() < 0 or b.max() > 1):
        raise ValueError("bits must contain only 0 and 1")
    n = (b.size // 8) * 8
    return np.packbits(b[:n].astype(np.uint8)).tobytes()


def bytes_to_bits(data: bytes) -> np.ndarray:
    """Inverse of :func:`bits_to_bytes`: bytes → 0/1 ``np.uint8`` array, MSB first."""
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))


def _as_material(key: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    if isinstance(key, np.ndarray):
        return bits_to_bytes(key)
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise ValueError(f"key must be bytes or a 0/1 uint8 bit array, got {type(key).__name__}")


class KeyStore:
    """One site's key store (SQLite).

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> st = KeyStore(os.path.join(d, "xinglong.db"), site="Xinglong")
    >>> rid = st.deposit("Nanshan", bytes(range(64)))
    >>> st.stats()["links"]["Nanshan"]["available"]
    {'count': 1, 'bits': 512}
    >>> st.close()

    Thread-safe (one connection behind a lock); several processes may open the same file
    (SQLite locking, ``busy_timeout``).
    """

    def __init__(self, path: str | Path, site: str | None = None, *, wipe: bool = True, timeout_s: float = 30.0,
                 ledger: str | Path | None = None):
        from ..ledger import UsageLedger

        self.path = Path(path)
        self.wipe = bool(wipe)
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting (savepoints), guarded by the lock
        self._after: list[tuple] = []  # repairs to commit after the outermost transaction (quarantine, retire)
        if site is None and not self.path.exists():
            raise ValueError(f"site is required to create a new key store at {self.path}")
        mkdir_private(self.path.parent)
        _create_private(self.path)
        #: the site's usage ledger of one-time key ranges (beside the store unless given)
        self.ledger = UsageLedger(ledger if ledger is not None else self.path.with_name(self.path.name + ".ledger"))
        self._con = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
        self._con.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        mode = self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise KeyStoreError(f"could not switch {self.path} to WAL journal mode (got {mode})")
        self._con.execute("PRAGMA synchronous = FULL")
        self._con.execute("PRAGMA foreign_keys = ON")
        with self._tx() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            meta = dict(cur.execute("SELECT name, value FROM meta").fetchall())
            if meta and int(meta["schema_version"]) == 1:
                self._migrate_v1(cur)
                meta["schema_version"] = str(SCHEMA_VERSION)
            if not meta or int(meta["schema_version"]) == SCHEMA_VERSION:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        cur.execute(stmt)
            if not meta:
                if site is None:
                    raise ValueError(f"site is required to initialise the key store at {self.path}")
                cur.executemany(
                    "INSERT INTO meta(name, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("site", site), ("created_utc", _now())],
                )
                meta = {"schema_version": str(SCHEMA_VERSION), "site": site}
        version = int(meta["schema_version"])
        if version > SCHEMA_VERSION:
            self._con.close()
            raise KeyStoreError(
                f"{self.path} has schema version {version}, newer than this satqkd supports ({SCHEMA_VERSION})"
            )
        if site is not None and meta["site"] != site:
            self._con.close()
            raise ValueError(f"{self.path} is the store of site {meta['site']!r}, not {site!r}")
        self.site: str = meta["site"]
        self.schema_version = version
        _create_private(self.path)  # the -wal/-shm files SQLite just made take the store's mode
        self._bind_ledger()

    def _check_peer(self, link: str) -> str:
        """A link must name another site: a link named like this store's own site would give both ends the
        same directional stream (:func:`direction_window`) and the same cutting end."""
        _check_link(link)
        if link == self.site:
            raise ValueError(f"link {link!r} is this store's own site: a key is shared with another site")
        return link

    def _bind_ledger(self) -> None:
        """Tie this store to its usage ledger: the first open writes the line ``ledger:<id>`` into the
        ledger (fsync'ed) and then records ``<id>`` in the store's ``meta`` (``ledger_id``). Every later
        use of the ledger checks that line is there, so a store copied or restored to another place (a
        fresh, empty ``<store>.ledger`` beside it), or one whose ledger was lost, is refused instead of
        silently forgetting what was used. Every range the store already holds in a final state
        (delivered, relayed, consumed) is claimed with the binding line. A crash between the two writes
        leaves an unused line."""
        from ..ledger import LedgerError

        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE name = 'ledger_id'").fetchone()
        if row is not None:
            return
        lid = str(uuid.uuid4())
        with self._lock:
            used = self._con.execute(
                "SELECT root_id, offset_bits, length_bits FROM pieces WHERE state IN ('delivered','relayed','consumed')"
            ).fetchall()
        try:
            # the key this store already gave out (e.g. a migrated schema-1 store, which had no ledger) goes
            # into the ledger with the binding, so an older backup restored here cannot give it out again
            have = self.ledger.claims()
            ranges = [(f"key:{r}", o, o + n) for r, o, n in used
                      if not any(c.resource == f"key:{r}" and c.overlaps(o, o + n) for c in have)]
            self.ledger.claim_many([(f"ledger:{lid}", 0, 1)] + ranges,
                                   purpose=f"ledger bound to {self.site}'s store {self.path.name} (and key used before)")
        except LedgerError:  # no usable ledger here (damaged, unwritable): every use will refuse anyway
            return
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('ledger_id', ?)", (lid,))

    def _ledger_claims(self) -> list:
        """The usage ledger's claims, after checking it is this store's ledger (:meth:`_bind_ledger`)."""
        from ..ledger import LedgerError

        try:
            claims = self.ledger.claims()
        except LedgerError as exc:
            raise KeyReused(f"{self.site}'s usage ledger cannot be read: {exc}") from None
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE name = 'ledger_id'").fetchone()
        if row is not None and not any(c.resource == f"ledger:{row[0]}" for c in claims):
            raise KeyReused(
                f"{self.site}: the usage ledger {self.ledger.path} is not the one this store was made with "
                f"(ledger id {row[0]} missing): was the store copied or restored to another place, or its ledger "
                "lost or replaced? Refused — one-time key must not be used without the ledger that remembers it."
            )
        return claims

    def _migrate_v1(self, cur: sqlite3.Cursor) -> None:
        """Schema 1 → 2 in the open transaction: digest columns, the new states, the ops journal.

        Rule: the material found now is taken as correct; each live piece gets the digest of it
        (roots get none: their original material is not known any more).
        """
        cur.execute("ALTER TABLE roots ADD COLUMN digest BLOB")
        cur.execute("ALTER TABLE pieces RENAME TO pieces_v1")
        for idx in ("pieces_link_state", "pieces_root", "pieces_request"):
            cur.execute(f"DROP INDEX IF EXISTS {idx}")
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                cur.execute(stmt)
        cur.execute(f"INSERT INTO pieces({_PIECE_COLS}) SELECT {_PIECE_COLS} FROM pieces_v1")
        cur.execute("DROP TABLE pieces_v1")
        rows = cur.execute(
            "SELECT key_id, link, root_id, offset_bits, length_bits FROM pieces WHERE state IN ('available','reserved')"
        ).fetchall()
        for kid, link, rid, off, ln in rows:
            mat = self._material(cur, rid, off, ln)
            cur.execute("UPDATE pieces SET digest = ? WHERE key_id = ?",
                        (piece_digest(kid, link, rid, off, ln, mat), kid))
        cur.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
        cur.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('migrated_from_v1_utc', ?)", (_now(),))
        self._log(cur, "-", "migrated", None, f"schema 1 → 2: digests of {len(rows)} live pieces from current material")

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyStore({self.site!r} at {str(self.path)!r})"

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it commits, or none of it.

        Nested use (an operation called from a ``within`` callback) becomes a savepoint of the
        enclosing transaction, so the whole nest commits or rolls back together.
        """
        with self._lock:
            cur = self._con.cursor()
            self._depth += 1
            sp = f"sp{self._depth}"
            try:
                cur.execute("BEGIN IMMEDIATE" if self._depth == 1 else f"SAVEPOINT {sp}")
                try:
                    yield cur
                except BaseException:
                    if self._con.in_transaction:
                        if self._depth == 1:
                            self._con.execute("ROLLBACK")
                        else:
                            self._con.execute(f"ROLLBACK TO {sp}")
                            self._con.execute(f"RELEASE {sp}")
                    raise
                else:
                    self._con.execute("COMMIT" if self._depth == 1 else f"RELEASE {sp}")
            finally:
                self._depth -= 1
                if self._depth == 0 and self._after:
                    after, self._after = self._after, []
                    self._repair(after)

    def _repair(self, actions: list[tuple]) -> None:
        """Commit the repairs found during a transaction that failed: quarantine a piece whose digest
        failed, retire (consume) a range the usage ledger says was used before. Each is re-checked."""
        for act in actions:
            try:
                with self._tx() as cur:
                    if act[0] == "quarantine":
                        row = cur.execute("SELECT root_id, offset_bits, length_bits, digest, state FROM pieces "
                                          "WHERE key_id = ?", (act[1],)).fetchone()
                        if row is None or row[4] not in ("available", "reserved", "pending"):
                            continue
                        if self._digest_ok(cur, act[1], *row[:4]):
                            continue
                        cur.execute("UPDATE pieces SET state = 'quarantined', updated_utc = ? WHERE key_id = ?",
                                    (_now(), act[1]))
                        self._log(cur, act[1], "quarantined", None, "material fails its digest")
                    elif act[0] == "retire":
                        _, link, root_id, a, b, note = act
                        for kid, po, pl in cur.execute(
                            "SELECT key_id, offset_bits, length_bits FROM pieces WHERE root_id = ? AND link = ? "
                            "AND state = 'available' AND offset_bits < ? AND offset_bits + length_bits > ?",
                            (root_id, link, b, a),
                        ).fetchall():
                            lo, hi = max(a, po), min(b, po + pl)
                            seg = Segment(str(uuid.uuid4()), root_id, lo, hi - lo)
                            self._carve(cur, link, seg, "consumed", purpose="other")
                            self._wipe(cur, root_id, lo, hi - lo)
                            self._log(cur, seg.key_id, "consumed", None, note)
            except KeyStoreError:
                continue

    def _log(self, cur: sqlite3.Cursor, key_id: str, state: str, request_id: str | None = None, note: str | None = None):
        cur.execute(
            "INSERT INTO events(utc, key_id, state, request_id, note) VALUES (?, ?, ?, ?, ?)",
            (_now(), key_id, state, request_id, note),
        )

    def _material(self, cur: sqlite3.Cursor, root_id: str, offset_bits: int, length_bits: int) -> bytes:
        row = cur.execute(
            "SELECT substr(material, ?, ?) FROM roots WHERE root_id = ?",
            (offset_bits // 8 + 1, length_bits // 8, root_id),
        ).fetchone()
        if row is None or len(row[0]) != length_bits // 8:
            raise KeyStoreError(f"material of root {root_id} [{offset_bits}, +{length_bits}) is missing")
        return bytes(row[0])

    @staticmethod
    def _piece_link(cur, key_id: str) -> str | None:
        row = cur.execute("SELECT link FROM pieces WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else row[0]

    def _digest_ok(self, cur, key_id: str, root_id: str, off: int, ln: int, digest: bytes | None) -> bool:
        try:
            mat = self._material(cur, root_id, off, ln)
        except KeyStoreError:
            return False
        link = self._piece_link(cur, key_id)
        return (digest is not None and link is not None
                and piece_digest(key_id, link, root_id, off, ln, mat) == bytes(digest))

    def _verified(self, cur, key_id: str, root_id: str, off: int, ln: int, digest: bytes | None) -> bytes:
        """The material of piece ``key_id`` after checking its digest; on a mismatch the piece is
        quarantined (after this transaction) and :class:`KeyCorrupted` is raised."""
        try:
            mat = self._material(cur, root_id, off, ln)
        except KeyStoreError:
            mat = None
        link = self._piece_link(cur, key_id)
        if mat is None or digest is None or link is None \
                or piece_digest(key_id, link, root_id, off, ln, mat) != bytes(digest):
            self._after.append(("quarantine", key_id))
            raise KeyCorrupted(
                f"{self.site}'s store: the material of key {key_id} (root {root_id} bits [{off}, {off + ln})) fails "
                "its digest — the key is quarantined and will never be served; run `satqkd keys verify --store "
                f"{self.path}`",
                key_ids=[key_id],
            )
        return mat

    def _wipe(self, cur: sqlite3.Cursor, root_id: str, offset_bits: int, length_bits: int) -> None:
        cur.execute(
            "UPDATE pieces SET digest = NULL WHERE root_id = ? AND offset_bits = ? AND length_bits = ? "
            "AND state IN ('delivered','relayed','consumed')",
            (root_id, offset_bits, length_bits),
        )
        if not self.wipe:
            return
        rowid = cur.execute("SELECT rowid FROM roots WHERE root_id = ?", (root_id,)).fetchone()[0]
        with self._con.blobopen("roots", "material", rowid) as blob:
            blob.seek(offset_bits // 8)
            blob.write(bytes(length_bits // 8))

    def _carve(
        self,
        cur: sqlite3.Cursor,
        link: str,
        seg: Segment,
        state: str,
        *,
        role: str | None = None,
        master_sae: str | None = None,
        slave_sae: str | None = None,
        kme_id: str | None = None,
        request_id: str | None = None,
        peer_ack: int | None = None,
        purpose: str | None = None,
    ) -> bytes:
        """Split the available piece holding ``seg`` so that ``seg`` becomes its own piece in ``state``.

        The piece's digest is checked first (:meth:`_verified`); the new pieces get their own.
        Returns ``seg``'s material.
        """
        end = seg.offset_bits + seg.length_bits
        row = cur.execute(
            "SELECT key_id, link, offset_bits, length_bits, digest FROM pieces WHERE root_id = ? AND state = 'available' "
            "AND offset_bits <= ? AND offset_bits + length_bits >= ?",
            (seg.root_id, seg.offset_bits, end),
        ).fetchone()
        if row is None or row[1] != link:
            raise KeyUnavailable(
                f"segment {seg.root_id}[{seg.offset_bits}, {end}) is not available on link {link!r}",
                needed_bits=seg.length_bits,
                details=[seg.to_json()],
            )
        pid, _, po, pl, dg = row
        whole = self._verified(cur, pid, seg.root_id, po, pl, dg)
        now = _now()
        cut = lambda off, ln: whole[(off - po) // 8 : (off - po + ln) // 8]  # noqa: E731
        cur.execute("DELETE FROM pieces WHERE key_id = ?", (pid,))
        left = (po, seg.offset_bits - po)
        right = (end, po + pl - end)
        keep_for = right if right[1] > 0 else left
        for off, ln in (left, right):
            if ln <= 0:
                continue
            rid = pid if ((off, ln) == keep_for and pid != seg.key_id) else str(uuid.uuid4())
            cur.execute(
                "INSERT INTO pieces(key_id, link, root_id, offset_bits, length_bits, state, updated_utc, digest) "
                "VALUES (?, ?, ?, ?, ?, 'available', ?, ?)",
                (rid, link, seg.root_id, off, ln, now, piece_digest(rid, link, seg.root_id, off, ln, cut(off, ln))),
            )
        mine = cut(seg.offset_bits, seg.length_bits)
        try:
            cur.execute(
                f"INSERT INTO pieces({_PIECE_COLS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seg.key_id, link, seg.root_id, seg.offset_bits, seg.length_bits, state, role, master_sae,
                 slave_sae, kme_id, request_id, peer_ack, purpose, now,
                 piece_digest(seg.key_id, link, seg.root_id, seg.offset_bits, seg.length_bits, mine)),
            )
        except sqlite3.IntegrityError:
            raise KeyStoreError(f"key id {seg.key_id} already exists in {self.site}'s store") from None
        self._log(cur, seg.key_id, state, request_id, purpose)
        return mine

    def _coalesce(self, cur: sqlite3.Cursor, root_ids: Iterable[str]) -> None:
        """Merge adjacent available pieces of each root (after pieces were returned to the pool)."""
        for root_id in set(root_ids):
            rows = cur.execute(
                "SELECT key_id, offset_bits, length_bits, link, digest FROM pieces WHERE root_id = ? "
                "AND state = 'available' ORDER BY offset_bits",
                (root_id,),
            ).fetchall()
            i = 0
            while i < len(rows):
                kid, off, ln, link, _ = rows[i]
                j = i + 1
                end = off + ln
                while j < len(rows) and rows[j][1] == end:
                    end += rows[j][2]
                    j += 1
                # merge only pieces whose digests hold (a bad one is left alone, to be quarantined on read)
                if j > i + 1 and all(self._digest_ok(cur, r[0], root_id, r[1], r[2], r[4]) for r in rows[i:j]):
                    mat = self._material(cur, root_id, off, end - off)
                    cur.executemany("DELETE FROM pieces WHERE key_id = ?", [(r[0],) for r in rows[i + 1 : j]])
                    cur.execute(
                        "UPDATE pieces SET length_bits = ?, updated_utc = ?, digest = ? WHERE key_id = ?",
                        (end - off, _now(), piece_digest(kid, link, root_id, off, end - off, mat), kid),
                    )
                i = j

    def _available_rows(self, cur: sqlite3.Cursor, link: str, front: bool, min_bits: int = 8):
        order = "r.rowid ASC, p.offset_bits ASC" if front else "r.rowid DESC, p.offset_bits DESC"
        return cur.execute(
            "SELECT p.root_id, p.offset_bits, p.length_bits FROM pieces p JOIN roots r ON r.root_id = p.root_id "
            f"WHERE p.link = ? AND p.state = 'available' AND p.length_bits >= ? ORDER BY {order}",
            (link, min_bits),
        )

    def run_batch(self, calls: Sequence[Callable[[], object]]) -> list[tuple[bool, object]]:
        """Group commit: run several store operations in one transaction (one fsync).

        Each call runs in its own savepoint, so a call that raises is rolled back alone and the
        others still commit. Returns ``[(ok, result_or_exception), ...]``; nothing is durable (and
        no caller should act on its result) before this method returns.
        """
        out: list[tuple[bool, object]] = []
        with self._tx():
            for call in calls:
                try:
                    out.append((True, call()))
                except Exception as exc:  # noqa: BLE001 - handed back to that call's owner
                    out.append((False, exc))
        return out

    # ------------------------------------------------------------------ deposit and inspection
    def deposit(
        self,
        link: str,
        key: bytes | np.ndarray,
        *,
        key_id: str | None = None,
        origin: Origin | None = None,
        pending: bool = False,
        request_id: str | None = None,
        exist_ok: bool = False,
    ) -> str:
        """Deposit a final key shared with site ``link``; returns its (root) key id.

        ``key`` is bytes or a 0/1 bit array (truncated to whole bytes). Use the same ``key_id``
        at both ends of the link (e.g. :func:`key_id_for` of the pass id). With ``pending`` the key
        is deposited *pending* (never served) until :meth:`activate`; ``request_id`` names the
        operation that deposits it. With ``exist_ok`` a repeated deposit of the same id and the same
        material (a resumed operation) returns the id and changes nothing; different material
        under that id is refused.
        """
        self._check_peer(link)
        material = _as_material(key)
        if not material:
            raise ValueError("key must hold at least 8 bits")
        key_id = _check_uuid(key_id, "key_id") if key_id is not None else str(uuid.uuid4())
        origin = origin or Origin()
        now = _now()
        state = "pending" if pending else "available"
        rd = root_digest(material)
        with self._tx() as cur:
            if exist_ok:
                row = cur.execute("SELECT link, length_bits, digest FROM roots WHERE root_id = ?", (key_id,)).fetchone()
                if row is not None:
                    if row[0] == link and row[1] == 8 * len(material) and row[2] is not None and bytes(row[2]) == rd:
                        return key_id
                    raise KeyStoreError(f"key id {key_id} is already in {self.site}'s store with other material")
            try:
                cur.execute(
                    "INSERT INTO roots(root_id, link, length_bits, material, origin_kind, origin_pass, origin_seed, "
                    "epsilon, origin_note, created_utc, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key_id, link, 8 * len(material), material, origin.kind, origin.pass_id, origin.seed,
                     origin.epsilon, origin.note, now, rd),
                )
            except sqlite3.IntegrityError:
                raise KeyStoreError(f"key id {key_id} is already in {self.site}'s store") from None
            cur.execute(
                "INSERT INTO pieces(key_id, link, root_id, offset_bits, length_bits, state, request_id, updated_utc, "
                "digest) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
                (key_id, link, key_id, 8 * len(material), state, request_id, now,
                 piece_digest(key_id, link, key_id, 0, 8 * len(material), material)),
            )
            self._log(cur, key_id, state, request_id, f"deposit {origin.kind}")
        return key_id

    def activate(self, root_id: str) -> int:
        """A *pending* root becomes *available* (its twin is at the other end); idempotent. Returns
        the number of pieces changed (0 if it was already available)."""
        with self._tx() as cur:
            kids = [r[0] for r in cur.execute(
                "SELECT key_id FROM pieces WHERE root_id = ? AND state = 'pending'", (root_id,)).fetchall()]
            for kid in kids:
                cur.execute("UPDATE pieces SET state = 'available', request_id = NULL, updated_utc = ? "
                            "WHERE key_id = ?", (_now(), kid))
                self._log(cur, kid, "available", None, "activated")
        return len(kids)

    def discard_pending(self, root_id: str, *, note: str = "discarded") -> int:
        """Undo a *pending* deposit (it was never served): a root that is wholly pending is deleted;
        pending pieces of a root that is also in use elsewhere become *consumed* (purpose ``other``,
        wiped). Idempotent. Returns the number of pieces changed."""
        with self._tx() as cur:
            rows = cur.execute("SELECT key_id, offset_bits, length_bits FROM pieces WHERE root_id = ? "
                               "AND state = 'pending'", (root_id,)).fetchall()
            total = cur.execute("SELECT COUNT(*) FROM pieces WHERE root_id = ?", (root_id,)).fetchone()[0]
            if rows and len(rows) == total:
                cur.execute("DELETE FROM pieces WHERE root_id = ?", (root_id,))
                cur.execute("DELETE FROM roots WHERE root_id = ?", (root_id,))
                self._log(cur, root_id, "deleted", None, f"pending deposit undone ({note})")
                return len(rows)
            for kid, off, ln in rows:
                cur.execute("UPDATE pieces SET state = 'consumed', purpose = 'other', updated_utc = ? WHERE key_id = ?",
                            (_now(), kid))
                self._wipe(cur, root_id, off, ln)
                self._log(cur, kid, "consumed", None, note)
        return len(rows)

    # ------------------------------------------------------------------ operations journal
    def put_op(self, op_id: str, kind: str, state: str, data: dict | None = None) -> None:
        """Record (or update) a multi-store operation's state in this store's journal (``ops`` table).

        Call it inside another operation's ``within`` to make the record part of that transaction."""
        import json

        with self._tx() as cur:
            cur.execute(
                "INSERT INTO ops(op_id, kind, state, data, updated_utc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(op_id) DO UPDATE SET state = excluded.state, "
                "data = COALESCE(excluded.data, ops.data), updated_utc = excluded.updated_utc",
                (op_id, kind, state, None if data is None else json.dumps(data, sort_keys=True), _now()),
            )
            self._log(cur, op_id, f"op:{state}", None, kind)

    def get_op(self, op_id: str) -> dict | None:
        """``{"op_id", "kind", "state", "data", "updated_utc"}`` of a journaled operation, or ``None``."""
        import json

        with self._lock:
            row = self._con.execute("SELECT op_id, kind, state, data, updated_utc FROM ops WHERE op_id = ?",
                                    (op_id,)).fetchone()
        if row is None:
            return None
        return {"op_id": row[0], "kind": row[1], "state": row[2], "data": json.loads(row[3]) if row[3] else None,
                "updated_utc": row[4]}

    # ------------------------------------------------------------------ usage ledger (one-time key)
    @staticmethod
    def _ledger_ranges(segments: Sequence[Segment]) -> list[tuple[str, int, int]]:
        return [(f"key:{s.root_id}", s.offset_bits, s.offset_bits + s.length_bits) for s in segments]

    def ledger_check(self, link: str, segments: Sequence[Segment], *, purpose: str | None = None) -> None:
        """Refuse (:class:`KeyReused`) segments that overlap a range of the usage ledger claimed by
        another operation than ``purpose``; the overlaps are then retired (consumed) in the store,
        after the current transaction. Records nothing."""
        claims = self._ledger_claims()
        hits = []
        for res, a, b in self._ledger_ranges(segments):
            for c in claims:
                if c.resource == res and c.overlaps(a, b) and not (purpose is not None and c.purpose == purpose):
                    hits.append((res, max(a, c.start), min(b, c.stop), c))
        if hits:
            for res, a, b, _ in hits:
                self._after.append(("retire", link, res.split(":", 1)[1], a, b, "usage ledger: used before"))
            res, a, b, c = hits[0]
            raise KeyReused(
                f"{self.site}: key {res[4:]} bits [{a}, {b}) was already used ({c.purpose or 'no purpose'}, "
                f"{c.time_utc}) according to the usage ledger {self.ledger.path}: refused — was the store restored "
                "from a backup? The range is now marked consumed in the store."
            )

    def ledger_claim(self, segments: Sequence[Segment], *, purpose: str) -> None:
        """Claim the segments in the usage ledger (appended and fsync'ed) before their key is used.

        Idempotent for one operation: a range already claimed with exactly this ``purpose`` is not
        claimed again. Any other overlap raises :class:`KeyReused`."""
        from ..ledger import LedgerError

        have = {(c.resource, c.start, c.stop) for c in self._ledger_claims() if c.purpose == purpose}
        try:
            todo = [r for r in self._ledger_ranges(segments) if r not in have]
            if todo:
                self.ledger.claim_many(todo, purpose=purpose)
        except LedgerError as exc:
            raise KeyReused(f"{self.site}: {exc}") from None

    def pieces(self, link: str | None = None, state: str | None = None, *, limit: int | None = None) -> list[Piece]:
        """Pieces, optionally filtered by link and state, oldest root first."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        q = f"SELECT {', '.join('p.' + c.strip() for c in _PIECE_COLS.split(','))} FROM pieces p " \
            "JOIN roots r ON r.root_id = p.root_id WHERE 1=1"
        args: list = []
        if link is not None:
            q += " AND p.link = ?"
            args.append(link)
        if state is not None:
            q += " AND p.state = ?"
            args.append(state)
        q += " ORDER BY r.rowid, p.offset_bits"
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        with self._lock:
            return [Piece(*row) for row in self._con.execute(q, args).fetchall()]

    def get(self, key_id: str) -> Piece | None:
        with self._lock:
            row = self._con.execute(f"SELECT {_PIECE_COLS} FROM pieces WHERE key_id = ?", (key_id,)).fetchone()
        return Piece(*row) if row else None

    def roots(self, link: str | None = None) -> list[dict]:
        """Deposited root keys (without material): id, link, length, origin."""
        q = "SELECT root_id, link, length_bits, origin_kind, origin_pass, origin_seed, epsilon, origin_note, created_utc FROM roots"
        args: tuple = ()
        if link is not None:
            q += " WHERE link = ?"
            args = (link,)
        cols = ("root_id", "link", "length_bits", "origin_kind", "origin_pass", "origin_seed", "epsilon", "note", "created_utc")
        with self._lock:
            return [dict(zip(cols, r)) for r in self._con.execute(q + " ORDER BY rowid", args).fetchall()]

    def links(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._con.execute("SELECT DISTINCT link FROM roots ORDER BY link").fetchall()]

    def available_bits(self, link: str) -> int:
        with self._lock:
            row = self._con.execute(
                "SELECT COALESCE(SUM(length_bits), 0) FROM pieces WHERE link = ? AND state = 'available'", (link,)
            ).fetchone()
        return int(row[0])

    def count_cuttable(self, link: str, size_bits: int) -> int:
        """How many keys of ``size_bits`` could be cut (each from one contiguous available range)."""
        if size_bits <= 0 or size_bits % 8:
            raise ValueError(f"size_bits must be a positive multiple of 8, got {size_bits}")
        with self._lock:
            row = self._con.execute(
                "SELECT COALESCE(SUM(length_bits / ?), 0) FROM pieces WHERE link = ? AND state = 'available'",
                (size_bits, link),
            ).fetchone()
        return int(row[0])

    def stats(self) -> dict:
        """Counts and bits by link and state, plus the ETSI bookkeeping counters.

        ``issued_unconfirmed``: keys this site's KME issued (peer KME agreed) whose response to the
        master SAE was not confirmed sent — never re-issued. ``awaiting_peer``: keys cut but not
        yet acknowledged by the peer KME (released back to the pool by the KME's recovery).
        """
        with self._lock:
            rows = self._con.execute(
                "SELECT link, state, COUNT(*), SUM(length_bits) FROM pieces GROUP BY link, state ORDER BY link, state"
            ).fetchall()
            unconf = self._con.execute(
                "SELECT COUNT(*) FROM pieces WHERE role='master' AND state='reserved' AND peer_ack=1"
            ).fetchone()[0]
            waiting = self._con.execute(
                "SELECT COUNT(*) FROM pieces WHERE role='master' AND state='reserved' AND peer_ack=0"
            ).fetchone()[0]
            nroots = self._con.execute("SELECT link, COUNT(*), SUM(length_bits) FROM roots GROUP BY link").fetchall()
        links: dict[str, dict] = defaultdict(dict)
        for link, state, n, bits in rows:
            links[link][state] = {"count": int(n), "bits": int(bits)}
        for link, n, bits in nroots:
            links[link]["deposited"] = {"count": int(n), "bits": int(bits)}
        return {
            "site": self.site,
            "path": str(self.path),
            "schema_version": self.schema_version,
            "links": dict(links),
            "issued_unconfirmed": int(unconf),
            "awaiting_peer": int(waiting),
        }

    def check_invariants(self) -> list[str]:
        """Problems found (empty list = consistent): the pieces of each root must tile it exactly."""
        problems = []
        with self._lock:
            roots = dict(self._con.execute("SELECT root_id, length_bits FROM roots").fetchall())
            rows = self._con.execute(
                "SELECT root_id, offset_bits, length_bits, key_id, state FROM pieces ORDER BY root_id, offset_bits"
            ).fetchall()
        by_root: dict[str, list] = defaultdict(list)
        for r in rows:
            by_root[r[0]].append(r)
        for root_id, length in roots.items():
            pos = 0
            for _, off, ln, kid, state in by_root.pop(root_id, []):
                if off != pos:
                    problems.append(f"root {root_id}: {'gap' if off > pos else 'overlap'} at bit {pos} (piece {kid})")
                pos = max(pos, off + ln)
                if state not in STATES:
                    problems.append(f"piece {kid}: unknown state {state!r}")
            if pos != length:
                problems.append(f"root {root_id}: pieces cover {pos} of {length} bits")
        for root_id in by_root:
            problems.append(f"pieces of unknown root {root_id}")
        return problems

    # ------------------------------------------------------------------ ETSI 014: master side
    def reserve_new(
        self,
        link: str,
        size_bits: int,
        number: int,
        *,
        master_sae: str,
        slave_sae: str,
        kme_id: str,
        request_id: str,
        front: bool | None = None,
    ) -> list[tuple[Segment, bytes]]:
        """Master KME: cut ``number`` keys of ``size_bits`` (each contiguous) and reserve them, in one transaction.

        The pieces are ``reserved`` with ``role='master'`` and ``peer_ack=0`` (the peer KME does
        not know them yet). Raises :class:`KeyUnavailable` (nothing changed) if the pool cannot
        serve all of them.
        """
        self._check_peer(link)
        if size_bits <= 0 or size_bits % 8:
            raise ValueError(f"size_bits must be a positive multiple of 8, got {size_bits}")
        if number < 1:
            raise ValueError(f"number must be ≥ 1, got {number}")
        front = cuts_from_front(self.site, link) if front is None else front
        with self._tx() as cur:
            plan: list[tuple[str, int]] = []
            for root_id, off, ln in self._available_rows(cur, link, front, size_bits):
                k = min(number - len(plan), ln // size_bits)
                for i in range(k):
                    o = off + i * size_bits if front else off + ln - (i + 1) * size_bits
                    plan.append((root_id, o))
                if len(plan) == number:
                    break
            if len(plan) < number:
                have = len(plan)
                raise KeyUnavailable(
                    f"link {link!r} can serve {have} keys of {size_bits} bits, {number} requested",
                    needed_bits=number * size_bits,
                    available_bits=have * size_bits,
                )
            out = []
            for root_id, off in plan:
                seg = Segment(str(uuid.uuid4()), root_id, off, size_bits)
                out.append((seg, self._carve(cur, link, seg, "reserved", role="master", master_sae=master_sae,
                                             slave_sae=slave_sae, kme_id=kme_id, request_id=request_id, peer_ack=0,
                                             purpose="etsi014")))
        return out

    def confirm_peer(self, key_ids: Sequence[str]) -> None:
        """Master KME: the peer KME has recorded these keys (``peer_ack = 1``)."""
        with self._tx() as cur:
            for kid in key_ids:
                n = cur.execute(
                    "UPDATE pieces SET peer_ack = 1, updated_utc = ? WHERE key_id = ? AND role = 'master' "
                    "AND state = 'reserved'",
                    (_now(), kid),
                ).rowcount
                if n != 1:
                    raise KeyStoreError(f"key {kid} is not a reserved master key")
                self._log(cur, kid, "reserved", None, "peer ack")

    def mark_delivered(self, key_ids: Sequence[str]) -> None:
        """Master KME: the response carrying these keys was written to the SAE's connection."""
        with self._tx() as cur:
            for kid in key_ids:
                row = cur.execute(
                    "SELECT root_id, offset_bits, length_bits FROM pieces WHERE key_id = ? AND state = 'reserved' "
                    "AND role = 'master' AND peer_ack = 1",
                    (kid,),
                ).fetchone()
                if row is None:
                    raise KeyStoreError(f"key {kid} is not an acknowledged reserved master key")
                cur.execute("UPDATE pieces SET state = 'delivered', updated_utc = ? WHERE key_id = ?", (_now(), kid))
                self._wipe(cur, *row)
                self._log(cur, kid, "delivered", None, "response sent")

    def pending_peer(self) -> dict[str, dict]:
        """Master KME: requests cut but not acknowledged by the peer: ``{request_id: {"link", "key_ids"}}``."""
        with self._lock:
            rows = self._con.execute(
                "SELECT request_id, link, key_id FROM pieces WHERE role = 'master' AND state = 'reserved' "
                "AND peer_ack = 0 ORDER BY request_id"
            ).fetchall()
        out: dict[str, dict] = {}
        for rid, link, kid in rows:
            out.setdefault(rid, {"link": link, "key_ids": []})["key_ids"].append(kid)
        return out

    # ------------------------------------------------------------------ ETSI 014: slave side
    def reserve_segments(
        self,
        link: str,
        segments: Sequence[Segment],
        *,
        master_sae: str,
        slave_sae: str,
        kme_id: str,
        request_id: str,
    ) -> bool:
        """Slave KME: carve exactly the segments the master KME cut, reserved for ``slave_sae``, in one transaction.

        Idempotent for a repeated ``request_id`` (returns False if already recorded). Refuses
        (:class:`KeyUnavailable`, nothing changed) a request id that was released before, or a
        segment that is not available here.
        """
        self._check_peer(link)
        if not segments:
            raise ValueError("segments must not be empty")
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM tombstones WHERE request_id = ?", (request_id,)).fetchone():
                raise KeyUnavailable(f"request {request_id} was released before; it cannot be reserved again")
            have = cur.execute(
                "SELECT key_id, root_id, offset_bits, length_bits FROM pieces WHERE request_id = ? AND role = 'slave'",
                (request_id,),
            ).fetchall()
            if have:
                want = {(s.key_id, s.root_id, s.offset_bits, s.length_bits) for s in segments}
                if set(map(tuple, have)) != want:
                    raise KeyStoreError(f"request {request_id} was recorded with other segments")
                return False
            for seg in segments:
                self._carve(cur, link, seg, "reserved", role="slave", master_sae=master_sae, slave_sae=slave_sae,
                            kme_id=kme_id, request_id=request_id, purpose="etsi014")
        return True

    def deliver(self, key_ids: Sequence[str], *, master_sae: str, slave_sae: str) -> list[tuple[str, bytes]]:
        """Slave KME: hand the keys to ``slave_sae`` once (reserved → delivered), all or nothing.

        Raises :class:`NotEntitled` if a key was issued to another slave SAE, :class:`KeyNotFound`
        if a key is unknown, already delivered, or from another master SAE.
        """
        if len(set(key_ids)) != len(key_ids):
            raise KeyNotFound("a key id is repeated in the request")
        out = []
        with self._tx() as cur:
            rows = []
            for kid in key_ids:
                row = cur.execute(
                    "SELECT root_id, offset_bits, length_bits, master_sae, slave_sae, digest FROM pieces "
                    "WHERE key_id = ? AND role = 'slave' AND state = 'reserved'",
                    (kid,),
                ).fetchone()
                if row is None or row[3] != master_sae:
                    raise KeyNotFound(f"key {kid} is not held for master SAE {master_sae}")
                if row[4] != slave_sae:
                    raise NotEntitled(f"key {kid} was issued to another slave SAE")
                rows.append((kid, row))
            for kid, (root_id, off, ln, _, _, dg) in rows:
                out.append((kid, self._verified(cur, kid, root_id, off, ln, dg)))
                cur.execute("UPDATE pieces SET state = 'delivered', updated_utc = ? WHERE key_id = ?", (_now(), kid))
                self._wipe(cur, root_id, off, ln)
                self._log(cur, kid, "delivered", None, f"to {slave_sae}")
        return out

    # ------------------------------------------------------------------ both sides
    def release(
        self,
        key_ids: Sequence[str],
        *,
        request_id: str | None = None,
        tombstone: bool = False,
        role: str | None = None,
        kme_id: str | None = None,
    ) -> dict:
        """Return reserved (never delivered) pieces to the pool, in one transaction.

        Returns ``{"released": [...], "delivered": [...], "unknown": [...]}``; a piece whose
        ``role``/``kme_id``/``request_id`` do not match the given filters counts as unknown and is
        left alone. With ``tombstone`` the request id is remembered so that a late reservation
        for it is refused.
        """
        res: dict[str, list[str]] = {"released": [], "delivered": [], "unknown": []}
        with self._tx() as cur:
            if tombstone and request_id:
                cur.execute("INSERT OR IGNORE INTO tombstones(request_id, utc) VALUES (?, ?)", (request_id, _now()))
            roots = []
            for kid in key_ids:
                row = cur.execute(
                    "SELECT state, root_id, role, kme_id, request_id FROM pieces WHERE key_id = ?", (kid,)
                ).fetchone()
                if row is None or (role is not None and row[2] != role) or (kme_id is not None and row[3] != kme_id) \
                        or (request_id is not None and row[0] == "reserved" and row[4] != request_id):
                    res["unknown"].append(kid)
                elif row[0] != "reserved":
                    res["delivered"].append(kid)
                else:
                    cur.execute(
                        "UPDATE pieces SET state = 'available', role = NULL, master_sae = NULL, slave_sae = NULL, "
                        "kme_id = NULL, request_id = NULL, peer_ack = NULL, purpose = NULL, updated_utc = ? "
                        "WHERE key_id = ?",
                        (_now(), kid),
                    )
                    self._log(cur, kid, "available", request_id, "released")
                    res["released"].append(kid)
                    roots.append(row[1])
            self._coalesce(cur, roots)
        return res

    # ------------------------------------------------------------------ OTP, relay, authentication
    def take(
        self,
        link: str,
        nbits: int,
        *,
        state: str = "consumed",
        purpose: str = "otp",
        request_id: str | None = None,
        front: bool | None = None,
        direction: bool = False,
        within: Callable[[list[Segment], bytes], None] | None = None,
    ) -> tuple[list[Segment], bytes]:
        """Cut ``nbits`` from the link's pool (possibly several ranges) into ``state``, in one transaction.

        ``within(segments, material)`` runs inside the transaction, before commit: if it raises,
        nothing is taken. Raises :class:`KeyUnavailable` if the pool holds fewer than ``nbits``.
        With ``direction`` only this site's directional stream of each root is cut
        (:func:`direction_window`: what a one-time-pad sender may use without agreeing with the peer).
        """
        self._check_peer(link)
        if state not in ("consumed", "relayed"):
            raise ValueError(f"state must be 'consumed' or 'relayed', got {state!r}")
        if purpose not in _PURPOSES:
            raise ValueError(f"purpose must be one of {_PURPOSES}, got {purpose!r}")
        if nbits <= 0 or nbits % 8:
            raise ValueError(f"nbits must be a positive multiple of 8, got {nbits}")
        front = cuts_from_front(self.site, link) if front is None else front
        with self._tx() as cur:
            plan = []
            need = nbits
            for root_id, off, ln in (self._directional_rows(cur, link, front) if direction
                                     else self._available_rows(cur, link, front)):
                t = min(need, ln)
                plan.append((root_id, off if front else off + ln - t, t))
                need -= t
                if need == 0:
                    break
            if need:
                avail = nbits - need
                where = f" in {self.site}'s sending direction" if direction else ""
                raise KeyUnavailable(
                    f"link {link!r} holds {avail} available bits{where}, {nbits} needed",
                    needed_bits=nbits,
                    available_bits=avail,
                )
            segs = [Segment(str(uuid.uuid4()), r, o, t) for r, o, t in plan]
            material = self._take_segments(cur, link, segs, state, purpose, request_id)
            if within is not None:
                within(segs, material)
        return segs, material

    def take_segments(
        self,
        link: str,
        segments: Sequence[Segment],
        *,
        state: str = "consumed",
        purpose: str = "otp",
        request_id: str | None = None,
        within: Callable[[list[Segment], bytes], None] | None = None,
    ) -> bytes:
        """Carve the named segments (cut by the other end) into ``state``, in one transaction.

        Returns their concatenated material. ``within`` as in :meth:`take`. Raises
        :class:`KeyUnavailable` (nothing changed) if any segment is not available here.
        """
        self._check_peer(link)
        if state not in ("consumed", "relayed"):
            raise ValueError(f"state must be 'consumed' or 'relayed', got {state!r}")
        if not segments:
            raise ValueError("segments must not be empty")
        with self._tx() as cur:
            material = self._take_segments(cur, link, list(segments), state, purpose, request_id)
            if within is not None:
                within(list(segments), material)
        return material

    def peek_segments(self, link: str, segments: Sequence[Segment]) -> bytes:
        """Material of available segments without changing anything (e.g. to check a MAC before consuming).

        The digest of each piece read is checked (:class:`KeyCorrupted`, and the piece quarantined)."""
        with self._tx() as cur:
            parts = []
            for seg in segments:
                row = cur.execute(
                    "SELECT key_id, offset_bits, length_bits, digest FROM pieces WHERE root_id = ? AND link = ? "
                    "AND state = 'available' AND offset_bits <= ? AND offset_bits + length_bits >= ?",
                    (seg.root_id, link, seg.offset_bits, seg.offset_bits + seg.length_bits),
                ).fetchone()
                if row is None:
                    raise KeyUnavailable(f"segment {seg.root_id}[{seg.offset_bits}, +{seg.length_bits}) is not available")
                kid, po, pl, dg = row
                whole = self._verified(cur, kid, seg.root_id, po, pl, dg)
                a = (seg.offset_bits - po) // 8
                parts.append(whole[a : a + seg.length_bits // 8])
        return b"".join(parts)

    def _take_segments(self, cur, link, segs, state, purpose, request_id) -> bytes:
        parts = []
        for seg in segs:
            parts.append(self._carve(cur, link, seg, state, purpose=purpose, request_id=request_id))
        for seg in segs:
            self._wipe(cur, seg.root_id, seg.offset_bits, seg.length_bits)
        return b"".join(parts)

    def _directional_rows(self, cur: sqlite3.Cursor, link: str, front: bool) -> list[tuple[str, int, int]]:
        """Available ranges of this site's directional stream with ``link`` (:func:`direction_window`)."""
        order = "r.rowid ASC, p.offset_bits ASC" if front else "r.rowid DESC, p.offset_bits DESC"
        out = []
        for root_id, off, ln, rbits in cur.execute(
            "SELECT p.root_id, p.offset_bits, p.length_bits, r.length_bits FROM pieces p JOIN roots r "
            f"ON r.root_id = p.root_id WHERE p.link = ? AND p.state = 'available' ORDER BY {order}",
            (link,),
        ).fetchall():
            lo, hi = direction_window(self.site, link, rbits)
            a, b = max(off, lo), min(off + ln, hi)
            if b - a >= 8:
                out.append((root_id, a, b - a))
        return out

    def directional_bits(self, link: str) -> int:
        """Available bits of this site's directional stream with ``link`` (what OTP toward it can use)."""
        with self._lock:
            return sum(ln for _, _, ln in self._directional_rows(self._con.cursor(), link, True))

    def verify(self) -> dict:
        """Check the whole store: SQLite's integrity check, the tiling invariants, and the digest of every
        piece that holds material. Pieces that fail are quarantined. Returns a report (``ok`` if clean)."""
        with self._lock:
            integrity = [r[0] for r in self._con.execute("PRAGMA integrity_check").fetchall()]
            rows = self._con.execute(
                "SELECT key_id, root_id, offset_bits, length_bits, digest, state FROM pieces "
                "WHERE state IN ('available','reserved','pending')"
            ).fetchall()
            cur = self._con.cursor()
            bad = [r[0] for r in rows if not self._digest_ok(cur, *r[:5])]
        if bad:
            self._repair([("quarantine", kid) for kid in bad])
        quarantined = [p.key_id for p in self.pieces(state="quarantined")]
        problems = self.check_invariants()
        try:
            self._ledger_claims()
            ledger = "ok"
        except KeyReused as exc:
            ledger = str(exc)
        return {
            "site": self.site,
            "path": str(self.path),
            "pieces_checked": len(rows),
            "newly_quarantined": bad,
            "quarantined": quarantined,
            "invariant_problems": problems,
            "integrity_check": "; ".join(integrity),
            "ledger": ledger,
            "ok": not quarantined and not problems and integrity == ["ok"] and ledger == "ok",
        }


def open_store(path: str | Path, site: str | None = None) -> KeyStore:
    """Open (or, with ``site``, create) a key store."""
    return KeyStore(path, site)


def stats(path: str | Path) -> dict:
    """Stats of the store at ``path`` (see :meth:`KeyStore.stats`)."""
    with KeyStore(path) as st:
        return st.stats()


def ls(path: str | Path, link: str | None = None, state: str | None = None, limit: int | None = None) -> list[dict]:
    """Pieces of the store at ``path`` as plain dicts (for ``satqkd keys ls``)."""
    with KeyStore(path) as st:
        return [asdict(p) for p in st.pieces(link, state, limit=limit)]
