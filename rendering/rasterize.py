"""Triangle rasterization and attribute interpolation on the CPU, with nvdiffrast's contract.

`rasterize(pos, tri, resolution)` returns nvdiffrast's `rast` tensor, `interpolate(attr, rast, tri)`
turns it into per-pixel attributes (differentiable with respect to `attr`). Unlike nvdiffrast, the
images are stored top row first (row 0 = NDC y = +1, see `rendering.camera`); pixel (row i,
column j) is sampled at its centre, NDC x = (j + 0.5) / W * 2 - 1, NDC y = 1 - (i + 0.5) / H * 2.

>>> rast = rasterize(pos_clip[None], faces, (512, 512))  # [1, 512, 512, 4]
>>> normals_img = interpolate(vertex_normals, rast, faces)  # [1, 512, 512, 3]
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from rendering.camera import ndc_to_pixels

__all__ = ["rasterize", "interpolate", "coverage_mask"]

# Rows per parallel work item. Each band re-runs the set-up of the triangles that overlap it,
# so bands much smaller than a triangle waste work; much larger ones balance badly on few cores.
_BAND_ROWS = 16


def rasterize(
    pos: torch.Tensor | np.ndarray, tri: torch.Tensor | np.ndarray, resolution: tuple[int, int]
) -> torch.Tensor:
    """Rasterize triangles given in clip space (nvdiffrast's `rasterize`, on the CPU).

    Args:
        pos (`torch.Tensor` or `np.ndarray` of shape `[B, V, 4]`): float32 clip-space positions.
        tri (`torch.Tensor` or `np.ndarray` of shape `[F, 3]`): int32/int64 vertex indices.
        resolution (`tuple[int, int]`): `(H, W)` of the output.

    Returns:
        `torch.Tensor` of shape `[B, H, W, 4]`, float32, on `pos`'s device: `(u, v, z/w,
        triangle_id + 1)` where `u`, `v` are the perspective-correct barycentric weights of the
        triangle's vertices 0 and 1 (vertex 2 has `1 - u - v`) and `z/w` is the NDC depth. All four
        channels are 0 where no triangle covers the pixel.

    Rules: the fragment with the smallest `z/w` wins (depth compared in float32; on a tie the
    lower triangle id wins), and only fragments with `-1 <= z/w <= 1` count. No backface culling.
    A pixel centre exactly on an edge shared by two triangles belongs to exactly one of them
    (top-left rule), so a mesh tiling a region has neither holes nor double coverage. Triangles
    with zero area or with any vertex at `w <= 0` are skipped (there is no near-plane clipping,
    so keep meshes in front of the camera). Not differentiable.
    """
    height, width = _check_resolution(resolution)
    device = pos.device if isinstance(pos, torch.Tensor) else torch.device("cpu")
    pos_np = _to_numpy(pos, np.float64)
    tri_np = _to_numpy(tri, np.int64)
    if pos_np.ndim != 3 or pos_np.shape[2] != 4:
        raise ValueError(f"pos must have shape [B, V, 4], got {list(pos_np.shape)}")
    if tri_np.ndim != 2 or tri_np.shape[1] != 3:
        raise ValueError(f"tri must have shape [F, 3], got {list(tri_np.shape)}")
    if tri_np.shape[0] >= 2**24:
        raise ValueError(
            f"at most 2**24 - 1 triangles (ids are stored as float32), got {tri_np.shape[0]}"
        )
    n_verts = pos_np.shape[1]
    if tri_np.size and (tri_np.min() < 0 or tri_np.max() >= n_verts):
        raise ValueError(
            f"tri indices must lie in [0, {n_verts}), got [{tri_np.min()}, {tri_np.max()}]"
        )

    # Not zeros: the kernel clears each band of rows in the thread that draws it, which spreads
    # the first-touch page faults of a large fresh buffer over the cores.
    out = np.empty((pos_np.shape[0], height, width, 4), dtype=np.float32)
    for b, clip in enumerate(pos_np):
        w = clip[:, 3]
        # Vertices with w <= 0 get inv_w <= 0, which the kernel reads as "skip the triangle".
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_w = np.where(w > 0, 1.0 / w, 0.0)
        pixels = ndc_to_pixels(clip[:, :2] * inv_w[:, None], width, height)  # [V, 2]
        sx, sy = np.ascontiguousarray(pixels.T)
        zw = clip[:, 2] * inv_w
        _rasterize_kernel(sx, sy, zw, inv_w, tri_np, _BAND_ROWS, out[b])
    return torch.from_numpy(out).to(device)


def interpolate(
    attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Interpolate per-vertex attributes over the pixels of `rast` (nvdiffrast's `interpolate`).

    Args:
        attr (`torch.Tensor` of shape `[V, C]` or `[B, V, C]`): float vertex attributes.
        rast (`torch.Tensor` of shape `[B, H, W, 4]`): output of `rasterize`.
        tri (`torch.Tensor` or `np.ndarray` of shape `[F, 3]`): the `tri` given to `rasterize`.

    Returns:
        `torch.Tensor` of shape `[B, H, W, C]` in `attr`'s dtype, 0 where no triangle covers the
        pixel. Differentiable with respect to `attr` (not `rast`).
    """
    if rast.ndim != 4 or rast.shape[-1] != 4:
        raise ValueError(f"rast must have shape [B, H, W, 4], got {list(rast.shape)}")
    batch, height, width, _ = rast.shape
    attr_flat, per_batch = attr_layout(attr, batch)
    n_verts, channels = attr.shape[-2], attr.shape[-1]
    tri_t = torch.as_tensor(tri, device=attr.device).long()

    flat = rast.reshape(-1, 4).to(attr.device)
    pix = torch.nonzero(flat[:, 3] > 0).squeeze(1)
    weights = flat[pix, :2].to(attr.dtype)
    weights = torch.cat([weights, 1 - weights.sum(dim=1, keepdim=True)], dim=1)
    verts = tri_t[flat[pix, 3].long() - 1]  # [N, 3]
    if per_batch:
        verts = verts + (pix // (height * width) * n_verts)[:, None]
    values = (attr_flat[verts] * weights[:, :, None]).sum(dim=1)
    out = attr.new_zeros(batch * height * width, channels).index_copy(0, pix, values)
    return out.reshape(batch, height, width, channels)


def attr_layout(attr: torch.Tensor, batch: int) -> tuple[torch.Tensor, bool]:
    """`attr` `[V, C]` (shared) or `[B, V, C]` (per image) -> `([V or B*V, C], per_batch)`."""
    if attr.ndim == 2:
        return attr, False
    if attr.ndim == 3 and attr.shape[0] == batch:
        return attr.reshape(-1, attr.shape[-1]), True
    raise ValueError(f"attr must have shape [V, C] or [{batch}, V, C], got {list(attr.shape)}")


def coverage_mask(rast: torch.Tensor) -> torch.Tensor:
    """`rast`: `[B, H, W, 4]` -> `[B, H, W]` bool, True where a triangle covers the pixel."""
    return rast[..., 3] > 0


def _check_resolution(resolution) -> tuple[int, int]:
    if len(resolution) != 2 or any(int(r) != r or r <= 0 for r in resolution):
        raise ValueError(f"resolution must be two positive integers (H, W), got {resolution}")
    return int(resolution[0]), int(resolution[1])


def _to_numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


@numba.njit(cache=True, inline="always")
def _edge_setup(px, py, qx, qy, orient):
    """Edge p -> q of a triangle with orientation `orient` (+-1).

    Returns (base x, base y, dx, dy, sign, owns). The edge function at pixel (x, y) is
    `sign * (dx * (y - base_y) - dy * (x - base_x))`, positive inside. It is evaluated from the
    lexicographically smaller end point whichever way round the edge is traversed, so two triangles
    sharing an edge compute bit-identical values of opposite sign: pixels on either side are
    covered exactly once. `owns`: whether the triangle covers pixel centres exactly on this edge.
    """
    sign = orient
    if px > qx or (px == qx and py > qy):
        px, py, qx, qy = qx, qy, px, py
        sign = -sign
    dx = qx - px
    dy = qy - py
    # Direction of the edge as the (oriented) triangle traverses it; y points down. Top edges
    # (horizontal, interior below) and left edges own their pixels.
    tx = sign * dx
    ty = sign * dy
    owns = ty < 0.0 or (ty == 0.0 and tx > 0.0)
    return px, py, dx, dy, sign, owns


@numba.njit(cache=True, parallel=True)
def _rasterize_kernel(sx, sy, zw, inv_w, tri, band_rows, out):
    """Rasterize one image. `sx`, `sy`: `[V]` float64 pixel coordinates of the vertices
    (`rendering.camera.ndc_to_pixels`), `zw`: `[V]` NDC depth, `inv_w`: `[V]` 1/w (<= 0 marks an
    unusable vertex), `tri`: `[F, 3]` int64, `out`: `[H, W, 4]` float32 (overwritten).

    Pixel (row i, column j) is sampled at its centre (j + 0.5, i + 0.5), as
    `rendering.camera.pixel_centers` defines it; that arithmetic is inlined here for speed."""
    height, width = out.shape[0], out.shape[1]
    n_tri = tri.shape[0]
    row0 = np.zeros(n_tri, np.int64)
    row1 = np.full(n_tri, -1, np.int64)
    col0 = np.zeros(n_tri, np.int64)
    col1 = np.full(n_tri, -1, np.int64)
    orient = np.zeros(n_tri, np.float64)
    for f in range(n_tri):
        a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]
        if inv_w[a] <= 0.0 or inv_w[b] <= 0.0 or inv_w[c] <= 0.0:
            continue
        x0, y0, x1, y1, x2, y2 = sx[a], sy[a], sx[b], sy[b], sx[c], sy[c]
        if not (
            np.isfinite(x0)
            and np.isfinite(y0)
            and np.isfinite(x1)
            and np.isfinite(y1)
            and np.isfinite(x2)
            and np.isfinite(y2)
        ):
            continue
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0.0 or not np.isfinite(area):
            continue
        orient[f] = 1.0 if area > 0.0 else -1.0
        # Pixel centres j + 0.5 inside [min x, max x], clamped to the image.
        row0[f] = int(max(0.0, math.ceil(min(y0, y1, y2) - 0.5)))
        row1[f] = int(min(height - 1.0, math.floor(max(y0, y1, y2) - 0.5)))
        col0[f] = int(max(0.0, math.ceil(min(x0, x1, x2) - 0.5)))
        col1[f] = int(min(width - 1.0, math.floor(max(x0, x1, x2) - 0.5)))

    # Bin triangles into bands of rows (keeping draw order) so that each band is one parallel work
    # item that writes only its own rows.
    n_bands = (height + band_rows - 1) // band_rows
    start = np.zeros(n_bands + 1, np.int64)
    for f in range(n_tri):
        if row0[f] <= row1[f] and col0[f] <= col1[f]:
            for k in range(row0[f] // band_rows, row1[f] // band_rows + 1):
                start[k + 1] += 1
    for k in range(n_bands):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    binned = np.empty(start[n_bands], np.int64)
    for f in range(n_tri):
        if row0[f] <= row1[f] and col0[f] <= col1[f]:
            for k in range(row0[f] // band_rows, row1[f] // band_rows + 1):
                binned[fill[k]] = f
                fill[k] += 1

    for band in numba.prange(n_bands):
        band_first = band * band_rows
        band_last = min(height, band_first + band_rows) - 1
        out[band_first : band_last + 1] = 0.0
        for t in range(start[band], start[band + 1]):
            f = binned[t]
            a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]
            o = orient[f]
            # Edge k is opposite vertex k, so its edge function is vertex k's barycentric weight
            # (times twice the area).
            bx0, by0, dx0, dy0, s0, own0 = _edge_setup(sx[b], sy[b], sx[c], sy[c], o)
            bx1, by1, dx1, dy1, s1, own1 = _edge_setup(sx[c], sy[c], sx[a], sy[a], o)
            bx2, by2, dx2, dy2, s2, own2 = _edge_setup(sx[a], sy[a], sx[b], sy[b], o)
            z0, z1, z2 = zw[a], zw[b], zw[c]
            w0, w1, w2 = inv_w[a], inv_w[b], inv_w[c]
            c_lo, c_hi = col0[f], col1[f]
            for i in range(max(row0[f], band_first), min(row1[f], band_last) + 1):
                y = i + 0.5
                r0 = dx0 * (y - by0)
                r1 = dx1 * (y - by1)
                r2 = dx2 * (y - by2)
                # Narrow the column range to where each edge function can be >= 0 (with a pixel
                # of slack; the exact per-pixel test below decides).
                lo = float(c_lo)
                hi = float(c_hi)
                empty = False
                for r, dy, bx, s, own in (
                    (r0, dy0, bx0, s0, own0),
                    (r1, dy1, bx1, s1, own1),
                    (r2, dy2, bx2, s2, own2),
                ):
                    if dy == 0.0:
                        e = s * r
                        if e < 0.0 or (e == 0.0 and not own):
                            empty = True
                    else:
                        cross = bx + r / dy - 0.5  # column where this edge function is zero
                        if s * dy < 0.0:  # edge function grows with x
                            lo = max(lo, math.floor(cross) - 1.0)
                        else:
                            hi = min(hi, math.ceil(cross) + 1.0)
                if empty or lo > hi:
                    continue
                for j in range(int(lo), int(hi) + 1):
                    x = j + 0.5
                    e0 = s0 * (r0 - dy0 * (x - bx0))
                    if e0 < 0.0 or (e0 == 0.0 and not own0):
                        continue
                    e1 = s1 * (r1 - dy1 * (x - bx1))
                    if e1 < 0.0 or (e1 == 0.0 and not own1):
                        continue
                    e2 = s2 * (r2 - dy2 * (x - bx2))
                    if e2 < 0.0 or (e2 == 0.0 and not own2):
                        continue
                    total = e0 + e1 + e2
                    depth = (e0 * z0 + e1 * z1 + e2 * z2) / total
                    if depth < -1.0 or depth > 1.0:
                        continue
                    depth32 = np.float32(depth)
                    if out[i, j, 3] != 0.0 and not depth32 < out[i, j, 2]:
                        continue
                    p0 = e0 * w0
                    p1 = e1 * w1
                    norm = 1.0 / (p0 + p1 + e2 * w2)
                    out[i, j, 0] = p0 * norm
                    out[i, j, 1] = p1 * norm
                    out[i, j, 2] = depth32
                    out[i, j, 3] = f + 1
