"""The method registry: a method registered from outside geoseg (here: a toy defined in this test only)
is validated strictly in job files and runs end to end through ``run_job`` on a real local cluster,
with no edit to the workflow; the workflow itself names no method."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cloudpickle
import numpy as np
import pytest
import rasterio
from pydantic import Field

from geoseg.errors import JobSpecError
from geoseg.geo import HaloWindow, trim_halo
from geoseg.io.labelstore import open_labels
from geoseg.legend import NODATA_LABEL, ClassInfo
from geoseg.methods.predictors import PlainPredictor
from geoseg.run import registry
from geoseg.run.jobspec import JobSpec, parse_job
from geoseg.run.methodspec import FitContext, MethodSpec, Prepared
from geoseg.run.schema import StrictModel
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene


class BrightnessConfig(StrictModel):
    """The toy: one band cut at the median of the global sample (dark = 1, bright = 2)."""

    kind: Literal["brightness"] = "brightness"
    band: int = Field(0, ge=0)
    sample_size: int = Field(5_000, ge=1_000)
    seed: int = 0


@dataclass(frozen=True)
class OneBand:
    """The sampled feature: one band as float32."""

    band: int
    n_features: int = 1

    @property
    def names(self) -> tuple[str, ...]:
        return (f"band{self.band}",)

    def compute(self, data: np.ndarray) -> np.ndarray:
        return data[self.band : self.band + 1].astype(np.float32)


@dataclass(frozen=True)
class BrightnessPredictor(PlainPredictor):
    band: int
    threshold: float
    halo: int = 0
    resources: dict[str, float] | None = None

    def legend(self) -> tuple[ClassInfo, ...]:
        return (ClassInfo(1, "dark", "#000000"), ClassInfo(2, "bright", "#ffffff"))

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        data, valid = trim_halo(data, hw), trim_halo(valid, hw)
        labels = np.where(data[self.band] > self.threshold, 2, 1).astype(np.uint8)
        labels[~valid] = NODATA_LABEL
        return labels


def prepare(ctx: FitContext) -> Prepared:
    cfg = ctx.config
    sample = ctx.draw_sample(OneBand(cfg.band), cfg.sample_size, cfg.seed)
    threshold = float(np.median(sample[:, 0]))
    model = {"kind": "brightness", "threshold": threshold}
    return Prepared(BrightnessPredictor(cfg.band, threshold), json.dumps(model), model, {"toy_sample": len(sample)})


TOY = MethodSpec("brightness", BrightnessConfig, fit="sample", prepare=prepare)


@pytest.fixture()
def toy():
    """The toy registered for one test; its classes travel to the workers by value."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    registry.register(TOY)
    try:
        yield TOY
    finally:
        registry.unregister(TOY.kind)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _job(scene: Path, out: Path, **method) -> dict:
    return {"name": "toy", "inputs": [str(scene)], "output": str(out), "chunk_size": 128,
            "method": {"kind": "brightness", **method}, "vectorize": {"enabled": False}}


def test_a_registered_method_runs_end_to_end(toy, tmp_path: Path, dask_client) -> None:
    scene, _ = blocky_scene(tmp_path, height=300, width=340)
    result = run_job(parse_job(_job(scene, tmp_path / "out", band=3)), client=dask_client, show_progress=False)

    with rasterio.open(scene) as ds:  # the oracle: the file as GDAL reads it, cut at the fitted threshold
        nir = ds.read(4).astype(np.float32)
        valid = ds.read_masks(4) > 0
    threshold = json.loads((tmp_path / "out" / "model.json").read_text())["threshold"]
    expected = np.where(nir > threshold, 2, 1).astype(np.uint8)
    expected[~valid] = NODATA_LABEL
    labels = open_labels(result.outputs["labels"]).values
    assert np.array_equal(labels, expected)
    assert 0.4 < (labels == 2).sum() / valid.sum() < 0.6  # a median of the scene's own pixels
    run = json.loads(Path(result.outputs["run"]).read_text())
    assert "fit" in run["stage_seconds"] and run["toy_sample"] > 4_000
    assert "confidence" not in result.outputs


def test_a_registered_method_is_validated_strictly_and_gone_once_unregistered(toy) -> None:
    job = parse_job(_job(Path("x.tif"), Path("out"), band=2))
    assert isinstance(job.method, BrightnessConfig) and job.method.band == 2
    assert "BrightnessConfig" in json.dumps(JobSpec.model_json_schema())  # the schema is built from the registry
    with pytest.raises(JobSpecError, match=r"method\.brightness\.bnad: unknown key"):
        parse_job(_job(Path("x.tif"), Path("out"), bnad=2))
    with pytest.raises(JobSpecError, match=r"method\.brightness\.band"):
        parse_job(_job(Path("x.tif"), Path("out"), band=-1))
    with pytest.raises(ValueError, match="registered already"):
        registry.register(TOY)
    registry.unregister(TOY.kind)
    with pytest.raises(JobSpecError, match="method"):
        parse_job(_job(Path("x.tif"), Path("out")))
    registry.register(TOY)  # for the fixture's unregister


def test_a_method_config_must_carry_its_kind() -> None:
    class NoKind(StrictModel):
        band: int = 0

    with pytest.raises(ValueError, match="kind"):
        registry.register(MethodSpec("nokind", NoKind, fit="none", prepare=prepare))
    assert "nokind" not in registry.kinds()


def test_the_workflow_names_no_method() -> None:
    """Methods are looked up, never branched on: adding one needs no edit to run/workflow.py."""
    source = (Path(registry.__file__).parent / "workflow.py").read_text()
    assert re.findall(r"kmeans|threshold|deeplab", source, flags=re.IGNORECASE) == []
    assert set(registry.kinds()) >= {"kmeans", "threshold", "deeplab"}
