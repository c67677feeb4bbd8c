"""Instance evaluation chunk by chunk equals the whole-raster computation; one reference instance per feature."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import zarr
from shapely.geometry import box

from geoseg.accuracy.instanceeval import evaluate_instances, open_reference_instances, write_instance_metrics
from geoseg.accuracy.instancemetrics import overlaps_of_rasters, score_instances
from geoseg.io.labelstore import read_label_info
from geoseg.run.instances import segment_instances
from geoseg.samples.crowns import TREE, make_crowns


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("crowns")
    files = make_crowns(d, width=640, height=512, seed=7)
    store, table = segment_instances(files.reference, [TREE], d / "out", chunk_size=256)
    return files, store, table


def _dense(ids: np.ndarray) -> np.ndarray:
    _, inv = np.unique(ids, return_inverse=True)
    return inv.reshape(ids.shape)


@pytest.mark.parametrize("kind", ["vector", "raster"])
def test_chunked_scores_equal_whole_raster_scores(run, kind, tmp_path) -> None:
    files, store, table = run
    grid = read_label_info(files.reference).grid.tiles(256)
    truth = rasterio.open(files.instances).read(1)
    if kind == "vector":
        ref = open_reference_instances(files.crowns, grid.grid, field="class_id")
    else:
        dense = tmp_path / "dense.tif"
        with rasterio.open(files.instances) as src:
            prof = src.profile
        with rasterio.open(dense, "w", **prof) as dst:
            dst.write(_dense(truth).astype(np.uint32), 1)
        ref = open_reference_instances(dense, grid.grid, value=TREE)
    scores, ov = evaluate_instances(store, table.cls, table.size, grid, ref)
    pred = zarr.open_group(str(store), mode="r")["instances"][:]
    dense_truth = _dense(truth)
    expect = score_instances(overlaps_of_rasters(pred, dense_truth, table.cls, np.full(dense_truth.max(), TREE)))
    assert scores == expect
    assert scores[0].n_ref == len(np.unique(truth)) - 1 > 200
    out = write_instance_metrics(scores, tmp_path / "m.csv", {TREE: "tree"})
    row = dict(zip(*[line.split(",") for line in out.read_text().splitlines()]))
    assert row["class_name"] == "tree" and float(row["pq"]) == pytest.approx(scores[0].pq, abs=1e-4)


def test_overlapping_reference_features_stay_separate_instances(run, tmp_path) -> None:
    files, store, table = run
    info = read_label_info(files.reference)
    x0, y0 = info.grid.transform * (100, 100)
    px = info.grid.transform.a
    # two boxes sharing half their area, and a third far away: three reference instances, not two
    shapes = [box(x0, y0 - 20 * px, x0 + 20 * px, y0), box(x0 + 10 * px, y0 - 20 * px, x0 + 30 * px, y0),
              box(x0 + 200 * px, y0 - 20 * px, x0 + 220 * px, y0)]
    path = tmp_path / "boxes.gpkg"
    gpd.GeoDataFrame({"cls": [TREE] * 3}, geometry=shapes, crs=info.grid.crs).to_file(path)
    ref = open_reference_instances(path, info.grid, field="cls")
    scores, ov = evaluate_instances(store, table.cls, table.size, info.grid.tiles(256), ref)
    assert scores[0].n_ref == 3
    assert ov.ref_size.tolist() == [400, 400, 400]


def test_region_scores_are_those_of_each_regions_own_instances(run, tmp_path) -> None:
    """Per grid-cell region (an instance belongs to the region of its first pixel): PQ/SQ/RQ equal a brute
    force over the region's own predicted and reference instances; the counts add up to the scene's."""
    from geoseg.accuracy.instanceeval import evaluate_instance_regions
    from geoseg.accuracy.regions import grid_regions
    from tests.fixtures import brute_force_pq

    files, store, table = run
    info = read_label_info(files.reference)
    regions = grid_regions(25.6, info.grid)  # 256 px cells: 3 columns x 2 rows
    ref = open_reference_instances(files.crowns, info.grid, field="class_id")
    scored = evaluate_instance_regions(store, table.cls, table.size, info.grid.tiles(128), ref, regions=regions)
    assert [rid for rid, _ in scored.regions] == list(regions.ids) and len(regions.ids) == 6
    assert sum(s[0].n_pred for _, s in scored.regions) == scored.scene[0].n_pred
    assert sum(s[0].n_ref for _, s in scored.regions) == scored.scene[0].n_ref
    pred = zarr.open_group(str(store), mode="r")["instances"][:]
    truth = rasterio.open(files.instances).read(1)

    def first_cells(ids):
        found, at = np.unique(ids.ravel(), return_index=True)
        return {int(i): divmod(int(a) // ids.shape[1] // 256 * 3 + int(a) % ids.shape[1] // 256, 3)
                for i, a in zip(found, at) if i}

    def dense(ids, keep):
        lut = np.zeros(int(ids.max()) + 1, np.int64)
        lut[sorted(keep)] = np.arange(1, len(keep) + 1)
        return lut[ids]

    pc, rc = first_cells(pred), first_cells(truth)
    for k in (0, 4):
        cell = divmod(k, 3)
        mp, mr = {i for i, c in pc.items() if c == cell}, {i for i, c in rc.items() if c == cell}
        s = scored.regions[k][1][0]
        assert (s.n_pred, s.n_ref) == (len(mp), len(mr))
        box_ = np.s_[cell[0] * 256: cell[0] * 256 + 304, max(cell[1] * 256 - 48, 0): cell[1] * 256 + 304]  # crowns < 48 px
        p, r = dense(pred, mp)[box_], dense(truth, mr)[box_]
        assert (np.unique(p).size - 1, np.unique(r).size - 1) == (len(mp), len(mr))  # whole inside the box
        pq, sq, rq = brute_force_pq(p, r, np.full(len(mp), TREE), np.full(len(mr), TREE), TREE)
        assert (s.pq, s.sq, s.rq) == (pytest.approx(pq), pytest.approx(sq), pytest.approx(rq))
