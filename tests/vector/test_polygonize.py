"""Seam-exact vectorisation: chunked results equal one whole-raster polygonising pass, and the
GeoPackage is complete, valid, indexed and styled."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.features import sieve

from geoseg.errors import JobSpecError
from geoseg.geo import GeoGrid
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import LANDCOVER_CLASSES, NODATA_LABEL
from geoseg.vector.polygonize import side_owners
from geoseg.vector.vectorize import vectorize_array, vectorize_labels
from tests.fixtures import chunk_grid
from tests.vector.polygons import assert_same_polygons, label_maps, single_pass

CRS_ = CRS.from_epsg(32633)
TRANSFORM = Affine(10, 0, 600000, 0, -10, 5200000)
PIXEL_AREA = 100.0


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make_store(path: Path, labels: np.ndarray, chunk: int, transform: Affine = TRANSFORM, legend=LANDCOVER_CLASSES) -> Path:
    grid = GeoGrid.of(labels.shape[0], labels.shape[1], transform, CRS_).tiles(chunk)
    writer = LabelStoreWriter.create(path, grid, legend)
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize()


# ---------------------------------------------------------------------------------------------
# exactness: property-based
# ---------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps())
def test_chunked_equals_single_pass(case):
    labels, chunk = case
    geoms, classes = vectorize_array(labels, chunk)
    assert_same_polygons(geoms, classes, *single_pass(labels))


@settings(max_examples=60, deadline=None)
@given(label_maps(max_side=30), st.sampled_from([(), (0,), (1, NODATA_LABEL)]))
def test_chunked_equals_single_pass_with_skipped_classes_and_georeferencing(case, skip):
    labels, chunk = case
    transform = Affine(0.5, 0, 300000.25, 0, -0.5, 4000000.75)
    geoms, classes = vectorize_array(labels, chunk, transform=transform, skip_classes=skip)
    assert_same_polygons(geoms, classes, *single_pass(labels, transform, skip))
    assert not np.isin(classes, skip).any()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(label_maps(max_side=40))
def test_store_to_geopackage_equals_single_pass(tmp_path_factory, case):
    labels, chunk = case
    folder = tmp_path_factory.mktemp("v")
    store = make_store(folder / "labels.zarr", labels, chunk)
    res = vectorize_labels(store, folder / "out.gpkg")
    geoms, classes = _read_polygons(folder / "out.gpkg")
    ref_geoms, ref_classes = single_pass(labels, TRANSFORM)
    assert_same_polygons(geoms, classes, ref_geoms, ref_classes)
    assert res.n_features == len(ref_geoms)


# ---------------------------------------------------------------------------------------------
# exactness: the tricky cases, spelled out
# ---------------------------------------------------------------------------------------------


def test_corner_contact_across_a_seam_does_not_merge():
    labels = np.array([[1, 2], [2, 1]], np.uint8)
    geoms, classes = vectorize_array(labels, 1)
    assert sorted(classes.tolist()) == [1, 1, 2, 2]


def test_ring_spanning_many_chunks_keeps_its_hole():
    labels = np.zeros((12, 12), np.uint8)
    labels[2:10, 2:10] = 1
    labels[4:8, 4:8] = 0
    geoms, classes = vectorize_array(labels, 3)
    ring = geoms[classes == 1]
    assert len(ring) == 1 and len(ring[0].interiors) == 1 and ring[0].area == 64 - 16
    assert (classes == 0).sum() == 2  # the outside and the island in the hole


def test_pinch_point_hole_stays_one_valid_polygon():
    labels = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1]], np.uint8)
    for chunk in (1, 2, 3, 4):
        geoms, classes = vectorize_array(labels, chunk)
        assert_same_polygons(geoms, classes, *single_pass(labels))


def test_side_owners_reads_pixels_off_the_rings():
    from geoseg.geo import Window

    geoms = np.array([shapely.box(2, 0, 5, 2), shapely.box(0, 0, 2, 1)])
    owners = side_owners(geoms, Window(0, 0, 4, 6), ("top", "left", "right"))
    assert owners["top"].tolist() == [1, 1, 0, 0, 0, -1]
    assert owners["left"].tolist() == [1, -1, -1, -1]
    assert owners["right"].tolist() == [-1, -1, -1, -1]


# ---------------------------------------------------------------------------------------------
# the GeoPackage
# ---------------------------------------------------------------------------------------------


def _blocky(h: int = 70, w: int = 90) -> np.ndarray:
    labels = (np.add.outer(np.arange(h) // 9, np.arange(w) // 13) % 4 + 1).astype(np.uint8)
    rng = np.random.default_rng(3)
    labels[rng.random((h, w)) < 0.03] = 5
    labels[:5, :7] = NODATA_LABEL
    return labels


def _read_polygons(path: Path, layer: str = "polygons"):
    df = pyogrio.read_dataframe(path, layer=layer)
    return np.asarray(df.geometry.values, dtype=object), df["class_id"].to_numpy().astype(np.int32)


@pytest.fixture(scope="module")
def blocky_store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    labels = _blocky()
    return make_store(tmp_path_factory.mktemp("store") / "labels.zarr", labels, 32), labels


def test_geopackage_fields_crs_validity_index_and_style(blocky_store, tmp_path):
    store, labels = blocky_store
    out = tmp_path / "polygons.gpkg"
    res = vectorize_labels(store, out)
    info = pyogrio.read_info(out, layer="polygons")
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["polygons", "layer_styles"]
    assert CRS.from_user_input(info["crs"]) == CRS_
    assert info["geometry_type"] == "Polygon" and info["features"] == res.n_features
    assert {"class_id", "class_name", "area_m2", "perimeter_m"} <= set(info["fields"])
    df = pyogrio.read_dataframe(out, layer="polygons")
    assert df.is_valid.all()
    assert set(df["class_name"]) == {c.name for c in LANDCOVER_CLASSES if c.id in set(labels.ravel())}
    np.testing.assert_allclose(df.area, df["area_m2"])
    np.testing.assert_allclose(df.length, df["perimeter_m"])
    # areas per class = pixel count x pixel area
    for k in np.unique(labels[labels != NODATA_LABEL]):
        expected = (labels == k).sum() * PIXEL_AREA
        assert res.areas_m2[int(k)] == pytest.approx(expected, rel=1e-9)
        assert df.loc[df.class_id == k, "area_m2"].sum() == pytest.approx(expected, rel=1e-9)
        assert res.counts[int(k)] == int((df.class_id == k).sum())
    with sqlite3.connect(out) as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        assert "rtree_polygons_geom" in tables
        assert db.execute("select count(*) from rtree_polygons_geom").fetchone()[0] == res.n_features
        cols = [r[1] for r in db.execute("pragma table_info(layer_styles)")]
        row = db.execute(
            "select f_table_name, f_geometry_column, useAsDefault, styleQML, styleSLD from layer_styles"
        ).fetchone()
    assert {"f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName", "styleQML",
            "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time"} <= set(cols)
    name, geom_col, default, qml, sld = row
    assert (name, geom_col, default) == ("polygons", "geom", 1)
    assert 'type="categorizedSymbol"' in qml and 'attr="class_id"' in qml
    for c in LANDCOVER_CLASSES:
        r, g, b = c.rgb()
        assert f'value="{c.id}"' in qml and f"{r},{g},{b},255" in qml and c.color in sld


def test_equals_single_pass_on_a_real_store(blocky_store, tmp_path):
    store, labels = blocky_store
    vectorize_labels(store, tmp_path / "p.gpkg")
    assert_same_polygons(*_read_polygons(tmp_path / "p.gpkg"), *single_pass(labels, TRANSFORM))


def test_failure_leaves_no_output_and_keeps_the_old_one(blocky_store, tmp_path, monkeypatch):
    import geoseg.vector.vectorize

    store, _ = blocky_store
    out = tmp_path / "polygons.gpkg"
    out.write_bytes(b"previous run")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(geoseg.vector.vectorize, "write_layer_styles", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        vectorize_labels(store, out)
    assert out.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["polygons.gpkg"]
    out.unlink()
    with pytest.raises(RuntimeError):
        vectorize_labels(store, out)
    assert list(tmp_path.iterdir()) == []


def test_polygons_built_from_geojson_in_small_batches_are_the_same(blocky_store, monkeypatch):
    import geoseg.vector.polygonize

    _, labels = blocky_store
    monkeypatch.setattr(geoseg.vector.polygonize, "GEOJSON_BATCH", 3)
    assert_same_polygons(*vectorize_array(labels, 32), *single_pass(labels))


def test_skip_classes(blocky_store, tmp_path):
    store, labels = blocky_store
    res = vectorize_labels(store, tmp_path / "p.gpkg", skip_classes=(2, NODATA_LABEL))
    geoms, classes = _read_polygons(tmp_path / "p.gpkg")
    assert 2 not in set(classes.tolist()) and 2 not in res.counts
    assert_same_polygons(geoms, classes, *single_pass(labels, TRANSFORM, (2, NODATA_LABEL)))


def test_per_class_layout(blocky_store, tmp_path):
    store, labels = blocky_store
    single = vectorize_labels(store, tmp_path / "a.gpkg")
    res = vectorize_labels(store, tmp_path / "b.gpkg", layout="per_class")
    assert res.layers == ("cropland", "forest", "water", "grassland", "built_up", "bare")
    for c in LANDCOVER_CLASSES:
        layer = res.layers[c.id - 1]
        df = pyogrio.read_dataframe(tmp_path / "b.gpkg", layer=layer)
        assert len(df) == single.counts.get(c.id, 0)
        assert set(df["class_id"]) <= {c.id}
    with sqlite3.connect(tmp_path / "b.gpkg") as db:
        styled = {r[0] for r in db.execute("select f_table_name from layer_styles")}
    assert styled == set(res.layers)


def test_minimum_mapping_unit_matches_whole_raster_sieve_and_chunking(tmp_path):
    labels = np.ones((64, 80), np.uint8)
    labels[:, 40:] = 2
    rng = np.random.default_rng(0)
    for _ in range(60):  # specks of 1-4 pixels, some on chunk seams, none touching both big regions
        r, c = rng.integers(0, 62), rng.choice(np.r_[0:36, 42:78])
        labels[r : r + rng.integers(1, 3), c : c + rng.integers(1, 3)] = rng.integers(3, 5)
    mmu = 5
    expected = sieve(labels, mmu, connectivity=4)
    ref = single_pass(expected, TRANSFORM)
    for chunk in (16, 23, 80):
        store = make_store(tmp_path / f"l{chunk}.zarr", labels, chunk)
        res = vectorize_labels(store, tmp_path / f"p{chunk}.gpkg", min_mapping_unit_px=mmu)
        geoms, classes = _read_polygons(tmp_path / f"p{chunk}.gpkg")
        assert_same_polygons(geoms, classes, *ref)
        assert res.counts[1] == 1 and res.counts[2] == 1
        assert (shapely.area(geoms) >= mmu * PIXEL_AREA).all()


def test_coverage_simplification_leaves_no_gaps_or_overlaps(tmp_path):
    rng = np.random.default_rng(1)
    coarse = rng.integers(1, 5, (8, 9))
    labels = np.kron(coarse, np.ones((7, 7), int))[:50, :60].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.05] = 5
    store = make_store(tmp_path / "l.zarr", labels, 16)
    plain = vectorize_labels(store, tmp_path / "plain.gpkg")
    res = vectorize_labels(store, tmp_path / "simple.gpkg", simplify_tolerance=25.0)
    geoms, classes = _read_polygons(tmp_path / "simple.gpkg")
    plain_geoms, _ = _read_polygons(tmp_path / "plain.gpkg")
    assert res.n_features == plain.n_features
    assert shapely.is_valid(geoms).all()
    assert shapely.coverage_is_valid(geoms)
    assert shapely.get_num_coordinates(geoms).sum() < shapely.get_num_coordinates(plain_geoms).sum()
    extent = shapely.box(600000, 5200000 - 500, 600600, 5200000)
    union = shapely.union_all(geoms)
    assert shapely.area(geoms).sum() == pytest.approx(union.area, rel=1e-9)  # no overlaps
    assert shapely.symmetric_difference(union, extent).area == pytest.approx(0, abs=1e-6)  # no gaps
    assert sum(res.areas_m2.values()) == pytest.approx(extent.area, rel=1e-9)


@pytest.mark.integration
def test_runs_on_a_cluster_with_the_same_result(blocky_store, tmp_path, dask_client):
    store, labels = blocky_store
    res = vectorize_labels(store, tmp_path / "c.gpkg", client=dask_client)
    local = vectorize_labels(store, tmp_path / "l.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gpkg", "l.gpkg"]  # no part files left behind
    assert res.counts == local.counts
    assert_same_polygons(*_read_polygons(tmp_path / "c.gpkg"), *single_pass(labels, TRANSFORM))
    # the rows the workers wrote to part files are the very rows the client computes without a cluster
    rows = [sorted(zip(df.class_id, df.class_name, df.area_m2, df.perimeter_m, df.geometry.to_wkb()))
            for df in (pyogrio.read_dataframe(tmp_path / n, layer="polygons") for n in ("c.gpkg", "l.gpkg"))]
    assert rows[0] == rows[1]


def test_empty_output_still_writes_a_layer(tmp_path):
    store = make_store(tmp_path / "l.zarr", np.full((20, 20), NODATA_LABEL, np.uint8), 8)
    res = vectorize_labels(store, tmp_path / "p.gpkg")
    assert res.n_features == 0 and pyogrio.read_info(tmp_path / "p.gpkg", layer="polygons")["features"] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"connectivity": 8}, "connectivity=8 is not supported"),
        ({"connectivity": 6}, "connectivity must be 4"),
        ({"layout": "tiles"}, "layout"),
        ({"simplify_tolerance": -1.0}, "simplify_tolerance"),
        ({"min_mapping_unit_px": -3}, "min_mapping_unit_px"),
    ],
)
def test_bad_options_are_user_errors(blocky_store, tmp_path, kwargs, match):
    store, _ = blocky_store
    with pytest.raises(JobSpecError, match=match):
        vectorize_labels(store, tmp_path / "p.gpkg", **kwargs)
    assert not (tmp_path / "p.gpkg").exists()


# ---------------------------------------------------------------------------------------------
# progressive seam merging: regions leave the client as soon as they are complete
# ---------------------------------------------------------------------------------------------


def _merge_progressively(labels: np.ndarray, chunk: int, order: list, round_pieces: int = 1):
    """Chunks polygonised in ``order`` (window indices), seams merged as they close."""
    from geoseg.vector.polygonize import chunk_polygons
    from geoseg.vector.seams import SeamMerger

    grid = chunk_grid(labels.shape[0], labels.shape[1], chunk, Affine.identity())
    windows = list(grid.windows())
    merger = SeamMerger(grid.chunks_shape, round_pieces=round_pieces)
    geoms, classes, total_pieces = [], [], 0
    for i in order:
        w = windows[i]
        res = chunk_polygons(labels[w.slices], w, grid, skip_classes=(NODATA_LABEL,), world=False)
        total_pieces += len(res.border)
        geoms.append(res.final)
        classes.append(res.final_class)
        for part, out in zip((geoms, classes), merger.add((w.row_off // chunk, w.col_off // chunk), res)):
            part.append(out)
    for part, out in zip((geoms, classes), merger.finish()):
        part.append(out)
    return np.concatenate(geoms), np.concatenate(classes).astype(np.int32), merger, total_pieces


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps(), st.randoms(use_true_random=False))
def test_progressive_merge_in_any_chunk_order_equals_single_pass(case, rnd):
    labels, chunk = case
    n = chunk_grid(labels.shape[0], labels.shape[1], chunk).n_chunks
    order = list(range(n))
    rnd.shuffle(order)  # Dask returns chunks in completion order
    geoms, classes, _, _ = _merge_progressively(labels, chunk, order)
    assert_same_polygons(geoms, classes, *single_pass(labels))


def test_progressive_merge_holds_only_the_open_front_of_seams():
    labels = (np.random.default_rng(3).random((240, 240)) < 0.5).astype(np.uint8)  # very fragmented
    grid = chunk_grid(240, 240, 24)
    geoms, classes, merger, total = _merge_progressively(labels, 24, list(range(grid.n_chunks)), round_pieces=1)
    assert_same_polygons(geoms, classes, *single_pass(labels))
    assert merger.rounds > 10
    assert merger.peak_waiting < 0.25 * total  # about two rows of chunks' seams, not all 100 chunks'
    assert merger.waiting == 0


def test_vectorize_labels_merges_progressively_with_the_same_result(tmp_path):
    labels = (np.random.default_rng(4).random((160, 160)) < 0.5).astype(np.uint8)
    store = make_store(tmp_path / "l.zarr", labels, 32)
    res = vectorize_labels(store, tmp_path / "p.gpkg", seam_round_pieces=1)
    assert res.timings["merge_rounds"] > 1
    assert_same_polygons(*_read_polygons(tmp_path / "p.gpkg"), *single_pass(labels, TRANSFORM))


# ---------------------------------------------------------------------------------------------
# the seam union: cancelled shared edges, re-linked rings (geoseg.vector.gridunion)
# ---------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps(max_side=40), st.integers(2, 9))
def test_grid_union_of_cut_regions_equals_geos_union(case, cell):
    """Cut every whole-raster region along a grid of seams, union its pieces again: the region, exactly."""
    from geoseg.vector.gridunion import _grid_union, union_pieces

    labels, _ = case
    geoms, _ = single_pass(labels)
    h, w = labels.shape
    boxes = [shapely.box(x, y, x + cell, y + cell) for y in range(0, h, cell) for x in range(0, w, cell)]
    for g in shapely.make_valid(geoms):
        pieces = shapely.intersection(g, np.array(boxes, dtype=object))
        pieces = shapely.get_parts(pieces[~shapely.is_empty(pieces)])
        pieces = pieces[shapely.get_type_id(pieces) == 3]
        merged = union_pieces(pieces, min_vertices=0)
        expected = shapely.simplify(shapely.union_all(pieces), 0.0, preserve_topology=False)
        assert merged.is_valid
        assert merged.normalize().equals_exact(expected.normalize(), 0), (merged.wkt, expected.wkt)
        assert _grid_union(pieces) is not None  # the fast path, not the GEOS fallback


def test_grid_union_falls_back_to_geos_off_the_grid():
    from geoseg.vector.gridunion import _grid_union, union_pieces

    tri = np.array([shapely.Polygon([(0, 0), (2, 0), (0, 2)]), shapely.box(0, -1, 2, 0)], dtype=object)
    assert _grid_union(tri) is None
    assert union_pieces(tri).equals(shapely.union_all(tri))


def test_part_files_round_trip_and_come_out_in_chunk_order(tmp_path):
    from geoseg.vector.parts import BATCH_ROWS, InOrder, polygon_batch, read_part, write_part

    n = BATCH_ROWS + 5
    geoms = shapely.box(np.arange(n), 0, np.arange(n) + 1, 1)
    batch = polygon_batch(shapely.to_wkb(geoms), np.arange(n) % 3, np.ones(n), np.full(n, 4.0), ("a", "b", "c"))
    path = tmp_path / "part.arrow"
    write_part(path, batch)
    write_part(path, batch)  # a retried task writes the same file again: replaced whole
    back = list(read_part(path))
    assert [b.num_rows for b in back] == [BATCH_ROWS, 5]
    table = pa.Table.from_batches(back)
    assert table.column("class_name").to_pylist()[:4] == ["a", "b", "c", "a"]
    assert shapely.equals(shapely.from_wkb(table.column("geom").to_numpy(zero_copy_only=False)), geoms).all()
    assert [p.name for p in tmp_path.iterdir()] == ["part.arrow"]
    order = InOrder()
    assert order.add(2, "c") == [] and order.add(0, "a") == ["a"] and order.add(1, None) == ["c"]
    assert order.add(3, "d") == ["d"]


def test_chunk_task_writes_its_part_file_or_returns_rows_where_it_cannot(blocky_store, tmp_path):
    from geoseg.io.labelstore import read_label_info
    from geoseg.vector.parts import read_part
    from geoseg.vector.polygonize import ChunkSpec, vectorize_chunk

    store, _ = blocky_store
    grid = read_label_info(store).chunk_grid
    window = next(iter(grid.windows()))
    names = tuple(f"c{i}" for i in range(256))
    res = vectorize_chunk(window, ChunkSpec(str(store), grid, (NODATA_LABEL,), parts_dir=str(tmp_path), class_names=names))
    lost = vectorize_chunk(window, ChunkSpec(str(store), grid, (NODATA_LABEL,), parts_dir=str(tmp_path / "unseen"),
                                             class_names=names))
    assert res.part is not None and len(res.final) == 0 and lost.part is None and len(lost.final) > 0
    rows = pa.Table.from_batches(list(read_part(res.part)))
    assert rows.column("geom").to_pylist() == pa.array(lost.final, pa.binary()).to_pylist()
    assert sum(n for n, _ in res.part_tally.values()) == rows.num_rows
