"""Units of input values: the per-band scale and offset that turn stored numbers into physical values.

Products often store reflectance as integers (Sentinel-2 L2A: ``DN × 0.0001 − 0.1``; Landsat C2 L2:
``DN × 0.0000275 − 0.2``) and say so in the GeoTIFF band metadata (GDAL's scale/offset) or in the STAC
item's ``raster:bands``. geoseg applies them on read, per band and in float32 (``value × scale + offset``)
before any feature or index, so NDVI is the NDVI of reflectance and thresholds are in the units the
product documents. An input's ``apply_scale: false`` keeps the stored numbers. A band whose scale is 1 and
offset 0 costs nothing: :attr:`Source.scales <geoseg.io.sources.Source.scales>` is then empty and the read
path does not touch the values. Nodata and validity are judged on the stored numbers, before scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Band metadata in which GDAL's Sentinel-2 driver (and files translated from it) states a band's offset
#: in digital numbers, and the dataset metadata holding the matching quantification value.
_S2_OFFSET_TAGS = (("BOA_ADD_OFFSET", "BOA_QUANTIFICATION_VALUE"), ("RADIO_ADD_OFFSET", "QUANTIFICATION_VALUE"))


def file_scaling(ds: Any, bands: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scales, offsets)`` of the dataset's ``bands`` (1-based) from GDAL's band metadata; empty when
    every band is stored in its own units (scale 1, offset 0).

    A band GDAL gives no scale or offset but that states a Sentinel-2 ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET``
    (what ``gdal_translate`` of a SAFE writes: processing baseline 04.00 stores reflectance + 0.1) takes
    ``(DN + offset) / quantification`` from those tags instead of being read as reflectance it is not.
    """
    scales = [float(ds.scales[b - 1]) for b in bands]
    offsets = [float(ds.offsets[b - 1]) for b in bands]
    for i, b in enumerate(bands):
        if scales[i] == 1.0 and offsets[i] == 0.0:
            scales[i], offsets[i] = _sentinel2_tags(ds, b)
    return normalised(scales, offsets)


def _sentinel2_tags(ds: Any, band: int) -> tuple[float, float]:
    """Scale and offset a band's Sentinel-2 tags state (1 and 0 when it has none)."""
    tags = ds.tags(band)
    for offset_tag, quantification_tag in _S2_OFFSET_TAGS:
        offset = _number(tags.get(offset_tag))
        if offset is None:
            continue
        quantification = _number(ds.tags().get(quantification_tag)) or _number(tags.get(quantification_tag))
        if quantification is None or quantification <= 0:
            return 1.0, offset  # the offset stated alone: digital numbers less the baseline's shift
        return 1.0 / quantification, offset / quantification
    return 1.0, 0.0


def unapplied_cf_units(ds: Any, bands: Sequence[int]) -> tuple[float, float] | None:
    """``(scale_factor, add_offset)`` a band's (or the file's) metadata states in netCDF/CF words where GDAL
    gives the band no scale or offset of its own, else ``None``.

    Files converted from netCDF or HDF (HLS, MODIS, many model outputs) can carry these tags without GDAL
    applying them. CF means ``stored × scale_factor + add_offset``, but MODIS's HDF-EOS uses the same names for
    ``scale_factor × (stored − add_offset)``, and some products give the reciprocal: which one a file follows
    cannot be told from it, so the input refuses such a band until it says (:func:`geoseg.io.scene.open_scene`).
    """
    for b in bands:
        if float(ds.scales[b - 1]) != 1.0 or float(ds.offsets[b - 1]) != 0.0:
            continue
        tags = {k.lower(): v for k, v in {**ds.tags(), **ds.tags(b)}.items()}
        scale, offset = _number(tags.get("scale_factor")), _number(tags.get("add_offset"))
        if (scale is not None and scale != 1.0) or (offset is not None and offset != 0.0):
            return (1.0 if scale is None else scale), (0.0 if offset is None else offset)
    return None


def fill_from_tags(ds: Any) -> float | None:
    """The fill value a Sentinel-2 file translated by GDAL states in its metadata (``SPECIAL_VALUE_NODATA``)."""
    return _number(ds.tags().get("SPECIAL_VALUE_NODATA"))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def normalised(scales: Sequence[float], offsets: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scales, offsets)`` as :class:`~geoseg.io.sources.Source` holds them: empty tuples for the identity."""
    if all(s == 1.0 for s in scales) and all(o == 0.0 for o in offsets):
        return (), ()
    return tuple(float(s) for s in scales), tuple(float(o) for o in offsets)


def apply_scaling(data: np.ndarray, scales: Sequence[float], offsets: Sequence[float]) -> np.ndarray:
    """``data × scale + offset`` per band ``(bands, h, w)``, in float32 (in place when ``data`` is float32)."""
    out = data if data.dtype == np.float32 else np.empty(data.shape, np.float32)
    for i, (s, o) in enumerate(zip(scales, offsets)):
        # the cast to float32 and the product in one pass (integers up to 2**24 are exact in float32)
        np.multiply(data[i], np.float32(s), out=out[i], dtype=np.float32, casting="unsafe")
        if o != 0.0:
            out[i] += np.float32(o)
    return out
