"""Training data read from large rasters: sources, class-balanced window sampling, augmentation,
sample streams and band statistics (the held-out validation blocks: :mod:`.validation`).

Training reads random ``tile_size`` windows straight from the image and reference files
(never a whole raster), optionally class-balanced from a coarse decimated read of the
reference, so rare classes such as weeds are seen often. The reference is a raster of class
ids on the image grid (0 = unlabelled) or a vector layer burnt per window
(:func:`geoseg.io.rasterize.burn`). The bottom ``val_fraction`` of each image's rows is held
out: training windows never reach into it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import BandError, GridMismatchError, InputError, MissingFileError, NoCRSError
from geoseg.geo import GeoGrid, Window
from geoseg.io.bandroles import BandEvidence, BandInfo, band_role, implied_sensor
from geoseg.io.masks import feature_band_indexes, mask_kind
from geoseg.io.opener import check_vector, open_raster
from geoseg.io.sources import (
    Source,
    describe_source,
    place,
    read_source,
    refuse_palette,
    refuse_unapplied_units,
    refuse_unnamed_band,
)
from geoseg.io.units import apply_scaling, normalised
from geoseg.legend import ClassInfo
from geoseg.methods.deeplab import network_input
from geoseg.methods.indices import BandIndex, resolve_index
from geoseg.methods.scenestats import NetworkChannels, channel_statistics, mean_std, sample_file_channels
from geoseg.methods.training.augment import Augment
from geoseg.methods.training.config import TrainConfig, TrainPair

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Target value for pixels that do not count (unlabelled, unknown class, image nodata, padding).
IGNORE_INDEX = 255
#: The coarse reference used for class-balanced sampling is at most this many pixels per side.
COARSE_SIDE = 1024

# --------------------------------------------------------------------------------------------
# Sources: one image + reference, opened lazily per process
# --------------------------------------------------------------------------------------------


def _band_indexes(path: Path, ds: Any, wanted: list[str] | None) -> tuple[list[int], list[str]]:
    """Bands by name (any band, alpha too when named), else every value band: alpha is validity, as for inference."""
    names = [d if d else f"b{i + 1}" for i, d in enumerate(ds.descriptions)]
    if wanted is None:
        idx = list(feature_band_indexes(ds))
        return idx, [names[i - 1] for i in idx]
    lowered = [n.lower() for n in names]
    idx = []
    for w in wanted:
        if w.lower() not in lowered:
            raise BandError(f"{path} has no band {w!r}; its bands are {', '.join(names)}")
        idx.append(lowered.index(w.lower()) + 1)
    return idx, [names[i - 1] for i in idx]


class TrainSource:
    """A training or validation image with its reference and the rows ``[row_lo, row_hi)`` it may use."""

    def __init__(self, pair: TrainPair, bands: list[str] | None, lut: np.ndarray, rows: tuple[float, float],
                 apply_scale: bool = True, sensor: str | None = None) -> None:

        self.pair = pair
        self.lut = lut
        if not pair.image.is_file():
            raise MissingFileError(f"training image {pair.image} does not exist")
        with open_raster(pair.image, "chip", what="training image") as ds:
            if ds.crs is None or ds.transform.is_identity:
                raise NoCRSError(f"{pair.image} is not georeferenced; training needs a CRS and a geotransform")
            self.height, self.width = ds.height, ds.width
            self.transform, self.crs = ds.transform, ds.crs
            self.indexes, self.band_names = _band_indexes(pair.image, ds, bands)
            self.resolution = (abs(ds.transform.a) + abs(ds.transform.e)) / 2
        # read as inference reads an input: the same validity rule (nodata, NaN, alpha, GDAL mask) and retries
        self.grid = GeoGrid.of(self.height, self.width, self.transform, self.crs)
        self.source = place(describe_source(str(pair.image), tuple(self.indexes)), self.grid)
        refuse_palette(self.source, "training image")
        if bands is None:  # bands chosen by name are the config's word on which bands hold values
            refuse_unnamed_band(self.source, "training image")
        if pair.scale is not None or pair.offset is not None:  # the user's word on the units, as an input's
            n = len(self.indexes)
            scales, offsets = normalised([1.0 if pair.scale is None else pair.scale] * n,
                                         [0.0 if pair.offset is None else pair.offset] * n)
            self.source = replace(self.source, scales=scales, offsets=offsets)
        #: the file declares a scale/offset (GDAL band metadata): applied on read unless ``apply_scale`` is off,
        #: exactly as inference applies it, so the network learns the values it will be given
        self.declares_scale = bool(self.source.scales)
        if apply_scale:
            refuse_unapplied_units(self.source, "training image")
        else:
            self.source = replace(self.source, scales=(), offsets=())
        self.bands = _source_bands(self.source, self.band_names, sensor)
        self.ref_source: Source | None = None
        self.row_lo = round(rows[0] * self.height)
        self.row_hi = round(rows[1] * self.height)
        if self.row_hi - self.row_lo < 16:
            raise InputError(
                f"{pair.image}: only {self.row_hi - self.row_lo} rows left for this split;"
                " lower val_fraction or use a larger image"
            )
        self._vec: tuple[Any, np.ndarray] | None = None  # (geometries, class ids) of a vector reference
        if pair.reference is not None:
            if not pair.reference.is_file():
                raise MissingFileError(f"reference raster {pair.reference} does not exist")
            with open_raster(pair.reference, "chip", what="training reference") as rs:
                if len(values := feature_band_indexes(rs)) > 1:  # a Dynamic World export: band 1 is a probability
                    raise InputError(f"training reference {pair.reference} has {len(values)} bands: class ids are read "
                                     "from a one-band raster; write the band of class ids to its own file "
                                     f"(gdal_translate -b N {pair.reference.name} classes.tif) and give that")
                if (rs.height, rs.width) != (self.height, self.width) or not rs.transform.almost_equals(self.transform):
                    raise GridMismatchError(
                        f"reference {pair.reference} ({rs.width}x{rs.height}) is not on the grid of {pair.image} "
                        f"({self.width}x{self.height}); warp it onto the image grid first (gdalwarp -te/-tr)"
                    )
                # on the image's grid by the check above (a reference needs no CRS of its own)
                self.ref_source = Source(
                    path=str(pair.reference), grid=self.grid, bands=(1,), mask=mask_kind(rs, (1,)),
                    dtype=rs.dtypes[0], nodata=rs.nodata, block=tuple(rs.block_shapes[0]), descriptions=("class",),
                    offset=(0, 0), box=(0.0, 0.0, float(self.height), float(self.width)),
                )
        else:
            self._load_vector()

    def _load_vector(self) -> None:
        import geopandas as gpd

        pair = self.pair
        assert pair.vector is not None  # TrainPair holds exactly one of reference and vector
        if not pair.vector.exists():
            raise MissingFileError(f"vector reference {pair.vector} does not exist")
        check_vector(pair.vector, "vector reference")
        gdf = gpd.read_file(pair.vector, layer=pair.layer)
        if pair.class_field not in gdf.columns:
            raise InputError(
                f"{pair.vector} has no field {pair.class_field!r}; its fields are {', '.join(map(str, gdf.columns))}"
            )
        if gdf.crs is None:
            raise NoCRSError(f"{pair.vector} has no CRS; assign one (ogr2ogr -a_srs)")
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(self.crs)
        try:
            values = gdf[pair.class_field].astype("int64").to_numpy()
        except (TypeError, ValueError) as exc:
            raise InputError(f"{pair.vector}: field {pair.class_field!r} must hold integer class ids") from exc
        self._vec = (gdf.geometry.reset_index(drop=True), values)

    # -- reading ------------------------------------------------------------------------------

    def _rasterize(self, row: int, col: int, h: int, w: int, step: int = 1, all_touched: bool = False) -> np.ndarray:
        import shapely
        from affine import Affine

        from geoseg.io.rasterize import burn

        assert self._vec is not None  # sources without a reference raster load their vector first
        geoms, values = self._vec
        tr = self.transform * Affine.translation(col, row) * Affine.scale(step)
        x0, y0 = tr * (0, 0)
        x1, y1 = tr * (w, h)
        hits = geoms.sindex.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        hits = np.sort(hits)  # in file order: the last polygon wins, as for a raster burnt with GDAL
        vals = np.clip(values[hits], 0, 255)
        return burn(list(geoms.iloc[hits]), vals, tr, (h, w), dtype="uint8", fill=0, all_touched=all_touched)

    def read(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw bands ``(b, h, w)`` float32, validity ``(h, w)`` and target indexes ``(h, w)`` uint8.

        The bands and their validity come from the inputs' reader (:func:`geoseg.io.sources.read_source`),
        so a pixel training ignores is exactly one inference leaves unlabelled; reference pixels that are
        not valid (its nodata, alpha or mask) are ignored too.
        """
        window = Window(row, col, h, w)
        img, valid = self.read_bands(window)
        if self.ref_source is not None:
            ref, ref_valid = _on_window(self.ref_source, self.grid, window, None)
            target = self.lut[ref[0]]
            target[~ref_valid] = IGNORE_INDEX
        else:
            target = self.lut[self._rasterize(row, col, h, w)]
        target[~valid] = IGNORE_INDEX
        return img, valid, target

    def read_reflected(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`read` for a window that may reach past the image's edges: the pixels there are the image
        mirrored about its edge, as inference pads a scene's edge tiles (``np.pad`` ``reflect``), and their
        targets are ignored (they are no pixels of the image)."""
        top, left = max(0, -row), max(0, -col)
        bottom, right = max(0, row + h - self.height), max(0, col + w - self.width)
        if not (top or left or bottom or right):
            return self.read(row, col, h, w)
        # the part inside, grown to hold the rows and columns the mirror copies
        r0 = max(0, min(max(row, 0), self.height - 1 - bottom if bottom else self.height))
        r1 = min(self.height, max(min(row + h, self.height), top + 1))
        c0 = max(0, min(max(col, 0), self.width - 1 - right if right else self.width))
        c1 = min(self.width, max(min(col + w, self.width), left + 1))
        img, valid, target = self.read(r0, c0, r1 - r0, c1 - c0)
        pads = ((top, bottom), (left, right))
        img = np.pad(img, ((0, 0), *pads), mode="reflect")
        valid = np.pad(valid, pads, mode="reflect")
        target = np.pad(target, pads, constant_values=IGNORE_INDEX)
        dr, dc = row - (r0 - top), col - (c0 - left)
        return img[:, dr : dr + h, dc : dc + w], valid[dr : dr + h, dc : dc + w], target[dr : dr + h, dc : dc + w]

    def read_bands(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Raw bands ``(b, h, w)`` float32 (scale/offset applied unless ``apply_scale`` is off) and validity."""
        img, valid = _on_window(self.source, self.grid, window, np.float32)
        if self.source.scales:
            img = apply_scaling(img, self.source.scales, self.source.offsets)
        return img, valid

    def scene_statistics(self, indices: tuple[BandIndex, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the network channels over the whole image (:mod:`geoseg.methods.scenestats`): what
        ``normalisation: scene`` normalises this image's windows by, as inference does a scene's chunks."""
        channels = NetworkChannels(len(self.indexes), indices)
        try:
            return channel_statistics(sample_file_channels(self.read_bands, self.grid, channels))
        except InputError as exc:
            raise InputError(f"{self.pair.image}: {exc}") from None

    def dominant_share(self) -> float:
        """The share of the image's labelled pixels (on the coarse reference) that its largest class holds."""
        idx = self.lut[self.coarse_reference()[0]]
        counts = np.bincount(idx[idx != IGNORE_INDEX].ravel())
        return float(counts.max() / counts.sum()) if counts.size and counts.sum() else 0.0

    def coarse_reference(self) -> tuple[np.ndarray, int]:
        """The reference decimated to at most ``COARSE_SIDE`` per side (nearest), and the step."""
        from rasterio.enums import Resampling

        step = max(1, math.ceil(max(self.height, self.width) / COARSE_SIDE))
        ch, cw = math.ceil(self.height / step), math.ceil(self.width / step)
        if self.pair.reference is not None:
            with open_raster(self.pair.reference, "chip", what="training reference") as rs:
                return rs.read(1, out_shape=(ch, cw), resampling=Resampling.nearest), step
        return self._rasterize(0, 0, ch, cw, step=step, all_touched=True), step



def _source_bands(src: Source, names: list[str], sensor: str | None = None) -> tuple[BandInfo, ...]:
    """The chosen bands with their roles, found as for a job's input (:func:`geoseg.io.bandroles.band_role`:
    description, colour interpretation, a one-band file's name, and sensor band numbers (``B08``) through the
    job's ``sensor:`` or, as for inputs, Sentinel-2's table when a band is named ``B8A``)."""
    evidence = [BandEvidence(label=src.descriptions[k], described=bool(src.described[k]) if src.described else True,
                             colorinterp=src.colorinterp[k] if src.colorinterp else "") for k in range(len(names))]
    sensor = sensor or implied_sensor(ev.label for ev in evidence if ev.described)
    out = []
    for k, (name, ev) in enumerate(zip(names, evidence)):
        role, where, number = band_role(ev, sensor, src.count == 1, None, src.path)
        out.append(BandInfo(name=name, label=src.descriptions[k], role=role, source=where, number=number))
    return tuple(out)


def resolve_index_channels(texts: list[str], sources: list[TrainSource]) -> tuple[BandIndex, ...]:
    """The job's ``index_channels`` bound to the training bands by role; every image must have each role or band
    an index reads, at the same band position (refused otherwise: :class:`~geoseg.errors.BandRoleError`)."""
    out = []
    for text in texts:
        first: BandIndex | None = None
        for src in sources:
            try:
                index = resolve_index(text, src.bands)
            except InputError as exc:
                raise type(exc)(f"{src.pair.image}: index channel {text!r}: {exc}") from None
            if first is None:
                first = index
            elif index.refs != first.refs:
                raise BandError(f"index channel {text!r} reads bands {_shown(first)} in {sources[0].pair.image} "
                                f"but {_shown(index)} in {src.pair.image}; give the images the same band order")
        assert first is not None  # open_sources gives at least one source
        out.append(first)
    return tuple(out)


def _shown(index: BandIndex) -> str:
    return ", ".join(f"{name}=band {pos + 1}" for name, pos in index.refs)


def _on_window(src: Source, grid: GeoGrid, window: Window, dtype: type | None) -> tuple[np.ndarray, np.ndarray]:
    """``(bands, h, w)`` values (cast to ``dtype``) and validity of a file on its own grid; 0 and invalid outside it."""
    got = read_source(src, grid, window, "nearest")
    out = np.zeros((src.count, window.height, window.width), dtype=dtype or src.dtype)
    valid = np.zeros((window.height, window.width), dtype=bool)
    if got is not None:
        data, ok, where = got
        out[(slice(None), *where)] = data
        valid[where] = ok
    return out, valid


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
    train_src = [TrainSource(p, cfg.bands, lut, (0.0, 1.0 - hold), cfg.apply_scale, cfg.sensor) for p in cfg.pairs]
    if cfg.val_pairs:
        val_src = [TrainSource(p, cfg.bands, lut, (0.0, 1.0), cfg.apply_scale, cfg.sensor) for p in cfg.val_pairs]
    elif hold > 0:
        val_src = [TrainSource(p, cfg.bands, lut, (1.0 - hold, 1.0), cfg.apply_scale, cfg.sensor) for p in cfg.pairs]
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

    def __init__(self, sources: list[TrainSource], n_classes: int, tile: int, class_balanced: bool,
                 edge_margin: int = 0) -> None:
        self.sources = sources
        self.tile = tile
        #: how far a window may reach past an image's own edge (the stride of inference tiles, which reach that
        #: far into reflected pixels there); not past the edge of a split's rows inside the image
        self.edge_margin = edge_margin
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

    def _clip_start(self, centre: int, lo: int, hi: int, rng: np.random.Generator, end: int) -> tuple[int, int]:
        """A window start and size around ``centre`` inside ``[lo, hi)``, or up to ``edge_margin`` past 0 or
        ``end`` where those are the image's own edges. An image narrower than a tile gets whole tiles reaching
        past both its edges, as inference's tiles do (the margin, at least half a tile, always leaves room)."""
        whole = lo == 0 and hi == end and self.edge_margin > 0
        size = self.tile if whole else min(self.tile, hi - lo)
        start = centre - int(rng.integers(0, size))
        first = lo - self.edge_margin if lo == 0 else lo
        last = hi - size + (self.edge_margin if hi == end else 0)
        return int(np.clip(start, first, last)), size

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
        r, h = self._clip_start(pr, src.row_lo, src.row_hi, rng, src.height)
        c, w = self._clip_start(pc, 0, src.width, rng, src.width)
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
    """An endless stream of augmented, normalised training samples (a torch ``IterableDataset``).

    ``stats``: per source, the ``(mean, std)`` its windows are normalised by: the bands' statistics, then those
    of the ``indices`` (index channels after the bands); the training set's for every source, or each image's
    own (``normalisation: scene``). ``aug``: zoom and brightness/contrast (:mod:`.augment`) besides the flips
    and rotations.
    """

    def __init__(self, sampler: WindowSampler, stats: list[tuple[np.ndarray, np.ndarray]], seed: int,
                 indices: tuple[BandIndex, ...] = (), aug: Augment | None = None) -> None:
        self.sampler, self.stats, self.seed, self.indices = sampler, stats, seed, indices
        self.aug = aug or Augment(sampler.tile)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 7, info.id if info else 0])
        tile, aug = self.sampler.tile, self.aug
        while True:
            si, r, c, h, w = self.sampler.pick(rng)
            src = self.sampler.sources[si]
            img, valid, target = src.read_reflected(*aug.grow(r, c, h, w, src.row_lo, src.row_hi, src.width))
            x = network_input(img, valid, *self.stats[si], self.indices)
            x, target = aug.zoom(x, target, rng)
            x, target = _pad_to(x, target, tile)
            x, target = _augment(x, target, rng)
            yield aug.colour(x, rng), target.astype(np.int64)


def _batches(
    stream: _TrainStream, batch_size: int, num_workers: int
) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    import torch
    import torch.utils.data

    class _DS(torch.utils.data.IterableDataset):
        def __iter__(self):
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
    sampler: WindowSampler, n_windows: int, rng: np.random.Generator, indices: tuple[BandIndex, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over valid pixels of ``n_windows`` uniformly drawn training windows, then
    those of each of ``indices`` (computed from the window's bands) over its valid pixels where it is finite."""
    uniform = WindowSampler.__new__(WindowSampler)
    uniform.__dict__.update(sampler.__dict__, class_balanced=False, edge_margin=0)
    n_b = len(sampler.sources[0].indexes)
    s = np.zeros(n_b)
    ss = np.zeros(n_b)
    n = 0
    k = len(indices)
    s_idx, ss_idx, n_idx = np.zeros(k), np.zeros(k), np.zeros(k)
    for _ in range(n_windows):
        si, r, c, h, w = uniform.pick(rng)
        img, valid, _ = sampler.sources[si].read(r, c, h, w)
        v = img[:, valid].astype(np.float64)
        s += v.sum(axis=1)
        ss += (v * v).sum(axis=1)
        n += v.shape[1]
        for j, index in enumerate(indices):
            x = index.compute(img)[0][valid].astype(np.float64)
            x = x[np.isfinite(x)]
            s_idx[j] += x.sum()
            ss_idx[j] += (x * x).sum()
            n_idx[j] += x.size
    if n == 0:
        raise InputError("the sampled training windows hold no valid pixel; is the image all nodata?")
    empty = [indices[j].text for j in np.flatnonzero(n_idx == 0)]
    if empty:
        raise InputError(f"index channel {empty[0]!r} has no finite value on the sampled training windows")
    return mean_std(np.concatenate([s, s_idx]), np.concatenate([ss, ss_idx]), np.concatenate([np.full(n_b, n), n_idx]))
