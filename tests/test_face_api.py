"""Issue 12: the Python face a new user meets (DataFrames, Figures, reprs, CLI niceties, warm-up)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import satqkd
from satqkd import report
from satqkd.config import preset_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_sim():
    """20 s of the Micius pass around culmination (the real pipeline, on less data)."""
    from satqkd.warmup import _slice_geometry

    cfg = satqkd.load_preset("micius-2016-12-19")
    g = satqkd.find_pass(cfg)
    c = g.culmination_index
    dt = float(np.median(np.diff(g.t_s)))
    half = int(10 / dt)
    return satqkd.simulate(cfg, seed=3, geometry=_slice_geometry(g, slice(c - half, c + half)))


def test_timeseries_is_a_dataframe_with_the_csv_columns(short_sim, tmp_path):
    import pandas as pd

    from satqkd.outputs import write_simulation

    df = short_sim.timeseries()
    assert isinstance(df, pd.DataFrame)
    write_simulation(short_sim, tmp_path, figures=False)
    with open(tmp_path / "timeseries.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert list(df.columns) == rows[0]
    assert len(df) == len(rows) - 1
    assert 15 <= len(df) <= 21  # the 20 s slice: one row per whole second
    np.testing.assert_allclose(df["range_km"].to_numpy(), [float(r[1]) for r in rows[1:]], atol=1e-3)
    assert df["sifted_bits"].tolist() == [int(r[6]) for r in rows[1:]]
    assert short_sim.to_frame().equals(df)


def test_config_repr_is_one_short_line():
    cfg = satqkd.load_preset("micius-2016-12-19")
    r = repr(cfg)
    assert len(r) < 200 and "\n" not in r
    assert "micius-2016-12-19" in r and "Xinglong" in r
    assert str(cfg) == r


def test_plots_return_figures_and_leave_the_backend_alone():
    # in a child process: the backend is process-wide state
    code = textwrap.dedent(
        """
        import sys, matplotlib
        matplotlib.use("template")
        import numpy as np
        from matplotlib.figure import Figure
        from satqkd import report
        t = np.arange(10.0)
        ts = {"t_s": t, "sifted_bits": t * 100, "range_km": 600 + t, "qber": np.full(10, 0.01)}
        figs = [report.plot_pass(ts), report.plot_link_efficiency(600 + t, 1e-3 / (1 + t)),
                report.plot_polarization(t, np.full(10, 280.0), 150 / (1 + t)),
                report.plot_key_budget({"a": 5, "final key": 3})]
        assert all(isinstance(f, Figure) for f in figs), figs
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["template", "False"]


