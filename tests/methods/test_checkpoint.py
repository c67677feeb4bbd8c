"""Checkpoints: safetensors + JSON sidecar round trip, no pickle, refusal of unsuitable images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import CheckpointError, ModelError, ModelInputError
from geoseg.methods.checkpoint import (
    build_model,
    check_compatible,
    checkpoint_paths,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from geoseg.methods.deeplab import predict_chunk
from tests.fixtures import BANDS, blocky_scene, tiny_meta, tiny_model


def test_round_trip_same_predictions_and_sidecar(tmp_path, monkeypatch):
    torch.set_num_threads(2)
    meta = tiny_meta()
    model = tiny_model(meta)
    weights, sidecar = save_checkpoint(model, meta, tmp_path / "ck" / "crop")
    assert weights.name == "crop.safetensors" and sidecar.name == "crop.json"
    assert not list((tmp_path / "ck").glob("*.tmp"))
    doc = json.loads(sidecar.read_text())
    for key in ("architecture", "encoder", "encoder_depth", "in_channels", "band_names", "band_mean", "band_std",
                "classes", "tile_size", "tile_overlap", "resolution", "geoseg_version", "training"):
        assert key in doc
    assert doc["architecture"] == "DeepLabV3Plus"
    assert doc["classes"][2] == {"id": 3, "name": "weed", "color": "#e31a1c"}
    assert doc["geoseg_version"]

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must not be used to read checkpoints")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, meta2 = load_checkpoint(tmp_path / "ck" / "crop.safetensors")
    assert meta2 == meta
    assert not loaded.training
    rng = np.random.default_rng(0)
    img = rng.normal(110, 30, (4, 80, 90)).astype(np.float32)
    valid = np.ones((80, 90), bool)
    a = predict_chunk(model, meta, img, valid, device="cpu")
    b = predict_chunk(loaded, meta2, img, valid, device="cpu")
    assert np.array_equal(a, b)
    sd1, sd2 = model.state_dict(), loaded.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_lone_safetensors_file_still_loads(tmp_path):
    meta = tiny_meta()
    weights, sidecar = save_checkpoint(tiny_model(meta), meta, tmp_path / "m")
    sidecar.unlink()
    assert read_meta(weights) == meta
    load_checkpoint(tmp_path / "m")


def test_missing_or_foreign_checkpoint_is_a_model_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    meta = tiny_meta()
    save_checkpoint(tiny_model(meta), meta, tmp_path / "m")
    other = tiny_meta(decoder_channels=32)
    checkpoint_paths(tmp_path / "m")[1].write_text(other.to_json())
    with pytest.raises(CheckpointError, match="cannot load weights"):
        load_checkpoint(tmp_path / "m")


def test_meta_validation():
    with pytest.raises(ValueError, match="in_channels"):
        tiny_meta(in_channels=3)
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_meta(tile_size=70)
    with pytest.raises(ValueError, match="band_std"):
        tiny_meta(band_std=[1.0, 0.0, 1.0, 1.0])


def test_refuses_wrong_band_count_with_names():
    meta = tiny_meta()
    s2 = [f"B{i:02d}" for i in range(1, 14)]
    with pytest.raises(ModelError) as exc:
        check_compatible(meta, s2, 0.01)
    msg = str(exc.value)
    assert "checkpoint expects 4 bands (red, green, blue, nir), image has 13 (B01" in msg


def test_band_names_checked_but_generic_names_pass():
    meta = tiny_meta()
    check_compatible(meta, ["Red", "Green", "Blue", "NIR"], 0.01)
    check_compatible(meta, ["b1", "b2", "b3", "b4"], 0.01)  # files without band descriptions
    check_compatible(meta, ["date1:red", "date1:green", "date1:blue", "date1:nir"], 0.01)
    with pytest.raises(ModelInputError, match="order"):
        check_compatible(meta, ["blue", "green", "red", "nir"], 0.01)
    with pytest.raises(ModelInputError, match="expects bands"):
        check_compatible(meta, ["red", "green", "blue", "swir"], 0.01)
    s2 = tiny_meta(band_names=["B02", "B03", "B04", "B08"])
    with pytest.raises(ModelInputError, match="order"):  # Sentinel-2 names are meaningful, not placeholders
        check_compatible(s2, ["B04", "B03", "B02", "B08"], 0.01)


def test_refuses_other_resolution():
    meta = tiny_meta()
    check_compatible(meta, BANDS, 0.012)
    check_compatible(meta, BANDS, 0.008)
    with pytest.raises(ModelInputError, match=r"10x coarser.*resample"):
        check_compatible(meta, BANDS, 0.1)
    with pytest.raises(ModelInputError, match="2x finer"):
        check_compatible(meta, BANDS, 0.005)
    check_compatible(meta, BANDS, 0.1, max_resolution_ratio=20)
    check_compatible(tiny_meta(resolution=None), BANDS, 10.0)


def test_pixel_sizes_are_compared_in_metres_across_crs_units():
    """A model trained at 0.05 m (UTM) fits an orthomosaic of 0.164 US survey feet (State Plane): the same
    ground size; a 0.05 ft image is 3.3x finer, though its number is the checkpoint's."""
    from rasterio.crs import CRS

    feet = CRS.from_epsg(2263)  # NAD83 / New York Long Island (ftUS)
    metre_per_ft = 1200 / 3937  # the US survey foot, as pyproj defines it
    meta = tiny_meta(resolution=0.05, crs="EPSG:32632")
    check_compatible(meta, BANDS, 0.05 / metre_per_ft, crs=feet)
    with pytest.raises(ModelInputError) as exc:
        check_compatible(meta, BANDS, 0.05, crs=feet)
    assert str(exc.value) == (
        f"checkpoint was trained on pixels of 0.05 m, image pixels are {0.05 * metre_per_ft:g} m "
        f"({1 / metre_per_ft:.3g}x finer); resample the image to {0.05 / metre_per_ft:g} of its CRS units "
        "(gdalwarp -tr) or train a model at this resolution")
    check_compatible(meta, BANDS, 0.05)  # no image CRS given: compared in CRS units, as recorded


