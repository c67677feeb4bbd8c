"""Opening the inputs of a job as one scene on one grid: validation up front, windowed reads in tasks.

A *scene* is the job's grid (:class:`~geoseg.geo.GeoGrid`) plus the layers composed onto it.
Each ``inputs`` entry is a path, a glob, a list of paths, or a mapping
``{path | stac, kind, resampling, name, assets}``:

* ``kind: bands`` - each file is a layer and their bands are stacked (several dates of one tile,
  band files of one product); ``kind: mosaic`` - the files are tiles of one layer, composed onto the
  grid, first file (sorted order) with a valid pixel wins. ``auto`` (the default, and what a plain
  string means): files that share exactly one grid stack their bands, otherwise they are a mosaic.
  Separate entries always stack.
* Masks are validity, never features (:mod:`geoseg.io.masks`): alpha bands are dropped, GDAL masks and
  nodata values mark invalid pixels; ``masks:`` entries (QA layers with a rule) add more.
* The grid (:func:`geoseg.io.gridspec.job_grid`) is the job's ``grid:`` request, by default the first
  input's CRS, the finest input resolution and the union footprint of the inputs.

Everything a task needs is in the small, picklable :class:`Scene`; :meth:`Scene.for_window` trims it to
the files that meet a window, so a mosaic of thousands of tiles does not travel with every task.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np

from geoseg.errors import InputError, MissingFileError
from geoseg.geo import ChunkGrid, GeoGrid, Window, aligned_chunk_size
from geoseg.io.bandroles import (
    SENSORS,
    BandEvidence,
    BandInfo,
    band_role,
    implied_sensor,
    normalise,
    sensor_hint,
    sensor_of,
)
from geoseg.io.entries import InputEntry, MaskEntry, as_input_entry, as_mask_entry
from geoseg.io.fill import warn_border_fill
from geoseg.io.masks import QARule
from geoseg.io.mosaic import FootprintIndex, Layer, check_tiles_agree, describe_tiles, read_layer
from geoseg.io.opener import Trust, allowing, check_name, current_trust
from geoseg.io.sources import (
    MAX_SIDE,
    RESAMPLING,
    Source,
    describe_source,
    place,
    refuse_palette,
    refuse_unapplied_units,
    refuse_unnamed_band,
)
from geoseg.io.stac import StacFile

log = logging.getLogger(__name__)

__all__ = ["Scene", "InputEntry", "MaskEntry", "open_scene", "read_window", "open_scene_xarray",
           "expand_inputs", "MAX_SIDE"]

#: Block assumed for sampling when no file lies on the grid (all are warped).
_DEFAULT_BLOCK = (512, 512)


@dataclass(frozen=True)
class Scene:
    """The inputs of a job on its grid: feature layers, mask layers, band names."""

    grid: GeoGrid
    layers: tuple[Layer, ...]
    band_names: tuple[str, ...]
    block: tuple[int, int]
    masks: tuple[Layer, ...] = ()
    paths: tuple[str, ...] = ()
    sizes_bytes: tuple[int, ...] = field(default=())
    #: Each band's name, layer, role (``red``, ``nir``...), scale/offset and fill (:mod:`geoseg.io.bandroles`).
    bands: tuple[BandInfo, ...] = ()

    @property
    def count(self) -> int:
        return len(self.band_names)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (the mean of x and y sizes)."""
        return self.grid.resolution

    # Shorthands for the grid's parts (the grid is the one value; these read it).
    @property
    def crs(self):  # rasterio CRS
        return self.grid.crs

    @property
    def transform(self):  # affine.Affine
        return self.grid.transform

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    def chunk_grid(self, chunk: int) -> ChunkGrid:
        """The processing grid: ``chunk`` rounded to a multiple of the files' internal blocks."""
        size = aligned_chunk_size(chunk, self.block)
        return self.grid.tiles(size)

    @cached_property
    def _index(self) -> FootprintIndex:
        return FootprintIndex(self.layers + self.masks)

    def for_window(self, window: Window) -> Scene:
        """This scene with only the files meeting ``window``: what one task needs (built on the client)."""
        if all(len(layer.sources) <= 1 for layer in self.layers + self.masks):
            return self
        trimmed = self._index.subset(self.layers + self.masks, window)
        n = len(self.layers)
        # the scene's file list (for the run record and the resume key) stays here: a task's copy
        # names only its own files, so its payload does not grow with the number of tiles
        mine = [s for layer in trimmed for s in layer.sources]
        return replace(self, layers=trimmed[:n], masks=trimmed[n:], paths=tuple(s.path for s in mine),
                       sizes_bytes=tuple(s.size_bytes for s in mine))

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # the index stays on the client

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def expand_inputs(patterns: Sequence[Any] | str, allow_gdal_virtual: bool = False) -> list[str]:
    """Expand globs in order, keep URLs as they are, and refuse paths that do not exist.

    Entries may be strings or ``inputs:`` mappings (their ``path``). GDAL virtual paths
    (``/vsi...``, VRT) are refused unless asked for, so a job file cannot make GDAL open
    arbitrary resources behind the user's back.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    texts: list[str] = []
    for p in patterns:
        texts.extend(as_input_entry(p).paths)
    out: list[str] = []
    for text in texts:
        check_virtual(text, allow_gdal_virtual)
        if "://" in text:
            out.append(text)
            continue
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if Path(text).exists() else [])
        if not matches:
            raise MissingFileError(f"input {text!r} matches no file; check the path (relative paths are from the job file)")
        out.extend(matches)
    if not out:
        raise InputError("no input files given")
    return out


def check_virtual(text: str, allow_gdal_virtual: bool) -> None:
    """Refuse GDAL virtual paths, VRTs and connection strings unless the job allows them (URLs are inputs)."""
    check_name(text, "input", url_ok=True, trust=Trust(allow_gdal_virtual=allow_gdal_virtual))


def _stem_name(paths: Sequence[str]) -> str:
    """A layer's default name: the file stem, or what the tiles' stems share."""
    stems = [Path(p.split("?")[0]).stem for p in paths]
    if len(stems) == 1:
        return stems[0]
    import os

    common = os.path.commonprefix(stems).rstrip("_-. ")
    return common or stems[0]


@dataclass
class _RawLayer:
    """A layer before it is placed: its entry, files and what a STAC catalog says of each file."""

    name: str
    sources: list[Source]
    entry: InputEntry
    stac: list[StacFile | None]
    asset_key: str | None = None


def _layers_of_entry(entry: InputEntry, allow_gdal_virtual: bool) -> list[_RawLayer]:
    """The layers an entry makes, its ``nodata:`` and ``apply_scale`` applied to their files."""
    if entry.kind not in ("auto", "mosaic", "bands"):
        raise InputError(f"input kind {entry.kind!r} is not one of auto, mosaic, bands")
    if entry.resampling is not None and entry.resampling not in RESAMPLING:
        raise InputError(f"resampling {entry.resampling!r} is not one of {', '.join(RESAMPLING)}")
    if entry.stac:
        from geoseg.io.stac import stac_assets

        out = []
        for asset in stac_assets(entry.stac, entry.assets or (), allow_gdal_virtual):
            for f in asset.files:
                check_virtual(f.href, allow_gdal_virtual)
            sources = describe_tiles([f.href for f in asset.files])
            if asset.band and all(s.count == 1 for s in sources):
                sources = [replace(s, descriptions=(asset.band,), described=(True,)) for s in sources]
            files: list[StacFile | None] = [f.for_bands(s.count, entry.apply_scale)
                                            for s, f in zip(sources, asset.files)]
            sources = [_as_entry_says(entry, s, f) for s, f in zip(sources, files)]
            out.append(_RawLayer(asset.key, sources, entry, files, asset.key))
        return out
    paths = expand_inputs(list(entry.paths), allow_gdal_virtual)
    sources = [_as_entry_says(entry, s, None) for s in describe_tiles(paths)]
    one_grid = all(s.grid.same_as(sources[0].grid) for s in sources[1:])
    if entry.kind == "bands" or (entry.kind == "auto" and one_grid):
        return [_RawLayer(entry.name if entry.name and len(sources) == 1 else _stem_name([s.path]), [s], entry, [None])
                for s in sources]
    if entry.kind == "auto":  # kind: mosaic is the job's word that they are tiles
        refuse_different_bands(entry, sources)
    return [_RawLayer(entry.name or _stem_name(paths), sources, entry, [None] * len(sources))]


def refuse_different_bands(entry: InputEntry, sources: Sequence[Source]) -> None:
    """Refuse tiles of one mosaic whose files name different bands (``..._reflectance_red.tif`` and ``..._nir.tif``,
    ``..._B4.TIF`` and ``..._B5.TIF``): per-band files whose extents differ by a few pixels are not on one grid, so
    ``kind: auto`` would take them for tiles and composite red with NIR into one band."""
    named: dict[int, tuple[str, str]] = {}  # band position -> (what the first file that names it says, its path)
    for src in sources:
        for k in range(src.count):
            ev = BandEvidence(label=src.descriptions[k], described=bool(src.described[k]) if src.described else True,
                              colorinterp=src.colorinterp[k] if src.colorinterp else "")
            role, _, number = band_role(ev, None, src.count == 1, entry.name, src.path)
            says = role or number
            if says is None:
                continue
            first = named.setdefault(k, (says, src.path))
            if first[0] != says:
                where = "" if src.count == 1 else f"band {k + 1} of "
                raise InputError(f"input {', '.join(entry.paths)}: {where}{Path(first[1]).name} is {first[0]} but "
                                 f"{where}{Path(src.path).name} is {says}, so they are not tiles of one mosaic; to "
                                 "stack them as bands, set kind: bands on the input (files on other grids are warped "
                                 "onto the job's grid); if they are tiles all the same, kind: mosaic")


def _as_entry_says(entry: InputEntry, src: Source, stac: StacFile | None) -> Source:
    """The file with the entry's fill value and units: ``nodata:`` over the file's (and over STAC's); the
    entry's ``scale:``/``offset:`` over all others, STAC ``raster:bands`` scale/offset over the file's, else the
    product's own (:mod:`geoseg.io.productunits`) for a file that states none; none with ``apply_scale: false``."""
    if entry.bands is None:  # bands: [...] is the job's word on what each band is
        refuse_palette(src)
        if stac is None:
            refuse_unnamed_band(src)
    changes: dict[str, Any] = {}
    nodata = entry.nodata
    if src.band_nodata and nodata is None:
        listed = ", ".join(f"band {b}: {'none' if v is None else f'{v:g}'}" for b, v in zip(src.bands, src.band_nodata))
        raise InputError(f"{src.path} gives its bands different nodata ({listed}); geoseg judges a pixel with one fill "
                         "value per file: set nodata: V on the input (the value that marks fill in every band)")
    if nodata is None and stac is not None and len(stac.nodata) == src.count and src.nodata is None:
        nodata = stac.nodata[0]  # the catalog's fill where the file declares none
    if nodata is not None:
        check_fill_value(nodata, src.dtype, src.path)
        changes.update(nodata=float(nodata), mask="nodata" if src.mask == "none" else src.mask)
    if not entry.apply_scale:
        changes.update(scales=(), offsets=())
    elif entry.scale is not None or entry.offset is not None:
        from geoseg.io.units import normalised

        scale = 1.0 if entry.scale is None else entry.scale
        offset = 0.0 if entry.offset is None else entry.offset
        scales, offsets = normalised([scale] * src.count, [offset] * src.count)
        changes.update(scales=scales, offsets=offsets)
    elif (stac is not None and len(stac.scales) == src.count and any(v is not None for v in stac.scales + stac.offsets)
          and not (stac.units_from_name and src.dtype != "uint16")):  # a converted file keeps its own values
        from geoseg.io.units import normalised

        scales, offsets = normalised([1.0 if v is None else v for v in stac.scales],
                                     [0.0 if v is None else v for v in stac.offsets])
        changes.update(scales=scales, offsets=offsets)
    elif stac is not None and not src.scales and stac.shifted_numbers and src.dtype == "uint16" and any(stac.common_names):
        raise InputError(f"{src.path}: its STAC item is Sentinel-2 of processing baseline {stac.shifted_numbers}, whose "
                         "numbers are reflectance × 10000 + 1000, but gives no raster:bands scale/offset; add "
                         "scale: 0.0001 and offset: -0.1 to the input, or apply_scale: false to use the stored numbers")
    elif (stac is not None and not src.scales and stac.sensor == "sentinel2" and src.dtype == "uint16"
          and any(stac.common_names)):
        # a Sentinel-2 band the catalog gives no units for (Planetary Computer before baseline 04.00): reflectance ×
        # 10000, the quantification every L1C/L2A product states, so a threshold or a network means reflectance here
        # as on a catalog that says 0.0001 (apply_scale: false keeps the stored numbers)
        if not stac.unshifted_numbers:
            raise InputError(f"{src.path}: its STAC item is Sentinel-2 but gives neither raster:bands scale/offset nor "
                             "s2:processing_baseline, and its numbers are reflectance × 10000, plus 1000 from baseline "
                             "04.00; add scale: 0.0001 (and offset: -0.1 from baseline 04.00) to the input, or "
                             "apply_scale: false to use the stored numbers")
        changes.update(scales=(SENTINEL2_QUANTIFICATION,) * src.count, offsets=(0.0,) * src.count)
    elif stac is None and not src.scales and src.count == 1:
        from geoseg.io.productunits import product_scaling

        stated = product_scaling(src.path, src.dtype)  # a Landsat or Sentinel-2 band: its product's metadata
        if stated is not None:
            changes.update(scales=(stated.scale,), offsets=(stated.offset,))
            if nodata is None and src.nodata is None and stated.nodata is not None:
                changes.update(nodata=stated.nodata, mask="nodata" if src.mask == "none" else src.mask)
    out = replace(src, **changes) if changes else src
    if entry.apply_scale:
        refuse_unapplied_units(out)
    check_units(out)
    return out


#: Reflectance per stored number of a Sentinel-2 L1C/L2A band (1 / its ``QUANTIFICATION_VALUE``, 10000 since launch).
SENTINEL2_QUANTIFICATION = 1e-4


def check_units(src: Source) -> None:
    """Refuse a scale of 0 or a scale/offset that is not finite: every value would become the same number
    (or NaN), which no feature or index can tell from data."""
    bad = [(k + 1, s, o) for k, (s, o) in enumerate(zip(src.scales, src.offsets))
           if s == 0.0 or not np.isfinite(s) or not np.isfinite(o)]
    if bad:
        band, scale, offset = bad[0]
        raise InputError(f"{src.path}: band {band} has scale {scale:g} and offset {offset:g} (file metadata or "
                         "STAC), which make every value the same; fix the metadata (gdal_edit.py -scale / -offset), "
                         "or set apply_scale: false on the input to use the stored numbers")


def check_fill_value(value: float, dtype: str, path: str) -> None:
    """Refuse a ``nodata:`` the file's type cannot hold (it would mark nothing, silently)."""
    kind = np.dtype(dtype).kind
    if kind in "ui":
        info = np.iinfo(np.dtype(dtype))
        if not np.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
            raise InputError(f"nodata {value} cannot occur in {path} ({dtype}, {info.min}..{info.max}); "
                             "check the input's nodata:")


def open_scene(
    patterns: Sequence[Any] | str,
    allow_gdal_virtual: bool = False,
    grid: Any = None,
    masks: Sequence[Any] = (),
    sensor: str | None = None,
) -> Scene:
    """Check the inputs and describe them as one :class:`Scene` on the job's grid.

    ``patterns``: ``inputs:`` entries (strings, mappings or :class:`InputEntry`); ``grid``: the job's
    ``grid:`` request (``None``: the default grid); ``masks``: ``masks:`` entries; ``sensor``: the job's
    ``sensor:`` (``sentinel2``, ``landsat8``...), which gives sensor band numbers (``B4``) their roles.
    Raises :class:`InputError` (or a subclass) for anything a user must fix, before any pixel is read;
    warns when a constant value fills the border of a file that does not declare it nodata.
    Every file is opened through :mod:`geoseg.io.opener` under the job's ``allow_gdal_virtual``.
    """
    trust = Trust(allow_gdal_virtual=allow_gdal_virtual, network=current_trust().network)
    with allowing(trust):
        return _open_scene(patterns, allow_gdal_virtual, grid, masks, sensor)


def _open_scene(
    patterns: Sequence[Any] | str, allow_gdal_virtual: bool, grid: Any, masks: Sequence[Any], sensor: str | None
) -> Scene:
    from geoseg.io.gridspec import job_grid

    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    entries = [as_input_entry(p) for p in patterns]
    if not entries:
        raise InputError("no input files given")
    if sensor is not None and sensor_of(sensor) is None:
        raise InputError(f"sensor {sensor!r} has no band table; use one of {', '.join(SENSORS)}")
    raw: list[_RawLayer] = []
    for entry in entries:
        raw.extend(_layers_of_entry(entry, allow_gdal_virtual))
    for r in raw:
        check_tiles_agree(r.name, r.sources)
    the_grid = job_grid(grid, [s for r in raw for s in r.sources])

    layers = []
    placed_raw = []
    multi = len(raw) > 1
    for r in raw:
        placed = [place(s, the_grid) for s in r.sources]
        keep = [i for i, s in enumerate(placed) if s.meets(Window(0, 0, the_grid.height, the_grid.width))]
        meeting = [placed[i] for i in keep]
        if not meeting:
            raise InputError(f"input {r.name!r} ({placed[0].path}) does not meet the job's grid "
                             f"(bounds {tuple(round(v, 3) for v in the_grid.bounds)}); check grid: bounds and crs")
        descriptions = meeting[0].descriptions
        names = tuple(f"{r.name}:{d}" for d in descriptions) if multi else descriptions
        layers.append(Layer(r.name, tuple(meeting), names, r.entry.resampling or "bilinear"))
        placed_raw.append(replace(r, sources=meeting, stac=[r.stac[i] for i in keep]))
    mask_layers = tuple(_mask_layer(as_mask_entry(m), the_grid, allow_gdal_virtual) for m in masks)
    bands = scene_bands(placed_raw, layers, sensor_of(sensor) if sensor else None)
    warn_border_fill(layers)

    all_sources = [s for layer in layers + list(mask_layers) for s in layer.sources]
    on_grid = [s for s in all_sources if s.offset is not None]
    block = on_grid[0].block if on_grid else _DEFAULT_BLOCK
    return Scene(
        grid=the_grid,
        layers=tuple(layers),
        band_names=tuple(n for layer in layers for n in layer.band_names),
        block=tuple(block),  # type: ignore[arg-type]
        masks=mask_layers,
        paths=tuple(s.path for s in all_sources),
        sizes_bytes=tuple(s.size_bytes for s in all_sources),
        bands=bands,
    )


def scene_bands(raw: Sequence[_RawLayer], layers: Sequence[Layer], sensor: str | None) -> tuple[BandInfo, ...]:
    """Every band's role (:mod:`geoseg.io.bandroles`), scale/offset and fill, in the scene's band order."""
    evidence: list[list[BandEvidence]] = []
    for r, layer in zip(raw, layers):
        src, stac = layer.sources[0], r.stac[0]
        commons = stac.common_names if stac is not None and len(stac.common_names) == src.count else ()
        evidence.append([
            BandEvidence(label=d, described=bool(src.described[k]) if src.described else True,
                         colorinterp=src.colorinterp[k] if src.colorinterp else "",
                         common_name=commons[k] if commons else None,
                         asset_key=r.asset_key if src.count == 1 else None)
            for k, d in enumerate(src.descriptions)])
    implied = implied_sensor(ev.label for evs in evidence for ev in evs if ev.described)
    out: list[BandInfo] = []
    by_entry: dict[int, list[int]] = {}
    contradicted: dict[int, str] = {}  # band position -> the product its file name says, where the job's sensor differs
    for r, layer, evs in zip(raw, layers, evidence):
        src, stac = layer.sources[0], r.stac[0]
        stac_sensor = stac.sensor if stac is not None else None
        stated = None if stac_sensor else _stated_sensor(src.path, sensor, r.name)  # the product's MTL/MTD
        layer_sensor = _layer_sensor(stac_sensor, sensor, r.name) or stated or implied
        named = sensor_hint([src.path]) if sensor and layer_sensor == sensor and (stac is None or not stac.sensor) else None
        for k, ev in enumerate(evs):
            role, where, number = band_role(ev, layer_sensor, src.count == 1, r.entry.name, src.path)
            if (named and role and SENSORS[named] != SENSORS.get(sensor or "")
                    and band_role(ev, None, src.count == 1, r.entry.name, src.path)[0] is None):
                contradicted[len(out)] = named  # the role came from a band number read with the job's table
            by_entry.setdefault(id(r.entry), []).append(len(out))
            out.append(BandInfo(
                name=layer.band_names[k], layer=layer.name, label=ev.label, role=role, source=where, number=number,
                scale=src.scales[k] if src.scales else 1.0, offset=src.offsets[k] if src.offsets else 0.0,
                nodata=src.nodata))
    for r in {id(r.entry): r for r in raw}.values():  # each entry once
        positions = by_entry[id(r.entry)]
        if r.entry.bands is None:
            continue
        if len(r.entry.bands) != len(positions):
            where = r.entry.stac or ", ".join(r.entry.paths)
            raise InputError(f"input {where}: bands: lists {len(r.entry.bands)} roles but the input has "
                             f"{len(positions)} bands ({', '.join(out[i].name for i in positions)})")
        for i, role in zip(positions, r.entry.bands):
            out[i] = replace(out[i], role=normalise(role), source="job bands:", number=None)
            contradicted.pop(i, None)
    if contradicted:
        i, named = next(iter(contradicted.items()))
        raise InputError(f"{out[i].layer}: the file name says a {named} product but the job says sensor: {sensor}, "
                         "and band numbers mean different bands on them (e.g. B4: red on Landsat 8, NIR on Landsat 5); "
                         f"set sensor: {named} for these files (a job of their own), or name their bands on the input "
                         "(bands: [...])")
    return tuple(out)


def _stated_sensor(path: str, job_sensor: str | None, name: str) -> str | None:
    """The sensor a band file's product metadata (MTL, MTD) names; refused where the job's ``sensor:`` has
    another band table."""
    from geoseg.io.productunits import product_sensor

    stated = product_sensor(path)
    if stated and job_sensor and SENSORS[stated] != SENSORS.get(job_sensor):
        raise InputError(f"input {name!r}: its product's metadata says {stated} but the job says sensor: {job_sensor}, "
                         "and band numbers mean different bands on them; remove sensor: or choose the right input")
    return stated


def _layer_sensor(stac_sensor: str | None, job_sensor: str | None, name: str) -> str | None:
    if stac_sensor and job_sensor and stac_sensor != job_sensor:
        raise InputError(f"input {name!r}: its STAC item is {stac_sensor} but the job says sensor: {job_sensor}; "
                         "remove sensor: or choose the right input")
    return stac_sensor or job_sensor


def _mask_layer(entry: MaskEntry, grid: GeoGrid, allow_gdal_virtual: bool) -> Layer:
    """A QA layer on the grid, its rule checked against the band's type before any work."""
    if entry.resampling not in RESAMPLING:
        raise InputError(f"mask resampling {entry.resampling!r} is not one of {', '.join(RESAMPLING)}")
    rule = QARule(tuple(int(v) for v in entry.drop_values), tuple(int(b) for b in entry.drop_bits))
    if entry.stac:
        from geoseg.io.stac import stac_asset_hrefs

        if not entry.asset:
            raise InputError(f"mask from STAC {entry.stac} needs an asset (key or eo:bands common name)")
        ((name, hrefs, _),) = stac_asset_hrefs(entry.stac, (entry.asset,), allow_gdal_virtual)
    else:
        hrefs = expand_inputs(list(entry.paths), allow_gdal_virtual)
        name = _stem_name(hrefs)
    for h in hrefs:
        check_virtual(h, allow_gdal_virtual)
    sources = [place(s, grid) for s in describe_tiles(hrefs, lambda h: describe_source(h, bands=(entry.band,)))]
    check_tiles_agree(name, sources)
    rule.check(sources[0].dtype, f"mask {name!r} ({sources[0].path})")
    return Layer(name, tuple(sources), (), entry.resampling, role="mask", rule=rule)


def read_window(scene: Scene, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read all bands of a window as float32 ``(bands, h, w)`` plus a validity mask ``(h, w)``.

    A pixel is valid when every layer has a valid pixel there (no nodata, GDAL mask and alpha
    non-zero, finite values) and no QA rule drops it. Transient read errors are retried a
    bounded number of times.
    """
    parts: list[np.ndarray] = []
    valid: np.ndarray | None = None
    for layer in scene.layers:
        data, ok = read_layer(layer, scene.grid, window)
        parts.append(data)
        valid = ok if valid is None else (valid & ok)
    assert valid is not None
    for layer in scene.masks:
        qa, has_qa = read_layer(layer, scene.grid, window)
        assert layer.rule is not None
        valid &= ~(layer.rule.invalid(qa[0]) & has_qa)
    stacked = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return stacked, valid


def read_windows(scene: Scene, windows: Sequence[Window], threads: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`read_window` of each of ``windows`` (small parts of one chunk, such as a sample's blocks).

    Where the scene is many files, all on the grid (small tiles), the parts are cut from one read of
    their bounding window with only the files that meet a part: on the grid a pixel's value does not
    depend on the window read, so these are the same pixels, and the tiles are read through one VRT
    (:mod:`geoseg.io.tilevrt`) instead of opened by Python part by part. Else part by part, by
    ``threads`` threads.
    """
    from geoseg.io.mosaic import VRT_FROM, map_files

    layers = scene.layers + scene.masks
    n_files = sum(len(layer.sources) for layer in layers)
    if len(windows) >= VRT_FROM and n_files >= VRT_FROM and all(
            s.offset is not None for layer in layers for s in layer.sources):
        r0 = min(w.row_off for w in windows)
        c0 = min(w.col_off for w in windows)
        r1 = max(w.row_off + w.height for w in windows)
        c1 = max(w.col_off + w.width for w in windows)
        trimmed = [layer.meeting_any(windows) for layer in layers]
        n = len(scene.layers)
        data, valid = read_window(replace(scene, layers=tuple(trimmed[:n]), masks=tuple(trimmed[n:])),
                                  Window(r0, c0, r1 - r0, c1 - c0))
        cut = [(slice(w.row_off - r0, w.row_off - r0 + w.height), slice(w.col_off - c0, w.col_off - c0 + w.width))
               for w in windows]
        return [(data[:, rows, cols], valid[rows, cols]) for rows, cols in cut]
    return map_files(lambda sub: read_window(scene, sub), windows, threads)


def open_scene_xarray(scene: Scene | str, chunk: int = 2048):  # xarray.DataArray
    """The scene as one lazy ``xarray.DataArray`` (band, y, x) with Dask chunks on the processing grid.

    For notebooks: ``.rio.crs`` and ``.rio.transform()`` are set and the ``band`` coordinate holds
    the band names. Files that already share the grid are opened as they are (their data type,
    nodata kept as attribute); anything composed (mosaics, warped or masked inputs) is float32
    with NaN where no valid pixel is.
    """
    import dask.array as darr
    import rioxarray  # registers .rio
    import xarray as xr

    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    cg = scene.chunk_grid(chunk)
    if all(len(layer.sources) == 1 and layer.sources[0].grid.same_as(scene.grid) for layer in scene.layers) \
            and not scene.masks and all(s.mask in ("none", "nodata") and not s.scales
                                        for layer in scene.layers for s in layer.sources):
        # one GeoTIFF each: open_rasterio returns a DataArray (lists are for HDF/netCDF subdatasets)
        arrays = [
            cast("xr.DataArray", rioxarray.open_rasterio(
                layer.sources[0].path, chunks={"band": -1, "y": cg.chunk, "x": cg.chunk}, lock=False, masked=False,
                driver=layer.sources[0].driver,  # what the opener accepted, nothing else
            )).isel(band=[b - 1 for b in layer.sources[0].bands])
            for layer in scene.layers
        ]
        if all(_same_fill(a.rio.nodata, layer.sources[0].nodata) for a, layer in zip(arrays, scene.layers)):
            da = arrays[0] if len(arrays) == 1 else xr.concat(arrays, dim="band")
            return da.assign_coords(band=list(scene.band_names))
        # an input's nodata: overrides the file's: composed below, with NaN where it applies

    ys, xs = cg.dask_chunks

    def block(block_info=None):
        (_, _), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        sub = Window(r0, c0, r1 - r0, c1 - c0)
        data, valid = read_window(scene.for_window(sub), sub)
        return np.where(valid[None], data, np.float32(np.nan))

    arr = darr.map_blocks(block, chunks=((scene.count,), ys, xs), dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
    t = scene.grid.transform
    x = t.c + (np.arange(scene.width) + 0.5) * t.a
    y = t.f + (np.arange(scene.height) + 0.5) * t.e
    da = xr.DataArray(arr, dims=("band", "y", "x"), coords={"band": list(scene.band_names), "y": y, "x": x})
    return da.rio.write_crs(scene.grid.crs_wkt).rio.write_transform(t)


def _same_fill(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (a != a and b != b)  # NaN is NaN's fill
