"""Small vector layers kept in memory by each worker, with a spatial index for window queries.

Why: evaluation rasterises the regions (and a vector reference) once per chunk window. Reading
the features of each window from the file costs about as much as reading the window's pixels
(opening the GeoPackage, querying its R-tree, building a GeoDataFrame, reprojecting), while a
layer of a few thousand polygons fits in a few MB. So a worker reads such a layer once,
reprojected to the label CRS, and answers each window from an STRtree in microseconds.

Memory stays bounded: only layers of at most :data:`MAX_CACHED_FEATURES` features in a file of
at most :data:`MAX_CACHED_FILE_BYTES` are cached, at most :data:`MAX_CACHED_LAYERS` of them per
process (a regions layer and a vector reference), so a long-lived worker keeps at most about
250 MB (50,000 Voronoi cells: a 12 MB GeoPackage, +22 MB in memory, read in 0.14 s, a window
queried in 0.6 ms); larger layers return ``None`` and are read window by window from the file.
A layer file that changes (size or modification time) is read again.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
from rasterio.crs import CRS

from geoseg.geo import crs_from_wkt

#: Largest layer held in memory per worker: feature count and file size.
MAX_CACHED_FEATURES = 50_000
MAX_CACHED_FILE_BYTES = 64 * 2**20
MAX_CACHED_LAYERS = 2


def _file_stamp(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a local file, ``None`` for remote or virtual paths (never cached)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=16)
def _feature_count(path: str, layer: str | None, stamp: tuple[int, int]) -> int:
    import pyogrio

    return int(pyogrio.read_info(path, layer=layer, force_feature_count=True)["features"])


@lru_cache(maxsize=MAX_CACHED_LAYERS)
def _indexed_layer(
    path: str, layer: str | None, columns: tuple[str, ...], layer_crs_wkt: str, label_crs_wkt: str, stamp: tuple[int, int]
) -> tuple[Any, Any]:
    """The whole layer in the label CRS, in layer (FID) order, and an STRtree over it."""
    import pyogrio
    from shapely import STRtree

    df = pyogrio.read_dataframe(path, layer=layer, columns=list(columns), fid_as_index=True)
    df = features_in_label_crs(df, crs_from_wkt(layer_crs_wkt), crs_from_wkt(label_crs_wkt))
    return df, STRtree(df.geometry.values)


def features_in_label_crs(df: Any, layer_crs: CRS, label_crs: CRS) -> Any:
    """Features read from a layer, in layer (FID) order, without empty geometries, in the label CRS."""
    df = df.sort_index()
    df = df[df.geometry.notna() & ~df.geometry.is_empty]
    if len(df) and layer_crs != label_crs:
        df = df.set_crs(layer_crs, allow_override=True).to_crs(label_crs)
    return df


def cached_layer_window(
    path: str, layer: str | None, columns: list[str], layer_crs_wkt: str, label_crs_wkt: str, bounds: tuple
) -> Any | None:
    """Features whose envelope meets ``bounds`` (label CRS), in layer order, in the label CRS;
    ``None`` when the layer is not cacheable (too large, or not a local file)."""
    stamp = _file_stamp(path)
    if stamp is None or stamp[0] > MAX_CACHED_FILE_BYTES or _feature_count(path, layer, stamp) > MAX_CACHED_FEATURES:
        return None
    from shapely import box

    df, tree = _indexed_layer(path, layer, tuple(columns), layer_crs_wkt, label_crs_wkt, stamp)
    hits = np.sort(tree.query(box(*bounds)))
    return df.iloc[hits]
