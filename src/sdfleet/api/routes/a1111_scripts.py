"""A1111's selectable scripts on the queue: a txt2img/img2img call with ``script_name`` runs as a batch of
ordinary generation jobs (one per prompt-matrix combination, prompt line, X/Y/Z cell, loopback pass), all
submitted at once so they spread over the free workers, and the call answers when all of them are done —
with A1111's grid first when the script draws one (drawn here with PIL from the jobs' images).

The plans are pure (:mod:`sdfleet.a1111.scripts`, :mod:`sdfleet.a1111.xyz`); this module maps each variant
with :func:`~sdfleet.a1111.mapping.map_request` as any A1111 request, submits through the job service, waits
(:mod:`~sdfleet.api.routes.waiting`) and assembles A1111's answer. Loopback feeds each pass's image to the
next pass, so its passes are submitted one round at a time (the batches of one round run in parallel)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request, Response
from PIL import Image, PngImagePlugin

from sdfleet import __version__
from sdfleet.a1111.api import Img2ImgRequest, ProcessingRequest
from sdfleet.a1111.catalog import Catalog
from sdfleet.a1111.grids import (
    GridAnnotation,
    GridColours,
    combine_grid,
    draw_grid_annotations,
    draw_prompt_matrix,
    grid_fits,
    grid_rows,
    image_grid,
)
from sdfleet.a1111.info import MappedRequest, OutputRecord, build_info
from sdfleet.a1111.mapping import check_request_sizes, map_request
from sdfleet.a1111.options import effective_options, validate_option_updates
from sdfleet.a1111.outpaint import plan_poor_mans_outpainting
from sdfleet.a1111.outpaint_mk2 import Expansion, plan_expansion, read_mk2_args
from sdfleet.a1111.script_args import Variant, arg_error, read_script_args
from sdfleet.a1111.scripts import (
    LOOPBACK,
    OUTPAINTING_MK2,
    POOR_MANS_OUTPAINTING,
    PROMPT_MATRIX,
    PROMPTS_FROM_FILE,
    SD_UPSCALE,
    XYZ_PLOT,
    find_script,
    plan_loopback,
    plan_prompt_matrix,
    plan_prompts_from_file,
)
from sdfleet.a1111.xyz import plan_xyz
from sdfleet.api.deps import AppContext
from sdfleet.api.routes.waiting import CLIENT_GONE_STATUS, wait_for_jobs
from sdfleet.api.views import is_detected_map
from sdfleet.domain import Job, JobKind, JobState
from sdfleet.errors import EngineError, LimitExceeded, ServiceUnavailable, ValidationError
from sdfleet.jobs.inputs import ImageLimits, InputImages, decode_image
from sdfleet.jobs.types import JobRequest
from sdfleet.specs.sdupscale import SdUpscaleSpec
from sdfleet.specs.upscale import PIXEL_UPSCALERS
from sdfleet.wire import JobCreate

log = logging.getLogger("sdfleet.a1111")

_RNG = random.SystemRandom()

SCRIPT_REQUEST_LABEL = "script_request"
"""The label every job of one script call carries (the call's task id): ``/interrupt`` stops them together."""


class ClientGone(Exception):
    """The client hung up while the script's jobs ran (they are canceled)."""


@dataclass(slots=True)
class Picture:
    """One output image of a script's job, with what ``info`` says of it."""

    data: bytes
    seed: int | None
    infotext: str | None
    prompt: str
    negative_prompt: str


@dataclass(slots=True)
class Done:
    """A finished job of the batch and its pictures (none when it was canceled before drawing one)."""

    mapped: MappedRequest
    job: Job
    pictures: list[Picture]


@dataclass(slots=True)
class ScriptRun:
    """One script call: the request, its mapping without the script, and the caller's settings."""

    kind: JobKind
    body: ProcessingRequest
    request: Request
    ctx: AppContext
    tenant: str
    options: dict[str, Any]
    catalog: Catalog
    base: MappedRequest
    settings: dict[str, Any]
    notes: list[str]
    rounds: int = 0

    def variant_request(self, variant: Variant, index: int) -> ProcessingRequest:
        """The request of one job: the script's changes over the call's own fields (explicitly set, so an
        ``infotext`` never overrides them), no script, and a task id of its own."""
        update: dict[str, Any] = {**variant.fields, "script_name": None, "script_args": []}
        if variant.settings:
            update["override_settings"] = {**(self.body.override_settings or {}), **variant.settings}
        update["force_task_id"] = self.base.task_id if index == 0 else f"{self.base.task_id}-{index}"
        return self.body.model_copy(update=update)

    async def run(self, variants: Sequence[Variant]) -> list[Done]:
        """Map, submit (all or none) and wait for one job per variant; they answer in order."""
        offset = self.rounds * 10_000
        self.rounds += 1
        requests = [self.variant_request(v, offset + i) for i, v in enumerate(variants)]
        for one in requests:  # a line of Prompts from file or an S/R value may make a prompt too long
            check_request_sizes(one, self.ctx.settings.limits)
        mapped = [
            map_request(self.kind, one, options=self.options, catalog=self.catalog, rng=_RNG)
            for one in requests
        ]
        ctx, tenant = self.ctx, self.tenant
        inputs = ctx.preparer.inputs(tenant)
        labels = {
            "api": "a1111",
            "script": self.body.script_name or "",
            SCRIPT_REQUEST_LABEL: self.base.task_id,
        }
        prepared = []
        for m in mapped:
            body = JobCreate(kind=self.kind, params=m.spec, labels={**labels, "task_id": m.task_id})
            prepared.append(await _prepare(ctx, tenant, body, inputs))
        await inputs.store()
        submitted = await ctx.jobs.submit(tenant, prepared)
        ids = [s.job.id for s in submitted]
        for m, job_id in zip(mapped, ids, strict=True):
            await ctx.a1111.record_task(tenant, m.task_id, job_id)
        log.info(
            "a1111.script_submitted job_id=%s jobs=%d tenant=%s script=%s",
            ids[0],
            len(ids),
            tenant,
            self.body.script_name,
        )
        try:
            done = await wait_for_jobs(ctx, self.request, ids, tenant)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish_tasks(mapped, ids))
        if done is None:
            raise ClientGone
        results = []
        for m, job in zip(mapped, done, strict=True):
            _raise_failure(job)
            results.append(Done(m, job, await self._pictures(m, job)))
            self.notes += [n for n in m.notes if n not in self.notes]
        return results

    async def _finish_tasks(self, mapped: Sequence[MappedRequest], ids: Sequence[str]) -> None:
        for m, job_id in zip(mapped, ids, strict=True):
            await self.ctx.a1111.finish_task(self.tenant, m.task_id, job_id)

    async def _pictures(self, mapped: MappedRequest, job: Job) -> list[Picture]:
        outputs = sorted(await self.ctx.queries.outputs(job.id), key=lambda o: o.index)
        return [
            Picture(
                data=await self.ctx.blobs.get(o.blob_key),
                seed=o.seed,
                infotext=o.infotext,
                prompt=mapped.prompt,
                negative_prompt=mapped.negative_prompt,
            )
            for o in outputs
            if not is_detected_map(job, o)  # a script's grids and loops take the pictures only
        ]

    def colours(self) -> GridColours:
        """The grid colours of the caller's settings."""
        s = self.settings
        return GridColours(
            background=str(s.get("grid_background_color") or "#ffffff"),
            active=str(s.get("grid_text_active_color") or "#000000"),
            inactive=str(s.get("grid_text_inactive_color") or "#999999"),
        )


