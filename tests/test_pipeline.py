"""End to end on a real photo (skimage's astronaut), save/load, Hub loading offline, exports."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from PIL import Image
from skimage import data

from modeling.errors import FaceIndexError, NoFaceFoundError, NotAnImageError
from modeling.export import read_glb, specular_reflectance
from modeling.face_model.head import load_head_model
from pipelines import AvatarPipeline
from pipelines.cli import main as cli_main
from pipelines.outputs import save_outputs
from rendering.camera import PinholeCamera
from rendering.color import linear_to_srgb, masked_psnr, srgb_to_linear
from rendering.mesh import vertex_normals
from rendering.render import rasterize_view, sample_uv_map
from rendering.sh import sh_shading

ROOT = Path(__file__).resolve().parents[1]
RES = 512


@pytest.fixture(scope="module")
def pipe():
    pipe = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()


# A 512 px reconstruction with the default photometric fit: the tests on it are marked slow.
@pytest.fixture(scope="module")
def out(pipe, photo):
    return pipe(photo, resolution=RES)


@pytest.mark.slow
def test_mesh_projects_onto_the_detected_landmarks(pipe, photo, out):
    # Without fitting, the landmark vertices project exactly onto the detections.
    unfitted = pipe(photo, resolution=128, num_fit_steps=0)
    verts_cam = unfitted.camera.object_to_camera(unfitted.mesh.vertices[:468].astype(np.float64))
    assert np.all(verts_cam[:, 2] < 0), "face must be in front of the camera"
    pixels = unfitted.camera.project(verts_cam)
    np.testing.assert_allclose(pixels, unfitted.landmarks.points[:, :2], atol=0.05)
    assert unfitted.fit is None
    # The photometric fit moves them by well under a pixel.
    verts_cam = out.camera.object_to_camera(out.mesh.vertices[:468].astype(np.float64))
    rms = np.sqrt(
        ((out.camera.project(verts_cam) - out.landmarks.points[:, :2]) ** 2).sum(1).mean()
    )
    assert rms < 1.0
    # A plausible head: metric size.
    width = np.ptp(out.mesh.vertices[:, 0])
    assert 0.10 < width < 0.20


@pytest.mark.slow
def test_fitting_improves_the_match_to_the_photo(out):
    assert out.fit is not None and 20 <= out.fit.steps <= 80
    before, after = out.fit.psnr_before[0], out.fit.psnr_after[0]
    # On the skin the photo shows (its skin mask: no fringe, no background) the first-order
    # start already matches well: measured 33.1 -> 37.3 dB (25.6 -> 31.7 at 40 steps without
    # the mask, the fringe counted).
    assert after > before + 3 and after > 33, (before, after)
    assert out.timings["fit"] > 0


@pytest.mark.slow
def test_maps_are_complete_and_in_range(out):
    for name in ("texture", "diffuse_albedo", "shape_normals", "shape_normals_tangent"):
        m = out.maps[name]
        assert m.shape == (RES, RES, 3) and m.dtype == np.float32, name
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, name
    # No holes: every texel of the colour maps is filled (completion leaves no black texel).
    for name in ("texture", "diffuse_albedo"):
        lum = out.maps[name].mean(-1)
        assert np.percentile(lum, 0.1) > 0.05, f"{name} has empty texels"
    vis = out.maps["visibility"]
    # the skin mask leaves out the fringe and the hair at the temples: 0.27 (0.35 without it)
    assert vis.shape == (RES, RES, 1) and 0.2 < vis.mean() < 0.8
    skin_seen = out.maps["skin_mask"]
    assert skin_seen.shape == (RES, RES, 1) and 0 <= skin_seen.min() and skin_seen.max() <= 1
    assert out.skin_mask.shape == out.image.shape[:2]
    # Skin colour: the albedo of the cheeks is reddish-beige, not grey or blue.
    cheek = out.maps["diffuse_albedo"][RES // 2 : RES // 2 + 20, RES // 5 : RES // 5 + 20]
    r, g, b = cheek.reshape(-1, 3).mean(0)
    assert r > g > b and r > 0.4
    # Shape normals point out of the face: +z (encoded > 0.5) in the chart's centre.
    assert out.maps["shape_normals"][RES // 2, RES // 2, 2] > 0.8
    np.testing.assert_allclose(
        out.maps["shape_normals_tangent"][RES // 2, RES // 2], [0.5, 0.5, 1], atol=0.01
    )


def _face_triangles(out, faces: np.ndarray) -> np.ndarray:
    """The face's own triangles of a head's skin (the exporters keep the triangle order)."""
    if out.head is None:
        return faces
    ring = load_head_model().ring_charts
    assert len(faces) == len(ring)
    return faces[~ring]


@pytest.mark.slow
def test_render_matches_photo(out, photo):
    mask = out.render_mask
    assert 5000 < mask.sum() < 20000  # the face, not the whole photo
    ys, xs = np.nonzero(mask)
    assert 150 < xs.mean() < 290 and 60 < ys.mean() < 190  # where the astronaut's face is
    # Inside the face (a 3-pixel rim left out: there the completion deliberately replaces
    # silhouette texels that may have sampled the background).
    interior = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    psnr = masked_psnr(out.render, photo / 255.0, interior)
    assert psnr > 30, psnr
    # and the lighting matters: the exported albedo under the exported light matches the photo
    # far better than under a flat light of the same mean (measured: 28.8 vs 21.2 dB)
    assert out.lighting.shape == (3, 9)
    verts = out.camera.object_to_camera(out.mesh.vertices.astype(np.float64))
    faces = _face_triangles(out, out.mesh.faces)  # the photo shows hair, not the head's scalp
    raster = rasterize_view(out.camera, verts, faces)
    uv = raster.interpolate(out.mesh.uvs.astype(np.float64), faces)
    normals = raster.interpolate(vertex_normals(verts, faces), faces)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    albedo = srgb_to_linear(sample_uv_map(out.maps["diffuse_albedo"], uv))
    shading = sh_shading(normals, out.lighting) * sample_uv_map(out.maps["ambient_occlusion"], uv)
    # on the photo's skin: hair and other occluders are not the albedo's (out.skin_mask)
    target, skin = photo[raster.mask] / 255.0, out.skin_mask[raster.mask] > 0.5
    shaded = masked_psnr(linear_to_srgb(albedo * shading), target, skin)
    flat = masked_psnr(linear_to_srgb(albedo * shading.mean(0)), target, skin)
    assert shaded > 26 and shaded > flat + 5, (shaded, flat)


@pytest.mark.slow
def test_exports_round_trip_and_render_like_the_photo(out, photo, tmp_path):
    paths = save_outputs(out, tmp_path / "astronaut")
    for key in ("glb", "obj", "camera", "render", "zip"):
        assert paths[key].is_file(), key
    loaded = trimesh.load(paths["glb"])
    mesh = next(iter(loaded.geometry.values())) if isinstance(loaded, trimesh.Scene) else loaded
    assert len(mesh.vertices) == len(out.mesh.vertices)
    material = mesh.visual.material
    assert material.baseColorTexture.size == (RES, RES)
    assert material.normalTexture.size == (RES, RES)
    assert material.occlusionTexture.size == (RES, RES)
    tree, _ = read_glb(paths["glb"].read_bytes())
    assert tree["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] >= 0

    # Re-render the exported asset with the exported camera and light: it must match the photo.
    cam_json = json.loads(paths["camera"].read_text())
    camera = PinholeCamera.from_dict(cam_json["camera"])
    coeffs = np.asarray(cam_json["lighting"]["sh_coefficients"])
    verts = camera.object_to_camera(np.asarray(mesh.vertices, dtype=np.float64))
    faces = np.asarray(mesh.faces)
    uvs = np.asarray(mesh.visual.uv, dtype=np.float64)
    albedo = np.asarray(material.baseColorTexture.convert("RGB"), dtype=np.float32) / 255
    if "specular_albedo" in out.maps:  # glTF's base colour is the albedo / (1 - F)
        keep = 1 - specular_reflectance(out.maps["specular_albedo"])
        albedo = linear_to_srgb(srgb_to_linear(albedo) * keep.reshape(albedo.shape[:2] + (1,)))
    faces = _face_triangles(out, faces)  # the photo shows hair, not the head's scalp
    raster = rasterize_view(camera, verts, faces)
    covered = raster.mask
    uv = raster.interpolate(uvs, faces)
    nrm = raster.interpolate(vertex_normals(verts, faces), faces)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    occlusion = np.asarray(material.occlusionTexture, dtype=np.float32)[..., :1] / 255
    shading = sh_shading(nrm, coeffs) * sample_uv_map(occlusion, uv)
    shaded = linear_to_srgb(srgb_to_linear(sample_uv_map(albedo, uv)) * shading)
    # With the de-lighting network the base colour is the network's albedo: the shading it
    # removed (beyond the 2nd-order SH on the smooth mesh) is gone from the asset, so the match
    # is looser than with the first-order albedo (which keeps that shading and gives > 28 dB).
    threshold = 21 if "diffuse_albedo_first_order" in out.maps else 28
    skin = out.skin_mask[covered] > 0.5  # the photo's skin: its hair is not the albedo's
    assert masked_psnr(shaded, photo[covered] / 255.0, skin) > threshold
    # the face's triangles cover the face the render covers, less the open mouth (the head's
    # mouth is its own primitive)
    assert covered.sum() == pytest.approx(
        out.render_mask.sum(), rel=0.02 if out.head is None else 0.05
    )


def test_save_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "AvatarPipeline"]  # pipeline.py, for diffusers
    again = AvatarPipeline.from_pretrained(tmp_path / "saved")
    keys = ("resolution", "fov_degrees", "max_num_faces", "min_face_size")
    assert {k: again.config[k] for k in keys} == {k: pipe.config[k] for k in keys}


def test_from_pretrained_by_repo_id_uses_the_hub_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someorg--openavatar"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    config = json.loads((ROOT / "weights_config" / "model_index.json").read_text())
    config["resolution"] = 512
    (snapshot / "model_index.json").write_text(json.dumps(config))
    for name, value in config.items():  # the reflectance networks' folders
        if not name.startswith("_") and isinstance(value, list) and None not in value:
            shutil.copytree(ROOT / "weights_config" / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pipe = AvatarPipeline.from_pretrained("someorg/openavatar", cache_dir=tmp_path / "hub")
    assert pipe.config.resolution == 512


def test_bad_input_is_refused_clearly(pipe, tmp_path):
    with pytest.raises(NoFaceFoundError, match="No face"):
        pipe(np.full((300, 300, 3), 128, np.uint8))
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    with pytest.raises(NotAnImageError, match="notes.jpg"):
        pipe(not_image)
    with pytest.raises(ValueError, match="resolution"):
        pipe(data.astronaut(), resolution=10_000)
    with pytest.raises(FaceIndexError, match="face number 3"):
        pipe(data.astronaut(), face_index=3)


def test_cli_tiny_run_writes_a_loadable_asset_and_reports_errors(tmp_path, capsys):
    """The fast loop's end-to-end run: 128 px maps, landmarks only (no photometric fit)."""
    photo = data.astronaut()
    Image.fromarray(photo).save(tmp_path / "astro.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    assert cli_main([str(tmp_path), "-o", str(tmp_path / "out"), "--resolution", "128",
                     "--fit-steps", "0"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert cli_main([str(tmp_path / "astro.png"), "-o", str(tmp_path / "patch"), "--resolution",
                     "128", "--fit-steps", "0", "--face-only"]) == 0  # fmt: skip
    patch = trimesh.load(tmp_path / "patch" / "astro" / "face.glb", force="mesh")
    assert len(patch.vertices) == 7305
    folder = tmp_path / "out" / "astro"
    scene = trimesh.load(folder / "face.glb")  # the head: skin, eyes, mouth
    skin = max(scene.geometry.values(), key=lambda g: len(g.vertices))
    assert len(scene.geometry) == 4 and len(skin.vertices) > 7305  # skin, eyes, mouth, teeth
    assert skin.visual.material.baseColorTexture.size == (128, 128)
    assert Image.open(folder / "maps" / "diffuse_albedo.png").size == (128, 128)
    camera = json.loads((folder / "camera.json").read_text())
    assert np.asarray(camera["lighting"]["sh_coefficients"]).shape == (3, 9)
    # the render is the photo with the face redrawn: close to it, changed only on the face
    render = np.asarray(Image.open(folder / "render.png").convert("RGB"))
    changed = np.abs(render.astype(int) - photo).max(-1) > 2
    ys, xs = np.nonzero(changed)
    assert 150 < xs.mean() < 290 and 60 < ys.mean() < 190  # where the astronaut's face is
    assert masked_psnr(render / 255.0, photo / 255.0, changed) > 25
    assert cli_main([str(tmp_path / "missing.jpg")]) == 2


@pytest.mark.slow  # a 256 px reconstruction with the default fit
def test_pil_output_type(pipe, photo):
    out = pipe(Image.fromarray(photo), resolution=256, output_type="pil")
    assert out.maps["diffuse_albedo"].size == (256, 256)
    assert out.render.size == (512, 512)


@pytest.mark.slow  # two 256 px reconstructions, one with a fit
def test_cli_one_photo_and_errors(tmp_path, capsys):
    photo = tmp_path / "in" / "astro.png"
    photo.parent.mkdir()
    Image.fromarray(data.astronaut()).save(photo)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    assert (
        cli_main(
            [str(photo), "-o", str(tmp_path / "out"), "--resolution", "256", "--fit-steps", "10"]
        )
        == 0
    )
    assert (tmp_path / "out" / "astro" / "face.glb").is_file()
    # A folder with one good and one broken photo: the good one is done, exit code is 1.
    code = cli_main(
        [
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out2"),
            "--resolution",
            "256",
            "--fit-steps",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "out2" / "astro" / "face.glb").is_file()
    assert cli_main([str(tmp_path / "missing.jpg")]) == 2


@pytest.mark.slow  # two faces
def test_cli_max_faces_writes_one_folder_per_face(tmp_path):
    astro = data.astronaut()
    small = np.asarray(Image.fromarray(astro).resize((384, 384)))
    group = np.full((512, 900, 3), 200, np.uint8)
    group[:, :512] = astro
    group[64:448, 512:896] = small
    Image.fromarray(group).save(tmp_path / "group.png")
    out = tmp_path / "out"
    assert (
        cli_main(
            [
                str(tmp_path / "group.png"),
                "-o",
                str(out),
                "--max-faces",
                "3",
                "--resolution",
                "128",
                "--fit-steps",
                "0",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["group_face0", "group_face1"]


@pytest.mark.slow  # a fit on two photos, then one more run
def test_several_photos_of_one_person_give_one_avatar(pipe, photo):
    # The astronaut and a mirrored copy: nearly the same person seen from the other side (the
    # face is not exactly symmetric, so one shared albedo fits each photo a little less well).
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    out = pipe([photo, mirrored], resolution=256, num_fit_steps=20)
    assert len(out.views) == 2 and out.fit.rotations.shape == (2, 3, 3)
    assert out.maps["diffuse_albedo"].shape == (256, 256, 3)
    assert out.mesh.vertices.shape == out.head.skin.vertices.shape  # one head
    # each photo has its own camera: the mirrored photo's face is on the other side
    x0 = out.views[0].landmarks.points[:, 0].mean()
    x1 = out.views[1].landmarks.points[:, 0].mean()
    assert x0 == pytest.approx(512 - x1, abs=2)
    for view, image in zip(out.views, (photo, mirrored), strict=True):
        assert masked_psnr(view.render, image / 255.0, view.render_mask) > 22
    # both photos see the texels: combined visibility covers more than one photo alone
    single = pipe(photo, resolution=256, num_fit_steps=0)
    assert out.maps["visibility"].mean() > single.maps["visibility"].mean() + 0.02


@pytest.mark.slow  # a fit on two photos
def test_cli_same_person_folder_gives_one_avatar(tmp_path):
    folder = tmp_path / "person"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "a.png")
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:, ::-1])).save(folder / "b.png")
    out = tmp_path / "out"
    args = [str(folder), "-o", str(out), "--same-person", "--resolution", "128", "--fit-steps", "5"]
    assert cli_main(args) == 0
    assert (out / "person" / "face.glb").is_file()


def test_cli_unwrap_resolution_flag():
    from modeling.reconstruction.texture import UNWRAP_MODES
    from pipelines.batch import build_parser as batch_parser
    from pipelines.cli import build_parser

    assert build_parser().parse_args(["x.jpg"]).unwrap_resolution is None  # the config decides
    for mode in UNWRAP_MODES:  # the CLIs list the modes without importing the pipeline
        assert build_parser().parse_args(["x.jpg", "--unwrap-resolution", mode])
    assert (
        build_parser().parse_args(["x.jpg", "--unwrap-resolution", "1024"]).unwrap_resolution
        == 1024
    )
    for bad in ("on", "63", "-5", "1e3"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["x.jpg", "--unwrap-resolution", bad])
    with pytest.raises(SystemExit):
        batch_parser().parse_args(["--input", "a", "--output", "b", "--unwrap-resolution", "x"])


@pytest.mark.slow  # two 2048 px reconstructions
def test_large_maps_unwrap_at_the_photos_detail(pipe):
    """At 2048 px the astronaut (a face about 95 px wide) is unwrapped at 512 px and upsampled:
    the maps are those of the full-size unwrap up to the resampling."""

    photo = data.astronaut()
    full = pipe(photo, resolution=2048, num_fit_steps=0, unwrap_resolution="full")
    auto = pipe(photo, resolution=2048, num_fit_steps=0)  # the config's "auto"
    for out in (full, auto):
        assert out.maps["texture"].shape == (2048, 2048, 3)
        assert out.maps["visibility"].shape == (2048, 2048, 1)
    assert auto.timings["unwrap_and_delight"] < full.timings["unwrap_and_delight"]
    seen = full.maps["visibility"][..., 0] > 0.5
    error = np.abs(auto.maps["texture"] - full.maps["texture"])[seen].mean()
    assert error < 0.02
    with pytest.raises(ValueError, match="unwrap_resolution"):
        pipe(photo, resolution=2048, unwrap_resolution="on")


def _mean_ab(srgb: np.ndarray, where: np.ndarray) -> np.ndarray:
    """a*, b* of the mean linear colour of `srgb` `(R, R, 3)` over `where` `(R, R)`."""
    from skimage.color import rgb2lab

    mean = linear_to_srgb(srgb_to_linear(srgb)[where].mean(0))
    return rgb2lab(mean[None, None])[0, 0, 1:]


@pytest.mark.slow
def test_white_balance_camera_keeps_the_photos_colour(pipe, out):
    maps = out.maps
    seen = maps["visibility"][..., 0] > 0.5
    shape_maps = {k: maps[k] for k in ("shape_normals", "ambient_occlusion")}
    first = maps["diffuse_albedo_first_order"]

    def albedo(mode):  # the networks again on the pipeline's own first-order maps
        found = pipe.reflectance_maps(maps["texture"], first, shape_maps, maps["visibility"],
                                       None, mode)  # fmt: skip
        return found["diffuse_albedo"]

    camera, prior = albedo("camera"), albedo("skin_prior")
    np.testing.assert_array_equal(camera, maps["diffuse_albedo"])  # the default
    # The photo's white balance is kept: the albedo's mean colour stays the first-order one's
    # (only its exposure and the local shading and highlights change); the skin prior moves it.
    ab_first = _mean_ab(first, seen)
    assert np.linalg.norm(_mean_ab(camera, seen) - ab_first) < 1.5
    assert np.linalg.norm(_mean_ab(prior, seen) - ab_first) > 2.5
    with pytest.raises(ValueError, match="white_balance must be one of"):
        AvatarPipeline(white_balance="auto")
    with pytest.raises(ValueError, match="white_balance must be one of"):
        pipe(data.astronaut(), resolution=RES, num_fit_steps=0, white_balance="grey")
