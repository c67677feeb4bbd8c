"""Seeded synthetic scenes with a known reference, so every workflow can be tried and scored offline.

Two kinds of scene are generated:

``landcover``
    A 10 m, 4-band (blue, green, red, nir) satellite-like tile in EPSG:32633 with cropland
    parcels, forest, water, grassland, built-up and bare land (``LANDCOVER_CLASSES``), a
    nodata corner wedge, and a layer of district polygons for per-region statistics.
``cropweed``
    A 1 cm, 4-band (red, green, blue, nir) drone-like orthomosaic in EPSG:32632 with crop rows,
    weeds mostly between the rows and textured soil (``CROPWEED_CLASSES``), and a layer of plots.
    Crop and weed share nearly the same spectra, so only spatial context (the rows) separates them.

Scenes of up to 20,000 × 20,000 pixels are written window by window and never held in memory
whole: every pixel is a pure function of its global coordinates and the seed (hashed-lattice
value noise, jittered-grid Voronoi cells, row geometry), so windows agree across their borders
and the result does not depend on the window size. Class proportions of the land-cover scene
are calibrated once on a coarse, block-independent sample of the same functions.
"""

from __future__ import annotations

import json
import math
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.errors import InputError, OutputError
from geoseg.geo import ChunkGrid, Window
from geoseg.legend import CROPWEED_CLASSES, LANDCOVER_CLASSES, ClassInfo

__all__ = ["SceneFiles", "make_scene", "KINDS", "MAX_SIDE"]

#: The kinds of scene :func:`make_scene` can generate.
KINDS: tuple[str, ...] = ("landcover", "cropweed")
#: Largest scene side in pixels.
MAX_SIDE = 20_000

_MASK64 = (1 << 64) - 1
#: Pixels computed at once: bounds the float temporaries whatever the block size.
_STRIP_PIXELS = 16384


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


# --------------------------------------------------------------------------------------------
# Hashing and noise: pure functions of global coordinates
# --------------------------------------------------------------------------------------------


def _splitmix(x: int) -> int:
    """Python-int splitmix64 step, to derive independent keys from the seed."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _key(seed: int, name: str) -> int:
    """A 64-bit key for one named random field of one seed."""
    return _splitmix(_splitmix(seed) ^ zlib.crc32(name.encode()))


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _hash(key: int, *coords: np.ndarray) -> np.ndarray:
    """A uint64 hash of integer coordinates (broadcast together) under ``key``."""
    with np.errstate(over="ignore"):
        h = np.asarray(np.uint64(key))
        for c in coords:
            c64 = np.asarray(c).astype(np.int64).astype(np.uint64)
            h = _mix(h + c64 * _GOLD)
        return np.atleast_1d(h)


def _u01(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 bits of a hash."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _field(h: np.ndarray, i: int) -> np.ndarray:
    """The ``i``-th of eight independent 8-bit uniforms in [0, 1) packed in a hash."""
    return ((h >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.float64) * (1.0 / 256.0) + 1.0 / 512.0


def _lattice_positions(i0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice indices needed for ``i0`` and ``i0 + 1`` and where each one sits.

    Dense coordinates (a block) use the whole index range; sparse ones (calibration samples
    spread over a large scene) only the indices they touch.
    """
    lo, hi = int(i0.min()), int(i0.max())
    if hi - lo + 2 <= 2 * i0.size + 2:
        pos = i0 - lo
        return np.arange(lo, hi + 2, dtype=np.int64), pos, pos + 1
    nodes = np.unique(np.concatenate([i0, i0 + 1]))
    return nodes, np.searchsorted(nodes, i0), np.searchsorted(nodes, i0 + 1)


