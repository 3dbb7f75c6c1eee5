"""Command line: bad input exits 2 naming the field and writes nothing; outputs are complete."""

import csv
import json
import subprocess
import sys

import pytest

SATQKD = [sys.executable, "-m", "satqkd.cli"]


def run(*args, cwd=None):
    return subprocess.run([*SATQKD, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_presets_lists_micius():
    r = run("presets")
    assert r.returncode == 0 and "micius-2016-12-19" in r.stdout and "micius-relay-xinglong-nanshan" in r.stdout


@pytest.mark.parametrize(
    "toml, needle",
    [
        ('base = "micius-2016-12-19"\n[detectors]\nefficiency = 2.0\n', "detectors.efficiency"),
        ('base = "micius-2016-12-19"\n[receiver]\napertur_m = 1.0\n', "receiver.apertur_m: unknown field"),
        ('base = "micius-2016-12-19"\n[source]\nrep_rate_hz = "fast"\n', "source.rep_rate_hz"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(tmp_path, toml, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    out = tmp_path / "out"
    r = run("simulate", "--config", str(cfg), "--out", str(out))
    assert r.returncode == 2
    assert needle in r.stderr
    assert not out.exists()


def test_bad_options_exit_2(tmp_path):
    out = tmp_path / "out"
    assert run("simulate", "--seed", "-1", "--out", str(out)).returncode == 2
    assert run("simulate", "--preset", "no-such", "--out", str(out)).returncode == 2
    assert not out.exists()
    r = run("link", "--range-km", "5")
    assert r.returncode == 2 and "range-km" in r.stderr


def test_link_budget_by_cause():
    r = run("link", "--preset", "micius-2016-12-19", "--range-km", "1200", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"diffraction", "pointing", "atmosphere", "turbulence", "receiver_optics", "total"}
    assert d["diffraction"] == pytest.approx(22, abs=1)  # paper: 22 dB at 1200 km
    assert d["total"] == pytest.approx(sum(v for k, v in d.items() if k != "total"), rel=1e-9)


def test_fiber_compare():
    r = run("link", "--fiber-compare", "1200", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    text = json.dumps(d)
    assert "ratio" in text and "years" in text


def test_simulate_writes_the_contracted_files(tmp_path):
    out = tmp_path / "sim"
    r = run("simulate", "--preset", "micius-2016-12-19", "--seed", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    for k in ("detections", "sifted_bits", "qber", "duration_s", "min_range_km", "max_range_km", "detections_by_intensity", "qber_by_intensity"):
        assert k in s
    rows = list(csv.DictReader((out / "timeseries.csv").open()))
    assert list(rows[0]) [:8] == ["t_s", "range_km", "elevation_deg", "link_loss_db", "transmittance", "detections", "sifted_bits", "qber"]
    assert len(rows) == int(s["duration_s"])
    assert sum(int(x["sifted_bits"]) for x in rows) <= s["sifted_bits"]
    for f in ("raw.npz", "fig3_pass.png", "fig4_link_efficiency.png", "fig2c_polarization.png"):
        assert (out / f).stat().st_size > 1000
    from satqkd.rawio import load_raw
    raw = load_raw(out)
    assert raw.bob_time_ps.size >= s["detections"]


def test_run_writes_identical_keys_and_the_key_summary(tmp_path):
    out = tmp_path / "run"
    store = tmp_path / "xinglong.db"
    r = run("run", "--preset", "micius-2016-12-19", "--seed", "2", "--out", str(out), "--no-figures", "--store", str(store))
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    for k in ("final_key_bits", "epsilon", "epsilon_parts", "leak_ec_bits", "ec_efficiency", "ec_method", "finite_key_method",
              "keys_match", "classical_bytes_up", "classical_bytes_down", "round_trips", "link_time_s", "auth_key_bits", "stage_seconds"):
        assert k in s, k
    a = (out / "keys" / "alice.key").read_bytes()
    assert a == (out / "keys" / "bob.key").read_bytes()
    assert len(a) == (s["final_key_bits"] + 7) // 8
    assert s["keys_match"] and s["final_key_bits"] >= 300_939 and s["epsilon"] <= 1e-9 * (1 + 1e-9)
    assert sum(s["epsilon_parts"].values()) == pytest.approx(s["epsilon"])
    # the ground station's store now holds the key
    st = run("keys", "stats", "--store", str(store))
    assert st.returncode == 0 and str(s["final_key_bits"] // 8 * 8) in st.stdout.replace(",", "")
    # post-processing the saved raw records again gives a verified key too
    r2 = run("postprocess", str(out), "--seed", "3", "--out", str(tmp_path / "pp"), "--ec", "hamming")
    assert r2.returncode == 0, r2.stderr
    s2 = json.loads((tmp_path / "pp" / "summary.json").read_text())
    assert s2["keys_match"] and s2["ec_method"] == "hamming" and s2["final_key_bits"] < s["final_key_bits"]


def test_run_rejects_unknown_methods(tmp_path):
    out = tmp_path / "x"
    r = run("run", "--ec", "turbo", "--out", str(out))
    assert r.returncode == 2 and "--ec must be one of" in r.stderr and not out.exists()
    r = run("postprocess", str(tmp_path / "nothing"), "--out", str(out))
    assert r.returncode == 2 and "no raw records" in r.stderr and not out.exists()


def test_passes_lists_a_week_of_windows():
    r = run("passes", "--days", "3", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) >= 3
    first = rows[0]
    assert first["start_utc"].startswith("2016-12-19T16:49") and abs(first["max_elevation_deg"] - 47.8) < 0.5
    assert all(r_["max_range_km"] <= 1200.0 + 1e-6 and r_["duration_s"] > 0 for r_ in rows)
    assert run("passes", "--station", "second").returncode == 2  # the Micius preset has one station


def test_simulate_writes_an_html_report_with_its_figures(tmp_path):
    out = tmp_path / "sim"
    r = run("simulate", "--seed", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    import base64

    for fig in ("fig3_pass.png", "fig4_link_efficiency.png", "fig2c_polarization.png"):
        # embedded (the page stands alone), and the very bytes of the PNG written beside it
        data = base64.b64encode((out / fig).read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{data}"' in page and f"<b>{fig}</b>" in page
    assert "3,551,136" in page and "sifted bits" in page


def test_run_under_a_pns_attack_gives_no_key_and_exit_1(tmp_path):
    out = tmp_path / "pns"
    r = run("run", "--seed", "3", "--attack", "pns", "--out", str(out), "--no-figures")
    assert r.returncode == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["aborted"] and s["final_key_bits"] == 0 and not (out / "keys").exists()
    assert run("run", "--attack", "laser", "--out", str(tmp_path / "x")).returncode == 2


def test_bad_input_in_a_real_process_is_one_line_no_traceback_exit_2(tmp_path):
    """The in-process tests (test_bad_input.py) see exceptions; a user sees the process: one message, exit 2."""
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "raw.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "store.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    (tmp_path / "mu.toml").write_text('base = "micius-2016-12-19"\n[source]\nintensities = [50.0, 0.1, 0.0]\n')
    cases = [
        (["simulate", "--out", str(tmp_path / "a_file" / "out")], "is a file"),
        (["postprocess", str(tmp_path / "raw"), "--out", str(tmp_path / "pp")], "raw.npz is damaged"),
        (["keys", "ls", "--store", str(tmp_path / "store.db")], "store.db"),
        (["simulate", "--config", str(tmp_path / "mu.toml"), "--out", str(tmp_path / "sim")], "predicted work is too large"),
    ]
    for args, needle in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and needle in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), (args, r.stderr)
    assert not (tmp_path / "pp").exists() and not (tmp_path / "sim").exists()
