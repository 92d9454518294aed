"""Lights, environments and skin shading (`rendering.lights`, `rendering.shading`) against known
answers: SH projections, the lights' normalisation, Blinn-Phong energy, the scattering blur's
energy and spread, and ambient occlusion against a ray-cast reference."""

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from modeling.face_model.topology import load_topology
from rendering.lights import (
    ENVIRONMENT_KINDS,
    DirectionalLight,
    PointLight,
    direction_to_equirect,
    dominant_lights,
    environment_to_sh,
    equirect_directions,
    equirect_solid_angles,
    fibonacci_sphere,
    point_light_incidence,
    procedural_environment,
    sh_from_directional,
)
from rendering.mesh import vertex_normals
from rendering.sh import sh_basis, sh_shading, uniform_white
from rendering.shading import (
    _ao_directions,
    bake_ambient_occlusion,
    blinn_phong_specular,
    lambert,
    relief_occlusion,
    shade_skin,
    subsurface_scattering_uv,
)


@contextmanager
def _one_thread():
    """gradcheck runs hundreds of passes over tiny tensors; on a busy 2-core machine torch's
    thread barriers cost far more than the work (100 ms instead of 0.3 ms per pass)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------------------------
# Lights and environments


def test_equirect_layout():
    height, width = 32, 64
    dirs = equirect_directions(height, width)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0)
    assert dirs[0, :, 1].min() > 0.99 and dirs[-1, :, 1].max() < -0.99  # top row is +y
    assert np.all(dirs[:, width // 2 :, 0] > 0)  # right half is +x
    np.testing.assert_allclose(
        direction_to_equirect(np.array([0.0, 0.0, 1.0]), height, width), [width / 2, height / 2]
    )
    np.testing.assert_allclose(direction_to_equirect(dirs, height, width)[5, 7], [7.5, 5.5])
    np.testing.assert_allclose(equirect_solid_angles(height, width).sum() * width, 4 * np.pi)


def test_environment_to_sh_of_constant_environment():
    env = np.full((32, 64, 3), 0.7)
    np.testing.assert_allclose(environment_to_sh(env), 0.7 * uniform_white(), atol=2e-3)
    normals = fibonacci_sphere(100)
    np.testing.assert_allclose(sh_shading(normals, environment_to_sh(env)), 0.7, atol=2e-3)


def test_environment_to_sh_recovers_low_frequency_radiance():
    coeffs = np.random.default_rng(0).normal(size=(3, 9))
    env = sh_basis(equirect_directions(64, 128)) @ coeffs.T  # radiance with known SH
    np.testing.assert_allclose(environment_to_sh(env), coeffs, atol=5e-3)


def test_sh_from_directional_approximates_lambert():
    lights = [
        DirectionalLight(_unit([0.3, 0.5, 0.8]), [1.0, 0.8, 0.6]),
        DirectionalLight(_unit([-0.7, 0.1, 0.2]), [0.3, 0.3, 0.4]),
    ]
    for light in lights:  # at n = l the 9-term clamped cosine overshoots by 1/16
        np.testing.assert_allclose(
            sh_shading(light.direction, sh_from_directional(light)), 1.0625 * light.color, rtol=1e-5
        )
    normals = fibonacci_sphere(4000)
    approx = sh_shading(normals, sh_from_directional(lights))
    exact = lambert(torch.from_numpy(normals), lights).numpy()
    scale = sum(light.color for light in lights)
    error = np.abs(approx - exact) / scale
    # order-2 SH of max(0, cos): ~3% mean absolute error, under 10% anywhere
    assert error.mean() < 0.04 and error.max() < 0.1


def test_lights_validate_and_point_light_falloff():
    with pytest.raises(ValueError, match="unit"):
        DirectionalLight([0.0, 0.0, 2.0], [1, 1, 1])
    with pytest.raises(ValueError):
        DirectionalLight([0.0, 0.0, 1.0], [1, 1])
    light = PointLight([0.0, 0.0, 2.0], [4.0, 4.0, 4.0])
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 2.0]], dtype=torch.float64)
    directions, falloff = point_light_incidence(light, points)
    np.testing.assert_allclose(directions.numpy(), [[0, 0, 1], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(falloff.numpy(), [0.25, 0.25])
    normals = torch.tensor([[0.0, 0.0, 1.0], [0.0, -0.6, 0.8]], dtype=torch.float64)
    expected = torch.stack(
        [
            lambert(n, DirectionalLight(d.numpy(), [1.0, 1.0, 1.0]))
            for n, d in zip(normals, directions, strict=True)
        ]
    )
    np.testing.assert_allclose(lambert(normals, light, positions=points), expected)
    with pytest.raises(ValueError, match="positions"):
        lambert(normals, light)


@pytest.mark.parametrize("kind", ENVIRONMENT_KINDS)
def test_procedural_environment(kind):
    env = procedural_environment(kind, seed=1)
    assert env.shape == (64, 128, 3) and env.dtype == np.float32
    assert np.all(np.isfinite(env)) and env.min() >= 0
    np.testing.assert_array_equal(env, procedural_environment(kind, seed=1))
    assert not np.allclose(env, procedural_environment(kind, seed=2))
    # exposure: the brightest Lambertian orientation has shading ~1
    shading = sh_shading(fibonacci_sphere(2048), environment_to_sh(env)) @ [0.2126, 0.7152, 0.0722]
    assert shading.max() == pytest.approx(1.0, abs=1e-3)
    # rotating by 90 degrees about +y shifts the map a quarter turn to the right
    rotated = procedural_environment(kind, seed=1, rotation_deg=90.0)
    rolled = np.roll(env, 128 // 4, axis=1)
    np.testing.assert_allclose(rotated / rotated.sum(), rolled / rolled.sum(), atol=2e-6)


def test_dominant_lights_finds_known_lights():
    height, width = 64, 128
    dirs = equirect_directions(height, width)
    solid_angle = equirect_solid_angles(height, width)
    env = np.full((height, width, 3), 0.01)
    truth = [(_unit([0.5, 0.5, 0.7]), np.array([0.9, 0.8, 0.7])), (_unit([-0.8, 0.3, -0.3]), 0.3)]
    for direction, shading in truth:
        disk = (dirs @ direction > np.cos(np.radians(8))).astype(float)
        env += disk[..., None] * np.pi * np.asarray(shading) / np.sum(disk * solid_angle)
    lights = dominant_lights(env, k=2)
    assert len(lights) == 2
    for light, (direction, shading) in zip(lights, truth, strict=True):
        assert np.degrees(np.arccos(light.direction @ direction)) < 2
        np.testing.assert_allclose(light.color, shading, rtol=0.05, atol=0.01)
    studio = dominant_lights(procedural_environment("studio", seed=0), k=3)
    assert len(studio) == 3
    energies = [light.color.sum() for light in studio]
    assert energies == sorted(energies, reverse=True)


# --------------------------------------------------------------------------------------------
# Lambert and Blinn-Phong


def test_lambert_sums_clamped_cosines():
    normals = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    lights = [
        DirectionalLight([0.0, 0.0, 1.0], [1.0, 0.5, 0.25]),
        DirectionalLight([0.6, 0.0, 0.8], [1.0, 1.0, 1.0]),
    ]
    out = lambert(normals, lights)
    assert out.dtype == torch.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out.numpy(), [[1.8, 1.3, 1.05], [0, 0, 0], [0.6, 0.6, 0.6]], 1e-6)
    np.testing.assert_allclose(lambert(normals, []).numpy(), 0)


@pytest.mark.parametrize("shininess", [8.0, 32.0, 64.0])
def test_blinn_phong_white_furnace(shininess):
    """A uniform white environment (radiance 1) as many small lights of colour dOmega / pi: the
    normalised lobe reflects about the specular albedo at normal view (our light units)."""
    directions = fibonacci_sphere(2048)
    color = 4 * np.pi / len(directions) / np.pi
    lights = [DirectionalLight(d, [color] * 3) for d in directions]
    normal = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    out = blinn_phong_specular(normal, normal, lights, 1.0, shininess)
    assert out[0, 0].item() == pytest.approx(1.0, abs=0.1)
    unnormalized = blinn_phong_specular(normal, normal, lights, 1.0, shininess, normalized=False)
    np.testing.assert_allclose(out.numpy(), unnormalized.numpy() * (shininess + 8) / 8)


def test_blinn_phong_peaks_at_mirror_direction_and_ignores_back_lights():
    normal = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    light = DirectionalLight(_unit([0.5, 0.0, 1.0]), [1.0, 1.0, 1.0])
    angles = torch.linspace(-1.4, 1.4, 281, dtype=torch.float64)
    views = torch.stack([torch.sin(angles), 0 * angles, torch.cos(angles)], dim=-1)
    spec = blinn_phong_specular(normal, views, light, torch.tensor([0.05]), 32.0)[:, 0]
    mirror = 2 * (light.direction @ normal.numpy()) * normal.numpy() - light.direction
    best = views[spec.argmax()].numpy()
    assert np.degrees(np.arccos(best @ mirror)) < 0.6  # one step of the sweep
    peak = 0.05 * (32 + 8) / 8 * light.direction[2]
    assert spec.max().item() == pytest.approx(peak, rel=1e-3)
    back = DirectionalLight([0.0, 0.0, -1.0], [1.0, 1.0, 1.0])
    assert blinn_phong_specular(normal, views, back, 1.0, 32.0).abs().max() == 0
    assert lambert(normal, back).abs().max() == 0


def test_blinn_phong_gradcheck():
    gen = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(
        torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.3 + torch.tensor([0, 0, 1.0]),
        dim=-1,
    ).requires_grad_()
    views = torch.nn.functional.normalize(
        torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.3 + torch.tensor([0, 0, 1.0]),
        dim=-1,
    ).requires_grad_()
    albedo = torch.rand(6, 3, generator=gen, dtype=torch.float64).requires_grad_()
    shininess = (10 + 20 * torch.rand(6, 1, generator=gen, dtype=torch.float64)).requires_grad_()
    lights = [
        DirectionalLight(_unit([0.2, 0.3, 1.0]), [1.0, 0.9, 0.8]),
        DirectionalLight(_unit([-0.4, 0.1, 1.0]), [0.5, 0.5, 0.5]),
    ]
    with _one_thread():
        assert torch.autograd.gradcheck(
            lambda n, v, a, s: blinn_phong_specular(n, v, lights, a, s),
            (normals, views, albedo, shininess),
        )


def test_shade_skin_composition():
    gen = torch.Generator().manual_seed(1)
    normals = torch.nn.functional.normalize(torch.randn(5, 3, generator=gen, dtype=torch.float64))
    albedo = torch.rand(5, 3, generator=gen, dtype=torch.float64)
    ao = torch.rand(5, generator=gen, dtype=torch.float64)
    view = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(5, 3)
    light = DirectionalLight([0.0, 0.0, 1.0], [0.5, 0.5, 0.5])
    diffuse, specular = shade_skin(
        albedo, 0.04, normals, normals, view, sh_coeffs=uniform_white(), lights=light, ao=ao
    )
    assert diffuse.dtype == torch.float64 and diffuse.shape == specular.shape == (5, 3)
    expected = albedo * (ao[:, None] + lambert(normals, light))
    np.testing.assert_allclose(diffuse.numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        specular.numpy(), blinn_phong_specular(normals, view, light, 0.04, 20.0).numpy()
    )
    shading, _ = shade_skin(None, 0.04, normals, normals, view, sh_coeffs=uniform_white())
    np.testing.assert_allclose(shading.numpy(), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Subsurface scattering


def _spread(image: torch.Tensor) -> np.ndarray:
    """Per-channel RMS distance (texels) of the image's mass from the centre."""
    size = image.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = ((yy - size // 2) ** 2 + (xx - size // 2) ** 2).to(image.dtype)
    mass = image[0]
    return ((mass * r2).sum((1, 2)) / mass.sum((1, 2))).sqrt().numpy()


def test_sss_conserves_energy_and_blurs_red_most():
    image = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)).double()
    out = subsurface_scattering_uv(image, texel_size_mm=0.5)
    assert out.shape == image.shape
    np.testing.assert_allclose(out.mean((2, 3)).numpy(), image.mean((2, 3)).numpy(), rtol=1e-10)
    impulse = torch.zeros(1, 3, 41, 41, dtype=torch.float64)
    impulse[0, :, 20, 20] = 1
    spread = _spread(subsurface_scattering_uv(impulse, texel_size_mm=0.5))
    assert spread[0] > 1.5 * spread[1] > 1.5 * 1.5 * spread[2] > 0


