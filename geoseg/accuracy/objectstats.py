"""The objects stage: per-region counts, densities and sizes, and object-level accuracy.

Why object-level: for crop-versus-weed work the question is "how many weeds per plot, how big",
and a map with a good pixel IoU can still merge ten weeds into one. Objects come from
:mod:`geoseg.accuracy.objects` (chunking-independent ids). Against a reference, its objects are
the connected regions of the reference classes; a predicted and a reference object of the same
class match when their IoU is at least 0.5, one to one (greedy by IoU, as COCO and the
instance-segmentation benchmarks score it): precision = matched / predicted, recall = matched /
reference, F1 their harmonic mean. An object belongs to the region of its first pixel.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.accuracy.objects import ObjectTable, find_objects, label_classes
from geoseg.geo import ChunkGrid, Window
from geoseg.io.atomic import write_text_atomic
from geoseg.legend import NODATA_LABEL

#: Quantiles of the object size reported per region and class.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Matching threshold on the intersection over union of two objects.
MATCH_IOU = 0.5
#: Name of the raster inside ``instances.zarr``.
INSTANCE_ARRAY = "instances"


def match_objects(
    pred: np.ndarray, ref: np.ndarray, inter: np.ndarray, pred_size: np.ndarray, ref_size: np.ndarray,
    min_iou: float = MATCH_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches ``(pred ids, ref ids)`` among overlapping pairs with IoU ≥ ``min_iou``.

    ``pred``/``ref`` are 1-based ids of overlapping pairs, ``inter`` their shared pixels.
    Greedy by IoU (ties: lower ids first); above 0.5 every match is unique anyway.

    >>> match_objects(np.array([1, 1, 2]), np.array([1, 2, 2]), np.array([8, 1, 3]), np.array([9, 3]), np.array([8, 4]))
    (array([1, 2]), array([1, 2]))
    """
    iou = inter / (pred_size[pred - 1] + ref_size[ref - 1] - inter)
    keep = iou >= min_iou
    pred, ref, iou = pred[keep], ref[keep], iou[keep]
    order = np.lexsort((ref, pred, -iou))
    used_p: set[int] = set()
    used_r: set[int] = set()
    mp, mr = [], []
    for i in order:
        p, r = int(pred[i]), int(ref[i])
        if p not in used_p and r not in used_r:
            used_p.add(p)
            used_r.add(r)
            mp.append(p)
            mr.append(r)
    return np.array(mp, np.int64), np.array(mr, np.int64)


