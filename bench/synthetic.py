"""Synthetic photos of a face with known pose, lighting and albedo (for recovery tests and
benchmarks): the mean face rendered by the same differentiable renderer the fitting uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from modeling.face_model.topology import NUM_LANDMARKS, Topology
from modeling.inputs.face_tracker import FaceLandmarks
from modeling.reconstruction.fitting import FaceRenderer
from modeling.reconstruction.geometry import FaceGeometry
from rendering.camera import PinholeCamera
from rendering.mesh import vertex_normals
from rendering.sh import sh_shading, uniform_white
from rendering.shading import bake_ambient_occlusion


def synthetic_albedo(resolution: int = 128) -> np.ndarray:
    """A symmetric, smoothly varying skin albedo `(R, R, 3)` in linear RGB: base tone, redder
    cheeks and lips region, darker brows, lighter forehead."""
    c = (np.arange(resolution) + 0.5) / resolution
    u, v = np.meshgrid(c, 1 - c)
    du = np.abs(u - 0.5)

    def blob(cu, cv, s):
        return np.exp(-((du - cu) ** 2 + (v - cv) ** 2) / (2 * s * s))

    base = np.array([0.50, 0.33, 0.25])
    albedo = base + 0.12 * blob(0.2, 0.45, 0.08)[..., None] * np.array([1.0, 0.2, 0.1])
    albedo = albedo + 0.10 * blob(0.0, 0.32, 0.06)[..., None] * np.array([0.8, -0.3, -0.2])
    albedo = albedo - 0.15 * blob(0.15, 0.70, 0.05)[..., None] * np.array([1.0, 1.0, 1.0])
    albedo = albedo + 0.08 * blob(0.0, 0.85, 0.12)[..., None]
    return np.clip(albedo, 0.02, 0.95).astype(np.float32)


def directional_sh(direction, strength: float = 1.0, ambient: float = 0.8) -> np.ndarray:
    """`(3, 9)` white SH light: ambient plus a first-order lobe towards `direction` (unit,
    camera space)."""
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    sh = uniform_white() * ambient
    sh[:, 3], sh[:, 1], sh[:, 2] = strength * d[0], strength * d[1], strength * d[2]
    return sh


@dataclass(frozen=True)
class SyntheticView:
    """Attributes: image `(S, S, 3)` sRGB float32; landmarks (`FaceLandmarks`, as MediaPipe
    would report them); camera (`PinholeCamera`, true pose); sh `(3, 9)` (true light,
    normalised on the visible face); vertices_object `(V, 3)` (true shape)."""

    image: np.ndarray
    landmarks: FaceLandmarks
    camera: PinholeCamera
    sh: np.ndarray
    vertices_object: np.ndarray


def true_geometry(view: SyntheticView, topology: Topology) -> FaceGeometry:
    """The `FaceGeometry` a view was rendered with: its true camera and the mean face (for
    benches and tests that isolate a later stage from tracking and fitting errors)."""
    verts = view.camera.object_to_camera(view.vertices_object)
    normals = vertex_normals(verts, topology.dense_faces)
    return FaceGeometry(view.camera, verts, view.vertices_object, normals,
                        normals @ view.camera.rotation)  # fmt: skip


def render_view(
    topology: Topology,
    albedo_linear: np.ndarray,
    yaw_pitch_roll=(0.0, 0.0, 0.0),
    light_direction=(0.5, 0.4, 0.8),
    specular: float = 0.2,
    size: int = 256,
    distance: float = 0.45,
    landmark_noise_px: float = 0.3,
    background: float = 0.3,
    seed: int = 0,
) -> SyntheticView:
    """Render the mean face (frontal shape lifted to the dense mesh), known pose and light."""
    camera = PinholeCamera.from_fov(size, size, 40.0)
    rot = Rotation.from_euler("yxz", yaw_pitch_roll, degrees=True).as_matrix()
    trans = np.array([0.0, 0.0, -distance])
    verts_obj = topology.lift(topology.frontal_shape[:NUM_LANDMARKS])
    verts_cam = verts_obj @ rot.T + trans
    normals = vertex_normals(verts_cam, topology.dense_faces)
    sh = directional_sh(light_direction)
    facing = normals[:, 2] > 0.3
    sh = sh / sh_shading(normals[facing], sh).mean(0)[:, None]
    renderer = FaceRenderer(topology, size)
    with torch.no_grad():
        render = renderer(
            torch.tensor(verts_cam, dtype=torch.float32),
            torch.tensor(camera.projection_matrix(), dtype=torch.float32),
            torch.tensor(sh, dtype=torch.float32),
            torch.tensor(albedo_linear),
            torch.tensor(specular),
            torch.from_numpy(
                bake_ambient_occlusion(
                    verts_obj, topology.dense_faces, vertex_normals(verts_obj, topology.dense_faces)
                )
            ),
        )
    image = np.full((size, size, 3), background, np.float32)
    covered = render.covered.numpy()
    image[covered] = render.color.numpy()[covered]
    pts = verts_cam[:NUM_LANDMARKS]
    pixels = camera.project(pts)
    pixels += np.random.default_rng(seed).normal(0, landmark_noise_px, pixels.shape)
    depth = -pts[:, 2]
    z = (depth - depth.mean()) * camera.fx / depth.mean()
    landmarks = FaceLandmarks.from_points(np.column_stack([pixels, z]), (size, size))
    true_cam = PinholeCamera(camera.fx, camera.fy, camera.cx, camera.cy, size, size, rot, trans)
    return SyntheticView(image, landmarks, true_cam, sh, verts_obj)
