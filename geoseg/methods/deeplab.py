"""Segmentation inference on one chunk (any checkpoint architecture): overlapping tiles, smooth blending, no seams.

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
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from geoseg.errors import CheckpointError, ModelError, ModelInputError
from geoseg.legend import NODATA_LABEL

if TYPE_CHECKING:
    import torch

    from geoseg.methods.checkpoint import CheckpointMeta
    from geoseg.methods.indices import BandIndex

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
    """Pixels of context to read around a chunk so its labels do not depend on the chunking.

    One tile, for every architecture: tiles are placed on a global grid and run independently,
    so the tiles covering a chunk's pixels lie within one tile of it whatever the network's
    receptive field (see :mod:`geoseg.methods.architectures`).
    """
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


#: Test-time augmentation: the transforms whose softmax outputs are averaged (see :func:`tta_transforms`).
TTA_MODES = ("none", "flips", "d4")


def tta_transforms(mode: str) -> list[tuple[int, bool]]:
    """``(quarter turns, flip)`` pairs of a TTA mode; each is a group, so the average is invariant under it.

    ``none``: the identity; ``flips``: identity, left-right, up-down and both (the flips of a
    square); ``d4``: all 8 rotations and reflections of a square (imagery from above has no
    preferred orientation).

    >>> len(tta_transforms("none")), len(tta_transforms("flips")), len(tta_transforms("d4"))
    (1, 4, 8)
    """
    if mode == "none":
        return [(0, False)]
    if mode == "flips":
        return [(0, False), (0, True), (2, True), (2, False)]  # up-down flip = left-right flip + half turn
    if mode == "d4":
        return [(k, f) for f in (False, True) for k in range(4)]
    raise ValueError(f"unknown tta mode {mode!r}; choose one of {', '.join(TTA_MODES)}")


def _forward(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    import torch

    x = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    import torch

    y = torch.rot90(y, -k, dims=(-2, -1)) if k else y
    return torch.flip(y, dims=(-1,)) if flip else y


def _logits(model: torch.nn.Module, tiles: torch.Tensor, amp: bool) -> torch.Tensor:
    import torch

    if tiles.device.type == "cuda":
        tiles = tiles.contiguous(memory_format=torch.channels_last)
        if amp:
            with torch.autocast("cuda", dtype=_autocast_dtype()):
                return model(tiles)
    return model(tiles)


def infer_tiles(model: torch.nn.Module, tiles: torch.Tensor, amp: bool = True, tta: str = "none") -> torch.Tensor:
    """Softmax probabilities ``(n, classes, t, t)`` float32 for normalised square tiles on the model's device.

    The core of :func:`predict_chunk`, exposed for benchmarks: eval mode, ``inference_mode``,
    channels-last and autocast (bf16 where supported, else fp16) on CUDA. With ``tta`` the
    probabilities are averaged over the transforms of :func:`tta_transforms` (each undone on
    the output), one transform at a time so memory stays that of one batch.
    """
    import torch

    transforms = tta_transforms(tta)
    with torch.inference_mode():
        if len(transforms) == 1:
            return torch.softmax(_logits(model, tiles, amp).float(), dim=1)
        acc = None
        for k, flip in transforms:
            p = _inverse(torch.softmax(_logits(model, _forward(tiles, k, flip), amp).float(), dim=1), k, flip)
            acc = p if acc is None else acc.add_(p)
        assert acc is not None  # two or more transforms here
        return acc.div_(len(transforms))


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


def network_input(
    image: np.ndarray, valid: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray,
    indices: Sequence[BandIndex] = (),
) -> np.ndarray:
    """What a network gets for raw band values ``image`` ``(bands, h, w)``: the normalised bands, then the
    ``indices`` computed from the raw bands and standardised (:func:`geoseg.methods.indices.index_channels`).

    ``mean``/``std`` hold the bands' statistics followed by the index channels'. Training (its windows and
    validation blocks) and inference (every chunk) call this one function, so both see the same channels.
    Invalid pixels and non-finite index values (0/0) are 0, the channel's mean.
    """
    from geoseg.methods.indices import index_channels

    n = image.shape[0]
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    bands = normalise(image, valid, mean[:n], std[:n])
    if not indices:
        return bands
    return np.concatenate([bands, index_channels(image, valid, indices, mean[n:], std[n:])])


#: A scene's ``(mean, std)`` per network channel (bands, then index channels): see :mod:`geoseg.methods.scenestats`.
SceneStats = tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]


def meta_input(image: np.ndarray, valid: np.ndarray, meta: CheckpointMeta, scene_stats: SceneStats | None = None,
               ) -> np.ndarray:
    """:func:`network_input` with a checkpoint's index channels and what it normalises by: its training
    statistics, or with ``normalisation: scene`` the scene's (``scene_stats``; without them ``image`` is taken
    as the whole scene)."""
    if meta.normalisation == "scene":
        if scene_stats is None:
            from geoseg.methods.scenestats import NetworkChannels, image_statistics

            scene_stats = image_statistics(image, valid, NetworkChannels(image.shape[0], meta.indices()))
        return network_input(image, valid, scene_stats[0], scene_stats[1], meta.indices())
    mean = [*meta.band_mean, *(ch.mean for ch in meta.index_channels)]
    std = [*meta.band_std, *(ch.std for ch in meta.index_channels)]
    return network_input(image, valid, mean, std, meta.indices())


#: Ways of summing the blended tile probabilities into the chunk (see :class:`_Blender`).
BLENDS = ("auto", "index_add", "fold")
#: Largest column buffer ``fold`` may use on a GPU (bytes); bigger chunks blend with ``index_add``.
FOLD_MAX_BYTES = 2 << 30

_PINNED = threading.local()


def _to_device(x: np.ndarray, dev: torch.device) -> torch.Tensor:
    """The chunk as a tensor on ``dev``: on CUDA through a per-thread pinned host buffer, grown as needed.

    One host-to-device copy per chunk (tiles are then cut on the device); the buffer is reused
    for the next chunk, which is safe because the chunk's results are copied back (a sync) first.
    """
    import torch

    src = torch.from_numpy(np.ascontiguousarray(x))
    if dev.type != "cuda":
        return src
    buf = getattr(_PINNED, "buffer", None)
    if buf is None or buf.numel() < src.numel():
        buf = torch.empty(src.numel(), dtype=torch.float32, pin_memory=True)
        _PINNED.buffer = buf
    staged = buf[: src.numel()].view(src.shape)
    staged.copy_(src)
    return staged.to(dev, non_blocking=True)


class _Blender:
    """Sums weighted tile probabilities ``(B, classes, t, t)`` and their weights into the padded chunk.

    ``index_add``: one ``index_add_`` per batch on the flattened accumulators, tile after tile, so
    every pixel's sum is formed in the same order as adding tiles one at a time (bit-identical on
    CPU). ``fold``: tiles are kept as columns and summed by one ``torch.nn.functional.fold``, which
    on CUDA is deterministic (each output pixel sums its own contributions).
    """

    def __init__(self, how: str, dev: torch.device, n_cls: int, shape: tuple[int, int], origin: tuple[int, int],
                 grid: tuple[int, int], t: int, stride: int, win: torch.Tensor) -> None:
        import torch

        self.how, self.n_cls, self.shape, self.origin, self.grid, self.t, self.stride = how, n_cls, shape, origin, grid, t, stride
        self.win = win
        hp, wp = shape
        if how == "index_add":
            self.acc = torch.zeros(n_cls * hp * wp, dtype=torch.float32, device=dev)
            self.wsum = torch.zeros(hp * wp, dtype=torch.float32, device=dev)
            ar = torch.arange(t, device=dev)
            self.offs = (ar[:, None] * wp + ar[None, :]).reshape(-1)  # pixel offsets within a tile
            self.cls_offs = torch.arange(n_cls, device=dev) * (hp * wp)
        else:
            self.cols = torch.zeros((1, n_cls * t * t, grid[0] * grid[1]), dtype=torch.float32, device=dev)
            self.wcols = torch.zeros((1, t * t, grid[0] * grid[1]), dtype=torch.float32, device=dev)

    @classmethod
    def make(cls, how: str, dev: torch.device, n_cls: int, shape: tuple[int, int], origin: tuple[int, int],
             grid: tuple[int, int], t: int, stride: int, win: torch.Tensor) -> _Blender:
        if how == "auto":
            fold_bytes = 4 * (n_cls + 1) * t * t * grid[0] * grid[1]
            how = "fold" if dev.type == "cuda" and fold_bytes <= FOLD_MAX_BYTES else "index_add"
        return cls(how, dev, n_cls, shape, origin, grid, t, stride, win)

    def add(self, probs: torch.Tensor, bi: torch.Tensor, bj: torch.Tensor) -> None:
        b = probs.shape[0]
        if self.how == "index_add":
            wp = self.shape[1]
            base = (self.origin[0] + bi * self.stride) * wp + (self.origin[1] + bj * self.stride)  # (B,)
            pix = base[:, None] + self.offs[None, :]  # (B, t*t)
            idx = (pix[:, None, :] + self.cls_offs[None, :, None]).reshape(-1)  # (B, classes, t*t), tile-major
            self.acc.index_add_(0, idx, probs.reshape(-1))
            self.wsum.index_add_(0, pix.reshape(-1), self.win.reshape(1, -1).expand(b, -1).reshape(-1))
        else:
            cols = bi * self.grid[1] + bj
            self.cols[0, :, cols] = probs.reshape(b, -1).T
            self.wcols[0, :, cols] = self.win.reshape(-1, 1)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(classes, hp, wp)`` sums and ``(hp, wp)`` weights over the padded chunk."""
        import torch
        import torch.nn.functional as F

        hp, wp = self.shape
        if self.how == "index_add":
            return self.acc.view(self.n_cls, hp, wp), self.wsum.view(hp, wp)
        nr, nc = self.grid
        span = ((nr - 1) * self.stride + self.t, (nc - 1) * self.stride + self.t)
        acc = torch.zeros((self.n_cls, hp, wp), dtype=torch.float32, device=self.cols.device)
        wsum = torch.zeros((hp, wp), dtype=torch.float32, device=self.cols.device)
        r0, c0 = self.origin
        acc[:, r0 : r0 + span[0], c0 : c0 + span[1]] = F.fold(self.cols, span, self.t, stride=self.stride)[0]
        wsum[r0 : r0 + span[0], c0 : c0 + span[1]] = F.fold(self.wcols, span, self.t, stride=self.stride)[0, 0]
        return acc, wsum


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
    tta: str = "none",
    blend: str = "auto",
    scene_stats: SceneStats | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class ids ``(h, w)`` uint8 for raw band values ``image`` ``(bands, h, w)``; nodata where not ``valid``.

    ``origin`` is the global (row, col) of ``image[:, 0, 0]``: tiles are placed on the global
    grid so results match whatever the chunking (read chunks with :func:`required_halo`).
    ``core`` (array slices, e.g. ``HaloWindow.core_in_outer``) limits work to the tiles that
    touch it; labels outside it are then undefined. ``device`` defaults to the model's; the
    model must already be there and in eval mode. ``amp`` defaults to on for CUDA. With
    ``return_confidence`` also returns the blended probability of the chosen class (0 on nodata).
    ``tta`` (``none``, ``flips``, ``d4``) averages each tile's probabilities over flips/rotations.
    ``blend``: how tile probabilities are summed (:class:`_Blender`); ``auto`` = ``index_add`` on CPU
    (bit-identical to adding tile by tile), ``fold`` on CUDA (deterministic, unlike atomic adds).
    ``scene_stats``: for a checkpoint with ``normalisation: scene``, the statistics of the scene the chunk is
    cut from (:mod:`geoseg.methods.scenestats`); without them ``image`` is taken as the whole scene.
    """
    import torch

    _check_chunk(meta, image, valid, blend, tta)
    if meta.normalisation == "scene" and scene_stats is None and (origin != (0, 0) or core is not None):
        raise ValueError("this checkpoint normalises by the scene's statistics: a chunk of a scene needs them "
                         "(scene_stats=, e.g. geoseg.methods.scenestats.image_statistics of the scene)")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    use_amp = (dev.type == "cuda") if amp is None else (amp and dev.type == "cuda")
    _, h, w = image.shape
    labels = np.full((h, w), NODATA_LABEL, dtype=np.uint8)
    conf = np.zeros((h, w), dtype=np.float32)
    if not valid.any():
        return (labels, conf) if return_confidence else labels

    t, stride = meta.tile_size, meta.tile_size - meta.tile_overlap
    rows_roi = (core[0].start or 0, core[0].stop if core[0].stop is not None else h) if core else (0, h)
    cols_roi = (core[1].start or 0, core[1].stop if core[1].stop is not None else w) if core else (0, w)
    rs = tile_starts(origin[0], h, t, stride, *rows_roi)
    cs = tile_starts(origin[1], w, t, stride, *cols_roi)
    if not rs or not cs:  # an empty core
        return (labels, conf) if return_confidence else labels
    pad_top, pad_left = max(0, -rs[0]), max(0, -cs[0])
    pads = ((0, 0), (pad_top, max(0, rs[-1] + t - h)), (pad_left, max(0, cs[-1] + t - w)))
    x = meta_input(image, valid, meta, scene_stats)
    if any(pads[1] + pads[2]):  # interior chunks read with their halo need no padding (and no copy)
        mode: Literal["reflect", "edge"] = "reflect" if min(h, w) > 1 else "edge"
        x = np.pad(x, pads, mode=mode)
        vpad = np.pad(valid, pads[1:], mode=mode)
    else:
        vpad = valid
    with torch.inference_mode():
        tiles = _TileGrid(rs[0] + pad_top, cs[0] + pad_left, len(rs), len(cs), t, stride)
        acc, wsum = _blend_tiles(model, meta, x, vpad, tiles, dev, batch_size, use_amp, tta, blend)
        acc = acc[:, pad_top : pad_top + h, pad_left : pad_left + w]
        wsum = wsum[pad_top : pad_top + h, pad_left : pad_left + w]
        return _labels_of(acc, wsum, valid, meta, dev, return_confidence)


def _check_chunk(meta: CheckpointMeta, image: np.ndarray, valid: np.ndarray, blend: str, tta: str) -> None:
    """Refuse what :func:`predict_chunk` cannot run before any work."""
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")
    if image.ndim != 3 or image.shape[1:] != valid.shape:
        raise ValueError(f"image must be (bands, h, w) and valid (h, w), got {image.shape} and {valid.shape}")
    if image.shape[0] != len(meta.band_names):
        raise ModelInputError(
            f"checkpoint expects {len(meta.band_names)} bands ({', '.join(meta.band_names)}), chunk has {image.shape[0]}"
        )
    tta_transforms(tta)  # an unknown mode fails before any work


@dataclass(frozen=True)
class _TileGrid:
    """The chunk's tiles in the padded array: the first at ``(r0, c0)``, ``nr`` x ``nc`` of size ``t``."""

    r0: int
    c0: int
    nr: int
    nc: int
    t: int
    stride: int


