"""Many small tiles of one window read through a GDAL VRT written here: GDAL's C loop opens them, not Python.

Why: a window meeting thousands of small tiles (10,000 of 16 x 16 px) spent its time in Python around
each file (rasterio's dataset set-up, the validity rule per file), holding the GIL: about twice the CPU
of GDAL reading the same tiles through one VRT, whose read releases the GIL for its whole length (so a
few threads, each reading a strip of the window, use every core).

Used only where the pixels are the same as :func:`geoseg.io.mosaic.read_layer`'s file by file: local
GeoTIFF tiles on the job's grid with the same bands, type, alpha bands, nodata and scaling, a validity
rule of alpha bands or a nodata value (not GDAL mask bands), and footprints that do not overlap within
the window (so which tile wins never arises). Anything else returns None and is read file by file.

Trust: the VRT names only tiles the client's opener accepted (:mod:`geoseg.io.opener`, each opened as a
GeoTIFF), and names each as ``GTIFF_DIR:1:path``: GDAL opens a VRT's sources with any driver it has, but
that name only with the GTiff driver (its first image), so a tile replaced since (by VRT XML, say) fails
the read instead of sending GDAL elsewhere; the window then goes to the file-by-file reader, which opens
it as a GeoTIFF only and refuses it with the file's name. There is no gap between a check and the open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from xml.sax.saxutils import escape

import numpy as np

from geoseg.geo import GeoGrid, Window
from geoseg.io.sources import Source

#: Threads reading strips of one window (each its own VRT; GDAL releases the GIL while it reads).
VRT_THREADS = 4
#: GDAL's name of a TIFF's first image that only the GTiff driver opens (a VRT source opens with any driver).
GTIFF_ONLY = "GTIFF_DIR:1:"


def read_tiles(sources: Sequence[Source], grid: GeoGrid, window: Window,
               gdal_env: Mapping[str, str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The tiles on ``window``: float32 ``(bands, h, w)`` (0 where no tile is valid) and validity, or None
    where the VRT would not give exactly what reading file by file gives (see the module's note).

    ``gdal_env``: GDAL settings for the reading threads (rasterio's are per thread)."""
    if not sources or not _alike(sources):
        return None
    cover = _coverage(sources, window)
    if cover is None:
        return None
    import rasterio
    from rasterio.errors import RasterioError

    first = sources[0]
    n_values = len(first.bands)
    h, w = window.height, window.width
    edges = np.linspace(0, h, min(VRT_THREADS, h) + 1).round().astype(int)
    strips = [Window(window.row_off + int(a), window.col_off, int(b - a), w) for a, b in zip(edges[:-1], edges[1:])]
    both = np.zeros((n_values + len(first.alpha), h, w), dtype=np.dtype(first.dtype))

    def read(strip: Window) -> None:
        xml = vrt_xml(sources, grid, strip)
        with rasterio.Env(**(gdal_env or {})), rasterio.open(xml, driver="VRT") as ds:
            r = strip.row_off - window.row_off
            ds.read(out=both[:, r:r + strip.height])

    try:
        if len(strips) == 1:
            read(strips[0])
        else:
            with ThreadPoolExecutor(len(strips), thread_name_prefix="geoseg-vrt") as pool:
                list(pool.map(read, strips))
    except RasterioError:
        return None  # the file-by-file reader names the file and says what is wrong with it
    data = both[:n_values]
    valid = cover
    if first.alpha:
        valid &= np.all(both[n_values:] != 0, axis=0)
    fill = _fill(first.nodata)
    if fill is not None:
        valid &= ~np.any(data == fill, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    out = data.astype(np.float32)
    if first.scales:
        from geoseg.io.units import apply_scaling

        out = apply_scaling(out, first.scales, first.offsets)
    out[:, ~valid] = 0
    return out, valid


def _alike(sources: Sequence[Source]) -> bool:
    """Local GeoTIFFs on the grid, read alike: same bands, alpha, type, nodata, scaling; no GDAL mask bands."""
    from geoseg.io.opener import is_url

    first = sources[0]
    if first.mask == "gdal" or first.driver != "GTiff":
        return False
    key = (first.bands, first.alpha, first.mask, first.dtype, _fill(first.nodata), first.scales, first.offsets)
    for s in sources:
        if s.offset is None or (s.bands, s.alpha, s.mask, s.dtype, _fill(s.nodata), s.scales, s.offsets) != key:
            return False
        if s.driver != "GTiff" or s.path.startswith("/vsi") or is_url(s.path):
            return False
    return first.mask != "alpha" or bool(first.alpha)


def _fill(nodata: float | None) -> float | None:
    """The nodata value compared with pixels (NaN: none; non-finite pixels are invalid anyway)."""
    return None if nodata is None or nodata != nodata else nodata


def _coverage(sources: Sequence[Source], window: Window) -> np.ndarray | None:
    """Pixels of ``window`` some tile covers, or None where two tiles overlap in it."""
    count = np.zeros((window.height, window.width), dtype=np.uint16)
    for s in sources:
        r0, c0 = s.offset  # type: ignore[misc]
        r0, c0 = r0 - window.row_off, c0 - window.col_off
        r1, c1 = min(r0 + s.grid.height, window.height), min(c0 + s.grid.width, window.width)
        r0, c0 = max(r0, 0), max(c0, 0)
        if r1 > r0 and c1 > c0:
            count[r0:r1, c0:c1] += 1
    if count.max(initial=0) > 1:
        return None
    return count > 0


def vrt_xml(sources: Sequence[Source], grid: GeoGrid, window: Window) -> str:
    """A VRT of ``window`` of ``grid`` from the tiles' value and alpha bands, one source each."""
    import rasterio.dtypes

    first = sources[0]
    gdal_type = rasterio.dtypes._gdal_typename(first.dtype)
    t = grid.window_grid(window).transform
    parts = [f'<VRTDataset rasterXSize="{window.width}" rasterYSize="{window.height}">',
             f"<GeoTransform>{t.c!r},{t.a!r},{t.b!r},{t.f!r},{t.d!r},{t.e!r}</GeoTransform>"]
    # only the tiles whose footprints meet this strip: GDAL tests every source of a band on every read
    tiles = [s for s in sources if s.meets(window)]
    placed = []
    for s in tiles:
        r0, c0 = s.offset  # type: ignore[misc]
        h, w = s.grid.height, s.grid.width
        by, bx = s.block
        placed.append((
            f'<SourceFilename relativeToVRT="0">{GTIFF_ONLY}{escape(s.path)}</SourceFilename>',
            f'<SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{gdal_type}" BlockXSize="{bx}" '
            f'BlockYSize="{by}"/><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{c0 - window.col_off}" yOff="{r0 - window.row_off}" xSize="{w}" ySize="{h}"/>',
        ))
    for i, b in enumerate(first.bands + first.alpha, start=1):
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{i}">')
        parts.extend(f"<SimpleSource>{name}<SourceBand>{b}</SourceBand>{rects}</SimpleSource>" for name, rects in placed)
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)
