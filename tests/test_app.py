"""The Gradio demo: builds, reconstructs the astronaut, reports the user's mistakes readably."""

import os
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from skimage import data

import app
from app import build_demo, check_input, reconstruct


@pytest.fixture(autouse=True)
def output_root(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "OUTPUT_ROOT", tmp_path / "openavatar-demo")
    return tmp_path / "openavatar-demo"


def test_build_demo():
    assert isinstance(build_demo(), gr.Blocks)


def test_import_is_light():
    heavy = ("diffusers", "mediapipe", "numba", "torch")
    code = f"import app, sys; print([m for m in {heavy} if m in sys.modules])"
    root = Path(app.__file__).parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_reconstruct_astronaut(output_root):
    stale = output_root / "stale"
    stale.mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    glb, gallery, render, files = reconstruct(data.astronaut(), 512, 0)

    assert Path(glb).is_file() and Path(glb).suffix == ".glb"
    assert Path(glb).parent.parent == output_root
    captions = [caption for _, caption in gallery]
    assert captions == [
        "texture",
        "diffuse albedo",
        "shape normals",
        "shape normals (tangent)",
        "visibility",
    ]
    assert all(Path(p).is_file() and p.endswith(".png") for p, _ in gallery)
    assert Path(render).is_file()
    assert [Path(f).suffix for f in files] == [".glb", ".zip"]
    assert all(Path(f).is_file() for f in files)
    assert not stale.exists(), "request folders older than an hour are deleted"


def test_no_image_is_a_readable_error():
    with pytest.raises(gr.Error, match="No photo"):
        check_input(None)


def test_no_face_is_a_readable_error(output_root):
    grey = np.full((480, 640, 3), 128, np.uint8)
    with pytest.raises(gr.Error, match="No face found"):
        reconstruct(grey, 512, 0)
    assert not output_root.exists() or not any(output_root.iterdir())


def test_face_number_out_of_range_is_a_readable_error():
    with pytest.raises(gr.Error, match="face number 3 requested"):
        reconstruct(data.astronaut(), 512, 3)
