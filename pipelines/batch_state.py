"""A batch's state on disk, in its output folder: the avatars' folders (each renamed into
place when complete), `results.jsonl` (one record an avatar) and `.batch/` (the plan, one
results file per process, written as it goes, the temporary folders). What makes a batch
resumable: a rerun folds what an earlier (perhaps killed) run recorded and skips what is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.batch_plan import RESULTS_NAME, Item
from pipelines.cli import folder_inside

STATE_DIR = ".batch"  # a leading dot: never an avatar's folder (safe_name strips it)


@dataclass(frozen=True)
class BatchFolder:
    """Where a batch keeps its results and state, inside the output folder `root`."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / RESULTS_NAME

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def plan(self) -> Path:
        return self.state / "plan.json"

    @property
    def tmp(self) -> Path:
        return self.state / "tmp"

    def process_results(self, rank: int) -> Path:
        """The JSONL one process appends its records to, one line per avatar, as it goes."""
        return self.state / f"results.process{rank}.jsonl"

    def finished_marker(self, rank: int) -> Path:
        return self.state / f"finished.process{rank}"

    def leftovers(self) -> list[Path]:
        """Per-process files of an earlier run that did not get to merge them (killed)."""
        return sorted(self.state.glob("results.process*.jsonl"))


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL file; a line that is not a whole JSON object (a write cut short
    by a kill) is left out."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and "name" in record:
                records.append(record)
    return records


def write_records(path: Path, records: Sequence[dict]) -> None:
    """Replace `path` by `records`, one JSON line each, atomically (a temporary file renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_record(path: Path, record: dict) -> None:
    """Append one record to a process's JSONL, on disk before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def fold_history(folder: BatchFolder) -> dict[str, dict]:
    """Every earlier record by avatar name, latest last: `results.jsonl`, then the per-process
    files a killed run left. These are folded into `results.jsonl` (so a kill of this run loses
    nothing either), the per-process files and markers removed, and `tmp/` emptied."""
    history: dict[str, dict] = {}
    for path in [folder.results, *folder.leftovers()]:
        for record in read_records(path):
            history[record["name"]] = record
    folder.state.mkdir(parents=True, exist_ok=True)
    write_records(folder.results, list(history.values()))
    for path in [*folder.leftovers(), *folder.state.glob("finished.process*")]:
        path.unlink()
    shutil.rmtree(folder.tmp, ignore_errors=True)
    return history


def triage(
    items: Sequence[Item], folder: BatchFolder, history: dict[str, dict], retry_failed: bool
) -> tuple[list[Item], list[dict]]:
    """Split `items` into the work of this run and the records known without any: failed
    before work (`Item.error`), skipped (its folder exists: done by an earlier run), failed in
    an earlier run (unless `retry_failed` or its photos changed since). Returns (todo, records).
    """
    todo, known = [], []
    for item in items:
        earlier = history.get(item.name, {})
        if item.error:
            known.append(new_record(item, "failed", error=item.error))
        elif (folder.root / item.name).is_dir():  # its timings and metrics stay
            known.append({**earlier, **new_record(item, "skipped")})
        elif (
            earlier.get("status") == "failed"
            and not retry_failed
            and earlier.get("sha256") == item.sha256
        ):
            error = earlier.get("error")
            known.append({**earlier, **new_record(item, "failed", error=error), "retried": False})
        else:
            todo.append(item)
    return todo, known


def new_record(item: Item, status: str, **fields) -> dict:
    """A manifest line for `item` (`input`, `output` folder, `status`, `error`, ...)."""
    return {
        "name": item.name,
        "input": item.input,
        "output": item.name if status in ("done", "skipped") else None,
        "status": status,
        "error": None,
        "group": item.group,
        "face_index": item.face_index,
        "resolution": item.resolution,
        "fit_steps": item.fit_steps,
        "sha256": item.sha256,
        "lines": item.lines,
        **fields,
    }


def commit(record: dict, tmp: Path, folder: BatchFolder, rank: int) -> dict:
    """Rename a done item's temporary folder into place and append its record, with SIGTERM and
    SIGINT held until both are on disk (a kill cannot come between the two)."""
    with signals_held():
        if record["status"] == "done":
            try:
                os.rename(tmp, folder_inside(folder.root, record["name"]))
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                record = {
                    **record,
                    "status": "failed",
                    "output": None,
                    "error": f"cannot move the result into place: {e}",
                }
        append_record(folder.process_results(rank), record)
    return record


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    held = {signal.SIGTERM, signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def merge(folder: BatchFolder, known: list[dict], todo: Sequence[Item], processes: int) -> list:
    """Write `results.jsonl`: the records known before the work and every process's, one line
    per avatar of this run in input order; the per-process files are then removed."""
    done = {}
    for rank in range(processes):
        for record in read_records(folder.process_results(rank)):
            done[record["name"]] = record
    for item in todo:  # a process that died without a line for it: say so
        done.setdefault(item.name, new_record(item, "failed", error="no result (process died)"))
    by_name = {r["name"]: r for r in known} | done
    records = sorted(by_name.values(), key=lambda r: r["lines"][0])  # input order
    write_records(folder.results, records)
    for rank in range(processes):
        folder.process_results(rank).unlink(missing_ok=True)
        folder.finished_marker(rank).unlink(missing_ok=True)
    folder.plan.unlink(missing_ok=True)
    for empty in (folder.tmp, folder.state):
        with contextlib.suppress(OSError):
            empty.rmdir()
    return records


def summary(records: Sequence[dict], seconds: float, processes: int) -> str:
    """The run's last line: done / skipped / failed and photos reconstructed per minute."""
    count = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    photos = sum(len(_as_list(r["input"])) for r in records if r["status"] == "done")
    carried = sum(r.get("retried") is False for r in records)
    again = f" ({carried} from an earlier run; --retry-failed retries them)" if carried else ""
    return (
        f"batch: {count['done']} done, {count['skipped']} skipped, {count['failed']} failed"
        f"{again}; {photos} photos in {seconds:.1f} s = {60 * photos / seconds:.2f} photos/min "
        f"with {processes} process{'es' * (processes > 1)}"
    )


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
