"""Bring a reference map and a regions layer onto the label grid, one chunk window at a time.

Accuracy assessment compares every label pixel with the reference class at the same place and
files it under the region that holds the pixel centre. The reference and the regions may come
in any CRS and resolution, so each window of the label grid gets its own small copy of both:

* a **raster** reference is read only over the source window that the label window needs and
  warped onto the window's transform with nearest neighbour (a direct read when the grids already
  line up), never as a whole;
* a **vector** reference is rasterised from the polygons that intersect the window, by an integer
  class field (a pixel takes the class of the polygon covering its centre);
* **regions** are a vector layer (any CRS, reprojected to the label CRS with geopandas) with an id
  field, or a regular grid of square cells of ``grid_cell_m`` metres anchored at the label raster's
  top-left corner. Pixels are numbered by *region slot*: 0 = in no region, ``i + 1`` = ``ids[i]``.
  Where region polygons overlap, the feature later in the layer wins.

Every spec here is a small frozen dataclass holding paths and georeferencing, so Dask tasks can
carry it cheaply; tasks open the files themselves. A reference window comes back in its own type
with the one value that marks invalid pixels (nodata, outside the reference, no polygon):
:func:`reference_pixels`; :func:`reference_window` gives ``int32`` and a validity mask instead.
Polygons are burnt with :mod:`geoseg._kernels.polyfill` (GDAL's rule) and small layers are kept in memory
per worker (:mod:`geoseg._kernels.layercache`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg._kernels.layercache import cached_layer_window, features_in_label_crs
from geoseg._kernels.polyfill import fill_polygons
from geoseg.errors import InputError

#: Fill value used while warping; never a valid class id.
SENTINEL = int(np.iinfo(np.int32).min)

_INT_DTYPES = {"uint8", "int8", "uint16", "int16", "int32"}


# --------------------------------------------------------------------------------------------
# Label grid geometry helpers
# --------------------------------------------------------------------------------------------


def window_bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a ``shape`` window whose top-left pixel has ``transform``.

    >>> window_bounds(Affine(10, 0, 100, 0, -10, 500), (2, 3))
    (100.0, 480.0, 130.0, 500.0)
    """
    h, w = shape
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))))
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _four_floats(values: Any) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) as floats, from a layer's ``total_bounds``."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def _bounds_in(src_crs: CRS, dst_crs: CRS, bounds: tuple[float, float, float, float]) -> tuple:
    """Bounds transformed between CRSs, densified so curved edges are covered."""
    if src_crs == dst_crs:
        return tuple(bounds)
    from rasterio.warp import transform_bounds

    return tuple(transform_bounds(src_crs, dst_crs, *bounds, densify_pts=21))


def _pad(bounds: tuple, frac: float = 0.01) -> tuple[float, float, float, float]:
    dx = (bounds[2] - bounds[0]) * frac
    dy = (bounds[3] - bounds[1]) * frac
    return bounds[0] - dx, bounds[1] - dy, bounds[2] + dx, bounds[3] + dy


def metres_per_unit(crs: CRS) -> float | None:
    """Metres per CRS unit for a projected CRS, ``None`` for geographic ones (no fixed size)."""
    if not crs.is_projected:
        return None
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - a CRS without a linear unit
        return None


def _require_crs(crs: CRS | None, what: str, path: str) -> CRS:
    if crs is None or not crs.to_wkt():
        raise InputError(
            f"{what} {path} has no coordinate reference system; assign the right one first "
            "(e.g. `gdal_edit.py -a_srs EPSG:32633 FILE` for a raster, `ogr2ogr -a_srs EPSG:32633` for vectors)"
        )
    return crs


# --------------------------------------------------------------------------------------------
# Reference specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RasterReference:
    """A reference raster: classes in band 1, georeferenced, in any CRS and resolution."""

    path: str
    crs_wkt: str
    transform: Affine
    height: int
    width: int
    nodata: float | None
    dtype: str
    legend: tuple[tuple[int, str], ...] = ()
    colors: tuple[tuple[int, str], ...] = ()

    kind = "raster"

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return window_bounds(self.transform, (self.height, self.width))


