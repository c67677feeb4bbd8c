"""The grid: one georeferenced pixel grid and one set of chunk windows shared by every stage and output.

A :class:`GeoGrid` is a value: shape, transform and CRS together (in the style of odc-geo's
``GeoBox``, which :meth:`GeoGrid.to_geobox` gives for odc-geo's algorithms). A
:class:`ChunkGrid` cuts a grid into chunks; its chunks are plain ``(row_off, col_off, height,
width)`` windows. Stages that need spatial context ask for a chunk *with a halo* and trim it
back with :func:`trim_halo`, so results do not depend on where chunk borders fall.

The CRS is kept as WKT text: it pickles and hashes cheaply (a grid travels with every Dask
task), and :attr:`GeoGrid.crs` parses it once per process. rasterio is imported only when a CRS
object is asked for: a process that only vectorises a label store (``geoseg vectorize``) never
needs it, and rasterio with the boto3 it imports costs ~50 MiB of resident memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from affine import Affine

if TYPE_CHECKING:
    import numpy as np
    from odc.geo.geobox import GeoBox
    from rasterio.crs import CRS

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels: row/col offset and size. Hashable and ordered."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Numpy slices ``(rows, cols)`` selecting this window from the full raster."""
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )

    def to_rasterio(self):  # rasterio type kept out of the signature
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)

    @property
    def key(self) -> str:
        """Stable textual id, used in file names and task keys."""
        return f"r{self.row_off}_c{self.col_off}_h{self.height}_w{self.width}"


@dataclass(frozen=True)
class HaloWindow:
    """A window grown by a halo, clipped to the raster, and where the core lies inside it."""

    outer: Window
    core: Window

    @property
    def core_in_outer(self) -> tuple[slice, slice]:
        """Slices that select the core from an array read over ``outer``.

        >>> hw = halo_window(Window(0, 10, 10, 10), halo=4, shape=(30, 30))
        >>> hw.outer, hw.core_in_outer
        (Window(row_off=0, col_off=6, height=14, width=18), (slice(0, 10, None), slice(4, 14, None)))
        """
        r0 = self.core.row_off - self.outer.row_off
        c0 = self.core.col_off - self.outer.col_off
        return slice(r0, r0 + self.core.height), slice(c0, c0 + self.core.width)


def halo_window(core: Window, halo: int, shape: tuple[int, int]) -> HaloWindow:
    """Grow ``core`` by ``halo`` pixels on each side, clipped to a raster of ``shape``."""
    r0 = max(core.row_off - halo, 0)
    c0 = max(core.col_off - halo, 0)
    r1 = min(core.row_off + core.height + halo, shape[0])
    c1 = min(core.col_off + core.width + halo, shape[1])
    return HaloWindow(outer=Window(r0, c0, r1 - r0, c1 - c0), core=core)


def trim_halo(array, hw: HaloWindow):  # any array-like with [..., y, x]
    """Cut the core back out of an array read over ``hw.outer`` (last two axes are y, x)."""
    rows, cols = hw.core_in_outer
    return array[..., rows, cols]


@lru_cache(maxsize=64)
def crs_from_wkt(wkt: str) -> CRS:
    """Parse a CRS once per process (parsing WKT costs about a millisecond)."""
    from rasterio.crs import CRS

    return CRS.from_wkt(wkt)


@lru_cache(maxsize=64)
def is_geographic_wkt(wkt: str) -> bool:
    """Whether a CRS (WKT) is geographic (a compound CRS: its horizontal part), read with pyproj.

    >>> from rasterio.crs import CRS
    >>> is_geographic_wkt(CRS.from_epsg(4326).to_wkt()), is_geographic_wkt(CRS.from_epsg(32633).to_wkt())
    (True, False)
    """
    import pyproj

    return bool(pyproj.CRS.from_wkt(wkt).is_geographic)


