"""The denoising loop of :class:`~sdfleet.engine.sd.engine.DiffusersEngine`: one sampling pass (the first
pass, the refiner's part, the hires pass) of one batch, as a :class:`Sampler` runs it — the scheduler's
timesteps for the pass (:meth:`Sampler.timesteps`: img2img strength, the refiner's start and end), the UNet
on the unconditional and conditional rows with classifier-free guidance (several weighted conditionings for
``AND``, guidance rescale), SDXL's size conditioning, latent-space inpainting, progress and interruption
between steps.

Residuals other nets add to the UNet — ControlNets, ControlNet Union, T2I-Adapters — are gathered in one place
per step (:func:`sdfleet.engine.sd.residuals.gather`) from the pass's
:class:`~sdfleet.engine.sd.residuals.ResidualSource` s."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from sdfleet.domain import GenerationSpec
from sdfleet.engine.sd import samplers
from sdfleet.engine.sd.checkpoints import SDXL_REFINER
from sdfleet.engine.sd.conditioning import PassConds
from sdfleet.engine.sd.job import LatentMask, Progress
from sdfleet.engine.sd.models import LoadedModel
from sdfleet.engine.sd.residuals import ResidualSource, StepInput, gather
from sdfleet.errors import EngineError

__all__ = ["REFINER_AESTHETIC", "ImagePrompts", "PassInputs", "Sampler"]

REFINER_AESTHETIC = (6.0, 2.5)
"""The SDXL refiner's aesthetic-score conditioning (conditional, unconditional), as A1111 sends it."""


class ImagePrompts(Protocol):
    """Image prompts (IP-Adapter units) attached to the UNet: per step, their scales set and their image
    tokens added to the conditioning (``added``) of the ``groups`` row groups of ``batch`` rows."""

    def step(
        self,
        unet: Any,
        step: int,
        steps: int,
        added: dict[str, Any] | None,
        groups: int,
        guided: bool,
        batch: int,
    ) -> dict[str, Any] | None: ...


@dataclass(slots=True)
class PassInputs:
    """Where a pass starts: pure ``noise`` (txt2img), ``init`` latents noised to the pass's first timestep
    (img2img, hires; ``strength`` picks the steps), or ``latents`` already partly denoised (the refiner,
    from ``start``); ``end`` stops early (the refiner's switch). ``mask``: latent inpainting; ``extras``: the
    residual sources steering the pass."""

    noise: torch.Tensor | None = None
    init: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    strength: float | None = None
    start: float | None = None
    end: float | None = None
    mask: LatentMask | None = None
    extras: Sequence[ResidualSource] = field(default_factory=tuple)


