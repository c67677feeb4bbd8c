"""Bring a reference map onto the label grid, one chunk window at a time.

Accuracy assessment compares every label pixel with the reference class at the same place. The
reference may come in any CRS and resolution, so each window of the label grid gets its own
small copy of it:

* a **raster** reference is read only over the source window that the label window needs and
  warped onto the window's grid with nearest neighbour (a direct read when the grids already
  line up), never as a whole;
* a **vector** reference is rasterised from the polygons that meet the window (a pixel takes
  the class of the polygon covering its centre; :mod:`geoseg.accuracy.layers`): class from an
  integer field, from a text field through a name → id map, or one ``value`` for every polygon
  (presence-only layers); a ``background`` class fills what no polygon covers, else those
  pixels are unlabelled and left out (the evaluation then says which share was scored).

A reference is a small frozen dataclass holding its path and georeferencing, so Dask tasks can
carry it cheaply; tasks open the files themselves. A reference window comes back in its own type
with the one value that marks invalid pixels (nodata, outside the reference, no polygon):
:func:`reference_pixels`; :func:`reference_window` gives ``int32`` and a validity mask instead.
Regions (where each pixel is counted) are :mod:`geoseg.accuracy.regions`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS

from geoseg.accuracy.layers import burn_shapes, layer_window, require_crs, vector_info
from geoseg.accuracy.pam import read_pam_legend
from geoseg.errors import InputError
from geoseg.geo import Bounds, GeoGrid, aligned_offset, bounds_in, bounds_overlap, crs_from_wkt
from geoseg.io.opener import UnreadableRaster, check_name, open_raster

#: Fill value used while warping; never a valid class id.
SENTINEL = int(np.iinfo(np.int32).min)


#: Raster types read as they are; any other numeric type (float, 64-bit) is read as ``float64``
#: and accepted when its values are whole numbers (:func:`check_integral`).
_INT_DTYPES = {"uint8", "int8", "uint16", "int16", "int32"}


@dataclass(frozen=True)
class RasterReference:
    """A reference raster: classes in band 1, georeferenced, in any CRS and resolution."""

    path: str
    grid: GeoGrid  # the raster's own grid
    nodata: float | None
    dtype: str
    legend: tuple[tuple[int, str], ...] = ()
    colors: tuple[tuple[int, str], ...] = ()

    kind = "raster"

    @property
    def crs(self) -> CRS:
        return self.grid.crs

    @property
    def bounds(self) -> Bounds:
        return self.grid.bounds


@dataclass(frozen=True)
class VectorReference:
    """A reference vector layer: polygons whose class comes from an integer field, from a string
    field through ``value_map`` (name → class id), or is ``value`` for every polygon (a
    presence-only layer such as building footprints). ``background``: the class of every pixel
    of the evaluated extent that no polygon covers (``None``: such pixels are unlabelled)."""

    path: str
    layer: str | None
    field: str | None
    crs_wkt: str
    bounds: Bounds
    class_ids: tuple[int, ...] = ()
    legend: tuple[tuple[int, str], ...] = ()
    colors: tuple[tuple[int, str], ...] = ()
    value: int | None = None
    background: int | None = None
    value_map: tuple[tuple[str, int], ...] = ()

    kind = "vector"

    @property
    def crs(self) -> CRS:
        return crs_from_wkt(self.crs_wkt)


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
    path: str | Path,
    field: str | None = None,
    label_grid: GeoGrid | None = None,
    *,
    value: int | None = None,
    background: int | None = None,
    value_map: Mapping[str, int] | None = None,
    class_names: Mapping[int, str] | None = None,
) -> Reference:
    """Describe a reference map, detecting raster or vector by opening it.

    Checks what can be checked once, on the client: it opens, has a CRS, holds integer classes
    (and, given the label grid, overlaps it), so tasks fail only on I/O. For a vector layer:
    ``field`` (integer, or string mapped through ``value_map`` or else the names of
    ``class_names``), or ``value`` (every polygon is that class); ``background`` classes what
    no polygon covers.
    """
    path = str(path)
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise InputError(f"reference {path} does not exist")
    raster = _try_raster(path)
    ref: Reference
    if raster is None:
        ref = _open_vector_reference(path, field, value, background, value_map, class_names)
    elif field is not None or value is not None or background is not None or value_map:
        raise InputError(
            f"reference {path} is a raster; field, value, background and values only apply to vector references"
        )
    else:
        ref = raster
    if label_grid is not None:
        if not bounds_overlap(bounds_in(ref.bounds, ref.crs, label_grid.crs), label_grid.bounds):
            raise InputError(
                f"reference {path} does not overlap the label raster (reference bounds {tuple(round(v, 3) for v in ref.bounds)} "
                f"in {ref.crs.to_string()}); check that both cover the same area and that the reference's CRS is right"
            )
    return ref


def _try_raster(path: str) -> RasterReference | None:
    """The reference as a raster, or None when it is none the opener reads (then tried as a vector)."""
    check_name(path, "reference")  # a /vsicurl/ path or URL is refused before GDAL sees it
    try:
        src = open_raster(path, "reference")
    except UnreadableRaster:
        return None
    with src:
        if src.count < 1 or src.width == 0:
            return None
        require_crs(src.crs, "reference raster", path)
        dtype = src.dtypes[0]
        if dtype.startswith("complex"):
            raise InputError(f"reference raster {path} has dtype {dtype}; it must hold class ids (real numbers)")
        tags = {**src.tags(), **src.tags(1)}
        pam = read_pam_legend(path)
        legend = parse_class_tag(tags.get("classes", ""), skip=src.nodata) or _geoseg_legend(tags) or pam.names(src.nodata)
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = {}
        named = dict(legend)
        colors = tuple(
            (int(k), "#{:02x}{:02x}{:02x}".format(*v[:3])) for k, v in cmap.items()
            if k != src.nodata and (k in named if named else v[3] > 0 and tuple(v[:3]) != (0, 0, 0))
        ) or pam.colors(src.nodata)
        return RasterReference(
            path=path,
            grid=GeoGrid.of_dataset(src),
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


def _open_vector_reference(
    path: str, field: str | None, value: int | None, background: int | None,
    value_map: Mapping[str, int] | None, class_names: Mapping[int, str] | None,
) -> VectorReference:
    import pyogrio

    info = vector_info(path, None, "reference")
    fields = list(info["fields"])
    crs = require_crs(CRS.from_user_input(info["crs"]) if info["crs"] else None, "reference layer", path)
    common = dict(path=path, layer=info["layer_name"], crs_wkt=crs.to_wkt(),
                  bounds=tuple(float(v) for v in info["total_bounds"]), background=background)
    extra = () if background is None else (int(background),)
    if value is not None:
        if field is not None:
            raise InputError(f"reference {path}: give either a class field or value: N (every polygon is class N), not both")
        return VectorReference(field=None, value=int(value), class_ids=tuple(sorted({int(value), *extra})), **common)
    if field is None:
        raise InputError(
            f"reference {path} is a vector layer; name its class field (reference_field= / reference.field) "
            f"or give value: N when every polygon is class N (fields: {', '.join(fields) or 'none'})"
        )
    if field not in fields:
        raise InputError(f"reference {path} has no field {field!r} (fields: {', '.join(fields)})")
    dtype = str(info["dtypes"][fields.index(field)])
    df = pyogrio.read_dataframe(path, columns=[field], read_geometry=False)
    present = df[field].dropna()
    if dtype.startswith("float"):  # a class id stored as Real (shapefiles, spreadsheets): whole numbers only
        frac = present[(present % 1) != 0]
        if len(frac):
            raise InputError(f"reference field {field!r} of {path} holds {frac.iloc[0]:g}: class ids must be whole numbers")
        dtype = "int64"
    if dtype.startswith(("int", "uint")):
        if value_map:
            raise InputError(f"reference field {field!r} of {path} holds integers; a values map only applies to text fields")
        ids = {int(v) for v in present.astype(np.int64).unique()}
        return VectorReference(field=field, class_ids=tuple(sorted(ids | set(extra))), **common)
    if dtype not in ("object", "str", "string"):
        raise InputError(f"reference field {field!r} of {path} is {dtype}; it must hold integer class ids or class names")
    names = sorted({str(v) for v in present.unique()})
    table = _name_table(value_map, class_names)
    missing = [n for n in names if _norm(n) not in table]
    if missing:
        how = "reference.values" if value_map else "the job's classes (by name) or reference.values"
        raise InputError(
            f"reference field {field!r} of {path} has class names without an id: "
            f"{', '.join(repr(m) for m in missing[:8])}{' ...' if len(missing) > 8 else ''}; map them in {how}"
        )
    mapped = tuple((n, table[_norm(n)]) for n in names)
    legend = tuple(sorted({(cid, n) for n, cid in mapped if not class_names or cid not in class_names}))
    ids = {cid for _, cid in mapped}
    first_name: dict[int, str] = {}
    for cid, n in legend:
        first_name.setdefault(cid, n)
    return VectorReference(field=field, value_map=mapped, class_ids=tuple(sorted(ids | set(extra))),
                           legend=tuple(sorted(first_name.items())), **common)


def _norm(name: str) -> str:
    """Class names match ignoring case and surrounding spaces."""
    return str(name).strip().casefold()


def _name_table(value_map: Mapping[str, int] | None, class_names: Mapping[int, str] | None) -> dict[str, int]:
    if value_map:
        return {_norm(k): int(v) for k, v in value_map.items()}
    return {_norm(n): int(c) for c, n in (class_names or {}).items()}


def reference_window(ref: Reference, grid: GeoGrid) -> tuple[np.ndarray, np.ndarray]:
    """The reference on one window's ``grid`` of the label grid: ``(classes int32, valid bool)``,
    with :data:`SENTINEL` wherever the reference is invalid (nodata, outside it, or not covered)."""
    values, invalid = reference_pixels(ref, grid)
    if invalid is None:
        return values.astype(np.int32), np.ones(grid.shape, bool)
    valid = values != invalid
    # int32 first: np.where would wrap SENTINEL into a uint8 window's own type (it became 0)
    return np.where(valid, values.astype(np.int32, copy=False), SENTINEL), valid


def reference_pixels(ref: Reference, grid: GeoGrid) -> tuple[np.ndarray, int | None]:
    """The reference on one window's ``grid`` as read, and the one value that marks invalid pixels there.

    Why not a mask: counting compares with one value as it goes, so no mask and no ``int32``
    copy of the window is made. A raster whose nodata fits its type stays in its own type
    (``uint8`` usually), with the nodata value also filling what lies outside it; otherwise the
    window is ``int32`` with :data:`SENTINEL` there. A vector reference is burnt in bytes (255
    where no polygon is) when its class ids allow. ``None``: every pixel is valid.
    """
    if isinstance(ref, RasterReference):
        return _raster_window(ref, grid)
    return _vector_window(ref, grid)


def _native_nodata(ref: RasterReference) -> int | None:
    """The nodata value when it is an integer of the raster's own (integer) type, else ``None``."""
    if ref.dtype not in _INT_DTYPES or ref.nodata is None or not float(ref.nodata).is_integer():
        return None
    info = np.iinfo(ref.dtype)
    return int(ref.nodata) if info.min <= ref.nodata <= info.max else None


