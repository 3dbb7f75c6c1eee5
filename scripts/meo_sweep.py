"""Medium-Earth-orbit key vs ground-telescope aperture and adaptive-optics Strehl ratio (preset meo-10000km).

For each (receiver aperture, Strehl ratio) the preset's first night pass is kept and the *expected* final key
is computed with the closed-form model ``satqkd.jobs.fastkey.expected_pass`` (the protocol's estimation, EC
leakage and ε budget on expected counts). The calibrated sky and city rates are detected counts of the
preset's receiver; they are rescaled with the étendue (∝ D², the field of view is kept), as in the preset.
Run:

    .venv/bin/python scripts/meo_sweep.py

It prints a Markdown table: expected final key bits (QBER, total loss at culmination in dB).
"""

from __future__ import annotations

import sys

import numpy as np

import satqkd
from satqkd.jobs.fastkey import expected_pass
from satqkd.sky.link import link_series

APERTURES_M = (1.0, 2.0, 4.0)
STREHLS = (None, 0.2, 0.5, 0.8)


def sweep(cfg, apertures_m=APERTURES_M, strehls=STREHLS, seed: int = 1) -> dict:
    geometry = satqkd.find_pass(cfg)
    d0, sky0, city0 = cfg.receiver.aperture_m, cfg.background.sky_rate_hz, cfg.background.city_rate_hz
    rows = {}
    for d in apertures_m:
        for s in strehls:
            c = cfg.model_copy(deep=True)
            c.receiver.aperture_m = float(d)
            c.receiver.ao_strehl_ratio = s
            c.background.sky_rate_hz = sky0 * (d / d0) ** 2
            c.background.city_rate_hz = city0 * (d / d0) ** 2
            link = link_series(c, geometry, np.random.default_rng(seed))
            ex = expected_pass(c, link)
            loss = float(np.sum([v for v in link.loss_db.values()], axis=0)[geometry.culmination_index])
            rows[(d, s)] = (ex.final_key_bits, ex.qber, loss)
    return {"apertures_m": list(apertures_m), "strehls": list(strehls), "rows": rows,
            "start_utc": geometry.start_utc, "duration_s": geometry.duration_s}


def table(res: dict) -> str:
    strehl = ["no AO" if s is None else f"S = {s:g}" for s in res["strehls"]]
    lines = ["| receiver \\ AO | " + " | ".join(strehl) + " |", "|---" * (len(strehl) + 1) + "|"]
    for d in res["apertures_m"]:
        cells = [f"{k:,} ({100 * q:.2f} %, {l:.1f} dB)" for k, q, l in (res["rows"][(d, s)] for s in res["strehls"])]
        lines.append(f"| {d:g} m | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    res = sweep(satqkd.load_preset("meo-10000km"))
    sys.stdout.write(f"pass {res['start_utc']:%Y-%m-%dT%H:%M:%S} UTC, {res['duration_s']:.0f} s; "
                     "cells: expected final key bits (QBER, total loss at culmination)\n\n" + table(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
