"""Per-vertex mesh attributes: normals and tangent frames (numpy, float64; normals also torch)."""

from __future__ import annotations

import numpy as np
import torch


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


def vertex_tangents(
    vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """Per-vertex tangent frames from UV gradients (Lengyel's method, as glTF viewers compute
    when a file carries no tangents).

    Returns `(V, 4)`: unit tangent (along +u, orthogonal to the normal) and the bitangent sign
    `w` so that `bitangent = w * cross(normal, tangent)` points along +v (glTF convention).
    """
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    t0, t1, t2 = uvs[faces[:, 0]], uvs[faces[:, 1]], uvs[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    d1, d2 = t1 - t0, t2 - t0
    r = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.where(np.abs(r) < 1e-20, 1e-20, r)[:, None]
    sdir = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) / r
    tdir = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) / r
    tan = _scatter_to_vertices(sdir, faces, len(vertices))
    bit = _scatter_to_vertices(tdir, faces, len(vertices))
    tan = _normalize(tan - normals * np.sum(tan * normals, axis=1, keepdims=True))
    w = np.where(np.sum(np.cross(normals, tan) * bit, axis=1) < 0, -1.0, 1.0)
    return np.concatenate([tan, w[:, None]], axis=1)


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
