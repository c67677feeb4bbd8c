"""Accuracy assessment: per-region confusion matrices, IoU and friends, as a Dask reduction.

Every chunk window of the label grid is counted as one task (:mod:`geoseg.accuracy.counting`,
with the reference and regions brought onto the window by :mod:`geoseg.accuracy.reference` and
:mod:`geoseg.accuracy.regions`); the small count arrays are tree-summed and turned into an
:class:`Evaluation`, whose tables hold the figures (:mod:`geoseg.accuracy.metrics`) after a
class mapping (:mod:`geoseg.accuracy.mapping`).

Longer than 500 lines because :class:`Evaluation` keeps its tables and what they cover (scored
share, exclusions, notes) in one place; ``build_evaluation`` and its naming helpers are the
next piece to move out.

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
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoseg.accuracy.counting import ChunkCounts, count_pixels, merge_counts, union_sorted
from geoseg.accuracy.mapping import (
    MappingSpec,
    check_identity_fits,
    kept_labels_note,
    mapped_confusion,
    output_ids,
    publishes_class_ids,
    resolve_mapping,
)
from geoseg.accuracy.metrics import confusion_metrics
from geoseg.accuracy.options import EvaluationOptions
from geoseg.accuracy.reference import Reference, open_reference, reference_pixels
from geoseg.accuracy.regions import Regions, grid_regions, open_regions, regions_window_codes
from geoseg.errors import InputError
from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.io.labelstore import LabelRasterInfo, read_label_info, read_label_window
from geoseg.legend import PALETTE, ClassInfo

#: Columns of :meth:`Evaluation.metrics`, in order.
METRIC_COLUMNS = [
    "region_id", "kind", "class_id", "class_name", "iou", "precision", "recall", "f1",
    "tp", "fp", "fn", "support_px", "area_m2", "miou", "overall_accuracy", "kappa",
    "valid_px", "unassigned_px", "nodata_label_px", "nodata_reference_px", "excluded_px",
    "total_px", "scored_share", "outside_regions_px",
]  # fmt: skip

#: Below this share of scored pixels a warning goes with the figures.
LOW_SCORED_SHARE = 0.5


EXCLUDED_COLUMNS = ("nodata_label_px", "nodata_reference_px", "excluded_px")


@dataclass(frozen=True)
class _Plan:
    """What a task needs to count one window: paths and georeferencing only."""

    labels_path: str
    label_nodata: int
    grid: ChunkGrid
    reference: Reference
    regions: Regions | None


def count_window(plan: _Plan, window: Window) -> ChunkCounts:
    """Task: read labels, reference and regions on one window and count them."""
    grid = plan.grid.window_grid(window)
    labels = read_label_window(plan.labels_path, window)
    ref, ref_invalid = reference_pixels(plan.reference, grid)
    n_groups = getattr(plan.regions, "n_groups", 1)
    passes = []
    covered = np.zeros(grid.shape, bool) if n_groups > 1 else None
    for group in range(n_groups):  # overlapping regions: one pass per group
        codes, slot_of = regions_window_codes(plan.regions, grid, group)
        counts = count_pixels(labels, ref, ref_invalid, codes, plan.label_nodata)
        counts = replace(counts, regions=slot_of[counts.regions])  # increasing: stays sorted
        passes.append(counts if group == 0 else _without_slot0(counts))
        if covered is not None:
            covered |= codes > 0
    if covered is None:
        return passes[0]
    return replace(merge_counts(passes), outside_px=int(covered.size - np.count_nonzero(covered)))


def _without_slot0(c: ChunkCounts) -> ChunkCounts:
    """Counts of the regions only: pass 0 alone counts the pixels in no region (and makes ``ALL``)."""
    keep = c.regions != 0
    return replace(c, regions=c.regions[keep], counts=c.counts[keep], excluded=c.excluded[keep])


def _sum_counts(parts: list[ChunkCounts]) -> ChunkCounts:
    return merge_counts(parts)


def _reduce(plan: _Plan, windows: Sequence[Window], client: Any = None, fan_in: int = 16,
            show_progress: bool = False) -> ChunkCounts:
    """Count every window as a Dask task and tree-sum the results (on ``client`` if given).

    ``show_progress``: a bar of the window counts on stderr when it is a terminal (the longest stage
    of many runs had none)."""
    import dask
    from dask import delayed

    from geoseg.progress import wants_bar

    plan_d = delayed(plan, pure=True)
    parts = [delayed(count_window, pure=True)(plan_d, w) for w in windows]
    while len(parts) > 1:
        parts = [delayed(_sum_counts, pure=True)(parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    bar = wants_bar(show_progress)
    if client is None and bar:  # dask.compute would run on a default distributed client: show its bar
        client = _scheduling_client()
    if client is not None:
        future = client.compute(parts[0])
        if bar:
            from distributed import progress

            print("evaluating:", file=sys.stderr)
            progress(future)
        return future.result()
    if bar:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return dask.compute(parts[0])[0]
    return dask.compute(parts[0])[0]


def _scheduling_client() -> Any:
    """The distributed client ``dask.compute`` would use now (a default client, unless the configured
    scheduler says otherwise), or None for dask's local schedulers."""
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)  # a Client's bound ``get``
    try:
        from distributed import Client
    except ImportError:
        return None
    return owner if isinstance(owner, Client) else None


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
    #: m² per pixel; on a geographic grid the scene's mean (counts carry no rows), so per-class and
    #: per-region ``area_m2`` there are approximations, the scene total exact.
    pixel_area_m2: float
    labels_path: Path | str | None = None  # a str for a store on object storage (URL)
    grid: GeoGrid | None = None  # the label raster's grid
    reference: Reference | None = field(default=None, repr=False)
    regions: Regions | None = field(default=None, repr=False)
    #: Pixels of the scene in no region (in every pass), all counted: the "outside regions" share.
    outside_regions_px: int = 0
    #: What happened on the way, one line each (reprojections, repaired geometries, ...).
    notes: list[str] = field(default_factory=list)
    #: Several scenes pooled (:func:`evaluate_scenes`): each scene's own evaluation, by name.
    scenes: dict[str, Evaluation] = field(default_factory=dict, repr=False)

    # -- what the figures cover ----------------------------------------------------------
    def total_px(self) -> np.ndarray:
        """Pixels of each region (scene for ``ALL``), scored or excluded."""
        return self.counts.sum(axis=(1, 2)) + self.excluded[:, 2]

    def scored_share(self) -> np.ndarray:
        """Share of each region's pixels that the figures were computed on (NaN for an empty region)."""
        total = self.total_px()
        return np.divide(self.counts.sum(axis=(1, 2)), total, out=np.full(len(total), np.nan), where=total > 0)

    def coverage_lines(self) -> list[str]:
        """What the scene figures cover, in words: scored share, excluded share per reason, a warning
        when under half the scene was scored, then the notes."""
        from geoseg.accuracy.figures import percent

        total = int(self.total_px()[0])
        scored = int(self.counts[0].sum())
        lab, _, either = (int(v) for v in self.excluded[0])
        pct = lambda n: percent(n, total)  # noqa: E731
        lines = [f"scored: {pct(scored)} of the scene ({scored:,} of {total:,} px)"]
        parts = []  # disjoint reasons that add up to the excluded pixels
        if lab:
            parts.append(f"label nodata {pct(lab)}")
        if either - lab:
            missing = "reference nodata or not covered by the reference" if self._partial_reference() else "reference nodata"
            parts.append(f"{missing} (labels valid) {pct(either - lab)}")
        if parts:
            lines.append(f"excluded: {pct(either)} of the scene ({either:,} px): " + "; ".join(parts))
        if self.regions is not None:
            lines.append(f"outside every region: {pct(self.outside_regions_px)} of the scene (still scored in ALL)")
        if total and scored / total < LOW_SCORED_SHARE:
            hint = (
                " (give the vector reference a background class if uncovered pixels have one)"
                if self._partial_reference() else ""
            )
            lines.append(f"WARNING: only {pct(scored)} of the scene was scored; the figures describe that part only{hint}")
        return lines + list(self.notes)

    def _partial_reference(self) -> bool:
        ref = self.reference
        return getattr(ref, "kind", "") == "vector" and getattr(ref, "background", None) is None

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
                "total_px": pd.array(self.total_px(), dtype="Int64"),
                "scored_share": self.scored_share(),
                "outside_regions_px": pd.array(
                    [self.outside_regions_px if self.regions is not None else pd.NA] + [pd.NA] * (g - 1), dtype="Int64"
                ),
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
        out = summ[["miou", "overall_accuracy", "kappa", "valid_px", "unassigned_px", *EXCLUDED_COLUMNS, "scored_share"]].copy()
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
            overall_accuracy=float(top["overall_accuracy"]), kappa=float(top["kappa"]), miou=float(top["miou"]),
            scored_share=float(top["scored_share"]), coverage=self.coverage_lines(),
        )
        return table

    def output_ids(self) -> dict[int, int]:
        """Label id → the id the published outputs carry (:func:`geoseg.accuracy.mapping.output_ids`);
        the label ids themselves under an identity mapping, and when a class id does not fit the
        label raster (:func:`geoseg.accuracy.mapping.publishes_class_ids`)."""
        if not self._publishes_class_ids():
            return {int(v): int(v) for v in self.label_values if int(v) != 255}
        return output_ids(self.label_values, self.mapping, self.class_ids)

    def output_legend(self, legend: Sequence[ClassInfo] = ()) -> tuple[ClassInfo, ...]:
        """The legend of the published outputs (labels.zarr, the COG, polygons.gpkg), keyed by
        :meth:`output_ids`: each class the labels map to, named and coloured as in the report; a
        label mapped to no class keeps ``legend``'s name and colour. Under an identity mapping (or
        class ids that do not fit the label raster), ``legend`` itself (the method's own names)."""
        if not self._publishes_class_ids():
            return tuple(legend)
        own = {c.id: c for c in legend}
        out: dict[int, ClassInfo] = {}
        for label, v in self.output_ids().items():
            c = self.mapping.get(label)
            if c is not None:
                out[v] = ClassInfo(v, self.class_names.get(c, f"class {c}"), self.class_colors.get(c) or PALETTE[0])
            else:
                mine = own.get(label) or ClassInfo(label, f"label_{label}", PALETTE[label % len(PALETTE)])
                out[v] = ClassInfo(v, mine.name, mine.color)
        return tuple(out[k] for k in sorted(out))

    def _publishes_class_ids(self) -> bool:
        unassigned = sum(1 for v in self.label_values if int(v) != 255 and int(v) not in self.mapping)
        return self.mapping_method != "identity" and publishes_class_ids(self.class_ids, unassigned)

    def mapping_table(self, remapped: bool = True) -> pd.DataFrame:
        """Label id → class id, with names, the label's scored pixels and ``raster_value``: the value
        the label has in the published raster and polygons (its class id, see :meth:`output_ids`).
        ``remapped=False``: the scored raster stays as it is (``geoseg evaluate``; a run rewrites it),
        so ``raster_value`` is the label id it holds there."""
        scene = self.counts[0].sum(axis=0)
        published = self.output_ids() if remapped else {int(v): int(v) for v in self.label_values if int(v) != 255}
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
                    "raster_value": published.get(int(v)),
                }
            )
        df = pd.DataFrame(rows)
        df["class_id"] = df["class_id"].astype("Int64")
        df["raster_value"] = df["raster_value"].astype("Int64")
        return df


