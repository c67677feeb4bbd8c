"""DeepLabV3+ chunk inference: blending window, global tile grid, no seams, per-worker model cache."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import CheckpointError, ModelError, ModelInputError
from geoseg.geo import Window, halo_window, trim_halo
from geoseg.legend import NODATA_LABEL
from geoseg.methods import deeplab
from geoseg.methods.checkpoint import save_checkpoint
from geoseg.methods.deeplab import (
    blend_window,
    clear_model_cache,
    get_worker_model,
    predict_chunk,
    required_halo,
    tile_starts,
)
from tests.fixtures import chunk_grid, tiny_meta, tiny_model

torch.set_num_threads(2)


# --- blending window ------------------------------------------------------------------------------


@pytest.mark.parametrize("tile,overlap", [(64, 16), (256, 64), (96, 48), (32, 0), (33, 7)])
def test_blend_window_shape_symmetry_positivity_peak(tile, overlap):
    w = blend_window(tile, overlap)
    assert w.shape == (tile, tile) and w.dtype == np.float32
    assert np.array_equal(w, w.T) and np.array_equal(w, w[::-1]) and np.array_equal(w, w[:, ::-1])
    assert (w > 0).all()
    c = tile // 2
    assert w[c, c] == w.max()
    if 2 * overlap < tile:
        assert w[c, c] == 1.0  # a plateau where no other tile overlaps
    # Falls monotonically from the centre towards each edge.
    assert (np.diff(w[c, : c + 1]) >= 0).all()
    if overlap:
        assert w[0, 0] < 0.01


@pytest.mark.parametrize("tile,overlap", [(64, 16), (256, 64), (96, 48)])
def test_blend_windows_form_a_partition_of_unity(tile, overlap):
    stride = tile - overlap
    n = 6
    size = stride * (n - 1) + tile
    total = np.zeros((size, size))
    for i in range(n):
        for j in range(n):
            total[i * stride : i * stride + tile, j * stride : j * stride + tile] += blend_window(tile, overlap, floor=0.0)
    inner = total[overlap : size - overlap, overlap : size - overlap]
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)
    # With the floor, weighted averages still reproduce a constant field exactly after normalising.
    acc = np.zeros((size, size))
    wsum = np.zeros((size, size))
    for i in range(n):
        for j in range(n):
            w = blend_window(tile, overlap)
            acc[i * stride : i * stride + tile, j * stride : j * stride + tile] += 0.37 * w
            wsum[i * stride : i * stride + tile, j * stride : j * stride + tile] += w
    np.testing.assert_allclose(acc / wsum, 0.37, rtol=1e-6)


def test_blend_window_rejects_bad_geometry():
    with pytest.raises(ValueError):
        blend_window(64, 64)
    with pytest.raises(ValueError):
        blend_window(64, 40)


def test_tile_starts_are_on_the_global_grid():
    # Whatever the array's origin, tiles start at global multiples of the stride.
    for origin in (0, 5, 47, 48, 130):
        starts = tile_starts(origin, 200, 64, 48)
        assert all((s + origin) % 48 == 0 for s in starts)
        covered = np.zeros(200, int)
        for s in starts:
            covered[max(s, 0) : max(s + 64, 0)] += 1
        assert (covered >= 1).all()
    assert tile_starts(0, 10, 4, 3, lo=5, hi=5) == []


# --- predicting a chunk -----------------------------------------------------------------------------


def _scene(tmp_path, size: int = 600):
    """A cropweed scene from the synthetic generator, or random texture if it is not there."""
    try:
        from geoseg.samples.synthetic import make_scene
    except ImportError:
        rng = np.random.default_rng(1)
        img = rng.normal(100, 30, (4, size, size)).astype(np.float32)
        return img, np.ones((size, size), bool)
    files = make_scene("cropweed", tmp_path / "scene", width=size, height=size, seed=3, block=256)
    with rasterio.open(files.image) as ds:
        data = ds.read()
        return data.astype(np.float32), np.all(data != ds.nodata, axis=0)


def test_nodata_pixels_get_the_nodata_label(tmp_path):
    meta = tiny_meta()
    model = tiny_model(meta)
    rng = np.random.default_rng(0)
    img = rng.normal(110, 30, (4, 70, 50)).astype(np.float32)
    valid = np.ones((70, 50), bool)
    valid[:10] = False
    img[:, :10] = np.nan  # nodata values must not leak into neighbours
    labels, conf = predict_chunk(model, meta, img, valid, device="cpu", return_confidence=True)
    assert labels.dtype == np.uint8 and labels.shape == (70, 50)
    assert (labels[:10] == NODATA_LABEL).all() and (conf[:10] == 0).all()
    assert set(np.unique(labels[10:])) <= {1, 2, 3}
    assert ((conf[10:] > 1 / 3 - 1e-6) & (conf[10:] <= 1 + 1e-6)).all()
    empty = predict_chunk(model, meta, img, np.zeros((70, 50), bool), device="cpu")
    assert (empty == NODATA_LABEL).all()
    with pytest.raises(ModelInputError, match="expects 4 bands"):
        predict_chunk(model, meta, img[:3], valid, device="cpu")


def test_chunked_prediction_matches_whole_scene(tmp_path):
    """Chunks of 256 px read with the required halo give the labels of one whole-scene prediction."""
    meta = tiny_meta(tile_size=64, tile_overlap=16, band_mean=[95, 120, 80, 160], band_std=[30, 25, 25, 40])
    model = tiny_model(meta, seed=2)
    img, valid = _scene(tmp_path)
    h, w = valid.shape
    t0 = time.perf_counter()
    whole, whole_conf = predict_chunk(model, meta, img, valid, device="cpu", batch_size=16, return_confidence=True)
    t_whole = time.perf_counter() - t0
    assert len(np.unique(whole)) >= 2  # a model that predicts one class would prove nothing

    grid = chunk_grid(h, w, 256)
    halo = required_halo(meta)
    chunked = np.full((h, w), 77, np.uint8)
    chunked_conf = np.zeros((h, w), np.float32)
    naive = np.full((h, w), 77, np.uint8)
    for win in grid.windows():
        hw = halo_window(win, halo, (h, w))
        data, ok = img[(slice(None), *hw.outer.slices)], valid[hw.outer.slices]
        lab, conf = predict_chunk(model, meta, data, ok, origin=(hw.outer.row_off, hw.outer.col_off),
                                  device="cpu", batch_size=7, return_confidence=True, core=hw.core_in_outer)
        chunked[win.slices] = trim_halo(lab, hw)
        chunked_conf[win.slices] = trim_halo(conf, hw)
        # The same without halo and with a chunk-local tile grid: what seams look like.
        core = (slice(None), *win.slices)
        naive[win.slices] = predict_chunk(model, meta, img[core], valid[win.slices], device="cpu")
    assert (chunked != 77).all()

    agree = (chunked == whole).mean()
    np.testing.assert_allclose(chunked_conf, whole_conf, atol=2e-4)
    borders = np.zeros((h, w), bool)
    for b in range(256, max(h, w), 256):
        borders[max(b - 16, 0) : b + 16, :] = True
        borders[:, max(b - 16, 0) : b + 16] = True
    agree_band = (chunked[borders] == whole[borders]).mean()
    naive_band = (naive[borders] == whole[borders]).mean()
    print(f"\nseams: agreement all {agree:.5f}, border band {agree_band:.5f}, naive border band {naive_band:.4f}, "
          f"whole-scene predict {t_whole:.1f}s")
    assert agree >= 0.999
    assert agree_band >= 0.999
    assert naive_band < agree_band - 0.01  # the test can see seams when there are some


def test_chunk_without_core_argument_matches_too(tmp_path):
    meta = tiny_meta(tile_size=64, tile_overlap=16)
    model = tiny_model(meta, seed=4)
    rng = np.random.default_rng(5)
    img = rng.normal(110, 30, (4, 200, 230)).astype(np.float32)
    valid = np.ones((200, 230), bool)
    whole = predict_chunk(model, meta, img, valid, device="cpu")
    hw = halo_window(Window(96, 96, 96, 96), required_halo(meta), (200, 230))
    lab = predict_chunk(model, meta, img[(slice(None), *hw.outer.slices)], valid[hw.outer.slices],
                        origin=(hw.outer.row_off, hw.outer.col_off), device="cpu")
    assert (trim_halo(lab, hw) == whole[hw.core.slices]).mean() >= 0.999


# --- per-worker model cache -------------------------------------------------------------------------


def test_get_worker_model_loads_once_and_sees_new_files(tmp_path, monkeypatch):
    import geoseg.methods.checkpoint as ck

    clear_model_cache()
    meta = tiny_meta()
    save_checkpoint(tiny_model(meta), meta, tmp_path / "m")
    loads = []
    real = ck.load_checkpoint
    monkeypatch.setattr(ck, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    m1, meta1 = get_worker_model(tmp_path / "m", "auto")
    m2, _ = get_worker_model(str(tmp_path / "m.safetensors"), "auto")
    assert m1 is m2 and len(loads) == 1 and meta1 == meta
    assert next(m1.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not m1.training

    # A retrained checkpoint written to the same path is picked up.
    time.sleep(0.01)
    save_checkpoint(tiny_model(meta, seed=9), meta, tmp_path / "m")
    st = os.stat(tmp_path / "m.safetensors")
    os.utime(tmp_path / "m.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    m3, _ = get_worker_model(tmp_path / "m", "auto")
    assert m3 is not m1 and len(loads) == 2
    assert len(deeplab.cache_info()) <= deeplab.CACHE_SIZE

    with pytest.raises(CheckpointError):
        get_worker_model(tmp_path / "absent", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            get_worker_model(tmp_path / "m", "cuda")
    clear_model_cache()


def _worker_predict(path: str, seed: int) -> tuple[int, int]:
    """Predict one chunk on a worker; its pid and how often that process has read the weights so far."""
    from geoseg.methods.deeplab import get_worker_model, model_loads, predict_chunk

    torch.set_num_threads(1)
    model, meta = get_worker_model(path, "cpu")
    img = np.random.default_rng(seed).normal(110, 30, (4, 64, 64)).astype(np.float32)
    predict_chunk(model, meta, img, np.ones((64, 64), bool))
    return os.getpid(), model_loads(path)


def _worker_loads(path: str) -> tuple[int, int]:
    from geoseg.methods.deeplab import model_loads

    return os.getpid(), model_loads(path)


@pytest.mark.integration
def test_dask_workers_load_the_model_once(tmp_path, dask_client):
    from collections import Counter

    meta = tiny_meta()
    save_checkpoint(tiny_model(meta), meta, tmp_path / "m")
    futures = [dask_client.submit(_worker_predict, str(tmp_path / "m"), i, pure=False) for i in range(8)]
    results = dask_client.gather(futures)
    tasks_per_worker = Counter(pid for pid, _ in results)
    assert max(tasks_per_worker.values()) >= 2, tasks_per_worker  # some process ran several chunks ...
    assert all(loads == 1 for _, loads in results), results  # ... and every process read the weights once
    # The workers' own counters, after all tasks: one read per worker process that ran a task.
    final = dask_client.run(_worker_loads, str(tmp_path / "m"))
    assert sorted(n for pid, n in final.values() if pid in tasks_per_worker) == [1] * len(tasks_per_worker)


@pytest.mark.gpu
def test_predict_on_cuda_matches_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    meta = tiny_meta(tile_size=64, tile_overlap=16)
    save_checkpoint(tiny_model(meta, seed=2), meta, tmp_path / "m")
    clear_model_cache()
    model, meta = get_worker_model(tmp_path / "m", "cuda")
    assert next(model.parameters()).is_cuda
    img, valid = _scene(tmp_path, 300)
    gpu = predict_chunk(model, meta, img, valid, device="cuda", batch_size=16)
    gpu32 = predict_chunk(model, meta, img, valid, device="cuda", amp=False)
    cpu_model, _ = get_worker_model(tmp_path / "m", "cpu")
    cpu = predict_chunk(cpu_model, meta, img, valid, device="cpu")
    assert (gpu32 == cpu).mean() > 0.999
    assert (gpu == cpu).mean() > 0.98  # bf16/fp16 autocast
    clear_model_cache()


# --- test-time augmentation --------------------------------------------------------------------------


def _predict_both(model, meta, img: np.ndarray, tta: str) -> tuple[np.ndarray, np.ndarray]:
    return predict_chunk(model, meta, img, np.ones(img.shape[1:], bool), device="cpu", return_confidence=True, tta=tta)


def test_d4_tta_makes_predictions_invariant_to_quarter_turns_and_flips():
    """On a tile grid that is symmetric under rotation (side 32 + 24 k), d4 averaging commutes with rot90."""
    meta = tiny_meta(tile_size=32, tile_overlap=8)
    model = tiny_model(meta, seed=6)
    img = np.random.default_rng(8).normal(110, 30, (4, 56, 56)).astype(np.float32)
    turned = np.ascontiguousarray(np.rot90(img, 1, axes=(1, 2)))
    flipped = np.ascontiguousarray(img[:, :, ::-1])

    lab, conf = _predict_both(model, meta, img, "none")
    lab_t, conf_t = _predict_both(model, meta, turned, "none")
    assert len(np.unique(lab)) >= 2
    assert (np.rot90(lab) != lab_t).mean() > 0.01  # plain inference is not rotation invariant ...

    lab, conf = _predict_both(model, meta, img, "d4")
    lab_t, conf_t = _predict_both(model, meta, turned, "d4")
    np.testing.assert_allclose(np.rot90(conf), conf_t, atol=1e-5)  # ... d4-averaged inference is
    assert (np.rot90(lab) == lab_t).mean() > 0.999
    lab_f, conf_f = _predict_both(model, meta, flipped, "d4")
    np.testing.assert_allclose(conf[:, ::-1], conf_f, atol=1e-5)

    # "flips" is invariant under flips but not under quarter turns.
    _, conf = _predict_both(model, meta, img, "flips")
    _, conf_f = _predict_both(model, meta, flipped, "flips")
    _, conf_t = _predict_both(model, meta, turned, "flips")
    np.testing.assert_allclose(conf[:, ::-1], conf_f, atol=1e-5)
    assert np.abs(np.rot90(conf) - conf_t).max() > 1e-3


def test_tta_averages_the_softmax_of_each_transform():
    """infer_tiles with d4 equals the mean of the 8 transformed-and-undone softmax outputs computed by hand."""
    meta = tiny_meta(tile_size=64, tile_overlap=16)
    model = tiny_model(meta, seed=1)
    x = torch.from_numpy(np.random.default_rng(2).normal(0, 1, (2, 4, 64, 64)).astype(np.float32))
    with torch.no_grad():
        expected = []
        for flip in (False, True):
            for k in range(4):
                xi = torch.rot90(torch.flip(x, (-1,)) if flip else x, k, (-2, -1))
                p = torch.rot90(torch.softmax(model(xi), 1), -k, (-2, -1))
                expected.append(torch.flip(p, (-1,)) if flip else p)
    got = deeplab.infer_tiles(model, x, tta="d4")
    torch.testing.assert_close(got, torch.stack(expected).mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(deeplab.infer_tiles(model, x), torch.softmax(model(x), 1).detach(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown tta"):
        deeplab.infer_tiles(model, x, tta="d8")
