"""Final key of the default pass per error-correction method and finite-key bound (README table).

One simulation of the preset pass (``satqkd.simulate(cfg, seed)``, as ``satqkd run --seed S``),
then the two-party post-processing with each EC method and bound, every bit either party
discloses charged. Prints a Markdown table; ``--json PATH`` writes the numbers.

    .venv/bin/python benchmarks/ec_table.py --seed 5 [--ec ldpc cascade hamming] [--bounds chernoff lim2014 paper2017]
        [--accounting sent enumerative]

``--accounting``: how Bob's EC bitmaps are charged (``[security] ec_bob_accounting``).
"""

from __future__ import annotations

import argparse
import json
import time

import satqkd
from satqkd.protocol.session import EC_METHODS, FINITE_KEY_METHODS, postprocess


def measure(seed: int, ecs, bounds, preset: str = "micius-2016-12-19", accountings=("sent",)) -> list[dict]:
    cfg0 = satqkd.load_preset(preset)
    raw = satqkd.simulate(cfg0, seed=seed).raw
    rows = []
    for ec, fk, acc in ((e, b, a) for e in ecs for b in bounds for a in accountings):
        cfg = cfg0.model_copy(deep=True)
        cfg.security.ec_bob_accounting = acc
        t0 = time.perf_counter()
        r = postprocess(raw, cfg, seed=seed, ec=ec, finite_key=fk)
        by = r.bob.leak_ec_bits_by_party
        rows.append({
            "ec": ec, "finite_key": fk, "accounting": acc, "final_key_bits": r.final_key_bits, "keys_match": r.keys_match,
            "abort_reason": r.abort_reason, "leak_ec_bits": r.bob.leak_ec_bits,
            "leak_alice": by.get("alice"), "leak_bob": by.get("bob"), "ec_efficiency": r.ec_efficiency(),
            "round_trips": r.channel.round_trips, "ec_seconds": r.bob.stage_seconds.get("error_correction"),
            "wall_seconds": time.perf_counter() - t0,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| EC method | bound | Bob charged | final key (bits) | leak Alice | leak Bob | f (both) | round trips |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = f"{r['final_key_bits']:,}" if r["keys_match"] else f"0 ({r['abort_reason']})"
        f = f"{r['ec_efficiency']:.3f}" if r["ec_efficiency"] else "—"
        out.append(f"| {r['ec']} | {r['finite_key']} | {r['accounting']} | {key} | {r['leak_alice']:,} | {r['leak_bob']:,} | {f} | {r['round_trips']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--ec", nargs="+", default=list(EC_METHODS), choices=EC_METHODS)
    ap.add_argument("--bounds", nargs="+", default=["chernoff"], choices=FINITE_KEY_METHODS)
    ap.add_argument("--accounting", nargs="+", default=["sent"], choices=["sent", "enumerative"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = measure(a.seed, a.ec, a.bounds, accountings=a.accounting)
    print(markdown(rows))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
