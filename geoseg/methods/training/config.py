"""Training configuration: image/reference pairs and every setting of a run, validated up front.

``geoseg train JOB.yaml`` reads the same settings from a YAML job file (:func:`load_train_job`,
see ``workflows/*-train.yaml``); relative paths in it are taken from the file's folder.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geoseg.legend import ClassInfo
from geoseg.methods.architectures import ArchitectureName, architecture, check_tile_size


class TrainPair(BaseModel):
    """One training image and its reference: a class-id raster on the same grid, or a vector layer."""

    model_config = ConfigDict(extra="forbid")

    image: Path
    reference: Path | None = Field(default=None, description="raster of class ids on the image grid, 0 = unlabelled")
    vector: Path | None = Field(default=None, description="polygons (e.g. GeoPackage) with a class id field")
    class_field: str | None = None
    layer: str | None = None
    scale: float | None = Field(default=None, description="the image's units, value = stored × scale + offset, for "
                                "every band (as an input's `scale:`), where the file does not declare them")
    offset: float | None = None

    @model_validator(mode="after")
    def _checks(self) -> TrainPair:
        if (self.reference is None) == (self.vector is None):
            raise ValueError(f"{self.image}: give exactly one of `reference` (raster) or `vector`")
        if self.vector is not None and not self.class_field:
            raise ValueError(f"{self.image}: a vector reference needs `class_field` (the column holding class ids)")
        if self.scale is not None and (self.scale == 0 or not math.isfinite(self.scale)):
            raise ValueError(f"{self.image}: scale {self.scale} would make every value the same; give the factor the "
                             "data's documentation states (e.g. 0.0001)")
        if self.offset is not None and not math.isfinite(self.offset):
            raise ValueError(f"{self.image}: offset {self.offset} is not a number")
        return self


class TrainConfig(BaseModel):
    """Everything ``geoseg train`` needs; unknown keys are refused so typos do not go unnoticed."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[TrainPair] = Field(min_length=1)
    val_pairs: list[TrainPair] = Field(default_factory=list, description="separate validation images (optional)")
    bands: list[str] | None = Field(default=None, description="band names to use, in order; None = all")
    index_channels: list[str] = Field(
        default_factory=list,
        description="indices given to the network after the bands: exg, ndvi, ndwi, a band or a band expression "
        "(by role, e.g. (nir - red) / (nir + red)), computed from the bands above and standardised",
    )
    apply_scale: bool = Field(
        default=True,
        description="apply each image's scale/offset (GDAL band metadata) on read, as inference does; "
        "false = the stored numbers (inference must then set `apply_scale: false` too)",
    )
    normalisation: Literal["training", "scene"] = Field(
        default="scene",
        description="what each band and index channel is standardised by: each image's own mean and std (scene: "
        "another date's haze or brighter NIR is taken out; inference does the same per scene) or the training "
        "set's (training: a scene's class mix does not move the inputs)",
    )
    sensor: Literal["sentinel2", "landsat4", "landsat5", "landsat7", "landsat8", "landsat9"] | None = Field(
        default=None,
        description="the sensor whose band numbers (B04, B08) name the images' bands, as a job's `sensor:`; "
        "Sentinel-2 is implied when a band is named B8A",
    )
    classes: list[ClassInfo] = Field(min_length=2)
    architecture: ArchitectureName = Field(
        default="DeepLabV3Plus", description="segmentation-models-pytorch architecture (see geoseg.methods.architectures)"
    )
    encoder: str = "resnet18"
    encoder_weights: Path | None = None
    encoder_depth: Literal[3, 4, 5] = Field(
        default=3, description="encoder stages used; 3 trains ~1.3x faster on CPU than 5 (benchmarks/RESULTS-training.md)"
    )
    encoder_output_stride: Literal[8, 16] = Field(
        default=8,
        description="dilated encoders' output stride; when not given, 8 where the architecture accepts it "
        "(finer edges), else the architecture's own (PAN: 16)",
    )
    decoder_channels: int = Field(default=64, ge=8)
    refine_channels: int = Field(
        default=32, ge=0,
        description="hidden channels of the full-resolution refinement head that corrects the network's logits "
        "pixel by pixel from the input (sharp edges; geoseg.methods.refine); 0 = the plain network",
    )
    tile_size: int = Field(default=256, ge=32)
    tile_overlap: int | None = Field(
        default=None, ge=0, description="overlap used at inference, stored in the checkpoint; None = tile_size // 4"
    )
    batch_size: int = Field(default=8, ge=2)
    epochs: int = Field(default=10, ge=1)
    steps_per_epoch: int = Field(default=100, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    dice_weight: float = Field(default=1.0, ge=0, description="weight of the Dice term added to ce/focal")
    loss: Literal["ce", "focal", "dice"] = Field(
        default="ce", description="pixel term: cross-entropy, focal, or Dice alone (then dice_weight is unused)"
    )
    focal_gamma: float = Field(default=2.0, ge=0, description="focal loss exponent; 0 = weighted cross-entropy")
    class_weights: list[float] | None = Field(
        default=None, description="per-class weights of the ce/focal term, in the order of `classes`"
    )
    lr_schedule: Literal["one_cycle", "cosine", "constant"] = "one_cycle"
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="stop after this many epochs without a better smoothed val mIoU; None = off"
    )
    early_stopping_alpha: float = Field(
        default=0.5, gt=0, le=1,
        description="EMA weight of the newest val mIoU (the smoothed score early stopping and selection watch)",
    )
    early_stopping_min_delta: float = Field(default=0.0, ge=0, description="smallest EMA gain that counts")
    init_checkpoint: Path | None = Field(
        default=None, description="fine-tune: start from this checkpoint's weights and band statistics"
    )
    checkpoint_selection: Literal["smoothed", "best"] = Field(
        default="smoothed",
        description="keep the epoch where the EMA of val mIoU peaks (smoothed) or the single best val mIoU (best)",
    )
    weight_average: float = Field(
        default=0.99, ge=0, lt=1,
        description="decay per optimiser step of an exponential moving average of the weights (0.99: about the last "
                    "100 steps); validation scores and the checkpoint keeps the averaged network, whose labels move "
                    "less from epoch to epoch (0 = off: the raw network of the kept epoch)",
    )
    accumulate_steps: int = Field(
        default=1, ge=1, description="batches whose gradients are summed per optimiser step (a larger batch on CPU)"
    )
    augment_scale: float = Field(
        default=0.0, ge=0, lt=1,
        description="random zoom: a window 1/(1±s) the tile's side is resized to the tile (0 = off)",
    )
    augment_jitter: float = Field(
        default=0.0, ge=0, lt=1,
        description="brightness/contrast jitter: per-band gain 1±j and shift ±j std on the normalised bands (0 = off; "
        "0.3 carries a network normalised by the training set across dates, normalisation: scene needs none)",
    )
    augment_until: float = Field(
        default=0.5, gt=0, le=1,
        description="fraction of the epochs that see zoom and jitter; the rest see the pixels as delivered (flips and "
                    "rotations stay), so the network ends on the true values at class edges (1 = all epochs)",
    )
    cpu_bf16: bool = Field(default=False, description="bfloat16 autocast on CPU (only where measured faster)")
    channels_last: bool | None = Field(
        default=None, description="channels-last memory format; None = on CUDA only (it was slower on this CPU)"
    )
    baselines: bool = Field(
        default=True, description="score index + Otsu and k-means on the validation pixels beside the network"
    )
    class_balanced: bool = True
    val_fraction: float = Field(default=0.2, ge=0, lt=1, description="bottom share of each image's rows held out")
    val_tiles: int = Field(
        default=64, ge=1,
        description="validation pixels labelled per epoch, in tiles: at most val_tiles × tile_size² (blocks of the "
        "held-out rows, each labelled with a tile of context as a run labels the image)",
    )
    norm_windows: int = Field(default=32, ge=1, description="training windows sampled for band statistics")
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint: Path
    num_workers: int = Field(default=0, ge=0)
    progress: bool | None = Field(default=None, description="rich progress bar; None = only on a terminal")

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"tile_size must be a multiple of 16, got {v}")
        return v

    @field_validator("index_channels")
    @classmethod
    def _distinct_indices(cls, v: list[str]) -> list[str]:
        v = [t.strip() for t in v]
        if any(not t for t in v):
            raise ValueError("index_channels: an entry is empty")
        if len({t.lower() for t in v}) != len(v):
            raise ValueError(f"index_channels lists an index twice: {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_output_stride(cls, data: Any) -> Any:
        """An architecture that cannot dilate to 8 (PAN) gets its own stride unless the job names one (others keep
        the default 8 unset, so fine-tuning takes the checkpoint's)."""
        if isinstance(data, dict) and data.get("encoder_output_stride") is None:
            try:
                strides = architecture(str(data.get("architecture", "DeepLabV3Plus"))).strides
            except ValueError:
                return data  # the architecture field's own error says it
            if 8 not in strides:
                data = {**data, "encoder_output_stride": strides[0]}
        return data

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids) or any(not 1 <= i <= 254 for i in ids):
            raise ValueError(f"class ids must be unique and in 1..254 (0 = unlabelled), got {ids}")
        if self.tile_overlap is None:
            self.tile_overlap = self.tile_size // 4
        if 2 * self.tile_overlap > self.tile_size:
            raise ValueError("tile_overlap must be at most half of tile_size")
        check_tile_size(self.architecture, self.encoder_depth, self.encoder_output_stride, self.tile_size)
        if self.class_weights is not None:
            if len(self.class_weights) != len(self.classes):
                raise ValueError(f"class_weights has {len(self.class_weights)} values for {len(self.classes)} classes")
            if any(not (w >= 0 and math.isfinite(w)) for w in self.class_weights) or not any(self.class_weights):
                raise ValueError(f"class_weights must be finite, >= 0 and not all 0, got {self.class_weights}")
        if not self.apply_scale and any(p.scale is not None or p.offset is not None for p in self.pairs + self.val_pairs):
            raise ValueError("a pair's scale/offset and apply_scale: false contradict each other; give one of them")
        if self.early_stopping_patience is not None and not self.val_pairs and self.val_fraction == 0:
            raise ValueError("early stopping needs a validation score: set val_fraction > 0 or val_pairs")
        return self


