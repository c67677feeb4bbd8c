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

from geoseg.errors import InputError
from geoseg.geo import ChunkGrid, GeoGrid, Window, aligned_chunk_size
from geoseg.io.masks import QARule
from geoseg.io.mosaic import FootprintIndex, Layer, check_tiles_agree, read_layer
from geoseg.io.opener import Trust, allowing, check_name, current_trust
from geoseg.io.sources import MAX_SIDE, RESAMPLING, Source, describe_source, place

log = logging.getLogger(__name__)

__all__ = ["Scene", "InputEntry", "MaskEntry", "open_scene", "read_window", "open_scene_xarray",
           "expand_inputs", "MAX_SIDE"]

#: Block assumed for sampling when no file lies on the grid (all are warped).
_DEFAULT_BLOCK = (512, 512)


@dataclass(frozen=True)
class InputEntry:
    """One ``inputs:`` entry: files (``path``: path, glob or list) or a STAC item (``stac`` + ``assets``)."""

    path: tuple[str, ...] = ()
    stac: str | None = None
    assets: tuple[str, ...] = ()
    kind: str = "auto"
    resampling: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class MaskEntry:
    """One ``masks:`` entry: a QA layer (file(s) or a STAC asset) and which values make pixels nodata."""

    path: tuple[str, ...] = ()
    stac: str | None = None
    asset: str | None = None
    band: int = 1
    drop_values: tuple[int, ...] = ()
    drop_bits: tuple[int, ...] = ()
    resampling: str = "nearest"


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

    @property
    def count(self) -> int:
        return len(self.band_names)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (the mean of x and y sizes)."""
        return self.grid.resolution

    # Shorthands for the grid's parts (the grid is the one value; these read it).
    @property
    def crs(self):  # noqa: ANN201 - rasterio CRS
        return self.grid.crs

    @property
    def transform(self):  # noqa: ANN201 - affine.Affine
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
        return replace(self, layers=trimmed[:n], masks=trimmed[n:])

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # the index stays on the client

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _as_tuple(v: Any) -> tuple:
    if v is None:
        return ()
    if isinstance(v, (str, Path)):
        return (str(v),)
    return tuple(str(x) if isinstance(x, Path) else x for x in v)


def _plain(obj: Any) -> Any:
    """A job-file model (pydantic) or mapping as a plain dict; strings stay strings."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return obj


def as_input_entry(obj: Any) -> InputEntry:
    """An ``inputs:`` entry from a string, a mapping or a job-file model."""
    obj = _plain(obj)
    if isinstance(obj, InputEntry):
        return obj
    if isinstance(obj, (str, Path)):
        return InputEntry(path=(str(obj),))
    d = dict(obj)
    return InputEntry(path=_as_tuple(d.get("path")), stac=d.get("stac") and str(d["stac"]),
                      assets=_as_tuple(d.get("assets")), kind=d.get("kind") or "auto",
                      resampling=d.get("resampling"), name=d.get("name"))


def as_mask_entry(obj: Any) -> MaskEntry:
    """A ``masks:`` entry from a mapping or a job-file model."""
    obj = _plain(obj)
    if isinstance(obj, MaskEntry):
        return obj
    d = dict(obj)
    return MaskEntry(path=_as_tuple(d.get("path")), stac=d.get("stac") and str(d["stac"]), asset=d.get("asset"),
                     band=int(d.get("band") or 1), drop_values=tuple(d.get("drop_values") or ()),
                     drop_bits=tuple(d.get("drop_bits") or ()), resampling=d.get("resampling") or "nearest")


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
        texts.extend(as_input_entry(p).path)
    out: list[str] = []
    for text in texts:
        check_virtual(text, allow_gdal_virtual)
        if "://" in text:
            out.append(text)
            continue
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if Path(text).exists() else [])
        if not matches:
            raise InputError(f"input {text!r} matches no file; check the path (relative paths are from the job file)")
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


def _layers_of_entry(entry: InputEntry, allow_gdal_virtual: bool) -> list[tuple[str, list[Source], str]]:
    """(name, sources, resampling) of each layer an entry makes."""
    if entry.kind not in ("auto", "mosaic", "bands"):
        raise InputError(f"input kind {entry.kind!r} is not one of auto, mosaic, bands")
    if entry.resampling is not None and entry.resampling not in RESAMPLING:
        raise InputError(f"resampling {entry.resampling!r} is not one of {', '.join(RESAMPLING)}")
    resampling = entry.resampling or "bilinear"
    if entry.stac:
        from geoseg.io.stac import stac_asset_hrefs

        out = []
        for name, hrefs, band in stac_asset_hrefs(entry.stac, entry.assets, allow_gdal_virtual):
            for h in hrefs:
                check_virtual(h, allow_gdal_virtual)
            sources = [describe_source(h) for h in hrefs]
            if band and all(s.count == 1 for s in sources):
                sources = [replace(s, descriptions=(band,)) for s in sources]
            out.append((name, sources, resampling))
        return out
    paths = expand_inputs(list(entry.path), allow_gdal_virtual)
    sources = [describe_source(p) for p in paths]
    one_grid = all(s.grid.same_as(sources[0].grid) for s in sources[1:])
    if entry.kind == "bands" or (entry.kind == "auto" and one_grid):
        return [(entry.name if entry.name and len(sources) == 1 else _stem_name([s.path]), [s], resampling)
                for s in sources]
    return [(entry.name or _stem_name(paths), sources, resampling)]


