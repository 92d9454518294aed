"""A cache of rendered training pairs (`training.render_pairs.make_training_pair`) as uint8
arrays, generated once per (split, count, resolution) into `training/runs/cache/` (gitignored).

>>> data = load_pairs("val", 4, 128)
>>> data["texture"].shape, data["texture"].dtype
((4, 128, 128, 3), dtype('uint8'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from training.render_pairs import make_training_pair, seeds

__all__ = ["CACHE_DIR", "MAP_KEYS", "load_pairs", "to_float"]

CACHE_DIR = Path(__file__).parent / "runs" / "cache"
# bump when `make_training_pair` changes (2: de-lit before completion; 3: skin specular 0.05-0.16;
# 4: skin colour calibrated to measured skin, `training.skin_calibration`; 5: the completion's
# highlights capped and its skin softened, `first_order.complete_albedo`; 6: the skin prior
# added where it fills, `first_order.structure_correction`)
CACHE_VERSION = 6
MAP_KEYS = (
    "texture",
    "delit_albedo",
    "shape_normals",
    "ao",
    "mask",
    "diffuse_albedo",
    "specular_albedo",
    "diffuse_normals",
    "specular_normals",
)


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 cache arrays -> float32 in [0, 1]."""
    return x.astype(np.float32) / 255.0


def load_pairs(
    split: str,
    n: int,
    resolution: int,
    offset: int = 0,
    keys: tuple[str, ...] = MAP_KEYS,
    cache_dir: Path = CACHE_DIR,
) -> dict[str, np.ndarray]:
    """`n` pairs of `split` (seeds `offset .. offset + n`) at `resolution`, the maps `keys`
    each stacked `(n, R, R, C)` uint8; generated and saved in `cache_dir` on first use."""
    path = cache_dir / f"{split}_{offset}_{n}_{resolution}_v{CACHE_VERSION}.npz"
    if path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in keys}
    chosen = seeds(split, offset + n)[offset:]
    out = {k: [] for k in keys}
    for seed in tqdm(chosen, desc=f"pairs {split} {resolution}px"):
        pair = make_training_pair(seed, resolution)
        for k in keys:
            out[k].append(_quantize(pair[k]))
    out = {k: np.stack(v) for k, v in out.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out
