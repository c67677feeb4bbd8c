"""Training a Mask R-CNN from instance annotations: polygons (one feature = one instance), id rasters or chips.

``geoseg train JOB.yaml`` with ``kind: maskrcnn`` (:class:`InstanceTrainJob`). Each step reads random
``tile + 2·overlap`` px windows (the side the network sees at inference) from the files:

* a vector layer: every feature meeting the window is burnt **alone** (:func:`geoseg.io.rasterize.burn`),
  so touching or overlapping objects stay separate instances (a merged burn would join them); the class
  comes from ``class_field`` or is ``class_value``. When every feature is an axis-aligned rectangle the
  annotations are boxes: the masks learnt are box-shaped; training says so in a warning and records
  ``masks: boxes`` in the sidecar;
* an instance raster on the image grid (``instances``: uint16/uint32 ids, 0 = none), class ``class_value``;
* a chip folder (``chips``: ``images/NAME.tif`` with the id raster ``instances/NAME.tif``), no georeference
  needed.

Bands are normalised by statistics of the training windows (stored in the sidecar). Windows are flipped
and turned at random. The network is :func:`geoseg.methods.maskrcnn.build_maskrcnn`'s, optionally started
from a weights file the user gives (``init_weights``); nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoseg.errors import InputError, MissingFileError, NoCRSError
from geoseg.legend import ClassInfo
from geoseg.methods.maskrcnn import Backbone, MaskRCNNMeta

log = logging.getLogger(__name__)


class BoxMasksWarning(UserWarning):
    """The annotations are boxes only: the model learns box-shaped masks."""


class InstancePair(BaseModel):
    """One training image and its instances: a vector layer (one feature each) or an id raster on its grid."""

    model_config = ConfigDict(extra="forbid")

    image: Path
    vector: Path | None = None
    layer: str | None = None
    instances: Path | None = Field(default=None, description="instance id raster on the image grid, 0 = none")
    class_field: str | None = None
    class_value: int | None = Field(default=None, ge=1, le=254)

    @model_validator(mode="after")
    def _one(self) -> InstancePair:
        if (self.vector is None) == (self.instances is None):
            raise ValueError(f"{self.image}: give exactly one of `vector` (polygons) or `instances` (id raster)")
        if (self.class_field is None) == (self.class_value is None):
            raise ValueError(f"{self.image}: give the instances' class as `class_field` (a field) or `class_value`")
        if self.instances is not None and self.class_field is not None:
            raise ValueError(f"{self.image}: an id raster has no fields; give `class_value`")
        return self


class InstanceTrainJob(BaseModel):
    """A Mask R-CNN training job (``kind: maskrcnn``); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    kind: Literal["maskrcnn"] = "maskrcnn"
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    pairs: list[InstancePair] = Field(default_factory=list)
    chips: Path | None = Field(default=None, description="folder with images/NAME.* and instances/NAME.* id rasters")
    chip_class: int | None = Field(default=None, ge=1, le=254, description="class of every chip instance")
    classes: list[ClassInfo] = Field(min_length=1, description="the thing classes the model finds")
    backbone: Backbone = "tiny_fpn"
    fpn_channels: int = Field(64, ge=8, le=256)
    anchor_sizes: list[int] | None = None
    init_weights: Path | None = Field(default=None, description="weights file to start from (nothing is downloaded)")
    tile_size: int = Field(256, ge=32, le=2048)
    tile_overlap: int = Field(32, ge=0)
    max_detections: int = Field(300, ge=1, le=4096)
    batch_size: int = Field(4, ge=1)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    min_instance_px: int = Field(8, ge=1, description="instances with fewer pixels in a window are not targets")
    norm_windows: int = Field(16, ge=1)
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default)")
    checkpoint: Path

    @model_validator(mode="after")
    def _checks(self) -> InstanceTrainJob:
        if not self.pairs and self.chips is None:
            raise ValueError("give training `pairs` or a `chips` folder")
        if self.chips is not None and self.chip_class is None:
            raise ValueError("a `chips` folder needs `chip_class`, the class of its instances")
        ids = {c.id for c in self.classes}
        for v in [p.class_value for p in self.pairs] + [self.chip_class]:
            if v is not None and v not in ids:
                raise ValueError(f"class {v} is not among classes {sorted(ids)}")
        if 2 * self.tile_overlap > self.tile_size:
            raise ValueError("tile_overlap must be at most half of tile_size")
        return self

    def resolved(self, base: Path) -> InstanceTrainJob:
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        pairs = [p.model_copy(update={"image": fix(p.image), "vector": fix(p.vector), "instances": fix(p.instances)})
                 for p in self.pairs]
        return self.model_copy(update={"pairs": pairs, "chips": fix(self.chips), "checkpoint": fix(self.checkpoint),
                                       "init_weights": fix(self.init_weights)})


