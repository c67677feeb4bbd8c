"""The panoptic raster: the semantic labels and the instance ids of "thing" classes in one Zarr group.

Layout (Zarr v2, the layout of ``labels.zarr`` with a second raster)::

    panoptic.zarr/
      semantic      (y, x) uint8 class ids, the same values and legend as labels.zarr; fill 255 = nodata
      instances     (y, x) uint32 instance ids, 0 = no instance; same chunks
      x, y          pixel-centre coordinates; both rasters carry _CRS (GDAL), crs + transform (rioxarray)
      .zmetadata, geoseg-manifest.json (both rasters' chunks)

Why a group of its own and not a fourth array in ``labels.zarr``: GDAL, QGIS and
``rioxarray.open_rasterio`` see ``labels.zarr`` as one raster only because it holds exactly one 2-D
array; here GDAL lists ``ZARR:"panoptic.zarr":/semantic`` and ``ZARR:"panoptic.zarr":/instances`` as
subdatasets, each with the CRS and geotransform, and ``xarray.open_zarr`` (or :func:`open_panoptic`)
gives one Dataset of both. The two agree: every instance pixel's semantic class is its instance's class
(the writer of the chunks enforces it, :mod:`geoseg.run.panoptic`).

Written as a transaction like ``labels.zarr``: under ``panoptic.zarr.partial``, a chunk of both rasters
then its marker, renamed into place by :meth:`PanopticWriter.finalize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.geo import ChunkGrid, Window
from geoseg.io.labelstore import LabelStoreWriter, georeference_attrs
from geoseg.legend import ClassInfo

SEMANTIC_ARRAY = "semantic"
INSTANCE_ARRAY = "instances"


@dataclass(frozen=True)
class PanopticWriter:
    """Builds ``panoptic.zarr`` chunk by chunk (picklable: tasks build their own and call :meth:`write`)."""

    path: str
    grid: ChunkGrid

    @classmethod
    def create(cls, path: str | Path, grid: ChunkGrid, legend: tuple[ClassInfo, ...],
               attrs: dict[str, Any] | None = None, resume_key: str | None = None) -> PanopticWriter:
        """Start (or, with the same ``resume_key``, resume) the store under its ``.partial`` name."""
        import zarr

        from geoseg.io.labelstore import _compressor

        first = LabelStoreWriter.create(path, grid, legend, attrs=attrs, resume_key=resume_key, array=SEMANTIC_ARRAY)
        root = zarr.open_group(str(first.partial_path), mode="r+", zarr_format=2)
        if INSTANCE_ARRAY not in root:
            arr = root.create_array(INSTANCE_ARRAY, shape=grid.shape, chunks=(grid.chunk, grid.chunk), dtype="uint32",
                                    fill_value=0, compressors=_compressor())
            arr.attrs.update({"_ARRAY_DIMENSIONS": ["y", "x"], "_CRS": {"wkt": grid.crs_wkt},
                              "long_name": "instance id (0 = none)", "geoseg:nodata": 0, **(attrs or {}),
                              **georeference_attrs(grid.crs_wkt, grid.transform)})
        return cls(str(path), grid)

    def is_done(self, window: Window) -> bool:
        return LabelStoreWriter(self.path, self.grid, SEMANTIC_ARRAY).is_done(window)

    def write(self, window: Window, semantic: np.ndarray, instances: np.ndarray) -> None:
        """Both rasters of one chunk, then the chunk's marker (written by the second write)."""
        LabelStoreWriter(self.path, self.grid, INSTANCE_ARRAY).write(window, instances.astype(np.uint32), mark=False)
        LabelStoreWriter(self.path, self.grid, SEMANTIC_ARRAY).write(window, semantic.astype(np.uint8))

    def finalize(self, extra_attrs: dict[str, Any] | None = None) -> Path:
        """Every chunk done: metadata consolidated, both rasters in the manifest, renamed into place."""
        return Path(LabelStoreWriter(self.path, self.grid, SEMANTIC_ARRAY).finalize(extra_attrs, also=(INSTANCE_ARRAY,)))


def open_panoptic(path: str | Path, chunks: Any = None):  # xarray.Dataset
    """``panoptic.zarr`` as an ``xarray.Dataset`` (``semantic``, ``instances``) with its CRS (rioxarray)."""
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    from geoseg.io.manifest import verifying_store

    info = read_panoptic_info(path)
    ds = xr.open_zarr(verifying_store(path), mask_and_scale=False, chunks={} if chunks is None else chunks,
                      consolidated=True)
    for name in (SEMANTIC_ARRAY, INSTANCE_ARRAY):
        ds[name].attrs = {k: v for k, v in ds[name].attrs.items() if k not in ("_CRS", "crs", "transform", "GeoTransform")}
    return ds.rio.write_crs(info.grid.crs).rio.write_transform(info.grid.transform)


def read_panoptic_info(path: str | Path):  # LabelRasterInfo
    """The grid and legend of a finished ``panoptic.zarr`` (those of its semantic raster)."""
    import zarr

    from geoseg.errors import LabelStoreError
    from geoseg.io.labelstore import _info_of

    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=2)
        arr = root[SEMANTIC_ARRAY]
    except Exception as exc:  # zarr raises many types for a broken store
        raise LabelStoreError(f"{path} is not a geoseg panoptic store: {exc}") from exc
    if not root.attrs.get("geoseg:complete", False):
        raise LabelStoreError(f"panoptic store {path} is incomplete; rerun the job that writes it")
    return _info_of(Path(path), arr, {})
