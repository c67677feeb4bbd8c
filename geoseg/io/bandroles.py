"""Which band is which: the spectral role of each band of a scene, from what the data says.

A band's *role* is a STAC ``eo:bands`` common name (:data:`COMMON_NAMES`: ``red``, ``nir``, ``nir08``...).
Indices and expressions ask for roles, never for positions, so the same job runs on an RGB orthophoto, on
band files and on a STAC item. Where a role comes from, first match wins:

1. the input entry's ``bands: [red, green, blue, nir]`` (the user's word);
2. the STAC asset's ``eo:bands`` common name;
3. the band's description (``red``, ``NIR``; a sensor band number such as ``B04`` only with a known sensor);
4. GDAL's colour interpretation (Red/Green/Blue of an RGB orthophoto, and GDAL 3.10's NIR, RedEdge...);
5. for a one-band file: the entry's ``name:``, then the file name's last recognisable token (``..._B4``, ``red``).

Sensor band numbers (``B4``, ``b8``, ``B05``) mean different bands on different sensors (``B8`` is NIR on
Sentinel-2, panchromatic on Landsat 8), so they map to roles only through the sensor's table
(:data:`SENSORS`): the STAC item's ``platform``/``constellation``, the job's ``sensor:``, or a ``B8A`` among the
names (a band only Sentinel-2 has). Otherwise a role asked for is refused with a line saying how to name it.

The role ``nir`` is the broad NIR band (Sentinel-2 B08) and, where a scene has none, the narrow ``nir08``
(Sentinel-2 B8A, Landsat 5-9's NIR band): :data:`ROLE_ACCEPTS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import BandRoleError

#: STAC ``eo:bands`` common names: the roles a band may have.
COMMON_NAMES = ("coastal", "blue", "green", "red", "yellow", "rededge", "nir", "nir08", "nir09", "cirrus",
                "swir16", "swir22", "lwir", "lwir11", "lwir12", "pan")

#: Other spellings of roles found in band descriptions and file names (lower case).
SYNONYMS = {"r": "red", "g": "green", "b": "blue", "nir1": "nir", "swir1": "swir16", "swir2": "swir22",
            "panchromatic": "pan", "red_edge": "rededge", "red-edge": "rededge", "near_infrared": "nir",
            "near-infrared": "nir", "near_infra_red": "nir", "thermal": "lwir"}

#: Centre wavelengths (nm) each role spans (STAC's common-name table), for a name that gives one
#: (MicaSense's ``Red edge-705``, ``Red (668nm)``): the name is believed only where its wavelength agrees.
_ROLE_NM = {"coastal": (400, 450), "blue": (450, 500), "green": (500, 600), "yellow": (580, 620), "red": (600, 700),
            "pan": (500, 700), "rededge": (700, 790), "nir": (750, 1000), "nir08": (750, 900), "nir09": (850, 1050)}
#: How far outside its role's span a stated wavelength may lie (MicaSense's ``Blue-444`` is blue, by 6 nm).
_NM_SLACK = 20
_WITH_WAVELENGTH = re.compile(r"^(?P<name>[a-z][a-z _-]*?)[\s_(-]*(?P<nm>\d{3,4})(?:\.\d+)?\s*(?:nm)?\)?$", re.IGNORECASE)

#: A role asked for → the roles that may play it, in order of preference.
ROLE_ACCEPTS = {"nir": ("nir", "nir08")}

#: Sensor band numbers (``b`` + number, lower case) → role, from each sensor's band table.
_LANDSAT_OLI = {"b1": "coastal", "b2": "blue", "b3": "green", "b4": "red", "b5": "nir08", "b6": "swir16",
                "b7": "swir22", "b8": "pan", "b9": "cirrus", "b10": "lwir11", "b11": "lwir12"}
_LANDSAT_TM = {"b1": "blue", "b2": "green", "b3": "red", "b4": "nir08", "b5": "swir16", "b6": "lwir",
               "b7": "swir22"}
SENSORS: dict[str, dict[str, str]] = {
    "sentinel2": {"b1": "coastal", "b2": "blue", "b3": "green", "b4": "red", "b5": "rededge", "b6": "rededge",
                  "b7": "rededge", "b8": "nir", "b8a": "nir08", "b9": "nir09", "b10": "cirrus", "b11": "swir16",
                  "b12": "swir22"},
    "landsat8": _LANDSAT_OLI,
    "landsat9": _LANDSAT_OLI,
    "landsat7": {**_LANDSAT_TM, "b8": "pan"},
    "landsat5": _LANDSAT_TM,
    "landsat4": _LANDSAT_TM,
}

#: GDAL colour interpretations (rasterio ``ColorInterp`` names) that say a role.
_COLORINTERP = {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "pan": "pan",
                "coastal": "coastal", "rededge": "rededge", "nir": "nir", "lwir": "lwir"}

_NUMBERED = re.compile(r"^(?:b|band)[ _-]?0*(\d{1,2})(a?)$", re.IGNORECASE)
_TOKENS = re.compile(r"[_\-. ]+")
#: File-name prefixes of products whose sensor is known from the name (a hint in messages only).
_PRODUCT_HINTS = (("LC08", "landsat8"), ("LC09", "landsat9"), ("LO08", "landsat8"), ("LE07", "landsat7"),
                  ("LT05", "landsat5"), ("LT04", "landsat4"), ("S2A", "sentinel2"), ("S2B", "sentinel2"),
                  ("S2C", "sentinel2"))


@dataclass(frozen=True)
class BandInfo:
    """One band of the scene: its name, layer, role (``None``: none known) and where the role came from.

    ``number``: a sensor band number the band is named by (``b4``) that no sensor table resolved;
    ``scale``/``offset``: applied to its values on read (1 and 0: none); ``nodata``: its fill value.
    """

    name: str
    layer: str = ""
    label: str = ""
    role: str | None = None
    source: str = ""
    number: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "layer": self.layer, "role": self.role, "role_from": self.source or None,
                "scale": self.scale, "offset": self.offset, "nodata": self.nodata}


def normalise(name: str | None) -> str | None:
    """The role a name spells (common name or synonym, any case), else ``None``."""
    if not name:
        return None
    key = name.strip().lower().replace(" ", "_")
    if key in COMMON_NAMES:
        return key
    return SYNONYMS.get(key)


def band_number(name: str | None) -> str | None:
    """``b`` + the sensor band number a name spells (``B04`` → ``b4``, ``B8A`` → ``b8a``), else ``None``."""
    m = _NUMBERED.match((name or "").strip())
    return f"b{int(m.group(1))}{m.group(2).lower()}" if m else None


def sensor_of(text: str | None) -> str | None:
    """The sensor table of a STAC ``platform``/``constellation`` or a job's ``sensor:`` (``landsat-8`` →
    ``landsat8``, ``sentinel-2a`` → ``sentinel2``), ``None`` when there is no table for it."""
    key = re.sub(r"[^a-z0-9]", "", (text or "").lower())
    if key.startswith("sentinel2"):
        return "sentinel2"
    return key if key in SENSORS else None


def check_role_list(roles: Iterable[str | None]) -> None:
    """Refuse names in an input's ``bands:`` that are not roles (a typo would silently drop a role)."""
    bad = [r for r in roles if r is not None and normalise(r) is None]
    if bad:
        raise ValueError(f"bands {bad} are not band roles; use STAC common names ({', '.join(COMMON_NAMES)}) "
                         "or null for a band without one")


