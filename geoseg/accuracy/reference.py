"""Bring a reference map onto the label grid, one chunk window at a time.

Accuracy assessment compares every label pixel with the reference class at the same place. The
reference may come in any CRS and resolution, so each window of the label grid gets its own
small copy of it:

* a **raster** reference is read only over the source window that the label window needs and
  warped onto the window's grid with nearest neighbour (a direct read when the grids already
  line up), never as a whole, by the inputs' reader (:func:`geoseg.io.sources.read_source`: the
  same compiled warp, validity rule — nodata, NaN, alpha band, GDAL mask — and retries);
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
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from geoseg.accuracy.layers import burn_shapes, layer_window, require_crs, vector_info
from geoseg.accuracy.pam import read_pam_legend
from geoseg.errors import ClassIdError, InputError, MissingFileError, NoOverlapError
from geoseg.geo import Bounds, GeoGrid, Window, bounds_in, bounds_overlap, crs_from_wkt
from geoseg.io.masks import MaskKind, feature_band_indexes, mask_kind
from geoseg.io.opener import UnreadableRaster, check_name, open_raster
from geoseg.io.sources import Source, place, read_source

log = logging.getLogger(__name__)

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
    mask: MaskKind = "nodata"  # the inputs' validity rule for band 1 (nodata, alpha band, GDAL mask)
    driver: str = "GTiff"  # what the opener found: tasks reopen the file as that and nothing else
    #: Values the file names as no data (:func:`fill_name`) besides its declared nodata: never scored.
    fill: tuple[int, ...] = ()
    #: Values the file names as something that is no data in some products and a class in others
    #: (:func:`ambiguous_name`), neither declared nodata nor named by the job: refused where they occur.
    ambiguous: tuple[tuple[int, str], ...] = ()

    kind = "raster"

    @property
    def crs(self) -> CRS:
        return self.grid.crs

    @property
    def source(self) -> Source:
        """Band 1 as an input file, so windows are read by the inputs' reader."""
        return Source(path=self.path, grid=self.grid, bands=(1,), mask=self.mask, dtype=self.dtype,
                      nodata=self.nodata, block=(0, 0), descriptions=("class",), driver=self.driver)

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
    warn_fill: bool = True,
    nodata: Sequence[int] | None = None,
) -> Reference:
    """Describe a reference map, detecting raster or vector by opening it.

    Checks what can be checked once, on the client: it opens, has a CRS, holds integer classes
    (and, given the label grid, overlaps it), so tasks fail only on I/O. For a vector layer:
    ``field`` (integer, or string mapped through ``value_map`` or else the names of
    ``class_names``), or ``value`` (every polygon is that class); ``background`` classes what
    no polygon covers. ``warn_fill``: warn when a raster that declares no nodata has a border of one
    value (false where 0 is meaningful as read, as in an instance raster's "no instance"). ``nodata``: a raster's
    values that are no data, over what the file declares or names (the job's ``reference.nodata``).
    """
    path = str(path)
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise MissingFileError(f"reference {path} does not exist")
    raster = _try_raster(path, class_names, warn_fill, tuple(nodata or ()))
    ref: Reference
    if raster is None:
        if nodata:
            raise InputError(f"reference {path} is a vector layer; reference nodata values apply to a raster of class "
                             "ids (leave out the polygons, or their class, that are no data)")
        ref = _open_vector_reference(path, field, value, background, value_map, class_names)
    elif field is not None or value is not None or background is not None or value_map:
        raise InputError(
            f"reference {path} is a raster; field, value, background and values only apply to vector references"
        )
    else:
        ref = raster
    if label_grid is not None:
        if not bounds_overlap(bounds_in(ref.bounds, ref.crs, label_grid.crs), label_grid.bounds):
            raise NoOverlapError(
                f"reference {path} does not overlap the label raster (reference bounds {tuple(round(v, 3) for v in ref.bounds)} "
                f"in {ref.crs.to_string()}); check that both cover the same area and that the reference's CRS is right"
            )
    return ref


