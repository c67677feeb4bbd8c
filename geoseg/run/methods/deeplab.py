"""A trained network (DeepLabV3+ or any segmentation_models_pytorch architecture) as a method of the run.

Nothing is fitted: the checkpoint (safetensors + JSON sidecar) is checked against the scene before any
output is written, and each worker loads the network once (:mod:`geoseg.methods.deeplab`). Tasks ask
for a ``GPU`` resource where workers offer one. The resume key holds the checkpoint's digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from geoseg.errors import CheckpointError, ModelError
from geoseg.methods.predictors import DeepLabPredictor
from geoseg.run.methodspec import FitContext, MethodSpec, Prepared
from geoseg.run.schema import StrictModel

if TYPE_CHECKING:
    from geoseg.io.scene import Scene
    from geoseg.methods.checkpoint import CheckpointMeta

log = logging.getLogger(__name__)


class DeepLabConfig(StrictModel):
    kind: Literal["deeplab"] = "deeplab"
    checkpoint: Path
    batch_size: int = Field(8, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    confidence: bool = False
    #: Test-time augmentation: average softmax probabilities over flips (4) or all 8 rotations/flips (d4).
    tta: Literal["none", "flips", "d4"] = "none"


def check_deeplab_job(cfg: DeepLabConfig, scene: Scene) -> CheckpointMeta:
    """Refuse (``ModelError``) a checkpoint that is missing or was not trained for this scene.

    Runs before anything is written: both checkpoint files are there, the weights file is whole
    (:func:`~geoseg.methods.checkpoint.check_weights_file`), the scene has the roles or bands each of the
    model's index channels reads (``ModelInputError`` naming the index and the role), and the scene's
    bands (count, names, order) and pixel size match what the model was trained on, and its values reach the
    network in the units it learned (stored numbers or scale/offset applied).
    """
    from geoseg.methods.checkpoint import (
        check_compatible,
        check_index_channels,
        check_units,
        check_weights_file,
        checkpoint_paths,
        read_meta,
    )

    meta = read_meta(cfg.checkpoint)
    weights, _ = checkpoint_paths(cfg.checkpoint)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} are missing (only the sidecar is there); copy both files")
    check_weights_file(weights)  # a truncated or damaged file: refused here, not on every worker
    try:
        check_index_channels(meta, scene.bands or scene.band_names)
        check_compatible(meta, scene.band_names, scene.resolution, crs=scene.crs)
        check_units(meta, scene.bands)
    except ModelError as exc:
        raise type(exc)(f"{weights}: {exc}") from None  # the same condition (ModelInputError), naming the file
    return meta


def build_deeplab_predictor(cfg: DeepLabConfig, meta: CheckpointMeta, gpu_workers: int,
                            scene_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> DeepLabPredictor:
    """How tasks should run the checkpoint (``meta``, checked against the scene by :func:`check_deeplab_job`).

    Tasks ask for a ``GPU`` resource when the cluster has workers that offer one (and the job
    does not ask for ``device: cpu``), so they land only there; otherwise they run anywhere.
    ``scene_stats``: the scene's statistics, for a checkpoint trained with ``normalisation: scene``.
    """
    from geoseg.methods.deeplab import required_halo

    if meta.normalisation == "scene" and scene_stats is None:
        raise ValueError(f"{cfg.checkpoint} normalises by the scene's statistics: draw them first (scene_statistics)")
    resources: dict[str, float] | None = {"GPU": 1} if gpu_workers and cfg.device != "cpu" else None
    return DeepLabPredictor(
        checkpoint=Path(cfg.checkpoint),
        halo=required_halo(meta),
        batch_size=cfg.batch_size,
        device=cfg.device,
        resources=resources,
        classes=tuple(meta.classes),
        confidence=cfg.confidence,
        tta=cfg.tta,
        scene_stats=scene_stats if meta.normalisation == "scene" else None,
    )


def scene_statistics(ctx: FitContext, meta: CheckpointMeta) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The scene's mean and std per network channel, from its stratified sample drawn on the workers
    (:mod:`geoseg.methods.scenestats`): seeded and on the fixed sampling grid, so a resumed run or another
    ``chunk_size`` gets the same numbers, and the labels with them."""
    from geoseg.methods.scenestats import SCENE_SAMPLE_PX, SCENE_SEED, NetworkChannels, channel_statistics

    channels = NetworkChannels(len(meta.band_names), meta.indices())
    sample = ctx.draw_sample(channels, SCENE_SAMPLE_PX, SCENE_SEED)
    names = channel_names(meta)
    mean, std = channel_statistics(sample, names)
    log.info("normalising by the scene's own statistics (%d sampled pixels; the checkpoint was trained so): "
             "means %s", len(sample), ", ".join(f"{n} {v:.4g}" for n, v in zip(names, mean)))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def channel_names(meta: CheckpointMeta) -> list[str]:
    """The network's input channels by name: the bands, then the index channels."""
    return [*meta.band_names, *(ch.text for ch in meta.index_channels)]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare(ctx: FitContext) -> Prepared:
    from geoseg.methods.checkpoint import checkpoint_paths

    cfg = ctx.config
    meta = check_deeplab_job(cfg, ctx.scene)  # the scene's bands are the network's before they are sampled
    stats = scene_statistics(ctx, meta) if meta.normalisation == "scene" else None
    predictor = build_deeplab_predictor(cfg, meta, ctx.gpu_workers, stats)
    weights, sidecar = checkpoint_paths(cfg.checkpoint)
    digests = [_file_digest(weights)] + ([_file_digest(sidecar)] if sidecar.is_file() else [])
    if stats is None:
        return Prepared(predictor, " ".join(digests))
    record = {"scene_statistics": {"channels": channel_names(meta), "mean": list(stats[0]), "std": list(stats[1])}}
    resume = " ".join([*digests, json.dumps(record)])
    if meta.training_envelope is not None:  # is the scene like the training images? said, and in run.json
        from geoseg.methods.familiarity import familiarity

        known = familiarity(meta.training_envelope, stats[0])
        record["scene_statistics"]["familiarity"] = known.to_json()
        line = known.message("the scene")
        if line:
            log.warning("%s", line)
    return Prepared(predictor, resume, record=record)


METHOD = MethodSpec("deeplab", DeepLabConfig, fit="checkpoint", prepare=prepare, check=check_deeplab_job)
