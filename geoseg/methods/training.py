"""Training DeepLabV3+ on large rasters: random windows, a held-out strip, the best checkpoint kept.

Training reads random ``tile_size`` windows straight from the image and reference files
(never a whole raster), optionally class-balanced from a coarse decimated read of the
reference, so rare classes such as weeds are seen often. The reference is a raster of class
ids on the image grid (0 = unlabelled) or a vector layer rasterised per window. The bottom
``val_fraction`` of each image's rows is held out (training windows never reach into it) and
scored as mIoU after every epoch; the best epoch's weights are kept as the checkpoint, with
band normalisation statistics computed from training windows and stored alongside.

``geoseg train JOB.yaml`` reads the same settings from a YAML job file (:func:`load_train_job`,
see ``workflows/*-train.yaml``); relative paths in it are taken from the file's folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geoseg.methods.checkpoint import (
    CheckpointMeta,
    TrainingSummary,
    build_model,
    checkpoint_paths,
    save_checkpoint,
    write_sidecar,
)
from geoseg.legend import ClassInfo
from geoseg.errors import GridMismatchError, InputError
from geoseg.methods.deeplab import normalise, resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Target value for pixels that do not count (unlabelled, unknown class, image nodata, padding).
IGNORE_INDEX = 255
#: The coarse reference used for class-balanced sampling is at most this many pixels per side.
COARSE_SIDE = 1024


class TrainPair(BaseModel):
    """One training image and its reference: a class-id raster on the same grid, or a vector layer."""

    model_config = ConfigDict(extra="forbid")

    image: Path
    reference: Path | None = Field(default=None, description="raster of class ids on the image grid, 0 = unlabelled")
    vector: Path | None = Field(default=None, description="polygons (e.g. GeoPackage) with a class id field")
    class_field: str | None = None
    layer: str | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> "TrainPair":
        if (self.reference is None) == (self.vector is None):
            raise ValueError(f"{self.image}: give exactly one of `reference` (raster) or `vector`")
        if self.vector is not None and not self.class_field:
            raise ValueError(f"{self.image}: a vector reference needs `class_field` (the column holding class ids)")
        return self


class TrainConfig(BaseModel):
    """Everything ``geoseg train`` needs; unknown keys are refused so typos do not go unnoticed."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[TrainPair] = Field(min_length=1)
    val_pairs: list[TrainPair] = Field(default_factory=list, description="separate validation images (optional)")
    bands: list[str] | None = Field(default=None, description="band names to use, in order; None = all")
    classes: list[ClassInfo] = Field(min_length=2)
    encoder: str = "resnet18"
    encoder_weights: Path | None = None
    encoder_depth: Literal[3, 4, 5] = 5
    encoder_output_stride: Literal[8, 16] = 16
    decoder_channels: int = Field(default=256, ge=8)
    tile_size: int = Field(default=256, ge=32)
    tile_overlap: int | None = Field(
        default=None, ge=0, description="overlap used at inference, stored in the checkpoint; None = tile_size // 4"
    )
    batch_size: int = Field(default=8, ge=2)
    epochs: int = Field(default=10, ge=1)
    steps_per_epoch: int = Field(default=100, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    class_balanced: bool = True
    val_fraction: float = Field(default=0.2, ge=0, lt=1, description="bottom share of each image's rows held out")
    val_tiles: int = Field(default=64, ge=1, description="most validation tiles scored per epoch")
    norm_windows: int = Field(default=32, ge=1, description="training windows sampled for band statistics")
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint: Path
    num_workers: int = Field(default=0, ge=0)
    progress: bool | None = Field(default=None, description="rich progress bar; None = only on a terminal")

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"tile_size must be a multiple of 16, got {v}")
        return v

    @model_validator(mode="after")
    def _checks(self) -> "TrainConfig":
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids) or any(not 1 <= i <= 254 for i in ids):
            raise ValueError(f"class ids must be unique and in 1..254 (0 = unlabelled), got {ids}")
        if self.tile_overlap is None:
            self.tile_overlap = self.tile_size // 4
        if 2 * self.tile_overlap > self.tile_size:
            raise ValueError("tile_overlap must be at most half of tile_size")
        return self


