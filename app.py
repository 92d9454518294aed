"""Gradio demo: one face photo -> a textured 3D head (GLB), its UV maps, a render over the photo
and relit previews.

Run:  python app.py            (then open http://127.0.0.1:7860; GRADIO_SERVER_PORT to change)

The pipeline is loaded once, on the first request; one reconstruction runs at a time (the face
tracker and the numba rasterizer are not meant to run concurrently: a lock, besides the queue's
concurrency limit, since example caching runs outside that event).

The photo reaches the app as the uploaded file (the events skip Gradio's preprocessing, which
decodes it and fails with a generic error), so every bad upload gets the loader's own message,
as in the CLI.

Files (issue 20, item 5). Gradio keeps uploads and its copies of what the functions return in its
own folder (`GRADIO_DIR/<pid>`, set by `launch_demo`), served to anyone who has a file's path.
A request moves its upload out of it at once, into a private folder under `OUTPUT_ROOT` that
the session's later requests reuse (the page sends the same path again) and that is deleted when
the session ends or `KEEP_S` after its last use. A request writes its results into its own
folder under `OUTPUT_ROOT`; Gradio serves its copies of them, so that folder goes
`CLEANUP_EVERY_S` after the request returns, and Gradio deletes its copies after `KEEP_S`
(`delete_cache`). Before each request and every `CLEANUP_EVERY_S`, the oldest files are
deleted while the two folders hold more than `MAX_DISK_MB`; at shutdown (Ctrl-C, SIGTERM)
everything goes. The functions return only files from the request's folder.

FLAME (issue 21): a server whose operator holds a FLAME licence sets `OPENAVATAR_FLAME_MODEL`
to their converted model (`python -m scripts.convert_flame`); every head is then FLAME's, and
the downloads add `flame_params.npz` / `.json`. FLAME is never offered otherwise: it is not
shipped, and visitors cannot point the server at a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import functools
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from modeling.errors import (
    AvatarInputError,
    CorruptImageError,
    FaceCoveredError,
    ImageTooLargeError,
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
GRADIO_DIR = Path(tempfile.gettempdir()) / "openavatar-demo-gradio"
# How long files stay (seconds) and how much disk they may take; the tests shorten them.
KEEP_S = float(os.environ.get("OPENAVATAR_DEMO_KEEP_S", 600))
CLEANUP_EVERY_S = float(os.environ.get("OPENAVATAR_DEMO_CLEANUP_EVERY_S", 60))
MAX_DISK_MB = float(os.environ.get("OPENAVATAR_DEMO_MAX_DISK_MB", 2000))
RESOLUTIONS = [512, 1024, 2048]
MAX_FIT_STEPS = 150
MAX_FILE_SIZE = "20mb"
RELIGHT_SIZE = 384
# The operator's converted FLAME model (never a visitor's choice); unset: the bundled head.
FLAME_MODEL = os.environ.get("OPENAVATAR_FLAME_MODEL") or None

_load_lock = threading.Lock()
_run_lock = threading.Lock()

# What to tell the user after the loader's or tracker's own message.
_HINTS = {
    NoFaceFoundError: "Use a photo where one face is clearly visible, roughly frontal and lit.",
    ImageTooSmallError: "Use a larger photo, or one taken closer to the face.",
    ImageTooLargeError: "Use a smaller photo.",
    CorruptImageError: "The file may be incomplete: save or export the photo again.",
    NotAnImageError: "Upload a JPEG, PNG or WebP photo.",
    FaceCoveredError: "Use a photo where the face is not covered by a mask, hands or hair.",
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

    if FLAME_MODEL is None:
        pipe = AvatarPipeline.from_pretrained(WEIGHTS)
    else:
        pipe = AvatarPipeline.from_pretrained(
            WEIGHTS, head_model="flame", flame_model_path=FLAME_MODEL
        )
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


def _user_message(error: AvatarInputError, photo) -> str:
    """The error's message, without the server-side path of the upload, plus a hint."""
    message = str(error)
    if isinstance(photo, str | Path):
        message = message.replace(str(photo), Path(photo).name)
    hint = next((h for cls, h in _HINTS.items() if isinstance(error, cls)), "")
    return f"{message}. {hint}".replace(".. ", ". ").strip()


