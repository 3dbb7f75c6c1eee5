"""Eavesdropping at the photon level: a run under attack yields no key or a correctly shortened one.

Unit tests check the photon-number-resolved click laws of :mod:`satqkd.quantum.attacks` against a
brute-force Monte-Carlo of single pulses written here independently (photon by photon: Eve's
action, Bob's beam splitter, PBS with misalignment, detector efficiency), and against closed forms
(Poisson thinning for the honest channel; ``1/4 + e_d/2`` for intercept-resend; the PNS gains).
Pass-level tests run the whole chain (``satqkd.simulate`` → ``postprocess``) on the preset pass cut
to 30 s around culmination.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import satqkd
from satqkd.config import ConfigError, config_from_dict
from satqkd.protocol.session import postprocess
from satqkd.quantum import attacks as atk
from satqkd.records import PassGeometry
from synthetic_passes import preset_pass_cut

CFG = satqkd.load_preset("micius-2016-12-19")
KINDS = ("none", "intercept_resend", "pns", "beam_splitting")


# ------------------------------------------------------------------ independent brute force
def _route(basis, bit, e_d, eta_det, rng):
    """Bob's detector for photons of state (basis, bit): 50/50 BS, PBS (flip e_d in the matching
    basis, 50/50 otherwise), detection with η_det. Returns detector index or −1 (not detected)."""
    b = rng.integers(0, 2, basis.size)
    out = np.where(b == basis, bit ^ (rng.random(basis.size) < e_d), rng.integers(0, 2, basis.size))
    return np.where(rng.random(basis.size) < eta_det, 2 * b + out, -1)


def _brute_masks(kind, n_photons, a, x, eta, eta_det, e_d, rng, a1=None, am=None):
    """Click bitmask of every pulse with ``n_photons[p]`` photons of Alice's state (a, x)."""
    n_photons = np.asarray(n_photons)
    npulse = n_photons.size
    mask = np.zeros(npulse, dtype=np.int64)
    who, pb, px = [], [], []  # photons reaching Bob: pulse, state
    if kind in ("none", "beam_splitting"):
        p = np.repeat(np.arange(npulse), n_photons)
        keep = rng.random(p.size) < eta  # lossy channel or Eve's beam splitter: same thing for Bob
        who.append(p[keep])
    elif kind == "intercept_resend":
        p = np.flatnonzero(n_photons >= 1)
        b_eve = rng.integers(0, 2, p.size)
        y = np.where(b_eve == a, x, rng.integers(0, 2, p.size))
        ok = rng.random(p.size) < eta
        who.append(p[ok])
        pb.append(b_eve[ok])
        px.append(y[ok])
    elif kind == "pns":
        single = np.flatnonzero((n_photons == 1) & (rng.random(npulse) < a1))
        multi = np.flatnonzero((n_photons >= 2) & (rng.random(npulse) < am))
        who.append(single)
        who.append(np.repeat(multi, n_photons[multi] - 1))  # Eve keeps one photon, lossless channel
    p = np.concatenate(who)
    if kind == "intercept_resend":
        basis, bit = np.concatenate(pb), np.concatenate(px)
    else:
        basis, bit = np.full(p.size, a), np.full(p.size, x)
    d = _route(basis, bit, e_d, eta_det, rng)
    hit = d >= 0
    np.bitwise_or.at(mask, p[hit], 1 << d[hit])
    return mask


def _assert_histogram(masks, probs, label):
    """Every one of the 16 pattern counts within 5 σ of its expectation."""
    n = masks.size
    obs = np.bincount(masks, minlength=16)
    exp = n * np.asarray(probs)
    assert exp.sum() == pytest.approx(n, rel=1e-9)
    sd = np.sqrt(np.maximum(exp * (1 - np.asarray(probs)), 1.0))
    bad = np.abs(obs - exp) > 5 * sd + 2
    assert not bad.any(), f"{label}: patterns {np.flatnonzero(bad)} obs {obs[bad]} exp {exp[bad]}"


