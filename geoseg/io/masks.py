"""Validity of input pixels: nodata values, GDAL masks, alpha bands and QA rules.

Masks say where a pixel is valid; they are never features. A file's alpha band is dropped
from its bands and marks pixels with alpha = 0 invalid; a GDAL per-dataset or per-band mask
(an internal ``.msk`` / TIFF mask) marks pixels invalid where it is 0; a nodata value marks
pixels invalid where any band equals it. A QA layer (a scene classification such as
Sentinel-2's SCL, or bit flags such as Landsat's QA_PIXEL) turns pixels into nodata through
a :class:`QARule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags

from geoseg.errors import InputError

#: How a file says which pixels are valid: nothing, a nodata value, an alpha band, or a GDAL mask band.
MaskKind = Literal["none", "nodata", "alpha", "gdal"]


#: Descriptions an alpha band may carry; any other name (``nir``) means a value band GDAL mislabelled.
ALPHA_NAMES = ("", "alpha", "mask", "a", "transparency", "opacity")
#: Descriptions that make a band alpha even where GDAL's colour interpretation does not say so (a file written
#: without the TIFF alpha flag, as some multispectral orthomosaics are: ``Blue ... Rededge, alpha``).
NAMED_ALPHA = ("alpha", "transparency", "opacity")


def alpha_band_indexes(ds: Any) -> tuple[int, ...]:
    """1-based indexes of the dataset's alpha bands (colour interpretation ``alpha``, or described ``alpha``).

    GDAL marks the 4th band of any 4-band 8-bit file written as RGB as alpha, so a red/green/blue/nir
    drone image often claims an alpha band; a band described with another name (``nir``) stays a value band.
    A band described ``alpha`` (``transparency``, ``opacity``) whose colour interpretation is undefined or gray
    is alpha all the same: its writer said so where the TIFF flag was not set.
    """
    out = []
    for i, ci in enumerate(ds.colorinterp):
        name = (ds.descriptions[i] or "").strip().lower()
        if (ci == ColorInterp.alpha and name in ALPHA_NAMES) or (
                name in NAMED_ALPHA and ci in (ColorInterp.undefined, ColorInterp.gray)):
            out.append(i + 1)
    return tuple(out)


def feature_band_indexes(ds: Any) -> tuple[int, ...]:
    """1-based indexes of the bands that carry values: every band but alpha bands."""
    alpha = set(alpha_band_indexes(ds))
    return tuple(i for i in range(1, ds.count + 1) if i not in alpha)


def mask_kind(ds: Any, bands: Sequence[int]) -> MaskKind:
    """Which validity rule the dataset's bands need (the cheapest one that is correct).

    An alpha band (by colour interpretation: GDAL itself derives a mask from alpha only for 2- and
    4-band files) is read directly; a band whose mask flags hold ``per_dataset`` (without alpha) or
    are empty (a per-band mask band) has a GDAL mask that must be read; bands whose flags are only
    ``nodata`` are masked by comparing values, which needs no second read.
    """
    kinds: set[str] = set()
    has_alpha = bool(alpha_band_indexes(ds))  # once: each look reads every band's colour and description
    all_flags = ds.mask_flag_enums
    for b in bands:
        flags = set(all_flags[b - 1])
        if has_alpha and (MaskFlags.alpha in flags or MaskFlags.all_valid in flags
                                       or MaskFlags.nodata in flags):
            kinds.add("alpha")
        elif MaskFlags.alpha in flags:
            continue  # GDAL's mask is a mislabelled value band (see alpha_band_indexes): not a mask
        elif not flags or MaskFlags.per_dataset in flags:
            kinds.add("gdal")
        elif MaskFlags.nodata in flags:
            kinds.add("nodata")
    if "gdal" in kinds:
        return "gdal"
    if "alpha" in kinds:
        return "alpha"
    return "nodata" if "nodata" in kinds or _usable_nodata(ds.nodata) is not None else "none"


def _usable_nodata(nodata: float | None) -> float | None:
    if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
        return None  # NaN is caught by the finiteness test
    return nodata


#: ``nodata=`` default of :func:`read_valid`: the file's own nodata value.
FILE_NODATA = "file"


def read_valid(ds: Any, bands: Sequence[int], kind: MaskKind, window: Any,
               nodata: float | None | str = FILE_NODATA) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` over ``window`` with their validity; alpha bands come in the same read (one decode).

    ``nodata``: the fill value (an input's ``nodata:`` overrides the file's), default the file's."""
    if kind != "alpha":
        data = ds.read(list(bands), window=window)
        return data, validity(ds, bands, kind, window, data, nodata)
    alpha = alpha_band_indexes(ds)
    both = ds.read(list(bands) + list(alpha), window=window)
    data = both[: len(bands)]
    valid = np.all(both[len(bands):] != 0, axis=0)
    return data, valid & validity(ds, bands, "nodata", window, data, nodata)


