"""Mission configuration: validated pydantic models, TOML loading and the shipped presets.

Every physical quantity carries its unit in its name. Numbers the paper gives are cited with
"[paper]"; numbers it does not give are explicit *calibrated* fields (say so in their description)
and are documented in ``docs/calibration.md``. Unknown fields are rejected so that a typo never
silently falls back to a default.

Example::

    >>> import satqkd
    >>> cfg = satqkd.load_preset("micius-2016-12-19")
    >>> cfg.source.intensities
    [0.8, 0.1, 0.0]
"""

from __future__ import annotations

import functools
import threading
import tomllib
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

__all__ = [
    "DEFAULT_EC_METHOD",
    "ConfigError",
    "MissionConfig",
    "load_config",
    "load_preset",
    "list_presets",
    "is_paper_pass",
]

#: Error correction used when none is named: one-way rate-adaptive LDPC. Chosen by measurement —
#: the longest final key on the default pass with every bit either party discloses charged (README,
#: "Error correction"; ``benchmarks/ec_table.py``): Bob's Cascade outcomes and Winnow bitmaps cost as
#: much as Alice's parities, LDPC's only costs Bob's success flags.
DEFAULT_EC_METHOD = "ldpc"
#: the error-correction methods and finite-key bounds a run may name (``--ec``, ``--finite-key``)
EC_METHODS = ("cascade", "ldpc", "hamming")
FINITE_KEY_METHODS = ("chernoff", "lim2014", "paper2017")


class ConfigError(ValueError):
    """A configuration could not be read or validated; the message names the field and the allowed range."""


_NESTING = threading.local()


