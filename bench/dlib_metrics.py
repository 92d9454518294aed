"""The independent reference of the real-photo metrics: dlib's HOG face detector, its 68-point
shape predictor and its ResNet face descriptor, from `face_recognition_models`.

dlib is not a dependency of the project (it builds from source, ~15+ min): `ensure_dlib(True)`
installs `dlib`, `face_recognition_models` and `setuptools<81` (the models package imports
`pkg_resources`) into the running interpreter's environment with pip.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

PACKAGES = ("dlib", "face_recognition_models", "setuptools<81")
SAME_PERSON_THRESHOLD = 0.6  # dlib's


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except Exception:
        return False
    return True


def ensure_dlib(install: bool) -> bool:
    if dlib_available():
        return True
    if not install:
        return False
    print("installing dlib (builds from source, 15+ minutes) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", *PACKAGES], check=True)
    return dlib_available()


class DlibReference:
    """`landmarks(image)` -> `(68, 2)` of the largest detected face (or `None`);
    `descriptor(image, rect=None)` -> `(128,)` face descriptor (or `None`)."""

    def __init__(self):
        import dlib
        import face_recognition_models as frm

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    @staticmethod
    def _u8(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.ascontiguousarray(image[..., :3])

    def largest_face(self, image: np.ndarray):
        rects = self.detector(self._u8(image), 1)
        return max(rects, key=lambda r: r.area()) if len(rects) else None

    def _shape(self, image, rect):
        rect = rect if rect is not None else self.largest_face(image)
        return None if rect is None else self.predictor(self._u8(image), rect)

    def landmarks(self, image: np.ndarray, rect=None) -> np.ndarray | None:
        shape = self._shape(image, rect)
        if shape is None:
            return None
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def descriptor(self, image: np.ndarray, rect=None) -> np.ndarray | None:
        shape = self._shape(image, rect)
        if shape is None:
            return None
        return np.array(self.encoder.compute_face_descriptor(self._u8(image), shape, 1))
