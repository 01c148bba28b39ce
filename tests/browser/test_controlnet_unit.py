"""A ControlNet unit in the Generate tab against a real ``sdfleet up --controlnet`` (the tiny SD 1.x net):
a person adds a unit, drops a drawing on it, picks canny (its sliders appear with the extension's
defaults) and the net, previews the detected map, and generates — the job carries the unit, its infotext
names it, and its detected map comes back after the picture, shown as such."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.helpers import LiveServer, drop_file, engine_args, engine_name, expect, start_sdfleet

pytestmark = pytest.mark.browser

DONE = 60_000  # ms: a worker loads the model on first use, and the machine may be busy


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[LiveServer]:
    """``sdfleet up`` with two local workers (the helper waits for two) and the tiny SD 1.x ControlNet registered."""
    tiny = request.getfixturevalue("tiny_models")
    model = None
    if engine_name() == "diffusers" and not os.environ.get("SDFLEET_TEST_BROWSER_MODEL"):
        model = str(tiny.sd1_file)
    command = ["up", "--workers", "2", *engine_args(model), "--controlnet", str(tiny.controlnet_sd1_file)]
    live = start_sdfleet(tmp_path_factory.mktemp("sdfleet-controlnet"), command)
    yield live
    live.stop()


def _drawing() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (240, 235, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 54, 54), fill=(30, 90, 160))
    draw.line((0, 63, 63, 0), fill=(200, 20, 20), width=3)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_canny_unit_previews_its_map_and_steers_the_generation(page: Any, server: LiveServer) -> None:
    panel = page.locator("#controlnet-panel")
    expect(panel).to_be_visible()
    page.wait_for_selector("#cn-note:has-text('Up to')")
    panel.get_by_role("button", name="Add ControlNet unit").click()
    unit = page.locator(".cn-unit")
    expect(unit).to_have_count(1)
    drop_file(page, ".cn-unit .cn-drop", "drawing.png", _drawing())
    expect(unit.locator(".cn-thumb img")).to_be_visible()
    unit.locator("[data-cn=module]").select_option("canny")
    expect(unit.locator(".cn-sliders [data-cn=threshold_a]")).to_have_value("100")
    expect(unit.locator(".cn-sliders [data-cn=threshold_b]")).to_have_value("200")
    expect(unit.locator(".cn-sliders [data-cn=processor_res]")).to_have_value("512")
    unit.locator(".cn-sliders [data-cn=processor_res]").fill("64")
    model = unit.locator("[data-cn=model]")
    expect(model).to_have_value("tiny-controlnet-sd1 [" + model.input_value().split("[", 1)[1])
    unit.locator("[data-cn=weight]").fill("1.5")

    unit.get_by_role("button", name="Preview detected map").click()
    preview = unit.locator("img.cn-map")
    expect(preview).to_be_visible(timeout=DONE)
    expect(preview).to_have_js_property("naturalWidth", 64)  # the drawing at processor resolution 64

    page.fill("textarea[name=prompt]", "a blue circle")
    page.fill("#gen-form input[name=steps]", "2")
    page.fill("#gen-form input[name=width]", "64")
    page.fill("#gen-form input[name=height]", "64")
    page.click("#gen-submit")
    card = page.locator(".run-card", has=page.locator(".run-prompt", has_text="a blue circle")).first
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)

    [job] = [
        j
        for j in server.client.get("/v1/jobs", params={"limit": 10}).json()["jobs"]
        if j["params"].get("prompt") == "a blue circle"
    ]
    [sent] = job["params"]["controlnet"]
    assert (sent["module"], sent["model"], sent["weight"], sent["processor_res"]) == (
        "canny",
        "tiny-controlnet-sd1",
        1.5,
        64,
    )
    assert sent["image"].startswith("blob:") and (sent["threshold_a"], sent["threshold_b"]) == (100, 200)
    assert [o["detected_map"] for o in job["outputs"]] == [False, True]
    if engine_name() == "diffusers":
        assert 'ControlNet 0: "Module: canny, Model: tiny-controlnet-sd1 [' in job["outputs"][0]["infotext"]
    expect(card.locator("img")).to_have_count(2, timeout=DONE)  # the picture and its detected map
