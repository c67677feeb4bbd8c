"""What an instance method declares to the run and what it returns (see :mod:`geoseg.run.instanceregistry`).

An instance method gets the finished, published ``labels.zarr``, the scene and the "thing" class ids
(:class:`InstanceContext`) and returns a finished instance store (a uint32 raster ``instances``, 0 =
none, ids that do not depend on chunking) with each id's class and score (:class:`InstanceOutput`). The
instance stage then writes ``panoptic.zarr`` (instances clipped to their class's pixels), the table, the
polygons and the scores, the same for every method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np

    from geoseg.io.scene import Scene


@dataclass(frozen=True)
class InstanceContext:
    """What an instance method may use: the published labels, the scene, the thing classes, a work folder."""

    labels: Path  # the finished labels.zarr (class ids of the published legend)
    scene: Scene
    things: tuple[int, ...]  # the label ids whose objects become instances
    work: Path  # an empty folder for the method's own store; removed after the stage
    config: Any  # an instance of the method's config
    client: Any = None  # distributed.Client
    gpu_workers: int = 0
    show_progress: bool = False


@dataclass(frozen=True)
class InstanceOutput:
    """A finished instance store (array ``instances``) and, index = id - 1, each id's class and score."""

    store: Path
    classes: np.ndarray
    scores: np.ndarray | None = None  # None: every instance scores 1 (no confidence, e.g. the watershed)
    record: dict[str, Any] = field(default_factory=dict)  # entries for run.json


@dataclass(frozen=True)
class InstanceMethodSpec:
    """One instance method as the run sees it."""

    kind: str
    config: type[BaseModel]  # with ``kind: Literal[<kind>] = <kind>``
    run: Callable[[InstanceContext], InstanceOutput]
    #: Run before the cluster starts (a checkpoint file, a missing package); raises a GeosegError.
    check: Callable[[Any, Scene], object] | None = None