async def run_script(
    kind: JobKind,
    body: ProcessingRequest,
    request: Request,
    ctx: AppContext,
    tenant: str,
    *,
    options: dict[str, Any],
    catalog: Catalog,
) -> dict[str, Any] | Response:
    """Run ``body.script_name`` as a batch of jobs and answer as A1111 answers the script's call."""
    assert body.script_name
    is_img2img = kind == JobKind.IMG2IMG
    script = find_script(body.script_name, is_img2img)
    args, notes = read_script_args(script.title, script.arg_specs(is_img2img), body.script_args)
    plain = body.model_copy(update={"script_name": None, "script_args": []})
    base = map_request(kind, plain, options=options, catalog=catalog, rng=_RNG)
    settings = effective_options(options)
    settings.update(base.override_settings)
    run = ScriptRun(kind, body, request, ctx, tenant, options, catalog, base, settings, [*base.notes, *notes])
    try:
        if script is PROMPT_MATRIX:
            outcome = await _prompt_matrix(run, args)
        elif script is PROMPTS_FROM_FILE:
            outcome = await _prompts_from_file(run, args)
        elif script is XYZ_PLOT:
            outcome = await _xyz(run, args, is_img2img)
        elif script is LOOPBACK:
            outcome = await _loopback(run, args)
        elif script is POOR_MANS_OUTPAINTING:
            outcome = await _poor_mans_outpainting(run, args)
        elif script is OUTPAINTING_MK2:
            outcome = await _outpainting_mk2(run, args)
        elif script is SD_UPSCALE:
            outcome = await _sd_upscale(run, args)
        else:  # pragma: no cover - every listed script has a runner
            raise ValidationError(f"Script '{body.script_name}' not found", field="script_name")
    except ClientGone:
        return Response(status_code=CLIENT_GONE_STATUS)
    if not base.restore_afterwards and base.override_settings:  # as for a call without a script
        kept, _ = validate_option_updates(base.override_settings, catalog, strict_checkpoint=False)
        if kept:
            await ctx.a1111.merge_options(tenant, kept)
    return _answer(run, outcome)


