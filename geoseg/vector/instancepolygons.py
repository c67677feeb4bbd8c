"""One polygon per instance of an instance raster, chunk by chunk, pieces on chunk seams united by id.

Why not the class polygoniser: an instance raster holds up to 2³² ids and touching instances of one
class must stay separate polygons, so each id is polygonised as its own value
(``rasterio.features.shapes``, 4-connected, pixel edges). An instance cut by a chunk border comes back
as several pieces with one id; the client unites them in pixel coordinates (whole numbers: the
shared edges are identical in both chunks, so the union is exact), then maps them to the CRS.
The client holds every instance's polygon until the file is written: fine for the hundreds of
thousands of crowns or buildings of a scene, not for tens of millions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from shapely.affinity import affine_transform

from geoseg.geo import ChunkGrid, Window
from geoseg.io.atomic import write_atomic

#: The layer of instance polygons in a job's ``polygons.gpkg`` (and in ``instances.gpkg``).
INSTANCE_LAYER = "instances"


@dataclass(frozen=True)
class _ChunkShapes:
    store: str
    array: str
    grid: ChunkGrid

    def __call__(self, window: Window) -> tuple[np.ndarray, list[bytes]]:
        import shapely
        from rasterio.features import shapes
        from shapely.geometry import shape

        from geoseg.io.labelstore import read_label_window

        ids = read_label_window(self.store, window, self.array)
        if not ids.any():
            return np.empty(0, np.int64), []
        if int(ids.max()) > np.iinfo(np.int32).max:
            from geoseg.errors import OutputError

            raise OutputError("instance ids above 2**31 - 1 cannot be polygonised (rasterio's shapes take int32)")
        # pixel coordinates (whole numbers): pieces of one instance from two chunks share exact edges
        transform = Affine.translation(window.col_off, window.row_off)
        out_ids, out_wkb = [], []
        for geom, value in shapes(ids.astype(np.int32), mask=ids > 0, connectivity=4, transform=transform):
            out_ids.append(int(value))
            out_wkb.append(shapely.to_wkb(shape(geom)))
        return np.array(out_ids, np.int64), out_wkb


def instance_polygons(
    store: str | Path, grid: ChunkGrid, array: str = "instances", client: Any = None
) -> tuple[np.ndarray, list]:
    """Ids (ascending) and shapely polygons of every instance in ``store``."""
    import shapely

    task = _ChunkShapes(str(store), array, grid)
    windows = list(grid.windows())
    parts = client.gather(client.map(task, windows, pure=False)) if client is not None else [task(w) for w in windows]
    ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    geoms = shapely.from_wkb([w for p in parts for w in p[1]]) if ids.size else np.empty(0, object)
    order = np.argsort(ids, kind="stable")
    ids, geoms = ids[order], geoms[order]
    uniq, start = np.unique(ids, return_index=True)
    bounds = np.append(start, ids.size)
    pixel = [geoms[a] if b - a == 1 else shapely.union_all(geoms[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    # the vertices a seam left on straight edges go (exact on whole pixel coordinates): the same polygon,
    # vertex for vertex, whatever the chunking
    pixel = list(shapely.simplify(np.asarray(pixel, dtype=object), 0.0)) if pixel else pixel
    t = grid.grid.transform
    to_map = [t.a, t.b, t.d, t.e, t.c, t.f]
    return uniq, [affine_transform(g, to_map) for g in pixel]


def instance_frame(
    ids: np.ndarray, geoms: list, classes: np.ndarray, sizes: np.ndarray, grid: Any,
    names: Mapping[int, str], scores: np.ndarray | None = None,
):  # GeoDataFrame
    """One row per instance: ``instance_id``, ``class_id``, ``class_name``, ``score``, ``area_m2`` (pixels × pixel area)."""
    import geopandas as gpd

    cls = classes[ids - 1] if ids.size else np.empty(0, np.int64)
    return gpd.GeoDataFrame({
        "instance_id": ids.astype(np.int64),
        "class_id": cls.astype(np.int64),
        "class_name": [names.get(int(c), "") for c in cls],
        "score": (scores[ids - 1] if scores is not None and ids.size else np.ones(ids.size)).astype(np.float64),
        "area_m2": (sizes[ids - 1] * grid.pixel_area_m2 if ids.size else np.empty(0)).astype(np.float64),
    }, geometry=list(geoms), crs=grid.crs)


def write_instance_polygons(
    path: str | Path, ids: np.ndarray, geoms: list, classes: np.ndarray, sizes: np.ndarray, grid: Any,
    names: Mapping[int, str], scores: np.ndarray | None = None,
) -> Path:
    """``instances.gpkg``: the layer ``instances`` of :func:`instance_frame`."""
    frame = instance_frame(ids, geoms, classes, sizes, grid, names, scores)
    return write_atomic(path, lambda tmp: frame.to_file(tmp, driver="GPKG", layer="instances"))


def add_instance_layer(path: str | Path, frame: Any, legend: Sequence[Any] = (), keep: bool = True) -> Path:
    """Put ``frame`` as the layer ``instances`` into the GeoPackage ``path`` beside its other layers
    (``keep=False`` or no file yet: a file of that layer alone), with a default QGIS style in the class
    colours; the file is replaced atomically (a copy gets the layer, then is renamed into place)."""
    import shutil

    from geoseg.io.gpkg import atomic_gpkg, class_style, write_layer_styles

    out = Path(path)
    with atomic_gpkg(out) as tmp:
        if keep and out.exists():
            shutil.copyfile(out, tmp)
        frame.to_file(tmp, driver="GPKG", layer=INSTANCE_LAYER)
        if legend:
            write_layer_styles(tmp, [class_style(INSTANCE_LAYER, legend)])
    return out
