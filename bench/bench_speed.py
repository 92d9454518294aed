"""Speed per pipeline stage at several UV resolutions, warm and cold, as multiples of MediaPipe's
own tracking time on the same photo in the same process (issue 17).

    python -m bench.bench_speed [--resolutions 512 1024 2048] [--repeats 2] [--fit-steps N]
                                [--image examples/astronaut.jpg] [--no-cold] [--no-write]

Warm: one process loads the pipeline, calls it once at 512 px (numba JIT, MediaPipe graphs,
allocator), then `--repeats` times per resolution; the table gives the best of them per stage
(`out.timings`) and for the whole call. Cold: per resolution a fresh process loads the pipeline and
times its first call (imports and `from_pretrained` not included, they are in `bench_demo_load`).
Each process also times `FaceTracker.detect` on the photo (best of 5, after its own call), so
every figure comes with its ratio to that floor: on a shared, noisy machine the ratio moves less
than the seconds. Each call's peak resident memory over the RSS before it is the last row.
Prints a markdown section and writes it to `bench/RESULTS.md` as "Speed per stage" (that
section only, `bench.report.KEPT_SECTIONS`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# before anything loads torch, as a user's script that imports the pipeline: the package sets
# the OpenMP threads' wait policy (`pipelines/__init__.py`), read once when torch loads
import pipelines  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
EXAMPLE = ROOT / "examples" / "astronaut.jpg"
SPEED_MARKER = "<!-- speed:begin -->"
STAGES = ("input", "face_tracking", "camera_and_shape", "skin_segmentation", "fit",
          "skin_refinement",
          "ambient_occlusion", "unwrap_and_delight", "head", "normal_maps",
          "reflectance", "render")  # fmt: skip


def _load(weights: str):
    from diffusers.utils import logging as diffusers_logging

    from pipelines.avatar_pipeline import AvatarPipeline

    diffusers_logging.disable_progress_bar()
    pipe = AvatarPipeline.from_pretrained(weights)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tracking_seconds(pipe, image: str, repeats: int = 5) -> float:
    """Best of `repeats` `FaceTracker.detect` calls on the photo (its graphs already built)."""
    from modeling.inputs.photo import load_image

    photo = load_image(image)
    pipe.tracker.detect(photo)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        pipe.tracker.detect(photo)
        best = min(best, time.perf_counter() - start)
    return best


def timed_call(pipe, image: str, resolution: int, fit_steps: int | None) -> dict:
    """One call: its stages' seconds, the call's wall time ("total") and its peak resident
    memory over the RSS before it, MB ("memory")."""
    import psutil

    from bench.bench_backbone import peak_rss_bytes, reset_peak_rss

    gc.collect()
    reset_peak_rss()
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    out = pipe(image, resolution=resolution, num_fit_steps=fit_steps)
    total = time.perf_counter() - start
    memory = max(0, peak_rss_bytes() - before) / 2**20
    return {**out.timings, "total": total, "memory": memory}


def warm(args) -> dict:
    pipe = _load(args.weights)
    pipe(args.image, resolution=512, num_fit_steps=args.fit_steps)  # warm-up
    runs = {}
    for resolution in args.resolutions:
        calls = [timed_call(pipe, args.image, resolution, args.fit_steps)
                 for _ in range(args.repeats)]  # fmt: skip
        best = {k: min(c[k] for c in calls if k in c)
                for k in {k for c in calls for k in c} if k in (*STAGES, "total")}  # fmt: skip
        best["memory"] = max(c["memory"] for c in calls)
        runs[resolution] = {**best, "tracking": tracking_seconds(pipe, args.image)}
    return runs


def cold(args, resolution: int) -> dict:
    """The first call at `resolution` in a fresh process (this script with `--cold-child`)."""
    command = [sys.executable, "-m", "bench.bench_speed", "--cold-child", str(resolution),
               "--image", args.image, "--weights", args.weights]  # fmt: skip
    if args.fit_steps is not None:
        command += ["--fit-steps", str(args.fit_steps)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_child(args) -> None:
    pipe = _load(args.weights)
    result = timed_call(pipe, args.image, args.cold_child, args.fit_steps)
    result["tracking"] = tracking_seconds(pipe, args.image)
    print(json.dumps(result))


def _cell(seconds: float | None, tracking: float) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.2f} s ({seconds / tracking:.0f}×)"


def markdown(args, warm_runs: dict, cold_runs: dict, notes: str) -> str:
    columns = [(r, "warm", warm_runs[r]) for r in args.resolutions]
    columns += [(r, "cold", cold_runs[r]) for r in args.resolutions if r in cold_runs]
    stages = [s for s in STAGES if any(s in run for _, _, run in columns)]
    lines = [
        "## Speed per stage",
        "",
        f"`python -m bench.bench_speed {' '.join(args.argv)}`".replace(" `", "`"),
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {len(os.sched_getaffinity(0))} usable cores, "
        f"photo `{Path(args.image).name}`, fit steps "
        f"{'the default' if args.fit_steps is None else args.fit_steps}). Seconds per stage "
        "(`out.timings`) and, in brackets, the multiple of MediaPipe's own tracking time "
        "(`FaceTracker.detect` on the photo, best of 5, in the same process: the row "
        '"tracking"). Warm: best of '
        f"{args.repeats} calls after a warm-up call; cold: the first call in a fresh process "
        "(after `from_pretrained`). Peak memory: the largest rise of the resident set over "
        "its size before the call (warm: the largest of the calls).",
        "",
        "| stage | " + " | ".join(f"{r} px {kind}" for r, kind, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for stage in [*stages, "total"]:
        cells = [_cell(run.get(stage), run["tracking"]) for _, _, run in columns]
        name = f"**{stage}**" if stage == "total" else stage
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| tracking | " + " | ".join(f"{run['tracking'] * 1000:.0f} ms"
                                            for _, _, run in columns) + " |")  # fmt: skip
    lines.append("| peak memory | " + " | ".join(f"{run['memory']:.0f} MB"
                                               for _, _, run in columns) + " |")  # fmt: skip
    if notes:
        lines += ["", notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit-steps", type=int, default=None)
    parser.add_argument("--image", default=str(EXAMPLE))
    parser.add_argument("--weights", default=str(ROOT / "weights_config"))
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--notes", default="", help="a paragraph printed under the table")
    parser.add_argument("--cold-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    # the command as the section shows it: without the notes (they follow the table)
    args.argv = [a for i, a in enumerate(given)
                 if a != "--notes" and (i == 0 or given[i - 1] != "--notes")]  # fmt: skip
    if args.cold_child is not None:
        cold_child(args)
        return
    cold_runs = {} if args.no_cold else {r: cold(args, r) for r in args.resolutions}
    warm_runs = warm(args)
    text = markdown(args, warm_runs, cold_runs, args.notes)
    print(text)
    if not args.no_write:
        from bench.report import write_kept

        write_kept(text, RESULTS, SPEED_MARKER)


if __name__ == "__main__":
    main()
