"""The KME demo's key source: the trusted relay on two simulated passes fills the stores the KMEs serve.

:mod:`satqkd.keys.kme` serves keys from stores and knows no job; this module wires the relay job
(:func:`satqkd.jobs.relay.run_relay`) into its demo: :func:`kme_demo_fill` makes the ``fill`` that
:func:`satqkd.keys.kme.start_demo` calls, and :func:`run_demo` is ``satqkd kme demo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import MissionConfig
from ..keys.relay import run_standin_relay
from ..keys.store import KeyStore
from .relay import RELAY_PRESET, RelayExists, run_relay, write_relay_outputs

__all__ = ["KEY_SOURCES", "kme_demo_fill", "run_demo"]

#: Where the demo's keys come from: the relay on simulated passes, or uniform random stand-in keys.
KEY_SOURCES = ("relay", "standin")


@dataclass(frozen=True)
class _ExistingRelay:
    relay_key_id: str
    length_bits: int
    key_source: str = "relay run (already in the stores, reused)"


def kme_demo_fill(
    *,
    seed: int = 7,
    preset: str = RELAY_PRESET,
    cfg: MissionConfig | None = None,
    source: str = "relay",
    window_s: float | None = None,
    nbytes: int = 1 << 17,
    out_dir: str | Path | None = None,
) -> Callable[[KeyStore, KeyStore, KeyStore], object]:
    """A ``fill(sat_store, first_store, second_store)`` for :func:`satqkd.keys.kme.start_demo`.

    ``source="relay"`` (default): :func:`run_relay` on the preset's two passes (~10 s here); if
    the stores already hold that relay (the demo restarted in the same directory) it is reused,
    not re-deposited. ``source="standin"``: :func:`satqkd.keys.relay.run_standin_relay` (uniform
    random stand-in keys of ``nbytes`` per pass; fast tests). ``out_dir``: also write the relay's
    outputs there. The fill returns an object with ``relay_key_id``, ``length_bits`` and
    ``key_source`` and raises ``RuntimeError`` if the relay left no key to serve.
    """
    if source not in KEY_SOURCES:
        raise ValueError(f"source must be 'relay' or 'standin', got {source!r}")

    def fill(sat: KeyStore, a: KeyStore, b: KeyStore):
        if source == "standin":
            return run_standin_relay(sat, a, b, seed=seed, nbytes=nbytes)
        from ..config import load_preset

        c = cfg if cfg is not None else load_preset(preset)
        try:
            res = run_relay(c, seed, sat, a, b, window_s=window_s)
        except RelayExists as exc:
            if exc.relay_key_id is None:
                raise RuntimeError(f"KME demo: {exc}; and that earlier relay did not complete") from None
            return _ExistingRelay(exc.relay_key_id, exc.length_bits)
        if out_dir is not None:
            write_relay_outputs(res, out_dir)
        if not res.ok:
            raise RuntimeError(f"KME demo: the relay (seed {seed}) left no key to serve: {res.abort_reason}")
        return res

    return fill


def run_demo(dir: str | Path, *, seed: int = 7, key_source: str = "relay", nbytes: int = 1 << 17, **kw) -> int:
    """``satqkd kme demo``: :func:`satqkd.keys.kme.run_demo` with its stores filled from ``key_source``.

    ``key_source="relay"`` (default): the trusted relay on the two simulated passes of preset
    ``micius-relay-xinglong-nanshan`` (:func:`kme_demo_fill`; ~10 s here, its outputs in
    ``DIR/relay``); ``"standin"``: stand-in keys of ``nbytes`` per pass. Other keywords
    (``on_ready``, KME limits) go to :func:`satqkd.keys.kme.run_demo`.
    """
    from ..keys.kme import run_demo as _serve_demo

    if key_source not in KEY_SOURCES:
        raise ValueError(f"key_source must be 'relay' or 'standin', got {key_source!r}")
    fill = kme_demo_fill(seed=seed, out_dir=Path(dir) / "relay") if key_source == "relay" else None
    return _serve_demo(dir, seed=seed, nbytes=nbytes, fill=fill, **kw)
