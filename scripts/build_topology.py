"""Build `modeling/face_model/assets/topology.npz` once from MediaPipe's face-mesh tessellation.

Run:  python scripts/build_topology.py        (deterministic; takes a few seconds)

What it derives, and how:
1. Triangles: the 3-cliques of MediaPipe's tessellation edge graph, less the separating
   triangles (all three edges shared by three cliques). The result is a disk with holes at the
   eyes and the mouth; each hole is closed with a fan around one added centre vertex (the mean of
   its loop), so the base mesh is a topological disk of 468 + 3 vertices.
2. A mean frontal shape: MediaPipe's landmarks of `skimage.data.astronaut()` (the one real face
   photo we may use), rotated so the face midline plane is x = 0, then symmetrised.
3. The left/right symmetry map: mirrored nearest neighbours with a one-to-one assignment that
   favours agreement with the edge graph. MediaPipe's tessellation splits three quads along
   different diagonals on the two sides; those are flipped on the subject's left so that the map
   sends the triangle set onto itself (checked).
4. Our UV layout: a cylindrical projection of the symmetrised frontal shape (axis vertical,
   behind the face), scaled uniformly into [0.03, 0.97]^2; exactly mirror-symmetric
   (u -> 1 - u under the symmetry map); checked free of flipped triangles.
5. A denser mesh: two levels of Loop subdivision (operator stored as a sparse matrix); UVs are
   subdivided linearly (midpoints), so no UV triangle can flip.
6. Polygons (vertex loops) around the eyes, brows and lips to exclude from the skin mask.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

OUT = Path(__file__).resolve().parents[1] / "modeling" / "face_model" / "assets" / "topology.npz"
NUM_LANDMARKS = 468
# Landmarks on the face's midline (forehead to chin).
MIDLINE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15, 16,
           17, 18, 200, 199, 175, 152]  # fmt: skip
OUTER_EYE_CORNERS = (33, 263)
OUTER_EYE_DISTANCE_M = 0.094  # adult mean outer-canthal width, metres


def triangles_from_edges(edges: np.ndarray) -> np.ndarray:
    """3-cliques of the edge graph, minus separating triangles. Returns `(F, 3)` int."""
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    tris = []
    for a, b in {tuple(sorted(e)) for e in edges.tolist()}:
        for c in adj[a] & adj[b]:
            if c > b:
                tris.append((a, b, c))
    tris = np.array(sorted(tris))
    edge_count = defaultdict(int)
    for t in tris:
        for i in range(3):
            edge_count[tuple(sorted((t[i], t[(i + 1) % 3])))] += 1
    keep = [
        not all(edge_count[tuple(sorted((t[i], t[(i + 1) % 3])))] >= 3 for i in range(3))
        for t in tris
    ]
    tris = tris[np.array(keep)]
    counts = defaultdict(int)
    for t in tris:
        for i in range(3):
            counts[tuple(sorted((t[i], t[(i + 1) % 3])))] += 1
    assert max(counts.values()) <= 2, "tessellation is not a manifold after removing separators"
    return tris


def orient_consistently(faces: np.ndarray) -> np.ndarray:
    """Flip faces so that every shared edge is traversed in opposite directions."""
    faces = faces.copy()
    edge_faces = defaultdict(list)
    for f, t in enumerate(faces):
        for i in range(3):
            edge_faces[tuple(sorted((t[i], t[(i + 1) % 3])))].append(f)
    done = np.zeros(len(faces), bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            f = stack.pop()
            t = faces[f]
            for i in range(3):
                a, b = t[i], t[(i + 1) % 3]
                for g in edge_faces[tuple(sorted((a, b)))]:
                    if g == f or done[g]:
                        continue
                    u = faces[g]
                    same_dir = any(u[j] == a and u[(j + 1) % 3] == b for j in range(3))
                    if same_dir:
                        faces[g] = u[::-1]
                    done[g] = True
                    stack.append(g)
    return faces


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Ordered boundary loops (each follows the faces' orientation)."""
    directed = {(t[i], t[(i + 1) % 3]) for t in faces for i in range(3)}
    nxt = {a: b for a, b in directed if (b, a) not in directed}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(int(v))
            v = nxt[v]
        loops.append(loop)
    return loops


