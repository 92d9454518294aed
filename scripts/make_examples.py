"""Make the demo's synthetic example photos in `examples/` (run once; the JPEGs are committed).

Run:  python scripts/make_examples.py        (deterministic up to JPEG rounding; ~1 minute)

Photos we may ship: the astronaut (`skimage.data.astronaut()`, public domain) is the only real
face; the others are renders of her reconstruction, turned and relit with our own shader
(`rendering.relight`), and the synthetic mean face of `bench.synthetic` (no person at all).
Each one is checked to be found by the face tracker, so every example reconstructs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import render_view, synthetic_albedo  # noqa: E402
from modeling.face_model.topology import load_topology  # noqa: E402
from pipelines import AvatarPipeline  # noqa: E402
from rendering.color import linear_to_srgb, srgb_to_linear  # noqa: E402
from rendering.relight import relight  # noqa: E402

EXAMPLES = ROOT / "examples"
SIZE = 512


def _save(image: np.ndarray, name: str) -> Path:
    path = EXAMPLES / name
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90, optimize=True)
    return path


def main() -> None:
    pipe = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    astronaut = pipe(EXAMPLES / "astronaut.jpg", resolution=1024)
    written = [
        _save(relight(astronaut, "window", yaw_degrees=30.0, size=SIZE), "relit_turned_30.jpg"),
        _save(relight(astronaut, "sunny", yaw_degrees=-20.0, size=SIZE), "relit_sunny.jpg"),
    ]
    # The mean face with a smooth synthetic skin, turned and lit from the left: sRGB render
    # of linear albedo; brighten the albedo a little so it reads as skin.
    albedo = srgb_to_linear(np.clip(linear_to_srgb(synthetic_albedo(256)) * 1.15, 0, 1))
    view = render_view(
        load_topology(),
        albedo,
        yaw_pitch_roll=(-15.0, 5.0, 0.0),
        light_direction=(-0.6, 0.5, 0.7),
        size=SIZE,
        distance=0.36,
        background=0.35,
    )
    written.append(_save(view.image, "synthetic_mean_face.jpg"))
    for path in written:
        faces = pipe.detect_faces(path)
        status = "face found" if faces else "NO FACE FOUND"
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB, {status}")
        if not faces:
            raise SystemExit(f"{path} would not reconstruct: the tracker finds no face")


if __name__ == "__main__":
    main()
