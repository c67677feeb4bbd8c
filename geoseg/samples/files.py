"""Writing a synthetic scene: :func:`make_scene` validates, picks the generator and writes the files.

Image and reference GeoTIFFs are written together, one tile-aligned window at a time (a scene
is never held whole), and the regions layer as a GeoPackage with a fixed timestamp, so the
same kind, size and seed give byte-identical files. Every file goes through
:mod:`geoseg.io.atomic`: an interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.crs import CRS

from geoseg.errors import InputError, OutputError
from geoseg.geo import Window
from geoseg.io.atomic import atomic_path, write_atomic
from geoseg.legend import CROPWEED_CLASSES, LANDCOVER_CLASSES, ClassInfo
from geoseg.samples.cropweed import _Cropweed
from geoseg.samples.generator import _Generator
from geoseg.samples.landcover import _Landcover

__all__ = ["KINDS", "MAX_SIDE", "SceneFiles", "make_scene"]

#: The kinds of scene :func:`make_scene` can generate.
KINDS: tuple[str, ...] = ("landcover", "cropweed")
#: Largest scene side in pixels.
MAX_SIDE = 20_000


@dataclass(frozen=True)
class SceneFiles:
    """The files of one synthetic scene and the legend of its reference raster."""

    image: Path
    reference: Path
    regions: Path
    legend: tuple[ClassInfo, ...]
    kind: str


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def make_scene(
    kind: Literal["landcover", "cropweed"],
    out_dir: str | Path,
    width: int = 2048,
    height: int = 2048,
    seed: int = 0,
    block: int = 512,
) -> SceneFiles:
    """Generate a synthetic scene: image, reference labels and a regions layer.

    Files are ``<out_dir>/<kind>_image.tif``, ``<kind>_reference.tif`` and
    ``<kind>_regions.gpkg``. Each is written under a temporary name in ``out_dir`` and renamed
    into place when complete, so an interrupted run never leaves a file that looks finished.
    The same ``kind``, size and ``seed`` give byte-identical files; the pixel values do not
    depend on ``block``, which only sets the GeoTIFF tile size and the write window.

    Raises :class:`~geoseg.errors.InputError` for an unknown kind, a side outside
    1..20,000 pixels, a negative seed or a block size that is not a positive multiple of 16.
    """
    if kind not in KINDS:
        raise InputError(f"unknown synthetic scene kind {kind!r}; choose one of {', '.join(KINDS)}")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"scene {name} must be an integer number of pixels, got {value!r}")
        if not 1 <= int(value) <= MAX_SIDE:
            raise InputError(f"scene {name} must be between 1 and {MAX_SIDE} pixels, got {value}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 16 or block % 16:
        raise InputError(f"block must be a positive multiple of 16 (GeoTIFF tile size), got {block!r}")
    width, height, seed, block = int(width), int(height), int(seed), int(block)

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc}") from exc

    files = SceneFiles(
        image=out / f"{kind}_image.tif",
        reference=out / f"{kind}_reference.tif",
        regions=out / f"{kind}_regions.gpkg",
        legend=LANDCOVER_CLASSES if kind == "landcover" else CROPWEED_CLASSES,
        kind=kind,
    )
    if kind == "landcover":
        gen: _Generator = _Landcover(width, height, seed)
    else:
        gen = _Cropweed(width, height, seed)
    _write_rasters(gen, files, block)
    _write_regions(gen.regions(), files.regions, gen.crs)
    return files



def _tif_profile(gen: _Generator, count: int, dtype: str, block: int) -> dict:
    return dict(
        driver="GTiff",
        width=gen.width,
        height=gen.height,
        count=count,
        dtype=dtype,
        crs=gen.crs,
        transform=gen.transform,
        nodata=0,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
        predictor=2,
        interleave="pixel",
        bigtiff="if_safer",
    )


def _tile_windows(height: int, width: int, block: int) -> Iterator[Window]:
    """Tile-aligned ``block`` windows in row-major order (GDAL writes the tiles in this order)."""
    for r0 in range(0, height, block):
        for c0 in range(0, width, block):
            yield Window(r0, c0, min(block, height - r0), min(block, width - c0))


def _write_rasters(gen: _Generator, files: SceneFiles, block: int) -> None:
    """Write image and reference together, one tile-aligned window at a time.

    Both are renamed into place only when both were written completely.
    """
    legend = files.legend
    img_profile = _tif_profile(gen, len(gen.spec.bands), gen.spec.dtype, block)
    ref_profile = _tif_profile(gen, 1, "uint8", block)
    with ExitStack() as files_done:
        tmp_img = files_done.enter_context(atomic_path(files.image))
        tmp_ref = files_done.enter_context(atomic_path(files.reference))
        with (
            rasterio.Env(GDAL_CACHEMAX=64),
            rasterio.open(tmp_img, "w", **img_profile) as img,
            rasterio.open(tmp_ref, "w", **ref_profile) as ref,
        ):
            for i, name in enumerate(gen.spec.bands, start=1):
                img.set_band_description(i, name)
            ref.set_band_description(1, "class")
            img.update_tags(**gen.tags())
            ref.update_tags(**gen.tags(), GEOSEG_LEGEND=json.dumps([[c.id, c.name, c.color] for c in legend]))
            ref.write_colormap(1, {0: (0, 0, 0, 0), **{c.id: (*c.rgb(), 255) for c in legend}})
            for window in _tile_windows(gen.height, gen.width, block):
                data, labels = gen.block(window)
                img.write(data, window=window.to_rasterio())
                ref.write(labels, 1, window=window.to_rasterio())


#: Fixed GeoPackage timestamp, so identical inputs give byte-identical files.
_GPKG_DATE = "2000-01-01T00:00:00.000Z"


def _write_regions(regions: tuple[list, list[int], list[str]], path: Path, crs: CRS) -> None:
    """Write the regions layer (``region_id``, ``name``) as a GeoPackage, atomically."""
    import pyogrio
    import shapely
    from pyogrio.raw import write

    polys, ids, names = regions
    geometry = shapely.to_wkb(np.array(polys, dtype=object), output_dimension=2)

    def _write(tmp: Path) -> None:
        previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _GPKG_DATE})
        try:
            write(
                str(tmp),
                geometry=geometry,
                field_data=[np.array(ids, dtype=np.int32), np.array(names, dtype=object)],
                fields=["region_id", "name"],
                layer="regions",
                driver="GPKG",
                geometry_type="Polygon",
                crs=crs.to_wkt(),
            )
        finally:
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})

    write_atomic(path, _write)
