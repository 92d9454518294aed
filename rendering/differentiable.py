"""Differentiable rendering ops with nvdiffrast's contract, for analysis-by-synthesis fitting.

`rendering.rasterize.rasterize` gives triangle ids and barycentrics but no gradients. Here:

- `barycentrics(pos, tri, rast)` recomputes the perspective-correct barycentrics of every covered
  pixel in torch from the clip-space positions, so they are differentiable w.r.t. `pos` (the
  triangle ids stay fixed, as in nvdiffrast);
- `interpolate(attr, rast, tri, pos=None)` interpolates with those weights when `pos` is given,
  so gradients reach vertex positions as well as attributes;
- `texture(tex, uv)` samples a UV image (bilinear, clamp-to-edge), differentiable w.r.t. both;
- `rasterize_any(pos, tri, resolution)` uses nvdiffrast for CUDA tensors when it is installed,
  else our CPU rasterizer.

Same conventions as `rendering.rasterize` (see `rendering.camera`): images are stored top row
first, pixel (row i, column j) is sampled at NDC x = (j + 0.5) / W * 2 - 1,
y = 1 - (i + 0.5) / H * 2; UV images store v = 1 in their top row.

Silhouette antialiasing (nvdiffrast's `antialias`) is in `rendering.antialias`; the fit does not
use it.

>>> rast = rasterize_any(pos, tri, (256, 256))  # not differentiable: ids and weights
>>> uv = interpolate(uvs, rast, tri, pos=pos)  # differentiable w.r.t. uvs and pos
>>> img = texture(albedo_map, uv)  # differentiable w.r.t. albedo_map and uv
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from rendering.camera import pixel_centers, pixels_to_ndc, uv_to_grid
from rendering.rasterize import attr_layout, rasterize
from rendering.rasterize import interpolate as _interpolate_fixed

__all__ = ["barycentrics", "interpolate", "interpolate_covered", "rasterize_any", "texture"]


def barycentrics(
    pos: torch.Tensor, tri: torch.Tensor | np.ndarray, rast: torch.Tensor
) -> torch.Tensor:
    """Perspective-correct barycentric weights of each covered pixel centre, from `pos`.

    Args:
        pos (`torch.Tensor` of shape `[B, V, 4]` or `[1, V, 4]`): float clip-space positions
            (the ones given to `rasterize`, or a perturbation of them).
        tri (`torch.Tensor` or `np.ndarray` of shape `[F, 3]`): int vertex indices.
        rast (`torch.Tensor` of shape `[B, H, W, 4]`): output of `rasterize` (only the
            triangle ids are read).

    Returns:
        `torch.Tensor` of shape `[B, H, W, 3]` in `pos`'s dtype: weights of the triangle's
        vertices 0, 1, 2 (they sum to 1), zeros where no triangle covers the pixel. Equal to
        `(rast[..., 0], rast[..., 1], 1 - rast[..., 0] - rast[..., 1])` for the rasterized `pos`
        (up to float32 rounding); differentiable w.r.t. `pos` (not `rast`). Computed in float64.
    """
    batch, height, width = _check_rast(rast)
    pix, face = _covered(rast, pos.device)
    weights = _weights_at(_batched(pos, batch), _tri_tensor(tri, pos.device), pix, face, rast)
    out = pos.new_zeros(batch * height * width, 3).index_copy(0, pix, weights.to(pos.dtype))
    return out.reshape(batch, height, width, 3)


def interpolate(
    attr: torch.Tensor,
    rast: torch.Tensor,
    tri: torch.Tensor | np.ndarray,
    pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Interpolate per-vertex attributes over the pixels of `rast`.

    Args:
        attr (`torch.Tensor` of shape `[V, C]` or `[B, V, C]`): float vertex attributes.
        rast (`torch.Tensor` of shape `[B, H, W, 4]`): output of `rasterize`.
        tri (`torch.Tensor` or `np.ndarray` of shape `[F, 3]`): the `tri` given to `rasterize`.
        pos (`torch.Tensor` of shape `[B, V, 4]` or `[1, V, 4]`, optional): clip-space
            positions. When given, the weights are `barycentrics(pos, tri, rast)`, so the result
            is differentiable w.r.t. `pos` too; else `rast`'s own weights are used
            (`rendering.rasterize.interpolate`).

    Returns:
        `torch.Tensor` of shape `[B, H, W, C]` in `attr`'s dtype, 0 where no triangle covers the
        pixel. Differentiable w.r.t. `attr` (and `pos` when given), not `rast`.
    """
    if pos is None:
        return _interpolate_fixed(attr, rast, tri)
    batch, height, width = _check_rast(rast)
    pix, values = interpolate_covered(attr, rast, tri, pos)
    out = attr.new_zeros(batch * height * width, attr.shape[-1]).index_copy(0, pix, values)
    return out.reshape(batch, height, width, attr.shape[-1])


