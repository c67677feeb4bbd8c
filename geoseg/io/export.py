"""Label rasters for GIS tools: a Cloud-Optimised GeoTIFF, and overview levels inside the Zarr store.

Both read the label store chunk by chunk, so memory stays at a few chunks whatever the raster size.

* :func:`export_cog` writes a tiled GeoTIFF window by window, then has GDAL's COG driver
  rewrite it with internal overviews (``MODE`` resampling: the most frequent class, the right
  choice for categories), a colour table from the legend and nodata 255. The file appears
  under its final name only when complete; beside it, GDAL's ``.aux.xml`` names the classes
  (category names) and holds the colour table of the classes present (GDAL prefers it to the
  TIFF's 256 entries), and ``labels.qml`` is the QGIS style (colours and names).
* :func:`build_overviews` adds downsampled copies of the labels (mode or nearest) as *complete
  label stores of their own* under ``<labels.zarr>/overviews/<factor>/``. They are not listed in
  the store's consolidated metadata, so ``rasterio.open("labels.zarr")`` (GDAL reads
  ``.zmetadata``), ``xarray.open_zarr`` and :func:`~geoseg.io.labelstore.read_label_info` see the
  store exactly as before, while each level opens on its own, georeferenced, with
  ``rasterio.open("labels.zarr/overviews/4")`` or ``read_label_info(...)``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

from geoseg.errors import JobSpecError, OutputError
from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.io.atomic import atomic_path, remove_path, temporary_name, write_text_atomic
from geoseg.io.labelstore import (
    KMEANS_MODEL_ATTR,
    KMEANS_MODEL_TAG,
    LabelStoreWriter,
    is_geotiff,
    read_label_info,
    read_label_window,
)
from geoseg.legend import NODATA_LABEL, ClassInfo, legend_to_json, paletted_qml
from geoseg.progress import chunk_progress

#: Folder inside a label store that holds the overview levels (one label store per factor).
OVERVIEWS_DIR = "overviews"

Resampling = Literal["mode", "nearest"]


def colormap(legend: Sequence[ClassInfo], present: Sequence[int] | None = None) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table entries for the classes of a legend (those ``present`` in the raster, when
    given); ids below the highest one without a class are transparent. No entry for nodata (the
    band's nodata value says it): a table then ends at the highest class, so QGIS lists the
    classes, not 256 entries mostly black.

    >>> colormap([ClassInfo(2, "water", "#2166ac")])
    {0: (0, 0, 0, 0), 1: (0, 0, 0, 0), 2: (33, 102, 172, 255)}
    >>> colormap([ClassInfo(1, "a", "#000000"), ClassInfo(2, "b", "#ffffff")], present=[2])
    {0: (0, 0, 0, 0), 1: (0, 0, 0, 0), 2: (255, 255, 255, 255)}
    """
    keep = None if present is None else {int(v) for v in present}
    classes = {c.id: (*c.rgb(), 255) for c in legend if 0 <= c.id < NODATA_LABEL and (keep is None or c.id in keep)}
    return {i: classes.get(i, (0, 0, 0, 0)) for i in range(max(classes, default=-1) + 1)}


