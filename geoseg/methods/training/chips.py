"""Training data as public datasets share it: a folder of image/mask chips without georeference.

Crop/weed and land-cover datasets are mostly PNG/JPEG/TIFF chips with a mask beside each image,
often RGB-coded (one colour per class). :func:`chip_pairs` turns such a folder into training
pairs that :mod:`geoseg.methods.training` uses like georeferenced ones: each chip is written once
(and again only when its source changes) as a GeoTIFF pair in a cache folder, on a local
(engineering) CRS with the declared pixel size, so the checkpoint records the resolution it was
trained at; RGB masks become class ids through the colour → class map. Validation is split by
image (whole chips held out, seeded), never by rows of a chip.

Layout: ``FOLDER/images/NAME.{png,jpg,jpeg,tif,tiff}`` with the mask ``NAME.*`` in ``masks/`` (or the
one of ``annotations/``, ``labels/`` that exists); or ``NAME.ext`` with ``NAME_mask.ext`` side by
side in ``FOLDER``. Datasets as delivered name things their own way: :class:`ChipLayout` says which
folders hold images and masks and which suffix each file name carries (``images/012_image.png`` with
``annotations/012_annotation.png``: ``image_suffix: _image``, ``mask_suffix: _annotation``; the chip's
name is ``012``). A split file (one chip name or file name per line) says which chips are for
training, validation or testing instead of a seeded draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError, MissingFileError
from geoseg.io.opener import open_raster

#: Chips carry no place: a local Cartesian CRS in metres says so, and keeps the pixel size.
CHIP_CRS_WKT = (
    'LOCAL_CS["geoseg chip (no georeference)",UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
RGB_NAMES = ("red", "green", "blue")


#: Mask folder names recognised beside ``images/`` when the layout names none.
MASK_FOLDERS = ("masks", "annotations", "labels")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ChipLayout:
    """Where a chip folder keeps images and masks, and how a mask is named after its image.

    ``images``/``masks``: sub-folders (``None``: ``images/`` and the one mask folder of
    :data:`MASK_FOLDERS` there, else the folder itself with ``NAME_mask`` beside ``NAME``);
    ``image_suffix``/``mask_suffix``: the part of each file's stem after the chip's name.
    """

    images: str | None = None
    masks: str | None = None
    image_suffix: str = ""
    mask_suffix: str | None = None


@dataclass(frozen=True)
class Chip:
    """One chip: its name (shared by image and mask), the image and the mask file."""

    name: str
    image: Path
    mask: Path


def _listed(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def _folders(folder: Path, layout: ChipLayout) -> tuple[Path, Path, str]:
    """Image folder, mask folder and mask suffix of ``folder`` under ``layout``."""
    images = folder / layout.images if layout.images else folder / "images"
    if layout.images and not images.is_dir():
        raise InputError(f"chip image folder {images} does not exist")
    if layout.masks:
        masks = folder / layout.masks
        if not masks.is_dir():
            raise InputError(f"chip mask folder {masks} does not exist")
    elif images.is_dir():
        found = [folder / n for n in MASK_FOLDERS if (folder / n).is_dir()]
        if len(found) != 1:
            what = "none of" if not found else "several of"
            raise InputError(f"chip folder {folder} has {what} {', '.join(n + '/' for n in MASK_FOLDERS)} beside "
                             "images/; name the mask folder (masks: FOLDER)")  # fmt: skip
        masks = found[0]
    else:  # NAME + NAME_mask side by side
        images = masks = folder
    suffix = layout.mask_suffix if layout.mask_suffix is not None else ("_mask" if masks == images else "")
    if masks == images and suffix == layout.image_suffix:
        raise InputError(f"images and masks share the folder {images}: give them different suffixes "
                         "(image_suffix, mask_suffix; default NAME and NAME_mask)")  # fmt: skip
    return images, masks, suffix


def _chip_name(stem: str, suffix: str) -> str | None:
    if not suffix:
        return stem
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else None


def list_chips(folder: str | Path, layout: ChipLayout | None = None) -> list[Chip]:
    """The chips of ``folder``, sorted by name; an image without its mask is refused by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"chip folder {folder} does not exist")
    layout = layout or ChipLayout()
    images, masks, mask_suffix = _folders(folder, layout)
    by_name: dict[str, Path] = {}
    for p in _listed(masks):
        name = _chip_name(p.stem, mask_suffix)
        if name is not None:
            by_name[name] = p
    out, seen = [], set()
    for img in _listed(images):
        if masks == images and img.stem.endswith(mask_suffix):
            continue  # a mask beside its image
        name = _chip_name(img.stem, layout.image_suffix)
        if name is None:
            continue  # not an image of this layout (another suffix)
        if name in seen:
            raise InputError(f"two images of chip {name!r} in {images} (e.g. PNG and JPEG); keep one")
        seen.add(name)
        if name not in by_name:
            raise InputError(f"chip {img} has no mask {name}{mask_suffix}.* in {masks}"
                             + ("" if mask_suffix or layout.image_suffix else
                                "; if masks are named differently, give image_suffix and mask_suffix"))  # fmt: skip
        out.append(Chip(name, img, by_name[name]))
    if not out:
        raise InputError(f"no image chips in {images} (PNG, JPEG or TIFF"
                         + (f" named NAME{layout.image_suffix}.*" if layout.image_suffix else "") + ")")  # fmt: skip
    return out


