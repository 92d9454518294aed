"""What limits the specular albedo: oracles on the synthetic test faces (issue 19, item 4).

    python -m bench.specular_limits [--faces 30] [--resolution 256]

The specular albedo map of a face is a level (how shiny the face is overall: its mean over the
UV chart) plus a structure (T-zone, lips, pores: the map minus its mean). On the chart of the
test split's faces, PSNR against the true map of

- the constant: the training set's mean specular albedo everywhere (the baseline);
- the shipped network, as the pipeline uses it (its structure at the training mean's level,
  `SpecularAlbedoNet.with_prior_level`);
- the network's structure at the true level (the level known, the structure the network's);
- the true structure at the training mean's level (the structure known, the level not);
- the true map scaled by the camera's unknown exposure factor (`exposure_jitter`: what the
  texture cannot tell, which also bounds the diffuse albedo; `bench.delighting_limits`);
- the constant at the true level (the level known, no structure).

Also the split of the constant's squared error into its level part (the squared difference of
the means) and its structure part (the true map's variance over the chart).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from training import evaluate_reflectance as ev
from training.render_pairs import make_training_pair, seeds

ROWS = (
    ("constant", "constant (training mean) — the baseline"),
    ("network", "network, at the training mean's level (shipped)"),
    ("network_true_level", "network's structure at the true level"),
    ("true_structure_prior_level", "true structure at the training mean's level"),
    ("true_times_exposure", "true map x the unknown exposure factor"),
    ("constant_true_level", "constant at the true level"),
)


def evaluate(num_faces: int, resolution: int) -> dict:
    nets = ev.load_networks()
    prior = float(nets["specular"].config.mean_specular)
    rows, level_share = [], []
    for seed in seeds("test", num_faces):
        pair = make_training_pair(seed, resolution)
        mask = pair["mask"][..., 0] > 0.5
        truth = pair["specular_albedo"]
        level = float(truth[mask].mean())
        shipped = ev.run_networks(nets, pair)["specular_albedo"]
        structure = shipped - float(shipped[mask].mean())
        maps = {
            "constant": np.full_like(truth, prior),
            "network": shipped,
            "network_true_level": np.clip(structure + level, 0, 1),
            "true_structure_prior_level": np.clip(truth - level + prior, 0, 1),
            "true_times_exposure": np.clip(truth * pair["lighting"]["exposure_jitter"], 0, 1),
            "constant_true_level": np.full_like(truth, level),
        }
        rows.append({k: ev.psnr(v, truth, mask) for k, v in maps.items()})
        variance = float(truth[mask].var())
        level_share.append((level - prior) ** 2 / ((level - prior) ** 2 + variance))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["level_share"] = float(np.mean(level_share))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = evaluate(args.faces, args.resolution)
    base = results["constant"]
    print("| Specular albedo | PSNR (dB) | vs constant |")
    print("|---|---:|---:|")
    for key, label in ROWS:
        print(f"| {label} | {results[key]:.2f} | {results[key] - base:+.2f} |")
    print(f"\nShare of the constant's squared error that is its level (mean over faces): "
          f"{100 * results['level_share']:.0f} %")  # fmt: skip
    print(f"({args.faces} test faces at {args.resolution} px, "
          f"{time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
