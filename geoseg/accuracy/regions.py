"""Regions: which region each pixel of a label window is counted in.

Regions are a vector layer (any CRS, reprojected to the label CRS) with an id field, or a regular
grid of square cells of ``grid_cell_m`` metres anchored at the label raster's top-left corner.
Pixels are numbered by *region slot*: 0 = in no region, ``i + 1`` = ``ids[i]``; a pixel belongs
to the region holding its centre, and where region polygons overlap, the feature later in the
layer wins. Like references, regions are small frozen dataclasses that Dask tasks carry; each
task burns the regions of its own window (:mod:`geoseg.accuracy.layers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from rasterio.crs import CRS

from geoseg.errors import InputError
from geoseg.geo import GeoGrid, bounds_in, bounds_overlap, crs_from_wkt, metres_per_unit
from geoseg.accuracy.layers import burn_shapes, layer_window, require_crs, vector_info


@dataclass(frozen=True)
class VectorRegions:
    """Regions from a polygon layer; ``ids[i]`` is region slot ``i + 1``."""

    path: str
    layer: str | None
    field: str | None  # None: the feature id (FID)
    crs_wkt: str
    ids: tuple = field(repr=False)

    kind = "vector"

    @property
    def crs(self) -> CRS:
        return crs_from_wkt(self.crs_wkt)


@dataclass(frozen=True)
class GridRegions:
    """Square cells of ``cell_m`` metres from the label raster's top-left corner, row-major ids."""

    cell_m: float
    cell_units: float  # the cell size in label CRS units
    left: float
    top: float
    n_rows: int
    n_cols: int
    crs_wkt: str

    kind = "grid"

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(range(self.n_rows * self.n_cols))


Regions = Union[VectorRegions, GridRegions]


def open_regions(path: str | Path, field: str | None, label_grid: GeoGrid) -> VectorRegions:
    """Describe a regions layer: check CRS, id field and overlap; read the region ids once."""
    import pyogrio

    path = str(path)
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise InputError(f"regions layer {path} does not exist")
    info = vector_info(path, None, "regions layer")
    fields = list(info["fields"])
    if field is not None and field not in fields:
        raise InputError(f"regions layer {path} has no field {field!r} (fields: {', '.join(fields)})")
    crs = require_crs(CRS.from_user_input(info["crs"]) if info["crs"] else None, "regions layer", path)
    bounds = tuple(float(v) for v in info["total_bounds"])
    if not bounds_overlap(bounds_in(bounds, crs, label_grid.crs), label_grid.bounds):
        raise InputError(
            f"regions layer {path} does not overlap the label raster (layer bounds {tuple(round(v, 3) for v in bounds)} "
            f"in {crs.to_string()}); check that it covers the labelled area and that its CRS is right"
        )
    df = pyogrio.read_dataframe(path, columns=[field] if field else [], read_geometry=False, fid_as_index=True)
    values = df[field] if field else df.index.to_series()
    if values.isna().any():
        raise InputError(f"regions layer {path} has features with an empty {field!r}; give every region an id")
    uniq = pd_unique_sorted(values.to_numpy())
    return VectorRegions(path=path, layer=info["layer_name"], field=field, crs_wkt=crs.to_wkt(), ids=uniq)


def pd_unique_sorted(values: np.ndarray) -> tuple:
    """Unique ids, sorted when they sort, as plain Python values.

    >>> pd_unique_sorted(np.array([3, 1, 3, 2]))
    (1, 2, 3)
    """
    import pandas as pd

    uniq = pd.unique(values)
    try:
        uniq = sorted(uniq)
    except TypeError:
        uniq = list(uniq)
    return tuple(v.item() if isinstance(v, np.generic) else v for v in uniq)


def grid_regions(cell_m: float, grid: GeoGrid) -> GridRegions:
    """A regular grid of square cells over the label ``grid`` (north-up, projected CRS only)."""
    if not cell_m or cell_m <= 0:
        raise InputError(f"grid_cell_m must be a positive number of metres, got {cell_m!r}")
    mpu = metres_per_unit(grid.crs)
    transform = grid.transform
    if mpu is None:
        raise InputError(
            "grid_cell_m needs a label raster in a projected CRS (metres); this one is geographic: "
            "give a regions layer instead"
        )
    if transform.b != 0 or transform.d != 0:
        raise InputError("grid_cell_m needs a north-up label raster (no rotation); give a regions layer instead")
    left, bottom, right, top = grid.bounds
    size = cell_m / mpu
    return GridRegions(
        cell_m=float(cell_m),
        cell_units=size,
        left=left,
        top=top,
        n_rows=max(1, math.ceil((top - bottom) / size - 1e-9)),
        n_cols=max(1, math.ceil((right - left) / size - 1e-9)),
        crs_wkt=grid.crs_wkt,
    )