class TrainJob(TrainConfig):
    """A training job file (``geoseg train JOB.yaml``): the keys of :class:`TrainConfig` plus
    ``version`` and an optional ``name``. See ``workflows/*-train.yaml`` for commented examples."""

    version: Literal[1] = 1
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,80}$")

    @field_validator("classes")
    @classmethod
    def _colours(cls, v: list[ClassInfo]) -> list[ClassInfo]:
        for c in v:
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", c.color):
                raise ValueError(f"class {c.id} ({c.name}): color must be #rrggbb, got {c.color!r}")
        return v

    def resolved(self, base: Path) -> "TrainJob":
        """A copy with every relative path (images, references, encoder weights, checkpoint) taken from ``base``."""

        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        def fix_pair(pair: TrainPair) -> TrainPair:
            return pair.model_copy(update={"image": fix(pair.image), "reference": fix(pair.reference),
                                           "vector": fix(pair.vector)})

        return self.model_copy(update={
            "pairs": [fix_pair(p) for p in self.pairs],
            "val_pairs": [fix_pair(p) for p in self.val_pairs],
            "encoder_weights": fix(self.encoder_weights),
            "checkpoint": fix(self.checkpoint),
        })


def parse_train_job(data: Any, source: str = "training job") -> TrainJob:
    """Validate a training job given as a dict (unknown keys are errors); paths stay as given."""
    from geoseg.run.jobspec import validate_mapping

    return validate_mapping(TrainJob, data, source, "training job")


def load_train_job(path: str | os.PathLike) -> TrainJob:
    """Read a YAML training job (safe loader), validate it and resolve relative paths from its folder.

    The result is a :class:`TrainConfig` (a :class:`TrainJob`) ready for :func:`train`.
    """
    from geoseg.methods.chips import expand_chips
    from geoseg.run.jobspec import read_yaml

    path = Path(path)
    data = expand_chips(read_yaml(path, "training job"), path.resolve().parent)  # a chip folder -> pairs
    return parse_train_job(data, str(path)).resolved(path.resolve().parent)


@dataclass
class TrainResult:
    """What a training run produced."""

    checkpoint: Path
    meta: CheckpointMeta
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_val_miou: float | None
    seconds: float
    history_path: Path = field(default_factory=Path)


# --------------------------------------------------------------------------------------------
# Sources: one image + reference, opened lazily per process
# --------------------------------------------------------------------------------------------


def _band_indexes(path: Path, descriptions: tuple, wanted: list[str] | None) -> tuple[list[int], list[str]]:
    names = [d if d else f"b{i + 1}" for i, d in enumerate(descriptions)]
    if wanted is None:
        return list(range(1, len(names) + 1)), names
    lowered = [n.lower() for n in names]
    idx = []
    for w in wanted:
        if w.lower() not in lowered:
            raise InputError(f"{path} has no band {w!r}; its bands are {', '.join(names)}")
        idx.append(lowered.index(w.lower()) + 1)
    return idx, [names[i - 1] for i in idx]


