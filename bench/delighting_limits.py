"""What limits the de-lit albedo on the texels the photo saw: oracles on the synthetic test faces.

    python -m bench.delighting_limits [--faces 20] [--resolution 256]

On the seen texels (visibility > 0.5) of the test split, the albedo PSNR up to the best
per-channel gain (`evaluate_reflectance.psnr_up_to_gain`: exposure and white balance given) of

- the first-order de-lit albedo (the backbone's, what the networks start from);
- the first-order de-lighting of the texture with the *true* specular subtracted, exactly and
  blurred by a Gaussian of `sigma` texels (only the specular's smooth part known);
- the shipped networks.

The specular the renderer adds (`render_pairs.render_uv`, Blinn-Phong on the specular normals,
pores included, times the specular albedo) is computed again from each pair's true maps and
lights, in the camera's units (exposure and white balance applied).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from rendering.color import linear_to_srgb, srgb_to_linear
from rendering.mesh import decode_normals
from training import evaluate_reflectance as ev
from training.reflectance_data import sample_face_maps
from training.render_pairs import (
    first_order_albedo,
    make_training_pair,
    render_uv,
    seeds,
    uv_geometry,
)

SIGMAS = (1.0, 2.0, 4.0)


def true_specular(pair: dict, seed: int, geometry) -> np.ndarray:
    """`(R, R, 3)` linear: the specular radiance the camera recorded for a training pair."""
    r = geometry.resolution
    maps = sample_face_maps(seed, r)

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))

    with torch.no_grad():
        return render_uv(
            geometry,
            t(np.zeros((r, r, 3))),
            t(maps["specular_albedo"]),
            t(decode_normals(maps["diffuse_normals"])),
            t(decode_normals(maps["specular_normals"])),
            torch.zeros(3, 9),
            pair["lighting"]["lights"],  # exposure and white balance applied
        ).numpy()


def first_order(pair: dict, geometry, specular: np.ndarray | None) -> np.ndarray:
    """The backbone's first-order de-lighting of the texture (minus `specular`), sRGB."""
    chart = np.asarray(geometry.chart, bool)
    colors = srgb_to_linear(pair["texture"])[chart]
    if specular is not None:
        colors = colors - specular[chart]
    out = np.zeros_like(pair["texture"])
    out[chart] = linear_to_srgb(np.clip(first_order_albedo(colors, geometry)[0], 0, None))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delighting_limits")
    parser.add_argument("--faces", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    geometry, nets = uv_geometry(args.resolution), ev.load_networks()
    rows: dict[str, list[float]] = {}
    for seed in seeds("test", args.faces):
        pair = make_training_pair(seed, args.resolution)
        seen = (pair["mask"][..., 0] > 0.5) & (pair["visibility"][..., 0] > 0.5)
        spec = true_specular(pair, seed, geometry)
        candidates = {
            "first-order albedo (the networks' input)": pair["delit_albedo"],
            "first-order, exact true specular removed": first_order(pair, geometry, spec),
            **{f"first-order, true specular blurred by {s:g} texel(s) removed": first_order(
                pair, geometry, cv2.GaussianBlur(spec, (0, 0), s)) for s in SIGMAS},
            "shipped networks": ev.run_networks(nets, pair)["diffuse_albedo"],
        }  # fmt: skip
        for name, albedo in candidates.items():
            score = ev.psnr_up_to_gain(albedo, pair["diffuse_albedo"], seen)
            rows.setdefault(name, []).append(score)
    print(f"Seen texels, albedo PSNR up to gain, {args.faces} test faces at "
          f"{args.resolution} px ({time.perf_counter() - t0:.0f} s):\n")  # fmt: skip
    print("| Albedo | PSNR (dB) |\n|---|---|")
    for name, scores in rows.items():
        print(f"| {name} | {np.mean(scores):.2f} |")


if __name__ == "__main__":
    main()
