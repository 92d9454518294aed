"""The exporters' PNGs: lossless at 8 and 16 bits, the same pixels wherever a map is written,
files shared between the maps and the OBJ, zips that store what is already compressed."""

import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from modeling.export import _base_color_under_specular as base_color_under_specular
from modeling.export import (
    export_glb,
    export_obj,
    in_threads,
    png_bytes,
    read_glb,
    read_png,
    save_maps,
    specular_reflectance,
    to_pil,
    write_png,
    write_zip,
)

R = 32


@pytest.fixture
def mesh():
    """Two triangles over the whole UV square, facing +z."""
    vertices = np.array([[0, 0, 0], [0.1, 0, 0], [0.1, 0.1, 0], [0, 0.1, 0]], np.float64)
    uvs = vertices[:, :2] * 10
    return vertices, np.array([[0, 1, 2], [0, 2, 3]]), uvs


@pytest.fixture
def maps():
    """Float32 maps with detail below an 8-bit step, as the pipeline makes them."""
    rng = np.random.default_rng(0)
    return {
        "diffuse_albedo": rng.random((R, R, 3), dtype=np.float32),
        "specular_albedo": rng.random((R, R, 1), dtype=np.float32) * 0.1,
        "specular_normals": rng.random((R, R, 3), dtype=np.float32),
        "ambient_occlusion": rng.random((R, R, 1), dtype=np.float32),
    }


