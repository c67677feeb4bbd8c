"""Vector layers on windows of the label grid: checked once, features read per window, burnt.

References and regions may both be polygon layers in any CRS. A task reads only the features
whose envelope meets its window (from the worker's in-memory copy of a small layer,
:mod:`geoseg._kernels.layercache`, else from the file over the window's bounding box), in
layer order, reprojected to the label CRS, and burns them on the window's grid: a pixel takes
the value of the last feature covering its centre (GDAL's rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.crs import CRS

from geoseg._kernels.layercache import cached_layer_window, features_in_label_crs
from geoseg.errors import InputError, NoCRSError
from geoseg.geo import GeoGrid, bounds_in, crs_from_wkt, pad_bounds
from geoseg.io.rasterize import burn


def require_crs(crs: CRS | None, what: str, path: str) -> CRS:
    """``crs``, or an :class:`InputError` saying how to assign one to the file at ``path``."""
    if crs is None or not crs.to_wkt():
        raise NoCRSError(
            f"{what} {path} has no coordinate reference system; assign the right one first "
            "(e.g. `gdal_edit.py -a_srs EPSG:32633 FILE` for a raster, `ogr2ogr -a_srs EPSG:32633` for vectors)"
        )
    return crs


def describe_reprojection(what: str, path: str, crs: CRS, label_crs: CRS) -> str | None:
    """One line naming both CRSs and the transformation PROJ uses between them (``None``: same CRS).

    Why: a reference in another datum (ETRS89 vs WGS 84) lands on the same grid; the user
    should see that it was transformed, and how, rather than find out from shifted edges.
    """
    if crs == label_crs:
        return None
    import warnings

    from pyproj import CRS as ProjCRS
    from pyproj.transformer import TransformerGroup

    a, b = ProjCRS.from_wkt(crs.to_wkt()), ProjCRS.from_wkt(label_crs.to_wkt())
    try:
        with warnings.catch_warnings():  # "best transformation is not available": said below, in words
            warnings.simplefilter("ignore")
            group = TransformerGroup(a, b, always_xy=True)
        how = group.transformers[0].description if group.transformers else "no transformation available"
        if group.unavailable_operations and not group.best_available:
            how += f" (the more accurate {group.unavailable_operations[0].name} needs a PROJ grid not installed here)"
    except Exception as exc:  # only a description
        how = f"unknown ({exc})"
    return f"{what} {path} is in {_crs_name(a)}; reprojected to the label CRS {_crs_name(b)} by: {how}"


def _crs_name(crs) -> str:  # pyproj.CRS
    epsg = crs.to_epsg()
    return f"EPSG:{epsg} ({crs.name})" if epsg else crs.name


def vector_info(path: str, layer: str | None, what: str) -> dict[str, Any]:
    """``pyogrio.read_info`` of a layer, or an :class:`InputError` if GDAL cannot open it.

    The file is identified by content before GDAL sees it, and its driver checked after
    (:mod:`geoseg.io.opener`): a disguised OGR VRT is never parsed.
    """
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    from geoseg.io.opener import check_vector, check_vector_driver

    check_vector(path, what)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except (DataSourceError, DataLayerError) as exc:
        raise InputError(f"{what} {path} is neither a raster nor a vector layer GDAL can open: {exc}") from exc
    check_vector_driver(path, info, what)
    return info


def layer_window(path: str, layer: str | None, columns: list[str], layer_crs_wkt: str, grid: GeoGrid):
    """Features of a layer (in ``layer_crs_wkt``) meeting ``grid``, in layer order, in the grid's CRS.

    Small layers come from the worker's in-memory copy (:mod:`geoseg._kernels.layercache`), larger ones
    from the file, read over the window's bounding box.
    """
    import pyogrio

    from geoseg.io.opener import check_vector

    check_vector(path)  # on the worker too: the file is read again here
    cached = cached_layer_window(path, layer, columns, layer_crs_wkt, grid.crs_wkt, grid.bounds)
    if cached is not None:
        return cached
    layer_crs = crs_from_wkt(layer_crs_wkt)
    bbox = pad_bounds(bounds_in(pad_bounds(grid.bounds), grid.crs, layer_crs))
    df = pyogrio.read_dataframe(path, layer=layer, columns=columns, bbox=bbox, fid_as_index=True)
    return features_in_label_crs(df, layer_crs, grid.crs)


def burn_shapes(shapes: list, grid: GeoGrid, fill: int, dtype: str = "int32") -> np.ndarray:
    """Rasterise ``(geometry, value)`` pairs on ``grid``: a pixel takes the value of the last polygon
    covering its centre (GDAL's rule, :func:`geoseg.io.rasterize.burn`), ``fill`` elsewhere."""
    return burn([g for g, _ in shapes], [v for _, v in shapes], grid.transform, grid.shape, dtype, fill)
