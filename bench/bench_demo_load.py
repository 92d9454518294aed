"""The demo under load: N concurrent `gradio_client` users against `python app.py`, bad uploads
mixed in.

    python -m bench.bench_demo_load --users 8 [--resolution 512] [--fit-steps 10] [--no-write]

Starts `python app.py` on a free port with a TMPDIR of its own (so that its files can be
measured), then N users at once, each its own `Client` (a session of its own). Each sends a good
photo (the astronaut, each user's copy re-encoded at its own JPEG quality: distinct uploads, as
distinct people send) and a bad upload (a text file, a truncated JPEG, a PNG claiming 30000 x
30000 pixels, a 40 x 30 image, in turn), even users good first, odd users bad first. Reports each
request's latency (submit to answer, queue wait included; the first good request also loads the
pipeline) and outcome, failures (a bad upload answered without the loader's message, a good one
refused, no answer), the server's peak RSS (the kernel's high-water mark) and its RSS after the
run, the disk its folders hold right after the run and after shutdown (SIGTERM), and whether it
still answers afterwards. Prints a markdown section and writes it to `bench/RESULTS.md` as
"Demo under load" (that section only; the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.report import KEPT_SECTIONS, write_kept_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = KEPT_SECTIONS[0]  # report.write_results keeps what lies between


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` RGB pixels, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")]
    body = b"".join(
        struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


def bad_uploads(folder: Path, tag: str = "") -> dict[Path, str]:
    """Files a user might upload by mistake, each with the message (a regex) the demo must answer
    with: not an image, a truncated JPEG, a decompression bomb, a tiny image. `tag` goes into
    the names and bytes (distinct uploads for distinct users)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    names = ("notes.png", "cut.jpg", "bomb.png", "tiny.png")
    notes, cut, bomb, tiny = (folder / f"{Path(n).stem}{tag}{Path(n).suffix}" for n in names)
    notes.write_text(f"not a picture {tag}")
    whole = folder / f"whole{tag}.jpg"
    Image.fromarray(data.astronaut()).save(whole, quality=90)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    bomb.write_bytes(_png(30000, 30000) + tag.encode())
    Image.new("RGB", (40, 30), (len(tag), 0, 0)).save(tiny)
    return {
        notes: rf"^{re.escape(notes.name)} is not an image .*Upload a JPEG, PNG or WebP photo\.$",
        cut: rf"^{re.escape(cut.name)}: damaged or truncated image data .*export the photo again",
        bomb: rf"^{re.escape(bomb.name)}: image is too large to decode safely .*smaller photo\.$",
        tiny: rf"^{re.escape(tiny.name)} is 40x30 pixels; .*at least 64\. Use a larger photo",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _du_mb(folder: Path) -> float:
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    return sum(f.stat().st_size for f in files) / 1e6


def _peak_rss_mb(pid: int) -> float | None:
    """The process's resident-memory high-water mark (Linux's VmHWM), or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else None


def start_demo(tmp: Path, log, timeout_s: float = 120) -> tuple[subprocess.Popen, str]:
    """`python app.py` on a free port of 127.0.0.1, with `tmp` as its TMPDIR and its output in
    the open file `log`; returns (the process, its URL) once it serves its page. Raises
    RuntimeError if it exits or does not serve within `timeout_s` (then it is killed)."""
    port = free_port()
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"app.py did not serve its page within {timeout_s:g} s")


def _request(client, path: Path, expected: str | None, args) -> tuple[float, str]:
    """(latency in seconds, outcome) of one reconstruction request; `expected`: the message a
    bad upload must get (None for a good photo)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    start = time.perf_counter()
    try:
        client.predict(
            handle_file(str(path)), args.resolution, 0, args.fit_steps, "camera",
            api_name="/reconstruct",
        )  # fmt: skip
        outcome = "ok" if expected is None else "FAIL: a bad upload was accepted"
    except AppError as e:
        if expected is not None and re.search(expected, str(e)):
            outcome = "refused, the loader's message"
        else:
            outcome = f"FAIL: {str(e)[:120]}"
    except Exception as e:  # no answer, a dropped connection...
        outcome = f"FAIL: {type(e).__name__}: {str(e)[:120]}"
    return time.perf_counter() - start, outcome


def run(args) -> dict:
    from gradio_client import Client
    from PIL import Image
    from skimage import data

    work = Path(tempfile.mkdtemp(prefix="openavatar-load-"))
    server_tmp = work / "server-tmp"
    server_tmp.mkdir()
    uploads = work / "uploads"
    uploads.mkdir()
    jobs = []  # per user: [(path, expected message or None)] in order
    for user in range(args.users):
        good = uploads / f"face_user{user}.jpg"
        Image.fromarray(data.astronaut()).save(good, quality=95 - user)
        bad_path, expected = list(bad_uploads(uploads, f"_user{user}").items())[user % 4]
        pair = [(good, None), (bad_path, expected)]
        jobs.append(pair if user % 2 == 0 else pair[::-1])

    load_before = os.getloadavg()
    log = open(work / "server.log", "w")  # noqa: SIM115 (closed below)
    proc, url = start_demo(server_tmp, log)
    server = psutil.Process(proc.pid)
    rss_peak = [server.memory_info().rss]
    sampling = threading.Event()

    def sample_rss():
        while not sampling.wait(0.2):
            try:
                rss_peak.append(server.memory_info().rss)
            except psutil.Error:
                return

    threading.Thread(target=sample_rss, daemon=True).start()
    rows = []
    lock = threading.Lock()
    clients = [Client(url, verbose=False) for _ in range(args.users)]
    barrier = threading.Barrier(args.users)

    def user_run(user: int):
        barrier.wait()  # all users start together
        for path, expected in jobs[user]:
            seconds, outcome = _request(clients[user], path, expected, args)
            with lock:
                rows.append((user, path.name, "bad" if expected else "good", seconds, outcome))

    start = time.perf_counter()
    threads = [threading.Thread(target=user_run, args=(u,)) for u in range(args.users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    # still answering? one more (bad) upload, from a new session
    path, expected = next(iter(bad_uploads(uploads, "_after").items()))
    after_seconds, after_outcome = _request(Client(url, verbose=False), path, expected, args)
    sampling.set()
    peak_rss = _peak_rss_mb(proc.pid) or max(rss_peak) / 2**20
    rss_after = server.memory_info().rss / 2**20
    disk_after = {
        "ours": _du_mb(server_tmp / "openavatar-demo"),
        "gradio": _du_mb(server_tmp / "openavatar-demo-gradio"),
    }
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    disk_shutdown = _du_mb(server_tmp)
    return {
        "rows": sorted(rows),
        "wall": wall,
        "after": (after_seconds, after_outcome),
        "peak_rss_mb": peak_rss,
        "rss_after_mb": rss_after,
        "disk_after_mb": disk_after,
        "disk_shutdown_mb": disk_shutdown,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "log": work / "server.log",
    }


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def markdown(result: dict, args) -> str:
    rows = result["rows"]
    good = [r for r in rows if r[2] == "good"]
    bad = [r for r in rows if r[2] == "bad"]
    failures = [r for r in rows if r[4].startswith("FAIL")]
    after_seconds, after_outcome = result["after"]
    disk = result["disk_after_mb"]
    command = (
        f"python -m bench.bench_demo_load --users {args.users} --resolution {args.resolution} "
        f"--fit-steps {args.fit_steps}"
    )
    lines = [
        "## Demo under load",
        "",
        f"{args.users} users at once against `python app.py`, each with its own `gradio_client` "
        f"session: a good photo (the astronaut, a distinct JPEG per user) at {args.resolution} px "
        f"maps and {args.fit_steps} fitting steps, and a bad upload (a text file, a truncated "
        "JPEG, a 30000 x 30000 PNG header, a 40 x 30 image, in turn), even users good first "
        "(`bench/bench_demo_load.py`). Latency: submit to answer, queue included (one "
        "reconstruction runs at a time; the first also loads the pipeline).",
        "",
        "| User | Upload | Kind | Latency (s) | Outcome |",
        "|---|---|---|---|---|",
        *(f"| {u} | {name} | {kind} | {s:.1f} | {outcome} |" for u, name, kind, s, outcome in rows),
        "",
        f"- Good photos: {sum(r[4] == 'ok' for r in good)} of {len(good)} reconstructed, "
        f"{_stats([r[3] for r in good])}.",
        f"- Bad uploads: {sum(r[4].startswith('refused') for r in bad)} of {len(bad)} refused with "
        f"the loader's message, {_stats([r[3] for r in bad])}.",
        f"- Failures: {len(failures)}. All {len(rows)} requests done in {result['wall']:.1f} s; "
        f"afterwards a new session's bad upload is answered in {after_seconds:.1f} s "
        f"({after_outcome}).",
        f"- Server memory: peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"{result['rss_after_mb']:.0f} MB after the run.",
        f"- Disk right after the run: {disk['ours']:.1f} MB in the demo's folder (the sessions' "
        f"photos, kept 10 minutes for their next request, and results not yet a minute old) + "
        f"{disk['gradio']:.1f} MB in Gradio's (the copies it serves, kept 10 minutes); after "
        f"shutdown (SIGTERM): {result['disk_shutdown_mb']:.1f} MB.",
        "",
        f"Reproduce: `{command}` · {os.cpu_count()} CPUs, Python {sys.version.split()[0]} · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in result['load_before'])}, after "
        f"{'/'.join(f'{x:.1f}' for x in result['load_after'])}"
        + (f". {args.note}" if args.note else ""),
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Put `text` into `path` between the section's markers (appended the first time)."""
    write_kept_section(text, path, (BEGIN, END))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--fit-steps", type=int, default=10)
    parser.add_argument("--note", default="", help="a remark for the section's last line")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    result = run(args)
    text = markdown(result, args)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"\nwritten to {RESULTS}; the server's log: {result['log']}")


if __name__ == "__main__":
    main()
