"""DeepLabV3+ inference on one chunk: overlapping tiles, smooth blending, no seams between chunks.

Tiles sit on a grid anchored to *global* pixel coordinates (multiples of the stride
``tile_size - tile_overlap``), not to the chunk. A pixel is therefore always predicted from
the same tiles, whichever chunk it falls in, provided the chunk was read with a halo of at
least :func:`required_halo` pixels; the halo is then trimmed. Tile predictions (softmax
probabilities) are blended with a window that fades towards tile edges, where a CNN sees
less context. Tiles that run past the array are filled by reflection; at the raster's own
edges this is the same for every chunking, and elsewhere it only touches the halo.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from geoseg.errors import ModelError
from geoseg.legend import NODATA_LABEL

if TYPE_CHECKING:
    import torch

    from geoseg.methods.checkpoint import CheckpointMeta

log = logging.getLogger(__name__)

#: Smallest blending weight: every pixel of a tile counts a little, so normalising never divides by 0.
WINDOW_FLOOR = 1e-3


def blend_window(tile_size: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """2-D blending weights ``(tile_size, tile_size)`` float32, symmetric, ``> 0``, largest in the middle.

    Each axis is 1 in the middle and falls over the ``overlap`` pixels at each edge as a
    half raised cosine (``sin²``), so tiles placed every ``tile_size - overlap`` pixels sum to
    exactly 1 before the ``floor`` is applied; after it, sums are normalised away.

    >>> w = blend_window(8, 2)
    >>> w.shape, bool(np.allclose(w, w.T)), bool((w > 0).all()), float(w[4, 4])
    ((8, 8), True, True, 1.0)
    """
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise ValueError(f"need 0 <= overlap < tile_size, got tile_size={tile_size}, overlap={overlap}")
    if 2 * overlap > tile_size:
        raise ValueError(f"overlap {overlap} is more than half the tile size {tile_size}")
    w1 = np.ones(tile_size, dtype=np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w1[:overlap] = ramp
        w1[tile_size - overlap:] = ramp[::-1]
    w1 = np.maximum(w1, floor)
    return np.outer(w1, w1).astype(np.float32)


def required_halo(meta: CheckpointMeta) -> int:
    """Pixels of context to read around a chunk so its labels do not depend on the chunking."""
    return int(meta.tile_size)


def tile_starts(origin: int, length: int, tile: int, stride: int, lo: int = 0, hi: int | None = None) -> list[int]:
    """Array offsets of the globally anchored tiles that touch array positions ``[lo, hi)``.

    The array covers global positions ``[origin, origin + length)``; tiles start at global
    multiples of ``stride`` (possibly before the array, or before the raster: those parts are
    reflected).

    >>> tile_starts(0, 10, 4, 3)
    [-3, 0, 3, 6, 9]
    >>> tile_starts(5, 10, 4, 3, lo=2, hi=4)  # global 7..8: tiles at global 6
    [1]
    """
    hi = length if hi is None else hi
    if hi <= lo:
        return []
    g_lo, g_hi = origin + lo, origin + hi
    k0 = -((tile - 1 - g_lo) // stride)  # ceil((g_lo - tile + 1) / stride)
    k1 = (g_hi - 1) // stride
    return [k * stride - origin for k in range(k0, k1 + 1)]


def resolve_device(device: str | None) -> str:
    """``"auto"`` → ``"cuda"`` when torch sees a GPU, else ``"cpu"``; refuse an absent GPU clearly."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but torch sees no CUDA device; use device: auto or cpu")
    return str(device)


