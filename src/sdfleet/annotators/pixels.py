"""The picture plumbing the A1111 ControlNet extension's preprocessors share, on OpenCV and numpy: three
channels out of any picture (``HWC3``), and the resize-and-pad every edge-like module runs first (short
side to the processor resolution, cubic when enlarging and area when shrinking, edge-padded to multiples
of 64). Torch-free, so a CPU annotator worker runs it without diffusers."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["Pixels", "hwc3", "resize_with_pad"]

Pixels = NDArray[np.uint8]


def hwc3(pixels: Pixels) -> Pixels:
    """``pixels`` as height × width × 3 (grey repeated; an alpha channel dropped)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.ascontiguousarray(np.concatenate([pixels] * 3, axis=2))
    return np.ascontiguousarray(pixels[:, :, :3])


def _pad64(size: int) -> int:
    return int(np.ceil(size / 64.0) * 64 - size)


def resize_with_pad(pixels: Pixels, resolution: int) -> tuple[Pixels, tuple[int, int]]:
    """The extension's ``resize_image_with_pad``: short side to ``resolution`` (cubic when enlarging, area
    when shrinking), then edge-padded to multiples of 64; returns the padded picture and the unpadded
    (height, width) to cut back to."""
    image = hwc3(pixels)
    raw_h, raw_w = image.shape[:2]
    k = float(resolution) / float(min(raw_h, raw_w))
    target_h, target_w = int(np.round(raw_h * k)), int(np.round(raw_w * k))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    resized = np.asarray(cv2.resize(image, (target_w, target_h), interpolation=interpolation), np.uint8)
    padded: Pixels = np.pad(resized, [[0, _pad64(target_h)], [0, _pad64(target_w)], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (target_h, target_w)
