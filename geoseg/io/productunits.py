"""Units a product states outside its band files: a Landsat scene's MTL, a Sentinel-2 SAFE's MTD.

USGS delivers Landsat Collection 2 Level-2 scenes as one uint16 GeoTIFF per band
(``LC08_L2SP_190028_20230715_20230725_02_T1_SR_B4.TIF``) whose files declare no scale or offset:
surface reflectance is ``DN × 0.0000275 − 0.2`` and surface temperature ``DN × 0.00341802 + 149`` (K),
written only in the product's metadata file beside them (``..._MTL.json``, ``_MTL.txt`` or ``_MTL.xml``).
Read as stored numbers such a band gives an NDVI of digital numbers (0.32 where the reflectance NDVI is
0.69), without a word. So a band file named as such a product's SR or ST band takes its scale and offset
from the MTL of the same product id in its folder; without that MTL it is refused (``apply_scale: false``
reads the stored numbers on purpose). Files of another type than uint16 are taken to be converted
already and are left alone, as are the product's other layers (QA bands, ``ST_TRAD``...).

Landsat Level-1 scenes (Collection 1 or 2, ``LC08_L1TP_..._B4.TIF``; uint8 for Landsat 4-7, uint16 for 8-9) store
calibrated digital numbers whose fill is 0, declared nowhere. Their MTL gives, per reflective band, the
top-of-atmosphere reflectance ``DN × REFLECTANCE_MULT + REFLECTANCE_ADD`` before the sun-angle correction,
and the scene's ``SUN_ELEVATION``: such a band is read as ``(DN × M + A) / sin(SUN_ELEVATION)``, USGS's
top-of-atmosphere reflectance, a scale and offset like any other, and 0 as its fill. A thermal band (Landsat 8-9
``B10``/``B11``, Landsat 4-7 ``B6``) has no reflectance: it is read as the MTL's linear radiance (``RADIANCE_MULT``/``ADD``,
W/(m² sr µm)), since brightness temperature is not linear in the numbers.

Copernicus delivers Sentinel-2 L1C and L2A as a SAFE folder of JPEG 2000 band files
(``GRANULE/*/IMG_DATA/R10m/T33TWM_20240601T100031_B04_10m.jp2``) whose reflectance is
``(DN + ADD_OFFSET) / QUANTIFICATION_VALUE``, both written only in the product's ``MTD_MSIL2A.xml`` /
``MTD_MSIL1C.xml``; from processing baseline 04.00 (January 2022) the offset is −1000, so the digital numbers'
NDVI is not the reflectance's (0.45 for 0.71). Such a band takes both from the SAFE's MTD (searched from the
file's folder up to the SAFE's root), and its fill value too (``Special_Values``: NODATA is 0), which the JPEG
2000 files do not declare: the empty part of a tile at a swath's edge is then nodata, not a dark class.
Without the MTD the band is refused like a Landsat band without its MTL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from geoseg.errors import InputError

#: A Collection 2 Level-2 band file: product id, then ``SR_B<n>`` or ``ST_B<n>``.
LANDSAT_C2_L2 = re.compile(
    r"^(?P<product>L[COTEM]0\d_L2S[PR]_\d{6}_\d{8}_\d{8}_02_(?:T1|T2|RT))_(?P<kind>SR|ST)_B(?P<band>\d{1,2})\.TIF$",
    re.IGNORECASE)
#: The units USGS fixes for Collection 2 Level-2 (its MTLs state the same): SR ``DN × 0.0000275 − 0.2``, ST
#: ``DN × 0.00341802 + 149`` K; for an asset whose catalog gives none and whose MTL is not at hand (:mod:`geoseg.io.stac`).
LANDSAT_C2_L2_UNITS = {"SR": (2.75e-05, -0.2), "ST": (0.00341802, 149.0)}
#: A Collection 1 or 2 Level-1 band file: product id, then ``B<n>`` (Landsat 7's thermal ``B6_VCID_1``/``_2``).
_LANDSAT_L1 = re.compile(
    r"^(?P<product>L[COTEM]0\d_L1(?:TP|GT|GS)_\d{6}_\d{8}_\d{8}_0[12]_(?:T1|T2|RT))_B(?P<band>\d{1,2}(?:_VCID_[12])?)\.TIF$",
    re.IGNORECASE)
#: Where the MTL gives a band's scale and offset, per kind of band: its group, and the keys in it. The same
#: keys also appear in the Level-1 group (LEVEL1_RADIOMETRIC_RESCALING: top-of-atmosphere, 2e-5 and -0.1),
#: so a key is looked up only inside its group.
_KEYS = {"SR": ("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS", "REFLECTANCE_MULT_BAND_{n}", "REFLECTANCE_ADD_BAND_{n}"),
         "ST": ("LEVEL2_SURFACE_TEMPERATURE_PARAMETERS", "TEMPERATURE_MULT_BAND_ST_B{n}", "TEMPERATURE_ADD_BAND_ST_B{n}")}
#: The MTL's three encodings, tried in this order.
_MTL_SUFFIXES = ("_MTL.json", "_MTL.txt", "_MTL.xml")


#: A Sentinel-2 SAFE band file (L1C ``..._B04.jp2``, L2A ``..._B04_10m.jp2``).
_SENTINEL2_SAFE = re.compile(r"^T\d{2}[A-Z]{3}_\d{8}T\d{6}_B(?P<band>0[1-9]|1[0-2]|8A)(?:_[126]0m)?\.jp2$", re.IGNORECASE)
#: Sentinel-2's ``band_id`` of each band in the product metadata.
_S2_BAND_IDS = {b: i for i, b in enumerate(("01", "02", "03", "04", "05", "06", "07", "08", "8A", "09", "10", "11", "12"))}
#: How many folders above a band file the SAFE's root may be (``GRANULE/<granule>/IMG_DATA/R10m``).
_SAFE_DEPTH = 4


@dataclass(frozen=True)
class ProductUnits:
    """What a product's metadata says of one band file: ``value = stored × scale + offset``; its fill value."""

    scale: float
    offset: float
    nodata: float | None = None


