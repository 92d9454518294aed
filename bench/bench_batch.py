"""Batch throughput: photos per minute of `pipelines.batch` with 1 and with 2 processes.

    python -m bench.bench_batch [--photos 8] [--resolution 512] [--fit-steps 20] [--no-write]

Makes `--photos` distinct photos of one face (the example, mirrored, re-lit and re-cropped: no
two the same bytes, so none is skipped as a duplicate) and runs the same batch on them into a
fresh output folder twice: `python -m pipelines.batch` (one process, every usable core) and
`accelerate launch --multi_gpu --num_processes 2 -m pipelines.batch` (two processes, the cores
shared out; on a machine without a GPU they run on the CPU). Each run is timed from the command's
start to its exit, so the processes' start-up (imports, loading the pipeline) counts, as it does
for a user; the per-avatar seconds come from `results.jsonl`. Prints a markdown section and
writes it to `bench/RESULTS.md` as "Batch throughput" (that section only).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from bench.report import KEPT_SECTIONS, write_kept_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
EXAMPLE = ROOT / "examples" / "astronaut.jpg"
MARKERS = KEPT_SECTIONS[1]  # report.write_results keeps what lies between


def make_photos(folder: Path, count: int) -> list[Path]:
    """`count` distinct photos of the example's face (mirrored or not, brightness 0.75..1.0:
    brighter blows the face out; crops a few pixels apart), about 500 px square."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(EXAMPLE).convert("RGB")
    paths = []
    for i in range(count):
        shift = 4 * (i // 2)
        photo = image.crop((shift, shift, image.width - 12 + shift, image.height - 12 + shift))
        photo = ImageEnhance.Brightness(photo).enhance(0.75 + 0.25 * i / max(count - 1, 1))
        if i % 2:
            photo = ImageOps.mirror(photo)
        paths.append(folder / f"photo{i:03d}.jpg")
        photo.save(paths[-1], quality=92)
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_batch(photos: Path, out: Path, processes: int, resolution: int, fit_steps: int) -> dict:
    """One batch run with `processes` processes; its wall time, summary line and records."""
    batch = [
        "--input",
        str(photos),
        "--output",
        str(out),
        "--resolution",
        str(resolution),
        "--fit-steps",
        str(fit_steps),
        "--quiet",
    ]
    if processes == 1:
        command = [sys.executable, "-m", "pipelines.batch", *batch]
    else:
        accelerate = Path(sys.executable).with_name("accelerate")
        command = [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "pipelines.batch",
            *batch,
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {
        "processes": processes,
        "seconds": seconds,
        "summary": result.stdout.strip().splitlines()[-1],
        "done": sum(r["status"] == "done" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "avatar_seconds": [r["seconds"] for r in records if r["status"] == "done"],
        "errors": sorted({r["error"] for r in records if r["status"] == "failed"}),
    }


def markdown(runs: list[dict], args: argparse.Namespace, load_before: tuple) -> str:
    load = os.getloadavg()
    lines = [
        "## Batch throughput",
        "",
        f"`pipelines.batch` on {args.photos} distinct photos of one face (the example, about "
        f"500 px, mirrored, re-lit, re-cropped) at {args.resolution} px maps and "
        f"{args.fit_steps} fitting steps, into an empty output folder "
        "(`bench/bench_batch.py`). Photos/min: photos made over the command's whole time, its "
        "start-up (imports, loading the pipeline in each process) included.",
        "",
        "| Processes | Launch | Threads each | Done | Failed | Wall time (s) | Photos/min | "
        "Median s/avatar in a process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cores = len(os.sched_getaffinity(0))
    for run in runs:
        launch = (
            "`python -m pipelines.batch`"
            if run["processes"] == 1
            else f"`accelerate launch --multi_gpu --num_processes {run['processes']}`"
        )
        lines.append(
            f"| {run['processes']} | {launch} | {max(1, cores // run['processes'])} | "
            f"{run['done']} | {run['failed']} | {run['seconds']:.1f} | "
            f"{60 * run['done'] / run['seconds']:.2f} | "
            f"{statistics.median(run['avatar_seconds']):.1f} |"
        )
    one, two = runs[0], runs[-1]
    ratio = (two["done"] / two["seconds"]) / (one["done"] / one["seconds"])
    lines += [
        "",
        f"- Scaling, {two['processes']} processes over 1: x{ratio:.2f} photos/min, "
        f"on {cores} cores (one process gives torch, numba and BLAS every core, but the "
        "photometric fit runs on one thread: `modeling/reconstruction/fitting.py`).",
        f"- Summary lines: 1 process: `{one['summary']}`; {two['processes']} processes: "
        f"`{two['summary']}`.",
        "- Not measured here: GPUs (none on this machine) and several machines.",
        "",
        f"Reproduce: `python -m bench.bench_batch --photos {args.photos} --resolution "
        f"{args.resolution} --fit-steps {args.fit_steps}` · {cores} CPUs, Python "
        f"{sys.version.split()[0]} · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · load average "
        f"(1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load)}" + (f". {args.note}" if args.note else ""),
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--fit-steps", type=int, default=20)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--note", default="", help="a remark for the section's last line")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        photos = Path(tmp) / "photos"
        make_photos(photos, args.photos)
        runs = []
        for processes in args.processes:
            run = run_batch(
                photos, Path(tmp) / f"out{processes}", processes, args.resolution, args.fit_steps
            )
            print(f"{processes} process(es): {run['summary']} ({run['seconds']:.1f} s wall)")
            for error in run["errors"]:
                print(f"  failed: {error}")
            runs.append(run)
    text = markdown(runs, args, load_before)
    print(text)
    if not args.no_write:
        write_kept_section(text, RESULTS, MARKERS)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
