"""Commands that talk to a running server over HTTP: ``submit`` (generate images) and ``train``
(a LoRA), following the jobs to the end and saving their outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sdfleet.cli.app import (
    ModelOpt,
    console,
    fail,
)

# ============================================================================ submit


def submit(
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    server: Annotated[str, typer.Option(envvar="SDFLEET_SERVER")] = "http://127.0.0.1:7860",
    token: Annotated[
        str, typer.Option(envvar="SDFLEET_API_KEY", help="API key, if the server needs one.")
    ] = "",
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    steps: int = 20,
    size: Annotated[
        str | None,
        typer.Option(
            help="WIDTHxHEIGHT (default: the checkpoint's native size, from the server's registry)."
        ),
    ] = None,
    seed: int = -1,
    batch_size: int = 1,
    count: Annotated[int, typer.Option("--count", "-n", help="Number of jobs.")] = 1,
    sampler: str = "Euler a",
    cfg_scale: float = 7.0,
    model: ModelOpt = None,
    wait: Annotated[bool, typer.Option(help="Wait for the jobs and download the images.")] = True,
    out: Annotated[Path, typer.Option(help="Where to save the images.")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished jobs as JSON.")] = False,
) -> None:
    """Submit generation jobs to a running server, follow them, save the images."""
    params: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "sampler_name": sampler,
        "cfg_scale": cfg_scale,
        "model": model,
    }
    if size is not None:
        try:
            params["width"], params["height"] = (int(v) for v in size.lower().split("x", 1))
        except ValueError:
            raise fail("--size must look like 512x512") from None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server, headers=headers, timeout=30) as client:
        if size is None:
            side = _native_side(client, model)
            if side is not None:  # else the server's own default size
                params["width"] = params["height"] = side
        r = client.post("/v1/jobs", json={"jobs": [{"params": params} for _ in range(count)]})
        if r.status_code >= 400:
            raise fail(_error_text(r))
        ids = [j["id"] for j in r.json()["jobs"]]
        console.print(f"submitted {len(ids)} job(s): {', '.join(ids)}")
        if not wait:
            return
        finished = _follow(client, ids)
    saved = _save_outputs(server, headers, finished, out)
    if as_json:
        typer.echo(json.dumps(finished, indent=2))
    for path in saved:
        console.print(f"saved {path}")
    failed = [j for j in finished if j["state"] != "succeeded"]
    for j in failed:
        console.print(f"[red]{j['id']} {j['state']}:[/] {(j.get('error') or {}).get('message')}")
    if failed:
        raise typer.Exit(1)


TRAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def train(
    images: Annotated[
        Path,
        typer.Argument(
            help="Folder of training images (PNG/JPEG/WebP); a same-named .txt file next to one is its caption."
        ),
    ],
    base_model: Annotated[
        str, typer.Option("--base-model", "-m", help="Registry name of the base checkpoint.")
    ],
    name: Annotated[str, typer.Option("--name", help="Registry name of the LoRA it makes.")],
    trigger: Annotated[
        str | None, typer.Option("--trigger", help="The new concept's token (goes into the instance prompt).")
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt", help="Instance prompt (default: 'a photo of <trigger>'); captions override it."
        ),
    ] = None,
    server: Annotated[str, typer.Option(envvar="SDFLEET_SERVER")] = "http://127.0.0.1:7860",
    token: Annotated[
        str, typer.Option(envvar="SDFLEET_API_KEY", help="API key, if the server needs one.")
    ] = "",
    steps: int = 1000,
    resolution: Annotated[
        int | None,
        typer.Option(
            help="Training side in px (default: the base checkpoint's native size, from the server)."
        ),
    ] = None,
    rank: int = 8,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-4,
    batch_size: int = 1,
    seed: int = 0,
    train_text_encoder: bool = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (0: none).")] = 100,
    keep_checkpoints: int = 2,
    validation_prompt: Annotated[
        list[str] | None, typer.Option("--validation-prompt", help="Rendered at the end (repeatable).")
    ] = None,
    extra: Annotated[
        str | None, typer.Option("--params", help="More LoraTrainSpec fields as a JSON object.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
) -> None:
    """Train a LoRA on a folder of images: upload them, submit a train_lora job, follow its progress
    (step, loss, ETA) and print the name it is registered under (usable as <lora:NAME:1> at once)."""
    if not images.is_dir():
        raise fail(f"{images} is not a folder")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in TRAIN_IMAGE_SUFFIXES)
    if not files:
        raise fail(f"no {', '.join(TRAIN_IMAGE_SUFFIXES)} images in {images}")
    instance_prompt = prompt or (f"a photo of {trigger}" if trigger else None)
    if instance_prompt is None:
        raise fail("give --trigger or --prompt")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        refs = []
        for path in files:
            r = client.post("/v1/inputs", content=path.read_bytes())
            if r.status_code >= 400:
                raise fail(f"{path.name}: {_error_text(r)}")
            caption_file = path.with_suffix(".txt")
            caption = caption_file.read_text().strip() if caption_file.is_file() else None
            refs.append({"ref": r.json()["ref"], "caption": caption or None})
        params: dict[str, Any] = {
            "name": name,
            "base_model": base_model,
            "images": refs,
            "instance_prompt": instance_prompt,
            "trigger_word": trigger,
            "steps": steps,
            "rank": rank,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seed": seed,
            "train_text_encoder": train_text_encoder,
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints": keep_checkpoints,
            "validation_prompts": validation_prompt or [],
        }
        side = resolution if resolution is not None else _native_side(client, base_model)
        if side is not None:  # else the server's default (an unknown base model is refused at submit)
            params["resolution"] = side
        if extra:
            try:
                params.update(json.loads(extra))
            except (ValueError, TypeError) as exc:
                raise fail(f"--params is not a JSON object: {exc}") from None
        r = client.post("/v1/jobs", json={"kind": "train_lora", "params": params})
        if r.status_code >= 400:
            raise fail(_error_text(r))
        job_id = r.json()["id"]
        console.print(f"uploaded {len(refs)} image(s); training job {job_id}")
        if not wait:
            return
        job = _follow_training(client, job_id)
    if job["state"] != "succeeded":
        console.print(f"[red]{job_id} {job['state']}:[/] {(job.get('error') or {}).get('message')}")
        raise typer.Exit(1)
    lora = job["result"].get("lora") or {}
    training = job["result"].get("training") or {}
    resumed = training.get("resumed_from")
    console.print(
        f"trained {steps} steps in {job['engine_seconds']:.0f} s of worker time (${job['cost_usd']:.4f})"
        + (f", resumed from step {resumed}" if resumed else "")
    )
    if lora.get("name"):
        typer.echo(lora["name"])
        if lora.get("problem"):
            console.print(f"[yellow]{lora['problem']}[/]")
        console.print(f"use it as <lora:{lora['name']}:1>")
    else:
        raise fail(f"the LoRA was not registered: {lora.get('problem')}")


def _native_side(client: httpx.Client, model: str | None) -> int | None:
    """The side in px a checkpoint was trained at, as the server's registry says (``GET /v1/models/…``).

    Without a model name: the checkpoint jobs without one run on — the registry's first checkpoint, as the
    web page takes it. ``None`` when the server cannot say (no such model, no checkpoint registered, an
    older server): the caller then leaves the size to the server's defaults."""
    try:
        if model:
            r = client.get(f"/v1/models/{model}")
            found = r.json() if r.status_code == 200 else None
        else:
            r = client.get("/v1/models", params={"kind": "checkpoint"})
            listed = r.json().get("models") if r.status_code == 200 else None
            found = listed[0] if listed else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    side = found.get("resolution") if isinstance(found, dict) else None
    return side if isinstance(side, int) and not isinstance(side, bool) and side > 0 else None