@dataclass(frozen=True)
class VectorReference:
    """A reference vector layer: polygons with an integer class field."""

    path: str
    layer: str | None
    field: str
    crs_wkt: str
    bounds: tuple[float, float, float, float]
    class_ids: tuple[int, ...] = ()
    legend: tuple[tuple[int, str], ...] = ()
    colors: tuple[tuple[int, str], ...] = ()

    kind = "vector"

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)


Reference = RasterReference | VectorReference


def parse_class_tag(text: str, skip: float | None = None) -> tuple[tuple[int, str], ...]:
    """Parse a ``classes`` metadata tag of the form ``"0 no data,1 cultivated land,..."``.

    The nodata value, if given, is left out (it is not a class).

    >>> parse_class_tag("0 no data,1 cultivated land,2 forest", skip=0)
    ((1, 'cultivated land'), (2, 'forest'))
    >>> parse_class_tag("rubbish")
    ()
    """
    out = []
    for item in text.split(","):
        head, _, name = item.strip().partition(" ")
        try:
            cid = int(head)
        except ValueError:
            return ()
        if skip is not None and cid == skip:
            continue
        out.append((cid, name.strip() or str(cid)))
    return tuple(out)


def open_reference(
    path: str | Path, field: str | None = None, label_crs: CRS | None = None, label_bounds: tuple | None = None
) -> Reference:
    """Describe a reference map, detecting raster or vector by opening it.

    Checks what can be checked once, on the client: it opens, has a CRS, holds integer classes
    (and, given the label grid's CRS and bounds, overlaps it), so tasks fail only on I/O.
    """
    path = str(path)
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise InputError(f"reference {path} does not exist")
    ref: RasterReference | VectorReference | None = _try_raster(path)
    if ref is None:
        ref = _open_vector_reference(path, field)
    elif field is not None:
        raise InputError(f"reference {path} is a raster; reference_field={field!r} only applies to vector references")
    if label_crs is not None and label_bounds is not None:
        if not _overlaps(_bounds_in(ref.crs, label_crs, ref.bounds), label_bounds):
            raise InputError(
                f"reference {path} does not overlap the label raster (reference bounds {tuple(round(v, 3) for v in ref.bounds)} "
                f"in {ref.crs.to_string()}); check that both cover the same area and that the reference's CRS is right"
            )
    return ref


def _try_raster(path: str) -> RasterReference | None:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        src = rasterio.open(path)
    except RasterioIOError:
        return None
    with src:
        if src.count < 1 or src.width == 0:
            return None
        crs = _require_crs(src.crs, "reference raster", path)
        dtype = src.dtypes[0]
        if dtype not in _INT_DTYPES:
            raise InputError(
                f"reference raster {path} has dtype {dtype}; it must hold integer class ids "
                "(convert it, e.g. `gdal_translate -ot Byte` or `-ot Int16`)"
            )
        tags = {**src.tags(), **src.tags(1)}
        legend = parse_class_tag(tags.get("classes", ""), skip=src.nodata) or _geoseg_legend(tags)
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = {}
        named = dict(legend)
        colors = tuple(
            (int(k), "#{:02x}{:02x}{:02x}".format(*v[:3])) for k, v in cmap.items()
            if k != src.nodata and (k in named if named else v[3] > 0 and tuple(v[:3]) != (0, 0, 0))
        )
        return RasterReference(
            path=path,
            crs_wkt=crs.to_wkt(),
            transform=src.transform,
            height=src.height,
            width=src.width,
            nodata=None if src.nodata is None else float(src.nodata),
            dtype=dtype,
            legend=legend,
            colors=colors,
        )