def astronaut_landmarks() -> np.ndarray:
    """`(468, 3)` landmarks of skimage's astronaut, object axes (+x right, +y up, +z out)."""
    import mediapipe as mp
    from skimage import data

    image = data.astronaut()
    h, w = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        lm = fm.process(image).multi_face_landmarks[0].landmark
    pts = np.array([[p.x * w, -p.y * h, -p.z * w] for p in lm[:NUM_LANDMARKS]])
    return pts


def frontalize(pts: np.ndarray) -> np.ndarray:
    """Rotate/translate/scale so the midline plane is x = 0, chin->forehead is +y, metres."""
    mid = pts[MIDLINE]
    centre = mid.mean(0)
    _, _, vt = np.linalg.svd(mid - centre)
    x_axis = vt[2] * np.sign(vt[2] @ (pts[263] - pts[33]))  # towards the subject's left eye
    up = pts[10] - pts[152]
    y_axis = up - (up @ x_axis) * x_axis
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    out = (pts - centre) @ np.stack([x_axis, y_axis, z_axis], 1)
    scale = OUTER_EYE_DISTANCE_M / np.linalg.norm(out[263] - out[33])
    out *= scale
    out[:, 2] -= out[:, 2].max()  # nose tip at z = 0, face at z < 0
    out[:, 1] -= out[1, 1]
    assert out[1, 2] > out[234, 2], "nose tip must be in front of the cheek"
    return out


