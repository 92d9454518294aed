"""Command line: one photo or a folder of photos -> one output folder per face.

openavatar photo.jpg -o outputs/           # or: python -m pipelines.cli photo.jpg -o outputs/
openavatar photos/ -o outputs/ --resolution 2048 --max-faces 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights_config"


def _photos(source: Path) -> list[Path]:
    if source.is_dir():
        photos = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise FileNotFoundError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
        return photos
    if not source.exists():
        raise FileNotFoundError(f"no such file: {source}")
    return [source]


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
        "--super-resolution",
        choices=("auto", "on", "off"),
        default=None,
        help="x4 super-resolution of the unwrapped maps: auto (the default: at 2048 px and "
        "more), on (any multiple of 4 from 256 px), off",
    )
    p.add_argument(
        "--white-balance",
        choices=("camera", "skin_prior"),
        default=None,
        help="camera (the default: keep the photo's white balance) or skin_prior (re-balance "
        "the albedo toward the skin colours the de-lighting network was trained on)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the networks (cpu, cuda)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="folder or Hub repo id")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports after argument parsing, so --help is instant.
    from diffusers.utils import logging as diffusers_logging

    from modeling.errors import AvatarInputError, WeightsError
    from pipelines.avatar_pipeline import AvatarPipeline
    from pipelines.outputs import save_outputs

    diffusers_logging.disable_progress_bar()
    try:
        photos = _photos(args.source)
        if args.max_faces < 1:
            raise ValueError("--max-faces must be at least 1")
        if args.fit_steps is not None and args.fit_steps < 0:
            raise ValueError("--fit-steps must be 0 or more")
        pipe = AvatarPipeline.from_pretrained(args.weights).to(args.device)
        pipe.set_progress_bar_config(disable=True)
    except (OSError, ValueError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.same_person:
        try:
            out = pipe(
                photos,
                resolution=args.resolution,
                num_fit_steps=args.fit_steps,
                super_resolution=args.super_resolution,
                white_balance=args.white_balance,
            )
            paths = save_outputs(out, args.output / args.source.stem)
            print(f"{len(photos)} photos of one person -> {paths['glb']}")
            return 0
        except (AvatarInputError, OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    failures = 0
    for photo in photos:
        try:
            n_faces = min(args.max_faces, len(pipe.detect_faces(photo)))
            for face in range(n_faces):
                out = pipe(
                    photo,
                    resolution=args.resolution,
                    face_index=face,
                    num_fit_steps=args.fit_steps,
                    super_resolution=args.super_resolution,
                    white_balance=args.white_balance,
                )
                folder = args.output / (photo.stem if n_faces == 1 else f"{photo.stem}_face{face}")
                paths = save_outputs(out, folder)
                total = sum(out.timings.values())
                print(f"{photo}: face {face} -> {paths['glb']} ({total:.2f} s)")
        except (AvatarInputError, OSError, ValueError) as e:
            failures += 1
            message = str(e) if str(photo) in str(e) else f"{photo}: {e}"
            print(f"error: {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