def _value_noise(ry: np.ndarray, rx: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1) on a ``(len(ry), len(rx))`` grid of global pixel coordinates.

    The lattice values are hashed from global lattice indices and only the lattice nodes the
    coordinates touch are evaluated, so blocks and sparse calibration samples cost the same.
    """
    shift = (key % 4093) / 97.0  # decorrelates the lattices of different fields
    y = ry / scale + shift
    x = rx / scale + shift * 0.61
    fy0 = np.floor(y)
    fx0 = np.floor(x)
    ty = y - fy0
    tx = x - fx0
    ty = ty * ty * (3.0 - 2.0 * ty)
    tx = tx * tx * (3.0 - 2.0 * tx)
    ny, py0, py1 = _lattice_positions(fy0.astype(np.int64))
    nx, px0, px1 = _lattice_positions(fx0.astype(np.int64))
    lat = _u01(_hash(key, ny[:, None], nx[None, :]))
    # Interpolate along x on the lattice rows first (small), then between rows per pixel row.
    left = lat[:, px0]
    rows = left + (lat[:, px1] - left) * tx[None, :]
    top = rows[py0]
    return top + (rows[py1] - top) * ty[:, None]


def _fbm(
    ry: np.ndarray, rx: np.ndarray, scale: float, octaves: int, key: int, gain: float = 0.5
) -> np.ndarray:
    """Fractal sum of value-noise octaves, normalised to [0, 1)."""
    total = np.zeros((ry.size, rx.size))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * _value_noise(ry, rx, scale / (2.0**o), _splitmix(key + o))
        norm += amp
        amp *= gain
    return total / norm


def _cell_candidates(
    ry: np.ndarray, rx: np.ndarray, cell: float, key: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Jittered-grid Voronoi: for each of the 3 × 3 neighbour cells, (squared distance, cell hash).

    Every lattice cell holds one seed point at a hashed position; nearest-seed queries only
    need the neighbouring cells, so this is a global Voronoi diagram evaluated per block.
    """
    cy = np.floor(ry / cell).astype(np.int64)
    cx = np.floor(rx / cell).astype(np.int64)
    ny = np.unique(np.concatenate([cy - 1, cy, cy + 1]))
    nx = np.unique(np.concatenate([cx - 1, cx, cx + 1]))
    lat = _hash(key, ny[:, None], nx[None, :])
    cen_y = (ny[:, None] + 0.1 + 0.8 * _field(lat, 0)) * cell
    cen_x = (nx[None, :] + 0.1 + 0.8 * _field(lat, 1)) * cell
    for dy in (-1, 0, 1):
        py = np.searchsorted(ny, cy + dy)
        for dx in (-1, 0, 1):
            px = np.searchsorted(nx, cx + dx)
            d2 = (cen_y[py][:, px] - ry[:, None]) ** 2 + (cen_x[py][:, px] - rx[None, :]) ** 2
            yield d2, lat[py][:, px]


class _PixelNoise:
    """Approximately normal per-pixel, per-band noise (mean 0, sd 1) hashed from global pixels."""

    def __init__(self, key: int, ry: np.ndarray, rx: np.ndarray) -> None:
        iy = np.floor(ry).astype(np.int64)[:, None]
        ix = np.floor(rx).astype(np.int64)[None, :]
        self.h1 = _hash(key, iy, ix)
        self.h2 = _hash(key ^ 0x5BD1E995, iy, ix)

    def band(self, b: int) -> np.ndarray:
        """Noise of band ``b`` (0-3): a sum of four 8-bit uniforms (Irwin-Hall, sd sqrt(4/12))."""
        s = _field(self.h1, b) + _field(self.h1, b + 4) + _field(self.h2, b) + _field(self.h2, b + 4)
        return (s - 2.0) * math.sqrt(3.0)


#: Cosine and sine of 16 field orientations (a table, so no per-pixel trigonometry).
_COS16 = np.cos(np.arange(16) * (np.pi / 16))
_SIN16 = np.sin(np.arange(16) * (np.pi / 16))


