"""Progress bars for stages that loop over chunks on the client (vectorise, export).

The same rule as the run's Dask stages (``geoseg.run.labelling._gather``): a bar only when asked
for and only when stderr is a terminal, so logs, pipes and CI output stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def wants_bar(enabled: bool) -> bool:
    """True when a bar should be drawn: ``enabled`` and stderr is a terminal."""
    return bool(enabled) and sys.stderr.isatty()


def chunk_progress(items: Iterable[T], total: int, label: str, enabled: bool) -> Iterator[T]:
    """Yield ``items`` unchanged, advancing a bar of ``total`` steps labelled ``label`` on stderr."""
    if not wants_bar(enabled):
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)
