"""Helpers for the browser tests: a real ``sdfleet up`` in a subprocess and Chromium driven by
Playwright (Debian's build, never a downloaded one).

The engine is one setting, ``SDFLEET_TEST_BROWSER_ENGINE``: ``diffusers`` (the default: the real
engine, on ``SDFLEET_TEST_BROWSER_MODEL`` or else the tiny random SD 1.x checkpoint the test suite
builds offline) or ``fake`` (the test double: faster, for iterating on the page). The tests are the same for both.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port, wait_until

try:  # imported lazily by the fixtures' users; the fixtures skip (or fail in CI) without it
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - depends on the environment
    Page = Any  # type: ignore[misc,assignment]
    expect = None  # type: ignore[assignment]

CHROMIUM = os.environ.get("SDFLEET_TEST_CHROMIUM", "/usr/bin/chromium")
# From shared/reference/offline-recipes.md: no GPU, no /dev/shm, and nothing that dials out.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
FAKE_STEP_SECONDS = 0.05


def unavailable(reason: str) -> None:
    """Skip — or fail where the environment promises the services (CI sets the variable)."""
    if os.environ.get("SDFLEET_REQUIRE_SERVICES"):
        pytest.fail(f"required test service unavailable: {reason}")
    pytest.skip(reason)


def engine_name() -> str:
    return os.environ.get("SDFLEET_TEST_BROWSER_ENGINE", "diffusers")


def engine_args(model: str | None = None) -> list[str]:
    """The worker engine of the server under test, as ``sdfleet up`` options."""
    engine = engine_name()
    if engine == "fake":
        return ["--engine", "fake", "--fake-step-seconds", str(FAKE_STEP_SECONDS)]
    model = os.environ.get("SDFLEET_TEST_BROWSER_MODEL") or model
    if not model:
        pytest.fail(f"SDFLEET_TEST_BROWSER_ENGINE={engine} needs a model (SDFLEET_TEST_BROWSER_MODEL)")
    return ["--engine", engine, "--model", model]


@dataclass
class LiveServer:
    """A running ``sdfleet`` process tree and a client for its API."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    api_key: str | None = None
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.Client(base_url=self.url, timeout=10, headers=headers)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                # longer than ``sdfleet up``'s own grace for its workers (40 s): killed earlier, it
                # leaves a worker that is still in a job running, retrying against a server that is gone
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sdfleet(
    tmp: Path, command: list[str], env: dict[str, str] | None = None, api_key: str | None = None
) -> LiveServer:
    """Run ``python -m sdfleet <command>`` on a free port and wait until it is ready and, for
    ``up``, until its workers have registered."""
    port = free_port()
    data = tmp / "data"
    full_env = {
        **os.environ,
        "SDFLEET_DATA_DIR": str(data),
        "SDFLEET_PORT": str(port),
        "SDFLEET_LOG_LEVEL": "warning",
        "SDFLEET_HEARTBEAT_SECONDS": "0.25",
        "SDFLEET_REAPER_INTERVAL": "0.5",
        "SDFLEET_WORKER_PRICE_PER_HOUR": "0.4",
        **(env or {}),
    }
    log = (tmp / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sdfleet", *command], env=full_env, stdout=log, stderr=subprocess.STDOUT
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data, process, api_key)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"sdfleet exited: {(tmp / 'server.log').read_text()[-2000:]}")
        return server.client.get("/ready").status_code == 200

    try:
        wait_until(ready, 60, "sdfleet to be ready")
        if command[0] == "up":
            wait_until(
                lambda: server.client.get("/v1/admin/stats").json()["workers_online"] >= 2, 60, "workers"
            )
    except BaseException:
        server.stop()
        raise
    return server


def png_bytes(
    color: tuple[int, int, int], size: tuple[int, int] = (64, 64), parameters: str | None = None
) -> bytes:
    """A PNG of one colour, with an A1111 ``parameters`` chunk when given (compressed iTXt)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if parameters is not None:
        info.add_itxt("parameters", parameters, zip=True)
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def drop_file(page: Page, selector: str, name: str, data: bytes, mime: str = "image/png") -> None:
    """Drop a file on an element the way a person drags one from their desktop."""
    page.evaluate(
        """([selector, name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [selector, name, base64.b64encode(data).decode(), mime],
    )
