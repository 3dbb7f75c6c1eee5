"""Issue 9 §5: bad input anywhere → exit 2, a message naming what is wrong, nothing written, no traceback.

Each case is refused before any simulation: the commands run in-process (typer's CliRunner) and
take milliseconds to a fraction of a second, whatever the refused work would have cost.
"""

import os

import numpy as np
import pytest
from typer.testing import CliRunner

import satqkd
from satqkd.cli import app
from satqkd.config import ConfigError
from synthetic_passes import preset_pass_slice

BASE = 'base = "micius-2016-12-19"\n'


def invoke(*args, env=None):
    r = CliRunner().invoke(app, [str(a) for a in args], env=env)
    # an exception that escaped the command (a traceback for a user) shows here, not as SystemExit
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def assert_refused(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output)
    text = r.output  # stdout and stderr
    assert "Traceback" not in text
    for n in needles:
        assert n in text, (n, text)


def nothing_in(d):
    return not d.exists() or not any(d.iterdir())


def write_config(tmp_path, text, name="bad.toml"):
    p = tmp_path / name
    p.write_text(BASE + text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------ configuration
def test_non_utf8_toml_is_named(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(BASE.encode() + 'name = "Xinglong \xe9t\xe9"\n'.encode("latin-1"))
    out = tmp_path / "out"
    assert_refused(invoke("simulate", "--config", p, "--out", out), str(p), "UTF-8")
    assert nothing_in(out)


@pytest.mark.parametrize(
    "toml, needles",
    [
        ("[security]\nepsilon = 1e-9\nepsilon_cor = 1e-6\n", ("security", "epsilon_cor", "must be < epsilon")),
        ("[source]\nintensities = [nan, 0.1, 0.0]\n", ("source.intensities.0", "finite")),
        ("[timing]\nclock_offset_ns = inf\n", ("timing.clock_offset_ns", "finite")),
        ("[timing]\nclock_offset_ns = 1e15\n", ("timing.clock_offset_ns", "less than or equal to 1000000000000")),
        ("[source]\nprobabilities = [nan, 0.5, 0.5]\n", ("source.probabilities.0", "finite")),
        ("[apt]\ncoarse_rate_hz = 5000.0\n", ("coarse_rate_hz", "fine_rate_hz")),
        ("[timing]\nwindow_ns = 20.0\n", ("timing.window_ns", "pulse period")),
    ],
)
def test_bad_values_and_inconsistent_fields_exit_2_before_any_work(tmp_path, toml, needles):
    cfg = write_config(tmp_path, toml)
    out = tmp_path / "out"
    assert_refused(invoke("simulate", "--config", cfg, "--out", out), *needles)
    assert nothing_in(out)


# ------------------------------------------------------------------------------------ work limits
@pytest.mark.parametrize(
    "toml, needles",
    [
        ("[source]\nintensities = [50.0, 0.1, 0.0]\n", ("predicted work is too large", "signal detections", "GB", "source.intensities")),
        ("[background]\nsky_rate_hz = 1e6\n", ("predicted work is too large", "background", "GB", "background.sky_rate_hz")),
        ("[passes]\ntime_step_s = 1e-6\n", ("passes.time_step_s", "geometry steps", "limit")),
        ("[simulation]\nslice_s = 1e-6\n", ("simulation.slice_s", "slices", "limit")),
    ],
)
@pytest.mark.parametrize("command", ["simulate", "run"])
def test_work_beyond_the_limits_is_refused_with_the_estimate(tmp_path, toml, needles, command):
    cfg = write_config(tmp_path, toml)
    out = tmp_path / "out"
    assert_refused(invoke(command, "--config", cfg, "--out", out, "--no-figures"), *needles, "docs/limits.md")
    assert nothing_in(out)


def test_memory_limit_is_configurable_and_checked(tmp_path):
    out = tmp_path / "out"
    r = invoke("simulate", "--out", out, env={"SATQKD_MAX_MEMORY_GB": "0.01"})
    assert_refused(r, "limit 0.01 GB", "SATQKD_MAX_MEMORY_GB")
    assert nothing_in(out)
    assert_refused(invoke("simulate", "--out", out, env={"SATQKD_MAX_MEMORY_GB": "lots"}), "SATQKD_MAX_MEMORY_GB")
    assert nothing_in(out)


def test_campaign_memory_counts_the_workers(tmp_path):
    out = tmp_path / "out"
    r = invoke("campaign", "--days", "1", "--workers", "64", "--out", out, env={"SATQKD_MAX_MEMORY_GB": "8"})
    assert_refused(r, "× 64 workers")
    assert nothing_in(out)


def test_passes_refuses_a_microsecond_step_before_searching(tmp_path):
    cfg = write_config(tmp_path, "[passes]\ntime_step_s = 1e-6\n")
    assert_refused(invoke("passes", "--config", cfg, "--json"), "passes.time_step_s")


def test_relay_checks_both_stations_and_the_stores_first(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text('base = "micius-relay-xinglong-nanshan"\n[source]\nintensities = [50.0, 0.1, 0.0]\n')
    out = tmp_path / "out"
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert_refused(invoke("relay", "--config", cfg, "--store-a", a, "--store-b", b, "--out", out), "predicted work is too large")
    assert nothing_in(out) and not a.exists() and not b.exists()
    b.write_bytes(b"not a database at all" * 10)
    assert_refused(invoke("relay", "--store-a", a, "--store-b", b, "--out", out), f"--store-b {b}", "not a key store")
    assert nothing_in(out) and not a.exists()


# ------------------------------------------------------------------------------------ output paths
@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("I am a file")
    return f


@pytest.mark.parametrize("command", ["simulate", "run", "campaign"])
def test_output_under_a_file_is_refused_before_any_work(tmp_path, a_file, command):
    out = a_file / "sub" / "out"
    assert_refused(invoke(command, "--out", out), "--out", str(a_file), "is a file")
    assert a_file.read_text() == "I am a file"


def test_output_in_proc_is_refused():
    assert_refused(invoke("simulate", "--out", "/proc/satqkd-test/out"), "/proc", "virtual file system")
    assert not os.path.exists("/proc/satqkd-test")


def test_output_file_in_a_missing_directory_is_refused(tmp_path):
    pool = tmp_path / "missing" / "pool.bin"
    assert_refused(invoke("party", "make-pool", pool, "--bits", "1000"), str(tmp_path / "missing"), "does not exist")
    assert not (tmp_path / "missing").exists()


def test_party_split_outputs_are_checked(tmp_path, a_file, raw_dir):
    r = invoke("party", "split", raw_dir, "--alice-out", a_file / "x", "--bob-out", tmp_path / "bob")
    assert_refused(r, "--alice-out", "is a file")
    assert not (tmp_path / "bob").exists()


# ------------------------------------------------------------------------------------ raw.npz
@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """A small, valid raw.npz: 6 s of the default pass."""
    cfg = satqkd.load_preset("micius-2016-12-19")
    raw = satqkd.simulate(cfg, seed=3, geometry=preset_pass_slice(cfg, slice(130, 136))).raw
    out = tmp_path_factory.mktemp("raw")
    satqkd.save_raw(raw, out)
    return out


def _damaged(raw_dir, tmp_path, how):
    data = (raw_dir / "raw.npz").read_bytes()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bit-flipped":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        data = bytes(b)
    elif how == "empty":
        data = b""
    else:
        data = b"PK\x03\x04" + os.urandom(200)
    d = tmp_path / f"raw-{how}"
    d.mkdir()
    (d / "raw.npz").write_bytes(data)
    return d


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "empty", "garbage"])
def test_damaged_raw_npz_is_named_and_nothing_is_written(tmp_path, raw_dir, how):
    d = _damaged(raw_dir, tmp_path, how)
    out = tmp_path / "out"
    assert_refused(invoke("postprocess", d, "--out", out), str(d / "raw.npz"), "damaged")
    assert nothing_in(out)
    a, b = tmp_path / "a", tmp_path / "b"
    assert_refused(invoke("party", "split", d, "--alice-out", a, "--bob-out", b), str(d / "raw.npz"))
    assert nothing_in(a) and nothing_in(b)


def test_damaged_raw_npz_api_error_is_a_value_error_naming_the_file(tmp_path, raw_dir):
    from satqkd.rawio import RawFormatError, load_raw

    d = _damaged(raw_dir, tmp_path, "truncated")
    with pytest.raises(RawFormatError, match="raw.npz is damaged") as ei:
        load_raw(d, party="bob")
    assert isinstance(ei.value, ValueError) and str(d) in str(ei.value)


# ------------------------------------------------------------------------------------ key stores
@pytest.fixture
def good_store(tmp_path):
    from satqkd.keys.store import KeyStore, Origin

    p = tmp_path / "good.db"
    with KeyStore(p, site="Xinglong") as st:
        for _ in range(20):
            st.deposit("Micius", np.ones(40_960, dtype=np.uint8), origin=Origin())
    return p


def _store_variant(good_store, tmp_path, how):
    data = good_store.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    if how == "truncated mid-page":
        data = data[: len(data) // 2 + 100]
    elif how == "truncated at a page":
        data = data[: (len(data) // page // 2) * page]
    elif how == "garbage":
        data = os.urandom(8192)
    elif how == "empty":
        data = b""
    p = tmp_path / f"{how.replace(' ', '-')}.db"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("how", ["truncated mid-page", "truncated at a page", "garbage", "empty"])
@pytest.mark.parametrize("command", ["ls", "stats"])
def test_damaged_store_exits_2_naming_it_and_is_not_touched(tmp_path, good_store, how, command):
    p = _store_variant(good_store, tmp_path, how)
    before = p.read_bytes()
    assert_refused(invoke("keys", command, "--store", p), str(p))
    assert p.read_bytes() == before
    assert not p.with_name(p.name + "-wal").exists() and not p.with_name(p.name + "-shm").exists()


def test_store_damaged_inside_exits_2_naming_it(tmp_path, good_store):
    b = bytearray(good_store.read_bytes())
    page = int.from_bytes(b[16:18], "big")
    for j in range(page, len(b), 997):  # every page's contents, not the header
        b[j] ^= 0x5A
    p = tmp_path / "scrambled.db"
    p.write_bytes(bytes(b))
    assert_refused(invoke("keys", "ls", "--store", p), str(p), "damaged")


def test_keys_ls_names_a_bad_state(good_store):
    assert_refused(invoke("keys", "ls", "--store", good_store, "--state", "bogus"), "--state must be one of", "available")


def test_a_good_store_still_lists(good_store):
    r = invoke("keys", "stats", "--store", good_store)
    assert r.exit_code == 0, r.output


def test_run_refuses_a_damaged_store_before_simulating(tmp_path):
    store = tmp_path / "x.db"
    store.write_bytes(b"\x00" * 5000)
    out = tmp_path / "out"
    assert_refused(invoke("run", "--store", store, "--out", out), f"--store {store}", "not a key store")
    assert nothing_in(out)


def test_otp_output_in_a_missing_directory_is_refused(tmp_path, good_store):
    src = tmp_path / "msg.txt"
    src.write_text("hello")
    out = tmp_path / "nowhere" / "msg.otp"
    assert_refused(invoke("otp", "encrypt", src, out, "--store", good_store, "--peer", "Micius"), "does not exist")
    assert not out.parent.exists()


# ------------------------------------------------------------------------------------ the handler
def test_genuine_bugs_keep_their_traceback(monkeypatch):
    """Only known user errors become exit 2: anything else stays visible."""
    import satqkd.cli as cli

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_load", boom)
    r = CliRunner().invoke(app, ["simulate", "--out", "/tmp/never-written-satqkd"])
    assert isinstance(r.exception, ZeroDivisionError)


def test_config_error_on_assignment_is_the_clis_message():
    cfg = satqkd.load_preset("micius-2016-12-19")
    with pytest.raises(ConfigError, match=r"aperture_m: Input should be greater than 0 \(allowed: gt 0"):
        cfg.receiver.aperture_m = -1
    assert cfg.receiver.aperture_m == 1.0


def test_kme_serve_names_a_bad_network_file(tmp_path, good_store):
    net = tmp_path / "net.json"
    net.write_text("{not json")
    (tmp_path / "tls").mkdir()
    r = invoke("kme", "serve", "--store", good_store, "--tls", tmp_path / "tls", "--network", net, "--kme-id", "x")
    assert_refused(r, f"--network {net}", "JSONDecodeError")
    net.write_text('{"kmes": [{"kme_id": "a"}]}')
    r = invoke("kme", "serve", "--store", good_store, "--tls", tmp_path / "tls", "--network", net, "--kme-id", "a")
    assert_refused(r, f"--network {net}", "KeyError")


@pytest.mark.parametrize("sae, needle", [("", "SAE id must match"), ("a/b", "SAE id must match"), ("kme-xinglong", "both an SAE and a KME")])
def test_kme_certs_checks_the_ids_before_making_the_directory(tmp_path, sae, needle):
    d = tmp_path / "pki"
    assert_refused(invoke("kme", "certs", d, "--sae", sae), needle)
    assert not d.exists()
