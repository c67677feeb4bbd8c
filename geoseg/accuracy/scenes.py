"""Several scenes in one evaluation: one label raster per test image (or field), pooled and per scene.

Each scene is counted as its own Dask reduction on its own grid (:mod:`geoseg.accuracy.evaluate`),
against its own reference (or one reference shared by all) and the same regions layer. The count
arrays are summed into the pooled figures, so the pooled IoU is that of all scenes' pixels
together (not a mean of per-scene IoUs), and a class mapping (e.g. Hungarian for k-means
clusters) is resolved once on the pooled matrix and applied to every scene alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from geoseg.accuracy.counting import ChunkCounts, merge_counts
from geoseg.accuracy.evaluate import Evaluation, _Plan, _reduce, build_evaluation, open_evaluation_inputs
from geoseg.accuracy.options import EvaluationOptions
from geoseg.accuracy.reference import Reference
from geoseg.accuracy.regions import Regions
from geoseg.errors import InputError
from geoseg.io.labelstore import LabelRasterInfo, read_label_info


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


def scenes_table(ev: Evaluation) -> pd.DataFrame:
    """One row per scene and one for all scenes pooled: mIoU, accuracy, kappa, pixels, scored share."""
    rows = []
    for name, sub in [*ev.scenes.items(), ("ALL (pooled)", ev)]:
        top = sub.metrics().iloc[0]
        rows.append({
            "scene": name, "labels": str(sub.labels_path), "reference": str(getattr(sub.reference, "path", "")),
            "miou": top["miou"], "overall_accuracy": top["overall_accuracy"], "kappa": top["kappa"],
            "valid_px": int(top["valid_px"]), "total_px": int(top["total_px"]), "scored_share": top["scored_share"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def scenes_metrics(ev: Evaluation) -> pd.DataFrame:
    """Every scene's long metrics table, one after the other, with a ``scene`` column first."""
    parts = [sub.metrics().assign(scene=name) for name, sub in ev.scenes.items()]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    return df[["scene", *[c for c in df.columns if c != "scene"]]]


__all__ = ["evaluate_scenes", "scene_names", "scenes_metrics", "scenes_table"]