# ===================================================================== the scripts


Grid = tuple[str, str]  # (base64 image, its infotext)


@dataclass(slots=True)
class Outcome:
    """What a script answers: its grids (first), the images it shows, and the images ``info`` describes
    (A1111's X/Y/Z plot describes every cell even when it returns only the grid)."""

    grids: list[Grid]
    shown: list[Picture]
    results: list[Done]
    described: list[Picture] | None = None


async def _prompt_matrix(run: ScriptRun, args: list[Any]) -> Outcome:
    base = run.base
    plan = plan_prompt_matrix(
        args,
        prompt=base.prompt,
        negative_prompt=base.negative_prompt,
        seed=base.spec.seed,
        subseed=base.spec.subseed,
        max_jobs=run.ctx.settings.limits.max_jobs_per_batch,
    )
    results = await run.run(plan.variants)
    pictures = [p for r in results for p in r.pictures]
    grids: list[Grid] = []
    if len(pictures) == len(plan.variants):  # an interrupted matrix has no grid
        colours, max_pixels = run.colours(), _grid_pixels(run)

        def draw() -> Image.Image | None:
            if not grid_fits([_size(p.data) for p in pictures], max_pixels):
                return None
            images = [_open(p.data) for p in pictures]
            grid = image_grid(images, rows=plan.rows, colours=colours)
            width, height = images[0].size
            return draw_prompt_matrix(grid, width, height, plan.parts, plan.margin, colours)

        grid = await asyncio.to_thread(draw)
        if grid is not None:
            infotext = pictures[0].infotext or ""
            grids.append((await asyncio.to_thread(_encode, grid, infotext), infotext))
    return Outcome(grids, pictures, results)


async def _prompts_from_file(run: ScriptRun, args: list[Any]) -> Outcome:
    base, body = run.base, run.body
    variants = plan_prompts_from_file(
        args,
        prompt=base.prompt,
        negative_prompt=base.negative_prompt,
        seed=body.seed if body.seed is not None else -1,
        batch_size=base.spec.batch_size,
        n_iter=base.spec.n_iter,
        catalog=run.catalog,
        rng=_RNG,
        max_jobs=run.ctx.settings.limits.max_jobs_per_batch,
    )
    results = await run.run(variants)
    return Outcome([], [p for r in results for p in r.pictures], results)