def interpolate_covered(
    attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor | np.ndarray, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`interpolate(attr, rast, tri, pos)` at the covered pixels only: what per-pixel work
    that follows (shading, losses) needs, without the uncovered pixels of a full image (7 in
    10 of the fit's renders).

    Args: as `interpolate` (`pos` required).

    Returns:
        `(pix, values)`: `pix` `[N]` int64, the flat indices into `[B * H * W]` of the pixels
        that a triangle covers, ascending; `values` `[N, C]` in `attr`'s dtype, the attributes
        there (differentiable w.r.t. `attr` and `pos`).
    """
    batch, height, width = _check_rast(rast)
    attr_flat, per_batch = attr_layout(attr, batch)
    if pos.shape[-2] != attr.shape[-2]:
        raise ValueError(f"pos has {pos.shape[-2]} vertices but attr has {attr.shape[-2]}")
    tri_t = _tri_tensor(tri, attr.device)
    pix, face = _covered(rast, attr.device)
    weights = _weights_at(_batched(pos, batch), tri_t, pix, face, rast).to(attr.dtype)
    verts = tri_t[face]
    if per_batch:
        verts = verts + (pix // (height * width) * attr.shape[-2])[:, None]
    return pix, (attr_flat[verts] * weights[:, :, None]).sum(dim=1)


def texture(tex: torch.Tensor, uv: torch.Tensor, filter_mode: str = "bilinear") -> torch.Tensor:
    """Sample a UV image at per-pixel texture coordinates (nvdiffrast's `texture`, no mipmaps).

    Args:
        tex (`torch.Tensor` of shape `[B, Ht, Wt, C]`, `[1, Ht, Wt, C]` or `[Ht, Wt, C]`): float
            UV image, top row = v = 1 (texel (row i, column j) centre at u = (j + 0.5) / Wt,
            v = 1 - (i + 0.5) / Ht).
        uv (`torch.Tensor` of shape `[B, H, W, 2]`): texture coordinates (origin bottom-left).
        filter_mode (`str`): `"bilinear"` or `"nearest"`.

    Returns:
        `torch.Tensor` of shape `[B, H, W, C]` in `tex`'s dtype. Coordinates outside [0, 1] clamp
        to the edge texels. Differentiable w.r.t. `tex` and `uv` (bilinear).
    """
    if filter_mode not in ("bilinear", "nearest"):
        raise ValueError(f"filter_mode must be 'bilinear' or 'nearest', got {filter_mode!r}")
    if tex.ndim == 3:
        tex = tex[None]
    if tex.ndim != 4:
        raise ValueError(f"tex must have shape [B, Ht, Wt, C] or [Ht, Wt, C], got {tex.shape}")
    if uv.ndim != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must have shape [B, H, W, 2], got {list(uv.shape)}")
    batch = uv.shape[0]
    if tex.shape[0] not in (1, batch):
        raise ValueError(f"tex batch {tex.shape[0]} does not match uv batch {batch}")
    image = tex.permute(0, 3, 1, 2).expand(batch, -1, -1, -1)
    grid = uv_to_grid(uv.to(tex.dtype))
    out = F.grid_sample(image, grid, mode=filter_mode, padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def rasterize_any(
    pos: torch.Tensor, tri: torch.Tensor | np.ndarray, resolution: tuple[int, int]
) -> torch.Tensor:
    """`rasterize` on the best available backend: nvdiffrast for CUDA tensors when
    `nvdiffrast.torch` is importable, else `rendering.rasterize.rasterize` (numba, CPU).

    Same arguments and result as `rendering.rasterize.rasterize`: `rast` `[B, H, W, 4]` =
    `(u, v, z/w, triangle_id + 1)`, stored top row first. nvdiffrast's `rast` has the same channel
    layout (u, v are the weights of vertices 0 and 1) but stores the bottom row (NDC y = -1)
    first, so its rows are flipped. Its tie-breaking on shared edges may differ from ours.
    The nvdiffrast path is untested here (no CUDA and no nvdiffrast in this environment); the CPU
    path is the tested one.
    """
    if isinstance(pos, torch.Tensor) and pos.is_cuda:
        dr = _nvdiffrast()
        if dr is not None:
            tri_t = torch.as_tensor(tri, device=pos.device).to(torch.int32).contiguous()
            rast, _ = dr.rasterize(
                _cuda_context(pos.device), pos.float().contiguous(), tri_t, list(resolution)
            )
            return rast.flip(1)
    return rasterize(pos, tri, resolution)


# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _nvdiffrast():
    try:
        import nvdiffrast.torch as dr
    except ImportError:
        return None
    return dr


@lru_cache(maxsize=8)
def _cuda_context(device: torch.device):
    return _nvdiffrast().RasterizeCudaContext(device=device)


def _check_rast(rast: torch.Tensor) -> tuple[int, int, int]:
    if rast.ndim != 4 or rast.shape[-1] != 4:
        raise ValueError(f"rast must have shape [B, H, W, 4], got {list(rast.shape)}")
    return rast.shape[0], rast.shape[1], rast.shape[2]


def _batched(pos: torch.Tensor, batch: int) -> torch.Tensor:
    if pos.ndim != 3 or pos.shape[-1] != 4 or pos.shape[0] not in (1, batch):
        raise ValueError(f"pos must have shape [{batch}, V, 4] or [1, V, 4], got {list(pos.shape)}")
    return pos.expand(batch, -1, -1)


def _tri_tensor(tri, device) -> torch.Tensor:
    tri_t = tri if isinstance(tri, torch.Tensor) else torch.from_numpy(np.asarray(tri))
    tri_t = tri_t.to(device=device, dtype=torch.long)
    if tri_t.ndim != 2 or tri_t.shape[1] != 3:
        raise ValueError(f"tri must have shape [F, 3], got {list(tri_t.shape)}")
    return tri_t


def _covered(rast: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices `[N]` of the covered pixels and their 0-based triangle ids `[N]`."""
    ids = rast[..., 3].reshape(-1).to(device)
    pix = torch.nonzero(ids > 0).squeeze(1)
    return pix, ids[pix].long() - 1


def _pixel_centres(pix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat pixel indices `[N]` -> `[N, 2]` float64 (x, y) pixel coordinates of their centres."""
    rem = pix % (height * width)
    return pixel_centers(rem // width, rem % width)


def _weights_at(
    pos: torch.Tensor, tri: torch.Tensor, pix: torch.Tensor, face: torch.Tensor, rast: torch.Tensor
) -> torch.Tensor:
    """Perspective-correct barycentrics `[N, 3]` (float64) of pixel centres `pix` in triangles
    `face`, from clip positions `pos` `[B, V, 4]`.

    The clip-space point sum_k b_k pos_k projects onto the pixel centre (x, y) exactly when
    sum_k b_k (pos_k.x - x pos_k.w) = 0 and sum_k b_k (pos_k.y - y pos_k.w) = 0, so b is the
    cross product of those two 3-vectors, normalised to sum 1 (no division by w needed).
    """
    _, height, width, _ = rast.shape
    n_verts = pos.shape[1]
    verts = tri[face] + (pix // (height * width) * n_verts)[:, None]  # [N, 3]
    clip = pos.reshape(-1, 4).double()[verts]  # [N, 3, 4]
    ndc = pixels_to_ndc(_pixel_centres(pix, height, width), width, height).to(clip.device)
    ex = clip[..., 0] - ndc[:, 0:1] * clip[..., 3]
    ey = clip[..., 1] - ndc[:, 1:2] * clip[..., 3]
    b = torch.linalg.cross(ex, ey, dim=1)
    return b / b.sum(dim=1, keepdim=True)
