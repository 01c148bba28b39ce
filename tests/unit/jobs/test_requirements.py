"""What a job needs from a worker (``requirements_of``) for the kinds of issue 16: heavy upscaler nets need
a GPU-class worker, face restoration a worker that can load restorers, a parent job nothing (no worker
takes it)."""

from __future__ import annotations

from sdfleet.domain import Feature, GenerationSpec, JobKind
from sdfleet.jobs.types import requirements_of
from sdfleet.specs.sdupscale import SdUpscaleSpec
from sdfleet.specs.upscale import UpscaleSpec


def test_upscale_needs_gpu_for_heavy_nets_and_faces_for_restorers() -> None:
    light = requirements_of(JobKind.UPSCALE, UpscaleSpec(image="blob:x", upscaler_1="compact"), None)
    assert light.features == Feature.NONE and light.model == "compact" and light.pixels == 0
    heavy = UpscaleSpec(image="blob:x", upscaler_1="esrgan", needs_gpu=True, face_restorers={"gfpgan": "g"})
    assert requirements_of(JobKind.UPSCALE, heavy, None).features == Feature.GPU | Feature.FACES
    resize = requirements_of(JobKind.UPSCALE, UpscaleSpec(image="blob:x", upscaler_1="Lanczos"), None)
    assert resize.model is None


def test_restore_faces_needs_a_worker_that_can_load_a_restorer() -> None:
    asked = GenerationSpec(restore_faces=True, face_restorer="cf")
    assert Feature.FACES in requirements_of(JobKind.TXT2IMG, asked, "sd1").features
    unregistered = GenerationSpec(restore_faces=True)  # none registered: nothing to load, any worker
    assert Feature.FACES not in requirements_of(JobKind.TXT2IMG, unregistered, "sd1").features


def test_a_parent_job_is_for_no_worker() -> None:
    spec = SdUpscaleSpec(image="blob:x", generation=GenerationSpec(model="m"))
    needs = requirements_of(JobKind.SD_UPSCALE, spec, "sd1")
    assert (needs.kind, needs.pixels, needs.model) == (JobKind.SD_UPSCALE, 0, "m")
