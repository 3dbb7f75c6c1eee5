"""The site ledger of consumed key ranges: overlaps refused, claims durable, damage fails closed."""

import multiprocessing as mp
import os
import stat

import pytest

from satqkd.ledger import LedgerConflict, LedgerError, UsageLedger


def test_overlap_is_refused_and_disjoint_ranges_are_not(tmp_path):
    led = UsageLedger(tmp_path / "site.ledger")
    led.claim("pool:a", 0, 100, purpose="run 1")
    led.claim("pool:a", 100, 200)
    led.claim("pool:b", 0, 100)  # another resource has its own numbering
    for a, b in [(0, 1), (99, 101), (150, 160), (199, 300), (0, 500)]:
        with pytest.raises(LedgerConflict, match="pool:a"):
            led.claim("pool:a", a, b)
        with pytest.raises(LedgerConflict):
            led.check("pool:a", a, b)
    led.check("pool:a", 200, 201)
    assert led.used_bits("pool:a") == 200 and led.used_bits("pool:b") == 100
    assert [(c.start, c.stop) for c in led.claims("pool:a")] == [(0, 100), (100, 200)]


def test_claim_many_is_all_or_nothing(tmp_path):
    led = UsageLedger(tmp_path / "l")
    led.claim("r", 10, 20)
    with pytest.raises(LedgerConflict):
        led.claim_many([("s", 0, 5), ("r", 15, 16)])
    assert led.claims("s") == []
    with pytest.raises(LedgerConflict):
        led.claim_many([("s", 0, 5), ("s", 4, 6)])


def test_bad_ranges_and_missing_directory(tmp_path):
    led = UsageLedger(tmp_path / "l")
    for a, b in [(-1, 3), (5, 5), (6, 2), (1.5, 3)]:
        with pytest.raises(LedgerError):
            led.claim("r", a, b)
    with pytest.raises(LedgerError, match="does not exist"):
        UsageLedger(tmp_path / "nope" / "l").claim("r", 0, 1)


def test_file_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        UsageLedger(tmp_path / "l").claim("r", 0, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "l").stat().st_mode) == 0o600


def test_torn_last_line_is_ignored_and_a_damaged_line_fails_closed(tmp_path):
    p = tmp_path / "l"
    led = UsageLedger(p)
    led.claim("r", 0, 10)
    with open(p, "ab") as fh:
        fh.write(b'{"resource":"r","start":10,"st')  # a crash while appending
    assert led.used_bits("r") == 10
    led.claim("r", 10, 20)
    assert [(c.start, c.stop) for c in led.claims("r")] == [(0, 10), (10, 20)]
    lines = p.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"stop":10', b'"stop":1')  # history rewritten: 1..10 would look fresh
    p.write_bytes(b"\n".join(lines))
    with pytest.raises(LedgerError, match="line 1 is damaged"):
        led.claim("r", 30, 40)
    with pytest.raises(LedgerError):
        led.claims()


def _claimer(path, start, q):
    try:
        UsageLedger(path).claim("shared", start, start + 50)
        q.put(("ok", start))
    except LedgerConflict:
        q.put(("refused", start))


def test_parallel_processes_cannot_both_claim_one_range(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(tmp_path / "l"), 25 * (i % 2), q)) for i in range(6)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
    results = [q.get(timeout=10) for _ in procs]
    assert sum(r == "ok" for r, _ in results) == 1
    claims = UsageLedger(tmp_path / "l").claims("shared")
    assert len(claims) == 1


def test_high_water_is_the_end_of_the_highest_claim_per_resource(tmp_path):
    led = UsageLedger(tmp_path / "l")
    assert led.high_water("pool:aa") == 0  # no file yet
    led.claim("pool:aa", 0, 895)
    led.claim("pool:aa", 2000, 2383)
    led.claim("pool:bb", 0, 10_000)
    assert led.high_water("pool:aa") == 2383 and led.high_water("pool:bb") == 10_000 and led.high_water("pool:cc") == 0
