"""The work predictor: close to what a pass really costs, and refusing the machine-exhausting configs fast."""

import pytest

import satqkd
from satqkd.config import ConfigError
from satqkd.limits import (
    DEFAULT_MAX_MEMORY_GB,
    MAX_GEOMETRY_STEPS,
    WorkLimitError,
    check_work,
    estimate_work,
    max_memory_bytes,
    window_bound_s,
)


@pytest.fixture
def cfg():
    return satqkd.load_preset("micius-2016-12-19")


def test_the_default_pass_is_predicted_from_above_but_close(cfg):
    est = check_work(cfg)
    assert est.from_pass and est.window_s == pytest.approx(272.5, abs=1)
    # paper (and our simulation): 3,551,136 detections; the prediction leaves out the pointing loss only
    assert 3.55e6 <= est.signal_detections <= 1.5 * 3.55e6
    assert est.memory_bytes < DEFAULT_MAX_MEMORY_GB * 1e9 / 3  # room for what-if studies


def test_window_bound_holds_for_every_preset_and_example():
    from pathlib import Path

    from satqkd.config import load_config

    cfgs = [satqkd.load_preset(n) for n in satqkd.list_presets()]
    cfgs += [load_config(p) for p in sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))]
    for c in cfgs:
        for st in (c.station, c.second_station):
            if st is not None:
                g = satqkd.find_pass(c, st)
                assert g.duration_s <= window_bound_s(c, st), (c.name, st.name)
    default = satqkd.load_preset("micius-2016-12-19")  # a high pass: the bound is close
    assert window_bound_s(default) <= 1.3 * satqkd.find_pass(default).duration_s


@pytest.mark.parametrize(
    "table, field, value, needle",
    [
        ("source", "intensities", [50.0, 0.1, 0.0], "signal detections: source.intensities"),
        ("background", "sky_rate_hz", 1e6, "background: background.sky_rate_hz"),
        ("passes", "time_step_s", 1e-6, "passes.time_step_s = 1e-06 s gives"),
        ("simulation", "slice_s", 1e-6, "simulation.slice_s"),
        ("apt", "fine_rate_hz", 100_000.0, None),  # allowed: 2.7e7 samples
    ],
)
def test_machine_exhausting_values_are_refused_with_the_estimate(cfg, table, field, value, needle):
    setattr(getattr(cfg, table), field, value)
    if needle is None:
        assert check_work(cfg).tracking_samples == pytest.approx(272.5 * 1e5, rel=0.01)
        return
    with pytest.raises(WorkLimitError, match="docs/limits.md") as ei:
        check_work(cfg)
    assert needle in str(ei.value) and isinstance(ei.value, ConfigError)


def test_geometry_steps_are_refused_before_the_pass_search(cfg, monkeypatch):
    import satqkd.sky.orbit as orbit

    monkeypatch.setattr(orbit, "find_pass", lambda *a, **k: pytest.fail("searched a pass"))
    cfg.passes.time_step_s = 1e-5
    est = estimate_work(cfg)
    assert est.geometry_steps > MAX_GEOMETRY_STEPS and not est.from_pass
    with pytest.raises(WorkLimitError, match="geometry steps"):
        check_work(cfg)


def test_memory_limit_from_the_environment(cfg, monkeypatch):
    monkeypatch.setenv("SATQKD_MAX_MEMORY_GB", "0.5")
    assert max_memory_bytes() == 0.5e9
    with pytest.raises(WorkLimitError, match=r"limit 0\.5 GB"):
        check_work(cfg)
    monkeypatch.setenv("SATQKD_MAX_MEMORY_GB", "-3")
    with pytest.raises(ConfigError, match="SATQKD_MAX_MEMORY_GB"):
        max_memory_bytes()
    monkeypatch.delenv("SATQKD_MAX_MEMORY_GB")
    assert max_memory_bytes() == DEFAULT_MAX_MEMORY_GB * 1e9


def test_workers_multiply_the_memory(cfg, monkeypatch):
    one = check_work(cfg).memory_bytes
    monkeypatch.setenv("SATQKD_MAX_MEMORY_GB", str(2.5 * one / 1e9))
    check_work(cfg, parallel=2)
    with pytest.raises(WorkLimitError, match="× 3 workers"):
        check_work(cfg, parallel=3)


def test_no_pass_is_left_to_the_simulation(cfg):
    cfg.passes.start_elevation_deg = 89.0
    cfg.passes.end_elevation_deg = 89.0
    cfg.passes.search_days = 0.5
    est = check_work(cfg)
    assert not est.from_pass and est.signal_detections == 0
