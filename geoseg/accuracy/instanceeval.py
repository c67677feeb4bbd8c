"""Score an instance raster against reference instances, chunk by chunk: overlaps summed, figures on the client.

Reference instances are either

* the features of a vector layer, **one instance per feature** (crown or building footprints):
  each feature is burnt on its own, so overlapping annotations stay separate instances and none is
  merged with its neighbour by rasterisation; a feature's class is its ``field`` value or ``value``;
* an instance raster (ids, 0 or nodata = none), read onto the label grid as references are
  (nearest), all of one class ``value``.

Pixels follow rasterio's rule (a pixel belongs to a polygon when its centre does). Each chunk returns
its (predicted, reference) overlap counts and the reference instances' pixel counts in it; the
figures come from :mod:`geoseg.accuracy.instancemetrics`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg.accuracy.instancemetrics import ClassInstanceScore, Overlaps, score_instances
from geoseg.accuracy.objectstats import overlap_pairs
from geoseg.errors import InputError
from geoseg.geo import ChunkGrid, Window
from geoseg.io.atomic import write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceInstances:
    """Reference instances on the label grid's CRS: features (WKB, pixel bounds) or a raster reference."""

    classes: np.ndarray  # class of instance id k at index k - 1
    wkb: tuple[bytes, ...] = ()
    bounds: np.ndarray | None = None  # (n, 4) minx, miny, maxx, maxy in the grid's CRS
    raster: Any = None  # a geoseg.accuracy.reference.RasterReference

    @property
    def n(self) -> int:
        return int(self.classes.size)


def open_reference_instances(
    path: str | Path, grid: Any, *, field: str | None = None, value: int | None = None
) -> ReferenceInstances:
    """Reference instances for a label raster on ``grid``: a vector layer (``field`` or ``value``) or an
    instance raster (``value``: the class of every instance)."""
    from geoseg.accuracy.reference import RasterReference, open_reference

    if (field is None) == (value is None):
        raise InputError("reference instances need their class: give the class field (field) or one class (value)")
    # an instance raster's 0 is "no instance", not fill to warn of
    ref = open_reference(str(path), None, grid, warn_fill=False) if field is None and _is_raster(path) else None
    if isinstance(ref, RasterReference):
        return _raster_instances(ref, grid, int(value))  # type: ignore[arg-type]
    return _vector_instances(path, grid, field, value)


def _is_raster(path: str | Path) -> bool:
    from geoseg.io.opener import UnreadableRaster, open_raster

    try:
        with open_raster(str(path), "reference"):
            return True
    except UnreadableRaster:
        return False


def _raster_instances(ref: Any, grid: Any, value: int) -> ReferenceInstances:
    """An instance raster's ids are taken as they are (1..max; ids absent from the grid are not scored)."""
    from geoseg.io.opener import open_raster

    with open_raster(ref.path, "reference") as src:
        top = 0
        for _, window in src.block_windows(1):
            top = max(top, int(src.read(1, window=window).max()))
    return ReferenceInstances(classes=np.full(top, value, np.int64), raster=ref)


def _vector_instances(path: str | Path, grid: Any, field: str | None, value: int | None) -> ReferenceInstances:
    import geopandas as gpd

    from geoseg.io.opener import check_vector

    check_vector(path, "reference instances")  # by content: a disguised OGR VRT is never parsed
    try:
        frame = gpd.read_file(str(path))
    except Exception as exc:  # any driver error is a bad reference for the user
        raise InputError(f"reference instances {path} cannot be read as a vector layer: {exc}") from exc
    if frame.crs is None:
        raise InputError(f"reference instances {path} have no CRS; set one (ogr2ogr -a_srs EPSG:XXXX)")
    if field is not None and field not in frame.columns:
        raise InputError(f"reference instances {path} have no field {field!r}; fields: {', '.join(map(str, frame.columns))}")
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()].to_crs(grid.crs)
    if field is not None:
        cls = frame[field].to_numpy()
        if not np.issubdtype(cls.dtype, np.integer):
            raise InputError(f"field {field!r} of {path} must hold integer class ids, it holds {cls.dtype}")
    else:
        cls = np.full(len(frame), int(value), np.int64)  # type: ignore[arg-type]
    geoms = frame.geometry.make_valid()
    return ReferenceInstances(classes=np.asarray(cls, np.int64), wkb=tuple(geoms.to_wkb()),
                              bounds=np.asarray(geoms.bounds.to_numpy(), np.float64))


