"""Writing a run's files: the edge between the pure pipeline and the file system."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import report
from .rawio import save_raw

__all__ = ["write_simulation"]

FIBER_LOSS_DB_PER_KM = 0.2


def write_simulation(sim, out: str | Path, *, figures: bool = True) -> list[Path]:
    """Write summary.json, timeseries.csv, raw.npz (and the figures) of a :class:`PassSimulation`."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    ts = sim._timeseries_arrays()
    summary = sim.summary()
    files = [
        report.write_json(summary, d / "summary.json"),
        report.write_timeseries_csv(ts, d / "timeseries.csv"),
        save_raw(sim.raw, d),
    ]
    if figures:
        g = sim.geometry
        title = f"{g.satellite} → {g.station}, {g.start_utc:%Y-%m-%d %H:%M} UTC (simulated, seed {sim.seed})"
        paper_q = 1.1 if summary.get("paper_pass") else None  # [paper] mean QBER of the pass, 1.1 %
        files.append(report.save_figure(report.plot_pass(ts, title=title, paper_qber_percent=paper_q), d / "fig3_pass.png"))
        fig4 = report.plot_link_efficiency(ts["range_km"], ts["link_efficiency_observed"], FIBER_LOSS_DB_PER_KM)
        files.append(report.save_figure(fig4, d / "fig4_link_efficiency.png"))
        link = sim.link
        if link.contrast_compensated is not None and link.contrast_uncompensated is not None:
            fig2c = report.plot_polarization(link.t_s, link.contrast_compensated, link.contrast_uncompensated)
            files.append(report.save_figure(fig2c, d / "fig2c_polarization.png"))
        files.append(write_html_report(d))
    logging.getLogger(__name__).info("wrote %s", ", ".join(str(f) for f in files))
    return files


FIGURE_ORDER = ("fig3_pass.png", "fig4_link_efficiency.png", "fig2c_polarization.png", "key_budget.png")


def write_html_report(d: Path, also: tuple[Path, ...] = ()) -> Path:
    """``report.html`` from the directory's summary.json and PNG figures (call again after adding some);
    a figure missing from ``d`` is taken from the first of ``also`` that has it (``postprocess RAW_DIR``:
    the pass's figures written by ``simulate`` beside the records)."""
    import json

    summary = json.loads((Path(d) / "summary.json").read_text(encoding="utf-8"))
    figs = []
    for name in FIGURE_ORDER:
        for folder in (Path(d), *map(Path, also)):
            if (folder / name).is_file():
                figs.append((folder / name).resolve())
                break
    return report.write_html(summary, figs, Path(d) / "report.html")


def pass_summary_of_records(raw_dir: Path, raw) -> dict:
    """What is known of the pass behind saved records: ``summary.json`` beside them (``satqkd simulate``
    writes it) or else the pass id the records carry (``satellite:station:start:seedN``)."""
    import json

    p = Path(raw_dir) / "summary.json"
    if Path(raw_dir).is_dir() and p.is_file():
        try:
            s = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            s = None
        if isinstance(s, dict) and s.get("start_utc") and (not raw.meta.get("pass_id") or
                                                           str(s.get("seed")) in str(raw.meta.get("pass_id"))):
            keep = ("satqkd_version", "preset", "seed", "satellite", "station", "pass_choice", "paper_pass", "start_utc",
                    "culmination_utc", "max_elevation_deg", "duration_s", "min_range_km", "max_range_km", "detections",
                    "sifted_bits", "qber", "tracking_error_rms_urad", "contrast_compensated_mean")
            return {k: s[k] for k in keep if k in s}
    pid = str(raw.meta.get("pass_id") or "")
    parts = pid.rsplit(":seed", 1)
    head = parts[0].split(":", 2)
    if len(head) == 3:
        out = {"satellite": head[0], "station": head[1], "start_utc": head[2].replace("Z", "+00:00")}
        if len(parts) == 2 and parts[1].isdigit():
            out["records_seed"] = int(parts[1])
        return out
    return {}


