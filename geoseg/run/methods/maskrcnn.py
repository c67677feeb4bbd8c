"""Mask R-CNN as an *instance* method of the run: its ``instances:`` config, checked before any work, and its runner.

Not a ``method:`` (a semantic labeller, :mod:`geoseg.run.registry`): it gives an instance raster
(:mod:`geoseg.run.modelinstances`). The checkpoint is checked against the scene on the client
(files whole, bands, pixel size) before a chunk is read; tasks ask for a ``GPU`` resource where
workers offer one, as DeepLab's do (:mod:`geoseg.run.methods.deeplab`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from geoseg.run.schema import StrictModel

if TYPE_CHECKING:
    from geoseg.io.scene import Scene
    from geoseg.methods.maskrcnn import MaskRCNNTileModel
    from geoseg.run.modelinstances import ModelInstanceRun


class MaskRCNNInstancesConfig(StrictModel):
    """``instances: {kind: maskrcnn, checkpoint: ...}``: a trained Mask R-CNN run on the scene's global tiles."""

    kind: Literal["maskrcnn"] = "maskrcnn"
    checkpoint: Path
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="proposals scoring less are dropped")
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="mask probability a pixel needs")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="mask IoU above which the lower score goes")
    tile: int | None = Field(None, ge=16, description="tile core px (default: the checkpoint's)")
    overlap: int | None = Field(None, ge=0, description="px read around each tile (default: the checkpoint's)")
    device: Literal["auto", "cpu", "cuda"] = "auto"


def build_maskrcnn_instances(
    cfg: MaskRCNNInstancesConfig, scene: Scene, gpu_workers: int = 0
) -> tuple[MaskRCNNTileModel, dict[str, float] | None]:
    """The checked tile model and the resources its tasks ask for (``{"GPU": 1}`` on GPU workers)."""
    from geoseg.methods.maskrcnn import check_maskrcnn, maskrcnn_tile_model

    meta = check_maskrcnn(cfg.checkpoint, scene.band_names, scene.resolution, scene.crs)
    model = maskrcnn_tile_model(cfg.checkpoint, meta, score_threshold=cfg.score_threshold,
                                mask_threshold=cfg.mask_threshold, device=cfg.device, tile=cfg.tile,
                                overlap=cfg.overlap)
    resources: dict[str, float] | None = {"GPU": 1} if gpu_workers and cfg.device != "cpu" else None
    return model, resources


def run_maskrcnn_instances(
    cfg: MaskRCNNInstancesConfig,
    image: Any,
    out_dir: str | Path,
    *,
    chunk_size: int = 1024,
    client: Any = None,
    gpu_workers: int = 0,
    **kwargs: Any,
) -> ModelInstanceRun:
    """Mask R-CNN instances of ``image`` (a Scene or path(s)) chunk by chunk: ``instances.zarr``, ``.csv``,
    ``.gpkg`` (``kwargs``: reference, names, polygons ... of :func:`~geoseg.run.modelinstances.run_model_instances`)."""
    from geoseg.io.scene import Scene, open_scene
    from geoseg.methods.maskrcnn import read_maskrcnn_meta
    from geoseg.run.modelinstances import run_model_instances

    scene = image if isinstance(image, Scene) else open_scene(image)
    model, resources = build_maskrcnn_instances(cfg, scene, gpu_workers)
    names = kwargs.pop("names", None) or {c.id: c.name for c in read_maskrcnn_meta(cfg.checkpoint).classes}
    return run_model_instances(scene, model, out_dir, names=names, chunk_size=chunk_size,
                               iou_threshold=cfg.iou_threshold, client=client, resources=resources,
                               method="maskrcnn", **kwargs)
