"""Skin shading: Lambert and SH diffuse, normalised Blinn-Phong specular, a subsurface-scattering
blur in UV space, and baked ambient occlusion (of the mesh, and of a detail height field).

Pure functions on torch tensors (any float dtype, the caller's device; differentiable where it
makes sense) except `bake_ambient_occlusion` and `relief_occlusion`, numpy pre-processes. All
colours are linear RGB.

Light units (see `rendering.lights`): a light of colour `c` gives a Lambertian surface facing it
the shading `c`, i.e. irradiance `pi * c`. With the Lambertian BRDF `albedo / pi` the diffuse
radiance is `albedo * lambert(...)`; with the normalised Blinn-Phong BRDF
`f_s = k_s (s + 8) / (8 pi) (n.h)^s` the specular radiance is `pi * f_s * (n.l) * c`, which is
what `blinn_phong_specular` returns. So in a uniform white environment of radiance 1 a white
diffuse surface reflects 1 and a specular albedo `k_s` adds about `k_s`: diffuse and specular
are in the same units and one can be traded against the other (energy is roughly conserved when
`albedo + specular_albedo <= 1`).

Composing a skin render: without scattering, `diffuse, specular = shade_skin(albedo, ...)` and
the radiance is `diffuse + specular`. With scattering, in UV space (per-texel normals, view
directions and AO rasterized with `rendering.camera.uv_to_clip`):

1. `shading, specular = shade_skin(None, ...)`: the diffuse shading without the albedo;
2. `shading = subsurface_scattering_uv(shading, texel_size_mm)` spreads it under the skin (blur
   the shading, not `albedo * shading`, so the albedo keeps its detail: d'Eon & Luebke's
   post-scatter texturing);
3. `radiance = albedo * shading + specular` (the specular is never blurred), then sample the UV
   radiance map in the view.

>>> diffuse, specular = shade_skin(albedo, spec_albedo, n_diffuse, n_specular, view_dirs,
...                                sh_coeffs=environment_to_sh(env), lights=dominant_lights(env))
>>> radiance = diffuse + specular
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numba
import numpy as np
import torch
import torch.nn.functional as F

from rendering.lights import (
    DirectionalLight,
    PointLight,
    as_light_list,
    fibonacci_sphere,
    point_light_incidence,
)
from rendering.rasterize import rasterize
from rendering.sh import sh_shading

__all__ = [
    "lambert",
    "blinn_phong_specular",
    "subsurface_scattering_uv",
    "bake_ambient_occlusion",
    "shade_skin",
    "SKIN_SHININESS",
]

# Blinn-Phong exponent of skin's sharp lobe (Beckmann roughness m ~ 0.3 -> 2 / m^2 - 2 ~ 20).
SKIN_SHININESS = 20.0

# The two Gaussians per channel of the scattering profile, as fractions of the channel's radius
# and their weights. A simplification of d'Eon & Luebke's six-Gaussian skin fit (GPU Gems 3,
# ch. 14): with the default radii (3.0, 1.4, 0.7) mm, red gets sigma 0.45 / 1.5 mm, green
# 0.21 / 0.7 mm, blue 0.105 / 0.35 mm, near the components that carry most of each channel's
# energy in their fit (red 0.2..1.4 mm and a 2.7 mm tail, blue mostly below 0.25 mm).
_SSS_SIGMAS = (0.15, 0.5)
_SSS_WEIGHTS = (0.6, 0.4)

# Shadow-map tests of `bake_ambient_occlusion`, in shadow-map pixels: normal offset of the
# tested point, constant depth bias, and depth bias per unit tan(angle between normal and light).
_AO_OFFSET_PX = 2.0
_AO_BIAS_PX = 1.0
_AO_SLOPE_BIAS = 0.75


def _check_vectors(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.shape[-1:] != (3,):
        raise ValueError(f"{name} must be a torch tensor of shape (..., 3), got {_shape(x)}")
    return x


def _shape(x) -> str:
    return str(list(x.shape)) if hasattr(x, "shape") else type(x).__name__


def _light_terms(light, like: torch.Tensor, positions: torch.Tensor | None):
    """Direction towards the light and its colour, as tensors broadcastable against `like`."""
    if isinstance(light, DirectionalLight):
        to_tensor = {"dtype": like.dtype, "device": like.device}
        return torch.tensor(light.direction, **to_tensor), torch.tensor(light.color, **to_tensor)
    if positions is None:
        raise ValueError("point lights need the surface positions (positions=...)")
    directions, falloff = point_light_incidence(light, _check_vectors("positions", positions))
    color = torch.tensor(light.color, dtype=positions.dtype, device=positions.device)
    return directions, color * falloff.unsqueeze(-1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def lambert(
    normals: torch.Tensor,
    lights: DirectionalLight | PointLight | Sequence,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Diffuse shading from lights: `sum_lights max(0, n.l) * color` (no shadows).

    Args:
        normals (`torch.Tensor` of shape `(..., 3)`): unit normals, camera space.
        lights (`DirectionalLight`, `PointLight` or a sequence of them).
        positions (`torch.Tensor` of shape `(..., 3)`, optional): surface points, needed only
            for point lights.

    Returns:
        `torch.Tensor` of shape `(..., 3)`: the shading factor (multiply by the albedo).
    """
    _check_vectors("normals", normals)
    out = torch.zeros_like(normals)
    for light in as_light_list(lights):
        direction, color = _light_terms(light, normals, positions)
        out = out + _dot(normals, direction).clamp_min(0) * color
    return out


