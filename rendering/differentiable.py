"""Differentiable rendering ops with nvdiffrast's contract, for analysis-by-synthesis fitting.

`rendering.rasterize.rasterize` gives triangle ids and barycentrics but no gradients. Here:

- `barycentrics(pos, tri, rast)` recomputes the perspective-correct barycentrics of every covered
  pixel in torch from the clip-space positions, so they are differentiable w.r.t. `pos` (the
  triangle ids stay fixed, as in nvdiffrast);
- `interpolate(attr, rast, tri, pos=None)` interpolates with those weights when `pos` is given,
  so gradients reach vertex positions as well as attributes;
- `texture(tex, uv)` samples a UV image (bilinear, clamp-to-edge), differentiable w.r.t. both;
- `antialias(color, rast, pos, tri)` blends colours across silhouette edges by the analytic
  coverage of nvdiffrast's antialiasing, which gives silhouettes gradients w.r.t. `pos`;
- `rasterize_any(pos, tri, resolution)` uses nvdiffrast for CUDA tensors when it is installed,
  else our CPU rasterizer.

Same conventions as `rendering.rasterize` (see `rendering.camera`): images are stored top row
first, pixel (row i, column j) is sampled at NDC x = (j + 0.5) / W * 2 - 1,
y = 1 - (i + 0.5) / H * 2; UV images store v = 1 in their top row.

>>> rast = rasterize_any(pos, tri, (256, 256))  # not differentiable: ids and weights
>>> uv = interpolate(uvs, rast, tri, pos=pos)  # differentiable w.r.t. uvs and pos
>>> img = antialias(texture(albedo_map, uv), rast, pos, tri)  # silhouettes get gradients too
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from rendering.rasterize import attr_layout, rasterize
from rendering.rasterize import interpolate as _interpolate_fixed

__all__ = [
    "TopologyHash",
    "antialias",
    "antialias_construct_topology_hash",
    "barycentrics",
    "interpolate",
    "rasterize_any",
    "texture",
]


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
    attr_flat, per_batch = attr_layout(attr, batch)
    if pos.shape[-2] != attr.shape[-2]:
        raise ValueError(f"pos has {pos.shape[-2]} vertices but attr has {attr.shape[-2]}")
    n_verts, channels = attr.shape[-2], attr.shape[-1]
    tri_t = _tri_tensor(tri, attr.device)
    pix, face = _covered(rast, attr.device)
    weights = _weights_at(_batched(pos, batch), tri_t, pix, face, rast).to(attr.dtype)
    verts = tri_t[face]
    if per_batch:
        verts = verts + (pix // (height * width) * n_verts)[:, None]
    values = (attr_flat[verts] * weights[:, :, None]).sum(dim=1)
    out = attr.new_zeros(batch * height * width, channels).index_copy(0, pix, values)
    return out.reshape(batch, height, width, channels)


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
    uv = uv.to(tex.dtype)
    # grid_sample: x = -1 / +1 are the left / right edges of the image, y = -1 the top edge.
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)
    out = F.grid_sample(image, grid, mode=filter_mode, padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


@dataclass(frozen=True, eq=False)
class TopologyHash:
    """Edge adjacency of a triangle mesh, for `antialias` (nvdiffrast's topology hash).

    Attributes:
        opposite (`torch.Tensor` of shape `[F, 3]`, int64, CPU): for edge k of each triangle (the
            edge opposite its vertex k), the vertex opposite that edge in the neighbouring
            triangle, or -1 where the edge is a mesh boundary, is shared by more than two
            triangles, or the triangle is degenerate (such edges always count as silhouettes).
    """

    opposite: torch.Tensor


def antialias_construct_topology_hash(tri: torch.Tensor | np.ndarray) -> TopologyHash:
    """Edge adjacency of `tri` (`[F, 3]` int), cached by content: building it once and passing it
    to `antialias` saves hashing `tri` on every call."""
    tri_np = np.ascontiguousarray(_to_numpy(tri), dtype=np.int64)
    if tri_np.ndim != 2 or tri_np.shape[1] != 3:
        raise ValueError(f"tri must have shape [F, 3], got {list(tri_np.shape)}")
    return _topology_hash(tri_np.tobytes(), tri_np.shape[0])


def antialias(
    color: torch.Tensor,
    rast: torch.Tensor,
    pos: torch.Tensor,
    tri: torch.Tensor | np.ndarray,
    topology_hash: TopologyHash | None = None,
) -> torch.Tensor:
    """Analytic antialiasing of silhouette edges (nvdiffrast's `antialias`).

    For each horizontally or vertically adjacent pixel pair (p, q) whose triangle ids differ, the
    *front* triangle t is taken: the covered one if the other pixel is background, else the one
    with the smaller z/w; p is the pixel it covers. The edge of t through which the segment from
    p's centre to q's centre leaves t is found; if it is a silhouette edge (a boundary edge, or its
    neighbouring triangle faces the other way in screen space) and it crosses the segment at
    parameter a (0 at p, 1 at q), the colours are blended by the coverage of the pixel boxes:
    a < 0.5: p gets (a + 0.5) c_p + (0.5 - a) c_q; a > 0.5: q gets (a - 0.5) c_p + (1.5 - a) c_q.
    `a` is computed from `pos`, so the blend is differentiable w.r.t. `pos` (the silhouette moves
    the colours) and w.r.t. `color`. Deltas from several pairs add up, all computed from the input
    colours.

    As in nvdiffrast (and unlike exact coverage), only the pairs at id changes are looked at, each
    pair blends at most one pixel by at most half, an edge is handled by horizontal pairs only if
    it is at least as steep as 45 degrees (else by vertical pairs), crossings up to 1/16 pixel
    outside [0, 1] are clamped into it, and interior edges between triangles that face the same
    way are never blended (aliasing from shading or texture is left alone). Where silhouette edges
    meet at a vertex, or two silhouettes fall between the same two pixels, the coverage is
    approximate. Differences from nvdiffrast: the arithmetic is float64 for the edge selection and
    `pos`'s dtype for the differentiable crossing, and the gradient comes from autograd through
    that crossing rather than nvdiffrast's hand-written kernel (its `pos_gradient_boost` is not
    offered).

    Args:
        color (`torch.Tensor` of shape `[B, H, W, C]`): float image to antialias.
        rast (`torch.Tensor` of shape `[B, H, W, 4]`): output of `rasterize` for `pos`, `tri`.
        pos (`torch.Tensor` of shape `[B, V, 4]` or `[1, V, 4]`): float clip-space positions.
        tri (`torch.Tensor` or `np.ndarray` of shape `[F, 3]`): int vertex indices.
        topology_hash (`TopologyHash`, optional): `antialias_construct_topology_hash(tri)`; built
            (and cached by the content of `tri`) when not given.

    Returns:
        `torch.Tensor` of shape `[B, H, W, C]` in `color`'s dtype, a new tensor (no input is
        modified). Differentiable w.r.t. `color` and `pos`.
    """
    batch, height, width = _check_rast(rast)
    if color.ndim != 4 or tuple(color.shape[:3]) != (batch, height, width):
        raise ValueError(
            f"color must have shape [{batch}, {height}, {width}, C], got {list(color.shape)}"
        )
    device = color.device
    if topology_hash is None:
        topology_hash = antialias_construct_topology_hash(tri)
    tri_t = _tri_tensor(tri, device)
    if topology_hash.opposite.shape[0] != tri_t.shape[0]:
        raise ValueError("topology_hash was built for a different tri")
    pos_b = _batched(pos, batch).to(device)
    n_verts = pos_b.shape[1]
    channels = color.shape[-1]
    flat_color = color.reshape(-1, channels)

    with torch.no_grad():
        pair_p, pair_q, pair_down, face, keep_edge, a_detached = _silhouette_crossings(
            rast.to(device), pos_b.detach().double(), tri_t, topology_hash.opposite.to(device)
        )
    if pair_p.numel() == 0:
        return color.clone()

    # Recompute the crossing parameter of the selected edges with gradients, in pos's dtype.
    screen = _to_pixels(pos_b, height, width).reshape(-1, 2)  # [B * V, 2]
    base = pair_p // (height * width) * n_verts
    ends = tri_t[face][:, [1, 2, 0, 2, 0, 1]].reshape(-1, 3, 2)  # edge k: (vertex k+1, k+2)
    ends = ends[torch.arange(len(face), device=device), keep_edge] + base[:, None]
    e0, e1 = screen[ends[:, 0]], screen[ends[:, 1]]
    centre = _pixel_centres(pair_p, height, width).to(screen.dtype)
    step = _axis_step(pair_p, pair_q).to(screen.dtype)
    a = _crossing(e0 - centre, e1 - centre, pair_down, step)
    # Clamp as nvdiffrast does (crossings up to 1/16 pixel outside the segment).
    a = torch.where((a_detached >= 0) & (a_detached <= 1), a, a.detach().clamp(0, 1))

    alpha = (0.5 - a).to(color.dtype)[:, None]
    delta = alpha * (flat_color[pair_q] - flat_color[pair_p])
    target = torch.where(alpha[:, 0] > 0, pair_p, pair_q)
    return flat_color.index_add(0, target, delta).reshape(color.shape)


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


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


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
    return torch.stack([rem % width, rem // width], dim=1).double() + 0.5


def _to_pixels(pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip `[..., 4]` -> continuous pixel coordinates `[..., 2]` (top-left origin, y down)."""
    ndc = pos[..., :2] / pos[..., 3:4]
    return torch.stack([(ndc[..., 0] + 1) * (0.5 * width), (1 - ndc[..., 1]) * (0.5 * height)], -1)


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
    centre = _pixel_centres(pix, height, width)
    x = (centre[:, 0:1] * (2.0 / width) - 1).to(clip.device)
    y = (1 - centre[:, 1:2] * (2.0 / height)).to(clip.device)
    ex = clip[..., 0] - x * clip[..., 3]
    ey = clip[..., 1] - y * clip[..., 3]
    b = torch.linalg.cross(ex, ey, dim=1)
    return b / b.sum(dim=1, keepdim=True)


