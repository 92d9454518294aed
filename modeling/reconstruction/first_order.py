"""First-order de-lighting: fit spherical-harmonic lighting to the visible skin, divide it out.

Albedo and light are ambiguous up to a per-channel scale from one photo. We fix it by the
convention that the light is white and averages shading 1 over the visible skin, so the diffuse
albedo keeps the photo's white balance and exposure and loses only its directional shading.
All of this happens in linear colour; colour maps are stored sRGB-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from modeling.face_model.topology import Topology
from modeling.reconstruction.geometry import FaceGeometry
from modeling.reconstruction.texture import (
    UnwrappedTexture,
    complete_uv_map,
    mirror_complete,
    pull_push_fill,
    skin_mask,
    unwrap_texture,
)
from rendering.color import linear_to_srgb, luminance, srgb_to_linear
from rendering.render import ViewRaster
from rendering.sh import sh_shading, shading_basis

# Completion sources (`capped_highlights`): a skin texel at most this much brighter than the
# seen skin around it, over this share of the map's width (1.15 and 1/16 on the test faces of
# `bench.completion_limits`: 60 deg unseen texels +1.7 dB; 1.05 gave +3.1 dB there but -3.2 dB
# at 0 deg, where the sides' own brightness is capped).
HIGHLIGHT_CAP = 1.15
HIGHLIGHT_RADIUS = 1 / 16
# The completed skin (`soften_completed_skin`): its local mean over this share of the map's
# width plus this share of its finer detail. What the mirror copies is the other side's skin
# with its de-lighting error, which is not this side's; its mean colour is the better guess
# (`bench.completion_limits`: 60 deg unseen texels 29.6 -> 30.8 dB, every yaw better; all of
# the detail removed gains about 1 dB more, and leaves a bald half-face).
SOFTEN_RADIUS = 3 / 128
SOFTEN_DETAIL = 0.5
SOFTEN_BELOW = 0.1  # visibility under which a texel is softened (fully at 0)
# The skin prior of the completion (`structure_correction`), built by
# `scripts/build_skin_structure.py` from the reflectance generator's training faces.
SKIN_STRUCTURE = Path(__file__).resolve().parents[1] / "face_model/assets/skin_structure.npz"


def estimate_sh_lighting(
    colors_linear: np.ndarray,
    normals: np.ndarray,
    weights: np.ndarray,
    ridge: float = 1e-5,
    iterations: int = 3,
    max_samples: int = 60_000,
    seed: int = 0,
) -> np.ndarray:
    """Least-squares SH lighting from skin texels, robust to outliers (beard, highlights).

    Args:
        colors_linear (`(N, 3)`): linear RGB of skin texels.
        normals (`(N, 3)`): unit normals, in the space the lighting is wanted (camera space).
        weights (`(N,)`): per-texel confidence (visibility); 0 excludes a texel.
        ridge (`float`): Tikhonov weight on the first- and second-order bands, relative to the
            data term (a half-seen face constrains them weakly).
    Returns:
        `(3, 9)` SH coefficients (see `rendering.sh`), normalised so the mean shading over the
        used texels is 1 per channel.
    """
    keep = np.flatnonzero(weights > 0.5)
    if len(keep) < 50:
        raise ValueError("too few visible skin texels to estimate the lighting")
    if len(keep) > max_samples:  # a deterministic subsample is plenty for 27 unknowns
        keep = np.random.default_rng(seed).choice(keep, max_samples, replace=False)
    basis = shading_basis(normals[keep].astype(np.float64))
    target = colors_linear[keep].astype(np.float64)
    w = weights[keep].astype(np.float64)
    reg = np.diag([0.0] + [ridge] * 8)
    active = np.ones(len(keep), bool)
    for _ in range(iterations):
        a = basis[active] * w[active, None]
        lhs = a.T @ basis[active] / w[active].sum() + reg
        coeffs = np.linalg.solve(lhs, a.T @ target[active] / w[active].sum()).T
        residual = np.abs(basis @ coeffs.T - target).mean(1)
        active = residual < 2.5 * np.median(residual[active]) + 1e-6
    mean_shading = (basis[active] @ coeffs.T).mean(0)
    return coeffs / np.maximum(mean_shading, 1e-6)[:, None]


def normalize_lighting(coeffs: np.ndarray, normals: np.ndarray, weights: np.ndarray):
    """Rescale `coeffs` `(3, 9)` per channel so the weighted mean shading of `normals` `(N, 3)`
    is 1 (our albedo/light scale convention)."""
    shading = sh_shading(normals.astype(np.float64), coeffs)
    mean = (shading * weights[:, None]).sum(0) / max(weights.sum(), 1e-12)
    return coeffs / np.maximum(mean, 1e-6)[:, None]


def delight(
    colors_linear: np.ndarray,
    normals: np.ndarray,
    coeffs: np.ndarray,
    min_shading: float = 0.15,
    ao: np.ndarray | None = None,
) -> np.ndarray:
    """Diffuse albedo `(N, 3)` in linear RGB = colour / (SH shading x ambient occlusion `ao`
    `(N,)`, if given), floored at `min_shading` so deep shadows are not amplified into noise,
    clipped to [0, 1]."""
    shading = sh_shading(normals.astype(np.float64), coeffs)
    if ao is not None:
        shading = shading * ao[:, None]
    shading = np.maximum(shading, min_shading)
    return np.clip(colors_linear / shading, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class FirstOrderMaps:
    """Attributes:
    unwrapped (`UnwrappedTexture`): per-texel photo colours, visibility, normals.
    lighting (`(3, 9)`): SH lighting (camera space), normalised on the visible skin.
    texture, albedo (`(R, R, 3)` float32 sRGB): completed photo texture and diffuse albedo.
    visibility (`(R, R)` float32).
    texture_seen, albedo_seen (`(R, R, 3)`): the same before completion (0 off the chart).
    skin_seen (`(R, R)` float32 or `None`): what the photo showed of each texel as skin
        (`UnwrappedTexture.skin_seen`; the geometric visibility where no photo mask was given).
    skin (`(R, R)` bool or `None`): the layout's skin texels (`texture.skin_mask`).
    """

    unwrapped: UnwrappedTexture
    lighting: np.ndarray
    texture: np.ndarray
    albedo: np.ndarray
    visibility: np.ndarray
    texture_seen: np.ndarray
    albedo_seen: np.ndarray
    skin_seen: np.ndarray | None = None
    skin: np.ndarray | None = None


def first_order_maps(
    image: np.ndarray,
    geometry: FaceGeometry,
    view_raster: ViewRaster,
    resolution: int,
    topology: Topology,
    lighting: np.ndarray | None = None,
    ao: np.ndarray | None = None,
    photo_mask: np.ndarray | None = None,
) -> FirstOrderMaps:
    """Unwrap the photo, estimate (or take) the SH lighting, divide it out, complete the maps.

    Args:
        image (`(H, W, 3)` float32 sRGB in [0, 1]), geometry, view_raster: as `unwrap_texture`.
        lighting (`(3, 9)`, *optional*): a known light (e.g. fitted); re-normalised on the skin.
        ao (`(V,)`, *optional*): per-vertex ambient occlusion of the dense mesh, divided out
            with the light (the photo's shading includes the face's self-occlusion).
        photo_mask (`(H, W)` in [0, 1], *optional*): the photo's skin mask
            (`modeling.inputs.skin_segmentation`): rejected pixels give no texels, so they
            neither colour the maps nor count for the light, and are completed instead.
    """
    unwrapped = unwrap_texture(
        image, geometry, view_raster, resolution, topology, photo_mask=photo_mask
    )
    atlas = unwrapped.atlas
    colors_lin = srgb_to_linear(unwrapped.colors)
    ao_texels = None if ao is None else atlas.interpolate(ao[:, None], topology.dense_faces)[:, 0]
    if ao_texels is not None:  # the light is estimated from the unoccluded part of the shading
        colors_for_light = colors_lin / np.maximum(ao_texels, 0.3)[:, None]
    else:
        colors_for_light = colors_lin
    weights = unwrapped.visibility * skin_mask(resolution, topology).reshape(-1)[atlas.texels]
    if lighting is None:
        lighting = estimate_sh_lighting(colors_for_light, unwrapped.normals_camera, weights)
    else:
        lighting = normalize_lighting(lighting, unwrapped.normals_camera, weights)
    albedo_lin = delight(colors_lin, unwrapped.normals_camera, lighting, ao=ao_texels)
    visibility = atlas.to_image(unwrapped.visibility[:, None])[..., 0]
    texture_seen = atlas.to_image(unwrapped.colors)
    albedo_seen = atlas.to_image(linear_to_srgb(albedo_lin))
    texture, _ = complete_uv_map(texture_seen, visibility)
    skin = skin_mask(resolution, topology)
    albedo = complete_albedo(albedo_seen, visibility, skin)
    skin_seen = atlas.to_image(unwrapped.skin_seen[:, None])[..., 0]
    return FirstOrderMaps(
        unwrapped,
        lighting,
        texture,
        albedo,
        visibility,
        texture_seen,
        albedo_seen,
        skin_seen,
        skin,
    )


def capped_highlights(albedo: np.ndarray, visibility: np.ndarray, skin: np.ndarray):
    """`(R, R, 3)` sRGB: `albedo` with each skin texel's luminance capped at `HIGHLIGHT_CAP` x
    the seen skin's around it (geometric mean, Gaussian over `HIGHLIGHT_RADIUS` of the map,
    then again without the texels over the cap),
    its chromaticity kept: the specular highlights that first-order de-lighting leaves in
    (a diffuse albedo has no bright spots; eyes, teeth and lips are not skin: left as they
    are)."""
    linear = srgb_to_linear(np.clip(albedo, 0, 1))
    level = luminance(linear).astype(np.float32) + 1e-4
    weight = ((visibility > 0.5) & skin).astype(np.float32)
    for _ in range(2):  # the second time without the highlights found the first
        cap = HIGHLIGHT_CAP * np.exp(_local_mean(np.log(level), weight, HIGHLIGHT_RADIUS))
        weight = weight * (level <= cap)
    scale = np.where(skin, np.minimum(1.0, cap / level), 1.0)
    return linear_to_srgb(linear * scale[..., None]).astype(np.float32)


def soften_completed_skin(
    completed: np.ndarray, skin: np.ndarray, amount: np.ndarray | None = None
) -> np.ndarray:
    """`(R, R, 3)`: `completed` with each skin texel its skin neighbourhood's mean (Gaussian
    over `SOFTEN_RADIUS` of the map, skin texels only: the lips' and brows' colours stay out)
    plus `SOFTEN_DETAIL` of its own difference to it, blended in by `amount` `(R, R)` in
    [0, 1] (default 1); the eyes, brows and lips as they are."""
    weight = skin.astype(np.float32)
    pull = _local_mean(completed, weight, SOFTEN_RADIUS)  # in place from here (4096 px maps)
    pull -= completed
    weight *= 1 - SOFTEN_DETAIL
    if amount is not None:
        weight *= amount
    pull *= weight[..., None]
    pull += completed
    return pull


def _local_mean(values: np.ndarray, weight: np.ndarray, radius: float) -> np.ndarray:
    """`(R, R)` or `(R, R, C)` float32: the `weight`-ed (`(R, R)`) mean of `values` under a
    Gaussian of `radius` x R, computed at 128 px at most (smooth at that scale; a Gaussian of
    64 px at 1024 px cost 0.3 s)."""
    size = values.shape[0]
    small = min(size, 128)

    def down(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32)
        if small == size:
            return image
        return cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)

    sigma = radius * small
    spread = weight[..., None] if values.ndim == 3 else weight
    mean = cv2.GaussianBlur(down(values * spread), (0, 0), sigma)
    total = cv2.GaussianBlur(down(weight), (0, 0), sigma)
    mean /= np.maximum(total[..., None] if values.ndim == 3 else total, 1e-6)
    if small < size:
        mean = cv2.resize(mean, (size, size), interpolation=cv2.INTER_LINEAR)
    return mean.astype(np.float32)


@lru_cache(maxsize=1)
def skin_structure() -> np.ndarray:
    """`(r, r, 3)` float32, read-only: the skin prior's log-albedo structure (each place of a
    face against its own mean skin, per sRGB channel; `scripts/build_skin_structure.py`)."""
    with np.load(SKIN_STRUCTURE) as data:
        structure = data["log_albedo"].astype(np.float32)
    structure.setflags(write=False)
    return structure


def structure_correction(visibility: np.ndarray, structure: np.ndarray | None = None):
    """`(R, R, 3)` float32: what to add to the log of the (sRGB) albedo that `complete_uv_map`
    completed from `visibility` `(R, R)` so that the texels it filled carry the skin prior's
    `structure` (default `skin_structure()`): `structure - complete(structure)`, the prior
    completed from the same texels as the photo's albedo was (mirror, then pull-push), at the
    prior's resolution. The completion is linear in the values, so in the log domain
    `complete(albedo - structure) + structure = complete(albedo) + correction`: the filled
    texels take the seen skin's colour (the prior re-coloured) with the prior's structure (e.g.
    a forehead lighter than the cheeks the fill copies). `complete_albedo` completes the albedo
    itself, not its log: the same to first order in the skin's variation (tens of percent).
    0 where the texel was seen or its mirror partner was (the prior is symmetric)."""
    structure = skin_structure() if structure is None else structure
    size, small = visibility.shape[0], structure.shape[0]
    if size != small:
        visibility = cv2.resize(visibility, (small, small), interpolation=cv2.INTER_AREA)
    mirrored, confidence = mirror_complete(structure, visibility)
    correction = structure - pull_push_fill(mirrored, confidence)
    if size != small:
        correction = cv2.resize(correction, (size, size), interpolation=cv2.INTER_LINEAR)
    return correction.astype(np.float32, copy=False)


def complete_albedo(albedo_seen: np.ndarray, visibility: np.ndarray, skin: np.ndarray):
    """`(R, R, 3)` sRGB: the albedo completed (`complete_uv_map`: mirror, then pull-push) from
    its seen texels with their highlights capped (`capped_highlights`), so the side the photo
    did not show borrows no highlight (they were the largest error of a turned face's
    completion, `bench.completion_limits`), the skin prior's structure added and its skin
    softened (`structure_correction`, `soften_completed_skin`) where the photo showed next to
    nothing (visibility under `SOFTEN_BELOW`, fully at 0); the seen texels
    keep theirs, as the photo showed them (the de-lighting network removes them), blended by
    `visibility` `(R, R)`. `skin` `(R, R)` bool: `texture.skin_mask`."""
    completed, _ = complete_uv_map(capped_highlights(albedo_seen, visibility, skin), visibility)
    # the prior's structure and the softening only where the photo showed next to nothing
    # (`SOFTEN_BELOW`): the visibility fades at grazing angles and at the mask's edges, over
    # much of a real face's seen skin (on skimage's astronaut at 256 px, 12 k of its 23 k seen
    # texels lie between 0.1 and 0.99), whose own detail stays (softening by 1 - visibility
    # cost the real photos' re-render; so did the prior on every texel it filled: four bench
    # photos' identity distance 0.144 -> 0.156, masked PSNR 32.43 -> 32.25 dB; under 0.1 only:
    # 0.141, 32.39 dB, the synthetic faces' gains kept)
    unseen = np.clip(1 - visibility / SOFTEN_BELOW, 0, 1)
    correction = structure_correction(visibility)  # in place from here (4096 px maps)
    correction *= unseen[..., None]
    completed *= np.exp(correction, out=correction)
    np.clip(completed, 0, 1, out=completed)
    seen = visibility[..., None]
    completed = soften_completed_skin(completed, skin, unseen)
    return (seen * albedo_seen + (1 - seen) * completed).astype(np.float32)


def fuse_skin_seen(maps: list[FirstOrderMaps]) -> np.ndarray:
    """`(R, R)` float32 in [0, 1]: what the photos showed of each texel as skin (the sum of
    their `skin_seen`, capped at 1; the visibility for maps without it)."""
    seen = [m.visibility if m.skin_seen is None else m.skin_seen for m in maps]
    return np.clip(sum(seen), 0, 1).astype(np.float32)


def fuse_first_order_maps(maps: list[FirstOrderMaps]):
    """Texture, albedo `(R, R, 3)` and visibility `(R, R)` of several photos of one person:
    each texel is the visibility-weighted mean of what the photos saw, then completed. One photo
    gives its own completed maps."""
    if len(maps) == 1:
        return maps[0].texture, maps[0].albedo, maps[0].visibility
    weights = [m.visibility[..., None] for m in maps]
    total = np.maximum(sum(weights), 1e-6)
    texture = sum(m.texture_seen * w for m, w in zip(maps, weights, strict=True)) / total
    albedo = sum(m.albedo_seen * w for m, w in zip(maps, weights, strict=True)) / total
    visibility = np.clip(sum(weights)[..., 0], 0, 1)
    texture, _ = complete_uv_map(texture, visibility)
    skin = maps[0].skin if maps[0].skin is not None else skin_mask(visibility.shape[0])
    albedo = complete_albedo(albedo, visibility, skin)
    return texture, albedo, visibility


def albedo_light_gain(
    first_order_albedo: np.ndarray, albedo: np.ndarray | None, visibility: np.ndarray
) -> np.ndarray:
    """`(3,)` per-channel gain g with lin(albedo) * g ~ lin(first_order_albedo) on the visible
    texels (least squares weighted by `visibility` `(R, R)`), so that a light fitted with the
    first-order albedo, times g, reproduces the photo with `albedo` `(R, R, 3)` sRGB (e.g. the
    de-lighting network's); ones when `albedo` is `None`."""
    if albedo is None:
        return np.ones(3)
    w = visibility.reshape(-1)
    seen = w > 0  # the others weigh nothing (most of a 4K head map: 1 s less)
    a = srgb_to_linear(np.clip(first_order_albedo.reshape(-1, 3)[seen], 0, 1))
    b = srgb_to_linear(np.clip(albedo.reshape(-1, 3)[seen], 0, 1))
    w = w[seen]
    return (w @ (a * b)) / np.maximum(w @ (b * b), 1e-8)