# ------------------------------------------------------------------------------- unit tests
def test_photon_cutoff_leaves_a_tail_below_1e15():
    from scipy.stats import poisson

    for mu in (0.0, 0.1, 0.8, 5.0):
        n = atk.photon_cutoff(mu)
        assert poisson.sf(n, mu) < 1e-15
        if n > 1:
            assert poisson.sf(n - 1, mu) >= 1e-15


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eta", [0.3, 2e-3])
def test_per_photon_number_law_matches_brute_force(kind, eta):
    """P(click pattern | n photons, state) of each attack vs single pulses followed photon by photon."""
    rng = np.random.default_rng(11)
    eta_det, e_d, n_max = 0.6, 0.05, 8
    tab = atk.patterns_given_n(kind, n_max, [eta], eta_det, [e_d], mu_signal=0.8)[0]  # (n, state, 16)
    assert np.allclose(tab.sum(axis=-1), 1.0, atol=1e-12)
    a1, am = (float(v[0]) for v in atk.pns_forwarding(0.8, [eta], eta_det, n_max=40))
    for n in (0, 1, 2, 3, 5):
        for a, x in ((0, 1), (1, 0)):
            masks = _brute_masks(kind, np.full(60_000, n), a, x, eta, eta_det, e_d, rng, a1, am)
            _assert_histogram(masks, tab[n, 2 * a + x], f"{kind} n={n} state=({a},{x})")


@pytest.mark.parametrize("kind", ["intercept_resend", "pns"])
def test_poisson_mixture_matches_brute_force(kind):
    """The per-class table (Poisson photon numbers, μ with fluctuation) vs single-pulse Monte-Carlo."""
    rng = np.random.default_rng(5)
    eta, eta_det, e_d = 0.25, 0.5, 0.02
    mu = np.array([[0.84, 0.097, 0.0]])
    model = atk.click_table(kind, mu, [eta], eta_det, [e_d], mu_signal=0.8)
    a1, am = (float(v[0]) for v in atk.pns_forwarding(0.8, [eta], eta_det, n_max=40))
    for i in range(3):
        for a, x in ((0, 0), (1, 1)):
            n = rng.poisson(mu[0, i], 200_000)
            masks = _brute_masks(kind, n, a, x, eta, eta_det, e_d, rng, a1, am)
            _assert_histogram(masks, model.pattern[0, i, 2 * a + x], f"{kind} intensity {i}")
    # the vacuum class never clicks; the click probability is the same for the four states
    assert np.all(model.pattern[0, 2, :, 1:] == 0)
    assert np.allclose(model.pattern[0, :, :, 1:].sum(axis=-1), model.p_click[0][:, None], rtol=1e-12)


def test_honest_and_beam_splitting_equal_poisson_thinning():
    """Binomial thinning of Poisson photons is Poisson: the honest per-n sum reproduces the product
    form of independent Poisson(λ_j) detectors (Ma et al., PRA 72, 012326 (2005)), and Eve's
    lossless channel + beam splitter gives Bob exactly that law."""
    eta = np.array([1e-3, 3e-4, 0.2])
    e_d = np.array([0.003, 0.01, 0.04])
    eta_det = 0.5
    mu = np.array([[0.8, 0.1, 0.0], [0.78, 0.104, 0.0], [0.82, 0.1, 0.0]])
    honest = atk.click_table("none", mu, eta, eta_det, e_d)
    bs = atk.click_table(atk.Attack("beam_splitting", 1.0), mu, eta, eta_det, e_d)
    q = np.zeros((3, 4, 4))  # routing q[s, state, j], written out
    for s in range(3):
        for st in range(4):
            a, x = divmod(st, 2)
            for j in range(4):
                b, y = divmod(j, 2)
                q[s, st, j] = (1 - e_d[s] if y == x else e_d[s]) / 2 if b == a else 0.25
    lam = mu[:, :, None, None] * (eta * eta_det)[:, None, None, None] * q[:, None, :, :]  # (s, i, state, j)
    closed = np.ones(lam.shape[:-1] + (16,))
    for S in range(16):
        for j in range(4):
            closed[..., S] *= -np.expm1(-lam[..., j]) if S >> j & 1 else np.exp(-lam[..., j])
    assert np.allclose(honest.pattern, closed, rtol=1e-9, atol=0.0)
    assert np.allclose(bs.pattern, honest.pattern, rtol=1e-12, atol=0.0)
    assert np.allclose(honest.p_click, -np.expm1(-mu * (eta * eta_det)[:, None]), rtol=1e-12)
    assert np.all(honest.eve_knows == 0)
    # under beam splitting Eve holds a photon of ≈ every detected multi-photon pulse (1 − η ≈ 1)
    multi = (bs.p_click - bs.by_photon_number[:, :, :2].sum(axis=-1))[:2, 0]
    assert np.allclose(bs.eve_knows[:2, 0], multi, rtol=2e-3)
    assert np.allclose(bs.by_photon_number.sum(axis=-1), bs.p_click, rtol=1e-12)


