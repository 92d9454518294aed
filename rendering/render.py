"""Rendering helpers on top of `rasterize`: view rasterization with metric depth, texture and
image sampling, and the render of the face over its photo."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba
import numpy as np

from rendering.camera import PinholeCamera, pixels_to_index, uv_to_pixels
from rendering.color import linear_to_srgb, srgb_to_linear
from rendering.rasterize import rasterize
from rendering.sh import sh_shading

NEAR, FAR = 0.01, 10.0


@dataclass(frozen=True)
class ViewRaster:
    """A mesh rasterized into a camera's image, with *metric* depth (unlike `rasterize`'s
    NDC z/w), for depth tests against camera-space points.

    Attributes:
        bary (`(H, W, 2)` float32): barycentric weights of the triangle's vertices 0 and 1.
        depth (`(H, W)` float32): distance along -z in metres, 0 where empty.
        face_ids (`(H, W)` int64): 0-based triangle id, -1 where empty.
    """

    bary: np.ndarray
    depth: np.ndarray
    face_ids: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """`(H, W)` bool: pixels the mesh covers."""
        return self.face_ids >= 0

    def interpolate(self, attr: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Vertex attribute `(V, C)` -> `(N, C)` float32 at the N covered pixels (row-major)."""
        mask = self.mask
        return barycentric_interpolate(attr, faces, self.face_ids[mask], self.bary[mask])


def rasterize_view(
    camera: PinholeCamera, vertices_camera: np.ndarray, faces: np.ndarray
) -> ViewRaster:
    """Rasterize a camera-space mesh `(V, 3)` with `faces` `(F, 3)` into the camera's image."""
    clip = camera.camera_to_clip(vertices_camera, NEAR, FAR).astype(np.float32)
    rast = rasterize(clip[None], faces, (camera.height, camera.width))[0].numpy()
    covered = rast[..., 3] > 0
    zndc = rast[..., 2]
    depth = 2 * FAR * NEAR / ((FAR + NEAR) - zndc * (FAR - NEAR))
    return ViewRaster(
        bary=np.ascontiguousarray(rast[..., :2]),
        depth=np.where(covered, depth, 0).astype(np.float32),
        face_ids=rast[..., 3].astype(np.int64) - 1,
    )


def barycentric_interpolate(
    attr: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, bary_uv: np.ndarray
) -> np.ndarray:
    """Interpolate vertex attributes `attr` `(V, C)` at fragments given by 0-based `face_ids`
    `(N,)` and barycentrics `bary_uv` `(N, 2)` (weights of vertices 0 and 1) -> `(N, C)`
    float32: `w0 a0 + w1 a1 + (1 - w0 - w1) a2`, summed in that order in the precision of
    `attr` and `bary_uv` (as numpy would: the same values), in one parallel pass over the
    fragments (millions of texels at 4096 px: numpy's gathers took 0.4 s a call there)."""
    attr = np.asarray(attr)
    if attr.dtype not in (np.float32, np.float64):
        attr = attr.astype(np.float64)
    bary = np.ascontiguousarray(bary_uv, np.float32)
    ids = np.ascontiguousarray(face_ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(faces)):
        raise IndexError(f"face ids must be in [0, {len(faces)}), got {ids.min()}..{ids.max()}")
    return _interpolate_kernel(np.ascontiguousarray(attr), np.ascontiguousarray(faces, np.int64),
                               ids, bary)  # fmt: skip


@numba.njit(cache=True, parallel=True)
def _interpolate_kernel(attr, faces, face_ids, bary):  # pragma: no cover (compiled)
    n, c = face_ids.shape[0], attr.shape[1]
    out = np.empty((n, c), np.float32)
    one = np.float32(1.0)
    for i in numba.prange(n):
        f = face_ids[i]
        v0, v1, v2 = faces[f, 0], faces[f, 1], faces[f, 2]
        w0, w1 = bary[i, 0], bary[i, 1]
        w2 = one - w0 - w1
        for k in range(c):
            value = attr[v0, k] * w0
            value += attr[v1, k] * w1
            value += attr[v2, k] * w2
            out[i, k] = value
    return out


def _remap_points(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """cv2.remap at N scattered points (remap's maps must be < 32767 wide: fold into rows)."""
    n = map_x.shape[0]
    cols = 4096
    rows = -(-n // cols)
    pad = rows * cols - n
    mx = np.pad(map_x.astype(np.float32), (0, pad)).reshape(rows, cols)
    my = np.pad(map_y.astype(np.float32), (0, pad)).reshape(rows, cols)
    out = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]


def sample_uv_map(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an `(R, R, C)` UV image (top row = v = 1) at `uv` `(N, 2)` -> `(N, C)`."""
    return sample_image(texture, uv_to_pixels(uv, texture.shape[1], texture.shape[0]))


def sample_image(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an `(H, W, C)` image at continuous pixel coordinates `(N, 2)`."""
    index = pixels_to_index(pixels)
    return _remap_points(image, index[:, 0], index[:, 1])


def render_over_photo(
    image: np.ndarray,
    raster: ViewRaster,
    faces: np.ndarray,
    uvs: np.ndarray,
    normals_camera: np.ndarray,
    ao: np.ndarray,
    albedo_map: np.ndarray,
    lighting: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The mesh shaded as albedo x SH shading x ambient occlusion, composited over the photo.

    Args:
        image (`(H, W, 3)` float32 sRGB): the photo; `raster`: the mesh in its camera.
        faces (`(F, 3)`), uvs (`(V, 2)`), normals_camera (`(V, 3)`), ao (`(V,)`): the mesh.
        albedo_map (`(R, R, 3)` sRGB): diffuse albedo in UV space.
        lighting (`(3, 9)`): SH light in camera space (`rendering.sh`).
    Returns:
        `(H, W, 3)` float32 sRGB render and its `(H, W)` bool mask.
    """
    mask = raster.mask
    albedo = srgb_to_linear(sample_uv_map(albedo_map, raster.interpolate(uvs, faces)))
    render = image.copy()
    render[mask] = linear_to_srgb(albedo * _shading(raster, faces, normals_camera, ao, lighting))
    return render, mask


def shading_image(
    raster: ViewRaster, faces: np.ndarray, normals_camera: np.ndarray, ao: np.ndarray,
    lighting: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """`(H, W, 3)` float32 linear: the mesh's SH shading x ambient occlusion at each pixel it
    covers (what multiplies the albedo in `render_over_photo`), 0 elsewhere. Arguments as
    `render_over_photo`'s."""
    out = np.zeros((*raster.face_ids.shape, 3), np.float32)
    out[raster.mask] = _shading(raster, faces, normals_camera, ao, lighting)
    return out


def _shading(raster, faces, normals_camera, ao, lighting) -> np.ndarray:
    """`(N, 3)` SH shading x ambient occlusion at the N covered pixels (row-major)."""
    normals = raster.interpolate(normals_camera, faces)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    occlusion = raster.interpolate(ao[:, None], faces)
    return np.maximum(sh_shading(normals, lighting), 0) * occlusion
