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

import io
import json
import re
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import trimesh
from PIL import Image

# Blender reads `map_Bump`/`bump` as a tangent-space normal map (strength from `-bm`); `norm` is
# the PBR-extension key other tools read. Both point at the same file.
_BASE_COLOR_KEYS = ("diffuse_albedo", "texture")
_NORMAL_KEYS = ("specular_normals", "shape_normals_tangent")
_MAP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# zlib level 3 writes maps 2.5x faster than Pillow's default 6 for files ~20% larger.
PNG_COMPRESS_LEVEL = 3
# Already-compressed files are stored in the zip as they are; deflating them again is slow.
_STORED_SUFFIXES = {".png", ".glb", ".jpg", ".jpeg", ".zip"}

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
    scaled = _finite(image).clip(0.0, 1.0) * 255.0
    if not dither:
        return np.round(scaled).astype(np.uint8)
    h, w = image.shape[:2]
    threshold = (np.tile(_BAYER8, (h // 8 + 1, w // 8 + 1))[:h, :w] + 0.5) / 64.0
    if image.ndim == 3:
        threshold = threshold[:, :, None]
    return np.clip(np.floor(scaled + threshold), 0, 255).astype(np.uint8)


def to_pil(image: np.ndarray, rgb: bool = False, dither: bool = False) -> Image.Image:
    """`(H, W)` or `(H, W, C)` with C in 1, 3, 4 -> PIL image (`rgb`: grey expands to RGB;
    `dither`: see `to_uint8`)."""
    image = _grey_or_colour(to_uint8(image, dither))
    if image.ndim == 2:
        if not rgb:
            return Image.fromarray(np.ascontiguousarray(image), mode="L")
        image = np.repeat(image[:, :, None], 3, axis=2)
    return Image.fromarray(
        np.ascontiguousarray(image), mode="RGB" if image.shape[2] == 3 else "RGBA"
    )


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


def _png_bytes(image: Image.Image) -> bytes:
    with io.BytesIO() as f:
        image.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return f.getvalue()


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
    roughness: float = 0.5,
    occlusion: np.ndarray | None = None,
) -> Path:
    """Write a textured mesh as a binary glTF 2.0 file with a metallic-roughness PBR material.

    Args:
        path (`str` or `Path`): output `.glb` file.
        vertices (`np.ndarray` of shape `(V, 3)`): positions in metres, +y up.
        faces (`np.ndarray` of shape `(F, 3)`, int): counter-clockwise seen from outside.
        uvs (`np.ndarray` of shape `(V, 2)`): texture coordinates, origin bottom-left.
        base_color (`np.ndarray` of shape `(R, R, 3)` or `(R, R, 4)`): float [0, 1] or uint8,
            top row = v = 1; becomes `baseColorTexture`.
        normal_map (`np.ndarray` of shape `(R, R, 3)`, optional): tangent-space normals encoded
            (n + 1) / 2, +y up; becomes `normalTexture`.
        specular_albedo (`np.ndarray` of shape `(R, R, 1 or 3)`, optional): written as the
            `specularColorTexture` of `KHR_materials_specular` (a multiplier on the dielectric
            F0 = 0.04; viewers without the extension ignore it).
        vertex_normals (`np.ndarray` of shape `(V, 3)`, optional): written as is (unitized);
            area-weighted smooth normals when omitted. Always written, so viewers shade smooth.
        metallic, roughness (`float`): the material's factors.
        occlusion (`np.ndarray` of shape `(R, R)` or `(R, R, 1)`, optional): ambient occlusion
            in [0, 1]; becomes `occlusionTexture` (its red channel, as glTF reads it).

    The textures are 8-bit PNGs; the normal, occlusion and specular ones are ordered-dithered
    (`to_uint8(dither=True)`), so that variations below an 8-bit step survive texture filtering.

    Returns:
        `Path` of the written file.

    >>> export_glb("face.glb", verts, faces, uvs, albedo, normal_map=spec_normals)
    """
    vertices, faces, uvs, vertex_normals = _check_mesh(vertices, faces, uvs, vertex_normals)
    material = trimesh.visual.material.PBRMaterial(
        name="face",
        baseColorTexture=to_pil(base_color, rgb=True),
        normalTexture=None if normal_map is None else to_pil(normal_map, True, dither=True),
        occlusionTexture=None if occlusion is None else to_pil(occlusion, True, dither=True),
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
    if specular_albedo is not None:
        data = _add_specular_texture(data, _png_bytes(to_pil(specular_albedo, True, dither=True)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


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


def _add_specular_texture(data: bytes, png: bytes) -> bytes:
    """Append `png` to the GLB's buffer and reference it from every material as the
    `KHR_materials_specular` `specularColorTexture` (trimesh has no field for it)."""
    tree, binary = read_glb(data)
    binary += b"\x00" * (-len(binary) % 4)
    views = tree.setdefault("bufferViews", [])
    views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": len(png)})
    binary += png
    binary += b"\x00" * (-len(binary) % 4)
    buffers = tree.setdefault("buffers", [{}])
    buffers[0]["byteLength"] = len(binary)
    images = tree.setdefault("images", [])
    images.append({"bufferView": len(views) - 1, "mimeType": "image/png"})
    textures = tree.setdefault("textures", [])
    textures.append({"source": len(images) - 1})
    for material in tree.get("materials", []):
        material.setdefault("extensions", {})["KHR_materials_specular"] = {
            "specularColorTexture": {"index": len(textures) - 1}
        }
    used = tree.setdefault("extensionsUsed", [])
    if "KHR_materials_specular" not in used:
        used.append("KHR_materials_specular")
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
    written = {}
    for name, image in maps.items():
        if not _MAP_NAME.match(name):
            raise ValueError(f"map name {name!r} is not a plain file name")
        path = folder / f"{name}.png"
        if is_data_map(name, image):
            _save_png16(image, path)
        else:
            to_pil(image).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        written[name] = path
    return written


def _save_png16(image: np.ndarray, path: Path) -> None:
    """`(H, W)` or `(H, W, C)` float in [0, 1], C in 1, 3, 4 -> 16-bit PNG (grey, RGB, RGBA)."""
    image = _grey_or_colour(_finite(np.asarray(image)))
    pixels = np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    if pixels.ndim == 3:
        pixels = _swap_red_blue(pixels)
    if not cv2.imwrite(str(path), np.ascontiguousarray(pixels),
                       [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL]):  # fmt: skip
        raise OSError(f"could not write {path}")


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
) -> Path:
    """Write `folder/name.obj`, `folder/name.mtl` and every map as `folder/<map name>.png`.

    The MTL uses `maps["diffuse_albedo"]` (else `maps["texture"]`) as `map_Kd`,
    `maps["specular_normals"]` (else `maps["shape_normals_tangent"]`) as the tangent-space normal
    map (`map_Bump -bm 1`, which Blender reads, and `norm`), and `maps["specular_albedo"]` as
    `map_Ks` when present.

    Args:
        folder (`str` or `Path`): created if missing.
        name (`str`): base name of the `.obj` and `.mtl` files.
        vertices (`np.ndarray` of shape `(V, 3)`), faces (`(F, 3)` int), uvs (`(V, 2)`): as in
            `export_glb`.
        maps (`dict[str, np.ndarray]`): UV maps, as in `save_maps`.
        vertex_normals (`np.ndarray` of shape `(V, 3)`, optional): area-weighted smooth normals
            when omitted.

    Returns:
        `Path` of the `.obj` file.
    """
    if not _MAP_NAME.match(name):
        raise ValueError(f"name {name!r} is not a plain file name")
    vertices, faces, uvs, vertex_normals = _check_mesh(vertices, faces, uvs, vertex_normals)
    if vertex_normals is None:
        vertex_normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals
    vertex_normals = vertex_normals / np.maximum(
        np.linalg.norm(vertex_normals, axis=1, keepdims=True), 1e-12
    )
    folder = Path(folder)
    pngs = save_maps(maps, folder)

    base = next((k for k in _BASE_COLOR_KEYS if k in pngs), None)
    normal = next((k for k in _NORMAL_KEYS if k in pngs), None)
    specular = "specular_albedo" if "specular_albedo" in pngs else None
    mtl = [
        "# openavatar face material",
        "newmtl face",
        "Ka 0.000000 0.000000 0.000000",  # Blender maps Ka to metallic unless Pm is given
        "Kd 1.000000 1.000000 1.000000",
        "Ks 0.500000 0.500000 0.500000",
        "Ke 0.000000 0.000000 0.000000",
        "Ns 250.000000",  # Blender: roughness = 1 - sqrt(Ns / 1000) = 0.5
        "Ni 1.450000",
        "d 1.000000",
        "illum 2",
        "Pr 0.500000",
        "Pm 0.000000",
    ]
    if base is not None:
        mtl.append(f"map_Kd {pngs[base].name}")
    if specular is not None:
        mtl.append(f"map_Ks {pngs[specular].name}")
    if normal is not None:
        mtl.append(f"norm {pngs[normal].name}")
        mtl.append(f"map_Bump -bm 1.000000 {pngs[normal].name}")
    mtl_path = folder / f"{name}.mtl"
    mtl_path.write_text("\n".join(mtl) + "\n")

    index = faces + 1  # OBJ indices are 1-based; v, vt and vn share one index per vertex
    obj = [
        "# openavatar face mesh: metres, +y up, UV origin bottom-left\n",
        f"mtllib {mtl_path.name}\n",
        f"o {name}\n",
        _format_rows("v %.6f %.6f %.6f\n", vertices),
        _format_rows("vt %.6f %.6f\n", uvs),
        _format_rows("vn %.6f %.6f %.6f\n", vertex_normals),
        "usemtl face\n",
        "s 1\n",
        _format_rows("f %d/%d/%d %d/%d/%d %d/%d/%d\n", np.repeat(index, 3, axis=1)),
    ]
    obj_path = folder / f"{name}.obj"
    obj_path.write_text("".join(obj))
    return obj_path


def write_zip(paths: Iterable, zip_path, root=None) -> Path:
    """Zip `paths` into `zip_path`, each stored under its path relative to `root` (its bare file
    name when `root` is None)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
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
