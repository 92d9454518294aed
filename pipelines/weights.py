"""The pretrained folder: find it (a local path is never tried as a Hub repo id), write and
verify `weights_manifest.json`, refuse missing or corrupt component weights by name, and read the
component paths of older folders.

A saved folder is a Hub repository that diffusers alone can load
(`DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)`, wherever the openavatar
package is installed): `model_index.json` names `["pipeline", "AvatarPipeline"]` and each
component's own module (`"delighting": ["delighting", "DelightingNet"]`), and the folder holds
those modules (`pipeline.py`, `delighting/delighting.py`, written by `write_hub_layout`): each
only imports its class from the installed package, so both loaders build the same objects.
`AvatarPipeline.from_pretrained` runs none of the folder's code: `upgrade_model_index` maps the
entries back to the installed modules.

`weights_manifest.json` (written by `AvatarPipeline.save_pretrained`, or by
`pipelines.weights.write_manifest(folder)` after replacing a component's files on purpose)
records the size and SHA-256 of every file in every component folder (its module included) and
of `pipeline.py`:

    {"algorithm": "sha256",
     "components": {"normals": {"config.json": {"sha256": "...", "size": 142},
                                "diffusion_pytorch_model.safetensors": {...},
                                "normals.py": {...}}, ...},
     "files": {"pipeline.py": {...}}}

The code is covered because it is what `trust_remote_code=True` runs: `check_component_weights`
verifies a downloaded repository before you trust it. `model_index.json` and the model card
(`README.md`) are not covered: their settings and text may be edited by hand. diffusers' own
loader does not read the manifest; `AvatarPipeline.from_pretrained` verifies it before loading.
A folder without a manifest (written before it existed) still loads, with a logged warning, and
its files are checked only for being readable and fitting their networks.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import logging
import os
import re
from pathlib import Path

from modeling.errors import WeightsError
from modeling.networks import LEGACY_MODULES

MANIFEST = "weights_manifest.json"
CONFIG, WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"
PIPELINE_FILE = "pipeline.py"  # the name diffusers looks for (`_class_name[0]` + ".py")
# The component modules a saved folder carries (`delighting/delighting.py`), by the installed
# module each one names: `modeling.networks.<name>` is `<name>` in the repository.
REPO_MODULES = {module.rsplit(".", 1)[1]: module for module in LEGACY_MODULES.values()}
# A Hub repo id as `owner/name`; anything else (`./x`, `/x`, `~/x`, `a/b/c`, a bare name) is a
# local path, so a mistyped folder is reported here instead of being requested from the Hub.
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")

# Folders saved before 2026-12-03 carry the x4 super-resolution network (`superres`, dropped:
# it added nothing measurable over bicubic upsampling) and its `super_resolution` setting, now
# `unwrap_resolution` ("off" unwrapped at the maps' size: "full"; "auto" and "on": "auto").
RETIRED_COMPONENTS = ("superres",)
RENAMED_SETTINGS = {
    "super_resolution": lambda mode: ("unwrap_resolution", "full" if mode == "off" else "auto"),
}

# `save_pretrained(..., push_to_hub=True)` arguments that go to the upload (as in diffusers).
HUB_UPLOAD_ARGS = ("repo_id", "token", "private", "commit_message", "create_pr")

logger = logging.getLogger(__name__)


def upgrade_model_index(index: dict) -> dict:
    """A `model_index.json` dict with its classes named as this code imports them: the Hub
    layout's `"_class_name": ["pipeline", "AvatarPipeline"]` -> `"AvatarPipeline"`, its
    component modules (`["delighting", "DelightingNet"]`: `REPO_MODULES`) and legacy ones
    (`["modeling.delighting", "DelightingNet"]`: `LEGACY_MODULES`) -> the installed module
    (`["modeling.networks.delighting", "DelightingNet"]`); retired entries of older folders
    dropped or renamed (`RETIRED_COMPONENTS`, `RENAMED_SETTINGS`); other entries unchanged."""
    installed = {**LEGACY_MODULES, **REPO_MODULES}
    upgraded = {}
    for name, value in index.items():
        if name in RETIRED_COMPONENTS:
            continue
        if name in RENAMED_SETTINGS:
            name, value = RENAMED_SETTINGS[name](value)
        if name == "_class_name" and isinstance(value, list) and len(value) == 2:
            value = value[1]
        elif isinstance(value, list) and value and isinstance(value[0], str):
            value = [installed.get(value[0], value[0]), *value[1:]]
        upgraded[name] = value
    return upgraded


def default_weights() -> Path:
    """The shipped pretrained folder: `pipelines/weights_config/` in an installed wheel (package
    data), else `weights_config/` at the top of a checkout."""
    here = Path(__file__).resolve().parent
    installed, checkout = here / "weights_config", here.parent / "weights_config"
    return installed if (installed / "model_index.json").is_file() else checkout


def local_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The local pretrained folder `name_or_path` names, or `None` for a Hub repo id.

    A Hub repo id is a `str` of the form `owner/name` that is not a local path. Anything else
    (a `Path`, `./x`, `/x`, `~/x`, `a/b/c`, a bare name) is local, and raises `WeightsError`
    naming it (and a close folder name, if any) when it is not a folder.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and HUB_REPO_ID.fullmatch(text) and not path.exists():
        return None
    if path.exists():
        raise WeightsError(f"pretrained folder {text!r} is a file, not a folder")
    parent = path.parent if path.parent.is_dir() else None
    siblings = [p.name for p in parent.iterdir() if p.is_dir()] if parent else []
    close = difflib.get_close_matches(path.name, siblings, n=1)
    hint = f" (did you mean {str(parent / close[0])!r}?)" if close else ""
    raise WeightsError(
        f"pretrained folder {text!r} does not exist{hint}; a Hub repo id has the form owner/name"
    )


def pretrained_folder(name_or_path: str | os.PathLike, **download) -> Path:
    """The local folder `name_or_path` names (`local_folder`), or the snapshot of the Hub repo
    it names, fetched by `huggingface_hub.snapshot_download(repo_id, **download)` (`cache_dir`,
    `revision`, `token`; respects `HF_HUB_OFFLINE`). `WeightsError` naming it if neither."""
    path = local_folder(name_or_path)
    if path is not None:
        return path
    from huggingface_hub import snapshot_download

    repo_id = str(name_or_path)
    try:
        return Path(snapshot_download(repo_id, **download))
    except Exception as err:  # offline, not found, no access, network: one message naming it
        raise WeightsError(
            f"{repo_id!r} is not a local folder, and the Hub repo {repo_id!r} could not be "
            f"fetched ({type(err).__name__}: {err})"
        ) from err


def upload_to_hub(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> None:
    """Upload a saved pretrained folder, manifest and model card included, to the Hub repo
    `repo_id` (default: the folder's name), creating it if needed."""
    from huggingface_hub import create_repo, upload_folder

    repo = create_repo(repo_id or Path(folder).name, exist_ok=True, private=private, token=token)
    upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(folder),
        token=token,
        commit_message=commit_message or "Upload AvatarPipeline",
        create_pr=create_pr,
    )