def window_bounds(transform: Affine, shape: tuple[int, int]) -> Bounds:
    """``(left, bottom, right, top)`` of a ``shape`` window whose top-left pixel has ``transform``.

    >>> window_bounds(Affine(10, 0, 100, 0, -10, 500), (2, 3))
    (100.0, 480.0, 130.0, 500.0)
    """
    h, w = shape
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))))
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def metres_per_unit(crs: CRS) -> float | None:
    """Metres per CRS unit for a projected CRS, ``None`` for geographic ones (no fixed size).

    A local (engineering) CRS with a linear unit, as chips get (a pixel grid with a declared pixel
    size), has metres too: its axes' unit.
    """
    if crs.is_geographic:
        return None
    if not crs.is_projected:
        import pyproj

        try:
            axes = pyproj.CRS.from_wkt(crs.to_wkt()).axis_info
        except Exception:  # a CRS pyproj cannot read has no known unit
            return None
        factors = {a.unit_conversion_factor for a in axes if a.unit_name in ("metre", "meter", "foot", "US survey foot")}
        return float(factors.pop()) if len(axes) >= 2 and len(factors) == 1 else None
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # a CRS without a linear unit
        return None


def geod_of(crs_wkt: str) -> Any:
    """The ``pyproj.Geod`` of a CRS's ellipsoid (WGS 84 when the CRS names none)."""
    import pyproj

    return pyproj.CRS.from_wkt(crs_wkt).get_geod() or pyproj.Geod(ellps="WGS84")


@lru_cache(maxsize=32)
def _geographic_row_areas(height: int, t6: tuple[float, ...], crs_wkt: str) -> Any:
    import numpy as np

    geod, t = geod_of(crs_wkt), Affine(*t6)
    areas = np.empty(height)
    for row in range(height):
        xs, ys = zip(*(t * (c, r) for c, r in ((0, row), (1, row), (1, row + 1), (0, row + 1))))
        areas[row] = abs(geod.polygon_area_perimeter(xs, ys)[0])
    areas.flags.writeable = False
    return areas


def geodesic_area_perimeter(mapped: Any, crs_wkt: str, step: float) -> tuple[Any, Any]:
    """Area (m²) and perimeter (m) on the ellipsoid of polygons in geographic map coordinates.

    Edges are first cut into pieces of at most ``step`` degrees (a pixel), so an edge along a row
    follows its parallel as the pixels do, instead of the geodesic between its ends.
    """
    import numpy as np
    import shapely

    geod = geod_of(crs_wkt)
    fine = shapely.segmentize(np.asarray(mapped, dtype=object), step) if len(mapped) else mapped
    area = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in fine], dtype=np.float64)
    # pyproj's perimeter leaves out holes; the planar one (shapely.length) counts every ring
    rings, which = shapely.get_rings(fine, return_index=True)
    lengths = np.array([geod.line_length(*shapely.get_coordinates(r).T) for r in rings], dtype=np.float64)
    return area, np.bincount(which, weights=lengths, minlength=len(area)).astype(np.float64)


def bounds_overlap(a: Bounds, b: Bounds) -> bool:
    """Whether two ``(left, bottom, right, top)`` boxes share interior (touching is not enough).

    >>> bounds_overlap((0, 0, 10, 10), (5, 5, 20, 20)), bounds_overlap((0, 0, 10, 10), (10, 0, 20, 10))
    (True, False)
    """
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def bounds_in(bounds: Bounds, src_crs: CRS, dst_crs: CRS) -> Bounds:
    """Bounds transformed between CRSs, densified so curved edges are covered (as they are if equal)."""
    if src_crs == dst_crs:
        return tuple(bounds)  # type: ignore[return-value]
    from rasterio.warp import transform_bounds

    return tuple(transform_bounds(src_crs, dst_crs, *bounds, densify_pts=21))


