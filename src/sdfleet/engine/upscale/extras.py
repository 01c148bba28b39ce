"""A1111's Extras pipeline on one image: face restoration and upscaling in the order the job asks, with
one or two upscalers (a registered net or a resize) blended, to the size A1111's rules give
(:mod:`sdfleet.specs.upscale`).

:func:`run_extras` is what the worker's ``upscale`` kind runs on the engine's device; :class:`NetPool` keeps
the nets loaded between jobs. Nothing here imports torch until a net is loaded."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sdfleet.engine.pool import NetPool
from sdfleet.errors import Interrupted, ModelUnavailable
from sdfleet.specs.upscale import UpscaleSpec, extras_factor, is_pixel_upscaler, model_target

log = logging.getLogger("sdfleet.engine.upscale")

OnProgress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


@dataclass(slots=True)
class ExtrasResult:
    """The processed image, its A1111-style infotext, and what was done (``info``: scalars; ``note…`` keys
    are said to the user, e.g. that no face restorer is registered)."""

    image: Image.Image
    infotext: str
    info: dict[str, Any] = field(default_factory=dict)


_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}


def upscale_to_factor(
    image: Image.Image,
    name: str,
    factor: float,
    *,
    nets: Mapping[str, Path],
    pool: NetPool,
    device: str,
    tile: int | None = None,
    should_stop: ShouldStop = lambda: False,
    on_tile: OnProgress | None = None,
) -> Image.Image:
    """One upscaler to ``factor`` × the size (A1111's ``Upscaler.upscale``): the target is floored to ÷8; a
    net runs up to three times until the target is reached or the size stops changing, and a Lanczos
    resize lands on the exact target."""
    target = model_target(image.width, image.height, factor)
    if is_pixel_upscaler(name):
        method = name.lower()
        if method != "none":
            image = image.resize(
                (int(image.width * factor), int(image.height * factor)), resample=_RESAMPLE[method]
            )
    else:
        path = nets.get(name)
        if path is None:
            raise ModelUnavailable(f"upscaler {name!r} was not fetched for this job", retryable=True)
        net = pool.get(path, device)
        for _ in range(3):
            if image.width >= target[0] and image.height >= target[1]:
                break
            if should_stop():
                raise Interrupted("stopped between upscaler passes")
            before = image.size
            image = net.upscale(image, tile=tile, should_stop=should_stop, on_tile=on_tile)
            if image.size == before:
                break
    if image.size != target:
        image = image.resize(target, resample=Image.Resampling.LANCZOS)
    return image


def _upscale(
    image: Image.Image,
    spec: UpscaleSpec,
    *,
    nets: Mapping[str, Path],
    pool: NetPool,
    device: str,
    tile: int | None,
    should_stop: ShouldStop,
    on_tile: OnProgress | None,
) -> Image.Image:
    """A1111's "Upscale" postprocessing step: upscaler 1, blended with upscaler 2 by its visibility, then
    the crop of ``scale_to`` (centred on the box; a smaller result is padded with black, as A1111 does)."""
    factor = extras_factor(
        image.width,
        image.height,
        spec.resize_mode,
        spec.upscaling_resize,
        (spec.upscaling_resize_w, spec.upscaling_resize_h),
    )
    run = dict(nets=nets, pool=pool, device=device, tile=tile, should_stop=should_stop, on_tile=on_tile)
    first = upscale_to_factor(image, spec.upscaler_1, factor, **run)  # type: ignore[arg-type]
    if spec.extras_upscaler_2_visibility > 0 and spec.upscaler_2.lower() != "none":
        second = upscale_to_factor(image, spec.upscaler_2, factor, **run)  # type: ignore[arg-type]
        if second.size != first.size:
            second = second.resize(first.size, resample=Image.Resampling.LANCZOS)
        first = Image.blend(first.convert("RGB"), second.convert("RGB"), spec.extras_upscaler_2_visibility)
    if spec.resize_mode == "scale_to" and spec.upscaling_crop:
        box = (spec.upscaling_resize_w, spec.upscaling_resize_h)
        cropped = Image.new("RGB", box)
        cropped.paste(first, box=(box[0] // 2 - first.width // 2, box[1] // 2 - first.height // 2))
        first = cropped
    return first


def run_extras(
    image: Image.Image,
    spec: UpscaleSpec,
    *,
    upscalers: Mapping[str, Path],
    restorers: Mapping[str, Path],
    pool: NetPool,
    device: str,
    detector: Path | None = None,
    tile: int | None = None,
    should_stop: ShouldStop = lambda: False,
    on_progress: OnProgress | None = None,
) -> ExtrasResult:
    """Process one image as an ``upscale`` job asks: face restoration (when the job's visibilities ask for
    it and a restorer is registered) and the upscale, upscale first if ``upscale_first``."""
    image = image.convert("RGB")
    info: dict[str, Any] = {"upscaler_1": spec.upscaler_1}
    asked_faces = spec.gfpgan_visibility > 0 or spec.codeformer_visibility > 0

    def faces(picture: Image.Image) -> Image.Image:
        if not asked_faces:
            return picture
        if not spec.face_restorers:
            info["note_faces"] = (
                "face restoration skipped: no GFPGAN or CodeFormer face restorer is registered "
                "(sdfleet models add NAME FILE --kind face_restorer)"
            )
            return picture
        from sdfleet.engine.faces.extras import restore_for_extras

        restored, found, notes = restore_for_extras(
            picture, spec, restorers, pool=pool, device=device, detector=detector, should_stop=should_stop
        )
        info["faces"] = found
        if notes:
            info["note_faces"] = "; ".join(notes)
        return restored

    def upscale(picture: Image.Image) -> Image.Image:
        if spec.upscaler_1.lower() == "none":
            return picture
        return _upscale(
            picture,
            spec,
            nets=upscalers,
            pool=pool,
            device=device,
            tile=tile,
            should_stop=should_stop,
            on_tile=on_progress,
        )

    image = faces(upscale(image)) if spec.upscale_first else upscale(faces(image))
    info["width"], info["height"] = image.size
    parts = [f"Postprocess upscaler: {spec.upscaler_1}"]
    if spec.resize_mode == "scale_to":
        parts.insert(0, f"Postprocess upscale to: {spec.upscaling_resize_w}x{spec.upscaling_resize_h}")
    else:
        parts.insert(0, f"Postprocess upscale by: {spec.upscaling_resize:g}")
    if spec.extras_upscaler_2_visibility > 0:
        parts.append(f"Postprocess upscaler 2: {spec.upscaler_2}, {spec.extras_upscaler_2_visibility:g}")
    return ExtrasResult(image=image, infotext=", ".join(parts), info=info)


__all__ = ["ExtrasResult", "run_extras", "upscale_to_factor"]
