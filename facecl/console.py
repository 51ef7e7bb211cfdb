"""The one rich Console (stderr) and the progress-bar factory; stdout is for results only."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# soft_wrap: a message is never broken at the console width (CI logs are 80 columns), so an
# error or warning stays the one line a script can grep; rich renderables still fit the width.
console = Console(stderr=True, soft_wrap=True)


class RateColumn(TextColumn):
    """Items per second, with the unit of the task (``unit`` field, default 'it')."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Task) -> Text:

        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text(
            f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed"
        )


def progress(transient: bool = False) -> Progress:
    """A progress display with count, rate and ETA on the shared console."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def emit_json(obj: Any) -> None:
    """Write one machine-readable JSON document to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
