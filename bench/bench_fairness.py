"""Fairness across skin tones (issue 19; after TRUST's FAIR benchmark, Feng et al., ECCV 2022,
which measures albedo by the individual typology angle): how far the diffuse albedo's skin tone
is from the truth, per Fitzpatrick type.

Run:  python -m bench.bench_fairness [--faces 5] [--resolution 256] [--weights weights_config]
      (about 2 minutes on 2 cores)

Faces: the first `--faces` seeds of the synthetic *test* split (2,000,000 onwards) of each
Fitzpatrick type I..VI (`training.skin_calibration.seeds_of_type`), rendered into training pairs
(`training.render_pairs.make_training_pair`: random light, exposure and partial white balance).

Per face, the skin tone of a diffuse albedo is its face-mean ITA: the individual typology angle
atan((L* - 50) / b*) (degrees) of the mean linear-RGB colour over the skin texels of the UV
chart (`skin`: eyes, brows and lips cut out), as `training.skin_calibration.face_mean_lab`
measures it. The **ITA error** of a face is |ITA(albedo) - ITA(truth)|; a type's error is the
mean over its faces; the mean error is the mean over all faces (= over the types, which are
balanced); the **bias** is the largest type's error less the smallest. The signed mean error
(ITA(albedo) - ITA(truth); > 0: lighter or less yellow than the truth) is shown beside it.

Albedos compared: the networks with the pipeline's default white balance (the photo's) and with
the de-lighting network's skin prior (`white_balance="skin_prior"`), and the first-order de-lit
albedo (the backbone's baseline); as a bound, the true albedo seen through the camera's random
exposure factor (`exposure_jitter`, log s.d. 0.2: the light's and the albedo's scales are one
unknown, and ITA moves with L*). Targets: mean error <= 8 degrees, bias <= 3 degrees, no type
worse than the first-order baseline.

Prints a markdown section and keeps it in `bench/RESULTS.md` (between its markers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import KEPT_SECTIONS, write_kept_section
from rendering.color import linear_to_srgb, srgb_to_linear
from training.evaluate_reflectance import load_networks, run_networks
from training.render_pairs import SPLITS, make_training_pair
from training.skin_calibration import REFERENCE, face_mean_lab, ita_of_lab, seeds_of_type

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MARKERS = ("<!-- fairness:begin -->", "<!-- fairness:end -->")
assert MARKERS in KEPT_SECTIONS
WEIGHTS = Path(__file__).resolve().parent.parent / "weights_config"
TYPES = ("I", "II", "III", "IV", "V", "VI")
METHODS = {
    "network": "Networks (photo's white balance, default)",
    "network_skin_prior": "Networks (skin prior)",
    "first_order": "First-order de-lit albedo (baseline)",
    "exposure_oracle": "Truth under the unknown exposure factor (bound)",
}
MEAN_TARGET, BIAS_TARGET = 8.0, 3.0


def face_ita(albedo_srgb: np.ndarray, skin: np.ndarray) -> float:
    """Face-mean ITA (degrees) of an sRGB albedo `(R, R, 3)` over `skin` `(R, R)` bool."""
    return float(ita_of_lab(face_mean_lab(albedo_srgb, skin)))


def measure(nets: dict, faces: int, resolution: int) -> dict:
    """`{method: (6, faces) signed ITA errors}` and `"truth": (6, faces)` true face-mean ITAs."""
    out = {k: np.zeros((6, faces)) for k in (*METHODS, "truth")}
    for t in range(6):
        for j, seed in enumerate(seeds_of_type(t + 1, faces, SPLITS["test"].start)):
            pair = make_training_pair(seed, resolution)
            skin = pair["skin"][..., 0] > 0.5
            truth = face_ita(pair["diffuse_albedo"], skin)
            albedos = {
                "network": run_networks(nets, pair)["diffuse_albedo"],
                "network_skin_prior": run_networks(nets, pair, "skin_prior")["diffuse_albedo"],
                "first_order": pair["delit_albedo"],
                # what no method can remove: the camera's random exposure factor
                "exposure_oracle": linear_to_srgb(
                    srgb_to_linear(pair["diffuse_albedo"]) * pair["lighting"]["exposure_jitter"]
                ),
            }
            out["truth"][t, j] = truth
            for name, albedo in albedos.items():
                out[name][t, j] = face_ita(albedo, skin) - truth
    return out


def summarise(signed: np.ndarray, baseline: np.ndarray | None = None) -> dict:
    """Per-type and overall numbers of one method's signed errors `(6, faces)`."""
    per_type = np.abs(signed).mean(1)
    mean, bias = float(np.abs(signed).mean()), float(per_type.max() - per_type.min())
    summary = {"per_type": per_type, "signed": signed.mean(1), "mean": mean, "bias": bias}
    targets = mean <= MEAN_TARGET and bias <= BIAS_TARGET
    if baseline is not None:
        summary["worse_than_baseline"] = [
            TYPES[t] for t in range(6) if per_type[t] > np.abs(baseline).mean(1)[t]
        ]
        targets = targets and not summary["worse_than_baseline"]
    summary["targets_met"] = targets
    return summary


def markdown(results: dict, faces: int, resolution: int, weights: str, seconds: float) -> str:
    base = results["first_order"]
    rows = {name: summarise(results[name], base if name.startswith("network") else None)
            for name in METHODS}  # fmt: skip
    head = "| Albedo | " + " | ".join(f"{t} ({REFERENCE[i].category})"
                                      for i, t in enumerate(TYPES))  # fmt: skip
    lines = [
        "## Fairness across skin tones (ITA error of the diffuse albedo)",
        "",
        f"`python -m bench.bench_fairness` ({faces} synthetic test faces per Fitzpatrick type "
        f"at {resolution} px, weights `{weights}`, {seconds:.0f} s). Per type: mean |ITA error| "
        "in degrees of the face-mean skin colour (signed mean in brackets: > 0 lighter / less "
        "yellow than the truth). Targets: mean <= 8, bias (max - min type) <= 3, no type worse "
        "than the first-order baseline.",
        "",
        head + " | Mean | Bias | Targets |",
        "|---|" + "---|" * 6 + "---|---|---|",
    ]
    for name, label in METHODS.items():
        r = rows[name]
        cells = " | ".join(f"{e:.1f} ({s:+.1f})" for e, s in zip(r["per_type"], r["signed"],
                                                                strict=True))  # fmt: skip
        if name == "exposure_oracle":
            verdict = "bound"
        elif name == "first_order":
            verdict = "met" if r["targets_met"] else "not met"
        else:
            worse = r["worse_than_baseline"]
            verdict = ("met" if r["targets_met"] else "not met") + (
                f" (worse than baseline: {', '.join(worse)})" if worse else "")  # fmt: skip
        lines.append(f"| {label} | {cells} | {r['mean']:.1f} | {r['bias']:.1f} | {verdict} |")
    truth = results["truth"]
    lines += [
        "",
        "True face-mean ITA per type (mean ± s.d.): "
        + ", ".join(
            f"{t} {m:.0f} ± {s:.0f}"
            for t, m, s in zip(TYPES, truth.mean(1), truth.std(1), strict=True)
        )  # fmt: skip
        + ".",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=5, help="per Fitzpatrick type")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = measure(load_networks(args.weights), args.faces, args.resolution)
    name = args.weights.name if args.weights.resolve() == WEIGHTS.resolve() else str(args.weights)
    text = markdown(results, args.faces, args.resolution, name, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        write_kept_section(text, RESULTS, MARKERS)


if __name__ == "__main__":
    main()
