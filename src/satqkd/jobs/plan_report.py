"""Figures and the one-page HTML report of a network plan (matplotlib ``Figure`` objects; no backend switch)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

__all__ = ["coverage_figure", "map_figure", "monthly_figure", "write_figures"]


def _fig(w, h):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def coverage_figure(res):
    """Timeline: one row per station; a mark per pass (size ∝ final key, grey = cloudy, red = no key)."""
    import pandas as pd

    df = res.passes
    names = list(res.stations)
    fig = _fig(11, 0.45 * len(names) + 1.6)
    ax = fig.add_subplot()
    if len(df):
        t = pd.to_datetime(df["start_utc"], utc=True, format="ISO8601")
        y = df["station"].map({n: i for i, n in enumerate(names)})
        k = df["final_key_bits"].to_numpy(dtype=float)
        cloudy = ~df["clear"].to_numpy(dtype=bool)
        none = (~cloudy) & (k <= 0)
        keyed = k > 0
        ax.scatter(t[cloudy], y[cloudy], s=6, c="0.75", marker="|", label="cloudy night")
        ax.scatter(t[none], y[none], s=10, c="tab:red", marker="x", label="clear, no key")
        if keyed.any():
            sc = ax.scatter(t[keyed], y[keyed], s=4 + 60 * k[keyed] / k[keyed].max(), c=df["max_elevation_deg"][keyed],
                            cmap="viridis", vmin=10, vmax=90, label="key (size ∝ bits)")
            fig.colorbar(sc, ax=ax, label="max elevation (°)", pad=0.01)
        ax.legend(loc="upper right", fontsize=7, ncols=3)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_title("passes per station (expected-key model)")
    return fig


def map_figure(res):
    """Stations on longitude/latitude, marker area ∝ final key; pair lines, width ∝ relayed key."""
    fig = _fig(10, 5.2)
    ax = fig.add_subplot()
    st = res.stations
    lon = {n: v["longitude_deg"] for n, v in st.items()}
    lat = {n: v["latitude_deg"] for n, v in st.items()}
    pairs = res.pairs
    mx = max([v["relayed_key_bits"] for v in pairs.values()] + [1])
    for k, v in pairs.items():
        if v["relayed_key_bits"] <= 0:
            continue
        a, b = k.split("–")
        ax.plot([lon[a], lon[b]], [lat[a], lat[b]], "-", color="tab:blue", alpha=0.6,
                lw=0.5 + 5.0 * v["relayed_key_bits"] / mx, zorder=1)
    keys = np.array([v["final_key_bits"] for v in st.values()], dtype=float)
    kmax = max(float(keys.max()) if keys.size else 1.0, 1.0)
    ax.scatter(list(lon.values()), list(lat.values()), s=30 + 300 * keys / kmax, c="tab:orange", edgecolor="k", zorder=2)
    for n in st:
        ax.annotate(f"{n}\n{st[n]['final_key_bits'] / 1e6:.1f} Mbit", (lon[n], lat[n]), fontsize=7,
                    xytext=(5, 5), textcoords="offset points")
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.grid(alpha=0.3)
    ax.set_title("stations (area ∝ final key) and relayed key per pair (line width)")
    return fig


def monthly_figure(res):
    """Final key per station per month (stacked bars)."""
    sm = res.station_monthly
    fig = _fig(11, 4)
    ax = fig.add_subplot()
    months = sorted(sm["month"].unique())
    bottom = np.zeros(len(months))
    for n in res.stations:
        v = sm[sm["station"] == n].set_index("month").reindex(months)["final_key_bits"].fillna(0).to_numpy() / 1e6
        ax.bar(months, v, bottom=bottom, label=n)
        bottom += v
    ax.set_ylabel("final key (Mbit)")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(fontsize=7, ncols=4)
    ax.set_title("final key per month")
    return fig


def _h(x) -> str:
    return "" if x is None else f"{x:.0f}"


def _png(fig) -> bytes:
    b = io.BytesIO()
    fig.savefig(b, format="png", dpi=110)
    return b.getvalue()


def write_figures(res, out: Path) -> list[Path]:
    """``coverage.png``, ``map.png``, ``monthly.png`` and ``plan.html`` (one page, figures embedded)."""
    out = Path(out)
    figs = {"coverage.png": coverage_figure(res), "map.png": map_figure(res), "monthly.png": monthly_figure(res)}
    files = []
    imgs = {}
    for name, f in figs.items():
        data = _png(f)
        (out / name).write_bytes(data)
        files.append(out / name)
        imgs[name] = base64.b64encode(data).decode("ascii")
    s = res.settings
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{v['passes']}</td><td>{v['clear_passes']}</td><td>{v['passes_with_key']}</td>"
        f"<td>{v['final_key_bits'] / 1e6:.2f}</td><td>{v['final_key_bits_per_day'] / 1e3:.1f}</td>"
        f"<td>{html.escape(v['clear_sky_source'])}</td></tr>" for n, v in res.stations.items())
    prow = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['relays']}</td><td>{v['relayed_key_bits'] / 1e6:.2f}</td>"
        f"<td>{_h(v['storage_hours_mean'])}</td><td>{_h(v['storage_hours_max'])}</td></tr>"
        for k, v in sorted(res.pairs.items(), key=lambda kv: -kv[1]["relayed_key_bits"]))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>satqkd network plan</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;font-size:13px}}</style></head><body>
<h1>Network plan</h1>
<p>{len(s['satellites'])} satellite(s), {len(res.stations)} stations, {s['days']:g} days from {html.escape(s['start_utc'][:16])} UTC,
seed {s['seed']}; model: {html.escape(s['model'])}; EC leakage: calibrated {html.escape(s['ec'])}; bound: {html.escape(s['finite_key'])}.
Weather: {html.escape(s['weather'])}. Relay rule: {html.escape(s['relay_rule'])}.</p>
<h2>Stations</h2><table><tr><th>station</th><th>passes</th><th>clear</th><th>with key</th><th>final key (Mbit)</th><th>kbit/day</th><th>clear-sky source</th></tr>{rows}</table>
<img src="data:image/png;base64,{imgs['coverage.png']}" width="100%">
<img src="data:image/png;base64,{imgs['monthly.png']}" width="100%">
<h2>Station pairs (trusted relay)</h2><table><tr><th>pair</th><th>relays</th><th>relayed key (Mbit)</th><th>storage mean (h)</th><th>storage max (h)</th></tr>{prow}</table>
<img src="data:image/png;base64,{imgs['map.png']}" width="100%">
</body></html>"""
    (out / "plan.html").write_text(page, encoding="utf-8")
    files.append(out / "plan.html")
    return files
