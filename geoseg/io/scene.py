"""Opening input rasters: validation up front, windowed reads in tasks, lazy xarray for notebooks.

A *scene* is one or more GeoTIFFs on the same pixel grid whose bands are stacked as features
(e.g. several dates of one tile). Everything a task needs to read a window is in the small,
picklable :class:`Scene`, so tasks open the files themselves and nothing large travels.
"""

from __future__ import annotations

import glob
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError

from geoseg.errors import GridMismatchError, InputError
from geoseg.geo import ChunkGrid, GeoGrid, Window, aligned_chunk_size

log = logging.getLogger(__name__)

#: Largest raster side we accept: beyond this a file's header is more likely corrupt than real.
MAX_SIDE = 200_000
#: Bounded retries for transient read errors (network file systems, object storage).
READ_RETRIES = 3

_GDAL_VIRTUAL_PREFIXES = ("/vsi", "vrt://", "gdal_")


@dataclass(frozen=True)
class Scene:
    """The inputs of a job: files on one grid, their bands, nodata and georeferencing."""

    paths: tuple[str, ...]
    grid: GeoGrid
    band_names: tuple[str, ...]
    band_counts: tuple[int, ...]
    nodata: tuple[float | None, ...]
    dtypes: tuple[str, ...]
    block: tuple[int, int]
    sizes_bytes: tuple[int, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.band_names)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (the mean of x and y sizes)."""
        return self.grid.resolution

    def chunk_grid(self, chunk: int) -> ChunkGrid:
        """The processing grid: ``chunk`` rounded to a multiple of the files' internal blocks."""
        return self.grid.tiles(aligned_chunk_size(chunk, self.block))


def expand_inputs(patterns: Sequence[str], allow_gdal_virtual: bool = False) -> list[str]:
    """Expand globs in order, keep URLs as they are, and refuse paths that do not exist.

    GDAL virtual paths (``/vsi...``, VRT) are refused unless asked for, so a job file cannot
    make GDAL open arbitrary resources behind the user's back.
    """
    out: list[str] = []
    for pattern in patterns:
        text = str(pattern)
        lowered = text.lower()
        if not allow_gdal_virtual and (lowered.startswith(_GDAL_VIRTUAL_PREFIXES) or lowered.endswith(".vrt")):
            raise InputError(
                f"{text!r} is a GDAL virtual path; set allow_gdal_virtual: true in the job to use it"
            )
        if "://" in text:
            out.append(text)
            continue
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if Path(text).exists() else [])
        if not matches:
            raise InputError(f"input {text!r} matches no file; check the path (relative paths are from the job file)")
        out.extend(matches)
    if not out:
        raise InputError("no input files given")
    return out


def _open(path: str):  # noqa: ANN202
    try:
        return rasterio.open(path)
    except (RasterioError, ValueError) as exc:
        raise InputError(f"cannot open {path} as a raster: {exc}. Is it a complete GeoTIFF?") from exc


def _band_names(ds, stem: str, multi: bool) -> list[str]:  # noqa: ANN001
    names = [d if d else f"b{i + 1}" for i, d in enumerate(ds.descriptions)]
    return [f"{stem}:{n}" for n in names] if multi else names


