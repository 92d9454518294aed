"""Time `AvatarPipeline` end to end per stage and UV resolution, plus writing the exports.

    python -m bench.bench_backbone [--repeats 3] [--full] [--json out.json]  # from the repo root

One-time costs (imports + `from_pretrained`, then the first call at 512: numba JIT / caches,
MediaPipe graph creation) are reported apart; every resolution is then run `--repeats` times on
the photo and the table gives per-stage medians (the keys of `out.timings`), the median wall time
of the call ("total"), the median `save_outputs` time ("export", not in "total") and the peak
resident memory increase over the RSS just before that resolution's runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import tempfile
import time

import psutil

TARGET_RESOLUTION, TARGET_SECONDS = 1024, 3.0


def machine_info() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (and so `ru_maxrss`); Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def timed_export(out) -> float:
    from pipelines.outputs import save_outputs

    with tempfile.TemporaryDirectory() as tmp:
        return timed(lambda: save_outputs(out, tmp))[1]


def bench_resolution(pipe, image: str, resolution: int, repeats: int) -> dict:
    gc.collect()
    reset_peak_rss()
    rss_before = psutil.Process().memory_info().rss
    stages: dict[str, list[float]] = {}
    totals, exports = [], []
    for _ in range(repeats):
        out, total = timed(lambda: pipe(image, resolution=resolution))
        totals.append(total)
        exports.append(timed_export(out))
        for name, seconds in out.timings.items():
            stages.setdefault(name, []).append(seconds)
        del out
    return {
        "resolution": resolution,
        "repeats": repeats,
        "stages_median_s": {k: statistics.median(v) for k, v in stages.items()},
        "total_median_s": statistics.median(totals),
        "export_median_s": statistics.median(exports),
        "peak_rss_increase_mb": max(0, peak_rss_bytes() - rss_before) / 2**20,
        "totals_s": totals,
        "exports_s": exports,
    }


def print_table(results: list[dict]) -> None:
    stages = list(results[0]["stages_median_s"])
    cols = ["res", *stages, "total", "export", "peak dRSS MB"]
    widths = [max(len(c), 6) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in results:
        cells = [str(r["resolution"])]
        cells += [f"{r['stages_median_s'].get(s, float('nan')):.3f}" for s in stages]
        cells += [f"{r['total_median_s']:.3f}", f"{r['export_median_s']:.3f}"]
        cells += [f"{r['peak_rss_increase_mb']:.0f}"]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also run 4096")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--image", default="examples/astronaut.jpg")
    parser.add_argument("--weights", default="weights_config")
    args = parser.parse_args()

    rss_start = psutil.Process().memory_info().rss
    _, import_s = timed(lambda: __import__("pipelines.avatar_pipeline"))
    from diffusers.utils import logging as diffusers_logging

    from pipelines.avatar_pipeline import AvatarPipeline

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."
    machine = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))

    pipe, load_s = timed(lambda: AvatarPipeline.from_pretrained(args.weights))
    pipe.set_progress_bar_config(disable=True)
    first, first_s = timed(lambda: pipe(args.image, resolution=512))
    first_export_s = timed_export(first)
    del first
    one_time = {
        "import_s": import_s,
        "from_pretrained_s": load_s,
        "first_call_512_s": first_s,
        "first_export_512_s": first_export_s,
        "rss_after_warmup_mb": (psutil.Process().memory_info().rss - rss_start) / 2**20,
    }
    print(
        f"one-time: imports {import_s:.2f} s, from_pretrained {load_s:.2f} s, "
        f"first call @512 {first_s:.2f} s (+ first export {first_export_s:.2f} s), "
        f"RSS +{one_time['rss_after_warmup_mb']:.0f} MB"
    )
    print(f"steady state: median of {args.repeats} runs on {args.image}, seconds")

    resolutions = [512, 1024, 2048] + ([4096] if args.full else [])
    results = [bench_resolution(pipe, args.image, r, args.repeats) for r in resolutions]
    print_table(results)

    at_target = next(r for r in results if r["resolution"] == TARGET_RESOLUTION)
    passed = at_target["total_median_s"] <= TARGET_SECONDS
    print(
        f"target: <= {TARGET_SECONDS:g} s at {TARGET_RESOLUTION} (excluding one-time load): "
        f"{at_target['total_median_s']:.2f} s (export not included) -> "
        f"{'PASS' if passed else 'FAIL'}"
    )

    if args.json:
        report = {
            "machine": machine,
            "one_time": one_time,
            "results": results,
            "target": {
                "resolution": TARGET_RESOLUTION,
                "seconds": TARGET_SECONDS,
                "measured_s": at_target["total_median_s"],
                "pass": passed,
            },
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