def find_chips(folder: str | Path, layout: ChipLayout | None = None) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs of a chip folder, sorted by name (see the module docstring)."""
    return [(c.image, c.mask) for c in list_chips(folder, layout)]


def read_split(path: str | Path, chips: Sequence[Chip]) -> set[str]:
    """Chip names listed in a split file: one per line, as the chip's name, image or mask file name.

    Blank lines and ``#`` comments are skipped; a line naming no chip of the folder is refused by its line
    number, never its text: a job may name any file as a split file, and an error must not hand its lines out.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"split file {path} does not exist")
    known: dict[str, str] = {}
    for c in chips:
        for key in (c.name, c.image.name, c.image.stem, c.mask.name):
            known[key] = c.name
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"split file {path} is not UTF-8 text; list one chip name per line") from None
    example = f" such as {chips[0].name!r}" if chips else ""
    out: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        name = known.get(Path(entry).name)
        if name is None:
            raise InputError(f"{path}:{n} names no chip of the folder; list a chip's name, image or mask file "
                             f"name{example}, one per line")
        out.add(name)
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


def chip_transform(height: int, pixel_size_m: float) -> Any:
    """A chip's transform on :data:`CHIP_CRS_WKT`: origin at the bottom-left corner, north up."""
    from affine import Affine

    return Affine(pixel_size_m, 0, 0, 0, -pixel_size_m, height * pixel_size_m)


def write_chip_pair(chip: Chip, out_dir: Path, pixel_size_m: float,
                    colors: Mapping[str, int] | None) -> tuple[Path, Path]:  # fmt: skip
    """The chip as a GeoTIFF pair on the chip CRS (image, class ids), rewritten only when its files change."""
    import rasterio

    img_path, mask_path = chip.image, chip.mask
    img_out, ref_out = out_dir / f"{chip.name}.tif", out_dir / f"{chip.name}_classes.tif"
    newest = max(img_path.stat().st_mtime, mask_path.stat().st_mtime)
    if img_out.exists() and ref_out.exists() and min(img_out.stat().st_mtime, ref_out.stat().st_mtime) >= newest:
        with rasterio.open(ref_out) as done:
            if done.nodata == 0:  # pairs cached before masks said "0 = unlabelled" are rewritten
                return img_out, ref_out
    img = _read(img_path)
    if img.shape[0] == 4:  # RGBA: the alpha band is not a feature
        img = img[:3]
    classes = mask_classes(_read(mask_path), colors, f"mask {mask_path}")
    if classes.shape != img.shape[1:]:
        raise InputError(f"mask {mask_path} is {classes.shape[1]}x{classes.shape[0]} px, its image {img_path} "
                         f"{img.shape[2]}x{img.shape[1]}; they must match")  # fmt: skip
    h, w = classes.shape
    transform = chip_transform(h, pixel_size_m)
    common = dict(driver="GTiff", height=h, width=w, crs=rasterio.crs.CRS.from_wkt(CHIP_CRS_WKT), transform=transform)
    with rasterio.open(img_out, "w", count=img.shape[0], dtype=img.dtype.name, **common) as ds:
        ds.write(img)
        ds.descriptions = RGB_NAMES if img.shape[0] == 3 else tuple(f"band_{i + 1}" for i in range(img.shape[0]))
        ds.update_tags(GEOSEG_CHIP=str(img_path))
    with rasterio.open(ref_out, "w", count=1, dtype="uint8", nodata=0, **common) as ds:  # 0 = unlabelled
        ds.write(classes, 1)
    return img_out, ref_out


