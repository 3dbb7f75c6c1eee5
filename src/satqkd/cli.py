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


def _with_attack(cfg: MissionConfig, attack: Optional[str], fraction: float) -> MissionConfig:
    if attack is None:
        return cfg
    from .config import AttackConfig

    kinds = ("intercept_resend", "pns", "beam_splitting")
    if attack not in kinds:
        _fail_input(f"--attack must be one of {', '.join(kinds)}; got {attack!r}")
    return cfg.model_copy(update={"attack": AttackConfig(kind=attack, fraction=fraction)})


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


def _announce_compilation(ec: Optional[str], simulate: bool = True):
    """Say so before a run that will compile numba kernels (a fresh install without the warm-up).

    Returns a function to call after the run: it notes which kernels the run compiled."""
    from .warmup import cold_kernels, kernel_modules, record_used

    mods = kernel_modules(ec, simulate=simulate)
    cold = cold_kernels(mods)
    if cold:
        console.print(
            f"compiling kernels, once ({len(cold)} not in the cache; ~1-2 min on 2 cores, later runs load them; "
            "`python -m satqkd.warmup` does this ahead)",
            highlight=False,
        )
        return lambda: record_used(mods)
    return lambda: None


def _stage_callback(prog: Progress):
    tasks: dict[str, int] = {}

    def cb(stage: str, done: float, total: float) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return cb


def _version_callback(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"satqkd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="print the version and exit"),
) -> None:
    """Satellite decoy-state BB84 QKD, end to end (after Micius, 2017)."""


