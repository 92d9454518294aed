import io
import json
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from modeling.export import (
    export_glb,
    export_obj,
    is_data_map,
    read_glb,
    read_png,
    roughness_from_shininess,
    save_camera_json,
    save_maps,
    to_uint8,
    write_zip,
)
from rendering.camera import PinholeCamera, pixels_to_ndc
from rendering.mesh import split_tangent_seams, vertex_tangents

R = 64
QUADRANT_COLORS = {
    # (top row half, left column half) -> colour, in our storage (top row = v = 1)
    (0, 0): (255, 0, 0),
    (0, 1): (0, 255, 0),
    (1, 0): (0, 0, 255),
    (1, 1): (255, 255, 0),
}


def quadrant_texture(resolution=R):
    image = np.zeros((resolution, resolution, 3), np.uint8)
    h = resolution // 2
    for (i, j), color in QUADRANT_COLORS.items():
        image[i * h : (i + 1) * h, j * h : (j + 1) * h] = color
    return image


def sample_ours(image, uv):
    """Nearest texel in our convention: row (1 - v) * R, column u * R."""
    h, w = image.shape[:2]
    rows = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
    cols = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    return image[rows, cols, :3]


def canonical_triangles(faces):
    """Triangles as a set, each rotated to start at its smallest index (keeps the winding)."""
    return {tuple(np.roll(f, -int(np.argmin(f))).tolist()) for f in faces}


@pytest.fixture
def mesh():
    """A curved 8 x 8 grid patch facing +z, planar UVs away from the quadrant boundaries, and
    vertex normals that differ from the ones trimesh would compute."""
    n = 8
    t = np.linspace(0.05, 0.95, n)
    u, v = np.meshgrid(t, t)
    uvs = np.stack([u.ravel(), v.ravel()], axis=1)
    x, y = (uvs[:, 0] - 0.5) * 0.2, (uvs[:, 1] - 0.5) * 0.2
    vertices = np.stack([x, y, 0.05 - 2.0 * (x**2 + y**2)], axis=1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, b, e], [a, e, d]]  # counter-clockwise seen from +z
    faces = np.array(faces)
    normals = np.stack([4.0 * x, 4.0 * y + 0.3, np.ones_like(x)], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return vertices, faces, uvs, normals


def glb_image(tree, binary, texture_index):
    view = tree["bufferViews"][
        tree["images"][tree["textures"][texture_index]["source"]]["bufferView"]
    ]
    start = view.get("byteOffset", 0)
    return np.asarray(Image.open(io.BytesIO(binary[start : start + view["byteLength"]])))


def glb_accessor(tree, binary, index):
    acc = tree["accessors"][index]
    view = tree["bufferViews"][acc["bufferView"]]
    width = {"VEC2": 2, "VEC3": 3, "VEC4": 4, "SCALAR": 1}[acc["type"]]
    assert acc["componentType"] == 5126 and "byteStride" not in view
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, "<f4", acc["count"] * width, start).reshape(-1, width)


def test_to_uint8():
    assert to_uint8(np.array([[-0.1, 0.0, 0.5, 1.0, 1.2]])).tolist() == [[0, 0, 128, 255, 255]]
    image = np.zeros((2, 2, 3), np.uint8)
    assert to_uint8(image) is image
    with pytest.raises(TypeError):
        to_uint8(np.zeros((2, 2, 3), np.int32))
    with pytest.raises(ValueError):
        to_uint8(np.full((2, 2, 3), np.nan))


