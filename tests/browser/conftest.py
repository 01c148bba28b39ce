"""Fixtures for the browser tests: one real ``sdfleet up`` (two workers) and one Chromium per module,
and a fresh browser context (so a fresh localStorage) per test.

Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while
it is open, and the async tests that run after these need that thread's loop back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveServer,
    engine_args,
    engine_name,
    start_sdfleet,
    unavailable,
)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright; skipped (failed in CI) when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[LiveServer]:
    """``sdfleet up`` with two local workers (the engine comes from the environment)."""
    model = None
    if engine_name() == "diffusers" and not os.environ.get("SDFLEET_TEST_BROWSER_MODEL"):
        model = str(request.getfixturevalue("tiny_models").sd1_file)
    live = start_sdfleet(tmp_path_factory.mktemp("sdfleet-up"), ["up", "--workers", "2", *engine_args(model)])
    yield live
    live.stop()


@pytest.fixture
def page(chromium: Any, server: LiveServer) -> Iterator[Any]:
    """A new page on the web UI, failing the test on any uncaught script error."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(15_000)
    errors: list[str] = []
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(f"{server.url}/ui/")
    tab.wait_for_selector("#gen-form select[name=sampler_name] option", state="attached")
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"