def product_scaling(path: str, dtype: str) -> ProductUnits | None:
    """The units of a one-band file whose product states them outside it, else ``None``.

    Raises :class:`InputError` when the file is such a band but its product's metadata is missing or silent.
    """
    if dtype not in ("uint8", "uint16") or "://" in path:
        return None
    name = Path(path.split("?")[0]).name
    if (level1 := _LANDSAT_L1.match(name)) is not None:  # Landsat 4-7 Level-1 bands are uint8
        return _landsat_level1_scaling(path, level1["product"], level1["band"].upper())
    if dtype != "uint16":
        return None
    if (s2 := _SENTINEL2_SAFE.match(name)) is not None:
        return _sentinel2_scaling(path, s2["band"].upper())
    return _landsat_scaling(path)


def product_sensor(path: str) -> str | None:
    """The band table of the sensor a band file's own product metadata names, for a file named as delivered:
    a Landsat band's MTL (``SPACECRAFT_ID = "LANDSAT_8"`` → ``landsat8``), a Sentinel-2 SAFE band's MTD; else ``None``.

    This is the product's word, as a STAC item's ``platform`` is: it gives band numbers (``B4``) their roles
    without a job's ``sensor:``. A file renamed from its product id, or without its metadata beside it, has none.
    Landsat MSS (``LM0x``) has no band table here and gets none.
    """
    if "://" in path:
        return None
    name = Path(path.split("?")[0]).name
    if _SENTINEL2_SAFE.match(name):
        mtd = _safe_metadata(path)
        return "sentinel2" if mtd is not None and re.search(r"Sentinel-2[ABCD]\b", _read_text(str(mtd[0]))) else None
    match = _LANDSAT_L1.match(name) or LANDSAT_C2_L2.match(name)
    if match is None or match["product"][1].upper() == "M":
        return None
    mtl = _mtl_beside(path, match["product"])
    stated = re.search(r"\bSPACECRAFT_ID\b[\"'\s:=>]*LANDSAT_(\d)\b", _read_text(str(mtl))) if mtl else None
    if stated is None:
        return None
    if int(stated[1]) != int(match["product"][2:4]):
        raise InputError(f"{mtl} says LANDSAT_{stated[1]} but {name} is named as a {match['product'][:4]} product; "
                         "check that the MTL is this product's, or name the bands on the input (bands: [...])")
    return f"landsat{stated[1]}"


