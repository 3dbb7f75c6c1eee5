"""Ingest of real detector data: PTU / Photon-HDF5 / tables → raw records → the same keys; beaconless
sync; refusal of bad files (exit 2, nothing written); exports."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import satqkd
from satqkd.ingest import (
    IngestError, build_raw, load_transmitter, parse_channel_map, prng_settings, read_photon_hdf5, read_ptu, read_table,
    write_photon_hdf5, write_ptu, write_table,
)
from satqkd.ingest.tags import TimeTags
from satqkd.ingest.transmitter import save_transmitter_npz, splitmix64_labels
from satqkd.quantum.correlation_sync import SyncError, correlation_sync, virtual_beacons
from satqkd.quantum.timing import synchronise
from satqkd.rawio import load_raw

from synthetic_passes import preset_pass_cut

CFG = satqkd.load_preset("micius-2016-12-19")
SATQKD = [sys.executable, "-m", "satqkd.cli"]
CHANNELS = "H=0,V=1,D=2,A=3,beacon=4"


def run(*args):
    return subprocess.run([*SATQKD, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def raw():
    """A 20 s slice of the preset pass around culmination (≈ 6e5 tags)."""
    return satqkd.simulate(CFG, seed=11, geometry=preset_pass_cut(CFG, 20)).raw


def _file_tags(raw):
    """Bob's detector tags (channels 0–3) and beacon tags (channel 4) in time order, from 0 ps."""
    org = int(min(raw.bob_time_ps.min(), raw.beacon_time_ps.min()))
    ch = np.concatenate([raw.bob_detector.astype(np.int64), np.full(raw.beacon_time_ps.size, 4)])
    t = np.concatenate([raw.bob_time_ps, raw.beacon_time_ps]) - org
    o = np.argsort(t, kind="stable")
    return ch[o], t[o], org


@pytest.fixture(scope="module")
def files(raw, tmp_path_factory):
    d = tmp_path_factory.mktemp("ingest")
    ch, t, org = _file_tags(raw)
    write_ptu(d / "pass.ptu", ch, t, mode="T2")
    write_ptu(d / "pass_t3.ptu", ch, t, mode="T3", sync_period_ps=10_000)
    write_photon_hdf5(d / "pass.h5", ch, t)
    write_table(d / "pass.parquet", ch, t)
    save_transmitter_npz(d / "alice.npz", raw)
    return d, org


# ------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("mode", ["T2", "T3"])
def test_ptu_writer_is_read_back_exactly_by_ptufile(tmp_path, mode):
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 10**12, 5000))
    t[-1] = t[-2] + 7 * 10**11  # a gap of hundreds of wraps: overflow records with counts > 127 in total
    ch = rng.integers(0, 6, t.size)
    write_ptu(tmp_path / "x.ptu", ch, t, mode=mode)
    tags = read_ptu(tmp_path / "x.ptu")
    assert tags.meta["mode"] == mode and tags.meta["non_photon_records"] > 0
    np.testing.assert_array_equal(tags.time_ps, t)
    np.testing.assert_array_equal(tags.channel, ch)


@pytest.mark.parametrize("rectype", [0x00010207, 0x01010204, 0x00010307, 0x01010304])
def test_compiled_decoder_equals_ptufile_decode_records(tmp_path, rectype):
    import ptufile

    from satqkd.ingest.ptu import _decode

    rng = np.random.default_rng(rectype & 0xFF)
    t = np.cumsum(rng.integers(1, 3 * 10**8, 4000))
    t3 = rectype & 0x300 == 0x300
    write_ptu(tmp_path / "x.ptu", rng.integers(0, 8, t.size), t, mode="T3" if t3 else "T2")
    with ptufile.PtuFile(tmp_path / "x.ptu") as pf:
        rec = pf.read_records()
    rec = rec.copy()
    rec[rng.integers(0, rec.size, 20)] = (1 << 31) | (3 << 25) | 5  # markers: not photons
    with ptufile.PtuFile(tmp_path / "x.ptu") as pf:
        pf.tags["TTResultFormat_TTTRRecType"] = rectype
        ref = pf.decode_records(rec)
    ch, ticks, dtime = _decode(rec, rectype)
    photon = ref["channel"] >= 0
    np.testing.assert_array_equal(ch, ref["channel"][photon])
    np.testing.assert_array_equal(ticks, ref["time"][photon].astype(np.int64))
    if t3:
        np.testing.assert_array_equal(dtime, ref["dtime"][photon])


