"""Fairness across skin tones (issue 19; after TRUST's FAIR benchmark, Feng et al., ECCV 2022,
which measures albedo by the individual typology angle): how far the diffuse albedo's skin tone
is from the truth, per Fitzpatrick type.

Run:  python -m bench.bench_fairness [--faces 40] [--resolution 256] [--weights weights_config]
      (about 5 minutes on 2 cores; only the de-lighting network runs)

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

The faces differ a lot (per face the error's s.d. is 5-10 degrees), so a type's mean error is
uncertain by about s.d. / sqrt(faces), and the bias, a largest-less-smallest of six such means,
is biased upward by that noise: with 5 faces per type a perfectly fair method would show a bias
of about 5 degrees. Hence 40 faces per type by default, and 90 % bootstrap intervals (faces
resampled within each type, `BOOTSTRAP` draws) beside the mean error and the bias.

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
from modeling.networks.delighting import DelightingNet
from rendering.color import linear_to_srgb, srgb_to_linear
from training.evaluate_reflectance import _np, run_delighting
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
    "network_level_known": "Networks (default) with the true face-mean L* (oracle: the colour's "
    "error)",
    "network_colour_known": "Networks (default) with the true face-mean a*, b* (oracle: the "
    "level's error)",
    "network_skin_prior_level_known": "Networks (skin prior) with the true face-mean L* (oracle)",
}
# rows that are given part of the truth: they say where a method's error sits, not how it does
ORACLES = ("exposure_oracle", "network_level_known", "network_colour_known",
           "network_skin_prior_level_known")  # fmt: skip
MEAN_TARGET, BIAS_TARGET = 8.0, 3.0
BOOTSTRAP = 2000


def measure(net: DelightingNet, faces: int, resolution: int) -> dict:
    """`{method: (6, faces) signed ITA errors}` and `"truth": (6, faces)` true face-mean ITAs,
    of the de-lighting network `net`. The "..._known" oracles take the network's face-mean
    L*a*b* with part of it replaced by the truth's."""
    out = {k: np.zeros((6, faces)) for k in (*METHODS, "truth")}
    parts = {"network_level_known": ("network", [0]),
             "network_colour_known": ("network", [1, 2]),
             "network_skin_prior_level_known": ("network_skin_prior", [0])}  # fmt: skip
    for t in range(6):
        for j, seed in enumerate(seeds_of_type(t + 1, faces, SPLITS["test"].start)):
            pair = make_training_pair(seed, resolution)
            skin = pair["skin"][..., 0] > 0.5
            truth_lab = face_mean_lab(pair["diffuse_albedo"], skin)
            truth = float(ita_of_lab(truth_lab))
            albedos = {
                "network": _np(run_delighting(net, pair)),
                "network_skin_prior": _np(run_delighting(net, pair, "skin_prior")),
                "first_order": pair["delit_albedo"],
                # what no method can remove: the camera's random exposure factor
                "exposure_oracle": linear_to_srgb(
                    srgb_to_linear(pair["diffuse_albedo"]) * pair["lighting"]["exposure_jitter"]
                ),
            }
            labs = {name: face_mean_lab(albedo, skin) for name, albedo in albedos.items()}
            for name, (source, given) in parts.items():
                labs[name] = labs[source].copy()
                labs[name][given] = truth_lab[given]
            out["truth"][t, j] = truth
            for name, lab in labs.items():
                out[name][t, j] = float(ita_of_lab(lab)) - truth
    return out


def bootstrap_intervals(signed: np.ndarray, draws: int = BOOTSTRAP, seed: int = 0) -> dict:
    """90 % intervals `{"mean": (lo, hi), "bias": (lo, hi)}` of the mean |error| and the bias
    of signed errors `(6, faces)`, the faces resampled with replacement within each type."""
    err = np.abs(signed)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, err.shape[1], size=(draws, *err.shape))
    per_type = np.take_along_axis(err[None], pick, axis=2).mean(2)  # (draws, 6)
    means, biases = per_type.mean(1), per_type.max(1) - per_type.min(1)
    return {k: tuple(np.percentile(v, (5, 95))) for k, v in (("mean", means), ("bias", biases))}


def summarise(signed: np.ndarray, baseline: np.ndarray | None = None) -> dict:
    """Per-type and overall numbers of one method's signed errors `(6, faces)`."""
    per_type = np.abs(signed).mean(1)
    mean, bias = float(np.abs(signed).mean()), float(per_type.max() - per_type.min())
    summary = {"per_type": per_type, "signed": signed.mean(1), "mean": mean, "bias": bias,
               "intervals": bootstrap_intervals(signed)}  # fmt: skip
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
    rows = {name: summarise(results[name], None if name in ORACLES or name == "first_order"
                            else base)
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
        "than the first-order baseline. In brackets after the mean and the bias: 90 % bootstrap "
        "intervals (faces resampled within each type).",
        "",
        head + " | Mean | Bias | Targets |",
        "|---|" + "---|" * 6 + "---|---|---|",
    ]
    for name, label in METHODS.items():
        r = rows[name]
        cells = " | ".join(f"{e:.1f} ({s:+.1f})" for e, s in zip(r["per_type"], r["signed"],
                                                                strict=True))  # fmt: skip
        if name in ORACLES:
            verdict = "bound" if name == "exposure_oracle" else "oracle"
        elif name == "first_order":
            verdict = "met" if r["targets_met"] else "not met"
        else:
            worse = r["worse_than_baseline"]
            verdict = ("met" if r["targets_met"] else "not met") + (
                f" (worse than baseline: {', '.join(worse)})" if worse else "")  # fmt: skip
        (m0, m1), (b0, b1) = r["intervals"]["mean"], r["intervals"]["bias"]
        lines.append(f"| {label} | {cells} | {r['mean']:.1f} [{m0:.1f}, {m1:.1f}] "
                     f"| {r['bias']:.1f} [{b0:.1f}, {b1:.1f}] | {verdict} |")  # fmt: skip
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
    parser.add_argument("--faces", type=int, default=40, help="per Fitzpatrick type")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = measure(DelightingNet.from_pretrained(args.weights / "delighting").eval(),
                      args.faces, args.resolution)  # fmt: skip
    name = args.weights.name if args.weights.resolve() == WEIGHTS.resolve() else str(args.weights)
    text = markdown(results, args.faces, args.resolution, name, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        write_kept_section(text, RESULTS, MARKERS)


if __name__ == "__main__":
    main()
