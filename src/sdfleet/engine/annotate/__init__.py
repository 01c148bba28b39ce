"""ControlNet preprocessors as a job of their own (the ``annotate`` kind): :func:`annotate` runs one
:class:`~sdfleet.specs.annotate.AnnotateSpec` on a picture — the model-free modules through
:mod:`sdfleet.engine.controlnet.preprocess` (OpenCV, numpy), the ones with weights through their ONNX file on
onnxruntime (:mod:`.depth`). Nothing here imports torch or diffusers, so a CPU-only annotate worker runs it
with the ``annotators`` extra alone."""

from __future__ import annotations

from sdfleet.engine.annotate.run import OnnxSessions, annotate, onnx_available

__all__ = ["OnnxSessions", "annotate", "onnx_available"]
