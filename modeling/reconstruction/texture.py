"""UV texture: unwrap the photo into our UV layout, with per-texel visibility, and complete it.

Unwrapping rasterizes the mesh in UV space (the *atlas*: which triangle and barycentrics each
texel has, cached per resolution), carries every texel to the photo through the camera, samples
the photo there, and scores the texel's visibility: hidden behind the face in the photo's depth
buffer -> 0; seen at a grazing angle -> fades to 0; on a pixel that a photo-space skin mask
(`modeling.inputs.skin_segmentation`) rejects (hair, glasses, a hand, the background) -> 0.
Completion mirrors through the symmetric UV layout (a texel's mirror partner is the horizontally
flipped texel), then fills what is still missing, inside and outside the chart, by pull-push
interpolation, so no texel is left empty. Large maps are unwrapped no finer than the photo's
detail (`photo_pixels_per_uv`, `choose_unwrap_size`) and upsampled (`upsample_maps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from modeling.face_model.topology import Topology, load_topology
from modeling.reconstruction.geometry import FaceGeometry
from rendering.camera import uv_to_clip
from rendering.rasterize import rasterize
from rendering.render import ViewRaster, barycentric_interpolate, sample_image

MIN_RESOLUTION, MAX_RESOLUTION = 64, 4096
# A pipeline's `unwrap_resolution` (`choose_unwrap_size`): "auto" unwraps maps from
# AUTO_UNWRAP_FROM px at the size the photo's detail needs (at least a quarter of the maps'),
# "full" always at the maps' size.
UNWRAP_MODES, AUTO_UNWRAP_FROM = ("auto", "full"), 2048


@dataclass(frozen=True)
class UVAtlas:
    """Texels of an R x R UV image covered by the mesh.

    Attributes:
        resolution (`int`): R.
        texels (`(N,)` int64): flat indices (row-major, top row = v = 1) of covered texels.
        faces (`(N,)` int64): dense-mesh triangle of each covered texel.
        bary (`(N, 2)` float32): barycentric weights of the triangle's vertices 0 and 1.
    """

    resolution: int
    texels: np.ndarray
    faces: np.ndarray
    bary: np.ndarray

    @property
    def chart(self) -> np.ndarray:
        """`(R, R)` bool mask of covered texels."""
        mask = np.zeros(self.resolution * self.resolution, bool)
        mask[self.texels] = True
        return mask.reshape(self.resolution, self.resolution)

    def interpolate(self, attr: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Vertex attribute `(V, C)` -> `(N, C)` float32 at the covered texels."""
        return barycentric_interpolate(attr, faces, self.faces, self.bary)

    def to_image(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """`(N, C)` texel values -> `(R, R, C)` float32 image, `fill` outside the chart."""
        r = self.resolution
        out = np.full((r * r, values.shape[1]), fill, np.float32)
        out[self.texels] = values
        return out.reshape(r, r, values.shape[1])


def check_resolution(resolution: int) -> int:
    if not isinstance(resolution, (int, np.integer)) or not (
        MIN_RESOLUTION <= resolution <= MAX_RESOLUTION
    ):
        raise ValueError(
            f"resolution must be an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], "
            f"got {resolution!r}"
        )
    return int(resolution)


@lru_cache(maxsize=4)
def uv_atlas(resolution: int, topology: Topology | None = None) -> UVAtlas:
    """Rasterize the dense mesh in UV space (cached: it depends only on the layout)."""
    resolution = check_resolution(resolution)
    topology = topology or load_topology()
    clip = uv_to_clip(topology.dense_uvs).astype(np.float32)
    rast = rasterize(clip[None], topology.dense_faces, (resolution, resolution))[0].numpy()
    flat = rast.reshape(-1, 4)
    texels = np.flatnonzero(flat[:, 3] > 0)
    return UVAtlas(
        resolution,
        texels,
        flat[texels, 3].astype(np.int64) - 1,
        np.ascontiguousarray(flat[texels, :2]),
    )


@dataclass(frozen=True)
class UnwrappedTexture:
    """Attributes (N = covered texels of `atlas`):
    atlas (`UVAtlas`).
    colors (`(N, 3)` float32): photo colours (as stored in the photo, sRGB) at each texel.
    visibility (`(N,)` float32 in [0, 1]): 0 hidden or off-image, 1 clearly seen.
    normals_camera, normals_object (`(N, 3)` float32): unit shape normals.
    skin_seen (`(N,)` float32 in [0, 1] or `None`): how much of each texel the photo showed as
        skin: the geometric visibility times the photo mask at the texel's pixel, before the
        edge fade (`None` from older callers; the geometric visibility without a mask).
    """

    atlas: UVAtlas
    colors: np.ndarray
    visibility: np.ndarray
    normals_camera: np.ndarray
    normals_object: np.ndarray
    skin_seen: np.ndarray | None = None


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def unwrap_texture(
    image: np.ndarray,
    geometry: FaceGeometry,
    view_raster: ViewRaster,
    resolution: int,
    topology: Topology | None = None,
    depth_tolerance: float = 0.004,
    grazing: tuple[float, float] = (0.15, 0.5),
    photo_mask: np.ndarray | None = None,
) -> UnwrappedTexture:
    """Unwrap the photo into UV space.

    Args:
        image (`(H, W, 3)` float32 in [0, 1]): the photo.
        geometry (`FaceGeometry`): camera and mesh.
        view_raster (`ViewRaster`): `rendering.render.rasterize_view` of the mesh (depth buffer).
        resolution (`int`): R, 64..4096.
        depth_tolerance (`float`): metres a texel may lie behind the depth buffer and still count.
        grazing (`(float, float)`): cosines of the viewing angle between which visibility ramps
            from 0 to 1.
        photo_mask (`(H, W)` float in [0, 1], *optional*): what of the photo is this face's
            skin (`modeling.inputs.skin_segmentation`); each texel's visibility is multiplied by
            it at the texel's pixel, so occluders get no texels and are completed instead.
    """
    topology = topology or load_topology()
    atlas = uv_atlas(resolution, topology)
    faces = topology.dense_faces
    points = atlas.interpolate(geometry.vertices_camera, faces)
    normals_cam = _normalize(atlas.interpolate(geometry.normals_camera, faces))
    normals_obj = _normalize(atlas.interpolate(geometry.normals_object, faces))
    cam = geometry.camera
    pixels = cam.project(points.astype(np.float64))
    colors = sample_image(image, pixels)

    h, w = view_raster.depth.shape
    col = np.clip(pixels[:, 0].astype(np.int64), 0, w - 1)
    row = np.clip(pixels[:, 1].astype(np.int64), 0, h - 1)
    # The farthest depth among the 3x3 nearest pixels: on steep slopes (the nose) a texel's
    # nearest pixel centre may show a point several millimetres nearer than the texel itself.
    far_depth = cv2.dilate(view_raster.depth, np.ones((3, 3), np.uint8))
    buffer_depth = far_depth[row, col]
    depth = -points[:, 2]
    unoccluded = (buffer_depth == 0) | (depth <= buffer_depth + depth_tolerance)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= w) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= h)
    cos_view = np.sum(normals_cam * _normalize(-points), axis=1)
    lo, hi = grazing
    facing = np.clip((cos_view - lo) / (hi - lo), 0, 1)
    visibility = (facing * unoccluded * inside).astype(np.float32)
    if photo_mask is not None:
        if photo_mask.shape != (h, w):
            raise ValueError(
                f"photo_mask must be the photo's size {(h, w)}, got shape {photo_mask.shape}"
            )
        mask = np.clip(np.asarray(photo_mask, np.float32), 0, 1)[..., None]
        visibility = visibility * sample_image(mask, pixels)[:, 0]
    # Before the fade: the fade also pulls back from the mask's edges (hair line, frames).
    skin_seen = visibility.copy()
    visibility = _pull_back_from_edges(atlas, visibility)
    return UnwrappedTexture(atlas, colors, visibility, normals_cam, normals_obj, skin_seen)


