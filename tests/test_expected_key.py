"""The fast expected-key model against the event simulator (same LinkSeries), cheaply.

The full agreement check (≥ 5 passes of 15°–85°, ≥ 10 seeds each, final key through the two-party
protocol) is ``python benchmarks/run.py --plan-agreement``; here: the count tables of the two paths on
the same link, and the calibrated error-correction efficiency.
"""

from __future__ import annotations

import numpy as np
import pytest

import satqkd
from satqkd.config import DEFAULT_EC_METHOD
from satqkd.jobs.fastkey import EC_EFFICIENCY, ec_efficiency, expected_pass
from satqkd.jobs.pass_simulation import _sift_tables, simulate
from satqkd.quantum.expected import expected_tables
from satqkd.jobs.one_pass import truncate_geometry


@pytest.fixture(scope="module")
def cfg():
    return satqkd.load_preset("micius-2016-12-19")


@pytest.fixture(scope="module")
def short_pass(cfg):
    return truncate_geometry(satqkd.find_pass(cfg), 60.0)


def test_expected_tables_match_event_simulation_on_the_same_link(cfg, short_pass):
    """Per (basis, intensity): simulated counts within 4.5 σ (Poisson) of the expected ones, on 2 seeds."""
    for seed in (3, 4):
        sim = simulate(cfg, seed, geometry=short_pass)
        n_sim, m_sim = _sift_tables(sim.sifted, 3)
        tab = expected_tables(cfg, sim.link)
        assert n_sim[:, 0].sum() > 1e5  # statistical power: ~2e5 signal sifted bits in 60 s
        for b in range(2):
            for k in range(3):
                for obs, exp in ((n_sim[b, k], tab.n[b, k]), (m_sim[b, k], tab.m[b, k])):
                    assert abs(obs - exp) < 4.5 * np.sqrt(exp) + 1, (seed, b, k, obs, exp)
        # the emitted pulses are the sampler's exactly in expectation
        assert abs(sim.raw.slice_emitted.sum() - tab.emitted.sum()) < 1.0
        # the per-step series adds up to the total
        assert tab.sifted_per_step.sum() == pytest.approx(tab.sifted_key_bits, rel=1e-12)


def test_coarse_slices_change_the_tables_negligibly(cfg, short_pass):
    link = satqkd.link_series(cfg, short_pass, np.random.default_rng(1))
    fine, coarse = expected_tables(cfg, link), expected_tables(cfg, link, slice_s=0.25)
    np.testing.assert_allclose(coarse.n, fine.n, rtol=2e-4)
    np.testing.assert_allclose(coarse.m, fine.m, rtol=2e-4)


def test_expected_key_of_the_preset_pass_is_the_papers_order(cfg):
    g = satqkd.find_pass(cfg)
    e = expected_pass(cfg, satqkd.link_series(cfg, g, np.random.default_rng(1)), grid_points=5, slice_s=0.25)
    assert 1.60e6 < e.tables.sifted_key_bits < 1.70e6  # signal sifted bits; event level: 1.65e6 (paper 1.67e6)
    assert 1.70e6 < e.sifted_bits < 1.82e6  # the key set (signal + decoy): event level 1.76e6
    assert 0.009 < e.qber < 0.016
    assert 3.0e5 < e.final_key_bits < 3.9e5  # event level ≈ 3.45e5 (paper 3.0e5)
    assert e.leak_ec_bits == pytest.approx(e.ec_efficiency * e.sifted_bits * satqkd.postprocess.estimation.binary_entropy(e.qber))
    assert e.ec_efficiency < 1.06  # class-aware one-way LDPC, as the protocol runs it (event level ≈ 1.04)


def test_more_misalignment_gives_less_key_and_an_abort_above_threshold(cfg):
    from dataclasses import replace

    g = truncate_geometry(satqkd.find_pass(cfg), 100.0)
    link = satqkd.link_series(cfg, g, np.random.default_rng(1))
    base = expected_pass(cfg, link, grid_points=5, slice_s=0.25)
    worse = expected_pass(cfg, replace(link, misalignment=link.misalignment + 0.02), grid_points=5, slice_s=0.25)
    bad = expected_pass(cfg, replace(link, misalignment=np.full_like(link.misalignment, 0.2)), grid_points=5, slice_s=0.25)
    assert 0 < worse.final_key_bits < base.final_key_bits
    assert bad.final_key_bits == 0 and bad.aborted


