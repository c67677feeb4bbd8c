"""Accuracy assessment: per-region confusion matrices, IoU and friends, as a Dask reduction.

Why a reduction: a label raster can be far larger than memory, but what accuracy needs is tiny.
Each chunk window of the label grid is read with the reference and the regions brought onto it
(:mod:`geoseg.accuracy.reference`), and its pixels are counted into a small 3-D array indexed by
(region, reference class, predicted label) in one compiled pass. Only these count arrays
travel and are summed; every figure is then computed from the sums, so it equals what
scikit-learn reports on the pixels themselves.

Conventions (documented once, used everywhere):

* Pixels where the labels are nodata (255) or the reference is nodata / missing (outside its
  extent, or not covered by any reference polygon) are left out of every figure and counted per
  region in ``nodata_label_px``, ``nodata_reference_px`` and ``excluded_px`` (either).
* Region ``"ALL"`` is the whole label raster, including pixels in no region.
* A *class mapping* turns label ids into reference class ids: ``"identity"``; ``"hungarian"``
  (optimal one-to-one assignment of clusters to classes on the overall confusion matrix, for
  k-means clusters); ``"many-to-one"`` (each cluster to its majority class); or a ``dict``.
  Labels left without a class ("unassigned") count as wrong for their reference class (a false
  negative there) and as a false positive for no class.
* Classes are the reference's legend (when the reference declares one), every reference value
  seen, and every class the mapped labels name. A class that never occurs still gets a row.
  Figures whose denominator is zero are NaN (scikit-learn would print 0 with a warning for
  IoU, or NaN with ``zero_division=np.nan``): IoU and F1 are NaN only for a class absent from
  both reference and prediction of that region, precision for a class never predicted, recall
  for a class absent from the reference.
* Region summary rows (``kind == "region"``) hold ``miou`` (mean IoU over the classes present in
  the reference or the prediction of that region, = ``iou`` on that row), macro precision /
  recall / F1 over the same classes ignoring NaN, overall accuracy and Cohen's kappa (NaN when
  undefined, like scikit-learn).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS

from geoseg._kernels.pixelcount import ValueRanges, dense_histogram, value_ranges
from geoseg.accuracy.metrics import confusion_metrics
from geoseg.accuracy.reference import (
    Reference,
    Regions,
    grid_regions,
    metres_per_unit,
    open_reference,
    open_regions,
    reference_pixels,
    regions_window_codes,
    window_bounds,
)
from geoseg.errors import InputError
from geoseg.geo import ChunkGrid, Window
from geoseg.io.labelstore import read_label_info, read_label_window
from geoseg.legend import PALETTE, ClassInfo

MAPPINGS = ("identity", "hungarian", "many-to-one")
MappingSpec = str | Mapping[int, int]

#: Columns of :meth:`Evaluation.metrics`, in order.
METRIC_COLUMNS = [
    "region_id", "kind", "class_id", "class_name", "iou", "precision", "recall", "f1",
    "tp", "fp", "fn", "support_px", "area_m2", "miou", "overall_accuracy", "kappa",
    "valid_px", "unassigned_px", "nodata_label_px", "nodata_reference_px", "excluded_px",
]  # fmt: skip
EXCLUDED_COLUMNS = ("nodata_label_px", "nodata_reference_px", "excluded_px")


# --------------------------------------------------------------------------------------------
# Counting one chunk
# --------------------------------------------------------------------------------------------


@dataclass
class ChunkCounts:
    """Pixel counts of one or more chunks, on the values that occurred there (sparse axes).

    ``counts[i, j, k]`` = valid pixels of region slot ``regions[i]`` with reference class
    ``ref_values[j]`` and label ``label_values[k]``; ``excluded[i]`` = (label nodata, reference
    nodata, either) pixel counts of that slot.
    """

    regions: np.ndarray
    ref_values: np.ndarray
    label_values: np.ndarray
    counts: np.ndarray
    excluded: np.ndarray

    @classmethod
    def empty(cls) -> ChunkCounts:
        e = np.empty(0, dtype=np.int64)
        return cls(e, e, e, np.zeros((0, 0, 0), np.int64), np.zeros((0, 3), np.int64))

    def __add__(self, other: ChunkCounts) -> ChunkCounts:
        return merge_counts([self, other])


def _compact(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of an integer array and each element's index among them.

    Linear time for small value ranges (the usual case), ``np.unique`` otherwise.

    >>> u, i = _compact(np.array([7, 3, 7, 5], dtype=np.int32))
    >>> u.tolist(), i.tolist()
    ([3, 5, 7], [2, 0, 2, 1])
    """
    if v.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.intp)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo < 1 << 16:
        s = v if lo == 0 else v - np.asarray(lo, dtype=v.dtype)
        present = np.bincount(s, minlength=hi - lo + 1) > 0
        lut = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(np.int64) + lo, lut[s]
    u, inv = np.unique(v, return_inverse=True)
    return u.astype(np.int64), inv.ravel()


