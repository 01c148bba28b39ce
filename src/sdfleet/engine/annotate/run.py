"""One annotate job's work: the module's map of a picture (see the package docstring)."""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdfleet.annotators.run import preprocess
from sdfleet.errors import ModelUnavailable
from sdfleet.specs.annotate import AnnotateSpec, Annotator

__all__ = ["OnnxSessions", "annotate", "onnx_available"]


def onnx_available() -> bool:
    """Whether onnxruntime is installed here (the modules with weights need it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxSessions:
    """The annotators' ONNX sessions loaded on this worker: the last ``size`` files used, on the CPU (or CUDA
    when onnxruntime has it), one load at a time."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._sessions: OrderedDict[Path, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Any:
        """The session of the ONNX file at ``path`` (loaded on first use)."""
        with self._lock:
            if path in self._sessions:
                self._sessions.move_to_end(path)
                return self._sessions[path]
            try:
                import onnxruntime
            except ImportError as exc:
                raise ModelUnavailable(
                    "this worker cannot run annotators with weights: install the [annotators] extra "
                    "(onnxruntime)",
                    retryable=True,
                ) from exc
            wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in wanted if p in onnxruntime.get_available_providers()]
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            try:
                session = onnxruntime.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # a file that is not an ONNX model: the registry entry's fault
                raise ModelUnavailable(
                    f"the annotator {path.name} does not load as an ONNX model: {exc}", retryable=False
                ) from exc
            self._sessions[path] = session
            while len(self._sessions) > self.size:
                self._sessions.popitem(last=False)
            return session

    def loaded(self) -> list[Path]:
        """The files loaded now, the most recently used last."""
        with self._lock:
            return list(self._sessions)


def annotate(
    spec: AnnotateSpec, image: Image.Image, *, model: Path | None = None, sessions: OnnxSessions | None = None
) -> Image.Image:
    """The control map ``spec.module`` makes of ``image`` (RGB, the size the extension gives it: the picture
    resized so its short side is the processor resolution). A module with weights needs ``model``, its ONNX
    file (:class:`ModelUnavailable` without it)."""
    entry = spec.entry
    if not isinstance(entry, Annotator):
        return preprocess(
            spec.module,
            image,
            resolution=max(1, spec.processor_res or 512),
            threshold_a=spec.threshold_a,
            threshold_b=spec.threshold_b,
            field="params.module",
        )
    if model is None:
        raise ModelUnavailable(f"the module {spec.module} needs its annotator model ({spec.model})")
    from sdfleet.engine.annotate import depth, lineart

    session = (sessions or OnnxSessions()).get(model)
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if entry.family == "midas":
        made = depth.midas(session, pixels, spec.processor_res)
    elif entry.family == "depth_anything":
        made = depth.depth_anything(session, pixels, spec.processor_res)
    else:  # lineart, lineart_coarse: the same steps around their own nets
        made = lineart.lineart(session, pixels, spec.processor_res)
    return Image.fromarray(made, "RGB")