# --- Files on disk (see the module's docstring) ---------------------------------------------


@dataclass
class _Folder:
    """One of our folders under `OUTPUT_ROOT`: a request's results, or a session's photo."""

    session: str | None
    upload: str | None = None  # a photo's folder: the path Gradio's upload had
    users: int = 0  # requests using it now: never deleted meanwhile
    used_at: float = field(default_factory=time.time)

    def expired(self, now: float) -> bool:
        keep = KEEP_S if self.upload else CLEANUP_EVERY_S  # results: Gradio has copied them
        return not self.users and now - self.used_at > keep


_files_lock = threading.Lock()
_folders: dict[Path, _Folder] = {}
_own_gradio_dir: Path | None = None  # set by launch_demo: the Gradio folder this process owns


def _new_folder(session: str | None, upload: str | None = None) -> Path:
    folder = OUTPUT_ROOT / uuid.uuid4().hex
    folder.mkdir(parents=True)
    with _files_lock:
        _folders[folder] = _Folder(session, upload)
    return folder


@contextlib.contextmanager
def _in_use(folder: Path | None):
    """Keep one of our folders from being deleted while a request uses it."""
    with _files_lock:
        records = [_folders[folder]] if folder in _folders else []
        for record in records:
            record.users += 1
    try:
        yield
    finally:
        with _files_lock:
            for record in records:
                record.users -= 1
                record.used_at = time.time()


def _is_example(path: Path) -> bool:
    """Gradio's copy of a bundled example photo (shared by every visitor: never taken)."""
    source = ROOT / "examples" / path.name
    return (
        f"examples/{path.name}" in EXAMPLES
        and path.is_file()
        and filecmp.cmp(source, path, shallow=False)
    )


def _take_photo(image, request: gr.Request | None):
    """The user's photo as the loader takes it: a path, or an array from a Python caller.

    An upload still in Gradio's folder is moved to a private folder of the session; a later
    request of the same session with the same upload path gets that copy."""
    if isinstance(image, dict):  # the upload's FileData: the events skip Gradio's preprocessing
        image = image.get("path")
    if not isinstance(image, str | Path):
        return image
    path = Path(image)
    if not path.resolve().is_relative_to(Path(gr.utils.get_upload_folder()).resolve()):
        return str(path)  # a file of a Python caller's: used where it is
    if _is_example(path):
        return str(path)
    session = request.session_hash if request is not None else None
    if path.is_file():
        folder = _new_folder(session, upload=str(path))
        try:
            return str(shutil.move(path, folder / path.name))
        except FileNotFoundError:  # taken meanwhile (the same bytes, uploaded by another page)
            _delete(folder)
    with _files_lock:
        for folder, record in _folders.items():
            if session and record.session == session and record.upload == str(path):
                record.used_at = time.time()
                return str(folder / path.name)
    raise gr.Error(
        f"{path.name} is no longer on the server (a page's photos are deleted when it is closed "
        f"or {KEEP_S / 60:g} minutes after their last use): upload it again.",
        print_exception=False,
    )


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _disk_entries() -> list[Path]:
    """The top-level folders of ours and of this process's Gradio folder."""
    roots = [OUTPUT_ROOT] + ([_own_gradio_dir] if _own_gradio_dir is not None else [])
    return [entry for root in roots if root.is_dir() for entry in root.iterdir()]


