"""Compile satqkd's numba kernels ahead of the first run, and tell whether a run will compile.

Every kernel is ``numba.njit(cache=True)``: numba compiles it on first call and writes the machine
code beside the module (``satqkd/__pycache__/*.nbi, *.nbc``; for a read-only install numba falls back
to its user-wide cache directory, or ``NUMBA_CACHE_DIR``). The first run in a fresh environment
therefore spends about two minutes compiling; later runs load the cache in a second or two.

``python -m satqkd.warmup`` (run by ``make .venv``) pays that once, at install time: it runs the
real pipeline on a short stretch of the Micius pass for each error-correction method, so that the
kernels are compiled for exactly the argument types a run uses.

:func:`cold_kernels` lists the kernels of given modules that a run will compile (no cache entry
yet); the CLI uses it to print "compiling kernels, once" before such a run. A module holds some
kernels a run never calls; after the warm-up (or a run) :func:`record_used` notes beside numba's
cache which kernels got compiled, and only those count from then on.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["cold_kernels", "kernel_modules", "record_used", "warm_up"]

#: the modules a run of ``satqkd run`` / ``satqkd simulate`` calls kernels from (by EC method)
_SIM_MODULES = (
    "satqkd.jobs.pass_simulation",
    "satqkd.quantum.sampler",
    "satqkd.quantum.timing",
    "satqkd.quantum.interp",
    "satqkd.quantum.source",
    "satqkd.quantum.detector",
    "satqkd.sky.apt",
)
_PP_MODULES = ("satqkd.protocol.compress",)
_EC_MODULES = {
    "cascade": ("satqkd.postprocess.reconciliation.cascade",),
    "ldpc": ("satqkd.postprocess.reconciliation.ldpc",),
    "hamming": ("satqkd.postprocess.reconciliation.hamming",),
}


def kernel_modules(ec: str | None = "cascade", simulate: bool = True) -> tuple[str, ...]:
    """Names of the modules whose kernels a run with error correction ``ec`` calls (``None``: no
    post-processing)."""
    mods = list(_SIM_MODULES) if simulate else []
    if ec is not None:
        mods += [*_PP_MODULES, *_EC_MODULES.get(ec, ())]
    return tuple(mods)


def _dispatchers(modules: Iterable[str]):
    from numba.core.registry import CPUDispatcher

    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == name:
                yield obj


def _is_cached(disp) -> bool:
    """Whether numba has a cache index for this kernel (some signature compiled before)."""
    cache = getattr(disp, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    if index is None:  # no caching (cache=False) or a numba without these internals: say "warm"
        return True
    return Path(index).is_file()


def _used_file(disp) -> Path | None:
    path = getattr(getattr(disp, "_cache", None), "_cache_path", None)
    return None if path is None else Path(path) / f"{disp.__module__}.satqkd-used"


def _by_module(modules: Iterable[str]) -> dict[str, list]:
    out: dict[str, list] = {}
    for d in _dispatchers(modules):
        out.setdefault(d.__module__, []).append(d)
    return out


def cold_kernels(modules: Iterable[str] | None = None) -> list[str]:
    """``module.function`` of each kernel in ``modules`` (default: a cascade run's) that a run will
    compile: of the kernels :func:`record_used` noted, those without a cache entry; of a module
    never noted, every kernel without one."""
    mods = kernel_modules() if modules is None else tuple(modules)
    cold = []
    for name, disps in _by_module(mods).items():
        used = None
        f = _used_file(disps[0])
        if f is not None and f.is_file():
            used = set(f.read_text(encoding="utf-8").split())
        cold += [f"{name}.{d.__name__}" for d in disps if (used is None or d.__name__ in used) and not _is_cached(d)]
    return cold


def record_used(modules: Iterable[str]) -> None:
    """Note, beside numba's cache, which kernels of ``modules`` are compiled now (best effort)."""
    for name, disps in _by_module(modules).items():
        f = _used_file(disps[0])
        if f is None:
            continue
        try:
            f.write_text("\n".join(sorted(d.__name__ for d in disps if _is_cached(d))) + "\n", encoding="utf-8")
        except OSError:
            pass


def warm_up(
    ec_methods: Iterable[str] = ("cascade", "ldpc", "hamming"),
    *,
    seconds: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run the pipeline once on ``seconds`` of the Micius pass around culmination per EC method, so
    that numba compiles (and caches) every kernel a run needs. Returns the seconds each step took.

    The data are thrown away; nothing is written but numba's cache.
    """
    import numpy as np

    from . import load_preset
    from .jobs.pass_simulation import simulate
    from .protocol.session import postprocess
    from .sky.orbit import find_pass

    cfg = load_preset("micius-2016-12-19")
    took: dict[str, float] = {}

    def step(name: str, fn, *args, **kw):
        if progress:
            progress(name)
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        took[name] = round(time.perf_counter() - t0, 2)
        return out

    geo = step("orbit", find_pass, cfg)
    c = geo.culmination_index
    dt = float(np.median(np.diff(geo.t_s))) if geo.t_s.size > 1 else 1.0
    half = max(1, int(seconds / dt / 2))
    sl = slice(max(0, c - half), c + half)
    short = _slice_geometry(geo, sl)
    sim = step("simulate", simulate, cfg, seed=1, geometry=short)
    sim.summary()
    sim._timeseries_arrays()
    for ec in ec_methods:
        step(f"postprocess ({ec})", postprocess, sim.raw, cfg, seed=1, ec=ec)
    return took


def _slice_geometry(g, sl: slice):
    from dataclasses import fields, replace

    import numpy as np

    upd = {}
    for f in fields(g):
        v = getattr(g, f.name)
        if isinstance(v, np.ndarray) and v.shape[:1] == g.t_s.shape:
            upd[f.name] = v[sl]
    t0 = float(g.t_s[sl][0])
    upd["t_s"] = g.t_s[sl] - t0
    from datetime import timedelta

    upd["start_utc"] = g.start_utc + timedelta(seconds=t0)
    return replace(g, **upd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    methods = tuple(a for a in args if not a.startswith("-")) or ("cascade", "ldpc", "hamming")
    t0 = time.perf_counter()
    mods = tuple(dict.fromkeys(m for ec in methods for m in kernel_modules(ec)))
    if cold_kernels(mods):
        print("satqkd: compiling kernels, once (about 2 minutes on 2 cores; later runs load them from the cache)", file=sys.stderr, flush=True)
    else:
        print("satqkd: kernels already in the cache; checking them with a short run", file=sys.stderr, flush=True)
    took = warm_up(methods, progress=lambda s: print(f"  {s} ...", file=sys.stderr, flush=True))
    record_used(mods)
    print(f"satqkd: warm-up done in {time.perf_counter() - t0:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in took.items())})", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
