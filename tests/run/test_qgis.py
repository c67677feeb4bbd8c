"""QGIS itself opens geoseg's outputs with their stored styles and the job's class names, and
draws each class in the report's colour at known class locations.

QGIS runs headless (``QT_QPA_PLATFORM=offscreen``) in Debian's system Python with
``python3-qgis`` (``tests/run/qgis/qgis_probe.py``); the test is skipped where that cannot be
imported (CI installs it, like Chromium).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy.ndimage import binary_erosion

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import LEGEND_CLASSES as CLASSES
from tests.fixtures import blocky_scene, write_raster

SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).parent / "qgis" / "qgis_probe.py"


def _qgis_importable() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, env=env, timeout=120)
    return r.returncode == 0


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not _qgis_importable(), reason="needs Debian's python3-qgis (apt-get install -y python3-qgis; CI installs it)"
    ),
]


def test_qgis_shows_the_job_legend_in_the_report_colours(tmp_path: Path, dask_client) -> None:
    """A default run (no ``export:``): QGIS opens labels.zarr itself with its classes, names and the
    report's colours (labels.qml beside it), and polygons.gpkg with the same classes."""
    scene, classes = blocky_scene(tmp_path)
    ref = write_raster(tmp_path / "ref.tif", (classes + 1).astype("uint8"), nodata=0)
    job = parse_job({
        "name": "qgis", "inputs": [str(scene)], "output": str(tmp_path / "out"), "chunk_size": 128,
        "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000, "features": {"indices": ["ndvi"]}},
        "classes": CLASSES, "reference": {"path": str(ref)}, "regions": {"grid_cell_m": 1000},
    })  # fmt: skip
    run_job(job, client=dask_client, show_progress=False)
    out = tmp_path / "out"
    assert not (out / "labels.tif").exists()
    expect = {c["id"]: c for c in CLASSES}  # the raster holds class ids (metrics.csv's)
    html = (out / "report.html").read_text()
    report_colour = {name: col for col, cid, name in re.findall(r'background: (#[0-9a-f]{6})"></span>(\d+) ([^<]+)<', html)}
    with rasterio.open(out / "labels.zarr") as ds:
        labels = ds.read(1)
    pixels, want = [], []
    for cid, cls in expect.items():  # a pixel deep inside a reference patch of each class
        inner = binary_erosion(classes + 1 == cid, iterations=4)
        r, c = np.argwhere(inner)[len(np.argwhere(inner)) // 2]
        assert labels[r, c] == cid
        pixels.append([int(c), int(r)])
        want.append(report_colour[cls["name"]])
    args = tmp_path / "probe.json"
    args.write_text(json.dumps({"raster": str(out / "labels.zarr"), "polygons": str(out / "polygons.gpkg"),
                                "regions": str(out / "regions_metrics.gpkg"), "pixels": pixels}))  # fmt: skip
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    res = subprocess.run([SYSTEM_PYTHON, str(PROBE), str(args)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    names = {k: v["name"] for k, v in expect.items()}
    colours = {k: v["color"] for k, v in expect.items()}
    assert seen["raster"]["valid"] and seen["raster"]["renderer"] == "paletted"
    assert {v: (lbl, col) for v, lbl, col in seen["raster"]["classes"]} == {k: (names[k], colours[k]) for k in expect}
    assert seen["polygons"]["valid"] and seen["polygons"]["renderer"] == "categorizedSymbol"
    assert {v: (lbl, col) for v, lbl, col in seen["polygons"]["classes"]} == {k: (names[k], colours[k]) for k in expect}
    assert seen["polygons"]["names"] == sorted(names.values())
    assert seen["raster"]["rendered"] == want, "QGIS draws labels.zarr in the report's colours"
    assert seen["polygons"]["rendered"] == want, "QGIS draws polygons.gpkg in the report's colours"
    assert seen["regions"]["renderer"] == "graduatedSymbol" and seen["regions"]["attr"] == "miou"
    assert [c for _, _, c in seen["regions"]["ranges"]] == ["#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641"]
