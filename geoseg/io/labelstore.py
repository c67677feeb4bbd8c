"""The label raster as a georeferenced Zarr store that GDAL, rasterio and xarray open directly.

Layout (Zarr v2, the format GDAL's Zarr driver reads best)::

    labels.zarr/
      labels        (y, x) uint8, chunked on the processing grid, zstd; fill = NODATA_LABEL
                    attrs: _ARRAY_DIMENSIONS, _CRS {"wkt"} (GDAL), crs + transform (rioxarray: the
                    exact affine), geoseg:classes (ids, names, colours), flag_values/meanings/colors
      x, y          pixel-centre coordinates (GDAL derives the geotransform from them)
      .zmetadata    consolidated metadata, written last
    labels.qml      beside the store: the QGIS style (classes, names, colours) QGIS loads by default

Exactly three arrays (the labels and their two coordinates): with a fourth (a CF ``spatial_ref``
variable) GDAL lists every array as a subdataset and ``rioxarray.open_rasterio("labels.zarr")``
fails on the 0-D one. The CRS and the exact transform travel as attributes of ``labels``
instead, where rioxarray and :func:`open_labels` read them; GDAL up to 3.12 derives the
geotransform from the coordinates (on a 1 cm grid in UTM that is 0.01 m ± 1e-13).

Writing is a transaction: a store is built under ``labels.zarr.partial``; every chunk is written
whole, once, followed by a small marker file, so a rerun skips chunks already done; only
:meth:`LabelStoreWriter.finalize` consolidates the metadata and renames the store into place.
A ``labels.zarr`` that exists is therefore always complete.

On object storage (an fsspec URL, see :mod:`geoseg.io.storage`) there is no rename: the store is
built in place, markers are objects, and the consolidated ``.zmetadata`` written last by
:meth:`LabelStoreWriter.finalize` is its commit object; readers open only consolidated stores.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from affine import Affine

from geoseg.errors import GeosegError, InputError, LabelStoreError, MissingFileError, NoCRSError, OutputError
from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.io import storage
from geoseg.io.atomic import replace_path, write_text_atomic
from geoseg.io.manifest import verifying_store, write_manifest
from geoseg.legend import (
    NODATA_LABEL,
    ClassInfo,
    legend_from_attrs,
    legend_from_json,
    legend_to_json,
    paletted_qml,
)

ARRAY_NAME = "labels"
#: Attribute of a k-means run's labels: the digest of the model that numbered its clusters
#: (:meth:`geoseg.methods.kmeans.KMeansModel.identity`).
KMEANS_MODEL_ATTR = "geoseg:kmeans_model"
#: The same in a label GeoTIFF's tags (GDAL splits a metadata name at a colon).
KMEANS_MODEL_TAG = "GEOSEG_KMEANS_MODEL"
PARTIAL_SUFFIX = ".partial"
_MARKERS = ".geoseg-chunks"


def _compressor():
    import numcodecs

    return numcodecs.Zstd(level=3)


@dataclass(frozen=True)
class LabelRasterInfo:
    """What a finished label store says about itself."""

    path: Path | str  # a str for a store on object storage (an fsspec URL)
    grid: GeoGrid
    chunk: int
    legend: tuple[ClassInfo, ...]
    nodata: int
    attrs: dict[str, Any]

    @property
    def chunk_grid(self) -> ChunkGrid:
        """The store's grid cut into its own chunks (the unit every reader works in)."""
        return self.grid.tiles(self.chunk)


