"""The instances stage of a job (``instances:``): instances of the thing classes, the panoptic raster, their
table and polygons, and (``reference_instances:``) their scores per region in the report.

It runs after the labels are published (evaluated, mapped to classes, vectorised), so ``things`` are
names of the published legend. Everything a user can get wrong is checked by :func:`check_instances`
before the cluster starts. Outputs, each written atomically:

* ``panoptic.zarr`` (:mod:`geoseg.io.panopticstore`): ``semantic`` + ``instances`` that agree;
* ``instances.csv``: one row per instance (id, class, score, first pixel, area);
* the layer ``instances`` of ``polygons.gpkg``;
* ``instance_metrics.csv`` and the report's instances section, with a reference.

A rerun redoes the stage from the labels (the methods are deterministic): a killed job resumes to the same
outputs. The method's own store is built in a work folder that the stage removes.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError, JobSpecError
from geoseg.io.atomic import write_text_atomic
from geoseg.run.instanceregistry import instance_method_of
from geoseg.run.instancespec import InstanceContext

log = logging.getLogger(__name__)

#: The method's own instance store is built here, inside the output folder, and removed after the stage.
WORK_DIR = ".instances-work"


def publishable_names(job: Any) -> set[str] | None:
    """Class names the run's published legend can hold, known before it runs; ``None``: not knowable
    (a reference whose own names or colour table will name the classes, a method registered elsewhere)."""
    names = {c.name for c in job.classes or []}
    if job.reference is not None and job.classes is None:
        return None
    m = job.method
    if getattr(m, "kind", None) == "threshold":
        from geoseg.methods.threshold import threshold_legend

        try:
            names |= {c.name for c in threshold_legend(m.classes_out, m.classes)}
        except InputError:
            return None  # the method's own check says what is wrong
    elif getattr(m, "kind", None) == "deeplab":
        from geoseg.methods.checkpoint import read_meta

        try:
            names |= {c.name for c in read_meta(m.checkpoint).classes}
        except Exception:  # a bad checkpoint is the method's check's to report
            return None
    elif getattr(m, "kind", None) == "kmeans":
        from geoseg.legend import cluster_legend

        names |= {c.name for c in cluster_legend(m.n_clusters)}
    else:
        return None
    return names


def check_instances(job: Any, scene: Any) -> None:
    """Before the cluster starts: thing names the published legend can hold, the method's own check, and
    the reference instances opened on the scene's grid. Raises a ``GeosegError`` with one line."""
    from geoseg.accuracy.instanceeval import open_reference_instances
    from geoseg.errors import OutputError
    from geoseg.io.storage import is_url

    cfg = job.instances
    if is_url(job.output):
        raise OutputError("instances: are written to a local output folder; give output as a path, not a URL")
    names = publishable_names(job)
    unknown = [t for t in cfg.things if isinstance(t, str) and names is not None and t not in names]
    if unknown:
        raise JobSpecError(f"instances.things: no class is named {unknown[0]!r}; "
                           f"the published legend can name {', '.join(sorted(names or ()))}")
    spec = instance_method_of(cfg.method.kind)
    if spec.check is not None:
        spec.check(cfg.method, scene)
    ref = job.reference_instances
    if ref is not None:
        value = ref.value
        if isinstance(value, str):
            if names is not None and value not in names:
                raise JobSpecError(f"reference_instances.value: no class is named {value!r}; "
                                   f"the published legend can name {', '.join(sorted(names))}")
            value = 0  # resolved on the published legend by the stage
        open_reference_instances(ref.path, scene.grid, field=ref.field, value=value)


def thing_ids(things: Sequence[int | str], legend: Sequence[Any]) -> tuple[int, ...]:
    """Label ids of ``things`` (ids as given, names looked up in the published ``legend``).

    >>> from geoseg.legend import ClassInfo
    >>> thing_ids(["tree", 7], [ClassInfo(1, "grass", "#00ff00"), ClassInfo(2, "tree", "#006400")])
    (2, 7)
    """
    out = []
    for t in things:
        if isinstance(t, int):
            out.append(t)
            continue
        ids = [c.id for c in legend if c.name == t]
        if len(ids) != 1:
            known = ", ".join(sorted({c.name for c in legend}))
            why = "no label is named" if not ids else f"{len(ids)} labels ({ids}) are named"
            raise InputError(f"instances.things: {why} {t!r} in the published legend ({known}); give label ids")
        out.append(ids[0])
    if len(set(out)) != len(out):
        raise InputError(f"instances.things name one label twice ({out})")
    return tuple(out)


