"""Evaluate the shipped reflectance networks on the held-out synthetic test split.

    python -m training.evaluate_reflectance [--faces 30] [--resolution 256] [--readme]

For each test face (`training.render_pairs.make_training_pair`, seeds of the "test" split) the
networks run as the pipeline chains them (de-lighting -> specular and normals from the
predicted albedo) and are compared, on the UV chart, with the trivial baselines: the backbone's
first-order de-lit albedo, a constant specular albedo (the training set's mean), flat normals
(the shape's own, (0, 0, 1) in tangent space). Re-render PSNR: the predicted (resp. baseline)
maps and the true maps rendered with `render_uv` under an environment drawn from seeds no
training pair used, at the true maps' exposure, sRGB, clipped.

`--readme` writes the table into `weights_config/README.md` between the METRICS markers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from modeling.networks.blocks import uv_coordinates
from modeling.networks.delighting import DelightingNet
from modeling.networks.normals import DetailNormalsNet
from modeling.networks.specular import SpecularAlbedoNet
from rendering.color import linear_to_srgb, luminance, masked_psnr, srgb_to_linear
from rendering.mesh import decode_normals
from training.render_pairs import make_training_pair, random_lighting, render_uv, seeds, uv_geometry

WEIGHTS = Path(__file__).resolve().parent.parent / "weights_config"
UNSEEN_LIGHT_OFFSET = 50_000_000  # light seeds far from every split's
BEGIN, END = "<!-- METRICS:BEGIN -->", "<!-- METRICS:END -->"


def load_networks(folder: Path = WEIGHTS) -> dict:
    return {
        "delighting": DelightingNet.from_pretrained(folder / "delighting").eval(),
        "specular": SpecularAlbedoNet.from_pretrained(folder / "specular").eval(),
        "normals": DetailNormalsNet.from_pretrained(folder / "normals").eval(),
    }


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, np.float32)).permute(2, 0, 1)[None]


def _np(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


@torch.no_grad()
def run_delighting(net: DelightingNet, pair: dict, white_balance: str = "camera") -> torch.Tensor:
    """The de-lighting network's diffuse albedo `(1, 3, R, R)` (sRGB, clamped to [0, 1]) for one
    pair (full map, no tiling); `white_balance`: its mode ("camera", the pipeline's default, or
    "skin_prior")."""
    tex, delit, vis = _t(pair["texture"]), _t(pair["delit_albedo"]), _t(pair["visibility"])
    stats = DelightingNet.global_stats(tex, delit, vis)
    shape, ao = _t(pair["shape_normals"]), _t(pair["ao"])
    return net(tex, delit, shape, ao, vis, stats, white_balance).clamp(0, 1)


@torch.no_grad()
def run_networks(nets: dict, pair: dict, white_balance: str = "camera") -> dict:
    """The chained predictions `(R, R, C)` for one pair (full map, no tiling); `white_balance`:
    the de-lighting network's mode ("camera", the pipeline's default, or "skin_prior")."""
    tex, shape = _t(pair["texture"]), _t(pair["shape_normals"])
    delit, vis = _t(pair["delit_albedo"]), _t(pair["visibility"])
    albedo = run_delighting(nets["delighting"], pair, white_balance)
    uv = uv_coordinates(*tex.shape[-2:])
    context = nets["specular"].context_maps(tex, delit, shape, vis)
    spec = nets["specular"](albedo, shape, tex, uv, context).clamp(0, 1)
    normals = nets["normals"](albedo, shape, tex, uv)
    return {
        "diffuse_albedo": _np(albedo),
        "specular_albedo": nets["specular"].with_prior_level(_np(spec), pair["mask"][..., 0] > 0.5),
        "specular_normals": _np(normals[:, :3]),
        "diffuse_normals": _np(normals[:, 3:]),
    }


def baseline_maps(pair: dict, mean_specular: float) -> dict:
    flat = np.zeros_like(pair["specular_normals"])
    flat[...] = (0.5, 0.5, 1.0)
    return {
        "diffuse_albedo": pair["delit_albedo"],
        "specular_albedo": np.full_like(pair["specular_albedo"], mean_specular),
        "specular_normals": flat,
        "diffuse_normals": flat,
    }


def psnr(a, b, mask) -> float:
    """`masked_psnr` of a prediction `a` clipped to [0, 1] against the truth `b`."""
    return masked_psnr(np.clip(a, 0, 1), b, mask)


def best_channel_gain(lin_a: np.ndarray, lin_b: np.ndarray) -> np.ndarray:
    """`(3,)`: the per-channel gain that best maps linear RGB texels `lin_a` `(N, 3)` onto
    `lin_b` `(N, 3)` (least squares)."""
    return (lin_a * lin_b).sum(0) / np.maximum((lin_a**2).sum(0), 1e-12)


def psnr_up_to_gain(a, b, mask) -> float:
    """`psnr` after the per-channel gain (in linear RGB) that best maps `a` onto `b` on the
    mask: the error left when the photo's exposure and white balance, which one photo cannot
    separate from the albedo's level and colour, are given."""
    lin_a, lin_b = srgb_to_linear(np.clip(a, 0, 1))[mask], srgb_to_linear(b)[mask]
    gain = best_channel_gain(lin_a, lin_b)
    return psnr(linear_to_srgb(srgb_to_linear(np.clip(a, 0, 1)) * gain), b, mask)


