"""Per-vertex mesh attributes: normals and MikkTSpace tangent frames (numpy, float64; normals
also torch)."""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.csgraph import connected_components


def face_normals(vertices: np.ndarray, faces: np.ndarray, normalize: bool = True) -> np.ndarray:
    """`vertices` `(V, 3)`, `faces` `(F, 3)` CCW seen from outside -> `(F, 3)` normals (area
    weighted when `normalize=False`)."""
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    n = np.cross(v1 - v0, v2 - v0)
    if normalize:
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    return n


def _scatter_to_vertices(values: np.ndarray, faces: np.ndarray, num_vertices: int) -> np.ndarray:
    out = np.zeros((num_vertices, values.shape[1]))
    for k in range(3):
        np.add.at(out, faces[:, k], values)
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-20)


def vertex_normals(vertices, faces):
    """Area-weighted unit vertex normals `(V, 3)` (`(B, V, 3)` for a batched torch tensor);
    numpy in, numpy out; torch in, torch out (differentiable)."""
    if isinstance(vertices, torch.Tensor):
        faces_t = torch.tensor(np.asarray(faces), dtype=torch.long, device=vertices.device)
        return _vertex_normals_torch(vertices, faces_t)
    fn = face_normals(vertices, faces, normalize=False)
    return _normalize(_scatter_to_vertices(fn, faces, len(vertices)))


_TINY = float(np.finfo(np.float32).tiny)  # mikktspace.c's "not zero" (FLT_MIN)


