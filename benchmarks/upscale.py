"""Upscalers and SD upscale, measured side by side in one run.

1. **Megapixels per second of each upscaler family** on this machine's device: ESRGAN (RRDBNet at the size
   of ``RealESRGAN_x4plus`` / ``4x-UltraSharp``: 23 blocks, 64 features, growth 32), Real-ESRGAN Compact
   (``realesr-general-x4v3``: 64 features, 32 convolutions), both ×4 with random weights (speed does not
   depend on the weights) through sdfleet's own loaders and tiled inference, and a Lanczos resize for
   reference. Output megapixels per second of wall time, best of ``--repeats``.
2. **SD upscale on 1 vs N workers**: ``sdfleet up --engine fake --workers N`` — a real orchestrator (SQLite,
   local blobs) and N worker processes; each tile's img2img runs on the fake engine with ``--step-seconds`` per step (a stand-in for a
   GPU's step time: this machine has no GPU, and real diffusion on 2 CPU cores would measure the CPU, not the
   fan-out). The upscale stage runs a real Lanczos resize. Wall time from submit to the parent's success,
   and the speed-up over one worker.

    python benchmarks/upscale.py --size 128 --workers 1 4 8 --step-seconds 0.05 --steps 20
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

from sdfleet.engine.upscale.detect import NetInfo
from sdfleet.engine.upscale.loader import load_upscaler
from sdfleet.engine.upscale.nets import build_net

FAMILIES = {
    "ESRGAN ×4 (RRDB, 23 blocks)": NetInfo(family="esrgan", scale=4, features=64, growth=32, blocks=23),
    "Real-ESRGAN Compact ×4 (32 convs)": NetInfo(family="srvgg", scale=4, features=64, convs=32),
}


def _picture(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def bench_families(size: int, repeats: int, device: str, folder: Path) -> list[tuple[str, float, float]]:
    """(family, output megapixels, best megapixels per second) of each family on a ``size``² picture."""
    picture = _picture(size)
    rows = []
    for name, info in FAMILIES.items():
        path = folder / f"{info.family}.safetensors"
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in build_net(info).state_dict().items()}, str(path))
        net = load_upscaler(path, device=device, use_spandrel=False)
        net.upscale(_picture(32))  # warm
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = net.upscale(picture)
            best = min(best, time.perf_counter() - start)
        megapixels = out.width * out.height / 1e6
        rows.append((name, megapixels, megapixels / best))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = picture.resize((size * 4, size * 4), Image.Resampling.LANCZOS)
        best = min(best, time.perf_counter() - start)
    rows.append(("Lanczos ×4 (a resize)", out.width * out.height / 1e6, out.width * out.height / 1e6 / best))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sd_upscale_seconds(workers: int, args: argparse.Namespace, folder: Path) -> tuple[float, int]:
    """Wall seconds of one SD upscale on ``workers`` workers, and its tile count: ``sdfleet up --engine
    fake --workers N`` — the orchestrator and each worker a process of its own, as in a fleet."""
    port = _free_port()
    data = folder / f"data-{workers}"
    env = {
        **os.environ,
        "SDFLEET_LOG_LEVEL": "warning",
        "SDFLEET_HEARTBEAT_SECONDS": "0.5",
        "SDFLEET_REAPER_INTERVAL": "0.2",
        "SDFLEET_WORKER_FAKE_STEP_SECONDS": str(args.step_seconds),
    }
    command = [sys.executable, "-m", "sdfleet", "up", "--engine", "fake", "--workers", str(workers)]
    command += ["--port", str(port), "--data-dir", str(data)]
    log = (folder / f"up-{workers}.log").open("wb")
    up = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    buf = io.BytesIO()
    _picture(args.picture).save(buf, format="PNG")
    body = {
        "kind": "sd_upscale",
        "params": {
            "image": base64.b64encode(buf.getvalue()).decode(),
            "upscaler": "Lanczos",
            "scale": args.scale,
            "overlap": args.overlap,
            "generation": {
                "prompt": "a castle",
                "steps": args.steps,
                "width": args.tile,
                "height": args.tile,
            },
        },
    }
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            deadline = time.monotonic() + 120
            while True:  # the orchestrator up and every worker registered
                if up.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sdfleet up did not start: {(folder / f'up-{workers}.log').read_text()}"
                    )
                try:
                    online = api.get("/v1/admin/workers").json()["workers"]
                    if len([w for w in online if w["state"] == "active"]) >= workers:
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                time.sleep(0.2)
            start = time.perf_counter()
            job = api.post("/v1/jobs", json=body).json()
            while True:
                state = api.get(f"/v1/jobs/{job['id']}").json()
                if state["state"] in ("succeeded", "failed", "canceled"):
                    break
                time.sleep(0.02)
            wall = time.perf_counter() - start
            if state["state"] != "succeeded":
                raise RuntimeError(f"the SD upscale ended {state['state']}: {state['error']}")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
    return wall, int(state["progress"]["total"]) - 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="input side of the upscaler figures (px)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--picture", type=int, default=512, help="SD upscale: the picture's side (px)")
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with console.status("upscaler families…"):
            rows = bench_families(args.size, args.repeats, args.device, folder)
        table = Table(title=f"upscalers on {args.device}, {args.size}² → ×4")
        for column in ("family", "output MP", "MP/s", "× Lanczos"):
            table.add_column(column, justify="right" if column != "family" else "left")
        lanczos = rows[-1][2]
        for name, megapixels, rate in rows:
            table.add_row(name, f"{megapixels:.2f}", f"{rate:.3g}", f"{rate / lanczos:.3g}")
        console.print(table)
        results = []
        for n in args.workers:
            with console.status(f"SD upscale on {n} worker(s)…"):
                results.append((n, *sd_upscale_seconds(n, args, folder)))
        one = results[0][1]
        table = Table(
            title=f"SD upscale ×{args.scale:g} of {args.picture}² in {args.tile}² tiles "
            f"({args.steps} steps × {args.step_seconds:g} s per tile)"
        )
        for column in ("workers", "tiles", "wall s", "speed-up"):
            table.add_column(column, justify="right")
        for n, wall, tiles in results:
            table.add_row(str(n), str(tiles), f"{wall:.2f}", f"{one / wall:.2f}×")
        console.print(table)


if __name__ == "__main__":
    main()
