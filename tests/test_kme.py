"""ETSI GS QKD 014 KMEs on loopback: real HTTPS servers (mutual TLS), real HTTPS clients.

Two KMEs (Xinglong, Nanshan) on stores filled by a relay run on stand-in keys. In-process
servers (threads) for the API tests; separate processes for the kill -9 tests.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from satqkd.keys.kme import (
    KMESettings,
    free_port,
    load_network,
    sae_client,
    server_ssl_context,
    spawn_kme,
    start_in_thread,
    wait_ready,
    write_network,
)
from satqkd.keys.pki import make_certs
from satqkd.keys.relay import run_standin_relay
from satqkd.keys.store import KeyStore

SAES = {"Xinglong": ["sae-x", "sae-x2"], "Nanshan": ["sae-n", "sae-n2"]}
KMES = {"Xinglong": "kme-x", "Nanshan": "kme-n"}
LIMITS = {"max_key_per_request": 16, "max_key_size": 1024, "min_key_size": 64, "key_size": 256}


@dataclass
class Net:
    dir: Path
    pki: object
    network: dict
    network_path: Path
    stores: dict

    def url(self, site: str) -> str:
        return self.network[KMES[site]].url

    def client(self, who: str, **kw) -> httpx.Client:
        c, k = self.pki.saes[who] if who in self.pki.saes else self.pki.kmes[who]
        return sae_client(self.pki.ca_cert, c, k, **kw)

    def settings(self, site: str) -> KMESettings:
        return KMESettings(KMES[site], self.stores[site], self.pki.dir, self.network, **LIMITS)


def make_net(d: Path, nbytes: int, seed: int = 1) -> Net:
    pki = make_certs(d / "pki", [s for v in SAES.values() for s in v], list(KMES.values()))
    stores = {s: d / f"{s.lower()}.db" for s in ("Micius", "Xinglong", "Nanshan")}
    with KeyStore(stores["Micius"], "Micius") as s, KeyStore(stores["Xinglong"], "Xinglong") as a, \
            KeyStore(stores["Nanshan"], "Nanshan") as b:
        run_standin_relay(s, a, b, seed=seed, nbytes=nbytes)
    net = load_network([{"kme_id": KMES[s], "site": s, "url": f"https://127.0.0.1:{free_port()}", "sae_ids": SAES[s]}
                        for s in ("Xinglong", "Nanshan")])
    return Net(d, pki, net, write_network(d / "network.json", net), stores)


def snapshot(path: Path):
    with KeyStore(path) as st:
        return sorted((p.key_id, p.offset_bits, p.length_bits, p.state, p.peer_ack) for p in st.pieces())


def available_mask(path: Path) -> set:
    """Available bytes as (root, byte index) — comparable between the two ends of a link."""
    with KeyStore(path) as st:
        return {(p.root_id, i) for p in st.pieces(state="available") if p.link in ("Xinglong", "Nanshan")
                for i in range(p.offset_bits // 8, (p.offset_bits + p.length_bits) // 8)}


def issued(path: Path, role: str) -> set:
    with KeyStore(path) as st:
        return {(p.key_id, p.root_id, p.offset_bits, p.length_bits) for p in st.pieces() if p.role == role}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    net = make_net(tmp_path_factory.mktemp("kme"), nbytes=1 << 19)
    a = start_in_thread(net.settings("Xinglong"))
    b = start_in_thread(net.settings("Nanshan"))
    yield net
    a.stop()
    b.stop()


def enc(net, who="sae-x", site="Xinglong", slave="sae-n", **body):
    with net.client(who) as c:
        return c.post(f"{net.url(site)}/api/v1/keys/{slave}/enc_keys", json=body)


def dec(net, ids, who="sae-n", site="Nanshan", master="sae-x"):
    with net.client(who) as c:
        return c.post(f"{net.url(site)}/api/v1/keys/{master}/dec_keys", json={"key_IDs": [{"key_ID": i} for i in ids]})


# ------------------------------------------------------------------------------------------ API
def test_status_fields_and_counts(pair):
    with pair.client("sae-x") as c:
        st = c.get(f"{pair.url('Xinglong')}/api/v1/keys/sae-n/status").json()
        assert st["source_KME_ID"] == "kme-x" and st["target_KME_ID"] == "kme-n"
        assert st["master_SAE_ID"] == "sae-x" and st["slave_SAE_ID"] == "sae-n"  # master = the certificate's CN
        assert (st["key_size"], st["max_key_per_request"], st["max_key_size"], st["min_key_size"],
                st["max_SAE_ID_count"]) == (256, 16, 1024, 64, 0)
        assert st["max_key_count"] == 8 * (1 << 19) // 256
        before = st["stored_key_count"]
        assert enc(pair, number=5).status_code == 200
        after = c.get(f"{pair.url('Xinglong')}/api/v1/keys/sae-n/status").json()["stored_key_count"]
        assert before - after == 5


def test_round_trip_delivers_same_bytes_once(pair):
    r = enc(pair, number=3, size=512)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    keys = r.json()["keys"]
    assert len(keys) == 3 and all(len(base64.b64decode(k["key"])) == 64 for k in keys)
    assert all(uuid.UUID(k["key_ID"]) for k in keys)
    ids = [k["key_ID"] for k in keys]
    r2 = dec(pair, ids)
    assert r2.status_code == 200
    assert sorted(map(tuple, (d.values() for d in r2.json()["keys"]))) == sorted(map(tuple, (d.values() for d in keys)))
    r3 = dec(pair, ids)
    assert r3.status_code == 400 and r3.json()["message"] == "one or more keys specified are not found on KME"
    # GET variants
    with pair.client("sae-x") as c:
        r = c.get(f"{pair.url('Xinglong')}/api/v1/keys/sae-n/enc_keys", params={"number": 2})
    assert r.status_code == 200 and len(r.json()["keys"]) == 2
    with pair.client("sae-n") as c:
        g = c.get(f"{pair.url('Nanshan')}/api/v1/keys/sae-x/dec_keys", params={"key_ID": r.json()["keys"][1]["key_ID"]})
    assert g.status_code == 200 and g.json()["keys"] == [r.json()["keys"][1]]


def test_reverse_direction_and_both_masters_at_once(pair):
    def run(args):
        master_site, who, slave = args
        out = []
        for _ in range(5):
            r = enc(pair, who=who, site=master_site, slave=slave, number=4)
            assert r.status_code == 200
            out += r.json()["keys"]
        return out

    with ThreadPoolExecutor(2) as ex:
        kx, kn = ex.map(run, [("Xinglong", "sae-x", "sae-n"), ("Nanshan", "sae-n", "sae-x")])
    assert len({k["key"] for k in kx + kn}) == 40
    got = []
    for part in (kn[:10], kn[10:]):  # at most max_key_per_request ids per call
        got += dec(pair, [k["key_ID"] for k in part], who="sae-x", site="Xinglong", master="sae-n").json()["keys"]
    assert got == kn
    for site in ("Xinglong", "Nanshan"):
        with KeyStore(pair.stores[site]) as st:
            assert st.check_invariants() == []
    assert issued(pair.stores["Xinglong"], "master") == issued(pair.stores["Nanshan"], "slave")
    assert issued(pair.stores["Nanshan"], "master") == issued(pair.stores["Xinglong"], "slave")


def test_wrong_callers_are_refused(pair):
    ids = [k["key_ID"] for k in enc(pair, number=2).json()["keys"]]
    r = dec(pair, ids, who="sae-x")  # the master SAE at the slave's KME: not its SAE
    assert r.status_code == 401 and r.content == b""
    r = dec(pair, ids, who="sae-n2")  # a local SAE, but not the slave the keys were issued to
    assert r.status_code == 401
    r = dec(pair, ids, master="sae-x2")  # keys of another master SAE
    assert r.status_code == 400
    assert dec(pair, ids).status_code == 200  # none of the refusals consumed anything
    r = enc(pair, who="kme-x")  # a KME certificate is not an SAE
    assert r.status_code == 401
    with pair.client("sae-x") as c:  # an SAE cannot use the KME–KME channel
        r = c.post(f"{pair.url('Nanshan')}/kme/v1/release", json={"request_id": "x", "key_IDs": ids})
    assert r.status_code == 401


def test_no_client_certificate_or_foreign_ca_gets_no_service(pair, tmp_path):
    url = f"{pair.url('Xinglong')}/api/v1/keys/sae-n/status"
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=ssl.create_default_context(cafile=str(pair.pki.ca_cert)), timeout=5)
    foreign = make_certs(tmp_path / "other", ["sae-x"], ["kme-x"])  # same names, other CA
    ctx = ssl.create_default_context(cafile=str(pair.pki.ca_cert))
    ctx.load_cert_chain(*map(str, foreign.saes["sae-x"]))
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=ctx, timeout=5)
    assert server_ssl_context(pair.pki.dir, "kme-x").minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_ssl_context(pair.pki.dir, "kme-x").verify_mode == ssl.CERT_REQUIRED


BAD = [
    ("post", "enc", b'{"number": 1,', "bad request format"),  # malformed JSON
    ("post", "enc", b"[1, 256]", "bad request format"),
    ("post", "enc", {"number": 1, "size": 250}, "size shall be a multiple of 8"),
    ("post", "enc", {"size": 32}, "min_key_size"),
    ("post", "enc", {"size": 2048}, "max_key_size"),
    ("post", "enc", {"number": 17}, "max_key_per_request"),
    ("post", "enc", {"number": 0}, "max_key_per_request"),
    ("post", "enc", {"number": "2"}, "bad request format"),
    ("post", "enc", {"number": 1, "colour": "red"}, "bad request format"),
    ("post", "enc", {"extension_mandatory": [{"vendor_x": True}]}, "not all extension_mandatory parameters are supported"),
    ("post", "enc", {"additional_slave_SAE_IDs": ["sae-n2"]}, "additional_slave_SAE_IDs"),
    ("post", "enc-unknown", {"number": 1}, "not known"),
    ("post", "enc-local", {"number": 1}, "attached to this KME"),
    ("get", "enc", {"number": "x"}, "bad request format"),
    ("post", "dec", {"key_IDs": [{"key_ID": "not-a-uuid"}]}, "not found on KME"),
    ("post", "dec", {"key_IDs": []}, "key_IDs"),
    ("post", "dec", {"key_IDs": [{"key_ID": str(uuid.uuid4())} for _ in range(17)]}, "key_IDs"),
    ("post", "dec", {"keys": []}, "bad request format"),
    ("post", "dec-unknown", {"key_IDs": [{"key_ID": str(uuid.uuid4())}]}, "not known"),
]


@pytest.mark.parametrize("method,where,body,message", BAD, ids=[f"{i}-{b[3][:20]}" for i, b in enumerate(BAD)])
def test_bad_input_gets_the_spec_error_and_consumes_nothing(pair, method, where, body, message):
    before = {s: snapshot(p) for s, p in pair.stores.items()}
    slave = {"enc-unknown": "sae-zz", "enc-local": "sae-x2"}.get(where, "sae-n")
    if where.startswith("enc"):
        url, who = f"{pair.url('Xinglong')}/api/v1/keys/{slave}/enc_keys", "sae-x"
    else:
        master = "sae-zz" if where == "dec-unknown" else "sae-x"
        url, who = f"{pair.url('Nanshan')}/api/v1/keys/{master}/dec_keys", "sae-n"
    with pair.client(who) as c:
        if method == "get":
            r = c.get(url, params=body)
        elif isinstance(body, bytes):
            r = c.post(url, content=body, headers={"content-type": "application/json"})
        else:
            r = c.post(url, json=body)
    assert r.status_code == 400, r.text
    js = r.json()
    assert message in js["message"] and isinstance(js.get("details", []), list)
    assert {s: snapshot(p) for s, p in pair.stores.items()} == before


def test_exhausted_pool_gives_503_and_consumes_nothing(tmp_path):
    net = make_net(tmp_path, nbytes=64)  # 512 bits on the link
    a = start_in_thread(net.settings("Xinglong"))
    b = start_in_thread(net.settings("Nanshan"))
    try:
        before = {s: snapshot(p) for s, p in net.stores.items()}
        r = enc(net, number=3, size=256)
        assert r.status_code == 503 and "not enough key material" in r.json()["message"]
        assert {s: snapshot(p) for s, p in net.stores.items()} == before
        assert enc(net, number=2, size=256).status_code == 200
    finally:
        a.stop()
        b.stop()


def test_peer_down_issues_nothing_and_recovery_releases(tmp_path):
    net = make_net(tmp_path, nbytes=1024)
    s = net.settings("Xinglong")
    s.recovery_interval_s = 0.2
    s.peer_timeout_s = 2.0
    a = start_in_thread(s)
    try:
        mask = available_mask(net.stores["Xinglong"])
        r = enc(net, number=4)
        assert r.status_code == 503 and "did not answer" in r.json()["message"]
        with KeyStore(net.stores["Xinglong"]) as st:
            assert st.stats()["awaiting_peer"] == 4  # cut, never sent, held until the peer answers
        b = start_in_thread(net.settings("Nanshan"))
        try:
            for _ in range(100):
                with KeyStore(net.stores["Xinglong"]) as st:
                    if st.stats()["awaiting_peer"] == 0:
                        break
                time.sleep(0.1)
            assert available_mask(net.stores["Xinglong"]) == mask == available_mask(net.stores["Nanshan"])
            tomb = sqlite3.connect(net.stores["Nanshan"]).execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]
            assert tomb == 1  # the slave remembers the released request id
            assert enc(net, number=4).status_code == 200
        finally:
            b.stop()
    finally:
        a.stop()


def test_50_concurrent_clients_never_get_the_same_key(pair):
    def client(i):
        got = []
        with pair.client("sae-x" if i % 2 else "sae-x2", timeout_s=120) as c:
            for _ in range(3):
                r = c.post(f"{pair.url('Xinglong')}/api/v1/keys/sae-n/enc_keys", json={"number": 2, "size": 128})
                assert r.status_code == 200, r.text
                got += [(k["key_ID"], k["key"], "sae-x" if i % 2 else "sae-x2") for k in r.json()["keys"]]
        return got

    with ThreadPoolExecutor(50) as ex:
        keys = [k for part in ex.map(client, range(50)) for k in part]
    assert len(keys) == 300
    assert len({k[0] for k in keys}) == 300 and len({k[1] for k in keys}) == 300
    for master in ("sae-x", "sae-x2"):
        mine = [k for k in keys if k[2] == master]
        got = {}
        for j in range(0, len(mine), 16):
            r = dec(pair, [k[0] for k in mine[j : j + 16]], master=master)
            assert r.status_code == 200
            got.update({k["key_ID"]: k["key"] for k in r.json()["keys"]})
        assert got == {k[0]: k[1] for k in mine}
    for site in ("Xinglong", "Nanshan"):
        with KeyStore(pair.stores[site]) as st:
            assert st.check_invariants() == []


def test_openapi_fuzz_gives_no_5xx(pair):
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    with pair.client("sae-x") as c:
        spec = c.get(f"{pair.url('Xinglong')}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    strategies = []
    for res in schema.get_all_operations():
        op = res.ok()
        fixed = {"slave_SAE_ID": "sae-n"} if "{slave_SAE_ID}" in op.path else {"master_SAE_ID": "sae-n"}
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategies.append(op.as_strategy(generation_mode=mode))
            strategies.append(op.as_strategy(generation_mode=mode, path_parameters=fixed))
    assert len(strategies) == 20  # 5 operations × 2 modes × 2
    sess = requests.Session()
    tls = {"cert": tuple(map(str, pair.pki.saes["sae-x"])), "verify": str(pair.pki.ca_cert)}
    seen = {}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def fuzz(case):
        try:
            resp = case.call(base_url=pair.url("Xinglong"), session=sess, timeout=10, **tls)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
            return  # the client library refuses to send it: nothing reached the server
        assert resp.status_code < 500, (case.method, case.path, resp.status_code, resp.text[:200])
        if resp.status_code == 400:
            assert "message" in resp.json()
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1

    fuzz()
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0  # the fuzz reached both the happy path and the checks


# ------------------------------------------------------------------------------------------ crash safety
def _spawn(net: Net, site: str, tag: str, env: dict | None = None):
    kid = KMES[site]
    ready, logp = net.dir / "run" / f"{kid}-{tag}.ready", net.dir / "logs" / f"{kid}-{tag}.log"
    p = spawn_kme(net.stores[site], net.pki.dir, net.network_path, kid, ready_file=ready, log_path=logp, env=env,
                  **LIMITS)
    return p, ready, logp


def _start(net, site, tag, env=None):
    p, ready, logp = _spawn(net, site, tag, env)
    wait_ready(p, ready, logp)
    return p


def _wait_settled(net):
    for _ in range(150):
        with KeyStore(net.stores["Xinglong"]) as st:
            if st.stats()["awaiting_peer"] == 0:
                return
        time.sleep(0.1)
    raise AssertionError("recovery did not settle the unacknowledged keys")


def _check_consistent(net):
    """Every key in exactly one state, both KMEs agree on every issued key, pools agree bit for bit."""
    for site in ("Xinglong", "Nanshan"):
        with KeyStore(net.stores[site]) as st:
            assert st.check_invariants() == []
    with KeyStore(net.stores["Xinglong"]) as st:
        m = [p for p in st.pieces() if p.role == "master"]
        assert all(p.state in ("reserved", "delivered") and p.peer_ack == 1 for p in m)
    assert issued(net.stores["Xinglong"], "master") == issued(net.stores["Nanshan"], "slave")
    assert available_mask(net.stores["Xinglong"]) == available_mask(net.stores["Nanshan"])


def _stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.wait(15)
    assert p.returncode == 0  # clean shutdown on SIGTERM


def test_kill_9_mid_burst_then_restart(tmp_path):
    net = make_net(tmp_path, nbytes=1 << 16)
    pb = _start(net, "Nanshan", "b")
    pa = _start(net, "Xinglong", "a1")
    received, stop = [], threading.Event()

    def burst(i):
        with net.client("sae-x", timeout_s=10) as c:
            for _ in range(300):  # bounded
                if stop.is_set():
                    return
                try:
                    r = c.post(f"{net.url('Xinglong')}/api/v1/keys/sae-n/enc_keys", json={"number": 2, "size": 128})
                except httpx.HTTPError:
                    return
                if r.status_code != 200:
                    return
                received.extend((k["key_ID"], k["key"]) for k in r.json()["keys"])

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    # kill once 60 keys are out, however slow the machine: the bursts are bounded, so this loop ends
    # when they do at the latest (the deadline is only a guard against a hang)
    t0 = time.monotonic()
    while len(received) < 60 and any(t.is_alive() for t in threads) and time.monotonic() - t0 < 600:
        time.sleep(0.01)
    os.kill(pa.pid, signal.SIGKILL)  # mid-burst
    pa.wait()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(received) >= 60
    for site in ("Xinglong", "Nanshan"):  # straight after the crash: every bit in exactly one state
        with KeyStore(net.stores[site]) as st:
            assert st.check_invariants() == []
            if os.environ.get("SATQKD_TEST_VERBOSE"):
                print(site, {k: st.stats()[k] for k in ("issued_unconfirmed", "awaiting_peer")}, len(received))
    pa = _start(net, "Xinglong", "a2")
    try:
        _wait_settled(net)
        _check_consistent(net)
        ids = {k for k, _ in received}
        assert len(ids) == len(received) and len({v for _, v in received}) == len(received)
        all_issued = {x[0] for x in issued(net.stores["Xinglong"], "master")}
        assert ids <= all_issued
        with KeyStore(net.stores["Xinglong"]) as st:
            # issued (the slave KME agreed) but the response not confirmed written: counted, never re-issued;
            # the client may or may not have received them
            unconfirmed = st.stats()["issued_unconfirmed"]
            assert unconfirmed == len(st.pieces(state="reserved")) - len(
                [p for p in st.pieces(state="reserved") if p.role == "slave"])
        assert len(all_issued) - len(ids) <= unconfirmed + 16  # lost replies: at most one request per client
        # the slave SAE gets exactly the bytes the master SAE got
        got = {}
        lst = sorted(ids)
        for j in range(0, len(lst), 16):
            r = dec(net, lst[j : j + 16])
            assert r.status_code == 200
            got.update({k["key_ID"]: k["key"] for k in r.json()["keys"]})
        assert got == dict(received)
        # after the restart no id and no bit is handed out again
        r = enc(net, number=16, size=128)
        assert r.status_code == 200
        new = r.json()["keys"]
        assert not ({k["key_ID"] for k in new} & all_issued)
        assert not ({k["key"] for k in new} & {v for _, v in received})
        time.sleep(0.3)
        _check_consistent(net)
    finally:
        _stop(pa)
        _stop(pb)


def test_crash_at_each_step_of_the_two_kme_agreement(tmp_path):
    net = make_net(tmp_path, nbytes=1 << 14)
    pb = _start(net, "Nanshan", "b")
    try:
        # 1) killed after cutting, before telling the slave KME: nothing was issued; recovery releases it
        pa = _start(net, "Xinglong", "a1", env={"SATQKD_KME_FAULT": "kill_before_peer_call:2"})
        assert enc(net, number=3).status_code == 200
        with pytest.raises(httpx.HTTPError):
            enc(net, number=3)
        pa.wait(10)
        pa = _start(net, "Xinglong", "a2", env={"SATQKD_KME_FAULT": "kill_after_peer_ack:2"})
        _wait_settled(net)
        _check_consistent(net)
        with KeyStore(net.stores["Xinglong"]) as st:
            assert st.stats()["issued_unconfirmed"] == 0
        # 2) killed after the slave KME agreed, before answering the master SAE: issued once, never re-issued
        assert enc(net, number=3).status_code == 200
        with pytest.raises(httpx.HTTPError):
            enc(net, number=3)
        pa.wait(10)
        pa = _start(net, "Xinglong", "a3")
        _wait_settled(net)
        _check_consistent(net)
        with KeyStore(net.stores["Xinglong"]) as st:
            assert st.stats()["issued_unconfirmed"] == 3
            lost = {p.key_id for p in st.pieces(state="reserved") if p.role == "master"}
        with KeyStore(net.stores["Nanshan"]) as st:
            assert {st.get(k).state for k in lost} == {"reserved"}  # known to the slave KME as well
        new = enc(net, number=16).json()["keys"]
        assert not ({k["key_ID"] for k in new} & lost)
        _check_consistent(net)
        _stop(pa)
    finally:
        _stop(pb)


# ------------------------------------------------------------------------------------------ load and abuse
def test_many_concurrent_saes_no_errors_no_duplicates(pair):
    """60 SAE connections at once (asyncio, one TLS session each), both master SAEs: every request served, once."""
    import asyncio

    ca = pair.pki.ca_cert
    url = f"{pair.url('Xinglong')}/api/v1/keys/sae-n/enc_keys"

    async def run():
        from satqkd.keys.kme import client_ssl_context

        ctx = {m: client_ssl_context(ca, *pair.pki.saes[m]) for m in ("sae-x", "sae-x2")}
        clients = [httpx.AsyncClient(verify=ctx["sae-x" if i % 2 else "sae-x2"], timeout=120) for i in range(60)]

        async def one(i, c):
            out = []
            for _ in range(4):  # bounded
                r = await c.post(url, json={"number": 2, "size": 128})
                out.append((r.status_code, r.text if r.status_code != 200 else r.json()["keys"]))
            return [(st, body, "sae-x" if i % 2 else "sae-x2") for st, body in out]

        try:
            return [x for part in await asyncio.gather(*(one(i, c) for i, c in enumerate(clients))) for x in part]
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    res = asyncio.run(run())
    errors = [(st, body) for st, body, _ in res if st != 200]
    assert errors == [] and len(res) == 240
    keys = [(k["key_ID"], k["key"], m) for _, body, m in res for k in body]
    assert len({k[0] for k in keys}) == len(keys) == 480  # no key_ID twice
    assert len({k[1] for k in keys}) == 480  # no key bytes twice
    for master in ("sae-x", "sae-x2"):
        mine = [k for k in keys if k[2] == master]
        assert dec(pair, [mine[0][0]], who="sae-n2", master=master).status_code == 401  # wrong slave SAE
        got = {}
        for j in range(0, len(mine), 16):
            r = dec(pair, [k[0] for k in mine[j : j + 16]], master=master)
            assert r.status_code == 200, r.text
            got.update({k["key_ID"]: k["key"] for k in r.json()["keys"]})
        assert got == {k[0]: k[1] for k in mine}  # the refused call above consumed nothing
    for site in ("Xinglong", "Nanshan"):
        with KeyStore(pair.stores[site]) as st:
            assert st.check_invariants() == []
    assert issued(pair.stores["Xinglong"], "master") == issued(pair.stores["Nanshan"], "slave")


def test_back_pressure_queues_requests_instead_of_failing(tmp_path):
    net = make_net(tmp_path, nbytes=1 << 14)
    s = net.settings("Xinglong")
    s.max_inflight_requests = 2  # 24 clients wait in line for 2 places
    a, b = start_in_thread(s), start_in_thread(net.settings("Nanshan"))
    try:
        go = threading.Barrier(24)

        def one(_):
            with net.client("sae-x", timeout_s=120) as c:  # generous: a slow machine makes the line long
                c.get(f"{net.url('Xinglong')}/api/v1/keys/sae-n/status")  # connected: all 24 ask at once
                go.wait(60)
                return c.post(f"{net.url('Xinglong')}/api/v1/keys/sae-n/enc_keys", json={"number": 1}).status_code

        with ThreadPoolExecutor(24) as ex:
            rs = list(ex.map(one, range(24)))
        assert rs == [200] * 24
        k = a.app.state.kme
        assert k.peak_admitted == 2 and k.n_waited > 0 and k.n_admitted == 0  # they waited in line, then all got served
    finally:
        a.stop()
        b.stop()


def _events(path: Path, key_id: str) -> list[str]:
    with sqlite3.connect(path) as con:
        return [r[0] for r in con.execute("SELECT state FROM events WHERE key_id = ? ORDER BY seq", (key_id,))]


def test_peer_reservation_is_idempotent_per_request_id(tmp_path):
    """The same reservation twice (a retry) is recorded once; other segments under that id are refused."""
    net = make_net(tmp_path, nbytes=1024)
    b = start_in_thread(net.settings("Nanshan"))
    try:
        with KeyStore(net.stores["Nanshan"]) as st:
            p = st.pieces(link="Xinglong", state="available")[0]
        segs = [{"key_id": str(uuid.uuid4()), "root_id": p.root_id, "offset_bits": p.offset_bits + 256 * i,
                 "length_bits": 256} for i in range(3)]
        rid = str(uuid.uuid4())
        item = {"request_id": rid, "master_SAE_ID": "sae-x", "slave_SAE_ID": "sae-n", "segments": segs}
        with net.client("kme-x") as c:
            r1 = c.post(f"{net.url('Nanshan')}/kme/v1/reserve", json={"reservations": [item]})
            r2 = c.post(f"{net.url('Nanshan')}/kme/v1/reserve", json={"reservations": [item]})
            other = {**item, "segments": segs[:2]}
            r3 = c.post(f"{net.url('Nanshan')}/kme/v1/reserve", json={"reservations": [other]})
        assert r1.status_code == r2.status_code == r3.status_code == 200
        assert r1.json()["results"] == [{"request_id": rid, "ok": True, "recorded": 3, "new": True}]
        assert r2.json()["results"] == [{"request_id": rid, "ok": True, "recorded": 3, "new": False}]
        assert r3.json()["results"][0]["ok"] is False and r3.json()["results"][0]["status"] == 409
        with KeyStore(net.stores["Nanshan"]) as st:
            mine = [q for q in st.pieces(state="reserved") if q.request_id == rid]
            assert sorted(q.key_id for q in mine) == sorted(x["key_id"] for x in segs)
            assert st.check_invariants() == []
        assert all(_events(net.stores["Nanshan"], x["key_id"]) == ["reserved"] for x in segs)  # carved once
    finally:
        b.stop()


def test_lost_peer_answer_is_retried_with_the_same_request_id(tmp_path, monkeypatch):
    """The slave KME records a reservation but its answer is lost (5xx): the master retries, nothing is cut twice."""
    net = make_net(tmp_path, nbytes=1024)
    a = start_in_thread(net.settings("Xinglong"))
    monkeypatch.setenv("SATQKD_KME_FAULT", "fail_after_reserve:1")
    b = start_in_thread(net.settings("Nanshan"))
    monkeypatch.delenv("SATQKD_KME_FAULT")
    try:
        r = enc(net, number=3)
        assert r.status_code == 200, r.text
        keys = r.json()["keys"]
        assert b.app.state.kme.n_peer_reserve == 2  # the first call failed after recording; the retry was acknowledged
        link = a.app.state.kme.links["kme-n"]
        assert (link.calls, link.attempts) == (1, 2)
        for k in keys:
            assert _events(net.stores["Nanshan"], k["key_ID"]) == ["reserved"]  # reserved once at the slave
            assert _events(net.stores["Xinglong"], k["key_ID"])[:2] == ["reserved", "reserved"]  # cut, peer ack
        got = dec(net, [k["key_ID"] for k in keys])
        assert got.status_code == 200 and got.json()["keys"] == keys
        assert dec(net, [k["key_ID"] for k in keys]).status_code == 400  # once
        time.sleep(0.3)
        _check_consistent(net)
    finally:
        a.stop()
        b.stop()


def _raw_post(net, site: str, who: str, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request over TLS on a plain socket (to send a Content-Length without its body)."""
    import socket

    from satqkd.keys.kme import client_ssl_context

    ctx = client_ssl_context(net.pki.ca_cert, *(net.pki.saes.get(who) or net.pki.kmes[who]))
    u = httpx.URL(net.url(site))
    with socket.create_connection((u.host, u.port), timeout=30) as raw, ctx.wrap_socket(raw, server_hostname=u.host) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": u.host, **headers}.items())
        s.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                next((ln.split(b":")[1] for ln in data.split(b"\r\n") if ln.lower().startswith(b"content-length")),
                     b"0")):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_oversized_bodies_get_413_and_consume_nothing(pair):
    before = {s: snapshot(p) for s, p in pair.stores.items()}
    enc_path, big = "/api/v1/keys/sae-n/enc_keys", 20_000_000
    # a declared 20 MB body: refused from the headers, before any of it is read
    st, body = _raw_post(pair, "Xinglong", "sae-x", enc_path,
                         {"Content-Type": "application/json", "Content-Length": str(big)}, b'{"number": 1')
    assert st == 413 and json.loads(body)["message"] == "request body too large"
    assert json.loads(body)["details"] == [{"max_body_bytes": 64 * 1024}]
    # a chunked body (no Content-Length) over the limit: refused while it arrives
    pad = json.dumps({"number": 1, "extension_optional": [{"x": "y" * 100_000}]}).encode()
    with pair.client("sae-x") as c:
        r = c.post(f"{pair.url('Xinglong')}{enc_path}", content=iter([pad[:50_000], pad[50_000:]]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["details"] == [{"max_body_bytes": 64 * 1024}]
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    with pair.client("sae-n") as c:
        r = c.post(f"{pair.url('Nanshan')}/api/v1/keys/sae-x/dec_keys", content=pad, headers={"content-type": "application/json"})
        assert r.status_code == 413
    # not entitled: 401 without a body, as for any other input
    st, body = _raw_post(pair, "Xinglong", "kme-n", enc_path, {"Content-Length": str(big)}, b"")
    assert (st, body) == (401, b"")
    st, body = _raw_post(pair, "Nanshan", "sae-x", "/kme/v1/reserve", {"Content-Length": str(big)}, b"")
    assert (st, body) == (401, b"")
    assert {s: snapshot(p) for s, p in pair.stores.items()} == before
    # just under the limit is served
    ok = json.dumps({"number": 1, "extension_optional": [{"x": "y" * 60_000}]}).encode()
    assert len(ok) < 64 * 1024
    with pair.client("sae-x") as c:
        assert c.post(f"{pair.url('Xinglong')}{enc_path}", content=ok, headers={"content-type": "application/json"}).status_code == 200


def test_identity_comes_from_the_asgi_tls_extension_not_a_uvicorn_subclass(pair):
    import subprocess
    import sys

    from satqkd.keys.kme import client_cn

    code = "import sys, satqkd.keys.kme; print(sorted(m for m in sys.modules if m.split('.')[0] in ('uvicorn', 'anycorn')))"
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "uvicorn" not in mods and "anycorn" in mods
    pem = Path(pair.pki.saes["sae-x2"][0]).read_text()
    assert client_cn({"extensions": {"tls": {"client_cert_chain": [pem]}}}) == "sae-x2"
    assert client_cn({"extensions": {"tls": {"client_cert_chain": []}}}) is None
    assert client_cn({"type": "http"}) is None
    for who in ("sae-x", "sae-x2"):  # the caller's identity is its certificate's CN, as the server saw it
        with pair.client(who) as c:
            assert c.get(f"{pair.url('Xinglong')}/api/v1/keys/sae-n/status").json()["master_SAE_ID"] == who


def test_corrupted_stored_key_gives_the_spec_error_and_is_never_served(tmp_path):
    """A bit flipped in a key reserved at the slave KME: dec_keys answers with an ETSI error body (503,
    "integrity"), not a bare 500, and the key is quarantined; a flip in the master's pool likewise stops
    enc_keys with 503 and issues nothing."""
    net = make_net(tmp_path, nbytes=1 << 12)
    a = start_in_thread(net.settings("Xinglong"))
    b = start_in_thread(net.settings("Nanshan"))
    try:
        r = enc(net, number=1, size=256)
        assert r.status_code == 200
        kid = r.json()["keys"][0]["key_ID"]
        for site, where in (("Nanshan", "key_id = ?"), ("Xinglong", "state = 'available' AND link = 'Nanshan'")):
            con = sqlite3.connect(net.stores[site])
            rid, off = con.execute(f"SELECT root_id, offset_bits FROM pieces WHERE {where}",
                                   (kid,) if "?" in where else ()).fetchone()
            mat = bytearray(con.execute("SELECT material FROM roots WHERE root_id = ?", (rid,)).fetchone()[0])
            mat[off // 8] ^= 0x04
            con.execute("UPDATE roots SET material = ? WHERE root_id = ?", (bytes(mat), rid))
            con.commit()
            con.close()
        r = dec(net, [kid])
        assert r.status_code == 503 and "integrity" in r.json()["message"], r.text
        with KeyStore(net.stores["Nanshan"]) as st:
            assert st.get(kid).state == "quarantined"
        r = enc(net, number=1, size=256)
        assert r.status_code == 503 and "integrity" in r.json()["message"], r.text
    finally:
        a.stop()
        b.stop()


def test_bench_kme_cli_prints_the_issue_figures():
    """`satqkd bench kme --json`: the figures of issue 9 (values are machine-dependent: only their sanity is checked)."""
    from typer.testing import CliRunner

    from satqkd.cli import app

    res = CliRunner().invoke(app, ["bench", "kme", "--clients", "4", "--seconds", "1", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"requests", "errors", "duplicates", "rps", "p50_ms", "p99_ms"} <= set(d)
    assert d["requests"] >= 4 and d["errors"] == 0 and d["duplicates"] == 0
    assert d["keys"] == d["requests"] and d["slave_mismatches"] == 0 and d["dec_errors"] == 0
    assert 0 < d["p50_ms"] <= d["p99_ms"] and d["rps"] > 0 and len(d["loadavg_before"]) == 3


def test_slave_kme_killed_mid_burst_the_link_holds(tmp_path):
    """kill -9 of the slave KME under load, restarted at once: the master's retries wait it out (same request ids).

    No request fails, no key is issued twice, and both stores agree bit for bit afterwards.
    """
    net = make_net(tmp_path, nbytes=1 << 16)
    limits = {**LIMITS, "peer_timeout_s": 90.0}  # generous: a restart on a busy machine may take several seconds
    pb = spawn_kme(net.stores["Nanshan"], net.pki.dir, net.network_path, KMES["Nanshan"], log_path=net.dir / "logs" / "b1.log",
                   ready_file=net.dir / "run" / "b1.ready", **limits)
    wait_ready(pb, net.dir / "run" / "b1.ready", net.dir / "logs" / "b1.log")
    pa = spawn_kme(net.stores["Xinglong"], net.pki.dir, net.network_path, KMES["Xinglong"], log_path=net.dir / "logs" / "a.log",
                   ready_file=net.dir / "run" / "a.ready", **limits)
    wait_ready(pa, net.dir / "run" / "a.ready", net.dir / "logs" / "a.log")
    received, failures, stop = [], [], threading.Event()

    def burst():
        with net.client("sae-x", timeout_s=180) as c:
            for _ in range(60):  # bounded
                if stop.is_set():
                    return
                r = c.post(f"{net.url('Xinglong')}/api/v1/keys/sae-n/enc_keys", json={"number": 2, "size": 128})
                if r.status_code != 200:
                    failures.append(r.text)
                    return
                received.extend((k["key_ID"], k["key"]) for k in r.json()["keys"])

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        while len(received) < 40 and time.monotonic() - t0 < 60:
            time.sleep(0.01)
        os.kill(pb.pid, signal.SIGKILL)  # mid-burst: some reservations recorded, their answers lost
        pb.wait()
        pb = spawn_kme(net.stores["Nanshan"], net.pki.dir, net.network_path, KMES["Nanshan"],
                       log_path=net.dir / "logs" / "b2.log", ready_file=net.dir / "run" / "b2.ready", **limits)
        wait_ready(pb, net.dir / "run" / "b2.ready", net.dir / "logs" / "b2.log")
        for t in threads:
            t.join(240)
        assert failures == [] and len(received) == 8 * 60 * 2  # every request served: the link waited, then retried
        assert len({k for k, _ in received}) == len(received) and len({v for _, v in received}) == len(received)
        _wait_settled(net)
        time.sleep(0.3)
        _check_consistent(net)
        got = {}
        ids = [k for k, _ in received]
        for j in range(0, len(ids), 16):
            r = dec(net, ids[j : j + 16])
            assert r.status_code == 200, r.text
            got.update({k["key_ID"]: k["key"] for k in r.json()["keys"]})
        assert got == dict(received)
    finally:
        stop.set()
        for t in threads:
            t.join(240)
        _stop(pa)
        _stop(pb)
