"""Validating a job before it is stored: limits, labels, kind, webhook URL, the models it names, its input
images. Every API that creates jobs (the native ``/v1/jobs`` and the A1111 ``/sdapi/v1`` routes) goes
through :meth:`JobPreparer.prepare`, so a job is held to the same rules whichever door it came in by."""

from __future__ import annotations

from sdfleet.blobs import BlobStore
from sdfleet.config import Limits, Settings
from sdfleet.domain import JobKind
from sdfleet.errors import LimitExceeded, ValidationError
from sdfleet.jobs.annotate import checked_annotate, plan_preprocessing
from sdfleet.jobs.inputs import ImageLimits, InputImages, generation_inputs, training_inputs
from sdfleet.jobs.registry import ModelService, resolve_training, resolve_upscale
from sdfleet.jobs.types import JobRequest, JobSpec
from sdfleet.netguard import check_url_syntax
from sdfleet.specs.annotate import AnnotateSpec
from sdfleet.specs.sdupscale import MAX_TILES, SdUpscaleSpec
from sdfleet.specs.training import LoraTrainSpec
from sdfleet.specs.upscale import UpscaleBatchSpec, UpscaleSpec
from sdfleet.store import JobStore
from sdfleet.validation import check_text
from sdfleet.wire import JobCreate


def check_training_limits(spec: LoraTrainSpec, limits: Limits, prefix: str) -> None:
    """This deployment's bounds on a training job (stricter than the trainer's own): 422 naming the field."""
    checks: list[tuple[str, int, int]] = [
        ("steps", spec.steps, limits.max_train_steps),
        ("resolution", spec.resolution, limits.max_train_resolution),
        ("images", len(spec.images), limits.max_train_images),
        ("class_images", len(spec.class_images), limits.max_train_images),
        ("rank", spec.rank, limits.max_train_rank),
        ("batch_size", spec.batch_size, limits.max_train_batch_size),
    ]
    for name, value, limit in checks:
        if value > limit:
            raise LimitExceeded(f"{name} is {value}, the limit is {limit}", field=f"{prefix}{name}")
    for name in ("instance_prompt", "class_prompt"):
        text = getattr(spec, name) or ""
        if len(text) > limits.max_prompt_chars:
            raise LimitExceeded(
                f"{name} has {len(text)} characters, the limit is {limits.max_prompt_chars}",
                field=f"{prefix}{name}",
            )


def check_job_fields(body: JobCreate, limits: Limits, prefix: str, idempotency_key: str | None) -> None:
    """The job's own bounded fields: labels (count, key and value length), the idempotency key (a header
    has no JSON check of its own) — 422 naming the field."""
    if len(body.labels) > limits.max_labels:
        raise LimitExceeded(
            f"labels has {len(body.labels)} entries, the limit is {limits.max_labels}",
            field=f"{prefix}labels",
        )
    for key, value in body.labels.items():
        if not key or len(key) > limits.max_label_key_chars:
            raise LimitExceeded(
                f"a label key must have 1 to {limits.max_label_key_chars} characters", field=f"{prefix}labels"
            )
        if len(value) > limits.max_label_value_chars:
            raise LimitExceeded(
                f"label {key!r} has {len(value)} characters, the limit is {limits.max_label_value_chars}",
                field=f"{prefix}labels.{key}",
            )
    if idempotency_key is not None:
        check_text(idempotency_key, "idempotency_key")


