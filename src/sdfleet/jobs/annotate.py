"""ControlNet preprocessing as jobs of their own (the ``annotate`` kind) and the fleet-wide cache of their maps.

- **An annotate job** (:func:`checked_annotate`): a module (model-free, or with weights: its registered
  ``annotator`` file resolved now), one stored input image, the module's normalised parameters, and the key its
  map is cached under (:func:`sdfleet.specs.annotate.cache_key`: the image's sha256 + module + parameters).
- **A generation whose units name a module** (:func:`plan_preprocessing`, at submit): each such unit's map is
  looked up in the cache (blob store, ``annotations/…``). A hit is used at once — the unit's image becomes the
  map, ``preprocessed`` — and no job is made; a miss becomes an ``annotate`` child (one per distinct map), and
  the generation is stored ``waiting`` as their parent (``wait_reason`` says so).
- **When the children succeed** (:class:`PreprocessPlan`, a fan-out plan): each map is copied into the cache,
  the parent's units point at it, and the parent is queued to run (:class:`~sdfleet.jobs.fanout.Resume`). A
  failed child fails the parent with the child's reason and code (a bad image stays the input's fault);
  cancelling the parent cancels its children (:mod:`sdfleet.jobs.fanout`).

Left to the generating worker (inline): an IP-Adapter unit's module (its image encoder), a unit with a mask
(the inpaint modules read it beside the picture; for the others a drawn mask is the picture), and on img2img a
unit without an image of its own whose batch has several distinct init images; a module with weights is then
a 422.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdfleet.blobs import BlobStore
from sdfleet.domain import ControlNetUnit, GenerationSpec, Job, JobKind, Output
from sdfleet.errors import SdfleetError, ValidationError
from sdfleet.jobs.fanout import Final, Resume, first_output
from sdfleet.jobs.inputs import BLOB_REF, ImageLimits, InputImages
from sdfleet.jobs.registry import resolve_annotator
from sdfleet.jobs.types import Child
from sdfleet.specs.annotate import AnnotateSpec, Annotator, cache_key, find_module, normalised
from sdfleet.specs.annotate import pixel_perfect_resolution as pixel_perfect
from sdfleet.specs.controlnet import Module
from sdfleet.specs.ipadapter import is_ip_module
from sdfleet.store import JobStore

__all__ = ["UNITS_LABEL", "PreprocessPlan", "checked_annotate", "plan_preprocessing", "waiting_reason"]

UNITS_LABEL = "sdfleet.units"
"""The label of an annotate child naming the parent's units (indices, comma-separated) its map is for."""


async def _normalised_spec(store: JobStore, spec: AnnotateSpec, image_sha: str, field: str) -> AnnotateSpec:
    """``spec`` with its module's canonical name, normalised parameters, annotator file and cache key."""
    entry = find_module(spec.module, field)
    res, a, b = normalised(entry, spec.processor_res, spec.threshold_a, spec.threshold_b)
    model, model_sha = None, None
    if isinstance(entry, Annotator):
        record = await resolve_annotator(store, entry, field)
        model, model_sha = record.name, record.sha256
    out = spec.model_copy(
        update={
            "module": entry.name,
            "processor_res": res,
            "threshold_a": a,
            "threshold_b": b,
            "model": model,
        }
    )
    return out.model_copy(update={"cache_key": cache_key(image_sha, out, model_sha)})


async def checked_annotate(
    store: JobStore, spec: AnnotateSpec, inputs: InputImages, limits: ImageLimits, params: str
) -> AnnotateSpec:
    """An ``annotate`` job checked at submit: its module known here (a module with weights: its annotator
    registered), its image stored as an input, its parameters normalised, its cache key set."""
    find_module(spec.module, f"{params}module")
    ref = await inputs.ref(spec.image, f"{params}image", limits)
    digest, _, _ = await inputs.describe(ref)
    return await _normalised_spec(store, spec.model_copy(update={"image": ref}), digest, f"{params}module")


def _picture(spec: GenerationSpec, unit: ControlNetUnit) -> str | None:
    """The picture a unit reads: its own image, else (img2img) the init image when there is one picture for
    every output; None when each picture of the batch has its own init image (the worker preprocesses)."""
    if unit.image is not None:
        return unit.image
    distinct = set(spec.init_images)
    return spec.init_images[0] if len(distinct) == 1 else None


