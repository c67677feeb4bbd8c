"""A paletted image (8-bit indexes into a colour table) is refused as an input or a training image, in one line
that says how to expand it; expanded by GDAL as the line says, it reads as the colours it shows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.scene import open_scene, read_window
from geoseg.methods.training import TrainPair
from tests.fixtures import write_raster

H, W = 40, 48
#: index -> colour: index order says nothing of brightness or greenness (index 1 is bright, 2 dark)
COLOURS = {0: (30, 90, 40), 1: (230, 220, 200), 2: (20, 20, 20), 3: (60, 160, 60)}


def _paletted(path: Path) -> np.ndarray:
    idx = np.random.default_rng(4).integers(0, 4, (H, W)).astype(np.uint8)
    profile = dict(driver="GTiff", width=W, height=H, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5100000, 10, 10), photometric="PALETTE")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(idx, 1)
        dst.write_colormap(1, {k: (*v, 255) for k, v in COLOURS.items()})
    return idx


def test_a_paletted_input_is_refused_and_its_gdal_expansion_reads_as_its_colours(tmp_path):
    path = tmp_path / "ortho_paletted.tif"
    idx = _paletted(path)
    with rasterio.open(path) as ds:  # the oracle: GDAL itself calls the band paletted
        assert ds.colorinterp[0].name == "palette"
    with pytest.raises(InputError, match=r"input .*ortho_paletted.tif band 1 is paletted: its values index a colour "
                                         r"table.*gdal_translate -expand rgb ortho_paletted.tif rgb.tif"):
        open_scene([str(path)])
    kept = open_scene([{"path": str(path), "bands": [None]}])  # the job's word: the indexes as they are
    assert read_window(kept, Window(0, 0, H, W))[0][0].tobytes() == idx.astype(np.float32).tobytes()
    if shutil.which("gdal_translate") is None:
        pytest.skip("the expansion the message gives needs gdal_translate (gdal-bin)")
    expanded = tmp_path / "rgb.tif"
    subprocess.run(["gdal_translate", "-q", "-expand", "rgb", str(path), str(expanded)], check=True)
    scene = open_scene([str(expanded)])
    assert [b.role for b in scene.bands] == ["red", "green", "blue"]
    data, _ = read_window(scene, Window(0, 0, H, W))
    lut = np.array([COLOURS[k] for k in range(4)], np.float32)
    np.testing.assert_array_equal(data.transpose(1, 2, 0), lut[idx])


def test_a_paletted_training_image_is_refused(tmp_path):
    from geoseg.legend import ClassInfo
    from geoseg.methods.training.data import TrainSource, _resolve_class_lut

    _paletted(tmp_path / "img.tif")
    write_raster(tmp_path / "ref.tif", np.ones((H, W), np.uint8))
    lut = _resolve_class_lut([ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff")])
    with pytest.raises(InputError, match="training image .*img.tif band 1 is paletted"):
        TrainSource(TrainPair(image=tmp_path / "img.tif", reference=tmp_path / "ref.tif"), None, lut, (0.0, 1.0))


def test_geoseg_run_refuses_a_paletted_input_in_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "map.tif"
    _paletted(path)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "p", "output": str(tmp_path / "out"), "inputs": [str(path)],
                                   "method": {"kind": "kmeans", "n_clusters": 3}}))
    code = "import sys; from geoseg.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "run", str(job)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "band 1 is paletted" in out.stderr
    assert not (tmp_path / "out").exists()
