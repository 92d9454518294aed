"""The full head (`modeling.face_model.head`, asset from `scripts/build_head.py`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from modeling.face_model.head import (
    LID_CLEARANCE,
    border_bend,
    fair_border,
    head_mesh,
    load_head_model,
    ring_vertices,
)
from modeling.face_model.topology import load_topology
from modeling.reconstruction.texture import uv_atlas


@pytest.fixture(scope="module")
def mean_head():
    topology = load_topology()
    return head_mesh(topology.lift(topology.frontal_shape[:468]))


def _signed_uv_areas(uv, faces):
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def test_skin_and_mouth_are_closed_but_for_the_neck_cut(mean_head):
    head = load_head_model()
    # weld the UV seams: the surface is over unique positions (sockets and bag numbered apart)
    num_split = len(head.skin_source)
    key = np.r_[head.skin_source, 10**6 + np.arange(len(mean_head.skin.vertices) - num_split)]
    loop = len(head.mouth_loop)
    bag_key = np.r_[head.mouth_loop, 2 * 10**6 + np.arange(len(mean_head.mouth.vertices) - loop)]
    faces = np.concatenate([key[mean_head.skin.faces], bag_key[mean_head.mouth.faces]])
    directed = Counter((int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3))
    assert max(directed.values()) == 1, "an edge is used twice in one direction (non-manifold)"
    open_edges = [(a, b) for a, b in directed if (b, a) not in directed]
    # the one boundary is the neck cut, below the chin
    loop_vertices = np.unique(np.array(open_edges))
    first = {int(k): i for i, k in reversed(list(enumerate(key)))}
    positions = mean_head.skin.vertices[[first[int(v)] for v in loop_vertices]]
    chin = load_topology().frontal_shape[152]
    assert len(open_edges) == len(loop_vertices)  # a single closed loop of edges
    assert (positions[:, 1] < chin[1]).all()


def test_face_uvs_are_unchanged_and_no_uv_triangle_flips(mean_head):
    topology, head = load_topology(), load_head_model()
    face_part = head.skin_source < topology.num_dense
    first = {}
    for i, v in enumerate(head.skin_source):
        first.setdefault(int(v), i)
    ids = np.array(sorted(first))
    face_ids = ids[ids < topology.num_dense]
    split = np.array([first[v] for v in face_ids])
    np.testing.assert_allclose(head.dense_uvs[split], topology.dense_uvs[face_ids], atol=1e-6)
    assert face_part.sum() >= len(face_ids)
    assert (_signed_uv_areas(head.dense_uvs, head.dense_faces) > 0).all()
    uvs = mean_head.skin.uvs
    assert uvs.min() >= 0 and uvs.max() <= 1


def test_ring_charts_do_not_overlap_the_face_or_each_other():
    head = load_head_model()
    resolution = 512
    atlas = uv_atlas(resolution, head)
    face_atlas = uv_atlas(resolution, load_topology())
    ring_texels = atlas.texels[head.ring_charts[atlas.faces]]
    assert len(np.intersect1d(ring_texels, face_atlas.texels)) == 0
    assert len(ring_texels) > 0.1 * resolution**2  # the ring has a fair share of the square


def test_head_is_mirror_symmetric_for_the_mean_face(mean_head):
    skin = mean_head.skin.vertices.astype(np.float64)
    mirrored = skin * [-1, 1, 1]
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(skin).query(mirrored)
    assert np.median(distance) < 0.002
    right, left = mean_head.eye_centres
    np.testing.assert_allclose(right * [-1, 1, 1], left, atol=1e-3)


def test_ring_follows_a_wider_face():
    topology, head = load_topology(), load_head_model()
    mean = topology.lift(topology.frontal_shape[:468])
    wide = mean * [1.15, 1, 1]
    base, widened = ring_vertices(mean, head), ring_vertices(wide, head)
    width = lambda v: v[:, 0].max() - v[:, 0].min()  # noqa: E731
    assert width(widened) > 1.08 * width(base)


def test_eyeballs_sit_in_their_sockets_clear_of_the_lids(mean_head):
    head = load_head_model()
    skin = mean_head.skin.vertices
    for centre, loop in zip(mean_head.eye_centres, head.eye_loops.values(), strict=True):
        lids = load_topology().lift(load_topology().frontal_shape[:468])[loop]
        distance = np.linalg.norm(lids - centre, axis=1)
        assert distance.min() >= mean_head.eye_radius + LID_CLEARANCE - 1e-6
        # the ball's front is within 3 mm of the opening: an eye, not a hole
        opening = lids.mean(0)
        assert np.linalg.norm(opening - centre) < mean_head.eye_radius + 0.003
        # no other skin vertex near the eye is inside the ball
        near = np.linalg.norm(skin - centre, axis=1)
        assert (near >= mean_head.eye_radius - 1e-4).sum() >= len(skin) - 2 * (len(loop) + 1)


def _action(head, name):
    return head.skin_actions[head.action_names.index(name)]


def test_blink_closes_the_left_lid_over_the_eyeball_without_intersection(mean_head):
    delta = _action(mean_head, "eyeBlinkLeft")
    moved = np.linalg.norm(delta, axis=1) > 0.001
    skin = mean_head.skin.vertices
    assert moved.sum() > 20
    assert (skin[moved, 0] > 0).mean() > 0.95  # +x is the subject's left
    right, left = mean_head.eye_centres
    closed = skin + delta
    num_split = len(load_head_model().skin_source)
    distance = np.linalg.norm(closed[:num_split] - left, axis=1)
    assert distance.min() >= mean_head.eye_radius + LID_CLEARANCE - 1e-4


def test_jaw_open_opens_the_mouth_onto_the_mouth_bag(mean_head):
    head = load_head_model()
    topology = load_topology()
    delta = _action(mean_head, "jawOpen")
    first = {}
    for i, v in enumerate(head.skin_source):
        first.setdefault(int(v), i)
    chin, upper_lip = first[152], first[0]  # MediaPipe: chin, upper lip's top
    assert delta[chin, 1] < -0.005  # the chin drops by more than 5 mm
    assert abs(delta[upper_lip, 1]) < 0.5 * abs(delta[chin, 1])
    mouth = mean_head.mouth
    assert mean_head.mouth_actions.shape == (52, len(mouth.vertices), 3)
    lips = mouth.vertices[: len(head.mouth_loop)]
    np.testing.assert_allclose(lips, topology.lift(topology.frontal_shape[:468])[head.mouth_loop],
                               atol=1e-6)  # fmt: skip
    assert mouth.vertices[:, 2].min() < lips[:, 2].min() - 0.02  # a cavity behind the lips


def test_actions_are_the_52_arkit_names(mean_head):
    names = mean_head.action_names
    assert len(names) == 52 and len(set(names)) == 52
    assert {"jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "tongueOut"} <= set(names)
    assert mean_head.skin_actions.shape == (52, len(mean_head.skin.vertices), 3)
    assert np.isfinite(mean_head.skin_actions).all()


@pytest.fixture(scope="module")
def pipe():
    from pipelines import AvatarPipeline

    return AvatarPipeline.from_pretrained("weights_config")


def test_pipeline_returns_the_head_and_its_maps_cover_the_ring(pipe):
    from skimage import data

    out = pipe(data.astronaut(), resolution=128, num_fit_steps=0)
    head = load_head_model()
    assert out.head is not None
    np.testing.assert_array_equal(out.mesh.vertices, out.head.skin.vertices)
    assert out.head.eye_texture.shape[-1] == 3
    # the ring's texels carry skin colour close to the face border's, not black or the photo's
    # background: the scalp is the border's skin colour spread over the head
    atlas = uv_atlas(128, head)
    ring = atlas.texels[head.ring_charts[atlas.faces]]
    albedo = out.maps["diffuse_albedo"].reshape(-1, 3)
    border = np.median(albedo[uv_atlas(128, load_topology()).texels], axis=0)
    assert np.abs(np.median(albedo[ring], axis=0) - border).max() < 0.15
    assert albedo[ring].min() > 0.02
    # the face's own vertices are the fitted face's: the head does not move them
    face_only = pipe(data.astronaut(), resolution=128, num_fit_steps=0, head=False)
    assert out.head is not None and face_only.head is None
    assert len(face_only.mesh.vertices) == load_topology().num_dense
    first = {}
    for i, v in enumerate(head.skin_source):
        first.setdefault(int(v), i)
    ids = np.array(sorted(v for v in first if v < load_topology().num_dense))
    split = np.array([first[v] for v in ids])
    np.testing.assert_allclose(out.mesh.vertices[split], face_only.mesh.vertices[ids], atol=1e-6)


def test_several_photos_of_one_person_give_one_head(pipe):
    from skimage import data

    photo = data.astronaut()
    out = pipe([photo, np.ascontiguousarray(photo[:, ::-1])], resolution=64, num_fit_steps=0)
    assert out.head is not None and len(out.views) == 2
    assert len(out.mesh.vertices) == len(out.head.skin.vertices)


def test_eyes_look_where_the_tracked_irises_are(mean_head):
    from modeling.face_model.head import aim_eyes
    from modeling.reconstruction.geometry import FaceGeometry
    from modeling.reconstruction.head_texture import iris_gaze
    from rendering.camera import PinholeCamera

    topology = load_topology()
    face = topology.lift(topology.frontal_shape[:468])
    camera = PinholeCamera.from_fov(640, 640, 40.0, rotation=np.eye(3), translation=[0, 0, -0.5])
    geometry = FaceGeometry(camera, camera.object_to_camera(face), face, face, face)
    wanted = np.array([[0.2, 0.1, 1.0], [0.2, 0.1, 1.0]])  # both look up and to the left
    wanted /= np.linalg.norm(wanted, axis=1, keepdims=True)
    front = mean_head.eye_centres + mean_head.eye_radius * wanted
    pixels = camera.project(camera.object_to_camera(front))
    iris = np.zeros((10, 3))
    iris[[0, 5], :2] = pixels
    gaze = iris_gaze(mean_head, geometry, iris)
    np.testing.assert_allclose(gaze, wanted, atol=0.02)
    aimed = aim_eyes(mean_head, gaze)
    half = len(aimed.eyes.vertices) // 2
    for i in range(2):  # the pole (the iris) now points along the gaze, the ball stays put
        part = aimed.eyes.vertices[i * half : (i + 1) * half].astype(np.float64)
        pole = part[0] - mean_head.eye_centres[i]  # vertex 0 is the front pole
        assert np.dot(pole / np.linalg.norm(pole), gaze[i]) > 0.999
        np.testing.assert_allclose(
            part.mean(0), mean_head.eyes.vertices[i * half : (i + 1) * half].mean(0), atol=2e-3
        )


def test_no_skin_triangle_folds_over_where_the_head_meets_the_face(mean_head):
    """A triangle whose own normal points against all three of its vertex normals is folded
    (the joining strip, before `fair_border`, had 80 of them)."""
    skin = mean_head.skin
    v, f, n = skin.vertices.astype(np.float64), skin.faces, skin.normals.astype(np.float64)
    own = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    folded = (np.einsum("fc,fkc->fk", own, n[f]) < 0).all(1)
    assert folded[load_head_model().ring_charts].sum() == 0


def test_teeth_sit_behind_the_lips_and_the_lower_arch_follows_the_jaw(mean_head):
    topology = load_topology()
    face = topology.lift(topology.frontal_shape[:468])
    teeth = mean_head.teeth.vertices.astype(np.float64)
    lips = face[[13, 14]]  # inner lips
    assert teeth[:, 2].max() < lips[:, 2].min() - 0.002  # behind the lips
    assert np.abs(teeth[:, 0]).max() < 0.03  # within the mouth's width, not through the cheeks
    # a closed band: positive enclosed volume (triangles face outwards)
    f = mean_head.teeth.faces
    volume = np.einsum("ij,ij->i", teeth[f[:, 0]], np.cross(teeth[f[:, 1]], teeth[f[:, 2]])).sum()
    assert volume > 0
    jaw = mean_head.teeth_actions[mean_head.action_names.index("jawOpen")]
    moving = np.linalg.norm(jaw, axis=1) > 0
    assert 0 < moving.sum() < len(teeth)  # the lower arch only
    assert teeth[moving, 1].mean() < teeth[~moving, 1].mean()
    assert (jaw[moving, 1] < -0.005).all()  # opens by more than 5 mm


def test_the_dense_face_is_recovered_from_the_heads_skin(mean_head):
    from modeling.face_model.head import face_vertices

    topology = load_topology()
    face = topology.lift(topology.frontal_shape[:468])
    np.testing.assert_allclose(face_vertices(mean_head.skin.vertices), face, atol=1e-6)


def test_ring_completion_keeps_the_face_and_pads_ring_charts_with_their_own_colours():
    from scipy.spatial import cKDTree

    from modeling.reconstruction.head_texture import complete_head_map

    head, size = load_head_model(), 256
    atlas = uv_atlas(size, head)
    image = np.random.default_rng(0).random((size, size, 4), dtype=np.float32)
    out = complete_head_map(image, head, atlas)
    assert out.shape == image.shape and out.dtype == np.float32
    in_ring = head.ring_charts[atlas.faces]
    ring, face = atlas.texels[in_ring], atlas.texels[~in_ring]
    flat, before = out.reshape(-1, 4), image.reshape(-1, 4)
    np.testing.assert_array_equal(flat[face], before[face])  # the face's texels are final
    # the ring is smooth skin colour from the face's border, not the input's noise
    assert flat[ring].std(0).max() < 0.5 * before[ring].std(0).min()
    # off the charts: next to a ring chart, the nearest ring texel's colour (bilinear lookups
    # and mipmaps at a chart's edge see that chart); elsewhere the input's own padding
    changed = np.flatnonzero(np.any(flat != before, axis=1))
    off_chart = np.setdiff1d(changed, atlas.texels)
    assert len(off_chart) > 0
    rows, cols = np.divmod(ring, size)
    _, nearest = cKDTree(np.stack([rows, cols], 1)).query(np.stack(np.divmod(off_chart, size), 1))
    close = np.abs(flat[off_chart] - flat[ring[nearest]]).max(1) < 1e-6
    assert close.mean() > 0.9  # ties and the 3x3 distance approximation pick a neighbour


def test_the_band_between_face_and_head_is_faired_without_a_crease():
    """The fitted face and the template head meet at an angle; `fair_border` re-solves the
    ring's rows next to the face (bi-harmonic, C1 at the face's border), leaving the face and
    the rest of the ring where they were. On a face 10 % wider than the mean, the edges near
    the border bend 16.2 degrees on average before, 5.5 after (95th percentile 108 -> 18);
    the former relaxation (40 Laplacian steps on 3 rows) left 7.1 and 31."""
    topology, head = load_topology(), load_head_model()
    face = topology.lift(topology.frontal_shape[:468]) * np.array([1.1, 1.0, 1.0])
    raw = np.concatenate([face, ring_vertices(face, head)])
    faired = fair_border(raw, head)
    np.testing.assert_array_equal(faired[: head.num_dense], face)
    moved = head.border_fairing.moved
    np.testing.assert_array_equal(faired[~moved], raw[~moved])
    assert moved[head.num_dense :].sum() > 300 and not moved[: head.num_dense].any()
    before, after = border_bend(raw, head), border_bend(faired, head)
    assert after.mean() < 0.4 * before.mean() and np.percentile(after, 95) < 20
