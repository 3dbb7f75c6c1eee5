"""Daylight key vs spectral filter width and field of view, for a preset with ``background.sunlight``.

For every (filter width, field of view) pair the pass of the preset is kept (same geometry, same seed of
the link's random draws) and the *expected* final key is computed with the closed-form model of
``satqkd.jobs.fastkey.expected_pass`` (the protocol's estimation, EC leakage and ε budget on the
expected counts; no Monte Carlo). A narrower field of view cuts the sky background ∝ Θ² but also
the signal (seeing loss); a narrower filter cuts only the background. Run:

    .venv/bin/python scripts/daylight_sweep.py                        # micius-1550nm-day, table
    .venv/bin/python scripts/daylight_sweep.py --preset NAME --figure sweep.png

It prints a Markdown table (final key bits, with the mean QBER and the mean sky counts per detector)
and, with ``--figure``, writes a heat map. ``sweep(cfg)`` returns the same numbers as a dict.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import satqkd
from satqkd.jobs.fastkey import expected_pass
from satqkd.sky.link import link_series

FILTERS_NM = (0.03, 0.1, 0.3, 1.0, 3.0)
FOVS_URAD = (2.0, 3.5, 5.0, 10.0, 20.0)


def sweep(cfg, filters_nm=FILTERS_NM, fovs_urad=FOVS_URAD, seed: int = 1) -> dict:
    """Expected final key bits, QBER and mean background per detector on the preset's pass, for each pair."""
    geometry = satqkd.find_pass(cfg)
    key = np.zeros((len(filters_nm), len(fovs_urad)), dtype=np.int64)
    qber = np.full(key.shape, np.nan)
    bg = np.zeros(key.shape)
    for i, f in enumerate(filters_nm):
        for j, fov in enumerate(fovs_urad):
            c = cfg.model_copy(deep=True)
            c.receiver.filter_width_nm = float(f)
            c.receiver.field_of_view_urad = float(fov)
            link = link_series(c, geometry, np.random.default_rng(seed))
            ex = expected_pass(c, link)
            key[i, j], qber[i, j] = ex.final_key_bits, ex.qber
            bg[i, j] = float(np.mean(link.background_rate_hz))
    return {"filters_nm": list(filters_nm), "fovs_urad": list(fovs_urad), "final_key_bits": key, "qber": qber,
            "background_hz": bg, "start_utc": geometry.start_utc, "duration_s": geometry.duration_s}


def table(res: dict) -> str:
    head = "| filter \\ field of view | " + " | ".join(f"{v:g} µrad" for v in res["fovs_urad"]) + " |"
    lines = [head, "|---" * (len(res["fovs_urad"]) + 1) + "|"]
    for i, f in enumerate(res["filters_nm"]):
        cells = []
        for j in range(len(res["fovs_urad"])):
            k, q, b = res["final_key_bits"][i, j], res["qber"][i, j], res["background_hz"][i, j]
            cells.append(f"{k:,} ({100 * q:.1f} %, {b:,.0f} Hz)" if k > 0 else f"0 ({100 * q:.1f} %, {b:,.0f} Hz)")
        lines.append(f"| {f:g} nm | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(res: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    k = np.where(res["final_key_bits"] > 0, res["final_key_bits"], np.nan)
    im = ax.imshow(np.log10(k), origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(res["fovs_urad"])), [f"{v:g}" for v in res["fovs_urad"]])
    ax.set_yticks(range(len(res["filters_nm"])), [f"{v:g}" for v in res["filters_nm"]])
    ax.set_xlabel("field of view (µrad, full angle)")
    ax.set_ylabel("filter width (nm)")
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            ax.text(j, i, f"{res['final_key_bits'][i, j]:,}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label="log10 final key bits")
    ax.set_title(f"expected key of the daytime pass {res['start_utc']:%Y-%m-%d %H:%M} UTC")
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="micius-1550nm-day")
    ap.add_argument("--figure", default=None, help="write a heat map (PNG) here")
    args = ap.parse_args(argv)
    res = sweep(satqkd.load_preset(args.preset))
    sys.stdout.write(f"pass {res['start_utc']:%Y-%m-%dT%H:%M:%S} UTC, {res['duration_s']:.0f} s; "
                     "cells: expected final key bits (QBER, mean background counts per detector)\n\n")
    sys.stdout.write(table(res) + "\n")
    if args.figure:
        figure(res).savefig(args.figure, dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
