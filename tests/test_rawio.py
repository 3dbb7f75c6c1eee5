"""raw.npz round-trips every field exactly; bad files are refused with a clear error."""

from dataclasses import fields

import numpy as np
import pytest

import satqkd
from satqkd.rawio import FORMAT_VERSION, load_raw, save_raw
from satqkd.records import RawRecords
from synthetic_passes import preset_pass_slice


@pytest.fixture(scope="module")
def raw():
    cfg = satqkd.load_preset("micius-2016-12-19")
    return satqkd.simulate(cfg, seed=3, geometry=preset_pass_slice(cfg, slice(130, 136))).raw


def test_every_field_round_trips(tmp_path, raw):
    save_raw(raw, tmp_path, include_truth=True)
    back = load_raw(tmp_path)
    for f in fields(RawRecords):
        a, b = getattr(raw, f.name), getattr(back, f.name)
        if f.name == "meta":
            assert b["pass_id"] == a["pass_id"]
        elif isinstance(a, np.ndarray):
            assert np.array_equal(a, b), f.name
            assert a.dtype == b.dtype or f.name.startswith("truth_"), f.name
        else:
            assert a == b, f.name


def test_truth_is_left_out_by_default(tmp_path, raw):
    save_raw(raw, tmp_path)
    assert load_raw(tmp_path).truth_pulse_index is None


def test_wrong_version_and_missing_file(tmp_path, raw):
    with pytest.raises(FileNotFoundError, match="no raw records"):
        load_raw(tmp_path / "nothing")
    p = save_raw(raw, tmp_path)
    z = dict(np.load(p))
    z["format_version"] = np.asarray(FORMAT_VERSION + 1)
    np.savez(tmp_path / "raw.npz", **z)
    with pytest.raises(ValueError, match="format version"):
        load_raw(tmp_path)
