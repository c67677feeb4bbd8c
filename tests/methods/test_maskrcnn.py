"""Mask R-CNN: checkpoints (safetensors + sidecar, refusals), training from polygons / id rasters / chips /
boxes, and chunk-independent instances from a real network (random weights here; trained in the slow test)."""

from __future__ import annotations

import warnings
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import zarr

from geoseg.errors import CheckpointError, JobSpecError, ModelInputError
from geoseg.legend import ClassInfo
from geoseg.methods.maskrcnn import (
    MaskRCNNMeta,
    build_maskrcnn,
    check_maskrcnn,
    load_init_weights,
    load_maskrcnn,
    maskrcnn_tile_model,
    save_maskrcnn,
)
from geoseg.methods.training.instances import BoxMasksWarning, InstanceTrainJob, train_maskrcnn
from geoseg.samples.crowns import CROWN_BANDS, TREE, make_crowns

TREES = [ClassInfo(TREE, "tree", "#1f7a1f")]


@pytest.fixture(scope="module")
def crowns(tmp_path_factory: pytest.TempPathFactory):
    return make_crowns(tmp_path_factory.mktemp("crowns"), width=384, height=320, seed=4)


def _meta(**kw) -> MaskRCNNMeta:
    base = dict(in_channels=4, band_names=list(CROWN_BANDS), band_mean=[1000.0] * 4, band_std=[500.0] * 4,
                classes=TREES, tile_size=64, tile_overlap=16, max_detections=20, backbone="tiny_fpn",
                resolution=0.1)
    return MaskRCNNMeta(**{**base, **kw})


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A network with random weights whose masks cover their boxes (mask logits shifted up): real proposals
    that differ from tile to tile and overlap, so ownership and suppression are exercised."""
    torch.manual_seed(0)
    meta = _meta()
    model = build_maskrcnn(meta)
    heads: Any = model.roi_heads
    with torch.no_grad():
        heads.mask_predictor.mask_fcn_logits.bias.add_(3.0)
    path = tmp_path_factory.mktemp("ckpt") / "random"
    save_maskrcnn(model, meta, path)
    return path, meta


@pytest.fixture(scope="module")
def small(crowns, tmp_path_factory: pytest.TempPathFactory):
    """256 x 256 px of the crown image in 128 px blocks, so it can be processed in 128 px chunks."""
    path = tmp_path_factory.mktemp("small") / "crowns_small.tif"
    with rasterio.open(crowns.image) as src:
        prof = {**src.profile, "width": 256, "height": 256, "blockxsize": 128, "blockysize": 128,
                "transform": src.transform}
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(src.read(window=((0, 256), (0, 256))))
            dst.descriptions = src.descriptions
    return path


def _ids(store) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "instances"), mode="r")[:])


def test_random_network_merge_of_each_chunk_equals_the_whole_scene(small, random_checkpoint) -> None:
    """The numeric core, fast: a real network's proposals on every tile of 192 x 192 px; each 96 px chunk merged
    from the tiles near it equals the whole scene's merge (the cluster runs below and in the slow test)."""
    from geoseg.geo import Window
    from geoseg.methods.tilemerge import Proposals, TileLayout, merge_window, propose_tiles

    path, meta = random_checkpoint
    model = maskrcnn_tile_model(path, meta, score_threshold=0.0, device="cpu")
    image = rasterio.open(small).read(window=((0, 192), (0, 192))).astype(np.float32)
    valid = np.ones(image.shape[1:], bool)
    layout = TileLayout(192, 192, model.tile, model.overlap)
    tiles = [(i, j) for i in range(layout.n_rows) for j in range(layout.n_cols)]
    per_tile = {t: propose_tiles(model, image, valid, (0, 0), layout, [t]) for t in tiles}
    whole = merge_window(Proposals.concat(list(per_tile.values())), Window(0, 0, 192, 192))
    assert len(np.unique(whole)) > 20
    for r in (0, 96):
        for c in (0, 96):
            w = Window(r, c, 96, 96)
            near = Proposals.concat([per_tile[t] for t in layout.tiles_meeting(w, layout.merge_margin())])
            assert np.array_equal(merge_window(near, w), whole[w.slices])


