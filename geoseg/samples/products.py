"""Imagery as users receive it, made from a generated scene: tiles, band files + STAC item, a UTM split.

From one image written by :func:`geoseg.samples.synthetic.make_scene`:

* :func:`make_tiles` - an ``n`` x ``n`` mosaic of tiles overlapping by ``overlap`` pixels, each with an
  alpha band that is 0 on a ``margin`` along every edge (margin pixels hold garbage values);
* :func:`make_band_files` - one file per band as a Sentinel-2 product delivers them: blue, green, red,
  nir at 10 m, a 20 m nir (``B8A``), a 60 m coastal band (``B01``), a 20 m scene classification
  (``SCL``, with cloud, shadow, cirrus and snow classes) and a STAC item (``item.json``) describing them;
* :func:`make_utm_split` - the left half in the scene's UTM zone and the right half reprojected to the
  neighbouring zone.

Everything is written window by window (memory follows the window, not the scene).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window as RioWindow

from geoseg.errors import InputError

#: Rows written at once (a multiple of 60, so 10/20/60 m rows line up).
_ROWS = 480
#: Value written under alpha = 0 so that any use of masked pixels shows.
GARBAGE = 65535
#: SCL classes (Sentinel-2 L2A) the product uses; the cloud-like ones a job should drop.
SCL_VEGETATION, SCL_NOT_VEGETATED = 4, 5
SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 3, 8, 9, 10, 11
SCL_DROP = (SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW)
#: Band files of the product: asset key -> (source band, common name, resolution factor).
S2_BANDS = {"B02": (1, "blue", 1), "B03": (2, "green", 1), "B04": (3, "red", 1), "B08": (4, "nir", 1),
            "B8A": (4, "nir08", 2), "B01": (1, "coastal", 6)}


def _profile(src, width: int, height: int, count: int, transform: Affine, crs=None, **extra):
    p = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": src.dtypes[0],
         "crs": crs or src.crs, "transform": transform, "compress": "deflate"}
    block = src.block_shapes[0][0] if src.block_shapes[0][0] == src.block_shapes[0][1] else 256
    block = block if min(width, height) >= block else 256  # the source's tiling where the file is large enough
    if width >= block and height >= block and block % 16 == 0:
        p.update(tiled=True, blockxsize=block, blockysize=block)
    p.update(extra)
    return p


def make_tiles(image: str | Path, out_dir: str | Path, n: int = 2, overlap: int = 64, margin: int = 8) -> list[Path]:
    """Cut ``image`` into ``n`` x ``n`` tiles overlapping by ``overlap`` px, each with an alpha margin."""
    if n < 1 or overlap < 0 or not 0 <= margin <= max(overlap // 2, 0) or (n > 1 and margin and not overlap):
        raise InputError(f"tiles need n >= 1 and 0 <= margin <= overlap, got n={n}, overlap={overlap}, margin={margin}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(image) as src:
        cuts_y = [round(i * src.height / n) for i in range(n + 1)]
        cuts_x = [round(i * src.width / n) for i in range(n + 1)]
        half = overlap // 2
        for i in range(n):
            for j in range(n):
                r0, r1 = max(cuts_y[i] - half, 0), min(cuts_y[i + 1] + (overlap - half), src.height)
                c0, c1 = max(cuts_x[j] - half, 0), min(cuts_x[j + 1] + (overlap - half), src.width)
                path = out / f"tile_{i}_{j}.tif"
                profile = _profile(src, c1 - c0, r1 - r0, src.count + 1,
                                   src.transform * Affine.translation(c0, r0), nodata=src.nodata,
                                   photometric="MINISBLACK")
                with rasterio.open(path, "w", **profile) as dst:
                    dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (src.count - 1) + [ColorInterp.alpha]
                    dst.descriptions = tuple(src.descriptions) + ("alpha",)
                    for y in range(r0, r1, _ROWS):
                        h = min(_ROWS, r1 - y)
                        data = src.read(window=RioWindow(c0, y, c1 - c0, h))
                        rows = np.arange(y, y + h)[:, None] - r0
                        cols = np.arange(c0, c1)[None, :] - c0
                        inside = ((rows >= margin) & (rows < r1 - r0 - margin)
                                  & (cols >= margin) & (cols < c1 - c0 - margin))
                        alpha = np.where(inside, np.iinfo(data.dtype).max, 0).astype(data.dtype)
                        data[:, ~inside] = min(GARBAGE, np.iinfo(data.dtype).max)
                        dst.write(np.concatenate([data, alpha[None]]), window=RioWindow(0, y - r0, c1 - c0, h))
                paths.append(path)
    return paths


@dataclass(frozen=True)
class BandProduct:
    """Files of a per-band product: asset key -> path, the SCL layer and the STAC item."""

    bands: dict[str, Path]
    scl: Path
    item: Path
    datetime: dt.datetime


def _scl(height: int, width: int, seed: int) -> np.ndarray:
    """A scene classification: land classes with cloud, shadow, cirrus and snow blobs."""
    rng = np.random.default_rng([seed, 2])
    yy, xx = np.mgrid[0:height, 0:width]
    scl = np.where((yy // 7 + xx // 11) % 3 == 0, SCL_NOT_VEGETATED, SCL_VEGETATION).astype(np.uint8)
    r = max(2.0, 0.06 * min(height, width))
    for k in range(4):
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        d = np.hypot(yy - cy, xx - cx)
        sy, sx = cy + 0.8 * r, cx + 0.6 * r  # the shadow falls beside its cloud
        scl[np.hypot(yy - sy, xx - sx) < r] = SCL_SHADOW
        scl[d < r] = SCL_CLOUD_MEDIUM
        scl[d < 0.5 * r] = SCL_CLOUD_HIGH
        if k == 0:
            scl[(np.abs(yy - cy) < 0.3 * r) & (xx < cx)] = SCL_CIRRUS
    scl[: max(1, height // 20), : max(1, width // 20)] = SCL_SNOW
    return scl


def make_band_files(image: str | Path, out_dir: str | Path, seed: int = 0,
                    when: dt.datetime = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)) -> BandProduct:
    """Per-band files at 10, 20 and 60 m, a 20 m SCL layer and a STAC item listing them as assets."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with rasterio.open(image) as src:
        for key, (band, common, f) in S2_BANDS.items():
            path = out / f"{key}.tif"
            cw, ch = -(-src.width // f), -(-src.height // f)  # coarse pixels partly outside the scene are nodata
            profile = _profile(src, cw, ch, 1, src.transform * Affine.scale(f), nodata=0)
            with rasterio.open(path, "w", **profile) as dst:
                dst.descriptions = (common,)
                for y in range(0, src.height, _ROWS):
                    h = min(_ROWS, src.height - y)
                    data = src.read(band, window=RioWindow(0, y, src.width, h)).astype(np.float64)
                    if f > 1:
                        padded = np.zeros((-(-h // f) * f, cw * f))
                        padded[:h, : src.width] = data
                        blocks = padded.reshape(-(-h // f), f, cw, f)
                        nodata = (blocks == 0).any(axis=(1, 3))
                        data = np.where(nodata, 0, np.round(blocks.mean(axis=(1, 3))))
                    dst.write(data.astype(src.dtypes[0])[None], window=RioWindow(0, y // f, cw, data.shape[0]))
            paths[key] = path
        scl_path = out / "SCL.tif"
        scl = _scl(-(-src.height // 2), -(-src.width // 2), seed)
        with rasterio.open(scl_path, "w", **_profile(src, scl.shape[1], scl.shape[0], 1,
                                                     src.transform * Affine.scale(2), dtype="uint8")) as dst:
            dst.write(scl[None])
        item_path = _write_item(out, src, paths, scl_path, when)
    return BandProduct(paths, scl_path, item_path, when)


def _write_item(out: Path, src, bands: dict[str, Path], scl: Path, when: dt.datetime) -> Path:
    """A STAC item (pystac, eo and projection extensions) with relative asset hrefs.

    ``proj:code`` (item) and each asset's ``proj:shape``/``proj:transform`` (band files differ in
    resolution) are what odc-stac needs to place the files without opening them;
    ``raster:bands`` gives their data type and nodata, so loaders keep the integers.
    """
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from rasterio.warp import transform_bounds, transform_geom
    from shapely.geometry import box, mapping

    geom = transform_geom(src.crs, "EPSG:4326", mapping(box(*src.bounds)))
    bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    item = pystac.Item(id="geoseg-synthetic-s2", geometry=geom, bbox=bbox, datetime=when, properties={})
    EOExtension.add_to(item)
    ProjectionExtension.add_to(item)
    RasterExtension.add_to(item)
    epsg = src.crs.to_epsg()
    item.properties["proj:code"] = f"EPSG:{epsg}" if epsg else None
    if not epsg:
        item.properties["proj:wkt2"] = src.crs.to_wkt()

    def placed(path: Path, asset: pystac.Asset) -> pystac.Asset:
        with rasterio.open(path) as ds:
            asset.extra_fields["proj:shape"] = [ds.height, ds.width]
            asset.extra_fields["proj:transform"] = list(ds.transform)[:6]
            band: dict[str, object] = {"data_type": ds.dtypes[0], "spatial_resolution": abs(ds.transform.a)}
            if ds.nodata is not None:
                band["nodata"] = ds.nodata
            asset.extra_fields["raster:bands"] = [band]
        return asset

    for key, path in bands.items():
        _, common, _ = S2_BANDS[key]
        asset = pystac.Asset(href=f"./{path.name}", media_type=pystac.MediaType.GEOTIFF, roles=["data"])
        EOExtension.ext(asset).bands = [Band.create(name=key, common_name=common)]
        item.add_asset(key, placed(path, asset))
    item.add_asset("SCL", placed(scl, pystac.Asset(href=f"./{scl.name}", media_type=pystac.MediaType.GEOTIFF,
                                                   roles=["data"], title="scene classification")))
    path = out / "item.json"
    item.set_self_href(str(path))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False, dest_href=str(path))
    return path


def neighbour_zone(crs: CRS) -> CRS:
    """The next UTM zone east of ``crs`` (same hemisphere)."""
    epsg = crs.to_epsg() or 0
    if not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise InputError(f"{crs.to_string()} is not a WGS 84 UTM zone")
    base = 32600 if epsg < 32700 else 32700
    return CRS.from_epsg(base + (epsg - base) % 60 + 1)


def make_utm_split(image: str | Path, out_dir: str | Path, overlap: int = 16,
                   resampling: str = "nearest") -> tuple[Path, Path]:
    """Left half (plus ``overlap`` px) in the scene's zone; right half warped to the next zone east.

    The warped half keeps the pixel size; ``nearest`` (the default) keeps the original pixel values,
    as a provider re-gridding a product does, so a job warping it back can reproduce the scene.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    left, right = out / "west.tif", out / "east.tif"
    with rasterio.open(image) as src:
        mid = src.width // 2
        _copy_window(src, left, 0, mid + overlap)
        tmp = out / ".east-source.tif"
        _copy_window(src, tmp, mid, src.width - mid)
        try:
            with rasterio.open(tmp) as half:
                crs = neighbour_zone(src.crs)
                t, vw, vh = calculate_default_transform(half.crs, crs, half.width, half.height, *half.bounds,
                                                      resolution=half.res)
                vrt = WarpedVRT(half, crs=crs, transform=t, width=vw, height=vh, resampling=Resampling[resampling], nodata=0)
                profile = _profile(half, vrt.width, vrt.height, vrt.count, vrt.transform, crs=vrt.crs, nodata=0)
                with rasterio.open(right, "w", **profile) as dst:
                    dst.descriptions = half.descriptions
                    for y in range(0, vrt.height, _ROWS):
                        w = RioWindow(0, y, vrt.width, min(_ROWS, vrt.height - y))
                        dst.write(vrt.read(window=w), window=w)
                vrt.close()
        finally:
            tmp.unlink(missing_ok=True)
    return left, right


def _copy_window(src, path: Path, col0: int, width: int) -> None:
    profile = _profile(src, width, src.height, src.count, src.transform * Affine.translation(col0, 0), nodata=src.nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = src.descriptions
        for y in range(0, src.height, _ROWS):
            w = RioWindow(0, y, width, min(_ROWS, src.height - y))
            dst.write(src.read(window=RioWindow(col0, y, width, w.height)), window=w)


#: Products :func:`write_products` knows, and the folder each goes to.
PRODUCTS = {"tiles": "tiles", "bands": "S2", "utm": "utm"}


def write_products(image: str | Path, out_dir: str | Path, names: list[str], seed: int = 0) -> dict[str, Path]:
    """Write the named products of ``image`` into sub-folders of ``out_dir``; what was written, by name."""
    unknown = [n for n in names if n not in PRODUCTS]
    if unknown:
        raise InputError(f"unknown product(s) {unknown}; choose from {', '.join(PRODUCTS)}")
    out, written = Path(out_dir), {}
    for name in names:
        folder = out / PRODUCTS[name]
        if name == "tiles":
            make_tiles(image, folder)
            written["tiles"] = folder / "tile_*.tif"
        elif name == "bands":
            product = make_band_files(image, folder, seed=seed)
            written["bands"], written["scl"], written["stac"] = folder / "B*.tif", product.scl, product.item
        else:
            written["west"], written["east"] = make_utm_split(image, folder)
    return written
