"""satqkd: satellite decoy-state BB84 QKD, end to end (after Liao et al., Nature 549, 43 (2017)).

The face of the package: the few calls a notebook needs. Heavy modules load on first use.

    >>> import satqkd
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> satqkd.find_passes(cfg, days=7)                     # doctest: +SKIP  (a DataFrame, one row per pass)
    >>> pass_ = satqkd.find_pass(cfg)                       # doctest: +SKIP
    >>> sim = satqkd.simulate(cfg, seed=7, pass_spec="best:7d")   # doctest: +SKIP
    >>> sim = satqkd.simulate(cfg, seed=7)                  # doctest: +SKIP
    >>> result = satqkd.postprocess_pass(sim.raw, cfg, seed=7)   # doctest: +SKIP

(``satqkd.postprocess`` is the sub-package of post-processing stages, hence ``postprocess_pass``.)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .config import ConfigError, MissionConfig, list_presets, load_config, load_preset  # noqa: E402

_LAZY = {
    "find_pass": ("satqkd.sky.orbit", "find_pass"),
    "select_pass": ("satqkd.sky.orbit", "select_pass"),
    "sweep": ("satqkd.jobs.sweep", "sweep"),
    "link_series": ("satqkd.sky.link", "link_series"),
    "link_budget_db": ("satqkd.sky.link", "link_budget_db"),
    "simulate": ("satqkd.jobs.pass_simulation", "simulate"),
    "PassSimulation": ("satqkd.jobs.pass_simulation", "PassSimulation"),
    "postprocess_pass": ("satqkd.protocol.session", "postprocess"),
    "PostprocessResult": ("satqkd.protocol.session", "PostprocessResult"),
    "save_raw": ("satqkd.rawio", "save_raw"),
    "load_raw": ("satqkd.rawio", "load_raw"),
    "plan_campaign": ("satqkd.jobs.campaign", "plan_campaign"),
    "run_campaign": ("satqkd.jobs.campaign", "run_campaign"),
    "CampaignResult": ("satqkd.jobs.campaign", "CampaignResult"),
    "run_relay_campaign": ("satqkd.jobs.relay_campaign", "run_relay_campaign"),
    "RelayCampaignResult": ("satqkd.jobs.relay_campaign", "RelayCampaignResult"),
    "plan_network": ("satqkd.jobs.plan", "plan_network"),
    "PlanResult": ("satqkd.jobs.plan", "PlanResult"),
    "progress_bar": ("satqkd.progress", "progress_bar"),
}

#: sub-modules reachable as attributes without an import (``satqkd.report.plot_pass(...)``)
_SUBMODULES = ("report", "warmup", "progress")

__all__ = ["ConfigError", "MissionConfig", "list_presets", "load_config", "load_preset", "find_passes", *_LAZY]


def find_passes(cfg: MissionConfig, days: float | None = None, *, station=None, progress=None):
    """The QKD windows of ``cfg`` as a :class:`pandas.DataFrame`, one row per pass numbered from 1 as
    ``--pass N`` / ``simulate(..., pass_spec=N)``: start and end (UTC), duration, highest elevation,
    range span and ``range_weighted_s`` (what ``--pass best`` ranks by).

    ``days`` overrides ``cfg.passes.search_days`` (from ``search_start_utc``); ``station`` defaults to
    ``cfg.station``; ``progress(done_s, total_s)`` follows the scan. (The list of
    :class:`~satqkd.records.PassGeometry` itself: :func:`satqkd.sky.orbit.passes_of`.)"""
    from .sky.orbit import pass_table, passes_of

    return pass_table(passes_of(cfg, days, station=station, progress=progress))


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"satqkd.{name}")
    raise AttributeError(f"module 'satqkd' has no attribute {name!r}")
