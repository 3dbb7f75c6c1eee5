"""Issue 12 §3–§4: choosing what to simulate (--pass, find_passes, orbit overrides, sweeps) and the
figures and report (embedded, captioned, readable UTC, what-ifs apart from the paper's column)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import numpy as np
import pytest
from typer.testing import CliRunner

import satqkd
from satqkd import report
from satqkd.config import ConfigError, config_from_dict, is_paper_pass
from satqkd.sky.orbit import parse_pass_spec, range_weighted_seconds, select_pass

runner = CliRunner()


@pytest.fixture(scope="module")
def cfg():
    return satqkd.load_preset("micius-2016-12-19")


@pytest.fixture(scope="module")
def week(cfg):
    return satqkd.find_passes(cfg, days=4)


# -- choosing a pass ---------------------------------------------------------------------------------

def test_pass_spec_parsing():
    assert parse_pass_spec(3).index == 3 and parse_pass_spec("3").kind == "index"
    s = parse_pass_spec("best:7d")
    assert (s.kind, s.days) == ("best", 7.0)
    assert parse_pass_spec("highest").days is None
    d = parse_pass_spec("2016-12-19")
    assert d.kind == "date" and d.start_utc == datetime(2016, 12, 19, tzinfo=timezone.utc)
    for bad in ("0", "-2", "soon", "best:xd", "best:0d", "highest:400d", True):
        with pytest.raises(ConfigError, match="pass:"):
            parse_pass_spec(bad)


def test_find_passes_is_a_dataframe_numbered_as_the_pass_option(cfg, week):
    import pandas as pd

    assert isinstance(week, pd.DataFrame)
    assert list(week.columns) == ["start_utc", "end_utc", "duration_s", "max_elevation_deg", "min_range_km",
                                  "max_range_km", "range_weighted_s"]
    assert week.index.name == "pass" and list(week.index) == list(range(1, len(week) + 1))
    assert len(week) >= 3 and week["start_utc"].is_monotonic_increasing
    assert (week["end_utc"] > week["start_utc"]).all()
    # the preset's own pass is the first one
    first = satqkd.find_pass(cfg)
    assert abs((week["start_utc"].iloc[0] - pd.Timestamp(first.start_utc)).total_seconds()) < 1e-3


def test_select_pass_by_index_date_highest_and_best(cfg, week):
    four = cfg.model_copy(update={"passes": cfg.passes.model_copy(update={"search_days": 4.0})})
    g2 = select_pass(four, 2)
    assert abs((g2.start_utc - week["start_utc"].iloc[1].to_pydatetime()).total_seconds()) < 1e-3
    hi = select_pass(four, "highest")
    assert float(hi.elevation_deg.max()) == pytest.approx(week["max_elevation_deg"].max(), abs=1e-6)
    best = select_pass(cfg, "best:4d")
    assert range_weighted_seconds(best) == pytest.approx(week["range_weighted_s"].max(), rel=1e-9)
    # a date: the first pass in the 24 h from it
    day = week["start_utc"].iloc[1].strftime("%Y-%m-%d")
    gd = select_pass(cfg, day)
    assert gd.start_utc.strftime("%Y-%m-%d") == day
    assert abs((gd.start_utc - week["start_utc"].iloc[1].to_pydatetime()).total_seconds()) < 0.1
    with pytest.raises(ValueError, match="only 1 pass"):
        select_pass(cfg, 2)  # the preset searches one day


def test_simulate_records_the_pass_choice(cfg):
    from satqkd.jobs.pass_simulation import simulate
    from satqkd.warmup import _slice_geometry

    g = select_pass(cfg, "2016-12-19")
    short = _slice_geometry(g, slice(100, 110))
    sim = simulate(cfg, seed=1, geometry=short)
    assert sim.summary()["pass_choice"] == "first"


def test_cli_pass_option_is_checked_before_any_work(tmp_path):
    r = runner.invoke(_app(), ["simulate", "--pass", "tomorrow", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--pass" in r.output
    assert not (tmp_path / "o").exists()


def _app():
    from satqkd.cli import app

    return app


# -- orbit overrides -----------------------------------------------------------------------------------

def test_orbit_override_of_the_other_kind_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"orbit.*altitude_km.*kind = 'tle'"):
        config_from_dict({"base": "micius-2016-12-19", "orbit": {"altitude_km": 400.0}}, "m.toml")


def test_orbit_override_switching_kind_takes_effect():
    cfg = config_from_dict({"base": "micius-2016-12-19", "orbit": {
        "kind": "circular", "altitude_km": 400.0, "inclination_deg": 97.0, "epoch_utc": "2016-12-19T12:00:00Z"}}, "m.toml")
    assert cfg.orbit.kind == "circular" and cfg.orbit.altitude_km == 400.0
    assert cfg.orbit.tle_line1 is None and cfg.orbit.tle_line2 is None
    # and back: a TLE file over a circular base keeps none of the circular fields
    data = {"name": "c", "orbit": cfg.orbit.model_dump(mode="json"), "station": cfg.station.model_dump(mode="json"),
            "passes": cfg.passes.model_dump(mode="json")}
    again = config_from_dict(data)
    assert again.orbit == cfg.orbit  # a full dump of a valid orbit validates again (defaults are not "stray")


def test_tle_lines_on_a_circular_orbit_are_refused():
    with pytest.raises(ConfigError, match="tle_line1"):
        satqkd.config.OrbitConfig(kind="circular", altitude_km=500, inclination_deg=97, epoch_utc="2016-12-19T00:00:00Z",
                                  tle_line1="1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993")


def test_cli_orbit_override_exits_2(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('base = "micius-2016-12-19"\nname = "w"\n[orbit]\naltitude_km = 400\n', encoding="utf-8")
    r = runner.invoke(_app(), ["simulate", "--config", str(m), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "altitude_km" in r.output and "circular" in r.output


# -- sweeps ----------------------------------------------------------------------------------------------

def test_sweep_returns_a_table_and_the_key_grows_with_the_aperture(cfg):
    seen = []
    df = satqkd.sweep(cfg, {"receiver.aperture_m": [0.6, 1.2]}, progress=lambda d, t: seen.append((d, t)))
    assert list(df.columns[:2]) == ["receiver.aperture_m", "pass_start_utc"]
    assert df["receiver.aperture_m"].tolist() == [0.6, 1.2]
    assert df["sifted_key_bits"].iloc[1] > 2 * df["sifted_key_bits"].iloc[0]  # collected area ∝ D² (3.6× here)
    assert df["final_key_bits"].iloc[1] > df["final_key_bits"].iloc[0] > 0
    assert df["pass_start_utc"].nunique() == 1  # the receiver does not move the pass
    assert seen == [(1, 2), (2, 2)]


def test_sweep_grid_is_the_product_and_bad_points_fail_before_any_work(cfg, monkeypatch):
    from satqkd.jobs import sweep as sw

    assert len(sw._points({"a.b": [1, 2, 3], "c.d": [4, 5]})) == 6
    calls = []
    monkeypatch.setattr("satqkd.sky.orbit.select_pass", lambda *a, **k: calls.append(1))
    with pytest.raises(ConfigError, match=r"receiver\.aperture_m"):
        sw.sweep(cfg, {"receiver.aperture_m": [1.0, -1.0]})
    with pytest.raises(ConfigError, match="not a field"):
        sw.sweep(cfg, {"receiver.apertur": [1.0]})
    assert calls == []


def test_sweep_values_parsing():
    from satqkd.jobs.sweep import parse_values

    assert parse_values("0.6,1,true,hwp") == [0.6, 1, True, "hwp"]
    assert parse_values("0.5:2.0:4") == [0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ConfigError):
        parse_values("1,,2")


def test_cli_sweep_json_and_csv(tmp_path):
    out = tmp_path / "s.csv"
    r = runner.invoke(_app(), ["sweep", "--param", "detectors.efficiency=0.3,0.5", "--json", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["detectors.efficiency"] for row in rows] == [0.3, 0.5]
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("detectors.efficiency,pass_start_utc")
    r = runner.invoke(_app(), ["sweep", "--param", "detectors.efficiency"])
    assert r.exit_code == 2 and "FIELD=VALUES" in r.output


# -- figures and report ---------------------------------------------------------------------------------

def test_paper_pass_only_for_the_paper_configuration_and_date(cfg):
    g = satqkd.find_pass(cfg)
    assert is_paper_pass(cfg, g.start_utc, g.duration_s)
    assert not is_paper_pass(cfg, datetime(2016, 12, 20, 16, 28, tzinfo=timezone.utc), g.duration_s)
    assert not is_paper_pass(cfg, g.start_utc, 30.0)  # a slice of the pass
    bigger = cfg.model_copy(deep=True)
    bigger.receiver.aperture_m = 1.8
    assert not is_paper_pass(bigger, g.start_utc, g.duration_s)
    renamed = cfg.model_copy(update={"name": "mine", "description": "x"})
    assert is_paper_pass(renamed, g.start_utc, g.duration_s)


def _summary(paper: bool) -> dict:
    return {"satellite": "Micius", "station": "Xinglong", "seed": 7, "start_utc": "2016-12-19T16:49:57.511280+00:00",
            "culmination_utc": "2016-12-19T16:52:13.8+00:00", "max_elevation_deg": 47.83, "preset": "p",
            "duration_s": 272.5, "sifted_bits": 1_650_000, "final_key_bits": 377_000, "paper_pass": paper,
            "key_budget": {"final key": 377_000, "rest": 1_273_000}}


def _png(path):
    from satqkd.report import _figure, save_figure

    fig = _figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [0, 1])
    return save_figure(fig, path)


def test_report_embeds_captioned_figures_and_readable_times(tmp_path):
    _png(tmp_path / "fig3_pass.png")
    p = report.write_html(_summary(True), ["fig3_pass.png"], tmp_path / "report.html")
    page = p.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    assert "Fig. 3" in page and "sifted key rate" in page  # the caption says what it shows
    assert "2016-12-19 16:49:57 UTC" in page and "T16:49" not in page
    assert "paper (Liao et al. 2017)" in page and "1,671,072" in page


def test_report_of_a_what_if_has_no_paper_column(tmp_path):
    page = report.write_html(_summary(False), [], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Liao et al. 2017)</th>" not in page and "1,671,072" not in page and "what-if" in page


def test_key_budget_labels_every_part_without_overprinting():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    budget = {"multi-photon": 1_071_596, "phase error": 121_098, "EC (Alice)": 191_868, "EC (Bob)": 54,
              "verification": 133, "finite size": 64, "auth": 639, "final key": 377_651, "rounding": 1}
    fig = report.plot_key_budget(budget)
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts]
    assert len(labels) == len(budget)
    for t, (k, v) in zip(labels, budget.items()):
        assert f"{v:,} bits" in t.get_text()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == list(budget)
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    # every positive part has a visible bar (at least a few pixels wide)
    widths = [b.get_window_extent(renderer).width for b in ax.patches]
    assert len(widths) == len(budget) and min(widths) >= 3
    fig_box = fig.bbox
    assert all(fig_box.x0 <= b.x0 and b.x1 <= fig_box.x1 for b in boxes)


def test_fig3_legend_clear_of_the_distance_curve():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    t = np.arange(273.0)
    r = 645 + (1200 - 645) * ((t - 136) / 136) ** 2
    ts = {"t_s": t, "sifted_bits": 12000 * np.exp(-(((t - 136) / 70) ** 2)), "range_km": r, "qber": np.full(t.size, 0.011)}
    fig = report.plot_pass(ts)
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    ax1 = fig.axes[0]
    axr = next(a for a in fig.axes if a.get_lines() and a.get_ylabel().startswith("physical distance"))
    legend = ax1.get_legend().get_window_extent(fig.canvas.get_renderer())
    line = axr.get_lines()[0]
    pts = line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
    inside = (pts[:, 0] >= legend.x0) & (pts[:, 0] <= legend.x1) & (pts[:, 1] >= legend.y0) & (pts[:, 1] <= legend.y1)
    assert not inside.any()
    # the bars stay below the legend too
    bars_top = ax1.transData.transform((136, 12.0))[1]
    assert bars_top < legend.y0
    assert "paper" not in ax1.figure.axes[1].get_legend().get_texts()[0].get_text()  # what-if by default


# -- the report of a real (short) run: postprocess RAW_DIR, and a headless browser ------------------------

@pytest.fixture(scope="module")
def short_run(tmp_path_factory, cfg):
    """30 s of the Micius pass around culmination, written as `satqkd simulate` writes a run."""
    from satqkd.outputs import write_simulation
    from satqkd.warmup import _slice_geometry

    g = satqkd.find_pass(cfg)
    c = g.culmination_index
    sim = satqkd.simulate(cfg, seed=5, geometry=_slice_geometry(g, slice(c - 15, c + 15)))
    d = tmp_path_factory.mktemp("short_run")
    write_simulation(sim, d, figures=True)
    return d


def test_postprocess_of_a_raw_dir_writes_a_report_with_the_pass(short_run, tmp_path):
    out = tmp_path / "pp"
    r = runner.invoke(_app(), ["postprocess", str(short_run), "--out", str(out), "--seed", "2"])
    assert r.exit_code in (0, 1), r.output
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["satellite"] == "Micius" and s["station"] == "Xinglong" and s["seed"] == 5 and s["protocol_seed"] == 2
    assert s["start_utc"].startswith("2016-12-19T16:5")
    page = (out / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<h1>(.*)</h1>", page).group(1)
    assert "Micius → Xinglong" in title and "2016-12-19 16:5" in title and "UTC" in title and "seed 5" in title
    assert "→ ," not in page and "Start  UTC" not in page
    # the pass's figures (beside the records) are in the report, embedded
    assert page.count('<img src="data:image/png;base64,') >= 3


def test_what_if_run_report_and_tables_have_no_paper_column(short_run):
    s = json.loads((short_run / "summary.json").read_text(encoding="utf-8"))
    assert s["paper_pass"] is False  # 30 s of the pass is not the paper's 273 s
    page = (short_run / "report.html").read_text(encoding="utf-8")
    assert "what-if" in page and "1,671,072" not in page


CHROMIUM = "/usr/bin/chromium"

_CHECK = """<script>
window.__errors = [];
window.addEventListener("error", e => { __errors.push("error: " + (e.message || (e.target && String(e.target.src || e.target.href || "")).slice(0, 80))); }, true);
const __ce = console.error; console.error = function (...a) { __errors.push("console.error: " + a.join(" ")); __ce.apply(console, a); };
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt.slice(0, 40));
  const d = document.createElement("pre"); d.id = "satqkd-check";
  d.textContent = JSON.stringify({images: imgs.length, bad: bad, errors: __errors});
  document.body.appendChild(d);
});
</script>"""


@pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_report_in_a_headless_browser(short_run, tmp_path):
    import subprocess

    page = (short_run / "report.html").read_text(encoding="utf-8")
    assert "<head>" in page
    checked = tmp_path / "report_checked.html"  # the page itself, with a check script first in <head>
    checked.write_text(page.replace("<head>", "<head>" + _CHECK, 1), encoding="utf-8")
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="satqkd-check">(.*?)</pre>', p.stdout, re.S)
    assert m, p.stderr[-2000:]
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert res["images"] >= 3 and res["bad"] == [] and res["errors"] == []
    console = [ln for ln in p.stderr.splitlines() if "CONSOLE(" in ln]
    assert console == []
