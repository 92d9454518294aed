"""Batch reconstruction: many photos -> one output folder per avatar, resumable, with Accelerate.

The work is split between processes, devices and machines by `accelerate launch`:

    python -m pipelines.batch --input photos/ --output avatars/          # one process
    accelerate launch --multi_gpu --num_processes 4 -m pipelines.batch \
        --input photos.csv --output avatars/                            # 4 GPUs (or CPU processes)

Without a GPU, `--multi_gpu` is still what starts several processes (torchrun's launcher; they
then run on the CPU, gloo between them); `accelerate launch --cpu` starts one unless MPI runs it.

`--input` is a folder (searched recursively), a text file of paths (one a line, `#` comments),
or a manifest, `.csv` or `.jsonl`, one row a photo with the columns `path` (required),
`face_index`, `group` (rows with the same group are photos of one person: one avatar),
`resolution`, `fit_steps` and `name` (the output folder). Relative paths are read from the
list's folder. Each avatar is written into `<output>/.batch/tmp/` and renamed into
`<output>/<name>/` when complete, so a rerun skips what is done (`--retry-failed` also retries
what failed) and a killed run loses only the avatars in flight. `<output>/results.jsonl` gets one
line per avatar (status done, skipped or failed, the error, timings, fit PSNR); the main process
merges it from the processes' own files and prints a summary line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from pipelines.batch_plan import Item, describe, log, plan_items, read_input, sha256_of
from pipelines.batch_state import (
    BatchFolder,
    commit,
    fold_history,
    merge,
    new_record,
    read_records,
    summary,
    triage,
)
from pipelines.cli import DEFAULT_WEIGHTS, check_writable, unwrap_choice

# Every entry of an avatar's zip is dated 2000-01-01 00:00 UTC, so that a rerun writes the same
# bytes (zip entries carry their files' times; the rest of the export holds no time).
ZIP_ENTRY_TIME = 946_684_800
POLL_SECONDS = 1.0
PLAN_TIMEOUT_HOURS = 4
# The thread pools' sizes: numpy's BLAS reads them when it loads, torch's OpenMP too. Fixed per
# run, so that a rerun's floating-point sums (and so its files) come out bit for bit the same.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# -- one process's work ---------------------------------------------------------------------


def reconstruct_item(pipe, item: Item, folder: BatchFolder, options: dict) -> tuple[dict, Path]:
    """Reconstruct `item` into its temporary folder and return its record and that folder.

    Never raises for the item's own problems: a photo that vanished or changed since the batch
    was planned, bad input (`modeling.errors`), a file that cannot be written, anything the
    pipeline raises, each becomes a `failed` record with the error (and the folder removed).
    `options` are the pipeline call's global ones (`unwrap_resolution`, `white_balance`, `head`).
    """
    start = time.perf_counter()
    tmp = folder.tmp / item.name
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _check_unchanged(item)
        out = pipe(
            item.photos if item.group is not None else item.photos[0],
            resolution=item.resolution,
            face_index=item.face_index,
            num_fit_steps=item.fit_steps,
            **options,
        )
        reconstructed = time.perf_counter()
        save_deterministic(out, tmp)
    except Exception as e:  # any photo's failure is its line, never the batch's end
        shutil.rmtree(tmp, ignore_errors=True)
        expected = isinstance(e, ValueError | OSError)  # the input's (`modeling.errors`), files'
        if not expected:  # a bug or a broken machine: the whole story in the log
            log("".join(traceback.format_exception(e)).rstrip())
        message = str(e) if expected and str(e) else f"{type(e).__name__}: {e}"
        if not any(p in message for p in item.photos):
            message = f"{describe(item)}: {message}"
        return new_record(
            item, "failed", error=message, seconds=round(time.perf_counter() - start, 3)
        ), tmp
    fit = out.fit
    record = new_record(
        item,
        "done",
        seconds=round(time.perf_counter() - start, 3),
        save_seconds=round(time.perf_counter() - reconstructed, 3),
        timings={k: round(v, 3) for k, v in out.timings.items()},
        fit_psnr_before=_mean(fit.psnr_before) if fit else None,
        fit_psnr_after=_mean(fit.psnr_after) if fit else None,
        warnings=list(out.warnings),
    )
    return record, tmp


def save_deterministic(out, folder: Path) -> dict[str, Path]:
    """`pipelines.outputs.save_outputs(out, folder)`, with the zip rewritten so that its entries
    carry a fixed date (`ZIP_ENTRY_TIME`) instead of the files' write times: the same
    reconstruction gives the same bytes in every file. The files keep their own times."""
    from modeling.export import write_zip
    from pipelines.outputs import save_outputs

    paths = save_outputs(out, folder)
    zipped = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".zip")
    stats = {p: p.stat() for p in zipped}
    for p in zipped:
        os.utime(p, (ZIP_ENTRY_TIME, ZIP_ENTRY_TIME))
    write_zip(zipped, paths["zip"], root=folder)
    for p, st in stats.items():
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return paths


def _check_unchanged(item: Item) -> None:
    """Raise `FileNotFoundError` / `OSError` if a photo vanished or changed since planning."""
    for path, planned in zip(item.photos, item.sha256, strict=True):
        digest, error = sha256_of(path)
        if error and not os.path.exists(path):
            raise FileNotFoundError(
                f"{path}: the file is gone (it was there when the batch started)"
            )
        if error:
            raise OSError(error)
        if digest != planned:
            raise OSError(
                f"{path}: the file changed after the batch started; run the batch "
                "again to reconstruct it"
            )


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 3) if values else None


# -- the run -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.batch",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        help="a folder of photos, a text file of paths, or a .csv/.jsonl manifest",
    )
    p.add_argument("--output", type=Path, required=True, help="the output folder")
    p.add_argument(
        "--resolution",
        type=int,
        default=1024,
        help="UV map size, 64..4096, for rows that do not give one",
    )
    p.add_argument(
        "--face-index",
        type=int,
        default=0,
        help="which face (0: the largest) for rows that do not say",
    )
    p.add_argument(
        "--fit-steps",
        type=int,
        default=None,
        help="photometric fitting steps for rows that do not say (0: none)",
    )
    p.add_argument("--unwrap-resolution", type=unwrap_choice, default=None)
    p.add_argument("--white-balance", choices=("camera", "skin_prior"), default=None)
    p.add_argument(
        "--face-only",
        action="store_true",
        help="the face patch alone (no scalp, ears, neck, eyeballs or mouth), as the CLI's",
    )
    p.add_argument(
        "--flame-model",
        type=Path,
        default=None,
        metavar="NPZ",
        help="a FLAME model converted with `python -m scripts.convert_flame` (with --uvs): "
        "every avatar on FLAME's mesh and UV layout, plus flame_params.npz/.json, as the CLI's",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry what failed in an earlier run (done avatars are always skipped)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (cuda:<local rank> when CUDA is there, else cpu), cpu or cuda",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per process (default: the usable cores shared out between this "
        "machine's processes); results are bit-identical between runs with the same count",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with 1 when some avatars failed (default: 0 once every avatar has its line)",
    )
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="folder or Hub repo id")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--verbose", action="store_true", help="show MediaPipe's native (TFLite, absl) log lines"
    )
    return p


def prepare(args: argparse.Namespace, folder: BatchFolder) -> tuple[list[Item], list[dict]]:
    """The main process's part before the work: check the output folder, read and plan the
    input, fold the earlier runs' records, triage. Raises `OSError` / `ValueError`."""
    check_writable(folder.root)
    defaults = {
        "face_index": args.face_index,
        "resolution": args.resolution,
        "fit_steps": args.fit_steps,
    }
    items = plan_items(read_input(args.input, defaults, skip=folder.root))
    history = fold_history(folder)
    return triage(items, folder, history, args.retry_failed)