def test_user_encoder_weights_are_loaded_and_adapted(tmp_path):
    from safetensors.torch import save_file

    src = build_model("resnet18", 3, 2, encoder_depth=3, decoder_channels=16)
    state = {f"encoder.{k}": v.clone() for k, v in src.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 512)  # a classifier head the encoder lacks is ignored
    save_file(state, str(tmp_path / "enc.safetensors"))
    model = build_model("resnet18", 4, 3, tmp_path / "enc.safetensors", encoder_depth=3, decoder_channels=16)
    got = model.encoder.state_dict()
    assert torch.equal(got["layer1.0.conv1.weight"], src.encoder.state_dict()["layer1.0.conv1.weight"])
    w3 = src.encoder.state_dict()["conv1.weight"]
    assert got["conv1.weight"].shape[1] == 4
    assert torch.allclose(got["conv1.weight"][:, 3], w3[:, 0] * 3 / 4)

    torch.save({"state_dict": src.encoder.state_dict()}, tmp_path / "enc.pth")
    build_model("resnet18", 3, 2, tmp_path / "enc.pth", encoder_depth=3, decoder_channels=16)

    wrong = build_model("mobilenet_v2", 3, 2, encoder_depth=3, decoder_channels=16)
    save_file(dict(wrong.encoder.state_dict()), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ModelError, match="another encoder"):
        build_model("resnet18", 3, 2, tmp_path / "wrong.safetensors", encoder_depth=3)
    with pytest.raises(CheckpointError):
        build_model("resnet18", 3, 2, tmp_path / "none.safetensors", encoder_depth=3)


def test_unknown_encoder_is_a_model_error():
    with pytest.raises(ModelError, match="encoder"):
        build_model("no-such-encoder", 3, 2)


# --------------------------------------------------------------------------- integrity (issue 14, finding 9)


def _saved(tmp_path):
    meta = tiny_meta()
    weights, _ = save_checkpoint(tiny_model(meta), meta, tmp_path / "ck")
    return weights


def test_whole_checkpoint_passes_the_integrity_check(tmp_path):
    from safetensors import safe_open

    from geoseg.methods.checkpoint import check_weights_file

    weights = _saved(tmp_path)
    with safe_open(str(weights), framework="pt") as f:  # the library's own reader is the oracle
        n = len(list(f.keys()))
    assert check_weights_file(weights) == n > 10