class LabelStoreWriter:
    """Builds ``<path>`` chunk by chunk; safe to use from many processes at once.

    Create it on the client with :meth:`create`, then, in tasks, build a writer with the same
    ``path`` and ``grid`` and call :meth:`write`. The grid carries the CRS written into the store.
    """

    def __init__(self, path: str | Path, grid: ChunkGrid, array: str = ARRAY_NAME) -> None:
        self.path: Path | str = path if storage.is_url(path) else Path(path)
        self.grid = grid
        self.array = array

    @property
    def partial_path(self) -> Path | str:
        if isinstance(self.path, str):
            return self.path  # object storage: built in place, published by its .zmetadata
        return self.path.with_name(self.path.name + PARTIAL_SUFFIX)

    @classmethod
    def create(
        cls,
        path: str | Path,
        grid: ChunkGrid,
        legend: tuple[ClassInfo, ...],
        attrs: dict[str, Any] | None = None,
        resume_key: str | None = None,
        dtype: str = "uint8",
        fill_value: int = NODATA_LABEL,
        array: str = ARRAY_NAME,
    ) -> LabelStoreWriter:
        """Start (or resume) a store. ``resume_key`` identifies the work; a partial store
        with another key is discarded rather than reused, so stale chunks never leak in.

        ``dtype``, ``fill_value`` and ``array`` (the raster's name in the store) let the same
        layout hold other per-pixel rasters on the label grid, e.g. a confidence raster."""
        import zarr

        writer = cls(path, grid, array)
        partial = writer.partial_path
        if isinstance(partial, str):
            if _create_on_store(partial, resume_key):
                return writer
        elif partial.exists():
            old_key = _read_resume_key(partial)
            if resume_key is not None and old_key == resume_key:
                return writer
            shutil.rmtree(partial)
        else:
            partial.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(partial), mode="w", zarr_format=2)
        labels = root.create_array(
            array,
            shape=grid.shape,
            chunks=(grid.chunk, grid.chunk),
            dtype=dtype,
            fill_value=fill_value,
            compressors=_compressor(),
        )
        t = grid.transform
        labels.attrs.update(_label_attrs(grid.crs_wkt, legend, {"geoseg:nodata": fill_value, **(attrs or {})}))
        labels.attrs.update(georeference_attrs(grid.crs_wkt, t))
        # no fill value: a default 0.0 made xarray read a pixel centre at 0 (the equator, the prime
        # meridian) as NaN
        x_attrs, y_attrs = coordinate_attrs(grid.crs)
        x = root.create_array("x", shape=(grid.width,), chunks=(grid.width,), dtype="float64", compressors=None,
                              fill_value=None)
        x[:] = t.c + t.a * (np.arange(grid.width) + 0.5)
        x.attrs.update({"_ARRAY_DIMENSIONS": ["x"], **x_attrs})
        y = root.create_array("y", shape=(grid.height,), chunks=(grid.height,), dtype="float64", compressors=None,
                              fill_value=None)
        y[:] = t.f + t.e * (np.arange(grid.height) + 0.5)
        y.attrs.update({"_ARRAY_DIMENSIONS": ["y"], **y_attrs})
        root.attrs.update({"geoseg:resume_key": resume_key or "", "geoseg:complete": False})
        if isinstance(partial, Path):
            (partial / _MARKERS).mkdir()
        return writer

    def marker(self, window: Window) -> Path | str:
        return _child(self.partial_path, _MARKERS, f"{window.key}.done")

    def is_done(self, window: Window) -> bool:
        marker = self.marker(window)
        return storage.exists(marker) if isinstance(marker, str) else marker.exists()

    def done_windows(self) -> set[str]:
        folder = _child(self.partial_path, _MARKERS)
        if isinstance(folder, str):
            return {n[: -len(".done")] for n in storage.listdir(folder) if n.endswith(".done")}
        if not folder.exists():
            return set()
        return {p.stem for p in folder.glob("*.done") if not p.name.startswith(".")}  # hidden: a temporary

    def write(self, window: Window, labels: np.ndarray, mark: bool = True) -> None:
        """Write one whole chunk, then its marker (so a crash mid-write is redone on resume).

        ``mark=False``: no marker yet (a store of several rasters marks the chunk after its last one)."""
        import zarr

        if labels.shape != (window.height, window.width):
            raise ValueError(f"chunk {window.key} has shape {labels.shape}")
        partial = self.partial_path
        if not (isinstance(partial, Path) and _write_chunk_file(partial / self.array, window, labels)):
            arr = zarr.open_array(str(_child(partial, self.array)), mode="r+", zarr_format=2)
            rows, cols = window.slices
            arr[rows, cols] = labels.astype(arr.dtype, copy=False)
        if not mark:
            return
        marker = self.marker(window)
        if isinstance(marker, str):
            storage.write_bytes(marker, b"ok")
        else:
            write_text_atomic(marker, "ok")

    def finalize(self, extra_attrs: dict[str, Any] | None = None, also: tuple[str, ...] = ()) -> Path | str:
        """Check every chunk is done, consolidate metadata and move the store into place.

        ``also``: further rasters of the store on the same chunk grid, listed in its manifest too."""
        import zarr

        done = self.done_windows()  # one listing, not a request per chunk
        missing = [w.key for w in self.grid.windows() if w.key not in done]
        if missing:
            raise OutputError(f"{len(missing)} label chunks were never written (first: {missing[0]}); rerun the job")
        partial = self.partial_path
        arr = zarr.open_array(str(_child(partial, self.array)), mode="r+", zarr_format=2)
        if extra_attrs:
            arr.attrs.update(extra_attrs)
        root = zarr.open_group(str(partial), mode="r+", zarr_format=2)
        root.attrs.update({"geoseg:complete": True})
        if isinstance(partial, str):
            storage.remove(storage.join(partial, _MARKERS))
            _consolidate(partial)  # the commit object, written last
            return partial
        shutil.rmtree(partial / _MARKERS)
        _consolidate(partial)
        write_manifest(partial, (self.array, *also) if also else self.array, self.grid.chunks_shape)  # checked by every reader
        target = Path(self.path)
        replace_path(partial, target)  # an older store is renamed aside, then removed
        write_style(target, legend_from_attrs(dict(arr.attrs)))
        return target


