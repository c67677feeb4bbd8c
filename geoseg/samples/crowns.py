"""A synthetic orchard of touching round tree crowns with known instance masks.

Why: counting trees, plants or buildings needs *instances*, and touching crowns are the case that
connected regions get wrong (two crowns that touch are one region). Each crown sits in one cell of
a jittered grid, so any window of the scene is computed alone (a hash of the cell indices gives the
crown's presence, centre, radius and tint) and agrees with its neighbours across window borders.
Neighbouring crowns overlap or touch; a pixel covered by two crowns belongs to the one whose centre
is nearer relative to its radius (``distance / radius`` smallest), like the lit side of two
overlapping domes. The image is brightest at a crown's top and darker towards its rim, as sunlit
canopy is, over a textured soil background.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.legend import ClassInfo
from geoseg.samples.noise import _hash, _key, _u01

#: The reference classes of the crown scene.
CROWN_CLASSES: tuple[ClassInfo, ...] = (ClassInfo(1, "ground", "#a88a5c"), ClassInfo(2, "tree", "#1f7a1f"))
GROUND, TREE = 1, 2
#: Band order of the crown image (descriptions written into the GeoTIFF).
CROWN_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")
#: Reflectance of soil and of a fully lit crown top, per band (red, green, blue, nir).
_SOIL = np.array([0.26, 0.22, 0.17, 0.31])
_CANOPY = np.array([0.07, 0.19, 0.05, 0.52])


@dataclass(frozen=True)
class CrownLayout:
    """Where the crowns are: one possible crown per ``cell`` × ``cell`` pixel cell.

    ``radius`` is the range of crown radii in pixels; ``presence`` the share of cells holding one.
    The largest radius plus the centre's jitter must stay within one cell of the cell's centre,
    so a pixel needs only the crowns of its own and the eight neighbouring cells.
    """

    cell: int = 24
    radius: tuple[float, float] = (8.0, 13.0)
    presence: float = 0.85
    jitter: float = 0.25  # centre offset from the cell centre, as a share of the cell

    def __post_init__(self) -> None:
        lo, hi = self.radius
        if not (0 < lo <= hi) or hi + self.jitter * self.cell > self.cell:
            raise InputError(f"crown radius {self.radius} does not fit cells of {self.cell} px with jitter {self.jitter}")

    @property
    def max_radius(self) -> float:
        return self.radius[1]


def _crowns_of_cells(seed: int, layout: CrownLayout, cy: np.ndarray, cx: np.ndarray) -> tuple[np.ndarray, ...]:
    """Presence, centre (row, col), radius and tint of the crowns in cells ``(cy, cx)``."""
    key = _key(seed, "crowns")
    h = [_u01(_hash(key + k, cy, cx)) for k in range(5)]
    present = h[0] < layout.presence
    half = layout.cell / 2
    row = cy * layout.cell + half + (h[1] - 0.5) * 2 * layout.jitter * layout.cell
    col = cx * layout.cell + half + (h[2] - 0.5) * 2 * layout.jitter * layout.cell
    lo, hi = layout.radius
    radius = lo + (hi - lo) * h[3]
    tint = 0.85 + 0.3 * h[4]
    return present, row, col, radius, tint


def crown_block(
    window: Window, seed: int, width: int, layout: CrownLayout = CrownLayout()
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(4, h, w)`` float32 reflectance and instance ids ``(h, w)`` uint32 (0 = ground) of a window.

    A crown's id is ``1 +`` its cell's row-major index on a scene ``width`` pixels wide, so ids do not
    depend on the window.
    """
    rows = np.arange(window.row_off, window.row_off + window.height, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(window.col_off, window.col_off + window.width, dtype=np.float64)[None, :] + 0.5
    ncx = -(-width // layout.cell)
    pcy = np.floor(rows / layout.cell).astype(np.int64)
    pcx = np.floor(cols / layout.cell).astype(np.int64)
    best = np.full((window.height, window.width), np.inf)
    ids = np.zeros((window.height, window.width), np.uint32)
    lit = np.zeros_like(best)
    tint = np.ones_like(best)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cy, cx = pcy + dy, pcx + dx
            present, crow, ccol, radius, ctint = _crowns_of_cells(seed, layout, cy, cx)
            rel = np.hypot(rows - crow, cols - ccol) / radius
            take = present & (rel <= 1.0) & (rel < best) & (cy >= 0) & (cx >= 0) & (cx < ncx)
            best = np.where(take, rel, best)
            ids = np.where(take, (cy * ncx + cx + 1).astype(np.uint32), ids)
            lit = np.where(take, np.sqrt(np.clip(1.0 - rel**2, 0.0, 1.0)), lit)
            tint = np.where(take, ctint, tint)
    texture = _u01(_hash(_key(seed, "crown-texture"), rows.astype(np.int64), cols.astype(np.int64)))
    crown = ids > 0
    image = np.empty((4, window.height, window.width), np.float32)
    for b in range(4):
        soil = _SOIL[b] * (0.92 + 0.16 * texture)
        canopy = _CANOPY[b] * tint * (0.45 + 0.55 * lit) * (0.97 + 0.06 * texture)
        image[b] = np.where(crown, canopy, soil)
    return image, ids


@dataclass(frozen=True)
class CrownFiles:
    """The files of a crown scene."""

    image: Path
    reference: Path
    instances: Path
    crowns: Path


def make_crowns(
    out_dir: str | Path, width: int = 1024, height: int = 1024, seed: int = 0, layout: CrownLayout = CrownLayout(),
    pixel_size: float = 0.1,
) -> CrownFiles:
    """Write a crown scene: image (uint16 reflectance × 10,000, bands red/green/blue/nir), the semantic
    reference (1 ground, 2 tree, 0 nodata as in the other synthetic scenes), the reference instance
    raster (uint32) and one polygon per crown.

    The scene is made whole in memory (the crown scene is a test and demo fixture; keep it to a few
    thousand pixels a side). Files go through :mod:`geoseg.io.atomic`.
    """
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    from geoseg.io.atomic import atomic_path, write_atomic

    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise InputError(f"a crown scene is 16 to 8192 pixels a side, got {width} x {height}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = CrownFiles(out / "crowns_image.tif", out / "crowns_reference.tif", out / "crowns_instances.tif",
                       out / "crowns_reference.gpkg")
    image, ids = crown_block(Window(0, 0, height, width), seed, width, layout)
    crs = CRS.from_epsg(32633)
    transform = Affine(pixel_size, 0, 500_000.0, 0, -pixel_size, 5_100_000.0)
    base = dict(driver="GTiff", width=width, height=height, crs=crs, transform=transform, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate")
    with atomic_path(files.image) as tmp, rasterio.open(tmp, "w", count=4, dtype="uint16", **base) as ds:
        ds.write(np.clip(np.round(image * 10_000), 1, 65_535).astype(np.uint16))
        ds.descriptions = CROWN_BANDS
    with atomic_path(files.reference) as tmp, rasterio.open(tmp, "w", count=1, dtype="uint8", nodata=0, **base) as ds:
        ds.write(np.where(ids > 0, TREE, GROUND).astype(np.uint8), 1)
        ds.write_colormap(1, {0: (0, 0, 0, 0), **{c.id: (*c.rgb(), 255) for c in CROWN_CLASSES}})
    with atomic_path(files.instances) as tmp, rasterio.open(tmp, "w", count=1, dtype="uint32", nodata=0, **base) as ds:
        ds.write(ids, 1)
    polys = [(shape(g), int(v)) for g, v in shapes(ids.astype(np.int32), mask=ids > 0, transform=transform)]
    frame = gpd.GeoDataFrame({"crown_id": [v for _, v in polys], "class_id": TREE},
                             geometry=[g for g, _ in polys], crs=crs)
    frame = frame.dissolve(by="crown_id", as_index=False).sort_values("crown_id").reset_index(drop=True)
    write_atomic(files.crowns, lambda tmp: frame.to_file(tmp, driver="GPKG", layer="crowns"))
    return files
