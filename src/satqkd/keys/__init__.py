"""Key management: crash-safe key store, satellite trusted relay, one-time pad, ETSI GS QKD 014 KMEs.

    >>> from satqkd.keys import KeyStore, relay_announcement
    >>> relay_announcement(b"\\x0f", b"\\xff")
    b'\\xf0'

``satqkd.keys.kme`` (FastAPI/anycorn) and ``satqkd.keys.pki`` (cryptography) load on first use.
"""

from __future__ import annotations

import importlib

from .otp import OtpError, OtpReport, decrypt_file, encrypt_file
from .relay import (
    RelayAnnouncement,
    deposit_pair,
    RelayResult,
    relay_announcement,
    run_standin_relay,
    satellite_announce,
    standin_pass_keys,
    station_apply,
    station_relayed_key,
)
from .store import KeyCorrupted, KeyReused, KeyStore, KeyStoreError, KeyUnavailable, Origin, Segment, key_id_for

_LAZY = {
    "make_certs": ("satqkd.keys.pki", "make_certs"),
    "serve": ("satqkd.keys.kme", "serve"),
    "run_demo": ("satqkd.keys.kme", "run_demo"),
    "start_demo": ("satqkd.keys.kme", "start_demo"),
    "kme_bench": ("satqkd.keys.kme_bench", "kme_bench"),
}

__all__ = [
    "KeyStore", "KeyStoreError", "KeyUnavailable", "KeyCorrupted", "KeyReused", "Origin", "Segment", "key_id_for",
    "deposit_pair",
    "relay_announcement", "station_relayed_key", "RelayAnnouncement", "RelayResult", "satellite_announce",
    "station_apply", "standin_pass_keys", "run_standin_relay",
    "encrypt_file", "decrypt_file", "OtpError", "OtpReport",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'satqkd.keys' has no attribute {name!r}")