def test_intercept_resend_qber_is_a_quarter_plus_half_misalignment():
    """Bob gets one photon in Eve's state: right basis (½) → error e_d, wrong basis → ½:
    QBER = 1/4 + e_d/2 exactly (no multi-photon terms), on every intensity."""
    e_d = np.array([0.0, 0.02])
    model = atk.click_table("intercept_resend", [[0.8, 0.1, 0.0]] * 2, [1e-3, 0.5], 0.5, e_d)
    sifted, errors = atk.sifted_statistics(model.pattern)
    qber = errors[:, :2] / sifted[:, :2]
    assert np.allclose(qber, (0.25 + e_d / 2)[:, None], rtol=1e-12)
    # gain: Eve resends one photon per non-empty pulse
    resent_gain = (1 - np.exp(-np.array([0.8, 0.1])))[None, :] * (np.array([1e-3, 0.5]) * 0.5)[:, None]
    assert np.allclose(model.p_click[:, :2], resent_gain, rtol=1e-12)
    # half of Bob's clicks come from Eve's right-basis measurements: she knows those bits
    assert np.allclose(model.eve_knows[:, :2], model.p_click[:, :2] / 2, rtol=1e-12)


def _g_multi(mu, eta_det):
    return sum(math.exp(-mu) * mu**n / math.factorial(n) * (1 - (1 - eta_det) ** (n - 1)) for n in range(2, 60))


def test_pns_keeps_the_signal_gain_and_starves_the_decoy():
    """Eve's tuning (Brassard et al. 2000) gives Bob the honest signal gain; the decoy gain is then
    μ G_m(ν) / (ν G_m(μ)) of its honest value (only n ≥ 2 pulses pass), ≈ 18 % at μ=0.8, ν=0.1."""
    eta_det, mu, nu = 0.5, 0.8, 0.1
    eta = np.array([1e-3, 3e-4, 0.45])
    model = atk.click_table("pns", np.tile([mu, nu, 0.0], (3, 1)), eta, eta_det, 0.01, mu_signal=mu)
    honest = -np.expm1(-np.outer(eta * eta_det, [mu, nu]))
    assert np.allclose(model.p_click[:, 0], honest[:, 0], rtol=1e-12)
    a1, am = atk.pns_forwarding(mu, eta, eta_det)
    gm = _g_multi(mu, eta_det)
    assert np.allclose(am[:2], honest[:2, 0] / gm, rtol=1e-12) and np.all(a1[:2] == 0)
    expected = am[:2] * _g_multi(nu, eta_det)
    assert np.allclose(model.p_click[:2, 1], expected, rtol=1e-12)
    ratio = model.p_click[:2, 1] / honest[:2, 1]
    assert np.allclose(ratio, mu * _g_multi(nu, eta_det) / (nu * gm), rtol=1e-3)
    assert 0.15 < ratio[0] < 0.2
    # low loss: every multi-photon pulse passes and some single photons (a_1 > 0)
    assert am[2] == 1.0 and 0 < a1[2] < 1
    # Eve holds a photon of every pulse Bob detects in the high-loss regime; no single photon clicks
    assert np.allclose(model.eve_knows[:2], model.p_click[:2], rtol=1e-12)
    assert np.all(model.by_photon_number[:2, :, 1] == 0)


