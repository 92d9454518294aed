"""The 68 iBUG / 300-W landmarks of a face mesh seen in a photo, as a 2D detector places them.

Points 17-67 (brows, nose, eyes, lips) are surface points: one MediaPipe landmark each
(`modeling.face_model.topology.IBUG68_FROM_MEDIAPIPE`). The jaw (0-16) is not: a 2D
annotator puts it on the face's *outline in the image*, which moves over the surface with the head
pose (on the side turned away it is the cheek's silhouette, not any fixed vertex). So the jaw is
found by landmark marching (as in 3DDFA / HPEN 3DMM fitting), here in polar form:

1. the outline of the projected mesh: from the midpoint of the outer eye corners, rays every
   degree (below the eye line and up to 60 degrees above it) each meet the farthest of the
   mesh's boundary and silhouette edges (edges whose two triangles face opposite ways in the
   image); each hit also gives its point on the canonical face (`Topology.frontal_shape`), i.e.
   which part of the face forms the outline there;
2. the ends of the jaw line (0 and 16) are where the outline is at the height of the ear root
   (tragion, `JAW_END_BELOW_EYE_CORNERS` below the outer eye corners) *on the canonical face*,
   so pitch moves them as it moves the ears; the chin (8) is where the outline crosses the
   face's mid-plane;
3. 1-7 and 9-15 are spaced evenly along the outline (by arc length in the image) between them,
   as the 300-W annotation spaces them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from modeling.face_model.topology import IBUG68_FROM_MEDIAPIPE, NUM_LANDMARKS, Topology

JAW = range(0, 17)
CHIN = 8
OUTER_EYE_CORNERS = (33, 263)  # MediaPipe indices of iBUG 36 and 45
RAY_STEP_DEGREES = 1.0
ABOVE_EYE_LINE_DEGREES = 60.0
# The jaw line's ends are the ear roots (tragion). The Frankfort horizontal puts the tragion
# level with the orbitale, the lowest point of the orbit rim, about 1 cm below the eye corners.
# Chosen from anatomy, not from the benchmark photos (`python -m bench.landmark_analysis` shows
# how the NME depends on it).
JAW_END_BELOW_EYE_CORNERS = 0.010  # metres on the canonical face


@lru_cache(maxsize=4)
def _edges(faces_key: bytes, num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """`(edges (E, 2), edge_faces (E, 2))` of a triangle list; `edge_faces[:, 1]` is -1 on the
    mesh boundary (edges shared by more than two triangles keep the first two)."""
    faces = np.frombuffer(faces_key, dtype=np.int64).reshape(num_faces, 3)
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(num_faces), 3)
    edges, inverse = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    first = np.searchsorted(inverse[order], np.arange(len(edges)))
    count = np.bincount(inverse, minlength=len(edges))
    edge_faces = np.full((len(edges), 2), -1)
    edge_faces[:, 0] = owner[order[first]]
    two = count >= 2
    edge_faces[two, 1] = owner[order[first[two] + 1]]
    return edges, edge_faces


def outline_edges(pixels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """`(K, 2)` vertex pairs of the edges that can lie on the outline of the projected mesh:
    boundary edges and silhouette edges (their two triangles have opposite orientations in the
    image).

    Args:
        pixels (`(V, 2)` float): projected vertices.
        faces (`(F, 3)` int): triangles.
    """
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    edges, edge_faces = _edges(faces.tobytes(), len(faces))
    p = pixels[faces]
    area = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    boundary = edge_faces[:, 1] < 0
    side = np.sign(area[edge_faces[:, 0]]) != np.sign(area[edge_faces[:, 1]])
    return edges[boundary | side]


def face_outline(
    pixels: np.ndarray, faces: np.ndarray, canonical: np.ndarray, origin, right, down
) -> tuple[np.ndarray, np.ndarray]:
    """The outline of the projected mesh below (and somewhat above) the eye line, as seen from
    `origin`: rays from the direction `-right` (the subject's right) through `down` to `right`.

    Args:
        pixels (`(V, 2)` float): projected vertices (pixels).
        faces (`(F, 3)` int): triangles.
        canonical (`(V, 3)` float): each vertex on the canonical face (object space).
        origin, right, down (`(2,)` float): ray origin; unit vectors of the face's image frame.
    Returns:
        `(points (N, 2), canonical_points (N, 3))`, ordered from the subject's right to left;
        rays that meet no edge are left out.
    """
    edges = outline_edges(pixels, faces)
    a, b = pixels[edges[:, 0]], pixels[edges[:, 1]]
    lo, hi = -ABOVE_EYE_LINE_DEGREES, 180.0 + ABOVE_EYE_LINE_DEGREES
    phi = np.radians(np.arange(hi, lo - 1e-9, -RAY_STEP_DEGREES))
    d = np.cos(phi)[:, None] * right + np.sin(phi)[:, None] * down  # (R, 2)
    e, w = b - a, a - origin  # (K, 2)
    denom = d[:, None, 0] * e[None, :, 1] - d[:, None, 1] * e[None, :, 0]  # cross(d, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (w[None, :, 0] * e[None, :, 1] - w[None, :, 1] * e[None, :, 0]) / denom
        s = (w[None, :, 0] * d[:, None, 1] - w[None, :, 1] * d[:, None, 0]) / denom
    ok = (np.abs(denom) > 1e-12) & (s >= 0) & (s <= 1) & (t > 0)
    t = np.where(ok, t, -np.inf)
    best = t.argmax(1)
    hit = np.isfinite(t[np.arange(len(d)), best])
    rows, best = np.nonzero(hit)[0], best[hit]
    sb = s[rows, best][:, None]
    points = origin + t[rows, best][:, None] * d[rows]
    ca, cb = canonical[edges[best, 0]], canonical[edges[best, 1]]
    return points, (1 - sb) * ca + sb * cb


def _crossing(values: np.ndarray, level: float, start: int, step: int) -> float | None:
    """Fractional index of the first crossing of `level` by `values`, walking from `start`."""
    i = start
    while 0 <= i + step < len(values):
        v0, v1 = values[i] - level, values[i + step] - level
        if v0 == 0:
            return float(i)
        if v0 * v1 <= 0:
            return i + step * v0 / (v0 - v1)
        i += step
    return None


def _at(points: np.ndarray, index: float) -> np.ndarray:
    i = min(int(np.floor(index)), len(points) - 2)
    f = index - i
    return (1 - f) * points[i] + f * points[i + 1]


def _evenly_spaced(points: np.ndarray, start: float, stop: float, count: int) -> np.ndarray:
    """`count + 1` points from fractional index `start` to `stop` of a polyline, evenly spaced
    by arc length (both ends included)."""
    lo, hi = sorted((start, stop))
    inner = np.arange(int(np.floor(lo)) + 1, int(np.ceil(hi)))
    path = np.concatenate([[_at(points, lo)], points[inner], [_at(points, hi)]])
    if start > stop:
        path = path[::-1]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    targets = np.linspace(0, arc[-1], count + 1)
    return np.stack([np.interp(targets, arc, path[:, k]) for k in range(2)], 1)


def jaw_points(pixels: np.ndarray, topology: Topology) -> np.ndarray:
    """The 17 jaw landmarks (iBUG 0-16) on the outline of a projected face mesh.

    Args:
        pixels (`(468, 2)` or `(7305, 2)` float): MediaPipe's landmarks or the dense mesh's
            vertices, projected into the photo (pixels).
        topology (`Topology`): gives the triangles and the canonical face.
    Returns:
        `(17, 2)` pixels, from the subject's right (0) through the chin (8) to the left (16).
    """
    canonical, faces = _canonical_mesh(topology, len(pixels))
    a, b = pixels[OUTER_EYE_CORNERS[0]], pixels[OUTER_EYE_CORNERS[1]]
    right = (b - a) / np.linalg.norm(b - a)
    down = np.array([-right[1], right[0]])  # image y points down
    points, canon = face_outline(pixels, faces, canonical, (a + b) / 2, right, down)
    ear_height = canonical[OUTER_EYE_CORNERS[0], 1] - JAW_END_BELOW_EYE_CORNERS
    chin = _crossing(canon[:, 0], 0.0, int(np.argmax(points @ down)), 1)
    if chin is None:
        chin = _crossing(canon[:, 0], 0.0, int(np.argmax(points @ down)), -1)
    if chin is None:
        raise ValueError("the outline does not cross the face's mid-plane")
    ends = [_crossing(canon[:, 1], ear_height, int(chin), step) for step in (-1, 1)]
    start = 0.0 if ends[0] is None else ends[0]
    stop = float(len(points) - 1) if ends[1] is None else ends[1]
    half = len(JAW) // 2
    left = _evenly_spaced(points, start, chin, half)
    right_half = _evenly_spaced(points, chin, stop, half)
    return np.concatenate([left, right_half[1:]])


@lru_cache(maxsize=4)
def _canonical_mesh(topology: Topology, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """`(canonical vertices (V, 3), faces)` of the landmark mesh or the dense mesh."""
    if num_vertices == NUM_LANDMARKS:
        return topology.frontal_shape[:NUM_LANDMARKS], topology.landmark_faces
    if num_vertices == topology.num_dense:
        return topology.lift(topology.frontal_shape[:NUM_LANDMARKS]), topology.dense_faces
    raise ValueError(
        f"need 468 landmark or {topology.num_dense} dense vertices, got {num_vertices}"
    )


def ibug68_from_pixels(pixels: np.ndarray, topology: Topology) -> np.ndarray:
    """The 68 iBUG landmarks of a projected face mesh: the jaw on its outline (`jaw_points`),
    the rest at their MediaPipe landmarks.

    Args:
        pixels (`(468, 2)` or `(7305, 2)` float): MediaPipe's landmarks (e.g.
            `FaceLandmarks.points[:, :2]`) or the dense mesh projected into the photo.
        topology (`Topology`): the face topology.
    Returns:
        `(68, 2)` float64 pixels in iBUG order.

    >>> pts = ibug68_from_pixels(face.points[:, :2], load_topology())  # doctest: +SKIP
    """
    pixels = np.asarray(pixels, np.float64)
    if (
        pixels.ndim != 2
        or pixels.shape[1] != 2
        or len(pixels) not in (NUM_LANDMARKS, topology.num_dense)
    ):
        raise ValueError(f"need (468, 2) landmark or ({topology.num_dense}, 2) dense-vertex "
                         f"pixels, got {pixels.shape}")  # fmt: skip
    out = pixels[list(IBUG68_FROM_MEDIAPIPE)].copy()
    out[list(JAW)] = jaw_points(pixels, topology)
    return out


def mesh_ibug68(vertices_object: np.ndarray, camera, topology: Topology) -> np.ndarray:
    """The 68 iBUG landmarks of a fitted dense mesh in its photo.

    Args:
        vertices_object (`(7305, 3)` float): the mesh in object space (`FaceMesh.vertices`).
        camera (`PinholeCamera`): the fitted camera.
        topology (`Topology`): the face topology.
    Returns:
        `(68, 2)` float64 pixels in iBUG order.
    """
    vertices = np.asarray(vertices_object, np.float64)
    return ibug68_from_pixels(camera.project(camera.object_to_camera(vertices)), topology)
