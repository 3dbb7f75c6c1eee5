"""Calibrate the Micius preset's free parameters against the paper's public figures.

The paper gives no zenith extinction, seeing, receiver field of view or sky background. This script
fixes them by least squares on the closed-form expected statistics (``quantum.detector.
expected_statistics``) along the real pass geometry, against the paper's numbers for the
2016-12-19 pass: sifted rate ≈ 12 kbit/s at 645 km and ≈ 1 kbit/s at 1200 km, 1,671,072 sifted
bits (signal, basis-matched) in 273 s, mean QBER 1.1 %. Run:

    .venv/bin/python scripts/calibrate_micius.py

and copy the printed values into ``presets/micius-2016-12-19.toml`` (see docs/calibration.md).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

import satqkd
from satqkd.quantum.detector import expected_statistics, gate_efficiency, tag_jitter_ps
from satqkd.sky.link import link_series

TARGET = {"sifted_645": 12_000.0, "sifted_1200": 1_000.0, "sifted_total": 1_671_072.0, "qber": 0.011, "qber_rise": 0.003}
# "qber_rise": the paper only says the QBER is "slightly higher in the second half of the orbit when the
# ground telescope points to Beijing"; we take +0.3 percentage points (second half minus first half).


def expected(cfg, geometry):
    link = link_series(cfg, geometry, np.random.default_rng(0))
    src, det, tim = cfg.source, cfg.detectors, cfg.timing
    g = gate_efficiency(tim.window_ns, tag_jitter_ps(det.jitter_ps, tim.sync_jitter_ns))
    noise = (link.background_rate_hz + link.dark_count_hz) * tim.window_ns * 1e-9
    st = expected_statistics(src.intensities[0], link.transmittance, det.efficiency, link.misalignment, noise, g)
    pulses_per_s = src.rep_rate_hz * src.probabilities[0]
    sifted_rate = st["sifted"] * pulses_per_s
    err_rate = st["errors"] * pulses_per_s
    dt = np.gradient(geometry.t_s)
    return link, sifted_rate, err_rate, dt


def residuals(x, cfg, geometry):
    z, fov, sky, city = x
    c = cfg.model_copy(deep=True)
    c.atmosphere.zenith_loss_db = z
    c.receiver.field_of_view_urad = fov
    c.background.sky_rate_hz = sky
    c.background.city_rate_hz = city
    link, s, e, dt = expected(c, geometry)
    r = link.range_m / 1e3
    near = s[np.argmin(r)]
    far = 0.5 * (s[0] + s[-1])
    total = np.sum(s * dt)
    qber = np.sum(e * dt) / total
    half = geometry.t_s > geometry.t_s[geometry.culmination_index]
    q1 = np.sum((e * dt)[~half]) / np.sum((s * dt)[~half])
    q2 = np.sum((e * dt)[half]) / np.sum((s * dt)[half])
    return [
        (q2 - q1 - TARGET["qber_rise"]) / 0.001,
        np.log(near / TARGET["sifted_645"]),
        np.log(far / TARGET["sifted_1200"]),
        np.log(total / TARGET["sifted_total"]),
        (qber - TARGET["qber"]) / 0.001,
    ]


def main() -> None:
    cfg = satqkd.load_preset("micius-2016-12-19")
    geometry = satqkd.find_pass(cfg)
    x0 = [cfg.atmosphere.zenith_loss_db, cfg.receiver.field_of_view_urad, cfg.background.sky_rate_hz, cfg.background.city_rate_hz]
    sol = least_squares(residuals, x0, args=(cfg, geometry), bounds=([0.0, 2.0, 0.0, 0.0], [10.0, 200.0, 5000.0, 20000.0]), x_scale=[1, 5, 100, 100])
    z, fov, sky, city = sol.x
    print(f"zenith_loss_db = {z:.3f}\nfield_of_view_urad = {fov:.3f}\nsky_rate_hz = {sky:.1f}\ncity_rate_hz = {city:.1f}")
    print("residuals (rise/0.1%, log near, log far, log total, qber/0.1%):", np.round(sol.fun, 4))


if __name__ == "__main__":
    main()
