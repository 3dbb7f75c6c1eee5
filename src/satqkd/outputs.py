"""Writing a run's files: the edge between the pure pipeline and the file system."""

from __future__ import annotations

from pathlib import Path

from . import report
from .rawio import save_raw

__all__ = ["write_simulation"]

FIBER_LOSS_DB_PER_KM = 0.2


def write_simulation(sim, out: str | Path, *, figures: bool = True) -> list[Path]:
    """Write summary.json, timeseries.csv, raw.npz (and the figures) of a :class:`PassSimulation`."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    ts = sim.timeseries()
    files = [
        report.write_json(sim.summary(), d / "summary.json"),
        report.write_timeseries_csv(ts, d / "timeseries.csv"),
        save_raw(sim.raw, d),
    ]
    if figures:
        g = sim.geometry
        title = f"{g.satellite} → {g.station}, {g.start_utc:%Y-%m-%d %H:%M} UTC (simulated, seed {sim.seed})"
        files.append(report.plot_pass(ts, d / "fig3_pass.png", title=title))
        files.append(
            report.plot_link_efficiency(ts["range_km"], ts["link_efficiency_observed"], FIBER_LOSS_DB_PER_KM, d / "fig4_link_efficiency.png")
        )
        link = sim.link
        if link.contrast_compensated is not None and link.contrast_uncompensated is not None:
            files.append(report.plot_polarization(link.t_s, link.contrast_compensated, link.contrast_uncompensated, d / "fig2c_polarization.png"))
    return files