def role_at_wavelength(name: str | None) -> str | None:
    """The role a name followed by a centre wavelength in nm spells, where the wavelength agrees with it.

    >>> [role_at_wavelength(n) for n in ("Red edge-705", "Red (668nm)", "NIR 842", "Blue-444", "Red 842", "B 04")]
    ['rededge', 'red', 'nir', 'blue', None, None]
    """
    m = _WITH_WAVELENGTH.match((name or "").strip())
    role = normalise(m["name"].strip(" _-(")) if m else None
    if m is None or role not in _ROLE_NM:
        return None
    low, high = _ROLE_NM[role]
    return role if low - _NM_SLACK <= int(m["nm"]) <= high + _NM_SLACK else None


def role_from_name(name: str | None, sensor: str | None) -> tuple[str | None, str | None]:
    """(role, unresolved band number) a name gives: a common name (with its wavelength, where it gives one that
    agrees), or a band number through ``sensor``."""
    role = normalise(name) or role_at_wavelength(name)
    if role:
        return role, None
    number = band_number(name)
    if number is None:
        return None, None
    table = SENSORS.get(sensor or "", {})
    return (table[number], None) if number in table else (None, number)


def role_from_stem(path: str, sensor: str | None) -> tuple[str | None, str | None, str]:
    """(role, unresolved number, token) of a band file's name: its last token that names a band.

    Two last tokens that name a band together win over the last alone, so Pix4D's
    ``..._reflectance_red edge.tif`` is red edge, not red (it sorts before ``..._red.tif``, so it would play red).

    >>> role_from_stem("field_transparent_reflectance_red edge.tif", None)[:2], role_from_stem("x_red.tif", None)[:2]
    (('rededge', None), ('red', None))
    """
    stem = Path(path.split("?")[0]).stem
    tokens = _TOKENS.split(stem)
    candidates = [stem]
    for i in reversed(range(len(tokens))):
        pair = f"{tokens[i - 1]}_{tokens[i]}" if i > 0 else ""
        candidates += [pair, tokens[i]] if normalise(pair) else [tokens[i]]  # a role's name, never a band number
    for token in candidates:
        role, number = role_from_name(token, sensor)
        if role or number:
            return role, number, token
    return None, None, ""


