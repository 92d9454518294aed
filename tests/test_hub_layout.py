"""A saved pipeline is a Hub repository that diffusers alone loads: `pipeline.py` and each
component's module (`delighting/delighting.py`) import the installed package, so
`DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)` builds the same pipeline as
`AvatarPipeline.from_pretrained(repo)`, from any folder, offline, out of the Hugging Face cache.
`AvatarPipeline.from_pretrained` runs none of the repository's code, and the manifest covers it."""

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from modeling.errors import WeightsError
from pipelines import AvatarPipeline
from pipelines.weights import MANIFEST, write_manifest

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("delighting", "specular", "normals")
WEIGHTS = "diffusion_pytorch_model.safetensors"


def state_digest(tensors: dict) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The shipped pipeline, loaded and saved again."""
    folder = tmp_path_factory.mktemp("repo") / "avatar"
    AvatarPipeline.from_pretrained(ROOT / "weights_config").save_pretrained(folder)
    return folder


def test_the_saved_repo_names_its_own_modules(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "AvatarPipeline"]
    assert (saved / "pipeline.py").is_file()
    for name in COMPONENTS:
        module, _ = index[name]
        assert "." not in module and (saved / name / f"{module}.py").is_file()
    # no local path of the machine that saved it
    assert "_name_or_path" not in index
    for name in COMPONENTS:
        assert "_name_or_path" not in json.loads((saved / name / "config.json").read_text())


def test_saving_changes_no_weights_or_configs(saved):
    for name in COMPONENTS:
        for file in ("config.json", WEIGHTS):
            shipped = (ROOT / "weights_config" / name / file).read_bytes()
            assert (saved / name / file).read_bytes() == shipped, (name, file)


def test_the_shipped_folder_has_the_saved_layout(saved):
    """weights_config/ is what save_pretrained writes today (code and index entries)."""
    shipped = ROOT / "weights_config"
    index = json.loads((shipped / "model_index.json").read_text())
    assert index == json.loads((saved / "model_index.json").read_text())
    code = sorted(p.relative_to(saved) for p in saved.rglob("*.py"))
    assert code == sorted(p.relative_to(shipped) for p in shipped.rglob("*.py"))
    for path in code:
        assert (shipped / path).read_text() == (saved / path).read_text(), path


def test_the_manifest_covers_the_repo_code(saved, tmp_path):
    manifest = json.loads((saved / MANIFEST).read_text())
    assert set(manifest["files"]) == {"pipeline.py"}
    for name in COMPONENTS:
        assert f"{name}.py" in manifest["components"][name]
    folder = tmp_path / "avatar"
    shutil.copytree(saved, folder)
    pipeline_code = folder / "pipeline.py"
    original = pipeline_code.read_text()
    pipeline_code.write_text(original + "print('hello')\n")
    with pytest.raises(WeightsError, match=r"repository code: corrupt .*pipeline\.py"):
        AvatarPipeline.from_pretrained(folder)
    pipeline_code.write_text(original)
    (folder / "specular" / "specular.py").write_text("")
    with pytest.raises(WeightsError, match=r"component 'specular': corrupt .*specular\.py"):
        AvatarPipeline.from_pretrained(folder)


def test_avatar_pipeline_runs_none_of_the_repo_code(saved, tmp_path):
    folder = tmp_path / "avatar"
    shutil.copytree(saved, folder)
    for path in [folder / "pipeline.py", *folder.glob("*/*.py")]:
        path.write_text("raise RuntimeError('repository code was run')\n")
    write_manifest(folder)  # changed on purpose
    pipe = AvatarPipeline.from_pretrained(folder)
    assert type(pipe) is AvatarPipeline
    assert pipe.config.delighting == ("modeling.networks.delighting", "DelightingNet")


# Run from another folder, with the project importable only as an installed package would be
# (PYTHONPATH stands in for `pip install`), offline, against a Hugging Face cache under tmp.
LOAD_WITH_DIFFUSERS = """
import json, sys
from diffusers import DiffusionPipeline

try:
    DiffusionPipeline.from_pretrained("someorg/openavatar")
    refused = ""
except ValueError as err:
    refused = str(err)
pipe = DiffusionPipeline.from_pretrained("someorg/openavatar", trust_remote_code=True)
print(json.dumps({
    "class": f"{type(pipe).__module__}.{type(pipe).__qualname__}",
    "components": {
        name: [f"{type(net).__module__}.{type(net).__qualname__}", state_digest(net.state_dict())]
        for name, net in pipe.components.items()
    },
    "repo_modules": sorted(m for m in sys.modules if m.startswith("diffusers_modules.")),
    "refused_without_trust": refused,
}))
"""


@pytest.mark.slow
def test_diffusers_alone_loads_the_repo_from_the_hub_cache_offline(saved, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someorg--openavatar"
    shutil.copytree(saved, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        HF_MODULES_CACHE=str(tmp_path / "hf" / "modules"),
    )
    script = f"import hashlib\n{inspect.getsource(state_digest)}\n{LOAD_WITH_DIFFUSERS}"
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["class"] == "pipelines.avatar_pipeline.AvatarPipeline"
    assert "trust_remote_code=True" in result["refused_without_trust"]
    # each class came through the repository's own module, and is the installed one
    modules = {f"diffusers_modules.local.{m}" for m in ("pipeline", *COMPONENTS)}
    assert modules <= set(result["repo_modules"])
    shipped = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    for name in COMPONENTS:
        cls, digest = result["components"][name]
        net = getattr(shipped, name)
        assert cls == f"{type(net).__module__}.{type(net).__qualname__}"
        assert digest == state_digest(load_file(str(saved / name / WEIGHTS))), name
        assert digest == state_digest(net.state_dict()), name
