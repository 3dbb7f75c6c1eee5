"""The data handed from one stage to the next.

Plain frozen dataclasses over NumPy arrays: every stage is a pure function from one of these to the
next (``PassGeometry`` → ``LinkSeries`` → ``RawRecords`` → post-processing). Array fields share one
length within a record; times are seconds from ``PassGeometry.start_utc`` unless named otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

__all__ = ["PassGeometry", "LinkSeries", "RawRecords", "INTENSITY_NAMES", "DETECTOR_NAMES"]

#: Index of an intensity class in arrays ordered like ``SourceConfig.intensities`` (signal first).
INTENSITY_NAMES = ("signal", "decoy", "vacuum")
#: Detector index → (basis, bit): 0 = H (Z, 0), 1 = V (Z, 1), 2 = +45° (X, 0), 3 = −45° (X, 1).
DETECTOR_NAMES = ("H", "V", "D", "A")


def _summ(a: np.ndarray) -> str:
    return f"[{a.min():.4g} … {a.max():.4g}]" if a.size else "[]"


@dataclass(frozen=True)
class PassGeometry:
    """Satellite seen from a ground station, sampled on a regular grid over the QKD window.

    ``t_s`` starts at 0 at ``start_utc``. ``range_rate_m_s`` is positive when receding.
    ``sunlit`` tells whether the *satellite* is in sunlight (not in Earth's shadow).
    """

    satellite: str
    station: str
    start_utc: datetime
    t_s: np.ndarray
    elevation_deg: np.ndarray
    azimuth_deg: np.ndarray
    range_m: np.ndarray
    range_rate_m_s: np.ndarray
    sun_altitude_deg: np.ndarray
    sunlit: np.ndarray
    #: Satellite position and velocity in the station's East-North-Up frame (m, m/s), shape (n, 3).
    enu_m: np.ndarray | None = None
    enu_velocity_m_s: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1] - self.t_s[0]) if self.t_s.size else 0.0

    @property
    def culmination_index(self) -> int:
        return int(np.argmax(self.elevation_deg))

    def enu_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Satellite position (m) and velocity (m/s) in the station's East-North-Up frame, shape (n, 3).

        From ``enu_m`` / ``enu_velocity_m_s`` when present; otherwise the position from elevation,
        azimuth and range and the velocity by finite differences (zero for a single step).
        """
        t = np.asarray(self.t_s, dtype=float)
        if self.enu_m is not None:
            enu = np.asarray(self.enu_m, dtype=float)
        else:
            e = np.radians(np.asarray(self.elevation_deg, dtype=float))
            a = np.radians(np.asarray(self.azimuth_deg, dtype=float))
            r = np.asarray(self.range_m, dtype=float)
            enu = np.stack([r * np.cos(e) * np.sin(a), r * np.cos(e) * np.cos(a), r * np.sin(e)], axis=1)
        if enu.ndim != 2 or enu.shape != (t.size, 3):
            raise ValueError(f"geometry.enu_m must have shape ({t.size}, 3); got {enu.shape}")
        if self.enu_velocity_m_s is not None:
            vel = np.asarray(self.enu_velocity_m_s, dtype=float)
            if vel.shape != enu.shape:
                raise ValueError(f"geometry.enu_velocity_m_s must have shape ({t.size}, 3); got {vel.shape}")
        elif t.size >= 2:
            vel = np.gradient(enu, t, axis=0)
        else:
            vel = np.zeros_like(enu)
        return enu, vel

    def __repr__(self) -> str:
        if not self.t_s.size:
            return f"PassGeometry({self.satellite} over {self.station}: empty)"
        i = self.culmination_index
        return (
            f"PassGeometry({self.satellite} over {self.station}, start {self.start_utc:%Y-%m-%d %H:%M:%S} UTC, "
            f"{self.duration_s:.0f} s, range {self.range_m.min() / 1e3:.0f}–{self.range_m.max() / 1e3:.0f} km, "
            f"max elevation {self.elevation_deg[i]:.1f}° at +{self.t_s[i]:.0f} s)"
        )


@dataclass(frozen=True)
class LinkSeries:
    """The optical link along a pass, on the geometry's time grid.

    ``loss_db`` maps each cause to its loss in dB (positive = loss): ``diffraction``, ``pointing``,
    ``atmosphere``, ``turbulence``, ``receiver_optics``. ``link_loss_db`` is their sum: transmitter
    output → in front of the detectors (the paper's Fig. 4 definition; excludes detector efficiency).
    Rates are per detector. ``misalignment`` is the probability e_d that a photon in the matching
    basis lands in the wrong detector.
    """

    t_s: np.ndarray
    range_m: np.ndarray
    elevation_deg: np.ndarray
    loss_db: dict[str, np.ndarray]
    detector_efficiency: float
    background_rate_hz: np.ndarray
    dark_count_hz: float
    misalignment: np.ndarray
    tracking_error_urad: np.ndarray
    #: polarization contrast with and without compensation (for the Fig. 2c plot)
    contrast_compensated: np.ndarray | None = None
    contrast_uncompensated: np.ndarray | None = None

    @property
    def link_loss_db(self) -> np.ndarray:
        return np.sum(np.vstack(list(self.loss_db.values())), axis=0)

    @property
    def transmittance(self) -> np.ndarray:
        """Link transmittance (excludes detector efficiency)."""
        return 10.0 ** (-self.link_loss_db / 10.0)

    def __repr__(self) -> str:
        return (
            f"LinkSeries({self.t_s.size} steps, link loss {_summ(self.link_loss_db)} dB, "
            f"e_d {_summ(self.misalignment)}, background {_summ(self.background_rate_hz)} Hz/detector)"
        )


@dataclass(frozen=True)
class RawRecords:
    """What the two parties hold after the quantum phase of one pass.

    Alice (satellite) knows every pulse she sent; we store only the ones that matter: the pulses
    Bob detected (``alice_*``, sorted by ``alice_pulse_index``) plus per-slice emitted counts per
    intensity. Bob (ground) holds raw time tags on his own clock (``bob_time_ps``, ``bob_detector``)
    and the beacon tags used to synchronise. Pulse ``k`` leaves the satellite at
    ``k / rep_rate_hz`` seconds after the pass start (satellite clock).

    The ``truth_*`` fields are simulation ground truth for tests and diagnostics only; no
    protocol code may read them.
    """

    rep_rate_hz: float
    intensities: np.ndarray  # (k,) mean photon numbers, signal first
    probabilities: np.ndarray  # (k,)
    # Alice
    alice_pulse_index: np.ndarray  # int64
    alice_intensity: np.ndarray  # uint8 index into intensities
    alice_basis: np.ndarray  # uint8: 0 = Z (H/V), 1 = X (D/A)
    alice_bit: np.ndarray  # uint8
    slice_start_s: np.ndarray  # (n_slices,)
    slice_emitted: np.ndarray  # (n_slices, k) int64 pulses sent per intensity
    # Bob
    bob_time_ps: np.ndarray  # int64, Bob's clock, ps since his pass start
    bob_detector: np.ndarray  # uint8, see DETECTOR_NAMES
    beacon_time_ps: np.ndarray  # int64, Bob's clock, detected beacon pulses
    beacon_index: np.ndarray  # int64, beacon pulse number (the beacon carries its count)
    beacon_rate_hz: float
    window_ns: float
    # simulation ground truth (never read by protocol code)
    truth_pulse_index: np.ndarray | None = None  # per Bob tag; -1 for background/dark
    meta: dict = field(default_factory=dict)

    @property
    def n_tags(self) -> int:
        return int(self.bob_time_ps.size)

    def __repr__(self) -> str:
        em = self.slice_emitted.sum(axis=0) if self.slice_emitted.size else np.zeros(0)
        return (
            f"RawRecords({self.alice_pulse_index.size:,} detected pulses on Alice's side, {self.n_tags:,} Bob tags, "
            f"{self.beacon_time_ps.size:,} beacon tags, emitted {', '.join(f'{int(x):.3e}' for x in em)})"
        )