def test_draw_follows_the_conditional_pattern_law():
    rng = np.random.default_rng(3)
    model = atk.click_table("pns", [[0.8, 0.1, 0.0], [0.8, 0.1, 0.0]], [0.3, 0.05], 0.5, [0.0, 0.05])
    m = np.array([60_000, 40_000])
    inten = np.concatenate([np.zeros(60_000), np.ones(40_000)]).astype(np.uint8)
    basis = np.concatenate([np.zeros(60_000), np.ones(40_000)]).astype(np.uint8)
    bit = np.ones(100_000, dtype=np.uint8)
    first, more, mask, extra = model.draw(m, inten, basis, bit, rng)
    full = (np.uint8(1) << first).astype(np.uint8)
    full[more] |= extra
    assert np.array_equal(full[more], mask) and np.all(extra != 0)
    for sl, (s, i, st) in ((slice(0, 60_000), (0, 0, 1)), (slice(60_000, None), (1, 1, 3))):
        cond = model.pattern[s, i, st] / model.p_click[s, i]
        cond[0] = 0.0
        _assert_histogram(full[sl].astype(np.int64), cond, f"slice {s}")


def test_attack_config_is_validated():
    base = CFG.model_dump(mode="json")
    cfg = config_from_dict({**base, "attack": {"kind": "pns", "fraction": 0.5}})
    assert cfg.attack.kind == "pns" and cfg.attack.fraction == 0.5
    assert CFG.attack.kind == "none" and CFG.attack.fraction == 1.0
    for bad in ({"kind": "pns", "fraction": 1.5}, {"kind": "trojan"}, {"kind": "pns", "strength": 1}):
        with pytest.raises(ConfigError):
            config_from_dict({**base, "attack": bad})
    with pytest.raises(ValueError, match="fraction"):
        atk.Attack("pns", -0.1)


# ------------------------------------------------------------------------------- pass level
def _short_geometry(seconds: int) -> PassGeometry:
    return preset_pass_cut(CFG, seconds)


SEED = 3


@pytest.fixture(scope="module")
def geometry():
    return _short_geometry(30)


def _cfg(kind, fraction=1.0):
    cfg = CFG.model_copy(deep=True)
    cfg.attack.kind = kind
    cfg.attack.fraction = fraction
    # key from signal bits only: the decoy bits are then disclosed before error correction, so the
    # one-way LDPC plans for the QBER the attack causes and the run reaches its statistics, which is
    # what these tests examine (the default key set is checked in test_default_settings_give_no_key_*)
    cfg.security.key_intensities = "signal"
    return cfg


def _run(geometry, kind, fraction=1.0, seed=SEED):
    cfg = _cfg(kind, fraction)
    sim = satqkd.simulate(cfg, seed=seed, geometry=geometry)
    return sim, postprocess(sim.raw, cfg, seed=seed)


@pytest.fixture(scope="module")
def honest(geometry):
    return _run(geometry, "none")


def _model(sim, kind, fraction=1.0):
    """The attack's click law at the slices' true link and intensities (from the raw truth)."""
    m = sim.raw.meta
    return atk.click_table(atk.Attack(kind, fraction), m["truth_mean_photon_number"], m["truth_transmittance"],
                           sim.link.detector_efficiency, m["truth_misalignment"], mu_signal=CFG.source.intensities[0])


def _weights(sim):
    """Pulses per slice and intensity in expectation: n_s p_i (``slice_emitted`` sums to n_s)."""
    return sim.raw.slice_emitted.sum(axis=1)[:, None] * np.asarray(CFG.source.probabilities)[None, :]


def _rate(w, num, den, i=0):
    """Pass-averaged ratio of two per-pulse probabilities of intensity ``i`` (weights ``w``)."""
    return float((w[:, i] * num[:, i]).sum() / (w[:, i] * den[:, i]).sum())


def _s1_truth(r, model, w):
    """Expected single-photon events among the sifted key bits of each basis: sifted signal bits ×
    share of signal clicks from one-photon pulses (background clicks are a fraction of a percent)."""
    share = _rate(w, model.by_photon_number[:, :, 1], model.p_click)
    n = np.asarray(r.bob.counts["n"])
    return {"Z": n[0, 0] * share, "X": n[1, 0] * share}


def test_zero_fraction_is_the_honest_sampler(geometry, honest):
    sim = satqkd.simulate(_cfg("pns", 0.0), seed=SEED, geometry=geometry)
    assert np.array_equal(sim.raw.bob_time_ps, honest[0].raw.bob_time_ps)
    assert np.array_equal(sim.raw.alice_bit, honest[0].raw.alice_bit)
    assert "attack" not in sim.raw.meta