def write_instances_csv(
    path: Path, ids: np.ndarray, classes: np.ndarray, scores: np.ndarray | None, size: np.ndarray,
    first: np.ndarray, grid: Any, names: dict[int, str],
) -> Path:
    """``instances.csv``: id, class, name, score, first pixel (row, col) and its centre (x, y), pixels, m²."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["instance_id", "class_id", "class_name", "score", "first_row", "first_col", "first_x", "first_y",
                "area_px", "area_m2"])
    px = grid.pixel_area_m2 if math.isfinite(grid.pixel_area_m2) else math.nan
    t = grid.transform
    for i in ids.tolist():
        r, c = divmod(int(first[i - 1]), grid.width)
        x, y = t * (c + 0.5, r + 0.5)
        cls = int(classes[i - 1])
        score = float(scores[i - 1]) if scores is not None else 1.0
        w.writerow([i, cls, names.get(cls, ""), f"{score:.6g}", r, c, f"{x:.12g}", f"{y:.12g}", int(size[i - 1]),
                    f"{size[i - 1] * px:.6g}"])  # degrees to 1e-9, and a drone pixel's m² not rounded to 0
    return write_text_atomic(path, buf.getvalue())


def run_instances_for_job(
    job: Any, scene: Any, labels: Path, out: Path, client: Any = None, gpu_workers: int = 0,
    show_progress: bool = False,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The stage: returns the outputs written and the entries for ``run.json``."""
    from geoseg.io.labelstore import read_label_info
    from geoseg.run.panoptic import assemble_panoptic
    from geoseg.vector.instancepolygons import add_instance_layer, instance_frame, instance_polygons

    cfg = job.instances
    info = read_label_info(labels)
    names = {c.id: c.name for c in info.legend}
    things = thing_ids(cfg.things, info.legend)
    spec = instance_method_of(cfg.method.kind)
    work = out / WORK_DIR
    if work.exists():
        shutil.rmtree(work)  # an interrupted run's
    work.mkdir(parents=True)
    produced = spec.run(InstanceContext(labels=Path(labels), scene=scene, things=things, work=work, config=cfg.method,
                                        client=client, gpu_workers=gpu_workers, show_progress=show_progress))
    attrs = {"geoseg:job": job.name, "geoseg:instance_method": cfg.method.kind, "geoseg:things": list(things),
             f"geoseg:{cfg.method.kind}": cfg.method.model_dump(mode="json")}
    # an instance of a class that is not a thing (a model's other classes) has no pixel to keep
    method_classes = np.asarray(produced.classes, np.int64)
    method_classes = np.where(np.isin(method_classes, things), method_classes, -1)
    panoptic, table = assemble_panoptic(labels, produced.store, method_classes, out / "panoptic.zarr",
                                        client=client, attrs=attrs)
    shutil.rmtree(work)
    present = table.size > 0
    ids = np.flatnonzero(present) + 1
    classes = np.where(present, method_classes, -1)  # an id with no pixel left: no class
    outputs: dict[str, Path] = {"panoptic": panoptic}
    outputs["instances_table"] = write_instances_csv(out / "instances.csv", ids, classes, produced.scores,
                                                     table.size, table.first, info.grid, names)
    grid = info.chunk_grid
    poly_ids, geoms = instance_polygons(panoptic, grid, "instances", client)
    frame = instance_frame(poly_ids, geoms, classes, table.size, info.grid, names, produced.scores)
    legend = tuple(c for c in info.legend if c.id in things)
    outputs["polygons"] = add_instance_layer(out / "polygons.gpkg", frame, legend, keep=job.vectorize.enabled)
    record = {**produced.record, "instances": int(ids.size), "instance_pixels_cleared": table.cleared,
              "instance_things": list(things)}
    if job.reference_instances is not None:
        outputs.update(_score(job, info, panoptic, classes, table.size, produced.scores, things, out, client, record))
    else:
        (out / "instance_metrics.csv").unlink(missing_ok=True)  # an earlier run's, scored against another raster
    log.info("%d instances of %s", ids.size, ", ".join(names.get(t, str(t)) for t in things))
    return outputs, record


def _score(job: Any, info: Any, panoptic: Path, classes: np.ndarray, size: np.ndarray, scores: np.ndarray | None,
           things: tuple[int, ...], out: Path, client: Any, record: dict[str, Any]) -> dict[str, Path]:
    """``instance_metrics.csv`` (scene and regions) and, when the run has a report, its instances section;
    ``record`` (run.json) gets how many reference features were too small to score."""
    from geoseg.accuracy.instanceeval import (
        evaluate_instance_regions,
        open_reference_instances,
        write_region_instance_metrics,
    )
    from geoseg.accuracy.instancereport import add_instances_to_report
    from geoseg.io.panopticstore import SEMANTIC_ARRAY

    ref_cfg = job.reference_instances
    value = ref_cfg.value
    if isinstance(value, str):
        value = thing_ids([value], info.legend)[0]
    ref = open_reference_instances(ref_cfg.path, info.grid, field=ref_cfg.field, value=value)
    scored = evaluate_instance_regions(panoptic, classes, size, info.chunk_grid, ref, pred_score=scores,
                                       client=client, regions=_regions(job, info.grid), classes=list(things),
                                       map_valid=(panoptic, SEMANTIC_ARRAY))
    record["reference_instances_unscored"] = scored.unscored_reference
    names = {c.id: c.name for c in info.legend}
    outputs = {"instance_metrics": write_region_instance_metrics(scored, out / "instance_metrics.csv", names)}
    report = out / "report.html"
    if report.exists():
        add_instances_to_report(report, outputs["instance_metrics"], job.instances.method.kind)
    return outputs


def _regions(job: Any, grid: Any) -> Any:
    """The job's regions opened on the grid as the evaluation opens them, or None."""
    regions = job.regions
    if regions is None:
        return None
    if regions.path is not None:
        from geoseg.accuracy.regions import open_regions

        return open_regions(str(regions.path), regions.field, grid, merge_duplicates=regions.merge_duplicates,
                            repair_invalid=regions.repair_invalid)
    from geoseg.accuracy.regions import grid_regions

    return grid_regions(regions.grid_cell_m, grid)
