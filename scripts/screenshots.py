"""Screenshots of every tab of the web page, at desktop (1280×800) and narrow (390×844) widths.

Starts a real ``sdfleet up --engine fake`` in a temporary directory, registers a few placeholder
models, gives the workers some work, then drives Debian's Chromium with Playwright through each tab
the way a person would and writes ``docs/screenshots/<tab>-<desktop|narrow>.png``.

    python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Needs ``pip install playwright`` and ``apt-get install chromium`` (never ``playwright install``). The
Extras tab's shots need torch (a tiny random Real-ESRGAN Compact net is registered as the upscaler, which
the fake engine's workers run); without it they are skipped. ``--tabs extras,generate`` writes only those
(with their second shots: ``generate-script``, a prompt matrix run from the Script panel, and
``extras-sd-upscale``, the Extras tab's SD upscale mode).
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SIZES = {"desktop": (1280, 800), "narrow": (390, 844)}
MODELS = [
    {"name": "dreamshaper-8", "kind": "checkpoint", "arch": "sd1", "description": "SD 1.5 all-rounder"},
    {"name": "sdxl-base-1.0", "kind": "checkpoint", "arch": "sdxl"},
    {"name": "vae-ft-mse-840000", "kind": "vae", "arch": "sd1"},
    {
        "name": "film-grain",
        "kind": "lora",
        "arch": "sd1",
        "trigger_words": ["film grain"],
        "default_weight": 0.7,
    },
    {"name": "watercolor-v2", "kind": "lora", "arch": "sd1", "trigger_words": ["watercolor"]},
]
PROMPTS = [
    "a lighthouse on a cliff at dusk, volumetric light",
    "portrait of an old fisherman, dramatic lighting",
    "a tiny robot watering plants in a greenhouse",
    "isometric cozy library with floating books",
    "a red fox in fresh snow, morning mist",
    "neon city street in the rain, reflections",
    "a bowl of ramen, studio photo, steam",
    "ancient temple in the jungle, god rays",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


@contextmanager
def sdfleet_up(tmp: Path) -> Iterator[httpx.Client]:
    port = free_port()
    env = {
        **os.environ,
        "SDFLEET_DATA_DIR": str(tmp / "data"),
        "SDFLEET_PORT": str(port),
        "SDFLEET_LOG_LEVEL": "warning",
        "SDFLEET_HEARTBEAT_SECONDS": "0.3",
        "SDFLEET_WORKER_PRICE_PER_HOUR": "0.45",
    }
    log = (tmp / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdfleet",
            "up",
            "--engine",
            "fake",
            "--workers",
            "2",
            "--fake-step-seconds",
            "0.05",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for("the workers", lambda: client.get("/v1/admin/stats").json()["workers_online"] >= 2)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def prepare(client: httpx.Client, tmp: Path) -> None:
    """Register placeholder models and give the fleet some finished work to show."""
    for model in MODELS:
        path = tmp / f"{model['name']}.safetensors"
        path.write_bytes(f"placeholder weights for {model['name']}".encode())
        client.post("/v1/models", json={**model, "source": str(path)}).raise_for_status()
    jobs = [
        {
            "params": {
                "prompt": prompt,
                "negative_prompt": "blurry, low quality",
                "width": 512,
                "height": 768 if i % 3 == 1 else 512,
                "steps": 12,
                "seed": 1000 + i,
                "batch_size": 2 if i % 4 == 0 else 1,
                "model": "dreamshaper-8",
                "sampler_name": "DPM++ 2M",
                "scheduler": "karras",
            }
        }
        for i, prompt in enumerate(PROMPTS)
    ]
    client.post("/v1/jobs", json={"jobs": jobs}).raise_for_status()
    try:  # the Extras tab's upscaler: a tiny random Compact net (needs torch)
        from sdfleet.testing.tiny_models import write_tiny_upscaler

        net = write_tiny_upscaler(tmp / "tiny-srvgg-x4.safetensors", "srvgg")
    except ImportError:
        print("torch is not installed: no upscaler, no Extras screenshots")
    else:
        client.post(
            "/v1/models",
            json={
                "name": "tiny-srvgg-x4",
                "kind": "upscaler",
                "arch": "srvgg",
                "scale": 4,
                "source": str(net),
            },
        ).raise_for_status()
    slow = client.post(
        "/v1/jobs", json={"params": {"prompt": "a job someone changed their mind about", "steps": 150}}
    )
    client.post(f"/v1/jobs/{slow.json()['id']}/cancel").raise_for_status()
    wait_for(
        "the first jobs",
        lambda: not client.get("/v1/jobs", params={"state": ["queued", "running"]}).json()["jobs"],
    )


def new_page(browser: Browser, url: str, size: tuple[int, int]) -> Page:
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{url}/ui/")
    page.wait_for_selector("#gen-form select[name=sampler_name] option", state="attached")
    page.wait_for_timeout(300)
    return page


ONLY: set[str] = set()  # --tabs: the shots to write (empty: all)


def shoot(page: Page, out: Path, name: str, kind: str) -> None:
    # "--tabs generate" writes the Generate tab's other shots too (generate-script)
    if ONLY and name not in ONLY and name.split("-")[0] not in ONLY:
        return
    page.wait_for_timeout(400)  # let transitions settle
    path = out / f"{name}-{kind}.png"
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def drop_png(page: Page, data: bytes, zone: str = "#png-drop", name: str = "lighthouse.png") -> None:
    page.evaluate(
        """([b64, selector, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            const zone = document.querySelector(selector);
            for (const type of ["dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [base64.b64encode(data).decode(), zone, name],
    )


def small_png(data: bytes, side: int) -> bytes:
    """A PNG shrunk to ``side`` pixels wide (an upscaler's input)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((side, round(side * image.height / image.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def extras(page: Page, client: httpx.Client, out: Path, kind: str) -> None:
    """Extras: two small images upscaled ×4 by the tiny net, the newest shown with its before/after split."""
    nets = client.get("/v1/models", params={"kind": "upscaler"}).json()["models"]
    if not nets:
        return
    page.click("#tabbtn-extras")
    page.locator(f"#extras-form select[name=upscaler_1] option[value='{nets[0]['name']}']").wait_for(
        state="attached"
    )
    done = client.get("/v1/jobs", params={"state": "succeeded", "kind": "txt2img", "limit": 50}).json()[
        "jobs"
    ]
    for job in (done[-2], done[-1]):
        name = "-".join(job["params"]["prompt"].split(",")[0].split()[:4]) + ".png"  # a-bowl-of-ramen.png
        drop_png(page, small_png(client.get(job["outputs"][0]["url"]).content, 128), "#extras-drop", name)
    page.locator("#extras-files li").nth(1).wait_for()
    page.select_option("#extras-form select[name=upscaler_1]", nets[0]["name"])
    page.fill("#extras-form input[name=upscaling_resize]", "4")
    page.click("#extras-submit")
    # the two new results, each with a before/after split (results of earlier visits have none)
    page.locator(".extras-card[data-state=succeeded] .compare-range").nth(1).wait_for(timeout=60_000)
    page.locator(".extras-card .compare-range").first.evaluate(
        "(r) => { r.value = 42; r.dispatchEvent(new Event('input')); }"
    )
    if kind == "narrow":  # the results come below the form: show the newest one
        page.locator(".extras-card").first.evaluate("(el) => window.scrollTo(0, el.offsetTop - 104)")
    else:
        page.evaluate("window.scrollTo(0, 0)")
    shoot(page, out, "extras", kind)

    # SD upscale: one of them ×2 again, redrawn tile by tile with img2img on the workers.
    page.evaluate("window.scrollTo(0, 0)")
    page.get_by_role("radio", name="SD upscale").check()
    job = done[-1]
    name = "sd-" + "-".join(job["params"]["prompt"].split(",")[0].split()[:4]) + ".png"
    drop_png(page, small_png(client.get(job["outputs"][0]["url"]).content, 192), "#extras-drop", name)
    page.locator("#extras-files li").first.wait_for()
    page.fill("#extras-form textarea[name=sd_prompt]", job["params"]["prompt"])
    page.select_option("#extras-form select[name=sd_upscaler]", nets[0]["name"])
    page.fill("#extras-form input[name=sd_scale]", "2")
    page.fill("#extras-form input[name=sd_denoising_strength]", "0.3")
    page.fill("#extras-form input[name=sd_tile_width]", "192")
    page.fill("#extras-form input[name=sd_tile_height]", "192")
    page.fill("#extras-form input[name=sd_overlap]", "64")
    page.click("#extras-submit")
    card = page.locator(".extras-card", has=page.locator(".run-prompt", has_text=name)).first
    newest = card.locator(".compare-range")
    newest.wait_for(timeout=60_000)
    newest.evaluate("(r) => { r.value = 50; r.dispatchEvent(new Event('input')); }")
    if kind == "narrow":
        page.locator(".extras-card").first.evaluate("(el) => window.scrollTo(0, el.offsetTop - 104)")
    else:
        page.evaluate("window.scrollTo(0, 0)")
    shoot(page, out, "extras-sd-upscale", kind)
    page.get_by_role("radio", name="Upscale", exact=True).check()


def tour(browser: Browser, client: httpx.Client, out: Path, kind: str) -> None:
    url = str(client.base_url).rstrip("/")
    page = new_page(browser, url, SIZES[kind])

    # Generate: a finished batch below, a run in progress on top.
    page.select_option("select[name=model]", "dreamshaper-8")
    page.fill(
        "textarea[name=prompt]",
        "a lighthouse on a cliff at dusk, (volumetric light:1.2), [storm:calm:0.4], "
        "<lora:film-grain:0.7>, film grain",
    )
    page.fill("textarea[name=negative_prompt]", "blurry, (low quality:1.3), watermark")
    page.select_option("select[name=sampler_name]", "DPM++ 2M")
    page.select_option("select[name=scheduler]", "karras")
    page.fill("input[name=steps]", "14")
    page.fill("input[name=batch_size]", "4")
    page.click("#gen-submit")
    page.locator(".run-card .tile img").nth(3).wait_for(timeout=30_000)
    page.fill("input[name=steps]", "90")
    page.click("#gen-submit")
    page.locator(".run-card[data-state=running]").first.wait_for()
    page.wait_for_timeout(1800)
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, out, "generate", kind)

    # Generate with a script: a prompt matrix through the A1111 API, its grid first, the Script panel in view.
    page.fill("textarea[name=prompt]", "a lighthouse on a cliff|at dusk|in a storm")
    page.fill("input[name=steps]", "14")
    page.fill("input[name=batch_size]", "1")
    page.locator("#script-select option[value='prompt matrix']").wait_for(state="attached")
    page.select_option("#script-select", "prompt matrix")
    page.click("#gen-submit")
    page.locator(".script-card[data-state=succeeded] .tile img").nth(4).wait_for(timeout=60_000)
    if kind == "narrow":  # one column: the panel comes before the results
        page.locator("#script-panel").evaluate(
            "(el) => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 110)"
        )
    else:
        page.evaluate("window.scrollTo(0, 0)")
    shoot(page, out, "generate-script", kind)
    page.select_option("#script-select", "")
    page.evaluate("window.scrollTo(0, 0)")

    # Queue: more work arriving while that run is going.
    jobs = [
        {"params": {"prompt": p, "steps": 60, "width": 512, "height": 512, "seed": 7 + i}}
        for i, p in enumerate(PROMPTS[:5])
    ]
    client.post("/v1/jobs", json={"jobs": jobs}).raise_for_status()
    page.click("#tabbtn-queue")
    page.locator("#queue-body tr[data-state=queued]").first.wait_for()
    page.wait_for_timeout(1500)
    shoot(page, out, "queue", kind)

    page.click("#tabbtn-gallery")
    page.locator("#gallery-grid .tile img").nth(5).wait_for()
    page.wait_for_timeout(800)
    shoot(page, out, "gallery", kind)

    if kind == "desktop":
        page.locator("#gallery-grid .tile-open").first.click()
        page.locator("#lightbox-info dl.infotext").wait_for()
        page.wait_for_timeout(400)
        shoot(page, out, "viewer", kind)
        page.keyboard.press("Escape")

    page.click("#tabbtn-pnginfo")
    first = client.get("/v1/jobs", params={"state": "succeeded", "limit": 50}).json()["jobs"][-1]
    drop_png(page, client.get(first["outputs"][0]["url"]).content)
    page.locator("#png-params").wait_for()
    shoot(page, out, "pnginfo", kind)

    extras(page, client, out, kind)

    # X/Y/Z: two samplers × three CFG scales over the Generate settings.
    page.click("#tabbtn-generate")
    page.fill("input[name=steps]", "10")
    page.fill("input[name=batch_size]", "1")
    page.fill("input[name=seed]", "424242")
    page.click("#tabbtn-xyz")
    axes = page.locator("#xyz-axes .axis-row")
    axes.nth(0).locator("select").first.select_option("sampler")
    axes.nth(0).locator("input[type=text]").fill("Euler a, DPM++ 2M")
    axes.nth(1).locator("select").first.select_option("cfg")
    axes.nth(1).locator("input[type=text]").fill("4, 7, 10")
    page.click("#xyz-submit")
    page.locator(".xyz-cell img").nth(5).wait_for(timeout=60_000)
    page.wait_for_timeout(600)
    shoot(page, out, "xyz", kind)

    page.click("#tabbtn-fleet")
    page.locator("#workers-body tr").first.wait_for()
    page.wait_for_timeout(1200)
    shoot(page, out, "fleet", kind)
    page.context.close()
    wait_for(
        "the queue to drain",
        lambda: not client.get("/v1/jobs", params={"state": ["queued", "running"]}).json()["jobs"],
        120,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--tabs", default="", help="comma-separated shots to write (default: all)")
    args = parser.parse_args()
    ONLY.update(t.strip() for t in args.tabs.split(",") if t.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdfleet-shots-") as tmp, sdfleet_up(Path(tmp)) as client:
        prepare(client, Path(tmp))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
            )
            try:
                for kind in SIZES:
                    tour(browser, client, args.out, kind)
            finally:
                browser.close()


if __name__ == "__main__":
    main()
