"""Figures that add up: excluded shares as disjoint reasons summing to the total, shares never
rounded to 100 % or 0 %, areas in a unit that fits, plain numbers, a CRS note for raster references
and a preview with one stretch over the true-colour bands."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg.accuracy.evaluate import evaluate
from geoseg.accuracy.figures import percent
from geoseg.accuracy.report import read_rgb_decimated, write_outputs
from tests.fixtures import TRANSFORM, geo_grid, write_raster, write_store


def test_excluded_reasons_are_disjoint_and_add_up(tmp_path: Path) -> None:
    labels = np.ones((100, 100), np.uint8)
    labels[:20] = 255  # label nodata: 20 %
    ref = np.ones((100, 100), np.uint8)
    ref[10:] = 0  # reference nodata: 90 %, of which 10 % under label nodata too
    ref[99, 99] = 1  # one scored pixel besides the top band: shares near 100 % and 0 %
    labels[99, 99] = 1
    store = write_store(tmp_path / "labels.zarr", labels, 64)
    ev = evaluate(store, str(write_raster(tmp_path / "ref.tif", ref, nodata=0)))
    lines = ev.coverage_lines()
    lab = int((labels == 255).sum())
    ref_only = int(((ref == 0) & (labels != 255)).sum())
    scored = labels.size - lab - ref_only
    assert lines[0] == f"scored: {percent(scored, labels.size)} of the scene ({scored:,} of {labels.size:,} px)"
    excluded = next(line for line in lines if line.startswith("excluded:"))
    assert excluded == (
        f"excluded: {percent(lab + ref_only, labels.size)} of the scene ({lab + ref_only:,} px): "
        f"label nodata {percent(lab, labels.size)}; reference nodata (labels valid) {percent(ref_only, labels.size)}"
    )
    shares = [float(v) for v in re.findall(r"([\d.]+) %", excluded)]
    assert abs(shares[0] - (shares[1] + shares[2])) < 0.1  # the reasons add up to the total, not 110 %
    assert "100.0 %" not in " ".join(lines) and " 0.0 %" not in " ".join(lines)


def test_a_raster_reference_in_another_crs_is_noted_with_the_transformation(tmp_path: Path) -> None:
    t = Affine(10, 0, 600000, 0, -10, 200000)
    store = write_store(tmp_path / "labels.zarr", np.ones((60, 60), np.uint8), 32, transform=t, crs=CRS.from_epsg(32119))
    ref = write_raster(tmp_path / "ref.tif", np.ones((60, 60), np.uint8), crs="EPSG:3358", transform=t, nodata=0)
    note = [line for line in evaluate(store, str(ref)).coverage_lines() if "reprojected" in line]
    assert len(note) == 1 and "EPSG:3358" in note[0] and "EPSG:32119" in note[0]
    assert "NAD83(HARN) to NAD83" in note[0] and "unavailable" not in note[0]  # PROJ's operation, named


def test_report_areas_take_a_unit_that_fits_and_numbers_stay_plain(tmp_path: Path) -> None:
    small = Affine(0.2, 0, 500000, 0, -0.2, 5100000)  # 40 x 40 px of 0.04 m²: a 64 m² scene
    labels = np.ones((40, 40), np.uint8)
    labels[:, 20:] = 2
    store = write_store(tmp_path / "labels.zarr", labels, 32, transform=small)
    ev = evaluate(store, str(write_raster(tmp_path / "ref.tif", labels, transform=small, nodata=0)))
    html = (write_outputs(ev, tmp_path / "out", preview=False)["report"]).read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "<th>reference area (m²)</th>" in text and "km²" not in text  # the reference class's, not the map's
    assert "<td>32.00</td>" in text  # 800 px of 0.04 m²
    assert not re.search(r"\de[+-]\d", text)


def test_preview_stretches_the_true_colour_bands_together(tmp_path: Path) -> None:
    """Bands named by role in any order; a grey pixel (equal values) stays grey."""
    img = np.zeros((3, 50, 50), np.uint16)
    img[0] = np.linspace(100, 3000, 50)[None, :]  # blue spans far more than the others
    img[1] = 500
    img[2] = 300
    img[:, 25, 25] = 400  # grey: equal in every band
    path = write_raster(tmp_path / "img.tif", img, descriptions=("blue", "green", "red"))
    rgb = read_rgb_decimated(path, geo_grid(50, 50, TRANSFORM))
    r, g, b = rgb[25, 25]
    assert r == g == b  # one stretch: a grey pixel is grey (a stretch per band made it coloured)
    assert rgb[0, 0, 2] < rgb[0, 49, 2]  # blue is the blue channel, rising left to right
