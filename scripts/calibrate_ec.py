"""Measure the error-correction efficiency f(QBER, n) for the fast expected-key model.

f = leak / (n · h(QBER)) of a real reconciliation run on a binary symmetric channel
(:func:`satqkd.postprocess.benchmark.bench_postprocess`); for LDPC the bits discarded from failed
frames are added to the leak, as the protocol counts them. Prints a Python literal to paste into
``EC_EFFICIENCY`` in ``src/satqkd/jobs/fastkey.py`` (re-run after any change to error correction).

    python scripts/calibrate_ec.py --ec cascade [--seeds 2] [--n 1e4,1e5,1e6,3e6] [--qber 0.005,0.01,0.02,0.04]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from satqkd.postprocess.benchmark import bench_postprocess
from satqkd.postprocess.reconciliation.result import binary_entropy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ec", default="cascade", choices=("cascade", "ldpc", "hamming"))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--n", default="1e4,1e5,1e6,3e6")
    ap.add_argument("--qber", default="0.005,0.01,0.02,0.04")
    a = ap.parse_args(argv)
    ns = [float(x) for x in a.n.split(",")]
    qs = [float(x) for x in a.qber.split(",")]
    rows = []
    t0 = time.perf_counter()
    for n in ns:
        row = []
        for q in qs:
            fs = []
            for s in range(a.seeds):
                out = bench_postprocess(int(n), q, 1000 + s, ec=a.ec)
                r = out["ec"]
                dropped = r["bits"] - out["pa"]["bits_in"]  # LDPC: failed frames' bits, leaked as the protocol counts
                fs.append((r["leak_bits"] + dropped) / (r["bits"] * binary_entropy(r["qber"])))
            row.append(round(float(np.mean(fs)), 3))
            print(f"# n={n:.0e} qber={q}: f={row[-1]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        rows.append(tuple(row))
    print(f'    "{a.ec}": {{\n        "n": {tuple(ns)},\n        "qber": {tuple(qs)},\n        "f": (')
    for r in rows:
        print(f"            {r},")
    print("        ),\n    },")
    return 0


if __name__ == "__main__":
    sys.exit(main())
