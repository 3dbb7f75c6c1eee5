"""The transmitter's settings per pulse index: intensity class, basis, bit.

Three kinds of source, one interface (:class:`TransmitterSettings`):

* **dense table** — one row per emitted pulse, pulse ``first_pulse_index + row``: columns (or
  datasets / fields) ``intensity`` (class index, signal first, as ``source.intensities``), ``basis``
  (0 = Z, 1 = X), ``bit``. Files: ``.npy`` (structured array with those fields, or an ``(n, 3)``
  integer array), ``.npz``, ``.parquet``, ``.csv``, ``.h5``/``.hdf5``. Emitted counts per slice are
  counted from the table.
* **sparse record** — the same plus a ``pulse_index`` column: only the pulses that matter are listed
  (what a simulator or a satellite that discards unneeded settings keeps). It must then also give
  ``slice_start_s`` and ``slice_emitted`` (pulses sent per slice and intensity) and ``n_pulses``,
  so ``.npz`` or HDF5 only.
* **seeded PRNG** — a ``.json``/``.toml`` description ``{"prng": "splitmix64", "seed": S,
  "first_pulse_index": K0, "n_pulses": N}``: pulse ``k``'s settings come from ``h = splitmix64(S ⊕
  splitmix64(k))`` (Steele, Lea, Flood, OOPSLA 2014): basis = bit 0 of ``h``, bit = bit 1, intensity
  from ``u = (h >> 11) / 2^53`` against the cumulative ``source.probabilities``. Random access, so a
  pass of 2.7e10 pulses needs no table; emitted counts are counted over all pulses (compiled loop).

Scalars (``first_pulse_index``, ``n_pulses``, ``pass_id``, ``mean_range_m``) come from ``.npz``
members, HDF5 attributes, Parquet key-value metadata or the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from .errors import IngestError, require

__all__ = ["TransmitterSettings", "load_transmitter", "prng_settings", "splitmix64_labels", "save_transmitter_npz"]

_LABELS = ("intensity", "basis", "bit")
_SCALARS = ("first_pulse_index", "n_pulses", "pass_id", "mean_range_m")


@dataclass(frozen=True)
class TransmitterSettings:
    """Alice's settings. ``kind`` is ``"dense"``, ``"sparse"`` or ``"prng"``."""

    kind: str
    first_pulse_index: int
    n_pulses: int
    pulse_index: np.ndarray | None = None  # sparse: sorted indices; dense: None (implicit)
    intensity: np.ndarray | None = None
    basis: np.ndarray | None = None
    bit: np.ndarray | None = None
    slice_start_s: np.ndarray | None = None
    slice_emitted: np.ndarray | None = None
    seed: int | None = None
    cum_probabilities: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def stop(self) -> int:
        return self.first_pulse_index + self.n_pulses

    def lookup(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(intensity, basis, bit, known)`` of pulses ``k`` (``known`` False outside the record)."""
        k = np.asarray(k, dtype=np.int64)
        if self.kind == "prng":
            known = (k >= self.first_pulse_index) & (k < self.stop)
            i, b, x = splitmix64_labels(k, self.seed, self.cum_probabilities)
            return i, b, x, known
        if self.kind == "dense":
            pos = k - self.first_pulse_index
            known = (pos >= 0) & (pos < self.n_pulses)
        else:
            pos = np.searchsorted(self.pulse_index, k)
            pos = np.minimum(pos, max(self.pulse_index.size - 1, 0))
            known = (self.pulse_index[pos] == k) if self.pulse_index.size else np.zeros(k.shape, bool)
        pos = np.where(known, pos, 0)
        if self.intensity.size == 0:
            z = np.zeros(k.shape, np.uint8)
            return z, z, z, np.zeros(k.shape, bool)
        return self.intensity[pos], self.basis[pos], self.bit[pos], known

    def alice_record(self, candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Alice's record for the raw format: the sparse record as it is, or the settings of the
        ``candidates`` (sorted unique pulse indices a tag may belong to) that lie in the pulse range."""
        if self.kind == "sparse":
            return self.pulse_index, self.intensity, self.basis, self.bit
        c = np.unique(np.asarray(candidates, dtype=np.int64))
        c = c[(c >= self.first_pulse_index) & (c < self.stop)]
        i, b, x, _ = self.lookup(c)
        return c, i.astype(np.uint8), b.astype(np.uint8), x.astype(np.uint8)

    def slices(self, rep_rate_hz: float, slice_s: float, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(slice_start_s, slice_emitted)``: given (sparse), or counted per ``slice_s`` of pulses."""
        if self.slice_emitted is not None:
            return self.slice_start_s, self.slice_emitted
        per = max(1, int(round(slice_s * rep_rate_hz)))
        n_sl = -(-self.n_pulses // per) if self.n_pulses else 0
        if self.kind == "prng":
            em = _prng_counts(np.int64(self.first_pulse_index), np.int64(self.n_pulses), np.int64(per), np.uint64(self.seed),
                              _thresholds(self.cum_probabilities), n_sl, n_classes)
        else:
            if self.intensity.size and int(self.intensity.max()) >= n_classes:
                raise IngestError(f"transmitter intensity class {int(self.intensity.max())} but the source has {n_classes} intensities")
            sl = np.arange(self.n_pulses, dtype=np.int64) // per
            em = np.bincount(sl * n_classes + self.intensity, minlength=n_sl * n_classes).reshape(n_sl, n_classes)
        start = (self.first_pulse_index + per * np.arange(n_sl)) / rep_rate_hz
        return start, em.astype(np.int64)

    def __repr__(self) -> str:
        return f"TransmitterSettings({self.kind}, pulses {self.first_pulse_index:,} … {self.stop:,})"


# -------------------------------------------------------------------------------------------- PRNG


@numba.njit(cache=True, nogil=True)
def _splitmix(z):  # pragma: no cover - compiled
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _thresholds(cum: np.ndarray) -> np.ndarray:
    """``u = (h >> 11) / 2^53 ≥ cum[c]`` ⇔ ``h >> 11 ≥ ceil(cum[c] · 2^53)`` (scaling by 2^53 is exact):
    integer thresholds, no float conversion per pulse."""
    return np.ceil(np.asarray(cum, dtype=float) * 9007199254740992.0).astype(np.uint64)


@numba.njit(cache=True, nogil=True)
def _label(k, seed, thr):  # pragma: no cover - compiled
    h = _splitmix(seed ^ _splitmix(np.uint64(k)))
    u = h >> np.uint64(11)
    c = 0
    while c < thr.size - 1 and u >= thr[c]:
        c += 1
    return c, np.uint8(h & np.uint64(1)), np.uint8((h >> np.uint64(1)) & np.uint64(1))


@numba.njit(cache=True, nogil=True)
def _labels_kernel(k, seed, cum, oi, ob, ox):  # pragma: no cover - compiled
    for i in range(k.size):
        c, b, x = _label(k[i], seed, cum)
        oi[i] = c
        ob[i] = b
        ox[i] = x


@numba.njit(cache=True, nogil=True)
def _prng_counts(first, n, per, seed, cum, n_sl, n_cls):  # pragma: no cover - compiled
    out = np.zeros((n_sl, n_cls), np.int64)
    cnt = np.zeros(n_cls, np.int64)
    m = cum.size - 1
    for s in range(n_sl):
        cnt[:] = 0
        lo = first + s * per
        hi = min(first + n, lo + per)
        for k in range(lo, hi):
            u = _splitmix(seed ^ _splitmix(np.uint64(k))) >> np.uint64(11)
            c = 0
            while c < m and u >= cum[c]:
                c += 1
            cnt[c] += 1
        out[s, :] = cnt
    return out


def splitmix64_labels(k: np.ndarray, seed: int, cum_probabilities: np.ndarray):
    """``(intensity, basis, bit)`` of pulses ``k`` from the seeded splitmix64 description (module docstring)."""
    k = np.ascontiguousarray(k, dtype=np.int64)
    out = tuple(np.empty(k.size, np.uint8) for _ in range(3))
    _labels_kernel(k.ravel(), np.uint64(seed), _thresholds(cum_probabilities), *out)
    return tuple(o.reshape(k.shape) for o in out)


def prng_settings(seed: int, first_pulse_index: int, n_pulses: int, probabilities, **meta) -> TransmitterSettings:
    p = np.asarray(probabilities, dtype=float)
    if seed < 0 or seed >= 1 << 64:
        raise IngestError(f"prng seed must lie in 0 .. 2^64 − 1; got {seed}")
    if n_pulses < 0:
        raise IngestError(f"n_pulses must be >= 0; got {n_pulses}")
    return TransmitterSettings("prng", int(first_pulse_index), int(n_pulses), seed=int(seed),
                               cum_probabilities=np.cumsum(p) / p.sum(), meta=meta)


# ------------------------------------------------------------------------------------------- files
def _as_label(name: str, a, n: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (n is not None and a.size != n):
        raise IngestError(f"transmitter column {name!r} must be 1-D with one value per pulse")
    if a.size and (not np.issubdtype(a.dtype, np.integer) and not np.issubdtype(a.dtype, np.bool_)):
        if not np.all(np.mod(a, 1) == 0):
            raise IngestError(f"transmitter column {name!r} must hold integers")
    a = a.astype(np.int64)
    hi = 3 if name == "intensity" else 1
    if a.size and (a.min() < 0 or a.max() > hi):
        raise IngestError(f"transmitter column {name!r} must lie in 0..{hi}; found {a.min()}..{a.max()}")
    return a.astype(np.uint8)


def _from_columns(cols: dict, scalars: dict, source: str, first_pulse_index: int | None) -> TransmitterSettings:
    missing = [c for c in _LABELS if c not in cols]
    if missing:
        raise IngestError(f"{source}: transmitter settings lack column(s) {', '.join(missing)} (need intensity, basis, bit)")
    n = int(np.asarray(cols["intensity"]).size)
    lab = [_as_label(c, cols[c], n) for c in _LABELS]
    meta = {k: scalars[k] for k in ("pass_id", "mean_range_m") if k in scalars}
    if "pulse_index" in cols:
        k = np.asarray(cols["pulse_index"]).astype(np.int64)
        if k.size != n:
            raise IngestError(f"{source}: pulse_index must have one value per row")
        if k.size > 1 and np.any(np.diff(k) <= 0):
            o = np.argsort(k, kind="stable")
            k, lab = k[o], [v[o] for v in lab]
            if np.any(np.diff(k) == 0):
                raise IngestError(f"{source}: pulse_index repeats a pulse")
        if "slice_emitted" not in cols or "slice_start_s" not in cols or "n_pulses" not in scalars:
            raise IngestError(
                f"{source}: a sparse transmitter record (with pulse_index) must also give slice_start_s, "
                "slice_emitted and n_pulses (use .npz or HDF5)"
            )
        first = int(scalars.get("first_pulse_index", first_pulse_index if first_pulse_index is not None else (k[0] if k.size else 0)))
        em = np.asarray(cols["slice_emitted"]).astype(np.int64)
        st = np.asarray(cols["slice_start_s"], dtype=float)
        if em.ndim != 2 or em.shape[0] != st.size:
            raise IngestError(f"{source}: slice_emitted must have shape (len(slice_start_s), n_intensities)")
        return TransmitterSettings("sparse", first, int(scalars["n_pulses"]), k, *lab, st, em, meta=meta)
    first = first_pulse_index if first_pulse_index is not None else int(scalars.get("first_pulse_index", 0))
    return TransmitterSettings("dense", int(first), n, None, *lab, meta=meta)


def load_transmitter(path: str | Path, *, probabilities=None, first_pulse_index: int | None = None) -> TransmitterSettings:
    """Transmitter settings from a file (module docstring); ``probabilities`` are needed for a PRNG
    description. Raises :class:`IngestError` on a malformed file."""
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"{p}: no such transmitter file")
    ext = p.suffix.lower()
    src = str(p)
    try:
        if ext in (".json", ".toml"):
            if ext == ".json":
                d = json.loads(p.read_text())
            else:
                import tomllib

                d = tomllib.loads(p.read_text())
            if d.get("prng") != "splitmix64":
                raise IngestError(f"{src}: a transmitter description must say prng = \"splitmix64\"; got {d.get('prng')!r}")
            for key in ("seed", "n_pulses"):
                if key not in d:
                    raise IngestError(f"{src}: prng description lacks {key!r}")
            if probabilities is None:
                raise IngestError("a PRNG transmitter needs the source probabilities (from --config/--preset)")
            first = first_pulse_index if first_pulse_index is not None else int(d.get("first_pulse_index", 0))
            return prng_settings(int(d["seed"]), first, int(d["n_pulses"]), probabilities,
                                 **{k: d[k] for k in ("pass_id", "mean_range_m") if k in d})
        if ext == ".npy":
            a = np.load(p, allow_pickle=False)
            if a.dtype.names:
                cols = {n: a[n] for n in a.dtype.names}
            elif a.ndim == 2 and a.shape[1] == 3:
                cols = dict(zip(_LABELS, a.T))
            else:
                raise IngestError(f"{src}: an .npy transmitter file must be a structured array (intensity, basis, bit[, pulse_index]) or (n, 3)")
            return _from_columns(cols, {}, src, first_pulse_index)
        if ext == ".npz":
            with np.load(p, allow_pickle=False) as z:
                cols = {k: z[k] for k in z.files if z[k].ndim >= 1}
                scalars = {k: z[k].item() for k in z.files if z[k].ndim == 0}
            return _from_columns(cols, scalars, src, first_pulse_index)
        if ext in (".h5", ".hdf5"):
            h5py = require("h5py")
            with h5py.File(p, "r") as f:
                g = f["transmitter"] if "transmitter" in f else f
                cols = {k: g[k][()] for k in g.keys() if isinstance(g[k], h5py.Dataset)}
                scalars = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()}
            return _from_columns(cols, scalars, src, first_pulse_index)
        if ext == ".parquet":
            pq = require("pyarrow.parquet")
            t = pq.read_table(p)
            md = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items() if not k.startswith(b"pandas")}
            scalars = {k: (json.loads(v) if k in _SCALARS else v) for k, v in md.items()}
            return _from_columns({n: t.column(n).to_numpy() for n in t.column_names}, scalars, src, first_pulse_index)
        if ext == ".csv":
            a = np.genfromtxt(p, delimiter=",", names=True, dtype=np.int64)
            return _from_columns({n: np.atleast_1d(a[n]) for n in a.dtype.names}, {}, src, first_pulse_index)
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise IngestError(f"{src}: cannot read transmitter settings: {exc}") from exc
    raise IngestError(f"{src}: unknown transmitter file type {ext!r} (npy, npz, parquet, csv, h5/hdf5, json/toml)")


def save_transmitter_npz(path: str | Path, raw) -> Path:
    """Alice's part of ``raw`` (a :class:`~satqkd.records.RawRecords`) as a sparse transmitter ``.npz``."""
    p = Path(path)
    np.savez(
        p,
        pulse_index=raw.alice_pulse_index, intensity=raw.alice_intensity, basis=raw.alice_basis, bit=raw.alice_bit,
        slice_start_s=raw.slice_start_s, slice_emitted=raw.slice_emitted,
        first_pulse_index=np.int64(raw.meta.get("first_pulse_index", 0)),
        n_pulses=np.int64(raw.meta.get("n_pulses", 0)),
        pass_id=np.asarray(str(raw.meta.get("pass_id", ""))),
        mean_range_m=np.float64(raw.meta.get("mean_range_m", 0.0)),
    )
    return p
