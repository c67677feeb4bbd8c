"""``geoseg verify OUTPUT``: is a run folder whole? One line per problem, nothing repaired.

Checks what a finished run promises: ``run.json`` parses and says ``complete``; every file it
lists under ``outputs`` exists; ``labels.zarr`` (and its ``method_labels``), ``confidence.zarr`` and each
overview level under ``labels.zarr/overviews/`` is a finished store whose chunks match its manifest
(:mod:`geoseg.io.manifest`). Reading every chunk object once costs about one read of the
compressed stores, no decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import GeosegError
from geoseg.run.runrecord import RUN_FILE


@dataclass(frozen=True)
class VerifyReport:
    """What was checked and what is wrong (empty ``problems``: the folder is whole)."""

    folder: Path
    stores: tuple[Path, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _stores(out: Path, outputs: dict[str, str]) -> list[Path]:
    """The label stores of a run folder: the labels, the confidence, overview levels, other .zarr outputs."""
    from geoseg.io.export import OVERVIEWS_DIR
    from geoseg.io.labelstore import METHOD_LABELS_DIR

    found = [out / "labels.zarr", out / "labels.zarr" / METHOD_LABELS_DIR, out / "confidence.zarr"]
    found += [_located(out, p) for p in outputs.values() if str(p).endswith(".zarr")]
    levels = out / "labels.zarr" / OVERVIEWS_DIR
    if levels.is_dir():
        found += sorted((p for p in levels.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name))
    unique: list[Path] = []
    for p in found:
        if p.exists() and p.resolve() not in {q.resolve() for q in unique}:
            unique.append(p)
    return unique


def _located(out: Path, recorded: str) -> Path:
    """An output as recorded in run.json, or under ``out`` when the folder was moved or copied."""
    path = Path(recorded)
    return path if path.exists() or not (out / path.name).exists() else out / path.name


def _check_store(path: Path) -> list[str]:
    from geoseg.io.labelstore import read_label_info
    from geoseg.io.manifest import verify_store

    if (path / "labels").is_dir():  # a label store (not e.g. confidence.zarr): also its metadata
        try:
            read_label_info(path)
        except GeosegError as exc:
            return [str(exc)]
    return verify_store(path)  # the manifest is written at finalise: no manifest, not finished


def verify_run(out: str | Path) -> VerifyReport:
    """Check a run folder (see the module docstring)."""
    out = Path(out)
    problems: list[str] = []
    if not out.is_dir():
        return VerifyReport(out, (), (f"{out} is not a folder",))
    record_path = out / RUN_FILE
    outputs: dict[str, str] = {}
    record: dict = {}
    try:
        record = json.loads(record_path.read_text())
        outcome = record.get("outcome")
        outputs = {str(k): str(v) for k, v in (record.get("outputs") or {}).items()}
        if outcome != "complete":
            why = f": {record['error']}" if record.get("error") else ""
            problems.append(f"{record_path}: outcome is {outcome!r}, not 'complete'{why}; rerun the job")
    except FileNotFoundError:
        problems.append(f"{record_path} is missing; {out} is not a finished geoseg run")
    except (OSError, ValueError, AttributeError) as exc:
        problems.append(f"{record_path} cannot be read: {exc}")
    for name, path in outputs.items():
        if not _located(out, path).exists():
            problems.append(f"output {name!r} listed in {RUN_FILE} is missing: {path}")
    if record.get("mode") == "chips":  # a chip run: each chip's folder is a run of its own
        stores: list[Path] = []
        for chip in record.get("chips") or []:
            sub = verify_run(_located(out, str(chip.get("output", ""))))
            stores += list(sub.stores)
            problems += list(sub.problems)
        return VerifyReport(out, tuple(stores), tuple(problems))
    stores = _stores(out, outputs)
    if not (out / "labels.zarr").exists() and "labels" not in outputs:
        problems.append(f"{out / 'labels.zarr'} is missing")
    for store in stores:
        problems += _check_store(store)
    return VerifyReport(out, tuple(stores), tuple(problems))
