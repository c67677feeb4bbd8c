"""The job file: a strict, versioned description of one segmentation run.

Job files are YAML parsed with a safe loader and validated by pydantic models that forbid
unknown keys, so a typo is an error with the key's location rather than a silently
ignored setting. Relative paths are taken from the job file's folder.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from geoseg.errors import GeosegError, JobSpecError
from geoseg.io.entries import InputEntry, MaskEntry
from geoseg.io.jobfile import load_yaml_text as load_yaml_text  # where job-file YAML was read
from geoseg.io.jobfile import read_yaml, validate_mapping
from geoseg.run import instanceregistry, registry
from geoseg.run.instancemethods.watershed import WatershedInstancesConfig
from geoseg.run.methods.deeplab import DeepLabConfig as DeepLabConfig  # the method configs, where they were
from geoseg.run.methods.kmeans import FeaturesConfig as FeaturesConfig
from geoseg.run.methods.kmeans import KMeansConfig
from geoseg.run.methods.threshold import SmoothingConfig as SmoothingConfig
from geoseg.run.methods.threshold import ThresholdConfig as ThresholdConfig
from geoseg.run.schema import MAX_SEED as MAX_SEED
from geoseg.run.schema import ClassSpec
from geoseg.run.schema import StrictModel as _Strict

#: The method configs live with their methods (geoseg.run.methods); the job's ``method:`` block is
#: any registered one, discriminated on ``kind`` (geoseg.run.registry).
if TYPE_CHECKING:
    Method = Any
    InstanceMethod = Any
else:
    Method = registry.method_union()
    InstanceMethod = instanceregistry.method_union()


class ReferenceConfig(_Strict):
    """A reference map: a raster of class ids, or a vector layer.

    A vector layer's class: ``field`` (integers; or class names, matched to the job's
    ``classes`` by name or mapped by ``values``), or ``value`` for every polygon (a
    presence-only layer such as building footprints). ``background``: the class of every pixel
    that no polygon covers (without it those pixels are not scored, and the report says how
    much of the scene was). ``nodata``: a raster's values that are no data (one or a list), over what
    the file declares or names: USDA CDL's 0 "Background", a WorldCover tile's undeclared 0.
    """

    path: Path
    field: str | None = None
    value: int | None = None
    background: int | None = None
    values: dict[str, int] | None = None
    nodata: int | list[int] | None = None


class RegionsConfig(_Strict):
    """Regions for per-region metrics: a vector layer with an id field, or a grid of square cells."""

    path: Path | None = None
    field: str | None = None
    grid_cell_m: float | None = Field(None, gt=0)
    #: Several features with one id count as one region (else refused: ids are meant to be unique).
    merge_duplicates: bool = False
    #: Repair invalid geometries with ``make_valid`` (else refuse them with the reason).
    repair_invalid: bool = True


class EvaluateConfig(_Strict):
    mapping: Literal["identity", "hungarian", "many-to-one"] | None = None


class VectorizeConfig(_Strict):
    enabled: bool = True
    min_mapping_unit_px: int = Field(0, ge=0)
    simplify_tolerance: float = Field(0.0, ge=0)
    layout: Literal["single", "per_class"] = "single"


class ObjectsConfig(_Strict):
    """Objects: 4-connected regions of ``classes``, counted per region in ``objects.csv``.

    A class is a label id, or a class name: every label the legend gives that name (after an
    evaluation, the class it was mapped to), so two k-means clusters mapped to "tree" are one class.

    ``instance_raster`` also writes ``instances.zarr`` (uint32 object ids, 0 = none). With a reference,
    ``reference_classes[i]`` (default: the same ids) is the reference class scored against ``classes[i]``.
    """

    classes: list[int | str] = Field(min_length=1, max_length=64)
    instance_raster: bool = False
    reference_classes: list[int] | None = None

    @model_validator(mode="after")
    def _parallel(self) -> ObjectsConfig:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"object classes must be unique, got {self.classes}")
        if self.reference_classes is not None and len(self.reference_classes) != len(self.classes):
            raise ValueError("reference_classes must give one reference class per object class")
        return self


class InstancesConfig(_Strict):
    """Instances of the "thing" classes, found after the labels are published (``panoptic.zarr``).

    ``things``: class names of the published legend (after an evaluation, the mapped classes) or label
    ids. ``method``: a registered instance method (:mod:`geoseg.run.instanceregistry`), by ``kind``.
    """

    method: InstanceMethod = Field(default_factory=WatershedInstancesConfig)
    things: list[int | str] = Field(min_length=1, max_length=64)

    @field_validator("things")
    @classmethod
    def _unique_things(cls, v: list[int | str]) -> list[int | str]:
        if len(set(v)) != len(v):
            raise ValueError(f"instance things must be unique, got {v}")
        if any(isinstance(t, int) and not 0 <= t <= 254 for t in v):
            raise ValueError(f"thing label ids are 0..254 (255 is nodata), got {v}")
        return v


class ReferenceInstancesConfig(_Strict):
    """Reference instances: a vector layer (one instance per feature) or an instance raster (ids, 0 = none).

    The class of each: ``field`` (integer class ids, vector layers) or ``value`` for all (a class id or a
    class name of the published legend)."""

    path: Path
    field: str | None = None
    value: int | str | None = None

    @model_validator(mode="after")
    def _one_class_source(self) -> ReferenceInstancesConfig:
        if (self.field is None) == (self.value is None):
            raise ValueError("reference_instances need their class: give field (a class id per feature) or value")
        return self


class ExportConfig(_Strict):
    """GIS viewing of large results: a Cloud-Optimised GeoTIFF and/or Zarr pyramid levels."""

    cog: bool = False
    overviews: list[int] = Field(default_factory=list)
    resampling: Literal["mode", "nearest"] = "mode"


class ChipsConfig(_Strict):
    """Chips: a folder of image/mask files without georeference (PNG, JPEG, TIFF), run one by one.

    Each chip becomes a pixel grid on a local CRS with the declared pixel size (its outputs say so);
    its mask is its reference, and the chips are also scored together. ``images``/``masks`` (folders)
    and ``image_suffix``/``mask_suffix`` describe the layout (:mod:`geoseg.methods.training.chips`);
    ``split`` files name the chips of each part, ``use`` says which part to run.
    """

    folder: Path
    pixel_size_m: float = Field(gt=0)
    images: str | None = None
    masks: str | None = None
    image_suffix: str = ""
    mask_suffix: str | None = None
    colors: dict[str, int] | None = None
    split: dict[Literal["train", "val", "test"], Path] | None = None
    use: Literal["all", "train", "val", "test"] = "all"

    @model_validator(mode="after")
    def _part_named(self) -> ChipsConfig:
        if self.use != "all" and self.use not in (self.split or {}):
            raise ValueError(f"use: {self.use} needs a split file for it (split: {{{self.use}: FILE}})")
        return self


class MonitorConfig(_Strict):
    """Scheduled monitoring: how a scene's period (date) is read from its file name.

    ``date_pattern``: a regular expression with three groups (year, month, day), named groups
    ``year``, ``month``, ``day``, or one group of 8 digits read as ``YYYYMMDD``.
    """

    date_pattern: str = r"(\d{4})-?(\d{2})-?(\d{2})"
    reuse_kmeans_model: bool = True

    @field_validator("date_pattern")
    @classmethod
    def _date_groups(cls, v: str) -> str:
        try:
            check_date_pattern(v)
        except GeosegError as exc:
            raise ValueError(str(exc)) from None
        return v


def check_date_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled ``monitor.date_pattern``; ``JobSpecError`` unless its groups give a date.

    >>> check_date_pattern(r"scene_(\\d{8})").groups
    1
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise JobSpecError(f"date_pattern {pattern!r} is not a regular expression: {exc}") from None
    named = {"year", "month", "day"} <= set(rx.groupindex)
    if not (named or rx.groups in (1, 3)):
        raise JobSpecError(
            f"date_pattern {pattern!r} has {rx.groups} group(s); give three groups (year, month, day), "
            r"named groups (?P<year>...)(?P<month>...)(?P<day>...), or one group of 8 digits YYYYMMDD")
    return rx


def match_date(pattern: str, text: str) -> date | None:
    """The date ``pattern`` finds in ``text`` (see :func:`check_date_pattern`), or None.

    >>> match_date(r"scene_(\\d{8})", "scene_20240612.tif"), match_date(r"(\\d{4})-(\\d{2})-(\\d{2})", "a.tif")
    (datetime.date(2024, 6, 12), None)
    """
    rx = check_date_pattern(pattern)
    m = rx.search(text)
    if m is None:
        return None
    if {"year", "month", "day"} <= set(rx.groupindex):
        parts = m.group("year", "month", "day")
    elif rx.groups == 1:
        digits = m.group(1) or ""
        if not re.fullmatch(r"\d{8}", digits):
            return None
        parts = (digits[:4], digits[4:6], digits[6:])
    else:
        parts = m.group(1, 2, 3)
    try:
        return date(*(int(p) for p in parts))
    except (TypeError, ValueError):  # a group that did not take part, or no such day
        return None


class ClusterConfig(_Strict):
    """A local cluster's shape, used when no scheduler address is given."""

    n_workers: int = Field(2, ge=1, le=256)
    threads_per_worker: int = Field(1, ge=1, le=64)
    #: Per worker; default 4 GiB, or the machine's RAM shared among the workers when that is less.
    memory_limit: str | None = None
    dashboard: bool = True
    #: Seconds to wait for a given scheduler (``--scheduler``) to answer before giving up.
    connect_timeout: float = Field(10.0, gt=0, le=3600)

    @field_validator("memory_limit")
    @classmethod
    def _a_size(cls, v: str | None) -> str | None:
        from geoseg.run.limits import parse_memory

        if v is not None:
            try:
                parse_memory(v)
            except GeosegError as exc:
                raise ValueError(str(exc)) from None
        return v


