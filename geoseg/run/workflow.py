"""The run: from a job spec to labels.zarr, polygons.gpkg, metrics and run.json.

Every stage works on the input's chunk grid and only small things reach the client: a pixel
sample, centroids, per-chunk label counts, confusion matrices, seam polygons. Chunks already
written by an interrupted run with the same inputs and parameters are skipped. The tasks of the
labelling pass (sampling, the k-means fit, labelling chunks) are in :mod:`geoseg.run.labelling`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geoseg.errors import GeosegError, JobSpecError, OutputError, from_os_error
from geoseg.io import storage
from geoseg.io.atomic import write_text_atomic
from geoseg.io.labelstore import PARTIAL_SUFFIX
from geoseg.io.opener import Trust, current_trust, fenced, job_trust
from geoseg.io.scene import Scene, open_scene
from geoseg.methods.predictors import ChunkPredictor
from geoseg.run import limits, runrecord
from geoseg.run.cluster import ClusterInfo, connect
from geoseg.run.jobspec import JobSpec
from geoseg.run.labelling import warm_in_background, write_labels
from geoseg.run.lock import claim_output
from geoseg.run.methodspec import FitContext
from geoseg.run.registry import method_of
from geoseg.run.result import RunResult as RunResult  # what run_job returns, where it always was
from geoseg.run.result import check_output_dir as check_output_dir
from geoseg.run.result import reference_class_names as reference_class_names
from geoseg.run.storelock import claim_store_output

log = logging.getLogger(__name__)





# --------------------------------------------------------------------------- orchestration


def job_identity(job: JobSpec, scene: Scene, extra: str = "") -> str:
    """A key for the work: inputs (path, size, content checksum), grid and method parameters.

    A changed input or parameter gives another key, so stale chunks are never reused; the
    checksum (cached, geoseg.io.checksum) catches inputs rewritten with the same size and mtime.
    Cluster settings and the output folder do not change results and are left out.
    """
    from geoseg.io.checksum import content_digests

    inputs = []
    for p, digest in zip(scene.paths, content_digests(scene.paths)):
        st = Path(p).stat() if Path(p).exists() else None
        inputs.append([p, st.st_size if st else None, digest])
    payload = {
        "inputs": inputs,
        "chunk": job.chunk_size,
        "method": job.method.model_dump(mode="json"),
        "extra": extra,
        # which band plays which role, in which units, with which fill (sensor:, bands:, apply_scale, nodata:)
        "bands": [[b.role, b.scale, b.offset, b.nodata] for b in scene.bands],
    }
    if job.grid is not None or job.masks or any(not isinstance(i, str) for i in job.inputs):
        dumped = job.model_dump(mode="json")  # how the inputs are composed changes the pixels
        payload["composition"] = [dumped["inputs"], dumped["grid"], dumped["masks"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@contextmanager
def _stage(times: dict[str, float], name: str, record: runrecord.RunRecord | None = None) -> Iterator[None]:
    log.info("stage %s ...", name)
    if record is not None:
        record.begin_stage(name)  # run.json says which stage runs, and since when
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s done in %.1f s", name, times[name])
        if record is not None:
            record.end_stage(name)


def run_job(
    job: JobSpec, scheduler: str | None = None, show_progress: bool = True, client=None
) -> RunResult:
    """Run a validated job end to end. ``client`` reuses an existing Dask client (notebooks, tests).

    Every dataset is opened under the job's trust (:mod:`geoseg.io.opener`), here and on the workers.
    """
    if job.chips is not None:  # a folder of non-georeferenced chips: one pixel grid each, scored together
        from geoseg.run.chiprun import run_chips_job

        return run_chips_job(job, run_job, scheduler=scheduler, show_progress=show_progress, client=client)
    with fenced(trust_of_job(job)):
        return _run_job(job, scheduler, show_progress, client)


def trust_of_job(job: JobSpec) -> Trust:
    """What the job lets GDAL read: ``allow_gdal_virtual``, and the network when it names URLs itself."""
    from geoseg.io.entries import as_input_entry, as_mask_entry

    named = [p for e in map(as_input_entry, job.inputs) for p in (*e.paths, e.stac or "")]
    named += [p for e in map(as_mask_entry, job.masks) for p in (*e.paths, e.stac or "")]
    if job.grid is not None and job.grid.like:
        named.append(str(job.grid.like))
    return job_trust(job.allow_gdal_virtual, named)


def _run_job(job: JobSpec, scheduler: str | None, show_progress: bool, client) -> RunResult:
    remote = storage.RemoteOutput.of(job.output)  # object storage: small files built on local scratch
    out = remote.scratch if remote else Path(job.output)
    scene = open_scene(job.inputs, allow_gdal_virtual=job.allow_gdal_virtual, grid=job.grid, masks=job.masks,
                       sensor=job.sensor)
    method = method_of(job.method.kind)
    if method.check is not None:  # bands by role, a checkpoint that does not fit: refused before any output
        method.check(job.method, scene)
    if remote:
        remote.check(job.name)
        if job.export.overviews:
            raise OutputError("export.overviews are built inside a local labels.zarr; not with an object-store output")
    else:
        check_output_dir(out, job)
    if job.reference is not None:
        check_evaluation_inputs(job, scene)  # so is a reference or regions layer that cannot be used
    if job.instances is not None:
        from geoseg.run.instancestage import check_instances

        check_instances(job, scene)  # thing names, the instance method, the reference instances
    need = check_machine(job, scene, local=client is None and not scheduler)  # before any worker starts
    # mkdir, one run per folder or prefix, stale temporaries removed (geoseg.run.lock, geoseg.run.storelock)
    lock = claim_store_output(remote.url) if remote else claim_output(out)
    try:
        record = runrecord.RunRecord.start(out, job, scene)
        if remote:
            remote.begin(record.path)
    except BaseException:
        lock.release()
        raise
    try:
        if client is not None:
            from geoseg.run.cluster import describe

            result = _run_stages(job, scene, out, client, describe(client, "given"), record, show_progress)
        else:
            c = job.cluster
            with connect(scheduler, c.n_workers, c.threads_per_worker, c.memory_limit, c.dashboard,
                         timeout=c.connect_timeout) as (cl, info):
                if scheduler:
                    limits.check_cluster_memory(cl, need)
                if info.dashboard:
                    log.info("Dask dashboard: %s", info.dashboard)
                    if show_progress:
                        print(f"Dask dashboard: {info.dashboard}", file=sys.stderr)
                result = _run_stages(job, scene, out, cl, info, record, show_progress)
    except GeosegError as exc:
        record.finish("failed", error=str(exc))
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGINT as geoseg.run.interrupt.Interrupted
        record.finish("interrupted", error=f"stopped by {exc or 'SIGINT'}; rerun to resume")
        raise
    except BaseException as exc:
        # permission, not a directory, disk full; a worker killed for memory: the user's to fix
        user_error = from_os_error(exc) or limits.user_error(exc)
        record.finish("failed", error=str(user_error) if user_error else f"{type(exc).__name__}: {exc}")
        if user_error:
            raise user_error from exc
        raise
    else:
        if remote:
            result.outputs = remote.upload_outputs(result.outputs)
            result.output_dir = remote.url
        record.finish("complete", outputs=result.outputs, label_counts=result.label_counts)
    finally:
        try:
            if remote:  # run.json on the store; a complete run is published last
                remote.close(record.path, result.outputs if record.data.get("outcome") == "complete" else None,
                             before_publish=lock.verify)
        finally:
            lock.release()
    result.outputs["run"] = remote.target(record.path.name) if remote else record.path
    return result


def check_machine(job: JobSpec, scene: Scene, local: bool) -> limits.WorkingSet:
    """One chunk's working set (:func:`geoseg.run.limits.chunk_working_set`); for a local cluster, its
    shape and memory limit checked against it and the machine. Raises ``ClusterError``."""
    need = limits.chunk_working_set(scene, job.chunk_size, job.method)
    if local:
        c = job.cluster
        memory = limits.local_memory_limit(c.memory_limit, c.n_workers)
        limits.check_local_cluster(c.n_workers, c.threads_per_worker, memory)
        limits.check_memory_limit(memory, need)
    return need


def _run_stages(
    job: JobSpec, scene: Scene, out: Path, client, info: ClusterInfo,
    record: runrecord.RunRecord, show_progress: bool,
) -> RunResult:
    times: dict[str, float] = record.stage_seconds
    record.set_cluster(info)
    from geoseg.run.fence import fence_workers  # distributed's plugin class: imported once there is a cluster

    fence_workers(client, current_trust())  # the workers read under the job's trust too
    # the label store's zarr (~0.2 s of imports) loads while the cluster samples and fits, not after the fit
    warm_in_background(("zarr",))
    record.data["chunks_total"] = scene.chunk_grid(job.chunk_size).n_chunks  # in run.json from the first stage on
    outputs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    method = method_of(job.method.kind)

    with _stage(times, method.stage, record):  # fit on the sample, load a checkpoint, or nothing (geoseg.run.registry)
        prepared = method.prepare(FitContext(client, scene, job.method, info.gpu_workers, show_progress))
        extra.update(prepared.record)
        record.data.update(prepared.record)
        if prepared.model_json is not None:
            write_text_atomic(out / "model.json", json.dumps(prepared.model_json, indent=1))
            outputs["model"] = out / "model.json"
        key = job_identity(job, scene, prepared.resume)

    with _stage(times, "predict", record):
        store, counts = _predict_stage(job, scene, out, client, prepared.predictor, key, record, outputs,
                                       show_progress)

    summary = None
    if job.reference is not None:
        with _stage(times, "evaluate", record):
            summary = _evaluate_stage(job, scene, out, client, store, job.evaluate.mapping or method.mapping,
                                      outputs, extra, show_progress)
    if job.export.cog or job.export.overviews:
        with _stage(times, "export", record):
            _export_stage(job, out, store, outputs, show_progress)
    if job.vectorize.enabled:
        from geoseg.vector.vectorize import vectorize_labels

        with _stage(times, "vectorize", record):
            v = job.vectorize
            vres = vectorize_labels(
                store, out / "polygons.gpkg", client=client, min_mapping_unit_px=v.min_mapping_unit_px,
                simplify_tolerance=v.simplify_tolerance, layout=v.layout, show_progress=show_progress,
            )
            outputs["polygons"] = Path(vres.out_path)
            extra["n_polygons"] = vres.n_features
    if job.objects is not None:
        from geoseg.accuracy.objectstats import run_objects_for_job

        with _stage(times, "objects", record):
            outputs.update(run_objects_for_job(job, scene.grid, store, out, client))
            if "report" in outputs:  # evaluation ran first: add the objects table to its report.html
                from geoseg.accuracy.objectreport import add_objects_to_report

                add_objects_to_report(outputs["report"], outputs["objects"])
    if job.instances is not None:
        from geoseg.run.instancestage import run_instances_for_job

        with _stage(times, "instances", record):
            written, entries = run_instances_for_job(job, scene, store, out, client, info.gpu_workers, show_progress)
            outputs.update(written)
            extra.update(entries)
            record.data.update(entries)
    else:
        _remove_stale(out / "panoptic.zarr")  # an earlier run's, which no longer matches the labels

    outputs["stac"] = write_stac_item(job, out, store, outputs)
    return RunResult(out, outputs, times, counts, summary, info, extra)


def _predict_stage(
    job: JobSpec, scene: Scene, out: Path, client, predictor: ChunkPredictor, key: str,
    record: runrecord.RunRecord, outputs: dict[str, Any], show_progress: bool,
) -> tuple[Any, dict[int, int]]:
    """Every chunk labelled into ``labels.zarr`` (and ``confidence.zarr`` for a predictor that gives it)."""
    store = _output(job, out, "labels.zarr")
    # with what numbered the labels (k-means: its model), so change compares only stores numbered alike
    attrs = {"geoseg:job": job.name, "geoseg:method": job.method.kind, "geoseg:resume_key": key,
             **predictor.provenance()}
    reused: list[int] = [0]
    grid = scene.chunk_grid(job.chunk_size)
    conf_store = _output(job, out, "confidence.zarr") if predictor.confidence else None
    counts = write_labels(client, scene, grid, predictor, store, key, attrs, show_progress, reused, conf_store)
    outputs["labels"] = store
    if conf_store is not None:
        outputs["confidence"] = conf_store
    else:
        _remove_stale(_output(job, out, "confidence.zarr"))  # an earlier run's, which no longer matches the labels
    record.data["chunks_total"] = grid.n_chunks
    record.data["chunks_reused"] = reused[0]
    return store, counts


def _evaluate_stage(
    job: JobSpec, scene: Scene, out: Path, client, store: Path | str, mapping: str,
    outputs: dict[str, Any], extra: dict[str, Any], show_progress: bool,
) -> Any:
    """Score the labels against the job's reference; the mapped classes become the store's legend."""
    from geoseg.accuracy.evaluate import evaluate
    from geoseg.accuracy.report import write_outputs

    assert job.reference is not None  # called only for jobs with a reference
    regions = job.regions
    evaluation = evaluate(store, str(job.reference.path), mapping=mapping, client=client, show_progress=show_progress,
                          **evaluation_options(job))
    written = write_outputs(
        evaluation, out,
        regions_path=str(regions.path) if regions and regions.path else None,
        preview=scene.paths[0],
    )
    outputs.update(written)
    extra["mapping"] = {str(k): v for k, v in evaluation.mapping.items()}
    apply_evaluation_legend(store, evaluation, client, show_progress)
    return evaluation.summary()


def _export_stage(job: JobSpec, out: Path, store: Path | str, outputs: dict[str, Any], show_progress: bool) -> None:
    from geoseg.io.export import build_overviews, export_cog

    if job.export.cog:
        outputs["cog"] = export_cog(store, out / "labels.tif", overview_resampling=job.export.resampling,
                                    show_progress=show_progress)
    if job.export.overviews:
        build_overviews(store, job.export.overviews, resampling=job.export.resampling, show_progress=show_progress)


def write_stac_item(job: JobSpec, out: Path, store: Path | str, outputs: dict[str, Any]) -> Path:
    """``item.json``: a STAC Item of the run's outputs (written last, so its checksums are final)."""
    from geoseg.io.labelstore import read_label_info
    from geoseg.io.stacout import write_run_item

    described = {**outputs, "run": out / runrecord.RUN_FILE}  # run.json is rewritten at the end: no checksum
    return write_run_item(out, described, item_id=job.name, labels=read_label_info(store),
                          properties={"geoseg:method": job.method.kind})


