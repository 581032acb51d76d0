"""A rich progress bar (rows, rows/s, ETA) fed by the engine's Observer calls."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mapsync.state.store import Counts


class RichObserver:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()

    def started(self, sync: str, kind: str, total: int | None) -> None:
        self.tasks[sync] = self.progress.add_task(f"{kind} {sync}", total=total, rate="")

    def batch(self, sync: str, counts: Counts) -> None:
        task = self.tasks[sync]
        self.progress.update(task, completed=counts.read)
        speed = self.progress.tasks[task].speed
        self.progress.update(task, rate=f"{speed:,.0f} rows/s" if speed else "")

    def stop(self) -> None:
        self.progress.stop()
