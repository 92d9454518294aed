"""End to end in a real browser: `python app.py` on localhost, driven in headless Chromium.

The driver is `tests/browser/drive_demo.mjs` (Node + playwright-core, no browser download: it
uses Debian's /usr/bin/chromium). `.ci/run` installs both; without them this test is skipped
(it fails instead under OPENAVATAR_REQUIRE_BROWSER=1, as in CI).
Screenshots and the server's log are copied to `tests/browser/artifacts/` (before.png,
after.png, viewer.png, error.png, bad_upload.png; failure.png when it fails); each run works in
its own temporary folder (the server's TMPDIR too), so two runs at once do not clobber each
other's files.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bench.bench_demo_load import start_demo

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = BROWSER_DIR / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
NODE = shutil.which("node")

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a server, a browser and a reconstruction


@pytest.fixture(autouse=True)
def _prerequisites(require_node_tools):
    require_node_tools(("playwright-core",), "browser test", chromium=True)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def shots(tmp_path):
    """This run's screenshots and server log; copied to ARTIFACTS at the end, pass or fail."""
    folder = tmp_path / "shots"
    folder.mkdir()
    yield folder
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        shutil.copy(file, ARTIFACTS / file.name)


@pytest.fixture
def server_tmp(tmp_path):
    """The server's TMPDIR: its uploads and results go under it."""
    folder = tmp_path / "server-tmp"
    folder.mkdir()
    return folder


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, as a process manager would stop it; SIGKILL if it does not stop in 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def server(shots, server_tmp):
    """`python app.py` on a free port; yields its `url` and a `stop()`, and stops it afterwards."""
    log = open(shots / "server.log", "w")  # noqa: SIM115 (closed below)
    try:
        proc, url = start_demo(server_tmp, log, timeout_s=60)
    except RuntimeError as e:
        log.close()
        pytest.fail(f"{e}; see {ARTIFACTS}/server.log")
    try:
        yield SimpleNamespace(url=url, stop=lambda: _stop(proc))
    finally:
        _stop(proc)
        log.close()


def test_demo_in_chromium(server, server_tmp, shots, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((480, 640, 3), 128, np.uint8)).save(grey)
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")

    start = time.monotonic()
    run = subprocess.run(
        [NODE, "drive_demo.mjs", server.url, str(ROOT / "examples" / "astronaut.jpg"), str(grey)]
        + [str(notes), str(shots)],
        cwd=BROWSER_DIR,
        env={**os.environ, "CHROMIUM_PATH": CHROMIUM},
        capture_output=True,
        text=True,
        timeout=200,
    )
    elapsed = time.monotonic() - start
    lines = run.stdout.strip().splitlines()
    assert lines, f"the driver printed nothing; stderr:\n{run.stderr}"
    result = json.loads(lines[-1])
    assert run.returncode == 0 and result["ok"], (
        f"{result.get('failure')}\nsee {ARTIFACTS}/failure.png and server.log\n{run.stderr}"
    )

    assert result["viewer_canvas"] and min(result["viewer_canvas"]) > 100, "3D viewer shown"
    viewer = np.asarray(Image.open(shots / "viewer.png").convert("RGB"), np.float32)
    assert viewer.std(axis=(0, 1)).mean() > 10, "the 3D viewer drew the face, not a blank canvas"
    assert result["map_images"] >= 5  # texture, albedo, normals, visibility (+ later maps)
    assert result["relit_images"] == 9  # 4 environments x 2 views, and the head in profile
    assert "512² maps, 2 fitting steps" in result["summary"]
    assert all(name in result["downloads"].replace("\n", "") for name in ("face.glb", "maps.zip"))
    assert result["warnings"] == "", "the astronaut raises no warning"
    assert result["error_text"].startswith("No face found")
    # Gradio's image component no longer decodes the upload first (a generic "Error"): the
    # loader's own message, as the CLI gives it
    assert result["bad_upload_text"].startswith(
        "notes.png is not an image in a format we can read. Upload a JPEG, PNG or WebP photo."
    )
    for name in ("before.png", "after.png", "error.png", "bad_upload.png"):
        assert (shots / name).stat().st_size > 10_000, name
    print(f"browser run {elapsed:.1f} s: {json.dumps(result['timings_s'])}")

    # Gradio serves its own copies of what the app returned, nothing else of this machine.
    for path in ("/etc/passwd", str(ROOT / "app.py"), str(ROOT / "examples" / "astronaut.jpg")):
        assert _status(f"{server.url}gradio_api/file={path}") == 403, path

    # Stopped (SIGTERM), the demo leaves nothing behind: its results, the photos and Gradio's
    # copies are deleted at shutdown.
    server.stop()
    left = [str(f.relative_to(server_tmp)) for f in server_tmp.rglob("*") if f.is_file()]
    assert left == []
