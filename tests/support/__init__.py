"""Helpers shared by every test layer: one package, one theme a module.

- this module: :func:`free_port` (the one in :mod:`sdfleet.bench.report`) and :func:`wait_until`, for tests that run real processes and servers;
- :mod:`tests.support.clock`: :class:`FakeClock`, the hand-moved clock behind the ``clock`` fixture;
- :mod:`tests.support.files`: a real HTTP file server for download tests;
- :mod:`tests.support.live`: a live orchestrator and in-process workers;
- :mod:`tests.support.services`: real PostgreSQL and S3 servers (a pytest plugin, see ``conftest.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sdfleet.bench.report import free_port

__all__ = ["free_port", "wait_until"]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server may be restarting
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
