"""``geoseg train`` with ``kind: maskrcnn`` and ``geoseg instances --method maskrcnn``: the CLI over the library."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import yaml

from geoseg.cli import main
from geoseg.samples.crowns import TREE, make_crowns


@pytest.fixture(scope="module")
def crowns(tmp_path_factory: pytest.TempPathFactory):
    return make_crowns(tmp_path_factory.mktemp("crowns"), width=256, height=256, seed=2)


def test_train_then_find_instances_from_the_command_line(crowns, tmp_path: Path, capsys) -> None:
    job = {"version": 1, "kind": "maskrcnn", "pairs": [{"image": str(crowns.image), "vector": str(crowns.crowns),
                                                         "class_field": "class_id"}],
           "classes": [{"id": TREE, "name": "tree", "color": "#1f7a1f"}], "tile_size": 64, "tile_overlap": 16,
           "batch_size": 2, "epochs": 1, "steps_per_epoch": 1, "max_detections": 10, "norm_windows": 2,
           "device": "cpu", "threads": 1, "checkpoint": "model/crowns"}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(job))
    assert main(["train", str(tmp_path / "train.yaml")]) == 0
    out = capsys.readouterr().out
    assert "epoch   1: train loss" in out and (tmp_path / "model" / "crowns.json").is_file()
    rc = main(["instances", str(crowns.image), "--method", "maskrcnn", "--checkpoint", str(tmp_path / "model" / "crowns"),
               "--score-threshold", "0", "--out", str(tmp_path / "inst"), "--chunk-size", "256",
               "--reference", str(crowns.crowns), "--reference-value", str(TREE)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "instances (Mask R-CNN" in out and "class 2:" in out
    polys = gpd.read_file(tmp_path / "inst" / "instances.gpkg")
    assert {"instance_id", "class_id", "score", "area_m2"} <= set(polys.columns)
    header = (tmp_path / "inst" / "instances.csv").read_text().splitlines()[0]
    assert header.startswith("instance_id,class_id,class_name,first_row") and header.endswith(",score")


@pytest.mark.parametrize("args, message", [
    (["--method", "maskrcnn"], "needs --checkpoint"),
    (["--method", "maskrcnn", "--checkpoint", "x", "--classes", "2"], "--classes is for watershed"),
    ([], "watershed needs --classes"),
    (["--classes", "2", "--checkpoint", "x"], "--checkpoint is for --method maskrcnn"),
])
def test_instances_refuses_options_of_the_other_method(crowns, tmp_path: Path, capsys, args, message) -> None:
    assert main(["instances", str(crowns.image), "--out", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err