def _geoseg_legend(tags: dict[str, str]) -> tuple[tuple[int, str], ...]:
    """Class names geoseg itself stores: ``GEOSEG_LEGEND`` (sample scenes) or ``GEOSEG_CLASSES`` (exports)."""
    try:
        if "GEOSEG_LEGEND" in tags:
            return tuple((int(i), str(name)) for i, name, *_ in json.loads(tags["GEOSEG_LEGEND"]))
        if "GEOSEG_CLASSES" in tags:
            return tuple((int(d["id"]), str(d["name"])) for d in json.loads(tags["GEOSEG_CLASSES"]))
    except (ValueError, KeyError, TypeError):
        return ()
    return ()


def _vector_info(path: str, layer: str | None, what: str) -> dict[str, Any]:
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        return pyogrio.read_info(path, layer=layer)
    except (DataSourceError, DataLayerError) as exc:
        raise InputError(f"{what} {path} is neither a raster nor a vector layer GDAL can open: {exc}") from exc


def _open_vector_reference(path: str, field: str | None) -> VectorReference:
    import pyogrio

    info = _vector_info(path, None, "reference")
    fields = list(info["fields"])
    if field is None:
        raise InputError(
            f"reference {path} is a vector layer; name its integer class field with reference_field= "
            f"(fields: {', '.join(fields)})"
        )
    if field not in fields:
        raise InputError(f"reference {path} has no field {field!r} (fields: {', '.join(fields)})")
    dtype = str(info["dtypes"][fields.index(field)])
    if not dtype.startswith(("int", "uint")):
        raise InputError(f"reference field {field!r} of {path} is {dtype}; it must hold integer class ids")
    crs = _require_crs(CRS.from_user_input(info["crs"]) if info["crs"] else None, "reference layer", path)
    df = pyogrio.read_dataframe(path, columns=[field], read_geometry=False)
    values = df[field].dropna().astype(np.int64).unique()
    return VectorReference(
        path=path,
        layer=info["layer_name"],
        field=field,
        crs_wkt=crs.to_wkt(),
        bounds=_four_floats(info["total_bounds"]),
        class_ids=tuple(sorted(int(v) for v in values)),
    )