@dataclass(frozen=True)
class _ChunkLayout:
    """What writing one chunk file of a local Zarr v2 array needs, read from its ``.zarray``."""

    chunks: tuple[int, int]
    dtype: np.dtype
    fill_value: int
    separator: str
    codec: Any  # a numcodecs codec, or None for raw bytes


@lru_cache(maxsize=16)
def _chunk_layout(zarray: Path, stamp: tuple[int, int, int]) -> _ChunkLayout | None:  # stamp: cache key
    """The layout of a label array, or ``None`` for one this writer leaves to Zarr (filters, F order...)."""
    import numcodecs

    meta = json.loads(zarray.read_text())
    if meta.get("filters") or meta.get("order", "C") != "C" or len(meta["chunks"]) != 2 or meta["fill_value"] is None:
        return None
    codec = numcodecs.get_codec(meta["compressor"]) if meta.get("compressor") else None
    return _ChunkLayout(tuple(meta["chunks"]), np.dtype(meta["dtype"]), int(meta["fill_value"]),
                        meta.get("dimension_separator", "."), codec)


def _write_chunk_file(folder: Path, window: Window, labels: np.ndarray) -> bool:
    """Write one whole chunk of a local Zarr v2 array as Zarr itself would, byte for byte; False
    when the array is not one this knows how to write (then Zarr writes it).

    Why not ``arr[rows, cols] = labels``: Zarr opens the array (reads its metadata) for every chunk
    and routes the write through its event-loop thread, about 9 ms of a 2048² chunk's 16 ms of CPU
    besides the compression itself. As Zarr does, the chunk is padded with the fill value at the
    edges of the raster, and a chunk that is all fill value is not stored (any older one removed).
    """
    zarray = folder / ".zarray"
    try:
        st = zarray.stat()
    except OSError:
        return False
    layout = _chunk_layout(zarray, (st.st_ino, st.st_mtime_ns, st.st_size))
    ch, cw = layout.chunks if layout is not None else (0, 0)
    if layout is None or window.row_off % ch or window.col_off % cw or window.height > ch or window.width > cw:
        return False
    block = labels.astype(layout.dtype, copy=False)
    if block.shape != (ch, cw):
        padded = np.full((ch, cw), layout.fill_value, dtype=layout.dtype)
        padded[: window.height, : window.width] = block
        block = padded
    path = folder / f"{window.row_off // ch}{layout.separator}{window.col_off // cw}"
    if not (block != layout.fill_value).any():
        path.unlink(missing_ok=True)
        return True
    block = np.ascontiguousarray(block)
    data = layout.codec.encode(block) if layout.codec is not None else block.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)  # "/" separator: one folder per chunk row
    with open(path, "wb") as f:
        f.write(data)
    return True


