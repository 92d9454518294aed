"""The reflectance networks on reduced maps against full size, on synthetic faces with known
maps (issue 17): how close each is to the truth and how long it takes.

    python -m bench.bench_network_resolution [--resolution 1024] [--faces 6]
                                             [--caps 512 256] [--no-write]

For each test-split face (`training.render_pairs.make_training_pair` at `--resolution` px) the
shipped networks run through `modeling.networks.reflectance.reflectance_maps` as the pipeline
runs them (bfloat16 where the CPU has it, `network_precision="auto"`), once on the full maps and
once per `--caps` value as `max_resolution` (the pipeline's config `network_resolution`: the
networks see the maps area-averaged to that size, their outputs come back by guided
upsampling). Metrics against the true maps on the UV chart, as `training.evaluate_reflectance`
computes them. Prints a markdown section and writes it to `bench/RESULTS.md` as "Networks on
reduced maps" (that section only, `bench.report.KEPT_SECTIONS`).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import modeling  # noqa: F401  (the OpenMP wait policy, before torch loads)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
MARKER = "<!-- network-resolution:begin -->"
METRICS = (
    ("albedo", "diffuse albedo PSNR (dB) ↑"),
    ("specular", "specular albedo PSNR (dB) ↑"),
    ("specular_normals", "specular normals error (°) ↓"),
    ("diffuse_normals", "diffuse normals error (°) ↓"),
    ("seconds", "networks' time per face (s)"),
)


def _scores(maps: dict, pair: dict, mask: np.ndarray) -> dict:
    from training.evaluate_reflectance import angular_error, psnr

    return {
        "albedo": psnr(maps["diffuse_albedo"], pair["diffuse_albedo"], mask),
        "specular": psnr(maps["specular_albedo"], pair["specular_albedo"], mask),
        "specular_normals": angular_error(maps["specular_normals"], pair["specular_normals"], mask),
        "diffuse_normals": angular_error(maps["diffuse_normals"], pair["diffuse_normals"], mask),
    }


def evaluate(resolution: int, faces: int, caps: list[int]) -> dict:
    """`{run: {metric: mean over the faces}}`, runs "full" and each cap."""
    from modeling.networks.reflectance import reflectance_maps
    from training.evaluate_reflectance import load_networks
    from training.render_pairs import make_training_pair, seeds

    nets = load_networks()
    runs: dict[str, list[dict]] = {}
    for seed in seeds("test", faces):
        pair = make_training_pair(seed, resolution)
        mask = pair["mask"][..., 0] > 0.5
        shape = {"shape_normals": pair["shape_normals"], "ambient_occlusion": pair["ao"]}
        for cap in [None, *caps]:
            start = time.perf_counter()
            maps = reflectance_maps(pair["texture"], pair["delit_albedo"], shape,
                                    pair["visibility"], **nets, chart=mask,
                                    max_resolution=cap)  # fmt: skip
            seconds = time.perf_counter() - start
            name = "full" if cap is None else str(cap)
            runs.setdefault(name, []).append({**_scores(maps, pair, mask), "seconds": seconds})
    return {name: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            for name, rows in runs.items()}  # fmt: skip


def markdown(results: dict, resolution: int, faces: int, argv: list[str]) -> str:
    names = list(results)
    heads = ["full size"] + [f"networks at ≤ {n} px" for n in names[1:]]
    lines = [
        "## Networks on reduced maps (issue 17)",
        "",
        f"`python -m bench.bench_network_resolution {' '.join(argv)}`".replace(" `", "`"),
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC): {faces} test-split synthetic faces at "
        f"{resolution} px; the shipped networks through `reflectance_maps` on the full maps and "
        "with `max_resolution` (the pipeline's `network_resolution`: the maps area-averaged, "
        "the outputs brought back by guided upsampling, the diffuse albedo as the full-size "
        "first-order albedo plus the de-lighting's correction). Metrics against the true maps "
        "on the UV chart (`training.evaluate_reflectance`).",
        "",
        "| metric | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label in METRICS:
        fmt = "{:.2f}" if key in ("albedo", "specular", "seconds") else "{:.3f}"
        cells = " | ".join(fmt.format(results[n][key]) for n in names)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--faces", type=int, default=6)
    parser.add_argument("--caps", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    import sys

    shown = sys.argv[1:] if argv is None else argv
    text = markdown(evaluate(args.resolution, args.faces, args.caps), args.resolution,
                    args.faces, [a for a in shown if a != "--no-write"])  # fmt: skip
    print(text)
    if not args.no_write:
        from bench.report import write_kept

        write_kept(text, RESULTS, MARKER)


if __name__ == "__main__":
    main()