def reference_window(
    ref: Reference, label_crs_wkt: str, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The reference on one window of the label grid: ``(classes int32, valid bool)``, with
    :data:`SENTINEL` wherever the reference is invalid (nodata, outside it, or not covered)."""
    values, invalid = reference_pixels(ref, label_crs_wkt, transform, shape)
    if invalid is None:
        return values.astype(np.int32), np.ones(shape, bool)
    valid = values != invalid
    return np.where(valid, values, SENTINEL).astype(np.int32), valid


def reference_pixels(
    ref: Reference, label_crs_wkt: str, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, int | None]:
    """The reference on one window as read, and the one value that marks invalid pixels there.

    Why not a mask: counting compares with one value as it goes, so no mask and no ``int32``
    copy of the window is made. A raster whose nodata fits its type stays in its own type
    (``uint8`` usually), with the nodata value also filling what lies outside it; otherwise the
    window is ``int32`` with :data:`SENTINEL` there. A vector reference is burnt in bytes (255
    where no polygon is) when its class ids allow. ``None``: every pixel is valid.
    """
    if isinstance(ref, RasterReference):
        return _raster_window(ref, CRS.from_wkt(label_crs_wkt), transform, shape)
    return _vector_window(ref, CRS.from_wkt(label_crs_wkt), transform, shape)


def _native_nodata(ref: RasterReference) -> int | None:
    """The nodata value when it is an integer of the raster's own type, else ``None``."""
    if ref.nodata is None or not float(ref.nodata).is_integer():
        return None
    info = np.iinfo(ref.dtype)
    return int(ref.nodata) if info.min <= ref.nodata <= info.max else None


def aligned_offset(src: Affine, dst: Affine, tol: float = 1e-6) -> tuple[int, int] | None:
    """``(row, col)`` of ``dst``'s top-left pixel in ``src``'s pixel grid, if the grids coincide.

    >>> aligned_offset(Affine(10, 0, 0, 0, -10, 100), Affine(10, 0, 30, 0, -10, 80))
    (2, 3)
    >>> aligned_offset(Affine(10, 0, 0, 0, -10, 100), Affine(10, 0, 35, 0, -10, 80)) is None
    True
    """
    if src.b != 0 or src.d != 0 or dst.b != 0 or dst.d != 0:
        return None
    if not (math.isclose(src.a, dst.a, rel_tol=1e-9) and math.isclose(src.e, dst.e, rel_tol=1e-9)):
        return None
    col = (dst.c - src.c) / src.a
    row = (dst.f - src.f) / src.e
    if abs(col - round(col)) > tol or abs(row - round(row)) > tol:
        return None
    return int(round(row)), int(round(col))


def _raster_window(
    ref: RasterReference, label_crs: CRS, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, int | None]:
    import rasterio

    invalid = _native_nodata(ref)
    same_crs = ref.crs == label_crs
    offset = aligned_offset(ref.transform, transform) if same_crs else None
    with rasterio.open(ref.path) as src:
        if ref.nodata is None and offset is not None and _inside(offset, shape, src):
            return src.read(1, window=_rio_window(offset, shape)), None  # no nodata, nothing outside
        if invalid is not None:  # the raster's own type; its nodata also fills what lies outside it
            out, fill = np.full(shape, invalid, dtype=ref.dtype), invalid
        else:  # int32 with SENTINEL outside the raster (and on a nodata that does not fit the type)
            out, fill = np.full(shape, SENTINEL, dtype=np.int32), SENTINEL
        if offset is not None:
            _read_aligned(src, offset, shape, out)
        else:
            _read_warped(src, ref, label_crs, transform, shape, out, fill)
    if invalid is None and ref.nodata is not None:
        out[out == ref.nodata] = SENTINEL  # a nodata outside the raster's type range (rare)
    return out, fill


def _inside(offset: tuple[int, int], shape: tuple[int, int], src) -> bool:  # noqa: ANN001
    r0, c0 = offset
    return r0 >= 0 and c0 >= 0 and r0 + shape[0] <= src.height and c0 + shape[1] <= src.width


def _rio_window(offset: tuple[int, int], shape: tuple[int, int]):  # noqa: ANN202 - rasterio Window
    from rasterio.windows import Window as RioWindow

    return RioWindow(offset[1], offset[0], shape[1], shape[0])


def _read_aligned(src, offset: tuple[int, int], shape: tuple[int, int], out: np.ndarray) -> None:  # noqa: ANN001
    """Direct read of the part of the window inside the reference into ``out`` (grids coincide)."""
    r0, c0 = offset
    h, w = shape
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, src.height), min(c0 + w, src.width)
    if rr1 <= rr0 or cc1 <= cc0:
        return
    out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = src.read(1, window=_rio_window((rr0, cc0), (rr1 - rr0, cc1 - cc0)))


def _read_warped(
    src, ref: RasterReference, label_crs: CRS, transform: Affine, shape: tuple[int, int], out: np.ndarray,  # noqa: ANN001
    fill: int,
) -> None:
    """Read the source window the label window needs (plus a margin) and warp it into ``out``, nearest."""
    from rasterio.warp import Resampling, reproject
    from rasterio.windows import Window as RioWindow
    from rasterio.windows import from_bounds

    need = _bounds_in(label_crs, ref.crs, window_bounds(transform, shape))
    win = from_bounds(*need, transform=ref.transform)
    margin = 2
    c0 = max(int(math.floor(win.col_off)) - margin, 0)
    r0 = max(int(math.floor(win.row_off)) - margin, 0)
    c1 = min(int(math.ceil(win.col_off + win.width)) + margin, ref.width)
    r1 = min(int(math.ceil(win.row_off + win.height)) + margin, ref.height)
    if c1 <= c0 or r1 <= r0:
        return
    rio_win = RioWindow(c0, r0, c1 - c0, r1 - r0)
    data = src.read(1, window=rio_win)
    reproject(
        source=data,
        destination=out,
        src_transform=src.window_transform(rio_win),
        src_crs=ref.crs,
        src_nodata=ref.nodata,
        dst_transform=transform,
        dst_crs=label_crs,
        dst_nodata=fill,
        resampling=Resampling.nearest,
    )


