"""Face detectors: each returns the faces of an RGB picture with five landmarks (the eyes, the nose tip,
the mouth corners, in the picture's coordinates — the points the FFHQ alignment needs).

* :class:`HaarDetector` — the frontal-face Haar cascade that ships inside OpenCV 4 (no file to fetch). It
  finds boxes, not landmarks: the eyes are refined with OpenCV's eye cascade when it finds two, and the
  other points are placed where they sit in an average face of that box.
* :class:`YuNetDetector` — OpenCV's ``FaceDetectorYN`` on a registered YuNet ONNX file
  (``face_detection_yunet_2023mar.onnx``, 230 KB): landmarks from the net, far fewer misses on turned or
  small faces."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from sdfleet.errors import ModelUnavailable

log = logging.getLogger("sdfleet.engine.faces")

# where the five points sit in a Haar face box, as fractions of its width and height
_BOX_POINTS = np.array(
    [[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.77], [0.65, 0.77]], dtype=np.float32
)


@dataclass(frozen=True, slots=True)
class Face:
    """One face: its box ``(x, y, w, h)``, five landmarks ``(5, 2)`` (eye on the picture's left, the other
    eye, nose tip, mouth corner on the left, the other), the detector's score, and whether the landmarks
    were measured (YuNet, or both eyes found) or placed from the box."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    score: float
    measured: bool

    @property
    def size(self) -> float:
        """The face's side in px (the larger side of its box)."""
        return float(max(self.box[2], self.box[3]))


class FaceDetector(Protocol):
    """Finds faces in an RGB ``uint8`` picture of shape ``(H, W, 3)``."""

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]  # cv2's stubs omit cv2.data
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ModelUnavailable(
            f"OpenCV's {name} is missing (opencv-python-headless 4.x ships it; OpenCV 5 does not)",
            retryable=False,
        )
    return cascade


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (shipped in the package), with eye refinement."""

    def __init__(self, min_face: int = 24, neighbours: int = 5) -> None:
        self.min_face = min_face
        self.neighbours = neighbours
        self.faces = _cascade("haarcascade_frontalface_default.xml")
        self.eyes = _cascade("haarcascade_eye.xml")

    def detect(self, rgb: np.ndarray) -> list[Face]:
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _, weights = self.faces.detectMultiScale3(
            grey,
            scaleFactor=1.1,
            minNeighbors=self.neighbours,
            minSize=(self.min_face, self.min_face),
            outputRejectLevels=True,
        )
        found = []
        for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True):
            points = _BOX_POINTS * np.array([w, h], dtype=np.float32) + np.array([x, y], dtype=np.float32)
            eyes = self._eyes(grey, int(x), int(y), int(w), int(h))
            if eyes is not None:
                points[:2] = eyes
            found.append(Face((int(x), int(y), int(w), int(h)), points, float(weight), eyes is not None))
        return found

    def _eyes(self, grey: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        """The two eye centres, when the eye cascade finds exactly one in each upper quarter of the box."""
        upper = grey[y : y + h // 2, x : x + w]
        eyes = self.eyes.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=4, minSize=(w // 10, w // 10))
        centres = [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in eyes]
        left = [c for c in centres if c[0] < w / 2]
        right = [c for c in centres if c[0] >= w / 2]
        if len(left) != 1 or len(right) != 1:
            return None
        return np.array([left[0], right[0]], dtype=np.float32) + np.array([x, y], dtype=np.float32)


class YuNetDetector:
    """OpenCV's ``FaceDetectorYN`` on a YuNet ONNX file."""

    def __init__(self, path: Path, score: float = 0.7) -> None:
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score, 0.3, 50)
        except cv2.error as exc:
            raise ModelUnavailable(
                f"{path.name} is not a YuNet face detector: {exc}", retryable=False
            ) from exc

    def detect(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        self.net.setInputSize((width, height))
        _, rows = self.net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        found = []
        for row in rows if rows is not None else ():
            x, y, w, h = (int(np.rint(v)) for v in row[:4])
            points = np.asarray(row[4:14], dtype=np.float32).reshape(5, 2)
            found.append(Face((x, y, w, h), points, float(row[14]), True))
        return found


def load_detector(path: Path | None) -> FaceDetector:
    """YuNet when a registered detector file is given, else the Haar cascade."""
    return YuNetDetector(path) if path is not None else HaarDetector()


__all__ = ["Face", "FaceDetector", "HaarDetector", "YuNetDetector", "load_detector"]
