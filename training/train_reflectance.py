"""Train one reflectance network on patches of the synthetic training pairs.

    python -m training.train_reflectance --component delighting
    python -m training.train_reflectance --component specular
    python -m training.train_reflectance --component normals [--steps N] [--resume]

Data: `training.reflectance_cache` pairs of the "train" split (300 faces at 256 px, 60 at
512 px, 16 at 1024 px, so the networks see the detail at several texel sizes), random
`--patch` px patches inside the UV chart; validation on 16 "val" faces at 256 px (full maps).
The specular and normals networks are trained independently of the de-lighting network, on
an albedo as imperfect as the one the pipeline gives them: per patch either the first-order
de-lit albedo (the worst case: shading left in) or the true albedo under a random colour gain,
offset and noise (`albedo_input`).

Losses (masked to the chart): per-map L1; for de-lighting also a rendering-aware loss
(AvatarMe++): predicted and true albedo shaded with the same shape normals under a random
ambient + directional light, compared in linear RGB; for normals also 1 - cos of the angle.

Deterministic: the batch of step `s` depends only on (`--seed`, `s`), so `--resume` from the
checkpoint in `training/runs/<component>/` continues exactly. Writes
`weights_config/<component>/` (`save_pretrained`), registers it in `model_index.json`, and saves
the loss curve to `weights_config/training_curves/<component>.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling.blocks import srgb_to_linear_t, uv_coordinates
from modeling.delighting import DelightingNet
from modeling.normals import DetailNormalsNet
from modeling.specular import SpecularAlbedoNet
from training.reflectance_cache import load_pairs, to_float
from training.render_pairs import uv_geometry

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights_config"
RUNS = Path(__file__).resolve().parent / "runs"

COMPONENTS = {
    "delighting": ("modeling.delighting", "DelightingNet"),
    "specular": ("modeling.specular", "SpecularAlbedoNet"),
    "normals": ("modeling.normals", "DetailNormalsNet"),
}
# The step counts the shipped weights were trained with (5-10 minutes each on 2 shared cores).
DEFAULT_STEPS = {"delighting": 3000, "specular": 3000, "normals": 3000}
TRAIN_SETS = ((256, 300, 0.5), (512, 60, 0.3), (1024, 16, 0.2))  # resolution, faces, odds
VAL_FACES = 16


def build_model(component: str, mean_specular: float = 0.3) -> torch.nn.Module:
    if component == "delighting":
        return DelightingNet(channels=(8, 16, 32, 64))
    if component == "specular":
        return SpecularAlbedoNet(channels=(8, 16, 32), mean_specular=mean_specular)
    if component == "normals":
        return DetailNormalsNet(channels=(8, 16, 32))
    raise ValueError(f"unknown component {component!r}; choose from {tuple(COMPONENTS)}")


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(to_float(x)).permute(0, 3, 1, 2).contiguous()


def load_data(component: str) -> tuple[list[dict], dict]:
    sets = [load_pairs("train", n, res) for res, n, _ in TRAIN_SETS]
    val = load_pairs("val", VAL_FACES, 256)
    if component == "delighting":
        for data in (*sets, val):
            data["stats"] = global_stats(data)
    return sets, val


def global_stats(data: dict) -> np.ndarray:
    """`DelightingNet.global_stats` of every cached face `(N, 12)` (a frontal photo's
    visibility of the mean face, as the pairs were rendered with)."""
    r = data["texture"].shape[1]
    vis = torch.from_numpy(np.array(uv_geometry(r).visibility, np.float32))[None, None]
    out = []
    for i in range(len(data["texture"])):
        tex, delit = _nchw(data["texture"][i : i + 1]), _nchw(data["delit_albedo"][i : i + 1])
        out.append(DelightingNet.global_stats(tex, delit, vis)[0].numpy())
    return np.stack(out)


def albedo_input(x: dict, rng: np.random.Generator) -> torch.Tensor:
    """Per sample: the first-order de-lit albedo (half the time) or the true albedo with a
    random per-channel gain (0.8-1.25), offset (sd 0.02) and noise (sd 0.01)."""
    b = x["diffuse_albedo"].shape[0]
    gain = torch.from_numpy(np.exp(rng.uniform(-0.22, 0.22, (b, 3, 1, 1))).astype(np.float32))
    offset = torch.from_numpy(rng.normal(0, 0.02, (b, 3, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(0, 0.01, x["diffuse_albedo"].shape).astype(np.float32))
    augmented = (x["diffuse_albedo"] * gain + offset + noise).clamp(0, 1)
    first_order = torch.from_numpy(rng.random((b, 1, 1, 1)) < 0.5)
    return torch.where(first_order, x["delit_albedo"], augmented)


def sample_batch(sets, rng: np.random.Generator, batch: int, patch: int) -> dict:
    """`batch` random patches inside the chart (at least 30 % chart), maps as NCHW float."""
    odds = np.array([o for *_, o in TRAIN_SETS])
    keys = [k for k in sets[0] if k != "stats"]
    out = {k: [] for k in keys}
    stats, uvs = [], []
    for _ in range(batch):
        data = sets[rng.choice(len(sets), p=odds / odds.sum())]
        n, r = data["mask"].shape[:2]
        for _ in range(30):
            i = int(rng.integers(n))
            y, x = (int(v) for v in rng.integers(0, r - patch + 1, size=2))
            if data["mask"][i, y : y + patch, x : x + patch].mean() > 0.3 * 255:
                break
        for k in keys:
            out[k].append(data[k][i, y : y + patch, x : x + patch])
        if "stats" in data:
            stats.append(data["stats"][i])
        uvs.append(uv_coordinates(r, r)[0, :, y : y + patch, x : x + patch])
    batch = {k: _nchw(np.stack(v)) for k, v in out.items()}
    batch["uv"] = torch.stack(uvs)
    if stats:
        batch["stats"] = torch.from_numpy(np.stack(stats))
    return batch


def _masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((a - b).abs() * mask).sum() / (mask.sum() * a.shape[1]).clamp_min(1)


def _random_shading(normals01: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ambient + one coloured directional light on the decoded normals -> `(B, 3, H, W)`."""
    b = normals01.shape[0]
    n = F.normalize(normals01 * 2 - 1, dim=1)
    d = torch.randn(b, 3, generator=generator)
    d[:, 2] = d[:, 2].abs() + 0.3  # mostly from the camera's side
    d = F.normalize(d, dim=1)
    cos = (n * d[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
    ambient = 0.1 + 0.5 * torch.rand(b, 1, 1, 1, generator=generator)
    tint = 1 + 0.2 * (torch.rand(b, 3, 1, 1, generator=generator) - 0.5)
    return (ambient + (1.2 - ambient) * cos) * tint


def predict(model, component: str, x: dict) -> torch.Tensor:
    if component == "delighting":
        return model(x["texture"], x["delit_albedo"], x["shape_normals"], x["ao"], x["stats"])
    albedo = x.get("albedo_input", x["delit_albedo"])  # validation: the first-order albedo
    return model(albedo, x["shape_normals"], x["texture"], x["uv"])


def target(component: str, x: dict) -> torch.Tensor:
    if component == "delighting":
        return x["diffuse_albedo"]
    if component == "specular":
        return x["specular_albedo"]
    return torch.cat([x["specular_normals"], x["diffuse_normals"]], 1)


def loss_fn(component, pred, x, generator) -> torch.Tensor:
    gt, mask = target(component, x), x["mask"]
    loss = _masked_l1(pred, gt, mask)
    if component == "delighting":
        shading = _random_shading(x["shape_normals"], generator)
        rendered = srgb_to_linear_t(pred) * shading
        loss = loss + _masked_l1(rendered, srgb_to_linear_t(gt) * shading, mask)
    elif component == "normals":
        for s in (slice(0, 3), slice(3, 6)):
            cos = F.cosine_similarity(pred[:, s] * 2 - 1, gt[:, s] * 2 - 1, dim=1)[:, None]
            loss = loss + ((1 - cos) * mask).sum() / mask.sum().clamp_min(1)
    return loss


@torch.no_grad()
def validate(model, component: str, val: dict) -> float:
    """Mean over the val faces: PSNR (dB) of albedo / specular, or angular error (degrees) of
    the specular normals, on the chart."""
    scores = []
    for i in range(len(val["mask"])):
        x = {k: _nchw(v[i : i + 1]) for k, v in val.items() if k != "stats"}
        if "stats" in val:
            x["stats"] = torch.from_numpy(val["stats"][i : i + 1])
        x["uv"] = uv_coordinates(*x["texture"].shape[-2:])
        pred, gt, m = predict(model, component, x), target(component, x), x["mask"][0, 0] > 0.5
        if component == "normals":
            cos = F.cosine_similarity(pred[:, :3] * 2 - 1, gt[:, :3] * 2 - 1, dim=1)[0]
            scores.append(torch.rad2deg(torch.acos(cos[m].clamp(-1, 1))).mean().item())
        else:
            mse = ((pred.clamp(0, 1) - gt) ** 2)[0][:, m].mean().item()
            scores.append(10 * np.log10(1 / max(mse, 1e-12)))
    return float(np.mean(scores))


def _register(component: str) -> None:
    index_path = WEIGHTS / "model_index.json"
    index = json.loads(index_path.read_text())
    index[component] = list(COMPONENTS[component])
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def _plot(history: dict, path: Path, component: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    loss = np.array(history["loss"])
    k = min(50, max(1, len(loss) // 10))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    ax[0].plot(loss, alpha=0.3, lw=0.5)
    ax[0].plot(np.arange(len(smooth)) + k - 1, smooth)
    ax[0].set(title=f"{component}: training loss", xlabel="step", yscale="log")
    steps, vals = zip(*history["val"], strict=True) if history["val"] else ((), ())
    ax[1].plot(steps, vals, "o-")
    unit = "angular error (deg)" if component == "normals" else "PSNR (dB)"
    ax[1].set(title=f"validation {unit}", xlabel="step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--component", required=True, choices=tuple(COMPONENTS))
    parser.add_argument("--steps", type=int, default=None, help="default: DEFAULT_STEPS")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on shared cores")
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    comp = args.component
    steps = args.steps or DEFAULT_STEPS[comp]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run_dir = RUNS / comp
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"

    sets, val = load_data(comp)
    mean_spec = float(np.mean([to_float(d["specular_albedo"][d["mask"][..., 0] > 127]).mean()
                               for d in sets[:1]]))  # fmt: skip
    model = build_model(comp, mean_specular=round(mean_spec, 4))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=steps, pct_start=0.05, final_div_factor=30
    )
    history, start = {"loss": [], "val": [], "seconds": 0.0}, 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        history, start = ckpt["history"], ckpt["step"]
    params = sum(p.numel() for p in model.parameters())
    print(f"{comp}: {type(model).__name__} {params} parameters, steps {start}..{steps}")

    def checkpoint(step):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "history": history, "step": step},
                   ckpt_path)  # fmt: skip

    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=comp)
    for step in bar:
        rng = np.random.default_rng([args.seed, step])
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x = sample_batch(sets, rng, args.batch, args.patch)
        if comp != "delighting":
            x["albedo_input"] = albedo_input(x, rng)
        loss = loss_fn(comp, predict(model, comp, x), x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % args.val_every == 0 or done == steps:
            model.eval()
            history["val"].append((done, validate(model, comp, val)))
            model.train()
            bar.write(f"step {done}: val {history['val'][-1][1]:.3f}")
        if done % 100 == 0 or done == steps:
            history["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            checkpoint(done)
    model.eval()
    model.save_pretrained(WEIGHTS / comp)
    _register(comp)
    _plot(history, WEIGHTS / "training_curves" / f"{comp}.png", comp)
    (run_dir / "history.json").write_text(json.dumps(history))
    print(f"{comp}: trained {steps} steps in {history['seconds'] / 60:.1f} min; "
          f"val {history['val'][-1][1]:.3f}; saved {WEIGHTS / comp}")  # fmt: skip


if __name__ == "__main__":
    main()
