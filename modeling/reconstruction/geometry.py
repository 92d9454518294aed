"""Camera + shape from landmarks: a perspective camera and the face mesh in camera space.

The landmarks' pixel positions are lifted along their camera rays to metric depths, so that
projecting the mesh's landmark vertices reproduces the detected landmarks exactly. The metric
scale comes from our mean face (`Topology.frontal_shape`, outer eye corners 94 mm apart); the
head pose is the similarity that best aligns the mean face with the lifted landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modeling.face_model.topology import NUM_LANDMARKS, Topology
from modeling.inputs.face_tracker import FaceLandmarks
from rendering.camera import PinholeCamera
from rendering.mesh import vertex_normals


@dataclass(frozen=True)
class FaceGeometry:
    """Attributes:
    camera (`PinholeCamera`): intrinsics of the photo and the object-to-camera pose.
    vertices_camera (`(V, 3)` float64): dense mesh in camera space (metres).
    vertices_object (`(V, 3)` float64): the same mesh in object (head) space.
    normals_camera, normals_object (`(V, 3)` float64): unit vertex normals.
    """

    camera: PinholeCamera
    vertices_camera: np.ndarray
    vertices_object: np.ndarray
    normals_camera: np.ndarray
    normals_object: np.ndarray


def similarity_transform(src: np.ndarray, dst: np.ndarray):
    """Umeyama: `(s, R, t)` minimising `|| s R src + t - dst ||` for `(N, 3)` point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / (a**2).sum() * len(src)
    return scale, rot, mu_d - scale * rot @ mu_s


def fit_camera_and_shape(
    landmarks: FaceLandmarks, topology: Topology, fov_degrees: float = 40.0
) -> FaceGeometry:
    """Perspective camera and dense mesh for one detected face.

    Args:
        landmarks (`FaceLandmarks`): points `(468, 3)`: pixel x, y and relative depth (pixels).
        topology (`Topology`): provides the mean shape and the dense-mesh operator.
        fov_degrees (`float`): field of view across the photo's longer side (unknown for a
            single photo; 40 degrees suits typical phone and portrait shots).
    """
    height, width = landmarks.image_size
    camera = PinholeCamera.from_fov(width, height, fov_degrees)
    pts = landmarks.points
    mean_face = topology.frontal_shape[:NUM_LANDMARKS]
    # MediaPipe's landmarks are a scaled (weak-perspective) copy of the face: pixels per metre.
    weak = np.stack([pts[:, 0], -pts[:, 1], -pts[:, 2]], 1)
    px_per_m, _, _ = similarity_transform(mean_face, weak)
    # Depth of the head centre (MediaPipe's depth origin) at that magnification, and of each
    # landmark relative to it.
    head_depth = camera.fx / px_per_m
    depth = head_depth + pts[:, 2] / px_per_m
    lifted = camera.unproject(pts[:, :2], depth)
    _, rot, trans = similarity_transform(mean_face, lifted)
    cam = PinholeCamera(camera.fx, camera.fy, camera.cx, camera.cy, width, height, rot, trans)
    vertices_camera = topology.lift(lifted)
    # Object space: the subject's own shape (own size) in the head frame of the mean face.
    vertices_object = cam.camera_to_object(vertices_camera)
    normals_camera = vertex_normals(vertices_camera, topology.dense_faces)
    normals_object = normals_camera @ rot
    return FaceGeometry(cam, vertices_camera, vertices_object, normals_camera, normals_object)