class TrainSource:
    """A training or validation image with its reference and the rows ``[row_lo, row_hi)`` it may use."""

    def __init__(self, pair: TrainPair, bands: list[str] | None, lut: np.ndarray, rows: tuple[float, float]) -> None:
        import rasterio

        self.pair = pair
        self.lut = lut
        if not pair.image.is_file():
            raise InputError(f"training image {pair.image} does not exist")
        with rasterio.open(pair.image) as ds:
            if ds.crs is None or ds.transform.is_identity:
                raise InputError(f"{pair.image} is not georeferenced; training needs a CRS and a geotransform")
            self.height, self.width = ds.height, ds.width
            self.transform, self.crs = ds.transform, ds.crs
            self.indexes, self.band_names = _band_indexes(pair.image, ds.descriptions, bands)
            self.nodata = ds.nodata
            self.resolution = (abs(ds.transform.a) + abs(ds.transform.e)) / 2
        self.row_lo = int(round(rows[0] * self.height))
        self.row_hi = int(round(rows[1] * self.height))
        if self.row_hi - self.row_lo < 16:
            raise InputError(
                f"{pair.image}: only {self.row_hi - self.row_lo} rows left for this split; lower val_fraction or use a larger image"
            )
        self._vec = None
        if pair.reference is not None:
            if not pair.reference.is_file():
                raise InputError(f"reference raster {pair.reference} does not exist")
            with rasterio.open(pair.reference) as rs:
                if (rs.height, rs.width) != (self.height, self.width) or not rs.transform.almost_equals(self.transform):
                    raise GridMismatchError(
                        f"reference {pair.reference} ({rs.width}x{rs.height}) is not on the grid of {pair.image} "
                        f"({self.width}x{self.height}); warp it onto the image grid first (gdalwarp -te/-tr)"
                    )
        else:
            self._load_vector()
        self._img = None
        self._ref = None
        self._pid = None

    def _load_vector(self) -> None:
        import geopandas as gpd

        pair = self.pair
        if not pair.vector.exists():
            raise InputError(f"vector reference {pair.vector} does not exist")
        gdf = gpd.read_file(pair.vector, layer=pair.layer)
        if pair.class_field not in gdf.columns:
            raise InputError(f"{pair.vector} has no field {pair.class_field!r}; its fields are {', '.join(map(str, gdf.columns))}")
        if gdf.crs is None:
            raise InputError(f"{pair.vector} has no CRS; assign one (ogr2ogr -a_srs)")
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(self.crs)
        try:
            values = gdf[pair.class_field].astype("int64").to_numpy()
        except (TypeError, ValueError) as exc:
            raise InputError(f"{pair.vector}: field {pair.class_field!r} must hold integer class ids") from exc
        self._vec = (gdf.geometry.reset_index(drop=True), values)

    # -- reading ------------------------------------------------------------------------------

    def _open(self) -> None:
        import rasterio

        if self._pid != os.getpid():  # (re)open after a fork: file handles are not shared
            self._img = rasterio.open(self.pair.image)
            self._ref = rasterio.open(self.pair.reference) if self.pair.reference is not None else None
            self._pid = os.getpid()

    def _rasterize(self, row: int, col: int, h: int, w: int, step: int = 1, all_touched: bool = False) -> np.ndarray:
        import shapely
        from affine import Affine
        from rasterio.features import rasterize

        geoms, values = self._vec
        tr = self.transform * Affine.translation(col, row) * Affine.scale(step)
        x0, y0 = tr * (0, 0)
        x1, y1 = tr * (w, h)
        hits = geoms.sindex.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        if len(hits) == 0:
            return np.zeros((h, w), np.uint8)
        hits = np.sort(hits)
        vals = np.clip(values[hits], 0, 255)
        return rasterize(
            zip(geoms.iloc[hits], vals), out_shape=(h, w), transform=tr, fill=0, dtype="uint8", all_touched=all_touched
        )

    def read(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw bands ``(b, h, w)`` float32, validity ``(h, w)`` and target indexes ``(h, w)`` uint8."""
        from rasterio.windows import Window as RioWindow

        self._open()
        win = RioWindow(col, row, w, h)
        img = self._img.read(self.indexes, window=win).astype(np.float32)
        valid = np.all(np.isfinite(img), axis=0)
        if self.nodata is not None and not (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            valid &= ~np.any(img == self.nodata, axis=0)
        ref = self._ref.read(1, window=win) if self._ref is not None else self._rasterize(row, col, h, w)
        target = self.lut[ref]
        target[~valid] = IGNORE_INDEX
        return img, valid, target

    def coarse_reference(self) -> tuple[np.ndarray, int]:
        """The reference decimated to at most ``COARSE_SIDE`` per side (nearest), and the step."""
        import rasterio
        from rasterio.enums import Resampling

        step = max(1, math.ceil(max(self.height, self.width) / COARSE_SIDE))
        ch, cw = math.ceil(self.height / step), math.ceil(self.width / step)
        if self.pair.reference is not None:
            with rasterio.open(self.pair.reference) as rs:
                return rs.read(1, out_shape=(ch, cw), resampling=Resampling.nearest), step
        return self._rasterize(0, 0, ch, cw, step=step, all_touched=True), step

    def __getstate__(self) -> dict:  # DataLoader workers get a copy without open handles
        state = self.__dict__.copy()
        state.update(_img=None, _ref=None, _pid=None)
        return state


def _resolve_class_lut(classes: list[ClassInfo]) -> np.ndarray:
    """Reference class id → model output index; 0 and unknown ids → ``IGNORE_INDEX``."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, c in enumerate(classes):
        lut[c.id] = i
    return lut


def open_sources(cfg: TrainConfig) -> tuple[list[TrainSource], list[TrainSource]]:
    """Training and validation sources: the top and bottom rows of each pair, or ``val_pairs``.

    Checks up front that every image has the requested bands, that references are on their
    image's grid, and that all images share one resolution.
    """
    lut = _resolve_class_lut(cfg.classes)
    hold = cfg.val_fraction if not cfg.val_pairs else 0.0
    train_src = [TrainSource(p, cfg.bands, lut, (0.0, 1.0 - hold)) for p in cfg.pairs]
    if cfg.val_pairs:
        val_src = [TrainSource(p, cfg.bands, lut, (0.0, 1.0)) for p in cfg.val_pairs]
    elif hold > 0:
        val_src = [TrainSource(p, cfg.bands, lut, (1.0 - hold, 1.0)) for p in cfg.pairs]
    else:
        val_src = []
    names = train_src[0].band_names
    for s in train_src[1:] + val_src:
        if [n.lower() for n in s.band_names] != [n.lower() for n in names]:
            raise InputError(f"{s.pair.image} has bands ({', '.join(s.band_names)}), {train_src[0].pair.image} has "
                             f"({', '.join(names)}); select common bands with `bands:`")
    res = [s.resolution for s in train_src + val_src]
    if max(res) / min(res) > 1.5:
        raise InputError(f"training images have pixel sizes from {min(res):g} to {max(res):g}; resample them to one resolution")
    return train_src, val_src


# --------------------------------------------------------------------------------------------
# Window sampling
# --------------------------------------------------------------------------------------------


class WindowSampler:
    """Random training windows from the training rows of every source.

    With ``class_balanced`` a class is drawn uniformly among those present, then a pixel of
    that class from the coarse reference, then a window containing that pixel at a random
    position; otherwise windows are uniform over the training area.
    """

    def __init__(self, sources: list[TrainSource], n_classes: int, tile: int, class_balanced: bool) -> None:
        self.sources = sources
        self.tile = tile
        self.n_classes = n_classes
        self.class_balanced = class_balanced
        self.areas = np.array([(s.row_hi - s.row_lo) * s.width for s in sources], dtype=np.float64)
        self.by_class: list[list[tuple[int, np.ndarray, int]]] = [[] for _ in range(n_classes)]
        self.class_counts = np.zeros(n_classes, dtype=np.int64)
        if class_balanced:
            self._index_classes()

    def _index_classes(self) -> None:
        unknown: set[int] = set()
        for si, src in enumerate(self.sources):
            coarse, step = src.coarse_reference()
            rows = (np.arange(coarse.shape[0]) * step + step // 2)[:, None]
            inside = (rows >= src.row_lo) & (rows < src.row_hi)
            idx = src.lut[coarse]
            unknown |= set(np.unique(coarse[(idx == IGNORE_INDEX) & (coarse != 0)]).tolist())
            for k in range(self.n_classes):
                flat = np.flatnonzero(((idx == k) & inside).ravel())
                if flat.size:
                    self.by_class[k].append((si, flat.astype(np.int64), step))
                    self.class_counts[k] += flat.size
        if unknown:
            log.warning("reference ids %s are not among the classes and are ignored", sorted(unknown))
        if not self.class_counts.any():
            raise InputError("no labelled pixel of any class was found in the training area of the references")

    def _clip_start(self, centre: int, lo: int, hi: int, rng: np.random.Generator) -> tuple[int, int]:
        size = min(self.tile, hi - lo)
        start = centre - int(rng.integers(0, size))
        return int(np.clip(start, lo, hi - size)), size

    def pick(self, rng: np.random.Generator) -> tuple[int, int, int, int, int]:
        """``(source, row, col, h, w)`` of one window inside a source's training rows."""
        if self.class_balanced:
            present = np.flatnonzero(self.class_counts)
            k = int(rng.choice(present))
            entries = self.by_class[k]
            weights = np.array([e[1].size for e in entries], dtype=np.float64)
            si, flat, step = entries[int(rng.choice(len(entries), p=weights / weights.sum()))]
            src = self.sources[si]
            cw = math.ceil(src.width / step)
            cell = int(flat[rng.integers(flat.size)])
            pr = min((cell // cw) * step + int(rng.integers(step)), src.row_hi - 1)
            pc = min((cell % cw) * step + int(rng.integers(step)), src.width - 1)
            pr = max(pr, src.row_lo)
        else:
            si = int(rng.choice(len(self.sources), p=self.areas / self.areas.sum()))
            src = self.sources[si]
            pr = int(rng.integers(src.row_lo, src.row_hi))
            pc = int(rng.integers(0, src.width))
        r, h = self._clip_start(pr, src.row_lo, src.row_hi, rng)
        c, w = self._clip_start(pc, 0, src.width, rng)
        return si, r, c, h, w


def _pad_to(img: np.ndarray, target: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = target.shape
    if (h, w) == (tile, tile):
        return img, target
    img = np.pad(img, ((0, 0), (0, tile - h), (0, tile - w)))
    target = np.pad(target, ((0, tile - h), (0, tile - w)), constant_values=IGNORE_INDEX)
    return img, target


def _augment(img: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random one of the 8 flips/rotations: imagery from above has no preferred orientation."""
    k = int(rng.integers(4))
    if k:
        img, target = np.rot90(img, k, axes=(1, 2)), np.rot90(target, k)
    if rng.random() < 0.5:
        img, target = img[:, :, ::-1], target[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(target)


class _TrainStream:
    """An endless stream of augmented, normalised training samples (a torch ``IterableDataset``)."""

    def __init__(self, sampler: WindowSampler, mean: np.ndarray, std: np.ndarray, seed: int) -> None:
        self.sampler, self.mean, self.std, self.seed = sampler, mean, std, seed

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 7, info.id if info else 0])
        tile = self.sampler.tile
        while True:
            si, r, c, h, w = self.sampler.pick(rng)
            img, valid, target = self.sampler.sources[si].read(r, c, h, w)
            x = normalise(img, valid, self.mean, self.std)
            x, target = _pad_to(x, target, tile)
            x, target = _augment(x, target, rng)
            yield x, target.astype(np.int64)


def _batches(stream: _TrainStream, batch_size: int, num_workers: int) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
    import torch
    import torch.utils.data

    class _DS(torch.utils.data.IterableDataset):
        def __iter__(self):  # noqa: ANN204
            for x, y in stream:
                yield torch.from_numpy(x), torch.from_numpy(y)

    if num_workers > 0:
        loader = torch.utils.data.DataLoader(
            _DS(), batch_size=batch_size, num_workers=num_workers, persistent_workers=True, prefetch_factor=4
        )
        yield from loader
        return
    it = iter(stream)
    while True:
        xs, ys = zip(*(next(it) for _ in range(batch_size)))
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def band_statistics(
    sampler: WindowSampler, n_windows: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over valid pixels of ``n_windows`` uniformly drawn training windows."""
    uniform = WindowSampler.__new__(WindowSampler)
    uniform.__dict__.update(sampler.__dict__, class_balanced=False)
    n_b = len(sampler.sources[0].indexes)
    s = np.zeros(n_b)
    ss = np.zeros(n_b)
    n = 0
    for _ in range(n_windows):
        si, r, c, h, w = uniform.pick(rng)
        img, valid, _ = sampler.sources[si].read(r, c, h, w)
        v = img[:, valid].astype(np.float64)
        s += v.sum(axis=1)
        ss += (v * v).sum(axis=1)
        n += v.shape[1]
    if n == 0:
        raise InputError("the sampled training windows hold no valid pixel; is the image all nodata?")
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    std = np.maximum(std, 1e-6 * np.maximum(np.abs(mean), 1.0))
    return mean.astype(np.float32), std.astype(np.float32)


def validation_tiles(sources: list[TrainSource], tile: int, limit: int, rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
    """Non-overlapping tiles covering each source's validation rows, at most ``limit`` of them."""
    out = []
    for si, src in enumerate(sources):
        for r in range(src.row_lo, src.row_hi, tile):
            for c in range(0, src.width, tile):
                out.append((si, r, c, min(tile, src.row_hi - r), min(tile, src.width - c)))
    if len(out) > limit:
        keep = np.sort(rng.choice(len(out), size=limit, replace=False))
        out = [out[i] for i in keep]
    return out


def confusion_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix (rows = reference); NaN for classes absent from both.

    >>> confusion_iou(np.array([[3, 1], [0, 0]])).round(2).tolist()
    [0.75, 0.0]
    """
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _evaluate(model, val: list[tuple[np.ndarray, np.ndarray]], n_classes: int, dev, batch_size: int, amp_dtype) -> np.ndarray:  # noqa: ANN001
    import torch

    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    model.eval()
    with torch.inference_mode():
        for b0 in range(0, len(val), batch_size):
            xs = torch.from_numpy(np.stack([v[0] for v in val[b0 : b0 + batch_size]])).to(dev)
            ys = np.stack([v[1] for v in val[b0 : b0 + batch_size]])
            if dev.type == "cuda":
                xs = xs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(xs)
            pred = logits.float().argmax(1).cpu().numpy()
            m = ys != IGNORE_INDEX
            conf += np.bincount(ys[m].astype(np.int64) * n_classes + pred[m], minlength=n_classes**2).reshape(
                n_classes, n_classes
            )
    return conf


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def history_path(checkpoint: str | os.PathLike) -> Path:
    """Where the learning curve of a checkpoint is written: ``<checkpoint>.history.json``."""
    weights, _ = checkpoint_paths(checkpoint)
    return weights.with_name(weights.name[: -len(".safetensors")] + ".history.json")


def _progress(enabled: bool | None):  # noqa: ANN202
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=Console(stderr=True),
    )


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> TrainResult:
    """Train a DeepLabV3+ as ``config`` says and write the best checkpoint; returns the curve.

    Raises :class:`InputError` for unusable inputs and :class:`~geoseg.errors.ModelError` for
    an unknown encoder or unusable encoder weights, before any training starts.
    """
    t_start = time.perf_counter()
    cfg = config
    train_src, val_src = open_sources(cfg)  # input errors first: before the (slow) torch import

    import segmentation_models_pytorch as smp
    import torch

    dev = torch.device(resolve_device(cfg.device))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    n_cls = len(cfg.classes)
    names = train_src[0].band_names
    sampler = WindowSampler(train_src, n_cls, cfg.tile_size, cfg.class_balanced)
    mean, std = band_statistics(sampler, cfg.norm_windows, rng)
    val_tiles = validation_tiles(val_src, cfg.tile_size, cfg.val_tiles, rng) if val_src else []
    val_data = []
    for si, r, c, h, w in val_tiles:
        img, valid, target = val_src[si].read(r, c, h, w)
        val_data.append(_pad_to(normalise(img, valid, mean, std), target, cfg.tile_size))

    model = build_model(
        cfg.encoder, len(names), n_cls, cfg.encoder_weights, encoder_depth=cfg.encoder_depth,
        encoder_output_stride=cfg.encoder_output_stride, decoder_channels=cfg.decoder_channels,
    ).to(dev)
    cuda = dev.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = None
    if cuda and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=min(0.3, max(0.05, 50 / total)))
    ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX)

    meta = CheckpointMeta(
        encoder=cfg.encoder, encoder_depth=cfg.encoder_depth, encoder_output_stride=cfg.encoder_output_stride,
        decoder_channels=cfg.decoder_channels, in_channels=len(names), band_names=list(names),
        band_mean=mean.tolist(), band_std=std.tolist(), classes=list(cfg.classes), tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap, resolution=float(np.mean([s.resolution for s in train_src])),
        crs=train_src[0].crs.to_string(),
        training=TrainingSummary(steps_per_epoch=cfg.steps_per_epoch, images=[str(p.image) for p in cfg.pairs]),
    )
    hist_path = history_path(cfg.checkpoint)
    hist_path.parent.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best_miou: float | None = None
    best_epoch: int | None = None
    batches = _batches(_TrainStream(sampler, mean, std, cfg.seed), cfg.batch_size, cfg.num_workers)
    progress = _progress(cfg.progress)
    task = progress.add_task("training", total=total, info="") if progress else None
    if progress:
        progress.start()
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses = []
            t_epoch = time.perf_counter()
            for _ in range(cfg.steps_per_epoch):
                xb, yb = next(batches)
                if cuda:
                    xb = xb.pin_memory().to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    yb = yb.pin_memory().to(dev, non_blocking=True)
                if not bool((yb != IGNORE_INDEX).any()):
                    sched.step()
                    continue
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(xb)
                logits = logits.float()
                loss = ce(logits, yb) + cfg.dice_weight * dice(logits, yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                losses.append(float(loss.detach()))
                if progress:
                    progress.update(task, advance=1, info=f"epoch {epoch} loss {losses[-1]:.3f}")
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else None,
                "lr": float(sched.get_last_lr()[0]),
                "seconds": round(time.perf_counter() - t_epoch, 3),
            }
            if val_data:
                iou = confusion_iou(_evaluate(model, val_data, n_cls, dev, cfg.batch_size, amp_dtype))
                row["val_miou"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else None
                row["val_iou"] = {c.name: (None if math.isnan(v) else float(v)) for c, v in zip(cfg.classes, iou)}
            else:
                row["val_miou"] = None
            history.append(row)
            improved = val_data and row["val_miou"] is not None and (best_miou is None or row["val_miou"] > best_miou)
            if improved or not val_data:
                if improved:
                    best_miou, best_epoch = row["val_miou"], epoch
                meta.training = meta.training.model_copy(update=dict(
                    epochs=epoch, best_epoch=best_epoch, best_val_miou=best_miou,
                    val_iou={k: v for k, v in row.get("val_iou", {}).items() if v is not None},
                    seconds=round(time.perf_counter() - t_start, 1),
                ))
                save_checkpoint(model, meta, cfg.checkpoint)
            _write_json(hist_path, history)
            log.info("epoch %d: train loss %s, val mIoU %s", epoch, row["train_loss"], row["val_miou"])
    finally:
        batches.close()  # stops loader worker processes
        if progress:
            progress.stop()
    meta.training = meta.training.model_copy(
        update=dict(epochs=cfg.epochs, seconds=round(time.perf_counter() - t_start, 1))
    )
    write_sidecar(meta, cfg.checkpoint)
    weights, _ = checkpoint_paths(cfg.checkpoint)
    return TrainResult(
        checkpoint=weights, meta=meta, history=history, best_epoch=best_epoch, best_val_miou=best_miou,
        seconds=time.perf_counter() - t_start, history_path=hist_path,
    )


__all__ = [
    "IGNORE_INDEX",
    "TrainConfig",
    "TrainJob",
    "TrainPair",
    "TrainResult",
    "WindowSampler",
    "TrainSource",
    "band_statistics",
    "confusion_iou",
    "validation_tiles",
    "history_path",
    "load_train_job",
    "open_sources",
    "parse_train_job",
    "train",
]
