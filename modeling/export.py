"""Write the reconstruction to files a 3D artist can open: GLB (glTF 2.0 PBR), OBJ + MTL + PNG
maps, camera JSON, and a zip of all of them.

Inputs follow the conventions in `rendering/camera.py`: vertices in metres with +y up (as glTF
and Blender's importers expect), faces counter-clockwise seen from outside, UVs with the origin
at the bottom-left (OBJ), UV images stored with the top row at v = 1, and tangent-space normal
maps encoded as (n + 1) / 2 with +y up (OpenGL, as glTF and Blender use).

glTF puts the UV origin at the top-left; trimesh writes v' = 1 - v on export (and undoes it on
load), so the images are written unflipped. `tests/test_export.py` checks this against the
glTF rule itself, not only against trimesh's round trip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import threading
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import trimesh
from PIL import Image

if TYPE_CHECKING:
    from modeling.face_model.head import HeadMesh, MeshPart
    from rendering.camera import PinholeCamera

# Blender reads `map_Bump`/`bump` as a tangent-space normal map (strength from `-bm`); `norm` is
# the PBR-extension key other tools read. Both point at the same file.
_BASE_COLOR_KEYS = ("diffuse_albedo", "texture")
# The IOR whose normal-incidence reflectance ((n - 1) / (n + 1))^2 is 1/2: (1 + sqrt(1/2)) /
# (1 - sqrt(1/2)). Blender's F0 is 2 * Specular IOR Level * F0(IOR), so the MTL's Ni set to it
# makes its F0 the map_Ks value itself.
_IOR_HALF_REFLECTANCE = (1 + 0.5**0.5) / (1 - 0.5**0.5)
_NORMAL_KEYS = ("specular_normals", "shape_normals_tangent")
_MAP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# PNGs as OpenCV writes them when not given IMWRITE_PNG_COMPRESSION: libpng's Sub row filter
# alone and zlib level 1 (given a level, libpng tries all five filters on every row). On
# skimage's astronaut's 1024 px maps that encodes 1.7x faster than level 1 with every filter and
# 3x faster than Pillow's level 3, for files 10 % larger than the latter. Smooth maps: zlib
# matching runs only (Z_RLE, OpenCV's default). Dithered 8-bit textures: zlib's default
# matching, which their pixel noise needs (runs make them 3x larger).
_PNG_PARAMS = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
_PNG_PARAMS_DITHERED = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT]
# Already-compressed files are stored in the zip as they are; deflating them again is slow.
_STORED_SUFFIXES = {".png", ".glb", ".jpg", ".jpeg", ".zip"}
# The others (the OBJ's text, JSON) at zlib level 1: the 1.8 MB OBJ of a 1024 px face deflates in
# 17 ms instead of level 6's 74 ms, to 0.53 MB instead of 0.45.
_ZIP_LEVEL = 1

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = b"JSON"
_CHUNK_BIN = b"BIN\x00"


# 8x8 ordered-dither (Bayer) thresholds, in [0, 64)
_BAYER8 = np.array([[0, 32, 8, 40, 2, 34, 10, 42], [48, 16, 56, 24, 50, 18, 58, 26],
                    [12, 44, 4, 36, 14, 46, 6, 38], [60, 28, 52, 20, 62, 30, 54, 22],
                    [3, 35, 11, 43, 1, 33, 9, 41], [51, 19, 59, 27, 49, 17, 57, 25],
                    [15, 47, 7, 39, 13, 45, 5, 37], [63, 31, 55, 23, 61, 29, 53, 21]])  # fmt: skip


def to_uint8(image: np.ndarray, dither: bool = False) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (clipped, rounded); uint8 passes through unchanged.

    Args:
        image (`np.ndarray` of shape `(H, W, C)` or `(H, W)`): float or uint8.
        dither (`bool`): round with an 8x8 ordered dither instead of to the nearest step, so
            that a map whose variations are smaller than an 8-bit step (the detail normals, the
            specular albedo) keeps them on average over a few texels, as a texture filter
            averages them (on skimage's astronaut's 1024 px specular normals, blurred by 1 texel:
            0.20° from the float map rounded, 0.02° dithered). Deterministic.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected a float image in [0, 1] or uint8, got dtype {image.dtype}")
    # in place where the values allow it: one float temporary per map (4K maps: 0.2-0.4 GB each)
    scaled = _finite(image).clip(0.0, 1.0)
    scaled *= 255.0
    if not dither:
        return np.round(scaled, out=scaled).astype(np.uint8)
    h, w = image.shape[:2]
    threshold = (np.tile(_BAYER8, (h // 8 + 1, w // 8 + 1))[:h, :w] + 0.5) / 64.0
    if image.ndim == 3:
        threshold = threshold[:, :, None]
    summed = np.add(scaled, threshold)  # in the threshold's float64, as before
    del scaled
    return np.clip(np.floor(summed, out=summed), 0, 255, out=summed).astype(np.uint8)


def to_pil(image: np.ndarray, rgb: bool = False, dither: bool = False) -> Image.Image:
    """`(H, W)` or `(H, W, C)` with C in 1, 3, 4 -> PIL image (`rgb`: grey expands to RGB;
    `dither`: see `to_uint8`)."""
    pixels = _pixels8(image, rgb, dither)
    mode = "L" if pixels.ndim == 2 else "RGB" if pixels.shape[2] == 3 else "RGBA"
    return Image.fromarray(pixels, mode=mode)


def _pixels8(image: np.ndarray, rgb: bool = False, dither: bool = False) -> np.ndarray:
    """`to_pil`'s pixels: `(H, W)` or `(H, W, 3 or 4)` uint8, C-contiguous."""
    pixels = _grey_or_colour(to_uint8(image, dither))
    if pixels.ndim == 2 and rgb:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels)


def _pixels16(image: np.ndarray) -> np.ndarray:
    """`(H, W)` or `(H, W, C)` float in [0, 1], C in 1, 3, 4 -> `(H, W)` or `(H, W, 3 or 4)`
    uint16 (rounded to the nearest of 65535 steps)."""
    image = _grey_or_colour(_finite(np.asarray(image)))
    scaled = np.clip(image, 0.0, 1.0)  # the one float temporary: scaled and rounded in place
    scaled *= 65535.0
    return np.round(scaled, out=scaled).astype(np.uint16)


def _finite(image: np.ndarray) -> np.ndarray:
    """`image`, refused if it holds NaN or infinite values."""
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or infinite values")
    return image


