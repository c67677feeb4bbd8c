"""The run: from a job spec to labels.zarr, polygons.gpkg, metrics and run.json.

Every stage works on the input's chunk grid and only small things reach the client: a pixel
sample, centroids, per-chunk label counts, confusion matrices, seam polygons. Chunks already
written by an interrupted run with the same inputs and parameters are skipped.
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

import numpy as np

from geoseg.errors import GeosegError, InputError, ModelError, OutputError, from_os_error
from geoseg.geo import ChunkGrid, Window, halo_window
from geoseg.io import storage
from geoseg.io.atomic import write_text_atomic
from geoseg.io.labelstore import PARTIAL_SUFFIX, LabelStoreWriter
from geoseg.io.scene import Scene, open_scene, read_window
from geoseg.legend import NODATA_LABEL
from geoseg.methods.features import FeatureSpec, ResolvedFeatures
from geoseg.methods.kmeans import KMeansModel, fit_kmeans
from geoseg.methods.predictors import ChunkPredictor, DeepLabPredictor, KMeansPredictor
from geoseg.methods.sampling import chunk_rng, sample_valid_pixels, sample_windows, sampling_rate
from geoseg.run import runrecord
from geoseg.run.cluster import ClusterInfo, connect
from geoseg.run.jobspec import DeepLabConfig, JobSpec, KMeansConfig, ThresholdConfig
from geoseg.run.lock import claim_output

if TYPE_CHECKING:
    from geoseg.methods.checkpoint import CheckpointMeta

log = logging.getLogger(__name__)

#: Name of the raster inside ``confidence.zarr`` and its attributes.
CONFIDENCE_ARRAY = "confidence"
CONFIDENCE_ATTRS: dict[str, Any] = {
    "long_name": "probability of the predicted class",
    "units": "percent",
    "valid_range": [0, 100],
    "geoseg:kind": "confidence",
}


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


# --------------------------------------------------------------------------- tasks (run on workers)


#: At most this fraction of each chunk's file blocks is read to draw the k-means sample.
SAMPLE_BLOCK_FRACTION = 0.25
#: Read about this many times more pixels than are drawn, so each chunk's share is spread over several
#: blocks; a large scene then reads one block or a few per chunk instead of a quarter of it.
SAMPLE_OVERREAD = 20.0


#: Below this fraction of the asked k-means sample a warning says how many pixels were drawn.
SAMPLE_SHORT_WARNING = 0.9


def sample_block_fraction(rate: float) -> float:
    """Fraction of a chunk's file blocks to read for a sampling ``rate``: ``min(0.25, 20 × rate)``.

    ``sample_windows`` reads at least one block, so every chunk still contributes.

    >>> sample_block_fraction(0.05), sample_block_fraction(0.0005)
    (0.25, 0.01)
    """
    return min(SAMPLE_BLOCK_FRACTION, SAMPLE_OVERREAD * rate)


def sample_task(scene: Scene, feats: ResolvedFeatures, window: Window, rate: float, seed: int) -> np.ndarray:
    """Draw one chunk's share of the k-means sample from a random subset of its file blocks.

    The rate is scaled up by the fraction actually read, so each chunk still contributes in
    proportion to its valid pixels.
    """
    rng = chunk_rng(seed, window)
    parts = sample_windows(window, scene.block, sample_block_fraction(rate), rng)
    read_px = sum(w.height * w.width for w in parts)
    scaled = min(1.0, rate * window.height * window.width / read_px)
    out = []
    for sub in parts:
        data, valid = read_window(scene, sub)
        out.append(sample_valid_pixels(feats.compute(data), valid, scaled, rng))
    return np.concatenate(out, axis=0)


def label_task(
    scene: Scene, chunk: int, store: str, predictor: ChunkPredictor, window: Window,
    confidence_store: str | None = None,
) -> np.ndarray:
    """Label one chunk of the scene's grid cut into ``chunk`` pixels and write it to the store; a
    chunk already written is only counted. (The chunk size travels, not a second copy of the grid.)

    With ``confidence_store`` the predictor's confidence of the same chunk is written there
    too; a chunk counts as done only when both stores have it (the confidence is written
    first, so a crash between the two writes redoes the chunk). Returns the chunk's label
    histogram (256 counts), which is all that travels back.
    """
    from geoseg.io.labelstore import read_partial_window

    grid = scene.grid.tiles(chunk)
    writer = LabelStoreWriter(store, grid)
    conf_writer = LabelStoreWriter(confidence_store, grid, array=CONFIDENCE_ARRAY) if confidence_store else None
    if writer.is_done(window) and (conf_writer is None or conf_writer.is_done(window)):
        labels = read_partial_window(store, window)
    else:
        hw = halo_window(window, predictor.halo, grid.shape)
        data, valid = read_window(scene, hw.outer)
        if conf_writer is not None:
            labels, confidence = predictor.predict_with_confidence(data, valid, hw)  # type: ignore[attr-defined]
            del data, valid
            conf_writer.write(window, confidence)
        else:
            labels = predictor.predict(data, valid, hw)
        writer.write(window, labels)
    return np.bincount(labels.ravel(), minlength=256)


# --------------------------------------------------------------------------- orchestration


def job_identity(job: JobSpec, scene: Scene, extra: str = "") -> str:
    """A key for the work: inputs (path, size, content checksum), grid and method parameters.

    A changed input or parameter gives another key, so stale chunks are never reused; the
    checksum (cached, geoseg.io.checksum) catches inputs rewritten with the same size and mtime.
    Cluster settings and the output folder do not change results and are left out.
    """
    from geoseg.io.checksum import content_digest

    inputs = []
    for p in scene.paths:
        st = Path(p).stat() if Path(p).exists() else None
        inputs.append([p, st.st_size if st else None, content_digest(p)])
    payload = {
        "inputs": inputs,
        "chunk": job.chunk_size,
        "method": job.method.model_dump(mode="json"),
        "extra": extra,
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
            raise OutputError(
                f"{out} holds the output of another run ({previous.get('job', {}).get('name', 'unknown')!r}); "
                "choose another output folder or delete it"
            )
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise OutputError(f"{out} exists and is not a geoseg output folder; choose an empty or new folder")


@contextmanager
def _stage(times: dict[str, float], name: str) -> Iterator[None]:
    log.info("stage %s ...", name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s done in %.1f s", name, times[name])


def _gather(client, futures: list, label: str, show_progress: bool) -> list:  # noqa: ANN001
    """Wait for futures with a progress bar on a terminal; results in submission order."""
    if show_progress and sys.stderr.isatty():
        from distributed import progress

        print(f"{label}:", file=sys.stderr)
        progress(futures)
    return client.gather(futures)


def fit_kmeans_on_cluster(
    client, scene: Scene, grid: ChunkGrid, cfg: KMeansConfig, show_progress: bool = True,  # noqa: ANN001
    drawn: dict[str, int] | None = None,
) -> tuple[KMeansModel, ResolvedFeatures]:
    """Draw the stratified sample on the workers and fit k-means there too (:func:`fit_task`).

    The sample parts go from the sampling tasks to the fit task worker to worker; the fit
    starts when the last part is drawn, and only the model (a few numbers) reaches the client.

    ``drawn`` receives ``{"drawn": n, "asked": m}``; a sample under 90 % of the asked size
    (a scene with much nodata) is also a warning.

    With ``cfg.model`` (a ``model.json`` of an earlier run) the fit is skipped and that model reused.
    """
    feats = FeatureSpec(
        bands=tuple(cfg.features.bands) if cfg.features.bands else None, indices=tuple(cfg.features.indices)
    ).resolve(scene.band_names)
    if cfg.model is not None:
        try:
            model = KMeansModel.from_json(json.loads(Path(cfg.model).read_text()))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read k-means model {cfg.model}: {exc}") from exc
        if model.feature_names != feats.names:
            raise InputError(
                f"k-means model {cfg.model} was fitted on features {list(model.feature_names)}, "
                f"this scene gives {list(feats.names)}"
            )
        return model, feats
    futures = sample_futures(client, scene, grid, feats, cfg.sample_size, cfg.seed)
    fit = client.submit(fit_task, futures, cfg.n_clusters, cfg.seed, feats.names, cfg.n_init, pure=False)
    model, n_drawn = _gather(client, [fit], "sampling and fit", show_progress)[0]
    asked = min(cfg.sample_size, grid.height * grid.width)
    if n_drawn < SAMPLE_SHORT_WARNING * asked:
        log.warning(
            "k-means sample: %d of the %d pixels asked were drawn (%.0f %%); the scene has fewer valid pixels "
            "than its size suggests (nodata, NaN or masks)", n_drawn, asked, 100 * n_drawn / asked,
        )
    if drawn is not None:
        drawn.update(drawn=int(n_drawn), asked=int(asked))
    return model, feats


def fit_task(
    parts: list[np.ndarray], n_clusters: int, seed: int, names: tuple[str, ...], n_init: int
) -> tuple[KMeansModel, int]:
    """Fit k-means on the gathered sample, on a worker (the same model as on the client); returns
    the model and the number of pixels it was fitted on.

    The other workers wait for the fit, so it may use every core of its machine, not the one
    thread a worker's BLAS/OpenMP pools are limited to.
    """
    import os

    from threadpoolctl import threadpool_limits

    sample = np.concatenate(parts, axis=0)
    if sample.shape[0] == 0:
        raise InputError("the input has no valid pixels (all nodata or NaN); nothing to cluster")
    log.info("k-means sample: %d pixels x %d features", *sample.shape)
    with threadpool_limits(limits=len(os.sched_getaffinity(0))):
        return fit_kmeans(sample, n_clusters, seed, names, n_init=n_init), int(sample.shape[0])


def sample_futures(client, scene: Scene, grid: ChunkGrid, feats: Any, sample_size: int, seed: int) -> list:  # noqa: ANN001
    """One sampling task per chunk of ``grid`` (each gets only the files meeting its chunk)."""
    rate = sampling_rate(sample_size, grid.height * grid.width)
    windows = list(grid.windows())
    scenes = [scene.for_window(w) for w in windows]
    return client.map(sample_task, scenes, [feats] * len(windows), windows,
                      [rate] * len(windows), [seed] * len(windows), pure=False)


def draw_sample(
    client, scene: Scene, grid: ChunkGrid, feats: Any, sample_size: int, seed: int,
    show_progress: bool = True,
) -> np.ndarray:
    """The stratified sample ``(n, features)`` drawn chunk by chunk of ``grid`` on the workers.

    ``feats`` is anything with ``compute(data) -> (f, h, w)`` (``ResolvedFeatures``, a threshold index).
    """
    futures = sample_futures(client, scene, grid, feats, sample_size, seed)
    sample = np.concatenate(_gather(client, futures, "sampling", show_progress), axis=0)
    if sample.shape[0] == 0:
        raise InputError("the input has no valid pixels (all nodata or NaN); nothing to fit")
    return sample


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
        raise ModelError(f"checkpoint weights {weights} are missing (only the sidecar is there); copy both files")
    check_weights_file(weights)  # a truncated or damaged file: refused here, not on every worker
    try:
        check_compatible(meta, scene.band_names, scene.resolution)
    except ModelError as exc:
        raise ModelError(f"{weights}: {exc}") from None
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


def write_labels(
    client, scene: Scene, grid: ChunkGrid, predictor: ChunkPredictor, store: Path | str,  # noqa: ANN001
    resume_key: str, attrs: dict[str, Any], show_progress: bool = True, reused: list[int] | None = None,
    confidence_store: Path | str | None = None,
) -> dict[int, int]:
    """Predict every chunk into ``store`` (skipping chunks already done) and finalise it.

    ``reused``, when given, receives the number of chunks found already done.
    ``confidence_store``: also write the predictor's per-pixel confidence there (uint8 percent,
    255 = nodata, same grid and georeferencing); it is finalised before the labels, so a
    ``labels.zarr`` that exists always has its finished ``confidence.zarr`` next to it.
    """
    if grid.grid != scene.grid:
        raise ValueError("write_labels needs the scene's own grid cut into chunks (scene.chunk_grid)")
    reused = reused if reused is not None else [0]
    writer = LabelStoreWriter.create(store, grid, predictor.legend(), attrs=attrs, resume_key=resume_key)
    done = writer.done_windows()
    conf_writer = None
    if confidence_store is not None:
        conf_writer = LabelStoreWriter.create(
            confidence_store, grid, (), attrs={**attrs, **CONFIDENCE_ATTRS}, resume_key=resume_key,
            dtype="uint8", fill_value=NODATA_LABEL, array=CONFIDENCE_ARRAY,
        )
        done &= conf_writer.done_windows()
    if done:
        log.info("resuming: %d of %d chunks already written", len(done), grid.n_chunks)
    reused[0] = len(done)
    windows = list(grid.windows())
    n = len(windows)
    annotations = {"resources": predictor.resources} if predictor.resources else {}
    conf = str(confidence_store) if confidence_store is not None else None
    scenes = [scene.for_window(halo_window(w, predictor.halo, grid.shape).outer) for w in windows]
    futures = client.map(label_task, scenes, [grid.chunk] * n, [str(store)] * n, [predictor] * n, windows,
                         [conf] * n, pure=False, **annotations)
    hist = np.sum(_gather(client, futures, "labelling", show_progress), axis=0)
    if conf_writer is not None:
        conf_writer.finalize()
    writer.finalize()
    return {int(i): int(c) for i, c in enumerate(hist) if c}


def run_job(
    job: JobSpec, scheduler: str | None = None, show_progress: bool = True, client=None  # noqa: ANN001
) -> RunResult:
    """Run a validated job end to end. ``client`` reuses an existing Dask client (notebooks, tests)."""
    remote = storage.RemoteOutput.of(job.output)  # object storage: small files built on local scratch
    out = remote.scratch if remote else Path(job.output)
    scene = open_scene(job.inputs, allow_gdal_virtual=job.allow_gdal_virtual, grid=job.grid, masks=job.masks)
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
    lock = claim_output(out)  # mkdir, one run per folder, stale temporaries removed (geoseg.run.lock)
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
        user_error = from_os_error(exc)  # permission, not a directory, disk full: the user's to fix
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
                remote.close(record.path, result.outputs if record.data.get("outcome") == "complete" else None)
        finally:
            lock.release()
    result.outputs["run"] = remote.target(record.path.name) if remote else record.path
    return result


def _run_stages(
    job: JobSpec, scene: Scene, out: Path, client, info: ClusterInfo,  # noqa: ANN001
    record: runrecord.RunRecord, show_progress: bool,
) -> RunResult:
    times: dict[str, float] = record.stage_seconds
    record.set_cluster(info)
    grid = scene.chunk_grid(job.chunk_size)
    outputs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    method = job.method

    with _stage(times, "fit" if isinstance(method, (KMeansConfig, ThresholdConfig)) else "load_model"):
        if isinstance(method, KMeansConfig):
            drawn: dict[str, int] = {}
            model, feats = fit_kmeans_on_cluster(client, scene, grid, method, show_progress, drawn)
            if drawn:  # the sample actually drawn vs asked, in run.json
                extra["kmeans_sample"] = record.data["kmeans_sample"] = drawn
            predictor: ChunkPredictor = KMeansPredictor(model, feats)
            write_text_atomic(out / "model.json", json.dumps(model.to_json(), indent=1))
            outputs["model"] = out / "model.json"
            key = job_identity(job, scene, json.dumps(model.to_json()))
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

    with _stage(times, "predict"):
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

        with _stage(times, "evaluate"):
            mapping = job.evaluate.mapping or ("hungarian" if isinstance(method, KMeansConfig) else "identity")
            regions = job.regions
            evaluation = evaluate(store, str(job.reference.path), mapping=mapping, client=client,
                                  **evaluation_options(job))
            written = write_outputs(
                evaluation, out,
                regions_path=str(regions.path) if regions and regions.path else None,
                preview=scene.paths[0],
            )
            outputs.update(written)
            summary = evaluation.summary()
            extra["mapping"] = {str(k): v for k, v in evaluation.mapping.items()}
            apply_evaluation_legend(store, evaluation)

    if job.export.cog or job.export.overviews:
        from geoseg.io.export import build_overviews, export_cog

        with _stage(times, "export"):
            if job.export.cog:
                outputs["cog"] = export_cog(store, out / "labels.tif", overview_resampling=job.export.resampling,
                                            show_progress=show_progress)
            if job.export.overviews:
                build_overviews(store, job.export.overviews, resampling=job.export.resampling,
                                show_progress=show_progress)

    if job.vectorize.enabled:
        from geoseg.vector.vectorize import vectorize_labels

        with _stage(times, "vectorize"):
            v = job.vectorize
            vres = vectorize_labels(
                store, out / "polygons.gpkg", client=client, min_mapping_unit_px=v.min_mapping_unit_px,
                simplify_tolerance=v.simplify_tolerance, layout=v.layout, show_progress=show_progress,
            )
            outputs["polygons"] = Path(vres.out_path)
            extra["n_polygons"] = vres.n_features

    if job.objects is not None:
        from geoseg.accuracy.objectstats import run_objects_for_job

        with _stage(times, "objects"):
            outputs.update(run_objects_for_job(job, scene.grid, store, out, client))
            if "report" in outputs:  # evaluation ran first: add the objects table to its report.html
                from geoseg.accuracy.objectreport import add_objects_to_report

                add_objects_to_report(outputs["report"], outputs["objects"])

    return RunResult(out, outputs, times, counts, summary, info, extra)


def apply_evaluation_legend(store: Path | str, evaluation: Any) -> None:
    """One legend everywhere: the labels take the names and colours of the classes they were
    mapped to (job ``classes`` first, then the reference's colour table, then a palette), so
    the COG, polygons.gpkg and the report agree; cluster ids stay in class_mapping.csv.
    Export and vectorize run after this, from the store."""
    from geoseg.io.labelstore import read_label_info, set_legend

    legend = evaluation.output_legend(read_label_info(store).legend)
    set_legend(store, legend)
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
