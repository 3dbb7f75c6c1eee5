"""Load benchmark of the two-KME ETSI GS QKD 014 demo: many concurrent master SAEs, for a fixed time.

:func:`kme_bench` starts the two-site demo (two KME processes on loopback, stand-in keys), then
``n_clients`` master SAEs — each with its own HTTPS keep-alive connection and TLS session, all in
one asyncio event loop of this process — call ``enc_keys`` back to back for ``seconds``. The load
generator speaks HTTP/1.1 itself (:class:`_SAEConnection`), so that the machine's CPU goes to the
KMEs rather than to the client library. Afterwards every key
issued is fetched by the slave SAE at the other KME and compared. Reported (``satqkd bench kme
--json``)::

    requests, errors, duplicates, rps, p50_ms, p99_ms        the issue's figures (enc_keys)
    dec_errors, slave_mismatches, dec_p50_ms, dec_p99_ms     the slave side check
    kme_cpu_ms_per_request, cpu_s                            CPU of the KMEs per request; per process
    loadavg_before, loadavg_after, cpus                      how busy the machine was

``duplicates`` counts key_IDs and key bytes issued more than once over all responses. Nothing
here is a test: the figures depend on the machine (its load is reported beside them).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

__all__ = ["kme_bench"]


def _pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a) * 1e3, q)) if a else float("nan")


class _SAEConnection:
    """A lean HTTP/1.1 keep-alive client over one TLS connection (the load generator; cheap on CPU, unlike httpx).

    It sends one prepared request at a time and reads the response by its ``Content-Length``; it
    reconnects when the server closes the connection.
    """

    def __init__(self, url: str, ctx):
        u = httpx.URL(url)
        self.host, self.port, self.ctx = u.host, u.port, ctx
        self.reader = self.writer = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.ctx,
                                                                 server_hostname=self.host)

    def prepare(self, path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.connect()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status, n, close = int(lines[0].split(b" ", 2)[1]), None, False
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                n = int(v)
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        if n is None:
            raise ValueError("response without Content-Length")
        body = await self.reader.readexactly(n)
        if close:
            await self.aclose()
        return status, body

    async def aclose(self) -> None:
        if self.writer is not None:
            w, self.writer, self.reader = self.writer, None, None
            w.close()
            try:
                await w.wait_closed()
            except (OSError, ssl.SSLError):
                pass


async def _load(cfg: dict, n_clients: int, seconds: float, number: int, size: int, max_requests: int,
                timeout_s: float, pids: dict[str, int] | None = None) -> dict:
    from .kme import client_ssl_context

    a, b = cfg["kmes"][:2]
    sa, sb = cfg["saes"][a["sae_id"]], cfg["saes"][b["sae_id"]]
    enc_url = f"{a['url']}/api/v1/keys/{b['sae_id']}/enc_keys"
    dec_url = f"{b['url']}/api/v1/keys/{a['sae_id']}/dec_keys"
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    ctx_a = client_ssl_context(cfg["ca"], sa["cert"], sa["key"])
    conns = [_SAEConnection(a["url"], ctx_a) for _ in range(n_clients)]
    raw = conns[0].prepare(httpx.URL(enc_url).raw_path.decode(), json.dumps({"number": number, "size": size}).encode())
    lat: list[float] = []
    keys: list[tuple[str, str]] = []
    errors: list[str] = []
    budget = [max_requests]
    try:
        await asyncio.gather(*(c.connect() for c in conns))  # TLS handshakes before the clock starts
        deadline = time.perf_counter() + seconds

        async def worker(c: _SAEConnection) -> None:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(c.request(raw), timeout_s)
                except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                    lat.append(time.perf_counter() - t0)
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await c.aclose()
                    continue
                lat.append(time.perf_counter() - t0)
                if status == 200:
                    keys.extend((k["key_ID"], k["key"]) for k in json.loads(body)["keys"])
                else:
                    errors.append(f"{status} {body[:200]!r}")

        cpu0 = {k: _cpu_s(p) for k, p in (pids or {}).items()}
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        wall = time.perf_counter() - t0
        enc_cpu = sum(_cpu_s(p) - cpu0[k] for k, p in (pids or {}).items())
    finally:
        await asyncio.gather(*(c.aclose() for c in conns), return_exceptions=True)

    # the slave side: every issued key, once, with the same bytes
    ctx_b = client_ssl_context(cfg["ca"], sb["cert"], sb["key"])
    per = max(1, min(number * 16, 128))
    chunks = [keys[i : i + per] for i in range(0, len(keys), per)]
    dec_lat: list[float] = []
    got: dict[str, str] = {}
    dec_errors: list[str] = []
    n_dec = min(n_clients, 16)
    dclients = [httpx.AsyncClient(verify=ctx_b, timeout=timeout_s, limits=limits) for _ in range(n_dec)]
    try:
        async def dworker(c: httpx.AsyncClient, mine: list) -> None:
            for chunk in mine:
                t1 = time.perf_counter()
                try:
                    r = await c.post(dec_url, json={"key_IDs": [{"key_ID": k} for k, _ in chunk]})
                except httpx.HTTPError as exc:
                    dec_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                dec_lat.append(time.perf_counter() - t1)
                if r.status_code == 200:
                    got.update((k["key_ID"], k["key"]) for k in r.json()["keys"])
                else:
                    dec_errors.append(f"{r.status_code} {r.text[:200]}")

        await asyncio.gather(*(dworker(c, chunks[i::n_dec]) for i, c in enumerate(dclients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in dclients), return_exceptions=True)

    ids = [k for k, _ in keys]
    mats = [v for _, v in keys]
    return {
        "requests": len(lat),
        "errors": len(errors),
        "duplicates": (len(ids) - len(set(ids))) + (len(mats) - len(set(mats))),
        "rps": len(lat) / wall if wall > 0 else float("nan"),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "keys": len(keys),
        "wall_s": wall,
        # CPU of both KME processes per enc_keys request (load-independent, unlike rps on a shared machine)
        "kme_cpu_ms_per_request": 1e3 * enc_cpu / len(lat) if lat and pids else float("nan"),
        "dec_requests": len(dec_lat),
        "dec_errors": len(dec_errors),
        "slave_mismatches": sum(1 for k, v in keys if got.get(k) != v),
        "dec_p50_ms": _pct(dec_lat, 50),
        "dec_p99_ms": _pct(dec_lat, 99),
        "error_samples": sorted(set(errors))[:5] + sorted(set(dec_errors))[:5],
    }


_ROOT_BYTES = 1 << 16


@dataclass
class _Filled:
    relay_key_id: str
    length_bits: int
    key_source: str


def _fill(nbytes: int, seed: int):
    """Fill the demo stores with relays of 64 KiB stand-in keys (a pool of many pass-sized roots, as in operation)."""
    from .relay import run_standin_relay

    def fill(sat, a, b) -> _Filled:
        n = max(1, -(-nbytes // _ROOT_BYTES))
        rs = [run_standin_relay(sat, a, b, seed=seed + i, nbytes=_ROOT_BYTES) for i in range(n)]
        return _Filled(rs[0].relay_key_id, sum(r.length_bits for r in rs),
                       f"stand-in: {n} relays of {_ROOT_BYTES} bytes (satqkd.keys.relay.standin_pass_keys)")

    return fill


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), NaN where unavailable."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def kme_bench(
    n_clients: int = 50,
    seconds: float = 10.0,
    *,
    number: int = 1,
    size: int = 256,
    max_requests: int | None = None,
    seed: int = 7,
    timeout_s: float = 60.0,
    workdir: str | Path | None = None,
) -> dict:
    """Run ``n_clients`` concurrent master SAEs against a fresh two-KME demo for ``seconds``; see the module doc.

    The pool is sized for ``max_requests`` requests (default 3000 per second of load) of ``number``
    keys of ``size`` bits, and the load stops at that count even before ``seconds``, so the pool
    never runs dry during the run.
    """
    max_requests = int(3000 * seconds) + n_clients if max_requests is None else max_requests
    if n_clients < 1 or seconds <= 0 or max_requests < 1:
        raise ValueError("n_clients and max_requests must be ≥ 1 and seconds > 0")
    from .kme import start_demo

    need = max_requests * number * size // 8
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="satqkd-kme-bench-") if workdir is None else _keep(workdir) as d:
        with start_demo(d, fill=_fill(need + 4096, seed), max_key_per_request=max(128, number)) as demo:
            pids = {k: p.pid for k, p in demo.procs.items()}
            cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
            t0 = os.times()
            res = asyncio.run(_load(demo.config, n_clients, seconds, number, size, max_requests, timeout_s, pids))
            t1 = os.times()
            cpu = {k: _cpu_s(p) - cpu0[k] for k, p in pids.items()}
    cpu["bench clients"] = (t1.user - t0.user) + (t1.system - t0.system)
    res["cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}  # enc and dec phases together
    return {**res, "n_clients": n_clients, "seconds": seconds, "keys_per_request": number, "key_size_bits": size,
            "loadavg_before": [round(x, 2) for x in before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}


class _keep:
    def __init__(self, d):
        self.d = Path(d)

    def __enter__(self):
        self.d.mkdir(parents=True, exist_ok=True)
        return self.d

    def __exit__(self, *exc):
        return None
