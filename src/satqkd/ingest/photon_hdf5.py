"""Photon-HDF5 files (Ingargiola et al., Biophys. J. 110, 26 (2016); photon-hdf5.org, v0.4).

Read with ``h5py``: ``/photon_data/timestamps`` (int64, units of
``/photon_data/timestamps_specs/timestamps_unit`` seconds) and ``/photon_data/detectors`` (the
channel of each timestamp). Several spots (``/photon_data0``, ``/photon_data1`` …) are merged in
time order. Timestamps that are not in time order are sorted (stably).

Written (for tests and for users converting other data) with ``phconvert.hdf5.save_photon_hdf5``
when phconvert is installed, which validates the file against the spec; otherwise with ``h5py``
and the same fields.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import IngestError, require
from .tags import TimeTags

__all__ = ["read_photon_hdf5", "write_photon_hdf5", "HDF5_MAGIC"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_photon_hdf5(path: str | Path) -> TimeTags:
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"{p}: no such file")
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic != HDF5_MAGIC:
        raise IngestError(f"{p}: not an HDF5 file (magic {magic!r}), so not Photon-HDF5")
    h5py = require("h5py")
    try:
        with h5py.File(p, "r") as f:
            groups = sorted(k for k in f.keys() if k.startswith("photon_data"))
            if not groups:
                raise IngestError(f"{p}: no /photon_data group: not a Photon-HDF5 file")
            chans, times, units = [], [], []
            for g in groups:
                pd = f[g]
                for need in ("timestamps", "timestamps_specs/timestamps_unit"):
                    if need not in pd:
                        raise IngestError(f"{p}: /{g}/{need} is missing")
                ts = pd["timestamps"][()]
                if "detectors" in pd:
                    det = pd["detectors"][()]
                else:
                    raise IngestError(f"{p}: /{g}/detectors is missing")
                if det.shape != ts.shape:
                    raise IngestError(f"{p}: /{g}/detectors and timestamps differ in length")
                unit = float(pd["timestamps_specs/timestamps_unit"][()])
                if not unit > 0:
                    raise IngestError(f"{p}: timestamps_unit must be > 0; got {unit}")
                chans.append(det)
                times.append(ts)
                units.append(unit)
            version = f.attrs.get("format_version", b"")
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/... on damaged files
        raise IngestError(f"{p}: cannot read as Photon-HDF5: {exc}") from exc
    out_t = []
    for ts, unit in zip(times, units):
        ps = unit * 1e12
        r = round(ps)
        if r >= 1 and abs(ps - r) < 1e-9 * ps:
            out_t.append(ts.astype(np.int64) * int(r))
        else:
            out_t.append(np.rint(ts.astype(np.float64) * ps).astype(np.int64))
    time_ps = np.concatenate(out_t)
    channel = np.concatenate(chans).astype(np.int16)
    if time_ps.size > 1 and np.any(np.diff(time_ps) < 0):
        o = np.argsort(time_ps, kind="stable")
        time_ps, channel = time_ps[o], channel[o]
    meta = {"format": "photon-hdf5", "spots": len(groups), "timestamps_unit_s": units[0],
            "format_version": version.decode() if isinstance(version, bytes) else str(version)}
    return TimeTags(channel, time_ps, meta)


def write_photon_hdf5(path: str | Path, channel: np.ndarray, time_ps: np.ndarray, *, unit_ps: int = 1,
                      description: str = "satqkd time tags", use_phconvert: bool | None = None) -> Path:
    """Write tags as a single-spot Photon-HDF5 file (``measurement_type`` "generic")."""
    p = Path(path)
    t = np.asarray(time_ps, dtype=np.int64)
    if np.any(t % unit_ps):
        raise ValueError(f"times must be multiples of unit_ps = {unit_ps}")
    ts = t // unit_ps
    det = np.asarray(channel, dtype=np.uint8)
    dets = sorted(int(c) for c in np.unique(det))
    tmp = p.with_name(p.name + ".tmp.h5")
    if use_phconvert is None:
        try:
            import phconvert  # noqa: F401

            use_phconvert = True
        except ImportError:
            use_phconvert = False
    duration = float((t[-1] - t[0]) * 1e-12) if t.size else 0.0
    if use_phconvert:
        import phconvert as phc

        data = dict(
            description=description,
            acquisition_duration=duration,
            photon_data=dict(
                timestamps=ts,
                detectors=det,
                timestamps_specs=dict(timestamps_unit=unit_ps * 1e-12),
                measurement_specs=dict(measurement_type="generic", detectors_specs=dict(spectral_ch1=np.asarray(dets, dtype=np.uint8))),
            ),
            setup=dict(num_pixels=len(dets), num_spots=1, num_spectral_ch=1, num_polarization_ch=1, num_split_ch=1,
                       modulated_excitation=False, lifetime=False, excitation_alternated=[False],
                       excitation_cw=[False]),
            identity=dict(author="satqkd", author_affiliation="satqkd"),
        )
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # phconvert prints "Saving: …"
            phc.hdf5.save_photon_hdf5(data, h5_fname=str(tmp), overwrite=True, close=True, validate=True,
                                      require_setup=False)
    else:
        h5py = require("h5py")
        with h5py.File(tmp, "w") as f:
            f.attrs["format_name"] = np.bytes_("Photon-HDF5")
            f.attrs["format_version"] = np.bytes_("0.4")
            f["description"] = np.bytes_(description)
            f["acquisition_duration"] = duration
            pd = f.create_group("photon_data")
            pd["timestamps"] = ts
            pd["detectors"] = det
            pd["timestamps_specs/timestamps_unit"] = unit_ps * 1e-12
            pd["measurement_specs/measurement_type"] = np.bytes_("generic")
    tmp.replace(p)
    return p
