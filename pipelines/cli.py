"""Command line: one photo or a folder of photos -> one output folder per face.

openavatar photo.jpg -o outputs/           # or: python -m pipelines.cli photo.jpg -o outputs/
openavatar photos/ -o outputs/ --resolution 2048 --max-faces 3

Arguments are checked before torch, diffusers and MediaPipe are imported, so `--help` and
mistakes answer at once. On a terminal each photo shows progress bars on stderr (the pipeline's
five stages, then the fitting steps); MediaPipe's native log lines are hidden unless --verbose.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipelines.weights import default_weights

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_WEIGHTS = default_weights()
FALLBACK_NAME = "photo"
# Room under the usual 255-byte limit on one path component for "_face<i>" and "-<k>".
MAX_NAME_BYTES = 100
# Characters that are not allowed (or mean something else) in a file name on Windows or POSIX.
_UNSAFE_CHARACTERS = re.compile(r'[/\\<>:"|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10)
}


def safe_name(text: str) -> str:
    """`text` as one harmless path component: never empty, `.` or `..`, nothing hidden.

    Path separators, characters Windows forbids (`<>:"|?*`) and control characters become `_`;
    leading and trailing dots and white space go (a leading dot hides a file, a trailing one is
    dropped by Windows); a name Windows reserves (`CON`, `nul.x`, `COM1`) gets a `_` after its
    first part; the result is cut to `MAX_NAME_BYTES` bytes of UTF-8; an empty result is
    `FALLBACK_NAME`. Letters of any script, digits, spaces inside and other punctuation stay.

    >>> safe_name("astronaut"), safe_name(".."), safe_name("a/b"), safe_name("con")
    ('astronaut', 'photo', 'a_b', 'con_')
    """
    name = unicodedata.normalize("NFC", text)
    name = "".join(
        "_" if unicodedata.category(c) in ("Cc", "Cs") else c
        for c in _UNSAFE_CHARACTERS.sub("_", name)
    )
    name = _strip_dots_and_spaces(name)
    name = name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    name = _strip_dots_and_spaces(name)  # the cut may have ended on one
    head, dot, rest = name.partition(".")
    if head.rstrip().upper() in _WINDOWS_RESERVED:
        name = f"{head}_{dot}{rest}"
    return name or FALLBACK_NAME


def _strip_dots_and_spaces(name: str) -> str:
    return re.sub(r"^[\s.]+|[\s.]+$", "", name)


def face_folder_name(name: str, face: int, n_faces: int) -> str:
    """The folder of face number `face` of a photo named `name` with `n_faces` faces done."""
    return name if n_faces == 1 else f"{name}_face{face}"


def output_names(photos: Sequence[Path], max_faces: int = 1) -> list[str]:
    """One output name per photo: safe, and unique within the run whatever faces are found.

    A photo's name is `safe_name` of its stem (`astronaut.jpg` -> `astronaut`, `...jpg` ->
    `photo`). Photos whose names clash (`x.jpg`, `x.png`) get their extension added (`x_jpg`,
    `x_png`). A photo's faces go to `face_folder_name(name, face, n_faces)`: `name` for one face,
    else `name_face0`, `name_face1`, ... (up to `max_faces`). When a folder could still be one of
    an earlier photo's in `photos` (`g.png` with two faces and `g_face0.png`; `X.jpg` and
    `x.jpg`), the later photo is named `name-2` (or `-3`, ...). Names are compared ignoring
    case, so the folders are distinct on any file system.

    >>> output_names([Path("x.jpg"), Path("x.png"), Path("y.jpg")])
    ['x_jpg', 'x_png', 'y']
    """
    names = [safe_name(Path(p).stem) for p in photos]
    counts = Counter(n.casefold() for n in names)
    names = [
        safe_name(f"{n}_{Path(p).suffix.lstrip('.')}")
        if counts[n.casefold()] > 1 and Path(p).suffix
        else n
        for p, n in zip(photos, names, strict=True)
    ]
    return unique_names(names, max_faces)


def unique_names(names: Sequence[str], max_faces: int = 1) -> list[str]:
    """`names` made unique in order, ignoring case, with the face folders they may get: a name
    that clashes with an earlier one (the same name; a face folder `name_face<i>`, `i <
    max_faces`, of an earlier one, or the other way round) becomes `name-2` (or `-3`, ...).

    >>> unique_names(["x", "X", "y"])
    ['x', 'X-2', 'y']
    """
    taken: set[str] = set()  # earlier photos' names, case-folded
    face_of: set[str] = set()  # names whose face folders an earlier photo's name is
    unique = []
    for name in names:
        candidate, k = name, 2
        while _clashes(candidate.casefold(), taken, face_of, max_faces):
            candidate, k = f"{name}-{k}", k + 1
        taken.add(candidate.casefold())
        face = _FACE_FOLDER.fullmatch(candidate.casefold())
        if face and int(face[2]) < max_faces:
            face_of.add(face[1])
        unique.append(candidate)
    return unique


_FACE_FOLDER = re.compile(r"(.*)_face(0|[1-9][0-9]*)")


def _clashes(name: str, taken: set[str], face_of: set[str], max_faces: int) -> bool:
    """Whether a folder of a photo named `name` (`name`, `name_face<i>`) may be one of an
    earlier photo's: the same name, `name` is a face folder of one, or one is of `name`."""
    if name in taken:
        return True
    if max_faces == 1:
        return False
    face = _FACE_FOLDER.fullmatch(name)
    return bool(face and int(face[2]) < max_faces and face[1] in taken) or name in face_of


