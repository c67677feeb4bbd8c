"""Index thresholds as a method of the run: the classic baseline (ExG + Otsu, NDVI > 0.3, NDWI water).

Fixed thresholds need nothing fitted; (multi-)Otsu thresholds are found on the histogram of the global
stratified sample (drawn on the workers, so the thresholds, and the labels, do not depend on
``chunk_size``). The numerics are :mod:`geoseg.methods.threshold`.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from geoseg.run.methodspec import FitContext, MethodSpec, Prepared
from geoseg.run.schema import MAX_SEED, ClassSpec, StrictModel

if TYPE_CHECKING:
    from geoseg.io.scene import Scene


class SmoothingConfig(StrictModel):
    """Smoothing of the index before thresholding: a median of ``size`` pixels or a Gaussian of ``sigma``."""

    kind: Literal["median", "gaussian"] = "median"
    size: int = Field(3, ge=3, le=31)
    sigma: float = Field(1.0, gt=0, le=8)

    @field_validator("size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"median size must be odd, got {v}")
        return v


class ThresholdConfig(StrictModel):
    """An index cut at fixed values or at (multi-)Otsu thresholds of the global sample.

    ``index``: ``ndvi``, ``ndwi``, ``exg``, a band, or an expression of bands (a role such as ``nir``, a
    band name, or ``layer.band``), numbers and ``+ - * /``. ``threshold``: ``otsu`` (two classes),
    ``multi-otsu`` (``n_classes``), a number or an ascending list of numbers. ``classes``: the output
    classes, lowest index values first.
    """

    kind: Literal["threshold"] = "threshold"
    index: str = Field("exg", min_length=1, max_length=200)
    threshold: Literal["otsu", "multi-otsu"] | float | list[float] = "otsu"
    n_classes: int = Field(2, ge=2, le=16)
    bins: int = Field(256, ge=16, le=4096)
    sample_size: int = Field(200_000, ge=1_000, le=50_000_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    smoothing: SmoothingConfig | None = None
    classes: list[ClassSpec] | None = Field(None, max_length=17)

    @property
    def fixed(self) -> list[float] | None:
        if isinstance(self.threshold, str):
            return None
        return [self.threshold] if isinstance(self.threshold, float) else list(self.threshold)

    @property
    def classes_out(self) -> int:
        """How many classes the thresholds make."""
        fixed = self.fixed
        if fixed is not None:
            return len(fixed) + 1
        return 2 if self.threshold == "otsu" else self.n_classes

    @field_validator("threshold")
    @classmethod
    def _ascending(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or len(v) > 15 or any(b <= a for a, b in itertools.pairwise(v))):
            raise ValueError("fixed thresholds must be 1 to 15 strictly ascending numbers")
        return v

    @field_validator("classes")
    @classmethod
    def _unique_ids(cls, v: list[ClassSpec] | None) -> list[ClassSpec] | None:
        ids = [c.id for c in v or []]
        if len(set(ids)) != len(ids):
            raise ValueError(f"class ids must be unique, got {ids}")
        return v

    @model_validator(mode="after")
    def _classes_match(self) -> ThresholdConfig:
        if self.classes is not None and len(self.classes) != self.classes_out:
            raise ValueError(f"the threshold makes {self.classes_out} classes but {len(self.classes)} are named")
        return self


def prepare(ctx: FitContext) -> Prepared:
    """Resolve the index, draw the global sample when Otsu or the smoothing's fill needs it, fit."""
    from geoseg.methods.threshold import ThresholdPredictor, fit_threshold, resolve_index, threshold_legend

    cfg, scene = ctx.config, ctx.scene
    index = resolve_index(cfg.index, scene.bands or scene.band_names)
    n_classes = cfg.classes_out
    classes = threshold_legend(n_classes, cfg.classes)
    sm = cfg.smoothing
    sample = None
    if cfg.fixed is None or sm is not None:
        sample = ctx.draw_sample(index, cfg.sample_size, cfg.seed)
    model = fit_threshold(
        index.text, n_classes, cfg.fixed, sample, cfg.bins,
        smoothing=sm.kind if sm else "none", size=sm.size if sm else 3, sigma=sm.sigma if sm else 1.0,
    )
    model_json = model.to_json()
    return Prepared(ThresholdPredictor(model, index, classes), json.dumps(model_json), model_json)


def check(cfg: ThresholdConfig, scene: Scene) -> None:
    """The index's bands found by role or name on the client, before the cluster starts."""
    from geoseg.methods.threshold import resolve_index

    resolve_index(cfg.index, scene.bands or scene.band_names)


METHOD = MethodSpec("threshold", ThresholdConfig, fit="sample", prepare=prepare, check=check)