def _safe_metadata(path: str) -> tuple[Path, str] | None:
    """The SAFE's product metadata (``MTD_MSIL2A.xml`` or ``MTD_MSIL1C.xml``) above a band file, and its name."""
    folders = [Path(path).parent, *list(Path(path).parent.parents)[:_SAFE_DEPTH]]
    return next(((f / n, n) for f in folders for n in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml") if (f / n).is_file()), None)


def _sentinel2_scaling(path: str, band: str) -> ProductUnits:
    """``1 / QUANTIFICATION_VALUE``, ``ADD_OFFSET / QUANTIFICATION_VALUE`` and NODATA of the band from its SAFE's MTD."""
    found = _safe_metadata(path)
    if found is None:
        raise InputError(f"{path} is a Sentinel-2 band, stored as digital numbers whose quantification and offset (-1000 "
                         "from processing baseline 04.00) are in the product's metadata, but no MTD_MSIL2A.xml or "
                         "MTD_MSIL1C.xml is in its folder or the SAFE above it; keep the band in its SAFE, give the input "
                         "its units (scale: 0.0001, offset: -0.1 from baseline 04.00), or set apply_scale: false "
                         "to use the stored numbers")
    mtd, name = found
    text = _read_text(str(mtd))
    level2 = name == "MTD_MSIL2A.xml"  # early Sen2Cor products prefix their tags with L2A_
    quantification = re.search(rf"<(?:L2A_)?{'BOA_' if level2 else ''}QUANTIFICATION_VALUE\b[^>]*>\s*([0-9.Ee+-]+)\s*<", text)
    q = _positive(quantification[1]) if quantification else None
    if q is None:
        raise InputError(f"{mtd} gives no {'BOA_' if level2 else ''}QUANTIFICATION_VALUE for {Path(path).name}; check "
                         "that it is this product's metadata, or set apply_scale: false on the input")
    tag = "BOA_ADD_OFFSET" if level2 else "RADIO_ADD_OFFSET"
    offsets = dict(re.findall(rf"<{tag}\b[^>]*\bband_id=\"(\d+)\"[^>]*>\s*([0-9.Ee+-]+)\s*<", text))
    if offsets and str(_S2_BAND_IDS[band]) not in offsets:
        raise InputError(f"{mtd} lists {tag} for some bands but not band_id {_S2_BAND_IDS[band]} (B{band}); check "
                         "that it is this product's metadata, or set apply_scale: false on the input")
    offset = offsets.get(str(_S2_BAND_IDS[band]), "0")  # none listed: a baseline before 04.00
    fill = re.search(r"SPECIAL_VALUE_TEXT>\s*NODATA\s*</(?:L2A_)?SPECIAL_VALUE_TEXT>\s*"
                     r"<(?:L2A_)?SPECIAL_VALUE_INDEX>\s*(\d+)\s*<", text)
    try:
        return ProductUnits(1.0 / q, float(offset) / q, float(fill[1]) if fill else None)
    except ValueError:
        raise InputError(f"{mtd}: {tag} of band_id {_S2_BAND_IDS[band]} is {offset!r}, not a number") from None


def _positive(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _landsat_scaling(path: str) -> ProductUnits | None:
    match = LANDSAT_C2_L2.match(Path(path.split("?")[0]).name)
    if match is None:
        return None
    product, kind, band = match["product"], match["kind"].upper(), int(match["band"])
    mtl = _mtl_beside(path, product)
    if mtl is None:
        raise InputError(f"{path} is a Landsat Collection 2 Level-2 band, stored as digital numbers whose scale is "
                         f"in the product's metadata, but {product}_MTL.json (or .txt, .xml) is not beside it; put it "
                         "there, give the input its units (SR: scale: 0.0000275, offset: -0.2), or set "
                         "apply_scale: false to use the stored numbers")
    group, mult, add = (key.format(n=band) for key in _KEYS[kind])
    values = _mtl_numbers(str(mtl), group)
    if mult not in values or add not in values:
        raise InputError(f"{mtl} gives no {mult} / {add} in {group} for {Path(path).name}; check that it is this "
                         "product's MTL, or set apply_scale: false on the input to use the stored numbers")
    return ProductUnits(values[mult], values[add])  # the files declare their fill (0) themselves


def _mtl_beside(path: str, product: str) -> Path | None:
    """The product's MTL in the band file's folder, in the first of its encodings found."""
    folder = Path(path).parent
    return next((folder / f"{product}{s}" for s in _MTL_SUFFIXES if (folder / f"{product}{s}").is_file()), None)


def _landsat_level1_scaling(path: str, product: str, band: str) -> ProductUnits:
    """Top-of-atmosphere reflectance of a reflective Level-1 band, ``(DN × M + A) / sin(SUN_ELEVATION)``,
    or the linear radiance of a thermal one; fill 0 either way."""
    mtl = _mtl_beside(path, product)
    if mtl is None:
        raise InputError(f"{path} is a Landsat Level-1 band, stored as digital numbers whose top-of-atmosphere "
                         f"reflectance needs the product's metadata, but {product}_MTL.txt (or .json, .xml) is not "
                         "beside it; put it there, give the input its units (scale:, offset:), or set apply_scale: "
                         "false to use the stored numbers")
    # Collection 2 names the group LEVEL1_RADIOMETRIC_RESCALING, Collection 1 RADIOMETRIC_RESCALING
    values = _mtl_numbers(str(mtl), "RADIOMETRIC_RESCALING")
    reflectance = (f"REFLECTANCE_MULT_BAND_{band}", f"REFLECTANCE_ADD_BAND_{band}")
    radiance = (f"RADIANCE_MULT_BAND_{band}", f"RADIANCE_ADD_BAND_{band}")
    if all(k in values for k in reflectance):
        elevation = _mtl_numbers(str(mtl), "IMAGE_ATTRIBUTES").get("SUN_ELEVATION")
        if elevation is None or not 0 < elevation <= 90:
            raise InputError(f"{mtl} gives no SUN_ELEVATION above the horizon in IMAGE_ATTRIBUTES (got {elevation}), "
                             f"which {Path(path).name}'s top-of-atmosphere reflectance needs; check that it is this "
                             "product's MTL, or set apply_scale: false on the input")
        sine = math.sin(math.radians(elevation))
        return ProductUnits(values[reflectance[0]] / sine, values[reflectance[1]] / sine, nodata=0.0)
    if all(k in values for k in radiance):  # a thermal band: radiance, linear in the numbers
        return ProductUnits(values[radiance[0]], values[radiance[1]], nodata=0.0)
    raise InputError(f"{mtl} gives neither REFLECTANCE_ nor RADIANCE_MULT/ADD_BAND_{band} in its radiometric rescaling "
                     f"for {Path(path).name}; check that it is this product's MTL, or set apply_scale: false on the input")


@lru_cache(maxsize=64)
def _read_text(path: str) -> str:
    """A product's metadata file as text (read once per process: every band of a product shares it)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def _mtl_numbers(path: str, group: str) -> dict[str, float]:
    r"""Every ``KEY = number`` of one group of an MTL, whichever of its encodings it is in.

    The group runs from its name to the name's next occurrence (``END_GROUP = NAME`` in the ODL text,
    ``</NAME>`` in XML) or, in JSON, to the closing brace of its object (its values are flat).

    >>> import tempfile, os
    >>> mtl = os.path.join(tempfile.mkdtemp(), "x_MTL.txt")
    >>> _ = open(mtl, "w").write("GROUP = A\n  K = 1.5\nEND_GROUP = A\nGROUP = B\n  K = -2E-05\nEND_GROUP = B\n")
    >>> _mtl_numbers(mtl, "A"), _mtl_numbers(mtl, "B"), _mtl_numbers(mtl, "C")
    ({'K': 1.5}, {'K': -2e-05}, {})
    """
    text = _read_text(path)
    start = text.find(group)
    if start < 0:
        return {}
    text = text[start + len(group):]
    ends = [i for i in (text.find(group), text.find("}")) if i >= 0]
    text = text[:min(ends)] if ends else text
    pairs = re.findall(r"\b([A-Z][A-Z0-9_]*)\b[\"'\s:=>]*(-?\d+(?:\.\d*)?(?:[Ee][-+]?\d+)?)", text)
    return {key: float(number) for key, number in pairs}
