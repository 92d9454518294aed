"""The pretrained folder: refuse missing or corrupt component weights, and read the component
paths of folders written before the networks moved to `modeling.networks`."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from modeling.errors import WeightsError
from modeling.networks import LEGACY_MODULES


def upgrade_model_index(index: dict) -> dict:
    """A `model_index.json` dict with legacy component modules (`["modeling.delighting",
    "DelightingNet"]`) mapped to today's (`LEGACY_MODULES`); other entries unchanged."""
    return {
        name: [LEGACY_MODULES.get(value[0], value[0]), *value[1:]]
        if isinstance(value, list) and value and isinstance(value[0], str)
        else value
        for name, value in index.items()
    }


def check_component_weights(folder: Path) -> None:
    """Refuse a pretrained folder whose components' weights are missing or unreadable, naming
    the component (never run on random weights); import the modules of our own components."""
    from safetensors.torch import load_file

    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise WeightsError(f"{folder} has no model_index.json")
    index = upgrade_model_index(json.loads(index_path.read_text()))
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        sub = folder / name
        weights = sub / "diffusion_pytorch_model.safetensors"
        if not (sub / "config.json").is_file():
            raise WeightsError(f"component {name!r}: missing {sub / 'config.json'}")
        if not weights.is_file():
            raise WeightsError(f"component {name!r}: missing weights {weights}")
        try:
            json.loads((sub / "config.json").read_text())
            tensors = load_file(str(weights))
        except Exception as err:
            raise WeightsError(f"component {name!r}: corrupt weights {weights} ({err})") from err
        if not tensors:
            raise WeightsError(f"component {name!r}: empty weights {weights}")
        library = value[0]
        if library.split(".")[0] == "modeling":
            # Our own component modules ship with this code; diffusers loads a component only
            # from a module that is already imported (it never imports what a repo names).
            importlib.import_module(library)