class TrainJob(TrainConfig):
    """A training job file (``geoseg train JOB.yaml``): the keys of :class:`TrainConfig` plus
    ``version`` and an optional ``name``. See ``workflows/*-train.yaml`` for commented examples."""

    version: Literal[1] = 1
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,80}$")

    @field_validator("classes")
    @classmethod
    def _colours(cls, v: list[ClassInfo]) -> list[ClassInfo]:
        for c in v:
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", c.color):
                raise ValueError(f"class {c.id} ({c.name}): color must be #rrggbb, got {c.color!r}")
        return v

    def resolved(self, base: Path) -> TrainJob:
        """A copy with every relative path (images, references, encoder weights, checkpoint) taken from ``base``."""

        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        def fix_pair(pair: TrainPair) -> TrainPair:
            return pair.model_copy(update={"image": fix(pair.image), "reference": fix(pair.reference),
                                           "vector": fix(pair.vector)})

        return self.model_copy(update={
            "pairs": [fix_pair(p) for p in self.pairs],
            "val_pairs": [fix_pair(p) for p in self.val_pairs],
            "encoder_weights": fix(self.encoder_weights),
            "checkpoint": fix(self.checkpoint),
            "init_checkpoint": fix(self.init_checkpoint),
        })


def parse_train_job(data: Any, source: str = "training job") -> TrainJob:
    """Validate a training job given as a dict (unknown keys are errors); paths stay as given."""
    from geoseg.io.jobfile import validate_mapping

    return validate_mapping(TrainJob, data, source, "training job")


def load_train_job(path: str | os.PathLike) -> TrainJob:
    """Read a YAML training job (safe loader), validate it and resolve relative paths from its folder.

    The result is a :class:`TrainConfig` (a :class:`TrainJob`) ready for :func:`train`.
    """
    from geoseg.io.jobfile import read_yaml
    from geoseg.methods.training.chips import expand_chips

    path = Path(path)
    data = expand_chips(read_yaml(path, "training job"), path.resolve().parent)  # a chip folder -> pairs
    return parse_train_job(data, str(path)).resolved(path.resolve().parent)