async def plan_preprocessing(
    spec: GenerationSpec,
    inputs: InputImages,
    store: JobStore,
    blobs: BlobStore,
    params: str = "params.",
) -> tuple[GenerationSpec, list[Child]]:
    """A generation's units that name a module, against the cache (see the module docstring): the spec with
    the hits applied, and one annotate child per missing map (labelled with the units it serves)."""
    units = list(spec.controlnet)
    wanted: dict[str, tuple[AnnotateSpec, list[int]]] = {}
    for i, unit in spec.active_controlnet:
        if unit.preprocessed or unit.module.lower() == "none":
            continue
        field = f"{params}controlnet.{i}.module"
        if is_ip_module(unit.module):  # an IP-Adapter's image encoder: the engine's, no control map
            continue
        entry = find_module(unit.module, field)
        if isinstance(entry, Module) and (entry.needs_mask or unit.mask is not None):
            continue  # the unit's mask goes beside the picture (inpaint) or replaces it: inline, on the worker
        if unit.mask is not None:
            raise ValidationError(
                f"module {entry.name!r} runs as its own job on the unit's image; a unit mask is for the "
                "model-free modules",
                field=f"{params}controlnet.{i}.mask",
            )
        picture = _picture(spec, unit)
        if picture is None:
            if isinstance(entry, Annotator):
                raise ValidationError(
                    f"module {entry.name!r} runs as its own job on one picture: give the unit an image "
                    "(the init images differ)",
                    field=f"{params}controlnet.{i}.image",
                )
            continue  # model-free: the generating worker runs it on each picture
        digest, width, height = await inputs.describe(picture)
        res = unit.processor_res
        if unit.pixel_perfect:
            res = pixel_perfect(width, height, spec.width, spec.height, unit.resize_mode)
        asked = AnnotateSpec(
            module=unit.module,
            image=picture,
            processor_res=res,
            threshold_a=unit.threshold_a,
            threshold_b=unit.threshold_b,
        )
        annotate = await _normalised_spec(store, asked, digest, field)
        assert annotate.cache_key is not None
        units[i] = unit.model_copy(update={"processor_res": annotate.processor_res or unit.processor_res})
        wanted.setdefault(annotate.cache_key, (annotate, []))[1].append(i)
    if not wanted:
        return spec, []
    present = await blobs.sizes(list(wanted))
    children = []
    for key, (annotate, indices) in wanted.items():
        if present.get(key) is not None:  # cached: this request makes no annotate job
            for i in indices:
                units[i] = units[i].model_copy(update={"image": BLOB_REF + key, "preprocessed": True})
        else:
            label = ",".join(str(i) for i in indices)
            children.append(Child(JobKind.ANNOTATE, annotate, labels={UNITS_LABEL: label}))
    return spec.model_copy(update={"controlnet": units}), children


def waiting_reason(children: Sequence[Job]) -> str:
    """What a generation waiting for its annotate children says (``wait_reason``)."""
    parts = []
    for child in children:
        units = ", ".join(f"controlnet.{u}" for u in child.labels.get(UNITS_LABEL, "").split(",") if u)
        parts.append(f"{child.spec.get('module')} for {units} (annotate job {child.id})")
    return "waiting for preprocessing: " + "; ".join(parts)


class PreprocessPlan:
    """The fan-out plan of a generation (``txt2img``/``img2img``) waiting for its annotate children: one stage,
    planned at submit (:attr:`~sdfleet.jobs.types.JobRequest.first_stage`), then the generation itself."""

    def expected(self, parent: Job) -> int:
        return 0  # as many as were planned at submit: the fan-out counts the children stored

    def first(self, parent: Job) -> list[Child]:
        raise SdfleetError(
            f"job {parent.id}: a generation's preprocessing is planned at submit, with the request's images"
        )

    async def next(
        self, parent: Job, children: Sequence[Job], outputs: dict[str, list[Output]], blobs: BlobStore
    ) -> list[Child] | Final | Resume:
        """Every map into the cache, the parent's units onto their maps, the parent queued."""
        spec = GenerationSpec.model_validate(parent.spec)
        units = list(spec.controlnet)
        for child in children:
            annotate = AnnotateSpec.model_validate(child.spec)
            key = annotate.cache_key
            if key is None:
                raise SdfleetError(f"annotate job {child.id} has no cache key")
            if (await blobs.sizes([key])).get(key) is None:
                output = first_output(outputs, child)
                await blobs.put(key, await blobs.get(output.blob_key), "image/png")
            for index in child.labels.get(UNITS_LABEL, "").split(","):
                if index:
                    i = int(index)
                    units[i] = units[i].model_copy(update={"image": BLOB_REF + key, "preprocessed": True})
        done = spec.model_copy(update={"controlnet": units})
        return Resume(done.model_dump(mode="json"), info={"preprocessed": len(children)})