def test_glb_mesh_material_and_normals(tmp_path, mesh):
    vertices, faces, uvs, normals = mesh
    normal_map = np.full((R // 2, R // 2, 3), 0.5)
    normal_map[..., 2] = 1.0
    path = export_glb(
        tmp_path / "face.glb",
        vertices,
        faces,
        uvs,
        quadrant_texture() / 255.0,
        normal_map,
        vertex_normals=normals,
    )
    loaded = trimesh.load(path, force="mesh", process=False)
    assert loaded.vertices.shape == vertices.shape
    np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, faces)
    # force="mesh" makes trimesh recompute normals on load, so read the scene's geometry and the
    # file's own NORMAL accessor
    (geometry,) = trimesh.load(path, process=False).geometry.values()
    np.testing.assert_allclose(geometry.vertex_normals, normals, atol=1e-5)
    tree, binary = read_glb(path.read_bytes())
    attributes = tree["meshes"][0]["primitives"][0]["attributes"]
    np.testing.assert_allclose(glb_accessor(tree, binary, attributes["NORMAL"]), normals, atol=1e-6)
    material = loaded.visual.material
    assert isinstance(material, trimesh.visual.material.PBRMaterial)
    assert material.baseColorTexture.size == (R, R)
    assert material.normalTexture.size == (R // 2, R // 2)
    assert loaded.visual.uv.shape == uvs.shape

    (mat,) = tree["materials"]
    assert mat["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    # the skin shader's lobe as GGX roughness (tests/test_gltf_material.py checks the material)
    assert mat["pbrMetallicRoughness"]["roughnessFactor"] == pytest.approx(0.5491, abs=1e-4)
    assert roughness_from_shininess() == mat["pbrMetallicRoughness"]["roughnessFactor"]
    assert "baseColorTexture" in mat["pbrMetallicRoughness"] and "normalTexture" in mat
    assert "KHR_materials_specular" not in tree.get("extensionsUsed", [])


def test_glb_uv_orientation(tmp_path, mesh):
    vertices, faces, uvs, _ = mesh
    texture = quadrant_texture()
    expected = sample_ours(texture, uvs)
    assert len({tuple(c) for c in expected}) == 4  # every quadrant is hit
    path = export_glb(tmp_path / "face.glb", vertices, faces, uvs, texture)

    # trimesh's own reading (bottom-left UVs again after its load-time flip)
    loaded = trimesh.load(path, force="mesh", process=False)
    colors = trimesh.visual.color.uv_to_color(
        loaded.visual.uv, loaded.visual.material.baseColorTexture
    )
    np.testing.assert_array_equal(colors[:, :3], expected)

    # the glTF rule itself: TEXCOORD (0, 0) is the top-left corner of the image
    tree, binary = read_glb(path.read_bytes())
    primitive = tree["meshes"][0]["primitives"][0]
    st = glb_accessor(tree, binary, primitive["attributes"]["TEXCOORD_0"])
    image = glb_image(
        tree, binary, tree["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"]
    )
    rows = (st[:, 1] * image.shape[0]).astype(int)
    cols = (st[:, 0] * image.shape[1]).astype(int)
    np.testing.assert_array_equal(image[rows, cols, :3], expected)


def test_glb_specular_extension(tmp_path, mesh):
    vertices, faces, uvs, _ = mesh
    rng = np.random.default_rng(0)
    specular = rng.integers(0, 256, (R, R, 1), dtype=np.uint8)
    path = export_glb(
        tmp_path / "face.glb",
        vertices,
        faces,
        uvs,
        quadrant_texture(),
        specular_albedo=specular,
        metallic=0.0,
        roughness=0.4,
    )
    data = path.read_bytes()
    length, json_length = np.frombuffer(data[8:16], "<u4")
    assert length == len(data) and json_length % 4 == 0 and len(data) % 4 == 0
    tree, binary = read_glb(data)
    assert "KHR_materials_specular" in tree["extensionsUsed"]
    assert tree["buffers"][0]["byteLength"] == len(binary)
    ext = tree["materials"][0]["extensions"]["KHR_materials_specular"]
    assert ext["specularFactor"] == 1.0 and ext["specularColorFactor"] == [25.0] * 3
    # glTF reads the specular strength from the alpha channel, linear: F = k_s (s + 8) / (s + 2)
    image = glb_image(tree, binary, ext["specularTexture"]["index"])
    reflectance = np.clip(specular[..., 0] / 255 * 28 / 22, 0, 1)
    assert image.shape == (R, R, 4)
    assert np.abs(image[..., 3] / 255 - reflectance).max() <= 1 / 255 + 1e-6
    assert tree["materials"][0]["pbrMetallicRoughness"]["roughnessFactor"] == pytest.approx(0.4)
    # the rewritten container still loads, with the mesh and base colour intact
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(vertices)
    assert loaded.visual.material.baseColorTexture.size == (R, R)


def test_glb_rejects_bad_shapes(tmp_path, mesh):
    vertices, faces, uvs, _ = mesh
    with pytest.raises(ValueError, match="uvs"):
        export_glb(tmp_path / "x.glb", vertices, faces, uvs[:-1], quadrant_texture())
    with pytest.raises(ValueError, match="out of range"):
        export_glb(tmp_path / "x.glb", vertices, faces + len(vertices), uvs, quadrant_texture())


def test_glb_carries_mikktspace_tangents_and_buffer_view_targets(tmp_path, mesh):
    vertices, faces, uvs, normals = mesh
    flat = np.full((R, R, 3), 0.5)
    path = export_glb(tmp_path / "face.glb", vertices, faces, uvs, quadrant_texture(), flat,
                      vertex_normals=normals)  # fmt: skip
    tree, binary = read_glb(path.read_bytes())
    primitive = tree["meshes"][0]["primitives"][0]
    tangents = glb_accessor(tree, binary, primitive["attributes"]["TANGENT"])
    np.testing.assert_allclose(tangents, vertex_tangents(vertices, faces, uvs, normals), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(tangents[:, :3], axis=1), 1, atol=1e-6)
    assert np.abs(np.sum(tangents[:, :3] * normals, axis=1)).max() < 1e-6
    assert (tangents[:, 3] == 1).all() and (tangents[:, 0] > 0.5).all()  # +u runs along +x
    views, accessors = tree["bufferViews"], tree["accessors"]
    for index in primitive["attributes"].values():
        assert views[accessors[index]["bufferView"]]["target"] == 34962  # ARRAY_BUFFER
    assert views[accessors[primitive["indices"]]["bufferView"]]["target"] == 34963
    assert all("target" not in views[image["bufferView"]] for image in tree["images"])
    # without a normal map nothing needs tangents
    path = export_glb(tmp_path / "plain.glb", vertices, faces, uvs, quadrant_texture())
    assert (
        "TANGENT" not in read_glb(path.read_bytes())[0]["meshes"][0]["primitives"][0]["attributes"]
    )


def test_glb_splits_the_vertices_of_a_mirrored_uv_seam(tmp_path, mesh):
    vertices, faces, uvs, normals = mesh
    seam = np.unique(uvs[:, 0])[3]  # the right half's UVs mirrored onto the left about u = seam
    mirrored = np.stack([np.where(uvs[:, 0] > seam, 2 * seam - uvs[:, 0], uvs[:, 0]), uvs[:, 1]], 1)
    with pytest.raises(ValueError, match="split"):
        vertex_tangents(vertices, faces, mirrored, normals)
    path = export_glb(tmp_path / "face.glb", vertices, faces, mirrored, quadrant_texture(),
                      np.full((R, R, 3), 0.5), vertex_normals=normals)  # fmt: skip
    tree, binary = read_glb(path.read_bytes())
    attributes = tree["meshes"][0]["primitives"][0]["attributes"]
    positions = glb_accessor(tree, binary, attributes["POSITION"])
    tangents = glb_accessor(tree, binary, attributes["TANGENT"])
    on_seam = np.flatnonzero(uvs[:, 0] == seam)
    assert len(positions) == len(vertices) + len(on_seam)  # one copy per seam vertex
    np.testing.assert_allclose(positions[: len(vertices)], vertices, atol=1e-6)
    np.testing.assert_allclose(positions[len(vertices) :], vertices[on_seam], atol=1e-6)
    left = uvs[:, 0] < seam
    assert (tangents[: len(vertices)][left, 3] == 1).all()
    assert (tangents[: len(vertices)][uvs[:, 0] > seam, 3] == -1).all()
    assert set(tangents[on_seam, 3]) | set(tangents[len(vertices) :, 3]) == {-1.0, 1.0}


def test_vertex_tangents_take_the_tangent_most_corners_have():
    # a fan of 3 triangles around vertex 0: one corner's tangent differs (as MikkTSpace's
    # sub-groups at a fold make it), vertex 1's corners differ in handedness
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1]])
    x, y = [1.0, 0, 0, 1], [0, 1.0, 0, 1]
    corners = np.array([[x, x, y], [x, y, y], [y, y, [1.0, 0, 0, -1]]])
    source, split_faces, tangents = split_tangent_seams(faces, corners, 5)
    assert source.tolist() == [0, 1, 2, 3, 4, 1]  # vertex 4 is unused, vertex 1 is copied
    assert split_faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 5]]
    np.testing.assert_array_equal(tangents, [x, x, y, y, [1, 0, 0, 1], [1, 0, 0, -1]])


