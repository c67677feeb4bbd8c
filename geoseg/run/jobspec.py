"""The job file: a strict, versioned description of one segmentation run.

Job files are YAML parsed with a safe loader and validated by pydantic models that forbid
unknown keys, so a typo is an error with the key's location rather than a silently
ignored setting. Relative paths are taken from the job file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geoseg.errors import JobSpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeaturesConfig(_Strict):
    """Bands (by name; all when omitted) and spectral indices used as k-means features."""

    bands: list[str] | None = None
    indices: list[Literal["ndvi", "ndwi", "exg"]] = Field(default_factory=list)


class KMeansConfig(_Strict):
    kind: Literal["kmeans"] = "kmeans"
    n_clusters: int = Field(6, ge=2, le=250)
    sample_size: int = Field(200_000, ge=1_000, le=50_000_000)
    seed: int = 0
    n_init: int = Field(4, ge=1, le=50)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    #: ``model.json`` of an earlier run: skip the fit and reuse its clusters (comparable ids over time).
    model: Path | None = None


class DeepLabConfig(_Strict):
    kind: Literal["deeplab"] = "deeplab"
    checkpoint: Path
    batch_size: int = Field(8, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    confidence: bool = False
    #: Test-time augmentation: average softmax probabilities over flips (4) or all 8 rotations/flips (d4).
    tta: Literal["none", "flips", "d4"] = "none"


Method = Annotated[KMeansConfig | DeepLabConfig, Field(discriminator="kind")]


class ReferenceConfig(_Strict):
    """A reference map: a raster of class ids, or a vector layer with a class field."""

    path: Path
    field: str | None = None


class RegionsConfig(_Strict):
    """Regions for per-region metrics: a vector layer with an id field, or a grid of square cells."""

    path: Path | None = None
    field: str | None = None
    grid_cell_m: float | None = Field(None, gt=0)


class EvaluateConfig(_Strict):
    mapping: Literal["identity", "hungarian", "many-to-one"] | None = None


class VectorizeConfig(_Strict):
    enabled: bool = True
    min_mapping_unit_px: int = Field(0, ge=0)
    simplify_tolerance: float = Field(0.0, ge=0)
    layout: Literal["single", "per_class"] = "single"


class ExportConfig(_Strict):
    """GIS viewing of large results: a Cloud-Optimised GeoTIFF and/or Zarr pyramid levels."""

    cog: bool = False
    overviews: list[int] = Field(default_factory=list)
    resampling: Literal["mode", "nearest"] = "mode"


class MonitorConfig(_Strict):
    """Scheduled monitoring: how a scene's period (date) is read from its file name."""

    date_pattern: str = r"(\d{4})-?(\d{2})-?(\d{2})"
    reuse_kmeans_model: bool = True


class ClusterConfig(_Strict):
    """A local cluster's shape, used when no scheduler address is given."""

    n_workers: int = Field(2, ge=1, le=256)
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = "4GiB"
    dashboard: bool = True
    #: Seconds to wait for a given scheduler (``--scheduler``) to answer before giving up.
    connect_timeout: float = Field(10.0, gt=0, le=3600)


class ClassSpec(_Strict):
    """One class of the reference's legend: id (0..254; 255 is nodata), name, colour ``#rrggbb``."""

    id: int = Field(ge=0, le=254)
    name: str = Field(min_length=1, max_length=200)
    color: str = Field("#808080", pattern=r"^#[0-9A-Fa-f]{6}$")