def overlap_pairs(pred_ids: np.ndarray, ref_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(pred id, ref id)`` pairs sharing pixels in one chunk, and how many pixels."""
    both = (pred_ids > 0) & (ref_ids > 0)
    p, r = pred_ids[both].astype(np.int64), ref_ids[both].astype(np.int64)
    if p.size == 0:
        e = np.empty(0, np.int64)
        return e, e, e
    key = p * (int(r.max()) + 1) + r
    u, cnt = np.unique(key, return_counts=True)
    return u // (int(r.max()) + 1), u % (int(r.max()) + 1), cnt.astype(np.int64)


@dataclass(frozen=True)
class ObjectScore:
    """Object-level accuracy of one class: matched pairs and the objects of each side."""

    n_pred: int
    n_ref: int
    matched: int

    @property
    def precision(self) -> float:
        return self.matched / self.n_pred if self.n_pred else math.nan

    @property
    def recall(self) -> float:
        return self.matched / self.n_ref if self.n_ref else math.nan

    @property
    def f1(self) -> float:
        s = self.n_pred + self.n_ref
        return 2 * self.matched / s if s else math.nan


def score_objects(
    pred: ObjectTable, ref: ObjectTable, pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    class_map: Mapping[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Matched flags per predicted and per reference object (same class through ``class_map``)."""
    p, r, inter = pairs
    same = np.array([class_map.get(int(a)) == int(b) for a, b in zip(pred.cls[p - 1], ref.cls[r - 1])], bool) \
        if p.size else np.zeros(0, bool)
    mp, mr = match_objects(p[same], r[same], inter[same], pred.size, ref.size)
    hit_p = np.zeros(pred.n, bool)
    hit_r = np.zeros(ref.n, bool)
    hit_p[mp - 1] = True
    hit_r[mr - 1] = True
    return hit_p, hit_r


def object_rows(
    pred: ObjectTable, region_ids: Sequence[Any], class_names: Mapping[int, str], classes: Sequence[int],
    pixel_area_m2: float, ref: ObjectTable | None = None, hits: tuple[np.ndarray, np.ndarray] | None = None,
    class_map: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """``objects.csv`` rows: the whole scene (``ALL``) then each region, one row per class."""
    px_m2 = pixel_area_m2 if math.isfinite(pixel_area_m2) else 1.0
    rows = []
    slots: list[tuple[Any, int | None]] = [("ALL", None)] + [(rid, i + 1) for i, rid in enumerate(region_ids)]
    for rid, slot in slots:
        area_px = int(pred.region_px.sum() if slot is None else (pred.region_px[slot] if slot < len(pred.region_px) else 0))
        area_ha = area_px * px_m2 / 1e4
        for c in classes:
            sel = (pred.cls == c) & (True if slot is None else pred.region == slot)
            sizes = pred.size[sel] * px_m2
            row: dict[str, Any] = {
                "region": rid, "class_id": c, "class_name": class_names.get(c, str(c)), "objects": int(sel.sum()),
                "area_ha": round(area_ha, 6),
                "density_per_ha": round(int(sel.sum()) / area_ha, 6) if area_ha else math.nan,
                "size_mean_m2": float(sizes.mean()) if sizes.size else math.nan,
            }
            for q in QUANTILES:
                row[f"size_p{round(q * 100)}_m2"] = float(np.quantile(sizes, q)) if sizes.size else math.nan
            if ref is not None and hits is not None and class_map is not None:
                rc = class_map.get(c)
                rsel = (ref.cls == rc) & (True if slot is None else ref.region == slot)
                score = ObjectScore(int(sel.sum()), int(rsel.sum()), 0)
                tp_p, tp_r = int(hits[0][sel].sum()), int(hits[1][rsel].sum())
                row.update({
                    "reference_objects": score.n_ref, "matched": tp_p,
                    "precision": tp_p / score.n_pred if score.n_pred else math.nan,
                    "recall": tp_r / score.n_ref if score.n_ref else math.nan,
                })
                # 2·TP / (predicted + reference), with TP counted on each side's own objects: defined when
                # one side has none (0), NaN only when both have none
                total = score.n_pred + score.n_ref
                row["f1"] = (tp_p + tp_r) / total if total else math.nan
            rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the rows as CSV atomically."""
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- the stage, chunk-wise


@dataclass(frozen=True)
class _Reader:
    """Picklable ``window -> (classes raster, region slots)`` of the labels or of the reference (read where
    the labels, when given, have data: a reference object under the map's nodata is not a miss)."""

    labels_path: str | None
    grid: ChunkGrid
    regions: Any
    reference: Any = None
    #: Label id -> object class (256 int16 entries; -1 = no data, 256 + id = a label of no object class),
    #: or None: the label ids themselves.
    groups: np.ndarray | None = None

    def __call__(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        from geoseg.accuracy.regions import regions_window
        from geoseg.io.labelstore import read_label_window

        sub = self.grid.window_grid(window)
        if self.reference is not None:
            from geoseg.accuracy.reference import reference_window

            values, valid = reference_window(self.reference, sub)
            if self.labels_path is not None:  # where the map has no data, as pixel scores leave it out
                valid &= read_label_window(str(self.labels_path), window) != NODATA_LABEL
            data = np.where(valid, values, -1)
        else:
            raw = read_label_window(str(self.labels_path), window)
            # int16, nodata -1: densities count only mapped pixels (objects.chunk_objects)
            data = self.groups[raw] if self.groups is not None else np.where(raw == NODATA_LABEL, -1, raw.astype(np.int16))
        return data, (regions_window(self.regions, sub) if self.regions is not None else None)


@dataclass(frozen=True)
class _Apply:
    """Second pass over one chunk: ids applied, the instance chunk written, overlaps counted."""

    pred: _Reader
    ref: _Reader | None
    classes: tuple[int, ...]
    ref_classes: tuple[int, ...]
    instance_store: str | None

    def __call__(
        self, window: Window, lut: np.ndarray, ref_lut: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        labels, _ = self.pred(window)
        ids = lut[label_classes(labels, self.classes)[0]]
        if self.instance_store is not None:
            from geoseg.io.labelstore import LabelStoreWriter

            LabelStoreWriter(self.instance_store, self.pred.grid, array=INSTANCE_ARRAY).write(window, ids.astype(np.uint32))
        if self.ref is None or ref_lut is None:
            return None
        ref_vals, _ = self.ref(window)
        return overlap_pairs(ids, ref_lut[label_classes(ref_vals, self.ref_classes)[0]])


def run_objects_stage(
    labels_path: str | Path, out_dir: Path, classes: Sequence[int], *, instance_raster: bool = False,
    regions: Any = None, reference: Any = None, reference_classes: Sequence[int] | None = None,
    client: Any = None, attrs: Mapping[str, Any] | None = None,
    groups: Mapping[int, int] | None = None, names: Mapping[int, str] | None = None,
) -> dict[str, Path]:
    """Find the objects of ``classes`` in a label store; write ``objects.csv`` (and ``instances.zarr``).

    ``regions``/``reference``: opened as for evaluation (``open_evaluation_inputs``);
    ``reference_classes[i]`` is the reference class scored against ``classes[i]`` (default: same ids).
    ``groups``: label id -> object class (``classes`` are then object classes): labels mapped to one
    class (two k-means clusters that are both "tree") make one object where they touch. ``names``:
    the object classes' names (default: the store's legend).
    """
    from geoseg.io.labelstore import LabelStoreWriter, read_label_info

    info = read_label_info(labels_path)
    grid = info.chunk_grid
    n_slots = 1 + (len(regions.ids) if regions is not None else 0)
    mapper = (lambda fn, ws: client.gather(client.map(fn, ws, pure=False))) if client is not None else None
    lut = None
    if groups is not None:
        lut = np.arange(256, 512, dtype=np.int16)  # mapped, but of no object class
        lut[NODATA_LABEL] = -1
        for label, target in groups.items():
            lut[int(label)] = int(target)
    pred_reader = _Reader(str(info.path), grid, regions, groups=lut)
    pred = find_objects(pred_reader, grid, classes, n_slots, mapper)
    ref_table = None
    ref_reader = None
    ref_classes = tuple(reference_classes or classes)
    if reference is not None:
        ref_reader = _Reader(str(info.path), grid, regions, reference)
        ref_table = find_objects(ref_reader, grid, sorted(set(ref_classes)), n_slots, mapper)
    outputs: dict[str, Path] = {}
    store = out_dir / "instances.zarr"
    writer = None
    if instance_raster:
        writer = LabelStoreWriter.create(store, grid, (), attrs={**(attrs or {}), "geoseg:kind": "instances"},
                                         dtype="uint32", fill_value=0, array=INSTANCE_ARRAY)
    pairs = None
    if writer is not None or ref_table is not None:
        task = _Apply(pred_reader, ref_reader, tuple(classes), tuple(sorted(set(ref_classes))),
                      str(store) if writer is not None else None)
        windows = list(grid.windows())
        ref_luts = ref_table.luts if ref_table is not None else [None] * len(windows)
        if client is not None:
            parts = client.gather(client.map(task, windows, pred.luts, ref_luts, pure=False))
        else:
            parts = [task(w, lut, rl) for w, lut, rl in zip(windows, pred.luts, ref_luts)]
        if ref_table is not None:
            pairs = _sum_pairs([p for p in parts if p is not None])
    if writer is not None:
        writer.finalize()
        outputs["instances"] = store
    names = {**{c.id: c.name for c in info.legend}, **dict(names or {})}
    class_map = dict(zip(classes, ref_classes))
    hits = score_objects(pred, ref_table, pairs, class_map) if ref_table is not None and pairs is not None else None
    rows = object_rows(pred, list(regions.ids) if regions is not None else [], names, classes,
                       info.grid.pixel_area_m2, ref_table, hits, class_map if ref_table is not None else None)
    outputs["objects"] = write_rows(rows, out_dir / "objects.csv")
    return outputs


def _sum_pairs(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlaps of all chunks, a pair split by a seam summed into one."""
    if not parts:
        e = np.empty(0, np.int64)
        return e, e, e
    p = np.concatenate([x[0] for x in parts])
    r = np.concatenate([x[1] for x in parts])
    n = np.concatenate([x[2] for x in parts])
    if p.size == 0:
        return p, r, n
    m = int(r.max()) + 1
    u, inv = np.unique(p * m + r, return_inverse=True)
    return u // m, u % m, np.bincount(inv, weights=n).astype(np.int64)


def run_objects_for_job(job: Any, grid: Any, store: Path, out: Path, client: Any = None) -> dict[str, Path]:
    """The stage as a run calls it: the job's ``objects``, ``regions`` and ``reference`` opened on ``grid``."""
    import shutil

    from geoseg.accuracy.evaluate import open_evaluation_inputs
    from geoseg.accuracy.regions import grid_regions, open_regions
    from geoseg.io.labelstore import read_label_info

    cfg, regions, reference, reg = job.objects, job.regions, None, None
    if job.reference is not None:
        ref = job.reference  # opened as the evaluation opens it: a field, a value for every polygon, a background
        reference, reg = open_evaluation_inputs(
            str(ref.path), grid, reference_field=ref.field, reference_value=ref.value,
            reference_background=ref.background, reference_values=ref.values,
            class_names={c.id: c.name for c in job.classes} if job.classes else None,
            regions=str(regions.path) if regions and regions.path else None,
            region_field=regions.field if regions else None, grid_cell_m=regions.grid_cell_m if regions else None,
            merge_duplicates=bool(regions and regions.merge_duplicates),
        )
    elif regions is not None and regions.path is not None:
        reg = open_regions(str(regions.path), regions.field, grid)
    elif regions is not None and regions.grid_cell_m is not None:
        reg = grid_regions(regions.grid_cell_m, grid)
    stale = out / "instances.zarr"
    if not cfg.instance_raster and stale.exists():  # an earlier run's, which no longer matches the labels
        shutil.rmtree(stale)
    classes, groups, names = object_classes(cfg.classes, read_label_info(store).legend,
                                            {c.name: c.id for c in job.classes or []})
    return run_objects_stage(
        store, out, classes, instance_raster=cfg.instance_raster, regions=reg, reference=reference,
        reference_classes=cfg.reference_classes, client=client, attrs={"geoseg:job": job.name},
        groups=groups, names=names,
    )


def object_classes(
    wanted: Sequence[int | str], legend: Sequence[Any], class_ids: Mapping[str, int],
) -> tuple[list[int], dict[int, int] | None, dict[int, str]]:
    """Object classes from the job's ``objects.classes``: label ids as given, or class names.

    A name gathers every label the legend gives that name (after an evaluation, the mapped class:
    two clusters mapped to "tree" are one object class); its id is the job's class id of that name,
    else its smallest label id. Returns (object class ids, label id -> object class or None when
    only ids were given, names of named classes).

    >>> from geoseg.legend import ClassInfo
    >>> legend = [ClassInfo(0, "water", "#0000ff"), ClassInfo(1, "tree", "#00ff00"), ClassInfo(2, "tree", "#00ff00")]
    >>> object_classes(["tree"], legend, {"tree": 3})
    ([3], {1: 3, 2: 3}, {3: 'tree'})
    >>> object_classes([0], legend, {})
    ([0], None, {})
    """
    from geoseg.errors import InputError

    if all(isinstance(w, int) for w in wanted):
        return [int(w) for w in wanted], None, {}
    classes: list[int] = []
    groups: dict[int, int] = {}
    names: dict[int, str] = {}
    for w in wanted:
        if isinstance(w, int):
            ids, target = [w], w
        else:
            ids = sorted(c.id for c in legend if c.name == w)
            if not ids:
                known = ", ".join(sorted({c.name for c in legend}))
                raise InputError(f"objects: no label is named {w!r}; the labels' classes are {known}")
            target = class_ids.get(w, ids[0])
            names[target] = w
        if target in classes or any(i in groups for i in ids):
            raise InputError(f"objects: {w!r} names labels or a class already chosen; list each class once")
        classes.append(target)
        groups.update({i: target for i in ids})
    return classes, groups, names
