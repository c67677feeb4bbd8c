"""Vectorising in one process: threads and tile sizes change nothing in the output, the seam merger
lets finished chunks go, the union-find equals scipy's components, and the GeoPackage writer's
R-tree memory is capped without losing the index."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg._kernels.components import pair_components
from geoseg.errors import JobSpecError
from geoseg.geo import GeoGrid
from geoseg.heap import release_free_heap
from geoseg.io import gpkg
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import cluster_legend
from geoseg.vector.polygonize import chunk_polygons
from geoseg.vector.seams import SeamMerger
from geoseg.vector.vectorize import vectorize_labels
from tests.vector.polygons import assert_same_polygons, single_pass

TRANSFORM = Affine(10, 0, 600000, 0, -10, 5200000)


def _fragmented(h: int, w: int, seed: int = 3) -> np.ndarray:
    """Blobs of 6 classes with salt: many polygons, many of them cut by any tiling."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, (h // 5 + 1, w // 5 + 1))
    labels = np.kron(coarse, np.ones((5, 5), dtype=np.uint8))[:h, :w].astype(np.uint8)
    salt = rng.random((h, w)) < 0.03
    labels[salt] = rng.integers(0, 6, int(salt.sum()))
    labels[:7, :11] = 255  # a nodata corner
    return labels


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    labels = _fragmented(150, 230)
    grid = GeoGrid.of(*labels.shape, TRANSFORM, CRS.from_epsg(32633)).tiles(64)
    writer = LabelStoreWriter.create(tmp_path_factory.mktemp("s") / "labels.zarr", grid, cluster_legend(6))
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize(), labels


def _rows(path: Path) -> list[tuple]:
    df = pyogrio.read_dataframe(path, layer="polygons")
    wkb = shapely.to_wkb(shapely.normalize(df.geometry.values))
    return list(zip(df.class_id, df.area_m2.round(6), df.perimeter_m.round(6), wkb))


def test_thread_count_does_not_change_a_single_row_or_their_order(store, tmp_path):
    path, _ = store
    one = vectorize_labels(path, tmp_path / "one.gpkg", threads=1, tile_px=40)
    three = vectorize_labels(path, tmp_path / "three.gpkg", threads=3, tile_px=40)
    assert one.counts == three.counts and one.n_features > 500
    a, b = (pyogrio.read_dataframe(tmp_path / n, layer="polygons") for n in ("one.gpkg", "three.gpkg"))
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.to_wkb().tolist() == b.geometry.to_wkb().tolist()  # byte for byte, in the same order


@pytest.mark.parametrize("tile_px", [16, 24, 64, 100, 1000])
def test_any_tile_size_gives_the_single_pass_polygons(store, tmp_path, tile_px):
    """Tiles that do not line up with the store's 64-px chunks included (24, 100)."""
    path, labels = store
    out = tmp_path / f"t{tile_px}.gpkg"
    vectorize_labels(path, out, threads=2, tile_px=tile_px)
    df = pyogrio.read_dataframe(out, layer="polygons")
    assert_same_polygons(df.geometry.values, df.class_id.to_numpy(), *single_pass(labels, TRANSFORM))
    base = tmp_path / "base.gpkg"
    if not base.exists():
        vectorize_labels(path, base, threads=1, tile_px=64)
    assert sorted(_rows(out)) == sorted(_rows(base))


def test_bad_threads_and_tiles_are_refused_before_any_work(store, tmp_path):
    path, _ = store
    with pytest.raises(JobSpecError, match="threads must be at least 1"):
        vectorize_labels(path, tmp_path / "p.gpkg", threads=0)
    with pytest.raises(JobSpecError, match="tile_px must be at least 16"):
        vectorize_labels(path, tmp_path / "p.gpkg", tile_px=8)
    assert list(tmp_path.iterdir()) == []


