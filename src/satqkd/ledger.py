"""A per-site, append-only ledger of consumed ranges of one-time key material.

One-time pads and Wegman–Carter hash keys are secure only if no bit is used twice (Wegman & Carter,
J. Comput. Syst. Sci. 22, 265 (1981); the pad of a tag, Shannon's one-time pad). The object that
holds the bits (a pool file, a key store) is not enough memory for that: an operator can restore a
backup of it, or copy it to a second pair of machines, and its own offset then says the bits are
fresh. This ledger is a second, independent memory kept by the site: every range of a resource is
*claimed* here — written and ``fsync``'ed — before a single bit of it is used, and a range that
overlaps one already claimed is refused, whatever the resource itself says.

The file is plain text, one claim per line, each a JSON object ``{"resource", "start", "stop",
"purpose", "time_utc", "sha256"}`` where ``sha256`` is the digest of the line's other fields (it
detects a damaged line, not a forger: the ledger lives on the site's own disk). ``[start, stop)``
is a half-open range of bit positions in the resource's own numbering (e.g. a pool's absolute bit
offset since it was made). Claims are serialised between processes by an exclusive ``flock`` on the
ledger file, so two processes of the same site cannot both claim one range.

Crash safety: a claim returns only after its line is on disk. A crash while the line is being
written leaves a last line without its newline; that claim never returned, so none of its bits was
used, and the line is ignored (and cut off by the next claim). Any other damaged line makes
the whole ledger unreadable (:class:`LedgerError`): fail closed, never reuse.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import operator
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

__all__ = ["Claim", "LedgerConflict", "LedgerError", "UsageLedger", "fsync_dir"]


class LedgerError(ValueError):
    """The ledger file cannot be created, read or trusted (missing directory, damaged line)."""


class LedgerConflict(LedgerError):
    """A range was refused because part of it was claimed before: those bits may have been used."""


@dataclass(frozen=True)
class Claim:
    """One consumed range ``[start, stop)`` of ``resource``."""

    resource: str
    start: int
    stop: int
    purpose: str
    time_utc: str

    def overlaps(self, start: int, stop: int) -> bool:
        return self.start < stop and start < self.stop


def _digest(fields: dict) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class UsageLedger:
    """The consumed ranges of one site, in the file ``path`` (created ``0600`` on first use).

    >>> import tempfile, pathlib
    >>> led = UsageLedger(pathlib.Path(tempfile.mkdtemp()) / "site.ledger")
    >>> led.claim("pool:ab12", 0, 639, purpose="party run")
    >>> led.claim("pool:ab12", 600, 700)
    Traceback (most recent call last):
    ...
    satqkd.ledger.LedgerConflict: pool:ab12 bits [600, 700) overlap [0, 639) claimed at ... (party run): refused, those bits may have been used
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"UsageLedger({str(self.path)!r})"

    # -- reading -------------------------------------------------------------------------------

    def claims(self, resource: str | None = None) -> list[Claim]:
        """Every complete claim (of ``resource`` only, when given), in the order they were made."""
        if not self.path.exists():
            return []
        with self._locked(create=False) as fh:
            return [c for c in self._read(fh) if resource is None or c.resource == resource]

    def used_bits(self, resource: str) -> int:
        """How many distinct bit positions of ``resource`` were claimed."""
        spans = sorted((c.start, c.stop) for c in self.claims(resource))
        total, end = 0, None
        for a, b in spans:
            if end is None or a >= end:
                total += b - a
                end = b
            elif b > end:
                total += b - end
                end = b
        return total

    def high_water(self, resource: str) -> int:
        """The end of the highest range of ``resource`` ever claimed (0 if none): a resource
        consumed from the front (a pool file) whose own position is below this was restored
        from a backup or copied, and its next bits may have been used."""
        return max((c.stop for c in self.claims(resource)), default=0)

    def check(self, resource: str, start: int, stop: int) -> None:
        """Raise :class:`LedgerConflict` if ``[start, stop)`` overlaps a claim; record nothing."""
        _check_range(start, stop)
        if not self.path.exists():
            return
        with self._locked(create=False) as fh:
            self._refuse_overlap(self._read(fh), resource, start, stop)

    # -- claiming ------------------------------------------------------------------------------

    def claim(self, resource: str, start: int, stop: int, *, purpose: str = "") -> None:
        """Claim ``[start, stop)`` of ``resource``: refuse an overlap, else append and ``fsync``.

        Call this *before* any bit of the range is used; when it returns the claim is durable.
        """
        self.claim_many([(resource, start, stop)], purpose=purpose)

    def claim_many(self, ranges: list[tuple[str, int, int]], *, purpose: str = "") -> None:
        """Claim several ranges at once: all of them or (on any conflict) none."""
        for _, a, b in ranges:
            _check_range(a, b)
        for i, (r, a, b) in enumerate(ranges):
            for r2, a2, b2 in ranges[i + 1 :]:
                if r == r2 and a < b2 and a2 < b:
                    raise LedgerConflict(f"{r} bits [{a}, {b}) and [{a2}, {b2}) overlap within one claim")
        with self._locked(create=True) as fh:
            existing = self._read(fh)
            for r, a, b in ranges:
                self._refuse_overlap(existing, r, a, b)
            fh.seek(0)
            data = fh.read()
            if data and not data.endswith(b"\n"):  # a torn line from a crash (a claim that never returned)
                os.ftruncate(fh.fileno(), data.rfind(b"\n") + 1)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            fh.seek(0, os.SEEK_END)
            for r, a, b in ranges:
                fields = {"resource": r, "start": int(a), "stop": int(b), "purpose": purpose, "time_utc": now}
                fields["sha256"] = _digest(fields)
                fh.write((json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _refuse_overlap(existing: list[Claim], resource: str, start: int, stop: int) -> None:
        for c in existing:
            if c.resource == resource and c.overlaps(start, stop):
                raise LedgerConflict(
                    f"{resource} bits [{start}, {stop}) overlap [{c.start}, {c.stop}) claimed at {c.time_utc}"
                    f"{f' ({c.purpose})' if c.purpose else ''}: refused, those bits may have been used"
                )

    def _read(self, fh) -> list[Claim]:
        fh.seek(0)
        data = fh.read()
        lines = data.split(b"\n")
        complete, torn = lines[:-1], lines[-1]  # a last piece without "\n" is a claim that never returned
        del torn
        out: list[Claim] = []
        for no, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                fields = {k: rec[k] for k in ("resource", "start", "stop", "purpose", "time_utc")}
                ok = rec["sha256"] == _digest(fields)
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise LedgerError(f"{self.path}: line {no} is damaged; the ledger cannot be trusted (refusing all use)")
            out.append(Claim(**fields))
        return out

    @contextmanager
    def _locked(self, *, create: bool) -> Iterator:
        if create and not self.path.parent.is_dir():
            raise LedgerError(f"cannot create the ledger {self.path}: directory {self.path.parent} does not exist")
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        new = create and not self.path.exists()
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            raise LedgerError(f"no ledger at {self.path}") from None
        except OSError as e:
            raise LedgerError(f"cannot open the ledger {self.path}: {e.strerror}") from None
        with os.fdopen(fd, "r+b", buffering=0) as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                if new:
                    os.fchmod(fh.fileno(), 0o600)
                    fsync_dir(self.path.parent)
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_range(start: int, stop: int) -> None:
    try:
        start, stop = operator.index(start), operator.index(stop)
    except TypeError:
        raise LedgerError(f"a claim's bounds must be integers, got [{start!r}, {stop!r})") from None
    if start < 0 or stop <= start:
        raise LedgerError(f"a claim needs 0 <= start < stop, got [{start}, {stop})")


def fsync_dir(d: Path) -> None:
    """``fsync`` a directory, so that a file created or renamed in it survives a crash (best effort)."""
    try:
        dfd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
