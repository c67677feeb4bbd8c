"""Seam merging with the chunk size known (only seam lines compared, many groups per pass): still
identical to one whole-raster polygonising pass, in any chunk order."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.legend import NODATA_LABEL
from geoseg.vector.gridunion import _grid_union, union_many
from geoseg.vector.polygonize import chunk_polygons
from geoseg.vector.seams import SeamMerger, seam_contacts
from tests.fixtures import chunk_grid
from tests.vector.polygons import assert_same_polygons, label_maps, single_pass


def _merge(labels: np.ndarray, chunk: int, order: list[int], round_pieces: int = 1):
    """Chunks polygonised in ``order``, merged by a SeamMerger that knows the chunk size."""
    grid = chunk_grid(labels.shape[0], labels.shape[1], chunk, Affine.identity())
    windows = list(grid.windows())
    merger = SeamMerger(grid.chunks_shape, round_pieces=round_pieces, cell=chunk)
    geoms, classes = [], []
    for i in order:
        w = windows[i]
        res = chunk_polygons(labels[w.slices], w, grid, skip_classes=(NODATA_LABEL,), world=False)
        geoms.append(res.final)
        classes.append(res.final_class)
        g, c = merger.add((w.row_off // chunk, w.col_off // chunk), res)
        geoms.append(g)
        classes.append(c)
    g, c = merger.finish()
    assert merger.waiting == 0 and not merger.pieces and not merger.merged  # every chunk let go at the end
    return np.concatenate(geoms + [g]), np.concatenate(classes + [c]).astype(np.int32)


def test_merger_holds_only_the_open_front_of_chunks_in_row_major_order():
    """Chunks whose pieces are all out are let go: what is held follows the front, not the raster."""
    labels = np.random.default_rng(5).integers(0, 3, (96, 120)).astype(np.uint8)
    grid = chunk_grid(96, 120, 16, Affine.identity())
    merger = SeamMerger(grid.chunks_shape, round_pieces=1, cell=16)
    held = []
    for w in grid.windows():
        res = chunk_polygons(labels[w.slices], w, grid, skip_classes=(NODATA_LABEL,), world=False)
        merger.add((w.row_off // 16, w.col_off // 16), res)
        held.append(len(merger.pieces))
    merger.finish()
    # the front (a row of chunks and one more) plus chunks of regions still reaching into it; never all of them
    assert grid.n_chunks == 48 and max(held) <= 2 * grid.chunks_shape[1] and held[-1] < 48
    assert not merger.pieces


def _cut(geom: shapely.Geometry, cell: int, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    boxes = np.array([shapely.box(x, y, x + cell, y + cell) for y in range(0, h, cell) for x in range(0, w, cell)])
    pieces = shapely.intersection(geom, boxes)
    pieces = shapely.get_parts(pieces[~shapely.is_empty(pieces)])
    return pieces[shapely.get_type_id(pieces) == 3]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps(), st.randoms(use_true_random=False), st.sampled_from([1, 3, 1000]))
def test_merge_with_the_chunk_size_in_random_order_equals_single_pass(case, rnd, round_pieces):
    labels, chunk = case
    order = list(range(chunk_grid(labels.shape[0], labels.shape[1], chunk).n_chunks))
    rnd.shuffle(order)
    assert_same_polygons(*_merge(labels, chunk, order, round_pieces), *single_pass(labels))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps(max_side=40), st.integers(2, 9))
def test_grid_union_on_the_seam_lines_equals_geos(case, cell):
    """Every region cut along a grid of ``cell``: the fast path (seam lines only) gives GEOS's union."""
    labels, _ = case
    geoms, _ = single_pass(labels)
    groups = [_cut(g, cell, labels.shape) for g in shapely.make_valid(geoms)]
    groups = [g for g in groups if len(g)]
    merged = union_many(groups, cell)
    for g, m in zip(groups, merged):
        expected = shapely.simplify(shapely.union_all(g), 0.0, preserve_topology=False)
        assert m.is_valid
        assert m.normalize().equals_exact(expected.normalize(), 0), (m.wkt, expected.wkt)
        assert _grid_union(g, cell) is not None  # the fast path, not the GEOS fallback


