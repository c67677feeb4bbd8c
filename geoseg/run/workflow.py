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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from geoseg.run import runrecord
from geoseg.legend import NODATA_LABEL
from geoseg.run.cluster import ClusterInfo, connect
from geoseg.errors import GeosegError, InputError, ModelError, OutputError, from_os_error
from geoseg.run.lock import claim_output
from geoseg.methods.features import FeatureSpec, ResolvedFeatures
from geoseg.geo import ChunkGrid, Window, halo_window
from geoseg.io import storage
from geoseg.io.atomic import write_text_atomic
from geoseg.io.scene import Scene, open_scene, read_window
from geoseg.run.jobspec import DeepLabConfig, JobSpec, KMeansConfig
from geoseg.io.labelstore import PARTIAL_SUFFIX, LabelStoreWriter
from geoseg.methods.kmeans import KMeansModel, fit_kmeans
from geoseg.methods.predictors import ChunkPredictor, DeepLabPredictor, KMeansPredictor
from geoseg.methods.sampling import chunk_rng, sample_valid_pixels, sample_windows, sampling_rate

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
    scene: Scene, grid: ChunkGrid, store: str, predictor: ChunkPredictor, window: Window,
    confidence_store: str | None = None,
) -> np.ndarray:
    """Label one chunk and write it to the store; a chunk already written is only counted.

    With ``confidence_store`` the predictor's confidence of the same chunk is written there
    too; a chunk counts as done only when both stores have it (the confidence is written
    first, so a crash between the two writes redoes the chunk). Returns the chunk's label
    histogram (256 counts), which is all that travels back.
    """
    from geoseg.io.labelstore import read_partial_window

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
    client, scene: Scene, grid: ChunkGrid, cfg: KMeansConfig, show_progress: bool = True  # noqa: ANN001
) -> tuple[KMeansModel, ResolvedFeatures]:
    """Draw the stratified sample on the workers and fit k-means there too (:func:`fit_task`).

    The sample parts go from the sampling tasks to the fit task worker to worker; the fit
    starts when the last part is drawn, and only the model (a few numbers) reaches the client.

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
    rate = sampling_rate(cfg.sample_size, grid.height * grid.width)
    windows = list(grid.windows())
    futures = client.map(sample_task, [scene] * len(windows), [feats] * len(windows), windows,
                         [rate] * len(windows), [cfg.seed] * len(windows), pure=False)
    fit = client.submit(fit_task, futures, cfg.n_clusters, cfg.seed, feats.names, cfg.n_init, pure=False)
    model = _gather(client, [fit], "sampling and fit", show_progress)[0]
    return model, feats


def fit_task(
    parts: list[np.ndarray], n_clusters: int, seed: int, names: tuple[str, ...], n_init: int
) -> KMeansModel:
    """Fit k-means on the gathered sample, on a worker (the same model as on the client).

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
        return fit_kmeans(sample, n_clusters, seed, names, n_init=n_init)


def check_deeplab_job(cfg: DeepLabConfig, scene: Scene) -> "CheckpointMeta":
    """Refuse (``ModelError``) a checkpoint that is missing or was not trained for this scene.

    Runs before anything is written: both checkpoint files are there, and the scene's bands
    (count, names, order) and pixel size match what the model was trained on.
    """
    from geoseg.methods.checkpoint import check_compatible, checkpoint_paths, read_meta

    meta = read_meta(cfg.checkpoint)
    weights, _ = checkpoint_paths(cfg.checkpoint)
    if not weights.is_file():
        raise ModelError(f"checkpoint weights {weights} are missing (only the sidecar is there); copy both files")
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
    resources = {"GPU": 1} if gpu_workers and cfg.device != "cpu" else None
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
    futures = client.map(label_task, [scene] * n, [grid] * n, [str(store)] * n, [predictor] * n, windows,
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
    scene = open_scene(job.inputs, allow_gdal_virtual=job.allow_gdal_virtual)
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
    record: "runrecord.RunRecord", show_progress: bool,
) -> RunResult:
    times: dict[str, float] = record.stage_seconds
    record.set_cluster(info)
    grid = scene.chunk_grid(job.chunk_size)
    outputs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    method = job.method

    with _stage(times, "fit" if isinstance(method, KMeansConfig) else "load_model"):
        if isinstance(method, KMeansConfig):
            model, feats = fit_kmeans_on_cluster(client, scene, grid, method, show_progress)
            predictor: ChunkPredictor = KMeansPredictor(model, feats)
            write_text_atomic(out / "model.json", json.dumps(model.to_json(), indent=1))
            outputs["model"] = out / "model.json"
            key = job_identity(job, scene, json.dumps(model.to_json()))
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

    if job.export.cog or job.export.overviews:
        from geoseg.io.export import build_overviews, export_cog

        with _stage(times, "export"):
            if job.export.cog:
                outputs["cog"] = export_cog(store, out / "labels.tif", overview_resampling=job.export.resampling)
            if job.export.overviews:
                build_overviews(store, job.export.overviews, resampling=job.export.resampling)

    if job.vectorize.enabled:
        from geoseg.vector.vectorize import vectorize_labels

        with _stage(times, "vectorize"):
            v = job.vectorize
            vres = vectorize_labels(
                store, out / "polygons.gpkg", client=client, min_mapping_unit_px=v.min_mapping_unit_px,
                simplify_tolerance=v.simplify_tolerance, layout=v.layout,
            )
            outputs["polygons"] = Path(vres.out_path)
            extra["n_polygons"] = vres.n_features

    summary = None
    if job.reference is not None:
        from geoseg.accuracy.evaluate import evaluate
        from geoseg.accuracy.report import write_outputs

        with _stage(times, "evaluate"):
            mapping = job.evaluate.mapping or ("hungarian" if isinstance(method, KMeansConfig) else "identity")
            regions = job.regions
            evaluation = evaluate(
                store,
                str(job.reference.path),
                reference_field=job.reference.field,
                class_names=reference_class_names(job),
                regions=str(regions.path) if regions and regions.path else None,
                region_field=regions.field if regions else None,
                grid_cell_m=regions.grid_cell_m if regions else None,
                mapping=mapping,
                client=client,
            )
            written = write_outputs(
                evaluation, out,
                regions_path=str(regions.path) if regions and regions.path else None,
                preview=scene.paths[0],
            )
            outputs.update(written)
            summary = evaluation.summary()
            extra["mapping"] = {str(k): v for k, v in evaluation.mapping.items()}
    return RunResult(out, outputs, times, counts, summary, info, extra)


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

    regions = job.regions
    open_evaluation_inputs(
        str(job.reference.path), scene.grid,
        reference_field=job.reference.field,
        regions=str(regions.path) if regions and regions.path else None,
        region_field=regions.field if regions else None,
        grid_cell_m=regions.grid_cell_m if regions else None,
        mapping=job.evaluate.mapping or "identity",
    )


def reference_class_names(job: JobSpec) -> dict[int, str] | None:
    """The reference's class names, when the job gives them (``classes:`` in the job file)."""
    return {c.id: c.name for c in job.classes} if job.classes else None
