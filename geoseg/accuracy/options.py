"""What an evaluation is asked for besides the labels and the reference: :class:`EvaluationOptions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.accuracy.mapping import MAPPINGS, MappingSpec
from geoseg.errors import ClassIdError, InputError
from geoseg.options import coerce


@dataclass(frozen=True)
class EvaluationOptions:
    """How the reference is read, where pixels are counted and how labels map to classes.

    ``reference_field``: a vector reference's class field (integers, or names mapped by
    ``reference_values`` or else by ``class_names``); ``reference_value``: the class of every polygon
    instead; ``reference_background``: the class of every pixel no polygon covers (without it those
    pixels are left out); ``reference_nodata``: values of a reference raster that are no data, over what
    the file declares or names (USDA CDL's 0 "Background", a WorldCover tile's undeclared 0). ``regions``:
    a vector layer (``region_field`` = id, default the feature id; overlapping regions each count all
    their pixels; duplicate ids are refused unless
    ``merge_duplicates``; invalid polygons repaired unless ``repair_invalid`` is false) or
    ``grid_cell_m`` for square cells; neither = whole scene only. ``mapping``: ``identity``,
    ``hungarian``, ``many-to-one`` or a dict label → class. ``class_names``/``class_colors`` name and
    colour reference classes the reference itself does not.
    """

    reference_field: str | None = None
    reference_value: int | None = None
    reference_background: int | None = None
    reference_values: Mapping[str, int] | None = None
    reference_nodata: int | Sequence[int] | None = None
    regions: str | None = None
    region_field: str | None = None
    grid_cell_m: float | None = None
    mapping: MappingSpec = "identity"
    class_names: Mapping[int, str] | None = None
    class_colors: Mapping[int, str] | None = None
    merge_duplicates: bool = False
    repair_invalid: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.mapping, Mapping) and self.mapping not in MAPPINGS:
            raise ClassIdError(
                f"unknown class mapping {self.mapping!r}; use one of {', '.join(MAPPINGS)} or a dict label → class"
            )
        if self.regions is not None and self.grid_cell_m is not None:
            raise InputError("give either a regions layer or grid_cell_m, not both")
        if self.region_field is not None and self.regions is None:
            raise InputError("region_field needs a regions layer (regions=PATH)")
        _set(self,
             regions=None if self.regions is None else str(self.regions) if isinstance(self.regions, Path) else self.regions,
             grid_cell_m=None if self.grid_cell_m is None else float(self.grid_cell_m),
             reference_values=None if self.reference_values is None else dict(self.reference_values),
             reference_nodata=_values(self.reference_nodata),
             class_names=None if self.class_names is None else {int(k): str(v) for k, v in self.class_names.items()},
             class_colors=None if self.class_colors is None else dict(self.class_colors),
             merge_duplicates=bool(self.merge_duplicates), repair_invalid=bool(self.repair_invalid))  # fmt: skip

    @property
    def reference_nodata_values(self) -> tuple[int, ...]:
        """``reference_nodata`` as normalised: a sorted tuple, empty for the file's own word."""
        return _values(self.reference_nodata) or ()

    @classmethod
    def coerce(cls, options: EvaluationOptions | Mapping[str, Any] | None = None, **keywords: Any) -> EvaluationOptions:
        """The options as one object: an instance as it is, or a mapping and/or keywords (checked once)."""
        return coerce(cls, options, keywords, "evaluate")


def _values(nodata: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """One value or several as a sorted tuple of ints (``None``: the file's own word)."""
    if nodata is None:
        return None
    values = [nodata] if isinstance(nodata, int | float) else list(nodata)
    if not values or any(not float(v).is_integer() for v in values):
        raise InputError(f"reference_nodata must be whole numbers (class id values), got {nodata!r}")
    return tuple(sorted({int(v) for v in values}))


def _set(obj: object, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(obj, name, value)  # frozen: normalised once, here
