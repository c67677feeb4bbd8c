"""The ``geoseg`` command: a thin layer over the library.

Every subcommand parses its arguments, calls one library function and prints a short
summary. Errors a user can fix (``GeosegError``) are printed as one clear line with a
non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import GeosegError, JobSpecError

if TYPE_CHECKING:  # the CLI imports distributed (only when a scheduler is given) and pandas lazily
    import pandas as pd
    from distributed import Client

log = logging.getLogger("geoseg")


def _setup_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.ERROR if quiet and not verbose else logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # distributed configures its own loggers when first imported (later, lazily): tell it via config,
    # through the environment while Dask is not imported (commands without a cluster never import it)
    # -q: errors only (the nanny's "still alive after 4.0 seconds, killing" at shutdown is a warning)
    distributed_level = "info" if verbose >= 2 else "error" if quiet and not verbose else "warning"
    if "dask" in sys.modules:
        import dask

        dask.config.set({"logging.distributed": distributed_level})
    else:
        os.environ["DASK_LOGGING__DISTRIBUTED"] = distributed_level
    logging.getLogger("distributed").setLevel(max(level, logging.WARNING))


# --------------------------------------------------------------------------- subcommands


def cmd_synth(args: argparse.Namespace) -> int:
    from geoseg.samples.synthetic import make_scene

    files = make_scene(args.kind, args.out, width=args.width, height=args.height or args.width, seed=args.seed)
    print(f"image:     {_shown(files.image)}\nreference: {_shown(files.reference)}\nregions:   {_shown(files.regions)}")
    if args.products:
        from geoseg.samples.products import write_products

        for name, path in write_products(files.image, args.out, args.products.split(","), seed=args.seed).items():
            print(f"{name + ':':<10} {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from geoseg.run.jobspec import load_job
    from geoseg.run.workflow import run_job

    job = _with_connect_timeout(load_job(args.job), args.connect_timeout)
    _check_scheduler(args.scheduler, job.cluster.connect_timeout)
    result = run_job(job, scheduler=args.scheduler, show_progress=not (args.quiet or args.json))
    if args.json:  # one JSON document on stdout, for scripts
        import json

        print(json.dumps(result_summary(result), indent=1))
    else:
        print_result(result, quiet=args.quiet)
    return 0


def result_summary(result) -> dict:  # a RunResult
    """What ``geoseg run --json`` prints: outputs, stage times, label counts and the scene's scores."""
    summary: dict = {
        "output_dir": str(result.output_dir),
        "outputs": {k: str(v) for k, v in result.outputs.items()},
        "stage_seconds": dict(result.stage_seconds),
        "label_counts": {str(k): int(v) for k, v in result.label_counts.items()},
    }
    df = result.metrics_summary
    if df is not None:
        table = df.reset_index()
        summary["classes"] = [{k: (None if v != v else v) for k, v in row.items()}  # NaN -> null
                              for row in table.astype(object).to_dict("records")]  # fmt: skip
        summary["coverage"] = list(df.attrs.get("coverage", []) or [])
    return summary


def _with_connect_timeout(job, seconds: float | None):
    """``--connect-timeout`` overrides the job's ``cluster.connect_timeout``."""
    if seconds is None:
        return job
    return job.model_copy(update={"cluster": job.cluster.model_copy(update={"connect_timeout": seconds})})


def _check_scheduler(scheduler: str | None, timeout: float) -> None:
    """A given scheduler must answer before anything else is done (a silent port is refused in seconds)."""
    if scheduler:
        from geoseg.run.cluster import check_handshake, check_tls_settings

        check_tls_settings(scheduler)
        check_handshake(scheduler, timeout)


def cmd_monitor(args: argparse.Namespace) -> int:
    import json

    from geoseg.run.jobspec import load_job
    from geoseg.run.monitor import run_monitor

    job = _with_connect_timeout(load_job(args.job), args.connect_timeout)
    _check_scheduler(args.scheduler, job.cluster.connect_timeout)
    summary = run_monitor(job, scheduler=args.scheduler)
    print(json.dumps(summary.to_json(), indent=1))
    return summary.exit_code


