"""``DiffusersEngine``: the real engine behind :class:`sdfleet.engine.base.Engine`.

It drives the denoising loop itself on a loaded checkpoint's diffusers components (UNet, VAE, text
encoders) with a diffusers scheduler, which is what lets it do what a pipeline call cannot: the A1111
prompt language with per-step conditioning (prompt editing, alternation, ``AND``), per-image seeds for
both the initial and the per-step noise, variation seeds, A1111's inpainting (fill modes, full-resolution
crops, exact paste-back), hires fix and the SDXL refiner hand-off, progress with cheap previews on every
step and interruption between steps. The per-step work is the same UNet call and scheduler step a
diffusers pipeline makes (see ``benchmarks/engine_overhead.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdfleet.a1111 import LoraTag
from sdfleet.domain import Arch, GenerationSpec, JobKind
from sdfleet.engine.base import (
    EngineCapabilities,
    GeneratedImage,
    GenerationResult,
    OnStep,
    ShouldStop,
)
from sdfleet.engine.controlnet.adapter import LoadedAdapter
from sdfleet.engine.controlnet.adapter_pass import AdapterPass
from sdfleet.engine.controlnet.apply import ControlPass, pass_pictures
from sdfleet.engine.controlnet.ipadapter import IPAdapters
from sdfleet.engine.controlnet.loader import ControlNetPool, LoadedControlNet
from sdfleet.engine.pool import NetPool
from sdfleet.engine.sd import conditioning, hires, images, samplers, seeds
from sdfleet.engine.sd.checkpoints import SDXL, SDXL_REFINER, HashCache, default_arch
from sdfleet.engine.sd.conditioning import PassConds
from sdfleet.engine.sd.images import ImageRef, ImageResolver, InpaintPlan
from sdfleet.engine.sd.job import LatentMask, Progress, ResolvedJob, job_infotext
from sdfleet.engine.sd.models import (
    LoadedModel,
    Lookup,
    LoraSpec,
    ModelStore,
    auto_device,
    default_budget,
    lookup,
    names,
)
from sdfleet.engine.sd.prompts import Embedding, load_embedding
from sdfleet.engine.sd.residuals import ResidualSource
from sdfleet.engine.sd.sampling import PassInputs, Sampler
from sdfleet.errors import ConfigError, EngineError, SdfleetError, ValidationError

log = logging.getLogger("sdfleet.engine")


class DiffusersEngine:
    """Stable Diffusion 1.x / 2.x / SDXL (+ refiner) on diffusers, speaking A1111's language.

    ``model`` is the default checkpoint (a diffusers folder or a ``.safetensors`` file) used when a spec
    names none; ``models``, ``loras``, ``vaes`` and ``embeddings`` resolve names (a ``{name: path}``
    mapping or a callable returning None when unknown). Checkpoints stay loaded in an LRU cache under
    ``memory_budget_bytes``; LoRAs stay loaded as adapters. ``allow_pickle`` lets ``.ckpt``/``.pt`` files
    load (they can run code). ``image_resolver`` turns ``init_images``/``mask`` references into images
    (default: PIL images, ``data:`` URLs, base64 and local paths).
    """

    name = "diffusers"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        models: Lookup | None = None,
        loras: Lookup | None = None,
        vaes: Lookup | None = None,
        upscalers: Lookup | None = None,
        controlnets: Lookup | None = None,
        ip_adapters: Lookup | None = None,
        image_encoders: Lookup | None = None,
        embeddings: Mapping[str, Path] | None = None,
        allow_pickle: bool = False,
        memory_budget_bytes: int | None = None,
        image_resolver: ImageResolver | None = None,
        hash_sidecars: bool = True,
        preload: bool = True,
    ) -> None:
        self.device, self.dtype = auto_device(device)
        self.hashes = HashCache(sidecars=hash_sidecars)
        self.store = ModelStore(
            device=self.device,
            dtype=self.dtype,
            budget_bytes=memory_budget_bytes or default_budget(self.device),
            allow_pickle=allow_pickle,
            hashes=self.hashes,
        )
        self.default_model = Path(model) if model is not None else None
        self.models = models
        self.loras = loras
        self.vaes = vaes
        self.upscalers = upscalers
        self.sampler = Sampler(self.device, self.dtype)
        self.nets = NetPool(keep=1)  # hires fix's upscaler nets
        self.controlnets = ControlNetPool(controlnets, self.device, self.dtype)
        self.ip_adapters = IPAdapters(ip_adapters, image_encoders, self.device, self.dtype, self.hashes)
        self.embedding_files = dict(embeddings or {})
        self.resolve_image: ImageResolver = image_resolver or images.default_resolver
        self._embeddings: dict[str, tuple[int, Embedding]] = {}
        self._lock = threading.Lock()
        if self.default_model is not None:
            if not self.default_model.exists():
                raise ConfigError(f"model {self.default_model} does not exist", field="model")
            if preload:
                self.store.get(self.default_model)

    # ================================================================== Engine protocol
    def capabilities(self) -> EngineCapabilities:
        gpu_name, gpu_mb = "cpu", 0
        max_pixels = 2048 * 2048
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            gpu_name, gpu_mb = str(props.name), int(props.total_memory // (1024 * 1024))
            max_pixels = max(512 * 512, int(props.total_memory // 6000))
        archs: tuple[str, ...] = (Arch.SD1.value, Arch.SD2.value, Arch.SDXL.value)
        if self.models is None and self.default_model is not None:
            # only the default model can be served: route only jobs of its architecture here
            archs = (default_arch(self.default_model),)
        return EngineCapabilities(
            # train_lora: sdfleet.training (the worker runs the trainer; it loads its own copy of the model)
            # upscale: sdfleet.engine.upscale, on this engine's device
            kinds=(
                JobKind.TXT2IMG.value,
                JobKind.IMG2IMG.value,
                JobKind.TRAIN_LORA.value,
                JobKind.UPSCALE.value,
            ),
            archs=archs,
            max_pixels=max_pixels,
            features=("lora", "inpaint", "hires", "refiner", "embedding", "controlnet"),
            device=str(self.device),
            gpu_name=gpu_name,
            gpu_memory_mb=gpu_mb,
        )

    def loaded_models(self) -> list[str]:
        return (
            names(self.store.loaded()) + self.controlnets.loaded_models() + self.ip_adapters.loaded_models()
        )

    def generate(
        self, kind: JobKind, spec: GenerationSpec, on_step: OnStep, should_stop: ShouldStop
    ) -> GenerationResult:
        with self._lock:
            try:
                with torch.inference_mode():
                    return self._generate(kind, spec, on_step, should_stop)
            except SdfleetError:
                raise
            except torch.cuda.OutOfMemoryError as exc:
                self._free()
                raise EngineError(f"out of memory: {exc}", retryable=True) from exc
            except RuntimeError as exc:
                if "out of memory" in str(exc).lower():
                    self._free()
                raise EngineError(f"generation failed: {exc}", retryable=True) from exc
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise EngineError(f"generation failed: {exc}", retryable=False) from exc
            finally:
                self.ip_adapters.detach()  # the UNet back to its own attention processors

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ================================================================== resolution
    def _checkpoint_path(self, name: str | None, field_name: str) -> Path:
        if name is None or (
            self.default_model is not None
            and name in (self.default_model.stem, self.default_model.name, str(self.default_model))
        ):
            if self.default_model is None:
                raise ValidationError("no model given and the engine has no default model", field=field_name)
            return self.default_model
        found = lookup(self.models, name)
        if found is None:
            raise ValidationError(f"unknown model {name!r}", field=field_name)
        return found

    def _resolve(self, kind: JobKind, spec: GenerationSpec) -> ResolvedJob:
        choice = samplers.resolve(spec.sampler_name, spec.scheduler)
        hr_upscaler = None
        if kind == JobKind.TXT2IMG and spec.enable_hr:
            hr_upscaler = hires.check_upscaler(spec.hr_upscaler or "Latent", self.upscalers)
        if kind == JobKind.IMG2IMG and not spec.init_images:
            raise ValidationError("img2img needs at least one init image", field="init_images")
        model = self.store.get(self._checkpoint_path(spec.model, "model"), spec.model)
        refiner = None
        if spec.refiner_checkpoint and spec.refiner_switch_at < 1.0:
            if kind != JobKind.TXT2IMG:
                raise ValidationError(
                    "the refiner hand-off is supported for txt2img jobs", field="refiner_checkpoint"
                )
            if model.arch != SDXL:
                raise ValidationError("a refiner needs an SDXL base model", field="refiner_checkpoint")
            refiner = self.store.get(
                self._checkpoint_path(spec.refiner_checkpoint, "refiner_checkpoint"), spec.refiner_checkpoint
            )
            if refiner.arch not in (SDXL, SDXL_REFINER):
                raise ValidationError("the refiner must be an SDXL checkpoint", field="refiner_checkpoint")
            self.store.get(model.path)  # keep the base most recently used
        schedule = conditioning.parse_positive(spec.prompt, spec.steps)
        loras = self._lora_specs(schedule.loras, spec)
        files: dict[str, Path] = {}
        for lo in loras:
            path = lookup(self.loras, lo.name)
            if path is None or not path.is_file():
                raise ValidationError(f"unknown LoRA {lo.name!r}", field="loras")
            files[lo.name] = path
        self.store.apply_loras(model, loras, files)
        lora_hashes = {lo.name: model.adapters[lo.name][2] for lo in loras}
        vae, vae_name, vae_hash = model.vae, None, None
        if spec.vae and spec.vae.lower() not in ("automatic", "none"):
            path = lookup(self.vaes, spec.vae)
            if path is None:
                raise ValidationError(f"unknown VAE {spec.vae!r}", field="vae")
            vae, vae_hash = self.store.vae(model, spec.vae, path)
            vae_name = spec.vae
        embeddings = self._load_embeddings()
        for m in (model, refiner):
            if m is not None:
                m.encoder.set_embeddings(list(embeddings.values()))
        controlnets = [
            (i, unit, self.controlnets.get(i, unit, model.arch)) for i, unit in self.ip_adapters.others(spec)
        ]
        prompt = spec.prompt + "".join(
            f" <lora:{lo.name}:{lo.weight:g}>"
            if lo.te_weight is None
            else f" <lora:{lo.name}:{lo.te_weight:g}:{lo.weight:g}>"
            for lo in spec.loras
        )
        return ResolvedJob(
            kind,
            spec,
            model,
            choice,
            vae,
            vae_name,
            vae_hash,
            loras,
            lora_hashes,
            refiner,
            hr_upscaler,
            prompt,
            embeddings,
            controlnets,
            {i: self.hashes.sha256(net.path)[:8] for i, _, net in controlnets},
            ip_adapters=self.ip_adapters.attach(spec, model.pipe.unet, model.arch, self._image),
        )

    def _control(
        self, job: ResolvedJob, size: tuple[int, int], sources: Sequence[Image.Image | None], hires: bool
    ) -> list[ResidualSource]:
        """What steers this pass — its ControlNet units and its T2I-Adapter units — with their control images
        fitted to ``size`` (each unit's first control map kept for the job's detected maps)."""
        if job.ip_adapters is not None:  # the IP-Adapter units' hr_option
            job.ip_adapters.begin_pass(hires)
        nets = [(i, u, n) for i, u, n in job.controlnets if isinstance(n, LoadedControlNet)]
        adapters = [(i, u, n) for i, u, n in job.controlnets if isinstance(n, LoadedAdapter)]
        found: list[ResidualSource] = []
        control = ControlPass.for_pass(
            nets,
            size,
            sources,
            hires=hires,
            enable_hr=job.spec.enable_hr,
            image=self._image,
            device=self.device,
            dtype=self.dtype,
        )
        maps = dict(control.maps) if control is not None else {}
        if control is not None:
            found.append(control)
        picked = pass_pictures(
            adapters, size, sources, hires=hires, enable_hr=job.spec.enable_hr, image=self._image
        )
        if picked.chosen:
            found.append(
                AdapterPass.prepare(
                    picked.chosen, size, device=self.device, dtype=self.dtype, regions=picked.regions
                )
            )
            maps.update(picked.maps)
        for index, detected in maps.items():
            job.detected_maps.setdefault(index, detected)
        return found

    @staticmethod
    def _lora_specs(tags: Sequence[LoraTag], spec: GenerationSpec) -> list[LoraSpec]:
        wanted: dict[str, LoraSpec] = {}
        for tag in tags:
            wanted[tag.name] = LoraSpec(tag.name, tag.te_weight, tag.unet_weight)
        for ref in spec.loras:
            te = ref.te_weight if ref.te_weight is not None else ref.weight
            wanted[ref.name] = LoraSpec(ref.name, te, ref.weight)
        return list(wanted.values())

    def _load_embeddings(self) -> dict[str, Embedding]:
        out: dict[str, Embedding] = {}
        for name, path in self.embedding_files.items():
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                log.warning("embedding.missing name=%s path=%s", name, path)
                continue
            cached = self._embeddings.get(name)
            if cached is None or cached[0] != mtime:
                emb = load_embedding(name, path, self.hashes.sha256(path))
                self._embeddings[name] = (mtime, emb)
            out[name] = self._embeddings[name][1]
        return out

    # ================================================================== generation
    def _generate(
        self, kind: JobKind, spec: GenerationSpec, on_step: OnStep, should_stop: ShouldStop
    ) -> GenerationResult:
        started = time.monotonic()
        job = self._resolve(kind, spec)
        model = job.model
        log.debug("generate.prompt prompt=%r negative=%r", spec.prompt, spec.negative_prompt)
        plan = seeds.SeedPlan.for_job(spec.seed, spec.subseed, spec.subseed_strength, spec.images_per_job)
        passes = self._pass_steps(job)
        progress = Progress(passes * spec.n_iter, on_step, should_stop, spec.preview_every, model.sdxl)
        results: list[GeneratedImage] = []
        used_embeddings: set[str] = set()
        for it in range(spec.n_iter):
            batch = plan.batch(it, spec.batch_size)
            if kind == JobKind.TXT2IMG:
                pics, used = self._txt2img(job, batch, progress)
            else:
                pics, used = self._img2img(job, batch, progress, it)
            used_embeddings |= used
            for b, pic in enumerate(pics):
                results.append(
                    GeneratedImage(
                        image=pic,
                        seed=batch.seeds[b],
                        subseed=batch.subseeds[b],
                        infotext=job_infotext(job, batch.seeds[b], batch.subseeds[b], used_embeddings),
                    )
                )
        seconds = time.monotonic() - started
        log.info(
            "generate.done model=%s kind=%s images=%d steps=%d seconds=%.3f",
            model.name,
            kind.value,
            len(results),
            progress.step,
            seconds,
        )
        return GenerationResult(
            images=results,
            detected_maps=[job.detected_maps[i] for i in sorted(job.detected_maps)],
            info={
                "engine": self.name,
                "model": model.name,
                "model_hash": model.short_hash,
                "steps": progress.step,
                "seconds": seconds,
                "all_seeds": list(plan.seeds),
                "all_subseeds": list(plan.subseeds),
            },
        )

    # ------------------------------------------------------------------ step planning
    def _count(self, model: LoadedModel, job: ResolvedJob, steps: int, **kwargs: float | None) -> int:
        return self.sampler.count(model, job.choice, steps, **kwargs)

    def _pass_steps(self, job: ResolvedJob) -> int:
        spec = job.spec
        if job.kind == JobKind.IMG2IMG:
            if spec.denoising_strength <= 0:
                return 0
            return self._count(job.model, job, spec.steps, strength=spec.denoising_strength)
        switch = spec.refiner_switch_at if job.refiner is not None else None
        total = self._count(job.model, job, spec.steps, end=switch)
        if job.refiner is not None:
            total += self._count(job.refiner, job, spec.steps, start=switch)
        if spec.enable_hr:
            total += self._count(
                job.model, job, spec.hr_second_pass_steps or spec.steps, strength=spec.hr_denoising_strength
            )
        return total

    # ------------------------------------------------------------------ kinds
    def _latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, int, int]:
        factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
        return (int(model.pipe.unet.config.out_channels), height // factor, width // factor)

    def _conds(
        self, job: ResolvedJob, model: LoadedModel, steps: int, schedule_steps: int, hires: bool
    ) -> PassConds:
        spec = job.spec
        if hires:
            positive = conditioning.parse_positive(spec.prompt, spec.steps, hires_steps=schedule_steps)
        else:
            positive = conditioning.parse_positive(spec.prompt, schedule_steps)
        return conditioning.build(
            model.encoder,
            positive,
            spec.negative_prompt,
            steps=spec.steps if hires else schedule_steps,
            hires_steps=schedule_steps if hires else None,
            clip_skip=spec.clip_skip,
            zero_empty_negative=model.sdxl,
        )

    def _schedule_steps(self, job: ResolvedJob, steps: int) -> int:
        return job.choice.sampler.total_steps(steps)

    def _txt2img(
        self, job: ResolvedJob, batch: seeds.SeedPlan, progress: Progress
    ) -> tuple[list[Image.Image], set[str]]:
        spec, model = job.spec, job.model
        gens = seeds.generators(batch.seeds)
        shape = self._latent_shape(model, spec.width, spec.height)
        noise = seeds.initial_noise(batch, shape, gens).to(self.device, self.dtype)
        conds = self._conds(job, model, spec.steps, self._schedule_steps(job, spec.steps), hires=False)
        used = set(conds.embeddings_used)
        switch = spec.refiner_switch_at if job.refiner is not None else None
        latents = self._sample(
            job,
            model,
            conds,
            gens,
            progress,
            spec.steps,
            (spec.width, spec.height),
            PassInputs(
                noise=noise,
                end=switch,
                mask=self._blank_inpaint(job, model, spec.width, spec.height, len(gens)),
                extras=self._control(job, (spec.width, spec.height), [None] * len(gens), hires=False),
            ),
        )
        if job.refiner is not None:
            rconds = self._conds(
                job, job.refiner, spec.steps, self._schedule_steps(job, spec.steps), hires=False
            )
            used |= rconds.embeddings_used
            latents = self._sample(
                job,
                job.refiner,
                rconds,
                gens,
                progress,
                spec.steps,
                (spec.width, spec.height),
                PassInputs(latents=latents, start=switch),
            )
        if spec.enable_hr:
            latents, used_hr = self._hires(job, batch, latents, progress)
            used |= used_hr
        return self._decode(job, latents), used

    def _hires(
        self, job: ResolvedJob, batch: seeds.SeedPlan, latents: torch.Tensor, progress: Progress
    ) -> tuple[torch.Tensor, set[str]]:
        spec, model = job.spec, job.model
        target_w, target_h = spec.output_size()
        shape = self._latent_shape(model, target_w, target_h)
        init = hires.upscale_latents(
            job.hr_upscaler or "Latent",
            latents,
            first=(spec.width, spec.height),
            target=(target_w, target_h),
            shape=shape,
            decode=lambda lat: self._decode(job, lat),
            encode=lambda pics: self._encode(job, pics),
            upscalers=self.upscalers,
            nets=self.nets,
            device=str(self.device),
            should_stop=progress.should_stop,
        )
        hr_steps = spec.hr_second_pass_steps or spec.steps
        gens = seeds.generators(batch.seeds)
        noise = seeds.initial_noise(batch, shape, gens).to(self.device, self.dtype)
        conds = self._conds(job, model, hr_steps, self._schedule_steps(job, hr_steps), hires=True)
        out = self._sample(
            job,
            model,
            conds,
            gens,
            progress,
            hr_steps,
            (target_w, target_h),
            PassInputs(
                init=init,
                noise=noise,
                strength=spec.hr_denoising_strength,
                mask=self._blank_inpaint(job, model, target_w, target_h, len(gens)),
                extras=self._control(job, (target_w, target_h), [None] * len(gens), hires=True),
            ),
        )
        return out, set(conds.embeddings_used)

    def _img2img(
        self, job: ResolvedJob, batch: seeds.SeedPlan, progress: Progress, iteration: int
    ) -> tuple[list[Image.Image], set[str]]:
        spec, model = job.spec, job.model
        count = len(batch.seeds)
        refs = [
            spec.init_images[(iteration * spec.batch_size + b) % len(spec.init_images)] for b in range(count)
        ]
        sources = [self._image(ref, "init_images") for ref in refs]
        mask_image = self._image(spec.mask, "mask") if spec.mask else None
        plans: list[InpaintPlan] = []
        works: list[Image.Image] = []
        for source in sources:
            if mask_image is not None:
                plan = images.plan_inpaint(
                    source,
                    mask_image,
                    width=spec.width,
                    height=spec.height,
                    resize_mode=spec.resize_mode,
                    mask_blur=spec.mask_blur,
                    invert=spec.inpainting_mask_invert,
                    full_res=spec.inpaint_full_res,
                    padding=spec.inpaint_full_res_padding,
                    fill=spec.inpainting_fill,
                )
                plans.append(plan)
                works.append(plan.image)
            else:
                flat = images.flatten(source)
                works.append(
                    flat
                    if spec.resize_mode == 3
                    else images.resize_image(spec.resize_mode, flat, spec.width, spec.height)
                )
        steps_to_run = self._pass_steps(job)
        if steps_to_run == 0:  # strength 0: nothing to denoise, the input is the result
            outs = [plan.overlay_base.copy() for plan in plans] if plans else [w.copy() for w in works]
            return outs, set()
        init = self._encode(job, works)
        shape = self._latent_shape(model, spec.width, spec.height)
        if init.shape[-2:] != shape[1:]:
            init = F.interpolate(init.float(), size=shape[1:], mode="bilinear").to(init.dtype)
        gens = seeds.generators(batch.seeds)
        noise = seeds.initial_noise(batch, shape, gens).to(self.device, self.dtype)
        mask = None
        if plans:
            mask = self._latent_mask(job, plans, init, works, noise)
            init = mask.original
        conds = self._conds(job, model, spec.steps, self._schedule_steps(job, spec.steps), hires=False)
        latents = self._sample(
            job,
            model,
            conds,
            gens,
            progress,
            spec.steps,
            (spec.width, spec.height),
            PassInputs(
                init=init,
                noise=noise,
                strength=spec.denoising_strength,
                mask=mask,
                extras=self._control(job, (spec.width, spec.height), sources, hires=False),
            ),
        )
        outs = self._decode(job, latents)
        if plans:
            outs = [images.apply_overlay(out, plan) for out, plan in zip(outs, plans, strict=True)]
        return outs, set(conds.embeddings_used)

    def _blank_inpaint(
        self, job: ResolvedJob, model: LoadedModel, width: int, height: int, batch: int
    ) -> LatentMask | None:
        """txt2img on a 9-channel inpainting UNet: everything is masked and the masked image is grey
        (A1111's ``txt2img_image_conditioning``)."""
        if int(model.pipe.unet.config.in_channels) != 9:
            return None
        grey = torch.zeros((batch, 3, height, width), device=self.device)
        latent = self._encode_tensor(job, grey)
        ones = torch.ones((batch, 1, *latent.shape[-2:]), device=self.device, dtype=self.dtype)
        return LatentMask(ones, torch.zeros_like(latent), torch.cat([ones, latent], dim=1))

    def _latent_mask(
        self,
        job: ResolvedJob,
        plans: list[InpaintPlan],
        init: torch.Tensor,
        works: list[Image.Image],
        noise: torch.Tensor,
    ) -> LatentMask:
        spec, model = job.spec, job.model
        h, w = init.shape[-2:]
        masks = []
        for plan in plans:
            small = plan.latent_mask.convert("RGB").resize((w, h))
            array = np.asarray(small, dtype=np.float32)[:, :, 0] / 255.0
            masks.append(torch.from_numpy(np.around(array)))
        repaint = torch.stack(masks)[:, None].to(self.device, self.dtype)
        original = init
        if spec.inpainting_fill == 2:
            original = init * (1 - repaint) + noise * repaint
        elif spec.inpainting_fill == 3:
            original = init * (1 - repaint)
        extra = None
        if int(model.pipe.unet.config.in_channels) == 9:
            binary = [
                torch.from_numpy((np.asarray(p.latent_mask, dtype=np.float32) / 255.0).round()) for p in plans
            ]
            pixel_mask = torch.stack(binary)[:, None].to(self.device, self.dtype)
            pixels = torch.stack([_to_tensor(img) for img in works]).to(self.device, self.dtype)
            masked = self._encode_tensor(job, pixels * (1 - pixel_mask))
            extra = torch.cat([F.interpolate(pixel_mask, size=(h, w)), masked], dim=1)
        return LatentMask(repaint, original, extra)

    # ------------------------------------------------------------------ VAE
    def _image(self, ref: ImageRef | None, field_name: str) -> Image.Image:
        if ref is None:
            raise ValidationError(f"{field_name} is missing", field=field_name)
        return self.resolve_image(ref, field_name)

    def _encode(self, job: ResolvedJob, pics: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([_to_tensor(p) for p in pics]).to(self.device)
        return self._encode_tensor(job, pixels)

    def _encode_tensor(self, job: ResolvedJob, pixels: torch.Tensor) -> torch.Tensor:
        vae = job.vae
        latent = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
        scaled: torch.Tensor = (latent * float(vae.config.scaling_factor)).to(self.dtype)
        return scaled

    def _decode(self, job: ResolvedJob, latents: torch.Tensor) -> list[Image.Image]:
        vae = job.vae
        decoded = vae.decode(latents.to(vae.dtype) / float(vae.config.scaling_factor), return_dict=False)[0]
        array = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        array = array.permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a, mode="RGB") for a in array]

    # ------------------------------------------------------------------ the loop
    def _sample(
        self,
        job: ResolvedJob,
        model: LoadedModel,
        conds: PassConds,
        gens: list[torch.Generator],
        progress: Progress,
        steps: int,
        size: tuple[int, int],
        start: PassInputs,
    ) -> torch.Tensor:
        return self.sampler.run(
            job.spec,
            job.choice,
            model,
            conds,
            gens,
            progress,
            steps,
            size,
            start,
            image_prompts=job.ip_adapters,
        )


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)
