"""The full head's exports: one GLB mesh of three primitives (skin, eyes, mouth) with the 52 ARKit
morph targets, and an OBJ with an object and a material per part."""

import dataclasses
import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from modeling.export import EYE_ROUGHNESS, export_glb, export_obj, read_glb, to_uint8
from modeling.face_model.head import eye_texture, head_mesh
from modeling.face_model.topology import NUM_LANDMARKS, load_topology

R = 32
PARTS = ("skin", "eyes", "mouth", "teeth")
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_DTYPES = {5126: "<f4", 5125: "<u4", 5123: "<u2"}
# MediaPipe landmarks: lower lip's outer centre, upper lip's outer centre
LOWER_LIP, UPPER_LIP = 17, 0


@pytest.fixture(scope="module")
def face():
    topology = load_topology()
    return topology.lift(topology.frontal_shape[:NUM_LANDMARKS])


@pytest.fixture(scope="module")
def head(face):
    return dataclasses.replace(head_mesh(face), eye_texture=eye_texture([0.3, 0.2, 0.1]))


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    return {
        "diffuse_albedo": rng.uniform(0, 1, (R, R, 3)),
        "specular_normals": np.concatenate(
            [rng.uniform(0.45, 0.55, (R, R, 2)), np.ones((R, R, 1))], axis=2
        ),
        "specular_albedo": rng.uniform(0, 0.3, (R, R)),
        "ambient_occlusion": rng.uniform(0.5, 1, (R, R)),
    }


def _export(path, mesh, maps, head=None):
    return export_glb(
        path,
        mesh.vertices,
        mesh.faces,
        mesh.uvs,
        maps["diffuse_albedo"],
        normal_map=maps["specular_normals"],
        specular_albedo=maps["specular_albedo"],
        vertex_normals=mesh.normals,
        occlusion=maps["ambient_occlusion"],
        head=head,
    )


@pytest.fixture(scope="module")
def head_glb(tmp_path_factory, head, maps):
    path = _export(tmp_path_factory.mktemp("glb") / "head.glb", head.skin, maps, head)
    return path, *read_glb(path.read_bytes())


def accessor(tree, binary, index) -> np.ndarray:
    """An accessor's values `(count, C)`: zeros without a buffer view, then sparse values."""
    info = tree["accessors"][index]
    shape = (info["count"], _COMPONENTS[info["type"]])
    dtype = np.dtype(_DTYPES[info["componentType"]])

    def view(i, dtype, count):
        offset = tree["bufferViews"][i].get("byteOffset", 0)
        return np.frombuffer(binary, dtype, count, offset)

    values = np.zeros(shape, dtype)
    if "bufferView" in info:
        values[:] = view(info["bufferView"], dtype, values.size).reshape(shape)
    if "sparse" in info:
        sparse, count = info["sparse"], info["sparse"]["count"]
        rows = view(sparse["indices"]["bufferView"], _DTYPES[sparse["indices"]["componentType"]],
                    count)  # fmt: skip
        values[rows] = view(sparse["values"]["bufferView"], dtype, count * shape[1]).reshape(
            -1, shape[1]
        )
    return values


def _primitives(tree) -> dict:
    (mesh,) = tree["meshes"]
    return {tree["materials"][p["material"]]["name"]: p for p in mesh["primitives"]}


def _target(tree, binary, primitive, name) -> np.ndarray:
    (mesh,) = tree["meshes"]
    index = mesh["extras"]["targetNames"].index(name)
    return accessor(tree, binary, primitive["targets"][index]["POSITION"])