def _child(base: Path | str, *names: str) -> Path | str:
    """``base/names`` for a local store or one on object storage."""
    return storage.join(base, *names) if isinstance(base, str) else base.joinpath(*names)


def _create_on_store(url: str, resume_key: str | None) -> bool:
    """Prepare a store on object storage; True when an unfinished one with ``resume_key`` is resumed.

    The commit object (``.zmetadata``) goes first, so the store is unpublished before anything changes."""
    storage.remove(storage.join(url, ".zmetadata"))
    text = storage.read_text(storage.join(url, ".zattrs"))
    try:
        attrs = json.loads(text) if text else {}
    except ValueError:
        attrs = {}
    if resume_key is not None and attrs.get("geoseg:resume_key") == resume_key and not attrs.get("geoseg:complete"):
        return True
    storage.remove(url)
    return False


def set_legend(path: str | Path, legend: tuple[ClassInfo, ...]) -> None:
    """Replace the legend of a finished label store (CF flags and ``geoseg:classes``) and
    reconsolidate its metadata; the labels themselves are untouched.

    Why: a k-means run knows which class each cluster stands for only after the evaluation;
    the store, and every output made from it, should then carry those names and colours.
    """
    import zarr

    arr = zarr.open_array(label_array_location(path), mode="r+", zarr_format=2)
    attrs: dict[str, Any] = dict(arr.attrs)
    new = _label_attrs(attrs.get("_CRS", {}).get("wkt", ""), tuple(legend), {})
    for key in ("flag_values", "flag_meanings", "geoseg:classes"):
        attrs.pop(key, None)
        if key in new:
            attrs[key] = new[key]
    arr.attrs.clear()
    arr.attrs.update(attrs)
    _consolidate(path)  # on object storage this rewrites the commit object, still complete
    write_style(path, tuple(legend))


def style_path(path: str | Path) -> Path:
    """The QGIS style QGIS loads by default for a raster: beside it, its name with ``.qml``
    (``labels.zarr`` → ``labels.qml``, ``overviews/4`` → ``overviews/4.qml``), as for ``labels.tif``."""
    p = Path(path)
    return p.with_name((p.name[: -len(p.suffix)] if p.suffix else p.name) + ".qml")


def write_style(path: str | Path, legend: tuple[ClassInfo, ...], nodata: int = NODATA_LABEL) -> None:
    """Write the paletted QGIS style of a local label store beside it (none without a legend, e.g.
    a confidence raster, or on object storage), so QGIS shows names and colours, not grey."""
    if legend and not storage.is_url(path):
        write_text_atomic(style_path(path), paletted_qml(legend, nodata))


def _consolidate(path: str | Path) -> None:
    """Consolidate the metadata of the store's top level only: stores nested in it (``overviews/N``,
    ``method_labels``) stay out of ``.zmetadata``, so GDAL and xarray still see one raster."""
    import zarr

    with warnings.catch_warnings():  # our manifest beside the arrays is not a Zarr node, and need not be one
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        zarr.consolidate_metadata(str(path))
    location = _child(path, ".zmetadata")
    text = storage.read_text(location) if isinstance(location, str) else location.read_text()
    meta = json.loads(text or "{}")
    groups = {k.split("/")[0] for k in meta.get("metadata", {}) if k.count("/") == 1 and k.endswith("/.zgroup")}
    kept = {k: v for k, v in meta.get("metadata", {}).items() if k.split("/")[0] not in groups}
    if groups:
        meta["metadata"] = kept
        data = json.dumps(meta, indent=4, sort_keys=True)
        if isinstance(location, str):
            storage.write_bytes(location, data.encode())
        else:
            write_text_atomic(location, data)