#: Largest dense (region, reference, label) histogram counted directly per chunk; wider value
#: ranges are first renumbered to the values present (see :func:`_compact`).
MAX_BINS = 1 << 21


def _offset_axis(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Axis values ``lo..hi`` and each element's index ``v - lo`` (no sort; in ``v``'s dtype)."""
    return np.arange(lo, hi + 1, dtype=np.int64), (v - v.dtype.type(lo)) if lo else v


def _int_type(n: int) -> type:
    """Narrowest signed integer type holding ``0..n`` (narrow arithmetic is faster per pixel).

    >>> _int_type(56).__name__, _int_type(70000).__name__
    ('int16', 'int32')
    """
    return np.int16 if n < 2**15 else np.int32 if n < 2**31 else np.int64


def count_pixels(
    labels: np.ndarray, ref_values: np.ndarray, ref_invalid: int | None, slots: np.ndarray, label_nodata: int
) -> ChunkCounts:
    """Count (region slot, reference class, label) triples of one window.

    Reference pixels equal to ``ref_invalid`` (nodata, outside the reference; ``None``: none
    is) and nodata labels are counted in the same pass: invalid reference pixels go to an extra
    reference row and nodata labels are a label column; both are split off the small histogram
    afterwards, so no pixel-sized mask copies are made. Usual value ranges are counted by the
    compiled single pass of :mod:`geoseg._kernels.pixelcount`; wide ones are renumbered first
    (:func:`_count_renumbered`).
    """
    if labels.size == 0:
        return ChunkCounts.empty()
    r = value_ranges(slots, ref_values, ref_invalid, labels)
    spans = {"reg": r.reg_hi - r.reg_lo + 1, "ref": r.ref_hi - r.ref_lo + 2, "lab": r.lab_hi - r.lab_lo + 1}
    if math.prod(spans.values()) <= MAX_BINS:
        dense = dense_histogram(slots, ref_values, ref_invalid, labels, r)
        bounds = ((r.reg_lo, r.reg_hi), (r.ref_lo, r.ref_hi), (r.lab_lo, r.lab_hi))
        axes = [np.arange(lo, hi + 1, dtype=np.int64) for lo, hi in bounds]
        return _split_histogram(dense, axes[0], axes[1], axes[2], label_nodata)
    ref = ref_values.ravel()
    valid = np.ones(ref.size, bool) if ref_invalid is None else ref != ref_invalid
    return _count_renumbered(labels.ravel(), ref, valid, slots.ravel(), label_nodata, r, spans)


def _count_renumbered(
    lab: np.ndarray, ref: np.ndarray, valid: np.ndarray, reg: np.ndarray, label_nodata: int, r: ValueRanges, spans: dict
) -> ChunkCounts:
    """Numpy counting for value ranges too wide for a dense histogram: renumber the widest axes
    to the values present, then one ``bincount`` of the combined index."""
    all_valid = bool(valid.all())
    any_valid = r.ref_lo <= r.ref_hi
    compact = set()
    while math.prod(spans.values()) > MAX_BINS:
        widest = max((k for k in spans if k not in compact), key=lambda k: spans[k], default=None)
        if widest is None:
            break
        compact.add(widest)
        spans[widest] = 1  # stands for "small after renumbering" in this estimate

    reg_vals, reg_i = _compact(reg) if "reg" in compact else _offset_axis(reg, r.reg_lo, r.reg_hi)
    lab_vals, lab_i = _compact(lab) if "lab" in compact else _offset_axis(lab, r.lab_lo, r.lab_hi)
    if not any_valid:
        ref_vals, ref_i = np.empty(0, np.int64), np.zeros(ref.size, np.int16)
    elif "ref" in compact:
        ref_vals, ref_i = _compact(ref if all_valid else np.where(valid, ref, ref.dtype.type(r.ref_lo)))
    else:
        ref_vals, ref_i = _offset_axis(ref, r.ref_lo, r.ref_hi)  # invalid pixels wrap here; reset below
    n_ref = len(ref_vals)
    ng, nr, nl = len(reg_vals), n_ref + 1, len(lab_vals)
    # code = (region * nr + reference) * nl + label, in the narrowest integer types
    inner: np.ndarray = ref_i.astype(_int_type(nr * nl))
    if not all_valid:
        inner[~valid] = n_ref  # the extra "reference nodata" row
    inner *= nl
    inner += lab_i
    code: np.ndarray = reg_i.astype(_int_type(ng * nr * nl))
    code *= nr * nl
    code += inner
    dense = np.bincount(code, minlength=ng * nr * nl).astype(np.int64).reshape(ng, nr, nl)
    return _split_histogram(dense, reg_vals, ref_vals, lab_vals, label_nodata)


def _split_histogram(
    dense: np.ndarray, reg_vals: np.ndarray, ref_vals: np.ndarray, lab_vals: np.ndarray, label_nodata: int
) -> ChunkCounts:
    """Separate nodata from a chunk histogram and keep only the values that occur."""
    n_ref = len(ref_vals)
    j = int(np.searchsorted(lab_vals, label_nodata))
    has_nd = j < len(lab_vals) and lab_vals[j] == label_nodata
    lab_nd = dense[:, :, j].sum(axis=1) if has_nd else np.zeros(len(reg_vals), np.int64)
    ref_nd = dense[:, n_ref, :].sum(axis=1)
    both = dense[:, n_ref, j] if has_nd else 0
    excluded = np.stack([lab_nd, ref_nd, lab_nd + ref_nd - both], axis=1).astype(np.int64)
    core = dense[:, :n_ref, :]
    if has_nd:
        core = np.delete(core, j, axis=2)
        lab_vals = np.delete(lab_vals, j)
    keep_g = dense.sum(axis=(1, 2)) > 0
    keep_r = core.sum(axis=(0, 2)) > 0
    keep_l = core.sum(axis=(0, 1)) > 0
    return ChunkCounts(
        regions=reg_vals[keep_g].astype(np.int64),
        ref_values=ref_vals[keep_r].astype(np.int64),
        label_values=lab_vals[keep_l].astype(np.int64),
        counts=np.ascontiguousarray(core[np.ix_(keep_g, keep_r, keep_l)]),
        excluded=excluded[keep_g],
    )


def merge_counts(parts: Iterable[ChunkCounts]) -> ChunkCounts:
    """Sum count arrays whose axes differ: align every part on the union of its axes."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return ChunkCounts.empty()
    regions = _union(p.regions for p in parts)
    refs = _union(p.ref_values for p in parts)
    labs = _union(p.label_values for p in parts)
    counts = np.zeros((len(regions), len(refs), len(labs)), np.int64)
    excluded = np.zeros((len(regions), 3), np.int64)
    for p in parts:
        ri = np.searchsorted(regions, p.regions)
        counts[np.ix_(ri, np.searchsorted(refs, p.ref_values), np.searchsorted(labs, p.label_values))] += p.counts
        excluded[ri] += p.excluded
    return ChunkCounts(regions, refs, labs, counts, excluded)


