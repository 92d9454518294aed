"""The one place for coordinate conventions.

- Camera space: right-handed, +x right, +y up, the camera looks down -z (OpenGL / glTF).
- Pixel coordinates: continuous, origin at the top-left corner of the top-left pixel, +x right,
  +y down; the centre of pixel (row i, column j) is at (j + 0.5, i + 0.5).
- Clip space / NDC as in OpenGL: NDC x = -1 is the left image edge, NDC y = +1 the top edge.
  Rasterized images are stored top row first (row 0 = NDC y = +1).
- UV: origin bottom-left (glTF / OBJ texture coordinates). A UV image stores v = 1 in its top
  row, so the texel centre of (row i, column j) in an R x R map is u = (j + 0.5) / R,
  v = 1 - (i + 0.5) / R. ``uv_to_clip`` maps UVs to clip space so that rasterizing in UV space
  produces such images directly.
- Object (head) space: metres, same axes as camera space for a frontal face: +x to the
  subject's left (the viewer's right), +y up, +z out of the face towards the viewer.
  ``x_cam = R @ x_obj + t``.

Conversions between these live here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class PinholeCamera:
    """A perspective camera: intrinsics in pixels and the object-to-camera pose.

    Attributes:
        fx, fy (`float`): focal lengths in pixels.
        cx, cy (`float`): principal point in pixel coordinates (see module docstring).
        width, height (`int`): image size in pixels.
        rotation (`np.ndarray` of shape `(3, 3)`): object-to-camera rotation `R`.
        translation (`np.ndarray` of shape `(3,)`): object-to-camera translation `t` (metres).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def from_fov(cls, width: int, height: int, fov_degrees: float = 40.0, **pose) -> PinholeCamera:
        """A centred camera whose horizontal-or-vertical field of view (the larger side) is
        `fov_degrees`."""
        f = 0.5 * max(width, height) / np.tan(np.radians(fov_degrees) / 2)
        return cls(float(f), float(f), width / 2.0, height / 2.0, int(width), int(height), **pose)

    @property
    def intrinsics(self) -> np.ndarray:
        """`(3, 3)` matrix K mapping camera rays (x, -y, -z) to pixels (OpenCV form)."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def object_to_camera(self, points: np.ndarray) -> np.ndarray:
        """`points`: `(N, 3)` object space -> `(N, 3)` camera space."""
        return points @ np.asarray(self.rotation).T + np.asarray(self.translation)

    def camera_to_object(self, points: np.ndarray) -> np.ndarray:
        """`points`: `(N, 3)` camera space -> `(N, 3)` object space."""
        return (points - np.asarray(self.translation)) @ np.asarray(self.rotation)

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """`points_cam`: `(N, 3)` camera space (z < 0 in front) -> `(N, 2)` pixel coordinates."""
        depth = -points_cam[:, 2]
        x = self.fx * points_cam[:, 0] / depth + self.cx
        y = -self.fy * points_cam[:, 1] / depth + self.cy
        return np.stack([x, y], axis=-1)

    def unproject(self, pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """`pixels`: `(N, 2)`, `depth`: `(N,)` distance along -z -> `(N, 3)` camera space."""
        x = (pixels[:, 0] - self.cx) / self.fx * depth
        y = -(pixels[:, 1] - self.cy) / self.fy * depth
        return np.stack([x, y, -depth], axis=-1)

    def projection_matrix(self, near: float = 0.01, far: float = 10.0) -> np.ndarray:
        """`(4, 4)` OpenGL projection: camera space -> clip space, matching `project`."""
        w, h = self.width, self.height
        return np.array(
            [
                [2 * self.fx / w, 0, 1 - 2 * self.cx / w, 0],
                [0, 2 * self.fy / h, 2 * self.cy / h - 1, 0],
                [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                [0, 0, -1, 0],
            ]
        )

    def camera_to_clip(self, points_cam: np.ndarray | torch.Tensor, near=0.01, far=10.0):
        """`points_cam`: `(N, 3)` -> `(N, 4)` clip-space positions for `rendering.rasterize`."""
        proj = self.projection_matrix(near, far)
        if isinstance(points_cam, torch.Tensor):
            proj_t = torch.as_tensor(proj, dtype=points_cam.dtype, device=points_cam.device)
            ones = torch.ones_like(points_cam[:, :1])
            return torch.cat([points_cam, ones], dim=1) @ proj_t.T
        homo = np.concatenate([points_cam, np.ones_like(points_cam[:, :1])], axis=1)
        return homo @ proj.T

    def to_dict(self) -> dict:
        """JSON-friendly dict (intrinsics, OpenGL world-to-camera and camera-to-world matrices)."""
        w2c = np.eye(4)
        w2c[:3, :3] = self.rotation
        w2c[:3, 3] = self.translation
        fov_y = 2 * np.degrees(np.arctan(0.5 * self.height / self.fy))
        return {
            "convention": "OpenGL camera (+x right, +y up, looks down -z); pixels top-left origin",
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "yfov_degrees": float(fov_y),
            "intrinsics": self.intrinsics.tolist(),
            "world_to_camera": w2c.tolist(),
            "camera_to_world": np.linalg.inv(w2c).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PinholeCamera:
        w2c = np.asarray(d["world_to_camera"], dtype=np.float64)
        return cls(
            d["fx"], d["fy"], d["cx"], d["cy"], d["width"], d["height"], w2c[:3, :3], w2c[:3, 3]
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def clip_to_pixels(pos_clip: np.ndarray, width: int, height: int) -> np.ndarray:
    """`pos_clip`: `(N, 4)` -> `(N, 2)` continuous pixel coordinates (top-left origin)."""
    ndc = pos_clip[:, :2] / pos_clip[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) * 0.5 * width, (1 - ndc[:, 1]) * 0.5 * height], axis=-1)


def uv_to_clip(uv: np.ndarray | torch.Tensor):
    """`uv`: `(N, 2)` texture coordinates -> `(N, 4)` clip positions for UV-space rasterization
    (row 0 of the result is v = 1, as UV images are stored)."""
    if isinstance(uv, torch.Tensor):
        z = torch.zeros_like(uv)
        return torch.cat([uv * 2 - 1, z[:, :1], z[:, :1] + 1], dim=1)
    n = uv.shape[0]
    return np.concatenate([uv * 2 - 1, np.zeros((n, 1)), np.ones((n, 1))], axis=1)


def uv_texel_centers(resolution: int) -> np.ndarray:
    """`(R, R, 2)` UV coordinates of the texel centres of an R x R map (row 0 = top = v ~ 1)."""
    c = (np.arange(resolution) + 0.5) / resolution
    u, v = np.meshgrid(c, 1 - c)
    return np.stack([u, v], axis=-1)


def pixels_to_grid(pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel coordinates `(..., 2)` -> `torch.nn.functional.grid_sample` coordinates in [-1, 1]
    (with `align_corners=False`)."""
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=pixels.dtype, device=pixels.device)
    return pixels * scale - 1