def test_cli_threads_option_is_checked_in_one_line(store, tmp_path):
    path, _ = store
    bad = subprocess.run([sys.executable, "-m", "geoseg.cli", "vectorize", str(path), str(tmp_path / "p.gpkg"),
                          "--threads", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--threads: expected a whole number of at least 1" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "p.gpkg").exists()


def test_seam_merger_keeps_only_the_border_pieces_of_a_chunk(store):
    """It used to hold each chunk's whole result, final polygons included, until the run ended."""
    from geoseg.io.labelstore import read_label_info, read_label_window

    path, _ = store
    grid = read_label_info(path).chunk_grid
    merger = SeamMerger(grid.chunks_shape, cell=grid.chunk)
    w = next(iter(grid.windows()))
    res = chunk_polygons(read_label_window(path, w), w, grid, skip_classes=(255,), arrow_wkb=True)
    assert len(res.final) > 0 and len(res.border) > 0
    border = list(res.border)
    ref = weakref.ref(res)
    merger.add((0, 0), res)
    del res
    gc.collect()
    assert ref() is None
    assert list(merger.pieces[(0, 0)].border) == border  # what it keeps is the pieces themselves


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 60), st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=120))
def test_pair_components_is_scipys_partition(n, pairs):
    pairs = [(a % n, b % n) for a, b in pairs]
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    mine = pair_components(n, a, b)
    _, ref = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    # the same partition: each of my groups is exactly one of scipy's
    assert len(set(zip(mine.tolist(), ref.tolist()))) == len(set(mine.tolist())) == len(set(ref.tolist()))
    assert (mine <= np.arange(n)).all() and (mine[mine] == mine).all()  # smallest member, a fixed point


def test_rtree_built_in_the_file_past_the_ram_cap_is_complete(tmp_path, monkeypatch):
    """Above ``OGR_GPKG_MAX_RAM_USAGE_RTREE`` GDAL builds the index in the file: every feature is in it."""
    n = 3000
    boxes = shapely.box(np.arange(n) * 2.0, 0.0, np.arange(n) * 2.0 + 1.0, 1.0)
    batch = pa.record_batch([pa.array(shapely.to_wkb(boxes)), pa.array(np.arange(n, dtype=np.int32)),
                             pa.array(["x"] * n), pa.array(np.ones(n)), pa.array(np.full(n, 4.0))], schema=gpkg.POLYGON_SCHEMA)
    monkeypatch.setenv("OGR_GPKG_MAX_RAM_USAGE_RTREE", "1000")
    try:
        gpkg.write_arrow_layer(tmp_path / "p.gpkg", "polygons", [batch], crs_wkt=CRS.from_epsg(32633).to_wkt())
        assert str(pyogrio.get_gdal_config_option("OGR_GPKG_MAX_RAM_USAGE_RTREE")) == "1000"  # the environment wins
    finally:
        monkeypatch.delenv("OGR_GPKG_MAX_RAM_USAGE_RTREE")
        gpkg._cap_rtree_ram()
    assert str(pyogrio.get_gdal_config_option("OGR_GPKG_MAX_RAM_USAGE_RTREE")) == str(gpkg.RTREE_RAM_BYTES)
    with sqlite3.connect(tmp_path / "p.gpkg") as db:
        assert db.execute("SELECT count(*) FROM rtree_polygons_geom").fetchone()[0] == n
        hits = db.execute("SELECT id FROM rtree_polygons_geom WHERE minx >= 100 AND maxx <= 111").fetchall()
    assert sorted(h[0] for h in hits) == list(range(51, 57))  # fids are 1-based: boxes 50..55


def test_free_heap_is_handed_back_at_most_once_per_interval(monkeypatch):
    import geoseg.heap

    assert release_free_heap() is (sys.platform == "linux")
    calls = []
    monkeypatch.setattr(geoseg.heap, "release_free_heap", lambda: calls.append(1) or True)
    clock = iter([0.0, 0.3, 1.2, 1.5, 2.3, 9.0])
    maybe = geoseg.heap.heap_releaser(1.0, clock=lambda: next(clock))  # reads the clock once (0.0)
    for _ in range(5):
        maybe()  # at 0.3 no, 1.2 yes, 1.5 no, 2.3 yes, 9.0 yes
    assert len(calls) == 3


def test_allocator_arenas_limited_on_glibc():
    # limit_arenas changes the whole process: asked in a child
    out = subprocess.run([sys.executable, "-c", "from geoseg.heap import limit_arenas; print(limit_arenas(2))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(sys.platform == "linux")


def test_tiles_here_are_store_chunks_cut_small_unless_a_sieve_halo_or_a_cluster_asks_for_whole_chunks():
    from geoseg.vector.vectorize import _tile_grid

    grid = GeoGrid.of(5000, 5000, TRANSFORM, CRS.from_epsg(32633))
    assert _tile_grid(grid, 2048, None, on_cluster=False, halo_px=0).chunk == 512
    assert _tile_grid(grid, 2048, None, on_cluster=False, halo_px=100).chunk == 2048  # each tile reads its halo
    assert _tile_grid(grid, 2048, None, on_cluster=True, halo_px=0).chunk == 2048
    assert _tile_grid(grid, 2048, 300, on_cluster=True, halo_px=100).chunk == 300
