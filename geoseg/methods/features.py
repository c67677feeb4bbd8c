"""Per-pixel features: chosen bands plus spectral indices, computed chunk by chunk.

Bands are found by role (:mod:`geoseg.io.bandroles`), so the same job works for a 4-band synthetic
scene (``blue, green, red, nir``), an RGB orthophoto (GDAL's Red/Green/Blue), band files and
Sentinel-2 (``B02, B03, B04, B08`` with its sensor known). Standardisation statistics come from the
k-means sample, so they are computed once, on the client, deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import InputError
from geoseg.io.bandroles import BandInfo, bands_from_names, find_role
from geoseg.io.bandroles import find_band as band_position

#: Index name → (roles needed, formula over a dict of role arrays).
_EPS = np.float32(1e-6)
INDICES = {
    "ndvi": (("nir", "red"), lambda b: (b["nir"] - b["red"]) / (b["nir"] + b["red"] + _EPS)),
    "ndwi": (("green", "nir"), lambda b: (b["green"] - b["nir"]) / (b["green"] + b["nir"] + _EPS)),
    "exg": (
        ("red", "green", "blue"),
        lambda b: (2 * b["green"] - b["red"] - b["blue"]) / (b["red"] + b["green"] + b["blue"] + _EPS),
    ),
}

#: The indices the compiled k-means loop (:mod:`geoseg._kernels.kmeans_loops`) computes itself, with
#: the same operations as the formulas above: name → (code in the loop, roles in the loop's order).
FUSED_INDICES: dict[str, tuple[int, tuple[str, ...]]] = {
    "ndvi": (0, ("nir", "red")),
    "ndwi": (1, ("green", "nir")),
    "exg": (2, ("red", "blue", "green")),
}


def as_bands(bands: Sequence[BandInfo] | Sequence[str]) -> tuple[BandInfo, ...]:
    """A scene's bands (:attr:`Scene.bands <geoseg.io.scene.Scene.bands>`), or bands known by name only
    (a notebook's list: roles from the names, :func:`geoseg.io.bandroles.bands_from_names`)."""
    if all(isinstance(b, BandInfo) for b in bands):
        return tuple(bands)  # type: ignore[arg-type]
    return bands_from_names([str(b) for b in bands])


def find_band(bands: Sequence[BandInfo] | Sequence[str], role: str) -> int:
    """Index of the band playing ``role`` (e.g. ``"nir"``): see :mod:`geoseg.io.bandroles`.

    >>> find_band(["B01", "B02", "B03", "B04", "B08", "B8A"], "nir")
    4
    >>> find_band(["t0:red", "t0:green"], "green")
    1
    """
    return find_role(as_bands(bands), role)


@dataclass(frozen=True)
class FeatureSpec:
    """Which bands (by name; ``None`` = all) and which indices make up the feature vector."""

    bands: tuple[str, ...] | None = None
    indices: tuple[str, ...] = ()

    def resolve(self, bands: Sequence[BandInfo] | Sequence[str]) -> ResolvedFeatures:
        """Bind the spec to a scene's bands (or band names), failing early with a clear message."""
        unknown = [i for i in self.indices if i not in INDICES]
        if unknown:
            raise InputError(f"unknown spectral index {unknown}; choose from {sorted(INDICES)}")
        info = as_bands(bands)
        if self.bands is None:
            band_idx = tuple(range(len(info)))
        else:
            band_idx = tuple(band_position(info, b) for b in self.bands)
        roles = {r for i in self.indices for r in INDICES[i][0]}
        role_idx = {r: find_role(info, r) for r in sorted(roles)}
        names = tuple(info[i].name for i in band_idx) + tuple(self.indices)
        return ResolvedFeatures(band_idx, role_idx, self.indices, names)


@dataclass(frozen=True)
class ResolvedFeatures:
    """A feature spec bound to band positions: picklable, cheap to ship to every task."""

    band_idx: tuple[int, ...]
    role_idx: dict[str, int]
    indices: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return len(self.names)

    def fused_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """What the compiled k-means loop needs: band positions, index codes and the band position
        of each index's roles (one row per index, padded); ``None`` when an index is not one the
        loop knows (then the numpy path of :meth:`compute` is used)."""
        if any(name not in FUSED_INDICES for name in self.indices):
            return None
        codes = np.array([FUSED_INDICES[name][0] for name in self.indices], dtype=np.int64)
        roles = np.zeros((len(self.indices), 3), dtype=np.int64)
        for i, name in enumerate(self.indices):
            for j, role in enumerate(FUSED_INDICES[name][1]):
                roles[i, j] = self.role_idx[role]
        return np.array(self.band_idx, dtype=np.int64), codes, roles

    def compute(self, data: np.ndarray) -> np.ndarray:
        """Features ``(n_features, h, w)`` float32 from raw bands ``(bands, h, w)``."""
        out = np.empty((self.n_features,) + data.shape[1:], dtype=np.float32)
        for k, i in enumerate(self.band_idx):
            out[k] = data[i]
        roles = {r: data[i].astype(np.float32, copy=False) for r, i in self.role_idx.items()}
        for k, name in enumerate(self.indices, start=len(self.band_idx)):
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k] = INDICES[name][1](roles)
        return out