def blinn_phong_specular(
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    lights: DirectionalLight | PointLight | Sequence,
    specular_albedo: torch.Tensor | float,
    shininess: torch.Tensor | float,
    normalized: bool = True,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blinn-Phong specular radiance, summed over the lights.

    Per light: `specular_albedo * (s + 8) / 8 * max(0, n.h)^s * max(0, n.l) * color` with
    `h = normalize(l + v)`: `pi` times the normalised BRDF `(s + 8) / (8 pi) (n.h)^s`, since a
    light of colour `c` delivers irradiance `pi * c` (module docstring). With
    `normalized=False` the factor `(s + 8) / 8` is left out (classic Blinn-Phong, the peak then
    does not grow with the shininess).

    Args:
        normals (`torch.Tensor` of shape `(..., 3)`): unit *specular* normals, camera space.
        view_dirs (`torch.Tensor` of shape `(..., 3)`): unit vectors from the surface towards the
            camera.
        lights (`DirectionalLight`, `PointLight` or a sequence of them).
        specular_albedo (`torch.Tensor` of shape `(..., 1)` or `(..., 3)`, or a float).
        shininess (`torch.Tensor` of shape `(..., 1)` or a float): exponent `s` (> 0).
        normalized (`bool`): include the energy normalisation `(s + 8) / 8`.
        positions (`torch.Tensor` of shape `(..., 3)`, optional): needed only for point lights.

    Returns:
        `torch.Tensor` of shape `(..., 3)`. Differentiable in every tensor argument.
    """
    _check_vectors("normals", normals)
    _check_vectors("view_dirs", view_dirs)
    if isinstance(shininess, int | float) and shininess <= 0:
        raise ValueError(f"shininess must be positive, got {shininess}")
    # tiny, not 0: keeps d(x^s)/ds = x^s log(x) finite where the lobe is 0
    tiny = torch.finfo(normals.dtype).tiny
    out = normals.new_zeros(torch.broadcast_shapes(normals.shape, view_dirs.shape))
    for light in as_light_list(lights):
        direction, color = _light_terms(light, normals, positions)
        half = direction + view_dirs
        half = half / half.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n_h = _dot(normals, half)
        lobe = torch.where(n_h > 0, n_h.clamp_min(tiny) ** shininess, torch.zeros_like(n_h))
        out = out + lobe * _dot(normals, direction).clamp_min(0) * color
    if normalized:
        out = out * ((shininess + 8) / 8)
    return out * specular_albedo


def _gaussian_kernels(sigmas: torch.Tensor, half_width: int) -> torch.Tensor:
    """`(C,)` sigmas in texels -> `(C, 2 * half_width + 1)` normalised 1-D kernels (a delta
    where sigma is 0)."""
    x = torch.arange(-half_width, half_width + 1, dtype=sigmas.dtype, device=sigmas.device)
    safe = sigmas.clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (x[None, :] / safe) ** 2)
    delta = (x == 0).to(sigmas.dtype).expand_as(k)
    k = torch.where(sigmas[:, None] > 0, k, delta)
    return k / k.sum(-1, keepdim=True)


def _symmetric_pad(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Mirror padding that repeats the edge texel (numpy's "symmetric", OpenCV's BORDER_REFLECT).
    Unlike torch's "reflect" it makes a symmetric blur preserve the image's sum exactly."""
    if pad == 0:
        return x
    size = x.shape[dim]
    left = x.narrow(dim, 0, pad).flip(dim)
    right = x.narrow(dim, size - pad, pad).flip(dim)
    return torch.cat([left, x, right], dim=dim)


def _separable_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Depthwise blur of `x` `[B, C, H, W]` with the per-channel 1-D `kernels` `[C, K]` along
    both axes."""
    channels, size = kernels.shape
    pad = size // 2
    weight = kernels.to(x.dtype)[:, None, :]
    x = _symmetric_pad(x, pad, dim=3)
    x = F.conv2d(x, weight[:, :, None, :], groups=channels)
    x = _symmetric_pad(x, pad, dim=2)
    return F.conv2d(x, weight[:, :, :, None], groups=channels)


def subsurface_scattering_uv(
    irradiance_uv: torch.Tensor,
    texel_size_mm: float,
    radii_mm: Sequence[float] = (3.0, 1.4, 0.7),
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Approximate subsurface scattering in skin by blurring the diffuse shading in UV space.

    Each colour channel is convolved with a sum of two Gaussians, `0.6 * G(0.15 r) +
    0.4 * G(0.5 r)` (sigmas as fractions of the channel's radius `r`; a simplified d'Eon & Luebke
    profile, see `_SSS_SIGMAS`), so red light travels furthest under the skin. Separable
    convolution with mirror padding; the kernels are normalised, so without `mask` the image
    mean is kept exactly (energy conserving). The UV layout's stretch is ignored: one
    `texel_size_mm` for the whole map.

    Args:
        irradiance_uv (`torch.Tensor` of shape `[B, 3, R, R']`): channels first, as images in the
            pipeline; diffuse shading (or irradiance) in UV space, linear.
        texel_size_mm (`float`): size of one texel on the face (a 0.2 m wide face over a 512 map
            has about 0.4 mm texels).
        radii_mm (three floats): scattering radius of the red, green and blue channel, in mm;
            0 leaves a channel as it is.
        mask (`torch.Tensor` of shape `[B, 1, R, R']`, optional): 1 where the map holds skin,
            0 outside the UV chart: the blur is then normalised by the blurred mask so that empty
            texels do not darken the chart's border (values outside the mask are meaningless).

    Returns:
        `torch.Tensor` of the input's shape. Differentiable in `irradiance_uv`.

    >>> shading_uv = subsurface_scattering_uv(shading_uv, texel_size_mm=0.4)
    """
    if irradiance_uv.ndim != 4 or irradiance_uv.shape[1] != 3:
        raise ValueError(f"irradiance_uv must have shape [B, 3, R, R], got {_shape(irradiance_uv)}")
    radii = torch.as_tensor(radii_mm, dtype=torch.float64)
    if radii.shape != (3,) or bool((radii < 0).any()) or not texel_size_mm > 0:
        raise ValueError(
            f"need three radii >= 0 and texel_size_mm > 0, got {radii_mm}, {texel_size_mm}"
        )
    height, width = irradiance_uv.shape[2:]
    out = torch.zeros_like(irradiance_uv)
    blurred_mask = 0
    for fraction, weight in zip(_SSS_SIGMAS, _SSS_WEIGHTS, strict=True):
        sigmas = radii * fraction / texel_size_mm
        half = min(math.ceil(3 * float(sigmas.max())), height - 1, width - 1)
        kernels = _gaussian_kernels(sigmas, half).to(irradiance_uv.device)
        if mask is None:
            out = out + weight * _separable_blur(irradiance_uv, kernels)
        else:
            m = mask.to(irradiance_uv.dtype).expand_as(irradiance_uv)
            out = out + weight * _separable_blur(irradiance_uv * m, kernels)
            blurred_mask = blurred_mask + weight * _separable_blur(m, kernels)
    if mask is not None:
        out = out / blurred_mask.clamp_min(1e-6)
    # exactly the input where a channel does not scatter (the blend above rounds)
    keep = (radii == 0).to(irradiance_uv.device)[None, :, None, None]
    return torch.where(keep, irradiance_uv, out)


def _ao_directions(num_directions: int, seed: int) -> np.ndarray:
    """`(D, 3)` unit vectors: a Fibonacci lattice, randomly rotated by `seed`."""
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return fibonacci_sphere(num_directions) @ rotation.T


def _orthonormal_frame(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = np.cross(d, helper)
    a /= np.linalg.norm(a)
    return a, np.cross(d, a)


def bake_ambient_occlusion(
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    num_directions: int = 64,
    resolution: int = 256,
    seed: int = 0,
) -> np.ndarray:
    """Per-vertex ambient occlusion from shadow maps.

    For `num_directions` directions on the sphere (a Fibonacci lattice, randomly rotated by
    `seed`) the mesh is rasterized orthographically as seen from that direction (a depth
    buffer over the mesh's bounding sphere, `resolution` pixels across). A vertex is lit from a
    direction if nothing in the buffer is nearer the light than the vertex lifted 2 pixels
    along its normal, less a slope-scaled bias (1 pixel + 0.75 pixel * tan(angle to the
    normal)). AO is the cosine-weighted fraction of the directions in the vertex's upper
    hemisphere (`n.d > 0`) that light it: 1 = open, 0 = fully occluded. Occluders nearer than
    about 2 shadow-map pixels are missed (on the face mesh the result is ~0.02 above a ray-cast
    reference on average). Both faces of every triangle occlude, so an open mesh (the face disk)
    is not lit through from behind by its own back.

    Args:
        vertices (`np.ndarray` of shape `(V, 3)`), faces (`(F, 3)` int), normals (`(V, 3)`
            unit vertex normals): the mesh in any frame (AO does not depend on it).
        num_directions (`int`): shadow maps; the AO's noise falls as 1 / sqrt of it.
        resolution (`int`): shadow-map size in pixels.
        seed (`int`): rotation of the direction lattice.

    Returns:
        `np.ndarray` of shape `(V,)` float32 in [0, 1].
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    normals = np.asarray(normals, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or normals.shape != vertices.shape:
        raise ValueError(
            f"vertices and normals must both be (V, 3), got {vertices.shape}, {normals.shape}"
        )
    if num_directions < 1 or resolution < 8:
        raise ValueError("need num_directions >= 1 and resolution >= 8")
    directions = _ao_directions(num_directions, seed)
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    radius = max(np.linalg.norm(vertices - centre, axis=1).max(), 1e-12) * 1.01
    local = (vertices - centre) / radius  # inside the unit ball

    # One orthographic clip-space view per direction: x, y across, depth z = -(p . d) so the
    # surface nearest the light has the smallest z (as the rasterizer keeps).
    frames = np.stack([np.stack([*_orthonormal_frame(d), -d]) for d in directions])  # (D, 3, 3)
    # (D, V, 3); matmul, not einsum: einsum's loops took 50 ms of a 0.4 s bake (BLAS: 2 ms)
    projected = local @ frames.transpose(0, 2, 1)
    clip = np.concatenate([projected, np.ones_like(projected[..., :1])], axis=-1)
    # One thread: each shadow map is ~1 ms of work, too little for the rasterizer's row bands to
    # pay for their barriers; with other processes on the cores they cost 10x the bake.
    # (numba's thread count is per calling thread, so this leaves other threads alone.)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rast = rasterize(clip.astype(np.float32), faces, (resolution, resolution)).numpy()
    finally:
        numba.set_num_threads(threads)
    depth = np.where(rast[..., 3] > 0, rast[..., 2], np.inf)  # (D, H, W), NDC units

    # Test a point lifted off the surface along the normal (it then sits on the open side of a
    # crease) against the pixel it falls in, with a depth bias that grows with the slope of the
    # surface as seen from the light (a plane's depth varies by up to ~0.7 px * tan(angle)
    # between the point and the pixel centre): no self-shadowing on planes at any angle.
    pixel = 2.0 / resolution
    cosine = normals @ directions.T  # (V, D)
    lifted = projected + (normals @ frames.transpose(0, 2, 1)) * (_AO_OFFSET_PX * pixel)
    col = np.clip(((lifted[..., 0] + 1) * 0.5 * resolution).astype(np.int64), 0, resolution - 1)
    row = np.clip(((1 - lifted[..., 1]) * 0.5 * resolution).astype(np.int64), 0, resolution - 1)
    buffer = depth[np.arange(num_directions)[:, None], row, col]  # (D, V)
    cos_t = np.clip(cosine.T, 1e-6, 1)
    tangent = np.minimum(np.sqrt(1 - cos_t**2) / cos_t, 8.0)
    bias = pixel * (_AO_BIAS_PX + _AO_SLOPE_BIAS * tangent)
    lit = lifted[..., 2] <= buffer + bias

    weights = np.clip(cosine.T, 0, None)  # (D, V): cosine weighting, upper hemisphere only
    total = weights.sum(0)
    ao = np.where(total > 0, (weights * lit).sum(0) / np.maximum(total, 1e-12), 1.0)
    return np.clip(ao, 0, 1).astype(np.float32)


def relief_occlusion(
    height_mm: np.ndarray,
    texel_mm: float,
    radius_mm: float = 2.0,
    num_directions: int = 8,
    num_steps: int = 10,
) -> np.ndarray:
    """Ambient occlusion of a detail height field (pores, furrows, wrinkles) over a flat base:
    horizon-based, cosine-weighted.

    In each of `num_directions` azimuths the horizon's elevation `h` is the steepest rise of the
    height within `radius_mm` (sampled at `num_steps` geometrically spaced distances, bilinear);
    the cosine-weighted share of the sky above a horizon at `h` is `cos^2 h`, so the result is
    `1 - mean(sin^2 h)` over the azimuths. The base is taken flat (the mesh's own curvature and
    occlusion are `bake_ambient_occlusion`'s).

    Args:
        height_mm (`np.ndarray` of shape `(R, R')`): height in mm (up = out of the skin).
        texel_mm (`float`): texel size in mm.
        radius_mm (`float`): how far the horizon is searched.
        num_directions, num_steps (`int`): azimuths and distances sampled.

    Returns:
        `np.ndarray` of shape `(R, R')` float32 in [0, 1]: 1 = open.

    >>> bool((relief_occlusion(np.zeros((8, 8)), 0.25) == 1).all())
    True
    """
    if not (texel_mm > 0 and radius_mm > 0):
        raise ValueError(f"need texel_mm > 0 and radius_mm > 0, got {texel_mm}, {radius_mm}")
    h = np.ascontiguousarray(height_mm, np.float32)
    reach = max(radius_mm / texel_mm, 1.0)
    steps = np.unique(np.geomspace(1.0, reach, num_steps).round().clip(1, None))
    occluded = np.zeros_like(h)
    for azimuth in np.arange(num_directions) * 2 * np.pi / num_directions:
        step = np.array([np.cos(azimuth), np.sin(azimuth)], np.float32)
        slope = np.zeros_like(h)
        for k in steps:
            shift = np.float32([[1, 0, step[0] * k], [0, 1, step[1] * k]])
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # ahead(x) = h(x + k * step)
            ahead = cv2.warpAffine(
                h, shift, h.shape[::-1], flags=flags, borderMode=cv2.BORDER_REFLECT
            )
            np.maximum(slope, (ahead - h) / np.float32(k * texel_mm), out=slope)
        occluded += slope**2 / (1 + slope**2)  # sin^2 of the horizon's elevation
    return (1 - occluded / num_directions).astype(np.float32)


def shade_skin(
    albedo: torch.Tensor | None,
    specular_albedo: torch.Tensor | float,
    diffuse_normals: torch.Tensor,
    specular_normals: torch.Tensor,
    view_dirs: torch.Tensor,
    sh_coeffs: torch.Tensor | np.ndarray | None = None,
    lights: DirectionalLight | PointLight | Sequence = (),
    ao: torch.Tensor | None = None,
    shininess: torch.Tensor | float = SKIN_SHININESS,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffuse and specular radiance of skin under SH lighting and lights, in linear RGB.

    `diffuse = albedo * (max(0, sh_shading(n_d, sh_coeffs)) * ao + lambert(n_d, lights))` and
    `specular = blinn_phong_specular(n_s, v, lights, specular_albedo, shininess)`. The AO
    darkens only the SH (ambient) part; the lights cast no shadows. The SH gives no specular:
    to get highlights from an environment pass `lights=dominant_lights(env)` (with the SH of
    the whole environment). Subsurface scattering is the caller's step in UV space (module
    docstring): pass `albedo=None` to get the diffuse shading alone.

    Args:
        albedo (`torch.Tensor` of shape `(..., 3)` or `None`): diffuse albedo, linear.
        specular_albedo (`torch.Tensor` of shape `(..., 1)` or `(..., 3)`, or a float).
        diffuse_normals, specular_normals (`torch.Tensor` of shape `(..., 3)`): unit, camera
            space.
        view_dirs (`torch.Tensor` of shape `(..., 3)`): unit, from the surface to the camera.
        sh_coeffs (`(3, 9)` tensor or array, optional): radiance SH (`rendering.sh`).
        lights: `DirectionalLight` / `PointLight` or a sequence of them.
        ao (`torch.Tensor` of shape `(...,)` or `(..., 1)`, optional): ambient occlusion.
        shininess (`float` or `torch.Tensor` of shape `(..., 1)`): Blinn-Phong exponent.
        positions (`torch.Tensor` of shape `(..., 3)`, optional): needed only for point lights.

    Returns:
        `(diffuse, specular)`, each `torch.Tensor` of shape `(..., 3)`; the radiance is their sum.
    """
    _check_vectors("diffuse_normals", diffuse_normals)
    diffuse = lambert(diffuse_normals, lights, positions)
    if sh_coeffs is not None:
        coeffs = torch.as_tensor(sh_coeffs, dtype=diffuse_normals.dtype).to(diffuse_normals.device)
        if coeffs.shape != (3, 9):
            raise ValueError(f"sh_coeffs must have shape (3, 9), got {_shape(coeffs)}")
        ambient = sh_shading(diffuse_normals, coeffs).clamp_min(0)
        if ao is not None:
            ao = ao.to(diffuse_normals)
            ambient = ambient * (ao.unsqueeze(-1) if ao.ndim == diffuse_normals.ndim - 1 else ao)
        diffuse = diffuse + ambient
    if albedo is not None:
        diffuse = albedo * diffuse
    specular = blinn_phong_specular(
        specular_normals, view_dirs, lights, specular_albedo, shininess, positions=positions
    )
    return diffuse, specular
