"""The one place for coordinate conventions.

- Camera space: right-handed, +x right, +y up, the camera looks down -z (OpenGL / glTF).
- Pixel coordinates: continuous, origin at the top-left corner of the top-left pixel, +x right,
  +y down; the centre of pixel (row i, column j) is at (j + 0.5, i + 0.5) (`pixel_centers`).
  OpenCV's `remap` / `warpAffine` take array-index coordinates instead, in which pixel centres
  are integers: index = pixel - 0.5 (`pixels_to_index`, `affine_to_index`).
- Clip space / NDC as in OpenGL: NDC x = -1 is the left image edge, NDC y = +1 the top edge.
  Rasterized images are stored top row first (row 0 = NDC y = +1): `ndc_to_pixels`,
  `clip_to_pixels`, `pixels_to_ndc`.
- UV: origin bottom-left (glTF / OBJ texture coordinates). A UV image stores v = 1 in its top
  row, so the texel centre of (row i, column j) in an R x R map is u = (j + 0.5) / R,
  v = 1 - (i + 0.5) / R (`uv_texel_centers`). `uv_to_clip` maps UVs to clip space so that
  rasterizing in UV space produces such images directly; `uv_to_pixels` and `uv_to_grid` locate
  UVs in such an image for sampling (OpenCV, `torch.nn.functional.grid_sample`).
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


def _pair(x, y):
    """Stack two coordinate arrays of the same shape `(...)` -> `(..., 2)` (numpy or torch)."""
    return torch.stack([x, y], dim=-1) if isinstance(x, torch.Tensor) else np.stack([x, y], -1)


def ndc_to_pixels(ndc, width: int, height: int):
    """NDC `(..., 2)` (x, y in [-1, 1], +y up) -> `(..., 2)` continuous pixel coordinates
    (top-left origin, +y down) of a `width` x `height` image; numpy or torch."""
    return _pair((ndc[..., 0] + 1) * (0.5 * width), (1 - ndc[..., 1]) * (0.5 * height))


def pixels_to_ndc(pixels, width: int, height: int):
    """Continuous pixel coordinates `(..., 2)` -> NDC `(..., 2)`: the inverse of
    `ndc_to_pixels`; numpy or torch."""
    return _pair(pixels[..., 0] * (2.0 / width) - 1, 1 - pixels[..., 1] * (2.0 / height))


def clip_to_pixels(pos, width: int, height: int):
    """Clip-space positions `(..., 4)` -> `(..., 2)` continuous pixel coordinates (after the
    division by w; numpy or torch, differentiable)."""
    return ndc_to_pixels(pos[..., :2] / pos[..., 3:4], width, height)


def pixel_centers(rows, cols):
    """Integer row and column indices `(...)` -> `(..., 2)` float64 (x, y) pixel coordinates
    of those pixels' centres, `(col + 0.5, row + 0.5)`; numpy or torch."""
    if isinstance(rows, torch.Tensor):
        return torch.stack([cols, rows], dim=-1).double() + 0.5
    return np.stack([cols, rows], -1).astype(np.float64) + 0.5


def pixels_to_index(pixels):
    """Continuous pixel coordinates `(..., 2)` -> array-index coordinates `(..., 2)`, in which
    pixel centres are integers (as OpenCV's `remap` and `warpAffine` sample): `pixels - 0.5`."""
    return pixels - 0.5


def affine_to_index(affine: np.ndarray) -> np.ndarray:
    """`(2, 3)` affine map of pixel coordinates -> `(2, 3)` the same map between array-index
    coordinates (`pixels_to_index`), as `cv2.warpAffine` takes it."""
    affine = np.asarray(affine, np.float64)
    linear, offset = affine[:, :2], affine[:, 2]
    # x_idx' = A (x_idx + 0.5) + t - 0.5
    return np.concatenate([linear, (offset + linear @ [0.5, 0.5] - 0.5)[:, None]], axis=1)


def uv_to_clip(uv: np.ndarray | torch.Tensor):
    """`uv`: `(N, 2)` texture coordinates -> `(N, 4)` clip positions for UV-space rasterization
    (row 0 of the result is v = 1, as UV images are stored)."""
    if isinstance(uv, torch.Tensor):
        z = torch.zeros_like(uv)
        return torch.cat([uv * 2 - 1, z[:, :1], z[:, :1] + 1], dim=1)
    n = uv.shape[0]
    return np.concatenate([uv * 2 - 1, np.zeros((n, 1)), np.ones((n, 1))], axis=1)


def uv_to_pixels(uv, width: int, height: int):
    """Texture coordinates `(..., 2)` -> `(..., 2)` continuous pixel coordinates in a `width` x
    `height` UV image (top row = v = 1): `(u W, (1 - v) H)`; numpy or torch."""
    return _pair(uv[..., 0] * width, (1 - uv[..., 1]) * height)


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """Texture coordinates `(..., 2)` -> `torch.nn.functional.grid_sample` coordinates
    `(..., 2)` into the UV image (`align_corners=False`: -1 / +1 are the outer edges of the
    left / right and top / bottom texels; the top row is v = 1)."""
    return torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)


def uv_texel_centers(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`(H, W, 2)` UV coordinates of the texel centres of an H x W UV map: texel (row i,
    column j) at u = (j + 0.5) / W, v = 1 - (i + 0.5) / H (row 0 = top = v ~ 1)."""
    u = (torch.arange(width, dtype=dtype) + 0.5) / width
    v = 1 - (torch.arange(height, dtype=dtype) + 0.5) / height
    return torch.stack([u[None, :].expand(height, width), v[:, None].expand(height, width)], -1)
