"""The Extras tab against a real ``sdfleet up`` with two tiny random upscalers registered (``--upscaler``):
pick an image, choose an upscaler, scale it by 2, watch the job finish, read the result's size back
from the page, drag the before/after split and flip it (checked on the pixels shown), a folder of two
images as two jobs, and bad input named at its field — by the page before anything is sent, and by
the server. Each the way a person would do it, in Chromium."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.helpers import (
    LiveServer,
    drop_file,
    engine_args,
    engine_name,
    expect,
    png_bytes,
    start_sdfleet,
)

pytestmark = pytest.mark.browser

DONE = 60_000  # ms for an upscale job (a worker loads the net on first use; the machine may be busy)
RRDB = "tiny-rrdb-x4"  # registered under the file's name by ``sdfleet up --upscaler``
SRVGG = "tiny-srvgg-x4"
RED = (220, 40, 40)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[LiveServer]:
    """``sdfleet up`` with two local workers and the tiny ESRGAN (RRDB) and Real-ESRGAN Compact (SRVGG)
    upscalers registered; ``up`` lets its CPU workers take the ESRGAN-class one."""
    tiny = request.getfixturevalue("tiny_models")
    model = None
    if engine_name() == "diffusers" and not os.environ.get("SDFLEET_TEST_BROWSER_MODEL"):
        model = str(tiny.sd1_file)
    command = ["up", "--workers", "2", *engine_args(model)]
    command += ["--upscaler", str(tiny.rrdb_file), "--upscaler", str(tiny.srvgg_file)]
    live = start_sdfleet(tmp_path_factory.mktemp("sdfleet-extras"), command)
    yield live
    live.stop()


@pytest.fixture
def extras(page: Any) -> Any:
    page.click("#tabbtn-extras")
    expect(page.locator("#tab-extras")).to_be_visible()
    page.wait_for_selector(f"#extras-form select[name=upscaler_1] option[value='{RRDB}']", state="attached")
    return page


def upscale_jobs(server: LiveServer) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = server.client.get(
        "/v1/jobs", params={"kind": "upscale", "limit": 100}
    ).json()["jobs"]
    return jobs


def pixel_at(png: bytes, fx: float, fy: float = 0.5) -> tuple[int, int, int]:
    """The colour at a fraction of an image's width and height."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    x = min(image.width - 1, int(image.width * fx))
    y = min(image.height - 1, int(image.height * fy))
    r, g, b = image.getpixel((x, y))  # type: ignore[misc]
    return (r, g, b)


def near(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 24) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= tolerance


def test_upscale_one_image_by_two_with_a_before_after_split(extras: Any, server: LiveServer) -> None:
    page = extras
    form = page.locator("#extras-form")
    # The pickers come from the server: the built-in resizes and both registered nets.
    options = form.locator("select[name=upscaler_1] option").evaluate_all("els => els.map(e => e.value)")
    assert {"None", "Lanczos", "Nearest", RRDB, SRVGG} <= set(options)

    drop_file(page, "#extras-drop", "red.png", png_bytes(RED, (64, 48)))
    expect(page.locator("#extras-files li")).to_have_count(1)
    form.locator("select[name=upscaler_1]").select_option(RRDB)
    form.locator("input[name=upscaling_resize]").fill("2")
    expect(page.locator("#extras-files li")).to_contain_text("64×48 → 128×96")
    page.click("#extras-submit")

    card = page.locator(".extras-card", has=page.locator(".run-prompt", has_text="red.png")).first
    expect(card.locator(".run-meta")).to_contain_text(f"{RRDB} · ×2 · 64×48 → 128×96")
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    after = card.locator(".compare-after")
    expect(after).to_have_js_property("naturalWidth", 128)
    expect(after).to_have_js_property("naturalHeight", 96)
    expect(card.locator(".compare-before img")).to_have_js_property("naturalWidth", 64)
    expect(card.locator(".run-line")).to_contain_text("128×96 px (from 64×48)")
    expect(page.locator("#extras-files li")).to_have_count(0)

    [job] = [j for j in upscale_jobs(server) if j["labels"].get("file") == "red.png"]
    assert job["params"]["upscaler_1"] == RRDB
    assert job["params"]["resize_mode"] == "scale_by" and job["params"]["upscaling_resize"] == 2
    result = server.client.get(job["outputs"][0]["url"]).content
    assert Image.open(io.BytesIO(result)).size == (128, 96)
    # The random net changes the colours, so what the page shows tells the two apart.
    left_after, right_after = pixel_at(result, 0.2), pixel_at(result, 0.8)
    assert not near(left_after, RED) and not near(right_after, RED), (
        "the tiny net's result looks like its input"
    )

    frame = card.locator(".compare")
    frame.scroll_into_view_if_needed()
    shot = frame.screenshot()
    assert near(pixel_at(shot, 0.2), RED), "left of the split: the original"
    assert near(pixel_at(shot, 0.8), right_after), "right of the split: the upscaled image"

    # Drag the split to the left edge: all of it is the result.
    box = frame.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5, steps=4)
    page.mouse.move(box["x"] + 1, box["y"] + box["height"] * 0.5, steps=4)
    page.mouse.up()
    assert float(frame.get_attribute("data-split") or "50") < 5
    shot = frame.screenshot()
    assert near(pixel_at(shot, 0.2), left_after) and near(pixel_at(shot, 0.8), right_after)

    # "Before" shows the whole original; pressed again, the split comes back.
    toggle = card.get_by_role("button", name="Before")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    shot = frame.screenshot()
    assert near(pixel_at(shot, 0.2), RED) and near(pixel_at(shot, 0.8), RED)
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert near(pixel_at(frame.screenshot(), 0.8), right_after)

    # The keyboard moves the split too.
    frame.locator(".compare-range").focus()
    page.keyboard.press("End")
    expect(frame).to_have_attribute("data-split", "100")

    # Download saves the result; "Send to img2img" makes it Generate's source image.
    with page.expect_download() as download:
        card.locator(".extras-download").click()
    saved = download.value.path()
    assert download.value.suggested_filename == "red-128x96.png"
    assert Image.open(saved).size == (128, 96)
    card.get_by_role("button", name="Send to img2img").click()
    expect(page.locator("#tab-generate")).to_be_visible()
    expect(page.locator("#init-image")).to_have_js_property("naturalWidth", 128)
    expect(page.locator("#gen-form input[name=mode][value=img2img]")).to_be_checked()