@dataclass(frozen=True)
class _ChunkScore:
    """One chunk: the predicted instances read from the store, the reference burnt or read on the window.

    Returns the overlaps and reference pixel counts, and for both sides each instance's first pixel in the
    chunk (row-major global index) with its region slot there (0 without regions)."""

    store: str
    array: str
    grid: ChunkGrid
    ref: ReferenceInstances
    regions: Any = None
    #: (store, array) of the labels: the reference is read only where they have data (not 255)
    map_valid: tuple[str, str] | None = None

    def __call__(self, window: Window, features: np.ndarray) -> tuple[np.ndarray, ...]:
        from geoseg.io.labelstore import read_label_window
        from geoseg.legend import NODATA_LABEL

        pred = read_label_window(self.store, window, self.array)
        sub = self.grid.window_grid(window)
        slots = _slots(self.regions, sub)
        pred_first = _first_pixels(pred, window, self.grid.width, slots)
        mapped = (read_label_window(self.map_valid[0], window, self.map_valid[1]) != NODATA_LABEL
                  if self.map_valid is not None else np.ones(pred.shape, bool))
        if self.ref.raster is not None:
            from geoseg.accuracy.reference import reference_window

            values, valid = reference_window(self.ref.raster, sub)
            ids = np.where(valid & mapped & (values > 0), values, 0).astype(np.int64)
            p, r, inter = overlap_pairs(pred, ids)
            found, count = np.unique(ids[ids > 0], return_counts=True)
            return (p, r, inter, found, count, *pred_first, *_first_pixels(ids, window, self.grid.width, slots))
        burnt = _burn_each(pred, sub, features, self.ref, window, self.grid.width, slots, mapped)
        return (*burnt[:5], *pred_first, *burnt[5:])


def _slots(regions: Any, sub: Any) -> np.ndarray | None:
    if regions is None:
        return None
    from geoseg.accuracy.regions import regions_window

    return regions_window(regions, sub)


def _first_pixels(
    ids: np.ndarray, window: Window, width: int, slots: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each id of ``ids`` (0 = none) in the window: the id, its first pixel (global row-major index), its slot."""
    rows, cols = np.nonzero(ids)
    found, at = np.unique(ids[rows, cols].astype(np.int64), return_index=True)
    r, c = rows[at], cols[at]
    slot = slots[r, c].astype(np.int64) if slots is not None else np.zeros(found.size, np.int64)
    return found, (r + window.row_off).astype(np.int64) * width + c + window.col_off, slot


def _burn_each(
    pred: np.ndarray, sub: Any, features: np.ndarray, ref: ReferenceInstances, window: Window, width: int,
    slots: np.ndarray | None, mapped: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Burn each feature alone over its pixel box in the window, where the map has data (``mapped``): overlaps
    with predictions, its pixel count, its first pixel (global row-major index) and the region slot there."""
    import shapely
    from rasterio.features import rasterize
    from rasterio.windows import from_bounds

    ps, rs, ns, fs, cs, firsts, fslots = [], [], [], [], [], [], []
    bounds = ref.bounds if ref.bounds is not None else np.empty((0, 4))
    for k in features.tolist():
        geom = shapely.from_wkb(ref.wkb[k])
        win = from_bounds(*bounds[k], transform=sub.transform).round_offsets(op="floor").round_lengths(op="ceil")
        r0, c0 = max(int(win.row_off), 0), max(int(win.col_off), 0)
        r1 = min(int(win.row_off + win.height) + 1, sub.height)
        c1 = min(int(win.col_off + win.width) + 1, sub.width)
        if r1 <= r0 or c1 <= c0:
            continue
        t = sub.transform * Affine.translation(c0, r0)
        m = rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=t, fill=0, dtype="uint8").astype(bool)
        m &= mapped[r0:r1, c0:c1]
        n = int(m.sum())
        if n == 0:
            continue
        fs.append(k + 1)
        cs.append(n)
        fr, fc = divmod(int(np.argmax(m.ravel())), m.shape[1])
        firsts.append((r0 + fr + window.row_off) * width + c0 + fc + window.col_off)
        fslots.append(int(slots[r0 + fr, c0 + fc]) if slots is not None else 0)
        hit, cnt = np.unique(pred[r0:r1, c0:c1][m], return_counts=True)
        keep = hit > 0
        ps.append(hit[keep].astype(np.int64))
        rs.append(np.full(int(keep.sum()), k + 1, np.int64))
        ns.append(cnt[keep].astype(np.int64))
    def cat(xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs) if xs else np.empty(0, np.int64)

    found = np.array(fs, np.int64)
    return (cat(ps), cat(rs), cat(ns), found, np.array(cs, np.int64), found, np.array(firsts, np.int64),
            np.array(fslots, np.int64))


