"""`pip install` of the project gives a command that runs: the wheel declares the pinned
dependencies and carries the default weights (`pipelines/weights_config/`) and the topology
asset. The slow test builds the wheel from a copy of the sources, installs it with --no-deps in
a fresh venv that sees this environment's packages through a .pth file (the dependencies are
the pinned ones already here, and nothing is downloaded), and runs `openavatar` from another
folder."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pipelines.weights import default_weights

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines} - {""}


def test_the_package_pins_what_requirements_txt_pins():
    project = pyproject()["project"]
    extras = {r for group in project["optional-dependencies"].values() for r in group}
    assert set(project["dependencies"]) | extras == requirements()
    assert "torch==2.13.0" in project["dependencies"]


def test_a_checkout_uses_its_weights_config():
    assert default_weights() == ROOT / "weights_config"


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def copy_sources(to: Path) -> None:
    """pyproject.toml and the folders its packages come from."""
    setuptools = pyproject()["tool"]["setuptools"]
    folders = {p.split(".")[0] for p in setuptools["packages"]}
    folders |= set(setuptools["package-dir"].values())  # weights_config/
    to.mkdir()
    shutil.copy(ROOT / "pyproject.toml", to)
    for folder in folders:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / folder, to / folder, ignore=ignore)


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_folder(tmp_path):
    copy_sources(tmp_path / "src")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*build, "--no-index", "-w", str(tmp_path / "dist"), str(tmp_path / "src")])
    (wheel,) = (tmp_path / "dist").glob("openavatar-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    get_site = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([str(python), "-c", get_site]).stdout.strip())
    here = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "_this_environment.pth").write_text("\n".join(sorted(here)) + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(ROOT / "examples" / "astronaut.jpg", elsewhere)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    where = run(
        [str(python), "-c", "import pipelines; print(pipelines.__file__)"], cwd=elsewhere, env=env
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not ROOT
    command = python.parent / "openavatar"
    assert "usage: openavatar" in run([str(command), "--help"], cwd=elsewhere, env=env).stdout
    args = ["astronaut.jpg", "-o", "OUT", "--resolution", "64", "--fit-steps", "0"]
    done = run([str(command), *args], cwd=elsewhere, env=env)
    assert (elsewhere / "OUT" / "astronaut" / "face.glb").is_file(), done.stdout
