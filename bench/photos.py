"""Real photos for the benchmark, fetched at bench time and cached outside the repository.

- `face_recognition==1.3.0`'s sdist (`pip download --no-binary :all:`), whose
  `tests/test_images/` holds photos of Obama (three frontal, two partial faces), Biden and a
  32-bit PNG: extracted to `<cache>/face_recognition_test_images/`;
- `skimage.data.astronaut()` (Eileen Collins, NASA, public domain) from the installed
  scikit-image, saved as `<cache>/astronaut.png`.

The cache is `$OPENAVATAR_BENCH_CACHE` or `~/.cache/openavatar-bench/`.
"""

from __future__ import annotations

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
# Three photos of one person, for the several-photos scale test.
SAME_PERSON = ("obama.jpg", "obama2.jpg", "obama3.jpg")


def cache_dir() -> Path:
    path = Path(os.environ.get("OPENAVATAR_BENCH_CACHE", Path.home() / ".cache/openavatar-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_face_recognition_images(cache: Path | None = None) -> Path:
    cache = cache or cache_dir()
    out = cache / IMAGE_DIR
    if out.is_dir() and any(out.iterdir()):
        return out
    sdist = cache / SDIST_FILE
    if not sdist.exists():
        cmd = [sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary",
               ":all:", "-d", str(cache), "-q"]  # fmt: skip
        subprocess.run(cmd, check=True)
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


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTENSIONS)


def public_photos() -> tuple[list[Path], list[Path]]:
    """`(photos, same_person)`: every public photo, and three photos of one person."""
    images = fetch_face_recognition_images()
    photos = [fetch_astronaut(), *list_photos(images)]
    same = [images / name for name in SAME_PERSON if (images / name).exists()]
    return photos, same