def _features_per_window(ref: ReferenceInstances, grid: ChunkGrid, windows: Sequence[Window]) -> list[np.ndarray]:
    if ref.raster is not None or ref.bounds is None or ref.n == 0:
        return [np.empty(0, np.int64) for _ in windows]
    import shapely

    bounds = ref.bounds
    tree = shapely.STRtree(shapely.box(*bounds.T))
    out = []
    for w in windows:
        b = grid.window_grid(w).bounds
        out.append(np.sort(tree.query(shapely.box(*b))).astype(np.int64))
    return out


def evaluate_instances(
    store: str | Path, pred_cls: np.ndarray, pred_size: np.ndarray, grid: ChunkGrid, ref: ReferenceInstances, *,
    pred_score: np.ndarray | None = None, array: str = "instances", client: Any = None,
    map_valid: tuple[str | Path, str] | None = None,
) -> tuple[list[ClassInstanceScore], Overlaps]:
    """Per-class instance accuracy of an instance store (``pred_cls``/``pred_size`` per id) against ``ref``."""
    scored = evaluate_instance_regions(store, pred_cls, pred_size, grid, ref, pred_score=pred_score, array=array,
                                       client=client, map_valid=map_valid)
    return scored.scene, scored.overlaps


@dataclass(frozen=True)
class RegionInstanceScores:
    """The scene's scores, each region's (in the order of ``region_ids``) and the summed overlaps.

    Each instance belongs to the region of its first pixel (row-major; where regions overlap, the one
    the evaluation's region raster gives there); a region is scored as a scene of its own instances."""

    scene: list[ClassInstanceScore]
    regions: list[tuple[Any, list[ClassInstanceScore]]]
    overlaps: Overlaps
    #: Reference features inside the scene covering no pixel centre where the map has data: not scored.
    unscored_reference: int = 0


def evaluate_instance_regions(
    store: str | Path, pred_cls: np.ndarray, pred_size: np.ndarray, grid: ChunkGrid, ref: ReferenceInstances, *,
    pred_score: np.ndarray | None = None, array: str = "instances", client: Any = None, regions: Any = None,
    classes: Sequence[int] | None = None, map_valid: tuple[str | Path, str] | None = None,
) -> RegionInstanceScores:
    """:func:`evaluate_instances`, and per region of ``regions`` (opened as for evaluation) too.

    ``pred_cls`` of an id with no pixel may be -1 (not counted). ``classes``: the classes scored
    (default: every class seen). ``map_valid``: (store, array) of the labels the instances came from; the
    reference is scored only where they have data, as pixel scores are (a crown under a cloud is no miss)."""
    windows = list(grid.windows())
    feats = _features_per_window(ref, grid, windows)
    valid_from = (str(map_valid[0]), map_valid[1]) if map_valid is not None else None
    task = _ChunkScore(str(store), array, grid, ref, regions, valid_from)
    if client is not None:
        parts = client.gather(client.map(task, windows, feats, pure=False))
    else:
        parts = [task(w, f) for w, f in zip(windows, feats)]
    p = np.concatenate([x[0] for x in parts])
    r = np.concatenate([x[1] for x in parts])
    n = np.concatenate([x[2] for x in parts])
    ref_size = np.zeros(ref.n, np.int64)
    for x in parts:
        np.add.at(ref_size, x[3] - 1, x[4])
    if p.size:
        m = int(r.max()) + 1
        u, inv = np.unique(p * m + r, return_inverse=True)
        p, r, n = u // m, u % m, np.bincount(inv, weights=n).astype(np.int64)
    # reference instances with no pixel on the grid (outside it, or thinner than a pixel centre) are not scored
    seen = ref_size > 0
    remap = np.cumsum(seen)
    pred_cls = np.asarray(pred_cls, np.int64)
    ov = Overlaps(p, remap[r - 1] if r.size else r, n, np.asarray(pred_size, np.int64), ref_size[seen],
                  pred_cls, ref.classes[seen], pred_score)
    scene = score_instances(ov, classes)
    unscored = _unscored_inside(ref, ~seen, grid)
    if regions is None:
        return RegionInstanceScores(scene, [], ov, unscored)
    pred_slot = _slot_of_first(pred_cls.size, [x[5:8] for x in parts])
    ref_slot = _slot_of_first(ref.n, [x[8:11] for x in parts])[seen]
    per_region = []
    for k, rid in enumerate(regions.ids, start=1):
        mine_p, mine_r = pred_slot == k, ref_slot == k
        keep = mine_p[ov.pred - 1] & mine_r[ov.ref - 1] if ov.pred.size else np.zeros(0, bool)
        sub = Overlaps(ov.pred[keep], ov.ref[keep], ov.inter[keep], ov.pred_size, ov.ref_size,
                       np.where(mine_p, pred_cls, -1), np.where(mine_r, ov.ref_cls, -1), pred_score)
        per_region.append((rid, score_instances(sub, [s.class_id for s in scene])))
    return RegionInstanceScores(scene, per_region, ov, unscored)