def _pull_back_from_edges(atlas: UVAtlas, visibility: np.ndarray) -> np.ndarray:
    """Fade visibility out near occlusion boundaries and the chart's border, where small
    landmark errors make texels sample the occluder or the background (seams, halos): a
    minimum filter over ~1/100 of the map, then a blur of the same size for soft blends."""
    image = atlas.to_image(visibility[:, None])[..., 0]
    radius = max(1, atlas.resolution // 100)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    image = cv2.erode(image, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    image = cv2.blur(image, (2 * radius + 1, 2 * radius + 1))
    return np.ascontiguousarray(image.reshape(-1)[atlas.texels])


def mirror_complete(values: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill low-confidence texels from their mirror partners (the layout is symmetric in u).

    Args:
        values (`(R, R, C)`), confidence (`(R, R)` in [0, 1]).
    Returns:
        completed values and the new confidence `(R, R)`.
    """
    mirrored_values = values[:, ::-1]
    own = confidence
    borrowed = confidence[:, ::-1] * (1 - confidence)
    total = own + borrowed
    safe = np.maximum(total, 1e-6)[..., None]
    blended = (values * own[..., None] + mirrored_values * borrowed[..., None]) / safe
    out = np.where(total[..., None] > 1e-6, blended, values)
    return out.astype(np.float32), np.clip(total, 0, 1).astype(np.float32)


def pull_push_fill(values: np.ndarray, weights: np.ndarray, min_size: int = 2) -> np.ndarray:
    """Scattered-data fill: keep texels where `weights` = 1, fill where 0, blend in between.

    Pull: average premultiplied values and weights down a pyramid (weights capped at 1). Push:
    from the coarsest level up, `value = own + (1 - weight) * upsampled coarser value`.

    Args:
        values (`(H, W, C)` float32), weights (`(H, W)` in [0, 1]).
    Returns:
        `(H, W, C)` float32 with no empty texel (as long as some weight is positive).
    """
    w = np.clip(weights, 0, 1).astype(np.float32)
    levels = [(values.astype(np.float32) * w[..., None], w)]
    while min(levels[-1][1].shape) > min_size:
        c, wt = levels[-1]
        size = (max(1, c.shape[1] // 2), max(1, c.shape[0] // 2))
        c2 = cv2.resize(c, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w2 = cv2.resize(wt, size, interpolation=cv2.INTER_AREA)
        big_c, big_w = 4 * c2, 4 * w2  # sums over each 2x2 block
        known = big_w >= 1  # saturated: store the plain average with weight 1
        big_c = np.where(known[..., None], big_c / np.maximum(big_w, 1e-12)[..., None], big_c)
        levels.append((big_c, np.minimum(big_w, 1.0)))
    c, wt = levels[-1]
    filled = c / np.maximum(wt, 1e-12)[..., None]
    if not np.all(wt > 0):
        filled[wt <= 0] = (c.sum((0, 1)) / max(wt.sum(), 1e-12))[None]
    for c, wt in reversed(levels[:-1]):
        up = cv2.resize(filled, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
        filled = up.reshape(c.shape)
        filled *= (1 - wt)[..., None]  # c + (1 - wt) * up, in place (4K maps: no temporaries)
        filled += c
    return filled.astype(np.float32, copy=False)


def complete_uv_map(
    image: np.ndarray, confidence: np.ndarray, use_mirror: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror, then pull-push fill: `(R, R, C)` + `(R, R)` -> complete `(R, R, C)`, and the
    confidence after mirroring."""
    if use_mirror:
        image, confidence = mirror_complete(image, confidence)
    return np.clip(pull_push_fill(image, confidence), 0, 1), confidence


@lru_cache(maxsize=4)
def skin_mask(resolution: int, topology: Topology | None = None) -> np.ndarray:
    """`(R, R)` bool: chart texels that are skin (eyes, brows and lips cut out with a margin)."""
    topology = topology or load_topology()
    exclude = np.zeros((resolution, resolution), np.uint8)
    uv = topology.base_uvs
    pts = np.stack([uv[:, 0] * resolution, (1 - uv[:, 1]) * resolution], 1)
    for loop in topology.skin_exclusion:
        cv2.fillPoly(exclude, [np.round(pts[loop] * 16).astype(np.int32)], 1, shift=4)
    margin = max(1, resolution // 64)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    exclude = cv2.dilate(exclude, kernel)
    return uv_atlas(resolution, topology).chart & (exclude == 0)


def photo_pixels_per_uv(
    geometry: FaceGeometry, topology: Topology | None = None, quantile: float = 0.9
) -> float:
    """How many photo pixels one unit of UV spans where the photo sees the face best: per
    triangle facing the camera (cosine > 0.5), `sqrt(image area / UV area)`, its `quantile`.

    A map of R px has R texels per unit of UV, so unwrapping at more than this resamples the
    photo without adding detail. (Skimage's astronaut, the face about 95 px wide: about 180;
    the same photo enlarged 8 x: about 1450.)
    """
    topology = topology or load_topology()
    faces = np.asarray(topology.dense_faces)

    def areas(points: np.ndarray) -> np.ndarray:
        a, b = points[faces[:, 1]] - points[faces[:, 0]], points[faces[:, 2]] - points[faces[:, 0]]
        return 0.5 * np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])

    pixels = geometry.camera.project(np.asarray(geometry.vertices_camera, np.float64))
    uv_area, image_area = areas(np.asarray(topology.dense_uvs, np.float64)), areas(pixels)
    centres = np.asarray(geometry.vertices_camera)[faces].mean(1)
    normals = _normalize(np.asarray(geometry.normals_camera)[faces].mean(1))
    facing = np.sum(normals * _normalize(-centres), axis=1) > 0.5
    ok = facing & (uv_area > 1e-12)
    if not ok.any():
        return 0.0
    return float(np.quantile(np.sqrt(image_area[ok] / uv_area[ok]), quantile))


def check_unwrap_mode(mode: str | int) -> str | int:
    """`mode` if it is one of `UNWRAP_MODES` or a size in px (an integer >= MIN_RESOLUTION)."""
    size = isinstance(mode, int | np.integer) and not isinstance(mode, bool)
    if (size and mode < MIN_RESOLUTION) or (not size and mode not in UNWRAP_MODES):
        raise ValueError(
            f"unwrap_resolution must be one of {UNWRAP_MODES} or an integer >= "
            f"{MIN_RESOLUTION} (px), got {mode!r}"
        )
    return int(mode) if size else mode


def choose_unwrap_size(
    mode: str | int, resolution: int, pixels_per_uv: float | Callable[[], float]
) -> int:
    """The size to unwrap the photo at for maps of `resolution` px.

    `mode` "full": `resolution`. A size in px: that size, at most `resolution` (the maps are
    then upsampled). "auto": below `AUTO_UNWRAP_FROM` px, `resolution`; from it, the smallest
    of `resolution`, `resolution // 2`, `resolution // 4` that still holds the photo's detail
    (`pixels_per_uv`, `photo_pixels_per_uv`; a function is called only then); the maps are
    then upsampled (`upsample_maps`). Unwrapping is the costly part of large maps (4096 px:
    12-24 s on 2 cores).
    """
    mode = check_unwrap_mode(mode)
    if not isinstance(mode, str):
        return min(mode, resolution)
    if mode == "full" or resolution < AUTO_UNWRAP_FROM:
        return resolution
    if callable(pixels_per_uv):
        pixels_per_uv = pixels_per_uv()
    size = resolution
    while size // 2 >= max(pixels_per_uv, resolution // 4):
        size //= 2
    return size


def upsample_maps(
    texture: np.ndarray, albedo: np.ndarray, visibility: np.ndarray, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unwrapped maps `(r, r, 3)`, `(r, r, 3)`, `(r, r)` -> `resolution` px: the colours
    bicubic (clipped to [0, 1]), the visibility bilinear."""
    size = (resolution, resolution)

    def colour(x: np.ndarray) -> np.ndarray:
        up = cv2.resize(x.astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
        return np.clip(up, 0, 1)

    vis = cv2.resize(visibility.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return colour(texture), colour(albedo), np.clip(vis, 0, 1)