def symmetry_map(pts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One-to-one left/right map: `sym[i]` is the mirror partner of vertex i.

    Mirrored nearest neighbours alone mismatch a few vertices (the shape is one noisy face), so
    the assignment is repeated with a bonus for agreeing with the edge graph: a true symmetry is
    a graph automorphism, mapping neighbours to neighbours.
    """
    n = len(pts)
    adjacency = np.zeros((n, n))
    for t in faces:
        for i in range(3):
            adjacency[t[i], t[(i + 1) % 3]] = adjacency[t[(i + 1) % 3], t[i]] = 1
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    dist = np.linalg.norm(pts[:, None] - mirrored[None], axis=-1)
    dist /= np.median(np.sort(dist, 1)[:, 1])
    cost = dist
    for _ in range(10):
        rows, cols = linear_sum_assignment(cost)
        sym = np.empty(n, int)
        sym[rows] = cols
        # agree[i, j]: how many neighbours of i map to neighbours of j under the current map.
        permuted = np.zeros((n, n))
        permuted[np.arange(n), sym] = 1
        agree = adjacency @ permuted @ adjacency
        cost = dist - 2.0 * agree
    assert np.all(sym[sym] == np.arange(n)), "symmetry map must be an involution"
    return sym


def symmetrize_triangulation(faces: np.ndarray, sym: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """MediaPipe's tessellation splits a few quads along different diagonals on the two sides;
    flip the diagonal on the subject's left side (x > 0) so the mesh is exactly symmetric."""
    faces = [tuple(sorted(t)) for t in faces.tolist()]
    edge_set = lambda fs: {tuple(sorted((t[i], t[(i + 1) % 3]))) for t in fs for i in range(3)}  # noqa: E731
    edges = edge_set(faces)
    for a, b in sorted(edges):
        if tuple(sorted((sym[a], sym[b]))) in edges or pts[[a, b], 0].mean() <= 0:
            continue
        pair = [t for t in faces if a in t and b in t]
        assert len(pair) == 2, "asymmetric edge on the boundary"
        c, d = (next(v for v in t if v not in (a, b)) for t in pair)
        assert tuple(sorted((sym[c], sym[d]))) in edges, "not a diagonal flip"
        faces = [t for t in faces if t not in pair]
        faces += [tuple(sorted((a, c, d))), tuple(sorted((b, c, d)))]
    faces = np.array(sorted(faces))
    tri_set = {tuple(t) for t in faces.tolist()}
    assert tri_set == {tuple(sorted(sym[t])) for t in faces}, "triangulation still asymmetric"
    return faces


def cylindrical_uvs(pts: np.ndarray, margin: float = 0.03) -> np.ndarray:
    """Unroll around a vertical axis behind the face; uniform scale into the unit square."""
    radius = 0.5 * (pts[:, 0].max() - pts[:, 0].min())  # axis one half face-width behind
    axis_z = pts[:, 2].min() - 0.2 * radius
    theta = np.arctan2(pts[:, 0], pts[:, 2] - axis_z) * radius
    uv = np.stack([theta, pts[:, 1]], 1)
    lo, hi = uv.min(0), uv.max(0)
    scale = (1 - 2 * margin) / (hi - lo).max()
    uv = (uv - (lo + hi) / 2) * scale + 0.5
    return uv


def untangle(uv: np.ndarray, faces: np.ndarray, fixed: list[int], max_rounds: int = 500):
    """Relax folded regions of a projection: vertices of flipped triangles (and a ring around
    them) move to the mean of their neighbours until nothing is flipped. The uniform Laplacian
    on a symmetric mesh keeps the layout symmetric."""
    uv = uv.copy()
    n = len(uv)
    nbrs = [set() for _ in range(n)]
    for t in faces:
        for i in range(3):
            nbrs[t[i]].update((t[(i + 1) % 3], t[(i + 2) % 3]))
    fixed = set(fixed)
    for _ in range(max_rounds):
        flipped = faces[signed_areas(uv, faces) <= 0]
        if len(flipped) == 0:
            return uv
        region = set(flipped.ravel().tolist())
        region |= {m for v in list(region) for m in nbrs[v]}
        moving = sorted(region - fixed)
        uv[moving] = [uv[sorted(nbrs[v])].mean(0) for v in moving]  # Jacobi: stays symmetric
    raise RuntimeError("could not untangle the UV layout")


def signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return 0.5 * (
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    )


def loop_subdivide(num_verts: int, faces: np.ndarray):
    """One level of Loop subdivision (with boundary rules).

    Returns `(smooth, linear, new_faces)`: sparse `(V', V)` operators for positions (Loop) and for
    attributes such as UVs (midpoints); old vertices keep their indices, edge vertices follow.
    """
    edges = {}
    opposite = defaultdict(list)
    for t in faces:
        for i in range(3):
            a, b, c = t[i], t[(i + 1) % 3], t[(i + 2) % 3]
            key = (min(a, b), max(a, b))
            if key not in edges:
                edges[key] = num_verts + len(edges)
            opposite[key].append(c)
    neighbours = defaultdict(set)
    boundary_nb = defaultdict(set)
    for (a, b), opp in opposite.items():
        neighbours[a].add(b)
        neighbours[b].add(a)
        if len(opp) == 1:
            boundary_nb[a].add(b)
            boundary_nb[b].add(a)
    n_new = num_verts + len(edges)
    srows, scols, svals, lrows, lcols, lvals = [], [], [], [], [], []

    def put(rows, cols, vals, r, cs, ws):
        rows.extend([r] * len(cs))
        cols.extend(cs)
        vals.extend(ws)

    for v in range(num_verts):
        put(lrows, lcols, lvals, v, [v], [1.0])
        if v in boundary_nb:
            nb = sorted(boundary_nb[v])
            put(srows, scols, svals, v, [v, *nb], [0.75] + [0.125] * len(nb))
        else:
            nb = sorted(neighbours[v])
            n = len(nb)
            beta = 3.0 / (8 * n) if n > 3 else 3.0 / 16
            put(srows, scols, svals, v, [v, *nb], [1 - n * beta] + [beta] * n)
    for (a, b), e in edges.items():
        put(lrows, lcols, lvals, e, [a, b], [0.5, 0.5])
        opp = opposite[(a, b)]
        if len(opp) == 2:
            put(srows, scols, svals, e, [a, b, *opp], [0.375, 0.375, 0.125, 0.125])
        else:
            put(srows, scols, svals, e, [a, b], [0.5, 0.5])
    new_faces = []
    for a, b, c in faces:
        ab, bc, ca = (edges[(min(x, y), max(x, y))] for x, y in ((a, b), (b, c), (c, a)))
        new_faces += [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)]
    shape = (n_new, num_verts)
    smooth = sp.csr_matrix((svals, (srows, scols)), shape=shape)
    linear = sp.csr_matrix((lvals, (lrows, lcols)), shape=shape)
    return smooth, linear, np.array(new_faces)


