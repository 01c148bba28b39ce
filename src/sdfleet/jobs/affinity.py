"""Warm sets for cache-aware claims: which registry models each live worker holds in memory or on
disk, as the claim scoring of :func:`sdfleet.store.claim.claim_statement` needs them.

Workers report their warm set on every claim and heartbeat (``loaded_models``, ``cached_models``);
the orchestrator persists the last report on the worker row (throttled, like liveness). A claim
compares the claiming worker's set with the best over every other live worker, so a job whose
models are warm elsewhere is left for that worker — until it has waited the aging bound.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

# how engines prefix what they report: ``lora:<name>``, ``vae:<name>`` (checkpoints bare)
_KIND_PREFIXES = frozenset(
    {
        "checkpoint",
        "lora",
        "lyco",
        "vae",
        "embedding",
        "controlnet",
        "upscaler",
        "refiner",
        "ip_adapter",
        "image_encoder",
        "t2i_adapter",
        "annotator",
    }
)


def warm_names(reported: Iterable[str] | None) -> frozenset[str]:
    """Registry names from a worker's report: ``lora:foo`` → ``foo`` (registry names never
    contain ``:``, so the prefix is unambiguous)."""
    names: set[str] = set()
    for entry in reported or ():
        kind, sep, name = entry.partition(":")
        names.add(name if sep and kind in _KIND_PREFIXES and name else entry)
    return frozenset(names)


class WarmIndex:
    """The warm sets of the live workers, with per-name counts so "warm on some other worker"
    costs one pass over the distinct names, not over the workers."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._loaded: Counter[str] = Counter()
        self._cached: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._sets)

    def set(self, worker_id: str, loaded: frozenset[str], cached: frozenset[str]) -> None:
        """Record one worker's warm set (replacing what it reported before)."""
        old = self._sets.get(worker_id)
        if old == (loaded, cached):
            return
        if old is not None:
            self._loaded.subtract(old[0])
            self._cached.subtract(old[1])
        self._sets[worker_id] = (loaded, cached)
        self._loaded.update(loaded)
        self._cached.update(cached)

    def get(self, worker_id: str) -> tuple[frozenset[str], frozenset[str]]:
        return self._sets.get(worker_id, (frozenset(), frozenset()))

    def elsewhere(self, worker_id: str) -> tuple[list[str], list[str]]:
        """(names loaded, names cached) on at least one worker other than ``worker_id``."""
        mine_loaded, mine_cached = self.get(worker_id)
        loaded = [n for n, k in self._loaded.items() if k > (n in mine_loaded)]
        cached = [n for n, k in self._cached.items() if k > (n in mine_cached)]
        return loaded, cached

    def workers(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        return dict(self._sets)
