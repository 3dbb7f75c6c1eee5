"""Issue 9 §5: a fuzz test of the command line over arguments, config values and damaged files.

Whatever the input: exit status 0, 1 or 2 only; no traceback (no exception escapes a command);
nothing written on exit 2. The commands run in-process (typer's CliRunner) with a tiny memory limit
(``SATQKD_MAX_MEMORY_GB``), so a configuration that passes every check is refused by the work
predictor instead of simulated: every example costs well under a second.
"""

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from satqkd.cli import app

FIELDS = [
    ("source", "intensities"), ("source", "probabilities"), ("source", "rep_rate_hz"), ("source", "intensity_fluctuation"),
    ("source", "pulse_width_ns"), ("security", "epsilon"), ("security", "epsilon_cor"), ("security", "qber_abort"),
    ("timing", "clock_offset_ns"), ("timing", "window_ns"), ("timing", "beacon_rate_hz"), ("timing", "clock_drift_ppb"),
    ("passes", "time_step_s"), ("passes", "max_range_km"), ("passes", "start_elevation_deg"), ("passes", "night_only"),
    ("background", "sky_rate_hz"), ("background", "city_rate_hz"), ("receiver", "aperture_m"), ("detectors", "efficiency"),
    ("detectors", "dark_count_hz"), ("detectors", "dead_time_ns"), ("simulation", "slice_s"), ("apt", "fine_rate_hz"),
    ("apt", "coarse_rate_hz"), ("transmitter", "divergence_urad"), ("atmosphere", "zenith_loss_db"),
    ("station", "latitude_deg"), ("station", "altitude_m"), ("polarization", "intrinsic_contrast"), ("attack", "kind"),
    ("attack", "fraction"), ("receiver", "no_such_field"), ("orbit", "tle_line1"), ("orbit", "tle_line2"),
]

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e-12, 1e-6, 0.5, 1.0, 50.0, 1e6, 1e12, 1e300]),
)
values = st.one_of(
    floats,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(max_size=6),
    st.lists(floats, max_size=5),
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def _preset_value(table: str, field: str):
    from satqkd import load_preset

    return getattr(getattr(load_preset("micius-2016-12-19"), table), field, None)


@st.composite
def near_preset(draw, table: str, field: str):
    """The preset's value scaled or flipped: mostly valid configurations that reach the work predictor."""
    v = _preset_value(table, field)
    k = draw(st.sampled_from([0.0, 1e-3, 0.5, 0.9, 1.1, 2.0, 10.0, 100.0]))
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return float(v) * k
    if isinstance(v, list):
        return [float(x) * k for x in v]
    if isinstance(v, str):  # a TLE line with one character changed
        i = draw(st.integers(0, len(v) - 1))
        return v[:i] + draw(st.sampled_from(list("0123456789 .-+xE"))) + v[i + 1:]
    return draw(values)


@st.composite
def config_texts(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # not TOML, or not UTF-8
        return draw(st.binary(max_size=60))
    base = draw(st.sampled_from(["micius-2016-12-19", "micius-relay-xinglong-nanshan"]))
    tables: dict[str, dict] = {}
    for table, field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True)):
        near = near_preset(table, field)
        tables.setdefault(table, {})[field] = draw(st.one_of(values, near, near, near))
    lines = [f'base = "{base}"']
    for table, kv in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in kv.items()]
    return ("\n".join(lines) + "\n").encode()


def mutate(data: bytes, draw) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "garbage", "empty"]))
    if how == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=300))
    return b""


OUT_KINDS = ["fresh", "existing-empty", "under-a-file", "proc", "missing-parents", "a-file"]


def out_path(kind: str, work: Path) -> Path:
    return {
        "fresh": work / "out",
        "existing-empty": work / "empty",
        "under-a-file": work / "a_file" / "out",
        "proc": Path("/proc/satqkd-fuzz/out"),
        "missing-parents": work / "x" / "y" / "out",
        "a-file": work / "a_file",
    }[kind]


