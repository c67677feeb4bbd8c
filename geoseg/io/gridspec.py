"""The job's grid: what ``grid:`` asks for, or the default derived from the inputs.

Default: the first input's CRS, the finest input resolution (in that CRS) and the union of the
inputs' footprints, snapped outward to the first input's pixel grid, so files already on that
grid are read directly (no resampling) and a single file's grid is exactly its own.
``grid:`` may give ``like: FILE`` (that file's grid, exactly), or any of ``crs``, ``resolution``
(one number or ``[x, y]``, in CRS units) and ``bounds`` (``[left, bottom, right, top]`` in that CRS);
what it leaves out comes from the default rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from geoseg.errors import InputError, NoCRSError
from geoseg.geo import GeoGrid
from geoseg.io.sources import MAX_SIDE, Source, open_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridRequest:
    """What a job's ``grid:`` key asks for; every part optional."""

    crs: str | None = None
    resolution: tuple[float, float] | None = None
    bounds: tuple[float, float, float, float] | None = None
    like: str | None = None


def as_grid_request(obj: Any) -> GridRequest | None:
    """A :class:`GridRequest` from ``None``, a mapping or a job-file model."""
    if obj is None or isinstance(obj, GridRequest):
        return obj
    d = obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)
    res = d.get("resolution")
    if res is not None:
        res = (float(res), float(res)) if isinstance(res, (int, float)) else tuple(float(v) for v in res)
        if len(res) != 2 or min(res) <= 0:
            raise InputError(f"grid resolution must be a positive number or [x, y], got {d.get('resolution')!r}")
    b = d.get("bounds")
    if b is not None:
        b = tuple(float(v) for v in b)
        if len(b) != 4 or not (b[0] < b[2] and b[1] < b[3]):
            raise InputError(f"grid bounds must be [left, bottom, right, top] with left < right, bottom < top; got {b}")
    like = d.get("like")
    return GridRequest(crs=d.get("crs"), resolution=res, bounds=b, like=str(like) if like else None)


def _target_crs(text: str) -> CRS:
    try:
        crs = CRS.from_user_input(text)
    except (CRSError, ValueError) as exc:
        raise InputError(f"grid crs {text!r} is not a coordinate reference system GDAL knows: {exc}") from exc
    if not (crs.is_projected or crs.is_geographic):
        raise InputError(f"grid crs {text!r} is neither projected nor geographic; use an EPSG code")
    return crs


def _bounds_in(src: Source, crs: CRS) -> tuple[float, float, float, float]:
    g = src.grid
    if g.crs_wkt == crs.to_wkt() or g.crs == crs:
        return g.bounds
    try:
        b = rasterio.warp.transform_bounds(g.crs, crs, *g.bounds, densify_pts=21)
    except Exception as exc:  # PROJ errors come in several types
        raise InputError(f"cannot transform the footprint of {src.path} to grid crs {crs.to_string()}: {exc}") from exc
    if not all(math.isfinite(v) for v in b):
        raise InputError(f"grid crs {crs.to_string()} cannot represent the footprint of {src.path}; choose another")
    return b


def _resolution_in(src: Source, crs: CRS) -> tuple[float, float]:
    g = src.grid
    if g.crs_wkt == crs.to_wkt() or g.crs == crs:
        return abs(g.transform.a), abs(g.transform.e)
    try:
        t, _, _ = rasterio.warp.calculate_default_transform(g.crs, crs, g.width, g.height, *g.bounds)
    except Exception as exc:
        raise InputError(f"cannot reproject {src.path} to grid crs {crs.to_string()}: {exc}") from exc
    return abs(t.a), abs(t.e)


def job_grid(request: Any, sources: Sequence[Source]) -> GeoGrid:
    """The grid every output of the job lies on (see the module docstring for the rule)."""
    req = as_grid_request(request)
    if req is not None and req.like:
        with open_dataset(req.like) as ds:
            if ds.crs is None or ds.transform.is_identity:
                raise NoCRSError(f"grid like {req.like}: the file has no CRS or geotransform")
            grid = GeoGrid.of_dataset(ds)
        _check_meets(grid, sources)
        return grid
    first = sources[0]
    if req is None and all(s.grid.same_as(first.grid) for s in sources[1:]):
        return first.grid  # inputs on one grid: exactly that grid (no float round trip)
    crs = _target_crs(req.crs) if req is not None and req.crs else first.grid.crs
    same_crs = [s for s in sources if s.grid.crs == crs]
    if (req is None or not req.crs) and len(same_crs) < len(sources):
        _say_reprojected(crs, [s for s in sources if s.grid.crs != crs])
    if req is not None and req.resolution:
        rx, ry = req.resolution
    else:  # finest among the inputs in the grid's CRS; estimated from all when none is in it
        res = [_resolution_in(s, crs) for s in (same_crs or sources)]
        rx, ry = min(r[0] for r in res), min(r[1] for r in res)
    if req is not None and req.bounds:
        left, bottom, right, top = req.bounds
    else:
        boxes = [_bounds_in(s, crs) for s in sources]
        left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
        right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    # Snap outward to the first input's pixel corner when it shares the CRS (files on it are read directly).
    ft = first.grid.transform
    ax, ay = (ft.c, ft.f) if first.grid.crs == crs else (left, top)
    eps = 1e-6  # pixels: coordinates far from the origin carry rounding errors of ~1e-7 px
    x0 = ax + math.floor((left - ax) / rx + eps) * rx
    y0 = ay - math.floor((ay - top) / ry + eps) * ry
    width = math.ceil((right - x0) / rx - eps)
    height = math.ceil((y0 - bottom) / ry - eps)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise InputError(
            f"the job's grid would be {width}x{height} pixels (resolution {rx}, {ry}); "
            f"beyond 1..{MAX_SIDE} per side: check grid: resolution and bounds (CRS units)"
        )
    grid = GeoGrid.of(height, width, Affine(rx, 0.0, x0, 0.0, -ry, y0), crs)
    _check_meets(grid, sources)
    return grid


def _say_reprojected(crs: CRS, others: Sequence[Source]) -> None:
    """One line when inputs in other CRSs (scenes of two UTM zones) are warped onto the first input's: which CRS
    the outputs are in was chosen by input order, so the job should see it and may choose (``grid: crs:``)."""
    names = sorted({s.grid.crs.to_string() for s in others})
    log.warning("%d input file(s) in %s (e.g. %s) are warped onto the grid's %s, the first input's CRS; set "
                "grid: {crs: ...} to choose another", len(others), ", ".join(names[:3]), Path(others[0].path).name,
                crs.to_string())


def _check_meets(grid: GeoGrid, sources: Sequence[Source]) -> None:
    gl, gb, gr, gt = grid.bounds
    for s in sources:
        try:
            left, bottom, right, top = _bounds_in(s, grid.crs)
        except InputError:
            continue
        if left < gr and right > gl and bottom < gt and top > gb:
            return
    raise InputError(
        f"the job's grid (bounds {tuple(round(v, 3) for v in grid.bounds)} in {grid.crs.to_string()}) "
        "meets no input; check grid: bounds, crs or like"
    )