def _raster_window(ref: RasterReference, grid: GeoGrid) -> tuple[np.ndarray, int | None]:

    if ref.dtype not in _INT_DTYPES:
        return _float_window(ref, grid)
    shape = grid.shape
    invalid = _native_nodata(ref)
    same_crs = ref.grid.crs_wkt == grid.crs_wkt or ref.crs == grid.crs
    offset = aligned_offset(ref.grid.transform, grid.transform) if same_crs else None
    with open_raster(ref.path, "reference") as src:
        if ref.nodata is None and offset is not None and _inside(offset, shape, src):
            return src.read(1, window=_rio_window(offset, shape)), None  # no nodata, nothing outside
        if invalid is not None:  # the raster's own type; its nodata also fills what lies outside it
            out, fill = np.full(shape, invalid, dtype=ref.dtype), invalid
        else:  # int32 with SENTINEL outside the raster (and on a nodata that does not fit the type)
            out, fill = np.full(shape, SENTINEL, dtype=np.int32), SENTINEL
        if offset is not None:
            _read_aligned(src, offset, shape, out)
        else:
            _read_warped(src, ref, grid, out, fill)
    if invalid is None and ref.nodata is not None:
        out[out == ref.nodata] = SENTINEL  # a nodata outside the raster's type range (rare)
    return out, fill


