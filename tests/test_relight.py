"""Relit previews: shapes, brightness follows the environment, light direction shows."""

import dataclasses

import numpy as np
import pytest

from pipelines import AvatarPipeline
from rendering.lights import equirect_directions
from rendering.relight import BACKGROUND, prepare_scene, relight, relight_previews


# The tests on the 512 px reconstruction are marked slow; the fast loop relights a 128 px one.
@pytest.fixture(scope="module")
def output():
    pipe = AvatarPipeline.from_pretrained("weights_config")
    return pipe("examples/astronaut.jpg", resolution=512, num_fit_steps=0)


@pytest.fixture(scope="module")
def scene(output):
    return prepare_scene(output)


@pytest.fixture(scope="module")
def tiny_output():
    pipe = AvatarPipeline.from_pretrained("weights_config")
    return pipe("examples/astronaut.jpg", resolution=128, num_fit_steps=0)


@pytest.fixture(scope="module")
def tiny_scene(tiny_output):
    return prepare_scene(tiny_output)


def _face(image):
    return np.any(np.abs(image - BACKGROUND) > 1e-6, axis=-1)


def _lamp(azimuth_deg, elevation_deg=10.0, radius_deg=20.0, strength=3.0):
    """An equirectangular map: dim uniform ambient plus one bright disk (camera frame)."""
    dirs = equirect_directions(64, 128)
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    centre = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    inside = dirs @ centre > np.cos(np.radians(radius_deg))
    return (0.05 + strength * inside[..., None] * np.ones(3)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["studio", "overcast", "sunny", "window"])