#: Where a store whose values were replaced by class ids keeps the method's own labels (a complete
#: label store of its own, not in the consolidated metadata, like the overviews).
METHOD_LABELS_DIR = "method_labels"


def remap_labels(
    path: str | Path, lut: np.ndarray, legend: tuple[ClassInfo, ...], client: Any = None,
    show_progress: bool = False,
) -> Path | str:
    """Replace every label ``v`` of a finished store by ``lut[v]`` and give it ``legend``, chunk by chunk.

    Why: a k-means run learns which class each cluster stands for only after the evaluation; the
    published raster should then hold those class ids (the ids of metrics.csv), not cluster ids.

    A local store is rebuilt as a transaction: the remapped chunks go to a new partial store,
    the original moves into it as ``method_labels/`` (a complete label store of its own: the
    method's own ids, e.g. clusters), and the result is renamed into place; a crash leaves either
    the old store or a ``.partial`` the next run discards. On object storage the store is unpublished
    (its ``.zmetadata`` removed), remapped in place and published again; the method's labels are
    not kept there. With a Dask ``client`` the chunks are remapped on the workers.
    """
    from geoseg.progress import chunk_progress

    lut = np.asarray(lut, dtype=np.uint8)
    if lut.shape != (256,):
        raise ValueError("a label lookup table has 256 entries")
    info = read_label_info(path)
    grid = info.chunk_grid
    windows = list(grid.windows())
    extra = {k: v for k, v in info.attrs.items() if k.startswith("geoseg:") and k != "geoseg:classes"}
    if isinstance(info.path, str):
        storage.remove(storage.join(info.path, ".zmetadata"))  # unpublished until remapped
        source, writer = info.path, LabelStoreWriter(info.path, grid)
    else:
        writer = LabelStoreWriter.create(info.path, grid, legend, attrs=extra, resume_key=None)
        moved = Path(str(writer.partial_path)) / METHOD_LABELS_DIR
        info.path.rename(moved)
        source = str(moved)
    args = (source, str(info.path), grid, lut)  # a writer of info.path writes into its partial store
    if client is not None:
        from distributed import as_completed

        futures = client.map(_remap_window, *[[a] * len(windows) for a in args], windows, pure=False)
        for _ in chunk_progress(as_completed(futures), len(futures), "class ids", show_progress):
            pass
        client.gather(futures)  # raises a task's error
    else:
        for w in chunk_progress(windows, len(windows), "class ids", show_progress):
            _remap_window(*args, w)
    if isinstance(info.path, str):
        storage.remove(storage.join(info.path, _MARKERS))
        set_legend(info.path, legend)  # rewrites .zmetadata: published again
        return info.path
    return writer.finalize()


def _remap_window(source: str, target: str, grid: ChunkGrid, lut: np.ndarray, window: Window) -> None:
    """One chunk of :func:`remap_labels` (a Dask task): read, look up, write whole with its marker."""
    block = read_label_window(source, window)
    LabelStoreWriter(target, grid).write(window, lut[block])


def _read_resume_key(partial: Path) -> str | None:
    try:
        return json.loads((partial / ".zattrs").read_text()).get("geoseg:resume_key")
    except (OSError, ValueError):
        return None


#: CF (UDUNITS) names of the linear units a projected CRS may have, by pyproj's unit name.
_CF_LINEAR_UNITS = {"metre": "m", "meter": "m", "foot": "ft", "US survey foot": "US_survey_foot"}


