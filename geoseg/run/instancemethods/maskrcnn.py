"""Mask R-CNN as an instance method of a job: ``instances: {method: {kind: maskrcnn, checkpoint: CKPT}, things: [...]}``.

The config, the checkpoint check and the tile model are :mod:`geoseg.run.methods.maskrcnn`'s; the tiles,
the seam merge and the ids :func:`geoseg.run.modelinstances.segment_model_instances`'. The checkpoint's
class ids are taken as label ids of the published legend: its instances of a class that is not a thing
are dropped, and its pixels off their class cleared, by the instance stage.
"""

from __future__ import annotations

from typing import Any

from geoseg.run.instancespec import InstanceContext, InstanceMethodSpec, InstanceOutput
from geoseg.run.methods.maskrcnn import MaskRCNNInstancesConfig


def _check(cfg: MaskRCNNInstancesConfig, scene: Any) -> None:
    from geoseg.run.methods.maskrcnn import build_maskrcnn_instances

    build_maskrcnn_instances(cfg, scene)  # the checkpoint against the scene's bands and pixel size


def _run(ctx: InstanceContext) -> InstanceOutput:
    from geoseg.io.labelstore import read_label_info
    from geoseg.run.methods.maskrcnn import build_maskrcnn_instances
    from geoseg.run.modelinstances import segment_model_instances

    cfg: MaskRCNNInstancesConfig = ctx.config
    model, resources = build_maskrcnn_instances(cfg, ctx.scene, ctx.gpu_workers)
    res = segment_model_instances(ctx.scene, model, ctx.work, chunk_size=read_label_info(ctx.labels).chunk,
                                  iou_threshold=cfg.iou_threshold, client=ctx.client, resources=resources,
                                  method="maskrcnn")
    record = {"instances_method": "maskrcnn", "instances_cut_by_tile": res.cut}
    return InstanceOutput(res.store, res.table.cls, res.table.score, record)


INSTANCE_METHOD = InstanceMethodSpec("maskrcnn", MaskRCNNInstancesConfig, run=_run, check=_check)