def test_t2_sync_input_events_are_channel_64(tmp_path):
    rng = np.random.default_rng(12)
    t = np.cumsum(rng.integers(1, 10**8, 2000))
    ch = rng.integers(0, 5, t.size)
    write_ptu(tmp_path / "x.ptu", ch, t, mode="T2")
    data = bytearray((tmp_path / "x.ptu").read_bytes())
    off = data.find(b"Header_End") + 48
    rec = np.frombuffer(bytes(data[off:]), dtype="<u4").copy()
    photon = (rec >> 31) == 0
    on4 = photon & (((rec >> 25) & 0x3F) == 4)
    rec[on4] = (rec[on4] & 0x1FFFFFF) | np.uint32(1 << 31)  # the same events as sync records (special, channel 0)
    (tmp_path / "y.ptu").write_bytes(bytes(data[:off]) + rec.tobytes())
    tags = read_ptu(tmp_path / "y.ptu")
    np.testing.assert_array_equal(tags.time_ps, t)
    np.testing.assert_array_equal(tags.channel, np.where(ch == 4, 64, ch))


@pytest.mark.parametrize("ext", ["csv", "parquet", "h5"])
def test_tables_round_trip_and_are_sorted(tmp_path, ext):
    rng = np.random.default_rng(4)
    t = rng.integers(0, 10**10, 300)
    ch = rng.integers(0, 5, 300)
    write_table(tmp_path / f"x.{ext}", ch, t)
    tags = read_table(tmp_path / f"x.{ext}")
    o = np.argsort(t, kind="stable")
    np.testing.assert_array_equal(tags.time_ps, t[o])
    np.testing.assert_array_equal(tags.channel, ch[o])


@pytest.mark.parametrize("use_phconvert", [True, False])
def test_photon_hdf5_round_trip(tmp_path, use_phconvert):
    rng = np.random.default_rng(5)
    t = np.sort(rng.integers(0, 10**11, 1000))
    ch = rng.integers(0, 5, 1000)
    write_photon_hdf5(tmp_path / "x.h5", ch, t, use_phconvert=use_phconvert)
    tags = read_photon_hdf5(tmp_path / "x.h5")
    np.testing.assert_array_equal(tags.time_ps, t)
    np.testing.assert_array_equal(tags.channel, ch)


def test_channel_map_parsing():
    m = parse_channel_map("H=5, V=6, D=7, A=8, sync=1")
    assert m.detectors == (5, 6, 7, 8) and m.beacon == 1
    assert parse_channel_map({"h": 0, "v": 1, "d": 2, "a": 3}).beacon is None
    for bad, needle in (("H=0,V=1,D=2", r"lacks detector\(s\) A"), ("H=0,V=0,D=2,A=3", "one channel to two"),
                        ("H=0,V=1,D=2,A=x", "not an integer"), ("H=0,V=1,D=2,A=3,Q=4", "unknown name")):
        with pytest.raises(IngestError, match=needle):
            parse_channel_map(bad)


# ---------------------------------------------------------------------------- transmitter
def test_prng_settings_follow_the_source_probabilities_and_are_random_access():
    p = np.asarray(CFG.source.probabilities)
    tx = prng_settings(12345, 1000, 400_000, p)
    k = np.arange(1000, 401_000)
    i, b, x, known = tx.lookup(k)
    assert known.all()
    frac = np.bincount(i, minlength=p.size) / k.size
    assert np.all(np.abs(frac - p) < 5 * np.sqrt(p * (1 - p) / k.size))
    assert abs(b.mean() - 0.5) < 0.005 and abs(x.mean() - 0.5) < 0.005
    # random access: the same pulse gives the same settings whatever else is asked
    j = np.array([400_999, 1000, 77_777])
    np.testing.assert_array_equal(np.stack(splitmix64_labels(j, 12345, tx.cum_probabilities)),
                                  np.stack([v[j - 1000] for v in (i, b, x)]))
    start, em = tx.slices(1e8, 1e-3, p.size)  # 1e5 pulses per slice
    assert em.shape == (4, p.size) and em.sum() == 400_000
    np.testing.assert_array_equal(em.sum(axis=0), np.bincount(i, minlength=p.size))


