"""The web page against a real ``sdfleet up``: generate with live progress and read the infotext,
PNG info, inpainting with a painted mask, cancel, an X/Y plot, the fleet view, error messages and
the API key prompt — each the way a person would do it, in Chromium."""

from __future__ import annotations

import asyncio
import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdfleet.config import Settings
from sdfleet.jobs.keys import KeyService
from sdfleet.store import SqlStore
from sdfleet.store.migrate import ensure_schema
from tests.browser.helpers import LiveServer, drop_file, expect, png_bytes, start_sdfleet

pytestmark = pytest.mark.browser

SMALL = {"width": "64", "height": "64"}
DONE = 60_000  # ms to wait for a job to finish: the real engine loads its model on first use


def fill_generate(page: Any, prompt: str, steps: int, **fields: str) -> None:
    page.fill("textarea[name=prompt]", prompt)
    page.fill("input[name=steps]", str(steps))
    for name, value in {**SMALL, **fields}.items():
        page.fill(f"#gen-form [name={name}]", value)


def run_card(page: Any, prompt: str) -> Any:
    """The Generate tab's card of the run with this prompt (runs from earlier tests are listed too)."""
    return page.locator(".run-card", has=page.locator(".run-prompt", has_text=prompt)).first


def latest_job(server: LiveServer) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = server.client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
    return jobs[0]


def test_generate_shows_progress_then_the_image_and_its_infotext(page: Any, server: LiveServer) -> None:
    fill_generate(page, "a red fox in the snow, (winter:1.2)", 40)
    page.keyboard.press("Control+Enter")

    card = run_card(page, "a red fox in the snow")
    expect(card.locator(".run-status")).to_contain_text(re.compile(r"Step \d+/40"), timeout=DONE)
    expect(card.locator(".state-badge")).to_have_text("running")
    width = card.locator(".progress-fill").evaluate("el => parseFloat(el.style.width)")
    assert 0 < width <= 100

    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    image = card.locator(".tile img")
    expect(image).to_have_count(1)
    expect(image).to_have_js_property("naturalWidth", 64)
    expect(card.locator(".run-status")).to_contain_text("1 image")

    card.locator(".tile-open").click()
    viewer = page.locator("#lightbox")
    expect(viewer).to_be_visible()
    info = viewer.locator("#lightbox-info dl.infotext")
    expect(info).to_contain_text("a red fox in the snow, (winter:1.2)")
    expect(info.locator("dt", has_text="Steps").locator("+ dd")).to_have_text("40")
    expect(info.locator("dt", has_text="Size").locator("+ dd")).to_have_text("64x64")
    seed = info.locator("dt", has_text="Seed").locator("+ dd").inner_text()
    assert seed == str(latest_job(server)["outputs"][0]["seed"])

    # Reusing the parameters brings the exact seed back into the form.
    viewer.get_by_role("button", name="Reuse parameters").click()
    expect(viewer).to_be_hidden()
    expect(page.locator("input[name=seed]")).to_have_value(seed)


def test_png_info_reads_a_dropped_png_and_loads_its_parameters(page: Any) -> None:
    infotext = (
        "a castle on a hill at sunset, (golden light:1.3), café ☕\n"
        "Negative prompt: fog, blurry\n"
        "Steps: 23, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 4242, Size: 640x448, "
        'Model hash: 0123456789, Model: sd15-base, Clip skip: 2, Lora hashes: "film: abcdef012345"'
    )
    page.click("#tabbtn-pnginfo")
    drop_file(page, "#png-drop", "castle.png", png_bytes((30, 60, 90), parameters=infotext))

    params = page.locator("#png-params")
    expect(params).to_contain_text("DPM++ 2M Karras")
    expect(params.locator("dt", has_text="Seed").locator("+ dd")).to_have_text("4242")
    expect(params.locator("dt", has_text="Negative prompt").locator("+ dd")).to_have_text("fog, blurry")
    expect(page.locator("#png-result .notes")).to_contain_text(
        'checkpoint "sd15-base" is not in the registry'
    )
    expect(page.locator("#png-meta")).to_contain_text("64×64")

    page.get_by_role("button", name="Send to Generate").click()
    expect(page.locator("#tab-generate")).to_be_visible()
    form = page.locator("#gen-form")
    expect(form.locator("textarea[name=prompt]")).to_have_value(
        "a castle on a hill at sunset, (golden light:1.3), café ☕"
    )
    expect(form.locator("textarea[name=negative_prompt]")).to_have_value("fog, blurry")
    expected = {
        "steps": "23",
        "cfg_scale": "6.5",
        "seed": "4242",
        "width": "640",
        "height": "448",
        "clip_skip": "2",
    }
    for name, value in expected.items():
        expect(form.locator(f"input[name={name}]")).to_have_value(value)
    # The legacy combined sampler name is split into sampler and schedule type.
    expect(form.locator("select[name=sampler_name]")).to_have_value("DPM++ 2M")
    expect(form.locator("select[name=scheduler]")).to_have_value("karras")


