"""Channel map: which instrument input is which detector (H, V, D, A) and which carries the beacon.

Written ``"H=0,V=1,D=2,A=3,beacon=4"`` on the command line (``sync`` is accepted for ``beacon``) or as
a mapping ``{"H": 0, "V": 1, "D": 2, "A": 3, "beacon": 4}``. The four detectors are required, the
beacon is optional (without one, :mod:`satqkd.quantum.correlation_sync` recovers the clock from the
detections). Channels of the file not named in the map are dropped (counted in the ingest report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..records import DETECTOR_NAMES
from .errors import IngestError
from .tags import TimeTags

__all__ = ["ChannelMap", "parse_channel_map", "split_channels"]

_BEACON = 4
_DROP = 255


@dataclass(frozen=True)
class ChannelMap:
    """Instrument channel of each detector (``detectors[j]`` for ``DETECTOR_NAMES[j]``) and of the beacon."""

    detectors: tuple[int, int, int, int]
    beacon: int | None = None

    def as_dict(self) -> dict[str, int]:
        d = dict(zip(DETECTOR_NAMES, self.detectors))
        if self.beacon is not None:
            d["beacon"] = self.beacon
        return d

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.as_dict().items())


def parse_channel_map(spec: str | dict) -> ChannelMap:
    """``"H=0,V=1,D=2,A=3[,beacon=4]"`` or a mapping → :class:`ChannelMap` (IngestError if malformed)."""
    if isinstance(spec, str):
        items = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise IngestError(f"channel map entry {part!r} is not NAME=CHANNEL (e.g. H=0,V=1,D=2,A=3,beacon=4)")
            k, v = (s.strip() for s in part.split("=", 1))
            if k in items:
                raise IngestError(f"channel map names {k} twice")
            items[k] = v
    elif isinstance(spec, dict):
        items = dict(spec)
    else:
        raise IngestError("channel map must be a string like H=0,V=1,D=2,A=3,beacon=4 or a mapping")
    out: dict[str, int] = {}
    for k, v in items.items():
        key = "beacon" if str(k).lower() in ("beacon", "sync") else str(k).upper()
        if key not in (*DETECTOR_NAMES, "beacon"):
            raise IngestError(f"channel map: unknown name {k!r}; allowed H, V, D, A, beacon (or sync)")
        try:
            c = int(v)
        except (TypeError, ValueError):
            raise IngestError(f"channel map: {k}={v!r} is not an integer channel") from None
        if not 0 <= c < 4096:
            raise IngestError(f"channel map: {k}={c} must lie in 0..4095")
        out[key] = c
    missing = [d for d in DETECTOR_NAMES if d not in out]
    if missing:
        raise IngestError(f"channel map lacks detector(s) {', '.join(missing)}: give H, V, D and A")
    chans = list(out.values())
    if len(set(chans)) != len(chans):
        raise IngestError(f"channel map gives one channel to two names: {spec}")
    return ChannelMap(tuple(out[d] for d in DETECTOR_NAMES), out.get("beacon"))


@numba.njit(cache=True, nogil=True)
def _split_kernel(channel, time_ps, lut, origin, bob_t, bob_d, beacon_t, seen):  # pragma: no cover - compiled
    nb = 0
    nc = 0
    for i in range(channel.size):
        c = channel[i]
        seen[c] = True
        code = lut[c]
        if code < 4:
            bob_t[nb] = time_ps[i] + origin
            bob_d[nb] = code
            nb += 1
        elif code == 4:
            beacon_t[nc] = time_ps[i] + origin
            nc += 1
    return nb, nc


def split_channels(tags: TimeTags, cmap: ChannelMap, source: str = "the file", time_origin_ps: int = 0):
    """``(bob_time_ps, bob_detector, beacon_time_ps, dropped)`` from the tags by the channel map, with
    ``time_origin_ps`` added to every time (one compiled pass).

    Raises :class:`IngestError` when the map names a channel with no tag in the file.
    """
    ch = np.ascontiguousarray(tags.channel, dtype=np.int16)
    if ch.size and ch.min() < 0:
        raise IngestError(f"{source}: negative channel numbers")
    size = max(int(ch.max()) + 1 if ch.size else 0, *[c + 1 for c in cmap.detectors], (cmap.beacon or 0) + 1)
    lut = np.full(size, _DROP, dtype=np.uint8)
    for j, c in enumerate(cmap.detectors):
        lut[c] = j
    if cmap.beacon is not None:
        lut[cmap.beacon] = _BEACON
    bob_t = np.empty(ch.size, np.int64)
    bob_d = np.empty(ch.size, np.uint8)
    beacon_t = np.empty(ch.size if cmap.beacon is not None else 0, np.int64)
    seen = np.zeros(size, np.bool_)
    nb, nc = _split_kernel(ch, np.ascontiguousarray(tags.time_ps, dtype=np.int64), lut, np.int64(time_origin_ps),
                           bob_t, bob_d, beacon_t, seen)
    present = set(np.flatnonzero(seen).tolist())
    absent = [f"{k}={v}" for k, v in cmap.as_dict().items() if v not in present]
    if absent:
        raise IngestError(
            f"channel map names channel(s) absent from {source}: {', '.join(absent)} "
            f"(channels present: {', '.join(map(str, sorted(present))) or 'none'})"
        )
    return bob_t[:nb], bob_d[:nb], beacon_t[:nc].copy(), int(ch.size - nb - nc)
