"""Scheduled monitoring: process every new scene since the last run, one dated folder per period.

``geoseg monitor JOB.yaml`` is what a cron job or a Kubernetes CronJob calls. It expands the
job's input pattern, skips scenes already processed (a small state file in the output folder
records path, size and modification time), runs the job on each new scene into
``<output>/<YYYY-MM-DD>/``, and writes a change report between each period and the one before
it into ``<output>/<period>/change/``. A k-means model fitted on the first period is reused for
later ones, so cluster ids mean the same thing over time; with ``reuse_kmeans_model: false`` and no
reference each period's clusters are numbered by its own model, and no change report is made
(``monitor-summary.json`` says why under ``changes``).

Exit status: 0 when every new scene was processed (or there was none), 3 when some failed
(the others are kept and the failed ones are retried next time), 2 for a bad job file.
``monitor-summary.json`` says what was done, for the scheduler and for people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geoseg.accuracy.change import compare_periods
from geoseg.errors import GeosegError, InputError
from geoseg.io.atomic import write_json_atomic
from geoseg.io.entries import InputEntry
from geoseg.io.scene import expand_inputs
from geoseg.io.stacout import set_item_datetime, write_periods_collection
from geoseg.run.jobspec import JobSpec, KMeansConfig, match_date

log = logging.getLogger(__name__)

STATE_FILE = "monitor-state.json"
SUMMARY_FILE = "monitor-summary.json"


@dataclass
class MonitorSummary:
    processed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "exit_code": self.exit_code,
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": self.failed,
            "changes": self.changes,
        }


def period_of(path: str, pattern: str) -> str:
    """The scene's date (``YYYY-MM-DD``) from its file name, else from its modification time.

    ``pattern``: three groups (year, month, day), named groups, or one group of 8 digits (YYYYMMDD).

    >>> period_of("/data/S2_20240612_T33TWM.tif", r"(\\d{4})-?(\\d{2})-?(\\d{2})")
    '2024-06-12'
    >>> period_of("/data/scene_20240612.tif", r"scene_(\\d{8})")
    '2024-06-12'
    """
    found = match_date(pattern, Path(path).name)
    if found is not None:
        return found.isoformat()
    return datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).date().isoformat()


def _identity(path: str) -> dict[str, Any]:
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_state(out: Path) -> dict[str, Any]:
    import json

    f = out / STATE_FILE
    if not f.exists():
        return {"scenes": {}, "periods": [], "model": None}
    try:
        return json.loads(f.read_text())
    except ValueError as exc:
        raise InputError(f"{f} is damaged ({exc}); fix or delete it to start monitoring afresh") from exc


def run_monitor(job: JobSpec, scheduler: str | None = None, client=None) -> MonitorSummary:
    """Process new scenes of ``job`` period by period; see the module docstring.

    Without ``client`` one cluster (``scheduler``, or a local one as ``job.cluster`` says) is
    started for the whole run, on the first scene that needs it, and serves every period."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def shared_client():  # a distributed.Client
            nonlocal client
            if client is None:
                from geoseg.run.cluster import connect

                c = job.cluster
                client, _ = stack.enter_context(connect(scheduler, c.n_workers, c.threads_per_worker,
                                                        c.memory_limit, c.dashboard, timeout=c.connect_timeout))
            return client

        return _run_periods(job, shared_client)