class _Model(BaseModel):
    """Every config table: unknown fields rejected, finite numbers only (no nan/inf), and validation on
    construction *and* on assignment, both raising :class:`ConfigError` with the CLI's message, e.g.
    ``cfg.receiver.aperture_m = -1`` → ``ConfigError: ... aperture_m: Input should be greater than 0 (allowed: gt 0)``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    def __init__(self, **data):
        # nested tables are built through __init__ too: only the outermost call turns pydantic's
        # ValidationError (whose locations pydantic joins up) into one ConfigError
        depth = getattr(_NESTING, "depth", 0)
        _NESTING.depth = depth + 1
        try:
            super().__init__(**data)
        except ValidationError as err:
            if depth:
                raise
            raise ConfigError(_describe(err, f"({type(self).__name__})")) from None
        finally:
            _NESTING.depth = depth

    #: where this table sits in a MissionConfig ("receiver"), for messages about assignments
    _loc: str = PrivateAttr("")

    def __eq__(self, other) -> bool:  # the fields only (not where the table sits)
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            return super().__setattr__(name, value)
        before = dict(self.__dict__)
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            # a cross-field (model) check fails after pydantic has stored the value: put it back
            self.__dict__.clear()
            self.__dict__.update(before)
            where = f"{self._loc}." if self._loc else ""
            raise ConfigError(_describe(err, f"(setting {where}{name} = {value!r})", prefix=self._loc)) from None


def _utc(v: datetime) -> datetime:
    return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)


_TLE_FIELDS = ("tle_line1", "tle_line2")
_CIRCULAR_FIELDS = ("altitude_km", "inclination_deg", "raan_deg", "arg_latitude_deg", "epoch_utc")


class OrbitConfig(_Model):
    """The satellite's orbit: a two-line element set (SGP4) or an ideal circular orbit for what-if studies."""

    kind: Literal["tle", "circular"] = "tle"
    tle_line1: str | None = Field(None, description="TLE line 1 (kind = 'tle')")
    tle_line2: str | None = Field(None, description="TLE line 2 (kind = 'tle')")
    altitude_km: float | None = Field(None, gt=150, le=40_000, description="circular orbit altitude")
    inclination_deg: float | None = Field(None, ge=0, le=180, description="circular orbit inclination")
    raan_deg: float = Field(0.0, ge=0, lt=360, description="right ascension of the ascending node at epoch")
    arg_latitude_deg: float = Field(0.0, ge=0, lt=360, description="argument of latitude at epoch")
    epoch_utc: datetime | None = Field(None, description="epoch of the circular orbit elements")

    @model_validator(mode="after")
    def _check_kind(self) -> "OrbitConfig":
        # a field of the other kind never passes silently (e.g. a mission file on a TLE preset that
        # sets altitude_km without kind = "circular": the TLE would fly and the altitude be ignored)
        other = _CIRCULAR_FIELDS if self.kind == "tle" else _TLE_FIELDS
        # (compared with the defaults, so that a full dump of a valid orbit validates again)
        stray = [f for f in other if getattr(self, f) != type(self).model_fields[f].default]
        if stray:
            need = ('kind = "circular" (with altitude_km, inclination_deg and epoch_utc)' if self.kind == "tle"
                    else 'kind = "tle"')
            raise ValueError(f"{', '.join(stray)}: not used by an orbit of kind = {self.kind!r}; set {need} "
                             "or remove the field")
        if self.kind == "tle":
            for name in ("tle_line1", "tle_line2"):
                line = getattr(self, name)
                if not line or len(line.strip()) < 69 or line.strip()[0] != name[-1]:
                    raise ValueError(f"{name} must be a 69-character TLE line starting with '{name[-1]}'")
            l1, l2 = self.tle_line1.strip(), self.tle_line2.strip()
            try:  # the fixed columns the orbit and the work predictor read
                float(l1[18:32])
                inc, n = float(l2[8:16]), float(l2[52:63])
                float("0." + l2[26:33].strip())
            except ValueError:
                raise ValueError("TLE fields must be numbers: tle_line1 epoch (columns 19–32), tle_line2 inclination (9–16), "
                                 "eccentricity (27–33) and mean motion (53–63)") from None
            if not 0.0 <= inc <= 180.0:
                raise ValueError(f"tle_line2 inclination {inc:g}° must lie in [0, 180]")
            if not 0.05 <= n <= 17.0:
                raise ValueError(f"tle_line2 mean motion {n:g} rev/day must lie in [0.05, 17] (an orbit above ~150 km)")
        else:
            for name in ("altitude_km", "inclination_deg", "epoch_utc"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name} is required for a circular orbit")
        if self.epoch_utc is not None:
            self.__dict__["epoch_utc"] = _utc(self.epoch_utc)
        return self

    @model_validator(mode="after")
    def _check_tle_columns(self) -> "OrbitConfig":
        # every fixed column and the checksums (satqkd.sky.tle.check_tle): a bad line is refused
        # naming the line and the column, e.g. "TLE line 1, column 62: must be blank ... (a field is shifted)"
        if self.kind == "tle":
            from satqkd.sky.tle import check_tle

            check_tle(self.tle_line1, self.tle_line2)
        return self


class LightDomeConfig(_Model):
    """One city light dome seen from a station (same form as the [background] city term)."""

    azimuth_deg: float = Field(..., ge=0, lt=360, description="direction of the city")
    rate_hz: float = Field(..., ge=0, le=1e8, description="counts per detector looking at the city near the horizon")
    width_deg: float = Field(60.0, gt=0, le=360, description="azimuthal 1/e half-width")
    scale_height_deg: float = Field(15.0, gt=0, le=90, description="elevation 1/e scale")


class GroundStationConfig(_Model):
    name: str = Field(..., min_length=1)
    latitude_deg: float = Field(..., ge=-90, le=90)
    longitude_deg: float = Field(..., ge=-180, le=180)
    altitude_m: float = Field(0.0, ge=-500, le=9000)
    visibility_m: float | None = Field(
        None, ge=50, le=500_000, description="this station's ground visibility for atmosphere.model = 'physical' (default: atmosphere.visibility_m)"
    )
    light_domes: list[LightDomeConfig] | None = Field(
        None, description="this station's city light domes; if set they replace [background]'s city_* dome (which is Xinglong's)"
    )


