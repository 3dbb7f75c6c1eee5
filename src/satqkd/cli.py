"""``satqkd`` command line: parses arguments, shows progress, writes files. The work is in the package.

Exit status: 0 success, 1 the run failed (e.g. the protocol aborted), 2 bad input (the message names
the field or option and its allowed range; nothing is written).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import ConfigError, MissionConfig, list_presets, load_config, load_preset, preset_text

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Satellite decoy-state BB84 QKD, end to end (after Micius, 2017).")
console = Console(stderr=True)
out_console = Console()


class BadInput(Exception):
    """Bad command-line input: exit status 2."""


def _error(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def _fail_input(msg: str) -> None:
    _error(msg)
    raise typer.Exit(2)


def _load(preset: Optional[str], config: Optional[Path]) -> MissionConfig:
    if preset and config:
        _fail_input("give either --preset or --config, not both")
    try:
        if config:
            return load_config(config)
        return load_preset(preset or "micius-2016-12-19")
    except ConfigError as exc:
        _fail_input(str(exc))
        raise  # unreachable


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        _fail_input(f"--out {out} exists and is not a directory")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def _stage_callback(prog: Progress):
    tasks: dict[str, int] = {}

    def cb(stage: str, done: float, total: float) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return cb


@app.command()
def presets(show: Optional[str] = typer.Option(None, "--show", help="print this preset's TOML")) -> None:
    """List the shipped mission presets (or print one)."""
    if show:
        try:
            out_console.print(preset_text(show), highlight=False, markup=False)
        except ConfigError as exc:
            _fail_input(str(exc))
        return
    t = Table(title="satqkd presets")
    t.add_column("name")
    t.add_column("description")
    for name in list_presets():
        t.add_row(name, load_preset(name).description)
    out_console.print(t)


@app.command()
def simulate(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    seed: int = typer.Option(0, min=0, help="random seed: the same seed gives the same records"),
    out: Path = typer.Option(Path("out/simulate"), help="output directory"),
    figures: bool = typer.Option(True, help="write the PNG figures"),
) -> None:
    """Simulate one pass at the physical layer and write summary, time series, raw records and figures."""
    cfg = _load(preset, config)
    _check_out(out)
    from .simulate import simulate as run_sim
    from .outputs import write_simulation

    t0 = time.perf_counter()
    with _progress() as prog:
        try:
            sim = run_sim(cfg, seed, progress=_stage_callback(prog))
        except ValueError as exc:
            _error(str(exc))
            raise typer.Exit(1)
    files = write_simulation(sim, out, figures=figures)
    s = sim.summary()
    _print_pass_summary(s, time.perf_counter() - t0)
    out_console.print(f"wrote {', '.join(str(f) for f in files)}")


def _print_pass_summary(s: dict, seconds: float) -> None:
    t = Table(title=f"{s['satellite']} → {s['station']}, {s['start_utc'][:19]} UTC (seed {s['seed']})")
    t.add_column("figure")
    t.add_column("satqkd", justify="right")
    t.add_column("paper", justify="right")
    t.add_row("QKD data (s)", f"{s['duration_s']:.0f}", "273")
    t.add_row("range (km)", f"{s['min_range_km']:.0f}–{s['max_range_km']:.0f}", "645–1200")
    t.add_row("detections", f"{s['detections']:,}", "3,551,136")
    t.add_row("sifted bits", f"{s['sifted_bits']:,}", "1,671,072")
    t.add_row("QBER", f"{100 * s['qber']:.2f} %", "1.1 %")
    t.add_row("tags kept / wrong pulse", f"{s['tags_kept']:,} / {s['assigned_wrong']}", "—")
    out_console.print(t)
    out_console.print(f"done in {seconds:.1f} s")


@app.command()
def link(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    range_km: Optional[float] = typer.Option(None, min=100, max=100_000, help="slant range"),
    elevation_deg: Optional[float] = typer.Option(None, min=0, max=90, help="elevation (default: from the range for the preset's orbit)"),
    fiber_compare: Optional[float] = typer.Option(None, min=1, max=100_000, help="compare with 0.2 dB/km fiber at this distance (km)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Link budget by cause (transmitter output → in front of the detectors), or the fiber comparison."""
    cfg = _load(preset, config)
    from .sky import link as lk

    if fiber_compare is not None:
        res = lk.fiber_comparison(fiber_compare * 1e3, cfg)
        if json_out:
            out_console.print_json(json.dumps(res))
            return
        t = Table(title=f"{fiber_compare:.0f} km: satellite link vs 0.2 dB/km fiber")
        t.add_column("quantity")
        t.add_column("value", justify="right")
        for k, v in res.items():
            t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        out_console.print(t)
        return
    if range_km is None:
        _fail_input("--range-km is required (allowed: 100 to 100000) unless --fiber-compare is given")
    try:
        res = lk.link_budget_db(cfg, range_km * 1e3, elevation_deg)
    except ValueError as exc:
        _fail_input(str(exc))
    res = {k: float(v) for k, v in res.items()}
    if json_out:
        out_console.print_json(json.dumps(res))
        return
    t = Table(title=f"link budget at {range_km:.0f} km")
    t.add_column("cause")
    t.add_column("loss (dB)", justify="right")
    for k, v in res.items():
        t.add_row(k, f"{v:.2f}")
    out_console.print(t)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
