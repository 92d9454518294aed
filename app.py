"""Gradio demo: one face photo -> a textured 3D face (GLB), its UV maps and a render.

Run:  python app.py            (then open http://127.0.0.1:7860; GRADIO_SERVER_PORT to change)

The pipeline is loaded once, on the first request; one reconstruction runs at a time (the face
tracker and the numba rasterizer are not meant to run concurrently). Each request writes its files
into its own folder under `<tempdir>/openavatar-demo/`; folders older than an hour are deleted at
each request, and Gradio's copies of them by `delete_cache`.
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

from modeling.errors import AvatarInputError

ROOT = Path(__file__).resolve().parent
WEIGHTS = ROOT / "weights_config"
EXAMPLES = [str(ROOT / "examples" / "astronaut.jpg")]
OUTPUT_ROOT = Path(tempfile.gettempdir()) / "openavatar-demo"
MAX_AGE_S = 3600
RESOLUTIONS = [512, 1024, 2048]

_load_lock = threading.Lock()


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


def check_input(image) -> None:
    """Fail fast, before the queue, on a missing photo."""
    if image is None:
        raise gr.Error(
            "No photo given: upload a photo with a face, or pick the example.",
            print_exception=False,
        )


def reconstruct(
    image,
    resolution=1024,
    face_index=0,
    progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio injects it by this default)
):
    """Photo -> (GLB path, [(map path, caption)], render path, [GLB path, zip path])."""
    check_input(image)  # also reached directly through the API
    from pipelines.outputs import save_outputs

    progress(0, desc="Loading the pipeline")
    pipe = get_pipeline()
    try:
        out = pipe(image, resolution=int(resolution), face_index=int(face_index or 0))
    except AvatarInputError as e:  # no face, face too small, not an image...: the user's doing
        raise gr.Error(str(e), print_exception=False) from e
    except ValueError as e:  # bad face number or resolution; may be a bug: keep the traceback
        raise gr.Error(str(e)) from e
    progress(1, desc="Writing files")
    paths = save_outputs(out, _new_request_folder())
    gallery = [(str(paths[f"map:{key}"]), _caption(key)) for key in out.maps]
    glb = str(paths["glb"])
    return glb, gallery, str(paths["render"]), [glb, str(paths["zip"])]


def build_demo() -> gr.Blocks:
    max_faces = json.loads((WEIGHTS / "model_index.json").read_text()).get("max_num_faces", 5)
    with gr.Blocks(title="OpenAvatar", delete_cache=(MAX_AGE_S, MAX_AGE_S)) as demo:
        gr.Markdown(
            "# OpenAvatar\nOne photo of a face → a textured 3D face: mesh (GLB, OBJ), UV maps "
            "(texture, diffuse albedo, normals) and a render over the photo. Runs on CPU."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="numpy", sources=["upload", "clipboard"], label="Photo of a face"
                )
                with gr.Accordion("Settings", open=False):
                    resolution = gr.Dropdown(
                        RESOLUTIONS, value=1024, label="UV map resolution (pixels)"
                    )
                    face_index = gr.Slider(
                        0, max_faces - 1, value=0, step=1, label="Face (0 = largest)"
                    )
                btn = gr.Button("Reconstruct", variant="primary")
                gr.Examples(EXAMPLES, inputs=image)
            with gr.Column():
                model = gr.Model3D(label="3D face (GLB)", height=420)
                render = gr.Image(label="Render over the photo", type="filepath")
        maps = gr.Gallery(label="UV maps", columns=5, height="auto", object_fit="contain")
        files = gr.File(label="Downloads (GLB, zip with OBJ, maps, camera)", file_count="multiple")

        btn.click(check_input, inputs=image, queue=False, api_visibility="private").success(
            reconstruct,
            inputs=[image, resolution, face_index],
            outputs=[model, maps, render, files],
            api_name="reconstruct",
        )
    return demo


if __name__ == "__main__":
    build_demo().queue(max_size=16, default_concurrency_limit=1).launch()
