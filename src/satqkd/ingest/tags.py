"""Receiver time tags as read from a file: one channel number and one time (ps) per tag."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TimeTags"]


@dataclass(frozen=True)
class TimeTags:
    """Tags in time order: ``channel`` (int16, the instrument's input number) and ``time_ps`` (int64).

    ``meta`` holds what the reader learnt about the file (format, record type, resolution, overflows).
    """

    channel: np.ndarray
    time_ps: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.time_ps.size)

    def channels_present(self) -> tuple[int, ...]:
        return tuple(int(c) for c in np.flatnonzero(np.bincount(self.channel.astype(np.int64) + 1)) - 1) if self.n else ()

    def __repr__(self) -> str:
        return f"TimeTags({self.n:,} tags on channels {self.channels_present()}, {self.meta.get('format', '?')})"
