"""Configuration: presets load, bad input names the field and the allowed range."""

import pytest

from satqkd.config import ConfigError, config_from_dict, list_presets, load_config, load_preset, preset_text
import tomllib


def test_micius_preset_has_the_papers_numbers():
    cfg = load_preset("micius-2016-12-19")
    assert cfg.source.intensities == [0.8, 0.1, 0.0]
    assert cfg.source.probabilities == [0.5, 0.25, 0.25]
    assert cfg.source.rep_rate_hz == 100e6
    assert cfg.station.latitude_deg == pytest.approx(40 + 23 / 60 + 45.12 / 3600, abs=1e-6)
    assert cfg.station.longitude_deg == pytest.approx(117 + 34 / 60 + 38.85 / 3600, abs=1e-6)
    assert cfg.receiver.optics_efficiency == 0.16
    assert cfg.detectors.efficiency == 0.5 and cfg.detectors.dark_count_hz <= 25
    assert cfg.timing.window_ns == 2.0 and cfg.timing.sync_jitter_ns == 0.529
    assert cfg.security.epsilon == 1e-9
    assert cfg.classical.uplink_bps == 1e6 and cfg.classical.downlink_bps == 4e6


def test_every_preset_loads():
    assert "micius-2016-12-19" in list_presets()
    for name in list_presets():
        assert load_preset(name).name == name


def _preset_dict():
    return tomllib.loads(preset_text("micius-2016-12-19"))


def test_unknown_field_is_named():
    d = _preset_dict()
    d.setdefault("receiver", {})["aperture_mm"] = 1000
    with pytest.raises(ConfigError, match=r"receiver\.aperture_mm: unknown field"):
        config_from_dict(d)


def test_out_of_range_names_field_and_range():
    d = _preset_dict()
    d.setdefault("detectors", {})["efficiency"] = 1.5
    with pytest.raises(ConfigError) as ei:
        config_from_dict(d)
    msg = str(ei.value)
    assert "detectors.efficiency" in msg and "less than or equal to 1" in msg and "1.5" in msg


def test_wrong_type_is_named():
    d = _preset_dict()
    d.setdefault("source", {})["rep_rate_hz"] = "fast"
    with pytest.raises(ConfigError, match=r"source\.rep_rate_hz"):
        config_from_dict(d)


def test_probabilities_must_sum_to_one():
    d = _preset_dict()
    d.setdefault("source", {})["probabilities"] = [0.5, 0.25, 0.3]
    with pytest.raises(ConfigError, match="sum to 1"):
        config_from_dict(d)


def test_bad_tle_line_rejected():
    d = _preset_dict()
    d["orbit"]["tle_line1"] = "1 41731U"
    with pytest.raises(ConfigError, match="tle_line1"):
        config_from_dict(d)


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")


