"""``satqkd`` command line: parses arguments, shows progress, writes files. The work is in the package.

Exit status: 0 success, 1 the run failed (e.g. the protocol aborted), 2 bad input (the message names
the field or option and its allowed range; nothing is written). Known user errors become exit 2 with a
one-line ``error: ...`` in one place (:class:`_UserErrors`); anything else is a bug and keeps its traceback.
Inputs and limits: ``docs/limits.md``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
import typing
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from .config import DEFAULT_EC_METHOD, EC_METHODS, FINITE_KEY_METHODS, AttackConfig, ConfigError, MissionConfig, list_presets, load_config, load_preset, preset_text

console = Console(stderr=True)
out_console = Console()


class BadInput(Exception):
    """Bad command-line input: exit status 2."""


def _error(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def _fail_input(msg: str) -> None:
    _error(msg)
    raise typer.Exit(2)


def _peer_address(listen: Optional[str], connect: Optional[str]) -> tuple[str, int]:
    """The one of ``--listen HOST:PORT`` / ``--connect HOST:PORT`` given, parsed (exit 2 otherwise)."""
    from .protocol.remote import parse_address

    if (listen is None) == (connect is None):
        _fail_input("give exactly one of --listen HOST:PORT or --connect HOST:PORT")
    try:
        return parse_address(listen if listen is not None else connect)
    except ValueError as exc:
        _fail_input(f"--{'listen' if listen is not None else 'connect'}: {exc}")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (exit 2), not a bug: each says what is wrong and where."""
    from .keys.store import KeyStoreError
    from .ledger import LedgerError
    from .protocol.poolfile import PoolFileError
    from .rawio import RawFormatError

    return (BadInput, ConfigError, KeyStoreError, LedgerError, PoolFileError, RawFormatError, sqlite3.DatabaseError)


class _UserErrors(TyperGroup):
    """The one place where known user errors become exit 2 with a one-line message and no traceback.

    ``OSError`` on a named path (unreadable input, unwritable output) counts as bad input too;
    ``MemoryError`` is a failed run (exit 1: the limits of ``docs/limits.md`` were not enough).
    Every other exception is a bug and propagates with its traceback."""

    def main(self, *args, **kwargs):
        _tidy_help(self)
        return super().main(*args, **kwargs)

    def invoke(self, ctx):
        _STORES_CHECKED.clear()
        try:
            return super().invoke(ctx)
        except MemoryError:
            _error("out of memory; the work predicted from the configuration was within the limits (docs/limits.md): please report this")
            raise typer.Exit(1)
        except OSError as exc:
            if exc.filename is None:
                raise
            _fail_input(f"{exc.filename}: {exc.strerror or exc}")
        except Exception as exc:
            if not isinstance(exc, _user_errors()):
                raise
            msg = str(exc) or type(exc).__name__
            if isinstance(exc, sqlite3.DatabaseError):
                which = ", ".join(str(p) for p in _STORES_CHECKED) or "a key store"
                msg = f"{which}: damaged or not a key store ({msg})"
        # outside the except clause: the exception and its frames are freed first, so a store left
        # open by a failed command is closed (SQLite removes its -wal/-shm files) before we exit
        _fail_input(msg)


#: options whose value is one of a few words: the help shows them as [a|b|c] (checked by _check_choice)
_CHOICE_OPTIONS = {
    "ec": EC_METHODS,
    "finite_key": FINITE_KEY_METHODS,
    "attack": tuple(k for k in typing.get_args(AttackConfig.model_fields["kind"].annotation) if k != "none"),
    "model": ("expected", "simulate"),
    "station": ("first", "second"),
}
_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "int range": "INTEGER", "float": "NUMBER", "float range": "NUMBER",
               "path": "PATH", "file": "PATH", "directory": "DIR", "bool": "", "list[str]": "TEXT", "list[path]": "PATH"}


def _tidy_help(group) -> None:
    """Help in the conventions of Unix tools: ``--ec [cascade|ldpc|hamming]``, ``--seed INTEGER``,
    ``RAW_DIR``; no type word after a flag (typer would print ``<bool>``, ``<str>``, ``{raw_dir}``)."""
    for cmd in getattr(group, "commands", {}).values():
        _tidy_help(cmd)
    if getattr(group, "_satqkd_tidy", False):
        return
    group._satqkd_tidy = True
    make_help = group.get_help_option

    def get_help_option(ctx, _make=make_help):
        opt = _make(ctx)
        if opt is not None and opt.metavar is None:
            opt.metavar = ""
        return opt

    group.get_help_option = get_help_option  # typer's --help would show <bool>
    for p in getattr(group, "params", ()):
        if getattr(p, "param_type_name", "") == "argument":
            word = _TYPE_WORDS.get(p.display_type(None).strip("<>"), "")
            p.metavar = name = p.metavar or (p.name or "ARG").upper()
            # typer writes a required argument {NAME} on the usage line and its type as <path>
            p._usage_display_name = (lambda n=name, opt=not p.required: f"[{n}]" if opt else n)
            p.display_type_rich = (lambda ctx, w=word: w)
            continue
        if p.metavar is not None:
            continue
        if getattr(p, "is_flag", False) or getattr(p, "count", False):
            p.metavar = ""
        elif p.name in _CHOICE_OPTIONS:
            p.metavar = "[" + "|".join(_CHOICE_OPTIONS[p.name]) + "]"
        else:
            try:
                word = p.display_type(None).strip("<>")
            except Exception:  # a type typer cannot name without a context: keep its own display
                continue
            p.metavar = _TYPE_WORDS.get(word, word.upper())


app = typer.Typer(cls=_UserErrors, add_completion=False, no_args_is_help=True,
                  help="Satellite decoy-state BB84 QKD, end to end (after Micius, 2017).")


def _load(preset: Optional[str], config: Optional[Path]) -> MissionConfig:
    if preset and config:
        _fail_input("give either --preset or --config, not both")
    import logging

    logging.getLogger("satqkd.cli").info("mission: %s", config if config else f"preset {preset or 'micius-2016-12-19'}")
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
    kinds = _CHOICE_OPTIONS["attack"]
    if attack not in kinds:
        _fail_input(f"--attack must be one of {', '.join(kinds)}; got {attack!r}")
    return cfg.model_copy(update={"attack": AttackConfig(kind=attack, fraction=fraction)})


#: virtual file systems: never an output location
_VIRTUAL_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _check_out(out: Path, option: str = "--out", *, file: bool = False) -> None:
    """Before any work: ``out`` can be written. A directory (``file=False``; missing parents are made
    later) or a file whose directory exists (``file=True``); never under a file, in /proc, /sys or /dev,
    or where the nearest existing directory is not writable. Checked without writing anything."""
    where = f"{option} {out}"
    text = str(out)
    if "\x00" in text or not text.strip():
        _fail_input(f"{option} {text!r}: not a usable path")
    try:
        p = Path(os.path.abspath(out))
        real = p.resolve(strict=False)
        if any(real == v or v in real.parents for v in _VIRTUAL_DIRS):
            _fail_input(f"{where}: {real} is in a virtual file system ({', '.join(map(str, _VIRTUAL_DIRS))}), not a place for output")
        if p.exists():
            if file and p.is_dir():
                _fail_input(f"{where} is a directory, not a file")
            if not file and not p.is_dir():
                _fail_input(f"{where} exists and is not a directory")
            if not os.access(p, os.W_OK | (0 if file else os.X_OK)):
                _fail_input(f"{where} is not writable")
            return
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            _fail_input(f"{where}: {anc} is a file, not a directory")
        if file and anc != p.parent:
            _fail_input(f"{where}: directory {p.parent} does not exist")
        if not os.access(anc, os.W_OK | os.X_OK):
            _fail_input(f"{where}: directory {anc} is not writable")
    except OSError as exc:  # e.g. a name too long
        _fail_input(f"{where}: {exc.strerror or exc}")