def test_sss_identity_for_zero_radius_and_mask():
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(
        subsurface_scattering_uv(image, 0.5, radii_mm=(0.0, 0.0, 0.0)).numpy(), image.numpy()
    )
    # with a mask, a constant inside the chart stays constant up to its border
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    constant = torch.full((1, 3, 32, 32), 0.6) * mask
    out = subsurface_scattering_uv(constant, 0.5, mask=mask)
    np.testing.assert_allclose(out[..., 8:24, 8:24].numpy(), 0.6, rtol=1e-5)
    with pytest.raises(ValueError):
        subsurface_scattering_uv(image.permute(0, 2, 3, 1), 0.5)


def test_sss_gradcheck():
    image = torch.rand(1, 3, 6, 6, dtype=torch.float64).requires_grad_()
    mask = (torch.rand(1, 1, 6, 6, dtype=torch.float64) > 0.3).double()
    with _one_thread():
        for m in (None, mask):
            assert torch.autograd.gradcheck(
                lambda x, m=m: subsurface_scattering_uv(x, 1.0, (3.0, 1.4, 0.0), mask=m), (image,)
            )


# --------------------------------------------------------------------------------------------
# Ambient occlusion


def _grid(n: int):
    u = np.linspace(0, 1, n)
    uv = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d.ravel()], 1)])
    return uv, faces


