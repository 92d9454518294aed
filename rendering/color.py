"""Colour conventions, written once: the sRGB transfer curve (colour maps and photos are stored
sRGB-encoded; shading happens in linear RGB), Rec. 709 luminance, and the masked PSNR every
stage, test and benchmark reports."""

from __future__ import annotations

import numpy as np
import torch

# Rec. 709 / linear-sRGB luminance weights of R, G, B.
LUMA = (0.2126, 0.7152, 0.0722)


def srgb_to_linear(x):
    """sRGB-encoded values in [0, 1] -> linear (numpy float32, or torch, differentiable)."""
    if isinstance(x, torch.Tensor):
        x = x.clamp(0, 1)
        return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x):
    """Linear values -> sRGB-encoded in [0, 1] (numpy float32, or torch, differentiable)."""
    if isinstance(x, torch.Tensor):
        x = x.clamp(1e-8, 1)  # keeps the gradient of x ** (1 / 2.4) finite
        return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def luminance(rgb, axis: int = -1):
    """Rec. 709 luminance of `rgb` along its colour `axis` (of whatever encoding `rgb` is in):
    numpy `(..., 3)` -> `(...)` float64, or torch (e.g. `axis=1` for `(B, 3, H, W)` ->
    `(B, 1, H, W)`, the axis kept)."""
    if isinstance(rgb, torch.Tensor):
        shape = [1] * rgb.dim()
        shape[axis] = 3
        w = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(shape)
        return (rgb * w).sum(axis, keepdim=True)
    return np.moveaxis(np.asarray(rgb), axis, -1) @ np.array(LUMA)


def masked_psnr(a, b, mask) -> float:
    """PSNR (dB) of two images in [0, 1] (numpy or torch) over the pixels where `mask` is true
    (float64 mean squared error, floored at 1e-12)."""
    a, b, mask = (
        x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (a, b, mask)
    )
    mask = np.asarray(mask, bool)
    mse = float(np.mean((np.asarray(a, float)[mask] - np.asarray(b, float)[mask]) ** 2))
    return float(10 * np.log10(1 / max(mse, 1e-12)))