def postprocess_summary(res) -> dict:
    """Issue 3 §3 fields of a :class:`~satqkd.protocol.session.PostprocessResult`."""
    a, b, ch = res.alice, res.bob, res.channel
    est = b.estimate
    eps_parts = dict(b.epsilon_parts)
    stage = {f"alice_{k}": round(v, 4) for k, v in a.stage_seconds.items()}
    stage.update({f"bob_{k}": round(v, 4) for k, v in b.stage_seconds.items()})
    stage["bob_synchronisation"] = round(res.sync_seconds, 4)
    f = res.ec_efficiency()
    return {
        "final_key_bits": res.final_key_bits,
        "keys_match": bool(res.keys_match),
        "aborted": not res.ok,
        "abort_reason": res.abort_reason,
        "epsilon": float(sum(eps_parts.values())) if eps_parts else None,
        "epsilon_parts": eps_parts,
        "sifted_key_bits": b.sifted_key_bits,
        "qber_key": b.qber,
        "leak_ec_bits": b.leak_ec_bits,
        "leak_ec_bits_by_party": dict(b.leak_ec_bits_by_party),
        "ec_efficiency": f,
        "ec_efficiency_given_classes": ec_efficiency_given_classes(b.leak_ec_bits, b.counts, res.options.key_classes),
        "ec_method": res.options.ec_method,
        "ec_bob_accounting": res.options.ec_bob_accounting,
        "finite_key_method": res.options.finite_key,
        "verification_tag_bits": b.verification_tag_bits,
        "auth_key_bits": b.auth_key_bits,
        "classical_bytes_up": ch.bytes_up,
        "classical_bytes_down": ch.bytes_down,
        "round_trips": ch.round_trips,
        "link_time_s": round(ch.link_time_s, 3),
        "key_budget": key_budget(res),
        "estimate": est.as_dict() if est is not None and hasattr(est, "as_dict") else None,
        "counts": b.counts,
        "stage_seconds": stage,
    }


def ec_efficiency_given_classes(leak_bits: int, counts: dict | None, key_classes) -> float | None:
    """``leak / Σ_c n_c h(q_c)``: efficiency against the conditional entropy of the key given the
    public intensity class of each key bit (Slepian–Wolf with side information), ``n_c`` and ``q_c`` the
    key bits and their measured QBER per key class. ``ec_efficiency`` uses ``n h(q)`` of the whole key
    set instead; with key bits of several classes the decoder's per-class priors make that one lower
    (docs/finite-key.md §12). ``None`` when undefined."""
    from .postprocess.reconciliation.result import binary_entropy

    if not counts or "n" not in counts or "m" not in counts or not leak_bits:
        return None
    n, m = np.asarray(counts["n"], dtype=float), np.asarray(counts["m"], dtype=float)
    kc = list(key_classes)
    nk, mk = n[:, kc].sum(axis=0), m[:, kc].sum(axis=0)
    ent = float(sum(nc * binary_entropy(mc / nc) for nc, mc in zip(nk, mk) if nc > 0))
    return float(leak_bits / ent) if ent > 0 else None


def key_budget(res) -> dict[str, int]:
    """Where the sifted key bits went; the entries add up to the sifted key length."""
    b = res.bob
    est = b.estimate
    n = int(b.sifted_key_bits)
    if est is None:
        return {"sifted key (run aborted before estimation)": n}
    s01 = float(sum(est.s1.values())) + (float(sum(est.s0.values())) if est.composable else 0.0)
    parts = {
        "multi-photon and decoy-bound slack": n - s01,
        "phase error (single photons)": s01 - est.entropy_bits,
        **_ec_budget(b, est),
        "error verification": est.ev_tag_bits + est.disclosure_bits,
        "finite-size / smoothing (ε terms)": est.pa_cost_bits,
        "authentication": est.extra_cost_bits,
    }
    out = {k: int(round(v)) for k, v in parts.items()}
    final = int(res.final_key_bits)
    out["final key"] = final
    # what the rounding of each term (and of ℓ) leaves, so that the budget adds up exactly
    out["rounding"] = n - sum(out.values())
    return out


def _ec_budget(b, est) -> dict[str, float]:
    """The error-correction line of the budget, split into what each party disclosed."""
    by = dict(b.leak_ec_bits_by_party or {})
    if set(by) != {"alice", "bob"} or sum(by.values()) != est.leak_ec_bits:
        return {"error correction": est.leak_ec_bits}
    return {"error correction (Alice's messages)": by["alice"], "error correction (Bob's messages)": by["bob"]}


