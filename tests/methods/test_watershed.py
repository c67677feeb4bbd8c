"""Watershed instances: chunking-independent ids and shapes, touching crowns split, labels and instances agree."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr

from geoseg.accuracy.instancemetrics import overlaps_of_rasters, score_instances
from geoseg.errors import JobSpecError
from geoseg.io.labelstore import read_label_info
from geoseg.methods.watershed import WatershedParams
from geoseg.run.instances import segment_instances, write_instance_table
from geoseg.samples.crowns import TREE, make_crowns


@pytest.fixture(scope="module")
def crowns(tmp_path_factory: pytest.TempPathFactory):
    return make_crowns(tmp_path_factory.mktemp("crowns"), width=1024, height=768, seed=3)


def _instances(store) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")["instances"][:]


def _dense(ids: np.ndarray) -> np.ndarray:
    _, inv = np.unique(ids, return_inverse=True)
    return inv.reshape(ids.shape).astype(np.uint32)


def test_same_instances_at_chunk_sizes_256_and_1024(crowns, tmp_path) -> None:
    a, ta = segment_instances(crowns.reference, [TREE], tmp_path / "a", chunk_size=256)
    b, tb = segment_instances(crowns.reference, [TREE], tmp_path / "b", chunk_size=1024)
    ia, ib = _instances(a), _instances(b)
    assert ta.n > 300
    assert np.array_equal(ia, ib)
    assert np.array_equal(ta.size, tb.size) and np.array_equal(ta.row, tb.row)
    # ids are the row-major rank of each instance's marker: 1..n, ordered by marker position
    assert np.array_equal(np.unique(ia)[1:], np.arange(1, ta.n + 1))
    assert np.all(np.diff(ta.row * 1024 + ta.col) > 0)
    # the table's sizes are the raster's pixel counts
    assert np.array_equal(np.bincount(ia.ravel(), minlength=ta.n + 1)[1:], ta.size)


def test_touching_crowns_are_split_where_connected_regions_merge(crowns, tmp_path) -> None:
    from scipy import ndimage

    truth = _dense(rasterio.open(crowns.instances).read(1))
    n_true = int(truth.max())
    store, table = segment_instances(crowns.reference, [TREE], tmp_path / "ws", chunk_size=256)
    ws = score_instances(overlaps_of_rasters(_instances(store), truth, table.cls, np.full(n_true, TREE)))[0]
    regions, n_regions = ndimage.label(truth > 0, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    cc = score_instances(overlaps_of_rasters(regions, truth, np.full(n_regions, TREE), np.full(n_true, TREE)))[0]
    assert ws.recall >= 0.9, ws
    assert ws.precision >= 0.9, ws
    assert cc.recall < 0.75 * ws.recall  # touching crowns merge into connected regions


def test_instances_cover_exactly_the_class_pixels(crowns, tmp_path) -> None:
    store, table = segment_instances(crowns.reference, [TREE], tmp_path / "ws", chunk_size=512)
    ids = _instances(store)
    labels = rasterio.open(crowns.reference).read(1)
    assert np.array_equal(ids > 0, labels == TREE)
    grid = read_label_info(crowns.reference).grid
    out = write_instance_table(table, tmp_path / "instances.csv", grid, {TREE: "tree"})
    rows = out.read_text().splitlines()
    assert len(rows) == table.n + 1
    first = dict(zip(rows[0].split(","), rows[1].split(",")))
    assert first["class_name"] == "tree" and int(first["area_px"]) == table.size[0]
    x, y = grid.transform * (table.col[0] + 0.5, table.row[0] + 0.5)
    assert abs(float(first["marker_x"]) - x) < 1e-3 and abs(float(first["area_m2"]) - table.size[0] * 0.01) < 0.01


def test_bad_parameters_are_refused(crowns, tmp_path) -> None:
    with pytest.raises(JobSpecError, match="halo"):
        WatershedParams(min_distance=40, halo=32)
    with pytest.raises(JobSpecError, match="nodata"):
        segment_instances(crowns.reference, [255], tmp_path / "x")