def main(argv: list[str] | None = None) -> int:
    """Run a batch (in every process of an `accelerate launch`). Exit code: 0 when every avatar
    has its line in `results.jsonl` (failed ones included: the launcher would report a nonzero
    code as a crash), 1 with `--strict` when some failed, 2 for unusable arguments, input or
    weights."""
    args = build_parser().parse_args(argv)
    if min(args.face_index, args.fit_steps or 0, args.threads or 1) < 0 or args.threads == 0:
        print(
            "error: --face-index and --fit-steps must be 0 or more, --threads 1 or more",
            file=sys.stderr,
        )
        return 2
    if args.flame_model is not None and (args.face_only or not args.flame_model.is_file()):
        problem = "FLAME is a whole head" if args.face_only else f"no file at {args.flame_model}"
        print(f"error: --flame-model: {problem}", file=sys.stderr)
        return 2
    threads = cpu_threads(args.threads)
    for name in THREAD_VARIABLES:  # read once, when numpy's BLAS and torch load (just below)
        os.environ[name] = str(threads)
    import torch
    from accelerate import PartialState

    started = time.perf_counter()
    use_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    # On the CPU: gloo between the processes torchrun started. The timeout covers the main
    # process reading (hashing) the whole input while the others wait for its plan.
    state = PartialState(cpu=use_cpu, timeout=timedelta(hours=PLAN_TIMEOUT_HOURS))
    rank, folder = state.process_index, BatchFolder(args.output)
    plan = share_plan(state, folder, args)
    if "error" in plan:
        if state.is_main_process:
            print(f"error: {plan['error']}", file=sys.stderr)
        return 2
    todo = [Item(**d) for d in plan["todo"]]
    device = setup_process(state, args.device, threads)
    progress = _Progress(folder, state, len(todo), args.quiet)
    try:
        with state.split_between_processes(todo) as mine:
            code = run_items(mine, folder, rank, device, args, progress) if mine else 0
        folder.finished_marker(rank).touch()
        if state.is_main_process:
            progress.wait_for_all()
    finally:
        progress.close()
    if not state.is_main_process:
        return code
    records = merge(folder, plan["known"], todo, state.num_processes)
    print(summary(records, time.perf_counter() - started, state.num_processes))
    failed = any(r["status"] == "failed" for r in records)
    return code or (1 if args.strict and failed else 0)