def iou_column(class_id: int, name: str) -> str:
    """Field name for a class's IoU in the regions layer: ``iou_<id>_<name>`` (ASCII, short).

    >>> iou_column(8, "artificial surface")
    'iou_8_artificial_surface'
    """
    slug = "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")[:24]
    return f"iou_{class_id}_{slug}" if slug and slug != str(class_id) else f"iou_{class_id}"


def evaluate(
    labels_path: str | Path | Sequence[str | Path],
    reference: str | Path | Sequence[str | Path],
    options: EvaluationOptions | Mapping[str, Any] | None = None,
    *,
    client: Any = None,
    show_progress: bool = False,
    **keywords: Any,
) -> Evaluation:
    """Compare a label store with a reference map, per region, as one Dask reduction.

    ``reference``: a raster (band 1 = class ids, any numeric type holding whole numbers) or a
    vector layer, any CRS and resolution. ``options``: an :class:`EvaluationOptions` (reference
    field/value/background, regions or grid cells, class mapping, class names), or the same as
    keywords (``evaluate(labels, ref, regions=..., mapping="hungarian")``); checked once, here.
    ``client``: a ``distributed.Client``; without one Dask's default scheduler runs the tasks.
    ``show_progress``: a progress bar of the counted chunks on stderr (a terminal only).
    Several label rasters (a list), with one reference each or one for all: pooled figures, and
    each scene's in ``Evaluation.scenes`` (:func:`evaluate_scenes`).
    """
    opts = EvaluationOptions.coerce(options, **keywords)
    if not isinstance(labels_path, (str, Path)):
        return evaluate_scenes(labels_path, reference, opts, client=client, show_progress=show_progress)
    if not isinstance(reference, (str, Path)):
        raise InputError("several references need several label rasters (a list of labels, one reference each)")
    info = read_label_info(labels_path)
    ref, reg = open_evaluation_inputs(reference, info.grid, opts)
    check_identity_fits(opts.mapping, info.legend, dict(ref.legend))
    chunks = info.chunk_grid
    plan = _Plan(str(info.path), info.nodata, chunks, ref, reg)
    total = _reduce(plan, list(chunks.windows()), client, show_progress=show_progress)
    return build_evaluation(
        total,
        legend=info.legend,
        reference=ref,
        regions=reg,
        mapping=opts.mapping,
        class_names=opts.class_names,
        grid=info.grid,
        labels_path=info.path,
        class_colors=opts.class_colors,
    )


