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


def _plain_log_labels(ax) -> None:
    """Label a log y axis ``10⁻⁶`` in plain Unicode: matplotlib's default labels are mathtext, whose
    parser costs ~0.3 s of CPU to build in each process that draws a figure."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def fmt(y, _pos):
        if not (y > 0 and np.isfinite(y)):
            return ""
        e = np.log10(y)
        return f"10{str(int(round(e))).translate(_SUPERSCRIPT)}" if abs(e - round(e)) < 1e-9 else ""

    ax.yaxis.set_major_formatter(FuncFormatter(fmt))
    ax.yaxis.set_minor_formatter(NullFormatter())


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


def plot_pass(ts, title: str = ""):
    """Paper Fig. 3b/c: sifted key rate and QBER against time, with the distance on a second axis.

    ``ts``: :meth:`PassSimulation.timeseries` (DataFrame) or a dict of its columns. Returns a Figure.
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
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = axr.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=9)
    q = ts["qber"] * 100
    ax2.plot(t, q, ".", color=PAPER_RED, ms=4)
    mean_q = np.nansum(ts["qber"] * ts["sifted_bits"]) / max(1, np.sum(ts["sifted_bits"])) * 100
    ax2.axhline(mean_q, color="k", ls="--", lw=1, label=f"mean {mean_q:.2f} % (paper 1.1 %)")
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
    ax.text(r[i] - 10, np.sqrt(eta[i] * fiber[i]), f"×{eta[i] / fiber[i]:.1e}\nat {r[i]:.0f} km", ha="right", va="center", fontsize=9)
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
    """Where the sifted bits went: a horizontal stacked bar, largest consumers labelled. Returns a Figure
    (save it with ``bbox_inches="tight"``: the legend sits below the axes)."""
    from matplotlib import colormaps

    items = [(k, v) for k, v in budget.items() if v > 0]
    total = sum(v for _, v in items)
    colors = colormaps["tab10"].colors
    fig = _figure(figsize=(9, 2.8))
    ax = fig.subplots()
    left = 0
    for i, (k, v) in enumerate(items):
        ax.barh([0], [v], left=left, color=colors[i % 10], label=f"{k}: {v:,} ({100 * v / total:.1f} %)")
        left += v
    ax.set_yticks([])
    ax.set_xlim(0, total)
    ax.set_xlabel("bits")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title or "Key budget: where the sifted bits went")
    fig.tight_layout()
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


def write_html(summary: dict, figures: list[str], path: str | Path, title: str = "") -> Path:
    """A self-contained page (figures referenced beside it): the run against the paper, then the figures."""
    import html

    rows = []
    for label, key, paper, fmt in _PAPER_ROWS:
        if key in summary and summary[key] is not None:
            try:
                val = fmt.format(summary[key])
            except (ValueError, TypeError):
                val = str(summary[key])
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(val)}</td><td>{html.escape(paper)}</td></tr>")
    budget = summary.get("key_budget") or {}
    brows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>" for k, v in budget.items())
    imgs = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(f)}"><figcaption>{html.escape(f)}</figcaption></figure>' for f in figures)
    title = title or f"satqkd: {summary.get('satellite', '')} → {summary.get('station', '')}, seed {summary.get('seed', '')}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Start {html.escape(str(summary.get('start_utc', '')))} UTC; culmination {html.escape(str(summary.get('culmination_utc', '')))} UTC
at {summary.get('max_elevation_deg', '')}°. Preset {html.escape(str(summary.get('preset', '')))}, satqkd {html.escape(str(summary.get('satqkd_version', '')))}.</p>
<table><tr><th>figure</th><th>this run</th><th>paper (Liao et al. 2017)</th></tr>{''.join(rows)}</table>
{"<h2>Key budget</h2><table><tr><th>where the sifted bits went</th><th>bits</th></tr>" + brows + "</table>" if brows else ""}
{imgs}
</body></html>
"""
    p = Path(path)
    p.write_text(page, encoding="utf-8")
    return p