class PassConfig(_Model):
    """Operating rules that turn geometry into a QKD window [paper: night only, ~15° rising to 10° setting]."""

    search_start_utc: datetime = Field(..., description="start of the pass search")
    search_days: float = Field(1.0, gt=0, le=366, description="length of the pass search")
    night_only: bool = True
    max_sun_altitude_deg: float = Field(-12.0, ge=-90, le=90, description="'night' means the Sun is below this")
    start_elevation_deg: float = Field(15.0, ge=0, lt=90, description="QKD starts when the rising satellite passes this")
    end_elevation_deg: float = Field(10.0, ge=0, lt=90, description="QKD ends when the setting satellite passes this")
    max_range_km: float | None = Field(
        None, gt=0, le=50_000, description="if set, QKD only while the range is below this (the paper's data: < 1200 km)"
    )
    time_step_s: float = Field(1.0, gt=0, le=60, description="geometry sampling step")
    satellite_in_shadow: bool = Field(
        False, description="QKD only while the satellite is in Earth's shadow: the window is cut to its eclipsed part (off: the paper's rules)"
    )

    @field_validator("search_start_utc")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)


class TransmitterConfig(_Model):
    """Satellite optical head [paper: 300 mm Cassegrain, ~10 µrad far-field divergence, ~1.2 µrad tracking]."""

    aperture_m: float = Field(0.3, gt=0, le=5)
    divergence_urad: float = Field(
        10.0, gt=0, le=10_000, description="full far-field angle at 1/e of peak intensity (our reading of the paper's '10 µrad')"
    )
    optics_efficiency: float = Field(1.0, gt=0, le=1, description="transmitter optics after the intensity calibration point")


class AptConfig(_Model):
    """Cascaded acquisition, pointing and tracking loop [paper: gimbal + 40 Hz camera; FSM + 2 kHz camera]."""

    coarse_rate_hz: float = Field(40.0, gt=0, le=10_000)
    coarse_noise_urad: float = Field(20.0, ge=0, le=10_000, description="rms centroid noise of the coarse camera")
    coarse_bandwidth_hz: float = Field(2.0, gt=0, le=1000)
    fine_rate_hz: float = Field(2000.0, gt=0, le=100_000)
    fine_noise_urad: float = Field(1.0, ge=0, le=1000, description="rms centroid noise of the fine camera (calibrated)")
    fine_bandwidth_hz: float = Field(150.0, gt=0, le=10_000)
    fine_range_urad: float = Field(1600.0, gt=0, le=100_000, description="fast-steering-mirror range [paper: 1.6 mrad]")
    jitter_urad: float = Field(0.5, ge=0, le=1000, description="rms platform micro-vibration seen by the loop (calibrated)")
    jitter_corner_hz: float = Field(50.0, gt=0, le=10_000, description="corner of the vibration spectrum (calibrated)")
    rate_jitter_urad_per_deg_s: float = Field(
        2.0, ge=0, le=1000, description="extra vibration rms per °/s of slew: why tracking is worst near culmination (calibrated)"
    )
    point_ahead_residual_fraction: float = Field(
        0.0, ge=0, le=1, description="share of the point-ahead angle 2v⊥/c left uncorrected, a pointing bias (0: corrected open loop; satqkd.sky.beacon)"
    )

    @model_validator(mode="after")
    def _check_loop(self) -> "AptConfig":
        # the conditions of satqkd.sky.apt.loop_gains, checked when the config is read
        if self.coarse_rate_hz > self.fine_rate_hz:
            raise ValueError(f"coarse_rate_hz = {self.coarse_rate_hz:g} must be ≤ fine_rate_hz = {self.fine_rate_hz:g}")
        if self.coarse_bandwidth_hz > self.coarse_rate_hz / 5.0:
            raise ValueError(f"coarse_bandwidth_hz = {self.coarse_bandwidth_hz:g} must be ≤ coarse_rate_hz/5 = {self.coarse_rate_hz / 5.0:g}")
        if self.fine_bandwidth_hz > self.fine_rate_hz / 2.0:
            raise ValueError(f"fine_bandwidth_hz = {self.fine_bandwidth_hz:g} must be ≤ fine_rate_hz/2 = {self.fine_rate_hz / 2.0:g}")
        return self


