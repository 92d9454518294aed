"""What limits the specular albedo: oracles on the synthetic test faces (issue 19, item 4).

    python -m bench.specular_limits [--faces 30] [--resolution 256]      (about 2 minutes)

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
- the constant at the true level (the level known, no structure);
- the constant at the level **the highlights give under a light** (`highlight_level`): the
  texture less its true diffuse part (an oracle: the diffuse albedo, shading and exposure
  known exactly) is the specular radiance, `level x lobe` for a uniform map; the level is its
  sum over the seen, unsaturated texels over the sum of the lobe rendered with a specular
  albedo of 1 under each of these lights (`LIGHT_ROWS`), each row's scale calibrated on as many
  train faces (the median ratio to the truth):
  - the true lights (the environment's dominant lights, as the camera recorded them);
  - their true directions, their colours fitted to the true order-2 SH light
    (`lights_fitted_to_sh`, with an ambient term): what the diffuse shading can tell of them;
  - the same, fitted to the backbone's estimated SH (what the pipeline has);
  - the dominant lights of the environment the estimated SH describes (no direction known).

Also the split of the constant's squared error into its level part (the squared difference of
the means) and its structure part (the true map's variance over the chart), and the spread of
each level estimate (s.d. of log(estimate / truth)) against the faces' own spread of levels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import nnls

from rendering.color import srgb_to_linear
from rendering.lights import (
    DirectionalLight,
    dominant_lights,
    equirect_directions,
    sh_from_directional,
)
from rendering.sh import sh_basis
from training import evaluate_reflectance as ev
from training.render_pairs import _render_maps, make_training_pair, seeds, uv_geometry

ROWS = (
    ("constant", "constant (training mean) — the baseline"),
    ("network", "network, at the training mean's level (shipped)"),
    ("network_true_level", "network's structure at the true level"),
    ("true_structure_prior_level", "true structure at the training mean's level"),
    ("true_times_exposure", "true map x the unknown exposure factor"),
    ("constant_true_level", "constant at the true level"),
)
LIGHT_ROWS = (
    ("true_lights", "constant at the highlights' level: the true lights"),
    ("directions_true_sh", "... their directions, colours fitted to the true SH"),
    ("directions_estimated_sh", "... their directions, colours fitted to the estimated SH"),
    ("estimated_sh_lights", "... the lights of the estimated SH"),
)
SEEN, SATURATED = 0.99, 0.98  # texels the photo saw fully, and not clipped in any channel


def sh_environment(coeffs: np.ndarray, height: int = 64, width: int = 128) -> np.ndarray:
    """The order-2 radiance `(H, W, 3)` that SH `coeffs` `(3, 9)` describe, clamped at 0."""
    return np.maximum(sh_basis(equirect_directions(height, width)) @ np.asarray(coeffs).T, 0)


def lights_fitted_to_sh(lights, coeffs: np.ndarray) -> list[DirectionalLight]:
    """`lights` with their colours refitted (non-negative least squares, per channel) so that
    they plus a uniform ambient term best give the order-2 SH light `coeffs` `(3, 9)`."""
    basis = [sh_from_directional([DirectionalLight(light.direction, np.ones(3))])[0]
             for light in lights]  # fmt: skip
    design = np.stack([*basis, np.eye(9)[0]], 1)
    colors = np.stack([nnls(design, np.asarray(coeffs)[c])[0][:-1] for c in range(3)], 1)
    return [
        DirectionalLight(light.direction, color)
        for light, color in zip(lights, colors, strict=True)
    ]


def _render(geometry, pair: dict, sh, lights, albedo_srgb, specular) -> np.ndarray:
    """The pair's face (its normals) with `albedo_srgb` and `specular` under `sh` and
    `lights`, as the pairs are rendered (`render_pairs._render_maps`): linear radiance."""
    maps = {**pair, "diffuse_albedo": albedo_srgb, "specular_albedo": specular}
    return _render_maps(geometry, maps, {"sh": sh, "lights": lights})[1]


def highlight_levels(pair: dict, geometry) -> dict[str, float]:
    """The uniform specular albedo the texture's highlights give under each `LIGHT_ROWS` light
    (module docstring), with the true diffuse part removed."""
    lighting = pair["lighting"]
    seen = (pair["visibility"][..., 0] > SEEN) & (pair["mask"][..., 0] > 0.5)
    seen &= pair["texture"].max(-1) < SATURATED
    albedo = pair["diffuse_albedo"]
    none, unit = np.zeros_like(pair["specular_albedo"]), np.ones_like(pair["specular_albedo"])
    diffuse = _render(geometry, pair, lighting["sh"], [], albedo, none)
    highlights = (srgb_to_linear(pair["texture"]) - diffuse)[seen]
    candidates = {
        "true_lights": lighting["lights"],
        "directions_true_sh": lights_fitted_to_sh(lighting["lights"], lighting["sh"]),
        "directions_estimated_sh": lights_fitted_to_sh(
            lighting["lights"], lighting["estimated_sh"]
        ),
        "estimated_sh_lights": dominant_lights(sh_environment(lighting["estimated_sh"])),
    }
    levels = {}
    for name, lights in candidates.items():
        lobe = _render(geometry, pair, np.zeros((3, 9)), lights, np.zeros_like(albedo), unit)
        levels[name] = float(highlights.sum() / max(float(lobe[seen].sum()), 1e-12))
    return levels


def _true_level(pair: dict) -> float:
    return float(pair["specular_albedo"][pair["mask"][..., 0] > 0.5].mean())


def calibration(num_faces: int, resolution: int) -> dict[str, float]:
    """Per `LIGHT_ROWS` estimate, the median of truth / estimate over train faces."""
    geometry, ratios = uv_geometry(resolution), {}
    for seed in seeds("train", num_faces):
        pair = make_training_pair(seed, resolution)
        for name, level in highlight_levels(pair, geometry).items():
            ratios.setdefault(name, []).append(_true_level(pair) / max(level, 1e-6))
    return {name: float(np.median(r)) for name, r in ratios.items()}


def evaluate(num_faces: int, resolution: int) -> dict:
    nets = ev.load_networks()
    prior = float(nets["specular"].config.mean_specular)
    scale = calibration(num_faces, resolution)
    geometry = uv_geometry(resolution)
    rows, level_share, log_errors, levels = [], [], {}, []
    for seed in seeds("test", num_faces):
        pair = make_training_pair(seed, resolution)
        mask = pair["mask"][..., 0] > 0.5
        truth = pair["specular_albedo"]
        level = _true_level(pair)
        levels.append(level)
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
        for name, estimate in highlight_levels(pair, geometry).items():
            estimate = max(estimate * scale[name], 1e-6)
            maps[name] = np.full_like(truth, min(estimate, 1.0))
            log_errors.setdefault(name, []).append(np.log(estimate / level))
        rows.append({k: ev.psnr(v, truth, mask) for k, v in maps.items()})
        variance = float(truth[mask].var())
        level_share.append((level - prior) ** 2 / ((level - prior) ** 2 + variance))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["level_share"] = float(np.mean(level_share))
    out["spread"] = {name: float(np.std(e)) for name, e in log_errors.items()}
    out["level_spread"] = float(np.std(np.log(levels)))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = evaluate(args.faces, args.resolution)
    base = results["constant"]
    print("| Specular albedo | PSNR (dB) | vs constant | level's log error (s.d.) |")
    print("|---|---:|---:|---:|")
    for key, label in (*ROWS, *LIGHT_ROWS):
        spread = results["spread"].get(key)
        cell = "" if spread is None else f"{spread:.2f}"
        print(f"| {label} | {results[key]:.2f} | {results[key] - base:+.2f} | {cell} |")
    print(f"\nThe faces' own spread of levels (s.d. of log level): {results['level_spread']:.2f}")
    print(f"Share of the constant's squared error that is its level (mean over faces): "
          f"{100 * results['level_share']:.0f} %")  # fmt: skip
    print(f"({args.faces} test faces at {args.resolution} px, as many train faces to calibrate "
          f"the highlight levels; {time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
