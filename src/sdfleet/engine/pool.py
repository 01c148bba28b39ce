"""The nets loaded on a worker (upscalers, face restorers), kept between jobs: :class:`NetPool`, a small
thread-safe LRU keyed by file and device. Nothing here imports torch; the loaders do."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sdfleet.engine")


class NetPool:
    """The upscaler nets loaded on this worker, least recently used first out, at most ``keep`` of them.
    Thread-safe: the worker runs one job at a time on the engine, but loads may race a heartbeat."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = max(1, keep)
        self._nets: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._names: dict[str, str] = {}  # file → the registry name it was asked for by
        self._lock = threading.Lock()

    def get(
        self,
        path: Path,
        device: str,
        load: Callable[[Path, str], Any] | None = None,
        name: str | None = None,
    ) -> Any:
        """The net of ``path`` on ``device``, loaded now (by ``load``: an upscaler loader by default) if it
        is not loaded yet; ``name`` (its registry name) is what :meth:`loaded_names` reports."""
        if name:
            self._names[str(path)] = name
        if load is None:
            from sdfleet.engine.upscale.loader import load_upscaler

            def load(path: Path, device: str) -> Any:
                return load_upscaler(path, device=device)

        key = (str(path), device)
        with self._lock:
            net = self._nets.get(key)
            if net is not None:
                self._nets.move_to_end(key)
                return net
        net = load(path, device)
        with self._lock:
            self._nets[key] = net
            while len(self._nets) > self.keep:
                dropped, _ = self._nets.popitem(last=False)
                log.info("upscale.unloaded path=%s device=%s", dropped[0], dropped[1])
        return net

    def loaded(self) -> list[str]:
        """The files of the loaded nets."""
        with self._lock:
            return [path for path, _ in self._nets]

    def loaded_names(self) -> list[str]:
        """The registry names of the loaded nets that were asked for by name, most recently used last."""
        return list(dict.fromkeys(self._names[p] for p in self.loaded() if p in self._names))


__all__ = ["NetPool"]