@pytest.mark.parametrize("yaw", [0.0, 35.0])
def test_shapes_and_range(scene, kind, yaw):
    image = relight(scene, kind, yaw_degrees=yaw, size=128)
    assert image.shape == (128, 128, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    face = _face(image)
    assert 0.25 < face.mean() < 0.9, "the head fills a good part of the frame"
    assert image[face].mean() > 0.15, "the face is lit"


@pytest.mark.slow
def test_accepts_the_pipeline_output_directly(output):
    image = relight(output, "studio", size=64)
    assert image.shape == (64, 64, 3)


@pytest.mark.slow
def test_brighter_environment_gives_brighter_render(scene):
    env = _lamp(0.0)
    dim, bright = relight(scene, env * 0.5, size=128), relight(scene, env, size=128)
    face = _face(dim)
    assert bright[face].mean() > dim[face].mean() + 0.05
    assert np.all(bright[face] >= dim[face] - 1e-6)


@pytest.mark.slow
def test_light_from_the_left_brightens_the_left(scene):
    size = 128
    for azimuth, brighter in ((-80.0, "left"), (80.0, "right")):
        image = relight(scene, _lamp(azimuth), size=size)
        luma = image.mean(-1)
        face = _face(image)
        left = luma[:, : size // 2][face[:, : size // 2]].mean()
        right = luma[:, size // 2 :][face[:, size // 2 :]].mean()
        assert (left > right + 0.1) if brighter == "left" else (right > left + 0.1)


@pytest.mark.slow
def test_specular_map_is_used_when_present(output):
    shiny = dict(output.maps)
    shiny["specular_albedo"] = np.ones((64, 64, 1), np.float32)
    matte = dict(output.maps)
    matte["specular_albedo"] = np.zeros((64, 64, 1), np.float32)
    images = []
    for maps in (shiny, matte):
        images.append(relight(dataclasses.replace(output, maps=maps), "sunny", size=96))
    face = _face(images[1])
    assert images[0][face].mean() > images[1][face].mean() + 0.02


@pytest.mark.slow
def test_flat_reflectance_maps_match_the_defaults(output):
    """The reflectance networks' maps, at their neutral values (linear specular 0.3, flat
    tangent-space normals encoded (n+1)/2), render as the defaults do."""
    # the pipeline's own reflectance maps (when its networks are loaded) left out for "default"
    reflectance = ("specular_albedo", "specular_normals", "diffuse_normals")
    bare = dataclasses.replace(
        output, maps={k: v for k, v in output.maps.items() if k not in reflectance}
    )
    neutral = dict(bare.maps)
    neutral["specular_albedo"] = np.full((64, 64, 1), 0.3, np.float32)
    flat = np.broadcast_to(np.array([0.5, 0.5, 1.0], np.float32), (64, 64, 3)).copy()
    neutral["specular_normals"] = flat
    neutral["diffuse_normals"] = flat
    for yaw in (0.0, 35.0):
        default = relight(bare, "sunny", yaw, size=96)
        with_maps = relight(dataclasses.replace(output, maps=neutral), "sunny", yaw, size=96)
        assert np.abs(default - with_maps).max() < 2e-3


@pytest.mark.slow
def test_three_quarter_view_differs_from_the_photo_view(scene):
    front, turned = relight(scene, "studio", 0.0, 96), relight(scene, "studio", 35.0, 96)
    assert np.abs(front - turned).mean() > 0.02


def test_unknown_environment_is_refused(tiny_scene):
    with pytest.raises(ValueError, match="unknown environment"):
        relight(tiny_scene, "disco")


def test_tiny_reconstruction_is_lit_by_its_environment(tiny_scene):
    """The fast loop's relighting check, on 128 px maps: twice the light is brighter
    everywhere, and a lamp on the left lights the left of the face more."""
    size = 64
    lamp = _lamp(-80.0)
    dim, bright = relight(tiny_scene, lamp * 0.5, size=size), relight(tiny_scene, lamp, size=size)
    face = _face(bright)
    assert 0.25 < face.mean() < 0.9, "the head fills a good part of the frame"
    assert bright[face].mean() > dim[face].mean() + 0.05
    assert np.all(bright[face] >= dim[face] - 1e-6)
    luma = bright.mean(-1)
    left = luma[:, : size // 2][face[:, : size // 2]].mean()
    right = luma[:, size // 2 :][face[:, size // 2 :]].mean()
    assert left > right + 0.1


@pytest.mark.slow
def test_previews_cover_every_environment_and_view(output):
    previews = relight_previews(output, size=64)
    profile = 1 if output.head is not None else 0  # a full head is also shown in profile
    assert len(previews) == 4 * 2 + profile
    assert previews[0][1] == "studio, photo view"
    assert previews[1][1] == "studio, 35° view"
    if output.head is not None:
        assert previews[2][1] == "studio, 90° view"
    assert all(image.size == (64, 64) for image, _ in previews)


def test_a_full_head_is_relit_with_its_eyes_and_a_profile(scene, output):
    assert output.head is not None and scene.eyes is not None
    parts = (output.head.eyes, output.head.teeth)  # drawn together, glossy
    assert len(scene.eyes.vertices) == sum(len(p.vertices) for p in parts)
    front, profile = relight(scene, "studio", 0.0, 96), relight(scene, "studio", 90.0, 96)
    background = np.all(np.isclose(profile, profile[0, 0]), axis=-1)
    assert 0.25 < 1 - background.mean() < 0.9  # a head seen from the side fills the frame
    assert np.isfinite(front).all() and np.isfinite(profile).all()


def test_previews_are_the_single_renders(tiny_output, tiny_scene):
    """`relight_previews` rasterizes each view once for every environment: the very pixels
    `relight` renders one preview at a time."""
    previews = relight_previews(tiny_output, size=48)
    assert len(previews) == 9
    for image, caption in previews:
        kind, view = caption.split(", ")
        yaw = 0.0 if view == "photo view" else float(view.split("°")[0])
        alone = np.round(np.clip(relight(tiny_scene, kind, yaw, 48), 0, 1) * 255)
        np.testing.assert_array_equal(np.asarray(image), alone.astype(np.uint8), err_msg=caption)
