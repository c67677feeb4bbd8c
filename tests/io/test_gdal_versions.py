"""README states the GDAL version its Zarr claims hold for; labels.tif is right under the system GDAL
(issue 14, finding 12: GDAL 3.6, Debian's and QGIS users', misplaces labels.zarr in longitude/latitude)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from geoseg.io.export import export_cog
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import ClassInfo
from tests.fixtures import blocky_classes, chunk_grid

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_names_the_gdal_version_geoseg_runs_with_and_points_old_gdal_to_the_cog():
    text = README.read_text()
    assert f"GDAL {rasterio.__gdal_version__}" in text  # bump the README with the lock
    assert "GDAL 3.6" in text and "labels.tif" in text and "not written by default" in text


@pytest.mark.skipif(shutil.which("gdalwarp") is None, reason="no system GDAL (gdal-bin)")
def test_system_gdalwarp_places_labels_tif_where_pyproj_says(tmp_path):
    grid = chunk_grid(128, 160, 64)  # 10 m UTM 33N pixels from (500000, 5100000)
    writer = LabelStoreWriter.create(tmp_path / "labels.zarr", grid, (ClassInfo(0, "a", "#000000"),))
    labels = blocky_classes(128, 160)
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    tif = export_cog(writer.finalize(), tmp_path / "labels.tif")
    out = tmp_path / "wgs84.tif"
    subprocess.run(["gdalwarp", "-q", "-t_srs", "EPSG:4326", str(tif), str(out)], check=True, timeout=120)
    version = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True, check=True).stdout
    with rasterio.open(out) as ds:
        left, top = ds.bounds.left, ds.bounds.top
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(500000, 5100000)
    assert np.allclose([left, top], [lon, lat], atol=1e-3), (version, left, top, lon, lat)
    assert re.match(r"GDAL \d+\.\d+", version)
