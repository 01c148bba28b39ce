"""The provider seam: what the autoscaler asks of a platform that runs workers.

A provider owns the platform's replica count of each pool and nothing else: the autoscaler decides the
count (:mod:`sdfleet.autoscale.policy`), drains the victims through the job service first (they claim
nothing more, finish what they hold and exit), and only then calls :meth:`Provider.set_replicas` with the
lower count. Where the platform lets a caller say which instance goes (Kubernetes'
``controller.kubernetes.io/pod-deletion-cost``, SaladCloud's deletion cost), :meth:`Provider.mark_for_removal`
says it before the count drops; a bad node is replaced through :meth:`Provider.replace`.

Workers tell which instance they run on in their registration ``info`` (see :class:`Instance`), so a
worker id maps to a pod, a Salad machine or a local process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# the keys of a worker's registration ``info`` that name where it runs
INSTANCE_KEYS = ("instance", "pod", "namespace", "salad_machine_id", "salad_container_group", "pid")


@dataclass(frozen=True)
class Instance:
    """Where one worker runs, as its registration ``info`` says: ``instance`` (a generic id), ``pod`` and
    ``namespace`` on Kubernetes (from ``HOSTNAME`` / the downward API), ``salad_machine_id`` and
    ``salad_container_group`` on SaladCloud (``SALAD_MACHINE_ID``, ``SALAD_CONTAINER_GROUP_NAME``), ``pid``
    for a local process."""

    worker_id: str
    pool: str
    labels: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.labels.get(key)


@dataclass(frozen=True)
class ProviderState:
    """What the platform reports for one pool: the replica count it is asked to run, and how many run."""

    pool: str
    requested: int
    running: int


@runtime_checkable
class Provider(Protocol):
    """A platform that runs worker replicas, one pool at a time. Calls are idempotent: asking for the count
    it already has is a no-op, marking an instance twice marks it once."""

    name: str

    async def state(self, pool: str) -> ProviderState:
        """The pool's replica count as the platform has it now."""
        ...

    async def set_replicas(self, pool: str, count: int) -> None:
        """Ask for ``count`` replicas of ``pool`` (the autoscaler has drained the ones to go first)."""
        ...

    async def mark_for_removal(self, pool: str, victims: Sequence[Instance]) -> None:
        """Say which instances go first at the next scale-down (a no-op where the platform cannot)."""
        ...

    async def replace(self, pool: str, instance: Instance) -> None:
        """Recreate one bad instance (quarantined worker) elsewhere: Salad's reallocate, a pod delete, a
        local restart."""
        ...

    async def close(self) -> None:
        """Release connections and, for local processes, stop nothing that is still draining."""
        ...


__all__ = ["INSTANCE_KEYS", "Instance", "Provider", "ProviderState"]