@pytest.mark.parametrize("ext", ["npy", "npy2d", "npz", "csv", "h5", "parquet"])
def test_dense_transmitter_files_of_every_type_agree(tmp_path, ext):
    rng = np.random.default_rng(13)
    n = 1000
    cols = {c: rng.integers(0, 3 if c == "intensity" else 2, n).astype(np.uint8) for c in ("intensity", "basis", "bit")}
    path = tmp_path / f"tx.{ext.rstrip('2d')}"
    if ext == "npy":
        a = np.zeros(n, dtype=[("intensity", "u1"), ("basis", "u1"), ("bit", "u1")])
        for c, v in cols.items():
            a[c] = v
        np.save(path, a)
    elif ext == "npy2d":
        np.save(path, np.column_stack([cols["intensity"], cols["basis"], cols["bit"]]))
    elif ext == "npz":
        np.savez(path, first_pulse_index=np.int64(77), **cols)
    elif ext == "csv":
        np.savetxt(path, np.column_stack(list(cols.values())), fmt="%d", delimiter=",", header="intensity,basis,bit", comments="")
    elif ext == "h5":
        import h5py

        with h5py.File(path, "w") as f:
            g = f.create_group("transmitter")
            g.attrs["first_pulse_index"] = 77
            for c, v in cols.items():
                g[c] = v
    else:
        import pandas as pd

        pd.DataFrame(cols).to_parquet(path)
    tx = load_transmitter(path, first_pulse_index=None if ext in ("npz", "h5") else 77)
    assert tx.kind == "dense" and tx.first_pulse_index == 77 and tx.n_pulses == n
    i, b, x, known = tx.lookup(np.arange(77, 77 + n))
    assert known.all()
    for got, c in ((i, "intensity"), (b, "basis"), (x, "bit")):
        np.testing.assert_array_equal(got, cols[c])


def test_dense_table_counts_emitted_per_slice(tmp_path):
    rng = np.random.default_rng(6)
    n = 25_000
    cols = dict(intensity=rng.integers(0, 3, n), basis=rng.integers(0, 2, n), bit=rng.integers(0, 2, n))
    import pandas as pd

    pd.DataFrame(cols).to_parquet(tmp_path / "tx.parquet")
    tx = load_transmitter(tmp_path / "tx.parquet", first_pulse_index=500)
    assert tx.kind == "dense" and tx.first_pulse_index == 500 and tx.n_pulses == n
    start, em = tx.slices(1e8, 1e-4, 3)  # 1e4 pulses per slice: 3 slices, the last partial
    assert em.shape == (3, 3) and em[2].sum() == 5000
    np.testing.assert_array_equal(em[0], np.bincount(cols["intensity"][:10_000], minlength=3))
    i, b, x, known = tx.lookup(np.array([499, 500, 500 + n - 1, 500 + n]))
    np.testing.assert_array_equal(known, [False, True, True, False])
    assert b[1] == cols["basis"][0] and x[2] == cols["bit"][-1]


# --------------------------------------------------------------------- same keys as in memory
@pytest.mark.slow
def test_ptu_and_photon_hdf5_ingest_give_the_same_final_keys(raw, files, tmp_path):
    d, org = files
    ref = satqkd.postprocess_pass(raw, CFG, seed=2)
    assert ref.ok and ref.keys_match and ref.final_key_bits > 10_000
    for fmt, name in (("ptu", "pass.ptu"), ("ptu", "pass_t3.ptu"), ("photon-hdf5", "pass.h5"), ("table", "pass.parquet")):
        out = tmp_path / name.replace(".", "_")
        r = run("ingest", fmt, str(d / name), "--channels", CHANNELS, "--transmitter", str(d / "alice.npz"),
                "--out", str(out), "--time-origin-ps", str(org), "--beacon-first-index", str(int(raw.beacon_index[0])))
        assert r.returncode == 0, r.stderr
        got = load_raw(out)
        for f in ("bob_time_ps", "bob_detector", "beacon_time_ps", "beacon_index", "alice_pulse_index", "alice_bit", "slice_emitted"):
            np.testing.assert_array_equal(getattr(got, f), getattr(raw, f), err_msg=f"{name}: {f}")
        if name != "pass.ptu":
            continue  # the records are identical, so the keys are: run the protocol once
        res = satqkd.postprocess_pass(got, CFG, seed=2)
        assert res.ok and res.final_key_bits == ref.final_key_bits
        np.testing.assert_array_equal(res.alice.key, ref.alice.key)
        np.testing.assert_array_equal(res.bob.key, ref.bob.key)
        rep = json.loads((out / "ingest.json").read_text())
        assert rep["sync"] == "beacon" and rep["detector_tags"] == raw.n_tags
        r = run("party", "split", str(out), "--alice-out", str(tmp_path / "A"), "--bob-out", str(tmp_path / "B"))
        assert r.returncode == 0, r.stderr
        bob = load_raw(tmp_path / "B", party="bob")
        np.testing.assert_array_equal(bob.bob_time_ps, raw.bob_time_ps)
        assert bob.alice_pulse_index.size == 0