def open_scene(
    patterns: Sequence[Any] | str,
    allow_gdal_virtual: bool = False,
    grid: Any = None,
    masks: Sequence[Any] = (),
) -> Scene:
    """Check the inputs and describe them as one :class:`Scene` on the job's grid.

    ``patterns``: ``inputs:`` entries (strings, mappings or job-file models); ``grid``: the job's
    ``grid:`` request (``None``: the default grid); ``masks``: ``masks:`` entries. Raises
    :class:`InputError` (or a subclass) for anything a user must fix, before any pixel is read.
    Every file is opened through :mod:`geoseg.io.opener` under the job's ``allow_gdal_virtual``.
    """
    trust = Trust(allow_gdal_virtual=allow_gdal_virtual, network=current_trust().network)
    with allowing(trust):
        return _open_scene(patterns, allow_gdal_virtual, grid, masks)


def _open_scene(patterns: Sequence[Any] | str, allow_gdal_virtual: bool, grid: Any, masks: Sequence[Any]) -> Scene:
    from geoseg.io.gridspec import job_grid

    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    entries = [as_input_entry(p) for p in patterns]
    if not entries:
        raise InputError("no input files given")
    raw: list[tuple[str, list[Source], str]] = []
    for entry in entries:
        raw.extend(_layers_of_entry(entry, allow_gdal_virtual))
    for name, sources, _ in raw:
        check_tiles_agree(name, sources)
    the_grid = job_grid(grid, [s for _, sources, _ in raw for s in sources])

    layers = []
    multi = len(raw) > 1
    for name, sources, resampling in raw:
        placed = [place(s, the_grid) for s in sources]
        meeting = [s for s in placed if s.meets(Window(0, 0, the_grid.height, the_grid.width))]
        if not meeting:
            raise InputError(f"input {name!r} ({placed[0].path}) does not meet the job's grid "
                             f"(bounds {tuple(round(v, 3) for v in the_grid.bounds)}); check grid: bounds and crs")
        descriptions = meeting[0].descriptions
        names = tuple(f"{name}:{d}" for d in descriptions) if multi else descriptions
        layers.append(Layer(name, tuple(meeting), names, resampling))
    mask_layers = tuple(_mask_layer(as_mask_entry(m), the_grid, allow_gdal_virtual) for m in masks)

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
    )


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
        hrefs = expand_inputs(list(entry.path), allow_gdal_virtual)
        name = _stem_name(hrefs)
    for h in hrefs:
        check_virtual(h, allow_gdal_virtual)
    sources = [place(describe_source(h, bands=(entry.band,)), grid) for h in hrefs]
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


def open_scene_xarray(scene: Scene | str, chunk: int = 2048):  # noqa: ANN201 - xarray.DataArray
    """The scene as one lazy ``xarray.DataArray`` (band, y, x) with Dask chunks on the processing grid.

    For notebooks: ``.rio.crs`` and ``.rio.transform()`` are set and the ``band`` coordinate holds
    the band names. Files that already share the grid are opened as they are (their data type,
    nodata kept as attribute); anything composed (mosaics, warped or masked inputs) is float32
    with NaN where no valid pixel is.
    """
    import dask.array as darr
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr

    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    cg = scene.chunk_grid(chunk)
    if all(len(layer.sources) == 1 and layer.sources[0].grid.same_as(scene.grid) for layer in scene.layers) \
            and not scene.masks and all(s.mask in ("none", "nodata") for layer in scene.layers for s in layer.sources):
        # one GeoTIFF each: open_rasterio returns a DataArray (lists are for HDF/netCDF subdatasets)
        arrays = [
            cast("xr.DataArray", rioxarray.open_rasterio(
                layer.sources[0].path, chunks={"band": -1, "y": cg.chunk, "x": cg.chunk}, lock=False, masked=False,
                driver=layer.sources[0].driver,  # what the opener accepted, nothing else
            )).isel(band=[b - 1 for b in layer.sources[0].bands])
            for layer in scene.layers
        ]
        da = arrays[0] if len(arrays) == 1 else xr.concat(arrays, dim="band")
        return da.assign_coords(band=list(scene.band_names))

    ys, xs = cg.dask_chunks

    def block(block_info=None):  # noqa: ANN001, ANN202
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