def test_inpainting_repaints_only_the_painted_mask(page: Any, server: LiveServer, tmp_path: Path) -> None:
    source = tmp_path / "blue.png"
    source.write_bytes(png_bytes((20, 40, 230)))
    page.check("input[name=mode][value=inpaint]")
    page.set_input_files("#init-file", str(source))
    canvas = page.locator(".mask-canvas")
    expect(canvas).to_be_visible()
    fill_generate(page, "a yellow sun", 6, mask_blur="0", denoising_strength="1")

    # Paint a thick stroke down the left side of the image.
    page.locator(".brush-size input").fill("120")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.8, steps=10)
    page.mouse.up()
    expect(page.locator("#gen-submit")).to_have_text("Inpaint")
    page.click("#gen-submit")

    card = run_card(page, "a yellow sun")
    expect(card.locator(".run-meta")).to_contain_text("inpaint")
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    job = latest_job(server)
    assert job["kind"] == "img2img"
    assert job["params"]["mask"].startswith("blob:inputs/")
    assert job["params"]["init_images"][0].startswith("blob:inputs/")

    output = Image.open(io.BytesIO(server.client.get(job["outputs"][0]["url"]).content)).convert("RGB")
    assert output.size == (64, 64)
    kept = output.getpixel((58, 32))  # right edge: not painted, so the source's blue
    repainted = output.getpixel((12, 32))  # under the stroke: the engine's picture
    assert max(abs(a - b) for a, b in zip(kept, (20, 40, 230), strict=True)) <= 3
    assert max(abs(a - b) for a, b in zip(repainted, (20, 40, 230), strict=True)) > 30


def test_cancel_a_running_job_from_the_queue(page: Any, server: LiveServer) -> None:
    fill_generate(page, "a very long render", 150)
    page.click("#gen-submit")
    job_id = run_card(page, "a very long render").get_attribute("data-job-id")

    page.click("#tabbtn-queue")
    row = page.locator(f"#queue-body tr[data-job-id='{job_id}']")
    expect(row.locator(".state-badge")).to_have_text("running", timeout=DONE)
    expect(row.locator(".col-progress")).to_contain_text(re.compile(r"\d+/150"), timeout=DONE)
    expect(row.locator(".col-wait")).to_contain_text("local-")
    row.get_by_role("button", name="Cancel").click()

    expect(row.locator(".state-badge")).to_have_text("canceled", timeout=DONE)
    assert server.client.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    page.click("#tabbtn-generate")
    expect(page.locator(f".run-card[data-job-id='{job_id}'] .run-status")).to_have_text("Canceled")


def test_xy_plot_of_two_by_two_renders_its_grid_and_one_png(
    page: Any, server: LiveServer, tmp_path: Path
) -> None:
    fill_generate(page, "a lighthouse", 4, seed="1234")
    page.click("#tabbtn-xyz")
    axes = page.locator("#xyz-axes .axis-row")
    axes.nth(0).locator("select").first.select_option("steps")
    axes.nth(0).locator("input[type=text]").fill("4, 6")
    axes.nth(1).locator("select").first.select_option("cfg")
    axes.nth(1).locator("input[type=text]").fill("5, 9")
    expect(page.locator("#xyz-count")).to_have_text("4 images")
    page.click("#xyz-submit")

    grid = page.locator(".xyz-grid")
    expect(grid.locator("thead th")).to_have_text(["", "Steps: 4", "Steps: 6"])
    expect(grid.locator("tbody th")).to_have_text(["CFG scale: 5", "CFG scale: 9"])
    expect(grid.locator(".xyz-cell img")).to_have_count(4, timeout=DONE)
    expect(page.locator("#xyz-progress")).to_have_text("4 of 4 done")

    jobs = server.client.get("/v1/jobs", params={"limit": 4}).json()["jobs"]
    plot = {job["labels"]["xyz"] for job in jobs}
    assert len(plot) == 1
    assert sorted((j["params"]["steps"], j["params"]["cfg_scale"]) for j in jobs) == [
        (4, 5),
        (4, 9),
        (6, 5),
        (6, 9),
    ]
    assert {j["params"]["seed"] for j in jobs} == {1234}

    with page.expect_download() as download:
        page.click("#xyz-download")
    path = tmp_path / "grid.png"
    download.value.save_as(path)
    grid_image = Image.open(path)
    assert grid_image.width > 2 * 64 and grid_image.height > 2 * 64  # two cells plus the labels


