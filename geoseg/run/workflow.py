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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import (
    CheckpointError,
    GeosegError,
    ModelError,
    OutputError,
    OutputInUseError,
    from_os_error,
)
from geoseg.io import storage
from geoseg.io.atomic import write_text_atomic
from geoseg.io.labelstore import PARTIAL_SUFFIX
from geoseg.io.opener import Trust, current_trust, fenced, job_trust
from geoseg.io.scene import Scene, open_scene
from geoseg.methods.predictors import ChunkPredictor, DeepLabPredictor, KMeansPredictor
from geoseg.run import limits, runrecord
from geoseg.run.cluster import ClusterInfo, connect
from geoseg.run.fence import fence_workers
from geoseg.run.jobspec import DeepLabConfig, JobSpec, KMeansConfig, ThresholdConfig
from geoseg.run.labelling import (
    fit_kmeans_on_cluster,
    kmeans_features,
    warm_in_background,
    write_labels,
)
from geoseg.run.lock import claim_output

if TYPE_CHECKING:
    from geoseg.methods.checkpoint import CheckpointMeta

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced; ``outputs`` maps a name to its path."""

    output_dir: Path | str  # str: an object-store URL (geoseg.io.storage)
    outputs: dict[str, Any]  # Path, or a URL str for an object-store output
    stage_seconds: dict[str, float]
    label_counts: dict[int, int]
    metrics_summary: Any = None
    cluster: ClusterInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)




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


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output_dir(out: Path, job: JobSpec) -> None:
    """Refuse an output folder that holds another job's run (a rerun of the same job is fine)."""
    record = out / runrecord.RUN_FILE
    if record.exists():
        try:
            previous = json.loads(record.read_text())
        except ValueError:
            previous = {}
        if previous.get("job", {}).get("name") != job.name:
            raise OutputInUseError(
                f"{out} holds the output of another run ({previous.get('job', {}).get('name', 'unknown')!r}); "
                "choose another output folder or delete it"
            )
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise OutputError(f"{out} exists and is not a geoseg output folder; choose an empty or new folder")


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


def check_method_bands(method: Any, scene: Scene) -> None:
    """Resolve the bands a k-means or threshold method asks for (roles, names, ``layer.band``) on the client:
    a band that cannot be told apart is an error before the cluster starts."""
    if isinstance(method, KMeansConfig):
        kmeans_features(method, scene)
    elif isinstance(method, ThresholdConfig):
        from geoseg.methods.threshold import resolve_index

        resolve_index(method.index, scene.bands or scene.band_names)


def check_deeplab_job(cfg: DeepLabConfig, scene: Scene) -> CheckpointMeta:
    """Refuse (``ModelError``) a checkpoint that is missing or was not trained for this scene.

    Runs before anything is written: both checkpoint files are there, the weights file is whole
    (:func:`~geoseg.methods.checkpoint.check_weights_file`), and the scene's bands
    (count, names, order) and pixel size match what the model was trained on.
    """
    from geoseg.methods.checkpoint import check_compatible, check_weights_file, checkpoint_paths, read_meta

    meta = read_meta(cfg.checkpoint)
    weights, _ = checkpoint_paths(cfg.checkpoint)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} are missing (only the sidecar is there); copy both files")
    check_weights_file(weights)  # a truncated or damaged file: refused here, not on every worker
    try:
        check_compatible(meta, scene.band_names, scene.resolution)
    except ModelError as exc:
        raise type(exc)(f"{weights}: {exc}") from None  # the same condition (ModelInputError), naming the file
    return meta


def build_deeplab_predictor(cfg: DeepLabConfig, scene: Scene, gpu_workers: int) -> DeepLabPredictor:
    """Check the checkpoint against the scene and describe how tasks should run it.

    Tasks ask for a ``GPU`` resource when the cluster has workers that offer one (and the job
    does not ask for ``device: cpu``), so they land only there; otherwise they run anywhere.
    """
    from geoseg.methods.deeplab import required_halo

    meta = check_deeplab_job(cfg, scene)
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
    )


