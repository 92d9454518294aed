"""The Gradio demo: builds, reconstructs the astronaut, reports the user's mistakes readably."""

import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from skimage import data

import app
from app import build_demo, check_input, reconstruct
from bench.bench_demo_load import bad_uploads, free_port
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

    glb, gallery, render, relit, files, summary, warnings = reconstruct(
        data.astronaut(), 512, 0, 0, "skin_prior"
    )

    assert Path(glb).is_file() and Path(glb).suffix == ".glb"
    folder = Path(glb).parent
    assert folder.parent == output_root
    captions = [caption for _, caption in gallery]
    # whatever maps the pipeline makes, in its order; these at least
    assert captions[:2] == ["texture", "diffuse albedo"]
    assert {"shape normals", "shape normals (tangent)", "visibility"} <= set(captions)
    assert {"skin mask", "skin mask (photo)"} <= set(captions)  # UV and photo space
    assert all(Path(p).is_file() and p.endswith(".png") for p, _ in gallery)
    assert Path(render).is_file()
    assert len(relit) == 9  # 4 environments x (photo view, 3/4 view), the head in profile
    assert "studio, 90° view" in [c for _, c in relit]
    assert {c.split(",")[0] for _, c in relit} == {"studio", "overcast", "sunny", "window"}
    assert all(Image.open(p).size == (app.RELIGHT_SIZE, app.RELIGHT_SIZE) for p, _ in relit)
    assert [Path(f).name for f in files] == ["face.glb", "face.zip", "maps.zip"]
    served = [glb, render, *files] + [p for p, _ in gallery + relit]
    assert all(Path(p).is_file() and Path(p).is_relative_to(folder) for p in served)
    assert "512² maps" in summary and "0 fitting steps" in summary
    assert warnings == "", "a well-lit frontal photo raises no warning"
    assert not stale.exists(), "folders left by an earlier run are deleted"


@pytest.mark.slow  # a reconstruction at 128 px, its files and previews
def test_write_results_writes_the_files_and_the_previews_rendered_alongside(tmp_path):
    from rendering.relight import relight_previews

    out = app.get_pipeline()("examples/astronaut.jpg", resolution=128, num_fit_steps=0)
    paths, maps_zip, relit = app.write_results(out, tmp_path)
    assert all(paths[kind].is_file() for kind in ("glb", "obj", "zip", "render", "input"))
    with zipfile.ZipFile(maps_zip) as archive:
        assert archive.namelist() == [f"{key}.png" for key in out.maps]
    previews = relight_previews(out, size=app.RELIGHT_SIZE)
    assert [caption for _, caption in relit] == [caption for _, caption in previews]
    for (path, caption), (image, _) in zip(relit, previews, strict=True):
        assert path.parent == tmp_path / "relit" and path.suffix == ".png"
        with Image.open(path) as written:  # the same pixels as the rendered preview
            np.testing.assert_array_equal(np.asarray(written), np.asarray(image), caption)


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


@pytest.mark.slow  # a reconstruction at 512 px
def test_a_very_dark_photo_is_reconstructed_with_a_warning():
    dark = (data.astronaut() * 0.05).astype(np.uint8)
    *_, summary, warnings = reconstruct(dark, 512, 0, 0)
    assert "512² maps" in summary
    assert "Check this reconstruction" in warnings and "very dark" in warnings


def test_a_resolution_not_offered_is_refused():
    with pytest.raises(gr.Error, match="resolution 4096 is not offered"):
        reconstruct(data.astronaut(), 4096, 0, 0)


# --- Uploads and the demo's files on disk (issue 20, items 3 and 5) ---


