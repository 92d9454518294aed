"""Painting primitives for UV maps at physical scale: random fields, Gaussian blobs and spots,
point splats, strokes and grooves along polylines.

Sizes are in millimetres on the mean face (`training.face_layout.uv_scale_mm`); maps are
`(R, R)` float32 with row 0 = v ~ 1. Everything is area-averaged: a feature smaller than a texel
deposits its area (or volume) in it rather than aliasing, so a face painted at two resolutions
agrees after downsampling.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.face_layout import (
    both_sides,
    gaussian_blur_mm,
    texel_size_mm,
    to_pixels,
    uv_grid,
    uv_scale_mm,
)


def noise(rng: np.random.Generator, resolution: int, scale_mm: float) -> np.ndarray:
    """Smooth random field of correlation length ~`scale_mm`; unit standard deviation when the
    texels resolve it, area-averaged (weaker) when they do not. The random numbers drawn do not
    depend on the resolution."""
    n = max(2, int(np.ceil(uv_scale_mm() / scale_mm)))
    grid = rng.standard_normal((n, n)).astype(np.float32)
    size = (resolution, resolution)
    if n <= resolution:
        field = cv2.resize(grid, size, interpolation=cv2.INTER_CUBIC)
        return field / max(float(field.std()), 1e-6)
    return cv2.resize(grid, size, interpolation=cv2.INTER_AREA)


def fbm(rng, resolution, scales_mm, gains) -> np.ndarray:
    return sum(g * noise(rng, resolution, s) for s, g in zip(scales_mm, gains, strict=True))


def mm_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = uv_grid(resolution)
    s = uv_scale_mm()
    return u * s, v * s


def blob(x, y, centre_uv, sigma_mm, sigma_y_mm=None) -> np.ndarray:
    s = uv_scale_mm()
    sy = sigma_mm if sigma_y_mm is None else sigma_y_mm
    dx, dy = x - centre_uv[0] * s, y - centre_uv[1] * s
    return np.exp(-0.5 * ((dx / sigma_mm) ** 2 + (dy / sy) ** 2)).astype(np.float32)


def blob_pair(x, y, index, sigma, gains, sigma_y=None, offset_mm=(0.0, 0.0)) -> np.ndarray:
    """Blobs at a landmark and its mirror partner, with per-side gains (asymmetry); the offset
    is given for the subject's right side and mirrored."""
    s = uv_scale_mm()
    right, left = both_sides(index)
    ox, oy = offset_mm[0] / s, offset_mm[1] / s
    return gains[0] * blob(x, y, right + (ox, oy), sigma, sigma_y) + gains[1] * blob(
        x, y, left + (-ox, oy), sigma, sigma_y
    )