def test_save_figure_writes_a_png(tmp_path):
    fig = report.plot_key_budget({"error correction": 10, "final key": 30})
    p = report.save_figure(fig, tmp_path / "b.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_polarization_figure_draws_contrast_below_the_old_floor():
    t = np.arange(5.0)
    unc = np.array([150.0, 1.0, 3e-3, 1e-4, 0.05])
    fig = report.plot_polarization(t, np.full(5, 280.0), unc)
    ys = fig.axes[0].lines[1].get_ydata()
    assert float(np.min(ys)) == pytest.approx(1e-4)  # was clipped to 1e-2


def test_presets_show_round_trips_as_toml(tmp_path):
    from satqkd.cli import app

    name = "micius-2016-12-19"
    res = CliRunner().invoke(app, ["presets", "--show", name], env={"COLUMNS": "40"}, terminal_width=40)
    assert res.exit_code == 0, res.output
    assert tomllib.loads(res.stdout) == tomllib.loads(preset_text(name))
    (tmp_path / "m.toml").write_text(res.stdout)
    assert satqkd.load_config(tmp_path / "m.toml").model_dump() == satqkd.load_preset(name).model_dump()


def test_version_flag_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "satqkd", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"satqkd {satqkd.__version__}"


def test_py_typed_marker_is_shipped():
    from importlib.resources import files

    assert (files("satqkd") / "py.typed").is_file()
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pp["tool"]["setuptools"]["package-data"]["satqkd"]


def test_cold_kernels_sees_the_numba_cache(tmp_path, monkeypatch):
    from satqkd.warmup import cold_kernels, record_used

    (tmp_path / "ux_kernel_mod.py").write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n\n"
        "@numba.njit(cache=True)\ndef never_called(x):\n    return x\n\ndef not_a_kernel():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    import importlib

    mod = importlib.import_module("ux_kernel_mod")
    try:
        assert sorted(cold_kernels(["ux_kernel_mod"])) == ["ux_kernel_mod.never_called", "ux_kernel_mod.twice"]
        assert mod.twice(3) == 6  # compiles and writes the cache
        assert cold_kernels(["ux_kernel_mod"]) == ["ux_kernel_mod.never_called"]  # nothing noted yet
        record_used(["ux_kernel_mod"])  # what a run / the warm-up notes afterwards
        assert cold_kernels(["ux_kernel_mod"]) == []  # the kernel no run calls no longer counts
        next(tmp_path.rglob("*twice*.nbi")).unlink()  # cache wiped: cold again
        assert cold_kernels(["ux_kernel_mod"]) == ["ux_kernel_mod.twice"]
    finally:
        sys.modules.pop("ux_kernel_mod", None)


def test_kernel_modules_follow_the_ec_method():
    from satqkd.warmup import kernel_modules

    assert "satqkd.postprocess.reconciliation.cascade" in kernel_modules("cascade")
    assert "satqkd.postprocess.reconciliation.ldpc" not in kernel_modules("cascade")
    assert "satqkd.postprocess.reconciliation.ldpc" in kernel_modules("ldpc")
    assert not any("reconciliation" in m for m in kernel_modules(None))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_after_make_demo_installs_the_dev_extras(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text("#!/bin/sh\n")
    (bin_ / "python").chmod(0o755)
    base = tmp_path / ".venv" / ".satqkd-base"
    base.touch()
    t = (tmp_path / "pyproject.toml").stat().st_mtime + 10
    os.utime(base, (t, t))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    demo = subprocess.run(["make", "-n", "demo"], cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout
    assert "pip install" not in demo  # the demo's install is current
    test = subprocess.run(["make", "-n", "test"], cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout
    assert "pip install -q -e '.[dev]'" in test


def test_readme_starts_with_make_demo_and_make_test_and_guards_the_campaign():
    text = (ROOT / "README.md").read_text()
    block = text.split("```", 2)[1].strip().splitlines()
    assert [ln.split("#")[0].strip() for ln in block[:2]] == ["make demo", "make test"]
    import ast

    py = text.split("```python", 1)[1].split("```", 1)[0]
    assert "run_campaign(" in py
    # a script that starts worker processes: at top level only imports, definitions and the guard
    # (forkserver/spawn workers re-import the script; anything else at top level would run again)
    for node in ast.parse(py).body:
        guard = isinstance(node, ast.If) and ast.unparse(node.test) in ("__name__ == '__main__'",)
        assert guard or isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)), ast.unparse(node)


def test_progress_bar_takes_both_callback_shapes():
    import io

    buf = io.StringIO()
    cb = satqkd.progress_bar(file=buf, mininterval=0)
    cb("photons", 0.0, 10.0)
    cb("photons", 10.0, 10.0)
    cb(3, 4)
    text = buf.getvalue()
    assert "photons" in text and "100%" in text and "75%" in text
    with pytest.raises(TypeError):
        cb(1)


def test_submodules_are_attributes_of_the_face():
    assert satqkd.report.plot_pass is report.plot_pass
    with pytest.raises(AttributeError):
        satqkd.no_such_thing  # noqa: B018


def test_campaign_to_frame_has_the_passes_csv_columns(tmp_path):
    from satqkd.jobs.campaign import CampaignResult, PassRecord, _write_csv

    recs = [PassRecord(index=i, night="2016-12-19", start_utc="2016-12-19T17:00:00", end_utc="2016-12-19T17:05:00",
                       duration_s=273.0, max_elevation_deg=50.0 + i, min_range_km=645.0, seed=i, clear_sky=True,
                       simulated=True, final_key_bits=1000 * i, aborted=False) for i in range(3)]
    res = CampaignResult(preset="p", satellite="Micius", station="Xinglong", search_start_utc="2016-12-19T00:00:00",
                         days=1.0, seed=1, clear_sky_probability=1.0, ec="cascade", finite_key="chernoff",
                         records=recs, nights=[])
    df = res.to_frame()
    with open(_write_csv(res, tmp_path / "passes.csv"), newline="") as fh:
        header = next(csv.reader(fh))
    assert list(df.columns) == header
    assert df["final_key_bits"].tolist() == [0, 1000, 2000]


def test_cli_announces_a_compilation_only_when_kernels_are_cold(monkeypatch, capsys):
    from satqkd import cli, warmup

    recorded = []
    monkeypatch.setattr(warmup, "record_used", lambda mods: recorded.append(tuple(mods)))
    monkeypatch.setattr(warmup, "cold_kernels", lambda mods: ["satqkd.quantum.sampler._route_kernel"])
    done = cli._announce_compilation("ldpc")
    assert "compiling kernels, once" in capsys.readouterr().err
    done()
    assert recorded and "satqkd.postprocess.reconciliation.ldpc" in recorded[0]
    monkeypatch.setattr(warmup, "cold_kernels", lambda mods: [])
    recorded.clear()
    cli._announce_compilation("cascade")()
    assert "compiling" not in capsys.readouterr().err and not recorded
