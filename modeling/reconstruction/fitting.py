"""Photometric analysis-by-synthesis fitting (Photometric FLAME fitting, GANFIT, FitMe).

Given one or several photos of a person, each with its detected landmarks and an initial camera
from `modeling.reconstruction.geometry`, optimise

- per photo: a rigid pose correction (rotation vector + translation) and SH lighting (a prior
  keeps its mean shading over the skin at 1, which fixes the albedo/light scale ambiguity);
- shared by all photos (one identity): a smooth shape correction (offsets on the 468 landmark
  vertices, carried to the dense mesh by the interpolating subdivision, with a Laplacian
  prior), a low-resolution diffuse albedo in UV space (symmetry and smoothness priors) and a
  specular intensity;

against a landmark loss and a robust photometric loss on the skin (eyes, brows and lips left
out; pixels that a photo's skin mask rejects, such as hair, glasses, hands or background, get
no weight), by rendering the face with the differentiable CPU renderer at a small resolution.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import cv2
import numba
import numpy as np
import torch
import torch.nn.functional as F

from modeling.face_model.topology import NUM_LANDMARKS, Topology
from modeling.inputs.face_tracker import FaceLandmarks
from modeling.reconstruction.geometry import FaceGeometry
from rendering.camera import PinholeCamera, affine_to_index
from rendering.color import linear_to_srgb, masked_psnr, srgb_to_linear
from rendering.differentiable import interpolate_covered, rasterize_any, texture
from rendering.lights import DirectionalLight
from rendering.mesh import vertex_normals
from rendering.render import FAR, NEAR
from rendering.sh import sh_shading
from rendering.shading import (
    SKIN_SHININESS,
    bake_ambient_occlusion,
    blinn_phong_specular,
    shade_skin,
)


@dataclass(frozen=True)
class FitView:
    """One photo prepared for fitting: a square crop around the face at the render size.

    Attributes:
        image (`torch.Tensor` `(S, S, 3)`): the crop, sRGB in [0, 1].
        camera (`PinholeCamera`): the crop's intrinsics and the initial object-to-camera pose.
        landmarks (`torch.Tensor` `(468, 2)`): detected landmarks in crop pixels.
        face_size (`float`): landmark box diagonal in crop pixels (normalises the landmark loss).
        mask (`torch.Tensor` `(S, S)` in [0, 1] or `None`): the crop of the photo's skin mask
            (`modeling.inputs.skin_segmentation`): the photometric loss's per-pixel weight.
        landmark_weights (`torch.Tensor` `(468,)` in [0, 1] or `None`): each landmark's weight
            in the landmark loss (`landmark_visibility`; `None`: all 1).
    """

    image: torch.Tensor
    camera: PinholeCamera
    landmarks: torch.Tensor
    face_size: float
    mask: torch.Tensor | None = None
    landmark_weights: torch.Tensor | None = None


# A landmark whose surface turns away from the camera was not seen: MediaPipe placed it from its
# face prior. It keeps this much weight (it still says roughly where the hidden side is) ...
HIDDEN_LANDMARK_WEIGHT = 0.05
# ... and full weight from this cosine between its normal and the direction to the camera.
SEEN_LANDMARK_COSINE = 0.3


def landmark_visibility(geometry: FaceGeometry) -> np.ndarray:
    """`(468,)` float32 in [HIDDEN_LANDMARK_WEIGHT, 1]: how much each landmark of a photo was
    seen, from the facing of the initial mesh (`geometry`, camera space) at its vertex: 1 where
    the cosine between the normal and the direction to the camera is at least
    `SEEN_LANDMARK_COSINE`, falling linearly to the floor at grazing and back-facing points
    (the far cheek and jaw of a turned face, which MediaPipe invents)."""
    verts = geometry.vertices_camera[:NUM_LANDMARKS]
    normals = geometry.normals_camera[:NUM_LANDMARKS]
    to_camera = -verts / np.linalg.norm(verts, axis=1, keepdims=True)
    cosine = (normals * to_camera).sum(1)
    weight = np.clip(cosine / SEEN_LANDMARK_COSINE, 0.0, 1.0)
    return np.maximum(weight, HIDDEN_LANDMARK_WEIGHT).astype(np.float32)


def prepare_view(
    image: np.ndarray,
    landmarks: FaceLandmarks,
    camera: PinholeCamera,
    size: int = 256,
    mask: np.ndarray | None = None,
    landmark_weights: np.ndarray | None = None,
) -> FitView:
    """Crop `image` `(H, W, 3)` float around the face (1.6 x its landmark box) to `size`^2, and
    its skin `mask` `(H, W)` in [0, 1] if given (0 off the photo); `landmark_weights` `(468,)`
    (`landmark_visibility`) are kept with it."""
    x0, y0, x1, y1 = landmarks.box
    side = 1.6 * max(x1 - x0, y1 - y0)
    left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
    scale = size / side
    affine = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], dtype=np.float64)
    affine_idx = affine_to_index(affine)  # warpAffine works in array indices
    crop = cv2.warpAffine(
        image.astype(np.float32), affine_idx, (size, size), flags=cv2.INTER_AREA,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    cam = PinholeCamera(
        camera.fx * scale,
        camera.fy * scale,
        (camera.cx - left) * scale,
        (camera.cy - top) * scale,
        size,
        size,
        camera.rotation,
        camera.translation,
    )
    pts = (landmarks.points[:, :2] - [left, top]) * scale
    face_size = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    mask_crop = None
    if mask is not None:
        mask_crop = torch.from_numpy(cv2.warpAffine(
            np.asarray(mask, np.float32), affine_idx, (size, size), flags=cv2.INTER_AREA,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        ))  # fmt: skip
    weights = None if landmark_weights is None else torch.as_tensor(landmark_weights).float()
    return FitView(
        torch.from_numpy(crop), cam, torch.from_numpy(pts).float(), face_size, mask_crop, weights
    )


@dataclass
class FitResult:
    """Attributes (P photos):
    rotations (`(P, 3, 3)`), translations (`(P, 3)`): fitted object-to-camera poses.
    vertices_object (`(V, 3)`): fitted dense mesh of the identity, object space, metres.
    sh (`(P, 3, 9)`): fitted SH lighting per photo (camera space, linear RGB).
    albedo (`(R, R, 3)`): fitted low-resolution diffuse albedo, sRGB-encoded.
    specular (`float`): fitted specular intensity.
    losses (`list[float]`): total loss per step; steps (`int`): steps taken.
    psnr_before, psnr_after (`list[float]`): masked (skin) PSNR of the render per photo (on
        the pixels the photo's skin mask keeps, where one was given).
    ambient_occlusion (`(V,)` or `None`): AO of the fitted mesh (set by `fit_photos`).
    """

    rotations: np.ndarray
    translations: np.ndarray
    vertices_object: np.ndarray
    sh: np.ndarray
    albedo: np.ndarray
    specular: float
    losses: list = field(default_factory=list)
    steps: int = 0
    psnr_before: list = field(default_factory=list)
    psnr_after: list = field(default_factory=list)
    ambient_occlusion: np.ndarray | None = None

    def geometry(self, view_index: int, camera: PinholeCamera, topology: Topology) -> FaceGeometry:
        """The fitted `FaceGeometry` for photo `view_index`, with `camera`'s (full-image)
        intrinsics."""
        rot, trans = self.rotations[view_index], self.translations[view_index]
        cam = PinholeCamera(
            camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height, rot, trans
        )
        verts_cam = cam.object_to_camera(self.vertices_object)
        normals_cam = vertex_normals(verts_cam, topology.dense_faces)
        return FaceGeometry(
            cam, verts_cam, self.vertices_object.copy(), normals_cam, normals_cam @ rot
        )


def _skew(w: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    return torch.stack(
        [
            torch.stack([zero, -w[2], w[1]]),
            torch.stack([w[2], zero, -w[0]]),
            torch.stack([-w[1], w[0], zero]),
        ]
    )


def _uniform_laplacian(faces: np.ndarray, n: int) -> torch.Tensor:
    """Sparse `(n, n)` uniform graph Laplacian `I - D^-1 A` of a triangle mesh."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    degree = np.bincount(rows, minlength=n).astype(np.float32)
    vals = -1.0 / degree[rows]
    rows = np.concatenate([rows, np.arange(n)])
    cols = np.concatenate([cols, np.arange(n)])
    vals = np.concatenate([vals, np.ones(n, np.float32)])
    idx = torch.from_numpy(np.stack([rows, cols])).long()
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(vals), (n, n), check_invariants=True
    ).coalesce()


