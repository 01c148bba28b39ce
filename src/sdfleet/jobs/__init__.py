"""The use-case room: every lifecycle step of a job, over the store and blob protocols.

Doors: ``service.JobService`` (submit, claim, heartbeat, complete, fail, release, cancel, reap),
``submit.JobPreparer`` (the checks every job passes), ``queries.JobQueries`` (what routes read),
``a1111.A1111Service``, ``registry.ModelService``, ``keys.KeyService``, ``webhooks.WebhookDispatcher``;
``types`` (request/result values), ``blobkeys`` (the one spelling of blob keys), ``policy`` (pure
decisions: retry budget, interruption cap, quarantine, unservable). Metrics and wake-ups are carried in
``transitions.Effects`` and applied only after a transaction commits.
"""

from __future__ import annotations