def _ray_cast_ao(vertices, faces, normals, directions, which):
    """Slow reference: cosine-weighted fraction of unblocked rays (Moller-Trumbore)."""
    v0 = vertices[faces[:, 0]]
    e1, e2 = vertices[faces[:, 1]] - v0, vertices[faces[:, 2]] - v0
    out = []
    for i in which:
        origin = vertices[i] + 1e-6 * normals[i]
        weights = np.clip(directions @ normals[i], 0, None)
        lit = np.ones(len(directions), bool)
        for k in np.flatnonzero(weights):
            p = np.cross(directions[k], e2)
            det = np.einsum("fi,fi->f", e1, p)
            inv = 1 / np.where(np.abs(det) > 1e-14, det, np.inf)
            t = origin - v0
            u = np.einsum("fi,fi->f", t, p) * inv
            q = np.cross(t, e1)
            v = q @ directions[k] * inv
            dist = np.einsum("fi,fi->f", e2, q) * inv
            lit[k] = not np.any((u >= 0) & (v >= 0) & (u + v <= 1) & (dist > 1e-9))
        out.append((weights * lit).sum() / weights.sum())
    return np.array(out)


def test_ao_of_planes_and_a_fold():
    uv, faces = _grid(21)
    plane = np.stack([uv[:, 0] * 2 - 1, uv[:, 1] * 2 - 1, np.zeros(len(uv))], axis=1)
    tilt = np.array([[1, 0, 0], [0, math.cos(1), -math.sin(1)], [0, math.sin(1), math.cos(1)]])
    normals = np.tile([0.0, 0.0, 1.0], (len(uv), 1))
    # a plane seen at grazing angles is where shadow maps self-shadow without a slope bias
    assert bake_ambient_occlusion(plane @ tilt.T, faces, normals @ tilt.T).min() > 0.99

    # a V-shaped fold, the planes 60 degrees apart, crease along y, open towards +z
    across = uv[:, 0] * 2 - 1
    fold = np.stack([across * 0.5, uv[:, 1] * 2 - 1, np.abs(across) * math.sqrt(0.75)], axis=1)
    fold_normals = vertex_normals(fold, faces)
    assert fold_normals[:, 2].min() > 0  # pointing into the opening
    ao = bake_ambient_occlusion(fold, faces, fold_normals, num_directions=64, seed=3)
    middle = np.arange(21) * 21 + 10  # a line across the fold, halfway along the crease
    assert ao[middle[10]] < 0.75 and ao[middle[9]] < 0.45 and ao[middle[0]] > 0.7
    reference = _ray_cast_ao(fold, faces, fold_normals, _ao_directions(64, 3), middle)
    assert np.abs(ao[middle] - reference).mean() < 0.03


