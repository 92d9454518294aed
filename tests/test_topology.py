from collections import Counter

import numpy as np
import pytest

from modeling.face_model.topology import NUM_LANDMARKS, load_topology


@pytest.fixture(scope="module")
def topo():
    return load_topology()


def _signed_areas(uv, faces):
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return 0.5 * (
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    )


def _boundary_loops(faces):
    directed = Counter((int(t[i]), int(t[(i + 1) % 3])) for t in faces for i in range(3))
    nxt = {a: b for (a, b) in directed if (b, a) not in directed}
    loops, seen = [], set()
    for s in nxt:
        if s in seen:
            continue
        loop, v = [], s
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def _segments_intersect(p1, p2, q1, q2):
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return (
        orient(p1, p2, q1) * orient(p1, p2, q2) < 0 and orient(q1, q2, p1) * orient(q1, q2, p2) < 0
    )


@pytest.mark.parametrize("which", ["base", "dense"])
def test_mesh_is_an_oriented_manifold_disk(topo, which):
    faces = getattr(topo, f"{which}_faces")
    n_verts = len(getattr(topo, f"{which}_uvs"))
    directed = Counter((int(t[i]), int(t[(i + 1) % 3])) for t in faces for i in range(3))
    assert max(directed.values()) == 1, "a directed edge used twice: inconsistent orientation"
    undirected = Counter(tuple(sorted(e)) for e in directed)
    assert max(undirected.values()) <= 2, "non-manifold edge"
    assert len(np.unique(faces)) == n_verts, "unreferenced vertices"
    euler = n_verts - len(undirected) + len(faces)
    assert euler == 1 and len(_boundary_loops(faces)) == 1, "closed base mesh must be a disk"


def test_landmark_mesh_has_holes_at_eyes_and_mouth(topo):
    loops = sorted(len(loop) for loop in _boundary_loops(topo.landmark_faces))
    assert loops == [16, 16, 20, 36]  # two eyes, the mouth, the face oval


@pytest.mark.parametrize("which", ["base", "dense"])
def test_uvs_in_unit_square_without_flips_or_overlaps(topo, which):
    faces, uv = getattr(topo, f"{which}_faces"), getattr(topo, f"{which}_uvs")
    assert uv.min() >= 0 and uv.max() <= 1
    areas = _signed_areas(uv, faces)
    assert areas.min() > 1e-8, "flipped or degenerate UV triangle"
    # For a disk whose triangles all keep orientation, the UV map is one-to-one iff the
    # boundary is a simple polygon and the triangle areas sum to the area it encloses.
    (boundary,) = _boundary_loops(faces)
    poly = uv[boundary]
    n = len(poly)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            assert not _segments_intersect(poly[i], poly[(i + 1) % n], poly[j], poly[(j + 1) % n])
    x, y = poly[:, 0], poly[:, 1]
    enclosed = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert areas.sum() == pytest.approx(enclosed, rel=1e-9)
    assert enclosed > 0.5, "the layout should use most of the texture"


@pytest.mark.parametrize("which", ["base", "dense"])
def test_symmetry_map(topo, which):
    sym = getattr(topo, f"{which}_symmetry")
    faces, uv = getattr(topo, f"{which}_faces"), getattr(topo, f"{which}_uvs")
    assert np.array_equal(sym[sym], np.arange(len(sym)))
    assert {tuple(sorted(t)) for t in faces.tolist()} == {tuple(sorted(sym[t])) for t in faces}
    np.testing.assert_allclose(uv[sym, 0], 1 - uv[:, 0], atol=1e-9)
    np.testing.assert_allclose(uv[sym, 1], uv[:, 1], atol=1e-9)
    if which == "base":
        shape = topo.frontal_shape
        np.testing.assert_allclose(shape[sym] * [-1, 1, 1], shape, atol=1e-12)


def test_dense_mesh_interpolates_landmarks_smoothly(topo):
    assert topo.num_dense >= 7000
    rng = np.random.default_rng(0)
    landmarks = topo.frontal_shape[:NUM_LANDMARKS] + rng.normal(0, 1e-4, (NUM_LANDMARKS, 3))
    dense = topo.lift(landmarks)
    np.testing.assert_allclose(dense[:NUM_LANDMARKS], landmarks, atol=1e-6)
    # Rows are affine combinations: translating the landmarks translates the mesh.
    np.testing.assert_allclose(topo.dense_from_landmarks.sum(1), 1.0, atol=1e-4)
    # No vertex flies away from its neighbours: every edge is short (measured: at most 7.8 mm,
    # mean 2.4 mm). Not a smoothness check: a few adjacent triangles fold sharply (up to 177°).
    faces = topo.dense_faces
    edge = np.linalg.norm(dense[faces[:, 0]] - dense[faces[:, 1]], axis=1)
    assert edge.max() < 0.02  # metres
