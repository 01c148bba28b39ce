"""The mapped request (:class:`MappedRequest`) and the A1111 ``info`` answered from it and the
stored outputs (:class:`OutputRecord`): :func:`build_info`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdfleet.a1111.errors import InfotextError
from sdfleet.a1111.infotext import InfotextParams
from sdfleet.domain import GenerationSpec, JobKind, ModelRecord


@dataclass(slots=True)
class MappedRequest:
    """An A1111 request turned into a job spec, with what ``info`` needs to answer it."""

    kind: JobKind
    spec: GenerationSpec
    task_id: str
    parameters: dict[str, Any]
    prompt: str
    negative_prompt: str
    styles: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    denoising_strength: float
    seed_resize_from: tuple[int, int]
    send_images: bool
    restore_afterwards: bool
    override_settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    unit_fields: list[str] = field(default_factory=list)
    """Where each ControlNet unit of the spec is in the request (``alwayson_scripts.controlnet.args.N``)."""


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """What ``info`` needs of one stored output image."""

    seed: int | None
    infotext: str | None


def build_info(
    mapped: MappedRequest,
    outputs: Sequence[OutputRecord],
    *,
    job_timestamp: str,
    version: str,
    model: ModelRecord | None,
    vae: ModelRecord | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A1111's ``Processed.js()`` for a finished job, as a dict (the API sends ``json.dumps`` of it).

    Seeds, model, VAE and version come from what the worker wrote into the images (their seeds and
    infotexts); the request's values (and the registry's ``model``/``vae``) are the fallback. ``extra`` is
    added under the key ``sdfleet`` together with the notes. Serialise it with ``json.dumps(…,
    default=lambda _: None)`` as A1111 does (objects that cannot be serialised become null).
    """
    spec = mapped.spec
    count = len(mapped.all_seeds)
    first = _first_params(outputs)
    seeds = [o.seed for o in outputs]
    all_seeds = [s for s in seeds if s is not None] if outputs and None not in seeds else mapped.all_seeds
    all_subseeds = mapped.all_subseeds
    if first is not None and first.variation_seed is not None:
        parsed = [_variation_seed(o.infotext) for o in outputs]
        if None not in parsed:
            all_subseeds = [s for s in parsed if s is not None]
    model_name = first.model if first and first.model else (model.name if model else None)
    model_hash = first.model_hash if first and first.model_hash else (model.short_hash if model else None)
    vae_name = first.vae if first and first.vae else (vae.name if vae else None)
    vae_hash = first.vae_hash if first and first.vae_hash else (vae.short_hash if vae else None)
    clip_skip = first.clip_skip if first is not None else spec.clip_skip
    info: dict[str, Any] = {
        "prompt": mapped.prompt,
        "all_prompts": [mapped.prompt] * count,
        "negative_prompt": mapped.negative_prompt,
        "all_negative_prompts": [mapped.negative_prompt] * count,
        "seed": all_seeds[0] if all_seeds else spec.seed,
        "all_seeds": all_seeds,
        "subseed": all_subseeds[0] if all_subseeds else spec.subseed,
        "all_subseeds": all_subseeds,
        "subseed_strength": spec.subseed_strength,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": spec.sampler_name,
        "cfg_scale": spec.cfg_scale,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_name,
        "sd_model_hash": model_hash or None,
        "sd_vae_name": vae_name,
        "sd_vae_hash": vae_hash or None,
        "seed_resize_from_w": mapped.seed_resize_from[0],
        "seed_resize_from_h": mapped.seed_resize_from[1],
        "denoising_strength": mapped.denoising_strength,
        "extra_generation_params": dict(first.extra) if first is not None else {},
        "index_of_first_image": 0,
        "infotexts": [o.infotext or "" for o in outputs],
        "styles": mapped.styles,
        "job_timestamp": job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": False if mapped.kind == JobKind.TXT2IMG else None,
        "version": first.version if first and first.version else version,
        "sdfleet": {**extra, "task_id": mapped.task_id, "notes": list(mapped.notes)},
    }
    return info


def _first_params(outputs: Sequence[OutputRecord]) -> InfotextParams | None:
    for output in outputs[:1]:
        if output.infotext:
            try:
                return InfotextParams.from_infotext(output.infotext)
            except InfotextError:
                return None
    return None


def _variation_seed(infotext: str | None) -> int | None:
    if not infotext:
        return None
    try:
        return InfotextParams.from_infotext(infotext).variation_seed
    except InfotextError:
        return None