@st.composite
def invocations(draw):
    """``(command args with {cfg}/{store}/{raw} and out-kind placeholders, config bytes)``."""
    cmd = draw(st.sampled_from(["simulate", "run", "passes", "link", "keys-ls", "keys-stats", "postprocess", "split",
                                "campaign", "relay", "otp", "certs"]))
    out = draw(st.sampled_from(OUT_KINDS))
    seed = draw(st.sampled_from(["0", "7", "0", "7", "-1", "x", "99999999999999999999"]))
    cfg = draw(config_texts())
    if cmd in ("simulate", "run"):
        args = [cmd, "--config", "{cfg}", "--out", out, "--seed", seed, "--no-figures"]
    elif cmd == "passes":
        args = ["passes", "--config", "{cfg}", "--days", draw(st.sampled_from(["0.5", "1", "0.5", "1", "nan", "-1", "400", "x"])), "--json"]
    elif cmd == "link":
        args = ["link", "--config", "{cfg}", "--range-km", draw(st.sampled_from(["645", "1200", "645", "1200", "50", "inf", "nan", "x"])), "--json"]
    elif cmd in ("keys-ls", "keys-stats"):
        args = ["keys", cmd[5:], "--store", "{store}"]
        if cmd == "keys-ls":
            args += ["--limit", draw(st.sampled_from(["0", "3", "-2"])), "--state", draw(st.sampled_from(["available", "bogus", ""]))]
    elif cmd == "postprocess":
        args = ["postprocess", "{raw}", "--out", out, "--ec", draw(st.sampled_from(["cascade", "hamming", "turbo"]))]
    elif cmd == "split":
        args = ["party", "split", "{raw}", "--alice-out", out, "--bob-out", draw(st.sampled_from(OUT_KINDS))]
    elif cmd == "campaign":
        args = ["campaign", "--config", "{cfg}", "--days", draw(st.sampled_from(["1", "0.5", "nan", "0"])), "--out", out,
                "--workers", draw(st.sampled_from(["1", "2", "0"])), "--no-figures"]
    elif cmd == "relay":
        args = ["relay", "--config", "{cfg}", "--store-a", "{store}", "--store-b", out, "--out", out, "--no-figures"]
    elif cmd == "certs":
        args = ["kme", "certs", out, "--sae", draw(st.one_of(st.text(max_size=4), st.sampled_from(["sae-a", "kme-xinglong"])))]
    else:
        args = ["otp", draw(st.sampled_from(["encrypt", "decrypt"])), "{cfg}", out, "--store", "{store}", "--peer", "Micius"]
    return args, cfg


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


#: a longer, random search: SATQKD_FUZZ_EXAMPLES=2000 pytest tests/test_cli_fuzz.py
_EXAMPLES = int(os.environ.get("SATQKD_FUZZ_EXAMPLES", "60"))


@settings(max_examples=_EXAMPLES, deadline=None, derandomize="SATQKD_FUZZ_EXAMPLES" not in os.environ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(inv=invocations(), data=st.data())
def test_cli_fuzz_exit_codes_no_traceback_nothing_written_on_exit_2(good_files, inv, data):
    args, cfg_bytes = inv
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "empty").mkdir()
        (work / "a_file").write_text("a file")
        cfg = work / "mission.toml"
        cfg.write_bytes(cfg_bytes)
        store = work / "store.db"
        store.write_bytes(mutate(good_files["store"], data.draw) if data.draw(st.booleans()) else good_files["store"])
        raw = work / "raw"
        raw.mkdir()
        (raw / "raw.npz").write_bytes(mutate(good_files["raw"], data.draw) if data.draw(st.integers(0, 4)) else good_files["raw"])
        subs = {"{cfg}": str(cfg), "{store}": str(store), "{raw}": str(raw)}
        argv = [subs.get(a, str(out_path(a, work)) if a in OUT_KINDS else a) for a in args]
        before = snapshot(work)
        r = CliRunner().invoke(app, argv, env={"SATQKD_MAX_MEMORY_GB": "0.01"})
        assert r.exception is None or isinstance(r.exception, SystemExit), (argv, repr(r.exception))
        assert r.exit_code in (0, 1, 2), (argv, r.exit_code, r.output)
        assert "Traceback" not in r.output, (argv, r.output)
        if r.exit_code == 2:
            assert snapshot(work) == before, (argv, r.output)
        assert not os.path.exists("/proc/satqkd-fuzz")


# hypothesis and function-scoped fixtures do not mix: the good files are made once per module
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    import satqkd
    from satqkd.keys.store import KeyStore, Origin
    from synthetic_passes import preset_pass_slice

    d = tmp_path_factory.mktemp("fuzz")
    with KeyStore(d / "good.db", site="Xinglong") as s:
        for _ in range(5):
            s.deposit("Micius", np.ones(8192, dtype=np.uint8), origin=Origin())
    cfg = satqkd.load_preset("micius-2016-12-19")
    satqkd.save_raw(satqkd.simulate(cfg, seed=1, geometry=preset_pass_slice(cfg, slice(130, 133))).raw, d)
    return _Files(store=(d / "good.db").read_bytes(), raw=(d / "raw.npz").read_bytes())


class _Files(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "<good store and raw.npz bytes>"