def read_model_index(folder: Path) -> dict:
    """`folder/model_index.json` with legacy component paths upgraded; `WeightsError` naming the
    file when it is missing or not a JSON object."""
    path = folder / "model_index.json"
    if not path.is_file():
        raise WeightsError(f"{folder} has no model_index.json")
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(index, dict):
        raise WeightsError(f"{path} is not a JSON object")
    return upgrade_model_index(index)


def components(index: dict) -> dict[str, list]:
    """The components a `model_index.json` dict loads: name -> `[module, class]`."""
    return {
        name: value
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and None not in value
    }


def file_digest(path: Path) -> dict:
    """`{"sha256": hex, "size": bytes}` of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


_REPO_CODE = '''"""`{cls}` for `DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)`.

It is `{module}.{cls}` from the installed openavatar package;
this file only names it, so diffusers and `AvatarPipeline.from_pretrained(repo)` build the
same objects.
"""

import importlib

try:
    module = importlib.import_module("{module}")
except ImportError as err:
    raise ImportError(
        "this repository needs the openavatar package (pip install the OpenAvatar project)"
    ) from err

{cls} = module.{cls}
'''


def _repo_code(module: str, class_name: str) -> str:
    return _REPO_CODE.format(module=module, cls=class_name)


def write_hub_layout(folder: str | os.PathLike, pipeline_class: type) -> None:
    """Make a folder diffusers' `save_pretrained` wrote loadable by diffusers alone: write
    `pipeline.py` (naming `pipeline_class`) and each component's module into its folder
    (`delighting/delighting.py` for `modeling.networks.delighting.DelightingNet`), and point
    `model_index.json` at them (`"_class_name": ["pipeline", "AvatarPipeline"]`,
    `"delighting": ["delighting", "DelightingNet"]`); a component whose module is not in
    `REPO_MODULES` keeps its entry. The local path diffusers records (`_name_or_path`) is
    dropped from `model_index.json` and the components' `config.json`: it means nothing in a
    repository."""
    folder = Path(folder)
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    index.pop("_name_or_path", None)
    for name, (module, class_name) in components(upgrade_model_index(index)).items():
        config = folder / name / CONFIG
        settings = json.loads(config.read_text()) if config.is_file() else {}
        if settings.pop("_name_or_path", None) is not None:
            _write_json(config, settings)
        local = module.rsplit(".", 1)[-1]
        if REPO_MODULES.get(local) == module and (folder / name).is_dir():
            (folder / name / f"{local}.py").write_text(_repo_code(module, class_name))
            index[name] = [local, class_name]
    code = _repo_code(pipeline_class.__module__, pipeline_class.__name__)
    (folder / PIPELINE_FILE).write_text(code)
    index["_class_name"] = [Path(PIPELINE_FILE).stem, pipeline_class.__name__]
    _write_json(path, index)


def _write_json(path: Path, data: dict) -> None:
    """As diffusers writes its configs (`ConfigMixin.to_json_string`)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write `folder/weights_manifest.json`: size and SHA-256 of every file in every component
    folder `folder/model_index.json` names, and of `pipeline.py` if there is one. Returns its
    path."""
    folder = Path(folder)
    entries = {
        name: {f.name: file_digest(f) for f in sorted((folder / name).iterdir()) if f.is_file()}
        for name in components(read_model_index(folder))
        if (folder / name).is_dir()
    }
    manifest = {"algorithm": "sha256", "components": entries}
    if (folder / PIPELINE_FILE).is_file():
        manifest["files"] = {PIPELINE_FILE: file_digest(folder / PIPELINE_FILE)}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _read_manifest(folder: Path) -> dict | None:
    """The manifest's `{"components": ..., "files": ...}`, or `None` (logged) without one."""
    path = folder / MANIFEST
    if not path.is_file():
        logger.warning(
            "%s has no %s: its weights files are not verified (write one with "
            "pipelines.weights.write_manifest(%r))",
            folder,
            MANIFEST,
            str(folder),
        )
        return None
    try:
        manifest = json.loads(path.read_text())
        entries, files = manifest["components"], manifest.get("files", {})
        if manifest.get("algorithm") != "sha256" or not isinstance(entries, dict):
            raise ValueError("expected {'algorithm': 'sha256', 'components': {...}}")
        if not isinstance(files, dict):
            raise ValueError("'files' is not an object")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"{path} is not a valid weights manifest ({err})") from err
    return {"components": entries, "files": files}


