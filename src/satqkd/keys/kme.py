"""ETSI GS QKD 014 V1.1.1 key management entity (KME): FastAPI + uvicorn over mutual TLS.

Each site runs one KME on its own key store (:mod:`satqkd.keys.store`). Secure application
entities (SAEs) call it over HTTPS (TLS ≥ 1.2, client certificate required; the caller's identity
is its certificate's common name)::

    GET       /api/v1/keys/{slave_SAE_ID}/status
    GET|POST  /api/v1/keys/{slave_SAE_ID}/enc_keys     master SAE: get keys for a slave SAE
    GET|POST  /api/v1/keys/{master_SAE_ID}/dec_keys     slave SAE: get the same keys by key_ID

Fields, defaults and limits follow ETSI GS QKD 014 V1.1.1 §5–6 (``number`` default 1, ``size``
default ``key_size``, multiple of 8 within ``[min_key_size, max_key_size]``, at most
``max_key_per_request`` keys, ``max_SAE_ID_count`` = 0: no multicast). Errors: 400 with
``{"message", "details"}`` (e.g. "size shall be a multiple of 8", "one or more keys specified are
not found on KME", "not all extension_mandatory parameters are supported"), 401 without a body for
a caller that is not entitled, 503 with ``{"message", "details"}`` when the pool or the peer KME
cannot serve. A rejected request changes nothing.

**Two KMEs, one truth.** The master SAE's KME and the slave SAE's KME are different processes.
For ``enc_keys`` the master KME

1. cuts the keys from the link's pool and records them *reserved, peer not acknowledged* (one
   transaction);
2. tells the slave KME, over their own mutually-authenticated HTTPS channel (KME certificates
   from the same CA), which root id / offset / length each key_ID is — the slave carves exactly
   those ranges, reserved for the slave SAE (one transaction, idempotent, refused if the range is
   not available there);
3. records the acknowledgement (one transaction), and only then answers the master SAE;
4. after the response has been written to the SAE's connection, marks the keys *delivered*.

So a crash can never have handed a key to the master SAE that the slave KME does not hold.
Store operations of concurrent requests are group-committed (one transaction and one fsync per
batch, each operation in its own savepoint); a request proceeds only after its batch committed. Keys
acknowledged by the peer but whose response was not confirmed stay *reserved* ("issued, response
not confirmed": ``KeyStore.stats()['issued_unconfirmed']``) and are never re-issued. Keys cut but
not acknowledged (crash or lost peer) were never sent to anyone: a recovery task releases them at
the slave KME (which remembers the request id, so a late reservation for it is refused) and then
returns them to the pool locally.

Identity comes from the client certificate: uvicorn does not put it into the ASGI scope, so
:class:`TLSPeerH11Protocol` (a subclass of uvicorn's ``H11Protocol``) reads the verified peer
certificate from the TLS transport when the connection is made and adds the ASGI TLS extension
(``scope["extensions"]["tls"]``) to every request of that connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from .pki import load_pki, make_certs
from .relay import run_standin_relay
from .store import KeyCorrupted, KeyNotFound, KeyStore, KeyStoreError, KeyUnavailable, NotEntitled, Segment

__all__ = [
    "KMEInfo",
    "KMESettings",
    "TLSPeerH11Protocol",
    "server_ssl_context",
    "client_ssl_context",
    "create_app",
    "RunningKME",
    "start_in_thread",
    "serve",
    "load_network",
    "write_network",
    "free_port",
    "Demo",
    "start_demo",
    "run_demo",
    "kme_load_bench",
    "sae_client",
]

log = logging.getLogger("satqkd.kme")

#: Test hook: ``"kill_after_peer_ack:N"`` or ``"kill_before_peer_call:N"`` makes the KME process
#: SIGKILL itself at that point of its N-th enc_keys request (crash-safety tests only).
FAULT_ENV = "SATQKD_KME_FAULT"
_NO_STORE = {"Cache-Control": "no-store"}


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class KMEInfo:
    """One KME of the network: its id (certificate CN), site (= link name in the stores), URL and SAEs."""

    kme_id: str
    site: str
    url: str
    sae_ids: tuple[str, ...]

    def to_json(self) -> dict:
        return {"kme_id": self.kme_id, "site": self.site, "url": self.url, "sae_ids": list(self.sae_ids)}


def load_network(network: str | Path | dict | list) -> dict[str, KMEInfo]:
    """Read a network description ``{"kmes": [{"kme_id", "site", "url", "sae_ids"}, ...]}`` (file or dict)."""
    if isinstance(network, (str, Path)):
        network = json.loads(Path(network).read_text())
    items = network["kmes"] if isinstance(network, dict) else network
    out: dict[str, KMEInfo] = {}
    saes: set[str] = set()
    for it in items:
        k = it if isinstance(it, KMEInfo) else KMEInfo(it["kme_id"], it["site"], it["url"].rstrip("/"), tuple(it["sae_ids"]))
        if k.kme_id in out:
            raise ValueError(f"KME id {k.kme_id!r} appears twice in the network")
        if saes & set(k.sae_ids):
            raise ValueError(f"SAE ids {sorted(saes & set(k.sae_ids))} are attached to two KMEs")
        saes |= set(k.sae_ids)
        out[k.kme_id] = k
    return out


def write_network(path: str | Path, kmes: dict[str, KMEInfo] | list[KMEInfo]) -> Path:
    items = list(kmes.values()) if isinstance(kmes, dict) else list(kmes)
    p = Path(path)
    _atomic_write(p, json.dumps({"kmes": [k.to_json() for k in items]}, indent=2))
    return p


@dataclass
class KMESettings:
    """Everything one KME needs. Limits are the ETSI status fields (defaults: 256-bit keys, 64…8192 bits, 128 per request)."""

    kme_id: str
    store_path: Path
    tls_dir: Path
    network: dict[str, KMEInfo]
    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 8192
    max_key_per_request: int = 128
    max_SAE_ID_count: int = 0
    peer_timeout_s: float = 10.0
    recovery_interval_s: float = 2.0

    def __post_init__(self) -> None:
        self.store_path, self.tls_dir = Path(self.store_path), Path(self.tls_dir)
        if self.kme_id not in self.network:
            raise ValueError(f"kme_id {self.kme_id!r} is not in the network ({sorted(self.network)})")
        for name in ("key_size", "min_key_size", "max_key_size"):
            v = getattr(self, name)
            if v <= 0 or v % 8:
                raise ValueError(f"{name} must be a positive multiple of 8, got {v}")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError(
                f"need min_key_size ≤ key_size ≤ max_key_size, got {self.min_key_size}, {self.key_size}, {self.max_key_size}"
            )
        if not 1 <= self.max_key_per_request <= 10_000:
            raise ValueError(f"max_key_per_request must be in [1, 10000], got {self.max_key_per_request}")
        if self.max_SAE_ID_count != 0:
            raise ValueError("max_SAE_ID_count must be 0: additional slave SAEs (multicast) are not supported")

    @property
    def me(self) -> KMEInfo:
        return self.network[self.kme_id]

    @property
    def site(self) -> str:
        return self.me.site

    def home_of(self, sae_id: str) -> KMEInfo | None:
        for k in self.network.values():
            if sae_id in k.sae_ids:
                return k
        return None

    def peer_by_site(self, site: str) -> KMEInfo | None:
        for k in self.network.values():
            if k.site == site and k.kme_id != self.kme_id:
                return k
        return None


# ---------------------------------------------------------------------------------------- TLS
def server_ssl_context(tls_dir: str | Path, kme_id: str) -> ssl.SSLContext:
    """Server side: TLS ≥ 1.2, the KME's certificate, client certificates required and verified against the CA."""
    pki = load_pki(tls_dir)
    if kme_id not in pki.kmes:
        raise ValueError(f"no certificate for KME {kme_id!r} in {tls_dir} (have {sorted(pki.kmes)})")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(*map(str, pki.kmes[kme_id]))
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None) -> ssl.SSLContext:
    """Client side: verify the server against ``ca`` (hostname checked), present ``cert``/``key`` if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def sae_client(ca: str | Path, cert: str | Path, key: str | Path, *, timeout_s: float = 10.0) -> httpx.Client:
    """An HTTPS client presenting an SAE (or KME) certificate."""
    return httpx.Client(verify=client_ssl_context(ca, cert, key), timeout=timeout_s)


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class TLSPeerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the ASGI TLS extension carrying the verified client certificate.

    ``scope["extensions"]["tls"]`` holds ``client_cert_chain`` (PEM), ``client_cert_name``
    (RFC 4514), ``tls_version`` and, for convenience, ``client_cert_cn`` (subject common name).
    The certificate is read once per connection, after the handshake (asyncio calls
    ``connection_made`` only then).
    """

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sslobj = transport.get_extra_info("ssl_object")
        tls: dict[str, Any] | None = None
        if sslobj is not None:
            der = sslobj.getpeercert(binary_form=True)
            name = cn = None
            if der:
                cert = x509.load_der_x509_certificate(der)
                name = cert.subject.rfc4514_string()
                cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                cn = cns[0].value if cns else None
            tls = {
                "server_cert": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                "client_cert_name": name,
                "client_cert_error": None,
                "tls_version": _TLS_VERSIONS.get(sslobj.version() or ""),
                "cipher_suite": None,
                "client_cert_cn": cn,
            }
        inner = self.app

        async def app_with_tls(scope, receive, send):
            if tls is not None and scope.get("type") in ("http", "websocket"):
                scope = dict(scope)
                scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
            await inner(scope, receive, send)

        self.app = app_with_tls

    def shutdown(self) -> None:
        """Graceful shutdown; idle connections are dropped at once.

        A TLS ``close()`` waits for the peer's close_notify, which an idle keep-alive client never
        sends, so uvicorn would wait out its graceful-shutdown timeout. No response is in flight on
        an idle connection, so aborting it loses nothing; this also drops a connection that is already
        closing and still waiting for the peer's close_notify (seen in tests as a 5 s shutdown stall).
        """
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()  # also covers a connection already closing (waiting for close_notify)
        else:
            super().shutdown()


