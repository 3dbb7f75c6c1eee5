"""A compiled ``np.interp`` for one value on a uniform grid, shared by the sampler and the clock fit."""

from __future__ import annotations

import numba

__all__ = ["interp_uniform"]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def interp_uniform(x, g, f, slope, inv_h):  # pragma: no cover - compiled
    """``np.interp(x, g, f)`` for one value on an (approximately) uniform grid ``g`` of spacing
    ``1 / inv_h``, ``slope`` = ``np.diff(f) / np.diff(g)``: same interval choice and arithmetic as
    NumPy's ``arr_interp`` for finite tables (its retry for non-finite slopes is left out)."""
    n = g.size
    if x > g[n - 1]:
        return f[n - 1]
    if x < g[0]:
        return f[0]
    j = int((x - g[0]) * inv_h)
    if j > n - 1:
        j = n - 1
    if j < 0:
        j = 0
    while j < n - 1 and g[j + 1] <= x:
        j += 1
    while j > 0 and g[j] > x:
        j -= 1
    if j == n - 1 or g[j] == x:
        return f[j]
    return slope[j] * (x - g[j]) + f[j]
