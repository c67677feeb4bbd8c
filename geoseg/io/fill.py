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
#: Share of a multi-band file's pixels holding the fill value in some bands only, from which the warning says
#: that ``nodata:`` drops them too (a pixel is nodata where any band holds it).
PARTIAL_NOTED = 0.0005
#: Files checked per scene (the first of each layer, then further tiles): a mosaic of 10,000 tiles stays cheap.
MAX_FILES_CHECKED = 8


def border_fill(src: Any) -> tuple[float, float, float | None] | None:
    """``(value, share of the border, share of the file)`` of an undeclared constant fill, else ``None``.

    ``src``: a :class:`~geoseg.io.sources.Source`. Files with an alpha band or a GDAL mask are skipped
    (their fill is masked); pixels with the declared nodata or NaN in any band do not count. A pixel is fill
    only where every value band holds the value (the white of an RGB orthomosaic's background is 255 in red,
    green and blue; a saturated red roof is not). The share of the file is measured on an overview (or the
    whole of a file up to :data:`SMALL_FILE` pixels); for a larger file without overviews only its outer ring
    of pixels is read (a few blocks) and the share is ``None``.
    """
    hit = _border_fill(src)
    return None if hit is None else hit[:3]


def _border_fill(src: Any) -> tuple[float, float, float | None, float | None] | None:
    """:func:`border_fill` plus the share of the file's pixels that hold the value in some bands but not all
    (what ``nodata:`` would drop too, as a pixel is nodata where any band holds it); ``None`` where not measured."""
    if src.mask in ("alpha", "gdal"):
        return None
    from geoseg.io.sources import open_dataset

    h, w = src.grid.height, src.grid.width
    if min(h, w) < 3:
        return None
    bands = list(src.bands)
    with open_dataset(src.path) as ds:
        if ds.overviews(bands[0]) or h * w <= SMALL_FILE:
            img = _decimated(ds, bands, h, w)
            ring = _ring(img)
        else:
            img = None
            ring = np.concatenate([_strip(ds, bands, 0, 0, 1, w), _strip(ds, bands, h - 1, 0, 1, w),
                                   _strip(ds, bands, 1, 0, h - 2, 1), _strip(ds, bands, 1, w - 1, h - 2, 1)], axis=1)
    same = _counted(ring, src.nodata) & np.all(ring == ring[0], axis=0)  # (pixels,): one value in every band
    if not same.any():
        return None
    values, counts = np.unique(ring[0][same], return_counts=True)
    k = int(np.argmax(counts))
    value, share = values[k], counts[k] / ring.shape[1]
    if share < BORDER_SHARE:
        return None
    if img is None:
        return float(value), float(share), None, None
    equal = img == value
    every, some = np.all(equal, axis=0), np.any(equal, axis=0)
    n = every.size
    return float(value), float(share), float(np.count_nonzero(every) / n), float(np.count_nonzero(some & ~every) / n)


def _decimated(ds: Any, bands: list[int], h: int, w: int) -> np.ndarray:
    from rasterio.enums import Resampling

    f = max(1, math.ceil(max(h, w) / CHECK_SIDE))
    shape = (len(bands), max(3, h // f), max(3, w // f))
    return ds.read(bands, out_shape=shape, resampling=Resampling.nearest)  # values as stored


def _strip(ds: Any, bands: list[int], row: int, col: int, height: int, width: int) -> np.ndarray:
    from rasterio.windows import Window

    return ds.read(bands, window=Window(col, row, width, height)).reshape(len(bands), -1)


def _ring(img: np.ndarray) -> np.ndarray:
    """The outer ring of pixels of ``(bands, h, w)``: ``(bands, pixels)``."""
    return np.concatenate([img[:, 0], img[:, -1], img[:, 1:-1, 0], img[:, 1:-1, -1]], axis=1)


def _counted(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels of ``(bands, pixels)`` that may count: finite, and not the declared nodata in any band."""
    ok = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        ok &= values != nodata
    return np.all(ok, axis=0)


def warn_border_fill(layers: Sequence[Any]) -> list[tuple[str, float, float, float | None]]:
    """Warn, once per file, about undeclared fill in the scene's layers; returns ``(path, value, border
    share, file share)`` of each warning (for tests and ``run.json``)."""
    firsts = [layer.sources[0] for layer in layers if layer.sources]
    rest = [s for layer in layers for s in layer.sources[1:]]
    found = []
    for src in (firsts + rest)[:MAX_FILES_CHECKED]:
        try:
            hit = _border_fill(src)
        except Exception as exc:  # a hint only: the read proper reports a bad file
            log.debug("fill check of %s failed: %s", src.path, exc)
            continue
        if hit is None:
            continue
        value, border, share, partial = hit
        log.warning(fill_message(src.path, len(src.bands), value, border, share, partial))
        found.append((src.path, value, border, share))
    return found


def fill_message(path: str, n_bands: int, value: float, border: float, share: float | None,
                 partial: float | None) -> str:
    """The one line of the warning: the value, where it is, the ``nodata:`` to set and what that also drops."""
    shown = int(value) if value == int(value) else value
    in_bands = "" if n_bands == 1 else f" in all {n_bands} bands"
    of_file = "" if share is None else f" and {100 * share:.1f} % of the file"
    also = ""
    if n_bands > 1 and (partial is None or partial >= PARTIAL_NOTED):
        some = "any pixel" if partial is None else f"the {100 * partial:.2f} % of pixels"
        also = (f"; nodata: {shown} also drops {some} where only some bands are {shown}: to keep them, give the "
                f"file an alpha band instead (gdalwarp -srcnodata {shown} -dstalpha in.tif out.tif)")
    return (f"{path}: the value {shown} fills {100 * border:.0f} % of its border{in_bands}{of_file} but is not "
            f"declared nodata; if it is fill, set `nodata: {shown}` on this input (else it is segmented as data){also}")
