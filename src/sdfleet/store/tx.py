"""The transaction: :class:`SqlTx`, what ``SqlStore.write(fn)``/``read(fn)`` hand to ``fn``.

Every method is one statement, or a few that belong together (a claim and its fair-share mark,
a heartbeat's read and its two batched updates). The use cases in :mod:`sdfleet.jobs` compose
them so that a state change, its attempt record, its events and its webhook messages commit
together or not at all.

The ~60 statements are grouped by the tables they serve, one mixin per module, so each reads
alone and the class stays one flat namespace (``tx.get_job``, ``tx.insert_events``) for callers:

- :mod:`~sdfleet.store.tx_tenants`: tenants, quotas and buckets, API keys, usage;
- :mod:`~sdfleet.store.tx_jobs`: jobs and attempts, the claim, leases, completion;
- :mod:`~sdfleet.store.tx_fleet`: workers, the model registry, queue/demand/activity reads;
- :mod:`~sdfleet.store.tx_outputs`: outputs, events, the webhook outbox;
- :mod:`~sdfleet.store.tx_a1111`: A1111 settings and task ids.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from sdfleet.store.dialect import Dialect
from sdfleet.store.tx_a1111 import A1111Statements
from sdfleet.store.tx_fleet import FleetStatements
from sdfleet.store.tx_jobs import JobStatements
from sdfleet.store.tx_outputs import OutputStatements
from sdfleet.store.tx_tenants import TenantStatements


class SqlTx(TenantStatements, JobStatements, FleetStatements, OutputStatements, A1111Statements):
    """One database transaction on ``conn``; obtain it through :meth:`SqlStore.write` or
    :meth:`SqlStore.read` (:mod:`sdfleet.store.sql`)."""

    def __init__(self, conn: Connection, dialect: Dialect):
        self.conn = conn
        self.dialect = dialect