class AtmosphereConfig(_Model):
    """Extinction and turbulence. The paper gives no zenith numbers: these are calibrated fields."""

    model: Literal["calibrated", "physical"] = Field(
        "calibrated",
        description="'calibrated': zenith_loss_db × air mass; 'physical': Rayleigh + aerosol (visibility) + absorption (satqkd.sky.atmosphere)",
    )
    zenith_loss_db: float = Field(1.0, ge=0, le=30, description="clear-sky zenith extinction at the QKD wavelength (calibrated)")
    visibility_m: float = Field(23_000.0, ge=50, le=500_000, description="ground visibility at the station (model 'physical'; 23 km = 'clear')")
    aerosol_scale_height_m: float = Field(1200.0, gt=0, le=20_000, description="aerosol scale height (model 'physical'; Elterman 1968)")
    aerosol_model: Literal["kim", "kruse"] = Field("kim", description="wavelength exponent of the aerosol extinction (model 'physical')")
    absorption_optical_depth: float = Field(
        0.0, ge=0, le=5, description="zenith optical depth of molecular absorption lines at the wavelength (model 'physical'; assumed)"
    )
    r0_zenith_m: float = Field(0.05, gt=0, le=1, description="Fried parameter at zenith at 500 nm (calibrated)")
    turbulence_fading: bool = Field(False, description="draw log-normal scintillation per time step (seeded)")
    scintillation_index_zenith: float = Field(0.05, ge=0, le=2)
    turbulence_profile: Literal["fixed", "hufnagel_valley"] = Field(
        "fixed",
        description="'fixed': r0_zenith_m and scintillation_index_zenith; 'hufnagel_valley': both from the Cn² profile (satqkd.sky.turbulence)",
    )
    hv_wind_speed_m_s: float = Field(21.0, ge=0, le=100, description="Hufnagel-Valley rms high-altitude wind (HV 5/7: 21 m/s)")
    hv_ground_cn2_m23: float = Field(1.7e-14, ge=0, le=1e-11, description="Hufnagel-Valley ground-level Cn² (HV 5/7: 1.7e-14 m^-2/3)")


class ReceiverConfig(_Model):
    """Ground telescope and decoder [paper: 1 m RC, f = 10 m, optics incl. fiber coupling ~16 %]."""

    aperture_m: float = Field(1.0, gt=0, le=20)
    focal_length_m: float = Field(10.0, gt=0, le=1000)
    optics_efficiency: float = Field(0.16, gt=0, le=1, description="telescope + decoder + fiber coupling [paper: ~16 %]")
    field_of_view_urad: float = Field(
        20.0, gt=0, le=10_000, description="full angle accepted by the fiber/detector (calibrated); sets seeing loss"
    )
    filter_width_nm: float = Field(1.0, gt=0, le=1000, description="spectral filter width; counts scattered sunlight when background.sunlight (assumed)")
    ao_strehl_ratio: float | None = Field(
        None, gt=0, le=1, description="adaptive-optics Strehl ratio: that share of the light is a diffraction-limited core (satqkd.sky.link.ao_coupling_loss_db); unset = no AO"
    )


class DetectorConfig(_Model):
    """Four silicon SPADs of the passive BB84 decoder [paper: 50 %, dark < 25 Hz, jitter 350 ps]."""

    count: Literal[4] = 4
    efficiency: float = Field(0.5, gt=0, le=1)
    dark_count_hz: float = Field(25.0, ge=0, le=1e7)
    jitter_ps: float = Field(350.0, ge=0, le=1e5)
    dead_time_ns: float = Field(50.0, ge=0, le=1e6, description="not in the paper: a typical Si SPAD value")