def ssim(a, b, mask) -> float:
    _, smap = structural_similarity(np.clip(a, 0, 1), b, data_range=1.0, channel_axis=-1, full=True)
    return float(smap[mask].mean())


def angular_error(a, b, mask) -> float:
    na, nb = decode_normals(a)[mask], decode_normals(b)[mask]
    na /= np.linalg.norm(na, axis=1, keepdims=True)
    nb /= np.linalg.norm(nb, axis=1, keepdims=True)
    return float(np.degrees(np.arccos(np.clip((na * nb).sum(1), -1, 1))).mean())


def rerender(maps: dict, geometry, light: dict) -> np.ndarray:
    with torch.no_grad():
        return render_uv(
            geometry,
            torch.from_numpy(srgb_to_linear(np.clip(maps["diffuse_albedo"], 0, 1))),
            torch.from_numpy(np.ascontiguousarray(maps["specular_albedo"], np.float32)),
            torch.from_numpy(decode_normals(maps["diffuse_normals"]).astype(np.float32)),
            torch.from_numpy(decode_normals(maps["specular_normals"]).astype(np.float32)),
            torch.as_tensor(light["sh"], dtype=torch.float32),
            light["lights"],
        ).numpy()


def evaluate(nets: dict, num_faces: int = 30, resolution: int = 256) -> dict:
    """Per-metric means over the test faces: `{metric: {"network": x, "network_skin_prior": y,
    "baseline": z}}` ("network": the pipeline's default, the photo's white balance kept;
    "network_skin_prior": the de-lighting network's own white balance)."""
    mean_spec = float(nets["specular"].config.mean_specular)
    geometry = uv_geometry(resolution)
    rows = []
    for i, seed in enumerate(seeds("test", num_faces)):
        pair = make_training_pair(seed, resolution)
        mask = pair["mask"][..., 0] > 0.5
        light = random_lighting(UNSEEN_LIGHT_OFFSET + i)
        truth_render = rerender(pair, geometry, light)
        lum = luminance(truth_render[geometry.skin])
        exposure = 0.9 / max(float(np.percentile(lum, 98)), 1e-6)

        def shown(radiance, exposure=exposure):
            return linear_to_srgb(np.clip(radiance * exposure, 0, 1))

        row = {}
        for name, maps in (("network", run_networks(nets, pair)),
                           ("network_skin_prior", run_networks(nets, pair, "skin_prior")),
                           ("baseline", baseline_maps(pair, mean_spec))):  # fmt: skip
            r = {
                "albedo_psnr": psnr(maps["diffuse_albedo"], pair["diffuse_albedo"], mask),
                "albedo_psnr_gain": psnr_up_to_gain(
                    maps["diffuse_albedo"], pair["diffuse_albedo"], mask
                ),
                "albedo_ssim": ssim(maps["diffuse_albedo"], pair["diffuse_albedo"], mask),
                "specular_psnr": psnr(maps["specular_albedo"], pair["specular_albedo"], mask),
                "specular_ssim": ssim(maps["specular_albedo"], pair["specular_albedo"], mask),
                "diffuse_normals_deg": angular_error(
                    maps["diffuse_normals"], pair["diffuse_normals"], mask
                ),
                "specular_normals_deg": angular_error(
                    maps["specular_normals"], pair["specular_normals"], mask
                ),
                "rerender_psnr": psnr(
                    shown(rerender(maps, geometry, light)), shown(truth_render), mask
                ),
            }
            for k, v in r.items():
                row.setdefault(k, {})[name] = v
        # The part of the error no method can remove: the true albedo seen through the random
        # factor of the camera's exposure (the light's and the albedo's scales are one unknown).
        jittered = linear_to_srgb(
            srgb_to_linear(pair["diffuse_albedo"]) * pair["lighting"]["exposure_jitter"]
        )
        row["albedo_psnr_exposure_oracle"] = psnr(jittered, pair["diffuse_albedo"], mask)
        rows.append(row)
    out = {k: {n: float(np.mean([r[k][n] for r in rows])) for n in rows[0][k]}
           for k in rows[0] if isinstance(rows[0][k], dict)}  # fmt: skip
    out["albedo_psnr_exposure_oracle"] = float(
        np.mean([r["albedo_psnr_exposure_oracle"] for r in rows])
    )
    return out