#: the stores this command opens (named in the message if SQLite later finds one damaged)
_STORES_CHECKED: list[Path] = []


def _check_store_file(store: Path, option: str = "--store", *, allow_empty: bool = False) -> None:
    """An existing key store must be a whole SQLite database: checked from its header, read-only,
    before the store is opened (opening would switch a damaged file to WAL, i.e. write to it)."""
    _STORES_CHECKED.append(store)
    try:
        with open(store, "rb") as fh:
            head = fh.read(100)
            size = os.fstat(fh.fileno()).st_size
    except IsADirectoryError:
        _fail_input(f"{option} {store} is a directory, not a key store")
    except OSError as exc:
        _fail_input(f"{option} {store}: {exc.strerror or exc}")
    if size == 0:
        if allow_empty:
            return  # SQLite makes a new store in it
        _fail_input(f"{option} {store} is empty, not a key store")
    if len(head) < 100 or head[:16] != b"SQLite format 3\x00":
        _fail_input(f"{option} {store} is not a key store (not a SQLite database)")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if page < 512 or page & (page - 1) or size % page:
        _fail_input(f"{option} {store} is damaged: {size} bytes is not a whole number of {page}-byte pages (truncated?)")
    if head[24:28] == head[92:96] and size < pages * page:
        _fail_input(f"{option} {store} is truncated: {size} bytes, its header says {pages} pages of {page} bytes")
    if Path(f"{store}-wal").exists():
        return  # in use (or not closed cleanly): the file alone is not the whole store; SQLite will check
    problem = _store_problem(store)
    if problem:
        _fail_input(f"{option} {store} is damaged ({problem})")


def _store_problem(store: Path) -> Optional[str]:
    """What is wrong with a closed store file, read with SQLite's ``immutable`` flag (read-only, no
    -wal/-shm files, no locks: nothing is written): its integrity check, its ``meta`` table, and, at
    the current schema version, the columns of the key store's tables."""
    from urllib.parse import quote

    from .keys import store as ks

    try:
        con = sqlite3.connect(f"file:{quote(str(Path(store).absolute()))}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return f"SQLite: {exc}"
    try:
        rows = con.execute("PRAGMA quick_check(3)").fetchall()
        if rows != [("ok",)]:
            return "SQLite integrity check: " + "; ".join(str(r[0]) for r in rows)
        meta = dict(con.execute("SELECT name, value FROM meta").fetchall())
        if "schema_version" not in meta or "site" not in meta:
            return "no schema version or site in its meta table"
        if meta["schema_version"] != str(getattr(ks, "SCHEMA_VERSION", "")) or not getattr(ks, "_SCHEMA", None):
            return None  # another version: the store's own checks apply
        ref = sqlite3.connect(":memory:")
        try:
            ref.executescript(ks._SCHEMA)
            tables = [r[0] for r in ref.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in tables:
                want = {r[1] for r in ref.execute(f'PRAGMA table_info("{t}")')}
                have = {r[1] for r in con.execute(f'PRAGMA table_info("{t}")')}
                if have and not want <= have:
                    return f"table {t} lacks column(s) {', '.join(sorted(want - have))}"
                if not have:
                    return f"table {t} is missing"
        finally:
            ref.close()
    except sqlite3.Error as exc:
        return f"SQLite: {exc}"
    finally:
        con.close()
    return None


def _check_store(store: Optional[Path], option: str = "--store") -> None:
    """A store that is opened or created: an existing one must be whole, a new one writable."""
    if store is None:
        return
    if store.exists() or store.is_symlink():
        _check_store_file(store, option, allow_empty=True)
    else:
        _check_out(store, option, file=False)


def _check_work(cfg: MissionConfig, *, second: bool = False, parallel: int = 1, geometry=None) -> None:
    """Refuse a pass simulation (exit 2, with the estimate) beyond the limits of docs/limits.md."""
    from .limits import check_work

    check_work(cfg, parallel=parallel, geometry=geometry)
    if second and cfg.second_station is not None:
        check_work(cfg, station=cfg.second_station, parallel=parallel)


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


def _setup_logging(verbose: int) -> None:
    """``-v``: the steps of a run (INFO), ``-vv``: details (DEBUG), on stderr through :mod:`logging`
    (loggers ``satqkd.*``); without it only warnings."""
    import logging

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    log = logging.getLogger("satqkd")
    for h in list(log.handlers):
        if getattr(h, "_satqkd_cli", False):
            log.removeHandler(h)
    handler._satqkd_cli = True
    log.addHandler(handler)
    log.setLevel(level)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="print the version and exit"),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="log the steps of the run to stderr (-vv: more detail)"),
) -> None:
    """Satellite decoy-state BB84 QKD, end to end (after Micius, 2017)."""
    _setup_logging(verbose)


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


PASS_HELP = ("which pass: N (the N-th in the search span, from 1; see `satqkd passes`), a UTC date YYYY-MM-DD "
             "(the first pass in the 24 h from it), highest (highest culmination) or best (most ∫(1000 km/R)² dt), "
             "optionally over N days: best:7d  [default: the first pass]")


def _choose_pass(cfg: MissionConfig, choice: Optional[str]):
    """The pass to simulate (``--pass``; default the first), searched once for the work check and the
    run; none meeting the rules: exit 1 with the search's message. The configuration-only limits are
    checked first (a pass sampled every 1 µs is refused before it is searched)."""
    from .limits import check_geometry
    from .sky.orbit import select_pass

    check_geometry(cfg)
    try:
        return select_pass(cfg, choice)
    except ConfigError:
        raise
    except ValueError as exc:
        _error(str(exc))
        raise typer.Exit(1)


def _check_pass(choice: Optional[str]) -> None:
    """``--pass`` read before any work (exit 2 naming it)."""
    if choice is None:
        return
    from .sky.orbit import parse_pass_spec

    try:
        parse_pass_spec(choice)
    except ConfigError as exc:
        _fail_input(f"--{exc}")


@app.command()
def simulate(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    seed: int = typer.Option(0, min=0, help="random seed: the same seed gives the same records"),
    out: Path = typer.Option(Path("out/simulate"), help="output directory"),
    figures: bool = typer.Option(True, help="write the PNG figures"),
    pass_choice: Optional[str] = typer.Option(None, "--pass", help=PASS_HELP),
) -> None:
    """Simulate one pass at the physical layer and write summary, time series, raw records and figures."""
    cfg = _load(preset, config)
    _check_pass(pass_choice)
    _check_out(out)
    t0 = time.perf_counter()
    geometry = _choose_pass(cfg, pass_choice)
    _check_work(cfg, geometry=geometry)
    from .jobs.pass_simulation import simulate as run_sim
    from .outputs import write_simulation

    compiled = _announce_compilation(None)

    with _progress() as prog:
        try:
            sim = run_sim(cfg, seed, geometry=geometry, pass_spec=pass_choice, progress=_stage_callback(prog))
        except ValueError as exc:
            _error(str(exc))
            raise typer.Exit(1)
    files = write_simulation(sim, out, figures=figures)
    compiled()
    s = sim.summary()
    _print_pass_summary(s, time.perf_counter() - t0)
    out_console.print(f"wrote {', '.join(str(f) for f in files)}")


