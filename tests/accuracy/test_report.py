"""Accuracy outputs: CSV tables, the regions GeoPackage and an HTML page that renders.

The rendering test needs Debian's ``chromium`` at /usr/bin/chromium (CI installs it) and is
skipped where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio

from geoseg.accuracy.evaluate import METRIC_COLUMNS, evaluate
from geoseg.accuracy.report import write_outputs
from geoseg.legend import NODATA_LABEL, ClassInfo, cluster_legend
from tests.fixtures import TRANSFORM, random_blocks, write_raster, write_regions, write_store

CHROMIUM = Path("/usr/bin/chromium")
OUTPUTS = {"metrics", "confusion", "class_mapping", "regions_metrics", "report"}


@pytest.fixture()
def scene(tmp_path: Path) -> dict:
    """Labels with nodata, a reference, two regions and a 3-band image named like Sentinel-2."""
    shape = (120, 150)
    truth = random_blocks(shape, 10, 5, seed=1)
    labels = truth.copy()
    wrong = random_blocks(shape, 10, 3, seed=2) == 1
    labels[wrong] = labels[wrong] % 5 + 1
    labels[:6, :6] = NODATA_LABEL
    rgb = np.stack([(truth * 37 + k * 50) % 255 for k in range(3)]).astype(np.uint16) * 10 + 100
    return {
        "shape": shape,
        "store": write_store(tmp_path / "labels.zarr", labels, chunk=64),
        "reference": write_raster(tmp_path / "ref.tif", truth, nodata=0, transform=TRANSFORM),
        "regions": write_regions(tmp_path / "zones.gpkg", [(0, 0, 60, 150), (60, 0, 120, 75), (60, 75, 120, 150)],
                                 [7, 8, 9]),  # fmt: skip
        "image": write_raster(tmp_path / "image.tif", rgb, transform=TRANSFORM, descriptions=("B02", "B03", "B04")),
    }


def test_outputs_exist_with_the_documented_columns(tmp_path: Path, scene: dict) -> None:
    ev = evaluate(scene["store"], scene["reference"], regions=scene["regions"], region_field="zone")
    out = tmp_path / "report"
    paths = write_outputs(ev, out, preview=scene["image"])
    assert set(paths) == OUTPUTS and all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())  # no temp files left

    metrics = pd.read_csv(paths["metrics"])
    assert list(metrics.columns) == METRIC_COLUMNS
    assert len(metrics) == len(ev.metrics())
    assert metrics["region_id"].astype(str).tolist()[0] == "ALL"
    summ = metrics[metrics["kind"] == "region"]
    np.testing.assert_allclose(summ["miou"].to_numpy(float), ev.metrics().query("kind == 'region'")["miou"].to_numpy(float))

    conf = pd.read_csv(paths["confusion"], index_col=0)
    assert conf.shape == (len(ev.class_ids), len(ev.class_ids))
    assert conf.to_numpy().sum() == ev.counts[0].sum()
    assert "1 cropland" in conf.index

    info = pyogrio.read_info(paths["regions_metrics"])
    assert rasterio.crs.CRS.from_user_input(info["crs"]).to_epsg() == 32633
    assert {"region_id", "miou", "overall_accuracy", "kappa", "valid_px", "iou_1_cropland"} <= set(info["fields"])
    gdf = gpd.read_file(paths["regions_metrics"])
    assert gdf["region_id"].tolist() == [7, 8, 9]
    table = ev.regions_table().set_index("region_id")
    np.testing.assert_allclose(gdf["miou"], [table.loc[i, "miou"] for i in (7, 8, 9)])
    assert gdf["valid_px"].dtype.kind == "i"

    page = paths["report"].read_text()
    assert page.count("data:image/png;base64,") == 4  # bars, heat map, regions map, preview
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must not load anything"
    assert "url(" not in page and "<script" not in page
    assert "cropland" in page and "Cohen" in page

    # Writing again replaces every file in place.
    again = write_outputs(ev, out, preview=False)
    assert again == paths and "data:image/png;base64," in again["report"].read_text()


def test_grid_cells_and_scene_only_outputs(tmp_path: Path, scene: dict) -> None:
    ev = evaluate(scene["store"], scene["reference"], grid_cell_m=500)
    paths = write_outputs(ev, tmp_path / "grid")
    gdf = gpd.read_file(paths["regions_metrics"])
    assert len(gdf) == 3 * 3 and gdf["miou"].notna().all()
    assert gdf.total_bounds[0] == pytest.approx(TRANSFORM.c)

    ev = evaluate(scene["store"], scene["reference"])
    paths = write_outputs(ev, tmp_path / "scene")
    gdf = gpd.read_file(paths["regions_metrics"])
    assert gdf["region_id"].tolist() == ["ALL"]
    assert "No regions were given" in paths["report"].read_text()


def test_kmeans_clusters_report_shows_the_mapping(tmp_path: Path, scene: dict) -> None:
    truth = random_blocks(scene["shape"], 10, 5, seed=1)
    clusters = ((truth + 2) % 5).astype(np.uint8)
    store = write_store(tmp_path / "k.zarr", clusters, chunk=64, legend=cluster_legend(5))
    ev = evaluate(store, scene["reference"], mapping="hungarian")
    paths = write_outputs(ev, tmp_path / "k")
    mapping = pd.read_csv(paths["class_mapping"])
    assert mapping.set_index("label_id")["class_id"].to_dict() == {0: 3, 1: 4, 2: 5, 3: 1, 4: 2}
    with rasterio.open(scene["reference"]) as ds:  # pixels: the cluster's pixels where the reference has data
        ref, nodata = ds.read(1), ds.nodata
    scored = {c: int(((clusters == c) & (ref != nodata)).sum()) for c in range(5)}
    assert mapping.set_index("label_id")["pixels"].to_dict() == scored
    assert "hungarian" in paths["report"].read_text() and "<th>scored px</th>" in paths["report"].read_text()


def _screenshot(html: Path, png: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1200,2600",
         f"--screenshot={png}", html.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")
def test_report_renders_in_headless_chromium(tmp_path: Path, scene: dict) -> None:
    from PIL import Image

    ev = evaluate(scene["store"], scene["reference"], regions=scene["regions"], region_field="zone")
    paths = write_outputs(ev, tmp_path / "out", preview=scene["image"])
    png = tmp_path / "report.png"
    run = _screenshot(paths["report"], png, tmp_path / "profile")
    assert run.returncode == 0, run.stderr[-2000:]
    assert png.exists(), run.stderr[-2000:]
    assert _console_messages(run.stderr) == []
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 200, "screenshot looks blank"
    assert (img.min(axis=2) < 200).mean() > 0.05, "screenshot is nearly all white"

    # The console check does catch errors: a page with a failing script reports one.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    run = _screenshot(bad, tmp_path / "bad.png", tmp_path / "profile-bad")
    assert any("undefinedFunction" in line for line in _console_messages(run.stderr))


def test_real_slovenia_report(tmp_path: Path, realdata: Path) -> None:
    """Real 13-band Sentinel-2 preview (B04/B03/B02) and real parcels in the regions layer."""
    ref_path = realdata / "lulc_reference.tif"
    with rasterio.open(ref_path) as src:
        ref = src.read(1)
        transform, crs = src.transform, src.crs
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(ref.shape) < 0.1, rng.choice([1, 2, 3, 4, 8], ref.shape), ref)
    labels = np.where(ref == 0, NODATA_LABEL, noisy).astype(np.uint8)
    legend = tuple(ClassInfo(i, f"c{i}", "#888888") for i in range(1, 11))
    store = write_store(tmp_path / "l.zarr", labels, chunk=50, legend=legend, transform=transform, crs=crs)
    parcels = realdata / "raba_parcels.gpkg"
    ev = evaluate(store, ref_path, regions=parcels)
    paths = write_outputs(ev, tmp_path / "out", preview=realdata / "s2_l1c_reference_scene_0.tif")
    gdf = gpd.read_file(paths["regions_metrics"])
    assert len(gdf) == 88 and gdf.crs.to_epsg() == 32633
    assert gdf["miou"].notna().sum() >= 40
    assert "iou_2_forest" in gdf.columns
    if shutil.which(str(CHROMIUM)):
        run = _screenshot(paths["report"], tmp_path / "real.png", tmp_path / "profile")
        assert run.returncode == 0 and _console_messages(run.stderr) == []