def test_fleet_lists_the_workers_and_the_last_hour(page: Any) -> None:
    page.click("#tabbtn-fleet")
    rows = page.locator("#workers-body tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#workers-body")).to_contain_text("local-1")
    expect(page.locator("#workers-body")).to_contain_text("local-2")
    expect(rows.first.locator(".state-badge")).to_have_text("active")
    expect(page.locator(".stat-card", has_text="workers online").locator(".stat-value")).to_have_text("2")
    expect(page.locator("#chart-throughput svg")).to_be_visible()
    # the demand table: the checkpoint the earlier tests generated with is warm in a worker's memory
    demand = page.locator("#demand-body tr")
    expect(demand.first).to_be_visible()
    expect(page.locator("#demand-body td.col-warm", has_text="in memory").first).to_be_visible()
    expect(page.locator("#demand-body")).to_contain_text("checkpoint")


def test_api_errors_name_the_field(page: Any) -> None:
    fill_generate(page, "too wide", 10, width="4096")
    page.click("#gen-submit")
    toast = page.locator(".toast.error")
    expect(toast).to_contain_text("width is 4096, the limit is 2048")
    expect(toast).to_contain_text("limit_exceeded")
    field = page.locator("[data-field=width]")
    expect(field).to_have_class(re.compile("invalid"))
    expect(field.locator(".field-error")).to_contain_text("the limit is 2048")


async def _create_key(database_url: str, tenant: str) -> str:
    store = SqlStore(database_url)
    try:
        await ensure_schema(store, migrate=True)
        return (await KeyService(store).create(tenant, ["user"], name="browser test")).secret
    finally:
        await store.close()


def test_a_server_that_needs_keys_asks_for_one(chromium: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Playwright's sync API keeps an event loop running in this thread: create the key in another.
    with ThreadPoolExecutor(1) as pool:
        key = pool.submit(
            asyncio.run, _create_key(Settings(data_dir=data).resolved_database_url(), "alice")
        ).result()
    server = start_sdfleet(tmp_path, ["serve"], env={"SDFLEET_AUTH": "required"}, api_key=key)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        page.fill("#key-input", "sdf_not-a-key")
        page.click("#key-save")
        expect(page.locator("#key-error")).to_be_visible()
        page.fill("#key-input", key)
        page.click("#key-save")
        expect(dialog).to_be_hidden()
        expect(page.locator("#account-chip")).to_contain_text("alice")
        assert page.evaluate("localStorage.getItem('sdfleet.apiKey')") == key
    finally:
        context.close()
        server.stop()


INFOTEXTS = [
    "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768",
    'line one\nline two, (x:1.1)\nNegative prompt: bad\nworse\nSteps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 9, Size: 64x64, Lora hashes: "a: 0123, b: 4567", Template: "say \\"hi\\", twice"',
    "only a prompt\nSteps: 20, Sampler: Euler",
    "no parameters at all",
    "ünïcode prompt 猫\nSteps: 5, Sampler: LMS, CFG scale: 3, Seed: 2, Size: 8x8, Modèle: été",
    "p\nSteps: 20, Sampler: , CFG scale: 7, Seed: 1, Size: 64x64",
    "Negative prompt: only negative\nSteps: 1, Sampler: DDIM, CFG scale: 1, Seed: 0, Size: 64x64, Hires resize: 1024x1024",
]


def test_the_page_reads_infotext_as_the_server_does(page: Any) -> None:
    """The browser's port of the A1111 infotext rules agrees with sdfleet.a1111.infotext."""
    from sdfleet.a1111.infotext import _split_infotext, _split_sizes

    parsed = page.evaluate(
        """async (texts) => {
            const main = document.querySelector("script[type=module]").src;
            const m = await import(main.replace(/main\\.js$/, "infotext.js"));
            return texts.map((t) => {
                const { prompt, negative, pairs } = m.splitInfotext(t);
                return [prompt, negative, Object.fromEntries(m.splitSizes(pairs))];
            });
        }""",
        INFOTEXTS,
    )
    for text, (prompt, negative, pairs) in zip(INFOTEXTS, parsed, strict=True):
        want_prompt, want_negative, want_pairs = _split_infotext(text)
        assert (prompt, negative, pairs) == (want_prompt, want_negative, dict(_split_sizes(want_pairs))), text


def test_a_fresh_page_asks_for_the_checkpoints_native_size(page: Any, server: LiveServer) -> None:
    """The tiny checkpoint was made for 64 px: a first visit proposes 64×64, not A1111's 512×512."""
    [model] = server.client.get("/v1/models", params={"kind": "checkpoint"}).json()["models"]
    assert model["resolution"] == 64
    expect(page.locator("#gen-form [name=width]")).to_have_value("64")
    expect(page.locator("#gen-form [name=height]")).to_have_value("64")