@pytest.mark.parametrize("cut", ["7", "header", "data", "minus1", "appended", "header_len"])
def test_damaged_checkpoint_is_refused_in_one_line(tmp_path, cut):
    from safetensors.torch import load_file

    from geoseg.methods.checkpoint import check_weights_file

    weights = _saved(tmp_path)
    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    damaged = {
        "7": raw[:7], "header": raw[: 8 + n // 2], "data": raw[: 8 + n + (len(raw) - 8 - n) // 2],
        "minus1": raw[:-1], "appended": raw + b"\0" * 16,
        "header_len": (n + 10**6).to_bytes(8, "little") + raw[8:],
    }[cut]
    weights.write_bytes(damaged)
    if cut != "appended":  # safetensors itself refuses these (the oracle that the file is damaged)
        with pytest.raises(Exception):  # noqa: B017 - any error of the library
            load_file(str(weights))
    with pytest.raises(CheckpointError, match=r"checkpoint weights .*ck\.safetensors are (damaged|truncated)") as info:
        check_weights_file(weights)
    assert "\n" not in str(info.value)


def test_a_sidecar_declaring_a_huge_tile_is_refused_when_read(tmp_path):
    """A sidecar edited to tile_size 185,600 made inference ask for a 256 GiB blending window."""
    from geoseg.methods.checkpoint import MAX_TILE_SIZE, read_meta

    sidecar = tmp_path / "m.json"
    data = json.loads(tiny_meta().to_json())
    sidecar.write_text(json.dumps({**data, "tile_size": 185_600}))
    with pytest.raises(ModelError, match=f"tile_size must be a multiple of 16 from 32 to {MAX_TILE_SIZE}"):
        read_meta(sidecar)
    sidecar.write_text(json.dumps({**data, "tile_size": 512}))
    assert read_meta(sidecar).tile_size == 512


def test_a_json_file_named_as_a_checkpoint_never_shows_its_values(tmp_path: Path) -> None:
    """A job names the checkpoint, so its sidecar may be any JSON file (a credentials file): refused in one
    line by field names and rules, never the values it holds; inference and fine-tuning alike (CLI)."""
    import os
    import subprocess
    import sys

    import yaml


    token = "geoseg-secret-token-41c9e07d"
    creds = tmp_path.parent / f"{tmp_path.name}-home" / "config.json"
    creds.parent.mkdir()
    creds.write_text(json.dumps({"auths": {"registry.example": {"auth": token}}, "band_names": token,
                                 "classes": [{"id": token}]}))
    scene = blocky_scene(tmp_path)[0]
    import rasterio

    with rasterio.open(scene) as ds:  # a one-band reference on the scene's grid
        profile, band = {**ds.profile, "count": 1}, ds.read(1)
    with rasterio.open(tmp_path / "ref.tif", "w", **profile) as dst:
        dst.write(band, 1)
    infer = {"name": "leak", "inputs": [str(scene)], "output": str(tmp_path / "out"),
             "method": {"kind": "deeplab", "checkpoint": str(creds)}}
    train = {"version": 1, "name": "leak", "pairs": [{"image": str(scene), "reference": str(tmp_path / "ref.tif")}],
             "classes": [{"id": 1, "name": "a", "color": "#00ff00"}, {"id": 2, "name": "b", "color": "#ff0000"}],
             "init_checkpoint": str(creds), "checkpoint": str(tmp_path / "m")}
    (tmp_path / "infer.yaml").write_text(yaml.safe_dump(infer))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for command, job in (("run", "infer.yaml"), ("train", "train.yaml")):
        res = subprocess.run([sys.executable, "-m", "geoseg.cli", command, str(tmp_path / job), "-q"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("geoseg: error:"), res.stderr
        assert "invalid" in lines[0] and token not in res.stdout + res.stderr, res.stderr
        assert "registry.example" not in res.stderr
    creds.write_bytes(b"\xff\xfe" + token.encode("utf-16-le"))
    with pytest.raises(CheckpointError, match="not UTF-8 text"):
        read_meta(creds)


def test_weights_that_are_pickled_objects_are_refused_in_one_line(tmp_path: Path) -> None:
    """A .pth holding more than tensors is refused without torch's advice to load it with weights_only=False (which
    runs the file's code), and a file of text shows none of its bytes."""
    import os
    import pickle

    from geoseg.methods.checkpoint import load_encoder_weights

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    text = tmp_path / "weights.pth"
    text.write_text("token = geoseg-secret-96d0c1aa\n")
    model = build_model("resnet18", 3, 2, encoder_depth=3, decoder_channels=16)
    for path in (evil, text):
        with pytest.raises(ModelError, match="never unpickles") as caught:
            load_encoder_weights(model, path)
        message = str(caught.value)
        assert "\n" not in message and "weights_only=False" not in message and "geoseg-secret" not in message
    assert not (tmp_path / "ran").exists()