def _client_cn(request: Request) -> str | None:
    return ((request.scope.get("extensions") or {}).get("tls") or {}).get("client_cert_cn")


# ---------------------------------------------------------------------------------------- API models
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyRequest(_Strict):
    """ETSI 014 §6.2 Key request (POST enc_keys)."""

    number: StrictInt | None = Field(None, description="number of keys requested, default 1")
    size: StrictInt | None = Field(None, description="size of each key in bits, default key_size")
    additional_slave_SAE_IDs: list[str] | None = Field(None, description="not supported (max_SAE_ID_count = 0)")
    extension_mandatory: list[dict[str, Any]] | None = None
    extension_optional: list[dict[str, Any]] | None = None


class KeyIDItem(_Strict):
    key_ID: str
    key_ID_extension: dict[str, Any] | None = None


class KeyIDs(_Strict):
    """ETSI 014 §6.4 Key IDs (POST dec_keys)."""

    key_IDs: list[KeyIDItem]
    key_IDs_extension: dict[str, Any] | None = None


class Key(BaseModel):
    key_ID: str
    key: str


class KeyContainer(BaseModel):
    """ETSI 014 §6.3 Key container."""

    keys: list[Key]


class Status(BaseModel):
    """ETSI 014 §6.1 Status."""

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int


