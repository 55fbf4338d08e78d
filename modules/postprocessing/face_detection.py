"""Finding faces for the face restorers, with OpenCV.

YuNet (`cv2.FaceDetectorYN`) when its model is in models/face-detection/ (the catalog's
`yunet-2023mar`): boxes plus eye landmarks, so crops can be turned upright. Otherwise the
Haar cascade that ships inside opencv, so restoration works offline out of the box; it gives
boxes only, and the eyes are estimated from the box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_CATALOG_NAME = "yunet-2023mar"
HAAR_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Face:
    """One face: its box (x, y, width, height) in image pixels, the centres of the eye on the
    picture's left and the eye on its right, and whether those came from a landmark model
    (True) or were estimated from the box (False)."""

    box: tuple[int, int, int, int]
    eyes: tuple[tuple[float, float], tuple[float, float]]
    landmarks: bool = False
    score: float = 1.0


def eyes_from_box(box: tuple[int, int, int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where the eyes of an upright frontal face sit in a Haar box (about a third in from each
    side, 40% down): good enough to size and centre the crop."""
    x, y, w, h = box
    return (x + 0.32 * w, y + 0.40 * h), (x + 0.68 * w, y + 0.40 * h)


class FaceDetector:
    """Detects faces in RGB pictures. Built once by the app (it holds the loaded OpenCV model);
    `kind` says which detector is in use ("YuNet" or "Haar cascade")."""

    def __init__(self, folder: Path | None = None, score_threshold: float = 0.7, min_size: int = 24):
        self.min_size = min_size
        self.score_threshold = score_threshold
        self._yunet = None
        self._haar = None
        yunet = Path(folder) / YUNET_FILE if folder is not None else None
        if yunet is not None and yunet.is_file():
            import cv2

            try:
                self._yunet = cv2.FaceDetectorYN.create(str(yunet), "", (320, 320), score_threshold, 0.3, 5000)
            except cv2.error as exc:  # a truncated or foreign file: the cascade still works
                log.warning("%s could not be read (%s); using OpenCV's Haar cascade. Download '%s' again from the Models tab.",
                            yunet, str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2 error", YUNET_CATALOG_NAME)
        if self._yunet is None:
            import cv2

            self._haar = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / HAAR_FILE))
            if self._haar.empty():
                raise ValueError(f"OpenCV's {HAAR_FILE} could not be loaded: reinstall opencv-python-headless.")

    @property
    def kind(self) -> str:
        return "YuNet" if self._yunet is not None else "Haar cascade"

    def detect(self, image: Image.Image) -> list[Face]:
        """The faces in `image`, largest first."""
        import cv2

        rgb = np.asarray(image.convert("RGB"))
        if self._yunet is not None:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            self._yunet.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, found = self._yunet.detect(bgr)
            faces = []
            for row in found if found is not None else ():
                x, y, w, h = (int(round(v)) for v in row[:4])
                if min(w, h) < self.min_size:
                    continue
                first, second = (float(row[4]), float(row[5])), (float(row[6]), float(row[7]))
                eyes = (first, second) if first[0] <= second[0] else (second, first)
                faces.append(Face((x, y, w, h), eyes, True, float(row[14])))
        else:
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            boxes = self._haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size))
            faces = [Face(tuple(int(v) for v in b), eyes_from_box(tuple(int(v) for v in b))) for b in (boxes if len(boxes) else ())]
        return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)
