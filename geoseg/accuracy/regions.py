"""Regions: which region each pixel of a label window is counted in.

Regions are a vector layer (any CRS, reprojected to the label CRS) with an id field, or a regular
grid of square cells of ``grid_cell_m`` metres anchored at the label raster's top-left corner.
Pixels are numbered by *region slot*: 0 = in no region, ``i + 1`` = ``ids[i]``; a pixel belongs
to the region holding its centre. Regions that overlap are counted in separate passes
(:func:`overlap_groups`), so each counts every pixel it holds; within a pass (and in
:func:`regions_window`, used by the change report) the feature later in the layer wins. Like
references, regions are small frozen dataclasses that Dask tasks carry; each task burns the regions
of its own window (:mod:`geoseg.accuracy.layers`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from rasterio.crs import CRS

from geoseg.accuracy.layers import burn_shapes, describe_reprojection, layer_window, require_crs, vector_info
from geoseg.errors import InputError, MissingFileError, NoOverlapError
from geoseg.geo import Bounds, GeoGrid, bounds_in, bounds_overlap, crs_from_wkt, metres_per_unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorRegions:
    """Regions from a polygon layer; ``ids[i]`` is region slot ``i + 1``.

    ``groups[i]``: the pass region ``ids[i]`` is counted in. Regions of one group never overlap
    (overlap = interiors meet; touching is fine), so each pass burns its group's regions as one
    raster and every region counts all its pixels; pass 0 also counts the pixels in no region
    of that group, so it alone makes the scene row ``ALL`` (each pixel once).
    """

    path: str
    layer: str | None
    field: str | None  # None: the feature id (FID)
    crs_wkt: str
    # dataclasses.field spelled out: the ``field`` attribute above shadows the bare name for type checkers
    ids: tuple = dataclasses.field(repr=False)
    groups: tuple[int, ...] = dataclasses.field(default=(), repr=False)
    notes: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    @property
    def n_groups(self) -> int:
        return max(self.groups, default=0) + 1

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


Regions = VectorRegions | GridRegions


def open_regions(
    path: str | Path, field: str | None, label_grid: GeoGrid, *, merge_duplicates: bool = False,
    repair_invalid: bool = True,
) -> VectorRegions:
    """Describe a regions layer: check CRS, id field, ids, geometries and overlap; read the region ids once.

    Refused: features without an id; the same id on several features unless ``merge_duplicates``
    (then they count as one region); invalid geometries when ``repair_invalid`` is off (else they
    are repaired with ``shapely.make_valid`` here and in every task, and said so). Empty and null
    geometries are reported (their region counts no pixel). Overlapping regions are put in
    separate counting passes (:attr:`VectorRegions.groups`).
    """
    import pyogrio
    import shapely

    path = str(path)
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise MissingFileError(f"regions layer {path} does not exist")
    info = vector_info(path, None, "regions layer")
    fields = list(info["fields"])
    if field is not None and field not in fields:
        raise InputError(f"regions layer {path} has no field {field!r} (fields: {', '.join(fields)})")
    crs = require_crs(CRS.from_user_input(info["crs"]) if info["crs"] else None, "regions layer", path)
    bounds = cast(Bounds, tuple(float(v) for v in info["total_bounds"]))  # total_bounds: 4 numbers
    if not bounds_overlap(bounds_in(bounds, crs, label_grid.crs), label_grid.bounds):
        raise NoOverlapError(
            f"regions layer {path} does not overlap the label raster (layer bounds {tuple(round(v, 3) for v in bounds)} "
            f"in {crs.to_string()}); check that it covers the labelled area and that its CRS is right"
        )
    df = pyogrio.read_dataframe(path, columns=[field] if field else [], fid_as_index=True)
    values = df[field] if field else df.index.to_series()
    if values.isna().any():
        raise InputError(f"regions layer {path} has features with an empty {field!r}; give every region an id")
    dup = values[values.duplicated(keep=False)]
    if len(dup) and not merge_duplicates:
        shown = ", ".join(repr(v) for v in pd_unique_sorted(dup.to_numpy())[:5])
        raise InputError(
            f"regions layer {path}: {dup.nunique()} id(s) of {field!r} belong to several features ({shown} ...); "
            "use a unique id field (or the feature id), or set regions: {merge_duplicates: true} to count each id as one region"
        )
    notes = []
    line = describe_reprojection("regions layer", path, crs, label_grid.crs)
    if line:
        log.info(line)
        notes.append(line)
    geoms = np.asarray(df.geometry.values, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        which = ", ".join(repr(v) for v in values.to_numpy()[missing][:5])
        notes.append(
            f"regions layer {path}: {int(missing.sum())} feature(s) with an empty or null geometry"
            f" count no pixel (ids {which})"
        )
        log.warning(notes[-1])
    invalid = ~missing & ~shapely.is_valid(geoms)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        reason = f"id {values.to_numpy()[first]!r}: {shapely.is_valid_reason(geoms[first])}"
        if not repair_invalid:
            raise InputError(
                f"regions layer {path} has {int(invalid.sum())} invalid geometr{'y' if invalid.sum() == 1 else 'ies'} "
                f"({reason}); repair it (QGIS: Fix geometries) or let geoseg repair it"
            )
        geoms[invalid] = repair_polygons(geoms[invalid])
        notes.append(f"regions layer {path}: {int(invalid.sum())} invalid geometr{'y' if invalid.sum() == 1 else 'ies'} "
                     f"repaired with make_valid (first: {reason})")
        log.warning(notes[-1])
    uniq = pd_unique_sorted(values.to_numpy())
    groups = overlap_groups(geoms, values.to_numpy(), uniq)
    if max(groups, default=0) > 0:
        notes.append(f"regions layer {path}: regions overlap; counted in {max(groups) + 1} passes so each counts all its pixels")
        log.info(notes[-1])
    return VectorRegions(path=path, layer=info["layer_name"], field=field, crs_wkt=crs.to_wkt(), ids=uniq,
                         groups=groups, notes=tuple(notes))


def repair_polygons(geoms: np.ndarray) -> np.ndarray:
    """``make_valid`` keeping only the polygonal result (a bowtie becomes its two triangles).

    >>> from shapely import Polygon
    >>> repair_polygons(np.array([Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])], dtype=object))[0].area
    2.0
    """
    import shapely

    return shapely.make_valid(geoms, method="structure", keep_collapsed=False)


def overlap_groups(geoms: np.ndarray, feature_ids: np.ndarray, ids: tuple) -> tuple[int, ...]:
    """A counting pass for every region id such that regions in one pass never overlap.

    Two regions overlap when the interiors of any of their features meet (``relate`` pattern
    ``T********``); a greedy colouring in id order gives the passes (one when nothing overlaps).

    >>> from shapely import box
    >>> g = np.array([box(0, 0, 2, 2), box(1, 1, 3, 3), box(2, 0, 4, 1)], dtype=object)
    >>> overlap_groups(g, np.array([1, 2, 3]), (1, 2, 3))
    (0, 1, 0)
    """
    import pandas as pd
    import shapely

    index = pd.Index(ids)
    slot = index.get_indexer(feature_ids)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    live = np.where(ok, geoms, None)  # type: ignore[call-overload]  # numpy's stub rejects None as the object fill
    tree = shapely.STRtree(live)
    a, b = tree.query(live, predicate="intersects")
    keep = (a < b) & (slot[a] != slot[b])
    a, b = a[keep], b[keep]
    if a.size:
        inner = shapely.relate_pattern(geoms[a], geoms[b], "T********")
        a, b = a[inner], b[inner]
    neighbours: dict[int, set[int]] = {}
    for i, j in zip(slot[a], slot[b]):
        neighbours.setdefault(int(i), set()).add(int(j))
        neighbours.setdefault(int(j), set()).add(int(i))
    groups = [0] * len(ids)
    for k in sorted(neighbours):
        taken = {groups[n] for n in neighbours[k] if n < k}
        g = 0
        while g in taken:
            g += 1
        groups[k] = g
    return tuple(groups)


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


def regions_window_codes(regions: Regions | None, grid: GeoGrid, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Region of every pixel of one window's ``grid`` as a small *code* and the slot of each code.

    ``slot_of[codes]`` is the slot raster (0 = in no region). Codes number only the regions
    present in the window, in slot order (``slot_of`` is increasing, ``slot_of[0] == 0``), so a
    window meeting fewer than 255 regions is a ``uint8`` raster: half the bytes of ``uint16`` to
    rasterise and to count. ``group``: only the regions of that counting pass
    (:attr:`VectorRegions.groups`); ``None``: all (where they overlap, the later feature wins).
    """
    if regions is None:
        return np.zeros(grid.shape, dtype=np.uint8), np.zeros(1, np.int64)
    if isinstance(regions, GridRegions):
        return _grid_window(regions, grid)
    return _vector_regions_window(regions, grid, group)


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


