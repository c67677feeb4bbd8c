"""What a run produced and where it may write: the result a run returns, the output-folder check, the
reference's class names. Shared by the workflow (:mod:`geoseg.run.workflow`) and the chip runs
(:mod:`geoseg.run.chiprun`), which run the workflow once per chip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import OutputError, OutputInUseError
from geoseg.run import runrecord
from geoseg.run.cluster import ClusterInfo
from geoseg.run.jobspec import JobSpec


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


def reference_class_names(job: JobSpec) -> dict[int, str] | None:
    """The reference's class names, when the job gives them (``classes:`` in the job file)."""
    return {c.id: c.name for c in job.classes} if job.classes else None