def _unit_or_zero(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit length; zero-length rows left as they are (as mikktspace.c)."""
    length = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(length > _TINY, length, 1.0)


def _sum_by(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    """`(length, C)` sums of the rows of `values` `(N, C)` with the same `index` `(N,)`."""
    return np.stack(
        [np.bincount(index, values[:, c], minlength=length) for c in range(values.shape[1])], 1
    )


def mikktspace_tangents(
    vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """MikkTSpace tangents, one per face corner: the tangent frame that glTF specifies and that
    Blender, Substance and three.js bake and render normal maps in.

    A numpy port of the reference `genTangSpaceDefault` (mikktspace.c) for triangle meshes,
    tested against it (`tests/test_gltf_validator.py` runs the npm `mikktspace` package, the
    reference algorithm compiled to WebAssembly). Its steps: corners equal in position, normal
    and UV are welded; each triangle's tangent is its unit +u direction; around each vertex the
    triangles that share edges and have the same UV orientation form a group, whose tangent is
    the sum of its triangles' tangents, each projected onto the vertex's tangent plane,
    normalised and weighted by the triangle's angle at the vertex; `w` = +1 where the UV layout
    keeps the surface's orientation, -1 where it mirrors it. Triangles with two corners at one
    position copy another corner of the same vertex. Where the reference is order-dependent (a
    triangle of zero UV area joins the orientation of the first group to reach it) this takes
    its lowest-numbered neighbour's.

    Args:
        vertices (`np.ndarray` of shape `(V, 3)`), faces (`(F, 3)` int, counter-clockwise),
            uvs (`(V, 2)`, origin bottom-left, so +v is a normal map's +y as glTF reads it),
            normals (`(V, 3)`): the mesh as it is exported and rendered.

    Returns:
        `(F, 3, 4)` float64: per corner, the unit tangent (along +u, orthogonal to the normal)
        and the bitangent sign `w`, so that `bitangent = w * cross(normal, tangent)` points along
        +v (glTF's TANGENT attribute).
    """
    faces = np.asarray(faces, np.int64)
    vertices, uvs = np.asarray(vertices, np.float64), np.asarray(uvs, np.float64)
    normals = _normalize(np.asarray(normals, np.float64))
    pos, nrm, tex = vertices[faces], normals[faces], uvs[faces]
    num = len(faces)
    out = np.zeros((num, 3, 4))
    out[..., 0], out[..., 3] = 1.0, -1.0  # mikktspace.c's value where no group reaches
    if num == 0:
        return out
    # welded vertex ids: vertices equal in position, normal and UV are one (+ 0.0 turns -0.0
    # into 0.0, which C's == treats as equal)
    keys = np.concatenate([vertices, normals, uvs], axis=1) + 0.0
    weld = np.unique(keys, axis=0, return_inverse=True)[1].ravel()[faces]
    degenerate = np.zeros(num, bool)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        degenerate |= np.all(pos[:, a] == pos[:, b], axis=1)

    # per triangle: unit +u direction, UV orientation, and whether it has a tangent at all
    d1, d2 = pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]
    t21, t31 = tex[:, 1] - tex[:, 0], tex[:, 2] - tex[:, 0]
    area = t21[:, 0] * t31[:, 1] - t21[:, 1] * t31[:, 0]
    along_u = t31[:, 1:] * d1 - t21[:, 1:] * d2
    along_v = t21[:, :1] * d2 - t31[:, :1] * d1
    orient = area > 0
    sign = np.where(orient, 1.0, -1.0)[:, None]
    face_tangent, face_bitangent = sign * _unit_or_zero(along_u), sign * _unit_or_zero(along_v)
    abs_area = np.where(np.abs(area) > _TINY, np.abs(area), np.inf)
    has_tangent = (np.linalg.norm(along_u, axis=1) / abs_area > _TINY) & (
        np.linalg.norm(along_v, axis=1) / abs_area > _TINY
    )

    # edge neighbours: the triangle holding the same welded edge wound the other way
    good = np.flatnonzero(~degenerate)
    start, end = weld[good], np.roll(weld[good], -1, axis=1)  # half-edge k: corner k -> k + 1
    span = int(weld.max()) + 1
    key, twin_key = (start * span + end).ravel(), (end * span + start).ravel()
    order = np.argsort(key, kind="stable")  # ties: the lowest-numbered triangle first
    found = np.minimum(np.searchsorted(key[order], twin_key), len(key) - 1)
    paired = key[order][found] == twin_key
    half, twin = np.flatnonzero(paired), order[found[paired]]
    face_of = np.repeat(good, 3)
    f, g = face_of[half], face_of[twin]
    lonely = np.flatnonzero(~has_tangent & ~degenerate)
    if len(lonely):
        donor = np.full(num, num)
        take = ~has_tangent[f] & has_tangent[g]
        np.minimum.at(donor, f[take], g[take])
        lonely = lonely[donor[lonely] < num]
        orient[lonely] = orient[donor[lonely]]

    # groups: half-edge (f, k), corner k -> k + 1, and its twin (g, m), corner m -> m + 1, link
    # corner k of f with corner m + 1 of g and corner k + 1 of f with corner m of g
    same = orient[f] == orient[g]
    half, twin = half[same], twin[same]
    f, g, k, m = 3 * face_of[half], 3 * face_of[twin], half % 3, twin % 3
    rows = np.concatenate([f + k, f + (k + 1) % 3])
    cols = np.concatenate([g + (m + 1) % 3, g + m])
    links = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), (3 * num, 3 * num))
    group = connected_components(links, directed=False)[1]

    def in_tangent_plane(x):
        return _unit_or_zero(x - nrm * np.sum(x * nrm, axis=2, keepdims=True))

    def per_corner(x):  # (F, 3) per triangle -> (3F, 3) at each corner's tangent plane
        return in_tangent_plane(np.repeat(x[:, None], 3, axis=1)).reshape(-1, 3)

    tangent, bitangent = per_corner(face_tangent), per_corner(face_bitangent)
    to_prev = in_tangent_plane(np.roll(pos, 1, axis=1) - pos)
    to_next = in_tangent_plane(np.roll(pos, -1, axis=1) - pos)
    angle = np.arccos(np.clip(np.sum(to_prev * to_next, axis=2), -1.0, 1.0)).reshape(-1, 1)
    adds = np.repeat(has_tangent & ~degenerate, 3)
    contribution = np.where(adds[:, None], angle * tangent, 0.0)
    summed = _sum_by(group, contribution, 3 * num)
    seeded = np.zeros(3 * num, bool)
    seeded[group[adds]] = True

    # mikktspace.c leaves out of a corner's sum the triangles of its group whose projected
    # tangent or bitangent is opposite its own (cos <= -1 in float32: folded triangles only)
    by_group = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    size = sizes[group]
    corner = np.repeat(np.arange(3 * num), size)
    member = by_group[
        np.repeat(np.cumsum(sizes)[group] - size, size)
        + np.arange(len(corner))
        - np.repeat(np.cumsum(size) - size, size)
    ]
    opposite = (
        adds[corner]
        & adds[member]
        & (
            (np.sum(tangent[corner] * tangent[member], axis=1).astype(np.float32) <= -1)
            | (np.sum(bitangent[corner] * bitangent[member], axis=1).astype(np.float32) <= -1)
        )
    )
    summed = summed[group] - _sum_by(corner[opposite], contribution[member[opposite]], 3 * num)

    keep = seeded[group] & ~np.repeat(degenerate, 3)
    flat = out.reshape(-1, 4)
    flat[keep, :3] = _unit_or_zero(summed[keep])
    flat[keep, 3] = np.where(np.repeat(orient, 3)[keep], 1.0, -1.0)

    # degenerate triangles: each corner copies the first good corner of its welded vertex
    if degenerate.any():
        welded, good_corners = weld.ravel(), (3 * good[:, None] + np.arange(3)).ravel()
        first = np.full(span, -1)
        ids, at = np.unique(welded[good_corners], return_index=True)
        first[ids] = good_corners[at]
        bad = np.flatnonzero(np.repeat(degenerate, 3))
        source = first[welded[bad]]
        flat[bad[source >= 0]] = flat[source[source >= 0]]
    return out


def split_tangent_seams(faces: np.ndarray, corner_tangents: np.ndarray, num_vertices: int):
    """Per-corner tangents `(F, 3, 4)` (`mikktspace_tangents`) -> per-vertex ones, as a glTF
    primitive holds them: a vertex whose corners differ in handedness `w` (a mirrored UV layout)
    gets a copy per `w`; corners that differ otherwise (MikkTSpace's sub-groups at folded
    triangles, two fans meeting at one vertex) take the tangent most of them have (ties: the
    first corner's). On the face's seamless, unmirrored layout no vertex is copied.

    Returns:
        `(source, faces, tangents)`: `source` `(V',)` int64, the original vertex of each output
        vertex (`arange(num_vertices)` first, then the copies); `faces` `(F, 3)` into those;
        `tangents` `(V', 4)` float64 ((1, 0, 0, 1) for a vertex no face uses).
    """
    faces = np.asarray(faces, np.int64)
    corners = faces.ravel()
    values = np.asarray(corner_tangents, np.float64).reshape(len(corners), 4) + 0.0
    keys = np.concatenate([corners[:, None], values[:, 3:], values[:, :3]], axis=1)
    _, first, inverse, counts = np.unique(
        keys, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    owner, sign = corners[first], values[first, 3]  # (vertex, w) of each distinct tangent
    # per (vertex, w): its most frequent tangent first
    order = np.lexsort((first, -counts, sign, owner))
    head = np.ones(len(order), bool)
    head[1:] = (owner[order][1:] != owner[order][:-1]) | (sign[order][1:] != sign[order][:-1])
    group = np.empty(len(order), np.int64)
    group[order] = np.cumsum(head) - 1
    chosen = order[head]  # group -> its distinct tangent
    corner_group = group[inverse]
    appears = np.full(len(chosen), len(corners))
    np.minimum.at(appears, corner_group, np.arange(len(corners)))
    by_appearance = np.argsort(appears, kind="stable")
    vertex = owner[chosen]
    kept = np.zeros(len(chosen), bool)  # a vertex keeps its index for its first corner's w
    kept[by_appearance[np.unique(vertex[by_appearance], return_index=True)[1]]] = True
    index = vertex.copy()
    copies = by_appearance[~kept[by_appearance]]
    index[copies] = num_vertices + np.arange(len(copies))
    source = np.concatenate([np.arange(num_vertices), vertex[copies]])
    tangents = np.tile([1.0, 0.0, 0.0, 1.0], (len(source), 1))
    tangents[index] = values[first[chosen]]
    return source, index[corner_group].reshape(faces.shape), tangents


def vertex_tangents(
    vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """Per-vertex MikkTSpace tangents `(V, 4)` (`mikktspace_tangents`: xyz along +u, w = ±1),
    the frame of every tangent-space map here: the baked shape normals, the reflectance
    networks' detail normals, the relit previews and the GLB's TANGENT attribute.

    Where a vertex's corners differ (`split_tangent_seams`), the tangent most of them have;
    raises `ValueError` where they differ in handedness (a mirrored UV layout, which needs the
    vertex split; the face's layout is not mirrored).
    """
    corners = mikktspace_tangents(vertices, faces, uvs, normals)
    source, _, tangents = split_tangent_seams(faces, corners, len(vertices))
    if len(source) > len(vertices):
        raise ValueError(
            f"{len(source) - len(vertices)} vertices have corners of opposite handedness (a "
            "mirrored UV layout): split them first (split_tangent_seams)"
        )
    return tangents


def tangent_frames(tangents: np.ndarray, frame_normals: np.ndarray):
    """Orthonormal tangent frames from interpolated `tangents` `(N, 4)` (xyz + bitangent sign,
    as `vertex_tangents` gives them) and `frame_normals` `(N, 3)`.

    Returns `(t, b, n)`, each `(N, 3)` float64: the unit normal `n`, the tangent made orthogonal
    to it `t` (along +u), and `b = sign * cross(n, t)` (along +v)."""
    n = _normalize(frame_normals)
    t = _normalize(tangents[:, :3] - n * np.sum(tangents[:, :3] * n, axis=1, keepdims=True))
    b = np.cross(n, t) * np.where(tangents[:, 3:] < 0, -1.0, 1.0)
    return t, b, n


def to_tangent_space(normals: np.ndarray, tangents: np.ndarray, frame_normals: np.ndarray):
    """Express unit `normals` `(N, 3)` (object space) in the tangent frames given by
    interpolated `tangents` `(N, 4)` (xyz + bitangent sign) and `frame_normals` `(N, 3)`.
    Returns `(N, 3)` float32: (+u, +v, out of the surface) components, as glTF normal maps
    store them. `from_tangent_space` is its inverse."""
    t, b, n = tangent_frames(tangents, frame_normals)
    return np.stack(
        [np.sum(normals * t, 1), np.sum(normals * b, 1), np.sum(normals * n, 1)], 1
    ).astype(np.float32)


def from_tangent_space(
    normals_tangent: np.ndarray, tangents: np.ndarray, frame_normals: np.ndarray
) -> np.ndarray:
    """Tangent-space normals `(N, 3)` ((+u, +v, out of the surface) components, e.g. a decoded
    normal map sampled at N points) -> unit normals `(N, 3)` float64 in the space of
    `tangents` `(N, 4)` and `frame_normals` `(N, 3)` (the inverse of `to_tangent_space`)."""
    t, b, n = tangent_frames(tangents, frame_normals)
    x, y, z = normals_tangent[:, 0:1], normals_tangent[:, 1:2], normals_tangent[:, 2:3]
    return _normalize(t * x + b * y + n * z)


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals `(..., 3)` -> normal-map values (n + 1) / 2 in [0, 1], float32 (the
    convention of every normal map here, as glTF stores them)."""
    return np.clip((normals + 1) * 0.5, 0, 1).astype(np.float32)


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """Normal-map values (n + 1) / 2 `(..., 3)` -> unit normals, float32."""
    n = encoded.astype(np.float32) * 2 - 1
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)


def _vertex_normals_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    faces = faces.long()
    v0, v1, v2 = (vertices[..., faces[:, k], :] for k in range(3))
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    out = torch.zeros_like(vertices)
    for k in range(3):
        out = out.index_add(-2, faces[:, k], fn)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-20)
