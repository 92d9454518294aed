"""Gradio demo: one face photo -> a textured 3D face (GLB), its UV maps, a render over the photo
and relit previews.

Run:  python app.py            (then open http://127.0.0.1:7860; GRADIO_SERVER_PORT to change)

The pipeline is loaded once, on the first request; one reconstruction runs at a time (the face
tracker and the numba rasterizer are not meant to run concurrently: a lock, besides the queue's
concurrency limit, since example caching runs outside that event). Each request writes its files
into its own folder under `<tempdir>/openavatar-demo/`; folders older than an hour are deleted at
each request, and Gradio's copies of them by `delete_cache`. Gradio serves only its own copies of
what the functions return, and they return only files from the request's folder.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import gradio as gr

from modeling.errors import (
    AvatarInputError,
    ImageTooSmallError,
    NoFaceFoundError,
    NotAnImageError,
)

ROOT = Path(__file__).resolve().parent
WEIGHTS = ROOT / "weights_config"
EXAMPLES = {
    "examples/astronaut.jpg": "Astronaut (photo)",
    "examples/relit_turned_30.jpg": "Reconstruction, turned 30°, window light",
    "examples/relit_sunny.jpg": "Reconstruction, sunny",
    "examples/synthetic_mean_face.jpg": "Synthetic mean face",
}
OUTPUT_ROOT = Path(tempfile.gettempdir()) / "openavatar-demo"
MAX_AGE_S = 3600
RESOLUTIONS = [512, 1024, 2048]
MAX_FIT_STEPS = 150
MAX_FILE_SIZE = "20mb"
RELIGHT_SIZE = 384

_load_lock = threading.Lock()
_run_lock = threading.Lock()

# What to tell the user after the loader's or tracker's own message.
_HINTS = {
    NoFaceFoundError: "Use a photo where one face is clearly visible, roughly frontal and lit.",
    ImageTooSmallError: "Use a larger photo, or one taken closer to the face.",
    NotAnImageError: "Upload a JPEG, PNG or WebP photo.",
}


def _config() -> dict:
    """The pipeline's settings (`model_index.json`), read without loading the networks: the UI's
    defaults are the pipeline's."""
    return json.loads((WEIGHTS / "model_index.json").read_text())


@functools.cache
def _load_pipeline():
    # Heavy imports here, not at module level: importing app.py stays cheap.
    import torch

    from pipelines import AvatarPipeline

    pipe = AvatarPipeline.from_pretrained(WEIGHTS)
    if torch.cuda.is_available():
        pipe = pipe.to("cuda")
    pipe.set_progress_bar_config(desc="Reconstructing")
    return pipe


def get_pipeline():
    """The `AvatarPipeline`, loaded on the first call (thread-safe) and kept."""
    with _load_lock:
        return _load_pipeline()


def _caption(key: str) -> str:
    """`shape_normals_tangent` -> `shape normals (tangent)`."""
    if key.endswith("_tangent"):
        key = key.removesuffix("_tangent") + " (tangent)"
    return key.replace("_", " ")


def _user_message(error: AvatarInputError, image) -> str:
    """The error's message, without the server-side path of the upload, plus a hint."""
    message = str(error)
    if isinstance(image, str | Path):
        message = message.replace(str(image), Path(image).name)
    hint = next((h for cls, h in _HINTS.items() if isinstance(error, cls)), "")
    return f"{message}. {hint}".replace(".. ", ". ").strip()


def _delete_old_folders(root: Path, max_age_s: float = MAX_AGE_S) -> None:
    if not root.is_dir():
        return
    cutoff = time.time() - max_age_s
    for child in root.iterdir():
        try:
            if child.is_dir() and child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:  # removed meanwhile by another request
            pass


def _new_request_folder() -> Path:
    _delete_old_folders(OUTPUT_ROOT)
    folder = OUTPUT_ROOT / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def _served(path: Path, folder: Path) -> str:
    """`path` as a string, refusing anything outside the request's folder (the only files the
    demo hands to Gradio to serve)."""
    path = Path(path).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise RuntimeError(f"refusing to serve {path}: outside the output folder")
    return str(path)


def check_input(image) -> None:
    """Fail fast, before the queue: no photo, not an image, too small (cheap: decodes only)."""
    if image is None:
        raise gr.Error(
            "No photo given: upload a photo with a face, or pick an example.",
            print_exception=False,
        )
    from modeling.inputs.photo import load_image

    try:
        load_image(image)
    except AvatarInputError as e:
        raise gr.Error(_user_message(e, image), print_exception=False) from e


def _summary(out, face_index: int, num_fit_steps: int, seconds: float) -> str:
    stages = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in out.timings.items())
    text = (
        f"**Face {face_index}**, {out.maps['diffuse_albedo'].shape[0]}² maps, "
        f"{num_fit_steps} fitting steps: {seconds:.1f} s ({stages})."
    )
    if out.fit is not None and out.fit.psnr_after:
        text += (
            f" Photometric fit: skin PSNR {out.fit.psnr_before[0]:.1f} → "
            f"{out.fit.psnr_after[0]:.1f} dB."
        )
    return text


