"""No key at one end only (docs/two-processes.md, "Key confirmation"): over TCP, through a proxy on
loopback that cuts the stream at every message boundary (each direction), inside the last message
of each direction, or alters any one message, a key *released* at one side is held (released or
pending) by the other with the same bytes; tampering releases nothing; and a later confirmation
session resolves every pending key the same way at both ends.

The proxy parses the frames (4-byte length + frame: the hello and every protocol message) and acts
on the k-th frame of one direction; a cut shuts both connections down, so every party sees the end
of the stream at once and nothing waits for a timeout (the timeouts are generous fall-backs)."""

import hashlib
import socket
import struct
import threading

import numpy as np
import pytest

import satqkd
from satqkd.protocol.keyfiles import key_bytes
from satqkd.protocol.poolfile import make_pool
from satqkd.protocol.remote import load_party_view, run_confirm, run_party
from satqkd.protocol.session import postprocess
from satqkd.rawio import load_raw, save_raw
from synthetic_passes import preset_pass_cut

CFG = satqkd.load_preset("micius-2016-12-19")
SEED = 3
EC = "hamming"  # few messages (Cascade: hundreds of round trips); the ending is the same for every method
#: upper bounds on the frames of a clean run through the proxy, per direction (the hello included):
#: the parametrisations cover k = 0 … MAX_FRAMES, the clean run asserts it fits, and boundaries past
#: the run's own count are skipped (the count moves with the EC method's round trips)
MAX_FRAMES = {"down": 28, "up": 20}
WAIT_S = 120.0  # generous: a slow, shared machine; nothing waits for it unless something hangs


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    save_raw(satqkd.simulate(CFG, seed=SEED, geometry=preset_pass_cut(CFG, 6)).raw, d)
    return d


@pytest.fixture(scope="module")
def views(raw_dir):
    return {r: load_party_view(raw_dir, r) for r in ("alice", "bob")}


@pytest.fixture(scope="module")
def reference_key(raw_dir) -> bytes:
    r = postprocess(load_raw(raw_dir), CFG, seed=SEED, ec=EC, key_ack=True)
    assert r.ok and r.keys_match, r.abort_reason
    return key_bytes(r.alice.key)


