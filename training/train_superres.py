"""Train and evaluate the x4 super-resolution network
(`modeling.networks.superres.SuperResolutionNet`).

    python -m training.train_superres [--steps N] [--resume]   # train, save, register, evaluate
    python -m training.train_superres --evaluate                # only evaluate the saved weights
    python -m training.train_superres --figure     # crops: bicubic vs SR vs truth, astronaut 4K

Data (`training.render_pairs.make_training_pair`, cached as uint8 under
`training/runs/superres/`): high-resolution targets are UV maps of the "train" split at 1024 px
(16 faces, the reflectance networks' cache) and 2048 px (8 further faces), patches drawn from
either with equal odds. The texel size matters: the generator draws pores, wrinkles, freckles
and hairs at physical scale, so a pore that is a sub-texel speck of a 256 px map is a dot of a
few texels at 1024 px. The pipeline super-resolves 512 -> 2048 and 1024 -> 4096 px; adding 4
faces at 4096 px (odds 1:2:2 for 1024:2048:4096) made the network worse than bicubic at every
scale on the test faces, 4096 px included (its maps are smooth at that texel size and bicubic
is hard to beat there), so the shipped run keeps the two coarser scales. Per patch the
target is, with odds 2:1:1, the *texture* (the render with the light baked in, completed as
the backbone completes it), the backbone's first-order de-lit albedo, or the true diffuse
albedo. The texture is what the pipeline super-resolves, and with its first-order albedo the
only maps it super-resolves: its pores and wrinkles show as much through their shading as
through their colour, which a diffuse albedo alone would not teach; the true albedo adds clean
pigment detail (freckles, moles, hairs).

Low-resolution inputs are made on the fly from each high-resolution patch (`degrade`):
area-downsampling x4, then a random mild Gaussian blur, noise and JPEG compression, quantised
to 8 bits, so the network does not expect the pristine downsampling a real unwrapped photo
never gives (it is resampled from a photo, blurred and compressed).

Loss (on the UV chart): L1 + 0.1 x L1 of the Laplacians (the high frequencies, which L1 alone
under-weights; a larger weight sharpens more at a cost in PSNR: 0.5 gave +0.03 dB over bicubic
on the validation textures after 2000 steps, 0.1 gives +0.14 dB after 800). Adam, one-cycle
learning rate, gradient clipping. Deterministic: the batch of step `s` depends only on
(`--seed`, `s`), so `--resume` from `training/runs/superres/checkpoint.pt` continues exactly.
Writes `weights_config/superres/` (`save_pretrained`), registers it in `model_index.json`, saves
the loss curve to `weights_config/training_curves/superres.png` and the evaluation on the "test"
split (SR vs bicubic, PSNR and SSIM on the chart) to `training/runs/superres/evaluation.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling.networks.superres import SuperResolutionNet
from pipelines.avatar_pipeline import AvatarPipeline
from pipelines.weights import write_hub_layout, write_manifest
from rendering.color import masked_psnr
from training.reflectance_cache import load_pairs, to_float
from training.train_reflectance import _plot, optimizer_and_resume

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights_config"
RUN_DIR = Path(__file__).resolve().parent / "runs" / "superres"
COMPONENT, MODULE = "superres", ("modeling.networks.superres", "SuperResolutionNet")
SCALE = 4
KINDS = ("texture", "delit_albedo", "diffuse_albedo")
KIND_ODDS = (0.5, 0.25, 0.25)
TRAIN_SETS = ((16, 0, 1024), (8, 16, 2048))  # faces, first seed of the split, px
# The shipped run: 6000 steps, about 20 min on one thread of a shared 2-core CPU.
DEFAULT_STEPS = 6000
# test faces per resolution: 1024 px (x4 from 256), 4096 px (x4 from 1024, the pipeline's 4K)
TEST_SETS = ((6, 1024), (2, 4096))
VAL_FACES = 2
# The evaluation's fixed, mid-range degradation (training draws around it).
EVAL_DEGRADATION = {"blur": 0.5, "noise": 0.004, "jpeg": 90}
FIGURE = WEIGHTS / "training_curves" / "superres_crops.png"


def _pairs(split: str, offset: int, n: int, resolution: int) -> dict[str, np.ndarray]:
    """`KINDS` + `mask` of `n` pairs (uint8 `(n, R, R, C)`), cached under `RUN_DIR`."""
    return load_pairs(split, n, resolution, offset, keys=(*KINDS, "mask"), cache_dir=RUN_DIR)


def load_training_sets() -> list[dict[str, np.ndarray]]:
    """`TRAIN_SETS`; the 1024 px faces come from the reflectance networks' cache."""
    sets = []
    for n, offset, res in TRAIN_SETS:
        if offset == 0 and res == 1024:
            cached = load_pairs("train", n, res)
            sets.append({k: cached[k] for k in (*KINDS, "mask")})
            del cached
        else:
            sets.append(_pairs("train", offset, n, res))
    return sets