def folder_inside(output: Path, name: str) -> Path:
    """`output / name`, refusing a folder that resolves outside `output` (e.g. a symlink)."""
    folder = output / name
    if not folder.resolve().is_relative_to(output.resolve()):
        raise OSError(f"refusing to write {folder}: it leads outside {output}")
    return folder


def check_writable(output: Path) -> None:
    """Create `output` and write and delete a file in it, or raise `OSError` saying why not."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".openavatar-probe-", dir=output)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = "it is not a folder" if output.exists() and not output.is_dir() else e.strerror or e
        raise OSError(f"cannot write to {output}: {why}") from e


def _photos(source: Path) -> list[Path]:
    if source.is_dir():
        photos = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise FileNotFoundError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
        return photos
    if not source.exists():
        raise FileNotFoundError(f"no such file: {source}")
    return [source]


def unwrap_choice(text: str) -> str | int:
    """`--unwrap-resolution`'s value: "auto", "full" or a size in px (>= 64), as the pipeline's
    `unwrap_resolution` takes it (`modeling.reconstruction.texture.check_unwrap_mode`)."""
    if text in ("auto", "full"):
        return text
    if text.isdigit() and int(text) >= 64:
        return int(text)
    raise argparse.ArgumentTypeError(f"auto, full or a size in px (>= 64), not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="openavatar", description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a photo, or a folder of photos")
    p.add_argument("-o", "--output", type=Path, default=Path("outputs"), help="output folder")
    p.add_argument(
        "--resolution",
        type=int,
        default=1024,
        help="UV map size, 64..4096 (512 or more for real use)",
    )
    p.add_argument("--max-faces", type=int, default=1, help="faces per photo, largest first")
    p.add_argument(
        "--fit-steps", type=int, default=None, help="photometric fitting steps (0: none)"
    )
    p.add_argument(
        "--same-person",
        action="store_true",
        help="the photos (a folder) show one person: one avatar from all of them",
    )
    p.add_argument(
        "--unwrap-resolution",
        type=unwrap_choice,
        default=None,
        help="auto (the default: maps of 2048 px and more are unwrapped no finer than the "
        "photo's detail, then upsampled), full (always at the maps' resolution) or a size in "
        "px (at most the maps'; faster for huge photos)",
    )
    p.add_argument(
        "--white-balance",
        choices=("camera", "skin_prior"),
        default=None,
        help="camera (the default: keep the photo's white balance) or skin_prior (re-balance "
        "the albedo toward the skin colours the de-lighting network was trained on)",
    )
    p.add_argument(
        "--face-only",
        action="store_true",
        help="the face patch alone (no scalp, ears, neck, eyeballs or mouth)",
    )
    p.add_argument(
        "--flame-model",
        type=Path,
        default=None,
        metavar="PATH",
        help="build the head on your FLAME model (converted once with python -m "
        "scripts.convert_flame): FLAME's mesh and UV layout, plus flame_params.npz/.json",
    )
    p.add_argument("--device", default="cpu", help="torch device for the networks (cpu, cuda)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="folder or Hub repo id")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--verbose", action="store_true", help="show MediaPipe's native (TFLite, absl) log lines"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # the arguments, before any heavy import or slow work
        photos = _photos(args.source)
        if args.max_faces < 1:
            raise ValueError("--max-faces must be at least 1")
        if args.fit_steps is not None and args.fit_steps < 0:
            raise ValueError("--fit-steps must be 0 or more")
        if args.flame_model is not None:
            if args.face_only:
                raise ValueError("--face-only and --flame-model: FLAME is a whole head")
            if not args.flame_model.is_file():
                raise ValueError(f"--flame-model: no file at {args.flame_model}")
        check_writable(args.output)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from modeling.errors import AvatarInputError, WeightsError
    from pipelines.outputs import save_outputs

    try:
        pipe = load_pipeline(args.weights, args.device, args.verbose, args.flame_model)
    except (OSError, ValueError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.same_person:
        try:
            # abspath, so that "." and ".." name the folder they mean
            name = output_names([Path(os.path.abspath(args.source))])[0]
            folder = folder_inside(args.output, name)
            _show_progress(pipe, f"{len(photos)} photos", args.quiet)
            out = pipe(
                photos,
                resolution=args.resolution,
                num_fit_steps=args.fit_steps,
                unwrap_resolution=args.unwrap_resolution,
                white_balance=args.white_balance,
                head=not args.face_only,
            )
            paths = save_outputs(out, folder)
            print(f"{len(photos)} photos of one person -> {paths['glb']}{_flame_note(paths)}")
            _print_warnings(str(args.source), out.warnings)
            return 0
        except WeightsError as e:  # a network gave NaN: the weights, not the photos
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (AvatarInputError, OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    failures = 0
    for photo, name in zip(photos, output_names(photos, args.max_faces), strict=True):
        try:
            n_faces = min(args.max_faces, len(pipe.detect_faces(photo)))
            for face in range(n_faces):
                _show_progress(pipe, f"{photo.name}: face {face}", args.quiet)
                out = pipe(
                    photo,
                    resolution=args.resolution,
                    face_index=face,
                    num_fit_steps=args.fit_steps,
                    unwrap_resolution=args.unwrap_resolution,
                    white_balance=args.white_balance,
                    head=not args.face_only,
                )
                folder = folder_inside(args.output, face_folder_name(name, face, n_faces))
                paths = save_outputs(out, folder)
                total = sum(out.timings.values())
                print(f"{photo}: face {face} -> {paths['glb']} ({total:.2f} s){_flame_note(paths)}")
                _print_warnings(f"{photo}: face {face}", out.warnings)
        except WeightsError as e:  # every photo would fail the same way: stop
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (AvatarInputError, OSError, ValueError) as e:
            failures += 1
            message = str(e) if str(photo) in str(e) else f"{photo}: {e}"
            print(f"error: {message}", file=sys.stderr)
    return 1 if failures else 0


def load_pipeline(weights: str, device: str = "cpu", verbose: bool = False,
                  flame_model: Path | None = None):  # fmt: skip
    """`AvatarPipeline.from_pretrained(weights).to(device)`, quietly: no bar while the networks
    load, and MediaPipe's native log lines hidden unless `verbose`. With `flame_model`, the
    head is that FLAME model (`head_model="flame"`).

    Raises `OSError`, `ValueError` or `modeling.errors.WeightsError` for unusable weights.
    """
    from diffusers.utils import logging as diffusers_logging

    from modeling.inputs.face_tracker import silence_native_logs
    from pipelines.avatar_pipeline import AvatarPipeline

    diffusers_logging.disable_progress_bar()  # loading the networks takes a second
    silence_native_logs(not verbose)
    if flame_model is None:
        return AvatarPipeline.from_pretrained(weights).to(device)
    return AvatarPipeline.from_pretrained(
        weights, head_model="flame", flame_model_path=flame_model
    ).to(device)


def _show_progress(pipe, label: str, quiet: bool) -> None:
    """The pipeline's progress bars for one reconstruction, on stderr: its five stages, and the
    photometric fit's steps while it runs (`label` names the photo). Shown on a terminal only
    (tqdm's `disable=None`) and never with --quiet; they vanish when done, leaving the result
    line. Every update is drawn (`mininterval=0, miniters=1`: five stages and ~10 fit steps a
    second), so the final counts show however fast a machine runs them."""
    pipe.set_progress_bar_config(
        desc=label,
        unit="step",
        leave=False,
        mininterval=0,
        miniters=1,
        disable=True if quiet else None,
    )


def _flame_note(paths: dict) -> str:
    """`, FLAME parameters: <path>` where the head is FLAME's (`--flame-model`), else ''."""
    return f", FLAME parameters: {paths['flame_json']}" if "flame_json" in paths else ""


def _print_warnings(label: str, warnings: list[str]) -> None:
    """One line per warning of a reconstruction (`AvatarPipelineOutput.warnings`), on stderr;
    the files are written and the exit code stays 0: the result is doubtful, not failed."""
    for warning in warnings:
        print(f"warning: {label}: {warning}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