def test_glb_camera_node_sees_the_mesh_as_the_photo(tmp_path, mesh):
    vertices, faces, uvs, _ = mesh
    a = np.radians(20)
    rotation = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    translation = np.array([0.01, -0.02, -0.4])
    camera = PinholeCamera(900.0, 880.0, 320.0, 240.0, 640, 480, rotation, translation)
    path = export_glb(
        tmp_path / "face.glb", vertices, faces, uvs, quadrant_texture(), camera=camera
    )
    tree, _ = read_glb(path.read_bytes())
    (index,) = [i for i, node in enumerate(tree["nodes"]) if "camera" in node]
    assert index in tree["scenes"][tree.get("scene", 0)]["nodes"]
    node = tree["nodes"][index]
    gltf_camera = tree["cameras"][node["camera"]]
    assert gltf_camera["type"] == "perspective"
    perspective = gltf_camera["perspective"]
    assert 0 < perspective["znear"] < 0.4 < perspective["zfar"]
    # glTF: the view is the inverse of the node's transform; the camera looks down -z, +y up
    to_object = Rotation.from_quat(node["rotation"]).as_matrix()
    in_camera = (vertices - node["translation"]) @ to_object
    tan_y = np.tan(perspective["yfov"] / 2)
    ndc = in_camera[:, :2] / (-in_camera[:, 2:] * [tan_y * perspective["aspectRatio"], tan_y])
    expected = pixels_to_ndc(camera.project(camera.object_to_camera(vertices)), 640, 480)
    np.testing.assert_allclose(ndc, expected, atol=1e-9)


