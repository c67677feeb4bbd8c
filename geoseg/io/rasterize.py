"""Burning polygons into a raster window: the one rasteriser of geoseg.

Evaluation (references, regions, report previews) and training (vector references) burn
polygons through :func:`burn`, so a pixel gets the same class everywhere: the value of the last
polygon covering the pixel centre (GDAL's rule), or of any polygon it touches with
``all_touched``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine


def burn(
    geometries: Sequence[Any],
    values: Sequence[int] | np.ndarray,
    transform: Affine,
    shape: tuple[int, int],
    dtype: str = "int32",
    fill: int = 0,
    all_touched: bool = False,
) -> np.ndarray:
    """A ``shape`` raster on ``transform``: each pixel holds the value of the last polygon covering
    its centre (``all_touched``: touching it), ``fill`` elsewhere. Non-polygonal parts are ignored.

    >>> from shapely import box
    >>> burn([box(0, 0, 2, 2), box(1, 0, 3, 1)], [1, 2], Affine(1, 0, 0, 0, -1, 2), (2, 3), "uint8").tolist()
    [[1, 1, 0], [1, 2, 2]]
    """
    from rasterio.features import rasterize

    if len(geometries) == 0:
        return np.full(shape, fill, dtype=dtype)
    return rasterize(
        zip(geometries, np.asarray(values).tolist()),
        out_shape=shape,
        transform=transform,
        fill=fill,
        dtype=dtype,
        all_touched=all_touched,
    )