def export_cog(
    labels_path: str | Path,
    out_tif: str | Path,
    *,
    blocksize: int = 512,
    compress: str = "DEFLATE",
    overview_resampling: Resampling = "mode",
    overview_count: int | None = None,
    show_progress: bool = False,
) -> Path:
    """Write the labels as a Cloud-Optimised GeoTIFF with overviews, colour table and nodata 255.

    The labels are copied chunk by chunk into a temporary tiled GeoTIFF in the destination
    folder, which GDAL's COG driver then rewrites (building overviews from it) into another
    temporary file that is renamed to ``out_tif``. ``overview_count`` forces a number of
    overview levels (default: GDAL's, halving until a level fits one block).
    """
    import rasterio
    from rasterio.shutil import copy as rio_copy

    if overview_resampling not in ("mode", "nearest"):
        raise JobSpecError(f"overview_resampling must be 'mode' or 'nearest', got {overview_resampling!r}")
    info = read_label_info(labels_path)
    out = Path(out_tif)
    if not out.parent.exists():
        raise OutputError(f"output folder {out.parent} does not exist")
    profile = {
        "driver": "GTiff", "height": info.grid.height, "width": info.grid.width, "count": 1, "dtype": "uint8",
        "crs": info.grid.crs, "transform": info.grid.transform, "nodata": NODATA_LABEL, "tiled": True,
        "blockxsize": blocksize, "blockysize": blocksize, "compress": "ZSTD", "BIGTIFF": "IF_SAFER",
    }
    staging = temporary_name(out)  # the tiled copy GDAL's COG driver rewrites
    try:
        with rasterio.open(staging, "w", **profile) as dst:
            dst.set_band_description(1, "class label")
            dst.update_tags(GEOSEG_CLASSES=json.dumps(legend_to_json(info.legend)))
            if KMEANS_MODEL_ATTR in info.attrs:  # which model numbered the clusters, as the store says
                dst.update_tags(**{KMEANS_MODEL_TAG: str(info.attrs[KMEANS_MODEL_ATTR])})
            windows = list(info.chunk_grid.windows())
            seen = np.zeros(256, np.int64)
            for w in chunk_progress(windows, len(windows), "writing labels.tif", show_progress):
                block = read_label_window(info.path, w)
                seen += np.bincount(block.ravel(), minlength=256)
                dst.write(block, 1, window=w.to_rasterio())
            present = np.flatnonzero(seen).tolist()
            dst.write_colormap(1, colormap(info.legend, present) or {NODATA_LABEL: (0, 0, 0, 0)})
        options = {
            "COMPRESS": compress, "BLOCKSIZE": blocksize, "OVERVIEW_RESAMPLING": overview_resampling.upper(),
            "OVERVIEWS": "IGNORE_EXISTING", "BIGTIFF": "IF_SAFER",
        }
        if overview_count is not None:
            options["OVERVIEW_COUNT"] = int(overview_count)
        with atomic_path(out) as partial:
            rio_copy(str(staging), str(partial), driver="COG", **options)
    finally:
        remove_path(staging)
    write_text_atomic(Path(str(out) + ".aux.xml"), category_names_pam(info.legend, present))
    write_text_atomic(out.with_suffix(".qml"), paletted_qml(info.legend))
    return out