LABELS = {
    "albedo_psnr": ("Diffuse albedo PSNR (dB) ↑", "first-order de-lit albedo", ">= 30"),
    "albedo_psnr_gain": (
        "Diffuse albedo PSNR up to exposure and white balance (dB) ↑",
        "first-order de-lit albedo",
        "",
    ),  # fmt: skip
    "albedo_psnr_exposure_oracle": (
        "Diffuse albedo PSNR of the truth under the unknown exposure factor (dB)",
        "bound for any method",
        "",
    ),  # fmt: skip
    "albedo_ssim": ("Diffuse albedo SSIM ↑", "first-order de-lit albedo", ""),
    "specular_psnr": ("Specular albedo PSNR (dB) ↑", "constant (train mean)", ">= 28"),
    "specular_ssim": ("Specular albedo SSIM ↑", "constant (train mean)", ""),
    "diffuse_normals_deg": (
        "Diffuse normals mean angular error (°) ↓",
        "flat (shape only)",
        "<= 5",
    ),  # fmt: skip
    "specular_normals_deg": (
        "Specular normals mean angular error (°) ↓",
        "flat (shape only)",
        "<= 5",
    ),  # fmt: skip
    "rerender_psnr": ("Re-render PSNR, unseen lights (dB) ↑", "all four baselines", ""),
}


def table(results: dict) -> str:
    lines = [
        "| Metric | Networks | Networks, skin-prior white balance | Baseline | Baseline is "
        "| Target |",
        "|---|---|---|---|---|---|",
    ]
    for k, (label, what, goal) in LABELS.items():
        r = results[k]
        if not isinstance(r, dict):
            lines.append(f"| {label} | {r:.2f} | | | {what} | {goal} |")
            continue
        fmt = "{:.3f}" if "ssim" in k else "{:.2f}"
        prior = r.get("network_skin_prior")
        prior = "" if prior is None else fmt.format(prior)
        lines.append(f"| {label} | {fmt.format(r['network'])} | {prior} "
                     f"| {fmt.format(r['baseline'])} | {what} | {goal} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = evaluate(load_networks(), args.faces, args.resolution)
    text = table(results)
    print(text)
    print(f"({args.faces} test faces at {args.resolution} px, {time.perf_counter() - t0:.0f} s)")
    out = Path(__file__).resolve().parent / "runs" / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if args.readme:
        readme = WEIGHTS / "README.md"
        body = readme.read_text()
        head, rest = body.split(BEGIN)
        _, tail = rest.split(END)
        readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
