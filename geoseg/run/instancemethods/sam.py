"""SAM as an instance method of a job: ``instances: {method: {kind: sam, checkpoint: FILE}, things: [...]}``.

The tile model is :class:`geoseg.methods.sam.SamInstanceModel`; the tiles, the seam merge and the ids
are :func:`geoseg.run.modelinstances.segment_model_instances`' (the same for every tile model). What
this module adds:

* the fixed band scaling: given in the job, or the 2nd/98th percentiles of the three bands in the
  global stratified sample (drawn on the workers on the fixed sampling grid, so it does not depend
  on the chunk size), the same for every tile;
* the published labels as one more band of the scene (a GeoTIFF of ``labels.zarr`` in the work
  folder), so each tile classes its masks by majority and drops those on no thing class before the
  merge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from geoseg.run.instancespec import InstanceContext, InstanceMethodSpec, InstanceOutput
from geoseg.run.schema import MAX_SEED, StrictModel


class SamShapeConfig(StrictModel):
    """A SAM architecture other than the published ones (:class:`geoseg.methods.sam.SamShape`)."""

    embed_dim: int = Field(ge=16, le=4096)
    depth: int = Field(ge=1, le=64)
    heads: int = Field(ge=1, le=64)
    global_blocks: list[int]
    image_size: int = Field(1024, ge=64, le=4096)
    prompt_dim: int = Field(256, ge=8, le=1024)
    decoder_mlp: int = Field(2048, ge=8, le=8192)
    decoder_heads: int = Field(8, ge=1, le=64)


class SamScalingConfig(StrictModel):
    """The fixed scaling of the three bands: ``low`` → 0, ``high`` → 255 (in the bands' units)."""

    low: list[float] = Field(min_length=3, max_length=3)
    high: list[float] = Field(min_length=3, max_length=3)


_RGB: list[str | int] = ["red", "green", "blue"]


class SamInstancesConfig(StrictModel):
    """``instances.method`` for SAM (needs ``pip install 'geoseg[sam]'``)."""

    kind: Literal["sam"] = "sam"
    checkpoint: Path
    encoder: Literal["vit_b", "vit_l", "vit_h"] | SamShapeConfig = "vit_b"
    #: The three bands shown to SAM as RGB: roles (red, green, blue), band names, or 0-based indices.
    bands: list[str | int] = Field(default_factory=lambda: _RGB.copy(), min_length=3, max_length=3)
    scaling: SamScalingConfig | None = None
    sample_size: int = Field(200_000, ge=1_000, le=50_000_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tile: int = Field(512, ge=32, le=4096)
    overlap: int = Field(64, ge=0, le=1024)
    points_per_side: int = Field(32, ge=1, le=256)
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0)
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    min_area: int = Field(0, ge=0)
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)


def _shape(cfg: SamInstancesConfig) -> Any:
    from geoseg.methods.sam import SamShape

    if isinstance(cfg.encoder, str):
        return SamShape.of(cfg.encoder)
    e = cfg.encoder
    return SamShape(e.embed_dim, e.depth, e.heads, tuple(e.global_blocks), e.image_size, e.prompt_dim,
                    e.decoder_mlp, e.decoder_heads)


def band_indices(bands: list[str | int], scene: Any) -> tuple[int, int, int]:
    """The scene's indices of the three ``bands`` (roles, names or indices); one-line error otherwise."""
    from geoseg.errors import BandError

    out = []
    roles = [b.role for b in scene.bands] if scene.bands else [None] * scene.count
    for b in bands:
        if isinstance(b, int):
            if not 0 <= b < scene.count:
                raise BandError(f"SAM band {b} is not a band of the scene ({scene.count} bands, 0-based)")
            out.append(b)
            continue
        hits = [i for i, r in enumerate(roles) if r == b] or [i for i, n in enumerate(scene.band_names) if n == b]
        if len(hits) != 1:
            known = ", ".join(f"{i}={n}({r})" for i, (n, r) in enumerate(zip(scene.band_names, roles)))
            raise BandError(f"SAM band {b!r} names {len(hits)} bands of the scene; give the index (bands: {known})")
        out.append(hits[0])
    return out[0], out[1], out[2]