def pad_bounds(bounds: Bounds, frac: float = 0.01) -> Bounds:
    """Bounds grown by ``frac`` of their size on each side (a margin for reprojected queries).

    >>> pad_bounds((0, 0, 100, 10), 0.1)
    (-10.0, -1.0, 110.0, 11.0)
    """
    dx = (bounds[2] - bounds[0]) * frac
    dy = (bounds[3] - bounds[1]) * frac
    return bounds[0] - dx, bounds[1] - dy, bounds[2] + dx, bounds[3] + dy


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


@dataclass(frozen=True)
class GeoGrid:
    """A georeferenced pixel grid: ``height`` x ``width`` pixels, their ``transform`` and CRS.

    >>> from rasterio.crs import CRS
    >>> g = GeoGrid(2, 3, Affine(10, 0, 100, 0, -10, 500), CRS.from_epsg(32633).to_wkt())
    >>> g.shape, g.bounds, g.crs.to_epsg(), g.pixel_area_m2
    ((2, 3), (100.0, 480.0, 130.0, 500.0), 32633, 100.0)
    """

    height: int
    width: int
    transform: Affine
    crs_wkt: str

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"grid must have at least one pixel, got {self.height}x{self.width}")

    @classmethod
    def of(cls, height: int, width: int, transform: Affine, crs: CRS | str) -> GeoGrid:
        """A grid from a CRS given as a rasterio CRS or any text rasterio understands."""
        from rasterio.crs import CRS

        wkt = crs.to_wkt() if isinstance(crs, CRS) else CRS.from_user_input(crs).to_wkt()
        return cls(int(height), int(width), transform, wkt)

    @classmethod
    def of_dataset(cls, ds: Any) -> GeoGrid:
        """The grid of an open rasterio dataset."""
        return cls.of(ds.height, ds.width, ds.transform, ds.crs)

    @property
    def crs(self) -> CRS:
        return crs_from_wkt(self.crs_wkt)

    @property
    def is_geographic(self) -> bool:
        """Whether the CRS is geographic (degrees), without importing rasterio."""
        return is_geographic_wkt(self.crs_wkt)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def bounds(self) -> Bounds:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        return window_bounds(self.transform, self.shape)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (the mean of x and y sizes)."""
        return (abs(self.transform.a) + abs(self.transform.e)) / 2

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared."""
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)

    @property
    def pixel_area_m2(self) -> float:
        """Area of one pixel in m².

        For a geographic CRS (pixels shrink towards the poles) this is the grid's mean pixel area on
        its ellipsoid, so pixel count x this = the grid's area; per-row areas are
        :meth:`row_pixel_areas_m2`. NaN for a CRS that is neither projected nor geographic.
        """
        mpu = metres_per_unit(self.crs)
        if mpu:
            return self.pixel_area * mpu**2
        if self.crs.is_geographic:
            return float(self.row_pixel_areas_m2().mean())
        return math.nan

    def row_pixel_areas_m2(self) -> np.ndarray:
        """Area in m² of a pixel in each row (the ellipsoidal area of the row's first pixel).

        Rows of a north-up geographic grid share one area; a rotated grid's pixels differ slightly
        along a row too, which this ignores. Projected grids: every row is :attr:`pixel_area_m2`.
        """
        import numpy as np

        if not self.crs.is_geographic:
            return np.full(self.height, self.pixel_area_m2)
        return _geographic_row_areas(self.height, tuple(self.transform)[:6], self.crs_wkt).copy()

    def bounds_in(self, crs: CRS) -> Bounds:
        """The grid's bounds in another CRS (densified edges)."""
        return bounds_in(self.bounds, self.crs, crs)

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window's top-left pixel."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window_grid(self, window: Window) -> GeoGrid:
        """The grid of one window of this grid (same CRS and pixel size)."""
        return GeoGrid(window.height, window.width, self.window_transform(window), self.crs_wkt)

    def same_as(self, other: GeoGrid, tol: float = 1e-9) -> bool:
        """Same shape, CRS and (almost) the same transform."""
        return (
            self.shape == other.shape
            and self.transform.almost_equals(other.transform, precision=tol)
            and (self.crs_wkt == other.crs_wkt or self.crs == other.crs)
        )

    def to_geobox(self) -> GeoBox:
        """The same grid as an odc-geo ``GeoBox`` (for its overlap and reprojection helpers)."""
        from odc.geo.geobox import GeoBox

        return GeoBox((self.height, self.width), self.transform, self.crs_wkt)

    def tiles(self, chunk: int) -> ChunkGrid:
        """This grid cut into ``chunk`` x ``chunk`` chunks."""
        return ChunkGrid(self, chunk)