def _try_raster(path: str, class_names: Mapping[int, str] | None = None, warn_fill: bool = True,
                nodata: tuple[int, ...] = ()) -> RasterReference | None:
    """The reference as a raster, or None when it is none the opener reads (then tried as a vector).

    Its classes are named from the file (a ``classes`` tag, geoseg's own tags, else the RAT or category names
    of its ``.aux.xml``); a value named no data there (:func:`fill_name`) is left out like the declared
    nodata, and a value named ambiguously (:func:`ambiguous_name`) is refused where it occurs unless the
    job's ``class_names`` name it or its ``nodata`` leaves it out (as it leaves out any value it lists)."""
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
        _refuse_colours(src, path)
        _refuse_bands(src, path)
        tags = {**src.tags(), **src.tags(1)}
        pam = read_pam_legend(path)
        tagged, own = parse_class_tag(tags.get("classes", "")), _geoseg_legend(tags)
        fill: tuple[int, ...] = ()
        ambiguous: tuple[tuple[int, str], ...] = ()
        if own and not tagged:  # geoseg's own legend: classes only (its fill is the declared 255)
            legend = tuple((v, n) for v, n in own if v != src.nodata)
        else:
            fill, ambiguous, legend = _sort_names(tagged or pam.names(None), src.nodata, dtype, class_names or {})
        if nodata:  # the job's word: these values are no data, whatever the file calls them
            said = {v for v in nodata if v != src.nodata}
            fill = tuple(sorted({*fill, *said}))
            ambiguous = tuple((v, n) for v, n in ambiguous if v not in said)
            legend = tuple((v, n) for v, n in legend if v not in said)
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = {}
        named = dict(legend)
        left_out = {*fill, *([] if src.nodata is None else [src.nodata])}
        colors = tuple(
            (int(k), "#{:02x}{:02x}{:02x}".format(*v[:3])) for k, v in cmap.items()
            if k not in left_out and (k in named if named else v[3] > 0 and tuple(v[:3]) != (0, 0, 0))
        ) or tuple((v, c) for v, c in pam.colors(src.nodata) if v not in left_out)
        ref = RasterReference(
            path=path,
            grid=GeoGrid.of_dataset(src),
            nodata=None if src.nodata is None else float(src.nodata),
            dtype=dtype,
            legend=legend,
            colors=colors,
            mask=mask_kind(src, (1,)),
            driver=src.driver,
            fill=fill,
            ambiguous=ambiguous,
        )
        if ambiguous:
            _refuse_ambiguous(ref, _overview(src))
        elif warn_fill and ref.nodata is None and not fill and ref.mask == "none":
            _warn_border_fill(ref)
        return ref


#: Names that say "no data" (compared without case, spaces or punctuation: "No Data", "NODATA", "no_data").
_FILL_NAMES = ("nodata", "novalue", "nodatavalue", "fill", "fillvalue", "missing", "missingdata")
#: Names products use both for no data and for a class: USDA CDL's 0 "Background" is outside the
#: survey, a building mask's 0 "background" is a class; NLCD's 0 "Unclassified" is unmapped, elsewhere
#: "unclassified" is land a classifier left over. Neither is guessed: where such a value occurs, it is refused.
_AMBIGUOUS_NAMES = ("background", "unclassified", "notclassified", "unknown", "unlabeled", "unlabelled",
                    "undefined", "void")