@pytest.mark.slow
def test_random_network_gives_the_same_instances_and_polygons_at_two_chunk_sizes(small, random_checkpoint, tmp_path,
                                                                                 dask_client) -> None:
    from geoseg.run.methods.maskrcnn import MaskRCNNInstancesConfig, run_maskrcnn_instances

    path, _ = random_checkpoint
    cfg = MaskRCNNInstancesConfig(checkpoint=path, score_threshold=0.0, device="cpu")
    a = run_maskrcnn_instances(cfg, small, tmp_path / "a", chunk_size=128, client=dask_client)
    b = run_maskrcnn_instances(cfg, small, tmp_path / "b", chunk_size=256, client=dask_client)
    ia, ib = _ids(a.outputs["instances"]), _ids(b.outputs["instances"])
    assert a.table.n > 30 and np.array_equal(ia, ib)
    pa, pb = gpd.read_file(a.outputs["instance_polygons"]), gpd.read_file(b.outputs["instance_polygons"])
    assert len(pa) == a.table.n and list(pa.instance_id) == list(pb.instance_id)
    assert all(x.equals(y) and x.symmetric_difference(y).area == 0 for x, y in zip(pa.geometry, pb.geometry))
    assert np.array_equal(pa.score.to_numpy(), pb.score.to_numpy())
    # instances painted across the chunk seam at row/col 128 of the 128 px run: one id on both sides
    across = set(np.unique(ia[127][ia[127] == ia[128]])) | set(np.unique(ia[:, 127][ia[:, 127] == ia[:, 128]]))
    assert len(across - {0}) > 0


def test_checkpoint_round_trip_and_refusals(random_checkpoint, tmp_path) -> None:
    path, meta = random_checkpoint
    model, back = load_maskrcnn(path)
    assert back == meta and not model.training
    assert check_maskrcnn(path, CROWN_BANDS, 0.1).side == 96
    with pytest.raises(ModelInputError, match="expects 4 bands"):
        check_maskrcnn(path, ["red", "green", "blue"], 0.1)
    with pytest.raises(ModelInputError, match="coarser"):
        check_maskrcnn(path, CROWN_BANDS, 1.0)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        check_maskrcnn(tmp_path / "absent", CROWN_BANDS, 0.1)
    (tmp_path / "semantic.json").write_text('{"architecture": "DeepLabV3Plus", "in_channels": 4}')
    with pytest.raises(CheckpointError, match="not a Mask R-CNN"):
        check_maskrcnn(tmp_path / "semantic", CROWN_BANDS, 0.1)
    with pytest.raises(JobSpecError, match="must be 96 px"):
        maskrcnn_tile_model(path, meta, tile=64, overlap=8)


def test_init_weights_adapt_the_band_count_and_skip_other_heads(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    rgb = build_maskrcnn(_meta(in_channels=3, band_names=["red", "green", "blue"], band_mean=[0.0] * 3,
                               band_std=[1.0] * 3, classes=TREES + [ClassInfo(3, "shrub", "#00ff00")]))
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(tmp_path / "rgb.safetensors"))
    four = build_maskrcnn(_meta())
    skipped = load_init_weights(four, tmp_path / "rgb.safetensors")
    assert skipped and all("predictor" in k for k in skipped)  # the class heads of 3 classes
    w3 = rgb.state_dict()["backbone.body.conv1.0.weight"]
    w4 = four.state_dict()["backbone.body.conv1.0.weight"]
    assert torch.allclose(w4[:, 3], w3[:, 0] * 0.75) and torch.allclose(w4[:, :3], w3 * 0.75)
    k = "backbone.fpn.layer_blocks.0.0.weight"
    assert torch.equal(four.state_dict()[k], rgb.state_dict()[k])


def _job(tmp_path, **kw) -> InstanceTrainJob:
    base = dict(classes=TREES, tile_size=64, tile_overlap=16, batch_size=2, epochs=1, steps_per_epoch=2,
                max_detections=20, checkpoint=tmp_path / "m", device="cpu", threads=1, norm_windows=2)
    return InstanceTrainJob(**{**base, **kw})


def test_training_from_polygons_writes_a_checkpoint_that_runs(crowns, tmp_path) -> None:
    meta = train_maskrcnn(_job(tmp_path, pairs=[dict(image=crowns.image, vector=crowns.crowns, class_value=TREE)]))
    assert meta.masks == "masks" and meta.band_names == list(CROWN_BANDS)
    assert 300 < meta.band_mean[3] < 6000 and meta.training["epochs"] == 1
    model = maskrcnn_tile_model(tmp_path / "m", check_maskrcnn(tmp_path / "m", CROWN_BANDS, 0.1), score_threshold=0.0)
    image = rasterio.open(crowns.image).read(window=((0, 96), (0, 96))).astype(np.float32)
    props = model.propose(image, np.ones((96, 96), bool))
    assert all(p.class_id == TREE and p.mask.shape == (96, 96) for p in props)


