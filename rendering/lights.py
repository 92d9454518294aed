"""Lights and lighting environments: directional and point lights, equirectangular HDR
environments, their SH projection, and procedural environments for synthetic data.

Units (the same as `rendering.sh`): a light's `color` is the shading factor it gives a Lambertian
surface facing it, so a white surface facing a `DirectionalLight` with colour `c` reflects
radiance `c`; the light delivers irradiance `pi * c`. An environment of radiance 1 everywhere
gives shading 1 (`rendering.sh.uniform_white`).

Equirectangular layout (camera-space directions, defined here and only here):

- row `i` of an `(H, W)` map has polar angle `theta = pi * (i + 0.5) / H` from +y: the top row
  is straight up (+y), the bottom row straight down;
- column `j` has azimuth `phi = 2 pi * (j + 0.5) / W - pi`, with
  `direction = (sin(theta) sin(phi), cos(theta), sin(theta) cos(phi))`: the horizontal centre of
  the map (pixel x = W / 2) is +z, the direction from the face towards the camera (light there
  hits the face head-on), the right half is +x (the viewer's right), the left and right edges
  are -z (behind the head).

The map therefore reads like a plan of the lights seen from behind the camera: a light in the
right half of the map lights the side of the face on the right of the rendered image.

>>> env = procedural_environment("studio", seed=3)  # (64, 128, 3) linear HDR
>>> coeffs = environment_to_sh(env)  # (3, 9), for rendering.sh.sh_shading
>>> key_lights = dominant_lights(env, k=2)  # for specular highlights
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
import torch

from rendering.color import luminance
from rendering.sh import fibonacci_sphere, sh_basis, sh_shading

__all__ = [
    "DirectionalLight",
    "PointLight",
    "ENVIRONMENT_KINDS",
    "point_light_incidence",
    "equirect_directions",
    "equirect_solid_angles",
    "direction_to_equirect",
    "environment_to_sh",
    "sh_from_directional",
    "procedural_environment",
    "dominant_lights",
    "color_temperature_rgb",
    "as_light_list",
    "fibonacci_sphere",
]

ENVIRONMENT_KINDS = ("studio", "overcast", "sunny", "window")


def _vector3(name: str, value) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)  # a copy: the light never aliases caller data
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class DirectionalLight:
    """A light at infinity.

    Attributes:
        direction (`np.ndarray` of shape `(3,)`): unit vector in camera space pointing from the
            surface towards the light (not normalised for you: a non-unit vector is an error).
        color (`np.ndarray` of shape `(3,)`): linear RGB; the shading a Lambertian surface facing
            the light receives (see the module docstring).
    """

    direction: np.ndarray
    color: np.ndarray

    def __post_init__(self):
        direction = _vector3("direction", self.direction)
        if abs(np.linalg.norm(direction) - 1.0) > 1e-4:
            raise ValueError(
                f"direction must be a unit vector, got norm {np.linalg.norm(direction):.6g}"
            )
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "color", _vector3("color", self.color))


@dataclass(frozen=True, eq=False)
class PointLight:
    """An isotropic point light.

    Attributes:
        position (`np.ndarray` of shape `(3,)`): camera space, metres.
        color (`np.ndarray` of shape `(3,)`): linear RGB; at distance `d` metres the light acts
            like a `DirectionalLight` of colour `color / d**2`.
    """

    position: np.ndarray
    color: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "position", _vector3("position", self.position))
        object.__setattr__(self, "color", _vector3("color", self.color))


def point_light_incidence(light: PointLight, points):
    """Per-point direction towards a point light and its inverse-square falloff.

    Args:
        light (`PointLight`).
        points (`np.ndarray` or `torch.Tensor` of shape `(..., 3)`): surface points, camera space.

    Returns:
        `(directions, falloff)`: `(..., 3)` unit vectors from the points towards the light and
        `(...,)` `1 / d**2`, in the type, dtype and device of `points` (differentiable in torch).
        The light's contribution at a point is that of a `DirectionalLight(directions,
        light.color * falloff)`.
    """
    if isinstance(points, torch.Tensor):
        pos = torch.tensor(light.position, dtype=points.dtype, device=points.device)
        offset = pos - points
        dist2 = (offset * offset).sum(-1).clamp_min(1e-12)
        return offset / dist2.sqrt().unsqueeze(-1), 1.0 / dist2
    offset = light.position - np.asarray(points, dtype=np.float64)
    dist2 = np.maximum(np.sum(offset * offset, axis=-1), 1e-12)
    return offset / np.sqrt(dist2)[..., None], 1.0 / dist2


def as_light_list(lights) -> list:
    """A light or an iterable of lights -> a list of `DirectionalLight` / `PointLight`."""
    if isinstance(lights, DirectionalLight | PointLight):
        return [lights]
    lights = list(lights)
    for light in lights:
        if not isinstance(light, DirectionalLight | PointLight):
            raise TypeError(f"expected DirectionalLight or PointLight, got {type(light).__name__}")
    return lights


# ---------------------------------------------------------------------------------------------
# Equirectangular environments


def _direction_from_angles(azimuth, elevation) -> np.ndarray:
    """Unit vectors for azimuth (radians, 0 = +z, pi/2 = +x) and elevation (radians above the
    horizontal plane)."""
    azimuth, elevation = np.broadcast_arrays(
        np.asarray(azimuth, float), np.asarray(elevation, float)
    )
    return np.stack(
        [
            np.cos(elevation) * np.sin(azimuth),
            np.sin(elevation),
            np.cos(elevation) * np.cos(azimuth),
        ],
        axis=-1,
    )


def equirect_directions(height: int, width: int) -> np.ndarray:
    """`(H, W, 3)` float64 unit camera-space directions of the pixel centres of an
    equirectangular map (layout in the module docstring)."""
    theta = np.pi * (np.arange(height) + 0.5) / height
    phi = 2 * np.pi * (np.arange(width) + 0.5) / width - np.pi
    return _direction_from_angles(phi[None, :], np.pi / 2 - theta[:, None])


def equirect_solid_angles(height: int, width: int) -> np.ndarray:
    """`(H, 1)` float64 exact solid angle of each pixel of a row (they sum to 4 pi over the map)."""
    edges = np.cos(np.pi * np.arange(height + 1) / height)
    return ((edges[:-1] - edges[1:]) * (2 * np.pi / width))[:, None]


def direction_to_equirect(directions: np.ndarray, height: int, width: int) -> np.ndarray:
    """`(..., 3)` unit directions -> `(..., 2)` continuous pixel coordinates `(x, y)` in an
    `(H, W)` map (top-left origin, as `rendering.camera`; pixel (row i, column j) has its centre at
    (j + 0.5, i + 0.5))."""
    d = np.asarray(directions, dtype=np.float64)
    theta = np.arccos(np.clip(d[..., 1], -1.0, 1.0))
    phi = np.arctan2(d[..., 0], d[..., 2])
    return np.stack([(phi + np.pi) / (2 * np.pi) * width, theta / np.pi * height], axis=-1)


def _check_environment(env) -> np.ndarray:
    env = np.asarray(env)
    if env.ndim != 3 or env.shape[2] != 3 or env.shape[0] < 2 or env.shape[1] < 4:
        raise ValueError(f"environment must have shape (H, W, 3), got {env.shape}")
    env = env.astype(np.float64)
    if not np.all(np.isfinite(env)):
        raise ValueError("environment has non-finite values")
    return env


def environment_to_sh(env: np.ndarray) -> np.ndarray:
    """Project an equirectangular radiance map onto our SH basis.

    Args:
        env (`np.ndarray` of shape `(H, W, 3)`): linear RGB radiance, layout in the module
            docstring.

    Returns:
        `np.ndarray` of shape `(3, 9)` float64: `c_j = sum_pixels L * Y_j(direction) * dOmega`
        with each pixel's exact solid angle; `rendering.sh.sh_shading(n, c)` is then the
        (order-2) shading of a Lambertian surface with normal `n` in this environment.
    """
    env = _check_environment(env)
    height, width = env.shape[:2]
    weighted = env * equirect_solid_angles(height, width)[..., None]
    basis = sh_basis(equirect_directions(height, width))  # (H, W, 9)
    return np.einsum("hwc,hwj->cj", weighted, basis)


def sh_from_directional(lights) -> np.ndarray:
    """Radiance SH `(3, 9)` of directional lights, so that `sh_shading` approximates `lambert`.

    A light of colour `c` towards `l` is a delta of radiance carrying irradiance `pi * c`, so its
    coefficients are `pi * c * Y_j(l)`. `sh_shading(n, coeffs)` is then the order-2 (9-term)
    approximation of `max(0, n.l) * c`: exact up to about 6% (at `n = l` it gives
    `1.0625 * c`; the mean absolute error over all normals is about 3% of `c`).
    """
    coeffs = np.zeros((3, 9))
    for light in as_light_list(lights):
        if not isinstance(light, DirectionalLight):
            raise TypeError("sh_from_directional takes directional lights only")
        coeffs += np.pi * light.color[:, None] * sh_basis(light.direction)[None, :]
    return coeffs


def color_temperature_rgb(kelvin: float) -> np.ndarray:
    """`(3,)` linear sRGB colour of a black body at `kelvin` (1667..25000 K), luminance 1.

    Planckian locus chromaticity by Kim et al.'s cubic fit, then CIE XYZ -> linear sRGB (D65
    white, so about 6500 K is neutral, lower is warmer, higher is bluer)."""
    t = float(np.clip(kelvin, 1667.0, 25000.0))
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1 - x - y) / y])
    xyz_to_srgb = np.array(
        [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
    )
    rgb = np.maximum(xyz_to_srgb @ xyz, 0.0)
    return rgb / luminance(rgb)


# ---------------------------------------------------------------------------------------------
# Procedural environments


def _smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / np.maximum(edge1 - edge0, 1e-12), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class _Canvas:
    """Accumulates radiance over the (rotated) directions of an equirectangular map. Light
    strengths are given as shading factors at normal incidence, independent of resolution."""

    def __init__(self, height: int, width: int, rotation_deg: float):
        dirs = equirect_directions(height, width)
        # Rotating the environment by +rotation about +y (right-hand rule: +z towards +x) means
        # evaluating the unrotated environment at the directions rotated back.
        a = np.radians(rotation_deg)
        rot_inv = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        self.dirs = dirs @ rot_inv.T
        self.elevation = np.arcsin(np.clip(self.dirs[..., 1], -1, 1))
        self.azimuth = np.arctan2(self.dirs[..., 0], self.dirs[..., 2])
        self.solid_angle = equirect_solid_angles(height, width)
        self.pixel_angle = np.pi / height
        self.radiance = np.zeros((height, width, 3))

    def add_radiance(self, weight: np.ndarray, color: np.ndarray):
        self.radiance += weight[..., None] * color

    def add_area_light(self, weight: np.ndarray, color: np.ndarray, strength: float):
        """Add `weight` (a soft mask) scaled so the light alone gives shading `strength * color`
        at normal incidence (irradiance pi * strength * color)."""
        total = np.sum(weight * self.solid_angle)
        if total <= 0:
            raise RuntimeError("area light fell between the pixels of the map")
        self.add_radiance(weight * (np.pi * strength / total), color)

    def disk(self, azimuth_deg, elevation_deg, radius_deg, softness=0.25) -> np.ndarray:
        centre = _direction_from_angles(np.radians(azimuth_deg), np.radians(elevation_deg))
        angle = np.arccos(np.clip(self.dirs @ centre, -1, 1))
        # never thinner than ~1.5 pixels, or it could miss every pixel centre
        radius = max(np.radians(radius_deg), 1.5 * self.pixel_angle)
        return 1 - _smoothstep(radius * (1 - softness), radius * (1 + softness), angle)

    def rectangle(self, azimuth_deg, elevation_deg, half_width_deg, half_height_deg):
        """A rectangle in (azimuth, elevation) with edges softened over one pixel."""
        d_az = np.angle(np.exp(1j * (self.azimuth - np.radians(azimuth_deg))))
        d_el = self.elevation - np.radians(elevation_deg)
        px = self.pixel_angle
        inside_az = 1 - _smoothstep(
            np.radians(half_width_deg) - px, np.radians(half_width_deg) + px, np.abs(d_az)
        )
        inside_el = 1 - _smoothstep(
            np.radians(half_height_deg) - px, np.radians(half_height_deg) + px, np.abs(d_el)
        )
        return inside_az * inside_el

    def upper(self, blend_deg=3.0) -> np.ndarray:
        """Soft mask of the upper hemisphere (sky), blended over `blend_deg` at the horizon."""
        b = np.radians(blend_deg)
        return _smoothstep(-b, b, self.elevation)


def _studio(c: _Canvas, rng: np.random.Generator):
    side = rng.choice([-1.0, 1.0])
    temp = rng.uniform(4300, 6500)
    background = rng.uniform(0.02, 0.06)
    # dim room, a little brighter above than below
    c.add_radiance(background * (0.75 + 0.25 * np.sin(c.elevation)), color_temperature_rgb(temp))
    key = c.disk(side * rng.uniform(20, 60), rng.uniform(10, 45), rng.uniform(10, 20))
    c.add_area_light(key, color_temperature_rgb(temp + rng.uniform(-300, 300)), 1.0)
    fill = c.disk(-side * rng.uniform(30, 70), rng.uniform(-5, 20), rng.uniform(20, 35))
    c.add_area_light(
        fill, color_temperature_rgb(temp + rng.uniform(-500, 800)), rng.uniform(0.2, 0.5)
    )
    rim_side = rng.choice([-1.0, 1.0])
    rim = c.disk(rim_side * rng.uniform(120, 160), rng.uniform(10, 50), rng.uniform(8, 15))
    c.add_area_light(
        rim, color_temperature_rgb(temp + rng.uniform(-500, 1500)), rng.uniform(0.3, 0.8)
    )


def _ground_color(rng: np.random.Generator) -> np.ndarray:
    """Diffuse reflectance of grass, asphalt / concrete or sand, lightly jittered."""
    palettes = np.array([[0.08, 0.12, 0.05], [0.12, 0.12, 0.12], [0.35, 0.30, 0.22]])
    return palettes[rng.integers(len(palettes))] * rng.uniform(0.7, 1.3)


def _overcast(c: _Canvas, rng: np.random.Generator):
    sky_color = color_temperature_rgb(rng.uniform(6500, 8000))
    zenith = 1.0
    # CIE standard overcast sky: L(theta) = Lz (1 + 2 cos theta) / 3, theta from the zenith
    sky = zenith * (1 + 2 * np.clip(np.sin(c.elevation), 0, 1)) / 3
    # the sun's position shows as a broad brighter patch through the clouds
    patch_dir = _direction_from_angles(
        np.radians(rng.uniform(-180, 180)), np.radians(rng.uniform(20, 60))
    )
    angle = np.arccos(np.clip(c.dirs @ patch_dir, -1, 1))
    sky = sky * (1 + rng.uniform(0.2, 0.6) * np.exp(-0.5 * (angle / np.radians(35)) ** 2))
    up = c.upper()
    c.add_radiance(up * sky, sky_color)
    # ground: Lambertian, lit by the sky's horizontal irradiance
    horizontal = np.sum(up * sky * np.clip(c.dirs[..., 1], 0, None) * c.solid_angle) / np.pi
    c.add_radiance((1 - up) * horizontal, _ground_color(rng) * sky_color)


def _sunny(c: _Canvas, rng: np.random.Generator):
    sun_az, sun_el = rng.uniform(-180, 180), rng.uniform(15, 70)
    sun_dir = _direction_from_angles(np.radians(sun_az), np.radians(sun_el))
    zenith_color = color_temperature_rgb(rng.uniform(12000, 25000))
    horizon_color = color_temperature_rgb(rng.uniform(6500, 9000))
    up = c.upper()
    # clear sky: deep blue overhead, paler and brighter towards the horizon and around the sun
    angle = np.arccos(np.clip(c.dirs @ sun_dir, -1, 1))
    horizon = 1.5 * np.exp(-np.clip(c.elevation, 0, None) / np.radians(12))
    glow = 1 + 2.0 * np.exp(-angle / 0.3)
    sky = up[..., None] * glow[..., None] * (zenith_color + horizon[..., None] * horizon_color)
    sky_strength = rng.uniform(0.12, 0.3)  # the sky's shading next to the sun's 1.0
    horizontal = np.sum(luminance(sky) * np.clip(c.dirs[..., 1], 0, None) * c.solid_angle) / np.pi
    sky = sky * (sky_strength / horizontal)
    c.radiance += sky
    sun_color = color_temperature_rgb(rng.uniform(4800, 5800))
    c.add_area_light(c.disk(sun_az, sun_el, 2.0, softness=0.2), sun_color, 1.0)
    # ground bounce: Lambertian ground lit by the sun and the sky
    sky_horizontal = np.einsum("hwc,hw->c", sky, np.clip(c.dirs[..., 1], 0, None) * c.solid_angle)
    irradiance = np.sin(np.radians(sun_el)) * sun_color + sky_horizontal / np.pi
    c.add_radiance(1 - up, _ground_color(rng) * irradiance)


def _window(c: _Canvas, rng: np.random.Generator):
    side = rng.choice([-1.0, 1.0])
    room_color = color_temperature_rgb(rng.uniform(3000, 4500))
    c.add_radiance(rng.uniform(0.02, 0.05) * (0.8 + 0.2 * np.sin(c.elevation)), room_color)
    az, el = side * rng.uniform(40, 110), rng.uniform(0, 25)
    half_w, half_h = rng.uniform(20, 35), rng.uniform(25, 40)
    window = c.rectangle(az, el, half_w, half_h)
    # daylight through the glass, brighter towards the top of the window
    gradient = 0.7 + 0.3 * _smoothstep(
        np.radians(el - half_h), np.radians(el + half_h), c.elevation
    )
    c.add_area_light(window * gradient, color_temperature_rgb(rng.uniform(5500, 8000)), 1.0)
    # the floor under the window catches some of it
    floor = c.disk(az, -50, half_w + 5, softness=0.6) * (1 - c.upper())
    c.add_radiance(floor * rng.uniform(0.03, 0.08), room_color)


_GENERATORS = {"studio": _studio, "overcast": _overcast, "sunny": _sunny, "window": _window}


def procedural_environment(
    kind: str, resolution: tuple[int, int] = (64, 128), seed: int = 0, rotation_deg: float = 0.0
) -> np.ndarray:
    """A random, physically plausible HDR lighting environment.

    Args:
        kind (`str`): one of `ENVIRONMENT_KINDS`:
            `"studio"`: dim room with a soft key light (front, to one side, above), a larger and
            weaker fill on the other side, and a rim light from behind;
            `"overcast"`: CIE standard overcast sky (zenith 3x the horizon) with a faint bright
            patch where the sun is, over Lambertian ground;
            `"sunny"`: clear blue sky (brighter at the horizon and around the sun), a small sun
            disk of about 2 degrees (widened to 1.5 pixels at low resolution) and ground
            bounce;
            `"window"`: a dim warm room with one large bright window to the left or right.
        resolution (`tuple[int, int]`): `(H, W)` of the equirectangular map (layout in the
            module docstring).
        seed (`int`): light positions, sizes, strengths and colour temperatures.
        rotation_deg (`float`): rotation of the whole environment about +y, right-hand rule
            (light at +z moves towards +x: to the right in the map).

    Returns:
        `np.ndarray` of shape `(H, W, 3)` float32, linear RGB radiance, exposed so that a white
        Lambertian surface at its brightest orientation has shading 1 (from the 9-term SH).
    """
    if kind not in _GENERATORS:
        raise ValueError(f"unknown environment kind {kind!r}; choose from {ENVIRONMENT_KINDS}")
    height, width = (int(r) for r in resolution)
    if height < 8 or width < 16:
        raise ValueError(f"resolution must be at least (8, 16), got {resolution}")
    canvas = _Canvas(height, width, rotation_deg)
    _GENERATORS[kind](canvas, np.random.default_rng(seed))
    env = canvas.radiance
    brightest = luminance(sh_shading(fibonacci_sphere(2048), environment_to_sh(env)))
    return (env / brightest.max()).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def dominant_lights(
    env: np.ndarray, k: int = 3, threshold: float = 0.5, merge_angle_deg: float = 25.0
) -> list[DirectionalLight]:
    """The `k` brightest regions of an environment as directional lights (for specular).

    Greedy: take the brightest remaining pixel (luminance), grow its region to the connected
    pixels (8-neighbours, wrapping around in azimuth) at least `threshold` times as bright, and
    remove the region; repeat. A region whose direction lies within `merge_angle_deg` of a light
    found earlier joins that light (the soft fringe of an area light, a sun's glow), otherwise it
    starts a new light, until there are `k`. A light's direction is that of its regions'
    irradiance vector `integral L(w) w dw` (luminance), its colour the vector's length per channel
    / pi (our light units): the light gives exactly the shading its regions give to any normal
    whose hemisphere holds them (for a small region: its irradiance / pi). The lights are not
    subtracted from the environment: render the diffuse with the whole environment's SH and use
    these lights for the specular only.

    Returns:
        `list[DirectionalLight]` (at most `k`, fewer when the environment runs out of light), most
        energetic first.
    """
    env = _check_environment(env)
    height, width = env.shape[:2]
    dirs = equirect_directions(height, width)
    solid_angle = equirect_solid_angles(height, width)
    work = np.maximum(luminance(env), 0.0)
    eight = np.ones((3, 3), bool)
    cos_merge = np.cos(np.radians(merge_angle_deg))
    found = []  # per light: (3, 3) irradiance vector of each colour channel
    while True:
        peak = np.unravel_index(np.argmax(work), work.shape)
        if work[peak] <= 0:
            break
        above = work >= threshold * work[peak]
        # label three copies side by side so that regions wrapping around the seam stay whole
        labels, _ = ndi.label(np.tile(above, (1, 3)), structure=eight)
        region3 = labels == labels[peak[0], peak[1] + width]
        region = region3[:, :width] | region3[:, width : 2 * width] | region3[:, 2 * width :]
        work[region] = 0.0
        weights = solid_angle * region
        # per-channel irradiance vectors (Arvo): E_c(n) = n . vector_c for any normal that sees
        # the whole region
        vectors = np.einsum("hwc,hwk->ck", env * weights[..., None], dirs)
        lum_vector = luminance(vectors, axis=0)  # (3,): the luminance's irradiance vector
        if np.linalg.norm(lum_vector) <= 1e-12:  # spread evenly over the whole sphere
            continue
        cosines = [_cosine(luminance(v, axis=0), lum_vector) for v in found]
        if cosines and max(cosines) >= cos_merge:
            best = int(np.argmax(cosines))
            found[best] = found[best] + vectors
        elif len(found) < k:
            found.append(vectors)
        else:
            break
    lights = []
    for vectors in found:
        direction = luminance(vectors, axis=0)
        direction = direction / np.linalg.norm(direction)
        lights.append(DirectionalLight(direction, np.maximum(vectors @ direction, 0) / np.pi))
    lights.sort(key=lambda light: -luminance(light.color))
    return lights