def run_job(
    job: JobSpec, scheduler: str | None = None, show_progress: bool = True, client=None
) -> RunResult:
    """Run a validated job end to end. ``client`` reuses an existing Dask client (notebooks, tests).

    Every dataset is opened under the job's trust (:mod:`geoseg.io.opener`), here and on the workers.
    """
    if job.chips is not None:  # a folder of non-georeferenced chips: one pixel grid each, scored together
        from geoseg.run.chiprun import run_chips_job

        return run_chips_job(job, scheduler=scheduler, show_progress=show_progress, client=client)
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
    check_method_bands(job.method, scene)  # bands by role: refused here, before the cluster starts
    if remote:
        remote.check(job.name)
        if job.export.overviews:
            raise OutputError("export.overviews are built inside a local labels.zarr; not with an object-store output")
    else:
        check_output_dir(out, job)
    if isinstance(job.method, DeepLabConfig):
        check_deeplab_job(job.method, scene)  # a checkpoint that does not fit is refused before any output
    if job.reference is not None:
        check_evaluation_inputs(job, scene)  # so is a reference or regions layer that cannot be used
    need = check_machine(job, scene, local=client is None and not scheduler)  # before any worker starts
    # mkdir, one run per folder or prefix, stale temporaries removed (geoseg.run.lock, geoseg.run.storelock)
    lock = claim_output(remote.url if remote else out)
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
    fence_workers(client, current_trust())  # the workers read under the job's trust too
    # the label store's zarr (~0.2 s of imports) loads while the cluster samples and fits, not after the fit
    warm_in_background(("zarr",))
    grid = scene.chunk_grid(job.chunk_size)
    record.data["chunks_total"] = grid.n_chunks  # in run.json from the first stage on
    outputs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    method = job.method

    with _stage(times, "fit" if isinstance(method, (KMeansConfig, ThresholdConfig)) else "load_model", record):
        if isinstance(method, KMeansConfig):
            drawn: dict[str, int] = {}
            model, feats = fit_kmeans_on_cluster(client, scene, method, show_progress, drawn)
            if drawn:  # the sample actually drawn vs asked, in run.json
                extra["kmeans_sample"] = record.data["kmeans_sample"] = drawn
            predictor: ChunkPredictor = KMeansPredictor(model, feats)
            write_text_atomic(out / "model.json", json.dumps(model.to_json(), indent=1))
            outputs["model"] = out / "model.json"
            # the labels depend on the centroids and the standardisation, not on the inertia (a diagnostic
            # whose last digits vary with the order of the fit's threaded sums): keep it out of the key
            key = job_identity(job, scene, json.dumps({k: v for k, v in model.to_json().items() if k != "inertia"}))
        elif isinstance(method, ThresholdConfig):
            from geoseg.methods.threshold import fit_threshold_job

            predictor, model_json = fit_threshold_job(client, scene, method, show_progress)
            write_text_atomic(out / "model.json", json.dumps(model_json, indent=1))
            outputs["model"] = out / "model.json"
            key = job_identity(job, scene, json.dumps(model_json))
        else:
            from geoseg.methods.checkpoint import checkpoint_paths

            predictor = build_deeplab_predictor(method, scene, info.gpu_workers)
            weights, sidecar = checkpoint_paths(method.checkpoint)
            digests = [_file_digest(weights)] + ([_file_digest(sidecar)] if sidecar.is_file() else [])
            key = job_identity(job, scene, " ".join(digests))

    with _stage(times, "predict", record):
        store = _output(job, out, "labels.zarr")
        attrs = {"geoseg:job": job.name, "geoseg:method": method.kind, "geoseg:resume_key": key}
        reused: list[int] = [0]
        conf_store = _output(job, out, "confidence.zarr") if getattr(predictor, "confidence", False) else None
        counts = write_labels(client, scene, grid, predictor, store, key, attrs, show_progress, reused, conf_store)
        outputs["labels"] = store
        if conf_store is not None:
            outputs["confidence"] = conf_store
        else:
            _remove_stale(_output(job, out, "confidence.zarr"))  # an earlier run's, which no longer matches the labels
        record.data["chunks_total"] = grid.n_chunks
        record.data["chunks_reused"] = reused[0]

    summary = None
    if job.reference is not None:
        from geoseg.accuracy.evaluate import evaluate
        from geoseg.accuracy.report import write_outputs

        with _stage(times, "evaluate", record):
            mapping = job.evaluate.mapping or ("hungarian" if isinstance(method, KMeansConfig) else "identity")
            regions = job.regions
            evaluation = evaluate(store, str(job.reference.path), mapping=mapping, client=client,
                                  show_progress=show_progress, **evaluation_options(job))
            written = write_outputs(
                evaluation, out,
                regions_path=str(regions.path) if regions and regions.path else None,
                preview=scene.paths[0],
            )
            outputs.update(written)
            summary = evaluation.summary()
            extra["mapping"] = {str(k): v for k, v in evaluation.mapping.items()}
            apply_evaluation_legend(store, evaluation, client, show_progress)

    if job.export.cog or job.export.overviews:
        from geoseg.io.export import build_overviews, export_cog

        with _stage(times, "export", record):
            if job.export.cog:
                outputs["cog"] = export_cog(store, out / "labels.tif", overview_resampling=job.export.resampling,
                                            show_progress=show_progress)
            if job.export.overviews:
                build_overviews(store, job.export.overviews, resampling=job.export.resampling,
                                show_progress=show_progress)

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

    outputs["stac"] = write_stac_item(job, out, store, outputs)
    return RunResult(out, outputs, times, counts, summary, info, extra)


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
        "class_names": reference_class_names(job),
        "class_colors": {c.id: c.color for c in job.classes if c.color} if job.classes else None,
        "regions": str(regions.path) if regions and regions.path else None,
        "region_field": regions.field if regions else None,
        "grid_cell_m": regions.grid_cell_m if regions else None,
        "merge_duplicates": bool(regions and regions.merge_duplicates),
        "repair_invalid": not regions or regions.repair_invalid,
    }


def reference_class_names(job: JobSpec) -> dict[int, str] | None:
    """The reference's class names, when the job gives them (``classes:`` in the job file)."""
    return {c.id: c.name for c in job.classes} if job.classes else None