def _run_periods(job: JobSpec, shared_client) -> MonitorSummary:  # shared_client: () -> Client
    from geoseg.run.workflow import run_job

    root = Path(job.output)
    root.mkdir(parents=True, exist_ok=True)
    state = _load_state(root)
    summary = MonitorSummary()
    for period, path, entry in discover_scenes(job):
        ident = _identity(path)
        known = state["scenes"].get(path)
        if known and known.get("status") == "complete" and {k: known[k] for k in ident} == ident:
            summary.skipped.append(path)
            continue
        period_job = _period_job(job, entry, root / period, state)
        try:
            result = run_job(period_job, show_progress=False, client=shared_client())
        except GeosegError as exc:
            log.error("period %s (%s) failed: %s", period, path, exc)
            state["scenes"][path] = {**ident, "period": period, "status": "failed", "error": str(exc)}
            summary.failed.append({"path": path, "period": period, "error": str(exc)})
            write_json_atomic(root / STATE_FILE, state)
            continue
        if "stac" in result.outputs:  # the period's item: dated by its period, named apart from the others
            set_item_datetime(result.outputs["stac"], datetime.fromisoformat(period).replace(tzinfo=UTC),
                              item_id=f"{job.name}-{period}")
        if isinstance(job.method, KMeansConfig) and job.monitor.reuse_kmeans_model and not state.get("model"):
            state["model"] = str(result.outputs["model"])
        previous = _previous_period(state["periods"], period)
        if previous is not None:
            summary.changes.append(_change_report(job, root, previous, period, shared_client))
        state["periods"] = sorted(set(state["periods"]) | {period})
        state["scenes"][path] = {**ident, "period": period, "status": "complete"}
        summary.processed.append({"path": path, "period": period, "output": str(root / period)})
        write_json_atomic(root / STATE_FILE, state)
        log.info("period %s done: %s", period, root / period)
    if state["periods"]:
        write_periods_collection(root, state["periods"], collection_id=job.name,
                                 description=f"geoseg monitoring job {job.name}: one item per period")
    write_json_atomic(root / SUMMARY_FILE, summary.to_json())
    return summary


def _change_report(job: JobSpec, root: Path, previous: str, period: str, shared_client) -> dict[str, Any]:
    """The change report from ``previous`` to ``period``, or why there is none: two periods whose values do
    not mean the same (clusters of two k-means models, ``reuse_kmeans_model: false`` without a reference)
    get no transitions, and the period's own outputs stay done."""
    try:
        change = compare_periods(
            root / previous / "labels.zarr", root / period / "labels.zarr", root / period / "change",
            regions=job.regions.path if job.regions and job.regions.path else None,
            region_field=job.regions.field if job.regions else None,
            client=shared_client(),
        )
    except InputError as exc:
        log.warning("no change report from %s to %s: %s", previous, period, exc)
        return {"from": previous, "to": period, "refused": str(exc)}
    return {"from": previous, "to": period, "changed_area_m2": change.changed_area_m2(),
            "folder": str(root / period / "change")}


def _previous_period(periods: list[str], period: str) -> str | None:
    earlier = [p for p in periods if p < period]
    return max(earlier) if earlier else None


def discover_scenes(job: JobSpec) -> list[tuple[str, str, Any]]:
    """Every scene of the job as (period, path, ``inputs:`` entry for its period), sorted by period.

    A file is one scene dated by ``monitor.date_pattern`` in its name. A STAC entry (``stac:``, a
    path, glob or URL of Item / ItemCollection documents) is one scene per document, dated by its
    item ``datetime`` (or ``start_datetime``); the file-name pattern is the fallback for a document
    that gives no date (pystac refuses such items today, so this is a guard).
    """
    import glob

    from geoseg.io.scene import as_input_entry
    from geoseg.io.stac import item_period

    pattern = job.monitor.date_pattern
    scenes: list[tuple[str, str, Any]] = []
    for raw in job.inputs:
        entry = as_input_entry(raw)
        if not entry.stac:
            scenes += [(period_of(p, pattern), p, p) for p in expand_inputs([raw], job.allow_gdal_virtual)]
            continue
        docs = sorted(glob.glob(entry.stac)) if "://" not in entry.stac and glob.has_magic(entry.stac) else [entry.stac]
        if not docs:
            raise InputError(f"STAC input {entry.stac!r} matches no file; check the path")
        for doc in docs:
            period = item_period(doc) or period_of(doc, pattern)
            scenes.append((period, doc, InputEntry.model_validate({**_plain_entry(raw), "stac": doc})))
    return sorted(scenes, key=lambda s: (s[0], s[1]))


def _plain_entry(raw: Any) -> dict[str, Any]:
    return raw.model_dump(exclude_none=True, exclude_defaults=True) if hasattr(raw, "model_dump") else dict(raw)


def _period_job(job: JobSpec, path: Any, out: Path, state: dict[str, Any]) -> JobSpec:
    update: dict[str, Any] = {"inputs": [path], "output": out}
    if isinstance(job.method, KMeansConfig) and job.monitor.reuse_kmeans_model and state.get("model"):
        update["method"] = job.method.model_copy(update={"model": Path(state["model"])})
    return job.model_copy(update=update)