def _along_across(rel: torch.Tensor, down: torch.Tensor, step: torch.Tensor):
    """Coordinates `rel` `[..., 2]` relative to p's centre -> (along the p->q axis, in units where
    q is at 1; across it)."""
    along = torch.where(down, rel[..., 1], rel[..., 0]) * step
    across = torch.where(down, rel[..., 0], rel[..., 1])
    return along, across


def _crossing(r0: torch.Tensor, r1: torch.Tensor, down: torch.Tensor, step: torch.Tensor):
    """Parameter along p -> q (0 at p, 1 at q) where the line through `r0`, `r1` `[N, 2]`
    (relative to p's centre) crosses the axis through p and q."""
    x0, y0 = _along_across(r0, down, step)
    x1, y1 = _along_across(r1, down, step)
    return x0 - y0 * (x1 - x0) / (y1 - y0)


def _axis_step(pair_p: torch.Tensor, pair_q: torch.Tensor) -> torch.Tensor:
    """`[N]` float64: +1 where q is right of / below p, -1 where it is left of / above."""
    return torch.where(pair_q > pair_p, 1.0, -1.0).double()


def _silhouette_crossings(rast, pos, tri, opposite):
    """Find the pixel pairs that `antialias` blends (no gradients; `pos` float64).

    Returns, per blended pair: front pixel p `[N]`, other pixel q `[N]` (flat indices), whether
    the pair is vertical `[N]`, the front triangle `[N]`, the edge index (0..2) that crosses
    `[N]`, and the crossing parameter `[N]` (float64, before clamping).
    """
    batch, height, width, _ = rast.shape
    n_faces = tri.shape[0]
    ids = rast[..., 3]
    flat_ids, flat_depth = ids.reshape(-1), rast[..., 2].reshape(-1)

    # Pairs (first, first + 1) and (first, first + W) whose ids differ.
    right = torch.nonzero(ids[:, :, :-1] != ids[:, :, 1:])
    below = torch.nonzero(ids[:, :-1, :] != ids[:, 1:, :])
    bij = torch.cat([right, below])
    first = (bij[:, 0] * height + bij[:, 1]) * width + bij[:, 2]
    down = torch.arange(len(first), device=ids.device) >= len(right)
    second = first + torch.where(down, width, 1)
    id1, id2 = flat_ids[first], flat_ids[second]
    take_first = (id2 == 0) | ((id1 > 0) & (flat_depth[first] < flat_depth[second]))
    pair_p = torch.where(take_first, first, second)
    pair_q = torch.where(take_first, second, first)
    batch_face = pair_p // (height * width) * n_faces + flat_ids[pair_p].long() - 1

    # Silhouette edges of every triangle of every image: the neighbour across edge k (joining
    # vertices k+1 and k+2) faces the other way, i.e. its far vertex lies on the same side of the
    # edge as vertex k; a boundary edge uses vertex k itself, so it always counts.
    screen = _to_pixels(pos, height, width)  # [B, V, 2]
    corner = screen[:, tri]  # [B, F, 3, 2]
    wing = screen[:, torch.where(opposite >= 0, opposite, tri)]
    nxt, prv = corner[:, :, [1, 2, 0]], corner[:, :, [2, 0, 1]]
    own = _signed_area(corner[:, :, 0], corner[:, :, 1], corner[:, :, 2])[..., None]
    silhouette = ((_signed_area(wing, nxt, prv) >= 0) == (own >= 0)).reshape(-1, 3)
    # Most pairs are inside the surface: drop those whose front triangle has no silhouette edge.
    some = silhouette.any(dim=1)[batch_face]
    pair_p, pair_q, down, batch_face = pair_p[some], pair_q[some], down[some], batch_face[some]
    face = batch_face % max(n_faces, 1)

    corner = corner.reshape(-1, 3, 2)[batch_face]  # [N, 3, 2]
    centre = _pixel_centres(pair_p, height, width).to(pos.device)
    step = _axis_step(pair_p, pair_q)
    along, across = _along_across(corner - centre[:, None], down[:, None], step[:, None])
    x0, y0 = along[:, [1, 2, 0]], across[:, [1, 2, 0]]
    x1, y1 = along[:, [2, 0, 1]], across[:, [2, 0, 1]]
    straddles = (y0 >= 0) != (y1 >= 0)
    denom = torch.where(straddles, y1 - y0, 1.0)
    crossing = torch.where(straddles, x0 - y0 * (x1 - x0) / denom, -torch.inf)
    # The segment leaves t through the straddling edge farthest towards q.
    edge = crossing.argmax(dim=1)
    rows = torch.arange(len(edge), device=edge.device)
    a = crossing[rows, edge]
    steep = (y1 - y0).abs()[rows, edge] >= (x1 - x0).abs()[rows, edge]
    eps = 1.0 / 16  # as nvdiffrast: tolerate 1/16 pixel of inaccuracy, then clamp
    keep = silhouette[batch_face, edge] & steep & (a > -eps) & (a < 1 + eps)
    return pair_p[keep], pair_q[keep], down[keep], face[keep], edge[keep], a[keep]