class BackgroundConfig(_Model):
    """Stray light reaching the detectors (calibrated; the paper only says night, filters, Beijing light)."""

    sky_rate_hz: float = Field(100.0, ge=0, le=1e8, description="night-sky counts per detector toward zenith")
    city_rate_hz: float = Field(200.0, ge=0, le=1e8, description="extra counts per detector looking at the city near the horizon")
    city_azimuth_deg: float = Field(240.0, ge=0, lt=360, description="direction of the city light dome (Beijing from Xinglong)")
    city_width_deg: float = Field(60.0, gt=0, le=360, description="azimuthal 1/e half-width of the city light dome")
    city_scale_height_deg: float = Field(15.0, gt=0, le=90, description="elevation 1/e scale of the city light dome")
    moon: bool = Field(False, description="add moonlight (Krisciunas & Schaefer 1991) scaled by sky_rate_hz / dark sky (satqkd.sky.background)")
    moon_extinction_mag: float = Field(0.172, ge=0, le=2, description="extinction coefficient k of the moonlight model (mag per air mass)")
    sunlight: bool = Field(False, description="add scattered sunlight: day sky and twilight from the Sun's position (satqkd.sky.daylight)")
    aerosol_albedo: float = Field(0.9, ge=0, le=1, description="aerosol single-scattering albedo of the sunlight model")
    aerosol_asymmetry: float = Field(0.7, gt=-1, lt=1, description="aerosol Henyey-Greenstein asymmetry g of the sunlight model")


class SourceConfig(_Model):
    """Decoy-state BB84 source [paper: 848.6 nm, 100 MHz, 0.2 ns, μ = 0.8/0.1/0, p = 0.5/0.25/0.25, < 5 %]."""

    wavelength_nm: float = Field(848.6, gt=100, le=3000)
    rep_rate_hz: float = Field(100e6, gt=0, le=100e9)
    pulse_width_ns: float = Field(0.2, gt=0, le=100)
    intensities: list[float] = Field([0.8, 0.1, 0.0], min_length=2, max_length=4, description="mean photon numbers, signal first")
    probabilities: list[float] = Field([0.5, 0.25, 0.25], min_length=2, max_length=4)
    intensity_fluctuation: float = Field(0.05, ge=0, lt=0.5, description="relative half-width of the intensity band")

    @model_validator(mode="after")
    def _check(self) -> "SourceConfig":
        if len(self.intensities) != len(self.probabilities):
            raise ValueError("intensities and probabilities must have the same length")
        if any(m < 0 or m > 100 for m in self.intensities):
            raise ValueError("intensities must lie in [0, 100] photons per pulse")
        if any(p <= 0 for p in self.probabilities) or abs(sum(self.probabilities) - 1) > 1e-9:
            raise ValueError("probabilities must be positive and sum to 1")
        if list(self.intensities) != sorted(self.intensities, reverse=True) or len(set(self.intensities)) != len(self.intensities):
            raise ValueError("intensities must be distinct and in decreasing order (signal first)")
        return self


class TimingConfig(_Model):
    """Beacon-based synchronisation [paper: 532 nm, ~10 kHz, 0.9 ns pulses, 0.529 ns jitter, 2 ns window]."""

    beacon_rate_hz: float = Field(10e3, gt=0, le=1e8)
    beacon_pulse_ns: float = Field(0.9, gt=0, le=1e3)
    beacon_detection_probability: float = Field(0.5, gt=0, le=1, description="chance a beacon pulse is time-tagged (calibrated)")
    beacon_detection_model: Literal["constant", "link_budget"] = Field(
        "constant",
        description="'constant': beacon_detection_probability for every pulse; 'link_budget': from the 532 nm beacon's own "
        "link budget along the pass (satqkd.sky.beacon), so synchronisation can fail at low elevation or in haze",
    )
    beacon_power_w: float = Field(0.01, gt=0, le=100, description="beacon average power (link_budget model; assumed)")
    beacon_timing_split: float = Field(0.5, gt=0, le=1, description="share of the received beacon sent to the timing detector (assumed)")
    beacon_attenuation_db: float = Field(50.0, ge=0, le=200, description="attenuator in front of the timing detector (assumed)")
    beacon_detector_efficiency: float = Field(0.5, gt=0, le=1, description="timing detector efficiency at 532 nm (assumed)")
    sync_jitter_ns: float = Field(0.529, ge=0, le=1e3)
    window_ns: float = Field(2.0, gt=0, le=1e3)
    clock_offset_ns: float = Field(
        12_345.6, ge=-1e12, le=1e12, description="ground clock minus satellite clock at pass start (|offset| ≤ 1000 s keeps ps tags exact)"
    )
    clock_drift_ppb: float = Field(30.0, ge=-1e5, le=1e5, description="fractional frequency offset of the ground clock")


