"""Refit the de-lighting network's global gain head to the face-mean skin colour (issue 19,
item 2: fairness across skin tones).

The de-lighting network's output level is `exp(g - s)` (`DelightingNet.forward`): the head's
per-channel log-gain `g` and the mean of the U-Net's log-shading correction `s`. Training
(`training.train_reflectance`) supervised `g` alone, towards the first-order albedo's best gain,
so the U-Net's own mean shading moved the level away from it, and nothing asked for the
face-mean colour, which is what the individual typology angle (ITA) of `bench.bench_fairness`
reads. This refit keeps the U-Net frozen and fits the head (same architecture, same inputs: the
map statistics) so that the network's face-mean linear colour over the skin matches the truth:
loss = mean squared difference of the log face-mean per channel, in "skin_prior" mode (the
network as trained; "camera" mode uses the luminance of the same gains).

Faces: the train split from seed 100,000 on (the U-Net was trained on the first 800), balanced
over Fitzpatrick types, `--faces` per type (150), rendered at 256 px like the training pairs
(random light, exposure and partial white balance). Validation: the val split, 30 per type.
Per face the cache keeps the map statistics, every `TEXEL_STRIDE`-th skin texel of the U-Net's
albedo at zero gain (linear) and of its sRGB residual, and the true face-mean colour
(`training/runs/gain_refit/`, about 10 minutes to render on 2 processes).

Fit: full batch, Adam (lr 1e-3, weight decay 1e-4), `--steps` (300), float64, deterministic,
starting from the head in `--weights`: the shipped head (de-lighting v7) is this refit run once
on the v6 head (`training.train_reflectance --component delighting`, which trains the U-Net and
the head together; rerun that first to reproduce from scratch). Saves the component, the Hub layout
and the weights manifest, and prints the validation before and after.

Run:  python -m training.refit_gain [--faces 150] [--steps 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from modeling.networks.delighting import DelightingNet
from pipelines.avatar_pipeline import AvatarPipeline
from pipelines.weights import write_hub_layout, write_manifest
from rendering.color import linear_to_srgb, luminance, srgb_to_linear
from training.evaluate_reflectance import WEIGHTS, _t
from training.render_pairs import SPLITS, make_training_pair
from training.skin_calibration import seeds_of_type

CACHE = Path(__file__).resolve().parent / "runs" / "gain_refit"
FIT_START = 100_000  # train-split seeds the U-Net never saw (it was trained on the first 800)
VAL_FACES = 30
TEXEL_STRIDE = 8
RESOLUTION = 256


@torch.no_grad()
def face_record(net: DelightingNet, seed: int, resolution: int = RESOLUTION) -> dict:
    """What the refit needs of one synthetic face: `stats` `(NUM_STATS,)`, `albedo0` `(K, 3)`
    the U-Net's albedo at zero gain (linear RGB) and `residual` `(K, 3)` its sRGB residual on
    every `TEXEL_STRIDE`-th skin texel, `truth` `(3,)` the true face-mean linear colour over the
    skin, and the face's `fitzpatrick` type."""
    pair = make_training_pair(seed, resolution)
    skin = pair["skin"][..., 0] > 0.5
    tex, delit, vis = _t(pair["texture"]), _t(pair["delit_albedo"]), _t(pair["visibility"])
    stats = DelightingNet.global_stats(tex, delit, vis)
    base, log_shading, residual = net.zero_gain_terms(
        tex, delit, _t(pair["shape_normals"]), _t(pair["ao"]), vis, stats
    )
    on_skin = lambda x: x[0].permute(1, 2, 0).numpy()[skin][::TEXEL_STRIDE]  # noqa: E731
    truth = srgb_to_linear(pair["diffuse_albedo"].astype(np.float64))[skin].mean(0)
    return {"stats": stats[0].numpy(), "albedo0": on_skin(base * torch.exp(-log_shading)),
            "residual": on_skin(residual), "truth": truth,
            "fitzpatrick": pair["params"]["fitzpatrick"]}  # fmt: skip


def _records(args: tuple) -> list[dict]:
    weights, seeds = args
    torch.set_num_threads(1)
    net = DelightingNet.from_pretrained(weights / "delighting").eval()
    return [face_record(net, s) for s in seeds]


