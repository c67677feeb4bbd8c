"""Marker-controlled watershed of the thing classes' masks as an instance method of a job.

The numerics are :mod:`geoseg.methods.watershed`; the two chunk passes with ids that do not depend on
chunking are :func:`geoseg.run.instances.segment_instances`. The instances agree with the labels by
construction (an instance is a basin of its own class's mask).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from geoseg.run.instancespec import InstanceContext, InstanceMethodSpec, InstanceOutput
from geoseg.run.schema import StrictModel


class WatershedInstancesConfig(StrictModel):
    """``instances.method`` for the watershed: the parameters of :class:`~geoseg.methods.watershed.WatershedParams`."""

    kind: Literal["watershed"] = "watershed"
    min_distance: int = Field(5, ge=1, le=4096)
    min_radius: float = Field(1.0, ge=1.0)
    sigma: float = Field(0.0, ge=0, le=64)
    halo: int = Field(64, ge=1, le=8192)

    def params(self):  # WatershedParams (checks that the halo covers min_distance + 4 sigma)
        from geoseg.methods.watershed import WatershedParams

        return WatershedParams(self.min_distance, self.min_radius, self.sigma, self.halo)


def _check(config: WatershedInstancesConfig, scene: object) -> None:
    config.params()  # JobSpecError before the cluster starts


def _run(ctx: InstanceContext) -> InstanceOutput:
    from geoseg.run.instances import segment_instances

    store, table = segment_instances(ctx.labels, ctx.things, ctx.work, ctx.config.params(), client=ctx.client)
    return InstanceOutput(store, table.cls, None, {"instances_method": "watershed"})


INSTANCE_METHOD = InstanceMethodSpec("watershed", WatershedInstancesConfig, run=_run, check=_check)
