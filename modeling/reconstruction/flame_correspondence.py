"""The correspondence between FLAME and the project's dense face, built once per model (by
`scripts.convert_flame`) and stored with the converted model.

FLAME's template is fitted to our mean dense face (`Topology.frontal_shape` lifted: 7,305
vertices, the first 468 MediaPipe's landmarks): a rigid start, then rounds of closest points
and L-BFGS on FLAME's first shape and expression coefficients, the jaw and a rigid correction.
Each dense vertex then keeps the closest point of the fitted FLAME surface (a triangle and
barycentric weights), which is where FLAME's surface is under that vertex for any
parameters. The fitted shape itself is not kept.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from modeling.face_model.flame import FlameModel, lbs, rodrigues, surface_points
from modeling.face_model.topology import IBUG68_FROM_MEDIAPIPE, NUM_LANDMARKS, Topology
from modeling.reconstruction.flame_fit import FlameCoefficients, one_thread

__all__ = ["build_mediapipe_correspondence", "closest_points_on_mesh",
           "closest_points_on_triangles"]  # fmt: skip


def closest_points_on_triangles(points, a, b, c) -> np.ndarray:
    """Barycentric weights `(N, 3)` of the closest point to each of `points` `(N, 3)` on
    triangles `(a, b, c)` (each `(N, 3)`): Ericson's region tests (Real-Time Collision
    Detection, 5.1.5), vectorised."""
    ab, ac = b - a, c - a
    ap, bp, cp = points - a, points - b, points - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v, w = vb / denom, vc / denom
        bary = np.stack([1 - v - w, v, w], -1)
        # regions from the lowest priority to the highest (Ericson tests A first)
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        bary = np.where(bc[:, None], np.stack([0 * t, 1 - t, t], -1), bary)
        t = d2 / (d2 - d6)
        region = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        bary = np.where(region[:, None], np.stack([1 - t, 0 * t, t], -1), bary)
        bary = np.where(((d6 >= 0) & (d5 <= d6))[:, None], [0.0, 0.0, 1.0], bary)
        t = d1 / (d1 - d3)
        region = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        bary = np.where(region[:, None], np.stack([1 - t, t, 0 * t], -1), bary)
        bary = np.where(((d3 >= 0) & (d4 <= d3))[:, None], [0.0, 1.0, 0.0], bary)
        bary = np.where(((d1 <= 0) & (d2 <= 0))[:, None], [1.0, 0.0, 0.0], bary)
    bad = ~np.isfinite(bary).all(-1)  # degenerate triangles: their first vertex
    bary[bad] = [1.0, 0.0, 0.0]
    return bary


def closest_points_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                           candidates: int = 10) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The closest point on a triangle mesh to each of `points` `(N, 3)`, among the
    `candidates` triangles whose centroids are nearest (exact for a fairly regular mesh such
    as FLAME's) -> (triangle `(N,)`, barycentric `(N, 3)`)."""
    faces = np.asarray(faces, np.int64)
    k = min(candidates, len(faces))
    _, cand = cKDTree(vertices[faces].mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    tri = faces[cand.ravel()]
    p = np.repeat(points, k, axis=0)
    bary = closest_points_on_triangles(p, *(vertices[tri[:, i]] for i in range(3)))
    closest = (vertices[tri] * bary[..., None]).sum(1)
    best = np.linalg.norm(closest - p, axis=1).reshape(len(points), k).argmin(1)
    pick = np.arange(len(points)) * k + best
    return cand.ravel()[pick], bary[pick]


def _kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(R, t)` minimising `|| R src + t - dst ||` (rigid, `(N, 3)` point sets)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((dst - mu_d).T @ (src - mu_s))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    return rot, mu_d - rot @ mu_s


def _initial_alignment(model: FlameModel, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLAME's frame -> object space, rigid: by the landmark embedding's iBUG points (brows,
    nose, eyes, lips) where the model has one, else by the nose tips (both frames look
    along +z with +y up)."""
    if model.landmark_faces is not None and model.landmark_ibug is not None:
        inner = model.landmark_ibug >= 17  # the jaw contour is a silhouette, not fixed points
        src = surface_points(model.v_template, model.faces[model.landmark_faces[inner]],
                             model.landmark_bary[inner])  # fmt: skip
        dst = target[np.array(IBUG68_FROM_MEDIAPIPE)[model.landmark_ibug[inner]]]
        return _kabsch(src, dst)
    skin = model.weights[:, 3:].max(1) < 0.5  # not the eyeballs
    tip = model.v_template[skin][np.argmax(model.v_template[skin, 2])]
    return np.eye(3), target[np.argmax(target[:, 2])] - tip


def build_mediapipe_correspondence(model: FlameModel, topology: Topology,
                                   rounds: int = 4, steps: int = 30) -> FlameModel:  # fmt: skip
    """Fit FLAME's template to the project's mean dense face once and keep, for each of its
    7,305 vertices, the closest point of the fitted FLAME surface (`mediapipe_faces`,
    `mediapipe_bary`; the first 468 are MediaPipe's landmarks), a weight that drops to 0
    where the surfaces are more than 8 mm apart or the point falls on an eyeball
    (`mediapipe_weight`) and the rigid transform
    FLAME -> object space (`to_object_rotation`, `to_object_translation`).

    The fit: a rigid start (`_initial_alignment`), then `rounds` rounds of closest points
    (fixed within a round) and `steps` L-BFGS steps on FLAME's first 100 shape and 50
    expression coefficients, the jaw and a rigid correction, with the landmark embedding's
    points on MediaPipe's matching landmarks where the model has one."""
    with one_thread():
        return _build_correspondence(model, topology, rounds, steps)


def _build_correspondence(model, topology, rounds, steps) -> FlameModel:
    target = topology.lift(topology.frontal_shape[:NUM_LANDMARKS])
    rot0, trans0 = _initial_alignment(model, target)
    tensors = model.tensors(dtype=torch.float64)
    params = FlameCoefficients.zeros(min(model.num_shape, 100), min(model.num_expression, 50))
    omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # rigid correction
    tau = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    target_t = torch.as_tensor(target)
    rot0_t, trans0_t = torch.as_tensor(rot0), torch.as_tensor(trans0)
    lmk = None
    if model.landmark_faces is not None and model.landmark_ibug is not None:
        inner = model.landmark_ibug >= 17
        lmk = (model.faces[model.landmark_faces[inner]], model.landmark_bary[inner],
               target_t[np.array(IBUG68_FROM_MEDIAPIPE)[model.landmark_ibug[inner]]])  # fmt: skip
    # The dense face's points over the eye openings (the fans that close them) are no real
    # surface: where they fall on an eyeball they get no weight, so the eyeballs follow the
    # eye joints (and the irises), not the lids.
    eyeball = (model.weights[:, 3:].max(1) > 0.5)[model.faces].all(1)

    def vertices_object():
        verts, _ = lbs(tensors, params.shape, params.expression, params.pose())
        return (verts[0] @ rot0_t.T + trans0_t) @ rodrigues(omega).T + tau

    for r in range(rounds):
        with torch.no_grad():
            verts = vertices_object().numpy()
        tri, bary = closest_points_on_mesh(target, verts, model.faces)
        dist = np.linalg.norm(surface_points(verts, model.faces[tri], bary) - target, axis=1)
        # Trust the surfaces where they meet: drop far pairs (eye and mouth fans, the border).
        limit = 0.02 if r == 0 else 0.008
        weight = np.clip((limit - dist) / (0.5 * limit), 0, 1) * ~eyeball[tri]
        w = torch.as_tensor(weight / max(weight.sum(), 1.0))
        corners = model.faces[tri]
        optimizer = torch.optim.LBFGS([params.shape, params.expression, params.jaw, omega, tau],
                                      max_iter=steps, line_search_fn="strong_wolfe")  # fmt: skip

        def closure(optimizer=optimizer, corners=corners, bary=bary, w=w):
            optimizer.zero_grad()
            verts = vertices_object()
            residual = (surface_points(verts, corners, bary) - target_t) * 1000
            loss = (w * (residual**2).sum(-1)).sum()
            if lmk is not None:
                lres = (surface_points(verts, lmk[0], lmk[1]) - lmk[2]) * 1000
                loss = loss + 0.1 * (lres**2).sum(-1).mean()
            loss = loss + 1e-3 * ((params.shape**2).sum() + (params.expression**2).sum())
            loss = loss + 10.0 * (params.jaw**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        verts = vertices_object().numpy()
        rot_c = rodrigues(omega).numpy()
    tri, bary = closest_points_on_mesh(target, verts, model.faces)
    dist = np.linalg.norm(surface_points(verts, model.faces[tri], bary) - target, axis=1)
    return model.with_arrays(
        mediapipe_faces=tri,
        mediapipe_bary=bary,
        mediapipe_weight=np.clip((0.008 - dist) / 0.004, 0, 1) * ~eyeball[tri],
        to_object_rotation=rot_c @ rot0,
        to_object_translation=rot_c @ trans0 + tau.detach().numpy(),
    )