def load_faces(split: str, per_type: int, start: int, weights: Path, workers: int) -> dict:
    """Stacked, zero-padded records of `per_type` faces of each Fitzpatrick type from seed
    `start` of `split` (cached by their seeds in `CACHE`): `stats` `(N, S)`, `albedo0`,
    `residual` `(N, K, 3)`, `weight` `(N, K, 1)` (1 on real texels), `truth` `(N, 3)`, `type`
    `(N,)`."""
    path = CACHE / f"{split}_{start}_{per_type}_{RESOLUTION}.npz"
    if not path.is_file():
        seeds = [s for t in range(1, 7) for s in seeds_of_type(t, per_type, start)]
        chunks = [(weights, seeds[i::workers]) for i in range(workers)]
        # spawn: a fork of a process whose torch thread pool has run can hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_records, chunks))
        records = [None] * len(seeds)
        for i, part in enumerate(parts):
            records[i::workers] = part
        k = max(len(r["albedo0"]) for r in records)
        pad = lambda key: np.stack([np.pad(r[key], ((0, k - len(r[key])), (0, 0)))  # noqa: E731
                                    for r in records]).astype(np.float32)  # fmt: skip
        weight = np.stack([np.arange(k) < len(r["albedo0"]) for r in records])[..., None]
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, stats=np.stack([r["stats"] for r in records]),
                            albedo0=pad("albedo0"), residual=pad("residual"),
                            weight=weight.astype(np.float32),
                            truth=np.stack([r["truth"] for r in records]),
                            type=np.array([r["fitzpatrick"] for r in records]))  # fmt: skip
    with np.load(path) as data:
        return {k: torch.from_numpy(data[k]).double() if k != "type" else data[k] for k in data}


def face_means(faces: dict, gain: torch.Tensor, white_balance: str = "skin_prior") -> torch.Tensor:
    """`(N, 3)` face-mean linear colour of the network's albedo (clamped to [0, 1] in sRGB, as
    the pipeline clamps it) under the per-face log-gains `gain` `(N, 3)`."""
    if white_balance == "camera":
        gain = DelightingNet.camera_gain(gain)
    srgb = linear_to_srgb(faces["albedo0"] * torch.exp(gain)[:, None]) + faces["residual"]
    lin = srgb_to_linear(srgb.clamp(0, 1)) * faces["weight"]
    return lin.sum(1) / faces["weight"].sum(1)


def level_error(faces: dict, head: torch.nn.Module, white_balance: str) -> dict:
    """Log face-mean errors of `head` (float64) on `faces`: `rms` over channels and faces, and
    the luminance's `sd` and `mean` (> 0: lighter than the truth)."""
    with torch.no_grad():
        means = face_means(faces, head(faces["stats"] * 2 - 1), white_balance)
    err = torch.log(means) - torch.log(faces["truth"])
    luma = torch.log(luminance(means, axis=1)) - torch.log(luminance(faces["truth"], axis=1))
    return {"rms": float(err.pow(2).mean().sqrt()), "sd": float(luma.std()),
            "mean": float(luma.mean())}  # fmt: skip


def refit(head: torch.nn.Module, faces: dict, steps: int, lr: float = 1e-3) -> torch.nn.Module:
    """A copy of `head` fitted to `faces` (full batch, float64; see the module docstring)."""
    head = copy.deepcopy(head).double().train()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    target = torch.log(faces["truth"])
    for _ in range(steps):
        loss = (torch.log(face_means(faces, head(faces["stats"] * 2 - 1))) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.float().eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=150, help="per Fitzpatrick type")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    fit = load_faces("train", args.faces, SPLITS["train"].start + FIT_START, args.weights,
                     args.workers)  # fmt: skip
    val = load_faces("val", VAL_FACES, SPLITS["val"].start, args.weights, args.workers)
    t1 = time.perf_counter()
    net = DelightingNet.from_pretrained(args.weights / "delighting").eval()
    before = {m: level_error(val, net.global_head.double(), m) for m in ("skin_prior", "camera")}
    net.global_head.float()
    net.global_head = refit(net.global_head, fit, args.steps)
    after = {m: level_error(val, net.global_head.double(), m) for m in ("skin_prior", "camera")}
    net.global_head.float()
    print(f"{len(fit['truth'])} faces ready (rendered or cached) in {t1 - t0:.0f} s, fitted in "
          f"{time.perf_counter() - t1:.0f} s; validation ({len(val['truth'])} faces), log "
          "face-mean colour error:")  # fmt: skip
    for mode in before:
        b, a = before[mode], after[mode]
        print(f"  {mode}: rms {b['rms']:.3f} -> {a['rms']:.3f}, luminance sd {b['sd']:.3f} -> "
              f"{a['sd']:.3f}, mean {b['mean']:+.3f} -> {a['mean']:+.3f}")  # fmt: skip
    net.save_pretrained(args.weights / "delighting")
    write_hub_layout(args.weights, AvatarPipeline)
    write_manifest(args.weights)
    print(f"saved {args.weights / 'delighting'}")


if __name__ == "__main__":
    main()
