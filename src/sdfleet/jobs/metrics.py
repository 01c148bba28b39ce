"""Prometheus metrics of the job system, on a registry of their own (one per app instance)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Counters and histograms the use cases update; gauges the reaper refreshes."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        if registry is None:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        r = self.registry
        self.submitted = Counter("sdfleet_jobs_submitted", "Jobs submitted", registry=r)
        self.claimed = Counter("sdfleet_jobs_claimed", "Job hand-outs to workers (claims)", registry=r)
        self.completed = Counter("sdfleet_jobs_completed", "Jobs completed successfully", registry=r)
        self.failed_attempts = Counter(
            "sdfleet_attempt_failures", "Attempts a worker reported as failed", registry=r
        )
        self.failed_jobs = Counter("sdfleet_jobs_failed", "Jobs that ended failed", registry=r)
        self.canceled = Counter("sdfleet_jobs_canceled", "Jobs canceled", registry=r)
        self.lease_expiries = Counter(
            "sdfleet_lease_expiries", "Leases that ran out (node vanished or stalled)", registry=r
        )
        self.quarantines = Counter("sdfleet_worker_quarantines", "Workers quarantined", registry=r)
        self.webhooks = Counter(
            "sdfleet_webhook_deliveries", "Webhook delivery attempts", ["outcome"], registry=r
        )
        self.queue_wait = Histogram(
            "sdfleet_job_queue_wait_seconds", "Submit to first hand-out", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.job_latency = Histogram(
            "sdfleet_job_latency_seconds", "Submit to completion", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.jobs_by_state = Gauge("sdfleet_jobs", "Jobs by state", ["state"], registry=r)
        self.workers_online = Gauge(
            "sdfleet_workers_online", "Workers seen recently, by state", ["state"], registry=r
        )