def _delete(path: Path) -> None:
    with _files_lock:
        _folders.pop(path, None)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep(now: float | None = None) -> None:
    """Delete the files no longer needed (see the module's docstring), then the oldest ones while
    the demo's folders hold more than `MAX_DISK_MB`. Runs before each request and every
    `CLEANUP_EVERY_S`."""
    now = time.time() if now is None else now
    with _files_lock:
        expired = [path for path, record in _folders.items() if record.expired(now)]
        busy = {path for path, record in _folders.items() if record.users}
    for path in expired:
        _delete(path)
    candidates = []  # (age, path, bytes)
    total = 0
    for entry in _disk_entries():
        try:
            size, mtime = _tree_size(entry), entry.stat().st_mtime
        except OSError:  # deleted meanwhile
            continue
        total += size
        ours = entry.parent == OUTPUT_ROOT
        if entry in busy or (
            not ours and entry.is_dir() and any(map(_is_example, entry.iterdir()))
        ):
            continue
        with _files_lock:
            known = entry in _folders
        if ours and not known and now - mtime > KEEP_S:  # left by an earlier run
            _delete(entry)
            total -= size
        elif not ours and size == 0 and now - mtime > CLEANUP_EVERY_S:  # emptied by Gradio
            _delete(entry)
        else:
            candidates.append((mtime, entry, size))
    for _, entry, size in sorted(candidates, key=lambda c: c[0]):
        if total <= MAX_DISK_MB * 1e6:
            break
        _delete(entry)
        total -= size


def _end_session(request: gr.Request) -> None:
    """The page was closed: its photos and results go now (Gradio's copies after `KEEP_S`)."""
    with _files_lock:
        ended = [
            path
            for path, record in _folders.items()
            if record.session == request.session_hash and not record.users
        ]
    for path in ended:
        _delete(path)


def _delete_all() -> None:
    with _files_lock:
        ours = list(_folders)
    for path in ours:
        _delete(path)
    if _own_gradio_dir is not None:
        shutil.rmtree(_own_gradio_dir, ignore_errors=True)


async def _sweep_periodically() -> None:
    while True:
        await asyncio.sleep(CLEANUP_EVERY_S)
        try:
            await asyncio.to_thread(sweep)
        except Exception:  # a failed sweep must not end the next ones
            traceback.print_exc()


@contextlib.asynccontextmanager
async def _files_lifespan(_app):
    """The server's lifetime: sweep regularly, and delete everything at shutdown."""
    task = asyncio.create_task(_sweep_periodically())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _delete_all()


def _served(path: Path, folder: Path) -> str:
    """`path` as a string, refusing anything outside the request's folder (the only files the
    demo hands to Gradio to serve)."""
    path = Path(path).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise RuntimeError(f"refusing to serve {path}: outside the output folder")
    return str(path)


def _checked_photo(image, request: gr.Request | None):
    """The photo (see `_take_photo`), checked: not missing, an image, not too small or large."""
    if image is None:
        raise gr.Error(
            "No photo given: upload a photo with a face, or pick an example.",
            print_exception=False,
        )
    photo = _take_photo(image, request)
    from modeling.inputs.photo import load_image

    try:
        load_image(photo)
    except AvatarInputError as e:
        raise gr.Error(_user_message(e, photo), print_exception=False) from e
    return photo


def check_input(image, request: gr.Request | None = None) -> None:
    """Fail fast, before the queue: no photo, not an image, too small (cheap: decodes only)."""
    _checked_photo(image, request)


def _warnings_markdown(warnings: list[str]) -> str:
    """The reconstruction's warnings (`out.warnings`) as a list, or "" when there are none."""
    if not warnings:
        return ""
    lines = "\n".join(f"- {w[0].upper()}{w[1:]}." for w in warnings)
    return f"**⚠ Check this reconstruction:**\n{lines}"


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


def _resolutions(config: dict) -> list[int]:
    """The map sizes offered: `RESOLUTIONS` and the pipeline's default."""
    return sorted({*RESOLUTIONS, config["resolution"]})