class Sampler:
    """Runs sampling passes on ``device`` in ``dtype``."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype

    def timesteps(
        self,
        scheduler: Any,
        steps: int,
        *,
        strength: float | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> torch.Tensor:
        """The scheduler's timesteps for ``steps`` (set on it), cut for img2img ``strength`` or to the
        fraction ``start``…``end`` of the noise schedule (the refiner hand-off)."""
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        order = int(getattr(scheduler, "order", 1))
        total = int(scheduler.config.num_train_timesteps)
        begin: int | None = None
        if strength is not None:
            init = min(int(steps * strength), steps)
            begin = max(steps - init, 0) * order
        elif start is not None:
            cutoff = round(total - start * total)
            remaining = int((timesteps < cutoff).sum().item())
            if order == 2 and remaining % 2 == 0:
                remaining += 1
            begin = len(timesteps) - remaining
        if begin is not None:
            timesteps = timesteps[begin:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin)
        if end is not None:
            cutoff = round(total - end * total)
            timesteps = timesteps[: int((timesteps >= cutoff).sum().item())]
        result: torch.Tensor = timesteps
        return result

    def count(
        self, model: LoadedModel, choice: samplers.SamplerChoice, steps: int, **kwargs: float | None
    ) -> int:
        """How many UNet steps a pass of ``steps`` runs (see :meth:`timesteps`)."""
        scheduler = samplers.make_scheduler(choice, model.scheduler_config)
        return len(self.timesteps(scheduler, steps, **kwargs))

    def time_ids(self, model: LoadedModel, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL size conditioning (cond, uncond); the refiner's carries aesthetic scores instead."""
        if model.arch == SDXL_REFINER:
            cond = [height, width, 0, 0, REFINER_AESTHETIC[0]]
            uncond = [height, width, 0, 0, REFINER_AESTHETIC[1]]
        else:
            cond = uncond = [height, width, 0, 0, height, width]
        return (
            torch.tensor([cond], dtype=self.dtype, device=self.device),
            torch.tensor([uncond], dtype=self.dtype, device=self.device),
        )

    def run(
        self,
        spec: GenerationSpec,
        choice: samplers.SamplerChoice,
        model: LoadedModel,
        conds: PassConds,
        gens: list[torch.Generator],
        progress: Progress,
        steps: int,
        size: tuple[int, int],
        start: PassInputs,
        *,
        image_prompts: ImagePrompts | None = None,
    ) -> torch.Tensor:
        """Denoise one pass of ``steps`` at ``size`` (width, height) and return its latents.
        ``image_prompts`` (IP-Adapter units) add their image tokens to each step's conditioning."""
        scheduler = samplers.make_scheduler(choice, model.scheduler_config)
        timesteps = self.timesteps(
            scheduler, steps, strength=start.strength, start=start.start, end=start.end
        )
        noise, mask, extras = start.noise, start.mask, tuple(start.extras)
        latents = start.latents
        if latents is None:
            if noise is None:
                raise EngineError("internal: a pass without noise or latents", retryable=False)
            if start.init is None:
                latents = noise * float(scheduler.init_noise_sigma)
            elif len(timesteps):
                latents = scheduler.add_noise(start.init, noise, timesteps[:1].repeat(start.init.shape[0]))
            else:
                latents = start.init
        batch = int(latents.shape[0])
        step_kwargs = _step_kwargs(scheduler, gens, spec.eta)
        unet = model.pipe.unet
        width, height = size
        time_ids = self.time_ids(model, width, height)
        for i, t in enumerate(timesteps):
            progress.check()
            entry = conds.at(i)
            weights = [w for w, _ in entry.conds]
            simple = len(entry.conds) == 1 and weights[0] == 1.0
            guided = not (simple and spec.cfg_scale == 1.0)
            rows = ([entry.uncond] if guided else []) + [c for _, c in entry.conds]
            groups = len(rows)
            scaled = scheduler.scale_model_input(torch.cat([latents] * groups), t)
            model_in = scaled
            if mask is not None and mask.extra is not None:
                model_in = torch.cat([model_in, torch.cat([mask.extra] * groups)], dim=1)
            embeds = torch.cat([r.embeds.expand(batch, -1, -1) for r in rows])
            added = None
            if model.sdxl:
                pooled = torch.cat([_pooled(r, model).expand(batch, -1) for r in rows])
                ids = torch.cat(
                    [time_ids[1 if (guided and g == 0) else 0].expand(batch, -1) for g in range(groups)]
                )
                added = {"text_embeds": pooled, "time_ids": ids}
            residuals = (
                gather(extras, StepInput(i, len(timesteps), scaled, t, embeds, added, groups, guided))
                if extras
                else {}
            )
            if image_prompts is not None:  # the image tokens of these rows; the units' scales at this step
                added = image_prompts.step(unet, i, len(timesteps), added, groups, guided, batch)
            out = unet(
                model_in,
                t,
                encoder_hidden_states=embeds,
                added_cond_kwargs=added,
                return_dict=False,
                **residuals,
            )[0]
            if guided:
                parts = out.chunk(groups)
                uncond_out = parts[0]
                if simple:
                    text = parts[1]
                else:
                    text = uncond_out + sum(
                        w * (p - uncond_out) for w, p in zip(weights, parts[1:], strict=True)
                    )
                pred = uncond_out + spec.cfg_scale * (text - uncond_out)
                if spec.guidance_rescale > 0:
                    pred = _rescale(pred, text, spec.guidance_rescale)
            else:
                pred = out
            result = scheduler.step(pred, t, latents, **step_kwargs, return_dict=True)
            latents = result.prev_sample
            if mask is not None and mask.extra is None and noise is not None:
                keep = mask.original
                if i < len(timesteps) - 1:
                    keep = scheduler.add_noise(mask.original, noise, timesteps[i + 1 : i + 2].repeat(batch))
                latents = keep * (1 - mask.repaint) + latents * mask.repaint
            shown = getattr(result, "pred_original_sample", None)
            progress.advance(shown if shown is not None else latents)
        return latents


def _pooled(encoded: Any, model: LoadedModel) -> torch.Tensor:
    if encoded.pooled is None:
        raise EngineError(f"model {model.name} needs pooled text embeddings", retryable=False)
    pooled: torch.Tensor = encoded.pooled
    return pooled


def _rescale(pred: torch.Tensor, text: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, §3.4), as diffusers' ``rescale_noise_cfg``."""
    std_text = text.std(dim=list(range(1, text.ndim)), keepdim=True)
    std_cfg = pred.std(dim=list(range(1, pred.ndim)), keepdim=True)
    rescaled = pred * (std_text / std_cfg)
    return phi * rescaled + (1 - phi) * pred


_STEP_PARAMS: dict[type, frozenset[str]] = {}


def _step_kwargs(scheduler: Any, gens: list[torch.Generator], eta: float | None) -> dict[str, Any]:
    cls = type(scheduler)
    if cls not in _STEP_PARAMS:
        _STEP_PARAMS[cls] = frozenset(inspect.signature(scheduler.step).parameters)
    accepted = _STEP_PARAMS[cls]
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = gens
    if "eta" in accepted:
        kwargs["eta"] = 0.0 if eta is None else float(eta)
    return kwargs
