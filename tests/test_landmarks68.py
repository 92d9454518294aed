"""The 68 iBUG landmarks of a projected mesh: the jaw on the outline (landmark marching)."""

import numpy as np
import pytest
from scipy import ndimage

from bench.landmarks68 import (
    JAW_END_BELOW_EYE_CORNERS,
    ibug68_from_pixels,
    mesh_ibug68,
    outline_edges,
)
from bench.synthetic import render_view, synthetic_albedo
from modeling.face_model.topology import IBUG68_FROM_MEDIAPIPE, NUM_LANDMARKS, load_topology

SIZE = 256


@pytest.fixture(scope="module")
def topology():
    return load_topology()


def _view(topology, yaw_pitch_roll):
    view = render_view(topology, synthetic_albedo(32), yaw_pitch_roll, size=SIZE,
                       landmark_noise_px=0.0)  # fmt: skip
    cam = view.camera
    pixels = cam.project(cam.object_to_camera(view.vertices_object))
    covered = np.any(view.image != np.float32(0.3), axis=-1)  # background is exactly 0.3
    return view, pixels, covered


def _distance_to_outline(points, covered):
    """Pixel distance of each `(N, 2)` point to the nearest mask-boundary pixel."""
    edge = covered & ~ndimage.binary_erosion(covered)
    dist = ndimage.distance_transform_edt(~edge)
    ij = np.clip(np.round(points[:, ::-1]).astype(int), 0, SIZE - 1)
    return dist[ij[:, 0], ij[:, 1]]


def test_outline_edges_boundary_and_silhouette():
    # two triangles sharing edge (1, 2): flat -> only the 4 boundary edges; folded over the
    # shared edge -> that edge is a silhouette too.
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    flat = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    assert {tuple(e) for e in outline_edges(flat, faces)} == {(0, 1), (0, 2), (1, 3), (2, 3)}
    folded = flat.copy()
    folded[3] = (0.2, 0.2)  # the second triangle flips over onto the first
    assert (1, 2) in {tuple(e) for e in outline_edges(folded, faces)}


def test_frontal_jaw_is_symmetric_evenly_spaced_and_ends_at_the_ears(topology):
    view, pixels, covered = _view(topology, (0.0, 0.0, 0.0))
    pts = mesh_ibug68(view.vertices_object, view.camera, topology)
    assert pts.shape == (68, 2)
    jaw = pts[:17]
    # mirror about the vertical through the chin: point i <-> 16 - i
    mirrored = jaw[::-1].copy()
    mirrored[:, 0] = 2 * jaw[8, 0] - mirrored[:, 0]
    assert np.abs(mirrored - jaw).max() < 1.0
    assert np.abs(jaw[8] - pixels[152]).max() < 1.0  # chin = the mid-plane point of the chin
    steps = np.linalg.norm(np.diff(jaw, axis=0), axis=1)
    assert steps.std() / steps.mean() < 0.05  # evenly spaced along the outline
    # the ends sit JAW_END_BELOW_EYE_CORNERS under the eye corners (frontal: in pixels too)
    depth = -view.camera.object_to_camera(view.vertices_object[[33]])[0, 2]
    below_px = JAW_END_BELOW_EYE_CORNERS * view.camera.fy / depth
    eye_y = pixels[[33, 263], 1].mean()
    assert jaw[0, 1] - eye_y == pytest.approx(below_px, abs=2.0)
    assert np.all(_distance_to_outline(jaw, covered) <= 1.5)
    # points 17-67 are the table's vertices
    assert np.allclose(pts[17:], pixels[list(IBUG68_FROM_MEDIAPIPE)[17:]])


def test_turned_face_jaw_follows_the_silhouette(topology):
    view, pixels, covered = _view(topology, (35.0, 5.0, 0.0))
    jaw = mesh_ibug68(view.vertices_object, view.camera, topology)[:17]
    assert np.all(_distance_to_outline(jaw, covered) <= 1.5)
    # fixed vertices (the index table) are not on the outline on the far side
    fixed = pixels[list(IBUG68_FROM_MEDIAPIPE)[:17]]
    assert _distance_to_outline(fixed, covered).max() > 4.0


def test_landmark_mesh_and_dense_mesh_agree(topology):
    view, pixels, _ = _view(topology, (20.0, -5.0, 0.0))
    dense = ibug68_from_pixels(pixels, topology)
    sparse = ibug68_from_pixels(pixels[:NUM_LANDMARKS], topology)  # MediaPipe's own mesh
    iod = np.linalg.norm(dense[45] - dense[36])
    assert np.linalg.norm(dense - sparse, axis=1).max() < 0.03 * iod


def test_wrong_vertex_count_is_refused(topology):
    with pytest.raises(ValueError, match="468"):
        ibug68_from_pixels(np.zeros((100, 2)), topology)