def share_plan(state, folder: BatchFolder, args: argparse.Namespace) -> dict:
    """The run's plan, made by the main process (`prepare`) and read by the others from
    `.batch/plan.json` once all have met: `{"todo": [Item as dict], "known": [record]}`, or
    `{"error": message}` when the input or the output folder cannot be used."""
    if state.is_main_process:
        _warn_if_one_process_of_many(state)
        with contextlib.suppress(OSError):  # a killed run's: never to be read by this one
            folder.plan.unlink(missing_ok=True)
        try:
            todo, known = prepare(args, folder)
            plan = {"todo": [asdict(i) for i in todo], "known": known}
        except (OSError, ValueError) as e:
            plan = {"error": str(e)}
        for record in plan.get("known", []):  # failed before any work; an earlier run's quietly
            if record["status"] == "failed" and "retried" not in record:
                log(f"error: {record['error']}")
        if state.num_processes > 1:
            with contextlib.suppress(OSError):  # then the others say they found no plan
                folder.plan.write_text(json.dumps(plan))
    state.wait_for_everyone()
    if state.is_main_process:
        return plan
    try:
        return json.loads(folder.plan.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"no plan from the main process ({e})"}


def cpu_threads(asked: int | None = None) -> int:
    """CPU threads for this process: `asked`, else the usable cores shared out between this
    machine's processes (`LOCAL_WORLD_SIZE`, which the launcher sets), at least one."""
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)
    return asked or max(1, len(os.sched_getaffinity(0)) // local)


def setup_process(state, device: str, threads: int) -> str:
    """This process's device (`auto`: Accelerate's, `cuda:<local rank>` or the CPU) and, on the
    CPU, `threads` for torch and numba."""
    import numba
    import torch

    chosen = str(state.device) if device == "auto" else device
    if torch.device(chosen).type == "cpu":
        chosen = "cpu"
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return chosen


def run_items(
    items: Sequence[Item],
    folder: BatchFolder,
    rank: int,
    device: str,
    args: argparse.Namespace,
    progress: _Progress,
) -> int:
    """Load the pipeline and make `items` one after the other, each committed as it is done.
    Returns 2 if the pipeline cannot be loaded (every item then fails with the reason), else 0.
    """
    from modeling.errors import WeightsError
    from pipelines.cli import load_pipeline

    folder.tmp.mkdir(parents=True, exist_ok=True)
    try:
        pipe = load_pipeline(args.weights, device, args.verbose, args.flame_model)
    except (OSError, ValueError, WeightsError) as e:
        log(f"error: cannot load the pipeline: {e}")
        for item in items:
            commit(
                new_record(item, "failed", error=f"pipeline not loaded: {e}"), Path(), folder, rank
            )
        return 2
    pipe.set_progress_bar_config(disable=True)  # one bar: the batch's, on the main process
    options = {
        "unwrap_resolution": args.unwrap_resolution,
        "white_balance": args.white_balance,
        "head": not args.face_only,
    }
    for item in items:
        record, tmp = reconstruct_item(pipe, item, folder, options)
        record = commit({**record, "process": rank, "device": device}, tmp, folder, rank)
        if record["status"] == "failed":
            log(f"error: {record['error']}")
        for warning in record.get("warnings") or []:
            log(f"warning: {describe(item)}: {warning}")
        progress.update()
    return 0


class _Progress:
    """The batch's one progress bar, on the main process: avatars done by every process, read
    from their result files (a thread refreshes it while this process works)."""

    def __init__(self, folder: BatchFolder, state, total: int, quiet: bool):
        from tqdm import tqdm

        self.folder, self.ranks = folder, range(state.num_processes)
        self.main = state.is_main_process
        self.bar = None
        if self.main and not quiet:
            self.bar = tqdm(
                total=total,
                desc="avatars",
                unit="avatar",
                file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 30.0,
            )
        self._stop = threading.Event()
        self._thread = None
        if self.bar is not None:
            self._thread = threading.Thread(target=self._refresh_until_stopped, daemon=True)
            self._thread.start()

    def _count(self) -> int:
        return sum(len(read_records(self.folder.process_results(r))) for r in self.ranks)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(max(self._count() - self.bar.n, 0))

    def _refresh_until_stopped(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.update()

    def wait_for_all(self) -> None:
        """Wait (polling the markers, no collective: processes finish far apart) until every
        process has finished its share."""
        while not all(self.folder.finished_marker(r).exists() for r in self.ranks):
            time.sleep(POLL_SECONDS)
        self.update()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.close()


def _warn_if_one_process_of_many(state) -> None:
    """`accelerate launch --cpu --num_processes N` starts one process unless it is given an MPI
    host file; say so rather than run N times slower than asked."""
    if state.num_processes == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        log(
            "warning: one process only: `accelerate launch --cpu` starts several only with MPI "
            "(--mpirun_hostfile); on CPUs use `accelerate launch --multi_gpu --num_processes N`"
            " (the batch then runs on the CPU when there is no GPU)"
        )


if __name__ == "__main__":
    sys.exit(main())