def apply_evaluation_legend(store: Path | str, evaluation: Any, client=None, show_progress: bool = False) -> None:
    """One id, one legend everywhere: once the labels are mapped to classes (k-means clusters), the
    store's values become the class ids of metrics.csv and the report, named and coloured as there
    (:func:`geoseg.accuracy.mapping.output_ids`; the clusters stay in ``labels.zarr/method_labels``
    and class_mapping.csv). Export and vectorize run after this, from the store."""
    from geoseg.accuracy.mapping import output_lut
    from geoseg.io.labelstore import read_label_info, remap_labels

    legend = evaluation.output_legend(read_label_info(store).legend)
    ids = evaluation.output_ids()
    if all(k == v for k, v in ids.items()):
        from geoseg.io.labelstore import set_legend

        set_legend(store, legend)
    else:
        remap_labels(store, output_lut(ids), legend, client=client, show_progress=show_progress)
    log.info("legend of %s: %s", store, ", ".join(f"{c.id}={c.name}" for c in legend))


def _output(job: JobSpec, out: Path, name: str) -> Any:
    """Where a label store goes: in ``out``, or straight on the object store for a URL output."""
    return storage.join(str(job.output), name) if storage.is_url(job.output) else out / name


def _remove_stale(store: Path | str) -> None:
    import shutil

    if isinstance(store, str):
        storage.remove(store)
        return

    for p in (store, store.with_name(store.name + PARTIAL_SUFFIX)):
        if p.exists():
            log.info("removing %s of an earlier run", p)
            shutil.rmtree(p)