class GridConfig(_Strict):
    """The job's grid (every output lies on it); what is left out follows the default rule (README)."""

    crs: str | None = None
    resolution: float | list[float] | None = None
    bounds: list[float] | None = Field(None, min_length=4, max_length=4)
    like: str | None = None

    @model_validator(mode="after")
    def _like_alone(self) -> GridConfig:
        if self.like and (self.crs or self.resolution or self.bounds):
            raise ValueError("grid like: FILE takes that file's grid; give it alone")
        return self


class JobSpec(_Strict):
    """One run: inputs, method, outputs. See ``workflows/*.yaml`` for complete examples."""

    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    inputs: list[str | InputEntry] = Field(default_factory=list)
    #: Chips instead of inputs: a folder of non-georeferenced images with their masks (ChipsConfig).
    chips: ChipsConfig | None = None
    grid: GridConfig | None = None
    masks: list[MaskEntry] = Field(default_factory=list)
    #: The sensor whose band numbers (``B4``, ``B8A``) name the inputs' bands: its table gives their roles.
    sensor: Literal["sentinel2", "landsat4", "landsat5", "landsat7", "landsat8", "landsat9"] | None = None
    output: Path | str  # a str only for an fsspec URL (s3://bucket/prefix), see geoseg.io.storage
    chunk_size: int = Field(2048, ge=64, le=16384)
    method: Method = Field(default_factory=KMeansConfig)
    classes: list[ClassSpec] | None = Field(None, max_length=255)
    reference: ReferenceConfig | None = None
    regions: RegionsConfig | None = None
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    vectorize: VectorizeConfig = Field(default_factory=VectorizeConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    objects: ObjectsConfig | None = None
    instances: InstancesConfig | None = None
    reference_instances: ReferenceInstancesConfig | None = None
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    allow_gdal_virtual: bool = False

    @field_validator("classes")
    @classmethod
    def _unique_class_ids(cls, v: list[ClassSpec] | None) -> list[ClassSpec] | None:
        ids = [c.id for c in v or []]
        if len(set(ids)) != len(ids):
            raise ValueError(f"class ids must be unique, got {ids}")
        return v

    @model_validator(mode="after")
    def _inputs_or_chips(self) -> JobSpec:
        if bool(self.inputs) == (self.chips is not None):
            raise ValueError("give inputs (georeferenced images) or chips (a folder of image/mask chips), one of them")
        if self.chips is not None and self.reference is not None:
            raise ValueError("chips are scored against their own masks; leave reference out")
        if self.chips is not None and self.regions is not None:
            raise ValueError("chips have no place on Earth: regions do not apply to them")
        if self.chips is not None and self.instances is not None:
            raise ValueError("instances: are found on georeferenced inputs, not on chips")
        if self.reference_instances is not None and self.instances is None:
            raise ValueError("reference_instances score the instances of an instances: block; add one")
        return self

    @field_validator("output", mode="before")
    @classmethod
    def _output_path_or_url(cls, v: Any) -> Any:
        from geoseg.io.storage import is_url

        return str(v) if is_url(v) else Path(v) if isinstance(v, str) else v

    @field_validator("inputs")
    @classmethod
    def _no_empty_inputs(cls, v: list[Any]) -> list[Any]:
        if any(isinstance(s, str) and not s.strip() for s in v):
            raise ValueError("input paths must not be empty")
        return v

    def resolved(self, base: Path) -> JobSpec:
        """A copy with every relative path taken from ``base`` (the job file's folder).

        File paths (output, reference, model ...) are resolved, so messages, ``run.json`` and the
        paths printed say ``/work/out``, not ``/work/jobs/../out``; inputs may be globs and stay as written.
        """

        def fix(p: Path | str) -> Any:
            s = str(p)
            if "://" in s or Path(s).is_absolute() or s.startswith("/vsi"):
                return type(p)(s) if isinstance(p, Path) else s
            return type(p)((base / s).resolve()) if isinstance(p, Path) else str(base / s)

        def fix_entry(e: Any) -> Any:  # an inputs:/masks: entry: its path(s) or stac href
            if isinstance(e, str):
                return fix(e)
            changes: dict[str, Any] = {}
            if e.path is not None:
                changes["path"] = fix(e.path) if isinstance(e.path, str) else [fix(p) for p in e.path]
            if e.stac is not None:
                changes["stac"] = fix(e.stac)
            return e.model_copy(update=changes)

        update: dict[str, Any] = {"inputs": [fix_entry(i) for i in self.inputs], "output": fix(self.output)}
        if self.masks:
            update["masks"] = [fix_entry(m) for m in self.masks]
        if self.grid is not None and self.grid.like:
            update["grid"] = self.grid.model_copy(update={"like": fix(self.grid.like)})
        if isinstance(self.method, DeepLabConfig):
            update["method"] = self.method.model_copy(update={"checkpoint": fix(self.method.checkpoint)})
        elif isinstance(self.method, KMeansConfig) and self.method.model is not None:
            update["method"] = self.method.model_copy(update={"model": fix(self.method.model)})
        if self.reference:
            update["reference"] = self.reference.model_copy(update={"path": fix(self.reference.path)})
        if self.reference_instances:
            update["reference_instances"] = self.reference_instances.model_copy(
                update={"path": fix(self.reference_instances.path)})
        if self.instances is not None:  # any file an instance method names (weights, prompts)
            m = self.instances.method
            paths = {k: fix(v) for k, v in m if isinstance(v, Path)}
            update["instances"] = self.instances.model_copy(update={"method": m.model_copy(update=paths)})
        if self.regions and self.regions.path:
            update["regions"] = self.regions.model_copy(update={"path": fix(self.regions.path)})
        if self.chips is not None:
            split = {k: fix(v) for k, v in (self.chips.split or {}).items()} or None
            update["chips"] = self.chips.model_copy(update={"folder": fix(self.chips.folder), "split": split})
        return self.model_copy(update=update)


def _accept_registered_methods() -> None:
    """Rebuild ``JobSpec.method`` from the registry, so a method registered later is accepted (strictly)."""
    from pydantic.fields import FieldInfo

    JobSpec.__pydantic_fields__["method"] = FieldInfo.from_annotated_attribute(
        registry.method_union(), Field(default_factory=KMeansConfig))
    JobSpec.model_rebuild(force=True)


registry.on_change(_accept_registered_methods)


def _accept_registered_instance_methods() -> None:
    """Rebuild ``instances.method`` from the instance registry (:mod:`geoseg.run.instanceregistry`)."""
    from pydantic.fields import FieldInfo

    InstancesConfig.__pydantic_fields__["method"] = FieldInfo.from_annotated_attribute(
        instanceregistry.method_union(), Field(default_factory=WatershedInstancesConfig))
    InstancesConfig.model_rebuild(force=True)
    JobSpec.model_rebuild(force=True)


instanceregistry.on_change(_accept_registered_instance_methods)


def parse_job(data: dict[str, Any], source: str = "job") -> JobSpec:
    """Validate a job given as a dict; errors name the offending keys."""
    return validate_mapping(JobSpec, data, source, "job")


def load_job(path: str | Path) -> JobSpec:
    """Read a YAML job file (safe loader), validate it and resolve its relative paths."""
    path = Path(path)
    return parse_job(read_yaml(path, "job file"), str(path)).resolved(path.resolve().parent)
