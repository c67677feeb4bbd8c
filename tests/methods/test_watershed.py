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


def _block_with_crowns(width: int) -> np.ndarray:
    """A thing class holding a block ``width`` px tall and 400 px long (a forest patch, a field) among crowns."""
    yy, xx = np.mgrid[:512, :512]
    lab = np.full((512, 512), 1, np.uint8)
    lab[60:60 + width, 60:460] = 2
    rng = np.random.default_rng(0)
    for _ in range(40):
        r, c, rad = rng.integers(0, 512), rng.integers(0, 512), rng.integers(6, 14)
        lab[(yy - r) ** 2 + (xx - c) ** 2 <= rad * rad] = 2
    return lab


def _whole_raster_watershed(lab: np.ndarray, params: WatershedParams) -> np.ndarray:
    """The oracle: scikit-image's watershed of the whole raster (no chunks, no halo), markers numbered by
    their row-major rank, as geoseg numbers them."""
    from skimage.segmentation import watershed

    from geoseg.methods.watershed import distance_surface, find_markers

    mask = lab == 2
    surface = distance_surface(mask, 0, 0, lab.shape[1], params.sigma)
    rows, cols = find_markers(surface, mask, params)
    markers = np.zeros(lab.shape, np.int64)
    order = np.argsort(rows * lab.shape[1] + cols)
    markers[rows[order], cols[order]] = np.arange(1, rows.size + 1)
    return watershed(-surface, markers=markers, mask=mask, connectivity=1).astype(np.uint32)


def test_objects_longer_than_the_halo_are_refused_not_split_by_the_chunking(tmp_path) -> None:
    """A basin the halo cannot hold (a 120 x 400 px block with the 64 px halo) made the instances depend on the
    chunk size (15,130 px differed between 128 and 512 px chunks, 10 or 11 instances): refused, naming the
    halo. With a halo that holds it the chunked raster equals the whole-raster watershed at every chunk size."""
    from geoseg.errors import InputError
    from tests.fixtures import write_store

    lab = _block_with_crowns(120)
    store = write_store(tmp_path / "labels.zarr", lab, 512)
    with pytest.raises(InputError, match="halo"):
        segment_instances(store, [2], tmp_path / "small", WatershedParams(halo=64), chunk_size=128)
    made = [p for p in tmp_path.rglob("*") if "small" in p.parts]
    assert made and not [p for p in made if p.suffix == ".zarr"]  # only an unfinished (.partial) store is left
    params = WatershedParams(halo=256)
    want = _whole_raster_watershed(lab, params)
    for chunk in (128, 512):
        out, _ = segment_instances(store, [2], tmp_path / f"c{chunk}", params, chunk_size=chunk)
        got = zarr.open_group(str(out), mode="r")["instances"][:]
        assert got.tobytes() == want.tobytes(), chunk


@pytest.mark.parametrize("writer", ["watershed", "job"])
def test_instances_csv_keeps_positions_on_degrees_and_areas_on_drone_pixels(tmp_path, writer) -> None:
    """instances.csv printed map positions to 3 decimals and areas to 0.01 m²: on a 0.0001° grid (~10 m) a
    marker's position was off by up to 5 pixels (0.0005°), and on 5 mm drone pixels a 40 px weed had area_m2
    0.00. Oracle: rasterio's transform.xy (pixel centres) and area_px x the pixel area by hand."""
    import csv

    from affine import Affine
    from rasterio.transform import xy

    from geoseg.geo import GeoGrid
    from geoseg.run.instances import InstanceTable
    from geoseg.run.instancestage import write_instances_csv

    rows, cols, size = np.array([3, 117]), np.array([5, 250]), np.array([40, 1234])
    for crs, t, px_m2 in (("EPSG:4326", Affine(1e-4, 0, 14.0, 0, -1e-4, 46.5), None),
                          ("EPSG:32633", Affine(0.005, 0, 500000.0, 0, -0.005, 5100000.0), 0.005 ** 2)):
        grid = GeoGrid.of(200, 300, t, crs)
        path = tmp_path / f"{writer}-{crs.replace(':', '')}.csv"
        if writer == "watershed":
            write_instance_table(InstanceTable(np.array([2, 2]), rows, cols, size), path, grid, {2: "weed"})
            at = "marker"
        else:
            write_instances_csv(path, np.array([1, 2]), np.array([2, 2]), None, size, rows * 300 + cols, grid,
                                {2: "weed"})
            at = "first"
        got = list(csv.DictReader(path.read_text().splitlines()))
        for row, r, c, n in zip(got, rows, cols, size):
            x, y = xy(t, int(r), int(c))  # the pixel's centre
            assert float(row[f"{at}_x"]) == pytest.approx(x, abs=1e-8) and float(row[f"{at}_y"]) == pytest.approx(y, abs=1e-8)
            want = n * (px_m2 if px_m2 is not None else grid.pixel_area_m2)
            assert float(row["area_m2"]) == pytest.approx(want, rel=1e-5) and float(row["area_m2"]) > 0