@dataclass(frozen=True)
class ViewRender:
    """One view rendered by `FaceRenderer` (S x S pixels, N of them covered by the mesh;
    tensors on the fit's device). Per-pixel values are kept for the covered pixels only.

    Attributes:
        size (`int`): S.
        pixels (`(N,)` int64): flat indices (row * S + column) of the covered pixels, ascending.
        colors (`(N, 3)`): sRGB render there.
        skin (`(N,)` bool): which of them lie on skin texels.
        skin_shading (`(M, 3)`): SH shading of the M skin pixels (for the light's scale prior).
        facing (`(N,)`): cos of the viewing angle, detached, in [0, 1].
        uv (`(N, 2)`), shading (`(N, 3)`), specular (`(N, 3)`): texture coordinates, diffuse
            shading and specular radiance, detached (for `_reestimate_albedo`).

    `color` (`(S, S, 3)`, 0 where uncovered) and `covered` (`(S, S)` bool) are the full images.
    """

    size: int
    pixels: torch.Tensor
    colors: torch.Tensor
    skin: torch.Tensor
    skin_shading: torch.Tensor
    facing: torch.Tensor
    uv: torch.Tensor
    shading: torch.Tensor
    specular: torch.Tensor

    @property
    def color(self) -> torch.Tensor:
        flat = self.colors.new_zeros(self.size * self.size, 3).index_copy(0, self.pixels,
                                                                          self.colors)  # fmt: skip
        return flat.reshape(self.size, self.size, 3)

    @property
    def covered(self) -> torch.Tensor:
        flat = torch.zeros(self.size * self.size, dtype=torch.bool, device=self.pixels.device)
        return flat.index_fill(0, self.pixels, True).reshape(self.size, self.size)

    def at_pixels(self, image: torch.Tensor) -> torch.Tensor:
        """`image` `(S, S, ...)` at the covered pixels: `(N, ...)`."""
        return image.reshape(self.size * self.size, *image.shape[2:])[self.pixels]


