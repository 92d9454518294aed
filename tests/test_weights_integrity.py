"""Corrupt or mistyped weights are refused with an error naming the component and the file:
bytes changed inside a tensor (by the SHA-256 in `weights_manifest.json`), a network that
produces NaN (by the finite check on its output), a changed tensor shape, a broken
`config.json` or `model_index.json`; a mistyped local folder never reaches the Hub."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from modeling.errors import WeightsError
from modeling.networks.normals import DetailNormalsNet
from modeling.networks.reflectance import reflectance_maps
from pipelines import AvatarPipeline
from pipelines.weights import MANIFEST, check_component_weights, write_manifest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the Hub: snapshot_download fails the test unless a test replaces it."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        pytest.fail(f"snapshot_download was called with {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A copy of the shipped pretrained folder, manifest included."""
    copy = tmp_path / "weights"
    shutil.copytree(ROOT / "weights_config", copy, ignore=shutil.ignore_patterns("*.png"))
    return copy


def _rewrite_tensor(path: Path, change) -> str:
    """Replace the first tensor of a safetensors file by `change(tensor)`; its name."""
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key] = change(tensors[key])
    save_file(tensors, str(path), metadata={"format": "pt"})
    return key


def test_shipped_manifest_verifies_every_component():
    folder = ROOT / "weights_config"
    manifest = json.loads((folder / MANIFEST).read_text())
    index = json.loads((folder / "model_index.json").read_text())
    assert manifest["algorithm"] == "sha256"
    assert set(manifest["components"]) == {"delighting", "specular", "normals"}
    for name, files in manifest["components"].items():
        assert set(files) == {"config.json", WEIGHTS, f"{index[name][0]}.py"}  # code included
    assert set(manifest["files"]) == {"pipeline.py"}
    check_component_weights(folder)