def _squeeze(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def fill_name(name: str) -> bool:
    """Whether a category name says the value is no data.

    >>> [fill_name(n) for n in ("No Data", "NoData", "NODATA", "no_data (outside the area)", "Water", "Background")]
    [True, True, True, True, False, False]
    """
    squeezed = _squeeze(name)
    return squeezed in _FILL_NAMES or squeezed.startswith("nodata")


def ambiguous_name(name: str) -> bool:
    """Whether a category name is no data in some products and a class in others.

    >>> [ambiguous_name(n) for n in ("Background", "Unclassified", "un-classified", "Open Water", "No Data")]
    [True, True, True, False, False]
    """
    return _squeeze(name) in _AMBIGUOUS_NAMES


def _sort_names(
    stated: tuple[tuple[int, str], ...], nodata: float | None, dtype: str, class_names: Mapping[int, str],
) -> tuple[tuple[int, ...], tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]:
    """The file's class names sorted into values it names no data (``fill``), values whose name is ambiguous
    and the legend (every named value but the declared nodata and the fill). A value the job's classes name is a
    class whatever the file calls it; one the raster's type cannot hold is left out."""
    info = np.iinfo(dtype) if dtype in _INT_DTYPES else None
    fill, ambiguous, legend = [], [], []
    for value, name in stated:
        if (nodata is not None and value == nodata) or (info is not None and not info.min <= value <= info.max):
            continue
        if value in class_names:
            legend.append((value, name))
        elif fill_name(name):
            fill.append(value)
        elif ambiguous_name(name):
            ambiguous.append((value, name))  # refused where met; named like any class the file names
            legend.append((value, name))
        else:
            legend.append((value, name))
    return tuple(fill), tuple(ambiguous), tuple(legend)


def _ambiguity_error(ref: RasterReference, value: int, name: str) -> InputError:
    return ClassIdError(
        f"reference raster {ref.path} holds {value}, which it names {name!r}: no data in some products, a class in "
        f"others; to leave it out set reference nodata: {value} in the job (geoseg evaluate --reference-nodata {value}), "
        f"to score it name class {value} in the job's classes (geoseg evaluate --class-names {value}=NAME)"
    )


def _overview(src: Any) -> np.ndarray:
    """Band 1 decimated to at most :data:`_PROBE_SIDE` pixels a side (an overview where the file has one)."""
    from rasterio.enums import Resampling

    if not src.overviews(1) and src.height * src.width > _PROBE_PIXELS:
        return np.zeros((0, 0), src.dtypes[0])  # a large file without overviews: its windows are checked as read
    f = max(1, -(-max(src.height, src.width) // _PROBE_SIDE))
    shape = (max(1, src.height // f), max(1, src.width // f))
    return src.read(1, out_shape=shape, resampling=Resampling.nearest)


#: Longest side of the decimated copy of a reference read at open time to find ambiguous values early.
_PROBE_SIDE = 512
#: Files without overviews up to this many pixels are read (decimated) for that probe.
_PROBE_PIXELS = 16_000_000


def _refuse_ambiguous(ref: RasterReference, values: np.ndarray) -> None:
    """Refuse (:class:`ClassIdError`) a window of reference values holding one of its ambiguous values."""
    for value, name in ref.ambiguous:
        if (values == value).any():
            raise _ambiguity_error(ref, value, name)


def _warn_border_fill(ref: RasterReference) -> None:
    """Warn, in one line, when one value covers most of the border of a reference that declares no nodata
    (ESA WorldCover, Esri Land Cover and Dynamic World exports fill with 0 and may declare nothing)."""
    from geoseg.io.fill import border_fill

    try:
        hit = border_fill(ref.source)
    except Exception as exc:  # a hint only: the read proper reports a bad file
        log.debug("fill check of %s failed: %s", ref.path, exc)
        return
    if hit is None:
        return
    value, border, share = hit
    shown = int(value) if float(value).is_integer() else value
    of_file = "" if share is None else f" and {100 * share:.1f} % of the file"
    log.warning("reference raster %s: the value %s fills %.0f %% of its border%s but is not declared nodata, so it is "
                "scored as class %s; if it is fill, set reference nodata: %s in the job (geoseg evaluate --reference-nodata %s)",
                ref.path, shown, 100 * border, of_file, shown, shown, shown)


def _refuse_bands(src: Any, path: str) -> None:
    """Refuse a reference with more than one band of values (an alpha band aside): Dynamic World exports hold
    nine probability bands and the ``label`` band, and band 1 would score water probabilities as classes."""
    bands = feature_band_indexes(src)
    if len(bands) <= 1:
        return
    described = [(b, (src.descriptions[b - 1] or "").strip()) for b in bands]
    named = [(b, d) for b, d in described if _squeeze(d) in _CLASS_BANDS]
    hint = f"; band {named[0][0]} is described {named[0][1]!r}" if len(named) == 1 else ""
    pick = named[0][0] if len(named) == 1 else "N"
    raise InputError(
        f"reference raster {path} has {len(bands)} bands{hint}: class ids are read from a one-band raster; "
        f"write the band of class ids to its own file (gdal_translate -b {pick} {path} classes.tif) and give that"
    )


#: Band descriptions that say the band holds class ids (compared squeezed: "label", "Classification").
_CLASS_BANDS = ("label", "labels", "class", "classes", "classid", "classification", "landcover", "lulc", "lc")


def _refuse_colours(src: Any, path: str) -> None:
    """Refuse a reference whose band 1 is a colour channel (an RGB picture of the classes, as many datasets
    ship their label maps): its red values are not class ids, and scoring them would be silently wrong."""
    interp = [ci.name for ci in src.colorinterp]
    if interp and interp[0] in ("red", "Y"):
        kind = "RGB" if interp[0] == "red" else "YCbCr"
        raise InputError(f"reference raster {path} is an {kind} image ({src.count} bands): its colours are not class "
                         "ids; give a one-band raster of class ids (a colour table may keep the colours)")


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
    if info.get("total_bounds") is None:  # GDAL gives no extent to a layer without a (valid) geometry
        raise InputError(f"reference {path} (layer {info.get('layer_name')}) has no geometries GDAL can read; "
                         "give a layer of polygons")
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
            raise ClassIdError(f"reference field {field!r} of {path} holds {frac.iloc[0]:g}: class ids must be whole numbers")
        dtype = "int64"
    if dtype.startswith(("int", "uint")):
        if value_map:
            raise InputError(f"reference field {field!r} of {path} holds integers; a values map only applies to text fields")
        ids = {int(v) for v in present.astype(np.int64).unique()}
        return VectorReference(field=field, class_ids=tuple(sorted(ids | set(extra))), **common)
    if dtype not in ("object", "str", "string"):
        raise InputError(f"reference field {field!r} of {path} is {dtype}; it must hold integer class ids or class names")
    names = sorted({str(v) for v in present.unique()})
    table = _name_table(value_map, class_names, names)
    if not value_map and names and all(_is_code(n) for n in names) and not any(_norm(n) in table for n in names):
        # class codes kept as text (CORINE's vector Code_18: "111", "211"): the codes are the class ids
        codes = tuple((n, int(n)) for n in names)
        return VectorReference(field=field, value_map=codes, class_ids=tuple(sorted({c for _, c in codes} | set(extra))),
                               **common)
    missing = [n for n in names if _norm(n) not in table]
    if missing:
        how = "reference.values" if value_map else "the job's classes (by name) or reference.values"
        raise ClassIdError(
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


def _is_code(text: str) -> bool:
    """Whether a class name is a whole number written in digits (a class code stored as text).

    >>> [_is_code(t) for t in ("111", "-2", " 7", "1.5", "11a", "forest")]
    [True, True, True, False, False, False]
    """
    digits = text.strip().removeprefix("-").removeprefix("+")
    return digits.isascii() and digits.isdigit()


def _norm(name: str) -> str:
    """Class names match ignoring case and surrounding spaces."""
    return str(name).strip().casefold()


def _name_table(value_map: Mapping[str, int] | None, class_names: Mapping[int, str] | None,
                names: Sequence[str] = ()) -> dict[str, int]:
    """Class name (any case) -> id. A name of ``names`` (the layer's) that two ids share is refused: which class
    its polygons are would be a guess."""
    pairs = [(k, int(v)) for k, v in value_map.items()] if value_map else [(n, int(c)) for c, n in (class_names or {}).items()]
    table: dict[str, int] = {}
    shared: dict[str, set[int]] = {}
    for name, class_id in pairs:
        if table.setdefault(_norm(name), class_id) != class_id:
            shared.setdefault(_norm(name), {table[_norm(name)]}).add(class_id)
    for name in names:
        if _norm(name) in shared:
            where = "reference.values" if value_map else "the job's classes"
            ids = " and ".join(str(c) for c in sorted(shared[_norm(name)]))
            raise InputError(f"{where} give the name {name!r} (ignoring case) to classes {ids}, and the reference's "
                             "polygons carry it; give each class its own name")
    return table


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
    invalid, extra = _native_nodata(ref), ref.fill
    if invalid is None and extra:  # a value the file names no data marks the invalid pixels
        invalid, extra = extra[0], extra[1:]
    got = _read(ref, grid)
    if got is not None and ref.mask == "none" and got[0].shape[1:] == grid.shape and got[1].all():
        out, fill = got[0][0], invalid  # no validity rule, nothing outside: the pixels as read
    else:
        if invalid is not None:  # the raster's own type; its nodata also fills what lies outside it
            out, fill = np.full(grid.shape, invalid, dtype=ref.dtype), invalid
        else:  # int32 with SENTINEL outside the raster (and wherever it is not valid)
            out, fill = np.full(grid.shape, SENTINEL, dtype=np.int32), SENTINEL
        if got is not None:
            data, valid, where = got
            np.copyto(out[where], data[0], where=valid, casting="unsafe")
    return _named_fill(ref, out, fill, extra)


def _named_fill(ref: RasterReference, out: np.ndarray, fill: int | None, extra: tuple[int, ...]) -> tuple[np.ndarray, int | None]:
    """The window with the further values its file names no data set to ``fill``, after refusing one that
    holds a value the file names ambiguously."""
    _refuse_ambiguous(ref, out)
    if extra and fill is not None:
        gone = np.isin(out, extra)
        if gone.any():
            out = np.where(gone, fill, out).astype(out.dtype, copy=False)
    return out, fill


def _float_window(ref: RasterReference, grid: GeoGrid) -> tuple[np.ndarray, int]:
    """A float (or 64-bit) reference on the window: read as ``float64`` with NaN where invalid
    (nodata, NaN, masked, outside), checked to hold whole class ids, returned as ``int32`` with :data:`SENTINEL`."""
    out = np.full(grid.shape, np.nan, dtype=np.float64)
    got = _read(ref, grid)
    if got is not None:
        data, valid, where = got
        np.copyto(out[where], data[0], where=valid)
    check_integral(out, ref.path, grid, ref.grid)
    valid = ~np.isnan(out)
    ids, _ = _named_fill(ref, np.where(valid, out, SENTINEL).astype(np.int32), SENTINEL, ref.fill)
    return ids, SENTINEL


def _read(ref: RasterReference, grid: GeoGrid) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:
    """Band 1 on the window by the inputs' reader (:func:`geoseg.io.sources.read_source`): a direct read
    when the grids line up, else the compiled nearest warp; the inputs' validity rule and retries."""
    src = place(ref.source, grid)
    return read_source(src, grid, Window(0, 0, grid.height, grid.width), "nearest")


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
    raise ClassIdError(
        f"reference raster {path} holds {float(values[r, c]):g} at pixel (row {int(row)}, col {int(col)}) of the file "
        f"(x={x:.3f}, y={y:.3f}): class ids must be whole numbers; round or reclassify it, "
        "or set that value as the file's nodata"
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