def test_intercept_resend_gives_quarter_qber_and_no_key(geometry, honest):
    sim, r = _run(geometry, "intercept_resend", 1.0)
    assert sim.raw.meta["attack"] == "intercept_resend"
    # the default one-way LDPC aborts on the QBER predicted from the test bits, before correcting
    assert not r.ok and r.final_key_bits == 0 and "QBER predicted" in r.abort_reason
    assert r.alice.key is None and r.bob.key is None
    # Cascade corrects anything, so it measures the QBER on the key bits
    r = postprocess(sim.raw, _cfg("intercept_resend"), seed=SEED, ec="cascade")
    assert 0.245 < r.bob.qber < 0.262  # 1/4 + e_d/2 + background
    assert not r.ok and r.final_key_bits == 0 and "QBER" in r.abort_reason
    assert r.alice.key is None and r.bob.key is None


@pytest.mark.parametrize("kind", ["intercept_resend", "pns"])
def test_default_settings_give_no_key_under_a_full_attack(geometry, kind):
    """With the default key set (signal and decoy bits; no decoy errors disclosed before error
    correction) a full attack ends without a key at either end, whatever step stops it."""
    cfg = CFG.model_copy(deep=True)
    cfg.attack.kind, cfg.attack.fraction = kind, 1.0
    assert cfg.security.key_intensities == "signal+decoy"
    sim = satqkd.simulate(cfg, seed=SEED, geometry=geometry)
    r = postprocess(sim.raw, cfg, seed=SEED)
    assert not r.ok and r.final_key_bits == 0, r.abort_reason
    assert any(w in r.abort_reason for w in ("QBER", "single-photon", "no key")), r.abort_reason
    assert r.alice.key is None and r.bob.key is None


def test_weak_intercept_resend_shortens_the_key(geometry, honest):
    """f = 0.1: QBER up by ≈ 25 % × (share of attacked clicks); the phase-error bound grows and the
    key shrinks to a fraction of the honest one, never above the bits Eve does not know."""
    sim_h, r_h = honest
    sim, r = _run(geometry, "intercept_resend", 0.1)
    model, w = _model(sim, "intercept_resend", 0.1), _weights(sim)
    sifted, errors = atk.sifted_statistics(model.pattern)
    sh, eh = atk.sifted_statistics(_model(sim, "none").pattern)
    extra_qber = _rate(w, errors, sifted) - _rate(w, eh, sh)
    assert 0.015 < extra_qber < 0.02  # 0.25 · 0.1 · (1 − e^{−μ})/μ-weighted share
    assert r.bob.qber - r_h.bob.qber == pytest.approx(extra_qber, abs=0.0025)
    assert r.ok and r.keys_match
    assert 0 < r.final_key_bits < 0.4 * r_h.final_key_bits
    for b in ("Z", "X"):
        assert r.bob.estimate.phase_error[b] > 2 * r_h.bob.estimate.phase_error[b]
    known = _rate(w, model.eve_knows, model.p_click)
    assert r.final_key_bits <= (1 - known) * r.bob.sifted_key_bits