class PolarizationConfig(_Model):
    """Polarization reference frame and its compensation [paper Fig. 2c: 150:1 → 0 without, 280:1 average with HWP]."""

    intrinsic_contrast: float = Field(330.0, gt=1, le=1e6, description="contrast of the optics with frames aligned (calibrated)")
    compensation: Literal["hwp", "none"] = "hwp"
    hwp_step_deg: float = Field(0.1, gt=0, le=45, description="motorised half-wave-plate step")
    hwp_error_deg: float = Field(1.5, ge=0, le=45, description="rms error of the predicted rotation angle (calibrated)")
    hwp_error_correlation_s: float = Field(20.0, gt=0, le=3600, description="correlation time of the predicted-angle error")
    initial_offset_deg: float = Field(-3.4, ge=-90, le=90, description="frame misalignment left by the static set-up at pass start")
    nasmyth: bool = Field(True, description="receiver decoder sits on a Nasmyth/Coudé port (frame turns with the mount)")


class ClassicalLinkConfig(_Model):
    """RF classical channel [paper: 1 Mbit/s up, 4 Mbit/s down]."""

    uplink_bps: float = Field(1e6, gt=0, le=1e12)
    downlink_bps: float = Field(4e6, gt=0, le=1e12)


class SecurityConfig(_Model):
    epsilon: float = Field(1e-9, gt=0, lt=1, description="total failure probability of the key [paper: 1e-9]")
    epsilon_cor: float = Field(1e-12, gt=0, lt=1, description="share of epsilon for correctness (error verification)")
    qber_abort: float = Field(0.11, gt=0, lt=0.5, description="abort when the sifted QBER exceeds this")
    key_intensities: Literal["signal", "signal+decoy", "all"] = Field(
        "signal+decoy", description="sifted bits that form the key: signal only, signal + decoy, or all intensities (docs/finite-key.md §1)"
    )
    intensity_model: Literal["fixed_offset", "per_pulse", "iid_uniform"] = Field(
        "per_pulse",
        description="how the intensity band enters the decoy bounds: per_pulse (any per-pulse/per-slice fluctuation in the band, "
        "may be known to Eve), fixed_offset (one constant unknown offset), iid_uniform (independent U[-δ, δ] per pulse, "
        "unknown to Eve) (docs/finite-key.md §7)",
    )
    decoy_statistics: Literal["per_count", "joint"] = Field(
        "joint",
        description="per_count: every count widened on its own; joint: also one Bernstein bound on the single-photon "
        "combination of counts (needs a vacuum third intensity) (docs/finite-key.md §3)",
    )
    ec_bob_accounting: Literal["sent", "enumerative"] = Field(
        "sent",
        description="how Bob's error-correction bitmaps (Cascade outcomes, Winnow mismatches, LDPC failure flags) are "
        "charged: every bit sent, or their enumerative description length (sound and tighter for Cascade and Winnow; "
        "docs/finite-key.md §12)",
    )

    @model_validator(mode="after")
    def _check_split(self) -> "SecurityConfig":
        if not self.epsilon_cor < self.epsilon:
            raise ValueError(f"epsilon_cor = {self.epsilon_cor:g} must be < epsilon = {self.epsilon:g} (it is a share of epsilon)")
        return self


class SimulationConfig(_Model):
    slice_s: float = Field(0.01, gt=0, le=10, description="time slice with constant link statistics")
    progress_every_s: float = Field(1.0, gt=0, le=3600)


