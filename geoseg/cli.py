"""The ``geoseg`` command: a thin layer over the library.

Every subcommand parses its arguments, calls one library function and prints a short
summary. Errors a user can fix (``GeosegError``) are printed as one clear line with a
non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import GeosegError

log = logging.getLogger("geoseg")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # distributed configures its own loggers when first imported (later, lazily): tell it via config.
    import dask

    dask.config.set({"logging.distributed": "info" if verbose >= 2 else "warning"})
    logging.getLogger("distributed").setLevel(max(level, logging.WARNING))


# --------------------------------------------------------------------------- subcommands


def cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import make_scene

    files = make_scene(args.kind, args.out, width=args.width, height=args.height or args.width, seed=args.seed)
    print(f"image:     {files.image}\nreference: {files.reference}\nregions:   {files.regions}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .jobspec import load_job
    from .workflow import run_job

    job = load_job(args.job)
    result = run_job(job, scheduler=args.scheduler, show_progress=not args.quiet)
    print_result(result)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import json

    from .jobspec import load_job
    from .monitor import run_monitor

    summary = run_monitor(load_job(args.job), scheduler=args.scheduler)
    print(json.dumps(summary.to_json(), indent=1))
    return summary.exit_code


def cmd_change(args: argparse.Namespace) -> int:
    from .change import compare_periods

    report = compare_periods(args.before, args.after, args.out, regions=args.regions, region_field=args.region_field)
    print(report.transitions("ALL", changed_only=True).to_string(index=False))
    print(f"changed area: {report.changed_area_m2():.0f} m² of {report.total_area_m2():.0f} m²; written to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(Path(args.out), size=args.size, seed=args.seed, n_workers=args.workers)
    print_result(result)
    return 0


def print_result(result) -> None:  # noqa: ANN001
    """Per-class IoU table (when evaluated), stage times and the paths written."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.metrics_summary is not None:
        table = Table(title="Per-class IoU (all regions)")
        df = result.metrics_summary.reset_index()
        for col in df.columns:
            table.add_column(str(col), justify="right" if df[col].dtype.kind in "fiu" else "left")
        for _, row in df.iterrows():
            table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()])
        console.print(table)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    console.print(f"stages: {times}")
    for name, path in result.outputs.items():
        console.print(f"{name:>16}: {path}")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoseg", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="generate a sample scene and run the land-cover k-means job on a local cluster")
    s.add_argument("--out", default="geoseg-demo", help="output folder (default: ./geoseg-demo)")
    s.add_argument("--size", type=int, default=2048, help="scene width and height in pixels (default 2048)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("synth", help="generate a seeded sample scene with its reference and regions")
    s.add_argument("kind", choices=["landcover", "cropweed"])
    s.add_argument("--out", required=True, help="folder for the image, reference and regions files")
    s.add_argument("--width", type=int, default=2048)
    s.add_argument("--height", type=int, default=None, help="default: same as width")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("run", help="run a job file (YAML)")
    s.add_argument("job", help="path to the job file")
    s.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (default: start a local one)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("monitor", help="process every new scene matching the job's inputs, one dated folder per period, with change reports")
    s.add_argument("job", help="path to the job file")
    s.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    s.set_defaults(func=cmd_monitor)

    s = sub.add_parser("change", help="change report between two label stores on one grid")
    s.add_argument("before", help="labels.zarr of the earlier period")
    s.add_argument("after", help="labels.zarr of the later period")
    s.add_argument("--out", required=True, help="folder for change.zarr, transitions.csv, change-summary.json")
    s.add_argument("--regions", default=None, help="regions layer for per-region transitions")
    s.add_argument("--region-field", default=None)
    s.set_defaults(func=cmd_change)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


#: Other modules add subcommands here (train, vectorize, export, evaluate ...).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except GeosegError as exc:
        print(f"geoseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("geoseg: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
