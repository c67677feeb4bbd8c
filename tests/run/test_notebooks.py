"""Every analyst notebook runs end to end and shows real (non-blank) figures."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.integration


def _figures(nb) -> list[np.ndarray]:
    from PIL import Image

    images = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")))
    return images


#: Notebooks that must be there (every ``notebooks/*.ipynb`` is executed below, these included).
EXPECTED = (
    "01-explore-scene", "02-kmeans-window", "03-train-deeplab", "04-evaluate-regions", "05-change-report",
)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3
    assert set(EXPECTED) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_draws(path, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = _figures(nb)
    assert figures, f"{path.name} produced no figure"
    for i, cell in enumerate(nb.cells):  # a figure that silently stops showing (e.g. a backend switch) fails
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])), (
                f"{path.name}: cell {i} calls plt.show() but shows no figure"
            )
    for img in figures:
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, "a figure is (nearly) blank"


def test_notebooks_write_their_own_folders():
    """Two notebooks run in one GEOSEG_NOTEBOOK_DIR must not share a job's output folder (a run refuses
    a folder holding another job's run: 04 failed after 02 when both wrote WORK/kmeans)."""
    import re

    owners: dict[str, str] = {}
    for path in NOTEBOOKS:
        text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        for folder in set(re.findall(r'"output":\s*str\(WORK / "([^"]+)"\)', text)):
            assert folder not in owners, f"{path.name} and {owners[folder]} both write WORK/{folder}"
            owners[folder] = path.name
    assert owners  # the pattern still finds the notebooks' outputs