def _union(arrays: Iterable[np.ndarray]) -> np.ndarray:
    arrays = list(arrays)
    if not arrays:
        return np.empty(0, np.int64)
    return np.unique(np.concatenate([np.asarray(a, np.int64) for a in arrays]))


@dataclass(frozen=True)
class _Plan:
    """What a task needs to count one window: paths and georeferencing only."""

    labels_path: str
    label_nodata: int
    crs_wkt: str
    grid: ChunkGrid
    reference: Reference
    regions: Regions | None


def count_window(plan: _Plan, window: Window) -> ChunkCounts:
    """Task: read labels, reference and regions on one window and count them."""
    transform = plan.grid.window_transform(window)
    shape = (window.height, window.width)
    labels = read_label_window(plan.labels_path, window)
    ref, ref_invalid = reference_pixels(plan.reference, plan.crs_wkt, transform, shape)
    codes, slot_of = regions_window_codes(plan.regions, plan.crs_wkt, transform, shape)
    counts = count_pixels(labels, ref, ref_invalid, codes, plan.label_nodata)
    return replace(counts, regions=slot_of[counts.regions])  # increasing: stays sorted


def _sum_counts(parts: list[ChunkCounts]) -> ChunkCounts:
    return merge_counts(parts)


def _reduce(plan: _Plan, windows: Sequence[Window], client: Any = None, fan_in: int = 16) -> ChunkCounts:
    """Count every window as a Dask task and tree-sum the results (on ``client`` if given)."""
    import dask
    from dask import delayed

    plan_d = delayed(plan, pure=True)
    parts = [delayed(count_window, pure=True)(plan_d, w) for w in windows]
    while len(parts) > 1:
        parts = [delayed(_sum_counts, pure=True)(parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    if client is not None:
        return client.compute(parts[0]).result()
    return dask.compute(parts[0])[0]


# --------------------------------------------------------------------------------------------
# Class mapping
# --------------------------------------------------------------------------------------------


def hungarian_mapping(
    confusion: np.ndarray, ref_values: Sequence[int] | np.ndarray, label_values: Sequence[int] | np.ndarray
) -> dict[int, int]:
    """One-to-one label → class assignment maximising matched pixels (``confusion`` is ref × label).

    >>> hungarian_mapping(np.array([[0, 9], [8, 1]]), [1, 2], [0, 1])
    {0: 2, 1: 1}
    """
    from scipy.optimize import linear_sum_assignment

    if confusion.size == 0:
        return {}
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return {int(label_values[c]): int(ref_values[r]) for r, c in sorted(zip(rows, cols), key=lambda rc: rc[1])}


def majority_mapping(
    confusion: np.ndarray, ref_values: Sequence[int] | np.ndarray, label_values: Sequence[int] | np.ndarray
) -> dict[int, int]:
    """Each label → the reference class it overlaps most (ties: smallest class id); unseen labels stay unassigned.

    >>> majority_mapping(np.array([[5, 1, 0], [2, 7, 0]]), [1, 2], [0, 1, 2])
    {0: 1, 1: 2}
    """
    out = {}
    for j, lab in enumerate(label_values):
        col = confusion[:, j]
        if col.sum() > 0:
            out[int(lab)] = int(ref_values[int(np.argmax(col))])
    return out


def resolve_mapping(
    spec: MappingSpec, confusion: np.ndarray, ref_values: Sequence[int] | np.ndarray,
    label_values: Sequence[int] | np.ndarray,
) -> dict[int, int]:
    """Turn a mapping spec into ``{label id: reference class id}`` (absent = unassigned)."""
    if isinstance(spec, Mapping):
        return {int(k): int(v) for k, v in spec.items()}
    if spec == "identity":
        return {int(v): int(v) for v in label_values}
    if spec == "hungarian":
        return hungarian_mapping(confusion, ref_values, label_values)
    if spec == "many-to-one":
        return majority_mapping(confusion, ref_values, label_values)
    raise InputError(f"unknown class mapping {spec!r}; use one of {', '.join(MAPPINGS)} or a dict label → class")


def mapped_confusion(
    raw: np.ndarray, ref_values: Sequence[int] | np.ndarray, label_values: Sequence[int] | np.ndarray,
    mapping: Mapping[int, int], class_ids: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """Collapse raw counts ``(..., ref, label)`` to ``(..., K, K + 1)`` over ``class_ids``.

    Rows are reference classes, columns the classes the labels map to, and a last column for
    labels that map to no class (unassigned).
    """
    k = len(class_ids)
    pos = {int(c): i for i, c in enumerate(class_ids)}
    a = np.zeros((len(ref_values), k), np.int64)
    a[np.arange(len(ref_values)), [pos[int(v)] for v in ref_values]] = 1
    b = np.zeros((len(label_values), k + 1), np.int64)
    cols = [pos.get(mapping[int(v)], k) if int(v) in mapping else k for v in label_values]
    b[np.arange(len(label_values)), cols] = 1
    return a.T @ raw @ b


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Evaluation:
    """Summed confusion counts per region, and everything needed to turn them into figures.

    ``counts[g, i, j]``: valid pixels of region ``region_ids[g]`` (``region_ids[0] == "ALL"``,
    the whole raster) with reference class ``reference_values[i]`` and label ``label_values[j]``.
    ``excluded[g]``: (label nodata, reference nodata, either) pixels of that region.
    ``mapping``: label id → reference class id used for the figures (absent = unassigned).
    """

    counts: np.ndarray
    region_ids: list
    reference_values: np.ndarray
    label_values: np.ndarray
    excluded: np.ndarray
    mapping: dict[int, int]
    mapping_method: str
    class_ids: np.ndarray
    class_names: dict[int, str]
    class_colors: dict[int, str]
    label_names: dict[int, str]
    pixel_area_m2: float
    labels_path: Path | None = None
    crs_wkt: str = ""
    transform: Affine = Affine.identity()
    shape: tuple[int, int] = (0, 0)
    reference: Reference | None = field(default=None, repr=False)
    regions: Regions | None = field(default=None, repr=False)

    # -- matrices ------------------------------------------------------------------------
    def mapped(self) -> np.ndarray:
        """Confusion matrices over classes, ``(G, K, K + 1)``; last column = unassigned labels."""
        return mapped_confusion(self.counts, self.reference_values, self.label_values, self.mapping, self.class_ids)

    def _region_index(self, region: Any) -> int:
        for i, r in enumerate(self.region_ids):
            if r == region or str(r) == str(region):
                return i
        raise KeyError(f"no region {region!r}; regions are 'ALL' and the ids of the regions layer")

    def confusion(self, region: Any = "ALL", mapped: bool = True) -> pd.DataFrame:
        """Confusion matrix of one region: rows = reference class, columns = predicted class.

        ``mapped=False`` shows the raw label ids as columns (useful for k-means clusters).
        An ``unassigned`` column appears when some labels map to no class.
        """
        g = self._region_index(region)
        if not mapped:
            df = pd.DataFrame(self.counts[g], index=self.reference_values.tolist(), columns=self.label_values.tolist())
            df.index.name, df.columns.name = "reference", "label"
            return df
        m = self.mapped()[g]
        cols: list[Any] = self.class_ids.tolist()
        if m[:, -1].sum() > 0 or any(int(v) not in self.mapping for v in self.label_values):
            cols.append("unassigned")
        else:
            m = m[:, :-1]
        df = pd.DataFrame(m, index=self.class_ids.tolist(), columns=pd.Index(cols, dtype=object))
        df.index.name, df.columns.name = "reference", "predicted"
        return df

    # -- tables --------------------------------------------------------------------------
    def metrics(self) -> pd.DataFrame:
        """Long table: per region one ``kind == "region"`` summary row then one row per class."""
        r = confusion_metrics(self.mapped())
        g, k = r["iou"].shape
        area = self.pixel_area_m2
        names = [self.class_names.get(int(c), str(c)) for c in self.class_ids]
        excl = self.excluded
        cls = pd.DataFrame(
            {
                "region_id": np.repeat(np.array(self.region_ids, dtype=object), k),
                "kind": "class",
                "class_id": pd.array(np.tile(self.class_ids, g), dtype="Int64"),
                "class_name": np.tile(np.array(names, dtype=object), g),
                **{m: r[m].ravel() for m in ("iou", "precision", "recall", "f1")},
                **{m: pd.array(r[m].ravel(), dtype="Int64") for m in ("tp", "fp", "fn")},
                "support_px": pd.array(r["support"].ravel(), dtype="Int64"),
                "area_m2": r["support"].ravel() * area,
            }
        )
        summ = pd.DataFrame(
            {
                "region_id": np.array(self.region_ids, dtype=object),
                "kind": "region",
                "class_id": pd.array([pd.NA] * g, dtype="Int64"),
                "class_name": "(all classes)",
                "iou": r["macro_iou"],
                "precision": r["macro_precision"],
                "recall": r["macro_recall"],
                "f1": r["macro_f1"],
                "tp": pd.array(r["correct"], dtype="Int64"),
                "fp": pd.array(r["fp"].sum(axis=1), dtype="Int64"),
                "fn": pd.array(r["fn"].sum(axis=1), dtype="Int64"),
                "support_px": pd.array(r["n"], dtype="Int64"),
                "area_m2": r["n"] * area,
                "miou": r["macro_iou"],
                "overall_accuracy": r["overall_accuracy"],
                "kappa": r["kappa"],
                "valid_px": pd.array(r["n"], dtype="Int64"),
                "unassigned_px": pd.array(r["unassigned"], dtype="Int64"),
                **{c: pd.array(excl[:, i], dtype="Int64") for i, c in enumerate(EXCLUDED_COLUMNS)},
            }
        )
        summ["_order"] = np.arange(g) * (k + 1)
        cls["_order"] = np.repeat(np.arange(g) * (k + 1), k) + np.tile(np.arange(1, k + 1), g)
        df = pd.concat([summ, cls], ignore_index=True).sort_values("_order", kind="stable")
        df = df.drop(columns="_order").reset_index(drop=True)
        for c in METRIC_COLUMNS:
            if c not in df:
                df[c] = np.nan
        df["region_id"] = df["region_id"].astype(object)
        return df[METRIC_COLUMNS]

    def regions_table(self) -> pd.DataFrame:
        """One row per region (incl. ``"ALL"``): ``miou``, accuracy, kappa, counts, ``iou_<id>`` per class."""
        m = self.metrics()
        summ = m[m["kind"] == "region"].set_index("region_id")
        out = summ[["miou", "overall_accuracy", "kappa", "valid_px", "unassigned_px", *EXCLUDED_COLUMNS]].copy()
        cls = m[m["kind"] == "class"]
        for cid in self.class_ids:
            col = cls[cls["class_id"] == int(cid)].set_index("region_id")["iou"]
            out[iou_column(int(cid), self.class_names.get(int(cid), ""))] = col
        return out.reset_index()

    def summary(self) -> pd.DataFrame:
        """Per-class figures of the whole scene, plus a mean row, for printing."""
        m = self.metrics()
        scene = m[m["region_id"].map(lambda v: isinstance(v, str) and v == "ALL")]
        cls = scene[scene["kind"] == "class"].set_index("class_name")
        top = scene[scene["kind"] == "region"].iloc[0]
        table = cls[["class_id", "iou", "precision", "recall", "f1", "support_px"]].copy()
        table.loc["mean (mIoU)"] = [pd.NA, top["miou"], top["precision"], top["recall"], top["f1"], top["support_px"]]
        table.attrs.update(
            overall_accuracy=float(top["overall_accuracy"]), kappa=float(top["kappa"]), miou=float(top["miou"])
        )
        return table

    def mapping_table(self) -> pd.DataFrame:
        """Label id → class id, with names and the label's pixel count overall."""
        scene = self.counts[0].sum(axis=0)
        rows = []
        for j, v in enumerate(self.label_values):
            c = self.mapping.get(int(v))
            rows.append(
                {
                    "label_id": int(v),
                    "label_name": self.label_names.get(int(v), str(v)),
                    "class_id": c,
                    "class_name": None if c is None else self.class_names.get(c, str(c)),
                    "pixels": int(scene[j]),
                }
            )
        df = pd.DataFrame(rows)
        df["class_id"] = df["class_id"].astype("Int64")
        return df


def iou_column(class_id: int, name: str) -> str:
    """Field name for a class's IoU in the regions layer: ``iou_<id>_<name>`` (ASCII, short).

    >>> iou_column(8, "artificial surface")
    'iou_8_artificial_surface'
    """
    slug = "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")[:24]
    return f"iou_{class_id}_{slug}" if slug and slug != str(class_id) else f"iou_{class_id}"


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def evaluate(
    labels_path: str | Path,
    reference: str | Path,
    *,
    reference_field: str | None = None,
    regions: str | Path | None = None,
    region_field: str | None = None,
    grid_cell_m: float | None = None,
    mapping: MappingSpec = "identity",
    client: Any = None,
    class_names: Mapping[int, str] | None = None,
) -> Evaluation:
    """Compare a label store with a reference map, per region, as one Dask reduction.

    ``reference``: a raster (band 1 = class ids) or a vector layer (``reference_field`` = integer
    class field), any CRS and resolution. ``regions``: a vector layer (``region_field`` = id,
    default the feature id) or ``grid_cell_m`` for square cells; neither = whole scene only.
    ``client``: a ``distributed.Client``; without one Dask's default scheduler runs the tasks.
    ``class_names`` names reference classes the reference itself does not name.
    """
    info = read_label_info(labels_path)
    shape = (info.height, info.width)
    ref, reg = open_evaluation_inputs(
        reference, info.crs, info.transform, shape, reference_field=reference_field, regions=regions,
        region_field=region_field, grid_cell_m=grid_cell_m, mapping=mapping,
    )
    plan = _Plan(str(info.path), info.nodata, info.crs.to_wkt(), info.grid, ref, reg)
    total = _reduce(plan, list(info.grid.windows()), client)
    return build_evaluation(
        total,
        legend=info.legend,
        reference=ref,
        regions=reg,
        mapping=mapping,
        class_names=class_names,
        crs=info.crs,
        transform=info.transform,
        shape=shape,
        labels_path=info.path,
    )


def open_evaluation_inputs(
    reference: str | Path,
    crs: CRS,
    transform: Affine,
    shape: tuple[int, int],
    *,
    reference_field: str | None = None,
    regions: str | Path | None = None,
    region_field: str | None = None,
    grid_cell_m: float | None = None,
    mapping: MappingSpec = "identity",
) -> tuple[Reference, Regions | None]:
    """Check and open the reference and regions for a raster on (crs, transform, shape).

    A workflow calls this before predicting, so that a reference that does not overlap the scene
    or a regions layer without its id field fails the job at once, not after hours of work.
    """
    bounds = window_bounds(transform, shape)
    if not isinstance(mapping, Mapping) and mapping not in MAPPINGS:
        raise InputError(f"unknown class mapping {mapping!r}; use one of {', '.join(MAPPINGS)} or a dict label → class")
    if regions is not None and grid_cell_m is not None:
        raise InputError("give either a regions layer or grid_cell_m, not both")
    if region_field is not None and regions is None:
        raise InputError("region_field needs a regions layer (regions=PATH)")
    ref = open_reference(reference, reference_field, crs, bounds)
    if regions is not None:
        reg: Regions | None = open_regions(regions, region_field, crs, bounds)
    elif grid_cell_m is not None:
        reg = grid_regions(grid_cell_m, crs, transform, shape)
    else:
        reg = None
    return ref, reg


def build_evaluation(
    total: ChunkCounts,
    *,
    legend: Sequence[ClassInfo],
    reference: Reference | None,
    regions: Regions | None,
    mapping: MappingSpec,
    class_names: Mapping[int, str] | None,
    crs: CRS,
    transform: Affine,
    shape: tuple[int, int],
    labels_path: Path | None = None,
) -> Evaluation:
    """Turn the summed sparse counts into an :class:`Evaluation` (dense axes, mapping, classes)."""
    ids = list(regions.ids) if regions is not None else []
    ref_legend = dict(reference.legend) if reference is not None else {}
    ref_vals = _union([total.ref_values, np.array(sorted(ref_legend), np.int64), _vector_classes(reference)])
    lab_vals = _union([total.label_values, np.array([c.id for c in legend], np.int64)])
    dense = np.zeros((1 + len(ids), len(ref_vals), len(lab_vals)), np.int64)
    excl = np.zeros((1 + len(ids), 3), np.int64)
    if total.counts.size or len(total.regions):
        ri = total.regions
        ref_i, lab_i = np.searchsorted(ref_vals, total.ref_values), np.searchsorted(lab_vals, total.label_values)
        dense[np.ix_(ri, ref_i, lab_i)] = total.counts
        excl[ri] = total.excluded
    scene = dense.sum(axis=0)
    counts = np.concatenate([scene[None], dense[1:]])
    excluded = np.concatenate([excl.sum(axis=0)[None], excl[1:]])
    resolved = resolve_mapping(mapping, scene, ref_vals, lab_vals)
    class_ids = _union([ref_vals, np.array(sorted(set(resolved.values())), np.int64)])
    label_names = {c.id: c.name for c in legend}
    names = _class_names(class_ids, class_names or {}, ref_legend, label_names, mapping)
    colors = _class_colors(class_ids, dict(reference.colors) if reference is not None else {}, legend, mapping)
    mpu = metres_per_unit(crs)
    px_area = ChunkGrid(shape[0], shape[1], 1, transform).pixel_area * mpu**2 if mpu else float("nan")
    return Evaluation(
        counts=counts,
        region_ids=["ALL", *ids],
        reference_values=ref_vals,
        label_values=lab_vals,
        excluded=excluded,
        mapping=resolved,
        mapping_method=mapping if isinstance(mapping, str) else "dict",
        class_ids=class_ids,
        class_names=names,
        class_colors=colors,
        label_names=label_names,
        pixel_area_m2=float(px_area),
        labels_path=labels_path,
        crs_wkt=crs.to_wkt(),
        transform=transform,
        shape=shape,
        reference=reference,
        regions=regions,
    )


def _vector_classes(reference: Reference | None) -> np.ndarray:
    return np.array(getattr(reference, "class_ids", ()) or (), np.int64)


def _class_names(
    class_ids: np.ndarray, given: Mapping[int, str], ref_legend: Mapping[int, str], label_names: Mapping[int, str],
    mapping: MappingSpec,
) -> dict[int, str]:
    out = {}
    for c in class_ids:
        c = int(c)
        if c in given:
            out[c] = str(given[c])
        elif c in ref_legend:
            out[c] = ref_legend[c]
        elif mapping == "identity" and c in label_names:
            out[c] = label_names[c]
        else:
            out[c] = f"class {c}"
    return out


def _class_colors(
    class_ids: np.ndarray, ref_colors: Mapping[int, str], legend: Sequence[ClassInfo], mapping: MappingSpec
) -> dict[int, str]:
    label_colors = {c.id: c.color for c in legend} if mapping == "identity" else {}
    return {
        int(c): ref_colors.get(int(c)) or label_colors.get(int(c)) or PALETTE[i % len(PALETTE)]
        for i, c in enumerate(class_ids)
    }


__all__ = [
    "ChunkCounts",
    "Evaluation",
    "confusion_metrics",
    "count_pixels",
    "evaluate",
    "hungarian_mapping",
    "majority_mapping",
    "mapped_confusion",
    "merge_counts",
    "resolve_mapping",
]