def open_scene(patterns: Sequence[str] | str, allow_gdal_virtual: bool = False) -> Scene:
    """Check the inputs and describe them as one :class:`Scene`.

    Raises :class:`InputError` (or a subclass) for anything a user must fix: missing files,
    no CRS, rotated or skewed pixels, implausible sizes, and files that are not on one grid.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    paths = expand_inputs(patterns, allow_gdal_virtual)
    multi = len(paths) > 1
    first = None
    names: list[str] = []
    counts, nodata, dtypes, sizes = [], [], [], []
    for path in paths:
        with _open(path) as ds:
            _validate_dataset(path, ds)
            if first is None:
                first = (ds.crs, ds.transform, ds.height, ds.width, ds.block_shapes[0])
            else:
                _check_same_grid(paths[0], first, path, ds)
            names += _band_names(ds, Path(path).stem, multi)
            counts.append(ds.count)
            nodata.append(ds.nodata)
            dtypes.append(ds.dtypes[0])
            sizes.append(Path(path).stat().st_size if Path(path).exists() else -1)
    assert first is not None
    crs, transform, height, width, block = first
    return Scene(
        paths=tuple(paths),
        grid=GeoGrid.of(height, width, transform, crs),
        band_names=tuple(names),
        band_counts=tuple(counts),
        nodata=tuple(nodata),
        dtypes=tuple(dtypes),
        block=tuple(block),
        sizes_bytes=tuple(sizes),
    )


def _validate_dataset(path: str, ds) -> None:  # noqa: ANN001
    if ds.crs is None:
        raise InputError(f"{path} has no coordinate reference system; assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{path} has a rotated or skewed geotransform; warp it to a north-up grid first (gdalwarp)"
        )
    if t.is_identity:
        raise InputError(f"{path} has no geotransform; georeference it first")
    if not (1 <= ds.width <= MAX_SIDE and 1 <= ds.height <= MAX_SIDE):
        raise InputError(f"{path} claims {ds.width}x{ds.height} pixels, beyond geoseg's limit of {MAX_SIDE} per side")
    if ds.count < 1:
        raise InputError(f"{path} has no bands")
    if len(set(ds.dtypes)) != 1:
        raise InputError(f"{path} mixes band data types {sorted(set(ds.dtypes))}; geoseg needs one type per file")


def _check_same_grid(ref_path: str, ref: tuple, path: str, ds) -> None:  # noqa: ANN001
    crs, transform, height, width, _ = ref
    if ds.crs != crs:
        raise GridMismatchError(
            f"{path} is in {ds.crs.to_string()} but {ref_path} is in {crs.to_string()}; "
            "inputs of one job must share a grid: reproject them onto one grid first (gdalwarp)"
        )
    if (ds.height, ds.width) != (height, width) or not ds.transform.almost_equals(transform):
        raise GridMismatchError(
            f"{path} ({ds.width}x{ds.height}, {tuple(ds.transform)[:6]}) is not on the grid of "
            f"{ref_path} ({width}x{height}, {tuple(transform)[:6]}); align the inputs first"
        )


def read_window(scene: Scene, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read all bands of a window as float32 ``(bands, h, w)`` plus a validity mask ``(h, w)``.

    A pixel is valid when no band equals its file's nodata value and every band is finite.
    Transient read errors are retried a bounded number of times.
    """
    parts: list[np.ndarray] = []
    valid = np.ones((window.height, window.width), dtype=bool)
    for path, nodata in zip(scene.paths, scene.nodata):
        data = _read_with_retry(path, window)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            valid &= ~np.any(data == nodata, axis=0)
        parts.append(data.astype(np.float32, copy=False))
    stacked = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    valid &= np.all(np.isfinite(stacked), axis=0)
    return stacked, valid


def _read_with_retry(path: str, window: Window) -> np.ndarray:
    """Read a window; retry I/O errors a few times (flaky storage), fail fast on corrupt data."""
    delay = 0.5
    for attempt in range(READ_RETRIES + 1):
        try:
            with rasterio.open(path) as ds:
                return ds.read(window=window.to_rasterio())
        except RasterioError as exc:
            # Only remote reads are retried: a local file's bytes are what they are (a corrupt tile stays
            # corrupt); rasterio's own text is "see previous exception", the detail is in the cause.
            detail = str(exc.__cause__ or exc)
            transient = isinstance(exc, RasterioIOError) and not _is_corrupt(exc) and _is_remote(path)
            if attempt == READ_RETRIES or not transient:
                raise InputError(f"cannot read {window.key} of {path}: {detail}; is the file complete?") from exc
            log.warning("read of %s %s failed (%s); retrying", path, window.key, exc)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _is_remote(path: str) -> bool:
    """Read over a network (URL or GDAL network path), where a failed read may succeed later."""
    return "://" in path or path.lower().startswith(("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls",
                                                     "/vsioss", "/vsiswift", "/vsihdfs", "/vsiwebhdfs"))


def _is_corrupt(exc: Exception) -> bool:
    """Errors that retrying cannot fix: the bytes on disk are wrong, not the connection."""
    text = str(exc).lower()
    return any(w in text for w in ("tiffreaddirectory", "decod", "corrupt", "invalid", "not a tiff", "truncat"))


def open_scene_xarray(scene: Scene | str, chunk: int = 2048):  # noqa: ANN201 - xarray.DataArray
    """The scene as one lazy ``xarray.DataArray`` (band, y, x) with Dask chunks on the processing grid.

    For notebooks: ``.rio.crs`` and ``.rio.transform()`` are set, nodata is kept as attribute,
    and the ``band`` coordinate holds the band names.
    """
    import rioxarray
    import xarray as xr

    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    size = scene.chunk_grid(chunk).chunk
    arrays = [
        # one GeoTIFF band set each (never subdatasets): a DataArray
        cast("xr.DataArray", rioxarray.open_rasterio(p, chunks={"band": -1, "y": size, "x": size}, lock=False,
                                                     masked=False))
        for p in scene.paths
    ]
    da = arrays[0] if len(arrays) == 1 else xr.concat(arrays, dim="band")
    return da.assign_coords(band=list(scene.band_names))