def test_bytes_flipped_inside_a_tensor_are_refused_by_sha256(folder):
    weights = folder / "normals" / WEIGHTS
    data = bytearray(weights.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    start, end = header["unet.down.0.body.0.weight"]["data_offsets"]
    middle = 8 + header_size + (start + end) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    weights.write_bytes(bytes(data))
    with safe_open(str(weights), "pt") as f:  # still a valid file: only the hash can tell
        assert f.get_tensor("unet.down.0.body.0.weight").shape == (8, 8, 3, 3)
    message = (
        r"component 'normals': corrupt .*normals.diffusion_pytorch_model\.safetensors.*SHA-256"
    )
    with pytest.raises(WeightsError, match=message):
        AvatarPipeline.from_pretrained(folder)


def _maps(r: int = 64, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "texture": rng.random((r, r, 3), np.float32),
        "albedo": rng.random((r, r, 3), np.float32),
        "shape_maps": {
            "shape_normals": rng.random((r, r, 3), np.float32),
            "ambient_occlusion": rng.random((r, r, 1), np.float32),
        },
        "visibility": rng.random((r, r), np.float32),
    }


def _run(pipe: AvatarPipeline, name: str, maps: dict) -> dict:
    return reflectance_maps(**maps, **{name: getattr(pipe, name)})


@pytest.mark.parametrize("name", ["delighting", "specular", "normals"])
def test_a_network_that_outputs_nan_is_named_at_run_time(folder, name):
    _rewrite_tensor(folder / name / WEIGHTS, lambda t: t.fill_(float("nan")))
    write_manifest(folder)  # the manifest now agrees: only the output check can tell
    pipe = AvatarPipeline.from_pretrained(folder)
    with pytest.raises(WeightsError, match=f"component '{name}' produced non-finite values"):
        _run(pipe, name, _maps())


def test_non_finite_input_is_not_blamed_on_the_weights():
    pipe = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    maps = _maps()
    assert np.isfinite(_run(pipe, "normals", maps)["diffuse_normals"]).all()
    maps["texture"][3, 5] = np.nan
    with pytest.raises(ValueError, match="input maps of component 'normals' contain NaN") as err:
        _run(pipe, "normals", maps)
    assert not isinstance(err.value, WeightsError)


def test_a_changed_tensor_shape_names_the_component_and_the_tensor(folder):
    weights = folder / "normals" / WEIGHTS
    key = _rewrite_tensor(weights, lambda t: t.new_zeros(t.shape[0] + 1, *t.shape[1:]))
    with pytest.raises(WeightsError, match=r"component 'normals': corrupt .*size does not match"):
        AvatarPipeline.from_pretrained(folder)
    write_manifest(folder)
    message = (
        rf"component 'normals': .*normals.{WEIGHTS} does not fit the network "
        rf".*config\.json describes: {key} has shape \(9,\), expected \(8,\)"
    )
    with pytest.raises(WeightsError, match=message):
        AvatarPipeline.from_pretrained(folder)


def test_a_broken_config_json_is_reported_against_it(folder):
    config = folder / "normals" / "config.json"
    config.write_text('{"channels": [8, 16')
    with pytest.raises(WeightsError, match=r"component 'normals': corrupt .*normals.config\.json"):
        AvatarPipeline.from_pretrained(folder)
    (folder / MANIFEST).unlink()  # an older folder: the JSON parser finds it
    with pytest.raises(
        WeightsError, match=r"component 'normals': .*normals.config\.json is not valid JSON"
    ):
        AvatarPipeline.from_pretrained(folder)
    config.write_text('{"channels": "wide"}')  # JSON, but not a DetailNormalsNet
    with pytest.raises(
        WeightsError, match=r"component 'normals': .*config\.json does not describe a Detail"
    ):
        AvatarPipeline.from_pretrained(folder)


def test_a_broken_model_index_is_named(folder):
    (folder / "model_index.json").write_text('{"_class_name": "AvatarPipeline",')
    with pytest.raises(WeightsError, match=r"model_index\.json is not valid JSON"):
        AvatarPipeline.from_pretrained(folder)


def test_a_broken_manifest_or_an_unlisted_component_is_refused(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["components"]["specular"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"component 'specular': .* not listed in .*manifest"):
        AvatarPipeline.from_pretrained(folder)
    (folder / MANIFEST).write_text("{")
    with pytest.raises(WeightsError, match=r"weights_manifest\.json is not a valid"):
        AvatarPipeline.from_pretrained(folder)


def test_a_folder_without_manifest_loads_with_a_warning(folder, caplog):
    (folder / MANIFEST).unlink()
    with caplog.at_level("WARNING", logger="pipelines.weights"):
        pipe = AvatarPipeline.from_pretrained(folder)
    assert isinstance(pipe.normals, DetailNormalsNet)
    assert "has no weights_manifest.json" in caplog.text


@pytest.mark.parametrize(
    "name", ["./weights_confg", "weights_confg", "weights_confg/", "a/b/c", "~/no-such-folder"]
)
def test_a_mistyped_local_folder_is_named_and_never_requested_from_the_hub(
    folder, monkeypatch, name
):
    monkeypatch.chdir(folder.parent)
    (folder.parent / "weights").rename(folder.parent / "weights_config")
    with pytest.raises(WeightsError, match=rf"pretrained folder '{name}' does not exist"):
        AvatarPipeline.from_pretrained(name)
    if "confg" in name:
        with pytest.raises(WeightsError, match="did you mean 'weights_config'"):
            AvatarPipeline.from_pretrained(name)


def test_a_path_object_or_a_file_is_never_a_hub_id(folder):
    with pytest.raises(WeightsError, match="'someorg/openavatar' does not exist"):
        AvatarPipeline.from_pretrained(Path("someorg/openavatar"))
    with pytest.raises(WeightsError, match="model_index.json' is a file, not a folder"):
        AvatarPipeline.from_pretrained(str(folder / "model_index.json"))


def test_a_hub_id_that_cannot_be_fetched_is_named(monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise OSError("offline and not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(WeightsError, match="Hub repo 'someorg/openavatar' could not be fetched"):
        AvatarPipeline.from_pretrained("someorg/openavatar")


def test_save_pretrained_writes_a_manifest_that_verifies(tmp_path):
    pipe = AvatarPipeline(normals=DetailNormalsNet(channels=(4, 8)))
    pipe.save_pretrained(tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / MANIFEST).read_text())
    files = manifest["components"]["normals"]
    assert set(manifest["components"]) == {"normals"}
    assert set(files) == {"config.json", WEIGHTS, "normals.py"}
    data = (tmp_path / "saved" / "normals" / WEIGHTS).read_bytes()
    assert files[WEIGHTS] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    again = AvatarPipeline.from_pretrained(tmp_path / "saved")
    for key, value in again.normals.state_dict().items():
        assert value.equal(pipe.normals.state_dict()[key]), key


def test_push_to_hub_uploads_the_folder_with_its_manifest(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded = {}

    class Repo:
        repo_id = "me/avatar"

    def upload_folder(repo_id, folder_path, **kwargs):
        uploaded.update(repo_id=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()))

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *a, **k: Repo())
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    pipe = AvatarPipeline(normals=DetailNormalsNet(channels=(4, 8)))
    pipe.save_pretrained(tmp_path / "avatar", push_to_hub=True, repo_id="me/avatar")
    files = ["model_index.json", "normals", "pipeline.py", MANIFEST]
    assert uploaded == {"repo_id": "me/avatar", "files": files}


@pytest.mark.slow
def test_cli_stops_on_nan_weights_and_names_the_component(folder, tmp_path, capsys):
    from pipelines.cli import main

    _rewrite_tensor(folder / "normals" / WEIGHTS, lambda t: t.fill_(float("nan")))
    write_manifest(folder)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(ROOT / "examples" / "astronaut.jpg", photos / name)
    args = [str(photos), "-o", str(tmp_path / "out"), "--weights", str(folder),
            "--resolution", "64", "--fit-steps", "0"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "component 'normals' produced non-finite values" in err[0], err
