"""How labels are polygonised and written: :class:`VectorizeOptions`, checked once where they enter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from geoseg.errors import JobSpecError
from geoseg.legend import NODATA_LABEL
from geoseg.options import coerce
from geoseg.vector.polygonize import CONNECTIVITY
from geoseg.vector.seams import ROUND_PIECES as SEAM_ROUND_PIECES

#: Layer name of ``layout="single"``.
DEFAULT_LAYER = "polygons"

Layout = Literal["single", "per_class"]


@dataclass(frozen=True)
class VectorizeOptions:
    """What :func:`geoseg.vector.vectorize.vectorize_labels` makes, and how it runs.

    ``skip_classes``: classes that make no polygons (nodata by default). ``min_mapping_unit_px``: sieve
    regions smaller than this many pixels first (halo = ``sieve_halo_px``, default the unit itself).
    ``simplify_tolerance`` (CRS units): coverage-preserving simplification of all polygons together on
    the client (memory ∝ output size). ``layout``: one layer ``layer_name``, or one layer per class
    named after the class. ``seam_round_pieces``: how many new seam pieces start a merge round.
    ``threads``: polygonising threads without a cluster (default one per core); ``tile_px``: the side
    of the tiles polygonised one per task. ``show_progress``: a bar of chunks done on stderr, when it
    is a terminal. ``connectivity``: 4 (pixels sharing an edge), the only one geoseg makes.
    """

    connectivity: int = CONNECTIVITY
    skip_classes: Sequence[int] = (NODATA_LABEL,)
    min_mapping_unit_px: int = 0
    simplify_tolerance: float = 0.0
    layout: Layout = "single"
    layer_name: str = DEFAULT_LAYER
    sieve_halo_px: int | None = None
    seam_round_pieces: int = SEAM_ROUND_PIECES
    show_progress: bool = False
    threads: int | None = None
    tile_px: int | None = None

    def __post_init__(self) -> None:
        if self.connectivity == 8:
            raise JobSpecError(
                "connectivity=8 is not supported: geoseg vectorises 4-connected regions (pixels sharing an edge), "
                "which gives valid polygons identical to a single pass; use connectivity=4"
            )
        if self.connectivity != CONNECTIVITY:
            raise JobSpecError(f"connectivity must be 4, got {self.connectivity!r}")
        if self.layout not in ("single", "per_class"):
            raise JobSpecError(f"layout must be 'single' or 'per_class', got {self.layout!r}")
        if self.min_mapping_unit_px < 0:
            raise JobSpecError(f"min_mapping_unit_px must be >= 0, got {self.min_mapping_unit_px}")
        if not self.simplify_tolerance >= 0:
            raise JobSpecError(f"simplify_tolerance must be >= 0, got {self.simplify_tolerance}")
        if self.threads is not None and int(self.threads) < 1:
            raise JobSpecError(f"threads must be at least 1, got {self.threads}")
        if self.tile_px is not None and int(self.tile_px) < 16:
            raise JobSpecError(f"tile_px must be at least 16 pixels, got {self.tile_px}")
        object.__setattr__(self, "skip_classes", tuple(sorted({int(c) for c in self.skip_classes})))
        object.__setattr__(self, "min_mapping_unit_px", int(self.min_mapping_unit_px))

    @property
    def halo_px(self) -> int:
        """Pixels each tile reads around it for the sieve (0 without one)."""
        return sieve_halo(self.min_mapping_unit_px, self.sieve_halo_px)

    @classmethod
    def coerce(cls, options: VectorizeOptions | Mapping[str, Any] | None = None, **keywords: Any) -> VectorizeOptions:
        """The options as one object: an instance as it is, or a mapping and/or keywords (checked once)."""
        return coerce(cls, options, keywords, "vectorize_labels")


def sieve_halo(min_mapping_unit_px: int, sieve_halo_px: int | None) -> int:
    """The sieve's halo: ``sieve_halo_px``, default the minimum mapping unit itself; 0 without a sieve."""
    if min_mapping_unit_px <= 1:
        return 0
    return int(min_mapping_unit_px if sieve_halo_px is None else sieve_halo_px)
