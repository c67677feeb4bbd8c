"""Instance polygons chunk by chunk equal GDAL's polygons of the whole instance raster, one per id."""

from __future__ import annotations

import numpy as np
import pyogrio
import rasterio
import shapely
import zarr
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.cli import main
from geoseg.io.labelstore import read_label_info
from geoseg.run.instances import segment_instances
from geoseg.samples.crowns import TREE, make_crowns
from geoseg.vector.instancepolygons import instance_polygons


def test_polygons_equal_whole_raster_shapes(tmp_path) -> None:
    files = make_crowns(tmp_path, width=384, height=320, seed=11)
    store, table = segment_instances(files.reference, [TREE], tmp_path / "o", chunk_size=128)
    grid = read_label_info(files.reference).grid
    ids, geoms = instance_polygons(store, grid.tiles(128))
    raster = zarr.open_group(str(store), mode="r")["instances"][:]
    whole: dict[int, list] = {}
    for g, v in shapes(raster.astype(np.int32), mask=raster > 0, connectivity=4, transform=grid.transform):
        whole.setdefault(int(v), []).append(shape(g))
    assert ids.tolist() == sorted(whole) == list(range(1, table.n + 1))
    crossing = 0
    for i, g in zip(ids.tolist(), geoms):
        expect = shapely.union_all(whole[i])
        assert shapely.equals(g, expect), i
        assert abs(g.area - table.size[i - 1] * grid.pixel_area_m2) < 1e-6
        crossing += int(len(whole[i]) == 1 and not g.within(shapely.box(*grid.window_grid(
            next(w for w in grid.tiles(128).windows() if w.row_off <= table.row[i - 1] < w.row_off + w.height
                 and w.col_off <= table.col[i - 1] < w.col_off + w.width)).bounds)))
    assert crossing > 10  # instances cut by chunk seams came back whole


def test_cli_writes_instances_and_scores(tmp_path, capsys) -> None:
    files = make_crowns(tmp_path, width=256, height=256, seed=2)
    code = main(["instances", str(files.reference), "--classes", str(TREE), "--out", str(tmp_path / "out"),
                 "--chunk-size", "128", "--reference", str(files.crowns), "--reference-field", "class_id"])
    assert code == 0
    printed = capsys.readouterr().out
    truth = rasterio.open(files.instances).read(1)
    n_true = len(np.unique(truth)) - 1
    assert f"{n_true} reference" in printed
    frame = pyogrio.read_dataframe(tmp_path / "out" / "instances.gpkg")
    assert frame["instance_id"].tolist() == list(range(1, len(frame) + 1))
    assert set(frame["class_id"]) == {TREE} and (frame["area_m2"] > 0).all()
    metrics = (tmp_path / "out" / "instance_metrics.csv").read_text().splitlines()
    row = dict(zip(metrics[0].split(","), metrics[1].split(",")))
    assert int(row["n_ref"]) == n_true and float(row["recall"]) >= 0.9


def test_cli_refuses_a_reference_without_its_class(tmp_path, capsys) -> None:
    files = make_crowns(tmp_path, width=64, height=64, seed=2)
    code = main(["instances", str(files.reference), "--classes", "2", "--out", str(tmp_path / "o"),
                 "--reference", str(files.crowns)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("geoseg: error:") and "class" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "instances.zarr").exists()