def _grey_or_colour(image: np.ndarray) -> np.ndarray:
    """`(H, W)` or `(H, W, 1)` -> `(H, W)`; `(H, W, 3 or 4)` as it is; any other shape refused."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2 and (image.ndim != 3 or image.shape[2] not in (3, 4)):
        raise ValueError(
            f"expected an image of shape (H, W, C) with C in 1, 3, 4; got {image.shape}"
        )
    return image


def _swap_red_blue(pixels: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A) (OpenCV's order) of `(H, W, 3 or 4)` pixels."""
    return pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]


def png_bytes(pixels: np.ndarray, dithered: bool = False) -> bytes:
    """A lossless PNG of `pixels` (`(H, W)` grey or `(H, W, 3 or 4)` RGB(A), uint8 or uint16:
    8- or 16-bit), encoded as `_PNG_PARAMS` says (`dithered`: pixels with noise in the lowest
    bits, `_PNG_PARAMS_DITHERED`). OpenCV's encoder releases the GIL: threads encode in
    parallel."""
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    pixels = np.ascontiguousarray(_grey_or_colour(pixels))
    if pixels.ndim == 3:  # OpenCV's channel order (one pass, where numpy's indexing takes two)
        to_bgr = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        pixels = cv2.cvtColor(pixels, to_bgr)
    params = _PNG_PARAMS_DITHERED if dithered else _PNG_PARAMS
    ok, encoded = cv2.imencode(".png", pixels, params)
    if not ok:
        raise ValueError(f"could not encode a PNG of {pixels.dtype} pixels {pixels.shape}")
    return encoded.tobytes()


def write_png(path, image) -> Path:
    """Write `image` (a PIL image in mode L, RGB or RGBA, or `png_bytes`' pixels) as a PNG at
    `path` (`png_bytes`' encoding: the same pixels as `image.save(path)`, faster)."""
    if isinstance(image, Image.Image) and image.mode not in ("L", "RGB", "RGBA"):
        raise ValueError(f"expected a PIL image in mode L, RGB or RGBA, got {image.mode}")
    path = Path(path)
    path.write_bytes(png_bytes(np.asarray(image)))
    return path


_POOL_THREAD = threading.local()


def in_threads(tasks: Iterable[Callable[[], object]]) -> list:
    """Run `tasks` (no-argument callables) in a pool of one thread per CPU this process may
    use; their results in order. The file writers' heavy parts (PNG encoding, zlib, numpy)
    release the GIL. Called from one of the pool's own threads (a writer whose parts are
    writers too) it runs them one after the other: one pool at a time, so at most one map's
    encoding buffers per CPU at once (at 4096 px the nested pools held ~6 maps' worth, 2.8 GB)."""
    tasks = list(tasks)
    if len(tasks) <= 1 or getattr(_POOL_THREAD, "inside", False):
        return [task() for task in tasks]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def run(task):
        _POOL_THREAD.inside = True
        return task()

    with ThreadPoolExecutor(max_workers=min(len(tasks), cpus or 1)) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        return [future.result() for future in futures]


def _shader_shininess(shininess: float | None) -> float:
    """`shininess`, or the skin shader's when None (imported here: `rendering.shading` pulls
    torch, which importing this module should not)."""
    if shininess is None:
        from rendering.shading import SKIN_SHININESS

        shininess = SKIN_SHININESS
    if not shininess > 0:
        raise ValueError(f"shininess must be positive, got {shininess}")
    return float(shininess)


def roughness_from_shininess(shininess: float | None = None) -> float:
    """glTF roughness of the GGX lobe equivalent to the shader's Blinn-Phong exponent `s`.

    The normalised Blinn-Phong distribution `(s + 2) / (2 pi) (n.h)^s` and GGX with
    `alpha^2 = 2 / (s + 2)` have the same peak `1 / (pi alpha^2)` (Walter et al. 2007's
    equivalence, the one `rendering.shading.SKIN_SHININESS` is chosen by); glTF's
    `alpha = roughness^2`, so `roughness = (2 / (s + 2))^(1/4)`: 0.549 for skin's s = 20.
    `shininess` defaults to the skin shader's.
    """
    return (2.0 / (_shader_shininess(shininess) + 2.0)) ** 0.25


def specular_reflectance(specular_albedo, shininess: float | None = None) -> np.ndarray:
    """The shader's specular albedo `k_s` -> the reflectance `F` of the equivalent GGX lobe,
    `F = k_s (s + 8) / (s + 2)`, clipped to [0, 1] (float32, the input's shape).

    Seen head-on (n = v = l) our BRDF `k_s (s + 8) / (8 pi) (n.h)^s` is `k_s (s + 8) / (8 pi)`
    and glTF's `F D V` is `F / (4 pi alpha^2) = F (s + 2) / (8 pi)` (`D = 1 / (pi alpha^2)`,
    `V = 1 / 4`, alpha from `roughness_from_shininess`): equal for this `F`. Our shader has no
    Fresnel term, so `F` is the reflectance at every angle (glTF's F0 and F90 alike).
    """
    s = _shader_shininess(shininess)
    k_s = _finite(np.asarray(specular_albedo, dtype=np.float32))
    return np.clip(k_s * np.float32((s + 8.0) / (s + 2.0)), 0.0, 1.0)


