"""Units of input values: the per-band scale and offset that turn stored numbers into physical values.

Products often store reflectance as integers (Sentinel-2 L2A: ``DN × 0.0001 − 0.1``; Landsat C2 L2:
``DN × 0.0000275 − 0.2``) and say so in the GeoTIFF band metadata (GDAL's scale/offset) or in the STAC
item's ``raster:bands``. geoseg applies them on read, per band and in float32 (``value × scale + offset``)
before any feature or index, so NDVI is the NDVI of reflectance and thresholds are in the units the
product documents. An input's ``apply_scale: false`` keeps the stored numbers. A band whose scale is 1 and
offset 0 costs nothing: :attr:`Source.scales <geoseg.io.sources.Source.scales>` is then empty and the read
path does not touch the values. Nodata and validity are judged on the stored numbers, before scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def file_scaling(ds: Any, bands: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scales, offsets)`` of the dataset's ``bands`` (1-based) from GDAL's band metadata; empty when
    every band is stored in its own units (scale 1, offset 0)."""
    scales = tuple(float(ds.scales[b - 1]) for b in bands)
    offsets = tuple(float(ds.offsets[b - 1]) for b in bands)
    return normalised(scales, offsets)


def normalised(scales: Sequence[float], offsets: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scales, offsets)`` as :class:`~geoseg.io.sources.Source` holds them: empty tuples for the identity."""
    if all(s == 1.0 for s in scales) and all(o == 0.0 for o in offsets):
        return (), ()
    return tuple(float(s) for s in scales), tuple(float(o) for o in offsets)


def apply_scaling(data: np.ndarray, scales: Sequence[float], offsets: Sequence[float]) -> np.ndarray:
    """``data × scale + offset`` per band ``(bands, h, w)``, in float32 (in place when ``data`` is float32)."""
    out = data if data.dtype == np.float32 else np.empty(data.shape, np.float32)
    for i, (s, o) in enumerate(zip(scales, offsets)):
        # the cast to float32 and the product in one pass (integers up to 2**24 are exact in float32)
        np.multiply(data[i], np.float32(s), out=out[i], dtype=np.float32, casting="unsafe")
        if o != 0.0:
            out[i] += np.float32(o)
    return out