def test_each_polygon_is_its_own_instance_even_when_crowns_touch(crowns) -> None:
    from geoseg.methods.training.instances import InstancePair as Pair
    from geoseg.methods.training.instances import _VectorSource

    src = _VectorSource(Pair(image=crowns.image, vector=crowns.crowns, class_value=TREE))
    insts = src.instances(0, 0, 128)
    truth = rasterio.open(crowns.instances).read(1, window=((0, 128), (0, 128)))
    want = sorted(np.count_nonzero(truth == v) for v in np.unique(truth) if v)
    assert sorted(np.count_nonzero(m) for m, _ in insts) == want  # burnt one by one: touching crowns stay apart


def test_boxes_only_annotations_train_box_masks_and_say_so(crowns, tmp_path) -> None:
    boxes = gpd.read_file(crowns.crowns)
    boxes["geometry"] = boxes.geometry.envelope
    boxes.to_file(tmp_path / "boxes.gpkg", driver="GPKG")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        meta = train_maskrcnn(_job(tmp_path, pairs=[dict(image=crowns.image, vector=tmp_path / "boxes.gpkg",
                                                         class_field="class_id")]))
    assert any(issubclass(w.category, BoxMasksWarning) for w in seen)
    assert meta.masks == "boxes" and "box" in meta.training["masks_from"]