def write_results(out, folder: Path) -> tuple[dict[str, Path], Path, list[tuple[Path, str]]]:
    """Write a reconstruction's files into `folder`: `save_outputs`' (paths by kind), `maps.zip`
    and the relit previews `relit/<NN>_<environment>.png`; returns (paths, the maps zip,
    [(preview, caption)]).

    The previews' views are rasterized and textured (numpy, numba) in a thread while the files
    are written (PNG encoding, which releases the GIL, in threads of its own); they are shaded
    (torch) after: beside the encoders, torch's two-thread ops took 3x longer than alone."""
    from modeling.export import write_png, write_zip
    from pipelines.outputs import save_outputs
    from rendering.relight import prepare_previews, shade_previews

    with ThreadPoolExecutor(max_workers=1) as pool:
        views = pool.submit(prepare_previews, out, size=RELIGHT_SIZE)
        paths = save_outputs(out, folder)
        maps_zip = write_zip([paths[f"map:{key}"] for key in out.maps], folder / "maps.zip")
        views = views.result()
    (folder / "relit").mkdir()
    relit = [
        (write_png(folder / "relit" / f"{i:02d}_{caption.split(',')[0]}.png", image), caption)
        for i, (image, caption) in enumerate(shade_previews(views))
    ]
    return paths, maps_zip, relit


def reconstruct(
    image,
    resolution=None,
    face_index=0,
    num_fit_steps=None,
    white_balance=None,
    progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio injects it by this default)
    request: gr.Request | None = None,
):
    """Photo -> (GLB path, [(map path, caption)], render path, [(relit path, caption)],
    [GLB, zip of everything (OBJ, maps, camera), zip of the maps], summary markdown,
    warnings markdown ("" when the reconstruction raised none)).

    `image`: a file path, the upload's FileData dict (as the UI sends it) or an RGB array;
    `resolution`: UV map size in pixels, one of those offered (`RESOLUTIONS` and the pipeline's
    default); `num_fit_steps`: photometric fitting steps (at most `MAX_FIT_STEPS`);
    `white_balance`: "camera" or "skin_prior" (each None: the pipeline's default).
    """
    photo = _checked_photo(image, request)  # also reached directly through the API
    offered = _resolutions(_config())
    if resolution is not None and resolution not in offered:
        raise gr.Error(
            f"resolution {resolution!r} is not offered: pick one of {offered}",
            print_exception=False,
        )
    start = time.perf_counter()
    face_index = int(face_index or 0)
    progress(0, desc="Loading the pipeline")
    pipe = get_pipeline()
    if num_fit_steps is None:
        num_fit_steps = pipe.config.num_fit_steps
    num_fit_steps = max(0, min(int(num_fit_steps), MAX_FIT_STEPS))
    progress(0, desc="Waiting for the previous reconstruction")
    photo_folder = Path(photo).parent if isinstance(photo, str) else None
    # in use until the request returns (its results written): the keep time counts from there
    with _in_use(photo_folder):
        with _run_lock:
            try:
                out = pipe(
                    photo,
                    resolution=resolution,
                    face_index=face_index,
                    num_fit_steps=num_fit_steps,
                    white_balance=white_balance or None,
                )
            except AvatarInputError as e:  # no face, too small, not an image...: the user's doing
                raise gr.Error(_user_message(e, photo), print_exception=False) from e
            except ValueError as e:  # bad white balance; may be a bug: keep the traceback
                raise gr.Error(str(e)) from e
        progress(0.9, desc="Relighting and writing files")
        sweep()  # before writing: what expired goes, and the oldest files while over MAX_DISK_MB
        folder = _new_folder(request.session_hash if request is not None else None)
        with _in_use(folder):  # then it expires CLEANUP_EVERY_S after the return
            paths, maps_zip, previews = write_results(out, folder)
        relit = [(_served(path, folder), caption) for path, caption in previews]
        gallery = [(_served(paths[f"map:{key}"], folder), _caption(key)) for key in out.maps]
        if "skin_mask" in paths:  # what of the photo was taken as the face's skin
            gallery.append((_served(paths["skin_mask"], folder), "skin mask (photo)"))
        glb = _served(paths["glb"], folder)
        files = [glb, _served(paths["zip"], folder), _served(maps_zip, folder)]
        summary = _summary(out, face_index, num_fit_steps, time.perf_counter() - start)
        render = _served(paths["render"], folder)
        return glb, gallery, render, relit, files, summary, _warnings_markdown(out.warnings)


