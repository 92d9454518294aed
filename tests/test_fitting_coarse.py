import numpy as np

from bench.synthetic import render_view, synthetic_albedo
from modeling.face_model.topology import NUM_LANDMARKS, load_topology
from modeling.reconstruction.fitting import coarse_view, prepare_view
from modeling.reconstruction.geometry import fit_camera_and_shape


def test_the_coarse_view_is_the_same_picture_at_half_the_size():
    topo = load_topology()
    view = render_view(topo, synthetic_albedo(64), yaw_pitch_roll=(20, 0, 0))
    geometry = fit_camera_and_shape(view.landmarks, topo)
    fine = prepare_view(view.image, view.landmarks, geometry.camera, 128,
                        mask=np.ones(view.image.shape[:2], np.float32))  # fmt: skip
    coarse = coarse_view(fine)
    assert coarse.image.shape == (64, 64, 3) and coarse.mask.shape == (64, 64)
    # the same points: landmarks and the mesh project to half the fine view's pixels
    points = geometry.vertices_camera[:NUM_LANDMARKS]
    np.testing.assert_allclose(coarse.camera.project(points), fine.camera.project(points) / 2,
                               atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(coarse.landmarks.numpy(), fine.landmarks.numpy() / 2, atol=1e-5)
    assert coarse.face_size == fine.face_size / 2
    # and the same picture: area-averaged, so the mean colour is kept
    np.testing.assert_allclose(coarse.image.mean((0, 1)), fine.image.mean((0, 1)), atol=1e-3)
