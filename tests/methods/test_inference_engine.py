"""The inference engine (tiles as views, one blend per batch) gives the labels of the tile-by-tile loop it replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.legend import NODATA_LABEL
from geoseg.methods.deeplab import blend_window, infer_tiles, normalise, predict_chunk, tile_starts
from tests.fixtures import tiny_meta, tiny_model

torch.set_num_threads(2)


def _loop_predict(model, meta, image, valid, origin=(0, 0), batch_size=8, core=None, tta="none"):
    """The engine as it was before (geoseg 2026-12-01): np.stack of tile copies, one slice add per tile."""
    with torch.inference_mode():
        return _loop(model, meta, image, valid, origin, batch_size, core, tta)


def _loop(model, meta, image, valid, origin, batch_size, core, tta):
    _, h, w = image.shape
    t, ov = meta.tile_size, meta.tile_overlap
    stride = t - ov
    rows_roi = (core[0].start, core[0].stop) if core else (0, h)
    cols_roi = (core[1].start, core[1].stop) if core else (0, w)
    rs = tile_starts(origin[0], h, t, stride, *rows_roi)
    cs = tile_starts(origin[1], w, t, stride, *cols_roi)
    pad_top, pad_left = max(0, -rs[0]), max(0, -cs[0])
    pad_bottom, pad_right = max(0, rs[-1] + t - h), max(0, cs[-1] + t - w)
    x = normalise(image, valid, meta.band_mean, meta.band_std)
    pads = ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right))
    if any(pads[1] + pads[2]):
        x = np.pad(x, pads, mode="reflect")
        vpad = np.pad(valid, pads[1:], mode="reflect")
    else:
        vpad = valid
    tiles = [(r + pad_top, c + pad_left) for r in rs for c in cs
             if vpad[r + pad_top: r + pad_top + t, c + pad_left: c + pad_left + t].any()]
    hp, wp = x.shape[1:]
    acc = torch.zeros((meta.n_classes, hp, wp))
    wsum = torch.zeros((hp, wp))
    win = torch.from_numpy(blend_window(t, ov))
    for b0 in range(0, len(tiles), batch_size):
        batch = tiles[b0: b0 + batch_size]
        probs = infer_tiles(model, torch.from_numpy(np.stack([x[:, r: r + t, c: c + t] for r, c in batch])), tta=tta)
        probs.mul_(win)
        for i, (r, c) in enumerate(batch):
            acc[:, r: r + t, c: c + t] += probs[i]
            wsum[r: r + t, c: c + t] += win
    acc = acc[:, pad_top: pad_top + h, pad_left: pad_left + w]
    wsum = wsum[pad_top: pad_top + h, pad_left: pad_left + w]
    best_p, best_i = acc.max(dim=0)
    labels = torch.tensor([c.id for c in meta.classes], dtype=torch.uint8)[best_i].numpy()
    covered = wsum > 0
    keep = valid & covered.numpy()
    labels[~keep] = NODATA_LABEL
    conf = (best_p / torch.where(covered, wsum, torch.ones_like(wsum))).numpy()
    conf[~keep] = 0
    return labels, conf


@pytest.fixture(scope="module")
def tiny():
    meta = tiny_meta()
    return tiny_model(meta), meta


@pytest.mark.parametrize("origin,core,batch,tta", [
    ((0, 0), None, 8, "none"),
    ((37, 101), (slice(20, 90), slice(5, 70)), 3, "none"),
    ((48, 48), (slice(48, 100), slice(48, 110)), 5, "flips"),
])
def test_cpu_engine_is_bit_identical_to_the_tile_loop(tiny, origin, core, batch, tta):
    model, meta = tiny
    rng = np.random.default_rng(5)
    img = rng.normal(110, 30, (4, 150, 160)).astype(np.float32)
    valid = np.ones((150, 160), bool)
    valid[:70, :60] = False  # whole tiles without a valid pixel are skipped by both
    valid[100:103, 120:] = False
    labels, conf = predict_chunk(model, meta, img, valid, origin=origin, device="cpu", batch_size=batch,
                                 core=core, tta=tta, return_confidence=True)
    want_l, want_c = _loop_predict(model, meta, img, valid, origin, batch, core, tta)
    rows, cols = core if core else (slice(None), slice(None))
    assert labels[rows, cols].tobytes() == want_l[rows, cols].tobytes()
    assert conf[rows, cols].tobytes() == want_c[rows, cols].tobytes()
    assert (labels[rows, cols] != NODATA_LABEL).any()


def test_fold_blend_agrees_with_index_add(tiny):
    """The GPU's blend (one fold over all tiles), run here on CPU: the same sums up to rounding."""
    model, meta = tiny
    rng = np.random.default_rng(6)
    img = rng.normal(110, 30, (4, 130, 140)).astype(np.float32)
    valid = np.ones((130, 140), bool)
    valid[:64, :64] = False
    a_l, a_c = predict_chunk(model, meta, img, valid, origin=(11, 3), device="cpu", blend="index_add",
                             return_confidence=True)
    b_l, b_c = predict_chunk(model, meta, img, valid, origin=(11, 3), device="cpu", blend="fold",
                             return_confidence=True)
    np.testing.assert_allclose(a_c, b_c, atol=1e-5)
    assert (a_l == b_l).mean() > 0.999
    with pytest.raises(ValueError, match="unknown blend"):
        predict_chunk(model, meta, img, valid, blend="scatter")


@pytest.mark.gpu
def test_cuda_engine_matches_cpu(tiny):
    """fp32 on CUDA (fold, pinned upload) against the CPU path; bf16 autocast within a few percent."""
    model, meta = tiny
    rng = np.random.default_rng(7)
    img = rng.normal(110, 30, (4, 300, 280)).astype(np.float32)
    valid = np.ones((300, 280), bool)
    cpu = predict_chunk(model, meta, img, valid, device="cpu")
    from geoseg.methods.deeplab import prepare_model

    gpu_model = prepare_model(tiny_model(meta), "cuda")
    fp32 = predict_chunk(gpu_model, meta, img, valid, device="cuda", amp=False)
    bf16 = predict_chunk(gpu_model, meta, img, valid, device="cuda")
    again = predict_chunk(gpu_model, meta, img, valid, device="cuda")
    assert (fp32 == cpu).mean() > 0.999
    assert (bf16 == cpu).mean() > 0.98
    assert bf16.tobytes() == again.tobytes()  # fold is deterministic; the pinned buffer is reused safely