def write_keys(res, out: str | Path) -> list[Path]:
    """``keys/alice.key`` and ``keys/bob.key``: the key bits packed MSB first, zero-padded to a byte.

    Written only after a successful run with verified, matching keys.
    """
    if not res.ok:
        return []
    return [write_party_key(name, key, out) for name, key in (("alice", res.alice.key), ("bob", res.bob.key))]


def party_summary(run, ec: str, finite_key: str, seed: int | None) -> dict:
    """``summary.json`` of one party's run (:class:`~satqkd.protocol.remote.PartyRun`; no key bits)."""
    o = run.outcome
    st = run.stats
    eps_parts = dict(o.epsilon_parts) if o is not None else {}
    est = o.estimate if o is not None else None
    return {
        "role": run.role,
        "peer": run.peer,
        "final_key_bits": int(o.key.size) if run.ok else 0,
        "aborted": not run.ok,
        "abort_reason": run.abort_reason,
        "epsilon": float(sum(eps_parts.values())) if eps_parts else None,
        "epsilon_parts": eps_parts,
        "sifted_key_bits": o.sifted_key_bits if o is not None else 0,
        "qber_key": o.qber if o is not None else None,
        "leak_ec_bits": o.leak_ec_bits if o is not None else 0,
        "leak_ec_bits_by_party": dict(o.leak_ec_bits_by_party) if o is not None and o.leak_ec_bits_by_party
        else {"alice": 0, "bob": 0},
        "ec_efficiency": _party_efficiency(o),
        "verification_tag_bits": o.verification_tag_bits if o is not None else 0,
        "ec_method": ec,
        "finite_key_method": finite_key,
        "auth_key_bits": run.auth_bits_used,
        "auth_pool": {
            "pool_id": run.pool_id,
            "insecure_seeded_pool": run.pool_insecure,
            "offset_before": run.pool_offset_before,
            "offset_after": run.pool_offset_after,
            "bits_skipped_to_meet_peer": run.pool_bits_skipped,
            "bits_reserved_and_discarded": run.pool_bits_reserved,
            "bits_used": run.auth_bits_used,
            "bits_left": run.pool_bits_left,
        },
        "classical_bytes_up": st.bytes_up if st else 0,
        "classical_bytes_down": st.bytes_down if st else 0,
        "messages_up": st.messages_up if st else 0,
        "messages_down": st.messages_down if st else 0,
        "round_trips": st.round_trips if st else 0,
        "link_time_s": round(st.link_time_s, 3) if st else 0.0,
        "estimate": est.as_dict() if est is not None and hasattr(est, "as_dict") else None,
        "counts": o.counts if o is not None else {},
        "seed": seed,
        "stage_seconds": {**{k: round(v, 4) for k, v in run.seconds.items()},
                          **({f"party_{k}": round(v, 4) for k, v in o.stage_seconds.items()} if o is not None else {})},
    }


def _party_efficiency(o) -> float | None:
    """``f = leak / (n · h(QBER))`` of one party's run, with the total leak (both parties)."""
    from .postprocess.reconciliation.result import binary_entropy

    if o is None or not o.sifted_key_bits or not o.qber or not 0 < o.qber < 0.5:
        return None
    return float(o.leak_ec_bits / (o.sifted_key_bits * binary_entropy(o.qber)))


def write_party_key(role: str, key, out: str | Path) -> Path:
    """``out/keys/<role>.key``: one party's verified final key, bits packed MSB first, zero-padded
    to a byte, written atomically (temp file, fsync, rename), mode 0600, in a ``keys`` directory made
    0700."""
    import os

    import numpy as np

    from .keys.store import mkdir_private

    d = mkdir_private(Path(out) / "keys")  # 0700 when made here: nobody else can swap a key file in it
    p = d / f"{role}.key"
    tmp = p.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # a stale temp file (or a planted link) is never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # secret key: owner only, whatever the umask or an older temp file's mode
    with os.fdopen(fd, "wb") as fh:
        fh.write(np.packbits(np.asarray(key).astype(np.uint8)).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(p)
    return p
