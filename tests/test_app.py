"""The Gradio demo: builds, reconstructs the astronaut, reports the user's mistakes readably."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from skimage import data

import app
from app import build_demo, check_input, reconstruct
from pipelines import AvatarPipeline


@pytest.fixture(autouse=True)
def output_root(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "OUTPUT_ROOT", tmp_path / "openavatar-demo")
    return tmp_path / "openavatar-demo"


def test_build_demo():
    demo = build_demo()
    assert isinstance(demo, gr.Blocks)

    def block(elem_id):
        return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)

    assert block("photo").sources == ["upload", "webcam", "clipboard"]
    # the defaults shown are the pipeline's own (its model_index.json), not copies
    config = AvatarPipeline.load_config(app.WEIGHTS)
    steps = block("fit-steps")
    assert (steps.minimum, steps.maximum, steps.value) == (0, 150, config["num_fit_steps"])
    assert block("resolution").value == config["resolution"]
    assert block("face-index").maximum == config["max_num_faces"] - 1
    balance = block("white-balance")
    assert balance.value == config["white_balance"]
    assert [v for _, v in balance.choices] == ["camera", "skin_prior"]
    # and the text states no measured times (they go stale: bench/ measures them)
    text = " ".join(b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.value)
    assert "OpenAvatar" in text and not re.search(r"\d\s*(s|seconds?|min|minutes?)\b", text)


def test_examples_exist_and_are_small():
    for path in app.EXAMPLES:
        file = app.ROOT / path
        assert file.is_file(), path
        assert file.stat().st_size < 100_000, f"{path}: keep bundled examples small"
        assert min(Image.open(file).size) >= 256


@pytest.mark.slow  # a fresh interpreter imports gradio (about 5 s)
def test_import_is_light():
    heavy = ("diffusers", "mediapipe", "numba", "torch")
    code = f"import app, sys; print([m for m in {heavy} if m in sys.modules])"
    root = Path(app.__file__).parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow  # a reconstruction at 512 px plus the relit previews
def test_reconstruct_astronaut(output_root):
    stale = output_root / "stale"
    stale.mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    glb, gallery, render, relit, files, summary = reconstruct(
        data.astronaut(), 512, 0, 0, "skin_prior"
    )

    assert Path(glb).is_file() and Path(glb).suffix == ".glb"
    folder = Path(glb).parent
    assert folder.parent == output_root
    captions = [caption for _, caption in gallery]
    # whatever maps the pipeline makes, in its order; these at least
    assert captions[:2] == ["texture", "diffuse albedo"]
    assert {"shape normals", "shape normals (tangent)", "visibility"} <= set(captions)
    assert all(Path(p).is_file() and p.endswith(".png") for p, _ in gallery)
    assert Path(render).is_file()
    assert len(relit) == 8  # 4 environments x (photo view, 3/4 view)
    assert {c.split(",")[0] for _, c in relit} == {"studio", "overcast", "sunny", "window"}
    assert all(Image.open(p).size == (app.RELIGHT_SIZE, app.RELIGHT_SIZE) for p, _ in relit)
    assert [Path(f).name for f in files] == ["face.glb", "face.zip", "maps.zip"]
    served = [glb, render, *files] + [p for p, _ in gallery + relit]
    assert all(Path(p).is_file() and Path(p).is_relative_to(folder) for p in served)
    assert "512² maps" in summary and "0 fitting steps" in summary
    assert not stale.exists(), "request folders older than an hour are deleted"


def test_served_refuses_paths_outside_the_request_folder(tmp_path):
    folder = tmp_path / "request"
    folder.mkdir()
    assert app._served(folder / "a.png", folder) == str((folder / "a.png").resolve())
    with pytest.raises(RuntimeError, match="outside the output folder"):
        app._served(folder / ".." / "secret.txt", folder)


def test_no_image_is_a_readable_error():
    with pytest.raises(gr.Error, match="No photo"):
        check_input(None)


def test_not_an_image_is_a_readable_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(gr.Error, match="notes.png is not an image") as info:
        check_input(str(path))
    assert str(tmp_path) not in str(info.value), "the server's paths stay private"


def test_too_small_is_a_readable_error(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (40, 30)).save(path)
    with pytest.raises(gr.Error, match="tiny.png is 40x30 pixels.*Use a larger photo"):
        check_input(str(path))


def test_no_face_is_a_readable_error(output_root):
    grey = np.full((480, 640, 3), 128, np.uint8)
    with pytest.raises(gr.Error, match="No face found"):
        reconstruct(grey, 512, 0, 0)
    assert not output_root.exists() or not any(output_root.iterdir())


def test_face_number_out_of_range_is_a_readable_error():
    with pytest.raises(gr.Error, match="face number 3 requested"):
        reconstruct(data.astronaut(), 512, 3, 0)