def _print_pass_summary(s: dict, seconds: float) -> None:
    from .report import readable_utc

    paper = bool(s.get("paper_pass"))
    title = f"{s['satellite']} → {s['station']}, {readable_utc(s['start_utc'])} (seed {s['seed']})"
    if not paper:
        title += "\nwhat-if: not the paper's pass (preset micius-2016-12-19, 2016-12-19), no paper column"
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("satqkd", justify="right")
    if paper:
        t.add_column("paper", justify="right")
    rows = [
        ("QKD data (s)", f"{s['duration_s']:.0f}", "273"),
        ("range (km)", f"{s['min_range_km']:.0f}–{s['max_range_km']:.0f}", "645–1200"),
        ("max elevation (°)", f"{s['max_elevation_deg']:.1f}", "—"),
        ("detections", f"{s['detections']:,}", "3,551,136"),
        ("sifted bits (signal, both bases)", f"{s['sifted_bits']:,}", "1,671,072"),
        ("QBER (signal)", f"{100 * s['qber']:.2f} %", "1.1 %"),
        ("tags kept / wrong pulse", f"{s['tags_kept']:,} / {s['assigned_wrong']}", "—"),
    ]
    for label, mine, ref in rows:
        t.add_row(label, mine, *((ref,) if paper else ()))
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
    from .limits import check_geometry
    from .sky.orbit import find_passes

    check_geometry(cfg, station=st)

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
    for c in ("--pass", "start (UTC)", "duration (s)", "max elevation (°)", "range (km)"):
        t.add_column(c, justify="right")
    for i, r in enumerate(rows, start=1):
        t.add_row(str(i), r["start_utc"][:19].replace("T", " "), f"{r['duration_s']:.0f}", f"{r['max_elevation_deg']:.1f}", f"{r['min_range_km']:.0f}–{r['max_range_km']:.0f}")
    out_console.print(t)


#: ``link --fiber-compare`` rows: label with unit → (key of sky.link.fiber_comparison, format)
_FIBER_ROWS = {
    "distance (km)": ("range_m", lambda v: f"{v / 1e3:,.0f}"),
    "elevation (°)": ("elevation_deg", lambda v: f"{v:.1f}"),
    "satellite link efficiency": ("satellite_efficiency", lambda v: f"{v:.3g}"),
    "fiber efficiency (0.2 dB/km)": ("fiber_efficiency", lambda v: f"{v:.3g}"),
    "satellite / fiber": ("ratio", lambda v: f"{v:.2g}"),
    "orders of magnitude": ("orders_of_magnitude", lambda v: f"{v:.1f}"),
    "fiber sifted rate (bit/s)": ("fiber_sifted_rate_bps", lambda v: f"{v:.3g}"),
    "time per sifted bit by fiber (years)": ("years_per_sifted_bit", lambda v: f"{v:.3g}"),
}


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
        for label, fmt in _FIBER_ROWS.items():
            key, render = fmt
            if key in res:
                t.add_row(label, render(res[key]))
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