def _id_index(regions: VectorRegions):  # pandas.Index
    """``pandas.Index`` of region ids (position + 1 = slot)."""
    import pandas as pd

    return pd.Index(regions.ids)


def _vector_regions_window(r: VectorRegions, grid: GeoGrid, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    import shapely

    cols = [r.field] if r.field else []
    df = layer_window(r.path, r.layer, cols, r.crs_wkt, grid)
    values = df[r.field] if r.field else df.index.to_series()
    slots = _id_index(r).get_indexer(values.to_numpy()) + 1
    keep = slots > 0
    if group is not None and r.groups:
        keep &= np.asarray(r.groups, np.int64)[np.maximum(slots - 1, 0)] == group
    present = np.unique(slots[keep])
    codes = np.searchsorted(present, slots[keep]) + 1
    geoms = np.asarray(df.geometry.values[keep], dtype=object)
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        geoms[bad] = repair_polygons(geoms[bad])
    shapes = list(zip(geoms, codes.astype(np.int64)))
    slot_of = np.concatenate([[0], present]).astype(np.int64)
    return burn_shapes(shapes, grid, 0, _code_dtype(len(present))), slot_of


def regions_frame(regions: Regions):  # GeoDataFrame
    """The regions as a GeoDataFrame (``region_id``, geometry), in their own CRS.

    A layer's features keep their own rows (a region id may own several features).
    """
    import geopandas as gpd
    import pyogrio
    import shapely
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
    geoms = np.asarray(df.geometry.values, dtype=object)
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        geoms[bad] = repair_polygons(geoms[bad])  # the geometry that was counted
    out = gpd.GeoDataFrame({"region_id": ids.to_numpy()}, geometry=geoms, crs=df.crs)
    return out