class FaceRenderer:
    """Differentiable render of the dense face mesh with the project's skin shader
    (`rendering.shading`): albedo x SH shading x ambient occlusion, plus normalised Blinn-Phong
    specular from the SH's dominant direction; linear RGB, returned sRGB-encoded. (Subsurface
    scattering is a UV-space step and is left out of the image-space fit.) Only the covered
    pixels are shaded (`rendering.differentiable.interpolate_covered`).

    Args:
        topology (`Topology`), size (`int`): square render resolution S.
        skin_mask_uv (`(R, R)` bool, *optional*): skin texels (for the returned skin mask).
    """

    def __init__(
        self, topology: Topology, size: int, skin_mask_uv: np.ndarray | None = None, device="cpu"
    ):
        self.size = size
        self.faces = torch.from_numpy(topology.dense_faces.astype(np.int64)).to(device)
        self.uvs = torch.from_numpy(topology.dense_uvs.astype(np.float32)).to(device)
        skin = np.ones((8, 8), bool) if skin_mask_uv is None else skin_mask_uv
        self.skin_uv = torch.from_numpy(skin.astype(np.float32))[..., None].to(device)

    def __call__(self, verts_cam, projection, sh, albedo, specular, ao=None) -> ViewRender:
        """Render one view.

        Args:
            verts_cam (`(V, 3)`): camera space; projection (`(4, 4)`):
                `PinholeCamera.projection_matrix`; sh (`(3, 9)`); albedo (`(R, R, 3)` linear);
                specular (scalar tensor): specular albedo; ao (`(V,)`, *optional*).
        """
        ones = torch.ones_like(verts_cam[:, :1])
        clip = torch.cat([verts_cam, ones], 1) @ projection.T
        rast = rasterize_any(clip.detach()[None], self.faces, (self.size, self.size))
        # One interpolation for all attributes: the barycentrics are recomputed only once.
        ao_attr = ones if ao is None else ao[:, None].to(verts_cam)
        attrs = torch.cat([self.uvs, vertex_normals(verts_cam, self.faces), verts_cam, ao_attr], 1)
        pixels, values = interpolate_covered(attrs, rast, self.faces, clip[None])
        uv, normals, points, ao_px = (values[:, :2], values[:, 2:5], values[:, 5:8],
                                      values[:, 8])  # fmt: skip
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        view = -points / points.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        uv_grid = uv[None, :, None]  # (1, N, 1, 2): `texture` samples an N x 1 "image"
        alb = texture(albedo[None], uv_grid)[0, :, 0]
        shading, _ = shade_skin(None, 0.0, normals, normals, view, sh_coeffs=sh, ao=ao_px)
        light = dominant_sh_light(sh.detach().cpu().numpy())
        spec = torch.zeros_like(shading)
        if light is not None:
            spec = blinn_phong_specular(normals, view, light, specular, SKIN_SHININESS)
        skin = texture(self.skin_uv[None], uv_grid)[0, :, 0, 0] > 0.5
        return ViewRender(
            size=self.size,
            pixels=pixels,
            colors=linear_to_srgb(alb * shading + spec),
            skin=skin,
            skin_shading=sh_shading(normals[skin], sh),
            facing=(normals * view).sum(-1).detach().clamp(0, 1),
            uv=uv.detach(),
            shading=shading.detach(),
            specular=spec.detach(),
        )


def dominant_sh_light(sh: np.ndarray) -> DirectionalLight | None:
    """The directional light of the SH's first-order lobe (luminance), in the light units of
    `rendering.lights` (`sh_from_directional` of a light of colour c has band-1 coefficients
    `pi * c * 0.4886 * direction`); `None` for a lobe-free (uniform) light."""
    band1 = np.asarray(sh)[:, [3, 1, 2]].mean(0)  # Y_3 ~ x, Y_1 ~ y, Y_2 ~ z
    strength = float(np.linalg.norm(band1))
    if strength < 1e-6:
        return None
    color = np.full(3, strength / (np.pi * 0.488603))
    return DirectionalLight(band1 / strength, color)