def _read_layer_window(
    path: str, layer: str | None, columns: list[str], layer_crs: CRS, label_crs: CRS, bounds: tuple
):  # noqa: ANN202 - GeoDataFrame
    """Features of a layer intersecting ``bounds`` (label CRS), in layer order, in the label CRS.

    Small layers come from the worker's in-memory copy (:mod:`geoseg._kernels.layercache`), larger ones
    from the file, read over the window's bounding box.
    """
    import pyogrio

    cached = cached_layer_window(path, layer, columns, layer_crs, label_crs, bounds)
    if cached is not None:
        return cached
    bbox = _pad(_bounds_in(label_crs, layer_crs, _pad(bounds)))
    df = pyogrio.read_dataframe(path, layer=layer, columns=columns, bbox=bbox, fid_as_index=True)
    return features_in_label_crs(df, layer_crs, label_crs)


def _burn(shapes: list, transform: Affine, shape: tuple[int, int], fill: int, dtype: str = "int32") -> np.ndarray:
    """Rasterise ``(geometry, value)`` pairs; a pixel takes the last polygon covering its centre
    (GDAL's rule, see :mod:`geoseg._kernels.polyfill`)."""
    geometries = [g for g, _ in shapes]
    return fill_polygons(geometries, [v for _, v in shapes], transform, shape, dtype, fill)


def _vector_window(
    ref: VectorReference, label_crs: CRS, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, int]:
    """Class polygons burnt on the window, and the fill marking pixels no polygon covers: bytes
    with 255 when every class id is 0..254 (the usual case: counted 8 pixels at a time), else
    int32 with :data:`SENTINEL`."""
    df = _read_layer_window(ref.path, ref.layer, [ref.field], ref.crs, label_crs, window_bounds(transform, shape))
    df = df[df[ref.field].notna()]
    shapes = list(zip(df.geometry.values, df[ref.field].astype(np.int64).to_numpy()))
    in_bytes = bool(ref.class_ids) and min(ref.class_ids) >= 0 and max(ref.class_ids) < 255
    dtype, fill = ("uint8", 255) if in_bytes else ("int32", SENTINEL)
    return _burn(shapes, transform, shape, fill, dtype), fill


# --------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorRegions:
    """Regions from a polygon layer; ``ids[i]`` is region slot ``i + 1``."""

    path: str
    layer: str | None
    field: str | None  # None: the feature id (FID)
    crs_wkt: str
    ids: tuple = dataclasses.field(repr=False)  # (the attribute `field` above shadows the bare name)

    kind = "vector"

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)


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


def open_regions(path: str | Path, field: str | None, label_crs: CRS, label_bounds: tuple) -> VectorRegions:
    """Describe a regions layer: check CRS, id field and overlap; read the region ids once."""
    import pyogrio

    path = str(path)
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise InputError(f"regions layer {path} does not exist")
    info = _vector_info(path, None, "regions layer")
    fields = list(info["fields"])
    if field is not None and field not in fields:
        raise InputError(f"regions layer {path} has no field {field!r} (fields: {', '.join(fields)})")
    crs = _require_crs(CRS.from_user_input(info["crs"]) if info["crs"] else None, "regions layer", path)
    bounds = _four_floats(info["total_bounds"])
    if not _overlaps(_bounds_in(crs, label_crs, bounds), label_bounds):
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


