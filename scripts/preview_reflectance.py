"""Contact sheet of synthetic reflectance faces: every map and the lit texture, one face a row.

Run:  python scripts/preview_reflectance.py sheet.png [--resolution 256] [--split val]
      python scripts/preview_reflectance.py sheet.png --zoom zoom.png   (adds a 1024 close-up)

By default the rows are the first face of each Fitzpatrick type (I..VI) among the split's seeds.
Columns: diffuse albedo, specular albedo (white = 0.8), height (mid grey = 0, black/white =
-+3 sd), specular normals, diffuse normals, lit texture (the network input), first-order de-lit
albedo, shape normals, AO. The close-up shows the maps at --zoom-resolution with 2x crops.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.reflectance_data import sample_parameters  # noqa: E402
from training.render_pairs import make_training_pair, seeds  # noqa: E402

COLUMNS = (
    ("diffuse_albedo", "diffuse albedo"),
    ("specular_albedo", "specular albedo"),
    ("height", "height"),
    ("specular_normals", "specular normals"),
    ("diffuse_normals", "diffuse normals"),
    ("texture", "lit texture"),
    ("delit_albedo", "de-lit (1st order)"),
    ("shape_normals", "shape normals"),
    ("ao", "AO"),
)


def _rgb(pair: dict, key: str) -> np.ndarray:
    x = pair[key]
    if key == "height":
        x = np.clip(0.5 + x / (6 * max(float(x.std()), 1e-6)), 0, 1)
    if key == "specular_albedo":
        x = np.clip(x / 0.8, 0, 1)  # 0.8 = white
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    return np.asarray(x, np.float32)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    img = (np.clip(tile, 0, 1) * 255).astype(np.uint8)[..., ::-1].copy()
    scale = img.shape[0] / 512
    org = (4, int(18 * scale) + 2)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    return img


def _one_per_type(split: str, count: int, ood: bool = False) -> list[int]:
    found: dict[int, int] = {}
    for seed in seeds(split, 1000):
        fitz = sample_parameters(seed, ood)["fitzpatrick"]
        found.setdefault(fitz, seed)
        if len(found) == 6:
            break
    picked = [found[k] for k in sorted(found)]
    extra = [s for s in seeds(split, 200) if s not in picked]
    return (picked + extra)[:count]


def contact_sheet(seed_list: list[int], resolution: int, ood: bool = False) -> np.ndarray:
    rows = []
    for seed in seed_list:
        t = time.perf_counter()
        pair = make_training_pair(seed, resolution, ood=ood)
        p = pair["params"]
        print(
            f"seed {seed}: type {p['fitzpatrick']}, {pair['lighting']['kind']} light, "
            f"{'stubble, ' if p['stubble'] else ''}age {p['age']:.2f}, "
            f"{time.perf_counter() - t:.2f} s"
        )
        tiles = []
        for key, name in COLUMNS:
            text = name if key != "diffuse_albedo" else f"{seed} type {p['fitzpatrick']}"
            if key == "texture":
                text = f"lit: {pair['lighting']['kind']}"
            tiles.append(_label(_rgb(pair, key), text))
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def zoom_sheet(seed: int, resolution: int, ood: bool = False) -> np.ndarray:
    """Full maps at `resolution` (scaled to 512) and crops of the forehead, brow/eye,
    cheek/nose and mouth/chin (a quarter of the map across, enlarged)."""
    pair = make_training_pair(seed, resolution, ood=ood)
    r = resolution
    # (top, left) of r/4-square crops, as fractions of the map
    crops = {
        "forehead": (0.02, 0.38),
        "brow + eye": (0.2, 0.24),
        "cheek + nose": (0.4, 0.2),
        "mouth + chin": (0.64, 0.4),
    }
    size = r // 4
    rows = []
    for key in ("diffuse_albedo", "specular_albedo", "specular_normals", "texture"):
        full = cv2.resize(_rgb(pair, key), (512, 512), interpolation=cv2.INTER_AREA)
        tiles = [_label(full, key)]
        for name, (top, left) in crops.items():
            y, x = int(top * r), int(left * r)
            crop = _rgb(pair, key)[y : y + size, x : x + size]
            crop = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_NEAREST)
            tiles.append(_label(crop, f"{name} 1:{512 // size}"))
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="PNG path of the contact sheet")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--faces", type=int, default=6)
    parser.add_argument("--split", default="val")
    parser.add_argument("--seeds", type=int, nargs="*", help="explicit seeds (overrides --split)")
    parser.add_argument("--zoom", type=Path, help="also write a close-up sheet here")
    parser.add_argument("--zoom-resolution", type=int, default=1024)
    parser.add_argument("--ood", action="store_true", help="out-of-distribution faces")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    split = "ood" if args.ood and args.split == "val" else args.split
    seed_list = args.seeds or _one_per_type(split, args.faces, args.ood)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), contact_sheet(seed_list, args.resolution, args.ood))
    print(f"wrote {args.output}")
    if args.zoom:
        cv2.imwrite(str(args.zoom), zoom_sheet(seed_list[0], args.zoom_resolution, args.ood))
        print(f"wrote {args.zoom}")


if __name__ == "__main__":
    main()
