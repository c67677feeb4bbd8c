"""Training data as public datasets share it: a folder of image/mask chips without georeference.

Crop/weed and land-cover datasets are mostly PNG/JPEG/TIFF chips with a mask beside each image,
often RGB-coded (one colour per class). :func:`chip_pairs` turns such a folder into training
pairs that :mod:`geoseg.methods.training` uses like georeferenced ones: each chip is written once
(and again only when its source changes) as a GeoTIFF pair in a cache folder, on a local
(engineering) CRS with the declared pixel size, so the checkpoint records the resolution it was
trained at; RGB masks become class ids through the colour → class map. Validation is split by
image (whole chips held out, seeded), never by rows of a chip.

Layout: ``FOLDER/images/NAME.{png,jpg,jpeg,tif,tiff}`` with ``FOLDER/masks/NAME.*``; or
``NAME.ext`` with ``NAME_mask.ext`` side by side in ``FOLDER``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.io.opener import open_raster

#: Chips carry no place: a local Cartesian CRS in metres says so, and keeps the pixel size.
CHIP_CRS_WKT = (
    'LOCAL_CS["geoseg chip (no georeference)",UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
RGB_NAMES = ("red", "green", "blue")


def find_chips(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs of a chip folder, sorted by name (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"chip folder {folder} does not exist")
    out = []
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        masks = {p.stem: p for p in (folder / "masks").iterdir() if p.suffix.lower() in SUFFIXES}
        for img in sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in SUFFIXES):
            if img.stem not in masks:
                raise InputError(f"chip {img} has no mask in {folder / 'masks'} (expected {img.stem}.png or similar)")
            out.append((img, masks[img.stem]))
    else:
        files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES}
        for stem, img in sorted(files.items()):
            if stem.endswith("_mask"):
                continue
            if f"{stem}_mask" not in files:
                raise InputError(f"chip {img} has no mask {stem}_mask.* beside it")
            out.append((img, files[f"{stem}_mask"]))
    if not out:
        raise InputError(f"no image chips in {folder} (PNG, JPEG or TIFF in images/ with masks/, or NAME + NAME_mask)")
    return out


def parse_color(color: str | Sequence[int]) -> tuple[int, int, int]:
    """``"#rrggbb"`` or ``[r, g, b]`` as a tuple.

    >>> parse_color("#ff8000"), parse_color([0, 128, 255])
    ((255, 128, 0), (0, 128, 255))
    """
    if isinstance(color, str):
        h = color.strip().lstrip("#")
        if len(h) != 6:
            raise InputError(f"colour {color!r} is not #rrggbb")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    r, g, b = (int(v) for v in color)
    return r, g, b


def mask_classes(mask: np.ndarray, colors: Mapping[str, int] | None, where: str) -> np.ndarray:
    """Class ids (uint8, 0 = unlabelled) of a mask: RGB(A) through ``colors``, or one band as is."""
    if mask.ndim == 2 or mask.shape[0] == 1:
        return np.asarray(mask.reshape(mask.shape[-2:]), np.uint8)
    if not colors:
        raise InputError(f"{where} is an RGB mask; give the colour -> class map (e.g. {{'#00ff00': 1, '#ff0000': 2}})")
    rgb = mask[:3].astype(np.int64)
    code = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    lut = {(r << 16) | (g << 8) | b: int(c) for (r, g, b), c in ((parse_color(k), v) for k, v in colors.items())}
    present = np.unique(code)
    unknown = [int(v) for v in present if int(v) not in lut]
    if unknown:
        shown = ", ".join(f"#{v:06x}" for v in unknown[:5])
        raise InputError(f"{where} has colours not in the colour -> class map: {shown}; map them (0 = unlabelled)")
    keys = np.array(sorted(lut), np.int64)
    vals = np.array([lut[k] for k in keys], np.uint8)
    return vals[np.searchsorted(keys, code)]


def _read(path: Path) -> np.ndarray:
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(path, "chip", what="training chip") as ds:
            return ds.read()


def _write_pair(img_path: Path, mask_path: Path, out_dir: Path, pixel_size_m: float,
                colors: Mapping[str, int] | None) -> tuple[Path, Path]:  # fmt: skip
    import rasterio
    from affine import Affine

    img_out, ref_out = out_dir / f"{img_path.stem}.tif", out_dir / f"{img_path.stem}_classes.tif"
    newest = max(img_path.stat().st_mtime, mask_path.stat().st_mtime)
    if img_out.exists() and ref_out.exists() and min(img_out.stat().st_mtime, ref_out.stat().st_mtime) >= newest:
        return img_out, ref_out
    img = _read(img_path)
    if img.shape[0] == 4:  # RGBA: the alpha band is not a feature
        img = img[:3]
    classes = mask_classes(_read(mask_path), colors, f"mask {mask_path}")
    if classes.shape != img.shape[1:]:
        raise InputError(f"mask {mask_path} is {classes.shape[1]}x{classes.shape[0]} px, its image {img_path} "
                         f"{img.shape[2]}x{img.shape[1]}; they must match")  # fmt: skip
    h, w = classes.shape
    transform = Affine(pixel_size_m, 0, 0, 0, -pixel_size_m, h * pixel_size_m)
    common = dict(driver="GTiff", height=h, width=w, crs=rasterio.crs.CRS.from_wkt(CHIP_CRS_WKT), transform=transform)
    with rasterio.open(img_out, "w", count=img.shape[0], dtype=img.dtype.name, **common) as ds:
        ds.write(img)
        ds.descriptions = RGB_NAMES if img.shape[0] == 3 else tuple(f"band_{i + 1}" for i in range(img.shape[0]))
        ds.update_tags(GEOSEG_CHIP=str(img_path))
    with rasterio.open(ref_out, "w", count=1, dtype="uint8", **common) as ds:
        ds.write(classes, 1)
    return img_out, ref_out


def chip_pairs(
    folder: str | Path, *, pixel_size_m: float, colors: Mapping[str, int] | None = None,
    val_fraction: float = 0.2, seed: int = 0, cache: str | Path | None = None,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training and validation pairs (``{"image", "reference"}`` dicts, as ``pairs``/``val_pairs``
    of a training job) from a chip folder; ``val_fraction`` of the chips (at least one when
    there are two or more) is held out whole, chosen with ``seed``."""
    if not pixel_size_m or pixel_size_m <= 0:
        raise InputError(f"chips need a declared pixel size in metres (pixel_size_m > 0), got {pixel_size_m!r}")
    chips = find_chips(folder)
    out_dir = Path(cache) if cache is not None else Path(folder) / ".geoseg-chips"
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [_write_pair(i, m, out_dir, float(pixel_size_m), colors) for i, m in chips]
    n_val = 0 if len(pairs) < 2 or val_fraction <= 0 else max(1, round(val_fraction * len(pairs)))
    order = np.random.default_rng(seed).permutation(len(pairs))
    val = set(order[:n_val].tolist())
    as_dict = lambda p: {"image": str(p[0]), "reference": str(p[1])}  # noqa: E731
    return ([as_dict(p) for i, p in enumerate(pairs) if i not in val],
            [as_dict(p) for i, p in enumerate(pairs) if i in val])  # fmt: skip


