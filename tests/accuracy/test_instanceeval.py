"""Instance evaluation chunk by chunk equals the whole-raster computation; one reference instance per feature."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
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


def test_a_prediction_matching_two_overlapping_reference_features_counts_once(run, tmp_path) -> None:
    """Reference features may overlap (each is burnt alone): a crown annotated twice, or two boxes that share
    most of their area. A prediction with IoU > 0.5 to both is one true positive, not two (precision <= 1,
    FP >= 0). Oracle: every feature rasterised alone by rasterio (GDAL), IoUs by counting, and the maximum
    one-to-one matching of pairs above 0.5 by scipy's linear_sum_assignment."""
    from rasterio.features import rasterize
    from scipy.optimize import linear_sum_assignment

    files, store, table = run
    info = read_label_info(files.reference)
    crowns = gpd.read_file(files.crowns).to_crs(info.grid.crs)
    px = info.grid.transform.a
    doubled = crowns.iloc[::3].copy()
    doubled["geometry"] = doubled.geometry.translate(px, 0)  # a second annotation, one pixel to the east
    both = gpd.GeoDataFrame(pd.concat([crowns, doubled], ignore_index=True), crs=crowns.crs)
    path = tmp_path / "twice.gpkg"
    both.to_file(path)
    scores, _ = evaluate_instances(store, table.cls, table.size, info.grid.tiles(256),
                                   open_reference_instances(path, info.grid, field="class_id"))
    s = scores[0]

    pred = zarr.open_group(str(store), mode="r")["instances"][:].astype(np.int64)
    pred_size = np.bincount(pred.ravel(), minlength=table.cls.size + 1)[1:]
    masks = [rasterize([(g, 1)], out_shape=pred.shape, transform=info.grid.transform).astype(bool)
             for g in both.geometry]
    masks = [m for m in masks if m.any()]
    iou = np.zeros((table.cls.size, len(masks)))
    for j, m in enumerate(masks):
        inter = np.bincount(pred[m], minlength=table.cls.size + 1)[1:]
        iou[:, j] = inter / (pred_size + m.sum() - inter)
    rows, cols = linear_sum_assignment(np.where(iou > 0.5, iou, 0.0), maximize=True)
    hit = iou[rows, cols] > 0.5
    tp, iou_sum = int(hit.sum()), float(iou[rows, cols][hit].sum())
    n_pred, n_ref = int((pred_size > 0).sum()), len(masks)
    assert (iou > 0.5).sum(axis=1).max() == 2  # the case: some prediction is above 0.5 with two features
    assert (s.n_pred, s.n_ref, s.tp) == (n_pred, n_ref, tp)
    assert s.fp == n_pred - tp >= 0 and s.precision <= 1
    assert s.pq == pytest.approx(iou_sum / (tp + (n_pred - tp) / 2 + (n_ref - tp) / 2))


def test_reference_features_too_small_for_a_pixel_are_counted_not_dropped_silently(run, tmp_path, caplog) -> None:
    """Reference features inside the scene that cover no pixel centre (weeds smaller than a pixel) cannot be
    scored, and n_ref leaves them out: recall then counts only the larger ones. How many were left out is
    reported (and warned about); features outside the scene are not the scene's and are not counted. Oracle:
    each feature rasterised alone by rasterio (GDAL's pixel-centre rule) over the whole grid."""
    import logging

    from rasterio.features import rasterize

    from geoseg.accuracy.instanceeval import evaluate_instance_regions

    files, store, table = run
    info = read_label_info(files.reference)
    crowns = gpd.read_file(files.crowns).to_crs(info.grid.crs)
    t, px = info.grid.transform, info.grid.transform.a
    tiny = [box(*(t * (c + 0.05, r + 0.25)), *(t * (c + 0.3, r + 0.05))) for r, c in ((10, 10), (50, 300), (400, 20))]
    x0, y0 = t * (info.grid.width + 50, 10)  # beyond the east edge: not in the scene
    outside = [box(x0, y0 - 5 * px, x0 + 5 * px, y0)]
    extra = gpd.GeoDataFrame({"class_id": [TREE] * 4}, geometry=tiny + outside, crs=crowns.crs)
    layer = gpd.GeoDataFrame(pd.concat([crowns, extra], ignore_index=True), crs=crowns.crs)
    path = tmp_path / "with_tiny.gpkg"
    layer.to_file(path)
    with caplog.at_level(logging.WARNING, logger="geoseg.accuracy.instanceeval"):
        scored = evaluate_instance_regions(store, table.cls, table.size, info.grid.tiles(256),
                                           open_reference_instances(path, info.grid, field="class_id"))
    scene = box(*info.grid.bounds)
    empty_inside = sum(1 for g in layer.geometry if g.intersects(scene) and not rasterize(
        [(g, 1)], out_shape=info.grid.shape, transform=t).any())
    assert empty_inside == 3
    assert scored.unscored_reference == empty_inside
    assert scored.scene[0].n_ref == len(crowns)
    assert "3 reference instance" in caplog.text


def test_reference_instances_under_the_maps_nodata_are_not_misses(run, tmp_path) -> None:
    """The crown map with its west half under cloud (255): reference crowns there were counted as missed.
    Scored where the map has data, the figures equal those against the crowns clipped by shapely to the
    mapped half (the oracle: geometry, not geoseg's masking)."""
    import shapely

    from geoseg.accuracy.instanceeval import evaluate_instance_regions
    from tests.fixtures import write_store

    files, _, _ = run
    with rasterio.open(files.reference) as ds:
        labels, t, crs = ds.read(1), ds.transform, ds.crs
    labels[:, :300] = 255
    clouded = write_store(tmp_path / "clouded.zarr", labels, 256, transform=t, crs=crs)
    store, table = segment_instances(clouded, [TREE], tmp_path / "inst", chunk_size=256)
    info = read_label_info(clouded)
    grid = info.grid.tiles(256)
    crowns = gpd.read_file(files.crowns).to_crs(info.grid.crs)
    got = evaluate_instance_regions(store, table.cls, table.size, grid,
                                    open_reference_instances(files.crowns, info.grid, field="class_id"),
                                    map_valid=(clouded, "labels")).scene[0]
    x_cut = (t * (300, 0))[0]
    left, bottom, right, top = info.grid.bounds
    cut = shapely.intersection(crowns.geometry.values, shapely.box(x_cut, bottom, right, top))
    # a crown with an edge on the cut comes back with that edge as a line too; GDAL would burn the line
    areal = [shapely.union_all([p for p in shapely.get_parts(g) if p.geom_type == "Polygon"]) for g in cut]
    clipped = crowns.assign(geometry=areal)
    clipped = clipped[~clipped.geometry.is_empty]
    path = tmp_path / "clipped.gpkg"
    clipped.to_file(path)
    want = evaluate_instance_regions(store, table.cls, table.size, grid,
                                     open_reference_instances(path, info.grid, field="class_id")).scene[0]
    assert got.n_ref < len(crowns) * 0.6
    assert (got.n_pred, got.n_ref, got.tp) == (want.n_pred, want.n_ref, want.tp)
    assert got.pq == pytest.approx(want.pq)
