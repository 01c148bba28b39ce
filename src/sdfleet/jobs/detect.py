"""``/controlnet/detect``: a preprocessor's control maps of some pictures, as the A1111 ControlNet
extension's API returns them — the one seam the route calls (:meth:`Detector.detect`).

Model-free modules (:mod:`sdfleet.annotators`, numpy/OpenCV: milliseconds a picture) run here, in the API
process, off the event loop. Modules with weights (depth, openpose, HED…) need an annotate worker; until
the ``annotate`` job kind routes them there, asking for one is a 422 that says so. Every picture and mask
passes the same checks as a generation's input images (base64, format, header pixels, a full decode)
before any pixel is processed, and the number of pictures is bounded."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from sdfleet.config import Limits
from sdfleet.errors import LimitExceeded, ValidationError
from sdfleet.jobs.inputs import ImageLimits, decode_image
from sdfleet.specs.controlnet import module_named

__all__ = ["DetectRequest", "Detector"]


@dataclass(frozen=True, slots=True)
class DetectRequest:
    """One detect call: the module, the pictures (base64) with their field name, masks for the inpaint
    modules, and the sliders (``None`` or out of range: the module's defaults)."""

    module: str
    images: Sequence[str]
    images_field: str = "controlnet_input_images"
    masks: Sequence[str] = ()
    processor_res: int | None = None
    threshold_a: float | None = None
    threshold_b: float | None = None


@dataclass(slots=True)
class Detector:
    """Runs detect requests under the deployment's input limits."""

    limits: Limits

    async def detect(self, request: DetectRequest) -> list[str]:
        """The control maps of ``request``'s pictures, base64 PNGs in order (the extension's display images:
        an inpaint map with its masked part half transparent). 4xx naming the field for an unknown module,
        a module that needs an annotate worker, no pictures, too many, bad base64 or a broken image."""
        module = module_named(request.module, "controlnet_module")
        field = request.images_field
        if not request.images:
            raise ValidationError("No image selected", field=field)
        most = self.limits.max_input_images
        if len(request.images) > most:
            raise LimitExceeded(f"{len(request.images)} images, the limit is {most}", field=field)
        if module.needs_mask and len(request.masks) != len(request.images):
            raise ValidationError(
                f"Preprocessor {module.name} requires `controlnet_masks` param (one mask an image)",
                field="controlnet_masks",
            )
        limits = ImageLimits.generation(self.limits)
        pictures = [decode_image(v, f"{field}.{i}", limits) for i, v in enumerate(request.images)]
        masks = [decode_image(v, f"controlnet_masks.{i}", limits) for i, v in enumerate(request.masks)]
        return await asyncio.to_thread(
            self._run, module.name, [p.data for p in pictures], [m.data for m in masks], request
        )

    @staticmethod
    def _run(name: str, pictures: list[bytes], masks: list[bytes], request: DetectRequest) -> list[str]:
        from sdfleet.annotators.run import display_map, preprocess  # numpy/OpenCV, only when asked

        out = []
        for i, data in enumerate(pictures):
            with Image.open(io.BytesIO(data)) as picture:
                image = picture.convert("RGB")
            mask = None
            if i < len(masks) and module_named(name, "controlnet_module").needs_mask:
                with Image.open(io.BytesIO(masks[i])) as raw:
                    mask = raw.convert("RGB")
            control = preprocess(
                name,
                image,
                resolution=request.processor_res if request.processor_res is not None else 512,
                threshold_a=request.threshold_a,
                threshold_b=request.threshold_b,
                mask=mask,
                field="controlnet_module",
            )
            buffer = io.BytesIO()
            display_map(name, control).save(buffer, format="PNG")
            out.append(base64.b64encode(buffer.getvalue()).decode())
        return out