def test_two_pieces_of_one_chunk_touching_at_a_point_inside_it():
    """Joined through the next chunk, they touch at (4, 2), off every seam: the rings turn right there,
    leaving the hole (3..4, 1..2) a separate ring (one ring through (4, 2) twice would be invalid)."""
    labels = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                       [2, 2, 0, 2, 0, 0, 0, 2],
                       [0, 0, 0, 0, 2, 2, 0, 0]], np.uint8)
    geoms, classes = _merge(labels, 3, list(range(3)))
    assert_same_polygons(geoms, classes, *single_pass(labels))
    region = geoms[classes == 0]
    assert len(region) == 1 and len(region[0].interiors) == 1


@pytest.mark.parametrize("order", ["row-major", "reversed", "checkerboard"])
def test_ring_around_a_chunk_corner_with_a_hole_across_the_seams(order):
    """A ring of class 1 around the corner where four chunks meet, its hole cut by both seams, and an
    island inside the hole: one polygon with one hole, whatever the order the chunks come in."""
    labels = np.zeros((16, 16), np.uint8)
    labels[3:13, 3:13] = 1
    labels[6:10, 6:10] = 2
    labels[7:9, 7:9] = 1  # island on the corner of four chunks
    idx = list(range(4))
    order_ = {"row-major": idx, "reversed": idx[::-1], "checkerboard": [0, 3, 1, 2]}[order]
    geoms, classes = _merge(labels, 8, order_)
    assert_same_polygons(geoms, classes, *single_pass(labels))
    ring = geoms[classes == 1]
    assert sorted(len(g.interiors) for g in ring) == [0, 1]
    assert sorted(g.area for g in ring) == [4, 100 - 16]


def test_a_region_spanning_many_chunks_is_one_polygon():
    """A serpentine of class 1 through all 36 chunks, with notches on every seam."""
    labels = np.zeros((60, 60), np.uint8)
    for r in range(2, 58, 8):
        labels[r:r + 3, 2:58] = 1
    for i, r in enumerate(range(2, 50, 8)):
        c = 55 if i % 2 == 0 else 2
        labels[r:r + 11, c:c + 3] = 1
    labels[::10, ::7] = 3  # notches on the seams
    rng = np.random.default_rng(0)
    order = rng.permutation(36).tolist()
    geoms, classes = _merge(labels, 10, order)
    assert_same_polygons(geoms, classes, *single_pass(labels))


def test_many_groups_in_one_pass_equal_each_alone():
    labels = np.random.default_rng(5).integers(0, 3, (48, 48)).astype(np.uint8)
    labels = np.kron(labels[:12, :12], np.ones((4, 4), np.uint8))
    geoms, _ = single_pass(labels)
    groups = [_cut(g, 5, labels.shape) for g in shapely.make_valid(geoms)]
    groups = [g for g in groups if len(g) > 1]
    together = union_many(groups, 5)
    small_batches = union_many(groups, 5, batch_vertices=50)
    alone = [union_many([g], 5)[0] for g in groups]
    for t, s, a in zip(together, small_batches, alone):
        assert t.equals_exact(a, 0) and s.equals_exact(a, 0)


def test_contacts_are_exactly_the_same_class_pieces_sharing_a_seam_edge():
    """Oracle: every pair of same-class pieces in edge-neighbouring chunks whose intersection has a length."""
    labels = np.random.default_rng(2).integers(0, 2, (30, 30)).astype(np.uint8)
    grid = chunk_grid(30, 30, 7, Affine.identity())
    pieces, offsets, n = {}, {}, 0
    for w in grid.windows():
        key = (w.row_off // 7, w.col_off // 7)
        pieces[key] = chunk_polygons(labels[w.slices], w, grid, skip_classes=(NODATA_LABEL,), world=False)
        offsets[key], n = n, n + len(pieces[key].border)
    found = {tuple(p) for p in seam_contacts(pieces, offsets).tolist()}
    expected = set()
    for (iy, ix), here in pieces.items():
        for key in ((iy, ix + 1), (iy + 1, ix)):
            there = pieces.get(key)
            if there is None:
                continue
            for i, (g, c) in enumerate(zip(here.border, here.border_class)):
                for j, (h, d) in enumerate(zip(there.border, there.border_class)):
                    if c == d and shapely.intersection(g, h).length > 0:
                        expected.add((i + offsets[(iy, ix)], j + offsets[key]))
    assert len(expected) > 50
    assert found == expected