def chip_pairs(
    folder: str | Path, *, pixel_size_m: float, colors: Mapping[str, int] | None = None,
    val_fraction: float = 0.2, seed: int = 0, cache: str | Path | None = None,
    layout: ChipLayout | None = None, split: Mapping[str, str | Path] | None = None,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training and validation pairs (``{"image", "reference"}`` dicts, as ``pairs``/``val_pairs``
    of a training job) from a chip folder.

    With a ``split`` (``{"train": FILE, "val": FILE, "test": FILE}``, any of them) the files say
    which chips train and which validate (test chips are left out; without a ``train`` file every
    chip not named for val or test trains). Otherwise ``val_fraction`` of the chips (at least one
    when there are two or more) is held out whole, chosen with ``seed``.
    """
    if not pixel_size_m or pixel_size_m <= 0:
        raise InputError(f"chips need a declared pixel size in metres (pixel_size_m > 0), got {pixel_size_m!r}")
    chips = list_chips(folder, layout)
    named = {k: read_split(v, chips) for k, v in (split or {}).items()}
    unknown = set(named) - set(SPLITS)
    if unknown:
        raise InputError(f"chips split: unknown part(s) {', '.join(sorted(unknown))}; use train, val and test")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(named.get(a, set()) & named.get(b, set()))
        if both:
            raise InputError(f"chips split: {', '.join(both[:5])} in both the {a} and the {b} file; a chip is in one part")
    if "train" in named:
        chips = [c for c in chips if c.name in named["train"] or c.name in named.get("val", set())]
    chips = [c for c in chips if c.name not in named.get("test", set())]
    out_dir = Path(cache) if cache is not None else Path(folder) / ".geoseg-chips"
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [write_chip_pair(c, out_dir, float(pixel_size_m), colors) for c in chips]
    if "val" in named:
        val = {i for i, c in enumerate(chips) if c.name in named["val"]}
    else:
        n_val = 0 if len(pairs) < 2 or val_fraction <= 0 else max(1, round(val_fraction * len(pairs)))
        val = set(np.random.default_rng(seed).permutation(len(pairs))[:n_val].tolist())
    as_dict = lambda p: {"image": str(p[0]), "reference": str(p[1])}  # noqa: E731
    return ([as_dict(p) for i, p in enumerate(pairs) if i not in val],
            [as_dict(p) for i, p in enumerate(pairs) if i in val])  # fmt: skip


#: Keys of a ``chips:`` section that describe the folder's layout (shared by training and run jobs).
LAYOUT_KEYS = ("images", "masks", "image_suffix", "mask_suffix")


def layout_of(spec: Mapping[str, Any]) -> ChipLayout:
    """The :class:`ChipLayout` a ``chips:`` section gives (defaults for what it leaves out)."""
    return ChipLayout(**{k: spec[k] for k in LAYOUT_KEYS if spec.get(k) is not None})


def expand_chips(data: Any, base: Path) -> Any:
    """A training job dict with a ``chips:`` section turned into ``pairs``/``val_pairs``.

    ``chips: {folder, pixel_size_m, colors: {"#rrggbb": class id}, val_fraction, seed, images, masks,
    image_suffix, mask_suffix, split: {train, val, test}}``; the folder and split files are taken
    from ``base`` (the job file's folder) when relative. Pairs given as well are kept (the chips
    are added to them). Anything else is left to the job's own validation.
    """
    if not isinstance(data, dict) or "chips" not in data:
        return data
    spec = data["chips"]
    if not isinstance(spec, dict) or "folder" not in spec:
        raise InputError("chips: needs at least `folder` and `pixel_size_m` (and `colors` for RGB masks)")
    unknown = set(spec) - {"folder", "pixel_size_m", "colors", "val_fraction", "seed", "split", *LAYOUT_KEYS}
    if unknown:
        raise InputError(f"chips: unknown key(s) {', '.join(sorted(unknown))} (check the spelling)")
    folder = Path(spec["folder"])
    folder = folder if folder.is_absolute() else base / folder
    split = spec.get("split") or {}
    if not isinstance(split, dict):
        raise InputError("chips: split is a mapping of train/val/test to files of chip names")
    split = {k: v if Path(v).is_absolute() else base / v for k, v in split.items()}
    train_pairs, val_pairs = chip_pairs(
        folder, pixel_size_m=float(spec.get("pixel_size_m") or 0), colors=spec.get("colors"),
        val_fraction=float(spec.get("val_fraction", 0.2)), seed=int(spec.get("seed", 0)),
        layout=layout_of(spec), split=split,
    )
    out = {k: v for k, v in data.items() if k != "chips"}
    out["pairs"] = [*out.get("pairs", []), *train_pairs]
    out["val_pairs"] = [*out.get("val_pairs", []), *val_pairs]
    return out