def test_a_folder_of_two_images_runs_as_two_jobs(extras: Any, server: LiveServer, tmp_path: Path) -> None:
    page = extras
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "wide.png").write_bytes(png_bytes((40, 60, 220), (40, 24)))
    (folder / "square.png").write_bytes(png_bytes((40, 200, 60), (32, 32)))
    (folder / "notes.txt").write_text("not an image")
    with page.expect_file_chooser() as chooser:
        page.click("#extras-folder-button")
    chooser.value.set_files(str(folder))
    expect(page.locator("#extras-files li")).to_have_count(2)  # the text file is skipped
    expect(page.locator("#extras-count")).to_have_text("2 images chosen")

    form = page.locator("#extras-form")
    form.locator("select[name=upscaler_1]").select_option(SRVGG)
    form.locator("input[name=upscaling_resize]").fill("2")
    before = len(upscale_jobs(server))
    expect(page.locator("#extras-submit")).to_have_text("Upscale 2 images")
    page.keyboard.press("Control+Enter")

    for name, size in (("wide.png", (80, 48)), ("square.png", (64, 64))):
        card = page.locator(".extras-card", has=page.locator(".run-prompt", has_text=name)).first
        expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
        expect(card.locator(".compare-after")).to_have_js_property("naturalWidth", size[0])
        expect(card.locator(".compare-after")).to_have_js_property("naturalHeight", size[1])
        expect(card.locator(".run-line")).to_contain_text(f"{size[0]}×{size[1]} px")
    jobs = upscale_jobs(server)
    assert len(jobs) == before + 2
    assert {j["labels"]["file"] for j in jobs[:2]} == {"shots/wide.png", "shots/square.png"}
    assert all(j["params"]["upscaler_1"] == SRVGG for j in jobs[:2])
    names = page.locator(".extras-card .run-prompt").all_inner_texts()
    assert names.index("shots/wide.png") < names.index("shots/square.png")  # in the order chosen

    # Back later: the results are still listed (without their originals, which stayed in that visit).
    page.reload()
    page.click("#tabbtn-extras")
    card = page.locator(".extras-card", has=page.locator(".run-prompt", has_text="square.png")).first
    expect(card.locator(".compare.result-only .compare-after")).to_have_js_property("naturalWidth", 64)
    expect(card.locator(".compare-before")).to_have_count(0)
    expect(card.get_by_role("button", name="Send to img2img")).to_be_visible()


