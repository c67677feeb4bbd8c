"""The model-agnostic seam merge: instance rasters that do not depend on the chunking, objects on seams whole.

The model is :class:`~geoseg.methods.components.ComponentsModel` (connected components of a dark band), a
real model whose right answer is known: the connected components of the whole thresholded scene
(scipy, the oracle). The scene's crowns never touch, so each component is one crown.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr
from scipy import ndimage

from geoseg.geo import Window
from geoseg.methods.components import ComponentsModel
from geoseg.methods.proposals import InstanceProposal
from geoseg.methods.tilemerge import Proposals, TileLayout, merge_window, owned_proposals, paint, suppressed
from geoseg.run.modelinstances import segment_model_instances
from geoseg.samples.crowns import CrownLayout, make_crowns

FOUR = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
#: Crowns 10-16 px across, centres at least 18 px apart: they never touch; cells of 30 px put crowns on the seams.
APART = CrownLayout(cell=30, radius=(5.0, 8.0), jitter=0.2)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    return make_crowns(tmp_path_factory.mktemp("apart"), width=768, height=640, seed=1, layout=APART)


def _ids(store) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "instances"), mode="r")[:])


def _model() -> ComponentsModel:
    # red reflectance x 10,000: crowns < 1,000, soil > 2,000
    return ComponentsModel(band=0, threshold=1300, below=True, tile=128, overlap=24, class_id=2)


def test_same_instances_at_two_chunk_sizes_on_a_cluster_and_equal_to_the_whole_scene(scene, tmp_path,
                                                                                     dask_client) -> None:
    a = segment_model_instances(scene.image, _model(), tmp_path / "a", chunk_size=256, client=dask_client)
    b = segment_model_instances(scene.image, _model(), tmp_path / "b", chunk_size=512, client=dask_client)
    ia, ib = _ids(a.store), _ids(b.store)
    assert np.array_equal(ia, ib)
    assert a.table.score is not None and b.table.score is not None
    assert np.array_equal(a.table.size, b.table.size) and np.array_equal(a.table.score, b.table.score)
    # the oracle: components of the whole scene, numbered by their first pixel (ndimage.label's order)
    red = rasterio.open(scene.image).read(1)
    oracle, n = ndimage.label(red < 1300, structure=FOUR)
    assert n > 300 and a.table.n == n
    assert np.array_equal(ia, oracle.astype(np.uint32))
    assert np.array_equal(np.bincount(ia.ravel())[1:], a.table.size)
    assert np.all(np.diff(a.table.row * 768 + a.table.col) > 0)  # ids by first pixel, row-major
    assert set(a.table.cls.tolist()) == {2}


def test_objects_across_chunk_seams_keep_one_id_and_their_whole_mask(scene, tmp_path) -> None:
    res = segment_model_instances(scene.image, _model(), tmp_path / "s", chunk_size=256)
    ids = _ids(res.store)
    truth = rasterio.open(scene.instances).read(1)
    crossing = 0
    for sl, t in zip(ndimage.find_objects(truth), range(1, truth.max() + 1)):
        if sl is None:
            continue
        rows, cols = sl
        on_seam = any(rows.start < s < rows.stop for s in (256, 512)) or any(cols.start < s < cols.stop for s in (256, 512))
        if not on_seam:
            continue
        crossing += 1
        got = np.unique(ids[truth == t])
        assert got.size == 1 and got[0] > 0, (t, got)
        assert np.array_equal(ids == got[0], truth == t)  # the whole crown, nothing else
    assert crossing > 30


def _prop(box, score, uid, shape=None):
    r0, c0, r1, c1 = box
    return Proposals(np.array([uid]), np.array([1]), np.array([score], np.float32), np.array([box], np.int64),
                     (np.ones((r1 - r0, c1 - c0), bool) if shape is None else shape,))


def test_suppression_is_by_better_proposals_and_not_chained() -> None:
    # A (0.9) and B (0.8) overlap with IoU 0.6; B and C (0.7) with IoU 0.6; A and C barely
    a = _prop((0, 0, 10, 10), 0.9, 0)
    b = _prop((0, 3, 10, 13), 0.8, 1)  # cols 3..13: IoU with A = 70 / 130
    c = _prop((0, 6, 10, 16), 0.7, 2)  # IoU with B = 70 / 130, with A = 40 / 160
    p = Proposals.concat([a, b, c])
    drop = suppressed(p, 0.5)
    assert drop.tolist() == [False, True, True]  # C goes although B went: decisions do not chain
    assert suppressed(p, 0.6).tolist() == [False, False, False]
    out = paint(p, np.array([False, False, False]), Window(0, 0, 10, 16))
    assert out[0, 0] == 1 and out[0, 5] == 1 and out[0, 11] == 2 and out[0, 15] == 3  # the better one paints over
    # equal scores: the smaller uid ranks first
    tie = Proposals.concat([_prop((0, 0, 10, 10), 0.5, 7), _prop((0, 0, 10, 10), 0.5, 3)])
    assert tie.uid.tolist() == [3, 7] and suppressed(tie).tolist() == [False, True]


def test_merge_of_any_window_equals_the_whole_scene_cut() -> None:
    """Brute force: random overlapping proposals; every window's merge is the whole scene's merge, cut."""
    rng = np.random.default_rng(0)
    layout = TileLayout(200, 200, 40, 10)
    parts = []
    for i in range(layout.n_rows):
        for j in range(layout.n_cols):
            rw = layout.read_window(i, j)
            found = []
            for _ in range(6):
                mask = np.zeros((rw.height, rw.width), bool)
                r, c = rng.integers(5, rw.height - 5, 2)
                rad = rng.integers(3, 9)
                yy, xx = np.ogrid[: rw.height, : rw.width]
                mask[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = True
                found.append(InstanceProposal(mask, 1, float(rng.choice([0.5, 0.6, 0.7, 0.8]))))
            valid = np.zeros((rw.height, rw.width), bool)
            valid[max(0, -rw.row_off): 200 - rw.row_off, max(0, -rw.col_off): 200 - rw.col_off] = True
            parts.append(owned_proposals(found, valid, layout, i, j))
    allp = Proposals.concat(parts)
    whole = merge_window(allp, Window(0, 0, 200, 200))
    assert (whole > 0).sum() > 2000 and suppressed(allp).any()
    for w in (Window(0, 0, 64, 64), Window(64, 128, 64, 72), Window(150, 30, 50, 100)):
        near = Proposals.concat([p for (i, j), p in zip(
            [(i, j) for i in range(layout.n_rows) for j in range(layout.n_cols)], parts)
            if (i, j) in set(layout.tiles_meeting(w, layout.merge_margin()))])
        assert np.array_equal(merge_window(near, w), whole[w.slices])


@pytest.mark.parametrize("chunk", [64, 100, 128, 256])
def test_every_tile_belongs_to_exactly_one_chunk(chunk) -> None:
    layout = TileLayout(500, 300, 64, 16)
    owned = [t for r in range(0, 500, chunk) for c in range(0, 300, chunk)
             for t in layout.tiles_owned_by(Window(r, c, min(chunk, 500 - r), min(chunk, 300 - c)))]
    assert sorted(owned) == [(i, j) for i in range(layout.n_rows) for j in range(layout.n_cols)]


def test_objects_wider_than_the_tile_view_are_reported_cut(scene, tmp_path, caplog) -> None:
    """A 40 x 300 px dark object (a hedge, a building block) is one component of the whole image (scipy, the
    oracle), but no 176 px tile view holds it: the model proposes it in pieces, three instances. Those are
    reported (``cut``, a warning naming the overlap to raise); the crowns, which every view holds whole, are not."""
    import logging

    from tests.fixtures import write_raster

    img = np.full((3, 384, 384), 2500, np.uint16)
    img[:, 100:140, 40:340] = 800
    img[:, 200:210, 200:212] = 800  # a small object, seen whole
    path = write_raster(tmp_path / "long.tif", img, nodata=0)
    with caplog.at_level(logging.WARNING, logger="geoseg.run.modelinstances"):
        res = segment_model_instances(path, _model(), tmp_path / "long", chunk_size=256)
    ids = _ids(res.store)
    oracle, n = ndimage.label(img[0] < 1300, structure=FOUR)
    pieces = {int(k): np.unique(ids[oracle == k]) for k in range(1, n + 1)}
    split = [k for k, v in pieces.items() if v.size > 1]
    assert n == 2 and res.table.n > n and len(split) == 1
    assert res.cut == pieces[split[0]].size  # every piece of the object the views cut, and nothing else
    assert "overlap" in caplog.text
    assert segment_model_instances(scene.image, _model(), tmp_path / "crowns", chunk_size=256).cut == 0