def load_instance_train_job(path: str | Path, data: Any = None) -> InstanceTrainJob:
    """Read (or take the already read ``data`` of) a YAML ``kind: maskrcnn`` job; paths from the file's folder."""
    from geoseg.io.jobfile import read_yaml, validate_mapping

    path = Path(path)
    data = read_yaml(path, "training job") if data is None else data
    job = validate_mapping(InstanceTrainJob, data, str(path), "training job")
    return job.resolved(path.resolve().parent)


# --- sources -------------------------------------------------------------------------------------


Instance = tuple[np.ndarray, int]  # bool mask of the window, class id


class _Source:
    """An image (raster file) and how to get the instances of any window of it.

    A georeferenced image is read by inference's reader (:func:`geoseg.io.sources.read_source`): the same
    value bands (alpha is validity), validity rule and scale/offset, so the network learns the values it
    will be given; a chip (no georeference) is read as it is stored.
    """

    def __init__(self, image: Path, georeferenced: bool = True) -> None:
        from geoseg.geo import GeoGrid
        from geoseg.io.opener import open_raster
        from geoseg.io.sources import describe_source, place
        from geoseg.methods.training.data import _band_indexes

        if not image.is_file():
            raise MissingFileError(f"training image {image} does not exist")
        self.image = image
        with open_raster(image, "chip", what="training image") as ds:
            if georeferenced and (ds.crs is None or ds.transform.is_identity):
                raise NoCRSError(f"{image} is not georeferenced; give a CRS and a geotransform or use `chips`")
            self.height, self.width = ds.height, ds.width
            self.transform, self.crs = ds.transform, ds.crs
            self.indexes, self.band_names = _band_indexes(image, ds, None)
            self.count = len(self.indexes)
            self.resolution = (abs(ds.transform.a) + abs(ds.transform.e)) / 2 if georeferenced else None
        self.grid: Any = None
        self.source: Any = None
        if georeferenced:
            self.grid = GeoGrid.of(self.height, self.width, self.transform, self.crs)
            self.source = place(describe_source(str(image), tuple(self.indexes)), self.grid)

    def read(self, row: int, col: int, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Bands ``(b, side, side)`` float32 and validity; outside the image: zeros, not valid."""
        from rasterio.windows import Window as RioWindow

        from geoseg.geo import Window
        from geoseg.io.opener import open_raster
        from geoseg.methods.training.data import _on_window

        if self.source is not None:
            return _on_window(self.source, self.grid, Window(row, col, side, side), np.float32)
        with open_raster(self.image, "chip", what="training image") as ds:
            w = RioWindow(col, row, side, side)
            data = ds.read(self.indexes, window=w, boundless=True, fill_value=0, out_dtype="float32")
            valid = ds.read_masks(self.indexes[0], window=w, boundless=True) > 0
        for b in range(data.shape[0]):
            valid &= np.isfinite(data[b])
        return data, valid

    def instances(self, row: int, col: int, side: int) -> list[Instance]:
        raise NotImplementedError


class _IdRasterSource(_Source):
    def __init__(self, image: Path, ids: Path, class_id: int, georeferenced: bool = True) -> None:
        from geoseg.errors import GridMismatchError
        from geoseg.io.opener import open_raster

        super().__init__(image, georeferenced)
        if not ids.is_file():
            raise MissingFileError(f"instance raster {ids} does not exist")
        with open_raster(ids, "chip", what="instance raster") as ds:
            same = (ds.height, ds.width) == (self.height, self.width)
            if not same or (georeferenced and not ds.transform.almost_equals(self.transform)):
                raise GridMismatchError(f"instance raster {ids} is not on the grid of {image}; warp it onto the image "
                                        "grid first (gdalwarp -te/-tr)")
            if ds.dtypes[0] not in ("uint8", "uint16", "uint32", "int16", "int32"):
                raise InputError(f"instance raster {ids} holds {ds.dtypes[0]}; instance ids are integers (uint16/uint32)")
        self.ids, self.class_id = ids, class_id

    def instances(self, row: int, col: int, side: int) -> list[Instance]:
        from rasterio.windows import Window as RioWindow

        from geoseg.io.opener import open_raster

        with open_raster(self.ids, "chip", what="instance raster") as ds:
            ids = ds.read(1, window=RioWindow(col, row, side, side), boundless=True, fill_value=0)
        return [(ids == v, self.class_id) for v in np.unique(ids) if v > 0]


class _VectorSource(_Source):
    def __init__(self, pair: InstancePair) -> None:
        import geopandas as gpd

        from geoseg.io.opener import check_vector

        super().__init__(pair.image)
        assert pair.vector is not None
        if not pair.vector.exists():
            raise MissingFileError(f"instance polygons {pair.vector} do not exist")
        check_vector(pair.vector, "instance polygons")
        gdf = gpd.read_file(pair.vector, layer=pair.layer)
        if gdf.crs is None:
            raise NoCRSError(f"{pair.vector} has no CRS; assign one (ogr2ogr -a_srs)")
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(self.crs)
        if pair.class_field is not None:
            if pair.class_field not in gdf.columns:
                raise InputError(f"{pair.vector} has no field {pair.class_field!r}; its fields are "
                                 f"{', '.join(map(str, gdf.columns))}")
            try:
                values = gdf[pair.class_field].astype("int64").to_numpy()
            except (TypeError, ValueError) as exc:
                raise InputError(f"{pair.vector}: field {pair.class_field!r} must hold integer class ids") from exc
        else:
            values = np.full(len(gdf), int(pair.class_value or 0), np.int64)
        self.geoms = gdf.geometry.reset_index(drop=True)
        self.values = values
        env = self.geoms.envelope.area.to_numpy()
        area = self.geoms.area.to_numpy()
        self.boxes_only = bool(len(area)) and bool(np.all(np.abs(env - area) <= 1e-9 * np.maximum(env, 1e-12)))

    def instances(self, row: int, col: int, side: int) -> list[Instance]:
        import shapely
        from affine import Affine

        from geoseg.io.rasterize import burn

        tr = self.transform * Affine.translation(col, row)
        x0, y0 = tr * (0, 0)
        x1, y1 = tr * (side, side)
        hits = np.sort(self.geoms.sindex.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))))
        out = []
        for k in hits:  # each feature alone: touching objects stay apart
            mask = burn([self.geoms.iloc[k]], [1], tr, (side, side), dtype="uint8") > 0
            out.append((mask, int(self.values[k])))
        return out


def open_instance_sources(job: InstanceTrainJob) -> list[_Source]:
    """Every training source of the job, checked (files, grids, fields) before any training."""
    from geoseg.methods.training.chips import ChipLayout, list_chips

    sources: list[_Source] = []
    for p in job.pairs:
        if p.vector is not None:
            sources.append(_VectorSource(p))
        else:
            assert p.instances is not None and p.class_value is not None
            sources.append(_IdRasterSource(p.image, p.instances, p.class_value))
    if job.chips is not None:
        assert job.chip_class is not None
        for chip in list_chips(job.chips, ChipLayout(images="images", masks="instances")):
            sources.append(_IdRasterSource(chip.image, chip.mask, job.chip_class, georeferenced=False))
    counts = {s.count for s in sources}
    if len(counts) != 1:
        raise InputError(f"training images have different band counts ({sorted(counts)}); use images with the same bands")
    return sources


# --- samples ----------------------------------------------------------------------------------


def _window(src: _Source, side: int, rng: np.random.Generator) -> tuple[int, int]:
    row = int(rng.integers(0, max(1, src.height - side + 1)))
    col = int(rng.integers(0, max(1, src.width - side + 1)))
    return row, col


def band_stats(sources: list[_Source], side: int, n: int, rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of the valid pixels of ``n`` random windows."""
    acc: list[np.ndarray] = []
    for k in range(n):
        src = sources[k % len(sources)]
        data, valid = src.read(*_window(src, side, rng), side)
        acc.append(data[:, valid])
    px = np.concatenate(acc, axis=1).astype(np.float64)
    if px.shape[1] == 0:
        raise InputError("the training windows hold no valid pixel; check the images' nodata and masks")
    std = np.maximum(px.std(axis=1), 1e-6)
    return px.mean(axis=1).tolist(), std.tolist()


def _augment(x: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(0, 4))
    x, masks = np.rot90(x, k, axes=(1, 2)), np.rot90(masks, k, axes=(1, 2))
    if rng.random() < 0.5:
        x, masks = x[:, :, ::-1], masks[:, :, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(masks)


def sample(src: _Source, side: int, mean: np.ndarray, std: np.ndarray, lut: dict[int, int], min_px: int,
           rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One random window: the normalised image and torchvision targets (boxes x0 y0 x1 y1, labels 1.., masks)."""
    from geoseg.methods.deeplab import normalise

    row, col = _window(src, side, rng)
    data, valid = src.read(row, col, side)
    insts = [(m & valid, c) for m, c in src.instances(row, col, side) if c in lut]
    insts = [(m, c) for m, c in insts if np.count_nonzero(m) >= min_px]
    masks = np.stack([m for m, _ in insts]) if insts else np.zeros((0, side, side), bool)
    x, masks = _augment(normalise(data, valid, mean, std), masks, rng)
    boxes = np.zeros((len(insts), 4), np.float32)
    for k in range(len(insts)):
        rows, cols = np.nonzero(masks[k].any(axis=1))[0], np.nonzero(masks[k].any(axis=0))[0]
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    labels = np.array([lut[c] for _, c in insts], np.int64)
    return x, {"boxes": boxes, "labels": labels, "masks": masks.astype(np.uint8)}


# --- the loop ---------------------------------------------------------------------------------


def train_maskrcnn(job: InstanceTrainJob) -> MaskRCNNMeta:
    """Train, save ``job.checkpoint`` (safetensors + JSON sidecar) after every epoch, return its metadata."""
    import torch

    from geoseg.methods.deeplab import resolve_device
    from geoseg.methods.maskrcnn import build_maskrcnn, load_init_weights, save_maskrcnn

    t0 = time.perf_counter()
    if job.threads:
        torch.set_num_threads(job.threads)
    rng = np.random.default_rng(job.seed)
    torch.manual_seed(job.seed)
    sources = open_instance_sources(job)
    side = job.tile_size + 2 * job.tile_overlap
    mean, std = band_stats(sources, side, job.norm_windows, rng)
    boxes = any(isinstance(s, _VectorSource) and s.boxes_only for s in sources)
    if boxes:
        warnings.warn("every training polygon is an axis-aligned rectangle: the annotations are boxes, so the model "
                      "learns box-shaped masks (recorded as masks: boxes in the checkpoint)", BoxMasksWarning,
                      stacklevel=2)
    first = sources[0]
    meta = MaskRCNNMeta(
        backbone=job.backbone, fpn_channels=job.fpn_channels, anchor_sizes=job.anchor_sizes,
        in_channels=first.count, band_names=first.band_names, band_mean=mean, band_std=std, classes=job.classes,
        tile_size=job.tile_size, tile_overlap=job.tile_overlap, max_detections=job.max_detections,
        masks="boxes" if boxes else "masks", resolution=first.resolution,
        crs=first.crs.to_wkt() if first.crs is not None else None,
    )
    model = build_maskrcnn(meta)
    if job.init_weights is not None:
        skipped = load_init_weights(model, job.init_weights)
        log.info("started from %s (%d tensors of other shapes left as built)", job.init_weights, len(skipped))
    dev = resolve_device(job.device)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job.lr, weight_decay=job.weight_decay)
    total = job.epochs * job.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=job.lr, total_steps=total, pct_start=0.1)
    lut = {c.id: k + 1 for k, c in enumerate(job.classes)}
    weights = np.array([s.height * s.width for s in sources], np.float64)
    weights /= weights.sum()
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    history = []
    for epoch in range(1, job.epochs + 1):
        losses = []
        for _ in range(job.steps_per_epoch):
            batch = [sample(sources[int(rng.choice(len(sources), p=weights))], side, m, s, lut, job.min_instance_px, rng)
                     for _ in range(job.batch_size)]
            images = [torch.from_numpy(x).to(dev) for x, _ in batch]
            targets = [{k: torch.from_numpy(v).to(dev) for k, v in t.items()} for _, t in batch]
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - t0, 1)}
        history.append(row)
        log.info("epoch %d: loss %.4f", epoch, row["train_loss"])
        meta = meta.model_copy(update={"training": {
            "epochs": epoch, "steps_per_epoch": job.steps_per_epoch, "batch_size": job.batch_size,
            "seconds": row["seconds"], "history": history, "images": [str(src.image) for src in sources],
            "init_weights": str(job.init_weights) if job.init_weights else None,
            "masks_from": "boxes (box-shaped masks)" if boxes else "instance masks"}})
        save_maskrcnn(model, meta, job.checkpoint)
        if not math.isfinite(row["train_loss"]):
            raise InputError(f"training diverged at epoch {epoch} (loss {row['train_loss']}); lower lr")
    return meta
