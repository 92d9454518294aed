"""Training pairs for the reflectance networks: synthetic maps rendered into the texture domain.

`make_training_pair(seed)` paints a face's ground-truth maps (`sample_face_maps`), lights the
mean face with them in UV space with the project's skin shader, as a frontal camera about half
a metre away sees it, and converts the result into what the backbone hands the networks:

1. per texel of the UV chart (`UVGeometry`, cached per resolution): the mean face's position,
   shape normal and tangent frame in camera space, the direction to the camera, the baked
   ambient occlusion, the visibility a frontal photo gives;
2. a random procedural environment (`rendering.lights`), randomly rotated, gives the SH light
   for the diffuse and its dominant lights for the specular; camera exposure and white balance
   are drawn around a correct exposure and a partial white balance;
3. `render_uv`: detail normals composed with the shape's tangent frames, `shade_skin` diffuse
   shading (SH x AO) spread under the skin by `subsurface_scattering_uv`, times the albedo, plus
   Blinn-Phong specular from the lights; clipped and sRGB-encoded as a camera would store it;
4. the backbone's completion (`modeling.reconstruction.texture.complete_uv_map` with the
   visibility) and its first-order de-lighting (`modeling.reconstruction.first_order`'s
   `estimate_sh_lighting` and `delight`, with the baked AO divided out as `first_order_maps`
   does).

Splits are disjoint seed ranges (`SPLITS`, `seeds`).

>>> pair = make_training_pair(seeds("train", 1)[0], resolution=256)
>>> pair["texture"].shape, pair["diffuse_albedo"].shape
((256, 256, 3), (256, 256, 3))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from modeling.face_model.topology import NUM_LANDMARKS, load_topology
from modeling.reconstruction.first_order import complete_albedo, delight, estimate_sh_lighting
from modeling.reconstruction.texture import complete_uv_map, skin_mask, uv_atlas
from rendering.color import linear_to_srgb, luminance, srgb_to_linear
from rendering.lights import (
    ENVIRONMENT_KINDS,
    DirectionalLight,
    direction_to_equirect,
    dominant_lights,
    environment_to_sh,
    equirect_directions,
    procedural_environment,
)
from rendering.mesh import (
    decode_normals,
    encode_normals,
    tangent_frames,
    vertex_normals,
    vertex_tangents,
)
from rendering.shading import (
    bake_ambient_occlusion,
    relief_occlusion,
    shade_skin,
    subsurface_scattering_uv,
)
from training.face_layout import texel_size_mm
from training.reflectance_data import sample_face_maps

__all__ = [
    "SPLITS",
    "seeds",
    "split_of",
    "UVGeometry",
    "uv_geometry",
    "render_uv",
    "random_lighting",
    "make_training_pair",
]

# Disjoint seed ranges. "ood" seeds are meant for `ood=True` faces (parameters outside the
# training ranges).
SPLITS = {
    "train": range(0, 1_000_000),
    "val": range(1_000_000, 1_100_000),
    "test": range(2_000_000, 2_100_000),
    "ood": range(3_000_000, 3_100_000),
}
CAMERA_DISTANCE_M = 0.5
_ENV_SIZE = (32, 64)
_GRAZING = (0.15, 0.5)  # cosines between which a frontal photo's visibility ramps up (backbone)


def seeds(split: str, n: int | None = None) -> range:
    """The first `n` seeds (all when `None`) of a split ("train", "val", "test" or "ood")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    r = SPLITS[split]
    if n is None:
        return r
    if not 0 <= n <= len(r):
        raise ValueError(f"split {split!r} has {len(r)} seeds, asked for {n}")
    return r[:n]


def split_of(seed: int) -> str:
    """The split a seed belongs to."""
    for name, r in SPLITS.items():
        if seed in r:
            return name
    raise ValueError(f"seed {seed} is in no split")