class AttackConfig(_Model):
    """An eavesdropper on the quantum channel, for security demonstrations (``satqkd.quantum.attacks``).

    ``intercept_resend``: Eve measures a fraction of the pulses in a random basis and resends one photon
    in the state she found. ``pns``: photon-number splitting (Brassard, Lütkenhaus, Mor, Sanders,
    PRL 85, 1330 (2000)) tuned so that Bob's signal gain is the honest one. ``beam_splitting``: Eve
    replaces the lossy channel by a lossless one and keeps the lost part (Bob's statistics unchanged).
    """

    kind: Literal["none", "intercept_resend", "pns", "beam_splitting"] = Field("none", description="attack model; 'none' = honest channel")
    fraction: float = Field(1.0, ge=0, le=1, description="fraction of the pulses Eve attacks (each pulse independently)")


class MissionConfig(_Model):
    """A whole mission: one satellite, one ground station, one pass search and everything along the link."""

    name: str = Field(..., min_length=1)
    description: str = ""
    satellite: str = "Micius"
    orbit: OrbitConfig
    station: GroundStationConfig
    passes: PassConfig
    transmitter: TransmitterConfig = TransmitterConfig()
    apt: AptConfig = AptConfig()
    atmosphere: AtmosphereConfig = AtmosphereConfig()
    receiver: ReceiverConfig = ReceiverConfig()
    detectors: DetectorConfig = DetectorConfig()
    background: BackgroundConfig = BackgroundConfig()
    source: SourceConfig = SourceConfig()
    timing: TimingConfig = TimingConfig()
    polarization: PolarizationConfig = PolarizationConfig()
    classical: ClassicalLinkConfig = ClassicalLinkConfig()
    security: SecurityConfig = SecurityConfig()
    simulation: SimulationConfig = SimulationConfig()
    second_station: GroundStationConfig | None = Field(None, description="relay presets: the far ground station")
    attack: AttackConfig = Field(AttackConfig(), description="eavesdropper on the quantum channel (security demonstrations)")

    @model_validator(mode="after")
    def _check_timing(self) -> "MissionConfig":
        for name in type(self).model_fields:
            table = getattr(self, name)
            if isinstance(table, _Model):
                table._loc = name
        period_ns = 1e9 / self.source.rep_rate_hz
        if self.timing.window_ns > period_ns:
            raise ValueError(f"timing.window_ns = {self.timing.window_ns:g} must be ≤ the pulse period 1e9/source.rep_rate_hz = {period_ns:g} ns")
        if self.source.pulse_width_ns > period_ns:
            raise ValueError(f"source.pulse_width_ns = {self.source.pulse_width_ns:g} must be ≤ the pulse period 1e9/source.rep_rate_hz = {period_ns:g} ns")
        if self.timing.beacon_rate_hz > self.source.rep_rate_hz:
            raise ValueError(f"timing.beacon_rate_hz = {self.timing.beacon_rate_hz:g} must be ≤ source.rep_rate_hz = {self.source.rep_rate_hz:g}")
        return self

    def __repr__(self) -> str:
        # one short line (pydantic's default prints every field: ~3 KB); the fields: .model_dump()
        far = f" + {self.second_station.name}" if self.second_station is not None else ""
        attack = f", attack={self.attack.kind}" if self.attack.kind != "none" else ""
        return f"MissionConfig(name={self.name!r}, satellite={self.satellite!r}, station={self.station.name!r}{far}{attack})"

    __str__ = __repr__



