"""The ``cropweed`` scene: a 1 cm, 4-band drone-like orthomosaic of crop rows, weeds and soil.

Crop and weed share nearly the same spectra, so only spatial context (the rows: regularly
spaced plants on lines, weeds mostly between them) separates them; textured soil fills the rest.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from geoseg.legend import CROPWEED_CLASSES
from geoseg.samples.generator import _Generator, _Spec
from geoseg.samples.noise import _fbm, _field, _hash, _key, _PixelNoise, _u01, _value_noise


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


