"""One input file as a source of pixels for the job's grid: what it holds, and reading a window of it.

A :class:`Source` is a small, picklable description of one raster file (its own grid, the
bands that carry values, how validity is known). :func:`read_source` gives the file's pixels
on a window of the *job's* grid: files on that grid (same CRS and pixel size, whole-pixel
offset) are read directly, anything else is warped from just the part of the file the window
needs (``rasterio.warp.reproject``), so memory follows the window, not the file.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError

from geoseg.errors import BandError, InputError, NoCRSError
from geoseg.geo import GeoGrid, Window
from geoseg.io.masks import MaskKind, alpha_band_indexes, feature_band_indexes, mask_kind, read_valid
from geoseg.io.units import file_scaling, fill_from_tags, unapplied_cf_units
from geoseg.io.warp import MAX_SCALE, sample, source_lattice

log = logging.getLogger(__name__)

#: Largest raster side we accept: beyond this a file's header is more likely corrupt than real.
MAX_SIDE = 200_000
#: Largest file block (strip or tile) GDAL must decompress whole to read any pixel of it: a compressed
#: file of one huge strip (a few MB of deflated zeros declaring GBs) killed workers one after another.
MAX_BLOCK_BYTES = 256 * 2**20
#: Bounded retries for transient read errors (network file systems, object storage).
READ_RETRIES = 3
#: Source pixels read beyond a warped window on each side, for the resampling kernel.
WARP_PAD = 3
#: Resampling names accepted in job files.
RESAMPLING = ("nearest", "bilinear", "cubic", "average", "mode", "lanczos")

T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """One file: its grid, value bands (1-based, alpha excluded) and validity rule.

    ``offset`` is the file's top-left pixel on the job's grid when the file lies on that grid
    (same CRS, same pixel size, whole-pixel shift), else ``None`` (warped per window); ``box``
    is its footprint on the job's grid in pixels ``(row0, col0, row1, col1)``.
    """

    path: str
    grid: GeoGrid
    bands: tuple[int, ...]
    mask: MaskKind
    dtype: str
    nodata: float | None
    block: tuple[int, int]
    descriptions: tuple[str, ...]
    size_bytes: int = -1
    offset: tuple[int, int] | None = None
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    driver: str = "GTiff"
    #: Per band: whether ``descriptions`` is the file's own (else ``b<n>``), and GDAL's colour interpretation.
    described: tuple[bool, ...] = ()
    colorinterp: tuple[str, ...] = ()
    #: Per band ``value * scale + offset`` applied on read (:mod:`geoseg.io.units`); empty: none.
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    #: ``(scale_factor, add_offset)`` that netCDF/CF-style tags state but GDAL does not apply (:func:`unapplied_cf_units`).
    cf_units: tuple[float, float] | None = None
    #: The alpha bands read with the value bands when ``mask == "alpha"`` (1-based).
    alpha: tuple[int, ...] = ()
    #: Each band's own fill where the file gives its bands different ones (an ``.aux.xml`` side-car can): validity
    #: is judged with one value per file, so the input's ``nodata:`` must choose (:func:`geoseg.io.scene.open_scene`).
    band_nodata: tuple[float | None, ...] = ()

    @property
    def count(self) -> int:
        return len(self.bands)

    def meets(self, window: Window) -> bool:
        """Whether the file's footprint overlaps the window (pixels of the job's grid)."""
        r0, c0, r1, c1 = self.box
        return (r0 < window.row_off + window.height and r1 > window.row_off
                and c0 < window.col_off + window.width and c1 > window.col_off)


def open_dataset(path: str) -> Any:
    """Open an input raster through the one opener (GeoTIFF or JPEG 2000 by content, never a disguised VRT)."""
    from geoseg.io.opener import open_raster

    return open_raster(path, "input", url_ok=True, what="input")


def describe_source(path: str, bands: tuple[int, ...] | None = None) -> Source:
    """Validate one file and describe it; ``bands`` picks bands (1-based), default all but alpha."""
    with open_dataset(path) as ds:
        validate_dataset(path, ds)
        chosen = bands or feature_band_indexes(ds)
        if not chosen:
            raise BandError(f"{path} has only alpha bands; there is nothing to segment")
        bad = [b for b in chosen if not 1 <= b <= ds.count]
        if bad:
            raise BandError(f"{path} has {ds.count} band(s); band {bad[0]} does not exist")
        scales, offsets = file_scaling(ds, chosen)
        cf_units = None if scales else unapplied_cf_units(ds, chosen)
        dtypes = {ds.dtypes[b - 1] for b in chosen}
        if len(dtypes) != 1:
            raise BandError(f"{path} mixes band data types {sorted(dtypes)}; geoseg needs one type per file")
        kind = mask_kind(ds, chosen)
        nodata = ds.nodata
        own = tuple(ds.nodatavals[b - 1] for b in chosen)
        mixed = len({"nan" if v is not None and v != v else v for v in own}) > 1
        if nodata is None and (nodata := fill_from_tags(ds)) is not None and kind == "none":
            kind = "nodata"  # a Sentinel-2 file's fill, stated only in its metadata
        return Source(
            path=path,
            grid=GeoGrid.of_dataset(ds),
            bands=tuple(chosen),
            mask=kind,
            alpha=alpha_band_indexes(ds) if kind == "alpha" else (),
            dtype=ds.dtypes[chosen[0] - 1],
            nodata=nodata,
            block=tuple(ds.block_shapes[chosen[0] - 1]),
            descriptions=tuple(ds.descriptions[b - 1] or f"b{b}" for b in chosen),
            size_bytes=Path(path).stat().st_size if Path(path).exists() else -1,
            driver=ds.driver,
            described=tuple(bool(ds.descriptions[b - 1]) for b in chosen),
            colorinterp=tuple(ds.colorinterp[b - 1].name for b in chosen),
            scales=scales,
            offsets=offsets,
            cf_units=cf_units,
            band_nodata=own if mixed else (),
        )


def refuse_unapplied_units(src: Source, what: str = "input") -> None:
    """Refuse a band whose metadata states netCDF/CF units GDAL does not apply, until the job says which
    formula holds (``scale:``/``offset:``) or that the stored numbers are wanted (``apply_scale: false``)."""
    if src.cf_units is not None and not src.scales:
        scale, offset = src.cf_units
        raise InputError(f"{what} {src.path} states scale_factor {scale:g} and add_offset {offset:g} in its metadata, "
                         "which GDAL does not apply and products read two ways; say which: scale: "
                         f"{scale:g} and offset: {offset:g} where value = stored × scale_factor + add_offset (netCDF/CF, "
                         "HLS), or apply_scale: false to use the stored numbers")


def refuse_palette(src: Source, what: str = "input") -> None:
    """Refuse an image whose band is paletted: its values index a colour table (a rendered map or a picture
    saved as 8-bit indexes), so clustering or a network would work on arbitrary numbers, not on colours."""
    if "palette" in src.colorinterp:
        band = src.bands[src.colorinterp.index("palette")]
        raise InputError(f"{what} {src.path} band {band} is paletted: its values index a colour table, they are not "
                         f"colours or measurements; expand it first (gdal_translate -expand rgb {Path(src.path).name} "
                         "rgb.tif), give it as a reference or mask if it holds classes, or name its bands on the "
                         "input (bands: [null]) to use the indexes as they are")


def refuse_unnamed_band(src: Source, what: str = "input") -> None:
    """Refuse a file of which some value bands are named (a description, or a colour such as red) and one is not.

    Such a band is most often transparency written without the TIFF alpha flag (an RGB orthomosaic's 4th band,
    a multispectral export's last band), which GDAL reads as a value band: its 0 would be data and its 255 a
    feature. It may as well be a near-infrared band of a 4-band camera; the file cannot tell, so the job must
    (``bands:`` on the input names every band and keeps it as values)."""
    if len(src.bands) < 2 or len(src.described) != len(src.bands) or len(src.colorinterp) != len(src.bands):
        return
    unnamed = [b for b, d, ci in zip(src.bands, src.described, src.colorinterp)
               if not d and ci in ("gray", "undefined")]
    if unnamed and len(unnamed) < len(src.bands):
        b = unnamed[0]
        raise InputError(f"{what} {src.path}: band {b} has no description or colour interpretation while its other "
                         "bands have one, so it may be transparency written without the alpha flag or values; if it "
                         f"is transparency, mark it (gdal_translate -colorinterp_{b} alpha {Path(src.path).name} "
                         "marked.tif); if it holds values, name each band on the input (bands: [...], one role or null per band)")


def validate_dataset(path: str, ds: Any) -> None:
    """Refuse files geoseg cannot place on a grid, each with what to do about it."""
    if ds.crs is None or ds.transform.is_identity:
        gcps, _ = ds.gcps
        if gcps:
            raise NoCRSError(
                f"{path} is georeferenced only by ground control points; warp it to a grid first "
                "(gdalwarp -t_srs EPSG:XXXX in.tif out.tif)"
            )
    if ds.crs is None:
        raise NoCRSError(f"{path} has no coordinate reference system; assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{path} has a rotated or skewed geotransform; warp it to a north-up grid first (gdalwarp)"
        )
    if t.is_identity:
        raise NoCRSError(f"{path} has no geotransform; georeference it first")
    if not (1 <= ds.width <= MAX_SIDE and 1 <= ds.height <= MAX_SIDE):
        raise InputError(f"{path} claims {ds.width}x{ds.height} pixels, beyond geoseg's limit of {MAX_SIDE} per side")
    if ds.count < 1:
        raise BandError(f"{path} has no bands")
    complex_types = sorted({t for t in ds.dtypes if "complex" in t})
    if complex_types:
        raise InputError(
            f"{path} holds complex values ({', '.join(complex_types)}); geoseg segments real values: make a real "
            "raster first, e.g. the amplitude: gdal_calc.py -A in.tif --calc='absolute(A)' --type=Float32 "
            "--outfile=amplitude.tif")
    check_block_size(path, ds)


def check_block_size(path: str, ds: Any) -> None:
    """Refuse a file whose blocks decompress to more than :data:`MAX_BLOCK_BYTES` (read whole for any pixel)."""
    by, bx = ds.block_shapes[0]
    planes = 1 if ds.interleaving is not None and ds.interleaving.value == "BAND" else ds.count
    block_bytes = by * bx * planes * max(np.dtype(t).itemsize for t in ds.dtypes)
    if block_bytes > MAX_BLOCK_BYTES:
        raise InputError(
            f"{path} is stored in blocks of {bx} x {by} px ({block_bytes / 2**20:,.0f} MiB each decompressed, "
            f"more than geoseg's limit of {MAX_BLOCK_BYTES // 2**20} MiB): any read unpacks a whole block; "
            "re-tile it first (gdal_translate -co TILED=YES -co COMPRESS=DEFLATE in.tif out.tif)")


def place(src: Source, grid: GeoGrid, tol: float = 1e-6) -> Source:
    """The source with its footprint (and, when it lies on ``grid``, its pixel offset) on ``grid``."""
    g, t = src.grid, src.grid.transform
    same_crs = g.crs_wkt == grid.crs_wkt or g.crs == grid.crs
    if same_crs:
        left, bottom, right, top = g.bounds
    else:
        left, bottom, right, top = rasterio.warp.transform_bounds(g.crs, grid.crs, *g.bounds, densify_pts=21)
    inv = ~grid.transform
    cols, rows = zip(*(inv * (x, y) for x, y in ((left, top), (right, bottom))))
    box = (min(rows), min(cols), max(rows), max(cols))
    offset = None
    gt = grid.transform
    if same_crs and math.isclose(t.a, gt.a, rel_tol=tol) and math.isclose(t.e, gt.e, rel_tol=tol):
        col, row = inv * (t.c, t.f)
        if abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
            offset = (int(round(row)), int(round(col)))
    return replace(src, offset=offset, box=box)


def read_source(
    src: Source, grid: GeoGrid, window: Window, resampling: str = "bilinear"
) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:
    """The file's pixels on ``window`` of ``grid``: ``(bands, h, w)``, validity, and where they go.

    Values are in the file's type when read directly or warped with ``nearest`` (which makes no new
    values: class ids stay exact), float32 when warped otherwise.

    The slices select, within the window, the part the arrays cover; ``None`` when the file has
    no pixel there.
    """
    if src.offset is not None:
        return _read_on_grid(src, window)
    return _read_warped(src, grid, window, resampling)


def _read_on_grid(src: Source, window: Window) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:
    r_off, c_off = src.offset  # type: ignore[misc]
    r0 = max(window.row_off - r_off, 0)
    c0 = max(window.col_off - c_off, 0)
    r1 = min(window.row_off + window.height - r_off, src.grid.height)
    c1 = min(window.col_off + window.width - c_off, src.grid.width)
    if r1 <= r0 or c1 <= c0:
        return None
    part = Window(r0, c0, r1 - r0, c1 - c0)
    data, valid = read_with_retry(src.path, part.key, lambda ds: _read_valid(ds, src, part.to_rasterio()),
                                   driver=src.driver)
    rows = slice(r0 + r_off - window.row_off, r1 + r_off - window.row_off)
    cols = slice(c0 + c_off - window.col_off, c1 + c_off - window.col_off)
    return data, valid, (rows, cols)  # in the file's type: the caller casts once, where it puts them


def _read_valid(ds: Any, src: Source, rio_window: Any) -> tuple[np.ndarray, np.ndarray]:
    return read_valid(ds, src.bands, src.mask, rio_window, nodata=src.nodata)


def _read_warped(
    src: Source, grid: GeoGrid, window: Window, resampling: str
) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:
    target = grid.window_grid(window)
    bounds = target.bounds
    if not (src.grid.crs_wkt == grid.crs_wkt or src.grid.crs == grid.crs):
        bounds = rasterio.warp.transform_bounds(grid.crs, src.grid.crs, *bounds, densify_pts=21)
    sw = rasterio.windows.from_bounds(*bounds, transform=src.grid.transform)
    # GDAL widens the kernel by the downsampling factor: pad by as many source pixels
    pad = math.ceil(WARP_PAD * max(1.0, sw.width / window.width, sw.height / window.height))
    c0 = max(math.floor(sw.col_off) - pad, 0)
    r0 = max(math.floor(sw.row_off) - pad, 0)
    c1 = min(math.ceil(sw.col_off + sw.width) + pad, src.grid.width)
    r1 = min(math.ceil(sw.row_off + sw.height) + pad, src.grid.height)
    if r1 <= r0 or c1 <= c0:
        return None
    part = Window(r0, c0, r1 - r0, c1 - c0)
    data, valid = read_with_retry(src.path, part.key, lambda ds: _read_valid(ds, src, part.to_rasterio()),
                                   driver=src.driver)
    part_transform = src.grid.transform * Affine.translation(c0, r0)
    if resampling in ("nearest", "bilinear"):
        lattice = source_lattice(target.transform, target.shape, grid.crs, part_transform, src.grid.crs)
        # nearest takes the pixel under the centre at any scale (GDAL's kernel does not widen for it);
        # bilinear only when not downsampling: the compiled sampler, as GDAL would
        if resampling == "nearest" or lattice.scale <= MAX_SCALE:
            bilinear = resampling == "bilinear"
            out, ok = sample(data, valid, lattice, target.shape, bilinear=bilinear,
                             dtype=np.dtype(np.float32) if bilinear else data.dtype)
            return out, ok, (slice(0, window.height), slice(0, window.width))
    values = data.astype(np.float32)
    values[:, ~valid] = np.nan
    out = np.full((src.count, window.height, window.width), np.nan, dtype=np.float32)
    rasterio.warp.reproject(
        values, out,
        src_transform=part_transform, src_crs=src.grid.crs, src_nodata=np.nan,
        dst_transform=target.transform, dst_crs=grid.crs, dst_nodata=np.nan,
        resampling=Resampling[resampling],
    )
    ok = np.all(np.isfinite(out), axis=0)
    return out, ok, (slice(0, window.height), slice(0, window.width))


def read_with_retry(path: str, what: str, fn: Callable[[Any], T], driver: str = "GTiff") -> T:
    """Run ``fn`` on the opened file; retry I/O errors a few times (flaky storage), fail fast on corrupt data.

    The file is opened with ``driver`` only: the one the client's checked open found (:mod:`geoseg.io.opener`).
    """
    from geoseg.io.opener import open_env

    delay = 0.5
    for attempt in range(READ_RETRIES + 1):
        try:
            with rasterio.Env(**open_env(path)), rasterio.open(path, driver=driver) as ds:
                return fn(ds)
        except RasterioError as exc:
            # Only remote reads are retried: a local file's bytes are what they are (a corrupt tile stays
            # corrupt); rasterio's own text is "see previous exception", the detail is in the cause.
            detail = str(exc.__cause__ or exc)
            transient = isinstance(exc, RasterioIOError) and not _is_corrupt(exc) and _is_remote(path)
            if attempt == READ_RETRIES or not transient:
                raise InputError(f"cannot read {what} of {path}: {detail}; is the file complete?") from exc
            log.warning("read of %s %s failed (%s); retrying", path, what, exc)
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