def test_obj_round_trip(tmp_path, mesh):
    vertices, faces, uvs, normals = mesh
    maps = {
        "diffuse_albedo": quadrant_texture() / 255.0,
        "specular_albedo": np.full((R, R, 1), 0.3),
        "specular_normals": np.full((R, R, 3), 0.5),
        "visibility": np.ones((R, R, 1), np.uint8) * 255,
    }
    obj_path = export_obj(tmp_path / "out", "face", vertices, faces, uvs, maps, normals)
    folder = obj_path.parent
    assert obj_path.name == "face.obj"
    mtl = (folder / "face.mtl").read_text().splitlines()
    assert "map_Kd face_BaseColor.png" in mtl
    assert "map_Ks face_Specular.png" in mtl
    assert "norm face_Normal.png" in mtl
    assert "map_Bump -bm 1.000000 face_Normal.png" in mtl
    assert "Pm 0.000000" in mtl and "Ka 0.000000 0.000000 0.000000" in mtl
    for suffix in ("BaseColor", "Specular", "Normal"):
        assert np.asarray(Image.open(folder / f"face_{suffix}.png")).shape[:2] == (R, R)
    assert not (folder / "visibility.png").exists()  # only the textures the MTL names

    text = obj_path.read_text()
    assert "mtllib face.mtl" in text and "usemtl face" in text
    assert f"f 1/1/1 2/2/2 {faces[0, 2] + 1}/{faces[0, 2] + 1}/{faces[0, 2] + 1}" in text

    loaded = trimesh.load(obj_path, force="mesh", process=False)
    assert len(loaded.faces) == len(faces)
    order_ours = np.lexsort(np.round(vertices, 5).T)
    order_loaded = np.lexsort(np.round(loaded.vertices, 5).T)
    np.testing.assert_allclose(loaded.vertices[order_loaded], vertices[order_ours], atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv[order_loaded], uvs[order_ours], atol=1e-6)
    # without force="mesh" trimesh keeps the file's normals instead of recomputing them
    as_read = trimesh.load(obj_path, process=False)
    np.testing.assert_allclose(as_read.vertices, loaded.vertices)
    np.testing.assert_allclose(as_read.vertex_normals[order_loaded], normals[order_ours], atol=1e-5)
    # same triangles with the same winding, matching loaded vertices to ours by nearest neighbour
    nearest = np.linalg.norm(loaded.vertices[:, None] - vertices[None], axis=2).argmin(axis=1)
    assert len(set(nearest.tolist())) == len(vertices)
    assert canonical_triangles(nearest[loaded.faces]) == canonical_triangles(faces)
    # OBJ's UV convention is ours: trimesh samples the quadrant colours we expect
    image = loaded.visual.material.image
    assert image.size == (R, R)
    colors = trimesh.visual.color.uv_to_color(loaded.visual.uv, image)[:, :3]
    np.testing.assert_array_equal(colors, sample_ours(quadrant_texture(), loaded.visual.uv))