def reconstruct(
    image,
    resolution=None,
    face_index=0,
    num_fit_steps=None,
    white_balance=None,
    progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio injects it by this default)
):
    """Photo -> (GLB path, [(map path, caption)], render path, [(relit path, caption)],
    [GLB, zip of everything (OBJ, maps, camera), zip of the maps], summary markdown).

    `image`: a file path (as the UI sends it) or an RGB array; `resolution`: UV map size in
    pixels; `num_fit_steps`: photometric fitting steps (at most `MAX_FIT_STEPS`);
    `white_balance`: "camera" or "skin_prior" (each None: the pipeline's default).
    """
    check_input(image)  # also reached directly through the API
    from modeling.export import write_zip
    from pipelines.outputs import save_outputs
    from rendering.relight import relight_previews

    start = time.perf_counter()
    face_index = int(face_index or 0)
    progress(0, desc="Loading the pipeline")
    pipe = get_pipeline()
    if num_fit_steps is None:
        num_fit_steps = pipe.config.num_fit_steps
    num_fit_steps = max(0, min(int(num_fit_steps), MAX_FIT_STEPS))
    progress(0, desc="Waiting for the previous reconstruction")
    with _run_lock:
        try:
            out = pipe(
                image,
                resolution=int(resolution) if resolution else None,
                face_index=face_index,
                num_fit_steps=num_fit_steps,
                white_balance=white_balance or None,
            )
        except AvatarInputError as e:  # no face, face too small, not an image...: the user's doing
            raise gr.Error(_user_message(e, image), print_exception=False) from e
        except ValueError as e:  # bad resolution; may be a bug: keep the traceback
            raise gr.Error(str(e)) from e
        progress(0.9, desc="Relighting")
        previews = relight_previews(out, size=RELIGHT_SIZE)
    progress(0.95, desc="Writing files")
    folder = _new_request_folder()
    paths = save_outputs(out, folder)
    map_paths = [paths[f"map:{key}"] for key in out.maps]
    maps_zip = write_zip(map_paths, folder / "maps.zip")
    relit = []
    (folder / "relit").mkdir()
    for i, (preview, caption) in enumerate(previews):
        path = folder / "relit" / f"{i:02d}_{caption.split(',')[0]}.png"
        preview.save(path)
        relit.append((_served(path, folder), caption))
    gallery = [(_served(paths[f"map:{key}"], folder), _caption(key)) for key in out.maps]
    glb = _served(paths["glb"], folder)
    files = [glb, _served(paths["zip"], folder), _served(maps_zip, folder)]
    summary = _summary(out, face_index, num_fit_steps, time.perf_counter() - start)
    return glb, gallery, _served(paths["render"], folder), relit, files, summary


def _reconstruct_example(image, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """An example photo with the default settings (cached lazily, for every visitor)."""
    return reconstruct(image, progress=progress)


def build_demo() -> gr.Blocks:
    config = _config()  # the defaults shown are the pipeline's
    with gr.Blocks(title="OpenAvatar", delete_cache=(MAX_AGE_S, MAX_AGE_S)) as demo:
        gr.Markdown(
            "# OpenAvatar\nOne photo of a face → a textured 3D face: mesh (GLB, OBJ), UV maps "
            "(texture, diffuse and specular albedo, diffuse and specular normals, shape normals, "
            "occlusion, visibility), a render over the photo and "
            "previews relit under new light. Runs on a CPU; larger maps and more fitting steps "
            "take longer."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="filepath",  # the original file: our loader applies EXIF, size guards
                    image_mode=None,
                    sources=["upload", "webcam", "clipboard"],
                    label="Photo of a face",
                    elem_id="photo",
                )
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    resolution = gr.Radio(
                        sorted({*RESOLUTIONS, config["resolution"]}),
                        value=config["resolution"],
                        label="UV map resolution (pixels)",
                        elem_id="resolution",
                    )
                    num_fit_steps = gr.Slider(
                        0,
                        MAX_FIT_STEPS,
                        value=config["num_fit_steps"],
                        step=1,
                        label="Photometric fitting steps (0 = landmarks only, fastest)",
                        elem_id="fit-steps",
                    )
                    face_index = gr.Slider(
                        0,
                        config["max_num_faces"] - 1,
                        value=0,
                        step=1,
                        label="Face (0 = largest, when the photo has several)",
                        elem_id="face-index",
                    )
                    white_balance = gr.Radio(
                        [
                            ("The photo's", "camera"),
                            ("Re-balanced by the skin prior", "skin_prior"),
                        ],
                        value=config["white_balance"],
                        label="Albedo white balance",
                        elem_id="white-balance",
                    )
                btn = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
                summary = gr.Markdown(elem_id="summary")
            with gr.Column():
                model = gr.Model3D(label="3D face (GLB)", height=420, elem_id="model3d")
                render = gr.Image(label="Render over the photo", type="filepath", elem_id="render")
        maps = gr.Gallery(
            label="UV maps", columns=5, height="auto", object_fit="contain", elem_id="maps"
        )
        relit = gr.Gallery(
            label="Relit previews (our skin shader: studio, overcast, sunny, window light)",
            columns=4,
            height=640,  # "auto" caps a gallery at 550 px: the second row would be cut
            object_fit="contain",
            elem_id="relit",
        )
        files = gr.File(
            label="Downloads: GLB, zip of everything (OBJ + maps + camera), zip of the maps",
            file_count="multiple",
            elem_id="downloads",
        )
        outputs = [model, maps, render, relit, files, summary]
        gr.Examples(
            [[str(ROOT / path)] for path in EXAMPLES],
            inputs=image,
            outputs=outputs,
            fn=_reconstruct_example,
            cache_examples=True,
            cache_mode="lazy",  # eager would reconstruct every example at start-up
            example_labels=list(EXAMPLES.values()),
        )

        btn.click(check_input, inputs=image, queue=False, api_visibility="private").success(
            reconstruct,
            inputs=[image, resolution, face_index, num_fit_steps, white_balance],
            outputs=outputs,
            api_name="reconstruct",
        )
    return demo


if __name__ == "__main__":
    build_demo().queue(max_size=16, default_concurrency_limit=1).launch(max_file_size=MAX_FILE_SIZE)