def validity(ds: Any, bands: Sequence[int], kind: MaskKind, window: Any, data: np.ndarray,
             nodata: float | None | str = FILE_NODATA) -> np.ndarray:
    """Valid pixels ``(h, w)`` of ``data`` (bands read over ``window``) under the file's rule.

    Alpha bands are read (alpha = 0 is invalid), GDAL masks with ``read_masks`` (mask = 0 is
    invalid; a file with both has both applied); a nodata value is applied as well, and non-finite
    values are always invalid.
    """
    valid = np.ones(data.shape[1:], dtype=bool)
    if kind in ("alpha", "gdal"):  # a GDAL mask hides the alpha band from GDAL's flags, not from the file
        for a in alpha_band_indexes(ds):
            valid &= ds.read(a, window=window) != 0
    if kind == "gdal":
        flags = set(ds.mask_flag_enums[bands[0] - 1])
        mask_bands = [bands[0]] if MaskFlags.per_dataset in flags else list(bands)
        masks = ds.read_masks(mask_bands, window=window)
        valid &= np.all(masks != 0, axis=0)
    fill = _usable_nodata(ds.nodata if isinstance(nodata, str) else nodata)
    if fill is not None:
        valid &= ~np.any(data == fill, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    return valid


@dataclass(frozen=True)
class QARule:
    """Which values of a QA layer make a pixel nodata: listed classes and/or set bit flags.

    >>> r = QARule(drop_values=(3, 8), drop_bits=())
    >>> r.invalid(np.array([[3, 4], [8, 1]], np.uint8)).tolist()
    [[True, False], [True, False]]
    >>> QARule(drop_values=(), drop_bits=(1, 3)).invalid(np.array([0b0010, 0b0100, 0b1000], np.uint16)).tolist()
    [True, False, True]
    """

    drop_values: tuple[int, ...] = ()
    drop_bits: tuple[int, ...] = ()

    def check(self, dtype: str, where: str) -> None:
        """Refuse bits the layer's integer type cannot hold, or a QA layer that is not integer."""
        kind = np.dtype(dtype).kind
        if kind not in "ui":
            raise InputError(f"{where} is {dtype}; a QA/mask layer must hold integer classes or flags")
        nbits = np.dtype(dtype).itemsize * 8
        bad = [b for b in self.drop_bits if not 0 <= b < nbits]
        if bad:
            raise InputError(
                f"QA rule of {where}: bit(s) {bad} are beyond its {dtype} type (bits 0..{nbits - 1})"
            )
        info = np.iinfo(np.dtype(dtype))
        out = [v for v in self.drop_values if not info.min <= v <= info.max]
        if out:
            raise InputError(f"QA rule of {where}: value(s) {out} cannot occur in a {dtype} layer")
        if not self.drop_values and not self.drop_bits:
            raise InputError(f"QA rule of {where} drops nothing; give drop_values or drop_bits")

    def invalid(self, qa: np.ndarray) -> np.ndarray:
        """Pixels this rule turns into nodata."""
        qa_int = qa.astype(np.int64, copy=False)
        out = np.isin(qa_int, np.asarray(self.drop_values, dtype=np.int64)) if self.drop_values else (
            np.zeros(qa.shape, dtype=bool)
        )
        if self.drop_bits:
            bits = 0
            for b in self.drop_bits:
                bits |= 1 << b
            out |= (qa_int & bits) != 0
        return out
