"""Face restoration on a whole picture: every face found is aligned, restored and pasted back
(:func:`restore_faces`); :func:`restore_for_extras` is A1111's Extras step (GFPGAN at its visibility, then
CodeFormer at its visibility and fidelity weight)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from sdfleet.engine.faces.align import alignment, crop, paste
from sdfleet.engine.faces.detect import FaceDetector, load_detector
from sdfleet.engine.faces.restore import FaceRestorer, load_restorer
from sdfleet.engine.pool import NetPool
from sdfleet.errors import Interrupted
from sdfleet.specs.upscale import UpscaleSpec

log = logging.getLogger("sdfleet.engine.faces")

MIN_FACE = 16
"""Faces smaller than this (px) are left alone: a 512 px restorer only invents detail there."""

FACE_STEPS = (("gfpgan", "gfpgan_visibility"), ("codeformer", "codeformer_visibility"))


def restore_faces(
    rgb: np.ndarray,
    detector: FaceDetector,
    restorer: FaceRestorer,
    *,
    weight: float = 0.5,
    visibility: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[np.ndarray, int]:
    """``rgb`` with each face found restored and pasted back at ``visibility``; and how many faces."""
    faces = [f for f in detector.detect(rgb) if f.size >= MIN_FACE]
    out = rgb
    for face in sorted(faces, key=lambda f: -f.size):
        if should_stop():
            raise Interrupted("stopped between faces")
        matrix = alignment(face)
        restored = restorer.restore(crop(out, matrix), weight=weight)
        out = paste(out, restored, matrix, visibility)
    return out, len(faces)


def restore_for_extras(
    picture: Image.Image,
    spec: UpscaleSpec,
    restorers: Mapping[str, Path],
    *,
    pool: NetPool,
    device: str,
    detector: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[Image.Image, int, list[str]]:
    """A1111's Extras face steps on ``picture``: for each family the job's visibilities ask for and the
    registry has (``spec.face_restorers``), its faces restored and blended in at that visibility. Returns
    the picture, the faces found, and what to tell the user (a family asked for but not registered)."""
    rgb = np.asarray(picture.convert("RGB"))
    found_detector = load_detector(detector)
    faces = 0
    notes = []
    for family, field in FACE_STEPS:
        visibility = float(getattr(spec, field))
        if visibility <= 0:
            continue
        name = spec.face_restorers.get(family)  # type: ignore[call-overload]
        path = restorers.get(name) if name else None
        if path is None:
            notes.append(f"{family}: no {family} face restorer is registered; that step was skipped")
            continue
        restorer: FaceRestorer = pool.get(path, device, load=load_restorer)
        rgb, faces = restore_faces(
            rgb,
            found_detector,
            restorer,
            weight=spec.codeformer_weight,
            visibility=visibility,
            should_stop=should_stop,
        )
        log.info("faces.restored family=%s faces=%d visibility=%.2f", family, faces, visibility)
    return Image.fromarray(rgb, mode="RGB"), faces, notes


__all__ = ["FACE_STEPS", "MIN_FACE", "restore_faces", "restore_for_extras"]
