"""``progress=`` callbacks for long calls in a notebook or a script.

satqkd's long calls report progress through a plain callback and never draw anything themselves:

* ``simulate(cfg, seed, progress=f)`` calls ``f(stage, done, total)`` (stages ``orbit``, ``link``,
  ``photons``, ``timing``; ``done`` runs from 0 to ``total``);
* ``run_campaign``, ``run_relay_campaign``, ``plan_campaign``, ``find_passes`` (seconds of the scan)
  and ``sweep`` (points done) call ``f(done, total)``.

:func:`progress_bar` makes such a callback that draws `tqdm.auto` bars (a widget in Jupyter, text in
a terminal), one per stage::

    >>> sim = satqkd.simulate(cfg, seed=7, progress=satqkd.progress_bar())   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable

__all__ = ["progress_bar"]


def progress_bar(desc: str | None = None, **tqdm_kw) -> Callable[..., None]:
    """A callback for any satqkd ``progress=`` argument (2 or 3 arguments) drawing tqdm.auto bars."""
    from tqdm.auto import tqdm

    bars: dict = {}

    def cb(*args) -> None:
        if len(args) == 3:
            stage, done, total = args
        elif len(args) == 2:
            stage, (done, total) = desc, args
        else:
            raise TypeError("progress callbacks take (done, total) or (stage, done, total)")
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=float(total), desc=stage, leave=True, **tqdm_kw)
        bar.total = float(total)
        bar.n = float(done)
        bar.refresh()
        if total and done >= total:
            bar.close()

    return cb
