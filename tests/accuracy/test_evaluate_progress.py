"""The evaluate stage draws a progress bar on a terminal, and nothing in pipes and logs."""

from __future__ import annotations

import io
import sys

import dask
import numpy as np

from geoseg.accuracy.evaluate import evaluate
from tests.fixtures import write_raster, write_store


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_evaluate_shows_progress_on_a_terminal_only(tmp_path, monkeypatch):
    labels = np.random.default_rng(0).integers(0, 3, (150, 170)).astype(np.uint8)
    store = write_store(tmp_path / "labels.zarr", labels, 64)
    ref = write_raster(tmp_path / "ref.tif", labels[None])
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with dask.config.set(scheduler="threads"):  # dask's local bar, whatever client an earlier test made default
        ev = evaluate(store, ref, show_progress=True)
    assert "100%" in terminal.getvalue()  # dask's bar, finished
    assert ev.metrics().iloc[0]["overall_accuracy"] == 1.0
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with dask.config.set(scheduler="threads"):
        evaluate(store, ref, show_progress=True)
    assert pipe.getvalue() == ""