def category_names_pam(legend: Sequence[ClassInfo], present: Sequence[int] | None = None) -> str:
    """GDAL's PAM side-car of band 1: category names (``GetCategoryNames``, so GDAL tools and QGIS
    show class names, not numbers; GTiff keeps them only there) and the colour table of the
    classes ``present``. GDAL (3.6 and 3.10 tested) takes this table over the TIFF's own, which
    TIFF makes 256 entries long for 8 bits: QGIS then lists the classes, not 250 black entries.

    >>> pam = category_names_pam([ClassInfo(1, "water", "#2166ac")])
    >>> "<Category>water</Category>" in pam and '<Entry c1="33" c2="102" c3="172" c4="255"/>' in pam
    True
    """
    names = {c.id: c.name for c in legend if 0 <= c.id < NODATA_LABEL}
    table = colormap(legend, present)
    top = max([*names, *table], default=-1)
    cats = "".join(f"<Category>{escape(names.get(i, ''))}</Category>" for i in range(top + 1))
    entries = "".join('<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*table[i]) for i in sorted(table))
    palette = f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>" if table else ""
    return (
        f'<PAMDataset>\n  <PAMRasterBand band="1">\n    {palette}<CategoryNames>{cats}</CategoryNames>\n'
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )


# ---------------------------------------------------------------------------------------------
# Zarr overviews
# ---------------------------------------------------------------------------------------------


def downsample_mode(labels: np.ndarray, factor: int, nodata: int = NODATA_LABEL) -> np.ndarray:
    """Most frequent non-nodata label in each ``factor`` × ``factor`` block (ties: lowest label).

    Edge blocks may be partial; a block with only nodata stays nodata.

    >>> downsample_mode(np.array([[1, 1, 2], [2, 1, 255]], np.uint8), 2).tolist()
    [[1, 2]]
    """
    h, w = labels.shape
    oh, ow = -(-h // factor), -(-w // factor)
    padded = np.full((oh * factor, ow * factor), nodata, dtype=labels.dtype)
    padded[:h, :w] = labels
    blocks = padded.reshape(oh, factor, ow, factor).transpose(0, 2, 1, 3).reshape(oh, ow, factor * factor)
    best = np.full((oh, ow), nodata, dtype=labels.dtype)
    best_count = np.zeros((oh, ow), dtype=np.int32)
    for value in np.unique(labels):
        if value == nodata:
            continue
        count = (blocks == value).sum(axis=-1, dtype=np.int32)
        better = count > best_count
        best[better] = value
        best_count[better] = count[better]
    return best


def downsample_nearest(labels: np.ndarray, factor: int) -> np.ndarray:
    """The pixel nearest each block's centre (GDAL's nearest-neighbour choice), by striding.

    >>> downsample_nearest(np.arange(16, dtype=np.uint8).reshape(4, 4), 2).tolist()
    [[5, 7], [13, 15]]
    """
    h, w = labels.shape
    oh, ow = -(-h // factor), -(-w // factor)
    rows = np.minimum(np.arange(oh) * factor + factor // 2, h - 1)
    cols = np.minimum(np.arange(ow) * factor + factor // 2, w - 1)
    return labels[np.ix_(rows, cols)]


def overview_grid(grid: ChunkGrid, factor: int) -> ChunkGrid:
    """The grid of an overview ``factor`` times coarser (edges rounded up), same chunk size."""
    coarse = GeoGrid(-(-grid.height // factor), -(-grid.width // factor), grid.transform * Affine.scale(factor),
                     grid.crs_wkt)
    return coarse.tiles(grid.chunk)


def overview_path(labels_path: str | Path, factor: int) -> Path:
    """Where the overview of ``factor`` lives: ``<labels.zarr>/overviews/<factor>``."""
    return Path(labels_path) / OVERVIEWS_DIR / str(int(factor))


def _check_levels(levels: Sequence[int]) -> list[int]:
    levels = [int(f) for f in levels]
    if not levels or levels != sorted(set(levels)) or levels[0] < 2:
        raise JobSpecError(f"overview levels must be increasing factors >= 2, got {levels}")
    for prev, cur in zip(levels, levels[1:]):
        if cur % prev:
            raise JobSpecError(f"each overview factor must be a multiple of the previous one, got {prev} then {cur}")
    return levels


def build_overviews(
    labels_path: str | Path,
    levels: Sequence[int] = (2, 4, 8, 16),
    *,
    resampling: Resampling = "mode",
    show_progress: bool = False,
) -> list[Path]:
    """Add downsampled pyramid levels under ``<labels.zarr>/overviews/<factor>/`` and return their paths.

    Each level is computed from the previous one (from full resolution for the first), one
    output chunk at a time, and written as a complete label store (same CRS, legend, nodata;
    transform scaled by the factor). Existing levels are replaced. ``mode`` keeps the most
    frequent class of each block (ignoring nodata), ``nearest`` the pixel nearest its centre.
    """
    if resampling not in ("mode", "nearest"):
        raise JobSpecError(f"resampling must be 'mode' or 'nearest', got {resampling!r}")
    levels = _check_levels(levels)
    if is_geotiff(labels_path):
        raise JobSpecError(f"{labels_path}: Zarr overviews are built inside a labels.zarr store; "
                           "for a GeoTIFF use gdaladdo, or export_cog which writes its own overviews")
    info = read_label_info(labels_path)
    source, source_grid, source_factor = info.path, info.chunk_grid, 1
    out_paths = []
    for factor in levels:
        step = factor // source_factor
        grid = overview_grid(source_grid, step)
        target = overview_path(info.path, factor)
        if target.exists():
            shutil.rmtree(target)
        attrs = {"geoseg:overview_factor": factor, "geoseg:overview_resampling": resampling}
        writer = LabelStoreWriter.create(target, grid, info.legend, attrs)
        windows = list(grid.windows())
        for w in chunk_progress(windows, len(windows), f"overview {factor}", show_progress):
            src_window = _source_window(w, step, source_grid)
            block = read_label_window(source, src_window)
            small = downsample_mode(block, step, info.nodata) if resampling == "mode" else downsample_nearest(block, step)
            writer.write(w, small[: w.height, : w.width])
        writer.finalize()
        out_paths.append(target)
        source, source_grid, source_factor = target, grid, factor
    return out_paths


def _source_window(window: Window, step: int, source: ChunkGrid) -> Window:
    """The source pixels an overview window is computed from (clipped at the raster edge)."""
    r0, c0 = window.row_off * step, window.col_off * step
    return Window(r0, c0, min(window.height * step, source.height - r0), min(window.width * step, source.width - c0))
