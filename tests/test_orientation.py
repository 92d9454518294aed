"""Faces in photos turned by quarter turns are reconstructed upright and reported in the photo as
given; doubtful reconstructions carry warnings."""

import numpy as np
import pytest
from PIL import Image

from modeling.inputs.face_tracker import FaceTracker
from modeling.inputs.orientation import (
    detect_upright,
    turn_camera,
    turn_landmarks,
    turn_points,
    upright_turns,
)
from modeling.reconstruction.quality import ViewQuality, warnings_for
from rendering.camera import PinholeCamera
from rendering.color import masked_psnr
from rendering.sh import fibonacci_sphere, rotate_sh, sh_shading

PHOTO = np.asarray(Image.open("examples/astronaut.jpg").convert("RGB"))


@pytest.mark.parametrize("k", [0, 1, 2, 3, -1])
def test_turn_points_follows_rot90(k):
    image = np.zeros((5, 8), np.uint8)
    image[1, 6] = 1  # pixel centre (6.5, 1.5)
    turned = np.rot90(image, k)
    row, col = np.argwhere(turned)[0]
    assert turn_points(np.array([[6.5, 1.5, 7.0]]), k, image.shape)[0] == pytest.approx(
        [col + 0.5, row + 0.5, 7.0]
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_turned_camera_projects_onto_the_photo_as_given(k):
    rng = np.random.default_rng(k)
    turned = PinholeCamera.from_fov(*np.rot90(np.zeros((60, 90)), k).shape[::-1], 40.0)
    turned = PinholeCamera(turned.fx, turned.fy, turned.cx + 3, turned.cy - 2, turned.width,
                           turned.height, np.eye(3), np.array([0.01, -0.02, -0.5]))  # fmt: skip
    points = rng.normal(0, 0.05, (20, 3))
    in_turned = turned.project(turned.object_to_camera(points))
    camera = turn_camera(turned, k)
    assert (camera.height, camera.width) == (60, 90)
    expected = turn_points(in_turned, -k, (turned.height, turned.width))
    assert camera.project(camera.object_to_camera(points)) == pytest.approx(expected, abs=1e-9)


def test_rotated_sh_shades_rotated_normals_alike():
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(3, 9))
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    normals = fibonacci_sphere(300)
    rotated = sh_shading(normals @ rotation.T, rotate_sh(coeffs, rotation))
    assert rotated == pytest.approx(sh_shading(normals, coeffs), abs=1e-9)


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker() as t:
        yield t


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_detect_upright_turns_any_quarter_turned_face_upright(tracker, k):
    upright = tracker.detect(PHOTO)[0]
    photo = np.ascontiguousarray(np.rot90(PHOTO, k))
    turns, faces = detect_upright(tracker, photo)
    assert (k + turns) % 4 == 0
    assert upright_turns(faces[0]) == 0
    back = turn_landmarks(faces[0], -turns)  # the face in the photo as given
    expected = turn_landmarks(upright, k)
    assert back.image_size == photo.shape[:2]
    assert np.abs(back.points[:, :2] - expected.points[:, :2]).max() < 1e-6


def test_warnings_name_each_problem_and_stay_quiet_when_all_is_well():
    good = ViewQuality(30.0, 0.01, 0.6, 0.01, 200.0, 0.6)
    assert warnings_for(good) == []
    bad = ViewQuality(18.0, 0.2, 0.03, 0.5, 70.0, 0.1, turn=52.0)
    text = " | ".join(warnings_for(bad, "photo 2"))
    for phrase in ("fit is poor", "18.0 dB", "20 %", "very dark", "blown out", "70 px", "little",
                   "turned about 52 degrees"):  # fmt: skip
        assert phrase in text, phrase
    assert text.count("photo 2") == 7


@pytest.mark.slow
def test_upside_down_photo_gives_the_upright_avatar():
    from pipelines import AvatarPipeline

    pipe = AvatarPipeline.from_pretrained("weights_config")
    upright = pipe(PHOTO, resolution=128, num_fit_steps=0)
    flipped = np.ascontiguousarray(PHOTO[::-1, ::-1])
    out = pipe(flipped, resolution=128, num_fit_steps=0)
    assert out.views[0].quarter_turns == 2
    assert np.array_equal(out.image, flipped)
    assert out.maps["diffuse_albedo"] == pytest.approx(upright.maps["diffuse_albedo"], abs=1e-6)
    # camera and landmarks are the photo's as given: the mesh's landmarks project onto them
    cam = out.camera
    projected = cam.project(cam.object_to_camera(out.mesh.vertices[:468].astype(np.float64)))
    assert np.abs(projected - out.landmarks.points[:, :2]).mean() < 0.5
    assert masked_psnr(out.render, flipped / 255.0, out.render_mask) > 25
    # the SH light turns with the camera: same shading in the photo as given
    assert out.lighting[:, 0] == pytest.approx(upright.lighting[:, 0], rel=1e-4)
    assert out.warnings == upright.warnings == []


@pytest.mark.slow
def test_a_very_dark_photo_is_reconstructed_with_a_warning(tmp_path, capsys):
    from pipelines.cli import main

    photo = tmp_path / "dark.png"
    Image.fromarray((PHOTO * 0.05).round().astype(np.uint8)).save(photo)
    args = [str(photo), "-o", str(tmp_path / "out"), "--resolution", "128", "--fit-steps", "20"]
    assert main(args) == 0  # doubtful, not failed: the files are written
    assert (tmp_path / "out" / "dark" / "face.glb").is_file()
    err = capsys.readouterr().err
    assert f"warning: {photo}: face 0: " in err and "very dark" in err, err


@pytest.mark.parametrize("yaw", [0, 30, 60])
def test_face_turn_is_the_angle_between_the_face_and_the_camera(yaw):
    from bench.synthetic import render_view, synthetic_albedo
    from modeling.face_model.topology import load_topology
    from modeling.reconstruction.geometry import FaceGeometry
    from modeling.reconstruction.quality import face_turn

    topology = load_topology()
    view = render_view(topology, synthetic_albedo(64), yaw_pitch_roll=(yaw, 0, 0))
    verts = view.camera.object_to_camera(view.vertices_object)
    geometry = FaceGeometry(view.camera, verts, view.vertices_object, verts, verts)
    # the head turns about its own origin, so the face's centre moves off the camera's axis
    # (by ~4 degrees at a yaw of 60, seen from 0.45 m; ~1 off-axis frontal): the angle differs
    assert yaw - 5 < face_turn(geometry) < yaw + 1.5
