"""The ``inputs:`` and ``masks:`` entries of a job: one schema each, used by job files, notebooks and the scene.

A job file's entries are validated by these models (unknown keys are errors) and :func:`open_scene
<geoseg.io.scene.open_scene>` reads the same objects, so what a key means is written in one place. A
plain string (a path or glob) is the same as ``{path: ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoseg.errors import InputError

Resampling = Literal["nearest", "bilinear", "cubic", "average", "mode", "lanczos"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputEntry(_Strict):
    """One ``inputs:`` entry as a mapping: files (``path``: a path, glob or list) or a STAC item/collection.

    ``kind``: ``mosaic`` (the files are tiles of one layer; first file in sorted order with a valid
    pixel wins), ``bands`` (each file is a layer; bands stacked) or ``auto`` (the default, also for a
    plain string: files on exactly one grid stack, otherwise a mosaic). ``resampling`` onto the job's
    grid (default ``bilinear``). ``assets``: STAC asset keys or ``eo:bands`` common names, one layer each.
    ``bands``: the role of each band of the entry, in order (``red``, ``nir``...; ``null`` for none),
    overriding what the files say. ``nodata``: the fill value of every file of the entry (overrides the
    files' own). ``apply_scale: false`` keeps digital numbers (no scale/offset from the files or STAC).
    ``scale``/``offset``: the units of every band of the entry (``value × scale + offset``), the user's word
    over what the files, STAC or the product's metadata say (for data that states none, or states them wrongly).
    """

    path: str | list[str] | None = None
    stac: str | None = None
    assets: list[str] | None = None
    kind: Literal["auto", "mosaic", "bands"] = "auto"
    resampling: Resampling | None = None
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    bands: list[str | None] | None = Field(None, min_length=1, max_length=1000)
    nodata: float | None = None
    apply_scale: bool = True
    scale: float | None = None
    offset: float | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InputEntry:
        if (self.path is None) == (self.stac is None):
            raise ValueError("an input gives exactly one of path or stac")
        if self.stac is None and self.assets:
            raise ValueError("assets are chosen only from a stac input")
        if self.scale is not None and (self.scale == 0 or self.scale != self.scale or abs(self.scale) == float("inf")):
            raise ValueError(f"scale {self.scale} would make every value the same; give the factor the data's "
                             "documentation states (e.g. 0.0001)")
        if (self.scale is not None or self.offset is not None) and not self.apply_scale:
            raise ValueError("scale/offset and apply_scale: false contradict each other; give one of them")
        if self.bands:
            from geoseg.io.bandroles import check_role_list

            check_role_list(self.bands)
        return self

    @property
    def paths(self) -> tuple[str, ...]:
        """``path`` as a tuple (empty for a STAC entry)."""
        return _as_tuple(self.path)


class MaskEntry(_Strict):
    """A QA / mask layer: pixels whose value is in ``drop_values`` or has a bit of ``drop_bits`` set become nodata."""

    path: str | list[str] | None = None
    stac: str | None = None
    asset: str | None = None
    band: int = Field(1, ge=1)
    drop_values: list[int] = Field(default_factory=list)
    drop_bits: list[int] = Field(default_factory=list)
    resampling: Resampling = "nearest"

    @model_validator(mode="after")
    def _one_source(self) -> MaskEntry:
        if (self.path is None) == (self.stac is None):
            raise ValueError("a mask gives exactly one of path or stac")
        if self.stac is not None and not self.asset:
            raise ValueError("a stac mask names its asset (key or eo:bands common name)")
        if not self.drop_values and not self.drop_bits:
            raise ValueError("a mask drops something: give drop_values and/or drop_bits")
        return self

    @property
    def paths(self) -> tuple[str, ...]:
        return _as_tuple(self.path)


def _as_tuple(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, (str, Path)):
        return (str(v),)
    return tuple(str(x) for x in v)


def as_input_entry(obj: Any) -> InputEntry:
    """An ``inputs:`` entry from a string, a path, a list of paths or a mapping (validated here)."""
    if isinstance(obj, InputEntry):
        return obj
    if isinstance(obj, (str, Path)):
        return InputEntry(path=str(obj))
    if isinstance(obj, (list, tuple)):
        return InputEntry(path=[str(p) for p in obj])
    return _validated(InputEntry, obj, "input")


def as_mask_entry(obj: Any) -> MaskEntry:
    """A ``masks:`` entry from a mapping (validated here)."""
    if isinstance(obj, MaskEntry):
        return obj
    return _validated(MaskEntry, obj, "mask")


def _validated(model: type[InputEntry] | type[MaskEntry], obj: Any, what: str) -> Any:
    from pydantic import ValidationError

    data = obj.model_dump(exclude_unset=True) if isinstance(obj, BaseModel) else obj
    if not isinstance(data, dict):
        raise InputError(f"an {what} entry is a path or a mapping, got {type(obj).__name__}")
    data = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or what
        raise InputError(f"{what} entry {where}: {err['msg'].removeprefix('Value error, ')}") from None
