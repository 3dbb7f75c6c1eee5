"""Figures and files of a run, in the style of the paper's figures.

The ``plot_*`` functions take records/arrays and return a :class:`matplotlib.figure.Figure`; they
never touch pyplot's figure manager or the backend (a notebook's inline plots keep working, and a
figure is shown by leaving it as a cell's value or by ``fig.savefig``). Writing PNGs is the CLI's
job: :func:`save_figure`. The ``write_*`` functions write one file each. Matplotlib is imported on
the first figure only (importing it costs ~0.3 s and ~40 MiB that a run without figures does not
need).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

__all__ = [
    "write_json",
    "write_timeseries_csv",
    "plot_pass",
    "plot_link_efficiency",
    "plot_polarization",
    "plot_key_budget",
    "save_figure",
    "write_html",
    "TIMESERIES_COLUMNS",
]

TIMESERIES_COLUMNS = ("t_s", "range_km", "elevation_deg", "link_loss_db", "transmittance", "detections", "sifted_bits", "qber")

PAPER_BLUE = "#1f5fa8"
PAPER_RED = "#c0392b"


def _pyplot():
    """``matplotlib.pyplot``, imported on first use. The backend is left as the user (or the CLI,
    which sets ``MPLBACKEND=Agg``) chose it."""
    import matplotlib.pyplot as plt

    return plt


def _figure(**kw):
    """A :class:`~matplotlib.figure.Figure` outside pyplot: no backend, no global figure list."""
    from matplotlib.figure import Figure

    return Figure(**kw)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _plain_log_labels(ax, axis: str = "y") -> None:
    """Label a log ``axis`` (``"x"`` or ``"y"``) ``10⁻⁶`` in plain Unicode: matplotlib's default labels are
    mathtext, whose parser costs ~0.3 s of CPU to build in each process that draws a figure."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def fmt(v, _pos):
        if not (v > 0 and np.isfinite(v)):
            return ""
        e = np.log10(v)
        return f"10{str(int(round(e))).translate(_SUPERSCRIPT)}" if abs(e - round(e)) < 1e-9 else ""

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(fmt))
    target.set_minor_formatter(NullFormatter())


def save_figure(fig, path: str | Path, *, dpi: int = 120, **kw) -> Path:
    """Write ``fig`` as a PNG (or what ``path``'s suffix names) and return the path."""
    fig.savefig(path, dpi=dpi, **kw)
    return Path(path)


def _columns(ts, names) -> dict[str, np.ndarray]:
    """The named columns of a time series (dict of arrays or DataFrame) as NumPy arrays."""
    return {c: np.asarray(ts[c], dtype=float) for c in names}


def write_json(data: dict, path: str | Path) -> Path:
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_timeseries_csv(ts: dict[str, np.ndarray], path: str | Path) -> Path:
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(TIMESERIES_COLUMNS)
        for i in range(len(ts["t_s"])):
            row = []
            for c in TIMESERIES_COLUMNS:
                v = ts[c][i]
                if c in ("detections", "sifted_bits"):
                    row.append(int(v))
                elif c == "transmittance":
                    row.append(f"{v:.6e}")
                elif c == "qber":
                    row.append("" if not np.isfinite(v) else f"{v:.6f}")
                else:
                    row.append(f"{v:.4f}")
            w.writerow(row)
    return p


