"""Face alignment and paste-back: a similarity transform takes a face's five landmarks onto the FFHQ
template (the layout GFPGAN and CodeFormer were trained on), the crop is restored at 512×512, and the
inverse transform puts it back through a mask feathered over a tenth of the face, so no edge shows."""

from __future__ import annotations

import cv2
import numpy as np

from sdfleet.engine.faces.detect import Face

FACE_SIZE = 512
FFHQ_TEMPLATE = np.array(
    [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
    dtype=np.float32,
)
"""Where the eyes, nose tip and mouth corners sit in a 512×512 FFHQ-aligned face."""
BORDER = (135, 133, 132)
"""The grey the crop is padded with where it leaves the picture (as FFHQ-trained restorers expect)."""


def alignment(face: Face, size: int = FACE_SIZE) -> np.ndarray:
    """The ``2×3`` similarity transform from the picture to the ``size``×``size`` aligned crop."""
    template = FFHQ_TEMPLATE * (size / FACE_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(face.landmarks, template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: scale and shift the box onto the template's span
        x, y, w, h = face.box
        scale = size / (1.8 * max(w, h, 1))
        cx, cy = x + w / 2, y + h / 2
        matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    return np.asarray(matrix, dtype=np.float64)


def crop(rgb: np.ndarray, matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The aligned ``size``×``size`` face crop of ``rgb``."""
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER
    )


def paste(rgb: np.ndarray, restored: np.ndarray, matrix: np.ndarray, visibility: float = 1.0) -> np.ndarray:
    """``rgb`` with the restored crop put back where :func:`crop` took it: the inverse transform, a mask
    eroded and blurred over about a tenth of the face, ``visibility`` of the restored face."""
    height, width = rgb.shape[:2]
    size = restored.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    back = cv2.warpAffine(
        restored, inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    mask = cv2.warpAffine(np.ones((size, size), np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR)
    side = float(np.sqrt(mask.sum()))  # the crop's side in the picture
    if side < 4:
        return rgb
    # feather over a twentieth of the crop (about a tenth of the face); eroded first by the blur's own
    # reach, so the blurred edge stays inside the crop
    blur = max(1, int(side // 40)) * 2 + 1
    mask = cv2.erode(mask, np.ones((blur + 2, blur + 2), np.uint8))
    mask = cv2.GaussianBlur(mask, (blur, blur), 0) * float(np.clip(visibility, 0.0, 1.0))
    mask = mask[:, :, None]
    out = rgb.astype(np.float32) * (1.0 - mask) + back.astype(np.float32) * mask
    merged: np.ndarray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    untouched = mask[:, :, 0] <= 0
    merged[untouched] = rgb[untouched]  # outside the face, the picture is not touched at all
    return merged


__all__ = ["BORDER", "FACE_SIZE", "FFHQ_TEMPLATE", "alignment", "crop", "paste"]