def check_evaluation_inputs(job: JobSpec, scene: Scene) -> None:
    """Open the job's reference and regions against the scene's grid; raises what evaluate() would."""
    from geoseg.accuracy.evaluate import open_evaluation_inputs

    assert job.reference is not None  # called only for jobs with a reference
    if job.evaluate.mapping == "identity" and method_of(job.method.kind).mapping != "identity":
        raise JobSpecError(f"evaluate.mapping: identity would score {job.method.kind}'s labels (clusters, no classes) "
                           "as the reference classes of the same ids; use hungarian or many-to-one, or leave it out")
    options = {k: v for k, v in evaluation_options(job).items() if k != "class_colors"}
    open_evaluation_inputs(str(job.reference.path), scene.grid, mapping=job.evaluate.mapping or "identity", **options)


def evaluation_options(job: JobSpec) -> dict[str, Any]:
    """The job's reference and regions settings as keyword arguments of ``evaluate``."""
    ref, regions = job.reference, job.regions
    assert ref is not None
    return {
        "reference_field": ref.field,
        "reference_value": ref.value,
        "reference_background": ref.background,
        "reference_values": ref.values,
        "reference_nodata": ref.nodata,
        "class_names": reference_class_names(job),
        "class_colors": {c.id: c.color for c in job.classes if c.color} if job.classes else None,
        "regions": str(regions.path) if regions and regions.path else None,
        "region_field": regions.field if regions else None,
        "grid_cell_m": regions.grid_cell_m if regions else None,
        "merge_duplicates": bool(regions and regions.merge_duplicates),
        "repair_invalid": not regions or regions.repair_invalid,
    }