def plot_pass(ts, title: str = "", *, paper_qber_percent: float | None = None):
    """Paper Fig. 3b/c: sifted key rate and QBER against time, with the distance on a second axis.

    ``ts``: :meth:`PassSimulation.timeseries` (DataFrame) or a dict of its columns;
    ``paper_qber_percent``: the paper's mean QBER, shown beside this pass's mean (only for the
    paper's pass: a what-if is not the same pass). Returns a Figure.
    """
    ts = _columns(ts, ("t_s", "sifted_bits", "range_km", "qber"))
    t = ts["t_s"]
    fig = _figure(figsize=(8, 6.5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    edges = np.append(t - 0.5, t[-1] + 0.5) if t.size else np.zeros(1)
    ax1.stairs(ts["sifted_bits"] / 1e3, edges, fill=True, color=PAPER_BLUE, alpha=0.85, label="sifted key rate")
    ax1.set_ylabel("sifted key rate (kbit/s)")
    ax1.grid(alpha=0.3)
    axr = ax1.twinx()
    axr.plot(t, ts["range_km"], color="k", lw=1.5, label="distance")
    axr.set_ylabel("physical distance (km)")
    # headroom above the bars and the distance curve: the legend sits there, clear of both
    if t.size:
        top = float(np.max(ts["sifted_bits"])) / 1e3
        ax1.set_ylim(0, max(top, 1e-3) * 1.3)
        r_lo, r_hi = float(np.min(ts["range_km"])), float(np.max(ts["range_km"]))
        pad = max(r_hi - r_lo, 1.0)
        axr.set_ylim(r_lo - 0.05 * pad, r_hi + 0.35 * pad)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = axr.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, loc="upper center", ncol=2, fontsize=9, framealpha=0.9)
    q = ts["qber"] * 100
    ax2.plot(t, q, ".", color=PAPER_RED, ms=4)
    mean_q = np.nansum(ts["qber"] * ts["sifted_bits"]) / max(1, np.sum(ts["sifted_bits"])) * 100
    ref = f" (paper {paper_qber_percent:g} %)" if paper_qber_percent is not None else ""
    ax2.axhline(mean_q, color="k", ls="--", lw=1, label=f"mean {mean_q:.2f} %{ref}")
    ax2.set_ylabel("QBER (%)")
    ax2.set_xlabel("time from start of QKD (s)")
    finite = q[np.isfinite(q)]
    ax2.set_ylim(0, max(4.0, float(np.percentile(finite, 98)) * 1.2 if finite.size else 4.0))
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper left", fontsize=9)
    fig.suptitle(title or "Satellite-to-ground QKD during one pass (cf. paper Fig. 3)")
    fig.subplots_adjust(left=0.09, right=0.90, bottom=0.08, top=0.92, hspace=0.08)  # fixed margins: tight_layout costs ~0.4 s of text layout
    return fig


def plot_link_efficiency(range_km, link_efficiency, fiber_loss_db_per_km: float = 0.2, title: str = ""):
    """Paper Fig. 4: link efficiency against distance, satellite vs 0.2 dB/km fiber, log scale. Returns a Figure."""
    range_km, link_efficiency = np.asarray(range_km, dtype=float), np.asarray(link_efficiency, dtype=float)
    order = np.argsort(range_km)
    r, eta = range_km[order], link_efficiency[order]
    fiber = 10 ** (-fiber_loss_db_per_km * r / 10)
    fig = _figure(figsize=(7, 5))
    ax = fig.subplots()
    ax.semilogy(r, fiber, "o", color=PAPER_RED, ms=3, label=f"optical fiber ({fiber_loss_db_per_km} dB/km)")
    ax.semilogy(r, eta, "o", color=PAPER_BLUE, ms=3, label="satellite-to-ground (this pass)")
    i = int(np.argmax(r))
    ax.annotate("", xy=(r[i], eta[i]), xytext=(r[i], fiber[i]), arrowprops={"arrowstyle": "<->", "color": "0.3"})
    # the ratio observed at the farthest point drawn (the pass's last whole second, e.g. 1197 km), not the
    # model's value at a round distance (`satqkd link --fiber-compare 1200`: 1.0e20 at 1200 km)
    ax.text(r[i] - 10, np.sqrt(eta[i] * fiber[i]), f"×{eta[i] / fiber[i]:.1e}\nat {r[i]:.0f} km\n(observed)", ha="right",
            va="center", fontsize=9)
    ax.set_xlabel("physical distance (km)")
    ax.set_ylabel("link efficiency")
    _plain_log_labels(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    ax.set_title(title or "Link efficiency: satellite vs fiber (cf. paper Fig. 4)")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.10, top=0.93)
    return fig


def plot_polarization(t_s, compensated, uncompensated, title: str = ""):
    """Paper Fig. 2c: polarization contrast ratio along the pass with and without HWP compensation.

    Log scale; a contrast of 0 (no polarization left) cannot be drawn on it and leaves a gap, which
    the legend states with the minimum reached. Returns a Figure.
    """
    t_s, compensated, uncompensated = (np.asarray(a, dtype=float) for a in (t_s, compensated, uncompensated))
    fig = _figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.set_yscale("log", nonpositive="mask")
    ax.plot(t_s, compensated, color=PAPER_BLUE, label=f"with HWP compensation (mean {np.mean(compensated):.0f}:1)")
    ax.plot(t_s, uncompensated, color=PAPER_RED, label=f"without compensation (min {np.min(uncompensated):.2g}:1)")
    ax.set_xlabel("time from start of QKD (s)")
    ax.set_ylabel("polarization contrast ratio")
    _plain_log_labels(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    ax.set_title(title or "Polarization contrast along the pass (cf. paper Fig. 2c)")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.91)
    return fig


def plot_key_budget(budget: dict[str, int], title: str = ""):
    """Where the sifted bits went: one bar per part on a log scale (parts of 1 bit and of 10⁶ bits
    both visible), each labelled with its bits and share; parts of 0 bits or fewer (``rounding`` may be
    negative) are listed with their value and no bar. Returns a Figure."""
    from matplotlib import colormaps

    items = list(budget.items())
    total = sum(v for _, v in items if v > 0) or 1
    colors = colormaps["tab10"].colors
    n = max(len(items), 1)
    fig = _figure(figsize=(9, 1.4 + 0.38 * n))
    ax = fig.subplots()
    ax.set_xscale("log")
    y = np.arange(n)[::-1]
    hi = max([v for _, v in items if v > 0], default=1)
    for i, (k, v) in enumerate(items):
        share = 100.0 * v / total
        label = f"{v:,} bits ({share:.3g} %)" if v > 0 else f"{v:,} bits"
        if v > 0:
            ax.barh([y[i]], [v], left=0.5, color=colors[i % 10], height=0.7)
            ax.text(v * 1.25, y[i], label, va="center", ha="left", fontsize=8)
        else:
            ax.text(0.7, y[i], label, va="center", ha="left", fontsize=8, color="0.3")
    ax.set_yticks(y, [k for k, _ in items], fontsize=8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0.5, hi * 60)  # room right of the longest bar for its label
    ax.set_xlabel("bits (log scale)")
    ax.grid(alpha=0.3, axis="x", which="major")
    ax.set_title(title or "Key budget: where the sifted bits went", fontsize=10)
    _plain_log_labels(ax, "x")
    fig.subplots_adjust(left=0.34, right=0.98, bottom=0.9 / (1.4 + 0.38 * n) + 0.02, top=1 - 0.45 / (1.4 + 0.38 * n))
    return fig


#: (label, summary key, paper's value, format) rows of the HTML report
_PAPER_ROWS = (
    ("QKD data (s)", "duration_s", "273", "{:.1f}"),
    ("minimum range (km)", "min_range_km", "645", "{:.0f}"),
    ("maximum range (km)", "max_range_km", "1200", "{:.0f}"),
    ("detections", "detections", "3,551,136", "{:,}"),
    ("sifted bits", "sifted_bits", "1,671,072", "{:,}"),
    ("QBER", "qber", "1.1 %", "{:.2%}"),
    ("tracking error rms (µrad)", "tracking_error_rms_urad", "~1.2", "{:.2f}"),
    ("compensated contrast (mean)", "contrast_compensated_mean", "280:1", "{:.0f}:1"),
    ("final key bits", "final_key_bits", "300,939", "{:,}"),
    ("ε (total)", "epsilon", "1e-9", "{:.2g}"),
    ("error correction efficiency f", "ec_efficiency", "—", "{:.3f}"),
    ("keys match", "keys_match", "—", "{}"),
)


#: what each figure of a run shows (the report's captions), after the paper's figures
FIGURE_CAPTIONS = {
    "fig3_pass.png": (
        "After the paper's Fig. 3: top, the sifted key rate per second (bars, left axis; signal intensity, both bases) "
        "and the physical distance to the satellite (line, right axis); bottom, the QBER of each second and its mean "
        "over the pass (the paper: 273 s of data at 645–1200 km, mean QBER 1.1 %)."
    ),
    "fig4_link_efficiency.png": (
        "After the paper's Fig. 4: the link efficiency of each second of this pass, inferred from the signal-state "
        "count rate as the paper does, against the distance, beside a 0.2 dB/km optical fiber of the same length; "
        "the arrow gives their ratio at the longest distance of the pass."
    ),
    "fig2c_polarization.png": (
        "After the paper's Fig. 2c: the polarization contrast ratio along the pass with the motorised half-wave plate "
        "compensating the rotation of the reference frames, and without compensation (the paper: about 280:1 on "
        "average with it; without it the contrast falls to 0 near culmination, where the log scale leaves a gap)."
    ),
    "key_budget.png": (
        "Where the sifted key bits went, from left to right: the decoy-state bound on multi-photon pulses, the phase "
        "error of the single photons, the error-correction disclosures of each party, error verification, the "
        "finite-size (ε) terms, authentication, and the final key."
    ),
}


def readable_utc(value) -> str:
    """``2016-12-19T16:49:57.511280+00:00`` → ``2016-12-19 16:49:57 UTC`` (empty for a missing time)."""
    from datetime import datetime, timezone

    if value in (None, ""):
        return ""
    try:
        t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _data_uri(path: Path) -> str:
    import base64

    kind = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "image/png")
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_html(summary: dict, figures: list, path: str | Path, title: str = "") -> Path:
    """One self-contained page: the run's headline figures (beside the paper's when the run is the
    paper's pass, ``summary["paper_pass"]``), its key budget, and the figures embedded (base64) with
    captions that say what each shows. ``figures``: PNG paths, relative to the page's directory or absolute."""
    import html

    p = Path(path)
    paper = bool(summary.get("paper_pass"))
    rows = []
    for label, key, ref, fmt in _PAPER_ROWS:
        if key in summary and summary[key] is not None:
            try:
                val = fmt.format(summary[key])
            except (ValueError, TypeError):
                val = str(summary[key])
            ref_cell = f"<td>{html.escape(ref)}</td>" if paper else ""
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(val)}</td>{ref_cell}</tr>")
    budget = summary.get("key_budget") or {}
    brows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>" for k, v in budget.items())
    imgs = []
    for f in figures:
        fp = Path(f) if Path(f).is_absolute() else p.parent / f
        name = fp.name
        caption = FIGURE_CAPTIONS.get(name, name)
        imgs.append(f'<figure><img src="{_data_uri(fp)}" alt="{html.escape(caption)}">'
                    f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>")
    sat, st = summary.get("satellite") or "", summary.get("station") or ""
    where = f"{sat} → {st}" if sat and st else (sat or st or str(summary.get("preset") or "run"))
    seed = summary.get("seed")
    title = title or f"satqkd: {where}" + (f", {readable_utc(summary.get('start_utc'))}" if summary.get("start_utc") else "") + (
        f" (seed {seed})" if seed is not None else "")
    facts = []
    if summary.get("start_utc"):
        facts.append(f"QKD from {readable_utc(summary['start_utc'])}")
    if summary.get("culmination_utc"):
        el = summary.get("max_elevation_deg")
        facts.append(f"culmination {readable_utc(summary['culmination_utc'])}" + (f" at {el:.1f}° elevation" if isinstance(el, (int, float)) else ""))
    if summary.get("preset"):
        facts.append(f"mission {summary['preset']}")
    if summary.get("pass_choice") and summary.get("pass_choice") != "first":
        facts.append(f"pass chosen with --pass {summary['pass_choice']}")
    if summary.get("satqkd_version"):
        facts.append(f"satqkd {summary['satqkd_version']}")
    note = ("" if paper else
            "<p><i>A what-if run (not the paper's configuration and pass), so its figures are not set against the "
            "paper's; the paper's pass is preset micius-2016-12-19 on 2016-12-19.</i></p>")
    head = "<tr><th>figure</th><th>this run</th>" + ("<th>paper (Liao et al. 2017)</th>" if paper else "") + "</tr>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}
figcaption{{font-size:0.9em;color:#444}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{html.escape("; ".join(facts))}.</p>{note}
<table>{head}{''.join(rows)}</table>
{"<h2>Key budget</h2><table><tr><th>where the sifted bits went</th><th>bits</th></tr>" + brows + "</table>" if brows else ""}
{''.join(imgs)}
</body></html>
"""
    p.write_text(page, encoding="utf-8")
    return p