def open_evaluation_inputs(
    reference: str | Path,
    grid: GeoGrid,
    options: EvaluationOptions | Mapping[str, Any] | None = None,
    **keywords: Any,
) -> tuple[Reference, Regions | None]:
    """Check and open the reference and regions for a raster on ``grid``.

    A workflow calls this before predicting, so that a reference that does not overlap the scene
    or a regions layer without its id field fails the job at once, not after hours of work.
    """
    opts = EvaluationOptions.coerce(options, **keywords)
    ref = open_reference(
        reference, opts.reference_field, grid, value=opts.reference_value, background=opts.reference_background,
        value_map=opts.reference_values, class_names=opts.class_names, nodata=opts.reference_nodata_values,
    )
    if opts.regions is not None:
        reg: Regions | None = open_regions(
            opts.regions, opts.region_field, grid, merge_duplicates=opts.merge_duplicates,
            repair_invalid=opts.repair_invalid,
        )
    elif opts.grid_cell_m is not None:
        reg = grid_regions(opts.grid_cell_m, grid)
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
    grid: GeoGrid,
    labels_path: Path | str | None = None,
    class_colors: Mapping[int, str] | None = None,
) -> Evaluation:
    """Turn the summed sparse counts into an :class:`Evaluation` (dense axes, mapping, classes)."""
    ids = list(regions.ids) if regions is not None else []
    ref_legend = dict(reference.legend) if reference is not None else {}
    ref_vals = union_sorted([total.ref_values, np.array(sorted(ref_legend), np.int64), _vector_classes(reference)])
    lab_vals = union_sorted([total.label_values, np.array([c.id for c in legend], np.int64)])
    dense = np.zeros((1 + len(ids), len(ref_vals), len(lab_vals)), np.int64)
    excl = np.zeros((1 + len(ids), 3), np.int64)
    if total.counts.size or len(total.regions):
        ri = total.regions
        cells = np.ix_(ri, np.searchsorted(ref_vals, total.ref_values), np.searchsorted(lab_vals, total.label_values))
        dense[cells] = total.counts
        excl[ri] = total.excluded
    in_pass0 = _pass0_slots(regions, len(ids))  # pass 0 holds every pixel once: no region or a pass-0 region
    scene = dense[in_pass0].sum(axis=0)
    counts = np.concatenate([scene[None], dense[1:]])
    excluded = np.concatenate([excl[in_pass0].sum(axis=0)[None], excl[1:]])
    resolved = resolve_mapping(mapping, scene, ref_vals, lab_vals)
    class_ids = union_sorted([ref_vals, np.array(sorted(set(resolved.values())), np.int64)])
    label_names = {c.id: c.name for c in legend}
    outside = int(dense[0].sum() + excl[0, 2]) if regions is not None else 0
    if regions is not None and getattr(regions, "n_groups", 1) > 1:
        outside = _outside_all_passes(total, regions)
    notes = [n for n in [_reprojection_note(reference, grid), _resolution_note(reference, grid)] if n]
    notes += list(getattr(regions, "notes", ()))
    unassigned = sum(1 for v in lab_vals if int(v) != 255 and int(v) not in resolved)
    if mapping != "identity" and not publishes_class_ids(class_ids, unassigned):
        notes.append(kept_labels_note(class_ids, unassigned))
    names = _class_names(class_ids, class_names or {}, ref_legend, label_names, mapping)
    colors = _class_colors(class_ids, dict(reference.colors) if reference is not None else {}, legend, mapping,
                           class_colors or {})
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
        pixel_area_m2=float(grid.pixel_area_m2),
        labels_path=labels_path,
        grid=grid,
        reference=reference,
        regions=regions,
        outside_regions_px=outside,
        notes=notes,
    )


