"""The CLI answers `--help` and mistakes at once (no torch, diffusers or MediaPipe imported),
shows progress bars on a terminal (never with --quiet, never in a pipe), and hides MediaPipe's
native log lines unless --verbose."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import cli

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.jpg"
HEAVY = ("torch", "diffusers", "mediapipe", "cv2", "numpy", "PIL")
NATIVE_LOG_MARKERS = ("XNNPACK", "absl::InitializeLog", "W0000", "I0000")

# Runs the CLI in a fresh interpreter, then lists the heavy modules it imported.
CHECK_IMPORTS = """
import sys
from pipelines.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print("exit", code, "heavy:", ",".join(heavy) or "none")
"""


def run_python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GLOG_minloglevel", None)  # tests set it; the user's shell does not
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        ([], 2),  # argparse: the photo is missing
        (["photo.jpg", "--resolution", "big"], 2),
        (["no-such-photo.jpg"], 2),
        ([str(PHOTO), "--max-faces", "0"], 2),
        ([str(PHOTO), "--fit-steps", "-1"], 2),
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(argv, code):
    run = run_python("-c", CHECK_IMPORTS.format(heavy=HEAVY), *argv)
    assert run.stdout.strip().splitlines()[-1] == f"exit {code} heavy: none", run.stderr


def test_help_answers_within_a_second_or_so():
    start = time.perf_counter()
    run = run_python("-m", "pipelines.cli", "--help")
    seconds = time.perf_counter() - start
    assert run.returncode == 0 and "--verbose" in run.stdout and "--quiet" in run.stdout
    assert seconds < 3, f"--help took {seconds:.1f} s"  # ~0.1 s; 12 s when it imported torch


def test_importing_pipelines_loads_the_pipeline_on_first_use():
    run = run_python("-c", "import sys, pipelines; print('torch' in sys.modules)")
    assert run.stdout.split() == ["False"], run.stderr
    import pipelines
    from pipelines.avatar_pipeline import AvatarPipeline

    assert pipelines.AvatarPipeline is AvatarPipeline and "AvatarPipeline" in dir(pipelines)
    with pytest.raises(AttributeError, match="no attribute 'Avatar'"):
        pipelines.Avatar  # noqa: B018


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws its bars."""

    def isatty(self) -> bool:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [False, True])
def test_a_terminal_shows_the_stages_and_the_fit_steps_unless_quiet(tmp_path, monkeypatch, quiet):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = [str(PHOTO), "-o", str(tmp_path), "--resolution", "64", "--fit-steps", "3"]
    assert cli.main(args + ["--quiet"] * quiet) == 0
    shown = terminal.getvalue()
    if quiet:
        assert shown == ""
    else:
        assert "astronaut.jpg: face 0" in shown and "5/5" in shown and "3/3" in shown


@pytest.mark.slow
def test_native_logs_are_hidden_unless_verbose(tmp_path):
    """In a pipe (no bars), stderr holds nothing but MediaPipe's lines with --verbose."""
    args = [str(PHOTO), "-o", str(tmp_path), "--resolution", "64", "--fit-steps", "0"]
    quiet = run_python("-m", "pipelines.cli", *args, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "face.glb" in quiet.stdout
    verbose = run_python("-m", "pipelines.cli", *args, "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0
    assert any(marker in verbose.stderr for marker in NATIVE_LOG_MARKERS), verbose.stderr