async def _xyz(run: ScriptRun, args: list[Any], is_img2img: bool) -> Outcome:
    base, body = run.base, run.body
    keep_random = bool(args[12])
    seed = (body.seed if body.seed is not None else -1) if keep_random else base.spec.seed
    plan = plan_xyz(
        args,
        is_img2img=is_img2img,
        prompt=base.prompt,
        negative_prompt=base.negative_prompt,
        steps=base.spec.steps,
        seed=seed,
        catalog=run.catalog,
    )
    nx, ny, nz = plan.shape
    limit = run.ctx.settings.limits.max_jobs_per_batch
    if len(plan.variants) > limit:
        raise LimitExceeded(
            f"script_args: an X/Y/Z plot of {nx}×{ny}×{nz} = {len(plan.variants)} images, the limit is {limit}",
            field="script_args",
        )
    for variant in plan.variants:  # A1111 draws the first image of each cell
        variant.fields.update(batch_size=1, n_iter=1)
    if base.spec.images_per_job > 1:
        run.notes.append("X/Y/Z plot: one image per cell (A1111's grid shows the first image of each cell)")
    results = await run.run(plan.variants)
    cells = [r.pictures[0] if r.pictures else None for r in results]
    pictures = [c for c in cells if c is not None]
    grids: list[Grid] = []
    if pictures:
        colours, max_pixels = run.colours(), _grid_pixels(run)

        def draw() -> list[Image.Image]:
            first = _size(pictures[0].data)
            if not grid_fits([_size(c.data) if c else first for c in cells], max_pixels):
                return []
            images = [_open(c.data) if c else Image.new("RGB", first) for c in cells]
            subs = []
            for iz in range(nz):
                block = images[iz * nx * ny : (iz + 1) * nx * ny]
                sub = image_grid(block, rows=ny, colours=colours)
                if plan.draw_legend:
                    w, h = map(max, zip(*(i.size for i in block), strict=False))
                    hor = [[GridAnnotation(x)] for x in plan.x_labels]
                    ver = [[GridAnnotation(y)] for y in plan.y_labels]
                    sub = draw_grid_annotations(sub, w, h, hor, ver, plan.margin, colours)
                subs.append(sub)
            main = image_grid(subs, rows=1, colours=colours)
            if plan.draw_legend:
                w, h = map(max, zip(*(s.size for s in subs), strict=False))
                titles = [[GridAnnotation(z)] for z in plan.z_labels]
                main = draw_grid_annotations(main, w, h, titles, [[GridAnnotation()]], 0, colours)
            return [main, *subs] if plan.include_sub_grids else [main]

        drawn = await asyncio.to_thread(draw)
        extra = ", ".join(f"{k}: {json.dumps(v) if ',' in v else v}" for k, v in plan.infotext.items())
        infotext = _with_params(pictures[0].infotext or "", extra)
        for grid in drawn:
            grids.append((await asyncio.to_thread(_encode, grid, infotext), infotext))
    shown = [] if grids and not plan.include_lone_images else pictures
    return Outcome(grids, shown, results, described=pictures)


async def _loopback(run: ScriptRun, args: list[Any]) -> Outcome:
    plan = plan_loopback(args)
    run.notes += plan.notes
    base, body = run.base, run.body
    assert isinstance(body, Img2ImgRequest)
    chains = max(1, base.spec.n_iter)
    initial = base.denoising_strength
    current = [list((body.init_images or [])[:1]) for _ in range(chains)]
    history: list[list[Picture]] = [[] for _ in range(chains)]
    results: list[Done] = []
    for loop in range(plan.loops):
        variants = []
        for chain in range(chains):
            fields: dict[str, Any] = {
                "init_images": current[chain],
                "seed": base.spec.seed + chain * plan.loops + loop,
                "denoising_strength": plan.strength(initial, loop),
                "batch_size": 1,
                "n_iter": 1,
            }
            if loop > 0:
                fields["inpainting_fill"] = 1  # "original": the next pass starts from the last image
            variants.append(Variant(fields=fields))
        done = await run.run(variants)
        results += done
        if any(not d.pictures for d in done):  # interrupted: answer with what was drawn
            break
        for chain, d in enumerate(done):
            history[chain].append(d.pictures[0])
            current[chain] = [base64.b64encode(d.pictures[0].data).decode()]
    shown = history[0] if chains == 1 else [h[-1] for h in history if h]
    grids: list[Grid] = []
    fits = grid_fits([_size(p.data) for p in shown], _grid_pixels(run))
    if len(shown) > 1 and run.settings.get("return_grid", True) and fits:
        colours = run.colours()
        grid = await asyncio.to_thread(
            lambda: image_grid([_open(p.data) for p in shown], rows=1, colours=colours)
        )
        infotext = shown[0].infotext or ""
        grids.append((await asyncio.to_thread(_encode, grid, infotext), infotext))
    return Outcome(grids, shown, results)