def sensor_hint(paths: Iterable[str]) -> str | None:
    """The sensor a product's file name suggests (``LC08_...`` → ``landsat8``), for messages only."""
    for p in paths:
        stem = Path(p).name.upper()
        for prefix, sensor in _PRODUCT_HINTS:
            if stem.startswith(prefix):
                return sensor
    return None


def find_role(bands: Sequence[BandInfo], role: str) -> int:
    """Position of the first band playing ``role`` (``nir`` accepts ``nir08`` where no ``nir`` is).

    Raises :class:`BandRoleError` saying how to name the bands when none does.
    """
    wanted = normalise(role) or role.lower()
    for accepted in ROLE_ACCEPTS.get(wanted, (wanted,)):
        for i, b in enumerate(bands):
            if b.role == accepted:
                return i
    raise BandRoleError(_missing_role(bands, wanted))


def _missing_role(bands: Sequence[BandInfo], role: str) -> str:
    listed = ", ".join(f"{b.name} ({b.role})" if b.role else b.name for b in bands[:20])
    more = f" and {len(bands) - 20} more" if len(bands) > 20 else ""
    numbered = [b.name for b in bands if b.number]
    if numbered:
        hint = sensor_hint(b.layer for b in bands)
        sensors = f"`sensor: {hint}` (the file names say so)" if hint else f"`sensor: {' | '.join(SENSORS)}`"
        return (f"no band has the role {role!r}: bands {', '.join(numbered[:12])} are named by sensor band numbers, "
                f"which differ between sensors (B8 is NIR on Sentinel-2, panchromatic on Landsat 8); add "
                f"{sensors} to the job, or name the input's bands (`bands: [blue, green, red, nir]`)")
    return (f"no band has the role {role!r} among {listed}{more}; name the bands in the job (input key "
            f"`bands: [red, green, blue, nir]`, or `name: {role}` for a one-band file), or set band descriptions "
            "(STAC common names) in the files")


