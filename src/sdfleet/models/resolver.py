"""Name → local file for the job about to run: the lookups the engine calls (:class:`ModelResolver`)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path


class ModelResolver:
    """Name → local file, for the job about to run: what the engine's model lookups call.

    The worker fills it with :meth:`use` right before each ``generate`` (one job at a time), so
    a prefetch for a later job never changes what the running job sees."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[tuple[str, str], Path] = {}

    def use(self, paths: Mapping[tuple[str, str], Path]) -> None:
        """Serve ``{(kind, name): path}`` from now on (replacing what was there)."""
        with self._lock:
            self._paths = dict(paths)

    def lookup(self, kind: str, name: str) -> Path | None:
        with self._lock:
            return self._paths.get((kind, name))

    def checkpoint(self, name: str) -> Path | None:
        return self.lookup("checkpoint", name)

    def lora(self, name: str) -> Path | None:
        return self.lookup("lora", name)

    def vae(self, name: str) -> Path | None:
        return self.lookup("vae", name)


__all__ = ["ModelResolver"]