EC_CHOICES = _CHOICE_OPTIONS["ec"]
FK_CHOICES = _CHOICE_OPTIONS["finite_key"]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail_input(f"--{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_stores(cfg, store: Optional[Path], sat_store: Optional[Path]) -> None:
    """Before anything runs: both key stores can be used (right site, known schema, a writable place);
    nothing is created here."""
    import os
    import sqlite3

    from .keys.store import KeyStore, KeyStoreError

    if sat_store is not None and store is None:
        _fail_input("--sat-store needs --store (the ground station's store): a key is deposited at both ends or neither")
    if store is not None and sat_store is not None and store.resolve() == sat_store.resolve():
        _fail_input(f"--store and --sat-store are the same file ({store}): one store per site")
    for opt, path, site in (("--store", store, cfg.station.name), ("--sat-store", sat_store, cfg.satellite)):
        if path is None:
            continue
        if path.is_dir():
            _fail_input(f"{opt} {path} is a directory, not a key store file")
        if path.exists():
            try:
                KeyStore(path, site).close()
            except (KeyStoreError, ValueError, OSError, sqlite3.Error) as exc:
                _fail_input(f"{opt} {path}: {exc}")
            continue
        anc = path.parent
        while not anc.exists():
            anc = anc.parent
        if not anc.is_dir() or not os.access(anc, os.W_OK):
            _fail_input(f"{opt} {path}: cannot create a key store there ({anc} is not a writable directory)")


def _deposit(res, cfg, seed: int, store: Path, sat_store: Optional[Path], pass_id: str) -> list[str]:
    """Put the verified final keys into the ground station's and the satellite's stores — both or neither
    (pending at both, then active; rerunning the same command finishes a deposit a crash interrupted)."""
    from .keys.relay import deposit_pair
    from .keys.store import KeyStore, Origin, key_id_for

    if not res.ok:
        return []
    eps = float(sum(res.bob.epsilon_parts.values()))
    origin = Origin(kind="qkd", pass_id=pass_id, seed=seed, epsilon=eps)
    kid = key_id_for(pass_id)
    with KeyStore(store, site=cfg.station.name) as st:
        if sat_store is None:
            st.deposit(cfg.satellite, res.bob.key, key_id=kid, origin=origin, exist_ok=True)
        else:
            with KeyStore(sat_store, site=cfg.satellite) as sat:
                deposit_pair(st, res.bob.key, sat, res.alice.key, key_id=kid, origin=origin,
                             crash_prefix="deposit:run")
    return [kid]


def _postprocess_and_write(raw, cfg, seed, ec, finite_key, out: Path, sim_summary: dict | None, prog,
                           store: Optional[Path] = None, sat_store: Optional[Path] = None,
                           figures_from: tuple[Path, ...] = ()) -> dict:
    from .outputs import postprocess_summary, write_keys
    from .protocol.session import postprocess as run_pp
    from . import report

    cb = _stage_callback(prog)
    cb("protocol", 0, 1)
    res = run_pp(raw, cfg, seed=seed, ec=ec, finite_key=finite_key)
    cb("protocol", 1, 1)
    pp = postprocess_summary(res)
    summary = {**(sim_summary or {}), **pp, "key_intensities": cfg.security.key_intensities}
    if sim_summary and "stage_seconds" in sim_summary:
        summary["stage_seconds"] = {**{f"sim_{k}": v for k, v in sim_summary["stage_seconds"].items()}, **pp["stage_seconds"]}
    # both ends are in this process: both release (docs/two-processes.md, key confirmation)
    from .protocol.keyfiles import key_sha256

    summary["key_state"] = "released" if res.keys_match else "none"
    summary["key_sha256"] = key_sha256(res.alice.key) if res.keys_match else None
    pass_id = str(raw.meta.get("pass_id") or f"{cfg.name}:seed{seed}")
    if store is not None:
        summary["store_key_ids"] = _deposit(res, cfg, seed, store, sat_store, pass_id)
    report.write_json(summary, out / "summary.json")
    write_keys(res, out)
    if res.ok:
        title = f"Key budget: {pp['sifted_key_bits']:,} sifted bits → {pp['final_key_bits']:,} final bits"
        report.save_figure(report.plot_key_budget(pp["key_budget"], title=title), out / "key_budget.png", bbox_inches="tight")
    if res.ok or any((d / "fig3_pass.png").is_file() for d in (out, *figures_from)):
        from .outputs import write_html_report

        write_html_report(out, figures_from)
    return summary


def _print_key_summary(s: dict) -> None:
    paper = bool(s.get("paper_pass"))
    key_set = s.get("key_intensities", "signal+decoy")
    t = Table(title="post-processing" + ("" if paper else " (what-if: no paper column)"))
    t.add_column("figure")
    t.add_column("satqkd", justify="right")
    if paper:
        t.add_column("paper", justify="right")
    rows = []
    if s["aborted"]:
        rows.append(("result", f"aborted: {s['abort_reason']}", ""))
    # the paper's 1,671,072 sifted bits are of the signal intensity: beside the key set only when that is it
    rows += [
        (f"sifted key bits ({key_set})", f"{s['sifted_key_bits']:,}", "1,671,072" if key_set == "signal" else "— (signal: 1,671,072)"),
        ("final key bits", f"{s['final_key_bits']:,}", "300,939"),
        ("ε (total)", f"{s['epsilon']:.2g}" if s["epsilon"] else "—", "1e-9"),
        ("error correction", f"{s['ec_method']}, f = {s['ec_efficiency']:.3f}" if s["ec_efficiency"] else s["ec_method"], "Hamming"),
        ("finite-key bound", s["finite_key_method"], "(Gaussian)"),
        ("keys match", "yes" if s["keys_match"] else "no", ""),
        ("classical traffic", f"{s['classical_bytes_up'] / 1e6:.2f} MB up, {s['classical_bytes_down'] / 1e6:.2f} MB down, "
                              f"{s['round_trips']} round trips", ""),
        ("time on the RF link", f"{s['link_time_s']:.1f} s", ""),
    ]
    for label, mine, ref in rows:
        t.add_row(label, mine, *((ref,) if paper else ()))
    out_console.print(t)


@app.command()
def run(
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    seed: int = typer.Option(0, min=0, help="random seed"),
    out: Path = typer.Option(Path("out/run"), help="output directory"),
    ec: str = typer.Option(DEFAULT_EC_METHOD, help="error correction: cascade | ldpc | hamming"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    figures: bool = typer.Option(True, help="write the PNG figures"),
    store: Optional[Path] = typer.Option(None, help="deposit the ground station's final key in this key store (SQLite)"),
    sat_store: Optional[Path] = typer.Option(None, help="deposit the satellite's final key in this key store"),
    attack: Optional[str] = typer.Option(None, help="eavesdropper: intercept_resend | pns | beam_splitting"),
    attack_fraction: float = typer.Option(1.0, min=0.0, max=1.0, help="fraction of pulses the eavesdropper attacks"),
    pass_choice: Optional[str] = typer.Option(None, "--pass", help=PASS_HELP),
) -> None:
    """Simulate a pass and post-process it into final keys at both ends."""
    cfg = _with_attack(_load(preset, config), attack, attack_fraction)
    _check_pass(pass_choice)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    _check_store(store)
    _check_store(sat_store, "--sat-store")
    _check_stores(cfg, store, sat_store)
    t0 = time.perf_counter()
    geometry = _choose_pass(cfg, pass_choice)
    _check_work(cfg, geometry=geometry)
    from .outputs import write_simulation
    from .jobs.pass_simulation import simulate as run_sim

    compiled = _announce_compilation(ec)
    with _progress() as prog:
        try:
            sim = run_sim(cfg, seed, geometry=geometry, pass_spec=pass_choice, progress=_stage_callback(prog))
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


@app.command()
def sweep(
    param: list[str] = typer.Option(..., "--param", metavar="FIELD=VALUES",
                                    help="a mission field and its values: receiver.aperture_m=0.6,1.0,1.8 or "
                                         "receiver.aperture_m=0.5:2.0:4 (START:STOP:COUNT); repeat for a grid"),
    preset: Optional[str] = typer.Option(None, help="shipped preset (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    pass_choice: Optional[str] = typer.Option(None, "--pass", help=PASS_HELP),
    model: str = typer.Option("expected", help="expected: expected counts and the protocol's estimation (~1 s a point); "
                                               "simulate: event-level simulation and full post-processing (~15 s a point)"),
    seed: int = typer.Option(0, min=0, help="random seed of every point (points differ by the parameters only)"),
    ec: str = typer.Option(DEFAULT_EC_METHOD, help="error correction: cascade | ldpc | hamming"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    out: Optional[Path] = typer.Option(None, help="also write the table to this CSV file"),
    json_out: bool = typer.Option(False, "--json", help="print the table as JSON (one object per point)"),
) -> None:
    """Sweep mission parameters over values (one, or a small grid) and tabulate the key of each point."""
    from .jobs.sweep import MAX_SWEEP_POINTS, parse_values

    cfg = _load(preset, config)
    _check_pass(pass_choice)
    _check_choice("model", model, ("expected", "simulate"))
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    if out is not None:
        _check_out(out, file=True)
    grid: dict[str, list] = {}
    for item in param:
        name, eq, values = item.partition("=")
        if not eq or not name.strip() or not values.strip():
            _fail_input(f"--param must read FIELD=VALUES (e.g. receiver.aperture_m=0.6,1.0); got {item!r}")
        try:
            grid[name.strip()] = parse_values(values)
        except ConfigError as exc:
            _fail_input(f"--param {name.strip()}: {exc}")
    n = 1
    for v in grid.values():
        n *= len(v)
    if n > MAX_SWEEP_POINTS:
        _fail_input(f"--param: {n} points is more than {MAX_SWEEP_POINTS} (allowed: ≤ {MAX_SWEEP_POINTS})")
    _check_work(cfg)
    from .jobs.sweep import sweep as run_sweep

    compiled = _announce_compilation(ec, simulate=model == "simulate")
    with _progress() as prog:
        task = prog.add_task("points", total=n)
        df = run_sweep(cfg, grid, pass_spec=pass_choice, model=model, seed=seed, ec=ec, finite_key=finite_key,
                       progress=lambda d, t: prog.update(task, completed=d, total=t))
    compiled()
    if out is not None:
        df.to_csv(out, index=False)
    if json_out:
        typer.echo(df.to_json(orient="records", date_format="iso"))
        return
    t = Table(title=f"sweep of {', '.join(grid)} ({model} model, {len(df)} point(s))")
    notes = bool(df["abort_reason"].notna().any())
    for name in grid:
        t.add_column(name, justify="right", overflow="fold")
    for c in ("pass (UTC)", "s", "elev. °", "sifted key", "QBER", "final key") + (("note",) if notes else ()):
        t.add_column(c, justify="right")
    for r in df.to_dict(orient="records"):
        start = r["pass_start_utc"]
        t.add_row(*(str(r[k]) for k in grid),
                  "" if start is None else f"{start:%Y-%m-%d %H:%M}",
                  "" if r["duration_s"] is None else f"{r['duration_s']:.0f}",
                  "" if r["max_elevation_deg"] is None else f"{r['max_elevation_deg']:.1f}",
                  "" if r["sifted_key_bits"] is None else f"{r['sifted_key_bits']:,.0f}",
                  "" if r["qber_key"] is None or r["qber_key"] != r["qber_key"] else f"{100 * r['qber_key']:.2f} %",
                  f"{r['final_key_bits']:,}", *((r["abort_reason"] or "",) if notes else ()))
    out_console.print(t)
    if out is not None:
        out_console.print(f"wrote {out}")


@app.command("postprocess")
def postprocess_cmd(
    raw_dir: Path = typer.Argument(..., help="directory with raw.npz from `satqkd simulate`"),
    preset: Optional[str] = typer.Option(None, help="preset the records were simulated with (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    seed: int = typer.Option(0, min=0, help="random seed of the protocol's own draws"),
    out: Path = typer.Option(Path("out/postprocess"), help="output directory"),
    ec: str = typer.Option(DEFAULT_EC_METHOD, help="error correction: cascade | ldpc | hamming"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    store: Optional[Path] = typer.Option(None, help="deposit the ground station's final key in this key store (SQLite)"),
    sat_store: Optional[Path] = typer.Option(None, help="deposit the satellite's final key in this key store"),
) -> None:
    """Post-process saved raw records into final keys at both ends."""
    cfg = _load(preset, config)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    _check_store(store)
    _check_store(sat_store, "--sat-store")
    _check_stores(cfg, store, sat_store)
    from .rawio import check_records_match, load_raw

    try:
        raw = load_raw(raw_dir)
        if tuple(raw.meta.get("parties", ())) != ("alice", "bob"):
            raise ValueError(f"{raw_dir} holds only {' and '.join(raw.meta.get('parties', ())) or 'no party'}'s records "
                             "(a `party split` output): postprocess needs both parties' records")
        check_records_match(raw, cfg)
    except (FileNotFoundError, ValueError) as exc:
        _fail_input(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    from .config import is_paper_pass
    from .outputs import pass_summary_of_records

    # the pass behind the records, for the summary and the report: simulate's summary.json beside
    # them, else the pass id the records carry
    known = pass_summary_of_records(raw_dir, raw)
    known.setdefault("preset", cfg.name)
    known["protocol_seed"] = seed
    if known.get("start_utc"):
        from datetime import datetime

        known["paper_pass"] = is_paper_pass(cfg, datetime.fromisoformat(known["start_utc"]),
                                            float(known.get("duration_s", raw.meta.get("duration_s", 0.0)) or 0.0))
    compiled = _announce_compilation(ec, simulate=False)
    with _progress() as prog:
        s = _postprocess_and_write(raw, cfg, seed, ec, finite_key, out, known, prog, store, sat_store,
                                   figures_from=(raw_dir,) if raw_dir.is_dir() else ())
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
    ec: str = typer.Option(DEFAULT_EC_METHOD, help="error correction: cascade | ldpc | hamming"),
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
    from .jobs.campaign import check_campaign_args, run_campaign, write_campaign_outputs

    try:
        check_campaign_args(days=days, seed=seed, workers=workers, scheduler=scheduler,
                            clear_sky_probability=clear_sky, ec=ec, finite_key=finite_key)
    except (ValueError, ImportError) as exc:
        _fail_input(str(exc).replace("clear_sky_probability", "--clear-sky"))
    use_relay = cfg.second_station is not None if relay is None else relay
    if use_relay:
        from .jobs.relay_campaign import check_relay_config, run_relay_campaign, write_relay_campaign_outputs

        try:
            check_relay_config(cfg)
        except ValueError as exc:
            _fail_input(f"--relay: {exc}")
    _check_work(cfg, second=use_relay, parallel=workers if scheduler is None else 1)
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


@app.command()
def plan(
    satellites: Optional[Path] = typer.Option(None, "--satellites", help="file of TLEs (2- or 3-line sets)"),
    walker: Optional[str] = typer.Option(None, "--walker", help="Walker-delta constellation ALT_KM:INC_DEG:T/P/F, e.g. 550:53:24/6/1"),
    stations: str = typer.Option("xinglong,nanshan", "--stations",
                                 help="catalogue names, comma-separated (case-insensitive), or a stations TOML file"),
    days: float = typer.Option(365.0, min=0.01, max=366, help="plan length from --start"),
    seed: int = typer.Option(0, min=0, help="plan seed (weather per station-night, polarization draws per pass)"),
    start: Optional[str] = typer.Option(None, help="start, ISO UTC (default: the preset's pass search start)"),
    preset: Optional[str] = typer.Option(None, help="mission preset for the terminal, source, detectors and rules (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file instead of --preset"),
    out: Path = typer.Option(Path("out/plan"), help="output directory"),
    workers: int = typer.Option(1, min=1, max=1024, help="local worker processes (1: this process)"),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address, e.g. tcp://host:8786"),
    event_level_sample: int = typer.Option(0, "--event-level-sample", min=0, max=1000,
                                           help="re-run N clear passes event by event as a check of the fast model"),
    ec: str = typer.Option("cascade", help="error correction whose calibrated leakage the fast model uses"),
    finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
    figures: bool = typer.Option(True, help="write coverage.png, map.png and plan.html"),
    json_out: bool = typer.Option(False, "--json", help="print plan.json to stdout instead of the table"),
) -> None:
    """Plan a satellite QKD network: passes of every satellite over every station for a year, weather,
    expected key per pass (fast model), relayed key per station pair; plan.json, tables, figures, plan.html."""
    from datetime import datetime

    from .jobs.plan import plan_network, write_plan_outputs
    from .sky.constellation import ConstellationError

    cfg = _load(preset, config)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    if satellites is not None and walker is not None:
        _fail_input("give either --satellites or --walker, not both")
    t0 = None
    if start is not None:
        try:
            t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            _fail_input(f"--start must be an ISO date/time (UTC), got {start!r}")
    with _progress() as prog:
        task = prog.add_task("plan", total=None)
        tick = lambda d, t: prog.update(task, completed=d, total=t, description=f"job {d}/{t}")  # noqa: E731
        try:
            res = plan_network(satellites=satellites, walker=walker, stations=stations, days=days, seed=seed, start_utc=t0,
                               config=cfg, ec=ec, finite_key=finite_key, workers=workers, scheduler=scheduler,
                               event_level_sample=event_level_sample, progress=tick)
        except ConstellationError as exc:  # bad TLE file, Walker constellation, station or plan field
            msg = str(exc)
            if msg.startswith("walker"):
                msg = "--walker: " + msg
            elif msg.startswith("stations"):
                msg = "--" + msg
            elif satellites is not None and (msg.startswith("satellites") or str(satellites) in msg):
                msg = "--satellites: " + msg.removeprefix("satellites: ")
            _fail_input(msg)
        except OSError as exc:
            _error(f"plan failed: {exc}")
            raise typer.Exit(1)
    files = write_plan_outputs(res, out, figures=figures)
    if json_out:
        typer.echo(json.dumps(res.to_json(), default=str))
        return
    t = Table(title=f"{len(res.settings['satellites'])} satellite(s) × {len(res.stations)} stations, {res.settings['days']:g} days "
                    f"from {res.settings['start_utc'][:16]} UTC (seed {seed})")
    for c in ("station", "passes", "clear", "with key", "final key (Mbit)", "per day (kbit)"):
        t.add_column(c, justify="right")
    for name, v in res.stations.items():
        t.add_row(name, str(v["passes"]), str(v["clear_passes"]), str(v["passes_with_key"]), f"{v['final_key_bits'] / 1e6:.2f}",
                  f"{v['final_key_bits_per_day'] / 1e3:.1f}")
    out_console.print(t)
    best = sorted(res.pairs.items(), key=lambda kv: -kv[1]["relayed_key_bits"])[:10]
    if best:
        t2 = Table(title="relayed key per station pair (top 10)")
        for c in ("pair", "relays", "relayed (Mbit)", "storage mean / max (h)"):
            t2.add_column(c, justify="right")
        for k, v in best:
            sto = f"{v['storage_hours_mean']:.0f} / {v['storage_hours_max']:.0f}" if v["relays"] else "—"
            t2.add_row(k, str(v["relays"]), f"{v['relayed_key_bits'] / 1e6:.2f}", sto)
        out_console.print(t2)
    if res.event_level:
        t3 = Table(title="event-level check of sampled passes (simulation + protocol vs the fast model)")
        for c in ("pass", "station", "max el (°)", "fast key", "event key", "fast sifted", "event sifted"):
            t3.add_column(c, justify="right")
        for e in res.event_level:
            t3.add_row(e["start_utc"][:16], e["station"], f"{e['max_elevation_deg']:.1f}", f"{e['fast_final_key_bits']:,}",
                       f"{e['event_final_key_bits']:,}", f"{e['fast_sifted_bits']:,.0f}", f"{e['event_sifted_bits']:,}")
        out_console.print(t3)
    out_console.print(f"{res.settings['executor']}, {res.wall_seconds:.1f} s wall; wrote {', '.join(str(f) for f in files)}")


bench_app = typer.Typer(help="Quick measurements (the full suite: `make bench`).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("postprocess")
def bench_postprocess(
    bits: int = typer.Option(1_000_000, min=1000, max=100_000_000, help="key length"),
    qber: float = typer.Option(0.011, min=0.0001, max=0.2, help="bit error rate of Bob's copy"),
    seed: int = typer.Option(0, min=0, help="seed of the synthetic key pair"),
    ec: str = typer.Option(DEFAULT_EC_METHOD, help="cascade | ldpc | hamming"),
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


@bench_app.command("kme")
def bench_kme(
    clients: int = typer.Option(50, "--clients", min=1, max=500, help="concurrent master SAEs (one HTTPS connection each)"),
    seconds: float = typer.Option(10.0, "--seconds", min=0.5, max=600.0, help="how long the load runs"),
    number: int = typer.Option(1, "--number", min=1, max=128, help="keys per enc_keys request"),
    size: int = typer.Option(256, "--size", min=64, max=8192, help="key size in bits (a multiple of 8)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON only"),
) -> None:
    """ETSI 014 load: CLIENTS master SAEs call enc_keys on a two-KME demo for SECONDS; every key is then fetched at the slave."""
    if size % 8:
        _fail_input(f"--size must be a multiple of 8, got {size}")
    from .keys.kme_bench import kme_bench

    res = kme_bench(clients, seconds, number=number, size=size)
    if json_out:
        typer.echo(json.dumps(res))
        return
    out_console.print(
        f"{res['requests']:,} enc_keys requests in {res['wall_s']:.1f} s by {clients} SAEs: {res['rps']:.0f} requests/s, "
        f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms\n"
        f"errors {res['errors']}, duplicates {res['duplicates']}, slave mismatches {res['slave_mismatches']} "
        f"(dec_keys errors {res['dec_errors']})\n"
        f"KME CPU per request {res['kme_cpu_ms_per_request']:.2f} ms; "
        f"load average before/after: {res['loadavg_before'][0]:.2f} / {res['loadavg_after'][0]:.2f} on {res['cpus']} CPUs"
    )
    if res["errors"] or res["duplicates"] or res["slave_mismatches"] or res["dec_errors"]:
        raise typer.Exit(1)


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
    """Trusted relay: pass with station A, pass with station B, announce K_A ⊕ K_B; both stations share a key.

    Journaled across the three stores: after a crash, rerun the same command to finish it."""
    cfg = _load(preset or (None if config else "micius-relay-xinglong-nanshan"), config)
    _check_out(out)
    if cfg.second_station is None:
        _fail_input(f"config {cfg.name!r} has no [second_station]: use --preset micius-relay-xinglong-nanshan")
    for path, opt in ((store_a, "--store-a"), (store_b, "--store-b"), (sat_store, "--sat-store")):
        _check_store(path, opt)
    _check_work(cfg, second=True)
    from .keys.store import KeyReused, KeyStore, KeyStoreError
    from .jobs.relay import RelayExists, run_relay, write_relay_outputs

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
    except RelayExists as exc:  # this relay already finished in these stores
        _fail_input(str(exc))
    except KeyReused as exc:  # the usage ledger says these keys were used (a store restored from a backup)
        _fail_input(str(exc))
    except KeyStoreError as exc:  # e.g. a stored key fails its digest (quarantined)
        _error(str(exc))
        raise typer.Exit(1)
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
    _check_store_file(store)
    return store


@keys_app.command("stats")
def keys_stats(
    store: Path = typer.Option(..., "--store", help="key store (SQLite)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON (links, states, counts and bits)"),
) -> None:
    """Counts and bits per link and state."""
    from .keys.store import STATES, stats

    st = stats(_existing_store(store))
    if json_out:
        typer.echo(json.dumps(st))
        return
    t = Table(title=f"key store {st['path']} (site {st['site']}, schema {st['schema_version']})")
    t.add_column("link")
    t.add_column("state")
    t.add_column("keys", justify="right")
    t.add_column("bits", justify="right")
    for link, by_state in sorted(st["links"].items()):
        order = ["deposited", *STATES]
        for state in sorted(by_state, key=lambda x: order.index(x) if x in order else len(order)):
            v = by_state[state]
            t.add_row(link, state, f"{v['count']:,}", f"{v['bits']:,}")
    out_console.print(t)
    out_console.print(f"issued, response not confirmed: {st['issued_unconfirmed']}; cut, awaiting the peer KME: {st['awaiting_peer']}")


@keys_app.command("ls")
def keys_ls(
    store: Path = typer.Option(..., "--store", help="key store (SQLite)"),
    link: Optional[str] = typer.Option(None, help="only this link (peer site)"),
    state: Optional[str] = typer.Option(None, help="only this state"),
    limit: int = typer.Option(50, min=1, help="at most this many rows"),
    json_out: bool = typer.Option(False, "--json", help="print JSON, one object per key"),
) -> None:
    """List keys: id, link, length, state, SAE pair."""
    from .keys.store import STATES, ls

    if state is not None:
        _check_choice("state", state, STATES)
    rows = ls(_existing_store(store), link, state, limit)
    if json_out:
        typer.echo(json.dumps(rows, default=str))
        return
    t = Table("key_id", "link", "bits", "state", "master → slave")
    t.columns[0].no_wrap = True  # ids are copied into other commands: never cut or folded
    t.columns[0].overflow = "ignore"
    for p in rows:
        t.add_row(p["key_id"], p["link"], str(p["length_bits"]), p["state"], f"{p['master_sae'] or ''} → {p['slave_sae'] or ''}")
    (out_console if out_console.is_terminal else Console(width=max(160, out_console.width))).print(t)


@keys_app.command("verify")
def keys_verify(store: Path = typer.Option(..., "--store", help="key store (SQLite)")) -> None:
    """Check every stored key against its digest (and SQLite's integrity check, and the tiling of every root).

    Keys that fail are quarantined (never served). Exit 0 if the store is clean, 1 otherwise."""
    from .keys.store import KeyStore, KeyStoreError

    try:
        with KeyStore(_existing_store(store)) as st:
            rep = st.verify()
    except (KeyStoreError, ValueError) as exc:
        _fail_input(str(exc))
    out_console.print_json(data=rep)
    if not rep["ok"]:
        _error(f"{store}: {len(rep['quarantined'])} quarantined keys, {len(rep['invariant_problems'])} invariant "
               f"problems, integrity check: {rep['integrity_check']}")
        raise typer.Exit(1)


def _otp(kind: str, inp: Path, out: Path, store: Path, peer: str) -> None:
    from .keys.otp import OtpError, decrypt_file, encrypt_file
    from .keys.store import KeyCorrupted, KeyReused, KeyStore, KeyStoreError

    if not inp.is_file():
        _fail_input(f"input file {inp} does not exist")
    _check_out(out, "OUT", file=True)
    fn = encrypt_file if kind == "encrypt" else decrypt_file
    try:
        with KeyStore(_existing_store(store)) as st:
            rep = fn(st, peer, inp, out)
        verb = "encrypted" if kind == "encrypt" else "decrypted"
        # plain text (no rich wrapping): the paths stay whole for copying
        typer.echo(
            f"{verb} {inp} → {out}: {rep.plaintext_bytes:,} bytes with {rep.key_bits:,} key bits shared with {rep.peer} "
            f"({len(rep.key_ids)} key piece(s), now consumed); forgery probability ≤ {rep.forgery_bound:.1e}")
    except KeyReused as exc:  # the usage ledger says this key was used before (restored store): refused
        _fail_input(str(exc))
    except (OtpError, KeyCorrupted) as exc:
        _error(str(exc))
        raise typer.Exit(1)
    except KeyStoreError as exc:
        _error(str(exc))
        raise typer.Exit(1)


@otp_app.command("encrypt")
def otp_encrypt(
    inp: Path = typer.Argument(..., help="file to encrypt"),
    out: Path = typer.Argument(..., help="ciphertext file"),
    store: Path = typer.Option(..., "--store", help="key store (SQLite) holding key shared with PEER"),
    peer: str = typer.Option(..., "--peer", help="the site that will decrypt"),
) -> None:
    """One-time-pad a file with key shared with PEER (the key is consumed in the same transaction)."""
    _otp("encrypt", inp, out, store, peer)


@otp_app.command("decrypt")
def otp_decrypt(
    inp: Path = typer.Argument(..., help="ciphertext file"),
    out: Path = typer.Argument(..., help="plaintext file"),
    store: Path = typer.Option(..., "--store", help="key store (SQLite) holding key shared with PEER"),
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
    _check_out(dir, "DIR")
    from .keys.pki import _check_id, make_certs

    try:  # before make_certs creates DIR
        for opt, ids, what in (("--sae", sae, "SAE"), ("--kme", kme, "KME")):
            for i in ids:
                _check_id(i, what)
    except ValueError as exc:
        _fail_input(f"{opt}: {exc}")
    if set(sae) & set(kme):
        _fail_input(f"--sae and --kme: an id cannot be both an SAE and a KME: {sorted(set(sae) & set(kme))}")

    out_console.print(repr(make_certs(dir, sae, kme)))


@kme_app.command("serve")
def kme_serve(
    store: Path = typer.Option(..., "--store", help="this site's key store"),
    tls: Path = typer.Option(..., "--tls", help="directory made by `satqkd kme certs`"),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="TCP port (default: this KME's port in --network)"),
    network: Path = typer.Option(..., "--network", help="JSON: the KMEs and the SAEs each serves"),
    kme_id: str = typer.Option(..., "--kme-id", help="which KME of --network this process is"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    max_body_bytes: int = typer.Option(64 * 1024, "--max-body-bytes", min=1024, max=1 << 24,
                                       help="larger SAE request bodies get 413"),
    max_inflight: int = typer.Option(256, "--max-inflight", min=1, max=100_000,
                                     help="enc_keys/dec_keys served at once; more wait in line (back-pressure)"),
) -> None:
    """Serve one site's ETSI GS QKD 014 API over HTTPS with client certificates (until SIGINT/SIGTERM)."""
    from .keys.kme import load_network, serve

    try:
        load_network(network)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        _fail_input(f"--network {network}: not a KME network description ({type(exc).__name__}: {exc})")

    serve(_existing_store(store), tls, port, network=network, kme_id=kme_id, host=host, max_body_bytes=max_body_bytes,
          max_inflight_requests=max_inflight)


@kme_app.command("demo")
def kme_demo(
    dir: Path = typer.Option(..., "--dir", help="working directory: stores, PKI, kme.json"),
    seed: int = typer.Option(7, min=0, help="seed of the relay run that fills the stores"),
    key_source: str = typer.Option("relay", "--key-source", help="relay (real passes) | standin (random bytes, for quick tries)"),
) -> None:
    """Relay run → Xinglong and Nanshan stores → two KMEs on loopback; DIR/kme.json describes them."""
    _check_choice("key-source", key_source, ("relay", "standin"))
    _check_out(dir, "--dir")
    from .jobs.kme_demo import run_demo

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

    _check_out(file, "FILE", file=True)
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

    for d, opt in ((alice_out, "--alice-out"), (bob_out, "--bob-out")):
        _check_out(d, opt)
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
           timeout_s: float, message_timeout_s: float, ledger: Optional[Path] = None) -> None:
    import contextlib

    from .outputs import party_summary
    from . import report
    from .protocol.poolfile import PoolFileError
    from .protocol.remote import check_pool, load_party_view, run_party
    from .rawio import check_records_match

    addr = _peer_address(listen, connect)
    if connect is not None and addr[1] == 0:
        _fail_input("--connect: port 0 is not a peer's port")
    cfg = _load(preset, config)
    _check_out(out)
    _check_choice("ec", ec, EC_CHOICES)
    _check_choice("finite-key", finite_key, FK_CHOICES)
    if (out / "keys" / f"{role}.key").exists():
        _fail_input(f"--out {out} already holds keys/{role}.key from an earlier run: a key is never overwritten, choose another --out")
    if any((out / "keys" / "pending").glob("*.key")):
        _fail_input(f"--out {out} holds a pending key from an earlier run: confirm it first (`satqkd party confirm {role} {out} ...`) or choose another --out")
    try:
        view = load_party_view(raw_dir, role)
        check_records_match(view, cfg)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        _fail_input(f"{raw_dir}: {exc}")
    try:
        pf, need = check_pool(pool, ledger)
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
                            timeout_s=timeout_s, message_timeout_s=message_timeout_s, on_status=status, on_listening=listening,
                            ledger=ledger, out=out)
        except PoolFileError as exc:
            _fail_input(str(exc))
        except ValueError as exc:  # e.g. Bob's records cannot be synchronised
            _fail_input(f"{raw_dir}: {exc}")
        except OSError as exc:  # e.g. the pool file cannot be rewritten
            _error(f"{role}: {exc}")
            raise typer.Exit(1)
    s = party_summary(run, ec, finite_key, seed)
    out.mkdir(parents=True, exist_ok=True)
    # the key files were written by the key-confirmation rule during the run (protocol/keyfiles.py)
    s["key_state"], s["key_sha256"] = run.key_state, run.key_sha256
    s["key_bits"] = int(run.outcome.key.size) if run.outcome is not None and run.outcome.key is not None else 0
    s["auth_pool"]["ledger"] = run.ledger
    if run.key_state == "released":
        s["key_file"] = str(out / "keys" / f"{role}.key")
    elif run.key_state == "pending":
        s["key_file"] = str(out / "keys" / "pending" / f"{run.key_sha256}.key")
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
    if run.key_state == "pending":
        out_console.print(f"wrote {out}/summary.json and {s['key_file']} (PENDING: not deliverable until the peer is known to "
                          f"hold it; run `satqkd party confirm {role} {out} ...` with the peer)")
    else:
        out_console.print(f"wrote {out}/summary.json" + (f" and {s['key_file']}" if run.ok else " (no key: the run did not succeed)"))
    if not run.ok:
        _error(f"{role}: {s['abort_reason']}" + (" (key pending)" if run.key_state == "pending" else ""))
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
        ec: str = typer.Option(DEFAULT_EC_METHOD, help="error correction: cascade | ldpc | hamming"),
        finite_key: str = typer.Option("chernoff", "--finite-key", help="finite-key bound: chernoff | lim2014 | paper2017"),
        timeout_s: float = typer.Option(120.0, "--timeout-s", min=0.1, help="how long to wait for the peer to connect / listen"),
        message_timeout_s: float = typer.Option(600.0, "--message-timeout-s", min=0.1, help="how long to wait for each protocol message"),
        ledger: Optional[Path] = typer.Option(None, "--ledger", help="this site's usage ledger of pool bits (default: POOL.ledger beside the pool)"),
    ) -> None:
        _party(role, raw_dir, listen, connect, pool, out, preset, config, seed, ec, finite_key, timeout_s, message_timeout_s, ledger)

    cmd.__doc__ = (
        "Run the satellite's side of post-processing against a bob process (TCP)."
        if role == "alice"
        else "Run the ground station's side of post-processing against an alice process (TCP)."
    )
    return cmd


# ------------------------------------------------------------------ real detector data (docs/ingest.md)
@app.command("ingest")
def ingest_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="ptu | photon-hdf5 | table"),
    file: Path = typer.Argument(..., help="time-tag file (PTU; Photon-HDF5; CSV/Parquet/HDF5 table of channel, time_ps)"),
    channels: str = typer.Option(..., "--channels", help="channel map, e.g. H=0,V=1,D=2,A=3,beacon=4 (no beacon: sync from the data)"),
    transmitter: Path = typer.Option(..., "--transmitter", help="transmitter settings: npy/npz/parquet/csv/h5 table, or a json/toml seeded-PRNG description"),
    out: Path = typer.Option(..., "--out", help="directory for raw.npz (+ ingest.json)"),
    preset: Optional[str] = typer.Option(None, help="preset giving the source and timing parameters (default micius-2016-12-19)"),
    config: Optional[Path] = typer.Option(None, help="mission TOML file"),
    sync: str = typer.Option("auto", help="auto (beacon if the map names one) | beacon | correlation"),
    time_origin_ps: int = typer.Option(0, "--time-origin-ps", help="added to every file time: the file's zero on Bob's pass clock (ps)"),
    beacon_first_index: int = typer.Option(0, "--beacon-first-index", help="pulse count carried by the first beacon tag"),
    first_pulse_index: Optional[int] = typer.Option(None, "--first-pulse-index", help="index of the transmitter table's first row (dense tables)"),
    offset_guess_s: float = typer.Option(0.0, "--offset-guess-s", help="beaconless sync: expected Bob time minus emission time (s)"),
    offset_span_s: float = typer.Option(0.02, "--offset-span-s", min=1e-9, max=0.5, help="beaconless sync: width of the offset search (s)"),
    max_drift: float = typer.Option(1e-4, "--max-drift", min=1e-9, max=1e-2, help="beaconless sync: largest |rate offset| (clock drift + Doppler)"),
) -> None:
    """Turn real detector data into raw records (raw.npz) for `satqkd postprocess` and `satqkd party`."""
    cfg = _load(preset, config)
    from .ingest import FORMATS, IngestError, build_raw, load_transmitter, parse_channel_map, read_tags, write_ingest
    from .quantum.correlation_sync import SyncError

    if fmt not in FORMATS:
        _fail_input(f"FORMAT must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if out.exists() and not out.is_dir():
        _fail_input(f"--out {out} exists and is not a directory")
    try:
        cmap = parse_channel_map(channels)
        tx = load_transmitter(transmitter, probabilities=cfg.source.probabilities, first_pulse_index=first_pulse_index)
        tags = read_tags(file, fmt)
        raw, rep = build_raw(
            tags, cmap, tx, cfg, time_origin_ps=time_origin_ps, beacon_first_index=beacon_first_index, sync=sync,
            source=str(file), correlation_options=dict(offset_guess_s=offset_guess_s, offset_span_s=offset_span_s, max_drift=max_drift),
        )
        path = write_ingest(raw, rep, out)
    except (IngestError, SyncError, ValueError) as exc:
        _fail_input(str(exc))
    out_console.print(f"wrote {path}: {raw!r}")
    if rep.correlation:
        c = rep.correlation
        out_console.print(
            f"sync without beacon: offset {c['offset_ns']:.3f} ns, drift {c['drift_ppm']:.4f} ppm, "
            f"{100 * c['fraction_assigned']:.1f} % of tags assigned (correlation peak z = {c['peak_z']:.1f})"
        )


@app.command("export")
def export_cmd(
    raw_dir: Path = typer.Argument(..., help="directory with raw.npz (from simulate, run or ingest)"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    formats: str = typer.Option("parquet,hdf5,csv", "--format", help="comma-separated: parquet, hdf5, csv"),
    seed: int = typer.Option(0, min=0, help="seed of Bob's squashing bits"),
) -> None:
    """Export detections, sifted events and the per-second time series (Parquet, HDF5, CSV).

    For a simulated pass (RAW_DIR holds timeseries.csv) the time series keeps its link columns."""
    from .exports import ExportError, _check_formats, pass_frames, write_frames
    from .rawio import load_raw

    fm = tuple(f.strip() for f in formats.split(",") if f.strip())
    try:
        _check_formats(fm)
        raw = load_raw(raw_dir)
        extra = None
        if (raw_dir / "timeseries.csv").is_file():  # a simulated pass: keep its link columns
            import pandas as pd

            extra = {c: v.to_numpy() for c, v in pd.read_csv(raw_dir / "timeseries.csv").items()}
        frames = pass_frames(raw, seed=seed, timeseries_extra=extra)
        paths = write_frames(frames, out, fm)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        _fail_input(str(exc))
    out_console.print("wrote " + ", ".join(str(p) for p in paths))


party_app.command("alice")(_party_command("alice"))
party_app.command("bob")(_party_command("bob"))


@party_app.command("confirm")
def party_confirm(
    role: str = typer.Argument(..., help="alice | bob"),
    run_dir: Path = typer.Argument(..., help="the earlier run's --out directory (summary.json, keys/pending/)"),
    listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT to listen on for the peer (port 0: any free port)"),
    connect: Optional[str] = typer.Option(None, "--connect", help="HOST:PORT of the listening peer"),
    pool: Path = typer.Option(..., "--pool", help="this party's copy of the authentication pool (a confirmation uses 383 bits)"),
    ledger: Optional[Path] = typer.Option(None, "--ledger", help="this site's usage ledger (default: POOL.ledger)"),
    timeout_s: float = typer.Option(120.0, "--timeout-s", min=0.1, help="how long to wait for the peer"),
    message_timeout_s: float = typer.Option(600.0, "--message-timeout-s", min=0.1, help="how long to wait for each message"),
) -> None:
    """Release or discard an earlier run's pending key with the peer (one authenticated exchange)."""
    from . import report
    from .protocol.poolfile import PoolFileError
    from .protocol.remote import run_confirm

    if role not in ("alice", "bob"):
        _fail_input(f"ROLE must be alice or bob, got {role!r}")
    addr = _peer_address(listen, connect)

    def listening(port: int) -> None:
        console.print(f"{role}: listening on {addr[0]}:{port} (up to {timeout_s:g} s)")

    try:
        run = run_confirm(role, run_dir, pool, listen=addr if listen is not None else None, connect=addr if connect is not None else None,
                          ledger=ledger, timeout_s=timeout_s, message_timeout_s=message_timeout_s, on_listening=listening)
    except (PoolFileError, ValueError) as exc:
        _fail_input(str(exc))
    summary_path = run_dir / "summary.json"
    s = json.loads(summary_path.read_text()) if summary_path.is_file() else {"role": role}
    s["key_state"], s["key_sha256"] = run.key_state, run.key_sha256
    if run.key_state != "none":
        s["key_file"] = run.key_file or str(run_dir / "keys" / "pending" / f"{run.key_sha256}.key")
    else:
        s.pop("key_file", None)
    s.setdefault("confirmations", []).append({
        "peer": run.peer, "error": run.error, "decisions": run.decisions, "pool_bits_used": run.pool_bits_reserved,
        "pool_offset_after": run.pool_offset_after, "ledger": run.ledger,
    })
    report.write_json(s, summary_path)
    out_console.print(f"{role}: key {run.key_state}" + (f" ({run.key_sha256[:16]}…)" if run.key_sha256 else "")
                      + f"; decisions: {run.decisions or 'no pending key'}")
    if run.error is not None:
        _error(f"{role}: {run.error}")
        raise typer.Exit(1)


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
