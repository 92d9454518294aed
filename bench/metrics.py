"""Pure metric functions of the public benchmark (no downloads, no dlib): landmark NME, masked
PSNR (`rendering.color.masked_psnr`, re-exported) / SSIM, rigid alignment of meshes, the fitted
mesh's iBUG-68 points in the photo."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab
from skimage.metrics import structural_similarity

from bench import landmarks68
from modeling.face_model.topology import load_topology
from rendering.color import (
    linear_to_srgb,
    luminance,
    masked_psnr,  # noqa: F401 (re-exported for bench and its tests)
    srgb_to_linear,
)

# iBUG-68 outer eye corners (subject's right eye outer corner, left eye outer corner).
OUTER_EYE_CORNERS = (36, 45)
REGIONS = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose bridge": range(27, 31),
    "nostrils": range(31, 36),
    "eyes": range(36, 48),
    "outer mouth": range(48, 60),
    "inner mouth": range(60, 68),
}


def nme(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Mean point-to-point error of `(68, 2)` points, divided by the reference's inter-ocular
    distance (outer eye corners 36 and 45); a fraction (0.035 = 3.5 %)."""
    predicted, reference = np.asarray(predicted, float), np.asarray(reference, float)
    if predicted.shape != reference.shape or predicted.shape[0] != 68:
        raise ValueError(f"need two (68, 2) arrays, got {predicted.shape} and {reference.shape}")
    a, b = OUTER_EYE_CORNERS
    iod = float(np.linalg.norm(reference[a] - reference[b]))
    if iod <= 0:
        raise ValueError("reference eye corners coincide")
    return float(np.linalg.norm(predicted - reference, axis=1).mean() / iod)


def region_errors(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """`nme` per iBUG-68 region (`REGIONS`) and over all points (`all`): fractions of the
    reference's inter-ocular distance."""
    predicted, reference = np.asarray(predicted, float), np.asarray(reference, float)
    a, b = OUTER_EYE_CORNERS
    err = np.linalg.norm(predicted - reference, axis=1) / np.linalg.norm(
        reference[a] - reference[b]
    )
    out = {name: float(err[list(idx)].mean()) for name, idx in REGIONS.items()}
    out["all"] = float(err.mean())
    return out


def mesh_ibug68(vertices_object: np.ndarray, camera) -> np.ndarray:
    """The fitted mesh's 68 iBUG landmarks in the photo, `(68, 2)` pixels: the jaw on the
    projected mesh's outline, the rest at MediaPipe landmark vertices
    (`bench.landmarks68.mesh_ibug68`)."""
    return landmarks68.mesh_ibug68(vertices_object, camera, load_topology())


def _crop(mask: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (
        slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
        slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)),
    )


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map (7x7 windows, per channel) over the pixels where `mask` is true."""
    if not mask.any():
        return float("nan")
    ys, xs = _crop(mask)
    _, smap = structural_similarity(
        np.asarray(a, np.float64)[ys, xs],
        np.asarray(b, np.float64)[ys, xs],
        data_range=1.0,
        channel_axis=-1,
        full=True,
    )
    return float(smap[mask[ys, xs]].mean())


def rigid_align(source: np.ndarray, target: np.ndarray, scale: bool = False) -> np.ndarray:
    """`source` `(N, 3)` moved onto `target` by the least-squares rotation + translation
    (Kabsch; with `scale`, a similarity, Umeyama)."""
    src, dst = np.asarray(source, float), np.asarray(target, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    k = float((sig * np.diag(fix)).sum() / (s0**2).sum()) if scale else 1.0
    return k * s0 @ rot.T + mu_d


def mean_vertex_distance_mm(fitted: np.ndarray, truth: np.ndarray, scale: bool = False) -> float:
    """Mean per-vertex distance (mm) after rigid (or similarity) alignment; inputs in metres."""
    aligned = rigid_align(fitted, truth, scale)
    return float(1000 * np.linalg.norm(aligned - np.asarray(truth, float), axis=1).mean())


def mean_linear(srgb: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`(3,)` mean linear RGB of an sRGB map `(R, R, 3)` over the texels `where` `(R, R)`."""
    return srgb_to_linear(np.clip(np.asarray(srgb, np.float64), 0, 1))[where].mean(0)


def lab(linear_rgb: np.ndarray) -> np.ndarray:
    """`(3,)` CIE L*a*b* (D65) of one linear RGB colour `(3,)`."""
    return rgb2lab(linear_to_srgb(np.clip(linear_rgb, 0, 1))[None, None])[0, 0]


def colour_shift(albedo: np.ndarray, first_order: np.ndarray, where: np.ndarray) -> float:
    """How far a de-lit albedo's mean colour moved from the first-order albedo's (the photo with
    the fitted white light divided out), exposure left out: the distance in a*, b* between the
    mean linear colours over `where` after scaling the albedo's to the first-order one's
    luminance. A white-balanced photo should keep it small."""
    a, b = mean_linear(albedo, where), mean_linear(first_order, where)
    a = a * luminance(b) / max(float(luminance(a)), 1e-12)
    return float(np.linalg.norm(lab(a)[1:] - lab(b)[1:]))


def face_vertices_of(out) -> np.ndarray:
    """The dense face's vertices `(7305, 3)` of a pipeline output (a head's skin holds them:
    `modeling.face_model.head.face_vertices`)."""
    if out.head is None:
        return out.mesh.vertices
    from modeling.face_model.head import face_vertices

    return face_vertices(out.mesh.vertices)


def frontal_yaw(camera) -> float:
    """Degrees to orbit `rendering.relight`'s camera from the photo's viewpoint to in front of
    the face (the head's +z axis, pitch ignored): 0 for a frontal photo."""
    forward = np.asarray(camera.rotation) @ np.array([0.0, 0.0, 1.0])  # in camera space
    return float(np.degrees(np.arctan2(forward[0], forward[2])))


def frontal_render(out, size: int = 384) -> np.ndarray:
    """`(size, size, 3)` sRGB: the reconstruction (`AvatarPipelineOutput`) seen from in front
    of the face under the neutral `"overcast"` environment (no photo behind it)."""
    from rendering.relight import relight

    return relight(out, "overcast", frontal_yaw(out.camera), size)