def _outside_all_passes(total: ChunkCounts, regions: Regions) -> int:
    """Pixels in no region of any pass (counted by the tasks; slot 0 of pass 0 still holds later passes' regions)."""
    return int(total.outside_px)


def _reprojection_note(reference: Reference | None, grid: GeoGrid) -> str | None:
    from geoseg.accuracy.layers import describe_reprojection

    if reference is None:
        return None
    return describe_reprojection("reference", str(reference.path), reference.crs, grid.crs)


def _resolution_note(reference: Reference | None, grid: GeoGrid) -> str | None:
    """One line where a raster reference's pixels are not the labels' size: what each label pixel was compared
    with, so a figure is not read as a comparison at a scale it was not made at."""
    from geoseg.accuracy.reference import RasterReference

    if not isinstance(reference, RasterReference):
        return None
    ratio = _pixel_side(reference.grid, grid.crs) / _pixel_side(grid, grid.crs)
    if not math.isfinite(ratio) or 0.9 <= ratio <= 1.1:
        return None
    if ratio > 1:
        return (f"reference {reference.path} has pixels {ratio:.3g} times the labels' side: each label pixel is compared "
                f"with the reference pixel that covers its centre (about {ratio**2:.0f} label pixels to one), so mixed "
                "reference pixels count whole and the figures are agreement at the reference's scale")
    return (f"reference {reference.path} has pixels {1 / ratio:.3g} times finer than the labels: each label pixel is "
            "compared with the one reference pixel at its centre (nearest), not with the majority of the "
            f"{ratio**-2:.0f} under it; aggregate the reference to the label grid first (gdalwarp -r mode) to score it "
            "by majority")


