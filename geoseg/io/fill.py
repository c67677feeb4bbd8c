"""Undeclared fill: a constant value around a scene's edges that the file does not mark as nodata.

Landsat L1TP and many cropped products fill the rectangle around the swath with zeros and declare no
nodata value; those pixels then count as data (a k-means cluster of their own, a class in the
metrics). geoseg cannot know a zero is fill, so it says so once, on the client, before any work: when
one value covers most of a file's outer ring of pixels and is not the declared nodata, a warning names
the value, its share of the border and of the file, and the ``nodata:`` to set. The check reads the first
band of at most :data:`MAX_FILES_CHECKED` files per scene: a decimated copy (an overview where the file has
one), at most :data:`CHECK_SIDE` pixels a side, or only the outer ring of a large file without overviews.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Longest side of the decimated copy read for the check (pixels).
CHECK_SIDE = 512
#: Files up to this many pixels are read whole (decimated) when they have no overview.
SMALL_FILE = 16_000_000
#: Share of the border a single value must cover to be taken for fill.
BORDER_SHARE = 0.5
#: Files checked per scene (the first of each layer, then further tiles): a mosaic of 10,000 tiles stays cheap.
MAX_FILES_CHECKED = 8


def border_fill(src: Any) -> tuple[float, float, float | None] | None:
    """``(value, share of the border, share of the file)`` of an undeclared constant fill, else ``None``.

    ``src``: a :class:`~geoseg.io.sources.Source`. Files with an alpha band or a GDAL mask are skipped
    (their fill is masked); pixels equal to the declared nodata or NaN do not count. The share of the file
    is measured on an overview (or the whole of a file up to :data:`SMALL_FILE` pixels); for a larger file
    without overviews only its outer ring of pixels is read (a few blocks) and the share is ``None``.
    """
    if src.mask in ("alpha", "gdal"):
        return None
    from geoseg.io.sources import open_dataset

    h, w = src.grid.height, src.grid.width
    if min(h, w) < 3:
        return None
    with open_dataset(src.path) as ds:
        band = src.bands[0]
        if ds.overviews(band) or h * w <= SMALL_FILE:
            img = _decimated(ds, band, h, w)
            ring = _ring(img)
        else:
            img = None
            ring = np.concatenate([_strip(ds, band, 0, 0, 1, w), _strip(ds, band, h - 1, 0, 1, w),
                                   _strip(ds, band, 1, 0, h - 2, 1), _strip(ds, band, 1, w - 1, h - 2, 1)])
    ok = _counted(ring, src.nodata)
    if not ok.any():
        return None
    values, counts = np.unique(ring[ok], return_counts=True)
    k = int(np.argmax(counts))
    value, share = values[k], counts[k] / ring.size
    if share < BORDER_SHARE:
        return None
    file_share = None if img is None else float(np.count_nonzero(img == value) / img.size)
    return float(value), float(share), file_share


def _decimated(ds: Any, band: int, h: int, w: int) -> np.ndarray:
    from rasterio.enums import Resampling

    f = max(1, math.ceil(max(h, w) / CHECK_SIDE))
    shape = (max(3, h // f), max(3, w // f))
    return ds.read(band, out_shape=shape, resampling=Resampling.nearest)  # values as stored


def _strip(ds: Any, band: int, row: int, col: int, height: int, width: int) -> np.ndarray:
    from rasterio.windows import Window

    return ds.read(band, window=Window(col, row, width, height)).ravel()


def _ring(img: np.ndarray) -> np.ndarray:
    return np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])


def _counted(values: np.ndarray, nodata: float | None) -> np.ndarray:
    ok = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        ok &= values != nodata
    return ok


def warn_border_fill(layers: Sequence[Any]) -> list[tuple[str, float, float, float | None]]:
    """Warn, once per file, about undeclared fill in the scene's layers; returns ``(path, value, border
    share, file share)`` of each warning (for tests and ``run.json``)."""
    firsts = [layer.sources[0] for layer in layers if layer.sources]
    rest = [s for layer in layers for s in layer.sources[1:]]
    found = []
    for src in (firsts + rest)[:MAX_FILES_CHECKED]:
        try:
            hit = border_fill(src)
        except Exception as exc:  # a hint only: the read proper reports a bad file
            log.debug("fill check of %s failed: %s", src.path, exc)
            continue
        if hit is None:
            continue
        value, border, share = hit
        shown = int(value) if value == int(value) else value
        of_file = "" if share is None else f" and {100 * share:.1f} % of the file"
        log.warning("%s: the value %s fills %.0f %% of its border%s but is not declared nodata; if it is fill, "
                    "set `nodata: %s` on this input (else it is segmented as data)",
                    src.path, shown, 100 * border, of_file, shown)
        found.append((src.path, value, border, share))
    return found
