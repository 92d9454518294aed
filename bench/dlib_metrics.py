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
    `descriptor(image, rect=None)` -> `(128,)` face descriptor (or `None`).

    Landmarks are returned in the project's pixel convention (the centre of pixel (row i,
    column j) at (j + 0.5, i + 0.5), `rendering.camera`): dlib puts pixel centres at integers,
    so its points are shifted by half a pixel.
    """

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

    def face_near(self, image: np.ndarray, points: np.ndarray):
        """The detected face whose box holds most of `points` `(N, 2)` (e.g. the fitted face's
        landmarks), so that both sides measure the same face in a photo of several; `None`
        when no detection holds any of them."""
        best, best_count = None, 0
        x, y = points[:, 0], points[:, 1]
        for r in self.detector(self._u8(image), 1):
            inside = (x >= r.left()) & (x <= r.right()) & (y >= r.top()) & (y <= r.bottom())
            if inside.sum() > best_count:
                best, best_count = r, int(inside.sum())
        return best

    def landmarks_near(self, image: np.ndarray, points: np.ndarray):
        """`(rect, (68, 2) landmarks)` of the face `face_near(image, points)`, or `None`."""
        rect = self.face_near(image, points)
        return None if rect is None else (rect, self.landmarks(image, rect))

    def _shape(self, image, rect):
        rect = rect if rect is not None else self.largest_face(image)
        return None if rect is None else self.predictor(self._u8(image), rect)

    def landmarks(self, image: np.ndarray, rect=None) -> np.ndarray | None:
        shape = self._shape(image, rect)
        if shape is None:
            return None
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64) + 0.5

    def descriptor(self, image: np.ndarray, rect=None) -> np.ndarray | None:
        shape = self._shape(image, rect)
        if shape is None:
            return None
        return np.array(self.encoder.compute_face_descriptor(self._u8(image), shape, 1))
