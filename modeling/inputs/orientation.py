"""Which way up is the face: photos turned by quarter turns (a phone held sideways or upside
down, a scan fed in rotated) are turned so the face is upright before it is reconstructed.

MediaPipe's face mesh follows a face's roll up to about +-90 degrees, but on an upside-down face
it returns a confident, wrong mesh (its detector's keypoints flip). So the photo is tracked as
given and turned by a quarter turn: where a face is upright or on its side, both runs find the
same landmarks (in the photo's coordinates); where they disagree, the other turns are tried
until two agree. The agreed landmarks' roll then says how many quarter turns make the face
upright, and the reconstruction runs on the photo turned that way; `turn_camera` and
`turn_points` carry its camera and landmarks back to the photo as given.

Quarter turns `k` are counter-clockwise, as `np.rot90(image, k)`.
"""

from __future__ import annotations

import numpy as np

from modeling.errors import NoFaceFoundError
from modeling.inputs.face_tracker import FaceLandmarks, FaceTracker
from rendering.camera import PinholeCamera

# Two runs agree when their landmarks are on average closer than this fraction of the face's
# size (box diagonal); a mesh fitted upside down is off by most of it.
AGREEMENT = 0.1
# MediaPipe face-mesh indices: eye centres (between the corners) and the upper-lip midpoint.
_EYE_CORNERS = (33, 133, 362, 263)
_UPPER_LIP = 13


def turn_points(points: np.ndarray, k: int, image_size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates `(N, 2+)` in an `image_size` `(H, W)` photo -> the same points in the
    photo turned by `k` quarter turns (`np.rot90(photo, k)`); extra columns (depth) are kept."""
    out = np.array(points, dtype=np.float64)
    height, width = image_size
    for _ in range(k % 4):
        x, y = out[:, 0].copy(), out[:, 1].copy()
        out[:, 0], out[:, 1] = y, width - x  # pixel (x, y) of an H x W image after one turn
        height, width = width, height
    return out


def turn_axes(k: int) -> np.ndarray:
    """`(3, 3)` rotation from the camera frame of a photo turned by `k` quarter turns to the
    camera frame of the photo before the turn (about the optical axis)."""
    # One turn back: the turned image's x' is the photo's y, its y' the photo's W - x, so camera
    # axes (X, Y, Z) = (Y', -X', Z').
    one = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return np.linalg.matrix_power(one, k % 4)


def turn_camera(camera: PinholeCamera, k: int) -> PinholeCamera:
    """The camera of a photo turned by `k` quarter turns -> the camera of the photo before the
    turn: the same pose rotated about the optical axis (`turn_axes`), the intrinsics' axes
    swapped. Camera-space quantities (e.g. SH lighting, `rendering.sh.rotate_sh`) turn with
    `turn_axes(k)`."""
    for _ in range(k % 4):
        camera = PinholeCamera(
            fx=camera.fy,
            fy=camera.fx,
            cx=camera.height - camera.cy,
            cy=camera.cx,
            width=camera.height,
            height=camera.width,
            rotation=turn_axes(1) @ camera.rotation,
            translation=turn_axes(1) @ camera.translation,
        )
    return camera


def turn_landmarks(face: FaceLandmarks, k: int) -> FaceLandmarks:
    """`face` found in a photo -> the same face in the photo turned by `k` quarter turns."""
    size = face.image_size if k % 2 == 0 else face.image_size[::-1]
    return face.mapped(lambda p: turn_points(p, k, face.image_size), size)


def upright_turns(face: FaceLandmarks) -> int:
    """Quarter turns (0-3) that bring `face` closest to upright (mouth below the eyes)."""
    eyes = face.points[list(_EYE_CORNERS), :2].mean(axis=0)
    down = face.points[_UPPER_LIP, :2] - eyes
    # The direction eyes -> mouth after each turn; upright is +y (image rows grow downwards).
    downs = [turn_points(down[None], k, (0, 0))[0] for k in range(4)]  # W = 0: a direction
    return int(np.argmax([d[1] for d in downs]))


def _agree(a: FaceLandmarks, b: FaceLandmarks) -> bool:
    size = float(np.linalg.norm(a.box[2:] - a.box[:2]))
    return float(np.linalg.norm(a.points[:, :2] - b.points[:, :2], axis=1).mean()) < (
        AGREEMENT * size
    )


def detect_upright(tracker: FaceTracker, photo: np.ndarray) -> tuple[int, list[FaceLandmarks]]:
    """Find how the photo must be turned for its largest face to be upright, and its faces.

    Args:
        tracker (`FaceTracker`), photo (`(H, W, 3)` uint8 RGB).
    Returns:
        `k` (quarter turns, 0-3) and the faces found in `np.rot90(photo, k)` (largest first).
    Raises:
        `FaceTracker.detect`'s errors for the photo as given, when no turn finds a face.
    """
    found: dict[int, list[FaceLandmarks]] = {}  # faces per turn, in that turn's coordinates
    first_error = None
    agreed = None
    for k in (0, 1, 3, 2):
        try:
            found[k] = tracker.detect(np.ascontiguousarray(np.rot90(photo, k)))
        except NoFaceFoundError as err:
            first_error = first_error or err
            continue
        except ValueError:
            if k == 0:
                raise  # e.g. the face is too small: as the photo is, so say it
            continue
        back = {j: turn_landmarks(faces[0], -j) for j, faces in found.items()}
        agreed = next((back[j] for j in back if j != k and _agree(back[j], back[k])), None)
        if agreed is not None:
            break
    if not found:
        raise first_error
    if agreed is None:  # no two turns agree: trust the photo as given, else the first found
        k = 0 if 0 in found else next(iter(found))
        agreed = turn_landmarks(found[k][0], -k)
    k = upright_turns(agreed)
    if k not in found:
        found[k] = tracker.detect(np.ascontiguousarray(np.rot90(photo, k)))
    return k, found[k]
