"""Face restoration's own steps on a real photograph (scikit-image's public-domain ``astronaut``, Eileen
Collins): the face is found, aligned onto the FFHQ template, restored by a stand-in restorer and pasted back
— the rest of the picture untouched, the face changed only where the restorer changed it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdfleet.engine.faces.align import FACE_SIZE, FFHQ_TEMPLATE, alignment, crop, paste
from sdfleet.engine.faces.detect import HaarDetector
from sdfleet.engine.faces.extras import restore_faces, restore_for_extras
from sdfleet.engine.pool import NetPool
from sdfleet.engine.upscale.extras import run_extras
from sdfleet.specs.upscale import UpscaleSpec

skimage_data = pytest.importorskip("skimage.data", reason="the photograph comes with scikit-image")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut())


class Identity:
    """A restorer that gives the face back as it came: what paste-back alone does to a picture."""

    family = "identity"

    def __init__(self) -> None:
        self.faces: list[np.ndarray] = []

    def restore(self, face: np.ndarray, *, weight: float) -> np.ndarray:
        self.faces.append(face)
        return face


class Brighten(Identity):
    """A restorer that visibly changes the face (every pixel +60)."""

    def restore(self, face: np.ndarray, *, weight: float) -> np.ndarray:
        self.faces.append(face)
        return np.clip(face.astype(np.int16) + 60, 0, 255).astype(np.uint8)


def test_the_astronauts_face_is_found_with_its_eyes(astronaut: np.ndarray) -> None:
    [face] = HaarDetector().detect(astronaut)
    x, y, w, h = face.box
    # her face is in the upper middle of the 512×512 picture, about 100 px wide
    assert 140 < x + w / 2 < 260 and 60 < y + h / 2 < 160 and 70 < w < 160, face.box
    left_eye, right_eye = face.landmarks[0], face.landmarks[1]
    assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < h * 0.15
    for px, py in face.landmarks:
        assert x <= px <= x + w and y <= py <= y + h


def test_alignment_puts_the_landmarks_on_the_ffhq_template(astronaut: np.ndarray) -> None:
    [face] = HaarDetector().detect(astronaut)
    matrix = alignment(face)
    moved = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(moved - FFHQ_TEMPLATE).mean() < 20  # a similarity fit of five points: close, not exact
    aligned = crop(astronaut, matrix)
    assert aligned.shape == (FACE_SIZE, FACE_SIZE, 3)
    # the aligned crop is mostly face: skin tones, not the grey padding
    centre = aligned[200:380, 180:340].reshape(-1, 3).astype(np.int16)
    assert (centre[:, 0] - centre[:, 2]).mean() > 15  # skin is redder than it is blue


def test_paste_back_changes_only_the_face(astronaut: np.ndarray) -> None:
    identity = Identity()
    same, found = restore_faces(astronaut, HaarDetector(), identity)
    assert found == 1 and identity.faces[0].shape == (FACE_SIZE, FACE_SIZE, 3)
    diff = np.abs(same.astype(np.int16) - astronaut.astype(np.int16))
    assert diff.max() <= 40 and diff.mean() < 0.5  # only resampling there and back, inside the face
    [face] = HaarDetector().detect(astronaut)
    x, y, w, h = face.box
    outside = np.ones(astronaut.shape[:2], bool)
    outside[max(0, y - 2 * h) : y + 3 * h, max(0, x - 2 * w) : x + 3 * w] = False
    assert np.array_equal(same[outside], astronaut[outside])  # the rest of the picture, bit for bit

    brighter, _ = restore_faces(astronaut, HaarDetector(), Brighten(), visibility=1.0)
    face_box = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))
    gain = brighter[face_box].astype(np.int16) - astronaut[face_box].astype(np.int16)
    assert gain.mean() > 40  # the restored face is what shows in the middle of the face
    assert np.array_equal(brighter[outside], astronaut[outside])
    half, _ = restore_faces(astronaut, HaarDetector(), Brighten(), visibility=0.5)
    assert 15 < (half[face_box].astype(np.int16) - astronaut[face_box].astype(np.int16)).mean() < 40


def test_a_picture_without_faces_is_left_as_it_is() -> None:
    y, x = np.mgrid[0:256, 0:256]
    picture = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    out, found = restore_faces(picture, HaarDetector(), Brighten())
    assert found == 0 and np.array_equal(out, picture)


def test_paste_with_a_degenerate_crop_changes_nothing(astronaut: np.ndarray) -> None:
    matrix = np.array([[1000.0, 0, -1e6], [0, 1000.0, -1e6]])  # the crop is far outside the picture
    assert np.array_equal(paste(astronaut, np.zeros((512, 512, 3), np.uint8), matrix), astronaut)


def test_extras_restore_faces_through_the_pool_and_say_what_is_missing(
    astronaut: np.ndarray, tmp_path: Path
) -> None:
    restorer_file = tmp_path / "GFPGANv1.4.safetensors"
    restorer_file.write_bytes(b"stand-in")
    pool = NetPool()
    brighten = Brighten()
    pool.get(restorer_file, "cpu", load=lambda _p, _d: brighten)  # loaded once; the job finds it in the pool
    spec = UpscaleSpec.model_validate(
        {
            "image": "input:x",
            "input_width": 512,
            "input_height": 512,
            "upscaler_1": "None",
            "gfpgan_visibility": 1.0,
            "codeformer_visibility": 0.5,
            "face_restorers": {"gfpgan": "gfpgan-1.4"},
        }
    )
    picture = Image.fromarray(astronaut)
    out, faces, notes = restore_for_extras(
        picture, spec, {"gfpgan-1.4": restorer_file}, pool=pool, device="cpu"
    )
    assert faces == 1 and len(brighten.faces) == 1
    assert notes == ["codeformer: no codeformer face restorer is registered; that step was skipped"]
    assert np.asarray(out).astype(np.int16).sum() > astronaut.astype(np.int16).sum()
    result = run_extras(
        picture, spec, upscalers={}, restorers={"gfpgan-1.4": restorer_file}, pool=pool, device="cpu"
    )
    assert result.info["faces"] == 1 and "codeformer" in result.info["note_faces"]
