"""The autoscaler: pools sized from queue demand, drains that never stop a busy worker, providers that
change a platform's replica count. See :mod:`sdfleet.autoscale.providers.base` for the provider seam."""

from __future__ import annotations