# ------------------------------------------------------------------------- beaconless sync
@pytest.mark.slow
def test_beaconless_sync_recovers_known_offset_and_drift_with_no_wrong_assignment(raw, files):
    tx = load_transmitter(files[0] / "alice.npz")
    base = correlation_sync(raw.bob_time_ps, raw.bob_detector, tx.lookup, raw.rep_rate_hz, raw.window_ns)
    # Bob's clock moved by a known offset and rate: T' = Δ + (1 + r) T
    delta_ps, r = 3_210_987_654, 2.5e-6
    t2 = np.rint(delta_ps + (1 + r) * raw.bob_time_ps.astype(float)).astype(np.int64)
    moved = correlation_sync(t2, raw.bob_detector, tx.lookup, raw.rep_rate_hz, raw.window_ns)
    # D'(T') = T' − t_e = Δ + r T + D(T): at the first tag, and its mean slope moves by r
    expect_offset_ns = base.offset_ns + (delta_ps + r * raw.bob_time_ps[0]) * 1e-3
    assert abs(moved.offset_ns - expect_offset_ns) < 0.05
    assert abs((moved.drift_ppm - base.drift_ppm) - r * 1e6) < 1e-3
    assert moved.fraction_assigned > 0.8 and moved.peak_z > moved.min_z
    # the truth: every signal tag's D is recovered to far below the jitter on average
    sig = raw.truth_pulse_index >= 0
    err = t2[sig] - raw.truth_pulse_index[sig] * 1e12 / raw.rep_rate_hz - moved.fit.offset_ps(t2[sig])
    assert abs(err.mean()) < 5.0  # ps of bias
    assert err.std() < 1.02 * raw.meta["tag_jitter_ps"]  # the scatter is the tags' own jitter
    # written as virtual beacons, the unchanged beacon synchronisation assigns no tag wrongly
    bt, bi = virtual_beacons(moved.fit, t2, raw.rep_rate_hz)
    shifted = dataclasses.replace(raw, bob_time_ps=t2, beacon_time_ps=bt, beacon_index=bi, beacon_rate_hz=raw.rep_rate_hz)
    det = synchronise(shifted, rng=np.random.default_rng(0))
    ref = synchronise(raw, rng=np.random.default_rng(0))
    assert det.assigned_wrong == 0
    assert det.truth_signal_kept >= 0.999 * ref.truth_signal_kept


@pytest.mark.slow
def test_beaconless_ingest_via_cli_and_shuffled_times_are_refused(raw, files, tmp_path):
    d, org = files
    tx = str(d / "alice.npz")
    out = tmp_path / "nobeacon"
    r = run("ingest", "ptu", str(d / "pass.ptu"), "--channels", "H=0,V=1,D=2,A=3", "--transmitter", tx,
            "--out", str(out), "--time-origin-ps", str(org))
    assert r.returncode == 0, r.stderr
    assert "sync without beacon" in r.stdout
    got = load_raw(out)
    assert got.meta["sync"] == "correlation" and got.beacon_rate_hz == raw.rep_rate_hz
    c = got.meta["correlation_sync"]
    assert c["fraction_assigned"] > 0.8
    det = synchronise(dataclasses.replace(got, truth_pulse_index=raw.truth_pulse_index), rng=np.random.default_rng(0))
    ref = synchronise(raw, rng=np.random.default_rng(0))
    assert det.assigned_wrong == 0 and det.truth_signal_kept >= 0.999 * ref.truth_signal_kept
    # the same tags with their detectors shuffled among them: the pattern no longer correlates
    rng = np.random.default_rng(1)
    ch, t, _ = _file_tags(raw)
    det_tags = ch < 4
    ch[det_tags] = rng.permutation(ch[det_tags])
    write_ptu(tmp_path / "shuffled.ptu", ch, t)
    out2 = tmp_path / "refused"
    r = run("ingest", "ptu", str(tmp_path / "shuffled.ptu"), "--channels", "H=0,V=1,D=2,A=3", "--transmitter", tx,
            "--out", str(out2))
    assert r.returncode == 2 and "no correlation peak stands out" in r.stderr
    assert not out2.exists()