@app.command()
def presets(show: Optional[str] = typer.Option(None, "--show", help="print this preset's TOML")) -> None:
    """List the shipped mission presets (or print one)."""
    if show:
        try:
            # raw text: rich would wrap long lines at the terminal width and break `> mission.toml`
            sys.stdout.write(preset_text(show))
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
    from .pass_simulation import simulate as run_sim
    from .outputs import write_simulation

    compiled = _announce_compilation(None)

    t0 = time.perf_counter()
    with _progress() as prog:
        try:
            sim = run_sim(cfg, seed, progress=_stage_callback(prog))
        except ValueError as exc:
            _error(str(exc))
            raise typer.Exit(1)
    files = write_simulation(sim, out, figures=figures)
    compiled()
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
def passes(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    days: Optional[float] = typer.Option(None, min=0.01, max=366, help="search length (default: the config's search_days)"),
    station: str = typer.Option("first", help="first | second (the relay presets' second station)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Find the QKD windows of the configured satellite over a station (night, elevation and range rules)."""
    cfg = _load(preset, config)
    _check_choice("station", station, ("first", "second"))
    st = cfg.station if station == "first" else cfg.second_station
    if st is None:
        _fail_input("--station second needs a config with [second_station]")
    rules = cfg.passes if days is None else cfg.passes.model_copy(update={"search_days": days})
    from .sky.orbit import find_passes

    found = find_passes(cfg.orbit, st, rules, satellite_name=cfg.satellite)
    rows = [
        {
            "start_utc": g.start_utc.isoformat(),
            "duration_s": round(g.duration_s, 1),
            "max_elevation_deg": round(float(g.elevation_deg.max()), 2),
            "min_range_km": round(float(g.range_m.min()) / 1e3, 1),
            "max_range_km": round(float(g.range_m.max()) / 1e3, 1),
        }
        for g in found
    ]
    if json_out:
        typer.echo(json.dumps(rows))
        return
    t = Table(title=f"{cfg.satellite} over {st.name}: {len(rows)} QKD window(s) in {rules.search_days:g} day(s)")
    for c in ("start (UTC)", "duration (s)", "max elevation (°)", "range (km)"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["start_utc"][:19], f"{r['duration_s']:.0f}", f"{r['max_elevation_deg']:.1f}", f"{r['min_range_km']:.0f}–{r['max_range_km']:.0f}")
    out_console.print(t)


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


EC_CHOICES = ("cascade", "ldpc", "hamming")
FK_CHOICES = ("chernoff", "lim2014", "paper2017")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail_input(f"--{name} must be one of {', '.join(choices)}; got {value!r}")


def _deposit(res, cfg, seed: int, store: Path, sat_store: Optional[Path], pass_id: str) -> list[str]:
    """Put the verified final keys into the ground station's (and optionally the satellite's) store."""
    from .keys.store import KeyStore, Origin, key_id_for

    if not res.ok:
        return []
    eps = float(sum(res.bob.epsilon_parts.values()))
    origin = Origin(kind="qkd", pass_id=pass_id, seed=seed, epsilon=eps)
    kid = key_id_for(pass_id)
    with KeyStore(store, site=cfg.station.name) as st:
        st.deposit(cfg.satellite, res.bob.key, key_id=kid, origin=origin)
    if sat_store is not None:
        with KeyStore(sat_store, site=cfg.satellite) as st:
            st.deposit(cfg.station.name, res.alice.key, key_id=kid, origin=origin)
    return [kid]


def _postprocess_and_write(raw, cfg, seed, ec, finite_key, out: Path, sim_summary: dict | None, prog,
                           store: Optional[Path] = None, sat_store: Optional[Path] = None) -> dict:
    from .outputs import postprocess_summary, write_keys
    from .protocol.session import postprocess as run_pp
    from . import report

    cb = _stage_callback(prog)
    cb("protocol", 0, 1)
    res = run_pp(raw, cfg, seed=seed, ec=ec, finite_key=finite_key)
    cb("protocol", 1, 1)
    pp = postprocess_summary(res)
    summary = {**(sim_summary or {}), **pp}
    if sim_summary:
        summary["stage_seconds"] = {**{f"sim_{k}": v for k, v in sim_summary["stage_seconds"].items()}, **pp["stage_seconds"]}
    pass_id = str(raw.meta.get("pass_id") or f"{cfg.name}:seed{seed}")
    if store is not None:
        summary["store_key_ids"] = _deposit(res, cfg, seed, store, sat_store, pass_id)
    report.write_json(summary, out / "summary.json")
    write_keys(res, out)
    if res.ok:
        title = f"Key budget: {pp['sifted_key_bits']:,} sifted bits → {pp['final_key_bits']:,} final bits"
        report.save_figure(report.plot_key_budget(pp["key_budget"], title=title), out / "key_budget.png", bbox_inches="tight")
    if (out / "fig3_pass.png").is_file() or res.ok:
        from .outputs import write_html_report

        write_html_report(out)
    return summary


def _print_key_summary(s: dict) -> None:
    t = Table(title="post-processing")
    t.add_column("figure")
    t.add_column("satqkd", justify="right")
    t.add_column("paper", justify="right")
    if s["aborted"]:
        t.add_row("result", f"aborted: {s['abort_reason']}", "")
    t.add_row("sifted key bits", f"{s['sifted_key_bits']:,}", "1,671,072")
    t.add_row("final key bits", f"{s['final_key_bits']:,}", "300,939")
    t.add_row("ε (total)", f"{s['epsilon']:.2g}" if s["epsilon"] else "—", "1e-9")
    t.add_row("error correction", f"{s['ec_method']}, f = {s['ec_efficiency']:.3f}" if s["ec_efficiency"] else s["ec_method"], "Hamming")
    t.add_row("finite-key bound", s["finite_key_method"], "(Gaussian)")
    t.add_row("keys match", str(s["keys_match"]), "")
    t.add_row("classical traffic", f"{s['classical_bytes_up'] / 1e6:.2f} MB up, {s['classical_bytes_down'] / 1e6:.2f} MB down, {s['round_trips']} round trips", "")
    t.add_row("time on the RF link", f"{s['link_time_s']:.1f} s", "")
    out_console.print(t)


@app.command()
def run(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    seed: int = typer.Option(0, min=0, help="random seed"),
    out: Path = typer.Option(Path("out/run"), help="output directory"),
    ec: str = typer.Option("cascade", help="error correction: cascade | ldpc | hamming"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    figures: bool = typer.Option(True, help="write the PNG figures"),
    store: Optional[Path] = typer.Option(None, help="deposit the ground station's final key in this key store (SQLite)"),
    sat_store: Optional[Path] = typer.Option(None, help="deposit the satellite's final key in this key store"),
    attack: Optional[str] = typer.Option(None, help="eavesdropper: intercept_resend | pns | beam_splitting"),
    attack_fraction: float = typer.Option(1.0, min=0.0, max=1.0, help="fraction of pulses the eavesdropper attacks"),
) -> None:
    """Simulate a pass and post-process it into final keys at both ends."""
    cfg = _with_attack(_load(preset, config), attack, attack_fraction)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    from .outputs import write_simulation
    from .pass_simulation import simulate as run_sim

    compiled = _announce_compilation(ec)
    t0 = time.perf_counter()
    with _progress() as prog:
        try:
            sim = run_sim(cfg, seed, progress=_stage_callback(prog))
        except ValueError as exc:
            _error(str(exc))
            raise typer.Exit(1)
        write_simulation(sim, out, figures=figures)
        s = _postprocess_and_write(sim.raw, cfg, seed, ec, finite_key, out, sim.summary(), prog, store, sat_store)
    compiled()
    _print_pass_summary(s, time.perf_counter() - t0)
    _print_key_summary(s)
    out_console.print(f"wrote {out}/summary.json, {out}/timeseries.csv, {out}/raw.npz, figures and {out}/keys/")
    if s["aborted"]:
        raise typer.Exit(1)


@app.command("postprocess")
def postprocess_cmd(
    raw_dir: Path = typer.Argument(..., help="directory with raw.npz from `satqkd simulate`"),
    preset: Optional[str] = typer.Option(None, help="preset the records were simulated with (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    seed: int = typer.Option(0, min=0, help="random seed of the protocol's own draws"),
    out: Path = typer.Option(Path("out/postprocess"), help="output directory"),
    ec: str = typer.Option("cascade", help="error correction: cascade | ldpc | hamming"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    store: Optional[Path] = typer.Option(None, help="deposit the ground station's final key in this key store (SQLite)"),
    sat_store: Optional[Path] = typer.Option(None, help="deposit the satellite's final key in this key store"),
) -> None:
    """Post-process saved raw records into final keys at both ends."""
    cfg = _load(preset, config)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    from .rawio import load_raw

    try:
        raw = load_raw(raw_dir)
    except (FileNotFoundError, ValueError) as exc:
        _fail_input(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    compiled = _announce_compilation(ec, simulate=False)
    with _progress() as prog:
        s = _postprocess_and_write(raw, cfg, seed, ec, finite_key, out, None, prog, store, sat_store)
    compiled()
    _print_key_summary(s)
    if s["aborted"]:
        raise typer.Exit(1)


@app.command()
def campaign(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    days: Optional[float] = typer.Option(None, min=0.01, max=366, help="campaign length from the config's search start (default: its search_days)"),
    seed: int = typer.Option(0, min=0, help="campaign seed (pass i runs with a seed from SeedSequence of (seed, i))"),
    out: Path = typer.Option(Path("out/campaign"), help="output directory"),
    workers: int = typer.Option(1, min=1, max=1024, help="local worker processes (1: run in this process)"),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address, e.g. tcp://host:8786 (needs the dask extra of satqkd)"),
    clear_sky: float = typer.Option(1.0, "--clear-sky", min=0.0, max=1.0, help="probability that a night is clear"),
    ec: str = typer.Option("cascade", help="error correction: cascade | ldpc | hamming"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    figures: bool = typer.Option(True, help="write campaign.png, key_vs_elevation.png and peak_rate_vs_range.png "
                                              "(relay: relay_campaign.png and those per station)"),
    json_out: bool = typer.Option(False, "--json", help="print campaign.json to stdout instead of the table"),
    relay: Optional[bool] = typer.Option(None, "--relay/--no-relay",
                                         help="relay campaign over both stations (default: on when the config sets "
                                              "second_station); --no-relay: the first station only"),
) -> None:
    """Every QKD pass of N days: weather, simulation and post-processing per pass; totals, CSV and figures.

    With a config that sets second_station (preset micius-relay-xinglong-nanshan): the passes of
    both stations and the satellite's relays between them (relays.csv, relay_campaign.png).
    """
    cfg = _load(preset, config)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    from .campaign import check_campaign_args, run_campaign, write_campaign_outputs

    try:
        check_campaign_args(days=days, seed=seed, workers=workers, scheduler=scheduler,
                            clear_sky_probability=clear_sky, ec=ec, finite_key=finite_key)
    except (ValueError, ImportError) as exc:
        _fail_input(str(exc).replace("clear_sky_probability", "--clear-sky"))
    use_relay = cfg.second_station is not None if relay is None else relay
    if use_relay:
        from .relay_campaign import check_relay_config, run_relay_campaign, write_relay_campaign_outputs

        try:
            check_relay_config(cfg)
        except ValueError as exc:
            _fail_input(f"--relay: {exc}")
    with _progress() as prog:
        task = prog.add_task("passes", total=None)
        try:
            tick = lambda d, t: prog.update(task, completed=d, total=t, description=f"pass {d:.0f}/{t:.0f}")  # noqa: E731
            kw = dict(days=days, seed=seed, workers=workers, scheduler=scheduler,
                      clear_sky_probability=clear_sky, ec=ec, finite_key=finite_key, progress=tick)
            res = run_relay_campaign(cfg, **kw) if use_relay else run_campaign(cfg, **kw)
        except OSError as exc:  # e.g. the Dask scheduler cannot be reached
            _error(f"campaign failed: {exc}")
            raise typer.Exit(1)
    if use_relay:
        files = write_relay_campaign_outputs(res, out, figures=figures)
    else:
        files = write_campaign_outputs(res, out, figures=figures)
    if json_out:
        typer.echo(json.dumps(res.to_json(), default=str))
    elif use_relay:
        _print_relay_campaign(res, files)
    else:
        _print_campaign(res, files)
    if res.passes_error:
        _error(f"{res.passes_error} pass(es) failed with an error (abort_reason in {out}/passes.csv)")
        raise typer.Exit(1)


def _print_campaign(res, files) -> None:
    t = Table(title=f"{res.satellite} over {res.station}: {res.days:g} day(s) from {res.search_start_utc[:16]} UTC "
                    f"(seed {res.seed}, clear-night probability {res.clear_sky_probability:g})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("passes found / simulated / with key", f"{res.passes_found} / {res.passes_simulated} / {res.passes_with_key}")
    tot = res.totals()
    t.add_row("cloudy / aborted / failed passes", f"{tot['passes_cloudy']} / {tot['passes_aborted']} / {tot['passes_error']}")
    t.add_row("clear nights", f"{tot['clear_nights']} of {tot['nights']}")
    t.add_row("total final key", f"{res.total_final_key_bits:,} bits")
    t.add_row("key per day", f"{res.key_bits_per_day:,.0f} bits/day")
    eps = res.max_epsilon_per_pass
    t.add_row("ε per pass key (max)", f"{eps:.2g}" if eps is not None else "—")
    for label, r in (("best pass", res.best_pass), ("worst pass", res.worst_pass)):
        if r is not None:
            what = f"{r.final_key_bits:,} bits" if r.has_key else f"aborted: {r.abort_reason}"
            t.add_row(label, f"{r.start_utc[:19]} UTC, {r.max_elevation_deg:.1f}°, {r.duration_s:.0f} s: {what}")
    t.add_row("executor", f"{res.executor}, {res.wall_seconds:.1f} s wall")
    out_console.print(t)
    out_console.print(f"wrote {', '.join(str(f) for f in files)}")


def _print_relay_campaign(res, files) -> None:
    a, b = res.first, res.second
    t = Table(title=f"{a.satellite} relaying {a.station} ⇄ {b.station}: {res.days:g} day(s) from {a.search_start_utc[:16]} UTC "
                    f"(seed {res.seed}, clear-night probability {a.clear_sky_probability:g} per station)")
    t.add_column("figure")
    for c in (a, b):
        t.add_column(c.station, justify="right")
    t.add_row("passes found / simulated / with key",
              *(f"{c.passes_found} / {c.passes_simulated} / {c.passes_with_key}" for c in (a, b)))
    tots = [c.totals() for c in (a, b)]
    t.add_row("cloudy / aborted / failed passes",
              *(f"{x['passes_cloudy']} / {x['passes_aborted']} / {x['passes_error']}" for x in tots))
    t.add_row("clear nights", *(f"{x['clear_nights']} of {x['nights']}" for x in tots))
    t.add_row("final key of the passes", *(f"{c.total_final_key_bits:,} bits" for c in (a, b)))
    r = res.totals()
    t.add_row("spent on authenticating relays", *(f"{r['auth_bits'][c.station]:,} bits" for c in (a, b)))
    t.add_row("left on board at the end", *(f"{r['left_on_board_bits'][c.station]:,} bits" for c in (a, b)))
    t.add_row("relays", str(r["relays"]), "")
    t.add_row("relayed key (both stations)", f"{r['relayed_bits_total']:,} bits", "")
    t.add_row("relayed key per day", f"{r['relayed_bits_per_day']:,.0f} bits/day", "")
    if r["relays"]:
        t.add_row("key storage on board (mean / max)", f"{r['storage_hours_mean']:.1f} / {r['storage_hours_max']:.1f} h", "")
        eps = r["max_relay_epsilon"]
        t.add_row("ε per relayed key (max)", f"{eps:.2g}" if eps is not None else "—", "")
    t.add_row("executor", f"{res.executor}, {res.wall_seconds:.1f} s wall", "")
    out_console.print(t)
    out_console.print(f"wrote {', '.join(str(f) for f in files)}")


bench_app = typer.Typer(help="Quick measurements (the full suite: `make bench`).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("postprocess")
def bench_postprocess(
    bits: int = typer.Option(1_000_000, min=1000, max=100_000_000, help="key length"),
    qber: float = typer.Option(0.011, min=0.0001, max=0.2, help="bit error rate of Bob's copy"),
    seed: int = typer.Option(0, min=0),
    ec: str = typer.Option("cascade", help="cascade | ldpc | hamming"),
    pa_fraction: float = typer.Option(0.3, min=0.01, max=1.0, help="output length / input length of privacy amplification"),
    json_out: bool = typer.Option(False, "--json", help="print JSON only"),
) -> None:
    """Reconcile and amplify a random key pair with binomial errors; print throughput and efficiency."""
    _check_choice("ec", ec, EC_CHOICES)
    from .postprocess.benchmark import bench_postprocess as run_bench

    res = run_bench(bits, qber, seed, ec=ec, pa_fraction=pa_fraction)
    if json_out:
        typer.echo(json.dumps(res))
        return
    e, p = res["ec"], res["pa"]
    out_console.print(
        f"EC {e['method']}: {e['bits'] / e['seconds'] / 1e6:.1f} Mbit/s, f = {e['efficiency']:.3f}, frame errors {e['frame_errors']}\n"
        f"PA: {p['bits_in'] / p['seconds'] / 1e6:.1f} Mbit/s ({p['bits_in']:,} → {p['bits_out']:,} bits)"
    )


@app.command()
def relay(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-relay-xinglong-nanshan)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file (must set a \\[second_station] table)"),
    seed: int = typer.Option(0, min=0, help="relay seed (the two pass seeds are derived from it)"),
    store_a: Path = typer.Option(..., "--store-a", help="key store of the first station (Xinglong)"),
    store_b: Path = typer.Option(..., "--store-b", help="key store of the second station (Nanshan)"),
    sat_store: Optional[Path] = typer.Option(None, "--sat-store", help="satellite's key store (default: OUT/satellite.db)"),
    out: Path = typer.Option(Path("out/relay"), help="output directory"),
    figures: bool = typer.Option(True, help="write relay_timeline.png"),
) -> None:
    """Trusted relay: pass with station A, pass with station B, announce K_A ⊕ K_B; both stations share a key."""
    cfg = _load(preset or "micius-relay-xinglong-nanshan", config)
    _check_out(out)
    if cfg.second_station is None:
        _fail_input(f"config {cfg.name!r} has no [second_station]: use --preset micius-relay-xinglong-nanshan")
    from .keys.store import KeyStore, KeyStoreError
    from .relay_job import RelayExists, run_relay, write_relay_outputs

    out.mkdir(parents=True, exist_ok=True)
    stores = []
    try:
        for path, site in ((sat_store or out / "satellite.db", cfg.satellite), (store_a, cfg.station.name), (store_b, cfg.second_station.name)):
            stores.append(KeyStore(path, site))
    except (KeyStoreError, ValueError) as exc:  # a store of another site, or a newer schema
        for st in stores:
            st.close()
        _fail_input(str(exc))
    try:
        with _progress() as prog:
            task = prog.add_task("relay", total=6)
            res = run_relay(cfg, seed, *stores, progress=lambda d, t: prog.update(task, completed=d, total=t))
    except RelayExists as exc:  # these passes' keys are already in the stores
        _fail_input(str(exc))
    except ValueError as exc:  # e.g. no pass found
        _error(str(exc))
        raise typer.Exit(1)
    finally:
        for st in stores:
            st.close()
    write_relay_outputs(res, out, figures=figures)
    t = Table(title=f"{cfg.satellite} trusted relay, {res.first['start_utc'][:10]} (seed {seed})")
    for c in ("pass", "start (UTC)", "duration", "range", "sifted bits", "final bits", "ε"):
        t.add_column(c, justify="right" if c != "pass" else "left")
    for p in (res.first, res.second):
        t.add_row(
            p["station"], p["start_utc"][11:19], f"{p['duration_s']:.0f} s", f"{p['min_range_km']:.0f}–{p['max_range_km']:.0f} km",
            f"{p['sifted_bits']:,}", f"{p['final_key_bits']:,}" if not p["aborted"] else f"aborted: {p['abort_reason']}",
            f"{p['epsilon']:.2g}" if p["epsilon"] else "—",
        )
    out_console.print(t)
    out_console.print(f"hours between the passes: {res.hours_between:.2f} h (K_A kept on board {res.key_storage_hours:.2f} h)")
    if res.ok:
        out_console.print(
            f"relayed key {res.first['station']}–{res.second['station']}: {res.length_bits:,} bits, "
            f"id {res.relay_key_id}, ε ≤ {res.epsilon:.2g}, stations' keys identical: {res.keys_match}"
        )
    else:
        out_console.print(f"no relay: {res.abort_reason}")
    out_console.print(f"wrote {out}/summary.json, {out}/pass_*.json" + (f", {out}/relay_timeline.png" if figures else ""))
    if not (res.ok and res.keys_match):
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ key management
keys_app = typer.Typer(help="Inspect key stores.", no_args_is_help=True)
otp_app = typer.Typer(help="One-time-pad files with relayed or QKD key.", no_args_is_help=True)
kme_app = typer.Typer(help="ETSI GS QKD 014 key management entities.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(otp_app, name="otp")
app.add_typer(kme_app, name="kme")


def _existing_store(store: Path) -> Path:
    if not store.is_file():
        _fail_input(f"--store {store}: no key store there")
    return store


@keys_app.command("stats")
def keys_stats(store: Path = typer.Option(..., "--store", help="key store (SQLite)")) -> None:
    """Counts and bits per link and state."""
    from .keys.store import stats

    out_console.print_json(data=stats(_existing_store(store)))


@keys_app.command("ls")
def keys_ls(
    store: Path = typer.Option(..., "--store", help="key store (SQLite)"),
    link: Optional[str] = typer.Option(None, help="only this link (peer site)"),
    state: Optional[str] = typer.Option(None, help="only this state"),
    limit: int = typer.Option(50, min=1, help="at most this many rows"),
) -> None:
    """List keys: id, link, length, state, SAE pair."""
    from .keys.store import ls

    t = Table("key_id", "link", "bits", "state", "master → slave")
    for p in ls(_existing_store(store), link, state, limit):
        t.add_row(p["key_id"], p["link"], str(p["length_bits"]), p["state"], f"{p['master_sae'] or ''} → {p['slave_sae'] or ''}")
    out_console.print(t)


def _otp(kind: str, inp: Path, out: Path, store: Path, peer: str) -> None:
    from .keys.otp import OtpError, decrypt_file, encrypt_file
    from .keys.store import KeyStore

    if not inp.is_file():
        _fail_input(f"input file {inp} does not exist")
    fn = encrypt_file if kind == "encrypt" else decrypt_file
    try:
        with KeyStore(_existing_store(store)) as st:
            out_console.print(repr(fn(st, peer, inp, out)))
    except OtpError as exc:
        _error(str(exc))
        raise typer.Exit(1)


@otp_app.command("encrypt")
def otp_encrypt(
    inp: Path = typer.Argument(..., help="file to encrypt"),
    out: Path = typer.Argument(..., help="ciphertext file"),
    store: Path = typer.Option(..., "--store"),
    peer: str = typer.Option(..., "--peer", help="the site that will decrypt"),
) -> None:
    """One-time-pad a file with key shared with PEER (the key is consumed in the same transaction)."""
    _otp("encrypt", inp, out, store, peer)


@otp_app.command("decrypt")
def otp_decrypt(
    inp: Path = typer.Argument(..., help="ciphertext file"),
    out: Path = typer.Argument(..., help="plaintext file"),
    store: Path = typer.Option(..., "--store"),
    peer: str = typer.Option(..., "--peer", help="the site that encrypted"),
) -> None:
    """Check the MAC and decrypt a file from PEER (consumes the same key ids)."""
    _otp("decrypt", inp, out, store, peer)


@kme_app.command("certs")
def kme_certs(
    dir: Path = typer.Argument(..., help="output directory for the demo PKI"),
    sae: list[str] = typer.Option(..., "--sae", help="SAE id (repeat)"),
    kme: list[str] = typer.Option(["kme-xinglong", "kme-nanshan"], "--kme", help="KME id (repeat)"),
) -> None:
    """Make a demo PKI: a CA, KME server certificates and SAE client certificates."""
    from .keys.pki import make_certs

    out_console.print(repr(make_certs(dir, sae, kme)))


@kme_app.command("serve")
def kme_serve(
    store: Path = typer.Option(..., "--store", help="this site's key store"),
    tls: Path = typer.Option(..., "--tls", help="directory made by `satqkd kme certs`"),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535),
    network: Path = typer.Option(..., "--network", help="JSON: the KMEs and the SAEs each serves"),
    kme_id: str = typer.Option(..., "--kme-id"),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Serve one site's ETSI GS QKD 014 API over HTTPS with client certificates (until SIGINT/SIGTERM)."""
    from .keys.kme import serve

    serve(_existing_store(store), tls, port, network=network, kme_id=kme_id, host=host)


@kme_app.command("demo")
def kme_demo(
    dir: Path = typer.Option(..., "--dir", help="working directory: stores, PKI, kme.json"),
    seed: int = typer.Option(7, min=0),
    key_source: str = typer.Option("relay", "--key-source", help="relay (real passes) | standin (random bytes, for quick tries)"),
) -> None:
    """Relay run → Xinglong and Nanshan stores → two KMEs on loopback; DIR/kme.json describes them."""
    _check_choice("key-source", key_source, ("relay", "standin"))
    from .keys.kme import run_demo

    raise typer.Exit(
        run_demo(dir, seed=seed, key_source=key_source, on_ready=lambda d: out_console.print(f"KMEs up: {d.kme_json} (Ctrl-C to stop)"))
    )


# ------------------------------------------------------------------------------ two processes
party_app = typer.Typer(help="Alice (satellite) and Bob (ground station) as two processes over TCP.", no_args_is_help=True)
app.add_typer(party_app, name="party")


@party_app.command("make-pool")
def party_make_pool(
    file: Path = typer.Argument(..., help="pool file to create (never overwritten); copy it to the other party"),
    bits: int = typer.Option(..., "--bits", min=1, max=1 << 32, help="secret bits (one run uses 639)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="INSECURE: reproducible, not secret bits (tests and demos only)"),
) -> None:
    """Write a pre-shared authentication key pool: N secret random bits from the OS (secrets module)."""
    from .protocol.poolfile import PoolFileError, make_pool

    try:
        pf = make_pool(file, bits, seed=seed)
    except PoolFileError as exc:
        _fail_input(str(exc))
    if pf.insecure:
        _error("warning: --seed makes the pool reproducible and NOT secret: use it for tests and demos only")
    out_console.print(f"wrote {file}: {pf.nbits:,} bits, pool id {pf.id_hex}; give the other party a copy (over a trusted path)")


@party_app.command("split")
def party_split(
    raw_dir: Path = typer.Argument(..., help="directory with raw.npz holding both parties' records"),
    alice_out: Path = typer.Option(..., "--alice-out", help="directory for Alice's own raw.npz (the satellite's file)"),
    bob_out: Path = typer.Option(..., "--bob-out", help="directory for Bob's own raw.npz (the ground station's file)"),
) -> None:
    """Split raw.npz into each party's own file (what a deployment ships to each side)."""
    from .rawio import load_raw, save_raw

    for d in (alice_out, bob_out):
        if d.exists() and not d.is_dir():
            _fail_input(f"{d} exists and is not a directory")
    if alice_out.resolve() == bob_out.resolve():
        _fail_input("--alice-out and --bob-out must be two directories")
    try:
        views = {role: load_raw(raw_dir, party=role) for role in ("alice", "bob")}
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        _fail_input(f"{raw_dir}: {exc}")
    for role, d in (("alice", alice_out), ("bob", bob_out)):
        out_console.print(f"{role}: {save_raw(views[role], d)} ({views[role]!r})")


def _party(role: str, raw_dir: Path, listen: Optional[str], connect: Optional[str], pool: Path, out: Path,
           preset: Optional[str], config: Optional[Path], seed: Optional[int], ec: str, finite_key: str,
           timeout_s: float, message_timeout_s: float) -> None:
    import contextlib

    from .outputs import party_summary, write_party_key
    from . import report
    from .protocol.poolfile import PoolFileError
    from .protocol.remote import check_pool, load_party_view, parse_address, run_party

    if (listen is None) == (connect is None):
        _fail_input("give exactly one of --listen HOST:PORT or --connect HOST:PORT")
    try:
        addr = parse_address(listen if listen is not None else connect)
    except ValueError as exc:
        _fail_input(f"--{'listen' if listen is not None else 'connect'}: {exc}")
    if connect is not None and addr[1] == 0:
        _fail_input("--connect: port 0 is not a peer's port")
    cfg = _load(preset, config)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    if (out / "keys" / f"{role}.key").exists():
        _fail_input(f"--out {out} already holds keys/{role}.key from an earlier run: a key is never overwritten, choose another --out")
    try:
        view = load_party_view(raw_dir, role)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        _fail_input(f"{raw_dir}: {exc}")
    try:
        pf, need = check_pool(pool)
    except PoolFileError as exc:
        _fail_input(str(exc))
    if pf.insecure:
        _error("warning: the pool was made with --seed: it is NOT secret (tests and demos only)")
    console.print(f"{role}: pool {pool}: {pf.nbits:,} bits left, a run reserves {need}")
    live = console.status(f"{role}: starting") if console.is_terminal else contextlib.nullcontext()
    with live as st:
        def status(msg: str) -> None:
            if st is not None:
                st.update(f"[bold]{role}[/]: {msg}")

        def listening(port: int) -> None:
            console.print(f"{role}: listening on {addr[0]}:{port} (up to {timeout_s:g} s)")

        try:
            run = run_party(role, view, cfg, pool, listen=addr if listen is not None else None,
                            connect=addr if connect is not None else None, seed=seed, ec=ec, finite_key=finite_key,
                            timeout_s=timeout_s, message_timeout_s=message_timeout_s, on_status=status, on_listening=listening)
        except PoolFileError as exc:
            _fail_input(str(exc))
        except ValueError as exc:  # e.g. Bob's records cannot be synchronised
            _fail_input(f"{raw_dir}: {exc}")
        except OSError as exc:  # e.g. the pool file cannot be rewritten
            _error(f"{role}: {exc}")
            raise typer.Exit(1)
    s = party_summary(run, ec, finite_key, seed)
    out.mkdir(parents=True, exist_ok=True)
    if run.ok:  # only a verified key, and only once both checkpoints passed
        s["key_file"] = str(write_party_key(role, run.outcome.key, out))
    report.write_json(s, out / "summary.json")
    t = Table(title=f"{role} ({'satellite' if role == 'alice' else 'ground station'}) ↔ {run.peer or 'no peer'}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    if s["aborted"]:
        t.add_row("result", f"aborted: {s['abort_reason']}")
    t.add_row("sifted key bits", f"{s['sifted_key_bits']:,}")
    t.add_row("final key bits", f"{s['final_key_bits']:,}")
    t.add_row("ε (total)", f"{s['epsilon']:.2g}" if s["epsilon"] else "—")
    t.add_row("QBER", f"{100 * s['qber_key']:.2f} %" if s["qber_key"] is not None else "—")
    t.add_row("classical traffic", f"{s['classical_bytes_up'] / 1e6:.2f} MB up, {s['classical_bytes_down'] / 1e6:.2f} MB down, {s['round_trips']} round trips")
    t.add_row("time on the RF link", f"{s['link_time_s']:.1f} s")
    ap = s["auth_pool"]
    t.add_row("auth pool bits", f"{ap['bits_used']} used, {ap['bits_reserved_and_discarded'] + ap['bits_skipped_to_meet_peer']} removed, {ap['bits_left']:,} left")
    out_console.print(t)
    out_console.print(f"wrote {out}/summary.json" + (f" and {s['key_file']}" if run.ok else " (no key: the run did not succeed)"))
    if not run.ok:
        _error(f"{role}: {s['abort_reason']}")
        raise typer.Exit(1)


def _party_command(role: str):
    def cmd(
        raw_dir: Path = typer.Argument(..., help=f"directory with raw.npz ({role} reads only {'her' if role == 'alice' else 'his'} own part of it)"),
        listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT to listen on for the peer (port 0: any free port)"),
        connect: Optional[str] = typer.Option(None, "--connect", help="HOST:PORT of the listening peer (retried until --timeout-s)"),
        pool: Path = typer.Option(..., "--pool", help="this party's copy of the authentication pool (rewritten: used bits removed)"),
        out: Path = typer.Option(Path(f"out/{role}"), help="output directory: summary.json, keys/" + role + ".key"),
        preset: Optional[str] = typer.Option(None, help="preset the records were simulated with (default micius-2016-12-19)"),
        config: Optional[Path] = typer.Option(None, help="mission TOML file"),
        seed: Optional[int] = typer.Option(None, min=0, help="reproducible protocol draws (tests, demos; equals `postprocess --seed`); default: fresh OS randomness"),
        ec: str = typer.Option("cascade", help="error correction: cascade | ldpc | hamming"),
        finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
        timeout_s: float = typer.Option(120.0, "--timeout-s", min=0.1, help="how long to wait for the peer to connect / listen"),
        message_timeout_s: float = typer.Option(600.0, "--message-timeout-s", min=0.1, help="how long to wait for each protocol message"),
    ) -> None:
        _party(role, raw_dir, listen, connect, pool, out, preset, config, seed, ec, finite_key, timeout_s, message_timeout_s)

    cmd.__doc__ = (
        "Run the satellite's side of post-processing against a bob process (TCP)."
        if role == "alice"
        else "Run the ground station's side of post-processing against an alice process (TCP)."
    )
    return cmd


party_app.command("alice")(_party_command("alice"))
party_app.command("bob")(_party_command("bob"))


def main() -> None:
    import os

    # the CLI writes PNGs and shows no windows: a non-interactive backend unless the user chose one
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
