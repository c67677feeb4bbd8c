"""The evaluate / vectorize / export commands, and label rasters given as GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

from geoseg.cli import main
from geoseg.io.export import export_cog
from geoseg.io.labelstore import read_label_info
from tests.fixtures import CRS_UTM, blocky_classes, write_raster, write_store

TRANSFORM = Affine(10, 0, 500_000, 0, -10, 5_100_000)


@pytest.fixture()
def rasters(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A label store, a reference (classes 1..4, nodata 0) and both arrays; labels are off on a stripe."""
    truth = blocky_classes(200, 260) + 1
    labels = (truth - 1).astype(np.uint8)  # cluster ids 0..3 = classes 1..4
    labels[:, 100:110] = (labels[:, 100:110] + 1) % 4
    labels[:15, :15] = 255
    truth[180:, 200:] = 0
    store = write_store(tmp_path / "labels.zarr", labels, 64, transform=TRANSFORM)
    ref = write_raster(tmp_path / "ref.tif", truth.astype(np.uint8), nodata=0, transform=TRANSFORM, crs=CRS_UTM.to_string())
    return store, ref, labels, truth


def _expected_iou(labels: np.ndarray, truth: np.ndarray, mapping: dict[int, int]) -> dict[int, float]:
    ok = (labels != 255) & (truth != 0)
    mapped = np.vectorize(lambda v: mapping.get(int(v), -1))(labels[ok])
    t = truth[ok]
    return {c: ((mapped == c) & (t == c)).sum() / ((mapped == c) | (t == c)).sum() for c in np.unique(t)}


@pytest.mark.parametrize("as_geotiff", [False, True])
def test_evaluate_command_matches_a_direct_count(rasters, tmp_path, capsys, as_geotiff):
    store, ref, labels, truth = rasters
    source = export_cog(store, tmp_path / "labels.tif") if as_geotiff else store
    rc = main(["evaluate", str(source), str(ref), "--out", str(tmp_path / "ev"), "--mapping", "hungarian",
               "--grid-cell-m", "1000", "--class-names", "1=cropland,2=forest"])
    assert rc == 0
    assert "cropland" in capsys.readouterr().out
    mapping = pd.read_csv(tmp_path / "ev" / "class_mapping.csv").dropna(subset=["class_id"])
    mapping = {int(r.label_id): int(r.class_id) for r in mapping.itertuples()}
    assert mapping == {0: 1, 1: 2, 2: 3, 3: 4}
    table = pd.read_csv(tmp_path / "ev" / "class_mapping.csv")
    with rasterio.open(source) as ds:  # geoseg evaluate scores the raster, it does not rewrite it in class ids
        held = set(np.unique(ds.read(1)).tolist()) - {255}
    assert held <= set(table["raster_value"]) and (table["raster_value"] == table["label_id"]).all()
    m = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    scene = m[(m.region_id == "ALL") & (m.kind == "class")].set_index("class_id")
    for c, iou in _expected_iou(labels, truth, mapping).items():
        assert scene.loc[c, "iou"] == pytest.approx(iou, rel=1e-9)
    assert len(m[m.kind == "region"].region_id.unique()) > 2  # the 1 km grid cells and ALL
    assert (tmp_path / "ev" / "report.html").stat().st_size > 10_000


def test_vectorize_command_counts_regions_per_class(rasters, tmp_path, capsys):
    store, _, labels, _ = rasters
    out = tmp_path / "poly.gpkg"
    assert main(["vectorize", str(store), str(out), "--skip", "3"]) == 0
    df = pyogrio.read_dataframe(out, layer="polygons")
    for c in (0, 1, 2):
        _, n = ndimage.label(labels == c)  # 4-connectivity, like the vectoriser
        assert (df.class_id == c).sum() == n
        assert df[df.class_id == c].area_m2.sum() == pytest.approx((labels == c).sum() * 100.0, rel=1e-9)
    assert 3 not in set(df.class_id) and 255 not in set(df.class_id)
    assert f"{len(df)} polygons" in capsys.readouterr().out


def test_export_command_writes_cog_and_overviews(rasters, tmp_path):
    store, _, labels, _ = rasters
    cog = tmp_path / "labels-cog.tif"
    assert main(["export", str(store), "--cog", str(cog), "--overviews", "2,4"]) == 0
    with rasterio.open(cog) as ds:
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.colormap(1)[1][:3] != (0, 0, 0)
    info = read_label_info(store / "overviews" / "4")
    assert info.grid.shape == (50, 65)
    assert info.grid.transform == TRANSFORM * Affine.scale(4)


