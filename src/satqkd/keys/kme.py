"""ETSI GS QKD 014 V1.1.1 key management entity (KME): FastAPI served by anycorn over mutual TLS.

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

The KME–KME channel is batched and retried: reservations of concurrent requests travel together
(:class:`_PeerLink`: at most ``peer_batch_max`` per call, ``peer_calls_max`` calls — pooled
keep-alive connections — at once), and a call lost in transit or answered with a 5xx is retried
with the same request ids, which the slave records once. Under load, requests wait (for a place
among ``max_inflight_requests``, for a call slot, for a group commit) rather than fail. Request
bodies are bounded (``max_body_bytes``, 64 KiB: 413).

Identity comes from the client certificate, through the ASGI TLS extension: anycorn puts the
verified peer certificate into ``scope["extensions"]["tls"]["client_cert_chain"]`` and
:func:`client_cn` reads its common name.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anyio
import httpx
from anycorn import Config as AnycornConfig
from anycorn import serve as anycorn_serve
from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .pki import load_pki, make_certs
from .relay import run_standin_relay
from .store import KeyCorrupted, KeyNotFound, KeyStore, KeyStoreError, KeyUnavailable, NotEntitled, Segment

__all__ = [
    "KMEInfo",
    "KMESettings",
    "client_cn",
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
    "sae_client",
]

log = logging.getLogger("satqkd.kme")

#: Test hook: ``"kill_after_peer_ack:N"`` or ``"kill_before_peer_call:N"`` makes the KME process
#: SIGKILL itself at that point of its N-th enc_keys request; ``"fail_after_reserve:N"`` makes a
#: slave KME fail its N-th KME–KME reservation call *after* recording it (a lost answer: the
#: master retries the same request ids). Crash-safety and retry tests only.
FAULT_ENV = "SATQKD_KME_FAULT"
_FAULTS = ("kill_after_peer_ack", "kill_before_peer_call", "fail_after_reserve")
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
    #: request bodies larger than this get 413 (the SAE API; a full dec_keys of 128 ids is ~7 KB)
    max_body_bytes: int = 64 * 1024
    #: the same on the KME–KME channel (a batch of reservations)
    max_peer_body_bytes: int = 4 * 1024 * 1024
    #: back-pressure: enc_keys/dec_keys served at once; more wait in line (up to ``queue_timeout_s``)
    max_inflight_requests: int = 256
    queue_timeout_s: float = 30.0
    #: KME–KME link: reservations per call, calls in flight (= pooled connections) per peer
    peer_batch_max: int = 64
    peer_calls_max: int = 4

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
        for name in ("max_body_bytes", "max_peer_body_bytes", "max_inflight_requests", "peer_batch_max",
                     "peer_calls_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")

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
    """The server's TLS context: TLS ≥ 1.2, the KME's certificate, client certificates required and verified against the CA.

    This is the very context the server uses (built by anycorn from :func:`_server_config`).
    """
    return _server_config(tls_dir, kme_id).create_ssl_context()


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


@functools.lru_cache(maxsize=1024)
def _cn_of_pem(pem: str) -> str | None:
    cns = x509.load_pem_x509_certificate(pem.encode()).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def client_cn(scope: dict) -> str | None:
    """The verified client certificate's common name, from the ASGI TLS extension of the connection scope.

    The server (anycorn) fills ``scope["extensions"]["tls"]["client_cert_chain"]`` (PEM, leaf
    first) with the certificate the TLS handshake verified against the demo CA; ``None`` when the
    connection is not TLS or carries no client certificate.
    """
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or ()
    return _cn_of_pem(chain[0]) if chain else None


def _client_cn(request: Request) -> str | None:
    return client_cn(request.scope)


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


class _ReserveBatch(_Strict):
    """KME–KME: several reservations in one call; each one is recorded (or refused) on its own."""

    reservations: list[_Reserve]


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
        # one thread does all store writes: batches are sequential anyway, and this hop is cheaper than anyio's
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="kme-store")

    async def __call__(self, fn: Callable[[], Any]) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((fn, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        # a cancelled caller cancels only its wait: the operation still runs (and commits) with its batch
        return await fut

    async def _drain(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            self.batches += 1
            try:
                res = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.store.run_batch, [fn for fn, _ in batch])
            except Exception as exc:  # the commit itself failed: nothing of this batch is durable
                res = [(False, exc)] * len(batch)
            for (ok, val), (_, fut) in zip(res, batch):
                if not fut.done():
                    fut.set_result(val) if ok else fut.set_exception(val)


class PeerUnreachable(Exception):
    """The peer KME did not answer a reservation (after retries); the outcome at the peer is unknown."""


#: keys per KME–KME call (~150 bytes each in JSON: far below ``max_peer_body_bytes``)
_BATCH_SEGMENTS = 4096


class _PeerLink:
    """The master KME's side of the KME–KME channel to one peer: batched, pooled, retried.

    Reservations of concurrent ``enc_keys`` requests are queued and sent together, at most
    ``peer_batch_max`` per call and ``peer_calls_max`` calls at once (one pooled keep-alive
    connection each): under load, requests wait for a free call slot instead of opening more
    connections (back-pressure), and the queue fills the next batch meanwhile. A call that fails in
    transit, or with a 5xx, is retried with the **same request ids** until ``peer_timeout_s``; the
    peer records each request id once (a retry of a reservation it already holds is acknowledged
    without cutting anything again), so a retried reservation is never issued twice. Each
    reservation's own answer — recorded, or refused — is handed back to its request.
    """

    def __init__(self, client: httpx.AsyncClient, url: str, s: KMESettings):
        self.client, self.url, self.s = client, url, s
        self.queue: list[tuple[dict, asyncio.Future]] = []
        self.slots = asyncio.Semaphore(s.peer_calls_max)
        self.pump: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()  # calls in flight (a reference keeps each task alive)
        self.calls = self.attempts = 0

    async def reserve(self, item: dict) -> dict:
        """Queue one reservation; returns the peer's answer for it (``{"ok": True, ...}`` or a refusal)."""
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((item, fut))
        if self.pump is None or self.pump.done():
            self.pump = asyncio.create_task(self._pump())
        return await fut

    async def _pump(self) -> None:
        while self.queue:
            await self.slots.acquire()
            n = segs = 0  # at most peer_batch_max reservations and _BATCH_SEGMENTS keys (but at least one)
            while n < min(len(self.queue), self.s.peer_batch_max) and (
                    n == 0 or segs + len(self.queue[n][0]["segments"]) <= _BATCH_SEGMENTS):
                segs += len(self.queue[n][0]["segments"])
                n += 1
            batch, self.queue = self.queue[:n], self.queue[n:]
            if not batch:
                self.slots.release()
                break
            task = asyncio.create_task(self._call(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _call(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.s.peer_timeout_s
        backoff, err = 0.05, "no attempt"
        self.calls += 1
        try:
            while True:
                self.attempts += 1
                try:
                    r = await self.client.post(self.url, json={"reservations": [it for it, _ in batch]},
                                               timeout=max(0.5, deadline - loop.time()))
                    if r.status_code == 200:
                        got = {x.get("request_id"): x for x in r.json()["results"]}
                        for it, fut in batch:
                            if fut.done():
                                continue
                            if it["request_id"] in got:
                                fut.set_result(got[it["request_id"]])
                            else:  # not answered: its outcome is unknown (recovery settles it)
                                fut.set_exception(PeerUnreachable("no answer for this request id"))
                        return
                    if 400 <= r.status_code < 500:  # the whole call was refused: nothing was recorded
                        res = {"ok": False, "status": r.status_code, "message": str(_safe_json(r))[:300]}
                        for _, fut in batch:
                            if not fut.done():
                                fut.set_result(res)
                        return
                    err = f"HTTP {r.status_code}"  # 5xx: outcome unknown; retry (idempotent)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    err = type(exc).__name__  # lost in transit (or garbled): outcome unknown; retry
                if loop.time() + backoff >= deadline:
                    break
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 1.0)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(PeerUnreachable(err))
        except BaseException as exc:  # cancelled (shutdown): the requests learn the outcome is unknown
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(PeerUnreachable(type(exc).__name__))
            raise
        finally:
            self.slots.release()


class _KME:
    """Runtime state of one KME (store, peer client, in-flight requests, recovery task)."""

    def __init__(self, s: KMESettings):
        self.s = s
        self.store: KeyStore | None = None
        self.db: _GroupCommit | None = None
        self.peer: httpx.AsyncClient | None = None
        self.inflight: set[str] = set()
        self.recovery: asyncio.Task | None = None
        self.links: dict[str, _PeerLink] = {}
        self.admit: asyncio.Semaphore | None = None
        self.fault = _parse_fault(os.environ.get(FAULT_ENV, ""))
        self.n_issue = 0
        self.n_peer_reserve = 0
        self.n_admitted = self.peak_admitted = self.n_waited = 0  # back-pressure counters

    def link(self, peer: KMEInfo) -> _PeerLink:
        if peer.kme_id not in self.links:
            self.links[peer.kme_id] = _PeerLink(self.peer, f"{peer.url}/kme/v1/reserve", self.s)
        return self.links[peer.kme_id]

    @asynccontextmanager
    async def admitted(self):
        """Back-pressure: wait in line for one of ``max_inflight_requests`` places (503, nothing done, after ``queue_timeout_s``)."""
        if self.admit.locked():
            self.n_waited += 1
        try:
            await asyncio.wait_for(self.admit.acquire(), self.s.queue_timeout_s)
        except asyncio.TimeoutError:
            raise EtsiError(503, "the KME is busy; nothing was issued, try again",
                            [{"queue_timeout_s": self.s.queue_timeout_s}]) from None
        self.n_admitted += 1
        self.peak_admitted = max(self.peak_admitted, self.n_admitted)
        try:
            yield
        finally:
            self.n_admitted -= 1
            self.admit.release()

    async def start(self) -> None:
        self.store = KeyStore(self.s.store_path, self.s.site)
        self.db = _GroupCommit(self.store)
        pki = load_pki(self.s.tls_dir)
        cert, key = pki.kmes[self.s.kme_id]
        limits = httpx.Limits(max_connections=self.s.peer_calls_max + 2, max_keepalive_connections=self.s.peer_calls_max + 2,
                              keepalive_expiry=_PEER_KEEPALIVE_S)
        self.peer = httpx.AsyncClient(verify=client_ssl_context(pki.ca_cert, cert, key), timeout=self.s.peer_timeout_s,
                                      limits=limits)
        self.admit = asyncio.Semaphore(self.s.max_inflight_requests)
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
        if self.db:
            self.db.executor.shutdown(wait=True)
        tasks = [t for ln in self.links.values() for t in (ln.pump, *ln.running) if t is not None and not t.done()]
        for t in tasks:  # their requests learn the outcome is unknown; recovery settles it after a restart
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
        async with self.admitted():
            return await self._issue(master, slave, peer, number, size)

    async def _issue(self, master: str, slave: str, peer: KMEInfo, number: int, size: int) -> JSONResponse:
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
            item = {"request_id": rid, "master_SAE_ID": master, "slave_SAE_ID": slave,
                    "segments": [seg.to_json() for seg, _ in cut]}
            try:
                res = await self.link(peer).reserve(item)
            except PeerUnreachable as exc:
                # outcome unknown: the keys stay cut-but-unacknowledged; recovery releases them at both ends
                raise EtsiError(503, "the slave SAE's KME did not answer; no key was issued",
                                [{"target_KME_ID": peer.kme_id, "error": str(exc)}]) from None
            if not res.get("ok"):  # a definitive refusal: the peer recorded nothing for this request id
                await self.db(lambda: st.release(ids, request_id=rid, role="master"))
                raise EtsiError(503, "the slave SAE's KME refused the keys; no key was issued",
                                [{"target_KME_ID": peer.kme_id, "status": res.get("status"),
                                  "peer": res.get("message")}])
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
            async with self.admitted():
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
    async def peer_reserve(self, request: Request, req: _ReserveBatch) -> dict:
        """Slave KME: record a batch of reservations; each is recorded or refused on its own (one group commit)."""
        caller = self.peer_kme(request)
        self.n_peer_reserve += 1
        if len(req.reservations) > self.s.peer_batch_max * 4:
            raise EtsiError(400, f"at most {self.s.peer_batch_max * 4} reservations per call")
        results = await asyncio.gather(*(self._reserve_one(caller, r) for r in req.reservations))
        self._maybe_fault("fail_after_reserve")
        return {"results": results}

    async def _reserve_one(self, caller: KMEInfo, r: _Reserve) -> dict:
        out: dict[str, Any] = {"request_id": r.request_id}
        if r.master_SAE_ID not in caller.sae_ids:
            return {**out, "ok": False, "status": 400, "message": "master_SAE_ID is not an SAE of the calling KME"}
        if r.slave_SAE_ID not in self.s.me.sae_ids:
            return {**out, "ok": False, "status": 400, "message": "slave_SAE_ID is not an SAE of this KME"}
        try:
            segs = [Segment.from_json(x) for x in r.segments]
        except ValueError as exc:
            return {**out, "ok": False, "status": 400, "message": f"bad segment: {exc}"}
        try:
            fresh = await self.db(
                lambda: self.store.reserve_segments(caller.site, segs, master_sae=r.master_SAE_ID,
                                                    slave_sae=r.slave_SAE_ID, kme_id=caller.kme_id,
                                                    request_id=r.request_id)
            )
        except (KeyStoreError, ValueError) as exc:  # not available here, released before, other segments
            return {**out, "ok": False, "status": 409, "message": str(exc)}
        return {**out, "ok": True, "recorded": len(segs), "new": fresh}

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
        if not self.fault or self.fault[0] != where:
            return
        if where == "fail_after_reserve":
            if self.n_peer_reserve == self.fault[1]:
                raise RuntimeError(f"{FAULT_ENV}: injected failure after recording reservation call {self.fault[1]}")
        elif self.n_issue >= self.fault[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def _parse_fault(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    where, _, n = spec.partition(":")
    if where not in _FAULTS:
        raise ValueError(f"{FAULT_ENV} must be one of {'|'.join(_FAULTS)} followed by :N, got {spec!r}")
    return where, int(n or 1)


def _safe_json(r: httpx.Response):
    try:
        return r.json()
    except ValueError:
        return r.text[:200]


class _BodyLimit:
    """ASGI middleware: bounded request bodies, read before the app sees them.

    A body over the limit (``Content-Length`` or, for a chunked body, as it arrives) gets 413 with
    ``{"message", "details"}`` — after authentication: a caller that is not an SAE of this KME (or,
    on ``/kme/``, a peer KME) gets 401 without a body, as for any other input. Nothing is read past
    the limit and nothing reaches the KME, so nothing is consumed.
    """

    def __init__(self, app, settings: KMESettings):
        self.app, self.s = app, settings

    def _entitled(self, scope, peer_path: bool) -> bool:
        cn = client_cn(scope)
        return (cn in self.s.network and cn != self.s.kme_id) if peer_path else cn in self.s.me.sae_ids

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        peer_path = scope.get("path", "").startswith("/kme/")
        limit = self.s.max_peer_body_bytes if peer_path else self.s.max_body_bytes
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, peer_path, limit)
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return None
            chunks.append(msg.get("body", b""))
            n += len(chunks[-1])
            if n > limit:
                return await self._refuse(scope, send, peer_path, limit)
            if not msg.get("more_body", False):
                break
        body, done = b"".join(chunks), False

        async def replay():
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, peer_path: bool, limit: int) -> None:
        if not self._entitled(scope, peer_path):
            resp: Response = Response(status_code=401)
        else:
            resp = JSONResponse({"message": "request body too large", "details": [{"max_body_bytes": limit}]},
                                status_code=413, headers={**_NO_STORE, "Connection": "close"})
        await resp(scope, _no_receive, send)


async def _no_receive():
    return {"type": "http.disconnect"}


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
    app.add_middleware(_BodyLimit, settings=settings)

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
    async def kme_reserve(request: Request, body: _ReserveBatch):
        return await kme.peer_reserve(request, body)

    @app.post("/kme/v1/release", include_in_schema=False)
    async def kme_release(request: Request, body: _Release):
        return await kme.peer_release(request, body)

    return app


# ---------------------------------------------------------------------------------------- running
#: Server keep-alive: longer than the KME–KME client's (``_PEER_KEEPALIVE_S``), so the client
#: never reuses a connection the server is closing at that moment (the cause of the
#: ``RemoteProtocolError`` seen under load with the 5 s defaults on both sides).
_SERVER_KEEPALIVE_S = 75.0
_PEER_KEEPALIVE_S = 30.0


def _server_config(tls_dir: str | Path, kme_id: str, log_level: str = "warning") -> AnycornConfig:
    """anycorn configuration: mutual TLS (TLS ≥ 1.2, client certificate required, demo CA), HTTP/1.1."""
    pki = load_pki(tls_dir)
    if kme_id not in pki.kmes:
        raise ValueError(f"no certificate for KME {kme_id!r} in {tls_dir} (have {sorted(pki.kmes)})")
    cert, key = pki.kmes[kme_id]
    cfg = AnycornConfig()
    cfg.certfile, cfg.keyfile, cfg.ca_certs = str(cert), str(key), str(pki.ca_cert)
    cfg.verify_mode = ssl.CERT_REQUIRED
    cfg.alpn_protocols = ["http/1.1"]
    cfg.keep_alive_timeout = _SERVER_KEEPALIVE_S
    cfg.graceful_timeout = 5.0
    cfg.backlog = 1024
    cfg.loglevel = log_level.upper()
    cfg.accesslog = None
    return cfg


async def _serve_async(app: FastAPI, settings: KMESettings, sock: socket.socket, should_exit: Callable[[], bool],
                       on_ready: Callable[[], None], log_level: str = "warning") -> None:
    """Serve ``app`` until ``should_exit()`` is true (polled), then shut down gracefully. ``on_ready`` runs once serving."""
    cfg = _server_config(settings.tls_dir, settings.kme_id, log_level)
    # the socket bound (and listening) by the caller; anycorn takes it over (and closes it)
    cfg.bind = [f"fd://{sock.detach()}"]

    async def trigger() -> None:
        while not should_exit():
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(anycorn_serve, app, cfg, shutdown_trigger=trigger))
        on_ready()


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
    app: FastAPI  # ``app.state.kme``: the KME's runtime state (counters for tests)
    thread: threading.Thread
    exit: threading.Event
    error: list = field(default_factory=list)

    def stop(self, timeout_s: float = 15.0) -> None:
        self.exit.set()
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
    url = f"https://{host}:{sock.getsockname()[1]}"
    exit_, ready = threading.Event(), threading.Event()
    errors: list = []
    app = create_app(settings)

    def run() -> None:
        try:
            anyio.run(_serve_async, app, settings, sock, exit_.is_set, ready.set)
        except BaseException as exc:  # noqa: BLE001 - reported by start_in_thread / kept for the caller
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            errors.append(exc)
            ready.set()

    th = threading.Thread(target=run, daemon=True, name=f"kme-{settings.kme_id}")
    th.start()
    if not ready.wait(timeout_s) or errors:
        exit_.set()
        raise RuntimeError(f"KME {settings.kme_id} did not start: {errors[0]!r}" if errors else
                           f"KME {settings.kme_id} did not start within {timeout_s} s")
    return RunningKME(settings, url, app, th, exit_, errors)


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
    ``limits``: any :class:`KMESettings` field (``key_size``, ``max_key_per_request``, ``max_body_bytes``, ...).
    """
    settings = KMESettings(kme_id=kme_id, store_path=Path(store_path), tls_dir=Path(tls_dir),
                           network=load_network(network), **limits)
    port = _port_of(settings.me.url) if port is None else int(port)
    sock = _bind(host, port)
    stop = threading.Event()

    def should_exit() -> bool:
        if parent_pid is not None and os.getppid() != parent_pid:
            stop.set()
        return stop.is_set()

    def on_ready() -> None:
        if ready_file is not None:
            _atomic_write(Path(ready_file), json.dumps({"pid": os.getpid(), "url": f"https://{host}:{port}"}))

    async def main() -> None:
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await _serve_async(create_app(settings), settings, sock, should_exit, on_ready, log_level)

    anyio.run(main)


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
    ``nbytes`` per pass). :func:`satqkd.jobs.kme_demo.kme_demo_fill` runs the real relay on simulated
    passes (the default of ``satqkd kme demo``). Then makes a demo PKI, starts one KME process
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
             **kw) -> int:
    """Start the demo (:func:`start_demo`) and block until SIGINT/SIGTERM, then shut down cleanly.

    ``fill=`` (see :func:`start_demo`) fills the stores; without it, stand-in keys of ``nbytes``
    per pass. ``satqkd kme demo`` passes the trusted relay on simulated passes
    (:func:`satqkd.jobs.kme_demo.run_demo`): this module imports no job. Returns 0 after a
    requested shutdown; raises ``RuntimeError`` if a KME process dies on its own.
    """
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


# ---------------------------------------------------------------------------------------- module CLI
_FLOAT_LIMITS = ("peer_timeout_s", "recovery_interval_s", "queue_timeout_s")
_INT_LIMITS = ("key_size", "min_key_size", "max_key_size", "max_key_per_request", "max_body_bytes",
               "max_peer_body_bytes", "max_inflight_requests", "peer_batch_max", "peer_calls_max")

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
    for name in _INT_LIMITS:
        s.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    for name in _FLOAT_LIMITS:
        s.add_argument(f"--{name.replace('_', '-')}", type=float, default=None)
    dm = sub.add_parser("demo")
    dm.add_argument("--dir", required=True)
    dm.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        limits = {k: getattr(a, k) for k in (*_INT_LIMITS, *_FLOAT_LIMITS) if getattr(a, k) is not None}
        serve(a.store, a.tls, a.port, network=a.network, kme_id=a.kme_id, host=a.host, ready_file=a.ready_file,
              parent_pid=a.parent_pid, **limits)
        return 0
    return run_demo(a.dir, seed=a.seed)  # stand-in keys: the relay-filled demo is `satqkd kme demo`


if __name__ == "__main__":
    sys.exit(main())
