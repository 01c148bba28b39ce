"""The depth preprocessors on an ONNX session, with the A1111 ControlNet extension's steps around the net:

* ``depth_midas`` ("depth"; MiDaS DPT-hybrid): the picture resized and edge-padded as for canny
  (:func:`~sdfleet.engine.controlnet.preprocess.resize_with_pad`), pixels to ``p / 127.5 − 1``, the net, the
  prediction shifted to start at 0 and divided by its maximum, × 255, clipped, 8 bits, the padding cut off;
* ``depth_anything`` (Depth Anything): resized and padded likewise, scaled to 0…1 with its channels swapped as
  the extension's ``cvtColor(BGR2RGB)`` swaps an RGB array, resized (cubic) so both sides are at least 518 and
  multiples of 14, normalised with ImageNet's mean and deviation, the net, the prediction resized back
  (bilinear), stretched to 0…255 and truncated to 8 bits, the padding cut off.

A session's input is NCHW float32; its first output is the depth (``1×H×W`` or ``1×1×H×W``; any size —
resized to the padded picture's)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from sdfleet.annotators.pixels import resize_with_pad

__all__ = ["depth_anything", "midas", "multiple_of_14", "run_net"]

Pixels = NDArray[np.uint8]
Floats = NDArray[np.float32]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
NET_SIDE, NET_MULTIPLE = 518, 14


def run_net(session: Any, batch: Floats, size: tuple[int, int]) -> Floats:
    """The net's depth for one NCHW batch, as a 2-D float32 array of ``size`` (height, width)."""
    name = session.get_inputs()[0].name
    out = np.asarray(session.run(None, {name: batch})[0], dtype=np.float32)
    out = out.reshape(out.shape[-2:]) if out.ndim > 2 else out
    if out.shape != size:
        out = np.asarray(cv2.resize(out, (size[1], size[0]), interpolation=cv2.INTER_LINEAR), np.float32)
    return out


def _rgb(depth: Pixels, h: int, w: int) -> Pixels:
    cut = depth[:h, :w]
    return np.ascontiguousarray(np.stack([cut] * 3, axis=2))


def midas(session: Any, pixels: Pixels, resolution: int) -> Pixels:
    """MiDaS depth of an RGB picture at ``resolution`` (see the module docstring)."""
    padded, (h, w) = resize_with_pad(pixels, resolution)
    batch = (padded.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
    depth = run_net(session, np.ascontiguousarray(batch), padded.shape[:2])
    depth = depth - depth.min()
    top = float(depth.max())
    depth = depth / top if top > 0 else depth
    return _rgb((depth * 255.0).clip(0, 255).astype(np.uint8), h, w)


def multiple_of_14(value: float, minimum: int = NET_SIDE) -> int:
    """Depth Anything's ``constrain_to_multiple_of``: ``value`` rounded to a multiple of 14, rounded up
    instead when that falls below ``minimum``."""
    rounded = int(round(value / NET_MULTIPLE) * NET_MULTIPLE)
    if rounded < minimum:
        rounded = int(math.ceil(value / NET_MULTIPLE) * NET_MULTIPLE)
    return rounded


def depth_anything(session: Any, pixels: Pixels, resolution: int) -> Pixels:
    """Depth Anything's depth of an RGB picture at ``resolution`` (see the module docstring)."""
    padded, (h, w) = resize_with_pad(pixels, resolution)
    ph, pw = padded.shape[:2]
    scaled = padded[:, :, ::-1].astype(np.float32) / 255.0  # the extension's BGR2RGB on an RGB array
    scale = max(NET_SIDE / ph, NET_SIDE / pw)  # "lower bound": both sides at least NET_SIDE
    size = (multiple_of_14(scale * pw), multiple_of_14(scale * ph))
    resized = np.asarray(cv2.resize(scaled, size, interpolation=cv2.INTER_CUBIC), np.float32)
    batch = ((resized - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    depth = run_net(session, np.ascontiguousarray(batch), (ph, pw))
    low, high = float(depth.min()), float(depth.max())
    stretched = (depth - low) / (high - low) * 255.0 if high > low else np.zeros_like(depth)
    return _rgb(stretched.astype(np.uint8), h, w)