def grid_regions(cell_m: float, label_crs: CRS, transform: Affine, shape: tuple[int, int]) -> GridRegions:
    """A regular grid of square cells over the label raster (north-up, projected CRS only)."""
    if not cell_m or cell_m <= 0:
        raise InputError(f"grid_cell_m must be a positive number of metres, got {cell_m!r}")
    mpu = metres_per_unit(label_crs)
    if mpu is None:
        raise InputError(
            "grid_cell_m needs a label raster in a projected CRS (metres); this one is geographic: "
            "give a regions layer instead"
        )
    if transform.b != 0 or transform.d != 0:
        raise InputError("grid_cell_m needs a north-up label raster (no rotation); give a regions layer instead")
    left, bottom, right, top = window_bounds(transform, shape)
    size = cell_m / mpu
    return GridRegions(
        cell_m=float(cell_m),
        cell_units=size,
        left=left,
        top=top,
        n_rows=max(1, math.ceil((top - bottom) / size - 1e-9)),
        n_cols=max(1, math.ceil((right - left) / size - 1e-9)),
        crs_wkt=label_crs.to_wkt(),
    )


def regions_window(regions: Regions | None, label_crs_wkt: str, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Region slot of every pixel of one window (0 = in no region), an unsigned/int array."""
    codes, slot_of = regions_window_codes(regions, label_crs_wkt, transform, shape)
    return slot_of[codes]


def regions_window_codes(
    regions: Regions | None, label_crs_wkt: str, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Region of every pixel of one window as a small *code* and the slot of each code.

    ``slot_of[codes]`` is the slot raster (0 = in no region). Codes number only the regions
    present in the window, in slot order (``slot_of`` is increasing, ``slot_of[0] == 0``), so a
    window meeting fewer than 255 regions is a ``uint8`` raster: half the bytes of ``uint16`` to
    rasterise and to count.
    """
    if regions is None:
        return np.zeros(shape, dtype=np.uint8), np.zeros(1, np.int64)
    if isinstance(regions, GridRegions):
        return _grid_window(regions, transform, shape)
    return _vector_regions_window(regions, CRS.from_wkt(label_crs_wkt), transform, shape)


def _code_dtype(n_codes: int) -> str:
    """Narrowest raster type for codes ``0..n_codes``."""
    return "uint8" if n_codes < 2**8 else "uint16" if n_codes < 2**16 else "int32"


def _grid_window(g: GridRegions, transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
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


def _vector_regions_window(
    r: VectorRegions, label_crs: CRS, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    cols = [r.field] if r.field else []
    df = _read_layer_window(r.path, r.layer, cols, r.crs, label_crs, window_bounds(transform, shape))
    values = df[r.field] if r.field else df.index.to_series()
    slots = _id_index(r).get_indexer(values.to_numpy()) + 1
    keep = slots > 0
    present = np.unique(slots[keep])
    codes = np.searchsorted(present, slots[keep]) + 1
    shapes = list(zip(df.geometry.values[keep], codes.astype(np.int64)))
    slot_of = np.concatenate([[0], present]).astype(np.int64)
    return _burn(shapes, transform, shape, 0, _code_dtype(len(present))), slot_of


def regions_frame(regions: Regions, label_crs: CRS | None = None):  # noqa: ANN201 - GeoDataFrame
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
            {"region_id": ids, "cell_row": r, "cell_col": c}, geometry=geoms, crs=CRS.from_wkt(regions.crs_wkt)
        )
    cols = [regions.field] if regions.field else []
    df = pyogrio.read_dataframe(regions.path, layer=regions.layer, columns=cols, fid_as_index=True)
    ids = df[regions.field] if regions.field else df.index.to_series()
    out = gpd.GeoDataFrame({"region_id": ids.to_numpy()}, geometry=df.geometry.values, crs=df.crs)
    return out
