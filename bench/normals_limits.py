"""What limits the specular (detail) normals (issue 19: angular error <= 70 % of flat normals'
when the photo resolves pores and wrinkles): oracles on the synthetic test faces.

    python -m bench.normals_limits [--faces 3] [--resolution 1024] [--no-write]
                                                    (about 2 minutes on 2 cores)

On the skin texels the photo saw (visibility > 0.5) of `make_training_pair`'s test faces, the
mean angular error (°, `evaluate_reflectance.angular_error`) against the true specular normals of

- **flat** normals (the shape's own) and the **shipped networks** (`run_networks`);
- **dark is deep** (Beeler et al. 2010): a height proportional to the high-pass (Gaussian,
  `DARK_IS_DEEP_MM`) of the texture's log-luminance, with the gain that suits each face best
  (an oracle: no method knows it);
- the **linear oracle**: the best shift-invariant linear filter from the texture's
  log-luminance to the true height (a 2-D Wiener filter, its spectra fitted on the same face's
  truth and averaged over 9 x 9 frequency bins): no linear method, "dark is deep" or shading
  under a known light included, does better on these faces;
- **the true relief finer than s mm** (the true height high-passed at s): what recovering only
  the fine detail would give, i.e. where the flat normals' error lies;
- dark is deep and the linear oracle again on the same faces rendered **with micro-occlusion**
  (`make_training_pair(..., micro_occlusion=True)`: the detail relief's own horizon-based
  occlusion, `rendering.shading.relief_occlusion`, darkens the diffuse light before it scatters),
  to tell whether the renderer's missing occlusion is what hides the relief.

Writes its section into `bench/RESULTS.md` between `MARKERS`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.report import KEPT_SECTIONS, write_kept_section
from rendering.color import luminance, srgb_to_linear
from rendering.shading import relief_occlusion
from training import evaluate_reflectance as ev
from training.face_layout import texel_size_mm
from training.reflectance_data import height_to_normals
from training.render_pairs import make_training_pair, seeds

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MARKERS = next(m for m in KEPT_SECTIONS if m[0] == "<!-- normals-limits:begin -->")
DARK_IS_DEEP_MM = 0.6
GAINS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # mm of height per log unit of luminance
FINER_THAN_MM = (0.3, 0.6, 1.2, 2.5, 5.0)
WIENER_BINS = 9

FLAT, NETWORKS = "flat (the shape's normals)", "shipped networks"
DARK = f"dark is deep: log-luminance high-pass ({DARK_IS_DEEP_MM:g} mm), best gain per face"
LINEAR = "linear oracle: 2-D Wiener filter log-luminance -> height, fitted on the face's truth"
OCCLUDED_DARK = "rendered with micro-occlusion: dark is deep, best gain per face"
OCCLUDED_LINEAR = "rendered with micro-occlusion: linear oracle"


def _encoded(normals: np.ndarray) -> np.ndarray:
    return (normals + 1) / 2


def _flat(shape: tuple[int, ...]) -> np.ndarray:
    flat = np.zeros(shape, np.float32)
    flat[..., 2] = 1
    return _encoded(flat)


def _error(height: np.ndarray, truth: np.ndarray, mask: np.ndarray, texel: float) -> float:
    return ev.angular_error(_encoded(height_to_normals(height, texel)), truth, mask)


def wiener_height(log_luma: np.ndarray, height: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`(R, R)`: the best 2-D linear shift-invariant estimate of `height` from `log_luma` on
    `mask` (cross- over auto-spectrum, each averaged over `WIENER_BINS`^2 frequency bins)."""
    m = mask.astype(np.float64)
    x = np.fft.rfft2((log_luma - log_luma[mask].mean()) * m)
    y = np.fft.rfft2((height - height[mask].mean()) * m)
    cross = y * np.conj(x)
    k = (WIENER_BINS, WIENER_BINS)
    cross = cv2.blur(cross.real, k) + 1j * cv2.blur(cross.imag, k)
    auto = cv2.blur(np.abs(x) ** 2, k)
    return np.fft.irfft2(cross / np.maximum(auto, 1e-12) * x, s=height.shape)


def _log_luma(texture: np.ndarray) -> np.ndarray:
    return np.log(luminance(srgb_to_linear(texture)) + 1e-3).astype(np.float64)


def _texture_estimates(log_luma, height, truth, mask, texel) -> tuple[float, float]:
    """(dark is deep with its best gain, the linear oracle): their errors (°)."""
    high = log_luma - cv2.GaussianBlur(log_luma, (0, 0), DARK_IS_DEEP_MM / texel)
    dark = min(_error(g * high, truth, mask, texel) for g in GAINS)
    return dark, _error(wiener_height(log_luma, height, mask), truth, mask, texel)


