"""The label raster as a georeferenced Zarr store that GDAL, rasterio and xarray open directly.

Layout (Zarr v2, the format GDAL's Zarr driver reads best)::

    labels.zarr/
      labels        (y, x) uint8, chunked on the processing grid, zstd; fill = NODATA_LABEL
                    attrs: _ARRAY_DIMENSIONS, _CRS {"wkt"} (GDAL), grid_mapping/coordinates
                    (xarray/rioxarray), geoseg:classes (ids, names, colours), flag_values/meanings
      x, y          pixel-centre coordinates (GDAL derives the geotransform from them)
      spatial_ref   CF grid mapping: crs_wkt and GeoTransform
      .zmetadata    consolidated metadata, written last

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

from geoseg.errors import GeosegError, InputError, OutputError
from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.io import storage
from geoseg.io.atomic import replace_path, write_text_atomic
from geoseg.io.manifest import verifying_store, write_manifest
from geoseg.legend import NODATA_LABEL, ClassInfo, legend_from_json, legend_to_json

ARRAY_NAME = "labels"
PARTIAL_SUFFIX = ".partial"
_MARKERS = ".geoseg-chunks"


def _compressor():  # noqa: ANN202
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
        labels.attrs.update(_label_attrs(grid.crs_wkt, legend, {"geoseg:nodata": fill_value, **(attrs or {})}))
        t = grid.transform
        x = root.create_array("x", shape=(grid.width,), chunks=(grid.width,), dtype="float64", compressors=None)
        x[:] = t.c + t.a * (np.arange(grid.width) + 0.5)
        x.attrs.update({"_ARRAY_DIMENSIONS": ["x"], "units": "m", "standard_name": "projection_x_coordinate"})
        y = root.create_array("y", shape=(grid.height,), chunks=(grid.height,), dtype="float64", compressors=None)
        y[:] = t.f + t.e * (np.arange(grid.height) + 0.5)
        y.attrs.update({"_ARRAY_DIMENSIONS": ["y"], "units": "m", "standard_name": "projection_y_coordinate"})
        ref = root.create_array("spatial_ref", shape=(), dtype="int32", compressors=None)
        ref.attrs.update(
            {
                "_ARRAY_DIMENSIONS": [],
                "crs_wkt": grid.crs_wkt,
                "spatial_ref": grid.crs_wkt,
                "GeoTransform": " ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
            }
        )
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

    def write(self, window: Window, labels: np.ndarray) -> None:
        """Write one whole chunk, then its marker (so a crash mid-write is redone on resume)."""
        import zarr

        if labels.shape != (window.height, window.width):
            raise ValueError(f"chunk {window.key} has shape {labels.shape}")
        partial = self.partial_path
        if not (isinstance(partial, Path) and _write_chunk_file(partial / self.array, window, labels)):
            arr = zarr.open_array(str(_child(partial, self.array)), mode="r+", zarr_format=2)
            rows, cols = window.slices
            arr[rows, cols] = labels.astype(arr.dtype, copy=False)
        marker = self.marker(window)
        if isinstance(marker, str):
            storage.write_bytes(marker, b"ok")
        else:
            write_text_atomic(marker, "ok")

    def finalize(self, extra_attrs: dict[str, Any] | None = None) -> Path | str:
        """Check every chunk is done, consolidate metadata and move the store into place."""
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
            zarr.consolidate_metadata(partial)  # the commit object, written last
            return partial
        shutil.rmtree(partial / _MARKERS)
        zarr.consolidate_metadata(str(partial))
        write_manifest(partial, self.array, self.grid.chunks_shape)  # checked by every reader
        target = Path(self.path)
        replace_path(partial, target)  # an older store is renamed aside, then removed
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
def _chunk_layout(zarray: Path, stamp: tuple[int, int, int]) -> _ChunkLayout | None:  # noqa: ARG001 - stamp: cache key
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
    with warnings.catch_warnings():  # our manifest beside the arrays is not a Zarr node, and need not be one
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        zarr.consolidate_metadata(str(path))  # on object storage this rewrites the commit object, still complete


def _read_resume_key(partial: Path) -> str | None:
    try:
        return json.loads((partial / ".zattrs").read_text()).get("geoseg:resume_key")
    except (OSError, ValueError):
        return None


def _label_attrs(crs_wkt: str, legend: tuple[ClassInfo, ...], extra: dict[str, Any]) -> dict[str, Any]:
    flags = (
        {"flag_values": [c.id for c in legend], "flag_meanings": " ".join(c.name.replace(" ", "_") for c in legend)}
        if legend
        else {}  # not a class raster (e.g. confidence): no CF flags
    )
    return {
        "_ARRAY_DIMENSIONS": ["y", "x"],
        "_CRS": {"wkt": crs_wkt},
        "grid_mapping": "spatial_ref",
        "coordinates": "spatial_ref",
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
        raise InputError(f"label store {path} does not exist{hint}")
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=2)
        arr = cast("zarr.Array", root[ARRAY_NAME])
        ref: dict[str, Any] = dict(root["spatial_ref"].attrs)
    except Exception as exc:  # zarr raises many types for a broken store
        raise InputError(f"{path} is not a geoseg label store: {exc}") from exc
    if not root.attrs.get("geoseg:complete", False):
        raise InputError(f"label store {path} is incomplete; rerun the job that writes it")
    return _info_of(path, arr, ref)


def _store_label_info(url: str) -> LabelRasterInfo:
    """A finished store on object storage: only its commit object (``.zmetadata``) is trusted."""
    import zarr

    if not storage.exists(storage.join(url, ".zmetadata")):
        raise InputError(f"label store {url} does not exist or is unfinished (no .zmetadata); rerun the job")
    try:
        root = zarr.open_group(url, mode="r", zarr_format=2, use_consolidated=True)
        arr = root[ARRAY_NAME]
        ref = dict(root["spatial_ref"].attrs)
    except Exception as exc:  # zarr raises many types for a broken store
        raise InputError(f"{url} is not a finished geoseg label store: {exc}") from exc
    if not root.attrs.get("geoseg:complete", False):
        raise InputError(f"label store {url} is incomplete; rerun the job that writes it")
    return _info_of(url, arr, ref)


def _info_of(path: Path | str, arr: Any, ref: dict[str, Any]) -> LabelRasterInfo:
    c, a, b, f, d, e = (float(v) for v in ref["GeoTransform"].split())
    attrs: dict[str, Any] = dict(arr.attrs)
    return LabelRasterInfo(
        path=path,
        grid=GeoGrid(int(arr.shape[0]), int(arr.shape[1]), Affine(a, b, c, d, e, f), ref["crs_wkt"]),
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
        raise InputError(f"cannot read window {window.key} of label store {path}: {exc}") from exc


def open_labels(path: str | Path, chunks: Literal["auto"] | dict | None = None):  # noqa: ANN201 - xarray.DataArray
    """Open a label store lazily as an ``xarray.DataArray`` with CRS (rioxarray) and coordinates.

    Labels stay integers; nodata is exposed through ``.rio.nodata`` rather than NaN.
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    info = read_label_info(path)
    source = str(path) if storage.is_url(path) else verifying_store(path)  # local stores check their chunks
    ds = xr.open_zarr(source, mask_and_scale=False, chunks={} if chunks is None else chunks, consolidated=True)
    da = ds[ARRAY_NAME]
    da = da.rio.write_crs(info.grid.crs).rio.write_transform(info.grid.transform).rio.write_nodata(info.nodata)
    da.attrs["legend"] = info.legend
    return da


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
        raise InputError(f"label raster {path} does not exist")
    try:
        with open_raster(path, "label", what="label raster") as ds:
            if ds.count != 1 or ds.dtypes[0] not in ("uint8", "int8", "uint16", "int16", "int32", "uint32"):
                raise InputError(f"{path}: a label GeoTIFF must have one integer band, got {ds.count} x {ds.dtypes[0]}")
            if ds.crs is None:
                raise InputError(f"{path} has no CRS; assign one (gdal_edit.py -a_srs) before evaluating it")
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
    return LabelRasterInfo(path=path, grid=grid, chunk=max(256, block), legend=legend, nodata=nodata, attrs=dict(tags))
