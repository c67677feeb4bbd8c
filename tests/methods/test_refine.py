"""The full-resolution refinement head: it sees single pixels, starts as the identity, and travels in checkpoints."""

from __future__ import annotations

import numpy as np
import torch

from geoseg.methods.checkpoint import CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from geoseg.methods.deeplab import predict_chunk
from geoseg.methods.refine import PixelRefined
from tests.fixtures import tiny_meta

TINY = {"architecture": "DeepLabV3Plus", "encoder_depth": 3, "encoder_output_stride": 8, "decoder_channels": 16}


def _pixel_accuracy(refine_channels: int, steps: int = 60) -> float:
    """Train on noise whose class is the sign of each pixel alone (no spatial structure), score on fresh noise."""
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 2, refine_channels=refine_channels, **TINY)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 1, 32, 32, generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.randn(4, 1, 32, 32, generator=gen)
    with torch.no_grad():
        return float((model(x).argmax(1) == (x[:, 0] > 0)).float().mean())


def test_the_head_learns_what_a_single_pixel_says():
    """DeepLabV3+ predicts at 1/4 resolution from a stride-2 stem: a per-pixel rule is beyond it; the head is not."""
    torch.set_num_threads(1)
    plain, refined = _pixel_accuracy(0), _pixel_accuracy(8)
    assert plain < 0.75, plain  # near chance (0.55 when measured)
    assert refined > 0.95, refined  # 0.996 when measured


def test_an_untrained_head_is_the_network():
    torch.manual_seed(0)
    base = build_model("resnet18", 4, 3, **TINY).eval()
    wrapped = PixelRefined(base, 4, 3, hidden=8).eval()
    x = torch.randn(2, 4, 48, 48)
    with torch.no_grad():
        assert torch.equal(wrapped(x), base(x))


def test_a_refined_checkpoint_round_trips_and_old_sidecars_mean_no_head(tmp_path):
    meta = tiny_meta(refine_channels=8)
    torch.manual_seed(0)
    model = build_model(meta.encoder, meta.in_channels, meta.n_classes, encoder_depth=meta.encoder_depth,
                        decoder_channels=meta.decoder_channels, refine_channels=8).eval()
    with torch.no_grad():  # a head that changes the output, so a lost head would show
        for p in model.refine.parameters():
            p.normal_(0, 0.5)
    save_checkpoint(model, meta, tmp_path / "m")
    loaded, meta2 = load_checkpoint(tmp_path / "m")
    assert isinstance(loaded, PixelRefined) and meta2.refine_channels == 8
    img = np.random.default_rng(0).normal(110, 30, (4, 70, 90)).astype(np.float32)
    valid = np.ones((70, 90), bool)
    _, a = predict_chunk(model, meta, img, valid, device="cpu", return_confidence=True)
    _, b = predict_chunk(loaded, meta2, img, valid, device="cpu", return_confidence=True)
    assert np.array_equal(a, b)

    old = meta.model_dump(mode="json")
    del old["refine_channels"]  # a sidecar written before the head existed
    assert CheckpointMeta.model_validate(old).refine_channels == 0


def test_user_encoder_weights_reach_the_wrapped_network(tmp_path):
    from safetensors.torch import save_file

    src = build_model("resnet18", 3, 2, **TINY)
    save_file(dict(src.encoder.state_dict()), str(tmp_path / "enc.safetensors"))
    model = build_model("resnet18", 3, 2, tmp_path / "enc.safetensors", refine_channels=8, **TINY)
    assert isinstance(model, PixelRefined)
    want = src.encoder.state_dict()["layer1.0.conv1.weight"]
    assert torch.equal(model.base.encoder.state_dict()["layer1.0.conv1.weight"], want)