def _reestimate_albedo(
    renders: list[ViewRender],
    photos: list[torch.Tensor],
    albedo_logit: torch.Tensor,
    masks: list | None = None,
) -> torch.Tensor:
    """Albedo logits re-estimated from the photos under the current pose and light: every skin
    pixel's (colour - specular) / shading is splatted to its nearest texel, weighted by how
    squarely it is seen (and by the photo's skin mask `(S, S)`, where given); texels no photo
    sees take their mirror partner's value, or keep their own."""
    res = albedo_logit.shape[0]
    num = albedo_logit.new_zeros(res * res, 3)
    den = albedo_logit.new_zeros(res * res)
    masks = masks or [None] * len(photos)
    for render, photo, mask in zip(renders, photos, masks, strict=True):
        skin = render.skin
        uv = render.uv[skin]
        shading = render.shading[skin].clamp_min(0.05)
        observed = (srgb_to_linear(render.at_pixels(photo)[skin]) - render.specular[skin]) / shading
        weight = render.facing[skin] ** 2
        if mask is not None:
            weight = weight * render.at_pixels(mask)[skin]
        col = (uv[:, 0] * res).long().clamp(0, res - 1)
        row = ((1 - uv[:, 1]) * res).long().clamp(0, res - 1)
        idx = row * res + col
        num.index_add_(0, idx, observed * weight[:, None])
        den.index_add_(0, idx, weight)
    num, den = num.reshape(res, res, 3), den.reshape(res, res)
    unseen = den == 0
    num = torch.where(unseen[..., None], num.flip(1), num)
    den = torch.where(unseen, den.flip(1), den)
    prior = 0.5  # weight of the current albedo, in pixels
    estimate = (num + prior * torch.sigmoid(albedo_logit)) / (den + prior)[..., None]
    estimate = estimate.clamp(0.02, 0.98)
    return torch.log(estimate / (1 - estimate))


