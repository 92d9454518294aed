"""The head GLB as three.js sees it: GLTFLoader in headless Chromium, rendered with software GL.

The driver is `tests/browser/render_glb.mjs` (Node + playwright-core + three, Debian's
/usr/bin/chromium). `.ci/run` installs them; without them this test is skipped (it fails instead
under OPENAVATAR_REQUIRE_BROWSER=1, as in CI). The renders (front.png, profile.png,
front_jawOpen.png, profile_jawOpen.png, transparent where nothing was drawn) and the driver's
JSON report (threejs.json) are copied to `tests/browser/artifacts/threejs/`, pass or fail.
"""

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pipelines.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = BROWSER_DIR / "artifacts" / "threejs"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
NODE = shutil.which("node")

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a reconstruction and a browser

# Apple's ARKit blend shapes, in its (alphabetical) order
ARKIT = (
    "browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff "
    "cheekSquintLeft cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft "
    "eyeLookDownRight eyeLookInLeft eyeLookInRight eyeLookOutLeft eyeLookOutRight eyeLookUpLeft "
    "eyeLookUpRight eyeSquintLeft eyeSquintRight eyeWideLeft eyeWideRight jawForward jawLeft "
    "jawOpen jawRight mouthClose mouthDimpleLeft mouthDimpleRight mouthFrownLeft mouthFrownRight "
    "mouthFunnel mouthLeft mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight "
    "mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper "
    "mouthSmileLeft mouthSmileRight mouthStretchLeft mouthStretchRight mouthUpperUpLeft "
    "mouthUpperUpRight noseSneerLeft noseSneerRight tongueOut"
).split()


@pytest.fixture(autouse=True)
def _prerequisites(require_node_tools):
    require_node_tools(("playwright-core", "three"), "the three.js test is", chromium=True)


@pytest.fixture
def shots(tmp_path):
    """This run's renders and report; copied to ARTIFACTS at the end, pass or fail."""
    folder = tmp_path / "shots"
    folder.mkdir()
    yield folder
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        shutil.copy(file, ARTIFACTS / file.name)


def _gltf_json(path: Path) -> dict:
    blob = path.read_bytes()
    (length,) = struct.unpack_from("<I", blob, 12)
    return json.loads(blob[20 : 20 + length])


def _rgba(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "RGBA", image.mode
    return np.asarray(image).astype(np.int16)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a mask's pixels, inclusive."""
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max(), xs.min(), xs.max()


def test_threejs_loads_and_renders_the_head(tmp_path, shots):
    Image.fromarray(data.astronaut()).save(tmp_path / "astro.png")
    args = [str(tmp_path / "astro.png"), "-o", str(tmp_path / "out"), "--resolution", "128"]
    assert cli_main([*args, "--fit-steps", "0", "-q"]) == 0
    glb = tmp_path / "out" / "astro" / "face.glb"

    run = subprocess.run([NODE, "render_glb.mjs", str(glb), str(shots)], cwd=BROWSER_DIR,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    (shots / "threejs.json").write_text(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert not [m for m in report["console"] if not m.startswith("warning")], report["console"]

    # one three.js Mesh per glTF primitive, each with its material, all read as physical
    meshes = {m["material"]["name"]: m for m in report["meshes"]}
    assert len(report["meshes"]) == 4 and sorted(meshes) == ["eyes", "mouth", "skin", "teeth"]
    # physical where the GLB has the specular / IOR extensions; the teeth are plain PBR
    assert {n: m["material"]["type"] for n, m in meshes.items()} == {
        "skin": "MeshPhysicalMaterial", "eyes": "MeshPhysicalMaterial",
        "mouth": "MeshPhysicalMaterial", "teeth": "MeshStandardMaterial",
    }  # fmt: skip
    # the 52 ARKit actions, by name, on every primitive (the eyes' all-zero) in the GLB's order
    for mesh in meshes.values():
        assert mesh["morph_targets"] == ARKIT and mesh["morph_position_count"] == 52
    # KHR_materials_specular and KHR_materials_ior as the GLB states them
    materials = {m["name"]: m for m in _gltf_json(glb)["materials"]}
    for name in ("skin", "mouth"):
        specular = materials[name]["extensions"]["KHR_materials_specular"]
        seen = meshes[name]["material"]
        assert seen["specularIntensityMap"] and seen["map"] and seen["normalMap"]
        assert seen["specularIntensity"] == specular.get("specularFactor", 1.0)
        assert seen["specularColor"] == pytest.approx(specular["specularColorFactor"])
    assert meshes["eyes"]["material"]["ior"] == pytest.approx(
        materials["eyes"]["extensions"]["KHR_materials_ior"]["ior"]
    )

    front, profile, jaw = (_rgba(shots / f"{n}.png") for n in ("front", "profile", "front_jawOpen"))
    size = front.shape[0]
    # front: a head-sized blob in the middle of the frame (the camera frames the neutral box)
    drawn = front[..., 3] > 0
    top, bottom, left, right = _box(drawn)
    assert 0.25 < drawn.mean() < 0.8, drawn.mean()
    assert 0.6 * size < bottom - top and 0.45 * size < right - left < bottom - top
    assert abs((left + right) / 2 - size / 2) < 0.1 * size
    # ... in skin colours (lit, not black): the face's middle, where cheeks, nose and eyes are
    middle = front[size * 3 // 8 : size * 5 // 8, size * 3 // 8 : size * 5 // 8]
    r, g, b = np.median(middle[middle[..., 3] > 0][:, :3], axis=0)
    assert r > g > b and 120 < r and r - b > 25, (r, g, b)
    # profile: a head from the side, not a sliver (as deep as it is wide, near enough)
    side = profile[..., 3] > 0
    side_top, side_bottom, side_left, side_right = _box(side)
    assert 0.25 < side.mean() < 0.8 and side_right - side_left > 0.9 * (right - left), side.mean()
    assert np.median(profile[side][:, 0]) > 100  # lit
    # jawOpen: the lower face changes (the mouth opens, the chin drops), the upper face does not
    changed = (np.abs(jaw - front).max(-1) > 40) | ((jaw[..., 3] > 0) != drawn)
    ys, xs = np.nonzero(changed)
    height = bottom - top
    assert changed.sum() > 0.01 * drawn.sum(), changed.sum()
    assert top + 0.55 * height < ys.mean() < bottom + 0.1 * height, (ys.mean(), top, bottom)
    assert abs(xs.mean() - (left + right) / 2) < 0.1 * (right - left)
    assert changed[: top + int(0.4 * height)].mean() < 0.002  # forehead, eyes: still
