"""Helpers shared by the test modules: small generated rasters with known classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from geoseg.geo import ChunkGrid, GeoGrid

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "slovenia"

#: Four well separated spectra (blue, green, red, nir) for blocky test scenes.
SPECTRA = np.array([[500, 600, 400, 3000], [300, 400, 300, 200], [1500, 1600, 1800, 2200], [800, 900, 700, 1500]])


def blocky_classes(height: int, width: int, cell: int = 37) -> np.ndarray:
    """A class map of rectangles (ids 0..3) that is easy to cluster and to check."""
    return (np.add.outer(np.arange(height) // cell, np.arange(width) // (cell + 11)) % 4).astype(np.uint8)


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = "EPSG:32633", transform=None,  # noqa: ANN001
                 nodata=None, block: int = 128, descriptions=None) -> Path:  # noqa: ANN001
    """Write a tiled GeoTIFF from a (bands, h, w) array."""
    if data.ndim == 2:
        data = data[None]
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name,
                   transform=transform or from_origin(500000, 5100000, 10, 10), compress="deflate")
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if h >= block and w >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return path


def blocky_scene(folder: Path, height: int = 300, width: int = 340, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A 4-band uint16 scene of blocky classes with noise and a nodata corner."""
    rng = np.random.default_rng(seed)
    classes = blocky_classes(height, width)
    img = SPECTRA[classes].transpose(2, 0, 1) + rng.normal(0, 60, (4, height, width))
    img = np.clip(img, 1, None).astype("uint16")
    img[:, :20, :25] = 0
    path = write_raster(folder / "scene.tif", img, nodata=0, descriptions=("blue", "green", "red", "nir"))
    return path, classes


def geo_grid(height: int, width: int, transform=None, crs="EPSG:32633") -> GeoGrid:  # noqa: ANN001
    """A label grid for tests: 10 m UTM 33N pixels from (500000, 5100000) unless told otherwise."""
    return GeoGrid.of(height, width, transform or from_origin(500000, 5100000, 10, 10), crs)


def chunk_grid(height: int, width: int, chunk: int, transform=None, crs="EPSG:32633") -> ChunkGrid:  # noqa: ANN001
    """:func:`geo_grid` cut into ``chunk`` x ``chunk`` chunks."""
    return geo_grid(height, width, transform, crs).tiles(chunk)