def coordinate_attrs(crs: Any) -> tuple[dict[str, str], dict[str, str]]:
    """CF attributes of the ``x`` and ``y`` coordinate arrays as the CRS has them: longitude and
    latitude in degrees on a geographic CRS, projection coordinates in the CRS's linear unit (a
    State Plane grid in US survey feet), no unit where the CRS names none.

    >>> from rasterio.crs import CRS
    >>> coordinate_attrs(CRS.from_epsg(4326))[0], coordinate_attrs(CRS.from_epsg(2263))[1]["units"]
    ({'units': 'degrees_east', 'standard_name': 'longitude'}, 'US_survey_foot')
    """
    if crs.is_geographic:
        return ({"units": "degrees_east", "standard_name": "longitude"},
                {"units": "degrees_north", "standard_name": "latitude"})
    import pyproj

    try:
        names = {a.unit_name for a in pyproj.CRS.from_wkt(crs.to_wkt()).axis_info}
    except Exception:  # a CRS pyproj cannot read: no unit to state
        names = set()
    unit = _CF_LINEAR_UNITS.get(names.pop()) if len(names) == 1 else None
    x, y = {"standard_name": "projection_x_coordinate"}, {"standard_name": "projection_y_coordinate"}
    return ({"units": unit, **x}, {"units": unit, **y}) if unit else (x, y)


def georeference_attrs(crs_wkt: str, transform: Affine) -> dict[str, Any]:
    """The CRS and the exact affine as attributes of a raster array: ``crs`` (WKT) and ``transform``
    (the six affine coefficients, rasterio order) are what rioxarray falls back to without a grid
    mapping variable; ``GeoTransform`` is the same affine in GDAL's order, for people reading attrs.

    >>> georeference_attrs("", Affine(0.01, 0, 500000, 0, -0.01, 4e6))["transform"]
    [0.01, 0.0, 500000.0, 0.0, -0.01, 4000000.0]
    """
    t = transform
    return {
        "crs": crs_wkt,
        "transform": [float(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f)],
        "GeoTransform": " ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
    }


def _label_attrs(crs_wkt: str, legend: tuple[ClassInfo, ...], extra: dict[str, Any]) -> dict[str, Any]:
    flags = (
        {
            "flag_values": [c.id for c in legend],
            "flag_meanings": " ".join(c.name.replace(" ", "_") for c in legend),
            "flag_colors": " ".join(c.color for c in legend),
        }
        if legend
        else {}  # not a class raster (e.g. confidence): no CF flags
    )
    return {
        "_ARRAY_DIMENSIONS": ["y", "x"],
        "_CRS": {"wkt": crs_wkt},
        "long_name": "class label",
        **flags,
        "geoseg:classes": legend_to_json(legend),
        "geoseg:nodata": NODATA_LABEL,
        **extra,
    }


GEOTIFF_SUFFIXES = (".tif", ".tiff")


def is_geotiff(path: str | Path) -> bool:
    """Label rasters named ``*.tif``/``*.tiff`` are read with rasterio instead of as a Zarr store."""
    return Path(path).suffix.lower() in GEOTIFF_SUFFIXES


def read_label_info(path: str | Path) -> LabelRasterInfo:
    """Read the georeferencing and legend of a finished label store (or a single-band GeoTIFF)."""
    import zarr

    if storage.is_url(path):
        return _store_label_info(str(path))
    path = Path(path)
    if is_geotiff(path):
        return _geotiff_label_info(path)
    if not path.exists():
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        hint = " (an unfinished run left a .partial store: rerun the job to finish it)" if partial.exists() else ""
        raise LabelStoreError(f"label store {path} does not exist{hint}")
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=2)
        arr = cast("zarr.Array", root[ARRAY_NAME])
        ref: dict[str, Any] = dict(root["spatial_ref"].attrs) if "spatial_ref" in root else {}
    except Exception as exc:  # zarr raises many types for a broken store
        raise LabelStoreError(f"{path} is not a geoseg label store: {exc}") from exc
    if not root.attrs.get("geoseg:complete", False):
        raise LabelStoreError(f"label store {path} is incomplete; rerun the job that writes it")
    return _info_of(path, arr, ref)


