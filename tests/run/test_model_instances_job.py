"""Tile-model instance methods in a job (``instances.method.kind``: ``maskrcnn``, ``sam``): the tile merge of
geoseg.run.modelinstances, then panoptic.zarr that agrees with the labels, on a real 2-process cluster."""

from __future__ import annotations

import csv
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import GeosegError
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.crowns import CROWN_BANDS, TREE, make_crowns

pytestmark = pytest.mark.integration

#: A tiny SAM (random weights): 256 px input, 2 ViT blocks of 64 channels.
TINY_SAM = {"embed_dim": 64, "depth": 2, "heads": 2, "global_blocks": [1], "image_size": 256, "prompt_dim": 32,
            "decoder_mlp": 64, "decoder_heads": 2}


@pytest.fixture(scope="module")
def crowns(tmp_path_factory):
    return make_crowns(tmp_path_factory.mktemp("crowns"), width=512, height=256, seed=3)


def _job(files, out, chunk: int, method: dict) -> dict:
    return {"name": "tiles", "inputs": [str(files.image)], "output": str(out), "chunk_size": chunk,
            "method": {"kind": "threshold", "index": "exg", "threshold": "otsu",
                       "classes": [{"id": 1, "name": "ground"}, {"id": 2, "name": "tree"}]},
            "instances": {"method": method, "things": ["tree"]}, "vectorize": {"enabled": False}}


def _read(out) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    with rasterio.open(f'ZARR:"{out / "panoptic.zarr"}":/semantic') as ds:
        sem = ds.read(1)
    with rasterio.open(f'ZARR:"{out / "panoptic.zarr"}":/instances') as ds:
        inst = ds.read(1)
    return sem, inst, list(csv.DictReader((out / "instances.csv").read_text().splitlines()))


def _sam_method(tmp_path) -> dict:
    from safetensors.torch import save_file

    from geoseg.methods.sam import SamShape, build_sam

    torch.manual_seed(0)
    sam = build_sam(SamShape(**{**TINY_SAM, "global_blocks": (1,)}))
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, tmp_path / "sam.safetensors")
    return {"kind": "sam", "checkpoint": str(tmp_path / "sam.safetensors"), "encoder": TINY_SAM, "tile": 128,
            "overlap": 32, "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
            "sample_size": 5000}


def _sam_run(crowns, tmp_path, dask_client, chunk: int) -> tuple[bytes, bytes]:
    import json

    out = tmp_path / f"sam{chunk}"
    run_job(parse_job(_job(crowns, out, chunk, _sam_method(tmp_path))), client=dask_client, show_progress=False)
    sem, inst, table = _read(out)
    assert inst.any() and np.all(sem[inst > 0] == TREE)  # masks classed by the labels, off-class pixels cleared
    assert {r["class_name"] for r in table} == {"tree"} and all(0 < float(r["score"]) <= 1.5 for r in table)
    scaling = json.loads((out / "run.json").read_text())["sam_scaling"]  # one scaling, from the global sample
    assert all(lo < hi for lo, hi in zip(scaling["low"], scaling["high"]))
    return inst.tobytes(), (out / "instances.csv").read_bytes()


def test_sam_instances_in_a_job_agree_with_the_labels(crowns, tmp_path, dask_client):
    pytest.importorskip("segment_anything")
    _sam_run(crowns, tmp_path, dask_client, 256)


@pytest.mark.slow
def test_sam_instances_in_a_job_do_not_depend_on_chunk_size(crowns, tmp_path, dask_client):
    pytest.importorskip("segment_anything")
    assert _sam_run(crowns, tmp_path, dask_client, 256) == _sam_run(crowns, tmp_path, dask_client, 512)


def test_sam_without_its_checkpoint_is_refused_before_the_cluster_starts(crowns, tmp_path):
    pytest.importorskip("segment_anything")
    job = _job(crowns, tmp_path / "bad", 256, {"kind": "sam", "checkpoint": str(tmp_path / "none.pth")})
    with pytest.raises(GeosegError, match="SAM checkpoint .*none.pth does not exist"):
        run_job(parse_job(job), scheduler="tcp://127.0.0.1:9", show_progress=False)
    assert not (tmp_path / "bad").exists()


def test_maskrcnn_instances_in_a_job(crowns, tmp_path, dask_client):
    """A random-weight Mask R-CNN (masks forced to cover their boxes) through the job: its boxes cross
    ground, so panoptic.zarr keeps only their tree pixels."""
    from geoseg.legend import ClassInfo
    from geoseg.methods.maskrcnn import MaskRCNNMeta, build_maskrcnn, save_maskrcnn

    torch.manual_seed(0)
    meta = MaskRCNNMeta(in_channels=4, band_names=list(CROWN_BANDS), band_mean=[1000.0] * 4, band_std=[500.0] * 4,
                        classes=[ClassInfo(TREE, "tree", "#1f7a1f")], tile_size=64, tile_overlap=16,
                        max_detections=20, backbone="tiny_fpn", resolution=0.1)
    model = build_maskrcnn(meta)
    heads: Any = model.roi_heads
    with torch.no_grad():
        heads.mask_predictor.mask_fcn_logits.bias.add_(3.0)
    save_maskrcnn(model, meta, tmp_path / "random")
    out = tmp_path / "mrcnn"
    method = {"kind": "maskrcnn", "checkpoint": str(tmp_path / "random"), "score_threshold": 0.0, "device": "cpu"}
    run_job(parse_job(_job(crowns, out, 256, method)), client=dask_client, show_progress=False)
    sem, inst, table = _read(out)
    assert inst.any() and np.all(sem[inst > 0] == TREE)
    counts = np.bincount(inst.ravel())
    assert [int(r["area_px"]) for r in table] == counts[[int(r["instance_id"]) for r in table]].tolist()