def _blend_tiles(
    model: torch.nn.Module, meta: CheckpointMeta, x: np.ndarray, vpad: np.ndarray, g: _TileGrid,
    dev: torch.device, batch_size: int, use_amp: bool, tta: str, blend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window-weighted probability sums ``(classes, hp, wp)`` and weights ``(hp, wp)`` over the padded chunk."""
    import torch

    t, stride, nr, nc = g.t, g.stride, g.nr, g.nc
    xt = _to_device(x, dev)
    # every tile as a view (C, nr, nc, t, t) of the chunk: no copies until a batch is gathered
    views = xt[:, g.r0 :, g.c0 :].unfold(1, t, stride).unfold(2, t, stride)[:, :nr, :nc].permute(1, 2, 0, 3, 4)
    # Tiles with no valid pixel only cover nodata pixels: skipping them changes no label.
    vt = torch.from_numpy(np.ascontiguousarray(vpad[g.r0 :, g.c0 :]))
    has_valid = vt.unfold(0, t, stride).unfold(1, t, stride)[:nr, :nc].any(dim=-1).any(dim=-1)
    ii, jj = (torch.nonzero(has_valid, as_tuple=True))  # row-major, as the tiles were always ordered
    ii, jj = ii.to(dev), jj.to(dev)
    hp, wp = x.shape[1:]
    win = torch.from_numpy(blend_window(t, meta.tile_overlap)).to(dev)
    blender = _Blender.make(blend, dev, meta.n_classes, (hp, wp), (g.r0, g.c0), (nr, nc), t, stride, win)
    for b0 in range(0, len(ii), batch_size):
        bi, bj = ii[b0 : b0 + batch_size], jj[b0 : b0 + batch_size]
        probs = infer_tiles(model, views[bi, bj], amp=use_amp, tta=tta)  # the gather is the one copy
        probs.mul_(win)
        blender.add(probs, bi, bj)
    return blender.result()


def _labels_of(
    acc: torch.Tensor, wsum: torch.Tensor, valid: np.ndarray, meta: CheckpointMeta, dev: torch.device,
    return_confidence: bool,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The most probable class's id (nodata where not valid or no tile covers), and its blended probability."""
    import torch

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
#: How often this process read each weights file (resolved path) from disk: proof of reuse.
_LOADS: Counter[str] = Counter()


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
        raise CheckpointError(f"no checkpoint at {weights}; train one with `geoseg train` or check the path") from exc
    key = (str(weights.resolve()), st.st_mtime_ns, st.st_size, side, dev)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
        model, meta = load_checkpoint(checkpoint_path, device="cpu")
        _LOADS[key[0]] += 1
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


def model_loads(checkpoint_path: str | os.PathLike) -> int:
    """How many times this process has read the checkpoint's weights from disk (cache misses)."""
    from geoseg.methods.checkpoint import checkpoint_paths

    weights, _ = checkpoint_paths(checkpoint_path)
    with _CACHE_LOCK:
        return _LOADS[str(weights.resolve())]


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
    "meta_input",
    "model_loads",
    "network_input",
    "normalise",
    "predict_chunk",
    "prepare_model",
    "required_halo",
    "resolve_device",
    "tile_starts",
    "tta_transforms",
]