def find_band(bands: Sequence[BandInfo], wanted: str) -> int:
    """Position of the band ``wanted`` names: a band name (``B08``, ``scene_0:B08``), ``layer.band``
    (a band or role within one layer: ``t1.nir``, ``red.b1``) or a role (``nir``).

    A bare name that several layers share (``b1`` of three band files) is refused: write ``layer.b1``.
    """
    for i, b in enumerate(bands):
        if b.name == wanted:
            return i
    if "." in wanted:
        layer, _, rest = wanted.rpartition(".")
        inside = [(i, b) for i, b in enumerate(bands) if b.layer == layer]
        if not inside:
            raise BandRoleError(f"{wanted!r}: no layer {layer!r}; layers are {sorted({b.layer for b in bands})}")
        for i, b in inside:
            if b.label == rest:
                return i
        sub = [b for _, b in inside]
        return inside[find_role(sub, rest)][0]
    same_label = [i for i, b in enumerate(bands) if b.label == wanted]
    if len(same_label) == 1:
        return same_label[0]
    if len(same_label) > 1 and normalise(wanted) is None:
        layers = ", ".join(f"{bands[i].layer}.{wanted}" for i in same_label)
        raise BandRoleError(f"band {wanted!r} is in several layers; write one of {layers}")
    if normalise(wanted) is not None:
        return find_role(bands, wanted)
    raise BandRoleError(f"band {wanted!r} not found among {[b.name for b in bands]} "
                        f"(roles: {sorted({b.role for b in bands if b.role})})")


def bands_from_names(names: Sequence[str], sensor: str | None = None) -> tuple[BandInfo, ...]:
    """Bands known by name only (a notebook's list, a checkpoint's): roles from the names, sensor band numbers
    through ``sensor`` (or Sentinel-2's table when ``B8A`` is among them). ``layer:band`` names keep the layer."""
    labels = [n.rpartition(":") for n in names]
    sensor = sensor or implied_sensor(lbl for _, _, lbl in labels)
    out = []
    for name, (layer, _, label) in zip(names, labels):
        role, number = role_from_name(label, sensor)
        out.append(BandInfo(name, layer, label, role, "name" if role else "", number))
    return tuple(out)


def implied_sensor(labels: Iterable[str]) -> str | None:
    """``sentinel2`` when a band is named ``B8A`` (only Sentinel-2's MSI has it), else ``None``."""
    return "sentinel2" if any(band_number(lbl) == "b8a" for lbl in labels) else None


@dataclass(frozen=True)
class BandEvidence:
    """What one band's data says of it, gathered by :func:`geoseg.io.scene.open_scene`."""

    label: str
    described: bool = False
    colorinterp: str = ""
    common_name: str | None = None
    asset_key: str | None = None


def band_role(ev: BandEvidence, sensor: str | None, single: bool, entry_name: str | None,
              path: str) -> tuple[str | None, str, str | None]:
    """(role, where it came from, unresolved sensor band number) of one band, in the order of the module doc
    (the entry's ``bands:`` is applied by the caller)."""
    unresolved: str | None = None
    candidates: list[tuple[str | None, str]] = [(ev.common_name, "stac eo:bands")]
    if ev.asset_key:
        candidates.append((ev.asset_key, "stac asset key"))
    if ev.described:
        candidates.append((ev.label, "description"))
    for name, source in candidates:
        role, number = role_from_name(name, sensor)
        if role:
            return role, source if band_number(name) is None else f"{source} ({sensor} {name})", None
        unresolved = unresolved or number
    ci = _COLORINTERP.get(ev.colorinterp.lower())
    if ci:
        return ci, "colour interpretation", None
    if single:
        role, number = role_from_name(entry_name, sensor)
        if role:
            return role, "entry name", None
        unresolved = unresolved or number
        role, number, token = role_from_stem(path, sensor)
        if role:
            return role, f"file name ({token})", None
        unresolved = unresolved or number
    return None, "", unresolved