def test_config_can_start_from_a_preset(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('base = "micius-2016-12-19"\nname = "mine"\n[receiver]\naperture_m = 1.8\n')
    cfg = load_config(p)
    base = load_preset("micius-2016-12-19")
    assert cfg.name == "mine" and cfg.receiver.aperture_m == 1.8
    assert cfg.receiver.optics_efficiency == base.receiver.optics_efficiency
    assert cfg.orbit == base.orbit and cfg.station == base.station


def test_relay_preset_has_both_stations():
    cfg = load_preset("micius-relay-xinglong-nanshan")
    assert cfg.station.name == "Xinglong" and cfg.second_station.name == "Nanshan"
    assert abs(cfg.second_station.latitude_deg - 43.475) < 1e-9


def test_shipped_example_configs_load_and_find_a_pass():
    from pathlib import Path

    import satqkd

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
    assert examples
    for p in examples:
        cfg = load_config(p)
        g = satqkd.find_pass(cfg)
        assert g.duration_s > 60 and g.range_m.max() <= 1200e3 + 1


@pytest.mark.parametrize(
    "table, field, value",
    [("source", "intensities", [float("nan"), 0.1, 0.0]), ("timing", "clock_offset_ns", float("inf")),
     ("receiver", "aperture_m", float("nan")), ("background", "sky_rate_hz", float("-inf")),
     ("passes", "max_range_km", float("inf"))],
)
def test_numbers_must_be_finite(table, field, value):
    d = _preset_dict()
    d.setdefault(table, {})[field] = value
    with pytest.raises(ConfigError, match=rf"{table}\.{field}.*finite number"):
        config_from_dict(d)


@pytest.mark.parametrize(
    "table, over, needle",
    [
        ("security", {"epsilon": 1e-9, "epsilon_cor": 1e-9}, r"security: epsilon_cor = 1e-09 must be < epsilon = 1e-09"),
        ("apt", {"coarse_rate_hz": 4000.0}, r"apt: coarse_rate_hz = 4000 must be ≤ fine_rate_hz = 2000"),
        ("apt", {"coarse_bandwidth_hz": 20.0}, r"coarse_bandwidth_hz = 20 must be ≤ coarse_rate_hz/5 = 8"),
        ("apt", {"fine_bandwidth_hz": 1500.0}, r"fine_bandwidth_hz = 1500 must be ≤ fine_rate_hz/2 = 1000"),
        ("timing", {"window_ns": 12.0}, r"timing.window_ns = 12 must be ≤ the pulse period"),
        ("source", {"pulse_width_ns": 20.0}, r"source.pulse_width_ns = 20 must be ≤ the pulse period"),
        ("timing", {"clock_offset_ns": -2e12}, r"timing.clock_offset_ns: .*\(allowed: ge -1000000000000"),
    ],
)
def test_inconsistent_fields_are_named(table, over, needle):
    d = _preset_dict()
    d.setdefault(table, {}).update(over)
    with pytest.raises(ConfigError, match=needle):
        config_from_dict(d)


def test_api_construction_and_assignment_raise_config_error_with_the_clis_message():
    from satqkd.config import ReceiverConfig, SecurityConfig

    with pytest.raises(ConfigError, match=r"aperture_m: Input should be greater than 0 \(allowed: gt 0"):
        ReceiverConfig(aperture_m=-1)
    cfg = load_preset("micius-2016-12-19")
    with pytest.raises(ConfigError, match=r"setting receiver\.aperture_m = -1.*\n  receiver\.aperture_m: .*allowed: gt 0"):
        cfg.receiver.aperture_m = -1
    with pytest.raises(ConfigError, match="epsilon_cor"):
        cfg.security.epsilon_cor = 0.5  # a cross-field check...
    assert cfg.security.epsilon_cor == 1e-12 and cfg.receiver.aperture_m == 1.0  # ...leaves the old values
    with pytest.raises(ConfigError, match="finite"):
        SecurityConfig(epsilon=float("nan"))
    cfg.receiver.aperture_m = 1.8  # valid assignments still work
    assert cfg.receiver.aperture_m == 1.8


def test_non_utf8_file_is_named(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('name = "Xinglong \xe9t\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml is not UTF-8 text"):
        load_config(p)


def test_endless_or_huge_config_is_refused_without_reading_it_all(tmp_path):
    with pytest.raises(ConfigError, match="larger than"):
        load_config("/dev/zero")
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"big\.toml is larger than"):
        load_config(big)
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path)


@pytest.mark.parametrize("cols, text, needle", [((52, 63), " 0.00000000", "mean motion 0 rev/day"),
                                                ((52, 63), "xx.xxxxxxxx", "must be numbers"),
                                                ((8, 16), "197.3699", "inclination 197.37")])
def test_tle_fields_are_checked(cols, text, needle):
    d = _preset_dict()
    l2 = d["orbit"]["tle_line2"]
    d["orbit"]["tle_line2"] = l2[: cols[0]] + text + l2[cols[1]:]
    with pytest.raises(ConfigError, match=needle):
        config_from_dict(d)
