"""Tiled inference for upscaler nets: the image stays in host memory, one tile at a time goes to the device,
and overlapping tiles are blended through linear feathers so no seam shows. Reduced precision (fp16 on
CUDA) falls back to fp32 for good when a tile comes back with NaN/Inf or black from a picture that is not.

The tile side comes from the device's free memory on CUDA, else :data:`DEFAULT_TILE` (A1111's 192)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdfleet.errors import Interrupted

log = logging.getLogger("sdfleet.engine.upscale")

DEFAULT_TILE = 192
DEFAULT_OVERLAP = 16
MIN_TILE = 64
MAX_TILE = 1024

Net = Callable[[torch.Tensor], torch.Tensor]


@dataclass(slots=True)
class Precision:
    """The dtype a net runs in; :meth:`fall_back` moves it (and the net) to fp32 once, for good."""

    dtype: torch.dtype
    fell_back: bool = False

    @property
    def reduced(self) -> bool:
        return self.dtype in (torch.float16, torch.bfloat16)


def tile_for(device: str, features: int, scale: int) -> int:
    """A tile side that fits the free memory of ``device`` (CUDA), else :data:`DEFAULT_TILE`. The estimate
    counts the widest activations: a dense block's five feature maps at the input size and the upsampled
    ones at the output size, in fp16, with half the free memory left to the allocator."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return DEFAULT_TILE
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    per_pixel = 2 * features * (6 + 2 * scale * scale)
    side = int(math.sqrt(free * 0.5 / per_pixel))
    return max(MIN_TILE, min(MAX_TILE, side // 32 * 32))


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _ramp(length: int, feather: int, lead: bool, trail: bool) -> torch.Tensor:
    """Weights along one side of a tile: rising over ``feather`` px from an edge shared with a neighbour."""
    weights = torch.ones(length)
    if feather <= 0:
        return weights
    ramp = (torch.arange(min(feather, length), dtype=torch.float32) + 0.5) / feather
    if lead:
        weights[: ramp.numel()] = torch.minimum(weights[: ramp.numel()], ramp)
    if trail:
        weights[-ramp.numel() :] = torch.minimum(weights[-ramp.numel() :], ramp.flip(0))
    return weights


def _bad(out: torch.Tensor, source: torch.Tensor) -> bool:
    if not bool(torch.isfinite(out).all()):
        return True
    return float(out.abs().max()) < 1e-4 and float(source.abs().max()) > 1e-2


def run_tiled(
    net: Net,
    image: torch.Tensor,
    *,
    scale: int,
    device: str,
    precision: Precision,
    to_fp32: Callable[[], None],
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    should_stop: Callable[[], bool] = lambda: False,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``net`` over ``image`` (``(1, C, H, W)`` in [0, 1], host memory) in tiles of ``tile`` px overlapping
    by ``overlap`` px; returns the ``(1, C, H·scale, W·scale)`` result in host memory, fp32, clamped.
    ``to_fp32`` moves the net to fp32 when a reduced-precision tile fails (:class:`Precision`)."""
    _, channels, height, width = image.shape
    tile = max(MIN_TILE // 2, tile)
    overlap = max(0, min(overlap, tile // 4))
    ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
    out = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    weight = torch.zeros((1, 1, height * scale, width * scale), dtype=torch.float32)
    total, done = len(ys) * len(xs), 0
    feather = overlap * scale
    for y in ys:
        for x in xs:
            if should_stop():
                raise Interrupted("stopped between upscaler tiles")
            th, tw = min(tile, height), min(tile, width)
            part = image[:, :, y : y + th, x : x + tw]
            result = _run_tile(net, part, device, precision, to_fp32)
            wy = _ramp(th * scale, feather, y > 0, y + th < height)
            wx = _ramp(tw * scale, feather, x > 0, x + tw < width)
            mask = (wy[:, None] * wx[None, :])[None, None]
            oy, ox = y * scale, x * scale
            out[:, :, oy : oy + th * scale, ox : ox + tw * scale] += result * mask
            weight[:, :, oy : oy + th * scale, ox : ox + tw * scale] += mask
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return (out / weight.clamp_min(1e-8)).clamp_(0.0, 1.0)


def _run_tile(
    net: Net, part: torch.Tensor, device: str, precision: Precision, to_fp32: Callable[[], None]
) -> torch.Tensor:
    with torch.inference_mode():
        result = net(part.to(device=device, dtype=precision.dtype)).float()
        if precision.reduced and _bad(result, part):
            log.warning("upscale.precision_fallback dtype=%s device=%s", precision.dtype, device)
            to_fp32()
            precision.dtype, precision.fell_back = torch.float32, True
            result = net(part.to(device=device, dtype=torch.float32)).float()
    return result.cpu()


__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "Precision", "run_tiled", "tile_for"]