def test_bad_input_is_named_at_its_field(extras: Any, server: LiveServer) -> None:
    page = extras
    form = page.locator("#extras-form")
    before = len(upscale_jobs(server))

    # No image: said under the image field, nothing sent.
    page.click("#extras-submit")
    expect(form.locator("[data-field=image] .field-error")).to_contain_text("Choose an image")

    # A factor out of range: said under the factor, nothing sent.
    drop_file(page, "#extras-drop", "red.png", png_bytes(RED, (32, 32)))
    expect(form.locator("[data-field=image] .field-error")).to_have_count(0)
    form.locator("input[name=upscaling_resize]").fill("20")
    page.click("#extras-submit")
    error = form.locator("[data-field=upscaling_resize] .field-error")
    expect(error).to_contain_text("Scale factor")
    expect(error).to_contain_text("between 1 and 16")
    assert len(upscale_jobs(server)) == before

    # Typing a good value clears the mark.
    form.locator("input[name=upscaling_resize]").fill("2")
    expect(error).to_have_count(0)

    # The server's limit on the result's size: its 422 names the width, shown there.
    form.locator("label", has=page.locator("input[name=resize_mode][value=scale_to]")).click()
    expect(form.locator("input[name=upscaling_resize_w]")).to_be_visible()
    form.locator("input[name=upscaling_resize_w]").fill("16384")
    form.locator("input[name=upscaling_resize_h]").fill("16384")
    page.click("#extras-submit")
    error = form.locator("[data-field=upscaling_resize_w] .field-error")
    expect(error).to_contain_text("the limit is")
    assert len(upscale_jobs(server)) == before
    expect(page.locator("#extras-files li")).to_have_count(1)  # the image stays chosen to try again

    # Face restoration is off, and says why, while the server has no face restorer.
    expect(form.locator("input[name=gfpgan_visibility]")).to_be_disabled()
    expect(page.locator("#extras-faces-note")).to_contain_text("This server has no face restorer")


def test_generate_offers_the_registered_upscalers_for_the_hires_fix(page: Any, server: LiveServer) -> None:
    """The hires fix's upscaler picker lists the registered nets beside the latent modes and resizes, a
    generation's hires pass runs with one, and "Restore faces" is off, saying why, while no face restorer
    is registered (and is not sent)."""
    form = page.locator("#gen-form")
    picker = form.locator("select[name=hr_upscaler]")
    expect(picker.locator(f"optgroup[label='Upscaler models'] option[value='{RRDB}']")).to_have_count(1)
    expect(picker.locator(f"optgroup[label='Upscaler models'] option[value='{SRVGG}']")).to_have_count(1)
    expect(picker.locator("optgroup[label='Latent'] option[value='Latent']")).to_have_count(1)
    expect(picker.locator("optgroup[label='Resize'] option[value='Lanczos']")).to_have_count(1)
    expect(picker).to_have_value("Latent")  # the API's default stays the default
    expect(form.locator("input[name=restore_faces]")).to_be_disabled()
    expect(page.locator("#restore-faces-note")).to_have_text("no face restorer registered")

    prompt = "a small blue square on a yellow background"
    form.locator("textarea[name=prompt]").fill(prompt)
    for name, value in {"steps": "2", "width": "64", "height": "64"}.items():
        form.locator(f"input[name={name}]").fill(value)
    form.locator("input[name=enable_hr]").check()  # opens the hires settings
    picker.select_option(SRVGG)
    form.locator("input[name=hr_scale]").fill("2")
    form.locator("input[name=hr_second_pass_steps]").fill("1")
    page.click("#gen-submit")
    card = page.locator(".run-card", has=page.locator(".run-prompt", has_text=prompt)).first
    expect(card.locator(".state-badge")).to_have_text("succeeded", timeout=DONE)
    expect(card.locator(".tile img")).to_have_js_property("naturalWidth", 128)
    job = server.client.get("/v1/jobs", params={"kind": "txt2img", "limit": 1}).json()["jobs"][0]
    assert job["params"]["hr_upscaler"] == SRVGG and job["params"]["enable_hr"] is True
    assert not job["params"].get("restore_faces")  # off: the spec's default, the page sent nothing


def test_face_restoration_follows_the_registered_restorers(
    chromium: Any, server: LiveServer, tmp_path: Path
) -> None:
    """With a GFPGAN face restorer registered, its visibility can be set (CodeFormer's still cannot, and
    the note says so), and Generate's "Restore faces" is offered. Registered for this test only."""
    stand_in = tmp_path / "GFPGANv1.4.safetensors"
    stand_in.write_bytes(b"stand-in weights: never loaded, the page only lists the model")
    model = {"name": "gfpgan-standin", "kind": "face_restorer", "arch": "gfpgan", "source": str(stand_in)}
    server.client.post("/v1/models", json=model).raise_for_status()
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/ui/#extras")
        form = page.locator("#extras-form")
        expect(form.locator("input[name=gfpgan_visibility]")).to_be_enabled()
        expect(form.locator("input[name=upscale_first]")).to_be_enabled()
        expect(form.locator("input[name=codeformer_visibility]")).to_be_disabled()
        expect(page.locator("#extras-faces-note")).to_contain_text(
            "No CodeFormer face restorer is registered"
        )
        page.click("#tabbtn-generate")
        expect(page.locator("#gen-form input[name=restore_faces]")).to_be_enabled()
        expect(page.locator("#restore-faces-note")).to_have_text("")
    finally:
        context.close()
        server.client.delete("/v1/models/gfpgan-standin").raise_for_status()