async def _poor_mans_outpainting(run: ScriptRun, args: list[Any]) -> Outcome:
    base, body = run.base, run.body
    assert isinstance(body, Img2ImgRequest)
    init = _init_image(run, (body.init_images or [""])[0])
    width, height = base.spec.width, base.spec.height
    limit = run.ctx.settings.limits.max_jobs_per_batch
    plan = await asyncio.to_thread(plan_poor_mans_outpainting, init, width, height, args, max_jobs=limit)
    variants = []
    for index in range(len(plan.work)):
        tile, mask = plan.tile(index).image, plan.masks[index]
        fields: dict[str, Any] = {
            "init_images": [_encode(tile, "")],
            "mask": _encode(mask, ""),
            "mask_blur": plan.mask_blur,
            "inpainting_fill": plan.inpainting_fill,
            "inpaint_full_res": False,
            "seed": base.spec.seed + index,
            "batch_size": 1,
            "n_iter": 1,
        }
        variants.append(Variant(fields=fields))
    results = await run.run(variants)
    drawn = [r.pictures[0] if r.pictures else None for r in results]

    def combine() -> bytes:
        for index, picture in enumerate(drawn):  # a tile that was not drawn stays black, as in A1111
            tile = plan.tile(index)
            tile.image = _open(picture.data) if picture else Image.new("RGB", (tile.width, height))
        first = next((p for p in drawn if p is not None), None)
        return base64.b64decode(_encode(combine_grid(plan.grid), first.infotext or "" if first else ""))

    data = await asyncio.to_thread(combine)
    first = next((p for p in drawn if p is not None), None)
    picture = Picture(
        data=data,
        seed=first.seed if first else base.spec.seed,
        infotext=first.infotext if first else None,
        prompt=base.prompt,
        negative_prompt=base.negative_prompt,
    )
    return Outcome([], [picture], results)


async def _outpainting_mk2(run: ScriptRun, args: list[Any]) -> Outcome:
    """One chain per picture (``batch_size`` × ``n_iter``, chain ``k`` at seed + ``k`` for all its sides),
    one round of inpainting jobs per side: a side's job starts from the picture the last side made."""
    base, body = run.base, run.body
    assert isinstance(body, Img2ImgRequest)
    init = _init_image(run, (body.init_images or [""])[0])
    mk2 = read_mk2_args(args, init.size)
    chains = base.spec.images_per_job
    limit = run.ctx.settings.limits.max_jobs_per_batch
    if chains * len(mk2.sides) > limit:
        raise arg_error(
            3,
            f"{chains} pictures × {len(mk2.sides)} sides = {chains * len(mk2.sides)} jobs, the limit is {limit}",
        )
    width, height = base.spec.width, base.spec.height
    pictures = [init] * chains
    results: list[Done] = []
    last: list[Picture | None] = [None] * chains
    for side, pixels in mk2.sides:

        def grow(images: list[Image.Image], side: str = side, pixels: int = pixels) -> list[Expansion]:
            plans: dict[int, Expansion] = {}  # the first side grows one picture, whatever the batch
            for image in images:
                if id(image) not in plans:
                    plans[id(image)] = plan_expansion(
                        image,
                        side,
                        pixels,
                        width=width,
                        height=height,
                        mask_blur=mk2.mask_blur,
                        noise_q=mk2.noise_q,
                        color_variation=mk2.color_variation,
                    )
            return [plans[id(image)] for image in images]

        expansions = await asyncio.to_thread(grow, pictures)
        variants = []
        for chain, expansion in enumerate(expansions):
            job_w, job_h = expansion.job_size
            fields: dict[str, Any] = {
                "init_images": [_encode(expansion.init, "")],
                "mask": _encode(expansion.mask, ""),
                "mask_blur": mk2.mask_blur * 4,
                "inpainting_fill": 1,  # "original": the sampler starts from the matched noise
                "inpaint_full_res": False,
                "width": job_w,
                "height": job_h,
                "seed": base.spec.seed + chain,
                "batch_size": 1,
                "n_iter": 1,
            }
            variants.append(Variant(fields=fields))
        done = await run.run(variants)
        results += done
        drawn = [d.pictures[0] if d.pictures else None for d in done]
        last = [p or before for p, before in zip(drawn, last, strict=True)]
        pictures = await asyncio.to_thread(_grown, expansions, drawn)
        if any(p is None for p in drawn):  # interrupted: answer with what was drawn
            break

    def encode() -> list[Picture]:
        shown = []
        for chain, image in enumerate(pictures):
            job = last[chain]
            infotext = job.infotext if job else None
            shown.append(
                Picture(
                    data=base64.b64decode(_encode(image, infotext or "")),
                    seed=job.seed if job else base.spec.seed + chain,
                    infotext=infotext,
                    prompt=base.prompt,
                    negative_prompt=base.negative_prompt,
                )
            )
        return shown

    shown = await asyncio.to_thread(encode)
    grids: list[Grid] = []
    fits = grid_fits([image.size for image in pictures], _grid_pixels(run))
    if len(shown) > 1 and run.settings.get("return_grid", True) and fits:
        colours = run.colours()
        rows = grid_rows(len(pictures), base.spec.batch_size, run.settings)
        grid = await asyncio.to_thread(image_grid, pictures, rows, colours)
        infotext = shown[0].infotext or ""
        grids.append((await asyncio.to_thread(_encode, grid, infotext), infotext))
    return Outcome(grids, shown, results)


