"""Accuracy tables people can open: CSVs and a regions GeoPackage for QGIS.

:func:`write_tables` writes, into one folder:

* ``metrics.csv``: the long table of :meth:`Evaluation.metrics` (region × class, plus region rows);
* ``confusion.csv``: the whole-scene confusion matrix, reference classes down, predicted across;
* ``class_mapping.csv``: which label became which reference class (matters for k-means);
* with several scenes: ``scenes.csv`` (one row per scene and the pooled row) and
  ``scenes_metrics.csv`` (each scene's long table, ``metrics.csv`` being the pooled one);
* ``regions_metrics.gpkg``: the regions with ``miou``, accuracy, kappa and ``iou_<id>_<name>``
  per class, with a default QGIS style colouring mIoU red to green (the scene outline when no
  regions were given).

Every file is written through :mod:`geoseg.io.atomic`, so a reader never sees a half-written one.
The HTML page is :mod:`geoseg.accuracy.report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from geoseg.accuracy.evaluate import Evaluation
from geoseg.accuracy.regions import regions_frame
from geoseg.geo import GeoGrid
from geoseg.io.atomic import write_atomic


def write_tables(
    evaluation: Evaluation, out_dir: str | Path, *, regions_path: str | Path | None = None, metrics: Any = None,
    remapped: bool = True,
) -> tuple[dict[str, Path], Any]:
    """Write the CSV tables and ``regions_metrics.gpkg`` into ``out_dir``.

    Returns ``({name: path}, regions GeoDataFrame with figures)``; ``metrics``: the evaluation's
    metrics table when the caller already has it. ``regions_path``: see :func:`regions_with_metrics`.
    ``remapped``: whether the scored raster is rewritten in the published ids (a run) or left as it
    is (``geoseg evaluate``), which ``class_mapping.csv``'s ``raster_value`` says.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics() if metrics is None else metrics
    paths = {
        "metrics": write_atomic(out / "metrics.csv", lambda p: metrics.to_csv(p, index=False)),
        "confusion": write_atomic(out / "confusion.csv", lambda p: confusion_table(evaluation).to_csv(p)),
        "class_mapping": write_atomic(
            out / "class_mapping.csv", lambda p: evaluation.mapping_table(remapped).to_csv(p, index=False)
        ),
    }
    if evaluation.scenes:  # several scenes: each one's figures beside the pooled ones
        from geoseg.accuracy.scenes import scenes_metrics, scenes_table

        paths["scenes"] = write_atomic(out / "scenes.csv", lambda p: scenes_table(evaluation).to_csv(p, index=False))
        paths["scenes_metrics"] = write_atomic(
            out / "scenes_metrics.csv", lambda p: scenes_metrics(evaluation).to_csv(p, index=False)
        )
    gdf = regions_with_metrics(evaluation, regions_path)
    paths["regions_metrics"] = write_atomic(out / "regions_metrics.gpkg", lambda p: _write_regions_gpkg(gdf, p))
    return paths, gdf


def _write_regions_gpkg(gdf, path: Path) -> None:  # GeoDataFrame
    """The regions layer with its default QGIS style (mIoU, red to green) in ``layer_styles``."""
    from geoseg.io.gpkg import miou_style, write_layer_styles

    gdf.to_file(path, driver="GPKG", layer="regions_metrics")
    write_layer_styles(Path(path), [miou_style("regions_metrics")])


def class_label(ev: Evaluation, c: Any) -> str:
    """``"<id> <name>"`` of a class (strings such as ``"unassigned"`` as they are)."""
    return c if isinstance(c, str) else f"{c} {ev.class_names.get(int(c), '')}".strip()


def confusion_table(evaluation: Evaluation, region: Any = "ALL") -> pd.DataFrame:
    """The confusion matrix with ``"<id> <name>"`` labels, for the CSV and the page."""
    df = evaluation.confusion(region)
    df.index = [class_label(evaluation, c) for c in df.index]
    df.columns = [class_label(evaluation, c) for c in df.columns]
    df.index.name = "reference \\ predicted"
    return df


def regions_with_metrics(evaluation: Evaluation, regions_path: str | Path | None = None):
    """The regions as a GeoDataFrame with their figures (the scene outline if there are none)."""
    import geopandas as gpd
    from shapely import box

    table = evaluation.regions_table()
    regions = evaluation.regions
    if regions_path is not None:
        from geoseg.accuracy.regions import open_regions

        field = getattr(regions, "field", None)
        regions = open_regions(regions_path, field, label_grid(evaluation), merge_duplicates=True)  # checked already
    if regions is None:
        gdf = gpd.GeoDataFrame(
            {"region_id": ["ALL"]}, geometry=[box(*label_grid(evaluation).bounds)], crs=label_grid(evaluation).crs
        )
    else:
        gdf = regions_frame(regions)
    t = table.set_index(pd.Index(list(table["region_id"]), dtype=object)).drop(columns="region_id")
    joined = t.reindex(pd.Index(list(gdf["region_id"]), dtype=object))
    for col in joined.columns:
        values = pd.to_numeric(pd.Series(joined[col].to_numpy()), errors="coerce")
        gdf[col] = values.astype("Int64" if col.endswith("_px") else "float64").to_numpy()
    return gdf


def label_grid(ev: Evaluation) -> GeoGrid:
    """The label grid of an evaluation (every evaluation made by :func:`evaluate` has one)."""
    if ev.grid is None:
        raise ValueError("this evaluation has no label grid; build it with geoseg.accuracy.evaluate.evaluate")
    return ev.grid