def test_random_times_have_no_comb():
    rng = np.random.default_rng(2)
    t = np.sort(rng.integers(0, 2 * 10**12, 20_000))
    tx = prng_settings(1, 0, 10**12, CFG.source.probabilities)
    with pytest.raises(SyncError, match="no pulse comb"):
        correlation_sync(t, rng.integers(0, 4, t.size), tx.lookup, 1e8, 2.0)


@pytest.mark.slow
def test_beaconless_sync_on_a_seeded_prng_transmitter():
    """Tags made directly from a PRNG transmitter (offset, drift, jitter, background), no simulator."""
    rng = np.random.default_rng(8)
    R, n_sig = 1e8, 12_000
    tx = prng_settings(99, 0, 10**8, CFG.source.probabilities)  # 1 s of pulses
    k = np.unique(rng.integers(0, 10**8, n_sig))
    n_sig = k.size
    _, basis, bit, _ = tx.lookup(k)
    bob_basis = rng.integers(0, 2, n_sig)
    det = np.where(bob_basis == basis, 2 * basis + bit, 2 * bob_basis + rng.integers(0, 2, n_sig))
    D0, drift = 1.234567e9, 3e-6  # ps, Bob's clock: T = t_e + D0 + drift t_e
    t_e = k * 1e4
    T = np.rint(t_e + D0 + drift * t_e + rng.normal(0, 400, n_sig)).astype(np.int64)
    bg = rng.integers(T.min(), T.max(), 1200)
    allT = np.concatenate([T, bg])
    allD = np.concatenate([det, rng.integers(0, 4, bg.size)])
    truth = np.concatenate([k, np.full(bg.size, -1)])
    o = np.argsort(allT, kind="stable")
    res = correlation_sync(allT[o], allD[o], tx.lookup, R, 2.0, offset_guess_s=1e-3)
    assert abs(res.offset_ns - (D0 + drift * (allT[o][0] - D0)) * 1e-3) < 0.05
    assert abs(res.drift_ppm - drift * 1e6) < 1e-3
    u = allT[o] - res.fit.offset_ps(allT[o])
    kk = np.rint(u / 1e4).astype(np.int64)
    kept = np.abs(u - kk * 1e4) <= 1000
    sig = truth[o] >= 0
    assert np.count_nonzero(kept & sig & (kk != truth[o])) == 0
    assert np.count_nonzero(kept & sig) > 0.98 * n_sig
    # the whole ingest: raw records with virtual beacons, Alice's record from the PRNG, emitted counts
    tags = TimeTags(allD[o].astype(np.int16), allT[o])
    got, rep = build_raw(tags, parse_channel_map("H=0,V=1,D=2,A=3"), tx, CFG, correlation_options=dict(offset_guess_s=1e-3))
    assert rep.sync == "correlation" and got.meta["sync"] == "correlation"
    assert got.slice_emitted.sum() == 10**8 and got.slice_emitted.shape == (100, 3)  # 10 ms slices
    det = synchronise(dataclasses.replace(got, truth_pulse_index=truth[o]), rng=np.random.default_rng(0))
    assert det.assigned_wrong == 0 and det.truth_signal_kept > 0.98 * n_sig
    from satqkd.quantum.timing import match_alice

    a_int, a_basis, a_bit = match_alice(got, det)  # every detected pulse is in Alice's record
    i, b, x, _ = tx.lookup(det.pulse_index)
    np.testing.assert_array_equal(a_basis, b)
    np.testing.assert_array_equal(a_int, i)


# ---------------------------------------------------------------------------------- bad files
def _bad_files(tmp_path, good_ptu):
    data = good_ptu.read_bytes()
    (tmp_path / "truncated.ptu").write_bytes(data[: len(data) - 4000])
    (tmp_path / "magic.ptu").write_bytes(b"NOTAPTU\x00" + data[8:])
    i = data.find(b"TTResultFormat_TTTRRecType")
    bad = bytearray(data)
    bad[i + 40: i + 48] = (0x00099999).to_bytes(8, "little")  # tag value: 32 id + 4 index + 4 type bytes
    (tmp_path / "rectype.ptu").write_bytes(bytes(bad))
    return {
        "truncated": ("truncated.ptu", CHANNELS, "truncated"),
        "magic": ("magic.ptu", CHANNELS, "not a PicoQuant PTU file"),
        "rectype": ("rectype.ptu", CHANNELS, "unknown TTTR record type"),
        "absent channel": ("good.ptu", "H=0,V=1,D=2,A=9,beacon=4", "absent from"),
    }


