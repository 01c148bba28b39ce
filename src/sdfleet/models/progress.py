"""Download progress bars for the model cache: one shared rich display while any download that is
large enough shows a bar, on stderr, off when stderr is not a terminal unless asked for."""

from __future__ import annotations

import sys
from typing import Any

PROGRESS_MIN_BYTES = 64 * 1024 * 1024


class DownloadBars:
    """The bars of the downloads in progress (``progress``: None = only when stderr is a terminal)."""

    def __init__(self, progress: bool | None) -> None:
        self.progress = progress
        self._bars: Any = None  # a shared rich Progress while downloads show bars
        self._count = 0

    def start(self, name: str, total: int | None, have: int) -> Any:
        """A bar for a download of ``total`` bytes (``have`` of them already here), or None when no
        bar is shown (bars are off, the size is unknown, or the file is small)."""
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        if not show or not total or total < PROGRESS_MIN_BYTES:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if self._bars is None:
            self._bars = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bars.start()
        self._count += 1
        return self._bars.add_task(name[:40], total=total, completed=have)

    def update(self, bar: Any, completed: int) -> None:
        """Move ``bar`` to ``completed`` bytes (nothing when no bar is shown)."""
        if bar is not None and self._bars is not None:
            self._bars.update(bar, completed=completed)

    def stop(self, bar: Any) -> None:
        """Remove ``bar``; the shared display stops with the last bar."""
        if bar is None or self._bars is None:
            return
        self._bars.remove_task(bar)
        self._count -= 1
        if self._count <= 0:
            self._bars.stop()
            self._bars, self._count = None, 0