def _pixel_side(grid: GeoGrid, crs: Any) -> float:
    """The side of a pixel at the grid's centre, in ``crs`` units (the geometric mean of its width and height)."""
    from rasterio.warp import transform as warp_transform

    t = grid.transform
    col, row = grid.width / 2, grid.height / 2
    corners = [t * (col, row), t * (col + 1, row), t * (col, row + 1)]
    xs, ys = zip(*corners)
    if grid.crs != crs:
        xs, ys = warp_transform(grid.crs, crs, list(xs), list(ys))
    across = math.hypot(xs[1] - xs[0], ys[1] - ys[0])
    down = math.hypot(xs[2] - xs[0], ys[2] - ys[0])
    return math.sqrt(across * down) if across > 0 and down > 0 else math.nan


def _pass0_slots(regions: Regions | None, n: int) -> np.ndarray:
    """Slots (0 = no region) counted in the first pass, whose sum is every pixel once."""
    groups = np.asarray(getattr(regions, "groups", ()) or [0] * n, np.int64)
    return np.concatenate([[True], groups == 0])


def _vector_classes(reference: Reference | None) -> np.ndarray:
    return np.array(getattr(reference, "class_ids", ()) or (), np.int64)


def _class_names(
    class_ids: np.ndarray, given: Mapping[int, str], ref_legend: Mapping[int, str],
    label_names: Mapping[int, str], mapping: MappingSpec,
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
    class_ids: np.ndarray, ref_colors: Mapping[int, str], legend: Sequence[ClassInfo], mapping: MappingSpec,
    given: Mapping[int, str],
) -> dict[int, str]:
    """Colours: the job's ``classes`` first, then the reference's colour table, then the labels'
    own legend (identity mapping only), then the palette."""
    label_colors = {c.id: c.color for c in legend} if mapping == "identity" else {}
    return {
        int(c): given.get(int(c)) or ref_colors.get(int(c)) or label_colors.get(int(c)) or PALETTE[i % len(PALETTE)]
        for i, c in enumerate(class_ids)
    }



# --------------------------------------------------------------------------- several scenes
# One label raster per test image (or field), pooled and per scene. Each scene is counted as its own
# Dask reduction on its own grid, against its own reference (or one shared by all) and the same
# regions layer. The counts are summed into the pooled figures, so the pooled IoU is that of all
# scenes' pixels together (not a mean of per-scene IoUs), and a class mapping (e.g. Hungarian for
# k-means clusters) is resolved once on the pooled matrix and applied to every scene alike.


def scene_names(paths: Sequence[str | Path]) -> list[str]:
    """Short, unique names for scenes: the file name, with its folder where names repeat.

    >>> scene_names(["a/out/labels.zarr", "b/out/labels.zarr", "c/x.tif"])
    ['a/out/labels.zarr', 'b/out/labels.zarr', 'x.tif']
    """
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    out = []
    for p, n in zip(paths, names):
        out.append(str(Path(p)) if names.count(n) > 1 else n)
    return out


