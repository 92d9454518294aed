"""The pretrained folder's format: component paths of folders written before the networks moved
to `modeling.networks` still load, and a re-saved folder names today's paths."""

import json
import shutil
from pathlib import Path

import pytest

from modeling.networks import LEGACY_MODULES
from modeling.networks.delighting import DelightingNet
from modeling.networks.normals import DetailNormalsNet
from modeling.networks.specular import SpecularAlbedoNet
from pipelines import AvatarPipeline
from pipelines.weights import upgrade_model_index

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = {
    "delighting": DelightingNet,
    "specular": SpecularAlbedoNet,
    "normals": DetailNormalsNet,
}


def test_shipped_index_names_todays_modules():
    """The shipped index names each component's module in the repository (the Hub layout,
    `tests/test_hub_layout.py`), which the loader maps to today's installed module."""
    index = json.loads((ROOT / "weights_config" / "model_index.json").read_text())
    for name, cls in COMPONENTS.items():
        assert index[name] == [cls.__module__.rsplit(".", 1)[1], cls.__name__]
        assert upgrade_model_index(index)[name] == [cls.__module__, cls.__name__]
        assert cls.__module__.startswith("modeling.networks.")


def test_upgrade_maps_legacy_paths_and_keeps_the_rest():
    old = {
        "_class_name": "AvatarPipeline",
        "resolution": 1024,
        "delighting": ["modeling.delighting", "DelightingNet"],
        "normals": ["modeling.networks.normals", "DetailNormalsNet"],
        "specular": [None, None],
    }
    new = upgrade_model_index(old)
    assert new["delighting"] == ["modeling.networks.delighting", "DelightingNet"]
    assert new["normals"] == old["normals"]
    assert new["specular"] == [None, None]
    assert new["resolution"] == 1024 and new["_class_name"] == "AvatarPipeline"
    assert old["delighting"] == ["modeling.delighting", "DelightingNet"]  # input untouched
    assert set(LEGACY_MODULES.values()) == {cls.__module__ for cls in COMPONENTS.values()}


@pytest.fixture()
def legacy_folder(tmp_path):
    """weights_config/ as written before the move: `modeling.<name>` component paths."""
    folder = tmp_path / "legacy"
    shutil.copytree(ROOT / "weights_config", folder)
    index = json.loads((folder / "model_index.json").read_text())
    for name, cls in COMPONENTS.items():
        index[name] = [f"modeling.{cls.__module__.rsplit('.', 1)[1]}", cls.__name__]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_legacy_folder_loads_the_same_networks(legacy_folder, tmp_path):
    legacy = AvatarPipeline.from_pretrained(legacy_folder)
    current = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    for name, cls in COMPONENTS.items():
        net = getattr(legacy, name)
        assert isinstance(net, cls)
        reference = getattr(current, name).state_dict()
        for key, value in net.state_dict().items():
            assert value.equal(reference[key]), (name, key)
    legacy.save_pretrained(tmp_path / "resaved")
    index = json.loads((tmp_path / "resaved" / "model_index.json").read_text())
    assert index["delighting"] == ["delighting", "DelightingNet"]  # the Hub layout's module


@pytest.mark.parametrize(("mode", "unwrap"), [("off", "full"), ("auto", "auto"), ("on", "auto")])
def test_a_folder_with_the_dropped_super_resolution_network_loads(tmp_path, mode, unwrap):
    """Folders saved before the x4 super-resolution network was dropped name it (`superres`)
    and its `super_resolution` mode: both are read as today's `unwrap_resolution`, the
    network's files are not needed."""
    folder = tmp_path / "before"
    shutil.copytree(ROOT / "weights_config", folder)
    index = json.loads((folder / "model_index.json").read_text())
    del index["unwrap_resolution"]
    index.update(superres=["superres", "SuperResolutionNet"], super_resolution=mode)
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = AvatarPipeline.from_pretrained(folder)
    assert pipe.unwrap_resolution == unwrap and "superres" not in pipe.components
    assert isinstance(pipe.delighting, DelightingNet)