def degrade(
    hr: np.ndarray,
    blur: float = 0.0,
    noise: float = 0.0,
    jpeg: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """High-resolution `(4h, 4w, 3)` float sRGB -> the low-resolution `(h, w, 3)` input:
    area-downsampling x4, Gaussian blur (`blur`, low-res pixels), Gaussian noise (`noise`, sd),
    JPEG at quality `jpeg` (4:2:0, as cameras store it), quantised to 8 bits."""
    h, w = hr.shape[0] // SCALE, hr.shape[1] // SCALE
    lr = cv2.resize(hr, (w, h), interpolation=cv2.INTER_AREA)
    if blur > 0:
        lr = cv2.GaussianBlur(lr, (0, 0), blur, borderType=cv2.BORDER_REFLECT)
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        lr = lr + rng.normal(0, noise, lr.shape).astype(np.float32)
    lr8 = np.clip(np.rint(lr * 255), 0, 255).astype(np.uint8)
    if jpeg is not None:
        ok, buf = cv2.imencode(".jpg", lr8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
        lr8 = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return lr8.astype(np.float32) / 255


def random_degradation(rng: np.random.Generator) -> dict:
    """Mild: blur sd 0-1 low-res px (70 %), noise sd 0-0.01, JPEG quality 60-95 (60 %)."""
    return {
        "blur": float(rng.uniform(0.0, 1.0)) if rng.random() < 0.7 else 0.0,
        "noise": float(rng.uniform(0.0, 0.01)),
        "jpeg": int(rng.integers(60, 96)) if rng.random() < 0.6 else None,
    }


def sample_batch(sets, rng: np.random.Generator, batch: int, patch: int):
    """`batch` (low-res `(B, 3, patch, patch)`, high-res `(B, 3, 4 patch, 4 patch)`, chart
    mask `(B, 1, 4 patch, 4 patch)`) patches with at least 30 % chart."""
    hp = patch * SCALE
    lrs, hrs, masks = [], [], []
    for _ in range(batch):
        data = sets[rng.integers(len(sets))]
        kind = KINDS[rng.choice(len(KINDS), p=KIND_ODDS)]
        n, r = data["mask"].shape[:2]
        for _ in range(30):
            i = int(rng.integers(n))
            y, x = (int(v) * SCALE for v in rng.integers(0, (r - hp) // SCALE + 1, size=2))
            if data["mask"][i, y : y + hp, x : x + hp].mean() > 0.3 * 255:
                break
        hr = to_float(data[kind][i, y : y + hp, x : x + hp])
        if rng.random() < 0.5:  # the layout is symmetric; detail has no handedness
            hr = hr[:, ::-1]
        lrs.append(degrade(hr, rng=rng, **random_degradation(rng)))
        hrs.append(hr)
        masks.append(to_float(data["mask"][i, y : y + hp, x : x + hp]))

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(np.stack(a))).permute(0, 3, 1, 2)

    return nchw(lrs), nchw(hrs), nchw(masks)


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    k = _LAPLACE.to(x).view(1, 1, 3, 3).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])


def loss_fn(pred: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor, hf_weight: float):
    denom = (mask.sum() * 3).clamp_min(1)
    l1 = ((pred - hr).abs() * mask).sum() / denom
    hf = ((laplacian(pred) - laplacian(hr)).abs() * mask).sum() / denom
    return l1 + hf_weight * hf


def _ssim(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, full=True)  # fmt: skip
    return float(full.mean(-1)[m].mean())


@torch.no_grad()
def super_resolve(model: SuperResolutionNet, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(h, w, 3)` -> SR and bicubic `(4h, 4w, 3)`, clamped to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None]
    sr, bicubic = model(x), model.upsample(x)
    return tuple(t[0].clamp(0, 1).permute(1, 2, 0).numpy() for t in (sr, bicubic))


def evaluate(model: SuperResolutionNet, data: dict, degradations=None) -> dict:
    """PSNR / SSIM on the chart of SR and bicubic per map kind and degradation (mean over
    faces). `degradations`: name -> `degrade` keywords (default: clean and `EVAL_DEGRADATION`)."""
    degradations = degradations or {"clean": {}, "degraded": EVAL_DEGRADATION}
    model.eval()
    results = {}
    for deg_name, deg in degradations.items():
        for kind in ("texture", "diffuse_albedo"):
            scores = {"sr_psnr": [], "bicubic_psnr": [], "sr_ssim": [], "bicubic_ssim": []}
            for i in range(len(data["mask"])):
                hr = to_float(data[kind][i])
                chart = data["mask"][i, ..., 0] > 127
                lr = degrade(hr, rng=np.random.default_rng(i), **deg)
                sr, bicubic = super_resolve(model, lr)
                for name, pred in (("sr", sr), ("bicubic", bicubic)):
                    scores[f"{name}_psnr"].append(masked_psnr(pred, hr, chart))
                    scores[f"{name}_ssim"].append(_ssim(pred, hr, chart))
            results[f"{kind}/{deg_name}"] = {k: float(np.mean(v)) for k, v in scores.items()}
    return results


def metrics_table(results: dict) -> str:
    """`{resolution: evaluate(...)}` -> a markdown table."""
    lines = ["| x4 to | Map | Input | PSNR SR (dB) | PSNR bicubic (dB) | SSIM SR | SSIM bicubic |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for res, by_key in results.items():
        faces = dict((r, n) for n, r in TEST_SETS)[int(res)]
        for key, r in by_key.items():
            kind, deg = key.split("/")
            lines.append(f"| {res} px (from {int(res) // SCALE}, {faces} faces) | {kind} | {deg} "
                         f"| {r['sr_psnr']:.2f} | {r['bicubic_psnr']:.2f} "
                         f"| {r['sr_ssim']:.3f} | {r['bicubic_ssim']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def _register() -> None:
    index_path = WEIGHTS / "model_index.json"
    index = json.loads(index_path.read_text())
    index[COMPONENT] = list(MODULE)
    index.setdefault("super_resolution", "auto")  # the pipeline's default, written out
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def run_evaluation(model: SuperResolutionNet) -> dict:
    results = {str(res): evaluate(model, _pairs("test", 0, n, res)) for n, res in TEST_SETS}
    (RUN_DIR / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    print(metrics_table(results))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=32, help="low-resolution patch size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=0.5, help="gradient-norm clipping")
    parser.add_argument("--hf-weight", type=float, default=0.1)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on shared cores")
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evaluate", action="store_true", help="only evaluate the saved net")
    parser.add_argument("--figure", action="store_true",
                        help="only draw the crops figure of the saved net")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if args.evaluate or args.figure:
        model = SuperResolutionNet.from_pretrained(WEIGHTS / COMPONENT).eval()
        if args.evaluate:
            run_evaluation(model)
        if args.figure:
            figure(model, FIGURE, ROOT / "examples" / "astronaut.jpg")
        return
    torch.manual_seed(args.seed)
    ckpt_path = RUN_DIR / "checkpoint.pt"
    sets = load_training_sets()
    val = _pairs("val", 0, VAL_FACES, 1024)
    model = SuperResolutionNet(channels=args.channels, num_blocks=args.blocks, scale=SCALE)
    opt, sched, history, start = optimizer_and_resume(
        model, args.lr, args.steps, ckpt_path, args.resume
    )
    params = sum(p.numel() for p in model.parameters())
    print(f"{COMPONENT}: SuperResolutionNet {params} parameters, steps {start}..{args.steps}")
    val_deg = {"degraded": EVAL_DEGRADATION}

    def validate() -> tuple[float, float]:
        """PSNR (dB) of SR and of bicubic on the (degraded) val textures."""
        r = evaluate(model, val, val_deg)["texture/degraded"]
        model.train()
        return r["sr_psnr"], r["bicubic_psnr"]

    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=COMPONENT)
    for step in bar:
        rng = np.random.default_rng([args.seed, step])
        lr_patch, hr_patch, mask = sample_batch(sets, rng, args.batch, args.patch)
        loss = loss_fn(model(lr_patch), hr_patch, mask, args.hf_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        sched.step()
        history["loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % args.val_every == 0 or done == args.steps:
            sr, bicubic = validate()
            history["val"].append((done, sr))
            bar.write(f"step {done}: val PSNR {sr:.2f} dB (bicubic {bicubic:.2f} dB)")
        if done % 100 == 0 or done == args.steps:
            history["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "history": history, "step": done},
                       ckpt_path)  # fmt: skip
    model.eval()
    model.save_pretrained(WEIGHTS / COMPONENT)
    _register()
    write_hub_layout(WEIGHTS, AvatarPipeline)  # the repo layout diffusers loads
    write_manifest(WEIGHTS)  # from_pretrained verifies the files against it
    _plot(history, WEIGHTS / "training_curves" / f"{COMPONENT}.png", COMPONENT)
    (RUN_DIR / "history.json").write_text(json.dumps(history))
    print(f"{COMPONENT}: trained {args.steps} steps in {history['seconds'] / 60:.1f} min; "
          f"saved {WEIGHTS / COMPONENT}")  # fmt: skip
    run_evaluation(model)


def _crop_tile(images: list[np.ndarray], y: int, x: int, size: int, zoom: int) -> np.ndarray:
    tiles = [cv2.resize(im[y : y + size, x : x + size], None, fx=zoom, fy=zoom,
                        interpolation=cv2.INTER_NEAREST) for im in images]  # fmt: skip
    sep = np.ones((tiles[0].shape[0], 4, 3), np.float32)
    return np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], 1)


def figure(model: SuperResolutionNet, path: Path, photo: Path | None = None) -> None:
    """Side by side, 96 px crops of a 4096 px test face (x2 zoom) -- bicubic | SR | ground
    truth -- for the texture and the diffuse albedo (`EVAL_DEGRADATION` input), and, with
    `photo`, 384 px crops of its 4096 px first-order albedo: unwrapped at 4096 | unwrapped at
    1024 + bicubic | unwrapped at 1024 + SR."""
    test = _pairs("test", 0, *TEST_SETS[1])
    rows = []
    for kind in ("texture", "diffuse_albedo"):
        hr = to_float(test[kind][0])
        sr, bicubic = super_resolve(model, degrade(hr, **EVAL_DEGRADATION))
        for y, x in ((2240, 1200), (1200, 1720)):
            rows.append(_crop_tile([bicubic, sr, hr], y, x, 96, 2))
    if photo is not None:
        from pipelines import AvatarPipeline

        pipe = AvatarPipeline(superres=model)  # the first-order albedo (no other networks)
        maps = {}
        for res, mode in ((4096, "off"), (4096, "on"), (1024, "off")):
            out = pipe(str(photo), resolution=res, num_fit_steps=0, super_resolution=mode)
            maps[res, mode] = out.maps["diffuse_albedo"]
            print(f"{photo.name} {res} px, super_resolution={mode}: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in out.timings.items()))  # fmt: skip
        bicubic = super_resolve(model, maps[1024, "off"])[1]
        for y, x in ((2150, 1250), (1500, 1850)):
            tile = _crop_tile([maps[4096, "off"], bicubic, maps[4096, "on"]], y, x, 384, 1)
            scale = rows[0].shape[1] / tile.shape[1]
            rows.append(cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    sep = np.ones((4, rows[0].shape[1], 3), np.float32)
    image = np.concatenate([r for row in rows for r in (row, sep)][:-1], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.clip(image, 0, 1)[..., ::-1] * 255).round().astype(np.uint8))


if __name__ == "__main__":
    main()