def _follow_training(client: httpx.Client, job_id: str) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("queued", total=1.0, detail="")
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            p = job["progress"]
            detail = []
            if p.get("loss") is not None:
                detail.append(f"loss {p['loss']:.4f}")
            if p.get("it_per_s"):
                detail.append(f"{p['it_per_s']:.2f} it/s")
            if p.get("eta_seconds") is not None and job["state"] == "running":
                detail.append(f"ETA {p['eta_seconds']:.0f} s")
            if job["checkpoints"]:
                detail.append(f"checkpoint @{job['checkpoints'][-1]['step']}")
            label = (
                job["state"] if job["state"] != "queued" or not job.get("wait_reason") else "queued (waiting)"
            )
            progress.update(
                task,
                total=max(1, p["total"]),
                completed=p["step"] if job["state"] != "succeeded" else max(1, p["total"]),
                description=label,
                detail=", ".join(detail),
            )
            if job["state"] in ("succeeded", "failed", "canceled"):
                return dict(job)
            time.sleep(0.5)


def _error_text(r: httpx.Response) -> str:
    try:
        err = r.json()["error"]
        return f"{err['message']} (field {err['field']})" if err.get("field") else err["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code}: {r.text[:200]}"


def _follow(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {i: progress.add_task(f"{i[-8:]} queued", total=1.0) for i in ids}
        while len(done) < len(ids):
            for job_id in ids:
                if job_id in done:
                    continue
                job = client.get(f"/v1/jobs/{job_id}").json()
                label = (
                    job["state"]
                    if job["state"] != "queued" or not job.get("wait_reason")
                    else f"queued: {job['wait_reason']}"
                )
                progress.update(
                    tasks[job_id],
                    completed=job["progress"]["fraction"],
                    description=f"{job_id[-8:]} {label}"[:80],
                )
                if job["state"] in ("succeeded", "failed", "canceled"):
                    done[job_id] = job
            if len(done) < len(ids):
                time.sleep(0.25)
    return [done[i] for i in ids]


def _save_outputs(server: str, headers: dict[str, str], jobs: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with httpx.Client(headers=headers, timeout=60, follow_redirects=True) as client:
        for job in jobs:
            for o in job["outputs"]:
                ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
                    o["content_type"], "bin"
                )
                path = out / f"{job['id']}-{o['index']}.{ext}"
                path.write_bytes(client.get(o["url"]).raise_for_status().content)
                saved.append(path)
    return saved
