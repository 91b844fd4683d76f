"""Progress of the long parts (image save/load, weights, verification) on the shared stderr console."""

from __future__ import annotations

import time
from typing import Any

from .fmt import Meter


class ConsoleMeter(Meter):
    """A Rich progress bar on a terminal; one line per finished part when piped (logs stay short)."""

    def __init__(self) -> None:
        from ..console import stderr_console

        self.console = stderr_console()
        self.progress: Any = None
        self.task: Any = None
        self.label, self.done, self.t0 = "", 0, 0.0

    def start(self, label: str, total: int | None) -> None:
        self.label, self.done, self.t0 = label, 0, time.monotonic()
        if self.console.is_terminal:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            if self.progress is None:
                self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                                         TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
                self.progress.start()
            self.task = self.progress.add_task(label, total=total)

    def advance(self, n: int) -> None:
        self.done += n
        if self.task is not None:
            self.progress.update(self.task, advance=n)

    def finish(self) -> None:
        took = time.monotonic() - self.t0
        if self.task is not None:
            self.progress.update(self.task, completed=self.done, total=self.done or None)
            self.task = None
        else:
            self.console.print(f"  {self.label}: {self.done / 2**20:.1f} MiB in {took:.1f} s")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
