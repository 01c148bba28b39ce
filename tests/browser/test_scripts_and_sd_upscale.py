"""The Generate tab's Script panel and the Extras tab's SD upscale mode against a real ``sdfleet up`` (the
Extras tests' server: two workers, the tiny upscalers registered): an SD upscale of a 64 px picture by 2
shown in the before/after compare, a prompt matrix run through the A1111 endpoint showing its grid and
its images, and a bad "Prompts from file" line named under its argument's input — each the way a person
would do it, in Chromium, on the tiny model at 64 px and 2 steps."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.helpers import LiveServer, drop_file, expect, png_bytes
from tests.browser.test_extras_tab import server

pytestmark = pytest.mark.browser

__all__ = ["server"]  # the Extras tests' server fixture (upscalers registered), used here by name

DONE = 60_000  # ms: a worker loads the model on first use, and the machine may be busy
GREEN = (40, 180, 90)


def small_generate(page: Any, prompt: str) -> None:
    """The Generate form at the tiny model's size and 2 steps."""
    page.fill("textarea[name=prompt]", prompt)
    page.fill("#gen-form input[name=steps]", "2")
    page.fill("#gen-form input[name=width]", "64")
    page.fill("#gen-form input[name=height]", "64")


def choose_script(page: Any, name: str) -> None:
    page.wait_for_selector(f'#script-select option[value="{name}"]', state="attached")
    page.select_option("#script-select", name)


def test_extras_sd_upscale_by_two_shows_the_result_in_the_compare(page: Any, server: LiveServer) -> None:
    page.fill("#gen-form input[name=steps]", "2")  # the tiles' steps come from Generate
    page.click("#tabbtn-extras")
    form = page.locator("#extras-form")
    page.wait_for_selector("#extras-form select[name=sd_upscaler] option[value=Lanczos]", state="attached")
    # filling Generate scrolled the page: the sticky header would cover the form's top
    page.evaluate("scrollTo(0, 0)")
    form.get_by_role("radio", name="SD upscale").check()
    expect(page.locator("#extras-sd")).to_be_visible()
    expect(page.locator("#extras-plain")).to_be_hidden()
    expect(page.locator("#extras-submit")).to_contain_text("SD upscale")

    drop_file(page, "#extras-drop", "green.png", png_bytes(GREEN, (64, 64)))
    expect(page.locator("#extras-files li")).to_have_count(1)
    form.locator("textarea[name=sd_prompt]").fill("a green square")
    form.locator("select[name=sd_upscaler]").select_option("Lanczos")
    form.locator("input[name=sd_scale]").fill("2")
    form.locator("input[name=sd_denoising_strength]").fill("0.3")
    form.locator("input[name=sd_overlap]").fill("16")
    form.locator("input[name=sd_tile_width]").fill("64")
    form.locator("input[name=sd_tile_height]").fill("64")
    expect(page.locator("#extras-sd-size")).to_contain_text("64×64 → 128×128, 9 tiles of 64×64 (3×3)")
    page.click("#extras-submit")

    card = page.locator(".extras-card", has=page.locator(".run-prompt", has_text="green.png")).first
    expect(card.locator(".run-meta")).to_contain_text("SD upscale · Lanczos · ×2")
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    after = card.locator(".compare-after")
    expect(after).to_have_js_property("naturalWidth", 128)
    expect(after).to_have_js_property("naturalHeight", 128)
    expect(card.locator(".compare-before img")).to_have_js_property("naturalWidth", 64)

    [job] = [
        j
        for j in server.client.get("/v1/jobs", params={"kind": "sd_upscale", "limit": 20}).json()["jobs"]
        if j["labels"].get("file") == "green.png"
    ]
    params = job["params"]
    assert (params["upscaler"], params["scale"], params["overlap"]) == ("Lanczos", 2, 16)
    generation = params["generation"]
    assert generation["prompt"] == "a green square" and generation["steps"] == 2
    assert (generation["width"], generation["height"], generation["denoising_strength"]) == (64, 64, 0.3)


def test_prompt_matrix_shows_the_grid_and_every_combination(page: Any, server: LiveServer) -> None:
    small_generate(page, "a|b|c")
    choose_script(page, "prompt matrix")
    args = page.locator("#script-args")
    # the inputs come from /script-info, one [data-arg=N] per argument, in script_args order
    expect(args.locator("[data-arg]")).to_have_count(5)
    expect(args.locator('[data-arg="2"] select')).to_have_value("positive")
    expect(args.locator('[data-arg="4"] input[type=number]')).to_have_attribute("max", "500")
    expect(page.locator("#gen-script-hint")).to_have_text("with the script Prompt matrix")

    with page.expect_request("**/sdapi/v1/txt2img") as sent:
        page.click("#gen-submit")
    body = sent.value.post_data_json
    assert body["script_name"] == "Prompt matrix"
    assert body["script_args"] == [False, False, "positive", "comma", 0]
    assert (body["prompt"], body["steps"], body["width"]) == ("a|b|c", 2, 64)

    card = page.locator(".script-card", has=page.locator(".run-prompt", has_text="a|b|c")).first
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    expect(card.locator(".tile img")).to_have_count(1 + 2 ** (3 - 1))
    expect(card.locator(".tile.script-grid")).to_have_count(1)
    expect(card.locator(".run-status")).to_contain_text("a grid and 4 images")
    first = card.locator(".tile:not(.script-grid) img").first
    expect(first).to_have_js_property("naturalWidth", 64)
    grid = card.locator(".tile.script-grid img")
    assert grid.evaluate("img => img.naturalWidth") > 2 * 64  # two columns and the labels' margin

    # The viewer opens on the grid with its infotext, like a generation's image.
    card.locator(".tile.script-grid .tile-open").click()
    viewer = page.locator("#lightbox")
    expect(viewer).to_be_visible()
    expect(viewer.locator("#lightbox-title")).to_contain_text("Grid")
    page.click("#lightbox-close")


def test_prompts_from_file_bad_line_is_shown_under_its_argument(page: Any, server: LiveServer) -> None:
    small_generate(page, "a lighthouse")
    choose_script(page, "prompts from file or textbox")
    textbox = page.locator("#script-args [data-arg]:has(textarea)")
    index = textbox.get_attribute("data-arg")
    assert index == "3"  # "List of prompt inputs", script_args.3 on the server
    textbox.locator("textarea").fill("a red boat\n--bogus 1")
    before = len(server.client.get("/v1/jobs", params={"limit": 100}).json()["jobs"])

    with page.expect_response("**/sdapi/v1/txt2img") as answered:
        page.click("#gen-submit")
    assert answered.value.status == 422

    error = page.locator(f'#script-args [data-arg="{index}"] .field-error')
    expect(error).to_contain_text("line 2: unknown commandline option: --bogus")
    expect(page.locator(f'#script-args [data-arg="{index}"]')).to_have_class("field invalid")
    expect(page.locator(".script-card")).to_have_count(0)  # nothing ran: the field says why
    assert len(server.client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]) == before

    # Fixing the line clears the mark as the person types.
    textbox.locator("textarea").fill("a red boat")
    expect(error).to_have_count(1)  # the message stays until the next submit...
    expect(page.locator(f'#script-args [data-arg="{index}"]')).not_to_have_class("field invalid")
