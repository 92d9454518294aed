"""Second-order spherical harmonics lighting (9 coefficients per colour channel).

Convention: `coeffs` `(3, 9)` are the SH coefficients of the incident radiance (per RGB channel).
A Lambertian surface with albedo `a` and unit normal `n` then has outgoing radiance
`a * shading(n)`, `shading(n) = (1/pi) * sum_j A_j coeffs[:, j] Y_j(n)` with Ramamoorthi &
Hanrahan's convolution constants A = (pi, 2pi/3 x3, pi/4 x5). A uniform white environment of
radiance 1 has `coeffs[:, 0] = 2 sqrt(pi)` and shading 1.
"""

from __future__ import annotations

import numpy as np
import torch

_A = np.array([np.pi] + [2 * np.pi / 3] * 3 + [np.pi / 4] * 5)


def sh_basis(normals):
    """Real SH basis Y_0..Y_8 at unit `normals` `(..., 3)` -> `(..., 9)` (numpy or torch)."""
    lib = torch if isinstance(normals, torch.Tensor) else np
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    one = lib.ones_like(x)
    return lib.stack(
        [
            0.282095 * one,
            0.488603 * y,
            0.488603 * z,
            0.488603 * x,
            1.092548 * x * y,
            1.092548 * y * z,
            0.315392 * (3 * z * z - 1),
            1.092548 * x * z,
            0.546274 * (x * x - y * y),
        ],
        -1,
    )


def shading_basis(normals):
    """`(..., 9)`: `sh_basis` with the Lambertian convolution and 1/pi folded in, so that
    `shading = shading_basis(n) @ coeffs.T`."""
    basis = sh_basis(normals)
    scale = _A / np.pi
    if isinstance(basis, torch.Tensor):
        scale = torch.as_tensor(scale, dtype=basis.dtype, device=basis.device)
    return basis * scale


def sh_shading(normals, coeffs):
    """`normals` `(..., 3)` unit, `coeffs` `(3, 9)` -> `(..., 3)` RGB shading factor."""
    return shading_basis(normals) @ coeffs.T


def uniform_white() -> np.ndarray:
    """`(3, 9)` coefficients of a uniform environment with shading 1."""
    c = np.zeros((3, 9))
    c[:, 0] = 2 * np.sqrt(np.pi)
    return c


def fibonacci_sphere(n: int) -> np.ndarray:
    """`(n, 3)` nearly uniform unit vectors (a Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    y = 1 - 2 * i / n
    r = np.sqrt(1 - y * y)
    phi = np.pi * (3 - np.sqrt(5)) * i
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=-1)


def rotate_sh(coeffs: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The coefficients `(3, 9)` of the same light expressed in a frame rotated by `rotation`
    `(3, 3)` (a direction `d` of the old frame is `rotation @ d` in the new one). Second-order
    SH are closed under rotation, so a least-squares fit on 64 directions is exact."""
    new_dirs = fibonacci_sphere(64)
    old_values = sh_basis(new_dirs @ np.asarray(rotation)) @ np.asarray(coeffs).T  # (64, 3)
    solution, *_ = np.linalg.lstsq(sh_basis(new_dirs), old_values, rcond=None)
    return solution.T.astype(np.asarray(coeffs).dtype)