def cmd_change(args: argparse.Namespace) -> int:
    from geoseg.accuracy.change import compare_periods

    report = compare_periods(args.before, args.after, args.out, regions=args.regions, region_field=args.region_field)
    print(report.transitions("ALL", changed_only=True).to_string(index=False))
    print(f"changed area: {report.changed_area_m2():.0f} m² of {report.total_area_m2():.0f} m²; "
          f"written to {_shown(args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from geoseg.run.demo import run_demo

    result = run_demo(Path(args.out), size=args.size, seed=args.seed, n_workers=args.workers)
    print_result(result, quiet=args.quiet)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from geoseg.io.jobfile import read_yaml
    from geoseg.methods.training import load_train_job, train

    data = read_yaml(Path(args.job), "training job")
    if isinstance(data, dict) and data.get("kind") == "maskrcnn":
        return _train_instances(args, data)
    job = load_train_job(args.job)
    if args.quiet:
        job = job.model_copy(update={"progress": False})
    result = train(job)
    for h in result.history:
        loss = "-" if h.get("train_loss") is None else f"{h['train_loss']:.4f}"
        miou = "-" if h.get("val_miou") is None else f"{h['val_miou']:.4f}"
        print(f"epoch {h['epoch']:>3}: train loss {loss}, val mIoU {miou} ({h['seconds']:.1f}s)")
    if result.best_val_miou is not None:
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in result.meta.training.val_iou.items())
        how = "the highest EMA of val mIoU" if job.checkpoint_selection == "smoothed" else "the highest val mIoU"
        print(f"best val mIoU: {result.best_val_miou:.4f} (epoch {result.best_epoch}, kept for {how}; {per_class})")
    else:
        print("best val mIoU: - (no validation rows: val_fraction 0 and no val_pairs; the last epoch is kept)")
    if result.baselines:
        _print_baselines(result, [c.name for c in job.classes])
    print(f"trained {result.seconds:.0f}s ({result.cpu_seconds / 60:.1f} CPU min) on {len(job.pairs)} image(s)")
    weights = result.checkpoint.resolve()
    paths = {"checkpoint": weights, "sidecar": weights.with_suffix(".json"), "history": result.history_path.resolve()}
    if result.baselines:
        from geoseg.methods.training.loop import baselines_path

        paths["baselines"] = baselines_path(weights).resolve()
    _print_paths(paths)
    return 0


def _print_baselines(result: Any, names: list[str]) -> None:
    """The network's validation IoU per class beside index + Otsu's and k-means' on the same pixels."""
    chosen: dict[str, Any] = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    rows = [("network", chosen.get("val_iou") or {}, result.best_val_miou)]
    rows += [(b.name, b.to_json(names)["val_iou"], b.miou) for b in result.baselines]
    fmt = lambda v: "    -" if v is None else f"{v:.3f}"  # noqa: E731
    width = max(len(r[0]) for r in rows)
    print(f"validation IoU on {result.baselines[0].val_px} px (baselines fitted and mapped on training pixels):")
    print(f"  {'':{width}}  " + "  ".join(f"{n:>8}" for n in [*names, "mIoU"]))
    for name, iou, miou in rows:
        print(f"  {name:{width}}  " + "  ".join(f"{fmt(iou.get(n)):>8}" for n in names) + f"  {fmt(miou):>8}")