def evaluate(faces: int, resolution: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per row, the error (°) of each face; and the micro-occlusion's statistics over the
    evaluated texels (`darkest 1 %`: its 1st percentile, `median`)."""
    nets, texel = ev.load_networks(), texel_size_mm(resolution)
    rows: dict[str, list[float]] = {}
    occlusion = []
    for seed in seeds("test", faces):
        pair = make_training_pair(seed, resolution)
        mask = (pair["skin"][..., 0] > 0.5) & (pair["visibility"][..., 0] > 0.5)
        truth, height = pair["specular_normals"], pair["height"][..., 0].astype(np.float64)
        with torch.no_grad():
            network = ev.run_networks(nets, pair)["specular_normals"]
        dark, linear = _texture_estimates(_log_luma(pair["texture"]), height, truth, mask, texel)
        occluded = make_training_pair(seed, resolution, micro_occlusion=True)["texture"]
        dark_occluded, linear_occluded = _texture_estimates(
            _log_luma(occluded), height, truth, mask, texel
        )
        occlusion.append(relief_occlusion(height, texel)[mask])
        scores = {
            FLAT: ev.angular_error(_flat(truth.shape), truth, mask),
            NETWORKS: ev.angular_error(network, truth, mask),
            DARK: dark,
            LINEAR: linear,
            OCCLUDED_DARK: dark_occluded,
            OCCLUDED_LINEAR: linear_occluded,
        }
        for s in FINER_THAN_MM:
            fine = height - cv2.GaussianBlur(height, (0, 0), s / texel)
            scores[f"the true relief finer than {s:g} mm"] = _error(fine, truth, mask, texel)
        for name, score in scores.items():
            rows.setdefault(name, []).append(score)
    ao = np.concatenate(occlusion)
    return rows, {"darkest 1 %": float(np.percentile(ao, 1)), "median": float(np.median(ao))}


def section(
    rows: dict[str, list[float]],
    occlusion: dict[str, float],
    faces: int,
    resolution: int,
    seconds: float,
) -> str:
    flat = np.array(rows[FLAT])
    lines = [
        "## What limits the detail normals (issue 19)",
        "",
        f"`python -m bench.normals_limits` ({seconds:.0f} s): {faces} test-split synthetic "
        f"faces at {resolution} px ({texel_size_mm(resolution):.2f} mm texels), the skin "
        "texels the photo saw; mean angular error of the specular normals against the truth, "
        "and as a share of the flat normals' error (per face, then averaged). The module "
        "docstring says how each row is made.",
        "",
        "| specular normals | error (°) | share of flat |",
        "|---|---:|---:|",
    ]
    for name, scores in rows.items():
        share = 100 * np.mean(np.array(scores) / flat)
        lines.append(f"| {name} | {np.mean(scores):.2f} | {share:.0f} % |")

    def share(name: str) -> float:
        return 100 * float(np.mean(np.array(rows[name]) / flat))

    fine = f"the true relief finer than {DARK_IS_DEEP_MM:g} mm"
    darkening = {k: 100 * (1 - v) for k, v in occlusion.items()}
    lines += [
        "",
        f"- **The texture does not carry the relief on these faces.** The best linear "
        f"estimator, fitted on each face's own truth, reaches {share(LINEAR):.0f} % of the flat "
        f"error; dark-is-deep with its best gain {share(DARK):.0f} %; the networks "
        f"{share(NETWORKS):.0f} %. The issue's target (70 %) lies beyond any of them.",
        f"- **Where the error is**: knowing only the relief finer than {DARK_IS_DEEP_MM:g} mm "
        f"(pores, fine lines; two to three texels) would leave {share(fine):.0f} % of it. The "
        "pair renderer lights the diffuse term with normals blurred by 1 mm and spreads the "
        "shading under the skin (subsurface scattering over millimetres), so the fine relief "
        "shades nothing in the diffuse light; only the specular highlights show it, over a "
        "small part of the face.",
        f"- **Micro-occlusion does not change that.** With the relief's own occlusion in the "
        f"renderer, dark-is-deep reaches {share(OCCLUDED_DARK):.0f} % and the linear oracle "
        f"{share(OCCLUDED_LINEAR):.0f} %: the occlusion darkens the median texel by "
        f"{darkening['median']:.2f} % and the darkest 1 % by {darkening['darkest 1 %']:.1f} % "
        "or more, because the relief's slopes are a few degrees (the flat normals' error), too "
        "shallow to shade themselves. The pores are darker in the renders as in photos (the "
        "generator darkens their albedo by up to 15 %), but most of the error sits in "
        "furrows and fine lines that have no colour of their own. Reaching the target needs "
        "what these pairs lack: relief that shows in the diffuse light (real captures, or a "
        "renderer whose fine-scale shading is validated against them), not a better estimator.",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.normals_limits")
    parser.add_argument("--faces", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows, occlusion = evaluate(args.faces, args.resolution)
    text = section(rows, occlusion, args.faces, args.resolution, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        write_kept_section(text, RESULTS, MARKERS)


if __name__ == "__main__":
    main()