def _describe(err: ValidationError, source: str, prefix: str = "") -> str:
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(e["loc"])) or "(top level)"
        msg = e["msg"]
        ctx = e.get("ctx") or {}
        bounds = [f"{k.replace('_', ' ')} {v}" for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")]
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `satqkd presets --show NAME`)"
        elif e["type"] == "finite_number":
            msg = "must be a finite number (no nan or inf)"
        elif e["type"] == "value_error":  # our cross-field checks: the message names the fields
            msg = msg.removeprefix("Value error, ")
        text = f"  {loc}: {msg}" + (f" (allowed: {', '.join(bounds)})" if bounds else "")
        if not isinstance(got, (dict, BaseModel)):  # a whole table is no help in a one-line message
            text += f"; got {got!r}"
        lines.append(text)
    return "\n".join(lines)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_base(data: dict, source: str, seen: tuple[str, ...] = ()) -> dict:
    """A config may start from a preset: ``base = "micius-2016-12-19"`` then override tables/fields."""
    if "base" not in data:
        return data
    data = dict(data)
    name = data.pop("base")
    if not isinstance(name, str) or name in seen:
        raise ConfigError(f"invalid configuration {source}:\n  base: must name a preset (no cycles); got {name!r}")
    base = _resolve_base(tomllib.loads(preset_text(name)), f"preset {name}", seen + (name,))
    orbit = data.get("orbit")
    if isinstance(orbit, dict) and isinstance(base.get("orbit"), dict) and orbit.get("kind", base["orbit"].get("kind")) != base["orbit"].get("kind", "tle"):
        # the file switches the orbit's kind: the preset's fields of the other kind do not carry over
        base = {**base, "orbit": {}}
    return _merge(base, data)


def config_from_dict(data: dict, source: str = "") -> MissionConfig:
    data = _resolve_base(data, source)
    depth = getattr(_NESTING, "depth", 0)
    _NESTING.depth = depth + 1  # keep pydantic's error (with its field locations) for the message below
    try:
        return MissionConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
    finally:
        _NESTING.depth = depth


#: a mission file is a few kB; anything larger is not one
MAX_CONFIG_BYTES = 1 << 20


def load_config(path: str | Path) -> MissionConfig:
    """Read and validate a mission TOML file; raises :class:`ConfigError` naming the bad field."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:  # bounded: `--config /dev/zero` must not read forever
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"configuration {p} is larger than {MAX_CONFIG_BYTES:,} bytes: not a mission file")
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration {p} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {p} is not valid TOML: {exc}") from None
    return config_from_dict(data, str(p))


#: the preset of the paper's pass and the UTC date of that pass [paper: the night of 19 December 2016, Fig. 3]
PAPER_PRESET = "micius-2016-12-19"
PAPER_PASS_DATE_UTC = "2016-12-19"
PAPER_PASS_DURATION_S = 273.0  # [paper] "273 s" of QKD data in the pass of Fig. 3

#: fields that choose what is reported or how finely it is sampled, not what is simulated
_NOT_PHYSICS = {"name", "description", "simulation"}
_NOT_PASS_PHYSICS = {"search_start_utc", "search_days"}


def is_paper_pass(cfg: MissionConfig, start_utc: datetime, duration_s: float) -> bool:
    """Whether a pass is the paper's: the configuration is the paper's preset in everything that is
    simulated (name, description, [simulation] sampling and the pass search span aside), and the pass
    starts on the paper's date and lasts its 273 s (± 3 s: not a slice of it). Any other run is a
    what-if, and its figures are not set against the paper's column as if they were the same pass."""
    if _utc(start_utc).date().isoformat() != PAPER_PASS_DATE_UTC or abs(float(duration_s) - PAPER_PASS_DURATION_S) > 3.0:
        return False
    mine, ref = cfg.model_dump(exclude=_NOT_PHYSICS), _paper_reference()
    mine["passes"] = {k: v for k, v in mine["passes"].items() if k not in _NOT_PASS_PHYSICS}
    return mine == ref


@functools.lru_cache(maxsize=1)
def _paper_reference() -> dict:
    d = load_preset(PAPER_PRESET).model_dump(exclude=_NOT_PHYSICS)
    d["passes"] = {k: v for k, v in d["passes"].items() if k not in _NOT_PASS_PHYSICS}
    return d


def list_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    files = resources.files("satqkd") / "presets"
    return sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".toml"))


def preset_text(name: str) -> str:
    if name not in list_presets():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return (resources.files("satqkd") / "presets" / f"{name}.toml").read_text(encoding="utf-8")


def load_preset(name: str) -> MissionConfig:
    """Load a shipped preset, e.g. ``load_preset("micius-2016-12-19")``."""
    return config_from_dict(tomllib.loads(preset_text(name)), f"preset {name}")
