"""The GLB through the Khronos glTF validator, and our MikkTSpace port against the reference.

Both reference tools are npm packages in `tests/browser` (`gltf-validator`, and `mikktspace`:
mikktspace.c's algorithm compiled to WebAssembly, what glTF-Transform uses), run with Node.
`.ci/run` installs them (`npm ci`); without them these tests are skipped (they fail instead
under OPENAVATAR_REQUIRE_BROWSER=1, as in CI).
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from modeling.export import export_glb
from modeling.face_model.topology import NUM_LANDMARKS, load_topology
from rendering.camera import PinholeCamera
from rendering.mesh import mikktspace_tangents, vertex_normals

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
NODE = shutil.which("node")
SEVERITIES = ("error", "warning", "info", "hint")

# argv[1]: a .glb -> the validator's JSON report on stdout
_VALIDATE = """
const fs = require('fs');
require('gltf-validator').validateBytes(new Uint8Array(fs.readFileSync(process.argv[1])))
  .then((report) => process.stdout.write(JSON.stringify(report)))
  .catch((error) => { console.error(error); process.exit(1); });
"""
# stdin: uint32 F, then float32 positions (F*9), normals (F*9), uvs (F*6) of an unindexed
# triangle list -> stdout: float32 tangents (F*12)
_MIKKTSPACE = """
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const b = Buffer.concat(chunks), F = b.readUInt32LE(0);
  const f32 = (at, n) => new Float32Array(b.buffer, b.byteOffset + at, n);
  const tangents = require('mikktspace').generateTangents(
    f32(4, 9 * F), f32(4 + 36 * F, 9 * F), f32(4 + 72 * F, 6 * F));
  process.stdout.write(Buffer.from(tangents.buffer));
});
"""


@pytest.fixture(autouse=True)
def _prerequisites(require_node_tools):
    require_node_tools(("gltf-validator", "mikktspace"), "the glTF reference tools are")


def _node(script: str, *args: str, data: bytes = b"") -> bytes:
    run = subprocess.run([NODE, "-e", script, *args], input=data, cwd=BROWSER_DIR,
                         capture_output=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout


def assert_valid(path: Path) -> None:
    """0 errors and 0 warnings from the Khronos validator; infos and hints are printed."""
    issues = json.loads(_node(_VALIDATE, str(path)))["issues"]
    for m in issues["messages"]:
        print(f"{SEVERITIES[m['severity']]}: {m['code']} at {m.get('pointer')}: {m['message']}")
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def reference_tangents(vertices, faces, uvs, normals) -> np.ndarray:
    """The npm `mikktspace` package's tangents, `(F, 3, 4)` float64, for float32 inputs."""
    soup = [np.ascontiguousarray(a[faces], "<f4").tobytes() for a in (vertices, normals, uvs)]
    out = _node(_MIKKTSPACE, data=np.uint32(len(faces)).tobytes() + b"".join(soup))
    return np.frombuffer(out, "<f4").reshape(len(faces), 3, 4).astype(np.float64)


def mean_face():
    topology = load_topology()
    vertices = topology.lift(topology.frontal_shape[:NUM_LANDMARKS])
    faces = topology.dense_faces.astype(np.int64)
    return vertices, faces, topology.dense_uvs, vertex_normals(vertices, faces)


def _mirrored(vertices, faces, uvs, normals):  # the left half's u flipped: w = -1 there
    uvs = uvs.copy()
    uvs[uvs[:, 0] < 0.5, 0] = 1 - uvs[uvs[:, 0] < 0.5, 0]
    return vertices, faces, uvs, normals


def _degenerate(vertices, faces, uvs, normals):  # two triangles with coinciding corners
    return vertices, np.concatenate([faces, [[0, 0, 5], [10, 11, 10]]]), uvs, normals


def _zero_uv_area(vertices, faces, uvs, normals):  # a triangle with no tangent of its own
    uvs = uvs.copy()
    uvs[faces[100, 1]] = uvs[faces[100, 0]]
    return vertices, faces, uvs, normals


@pytest.mark.parametrize("variant", [None, _mirrored, _degenerate, _zero_uv_area])
def test_mikktspace_port_matches_the_reference(variant):
    mesh = mean_face() if variant is None else variant(*mean_face())
    vertices, faces, uvs, normals = (np.asarray(a, np.float32).astype(np.float64)
                                     if a.dtype.kind == "f" else a for a in mesh)  # fmt: skip
    ours = mikktspace_tangents(vertices, faces, uvs, normals)
    reference = reference_tangents(vertices, faces, uvs, normals)
    # float32 (the reference) against float64: a few 1e-4 degrees apart on the face
    np.testing.assert_allclose(ours[..., :3], reference[..., :3], atol=2e-5)
    np.testing.assert_array_equal(ours[..., 3], reference[..., 3])
    if variant is _mirrored:
        assert (ours[..., 3] < 0).any() and (ours[..., 3] > 0).any()


def test_glb_with_every_texture_and_the_camera_is_valid(tmp_path):
    vertices, faces, uvs, normals = mean_face()
    rng = np.random.default_rng(0)
    res = 64
    normal_map = np.concatenate([rng.uniform(0.45, 0.55, (res, res, 2)), np.ones((res, res, 1))], 2)
    camera = PinholeCamera.from_fov(
        640, 480, 30.0, rotation=np.array([[0.96, 0, 0.28], [0, 1, 0], [-0.28, 0, 0.96]]),
        translation=np.array([0.01, -0.02, -0.45]),
    )  # fmt: skip
    path = export_glb(
        tmp_path / "face.glb",
        vertices,
        faces,
        uvs,
        rng.uniform(0, 1, (res, res, 3)),
        normal_map=normal_map,
        specular_albedo=rng.uniform(0, 0.3, (res, res)),
        vertex_normals=normals,
        occlusion=rng.uniform(0.5, 1, (res, res)),
        camera=camera,
    )
    assert_valid(path)


@pytest.mark.slow
def test_pipeline_glb_is_valid(tmp_path):
    from skimage import data

    from pipelines import AvatarPipeline
    from pipelines.outputs import save_outputs

    pipe = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(data.astronaut(), resolution=128, num_fit_steps=0)
    assert_valid(save_outputs(out, tmp_path / "astronaut")["glb"])