def _launch(tmp_path, monkeypatch):
    """The demo as `python app.py` launches it (`launch_demo`), in this process, on a free port,
    Gradio's folder under tmp_path."""
    monkeypatch.setattr(app, "GRADIO_DIR", tmp_path / "gradio")
    monkeypatch.setattr(app, "_own_gradio_dir", None)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "unused"))  # restored afterwards
    return app.launch_demo(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []


def test_bad_uploads_get_the_loaders_message_through_the_http_api(tmp_path, monkeypatch, capfd):
    demo = _launch(tmp_path, monkeypatch)
    try:
        client = Client(demo.local_url, verbose=False)
        for path, message in bad_uploads(tmp_path / "uploads").items():
            with pytest.raises(AppError, match=message):
                client.predict(handle_file(str(path)), 512, 0, 0, "camera", api_name="/reconstruct")
        # the uploads left Gradio's (served) folder at once: only the bundled examples are there
        assert all(app._is_example(f) for f in _files(app._own_gradio_dir))
    finally:
        demo.close()
    assert "Traceback" not in capfd.readouterr().err, "the user's mistakes are not logged as bugs"


def test_an_upload_is_taken_out_of_gradios_folder_and_kept_for_its_session(
    tmp_path, monkeypatch, output_root
):
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    upload = uploads / ("a" * 64) / "face.png"
    upload.parent.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(upload)
    alice, mallory = SimpleNamespace(session_hash="alice"), SimpleNamespace(session_hash="mallory")

    check_input({"path": str(upload)}, alice)
    assert not upload.exists(), "no longer served to whoever has its path"
    [copy] = output_root.glob("*/face.png")
    check_input({"path": str(upload)}, alice)  # Reconstruct again (other settings): the copy
    with pytest.raises(gr.Error, match=r"face\.png is no longer on the server .*upload it again"):
        check_input({"path": str(upload)}, mallory)
    app._end_session(alice)
    assert not copy.exists(), "a session's photos go when it ends"

    example = uploads / ("b" * 64) / "astronaut.jpg"  # Gradio's copy of a bundled example
    example.parent.mkdir()
    example.write_bytes((app.ROOT / "examples" / "astronaut.jpg").read_bytes())
    check_input({"path": str(example)}, alice)
    assert example.is_file(), "the examples are shared by every visitor"


def test_files_expire_and_their_total_is_capped(tmp_path, monkeypatch, output_root):
    monkeypatch.setattr(app, "KEEP_S", 100)
    monkeypatch.setattr(app, "CLEANUP_EVERY_S", 10)
    monkeypatch.setattr(app, "MAX_DISK_MB", 0.9)
    gradio_dir = tmp_path / "gradio"
    monkeypatch.setattr(app, "_own_gradio_dir", gradio_dir)
    now = time.time()
    results = app._new_folder("s")
    (results / "face.glb").write_bytes(bytes(300_000))
    photo = app._new_folder("s", upload="upload/face.png")
    (photo / "face.png").write_bytes(bytes(100_000))
    copies = []  # Gradio's copies of earlier results, oldest first
    for age in (50, 40, 30):
        copy = gradio_dir / f"{age:064d}" / "face.glb"
        copy.parent.mkdir(parents=True)
        copy.write_bytes(bytes(300_000))
        os.utime(copy.parent, (now - age, now - age))
        copies.append(copy.parent)
    empty = gradio_dir / ("e" * 64)  # emptied by Gradio's delete_cache
    empty.mkdir()
    os.utime(empty, (now - 20, now - 20))

    app.sweep(now + 5)  # 1.3 MB, over 0.9: the two oldest copies go
    assert [c.exists() for c in copies] == [False, False, True]
    assert results.exists() and photo.exists() and not empty.exists()
    app.sweep(now + 11)  # Gradio has long copied what it serves: the request's folder goes
    assert not results.exists() and photo.exists()
    with app._in_use(photo):
        app.sweep(now + 1000)
        assert photo.exists(), "never deleted while a request uses it"
    app.sweep(time.time() + 101)
    assert not photo.exists()


@pytest.mark.slow  # two reconstructions at 512 px
def test_the_demos_folders_empty_after_the_keep_time_and_at_shutdown(
    tmp_path, monkeypatch, output_root
):
    monkeypatch.setattr(app, "KEEP_S", 8)
    monkeypatch.setattr(app, "CLEANUP_EVERY_S", 1)
    demo = _launch(tmp_path, monkeypatch)  # Gradio's delete_cache: every 1 s, older than 8 s
    gradio_dir = app._own_gradio_dir
    try:
        photo = tmp_path / "face.png"  # not the bundled example's bytes: an upload like any other
        Image.fromarray(data.astronaut()).save(photo)
        client = Client(demo.local_url, verbose=False)
        for _ in range(2):
            glb, *_ = client.predict(
                handle_file(str(photo)), 512, 0, 0, "camera", api_name="/reconstruct"
            )
            assert Path(glb).stat().st_size > 100_000  # downloaded from the server
        assert _files(output_root), "the session's photo is kept for its next request"
        time.sleep(app.KEEP_S + 3 * app.CLEANUP_EVERY_S)
        assert _files(output_root) == [], "photos and results are deleted after KEEP_S"
        assert all(app._is_example(f) for f in _files(gradio_dir)), "and Gradio's copies"
        assert all(any(d.iterdir()) for d in gradio_dir.iterdir()), "no empty folders left"
    finally:
        demo.close()
    assert not gradio_dir.exists(), "Gradio's folder goes at shutdown"
