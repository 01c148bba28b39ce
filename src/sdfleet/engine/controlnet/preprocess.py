"""The engine's door to the model-free preprocessors (:mod:`sdfleet.annotators`, torch-free, shared with
the API's ``/controlnet/detect``): a unit's module turns its image into the control map inline, on the
worker that generates."""

from __future__ import annotations

from sdfleet.annotators.pixels import resize_with_pad
from sdfleet.annotators.run import display_map, pixel_perfect_resolution, preprocess

__all__ = ["display_map", "pixel_perfect_resolution", "preprocess", "resize_with_pad"]
