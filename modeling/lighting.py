"""First-order de-lighting: fit spherical-harmonic lighting to the visible skin, divide it out.

Albedo and light are ambiguous up to a per-channel scale from one photo. We fix it by the
convention that the light is white and averages shading 1 over the visible skin, so the diffuse
albedo keeps the photo's white balance and exposure and loses only its directional shading.
All of this happens in linear colour; colour maps are stored sRGB-encoded.
"""

from __future__ import annotations

import numpy as np

from rendering.sh import sh_shading, shading_basis


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


def delight(
    colors_linear: np.ndarray, normals: np.ndarray, coeffs: np.ndarray, min_shading: float = 0.15
) -> np.ndarray:
    """Diffuse albedo `(N, 3)` in linear RGB = colour / SH shading (shading floored at
    `min_shading` so deep shadows are not amplified into noise), clipped to [0, 1]."""
    shading = np.maximum(sh_shading(normals.astype(np.float64), coeffs), min_shading)
    return np.clip(colors_linear / shading, 0, 1).astype(np.float32)
