"""Chip mode of ``geoseg run``: a folder of non-georeferenced image/mask chips, inferred and scored.

Public datasets ship chips (PNG/JPEG/TIFF) with a mask beside each image and no georeference.
Each chip is written once as a GeoTIFF pair on a local (engineering) CRS with the declared pixel
size (the same conversion as training, :mod:`geoseg.methods.training.chips`), then run as a job of
its own, its mask the reference, into ``OUTPUT/chips/NAME/`` (labels, report, polygons … in pixel
units times the declared size). All chips are then scored together (``metrics.csv``,
``scenes.csv``, ``report.html`` in ``OUTPUT``), with one class mapping for all. One Dask cluster
serves every chip. A k-means job fits on the first chip and labels every other chip with that
model, so cluster ids mean the same in every chip.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from geoseg.io.atomic import write_json_atomic
from geoseg.run import runrecord
from geoseg.run.jobspec import ChipsConfig, JobSpec, KMeansConfig, ReferenceConfig

log = logging.getLogger(__name__)

#: Where the chips' GeoTIFF pairs go, inside the output folder.
CHIP_DATA = "chip-data"
#: What every chip output says of its grid.
PIXEL_GRID_NOTE = ("chips: {n} image(s) without georeference, each on its own pixel grid (local CRS "
                   "'geoseg chip', declared pixel size {size:g} m); areas are pixel counts x that size")


def select_chips(cfg: ChipsConfig) -> list[Any]:
    """The chips of ``cfg.folder`` to run: all, or those its split file names for ``cfg.use``."""
    from geoseg.methods.training.chips import layout_of, list_chips, read_split

    chips = list_chips(cfg.folder, layout_of(cfg.model_dump()))
    if cfg.use == "all":
        return chips
    assert cfg.split is not None  # the config's validator requires it
    wanted = read_split(cfg.split[cfg.use], chips)
    return [c for c in chips if c.name in wanted]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "chip"


def run_chips_job(job: JobSpec, scheduler: str | None = None, show_progress: bool = True,
                  client=None) -> Any:  # a distributed.Client; returns a RunResult
    """Run ``job`` (which has ``chips:``) on each chip, then score all chips together."""
    from geoseg.methods.training.chips import write_chip_pair
    from geoseg.run.cluster import connect
    from geoseg.run.workflow import RunResult, check_output_dir

    cfg = job.chips
    assert cfg is not None
    out = Path(job.output)
    check_output_dir(out, job)
    chips = select_chips(cfg)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"geoseg_run": 1, "mode": "chips", "outcome": "running", "started": runrecord._now(),
                              "grid": PIXEL_GRID_NOTE.format(n=len(chips), size=cfg.pixel_size_m),
                              "job": job.model_dump(mode="json"), "chips": []}  # fmt: skip
    write_json_atomic(out / runrecord.RUN_FILE, record)
    t0 = time.perf_counter()
    try:
        (out / CHIP_DATA).mkdir(exist_ok=True)
        pairs = [write_chip_pair(c, out / CHIP_DATA, cfg.pixel_size_m, cfg.colors) for c in chips]
        if client is not None:
            result = _run_all(job, chips, pairs, out, client, show_progress, record)
        else:
            c = job.cluster
            with connect(scheduler, c.n_workers, c.threads_per_worker, c.memory_limit, c.dashboard,
                         timeout=c.connect_timeout) as (cl, info):
                if info.dashboard and show_progress:
                    print(f"Dask dashboard: {info.dashboard}", file=sys.stderr)
                result = _run_all(job, chips, pairs, out, cl, show_progress, record)
                result.cluster = info
    except BaseException as exc:
        record.update(outcome="failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted",
                      error=str(exc), finished=runrecord._now())
        write_json_atomic(out / runrecord.RUN_FILE, record)
        raise
    record.update(outcome="complete", finished=runrecord._now(), wall_seconds=round(time.perf_counter() - t0, 3),
                  stage_seconds=result.stage_seconds, outputs={k: str(v) for k, v in result.outputs.items()})
    write_json_atomic(out / runrecord.RUN_FILE, record)
    result.outputs["run"] = out / runrecord.RUN_FILE
    assert isinstance(result, RunResult)
    return result


def _run_all(job: JobSpec, chips: list[Any], pairs: list[tuple[Path, Path]], out: Path, client,
             show_progress: bool, record: dict[str, Any]) -> Any:
    from geoseg.accuracy.report import write_outputs
    from geoseg.accuracy.scenes import evaluate_scenes
    from geoseg.run.workflow import RunResult, reference_class_names, run_job

    assert job.chips is not None
    method, times, counts = job.method, {"chips": 0.0}, {}  # type: ignore[var-annotated]
    stores, references = [], []
    t0 = time.perf_counter()
    for i, (chip, (image, mask)) in enumerate(zip(chips, pairs)):
        sub = job.model_copy(update={
            "name": _safe(f"{job.name}-{chip.name}"), "chips": None, "inputs": [str(image)],
            "output": out / "chips" / _safe(chip.name), "reference": ReferenceConfig(path=mask), "method": method,
        })
        if show_progress:
            print(f"chip {i + 1}/{len(chips)}: {chip.name}", file=sys.stderr)
        res = run_job(sub, show_progress=show_progress, client=client)
        if isinstance(method, KMeansConfig) and method.model is None:  # one model for every chip
            method = method.model_copy(update={"model": res.outputs["model"]})
        for k, v in res.label_counts.items():
            counts[k] = counts.get(k, 0) + v
        stores.append(res.outputs["labels"])
        references.append(mask)
        record["chips"].append({"name": chip.name, "image": str(chip.image), "mask": str(chip.mask),
                                "output": str(res.output_dir)})  # fmt: skip
    times["chips"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    mapping = job.evaluate.mapping or ("hungarian" if isinstance(job.method, KMeansConfig) else "identity")
    colors = {c.id: c.color for c in job.classes if c.color} if job.classes else None
    evaluation = evaluate_scenes(stores, references, mapping=mapping, client=client, names=[c.name for c in chips],
                                 class_names=reference_class_names(job), class_colors=colors)  # fmt: skip
    note = PIXEL_GRID_NOTE.format(n=len(chips), size=job.chips.pixel_size_m)
    evaluation = replace(evaluation, notes=[note, *evaluation.notes])
    outputs: dict[str, Any] = dict(write_outputs(evaluation, out))
    times["evaluate"] = round(time.perf_counter() - t1, 3)
    outputs["chips"] = out / "chips"
    return RunResult(out, outputs, times, counts, evaluation.summary(), None,
                     {"chips": len(chips), "mapping": {str(k): v for k, v in evaluation.mapping.items()}})