def _store_label_info(url: str) -> LabelRasterInfo:
    """A finished store on object storage: only its commit object (``.zmetadata``) is trusted."""
    import zarr

    if not storage.exists(storage.join(url, ".zmetadata")):
        raise LabelStoreError(f"label store {url} does not exist or is unfinished (no .zmetadata); rerun the job")
    try:
        root = zarr.open_group(url, mode="r", zarr_format=2, use_consolidated=True)
        arr = root[ARRAY_NAME]
        ref = dict(root["spatial_ref"].attrs) if "spatial_ref" in root else {}
    except Exception as exc:  # zarr raises many types for a broken store
        raise LabelStoreError(f"{url} is not a finished geoseg label store: {exc}") from exc
    if not root.attrs.get("geoseg:complete", False):
        raise LabelStoreError(f"label store {url} is incomplete; rerun the job that writes it")
    return _info_of(url, arr, ref)


def _info_of(path: Path | str, arr: Any, ref: dict[str, Any]) -> LabelRasterInfo:
    """``ref``: the attributes of a ``spatial_ref`` variable, which stores written before the
    georeferencing moved onto the labels array still have."""
    attrs: dict[str, Any] = dict(arr.attrs)
    if "transform" in attrs:
        transform, crs_wkt = Affine(*attrs["transform"][:6]), str(attrs["crs"])
    else:
        c, a, b, f, d, e = (float(v) for v in ref["GeoTransform"].split())
        transform, crs_wkt = Affine(a, b, c, d, e, f), ref["crs_wkt"]
    return LabelRasterInfo(
        path=path,
        grid=GeoGrid(int(arr.shape[0]), int(arr.shape[1]), transform, crs_wkt),
        chunk=int(arr.chunks[0]),
        legend=legend_from_json(attrs.get("geoseg:classes", [])),
        nodata=int(attrs.get("geoseg:nodata", NODATA_LABEL)),
        attrs=attrs,
    )


def label_array_location(path: str | Path, array: str = ARRAY_NAME) -> str:
    """The Zarr location of a store's raster: a local path, or a URL on object storage."""
    return storage.join(str(path), array) if storage.is_url(path) else str(Path(path) / array)


def read_label_window(path: str | Path, window: Window, array: str = ARRAY_NAME) -> np.ndarray:
    """Read a window of a finished label store as stored (uint8 labels; no masking); ``array``: another
    raster of the store's layout, e.g. the uint32 ids of ``instances.zarr``."""
    import zarr

    if is_geotiff(path):
        from geoseg.io.opener import open_raster

        with open_raster(path, "label", what="label raster") as ds:
            return ds.read(1, window=window.to_rasterio()).astype(np.uint8, copy=False)
    if storage.is_url(path):  # object storage: published stores only (their .zmetadata)
        arr = zarr.open_array(label_array_location(path, array), mode="r", zarr_format=2)
    else:
        arr = zarr.open_array(verifying_store(path), path=array, mode="r", zarr_format=2)
    rows, cols = window.slices
    try:
        return np.asarray(arr[rows, cols])
    except GeosegError:
        raise
    except Exception as exc:  # e.g. a Zstd RuntimeError of a store without a manifest
        raise LabelStoreError(f"cannot read window {window.key} of label store {path}: {exc}") from exc