def _verify_files(folder: Path, name: str, manifest: dict) -> None:
    """Every file the manifest lists for component `name` has its recorded size and SHA-256."""
    listed = manifest["components"].get(name)
    if not isinstance(listed, dict) or not {CONFIG, WEIGHTS} <= listed.keys():
        raise WeightsError(
            f"component {name!r}: its files are not listed in {folder / MANIFEST}, so they "
            f"cannot be verified; {_rewrite_hint(folder)}"
        )
    for file, expected in listed.items():
        _verify_file(folder, folder / name / file, expected, f"component {name!r}")


def _verify_file(folder: Path, path: Path, expected: dict, label: str) -> None:
    if not path.is_file():
        raise WeightsError(f"{label}: missing {path} (listed in {MANIFEST})")
    actual = file_digest(path)
    if actual != expected:
        what = "size" if actual["size"] != expected.get("size") else "SHA-256"
        raise WeightsError(
            f"{label}: corrupt {path}: its {what} does not match {MANIFEST} (the file was "
            f"damaged or changed after the manifest was written); {_rewrite_hint(folder)}"
        )


def _rewrite_hint(folder: Path) -> str:
    return (
        f"if it was replaced on purpose, rewrite the manifest with "
        f"pipelines.weights.write_manifest({str(folder)!r})"
    )


