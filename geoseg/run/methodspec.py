"""What a segmentation method declares to the run, so the workflow can run it without knowing it.

A :class:`MethodSpec` is one entry of :mod:`geoseg.run.registry` (one per ``method.kind``): the
pydantic model of its ``method:`` block, how it becomes a predictor on the cluster (fitted on the
global pixel sample, loaded from a checkpoint, or nothing), a check run before any output is
written, and the default class mapping of the evaluation. Its ``prepare`` returns a :class:`Prepared`:
the :class:`~geoseg.methods.predictors.ChunkPredictor` (whose ``legend()`` is the labels' legend),
what goes into the resume key, and what is written to ``model.json`` and ``run.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np

    from geoseg.io.scene import Scene
    from geoseg.methods.predictors import ChunkPredictor

#: How a method becomes a predictor: ``sample`` = fitted on the stratified pixel sample of the whole
#: scene (stage ``fit``), ``checkpoint`` = loaded from trained weights (stage ``load_model``),
#: ``none`` = nothing to fit or load (stage ``prepare``).
FitKind = Literal["sample", "checkpoint", "none"]

STAGE_OF: dict[str, str] = {"sample": "fit", "checkpoint": "load_model", "none": "prepare"}


@dataclass(frozen=True)
class FitContext:
    """What ``prepare`` may use: the cluster, the opened scene and the method's validated config."""

    client: Any  # distributed.Client
    scene: Scene
    config: Any  # an instance of the method's MethodSpec.config
    gpu_workers: int = 0
    show_progress: bool = True

    def draw_sample(self, features: Any, sample_size: int, seed: int) -> np.ndarray:
        """The stratified sample ``(n, features)`` of valid pixels over the whole scene, drawn on the
        workers chunk by chunk of the fixed sampling grid (:data:`geoseg.methods.sampling.SAMPLE_CHUNK`),
        so what is fitted on it does not depend on the job's ``chunk_size``. ``features``: anything with
        ``compute(data) -> (f, h, w)`` and ``n_features`` (``ResolvedFeatures``, a threshold index)."""
        from geoseg.methods.sampling import SAMPLE_CHUNK
        from geoseg.run.labelling import draw_sample

        return draw_sample(self.client, self.scene, self.scene.chunk_grid(SAMPLE_CHUNK), features, sample_size,
                           seed, self.show_progress)


@dataclass
class Prepared:
    """A method ready to label chunks.

    ``resume``: what, besides the inputs and the job's ``method:`` block, the labels depend on (the
    fitted model, the checkpoint's digests); it goes into the resume key, so a changed model never
    reuses chunks. ``model_json``: written to ``model.json`` when given. ``record``: entries for
    ``run.json`` (and ``RunResult.extra``), e.g. the sample actually drawn.
    """

    predictor: ChunkPredictor
    resume: str = ""
    model_json: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One segmentation method as the run sees it (see :mod:`geoseg.run.registry`)."""

    kind: str  # the job file's ``method.kind``
    config: type[BaseModel]  # strict model of the ``method:`` block, with ``kind: Literal[<kind>]``
    fit: FitKind
    prepare: Callable[[FitContext], Prepared]
    #: Run on the opened scene before anything is written; raises a GeosegError for a job that cannot work.
    check: Callable[[Any, Scene], object] | None = None
    #: Class mapping of the evaluation when the job names none (``hungarian`` for cluster ids).
    mapping: str = "identity"

    @property
    def stage(self) -> str:
        """Name of the stage that runs ``prepare`` (in ``run.json``'s stage times)."""
        return STAGE_OF[self.fit]
