"""Fault injection for crash tests: die like ``kill -9`` at a named point of a multi-store operation.

A test runs the operation in a subprocess with ``SATQKD_CRASH_AT=<point>`` in its environment; when
the code reaches :func:`crash_point` with that name the process sends itself ``SIGKILL`` (no
``finally`` blocks, no atexit, no flush — the same as a power cut for everything not yet
``fsync``'ed). ``<point>@<k>`` crashes at the k-th time that point is reached. Without the variable
this is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_ENV", "crash_point"]

#: Environment variable naming the crash point (tests only).
CRASH_ENV = "SATQKD_CRASH_AT"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``$SATQKD_CRASH_AT`` is ``name`` (or ``name@k`` and this is the k-th hit)."""
    want = os.environ.get(CRASH_ENV)
    if not want:
        return
    point, _, k = want.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(k or 1):
        os.kill(os.getpid(), signal.SIGKILL)
