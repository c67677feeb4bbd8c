"""The accuracy report: one self-contained HTML page, with the tables beside it.

:func:`write_outputs` writes the tables (:mod:`geoseg.accuracy.tables`: ``metrics.csv``,
``confusion.csv``, ``class_mapping.csv``, ``regions_metrics.gpkg``) and ``report.html``:
self-contained (images are base64 PNGs drawn by matplotlib, no external URL): headline figures,
per-class IoU bars, the confusion heat map, a map of regions coloured by mIoU and a small preview
of image, reference and prediction side by side. A job with ``objects:`` adds its objects table
afterwards (:mod:`geoseg.accuracy.objectreport`).

Every file is written through :mod:`geoseg.io.atomic` (a reader never sees a half-written
output). Previews read decimated overviews only (a strided Zarr read, rasterio ``out_shape``
reads), so memory stays small whatever the raster size.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine

from geoseg.accuracy.evaluate import Evaluation
from geoseg.accuracy.figures import area_unit, percent, plain_number
from geoseg.accuracy.reference import SENTINEL, RasterReference, VectorReference, reference_window
from geoseg.accuracy.regions import GridRegions
from geoseg.accuracy.tables import class_label, label_grid, write_tables
from geoseg.geo import GeoGrid
from geoseg.io.atomic import write_text_atomic

#: Longest side of preview images, in pixels.
PREVIEW_PX = 400


_NODATA_COLOR = "#ffffff"


_UNASSIGNED_COLOR = "#9e9e9e"


def write_outputs(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    regions_path: str | Path | None = None,
    preview: str | Path | bool | None = None,
    remapped: bool = True,
) -> dict[str, Path]:
    """Write every accuracy output into ``out_dir`` and return ``{name: path}``.

    ``regions_path``: the layer to attach region figures to (default: the evaluation's own
    regions; ids are matched on the evaluation's region field). ``preview``: ``False`` for no
    preview, ``None``/``True`` for reference and prediction, or an image path to add its RGB
    composite. ``remapped``: see :func:`geoseg.accuracy.tables.write_tables`.
    """
    out = Path(out_dir)
    metrics = evaluation.metrics()
    paths, gdf = write_tables(evaluation, out, regions_path=regions_path, metrics=metrics, remapped=remapped)
    paths["report"] = write_text_atomic(out / "report.html", render_html(evaluation, metrics, gdf, preview))
    return paths


def _png(fig) -> str:  # matplotlib Figure
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    """pyplot, on the Agg backend only when nothing chose one yet: never switch a notebook's inline backend."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def iou_bar_chart(ev: Evaluation, metrics: pd.DataFrame) -> str:
    """Horizontal bars of per-class IoU over the whole scene (classes that occur)."""
    plt = _plt()
    scene = _scene_rows(metrics)
    cls = scene[(scene["kind"] == "class") & scene["iou"].notna()]
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(cls), 2) + 1))
    names = [class_label(ev, int(c)) for c in cls["class_id"]]
    colors = [ev.class_colors.get(int(c), "#4c72b0") for c in cls["class_id"]]
    ax.barh(names, cls["iou"].to_numpy(float), color=colors, edgecolor="#333333")
    for y, v in enumerate(cls["iou"].to_numpy(float)):
        ax.text(min(v + 0.01, 0.92), y, f"{v:.3f}", va="center")
    miou = float(scene[scene["kind"] == "region"]["miou"].iloc[0])
    if not math.isnan(miou):
        ax.axvline(miou, color="#d62728", linestyle="--", label=f"mIoU {miou:.3f}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the bars, never over a label
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("IoU (intersection over union)")
    ax.set_title("Per-class IoU, whole scene")
    return _png(fig)


def confusion_heatmap(ev: Evaluation) -> str:
    """Row-normalised confusion heat map (share of each reference class), counts written in."""
    plt = _plt()
    df = ev.confusion("ALL")
    keep_rows = df.sum(axis=1) > 0
    keep_cols = df.sum(axis=0) > 0
    df = df.loc[keep_rows, keep_cols] if keep_rows.any() and keep_cols.any() else df
    counts = df.to_numpy(dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = max(df.shape)
    fig, ax = plt.subplots(figsize=(min(2 + 0.7 * n, 14), min(1.5 + 0.6 * n, 12)))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 16:
        for (i, j), v in np.ndenumerate(counts):
            ax.text(j, i, f"{int(v):,}", ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(df.shape[1]), [class_label(ev, c) for c in df.columns], rotation=45, ha="right")
    ax.set_yticks(range(df.shape[0]), [class_label(ev, c) for c in df.index])
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title("Confusion matrix (colour = share of the reference class)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def regions_map(ev: Evaluation, gdf) -> str | None:  # GeoDataFrame
    """Regions coloured by mIoU (grey: no valid pixels), over the label raster's outline."""
    if ev.regions is None or len(gdf) == 0:
        return None
    plt = _plt()
    from shapely import box

    grid = label_grid(ev)
    crs = grid.crs
    g = gdf.to_crs(crs) if gdf.crs is not None and gdf.crs != crs else gdf
    fig, ax = plt.subplots(figsize=(7, 6))
    import geopandas as gpd

    gpd.GeoSeries([box(*grid.bounds)], crs=crs).boundary.plot(ax=ax, color="black", linewidth=1)
    missing = g[g["miou"].isna()]
    if len(missing):
        missing.plot(ax=ax, color="#d9d9d9", edgecolor="#999999", linewidth=0.3)
    have = g[g["miou"].notna()]
    if len(have):
        have.plot(ax=ax, column="miou", cmap="RdYlGn", vmin=0, vmax=1, edgecolor="#555555", linewidth=0.3, legend=True,
                  legend_kwds={"label": "mIoU", "shrink": 0.7})  # fmt: skip
    left, bottom, right, top = grid.bounds
    ax.set_xlim(left - 0.02 * (right - left), right + 0.02 * (right - left))
    ax.set_ylim(bottom - 0.02 * (top - bottom), top + 0.02 * (top - bottom))
    ax.set_aspect("equal")
    ax.set_title("Regions coloured by mIoU (grey: no valid pixels)")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    return _png(fig)


def _scene_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[metrics["region_id"].map(lambda v: isinstance(v, str) and v == "ALL")]


def preview_grid(grid: GeoGrid, max_px: int = PREVIEW_PX) -> tuple[int, GeoGrid]:
    """Decimation step and grid of a preview of ``grid`` whose long side is at most ``max_px``.

    >>> from rasterio.crs import CRS
    >>> step, g = preview_grid(GeoGrid(1000, 500, Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(32633).to_wkt()), 400)
    >>> step, g.shape, g.transform.a
    (3, (334, 167), 30.0)
    """
    step = max(1, math.ceil(max(grid.shape) / max_px))
    h, w = math.ceil(grid.height / step), math.ceil(grid.width / step)
    return step, GeoGrid(h, w, grid.transform @ Affine.scale(step), grid.crs_wkt)


def read_labels_decimated(path: Path | str, step: int) -> np.ndarray:
    """Every ``step``-th label pixel, chunk by chunk (a strided Zarr read)."""
    import zarr

    from geoseg.io.labelstore import is_geotiff, label_array_location

    if is_geotiff(path):
        from geoseg.io.opener import open_raster

        with open_raster(path, "label", what="label raster") as ds:  # nearest-neighbour decimated (overviews)
            h, w = math.ceil(ds.height / step), math.ceil(ds.width / step)
            return ds.read(1, out_shape=(h, w))
    arr = zarr.open_array(label_array_location(path), mode="r", zarr_format=2)
    return np.asarray(arr[::step, ::step])


def _decimated(src, indexes: Sequence[int], grid: GeoGrid, fill: float):
    """Bands of ``src`` on a coarse ``grid``: an ``out_shape`` read when CRSs agree, else a WarpedVRT."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import from_bounds

    crs, transform, shape = grid.crs, grid.transform, grid.shape
    if src.crs == crs and src.transform.b == 0 and transform.b == 0:
        win = from_bounds(*grid.bounds, transform=src.transform)
        return src.read(
            list(indexes), window=win, out_shape=(len(indexes), *shape), boundless=True, fill_value=fill,
            resampling=Resampling.nearest,
        )  # fmt: skip
    with WarpedVRT(src, crs=crs, transform=transform, width=shape[1], height=shape[0], resampling=Resampling.nearest,
                   nodata=src.nodata if src.nodata is not None else fill) as vrt:  # fmt: skip
        return vrt.read(list(indexes))


def read_reference_decimated(ref: Any, grid: GeoGrid) -> np.ndarray:
    """Reference classes on the preview ``grid``, ``SENTINEL`` where missing."""
    if isinstance(ref, RasterReference):
        from geoseg.io.opener import open_raster

        with open_raster(ref.path, "reference") as src:
            data = _decimated(src, [1], grid, fill=0)[0].astype(np.float64)
            mask = _decimated_mask(src, grid) & ~np.isnan(data)
        if ref.nodata is not None:
            mask &= data != ref.nodata
        if ref.fill:  # values the file names no data, or the job's reference nodata: not drawn, as not counted
            mask &= ~np.isin(data, ref.fill)
        return np.where(mask, np.nan_to_num(data), SENTINEL).astype(np.int64)
    if isinstance(ref, VectorReference):
        values, valid = reference_window(ref, grid)  # the same classes, value and background as the figures
        return np.where(valid, values, SENTINEL).astype(np.int64)
    return np.full(grid.shape, SENTINEL, np.int64)


def _decimated_mask(src, grid: GeoGrid) -> np.ndarray:
    """True where the preview pixel lies inside the source raster."""
    from rasterio.warp import transform as warp_transform

    crs, transform, shape = grid.crs, grid.transform, grid.shape
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    xs, ys = transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    if src.crs != crs:
        xs, ys = warp_transform(crs, src.crs, xs, ys)
    c, r = ~src.transform @ (np.asarray(xs), np.asarray(ys))
    inside = (c >= 0) & (c < src.width) & (r >= 0) & (r < src.height)
    return inside.reshape(shape)


def read_rgb_decimated(path: str | Path, grid: GeoGrid) -> np.ndarray:
    """An RGB composite of the true-colour bands (:func:`true_colour_bands`), one 2-98 % stretch over all three."""
    from geoseg.io.opener import open_raster

    with open_raster(str(path), "input", url_ok=True) as src:
        idx = true_colour_bands(src)
        data = _decimated(src, idx, grid, fill=np.nan if src.dtypes[0].startswith("float") else 0)
        data = data.astype(np.float64)
        if src.nodata is not None:
            data[data == src.nodata] = np.nan
    finite = data[np.isfinite(data)]
    # one stretch for the three bands: a stretch per band turns grey fields magenta and pales the scene
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    rgb = np.clip((np.moveaxis(data, 0, -1) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb[~np.isfinite(rgb)] = 1.0
    return rgb


#: Band names (descriptions) of the red, green and blue bands, by convention: common names, Sentinel-2, Landsat 8/9.
TRUE_COLOUR_NAMES = (("RED", "GREEN", "BLUE"), ("B04", "B03", "B02"), ("SR_B4", "SR_B3", "SR_B2"), ("B4", "B3", "B2"))


def true_colour_bands(src: Any) -> list[int]:
    """The (red, green, blue) band indexes of an open rasterio dataset: by the role each band's
    description spells (:mod:`geoseg.io.bandroles`, sensor band numbers through the file name's
    sensor), by known band names, then colour interpretation; bands 1-3 when none says, band 1 as
    grey for fewer than three bands."""
    from rasterio.enums import ColorInterp

    from geoseg.io.bandroles import role_from_name, sensor_hint

    sensor = sensor_hint([str(src.name)])
    roles = [role_from_name(d, sensor)[0] for d in src.descriptions]
    if all(r in roles for r in ("red", "green", "blue")):
        return [roles.index(r) + 1 for r in ("red", "green", "blue")]
    desc = [(d or "").upper() for d in src.descriptions]
    for names in TRUE_COLOUR_NAMES:
        if all(n in desc for n in names):
            return [desc.index(n) + 1 for n in names]
    interp = list(src.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in wanted):
        return [interp.index(c) + 1 for c in wanted]
    return [1, 2, 3] if src.count >= 3 else [1, 1, 1]


def _class_image(ev: Evaluation, classes: np.ndarray) -> np.ndarray:
    """Paint class ids with the evaluation's colours (white = nodata, grey = unassigned)."""
    from matplotlib.colors import to_rgb

    rgb = np.ones(classes.shape + (3,))
    rgb[classes == -2] = to_rgb(_UNASSIGNED_COLOR)
    for c, color in ev.class_colors.items():
        rgb[classes == c] = to_rgb(color)
    return rgb


def preview_images(ev: Evaluation, image: str | Path | None = None) -> str | None:
    """Image (optional), reference and mapped prediction side by side, on a decimated grid."""
    if ev.labels_path is None:
        return None
    plt = _plt()
    from matplotlib.patches import Patch

    step, small = preview_grid(label_grid(ev))
    labels = read_labels_decimated(ev.labels_path, step).astype(np.int64)
    shape = labels.shape
    small = GeoGrid(shape[0], shape[1], small.transform, small.crs_wkt)  # the decimated read decides the shape
    lut = np.full(256, -2, np.int64)
    for lab, cls in ev.mapping.items():
        if 0 <= lab < 256:
            lut[lab] = cls
    lut[255] = SENTINEL  # label nodata
    pred = lut[np.clip(labels, 0, 255)]
    ref = read_reference_decimated(ev.reference, small)
    panels = []
    if image is not None:
        panels.append(("image (RGB composite)", read_rgb_decimated(image, small)))
    panels += [("reference", _class_image(ev, ref)), (f"prediction ({ev.mapping_method} mapping)", _class_image(ev, pred))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6 * shape[0] / max(shape[1], 1) + 1))
    for ax, (title, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    shown = np.union1d(np.unique(ref), np.unique(pred))
    present = [int(c) for c in ev.class_ids if c in shown]
    handles = [Patch(color=ev.class_colors[c], label=class_label(ev, c)) for c in present]
    handles.append(Patch(facecolor=_NODATA_COLOR, edgecolor="#999999", label="nodata"))
    if (pred == -2).any():
        handles.append(Patch(color=_UNASSIGNED_COLOR, label="unassigned"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
    fig.subplots_adjust(bottom=0.18)
    return _png(fig)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Accuracy report: {{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { background: #f4f6f8; border-radius: 8px; padding: .8rem 1.2rem; min-width: 9rem; }
.card .v { font-size: 1.6rem; font-weight: 600; } .card .k { color: #555; font-size: .85rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f6f8; }
td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; }
.note { color: #666; font-size: .85rem; }
.warn { color: #9a3412; background: #fff7ed; border-left: 4px solid #ea580c; padding: .4rem .8rem; font-weight: 600; }
.swatch { display: inline-block; width: .9em; height: .9em; border: 1px solid #999; vertical-align: middle; margin-right: .3em; }
</style></head>
<body>
<h1>Accuracy report</h1>
<p class="note">Labels: <code>{{ labels }}</code><br>Reference: <code>{{ reference }}</code><br>Regions: {{ regions }}<br>
Class mapping: <b>{{ mapping_method }}</b>. Pixels where labels or reference are nodata are left out of every figure.</p>
<div class="coverage">{% for line in coverage %}<p class="{{ 'warn' if line.startswith('WARNING') else 'note' }}">{{ line }}</p>
{% endfor %}</div>
<div class="cards">
{% for k, v in cards %}<div class="card"><div class="v">{{ v }}</div><div class="k">{{ k }}</div></div>
{% endfor %}</div>

{% if scenes %}<h2>Scenes</h2>
<p class="note">Figures below are pooled over all {{ scenes|length - 1 }} scenes (every pixel of every scene counted together); per scene:</p>
<table><tr><th class="l">scene</th><th>mIoU</th><th>overall accuracy</th><th>kappa</th><th>valid px</th><th>scored</th></tr>
{% for r in scenes %}<tr><td class="l">{{ r.scene }}</td><td>{{ r.miou }}</td><td>{{ r.oa }}</td><td>{{ r.kappa }}</td><td>{{ r.valid }}</td><td>{{ r.scored }}</td></tr>
{% endfor %}</table>{% endif %}

<h2>Per-class figures (whole scene)</h2>
<table><tr><th class="l">class</th><th>IoU</th><th>precision</th><th>recall</th><th>F1</th><th>reference px</th><th>reference area ({{ area_unit }})</th></tr>
{% for r in classes %}<tr><td class="l"><span class="swatch" style="background: {{ r.color }}"></span>{{ r.name }}</td>
<td>{{ r.iou }}</td><td>{{ r.precision }}</td><td>{{ r.recall }}</td><td>{{ r.f1 }}</td><td>{{ r.support }}</td><td>{{ r.area }}</td></tr>
{% endfor %}</table>
<p class="note">Empty cells: the figure is undefined (e.g. a class absent from both reference and prediction).</p>
<img alt="Per-class IoU bar chart" src="{{ bar_png }}">

<h2>Confusion matrix</h2>
<img alt="Confusion matrix heat map" src="{{ confusion_png }}">

<h2>Regions</h2>
{% if map_png %}<img alt="Map of regions coloured by mIoU" src="{{ map_png }}">{% else %}<p class="note">No regions were given: figures are for the whole scene.</p>{% endif %}
{% if worst %}<p>The {{ worst|length }} regions with the lowest mIoU (of {{ n_regions }}; all are in <code>metrics.csv</code> and <code>regions_metrics.gpkg</code>):</p>
<table><tr><th class="l">region</th><th>mIoU</th><th>overall accuracy</th><th>kappa</th><th>valid px</th><th>excluded px</th></tr>
{% for r in worst %}<tr><td class="l">{{ r.id }}</td><td>{{ r.miou }}</td><td>{{ r.oa }}</td><td>{{ r.kappa }}</td><td>{{ r.valid }}</td><td>{{ r.excluded }}</td></tr>
{% endfor %}</table>{% endif %}

<h2>Class mapping</h2>
<table><tr><th>label</th><th class="l">label name</th><th class="l">→ reference class</th><th>scored px</th></tr>
{% for r in mapping %}<tr><td>{{ r.label_id }}</td><td class="l">{{ r.label_name }}</td><td class="l">{{ r.cls }}</td><td>{{ r.pixels }}</td></tr>
{% endfor %}</table>

{% if preview_png %}<h2>Preview</h2>
<img alt="Image, reference and prediction side by side" src="{{ preview_png }}">{% endif %}
<p class="note">geoseg accuracy report. Figures equal scikit-learn's on the same pixels; see metrics.csv for every region and class.</p>
</body></html>
"""  # noqa: E501 - the HTML template keeps one element per line; wrapping would change the page


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{float(v):.{digits}f}"


def render_html(evaluation: Evaluation, metrics: pd.DataFrame, gdf: Any, preview: str | Path | bool | None) -> str:
    """The self-contained HTML page (Jinja2, autoescaped; images inline as data URIs)."""
    import jinja2

    ev = evaluation
    scene = _scene_rows(metrics)
    top = scene[scene["kind"] == "region"].iloc[0]
    cls = scene[scene["kind"] == "class"]
    area_name, unit_m2 = area_unit(float(top["total_px"]) * ev.pixel_area_m2 if pd.notna(top["total_px"]) else 0.0)
    classes = [
        {
            "name": class_label(ev, int(r.class_id)),
            "color": ev.class_colors.get(int(r.class_id), "#cccccc"),
            "iou": _fmt(r.iou), "precision": _fmt(r.precision), "recall": _fmt(r.recall), "f1": _fmt(r.f1),
            "support": _fmt(int(r.support_px)), "area": plain_number(r.area_m2 / unit_m2),
        }  # fmt: skip
        for r in cls.itertuples()
    ]
    cards = [
        ("mean IoU", _fmt(top["miou"])),
        ("overall accuracy", _fmt(top["overall_accuracy"])),
        ("Cohen's kappa", _fmt(top["kappa"])),
        ("valid pixels", _fmt(int(top["valid_px"]))),
        ("excluded pixels (nodata)", _fmt(int(top["excluded_px"]))),
        ("share of the scene scored", percent(int(top["valid_px"]), int(top["total_px"]))),
    ]
    regs = metrics[(metrics["kind"] == "region")].iloc[1:]
    worst_rows = regs[regs["valid_px"].fillna(0) > 0].sort_values("miou", kind="stable").head(20)
    worst = [
        {"id": str(r.region_id), "miou": _fmt(r.miou), "oa": _fmt(r.overall_accuracy), "kappa": _fmt(r.kappa),
         "valid": _fmt(int(r.valid_px)), "excluded": _fmt(int(r.excluded_px))}  # fmt: skip
        for r in worst_rows.itertuples()
    ]
    mapping = [
        {"label_id": r.label_id, "label_name": r.label_name, "pixels": _fmt(int(r.pixels)),
         "cls": "unassigned" if pd.isna(r.class_id) else class_label(ev, int(r.class_id))}  # fmt: skip
        for r in ev.mapping_table().itertuples()
    ]
    preview_png = None
    if preview is not False:
        preview_png = preview_images(ev, None if preview is None or preview is True else preview)
    regions_desc = _describe_regions(ev)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(
        title=Path(str(ev.labels_path)).name,
        labels=str(ev.labels_path),
        reference=getattr(ev.reference, "path", ""),
        regions=regions_desc,
        mapping_method=ev.mapping_method,
        coverage=ev.coverage_lines(),
        scenes=_scene_rows_html(ev),
        cards=cards,
        classes=classes,
        area_unit=area_name,
        bar_png=iou_bar_chart(ev, metrics),
        confusion_png=confusion_heatmap(ev),
        map_png=regions_map(ev, gdf),
        worst=worst,
        n_regions=len(ev.region_ids) - 1,
        mapping=mapping,
        preview_png=preview_png,
    )


def _scene_rows_html(ev: Evaluation) -> list[dict[str, str]]:
    if not ev.scenes:
        return []
    from geoseg.accuracy.scenes import scenes_table

    return [
        {"scene": str(r.scene), "miou": _fmt(r.miou), "oa": _fmt(r.overall_accuracy), "kappa": _fmt(r.kappa),
         "valid": _fmt(int(r.valid_px)), "scored": "" if pd.isna(r.scored_share) else percent(r.scored_share, 1.0)}
        for r in scenes_table(ev).itertuples()
    ]


def _describe_regions(ev: Evaluation) -> str:
    r = ev.regions
    if r is None:
        return "none (whole scene)"
    if isinstance(r, GridRegions):
        return f"grid of {r.cell_m:g} m cells ({r.n_rows} × {r.n_cols})"
    return f"{r.path} (id field: {r.field or 'feature id'}, {len(r.ids)} regions)"