class JobPreparer:
    """Checks job bodies against this deployment's limits and registry and stores their input images;
    built once by ``create_app``."""

    def __init__(self, settings: Settings, store: JobStore, blobs: BlobStore, models: ModelService) -> None:
        self._settings = settings
        self._store = store
        self._blobs = blobs
        self._models = models

    def inputs(self, tenant: str) -> InputImages:
        """An empty set of input images for a batch of ``tenant``'s jobs (see :meth:`prepare`)."""
        return InputImages(tenant, self._blobs)

    async def _prepare_training(
        self,
        tenant: str,
        body: JobCreate,
        spec: LoraTrainSpec,
        prefix: str,
        params: str,
        inputs: InputImages,
    ) -> JobRequest:
        """A ``train_lora`` job: limits, the base checkpoint and the LoRA's name in the registry, the
        training images stored as inputs."""
        check_training_limits(spec, self._settings.limits, params)
        arch = await resolve_training(self._store, spec.base_model, spec.name, params, tenant)
        if body.arch and arch and body.arch != arch:
            raise ValidationError(
                f"arch {body.arch} does not match the base model's ({arch})", field=f"{prefix}arch"
            )
        if spec.name is None:
            raise ValidationError("a training job needs the name of the LoRA it makes", field=f"{params}name")
        stored = await training_inputs(spec, inputs, ImageLimits.training(self._settings.limits), params)
        return _request(body, stored, body.arch or arch)

    async def _prepare_upscale(
        self, body: JobCreate, spec: UpscaleSpec, prefix: str, params: str, inputs: InputImages
    ) -> JobRequest:
        """An ``upscale`` job: its upscalers in the registry, the face restorers it can use, the image stored
        as an input, and the result's size within ``max_upscale_pixels`` — all before it is stored."""
        if body.arch:
            raise ValidationError("an upscale job has no SD architecture", field=f"{prefix}arch")
        spec = await self._checked_upscale(spec, params, inputs)
        return _request(body, spec)

    async def _prepare_upscale_batch(
        self, body: JobCreate, spec: UpscaleBatchSpec, prefix: str, params: str, inputs: InputImages
    ) -> JobRequest:
        """An ``upscale_batch`` parent: each of its pictures checked as an ``upscale`` job is."""
        if body.arch:
            raise ValidationError("an upscale job has no SD architecture", field=f"{prefix}arch")
        limit = self._settings.limits.max_images_per_job
        if len(spec.images) > limit:
            raise LimitExceeded(
                f"images has {len(spec.images)} pictures, the limit is {limit}", field=f"{params}images"
            )
        checked = [
            await self._checked_upscale(s, f"{params}images.{i}.", inputs) for i, s in enumerate(spec.images)
        ]
        return _request(body, UpscaleBatchSpec(images=checked))

    async def _checked_upscale(self, spec: UpscaleSpec, params: str, inputs: InputImages) -> UpscaleSpec:
        """One picture's upscale: its upscalers and face restorers in the registry, the picture stored as an
        input, the result within ``max_upscale_pixels``."""
        limits = self._settings.limits
        use = await resolve_upscale(self._store, spec, params)
        ref, width, height = await inputs.sized_ref(
            spec.image, f"{params}image", ImageLimits.generation(limits)
        )
        spec = spec.model_copy(
            update={
                "image": ref,
                "input_width": width,
                "input_height": height,
                "needs_gpu": use.needs_gpu,
                "face_restorers": use.face_restorers,
                "face_detector": use.face_detector,
            }
        )
        out_w, out_h = spec.output_size()
        if out_w * out_h > limits.max_upscale_pixels:
            field = "upscaling_resize" if spec.resize_mode == "scale_by" else "upscaling_resize_w"
            raise LimitExceeded(
                f"the result would be {out_w}×{out_h} pixels, the limit is {limits.max_upscale_pixels} pixels",
                field=f"{params}{field}",
            )
        return spec

    async def _prepare_sd_upscale(
        self, body: JobCreate, spec: SdUpscaleSpec, prefix: str, params: str, inputs: InputImages
    ) -> JobRequest:
        """An ``sd_upscale`` parent: its tiles' img2img settings within the limits and the registry, its
        upscaler registered (or a resize), the picture stored, the result and the tile count bounded."""
        limits = self._settings.limits
        gen = spec.generation
        gen_prefix = f"{params}generation."
        try:
            gen.check_limits(limits)
        except ValidationError as exc:
            exc.field = f"{gen_prefix}{exc.field}" if exc.field else exc.field
            raise
        for name, value in (("batch_size", gen.batch_size), ("n_iter", gen.n_iter)):
            if value != 1:
                raise ValidationError("SD upscale redraws each tile once: 1", field=f"{gen_prefix}{name}")
        if gen.init_images or gen.mask or gen.enable_hr:
            raise ValidationError(
                "the picture goes in image; tiles take no init_images, mask or hires fix",
                field=f"{gen_prefix}init_images",
            )
        use = await self._models.resolve(gen, gen_prefix)
        try:
            upscale = await resolve_upscale(
                self._store, UpscaleSpec(image="-", upscaler_1=spec.upscaler), params
            )
        except ValidationError as exc:
            exc.field = f"{params}upscaler"
            raise
        ref, width, height = await inputs.sized_ref(
            spec.image, f"{params}image", ImageLimits.generation(limits)
        )
        spec = spec.model_copy(
            update={
                "image": ref,
                "input_width": width,
                "input_height": height,
                "needs_gpu": upscale.needs_gpu,
                "arch": body.arch or use.arch,
            }
        )
        out_w, out_h = spec.upscaled_size()
        if out_w * out_h > limits.max_upscale_pixels:
            raise LimitExceeded(
                f"the result would be {out_w}×{out_h} pixels, the limit is {limits.max_upscale_pixels} pixels",
                field=f"{params}scale",
            )
        tiles = len(spec.grid().boxes)
        if tiles > MAX_TILES:
            raise LimitExceeded(
                f"{tiles} tiles of {spec.tile_size()[0]}×{spec.tile_size()[1]}, the limit is {MAX_TILES}: "
                "a larger tile (generation.width/height) or a smaller scale",
                field=f"{params}scale",
            )
        return _request(body, spec, spec.arch)

    async def prepare(
        self,
        tenant: str,
        body: JobCreate,
        *,
        field_prefix: str = "",
        params_prefix: str | None = None,
        idempotency_key: str | None = None,
        inputs: InputImages | None = None,
    ) -> JobRequest:
        """Check one job body and its input images; return the request to submit.

        The images are checked here and written by ``inputs.store()``: pass the ``inputs`` of a whole batch and
        store them once every job passed; without one, a job's own images are stored when it passes.
        Errors name the offending field as ``{field_prefix}{name}`` for the job's own fields (``webhook_url``,
        ``arch``) and ``{params_prefix}{name}`` for its parameters (default ``{field_prefix}params.``).
        """
        prefix = field_prefix
        params = f"{prefix}params." if params_prefix is None else params_prefix
        images = inputs if inputs is not None else InputImages(tenant, self._blobs)
        check_job_fields(body, self._settings.limits, prefix, idempotency_key)
        if body.webhook_url:
            check_url_syntax(body.webhook_url, f"{prefix}webhook_url")
        if isinstance(
            body.params, LoraTrainSpec | UpscaleSpec | SdUpscaleSpec | UpscaleBatchSpec | AnnotateSpec
        ):
            if isinstance(body.params, AnnotateSpec):
                if body.arch:
                    raise ValidationError("an annotate job has no SD architecture", field=f"{prefix}arch")
                limits = ImageLimits.generation(self._settings.limits)
                checked = await checked_annotate(self._store, body.params, images, limits, params)
                request = _request(body, checked)
            elif isinstance(body.params, LoraTrainSpec):
                request = await self._prepare_training(tenant, body, body.params, prefix, params, images)
            elif isinstance(body.params, SdUpscaleSpec):
                request = await self._prepare_sd_upscale(body, body.params, prefix, params, images)
            elif isinstance(body.params, UpscaleBatchSpec):
                request = await self._prepare_upscale_batch(body, body.params, prefix, params, images)
            else:
                request = await self._prepare_upscale(body, body.params, prefix, params, images)
            request.idempotency_key = request.idempotency_key or idempotency_key
            if inputs is None:
                await images.store()
            return request
        gen = body.generation
        try:
            gen.check_limits(self._settings.limits)
        except ValidationError as exc:
            exc.field = f"{params}{exc.field}" if exc.field else exc.field
            raise
        if body.kind == JobKind.IMG2IMG and not gen.init_images:
            raise ValidationError(
                "img2img needs at least one image in init_images", field=f"{params}init_images"
            )
        if body.kind == JobKind.TXT2IMG and (gen.init_images or gen.mask):
            raise ValidationError(
                "txt2img takes no init_images or mask: use kind img2img", field=f"{params}init_images"
            )
        use = await self._models.resolve(gen, params)
        gen = use.apply(gen)  # the image encoders chosen for IP-Adapter units
        if body.arch and use.arch and body.arch != use.arch:
            raise ValidationError(
                f"arch {body.arch} does not match the checkpoint's ({use.arch})", field=f"{prefix}arch"
            )
        if gen.restore_faces and not gen.face_restorer:
            gen = gen.model_copy(update={"face_restorer": await self._models.face_restorer()})
        spec = await generation_inputs(gen, images, ImageLimits.generation(self._settings.limits), params)
        # units that name a module: their maps from the fleet-wide cache, or annotate jobs to run first
        spec, first_stage = await plan_preprocessing(spec, images, self._store, self._blobs, params)
        if inputs is None:
            await images.store()
        request = _request(body, spec, body.arch or use.arch)
        request.first_stage = first_stage
        request.idempotency_key = request.idempotency_key or idempotency_key
        return request


def _request(body: JobCreate, spec: JobSpec, arch: str | None = None) -> JobRequest:
    """The request of a checked job: its checked ``spec`` with the body's own fields."""
    return JobRequest(
        kind=body.kind,
        spec=spec,
        priority=body.priority,
        idempotency_key=body.idempotency_key,
        webhook_url=body.webhook_url,
        labels=body.labels,
        arch=arch,
    )
