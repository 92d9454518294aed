"""Large photos: the pipeline's time per stage as the same face grows to tens of megapixels.

    python -m bench.bench_photo_size [--no-write]          (about 1.5 minutes on 2 cores)

`obama.jpg` of the face_recognition set (1.1 MP, the face about 500 px wide) enlarged x1, x3
and x6 (bicubic: 10 and 37 MP, the face 1,500 and 3,000 px wide; the limit is 50 MP,
`modeling.inputs.photo.load_image`'s `max_pixels`), reconstructed at 256 px maps after one
warm-up run.
A stage whose cost follows the photo's area rather than the face's work crop shows here (the
skin segmentation's grown hulls took 78 s of a 101 s run at 37 MP before they were polygons).

Writes its section into `bench/RESULTS.md` between `MARKERS`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench.photos import fetch_face_recognition_images
from bench.report import KEPT_SECTIONS, write_kept_section
from pipelines import AvatarPipeline

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MARKERS = next(m for m in KEPT_SECTIONS if m[0] == "<!-- photo-size:begin -->")
SCALES = (1, 3, 6)
RESOLUTION = 256


def measure(pipe, photo: np.ndarray) -> list[dict]:
    rows = []
    for scale in SCALES:
        image = photo if scale == 1 else cv2.resize(photo, None, fx=scale, fy=scale,
                                                    interpolation=cv2.INTER_CUBIC)  # fmt: skip
        t0 = time.perf_counter()
        out = pipe(np.ascontiguousarray(image), resolution=RESOLUTION)
        rows.append({
            "scale": scale, "megapixels": image.shape[0] * image.shape[1] / 1e6,
            "seconds": time.perf_counter() - t0, "timings": dict(out.timings),
        })  # fmt: skip
    return rows


def section(rows: list[dict]) -> str:
    stages = [k for k in rows[0]["timings"] if max(r["timings"].get(k, 0) for r in rows) >= 0.2]
    lines = [
        "## Large photos (time per stage)",
        "",
        f"`python -m bench.bench_photo_size`: `obama.jpg` enlarged, {RESOLUTION} px maps, "
        "seconds (stages over 0.2 s in some row; the total includes the rest).",
        "",
        "| photo | " + " | ".join(stages) + " | total |",
        "|---" * (len(stages) + 2) + "|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['timings'].get(k, 0):.2f}" for k in stages)
        lines.append(f"| x{r['scale']} ({r['megapixels']:.1f} MP) | {cells} | "
                     f"{r['seconds']:.1f} |")  # fmt: skip
    ratio = rows[-1]["seconds"] / rows[0]["seconds"]
    lines += ["", f"The {rows[-1]['megapixels']:.0f} MP photo takes {ratio:.1f} x the 1 MP one."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_photo_size")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    pipe = AvatarPipeline.from_pretrained("weights_config")
    pipe.set_progress_bar_config(disable=True)
    photo = np.asarray(Image.open(fetch_face_recognition_images() / "obama.jpg").convert("RGB"))
    pipe(photo, resolution=RESOLUTION)  # warm-up: compilation, graphs
    text = section(measure(pipe, photo))
    print(text)
    if not args.no_write:
        write_kept_section(text, RESULTS, MARKERS)


if __name__ == "__main__":
    main()
