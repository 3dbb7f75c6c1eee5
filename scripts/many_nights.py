"""One model for many nights: the paper's other-day figures against the model that reproduces 2016-12-19.

The paper (Liao et al., Nature 549, 43 (2017)) gives, besides the 2016-12-19 pass (≈ 12 kbit/s sifted at
645 km, ≈ 1 kbit/s at 1200 km, 1,671,072 sifted bits, QBER 1.1 %), two figures from other days ("23 days"
paragraph): a sifted rate up to **40.2 kbit/s at 530 km** and **≈ 1.2 kbit/s at 1,034.7 km** (25°). This
script evaluates a model — a mission config — on the three passes of the preset's TLE closest to those
geometries (2016-12-19 645 km / 47.8°, 2017-01-06 516 km / 71.3°, 2016-12-31 1,033 km / 24.3°) with the
closed-form expected rates (``quantum.detector.expected_statistics``, as ``scripts/calibrate_micius.py``), and
over every night pass of 19 days for the figure of peak rate vs range. Run:

    .venv/bin/python scripts/many_nights.py                        # table: calibrated, physical, grid
    .venv/bin/python scripts/many_nights.py --figure peak_vs_range.png

``comparison(cfg)`` and ``peak_rate_vs_range(cfg)`` return the numbers (tests/test_many_nights.py uses them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys

import numpy as np

import satqkd
from satqkd.quantum.detector import expected_statistics, gate_efficiency, tag_jitter_ps
from satqkd.sky.link import link_series
from satqkd.sky.orbit import find_passes

#: the paper's sifted-rate figures: (range km, elevation deg or None, sifted bit/s, what)
PAPER_POINTS = (
    (645.0, 47.8, 12_000.0, "2016-12-19, 645 km"),
    (1200.0, 19.5, 1_000.0, "2016-12-19, 1200 km"),
    (530.0, None, 40_200.0, "other days: up to 40.2 kbit/s at 530 km"),
    (1034.7, 25.0, 1_200.0, "other days: 1.2 kbit/s at 1,034.7 km"),
)
#: search starts of the two other-day passes (the preset's TLE, SGP4)
OTHER_DAYS = {"near": dt.datetime(2017, 1, 6, 16, 30, tzinfo=dt.timezone.utc),
              "far": dt.datetime(2016, 12, 31, 17, 5, tzinfo=dt.timezone.utc)}


def expected_sifted_rate_bps(cfg, geometry, seed: int = 0):
    """Expected signal sifted bits and errors per second along a pass (closed form, seeded link draws)."""
    link = link_series(cfg, geometry, np.random.default_rng(seed))
    src, det, tim = cfg.source, cfg.detectors, cfg.timing
    g = gate_efficiency(tim.window_ns, tag_jitter_ps(det.jitter_ps, tim.sync_jitter_ns))
    noise = (link.background_rate_hz + link.dark_count_hz) * tim.window_ns * 1e-9
    st = expected_statistics(src.intensities[0], link.transmittance, det.efficiency, link.misalignment, noise, g)
    pps = src.rep_rate_hz * src.probabilities[0]
    return st["sifted"] * pps, st["errors"] * pps


def _pass_from(cfg, start):
    c = cfg.model_copy(deep=True)
    c.passes.search_start_utc = start
    c.passes.search_days = 0.1
    return satqkd.find_pass(c)


def comparison(cfg) -> dict:
    """The model's figures for the paper's four points, the 2016-12-19 totals and the ratios to the paper.

    Keys: ``d19_near_bps`` (at the shortest range), ``d19_far_bps`` (mean of the two 1200 km ends),
    ``d19_sifted_bits``, ``d19_qber``, ``near_peak_bps`` (2017-01-06 pass, 516 km), ``far_peak_bps``
    (2016-12-31 pass, 1,033 km), ``near_ratio`` / ``far_ratio`` (model / paper: 40.2k, 1.2k).
    """
    g = satqkd.find_pass(cfg)
    s, e = expected_sifted_rate_bps(cfg, g)
    out = {"d19_near_bps": float(s[np.argmin(g.range_m)]), "d19_far_bps": float(0.5 * (s[0] + s[-1])),
           "d19_sifted_bits": float(np.sum(s * np.gradient(g.t_s))), "d19_qber": float(np.sum(e) / np.sum(s))}
    out["near_peak_bps"] = float(expected_sifted_rate_bps(cfg, _pass_from(cfg, OTHER_DAYS["near"]))[0].max())
    out["far_peak_bps"] = float(expected_sifted_rate_bps(cfg, _pass_from(cfg, OTHER_DAYS["far"]))[0].max())
    out["near_ratio"] = out["near_peak_bps"] / 40_200.0
    out["far_ratio"] = out["far_peak_bps"] / 1_200.0
    return out


def d19_acceptance_holds(c: dict) -> bool:
    """The 2016-12-19 acceptance on the expected figures: 9–15 kbit/s near, 0.6–1.6 kbit/s far, sifted ±10 %."""
    return (9_000 <= c["d19_near_bps"] <= 15_000 and 600 <= c["d19_far_bps"] <= 1_600
            and abs(c["d19_sifted_bits"] / 1_671_072 - 1) <= 0.10)


def peak_rate_vs_range(cfg, days: float = 19.0) -> list[tuple[float, float, float]]:
    """(shortest range km, max elevation deg, peak expected sifted bit/s) of every night pass in ``days``."""
    c = cfg.model_copy(deep=True)
    c.passes.search_days = float(days)
    out = []
    for g in find_passes(c.orbit, c.station, c.passes, satellite_name=c.satellite):
        s, _ = expected_sifted_rate_bps(c, g)
        out.append((float(g.range_m.min() / 1e3), float(g.elevation_deg.max()), float(s.max())))
    return out


def models() -> dict:
    """The models compared: the calibrated preset, the physical atmosphere at 23 km, and the best of a grid."""
    cal = satqkd.load_preset("micius-2016-12-19")
    phys = cal.model_copy(deep=True)
    phys.atmosphere.model = "physical"
    return {"calibrated (preset)": cal, "physical, V = 23 km": phys}


def grid(visibilities_m=(4e3, 6e3, 8e3, 12e3, 23e3), fovs_urad=(6.0, 8.0, 10.0, 14.0, 20.8)) -> list[tuple]:
    """(visibility, field of view, comparison) over the physical atmosphere × field-of-view grid."""
    base = satqkd.load_preset("micius-2016-12-19")
    rows = []
    for v, fov in itertools.product(visibilities_m, fovs_urad):
        c = base.model_copy(deep=True)
        c.atmosphere.model = "physical"
        c.atmosphere.visibility_m = float(v)
        c.receiver.field_of_view_urad = float(fov)
        rows.append((v, fov, comparison(c)))
    return rows


def figure(curves: dict):
    """Peak sifted rate vs shortest range, one marker set per model, with the paper's points."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for (name, pts), m in zip(curves.items(), "os^v"):
        r, _, p = np.array(pts).T
        ax.plot(r, p, m, ms=5, alpha=0.8, label=name)
    for r, _, rate, what in PAPER_POINTS:
        ax.plot(r, rate, "k*", ms=11)
        ax.annotate(what, (r, rate), fontsize=6, xytext=(4, 4), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("shortest range of the pass (km)")
    ax.set_ylabel("peak one-second sifted rate (bit/s)")
    ax.set_title("night passes of Micius over Xinglong, 2016-12-19 + 19 days (expected)")
    ax.legend(fontsize=7)
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", default=None, help="write peak rate vs range (PNG) here")
    ap.add_argument("--grid", action="store_true", help="also print the visibility × field-of-view grid")
    args = ap.parse_args(argv)
    w = sys.stdout.write
    w("| model | 12-19 near (12k) | 12-19 far (1k) | 12-19 sifted (1.67 M) | 01-06 peak (40.2k) | 12-31 peak (1.2k) |\n|---|---|---|---|---|---|\n")
    ms = models()
    for name, cfg in ms.items():
        c = comparison(cfg)
        w(f"| {name} | {c['d19_near_bps']:,.0f} | {c['d19_far_bps']:,.0f} | {c['d19_sifted_bits'] / 1e6:.2f} M | "
          f"{c['near_peak_bps']:,.0f} ({c['near_ratio']:.2f}) | {c['far_peak_bps']:,.0f} ({c['far_ratio']:.2f}) |\n")
    if args.grid:
        w("\n| V (km) | FOV (µrad) | 12-19 near | 12-19 far | 12-19 sifted | 12-19 acceptance | 01-06 peak / 40.2k | 12-31 peak / 1.2k |\n"
          "|---|---|---|---|---|---|---|---|\n")
        for v, fov, c in grid():
            w(f"| {v / 1e3:g} | {fov:g} | {c['d19_near_bps']:,.0f} | {c['d19_far_bps']:,.0f} | {c['d19_sifted_bits'] / 1e6:.2f} M | "
              f"{'holds' if d19_acceptance_holds(c) else 'fails'} | {c['near_ratio']:.2f} | {c['far_ratio']:.2f} |\n")
    if args.figure:
        figure({name: peak_rate_vs_range(cfg) for name, cfg in ms.items()}).savefig(args.figure, dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