class Proxy:
    """Bob connects here; the proxy connects to Alice's port and pumps frames both ways.

    ``plan = (direction, k, action)``: on the k-th frame (0-based, the hello is frame 0) sent in
    ``direction`` ("down" Alice → Bob, "up" Bob → Alice): ``cut`` (shut both connections before
    forwarding it), ``partial`` (forward its first half, then cut), ``drop`` (do not forward it,
    go on) or ``tamper`` (flip the lowest bit of its last byte and go on).
    """

    def __init__(self, target_port: int, plan=None):
        self.target, self.plan = target_port, plan
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frames = {"down": 0, "up": 0}
        self.socks: list[socket.socket] = []
        self.acted = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        with self.server:
            self.server.settimeout(WAIT_S)
            b_sock, _ = self.server.accept()
        a_sock = socket.create_connection(("127.0.0.1", self.target), timeout=WAIT_S)
        self.socks = [a_sock, b_sock]
        for s in self.socks:
            s.settimeout(WAIT_S)
        pumps = [threading.Thread(target=self._pump, args=("down", a_sock, b_sock), daemon=True),
                 threading.Thread(target=self._pump, args=("up", b_sock, a_sock), daemon=True)]
        for p in pumps:
            p.start()
        for p in pumps:
            p.join(WAIT_S)
        for s in self.socks:
            s.close()

    def _cut(self):
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _read(sock, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _pump(self, d, src, dst):
        k = 0
        try:
            while True:
                head = self._read(src, 4)
                body = None if head is None else self._read(src, struct.unpack(">I", head)[0])
                if body is None:  # the sender closed: pass the end of stream on
                    dst.shutdown(socket.SHUT_WR)
                    return
                if self.plan is not None and self.plan[:2] == (d, k):
                    self.acted.set()
                    action = self.plan[2]
                    if action == "cut":
                        self._cut()
                        return
                    if action == "partial":
                        dst.sendall(head + body[: len(body) // 2])
                        self._cut()
                        return
                    if action == "drop":  # lost in transit, the connection stays up
                        k += 1
                        continue
                    assert action == "tamper"
                    body = body[:-1] + bytes([body[-1] ^ 1])
                dst.sendall(head + body)
                k += 1
                self.frames[d] = k
        except OSError:
            self._cut()

    def join(self):
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the proxy did not finish"


def _pools(tmp_path):
    a, b = tmp_path / "sat.pool", tmp_path / "ground.pool"
    make_pool(a, 20_000)
    b.write_bytes(a.read_bytes())
    return {"alice": a, "bob": b}


def _in_threads(alice_fn, bob_fn):
    """Alice listens (her port is handed to ``bob_fn``); both run to the end."""
    port, box, got, errors = threading.Event(), {}, {}, []

    def alice():
        try:
            got["alice"] = alice_fn(lambda p: (box.setdefault("port", p), port.set()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
            port.set()

    t = threading.Thread(target=alice, daemon=True)
    t.start()
    assert port.wait(WAIT_S)
    if errors:
        raise errors[0]
    got["bob"] = bob_fn(box["port"])
    t.join(WAIT_S)
    assert not t.is_alive(), "alice did not finish"
    if errors:
        raise errors[0]
    return got


def _run(views, tmp_path, plan):
    pools = _pools(tmp_path)
    outs = {"alice": tmp_path / "sat", "bob": tmp_path / "ground"}
    for d in outs.values():
        d.mkdir()  # as `satqkd party` does (it always writes summary.json there)
    kw = dict(seed=SEED, ec=EC, timeout_s=WAIT_S, message_timeout_s=WAIT_S)
    proxy: dict = {}

    def bob(alice_port):
        proxy["p"] = Proxy(alice_port, plan)
        return run_party("bob", views["bob"], CFG, pools["bob"], connect=("127.0.0.1", proxy["p"].port), out=outs["bob"], **kw)

    got = _in_threads(
        lambda on_listening: run_party("alice", views["alice"], CFG, pools["alice"], listen=("127.0.0.1", 0),
                                       on_listening=on_listening, out=outs["alice"], **kw),
        bob,
    )
    proxy["p"].join()
    return got, pools, outs, proxy["p"]


def _held(out, role):
    """``(state, bytes)`` of one party's run directory, checked against its file names."""
    rel, pend = out / "keys" / f"{role}.key", sorted((out / "keys" / "pending").glob("*.key"))
    assert len(pend) <= 1 and not (rel.exists() and pend), (rel, pend)
    for p in pend:
        assert p.stem == hashlib.sha256(p.read_bytes()).hexdigest()  # named by its SHA-256
    if rel.exists():
        return "released", rel.read_bytes()
    if pend:
        return "pending", pend[0].read_bytes()
    return "none", None


def _check_invariant(st, reference_key):
    for me, other in (("alice", "bob"), ("bob", "alice")):
        if st[me][0] == "released":
            assert st[me][1] == reference_key
            assert st[other][0] in ("released", "pending") and st[other][1] == st[me][1], st
    if st["alice"][1] is not None and st["bob"][1] is not None:
        assert st["alice"][1] == st["bob"][1], "both hold a key: the same one"


def _confirm(pools, outs):
    got = _in_threads(
        lambda on_listening: run_confirm("alice", outs["alice"], pools["alice"], listen=("127.0.0.1", 0), on_listening=on_listening,
                                         timeout_s=WAIT_S, message_timeout_s=WAIT_S),
        lambda port: run_confirm("bob", outs["bob"], pools["bob"], connect=("127.0.0.1", port), timeout_s=WAIT_S,
                                 message_timeout_s=WAIT_S),
    )
    for r in got.values():
        assert r.ok, r.error
    return got


@pytest.fixture(scope="module")
def frames(views, tmp_path_factory, reference_key) -> dict:
    """Frames per direction of a clean run through the proxy (seed 3, 6 s pass)."""
    st, proxy = _case(views, tmp_path_factory.mktemp("clean"), reference_key, None)
    assert st["alice"] == st["bob"] == ("released", reference_key)
    for d in ("down", "up"):
        assert 4 <= proxy.frames[d] <= MAX_FRAMES[d], proxy.frames  # the parametrisation covers every boundary
    return dict(proxy.frames)


def _within(frames, direction, k, *, last_included=True):
    if k > frames[direction] - (0 if last_included else 1):
        pytest.skip(f"this run sends {frames[direction]} frames {direction}")


def _case(views, tmp_path, reference_key, plan):
    got, pools, outs, proxy = _run(views, tmp_path, plan)
    st = {r: _held(outs[r], r) for r in ("alice", "bob")}
    for r in ("alice", "bob"):
        assert got[r].key_state == st[r][0], (r, got[r].key_state, st[r][0], got[r].abort_reason)
        assert (got[r].key_sha256 is None) == (st[r][1] is None)
    _check_invariant(st, reference_key)
    if "pending" in (st["alice"][0], st["bob"][0]):
        # a later authenticated contact resolves every pending key the same way at both ends
        _confirm(pools, outs)
        after = {r: _held(outs[r], r) for r in ("alice", "bob")}
        assert "pending" not in (after["alice"][0], after["bob"][0]), after
        assert after["alice"] == after["bob"] or after["alice"][0] == after["bob"][0] == "none", after
        for r in ("alice", "bob"):
            if st[r][0] == "released":
                assert after[r] == st[r]  # a released key stays released
        if after["alice"][0] == "released":
            assert after["alice"][1] == reference_key
    return st, proxy


def test_a_clean_run_through_the_proxy_releases_both_and_counts_the_frames(views, tmp_path, reference_key, frames):
    st, proxy = _case(views, tmp_path, reference_key, None)
    assert st["alice"] == st["bob"] == ("released", reference_key)
    assert proxy.frames == frames  # the same run twice sends the same frames
    pools, outs = {"alice": tmp_path / "sat.pool", "bob": tmp_path / "ground.pool"}, {"alice": tmp_path / "sat", "bob": tmp_path / "ground"}
    before = {r: p.read_bytes() for r, p in pools.items()}
    got = _confirm(pools, outs)  # nothing pending at either end: a confirmation uses no pool bit
    assert all(r.decisions == {} and r.pool_bits_reserved == 0 and r.key_state == "released" for r in got.values())
    assert {r: p.read_bytes() for r, p in pools.items()} == before


@pytest.mark.parametrize("direction,k", [(d, k) for d in ("down", "up") for k in range(MAX_FRAMES[d] + 1)])
def test_a_cut_at_every_message_boundary_never_leaves_a_key_at_one_end_only(views, tmp_path, reference_key, frames, direction, k):
    _within(frames, direction, k)
    FRAMES = frames
    st, proxy = _case(views, tmp_path, reference_key, (direction, k, "cut"))
    assert proxy.acted.is_set() == (k < FRAMES[direction])
    if k == FRAMES[direction]:  # past the last frame of that direction: nothing cut
        assert st["alice"] == st["bob"] == ("released", reference_key)
    if direction == "down" and k == FRAMES["down"] - 1:  # Alice's acknowledgement lost
        assert st["alice"] == ("released", reference_key) and st["bob"] == ("pending", reference_key)
    if direction == "up" and k == FRAMES["up"] - 1:  # Bob's final tag lost: both hold it, neither knows
        assert st["alice"] == st["bob"] == ("pending", reference_key)
    if direction == "down" and k == FRAMES["down"] - 2:  # Alice's final tag lost
        assert st["alice"] == ("pending", reference_key) and st["bob"][0] == "none"


@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_cut_inside_the_last_message_never_leaves_a_key_at_one_end_only(views, tmp_path, reference_key, frames, direction):
    st, proxy = _case(views, tmp_path, reference_key, (direction, frames[direction] - 1, "partial"))
    assert proxy.acted.is_set()
    if direction == "down":
        assert st["alice"] == ("released", reference_key) and st["bob"] == ("pending", reference_key)
    else:
        assert st["alice"] == st["bob"] == ("pending", reference_key)


def test_a_dropped_acknowledgement_leaves_bob_pending_while_the_connection_stays_up(views, tmp_path, reference_key, frames):
    """Only the last message can be dropped without both sides waiting on each other (Alice then
    closes; Bob sees the end of the stream, not a timeout)."""
    st, proxy = _case(views, tmp_path, reference_key, ("down", frames["down"] - 1, "drop"))
    assert proxy.acted.is_set()
    assert st["alice"] == ("released", reference_key) and st["bob"] == ("pending", reference_key)


@pytest.mark.parametrize("direction,k", [(d, k) for d in ("down", "up") for k in range(MAX_FRAMES[d])])
def test_tampering_with_any_message_releases_nothing(views, tmp_path, reference_key, frames, direction, k):
    _within(frames, direction, k, last_included=False)
    FRAMES = frames
    st, proxy = _case(views, tmp_path, reference_key, (direction, k, "tamper"))
    assert proxy.acted.is_set()
    if direction == "down" and k == FRAMES["down"] - 1:
        # the acknowledgement is the last message: altering it is losing it. Alice released when
        # Bob's final tag verified, before sending it; Bob keeps the key pending
        assert st["alice"] == ("released", reference_key) and st["bob"] == ("pending", reference_key)
    else:
        assert "released" not in (st["alice"][0], st["bob"][0]), st


def test_in_process_run_releases_both_and_charges_the_acknowledgement_only_with_key_ack(raw_dir):
    raw = load_raw(raw_dir)
    plain, acked = postprocess(raw, CFG, seed=SEED, ec=EC), postprocess(raw, CFG, seed=SEED, ec=EC, key_ack=True)
    for r in (plain, acked):
        assert r.ok and r.keys_match and r.alice.key_state == r.bob.key_state == "released"
    assert plain.bob.auth_key_bits == 639 and acked.bob.auth_key_bits == 639 + 256
    assert plain.final_key_bits - acked.final_key_bits in range(250, 262)  # the pad pair, charged in ℓ
    assert np.any(plain.alice.key[: acked.final_key_bits] != acked.alice.key) or plain.final_key_bits != acked.final_key_bits


def test_the_command_line_leaves_a_lost_acknowledgement_pending_and_party_confirm_releases_it(raw_dir, tmp_path, reference_key, frames):
    """`satqkd party` as two processes through the proxy, which cuts before Alice's acknowledgement:
    Alice exits 0 (released), Bob exits 1 with his key pending; `satqkd party confirm` at both ends
    releases Bob's key, and the summaries say so."""
    import json
    import re
    import subprocess
    import sys

    cli = [sys.executable, "-m", "satqkd.cli"]
    pools = _pools(tmp_path)
    outs = {"alice": tmp_path / "sat", "bob": tmp_path / "ground"}
    common = ["--seed", str(SEED), "--ec", EC, "--timeout-s", "120", "--message-timeout-s", "120"]

    def start(args):
        return subprocess.Popen([*cli, "party", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def port_of(proc):
        for line in proc.stderr:
            m = re.search(r"listening on [\d.]+:(\d+)", line)
            if m:
                return int(m.group(1))
        raise AssertionError(proc.communicate(timeout=WAIT_S))

    a = start(["alice", str(raw_dir), "--listen", "127.0.0.1:0", "--pool", str(pools["alice"]), "--out", str(outs["alice"]), *common])
    proxy = Proxy(port_of(a), ("down", frames["down"] - 1, "cut"))
    b = start(["bob", str(raw_dir), "--connect", f"127.0.0.1:{proxy.port}", "--pool", str(pools["bob"]), "--out", str(outs["bob"]), *common])
    (_, eb), (_, ea) = b.communicate(timeout=WAIT_S), a.communicate(timeout=WAIT_S)
    proxy.join()
    assert a.returncode == 0, ea
    assert b.returncode == 1 and "key pending" in eb, eb
    sa, sb = (json.loads((outs[r] / "summary.json").read_text()) for r in ("alice", "bob"))
    digest = hashlib.sha256(reference_key).hexdigest()
    assert (sa["key_state"], sa["key_sha256"]) == ("released", digest)
    assert (sb["key_state"], sb["key_sha256"]) == ("pending", digest)
    assert (outs["bob"] / "keys" / "pending" / f"{digest}.key").read_bytes() == reference_key
    assert not (outs["bob"] / "keys" / "bob.key").exists()
    # a new run into Bob's directory is refused while the key there is pending
    r = subprocess.run([*cli, "party", "bob", str(raw_dir), "--connect", "127.0.0.1:9", "--pool", str(pools["bob"]),
                        "--out", str(outs["bob"])], capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 2 and "pending key" in r.stderr

    ca = subprocess.Popen([*cli, "party", "confirm", "alice", str(outs["alice"]), "--listen", "127.0.0.1:0", "--pool", str(pools["alice"])],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cb = subprocess.run([*cli, "party", "confirm", "bob", str(outs["bob"]), "--connect", f"127.0.0.1:{port_of(ca)}", "--pool", str(pools["bob"])],
                        capture_output=True, text=True, timeout=WAIT_S)
    _, eca = ca.communicate(timeout=WAIT_S)
    assert ca.returncode == 0 and cb.returncode == 0, (eca, cb.stderr)
    sb = json.loads((outs["bob"] / "summary.json").read_text())
    assert (sb["key_state"], sb["key_sha256"]) == ("released", digest) and sb["confirmations"][-1]["decisions"] == {digest: "released"}
    assert (outs["bob"] / "keys" / "bob.key").read_bytes() == reference_key == (outs["alice"] / "keys" / "alice.key").read_bytes()
    assert not any((outs["bob"] / "keys" / "pending").glob("*.key"))
    assert pools["alice"].read_bytes() == pools["bob"].read_bytes()  # both used the run's and the confirmation's bits