def open_labels(path: str | Path, chunks: Literal["auto"] | dict | None = None):  # xarray.DataArray
    """Open a label store lazily as an ``xarray.DataArray`` with CRS (rioxarray) and coordinates.

    Labels stay integers; nodata is exposed through ``.rio.nodata`` (the ``_FillValue``
    attribute) rather than NaN. Every attribute is a string, a number or a list of numbers, so
    ``.to_zarr()`` and ``.to_netcdf()`` write the array as it is; the legend is
    ``geoseg:classes`` as JSON text (:func:`geoseg.legend.legend_from_attrs` reads it back) and
    CF ``flag_values``/``flag_meanings``/``flag_colors``.
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    info = read_label_info(path)
    source = str(path) if storage.is_url(path) else verifying_store(path)  # local stores check their chunks
    ds = xr.open_zarr(source, mask_and_scale=False, chunks={} if chunks is None else chunks, consolidated=True)
    da = ds[ARRAY_NAME]
    attrs = {k: v for k, v in da.attrs.items() if k not in ("_CRS", "_FillValue", "crs", "transform", "GeoTransform")}
    attrs["geoseg:classes"] = json.dumps(legend_to_json(info.legend))
    da.attrs = attrs
    # this store's codecs are no encoding for another file (a Zarr v3 store, netCDF): keep the dtype only
    da.encoding = {k: v for k, v in da.encoding.items() if k in ("dtype", "preferred_chunks")}
    da = da.rio.write_crs(info.grid.crs).rio.write_transform(info.grid.transform)
    # not ``encoded=True``: that says the array was masked to NaN, and ``.rio.nodata`` of uint8 labels
    # then raises (NaN is no uint8); the ``_FillValue`` attribute is how xarray writes it back
    return da.rio.write_nodata(info.nodata, encoded=False)


def read_partial_window(path: str | Path, window: Window) -> np.ndarray:
    """Read a window of a store still being built (used when resuming to count done chunks)."""
    if storage.is_url(path):
        return read_label_window(path, window)  # built in place
    partial = Path(path)
    partial = partial.with_name(partial.name + PARTIAL_SUFFIX)
    return read_label_window(partial, window)


def _geotiff_label_info(path: Path) -> LabelRasterInfo:
    """A label GeoTIFF (another tool's classification, or our COG export) as a label raster.

    It must be one band of integers 0-255 with a CRS; nodata is the file's (default 255); class
    names come from a geoseg export's tags, colours from its colour table, else generic names.
    """
    import rasterio

    from geoseg.io.opener import open_raster

    if not path.exists():
        raise MissingFileError(f"label raster {path} does not exist")
    try:
        with open_raster(path, "label", what="label raster") as ds:
            if ds.count != 1 or ds.dtypes[0] not in ("uint8", "int8", "uint16", "int16", "int32", "uint32"):
                raise InputError(f"{path}: a label GeoTIFF must have one integer band, got {ds.count} x {ds.dtypes[0]}")
            if ds.crs is None:
                raise NoCRSError(f"{path} has no CRS; assign one (gdal_edit.py -a_srs) before evaluating it")
            try:
                cmap = ds.colormap(1)
            except ValueError:
                cmap = {}
            tags = ds.tags()
            block = ds.block_shapes[0][0] if ds.block_shapes[0][0] == ds.block_shapes[0][1] else 1024
            nodata = NODATA_LABEL if ds.nodata is None else int(ds.nodata)
            grid = GeoGrid.of_dataset(ds)
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"cannot read label raster {path}: {exc}") from exc
    if "GEOSEG_CLASSES" in tags:
        legend = legend_from_json(json.loads(tags["GEOSEG_CLASSES"]))
    else:
        ids = sorted(k for k in cmap if k != nodata and cmap[k][3] > 0 and k < 255) if cmap else []
        legend = tuple(ClassInfo(i, f"class {i}", "#{:02x}{:02x}{:02x}".format(*cmap[i][:3])) for i in ids)
    attrs: dict[str, Any] = dict(tags)
    if KMEANS_MODEL_TAG in tags:
        attrs[KMEANS_MODEL_ATTR] = tags[KMEANS_MODEL_TAG]
    return LabelRasterInfo(path=path, grid=grid, chunk=max(256, block), legend=legend, nodata=nodata, attrs=attrs)