def _float_window(ref: RasterReference, grid: GeoGrid) -> tuple[np.ndarray, int]:
    """A float (or 64-bit) reference on the window: read as ``float64`` with NaN where invalid
    (nodata, NaN, outside), checked to hold whole class ids, returned as ``int32`` with :data:`SENTINEL`."""

    out = np.full(grid.shape, np.nan, dtype=np.float64)
    same_crs = ref.grid.crs_wkt == grid.crs_wkt or ref.crs == grid.crs
    offset = aligned_offset(ref.grid.transform, grid.transform) if same_crs else None
    with open_raster(ref.path, "reference") as src:
        if offset is not None:
            _read_aligned(src, offset, grid.shape, out)
        else:
            _read_warped(src, ref, grid, out, np.nan)
    if ref.nodata is not None:
        out[out == ref.nodata] = np.nan
    check_integral(out, ref.path, grid, ref.grid)
    valid = ~np.isnan(out)
    return np.where(valid, out, SENTINEL).astype(np.int32), SENTINEL


def check_integral(values: np.ndarray, path: str, grid: GeoGrid, file_grid: GeoGrid) -> None:
    """Refuse (:class:`InputError`) a window holding a class value that is not a whole ``int32``
    number, naming the value and where it is: the file's pixel and the map coordinates."""
    finite = ~np.isnan(values)
    bad = finite & ((np.mod(values, 1.0) != 0) | (values <= SENTINEL) | (values > np.iinfo(np.int32).max))
    if not bad.any():
        return
    r, c = (int(i) for i in np.argwhere(bad)[0])
    x, y = grid.transform * (c + 0.5, r + 0.5)
    col, row = ~file_grid.transform * (x, y)
    raise InputError(
        f"reference raster {path} holds {float(values[r, c]):g} at pixel (row {int(row)}, col {int(col)}) of the file "
        f"(x={x:.3f}, y={y:.3f}): class ids must be whole numbers; round or reclassify it, "
        "or set that value as the file's nodata"
    )


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


