"""The SD upscale parent (A1111's "SD upscale" script) as a fan-out :class:`~sdfleet.jobs.fanout.Plan`:

- stage 0: one ``upscale`` job brings the picture to ``scale`` × its size with the chosen upscaler;
- stage 1: the upscaled picture is cut into overlapping tiles of the generation's size
  (:class:`~sdfleet.specs.sdupscale.Grid`), each stored as an input and redrawn by its own ``img2img`` job
  with the job's prompt, seed and denoising strength — every tile on whichever worker is free;
- then the redrawn tiles are blended back into one picture, the parent's output.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdfleet.blobs import BlobStore
from sdfleet.domain import Job, JobKind, Output
from sdfleet.jobs.fanout import Child, Final, FinalImage, first_output
from sdfleet.jobs.inputs import BLOB_REF
from sdfleet.specs.sdupscale import SdUpscaleSpec
from sdfleet.specs.upscale import UpscaleSpec


def _png(image: Image.Image, infotext: str | None = None, *, fast: bool = False) -> bytes:
    """PNG bytes; ``fast`` (and above 4 MP): zlib level 1 — the tiles are the orchestrator's own
    intermediate files, read once by a worker, so speed beats size."""
    buf = io.BytesIO()
    meta = None
    if infotext:
        meta = PngInfo()
        meta.add_text("parameters", infotext)
    image.save(
        buf,
        format="PNG",
        pnginfo=meta,
        compress_level=1 if fast or image.width * image.height > 4 << 20 else 6,
    )
    return buf.getvalue()


class SdUpscalePlan:
    """The stages of an ``sd_upscale`` parent."""

    def expected(self, parent: Job) -> int:
        spec = SdUpscaleSpec.model_validate(parent.spec)
        return 1 + len(spec.grid().boxes)

    def first(self, parent: Job) -> list[Child]:
        spec = SdUpscaleSpec.model_validate(parent.spec)
        upscale = UpscaleSpec(
            image=spec.image,
            upscaler_1=spec.upscaler,
            upscaling_resize=spec.scale,
            input_width=spec.input_width,
            input_height=spec.input_height,
            needs_gpu=spec.needs_gpu,
        )
        return [Child(JobKind.UPSCALE, upscale)]

    async def next(
        self, parent: Job, children: Sequence[Job], outputs: dict[str, list[Output]], blobs: BlobStore
    ) -> list[Child] | Final:
        spec = SdUpscaleSpec.model_validate(parent.spec)
        grid = spec.grid()
        if parent.stage == 0:
            data = await blobs.get(first_output(outputs, children[0]).blob_key)
            tiles = await asyncio.to_thread(self._tiles, data, spec)
            keys = [f"inputs/{parent.tenant}/{hashlib.sha256(t).hexdigest()}.png" for t in tiles]
            await blobs.put_many([(k, t, "image/png") for k, t in zip(keys, tiles, strict=True)])
            width, height = grid.tile
            return [
                Child(
                    JobKind.IMG2IMG,
                    spec.generation.model_copy(
                        update={
                            "init_images": [BLOB_REF + key],
                            "width": width,
                            "height": height,
                            "batch_size": 1,
                            "n_iter": 1,
                        }
                    ),
                    spec.arch,
                )
                for key in keys
            ]
        firsts = [first_output(outputs, child) for child in children]
        tiles = [await blobs.get(o.blob_key) for o in firsts]
        infotext = (
            firsts[0].infotext or ""
        ) + f", SD upscale overlap: {grid.overlap}, SD upscale upscaler: {spec.upscaler}"
        image = await asyncio.to_thread(self._combine, tiles, spec, infotext)
        return Final(
            [FinalImage(content_type="image/png", infotext=infotext, seed=firsts[0].seed, data=image)],
            info={"tiles": len(tiles), "width": grid.size[0], "height": grid.size[1], "infotext": infotext},
        )

    @staticmethod
    def _tiles(data: bytes, spec: SdUpscaleSpec) -> list[bytes]:
        grid = spec.grid()
        with Image.open(io.BytesIO(data)) as opened:
            picture = opened.convert("RGB")
        if picture.size != grid.size:
            picture = picture.resize(grid.size, Image.Resampling.LANCZOS)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # zlib frees the GIL
            return list(pool.map(lambda tile: _png(tile, fast=True), grid.split(picture)))

    @staticmethod
    def _combine(tiles: list[bytes], spec: SdUpscaleSpec, infotext: str) -> bytes:
        images = []
        for data in tiles:
            with Image.open(io.BytesIO(data)) as opened:
                images.append(opened.convert("RGB"))
        return _png(spec.grid().combine(images), infotext)


__all__ = ["SdUpscalePlan"]