def test_geotiff_labels_keep_the_exported_legend(rasters, tmp_path):
    store, *_ = rasters
    info = read_label_info(export_cog(store, tmp_path / "l.tif"))
    assert [c.name for c in info.legend] == [c.name for c in read_label_info(store).legend]
    assert info.nodata == 255


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "{tmp}/missing.zarr", "{ref}", "--out", "{tmp}/ev"], "does not exist"),
        (["evaluate", "{store}", "{ref}", "--out", "{tmp}/ev", "--class-names", "cropland"], "id=name"),
        (["export", "{store}"], "nothing to export"),
        (["export", "{tmp}/l.tif", "--overviews", "2"], "gdaladdo"),
        (["vectorize", "{store}", "{tmp}/p.gpkg", "--connectivity", "8"], "connectivity"),
    ],
)
def test_bad_arguments_are_one_line_errors(rasters, tmp_path, capsys, argv, message):
    store, ref, labels, _ = rasters
    write_raster(tmp_path / "l.tif", labels, transform=TRANSFORM, crs=CRS_UTM.to_string())
    args = [a.format(tmp=tmp_path, ref=ref, store=store) for a in argv]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists() and not (tmp_path / "p.gpkg").exists()


def test_version_is_printed(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"geoseg {version('geoseg')}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_and_quiet_are_accepted_before_or_after_the_subcommand(rasters, tmp_path, capsys, where):
    store, ref, *_ = rasters
    args = ["evaluate", str(store), str(ref), "--out", str(tmp_path / "ev"), "--mapping", "hungarian"]
    argv = ["-q", "-v", *args] if where == "before" else [*args, "-q", "-v"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Per-class IoU" not in out  # -q: no table, only the paths written
    assert str((tmp_path / "ev" / "metrics.csv").resolve()) in out


def test_printed_paths_are_resolved(rasters, tmp_path, capsys):
    store, ref, *_ = rasters
    (tmp_path / "jobs").mkdir()
    assert main(["evaluate", str(store), str(ref), "--out", str(tmp_path / "jobs" / ".." / "ev")]) == 0
    out = capsys.readouterr().out
    assert ".." not in out and str((tmp_path / "ev" / "metrics.csv").resolve()) in out


@pytest.mark.parametrize("ext, driver", [(".fgb", "FlatGeobuf"), (".shp", "ESRI Shapefile"), (".parquet", None)])
def test_vectorize_writes_the_format_of_the_extension(rasters, tmp_path, capsys, ext, driver):
    import geopandas as gpd

    store, _, labels, _ = rasters
    assert main(["vectorize", str(store), str(tmp_path / "ref.gpkg")]) == 0
    out = tmp_path / f"poly{ext}"
    assert main(["vectorize", str(store), str(out)]) == 0
    ref = pyogrio.read_dataframe(tmp_path / "ref.gpkg", layer="polygons")
    if driver is None:  # GeoParquet: read by geopandas' own reader, with the CRS from the 'geo' metadata
        got = gpd.read_parquet(out)
    else:
        assert pyogrio.read_info(out)["driver"] == driver
        got = pyogrio.read_dataframe(out)
    assert got.crs == ref.crs
    assert len(got) == len(ref)
    assert sorted(got.class_id) == sorted(ref.class_id)
    assert got.geometry.area.sum() == pytest.approx(ref.geometry.area.sum(), rel=1e-12)
    assert got.geometry.area.sum() == pytest.approx((labels != 255).sum() * 100.0, rel=1e-9)
    assert not list(tmp_path.glob(".*geoseg-tmp*"))  # the intermediate GeoPackage is gone
    assert str(out.resolve()) in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["vectorize", "{store}", "{tmp}/p.kml"], "cannot write polygons as '.kml'"),
    (["vectorize", "{store}", "{tmp}/p.shp", "--layout", "per_class"], "holds one layer"),
])
def test_vectorize_refuses_formats_it_cannot_write_before_any_work(rasters, tmp_path, capsys, argv, message):
    store, *_ = rasters
    assert main([a.format(tmp=tmp_path, store=store) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not list(tmp_path.glob("p.*"))
