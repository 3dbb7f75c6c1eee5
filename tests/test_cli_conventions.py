"""Issue 12 §5: the command line follows the conventions (help on every option, choices shown, tables
and --json for the key store, sentences for otp, labelled units, -v logging)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from satqkd.cli import app

runner = CliRunner()


def _commands():
    from satqkd.cli import _tidy_help

    root = typer.main.get_command(app)
    _tidy_help(root)
    out = []

    def walk(c, path):
        subs = getattr(c, "commands", {})
        for name, sub in subs.items():
            walk(sub, path + [name])
        if not subs:
            out.append((path, c))

    walk(root, [])
    return out


COMMANDS = _commands()


def test_every_option_and_argument_has_help():
    missing = [(" ".join(path), p.opts) for path, c in COMMANDS for p in c.params if not getattr(p, "help", None)]
    assert missing == []


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS] + [[]], ids=lambda p: " ".join(p) or "satqkd")
def test_help_has_no_raw_type_words(path):
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for raw in ("<bool>", "<str>", "<int", "<float", "<path>", "{"):
        assert raw not in r.output, (raw, r.output)


def test_choices_are_shown():
    r = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "[cascade|ldpc|hamming]" in r.output
    assert "[chernoff|lim2014|paper2017]" in r.output
    assert "[intercept_resend|pns|beam_splitting]" in r.output
    r = runner.invoke(app, ["postprocess", "--help"], env={"COLUMNS": "200"})
    assert re.search(r"Usage: \S+ postprocess \[OPTIONS\] RAW_DIR\s", r.output)


@pytest.fixture
def store(tmp_path):
    from satqkd.keys.relay import run_standin_relay
    from satqkd.keys.store import KeyStore

    sat = KeyStore(tmp_path / "sat.db", "Micius")
    x = KeyStore(tmp_path / "x.db", "Xinglong")
    n = KeyStore(tmp_path / "n.db", "Nanshan")
    run_standin_relay(sat, x, n, seed=3, nbytes=4096)
    for s in (sat, x, n):
        s.close()
    return tmp_path


def test_keys_stats_table_and_json(store):
    db = str(store / "x.db")
    r = runner.invoke(app, ["keys", "stats", "--store", db], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "link" in r.output and "state" in r.output and "Nanshan" in r.output and "{" not in r.output
    j = runner.invoke(app, ["keys", "stats", "--store", db, "--json"])
    st = json.loads(j.stdout)
    assert st["site"] == "Xinglong" and "Nanshan" in st["links"]
    bits = sum(v["bits"] for s, v in st["links"]["Nanshan"].items() if s != "deposited")
    assert f"{bits:,}" in r.output or any(f"{v['bits']:,}" in r.output for v in st["links"]["Nanshan"].values())


def test_keys_ls_shows_whole_ids_and_json(store):
    db = str(store / "x.db")
    j = runner.invoke(app, ["keys", "ls", "--store", db, "--json"])
    rows = json.loads(j.stdout)
    assert rows and all("key_id" in r for r in rows)
    r = runner.invoke(app, ["keys", "ls", "--store", db], env={"COLUMNS": "80"})
    for row in rows:
        assert row["key_id"] in r.output  # never cut at the terminal width
    assert "…" not in r.output


def test_otp_prints_a_sentence(store, tmp_path):
    msg = tmp_path / "m.txt"
    msg.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    r = runner.invoke(app, ["otp", "encrypt", str(msg), str(tmp_path / "m.otp"), "--store", str(store / "x.db"),
                            "--peer", "Nanshan"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "OtpReport(" not in r.output
    assert re.search(r"encrypted .* 300 bytes with [\d,]+ key bits shared with Nanshan", r.output)
    d = runner.invoke(app, ["otp", "decrypt", str(tmp_path / "m.otp"), str(tmp_path / "back.txt"), "--store",
                            str(store / "n.db"), "--peer", "Xinglong"], env={"COLUMNS": "200"})
    assert d.exit_code == 0 and "decrypted" in d.output
    assert (tmp_path / "back.txt").read_bytes() == msg.read_bytes()


def test_fiber_compare_labels_values_with_units():
    r = runner.invoke(app, ["link", "--fiber-compare", "1200"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for label in ("distance (km)", "elevation (°)", "satellite / fiber", "fiber sifted rate (bit/s)",
                  "time per sifted bit by fiber (years)"):
        assert label in r.output
    assert "range_m" not in r.output and "years_per_sifted_bit" not in r.output
    assert re.search(r"distance \(km\)\s*│\s*1,200", r.output)


def test_verbose_logs_through_logging():
    import logging

    r = runner.invoke(app, ["-v", "passes"])
    assert r.exit_code == 0, r.output
    assert logging.getLogger("satqkd").level == logging.INFO
    assert re.search(r"INFO satqkd\.cli: mission: preset micius-2016-12-19", r.stderr)
    assert re.search(r"INFO satqkd\.sky\.orbit|INFO satqkd\.cli", r.stderr)
    q = runner.invoke(app, ["passes"])
    assert logging.getLogger("satqkd").level == logging.WARNING and "INFO" not in q.stderr


def test_tables_name_which_sifted_bits_they_count(tmp_path):
    """The simulate table's sifted bits are of the signal intensity (the paper's 1,671,072); the
    post-processing table's are the key set (signal + decoy by default), so they differ by the decoy bits."""
    from satqkd import cli

    s = {"satellite": "Micius", "station": "Xinglong", "start_utc": "2016-12-19T16:49:57+00:00", "seed": 1,
         "duration_s": 273.0, "min_range_km": 645.0, "max_range_km": 1200.0, "max_elevation_deg": 47.8,
         "detections": 10, "sifted_bits": 5, "qber": 0.01, "tags_kept": 10, "assigned_wrong": 0, "paper_pass": True}
    with cli.out_console.capture() as cap:
        cli._print_pass_summary(s, 1.0)
    assert "sifted bits (signal, both bases)" in cap.get()
    pp = {"aborted": False, "sifted_key_bits": 7, "final_key_bits": 1, "epsilon": 1e-9, "ec_method": "ldpc",
          "ec_efficiency": 1.04, "finite_key_method": "chernoff", "keys_match": True, "classical_bytes_up": 1,
          "classical_bytes_down": 1, "round_trips": 1, "link_time_s": 1.0, "paper_pass": True, "key_intensities": "signal+decoy"}
    with cli.out_console.capture() as cap:
        cli._print_key_summary(pp)
    text = cap.get()
    assert "(signal+decoy)" in text and "— (signal: 1,671,072)" in text
    with cli.out_console.capture() as cap:
        cli._print_pass_summary({**s, "paper_pass": False}, 1.0)
    assert "3,551,136" not in cap.get() and "what-if" in cap.get()
