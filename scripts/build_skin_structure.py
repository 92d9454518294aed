"""Build `modeling/face_model/assets/skin_structure.npz` once from the reflectance generator.

Run:  python scripts/build_skin_structure.py        (deterministic; about 15 s on 2 cores)

What it is: the skin prior that `first_order.complete_albedo` completes unseen texels with
(issue 15: "the synthetic generator's low-frequency structure, re-coloured to the visible
skin"). Per texel of the face's UV layout (`topology.npz`) at `RESOLUTION` px, the mean over
`FACES` faces of the generator's training split (`training.render_pairs.seeds("train")`) of

    log(diffuse albedo, sRGB) - that face's mean over its skin texels (`texture.skin_mask`),

per channel: how much lighter, redder or darker each place of a face is than its own mean skin
(redder cheeks, nose and lips, darker brows, lighter forehead centre), made exactly
mirror-symmetric (the layout is: u -> 1 - u), as the generator's faces are on average. It says
nothing about a face's own colour: the completion adds it to what the photo showed
(`complete_albedo`).

Rebuild it when the generator (`training.reflectance_data`) or the UV layout changes;
`tests/test_stages.py` checks it against a fresh build from a few faces.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).resolve().parents[1] / "modeling/face_model/assets/skin_structure.npz"
RESOLUTION = 128  # smooth at that scale; the completion resizes it to the map's
FACES = 64


def skin_structure(resolution: int = RESOLUTION, faces: int = FACES) -> np.ndarray:
    """`(R, R, 3)` float32: the mean, over the first `faces` training faces, of each face's log
    sRGB albedo minus its mean over the skin texels, symmetrised (0 off the UV chart)."""
    from modeling.reconstruction.texture import skin_mask, uv_atlas
    from training.reflectance_data import sample_face_maps
    from training.render_pairs import seeds

    skin = skin_mask(resolution)
    chart = np.asarray(uv_atlas(resolution).chart, bool)
    total = np.zeros((resolution, resolution, 3), np.float64)
    for seed in seeds("train", faces):
        albedo = sample_face_maps(seed, resolution)["diffuse_albedo"]
        log_albedo = np.log(np.clip(albedo, 1e-3, 1.0))
        total += log_albedo - log_albedo[skin].mean(0)
    structure = (total + total[:, ::-1]) / (2 * faces)
    structure[~chart] = 0
    return structure.astype(np.float32)


def main() -> None:
    structure = skin_structure()
    np.savez_compressed(
        OUT, log_albedo=structure, faces=np.int32(FACES), resolution=np.int32(RESOLUTION)
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
