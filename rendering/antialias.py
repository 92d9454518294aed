"""Analytic silhouette antialiasing with nvdiffrast's contract (`antialias`), on top of
`rendering.differentiable`.

`antialias(color, rast, pos, tri)` blends colours across silhouette edges by the analytic
coverage of nvdiffrast's antialiasing, which gives silhouettes gradients w.r.t. `pos`.

The fit (`modeling.reconstruction.fitting`) does not use it: its photometric loss compares only
skin pixels, inside the face's outline, and the outline's place is set by the landmark loss, so
gradients at the silhouette would have nothing to act on. It is also the slowest forward stage
(`python -m bench.bench_differentiable`, dense face mesh at 256^2 on two CPU cores: about 40 ms,
against about 15 ms for `interpolate(..., pos=)` and `texture` together). It is kept, tested
against finite differences (`tests/test_differentiable.py`), for a loss that looks at the
silhouette (e.g. against a segmentation mask).

>>> rast = rasterize_any(pos, tri, (256, 256))
>>> uv = interpolate(uvs, rast, tri, pos=pos)
>>> img = antialias(texture(albedo_map, uv), rast, pos, tri)  # silhouettes get gradients too
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from rendering.camera import clip_to_pixels
from rendering.differentiable import _batched, _check_rast, _pixel_centres, _tri_tensor

__all__ = ["TopologyHash", "antialias", "antialias_construct_topology_hash"]


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
    screen = clip_to_pixels(pos_b, width, height).reshape(-1, 2)  # [B * V, 2]
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


# ---------------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


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
    screen = clip_to_pixels(pos, width, height)  # [B, V, 2]
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
