"""The ``landcover`` scene: a 10 m, 4-band satellite-like tile with calibrated class shares and districts.

Cropland parcels, forest, water, grassland, built-up and bare land (``LANDCOVER_CLASSES``)
compete through noise scores whose thresholds are calibrated once on a coarse,
block-independent sample, so class proportions hold at any scene size; a nodata corner wedge
and Voronoi district polygons (the regions layer) complete the scene.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from geoseg.legend import LANDCOVER_CLASSES
from geoseg.samples.generator import _STRIP_PIXELS, _Generator, _Spec, _upper_threshold
from geoseg.samples.noise import (
    _COS16,
    _SIN16,
    _cell_candidates,
    _contrast,
    _fbm,
    _field,
    _hash,
    _key,
    _PixelNoise,
    _value_noise,
)

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