def _grown(expansions: Sequence[Expansion], drawn: Sequence[Picture | None]) -> list[Image.Image]:
    """Each picture grown by its side: the job's image pasted in (none drawn: the noise stays)."""
    return [e.finish(_open(p.data) if p else None) for e, p in zip(expansions, drawn, strict=True)]


async def _sd_upscale(run: ScriptRun, args: list[Any]) -> Outcome:
    """A1111's SD upscale as one fan-out parent job (``sd_upscale``): the upscale, then every tile's img2img
    on whichever workers are free, the seams blended — the call waits for the parent."""
    base, body, ctx, tenant = run.base, run.body, run.ctx, run.tenant
    assert isinstance(body, Img2ImgRequest)
    if not base.spec.init_images:
        raise ValidationError("SD upscale needs an image in init_images", field="init_images")
    _, overlap, wanted, scale = args
    upscaler = _sd_upscaler(run, wanted)
    if base.spec.n_iter > 1 or base.spec.batch_size > 1:
        run.notes.append("SD upscale makes one picture per call here; batch_size and n_iter were set to 1")
    spec = SdUpscaleSpec(
        image=base.spec.init_images[0],
        generation=base.spec.model_copy(
            update={"init_images": [], "mask": None, "batch_size": 1, "n_iter": 1}
        ),
        upscaler=upscaler,
        scale=scale,
        overlap=overlap,
    )
    labels = {
        "api": "a1111",
        "script": SD_UPSCALE.title,
        SCRIPT_REQUEST_LABEL: base.task_id,
        "task_id": base.task_id,
    }
    inputs = ctx.preparer.inputs(tenant)
    fields = {"upscaler": "script_args.2", "scale": "script_args.3", "image": "init_images.0"}
    try:
        prepared = await _prepare(
            ctx, tenant, JobCreate(kind=JobKind.SD_UPSCALE, params=spec, labels=labels), inputs
        )
    except ValidationError as exc:
        if exc.field in fields:
            exc = type(exc)(f"{fields[exc.field]}: {exc.message}", field=fields[exc.field])
        raise exc from None
    await inputs.store()
    [submitted] = await ctx.jobs.submit(tenant, [prepared])
    parent = submitted.job
    await ctx.a1111.record_task(tenant, base.task_id, parent.id)
    log.info("a1111.sd_upscale_submitted job_id=%s tenant=%s upscaler=%s", parent.id, tenant, upscaler)
    try:
        done = await wait_for_jobs(ctx, run.request, [parent.id], tenant)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(ctx.a1111.finish_task(tenant, base.task_id, parent.id))
    if done is None:
        raise ClientGone
    [job] = done
    _raise_failure(job)
    pictures = await run._pictures(base, job)
    return Outcome([], pictures, [Done(base, job, pictures)])


def _sd_upscaler(run: ScriptRun, wanted: Any) -> str:
    """SD upscale's upscaler argument: an index into ``/sdapi/v1/upscalers`` (A1111 sends the index), or a
    name (a built-in resize, a registered upscaler, or A1111's name for it)."""
    names = list(PIXEL_UPSCALERS) + sorted((m.name for m in run.catalog.upscalers), key=str.lower)
    if wanted is None:
        return names[0]
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if 0 <= wanted < len(names):
            return names[wanted]
        raise arg_error(
            2, f"Upscaler {wanted} is not an index of the {len(names)} upscalers (/sdapi/v1/upscalers)"
        )
    if isinstance(wanted, str):
        for name in names:
            if name.lower() == wanted.strip().lower():
                return name
        found = run.catalog.upscaler(wanted.strip())
        if found is not None:
            return found.name
        raise arg_error(2, f"no upscaler named {wanted!r}: one of {', '.join(names)}")
    raise arg_error(2, "Upscaler must be the index or the name of an upscaler")


# ===================================================================== helpers


