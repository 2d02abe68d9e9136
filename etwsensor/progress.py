"""Progress on stderr for commands that can run longer than a second: a live count with its rate, only
when stderr is a terminal (pipes and logs stay clean), gone when the command ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_EVERY = 2048  # items between updates: a bar must cost nothing next to the work it shows


def counting(
    items: Iterable[T], label: str, unit: str = "events", every: int = _EVERY, total: int | None = None
) -> Iterator[T]:
    """``items`` unchanged; on a terminal, ``label: N unit (R/s)`` (``N/total`` when the total is
    known) on stderr while they are consumed, updated every ``every`` items."""
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        of = f"/{total:,}" if total is not None else ""
        task = bar.add_task(f"{label}: 0{of} {unit}")
        for count, item in enumerate(items, start=1):
            if count % every == 0:
                rate = count / max(time.monotonic() - started, 1e-6)
                bar.update(task, description=f"{label}: {count:,}{of} {unit} ({rate:,.0f}/s)")
            yield item
