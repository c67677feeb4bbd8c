"""run.json: what ran, on what, with which versions, how long each stage took, and how it ended.

The record is rewritten atomically at the start (outcome ``running``), when the cluster is up (its
dashboard link), as each stage starts and ends (``stage``, ``stage_seconds``) and at the end, so a
scheduler or a person can follow a run and tell a finished run from one that died.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Re-exported: monitor and change write their JSON through this name (it is io.atomic's writer).
from geoseg.io.atomic import write_json_atomic

__all__ = ["RUN_FILE", "RunRecord", "package_versions", "write_json_atomic"]

RUN_FILE = "run.json"

_PACKAGES = (
    "geoseg", "numpy", "dask", "distributed", "rasterio", "xarray", "rioxarray", "zarr",
    "geopandas", "pyogrio", "shapely", "numba", "torch", "segmentation-models-pytorch",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results (missing ones are reported as such)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    path: Path
    data: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, out: Path, job, scene) -> RunRecord:
        data = {
            "geoseg_run": 1,
            "outcome": "running",
            "started": _now(),
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "job": job.model_dump(mode="json"),
            "versions": package_versions(),
            "inputs": [{"path": p, "bytes": s} for p, s in zip(scene.paths, scene.sizes_bytes)],
            "scene": {
                "width": scene.grid.width, "height": scene.grid.height, "bands": list(scene.band_names),
                "crs": scene.grid.crs.to_string(), "transform": list(scene.grid.transform)[:6],
                # each band's role (and where it came from), the scale/offset applied on read, its fill value
                "band_roles": [b.to_json() for b in getattr(scene, "bands", ())],
            },
        }
        rec = cls(out / RUN_FILE, data)
        write_json_atomic(rec.path, data)
        return rec

    def set_cluster(self, info) -> None:
        self.data["cluster"] = info.to_json()  # with the dashboard link, while the run is on
        self._save_running()

    def begin_stage(self, name: str) -> None:
        """Record the stage now running (``stage``, ``stage_started``), so a watcher sees progress."""
        self.data.update(stage=name, stage_started=_now())
        self._save_running()

    def end_stage(self, name: str) -> None:
        """Record a finished stage's time (``stage_seconds`` so far)."""
        self.data.update(stage_seconds=dict(self.stage_seconds), stage=None, last_stage=name)
        self._save_running()

    def _save_running(self) -> None:
        try:
            write_json_atomic(self.path, self.data)
        except OSError as exc:  # progress notes must not end a run; the final record is written by finish()
            logging.getLogger(__name__).warning("could not update %s: %s", self.path, exc)

    def finish(self, outcome: str, **extra: Any) -> None:
        self.data.update(
            outcome=outcome,
            finished=_now(),
            wall_seconds=round(time.perf_counter() - self._t0, 3),
            stage_seconds=self.stage_seconds,
        )
        for k, v in extra.items():
            self.data[k] = {kk: str(vv) for kk, vv in v.items()} if k == "outputs" else v
        try:
            write_json_atomic(self.path, self.data)
        except OSError:
            if outcome == "complete":
                raise
            # A failed run on a full disk: the error that ended it matters more; rewrite in place
            # (the old record's blocks are reused), else leave the record as it was.
            try:
                self.path.write_text(json.dumps(self.data, indent=2, default=str))
            except OSError as exc:
                logging.getLogger(__name__).warning("could not record outcome %r in %s: %s", outcome, self.path, exc)