def _init_image(run: ScriptRun, value: str) -> Image.Image:
    limits = ImageLimits.generation(run.ctx.settings.limits)
    try:
        return _open(decode_image(value, "init_images.0", limits).data)
    except LimitExceeded:
        raise
    except (ValidationError, OSError, ValueError) as exc:
        raise ValidationError(f"Invalid encoded image (init_images.0): {exc}", field="init_images.0") from exc


async def _prepare(ctx: AppContext, tenant: str, body: JobCreate, inputs: InputImages) -> JobRequest:
    try:
        return await ctx.preparer.prepare(tenant, body, params_prefix="", inputs=inputs)
    except LimitExceeded as exc:
        if exc.field and exc.field.startswith(("init_images.", "mask")):
            raise LimitExceeded(f"{exc.field}: {exc.message}", field=exc.field) from exc
        raise
    except ValidationError as exc:
        if exc.field and exc.field.startswith(("init_images.", "mask")):
            raise ValidationError(
                f"Invalid encoded image ({exc.field}): {exc.message}", field=exc.field
            ) from exc
        raise


def _raise_failure(job: Job) -> None:
    if job.state in (JobState.SUCCEEDED, JobState.CANCELED):
        return
    message = job.error_message or "the job failed"
    log.warning("a1111.script_failed job_id=%s code=%s", job.id, job.error_code)
    if job.error_code == "expired":
        raise ServiceUnavailable(message)
    raise EngineError(message, retryable=False)


def _grid_pixels(run: ScriptRun) -> float:
    """The largest grid drawn: the caller's ``img_max_size_mp``, within the deployment's
    ``max_upscale_pixels`` (the orchestrator draws it in its own memory)."""
    value = run.settings.get("img_max_size_mp", 200)
    asked = float(value) * 1_000_000 if isinstance(value, int | float) else 200e6
    return min(asked, float(run.ctx.settings.limits.max_upscale_pixels))


def _size(data: bytes) -> tuple[int, int]:
    """An image's size from its header (nothing decoded)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def _encode(image: Image.Image, infotext: str) -> str:
    """A grid as A1111's API sends it: base64 PNG with the infotext in its ``parameters`` chunk."""
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def _with_params(infotext: str, extra: str) -> str:
    """``extra`` added to the parameters line (the last line) of an infotext."""
    if not infotext:
        return extra
    return f"{infotext}, {extra}"


def _answer(run: ScriptRun, outcome: Outcome) -> dict[str, Any]:
    grids, results = outcome.grids, outcome.results
    pictures = outcome.described if outcome.described is not None else outcome.shown
    base = run.base
    first = results[0].job
    info = build_info(
        base,
        [OutputRecord(seed=p.seed, infotext=p.infotext) for p in pictures],
        job_timestamp=datetime.fromtimestamp(first.created_at).strftime("%Y%m%d%H%M%S"),
        version=f"sdfleet {__version__}",
        model=run.catalog.checkpoint(base.spec.model) if base.spec.model else None,
        vae=run.catalog.vae(base.spec.vae) if base.spec.vae else None,
        extra={
            "job_id": first.id,
            "job_ids": [r.job.id for r in results],
            "script": run.body.script_name,
            "interrupted": any(r.job.state == JobState.CANCELED for r in results),
            "engine_seconds": round(sum(r.job.engine_seconds for r in results), 4),
            "cost_usd": round(sum(r.job.cost_usd for r in results), 8),
        },
    )
    info["all_prompts"] = [p.prompt for p in pictures]
    info["all_negative_prompts"] = [p.negative_prompt for p in pictures]
    if pictures:
        info["prompt"], info["negative_prompt"] = pictures[0].prompt, pictures[0].negative_prompt
    info["infotexts"] = [g[1] for g in grids] + [p.infotext or "" for p in pictures]
    info["index_of_first_image"] = len(grids)
    info["sdfleet"]["notes"] = list(run.notes)
    images = [g[0] for g in grids] + [base64.b64encode(p.data).decode() for p in outcome.shown]
    parameters = dict(base.parameters)
    parameters["script_name"] = run.body.script_name
    parameters["script_args"] = list(run.body.script_args or [])
    log.info(
        "a1111.script_answered job_id=%s jobs=%d images=%d grids=%d",
        first.id,
        len(results),
        len(pictures),
        len(grids),
    )
    return {
        "images": images if base.send_images else [],
        "parameters": parameters,
        "info": json.dumps(info, default=lambda _: None),
    }
