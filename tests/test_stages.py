"""Stage-level tests on synthetic data with known answers: SH shading, lighting recovery,
completion, camera + shape recovery, visibility."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from modeling.face_model.topology import NUM_LANDMARKS, load_topology
from modeling.inputs.face_tracker import FaceLandmarks
from modeling.reconstruction.first_order import (
    HIGHLIGHT_CAP,
    SOFTEN_DETAIL,
    capped_highlights,
    complete_albedo,
    delight,
    estimate_sh_lighting,
    skin_structure,
    soften_completed_skin,
    structure_correction,
)
from modeling.reconstruction.geometry import fit_camera_and_shape
from modeling.reconstruction.texture import (
    choose_unwrap_size,
    complete_uv_map,
    mirror_complete,
    photo_pixels_per_uv,
    pull_push_fill,
    skin_mask,
    unwrap_texture,
    upsample_maps,
    uv_atlas,
)
from rendering.camera import PinholeCamera
from rendering.render import rasterize_view
from rendering.sh import sh_basis, sh_shading, uniform_white


def _sphere_quadrature(n=400):
    """Midpoint rule on (theta, phi): directions `(M, 3)` and solid-angle weights `(M,)`."""
    theta = (np.arange(n) + 0.5) * np.pi / n
    phi = (np.arange(2 * n) + 0.5) * np.pi / n
    t, p = np.meshgrid(theta, phi, indexing="ij")
    dirs = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    weights = (np.sin(t) * (np.pi / n) ** 2).reshape(-1)
    return dirs, weights


def test_sh_shading_matches_numerical_irradiance():
    dirs, w = _sphere_quadrature()
    radiance = 1 + 0.5 * dirs[:, 1] + 0.3 * dirs[:, 0] * dirs[:, 2] - 0.2 * dirs[:, 2] ** 2
    coeffs = np.repeat(((sh_basis(dirs) * (radiance * w)[:, None]).sum(0))[None], 3, 0)
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(20, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    # Lambertian outgoing radiance for albedo 1: (1/pi) * integral of L(w) max(0, n.w) dw.
    cosines = np.maximum(normals @ dirs.T, 0)
    expected = (cosines * (radiance * w)[None]).sum(1) / np.pi
    np.testing.assert_allclose(sh_shading(normals, coeffs)[:, 0], expected, rtol=2e-3)
    np.testing.assert_allclose(sh_shading(normals, uniform_white()), 1.0, rtol=1e-5)


def test_lighting_and_albedo_recovered_from_shaded_skin():
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(5000, 3))
    normals[:, 2] = np.abs(normals[:, 2]) + 0.3  # a face: normals towards the camera
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    coeffs = uniform_white() * 0.7
    coeffs[:, 3] = 0.9  # light from the right
    coeffs[:, 1] = 0.4  # and from above
    coeffs[:, 4] = 0.1
    coeffs /= sh_shading(normals, coeffs).mean(0)[:, None]  # our normalisation convention
    albedo = np.array([0.6, 0.4, 0.3])
    colors = albedo * sh_shading(normals, coeffs)
    outliers = rng.random(len(colors)) < 0.05  # highlights and stubble
    colors[outliers] = rng.random((outliers.sum(), 3))
    ones = np.ones(len(colors))
    # Unregularised, the robust fit ignores the outliers and finds the light exactly.
    # (equal up to the normalisation, which averages over the inliers only)
    np.testing.assert_allclose(
        estimate_sh_lighting(colors, normals, ones, ridge=0), coeffs, rtol=2e-3, atol=1e-6
    )
    # With the default ridge (stable on a half-seen face) the coefficients of directions a
    # frontal face hardly samples may move, but the shading of the seen normals must not.
    estimate = estimate_sh_lighting(colors, normals, ones)
    true_shading = sh_shading(normals, coeffs)
    assert np.percentile(np.abs(sh_shading(normals, estimate) / true_shading - 1), 95) < 0.05
    recovered = delight(colors[~outliers], normals[~outliers], estimate)
    np.testing.assert_allclose(np.median(recovered, 0), albedo, atol=0.01)
    assert np.percentile(np.abs(recovered - albedo), 90) < 0.03


def test_mirror_completion_fills_the_hidden_half_from_the_seen_half():
    rng = np.random.default_rng(2)
    values = rng.random((32, 32, 3)).astype(np.float32)
    conf = np.zeros((32, 32), np.float32)
    conf[:, :16] = 1  # left half seen, right half hidden
    out, new_conf = mirror_complete(values * conf[..., None], conf)
    np.testing.assert_allclose(out[:, :16], values[:, :16])
    np.testing.assert_allclose(out[:, 16:], values[:, :16][:, ::-1])
    assert new_conf.min() == 1


def test_albedo_completion_borrows_no_highlight_and_keeps_the_seen_texels():
    """A highlight on the seen half (first-order de-lighting leaves the specular in) is not
    mirrored onto the hidden half; the seen texels, and bright texels off the skin (teeth,
    eyes), keep their values."""
    albedo = np.full((64, 64, 3), 0.55, np.float32)
    albedo[20:26, 10:16] = 0.95  # a highlight on the seen skin
    albedo[40:44, 20:24] = 0.9  # bright, but not skin
    visibility = np.zeros((64, 64), np.float32)
    visibility[:, :32] = 1  # left half seen, right half hidden
    skin = np.ones((64, 64), bool)
    skin[40:44, 20:24] = skin[40:44, 40:44] = False
    done = complete_albedo(albedo * visibility[..., None], visibility, skin)
    np.testing.assert_allclose(done[:, :32], albedo[:, :32], atol=1e-6)  # seen: as they were
    plain = mirror_complete(albedo * visibility[..., None], visibility)[0]
    assert plain[20:26, 48:54].min() > 0.9  # the plain mirror copies the highlight
    mirrored = done[20:26, 48:54]
    assert mirrored.max() < 0.55 * HIGHLIGHT_CAP ** (1 / 2.2) + 0.02  # capped near the skin's
    np.testing.assert_allclose(done[40:44, 40:44], 0.9, atol=1e-6)  # not skin: not capped
    # a face without highlights completes as before
    flat = np.full((64, 64, 3), 0.55, np.float32) * visibility[..., None]
    np.testing.assert_allclose(complete_albedo(flat, visibility, skin)[:, 32:], 0.55, atol=1e-5)


def test_completed_skin_keeps_its_mean_and_part_of_its_detail_and_the_features_as_they_are():
    """The mirror copies the other side's detail with its de-lighting error: the completed
    skin keeps its local mean and `SOFTEN_DETAIL` of the rest; features keep theirs and lend
    the skin around them none of their colour."""
    y, x = np.mgrid[0:128, 0:128]
    fine = 0.1 * np.where((x + y) % 2 == 0, 1.0, -1.0)[..., None]  # pores, texel by texel
    completed = (0.5 + fine).astype(np.float32) * np.ones(3, np.float32)
    skin = np.ones((128, 128), bool)
    skin[60:68, 60:68] = False
    completed[60:68, 60:68] = (0.8, 0.2, 0.2)  # a lip
    soft = soften_completed_skin(completed, skin)
    np.testing.assert_array_equal(soft[60:68, 60:68], completed[60:68, 60:68])
    plain = (slice(10, 40), slice(10, 40))  # far from the lip
    expected = np.broadcast_to(0.5 + SOFTEN_DETAIL * fine[plain], soft[plain].shape)
    np.testing.assert_allclose(soft[plain], expected, atol=0.01)
    beside = soft[56:59, 60:68]  # skin next to the lip: still grey, not reddened
    assert np.abs(beside[..., 0] - beside[..., 1]).max() < 1e-3


def test_the_skin_prior_completes_a_recoloured_prior_face_and_leaves_the_seen_texels():
    """A face that is the skin prior re-coloured (a skin tone times exp(structure)), seen only
    above the nose (no mirror partner below), is completed below with the prior's structure
    (lips, cheeks, chin) to within the log/linear difference, where the plain fill gives the
    seen part's smooth extension; seen texels get no correction."""
    structure = skin_structure()
    size = structure.shape[0]
    chart = np.asarray(uv_atlas(size).chart, bool)
    face = (np.array([0.7, 0.5, 0.42], np.float32) * np.exp(structure)) * chart[..., None]
    visibility = np.zeros((size, size), np.float32)
    visibility[: size // 2] = chart[: size // 2]
    plain, _ = complete_uv_map(face * visibility[..., None], visibility)
    correction = structure_correction(visibility)
    np.testing.assert_array_equal(correction[visibility == 1], 0)
    completed = plain * np.exp(correction)
    below = chart.copy()
    below[: size // 2] = False
    error, before = np.abs(completed - face)[below], np.abs(plain - face)[below]
    assert error.mean() < 0.2 * before.mean() and error.max() < 0.01, (error.max(), before.max())
    assert before.max() > 0.1  # the lips: the plain fill has no idea of them


def test_the_skin_prior_asset_is_this_generators_structure():
    """`skin_structure.npz` matches a fresh build from a few of the generator's faces (rebuild
    it with `scripts/build_skin_structure.py` when the generator or the UV layout changes)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "build_skin_structure.py"
    spec = importlib.util.spec_from_file_location("build_skin_structure", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    fresh, shipped = build.skin_structure(faces=8), skin_structure()
    skin = skin_mask(shipped.shape[0])
    np.testing.assert_array_equal(shipped, shipped[:, ::-1])  # symmetric, as the layout
    assert np.corrcoef(fresh[skin].ravel(), shipped[skin].ravel())[0, 1] > 0.8
    assert np.abs(fresh - shipped)[skin].mean() < 0.7 * np.abs(shipped[skin]).mean()


def test_pull_push_keeps_known_texels_and_fills_every_hole():
    rng = np.random.default_rng(3)
    values = np.zeros((100, 70, 3), np.float32)
    values[..., 0] = np.linspace(0.2, 0.8, 70)[None]  # a horizontal ramp
    weights = (rng.random((100, 70)) < 0.1).astype(np.float32)
    filled = pull_push_fill(values * weights[..., None], weights)
    known = weights == 1
    np.testing.assert_allclose(filled[known], values[known], atol=1e-6)
    assert filled[..., 0].min() >= 0.2 - 1e-6 and filled[..., 0].max() <= 0.8 + 1e-6
    # holes are filled from nearby texels: the ramp survives
    assert np.abs(filled[..., 0] - values[..., 0]).mean() < 0.05


def _synthetic_landmarks(yaw_deg: float, pitch_deg: float, distance: float = 0.6):
    """Project the mean face with a known pose, as MediaPipe would report it."""
    topo = load_topology()
    camera = PinholeCamera.from_fov(640, 480, 40.0)
    rot = Rotation.from_euler("yx", [yaw_deg, pitch_deg], degrees=True).as_matrix()
    shape = topo.frontal_shape[:NUM_LANDMARKS]
    cam_pts = shape @ rot.T + np.array([0.02, -0.01, -distance])
    pixels = camera.project(cam_pts)
    depth = -cam_pts[:, 2]
    px_per_m = camera.fx / depth.mean()
    z = (depth - depth.mean()) * px_per_m
    landmarks = FaceLandmarks.from_points(np.column_stack([pixels, z]), (480, 640))
    return landmarks, rot, topo


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (25, -10), (-40, 15)])
def test_camera_and_shape_recover_pose_and_reproject_exactly(yaw, pitch):
    landmarks, rot, topo = _synthetic_landmarks(yaw, pitch)
    geometry = fit_camera_and_shape(landmarks, topo)
    reproj = geometry.camera.project(geometry.vertices_camera[:NUM_LANDMARKS])
    np.testing.assert_allclose(reproj, landmarks.points[:, :2], atol=1e-6)
    err = Rotation.from_matrix(geometry.camera.rotation @ rot.T).magnitude()
    assert np.degrees(err) < 2.0
    # Metric scale: the recovered face is the mean face's size, at about the right distance.
    assert -geometry.vertices_camera[:, 2].mean() == pytest.approx(0.6, rel=0.1)
    np.testing.assert_allclose(np.linalg.norm(geometry.normals_object, axis=1), 1, atol=1e-6)


def test_visibility_follows_head_rotation():
    landmarks, _, topo = _synthetic_landmarks(45, 0)  # subject turned to their left
    geometry = fit_camera_and_shape(landmarks, topo)
    image = np.full((480, 640, 3), 0.5, np.float32)
    rast = rasterize_view(geometry.camera, geometry.vertices_camera, topo.dense_faces)
    unwrapped = unwrap_texture(image, geometry, rast, 128, topo)
    vis = unwrapped.atlas.to_image(unwrapped.visibility[:, None])[..., 0]
    chart = uv_atlas(128, topo).chart
    # The subject's left half of the face (u > 0.5) turns away from the camera.
    right_half, left_half = vis[:, :64][chart[:, :64]], vis[:, 64:][chart[:, 64:]]
    assert right_half.mean() > 0.8 and left_half.mean() < right_half.mean() - 0.2


def test_the_skin_prior_and_the_softening_leave_texels_the_photo_showed():
    """`complete_albedo` adds the prior's structure and softens only where the visibility is
    under `SOFTEN_BELOW`: texels the photo showed even partly (a grazing angle, a mask's edge)
    are the photo's blend with the plain capped completion, as before the prior."""
    size = skin_structure().shape[0]
    rng = np.random.default_rng(4)
    albedo = (0.5 + 0.05 * rng.standard_normal((size, size, 3))).astype(np.float32)
    visibility = np.zeros((size, size), np.float32)
    visibility[: size // 2] = 1.0
    visibility[size // 2 :, : size // 2] = 0.5  # partly seen; the rest unseen
    skin = skin_mask(size)
    seen = albedo * visibility[..., None]
    done = complete_albedo(seen, visibility, skin)
    plain, _ = complete_uv_map(capped_highlights(seen, visibility, skin), visibility)
    partly = visibility == 0.5
    expected = 0.5 * seen + 0.5 * plain
    np.testing.assert_allclose(done[partly], expected[partly], atol=1e-6)
    unseen = (visibility == 0) & skin & np.asarray(uv_atlas(size).chart, bool)
    assert np.abs(done[unseen] - plain[unseen]).max() > 0.01  # there the prior and softening act


def test_unwrap_size_follows_the_photos_detail():
    """A face twice as near spans twice the pixels per unit of UV; "auto" unwraps large maps no
    finer than that (at least a quarter of the size), smaller maps and "full" at full size."""
    near = fit_camera_and_shape(_synthetic_landmarks(0, 0, distance=0.3)[0], load_topology())
    far = fit_camera_and_shape(_synthetic_landmarks(0, 0, distance=0.6)[0], load_topology())
    assert photo_pixels_per_uv(near) / photo_pixels_per_uv(far) == pytest.approx(2, rel=0.05)
    assert choose_unwrap_size("auto", 4096, 180.0) == 1024  # a small face: the floor
    assert choose_unwrap_size("auto", 4096, 1500.0) == 2048
    assert choose_unwrap_size("auto", 4096, 2049.0) == 4096
    assert choose_unwrap_size("auto", 2048, 512.0) == 512
    assert choose_unwrap_size("auto", 1024, 10.0) == 1024  # below 2048 px: always full size
    assert choose_unwrap_size("full", 4096, 10.0) == 4096
    assert choose_unwrap_size(1024, 4096, 3000.0) == 1024  # a size in px: as asked

    def unused() -> float:
        raise AssertionError("the photo's detail is measured only where it decides")

    assert choose_unwrap_size("auto", 1024, unused) == 1024
    assert choose_unwrap_size("full", 4096, unused) == 4096
    assert choose_unwrap_size("auto", 4096, lambda: 1500.0) == 2048
    assert choose_unwrap_size(np.int64(2048), 1024, 10.0) == 1024  # at most the maps'
    for bad in ("on", 32, True, 1.5):
        with pytest.raises(ValueError, match="unwrap_resolution"):
            choose_unwrap_size(bad, 4096, 10.0)

    rng = np.random.default_rng(0)
    texture, albedo = rng.random((2, 64, 64, 3), dtype=np.float32)
    visibility = rng.random((64, 64), dtype=np.float32)
    up = upsample_maps(texture, albedo, visibility, 256)
    assert [m.shape for m in up] == [(256, 256, 3), (256, 256, 3), (256, 256)]
    assert all(m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 for m in up)
    # the area mean of the upsampled map is the map
    down = up[0].reshape(64, 4, 64, 4, 3).mean((1, 3))
    assert np.abs(down - texture)[8:-8, 8:-8].mean() < 0.1