@dataclass(frozen=True, eq=False)
class UVGeometry:
    """The mean face seen by a frontal camera, per texel of an R x R UV map (camera space:
    +x right, +y up, the camera at the origin looking down -z; `rendering.camera`).

    Attributes:
        resolution (`int`), texel_size_mm (`float`).
        chart (`(R, R)` bool): texels covered by the mesh; skin (`(R, R)` bool): skin texels.
        positions (`(R, R, 3)`): metres; normals, tangents, bitangents (`(R, R, 3)` unit):
            the shape's tangent frame (+u, +v, out); view_dirs (`(R, R, 3)` unit): towards the
            camera. Outside the chart: the frame (x, y, z) and view (0, 0, 1).
        ao (`(R, R)`): baked ambient occlusion; visibility (`(R, R)`): how well a frontal photo
            sees each texel (the backbone's grazing-angle ramp), 0 outside the chart.
    """

    resolution: int
    texel_size_mm: float
    chart: np.ndarray
    skin: np.ndarray
    positions: np.ndarray
    normals: np.ndarray
    tangents: np.ndarray
    bitangents: np.ndarray
    view_dirs: np.ndarray
    ao: np.ndarray
    visibility: np.ndarray


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@lru_cache(maxsize=1)
def _mean_face() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Camera-space vertices, normals, tangents `(V, 4)` and baked AO of the mean face."""
    topology = load_topology()
    verts = topology.lift(topology.frontal_shape[:NUM_LANDMARKS])
    verts = verts + np.array([0.0, 0.0, -CAMERA_DISTANCE_M])
    normals = vertex_normals(verts, topology.dense_faces)
    tangents = vertex_tangents(verts, topology.dense_faces, topology.dense_uvs, normals)
    ao = bake_ambient_occlusion(verts, topology.dense_faces, normals, num_directions=64)
    return verts, normals, tangents, ao


@lru_cache(maxsize=4)
def uv_geometry(resolution: int) -> UVGeometry:
    """`UVGeometry` of an R x R map (cached; the AO bake happens once per process)."""
    topology = load_topology()
    atlas = uv_atlas(resolution, topology)
    verts, normals, tangents, ao = _mean_face()
    faces = topology.dense_faces
    r = resolution

    def image(values, fill):
        out = np.empty((r * r, values.shape[1]), np.float32)
        out[:] = fill
        out[atlas.texels] = values
        return out.reshape(r, r, -1)

    pos = atlas.interpolate(verts, faces)
    t, b, n = tangent_frames(atlas.interpolate(tangents, faces), atlas.interpolate(normals, faces))
    view = _unit(-pos)
    cos_view = np.sum(n * view, 1)
    lo, hi = _GRAZING
    vis = np.clip((cos_view - lo) / (hi - lo), 0, 1)
    geom = UVGeometry(
        resolution=r,
        texel_size_mm=texel_size_mm(r),
        chart=atlas.chart,
        skin=skin_mask(r, topology),
        positions=image(pos, 0.0),
        normals=image(n, (0.0, 0.0, 1.0)),
        tangents=image(t, (1.0, 0.0, 0.0)),
        bitangents=image(b, (0.0, 1.0, 0.0)),
        view_dirs=image(view, (0.0, 0.0, 1.0)),
        ao=image(atlas.interpolate(ao[:, None], faces), 1.0)[..., 0],
        visibility=image(vis[:, None], 0.0)[..., 0],
    )
    for value in vars(geom).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return geom


def _to_camera(geometry: UVGeometry, normals_tangent: torch.Tensor) -> torch.Tensor:
    """Tangent-space unit normals `(R, R, 3)` -> camera space, on the shape's frames."""
    frame = [torch.from_numpy(np.array(a)).to(normals_tangent) for a in
             (geometry.tangents, geometry.bitangents, geometry.normals)]  # fmt: skip
    n = sum(normals_tangent[..., i : i + 1] * frame[i] for i in range(3))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def render_uv(
    geometry: UVGeometry,
    albedo_linear: torch.Tensor,
    specular_albedo: torch.Tensor,
    diffuse_normals: torch.Tensor,
    specular_normals: torch.Tensor,
    sh_coeffs: np.ndarray | torch.Tensor,
    lights: Sequence[DirectionalLight],
    scattering: bool = True,
    relief_ao: torch.Tensor | None = None,
) -> torch.Tensor:
    """Outgoing radiance of the mean face in UV space (linear RGB), differentiable in the maps.

    Args:
        geometry (`UVGeometry`): per-texel shape, frames and view directions (resolution R).
        albedo_linear (`torch.Tensor` of shape `(R, R, 3)`): diffuse albedo, linear.
        specular_albedo (`torch.Tensor` of shape `(R, R, 1)`).
        diffuse_normals, specular_normals (`torch.Tensor` of shape `(R, R, 3)`): unit,
            tangent space (decoded, not (n + 1) / 2).
        sh_coeffs (`(3, 9)`): radiance SH of the environment (diffuse, with AO).
        lights (sequence of `DirectionalLight`): for the specular only (their energy is in the
            SH already; `rendering.lights.dominant_lights`).
        scattering (`bool`): spread the diffuse shading with `subsurface_scattering_uv`.
        relief_ao (`torch.Tensor` of shape `(R, R)`, optional): the detail relief's own
            occlusion (`rendering.shading.relief_occlusion`), multiplied into the mesh's baked
            AO: it darkens the light reaching pits and furrows before it scatters.

    Returns:
        `torch.Tensor` of shape `(R, R, 3)`, 0 outside the chart.
    """
    nd = _to_camera(geometry, diffuse_normals)
    ns = _to_camera(geometry, specular_normals)
    view = torch.from_numpy(np.array(geometry.view_dirs)).to(nd)
    ao = torch.from_numpy(np.array(geometry.ao)).to(nd)
    if relief_ao is not None:
        ao = ao * relief_ao.to(nd)
    shading, _ = shade_skin(None, 0.0, nd, ns, view, sh_coeffs=sh_coeffs, ao=ao)
    _, specular = shade_skin(None, specular_albedo, nd, ns, view, lights=lights)
    chart = torch.from_numpy(np.array(geometry.chart)).to(nd)
    if scattering:
        shading = subsurface_scattering_uv(
            shading.permute(2, 0, 1)[None], geometry.texel_size_mm, mask=chart[None, None]
        )[0].permute(1, 2, 0)
    return (albedo_linear * shading + specular) * chart[..., None]


