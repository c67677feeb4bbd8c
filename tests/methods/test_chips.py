"""Chip folders (PNG masks coloured per class, no georeference) train like georeferenced pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from geoseg.errors import InputError
from geoseg.legend import ClassInfo
from geoseg.methods.training import TrainConfig, TrainPair, open_sources, train
from geoseg.methods.training.chips import chip_pairs

torch.set_num_threads(1)

COLORS = {"#000000": 0, "#00ff00": 1, "#ff0000": 2}  # background unlabelled, crop, weed
CLASSES = [ClassInfo(1, "crop", "#00ff00"), ClassInfo(2, "weed", "#ff0000")]


def _chips(folder: Path, n: int = 5, size: int = 64) -> dict[str, np.ndarray]:
    """n RGB chips with RGB masks in images/ and masks/; returns each chip's class ids (the oracle)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    palette = np.array([[0, 0, 0], [0, 255, 0], [255, 0, 0]], np.uint8)
    truth = {}
    for i in range(n):
        ids = np.kron(rng.integers(0, 3, (size // 16, size // 16)), np.ones((16, 16), int)).astype(np.uint8)
        img = np.stack([ids * 60 + 20, 200 - ids * 50, np.full_like(ids, 90)], -1).astype(np.uint8)
        img = np.clip(img + rng.integers(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"chip{i}.{'png' if i % 2 else 'jpg'}")  # JPEG and PNG images
        Image.fromarray(palette[ids]).save(folder / "masks" / f"chip{i}.png")
        truth[f"chip{i}"] = ids
    return truth


def test_chip_folder_becomes_pairs_split_by_image(tmp_path: Path) -> None:
    truth = _chips(tmp_path / "chips")
    train_pairs, val_pairs = chip_pairs(tmp_path / "chips", pixel_size_m=0.005, colors=COLORS, val_fraction=0.4)
    names = lambda ps: {Path(p["image"]).stem for p in ps}  # noqa: E731
    assert len(val_pairs) == 2 and len(train_pairs) == 3 and not names(train_pairs) & names(val_pairs)
    for p in train_pairs + val_pairs:
        with rasterio.open(p["reference"]) as ds, rasterio.open(p["image"]) as im:
            np.testing.assert_array_equal(ds.read(1), truth[Path(p["image"]).stem])  # colours -> ids
            assert ds.transform.a == pytest.approx(0.005) and ds.crs is not None
            assert im.descriptions == ("red", "green", "blue")
    again = chip_pairs(tmp_path / "chips", pixel_size_m=0.005, colors=COLORS, val_fraction=0.4)
    assert again == (train_pairs, val_pairs)  # seeded, and cached
    with pytest.raises(InputError, match="#ff0000"):
        chip_pairs(tmp_path / "chips", pixel_size_m=0.005, colors={"#000000": 0, "#00ff00": 1}, cache=tmp_path / "c2")
    with pytest.raises(InputError, match="pixel size"):
        chip_pairs(tmp_path / "chips", pixel_size_m=0, colors=COLORS)


def test_training_from_chips(tmp_path: Path) -> None:
    _chips(tmp_path / "chips", n=4)
    train_pairs, val_pairs = chip_pairs(tmp_path / "chips", pixel_size_m=0.005, colors=COLORS, val_fraction=0.25)
    cfg = TrainConfig(pairs=[TrainPair(**p) for p in train_pairs], val_pairs=[TrainPair(**p) for p in val_pairs],
                      classes=CLASSES, tile_size=32, batch_size=2, epochs=1, steps_per_epoch=2, num_workers=0,
                      checkpoint=tmp_path / "m", encoder="resnet18", encoder_depth=3, decoder_channels=16,
                      progress=False)  # fmt: skip
    train_src, val_src = open_sources(cfg)
    assert len(train_src) == 3 and len(val_src) == 1
    result = train(cfg)
    assert result.checkpoint.is_file()
    assert result.history[0]["val_miou"] is not None


def test_training_job_file_with_a_chip_folder(tmp_path: Path) -> None:
    from geoseg.methods.training import load_train_job

    _chips(tmp_path / "chips", n=3)
    (tmp_path / "job.yaml").write_text(
        "version: 1\nchips: {folder: chips, pixel_size_m: 0.005, val_fraction: 0.34,\n"
        "        colors: {'#000000': 0, '#00ff00': 1, '#ff0000': 2}}\n"
        "classes: [{id: 1, name: crop, color: '#00ff00'}, {id: 2, name: weed, color: '#ff0000'}]\n"
        "checkpoint: model\n"
    )
    job = load_train_job(tmp_path / "job.yaml")
    assert len(job.pairs) == 2 and len(job.val_pairs) == 1
    assert all(p.image.is_file() and p.reference.is_file() for p in job.pairs + job.val_pairs)


def _delivered(folder: Path, n: int = 4, size: int = 48) -> dict[str, np.ndarray]:
    """A dataset as delivered: images/NNN_image.png with annotations/NNN_annotation.png (class ids)."""
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    rng = np.random.default_rng(1)
    truth = {}
    for i in range(n):
        ids = np.kron(rng.integers(0, 3, (size // 16, size // 16)), np.ones((16, 16), int)).astype(np.uint8)
        img = np.stack([ids * 60 + 20, 200 - ids * 50, np.full_like(ids, 90)], -1).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"{i:03d}_image.png")
        Image.fromarray(ids).save(folder / "annotations" / f"{i:03d}_annotation.png")
        truth[f"{i:03d}"] = ids
    return truth


def test_delivered_layout_with_suffixes_and_split_files(tmp_path: Path) -> None:
    from geoseg.methods.training.chips import ChipLayout, list_chips

    truth = _delivered(tmp_path / "ds")
    with pytest.raises(InputError, match="give image_suffix and mask_suffix"):
        list_chips(tmp_path / "ds")  # the mask folder is found, the names differ: say how to pair them
    layout = ChipLayout(image_suffix="_image", mask_suffix="_annotation")
    chips = list_chips(tmp_path / "ds", layout)
    assert [c.name for c in chips] == sorted(truth) and chips[0].mask.parent.name == "annotations"
    (tmp_path / "ds" / "labels").mkdir()
    with pytest.raises(InputError, match="several of masks/, annotations/, labels/"):
        list_chips(tmp_path / "ds", layout)
    layout = ChipLayout(masks="annotations", image_suffix="_image", mask_suffix="_annotation")
    (tmp_path / "train.txt").write_text("000\n001_image.png  # a file name works too\n\n")
    (tmp_path / "val.txt").write_text("002\n")
    (tmp_path / "test.txt").write_text("003_annotation.png\n")
    split = {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt", "test": tmp_path / "test.txt"}
    train_pairs, val_pairs = chip_pairs(tmp_path / "ds", pixel_size_m=0.01, layout=layout, split=split)
    assert [Path(p["image"]).stem for p in train_pairs] == ["000", "001"]
    assert [Path(p["image"]).stem for p in val_pairs] == ["002"]
    with rasterio.open(val_pairs[0]["reference"]) as ds:  # single-band masks are class ids; 0 is unlabelled
        np.testing.assert_array_equal(ds.read(1), truth["002"])
        assert ds.nodata == 0 and ds.res == (0.01, 0.01)
    (tmp_path / "val.txt").write_text("002\n003\n")
    with pytest.raises(InputError, match="003 in both the val and the test file"):
        chip_pairs(tmp_path / "ds", pixel_size_m=0.01, layout=layout, split=split)
    (tmp_path / "val.txt").write_text("002\n099\n")
    with pytest.raises(InputError, match=r"val.txt:2 names no chip of the folder; .* such as '000'") as caught:
        chip_pairs(tmp_path / "ds", pixel_size_m=0.01, layout=layout, split=split)
    assert "099" not in str(caught.value)  # a line is named by its number: a split file may be any file


def test_a_split_file_elsewhere_never_shows_its_lines(tmp_path: Path) -> None:
    """A job may name any file as a split file: its refusal names the line, never the text (CLI, one line)."""
    import os
    import subprocess
    import sys

    _chips(tmp_path / "chips", n=2)
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("api_key = geoseg-secret-8c41b7e2\n")
    binary = tmp_path / "split.bin"
    binary.write_bytes(b"\xf0\x28\x8c\x28" * 8)
    colors = "colors: {'#000000': 0, '#00ff00': 1, '#ff0000': 2}"
    jobs = {
        "train.yaml": f"version: 1\nchips: {{folder: chips, pixel_size_m: 0.005, {colors}, split: {{train: {secret}}}}}\n"
                      "classes: [{id: 1, name: crop}, {id: 2, name: weed}]\ncheckpoint: model\n",
        "run.yaml": f"name: leak\nchips: {{folder: chips, pixel_size_m: 0.005, {colors}, split: {{test: {secret}}}, "
                    "use: test}\noutput: out\nmethod: {kind: kmeans, n_clusters: 2}\n",
        "binary.yaml": f"name: leak\nchips: {{folder: chips, pixel_size_m: 0.005, {colors}, split: {{test: {binary}}}, "
                       "use: test}\noutput: out\nmethod: {kind: kmeans, n_clusters: 2}\n",
    }
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for name, text in jobs.items():
        (tmp_path / name).write_text(text)
        command = "train" if name == "train.yaml" else "run"
        res = subprocess.run([sys.executable, "-m", "geoseg.cli", command, str(tmp_path / name), "-q"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("geoseg: error:"), res.stderr
        assert "geoseg-secret" not in res.stdout + res.stderr
        assert (":1 names no chip" if name != "binary.yaml" else "not UTF-8 text") in lines[0], lines[0]
