"""The one progress bar: rich, with a count, a free text field, elapsed time and ETA.

The CLI draws every command's bar with it (`vidcache.cli.progress_bar` adds the CLI's console and its
terminal check); library code that runs long on its own (k-means, the codebook's frame sampling)
takes a `progress` flag and draws the same bar, so every bar a user sees looks and reads alike.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, *, console=None,
                 disable: bool = False) -> Iterator[Callable]:
    """Yields `update(done, total=None, rate="")`: `done` items of `total`, `rate` any short text
    (a rate, a loss). A disabled bar draws nothing and costs nothing."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False, disable=disable) as bar:
        task = bar.add_task(description, total=total, rate="")

        def update(done: int, total: int | None = None, rate: str = "") -> None:
            bar.update(task, completed=done, total=total if total is not None else bar.tasks[0].total,
                       rate=rate)

        yield update


def track(items: Iterable, description: str, total: int | None = None, enabled: bool = True) -> Iterator:
    """Iterate `items` with a progress bar (when `enabled`)."""
    if not enabled:
        yield from items
        return
    items = list(items) if total is None else items
    with progress_bar(description, len(items) if total is None else total) as update:
        for done, item in enumerate(items, start=1):
            yield item
            update(done)