def regions_window(regions: Regions | None, grid: GeoGrid) -> np.ndarray:
    """Region slot of every pixel of one window's ``grid`` (0 = in no region), an unsigned/int array."""
    codes, slot_of = regions_window_codes(regions, grid)
    return slot_of[codes]


def regions_window_codes(regions: Regions | None, grid: GeoGrid) -> tuple[np.ndarray, np.ndarray]:
    """Region of every pixel of one window's ``grid`` as a small *code* and the slot of each code.

    ``slot_of[codes]`` is the slot raster (0 = in no region). Codes number only the regions
    present in the window, in slot order (``slot_of`` is increasing, ``slot_of[0] == 0``), so a
    window meeting fewer than 255 regions is a ``uint8`` raster: half the bytes of ``uint16`` to
    rasterise and to count.
    """
    if regions is None:
        return np.zeros(grid.shape, dtype=np.uint8), np.zeros(1, np.int64)
    if isinstance(regions, GridRegions):
        return _grid_window(regions, grid)
    return _vector_regions_window(regions, grid)


def _code_dtype(n_codes: int) -> str:
    """Narrowest raster type for codes ``0..n_codes``."""
    return "uint8" if n_codes < 2**8 else "uint16" if n_codes < 2**16 else "int32"


def _grid_window(g: GridRegions, grid: GeoGrid) -> tuple[np.ndarray, np.ndarray]:
    h, w = grid.shape
    transform = grid.transform
    xs = transform.c + transform.a * (np.arange(w) + 0.5)
    ys = transform.f + transform.e * (np.arange(h) + 0.5)
    cols = np.clip(np.floor((xs - g.left) / g.cell_units).astype(np.int64), 0, g.n_cols - 1)
    rows = np.clip(np.floor((g.top - ys) / g.cell_units).astype(np.int64), 0, g.n_rows - 1)
    # number the window's cells row-major from 1: the same order as their slots
    c0, r0 = int(cols.min()), int(rows.min())
    n_local_cols = int(cols.max()) - c0 + 1
    n_local = (int(rows.max()) - r0 + 1) * n_local_cols
    dtype = _code_dtype(n_local)
    codes = ((rows - r0)[:, None] * n_local_cols + (cols - c0)[None, :] + 1).astype(dtype)
    local_r, local_c = np.divmod(np.arange(n_local), n_local_cols)
    slot_of = np.concatenate([[0], (local_r + r0) * g.n_cols + local_c + c0 + 1]).astype(np.int64)
    return codes, slot_of


def _id_index(regions: VectorRegions):  # noqa: ANN202 - pandas.Index
    """``pandas.Index`` of region ids (position + 1 = slot)."""
    import pandas as pd

    return pd.Index(regions.ids)


def _vector_regions_window(r: VectorRegions, grid: GeoGrid) -> tuple[np.ndarray, np.ndarray]:
    cols = [r.field] if r.field else []
    df = layer_window(r.path, r.layer, cols, r.crs_wkt, grid)
    values = df[r.field] if r.field else df.index.to_series()
    slots = _id_index(r).get_indexer(values.to_numpy()) + 1
    keep = slots > 0
    present = np.unique(slots[keep])
    codes = np.searchsorted(present, slots[keep]) + 1
    shapes = list(zip(df.geometry.values[keep], codes.astype(np.int64)))
    slot_of = np.concatenate([[0], present]).astype(np.int64)
    return burn_shapes(shapes, grid, 0, _code_dtype(len(present))), slot_of


def regions_frame(regions: Regions):  # noqa: ANN201 - GeoDataFrame
    """The regions as a GeoDataFrame (``region_id``, geometry), in their own CRS.

    A layer's features keep their own rows (a region id may own several features).
    """
    import geopandas as gpd
    import pyogrio
    from shapely import box

    if isinstance(regions, GridRegions):
        ids = np.arange(regions.n_rows * regions.n_cols)
        r, c = np.divmod(ids, regions.n_cols)
        s = regions.cell_units
        x0 = regions.left + c * s
        y1 = regions.top - r * s
        geoms = box(x0, y1 - s, x0 + s, y1)
        return gpd.GeoDataFrame(
            {"region_id": ids, "cell_row": r, "cell_col": c}, geometry=geoms, crs=crs_from_wkt(regions.crs_wkt)
        )
    cols = [regions.field] if regions.field else []
    df = pyogrio.read_dataframe(regions.path, layer=regions.layer, columns=cols, fid_as_index=True)
    ids = df[regions.field] if regions.field else df.index.to_series()
    out = gpd.GeoDataFrame({"region_id": ids.to_numpy()}, geometry=df.geometry.values, crs=df.crs)
    return out
