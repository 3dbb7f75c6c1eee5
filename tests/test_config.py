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
