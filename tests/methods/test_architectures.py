"""Every smp architecture geoseg offers: trained one step through `train`, recorded in the sidecar,
rebuilt at inference, and predicting the same probabilities whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from rasterio.transform import from_origin

from geoseg.geo import Window, halo_window, trim_halo
from geoseg.legend import ClassInfo
from geoseg.methods.architectures import ARCHITECTURES, check_tile_size, feature_stride, model_kwargs
from geoseg.methods.checkpoint import build_model, load_checkpoint, read_meta
from geoseg.methods.deeplab import predict_chunk, required_halo
from geoseg.methods.scenestats import NetworkChannels, image_statistics
from geoseg.methods.training import TrainConfig, TrainPair, train
from tests.fixtures import write_raster

torch.set_num_threads(1)

CLASSES = [ClassInfo(1, "a", "#ff0000"), ClassInfo(2, "b", "#00ff00")]
SIZE = 144
@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A textured 3-band image and a two-class reference on its grid."""
    d = tmp_path_factory.mktemp("arch")
    rng = np.random.default_rng(0)
    img = rng.integers(1, 1000, (3, SIZE, SIZE)).astype("uint16")
    ref = np.ones((SIZE, SIZE), np.uint8)
    ref[:, SIZE // 2 :] = 2
    img[2, :, SIZE // 2 :] += 300  # the classes differ in one band
    tr = from_origin(500000, 5100000, 10, 10)
    write_raster(d / "img.tif", img, transform=tr, descriptions=("blue", "green", "nir"))
    write_raster(d / "ref.tif", ref, transform=tr, nodata=0)
    return TrainPair(image=d / "img.tif", reference=d / "ref.tif"), img.astype(np.float32)


def _chunked(model, meta, img: np.ndarray, chunk: int) -> np.ndarray:
    """Confidence of a prediction chunk by chunk, each chunk read with the required halo and normalised by the
    whole image's statistics (the checkpoint's default ``normalisation: scene``), as a run does."""
    h, w = img.shape[1:]
    out = np.full((h, w), -1.0, np.float32)
    halo = required_halo(meta)
    stats = image_statistics(img, np.ones((h, w), bool), NetworkChannels(img.shape[0], meta.indices()))
    for r0 in range(0, h, chunk):
        for c0 in range(0, w, chunk):
            hw = halo_window(Window(r0, c0, min(chunk, h - r0), min(chunk, w - c0)), halo, (h, w))
            data = img[(slice(None), *hw.outer.slices)]
            _, conf = predict_chunk(model, meta, data, np.ones(data.shape[1:], bool), device="cpu",
                                    origin=(hw.outer.row_off, hw.outer.col_off), core=hw.core_in_outer,
                                    return_confidence=True, scene_stats=stats)
            out[hw.core.slices] = trim_halo(conf, hw)
    return out


@pytest.mark.parametrize("arch", list(ARCHITECTURES))  # each well under 2 s on one CPU thread
def test_architecture_trains_records_and_infers_chunk_independently(arch, pair, tmp_path):
    train_pair, img = pair
    tile = max(64, feature_stride(arch, 3, 16) * ARCHITECTURES[arch].min_cells)
    cfg = TrainConfig(
        pairs=[train_pair], classes=CLASSES, architecture=arch, encoder="resnet18", encoder_depth=3,
        decoder_channels=16, tile_size=tile, tile_overlap=16, batch_size=2, epochs=1, steps_per_epoch=1,
        val_fraction=0.25, val_tiles=2, norm_windows=2, checkpoint=tmp_path / arch, progress=False, device="cpu",
    )
    result = train(cfg)
    assert result.history[0]["train_loss"] is not None  # one real optimiser step
    assert read_meta(cfg.checkpoint).architecture == arch
    model, meta = load_checkpoint(cfg.checkpoint)
    assert type(model).__name__ == "PixelRefined" and type(model.base).__name__ == arch  # the default head
    _, whole = predict_chunk(model, meta, img, np.ones(img.shape[1:], bool), device="cpu", return_confidence=True)
    assert (whole > 0).all()
    for chunk in (48, 80):
        np.testing.assert_allclose(_chunked(model, meta, img, chunk), whole, atol=2e-4, err_msg=f"chunk {chunk}")


def test_output_has_the_input_size_at_every_depth_and_valid_tile():
    """A forward pass keeps the tile size for every architecture and encoder depth geoseg allows."""
    for arch, info in ARCHITECTURES.items():
        for depth in (3, 4, 5):
            smallest = feature_stride(arch, depth, 16) * info.min_cells
            tile = -(-max(smallest, 32) // 16) * 16
            check_tile_size(arch, depth, 16, tile)
            model = build_model("resnet18", 2, 3, architecture=arch, encoder_depth=depth, decoder_channels=16).eval()
            with torch.no_grad():
                assert model(torch.zeros(1, 2, tile, tile)).shape == (1, 3, tile, tile), (arch, depth, tile)


def test_tile_sizes_an_architecture_cannot_take_are_refused():
    pair = {"image": "a.tif", "reference": "b.tif"}
    base = {"pairs": [pair], "classes": CLASSES, "checkpoint": "m", "encoder_depth": 5}
    TrainConfig(**base, architecture="DeepLabV3Plus", tile_size=48)  # output stride 16: 48 is fine
    with pytest.raises(ValidationError, match="multiple of 32.*use e.g. 64"):
        TrainConfig(**base, architecture="Unet", tile_size=48)
    with pytest.raises(ValidationError, match="at least 128"):
        TrainConfig(**base, architecture="PAN", tile_size=96)
    with pytest.raises(ValidationError, match="encoder_output_stride 16"):
        TrainConfig(**base, architecture="PAN", encoder_output_stride=8, tile_size=256)
    with pytest.raises(ValidationError, match="architecture"):
        TrainConfig(**base, architecture="SegNet")
    assert model_kwargs("FPN", 5, 16, 256)["decoder_segmentation_channels"] == 128  # smp's defaults at 256