def print_result(result, quiet: bool = False) -> None:
    """Per-class IoU table (when evaluated) and stage times (not with ``-q``), and the paths written."""
    if not quiet:
        if result.metrics_summary is not None:
            _print_summary(result.metrics_summary)
        times = ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
        print(f"stages: {times}")
    _print_paths(result.outputs)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from geoseg.accuracy.evaluate import evaluate
    from geoseg.accuracy.report import write_outputs

    if args.reference_list:  # LABELS... --reference R [--reference R ...]: one per label raster, or one for all
        labels, reference = list(args.labels), list(args.reference_list)
    elif len(args.labels) == 2:  # the usual form: LABELS REFERENCE
        labels, reference = args.labels[0], args.labels[1]
    else:
        raise JobSpecError("give LABELS REFERENCE, or several label rasters with --reference for each (or one for all)")
    with _maybe_client(args.scheduler, args.connect_timeout) as client:
        evaluation = evaluate(
            labels, reference, reference_field=args.reference_field, regions=args.regions,
            region_field=args.region_field, grid_cell_m=args.grid_cell_m, mapping=args.mapping,
            class_names=_parse_class_names(args.class_names), client=client,
            reference_value=args.reference_value, reference_background=args.background,
            reference_nodata=_parse_ints(args.reference_nodata, "--reference-nodata"),
            merge_duplicates=args.merge_duplicates, show_progress=not args.quiet,
        )
    # the label raster is scored, not rewritten: class_mapping.csv's raster_value is what it holds
    written = write_outputs(evaluation, args.out, preview=args.image or None, remapped=False)
    if not args.quiet:
        _print_summary(evaluation.summary())
        if evaluation.scenes:
            from geoseg.accuracy.scenes import scenes_table
            print(scenes_table(evaluation)[["scene", "miou", "overall_accuracy", "kappa", "valid_px", "scored_share"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _print_paths(written)
    return 0


def cmd_vectorize(args: argparse.Namespace) -> int:
    from geoseg.io.vectorformats import vector_format, write_as
    from geoseg.vector.vectorize import vectorize_labels

    fmt = vector_format(args.out, layout=args.layout)  # before any work: a format we cannot write is refused
    skip = [int(c) for c in args.skip.split(",") if c.strip()] if args.skip else []
    if not args.scheduler:  # this process polygonises on its threads: two allocator arenas between them
        from geoseg.heap import limit_arenas

        limit_arenas(2)
    with _maybe_client(args.scheduler, args.connect_timeout) as client, write_as(args.out, fmt) as gpkg:
        res = vectorize_labels(
            args.labels, gpkg, connectivity=args.connectivity, skip_classes=[255, *skip], client=client,
            min_mapping_unit_px=args.min_mapping_unit, simplify_tolerance=args.simplify, layout=args.layout,
            show_progress=not args.quiet, threads=args.threads,
        )
    print(f"{res.n_features} polygons -> {_shown(args.out)} ({fmt.name})")
    return 0


def cmd_instances(args: argparse.Namespace) -> int:
    if args.method == "maskrcnn":
        return _maskrcnn_instances(args)
    from geoseg.methods.watershed import WatershedParams
    from geoseg.run.instances import run_instances

    if not args.classes:
        raise JobSpecError("watershed needs --classes, the label ids to split (e.g. --classes 2)")
    if args.checkpoint:
        raise JobSpecError("--checkpoint is for --method maskrcnn; watershed splits a label raster")
    classes = [int(c) for c in args.classes.split(",") if c.strip()]
    params = WatershedParams(min_distance=args.min_distance, min_radius=args.min_radius, sigma=args.sigma,
                             halo=args.halo)
    with _maybe_client(args.scheduler, args.connect_timeout) as client:
        res = run_instances(args.labels, classes, args.out, params, reference=args.reference,
                            reference_field=args.reference_field, reference_value=args.reference_value,
                            polygons=not args.no_polygons, chunk_size=args.chunk_size, client=client)
    if not args.quiet:
        print(f"{res.table.n} instances of class(es) {', '.join(map(str, classes))}")
    _print_instance_scores(args, res.scores)
    _print_paths(res.outputs)
    return 0


def _maskrcnn_instances(args: argparse.Namespace) -> int:
    from geoseg.run.methods.maskrcnn import MaskRCNNInstancesConfig, run_maskrcnn_instances

    if not args.checkpoint:
        raise JobSpecError("--method maskrcnn needs --checkpoint, a Mask R-CNN trained with `geoseg train`")
    if args.classes:
        raise JobSpecError("--classes is for watershed; a Mask R-CNN finds the classes it was trained on")
    cfg = MaskRCNNInstancesConfig(checkpoint=Path(args.checkpoint), score_threshold=args.score_threshold,
                                  iou_threshold=args.iou_threshold, device=args.device)
    with _maybe_client(args.scheduler, args.connect_timeout) as client:
        res = run_maskrcnn_instances(cfg, args.labels, args.out, chunk_size=args.chunk_size or 1024, client=client,
                                     gpu_workers=_gpu_workers(client), reference=args.reference,
                                     reference_field=args.reference_field, reference_value=args.reference_value,
                                     polygons=not args.no_polygons)
    if not args.quiet:
        print(f"{res.table.n} instances (Mask R-CNN, score >= {args.score_threshold})")
    _print_instance_scores(args, res.scores)
    _print_paths(res.outputs)
    return 0


def _gpu_workers(client: Any) -> int:
    if client is None:
        return 0
    workers = client.scheduler_info().get("workers", {})
    return sum(1 for w in workers.values() if w.get("resources", {}).get("GPU", 0) > 0)


def _train_instances(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from geoseg.methods.maskrcnn import instance_checkpoint_paths
    from geoseg.methods.training.instances import load_instance_train_job, train_maskrcnn

    job = load_instance_train_job(args.job, data)
    meta = train_maskrcnn(job)
    for h in meta.training.get("history", []):
        print(f"epoch {h['epoch']:>3}: train loss {h['train_loss']:.4f} ({h['seconds']:.1f}s)")
    if meta.masks == "boxes":
        print("masks: box-shaped (the annotations are boxes only)")
    weights, sidecar = instance_checkpoint_paths(job.checkpoint)
    _print_paths({"checkpoint": weights.resolve(), "sidecar": sidecar.resolve()})
    return 0


def _print_instance_scores(args: argparse.Namespace, scores: list[Any]) -> None:
    if args.quiet:
        return
    for s in scores:
        print(f"class {s.class_id}: {s.n_pred} predicted, {s.n_ref} reference, matched {s.tp} (IoU > 0.5): "
              f"precision {s.precision:.3f} recall {s.recall:.3f} F1 {s.f1:.3f} PQ {s.pq:.3f} "
              f"(SQ {s.sq:.3f} x RQ {s.rq:.3f}) AP50 {s.ap50:.3f} AP {s.ap:.3f}")


def _add_instances_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser(
        "instances",
        help="instances: split classes of a label raster (watershed) or find objects in an image (Mask R-CNN)",
        description="Touching objects of one class (tree crowns, plants) become separate instances: a watershed "
                    "of the distance to the class's edge, flooded from one marker per peak; or a trained Mask R-CNN "
                    "run on the image's global tiles with a seam merge. Ids and shapes do not depend on the chunk "
                    "size. Example: geoseg instances out/labels.zarr --classes 2 --out out/inst "
                    "--reference crowns.gpkg --reference-value 2",
    )
    s.add_argument("labels", metavar="input",
                   help="watershed: labels.zarr (or a single-band label GeoTIFF); maskrcnn: the image")
    s.add_argument("--method", choices=["watershed", "maskrcnn"], default="watershed",
                   help="watershed (default) or maskrcnn")
    s.add_argument("--classes", default=None, help="watershed: label ids to split, e.g. 2 or 2,3")
    s.add_argument("--checkpoint", default=None, help="maskrcnn: the checkpoint (.safetensors + .json)")
    s.add_argument("--score-threshold", type=float, default=0.5, help="maskrcnn: lowest score kept (default 0.5)")
    s.add_argument("--iou-threshold", type=float, default=0.5,
                   help="maskrcnn: mask IoU above which the lower-scoring of two proposals goes (default 0.5)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="maskrcnn: where to run it")
    s.add_argument("--out", required=True, help="folder for instances.zarr, instances.csv, instances.gpkg")
    s.add_argument("--min-distance", type=_positive_int, default=5, help="px between two markers (default 5)")
    s.add_argument("--min-radius", type=float, default=1.0, help="px: a marker is at least this far inside its object")
    s.add_argument("--sigma", type=float, default=0.0, help="Gaussian smoothing of the distance surface (px)")
    s.add_argument("--halo", type=_positive_int, default=64, help="px read around each chunk; > the largest object")
    s.add_argument("--chunk-size", type=_positive_int, default=None, help="processing chunk (default: the store's)")
    s.add_argument("--reference", default=None, help="reference instances: vector layer (one per feature) or id raster")
    s.add_argument("--reference-field", default=None, help="class field of the reference features")
    s.add_argument("--reference-value", type=int, default=None, help="class of every reference instance")
    s.add_argument("--no-polygons", action="store_true", help="skip instances.gpkg")
    s.add_argument("--scheduler", default=None, help="Dask scheduler address (default: run here)")
    s.add_argument("--connect-timeout", type=float, default=None, help="seconds the scheduler may take to answer")
    s.set_defaults(func=cmd_instances)


def cmd_export(args: argparse.Namespace) -> int:
    from geoseg.io.export import build_overviews, export_cog

    written: dict[str, Path] = {}
    if args.cog:
        written["cog"] = export_cog(args.labels, args.cog, overview_resampling=args.resampling,
                                    show_progress=not args.quiet)
    if args.overviews:
        levels = [int(v) for v in args.overviews.split(",")]
        for path in build_overviews(args.labels, levels, resampling=args.resampling, show_progress=not args.quiet):
            written[f"overview {path.name}"] = path
    if not written:
        raise JobSpecError("nothing to export: give --cog FILE.tif and/or --overviews 2,4,8")
    _print_paths(written)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from geoseg.run.verify import verify_run

    report = verify_run(args.output)
    for problem in report.problems:
        print(f"geoseg: verify: {problem}", file=sys.stderr)
    if report.problems:
        return 2
    if not args.quiet:
        print(f"{_shown(report.folder)}: ok ({len(report.stores)} stores checked against their manifests)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from geoseg.accuracy.sampledesign import draw_sample, label_from_reference, write_sample

    allocation = _sample_allocation(args)
    with _maybe_client(args.scheduler, args.connect_timeout) as client:
        sample = draw_sample(args.labels, allocation, regions=args.regions, region_field=args.region_field,
                             seed=args.seed, client=client)
    if args.reference:
        labelled = label_from_reference(sample, args.reference, field=args.reference_field,
                                        value=args.reference_value, background=args.background)
        print(f"reference: {labelled} of {len(sample.points)} points labelled from {_shown(args.reference)}")
    if not args.quiet:
        cols = [c for c in ("stratum", "map_class_name", "mapped_px", "n_sample") if c in sample.strata]
        print(sample.strata[cols].to_string(index=False))
        print(f"{len(sample.points)} points in {len(sample.strata)} strata (seed {args.seed})")
    _print_paths(write_sample(sample, args.out))
    return 0


def _sample_allocation(args: argparse.Namespace):  # geoseg.accuracy.sampledesign.Allocation
    from geoseg.accuracy.sampledesign import DEFAULT_EXPECTED_ACCURACY, Allocation

    expected: float | dict[int, float] = DEFAULT_EXPECTED_ACCURACY
    if args.expected_accuracy:
        pairs = _parse_pairs(args.expected_accuracy, "--expected-accuracy", float, allow_single=True)
        expected = pairs if isinstance(pairs, dict) else float(pairs)
    per = _parse_pairs(args.per_stratum, "--per-stratum", int) if args.per_stratum else None
    return Allocation(n=args.n, target_se=args.target_se, expected_accuracy=expected, method=args.allocation,
                      min_per_stratum=args.min_per_stratum, per_stratum=per)


def _parse_pairs(text: str, option: str, kind, allow_single: bool = False):
    """``"1=0.9,2=0.7"`` -> ``{1: 0.9, 2: 0.7}`` (keys stay text where they are not whole numbers:
    strata ``region|class``); ``allow_single``: a lone value is returned as is."""
    try:
        if allow_single and "=" not in text:
            return kind(text)
        out = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(item)
            key = key.strip()
            out[int(key) if key.isdigit() else key] = kind(value)
        return out
    except ValueError:
        raise JobSpecError(f"{option}: expected id=value pairs separated by commas, got {text!r}") from None


def cmd_estimate(args: argparse.Namespace) -> int:
    from geoseg.accuracy.areareport import estimate_sample, overall_line, summary_table, write_area_outputs

    mapping = _estimate_mapping(args.mapping)
    est = estimate_sample(args.sample, mapping=mapping, class_names=_parse_class_names(args.class_names))
    written = write_area_outputs(est, args.out)
    if not args.quiet:
        print(summary_table(est).to_string(index=False))
        print(overall_line(est))
        for note in est.notes:
            print(note)
    _print_paths(written)
    return 0


def _estimate_mapping(text: str | None) -> dict[int, int] | pd.DataFrame | None:
    """``--mapping``: a ``class_mapping.csv`` of ``geoseg run``/``evaluate`` (as a table: which of its
    columns the sample's map classes are in is the sample's to say) or ``"0=3,1=1"``."""
    if not text:
        return None
    if text.endswith(".csv"):
        from geoseg.accuracy.samplemapping import read_class_mapping

        return read_class_mapping(text)
    pairs = _parse_pairs(text, "--mapping", int)
    return {int(k): int(v) for k, v in pairs.items()}


@contextmanager
def _maybe_client(scheduler: str | None, connect_timeout: float | None = None) -> Iterator[Client | None]:
    """A client of the scheduler at ``scheduler``, or None: Dask's threads in this process."""
    if not scheduler:
        yield None
        return
    from geoseg.run.cluster import connect
    from geoseg.run.fence import fence_workers

    with connect(scheduler, timeout=connect_timeout or 10) as (client, _info):
        fence_workers(client)  # labels, references and regions are read on the workers
        yield client


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _parse_ints(text: str | None, option: str) -> list[int] | None:
    """``"0,250"`` -> ``[0, 250]``."""
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise JobSpecError(f"{option}: expected whole numbers separated by commas, got {text!r}") from None


def _parse_class_names(text: str | None) -> dict[int, str] | None:
    """``"1=cropland,2=forest"`` -> ``{1: "cropland", 2: "forest"}``."""
    if not text:
        return None
    names: dict[int, str] = {}
    for item in text.split(","):
        key, sep, name = item.partition("=")
        if not sep or not key.strip().isdigit():
            raise JobSpecError(f"--class-names: expected id=name pairs separated by commas, got {item!r}")
        names[int(key)] = name.strip()
    return names


def _print_summary(df) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Per-class IoU (all regions)")
    coverage = list(df.attrs.get("coverage", []) or [])
    df = df.reset_index()
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fiu" else "left")
    for _, row in df.iterrows():
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()])
    Console().print(table)
    for line in coverage:  # what the figures cover, and what happened
        print(line)


def _shown(path: str | Path) -> str:
    """A path as printed: absolute and without ``..`` (``jobs/../out`` -> ``/work/out``); URLs as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


def _print_paths(paths: dict[str, Path]) -> None:
    for name, path in paths.items():
        print(f"{name:>16}: {_shown(path)}")


# --------------------------------------------------------------------------- parser

class _ExampleFormatter(argparse.HelpFormatter):
    """Descriptions wrapped as usual; the ``example:`` epilog kept line by line (commands must not wrap)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


#: An example per subcommand, shown at the end of its ``--help``.
EXAMPLES: dict[str, list[str]] = {
    "demo": ["geoseg demo --out geoseg-demo --size 1024"],
    "synth": ["geoseg synth landcover --out data --width 1024 --products tiles,bands"],
    "run": ["geoseg run workflows/landcover-kmeans.yaml", "geoseg -q run job.yaml --json > summary.json"],
    "train": ["geoseg train workflows/landcover-deeplab-train.yaml"],
    "monitor": ["geoseg monitor monitor.yaml --scheduler tcp://scheduler:8786"],
    "change": ["geoseg change out/2026-06-01/labels.zarr out/2026-07-15/labels.zarr --out change --regions fields.gpkg"],
    "evaluate": ["geoseg evaluate out/labels.zarr data/reference.tif --regions data/regions.gpkg --out eval",
                 "geoseg evaluate a/labels.zarr b/labels.zarr --reference a.tif --reference b.tif --out pooled"],
    "vectorize": ["geoseg vectorize out/labels.zarr out/polygons.gpkg --min-mapping-unit 4 --skip 0"],
    "export": ["geoseg export out/labels.zarr --cog out/labels.tif --overviews 2,4,8"],
    "verify": ["geoseg verify out"],
    "instances": ["geoseg instances out/labels.zarr --classes 2 --out out/inst --reference crowns.gpkg --reference-value 2",
                  "geoseg instances image.tif --method maskrcnn --checkpoint crowns-maskrcnn --out out/inst"],
    "sample": ["geoseg sample out/labels.zarr --out sample/points.gpkg --target-se 0.01 --min-per-stratum 75"],
    "estimate": ["geoseg estimate sample/points.gpkg --out areas --mapping out/class_mapping.csv"],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoseg", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"geoseg {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, no tables: only errors and paths")
    # the same options after the subcommand (``geoseg run job.yaml -v``), kept apart and summed in main()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    common.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true",
                        help="no progress bars, no tables: only errors and paths")
    sub = p.add_subparsers(dest="command", required=True)

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        # every subcommand's --help: what it does (its one-line help unless it says more) and an example
        kw.setdefault("description", kw.get("help", "").capitalize() + ".")
        if name in EXAMPLES:
            kw.setdefault("epilog", "example:\n  " + "\n  ".join(EXAMPLES[name]))
            kw.setdefault("formatter_class", _ExampleFormatter)
        return sub.add_parser(name, parents=[common], **kw)

    for add_command in _COMMANDS:
        add_command(add_parser)
    return p


def _demo_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("demo", help="generate a sample scene and run the land-cover k-means job on a local cluster")
    s.add_argument("--out", default="geoseg-demo", help="output folder (default: ./geoseg-demo)")
    s.add_argument("--size", type=int, default=2048, help="scene width and height in pixels (default 2048)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    s.set_defaults(func=cmd_demo)


def _synth_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("synth", help="generate a seeded sample scene with its reference and regions")
    s.add_argument("kind", choices=["landcover", "cropweed"])
    s.add_argument("--out", required=True, help="folder for the image, reference and regions files")
    s.add_argument("--width", type=int, default=2048)
    s.add_argument("--height", type=int, default=None, help="default: same as width")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--products", default="", help="also write products made from the image, comma-separated: "
                   "tiles (2x2, 64 px overlaps, alpha margins), bands (10/20/60 m band files, SCL, STAC item.json), "
                   "utm (west half + east half in the next UTM zone)")
    s.set_defaults(func=cmd_synth)


def _run_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("run", help="run a job file (YAML)")
    s.add_argument("job", help="path to the job file")
    s.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (default: start a local one)")
    s.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds to wait for --scheduler to answer (default 10, or the job's cluster.connect_timeout)")
    s.add_argument("--json", action="store_true",
                   help="print one JSON summary (outputs, stage times, label counts, per-class scores) instead of tables")
    s.set_defaults(func=cmd_run)


def _train_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("train", help="train a DeepLabV3+ (or, with kind: maskrcnn, a Mask R-CNN) checkpoint from a "
                                 "training job file (YAML)")
    s.add_argument("job", help="path to the training job file (see workflows/*-train.yaml)")
    s.set_defaults(func=cmd_train)


def _monitor_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser(
        "monitor",
        help="process every new scene matching the job's inputs, one dated folder per period, with change reports",
    )
    s.add_argument("job", help="path to the job file")
    s.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    s.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds to wait for --scheduler to answer (default 10, or the job's cluster.connect_timeout)")
    s.set_defaults(func=cmd_monitor)


def _change_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("change", help="change report between two label stores on one grid")
    s.add_argument("before", help="labels.zarr of the earlier period")
    s.add_argument("after", help="labels.zarr of the later period")
    s.add_argument("--out", required=True, help="folder for change.zarr, transitions.csv, change-summary.json")
    s.add_argument("--regions", default=None, help="regions layer for per-region transitions")
    s.add_argument("--region-field", default=None)
    s.set_defaults(func=cmd_change)


def _evaluate_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("evaluate", help="per-class and per-region accuracy of a label raster against a reference")
    s.add_argument("labels", nargs="+", metavar="LABELS [REFERENCE]",
                   help="labels.zarr (or a label GeoTIFF) then the reference raster or vector layer; "
                        "or several label rasters with --reference (pooled and per-scene figures)")
    s.add_argument("--reference", dest="reference_list", action="append", default=None,
                   help="reference of each label raster, in order (repeat it), or one for all")
    s.add_argument("--out", required=True, help="folder for metrics.csv, confusion.csv, regions_metrics.gpkg, report.html")
    s.add_argument("--reference-field", default=None, help="class field of a vector reference (integers or class names)")
    s.add_argument("--reference-value", type=int, default=None, help="every polygon of the vector reference is this class")
    s.add_argument("--background", type=int, default=None, help="class of every pixel no reference polygon covers")
    s.add_argument("--reference-nodata", default=None,
                   help='values of the reference raster that are no data, e.g. "0" or "0,250", over what the file says')
    s.add_argument("--merge-duplicates", action="store_true", help="count regions sharing an id as one region")
    s.add_argument("--regions", default=None, help="regions layer (default: the whole scene only)")
    s.add_argument("--region-field", default=None, help="region id field (default: the feature id)")
    s.add_argument("--grid-cell-m", type=float, default=None, help="square regions of this size instead of a layer")
    s.add_argument("--mapping", default="identity", choices=["identity", "hungarian", "many-to-one"],
                   help="label-to-class mapping: identity (trained models), hungarian or many-to-one (k-means)")
    s.add_argument("--class-names", default=None, help='reference class names, e.g. "1=cropland,2=forest"')
    s.add_argument("--image", default=None, help="the input image, for an RGB preview in report.html")
    s.add_argument("--scheduler", default=None, help="run on this Dask scheduler (default: threads in this process)")
    s.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds to wait for --scheduler to answer (default 10, or the job's cluster.connect_timeout)")
    s.set_defaults(func=cmd_evaluate)


def _vectorize_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("vectorize", help="label raster to GeoPackage polygons (seam-exact, chunk by chunk)")
    s.add_argument("labels", help="labels.zarr (or a single-band label GeoTIFF)")
    s.add_argument("out", help="file to write, format from its extension: .gpkg (default, with a QGIS style), .fgb, "
                   ".parquet (GeoParquet), .shp (Shapefile: 2 GB, 10-character field names); replaced atomically")
    s.add_argument("--skip", default=None, help="class ids not to vectorise, e.g. 0,3 (nodata is always skipped)")
    s.add_argument("--min-mapping-unit", type=int, default=0, help="sieve regions smaller than this many pixels first")
    s.add_argument("--simplify", type=float, default=0.0, help="coverage-preserving simplification tolerance (CRS units)")
    s.add_argument("--layout", default="single", choices=["single", "per_class"], help="one layer, or one per class")
    s.add_argument("--connectivity", type=int, default=4, help="pixel connectivity (only 4 is supported)")
    s.add_argument("--threads", type=_positive_int, default=None,
                   help="threads polygonising in this process without --scheduler (default: one per core)")
    s.add_argument("--scheduler", default=None, help="run on this Dask scheduler (default: threads in this process)")
    s.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds to wait for --scheduler to answer (default 10, or the job's cluster.connect_timeout)")
    s.set_defaults(func=cmd_vectorize)


def _export_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("export", help="label raster as a Cloud-Optimised GeoTIFF and/or Zarr overview levels")
    s.add_argument("labels", help="labels.zarr")
    s.add_argument("--cog", default=None, help="write a COG with overviews and the colour table here")
    s.add_argument("--overviews", default=None, help="add Zarr pyramid levels, e.g. 2,4,8,16")
    s.add_argument("--resampling", default="mode", choices=["mode", "nearest"])
    s.set_defaults(func=cmd_export)


def _verify_parser(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_parser("verify", help="check a run folder: run.json complete, its outputs there, every chunk as written")
    s.add_argument("output", help="the run's output folder")
    s.set_defaults(func=cmd_verify)


def _add_area_parsers(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """``geoseg sample`` and ``geoseg estimate`` (stratified sample, area estimates)."""
    s = add_parser("sample", help="stratified random sample of points on a label raster, for area estimation")
    s.add_argument("labels", help="labels.zarr, a label GeoTIFF or a change.zarr; strata = its values as stored")
    s.add_argument("--out", required=True, help="SAMPLE.gpkg to write (and SAMPLE.csv, -strata.csv, -classes.csv)")
    size = s.add_mutually_exclusive_group(required=True)
    size.add_argument("--n", type=_positive_int, default=None, help="total number of points")
    size.add_argument("--target-se", type=float, default=None,
                      help="standard error wanted of the overall accuracy, e.g. 0.01 (Olofsson et al. 2014 eq. 13)")
    size.add_argument("--per-stratum", default=None, help='points per stratum, e.g. "1=100,2=50" (all strata)')
    s.add_argument("--expected-accuracy", default=None,
                   help='user\'s accuracy expected per map class for --target-se: "0.8" or "1=0.9,2=0.7" (default 0.8)')
    s.add_argument("--allocation", default="proportional", choices=["proportional", "equal"])
    s.add_argument("--min-per-stratum", type=int, default=50, help="at least this many points per stratum (default 50)")
    s.add_argument("--regions", default=None, help="cross the strata with these (disjoint) regions")
    s.add_argument("--region-field", default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--reference", default=None, help="fill the reference column from this raster or vector map")
    s.add_argument("--reference-field", default=None, help="class field of a vector reference")
    s.add_argument("--reference-value", type=int, default=None, help="every polygon of the vector reference is this class")
    s.add_argument("--background", type=int, default=None, help="class where no reference polygon is")
    s.add_argument("--scheduler", default=None, help="run on this Dask scheduler (default: threads in this process)")
    s.add_argument("--connect-timeout", type=float, default=None, help="seconds to wait for --scheduler to answer")
    s.set_defaults(func=cmd_sample)

    s = add_parser("estimate", help="areas with 95 %% confidence intervals and accuracies from an interpreted sample")
    s.add_argument("sample", help="SAMPLE.gpkg (or SAMPLE.csv) written by geoseg sample, its reference column filled")
    s.add_argument("--out", required=True, help="folder for area_estimates.csv, area_report.html and the matrices")
    s.add_argument("--mapping", default=None,
                   help='map class -> reference class: a run\'s or geoseg evaluate\'s class_mapping.csv (read by label_id '
                        'for a sample of method_labels, by raster_value for one of the published labels.zarr), '
                        'or "0=3,1=1" (default: same ids)')
    s.add_argument("--class-names", default=None, help='reference class names, e.g. "1=cropland,2=forest"')
    s.set_defaults(func=cmd_estimate)


#: One function per subcommand, adding its parser (in the order ``geoseg --help`` lists them).
_COMMANDS = (
    _demo_parser,
    _synth_parser,
    _run_parser,
    _train_parser,
    _monitor_parser,
    _change_parser,
    _evaluate_parser,
    _add_area_parsers,
    _vectorize_parser,
    _export_parser,
    _verify_parser,
    _add_instances_parser,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geoseg")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    from geoseg.errors import from_os_error
    from geoseg.io.opener import Trust, fenced
    from geoseg.run.interrupt import print_interrupted, quiet_shutdown, stop_on_signals

    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += args.sub_verbose
    args.quiet = args.quiet or args.sub_quiet
    _setup_logging(args.verbose, args.quiet)
    try:
        with stop_on_signals(), fenced(Trust()):  # a job's own trust (geoseg run) replaces it inside
            return int(args.func(args) or 0)
    except GeosegError as exc:
        print(f"geoseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGINT or SIGTERM (geoseg.run.interrupt.Interrupted)
        quiet_shutdown()
        return print_interrupted(exc)
    except OSError as exc:
        user_error = from_os_error(exc)  # permission denied, not a directory, disk full: the user's to fix
        if user_error is None:
            return _unexpected(exc, args.verbose)
        print(f"geoseg: error: {user_error}", file=sys.stderr)
        return user_error.exit_code
    except Exception as exc:  # a bug or an unforeseen failure: one line, details on -v
        return _unexpected(exc, args.verbose)


def _unexpected(exc: Exception, verbose: int) -> int:
    if verbose:
        raise exc
    print(f"geoseg: unexpected error ({type(exc).__name__}): {exc}\n"
          "geoseg: rerun with -v for the traceback, and please report it", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
