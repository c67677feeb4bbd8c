"""Hashed noise for synthetic scenes: pure functions of global pixel coordinates and a key.

Every value is a hash of integer lattice coordinates (splitmix64), so any window of a scene
can be computed alone and agrees with its neighbours across the border: value noise,
fractal (fbm) sums of it, jittered-grid Voronoi cell candidates and per-pixel sensor noise.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import numpy as np

_MASK64 = (1 << 64) - 1



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