def expand_chips(data: Any, base: Path) -> Any:
    """A training job dict with a ``chips:`` section turned into ``pairs``/``val_pairs``.

    ``chips: {folder, pixel_size_m, colors: {"#rrggbb": class id}, val_fraction, seed}``; the
    folder is taken from ``base`` (the job file's folder) when relative. Pairs given as well are
    kept (the chips are added to them). Anything else is left to the job's own validation.
    """
    if not isinstance(data, dict) or "chips" not in data:
        return data
    spec = data["chips"]
    if not isinstance(spec, dict) or "folder" not in spec:
        raise InputError("chips: needs at least `folder` and `pixel_size_m` (and `colors` for RGB masks)")
    unknown = set(spec) - {"folder", "pixel_size_m", "colors", "val_fraction", "seed"}
    if unknown:
        raise InputError(f"chips: unknown key(s) {', '.join(sorted(unknown))} (check the spelling)")
    folder = Path(spec["folder"])
    folder = folder if folder.is_absolute() else base / folder
    train_pairs, val_pairs = chip_pairs(
        folder, pixel_size_m=float(spec.get("pixel_size_m") or 0), colors=spec.get("colors"),
        val_fraction=float(spec.get("val_fraction", 0.2)), seed=int(spec.get("seed", 0)),
    )
    out = {k: v for k, v in data.items() if k != "chips"}
    out["pairs"] = [*out.get("pairs", []), *train_pairs]
    out["val_pairs"] = [*out.get("val_pairs", []), *val_pairs]
    return out