class JobSpec(_Strict):
    """One run: inputs, method, outputs. See ``workflows/*.yaml`` for complete examples."""

    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    inputs: list[str] = Field(min_length=1)
    output: Path | str  # a str only for an fsspec URL (s3://bucket/prefix), see geoseg.io.storage
    chunk_size: int = Field(2048, ge=64, le=16384)
    method: Method = Field(default_factory=KMeansConfig)
    classes: list[ClassSpec] | None = Field(None, max_length=255)
    reference: ReferenceConfig | None = None
    regions: RegionsConfig | None = None
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    vectorize: VectorizeConfig = Field(default_factory=VectorizeConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
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

    @field_validator("output", mode="before")
    @classmethod
    def _output_path_or_url(cls, v: Any) -> Any:
        from geoseg.io.storage import is_url

        return str(v) if is_url(v) else Path(v) if isinstance(v, str) else v

    @field_validator("inputs")
    @classmethod
    def _no_empty_inputs(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
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

        update: dict[str, Any] = {"inputs": [fix(i) for i in self.inputs], "output": fix(self.output)}
        if isinstance(self.method, DeepLabConfig):
            update["method"] = self.method.model_copy(update={"checkpoint": fix(self.method.checkpoint)})
        elif self.method.model is not None:
            update["method"] = self.method.model_copy(update={"model": fix(self.method.model)})
        if self.reference:
            update["reference"] = self.reference.model_copy(update={"path": fix(self.reference.path)})
        if self.regions and self.regions.path:
            update["regions"] = self.regions.model_copy(update={"path": fix(self.regions.path)})
        return self.model_copy(update=update)


def validate_mapping(model: type[BaseModel], data: Any, source: str, what: str) -> Any:
    """Validate ``data`` as ``model``; a JobSpecError names every offending key, one per line."""
    if not isinstance(data, dict):
        raise JobSpecError(f"{source}: a {what} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                msg = "unknown key (check its spelling)"
            else:
                msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        raise JobSpecError(f"{source} is not a valid {what}:\n" + "\n".join(lines)) from None


#: Largest job file read (bytes): real ones are a few kB.
MAX_YAML_BYTES = 1 << 20
#: Largest document after expanding aliases (nodes), and deepest nesting: a 1 kB "billion laughs"
#: alias bomb expands to ~10⁹ nodes when anything (json.dumps of run.json, pydantic) walks it.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 50


def _expanded_size(root: yaml.Node, where: Path) -> int:
    """Nodes in the document with every alias expanded, computed on the (small) node graph."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node, depth: int, path: set[int]) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in path:
            raise JobSpecError(f"{where}: a YAML anchor refers to itself; job files cannot be recursive")
        if depth > MAX_YAML_DEPTH:
            raise JobSpecError(f"{where}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            path.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [x for kv in node.value for x in kv]
            for child in children:
                total += size(child, depth + 1, path)
                if total > MAX_YAML_NODES:
                    raise JobSpecError(f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values "
                                       "(aliases of aliases?); job files are small, write it out plainly")
            path.discard(key)
        memo[key] = total
        return total

    return size(root, 0, set())


def read_yaml(path: Path, what: str) -> Any:
    """The content of a YAML file, read with the safe loader; unreadable or invalid files are JobSpecErrors.

    Size, nesting and alias expansion are limited before anything is built from the document.
    """
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise JobSpecError(f"{what} {path} is {path.stat().st_size:,} bytes, more than the "
                               f"{MAX_YAML_BYTES:,} a job file may have; is it the right file?")
        text = path.read_text()
    except OSError as exc:
        raise JobSpecError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise JobSpecError(f"{what} {path} is not UTF-8 text: {exc}") from exc
    return load_yaml_text(text, path)


def load_yaml_text(text: str, where: Path | str = "job") -> Any:
    """Safe-load one YAML document with the limits of :func:`read_yaml`."""
    where = Path(str(where))
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"{where} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise JobSpecError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def parse_job(data: dict[str, Any], source: str = "job") -> JobSpec:
    """Validate a job given as a dict; errors name the offending keys."""
    return validate_mapping(JobSpec, data, source, "job")


def load_job(path: str | Path) -> JobSpec:
    """Read a YAML job file (safe loader), validate it and resolve its relative paths."""
    path = Path(path)
    return parse_job(read_yaml(path, "job file"), str(path)).resolved(path.resolve().parent)
