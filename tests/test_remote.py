"""Alice and Bob as two processes over TCP (``satqkd party``): same keys as in one process, pool bits
consumed exactly once, clean failures (docs/two-processes.md)."""

import json
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import satqkd
from satqkd.postprocess.authentication import KeyPool
from satqkd.protocol.channel import tcp_pair
from satqkd.protocol.poolfile import PoolFileError, make_pool, read_pool, write_pool
from satqkd.protocol.remote import load_party_view, run_alice, run_bob, run_party
from satqkd.protocol.session import postprocess
from satqkd.rawio import PUBLIC_META, load_raw, save_raw
from satqkd.records import PassGeometry
from synthetic_passes import preset_pass_cut

SATQKD = [sys.executable, "-m", "satqkd.cli"]
CFG = satqkd.load_preset("micius-2016-12-19")
SEED = 3


def _short_geometry(seconds: int) -> PassGeometry:
    return preset_pass_cut(CFG, seconds)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    save_raw(satqkd.simulate(CFG, seed=SEED, geometry=_short_geometry(12)).raw, d)
    return d


@pytest.fixture(scope="module")
def reference(raw_dir):
    """The in-process run with the same seed and options."""
    r = postprocess(load_raw(raw_dir), CFG, seed=SEED, key_ack=True)
    assert r.ok and r.keys_match, r.abort_reason
    return r


