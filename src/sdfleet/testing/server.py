"""A real orchestrator in this process, for benchmarks and demos: uvicorn serving ``create_app(settings)``
on 127.0.0.1 in a thread of its own (:class:`ServerThread`)."""

from __future__ import annotations

import threading
import time

import uvicorn

from sdfleet.api.app import create_app
from sdfleet.config import Settings


class ServerThread:
    """A context manager: uvicorn serving ``create_app(settings)`` on 127.0.0.1 in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            loop="asyncio",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="orchestrator", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the orchestrator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


__all__ = ["ServerThread"]
