"""Chips end to end by job files only: a folder as delivered (images/NNN_image.png with
annotations/NNN_annotation.png, no georeference) trains, infers and is scored, each chip on its pixel grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from geoseg.run.jobspec import load_job
from geoseg.run.workflow import run_job

pytestmark = pytest.mark.integration

PIXEL = 0.005
CLASSES = "[{id: 1, name: crop, color: '#00ff00'}, {id: 2, name: weed, color: '#ff0000'}]"
CHIPS = ("chips: {folder: ds, pixel_size_m: 0.005, masks: annotations, image_suffix: _image, "
         "mask_suffix: _annotation, split: {train: ds/train.txt, val: ds/val.txt, test: ds/test.txt}, use: test}\n")


def _dataset(folder: Path, n: int = 5, size: int = 64) -> dict[str, np.ndarray]:
    """Chips whose colours follow their class (k-means and a tiny network can both find them); 0 = unlabelled."""
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    rng = np.random.default_rng(3)
    truth = {}
    for i in range(n):
        ids = np.kron(rng.integers(0, 3, (size // 16, size // 16)), np.ones((16, 16), int)).astype(np.uint8)
        img = np.stack([ids * 80 + 20, 220 - ids * 90, np.full_like(ids, 90)], -1)
        img = np.clip(img + rng.integers(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"{i:03d}_image.png")
        Image.fromarray(ids).save(folder / "annotations" / f"{i:03d}_annotation.png")
        truth[f"{i:03d}"] = ids
    (folder / "train.txt").write_text("000\n001\n")
    (folder / "val.txt").write_text("003_image.png\n")
    (folder / "test.txt").write_text("002\n004\n")  # the chips run and scored
    return truth


def _pooled_oracle(out: Path, truth: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """The pooled confusion counted here: each chip's labels (as mapped) against its mask, where the mask is labelled."""
    mapping = pd.read_csv(out / "class_mapping.csv").set_index("label_id")["class_id"].to_dict()
    rows = []
    for name in names:
        labels = xr.open_zarr(str(out / "chips" / name / "labels.zarr"), mask_and_scale=False)["labels"].values
        mask = truth[name]
        keep = (mask != 0) & (labels != 255)
        rows.append(pd.DataFrame({"ref": mask[keep], "pred": [mapping.get(int(v), int(v)) for v in labels[keep]]}))
    both = pd.concat(rows, ignore_index=True)
    return pd.crosstab(both["ref"], both["pred"])


def _check_scored(out: Path, truth: dict[str, np.ndarray], clusters: bool = True) -> None:
    names = ["002", "004"]
    record = json.loads((out / "run.json").read_text())
    assert record["outcome"] == "complete" and record["mode"] == "chips"
    assert [c["name"] for c in record["chips"]] == names and "without georeference" in record["grid"]
    metrics = pd.read_csv(out / "metrics.csv")
    scene = metrics[(metrics.region_id == "ALL") & (metrics.kind == "region")].iloc[0]
    oracle = _pooled_oracle(out, truth, names)
    assert scene["valid_px"] == oracle.values.sum() == sum(int((truth[n] != 0).sum()) for n in names)
    correct = sum(oracle.loc[c, c] for c in oracle.index if c in oracle.columns)
    assert scene["overall_accuracy"] == pytest.approx(correct / oracle.values.sum())
    per_class = metrics[(metrics.region_id == "ALL") & (metrics.kind == "class")]
    assert set(per_class.class_name) == {"crop", "weed"}  # 0 is unlabelled, not a class
    np.testing.assert_allclose(per_class.area_m2, per_class.support_px * PIXEL**2)  # the declared pixel size
    report = (out / "report.html").read_text()
    assert "without georeference" in report and "different pixel sizes" not in report
    assert pd.read_csv(out / "scenes.csv").scene.tolist() == [*names, "ALL (pooled)"]
    from geoseg.run.verify import verify_run

    checked = verify_run(out)  # geoseg verify checks every chip's run
    # every chip's labels.zarr, and the k-means clusters kept inside it (labels.zarr/method_labels)
    assert checked.problems == ()
    subs = ("", "/method_labels") if clusters else ("",)
    assert sorted(p.relative_to(out / "chips").as_posix() for p in checked.stores) == sorted(
        f"{n}/labels.zarr{sub}" for n in names for sub in subs)
    for name in names:  # every chip is a complete run of its own, on its pixel grid
        item = json.loads((out / "chips" / name / "item.json").read_text())
        assert item["geometry"] is None and item["properties"]["proj:shape"] == [64, 64]
        assert item["properties"]["proj:transform"][0] == PIXEL


def test_kmeans_job_file_runs_and_scores_a_delivered_chip_folder(tmp_path, dask_client):
    truth = _dataset(tmp_path / "ds")
    (tmp_path / "run.yaml").write_text(
        "name: chips-km\n" + CHIPS + f"classes: {CLASSES}\noutput: out\nchunk_size: 64\n"
        "method: {kind: kmeans, n_clusters: 3, sample_size: 3000, seed: 0}\nevaluate: {mapping: many-to-one}\n"
    )
    result = run_job(load_job(tmp_path / "run.yaml"), client=dask_client, show_progress=False)
    out = tmp_path / "out"
    assert result.outputs["metrics"] == out / "metrics.csv"
    _check_scored(out, truth)
    models = {json.loads((out / "chips" / n / "run.json").read_text())["job"]["method"]["model"] for n in ("002", "004")}
    assert models == {None, str(out / "chips" / "002" / "model.json")}  # one k-means model for every chip


@pytest.mark.slow
def test_train_infer_evaluate_a_delivered_chip_folder_by_job_files(tmp_path, dask_client):
    from geoseg.methods.training import load_train_job, train

    truth = _dataset(tmp_path / "ds")
    (tmp_path / "train.yaml").write_text(
        "version: 1\n" + CHIPS.replace(", use: test", "") + f"classes: {CLASSES}\ncheckpoint: model\n"
        "tile_size: 32\nbatch_size: 4\nepochs: 2\nsteps_per_epoch: 4\nnum_workers: 0\nencoder: resnet18\n"
        "encoder_depth: 3\ndecoder_channels: 16\nprogress: false\n"
    )
    job = load_train_job(tmp_path / "train.yaml")
    assert len(job.pairs) == 2 and len(job.val_pairs) == 1  # the split files, not a seeded draw
    train(job)
    (tmp_path / "run.yaml").write_text(
        "name: chips-dl\n" + CHIPS + f"classes: {CLASSES}\noutput: out\nchunk_size: 64\n"
        "method: {kind: deeplab, checkpoint: model}\n"
    )
    run_job(load_job(tmp_path / "run.yaml"), client=dask_client, show_progress=False)
    _check_scored(tmp_path / "out", truth, clusters=False)  # a network's labels are classes: no clusters kept