def test_training_from_an_id_raster_and_from_chips(crowns, tmp_path) -> None:
    meta = train_maskrcnn(_job(tmp_path, pairs=[dict(image=crowns.image, instances=crowns.instances,
                                                     class_value=TREE)]))
    assert meta.masks == "masks"
    chips = tmp_path / "chips"
    (chips / "images").mkdir(parents=True)
    (chips / "instances").mkdir()
    img = rasterio.open(crowns.image).read()
    ids = rasterio.open(crowns.instances).read(1)
    for k, (r, c) in enumerate([(0, 0), (100, 200)]):
        prof = dict(driver="GTiff", width=120, height=120)
        with rasterio.open(chips / "images" / f"c{k}.tif", "w", count=4, dtype="uint16", **prof) as ds:
            ds.write(img[:, r : r + 120, c : c + 120])
        with rasterio.open(chips / "instances" / f"c{k}.tif", "w", count=1, dtype="uint32", **prof) as ds:
            ds.write(ids[r : r + 120, c : c + 120], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        meta = train_maskrcnn(_job(tmp_path, chips=chips, chip_class=TREE, checkpoint=tmp_path / "chipmodel"))
    assert meta.crs is None and meta.resolution is None and len(meta.training["images"]) == 2


def test_bad_training_jobs_are_refused(crowns, tmp_path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of"):
        _job(tmp_path, pairs=[dict(image=crowns.image, class_value=TREE)])
    with pytest.raises(ValidationError, match="not among classes"):
        _job(tmp_path, pairs=[dict(image=crowns.image, vector=crowns.crowns, class_value=5)])
    with pytest.raises(ValidationError, match="chip_class"):
        _job(tmp_path, chips=tmp_path)


@pytest.mark.slow
def test_trained_network_finds_crowns_and_keeps_those_on_seams_whole_at_two_chunk_sizes(tmp_path, dask_client) -> None:
    """The bar: a Mask R-CNN trained a few minutes on a CPU, run on a cluster at chunks of 256 and 512 px."""
    from scipy import ndimage

    from geoseg.accuracy.instancemetrics import overlaps_of_rasters, score_instances
    from geoseg.run.methods.maskrcnn import MaskRCNNInstancesConfig, run_maskrcnn_instances

    train = make_crowns(tmp_path / "train", width=768, height=768, seed=11)
    test = make_crowns(tmp_path / "test", width=512, height=512, seed=5)
    train_maskrcnn(_job(tmp_path, pairs=[dict(image=train.image, vector=train.crowns, class_value=TREE)],
                        tile_size=96, tile_overlap=16, batch_size=4, epochs=3, steps_per_epoch=40, lr=3e-3,
                        max_detections=300, norm_windows=16))
    cfg = MaskRCNNInstancesConfig(checkpoint=tmp_path / "m", device="cpu")
    a = run_maskrcnn_instances(cfg, test.image, tmp_path / "a", chunk_size=256, client=dask_client,
                               reference=test.crowns, reference_value=TREE)
    b = run_maskrcnn_instances(cfg, test.image, tmp_path / "b", chunk_size=512, client=dask_client)
    ia, ib = _ids(a.outputs["instances"]), _ids(b.outputs["instances"])
    assert np.array_equal(ia, ib)
    pa, pb = gpd.read_file(a.outputs["instance_polygons"]), gpd.read_file(b.outputs["instance_polygons"])
    assert list(pa.instance_id) == list(pb.instance_id)
    assert all(x.equals(y) for x, y in zip(pa.geometry, pb.geometry))
    score = a.scores[0]
    assert score.recall >= 0.8 and score.precision >= 0.8, score
    # every true crown across the seams at 256 px that was found is one id on both sides of the seam
    truth = rasterio.open(test.instances).read(1)
    _, inv = np.unique(truth, return_inverse=True)
    dense = inv.reshape(truth.shape)
    ov = overlaps_of_rasters(ia, dense, a.table.cls, np.full(int(dense.max()), TREE))
    assert score_instances(ov)[0].tp == score.tp
    whole = 0
    for t, sl in enumerate(ndimage.find_objects(dense), start=1):
        rows, cols = sl
        if not (rows.start < 256 < rows.stop or cols.start < 256 < cols.stop):
            continue
        got, n = np.unique(ia[dense == t], return_counts=True)
        best = got[np.argmax(n)]
        inter = n.max()
        if best == 0 or inter / (np.count_nonzero(dense == t) + np.count_nonzero(ia == best) - inter) < 0.5:
            continue
        r, c = np.nonzero(ia == best)
        assert (r.min() < 256 <= r.max()) or (c.min() < 256 <= c.max()), t
        whole += 1
    assert whole >= 20


def test_tasks_ask_for_a_gpu_where_workers_offer_one(small, random_checkpoint) -> None:
    from geoseg.io.scene import open_scene
    from geoseg.run.methods.maskrcnn import MaskRCNNInstancesConfig, build_maskrcnn_instances

    path, _ = random_checkpoint
    scene = open_scene(small)
    assert build_maskrcnn_instances(MaskRCNNInstancesConfig(checkpoint=path), scene, gpu_workers=1)[1] == {"GPU": 1}
    assert build_maskrcnn_instances(MaskRCNNInstancesConfig(checkpoint=path), scene, gpu_workers=0)[1] is None
    cpu = MaskRCNNInstancesConfig(checkpoint=path, device="cpu")
    model, resources = build_maskrcnn_instances(cpu, scene, gpu_workers=1)
    assert resources is None and model.device == "cpu" and (model.tile, model.overlap) == (64, 16)


@pytest.mark.gpu
def test_instances_on_cuda_do_not_depend_on_the_chunking_and_match_cpu(small, random_checkpoint, tmp_path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from geoseg.run.methods.maskrcnn import MaskRCNNInstancesConfig, run_maskrcnn_instances

    path, _ = random_checkpoint
    gpu = MaskRCNNInstancesConfig(checkpoint=path, score_threshold=0.0, device="cuda")
    a = run_maskrcnn_instances(gpu, small, tmp_path / "a", chunk_size=128, polygons=False)
    b = run_maskrcnn_instances(gpu, small, tmp_path / "b", chunk_size=256, polygons=False)
    ia = _ids(a.outputs["instances"])
    assert a.table.n > 30 and np.array_equal(ia, _ids(b.outputs["instances"]))
    cpu = run_maskrcnn_instances(gpu.model_copy(update={"device": "cpu"}), small, tmp_path / "c", chunk_size=128,
                                 polygons=False)
    assert (ia == _ids(cpu.outputs["instances"])).mean() > 0.95  # float differences may move a few mask edges


def test_the_pixel_size_is_checked_in_metres_across_crs_units(tmp_path) -> None:
    """Trained at 0.1 m (UTM): an orthomosaic of 0.328 US survey feet is the same ground size, one of 0.1 ft not."""
    from rasterio.crs import CRS

    meta = _meta(crs="EPSG:32632")
    save_maskrcnn(build_maskrcnn(meta), meta, tmp_path / "m")
    feet = CRS.from_epsg(2263)
    assert check_maskrcnn(tmp_path / "m", CROWN_BANDS, 0.1 * 3937 / 1200, feet).resolution == 0.1
    with pytest.raises(ModelInputError, match=r"trained on pixels of 0.1 m, image pixels are 0.0304801 m \(3.28x finer\); "
                                              r"resample the image to 0.328083 of its CRS units"):
        check_maskrcnn(tmp_path / "m", CROWN_BANDS, 0.1, feet)