def _read_warped(src, ref: RasterReference, grid: GeoGrid, out: np.ndarray, fill: float) -> None:  # noqa: ANN001
    """Read the source window the label window needs (plus a margin) and warp it into ``out``, nearest."""
    from rasterio.warp import Resampling, reproject
    from rasterio.windows import Window as RioWindow
    from rasterio.windows import from_bounds

    need = grid.bounds_in(ref.crs)
    win = from_bounds(*need, transform=ref.grid.transform)
    margin = 2
    c0 = max(int(math.floor(win.col_off)) - margin, 0)
    r0 = max(int(math.floor(win.row_off)) - margin, 0)
    c1 = min(int(math.ceil(win.col_off + win.width)) + margin, ref.grid.width)
    r1 = min(int(math.ceil(win.row_off + win.height)) + margin, ref.grid.height)
    if c1 <= c0 or r1 <= r0:
        return
    rio_win = RioWindow(c0, r0, c1 - c0, r1 - r0)
    data = src.read(1, window=rio_win, out_dtype=out.dtype)
    reproject(
        source=data,
        destination=out,
        src_transform=src.window_transform(rio_win),
        src_crs=ref.crs,
        src_nodata=ref.nodata if ref.nodata is not None else (np.nan if out.dtype.kind == "f" else None),
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=fill,
        resampling=Resampling.nearest,
    )


def _vector_window(ref: VectorReference, grid: GeoGrid) -> tuple[np.ndarray, int | None]:
    """Class polygons burnt on the window, and the fill marking pixels no polygon covers: bytes
    with 255 when every class id is 0..254 (the usual case: counted 8 pixels at a time), else
    int32 with :data:`SENTINEL`. With a background class, uncovered pixels take it and every
    pixel is valid (``None``)."""
    columns = [ref.field] if ref.field else []
    df = layer_window(ref.path, ref.layer, columns, ref.crs_wkt, grid)
    if ref.value is not None:
        classes = np.full(len(df), ref.value, np.int64)
    else:
        df = df[df[ref.field].notna()]
        if ref.value_map:
            table = {n: c for n, c in ref.value_map}
            classes = np.array([table[str(v)] for v in df[ref.field]], np.int64)
        else:
            classes = df[ref.field].astype(np.int64).to_numpy()
    shapes = list(zip(df.geometry.values, classes))
    in_bytes = bool(ref.class_ids) and min(ref.class_ids) >= 0 and max(ref.class_ids) < 255
    dtype, fill = ("uint8", 255) if in_bytes else ("int32", SENTINEL)
    if ref.background is not None:
        return burn_shapes(shapes, grid, ref.background, dtype), None
    return burn_shapes(shapes, grid, fill, dtype), fill