@dataclass(frozen=True)
class ChunkGrid:
    """A :class:`GeoGrid` cut into chunks of ``chunk`` × ``chunk`` pixels (edges smaller).

    The chunks are the unit of work of every stage and the chunks of every Zarr output.

    >>> from rasterio.crs import CRS
    >>> g = GeoGrid(5, 7, Affine(10, 0, 0, 0, -10, 50), CRS.from_epsg(32633).to_wkt()).tiles(4)
    >>> g.n_chunks, g.chunks_shape
    (4, (2, 2))
    >>> [w.key for w in g.windows()]
    ['r0_c0_h4_w4', 'r0_c4_h4_w3', 'r4_c0_h1_w4', 'r4_c4_h1_w3']
    """

    grid: GeoGrid
    chunk: int

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"chunk size must be positive, got {self.chunk}")

    # -- the grid, delegated ---------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def crs(self) -> CRS:
        return self.grid.crs

    @property
    def is_geographic(self) -> bool:
        return self.grid.is_geographic

    @property
    def crs_wkt(self) -> str:
        return self.grid.crs_wkt

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared (m² for projected CRSs in metres)."""
        return self.grid.pixel_area

    # -- the chunks ------------------------------------------------------------------------
    @property
    def chunks_shape(self) -> tuple[int, int]:
        """Number of chunks along y and x."""
        return -(-self.height // self.chunk), -(-self.width // self.chunk)

    @property
    def n_chunks(self) -> int:
        ny, nx = self.chunks_shape
        return ny * nx

    @property
    def dask_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The same grid as Dask ``chunks`` of a (y, x) array (the lazy xarray view of a scene).

        >>> GeoGrid(5, 7, Affine.identity(), "").tiles(4).dask_chunks
        ((4, 1), (4, 3))
        """
        return _edges(self.height, self.chunk), _edges(self.width, self.chunk)

    def window(self, iy: int, ix: int) -> Window:
        """The window of chunk ``(iy, ix)``."""
        r0, c0 = iy * self.chunk, ix * self.chunk
        return Window(r0, c0, min(self.chunk, self.height - r0), min(self.chunk, self.width - c0))

    def windows(self) -> Iterator[Window]:
        """All chunk windows in row-major order (the order used for every reduction)."""
        ny, nx = self.chunks_shape
        for iy in range(ny):
            for ix in range(nx):
                yield self.window(iy, ix)

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window's top-left pixel."""
        return self.grid.window_transform(window)

    def window_grid(self, window: Window) -> GeoGrid:
        """The grid of one window (same CRS and pixel size)."""
        return self.grid.window_grid(window)


def aligned_chunk_size(requested: int, block: tuple[int, int]) -> int:
    """Round a requested chunk size to a multiple of the file's internal block size.

    Untiled files (blocks one row high or full width) keep the requested size.

    >>> aligned_chunk_size(2000, (512, 512))
    2048
    >>> aligned_chunk_size(300, (512, 512))
    512
    >>> aligned_chunk_size(1000, (1, 7000))
    1000
    """
    by, bx = block
    if by != bx or by < 16:
        return requested
    return max(by, int(round(requested / by)) * by)


def _edges(n: int, chunk: int) -> tuple[int, ...]:
    full, rest = divmod(n, chunk)
    return (chunk,) * full + ((rest,) if rest else ())