def evaluate_scenes(
    labels_paths: Sequence[str | Path],
    references: str | Path | Sequence[str | Path],
    options: EvaluationOptions | Mapping[str, Any] | None = None,
    *,
    client: Any = None,
    names: Sequence[str] | None = None,
    show_progress: bool = False,
    **keywords: Any,
) -> Evaluation:
    """Evaluate several label rasters, each against its reference (or all against one).

    Returns the pooled :class:`Evaluation` (all pixels of all scenes); its ``scenes`` holds one
    :class:`Evaluation` per scene, scored with the pooled class mapping. ``options``/``keywords``:
    those of :func:`geoseg.accuracy.evaluate.evaluate` (:class:`EvaluationOptions`).
    """
    opts = EvaluationOptions.coerce(options, **keywords)
    mapping, class_names, class_colors = opts.mapping, opts.class_names, opts.class_colors
    labels_paths = list(labels_paths)
    refs = [references] if isinstance(references, (str, Path)) else list(references)
    if len(refs) == 1:
        refs = refs * len(labels_paths)
    if not labels_paths or len(refs) != len(labels_paths):
        raise InputError(
            f"{len(labels_paths)} label rasters and {len(refs)} references: give one reference per label raster, or one for all"
        )
    if opts.grid_cell_m is not None:
        raise InputError(
            "grid_cell_m cells are numbered per scene; for several scenes give a regions layer"
            " (or evaluate them one by one)"
        )
    names = list(names) if names is not None else scene_names(labels_paths)
    if len(names) != len(labels_paths) or len(set(names)) != len(names):
        raise InputError(f"scene names must be unique, one per label raster; got {names}")
    totals: list[ChunkCounts] = []
    infos: list[LabelRasterInfo] = []
    opened: list[tuple[Reference, Regions | None]] = []
    for lp, rp in zip(labels_paths, refs):
        info = read_label_info(lp)
        ref, reg = open_evaluation_inputs(rp, info.grid, opts)
        check_identity_fits(opts.mapping, info.legend, dict(ref.legend))
        first = opened[0][1] if opened else None
        if first is not None and reg is not None and tuple(reg.ids) != tuple(first.ids):
            raise InputError("the regions layer gives other region ids for another scene; use one regions layer for all")
        chunks = info.chunk_grid
        totals.append(_reduce(_Plan(str(info.path), info.nodata, chunks, ref, reg), list(chunks.windows()), client,
                              show_progress=show_progress))
        infos.append(info)
        opened.append((ref, reg))
    legend = tuple({c.id: c for info in reversed(infos) for c in info.legend}.values())
    legend = tuple(sorted(legend, key=lambda c: c.id))
    pooled = build_evaluation(merge_counts(totals), reference=opened[0][0], regions=opened[0][1], mapping=mapping,
                              grid=infos[0].grid, labels_path=infos[0].path, legend=legend, class_names=class_names,
                              class_colors=class_colors)  # fmt: skip
    areas = [float(i.grid.pixel_area_m2) for i in infos]
    known = [a for a in areas if math.isfinite(a)]  # NaN: a CRS without a unit (NaN != NaN: not "different")
    per_scene = {}
    for name, total, info, (ref, reg) in zip(names, totals, infos, opened):
        ev = build_evaluation(total, reference=ref, regions=reg, mapping=dict(pooled.mapping), grid=info.grid,
                              labels_path=info.path, legend=legend, class_names=class_names,
                              class_colors=class_colors)  # fmt: skip
        per_scene[name] = replace(ev, mapping_method=pooled.mapping_method)
    notes = [f"{len(names)} scenes pooled: {', '.join(names)}; class mapping resolved on the pooled counts"]
    if known and max(known) - min(known) > 1e-9 * max(known):
        notes.append("scenes have different pixel sizes: pooled area_m2 uses the first scene's pixel area; see scenes.csv")
    elif len(known) < len(areas):
        notes.append("some scenes' CRS has no unit: their pixel area is unknown, so pooled areas are left empty")
    seen = set()
    for ev in per_scene.values():
        for n in ev.notes:
            if n not in seen:
                seen.add(n)
                notes.append(n)
    return replace(pooled, scenes=per_scene, notes=notes + [n for n in pooled.notes if n not in seen])


__all__ = ["Evaluation", "build_evaluation", "evaluate", "evaluate_scenes", "iou_column", "open_evaluation_inputs",
           "scene_names"]
