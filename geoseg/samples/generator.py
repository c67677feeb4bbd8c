"""The base of a synthetic scene kind: its raster layout and how a window is computed in strips."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg.geo import Window

#: Pixels computed at once: bounds the float temporaries whatever the block size.
_STRIP_PIXELS = 16384



@dataclass(frozen=True)
class _Spec:
    """Raster layout of one scene kind."""

    crs: str
    res: float
    origin: tuple[float, float]
    dtype: str
    bands: tuple[str, ...]


class _Generator:
    """A scene as functions of global pixel coordinates."""

    spec: _Spec
    kind: str = ""

    def __init__(self, width: int, height: int, seed: int) -> None:
        self.width = width
        self.height = height
        self.seed = seed

    @property
    def crs(self) -> CRS:
        return CRS.from_string(self.spec.crs)

    @property
    def transform(self) -> Affine:
        x0, y0 = self.spec.origin
        return Affine(self.spec.res, 0.0, x0, 0.0, -self.spec.res, y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the scene in CRS units."""
        x0, y0 = self.spec.origin
        return x0, y0 - self.height * self.spec.res, x0 + self.width * self.spec.res, y0

    def tags(self) -> dict[str, str]:
        """Metadata written into both GeoTIFFs, so a file says how it was made."""
        return {"GEOSEG_SYNTHETIC_KIND": self.kind, "GEOSEG_SYNTHETIC_SEED": str(self.seed)}

    def block(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(bands, h, w)`` and labels ``(h, w)`` of one window.

        The window is computed in strips of a few thousand pixels, so the float temporaries of
        the pixel functions stay small whatever the block size; only the output is block-sized.
        """
        ry, rx = _window_coords(window)
        img = np.empty((len(self.spec.bands), window.height, window.width), dtype=self.spec.dtype)
        labels = np.empty((window.height, window.width), dtype=np.uint8)
        step = max(1, _STRIP_PIXELS // window.width)
        for r0 in range(0, window.height, step):
            img[:, r0:r0 + step], labels[r0:r0 + step] = self._pixels(ry[r0:r0 + step], rx)
        return img, labels

    def _pixels(self, ry: np.ndarray, rx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image and labels at pixel-centre rows ``ry`` × columns ``rx`` (global coordinates)."""
        raise NotImplementedError

    def regions(self) -> tuple[list, list[int], list[str]]:
        """Region polygons (CRS units), ids and names."""
        raise NotImplementedError


def _window_coords(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Global pixel-centre coordinates (rows, cols) of a window."""
    ry = np.arange(window.row_off, window.row_off + window.height, dtype=np.float64) + 0.5
    rx = np.arange(window.col_off, window.col_off + window.width, dtype=np.float64) + 0.5
    return ry, rx


def _upper_threshold(values: np.ndarray, need: int) -> float:
    """The threshold ``t`` such that about ``need`` of ``values`` are ``>= t`` (inf when none)."""
    if need <= 0 or values.size == 0:
        return math.inf
    need = min(need, values.size)
    return float(np.partition(values, values.size - need)[values.size - need])