def _check(cfg: SamInstancesConfig, scene: Any) -> None:
    from geoseg.errors import CheckpointError
    from geoseg.methods.sam import segment_anything

    segment_anything()  # the extra, or a one-line error naming it
    if not cfg.checkpoint.is_file():
        raise CheckpointError(f"SAM checkpoint {cfg.checkpoint} does not exist; give the path of a SAM weights file")
    band_indices(cfg.bands, scene)
    _shape(cfg)


@dataclass(frozen=True)
class _Bands:
    """The sampled feature: the three bands shown to SAM, as they are."""

    index: tuple[int, int, int]
    n_features: int = 3

    def compute(self, data: np.ndarray) -> np.ndarray:
        return data[list(self.index)].astype(np.float32)


def _with_labels(scene: Any, labels_tif: Path) -> tuple[Any, int]:
    """``scene`` with the published labels as its last band (on the same grid: no warp)."""
    from geoseg.io.scene import open_scene

    # class ids, paletted: a band of no role (bands: [null]), read as the ids it holds
    extra = open_scene([{"path": str(labels_tif), "resampling": "nearest", "name": "labels", "bands": [None]}])
    if extra.grid != scene.grid:
        from geoseg.errors import GridMismatchError

        raise GridMismatchError(f"the labels {labels_tif} are not on the scene's grid")
    band = scene.count
    return replace(scene, layers=scene.layers + extra.layers, band_names=scene.band_names + ("labels",),
                   bands=scene.bands + extra.bands if scene.bands else scene.bands), band


def _run(ctx: InstanceContext) -> InstanceOutput:
    from geoseg.io.export import export_cog
    from geoseg.io.labelstore import read_label_info
    from geoseg.methods.sam import BandScaling, SamInstanceModel, SamWeights
    from geoseg.methods.sampling import SAMPLE_CHUNK
    from geoseg.run.labelling import draw_sample
    from geoseg.run.modelinstances import segment_model_instances

    cfg: SamInstancesConfig = ctx.config
    index = band_indices(cfg.bands, ctx.scene)
    if cfg.scaling is not None:
        scaling = BandScaling(tuple(cfg.scaling.low), tuple(cfg.scaling.high))  # type: ignore[arg-type]
    else:
        sample = draw_sample(ctx.client, ctx.scene, ctx.scene.chunk_grid(SAMPLE_CHUNK), _Bands(index),
                             cfg.sample_size, cfg.seed, ctx.show_progress)
        scaling = BandScaling.from_sample(sample)
    labels_tif = export_cog(ctx.labels, ctx.work / "labels.tif", show_progress=False)
    scene, labels_band = _with_labels(ctx.scene, Path(labels_tif))
    model = SamInstanceModel(SamWeights(_shape(cfg), str(cfg.checkpoint)), scaling, rgb=index, tile=cfg.tile,
                             overlap=cfg.overlap, points_per_side=cfg.points_per_side,
                             pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
                             min_area=cfg.min_area, labels_band=labels_band, things=ctx.things)
    chunk = read_label_info(ctx.labels).chunk
    res = segment_model_instances(scene, model, ctx.work, chunk_size=chunk, iou_threshold=cfg.iou_threshold,
                                  client=ctx.client, method="sam")
    record = {"instances_method": "sam", "instances_cut_by_tile": res.cut,
              "sam_scaling": {"low": list(scaling.low), "high": list(scaling.high)}}
    return InstanceOutput(res.store, res.table.cls, res.table.score, record)


INSTANCE_METHOD = InstanceMethodSpec("sam", SamInstancesConfig, run=_run, check=_check)