def test_ao_of_the_face_mesh():
    topology = load_topology()
    vertices = topology.lift(topology.frontal_shape[:468])
    faces = np.asarray(topology.dense_faces)
    ao = bake_ambient_occlusion(vertices, faces, vertex_normals(vertices, faces))
    assert ao.shape == (len(vertices),) and ao.dtype == np.float32
    assert ao.min() >= 0 and ao.max() <= 1
    forehead = ao[[10, 151, 9, 108, 337]].mean()
    eyes = ao[[469, 470, 133, 362]].mean()  # eye centres (closing the holes), inner corners
    nose_wings = ao[[129, 358, 64, 294]].mean()  # the creases beside the nostrils
    assert forehead > 0.95 and eyes < forehead - 0.1 and nose_wings < forehead - 0.05


def test_relief_occlusion_of_a_groove_and_a_pit():
    """At the bottom of a V-groove with walls of slope t the horizon in azimuth phi rises at
    |cos phi| * t: the occlusion is the mean of (c t)^2 / (1 + (c t)^2) over the azimuths."""
    x = np.arange(-40, 41, dtype=np.float64) * 0.1  # mm, 0.1 mm texels
    t = 0.5
    groove = np.tile(np.abs(x) * t, (81, 1))
    ao = relief_occlusion(groove, 0.1, radius_mm=1.0, num_directions=8)
    c = np.cos(np.arange(8) * np.pi / 4)
    expected = 1 - np.mean((c * t) ** 2 / (1 + (c * t) ** 2))
    assert ao[40, 40] == pytest.approx(expected, abs=3e-3)  # cv2 samples at 1/32 texel
    assert ao.dtype == np.float32 and ao.shape == groove.shape

    # a Gaussian pit: darkest at its centre, open far away, deeper is darker
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    shallow = relief_occlusion(-0.05 * np.exp(-r2 / (2 * 0.15**2)), 0.1)
    deep = relief_occlusion(-0.2 * np.exp(-r2 / (2 * 0.15**2)), 0.1)
    assert shallow[40, 40] == shallow.min() and shallow[0, 0] == 1
    assert deep[40, 40] < shallow[40, 40] < 1
    assert bool((relief_occlusion(np.zeros((8, 8)), 0.25) == 1).all())
    with pytest.raises(ValueError, match="texel_mm"):
        relief_occlusion(groove, 0.0)