def _packed(key) -> bytes:
    return np.packbits(np.asarray(key, dtype=np.uint8)).tobytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(role, raw, pool, out, *args):
    return subprocess.Popen(
        [*SATQKD, "party", role, str(raw), "--pool", str(pool), "--out", str(out), "--seed", str(SEED), "--timeout-s", "30", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _listening_port(proc) -> tuple[int, str]:
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            return int(m.group(1)), "".join(seen)
    out, err = proc.communicate(timeout=30)
    raise AssertionError(f"no listening line: {''.join(seen)}{err}{out}")


def _finish(proc, head=""):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, head + err


def _pair(raw, pools, outs, *extra, listener="alice"):
    """Run the two parties as two processes; ``listener`` listens on a free port, the other connects."""
    other = "bob" if listener == "alice" else "alice"
    lp = _start(listener, raw, pools[listener], outs[listener], "--listen", "127.0.0.1:0", *extra)
    port, head = _listening_port(lp)
    cp = _start(other, raw, pools[other], outs[other], "--connect", f"127.0.0.1:{port}", *extra)
    return {other: _finish(cp), listener: _finish(lp, head)}


def _pools(tmp_path, bits=10_000, seed=None):
    a, b = tmp_path / "sat.pool", tmp_path / "ground.pool"
    make_pool(a, bits, seed=seed)
    b.write_bytes(a.read_bytes())
    return {"alice": a, "bob": b}


# ------------------------------------------------------------------------------ in process
def test_run_alice_and_run_bob_over_tcp_pair_give_the_postprocess_keys(raw_dir, reference):
    pool = KeyPool.from_rng(4096, np.random.default_rng(1))
    a_ep, b_ep = tcp_pair(pool, pool.copy(), CFG.classical, 0.003, timeout_s=30, auth_mode="transcript")
    alice_view, bob_view = load_party_view(raw_dir, "alice"), load_party_view(raw_dir, "bob")
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("alice", run_alice(alice_view, CFG, a_ep, seed=SEED)))
    t.start()
    got["bob"] = run_bob(bob_view, CFG, b_ep, seed=SEED)
    t.join()
    a_ep.close(), b_ep.close()
    assert got["alice"].ok and got["bob"].ok, (got["alice"].abort_reason, got["bob"].abort_reason)
    assert np.array_equal(got["alice"].key, got["bob"].key)
    assert np.array_equal(got["alice"].key, reference.alice.key)
    assert got["alice"].auth_key_bits == got["bob"].auth_key_bits == reference.bob.auth_key_bits == 895
    assert a_ep.stats.bytes_up == b_ep.stats.bytes_up == reference.channel.bytes_up
    assert "synchronisation" in got["bob"].stage_seconds


def test_each_party_reads_only_its_own_records(raw_dir):
    full = load_raw(raw_dir)
    a, b = load_party_view(raw_dir, "alice"), load_party_view(raw_dir, "bob")
    assert np.array_equal(a.alice_bit, full.alice_bit) and np.array_equal(a.slice_emitted, full.slice_emitted)
    assert a.bob_time_ps.size == a.bob_detector.size == a.beacon_time_ps.size == 0
    assert np.array_equal(b.bob_time_ps, full.bob_time_ps) and np.array_equal(b.beacon_index, full.beacon_index)
    assert b.alice_pulse_index.size == b.alice_bit.size == b.alice_basis.size == 0 and b.slice_emitted.shape == (0, 3)
    for v in (a, b):  # only the public pass data; no simulation ground truth
        assert v.truth_pulse_index is None
        assert set(v.meta) <= set(PUBLIC_META)
        assert v.meta["pass_id"] == full.meta["pass_id"]


def test_pool_file_drops_bits_exactly_and_detects_corruption(tmp_path):
    p = tmp_path / "p.pool"
    pf = make_pool(p, 1001, seed=5)
    assert pf.insecure and read_pool(p) == pf
    with pytest.raises(PoolFileError, match="never overwritten"):
        make_pool(p, 10)
    bits = np.unpackbits(np.frombuffer(pf.data, np.uint8))[:1001]
    for k in (0, 3, 8, 639, 1000, 1001):
        d = pf.drop(k)
        assert d.offset == k and d.nbits == 1001 - k
        assert np.array_equal(np.unpackbits(np.frombuffer(d.data, np.uint8))[: d.nbits], bits[k:])
        assert len(d.data) == (d.nbits + 7) // 8
        if d.nbits % 8:
            assert d.data[-1] & (0xFF >> (d.nbits % 8)) == 0  # zero padding
    kp = pf.key_pool(639)
    assert kp.size_bits == 639 and kp.take_int(639) == KeyPool(pf.data, 1001).take_int(639)
    b = bytearray(p.read_bytes())
    b[50] ^= 1
    p.write_bytes(bytes(b))
    with pytest.raises(PoolFileError, match="checksum"):
        read_pool(p)
    q = make_pool(tmp_path / "q.pool", 64)
    assert not q.insecure and q.pool_id != pf.pool_id


def test_split_files_hold_only_each_sides_records(raw_dir, tmp_path):
    from typer.testing import CliRunner

    from satqkd.cli import app

    r = CliRunner().invoke(app, ["party", "split", str(raw_dir), "--alice-out", str(tmp_path / "a"), "--bob-out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    full, a, b = load_raw(raw_dir), load_raw(tmp_path / "a"), load_raw(tmp_path / "b")
    assert np.array_equal(a.alice_pulse_index, full.alice_pulse_index) and np.array_equal(a.slice_emitted, full.slice_emitted)
    assert a.bob_time_ps.size == a.beacon_time_ps.size == 0 and b.alice_bit.size == b.slice_emitted.size == 0
    assert np.array_equal(b.bob_detector, full.bob_detector) and np.array_equal(b.beacon_time_ps, full.beacon_time_ps)
    assert set(a.meta) == set(b.meta) <= set(PUBLIC_META)


def test_run_party_in_threads_on_split_files_meets_the_larger_pool_offset(raw_dir, reference, tmp_path):
    """Each side from its own file only. Copies out of step (one side lost bits, e.g. a crash after
    reserving): both skip forward to the larger offset, never back, and end identical."""
    save_raw(load_party_view(raw_dir, "alice"), tmp_path / "a")
    save_raw(load_party_view(raw_dir, "bob"), tmp_path / "b")
    pools = _pools(tmp_path)
    write_pool(read_pool(pools["bob"]).drop(1000), pools["bob"])
    port = threading.Event()
    box, got = {}, {}

    def alice():
        got["alice"] = run_party("alice", load_party_view(tmp_path / "a", "alice"), CFG, pools["alice"], listen=("127.0.0.1", 0), seed=SEED,
                                 timeout_s=30, on_listening=lambda p: (box.setdefault("port", p), port.set()))

    t = threading.Thread(target=alice)
    t.start()
    assert port.wait(30)
    got["bob"] = run_party("bob", load_party_view(tmp_path / "b", "bob"), CFG, pools["bob"], connect=("127.0.0.1", box["port"]), seed=SEED, timeout_s=30)
    t.join()
    a, b = got["alice"], got["bob"]
    assert a.ok and b.ok, (a.abort_reason, b.abort_reason)
    assert np.array_equal(a.outcome.key, b.outcome.key) and np.array_equal(a.outcome.key, reference.alice.key)
    assert (a.pool_bits_skipped, b.pool_bits_skipped) == (1000, 0)
    assert a.pool_offset_after == b.pool_offset_after == 1000 + 895
    assert pools["alice"].read_bytes() == pools["bob"].read_bytes()


# ------------------------------------------------------------------------------ two processes
def test_two_processes_give_the_in_process_keys_and_consume_the_pool_once(raw_dir, reference, tmp_path):
    pools = _pools(tmp_path)
    outs = {"alice": tmp_path / "sat", "bob": tmp_path / "ground"}
    res = _pair(raw_dir, pools, outs)
    for role, (rc, out, err) in res.items():
        assert rc == 0, (role, out, err)
    a_key = (outs["alice"] / "keys" / "alice.key").read_bytes()
    b_key = (outs["bob"] / "keys" / "bob.key").read_bytes()
    assert a_key == b_key == _packed(reference.alice.key)
    sa = json.loads((outs["alice"] / "summary.json").read_text())
    sb = json.loads((outs["bob"] / "summary.json").read_text())
    for s in (sa, sb):
        assert s["final_key_bits"] == reference.final_key_bits and not s["aborted"]
        assert s["epsilon"] == pytest.approx(sum(reference.bob.epsilon_parts.values()))
        assert s["auth_key_bits"] == 895 and s["auth_pool"]["bits_reserved_and_discarded"] == 895
        assert s["classical_bytes_up"] == reference.channel.bytes_up and s["round_trips"] == reference.channel.round_trips
    assert sa["role"] == "alice" and sb["role"] == "bob" and sb["qber_key"] == pytest.approx(reference.bob.qber)
    pa = read_pool(pools["alice"])
    assert pa.nbits == 10_000 - sa["auth_key_bits"] and pa.offset == sa["auth_key_bits"]
    assert pools["alice"].read_bytes() == pools["bob"].read_bytes()

    # again with the shorter pools, the other way round (Bob listens) and the connecting side
    # started first: works, and uses the next, fresh bits
    port = _free_port()
    outs2 = {"alice": tmp_path / "sat2", "bob": tmp_path / "ground2"}
    ap = _start("alice", raw_dir, pools["alice"], outs2["alice"], "--connect", f"127.0.0.1:{port}")
    time.sleep(0.5)
    bp = _start("bob", raw_dir, pools["bob"], outs2["bob"], "--listen", f"127.0.0.1:{port}")
    (rca, _, ea), (rcb, _, eb) = _finish(ap), _finish(bp)
    assert rca == 0 and rcb == 0, (ea, eb)
    assert (outs2["alice"] / "keys" / "alice.key").read_bytes() == (outs2["bob"] / "keys" / "bob.key").read_bytes()
    s2 = json.loads((outs2["alice"] / "summary.json").read_text())
    assert s2["auth_pool"]["offset_before"] == 895 and s2["auth_pool"]["offset_after"] == 2 * 895
    assert read_pool(pools["bob"]).nbits == 10_000 - 2 * 895
    assert pools["alice"].read_bytes() == pools["bob"].read_bytes()


def test_different_pools_are_refused_and_no_bit_is_used(raw_dir, tmp_path):
    pa, pb = tmp_path / "a.pool", tmp_path / "b.pool"
    make_pool(pa, 5000)
    make_pool(pb, 5000)
    before = pa.read_bytes(), pb.read_bytes()
    outs = {"alice": tmp_path / "sat", "bob": tmp_path / "ground"}
    res = _pair(raw_dir, {"alice": pa, "bob": pb}, outs)
    for role, (rc, out, err) in res.items():
        assert rc == 1, (role, out, err)
        assert "another pool" in err
        assert not (outs[role] / "keys").exists()
        assert json.loads((outs[role] / "summary.json").read_text())["aborted"]
    assert (pa.read_bytes(), pb.read_bytes()) == before


def test_same_pool_id_other_bits_fails_authentication_and_discards_the_reservation(raw_dir, tmp_path):
    pools = _pools(tmp_path, 5000)
    pf = read_pool(pools["bob"])
    write_pool(pf.__class__(pf.pool_id, pf.offset, pf.nbits, pf.insecure, bytes(x ^ 0x5A for x in pf.data)), pools["bob"])
    outs = {"alice": tmp_path / "sat", "bob": tmp_path / "ground"}
    res = _pair(raw_dir, pools, outs)
    for role, (rc, out, err) in res.items():
        assert rc == 1, (role, out, err)
        assert not (outs[role] / "keys").exists()
        s = json.loads((outs[role] / "summary.json").read_text())
        assert s["aborted"] and s["final_key_bits"] == 0
        assert s["auth_pool"]["bits_reserved_and_discarded"] == 895 and s["auth_key_bits"] <= 895
        assert read_pool(pools[role]).nbits == 5000 - 895  # the whole reservation is gone on both sides
    assert "AuthenticationError" in res["bob"][2]  # Bob checks Alice's checkpoint tag first
    assert "peer aborted" in res["alice"][2]


def test_pool_too_small_exits_2_before_connecting(raw_dir, tmp_path):
    pool = tmp_path / "small.pool"
    make_pool(pool, 600)
    before = pool.read_bytes()
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = subprocess.run([*SATQKD, "party", "bob", str(raw_dir), "--connect", f"127.0.0.1:{_free_port()}", "--pool", str(pool),
                        "--out", str(out), "--timeout-s", "30"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "600 bits left, a run needs 895" in r.stderr
    assert time.perf_counter() - t0 < 25  # did not wait for a peer
    assert not out.exists() and pool.read_bytes() == before


def test_bad_arguments_exit_2_and_write_nothing(raw_dir, tmp_path):
    from typer.testing import CliRunner

    from satqkd.cli import app

    pools = _pools(tmp_path)
    out = tmp_path / "out"
    base = ["party", "alice", str(raw_dir), "--pool", str(pools["alice"]), "--out", str(out)]
    runner = CliRunner()
    for args, needle in (
        (base, "exactly one of --listen"),
        ([*base, "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:1"], "exactly one of --listen"),
        ([*base, "--listen", "localhost"], "HOST:PORT"),
        ([*base, "--listen", "127.0.0.1:0", "--ec", "turbo"], "--ec"),
        (["party", "alice", str(tmp_path / "nothing"), "--pool", str(pools["alice"]), "--out", str(out), "--listen", "127.0.0.1:0"], "raw"),
        (["party", "alice", str(raw_dir), "--pool", str(tmp_path / "none.pool"), "--out", str(out), "--listen", "127.0.0.1:0"], "no pool file"),
        (["party", "make-pool", str(pools["alice"]), "--bits", "100"], "never overwritten"),
        ([*base, "--listen", "127.0.0.1:0", "--ledger", str(tmp_path / "no-such-dir" / "usage.ledger")], "does not exist"),
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and needle in r.stderr, (args, r.stderr)
    assert not out.exists() and pools["alice"].read_bytes() == pools["bob"].read_bytes()
    (out / "keys").mkdir(parents=True)
    (out / "keys" / "alice.key").write_bytes(b"old")
    r = runner.invoke(app, [*base, "--listen", "127.0.0.1:0"])
    assert r.exit_code == 2 and "never overwritten" in r.stderr
    assert (out / "keys" / "alice.key").read_bytes() == b"old" and not (out / "summary.json").exists()
    r = runner.invoke(app, ["party", "make-pool", str(tmp_path / "demo.pool"), "--bits", "1000", "--seed", "1"])
    assert r.exit_code == 0 and "NOT secret" in r.stderr and read_pool(tmp_path / "demo.pool").insecure


@pytest.mark.parametrize("how", ["--connect", "--listen"])
def test_a_party_without_peer_gives_up_after_the_timeout(raw_dir, tmp_path, how):
    pools = _pools(tmp_path)
    before = pools["bob"].read_bytes()
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = subprocess.run([*SATQKD, "party", "bob", str(raw_dir), how, f"127.0.0.1:{_free_port()}", "--pool", str(pools["bob"]),
                        "--out", str(out), "--timeout-s", "1.5"], capture_output=True, text=True, timeout=60)
    dt = time.perf_counter() - t0
    assert r.returncode == 1, r.stderr
    assert ("no peer listening at" if how == "--connect" else "no peer connected to") in r.stderr and "within 1.5 s" in r.stderr
    assert dt < 20
    assert pools["bob"].read_bytes() == before  # no bit used
    assert not (out / "keys").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["aborted"] and "within 1.5 s" in s["abort_reason"] and s["auth_pool"]["bits_reserved_and_discarded"] == 0


# ------------------------------------------------------------------------------ usage ledger (issue 8 §4)
def _server():
    s = socket.create_server(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _nothing_connected(server) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_restoring_a_backup_of_both_pools_is_refused_at_both_ends_before_anything_is_sent(raw_dir, tmp_path):
    pools = _pools(tmp_path)
    backup = {r: p.read_bytes() for r, p in pools.items()}
    res = _pair(raw_dir, pools, {"alice": tmp_path / "sat", "bob": tmp_path / "ground"})
    assert all(rc == 0 for rc, _, _ in res.values()), res
    for r, p in pools.items():  # the ledgers beside the pools hold the run's claim
        assert p.with_name(p.name + ".ledger").is_file()
        p.write_bytes(backup[r])  # restore the backup: both copies agree, offset 0 again
    with _server() as server:
        port = server.getsockname()[1]
        for role in ("alice", "bob"):
            out = tmp_path / f"again-{role}"
            r = subprocess.run([*SATQKD, "party", role, str(raw_dir), "--connect", f"127.0.0.1:{port}", "--pool", str(pools[role]),
                                "--out", str(out), "--seed", str(SEED), "--timeout-s", "30"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 2, (role, r.stdout, r.stderr)
            assert "restored from a backup or copied" in r.stderr and "ledger" in r.stderr and "Traceback" not in r.stderr
            assert pools[role].read_bytes() == backup[role]  # no pool bit used
            assert not out.exists()
        assert _nothing_connected(server)  # nothing was sent: neither side even connected


def test_a_copied_pool_sharing_the_site_ledger_is_refused_and_the_ledger_is_checked_in_the_api(raw_dir, tmp_path):
    from satqkd.ledger import UsageLedger
    from satqkd.protocol.remote import PoolReuseRefused, pool_resource

    pools = _pools(tmp_path)
    ledgers = {"alice": tmp_path / "site-a" / "usage.ledger", "bob": tmp_path / "site-b" / "usage.ledger"}
    for p in ledgers.values():
        p.parent.mkdir()
    pf = read_pool(pools["alice"])
    UsageLedger(ledgers["alice"]).claim(pool_resource(pf), 0, 895, purpose="an earlier run")
    copy = tmp_path / "elsewhere" / "copy.pool"  # the same pool copied to another path: its own default ledger is empty
    copy.parent.mkdir()
    copy.write_bytes(pools["alice"].read_bytes())
    with pytest.raises(PoolReuseRefused, match="records its bits up to 895"):
        run_party("alice", load_party_view(raw_dir, "alice"), CFG, copy, listen=("127.0.0.1", 0), ledger=ledgers["alice"], timeout_s=5)
    assert copy.read_bytes() == pools["alice"].read_bytes()
    ledgers["bob"].write_text("not a ledger line\n")  # a damaged ledger fails closed
    with _server() as server:
        r = subprocess.run([*SATQKD, "party", "bob", str(raw_dir), "--connect", f"127.0.0.1:{server.getsockname()[1]}",
                            "--pool", str(pools["bob"]), "--ledger", str(ledgers["bob"]), "--out", str(tmp_path / "b"),
                            "--timeout-s", "30"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "damaged" in r.stderr, r.stderr
        assert _nothing_connected(server)


def test_the_ledger_claim_precedes_the_first_protocol_message(raw_dir, tmp_path):
    """Write-ahead: the ledger holds the run's range (and the skipped bits) before the protocol starts."""
    from satqkd.ledger import UsageLedger

    pools = _pools(tmp_path)
    write_pool(read_pool(pools["bob"]).drop(100), pools["bob"])
    seen = {}

    def status(role):
        def cb(msg):
            if msg.startswith("running the protocol"):
                p = pools[role]
                seen[role] = [(c.start, c.stop) for c in UsageLedger(p.with_name(p.name + ".ledger")).claims()]
        return cb

    port = threading.Event()
    box, got = {}, {}
    t = threading.Thread(target=lambda: got.setdefault("alice", run_party(
        "alice", load_party_view(raw_dir, "alice"), CFG, pools["alice"], listen=("127.0.0.1", 0), seed=SEED, timeout_s=30,
        on_status=status("alice"), on_listening=lambda p: (box.setdefault("port", p), port.set()))))
    t.start()
    assert port.wait(30)
    got["bob"] = run_party("bob", load_party_view(raw_dir, "bob"), CFG, pools["bob"], connect=("127.0.0.1", box["port"]), seed=SEED,
                           timeout_s=30, on_status=status("bob"))
    t.join()
    assert got["alice"].ok and got["bob"].ok
    assert seen == {"alice": [(0, 100 + 895)], "bob": [(100, 100 + 895)]}
