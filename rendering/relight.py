"""Relit previews: the reconstructed face rendered with our skin shader under new lighting.

`relight(output, "studio")` renders an `AvatarPipelineOutput` (mesh + diffuse albedo + whatever
specular maps it has) under a procedural environment (`rendering.lights`), from the photo's
camera or from a camera orbiting the head (`yaw_degrees`, e.g. 35 for a 3/4 view):

- diffuse: `albedo x SH shading` of the whole environment, darkened by ambient occlusion baked on
  the mesh (`bake_ambient_occlusion`);
- specular: normalised Blinn-Phong from the environment's dominant lights (`dominant_lights`),
  with the output's `specular_albedo` map (linear, the shader's units, as the reflectance
  networks make it) or a constant 0.3 when it has none, and its `specular_normals` /
  `diffuse_normals` maps (tangent space on the mesh's smooth MikkTSpace frame, as the GLB's
  TANGENT: `rendering.mesh.vertex_tangents`; (n+1)/2) when present, else the mesh's smooth
  normals.

The environment is fixed to the photo's camera frame (`rendering.lights`' equirectangular layout:
a light in the right half of the map lights the right of the photo), so orbiting the camera shows
the same lighting from another side. No subsurface scattering and no cast shadows from the
lights: this is a preview, not a production render.

>>> image = relight(out, "sunny", yaw_degrees=35)  # (512, 512, 3) float32 sRGB in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from rendering.camera import PinholeCamera
from rendering.color import linear_to_srgb, srgb_to_linear
from rendering.lights import (
    ENVIRONMENT_KINDS,
    dominant_lights,
    environment_to_sh,
    procedural_environment,
)
from rendering.mesh import from_tangent_space, vertex_tangents
from rendering.render import rasterize_view, sample_uv_map
from rendering.shading import (
    SKIN_SHININESS,
    bake_ambient_occlusion,
    blinn_phong_specular,
    shade_skin,
)

__all__ = [
    "ENVIRONMENT_KINDS",
    "PreviewViews",
    "RelightScene",
    "prepare_previews",
    "prepare_scene",
    "relight",
    "relight_previews",
    "shade_previews",
]

DEFAULT_SPECULAR_ALBEDO = 0.3
BACKGROUND = 0.18  # sRGB grey behind the face
THREE_QUARTER_YAW = 35.0
PROFILE_YAW = 90.0
# Seeds of the procedural environments, picked so that each preview has a distinct, flattering
# key light (the generators randomise its side and height).
_SEEDS = {"studio": 6, "overcast": 2, "sunny": 0, "window": 6}
_FILL = 1.0  # the head's bounding sphere covers this fraction of the image width


@dataclass(frozen=True)
class RelightScene:
    """What every preview of one reconstruction shares, prepared once by `prepare_scene`.

    Attributes (world = the photo's camera space, metres):
        vertices, normals (`(V, 3)`), tangents (`(V, 4)`: xyz + bitangent sign): world frame.
        faces (`(F, 3)` int32), uvs (`(V, 2)`).
        ao (`(V,)`): ambient occlusion, 1 = open.
        albedo (`(R, R, 3)`): diffuse albedo, linear.
        specular (`(R, R, C)` linear, or a float).
        specular_normals, diffuse_normals (`(R, R, 3)` tangent space in [-1, 1], or `None`).
        centre (`(3,)`), radius (`float`): the head's bounding sphere.
        eyes (`EyeParts` or `None`): the eyeballs (their own texture) and the teeth of a full
            head, glossy.

    With a full head (`output.head`), the skin and the mouth bag (which share the maps' UV
    layout) are `vertices` ... `ao`; the eyeballs are rendered with them, glossy, unlit by the
    normal maps.
    """

    vertices: np.ndarray
    normals: np.ndarray
    tangents: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    ao: np.ndarray
    albedo: np.ndarray
    specular: np.ndarray | float
    specular_normals: np.ndarray | None
    diffuse_normals: np.ndarray | None
    centre: np.ndarray
    radius: float
    eyes: EyeParts | None = None


@dataclass(frozen=True)
class EyeParts:
    """Eyeballs in the scene's world frame: `vertices`, `normals` `(V, 3)`, `faces` `(F, 3)`,
    `uvs` `(V, 2)`, `albedo` `(S, S, 3)` linear."""

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    albedo: np.ndarray


EYE_SPECULAR_ALBEDO = 0.6  # a wet cornea: a sharp, bright highlight


def _as_float_map(value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    return array[..., None] if array.ndim == 2 else array


def _tangent_normal_map(maps: dict, key: str) -> np.ndarray | None:
    if key not in maps:
        return None
    return _as_float_map(maps[key])[..., :3] * 2.0 - 1.0


def prepare_scene(output, ao_directions: int = 64) -> RelightScene:
    """Mesh in the photo's camera frame, baked AO and linear maps of an `AvatarPipelineOutput`
    (numpy or PIL maps)."""
    camera, head = output.camera, getattr(output, "head", None)
    rotation = np.asarray(camera.rotation, np.float64)
    parts = [output.mesh] if head is None else [output.mesh, head.mouth]
    starts = np.cumsum([0] + [len(p.vertices) for p in parts])
    vertices_obj = np.concatenate([np.asarray(p.vertices, np.float64) for p in parts])
    normals_obj = np.concatenate([np.asarray(p.normals, np.float64) for p in parts])
    faces = np.concatenate([np.asarray(p.faces) + s for p, s in zip(parts, starts, strict=False)])
    faces = faces.astype(np.int32)
    uvs = np.concatenate([np.asarray(p.uvs, np.float64) for p in parts])
    tangents = vertex_tangents(vertices_obj, faces, uvs, normals_obj)
    vertices = camera.object_to_camera(vertices_obj)
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    maps = output.maps
    specular = (
        _as_float_map(maps["specular_albedo"])  # linear already: the shader's own units
        if "specular_albedo" in maps
        else DEFAULT_SPECULAR_ALBEDO
    )
    return RelightScene(
        vertices=vertices,
        normals=normals_obj @ rotation.T,
        tangents=np.concatenate([tangents[:, :3] @ rotation.T, tangents[:, 3:]], axis=1),
        faces=faces,
        uvs=uvs,
        ao=bake_ambient_occlusion(vertices_obj, faces, normals_obj, num_directions=ao_directions),
        albedo=srgb_to_linear(_as_float_map(maps["diffuse_albedo"])[..., :3]),
        specular=specular,
        specular_normals=_tangent_normal_map(maps, "specular_normals"),
        diffuse_normals=_tangent_normal_map(maps, "diffuse_normals"),
        centre=centre,
        radius=float(np.linalg.norm(vertices - centre, axis=1).max()),
        eyes=None if head is None else _eye_parts(head, camera),
    )


def _eye_parts(head, camera: PinholeCamera) -> EyeParts:
    """The eyeballs and, when the head has them, the teeth as one textured part: the teeth's
    single colour is a strip appended to the right of the eye texture, their UVs its centre."""
    eyes = head.eyes
    texture = _as_float_map(head.eye_texture if head.eye_texture is not None
                            else np.full((4, 4, 3), 0.8))[..., :3]  # fmt: skip
    parts = [(eyes, np.asarray(eyes.uvs, np.float64))]
    teeth = getattr(head, "teeth", None)
    if teeth is not None:
        size, strip = texture.shape[0], 8
        colour = np.asarray(head.teeth_colour, np.float32)
        texture = np.concatenate([texture, np.broadcast_to(colour, (size, strip, 3))], axis=1)
        squeeze = texture.shape[0] / texture.shape[1]
        parts = [(eyes, np.asarray(eyes.uvs, np.float64) * [squeeze, 1])]
        centre = np.array([1 - 0.5 * strip / texture.shape[1], 0.5])
        parts.append((teeth, np.broadcast_to(centre, (len(teeth.vertices), 2))))
    starts = np.cumsum([0] + [len(p.vertices) for p, _ in parts])
    return EyeParts(
        vertices=camera.object_to_camera(
            np.concatenate([np.asarray(p.vertices, np.float64) for p, _ in parts])
        ),
        normals=np.concatenate([np.asarray(p.normals, np.float64) for p, _ in parts])
        @ np.asarray(camera.rotation).T,
        faces=np.concatenate(
            [np.asarray(p.faces) + s for (p, _), s in zip(parts, starts, strict=False)]
        ).astype(np.int32),
        uvs=np.concatenate([uv for _, uv in parts]),
        albedo=srgb_to_linear(np.ascontiguousarray(texture)),
    )


def _view(scene: RelightScene, yaw_degrees: float, size: int):
    """Camera orbiting the head centre from the photo's camera position (the origin) by `yaw`
    about +y (positive: towards +x, the viewer's right), looking at the centre, framing the
    head. Returns (camera, its position in world, world -> view rotation)."""
    a = np.radians(yaw_degrees)
    orbit = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    position = scene.centre + orbit @ (-scene.centre)
    forward = scene.centre - position
    distance = float(np.linalg.norm(forward))
    forward /= distance
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    world_to_view = np.stack([right, up, -forward])
    half_angle = np.arcsin(min(scene.radius / distance, 0.99))
    focal = _FILL * (size / 2) / np.tan(half_angle)
    camera = PinholeCamera(focal, focal, size / 2, size / 2, size, size)
    return camera, position, world_to_view


def _environment(environment) -> np.ndarray:
    if isinstance(environment, str):
        if environment not in ENVIRONMENT_KINDS:
            raise ValueError(
                f"unknown environment {environment!r}; choose from {ENVIRONMENT_KINDS} "
                "or pass an (H, W, 3) equirectangular map"
            )
        return procedural_environment(environment, seed=_SEEDS[environment])
    env = np.asarray(environment, np.float32)
    if env.ndim != 3 or env.shape[2] != 3:
        raise ValueError(f"environment map must be (H, W, 3), got shape {env.shape}")
    return env


@dataclass(frozen=True)
class _ViewSurface:
    """What one view of a scene shows, whatever the lighting: the image's `mask` `(H, W)` and,
    per covered pixel (`N` of them), the unit normals bent by the diffuse and specular normal
    maps `n_diffuse`, `n_specular` `(N, 3)`, the unit directions to the camera `view_dirs`
    `(N, 3)`, `ao` `(N,)`, the linear `albedo` `(N, 3)` and `specular` albedo `(N, 1)`."""

    mask: np.ndarray
    n_diffuse: torch.Tensor
    n_specular: torch.Tensor
    view_dirs: torch.Tensor
    ao: torch.Tensor
    albedo: torch.Tensor
    specular: torch.Tensor


def _tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _surface(scene: RelightScene, yaw_degrees: float, size: int) -> _ViewSurface:
    """Rasterize and texture one view of `scene` (`relight`'s camera)."""
    camera, position, world_to_view = _view(scene, yaw_degrees, size)
    eyes = scene.eyes
    vertices, faces, uvs, normals_v = scene.vertices, scene.faces, scene.uvs, scene.normals
    tangents_v, ao_v = scene.tangents, scene.ao
    if eyes is not None:  # rasterized with the skin (depth), shaded with their own texture
        n_eye = len(eyes.vertices)
        faces = np.concatenate([faces, eyes.faces + len(vertices)])
        vertices = np.concatenate([vertices, eyes.vertices])
        uvs = np.concatenate([uvs, eyes.uvs])
        normals_v = np.concatenate([normals_v, eyes.normals])
        tangents_v = np.concatenate([tangents_v, np.tile([1.0, 0, 0, 1], (n_eye, 1))])
        ao_v = np.concatenate([ao_v, np.ones(n_eye)])
    raster = rasterize_view(camera, (vertices - position) @ world_to_view.T, faces)
    mask = raster.mask

    def interpolate(attr):
        return raster.interpolate(attr, faces).astype(np.float64)

    uv = interpolate(uvs).astype(np.float32)
    normals = interpolate(normals_v)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    tangents = interpolate(tangents_v)
    positions = interpolate(vertices)
    ao = interpolate(ao_v[:, None])[:, 0]
    view_dirs = position - positions
    view_dirs /= np.linalg.norm(view_dirs, axis=1, keepdims=True)
    on_eye = raster.face_ids[mask] >= len(scene.faces)
    on_skin = ~on_eye

    def bent(normal_map):  # the smooth normals bent by a tangent-space normal map (skin only)
        out = normals.copy()
        if normal_map is not None and on_skin.any():
            out[on_skin] = from_tangent_space(
                sample_uv_map(normal_map, uv[on_skin]), tangents[on_skin], normals[on_skin]
            )
        return out

    n_diffuse, n_specular = bent(scene.diffuse_normals), bent(scene.specular_normals)
    albedo = np.zeros((len(uv), 3), np.float32)
    specular = np.full((len(uv), 1), EYE_SPECULAR_ALBEDO, np.float32)
    if on_skin.any():
        albedo[on_skin] = sample_uv_map(scene.albedo, uv[on_skin])
        if isinstance(scene.specular, np.ndarray):
            specular[on_skin] = sample_uv_map(scene.specular, uv[on_skin]).reshape(-1, 1)
        else:
            specular[on_skin] = scene.specular
    if on_eye.any():
        albedo[on_eye] = sample_uv_map(eyes.albedo.astype(np.float32), uv[on_eye])
    return _ViewSurface(
        mask=mask,
        n_diffuse=_tensor(n_diffuse),
        n_specular=_tensor(n_specular),
        view_dirs=_tensor(view_dirs),
        ao=_tensor(ao),
        albedo=_tensor(albedo),
        specular=torch.from_numpy(specular),
    )


def _shade(surface: _ViewSurface, sh_coeffs: np.ndarray, lights: list) -> np.ndarray:
    """`surface` lit by an environment's SH (`environment_to_sh`) and dominant lights
    (`dominant_lights`) over the grey background: `(H, W, 3)` sRGB."""
    image = np.full((*surface.mask.shape, 3), BACKGROUND, np.float32)
    if not surface.mask.any():
        return image
    with torch.no_grad():
        # Diffuse from the whole environment's SH; the dominant lights give only the specular
        # (passing them to the diffuse too would count the key light twice).
        diffuse, _ = shade_skin(
            surface.albedo,
            0.0,
            surface.n_diffuse,
            surface.n_specular,
            surface.view_dirs,
            sh_coeffs=sh_coeffs,
            ao=surface.ao,
        )
        highlight = blinn_phong_specular(  # shade_skin's specular term, without its diffuse
            surface.n_specular,
            surface.view_dirs,
            lights,
            surface.specular,
            SKIN_SHININESS,
        )
    image[surface.mask] = linear_to_srgb((diffuse + highlight).numpy())
    return image


def relight(
    output, environment_kind="studio", yaw_degrees: float = 0.0, size: int = 512
) -> np.ndarray:
    """Render a reconstruction under a lighting environment.

    Args:
        output (`AvatarPipelineOutput` or `RelightScene`): pass a `prepare_scene` result to
            render several previews without re-baking the occlusion.
        environment_kind (`str` or `np.ndarray`): one of `ENVIRONMENT_KINDS` (`"studio"`,
            `"overcast"`, `"sunny"`, `"window"`; a fixed seed each), or an `(H, W, 3)`
            equirectangular linear HDR map in the photo's camera frame (`rendering.lights`).
        yaw_degrees (`float`): orbit of the camera about the head, 0 = the photo's viewpoint,
            positive towards the viewer's right.
        size (`int`): width and height of the image in pixels.

    Returns:
        `np.ndarray` `(size, size, 3)` float32, sRGB-encoded in [0, 1], the face over a grey
        background.
    """
    scene = output if isinstance(output, RelightScene) else prepare_scene(output)
    env = _environment(environment_kind)
    return _shade(
        _surface(scene, yaw_degrees, int(size)), environment_to_sh(env), dominant_lights(env)
    )


@dataclass(frozen=True)
class PreviewViews:
    """What `relight_previews` draws, all but the shading: `surfaces` (yaw -> `_ViewSurface`,
    each view rasterized and textured once), `lightings` (kind -> (SH coefficients, dominant
    lights), each environment analysed once) and `shots` (`[(kind, yaw, caption)]`, in order).
    """

    surfaces: dict
    lightings: dict
    shots: list


def prepare_previews(output, kinds=ENVIRONMENT_KINDS, yaws=None, size: int = 512) -> PreviewViews:
    """`relight_previews` up to the shading (AO baked once, each yaw's view rasterized and
    textured once, each environment analysed once). numpy and numba only, no torch: it can run
    beside other work without slowing torch's parallel ops (`shade_previews` does those)."""
    scene = prepare_scene(output)
    surfaces, lightings, shots = {}, {}, []
    for i, kind in enumerate(kinds):
        env = _environment(kind)
        lightings[kind] = (environment_to_sh(env), dominant_lights(env))
        kind_yaws = yaws
        if kind_yaws is None:
            profile = (PROFILE_YAW,) if scene.eyes is not None and i == 0 else ()
            kind_yaws = (0.0, THREE_QUARTER_YAW, *profile)
        for yaw in kind_yaws:
            if yaw not in surfaces:
                surfaces[yaw] = _surface(scene, yaw, int(size))
            view = "photo view" if yaw == 0 else f"{yaw:g}° view"
            shots.append((kind, yaw, f"{kind}, {view}"))
    return PreviewViews(surfaces=surfaces, lightings=lightings, shots=shots)


def shade_previews(views: PreviewViews) -> list[tuple[Image.Image, str]]:
    """`[(image, caption)]`: each of `views`' shots shaded (`relight_previews`' images)."""
    previews = []
    for kind, yaw, caption in views.shots:
        image = _shade(views.surfaces[yaw], *views.lightings[kind])
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        previews.append((Image.fromarray(pixels), caption))
    return previews


def relight_previews(
    output,
    kinds=ENVIRONMENT_KINDS,
    yaws=None,
    size: int = 512,
) -> list[tuple[Image.Image, str]]:
    """`[(image, caption)]` for every environment kind and camera yaw (AO baked once, each
    yaw's view rasterized and textured once, then shaded under every kind); by default the
    photo's view and a 3/4 view, and for a full head also a profile under the first kind (one
    more image, not one per kind). `shade_previews(prepare_previews(...))`."""
    return shade_previews(prepare_previews(output, kinds, yaws, size))
