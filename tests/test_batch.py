"""Batch reconstruction (`pipelines.batch`): reading and planning the input, the resumable
state on disk, and, end to end (slow), two processes under `accelerate launch`, killed midway and
resumed."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageOps

from pipelines.batch import reconstruct_item
from pipelines.batch_plan import RESULTS_NAME, plan_items, read_input
from pipelines.batch_state import (
    BatchFolder,
    append_record,
    commit,
    fold_history,
    merge,
    new_record,
    read_records,
    triage,
)

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.jpg"
DEFAULTS = {"face_index": 0, "resolution": 128, "fit_steps": 2}
ACCELERATE = Path(sys.executable).with_name("accelerate")


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def plan(source: Path, **kwargs):
    return plan_items(read_input(source, DEFAULTS, **kwargs))


# -- reading and planning (fast) ------------------------------------------------------------


def test_a_folder_is_read_recursively_in_order_without_hidden_files_or_the_output(tmp_path):
    for rel in ("b.jpg", "a/z.png", "a/y.JPG", ".hidden.jpg", ".cache/x.jpg", "out/face.png"):
        write_bytes(tmp_path / rel, rel.encode())
    write_bytes(tmp_path / "notes.txt", b"not a photo suffix: not read")
    rows = read_input(tmp_path, DEFAULTS, skip=tmp_path / "out")
    assert [Path(r.path).relative_to(tmp_path).as_posix() for r in rows] == [
        "a/y.JPG",
        "a/z.png",
        "b.jpg",
    ]
    assert [i.name for i in plan_items(rows)] == ["a_y", "a_z", "b"]  # a folder's path in the name


def test_a_text_list_reads_paths_from_its_own_folder(tmp_path):
    write_bytes(tmp_path / "photos" / "x.jpg", b"x")
    listing = write_bytes(tmp_path / "photos" / "list.txt", b"# my photos\n\nx.jpg\n  gone.jpg \n")
    items = plan(listing)
    assert [(i.name, i.photos, i.lines) for i in items] == [
        ("x", [str(tmp_path / "photos" / "x.jpg")], [3]),
        ("gone", [str(tmp_path / "photos" / "gone.jpg")], [4]),
    ]
    assert items[0].error is None
    assert items[1].error == f"{tmp_path / 'photos' / 'gone.jpg'}: no such file"


def test_a_csv_manifest_gives_per_row_options_and_same_person_groups(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        write_bytes(tmp_path / name, name.encode())
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "face_index", "resolution", "fit_steps", "name", "notes"])
        w.writerow(["a.jpg", "ann", "", "256", "", "", "kept out"])
        w.writerow(["b.jpg", "", "1", "", "0", "", ""])
        w.writerow(["c.jpg", "ann", "", "256", "", "", ""])
        w.writerow(["d.jpg", "bob", "", "256", "", "", ""])
        w.writerow(["e.jpg", "bob", "", "512", "", "", ""])  # disagrees with d.jpg
        w.writerow(["a.jpg", "", "first", "", "", "", ""])
        w.writerow(["c.jpg", "", "", "", "", "Chris Smith", ""])
    items = plan(manifest)
    ann, b, bob, bad, chris = items
    assert (ann.name, ann.group, ann.resolution, ann.lines) == ("ann", "ann", 256, [2, 4])
    assert ann.photos == [str(tmp_path / "a.jpg"), str(tmp_path / "c.jpg")] and not ann.error
    assert (b.name, b.face_index, b.fit_steps, b.resolution) == ("b_face1", 1, 0, 128)
    assert bob.error == "group 'bob': its rows disagree on resolution (256, 512)"
    assert bad.error == f"{manifest}, line 7: face_index must be a whole number from 0, not 'first'"
    assert (chris.name, chris.error) == ("Chris Smith", None)


def test_a_jsonl_manifest_reports_a_broken_line_and_needs_paths(tmp_path):
    write_bytes(tmp_path / "a.png", b"a")
    lines = ['{"path": "a.png", "resolution": 256}', "{broken", '{"path": ""}']
    manifest = write_bytes(tmp_path / "m.jsonl", "\n".join(lines).encode())
    a, broken, empty = plan(manifest)
    assert (a.resolution, a.error) == (256, None)
    assert broken.error.startswith(f"{manifest}, line 2: not a JSON object")
    assert empty.error == f"{manifest}, line 3: no path"
    with pytest.raises(ValueError, match="needs a 'path' column"):
        read_input(write_bytes(tmp_path / "n.jsonl", b'{"file": "a.png"}\n'), DEFAULTS)
    with pytest.raises(FileNotFoundError):
        read_input(tmp_path / "nothing-here", DEFAULTS)


def test_names_are_safe_unique_and_never_the_results_file(tmp_path):
    for name in ("x.jpg", "x.png", "X.bmp", "results.jsonl.jpg", "a:b.jpg"):
        write_bytes(tmp_path / name, name.encode())
    names = sorted(i.name for i in plan(tmp_path))
    assert names == ["X_bmp", "a_b", f"{RESULTS_NAME}-2", "x_jpg", "x_png"]


def test_duplicates_fail_and_name_the_first(tmp_path):
    write_bytes(tmp_path / "a.jpg", b"same bytes")
    write_bytes(tmp_path / "copy.jpg", b"same bytes")
    lines = ['{"path": "a.jpg"}', '{"path": "copy.jpg"}', '{"path": "a.jpg", "face_index": 1}',
             '{"path": "a.jpg", "group": "g"}', '{"path": "copy.jpg", "group": "g"}']  # fmt: skip
    a, copy, second_face, group = plan(write_bytes(tmp_path / "m.jsonl", "\n".join(lines).encode()))
    assert a.error is None and second_face.error is None  # another face is another avatar
    assert copy.error == (f"duplicate of {tmp_path / 'a.jpg'} (the same photo contents and "
                          "options): made once, in a/")  # fmt: skip
    assert (
        group.error
        == f"group 'g': {tmp_path / 'copy.jpg'} is the same photo as {tmp_path / 'a.jpg'}"
    )


class NeverCalled:
    def __call__(self, *args, **kwargs):
        pytest.fail("the pipeline ran on a photo that is not the planned one")


@pytest.mark.parametrize("change", ["vanish", "rewrite"])
def test_a_photo_that_vanishes_or_changes_after_planning_fails_clearly(tmp_path, change):
    photo = write_bytes(tmp_path / "in" / "a.jpg", PHOTO.read_bytes())
    [item] = plan(tmp_path / "in")
    if change == "vanish":
        photo.unlink()
    else:
        photo.write_bytes(b"another photo")
    folder = BatchFolder(tmp_path / "out")
    record, tmp = reconstruct_item(NeverCalled(), item, folder, {})
    expected = "the file is gone" if change == "vanish" else "the file changed"
    assert record["status"] == "failed" and expected in record["error"]
    assert record["error"].startswith(str(photo)) and not tmp.exists()


# -- the state on disk (fast) ---------------------------------------------------------------


def test_a_rerun_skips_done_carries_failures_and_retries_on_request(tmp_path):
    for name in ("done.jpg", "failed.jpg", "changed.jpg", "new.jpg", "killed.jpg"):
        write_bytes(tmp_path / "in" / name, name.encode())
    items = {i.name: i for i in plan(tmp_path / "in")}
    folder = BatchFolder(tmp_path / "out")
    (folder.root / "done").mkdir(parents=True)
    old = {**new_record(items["done"], "done"), "fit_psnr_after": 30.0}
    failed = new_record(items["failed"], "failed", error="No face found")
    changed = {**new_record(items["changed"], "failed", error="x"), "sha256": ["old"]}
    folder.results.write_text("".join(json.dumps(r) + "\n" for r in (old, failed, changed)))
    # a killed run's process file, its last line cut short by the kill
    folder.state.mkdir()
    killed = new_record(items["killed"], "failed", error="No face found")
    append_record(folder.process_results(1), killed)
    with open(folder.process_results(1), "a") as f:
        f.write('{"name": "new", "sta')
    (folder.tmp / "new").mkdir(parents=True)  # an avatar in flight when it was killed

    history = fold_history(folder)
    assert set(history) == {"done", "failed", "changed", "killed"}
    assert not folder.leftovers() and not folder.tmp.exists()
    assert {r["name"] for r in read_records(folder.results)} == set(history)  # kept on disk

    todo, known = triage(list(items.values()), folder, history, retry_failed=False)
    assert sorted(i.name for i in todo) == ["changed", "new"]
    status = {r["name"]: (r["status"], r.get("retried")) for r in known}
    assert status == {"done": ("skipped", None), "failed": ("failed", False),
                      "killed": ("failed", False)}  # fmt: skip
    assert next(r for r in known if r["name"] == "done")["fit_psnr_after"] == 30.0
    todo, _ = triage(list(items.values()), folder, history, retry_failed=True)
    assert sorted(i.name for i in todo) == ["changed", "failed", "killed", "new"]


def test_commit_moves_a_done_avatar_into_place_and_merge_keeps_input_order(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_bytes(tmp_path / "in" / name, name.encode())
    a, b, c = plan(tmp_path / "in")
    folder = BatchFolder(tmp_path / "out")
    folder.tmp.mkdir(parents=True)
    write_bytes(folder.tmp / "c" / "face.glb", b"glb")
    commit(new_record(c, "done"), folder.tmp / "c", folder, rank=1)
    assert (folder.root / "c" / "face.glb").read_bytes() == b"glb"
    assert not (folder.tmp / "c").exists()
    commit(new_record(a, "failed", error="No face found"), folder.tmp / "a", folder, rank=0)
    # b was given to a process that died without a line for it
    records = merge(folder, [], [a, b, c], processes=2)
    assert [(r["name"], r["status"]) for r in records] == [
        ("a", "failed"),
        ("b", "failed"),
        ("c", "done"),
    ]
    assert records[1]["error"] == "no result (process died)"
    assert read_records(folder.results) == records
    assert not folder.state.exists()  # nothing left behind but the avatars and results.jsonl


# -- end to end (slow) ----------------------------------------------------------------------


def make_photos(folder: Path) -> dict[str, str]:
    """Four good photos (crops and variants of the example, in subfolders) and four bad ones,
    named so that each of two processes gets two good ones. Returns `{avatar name: kind}`."""
    image = Image.open(PHOTO).convert("RGB")
    crop = image.crop((120, 10, 376, 266))  # a 256 px photo, the face ~150 px wide
    (folder / "sub" / "deep").mkdir(parents=True)
    crop.save(folder / "a.jpg", quality=92)
    ImageOps.mirror(crop).save(folder / "sub" / "b.png")
    ImageEnhance.Brightness(crop).enhance(0.8).save(folder / "sub" / "c.jpg", quality=90)
    image.crop((100, 0, 400, 300)).resize((256, 256)).save(folder / "sub" / "deep" / "d.jpg")
    shutil.copy(folder / "a.jpg", folder / "sub" / "dup.jpg")
    (folder / "notes.jpg").write_text("a text file, not a photo")
    data = (folder / "a.jpg").read_bytes()
    (folder / "sub" / "cut.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "grey.png")
    return {"a": "good", "sub_b": "good", "sub_c": "good", "sub_deep_d": "good",
            "sub_dup": "duplicate", "notes": "not an image", "sub_cut": "truncated",
            "grey": "no face"}  # fmt: skip


EXPECTED_ERRORS = {
    "sub_dup": "duplicate of ",
    "notes": "is not an image",
    "sub_cut": "damaged or truncated",
    "grey": "No face found",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(photos: Path, out: Path, **popen) -> subprocess.Popen:
    """`accelerate launch` of the batch with 2 processes on the CPU (`--multi_gpu` starts them
    with torchrun; `--cpu` would start one), 128 px maps, 2 fitting steps."""
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "pipelines.batch",
               "--input", str(photos), "--output", str(out), "--resolution", "128",
               "--fit-steps", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, **popen)


def run_to_end(photos: Path, out: Path) -> str:
    proc = launch(photos, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def avatar_files(out: Path, name: str) -> dict[str, bytes]:
    folder = out / name
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path, dict, str]:
    root = tmp_path_factory.mktemp("batch")
    photos = root / "photos"
    kinds = make_photos(photos)
    out = root / "out"
    stdout = run_to_end(photos, out)
    return photos, out, kinds, stdout


@pytest.mark.slow
def test_two_processes_make_every_good_photo_once_and_report_the_bad(uninterrupted):
    _, out, kinds, stdout = uninterrupted
    records = read_records(out / RESULTS_NAME)
    assert sorted(r["name"] for r in records) == sorted(kinds)  # one line each, complete
    good = sorted(n for n, k in kinds.items() if k == "good")
    assert sorted(r["name"] for r in records if r["status"] == "done") == good
    assert sorted(p.name for p in out.iterdir()) == sorted([*good, RESULTS_NAME])
    assert {r["process"] for r in records if r["status"] == "done"} == {0, 1}  # shared out
    for r in records:
        if r["status"] == "done":
            assert (out / r["output"] / "face.glb").is_file()
            assert r["fit_psnr_after"] > 20 and r["seconds"] > 0 and "fit" in r["timings"]
        else:
            assert r["output"] is None and EXPECTED_ERRORS[r["name"]] in r["error"], r
    assert "batch: 4 done, 0 skipped, 4 failed" in stdout and "photos/min" in stdout


@pytest.mark.slow
def test_a_killed_batch_resumes_without_duplicates_or_losses_and_same_bytes(
    uninterrupted, tmp_path
):
    photos, reference, kinds, _ = uninterrupted
    good = sorted(n for n, k in kinds.items() if k == "good")
    out = tmp_path / "out"
    proc = launch(photos, out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not any((out / name).is_dir() for name in good):  # the first avatar is done
            assert proc.poll() is None and time.monotonic() < deadline, "no avatar came out"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler or a user would
        proc.wait(timeout=60)
        time.sleep(1)
        with pytest.raises(ProcessLookupError):  # and it took its processes with it
            os.killpg(proc.pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    before = {name for name in good if (out / name).is_dir()}
    assert 1 <= len(before) < len(good), before  # killed midway

    stdout = run_to_end(photos, out)
    records = {r["name"]: r for r in read_records(out / RESULTS_NAME)}
    assert sorted(records) == sorted(kinds)
    for name in good:  # each made exactly once: by the killed run or by the resumed one
        assert records[name]["status"] == ("skipped" if name in before else "done"), name
        assert avatar_files(out, name) == avatar_files(reference, name), name  # same bytes
    assert f"{len(good) - len(before)} done, {len(before)} skipped" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([*good, RESULTS_NAME])


@pytest.mark.slow
def test_one_process_makes_a_same_person_group_from_a_manifest(tmp_path):
    image = Image.open(PHOTO).convert("RGB").crop((120, 10, 376, 266))
    image.save(tmp_path / "front.jpg")
    ImageOps.mirror(image).save(tmp_path / "mirrored.jpg")
    rows = [{"path": "front.jpg", "group": "eileen"}, {"path": "mirrored.jpg", "group": "eileen"},
            {"path": "missing.jpg", "resolution": 64}]  # fmt: skip
    manifest = tmp_path / "photos.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--input", str(manifest), "--output", str(out), "--resolution", "64", "--fit-steps",
            "0", "--strict"]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "pipelines.batch", *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 1, result.stderr  # --strict: one failed
    eileen, missing = read_records(out / RESULTS_NAME)
    assert eileen["status"] == "done" and eileen["input"] == [
        str(tmp_path / "front.jpg"),
        str(tmp_path / "mirrored.jpg"),
    ]
    assert (out / "eileen" / "face.glb").is_file()
    assert missing["status"] == "failed" and missing["error"].endswith("missing.jpg: no such file")
    assert "batch: 1 done, 0 skipped, 1 failed; 2 photos" in result.stdout


def test_photos_of_the_same_name_in_two_folders_of_a_list_get_their_own_names(tmp_path):
    write_bytes(tmp_path / "p" / "x.jpg", b"1")
    write_bytes(tmp_path / "q" / "x.jpg", b"2")
    listing = write_bytes(tmp_path / "list.txt", b"p/x.jpg\nq/x.jpg\n")
    assert [i.name for i in plan(listing)] == ["x_jpg", "x_jpg-2"]  # the CLI's rule