def test_obj_fallback_maps(tmp_path, mesh):
    vertices, faces, uvs, _ = mesh
    maps = {"texture": quadrant_texture(), "shape_normals_tangent": np.full((R, R, 3), 0.5)}
    obj_path = export_obj(tmp_path, "avatar", vertices, faces, uvs, maps)
    mtl = (tmp_path / "avatar.mtl").read_text()
    assert "map_Kd avatar_BaseColor.png" in mtl
    assert "map_Bump -bm 1.000000 avatar_Normal.png" in mtl
    assert "map_Ks" not in mtl
    assert obj_path.read_text().count("\nvn ") == len(vertices)


def test_save_maps_modes(tmp_path):
    rng = np.random.default_rng(0)
    maps = {
        "grey": np.linspace(0, 1, 16).reshape(4, 4, 1),
        "grey_u8": np.arange(16, dtype=np.uint8).reshape(4, 4, 1),
        "rgb": np.zeros((4, 4, 3), np.uint8),
        "rgba": np.ones((4, 4, 4)),
        "colour": rng.random((4, 4, 3)),
        "detail_normals": rng.random((4, 4, 3)).astype(np.float32),
    }
    paths = save_maps(maps, tmp_path / "maps")
    modes = {k: Image.open(p).mode for k, p in paths.items()}
    assert modes["grey"].startswith("I")  # 16-bit grey: a data map
    assert {k: modes[k] for k in ("grey_u8", "rgb", "rgba", "colour")} == {
        "grey_u8": "L", "rgb": "RGB", "rgba": "RGBA", "colour": "RGB"}  # fmt: skip
    assert read_png(paths["detail_normals"]).dtype == np.float32
    # 16 bits: the data maps come back within half a 16-bit step, in RGB order
    for name in ("grey", "detail_normals"):
        np.testing.assert_allclose(read_png(paths[name]).reshape(maps[name].shape), maps[name],
                                   atol=0.5 / 65535 + 1e-7)  # fmt: skip
    # colour maps stay 8-bit sRGB, as viewers expect
    np.testing.assert_array_equal(np.asarray(Image.open(paths["colour"])), to_uint8(maps["colour"]))
    np.testing.assert_allclose(read_png(paths["colour"]), to_uint8(maps["colour"]) / 255)
    assert is_data_map("specular_albedo", np.zeros((2, 2, 1), np.float32))
    assert not is_data_map("diffuse_albedo", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError):
        save_maps({"bad_normals": np.zeros((4, 4, 2))}, tmp_path)
    with pytest.raises(ValueError):
        save_maps({"nan": np.full((4, 4, 1), np.nan)}, tmp_path)
    with pytest.raises(ValueError):
        save_maps({"bad": np.zeros((4, 4, 2))}, tmp_path)
    with pytest.raises(ValueError):
        save_maps({"../escape": np.zeros((4, 4, 3))}, tmp_path)