def _network_class(name: str, library: str, class_name: str):
    try:
        return getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError) as err:
        raise WeightsError(f"component {name!r}: no class {library}.{class_name} ({err})") from err


def _check_fits_network(name: str, cls, config: dict, config_path: Path, tensors: dict) -> None:
    """The tensors are the state of the network `config` describes (names and shapes)."""
    import torch

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            expected = cls.from_config(config).state_dict()
    except Exception as err:
        raise WeightsError(
            f"component {name!r}: {config_path} does not describe a {cls.__name__} ({err})"
        ) from err
    weights = config_path.parent / WEIGHTS
    missing, unexpected = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
    if missing or unexpected:
        raise WeightsError(
            f"component {name!r}: {weights} does not fit the network {config_path} describes "
            f"(missing tensors {sorted(missing)[:3]}, unexpected tensors {sorted(unexpected)[:3]})"
        )
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise WeightsError(
                f"component {name!r}: {weights} does not fit the network {config_path} "
                f"describes: {key} has shape {tuple(tensors[key].shape)}, expected "
                f"{tuple(value.shape)}"
            )


def check_component_weights(folder: Path) -> None:
    """Refuse a pretrained folder whose components' files are missing, differ from the manifest,
    are unreadable or do not fit their networks, naming the component and the file (never run
    on random weights), or whose `pipeline.py` differs from the manifest; import the modules of
    our own components."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = read_model_index(folder)
    manifest = _read_manifest(folder)
    for file, expected in (manifest or {}).get("files", {}).items():
        _verify_file(folder, folder / file, expected, "repository code")
    for name, (library, class_name) in components(index).items():
        config_path, weights = folder / name / CONFIG, folder / name / WEIGHTS
        if not config_path.is_file():
            raise WeightsError(f"component {name!r}: missing {config_path}")
        if not weights.is_file():
            raise WeightsError(f"component {name!r}: missing weights {weights}")
        if manifest is not None:
            _verify_files(folder, name, manifest)
        try:
            config = json.loads(config_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightsError(
                f"component {name!r}: {config_path} is not valid JSON ({err})"
            ) from err
        try:
            tensors = load_file(str(weights))
        except Exception as err:
            raise WeightsError(f"component {name!r}: corrupt weights {weights} ({err})") from err
        if not tensors:
            raise WeightsError(f"component {name!r}: empty weights {weights}")
        if library.split(".")[0] == "modeling":
            # Our own component modules ship with this code; diffusers loads a component only
            # from a module that is already imported (it never imports what a repo names).
            cls = _network_class(name, library, class_name)
            _check_fits_network(name, cls, config, config_path, tensors)