class ErrorBody(BaseModel):
    """ETSI 014 §6.5 Error."""

    message: str
    details: list[dict[str, Any]] | None = None


class _Reserve(_Strict):
    request_id: str
    master_SAE_ID: str
    slave_SAE_ID: str
    segments: list[dict[str, Any]]


class _Release(_Strict):
    request_id: str
    key_IDs: list[str]


class EtsiError(Exception):
    def __init__(self, status: int, message: str = "", details: list | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


_ERR = {
    400: {"model": ErrorBody, "description": "Bad request format"},
    401: {"description": "Unauthorized (no body)"},
    503: {"model": ErrorBody, "description": "Error on server side"},
}


# ---------------------------------------------------------------------------------------- the app
class _GroupCommit:
    """Queue store operations from concurrent requests and commit them together (one fsync per batch).

    A request awaits its own operation's result, which is only handed back after the batch's
    transaction committed, so acknowledging after ``await`` is as safe as one transaction per
    operation, at a fraction of the fsyncs under load.
    """

    def __init__(self, store: KeyStore):
        self.store = store
        self.queue: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.batches = 0

    async def __call__(self, fn: Callable[[], Any]) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((fn, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            self.batches += 1
            try:
                res = await run_in_threadpool(self.store.run_batch, [fn for fn, _ in batch])
            except Exception as exc:  # the commit itself failed: nothing of this batch is durable
                res = [(False, exc)] * len(batch)
            for (ok, val), (_, fut) in zip(res, batch):
                if not fut.done():
                    fut.set_result(val) if ok else fut.set_exception(val)


class _KME:
    """Runtime state of one KME (store, peer client, in-flight requests, recovery task)."""

    def __init__(self, s: KMESettings):
        self.s = s
        self.store: KeyStore | None = None
        self.db: _GroupCommit | None = None
        self.peer: httpx.AsyncClient | None = None
        self.inflight: set[str] = set()
        self.recovery: asyncio.Task | None = None
        self.fault = _parse_fault(os.environ.get(FAULT_ENV, ""))
        self.n_issue = 0

    async def start(self) -> None:
        self.store = KeyStore(self.s.store_path, self.s.site)
        self.db = _GroupCommit(self.store)
        pki = load_pki(self.s.tls_dir)
        cert, key = pki.kmes[self.s.kme_id]
        self.peer = httpx.AsyncClient(verify=client_ssl_context(pki.ca_cert, cert, key), timeout=self.s.peer_timeout_s)
        self.recovery = asyncio.create_task(self._recovery_loop())

    async def stop(self) -> None:
        if self.recovery:
            self.recovery.cancel()
            try:
                await self.recovery
            except (asyncio.CancelledError, Exception):
                pass
        if self.db and self.db.task:  # let a batch in progress commit before the store closes
            try:
                await self.db.task
            except Exception:
                pass
        if self.peer:
            await self.peer.aclose()
        if self.store:
            self.store.close()

    # -------------------------------------------------------------- identity
    def local_sae(self, request: Request) -> str:
        cn = _client_cn(request)
        if cn is None or cn not in self.s.me.sae_ids:
            raise EtsiError(401)
        return cn

    def peer_kme(self, request: Request) -> KMEInfo:
        cn = _client_cn(request)
        if cn is None or cn == self.s.kme_id or cn not in self.s.network:
            raise EtsiError(401)
        return self.s.network[cn]

    def remote_home(self, sae_id: str, role: str) -> KMEInfo:
        home = self.s.home_of(sae_id)
        if home is None:
            raise EtsiError(400, f"{role} {sae_id!r} is not known to this KME", [{role: sae_id}])
        if home.kme_id == self.s.kme_id:
            raise EtsiError(
                400, f"{role} {sae_id!r} is attached to this KME; both SAEs must be at different KMEs",
                [{role: sae_id}],
            )
        return home

    # -------------------------------------------------------------- ETSI operations
    async def status(self, request: Request, slave: str) -> dict:
        master = self.local_sae(request)
        peer = self.remote_home(slave, "slave_SAE_ID")
        st = self.store
        stored = await run_in_threadpool(st.count_cuttable, peer.site, self.s.key_size)
        roots = await run_in_threadpool(st.roots, peer.site)
        return Status(
            source_KME_ID=self.s.kme_id, target_KME_ID=peer.kme_id, master_SAE_ID=master, slave_SAE_ID=slave,
            key_size=self.s.key_size, stored_key_count=stored,
            max_key_count=sum(r["length_bits"] for r in roots) // self.s.key_size,
            max_key_per_request=self.s.max_key_per_request, max_key_size=self.s.max_key_size,
            min_key_size=self.s.min_key_size, max_SAE_ID_count=self.s.max_SAE_ID_count,
        ).model_dump()

    def _check_key_request(self, number, size, additional, ext_mandatory) -> tuple[int, int]:
        number = 1 if number is None else number
        size = self.s.key_size if size is None else size
        if not 1 <= number <= self.s.max_key_per_request:
            raise EtsiError(400, f"number shall be between 1 and max_key_per_request ({self.s.max_key_per_request})",
                            [{"number": number}])
        if size % 8:
            raise EtsiError(400, "size shall be a multiple of 8", [{"size": size}])
        if not self.s.min_key_size <= size <= self.s.max_key_size:
            raise EtsiError(400, f"size shall be between min_key_size ({self.s.min_key_size}) and max_key_size "
                                 f"({self.s.max_key_size})", [{"size": size}])
        if additional:
            raise EtsiError(400, "additional_slave_SAE_IDs are not supported (max_SAE_ID_count is 0)",
                            [{"additional_slave_SAE_IDs": additional}])
        if ext_mandatory:
            names = sorted({k for e in ext_mandatory for k in e})
            raise EtsiError(400, "not all extension_mandatory parameters are supported",
                            [{"extension_mandatory_unsupported": names}])
        return number, size

    async def enc_keys(self, request: Request, slave: str, number, size, additional=None, ext_mandatory=None):
        master = self.local_sae(request)
        peer = self.remote_home(slave, "slave_SAE_ID")
        number, size = self._check_key_request(number, size, additional, ext_mandatory)
        rid = str(uuid.uuid4())
        st = self.store
        self.inflight.add(rid)
        try:
            try:
                cut = await self.db(
                    lambda: st.reserve_new(peer.site, size, number, master_sae=master, slave_sae=slave,
                                           kme_id=self.s.kme_id, request_id=rid)
                )
            except KeyUnavailable as exc:
                raise EtsiError(503, "not enough key material for this request; no key was issued",
                                [{"requested_bits": exc.needed_bits, "servable_bits": exc.available_bits}]) from None
            except KeyCorrupted as exc:  # the pool's material failed its digest: quarantined, nothing issued
                raise EtsiError(503, "stored key material failed its integrity check (quarantined); no key was "
                                     "issued", [{"key_IDs": exc.key_ids}]) from None
            ids = [seg.key_id for seg, _ in cut]
            self.n_issue += 1
            self._maybe_fault("kill_before_peer_call")
            payload = {"request_id": rid, "master_SAE_ID": master, "slave_SAE_ID": slave,
                       "segments": [seg.to_json() for seg, _ in cut]}
            try:
                r = await self.peer.post(f"{peer.url}/kme/v1/reserve", json=payload)
            except httpx.HTTPError as exc:
                # outcome unknown: the keys stay cut-but-unacknowledged; recovery releases them at both ends
                raise EtsiError(503, "the slave SAE's KME did not answer; no key was issued",
                                [{"target_KME_ID": peer.kme_id, "error": type(exc).__name__}]) from None
            if r.status_code != 200:
                if 400 <= r.status_code < 500:  # definitive refusal: the peer recorded nothing
                    await self.db(lambda: st.release(ids, request_id=rid, role="master"))
                detail = _safe_json(r)
                raise EtsiError(503, "the slave SAE's KME refused the keys; no key was issued",
                                [{"target_KME_ID": peer.kme_id, "status": r.status_code, "peer": detail}])
            await self.db(lambda: st.confirm_peer(ids))
            self._maybe_fault("kill_after_peer_ack")
        finally:
            self.inflight.discard(rid)
        body = {"keys": [{"key_ID": seg.key_id, "key": base64.b64encode(k).decode()} for seg, k in cut]}
        return JSONResponse(body, headers=_NO_STORE, background=BackgroundTask(self.db, lambda: st.mark_delivered(ids)))

    async def dec_keys(self, request: Request, master: str, key_ids: list[str]):
        slave = self.local_sae(request)
        self.remote_home(master, "master_SAE_ID")
        if not 1 <= len(key_ids) <= self.s.max_key_per_request:
            raise EtsiError(400, f"key_IDs shall hold between 1 and max_key_per_request "
                                 f"({self.s.max_key_per_request}) key IDs", [{"key_IDs": len(key_ids)}])
        norm = []
        for k in key_ids:
            try:
                norm.append(str(uuid.UUID(k)))
            except (ValueError, TypeError, AttributeError):
                raise EtsiError(400, "one or more keys specified are not found on KME", [{"key_ID": k}]) from None
        if len(set(norm)) != len(norm):
            raise EtsiError(400, "a key_ID is repeated in the request", [{"key_IDs": key_ids}])
        try:
            got = await self.db(lambda: self.store.deliver(norm, master_sae=master, slave_sae=slave))
        except NotEntitled:
            raise EtsiError(401) from None
        except KeyNotFound as exc:
            raise EtsiError(400, "one or more keys specified are not found on KME", [{"error": str(exc)}]) from None
        except KeyCorrupted as exc:  # never hand out a key whose stored material changed (quarantined)
            raise EtsiError(503, "stored key material failed its integrity check (quarantined); no key was "
                                 "delivered", [{"key_IDs": exc.key_ids}]) from None
        body = {"keys": [{"key_ID": kid, "key": base64.b64encode(k).decode()} for kid, k in got]}
        return JSONResponse(body, headers=_NO_STORE)

    # -------------------------------------------------------------- KME–KME
    async def peer_reserve(self, request: Request, req: _Reserve) -> dict:
        caller = self.peer_kme(request)
        if req.master_SAE_ID not in caller.sae_ids:
            raise EtsiError(400, "master_SAE_ID is not an SAE of the calling KME")
        if req.slave_SAE_ID not in self.s.me.sae_ids:
            raise EtsiError(400, "slave_SAE_ID is not an SAE of this KME")
        try:
            segs = [Segment.from_json(s) for s in req.segments]
        except ValueError as exc:
            raise EtsiError(400, f"bad segment: {exc}") from None
        try:
            fresh = await self.db(
                lambda: self.store.reserve_segments(caller.site, segs, master_sae=req.master_SAE_ID,
                                                    slave_sae=req.slave_SAE_ID, kme_id=caller.kme_id,
                                                    request_id=req.request_id)
            )
        except KeyUnavailable as exc:
            raise EtsiError(409, str(exc), exc.details) from None
        except (KeyStoreError, ValueError) as exc:
            raise EtsiError(409, str(exc)) from None
        return {"recorded": len(segs), "new": fresh}

    async def peer_release(self, request: Request, req: _Release) -> dict:
        caller = self.peer_kme(request)
        return await self.db(
            lambda: self.store.release(req.key_IDs, request_id=req.request_id, tombstone=True, role="slave",
                                       kme_id=caller.kme_id)
        )

    # -------------------------------------------------------------- recovery
    async def recover_once(self) -> int:
        """Release cut-but-unacknowledged keys at the peer, then locally. Returns how many were settled."""
        pending = await run_in_threadpool(self.store.pending_peer)
        settled = 0
        for rid, info in pending.items():
            if rid in self.inflight:
                continue
            peer = self.s.peer_by_site(info["link"])
            if peer is None:
                continue
            try:
                r = await self.peer.post(f"{peer.url}/kme/v1/release", json={"request_id": rid, "key_IDs": info["key_ids"]})
            except httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            res = r.json()
            back = list(res.get("released", [])) + list(res.get("unknown", []))
            if back:
                await self.db(lambda: self.store.release(back, request_id=rid, role="master"))
            if res.get("delivered"):
                await self.db(lambda: self.store.confirm_peer(list(res["delivered"])))
            settled += len(info["key_ids"])
        return settled

    async def _recovery_loop(self) -> None:
        while True:
            try:
                await self.recover_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving; try again later
                log.exception("KME recovery pass failed")
            await asyncio.sleep(self.s.recovery_interval_s)

    def _maybe_fault(self, where: str) -> None:
        if self.fault and self.fault[0] == where and self.n_issue >= self.fault[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def _parse_fault(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    where, _, n = spec.partition(":")
    if where not in ("kill_after_peer_ack", "kill_before_peer_call"):
        raise ValueError(f"{FAULT_ENV} must be kill_after_peer_ack:N or kill_before_peer_call:N, got {spec!r}")
    return where, int(n or 1)


def _safe_json(r: httpx.Response):
    try:
        return r.json()
    except ValueError:
        return r.text[:200]


def create_app(settings: KMESettings) -> FastAPI:
    """The KME's ASGI app (serve it with :func:`serve` / :func:`start_in_thread`, which add mutual TLS)."""
    kme = _KME(settings)

    @asynccontextmanager
    async def lifespan(app):
        await kme.start()
        try:
            yield
        finally:
            await kme.stop()

    app = FastAPI(
        title=f"satqkd KME {settings.kme_id} ({settings.site}) — ETSI GS QKD 014 V1.1.1",
        version="1.1.1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.kme = kme

    @app.exception_handler(EtsiError)
    async def _etsi_error(request: Request, exc: EtsiError):
        if exc.status == 401:
            return Response(status_code=401)
        body: dict[str, Any] = {"message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return JSONResponse(body, status_code=exc.status, headers=_NO_STORE)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        cn = _client_cn(request)
        entitled = (cn in settings.network and cn != settings.kme_id) if request.url.path.startswith("/kme/") \
            else cn in settings.me.sae_ids
        if not entitled:  # authentication before input checks
            return Response(status_code=401)
        details = [{"parameter": ".".join(str(x) for x in e.get("loc", ())), "error": str(e.get("msg", ""))}
                   for e in exc.errors()]
        return JSONResponse({"message": "bad request format", "details": details}, status_code=400, headers=_NO_STORE)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # framework-level errors (unparsable body, unknown route, wrong method) in the ETSI error format
        if exc.status_code == 401:
            return Response(status_code=401)
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code,
                            headers={**_NO_STORE, **(exc.headers or {})})

    @app.get("/api/v1/keys/{slave_SAE_ID}/status", response_model=Status, responses=_ERR, tags=["ETSI 014"])
    async def get_status(slave_SAE_ID: str, request: Request):
        """Status of the key pool between the calling (master) SAE and ``slave_SAE_ID``."""
        return await kme.status(request, slave_SAE_ID)

    @app.get("/api/v1/keys/{slave_SAE_ID}/enc_keys", response_model=KeyContainer, responses=_ERR, tags=["ETSI 014"])
    async def get_enc_keys(slave_SAE_ID: str, request: Request, number: int | None = Query(None),
                           size: int | None = Query(None)):
        """Get ``number`` keys of ``size`` bits for the slave SAE (master SAE side)."""
        return await kme.enc_keys(request, slave_SAE_ID, number, size)

    @app.post("/api/v1/keys/{slave_SAE_ID}/enc_keys", response_model=KeyContainer, responses=_ERR, tags=["ETSI 014"])
    async def post_enc_keys(slave_SAE_ID: str, request: Request, body: KeyRequest | None = None):
        """Get keys for the slave SAE, with the full key request (extensions, additional slaves)."""
        b = body or KeyRequest()
        return await kme.enc_keys(request, slave_SAE_ID, b.number, b.size, b.additional_slave_SAE_IDs,
                                  b.extension_mandatory)

    @app.get("/api/v1/keys/{master_SAE_ID}/dec_keys", response_model=KeyContainer, responses=_ERR, tags=["ETSI 014"])
    async def get_dec_keys(master_SAE_ID: str, request: Request, key_ID: str = Query(...)):
        """Get the key with ``key_ID`` issued by ``master_SAE_ID`` to the calling (slave) SAE — once."""
        return await kme.dec_keys(request, master_SAE_ID, [key_ID])

    @app.post("/api/v1/keys/{master_SAE_ID}/dec_keys", response_model=KeyContainer, responses=_ERR, tags=["ETSI 014"])
    async def post_dec_keys(master_SAE_ID: str, request: Request, body: KeyIDs):
        """Get the keys with these key_IDs issued by ``master_SAE_ID`` to the calling SAE — once, all or none."""
        return await kme.dec_keys(request, master_SAE_ID, [k.key_ID for k in body.key_IDs])

    @app.post("/kme/v1/reserve", include_in_schema=False)
    async def kme_reserve(request: Request, body: _Reserve):
        return await kme.peer_reserve(request, body)

    @app.post("/kme/v1/release", include_in_schema=False)
    async def kme_release(request: Request, body: _Release):
        return await kme.peer_release(request, body)

    return app


# ---------------------------------------------------------------------------------------- running
class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled by the caller (clean exit code, no re-raise)."""

    @contextmanager
    def capture_signals(self):
        yield


def _uvicorn_config(settings: KMESettings, log_level: str = "warning") -> uvicorn.Config:
    ctx = server_ssl_context(settings.tls_dir, settings.kme_id)
    return uvicorn.Config(
        create_app(settings),
        http=TLSPeerH11Protocol,
        ssl_context_factory=lambda config, default: ctx,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        ws="none",
    )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (loopback by default)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_of(url: str) -> int:
    return httpx.URL(url).port or 443


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class RunningKME:
    """A KME served from a background thread (tests, notebooks)."""

    settings: KMESettings
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> "RunningKME":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(settings: KMESettings, *, host: str = "127.0.0.1", port: int | None = None,
                    timeout_s: float = 30.0) -> RunningKME:
    """Serve one KME from a daemon thread; returns once it accepts connections. Port defaults to the network URL's."""
    port = _port_of(settings.me.url) if port is None else port
    sock = _bind(host, port)
    server = _Server(_uvicorn_config(settings))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"kme-{settings.kme_id}")
    th.start()
    t0 = time.monotonic()
    while not server.started:
        if not th.is_alive() or time.monotonic() - t0 > timeout_s:
            server.should_exit = True
            raise RuntimeError(f"KME {settings.kme_id} did not start")
        time.sleep(0.02)
    return RunningKME(settings, f"https://{host}:{sock.getsockname()[1]}", server, th)


def serve(
    store_path: str | Path,
    tls_dir: str | Path,
    port: int | None = None,
    *,
    network: str | Path | dict,
    kme_id: str,
    host: str = "127.0.0.1",
    ready_file: str | Path | None = None,
    parent_pid: int | None = None,
    log_level: str = "warning",
    **limits,
) -> None:
    """Serve one site's KME until SIGINT/SIGTERM (then shut down cleanly and return).

    ``network`` describes all KMEs (see :func:`load_network`); ``port`` defaults to the one in this
    KME's URL. ``ready_file`` is written (atomically, JSON ``{"pid", "url"}``) once the server
    accepts connections. With ``parent_pid`` the server also exits when that process goes away.
    ``limits``: ``key_size``, ``min_key_size``, ``max_key_size``, ``max_key_per_request``.
    """
    settings = KMESettings(kme_id=kme_id, store_path=Path(store_path), tls_dir=Path(tls_dir),
                           network=load_network(network), **limits)
    port = _port_of(settings.me.url) if port is None else int(port)
    sock = _bind(host, port)
    server = _Server(_uvicorn_config(settings, log_level))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))

        async def watch() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if ready_file is not None and server.started:
                _atomic_write(Path(ready_file), json.dumps({"pid": os.getpid(), "url": f"https://{host}:{port}"}))
            while parent_pid is not None and not server.should_exit:
                if os.getppid() != parent_pid:
                    server.should_exit = True
                await asyncio.sleep(0.5)

        w = asyncio.create_task(watch())
        try:
            await server.serve(sockets=[sock])
        finally:
            w.cancel()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------- demo
@dataclass
class Demo:
    """A running two-KME demo: ``kme_json`` describes it (CA, KMEs, SAE certificates)."""

    dir: Path
    kme_json: Path
    config: dict
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    relay: Any = None

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM both KMEs, wait for their clean shutdown (SIGKILL after ``timeout_s``)."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        for p in self.procs.values():
            try:
                p.wait(max(0.1, timeout_s - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.kme_json.unlink(missing_ok=True)

    def __enter__(self) -> "Demo":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spawn_kme(
    store_path: Path, tls_dir: Path, network_path: Path, kme_id: str, *, ready_file: Path, log_path: Path,
    env: dict | None = None, **limits,
) -> subprocess.Popen:
    """Start ``python -m satqkd.keys.kme serve ...`` as a child process (its own site)."""
    cmd = [sys.executable, "-m", "satqkd.keys.kme", "serve", "--store", str(store_path), "--tls", str(tls_dir),
           "--network", str(network_path), "--kme-id", kme_id, "--ready-file", str(ready_file),
           "--parent-pid", str(os.getpid())]
    for k, v in limits.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ready_file.unlink(missing_ok=True)
    with open(log_path, "ab") as logf:
        return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)


def wait_ready(proc: subprocess.Popen, ready_file: Path, log_path: Path, timeout_s: float = 60.0) -> dict:
    t0 = time.monotonic()
    while not ready_file.exists():
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"KME process exited with {proc.returncode}:\n{tail}")
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"KME not ready after {timeout_s} s (see {log_path})")
        time.sleep(0.05)
    return json.loads(ready_file.read_text())


def start_demo(
    dir: str | Path,
    *,
    seed: int = 7,
    nbytes: int = 1 << 17,
    sites: tuple[str, str] = ("Xinglong", "Nanshan"),
    satellite: str = "Micius",
    host: str = "127.0.0.1",
    fill: Callable[[KeyStore, KeyStore, KeyStore], Any] | None = None,
    **limits,
) -> Demo:
    """Bring up the two-site demo on loopback and return once both KMEs serve.

    ``fill(satellite_store, first_store, second_store)`` runs the relay that fills the stores and
    returns an object with ``relay_key_id`` and ``length_bits`` (and optionally ``key_source``);
    by default a relay on **stand-in** pass keys (:func:`satqkd.keys.relay.run_standin_relay`,
    ``nbytes`` per pass). :func:`satqkd.relay_job.kme_demo_fill` runs the real relay on simulated
    passes (the default of :func:`run_demo`). Then makes a demo PKI, starts one KME process
    per site, and writes ``DIR/kme.json``::

        {"ca": path, "kmes": [{"site", "url", "sae_id", "kme_id"}, ...], "saes": {sae_id: {"cert", "key"}}}
    """
    d = Path(dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    kme_json = d / "kme.json"
    kme_json.unlink(missing_ok=True)
    ids = {s: (f"kme-{s.lower()}", f"sae-{s.lower()}") for s in sites}
    pki = make_certs(d / "pki", [v[1] for v in ids.values()], [v[0] for v in ids.values()], hosts=("localhost", host))
    stores = {s: d / "stores" / f"{s.lower()}.db" for s in (*sites, satellite)}
    with KeyStore(stores[satellite], satellite) as sat, KeyStore(stores[sites[0]], sites[0]) as a, \
            KeyStore(stores[sites[1]], sites[1]) as b:
        relay = fill(sat, a, b) if fill is not None else run_standin_relay(sat, a, b, seed=seed, nbytes=nbytes)
    kmes = [KMEInfo(ids[s][0], s, f"https://{host}:{free_port(host)}", (ids[s][1],)) for s in sites]
    net = write_network(d / "network.json", kmes)
    demo = Demo(d, kme_json, {}, relay=relay)
    try:
        for k in kmes:
            demo.procs[k.kme_id] = spawn_kme(stores[k.site], pki.dir, net, k.kme_id, ready_file=d / "run" / f"{k.kme_id}.ready",
                                             log_path=d / "logs" / f"{k.kme_id}.log", **limits)
        for k in kmes:
            wait_ready(demo.procs[k.kme_id], d / "run" / f"{k.kme_id}.ready", d / "logs" / f"{k.kme_id}.log")
    except BaseException:
        demo.stop()
        raise
    cfg = {
        "ca": str(pki.ca_cert),
        "kmes": [{"site": k.site, "url": k.url, "sae_id": k.sae_ids[0], "kme_id": k.kme_id} for k in kmes],
        "saes": {sid: {"cert": str(c), "key": str(kk)} for sid, (c, kk) in pki.saes.items()},
        "relay": {"relay_key_id": relay.relay_key_id, "length_bits": relay.length_bits,
                  "key_source": "stand-in (satqkd.keys.relay.standin_pass_keys)" if fill is None
                  else getattr(relay, "key_source", "relay run")},
    }
    demo.config = cfg
    _atomic_write(kme_json, json.dumps(cfg, indent=2))
    return demo


def run_demo(dir: str | Path, *, seed: int = 7, nbytes: int = 1 << 17, on_ready: Callable[[Demo], None] | None = None,
             key_source: str = "relay", **kw) -> int:
    """``satqkd kme demo``: start the demo and block until SIGINT/SIGTERM, then shut down cleanly.

    ``key_source="relay"`` (default) fills the stores with the trusted relay on the two simulated
    passes of preset ``micius-relay-xinglong-nanshan`` (:func:`satqkd.relay_job.kme_demo_fill`;
    ~10 s here, its outputs in ``DIR/relay``); ``"standin"`` uses stand-in keys of ``nbytes`` per
    pass. An explicit ``fill=`` overrides both. Returns 0 after a requested shutdown; raises
    ``RuntimeError`` if a KME process dies on its own.
    """
    if key_source not in ("relay", "standin"):
        raise ValueError(f"key_source must be 'relay' or 'standin', got {key_source!r}")
    if "fill" not in kw and key_source == "relay":
        from ..relay_job import kme_demo_fill

        kw["fill"] = kme_demo_fill(seed=seed, out_dir=Path(dir) / "relay")
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    old = {}
    if main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda *_: stop.set())
    demo = None
    try:
        demo = start_demo(dir, seed=seed, nbytes=nbytes, **kw)
        if on_ready is not None:
            on_ready(demo)
        while not stop.wait(0.5):
            if not demo.alive():
                dead = [k for k, p in demo.procs.items() if p.poll() is not None]
                raise RuntimeError(f"KME process(es) {dead} exited; see {demo.dir / 'logs'}")
        return 0
    finally:
        if demo is not None:
            demo.stop()
        for sig, h in old.items():
            signal.signal(sig, h)


# ---------------------------------------------------------------------------------------- bench
def kme_load_bench(
    n_clients: int = 50,
    requests_per_client: int = 10,
    *,
    number: int = 1,
    size: int = 256,
    seed: int = 7,
    workdir: str | Path | None = None,
) -> dict:
    """Load test: ``n_clients`` concurrent master-SAE clients call ``enc_keys`` on a live two-KME demo.

    Every key is then fetched by the slave SAE at the other KME (also concurrently). Returns
    latency percentiles (ms) of both calls, throughput, and the duplicate check (must be 0).
    """
    if n_clients < 1 or requests_per_client < 1:
        raise ValueError("n_clients and requests_per_client must be ≥ 1")
    from concurrent.futures import ThreadPoolExecutor

    need_bytes = n_clients * requests_per_client * number * size // 8
    with tempfile.TemporaryDirectory(prefix="satqkd-kme-bench-") if workdir is None else _nullctx(workdir) as d:
        with start_demo(d, seed=seed, nbytes=max(1 << 16, 2 * need_bytes),
                        max_key_per_request=max(128, number)) as demo:
            cfg = demo.config
            a, b = cfg["kmes"][:2]
            sa, sb = cfg["saes"][a["sae_id"]], cfg["saes"][b["sae_id"]]
            barrier = threading.Barrier(n_clients)

            def enc_worker(_i):
                lat, keys, errors = [], [], 0
                with sae_client(cfg["ca"], sa["cert"], sa["key"], timeout_s=60) as c:
                    c.get(f"{a['url']}/api/v1/keys/{b['sae_id']}/status")  # connect before the clock starts
                    barrier.wait()
                    for _ in range(requests_per_client):
                        t0 = time.perf_counter()
                        r = c.post(f"{a['url']}/api/v1/keys/{b['sae_id']}/enc_keys", json={"number": number, "size": size})
                        lat.append(time.perf_counter() - t0)
                        if r.status_code == 200:
                            keys += [(k["key_ID"], k["key"]) for k in r.json()["keys"]]
                        else:
                            errors += 1
                return lat, keys, errors

            t0 = time.perf_counter()
            with ThreadPoolExecutor(n_clients) as ex:
                res = list(ex.map(enc_worker, range(n_clients)))
            wall = time.perf_counter() - t0
            enc_lat = np.array([x for r in res for x in r[0]]) * 1e3
            keys = [k for r in res for k in r[1]]
            errors = sum(r[2] for r in res)
            chunks = [keys[i::n_clients] for i in range(n_clients)]

            def dec_worker(chunk):
                lat, got = [], []
                with sae_client(cfg["ca"], sb["cert"], sb["key"], timeout_s=60) as c:
                    for j in range(0, len(chunk), number):
                        part = chunk[j : j + number]
                        t1 = time.perf_counter()
                        r = c.post(f"{b['url']}/api/v1/keys/{a['sae_id']}/dec_keys",
                                   json={"key_IDs": [{"key_ID": k} for k, _ in part]})
                        lat.append(time.perf_counter() - t1)
                        if r.status_code == 200:
                            got += [(k["key_ID"], k["key"]) for k in r.json()["keys"]]
                return lat, got

            with ThreadPoolExecutor(n_clients) as ex:
                dres = list(ex.map(dec_worker, chunks))
            dec_lat = np.array([x for r in dres for x in r[0]]) * 1e3
            got = {k: v for r in dres for k, v in r[1]}
    ids = [k for k, _ in keys]
    mats = [v for _, v in keys]
    pct = lambda a, q: float(np.percentile(a, q)) if a.size else float("nan")  # noqa: E731
    return {
        "n_clients": n_clients,
        "requests": int(enc_lat.size),
        "keys_per_request": number,
        "key_size_bits": size,
        "p50_ms": pct(enc_lat, 50),
        "p99_ms": pct(enc_lat, 99),
        "enc_p50_ms": pct(enc_lat, 50),
        "enc_p99_ms": pct(enc_lat, 99),
        "dec_p50_ms": pct(dec_lat, 50),
        "dec_p99_ms": pct(dec_lat, 99),
        "enc_wall_s": wall,
        "keys_per_s": len(keys) / wall if wall > 0 else float("nan"),
        "errors": errors,
        "duplicate_ids": len(ids) - len(set(ids)),
        "duplicate_keys": len(mats) - len(set(mats)),
        "slave_mismatches": sum(1 for k, v in keys if got.get(k) != v),
    }


@contextmanager
def _nullctx(x):
    yield x


# ---------------------------------------------------------------------------------------- module CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m satqkd.keys.kme serve|demo ...`` (used to spawn KME processes; the user CLI is ``satqkd kme``)."""
    ap = argparse.ArgumentParser(prog="python -m satqkd.keys.kme")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--store", required=True)
    s.add_argument("--tls", required=True)
    s.add_argument("--network", required=True)
    s.add_argument("--kme-id", required=True)
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--ready-file", default=None)
    s.add_argument("--parent-pid", type=int, default=None)
    for name in ("key-size", "min-key-size", "max-key-size", "max-key-per-request"):
        s.add_argument(f"--{name}", type=int, default=None)
    dm = sub.add_parser("demo")
    dm.add_argument("--dir", required=True)
    dm.add_argument("--seed", type=int, default=7)
    dm.add_argument("--key-source", choices=("relay", "standin"), default="relay")
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        limits = {k: getattr(a, k) for k in ("key_size", "min_key_size", "max_key_size", "max_key_per_request")
                  if getattr(a, k) is not None}
        serve(a.store, a.tls, a.port, network=a.network, kme_id=a.kme_id, host=a.host, ready_file=a.ready_file,
              parent_pid=a.parent_pid, **limits)
        return 0
    return run_demo(a.dir, seed=a.seed, key_source=a.key_source)


if __name__ == "__main__":
    sys.exit(main())
