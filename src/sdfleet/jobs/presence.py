"""What one replica remembers about the workers between calls: when each one's liveness was last
written (so an idle fleet's long polls are not all database writes), and the live workers' warm
sets the claim scores cache affinity against. Both are caches: any replica may serve any call.
"""

from __future__ import annotations

from typing import Any

from sdfleet.config import Settings
from sdfleet.domain import WorkerInfo, WorkerState
from sdfleet.jobs.affinity import WarmIndex, warm_names
from sdfleet.store import Affinity, SqlTx

SEEN_WRITE_SECONDS = 5.0
WARM_INDEX_SECONDS = 2.0  # how long a replica trusts its copy of the other workers' warm sets


class Presence:
    """Worker liveness writes, throttled, and the warm-set index of the live workers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # when this worker's liveness was last written, and what it reported then
        # (loaded models, current jobs, cached models)
        self._seen: dict[str, tuple[float, list[str] | None, list[str] | None, list[str] | None]] = {}
        self._warm: tuple[float, WarmIndex] | None = None  # (refresh after, the live workers' warm sets)

    def is_stale(
        self,
        worker_id: str,
        now: float,
        loaded_models: list[str] | None,
        current_jobs: list[str] | None = None,
        cached_models: list[str] | None = None,
    ) -> bool:
        """Whether the worker's row should be written now (a while since, or something changed)."""
        seen = self._seen.get(worker_id)
        return (
            seen is None
            or now - seen[0] > SEEN_WRITE_SECONDS
            or (loaded_models is not None and loaded_models != seen[1])
            or (current_jobs is not None and current_jobs != seen[2])
            or (cached_models is not None and cached_models != seen[3])
        )

    def touch(
        self,
        tx: SqlTx,
        worker_id: str,
        now: float,
        loaded_models: list[str] | None,
        current_jobs: list[str] | None = None,
        cached_models: list[str] | None = None,
    ) -> None:
        """Record that the worker is alive (and what it holds) — at most every few seconds unless
        something changed: an idle fleet's long polls should not all be database writes."""
        if not self.is_stale(worker_id, now, loaded_models, current_jobs, cached_models):
            return
        values: dict[str, Any] = {"last_seen_at": now}
        if loaded_models is not None:
            values["loaded_models"] = loaded_models
        if current_jobs is not None:
            values["current_jobs"] = current_jobs
        if cached_models is not None:
            values["cached_models"] = cached_models
        tx.update_worker(worker_id, **values)
        if len(self._seen) > 100_000:
            self._seen.clear()
        previous = self._seen.get(worker_id)
        self._seen[worker_id] = (
            now,
            loaded_models if loaded_models is not None else (previous[1] if previous else None),
            current_jobs if current_jobs is not None else (previous[2] if previous else None),
            cached_models if cached_models is not None else (previous[3] if previous else None),
        )

    def _warm_index(self, tx: SqlTx, now: float) -> WarmIndex:
        """The live, active workers' warm sets, re-read from the worker rows every few seconds."""
        if self._warm is not None and self._warm[0] > now:
            return self._warm[1]
        index = WarmIndex()
        for w in tx.list_workers(seen_since=now - self.settings.worker_offline_after):
            if w.state == WorkerState.ACTIVE:
                index.set(w.id, warm_names(w.loaded_models), warm_names(w.cached_models))
        self._warm = (now + WARM_INDEX_SECONDS, index)
        return index

    def affinity(
        self,
        tx: SqlTx,
        worker: WorkerInfo,
        now: float,
        loaded_models: list[str] | None,
        cached_models: list[str] | None,
    ) -> Affinity | None:
        """What this worker's claim is scored against (None: affinity is off)."""
        if not self.settings.affinity_enabled:
            return None
        index = self._warm_index(tx, now)
        loaded = warm_names(loaded_models if loaded_models is not None else worker.loaded_models)
        cached = warm_names(cached_models if cached_models is not None else worker.cached_models)
        index.set(worker.id, loaded, cached)
        loaded_else, cached_else = index.elsewhere(worker.id)
        return Affinity(
            loaded=sorted(loaded),
            cached=sorted(cached - loaded),
            loaded_elsewhere=loaded_else,
            cached_elsewhere=cached_else,
            aged_before=now - self.settings.affinity_max_wait_seconds,
            window=self.settings.affinity_window,
        )