def _unit_float(image) -> np.ndarray:
    """uint8 -> float32 / 255; float -> float32, refused if not finite."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return _finite(image).astype(np.float32)


def _one_channel(name: str, image) -> np.ndarray:
    """`(H, W)` or `(H, W, 1)` -> `(H, W)` float32; anything else refused."""
    image = _unit_float(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 1), got {image.shape}")
    return image


def _resized(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if image.shape[:2] == shape[:2]:
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _base_color_under_specular(base_color, reflectance: np.ndarray) -> np.ndarray:
    """The base colour whose diffuse under glTF's specular layer is our diffuse albedo.

    glTF's dielectric weights the diffuse by `1 - F` (`fresnel_mix`; with `F0 = F90 = F` that
    is `1 - F` at every angle); our shader adds the specular on top of `albedo / pi`. So the
    base colour is `albedo / (1 - F)` in linear RGB (clipped to 1; alpha kept).
    """
    from rendering.color import linear_to_srgb, srgb_to_linear  # torch-free import, as above

    pixels = _grey_or_colour(_unit_float(base_color))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    keep = np.maximum(1.0 - _resized(reflectance, pixels.shape), 1e-3)[:, :, None]
    rgb = linear_to_srgb(srgb_to_linear(pixels[:, :, :3]) / keep)
    return np.concatenate([rgb, pixels[:, :, 3:]], axis=2)


def _check_mesh(vertices, faces, uvs, vertex_normals):
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    uvs = np.asarray(uvs, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be integers of shape (F, 3), got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("faces index vertices out of range")
    if uvs.shape != (len(vertices), 2):
        raise ValueError(f"uvs must have shape ({len(vertices)}, 2), got {uvs.shape}")
    if vertex_normals is not None:
        vertex_normals = np.asarray(vertex_normals, dtype=np.float64)
        if vertex_normals.shape != vertices.shape:
            raise ValueError(
                f"vertex_normals must have shape {vertices.shape}, got {vertex_normals.shape}"
            )
    return vertices, faces.astype(np.int64), uvs, vertex_normals


def _with_tangents(vertices, faces, uvs, normals):
    """The mesh with MikkTSpace tangents `(V', 4)` for its (given, else area-weighted) unit
    normals, split where a vertex's corners differ in handedness (`split_tangent_seams`), and
    `source` `(V',)`: the input vertex each output vertex copies."""
    # imported here: rendering.mesh pulls torch, which importing this module should not
    from rendering.mesh import mikktspace_tangents, split_tangent_seams, vertex_normals

    normals = vertex_normals(vertices, faces) if normals is None else normals
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    corners = mikktspace_tangents(vertices, faces, uvs, normals)
    source, faces, tangents = split_tangent_seams(faces, corners, len(vertices))
    return vertices[source], faces, uvs[source], normals[source], tangents, source


def export_glb(
    path,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    base_color: np.ndarray,
    normal_map: np.ndarray | None = None,
    specular_albedo: np.ndarray | None = None,
    vertex_normals: np.ndarray | None = None,
    metallic: float = 0.0,
    roughness: float | None = None,
    occlusion: np.ndarray | None = None,
    shininess: float | None = None,
    camera: PinholeCamera | None = None,
    head: HeadMesh | None = None,
) -> Path:
    """Write a textured mesh as a binary glTF 2.0 file with a metallic-roughness PBR material;
    with `head`, the whole head as one mesh of three primitives with 52 morph targets.

    Args:
        path (`str` or `Path`): output `.glb` file.
        vertices (`np.ndarray` of shape `(V, 3)`): positions in metres, +y up.
        faces (`np.ndarray` of shape `(F, 3)`, int): counter-clockwise seen from outside.
        uvs (`np.ndarray` of shape `(V, 2)`): texture coordinates, origin bottom-left.
        base_color (`np.ndarray` of shape `(R, R, 3)` or `(R, R, 4)`): the diffuse albedo, float
            [0, 1] or uint8, sRGB, top row = v = 1; becomes `baseColorTexture` (divided by
            `1 - F` in linear RGB when `specular_albedo` is given, see below).
        normal_map (`np.ndarray` of shape `(R, R, 3)`, optional): tangent-space normals encoded
            (n + 1) / 2, +y up; becomes `normalTexture`.
        specular_albedo (`np.ndarray` of shape `(R, R)` or `(R, R, 1)`, optional): the shader's
            specular albedo `k_s` (linear, `rendering.shading`'s units).
        vertex_normals (`np.ndarray` of shape `(V, 3)`, optional): written as is (unitized);
            area-weighted smooth normals when omitted. Always written, so viewers shade smooth.
        metallic (`float`): metalness.
        roughness (`float`, optional): glTF roughness; by default the shader's lobe
            (`roughness_from_shininess(shininess)`).
        occlusion (`np.ndarray` of shape `(R, R)` or `(R, R, 1)`, optional): ambient occlusion
            in [0, 1].
        shininess (`float`, optional): the shader's Blinn-Phong exponent; the skin shader's
            `SKIN_SHININESS` by default.
        camera (`PinholeCamera`, optional): the photo's camera (object-to-camera pose); becomes
            a perspective camera node that views the mesh as the photo does (`_camera_node`).
        head (`HeadMesh`, optional): the full head (`modeling.face_model.head`); `vertices`,
            `faces`, `uvs` are then its skin (`head.skin`, whose UV layout the maps are in).
            The mesh gets three primitives, each with a material of its own: `skin` (the
            material below), `eyes` (`head.eye_texture` as `<stem>_Eye`, glossy:
            `EYE_ROUGHNESS`, `KHR_materials_ior` `CORNEA_IOR`), `mouth` (the skin's textures,
            not copied, at `MOUTH_ROUGHNESS`); and the 52 ARKit actions as morph targets
            (`_add_head`).

    With a normal map the mesh carries MikkTSpace tangents (`TANGENT`, VEC4, w = ±1:
    `rendering.mesh.mikktspace_tangents`, the frame our normal maps are baked in and glTF's
    default), so that viewers need not rebuild a frame of their own: the same per-vertex
    tangents as the baking's (`rendering.mesh.vertex_tangents`), a vertex split only where its
    corners differ in handedness (a mirrored UV layout; the face's is not).

    The material is the shader's (`rendering.shading`: Lambert diffuse plus a normalised
    Blinn-Phong lobe without Fresnel) in glTF's metallic-roughness model, so that a glTF
    renderer shows what our relit previews show:

    - roughness `(2 / (s + 2))^(1/4)` (`roughness_from_shininess`); with `occlusion` it is
      packed with it as one ORM texture (`<stem>_ORM`: R = occlusion, G = roughness,
      B = metallic, factors 1), referenced by both `occlusionTexture` and
      `metallicRoughnessTexture`; without, it is `roughnessFactor`;
    - `KHR_materials_specular`: `specularTexture` (`<stem>_Specular`, linear; glTF reads its
      alpha) holds `F = k_s (s + 8) / (s + 2)` (`specular_reflectance`), `specularFactor` 1
      and `specularColorFactor` 1 / 0.04 = 25, so that glTF's `dielectric_f0 =
      min(0.04 * specularColor, 1) * specular` and `dielectric_f90 = specular` are both `F`:
      no Fresnel, as in our shader (IOR stays glTF's 1.5, cancelled by the 25);
    - the base colour is `albedo / (1 - F)`: glTF's diffuse lies under the specular layer,
      weighted by `1 - F`; ours is not.

    Images are named `<stem>_BaseColor`, `<stem>_Normal`, `<stem>_ORM`, `<stem>_Specular`
    (`stem`: the file name without `.glb`). The textures are 8-bit PNGs; the normal, ORM and
    specular ones are ordered-dithered (`to_uint8(dither=True)`), so that variations below an
    8-bit step survive texture filtering. `tests/test_gltf_material.py` renders a lit sphere
    with a numpy implementation of glTF's BRDF from this file and with our shader.

    Returns:
        `Path` of the written file.

    >>> export_glb("face.glb", verts, faces, uvs, albedo, normal_map=spec_normals)
    """
    vertices, faces, uvs, vertex_normals = _check_mesh(vertices, faces, uvs, vertex_normals)
    if head is not None:
        _check_head(head, len(vertices))
    tangents, source = None, np.arange(len(vertices))
    if normal_map is not None:
        vertices, faces, uvs, vertex_normals, tangents, source = _with_tangents(
            vertices, faces, uvs, vertex_normals
        )
    if roughness is None:
        roughness = roughness_from_shininess(shininess)
    # the textures' pixels, each encoded in its own thread (`_finish_material` embeds them)
    textures: dict[str, Callable[[], bytes]] = {}
    if specular_albedo is not None:
        k_s = _one_channel("specular_albedo", specular_albedo)
        reflectance = specular_reflectance(k_s, shininess)
        base_color = _base_color_under_specular(base_color, reflectance)
    textures["BaseColor"] = lambda: png_bytes(_pixels8(base_color, rgb=True))
    if normal_map is not None:
        textures["Normal"] = lambda: png_bytes(_pixels8(normal_map, True, dither=True), True)
    if occlusion is not None:
        ao = _one_channel("occlusion", occlusion)

        def orm_png() -> bytes:
            orm = np.stack([ao, np.full_like(ao, roughness), np.full_like(ao, metallic)], axis=2)
            return png_bytes(_pixels8(orm, dither=True), dithered=True)

        textures["ORM"] = orm_png
    if specular_albedo is not None:
        textures["Specular"] = lambda: png_bytes(
            _pixels8(np.repeat(reflectance[:, :, None], 4, axis=2), dither=True), dithered=True
        )
    if head is not None and head.eye_texture is not None:
        textures["Eye"] = lambda: png_bytes(_pixels8(head.eye_texture, rgb=True))
    pngs = dict(zip(textures, in_threads(textures.values()), strict=True))
    material = trimesh.visual.material.PBRMaterial(
        name="face" if head is None else "skin",
        metallicFactor=float(metallic),
        roughnessFactor=float(roughness),
        doubleSided=False,
    )
    mesh = trimesh.Trimesh(
        vertices=vertices,
        faces=faces,
        vertex_normals=vertex_normals,
        visual=trimesh.visual.TextureVisuals(uv=uvs, material=material),
        process=False,
    )
    data = trimesh.exchange.gltf.export_glb(mesh, include_normals=True)
    path = Path(path)
    data = _finish_material(data, path.stem, pngs)
    data = _finish_geometry(data, tangents, camera)
    if head is not None:
        data = _add_head(data, head, source, path.stem, float(metallic), pngs.get("Eye"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963  # bufferView targets
_CAMERA_NEAR_M, _CAMERA_FAR_M = 0.01, 10.0  # PinholeCamera.projection_matrix's defaults


def _camera_node(camera: PinholeCamera) -> tuple[dict, dict]:
    """glTF camera and node for the photo's camera: the node's transform is the inverse of the
    object-to-camera pose `x_cam = R x_obj + t` (rotation `R^T`, translation `-R^T t`), since
    glTF's camera frame (looks down -z, +y up) is our camera space (`rendering.camera`). glTF's
    `yfov` and `aspectRatio` hold the focal lengths: `tan(yfov / 2) = height / (2 fy)`,
    `aspectRatio = (width / fx) / (height / fy)`; it has no principal point (ours is the image
    centre unless a photo was cropped off-centre)."""
    from scipy.spatial.transform import Rotation

    rotation = np.asarray(camera.rotation, np.float64)
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
        raise ValueError("the camera's rotation is not a rotation matrix")
    translation = np.asarray(camera.translation, np.float64)
    x, y, z, w = Rotation.from_matrix(rotation.T).as_quat()  # glTF's order too: x, y, z, w
    perspective = {
        "yfov": float(2.0 * np.arctan(0.5 * camera.height / camera.fy)),
        "aspectRatio": float((camera.width / camera.fx) / (camera.height / camera.fy)),
        "znear": _CAMERA_NEAR_M,
        "zfar": _CAMERA_FAR_M,
    }
    node = {
        "name": "photo camera",
        "rotation": [float(x), float(y), float(z), float(w)],
        "translation": (-rotation.T @ translation).tolist(),
    }
    return {"name": "photo", "type": "perspective", "perspective": perspective}, node


def _finish_geometry(data: bytes, tangents: np.ndarray | None, camera) -> bytes:
    """Add what trimesh does not write: the `tangents` `(V, 4)` as every primitive's `TANGENT`
    (float32 VEC4), `target` on the vertex and index buffer views (ARRAY_BUFFER,
    ELEMENT_ARRAY_BUFFER), and the `camera` as a node of the scene (`_camera_node`)."""
    tree, binary = read_glb(data)
    binary = bytearray(binary)
    views, accessors = tree.setdefault("bufferViews", []), tree.setdefault("accessors", [])
    primitives = [p for mesh in tree.get("meshes", []) for p in mesh["primitives"]]
    if tangents is not None:
        tangent_accessor = _append_accessor(tree, binary, tangents, _ARRAY_BUFFER)
        for primitive in primitives:
            primitive["attributes"]["TANGENT"] = tangent_accessor
    for primitive in primitives:
        for index in primitive["attributes"].values():
            views[accessors[index]["bufferView"]]["target"] = _ARRAY_BUFFER
        if "indices" in primitive:
            views[accessors[primitive["indices"]]["bufferView"]]["target"] = _ELEMENT_ARRAY_BUFFER
    if camera is not None:
        gltf_camera, node = _camera_node(camera)
        tree.setdefault("cameras", []).append(gltf_camera)
        nodes = tree.setdefault("nodes", [])
        nodes.append({**node, "camera": len(tree["cameras"]) - 1})
        tree["scenes"][tree.get("scene", 0)].setdefault("nodes", []).append(len(nodes) - 1)
    tree.setdefault("buffers", [{}])[0]["byteLength"] = len(binary)
    return _write_glb(tree, binary)


# Eyes: a wet cornea (sharp highlight) with the cornea's refractive index (Le Grand's eye); mouth:
# the skin's textures, rougher, so the cavity shows no sharp highlight from inside, and darker
# (`MOUTH_SHADE` as glTF's baseColorFactor): viewers compute no occlusion inside it, which left a
# lit pink bag that read as a tongue in three.js.
EYE_ROUGHNESS = 0.1
CORNEA_IOR = 1.376
MOUTH_ROUGHNESS = 0.8
MOUTH_SHADE = 0.4
TEETH_ROUGHNESS = 0.35  # wet enamel


def _check_head(head: HeadMesh, num_skin_vertices: int) -> None:
    """Refuse a head whose morph targets do not fit its parts or the skin given."""
    num_actions = len(head.action_names)
    expected = {
        "skin_actions": (num_actions, num_skin_vertices, 3),
        "mouth_actions": (num_actions, len(head.mouth.vertices), 3),
    }
    if head.teeth is not None:
        expected["teeth_actions"] = (num_actions, len(head.teeth.vertices), 3)
    for field, shape in expected.items():
        if np.shape(getattr(head, field)) != shape:
            raise ValueError(
                f"head.{field} must have shape {shape} (actions, vertices, 3) for the "
                f"{shape[1]} vertices given, got {np.shape(getattr(head, field))}"
            )


def _add_head(
    data: bytes,
    head: HeadMesh,
    skin_source: np.ndarray,
    stem: str,
    metallic: float,
    eye_png: bytes | None,
) -> bytes:
    """Complete the skin-only GLB `data` (one mesh of one primitive: the skin, its vertices
    `skin_source` of `head.skin`'s) to the head: `eyes` and `mouth` primitives and materials
    (see `export_glb`), the actions as morph targets of every primitive (glTF requires the
    same number in each: the eyes' are one all-zero accessor) in `head.action_names`' order,
    named in `mesh.extras.targetNames` (three.js and Blender read it), `mesh.weights` all 0.
    `eye_png`: `head.eye_texture` encoded (None when the head has none)."""
    tree, binary = read_glb(data)
    binary = bytearray(binary)
    (mesh,) = tree["meshes"]
    (skin,) = mesh["primitives"]
    if tree["accessors"][skin["attributes"]["POSITION"]]["count"] != len(skin_source):
        raise AssertionError("trimesh changed the number of skin vertices on export")
    materials = tree["materials"]
    mouth_material = json.loads(json.dumps(materials[skin["material"]])) | {"name": "mouth"}
    pbr = mouth_material["pbrMetallicRoughness"]
    pbr.pop("metallicRoughnessTexture", None)  # the ORM's G is the skin's roughness
    pbr.update(metallicFactor=metallic, roughnessFactor=MOUTH_ROUGHNESS)
    pbr["baseColorFactor"] = [MOUTH_SHADE, MOUTH_SHADE, MOUTH_SHADE, 1.0]
    eyes_pbr = {"metallicFactor": 0.0, "roughnessFactor": EYE_ROUGHNESS}
    if eye_png is not None:
        eyes_pbr["baseColorTexture"] = {
            "index": _append_texture(tree, binary, eye_png, f"{stem}_Eye")
        }
    eyes_material = {"name": "eyes", "pbrMetallicRoughness": eyes_pbr,
                     "extensions": {"KHR_materials_ior": {"ior": CORNEA_IOR}}}  # fmt: skip
    materials += [eyes_material, mouth_material]
    if "KHR_materials_ior" not in tree.setdefault("extensionsUsed", []):
        tree["extensionsUsed"].append("KHR_materials_ior")

    eyes, eyes_source = _append_primitive(tree, binary, head.eyes, len(materials) - 2, False)
    mouth_tangents = "normalTexture" in mouth_material
    mouth, mouth_source = _append_primitive(
        tree, binary, head.mouth, len(materials) - 1, mouth_tangents
    )
    skin["targets"] = [
        {"POSITION": _append_morph_target(tree, binary, delta[skin_source])}
        for delta in head.skin_actions
    ]
    mouth["targets"] = [
        {"POSITION": _append_morph_target(tree, binary, delta[mouth_source])}
        for delta in head.mouth_actions
    ]
    parts = [eyes, mouth]
    if head.teeth is not None:  # one colour, no texture: the enamel
        from rendering.color import srgb_to_linear

        colour = [float(c) for c in srgb_to_linear(np.asarray(head.teeth_colour, np.float64))]
        teeth_pbr = {"baseColorFactor": [*colour, 1.0], "metallicFactor": 0.0,
                     "roughnessFactor": TEETH_ROUGHNESS}  # fmt: skip
        materials.append({"name": "teeth", "pbrMetallicRoughness": teeth_pbr})
        teeth, teeth_source = _append_primitive(tree, binary, head.teeth, len(materials) - 1, False)
        teeth["targets"] = [
            {"POSITION": _append_morph_target(tree, binary, delta[teeth_source])}
            for delta in head.teeth_actions
        ]
        parts.append(teeth)
    no_motion = _append_morph_target(tree, binary, np.zeros((len(eyes_source), 3), np.float32))
    eyes["targets"] = [{"POSITION": no_motion} for _ in head.action_names]
    mesh["primitives"] += parts
    mesh["name"] = "head"
    mesh.setdefault("extras", {})["targetNames"] = list(head.action_names)
    mesh["weights"] = [0.0] * len(head.action_names)
    for node in tree["nodes"]:
        if node.get("mesh") == 0:
            node["name"] = "head"
    binary += b"\x00" * (-len(binary) % 4)
    tree["buffers"][0]["byteLength"] = len(binary)
    return _write_glb(tree, binary)


def _append_primitive(
    tree: dict, binary: bytearray, part: MeshPart, material: int, tangents: bool
) -> tuple[dict, np.ndarray]:
    """A triangle-list primitive of `part` (UVs flipped to glTF's top-left origin), with
    MikkTSpace tangents if `tangents` (vertices split as `_with_tangents` does), and `source`
    `(V',)`: the part's vertex each written vertex copies."""
    vertices, faces, uvs, normals = _check_mesh(part.vertices, part.faces, part.uvs, part.normals)
    source, tangent = np.arange(len(vertices)), None
    if tangents:
        vertices, faces, uvs, normals, tangent, source = _with_tangents(
            vertices, faces, uvs, normals
        )
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    attributes = {
        "POSITION": _append_accessor(tree, binary, vertices, _ARRAY_BUFFER, bounds=True),
        "NORMAL": _append_accessor(tree, binary, normals, _ARRAY_BUFFER),
        "TEXCOORD_0": _append_accessor(tree, binary, uvs * [1, -1] + [0, 1], _ARRAY_BUFFER),
    }
    if tangent is not None:
        attributes["TANGENT"] = _append_accessor(tree, binary, tangent, _ARRAY_BUFFER)
    indices = _append_accessor(tree, binary, faces.astype(np.uint32).ravel(), _ELEMENT_ARRAY_BUFFER)
    primitive = {"attributes": attributes, "indices": indices, "mode": 4, "material": material}
    return primitive, source


def _append_morph_target(tree: dict, binary: bytearray, deltas: np.ndarray) -> int:
    """A morph target's POSITION deltas `(V, 3)` as an accessor with `min` and `max`: without
    a buffer view when all are zero (glTF fills such an accessor with zeros), sparse (the
    moving vertices' indices and deltas over zeros) when that is smaller, else dense."""
    deltas = np.asarray(deltas, np.float32)
    moving = np.flatnonzero(np.any(deltas != 0, axis=1)).astype(np.uint32)
    if 16 * len(moving) >= 12 * len(deltas):  # 4 bytes of index + 12 of delta per vertex
        return _append_accessor(tree, binary, deltas, _ARRAY_BUFFER, bounds=True)
    accessor = {"componentType": 5126, "count": len(deltas), "type": "VEC3", **_bounds(deltas)}
    if len(moving):  # glTF's sparse.count is at least 1
        indices = _append_view(tree, binary, moving.astype("<u4").tobytes())
        values = _append_view(tree, binary, deltas[moving].astype("<f4").tobytes())
        accessor["sparse"] = {
            "count": len(moving),
            "indices": {"bufferView": indices, "componentType": 5125},
            "values": {"bufferView": values},
        }
    accessors = tree.setdefault("accessors", [])
    accessors.append(accessor)
    return len(accessors) - 1


_COMPONENT_TYPES = {np.dtype("float32"): 5126, np.dtype("uint32"): 5125}
_ACCESSOR_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


def _append_view(tree: dict, binary: bytearray, data: bytes, target: int | None = None) -> int:
    """Append `data` to `binary` (the BIN chunk, 4-byte aligned first) as a new buffer view of
    `tree`; returns its index."""
    binary += b"\x00" * (-len(binary) % 4)
    views = tree.setdefault("bufferViews", [])
    views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": len(data)})
    if target is not None:
        views[-1]["target"] = target
    binary += data
    return len(views) - 1


def _append_accessor(
    tree: dict, binary: bytearray, array, target: int | None = None, bounds: bool = False
) -> int:
    """`array` `(N,)` or `(N, C)` (float32 or uint32; other floats are cast to float32) as a
    new accessor over a new buffer view; `bounds` adds `min` and `max` (which POSITION and
    morph targets require). Returns the accessor's index."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    view = _append_view(
        tree, binary, np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes(), target
    )
    accessor = {"bufferView": view, "componentType": _COMPONENT_TYPES[array.dtype],
                "count": len(array), "type": _ACCESSOR_TYPES[array[0].size]}  # fmt: skip
    if bounds:
        accessor.update(_bounds(array))
    accessors = tree.setdefault("accessors", [])
    accessors.append(accessor)
    return len(accessors) - 1


def _bounds(array: np.ndarray) -> dict:
    """glTF's accessor `min` and `max` of `(N, C)` values, per component."""
    return {"min": array.min(axis=0).tolist(), "max": array.max(axis=0).tolist()}


def _append_texture(tree: dict, binary: bytearray, png: bytes, name: str) -> int:
    """A PNG as a new image named `name` and a texture of it; returns the texture's index."""
    images = tree.setdefault("images", [])
    textures = tree.setdefault("textures", [])
    view = _append_view(tree, binary, png)
    images.append({"bufferView": view, "mimeType": "image/png", "name": name})
    textures.append({"source": len(images) - 1})
    return len(textures) - 1


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """Split a GLB container into its JSON tree and BIN chunk (empty bytes if none)."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != _GLB_MAGIC or version != 2:
        raise ValueError("not a glTF 2.0 binary file")
    tree, binary, offset = None, b"", 12
    while offset < min(length, len(data)):
        chunk_length, chunk_type = struct.unpack_from("<I4s", data, offset)
        chunk = data[offset + 8 : offset + 8 + chunk_length]
        if chunk_type == _CHUNK_JSON:
            tree = json.loads(chunk.decode("utf-8"))
        elif chunk_type == _CHUNK_BIN:
            binary = chunk
        offset += 8 + chunk_length
    if tree is None:
        raise ValueError("GLB file has no JSON chunk")
    return tree, binary


def _write_glb(tree: dict, binary: bytes) -> bytes:
    content = json.dumps(tree, separators=(",", ":")).encode("utf-8")
    content += b" " * (-len(content) % 4)  # JSON chunk padded with spaces
    binary += b"\x00" * (-len(binary) % 4)  # BIN chunk padded with zeros
    chunks = struct.pack("<I4s", len(content), _CHUNK_JSON) + content
    if binary:
        chunks += struct.pack("<I4s", len(binary), _CHUNK_BIN) + binary
    return struct.pack("<4sII", _GLB_MAGIC, 2, 12 + len(chunks)) + chunks


def _finish_material(data: bytes, stem: str, pngs: dict[str, bytes]) -> bytes:
    """Add the textures to the GLB's material (trimesh writes it without any): `pngs`'
    `BaseColor` as `baseColorTexture`, `Normal` as `normalTexture`, `ORM` as one texture
    referenced by both `occlusionTexture` and `metallicRoughnessTexture` (factors 1), and
    `Specular` as `KHR_materials_specular`'s `specularTexture` (see `export_glb`), each image
    named `<stem>_<key>`, in that order."""
    tree, binary = read_glb(data)
    binary = bytearray(binary)
    index = {
        key: _append_texture(tree, binary, pngs[key], f"{stem}_{key}")
        for key in ("BaseColor", "Normal", "ORM", "Specular")
        if key in pngs
    }
    for material in tree.get("materials", []):
        pbr = material.setdefault("pbrMetallicRoughness", {})
        if "BaseColor" in index:
            pbr["baseColorTexture"] = {"index": index["BaseColor"]}
        if "Normal" in index:
            material["normalTexture"] = {"index": index["Normal"]}
        if "ORM" in index:
            material["occlusionTexture"] = {"index": index["ORM"]}
            pbr["metallicRoughnessTexture"] = {"index": index["ORM"]}
            pbr["metallicFactor"] = pbr["roughnessFactor"] = 1.0
        if "Specular" in index:
            material.setdefault("extensions", {})["KHR_materials_specular"] = {
                "specularFactor": 1.0,
                "specularTexture": {"index": index["Specular"]},
                "specularColorFactor": [1.0 / 0.04] * 3,  # glTF's dielectric F0 0.04 -> 1
            }
    if "Specular" in index and "KHR_materials_specular" not in tree.get("extensionsUsed", []):
        tree.setdefault("extensionsUsed", []).append("KHR_materials_specular")
    binary += b"\x00" * (-len(binary) % 4)
    tree.setdefault("buffers", [{}])[0]["byteLength"] = len(binary)
    return _write_glb(tree, binary)


def is_data_map(name: str, image: np.ndarray) -> bool:
    """Whether a float map holds data rather than a colour, so that 8 bits lose too much: normal
    maps (the name contains "normals") and one-channel maps (specular albedo, occlusion,
    visibility). On skimage's astronaut at 1024 px the detail normals tilt 0.27° from the flat
    frame on average and 8-bit rounding alone moves them by 0.23°; the specular albedo varies by
    about 0.012 over the face, an 8-bit step is 0.004."""
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        return False
    return "normals" in name or image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)


def save_maps(maps: dict[str, np.ndarray], folder) -> dict[str, Path]:
    """Write each map as a PNG `folder/<name>.png`: 16-bit for data maps (`is_data_map`:
    normals, specular albedo, occlusion, visibility), 8-bit for colour maps (sRGB) and uint8
    input.

    Args:
        maps (`dict[str, np.ndarray]`): name -> `(H, W, C)` float [0, 1] or uint8, C in 1, 3, 4.
        folder (`str` or `Path`): created if missing.

    Returns:
        `dict[str, Path]`: name -> written file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in maps:
        if not _MAP_NAME.match(name):
            raise ValueError(f"map name {name!r} is not a plain file name")

    def write(name: str, image: np.ndarray) -> Path:
        pixels = _pixels16(image) if is_data_map(name, image) else _pixels8(image)
        path = folder / f"{name}.png"
        path.write_bytes(png_bytes(pixels))
        return path

    paths = in_threads(partial(write, name, image) for name, image in maps.items())
    return dict(zip(maps, paths, strict=True))


def read_png(path) -> np.ndarray:
    """A PNG written by `save_maps` -> `(H, W, C)` float32 in [0, 1] (8- or 16-bit, RGB order)."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"{path} is not a readable PNG")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    elif pixels.shape[2] >= 3:
        pixels = _swap_red_blue(pixels)
    return pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)


def _format_rows(row: str, array: np.ndarray) -> str:
    """One `row % values` line per row of `array`, in one string operation (fast for ~1e5 rows)."""
    return (row * len(array)) % tuple(array.ravel().tolist())


def export_obj(
    folder,
    name: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    maps: dict[str, np.ndarray],
    vertex_normals: np.ndarray | None = None,
    shininess: float | None = None,
    head: HeadMesh | None = None,
    map_files: dict[str, Path] | None = None,
) -> Path:
    """Write `folder/name.obj`, `folder/name.mtl` and the textures the MTL names, as artists
    name them:

    - `<name>_BaseColor.png` (8-bit sRGB, `map_Kd`): `maps["diffuse_albedo"]`, else
      `maps["texture"]`; MTL's `Kd` is a plain Lambert colour, so it is the albedo itself;
    - `<name>_Normal.png` (16-bit, `norm` and `map_Bump -bm 1`; Blender's importer reads
      `map_Bump` into a tangent-space Normal Map node): `maps["specular_normals"]`, else
      `maps["shape_normals_tangent"]`;
    - `<name>_Specular.png` (16-bit grey, `map_Ks` with `Ks 1`): the specular reflectance
      `F = k_s (s + 8) / (s + 2)` of `maps["specular_albedo"]` (`specular_reflectance`). With
      `Ns` = the shader's exponent, three.js's Phong lobe `F (s + 2) / (8 pi) (n.h)^s` is then
      ours; Blender reads `map_Ks` as Specular IOR Level, whose F0 is `2 * level * F0(Ni)`:
      `Ni` = 5.828 makes `F0(Ni)` = 1/2 and F0 = `F`;
    - `<name>_ORM.png` (16-bit, when `maps["ambient_occlusion"]` exists): glTF's packing,
      R = occlusion, G = roughness, B = metallic = 0. No MTL key reads a packed map, so the
      MTL names it only in a comment; `Pr` (which Blender reads) holds the roughness
      (`roughness_from_shininess`: our model has one shininess, so it is a constant).

    Blender's OBJ importer (4.5, 5.0) loads every PNG as sRGB colour: `_Normal` and
    `_Specular` have to be switched to Non-Color after import (README, "What you get").

    Args:
        folder (`str` or `Path`): created if missing.
        name (`str`): base name of the `.obj`, `.mtl` and texture files.
        vertices (`np.ndarray` of shape `(V, 3)`), faces (`(F, 3)` int), uvs (`(V, 2)`): as in
            `export_glb`.
        maps (`dict[str, np.ndarray]`): UV maps, as in `save_maps`; those named above are used.
        vertex_normals (`np.ndarray` of shape `(V, 3)`, optional): area-weighted smooth normals
            when omitted.
        shininess (`float`, optional): the shader's Blinn-Phong exponent (skin's by default).
        head (`HeadMesh`, optional): the full head; `vertices`, `faces`, `uvs` are then its
            skin. The OBJ holds three objects, `skin`, `eyes`, `mouth`, each with a material
            of its own (`usemtl`): `skin` (the material above), `eyes` (`map_Kd`
            `<name>_Eye.png`: `head.eye_texture`; `Ns` 1000, `Pr` `EYE_ROUGHNESS`, `Ni`
            `CORNEA_IOR`), `mouth` (the skin's textures at `Pr` `MOUTH_ROUGHNESS`). OBJ has no
            morph targets: the 52 actions are only in the GLB (`export_glb`).
        map_files (`dict[str, Path]`, optional): the PNGs `save_maps` wrote for these `maps`
            (and `eye_texture`: `head.eye_texture`); a texture with the same pixels as one of
            them (the base colour, the normals, the eyes' when the maps are float32 or uint8
            as the pipeline makes them) is a copy of that file instead of a second encoding.

    Returns:
        `Path` of the `.obj` file.
    """
    if not _MAP_NAME.match(name):
        raise ValueError(f"name {name!r} is not a plain file name")
    vertices, faces, uvs, vertex_normals = _check_mesh(vertices, faces, uvs, vertex_normals)
    if head is not None:
        _check_head(head, len(vertices))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shininess = _shader_shininess(shininess)
    roughness = roughness_from_shininess(shininess)

    map_files = map_files or {}
    writers: list[Callable[[], object]] = []  # the textures, written at the end in threads

    def texture(suffix: str, image: np.ndarray, data: bool, key: str | None = None) -> str:
        path = folder / f"{name}_{suffix}.png"
        image = np.asarray(image)
        # save_maps' pixels: 16-bit of the map as it is for a data map, else to_pil's 8-bit
        same = key in map_files and data == is_data_map(key, image)
        if same and (not data or image.dtype == np.float32):  # `_unit_float` keeps float32
            writers.append(partial(shutil.copyfile, map_files[key], path))
        elif data:
            writers.append(lambda: path.write_bytes(png_bytes(_pixels16(_unit_float(image)))))
        else:
            writers.append(lambda: path.write_bytes(png_bytes(_pixels8(image))))
        return path.name

    base_key = next((k for k in _BASE_COLOR_KEYS if k in maps), None)
    normal_key = next((k for k in _NORMAL_KEYS if k in maps), None)
    base = None if base_key is None else maps[base_key]
    normal = None if normal_key is None else maps[normal_key]
    specular = maps.get("specular_albedo")
    # with map_Ks, Ks 1 and Ni such that Blender's F0 is map_Ks (docstring); else a dielectric
    ks, ior = (1.0, _IOR_HALF_REFLECTANCE) if specular is not None else (0.5, 1.5)
    skin_maps = []
    if base is not None:
        skin_maps.append(f"map_Kd {texture('BaseColor', base, False, base_key)}")
    if specular is not None:
        reflectance = specular_reflectance(_one_channel("specular_albedo", specular), shininess)
        skin_maps.append(f"map_Ks {texture('Specular', reflectance, data=True)}")
    if normal is not None:
        normal_png = texture("Normal", normal, True, normal_key)
        skin_maps.append(f"norm {normal_png}")
        skin_maps.append(f"map_Bump -bm 1.000000 {normal_png}")
    skin = "face" if head is None else "skin"
    mtl = [
        "# openavatar face material: rendering.shading's skin model (face.glb holds it in glTF)",
        *_mtl_material(skin, ks, ior, shininess, roughness, skin_maps),
    ]
    if "ambient_occlusion" in maps:
        ao = _one_channel("ambient_occlusion", maps["ambient_occlusion"])
        orm = np.stack([ao, np.full_like(ao, roughness), np.zeros_like(ao)], axis=2)
        mtl.append(
            f"# {texture('ORM', orm, data=True)}: occlusion (R), roughness (G), metallic (B), "
            "packed as glTF does; no MTL key reads a packed map (Pr is the roughness)"
        )
    parts = [(name if head is None else "skin", skin, vertices, faces, uvs, vertex_normals)]
    if head is not None:
        eye_maps = []
        if head.eye_texture is not None:
            eye_maps.append(f"map_Kd {texture('Eye', head.eye_texture, False, 'eye_texture')}")
        mtl += [
            "# the eyeballs: a glossy cornea",
            *_mtl_material("eyes", 0.5, CORNEA_IOR, _MTL_MAX_NS, EYE_ROUGHNESS, eye_maps),
            "# the mouth bag: the skin's textures, rougher",
            *_mtl_material("mouth", ks, ior, _shininess_from_roughness(MOUTH_ROUGHNESS),
                           MOUTH_ROUGHNESS, skin_maps),
        ]  # fmt: skip
        extra = [("eyes", head.eyes), ("mouth", head.mouth)]
        if head.teeth is not None:
            mtl += [
                "# the teeth: one colour (enamel)",
                *_mtl_material("teeth", 0.5, CORNEA_IOR, _shininess_from_roughness(TEETH_ROUGHNESS),
                               TEETH_ROUGHNESS, [], kd=head.teeth_colour),
            ]  # fmt: skip
            extra.append(("teeth", head.teeth))
        for part_name, part in extra:
            arrays = _check_mesh(part.vertices, part.faces, part.uvs, part.normals)
            parts.append((part_name, part_name, *arrays))
    mtl_path = folder / f"{name}.mtl"
    mtl_path.write_text("\n".join(mtl) + "\n")

    kind = "face" if head is None else "head (skin, eyes, mouth, teeth)"
    obj_path = folder / f"{name}.obj"

    def write_obj() -> None:
        obj = [f"# openavatar {kind} mesh: metres, +y up, UV origin bottom-left\n",
               f"mtllib {mtl_path.name}\n"]  # fmt: skip
        first = 1  # OBJ indices are 1-based and count over the whole file
        for part in parts:
            obj.append(_obj_part(*part, first))
            first += len(part[2])
        obj_path.write_text("".join(obj))

    in_threads([write_obj, *writers])
    return obj_path


# MTL's Ns is conventionally at most 1000 (three.js and Blender read it so)
_MTL_MAX_NS = 1000.0


def _shininess_from_roughness(roughness: float) -> float:
    """The Blinn-Phong exponent of a GGX roughness (`roughness_from_shininess` inverted),
    at most `_MTL_MAX_NS`."""
    return min(2.0 / roughness**4 - 2.0, _MTL_MAX_NS)


def _mtl_material(
    name: str, ks: float, ior: float, shininess: float, roughness: float, maps: list[str],
    kd: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> list[str]:  # fmt: skip
    """One MTL material's lines: `Kd` (white unless given), grey `Ks`, then the `maps` lines."""
    return [
        f"newmtl {name}",
        "Ka 0.000000 0.000000 0.000000",  # Blender maps Ka to metallic unless Pm is given
        "Kd {:.6f} {:.6f} {:.6f}".format(*kd),
        f"Ks {ks:.6f} {ks:.6f} {ks:.6f}",
        "Ke 0.000000 0.000000 0.000000",
        f"Ns {shininess:.6f}",  # the shader's Blinn-Phong exponent
        f"Ni {ior:.6f}",
        "d 1.000000",
        "illum 2",
        f"Pr {roughness:.6f}",  # the same lobe as GGX roughness; Blender reads it, not Ns
        "Pm 0.000000",
        *maps,
    ]


def _obj_part(object_name, material, vertices, faces, uvs, normals, first: int) -> str:
    """One OBJ object: its `v`/`vt`/`vn` rows (one index for all three per vertex, the first
    `first`) and its faces under `usemtl material`; normals area-weighted when None."""
    if normals is None:
        normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    index = faces + first
    return "".join([
        f"o {object_name}\n",
        _format_rows("v %.6f %.6f %.6f\n", vertices),
        _format_rows("vt %.6f %.6f\n", uvs),
        _format_rows("vn %.6f %.6f %.6f\n", normals),
        f"usemtl {material}\n",
        "s 1\n",
        _format_rows("f %d/%d/%d %d/%d/%d %d/%d/%d\n", np.repeat(index, 3, axis=1)),
    ])  # fmt: skip


def write_zip(paths: Iterable, zip_path, root=None) -> Path:
    """Zip `paths` into `zip_path`, each stored under its path relative to `root` (its bare file
    name when `root` is None)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(
        zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL
    ) as archive:
        for path in paths:
            path = Path(path)
            arcname = path.name if root is None else path.relative_to(root).as_posix()
            stored = path.suffix.lower() in _STORED_SUFFIXES
            archive.write(path, arcname, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return zip_path


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def save_camera_json(camera_dict: dict, lighting: dict | None, path) -> Path:
    """Write `{"camera": camera_dict, "lighting": lighting}` as indented JSON (arrays -> lists).

    Args:
        camera_dict (`dict`): e.g. `PinholeCamera.to_dict()`.
        lighting (`dict` or None): e.g. spherical-harmonic coefficients; written as `null` if None.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(
        {"camera": camera_dict, "lighting": lighting}, indent=2, default=_json_default
    )
    path.write_text(text + "\n")
    return path