def test_pns_attack_yields_no_key(geometry, honest):
    """Signal gain as honest, decoy gain down by the model's factor, decoy bound on s1 collapses."""
    sim_h, r_h = honest
    sim, r = _run(geometry, "pns", 1.0)
    model, w = _model(sim, "pns"), _weights(sim)
    assert r.final_key_bits == 0 or r.final_key_bits <= 0.1 * r_h.final_key_bits
    assert not r.ok
    # signal clicks per intensity in the raw records (truth) vs the model's expectation
    raw = sim.raw
    pulses = np.unique(raw.truth_pulse_index[raw.truth_pulse_index >= 0])
    inten = raw.alice_intensity[np.searchsorted(raw.alice_pulse_index, pulses)]
    obs = np.bincount(inten, minlength=3)
    exp = (w * model.p_click).sum(axis=0)
    assert np.all(np.abs(obs - exp) <= 5 * np.sqrt(exp) + 2), (obs, exp)
    # protocol view: background-subtracted sifted gains, attacked / honest (same link: same seed)
    n_a, n_h = np.asarray(r.bob.counts["n"]).sum(axis=0), np.asarray(r_h.bob.counts["n"]).sum(axis=0)
    e_a, e_h = np.asarray(r.bob.counts["emitted"]), np.asarray(r_h.bob.counts["emitted"])
    sig_a, sig_h = n_a[:2] - n_a[2] * e_a[:2] / e_a[2], n_h[:2] - n_h[2] * e_h[:2] / e_h[2]
    ratio = sig_a / sig_h * (e_h[:2] / e_a[:2])
    sa, _ = atk.sifted_statistics(model.pattern)
    sh, _ = atk.sifted_statistics(_model(sim, "none").pattern)
    expected = (w[:, :2] * sa[:, :2]).sum(axis=0) / (w[:, :2] * sh[:, :2]).sum(axis=0)
    sd = ratio * np.sqrt(n_a[:2] / sig_a**2 + n_h[:2] / sig_h**2)
    assert np.all(np.abs(ratio - expected) < 5 * sd), (ratio, expected, sd)
    assert expected[0] == pytest.approx(1.0, abs=0.02)  # Eve keeps the signal gain (a non-decoy protocol sees nothing)
    assert 0.15 < expected[1] < 0.2  # ... but the decoy gain drops to ≈ 18 %
    # the decoy bound on single-photon events collapses (the truth is ≈ background on n = 1 pulses)
    est = r.bob.estimate
    assert est is not None and "single-photon" in r.abort_reason
    truth = _s1_truth(r, model, w)
    for b in ("Z", "X"):
        assert truth[b] == 0.0
        assert est.s1[b] <= 0.0


def test_partial_pns_shortens_the_key_below_what_eve_does_not_know(geometry, honest):
    """PNS on 20 % of the pulses: the decoy bound on single-photon events stays below the truth
    (≈ 80 % of the honest single-photon clicks), so the key shrinks but is not zero."""
    sim_h, r_h = honest
    sim, r = _run(geometry, "pns", 0.2)
    model, w = _model(sim, "pns", 0.2), _weights(sim)
    assert r.ok and r.keys_match
    assert 0 < r.final_key_bits < 0.5 * r_h.final_key_bits
    known = _rate(w, model.eve_knows, model.p_click)
    assert known == pytest.approx(0.2, abs=0.01)  # the attacked pulses give 20 % of the signal gain
    truth = _s1_truth(r, model, w)
    for b in ("Z", "X"):
        assert 0 < r.bob.estimate.s1[b] <= truth[b]
        assert r.bob.estimate.s1[b] < 0.85 * r_h.bob.estimate.s1[b]
    assert r.final_key_bits <= (1 - known) * r.bob.sifted_key_bits


def test_beam_splitting_leaves_the_honest_key_length(geometry, honest):
    """Bob's statistics are the honest ones: the key length is the honest one within the seed-to-seed
    spread (≈ 2 % of ≈ 8e4 bits on this 30 s pass), the decoy bound stays below the true
    single-photon count, and the key is shorter than the bits Eve does not hold."""
    sizes = {"none": [], "beam_splitting": []}
    for kind in sizes:
        for seed in (SEED, SEED + 1):
            if kind == "none" and seed == SEED:
                sim, r = honest
            else:
                sim, r = _run(geometry, kind, 1.0, seed)
            assert r.ok and r.keys_match, r.abort_reason
            sizes[kind].append(r.final_key_bits)
            model, w = _model(sim, kind), _weights(sim)
            truth = _s1_truth(r, model, w)
            for b in ("Z", "X"):
                assert 0.6 * truth[b] < r.bob.estimate.s1[b] <= truth[b]
            known = _rate(w, model.eve_knows, model.p_click)
            if kind == "beam_splitting":
                assert 0.5 < known < 0.6  # Eve holds a photon of ≈ every multi-photon click
            assert r.final_key_bits <= (1 - known) * r.bob.sifted_key_bits
    h, b = np.mean(sizes["none"]), np.mean(sizes["beam_splitting"])
    assert abs(b - h) < 0.08 * h, sizes
