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

import tomllib
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "MissionConfig",
    "load_config",
    "load_preset",
    "list_presets",
]


class ConfigError(ValueError):
    """A configuration could not be read or validated; the message names the field and the allowed range."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _utc(v: datetime) -> datetime:
    return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)


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
        if self.kind == "tle":
            for name in ("tle_line1", "tle_line2"):
                line = getattr(self, name)
                if not line or len(line.strip()) < 69 or line.strip()[0] != name[-1]:
                    raise ValueError(f"{name} must be a 69-character TLE line starting with '{name[-1]}'")
        else:
            for name in ("altitude_km", "inclination_deg", "epoch_utc"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name} is required for a circular orbit")
        if self.epoch_utc is not None:
            self.__dict__["epoch_utc"] = _utc(self.epoch_utc)
        return self


class GroundStationConfig(_Model):
    name: str = Field(..., min_length=1)
    latitude_deg: float = Field(..., ge=-90, le=90)
    longitude_deg: float = Field(..., ge=-180, le=180)
    altitude_m: float = Field(0.0, ge=-500, le=9000)


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


class AtmosphereConfig(_Model):
    """Extinction and turbulence. The paper gives no zenith numbers: these are calibrated fields."""

    zenith_loss_db: float = Field(1.0, ge=0, le=30, description="clear-sky zenith extinction at the QKD wavelength (calibrated)")
    r0_zenith_m: float = Field(0.05, gt=0, le=1, description="Fried parameter at zenith at 500 nm (calibrated)")
    turbulence_fading: bool = Field(False, description="draw log-normal scintillation per time step (seeded)")
    scintillation_index_zenith: float = Field(0.05, ge=0, le=2)


class ReceiverConfig(_Model):
    """Ground telescope and decoder [paper: 1 m RC, f = 10 m, optics incl. fiber coupling ~16 %]."""

    aperture_m: float = Field(1.0, gt=0, le=20)
    focal_length_m: float = Field(10.0, gt=0, le=1000)
    optics_efficiency: float = Field(0.16, gt=0, le=1, description="telescope + decoder + fiber coupling [paper: ~16 %]")
    field_of_view_urad: float = Field(
        20.0, gt=0, le=10_000, description="full angle accepted by the fiber/detector (calibrated); sets seeing loss"
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
    sync_jitter_ns: float = Field(0.529, ge=0, le=1e3)
    window_ns: float = Field(2.0, gt=0, le=1e3)
    clock_offset_ns: float = Field(12_345.6, description="ground clock minus satellite clock at pass start")
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

    def __repr__(self) -> str:
        # one short line (pydantic's default prints every field: ~3 KB); the fields: .model_dump()
        far = f" + {self.second_station.name}" if self.second_station is not None else ""
        attack = f", attack={self.attack.kind}" if self.attack.kind != "none" else ""
        return f"MissionConfig(name={self.name!r}, satellite={self.satellite!r}, station={self.station.name!r}{far}{attack})"

    __str__ = __repr__


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        ctx = e.get("ctx") or {}
        bounds = [f"{k.replace('_', ' ')} {v}" for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `satqkd presets --show NAME`)"
        lines.append(f"  {loc}: {msg}" + (f" (allowed: {', '.join(bounds)})" if bounds else "") + f"; got {e.get('input')!r}")
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
    return _merge(base, data)


def config_from_dict(data: dict, source: str = "") -> MissionConfig:
    data = _resolve_base(data, source)
    try:
        return MissionConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | Path) -> MissionConfig:
    """Read and validate a mission TOML file; raises :class:`ConfigError` naming the bad field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {p} is not valid TOML: {exc}") from None
    return config_from_dict(data, str(p))


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
