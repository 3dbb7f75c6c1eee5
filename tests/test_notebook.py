"""Issue 12 §2: the example notebook a link engineer starts from runs top to bottom (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "link_engineer.ipynb"


def test_link_engineer_notebook_runs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = nb.cells[1]
    assert params.cell_type == "code" and "DAYS = 7" in params.source
    params.source = params.source.replace("DAYS = 7", "DAYS = 2")  # fewer passes: a short run
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    text = lambda i: "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs[i])  # noqa: E731
    assert "MissionConfig(name='micius-2016-12-19'" in text(2)  # the short repr
    assert "receiver.aperture_m" in text(4) and "greater than 0" in text(4)  # ConfigError on assignment
    assert "range_weighted_s" in text(6)
    assert "final_key_bits" in text(8)
    # the figures came back as images (inline backend untouched by satqkd)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
