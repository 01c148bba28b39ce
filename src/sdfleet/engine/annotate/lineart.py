"""The line-art preprocessors (``lineart_realistic``/``lineart``, ``lineart_coarse``: the informative-drawings
generator, one file each) on an ONNX session, with the A1111 ControlNet extension's steps around the net: the
picture resized and edge-padded as for canny, pixels to ``p / 255``, the net (its sigmoid output, dark lines on
white), × 255, clipped, 8 bits, inverted (white lines on black, as the ControlNets read them), the padding cut
off."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdfleet.annotators.pixels import resize_with_pad
from sdfleet.engine.annotate.depth import run_net

__all__ = ["lineart"]


def lineart(session: Any, pixels: NDArray[np.uint8], resolution: int) -> NDArray[np.uint8]:
    """The line art of an RGB picture at ``resolution`` (see the module docstring)."""
    padded, (h, w) = resize_with_pad(pixels, resolution)
    batch = (padded.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    line = run_net(session, np.ascontiguousarray(batch), padded.shape[:2])
    drawn = 255 - (line * 255.0).clip(0, 255).astype(np.uint8)
    cut = drawn[:h, :w]
    return np.ascontiguousarray(np.stack([cut] * 3, axis=2))