def test_ec_efficiency_table_interpolates_and_clamps():
    tab = EC_EFFICIENCY["cascade"]
    assert ec_efficiency(tab["qber"][1], tab["n"][2], "cascade") == pytest.approx(tab["f"][2][1])
    assert ec_efficiency(1e-6, 1.0, "cascade") == pytest.approx(tab["f"][0][0])  # clamped to the table's corner
    mid = ec_efficiency(np.array([0.015]), np.array([10 ** 5.5]), "cascade")
    lo, hi = sorted([tab["f"][1][1], tab["f"][2][2]])
    assert mid.shape == (1,) and min(tab["f"][1][1:3] + tab["f"][2][1:3]) <= mid[0] <= max(tab["f"][1][1:3] + tab["f"][2][1:3])
    assert all(f >= 1.0 for row in tab["f"] for f in row)  # no code beats the Shannon limit


def test_source_optimisation_finds_more_key_than_the_preset_and_reports_it(cfg):
    from satqkd.jobs.optimise import optimise_source
    from satqkd.jobs.plan import planning_link

    link = planning_link(cfg, truncate_geometry(satqkd.find_pass(cfg), 120.0), np.random.default_rng(0))
    r = optimise_source(cfg, [link], max_evaluations=25)
    assert r.key_bits >= r.baseline_key_bits > 0
    assert r.key_bits > 1.05 * r.baseline_key_bits  # the preset's μ2 = 0.1, p = 0.5/0.25/0.25 is not optimal
    s = r.settings
    again = expected_pass(cfg, link, intensities=s.intensities, probabilities=s.probabilities, p_z_alice=s.p_z_alice,
                          grid_points=3, slice_s=1.0)
    assert again.final_key_bits == r.key_bits  # the reported optimum is what the model gives for those settings


def test_one_setting_for_a_campaign_sums_the_passes(cfg):
    """optimise_source over several passes maximises their total: never below the preset's total."""
    from satqkd.jobs.optimise import _key, optimise_source
    from satqkd.jobs.plan import planning_link

    g = satqkd.find_pass(cfg)
    links = [planning_link(cfg, truncate_geometry(g, w), np.random.default_rng(0)) for w in (60.0, 120.0)]
    r = optimise_source(cfg, links, max_evaluations=12)
    assert r.baseline_key_bits == sum(_key(cfg, [lk], r.baseline, DEFAULT_EC_METHOD, "chernoff", 3, 1.0) for lk in links)
    assert r.key_bits >= r.baseline_key_bits
    assert r.key_bits == sum(_key(cfg, [lk], r.settings, DEFAULT_EC_METHOD, "chernoff", 3, 1.0) for lk in links)


@pytest.mark.slow
def test_fast_final_key_agrees_with_event_level_runs_on_a_short_pass(cfg):
    """Cheap version of benchmarks/run.py plan-agreement: 100 s of the preset pass, 3 seeds through the
    simulator and the two-party protocol (cascade); the fast model on the planner's link within 5 % of their
    mean key and 2 % of their mean sifted bits."""
    from satqkd.jobs.plan import planning_link
    from satqkd.jobs.one_pass import run_pass

    g = truncate_geometry(satqkd.find_pass(cfg), 100.0)
    runs = [run_pass(cfg, g, 50 + s).summary for s in range(3)]
    key = np.mean([r["final_key_bits"] for r in runs])
    sifted = np.mean([r["sifted_key_bits"] for r in runs])  # the key set, as the fast model's sifted_bits
    fast = expected_pass(cfg, planning_link(cfg, g, np.random.default_rng(0)), grid_points=5, slice_s=0.25)
    assert key > 1e5
    assert abs(fast.final_key_bits / key - 1) < 0.05, (fast.final_key_bits, key)
    assert abs(fast.sifted_bits / sifted - 1) < 0.02, (fast.sifted_bits, sifted)


def test_ldpc_equivalent_qber_of_the_fast_model_is_the_protocols():
    """The fast model sizes LDPC leakage for the BSC of equal entropy as the protocol's frame planning does."""
    from satqkd.jobs.fastkey import _bsc_of_entropy
    from satqkd.postprocess.estimation import binary_entropy
    from satqkd.postprocess.reconciliation.ldpc import equivalent_qber

    for qs in ([0.01, 0.03], [0.005, 0.02, 0.04], [0.2, 0.001]):
        q = np.array(qs)
        assert _bsc_of_entropy(float(np.mean(binary_entropy(q)))) == pytest.approx(equivalent_qber(q), rel=1e-12)