def _autocast_dtype() -> torch.dtype:
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def infer_tiles(model: torch.nn.Module, tiles: torch.Tensor, amp: bool = True) -> torch.Tensor:
    """Softmax probabilities ``(n, classes, t, t)`` float32 for normalised tiles already on the model's device.

    The core of :func:`predict_chunk`, exposed for benchmarks: eval mode, ``inference_mode``,
    channels-last and autocast (bf16 where supported, else fp16) on CUDA.
    """
    import torch

    with torch.inference_mode():
        if tiles.device.type == "cuda":
            tiles = tiles.contiguous(memory_format=torch.channels_last)
            if amp:
                with torch.autocast("cuda", dtype=_autocast_dtype()):
                    logits = model(tiles)
            else:
                logits = model(tiles)
        else:
            logits = model(tiles)
        return torch.softmax(logits.float(), dim=1)


def normalise(
    image: np.ndarray, valid: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray
) -> np.ndarray:
    """``(x - mean) / std`` per band as float32; invalid pixels become 0 (the mean)."""
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    out = (image.astype(np.float32, copy=False) - m) / s
    out[:, ~valid] = 0.0
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def predict_chunk(
    model: torch.nn.Module,
    meta: CheckpointMeta,
    image: np.ndarray,
    valid: np.ndarray,
    *,
    origin: tuple[int, int] = (0, 0),
    device: str | torch.device | None = None,
    batch_size: int = 8,
    amp: bool | None = None,
    return_confidence: bool = False,
    core: tuple[slice, slice] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class ids ``(h, w)`` uint8 for raw band values ``image`` ``(bands, h, w)``; nodata where not ``valid``.

    ``origin`` is the global (row, col) of ``image[:, 0, 0]``: tiles are placed on the global
    grid so results match whatever the chunking (read chunks with :func:`required_halo`).
    ``core`` (array slices, e.g. ``HaloWindow.core_in_outer``) limits work to the tiles that
    touch it; labels outside it are then undefined. ``device`` defaults to the model's; the
    model must already be there and in eval mode. ``amp`` defaults to on for CUDA. With
    ``return_confidence`` also returns the blended probability of the chosen class (0 on nodata).
    """
    import torch

    if image.ndim != 3 or image.shape[1:] != valid.shape:
        raise ValueError(f"image must be (bands, h, w) and valid (h, w), got {image.shape} and {valid.shape}")
    if image.shape[0] != meta.in_channels:
        raise ModelError(
            f"checkpoint expects {meta.in_channels} bands ({', '.join(meta.band_names)}), chunk has {image.shape[0]}"
        )
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    use_amp = (dev.type == "cuda") if amp is None else (amp and dev.type == "cuda")
    _, h, w = image.shape
    labels = np.full((h, w), NODATA_LABEL, dtype=np.uint8)
    conf = np.zeros((h, w), dtype=np.float32)
    if not valid.any():
        return (labels, conf) if return_confidence else labels

    t, ov = meta.tile_size, meta.tile_overlap
    stride = t - ov
    rows_roi = (core[0].start or 0, core[0].stop if core[0].stop is not None else h) if core else (0, h)
    cols_roi = (core[1].start or 0, core[1].stop if core[1].stop is not None else w) if core else (0, w)
    rs = tile_starts(origin[0], h, t, stride, *rows_roi)
    cs = tile_starts(origin[1], w, t, stride, *cols_roi)
    if not rs or not cs:  # an empty core
        return (labels, conf) if return_confidence else labels
    pad_top, pad_left = max(0, -rs[0]), max(0, -cs[0])
    pad_bottom, pad_right = max(0, rs[-1] + t - h), max(0, cs[-1] + t - w)

    x = normalise(image, valid, meta.band_mean, meta.band_std)
    pads = ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right))
    if any(pads[1] + pads[2]):  # interior chunks read with their halo need no padding (and no copy)
        mode: Literal["reflect", "edge"] = "reflect" if min(h, w) > 1 else "edge"
        x = np.pad(x, pads, mode=mode)
        vpad = np.pad(valid, pads[1:], mode=mode)
    else:
        vpad = valid
    # Tiles with no valid pixel only cover nodata pixels: skipping them changes no label.
    tiles = [
        (r + pad_top, c + pad_left)
        for r in rs
        for c in cs
        if vpad[r + pad_top : r + pad_top + t, c + pad_left : c + pad_left + t].any()
    ]
    with torch.inference_mode():
        hp, wp = x.shape[1:]
        n_cls = meta.n_classes
        acc = torch.zeros((n_cls, hp, wp), dtype=torch.float32, device=dev)
        wsum = torch.zeros((hp, wp), dtype=torch.float32, device=dev)
        win = torch.from_numpy(blend_window(t, ov)).to(dev)
        cuda = dev.type == "cuda"
        for b0 in range(0, len(tiles), batch_size):
            batch = tiles[b0 : b0 + batch_size]
            arr = np.stack([x[:, r : r + t, c : c + t] for r, c in batch])
            xb = torch.from_numpy(arr)
            xb = xb.pin_memory().to(dev, non_blocking=True) if cuda else xb
            probs = infer_tiles(model, xb, amp=use_amp)
            probs.mul_(win)
            for i, (r, c) in enumerate(batch):
                acc[:, r : r + t, c : c + t] += probs[i]
                wsum[r : r + t, c : c + t] += win
        acc = acc[:, pad_top : pad_top + h, pad_left : pad_left + w]
        wsum = wsum[pad_top : pad_top + h, pad_left : pad_left + w]
        best_p, best_i = acc.max(dim=0)
        lut = torch.tensor([c.id for c in meta.classes], dtype=torch.uint8, device=dev)
        ids = lut[best_i]
        covered = wsum > 0
        labels = ids.cpu().numpy()
        covered_np = covered.cpu().numpy()
        keep = valid & covered_np
        labels[~keep] = NODATA_LABEL
        if not return_confidence:
            return labels
        conf = (best_p / torch.where(covered, wsum, torch.ones_like(wsum))).cpu().numpy()
        conf[~keep] = 0.0
        return labels, conf.astype(np.float32, copy=False)


# --- one model per worker process -------------------------------------------------------------

_CACHE: OrderedDict[tuple, tuple[torch.nn.Module, CheckpointMeta]] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Models kept per process; a new checkpoint file evicts the oldest (frees GPU memory).
CACHE_SIZE = 2


def prepare_model(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """Move a model to ``device`` for inference: eval mode, and channels-last on CUDA."""
    import torch

    model = model.to(device).eval()
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def get_worker_model(checkpoint_path: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, CheckpointMeta]:
    """The checkpoint's model on ``device``, loaded once per process and then reused.

    Keyed by the resolved path, the weights file's mtime and size, and the device, so a Dask
    worker reads a checkpoint once for all its chunks, and a retrained checkpoint written to
    the same path is picked up. Thread-safe: concurrent tasks wait for one load.
    """
    from geoseg.methods.checkpoint import checkpoint_paths, load_checkpoint

    dev = resolve_device(device)
    weights, sidecar = checkpoint_paths(checkpoint_path)
    try:
        st = weights.stat()
        side = sidecar.stat().st_mtime_ns if sidecar.exists() else 0
    except FileNotFoundError as exc:
        raise ModelError(f"no checkpoint at {weights}; train one with `geoseg train` or check the path") from exc
    key = (str(weights.resolve()), st.st_mtime_ns, st.st_size, side, dev)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
        model, meta = load_checkpoint(checkpoint_path, device="cpu")
        model = prepare_model(model, dev)
        _CACHE[key] = (model, meta)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        log.info("loaded %s on %s (pid %d)", weights, dev, os.getpid())
        return model, meta


def clear_model_cache() -> None:
    """Forget cached models (tests; or to free GPU memory in a long-lived worker)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def cache_info() -> list[tuple]:
    """Keys of the models cached in this process (path, mtime_ns, size, sidecar mtime, device)."""
    with _CACHE_LOCK:
        return list(_CACHE.keys())


__all__ = [
    "blend_window",
    "cache_info",
    "clear_model_cache",
    "get_worker_model",
    "infer_tiles",
    "normalise",
    "predict_chunk",
    "prepare_model",
    "required_halo",
    "resolve_device",
    "tile_starts",
]