def _tilt_environment(env: np.ndarray, pitch_deg: float) -> np.ndarray:
    """Rotate an equirectangular environment about +x by `pitch_deg` (positive tips the
    lights above the face towards the camera)."""
    h, w = env.shape[:2]
    a = np.radians(pitch_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    source = equirect_directions(h, w) @ rot  # rot^T applied to each direction
    px = direction_to_equirect(source, h, w) - 0.5
    return cv2.remap(
        env.astype(np.float32),
        px[..., 0].astype(np.float32),
        px[..., 1].astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_WRAP,
    )


def random_lighting(seed: int, lighting: str = "random") -> dict:
    """A random environment for a training pair.

    Args:
        seed (`int`): lighting seed.
        lighting (`str`): "random" (any kind), one of `rendering.lights.ENVIRONMENT_KINDS`, or
            "uniform" (white, shading 1 everywhere: the albedo itself, for checks).

    Returns:
        `dict` with `kind`, `yaw_deg`, `pitch_deg`, `environment` `(32, 64, 3)`, `sh` `(3, 9)`,
        `lights` (list of `DirectionalLight`).
    """
    rng = np.random.default_rng([int(seed), 7])
    kinds = (*ENVIRONMENT_KINDS, "uniform")
    if lighting == "random":
        kind = str(rng.choice(ENVIRONMENT_KINDS))
    elif lighting in kinds:
        kind = lighting
    else:
        raise ValueError(f"lighting must be 'random' or one of {kinds}, got {lighting!r}")
    # The procedural environments place their lights relative to the camera already (a studio
    # key in front, a window to the side, the sun anywhere); a turn of up to 75 degrees and a
    # tilt vary that without putting the key light behind the head most of the time.
    yaw, pitch = float(rng.uniform(-75, 75)), float(np.clip(rng.normal(0, 10), -25, 25))
    if kind == "uniform":
        env = np.ones((*_ENV_SIZE, 3), np.float32)
        lights = []
    else:
        env = procedural_environment(kind, _ENV_SIZE, int(rng.integers(2**31)), yaw)
        env = _tilt_environment(env, pitch)
        lights = dominant_lights(env, k=3)
    return {
        "kind": kind,
        "yaw_deg": yaw,
        "pitch_deg": pitch,
        "environment": env,
        "sh": environment_to_sh(env),
        "lights": lights,
    }


def _scaled_lights(lights, gains: np.ndarray) -> list[DirectionalLight]:
    return [DirectionalLight(light.direction, light.color * gains) for light in lights]


def first_order_albedo(colors_linear: np.ndarray, geometry: UVGeometry):
    """The backbone's first-order de-lighting of the chart's texels, as
    `modeling.reconstruction.first_order.first_order_maps` does it with a baked AO: the SH light
    is estimated from the colours with the occlusion divided out (weighted by the seen skin), then
    light and occlusion are divided out.

    Args:
        colors_linear (`(N, 3)`): linear RGB of the `geometry.chart` texels, as recorded.
        geometry (`UVGeometry`).
    Returns:
        `(albedo (N, 3) linear, estimated SH light (3, 9))`.
    """
    chart = geometry.chart
    normals, ao = geometry.normals[chart], geometry.ao[chart]
    weights = (geometry.visibility * geometry.skin)[chart]
    light = estimate_sh_lighting(colors_linear / np.maximum(ao, 0.3)[:, None], normals, weights)
    return delight(colors_linear, normals, light, ao=ao), light


@dataclass(frozen=True, eq=False)
class _Exposure:
    """How the pair's camera recorded the radiance.

    Attributes:
        exposure (`float`): the metered exposure times `jitter`.
        jitter (`float`): the random factor around the metered exposure.
        white_balance (`(3,)`): per-channel gains of the (partial) white balance.
        gains (`(3,)` float32): exposure x white balance, what multiplies the radiance.
    """

    exposure: float
    jitter: float
    white_balance: np.ndarray
    gains: np.ndarray


def _render_maps(
    geometry: UVGeometry, maps: dict, light: dict, micro_occlusion: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A face's maps (`sample_face_maps`) lit by `light` (`random_lighting`) in UV space;
    with `micro_occlusion`, the detail height's own occlusion darkens the diffuse light.

    Returns:
        `(albedo_linear, radiance)`, both float32 `(R, R, 3)` linear RGB.
    """
    albedo_lin = srgb_to_linear(maps["diffuse_albedo"])
    relief_ao = None
    if micro_occlusion:
        relief_ao = torch.from_numpy(relief_occlusion(maps["height"], geometry.texel_size_mm))
    with torch.no_grad():
        radiance = render_uv(
            geometry,
            torch.from_numpy(albedo_lin),
            torch.from_numpy(maps["specular_albedo"]),
            torch.from_numpy(decode_normals(maps["diffuse_normals"])),
            torch.from_numpy(decode_normals(maps["specular_normals"])),
            torch.as_tensor(light["sh"], dtype=torch.float32),
            light["lights"],
            relief_ao=relief_ao,
        ).numpy()
    return albedo_lin, radiance


def _draw_exposure(
    radiance: np.ndarray, albedo_linear: np.ndarray, geometry: UVGeometry, rng: np.random.Generator
) -> _Exposure:
    """Camera exposure around "correct" (mean skin shading -> 1) and a partial white balance,
    measured on the well-seen skin of `radiance` `(R, R, 3)` over `albedo_linear` `(R, R, 3)`.
    Draws from `rng`, in this order: the white balance's strength, its per-channel error, the
    exposure jitter."""
    skin = geometry.skin & (geometry.visibility > 0.5)
    shading = radiance[skin] / np.maximum(albedo_linear[skin], 1e-3)
    mean_shading = np.median(shading, axis=0)
    grey = float(luminance(mean_shading))
    balance = (grey / np.maximum(mean_shading, 1e-6)) ** rng.uniform(0.3, 1.0)
    balance = balance * np.exp(rng.normal(0, 0.04, 3))
    # a little under "correct" (0.75), and highlight-protected: the brightest skin lands
    # around 0.95 at most, as a camera's metering keeps a lit face from blowing out
    skin_luminance = luminance(radiance[skin])
    jitter = float(np.exp(rng.normal(0, 0.2)))
    exposure = min(0.75 / max(grey, 1e-6), 0.95 / max(np.percentile(skin_luminance, 98), 1e-6))
    exposure = float(exposure * jitter)
    gains = (exposure * balance).astype(np.float32)
    return _Exposure(exposure=exposure, jitter=jitter, white_balance=balance, gains=gains)


def _backbone_textures(
    recorded: np.ndarray, geometry: UVGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the backbone makes of the recorded UV radiance `recorded` `(R, R, 3)` (linear, in
    [0, 1]): the completed sRGB texture and its completed first-order de-lighting.

    The de-lighting runs on the chart's texels, as `first_order_albedo` (the backbone's
    `first_order_maps` with a baked AO) does on what the camera saw, and the de-lit map is
    completed as the backbone completes it (`complete_albedo`: mirror, pull-push, from the
    seen texels with their highlights capped, the completed skin softened).

    Returns:
        `(texture (R, R, 3) sRGB, delit_albedo (R, R, 3) sRGB, estimated SH light (3, 9))`.
    """
    chart, visibility = geometry.chart, geometry.visibility
    recorded_srgb = linear_to_srgb(recorded)
    texture, _ = complete_uv_map(recorded_srgb, visibility)
    delit_lin, estimated = first_order_albedo(srgb_to_linear(recorded_srgb[chart]), geometry)
    delit = np.zeros_like(texture)
    delit[chart] = linear_to_srgb(delit_lin)
    delit = complete_albedo(delit, visibility, skin_mask(geometry.resolution))
    return texture, delit, estimated


def _shape_normals_map(geometry: UVGeometry) -> np.ndarray:
    """The shape's camera-space normals, (n + 1) / 2, completed beyond the chart without
    mirroring (as the pipeline's `shape_normals`): float32 `(R, R, 3)`."""
    r, chart = geometry.resolution, geometry.chart
    shape = np.zeros((r, r, 3), np.float32)
    shape[chart] = encode_normals(geometry.normals[chart])
    shape, _ = complete_uv_map(shape, chart.astype(np.float32), use_mirror=False)
    return shape


def _recorded_lighting(light: dict, camera: _Exposure, estimated_sh: np.ndarray) -> dict:
    """A pair's `lighting` entry: `light` (`random_lighting`) as the camera recorded it, with
    the backbone's estimate `estimated_sh` `(3, 9)` and the camera's settings."""
    return {
        "kind": light["kind"],
        "yaw_deg": light["yaw_deg"],
        "pitch_deg": light["pitch_deg"],
        "sh": light["sh"] * camera.gains[:, None],
        "lights": _scaled_lights(light["lights"], camera.gains),
        "estimated_sh": estimated_sh,
        "exposure": camera.exposure,
        "exposure_jitter": camera.jitter,
        "white_balance": camera.white_balance.astype(np.float32),
    }


def _channel(x) -> np.ndarray:
    """`(R, R)` -> float32 `(R, R, 1)`."""
    return np.asarray(x, np.float32)[..., None]


def make_training_pair(
    seed: int,
    resolution: int = 256,
    lighting: str = "random",
    ood: bool = False,
    micro_occlusion: bool = False,
) -> dict:
    """One (texture with baked light -> reflectance maps) pair, rendered in UV space.

    Args:
        seed (`int`): the face and its lighting (see `SPLITS` for the split's seeds).
        resolution (`int`): R, 64..4096.
        lighting (`str`): as `random_lighting`.
        ood (`bool`): out-of-distribution face parameters (`sample_face_maps`).
        micro_occlusion (`bool`): darken the diffuse light by the detail relief's own
            occlusion (`rendering.shading.relief_occlusion`); off for the networks' training
            pairs (`bench.normals_limits` measures what it changes).

    Returns:
        `dict` of float32 maps `(R, R, C)` (row 0 = v ~ 1) and metadata:

        - network inputs: `texture` (sRGB, light baked in, completed as the backbone
          completes it), `delit_albedo` (sRGB, the backbone's first-order de-lighting of
          `texture`), `shape_normals` (object = camera space, (n + 1) / 2, as the pipeline's
          `shape_normals`), `ao` `(R, R, 1)`, `visibility` `(R, R, 1)`;
        - targets: `diffuse_albedo` (sRGB), `specular_albedo` `(R, R, 1)`, `diffuse_normals`,
          `specular_normals` (tangent space, (n + 1) / 2), `height` `(R, R, 1)` (mm);
        - `mask` `(R, R, 1)`: the UV chart (1) vs the filled margin (0); `skin` `(R, R, 1)`;
        - `lighting` (`dict`): `kind`, `yaw_deg`, `pitch_deg`, `sh` `(3, 9)` and `lights` as the
          camera recorded them (exposure and white balance applied), `estimated_sh` (the
          backbone's estimate), `exposure`, `exposure_jitter` (its random factor around the
          metered exposure: what no method can tell from the texture), `white_balance` `(3,)`;
        - `params` (`dict`): the face's parameters.
    """
    geometry = uv_geometry(int(resolution))
    maps = sample_face_maps(seed, geometry.resolution, ood=ood)
    light = random_lighting(seed, lighting)
    rng = np.random.default_rng([int(seed), 11])
    albedo_linear, radiance = _render_maps(geometry, maps, light, micro_occlusion)
    camera = _draw_exposure(radiance, albedo_linear, geometry, rng)
    recorded = np.clip(radiance * camera.gains, 0, 1)
    texture, delit, estimated_sh = _backbone_textures(recorded, geometry)
    return {
        "texture": texture,
        "delit_albedo": delit,
        "shape_normals": _shape_normals_map(geometry),
        "ao": _channel(geometry.ao),
        "visibility": _channel(geometry.visibility),
        "diffuse_albedo": maps["diffuse_albedo"],
        "specular_albedo": maps["specular_albedo"],
        "diffuse_normals": maps["diffuse_normals"],
        "specular_normals": maps["specular_normals"],
        "height": _channel(maps["height"]),
        "mask": _channel(geometry.chart),
        "skin": _channel(geometry.skin),
        "lighting": _recorded_lighting(light, camera, estimated_sh),
        "params": maps["params"],
    }
