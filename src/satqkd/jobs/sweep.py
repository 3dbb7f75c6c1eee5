"""Sweeps: one mission parameter over a list of values, or a small grid of several, as a table.

``sweep(cfg, {"receiver.aperture_m": [0.6, 1.0, 1.8]})`` returns a :class:`pandas.DataFrame` with one
row per point: the swept values (columns named by their dotted field), the pass each point flew
(``--pass`` choice, default the first pass of the point's own rules), and the key it gives.

Two models per point:

* ``model="expected"`` (default, ~0.3–1 s a point): the expected count tables of the pass and the
  protocol's finite-key estimation (:func:`satqkd.jobs.fastkey.expected_pass`; within ~5 % of the
  event-level pipeline's final key, see that module);
* ``model="simulate"`` (~10–20 s a point): the event-level simulation and the full post-processing
  (:func:`satqkd.jobs.pass_simulation.simulate`, :func:`satqkd.protocol.session.postprocess`) with ``seed``.

Each point is a whole mission: it is validated as a mission file would be (a bad value raises
:class:`~satqkd.config.ConfigError` naming the field) and finds its own pass when it changes the
orbit, station or pass rules (a what-if orbit is compared on its own ``--pass highest``/``best``, not on
the first pass found). The link of every point uses the same seed, so that points differ by the
parameter only.

Example::

    >>> import satqkd
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> df = satqkd.sweep(cfg, {"receiver.aperture_m": [0.6, 1.0, 1.8]})     # doctest: +SKIP
    >>> df[["receiver.aperture_m", "final_key_bits"]]                         # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..config import DEFAULT_EC_METHOD, ConfigError, MissionConfig, config_from_dict

__all__ = ["sweep", "parse_values", "MAX_SWEEP_POINTS", "SWEEP_COLUMNS", "PASS_KEY"]

#: a sweep is a handful of what-ifs; a larger grid is a campaign or an optimisation (``jobs.optimise``)
MAX_SWEEP_POINTS = 200

#: the result columns after the swept parameters
SWEEP_COLUMNS = ("pass_start_utc", "duration_s", "max_elevation_deg", "min_range_km", "sifted_key_bits",
                 "qber_key", "final_key_bits", "abort_reason")

#: the grid key that sweeps the pass itself (its values are ``--pass`` choices: 1, 2, "best:7d", a date)
PASS_KEY = "pass"

#: tables whose change moves the pass (the geometry is found again for such a point)
_GEOMETRY_TABLES = ("orbit", "station", "passes", "satellite")


def _set(data: dict, path: str, value) -> None:
    keys = path.split(".")
    if not _known_field(keys):
        raise ConfigError(f"sweep parameter {path!r}: not a field of the mission (e.g. receiver.aperture_m; "
                          "see `satqkd presets --show NAME`)")
    d = data
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _known_field(keys: list[str]) -> bool:
    model = MissionConfig
    for k in keys:
        fields = getattr(model, "model_fields", None) if model is not None else None
        if not fields or k not in fields:
            return False
        ann = fields[k].annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
    return True


def _points(grid: Mapping[str, Sequence]) -> list[dict]:
    if not grid:
        raise ConfigError("sweep: give at least one parameter and its values, e.g. {'receiver.aperture_m': [0.6, 1.0]}")
    names = list(grid)
    values = []
    for name in names:
        vals = grid[name]
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence | np.ndarray) or len(vals) == 0:
            raise ConfigError(f"sweep parameter {name!r}: give a non-empty list of values; got {vals!r}")
        values.append([v.item() if isinstance(v, np.generic) else v for v in vals])
    n = int(np.prod([len(v) for v in values]))
    if n > MAX_SWEEP_POINTS:
        raise ConfigError(f"sweep: {n} points is more than {MAX_SWEEP_POINTS} (allowed: ≤ {MAX_SWEEP_POINTS}; a larger "
                          "search is `satqkd plan`/`jobs.optimise`)")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _geometry_key(data: dict) -> str:
    return json.dumps({k: data.get(k) for k in _GEOMETRY_TABLES}, sort_keys=True, default=str)


def sweep(
    cfg: MissionConfig,
    grid: Mapping[str, Sequence],
    *,
    pass_spec: str | int | None = None,
    model: str = "expected",
    seed: int = 0,
    ec: str = DEFAULT_EC_METHOD,
    finite_key: str = "chernoff",
    progress: Callable[[float, float], None] | None = None,
):
    """Run ``cfg`` at every point of ``grid`` (``{"dotted.field": [values, ...], ...}``; several fields:
    their product) and return one row per point as a :class:`pandas.DataFrame`. The key ``"pass"``
    sweeps the pass itself (``{"pass": [1, 2, 3]}``: the first three passes of the search span).

    ``pass_spec`` chooses each point's pass as ``--pass`` does (:func:`satqkd.sky.orbit.select_pass`);
    ``model`` is ``"expected"`` or ``"simulate"`` (module docstring). ``progress(done, total)`` is called
    after each point. A point whose pass cannot be found or whose protocol aborts gets a row with
    ``final_key_bits`` 0 and the reason in ``abort_reason``.
    """
    import pandas as pd

    from .pass_simulation import stage_rngs
    from ..sky.link import link_series
    from ..sky.orbit import parse_pass_spec, select_pass

    if model not in ("expected", "simulate"):
        raise ConfigError(f"sweep: model must be 'expected' or 'simulate'; got {model!r}")
    points = _points(grid)
    base = cfg.model_dump(mode="json", exclude_unset=True)  # defaults re-apply (an orbit keeps its own kind's fields)
    configs = []  # every point validated before any work: a bad value fails at once, naming the field
    for point in points:
        data = json.loads(json.dumps(base))
        for path, value in point.items():
            if path == PASS_KEY:
                parse_pass_spec(value)
            else:
                _set(data, path, value)
        where = ", ".join(f"{k} = {v!r}" for k, v in point.items())
        spec = point.get(PASS_KEY, pass_spec)
        configs.append((config_from_dict(data, f"(sweep point {where})"), spec, _geometry_key(data) + repr(spec)))
    geometries: dict[str, object] = {}
    rows = []
    for i, (point, (pcfg, spec, key)) in enumerate(zip(points, configs)):
        row: dict = dict(point)
        try:
            if key not in geometries:
                geometries[key] = select_pass(pcfg, spec)
            g = geometries[key]
        except ValueError as exc:
            row.update({c: None for c in SWEEP_COLUMNS})
            row.update(final_key_bits=0, abort_reason=f"no pass: {exc}")
            rows.append(row)
            if progress:
                progress(i + 1, len(points))
            continue
        row.update(pass_start_utc=pd.Timestamp(g.start_utc), duration_s=g.duration_s,
                   max_elevation_deg=float(np.max(g.elevation_deg)), min_range_km=float(np.min(g.range_m)) / 1e3)
        if model == "expected":
            from .fastkey import expected_pass

            link = link_series(pcfg, g, stage_rngs(seed)["link"])
            res = expected_pass(pcfg, link, ec=ec, finite_key=finite_key)
            row.update(sifted_key_bits=float(res.sifted_bits), qber_key=float(res.qber),
                       final_key_bits=int(res.final_key_bits), abort_reason=res.abort_reason)
        else:
            from .pass_simulation import simulate
            from ..protocol.session import postprocess

            sim = simulate(pcfg, seed, geometry=g)
            res = postprocess(sim.raw, pcfg, seed=seed, ec=ec, finite_key=finite_key)
            row.update(sifted_key_bits=float(res.bob.sifted_key_bits), qber_key=res.bob.qber,
                       final_key_bits=int(res.final_key_bits), abort_reason=res.abort_reason)
        rows.append(row)
        logging.getLogger(__name__).info("sweep point %d/%d (%s): final key %s bits", i + 1, len(points),
                                         ", ".join(f"{k} = {v!r}" for k, v in point.items()), row["final_key_bits"])
        if progress:
            progress(i + 1, len(points))
    return pd.DataFrame(rows, columns=[*points[0], *SWEEP_COLUMNS])


def parse_values(text: str) -> list:
    """``--param FIELD=VALUES`` values: ``0.6,1.0,1.8`` (a list) or ``0.5:2.0:4`` (4 evenly spaced
    values from 0.5 to 2.0). Numbers become int/float, ``true``/``false`` booleans, anything else a string."""
    text = text.strip()
    parts = text.split(":")
    if len(parts) == 3 and all(_number(p) is not None for p in parts):
        start, stop, count = (_number(p) for p in parts)
        if not isinstance(count, int) or count < 1:
            raise ConfigError(f"sweep values {text!r}: START:STOP:COUNT needs a whole COUNT ≥ 1")
        return [float(v) for v in np.linspace(start, stop, count)]
    out = []
    for p in text.split(","):
        p = p.strip()
        if not p:
            raise ConfigError(f"sweep values {text!r}: an empty value (write 0.6,1.0,1.8)")
        num = _number(p)
        out.append(num if num is not None else {"true": True, "false": False}.get(p.lower(), p))
    return out


def _number(p: str):
    try:
        return int(p)
    except ValueError:
        pass
    try:
        v = float(p)
    except ValueError:
        return None
    return v if np.isfinite(v) else None
