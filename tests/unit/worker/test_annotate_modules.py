"""The annotate kind's work without a server: the depth modules' steps around a tiny ONNX net (MiDaS exactly:
``p/127.5 − 1`` in, shifted and divided by its maximum, × 255, 8 bits; Depth Anything: the extension's channel
swap, 518/14 sizing, ImageNet normalisation, stretched to 0…255), the model-free modules through the same door,
the parameters normalised as the extension reads them, what each worker role offers, and an annotate worker's
whole run path importing neither torch nor diffusers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdfleet.config import WorkerSettings
from sdfleet.domain import Feature, JobKind
from sdfleet.errors import ModelUnavailable, ValidationError
from sdfleet.jobs.types import requirements_of
from sdfleet.specs.annotate import AnnotateSpec, cache_key, find_module, normalised, pixel_perfect_resolution

pytest.importorskip("cv2", reason="the annotators need OpenCV (the [annotators] extra)")
pytest.importorskip("onnxruntime", reason="the depth annotators need onnxruntime (the [annotators] extra)")
pytest.importorskip("onnx", reason="the tests write their ONNX models with onnx")

from sdfleet.engine.annotate import OnnxSessions, annotate
from sdfleet.engine.annotate.depth import multiple_of_14
from sdfleet.engine.controlnet.preprocess import preprocess, resize_with_pad
from sdfleet.worker.annotate import AnnotateKind
from tests.support.onnx_models import channel_depth_model


def _gradient(width: int = 96, height: int = 64) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), 255 - x * 255 // (width - 1)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def test_midas_depth_is_the_extensions_steps_around_the_net(tmp_path: Path) -> None:
    model = channel_depth_model(tmp_path / "midas.onnx", channel=0, scale=2.0)
    picture = _gradient()
    spec = AnnotateSpec(module="depth_midas", image="blob:x", processor_res=128, model="tiny")
    made = np.asarray(annotate(spec, picture, model=model))
    # the reference: resize-and-pad at 128, red channel as the depth (the net), then the extension's post
    padded, (h, w) = resize_with_pad(np.asarray(picture), 128)
    depth = 2.0 * (padded[:, :, 0].astype(np.float32) / 127.5 - 1.0)
    depth -= depth.min()
    depth /= depth.max()
    expected = (depth * 255.0).clip(0, 255).astype(np.uint8)[:h, :w]
    assert made.shape == (h, w, 3) == (128, 192, 3)
    assert np.array_equal(made[:, :, 0], expected) and np.array_equal(made[:, :, 1], expected)
    assert made.min() == 0 and made.max() == 255
    # an inverted net inverts the map: the net really runs
    inverted = channel_depth_model(tmp_path / "inverted.onnx", channel=0, scale=-1.0, four_d=False)
    flipped = np.asarray(annotate(spec, picture, model=inverted, sessions=OnnxSessions()))
    assert np.corrcoef(flipped[:, :, 0].ravel(), made[:, :, 0].ravel())[0, 1] < -0.99


def test_depth_anything_swaps_channels_sizes_to_14s_and_stretches(tmp_path: Path) -> None:
    picture = _gradient()
    spec = AnnotateSpec(module="depth_anything", image="blob:x", processor_res=64, model="tiny")
    # the extension's cvtColor(BGR2RGB) of an RGB array: the net's channel 0 is the picture's blue
    blue_net = channel_depth_model(tmp_path / "c0.onnx", channel=0)
    made = np.asarray(annotate(spec, picture, model=blue_net))
    assert made.shape == (64, 96, 3) and made.min() == 0 and made.max() >= 254
    blue = np.asarray(picture)[:, :, 2].astype(np.float64)
    assert np.corrcoef(made[:, :, 0].ravel(), blue.ravel())[0, 1] > 0.99
    assert (multiple_of_14(518.0), multiple_of_14(775.0), multiple_of_14(510.0)) == (518, 770, 518)


def test_lineart_is_the_extensions_steps_around_the_net(tmp_path: Path) -> None:
    net = channel_depth_model(tmp_path / "line.onnx", channel=1)  # "the line": the green channel, 0…1
    picture = _gradient()
    spec = AnnotateSpec(module="lineart", image="blob:x", processor_res=64, model="tiny")
    assert spec.entry.name == "lineart_realistic"
    made = np.asarray(annotate(spec, picture, model=net))
    padded, (h, w) = resize_with_pad(np.asarray(picture), 64)
    line = (padded[:, :, 1].astype(np.float32) / 255.0 * 255.0).clip(0, 255).astype(np.uint8)
    assert made.shape == (h, w, 3) and np.array_equal(made[:, :, 2], (255 - line)[:h, :w])


def test_model_free_modules_go_through_the_same_door() -> None:
    picture = _gradient()
    spec = AnnotateSpec(module="canny", image="blob:x", processor_res=64, threshold_a=20, threshold_b=60)
    made = annotate(spec, picture)
    assert (
        made.tobytes()
        == preprocess("canny", picture, resolution=64, threshold_a=20, threshold_b=60).tobytes()
    )
    with pytest.raises(ModelUnavailable):
        annotate(AnnotateSpec(module="depth_midas", image="blob:x"), picture)  # no file for its weights


def test_a_file_that_is_not_onnx_is_the_models_fault(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable) as caught:
        annotate(AnnotateSpec(module="depth", image="blob:x"), _gradient(), model=junk)
    assert caught.value.retryable is False


def test_parameters_are_normalised_as_the_extension_reads_them() -> None:
    canny = find_module("Canny", "m")
    assert normalised(canny, 4096, None, 999) == (2048, 100.0, 200.0)  # clamped; out-of-range reset
    assert normalised(find_module("invert", "m"), 512, 5, 5) == (0, None, None)  # reads none of them
    assert find_module("depth", "m").name == "depth_midas"
    with pytest.raises(ValidationError) as caught:
        find_module("openpose_full", "params.controlnet.0.module")
    assert caught.value.field == "params.controlnet.0.module" and "depth_anything" in str(caught.value)
    assert pixel_perfect_resolution(96, 64, 512, 512, "Crop and Resize") == 512
    assert pixel_perfect_resolution(96, 64, 512, 512, "Resize and Fill") == 341
    spec = AnnotateSpec(
        module="canny", image="blob:x", processor_res=64, threshold_a=100.0, threshold_b=200.0
    )
    assert cache_key("ab" * 32, spec) == f"annotations/{'ab' * 32}/canny/64-100-200.png"
    depth = AnnotateSpec(module="depth_midas", image="blob:x", processor_res=64, model="m")
    assert cache_key("ab" * 32, depth, "cd" * 32).endswith("/depth_midas/64-x-x-" + "cd" * 8 + ".png")
    req = requirements_of(JobKind.ANNOTATE, depth, None)
    assert req.features == Feature.ANNOTATE_DEPTH and req.model == "m" and req.pixels == 0
    assert requirements_of(JobKind.ANNOTATE, spec, None).features == Feature.NONE


def test_what_each_role_offers() -> None:
    kind = AnnotateKind()
    annotator = kind.offer(WorkerSettings(role="annotate"))
    assert annotator.kinds == ("annotate",) and annotator.features == ("annotate_depth", "annotate_lineart")
    generator = kind.offer(WorkerSettings())
    assert generator.kinds == ("annotate",) and generator.features == ()  # model-free modules only
    assert "annotate_lineart" in kind.offer(WorkerSettings(annotate_weights=True)).features


def test_an_annotate_worker_imports_no_torch_or_diffusers(tmp_path: Path) -> None:
    """The whole run path of ``sdfleet worker --role annotate`` — the CLI, the runner, the kind, the model-free
    and the ONNX modules, run once each — in a fresh interpreter: torch and diffusers never load."""
    model = channel_depth_model(tmp_path / "d.onnx")
    code = f"""
import sys
from pathlib import Path
from PIL import Image
import sdfleet.cli
from sdfleet.worker.runner import Worker, run_worker
from sdfleet.worker.annotate import AnnotatorHost, annotate_kinds, AnnotateRun
from sdfleet.config import WorkerSettings
from sdfleet.engine.annotate import annotate
from sdfleet.specs.annotate import AnnotateSpec
worker = Worker(WorkerSettings(role="annotate", cache_dir=Path({str(tmp_path / "cache")!r})), AnnotatorHost(),
                kinds=annotate_kinds())
picture = Image.new("RGB", (80, 64), "gray")
annotate(AnnotateSpec(module="canny", image="blob:x", processor_res=64), picture)
annotate(AnnotateSpec(module="depth_anything", image="blob:x", processor_res=64), picture,
         model=Path({str(model)!r}))
heavy = [m for m in ("torch", "diffusers", "transformers", "torchvision") if m in sys.modules]
print("HEAVY", heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout, out.stdout