def _unscored_inside(ref: ReferenceInstances, unseen: np.ndarray, grid: ChunkGrid) -> int:
    """How many reference features meet the scene but cover no pixel centre there, warned about: recall
    leaves them out (features outside the scene are not its own and are not counted)."""
    if ref.bounds is None or not unseen.any():
        return 0
    left, bottom, right, top = grid.grid.bounds
    b = ref.bounds[unseen]
    n = int(((b[:, 0] < right) & (b[:, 2] > left) & (b[:, 1] < top) & (b[:, 3] > bottom)).sum())
    if n:
        log.warning("%d reference instance(s) inside the scene cover no pixel centre where the map has data (smaller "
                    "than a pixel, or under its nodata): they are not scored, so n_ref and recall count only the %d "
                    "that do", n, int((~unseen).sum()))
    return n


def _slot_of_first(n: int, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per instance (index = id - 1): the region slot at its first pixel over all chunks (0: none)."""
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    slot = np.zeros(n, np.int64)
    for ids, at, sl in parts:
        if ids.size == 0:
            continue
        better = at < first[ids - 1]
        first[ids[better] - 1] = at[better]
        slot[ids[better] - 1] = sl[better]
    return slot


#: Columns of ``instance_metrics.csv`` after ``class_id`` and ``class_name``.
METRIC_COLUMNS = ("n_pred", "n_ref", "tp", "fp", "fn", "precision", "recall", "f1", "sq", "rq", "pq", "ap50", "ap",
                  "count_error", "relative_count_error")


def _metric_cells(s: ClassInstanceScore) -> list[Any]:
    vals = [getattr(s, c) for c in METRIC_COLUMNS]
    return [f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else v)
            for v in vals]


def write_instance_metrics(scores: Sequence[ClassInstanceScore], path: str | Path, names: Mapping[int, str]) -> Path:
    """``instance_metrics.csv``: one row per class, the figures of :class:`ClassInstanceScore`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class_id", "class_name", *METRIC_COLUMNS])
    for s in scores:
        w.writerow([s.class_id, names.get(s.class_id, ""), *_metric_cells(s)])
    return write_text_atomic(path, buf.getvalue())


def write_region_instance_metrics(scored: RegionInstanceScores, path: str | Path, names: Mapping[int, str]) -> Path:
    """``instance_metrics.csv`` of a job: a ``region`` column, the whole scene (``ALL``) first, then each region."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["region", "class_id", "class_name", *METRIC_COLUMNS])
    for region, scores in [("ALL", scored.scene), *scored.regions]:
        for s in scores:
            w.writerow([region, s.class_id, names.get(s.class_id, ""), *_metric_cells(s)])
    return write_text_atomic(path, buf.getvalue())
