"""geoseg: segment large satellite and drone imagery at scale with Dask.

The library is plain functions on files, numpy arrays and xarray objects; the CLI and job files
are thin layers over it. The names below are the public entry points, one import away::

    import geoseg
    scene = geoseg.open_scene("scene.tif")
    result = geoseg.run_job(geoseg.load_job("job.yaml"))
    labels = geoseg.open_labels(result.outputs["labels"])

They are loaded on first use, so ``import geoseg`` stays cheap (no torch, no Dask) for the CLI
and for worker processes. Subpackages: ``io`` (scenes, label store, exports), ``methods``
(features, k-means, DeepLab), ``vector`` (polygons), ``accuracy`` (references, metrics, reports),
``run`` (job files, cluster, workflow), ``samples`` (generated scenes); see ARCHITECTURE.md.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from geoseg.errors import GeosegError

try:
    __version__ = version("geoseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: Public name -> module that defines it.
_EXPORTS = {
    "open_scene": "geoseg.io.scene",
    "open_scene_xarray": "geoseg.io.scene",
    "read_window": "geoseg.io.scene",
    "open_labels": "geoseg.io.labelstore",
    "read_label_info": "geoseg.io.labelstore",
    "export_cog": "geoseg.io.export",
    "load_job": "geoseg.run.jobspec",
    "parse_job": "geoseg.run.jobspec",
    "run_job": "geoseg.run.workflow",
    "train": "geoseg.methods.training",
    "evaluate": "geoseg.accuracy.evaluate",
    "EvaluationOptions": "geoseg.accuracy.options",
    "vectorize_labels": "geoseg.vector.vectorize",
    "VectorizeOptions": "geoseg.vector.options",
    "compare_periods": "geoseg.accuracy.change",
    "draw_sample": "geoseg.accuracy.sampledesign",
    "Allocation": "geoseg.accuracy.sampledesign",
    "estimate_areas": "geoseg.accuracy.areaestimate",
    "make_scene": "geoseg.samples.synthetic",
}

__all__ = ["GeosegError", "__version__", *_EXPORTS]

if TYPE_CHECKING:
    from geoseg.accuracy.areaestimate import estimate_areas
    from geoseg.accuracy.change import compare_periods
    from geoseg.accuracy.evaluate import evaluate
    from geoseg.accuracy.options import EvaluationOptions
    from geoseg.accuracy.sampledesign import Allocation, draw_sample
    from geoseg.io.export import export_cog
    from geoseg.io.labelstore import open_labels, read_label_info
    from geoseg.io.scene import open_scene, open_scene_xarray, read_window
    from geoseg.methods.training import train
    from geoseg.run.jobspec import load_job, parse_job
    from geoseg.run.workflow import run_job
    from geoseg.samples.synthetic import make_scene
    from geoseg.vector.options import VectorizeOptions
    from geoseg.vector.vectorize import vectorize_labels


def __getattr__(name: str) -> Any:
    """Load a public entry point on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