def _reconstruct_example(image, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """An example photo with the default settings (cached lazily, for every visitor)."""
    return reconstruct(image, progress=progress)


def build_demo() -> gr.Blocks:
    config = _config()  # the defaults shown are the pipeline's
    with gr.Blocks(title="OpenAvatar", delete_cache=(CLEANUP_EVERY_S, KEEP_S)) as demo:
        gr.Markdown(
            "# OpenAvatar\nOne photo of a face → a textured 3D head (bald: hair is not "
            "reconstructed; eyes, mouth and 52 ARKit blend shapes): mesh (GLB, OBJ), UV maps "
            "(texture, diffuse and specular albedo, diffuse and specular normals, shape normals, "
            "occlusion, visibility), a render over the photo and "
            "previews relit under new light. Runs on a CPU; larger maps and more fitting steps "
            "take longer."
            + (
                "\n\nThis server builds the heads on **FLAME** (its operator's licensed model): "
                "FLAME's mesh and UV layout, and its fitted parameters (`flame_params.json`, "
                "`.npz`) in the zip."
                if FLAME_MODEL
                else ""
            )
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    # the events take the uploaded file as it is (preprocess=False): our loader
                    # decodes it, with its size guards and messages; the examples' paths
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "webcam", "clipboard"],
                    label="Photo of a face",
                    elem_id="photo",
                )
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    resolution = gr.Radio(
                        _resolutions(config),
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
                warnings = gr.Markdown(elem_id="warnings")
            with gr.Column():
                model = gr.Model3D(label="3D head (GLB)", height=420, elem_id="model3d")
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
        outputs = [model, maps, render, relit, files, summary, warnings]
        gr.Examples(
            [[str(ROOT / path)] for path in EXAMPLES],
            inputs=image,
            outputs=outputs,
            fn=_reconstruct_example,
            cache_examples=True,
            cache_mode="lazy",  # eager would reconstruct every example at start-up
            example_labels=list(EXAMPLES.values()),
        )

        # preprocess=False: Gradio's image preprocessing would decode the upload and answer a bad
        # one with a generic error; the functions get its FileData and check it themselves.
        # The check is queued (its own concurrency group: it does not wait for reconstructions)
        # because the page shows a gr.Error as a message only for queued events.
        btn.click(
            check_input,
            inputs=image,
            preprocess=False,
            concurrency_limit=2,
            api_visibility="private",
        ).success(
            reconstruct,
            inputs=[image, resolution, face_index, num_fit_steps, white_balance],
            outputs=outputs,
            api_name="reconstruct",
            preprocess=False,
        )
        demo.unload(_end_session)
    return demo


def _stale_gradio_dirs() -> list[Path]:
    """Gradio folders of demo processes that are gone (killed before their shutdown)."""
    if os.name != "posix" or not GRADIO_DIR.is_dir():
        return []
    stale = []
    for folder in GRADIO_DIR.iterdir():
        if not folder.name.isdigit():
            continue
        try:
            os.kill(int(folder.name), 0)
        except ProcessLookupError:
            stale.append(folder)
        except OSError:  # alive, another user's
            pass
    return stale


def launch_demo(**launch_kwargs) -> gr.Blocks:
    """Build, queue and launch the demo with its files bounded (see the module's docstring);
    `launch_kwargs` go to `Blocks.launch`. Returns the running demo (`demo.close()` stops it)."""
    global _own_gradio_dir
    for folder in _stale_gradio_dirs():
        shutil.rmtree(folder, ignore_errors=True)
    _own_gradio_dir = GRADIO_DIR / str(os.getpid())
    os.environ["GRADIO_TEMP_DIR"] = str(_own_gradio_dir)  # read as the components are built
    demo = build_demo().queue(max_size=16, default_concurrency_limit=1)
    demo.launch(
        max_file_size=MAX_FILE_SIZE, app_kwargs={"lifespan": _files_lifespan}, **launch_kwargs
    )
    return demo


def _stop(signum, frame):
    raise KeyboardInterrupt  # as Ctrl-C: Gradio closes the server, and the files are deleted


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    try:
        launch_demo()
    finally:  # also when the server stops before its shutdown reaches the files (open clients)
        _delete_all()