def test_head_glb_is_one_mesh_with_skin_eyes_mouth_and_their_materials(head_glb, head):
    path, tree, binary = head_glb
    assert len(tree["meshes"]) == 1
    primitives = _primitives(tree)
    assert list(primitives) == list(PARTS)
    assert [m["name"] for m in tree["materials"]] == list(PARTS)
    skin, eyes, mouth, teeth = (tree["materials"][primitives[p]["material"]] for p in PARTS)
    # the teeth: one enamel colour, no texture
    assert "baseColorTexture" not in teeth["pbrMetallicRoughness"]
    assert min(teeth["pbrMetallicRoughness"]["baseColorFactor"][:3]) > 0.4
    # the mouth shares the skin's textures (no PNG written twice) and is rougher
    texture = "baseColorTexture"
    assert mouth["pbrMetallicRoughness"][texture] == skin["pbrMetallicRoughness"][texture]
    assert mouth["normalTexture"] == skin["normalTexture"]
    assert mouth["pbrMetallicRoughness"]["roughnessFactor"] > 0.6
    assert len(tree["images"]) == 5  # skin's BaseColor, Normal, ORM, Specular + the eyes'
    views = [tree["bufferViews"][image["bufferView"]] for image in tree["images"]]
    pngs = {bytes(binary[v["byteOffset"] : v["byteOffset"] + v["byteLength"]]) for v in views}
    assert len(pngs) == 5
    # the eyes: glossy, with their own texture
    assert eyes["pbrMetallicRoughness"]["roughnessFactor"] == EYE_ROUGHNESS < 0.2
    assert "KHR_materials_ior" in tree["extensionsUsed"]
    texture = tree["textures"][eyes["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
    image = tree["images"][texture["source"]]
    assert image["name"] == "head_Eye"
    view = tree["bufferViews"][image["bufferView"]]
    png = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(png))), to_uint8(head.eye_texture)
    )
    # trimesh reads the three parts back with their vertex and triangle counts
    scene = trimesh.load(path, process=False)
    loaded = sorted((len(g.vertices), len(g.faces)) for g in scene.geometry.values())
    written = []
    for part in PARTS:
        attributes, indices = primitives[part]["attributes"], primitives[part]["indices"]
        written.append((tree["accessors"][attributes["POSITION"]]["count"],
                        tree["accessors"][indices]["count"] // 3))  # fmt: skip
    assert loaded == sorted(written)
    assert [n for _, n in written] == [len(getattr(head, p).faces) for p in PARTS]


def test_head_glb_has_the_52_arkit_actions_as_morph_targets(head_glb, head):
    _, tree, binary = head_glb
    (mesh,) = tree["meshes"]
    assert len(head.action_names) == 52
    assert mesh["extras"]["targetNames"] == list(head.action_names)
    assert mesh["weights"] == [0.0] * 52
    for part, primitive in _primitives(tree).items():
        assert len(primitive["targets"]) == 52, part
        count = tree["accessors"][primitive["attributes"]["POSITION"]]["count"]
        for target in primitive["targets"]:
            info = tree["accessors"][target["POSITION"]]
            assert (info["count"], info["type"], info["componentType"]) == (count, "VEC3", 5126)
            assert len(info["min"]) == len(info["max"]) == 3
    eyes = _primitives(tree)["eyes"]
    assert not any(_target(tree, binary, eyes, name).any() for name in head.action_names)


def test_jaw_open_lowers_the_lower_lip_and_the_mouth(head_glb, face):
    _, tree, binary = head_glb
    skin, mouth = _primitives(tree)["skin"], _primitives(tree)["mouth"]
    positions = accessor(tree, binary, skin["attributes"]["POSITION"])
    jaw = _target(tree, binary, skin, "jawOpen")

    def lip_drop(landmark):
        near = np.linalg.norm(positions - face[landmark], axis=1) < 0.004
        assert near.sum() >= 5
        return jaw[near, 1].mean()

    assert lip_drop(LOWER_LIP) < -0.005  # metres: the lower lip drops by several mm...
    assert abs(lip_drop(UPPER_LIP)) < 0.3 * abs(lip_drop(LOWER_LIP))  # ...the upper lip less
    assert _target(tree, binary, mouth, "jawOpen")[:, 1].min() < -0.005


@pytest.mark.parametrize("side", ["Left", "Right"])
def test_eye_blink_moves_only_its_own_eyes_lids(head_glb, head, side):
    _, tree, binary = head_glb
    skin = _primitives(tree)["skin"]
    positions = accessor(tree, binary, skin["attributes"]["POSITION"])
    moved = np.linalg.norm(_target(tree, binary, skin, f"eyeBlink{side}"), axis=1) > 0.001
    assert moved.sum() > 20
    right_centre, left_centre = head.eye_centres  # object space +x is the subject's left
    assert left_centre[0] > 0 > right_centre[0]
    own, other = (left_centre, right_centre) if side == "Left" else (right_centre, left_centre)
    lids = positions[moved]
    assert np.all(np.sign(lids[:, 0]) == np.sign(own[0]))
    assert np.all(np.linalg.norm(lids - own, axis=1) < np.linalg.norm(lids - other, axis=1))
    assert np.linalg.norm(lids - other, axis=1).min() > 0.03  # metres: nothing near the other eye


def test_face_only_glb_is_unchanged_by_the_head_option(tmp_path, head, maps, head_glb):
    first = _export(tmp_path / "a" / "head.glb", head.skin, maps).read_bytes()
    assert _export(tmp_path / "b" / "head.glb", head.skin, maps).read_bytes() == first
    tree, binary = read_glb(first)
    (mesh,) = tree["meshes"]
    (primitive,) = mesh["primitives"]
    assert "targets" not in primitive and "weights" not in mesh
    # the head's file extends the face-only one: the same skin geometry and textures first, the
    # same skin material (renamed)
    _, head_tree, head_binary = head_glb
    assert head_binary[: len(binary)] == binary
    assert head_tree["bufferViews"][: len(tree["bufferViews"])] == tree["bufferViews"]
    assert head_tree["accessors"][: len(tree["accessors"])] == tree["accessors"]
    (face_material,) = tree["materials"]
    assert {**face_material, "name": "skin"} == head_tree["materials"][0]


def test_head_obj_has_an_object_and_material_per_part(tmp_path, head, maps):
    skin = head.skin
    path = export_obj(tmp_path, "face", skin.vertices, skin.faces, skin.uvs, maps, skin.normals,
                      head=head)  # fmt: skip
    lines = path.read_text().splitlines()
    assert [line for line in lines if line.startswith(("o ", "usemtl "))] == [
        "o skin", "usemtl skin", "o eyes", "usemtl eyes", "o mouth", "usemtl mouth",
        "o teeth", "usemtl teeth",
    ]  # fmt: skip
    mtl = (tmp_path / "face.mtl").read_text()
    assert [line for line in mtl.splitlines() if line.startswith("newmtl")] == [
        f"newmtl {p}" for p in PARTS
    ]
    eyes_block = mtl.split("newmtl eyes")[1].split("newmtl")[0]
    assert "map_Kd face_Eye.png" in eyes_block and "Ns 1000" in eyes_block
    assert "map_Kd face_BaseColor.png" in mtl.split("newmtl mouth")[1]
    eye_png = np.asarray(Image.open(tmp_path / "face_Eye.png"))
    np.testing.assert_array_equal(eye_png, to_uint8(head.eye_texture))
    scene = trimesh.load(path, process=False)
    assert {name: len(g.faces) for name, g in scene.geometry.items()} == {
        p: len(getattr(head, p).faces) for p in PARTS
    }
    # one index space over the file: the mouth's faces index past the skin's and eyes' vertices
    faces = [line for line in lines if line.startswith("f ")]
    last = int(faces[-1].split()[1].split("/")[0])
    assert last > len(skin.vertices) + len(head.eyes.vertices)


def test_save_outputs_writes_the_head_and_its_eye_texture(tmp_path, head, maps):
    from pipelines.outputs import save_outputs
    from pipelines.pipeline_output import AvatarPipelineOutput, FaceMesh, ViewOutput
    from rendering.camera import PinholeCamera

    skin = head.skin
    camera = PinholeCamera.from_fov(64, 48, 30.0, rotation=np.eye(3),
                                    translation=np.array([0.0, 0.0, -0.45]))  # fmt: skip
    view = ViewOutput(camera, np.zeros((3, 9)), np.zeros((48, 64, 3), np.float32),
                      np.zeros((48, 64), bool), np.zeros((48, 64, 3), np.uint8), None)  # fmt: skip
    output = AvatarPipelineOutput(
        mesh=FaceMesh(skin.vertices, skin.faces, skin.uvs, skin.normals),
        maps={**maps, "shape_normals_tangent": maps["specular_normals"]},
        views=[view],
        timings={},
        head=head,
    )
    paths = save_outputs(output, tmp_path / "out")
    tree, _ = read_glb(paths["glb"].read_bytes())
    assert list(_primitives(tree)) == list(PARTS)
    assert paths["map:eye_texture"] == tmp_path / "out" / "maps" / "eye_texture.png"
    eye_png = np.asarray(Image.open(paths["map:eye_texture"]))
    np.testing.assert_array_equal(eye_png, to_uint8(head.eye_texture))
    assert (tmp_path / "out" / "obj" / "face_Eye.png").is_file()


def test_head_glb_passes_the_khronos_validator(head_glb, require_node_tools):
    from test_gltf_validator import assert_valid

    require_node_tools(("gltf-validator", "mikktspace"), "the glTF reference tools are")
    assert_valid(head_glb[0])