def _charbonnier(x: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    return torch.sqrt(x * x + eps * eps) - eps


def fit(
    views: list[FitView],
    shape_object: np.ndarray,
    topology: Topology,
    init_sh: np.ndarray,
    init_albedo: np.ndarray,
    skin_mask_uv: np.ndarray,
    num_steps: int = 80,
    weights: dict | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
    callback=None,
    ambient_occlusion: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Fit pose, shape, lighting, albedo and specular to one or more photos of one person.

    Args:
        views (`list[FitView]`): the photos (see `prepare_view`).
        shape_object (`(468, 3)`): initial landmark positions of the identity, object space.
        topology (`Topology`).
        init_sh (`(P, 3, 9)` or `(3, 9)`): initial SH lighting per photo (its DC is kept).
        init_albedo (`(R, R, 3)`): initial diffuse albedo, sRGB in [0, 1] (R ~ 64-256).
        skin_mask_uv (`(R', R')` bool): texels of skin (photometric loss region).
        num_steps (`int`): maximum Adam steps; fewer when the loss stops improving (relative
            change below `tolerance` over 10 steps).
        weights (`dict`, *optional*): loss weights overriding the defaults (keys: landmarks,
            photo, shape_laplacian, shape_l2, albedo_symmetry, albedo_smooth, light).
        callback: called as `callback(step, loss)` after each step (progress bars).
        ambient_occlusion (`(V,)`, *optional*): per-vertex AO of the dense mesh to shade with
            (`rendering.shading.bake_ambient_occlusion`; it hardly changes during the fit).
        device: where the optimisation runs (the caller's, e.g. the pipeline's device; the
            rasterizer is nvdiffrast on CUDA when installed, else the CPU kernel).
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # index_add etc. in a fixed order: same result
    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    if torch.device(device).type == "cpu":
        # The fit's tensors are small (a 256^2 render, 7k vertices): on 2 cores one thread is
        # ~10 % faster than two (bench/bench_fitting.py), the threading overhead dominating.
        # The same holds for the rasterizer (numba) at this size, and on a busy machine much
        # more: 2.7 ms a 256^2 render on one thread, 20-40 ms on two (OpenMP threads waiting
        # for each other at every kernel's end, measured with two other processes running).
        torch.set_num_threads(1)
        numba.set_num_threads(1)
    try:
        return _fit(views, shape_object, topology, init_sh, init_albedo, skin_mask_uv, num_steps,
                    weights, tolerance, seed, callback, ambient_occlusion, device)  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        numba.set_num_threads(numba_threads)


DEFAULT_WEIGHTS = {
    "landmarks": 10.0,
    "photo": 1.0,
    "shape_laplacian": 0.3,
    "shape_l2": 0.03,
    "albedo_symmetry": 3.0,
    "albedo_smooth": 0.5,
    "light": 1e-3,
    "light_scale": 1.0,
}


def _tensor(x, device, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype, device=device)


# Weights of `Topology.dense_from_landmarks` (rows summing to 1) under this are left out of the
# offsets' lift: 64 of a row's 468 remain on average and at most 0.4 % of a row's weight goes,
# under 20 um on a 5 mm offset; the initial shape is lifted exactly.
LIFT_MIN_WEIGHT = 1e-4


class _Lift:
    """Landmark offsets `(468, 3)` -> the dense mesh `(V, 3)` =
    `matrix @ (base + offsets)` for the constant `matrix` `(V, 468)`
    (`Topology.dense_from_landmarks`) and initial landmark shape `base` `(468, 3)`,
    differentiable w.r.t. the offsets: `matrix @ base` once (float64, exact), plus the offsets
    through a sparse (CSR) copy of `matrix` without its weights under `LIFT_MIN_WEIGHT`
    (1.3 ms a step forward and backward on one thread against 5.8 ms for the dense product,
    which streamed the 14 MB matrix twice a step)."""

    def __init__(self, matrix: np.ndarray, base: np.ndarray, device):
        matrix = np.asarray(matrix, np.float64)
        self.base = _tensor(matrix @ np.asarray(base, np.float64), device)
        sparse = np.where(np.abs(matrix) >= LIFT_MIN_WEIGHT, matrix, 0.0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = _tensor(sparse, device).to_sparse_csr()
            self.matrix_t = _tensor(sparse.T, device).to_sparse_csr()

    def __call__(self, offsets: torch.Tensor) -> torch.Tensor:
        return self.base + _LiftFunction.apply(offsets, self.matrix, self.matrix_t)


class _LiftFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, matrix, matrix_t):
        ctx.matrix_t = matrix_t
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return ctx.matrix_t @ grad, None, None


@dataclass(frozen=True)
class _Problem:
    """What the fit matches, on its device; fixed during the optimisation (P photos).

    Attributes:
        renderer (`FaceRenderer`), weights (`dict`): the loss weights (`DEFAULT_WEIGHTS` keys).
        lift (`_Lift`): the dense vertices from the landmark offsets to the initial landmark
            shape (object space); laplacian (sparse `(468, 468)`): of the landmark mesh.
        rot0 (`(P, 3, 3)`), trans0 (`(P, 3)`): initial poses; projections (`P x (4, 4)`),
            intrinsics (`P x (4,)`: fx, fy, cx, cy): the crops' cameras.
        photos (`P x (S, S, 3)`), targets (`P x (468, 2)`), face_sizes (`P x float`): the crops,
            their landmarks and landmark box diagonals (see `FitView`).
        ao (`(V,)` or `None`): per-vertex ambient occlusion.
        masks (`P x (S, S)` or `None` each): the crops' skin masks (see `FitView`).
        landmark_weights (`P x (468,)`): each photo's landmark weights, summing to 1 (see
            `FitView`).
    """

    renderer: FaceRenderer
    weights: dict
    lift: _Lift
    laplacian: torch.Tensor
    rot0: torch.Tensor
    trans0: torch.Tensor
    projections: list
    intrinsics: list
    photos: list
    targets: list
    face_sizes: list
    ao: torch.Tensor | None
    masks: list
    landmark_weights: list


def _problem(views, lift, topology, skin_mask_uv, weights, ambient_occlusion, device):
    """The `_Problem` of `views` (`list[FitView]`), on `device`, with the identity's `_Lift`
    (built once per fit: the full-size and the coarse problems share it)."""
    cams = [v.camera for v in views]
    return _Problem(
        renderer=FaceRenderer(topology, views[0].image.shape[0], skin_mask_uv, device),
        weights={**DEFAULT_WEIGHTS, **(weights or {})},
        lift=lift,
        laplacian=_uniform_laplacian(topology.landmark_faces, NUM_LANDMARKS).to(device),
        rot0=_tensor(np.stack([c.rotation for c in cams]), device),
        trans0=_tensor(np.stack([c.translation for c in cams]), device),
        projections=[_tensor(c.projection_matrix(NEAR, FAR), device) for c in cams],
        intrinsics=[_tensor([c.fx, c.fy, c.cx, c.cy], device) for c in cams],
        photos=[v.image.to(device) for v in views],
        targets=[v.landmarks.to(device) for v in views],
        face_sizes=[v.face_size for v in views],
        ao=None if ambient_occlusion is None else _tensor(ambient_occlusion, device),
        masks=[None if v.mask is None else v.mask.to(device) for v in views],
        landmark_weights=[_normalised_weights(v.landmark_weights, device) for v in views],
    )


def _normalised_weights(weights: torch.Tensor | None, device) -> torch.Tensor:
    """`(468,)` landmark weights summing to 1 (uniform for `None`)."""
    if weights is None:
        return torch.full((NUM_LANDMARKS,), 1.0 / NUM_LANDMARKS, device=device)
    weights = weights.to(device)
    return weights / weights.sum()


@dataclass(frozen=True)
class _Parameters:
    """The optimised tensors (P photos, albedo R x R): per photo a rotation vector `omega`
    `(P, 3)` and translation `tau` `(P, 3)` correcting the initial pose, and SH light `sh`
    `(P, 3, 9)`; shared landmark `offsets` `(468, 3)` (metres), `albedo_logit` `(R, R, 3)`
    (linear albedo = sigmoid) and `specular_raw` (scalar, specular albedo = softplus)."""

    omega: torch.Tensor
    tau: torch.Tensor
    offsets: torch.Tensor
    sh: torch.Tensor
    albedo_logit: torch.Tensor
    specular_raw: torch.Tensor

    @classmethod
    def initial(cls, n_views: int, init_sh, init_albedo, device) -> _Parameters:
        """Zero pose and shape corrections, `init_sh` `(P, 3, 9)` and `init_albedo` (sRGB)."""
        albedo_lin0 = srgb_to_linear(np.asarray(init_albedo, np.float32)).clip(0.02, 0.98)
        return cls(
            omega=_tensor(np.zeros((n_views, 3)), device).requires_grad_(),
            tau=_tensor(np.zeros((n_views, 3)), device).requires_grad_(),
            offsets=_tensor(np.zeros((NUM_LANDMARKS, 3)), device).requires_grad_(),
            sh=_tensor(init_sh, device).requires_grad_(),
            albedo_logit=_tensor(np.log(albedo_lin0 / (1 - albedo_lin0)), device).requires_grad_(),
            specular_raw=_tensor(-2.0, device).requires_grad_(),
        )

    def rotation(self, problem: _Problem, p: int) -> torch.Tensor:
        """`(3, 3)` object-to-camera rotation of photo `p`."""
        return torch.linalg.matrix_exp(_skew(self.omega[p])) @ problem.rot0[p]

    def dense_vertices(self, problem: _Problem) -> torch.Tensor:
        """`(V, 3)` dense mesh of the identity, object space."""
        return problem.lift(self.offsets)


def _view_terms(problem: _Problem, p: int, verts_cam, sh, render: ViewRender):
    """Photo `p`'s loss terms, each divided by the number of photos: photometric, landmarks,
    light prior. A generator: each term is built when the caller adds it, which keeps the
    autograd graph, and so the gradients' summation order, as the loss is written."""
    w, n_views = problem.weights, len(problem.photos)
    # Grazing pixels mix skin with what lies behind it: trust them less.
    skin = render.skin
    photo = render.at_pixels(problem.photos[p])[skin]
    residual = _charbonnier(render.colors[skin] - photo).sum(-1) * render.facing[skin]
    mask = problem.masks[p]
    if mask is None:
        yield w["photo"] * residual.mean() / n_views
    else:  # what the skin mask rejects (hair, glasses, hands) is not the face's to match
        weight = render.at_pixels(mask)[skin]
        photo_term = (residual * weight).sum() / weight.sum().clamp_min(1.0)
        yield w["photo"] * photo_term / n_views
    fx, fy, cx, cy = problem.intrinsics[p]
    lm = verts_cam[:NUM_LANDMARKS]
    px = torch.stack([fx * lm[:, 0] / -lm[:, 2] + cx, -fy * lm[:, 1] / -lm[:, 2] + cy], 1)
    per_point = ((px - problem.targets[p]) ** 2).sum(1)
    lm_err = (per_point * problem.landmark_weights[p]).sum() / problem.face_sizes[p] ** 2
    yield w["landmarks"] * 100 * lm_err / n_views
    yield w["light"] * (sh[:, 1:] ** 2).sum() / n_views


def _prior_terms(problem: _Problem, params: _Parameters, albedo, mean_shadings: list):
    """The shared priors (a generator, as `_view_terms`): light scale (from each photo's mean
    skin shading `(3,)`), shape smoothness and size, albedo symmetry and smoothness."""
    w = problem.weights
    # The shared albedo and the lights have one per-channel scale in common: pin it by our
    # convention (the light averages shading 1 over the visible skin, over all photos).
    mean_shading = torch.stack(mean_shadings).mean(0)
    yield w["light_scale"] * ((mean_shading - 1) ** 2).sum()
    mm = params.offsets * 1000  # millimetres
    yield w["shape_laplacian"] * (torch.sparse.mm(problem.laplacian, mm) ** 2).mean()
    yield w["shape_l2"] * (mm**2).mean()
    yield w["albedo_symmetry"] * ((albedo - albedo.flip(1)) ** 2).mean()
    dx = albedo[:, 1:] - albedo[:, :-1]
    dy = albedo[1:] - albedo[:-1]
    yield w["albedo_smooth"] * ((dx**2).mean() + (dy**2).mean())


def _loss(problem: _Problem, params: _Parameters) -> tuple[torch.Tensor, list[ViewRender]]:
    """The total loss (scalar) and each photo's `ViewRender`."""
    dense = params.dense_vertices(problem)
    albedo = torch.sigmoid(params.albedo_logit)
    specular = F.softplus(params.specular_raw)
    loss = problem.lift.base.new_zeros(())
    renders, mean_shadings = [], []
    for p in range(len(problem.photos)):
        verts_cam = dense @ params.rotation(problem, p).T + problem.trans0[p] + params.tau[p]
        sh = params.sh[p]
        render = problem.renderer(verts_cam, problem.projections[p], sh, albedo, specular,
                                  problem.ao)  # fmt: skip
        for term in _view_terms(problem, p, verts_cam, sh, render):
            loss = loss + term
        mean_shadings.append(render.skin_shading.mean(0))
        renders.append(render)
    for term in _prior_terms(problem, params, albedo, mean_shadings):
        loss = loss + term
    return loss, renders


def _psnr(problem: _Problem, renders: list[ViewRender]) -> list[float]:
    """Masked (skin) PSNR of each photo's render (on the skin mask's pixels, where given)."""
    out = []
    for r, photo, mask in zip(renders, problem.photos, problem.masks, strict=True):
        region = r.skin if mask is None else r.skin & (r.at_pixels(mask) > 0.5)
        out.append(masked_psnr(r.colors, r.at_pixels(photo), region if region.any() else r.skin))
    return out


def _optimize(problem: _Problem, params: _Parameters, num_steps: int, tolerance: float,
              callback, coarse: _Problem | None = None) -> list[float]:  # fmt: skip
    """Adam in two stages: pose, light and shape first against a fixed albedo (otherwise the
    albedo, the most flexible parameter, soaks up misalignment and shading), on `coarse` (the
    same photos at a lower render size) where given, then the albedo, re-estimated from the
    photos under the new poses, and the specular join. Stops early when the loss changes by
    less than `tolerance` (relative) over 10 steps. Returns the losses."""
    stage1_steps = max(1, int(0.4 * num_steps))
    optimizer = torch.optim.Adam(
        [
            {"params": [params.omega], "lr": 1e-2},
            {"params": [params.tau], "lr": 2e-3},
            {"params": [params.offsets], "lr": 3e-4},
            {"params": [params.sh], "lr": 3e-2},
        ]
    )
    losses: list[float] = []
    for step in range(num_steps):
        if step == stage1_steps:
            with torch.no_grad():  # restart the albedo from the photos seen with the new poses
                _, renders = _loss(problem, params)
                params.albedo_logit.copy_(
                    _reestimate_albedo(renders, problem.photos, params.albedo_logit, problem.masks)
                )
            optimizer.add_param_group({"params": [params.albedo_logit], "lr": 1e-2})
            optimizer.add_param_group({"params": [params.specular_raw], "lr": 3e-2})
            for group in optimizer.param_groups[:2]:
                group["lr"] *= 0.3
        optimizer.zero_grad(set_to_none=True)
        loss, _ = _loss(problem if coarse is None or step >= stage1_steps else coarse, params)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
        converging = step >= stage1_steps + 20
        if converging and losses[-11] - losses[-1] < tolerance * abs(losses[-11]):
            break
    return losses


@torch.no_grad()
def _result(problem: _Problem, params: _Parameters, losses, psnr_before) -> FitResult:
    """The fitted parameters as a `FitResult` (numpy, float64 geometry)."""
    _, renders = _loss(problem, params)
    n_views = len(problem.photos)
    rotations = np.stack([params.rotation(problem, p).cpu().numpy() for p in range(n_views)])
    return FitResult(
        rotations=rotations.astype(np.float64),
        translations=(problem.trans0 + params.tau).cpu().numpy().astype(np.float64),
        vertices_object=params.dense_vertices(problem).cpu().numpy().astype(np.float64),
        sh=params.sh.cpu().numpy().astype(np.float64),
        albedo=linear_to_srgb(torch.sigmoid(params.albedo_logit)).cpu().numpy(),
        specular=F.softplus(params.specular_raw).item(),
        losses=losses,
        steps=len(losses),
        psnr_before=psnr_before,
        psnr_after=_psnr(problem, renders),
    )


# The fit's first stage (pose, light, shape) renders at half the render size: a quarter of the
# pixels, where the landmarks and the shading's low frequencies lead; the albedo's stage
# needs the full size. Not below this size.
MIN_COARSE_SIZE = 96


def _fit(views, shape_object, topology, init_sh, init_albedo, skin_mask_uv, num_steps, weights,
         tolerance, seed, callback, ambient_occlusion, device) -> FitResult:  # fmt: skip
    torch.manual_seed(seed)
    lift = _Lift(topology.dense_from_landmarks, shape_object, device)
    problem = _problem(views, lift, topology, skin_mask_uv, weights, ambient_occlusion, device)
    init_sh = np.broadcast_to(np.asarray(init_sh, np.float32), (len(views), 3, 9))
    params = _Parameters.initial(len(views), init_sh, init_albedo, device)
    with torch.no_grad():
        psnr_before = _psnr(problem, _loss(problem, params)[1])
    coarse = None
    if views[0].image.shape[0] >= 2 * MIN_COARSE_SIZE:
        coarse = _problem([coarse_view(v) for v in views], lift, topology, skin_mask_uv,
                          weights, ambient_occlusion, device)  # fmt: skip
    losses = _optimize(problem, params, num_steps, tolerance, callback, coarse)
    return _result(problem, params, losses, psnr_before)


def coarse_view(view: FitView) -> FitView:
    """`view` at half its size: the crop and its mask area-averaged, the camera and the
    landmarks scaled (pixel coordinates have their origin at the image's corner, so x / 2 is
    the same point), `face_size` halved (the landmark loss, divided by its square, keeps its
    value)."""
    size = view.image.shape[0] // 2
    scale = size / view.image.shape[0]  # 1/2, or just under for an odd size
    c = view.camera
    camera = PinholeCamera(c.fx * scale, c.fy * scale, c.cx * scale, c.cy * scale, size, size,
                           c.rotation, c.translation)  # fmt: skip

    def half(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(cv2.resize(x.numpy(), (size, size), interpolation=cv2.INTER_AREA))

    return FitView(
        image=half(view.image),
        camera=camera,
        landmarks=view.landmarks * scale,
        face_size=view.face_size * scale,
        mask=None if view.mask is None else half(view.mask),
        landmark_weights=view.landmark_weights,
    )


def fit_photos(
    images: list[np.ndarray],
    landmarks: list[FaceLandmarks],
    geometries: list[FaceGeometry],
    topology: Topology,
    num_steps: int = 80,
    render_size: int = 256,
    albedo_resolution: int = 128,
    callback=None,
    device: str | torch.device = "cpu",
    masks: list[np.ndarray | None] | None = None,
) -> FitResult:
    """Initialise and run `fit` for one or more photos of one person.

    Each photo's first-order light and albedo
    (`modeling.reconstruction.first_order.first_order_maps`) start the fit; the photos' albedos are
    fused by visibility and their landmark shapes averaged in object space.

    Args:
        images (`list` of `(H, W, 3)` float32 sRGB), landmarks (`list[FaceLandmarks]`),
        geometries (`list[FaceGeometry]`, from
        `modeling.reconstruction.geometry.fit_camera_and_shape`).
        masks (`list` of `(H, W)` in [0, 1] or `None`, *optional*): each photo's skin mask
            (`modeling.inputs.skin_segmentation`): rejected pixels neither start the albedo nor
            weigh in the photometric loss.
    """
    from modeling.reconstruction.first_order import first_order_maps
    from modeling.reconstruction.texture import skin_mask
    from rendering.render import rasterize_view

    shape = np.mean([g.vertices_object[:NUM_LANDMARKS] for g in geometries], axis=0)
    ao = face_ambient_occlusion(topology.lift(shape), topology)
    views, lights, albedos, weights = [], [], [], []
    masks = masks or [None] * len(images)
    for image, lm, geometry, mask in zip(images, landmarks, geometries, masks, strict=True):
        rast = rasterize_view(geometry.camera, geometry.vertices_camera, topology.dense_faces)
        init = first_order_maps(image, geometry, rast, albedo_resolution, topology, ao=ao,
                                photo_mask=mask)  # fmt: skip
        seen = landmark_visibility(geometry)
        views.append(prepare_view(image, lm, geometry.camera, render_size, mask, seen))
        lights.append(init.lighting)
        albedos.append(init.albedo)
        weights.append(init.visibility[..., None] + 1e-3)  # unseen: average the completions
    albedo = sum(a * w for a, w in zip(albedos, weights, strict=True)) / sum(weights)
    result = fit(
        views,
        shape,
        topology,
        np.stack(lights),
        albedo,
        skin_mask(albedo_resolution, topology),
        num_steps=num_steps,
        callback=callback,
        ambient_occlusion=ao,
        device=device,
    )
    result.ambient_occlusion = face_ambient_occlusion(result.vertices_object, topology)
    return result


# Floor of the baked AO: the deepest values sit on the fans that close the eyes and mouth,
# which are not real surfaces (dividing photos by them turns teeth and eyes white).
MIN_AMBIENT_OCCLUSION = 0.5


def face_ambient_occlusion(vertices_object: np.ndarray, topology: Topology) -> np.ndarray:
    """`(V,)` ambient occlusion of the dense face mesh (64 directions, ~0.2 s), floored at
    `MIN_AMBIENT_OCCLUSION`."""
    normals = vertex_normals(vertices_object, topology.dense_faces)
    ao = bake_ambient_occlusion(vertices_object, topology.dense_faces, normals)
    return np.maximum(ao, MIN_AMBIENT_OCCLUSION)