@pytest.mark.parametrize("case", ["truncated", "magic", "rectype", "absent channel"])
def test_bad_files_exit_2_and_write_nothing(tmp_path, case):
    rng = np.random.default_rng(9)
    t = np.sort(rng.integers(0, 10**11, 3000))
    write_ptu(tmp_path / "good.ptu", rng.integers(0, 5, t.size), t)
    np.savez(tmp_path / "tx.npz", intensity=np.zeros(10, np.uint8), basis=np.zeros(10, np.uint8), bit=np.zeros(10, np.uint8))
    name, chans, needle = _bad_files(tmp_path, tmp_path / "good.ptu")[case]
    out = tmp_path / "out"
    r = run("ingest", "ptu", str(tmp_path / name), "--channels", chans, "--transmitter", str(tmp_path / "tx.npz"), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and r.stderr.count("\n") == 1  # one line
    assert not out.exists()


def test_bad_inputs_raise_ingest_error(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(IngestError, match="not an HDF5 file"):
        read_photon_hdf5(tmp_path / "x.h5")
    (tmp_path / "t.csv").write_text("chan,when\n1,2\n")
    with pytest.raises(IngestError, match="needs columns channel and time_ps"):
        read_table(tmp_path / "t.csv")
    (tmp_path / "tx.csv").write_text("intensity,basis\n0,1\n")
    with pytest.raises(IngestError, match="lack column"):
        load_transmitter(tmp_path / "tx.csv")
    tags = TimeTags(np.array([0, 1, 2, 3], np.int16), np.array([1, 2, 3, 4], np.int64))
    tx = prng_settings(1, 0, 100, CFG.source.probabilities)
    with pytest.raises(IngestError, match="names no beacon"):
        build_raw(tags, parse_channel_map("H=0,V=1,D=2,A=3"), tx, CFG, sync="beacon")


# ------------------------------------------------------------------------------------ exports
@pytest.mark.slow
def test_exports_parquet_hdf5_csv_agree(raw, tmp_path):
    import pandas as pd

    from satqkd.exports import pass_frames, read_hdf5_frames, write_frames

    frames = pass_frames(raw, seed=1)
    det, sif, ts = frames["detections"], frames["sifted"], frames["timeseries"]
    assert isinstance(det, pd.DataFrame) and len(det) > 0.8 * raw.n_tags * 0.9
    assert (sif["basis"].to_numpy() == det.set_index("pulse_index").loc[sif["pulse_index"], "bob_basis"].to_numpy()).all()
    assert ts["sifted_bits"].sum() == int((sif["intensity"] == 0).sum())
    assert 0.002 < ts["errors"].sum() / ts["sifted_bits"].sum() < 0.03  # the preset's ≈ 1 % QBER
    paths = write_frames(frames, tmp_path / "exp")
    assert {p.name for p in paths} >= {"detections.parquet", "sifted.csv", "tables.h5"}
    h5 = read_hdf5_frames(tmp_path / "exp" / "tables.h5")
    for name, df in frames.items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "exp" / f"{name}.parquet"), df)
        pd.testing.assert_frame_equal(h5[name], df)
        back = pd.read_csv(tmp_path / "exp" / f"{name}.csv")
        np.testing.assert_array_equal(back["pulse_index" if "pulse_index" in df else "t_s"],
                                      df["pulse_index" if "pulse_index" in df else "t_s"])


def test_export_rejects_unknown_format_and_writes_nothing(tmp_path):
    r = run("export", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "xlsx")
    assert r.returncode == 2 and "export format" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_exported_timeseries_equals_the_simulators_and_keeps_link_columns():
    from satqkd.exports import pass_frames

    sim = satqkd.simulate(CFG, seed=4, geometry=preset_pass_cut(CFG, 10))
    ref = sim.timeseries()
    ts = pass_frames(sim.raw, detections=sim.detections, timeseries_extra=ref)["timeseries"]
    assert len(ts) == len(ref["t_s"])
    for c in ("detections", "sifted_bits"):  # counted independently from the detections and sifted events
        np.testing.assert_array_equal(ts[c].to_numpy(), ref[c])
    np.testing.assert_array_equal(ts["range_km"].to_numpy(), ref["range_km"])
    np.testing.assert_allclose(ts["qber"].to_numpy(), ref["qber"])