def _signed_area(p0, p1, p2):
    """Twice the signed area of triangles with corners `[..., 2]`."""
    return (p1[..., 0] - p0[..., 0]) * (p2[..., 1] - p0[..., 1]) - (p2[..., 0] - p0[..., 0]) * (
        p1[..., 1] - p0[..., 1]
    )


@lru_cache(maxsize=8)
def _topology_hash(tri_bytes: bytes, n_faces: int) -> TopologyHash:
    tri = np.frombuffer(tri_bytes, dtype=np.int64).reshape(n_faces, 3)
    opposite = np.full((n_faces, 3), -1, np.int64)
    if n_faces:
        # Half-edge k of face f joins vertices k+1 and k+2; key it by the unordered pair.
        lo = np.minimum(tri[:, [1, 2, 0]], tri[:, [2, 0, 1]]).reshape(-1)
        hi = np.maximum(tri[:, [1, 2, 0]], tri[:, [2, 0, 1]]).reshape(-1)
        degenerate = np.repeat(
            (tri[:, 0] == tri[:, 1]) | (tri[:, 1] == tri[:, 2]) | (tri[:, 2] == tri[:, 0]), 3
        )
        half = np.flatnonzero(~degenerate)
        key = lo[half] * (int(tri.max()) + 1) + hi[half]
        order = np.argsort(key, kind="stable")
        half, key = half[order], key[order]
        _, start, count = np.unique(key, return_index=True, return_counts=True)
        first = half[start[count == 2]]
        second = half[start[count == 2] + 1]
        far = tri.reshape(-1)  # vertex k of face f is opposite half-edge 3 f + k
        flat = opposite.reshape(-1)
        flat[first] = far[second]
        flat[second] = far[first]
    return TopologyHash(torch.from_numpy(opposite))