def test_write_zip(tmp_path):
    (tmp_path / "maps").mkdir()
    a, b = tmp_path / "face.glb", tmp_path / "maps" / "albedo.png"
    a.write_bytes(b"glb")
    b.write_bytes(b"png")
    with zipfile.ZipFile(write_zip([a, b], tmp_path / "all.zip", root=tmp_path)) as z:
        assert sorted(z.namelist()) == ["face.glb", "maps/albedo.png"]
        assert z.read("maps/albedo.png") == b"png"
    with zipfile.ZipFile(write_zip([b], tmp_path / "flat.zip")) as z:
        assert z.namelist() == ["albedo.png"]


def test_camera_json_round_trip(tmp_path):
    camera = PinholeCamera.from_fov(640, 480, 35.0, translation=np.array([0.0, 0.0, -0.6]))
    lighting = {
        "sh_coefficients": np.arange(27, dtype=np.float32).reshape(9, 3),
        "scale": np.float64(2),
    }
    path = save_camera_json(camera.to_dict(), lighting, tmp_path / "camera.json")
    data = json.loads(path.read_text())
    assert data["lighting"]["sh_coefficients"] == lighting["sh_coefficients"].tolist()
    assert data["lighting"]["scale"] == 2.0
    again = PinholeCamera.from_dict(data["camera"])
    np.testing.assert_allclose(again.translation, camera.translation)
    assert (again.fx, again.width, again.height) == (camera.fx, 640, 480)
    assert (
        json.loads(save_camera_json(camera.to_dict(), None, tmp_path / "c2.json").read_text())[
            "lighting"
        ]
        is None
    )


def test_dithered_uint8_keeps_sub_step_levels_on_average():
    # a ramp over 2.5 8-bit steps: rounding makes 3 flat bands, the dither keeps the ramp
    ramp = np.tile(
        np.linspace(0.5, 0.5 + 2.5 / 255, 64, dtype=np.float32)[None, :, None], (64, 1, 3)
    )
    rounded, dithered = to_uint8(ramp), to_uint8(ramp, dither=True)
    assert dithered.dtype == np.uint8 and dithered.shape == ramp.shape
    assert np.abs(dithered.astype(float) - ramp * 255).max() < 1.0  # within one step of the value
    col_mean = dithered[..., 0].mean(0) / 255  # what a filter averaging the column sees
    assert np.abs(col_mean - ramp[0, :, 0]).max() < 0.6 / 255
    assert np.abs(rounded[..., 0].mean(0) / 255 - ramp[0, :, 0]).max() > 0.4 / 255
    np.testing.assert_array_equal(to_uint8(ramp, dither=True), dithered)  # deterministic
    u8 = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert to_uint8(u8, dither=True) is u8
    assert to_uint8(np.ones((3, 5)), dither=True).min() == 255  # no overflow at 1.0