def splat(points_uv: np.ndarray, weights: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear splat of weighted points into an `(R, R)` map (sums where points overlap)."""
    px = to_pixels(points_uv, resolution) - 0.5
    x0, y0 = np.floor(px[:, 0]).astype(np.int64), np.floor(px[:, 1]).astype(np.int64)
    fx, fy = px[:, 0] - x0, px[:, 1] - y0
    out = np.zeros(resolution * resolution, np.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < resolution) & (yi >= 0) & (yi < resolution)
        out += np.bincount(
            (yi * resolution + xi)[ok], (weights * w)[ok], minlength=resolution * resolution
        )
    return out.reshape(resolution, resolution).astype(np.float32)


def gaussian_spots(points_uv, amplitudes, sigma_mm: float, resolution: int) -> np.ndarray:
    """Sum of Gaussian spots of peak `amplitudes` and radius `sigma_mm` (area-averaged when
    smaller than a texel)."""
    texel = texel_size_mm(resolution)
    volume = amplitudes * 2 * np.pi * sigma_mm**2 / texel**2  # in texel units
    return gaussian_blur_mm(splat(points_uv, volume, resolution), sigma_mm, resolution)


def jittered_points(rng, spacing_mm: float, jitter: float = 0.5) -> np.ndarray:
    """Points on a jittered grid over the UV square, about one per `spacing_mm` squared."""
    n = int(np.ceil(uv_scale_mm() / spacing_mm))
    i, j = np.meshgrid(np.arange(n), np.arange(n))
    base = np.stack([i.ravel(), j.ravel()], 1) + 0.5
    pts = (base + rng.uniform(-jitter, jitter, base.shape)) / n
    return pts[rng.permutation(len(pts))]


def lookup(field: np.ndarray, points_uv: np.ndarray) -> np.ndarray:
    """Bilinear values of an `(r, r)` map at UV points `(N, 2)` (0 outside the map)."""
    r = field.shape[0]
    px = to_pixels(points_uv, r) - 0.5
    x0, y0 = np.floor(px[:, 0]).astype(np.int64), np.floor(px[:, 1]).astype(np.int64)
    fx, fy = px[:, 0] - x0, px[:, 1] - y0
    padded = np.pad(field.astype(np.float32), 1)
    xi, yi = np.clip(x0 + 1, 0, r), np.clip(y0 + 1, 0, r)
    top = padded[yi, xi] * (1 - fx) + padded[yi, xi + 1] * fx
    bottom = padded[yi + 1, xi] * (1 - fx) + padded[yi + 1, xi + 1] * fx
    return top * (1 - fy) + bottom * fy


def line_density(polylines_uv: list[np.ndarray], resolution: int) -> np.ndarray:
    """`(R, R)` line density: each polyline deposits its length (in texels) along its path, so
    a line's cross-section integrates to one texel at any resolution and angle (points every
    half texel, splatted bilinearly)."""
    r = resolution
    if not polylines_uv:
        return np.zeros((r, r), np.float32)
    p0 = np.concatenate([p[:-1] for p in polylines_uv])
    p1 = np.concatenate([p[1:] for p in polylines_uv])
    length = np.linalg.norm(p1 - p0, axis=1) * r  # texels
    count = np.maximum(1, np.ceil(length / 0.5).astype(np.int64))
    seg = np.repeat(np.arange(len(p0)), count)
    first = np.repeat(np.cumsum(count) - count, count)
    t = ((np.arange(len(seg)) - first + 0.5) / count[seg])[:, None]
    points = p0[seg] + t * (p1[seg] - p0[seg])
    return splat(points, (length / count)[seg], r)


def draw_lines(polylines_uv: list[np.ndarray], resolution: int, width_mm: float) -> np.ndarray:
    """Coverage `(R, R)` in [0, 1] of strokes (hairs) `width_mm` wide: the covered fraction of
    each texel, area-averaged when thinner than a texel; overlaps combine as independent
    covers, `1 - exp(-sum)`."""
    texel = texel_size_mm(resolution)
    density = line_density(polylines_uv, resolution) * (width_mm / texel)
    if width_mm > texel:  # spread across the stroke's width
        density = gaussian_blur_mm(density, 0.3 * width_mm, resolution)
    return 1 - np.exp(-density)


def grooves(
    polylines_uv: list[np.ndarray], depth_mm: float, sigma_mm: float, resolution: int
) -> np.ndarray:
    """Height `(R, R)` (<= 0) of Gaussian-profile grooves along polylines, `depth_mm` deep at
    the centre line (area-averaged when narrower than a texel)."""
    texel = texel_size_mm(resolution)
    lines = line_density(polylines_uv, resolution)  # cross-section integral: one texel
    scale = depth_mm * np.sqrt(2 * np.pi) * sigma_mm / texel
    return -scale * gaussian_blur_mm(lines, max(sigma_mm, 0.5 * texel), resolution)


def curve(points_uv: np.ndarray, samples: int = 48) -> np.ndarray:
    """Catmull-Rom curve through `(K, 2)` points."""
    p = np.concatenate([2 * points_uv[:1] - points_uv[1:2], points_uv,
                        2 * points_uv[-1:] - points_uv[-2:-1]])  # fmt: skip
    out = []
    per = max(2, samples // (len(points_uv) - 1))
    t = np.linspace(0, 1, per, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    out.append(points_uv[-1:])
    return np.concatenate(out)


def mm(value_mm) -> float:
    return value_mm / uv_scale_mm()
