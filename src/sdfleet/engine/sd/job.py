"""What the diffusers engine resolves for one ``generate`` call (:class:`ResolvedJob`), the state its passes
share (:class:`Progress`, :class:`LatentMask`), and the A1111 infotext of each picture (:func:`job_infotext`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sdfleet import __version__
from sdfleet.a1111 import InfotextParams, format_infotext
from sdfleet.domain import ControlNetUnit, GenerationSpec, JobKind
from sdfleet.engine.base import OnStep, ShouldStop, StepInfo
from sdfleet.engine.controlnet.apply import controlnet_infotext
from sdfleet.engine.controlnet.ipadapter import IPAdapterRun
from sdfleet.engine.controlnet.loader import LoadedControlNet
from sdfleet.engine.sd import images, samplers
from sdfleet.engine.sd.models import LoadedModel, LoraSpec
from sdfleet.engine.sd.prompts import Embedding
from sdfleet.errors import Interrupted

__all__ = ["MASKED_CONTENT", "VERSION", "LatentMask", "Progress", "ResolvedJob", "job_infotext"]

MASKED_CONTENT = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
VERSION = f"sdfleet {__version__}"


@dataclass(slots=True)
class Progress:
    """Step counting across passes, previews, and the interrupt check."""

    total: int
    on_step: OnStep
    should_stop: ShouldStop
    preview_every: int
    sdxl: bool
    step: int = 0

    def check(self) -> None:
        if self.should_stop():
            raise Interrupted(f"stopped at step {self.step} of {self.total}")

    def advance(self, latents: torch.Tensor) -> None:
        self.step += 1
        preview = None
        if self.preview_every and self.step % self.preview_every == 0:
            preview = images.latent_preview(latents[0], self.sdxl)
        self.on_step(StepInfo(step=self.step, total=self.total, preview=preview))


@dataclass(slots=True)
class LatentMask:
    """Latent-space inpainting state: ``repaint`` [B,1,h,w] (1 = generate), the original latents, and
    for 9-channel inpainting UNets the mask + masked-image conditioning."""

    repaint: torch.Tensor
    original: torch.Tensor
    extra: torch.Tensor | None = None


@dataclass(slots=True)
class ResolvedJob:
    """What one ``generate`` call resolved before sampling."""

    kind: JobKind
    spec: GenerationSpec
    model: LoadedModel
    choice: samplers.SamplerChoice
    vae: Any
    vae_name: str | None
    vae_hash: str | None
    loras: list[LoraSpec]
    lora_hashes: dict[str, str]
    refiner: LoadedModel | None
    hr_upscaler: str | None
    prompt: str
    embeddings: dict[str, Embedding] = field(default_factory=dict)
    controlnets: list[tuple[int, ControlNetUnit, LoadedControlNet]] = field(default_factory=list)
    controlnet_hashes: dict[int, str] = field(default_factory=dict)  # unit index → sha256[:8] of its net
    detected_maps: dict[int, Any] = field(default_factory=dict)  # unit index → its first control map (PIL)
    ip_adapters: IPAdapterRun | None = None  # the IP-Adapter units, attached to the model's UNet


def job_infotext(job: ResolvedJob, seed: int, subseed: int, embeddings_used: set[str]) -> str:
    """A1111's infotext of one picture of ``job``."""
    spec, model = job.spec, job.model
    extra: dict[str, str | int | float | bool] = {}
    denoising: float | None = None
    hires: dict[str, Any] = {}
    if job.kind == JobKind.IMG2IMG:
        denoising = spec.denoising_strength
        if spec.mask:
            extra["Mask blur"] = spec.mask_blur
            if spec.inpainting_mask_invert:
                extra["Mask mode"] = "Inpaint not masked"
            if spec.inpainting_fill != 1:
                extra["Masked content"] = MASKED_CONTENT[spec.inpainting_fill]
            if spec.inpaint_full_res:
                extra["Inpaint area"] = "Only masked"
                extra["Masked area padding"] = spec.inpaint_full_res_padding
    elif spec.enable_hr:
        denoising = spec.hr_denoising_strength
        if spec.hr_resize_x or spec.hr_resize_y:
            hires["hires_resize"] = spec.output_size()
        else:
            hires["hires_upscale"] = spec.hr_scale
        if spec.hr_second_pass_steps:
            hires["hires_steps"] = spec.hr_second_pass_steps
        hires["hires_upscaler"] = job.hr_upscaler
    if spec.eta is not None:
        extra["Eta DDIM" if job.choice.class_name == "DDIMScheduler" else "Eta"] = spec.eta
    if spec.guidance_rescale:
        extra["CFG Rescale"] = spec.guidance_rescale
    for index, unit, _net in job.controlnets:  # as the A1111 ControlNet extension writes them
        extra[f"ControlNet {index}"] = controlnet_infotext(unit, job.controlnet_hashes.get(index, ""))
    if job.ip_adapters is not None:
        extra.update(job.ip_adapters.infotext())
    if job.refiner is not None:
        extra["Refiner"] = f"{job.refiner.name} [{job.refiner.short_hash}]"
        extra["Refiner switch at"] = spec.refiner_switch_at
    ti_hashes = {
        name: job.embeddings[name].sha256[:12] for name in sorted(embeddings_used) if name in job.embeddings
    }
    params = InfotextParams(
        prompt=job.prompt,
        negative_prompt=spec.negative_prompt,
        steps=spec.steps,
        sampler=job.choice.sampler_label,
        schedule_type=job.choice.schedule_label,
        cfg_scale=spec.cfg_scale,
        seed=seed,
        width=spec.width,
        height=spec.height,
        model_hash=model.short_hash,
        model=model.name,
        vae_hash=job.vae_hash,
        vae=job.vae_name,
        variation_seed=subseed if spec.subseed_strength else None,
        variation_seed_strength=spec.subseed_strength or None,
        denoising_strength=denoising,
        clip_skip=spec.clip_skip,
        rng="CPU",
        extra=extra,
        lora_hashes=job.lora_hashes,
        ti_hashes=ti_hashes,
        version=VERSION,
        **hires,
    )
    return format_infotext(params)