def decoded(data: bytes) -> np.ndarray:
    """PNG bytes -> pixels in RGB(A) order, as stored (8 or 16 bits)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]] if pixels.ndim == 3 else pixels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
@pytest.mark.parametrize("dithered", [False, True])
def test_png_bytes_are_lossless_at_every_depth_and_layout(dtype, channels, dithered):
    rng = np.random.default_rng(1)
    shape = (19, 23) if channels is None else (19, 23, channels)
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    pixels[:5] = pixels[0, 0]  # runs, as in the smooth maps, and noise below them
    data = png_bytes(pixels, dithered)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decoded(data), pixels.reshape(19, 23, -1).squeeze(-1)
                                  if channels in (None, 1) else pixels)  # fmt: skip
    if dtype == np.uint8:  # another decoder, the channel order checked independently
        image = Image.open(io.BytesIO(data))
        assert image.mode == {None: "L", 1: "L", 3: "RGB", 4: "RGBA"}[channels]
        np.testing.assert_array_equal(np.asarray(image), np.squeeze(pixels))


def test_png_bytes_refuses_what_a_png_cannot_hold():
    with pytest.raises(TypeError):
        png_bytes(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4, 4, 2), np.uint8))


def test_write_png_keeps_a_pil_images_pixels(tmp_path):
    rng = np.random.default_rng(2)
    for mode, shape in (("L", (9, 7)), ("RGB", (9, 7, 3)), ("RGBA", (9, 7, 4))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
        path = write_png(tmp_path / f"{mode}.png", image)
        with Image.open(path) as again:
            assert again.mode == mode
            np.testing.assert_array_equal(np.asarray(again), np.asarray(image))
    with pytest.raises(ValueError, match="mode"):
        write_png(tmp_path / "p.png", Image.new("P", (4, 4)))


def test_save_maps_writes_each_map_as_its_bits_say(tmp_path, maps):
    paths = save_maps(maps, tmp_path)
    assert list(paths) == list(maps)  # in the maps' order
    for name in ("specular_albedo", "specular_normals", "ambient_occlusion"):  # 16-bit data
        pixels = decoded(paths[name].read_bytes())
        assert pixels.dtype == np.uint16
        expected = np.round(np.clip(maps[name], 0, 1) * 65535).astype(np.uint16)
        np.testing.assert_array_equal(pixels.reshape(expected.shape), expected)
    colour = decoded(paths["diffuse_albedo"].read_bytes())
    np.testing.assert_array_equal(colour, np.asarray(to_pil(maps["diffuse_albedo"])))


def test_glb_textures_hold_the_same_pixels_as_pillow_gave_them(tmp_path, mesh, maps):
    """Each embedded texture decodes to the pixels `to_pil` makes of its map (what the GLB held
    when trimesh and Pillow encoded it), in the order BaseColor, Normal, ORM, Specular."""
    vertices, faces, uvs = mesh
    roughness = 0.55
    path = export_glb(
        tmp_path / "face.glb", vertices, faces, uvs, maps["diffuse_albedo"],
        normal_map=maps["specular_normals"], specular_albedo=maps["specular_albedo"],
        occlusion=maps["ambient_occlusion"], roughness=roughness,
    )  # fmt: skip
    tree, binary = read_glb(path.read_bytes())
    reflectance = specular_reflectance(maps["specular_albedo"][..., 0])
    ao = maps["ambient_occlusion"][..., 0]
    orm = np.stack([ao, np.full_like(ao, roughness), np.zeros_like(ao)], axis=2)
    expected = {
        "face_BaseColor": to_pil(
            base_color_under_specular(maps["diffuse_albedo"], reflectance), rgb=True
        ),
        "face_Normal": to_pil(maps["specular_normals"], True, dither=True),
        "face_ORM": to_pil(orm, dither=True),
        "face_Specular": to_pil(np.repeat(reflectance[:, :, None], 4, axis=2), dither=True),
    }
    assert [image["name"] for image in tree["images"]] == list(expected)
    for image in tree["images"]:
        view = tree["bufferViews"][image["bufferView"]]
        start = view.get("byteOffset", 0)
        data = binary[start : start + view["byteLength"]]
        with Image.open(io.BytesIO(data)) as png:
            assert png.mode == expected[image["name"]].mode
            np.testing.assert_array_equal(np.asarray(png), np.asarray(expected[image["name"]]))
    material = tree["materials"][0]
    assert material["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert material["normalTexture"] == {"index": 1}
    assert material["occlusionTexture"] == {"index": 2}


def test_obj_copies_the_pngs_it_shares_with_the_maps(tmp_path, mesh, maps):
    vertices, faces, uvs = mesh
    map_paths = save_maps(maps, tmp_path / "maps")
    alone = export_obj(tmp_path / "alone", "face", vertices, faces, uvs, maps).parent
    shared = export_obj(tmp_path / "shared", "face", vertices, faces, uvs, maps,
                        map_files=map_paths).parent  # fmt: skip
    textures = sorted(p.name for p in alone.glob("*.png"))
    assert textures == sorted(p.name for p in shared.glob("*.png"))
    assert textures == ["face_BaseColor.png", "face_Normal.png", "face_ORM.png",
                        "face_Specular.png"]  # fmt: skip
    for name in textures:  # the same pixels either way
        np.testing.assert_array_equal(read_png(shared / name), read_png(alone / name))
    # the two that are the maps themselves are their files
    assert (shared / "face_BaseColor.png").read_bytes() == map_paths["diffuse_albedo"].read_bytes()
    assert (shared / "face_Normal.png").read_bytes() == map_paths["specular_normals"].read_bytes()


def test_obj_encodes_its_own_texture_when_the_map_file_holds_other_pixels(tmp_path, mesh, maps):
    """A uint8 normal map is written 8-bit by `save_maps` and 16-bit by the OBJ; a float64 one
    rounds differently once cast to float32: neither is copied."""
    vertices, faces, uvs = mesh
    for normals in (to_pil(maps["specular_normals"]), maps["specular_normals"] + 1e-9):
        own = {**maps, "specular_normals": np.asarray(normals)}
        map_paths = save_maps(own, tmp_path / "maps")
        alone = export_obj(tmp_path / "alone", "face", vertices, faces, uvs, own).parent
        shared = export_obj(tmp_path / "shared", "face", vertices, faces, uvs, own,
                            map_files=map_paths).parent  # fmt: skip
        normal = decoded((shared / "face_Normal.png").read_bytes())
        assert normal.dtype == np.uint16
        np.testing.assert_array_equal(normal, decoded((alone / "face_Normal.png").read_bytes()))


def test_write_zip_stores_compressed_files_and_deflates_the_rest(tmp_path):
    png = write_png(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    obj = tmp_path / "face.obj"
    obj.write_text("v 0.000000 0.000000 0.000000\n" * 1000)
    with zipfile.ZipFile(write_zip([png, obj], tmp_path / "all.zip")) as archive:
        assert archive.getinfo("a.png").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("face.obj").compress_type == zipfile.ZIP_DEFLATED
        assert archive.getinfo("face.obj").compress_size < obj.stat().st_size / 10
        assert archive.read("a.png") == png.read_bytes()
        assert archive.read("face.obj") == obj.read_bytes()


def test_in_threads_returns_results_in_order_and_raises_what_a_task_raised():
    assert in_threads([lambda i=i: i * i for i in range(7)]) == [i * i for i in range(7)]
    assert in_threads([]) == []

    def fails():
        raise ValueError("bad map")

    with pytest.raises(ValueError, match="bad map"):
        in_threads([lambda: 1, fails])


def test_in_threads_inside_its_pool_runs_in_the_callers_thread():
    """A writer made of writers (the GLB's textures inside `save_outputs`' pool) encodes its
    parts one after the other in its own thread: one pool's worth of encoders at a time."""
    import threading

    from modeling.export import in_threads

    def outer():
        me = threading.get_ident()
        return in_threads([threading.get_ident, threading.get_ident]), me

    for inner, me in in_threads([outer, outer]):
        assert inner == [me, me]