def _contrast(weight: np.ndarray) -> np.ndarray:
    """Stretch a [0, 1] noise field around 0.5 so end-members are reached, not just averaged."""
    return np.clip((weight - 0.5) * 1.8 + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """Raster layout of one scene kind."""

    crs: str
    res: float
    origin: tuple[float, float]
    dtype: str
    bands: tuple[str, ...]


class _Generator:
    """A scene as functions of global pixel coordinates."""

    spec: _Spec
    kind: str = ""

    def __init__(self, width: int, height: int, seed: int) -> None:
        self.width = width
        self.height = height
        self.seed = seed

    @property
    def crs(self) -> CRS:
        return CRS.from_string(self.spec.crs)

    @property
    def transform(self) -> Affine:
        x0, y0 = self.spec.origin
        return Affine(self.spec.res, 0.0, x0, 0.0, -self.spec.res, y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the scene in CRS units."""
        x0, y0 = self.spec.origin
        return x0, y0 - self.height * self.spec.res, x0 + self.width * self.spec.res, y0

    def tags(self) -> dict[str, str]:
        """Metadata written into both GeoTIFFs, so a file says how it was made."""
        return {"GEOSEG_SYNTHETIC_KIND": self.kind, "GEOSEG_SYNTHETIC_SEED": str(self.seed)}

    def block(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(bands, h, w)`` and labels ``(h, w)`` of one window.

        The window is computed in strips of a few thousand pixels, so the float temporaries of
        the pixel functions stay small whatever the block size; only the output is block-sized.
        """
        ry, rx = _window_coords(window)
        img = np.empty((len(self.spec.bands), window.height, window.width), dtype=self.spec.dtype)
        labels = np.empty((window.height, window.width), dtype=np.uint8)
        step = max(1, _STRIP_PIXELS // window.width)
        for r0 in range(0, window.height, step):
            img[:, r0:r0 + step], labels[r0:r0 + step] = self._pixels(ry[r0:r0 + step], rx)
        return img, labels

    def _pixels(self, ry: np.ndarray, rx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image and labels at pixel-centre rows ``ry`` × columns ``rx`` (global coordinates)."""
        raise NotImplementedError

    def regions(self) -> tuple[list, list[int], list[str]]:
        """Region polygons (CRS units), ids and names."""
        raise NotImplementedError


def _window_coords(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Global pixel-centre coordinates (rows, cols) of a window."""
    ry = np.arange(window.row_off, window.row_off + window.height, dtype=np.float64) + 0.5
    rx = np.arange(window.col_off, window.col_off + window.width, dtype=np.float64) + 0.5
    return ry, rx


def _upper_threshold(values: np.ndarray, need: int) -> float:
    """The threshold ``t`` such that about ``need`` of ``values`` are ``>= t`` (inf when none)."""
    if need <= 0 or values.size == 0:
        return math.inf
    need = min(need, values.size)
    return float(np.partition(values, values.size - need)[values.size - need])


# ---- land cover ------------------------------------------------------------------------------

#: Class ids (from LANDCOVER_CLASSES) by name.
_LC = {c.name: c.id for c in LANDCOVER_CLASSES}

#: Target shares of the valid area, in the priority order the classes are painted.
_LC_TARGETS = (
    ("river", 0.015),
    ("lake", 0.05),
    ("urban", 0.06),
    ("forest", 0.24),
    ("bare", 0.045),
    ("ag", 0.37),
)

# Two end-member spectra (blue, green, red, nir; reflectance x 10000) per sub-type; pixels mix
# them with a smooth weight field. Sub-types 0-4 are crops of the cropland class.
_LC_SPECTRA = np.array(
    [
        # cropland: green cereal, young/sparse, ripening, ploughed soil, stubble
        [[430, 730, 480, 3900], [500, 820, 640, 3300]],
        [[650, 880, 900, 2900], [800, 1000, 1150, 2500]],
        [[700, 1000, 1350, 2600], [820, 1120, 1520, 2450]],
        [[800, 1000, 1250, 1800], [1000, 1250, 1600, 2200]],
        [[950, 1200, 1450, 2300], [1100, 1350, 1650, 2550]],
        # forest: conifer, deciduous
        [[240, 430, 280, 2400], [360, 640, 420, 3500]],
        # water: deep/clear, turbid
        [[420, 430, 260, 130], [800, 980, 760, 900]],
        # grassland: lush, dry
        [[420, 800, 560, 3300], [700, 1000, 1100, 2700]],
        # built-up: sealed, green spaces
        [[1150, 1250, 1400, 1800], [900, 1050, 1050, 2500]],
        # bare: light, dark
        [[1050, 1300, 1600, 2150], [1750, 1950, 2350, 2850]],
    ],
    dtype=np.float64,
)
_SUB_FOREST, _SUB_WATER, _SUB_GRASS, _SUB_BUILT, _SUB_BARE = 5, 6, 7, 8, 9
#: Class, sub-type, weight-field scale (pixels at full size) and key of the other classes.
_LC_WEIGHTS = (
    ("forest", _SUB_FOREST, 90, "w_forest"),
    ("water", _SUB_WATER, 120, "w_water"),
    ("built-up", _SUB_BUILT, 6, "w_built"),
    ("bare", _SUB_BARE, 40, "w_bare"),
)
#: Score, class and score range over which edge pixels go from half-mixed to pure.
_LC_EDGES = (
    ("river", "water", 0.0),
    ("lake", "water", 0.008),
    ("urban", "built-up", 0.08),
    ("forest", "forest", 0.008),
    ("bare", "bare", 0.008),
)
#: Cumulative probabilities of the five crop sub-types.
_CROP_CDF = np.array([0.34, 0.54, 0.74, 0.9, 1.0])
#: Amplitude of the fine (canopy, roof, soil) texture per sub-type.
_LC_TEXTURE = np.array([0.05, 0.06, 0.05, 0.07, 0.06, 0.16, 0.04, 0.09, 0.28, 0.12])
_LC_SENSOR_SD = 100.0


class _Landcover(_Generator):
    """Satellite-like 10 m scene; class layout from noise fields with calibrated thresholds."""

    kind = "landcover"
    spec = _Spec("EPSG:32633", 10.0, (500000.0, 5100000.0), "uint16", ("blue", "green", "red", "nir"))

    def __init__(self, width: int, height: int, seed: int) -> None:
        super().__init__(width, height, seed)
        # Small scenes shrink the landscape so that every class still appears in them.
        self.f = min(1.0, max(0.25, min(width, height) / 2048.0))
        self.k = {name: _key(seed, f"landcover/{name}") for name in (
            "river", "lake", "urban", "urban_edge", "forest", "bare", "ag", "fields", "strips",
            "w_crop", "w_forest", "w_water", "w_grass", "w_built", "w_bare", "texture", "sensor",
        )}
        self.thresholds = self._calibrate()

    def _nodata(self, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
        """A nodata wedge in the bottom-right corner (~3 % of the scene), like a swath edge.

        Integer arithmetic on global pixel indices, so the edge is exact in every block.
        """
        w, h = self.width, self.height
        if w < 64 or h < 64:
            return np.zeros((ry.size, rx.size), dtype=bool)
        r = np.floor(ry).astype(np.int64)
        c = np.floor(rx).astype(np.int64)
        return 4 * ((w - 1 - c)[None, :] * h + (h - 1 - r)[:, None] * w) < w * h

    def _scores(self, ry: np.ndarray, rx: np.ndarray) -> dict[str, np.ndarray]:
        """The fields whose thresholds decide the classes (higher = more likely)."""
        f, k = self.f, self.k
        river = -np.abs(_fbm(ry, rx, 700 * f, 3, k["river"]) - 0.5)
        lake = _fbm(ry, rx, 260 * f, 4, k["lake"])
        urban = np.full((ry.size, rx.size), -1.0)
        cell = 380 * f
        for d2, h in _cell_candidates(ry, rx, cell, k["urban"]):
            radius = cell * (0.1 + 0.22 * _field(h, 2))
            s = np.where(_field(h, 3) < 0.7, 1.0 - np.sqrt(d2) / radius, -1.0)
            np.maximum(urban, s, out=urban)
        urban += 0.5 * (_fbm(ry, rx, 14 * f, 2, k["urban_edge"]) - 0.5)
        forest = _fbm(ry, rx, 300 * f, 5, k["forest"])
        bare = _fbm(ry, rx, 120 * f, 4, k["bare"])
        ag = _fbm(ry, rx, 600 * f, 3, k["ag"])
        return {"river": river, "lake": lake, "urban": urban, "forest": forest, "bare": bare, "ag": ag}

    def _calibrate(self) -> dict[str, float]:
        """Thresholds giving each class its target share, from a coarse block-independent sample."""
        n_y, n_x = min(self.height, 256), min(self.width, 256)
        ry = np.floor((np.arange(n_y) + 0.5) * self.height / n_y) + 0.5
        rx = np.floor((np.arange(n_x) + 0.5) * self.width / n_x) + 0.5
        scores = {name: np.empty((n_y, n_x), dtype=np.float32) for name, _ in _LC_TARGETS}
        step = max(1, _STRIP_PIXELS // n_x)
        for r0 in range(0, n_y, step):
            for name, values in self._scores(ry[r0:r0 + step], rx).items():
                scores[name][r0:r0 + step] = values
        free = ~self._nodata(ry, rx)
        n_valid = int(free.sum())
        thresholds: dict[str, float] = {}
        for name, share in _LC_TARGETS:
            t = _upper_threshold(scores[name][free], int(round(share * n_valid)))
            if name == "urban":
                t = max(t, -0.3)  # few towns in a small scene: keep them compact rather than fill
            thresholds[name] = t
            free &= ~(scores[name] >= t)
        return thresholds

    def classes(self, ry: np.ndarray, rx: np.ndarray, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Class ids: nodata, then each score over its threshold in priority order, else grassland."""
        labels = np.full((ry.size, rx.size), _LC["grassland"], dtype=np.uint8)
        taken = self._nodata(ry, rx)
        labels[taken] = 0
        for name, cls in (
            ("river", "water"), ("lake", "water"), ("urban", "built-up"),
            ("forest", "forest"), ("bare", "bare"), ("ag", "cropland"),
        ):
            m = (scores[name] >= self.thresholds[name]) & ~taken
            labels[m] = _LC[cls]
            taken |= m
        return labels

    def _parcels(
        self, ry: np.ndarray, rx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cropland parcels: jittered-grid Voronoi fields cut into strips of different crops.

        Returns the crop sub-type, end-member weight and brightness gain per pixel, and the
        thin field margins (hedges, tracks) that look like grass.
        """
        f, k = self.f, self.k
        shape = (ry.size, rx.size)
        d1 = np.full(shape, np.inf)
        d2nd = np.full(shape, np.inf)
        hfield = np.zeros(shape, dtype=np.uint64)
        for d2, h in _cell_candidates(ry, rx, 42 * f, k["fields"]):
            closer = d2 < d1
            d2nd = np.where(closer, d1, np.minimum(d2nd, d2))
            d1 = np.where(closer, d2, d1)
            hfield = np.where(closer, h, hfield)
        margin = (np.sqrt(d2nd) - np.sqrt(d1)) < 1.2
        ang = ((hfield >> np.uint64(16)) & np.uint64(15)).astype(np.intp)
        along = rx[None, :] * _COS16[ang] + ry[:, None] * _SIN16[ang]
        strip_w = (8.0 + 14.0 * _field(hfield, 3)) * max(f, 0.5)
        hstrip = _hash(k["strips"], hfield, np.floor(along / strip_w).astype(np.int64))
        crop = np.searchsorted(_CROP_CDF, _field(hstrip, 0), side="right")
        weight = _value_noise(ry, rx, 9 * f, k["w_crop"]) * 0.6 + 0.4 * _field(hstrip, 2)
        return crop, weight, 0.9 + 0.2 * _field(hstrip, 1), margin

    def _pixels(self, ry: np.ndarray, rx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, k = self.f, self.k
        scores = self._scores(ry, rx)
        labels = self.classes(ry, rx, scores)

        # Each pixel mixes two end-member spectra of its sub-type with a smooth weight field.
        sub = np.full(labels.shape, _SUB_GRASS, dtype=np.intp)
        w_grass = _contrast(_fbm(ry, rx, 60 * f, 3, k["w_grass"]))
        weight = w_grass.copy()
        gain = np.ones(labels.shape)
        is_crop = labels == _LC["cropland"]
        if is_crop.any():
            crop, w_crop, g_crop, margin = self._parcels(ry, rx)
            is_crop &= ~margin
            sub[is_crop] = crop[is_crop]
            weight[is_crop] = w_crop[is_crop]
            gain[is_crop] = g_crop[is_crop]
        for cls, s, scale, wkey in _LC_WEIGHTS:
            m = labels == _LC[cls]
            if m.any():
                sub[m] = s
                weight[m] = _contrast(_fbm(ry, rx, scale * f, 3, k[wkey]))[m]

        # Pixels near the edge of a water body, forest, town or bare patch are mixed with the
        # surrounding grass, as 10 m pixels are; that is what makes edges hard to classify.
        purity = np.ones(labels.shape)
        for name, cls, width in _LC_EDGES:
            t = self.thresholds[name]
            m = (labels == _LC[cls]) & (scores[name] >= t)
            if not math.isfinite(t) or not m.any():
                continue
            delta = 0.6 * abs(t) if name == "river" else width
            p = np.clip(0.5 + (scores[name][m] - t) / delta, 0.5, 1.0)
            purity[m] = np.where(purity[m] < 1.0, np.maximum(purity[m], p), p)

        texture = _fbm(ry, rx, 3.0, 2, k["texture"]) - 0.5
        modulation = gain * (1.0 + 2.0 * _LC_TEXTURE[sub] * texture)
        noise = _PixelNoise(k["sensor"], ry, rx)
        img = np.empty((4, *labels.shape), dtype=np.uint16)
        for band in range(4):
            a = _LC_SPECTRA[:, 0, band][sub]
            value = (a + (_LC_SPECTRA[:, 1, band][sub] - a) * weight) * modulation
            ga, gb = _LC_SPECTRA[_SUB_GRASS, :, band]
            value += (1.0 - purity) * ((ga + (gb - ga) * w_grass) * modulation - value)
            value += _LC_SENSOR_SD * noise.band(band)
            img[band] = np.clip(np.rint(value), 1, 10000)
        img[:, labels == 0] = 0
        return img, labels

    def regions(self) -> tuple[list, list[int], list[str]]:
        """Districts: a coarse Voronoi tessellation (about 20 per 2048² pixels) clipped to the scene."""
        n = int(min(3000, max(4, round(20 * self.width * self.height / 2048**2))))
        rng = np.random.default_rng([self.seed, zlib.crc32(b"landcover/regions")])
        minx, miny, maxx, maxy = self.bounds
        pts = np.column_stack(
            [
                minx + rng.uniform(0.02, 0.98, n) * (maxx - minx),
                miny + rng.uniform(0.02, 0.98, n) * (maxy - miny),
            ]
        )
        names = _district_names(rng, n)
        return _voronoi_regions(pts, self.bounds, names)


_SYLLABLES_A = ("Bel", "Dor", "Kra", "Lis", "Mor", "Nov", "Ost", "Pra", "Rad", "Sel", "Tor", "Vel", "Zar",
                "Hal", "Gor", "Bren", "Lub", "Kos")
_SYLLABLES_B = ("ava", "ec", "ice", "ov", "ska", "nik", "ina", "grad", "ovo", "any", "stein", "berg", "dorf")


def _district_names(rng: np.random.Generator, n: int) -> list[str]:
    """Unique, pronounceable, seeded district names."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for _ in range(n):
        base = _SYLLABLES_A[rng.integers(len(_SYLLABLES_A))] + _SYLLABLES_B[rng.integers(len(_SYLLABLES_B))]
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base} {seen[base]}")
    return names


def _voronoi_regions(
    pts: np.ndarray, bounds: tuple[float, float, float, float], names: list[str]
) -> tuple[list, list[int], list[str]]:
    """Voronoi cells of ``pts`` clipped to ``bounds``, numbered north-west to south-east."""
    import shapely

    box = shapely.box(*bounds)
    cells = shapely.voronoi_polygons(shapely.MultiPoint(pts), extend_to=box, ordered=True)
    polys = [shapely.intersection(g, box) for g in shapely.get_parts(cells)]
    order = sorted(range(len(polys)), key=lambda i: (-round(pts[i, 1], 6), round(pts[i, 0], 6)))
    return [polys[i] for i in order], list(range(1, len(order) + 1)), [names[i] for i in order]


def _nearest_blob(
    u: np.ndarray,
    v: np.ndarray,
    base: np.ndarray,
    offsets: tuple[int, ...],
    uc_t: np.ndarray,
    vc_t: np.ndarray,
    r_t: np.ndarray,
    modulation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance inside the deepest of several candidate blobs, and relative radius there.

    Candidates are looked up in flat tables (centre ``uc_t, vc_t``, radius ``r_t``) at
    ``base + offset``; the radius is modulated per pixel to give ragged, leafy outlines.
    """
    uc_f, vc_f, r_f = uc_t.ravel(), vc_t.ravel(), r_t.ravel()
    best = np.full(u.shape, -np.inf)
    rel = np.ones(u.shape)
    for off in offsets:
        idx = base + off
        d = np.sqrt((u - np.take(uc_f, idx)) ** 2 + (v - np.take(vc_f, idx)) ** 2)
        r = np.take(r_f, idx) * modulation
        sd = r - d
        better = sd > best
        best = np.where(better, sd, best)
        rel = np.where(better, d / r, rel)
    return best, rel


#: Radius of a candidate blob that is absent (never the deepest).
_ABSENT = -1.0e6


# ---- crop / weed -----------------------------------------------------------------------------

_CW = {c.name: c.id for c in CROPWEED_CLASSES}
_SOIL = np.array([128.0, 102.0, 78.0, 120.0])
_CROP = np.array([58.0, 128.0, 48.0, 190.0])
_WEED = np.array([63.0, 134.0, 52.0, 180.0])
_CW_SENSOR_SD = 3.0


class _Cropweed(_Generator):
    """Drone-like 1 cm scene: crop rows of regularly spaced plants, weeds between the rows."""

    kind = "cropweed"
    spec = _Spec("EPSG:32632", 0.01, (400000.0, 5000000.0), "uint8", ("red", "green", "blue", "nir"))

    def __init__(self, width: int, height: int, seed: int) -> None:
        super().__init__(width, height, seed)
        rng = np.random.default_rng([seed, zlib.crc32(b"cropweed/rows")])
        self.angle_deg = float(rng.uniform(2.0, 8.0) * rng.choice([-1.0, 1.0]))
        self.period = float(rng.uniform(55.0, 70.0))  # row spacing, px (0.55-0.70 m)
        self.spacing = float(rng.uniform(0.38, 0.5) * self.period)  # plant spacing along a row, px
        self.radius = 0.2 * self.period  # mean plant radius, px
        self.offset = float(rng.uniform(0.0, self.period))
        self.cos = math.cos(math.radians(self.angle_deg))
        self.sin = math.sin(math.radians(self.angle_deg))
        self.k = {name: _key(seed, f"cropweed/{name}") for name in (
            "phase", "plants", "leaf", "weeds", "weed_shape", "moisture", "clods", "soil_mid",
            "veg_tex", "sensor",
        )}

    def tags(self) -> dict[str, str]:
        """Row geometry, so tests and users can relate labels to rows (v = y·cos − x·sin, px)."""
        t = super().tags()
        t.update(
            GEOSEG_ROW_ANGLE_DEG=repr(self.angle_deg),
            GEOSEG_ROW_PERIOD_PX=repr(self.period),
            GEOSEG_ROW_OFFSET_PX=repr(self.offset),
        )
        return t

    def _pixels(self, ry: np.ndarray, rx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, period = self.k, self.period
        u = rx[None, :] * self.cos + ry[:, None] * self.sin  # along the rows
        v = ry[:, None] * self.cos - rx[None, :] * self.sin  # across the rows

        # Crop plants: row i, plant j, each with a hashed offset, size and a chance to be missing.
        # Per-plant values live in a small table over the (row, plant) range of this strip.
        row = np.floor((v - self.offset) / period + 0.5).astype(np.int64)
        rows_t = np.arange(int(row.min()), int(row.max()) + 1, dtype=np.int64)
        phase_t = _u01(_hash(k["phase"], rows_t)) * self.spacing
        j = np.floor((u - phase_t[row - rows_t[0]]) / self.spacing + 0.5).astype(np.int64)
        plants_t = np.arange(int(j.min()) - 1, int(j.max()) + 2, dtype=np.int64)
        h = _hash(k["plants"], rows_t[:, None], plants_t[None, :])
        jitter = (_field(h, 0) - 0.5) * 0.25 * self.spacing
        uc_t = phase_t[:, None] + plants_t[None, :] * self.spacing + jitter
        vc_t: np.ndarray = self.offset + rows_t[:, None] * period + (_field(h, 1) - 0.5) * 0.12 * period
        r_t = np.where(_field(h, 3) > 0.07, self.radius * (0.7 + 0.6 * _field(h, 2)), _ABSENT)
        base = (row - rows_t[0]) * plants_t.size + (j - plants_t[0])
        leaf = 0.8 + 0.4 * _fbm(ry, rx, 4.0, 2, k["leaf"])
        sd_crop, rel_crop = _nearest_blob(u, v, base, (-1, 0, 1), uc_t, vc_t, r_t, leaf)

        # Weeds: one candidate per (along-row cell, inter-row gap); most sit mid-gap.
        cell_u = 40.0
        a = np.floor(u / cell_u).astype(np.int64)
        g = np.floor((v - self.offset) / period).astype(np.int64)
        cells_t = np.arange(int(a.min()) - 1, int(a.max()) + 2, dtype=np.int64)
        gaps_t = np.arange(int(g.min()) - 1, int(g.max()) + 2, dtype=np.int64)
        h = _hash(k["weeds"], cells_t[:, None], gaps_t[None, :])
        across = np.where(_field(h, 1) < 0.12, _field(h, 3), 0.5 + (_field(h, 3) - 0.5) * 0.35)
        uc_t = (cells_t[:, None] + _field(h, 2)) * cell_u
        vc_t = self.offset + (gaps_t[None, :] + across) * period
        r_t = np.where(_field(h, 0) < 0.7, 3.5 + 7.5 * _field(h, 4), _ABSENT)
        n_g = gaps_t.size
        base = (a - cells_t[0]) * n_g + (g - gaps_t[0])
        offsets = tuple(da * n_g + dg for da in (-1, 0, 1) for dg in (-1, 0, 1))
        shape = 0.55 + 0.9 * _fbm(ry, rx, 3.0, 2, k["weed_shape"])
        sd_weed, rel_weed = _nearest_blob(u, v, base, offsets, uc_t, vc_t, r_t, shape)

        alpha_c = np.clip(sd_crop + 0.5, 0.0, 1.0)
        alpha_w = np.clip(sd_weed + 0.5, 0.0, 1.0)
        labels = np.full(u.shape, _CW["soil"], dtype=np.uint8)
        labels[alpha_c >= 0.5] = _CW["crop"]
        labels[alpha_w >= 0.5] = _CW["weed"]

        moisture = 0.85 + 0.3 * _fbm(ry, rx, 300.0, 3, k["moisture"])
        grain = 1.0 + 0.25 * (_value_noise(ry, rx, 1.7, k["clods"]) - 0.5) + 0.15 * (
            _fbm(ry, rx, 14.0, 2, k["soil_mid"]) - 0.5
        )
        soil_mod = moisture * grain
        veg_tex = 1.0 + 0.15 * (_value_noise(ry, rx, 2.0, k["veg_tex"]) - 0.5)
        crop_mod = veg_tex * (0.75 + 0.35 * np.clip(1.0 - rel_crop, 0.0, 1.0))
        weed_mod = veg_tex * (0.75 + 0.35 * np.clip(1.0 - rel_weed, 0.0, 1.0))
        noise = _PixelNoise(k["sensor"], ry, rx)
        img = np.empty((4, *u.shape), dtype=np.uint8)
        for band in range(4):
            value = _SOIL[band] * soil_mod
            value += (_CROP[band] * crop_mod - value) * alpha_c
            value += (_WEED[band] * weed_mod - value) * alpha_w
            value += _CW_SENSOR_SD * noise.band(band)
            img[band] = np.clip(np.rint(value), 1, 255)
        return img, labels

    def regions(self) -> tuple[list, list[int], list[str]]:
        """Plots: 4-20 strips across the field with seeded, uneven widths."""
        import shapely

        n = int(min(20, max(4, round(self.width / 256))))
        rng = np.random.default_rng([self.seed, zlib.crc32(b"cropweed/regions")])
        edges = np.linspace(0.0, 1.0, n + 1)
        edges[1:-1] += rng.uniform(-0.25, 0.25, n - 1) / n
        minx, miny, maxx, maxy = self.bounds
        xs = minx + edges * (maxx - minx)
        xs[-1] = maxx
        polys = [shapely.box(xs[i], miny, xs[i + 1], maxy) for i in range(n)]
        return polys, list(range(1, n + 1)), [f"plot {i}" for i in range(1, n + 1)]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _temp_name(final: Path) -> Path:
    """A hidden temporary name next to ``final`` that keeps its extension (GDAL picks drivers by it)."""
    return final.with_name(f".{final.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{final.suffix}")


def _atomic(final: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a temporary file and rename it to ``final`` only when it succeeded."""
    tmp = _temp_name(final)
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        for p in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        raise


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


def _write_rasters(gen: _Generator, files: SceneFiles, block: int) -> None:
    """Write image and reference together, one tile-aligned window at a time."""
    tmp_img, tmp_ref = _temp_name(files.image), _temp_name(files.reference)
    grid = ChunkGrid(gen.height, gen.width, block, gen.transform)
    legend = files.legend
    try:
        img_profile = _tif_profile(gen, len(gen.spec.bands), gen.spec.dtype, block)
        ref_profile = _tif_profile(gen, 1, "uint8", block)
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
            for window in grid.windows():
                data, labels = gen.block(window)
                img.write(data, window=window.to_rasterio())
                ref.write(labels, 1, window=window.to_rasterio())
        os.replace(tmp_img, files.image)
        os.replace(tmp_ref, files.reference)
    except BaseException:
        tmp_img.unlink(missing_ok=True)
        tmp_ref.unlink(missing_ok=True)
        raise


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

    _atomic(path, _write)