def contour_loop(connections, start_hint=None) -> list[int]:
    """Order a closed contour given as an edge set (MediaPipe connection sets)."""
    adj = defaultdict(list)
    for a, b in connections:
        adj[a].append(b)
        adj[b].append(a)
    start = start_hint if start_hint is not None else min(adj)
    loop, prev, v = [start], None, start
    while True:
        nxt = [n for n in adj[v] if n != prev]
        if not nxt or nxt[0] == start:
            break
        prev, v = v, nxt[0]
        loop.append(v)
    return loop


def skin_exclusion_polygons(pts: np.ndarray) -> list[list[int]]:
    """Vertex loops (landmark indices) enclosing eyes, brows and lips."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    polys = []
    for conn in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE):
        polys.append(contour_loop(conn))
    # Brows come as two open polylines (upper and lower); chain them into one ring.
    for conn in (fmc.FACEMESH_LEFT_EYEBROW, fmc.FACEMESH_RIGHT_EYEBROW):
        adj = defaultdict(list)
        for a, b in conn:
            adj[a].append(b)
            adj[b].append(a)
        ends = sorted(v for v in adj if len(adj[v]) == 1)
        chains, used = [], set()
        for e in ends:
            if e in used:
                continue
            chain, prev, v = [e], None, e
            while True:
                nxt = [n for n in adj[v] if n != prev]
                if not nxt:
                    break
                prev, v = v, nxt[0]
                chain.append(v)
            used.update(chain)
            chains.append(chain)
        a, b = (c if pts[c[0], 0] < pts[c[-1], 0] else c[::-1] for c in chains)
        polys.append(a + b[::-1])
    # Lips: the outer contour (the lip connection set holds outer and inner loops).
    lips = np.array(sorted(fmc.FACEMESH_LIPS))
    adj = defaultdict(list)
    for a, b in lips:
        adj[a].append(b)
        adj[b].append(a)
    polys.append(contour_loop([tuple(e) for e in lips if 61 in _component(adj, 61)], 61))
    return polys


def _component(adj, start) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        v = stack.pop()
        for n in adj[v]:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


def main() -> None:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    edges = np.array(sorted(fmc.FACEMESH_TESSELATION))
    landmark_faces = triangles_from_edges(edges)
    shape = frontalize(astronaut_landmarks())
    sym = symmetry_map(shape, landmark_faces)
    landmark_faces = symmetrize_triangulation(landmark_faces, sym, shape)
    shape = 0.5 * (shape + shape[sym] * np.array([-1.0, 1.0, 1.0]))  # exactly symmetric

    landmark_faces = orient_consistently(landmark_faces)
    if signed_areas(shape[:, :2], landmark_faces).sum() < 0:  # front faces CCW seen from +z
        landmark_faces = landmark_faces[:, ::-1]
    loops = boundary_loops(landmark_faces)
    loops.sort(key=len, reverse=True)
    outer, holes = loops[0], loops[1:]
    assert len(holes) == 3, f"expected holes at both eyes and the mouth, got {len(holes)}"

    # Close each hole with a fan around its centroid vertex.
    num_base = NUM_LANDMARKS + len(holes)
    closing_rows, closing_cols, closing_vals = (
        list(range(NUM_LANDMARKS)),
        list(range(NUM_LANDMARKS)),
        [1.0] * NUM_LANDMARKS,
    )
    fans = []
    for h, loop in enumerate(holes):
        centre = NUM_LANDMARKS + h
        closing_rows += [centre] * len(loop)
        closing_cols += loop
        closing_vals += [1.0 / len(loop)] * len(loop)
        # The hole loop runs opposite to the fan's orientation.
        fans += [(loop[(i + 1) % len(loop)], loop[i], centre) for i in range(len(loop))]
    closing = sp.csr_matrix(
        (closing_vals, (closing_rows, closing_cols)), shape=(num_base, NUM_LANDMARKS)
    )
    base_faces = np.concatenate([landmark_faces, np.array(fans)])
    base_shape = closing @ shape
    assert signed_areas(base_shape[:, :2], base_faces[len(landmark_faces) :]).min() > 0

    # Symmetry of the centre vertices: they are means of mirrored loops.
    hole_sym = []
    for loop in holes:
        target = {int(s) for s in sym[loop]}
        hole_sym.append(next(j for j, other in enumerate(holes) if set(other) == target))
    base_sym = np.concatenate([sym, NUM_LANDMARKS + np.array(hole_sym)])

    base_uv = untangle(cylindrical_uvs(base_shape), base_faces, fixed=outer)
    assert np.allclose(base_uv[base_sym, 0], 1 - base_uv[:, 0], atol=1e-9)
    areas = signed_areas(base_uv, base_faces)
    assert areas.min() > 0, f"{(areas <= 0).sum()} UV triangles flipped"

    # Two levels of Loop subdivision.
    s1, l1, f1 = loop_subdivide(num_base, base_faces)
    s2, l2, f2 = loop_subdivide(s1.shape[0], f1)
    smooth = (s2 @ s1).tocoo()
    linear = l2 @ l1
    dense_uv = linear @ base_uv
    assert signed_areas(dense_uv, f2).min() > 0

    from scipy.spatial import cKDTree

    dist, dense_sym = cKDTree(dense_uv).query(dense_uv * [-1, 1] + [1, 0])
    assert dist.max() < 1e-9, "dense UVs are not mirror-symmetric"

    polys = skin_exclusion_polygons(base_shape)
    poly_flat = np.concatenate(polys)
    poly_offsets = np.cumsum([0] + [len(p) for p in polys])

    OUT.parent.mkdir(parents=True, exist_ok=True)
    closing = closing.tocoo()
    np.savez_compressed(
        OUT,
        landmark_faces=landmark_faces.astype(np.int32),
        base_faces=base_faces.astype(np.int32),
        base_uvs=base_uv.astype(np.float64),
        base_symmetry=base_sym.astype(np.int32),
        frontal_shape=base_shape.astype(np.float64),
        closing_rows=closing.row.astype(np.int32),
        closing_cols=closing.col.astype(np.int32),
        closing_vals=closing.data.astype(np.float64),
        subdiv_rows=smooth.row.astype(np.int32),
        subdiv_cols=smooth.col.astype(np.int32),
        subdiv_vals=smooth.data.astype(np.float64),
        subdiv_shape=np.array(smooth.shape, dtype=np.int64),
        dense_faces=f2.astype(np.int32),
        dense_uvs=dense_uv.astype(np.float64),
        dense_symmetry=dense_sym.astype(np.int32),
        skin_exclusion_vertices=poly_flat.astype(np.int32),
        skin_exclusion_offsets=poly_offsets.astype(np.int32),
    )
    print(
        f"landmark faces {len(landmark_faces)}, base verts {num_base} faces {len(base_faces)}, "
        f"dense verts {smooth.shape[0]} faces {len(f2)}, holes {[len(h) for h in holes]}, "
        f"outer loop {len(outer)}; wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)"
    )


if __name__ == "__main__":
    main()
